//! The gateway's compound writes, each written once against [`Tx`]: the
//! rows it changes, its checks, its event and its audit entry, in the one
//! transaction a store runs it in. The payment flows are `payment/`'s; a
//! webhook's state is `events::subscriptions`'.
//!
//! [`Tx`]: crate::store::Tx

pub mod agents;
pub mod invoices;
pub mod rooms;
