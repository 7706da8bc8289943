//! The domain model: what the gateway, the events and every edge share.
pub mod attribution;
pub mod bridge;
pub mod card;
pub mod commerce;
pub mod nwc;
pub mod records;
pub mod views;

pub use attribution::{Attribution, Dimension, Spend, SpendQuery, SpendTotal};
pub use bridge::*;
pub use commerce::*;
pub use nwc::*;
pub use records::*;
