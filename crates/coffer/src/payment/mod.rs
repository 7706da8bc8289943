//! Payments, by kind.

pub mod bolt11;
