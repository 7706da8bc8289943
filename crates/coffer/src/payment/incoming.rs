//! Acknowledging incoming payments: a payee that asks to acknowledge them
//! gets each payment reserved in its wallet (`internal` records it pending)
//! until it accepts (the money is released to it) or rejects it (the money
//! goes back to the payer).

use crate::error::Error;
use crate::events::{self, Event};
use crate::model::{AuditEntry, IncomingRecord, IncomingStatus};
use crate::store::Tx;
use coffer_core::ledger::{self, Transfer};

/// The payee accepts a pending incoming payment (its reservation is
/// released) or rejects it (released, and the amount goes back to the
/// payer). Deciding twice is refused.
pub fn decide(
    tx: &mut dyn Tx,
    mut incoming: IncomingRecord,
    accept: bool,
    key_id: &str,
    now_ms: i64,
) -> Result<IncomingRecord, Error> {
    if incoming.status != IncomingStatus::Pending {
        return Err(Error::AlreadyDecided(incoming.status.as_str()));
    }
    let payee = tx.agent_state(&incoming.payee_agent_id)?.ok_or(Error::NotFound("agent"))?;
    let mut balance = tx.balance(payee.account)?;
    ledger::release(&mut balance, incoming.amount)?;
    tx.save_balance(payee.account, &balance)?;
    if !accept {
        let payer = tx.agent_state(&incoming.payer_agent_id)?.ok_or(Error::NotFound("agent"))?;
        let refund = Transfer { debit: payee.account, credit: payer.account, amount: incoming.amount };
        let (mut debit, mut credit) = (tx.balance(refund.debit)?, tx.balance(refund.credit)?);
        ledger::post(refund, &mut debit, &mut credit)?;
        tx.save_balance(refund.debit, &debit)?;
        tx.save_balance(refund.credit, &credit)?;
        tx.insert_transfer(&refund, "refund", now_ms)?;
    }
    incoming.status = if accept { IncomingStatus::Accepted } else { IncomingStatus::Rejected };
    incoming.decided_at_ms = Some(now_ms);
    tx.save_incoming(&incoming)?;
    let action = if accept { "incoming.accepted" } else { "incoming.rejected" };
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action,
        actor: incoming.payee_agent_id.clone(),
        key_id: Some(key_id.to_owned()),
        agent_id: Some(incoming.payee_agent_id.clone()),
        amount_msat: Some(incoming.amount.as_u64()),
        payee: Some(format!("agent:{}", incoming.payee_agent_id)),
        purpose: None,
        rule: Some(incoming.payment_id.clone()),
        detail: None,
    })?;
    let event =
        if accept { Event::IncomingAccepted(incoming.clone()) } else { Event::IncomingRejected(incoming.clone()) };
    events::emit(tx, &event, now_ms)?;
    Ok(incoming)
}
