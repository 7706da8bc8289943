//! Metered sessions: the payer authorises a maximum for one payee, the
//! payee charges what it used, the rest returns to the payer.
//!
//! Opening reserves `max` on the payer's wallet and counts it, whole,
//! against every budget of the payer's chain (the constitution decides on
//! the maximum, once, as on a payment of that size). Each charge moves part
//! of the reservation to the payee, never past what remains. Closing or
//! expiry gives the remainder back, and with it the budget it took: that
//! money never reached the payee. Charges are not counted again: they were
//! counted when the session opened.

use super::chain::{
    earlier_target, load_chain, observe_denial, observe_payment, save_policed, trip_if_needed, uncount_spend,
};
use super::decision::{Verdict, decide, stop};
use super::warning::count_spend;
use crate::error::Error;
use crate::events::{self, Event};
use crate::model::{
    AuditEntry, ChargeRecord, Denial, Idempotency, NewSession, SESSION_CHARGES_MAX, SessionRecord, SessionStatus,
};
use crate::store::Tx;
use coffer_core::policy::{Attempt, Payee};
use coffer_core::{Msat, Transfer, ledger};

/// Opens a session, if the payer's constitution allows a payment of `max`
/// to the payee now.
pub fn open(tx: &mut dyn Tx, new: NewSession) -> Result<SessionRecord, Error> {
    let payee = tx.agent(&new.payee_agent_id)?.ok_or(Error::NotFound("agent"))?;
    if payee.id == new.payer.agent_id {
        return Err(Error::SelfPayment);
    }
    crate::quota::check_session(tx, new.sessions_open_max, &new.payer.agent_id, new.now_ms)?;
    let mut chain = load_chain(tx, &new.payer.agent_id)?;
    let available = tx.balance(new.payer.account)?.available();
    let attempt = Attempt {
        amount: new.max,
        fee_limit: Msat::ZERO,
        payee: Payee {
            agent_id: Some(payee.id.clone()),
            node_pubkey_hex: Some(new.node_pubkey_hex.to_string()),
            domain: None,
        },
    };
    let payee_name = format!("agent:{}", payee.id);
    let denial = match decide(tx.halted()?, &mut chain, &new.terms.fiat, available, &attempt, new.now_ms) {
        Verdict::Allow => None,
        Verdict::Deny(denial) => Some(denial),
        // A session is used at once by its payee: it cannot wait for a
        // person. The operator raises approval_above_msat, or the payer
        // opens a smaller one.
        Verdict::Hold => Some(Denial {
            code: "approval-required",
            message: "a session of this maximum would need a person's approval first; open a smaller one".into(),
            remaining: None,
            available: None,
            needed: None,
        }),
    };
    if let Some(denial) = denial {
        tx.audit(&AuditEntry {
            detail: Some(denial.message.clone()),
            ..entry(&new, &payee_name, "session.denied", denial.code)
        })?;
        observe_denial(tx, &mut chain, denial.code, new.now_ms)?;
        return Err(Error::Denied(denial));
    }
    let mut balance = tx.balance(new.payer.account)?;
    ledger::reserve(new.payer.account, &mut balance, new.max)?;
    tx.save_balance(new.payer.account, &balance)?;
    count_spend(tx, &mut chain, new.max, &new.terms.warnings, new.now_ms)?;
    observe_payment(&mut chain, &payee_name, new.max, new.now_ms);
    save_policed(tx, &chain)?;
    trip_if_needed(tx, &mut chain, new.now_ms)?;
    let session = SessionRecord {
        id: new.id.clone(),
        payer_agent_id: new.payer.agent_id.clone(),
        payee_agent_id: payee.id,
        max: new.max,
        charged: Msat::ZERO,
        charges: 0,
        status: SessionStatus::Open,
        purpose: new.purpose.clone(),
        created_at_ms: new.now_ms,
        expires_at_ms: new.expires_at_ms,
        closed_at_ms: None,
        closed_by: None,
        attribution: new.attribution.clone().or_task(chain.first().and_then(|payer| payer.task.as_deref())),
    };
    tx.insert_session(&session)?;
    tx.audit(&AuditEntry {
        detail: Some(session.id.clone()),
        ..entry(&new, &payee_name, "session.opened", "allowed")
    })?;
    for agent_id in [&session.payer_agent_id, &session.payee_agent_id] {
        let opened = Event::SessionOpened { agent_id: agent_id.clone(), session: session.clone() };
        events::emit(tx, &opened, new.now_ms)?;
    }
    Ok(session)
}

fn entry(new: &NewSession, payee: &str, action: &'static str, rule: &str) -> AuditEntry {
    AuditEntry {
        at_ms: new.now_ms,
        action,
        actor: new.payer.agent_id.clone(),
        key_id: Some(new.payer.key_id.clone()),
        agent_id: Some(new.payer.agent_id.clone()),
        amount_msat: Some(new.max.as_u64()),
        payee: Some(payee.to_owned()),
        purpose: Some(new.purpose.clone()),
        rule: Some(rule.to_owned()),
        detail: None,
    }
}

/// A charge the payee asks for.
pub struct Charge<'a> {
    pub payee_agent_id: &'a str,
    pub session_id: &'a str,
    pub charge_id: String,
    pub amount: Msat,
    pub memo: String,
    pub idempotency: Option<&'a Idempotency>,
    pub now_ms: i64,
}

/// The payee charges `amount`: it moves from the payer's reservation to
/// the payee, if the session is open and that much remains. A retry with
/// the same idempotency key gets the first answer.
pub fn charge(tx: &mut dyn Tx, c: Charge<'_>) -> Result<(SessionRecord, ChargeRecord), Error> {
    if let Some(earlier) = replay(tx, &c)? {
        return Ok(earlier);
    }
    let mut session =
        tx.session(c.session_id)?.filter(|s| s.payee_agent_id == c.payee_agent_id).ok_or(Error::NotFound("session"))?;
    if session.status != SessionStatus::Open || c.now_ms >= session.expires_at_ms {
        return Err(Error::InvalidState(format!("the session is {}", ended_status(&session, c.now_ms))));
    }
    if session.charges >= SESSION_CHARGES_MAX {
        return Err(Error::InvalidState(format!("a session takes at most {SESSION_CHARGES_MAX} charges")));
    }
    let remaining = session.remaining();
    if c.amount > remaining {
        return Err(Error::SessionExhausted { remaining, needed: c.amount });
    }
    // The payer's money leaves its wallet: not past the kill switch or a
    // freeze.
    let chain = load_chain(tx, &session.payer_agent_id)?;
    if let Some(stopped) = stop(tx.halted()?, &chain) {
        return Err(Error::Denied(stopped));
    }
    let payer_account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    let payee_account = tx.agent(&session.payee_agent_id)?.ok_or(Error::NotFound("agent"))?.account;
    let transfer = Transfer { debit: payer_account, credit: payee_account, amount: c.amount };
    let (mut debit, mut credit) = (tx.balance(payer_account)?, tx.balance(payee_account)?);
    ledger::release(&mut debit, c.amount)?;
    ledger::post(transfer, &mut debit, &mut credit)?;
    tx.save_balance(payer_account, &debit)?;
    tx.save_balance(payee_account, &credit)?;
    let transfer_id = tx.insert_transfer(&transfer, "session", c.now_ms)?;
    session.charged = session.charged.checked_add(c.amount).map_err(coffer_core::LedgerError::from)?;
    session.charges += 1;
    if !tx.update_session(&session, SessionStatus::Open)? {
        return Err(Error::Internal(format!("open session {} was not open", session.id)));
    }
    let charge = ChargeRecord {
        id: c.charge_id,
        session_id: session.id.clone(),
        amount: c.amount,
        memo: c.memo,
        created_at_ms: c.now_ms,
    };
    tx.insert_charge(&charge, transfer_id)?;
    let payee = super::spend::agent_payee(&session.payee_agent_id);
    super::spend::count(tx, &session.payer_agent_id, &payee, &session.attribution, c.amount, Msat::ZERO, c.now_ms)?;
    if let Some(idem) = c.idempotency {
        tx.insert_idempotency(c.payee_agent_id, idem, &charge.id, c.now_ms)?;
    }
    tx.audit(&AuditEntry {
        at_ms: c.now_ms,
        action: "session.charged",
        actor: c.payee_agent_id.to_owned(),
        key_id: None,
        agent_id: Some(session.payer_agent_id.clone()),
        amount_msat: Some(c.amount.as_u64()),
        payee: Some(format!("agent:{}", session.payee_agent_id)),
        purpose: Some(charge.memo.clone()),
        rule: Some(session.id.clone()),
        detail: Some(charge.id.clone()),
    })?;
    let charged = Event::SessionCharged { session: session.clone(), charge: charge.clone() };
    events::emit(tx, &charged, c.now_ms)?;
    Ok((session, charge))
}

fn replay(tx: &mut dyn Tx, c: &Charge<'_>) -> Result<Option<(SessionRecord, ChargeRecord)>, Error> {
    let Some(target) = earlier_target(tx, c.payee_agent_id, c.idempotency)? else { return Ok(None) };
    let missing = || Error::Internal(format!("idempotency key names a missing charge {target}"));
    let charge = tx.charge(&target)?.ok_or_else(missing)?;
    let session = tx.session(&charge.session_id)?.ok_or_else(missing)?;
    Ok(Some((session, charge)))
}

fn ended_status(session: &SessionRecord, now_ms: i64) -> &'static str {
    match session.status {
        SessionStatus::Open if now_ms >= session.expires_at_ms => "expired",
        status => status.as_str(),
    }
}

/// The payer or the payee closes an open session: the remainder returns to
/// the payer.
pub fn close(tx: &mut dyn Tx, caller: &str, id: &str, now_ms: i64) -> Result<(SessionRecord, Msat), Error> {
    let session = visible(tx, caller, id)?;
    if session.status != SessionStatus::Open {
        return Err(Error::InvalidState(format!("the session is {} already", session.status.as_str())));
    }
    end(tx, session, SessionStatus::Closed, caller, now_ms)
}

/// A session the caller pays or is paid by.
pub fn visible(tx: &mut dyn Tx, caller: &str, id: &str) -> Result<SessionRecord, Error> {
    tx.session(id)?
        .filter(|s| s.payer_agent_id == caller || s.payee_agent_id == caller)
        .ok_or(Error::NotFound("session"))
}

/// Closes the open sessions past their expiry, at most `limit`, and
/// answers how many.
pub fn expire_due(tx: &mut dyn Tx, now_ms: i64, limit: u32) -> Result<u64, Error> {
    let mut count = 0;
    for listed in tx.due_sessions(now_ms, limit)? {
        // Read again, locked where writers run concurrently: it may have
        // been charged or closed since the list was read.
        let Some(session) = tx.session(&listed.id)?.filter(|s| s.status == SessionStatus::Open) else { continue };
        end(tx, session, SessionStatus::Expired, "system", now_ms)?;
        count += 1;
    }
    Ok(count)
}

/// Gives the remainder back to the payer, with the budget it took, and
/// records how the session ended.
fn end(
    tx: &mut dyn Tx,
    mut session: SessionRecord,
    status: SessionStatus,
    actor: &str,
    now_ms: i64,
) -> Result<(SessionRecord, Msat), Error> {
    let returned = session.remaining();
    let mut chain = load_chain(tx, &session.payer_agent_id)?;
    let payer_account = chain.first().map(|s| s.account).ok_or(Error::NotFound("agent"))?;
    if !returned.is_zero() {
        let mut balance = tx.balance(payer_account)?;
        ledger::release(&mut balance, returned)?;
        tx.save_balance(payer_account, &balance)?;
        uncount_spend(&mut chain, returned, session.created_at_ms, now_ms);
        save_policed(tx, &chain)?;
    }
    session.status = status;
    session.closed_at_ms = Some(now_ms);
    session.closed_by = Some(actor.to_owned());
    if !tx.update_session(&session, SessionStatus::Open)? {
        return Err(Error::InvalidState("the session was closed meanwhile".into()));
    }
    tx.audit(&AuditEntry {
        at_ms: now_ms,
        action: if status == SessionStatus::Expired { "session.expired" } else { "session.closed" },
        actor: actor.to_owned(),
        key_id: None,
        agent_id: Some(session.payer_agent_id.clone()),
        amount_msat: Some(session.charged.as_u64()),
        payee: Some(format!("agent:{}", session.payee_agent_id)),
        purpose: None,
        rule: Some(session.id.clone()),
        detail: Some(format!("charged {} msat, returned {} msat", session.charged.as_u64(), returned.as_u64())),
    })?;
    for agent_id in [&session.payer_agent_id, &session.payee_agent_id] {
        let closed = Event::SessionClosed { agent_id: agent_id.clone(), session: session.clone(), returned };
        events::emit(tx, &closed, now_ms)?;
    }
    Ok((session, returned))
}
