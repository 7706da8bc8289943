//! The connection string a wallet gives out (NIP-47):
//! `nostr+walletconnect://<wallet pubkey hex>?relay=<ws(s) URL>&secret=<hex>`.
//! Parsed strictly; `lud16` and other parameters are ignored. The secret is
//! kept in a [`Secret`] and no error message repeats any part of the string.

use crate::secrets::Secret;
use bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};

const SCHEME: &str = "nostr+walletconnect";
/// Longer strings are not connection strings (a few relays, a key, a secret).
const URI_LEN_MAX_BYTES: usize = 4096;

#[derive(Clone, Debug)]
pub struct NwcUri {
    pub wallet: XOnlyPublicKey,
    /// The relay to use: the first one given (NIP-47 allows several; coffer
    /// uses one, so that a request and its answer meet on the same relay).
    pub relay: String,
    /// The client's secret key, 64 hex digits.
    pub secret: Secret,
}

impl NwcUri {
    pub fn parse(text: &str) -> Result<NwcUri, String> {
        if text.len() > URI_LEN_MAX_BYTES {
            return Err(format!("the NWC connection string is longer than {URI_LEN_MAX_BYTES} bytes"));
        }
        let rest = text
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or("the NWC connection string must start with nostr+walletconnect://")?;
        let (pubkey, query) = rest.split_once('?').ok_or("the NWC connection string has no ?relay=…&secret=…")?;
        let wallet = hex32(pubkey.trim_end_matches('/'))
            .and_then(|b| XOnlyPublicKey::from_slice(&b).ok())
            .ok_or("the NWC wallet's public key is not 32 bytes of hex of a valid key")?;
        let (mut relay, mut secret) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "relay" if relay.is_none() => relay = Some(relay_url(&percent_decode(value)?)?),
                "secret" if secret.is_some() => return Err("the NWC connection string has two secrets".into()),
                "secret" => secret = Some(secret_key(value)?),
                _ => {}
            }
        }
        let relay = relay.ok_or("the NWC connection string names no relay")?;
        let secret = secret.ok_or("the NWC connection string has no secret")?;
        Ok(NwcUri { wallet, relay, secret })
    }

    /// The relay's scheme, host and port: what the start-up line shows.
    pub fn relay_origin(&self) -> String {
        match reqwest::Url::parse(&self.relay) {
            Ok(url) => {
                format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
                    + &url.port().map(|p| format!(":{p}")).unwrap_or_default()
            }
            Err(_) => "(relay)".into(),
        }
    }

    pub fn secret_key(&self) -> Result<SecretKey, String> {
        let bytes = hex32(self.secret.expose()).ok_or("the NWC secret is not 32 bytes of hex")?;
        SecretKey::from_slice(&bytes).map_err(|_| "the NWC secret is not a valid key".into())
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    super::event::hex32(text)
}

fn secret_key(value: &str) -> Result<Secret, String> {
    let bytes = hex32(value).ok_or("the NWC secret is not 32 bytes of hex")?;
    SecretKey::from_slice(&bytes).map_err(|_| "the NWC secret is not a valid key")?;
    Ok(Secret::new(value.to_ascii_lowercase()))
}

/// A relay's URL: wss, or ws to this machine only. The relay sees only
/// encrypted, signed events, but over plain ws anyone on the path could
/// see who pays when and drop answers.
fn relay_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("the NWC relay is not a URL ({e})"))?;
    let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "wss" if url.host_str().is_some() => Ok(url.to_string()),
        "ws" if local => Ok(url.to_string()),
        _ => Err("the NWC relay must be a wss:// URL (ws:// only to 127.0.0.1 or localhost)".into()),
    }
}

/// `%XX` escapes, as NIP-47's example writes the relay URL.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("a bad %-escape in the NWC connection string")?;
            let mut byte = [0u8; 1];
            hex::decode_to_slice(hex, &mut byte).map_err(|_| "a bad %-escape in the NWC connection string")?;
            out.push(byte[0]);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the NWC relay is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: &str = "b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4";
    const SECRET: &str = "71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";

    #[test]
    fn nip47s_example_parses() {
        let text = format!("nostr+walletconnect://{WALLET}?relay=wss%3A%2F%2Frelay.damus.io&secret={SECRET}");
        let uri = NwcUri::parse(&text).unwrap();
        assert_eq!(hex::encode(uri.wallet.serialize()), WALLET);
        assert_eq!(uri.relay, "wss://relay.damus.io/");
        assert_eq!(uri.relay_origin(), "wss://relay.damus.io");
        assert!(uri.secret_key().is_ok());
        let printed = format!("{uri:?}");
        assert!(!printed.contains(SECRET) && !printed.contains(&SECRET[..16]), "{printed}");
    }

    #[test]
    fn the_first_relay_is_used_and_lud16_is_ignored() {
        let text = format!(
            "nostr+walletconnect://{WALLET}?relay=ws://127.0.0.1:7000&relay=wss://b.example&secret={SECRET}&lud16=a@b.c"
        );
        let uri = NwcUri::parse(&text).unwrap();
        assert_eq!((uri.relay.as_str(), uri.relay_origin()), ("ws://127.0.0.1:7000/", "ws://127.0.0.1:7000".into()));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason_that_never_repeats_the_secret() {
        let relay = "relay=wss://r.example";
        let cases = [
            (format!("nostrwalletconnect://{WALLET}?{relay}&secret={SECRET}"), "must start with"),
            (format!("nostr+walletconnect://{WALLET}"), "no ?relay"),
            (format!("nostr+walletconnect://{}?{relay}&secret={SECRET}", &WALLET[..62]), "public key"),
            (format!("nostr+walletconnect://{}?{relay}&secret={SECRET}", "f".repeat(64)), "public key"),
            (format!("nostr+walletconnect://{WALLET}?secret={SECRET}"), "no relay"),
            (format!("nostr+walletconnect://{WALLET}?{relay}"), "no secret"),
            (format!("nostr+walletconnect://{WALLET}?{relay}&secret={}", &SECRET[..63]), "32 bytes"),
            (format!("nostr+walletconnect://{WALLET}?{relay}&secret={}", "0".repeat(64)), "valid key"),
            (format!("nostr+walletconnect://{WALLET}?{relay}&secret={SECRET}&secret={SECRET}"), "two secrets"),
            (format!("nostr+walletconnect://{WALLET}?relay=ws://relay.example&secret={SECRET}"), "wss://"),
            (format!("nostr+walletconnect://{WALLET}?relay=https://relay.example&secret={SECRET}"), "wss://"),
            (format!("nostr+walletconnect://{WALLET}?relay=wss%3&secret={SECRET}"), "%-escape"),
            (format!("nostr+walletconnect://{WALLET}?relay=%ff%fe&secret={SECRET}"), "UTF-8"),
            ("x".repeat(5000), "longer than"),
        ];
        for (text, why) in cases {
            let err = NwcUri::parse(&text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains(&SECRET[..16]), "{err}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let samples = ["", "?", "nostr+walletconnect://", "nostr+walletconnect://?", "nostr+walletconnect://é?%", "%"];
        for text in samples {
            assert!(NwcUri::parse(text).is_err(), "{text}");
        }
        for len in 0..200 {
            let alphabet = b"%?&=/:ab0f+\xe9";
            let text: String = (0..len).map(|i| char::from(alphabet[(i * 7 + len) % alphabet.len()])).collect();
            let _ = NwcUri::parse(&format!("nostr+walletconnect://{text}"));
        }
    }
}
