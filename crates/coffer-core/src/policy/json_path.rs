//! Best-effort JSON paths for serde errors.
//!
//! serde_json reports where it failed (line and column) but, for most
//! errors, not which field it was reading ("invalid value: integer `-1`,
//! expected u64"). An operator editing a long policy needs the field, so we
//! re-read the document up to the error position with a tiny scanner that
//! tracks the current object keys and array indexes. The document has already
//! been tokenised successfully up to that point by serde_json, so the scanner
//! only needs to follow structure, not to validate it.

/// The path, like `budgets[1].window`, of the value being read at the error
/// position of `error` in `json`. Empty when the error is at the top level.
pub(crate) fn error_path(json: &str, error: &serde_json::Error) -> String {
    let offset = byte_offset(json, error.line(), error.column());
    let mut path = path_at(json.get(..offset).unwrap_or(json));
    // A missing field is reported after the object's closing brace, where the
    // scanner is back at the object itself; the message names the field.
    if let Some(field) = missing_field_name(&error.to_string()) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field);
    }
    path
}

/// serde_json's message without its " at line L column C" suffix, since the
/// field path says more to a person than a column does.
pub(crate) fn error_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(short) => short.to_owned(),
        None => message,
    }
}

/// serde_json counts lines from 1 and columns in bytes from the line start.
fn byte_offset(json: &str, line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        _ => json.match_indices('\n').nth(line - 2).map_or(json.len(), |(i, _)| i + 1),
    };
    let mut offset = line_start.saturating_add(column).min(json.len());
    while !json.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

enum Frame {
    Object { key: Option<String>, awaiting_key: bool },
    Array { index: usize },
}

/// The path of the value at the end of `prefix`, a prefix of a JSON document.
fn path_at(prefix: &str) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut chars = prefix.chars();
    while let Some(c) = chars.next() {
        match (c, stack.last_mut()) {
            ('"', top) => {
                let text = read_string(&mut chars);
                if let Some(Frame::Object { key, awaiting_key: true }) = top {
                    *key = Some(text);
                }
            }
            (':', Some(Frame::Object { awaiting_key, .. })) => *awaiting_key = false,
            (',', Some(Frame::Object { key, awaiting_key })) => {
                *key = None;
                *awaiting_key = true;
            }
            (',', Some(Frame::Array { index })) => *index = index.saturating_add(1),
            ('{', _) => stack.push(Frame::Object { key: None, awaiting_key: true }),
            ('[', _) => stack.push(Frame::Array { index: 0 }),
            ('}' | ']', _) => {
                stack.pop();
            }
            _ => {}
        }
    }
    render(&stack)
}

/// Reads a string body after its opening quote. An unterminated string (the
/// error is inside it) yields what was read.
fn read_string(chars: &mut std::str::Chars<'_>) -> String {
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            // Escapes are kept as the following character: good enough to
            // name a key, and `\"` must not end the string.
            '\\' => text.extend(chars.next()),
            _ => text.push(c),
        }
    }
    text
}

fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => break,
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_keys_and_indexes() {
        assert_eq!(path_at(r#"{"a": -1"#), "a");
        assert_eq!(path_at(r#"{"a": 1, "b""#), "b");
        assert_eq!(path_at(r#"{"a": 1, "#), "");
        assert_eq!(path_at(r#"{"xs": [{"k": 1}, {"k": 2}, {"k": "#), "xs[2].k");
        assert_eq!(path_at(r#"{"xs": [[1, 2], [3, "#), "xs[1][1]");
        assert_eq!(path_at(r#"{"a": {"b": "x,}]\"", "c": "#), "a.c");
        assert_eq!(path_at(r#"{"a": {"b": 1}, "c"#), "c");
        assert_eq!(path_at(""), "");
    }

    #[test]
    fn missing_field_names_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            need: u64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            list: Vec<Inner>,
        }
        let json = "{\n  \"list\": [\n    {\"need\": 1},\n    {}\n  ]\n}";
        let err = serde_json::from_str::<Outer>(json).unwrap_err();
        assert_eq!(error_path(json, &err), "list[1].need");
        assert_eq!(error_message(&err), "missing field `need`");
    }

    #[test]
    fn multi_line_and_non_ascii_positions() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            name: String,
            count: u64,
        }
        let json = "{\n  \"name\": \"é ü\",\n  \"count\": -3\n}";
        let err = serde_json::from_str::<Doc>(json).unwrap_err();
        assert_eq!(error_path(json, &err), "count");
        assert!(error_message(&err).contains("-3"), "{}", error_message(&err));
        assert_eq!(byte_offset("é", 1, 1), 0, "never splits a character");
        assert_eq!(byte_offset("ab", 7, 9), 2, "clamped to the document");
    }
}
