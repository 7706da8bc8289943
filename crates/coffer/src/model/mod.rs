//! The domain model: what the gateway, the events and every edge share.
pub mod views;
