//! Settling an invoice of this gateway, inside one store transaction: the
//! decision, the ledger postings, usage and breaker state, the audit record
//! and the events all commit together or not at all. The same code serves
//! every backend through [`Tx`].

use super::decision::{Verdict, decide, stop};
use crate::error::Error;
use crate::store::{
    AgentState, ApprovalOutcome, ApprovalRecord, ApprovalStatus, AuditEntry, Denial, InvoiceRecord, L402Attempt,
    L402Pay, L402TokenRecord, PayAttempt, PayInternal, Payer, PaymentRecord, StoredInvoiceStatus, Tx,
};
use coffer_client::PaymentStatus;
use coffer_core::ledger::{self, Transfer};
use coffer_core::policy::{Attempt, Payee};
use coffer_core::{AccountId, Msat};

/// The deepest sub-agent tree: a limit on the chain a payment walks.
pub const CHAIN_DEPTH_MAX: usize = 8;
// Every tree `COFFER_LIMIT_TREE_DEPTH` allows can be walked.
const _: () = assert!(crate::limits::TREE_DEPTH_MAX as usize <= CHAIN_DEPTH_MAX);

pub fn pay(tx: &mut impl Tx, pay: PayInternal) -> Result<PayAttempt, Error> {
    if let Some(earlier) = replay(tx, &pay.payer.agent_id, pay.idempotency.as_ref())? {
        return Ok(earlier);
    }
    let Some((invoice, payee_account)) = tx.invoice(&pay.payment_hash)? else { return Ok(PayAttempt::NotOurs) };
    check_payable(&invoice, &pay)?;
    // One pending hold per invoice and payer: a second would reserve the
    // money again for an invoice paid once. Another payer may still pay or
    // hold it (a hold does not lock a seller's invoice; the first payment
    // releases the other holds).
    if tx.held(&pay.payment_hash, Some(&pay.payer.agent_id))?.is_some() {
        return Err(Error::PaymentHeld);
    }
    let mut chain = load_chain(tx, &pay.payer.agent_id)?;
    let halted = tx.halted()?;
    let available = tx.balance(pay.payer.account)?.available();
    let attempt = Attempt {
        amount: invoice.amount,
        fee_limit: Msat::ZERO,
        payee: Payee {
            agent_id: Some(invoice.agent_id.clone()),
            node_pubkey_hex: Some(pay.node_pubkey_hex.to_string()),
            domain: pay.domain.clone(),
        },
    };
    let verdict = match decide(halted, &chain, available, &attempt, pay.now_ms) {
        // A paid HTTP request cannot wait for a person: the request would
        // time out long before. The operator raises approval_above_msat or
        // pays by hand.
        Verdict::Hold if pay.domain.is_some() => Verdict::Deny(Denial {
            code: "approval-required",
            message: "this paid request would need a person's approval, which a fetch cannot wait for".into(),
            remaining: None,
            available: None,
            needed: None,
        }),
        verdict => verdict,
    };
    match verdict {
        Verdict::Deny(denial) => {
            record_denial(tx, &mut chain, &pay, &invoice, &denial)?;
            Ok(PayAttempt::Denied(denial))
        }
        Verdict::Hold => hold(tx, &mut chain, &pay, &invoice).map(PayAttempt::Held),
        Verdict::Allow => {
            let payment = settle(
                tx,
                &pay.payment_id,
                &pay.payer,
                &pay.purpose,
                &invoice,
                payee_account,
                Reserved::No,
                pay.now_ms,
            )?;
            tx.audit(&payment_entry(&pay, &invoice, "payment.allowed", "allowed"))?;
            count_spend(&mut chain, invoice.amount, pay.now_ms);
            if let Some(domain) = &pay.domain {
                count_domain_spend(&mut chain, domain, invoice.amount, pay.now_ms);
            }
            observe_payment(&mut chain, &invoice, pay.now_ms);
            save_policed(tx, &chain)?;
            trip_if_needed(tx, &mut chain, pay.now_ms)?;
            remember(tx, &pay, &payment.id)?;
            Ok(PayAttempt::Paid(payment))
        }
    }
}

/// The answer an earlier request with the same idempotency key got.
pub(crate) fn replay(
    tx: &mut impl Tx,
    agent_id: &str,
    idempotency: Option<&crate::store::Idempotency>,
) -> Result<Option<PayAttempt>, Error> {
    let Some(idem) = idempotency else { return Ok(None) };
    let Some((digest, target)) = tx.idempotency(agent_id, &idem.key)? else { return Ok(None) };
    if digest != idem.request_digest {
        return Err(Error::IdempotencyConflict);
    }
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

pub const APPROVAL_PREFIX: &str = "apr_";

fn remember(tx: &mut impl Tx, pay: &PayInternal, target_id: &str) -> Result<(), Error> {
    match &pay.idempotency {
        Some(idem) => tx.insert_idempotency(&pay.payer.agent_id, idem, target_id, pay.now_ms),
        None => Ok(()),
    }
}

fn check_payable(invoice: &InvoiceRecord, pay: &PayInternal) -> Result<(), Error> {
    if invoice.bolt11 != pay.bolt11 {
        return Err(Error::InvalidInvoice(
            "the invoice does not match the one this gateway issued for its payment hash".into(),
        ));
    }
    if invoice.agent_id == pay.payer.agent_id {
        return Err(Error::SelfPayment);
    }
    match invoice.status {
        StoredInvoiceStatus::Paid => return Err(Error::InvoiceAlreadyPaid),
        // Swept as expired, perhaps by an instance whose clock runs ahead:
        // the stored status decides, so the sweep and a payment never both
        // win.
        StoredInvoiceStatus::Expired => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open if pay.now_ms >= invoice.expires_at_ms => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open => {}
    }
    Ok(())
}

/// The payer and its ancestors, payer first.
pub fn load_chain(tx: &mut impl Tx, agent_id: &str) -> Result<Vec<AgentState>, Error> {
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

/// Counts a spend in every budget of the chain (in memory; see
/// [`save_policed`]).
pub(crate) fn count_spend(chain: &mut [AgentState], amount: Msat, now_ms: i64) {
    for level in chain.iter_mut() {
        if let Some(policy) = level.policy.clone() {
            level.usage.record(&policy, amount, now_ms);
        }
    }
}

/// Counts a paid request in the budgets of its domain, at every level
/// (in memory; see [`save_policed`]).
fn count_domain_spend(chain: &mut [AgentState], domain: &str, amount: Msat, now_ms: i64) {
    for level in chain.iter_mut() {
        if let Some(policy) = level.policy.clone() {
            level.usage.record_domain(&policy, domain, amount, now_ms);
        }
    }
}

/// Pays for an L402 token, in the caller's transaction: a refused token is
/// forgotten first; a live token for the same access is reused instead of
/// paying again (two processes of one agent that meet the same paywall at
/// once pay once); else the payment is made and its token kept, together.
pub fn pay_l402(tx: &mut impl Tx, l402: L402Pay) -> Result<L402Attempt, Error> {
    let agent_id = l402.pay.payer.agent_id.clone();
    if let Some(rejected) = &l402.rejected_token {
        tx.forget_l402_token(&agent_id, &l402.origin, rejected)?;
    }
    let kept = tx.l402_tokens(&agent_id, &l402.origin, l402.pay.now_ms)?;
    if let Some(token) = covering(kept, &l402.path) {
        return Ok(L402Attempt::Reused(token));
    }
    let now_ms = l402.pay.now_ms;
    let payment = match pay(tx, l402.pay)? {
        PayAttempt::Paid(payment) => payment,
        PayAttempt::Denied(denial) => return Ok(L402Attempt::Denied(denial)),
        PayAttempt::NotOurs => return Ok(L402Attempt::NotOurs),
        PayAttempt::Held(_) => return Err(Error::Internal("an L402 payment was held".into())),
    };
    let preimage = payment.preimage.ok_or_else(|| Error::Internal("a settled payment without preimage".into()))?;
    let token = L402TokenRecord {
        agent_id,
        origin: l402.origin,
        scope: l402.scope,
        token: l402.token,
        preimage,
        amount: payment.amount,
        payment_id: payment.id,
        created_at_ms: now_ms,
        expires_at_ms: l402.expires_at_ms,
    };
    tx.save_l402_token(&token, now_ms)?;
    Ok(L402Attempt::Paid(token))
}

/// The kept token whose scope covers `path` (on whole segments), the
/// narrowest first.
pub fn covering(tokens: Vec<L402TokenRecord>, path: &str) -> Option<L402TokenRecord> {
    tokens.into_iter().filter(|t| crate::l402::covers(&t.scope, path)).max_by_key(|t| t.scope.len())
}

pub(crate) fn uncount_spend(chain: &mut [AgentState], amount: Msat, at_ms: i64, now_ms: i64) {
    for level in chain.iter_mut() {
        if let Some(policy) = level.policy.clone() {
            level.usage.release(&policy, amount, at_ms, now_ms);
        }
    }
}

/// Persists the usage and breaker state of every level with a policy: one
/// write per level per payment.
pub(crate) fn save_policed(tx: &mut impl Tx, chain: &[AgentState]) -> Result<(), Error> {
    chain.iter().filter(|level| level.policy.is_some()).try_for_each(|level| tx.save_agent_state(level))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reserved {
    No,
    Yes,
}

/// Moves the money: payer to payee, invoice paid, payment recorded.
#[allow(clippy::too_many_arguments)] // one call per outcome; a struct would only rename them
fn settle(
    tx: &mut impl Tx,
    payment_id: &str,
    payer: &Payer,
    purpose: &str,
    invoice: &InvoiceRecord,
    payee_account: AccountId,
    reserved: Reserved,
    now_ms: i64,
) -> Result<PaymentRecord, Error> {
    let transfer = Transfer { debit: payer.account, credit: payee_account, amount: invoice.amount };
    let mut debit = tx.balance(transfer.debit)?;
    let mut credit = tx.balance(transfer.credit)?;
    if reserved == Reserved::Yes {
        ledger::release(&mut debit, invoice.amount)?;
    }
    ledger::post(transfer, &mut debit, &mut credit)?;
    // A payee that acknowledges its incoming payments gets the money
    // reserved until it accepts: in its wallet, not yet spendable.
    let acknowledge = tx.acknowledges_incoming(&invoice.agent_id)?;
    if acknowledge {
        ledger::reserve(transfer.credit, &mut credit, invoice.amount)?;
    }
    tx.save_balance(transfer.debit, &debit)?;
    tx.save_balance(transfer.credit, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "payment", now_ms)?;
    tx.mark_invoice_paid(&invoice.payment_hash, &payer.agent_id, now_ms)?;
    let payment = PaymentRecord {
        id: payment_id.to_owned(),
        agent_id: payer.agent_id.clone(),
        payment_hash: invoice.payment_hash,
        amount: invoice.amount,
        fee: Msat::ZERO,
        status: PaymentStatus::Succeeded,
        purpose: purpose.to_owned(),
        payee_agent_id: Some(invoice.agent_id.clone()),
        preimage: Some(invoice.preimage),
        created_at_ms: now_ms,
        detail: None,
    };
    tx.insert_payment(&payment, &payer.key_id, Some(transfer_id))?;
    if acknowledge {
        tx.save_incoming(&crate::store::IncomingRecord {
            payment_id: payment.id.clone(),
            payee_agent_id: invoice.agent_id.clone(),
            payer_agent_id: payer.agent_id.clone(),
            amount: invoice.amount,
            status: crate::store::IncomingStatus::Pending,
            created_at_ms: now_ms,
            decided_at_ms: None,
        })?;
    }
    let data = serde_json::json!({
        "payment_id": payment.id, "payment_hash": hex::encode(invoice.payment_hash),
        "amount_msat": invoice.amount.as_u64(), "fee_msat": 0, "payer_agent_id": payment.agent_id,
        "payee_agent_id": invoice.agent_id, "key_id": payer.key_id, "purpose": payment.purpose,
    });
    tx.emit("payment.succeeded", Some(&payment.agent_id), &data, now_ms)?;
    tx.emit("invoice.paid", Some(&invoice.agent_id), &data, now_ms)?;
    Ok(payment)
}

fn record_denial(
    tx: &mut impl Tx,
    chain: &mut [AgentState],
    pay: &PayInternal,
    invoice: &InvoiceRecord,
    denial: &Denial,
) -> Result<(), Error> {
    tx.audit(&AuditEntry {
        detail: Some(denial.message.clone()),
        ..payment_entry(pay, invoice, "payment.denied", denial.code)
    })?;
    let data = serde_json::json!({
        "payment_hash": hex::encode(pay.payment_hash), "amount_msat": invoice.amount.as_u64(),
        "payer_agent_id": pay.payer.agent_id, "payee_agent_id": invoice.agent_id, "code": denial.code,
        "message": denial.message, "purpose": pay.purpose,
    });
    tx.emit("payment.denied", Some(&pay.payer.agent_id), &data, pay.now_ms)?;
    observe_denial(tx, chain, pay.now_ms)
}

/// Feeds a denial to the payer's breaker, which may trip.
pub(crate) fn observe_denial(tx: &mut impl Tx, chain: &mut [AgentState], now_ms: i64) -> Result<(), Error> {
    let Some(payer) = chain.first_mut() else { return Ok(()) };
    let Some(rules) = payer.policy.as_ref().and_then(|p| p.breaker.clone()) else { return Ok(()) };
    if payer.frozen {
        return Ok(());
    }
    payer.breaker.observe_denial(&rules, now_ms);
    tx.save_agent_state(payer)?;
    trip_if_needed(tx, chain, now_ms)
}

fn payment_entry(pay: &PayInternal, invoice: &InvoiceRecord, action: &'static str, rule: &str) -> AuditEntry {
    AuditEntry {
        at_ms: pay.now_ms,
        action,
        actor: pay.payer.agent_id.clone(),
        key_id: Some(pay.payer.key_id.clone()),
        agent_id: Some(pay.payer.agent_id.clone()),
        amount_msat: Some(invoice.amount.as_u64()),
        payee: Some(format!("agent:{}", invoice.agent_id)),
        purpose: Some(pay.purpose.clone()),
        rule: Some(rule.to_owned()),
        detail: None,
    }
}

/// Feeds the payer's breaker (in memory; see [`save_policed`]).
fn observe_payment(chain: &mut [AgentState], invoice: &InvoiceRecord, now_ms: i64) {
    let Some(payer) = chain.first_mut() else { return };
    let Some(rules) = payer.policy.as_ref().and_then(|p| p.breaker.as_ref()) else { return };
    payer.breaker.observe_payment(rules, &format!("agent:{}", invoice.agent_id), invoice.amount, now_ms);
}

/// An automatic trip freezes the payer and raises an alert.
pub(crate) fn trip_if_needed(tx: &mut impl Tx, chain: &mut [AgentState], now_ms: i64) -> Result<(), Error> {
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
    let data = serde_json::json!({"agent_id": agent.agent_id, "code": trip.code.as_str(), "message": trip.message});
    tx.emit("breaker.tripped", Some(&agent.agent_id), &data, now_ms)?;
    tx.emit(
        "agent.frozen",
        Some(&agent.agent_id),
        &serde_json::json!({"agent_id": agent.agent_id, "reason": reason}),
        now_ms,
    )
}

/// Reserves the amount and counts it in every budget, until a person
/// decides.
fn hold(
    tx: &mut impl Tx,
    chain: &mut [AgentState],
    pay: &PayInternal,
    invoice: &InvoiceRecord,
) -> Result<ApprovalRecord, Error> {
    crate::store::quota::check_hold(tx, pay.holds_pending_max, &pay.payer.agent_id, pay.now_ms)?;
    let mut balance = tx.balance(pay.payer.account)?;
    ledger::reserve(pay.payer.account, &mut balance, invoice.amount)?;
    tx.save_balance(pay.payer.account, &balance)?;
    count_spend(chain, invoice.amount, pay.now_ms);
    observe_payment(chain, invoice, pay.now_ms);
    save_policed(tx, chain)?;
    trip_if_needed(tx, chain, pay.now_ms)?;
    let approval = ApprovalRecord {
        id: pay.payment_id.replacen("pay_", APPROVAL_PREFIX, 1),
        agent_id: pay.payer.agent_id.clone(),
        key_id: pay.payer.key_id.clone(),
        payment_hash: pay.payment_hash,
        bolt11: pay.bolt11.clone(),
        amount: invoice.amount,
        purpose: pay.purpose.clone(),
        payee_agent_id: Some(invoice.agent_id.clone()),
        status: ApprovalStatus::Pending,
        created_at_ms: pay.now_ms,
        expires_at_ms: invoice.expires_at_ms.min(pay.now_ms.saturating_add(pay.approval_ttl_ms)),
        decided_at_ms: None,
        decided_by: None,
        payment_id: None,
        fee_limit: Msat::ZERO,
        payee_node_hex: None,
    };
    tx.insert_approval(&approval)?;
    tx.audit(&payment_entry(pay, invoice, "payment.held", "approval-required"))?;
    tx.emit("payment.held", Some(&approval.agent_id), &approval_data(&approval), pay.now_ms)?;
    remember(tx, pay, &approval.id)?;
    Ok(approval)
}

pub fn approval_data(a: &ApprovalRecord) -> serde_json::Value {
    serde_json::json!({
        "approval_id": a.id, "agent_id": a.agent_id, "payment_hash": hex::encode(a.payment_hash),
        "amount_msat": a.amount.as_u64(), "fee_limit_msat": a.fee_limit.as_u64(), "payee": approval_payee(a),
        "purpose": a.purpose, "status": a.status.as_str(), "expires_at_ms": a.expires_at_ms,
        "payment_id": a.payment_id,
    })
}

/// The payee as policies and the audit trail name it: `agent:ID` inside
/// this gateway, `node:PUBKEY` outside.
fn approval_payee(a: &ApprovalRecord) -> Option<String> {
    match (&a.payee_node_hex, &a.payee_agent_id) {
        (Some(node), _) => Some(format!("node:{node}")),
        (None, Some(agent)) => Some(format!("agent:{agent}")),
        (None, None) => None,
    }
}

/// A person approves (the payment is made) or denies (the reservation is
/// released). A decision is final: deciding twice is refused.
pub fn decide_approval(
    tx: &mut impl Tx,
    id: &str,
    approve: bool,
    actor: &str,
    now_ms: i64,
) -> Result<ApprovalOutcome, Error> {
    let mut approval = tx.approval(id)?.ok_or(Error::NotFound("approval"))?;
    if approval.status != ApprovalStatus::Pending {
        return Err(Error::ApprovalNotPending(approval.status.as_str()));
    }
    if approval.payee_node_hex.is_some() {
        return super::external::decide_approval(tx, approval, approve, actor, now_ms);
    }
    let invoice = tx.invoice(&approval.payment_hash)?;
    let payable =
        invoice.as_ref().is_some_and(|(i, _)| i.status == StoredInvoiceStatus::Open && now_ms < i.expires_at_ms);
    if now_ms >= approval.expires_at_ms || !payable {
        return release(tx, approval, ApprovalStatus::Expired, actor, now_ms).map(ApprovalOutcome::Released);
    }
    if !approve {
        return release(tx, approval, ApprovalStatus::Denied, actor, now_ms).map(ApprovalOutcome::Released);
    }
    let Some((invoice, payee_account)) = invoice else { return Err(Error::NotFound("invoice")) };
    // A person's approval does not get past the kill switch or a freeze.
    let chain = load_chain(tx, &approval.agent_id)?;
    if let Some(stopped) = stop(tx.halted()?, &chain) {
        return Err(Error::Denied(stopped));
    }
    let account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let payer = Payer { agent_id: approval.agent_id.clone(), account, key_id: approval.key_id.clone() };
    let payment_id = approval.id.replacen(APPROVAL_PREFIX, "pay_", 1);
    let payment = settle(tx, &payment_id, &payer, &approval.purpose, &invoice, payee_account, Reserved::Yes, now_ms)?;
    approval.payment_id = Some(payment.id.clone());
    record_decision(tx, &mut approval, ApprovalStatus::Approved, actor, now_ms)?;
    Ok(ApprovalOutcome::Paid(approval, payment))
}

/// Gives back a held payment's reservation and budget.
pub fn release(
    tx: &mut impl Tx,
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
    tx: &mut impl Tx,
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
    tx.emit("approval.decided", Some(&approval.agent_id), &approval_data(approval), now_ms)
}

fn audit_decision(
    tx: &mut impl Tx,
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
        payee: approval_payee(approval),
        purpose: Some(approval.purpose.clone()),
        rule: Some(approval.id.clone()),
        detail: None,
    })
}

/// The payee accepts a pending incoming payment (its reservation is
/// released) or rejects it (released, and the amount goes back to the
/// payer). Deciding twice is refused.
pub fn decide_incoming(
    tx: &mut impl Tx,
    mut incoming: crate::store::IncomingRecord,
    accept: bool,
    key_id: &str,
    now_ms: i64,
) -> Result<crate::store::IncomingRecord, Error> {
    use crate::store::IncomingStatus;
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
    let data = serde_json::json!({
        "payment_id": incoming.payment_id, "payee_agent_id": incoming.payee_agent_id,
        "payer_agent_id": incoming.payer_agent_id, "amount_msat": incoming.amount.as_u64(),
    });
    tx.emit(action, Some(&incoming.payee_agent_id), &data, now_ms)?;
    Ok(incoming)
}
