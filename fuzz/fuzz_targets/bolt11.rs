//! The BOLT11 decoder an agent's `pay` request reaches: any text either
//! parses or is refused, and what parses is the normal form of itself.
#![no_main]

use coffer::payment::bolt11::{Network, ParsedInvoice};
use libfuzzer_sys::fuzz_target;

const NETWORKS: [Network; 4] = [Network::Regtest, Network::Signet, Network::Testnet, Network::Bitcoin];

fuzz_target!(|text: &str| {
    for network in NETWORKS {
        let Ok(parsed) = ParsedInvoice::parse(text, network) else { continue };
        // The stored form is lower case and without the URI scheme, so the
        // same invoice is one row whatever way the agent wrote it.
        assert_eq!(parsed.bolt11, parsed.bolt11.to_ascii_lowercase());
        assert!(!parsed.bolt11.starts_with("lightning:"));
        let again = ParsedInvoice::parse(&parsed.bolt11, network).expect("the normal form parses");
        assert_eq!(again.bolt11, parsed.bolt11);
        assert_eq!(again.payment_hash, parsed.payment_hash);
        assert_eq!(again.amount, parsed.amount);
        if let Ok(outside) = parsed.outside() {
            assert_eq!(outside.payment_hash, again.payment_hash);
            assert_eq!(outside.amount, again.amount);
            assert_eq!(outside.payee_hex.len(), 66);
        }
    }
});
