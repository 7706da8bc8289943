//! coffer's pure core: amounts, ledger postings, policy evaluation and the
//! audit chain. Nothing here performs I/O or reads a clock: time comes in as
//! an argument, so every function is deterministic and testable.

pub mod amount;
pub mod audit_chain;
pub mod ledger;
pub mod pack;
pub mod policy;
#[cfg(feature = "schema")]
mod schema;

pub use amount::{AmountError, MONEY_MAX_MSAT, Msat};
pub use ledger::{AccountId, AccountKind, Balance, LedgerError, Transfer};
