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
//!
//! Hold invoices for payers outside the gateway are an optional capability,
//! [`HoldInvoices`], reached through [`FundingSource::hold_invoices`]: LND
//! (`/v2/invoices/hodl`) and NWC wallets whose info event lists NIP-47's
//! hold-invoice methods offer it; Core Lightning (no hold invoices without a
//! plugin) and LNbits (no "accepted" state in its API) do not.

pub mod cln;
pub mod config;
pub(crate) mod http;
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
    /// Hold invoices, if this backend can make them: `None` by default.
    fn hold_invoices(&self) -> Option<&dyn HoldInvoices> {
        None
    }
}

/// Where a hold invoice stands at the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    /// Not paid: no payment is held.
    Open,
    /// The payer's HTLCs are locked in for `amount` and wait for
    /// [`HoldInvoices::settle_hold_invoice`] or
    /// [`HoldInvoices::cancel_hold_invoice`], which must come well before
    /// the HTLCs time out (minutes, not hours: they lock the payer's
    /// channels meanwhile).
    Accepted { amount: Msat },
    /// Settled with the preimage: the money is the backend's.
    Settled,
    /// Cancelled, or expired unpaid: it will not be paid.
    Cancelled,
}

/// Hold invoices at the backend for a payment hash coffer chose (coffer
/// keeps the preimage): the payer's payment waits at the backend's node,
/// [`HoldState::Accepted`], until coffer settles it (revealing the
/// preimage) or cancels it (the payer gets the money back).
///
/// An error from any of these calls means "unknown, ask again": the call
/// may or may not have taken effect, and [`Self::lookup_hold_invoice`]
/// tells. Settling and cancelling are idempotent at the backend, so
/// repeating them after an error is safe: LND documents that settling a
/// settled invoice and cancelling a cancelled one succeed; NIP-47 does not
/// say, and a wallet may answer a repeat with an error, after which the
/// lookup is what counts.
pub trait HoldInvoices: Send + Sync {
    /// Makes a hold invoice for `payment_hash` and returns its BOLT11,
    /// checked to carry that hash and `amount`. `min_final_cltv_expiry_delta_blocks`
    /// is the final hop's CLTV delta: how many blocks coffer has, after the
    /// payment is accepted, to settle or cancel it; `None` leaves the
    /// backend's default. After an error the invoice may exist: a new call
    /// with the same hash may then be refused as a duplicate; look it up, or
    /// cancel it and use a new hash.
    fn create_hold_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        payment_hash: [u8; 32],
        min_final_cltv_expiry_delta_blocks: Option<u32>,
    ) -> LnFuture<'_, String>;
    /// Where the invoice stands, for the deposit watcher's polling; `None`
    /// if the backend has no record of this hash (never made, or deleted).
    /// An open invoice past its expiry may still read [`HoldState::Open`]
    /// on a backend that does not cancel it itself: coffer cancels it.
    fn lookup_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<HoldState>>;
    /// Takes the held payment by revealing its preimage. Only an
    /// [`HoldState::Accepted`] invoice can be settled; the backend refuses
    /// an open or cancelled one (an error).
    fn settle_hold_invoice(&self, preimage: [u8; 32]) -> LnFuture<'_, ()>;
    /// Cancels the invoice: a held payment goes back to the payer, and no
    /// later payment is accepted. The backend refuses to cancel a settled
    /// invoice (an error).
    fn cancel_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, ()>;
}

/// Checks the BOLT11 a backend made for a hold invoice: it parses, and it
/// carries the payment hash and amount coffer asked for.
pub(crate) fn check_hold_bolt11(bolt11: &str, payment_hash: [u8; 32], amount: Msat) -> Result<(), LnError> {
    use bitcoin::hashes::Hash;
    let parsed: lightning_invoice::Bolt11Invoice =
        bolt11.parse().map_err(|_| LnError::Protocol("the hold invoice is not BOLT11".into()))?;
    if parsed.payment_hash().to_byte_array() != payment_hash {
        return Err(LnError::Protocol("the hold invoice carries another payment hash than coffer's".into()));
    }
    if parsed.amount_milli_satoshis() != Some(amount.as_u64()) {
        return Err(LnError::Protocol("the hold invoice is for another amount than asked".into()));
    }
    Ok(())
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
