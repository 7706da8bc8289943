//! The paywall's path canonicaliser: every request path is refused or
//! reduced to the one form both the route match and the upstream see. What
//! it returns is canonical already (a fixed point) and carries nothing that
//! could step out of a route or a mount: no `..` or `.` segment, no encoded
//! dot, slash or backslash, no backslash, no repeated slash.
#![no_main]

use coffer::l402::path::canonicalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(path) = canonicalize(raw) else { return };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}: not absolute");
    assert_eq!(canonicalize(&path).as_deref().ok(), Some(path.as_str()), "{raw:?} -> {path:?}: not a fixed point");
    let lower = path.to_ascii_lowercase();
    for banned in ["%2e", "%2f", "%5c", "\\", "//"] {
        assert!(!lower.contains(banned), "{raw:?} -> {path:?}: contains {banned}");
    }
    for segment in path.split('/').skip(1) {
        assert!(segment != ".." && segment != ".", "{raw:?} -> {path:?}: a dot segment");
    }
});
