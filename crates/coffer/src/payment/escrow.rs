//! Money that waits between two agents of this gateway, in one place for
//! both ways it comes to wait:
//! - a **hold invoice** paid: its payee settles it after serving (the
//!   preimage is revealed to the payer only then) or cancels it;
//! - a payment **into escrow**: its payer releases it on delivery or
//!   disputes it; the operator resolves a dispute.
//!
//! Either way the amount stays in the payer's wallet, reserved, from the
//! moment it is paid: it counts against every budget of the payer's chain
//! then (the decision was made then), and cannot be spent twice. It ends
//! exactly once, by [`finish`]: released (moved to the payee) or refunded
//! (the reservation given back, and with it the budget, since no money
//! reached the payee). A deadline ends a held one by its `on_timeout`
//! rule ([`expire_due`]); a disputed one waits for the operator.
//!
//! Every function works in the caller's transaction; each change of status
//! is a conditional update, so of two decisions racing, one wins and the
//! other is refused with nothing changed.

use super::chain::{Reserved, load_chain, pay_payee, save_policed, settlement, uncount_spend};
use super::decision::stop;
use crate::error::Error;
use crate::events::kind::{Paid, Refunded};
use crate::events::{self, Event};
use crate::model::{
    AuditEntry, EscrowKind, EscrowRecord, EscrowStatus, EscrowTerms, InvoiceRecord, OUTSIDE_PAYER, Payer,
    PaymentRecord, StoredInvoiceStatus, outcome_str,
};
use crate::store::Tx;
use coffer_client::{Outcome, PaymentStatus};
use coffer_core::{Msat, ledger};

/// How a payment to an invoice will wait: who ends it and by when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub kind: EscrowKind,
    pub on_timeout: Outcome,
    pub deadline_at_ms: i64,
}

/// How a payment of `invoice` waits, if it does: a hold invoice for its
/// payee, a payment with escrow terms for its payer. A hold invoice is
/// settled by its payee, so escrow terms on it are refused.
pub fn waiting(invoice: &InvoiceRecord, escrow: Option<EscrowTerms>, now_ms: i64) -> Result<Option<Waiting>, Error> {
    match (invoice.hold_secs, escrow) {
        (Some(_), Some(_)) => Err(Error::InvalidField {
            field: "escrow",
            detail: "a hold invoice is settled by its payee; pay it without escrow".into(),
        }),
        (Some(hold_secs), None) => Ok(Some(Waiting {
            kind: EscrowKind::Hold,
            on_timeout: Outcome::Refund,
            deadline_at_ms: now_ms.saturating_add(i64::from(hold_secs) * 1000),
        })),
        (None, Some(terms)) => Ok(Some(Waiting {
            kind: EscrowKind::Escrow,
            on_timeout: terms.on_timeout,
            deadline_at_ms: now_ms.saturating_add(terms.release_after_ms),
        })),
        (None, None) => Ok(None),
    }
}

/// A payment that will wait, as the flow that allowed it describes it.
pub struct Accept<'a> {
    pub payment_id: &'a str,
    pub payer: &'a Payer,
    pub purpose: &'a str,
    pub attribution: &'a crate::model::Attribution,
    pub invoice: &'a InvoiceRecord,
    pub waiting: Waiting,
    /// When the amount was reserved and counted in the budgets, if it was
    /// already (an approved hold moves on from its reservation): the
    /// escrow's `created_at_ms`, so that a refund gives the budget back in
    /// the window that counted it.
    pub reserved_at_ms: Option<i64>,
    pub now_ms: i64,
}

/// The invoice accepted, the money reserved on the payer's wallet, the
/// payment `held`; the payer learns no preimage yet.
pub fn accept(tx: &mut dyn Tx, a: Accept<'_>) -> Result<PaymentRecord, Error> {
    let amount = a.invoice.amount;
    if a.reserved_at_ms.is_none() {
        let mut balance = tx.balance(a.payer.account)?;
        ledger::reserve(a.payer.account, &mut balance, amount)?;
        tx.save_balance(a.payer.account, &balance)?;
    }
    let hash = &a.invoice.payment_hash;
    let (open, accepted) = (StoredInvoiceStatus::Open, StoredInvoiceStatus::Accepted);
    if !tx.move_invoice(hash, open, accepted, Some(&a.payer.agent_id), None)? {
        return Err(Error::InvoiceAlreadyPaid);
    }
    let payment = PaymentRecord {
        id: a.payment_id.to_owned(),
        agent_id: a.payer.agent_id.clone(),
        payment_hash: *hash,
        amount,
        fee: Msat::ZERO,
        status: PaymentStatus::Held,
        purpose: a.purpose.to_owned(),
        payee_agent_id: Some(a.invoice.agent_id.clone()),
        preimage: None,
        created_at_ms: a.now_ms,
        detail: None,
        refunded: Msat::ZERO,
        attribution: a.attribution.clone(),
    };
    tx.insert_payment(&payment, &a.payer.key_id, None)?;
    let escrow = EscrowRecord {
        payment_id: payment.id.clone(),
        kind: a.waiting.kind,
        payment_hash: *hash,
        payer_agent_id: a.payer.agent_id.clone(),
        payee_agent_id: a.invoice.agent_id.clone(),
        amount,
        status: EscrowStatus::Held,
        on_timeout: a.waiting.on_timeout,
        deadline_at_ms: a.waiting.deadline_at_ms,
        created_at_ms: a.reserved_at_ms.unwrap_or(a.now_ms),
        resolved_at_ms: None,
        resolved_by: None,
    };
    tx.insert_escrow(&escrow)?;
    events::emit(tx, &Event::PaymentEscrowed(escrow.clone()), a.now_ms)?;
    events::emit(tx, &Event::InvoiceAccepted(escrow), a.now_ms)?;
    Ok(payment)
}

/// The payee of a hold invoice settles it: the money moves to it and the
/// payer gets the preimage.
pub fn settle(tx: &mut dyn Tx, payee: &str, hash: &[u8; 32], now_ms: i64) -> Result<Ended, Error> {
    let escrow = tx.escrow_by_hash(hash)?.filter(|e| e.payee_agent_id == payee).ok_or(Error::NotFound("hold"))?;
    refuse_outside(&escrow)?;
    if escrow.kind != EscrowKind::Hold {
        return Err(Error::InvalidState(
            "an escrowed payment is released by its payer, not settled by its payee".into(),
        ));
    }
    // Past its deadline a hold is cancelled, whether or not the sweep came
    // by yet: settling then would race the sweep's decision.
    if escrow.status == EscrowStatus::Held && now_ms >= escrow.deadline_at_ms {
        return Err(Error::InvalidState("the hold is past its deadline: it is cancelled".into()));
    }
    finish(tx, escrow, Outcome::Release, payee, now_ms)
}

/// The payee cancels what waits for it (a hold it will not serve, or an
/// escrow it gives back): the payer is refunded in full.
pub fn cancel(tx: &mut dyn Tx, payee: &str, hash: &[u8; 32], now_ms: i64) -> Result<Ended, Error> {
    let escrow = tx.escrow_by_hash(hash)?.filter(|e| e.payee_agent_id == payee).ok_or(Error::NotFound("hold"))?;
    refuse_outside(&escrow)?;
    finish(tx, escrow, Outcome::Refund, payee, now_ms)
}

/// The payer of a held escrow releases it to the payee. A disputed one is
/// the operator's to decide: of a release, a dispute and the deadline,
/// exactly one ends up deciding.
pub fn release(tx: &mut dyn Tx, payer: &str, payment_id: &str, now_ms: i64) -> Result<Ended, Error> {
    let escrow = payers_escrow(tx, payer, payment_id)?;
    if escrow.status != EscrowStatus::Held {
        let status = escrow.status.as_str();
        return Err(Error::InvalidState(format!("only a held escrow is released by its payer; it is {status}")));
    }
    finish(tx, escrow, Outcome::Release, payer, now_ms)
}

/// The payer of an escrow disputes it before its deadline: it then waits
/// for the operator, whatever its `on_timeout`.
pub fn dispute(tx: &mut dyn Tx, payer: &str, payment_id: &str, now_ms: i64) -> Result<EscrowRecord, Error> {
    let mut escrow = payers_escrow(tx, payer, payment_id)?;
    if escrow.status != EscrowStatus::Held || now_ms >= escrow.deadline_at_ms {
        return Err(Error::InvalidState(format!(
            "only a held escrow before its deadline can be disputed; it is {}",
            { if escrow.status == EscrowStatus::Held { "past its deadline" } else { escrow.status.as_str() } }
        )));
    }
    escrow.status = EscrowStatus::Disputed;
    if !tx.update_escrow(&escrow, EscrowStatus::Held)? {
        return Err(Error::InvalidState("the escrow was decided meanwhile".into()));
    }
    tx.audit(&entry(&escrow, "escrow.disputed", payer, now_ms))?;
    events::emit(tx, &Event::PaymentDisputed(escrow.clone()), now_ms)?;
    Ok(escrow)
}

/// The operator decides a disputed escrow.
pub fn resolve(tx: &mut dyn Tx, payment_id: &str, outcome: Outcome, actor: &str, now_ms: i64) -> Result<Ended, Error> {
    let escrow = tx.escrow(payment_id)?.ok_or(Error::NotFound("escrow"))?;
    if escrow.status != EscrowStatus::Disputed {
        let status = escrow.status.as_str();
        return Err(Error::InvalidState(format!("only a disputed escrow is resolved by the operator; it is {status}")));
    }
    finish(tx, escrow, outcome, actor, now_ms)
}

/// Ends the held escrows past their deadline by their `on_timeout` rule, at
/// most `limit`; one that cannot be released now (the kill switch, or a
/// frozen payer) waits for the next sweep. Answers how many ended.
pub fn expire_due(tx: &mut dyn Tx, now_ms: i64, limit: u32) -> Result<u64, Error> {
    let mut ended = 0;
    for listed in tx.due_escrows(now_ms, limit)? {
        // Read again, locked where writers run concurrently: another may
        // have decided it since the list was read.
        let Some(escrow) = tx.escrow(&listed.payment_id)?.filter(|e| e.status == listed.status) else { continue };
        let outcome = escrow.on_timeout;
        match finish(tx, escrow, outcome, "system", now_ms) {
            Ok(_) => ended += 1,
            // Refused before anything was written: the rest go on.
            Err(Error::Denied(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ended)
}

/// A hold paid from outside is settled or cancelled at the backend first
/// (`payment::outside_hold`), never here: no agent's reservation backs it.
fn refuse_outside(escrow: &EscrowRecord) -> Result<(), Error> {
    if escrow.payer_agent_id == OUTSIDE_PAYER {
        return Err(Error::InvalidState(
            "paid from outside: settled or cancelled through the Lightning backend".into(),
        ));
    }
    Ok(())
}

fn payers_escrow(tx: &mut dyn Tx, payer: &str, payment_id: &str) -> Result<EscrowRecord, Error> {
    let escrow = tx.escrow(payment_id)?.filter(|e| e.payer_agent_id == payer).ok_or(Error::NotFound("escrow"))?;
    if escrow.kind != EscrowKind::Escrow {
        return Err(Error::InvalidState("a hold invoice is settled or cancelled by its payee".into()));
    }
    Ok(escrow)
}

/// How money that waited ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub escrow: EscrowRecord,
    pub payment: PaymentRecord,
}

/// Ends an open escrow, once: released, the money moves from the payer's
/// reservation to the payee and the invoice is paid; refunded, the
/// reservation and the budget it took are given back and the invoice is
/// cancelled. A release stops at the kill switch or a frozen payer (an
/// error, before anything is written).
fn finish(
    tx: &mut dyn Tx,
    mut escrow: EscrowRecord,
    outcome: Outcome,
    actor: &str,
    now_ms: i64,
) -> Result<Ended, Error> {
    if !escrow.status.is_open() {
        return Err(Error::InvalidState(format!("it was {} already", escrow.status.as_str())));
    }
    let mut chain = load_chain(tx, &escrow.payer_agent_id)?;
    if outcome == Outcome::Release
        && let Some(stopped) = stop(tx.halted()?, &chain)
    {
        return Err(Error::Denied(stopped));
    }
    let (invoice, payee_account) = tx.invoice(&escrow.payment_hash)?.ok_or(Error::NotFound("invoice"))?;
    let mut payment = tx.payment(&escrow.payment_id)?.ok_or(Error::NotFound("payment"))?;
    let payer_account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let from = escrow.status;
    escrow.status = match outcome {
        Outcome::Release => EscrowStatus::Released,
        Outcome::Refund => EscrowStatus::Refunded,
    };
    escrow.resolved_at_ms = Some(now_ms);
    escrow.resolved_by = Some(actor.to_owned());
    if !tx.update_escrow(&escrow, from)? {
        return Err(Error::InvalidState("it was decided meanwhile".into()));
    }
    let accepted = StoredInvoiceStatus::Accepted;
    match outcome {
        Outcome::Release => {
            let payer =
                Payer { agent_id: escrow.payer_agent_id.clone(), account: payer_account, key_id: String::new() };
            let transfer_id = pay_payee(tx, &payment.id, &payer, &invoice, payee_account, Reserved::Yes, now_ms)?;
            payment.status = PaymentStatus::Succeeded;
            payment.preimage = Some(invoice.preimage);
            tx.update_payment(&payment, Some(transfer_id))?;
            super::spend::count_payment(tx, &payment, &super::spend::agent_payee(&invoice.agent_id), now_ms)?;
            move_invoice(tx, &invoice, accepted, StoredInvoiceStatus::Paid, Some(now_ms))?;
            events::emit(tx, &Event::PaymentReleased(escrow.clone()), now_ms)?;
            let settled = settlement(&payment, &invoice, "");
            events::emit(tx, &Event::InvoicePaid(Paid::Internal(settled)), now_ms)?;
        }
        Outcome::Refund => {
            let mut balance = tx.balance(payer_account)?;
            ledger::release(&mut balance, escrow.amount)?;
            tx.save_balance(payer_account, &balance)?;
            uncount_spend(&mut chain, escrow.amount, escrow.created_at_ms, now_ms);
            save_policed(tx, &chain)?;
            payment.status = PaymentStatus::Refunded;
            payment.refunded = escrow.amount;
            tx.update_payment(&payment, None)?;
            move_invoice(tx, &invoice, accepted, StoredInvoiceStatus::Cancelled, None)?;
            let refunded = Refunded {
                payment_id: payment.id.clone(),
                payment_hash: escrow.payment_hash,
                amount: escrow.amount,
                refunded_total: escrow.amount,
                payer_agent_id: escrow.payer_agent_id.clone(),
                payee_agent_id: escrow.payee_agent_id.clone(),
                reason: refund_reason(&escrow, actor),
                refund_id: None,
            };
            events::emit(tx, &Event::PaymentRefunded(refunded), now_ms)?;
            events::emit(tx, &Event::InvoiceCancelled(escrow.clone()), now_ms)?;
        }
    }
    let action = if outcome == Outcome::Release { "escrow.released" } else { "escrow.refunded" };
    tx.audit(&entry(&escrow, action, actor, now_ms))?;
    Ok(Ended { escrow, payment })
}

fn move_invoice(
    tx: &mut dyn Tx,
    invoice: &InvoiceRecord,
    from: StoredInvoiceStatus,
    to: StoredInvoiceStatus,
    paid_at_ms: Option<i64>,
) -> Result<(), Error> {
    if !tx.move_invoice(&invoice.payment_hash, from, to, None, paid_at_ms)? {
        return Err(Error::Internal(format!("invoice of an open escrow was not {}", from.as_str())));
    }
    Ok(())
}

fn refund_reason(escrow: &EscrowRecord, actor: &str) -> String {
    match actor {
        "system" => format!("the {} passed its deadline", escrow.kind.as_str()),
        crate::model::OPERATOR => "the operator resolved the dispute for the payer".into(),
        _ => format!("cancelled by its payee {actor}"),
    }
}

fn entry(escrow: &EscrowRecord, action: &'static str, actor: &str, now_ms: i64) -> AuditEntry {
    AuditEntry {
        at_ms: now_ms,
        action,
        actor: actor.to_owned(),
        key_id: None,
        agent_id: Some(escrow.payer_agent_id.clone()),
        amount_msat: Some(escrow.amount.as_u64()),
        payee: Some(format!("agent:{}", escrow.payee_agent_id)),
        purpose: None,
        rule: Some(format!("{}:{}", escrow.kind.as_str(), outcome_str(escrow.on_timeout))),
        detail: Some(escrow.payment_id.clone()),
    }
}
