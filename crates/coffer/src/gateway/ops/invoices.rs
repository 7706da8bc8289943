//! Invoices made and swept, holds expired, incoming payments decided.

use crate::error::Error;
use crate::model::{ApprovalStatus, INVOICE_EXPIRY_BATCH_MAX, IncomingRecord, InvoiceRecord, TREASURY_PAYEE};
use crate::payment::internal;
use crate::store::{Quotas, Tx, emit_invoice_expired, quota};

/// Expired approvals handled per call: bounds one background step.
const APPROVAL_EXPIRY_BATCH_MAX: u32 = 256;

/// Stores a new invoice with its `invoice.created` event, within its
/// payee's open invoices.
pub fn create_invoice(tx: &mut dyn Tx, inv: &InvoiceRecord, quotas: &Quotas) -> Result<(), Error> {
    quota::check_invoice(tx, quotas, &inv.agent_id, inv.created_at_ms)?;
    tx.insert_invoice(inv)?;
    let data = serde_json::json!({
        "payment_hash": hex::encode(inv.payment_hash), "agent_id": inv.agent_id,
        "amount_msat": inv.amount.as_u64(), "expires_at_ms": inv.expires_at_ms, "room_id": inv.room_id,
    });
    // A deposit to the treasury is the operator's (no agent).
    let agent_id = (inv.agent_id != TREASURY_PAYEE).then_some(inv.agent_id.as_str());
    tx.emit("invoice.created", agent_id, &data, inv.created_at_ms)
}

/// The sweep's step: expires a batch of due invoices, each with its
/// event, in their order of creation. An invoice paid meanwhile is not
/// expired (and one expired is not paid: the payment flows read the status
/// in their own transaction).
pub fn expire_invoices(tx: &mut dyn Tx, now_ms: i64, watched_since_ms: i64) -> Result<u64, Error> {
    let expired = tx.expire_invoices(now_ms, watched_since_ms, INVOICE_EXPIRY_BATCH_MAX)?;
    for invoice in &expired {
        emit_invoice_expired(tx, invoice, now_ms)?;
    }
    Ok(expired.len() as u64)
}

/// Expires the pending approvals past their time, a batch at a time,
/// releasing what each reserved.
pub fn expire_approvals(tx: &mut dyn Tx, now_ms: i64) -> Result<u64, Error> {
    let due = tx.due_approvals(now_ms, APPROVAL_EXPIRY_BATCH_MAX)?;
    let count = due.len() as u64;
    for approval in due {
        internal::release(tx, approval, ApprovalStatus::Expired, "system", now_ms)?;
    }
    Ok(count)
}

/// Accepts (releases to the payee) or rejects (refunds the payer) a pending
/// incoming payment of this payee.
pub fn decide_incoming(
    tx: &mut dyn Tx,
    payee_agent_id: &str,
    payment_id: &str,
    accept: bool,
    key_id: &str,
    now_ms: i64,
) -> Result<IncomingRecord, Error> {
    let found = tx.incoming_payment(payment_id)?;
    let incoming = found.filter(|i| i.payee_agent_id == payee_agent_id).ok_or(Error::NotFound("incoming payment"))?;
    internal::decide_incoming(tx, incoming, accept, key_id, now_ms)
}
