//! Nostr events (NIP-01): the id is the SHA-256 of the JSON array
//! `[0, pubkey, created_at, kind, tags, content]`, signed with BIP-340
//! Schnorr. An event from a relay is trusted only after its id and
//! signature are checked here.

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{Keypair, Message, Secp256k1, Signing, Verification, XOnlyPublicKey, schnorr};
use serde::{Deserialize, Serialize};

/// Tags per event and values per tag coffer reads: NWC events carry a few.
const TAGS_MAX: usize = 64;
const TAG_VALUES_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub pubkey: String,
    pub created_at: u64,
    pub kind: u32,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: String,
}

/// The NIP-01 id of an event's fields.
fn event_id(pubkey_hex: &str, created_at: u64, kind: u32, tags: &[Vec<String>], content: &str) -> [u8; 32] {
    // serde_json writes NIP-01's serialization: no whitespace, UTF-8 as is,
    // and the same escapes for quotes, backslashes and control characters.
    let canonical = serde_json::json!([0, pubkey_hex, created_at, kind, tags, content]).to_string();
    sha256::Hash::hash(canonical.as_bytes()).to_byte_array()
}

impl Event {
    /// An event by `keys`, signed.
    pub fn sign<C: Signing>(
        secp: &Secp256k1<C>,
        keys: &Keypair,
        kind: u32,
        tags: Vec<Vec<String>>,
        content: String,
        created_at: u64,
    ) -> Event {
        let pubkey = hex::encode(keys.x_only_public_key().0.serialize());
        let id = event_id(&pubkey, created_at, kind, &tags, &content);
        let aux = crate::secrets::random_bytes::<32>();
        let sig = secp.sign_schnorr_with_aux_rand(&Message::from_digest(id), keys, &aux);
        Event { id: hex::encode(id), pubkey, created_at, kind, tags, content, sig: hex::encode(sig.serialize()) }
    }

    /// Checks the id against the fields and the signature against the
    /// author's key. Returns why not.
    pub fn verify<C: Verification>(&self, secp: &Secp256k1<C>) -> Result<(), &'static str> {
        if self.tags.len() > TAGS_MAX || self.tags.iter().any(|t| t.len() > TAG_VALUES_MAX) {
            return Err("too many tags");
        }
        let author = XOnlyPublicKey::from_slice(&hex32(&self.pubkey).ok_or("pubkey is not 32 bytes of hex")?)
            .map_err(|_| "pubkey is not a valid key")?;
        let id = event_id(&self.pubkey, self.created_at, self.kind, &self.tags, &self.content);
        if hex32(&self.id) != Some(id) {
            return Err("id does not match the event");
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.sig, &mut sig).map_err(|_| "sig is not 64 bytes of hex")?;
        let sig = schnorr::Signature::from_slice(&sig).map_err(|_| "sig is not a signature")?;
        secp.verify_schnorr(&sig, &Message::from_digest(id), &author).map_err(|_| "bad signature")
    }

    /// The first value of the first tag with this name.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.iter().find(|t| t.first().map(String::as_str) == Some(name)).and_then(|t| t.get(1)).map(String::as_str)
    }
}

pub fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok().map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The info event in NIP-47's appendix, as a wallet signed it.
    fn nip47_example() -> Event {
        Event {
            id: "df467db0a9f9ec77ffe6f561811714ccaa2e26051c20f58f33c3d66d6c2b4d1c".into(),
            pubkey: "c04ccd5c82fc1ea3499b9c6a5c0a7ab627fbe00a0116110d4c750faeaecba1e2".into(),
            created_at: 1713883677,
            kind: 13194,
            tags: vec![
                vec!["encryption".into(), "nip44_v2 nip04".into()],
                vec!["notifications".into(), "payment_received payment_sent".into()],
            ],
            content: "pay_invoice pay_keysend get_balance get_info make_invoice lookup_invoice list_transactions \
                      multi_pay_invoice multi_pay_keysend sign_message notifications"
                .into(),
            sig: "31f57b369459b5306a5353aa9e03be7fbde169bc881c3233625605dd12f53548179def16b9fe1137e6465d7e4d5bb27ce81fd6e75908c46b06269f4233c845d8".into(),
        }
    }

    #[test]
    fn a_real_wallets_event_verifies_and_a_changed_one_does_not() {
        let secp = Secp256k1::verification_only();
        let event = nip47_example();
        assert_eq!(event.verify(&secp), Ok(()));
        assert_eq!(event.tag("encryption"), Some("nip44_v2 nip04"));
        let changed = Event { content: "pay_invoice".into(), ..event.clone() };
        assert_eq!(changed.verify(&secp), Err("id does not match the event"));
        let mut resigned = event.clone();
        resigned.sig.replace_range(..2, if resigned.sig.starts_with("00") { "01" } else { "00" });
        assert_eq!(resigned.verify(&secp), Err("bad signature"));
        let garbage = Event { pubkey: "zz".into(), ..event };
        assert!(garbage.verify(&secp).is_err());
    }

    #[test]
    fn signed_events_verify() {
        let secp = Secp256k1::new();
        let keys = Keypair::from_seckey_slice(&secp, &[9; 32]).unwrap();
        let tags = vec![vec!["p".to_owned(), "ab".repeat(32)]];
        let event = Event::sign(&secp, &keys, 23194, tags, "hi \"there\"\n".into(), 1_700_000_000);
        assert_eq!(event.verify(&secp), Ok(()));
        assert_eq!(event.tag("p"), Some("ab".repeat(32).as_str()));
    }
}
