//! What the payment flows share: the payer's chain (the payer and its
//! ancestors) loaded, its budgets counted and given back, its breaker fed
//! and tripped, its state saved; and the answer to a repeated idempotent
//! request. Every function here works in the caller's transaction.

use crate::error::Error;
use crate::events::kind::Settlement;
use crate::events::{self, Event};
use crate::model::{
    AgentState, AuditEntry, Idempotency, IncomingRecord, IncomingStatus, InvoiceRecord, PayAttempt, Payer,
    PaymentRecord,
};
use crate::store::Tx;
use coffer_core::ledger::{self, Transfer};
use coffer_core::{AccountId, Msat};

/// The deepest sub-agent tree: a limit on the chain a payment walks.
pub const CHAIN_DEPTH_MAX: usize = 8;
// Every tree `COFFER_LIMIT_TREE_DEPTH` allows can be walked.
const _: () = assert!(crate::limits::TREE_DEPTH_MAX as usize <= CHAIN_DEPTH_MAX);

/// The id of a hold is its payment's id with this prefix for `pay_`: a
/// held payment, once approved, takes the id its request would have had.
pub const APPROVAL_PREFIX: &str = "apr_";

/// The payer and its ancestors, payer first.
pub fn load_chain(tx: &mut dyn Tx, agent_id: &str) -> Result<Vec<AgentState>, Error> {
    let mut chain: Vec<AgentState> = Vec::with_capacity(2);
    let mut next = Some(agent_id.to_owned());
    while let Some(id) = next {
        if chain.len() == CHAIN_DEPTH_MAX {
            return Err(Error::Internal(format!("agent {agent_id} is deeper than {CHAIN_DEPTH_MAX} levels")));
        }
        let state = tx.agent_state(&id)?.ok_or(Error::NotFound("agent"))?;
        next = state.parent_id.clone();
        chain.push(state);
    }
    Ok(chain)
}

/// Counts a paid request in the budgets of its domain, at every level
/// (in memory; see [`save_policed`]).
pub(crate) fn count_domain_spend(chain: &mut [AgentState], domain: &str, amount: Msat, now_ms: i64) {
    for level in chain.iter_mut() {
        if let Some(policy) = level.policy.clone() {
            level.usage.record_domain(&policy, domain, amount, now_ms);
        }
    }
}

/// Gives back a spend counted at `at_ms` (in memory; see [`save_policed`]).
pub(crate) fn uncount_spend(chain: &mut [AgentState], amount: Msat, at_ms: i64, now_ms: i64) {
    for level in chain.iter_mut() {
        if let Some(policy) = level.policy.clone() {
            level.usage.release(&policy, amount, at_ms, now_ms);
        }
    }
}

/// Persists the usage and breaker state of every level with a policy: one
/// write per level per payment.
pub(crate) fn save_policed(tx: &mut dyn Tx, chain: &[AgentState]) -> Result<(), Error> {
    chain.iter().filter(|level| level.policy.is_some()).try_for_each(|level| tx.save_agent_state(level))
}

/// Feeds a payment to the payer's breaker (in memory; see
/// [`save_policed`]). `payee` as policies name it: `agent:ID`, `node:KEY`.
pub(crate) fn observe_payment(chain: &mut [AgentState], payee: &str, amount: Msat, now_ms: i64) {
    let Some(payer) = chain.first_mut() else { return };
    let Some(rules) = payer.policy.as_ref().and_then(|p| p.breaker.as_ref()) else { return };
    payer.breaker.observe_payment(rules, payee, amount, now_ms);
}

/// Feeds a denial to the payer's breaker, which may trip.
pub(crate) fn observe_denial(tx: &mut dyn Tx, chain: &mut [AgentState], code: &str, now_ms: i64) -> Result<(), Error> {
    // A missing or stale price is the operator's price source failing, not
    // the agent misbehaving: an outage must not freeze every agent whose
    // breaker counts denials.
    if code == coffer_core::policy::FiatError::CODE {
        return Ok(());
    }
    let Some(payer) = chain.first_mut() else { return Ok(()) };
    let Some(rules) = payer.policy.as_ref().and_then(|p| p.breaker.clone()) else { return Ok(()) };
    if payer.frozen {
        return Ok(());
    }
    payer.breaker.observe_denial(&rules, now_ms);
    tx.save_agent_state(payer)?;
    trip_if_needed(tx, chain, now_ms)
}

/// An automatic trip freezes the payer and raises an alert.
pub(crate) fn trip_if_needed(tx: &mut dyn Tx, chain: &mut [AgentState], now_ms: i64) -> Result<(), Error> {
    let Some(agent) = chain.first_mut() else { return Ok(()) };
    let Some(rules) = agent.policy.as_ref().and_then(|p| p.breaker.as_ref()) else { return Ok(()) };
    if agent.frozen {
        return Ok(());
    }
    let Some(trip) = agent.breaker.should_trip(rules, now_ms) else { return Ok(()) };
    let reason = format!("automatic trip ({}): {}", trip.code.as_str(), trip.message);
    tx.set_frozen(&agent.agent_id, Some(&reason), now_ms)?;
    agent.frozen = true;
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action: "breaker.tripped",
        actor: "system".into(),
        agent_id: Some(agent.agent_id.clone()),
        rule: Some(trip.code.as_str().to_owned()),
        detail: Some(trip.message.clone()),
        ..AuditEntry::default()
    })?;
    let agent_id = agent.agent_id.clone();
    let tripped = Event::BreakerTripped { agent_id: agent_id.clone(), code: trip.code, message: trip.message };
    events::emit(tx, &tripped, now_ms)?;
    events::emit(tx, &Event::AgentFrozen { agent_id, reason }, now_ms)
}

/// The id of what an earlier request of `agent_id` under the same
/// idempotency key made (a payment, a hold, a charge, a refund), if there
/// was one; the same key with another request is a conflict.
pub(crate) fn earlier_target(
    tx: &mut dyn Tx,
    agent_id: &str,
    idempotency: Option<&Idempotency>,
) -> Result<Option<String>, Error> {
    let Some(idem) = idempotency else { return Ok(None) };
    let Some((digest, target)) = tx.idempotency(agent_id, &idem.key)? else { return Ok(None) };
    if digest != idem.request_digest {
        return Err(Error::IdempotencyConflict);
    }
    Ok(Some(target))
}

/// The answer an earlier request with the same idempotency key got.
pub(crate) fn replay(
    tx: &mut dyn Tx,
    agent_id: &str,
    idempotency: Option<&Idempotency>,
) -> Result<Option<PayAttempt>, Error> {
    let Some(target) = earlier_target(tx, agent_id, idempotency)? else { return Ok(None) };
    let missing = || Error::Internal(format!("idempotency key names a missing record {target}"));
    if !target.starts_with(APPROVAL_PREFIX) {
        return tx.payment(&target)?.map(PayAttempt::Paid).map(Some).ok_or_else(missing);
    }
    let approval = tx.approval(&target)?.ok_or_else(missing)?;
    // Once approved, the retry learns of the payment made.
    if let Some(payment_id) = &approval.payment_id
        && let Some(payment) = tx.payment(payment_id)?
    {
        return Ok(Some(PayAttempt::Paid(payment)));
    }
    Ok(Some(PayAttempt::Held(approval)))
}

/// Whether the payer's wallet holds the amount reserved already (a held
/// payment moving on) or not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    No,
    Yes,
}

/// The data of a settled payment's `payment.succeeded` and `invoice.paid`.
pub(crate) fn settlement(payment: &PaymentRecord, invoice: &InvoiceRecord, key_id: &str) -> Settlement {
    Settlement {
        payment_id: payment.id.clone(),
        payment_hash: invoice.payment_hash,
        amount: invoice.amount,
        payer_agent_id: payment.agent_id.clone(),
        payee_agent_id: invoice.agent_id.clone(),
        key_id: key_id.to_owned(),
        purpose: payment.purpose.clone(),
    }
}

/// Moves an invoice's amount from the payer's wallet (out of its
/// reservation, when `reserved`) to the payee's, and answers the
/// transfer's id. A payee that acknowledges its incoming payments gets the
/// money reserved until it accepts: in its wallet, not yet spendable.
pub(crate) fn pay_payee(
    tx: &mut dyn Tx,
    payment_id: &str,
    payer: &Payer,
    invoice: &InvoiceRecord,
    payee_account: AccountId,
    reserved: Reserved,
    now_ms: i64,
) -> Result<i64, Error> {
    let transfer = Transfer { debit: payer.account, credit: payee_account, amount: invoice.amount };
    let mut debit = tx.balance(transfer.debit)?;
    let mut credit = tx.balance(transfer.credit)?;
    if reserved == Reserved::Yes {
        ledger::release(&mut debit, invoice.amount)?;
    }
    ledger::post(transfer, &mut debit, &mut credit)?;
    let acknowledge = tx.acknowledges_incoming(&invoice.agent_id)?;
    if acknowledge {
        ledger::reserve(transfer.credit, &mut credit, invoice.amount)?;
    }
    tx.save_balance(transfer.debit, &debit)?;
    tx.save_balance(transfer.credit, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "payment", now_ms)?;
    if acknowledge {
        tx.save_incoming(&IncomingRecord {
            payment_id: payment_id.to_owned(),
            payee_agent_id: invoice.agent_id.clone(),
            payer_agent_id: payer.agent_id.clone(),
            amount: invoice.amount,
            status: IncomingStatus::Pending,
            created_at_ms: now_ms,
            decided_at_ms: None,
        })?;
    }
    Ok(transfer_id)
}
