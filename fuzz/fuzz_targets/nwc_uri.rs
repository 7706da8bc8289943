//! The NWC connection string an operator configures: it parses strictly or
//! is refused, an error never repeats the secret, and what parses names a
//! websocket relay and a usable or clearly refused secret key.
#![no_main]

use coffer::lightning::nwc::NwcUri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match NwcUri::parse(text) {
        Ok(uri) => {
            assert!(uri.relay.starts_with("ws://") || uri.relay.starts_with("wss://"), "relay {}", uri.relay);
            let origin = uri.relay_origin();
            assert!(!origin.contains('?') && !origin.contains('#'));
            let _ = uri.secret_key();
        }
        Err(why) => {
            // A secret is hex; a "secret" of other text may be words the
            // error says anyway (the fuzzer wrote `secret= secret is not 32
            // bytes`), which repeats nothing.
            if let Some(secret) = secret_of(text).filter(|s| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
                assert!(!why.contains(secret), "the error repeats the secret");
            }
        }
    }
});

/// The value of the first `secret=` parameter, as written.
fn secret_of(text: &str) -> Option<&str> {
    let query = text.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("secret=")).filter(|s| !s.is_empty())
}
