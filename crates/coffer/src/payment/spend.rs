//! The spend totals reports read (see `store::Tx::add_spend`): every flow
//! that settles money for good counts it here, in its own transaction, so a
//! report adds up exactly the payments that succeeded.

use crate::error::Error;
use crate::model::{Attribution, PaymentRecord, Spend};
use crate::store::Tx;
use coffer_core::Msat;

/// Counts a payment that has just succeeded, under its own attribution.
/// `payee` names the payee as policies do (`agent:ID`, `node:PUBKEY`).
pub(crate) fn count_payment(tx: &mut dyn Tx, payment: &PaymentRecord, payee: &str, now_ms: i64) -> Result<(), Error> {
    debug_assert_eq!(payment.status, coffer_client::PaymentStatus::Succeeded);
    count(tx, &payment.agent_id, payee, &payment.attribution, payment.amount, payment.fee, now_ms)
}

/// Counts money that left `agent_id` for `payee` outside a payment record
/// (a session's charge).
pub(crate) fn count(
    tx: &mut dyn Tx,
    agent_id: &str,
    payee: &str,
    attribution: &Attribution,
    amount: Msat,
    fee: Msat,
    now_ms: i64,
) -> Result<(), Error> {
    tx.add_spend(&Spend { agent_id, payee, attribution, amount, fee, at_ms: now_ms })
}

/// The payee of a payment inside this gateway.
pub(crate) fn agent_payee(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// The payee of a payment to another node: its key as the invoice's
/// signature names it (`node:unknown` for an invoice that no longer parses,
/// which a paid one always did).
pub(crate) fn node_payee(bolt11: &str) -> String {
    match super::bolt11::payee_hex(bolt11) {
        Some(hex) => format!("node:{hex}"),
        None => "node:unknown".to_owned(),
    }
}
