//! Refunds: the payee of a payment inside this gateway gives money back to
//! its payer, in full or in parts, never more than it received in all.
//!
//! A refund is a new transfer, payee to payer; it does not undo the
//! payment, and it gives no budget back: the payer's budgets count what it
//! paid out, and the refund is money coming in. So no cycle of paying and
//! being refunded lets an agent pay out more than its budgets allow (the
//! money that never reached a payee — a cancelled hold, an escrow refunded,
//! a session's remainder — is another matter: see `escrow` and `session`).

use super::decision::stop;
use crate::error::Error;
use crate::events::kind::Refunded;
use crate::events::{self, Event};
use crate::model::{AuditEntry, Idempotency, REFUNDS_PER_PAYMENT_MAX, RefundRecord};
use crate::store::Tx;
use coffer_client::PaymentStatus;
use coffer_core::{Msat, Transfer, ledger};

/// A refund the payee asks for.
pub struct Refund<'a> {
    pub payee_agent_id: &'a str,
    pub payment_id: &'a str,
    pub refund_id: String,
    pub amount: Msat,
    pub reason: String,
    pub idempotency: Option<&'a Idempotency>,
    pub now_ms: i64,
}

/// Moves `amount` back from the payee to the payer of a succeeded payment,
/// within what is left unrefunded. A retry with the same idempotency key
/// gets the first answer.
pub fn refund(tx: &mut dyn Tx, r: Refund<'_>) -> Result<RefundRecord, Error> {
    if let Some(earlier) = replay(tx, &r)? {
        return Ok(earlier);
    }
    let mut payment = tx
        .payment(r.payment_id)?
        .filter(|p| p.payee_agent_id.as_deref() == Some(r.payee_agent_id))
        .ok_or(Error::NotFound("payment"))?;
    match payment.status {
        PaymentStatus::Succeeded => {}
        PaymentStatus::Held => {
            return Err(Error::InvalidState("the payment waits in a hold or escrow: cancel that instead".into()));
        }
        status => {
            let status = serde_json::to_value(status).unwrap_or_default();
            return Err(Error::InvalidState(format!("a {status} payment cannot be refunded")));
        }
    }
    let remaining = payment.amount.saturating_sub(payment.refunded);
    if r.amount > remaining {
        return Err(Error::RefundExceedsPayment { remaining, needed: r.amount });
    }
    if tx.refunds(&payment.id)?.len() >= REFUNDS_PER_PAYMENT_MAX as usize {
        return Err(Error::InvalidState(format!("a payment takes at most {REFUNDS_PER_PAYMENT_MAX} refunds")));
    }
    // The payee's money leaves its wallet: not past the kill switch or a
    // freeze of the payee.
    let chain = super::chain::load_chain(tx, r.payee_agent_id)?;
    if let Some(stopped) = stop(tx.halted()?, &chain) {
        return Err(Error::Denied(stopped));
    }
    let payee_account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let payer_account = tx.agent(&payment.agent_id)?.ok_or(Error::NotFound("agent"))?.account;
    let transfer = Transfer { debit: payee_account, credit: payer_account, amount: r.amount };
    let (mut debit, mut credit) = (tx.balance(payee_account)?, tx.balance(payer_account)?);
    ledger::post(transfer, &mut debit, &mut credit)?;
    tx.save_balance(payee_account, &debit)?;
    tx.save_balance(payer_account, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "refund", r.now_ms)?;
    payment.refunded = payment.refunded.checked_add(r.amount).map_err(coffer_core::LedgerError::from)?;
    if payment.refunded == payment.amount {
        payment.status = PaymentStatus::Refunded;
    }
    tx.update_payment(&payment, None)?;
    let refund = RefundRecord {
        id: r.refund_id,
        payment_id: payment.id.clone(),
        from_agent_id: r.payee_agent_id.to_owned(),
        to_agent_id: payment.agent_id.clone(),
        amount: r.amount,
        reason: r.reason,
        payment_refunded: payment.refunded,
        created_at_ms: r.now_ms,
    };
    tx.insert_refund(&refund, transfer_id)?;
    if let Some(idem) = r.idempotency {
        tx.insert_idempotency(r.payee_agent_id, idem, &refund.id, r.now_ms)?;
    }
    tx.audit(&AuditEntry {
        at_ms: r.now_ms,
        action: "payment.refunded",
        actor: refund.from_agent_id.clone(),
        key_id: None,
        agent_id: Some(refund.from_agent_id.clone()),
        amount_msat: Some(refund.amount.as_u64()),
        payee: Some(format!("agent:{}", refund.to_agent_id)),
        purpose: Some(refund.reason.clone()),
        rule: Some(payment.id.clone()),
        detail: Some(refund.id.clone()),
    })?;
    let refunded = Refunded {
        payment_id: payment.id.clone(),
        payment_hash: payment.payment_hash,
        amount: refund.amount,
        refunded_total: refund.payment_refunded,
        payer_agent_id: refund.to_agent_id.clone(),
        payee_agent_id: refund.from_agent_id.clone(),
        reason: refund.reason.clone(),
        refund_id: Some(refund.id.clone()),
    };
    events::emit(tx, &Event::PaymentRefunded(refunded), r.now_ms)?;
    Ok(refund)
}

fn replay(tx: &mut dyn Tx, r: &Refund<'_>) -> Result<Option<RefundRecord>, Error> {
    let Some(target) = super::chain::earlier_target(tx, r.payee_agent_id, r.idempotency)? else { return Ok(None) };
    let missing = || Error::Internal(format!("idempotency key names a missing refund {target}"));
    tx.refund(&target)?.map(Some).ok_or_else(missing)
}
