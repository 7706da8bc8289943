//! What an NWC relay sends coffer: NIP-01 relay messages and the events in
//! them. Reading never panics, an event that parses is written back as
//! itself, and one whose id or signature was not made by its author's key
//! never verifies.
#![no_main]

use bitcoin::secp256k1::Secp256k1;
use coffer::lightning::nwc::RelayMessage;
use coffer::lightning::nwc::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let secp = Secp256k1::verification_only();
    if let Some(RelayMessage::Event(_, event)) = RelayMessage::parse(text) {
        check(&secp, &event);
    }
    if let Ok(event) = serde_json::from_str::<Event>(text) {
        check(&secp, &event);
    }
});

fn check(secp: &Secp256k1<bitcoin::secp256k1::VerifyOnly>, event: &Event) {
    let written = serde_json::to_string(event).expect("an event serialises");
    assert_eq!(serde_json::from_str::<Event>(&written).as_ref().ok(), Some(event));
    if event.verify(secp).is_ok() {
        // Forging a valid signature is not something a fuzzer does: a
        // verified event must be one of the committed, really signed seeds.
        let mut changed = event.clone();
        changed.content.push('x');
        assert!(changed.verify(secp).is_err(), "a changed event still verifies");
    }
    let _ = event.tag("p");
    let _ = event.tag("e");
}
