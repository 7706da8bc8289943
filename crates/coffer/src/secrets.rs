//! Secrets: agent keys, the operator token and the node key.
//!
//! Keys are random 256-bit values shown once; coffer keeps only their SHA-256
//! digest (a 256-bit random secret needs no slow hash: it cannot be guessed,
//! and the digest allows lookup). Digests are compared in constant time. The
//! node key is a file of mode 0600. None of these is ever logged.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Prefix of agent keys, so that secret scanners can find a leaked one.
pub const AGENT_KEY_PREFIX: &str = "csk_";
/// Prefix of generated operator tokens.
pub const OPERATOR_TOKEN_PREFIX: &str = "cop_";
/// Longest secret accepted in a header: anything longer is not ours.
pub const SECRET_LEN_MAX_BYTES: usize = 256;

/// The SHA-256 digest of a secret. `Debug` prints nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

impl SecretDigest {
    pub fn of(secret: &str) -> SecretDigest {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new secret with the given prefix and 256 random bits.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes::<32>()))
}

/// A new public identifier: prefix, the time in milliseconds (48 bits) and
/// 64 random bits. Ids made later sort later, so a unique index on them
/// grows at its end instead of touching a random page on every insert.
pub fn new_id(prefix: &str) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 & 0xFFFF_FFFF_FFFF);
    format!("{prefix}{now_ms:012x}{}", hex::encode(random_bytes::<8>()))
}

/// A chosen operator token is at least this long: it guards every agent's
/// money, and a short one can be guessed. Generated tokens have 68.
pub const OPERATOR_TOKEN_LEN_MIN_BYTES: usize = 32;
// A generated secret (a prefix and 32 random bytes in hex: 68 for either
// prefix) is long enough to be chosen, and short enough to be accepted.
const _: () = assert!(OPERATOR_TOKEN_PREFIX.len() + 64 == 68);
const _: () = assert!(AGENT_KEY_PREFIX.len() + 64 == 68);
const _: () = assert!(OPERATOR_TOKEN_LEN_MIN_BYTES <= 68);
const _: () = assert!(68 <= SECRET_LEN_MAX_BYTES);

/// Checks a token the operator chose (`COFFER_OPERATOR_TOKEN`).
pub fn check_operator_token(token: &str) -> Result<(), String> {
    if token.len() < OPERATOR_TOKEN_LEN_MIN_BYTES {
        return Err(format!(
            "COFFER_OPERATOR_TOKEN must be at least {OPERATOR_TOKEN_LEN_MIN_BYTES} characters \
             (it has {}); leave it unset and coffer generates one",
            token.len()
        ));
    }
    if token.len() > SECRET_LEN_MAX_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "COFFER_OPERATOR_TOKEN must be at most {SECRET_LEN_MAX_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing, and leaves it readable by
/// its owner only: it holds the node key and the database, whose rows hold
/// preimages. An existing folder loses its group and other bits.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    restrict_to_owner(dir)
}

/// Removes the group and other permission bits of an existing file or
/// folder (a database created by an older coffer was 0644).
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    Ok(())
}

/// Creates an empty file of mode 0600 if `path` does not exist, and
/// restricts it to its owner if it does. SQLite gives its `-wal` and `-shm`
/// files the mode of the database file, so creating the database this way
/// first makes all three private.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    restrict_to_owner(path)
}

/// Writes a new secret file readable by its owner only. Fails if it exists,
/// so that a key is never silently replaced.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_by_value() {
        let a = SecretDigest::of("csk_one");
        assert!(a.matches(&SecretDigest::of("csk_one")));
        assert!(!a.matches(&SecretDigest::of("csk_two")));
        assert_eq!(format!("{a:?}"), "SecretDigest(..)");
    }

    #[test]
    fn secrets_are_unique_and_prefixed() {
        let (a, b) = (new_secret(AGENT_KEY_PREFIX), new_secret(AGENT_KEY_PREFIX));
        assert_ne!(a, b);
        assert!(a.starts_with("csk_") && a.len() == 4 + 64);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let first = new_id("pay_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id("pay_");
        assert!(first < second, "{first} then {second}");
        assert_eq!(first.len(), 4 + 12 + 16);
    }

    #[test]
    fn a_chosen_operator_token_is_long_and_printable() {
        assert!(check_operator_token("op-secret").unwrap_err().contains("at least 32"));
        assert!(check_operator_token(&"x".repeat(31)).is_err());
        assert!(check_operator_token(&"x".repeat(32)).is_ok());
        assert!(check_operator_token(&format!("{} y", "x".repeat(32))).is_err());
        assert!(check_operator_token(&"x".repeat(SECRET_LEN_MAX_BYTES + 1)).is_err());
        assert!(check_operator_token(&new_secret(OPERATOR_TOKEN_PREFIX)).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn private_folders_and_files_lose_group_and_other_bits() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let file = data.join("db");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, b"kept").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_mode_0600_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_private_file(&path, b"x").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_private_file(&path, b"y").is_err());
    }
}

/// A credential for another system (an admin key, a macaroon, a rune): kept
/// in memory only, and never printed: `Debug` shows `<secret>`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}
