//! Funding sources: the Lightning node or wallet the operator already runs,
//! reached through its API. coffer never holds the node's keys; it asks the
//! node to make invoices and to pay them, and asks again how a payment ended.
//!
//! One small trait, [`FundingSource`], and one file per backend: `lnbits`
//! (its HTTP API, admin key), `lnd` (REST, macaroon, pinned TLS
//! certificate), `cln` (clnrest, rune), `nwc` (Nostr Wallet Connect,
//! NIP-47: encrypted, signed events through a relay, so any NWC wallet can
//! fund coffer). Without a backend (`dev`) coffer signs its invoices with
//! its own key and settles them inside the gateway.

pub mod cln;
pub mod config;
mod http;
pub mod lnbits;
pub mod lnd;
pub mod lnurl;
pub mod nwc;

use coffer_core::Msat;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use config::LightningConfig;

pub type LnFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LnError>> + Send + 'a>>;

/// Why a backend call did not give an answer. For a call that moves money
/// this means the outcome is unknown: the payment may or may not have been
/// sent, and only a later lookup can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LnError {
    /// Not reached, or no answer in time.
    Unreachable(String),
    /// An error status from the backend.
    Status { status: u16, detail: String },
    /// An answer that is not what the API documents.
    Protocol(String),
    /// An error answer of a wallet that names its errors by code (NWC).
    Wallet { code: String, detail: String },
}

impl fmt::Display for LnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LnError::Unreachable(why) => write!(f, "backend unreachable: {why}"),
            LnError::Status { status, detail } => write!(f, "backend answered {status}: {detail}"),
            LnError::Protocol(why) => write!(f, "unexpected backend answer: {why}"),
            LnError::Wallet { code, detail } => write!(f, "wallet answered {code}: {detail}"),
        }
    }
}

impl std::error::Error for LnError {}

/// An invoice the backend's node made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedInvoice {
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    /// The preimage, which coffer needs to settle the invoice inside the
    /// gateway: chosen by coffer where the backend takes one (LND, CLN),
    /// reported by the backend otherwise (LNbits, NWC).
    pub preimage: [u8; 32],
}

/// How a payment ended, or that it has not ended yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayResult {
    Succeeded {
        preimage: [u8; 32],
        fee: Msat,
    },
    /// Definitely not paid: the backend says so.
    Failed {
        reason: String,
    },
    /// In flight, or the backend does not know yet.
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceState {
    Open,
    Paid,
    /// Expired or cancelled: it will not be paid.
    Expired,
}

pub trait FundingSource: Send + Sync + 'static {
    /// `lnbits`, `lnd`, `cln`, `nwc`.
    fn name(&self) -> &'static str;
    /// Makes an invoice on the backend's node. `preimage` is used where the
    /// backend accepts one.
    fn create_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        preimage: [u8; 32],
    ) -> LnFuture<'_, CreatedInvoice>;
    /// Pays an invoice, paying at most `max_fee` in routing fees. An error
    /// means the outcome is unknown.
    fn pay_invoice(&self, bolt11: &str, amount: Msat, max_fee: Msat) -> LnFuture<'_, PayResult>;
    /// How an outgoing payment ended; `None` if the backend has no record
    /// of it.
    fn lookup_payment(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<PayResult>>;
    fn lookup_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, InvoiceState>;
    /// What the backend can spend.
    fn balance(&self) -> LnFuture<'_, Msat>;
}

/// The routing fee coffer allows a payment by default: 1% of the amount,
/// at least 10 sat (small payments need a base fee), and reserved up front.
pub fn default_fee_limit(amount: Msat) -> Msat {
    const FEE_LIMIT_MIN_MSAT: u64 = 10_000;
    Msat::new((amount.as_u64() / 100).max(FEE_LIMIT_MIN_MSAT))
}

pub(crate) fn parse_hash_hex(field: &str, text: &str) -> Result<[u8; 32], LnError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| LnError::Protocol(format!("{field} is not 32 bytes of hex")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_limit_is_one_percent_with_a_floor() {
        assert_eq!(default_fee_limit(Msat::new(1_000)), Msat::new(10_000));
        assert_eq!(default_fee_limit(Msat::new(100_000_000)), Msat::new(1_000_000));
    }
}
