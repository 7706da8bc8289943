//! Payments held for a person's approval: the hold (the money reserved and
//! the budgets counted until a person decides), the decision recorded, and
//! the release of a hold that is denied or past its time (the expiry sweep
//! releases through [`release`] too).
//!
//! Approving resumes the payment where it was held; that is the work of the
//! flow that held it (`internal::decide_held`, `outside::decide_held`),
//! chosen by `payment::decide_approval`. This module imports neither.

use super::chain::{load_chain, save_policed, trip_if_needed, uncount_spend};
use super::warning::count_spend;
use crate::error::Error;
use crate::events::{self, Event};
use crate::model::{AgentState, ApprovalRecord, ApprovalStatus, AuditEntry, Idempotency};
use crate::store::Tx;
use coffer_core::ledger;
use coffer_core::{AccountId, Msat};

/// A payment to hold, as the flow that decided to hold it describes it.
pub struct Hold<'a> {
    /// The pending hold to insert.
    pub approval: ApprovalRecord,
    /// The payer's wallet.
    pub account: AccountId,
    /// What the hold reserves and counts: all that the payment may spend.
    pub spend: Msat,
    /// The `payment.held` audit entry.
    pub entry: AuditEntry,
    /// The request's key: a retry finds the hold (and, once approved, its
    /// payment).
    pub idempotency: Option<&'a Idempotency>,
    pub holds_pending_max: u32,
    /// The thresholds the reserved spend may warn at.
    pub warnings: &'a coffer_core::policy::WarningThresholds,
}

/// Reserves the spend and counts it in every budget of the chain, until a
/// person decides; within the payer's bound of pending holds.
pub fn hold(tx: &mut dyn Tx, chain: &mut [AgentState], hold: Hold<'_>) -> Result<ApprovalRecord, Error> {
    let Hold { approval, account, spend, entry, idempotency, holds_pending_max, warnings } = hold;
    let now_ms = approval.created_at_ms;
    crate::quota::check_hold(tx, holds_pending_max, &approval.agent_id, now_ms)?;
    let mut balance = tx.balance(account)?;
    ledger::reserve(account, &mut balance, spend)?;
    tx.save_balance(account, &balance)?;
    count_spend(tx, chain, spend, warnings, now_ms)?;
    save_policed(tx, chain)?;
    trip_if_needed(tx, chain, now_ms)?;
    tx.insert_approval(&approval)?;
    tx.audit(&entry)?;
    events::emit(tx, &Event::PaymentHeld(approval.clone()), now_ms)?;
    if let Some(idem) = idempotency {
        tx.insert_idempotency(&approval.agent_id, idem, &approval.id, now_ms)?;
    }
    Ok(approval)
}

/// The hold `id`, still waiting for a decision: deciding twice is refused.
pub fn pending(tx: &mut dyn Tx, id: &str) -> Result<ApprovalRecord, Error> {
    let approval = tx.approval(id)?.ok_or(Error::NotFound("approval"))?;
    if approval.status != ApprovalStatus::Pending {
        return Err(Error::ApprovalNotPending(approval.status.as_str()));
    }
    Ok(approval)
}

/// Gives back a held payment's reservation and budget.
pub fn release(
    tx: &mut dyn Tx,
    mut approval: ApprovalRecord,
    status: ApprovalStatus,
    actor: &str,
    now_ms: i64,
) -> Result<ApprovalRecord, Error> {
    let mut chain = load_chain(tx, &approval.agent_id)?;
    let account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let reserved = approval.reserved()?;
    let mut balance = tx.balance(account)?;
    ledger::release(&mut balance, reserved)?;
    tx.save_balance(account, &balance)?;
    uncount_spend(&mut chain, reserved, approval.created_at_ms, now_ms);
    save_policed(tx, &chain)?;
    record_decision(tx, &mut approval, status, actor, now_ms)?;
    Ok(approval)
}

/// Records a person's (or the clock's) decision on a hold: its status,
/// who and when, its audit record and its `approval.decided` event.
pub(crate) fn record_decision(
    tx: &mut dyn Tx,
    approval: &mut ApprovalRecord,
    status: ApprovalStatus,
    actor: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let action = match status {
        ApprovalStatus::Approved => "approval.approved",
        ApprovalStatus::Denied => "approval.denied",
        ApprovalStatus::Expired => "approval.expired",
        ApprovalStatus::Pending => return Err(Error::Internal("a decision that leaves a hold pending".into())),
    };
    approval.status = status;
    approval.decided_at_ms = Some(now_ms);
    approval.decided_by = Some(actor.to_owned());
    tx.update_approval(approval)?;
    audit_decision(tx, approval, action, actor, now_ms)?;
    events::emit(tx, &Event::ApprovalDecided(approval.clone()), now_ms)
}

fn audit_decision(
    tx: &mut dyn Tx,
    approval: &ApprovalRecord,
    action: &'static str,
    actor: &str,
    now_ms: i64,
) -> Result<(), Error> {
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action,
        actor: actor.to_owned(),
        key_id: Some(approval.key_id.clone()),
        agent_id: Some(approval.agent_id.clone()),
        amount_msat: Some(approval.amount.as_u64()),
        payee: approval.payee(),
        purpose: Some(approval.purpose.clone()),
        rule: Some(approval.id.clone()),
        detail: None,
    })
}
