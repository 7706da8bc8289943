//! The domain model: what the gateway, the events and every edge share.
pub mod card;
pub mod commerce;
pub mod nwc;
pub mod records;
pub mod views;

pub use commerce::*;
pub use nwc::*;
pub use records::*;
