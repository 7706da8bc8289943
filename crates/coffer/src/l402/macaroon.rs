//! Macaroons as L402 uses them: the binary v2 format (libmacaroons), with
//! HMAC-SHA256 signatures and first-party caveats only.
//!
//! The identifier is the L402 one: version (u16, 0), the invoice's payment
//! hash, and a random token id. Caveats are `key=value` text; the paywall
//! writes `expires_at` (unix seconds), `route` (a path prefix) and `uses`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The key derivation of libmacaroons: the root key is first HMACed with
/// this, so that short root keys are not used directly.
const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";
/// A token the paywall accepts is small; anything larger is not one of ours.
pub const MACAROON_LEN_MAX_BYTES: usize = 4096;
pub const CAVEATS_MAX: usize = 16;
pub const IDENTIFIER_LEN_BYTES: usize = 2 + 32 + 32;

const FIELD_EOS: u64 = 0;
const FIELD_LOCATION: u64 = 1;
const FIELD_IDENTIFIER: u64 = 2;
const FIELD_SIGNATURE: u64 = 6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macaroon {
    pub location: String,
    pub identifier: Vec<u8>,
    pub caveats: Vec<Vec<u8>>,
    pub signature: [u8; 32],
}

/// The L402 identifier's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identifier {
    pub payment_hash: [u8; 32],
    pub token_id: [u8; 32],
}

impl Identifier {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IDENTIFIER_LEN_BYTES);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&self.payment_hash);
        out.extend_from_slice(&self.token_id);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Identifier> {
        if bytes.len() != IDENTIFIER_LEN_BYTES || bytes[..2] != [0, 0] {
            return None;
        }
        let mut id = Identifier { payment_hash: [0; 32], token_id: [0; 32] };
        id.payment_hash.copy_from_slice(&bytes[2..34]);
        id.token_id.copy_from_slice(&bytes[34..66]);
        Some(id)
    }
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

impl Macaroon {
    pub fn mint(root_key: &[u8], location: &str, identifier: Vec<u8>) -> Macaroon {
        let derived = hmac_sha256(KEY_GENERATOR, root_key);
        let signature = hmac_sha256(&derived, &identifier);
        Macaroon { location: location.to_owned(), identifier, caveats: Vec::new(), signature }
    }

    pub fn add_caveat(&mut self, caveat: &str) {
        self.signature = hmac_sha256(&self.signature, caveat.as_bytes());
        self.caveats.push(caveat.as_bytes().to_vec());
    }

    /// Whether the signature chain is the one `root_key` makes, compared in
    /// constant time.
    pub fn verify_signature(&self, root_key: &[u8]) -> bool {
        let derived = hmac_sha256(KEY_GENERATOR, root_key);
        let mut signature = hmac_sha256(&derived, &self.identifier);
        for caveat in &self.caveats {
            signature = hmac_sha256(&signature, caveat);
        }
        bool::from(signature.ct_eq(&self.signature))
    }

    /// The caveats as text `key=value` pairs; a caveat that is not one is
    /// returned with an empty key, which no verifier accepts.
    pub fn caveat_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.caveats.iter().map(|c| {
            let text = std::str::from_utf8(c).unwrap_or("");
            text.split_once('=').map_or(("", text), |(k, v)| (k.trim(), v.trim()))
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![2u8];
        put_field(&mut out, FIELD_LOCATION, self.location.as_bytes());
        put_field(&mut out, FIELD_IDENTIFIER, &self.identifier);
        put_varint(&mut out, FIELD_EOS);
        for caveat in &self.caveats {
            put_field(&mut out, FIELD_IDENTIFIER, caveat);
            put_varint(&mut out, FIELD_EOS);
        }
        put_varint(&mut out, FIELD_EOS);
        put_field(&mut out, FIELD_SIGNATURE, &self.signature);
        out
    }

    /// Decodes the v2 binary format; `None` for anything else, never a panic.
    pub fn decode(bytes: &[u8]) -> Option<Macaroon> {
        if bytes.len() > MACAROON_LEN_MAX_BYTES {
            return None;
        }
        let mut r = Reader { bytes, at: 0 };
        if r.byte()? != 2 {
            return None;
        }
        let mut location = String::new();
        let mut field = r.varint()?;
        if field == FIELD_LOCATION {
            location = String::from_utf8(r.data()?.to_vec()).ok()?;
            field = r.varint()?;
        }
        if field != FIELD_IDENTIFIER {
            return None;
        }
        let identifier = r.data()?.to_vec();
        if r.varint()? != FIELD_EOS {
            return None;
        }
        let mut caveats = Vec::new();
        loop {
            match r.varint()? {
                FIELD_EOS => break,
                FIELD_IDENTIFIER if caveats.len() < CAVEATS_MAX => {
                    caveats.push(r.data()?.to_vec());
                    // Third-party caveats (verification key, location) are
                    // not supported: the caveat must end here.
                    if r.varint()? != FIELD_EOS {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        if r.varint()? != FIELD_SIGNATURE {
            return None;
        }
        let signature: [u8; 32] = r.data()?.try_into().ok()?;
        if r.at != bytes.len() {
            return None;
        }
        Some(Macaroon { location, identifier, caveats, signature })
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(out, field);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// A varint of at most 4 bytes: no field or length here is larger.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..28).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn data(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        let data = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn matches_libmacaroons_reference_signature() {
        // The example of the libmacaroons README (signature as printed there).
        let mut m = Macaroon::mint(
            b"this is our super secret key; only we should know it",
            "http://mybank/",
            b"we used our secret key".to_vec(),
        );
        assert_eq!(hex::encode(m.signature), "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f");
        m.add_caveat("account = 3735928559");
        assert_eq!(hex::encode(m.signature), "1efe4763f290dbce0c1d08477367e11f4eee456a64933cf662d79772dbb82128");
    }

    #[test]
    fn round_trips_and_detects_tampering() {
        let id = Identifier { payment_hash: [7; 32], token_id: [9; 32] };
        let mut m = Macaroon::mint(b"root", "coffer", id.encode());
        m.add_caveat("route=/data");
        m.add_caveat("uses=3");
        let bytes = m.encode();
        let back = Macaroon::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert!(back.verify_signature(b"root"));
        assert!(!back.verify_signature(b"other root"));
        assert_eq!(Identifier::decode(&back.identifier), Some(id));
        let mut forged = back.clone();
        forged.caveats[1] = b"uses=300".to_vec();
        assert!(!forged.verify_signature(b"root"));
        for cut in 0..bytes.len() {
            assert!(Macaroon::decode(&bytes[..cut]).is_none(), "a truncated token decodes at {cut}");
        }
    }
}
