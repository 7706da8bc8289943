//! Invoices made and swept, holds expired, incoming payments decided.

use crate::error::Error;
use crate::events::{self, Event};
use crate::model::{ApprovalStatus, INVOICE_EXPIRY_BATCH_MAX, IncomingRecord, InvoiceRecord};
use crate::payment::{approval, incoming};
use crate::quota::{self, Quotas};
use crate::store::Tx;

/// Expired approvals handled per call: bounds one background step.
const APPROVAL_EXPIRY_BATCH_MAX: u32 = 256;

/// Stores a new invoice with its `invoice.created` event, within its
/// payee's open invoices.
pub fn create_invoice(tx: &mut dyn Tx, inv: &InvoiceRecord, quotas: &Quotas) -> Result<(), Error> {
    quota::check_invoice(tx, quotas, &inv.agent_id, inv.created_at_ms)?;
    tx.insert_invoice(inv)?;
    // A deposit to the treasury is the operator's (the event's own rule).
    events::emit(tx, &Event::InvoiceCreated(inv.into()), inv.created_at_ms)
}

/// The sweep's step: expires a batch of due invoices, each with its
/// event, in their order of creation. An invoice paid meanwhile is not
/// expired (and one expired is not paid: the payment flows read the status
/// in their own transaction).
pub fn expire_invoices(tx: &mut dyn Tx, now_ms: i64, watched_since_ms: i64) -> Result<u64, Error> {
    let expired = tx.expire_invoices(now_ms, watched_since_ms, INVOICE_EXPIRY_BATCH_MAX)?;
    for invoice in &expired {
        events::emit(tx, &Event::InvoiceExpired(invoice.into()), now_ms)?;
    }
    Ok(expired.len() as u64)
}

/// Expires the pending approvals past their time, a batch at a time,
/// releasing what each reserved.
pub fn expire_approvals(tx: &mut dyn Tx, now_ms: i64) -> Result<u64, Error> {
    let mut count = 0;
    for listed in tx.due_approvals(now_ms, APPROVAL_EXPIRY_BATCH_MAX)? {
        // Read again, locked where writers run concurrently: another may
        // have decided it since the list was read.
        let Some(approval) = tx.approval(&listed.id)?.filter(|a| a.status == ApprovalStatus::Pending) else {
            continue;
        };
        approval::release(tx, approval, ApprovalStatus::Expired, "system", now_ms)?;
        count += 1;
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
    incoming::decide(tx, incoming, accept, key_id, now_ms)
}
