//! The layers: the domain (what a payment is, how it is decided, stored and
//! announced) imports no edge (the HTTP API, the command line, MCP, or the
//! seller's L402 proxy). An edge may change without the domain noticing,
//! and a new edge enters at the same gateway call as the others.
//!
//! The check reads the source files: every path that starts at the crate
//! root (`crate::`, or enough `super::` to climb there), `use` groups
//! included, is resolved to the top-level module it names.

use std::path::{Path, PathBuf};

/// The domain, as files and folders under `src/`.
const DOMAIN: [&str; 10] =
    ["gateway", "payment", "events", "model", "store", "lightning", "error.rs", "limits.rs", "quota.rs", "metrics.rs"];

/// What the domain must not import: the edges. `l402::paywall`,
/// `l402::mount` and `l402::throttle` are the seller's proxy; the rest of
/// `l402` (tokens, challenges) is the protocol both sides share. `nwc` is
/// the NWC wallet service (`lightning::nwc`, the client, is below);
/// `bridge` the messengers rooms are mirrored into.
const EDGES: [&str; 8] = ["http", "cli", "mcp", "nwc", "bridge", "l402::paywall", "l402::mount", "l402::throttle"];

#[test]
fn no_domain_file_imports_an_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for part in DOMAIN {
        rust_files(&src.join(part), &mut files);
    }
    assert!(files.len() > 20, "the domain's files were not found under {}: {files:?}", src.display());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let module = module_path(&src, file);
        for (line, path) in crate_paths(&module, &text) {
            if let Some(edge) = EDGES.iter().find(|edge| names(&path, edge)) {
                found.push(format!("{}:{line}: {path} (the edge `{edge}`)", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "domain files import edges:\n{}", found.join("\n"));
}

/// The store is below the domain: it runs transactions and row operations,
/// and calls no payment flow, gateway operation or event publisher.
#[test]
fn the_store_calls_no_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("store"), &mut files);
    assert!(files.len() > 8, "the store's files were not found: {files:?}");
    let above = ["payment", "gateway", "events", "http", "cli", "mcp", "nwc", "bridge", "l402"];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (line, path) in crate_paths(&module_path(&src, file), &text) {
            if let Some(module) = above.iter().find(|m| names(&path, m)) {
                found.push(format!("{}:{line}: {path} (`{module}` is above the store)", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "store files reach up:\n{}", found.join("\n"));
}

/// Every event is a typed `events::Event`, written through `events::emit`:
/// no kind is spelled as a string at an emit site, and only `events::emit`
/// appends to the outbox.
#[test]
fn events_are_written_typed_and_in_one_place() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let is_emit_home = file.ends_with("events/kind.rs");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("emit(\"") || code.contains("emit(&format!") {
                found.push(format!("{}:{}: an event kind as a string", file.display(), n + 1));
            }
            if code.contains(".insert_event(") && !is_emit_home && !file.starts_with(src.join("store")) {
                found.push(format!("{}:{}: an outbox write outside events::emit", file.display(), n + 1));
            }
        }
    }
    assert!(files.len() > 60, "the sources were not found: {}", files.len());
    assert!(found.is_empty(), "events written untyped:\n{}", found.join("\n"));
}

/// The scanner finds what it must, in every spelling, and nothing else: a
/// check that cannot fail proves nothing.
#[test]
fn the_scanner_sees_every_spelling_of_an_import() {
    let gateway_chat = ["gateway".to_owned(), "chat".to_owned()];
    let flagged = |module: &[String], text: &str| -> Vec<String> {
        crate_paths(module, text).into_iter().map(|(_, p)| p).filter(|p| EDGES.iter().any(|e| names(p, e))).collect()
    };
    assert_eq!(flagged(&gateway_chat, "use crate::http::views::message;"), ["http::views::message"]);
    assert_eq!(flagged(&gateway_chat, "let x = crate::cli::run();"), ["cli::run"]);
    assert_eq!(flagged(&gateway_chat, "use crate::{io::Store, mcp::http::PATH};"), ["mcp::http::PATH"]);
    assert_eq!(flagged(&gateway_chat, "use crate::{\n    error::Error,\n    http,\n};"), ["http"]);
    assert_eq!(flagged(&gateway_chat, "use super::super::http::extract;"), ["http::extract"]);
    assert_eq!(flagged(&gateway_chat, "use crate::l402::paywall::IN_FLIGHT_MAX;"), ["l402::paywall::IN_FLIGHT_MAX"]);
    // Not edges: the lightning module's own `http` helpers, the shared
    // L402 protocol, other crates, comments and strings.
    let lightning_lnd = ["lightning".to_owned(), "lnd".to_owned()];
    assert!(flagged(&lightning_lnd, "use super::http::{detail, send};").is_empty());
    assert!(flagged(&gateway_chat, "use crate::l402::challenge::decode_token;").is_empty());
    assert!(flagged(&gateway_chat, "use axum::http::StatusCode; use reqwest::http;").is_empty());
    assert!(flagged(&gateway_chat, "// see crate::http::views\nlet u = \"crate::cli\";").is_empty());
    assert!(flagged(&gateway_chat, "use crate::httpd::X; use crate::client::Y;").is_empty());
    // A quote in a character literal opens no string.
    assert_eq!(flagged(&gateway_chat, "let q = '\"'; use crate::mcp::X; // crate::http"), ["mcp::X"]);
    assert_eq!(flagged(&gateway_chat, "fn f<'a>(x: &'a str) { crate::cli::run(x) }"), ["cli::run"]);
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_owned());
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return };
    for entry in entries.flatten() {
        rust_files(&entry.path(), out);
    }
}

/// The module a file is, from the crate root: `src/gateway/chat.rs` is
/// `gateway::chat`, `src/gateway/mod.rs` is `gateway`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Whether `path` (from the crate root) is `edge` or inside it.
fn names(path: &str, edge: &str) -> bool {
    path == edge || path.strip_prefix(edge).is_some_and(|rest| rest.starts_with("::"))
}

/// Every path in `text` that starts at the crate root, written from it, with
/// its line. `use` groups (`crate::{a, b::c}`) give one path per member.
fn crate_paths(module: &[String], text: &str) -> Vec<(usize, String)> {
    let code = strip_comments_and_strings(text);
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if !at_word_start {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let (mut base, mut consumed): (Option<Vec<String>>, usize) = (None, 0);
        if let Some(after) = rest.strip_prefix("crate::") {
            base = Some(Vec::new());
            consumed = rest.len() - after.len();
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            let mut here = module.to_vec();
            let mut r = rest;
            // A file's `super` is the module above it; `self` is itself.
            loop {
                if let Some(after) = r.strip_prefix("super::") {
                    if here.pop().is_none() {
                        break;
                    }
                    r = after;
                } else if let Some(after) = r.strip_prefix("self::") {
                    r = after;
                } else {
                    break;
                }
            }
            base = Some(here);
            consumed = rest.len() - r.len();
        }
        let Some(base) = base else {
            i += 1;
            continue;
        };
        let line = code[..i].matches('\n').count() + 1;
        let tail = &rest[consumed..];
        for member in expand(tail) {
            let mut full = base.clone();
            full.extend(member.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
            if !full.is_empty() {
                out.push((line, full.join("::")));
            }
        }
        i += consumed.max(1);
    }
    out
}

/// The paths a `use` tail names: `a::b::c` is one; `{a, b::{c, d}}` is
/// `a`, `b::c`, `b::d`.
fn expand(tail: &str) -> Vec<String> {
    let tail = tail.trim_start();
    if let Some(inner) = tail.strip_prefix('{') {
        let Some(end) = matching_brace(inner) else { return Vec::new() };
        return split_top_level(&inner[..end]).into_iter().flat_map(expand).collect();
    }
    let head: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if head.is_empty() {
        return Vec::new();
    }
    let below = tail[head.len()..].strip_prefix("::").map(expand).unwrap_or_default();
    if below.is_empty() {
        return vec![head];
    }
    below.into_iter().map(|b| format!("{head}::{b}")).collect()
}

fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter().map(str::trim).filter(|m| !m.is_empty()).collect()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The text with `//` and `/* */` comments, string and character literals
/// blanked (line breaks kept, so line numbers still hold). Raw strings are
/// rare enough in these files to read as code.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Skips to the end of a literal closed by `close`, minding escapes.
    let skip_literal = |mut i: usize, close: char, out: &mut String| -> usize {
        while i < chars.len() {
            match chars[i] {
                '\\' => i += 2,
                c if c == close => return i + 1,
                '\n' => {
                    out.push('\n');
                    i += 1;
                }
                _ => i += 1,
            }
        }
        i
    };
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                i += 2;
                out.push(' ');
            }
            '"' => {
                i = skip_literal(i + 1, '"', &mut out);
                out.push_str("\"\"");
            }
            // A character literal ('x', '\n', '"'); otherwise a lifetime.
            '\'' if next == Some('\\') || chars.get(i + 2) == Some(&'\'') => {
                i = skip_literal(i + 1, '\'', &mut out);
                out.push_str("' '");
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Tests see events as every client does, through `/v1/events`: none reads
/// the outbox's table itself, which would tie them to one store's schema.
#[test]
fn no_test_reads_events_from_the_database() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    rust_files(&tests, &mut files);
    assert!(files.len() > 20, "the tests were not found under {}", tests.display());
    let table = ["from ", "events"].concat();
    let readers: Vec<_> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.to_ascii_lowercase().contains(&table)))
        .collect();
    assert!(readers.is_empty(), "tests that read the events table: {readers:?}");
}
