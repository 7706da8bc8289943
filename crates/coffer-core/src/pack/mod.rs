//! Compact forms of what the stores keep most of: JSON texts (the outbox's
//! event data and the audit bodies) and BOLT11 invoices. Each is given back
//! byte for byte, and tells a packed value from a text stored as it is by
//! its first byte, so rows written before packing read as they are.

pub mod bech32;
pub mod json;

/// Why a stored value is not a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackError {
    /// A packed value that ends early, names an unknown tag or nests wrongly.
    Corrupt(&'static str),
    /// A value stored as it is that is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::Corrupt(why) => write!(f, "a packed value is corrupt: {why}"),
            PackError::NotUtf8 => f.write_str("a stored text is not UTF-8"),
        }
    }
}

impl std::error::Error for PackError {}

// The packed forms' first bytes differ from each other and from any text's.
const _: () = assert!(json::PACKED_V1 != bech32::PACKED_BECH32_V1 && json::PACKED_V1 != bech32::PACKED_BECH32_V2);
const _: () = assert!(bech32::PACKED_BECH32_V1 != bech32::PACKED_BECH32_V2);
const _: () = assert!(json::PACKED_V1 < b' ' && bech32::PACKED_BECH32_V1 < b' ' && bech32::PACKED_BECH32_V2 < b' ');
