//! Payments, by concern, each inside the caller's store transaction:
//! - `bolt11`: invoices, encoded and decoded;
//! - `decision`: the constitution's verdict on one attempt (pure);
//! - `chain`: what the flows share (the payer's chain loaded, its budgets
//!   counted and given back, its breaker fed and tripped, idempotent
//!   replays, the transfer that pays an invoice of this gateway);
//! - `internal`: settling a payment to an invoice of this gateway;
//! - `outside`: paying an invoice of another node through the Lightning
//!   backend, and crediting an invoice the Lightning Network paid;
//! - `approval`: holds for a person's approval (the hold, the decision
//!   recorded, the release of a denied or expired hold);
//! - `incoming`: a payee's acknowledgement of an incoming payment;
//! - `l402`: paying an L402 challenge, and the kept token that covers an
//!   access;
//! - `escrow`: money that waits between two agents (a paid hold invoice,
//!   a payment into escrow) until it is released or refunded;
//! - `session`: metered sessions (a maximum reserved, charges against it,
//!   the rest returned);
//! - `refund`: a payee giving (part of) a payment back;
//! - `outside_hold`: a hold invoice paid from outside through the Lightning
//!   backend (accepted, settled and cancelled as the backend reports);
//! - `receipt`: signed receipts of settled payments and ended sessions
//!   (their canonical form, signature and verification, pure; and their
//!   assembly from the records, read only);
//! - `preview`: the decision a payment would get now, read only;
//! - `warning`: `budget.warning` events when a spend crosses a threshold.
//!
//! The imports go one way (no circle):
//!
//! ```text
//! decide_approval (here) ──> internal, outside
//! l402 ──> internal
//! internal ──> escrow (a payment that waits)
//! internal, outside ──> approval, chain, decision
//! escrow, session, refund ──> chain, decision
//! approval ──> chain
//! outside_hold ──> escrow (its `Ended`)
//! receipt ──> bolt11, chain (reads only)
//! preview ──> chain, decision (reads only)
//! chain ──> warning (a spend counted, its warnings written)
//! incoming, chain, decision ──> (the store and the model only)
//! ```
//!
//! A held payment is resumed by the flow that held it; [`decide_approval`]
//! chooses that flow, so `approval` needs neither `internal` nor `outside`.

pub mod approval;
pub mod bolt11;
pub mod chain;
pub mod decision;
pub mod escrow;
pub mod incoming;
pub mod internal;
pub mod l402;
pub mod outside;
pub mod outside_hold;
pub mod preview;
pub mod receipt;
pub mod refund;
pub mod session;
pub mod spend;
pub mod warning;

use crate::error::Error;
use crate::model::ApprovalOutcome;
use crate::store::Tx;

/// A person approves (the payment is made) or denies (the reservation is
/// released) the hold `id`. A decision is final: deciding twice is refused.
pub fn decide_approval(
    tx: &mut dyn Tx,
    id: &str,
    approve: bool,
    actor: &str,
    now_ms: i64,
    terms: &crate::model::SpendTerms,
) -> Result<ApprovalOutcome, Error> {
    let held = approval::pending(tx, id)?;
    if held.payee_node_hex.is_some() {
        // An outside payment is decided again (its fee may have changed);
        // an internal hold's limits were decided when it was held.
        outside::decide_held(tx, held, approve, actor, now_ms, terms)
    } else {
        internal::decide_held(tx, held, approve, actor, now_ms)
    }
}
