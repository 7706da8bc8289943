//! The policy parser an operator's `PUT /v1/agents/{id}/policy` reaches:
//! any text is a valid policy or a located error, and a valid policy
//! written back out reads as the same policy.
#![no_main]

use coffer_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &str| {
    match Policy::from_json(json) {
        Ok(policy) => {
            assert_eq!(policy.validate(), Ok(()));
            let written = serde_json::to_string(&policy).expect("a policy serialises");
            assert_eq!(Policy::from_json(&written), Ok(policy));
        }
        Err(e) => assert!(!e.message.is_empty(), "an error says why"),
    }
});
