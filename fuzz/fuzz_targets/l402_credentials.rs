//! What a paywall reads from a buyer: the `Authorization: L402
//! <token>:<preimage>` value, the token's base64 and the macaroon inside.
//! A macaroon that decodes encodes back to bytes that decode to itself.
#![no_main]

use coffer::l402::challenge::{HEADER_LEN_MAX_BYTES, decode_token, parse_authorization, parse_challenge};
use coffer::l402::macaroon::{CAVEATS_MAX, Identifier, MACAROON_LEN_MAX_BYTES, Macaroon};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_macaroon(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(credentials) = parse_authorization(text) {
        assert!(text.len() <= HEADER_LEN_MAX_BYTES);
        if let Some(bytes) = decode_token(&credentials.token) {
            check_macaroon(&bytes);
        }
    }
    if let Some(bytes) = decode_token(text) {
        check_macaroon(&bytes);
    }
    let _ = parse_challenge(text);
});

fn check_macaroon(bytes: &[u8]) {
    let Some(macaroon) = Macaroon::decode(bytes) else { return };
    assert!(bytes.len() <= MACAROON_LEN_MAX_BYTES);
    assert!(macaroon.caveats.len() <= CAVEATS_MAX);
    let encoded = macaroon.encode();
    assert_eq!(Macaroon::decode(&encoded).as_ref(), Some(&macaroon));
    // A wrong key never verifies a decoded macaroon by accident.
    assert!(!macaroon.verify_signature(b"coffer-fuzz: not the root key"));
    if let Some(id) = Identifier::decode(&macaroon.identifier) {
        assert_eq!(id.encode(), macaroon.identifier);
    }
    // A `key=value` caveat comes back trimmed; anything else with an empty
    // key, which no verifier accepts.
    for ((key, value), raw) in macaroon.caveat_pairs().zip(&macaroon.caveats) {
        let text = std::str::from_utf8(raw).unwrap_or("");
        if text.contains('=') {
            assert_eq!((key, value), (key.trim(), value.trim()));
        } else {
            assert_eq!(key, "");
        }
    }
}
