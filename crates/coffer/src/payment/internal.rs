//! Settling an invoice of this gateway, inside one store transaction: the
//! decision, the ledger postings, usage and breaker state, the audit record
//! and the events all commit together or not at all. A payment above the
//! approval threshold is held (`approval`); once a person approves it,
//! [`decide_held`] settles it here. The same code serves every backend
//! through [`Tx`].

use super::approval::{self, Hold};
use super::chain::{
    APPROVAL_PREFIX, Reserved, count_domain_spend, load_chain, observe_denial, observe_payment, pay_payee, replay,
    save_policed, settlement, trip_if_needed,
};
use super::decision::{Verdict, decide, stop};
use super::warning::count_spend;
use super::{escrow, spend};
use crate::error::Error;
use crate::events::kind::{Denied, DeniedPayee, Paid, Succeeded};
use crate::events::{self, Event};
use crate::model::{
    AgentState, ApprovalOutcome, ApprovalRecord, ApprovalStatus, Attribution, AuditEntry, Denial, InvoiceRecord,
    PayAttempt, PayInternal, Payer, PaymentRecord, StoredInvoiceStatus,
};
use crate::store::Tx;
use coffer_client::PaymentStatus;
use coffer_core::policy::{Attempt, Payee};
use coffer_core::{AccountId, Msat};

pub fn pay(tx: &mut dyn Tx, pay: &PayInternal) -> Result<PayAttempt, Error> {
    if let Some(earlier) = replay(tx, &pay.payer.agent_id, pay.idempotency.as_ref())? {
        return Ok(earlier);
    }
    let Some((invoice, payee_account)) = tx.invoice(&pay.payment_hash)? else { return Ok(PayAttempt::NotOurs) };
    check_payable(&invoice, pay)?;
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
    let verdict = match decide(halted, &mut chain, &pay.terms.fiat, available, &attempt, pay.now_ms) {
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
    let attribution = pay.attribution.clone().or_task(chain.first().and_then(|payer| payer.task.as_deref()));
    match verdict {
        Verdict::Deny(denial) => {
            record_denial(tx, &mut chain, pay, &invoice, &denial)?;
            Ok(PayAttempt::Denied(denial))
        }
        Verdict::Hold => hold(tx, &mut chain, pay, &invoice, attribution).map(PayAttempt::Held),
        Verdict::Allow => {
            let payment = match escrow::waiting(&invoice, pay.escrow, pay.now_ms)? {
                Some(waiting) => {
                    crate::quota::check_escrow(tx, pay.escrows_open_max, &pay.payer.agent_id, pay.now_ms)?;
                    let accept = escrow::Accept {
                        payment_id: &pay.payment_id,
                        payer: &pay.payer,
                        purpose: &pay.purpose,
                        attribution: &attribution,
                        invoice: &invoice,
                        waiting,
                        reserved_at_ms: None,
                        now_ms: pay.now_ms,
                    };
                    escrow::accept(tx, accept)?
                }
                None => settle(
                    tx,
                    &pay.payment_id,
                    &pay.payer,
                    (&pay.purpose, &attribution),
                    &invoice,
                    payee_account,
                    Reserved::No,
                    pay.now_ms,
                )?,
            };
            tx.audit(&payment_entry(pay, &invoice, "payment.allowed", "allowed"))?;
            count_spend(tx, &mut chain, invoice.amount, &pay.terms.warnings, pay.now_ms)?;
            if let Some(domain) = &pay.domain {
                count_domain_spend(&mut chain, domain, invoice.amount, pay.now_ms);
            }
            observe_payment(&mut chain, &payee_name(&invoice), invoice.amount, pay.now_ms);
            save_policed(tx, &chain)?;
            trip_if_needed(tx, &mut chain, pay.now_ms)?;
            remember(tx, pay, &payment.id)?;
            Ok(PayAttempt::Paid(payment))
        }
    }
}

fn remember(tx: &mut dyn Tx, pay: &PayInternal, target_id: &str) -> Result<(), Error> {
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
    if pay.escrow.is_some() && pay.domain.is_some() {
        return Err(Error::Internal("a paid request does not wait in escrow".into()));
    }
    match invoice.status {
        StoredInvoiceStatus::Paid | StoredInvoiceStatus::Accepted => return Err(Error::InvoiceAlreadyPaid),
        StoredInvoiceStatus::Cancelled => return Err(Error::InvalidState("the invoice was cancelled".into())),
        // Swept as expired, perhaps by an instance whose clock runs ahead:
        // the stored status decides, so the sweep and a payment never both
        // win.
        StoredInvoiceStatus::Expired => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open if pay.now_ms >= invoice.expires_at_ms => return Err(Error::InvoiceExpired),
        StoredInvoiceStatus::Open => {}
    }
    Ok(())
}

/// Moves the money: payer to payee, invoice paid, payment recorded.
#[allow(clippy::too_many_arguments)] // one call per outcome; a struct would only rename them
fn settle(
    tx: &mut dyn Tx,
    payment_id: &str,
    payer: &Payer,
    (purpose, attribution): (&str, &Attribution),
    invoice: &InvoiceRecord,
    payee_account: AccountId,
    reserved: Reserved,
    now_ms: i64,
) -> Result<PaymentRecord, Error> {
    let transfer_id = pay_payee(tx, payment_id, payer, invoice, payee_account, reserved, now_ms)?;
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
        refunded: Msat::ZERO,
        attribution: attribution.clone(),
    };
    tx.insert_payment(&payment, &payer.key_id, Some(transfer_id))?;
    spend::count_payment(tx, &payment, &spend::agent_payee(&invoice.agent_id), now_ms)?;
    let settlement = settlement(&payment, invoice, &payer.key_id);
    events::emit(tx, &Event::PaymentSucceeded(Succeeded::Internal(settlement.clone())), now_ms)?;
    events::emit(tx, &Event::InvoicePaid(Paid::Internal(settlement)), now_ms)?;
    Ok(payment)
}

fn record_denial(
    tx: &mut dyn Tx,
    chain: &mut [AgentState],
    pay: &PayInternal,
    invoice: &InvoiceRecord,
    denial: &Denial,
) -> Result<(), Error> {
    tx.audit(&AuditEntry {
        detail: Some(denial.message.clone()),
        ..payment_entry(pay, invoice, "payment.denied", denial.code)
    })?;
    let denied = Denied {
        payment_hash: pay.payment_hash,
        amount: invoice.amount,
        payer_agent_id: pay.payer.agent_id.clone(),
        payee: DeniedPayee::Agent(invoice.agent_id.clone()),
        code: denial.code,
        message: denial.message.clone(),
        purpose: pay.purpose.clone(),
    };
    events::emit(tx, &Event::PaymentDenied(denied), pay.now_ms)?;
    observe_denial(tx, chain, denial.code, pay.now_ms)
}

fn payment_entry(pay: &PayInternal, invoice: &InvoiceRecord, action: &'static str, rule: &str) -> AuditEntry {
    AuditEntry {
        at_ms: pay.now_ms,
        action,
        actor: pay.payer.agent_id.clone(),
        key_id: Some(pay.payer.key_id.clone()),
        agent_id: Some(pay.payer.agent_id.clone()),
        amount_msat: Some(invoice.amount.as_u64()),
        payee: Some(payee_name(invoice)),
        purpose: Some(pay.purpose.clone()),
        rule: Some(rule.to_owned()),
        detail: None,
    }
}

/// Holds the payment for a person's approval.
fn hold(
    tx: &mut dyn Tx,
    chain: &mut [AgentState],
    pay: &PayInternal,
    invoice: &InvoiceRecord,
    attribution: Attribution,
) -> Result<ApprovalRecord, Error> {
    observe_payment(chain, &payee_name(invoice), invoice.amount, pay.now_ms);
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
        escrow: pay.escrow,
        attribution,
    };
    let hold = Hold {
        approval,
        account: pay.payer.account,
        spend: invoice.amount,
        entry: payment_entry(pay, invoice, "payment.held", "approval-required"),
        idempotency: pay.idempotency.as_ref(),
        holds_pending_max: pay.holds_pending_max,
        warnings: &pay.terms.warnings,
    };
    approval::hold(tx, chain, hold)
}

/// A person's decision on a held payment to an invoice of this gateway
/// (still pending: the caller checked). Past its time, or its invoice no
/// longer payable, the hold expires; denied, it is released; approved, the
/// payment is settled from the hold's reserve, unless the kill switch or a
/// freeze stops it (an error; nothing changes and the hold waits on).
pub fn decide_held(
    tx: &mut dyn Tx,
    mut approval: ApprovalRecord,
    approve: bool,
    actor: &str,
    now_ms: i64,
) -> Result<ApprovalOutcome, Error> {
    let invoice = tx.invoice(&approval.payment_hash)?;
    let payable =
        invoice.as_ref().is_some_and(|(i, _)| i.status == StoredInvoiceStatus::Open && now_ms < i.expires_at_ms);
    if now_ms >= approval.expires_at_ms || !payable {
        return approval::release(tx, approval, ApprovalStatus::Expired, actor, now_ms).map(ApprovalOutcome::Released);
    }
    if !approve {
        return approval::release(tx, approval, ApprovalStatus::Denied, actor, now_ms).map(ApprovalOutcome::Released);
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
    let payment = match escrow::waiting(&invoice, approval.escrow, now_ms)? {
        Some(waiting) => {
            let accept = escrow::Accept {
                payment_id: &payment_id,
                payer: &payer,
                purpose: &approval.purpose,
                attribution: &approval.attribution,
                invoice: &invoice,
                waiting,
                reserved_at_ms: Some(approval.created_at_ms),
                now_ms,
            };
            escrow::accept(tx, accept)?
        }
        None => {
            let about = (approval.purpose.as_str(), &approval.attribution);
            settle(tx, &payment_id, &payer, about, &invoice, payee_account, Reserved::Yes, now_ms)?
        }
    };
    approval.payment_id = Some(payment.id.clone());
    approval::record_decision(tx, &mut approval, ApprovalStatus::Approved, actor, now_ms)?;
    Ok(ApprovalOutcome::Paid(approval, payment))
}

/// The payee as policies and the audit trail name it.
fn payee_name(invoice: &InvoiceRecord) -> String {
    format!("agent:{}", invoice.agent_id)
}
