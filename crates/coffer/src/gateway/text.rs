//! Text that people read: agent and room names, memos, purposes, messages.
//! Control characters and Unicode bidirectional formatting characters are
//! refused, not cleaned: a name that renders as `alice` but holds a
//! right-to-left override (U+202E) could pose as another agent in the UI,
//! in a log or in a messenger, and a refused request changes nothing.

use crate::error::Error;

/// Whether a field may hold line breaks and tabs (messages, memos) or is a
/// single line (names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    Single,
    Multi,
}

/// `text` cut to at most `max_bytes`, on a character boundary.
pub fn truncate(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Refuses control characters (but `\n` and `\t` in a [`Lines::Multi`]
/// field) and bidirectional formatting characters.
pub fn check(field: &'static str, value: &str, lines: Lines) -> Result<(), Error> {
    for c in value.chars() {
        let allowed_space = lines == Lines::Multi && (c == '\n' || c == '\t');
        if c.is_control() && !allowed_space {
            return Err(refused(field, c, "control"));
        }
        if is_bidi_format(c) {
            return Err(refused(field, c, "bidirectional formatting"));
        }
    }
    Ok(())
}

fn refused(field: &'static str, c: char, kind: &str) -> Error {
    Error::InvalidField { field, detail: format!("no {kind} characters (found U+{:04X})", u32::from(c)) }
}

/// The characters that change the direction of the text around them:
/// the Arabic letter mark, the left-to-right and right-to-left marks, the
/// embeddings and overrides (U+202A-U+202E) and the isolates (U+2066-U+2069).
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn plain_text_passes_and_each_hidden_character_is_refused() {
        assert!(check("name", "alice ünd 名前 🙂", Lines::Single).is_ok());
        assert!(check("text", "line one\nline\ttwo", Lines::Multi).is_ok());
        for bad in ["a\nb", "a\tb", "a\u{0}b", "a\u{1b}[31mb", "a\u{7f}", "a\u{85}b"] {
            assert!(check("name", bad, Lines::Single).is_err(), "{bad:?}");
        }
        for bad in ["a\rb", "a\u{0}b", "\u{1b}[2J"] {
            assert!(check("text", bad, Lines::Multi).is_err(), "{bad:?}");
        }
        for c in ['\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            let err = check("memo", &format!("gpj.{c}exe"), Lines::Multi).unwrap_err();
            assert!(err.to_string().contains(&format!("U+{:04X}", u32::from(c))), "{err}");
        }
    }
}
