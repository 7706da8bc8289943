//! A hold invoice of an agent paid from outside the gateway, through the
//! Lightning backend's node: the store's side, one transaction each. The
//! backend calls around them are `gateway::outside_holds`'.
//!
//! The payer is on the Lightning Network, not an agent: nothing is reserved
//! in the ledger, the money waits at the backend's node (the payer's HTLCs
//! are locked in, `ACCEPTED`) until coffer settles the invoice there with
//! its preimage or cancels it. The escrow row names the payer
//! [`OUTSIDE_PAYER`] and keeps the deadline (accepted + `hold_secs`).
//!
//! - [`accept`]: the deposit watcher saw the backend hold the payment. The
//!   invoice moves `open` -> `accepted` (the same conditional update an
//!   agent's payment of it makes, so of an outside payment and an inside one
//!   exactly one wins), and the escrow row is written, `held`.
//! - [`settled`]: only after the backend settled the invoice (its answer to
//!   the settle call, or a lookup reading `SETTLED`): the escrow `held` ->
//!   `released` and, in the same transaction, the payee credited from
//!   `outside` as a deposit and the invoice `paid`. The conditional update
//!   is the guard: a second report of the same settlement credits nothing.
//! - [`cancelled`]: only after the backend cancelled it: `held` ->
//!   `refunded`, the invoice `cancelled`; nothing moves in the ledger.

use super::escrow::Ended;
use crate::error::Error;
use crate::events::kind::{Deposit, Paid};
use crate::events::{self, Event};
use crate::model::{
    AuditEntry, EscrowKind, EscrowRecord, EscrowStatus, InvoiceRecord, OUTSIDE_PAYER, PaymentRecord,
    StoredInvoiceStatus,
};
use crate::store::Tx;
use coffer_client::{Outcome, PaymentStatus};
use coffer_core::ledger::{self, Transfer};
use coffer_core::{AccountId, Msat};

/// What the payment of an outside hold is called (its escrow's
/// `payment_id`): one per invoice, so the same acceptance reported twice
/// cannot write two rows.
pub fn payment_id(payment_hash: &[u8; 32]) -> String {
    format!("out_{}", hex::encode(payment_hash))
}

/// What became of an outside payment the backend holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Accepted now: the hold waits for its payee.
    Accepted(EscrowRecord),
    /// Accepted already (another instance's watcher came first).
    Already,
    /// The invoice is not open any more (an agent paid it inside first, or
    /// it expired): the caller cancels the backend's hold, so the outside
    /// payer gets its money back.
    Lost,
}

/// The backend holds a payment of `held` for a hold invoice of this
/// gateway: the invoice becomes `accepted` and waits for its payee until
/// `now_ms + hold_secs`.
pub fn accept(tx: &mut dyn Tx, payment_hash: &[u8; 32], held: Msat, now_ms: i64) -> Result<Acceptance, Error> {
    let Some((invoice, _)) = tx.invoice(payment_hash)? else { return Ok(Acceptance::Lost) };
    let (Some(hold_secs), Some(_)) = (invoice.hold_secs, invoice.backend.as_deref()) else {
        return Err(Error::Internal("an outside hold of an invoice that is not a backend's hold invoice".into()));
    };
    if held < invoice.amount {
        return Err(Error::Backend(format!(
            "the backend holds {} msat for an invoice of {} msat",
            held.as_u64(),
            invoice.amount.as_u64()
        )));
    }
    let (open, accepted) = (StoredInvoiceStatus::Open, StoredInvoiceStatus::Accepted);
    if !tx.move_invoice(payment_hash, open, accepted, Some(OUTSIDE_PAYER), None)? {
        return Ok(if find(tx, payment_hash)?.is_some() { Acceptance::Already } else { Acceptance::Lost });
    }
    let escrow = EscrowRecord {
        payment_id: payment_id(payment_hash),
        kind: EscrowKind::Hold,
        payment_hash: *payment_hash,
        payer_agent_id: OUTSIDE_PAYER.to_owned(),
        payee_agent_id: invoice.agent_id.clone(),
        amount: invoice.amount,
        status: EscrowStatus::Held,
        on_timeout: Outcome::Refund,
        deadline_at_ms: now_ms.saturating_add(i64::from(hold_secs) * 1000),
        created_at_ms: now_ms,
        resolved_at_ms: None,
        resolved_by: None,
    };
    tx.insert_escrow(&escrow)?;
    tx.audit(&entry(&escrow, "hold.accepted", "system", now_ms))?;
    events::emit(tx, &Event::InvoiceAccepted(escrow.clone()), now_ms)?;
    Ok(Acceptance::Accepted(escrow))
}

/// The hold of `payment_hash` paid from outside, if there is one.
pub fn find(tx: &mut dyn Tx, payment_hash: &[u8; 32]) -> Result<Option<EscrowRecord>, Error> {
    Ok(tx.escrow_by_hash(payment_hash)?.filter(|e| e.payer_agent_id == OUTSIDE_PAYER))
}

/// The backend settled the invoice (its word, never coffer's wish): the
/// payee is credited from outside, once. Reported again, it answers how it
/// ended and changes nothing.
pub fn settled(tx: &mut dyn Tx, payment_hash: &[u8; 32], actor: &str, now_ms: i64) -> Result<Ended, Error> {
    let mut escrow = find(tx, payment_hash)?.ok_or(Error::NotFound("hold"))?;
    let (invoice, payee_account) = tx.invoice(payment_hash)?.ok_or(Error::NotFound("invoice"))?;
    match escrow.status {
        EscrowStatus::Released => return Ok(ended(escrow, &invoice)),
        EscrowStatus::Refunded => {
            return Err(Error::Internal(
                "the backend settled a hold coffer recorded as cancelled: the backend contradicts itself".into(),
            ));
        }
        EscrowStatus::Held | EscrowStatus::Disputed => {}
    }
    let from = escrow.status;
    escrow.status = EscrowStatus::Released;
    escrow.resolved_at_ms = Some(now_ms);
    escrow.resolved_by = Some(actor.to_owned());
    if !tx.update_escrow(&escrow, from)? {
        return Err(Error::InvalidState("it was decided meanwhile".into()));
    }
    move_invoice(tx, &invoice, StoredInvoiceStatus::Paid, Some(now_ms))?;
    let transfer = Transfer { debit: AccountId::OUTSIDE, credit: payee_account, amount: escrow.amount };
    let (mut outside, mut credit) = (tx.balance(AccountId::OUTSIDE)?, tx.balance(payee_account)?);
    ledger::post(transfer, &mut outside, &mut credit)?;
    tx.save_balance(AccountId::OUTSIDE, &outside)?;
    tx.save_balance(payee_account, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "deposit", now_ms)?;
    tx.audit(&entry(&escrow, "hold.settled", actor, now_ms))?;
    let deposit =
        Deposit { payment_hash: *payment_hash, amount: escrow.amount, payee: invoice.agent_id.clone(), transfer_id };
    events::emit(tx, &Event::InvoicePaid(Paid::FromOutside(deposit)), now_ms)?;
    Ok(ended(escrow, &invoice))
}

/// The backend cancelled the invoice: the outside payer has its money
/// back; nothing moves here. Reported again, it changes nothing.
pub fn cancelled(tx: &mut dyn Tx, payment_hash: &[u8; 32], actor: &str, now_ms: i64) -> Result<Ended, Error> {
    let mut escrow = find(tx, payment_hash)?.ok_or(Error::NotFound("hold"))?;
    let (invoice, _) = tx.invoice(payment_hash)?.ok_or(Error::NotFound("invoice"))?;
    match escrow.status {
        EscrowStatus::Refunded => return Ok(ended(escrow, &invoice)),
        EscrowStatus::Released => {
            return Err(Error::Internal(
                "the backend cancelled a hold coffer recorded as settled: the backend contradicts itself".into(),
            ));
        }
        EscrowStatus::Held | EscrowStatus::Disputed => {}
    }
    let from = escrow.status;
    escrow.status = EscrowStatus::Refunded;
    escrow.resolved_at_ms = Some(now_ms);
    escrow.resolved_by = Some(actor.to_owned());
    if !tx.update_escrow(&escrow, from)? {
        return Err(Error::InvalidState("it was decided meanwhile".into()));
    }
    move_invoice(tx, &invoice, StoredInvoiceStatus::Cancelled, None)?;
    tx.audit(&entry(&escrow, "hold.cancelled", actor, now_ms))?;
    events::emit(tx, &Event::InvoiceCancelled(escrow.clone()), now_ms)?;
    Ok(ended(escrow, &invoice))
}

/// How an outside hold stands, as the payment the settle and cancel routes
/// answer with: the payer `outside`, no fee, the preimage once settled.
pub fn ended(escrow: EscrowRecord, invoice: &InvoiceRecord) -> Ended {
    let (status, preimage, refunded) = match escrow.status {
        EscrowStatus::Released => (PaymentStatus::Succeeded, Some(invoice.preimage), Msat::ZERO),
        EscrowStatus::Refunded => (PaymentStatus::Refunded, None, escrow.amount),
        EscrowStatus::Held | EscrowStatus::Disputed => (PaymentStatus::Held, None, Msat::ZERO),
    };
    let payment = PaymentRecord {
        id: escrow.payment_id.clone(),
        agent_id: OUTSIDE_PAYER.to_owned(),
        payment_hash: escrow.payment_hash,
        amount: escrow.amount,
        fee: Msat::ZERO,
        status,
        purpose: "paid from outside, through the Lightning backend".into(),
        payee_agent_id: Some(escrow.payee_agent_id.clone()),
        preimage,
        created_at_ms: escrow.created_at_ms,
        detail: None,
        refunded,
        attribution: crate::model::Attribution::default(),
    };
    Ended { escrow, payment }
}

fn move_invoice(
    tx: &mut dyn Tx,
    invoice: &InvoiceRecord,
    to: StoredInvoiceStatus,
    paid_at_ms: Option<i64>,
) -> Result<(), Error> {
    let accepted = StoredInvoiceStatus::Accepted;
    if !tx.move_invoice(&invoice.payment_hash, accepted, to, None, paid_at_ms)? {
        return Err(Error::Internal("the invoice of an open outside hold was not accepted".into()));
    }
    Ok(())
}

fn entry(escrow: &EscrowRecord, action: &'static str, actor: &str, now_ms: i64) -> AuditEntry {
    AuditEntry {
        at_ms: now_ms,
        action,
        actor: actor.to_owned(),
        key_id: None,
        agent_id: Some(escrow.payee_agent_id.clone()),
        amount_msat: Some(escrow.amount.as_u64()),
        payee: Some(format!("agent:{}", escrow.payee_agent_id)),
        purpose: None,
        rule: Some(format!("hold:{OUTSIDE_PAYER}")),
        detail: Some(hex::encode(escrow.payment_hash)),
    }
}
