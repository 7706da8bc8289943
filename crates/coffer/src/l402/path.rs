//! The one form of a request path that a paywall decides on and forwards.
//!
//! A paywall that matched its routes on one spelling of a path and let the
//! upstream decode another would sell `/cheap` and serve `/expensive`
//! (`/cheap/%2e%2e/expensive`). So every path is first brought to a single
//! canonical form, and that form, and only that one, is both matched and
//! forwarded:
//!
//! - escapes of unreserved characters (`%2e`, `%41`) are decoded; other
//!   escapes are kept, in upper case (`%3a` → `%3A`);
//! - bytes that are not path characters are escaped;
//! - repeated slashes are one slash, and `.` segments are dropped;
//! - refused: `..` segments (however spelled: `%2e%2e`, `.%2E`, `..;x`),
//!   escaped separators (`%2f`, `%5c`), backslashes, escaped percent signs
//!   (`%25`: double encoding, which an upstream that decodes twice would
//!   read as a separator or a dot), NUL and other control bytes, broken
//!   escapes, and paths longer than [`PATH_LEN_MAX_BYTES`].
//!
//! Refusing rather than resolving `..` keeps a mounted paywall inside its
//! upstream base path without reasoning about where a walk ends: no
//! canonical path has a segment that climbs.

use std::fmt;

/// The longest path accepted, raw and canonical alike: escaping can make
/// the canonical form up to three times as long as the raw one, and a form
/// longer than the bound would not be canonical (a second pass refuses it).
pub const PATH_LEN_MAX_BYTES: usize = 4096;

/// Why a path has no canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    TooLong,
    BrokenEscape,
    /// `%2f` or `%5c`: a separator some upstreams decode and some do not.
    EncodedSeparator,
    Backslash,
    /// `%25`: an escaped escape.
    DoubleEncoding,
    /// A `..` segment, however spelled.
    DotDot,
    ControlByte,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with /",
            PathError::TooLong => "the path is too long",
            PathError::BrokenEscape => "the path has a % not followed by two hex digits",
            PathError::EncodedSeparator => "the path has an encoded slash or backslash (%2F, %5C)",
            PathError::Backslash => "the path has a backslash",
            PathError::DoubleEncoding => "the path has an encoded percent sign (%25): double encoding",
            PathError::DotDot => "the path has a .. segment",
            PathError::ControlByte => "the path has a control byte",
        })
    }
}

impl std::error::Error for PathError {}

/// The canonical form of `raw`, a request's path as it came (without the
/// query string), or why it has none.
pub fn canonicalize(raw: &str) -> Result<String, PathError> {
    if raw.len() > PATH_LEN_MAX_BYTES {
        return Err(PathError::TooLong);
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut canonical = String::with_capacity(raw.len());
    for raw_segment in rest.split('/') {
        let segment = decode_segment(raw_segment)?;
        match dot_segment(&segment)? {
            // Repeated slashes and `.` segments name the same resource.
            true => {}
            false => {
                canonical.push('/');
                canonical.push_str(&segment);
            }
        }
    }
    // A trailing slash is kept: upstreams may tell `/dir/` from `/dir`.
    if (raw.len() > 1 && raw.ends_with('/')) || canonical.is_empty() {
        canonical.push('/');
    }
    if canonical.len() > PATH_LEN_MAX_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(canonical)
}

/// Whether a decoded segment is to be dropped (empty or `.`); a segment
/// that climbs, or looks like `.` or `..` to a server that cuts path
/// parameters at `;`, is refused.
fn dot_segment(segment: &str) -> Result<bool, PathError> {
    let bare = segment.split(';').next().unwrap_or_default();
    match (segment, bare) {
        ("" | ".", _) => Ok(true),
        (_, "." | "..") => Err(PathError::DotDot),
        _ => Ok(false),
    }
}

/// One segment with escapes settled: unreserved characters plain, every
/// other byte that is not a path character escaped in upper case.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let escaped = bytes.get(i + 1..i + 3).and_then(hex_byte).ok_or(PathError::BrokenEscape)?;
            push_decoded(&mut out, escaped)?;
            i += 3;
        } else {
            push_raw(&mut out, byte)?;
            i += 1;
        }
    }
    Ok(out)
}

fn push_decoded(out: &mut String, byte: u8) -> Result<(), PathError> {
    match byte {
        b'/' | b'\\' => Err(PathError::EncodedSeparator),
        b'%' => Err(PathError::DoubleEncoding),
        _ if is_control(byte) => Err(PathError::ControlByte),
        _ if is_unreserved(byte) => {
            out.push(char::from(byte));
            Ok(())
        }
        _ => {
            push_escaped(out, byte);
            Ok(())
        }
    }
}

fn push_raw(out: &mut String, byte: u8) -> Result<(), PathError> {
    match byte {
        b'\\' => Err(PathError::Backslash),
        _ if is_control(byte) => Err(PathError::ControlByte),
        _ if is_unreserved(byte) || is_sub_delim_or_colon_at(byte) => {
            out.push(char::from(byte));
            Ok(())
        }
        _ => {
            push_escaped(out, byte);
            Ok(())
        }
    }
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    let (high, low) = (digit(pair[0])?, digit(pair[1])?);
    u8::try_from(high * 16 + low).ok()
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// RFC 3986 unreserved: the same resource whether escaped or not.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The other characters RFC 3986 allows plain in a path segment.
fn is_sub_delim_or_colon_at(byte: u8) -> bool {
    matches!(byte, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_has_one_form_or_none() {
        use PathError::*;
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/data", Ok("/data")),
            ("/data/", Ok("/data/")),
            ("//data///today", Ok("/data/today")),
            ("/data/./today", Ok("/data/today")),
            ("/./", Ok("/")),
            ("/%2e/data", Ok("/data")),
            ("/d%61t%41", Ok("/datA")),
            ("/file%2etxt", Ok("/file.txt")),
            ("/a%3ab", Ok("/a%3Ab")),
            ("/a:b@c;d=e", Ok("/a:b@c;d=e")),
            ("/a b", Ok("/a%20b")),
            ("/a?b#c", Ok("/a%3Fb%23c")),
            ("/caf\u{e9}", Ok("/caf%C3%A9")),
            ("/%C3%a9", Ok("/%C3%A9")),
            ("/...", Ok("/...")),
            ("/.well-known", Ok("/.well-known")),
            ("/cheap/../expensive", Err(DotDot)),
            ("/cheap/%2e%2e/expensive", Err(DotDot)),
            ("/cheap/%2E%2E/expensive", Err(DotDot)),
            ("/cheap/.%2e/expensive", Err(DotDot)),
            ("/cheap/%2e./expensive", Err(DotDot)),
            ("/cheap/..", Err(DotDot)),
            ("/cheap/..;x/expensive", Err(DotDot)),
            ("/cheap/.;x", Err(DotDot)),
            ("/cheap%2f..%2fexpensive", Err(EncodedSeparator)),
            ("/cheap%2F..%2Fexpensive", Err(EncodedSeparator)),
            ("/cheap%5c..%5cexpensive", Err(EncodedSeparator)),
            ("/cheap\\..\\expensive", Err(Backslash)),
            ("/cheap/%252e%252e/expensive", Err(DoubleEncoding)),
            ("/cheap/%25", Err(DoubleEncoding)),
            ("/a%00b", Err(ControlByte)),
            ("/a\0b", Err(ControlByte)),
            ("/a%0d%0aX: y", Err(ControlByte)),
            ("/a%7f", Err(ControlByte)),
            ("/a%", Err(BrokenEscape)),
            ("/a%2", Err(BrokenEscape)),
            ("/a%zz", Err(BrokenEscape)),
            ("/a%\u{e9}", Err(BrokenEscape)),
            ("", Err(NotAbsolute)),
            ("data", Err(NotAbsolute)),
        ];
        for (raw, want) in table {
            assert_eq!(canonicalize(raw).as_deref().map_err(|e| *e), *want, "{raw:?}");
        }
        assert_eq!(canonicalize(&format!("/{}", "a".repeat(PATH_LEN_MAX_BYTES))), Err(TooLong));
        // Short enough raw, too long once escaped: refused, not returned in
        // a form that a second pass would refuse (found by the fuzzer).
        let grows = format!("/{}", "?".repeat(PATH_LEN_MAX_BYTES / 2));
        assert_eq!(canonicalize(&grows), Err(TooLong));
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        let longest = format!("/{}", "?".repeat((PATH_LEN_MAX_BYTES - 1) / 3));
        for raw in ["//a/./b/", "/a%3ab c", "/caf\u{e9}/%2e", "/x;y=1/z", longest.as_str()] {
            let once = canonicalize(raw).unwrap();
            assert_eq!(canonicalize(&once).unwrap(), once, "{raw:?}");
        }
    }
}
