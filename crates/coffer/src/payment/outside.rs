//! Money across the gateway's edge, inside one store transaction each:
//! paying an invoice outside this gateway through the Lightning backend, and
//! crediting an invoice the Lightning Network paid.
//!
//! An outgoing payment has three steps, and only the middle one talks to
//! the backend (see `gateway::lightning`):
//! 1. [`begin`]: the constitution's decision, the reserve of amount plus
//!    fee limit, and a `pending` payment, committed before the backend is
//!    called, so that a crash after the call still finds the payment. A
//!    payment above the approval threshold is held instead (reserved the
//!    same way, by `approval`); a person's approval ([`decide_held`])
//!    decides it again and then records it pending exactly as here;
//! 2. the backend call (outside any transaction);
//! 3. [`finish`]: posted at the real fee, the rest of the reserve released;
//!    or failed, the whole reserve released. Until the backend says which,
//!    [`note`] only records why it is still pending: the reserve stays.
//!
//! At most one live (pending or succeeded) payment per payment hash, and one
//! pending hold, checked here and enforced by unique indexes: an invoice is
//! never sent twice.

use super::approval::{self, Hold};
use super::chain::{APPROVAL_PREFIX, load_chain, observe_denial, replay, save_policed, trip_if_needed, uncount_spend};
use super::decision::{Verdict, decide};
use super::warning::count_spend;
use crate::error::Error;
use crate::events::kind::{Denied, DeniedPayee, Deposit, Outgoing, Paid, Succeeded};
use crate::events::{self, Event};
use crate::model::{
    AgentState, ApprovalOutcome, ApprovalRecord, ApprovalStatus, AuditEntry, BeginExternal, ExternalOutcome,
    ExternalPayment, ExternalStart, Payer, PaymentRecord, SpendTerms, TREASURY_PAYEE,
};
use crate::store::Tx;
use coffer_client::PaymentStatus;
use coffer_core::ledger::{self, Transfer};
use coffer_core::policy::{Attempt, Payee};
use coffer_core::{AccountId, Msat};

pub fn begin(tx: &mut dyn Tx, mut b: BeginExternal) -> Result<ExternalStart, Error> {
    if let Some(earlier) = replay(tx, &b.payer.agent_id, b.idempotency.as_ref())? {
        return Ok(ExternalStart::Replay(earlier));
    }
    refuse_if_live(tx, &b.payment_hash)?;
    if tx.held(&b.payment_hash, None)?.is_some() {
        return Err(Error::PaymentHeld);
    }
    let mut chain = load_chain(tx, &b.payer.agent_id)?;
    let inherited = chain.first().and_then(|payer| payer.task.as_deref());
    b.attribution = std::mem::take(&mut b.attribution).or_task(inherited);
    let available = tx.balance(b.payer.account)?.available();
    let attempt = attempt(&b);
    let denial = match decide(tx.halted()?, &mut chain, &b.terms.fiat, available, &attempt, b.now_ms) {
        Verdict::Allow => {
            observe_payment(&mut chain, &b);
            return start(tx, &mut chain, &b, attempt.spend()).map(ExternalStart::Started);
        }
        Verdict::Hold => {
            observe_payment(&mut chain, &b);
            return hold(tx, &mut chain, &b, attempt.spend()).map(ExternalStart::Held);
        }
        Verdict::Deny(denial) => denial,
    };
    tx.audit(&AuditEntry { detail: Some(denial.message.clone()), ..entry(&b, "payment.denied", denial.code) })?;
    let denied = Denied {
        payment_hash: b.payment_hash,
        amount: b.amount,
        payer_agent_id: b.payer.agent_id.clone(),
        payee: DeniedPayee::Node(b.payee_node_hex.clone()),
        code: denial.code,
        message: denial.message.clone(),
        purpose: b.purpose.clone(),
    };
    events::emit(tx, &Event::PaymentDenied(denied), b.now_ms)?;
    observe_denial(tx, &mut chain, denial.code, b.now_ms)?;
    Ok(ExternalStart::Denied(denial))
}

/// An invoice is sent at most once: refused while a payment of it is
/// pending or after one succeeded.
fn refuse_if_live(tx: &mut dyn Tx, payment_hash: &[u8; 32]) -> Result<(), Error> {
    match tx.live_external(payment_hash)? {
        Some(live) if live.status == PaymentStatus::Succeeded => Err(Error::InvoiceAlreadyPaid),
        Some(_) => Err(Error::PaymentInFlight),
        None => Ok(()),
    }
}

fn attempt(b: &BeginExternal) -> Attempt {
    let payee = Payee { agent_id: None, node_pubkey_hex: Some(b.payee_node_hex.clone()), domain: None };
    Attempt { amount: b.amount, fee_limit: b.fee_limit, payee }
}

/// Feeds the payer's breaker (in memory; saved with the spend). Once per
/// payment: when it is allowed or held, not again when a held one is
/// approved.
fn observe_payment(chain: &mut [AgentState], b: &BeginExternal) {
    super::chain::observe_payment(chain, &payee_name(b), b.amount, b.now_ms);
}

/// Reserves `spend` (amount plus fee limit) on the payer's wallet and
/// counts it in every budget of the chain.
fn reserve_and_count(tx: &mut dyn Tx, chain: &mut [AgentState], b: &BeginExternal, spend: Msat) -> Result<(), Error> {
    let mut balance = tx.balance(b.payer.account)?;
    ledger::reserve(b.payer.account, &mut balance, spend)?;
    tx.save_balance(b.payer.account, &balance)?;
    count_spend(tx, chain, spend, &b.terms.warnings, b.now_ms)?;
    save_policed(tx, chain)?;
    trip_if_needed(tx, chain, b.now_ms)
}

fn start(tx: &mut dyn Tx, chain: &mut [AgentState], b: &BeginExternal, spend: Msat) -> Result<PaymentRecord, Error> {
    reserve_and_count(tx, chain, b, spend)?;
    let payment = PaymentRecord {
        id: b.payment_id.clone(),
        agent_id: b.payer.agent_id.clone(),
        payment_hash: b.payment_hash,
        amount: b.amount,
        fee: Msat::ZERO,
        status: PaymentStatus::Pending,
        purpose: b.purpose.clone(),
        payee_agent_id: None,
        preimage: None,
        created_at_ms: b.now_ms,
        detail: Some("sent to the Lightning backend".into()),
        refunded: Msat::ZERO,
        attribution: b.attribution.clone(),
    };
    tx.insert_payment(&payment, &b.payer.key_id, None)?;
    tx.insert_external(&ExternalPayment {
        payment_id: b.payment_id.clone(),
        payment_hash: b.payment_hash,
        bolt11: b.bolt11.clone(),
        agent_id: b.payer.agent_id.clone(),
        account: b.payer.account,
        amount: b.amount,
        fee_limit: b.fee_limit,
        status: PaymentStatus::Pending,
        checks: 0,
        created_at_ms: b.now_ms,
    })?;
    tx.audit(&AuditEntry {
        detail: Some(format!("fee limit {} msat", b.fee_limit.as_u64())),
        ..entry(b, "payment.allowed", "allowed")
    })?;
    events::emit(tx, &Event::PaymentPending(Outgoing { payment: payment.clone(), fee_limit: b.fee_limit }), b.now_ms)?;
    if let Some(idem) = &b.idempotency {
        tx.insert_idempotency(&b.payer.agent_id, idem, &payment.id, b.now_ms)?;
    }
    Ok(payment)
}

/// Holds a payment for a person's approval. Like a held payment inside the
/// gateway, the hold reserves and counts all that the payment may spend,
/// here amount plus fee limit: the money is there when the person approves,
/// and the budgets cannot be spent twice meanwhile. Nothing goes to the
/// backend yet.
fn hold(tx: &mut dyn Tx, chain: &mut [AgentState], b: &BeginExternal, spend: Msat) -> Result<ApprovalRecord, Error> {
    let approval = ApprovalRecord {
        id: b.payment_id.replacen("pay_", APPROVAL_PREFIX, 1),
        agent_id: b.payer.agent_id.clone(),
        key_id: b.payer.key_id.clone(),
        payment_hash: b.payment_hash,
        bolt11: b.bolt11.clone(),
        amount: b.amount,
        purpose: b.purpose.clone(),
        payee_agent_id: None,
        status: ApprovalStatus::Pending,
        created_at_ms: b.now_ms,
        expires_at_ms: b.invoice_expires_at_ms.min(b.now_ms.saturating_add(b.approval_ttl_ms)),
        decided_at_ms: None,
        decided_by: None,
        payment_id: None,
        fee_limit: b.fee_limit,
        escrow: None,
        payee_node_hex: Some(b.payee_node_hex.clone()),
        attribution: b.attribution.clone(),
    };
    let entry = AuditEntry {
        detail: Some(format!("fee limit {} msat", b.fee_limit.as_u64())),
        ..entry(b, "payment.held", "approval-required")
    };
    let hold = Hold {
        approval,
        account: b.payer.account,
        spend,
        entry,
        idempotency: b.idempotency.as_ref(),
        holds_pending_max: b.holds_pending_max,
        warnings: &b.terms.warnings,
    };
    approval::hold(tx, chain, hold)
}

/// A person's decision on a held payment to an outside invoice (still
/// pending: the caller checked). Denied, or past its time (which ends no
/// later than the invoice), its reserve and budget are released. Approved,
/// it is decided again as if it arrived now: the hold's reserve and budget
/// are given back, then a halt, a freeze, a policy that now refuses it or
/// a wallet without the money stop it (an error; nothing changes and the
/// hold waits on), else it starts exactly like an allowed payment, pending,
/// for the caller to send to the backend once this transaction commits (the
/// resolver finishes it if the process dies first). For the rate limit an
/// approval is one more attempt.
pub fn decide_held(
    tx: &mut dyn Tx,
    mut approval: ApprovalRecord,
    approve: bool,
    actor: &str,
    now_ms: i64,
    terms: &SpendTerms,
) -> Result<ApprovalOutcome, Error> {
    if now_ms >= approval.expires_at_ms {
        return approval::release(tx, approval, ApprovalStatus::Expired, actor, now_ms).map(ApprovalOutcome::Released);
    }
    if !approve {
        return approval::release(tx, approval, ApprovalStatus::Denied, actor, now_ms).map(ApprovalOutcome::Released);
    }
    refuse_if_live(tx, &approval.payment_hash)?;
    let mut chain = load_chain(tx, &approval.agent_id)?;
    let account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let b = resumed(&approval, account, now_ms, terms)?;
    let reserved = approval.reserved()?;
    uncount_spend(&mut chain, reserved, approval.created_at_ms, now_ms);
    let mut balance = tx.balance(account)?;
    ledger::release(&mut balance, reserved)?;
    let halted = tx.halted()?;
    if let Verdict::Deny(denial) = decide(halted, &mut chain, &terms.fiat, balance.available(), &attempt(&b), now_ms) {
        return Err(Error::Denied(denial));
    }
    tx.save_balance(account, &balance)?;
    let payment = start(tx, &mut chain, &b, reserved)?;
    approval.payment_id = Some(payment.id.clone());
    approval::record_decision(tx, &mut approval, ApprovalStatus::Approved, actor, now_ms)?;
    Ok(ApprovalOutcome::Paid(approval, payment))
}

/// The payment an approved hold starts. Its idempotency key already names
/// the approval, whose payment a retry then finds.
fn resumed(
    approval: &ApprovalRecord,
    account: AccountId,
    now_ms: i64,
    terms: &SpendTerms,
) -> Result<BeginExternal, Error> {
    let payee_node_hex = approval.payee_node_hex.clone().ok_or(Error::NotFound("payee node"))?;
    Ok(BeginExternal {
        payment_id: approval.id.replacen(APPROVAL_PREFIX, "pay_", 1),
        payer: Payer { agent_id: approval.agent_id.clone(), account, key_id: approval.key_id.clone() },
        bolt11: approval.bolt11.clone(),
        payment_hash: approval.payment_hash,
        amount: approval.amount,
        fee_limit: approval.fee_limit,
        purpose: approval.purpose.clone(),
        attribution: approval.attribution.clone(),
        payee_node_hex,
        idempotency: None,
        // Only a hold reads these: an approved payment is not held again.
        invoice_expires_at_ms: approval.expires_at_ms,
        approval_ttl_ms: 0,
        holds_pending_max: 0,
        now_ms,
        terms: terms.clone(),
    })
}

/// Ends a pending payment as the backend said. Finishing one already
/// finished changes nothing and returns it: the resolver and the caller
/// may both learn the outcome.
pub fn finish(
    tx: &mut dyn Tx,
    payment_id: &str,
    outcome: ExternalOutcome,
    now_ms: i64,
) -> Result<PaymentRecord, Error> {
    let mut ext = tx.external(payment_id)?.ok_or(Error::NotFound("external payment"))?;
    let mut payment = tx.payment(payment_id)?.ok_or(Error::NotFound("payment"))?;
    if ext.status != PaymentStatus::Pending {
        return Ok(payment);
    }
    let reserved = ext.amount.checked_add(ext.fee_limit).map_err(coffer_core::LedgerError::from)?;
    let mut balance = tx.balance(ext.account)?;
    ledger::release(&mut balance, reserved)?;
    let mut chain = load_chain(tx, &ext.agent_id)?;
    let mut transfer_id = None;
    match outcome {
        ExternalOutcome::Succeeded { preimage, fee } => {
            // The reserve bounds what the wallet pays: a backend that took
            // more than the limit is noted, and the excess is not charged.
            let charged = fee.min(ext.fee_limit);
            transfer_id =
                Some(post(tx, ext.account, &mut balance, AccountId::OUTSIDE, ext.amount, "payment.out", now_ms)?);
            if !charged.is_zero() {
                post(tx, ext.account, &mut balance, AccountId::FEES, charged, "fee", now_ms)?;
            }
            uncount_spend(&mut chain, ext.fee_limit.saturating_sub(charged), ext.created_at_ms, now_ms);
            payment.status = PaymentStatus::Succeeded;
            payment.fee = charged;
            payment.preimage = Some(preimage);
            payment.detail = (fee > ext.fee_limit).then(|| {
                format!(
                    "the backend reported a fee of {} msat, above the limit of {} msat; the limit was charged",
                    fee.as_u64(),
                    ext.fee_limit.as_u64()
                )
            });
        }
        ExternalOutcome::Failed { reason } => {
            uncount_spend(&mut chain, reserved, ext.created_at_ms, now_ms);
            payment.status = PaymentStatus::Failed;
            payment.detail = Some(reason);
        }
    }
    tx.save_balance(ext.account, &balance)?;
    save_policed(tx, &chain)?;
    tx.update_payment(&payment, transfer_id)?;
    if payment.status == PaymentStatus::Succeeded {
        super::spend::count_payment(tx, &payment, &super::spend::node_payee(&ext.bolt11), now_ms)?;
    }
    ext.status = payment.status;
    tx.update_external(&ext, now_ms)?;
    let outgoing = Outgoing { payment: payment.clone(), fee_limit: ext.fee_limit };
    let (action, event) = match payment.status {
        PaymentStatus::Succeeded => ("payment.settled", Event::PaymentSucceeded(Succeeded::Outside(outgoing))),
        _ => ("payment.failed", Event::PaymentFailed(outgoing)),
    };
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action,
        actor: "system".into(),
        agent_id: Some(ext.agent_id.clone()),
        amount_msat: Some(ext.amount.as_u64()),
        rule: Some(payment.id.clone()),
        detail: payment.detail.clone().or_else(|| Some(format!("fee {} msat", payment.fee.as_u64()))),
        ..AuditEntry::default()
    })?;
    events::emit(tx, &event, now_ms)?;
    Ok(payment)
}

/// Moves `amount` from a wallet (its balance in hand) to a system account.
fn post(
    tx: &mut dyn Tx,
    from: AccountId,
    from_balance: &mut coffer_core::Balance,
    to: AccountId,
    amount: Msat,
    kind: &str,
    now_ms: i64,
) -> Result<i64, Error> {
    let transfer = Transfer { debit: from, credit: to, amount };
    let mut credit = tx.balance(to)?;
    ledger::post(transfer, from_balance, &mut credit)?;
    tx.save_balance(to, &credit)?;
    tx.insert_transfer(&transfer, kind, now_ms)
}

/// Records why a payment is still pending; its reserve stays.
pub fn note(tx: &mut dyn Tx, payment_id: &str, detail: String, now_ms: i64) -> Result<PaymentRecord, Error> {
    let mut ext = tx.external(payment_id)?.ok_or(Error::NotFound("external payment"))?;
    let mut payment = tx.payment(payment_id)?.ok_or(Error::NotFound("payment"))?;
    if ext.status != PaymentStatus::Pending {
        return Ok(payment);
    }
    ext.checks = ext.checks.saturating_add(1);
    tx.update_external(&ext, now_ms)?;
    payment.detail = Some(detail);
    tx.update_payment(&payment, None)?;
    Ok(payment)
}

/// Credits an invoice the Lightning Network paid: `outside` to the payee,
/// once. The open -> paid update is the guard, so a repeated notice, a
/// restart, or a settlement inside the gateway first all credit nothing.
pub fn credit_from_outside(tx: &mut dyn Tx, payment_hash: &[u8; 32], now_ms: i64) -> Result<bool, Error> {
    let Some((invoice, account)) = tx.invoice(payment_hash)? else { return Ok(false) };
    if !tx.mark_invoice_paid_from_outside(payment_hash, now_ms)? {
        return Ok(false);
    }
    let transfer = Transfer { debit: AccountId::OUTSIDE, credit: account, amount: invoice.amount };
    let (mut outside, mut credit) = (tx.balance(AccountId::OUTSIDE)?, tx.balance(account)?);
    ledger::post(transfer, &mut outside, &mut credit)?;
    tx.save_balance(AccountId::OUTSIDE, &outside)?;
    tx.save_balance(account, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "deposit", now_ms)?;
    let agent_id = (invoice.agent_id != TREASURY_PAYEE).then_some(invoice.agent_id.as_str());
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action: "deposit.credited",
        actor: "system".into(),
        agent_id: agent_id.map(str::to_owned),
        amount_msat: Some(invoice.amount.as_u64()),
        payee: Some(invoice.agent_id.clone()),
        rule: Some(hex::encode(payment_hash)),
        ..AuditEntry::default()
    })?;
    let deposit = Deposit { payment_hash: *payment_hash, amount: invoice.amount, payee: invoice.agent_id, transfer_id };
    events::emit(tx, &Event::InvoicePaid(Paid::FromOutside(deposit)), now_ms)?;
    Ok(true)
}

fn payee_name(b: &BeginExternal) -> String {
    format!("node:{}", b.payee_node_hex)
}

fn entry(b: &BeginExternal, action: &'static str, rule: &str) -> AuditEntry {
    AuditEntry {
        at_ms: b.now_ms,
        action,
        actor: b.payer.agent_id.clone(),
        key_id: Some(b.payer.key_id.clone()),
        agent_id: Some(b.payer.agent_id.clone()),
        amount_msat: Some(b.amount.as_u64()),
        payee: Some(payee_name(b)),
        purpose: Some(b.purpose.clone()),
        rule: Some(rule.to_owned()),
        detail: None,
    }
}
