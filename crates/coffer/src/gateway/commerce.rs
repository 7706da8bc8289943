//! Trade between agents, as the edges call it: holds and escrows settled,
//! cancelled, released, disputed and resolved; refunds; metered sessions;
//! and the sweep that applies their deadlines. Each operation checks the
//! caller's scope and input, then makes one atomic store call into
//! `payment::{escrow, session, refund}`.

use super::{AgentKey, Gateway, Principal, invalid, parse_amount, parse_hash};
use crate::error::Error;
use crate::model::{
    COMMERCE_SWEEP_BATCH_MAX, ChargeRecord, ESCROW_SECS_MAX, EscrowRecord, EscrowStatus, EscrowTerms, Idempotency,
    NewSession, PageRequest, Payer, PaymentRecord, RefundRecord, SESSION_CHARGES_SHOWN_MAX, SESSION_SECS_MAX,
    SessionRecord,
};
use crate::payment::escrow::{self, Ended};
use crate::payment::{receipt, refund, session};
use crate::secrets;
use crate::store::Tx;
use coffer_client::{Outcome, Scope, SignedReceipt};
use coffer_core::Msat;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Escrows one listing shows at most.
pub const ESCROWS_LISTED_MAX: u32 = 200;
/// Sweep batches one step of the deadline sweep runs at most: a backlog
/// (after a long stop) drains over several steps.
const COMMERCE_SWEEP_BATCHES_PER_STEP_MAX: u32 = 8;
const _: () = assert!(COMMERCE_SWEEP_BATCHES_PER_STEP_MAX >= 1);
const _: () = assert!(ESCROWS_LISTED_MAX <= crate::model::PAGE_ROWS_MAX);

/// A payment as its payer or payee sees it: with the hold or escrow its
/// money waits (or waited) in, and its refunds.
#[derive(Clone, Debug)]
pub struct PaymentView {
    pub payment: PaymentRecord,
    pub escrow: Option<EscrowRecord>,
    pub refunds: Vec<RefundRecord>,
}

impl Gateway {
    /// The payee of a hold invoice settles it: credited now, and the payer
    /// sees the preimage.
    pub async fn settle_hold(&self, caller: &AgentKey, payment_hash_hex: &str) -> Result<Ended, Error> {
        caller.require(Scope::Receive)?;
        let hash = parse_hash(payment_hash_hex)?;
        if let Some(outside) = self.outside_hold(hash).await? {
            return self.settle_outside_hold(&caller.agent_id, outside).await;
        }
        let (payee, now_ms) = (caller.agent_id.clone(), self.now_ms());
        let ended = self.store.write(move |tx| escrow::settle(tx, &payee, &hash, now_ms)).await?;
        self.announce_request(&hash).await;
        Ok(ended)
    }

    /// The payee cancels a hold (or gives an escrow back): the payer is
    /// refunded in full.
    pub async fn cancel_hold(&self, caller: &AgentKey, payment_hash_hex: &str) -> Result<Ended, Error> {
        caller.require(Scope::Receive)?;
        let hash = parse_hash(payment_hash_hex)?;
        if let Some(outside) = self.outside_hold(hash).await? {
            return self.cancel_outside_hold(&caller.agent_id, outside).await;
        }
        let (payee, now_ms) = (caller.agent_id.clone(), self.now_ms());
        let ended = self.store.write(move |tx| escrow::cancel(tx, &payee, &hash, now_ms)).await?;
        self.announce_request(&hash).await;
        Ok(ended)
    }

    /// The payer releases its escrow to the payee.
    pub async fn release_escrow(&self, caller: &AgentKey, payment_id: &str) -> Result<Ended, Error> {
        caller.require(Scope::Spend)?;
        let (payer, id, now_ms) = (caller.agent_id.clone(), payment_id.to_owned(), self.now_ms());
        let ended = self.store.write(move |tx| escrow::release(tx, &payer, &id, now_ms)).await?;
        self.announce_request(&ended.escrow.payment_hash).await;
        Ok(ended)
    }

    /// The payer disputes its escrow: it waits for the operator.
    pub async fn dispute_escrow(&self, caller: &AgentKey, payment_id: &str) -> Result<EscrowRecord, Error> {
        caller.require(Scope::Spend)?;
        let (payer, id, now_ms) = (caller.agent_id.clone(), payment_id.to_owned(), self.now_ms());
        let disputed = self.store.write(move |tx| escrow::dispute(tx, &payer, &id, now_ms)).await?;
        self.announce_request(&disputed.payment_hash).await;
        Ok(disputed)
    }

    /// The operator decides a disputed escrow.
    pub async fn resolve_escrow(&self, payment_id: &str, outcome: Outcome) -> Result<Ended, Error> {
        let (id, now_ms) = (payment_id.to_owned(), self.now_ms());
        let operator = crate::model::OPERATOR;
        let ended = self.store.write(move |tx| escrow::resolve(tx, &id, outcome, operator, now_ms)).await?;
        self.announce_request(&ended.escrow.payment_hash).await;
        Ok(ended)
    }

    /// Holds and escrows: an agent's (as payer or payee), or for the
    /// operator any agent's (or all), newest first; in one status or any.
    pub async fn escrows(
        &self,
        caller: &Principal,
        agent_id: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<EscrowRecord>, Error> {
        let status = status
            .map(|s| {
                EscrowStatus::parse(s)
                    .map_err(|_| invalid("status", "one of held, disputed, released, refunded".into()))
            })
            .transpose()?;
        let agent_id = match caller {
            Principal::Agent(key) => Some(key.agent_id.clone()),
            Principal::Operator => agent_id.map(str::to_owned),
        };
        self.store.read(move |tx| tx.escrows(agent_id.as_deref(), status, ESCROWS_LISTED_MAX)).await
    }

    /// A payment its payer or its payee may see, with its hold or escrow
    /// and its refunds.
    pub async fn payment(&self, caller: &AgentKey, payment_id: &str) -> Result<PaymentView, Error> {
        let (id, agent) = (payment_id.to_owned(), caller.agent_id.clone());
        self.store
            .read(move |tx| {
                let payment = visible_payment(tx, &id, Some(&agent))?;
                let escrow = tx.escrow(&id)?;
                let refunds = if payment.refunded.is_zero() { Vec::new() } else { tx.refunds(&id)? };
                Ok(PaymentView { payment, escrow, refunds })
            })
            .await
    }

    /// The signed receipt of a settled payment, to its payer or its payee
    /// (who may see the payment) or the operator: `invalid-state` until it
    /// is settled. Derived from the records and signed with the node key
    /// on each call (deterministically: the same receipt each time).
    pub async fn payment_receipt(&self, caller: &Principal, payment_id: &str) -> Result<SignedReceipt, Error> {
        let (id, viewer) = (payment_id.to_owned(), viewer(caller));
        let (gateway, network) = (Arc::clone(&self.node_pubkey_hex), self.settings.network);
        // The receipt names the audit record of its decision: numbered first.
        self.store.sealed().await?;
        let unsigned = self
            .store
            .read(move |tx| {
                let payment = visible_payment(tx, &id, viewer.as_deref())?;
                receipt::for_payment(tx, &payment, &gateway, network)
            })
            .await?;
        receipt::sign(unsigned, |digest| self.node.sign_digest(digest))
    }

    /// The signed receipt of a session once closed or expired (what it
    /// charged in all), to its payer or payee or the operator.
    pub async fn session_receipt(&self, caller: &Principal, session_id: &str) -> Result<SignedReceipt, Error> {
        let (id, viewer) = (session_id.to_owned(), viewer(caller));
        let gateway = Arc::clone(&self.node_pubkey_hex);
        self.store.sealed().await?;
        let unsigned = self
            .store
            .read(move |tx| {
                let session = match &viewer {
                    Some(agent) => session::visible(tx, agent, &id)?,
                    None => tx.session(&id)?.ok_or(Error::NotFound("session"))?,
                };
                receipt::for_session(tx, &session, &gateway)
            })
            .await?;
        receipt::sign(unsigned, |digest| self.node.sign_digest(digest))
    }

    /// The payee gives (part of) a payment back to its payer.
    pub async fn refund(
        &self,
        caller: &AgentKey,
        payment_id: &str,
        amount_msat: u64,
        reason: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<RefundRecord, Error> {
        caller.require(Scope::Spend)?;
        let amount = parse_amount("amount_msat", amount_msat)?;
        let reason = checked_text("reason", reason)?;
        let request = format!("refund\0{payment_id}\0{amount_msat}\0{reason}");
        let idempotency = idempotency_key.map(|key| keyed(key, &request)).transpose()?;
        let (payee, id, now_ms) = (caller.agent_id.clone(), payment_id.to_owned(), self.now_ms());
        let refund_id = secrets::new_id("ref_");
        let refunded = self
            .store
            .write(move |tx| {
                let r = refund::Refund {
                    payee_agent_id: &payee,
                    payment_id: &id,
                    refund_id: refund_id.clone(),
                    amount,
                    reason: reason.clone(),
                    idempotency: idempotency.as_ref(),
                    now_ms,
                };
                refund::refund(tx, r)
            })
            .await;
        self.feed_breaker(&caller.agent_id, refunded).await
    }

    /// The payer opens a metered session with a payee of this gateway.
    pub async fn open_session(
        &self,
        caller: &AgentKey,
        payee: &str,
        max_msat: u64,
        expires_in_secs: u32,
        purpose: Option<&str>,
        attribution: crate::model::Attribution,
    ) -> Result<SessionRecord, Error> {
        caller.require(Scope::Spend)?;
        let max = parse_amount("max_msat", max_msat)?;
        if expires_in_secs == 0 || expires_in_secs > SESSION_SECS_MAX {
            return Err(invalid("expires_in_secs", format!("between 1 and {SESSION_SECS_MAX} seconds")));
        }
        let purpose = checked_text("purpose", purpose)?;
        let now_ms = self.now_ms();
        let new = NewSession {
            id: secrets::new_id("ses_"),
            payer: Payer { agent_id: caller.agent_id.clone(), account: caller.account, key_id: caller.key_id.clone() },
            payee_agent_id: payee.to_owned(),
            max,
            expires_at_ms: now_ms.saturating_add(i64::from(expires_in_secs) * 1000),
            purpose,
            attribution,
            node_pubkey_hex: Arc::clone(&self.node_pubkey_hex),
            sessions_open_max: self.settings.limits.sessions_open_per_agent,
            now_ms,
            terms: self.spend_terms(),
        };
        let opened = self.store.write(move |tx| session::open(tx, new.clone())).await;
        self.feed_breaker(&caller.agent_id, opened).await
    }

    /// The payee charges a session it is paid by.
    pub async fn charge_session(
        &self,
        caller: &AgentKey,
        session_id: &str,
        amount_msat: u64,
        memo: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<(SessionRecord, ChargeRecord), Error> {
        caller.require(Scope::Receive)?;
        let amount = parse_amount("amount_msat", amount_msat)?;
        let memo = checked_text("memo", memo)?;
        let request = format!("charge\0{session_id}\0{amount_msat}\0{memo}");
        let idempotency = idempotency_key.map(|key| keyed(key, &request)).transpose()?;
        let (payee, id, now_ms) = (caller.agent_id.clone(), session_id.to_owned(), self.now_ms());
        let charge_id = secrets::new_id("chg_");
        self.store
            .write(move |tx| {
                let c = session::Charge {
                    payee_agent_id: &payee,
                    session_id: &id,
                    charge_id: charge_id.clone(),
                    amount,
                    memo: memo.clone(),
                    idempotency: idempotency.as_ref(),
                    now_ms,
                };
                session::charge(tx, c)
            })
            .await
    }

    /// Its payer or payee closes a session; the remainder returns to the
    /// payer. Answers the session and what returned.
    pub async fn close_session(&self, caller: &AgentKey, session_id: &str) -> Result<(SessionRecord, Msat), Error> {
        caller.require(Scope::Receive)?;
        let (agent, id, now_ms) = (caller.agent_id.clone(), session_id.to_owned(), self.now_ms());
        self.store.write(move |tx| session::close(tx, &agent, &id, now_ms)).await
    }

    /// A session the caller pays or is paid by, with its newest charges
    /// (oldest first).
    pub async fn session(
        &self,
        caller: &AgentKey,
        session_id: &str,
    ) -> Result<(SessionRecord, Vec<ChargeRecord>), Error> {
        let (agent, id) = (caller.agent_id.clone(), session_id.to_owned());
        self.store
            .read(move |tx| {
                let session = session::visible(tx, &agent, &id)?;
                let charges = tx.charges(&id, SESSION_CHARGES_SHOWN_MAX)?;
                Ok((session, charges))
            })
            .await
    }

    /// The sessions the caller pays or is paid by, newest first.
    pub async fn sessions(
        &self,
        caller: &AgentKey,
        page: PageRequest,
    ) -> Result<(Vec<SessionRecord>, Option<i64>), Error> {
        let agent = caller.agent_id.clone();
        self.store.read(move |tx| tx.sessions(&agent, page)).await
    }

    /// The sessions an agent pays or is paid by, newest first: for the
    /// operator.
    pub async fn agent_sessions(
        &self,
        agent_id: &str,
        page: PageRequest,
    ) -> Result<(Vec<SessionRecord>, Option<i64>), Error> {
        let agent = self.agent(agent_id).await?.id;
        self.store.read(move |tx| tx.sessions(&agent, page)).await
    }

    /// Applies the deadlines: held escrows and holds past theirs end by
    /// their rule (a hold paid from outside is cancelled at the backend
    /// first), sessions past their expiry close. Run by a background
    /// task on every instance (each ends once: the store's conditional
    /// updates); writes only when one is due. Answers how many ended.
    pub async fn expire_commerce(&self) -> Result<u64, Error> {
        // Holds paid from outside end at the backend first.
        let mut ended = self.expire_outside_holds().await?;
        for _ in 0..COMMERCE_SWEEP_BATCHES_PER_STEP_MAX {
            let now = self.now_ms();
            let due = self.store.read(move |tx| Ok((tx.escrows_due(now)?, tx.sessions_due(now)?))).await?;
            if due == (false, false) {
                break;
            }
            // What the sweep may end, for the rooms' watchers (read only
            // when someone watches).
            let announced = if due.0 && self.live.watched() {
                self.store.read(move |tx| tx.due_escrows(now, COMMERCE_SWEEP_BATCH_MAX)).await?
            } else {
                Vec::new()
            };
            let swept = self
                .store
                .write(move |tx| {
                    let escrows = escrow::expire_due(tx, now, COMMERCE_SWEEP_BATCH_MAX)?;
                    let sessions = session::expire_due(tx, now, COMMERCE_SWEEP_BATCH_MAX)?;
                    Ok((escrows, sessions))
                })
                .await?;
            ended += swept.0 + swept.1;
            for escrow in &announced {
                self.announce_request(&escrow.payment_hash).await;
            }
            // Done when neither filled a batch (escrows that could not be
            // released now stay due, and must not spin this loop).
            if swept.0 < u64::from(COMMERCE_SWEEP_BATCH_MAX) && swept.1 < u64::from(COMMERCE_SWEEP_BATCH_MAX) {
                break;
            }
        }
        Ok(ended)
    }
}

/// A payment `viewer` may see: its payer's or its payee's; any, for the
/// operator (`None`). Another agent's is not found, like a missing one.
fn visible_payment(tx: &mut dyn Tx, id: &str, viewer: Option<&str>) -> Result<PaymentRecord, Error> {
    tx.payment(id)?
        .filter(|p| viewer.is_none_or(|agent| p.agent_id == agent || p.payee_agent_id.as_deref() == Some(agent)))
        .ok_or(Error::NotFound("payment"))
}

/// The agent a caller sees as, or `None` for the operator (who sees all).
fn viewer(caller: &Principal) -> Option<String> {
    match caller {
        Principal::Agent(key) => Some(key.agent_id.clone()),
        Principal::Operator => None,
    }
}

/// Escrow terms from the request's, checked.
pub(super) fn escrow_terms(terms: &coffer_client::EscrowTerms) -> Result<EscrowTerms, Error> {
    if terms.release_after_secs == 0 || terms.release_after_secs > ESCROW_SECS_MAX {
        return Err(invalid("escrow.release_after_secs", format!("between 1 and {ESCROW_SECS_MAX} seconds")));
    }
    Ok(EscrowTerms { release_after_ms: i64::from(terms.release_after_secs) * 1000, on_timeout: terms.on_timeout })
}

/// A reason, memo or purpose: at most [`super::PURPOSE_LEN_MAX_BYTES`],
/// text a person can read.
fn checked_text(field: &'static str, text: Option<&str>) -> Result<String, Error> {
    let text = text.unwrap_or("");
    if text.len() > super::PURPOSE_LEN_MAX_BYTES {
        return Err(invalid(field, format!("at most {} bytes", super::PURPOSE_LEN_MAX_BYTES)));
    }
    super::text::check(field, text, super::text::Lines::Multi)?;
    Ok(text.to_owned())
}

/// An idempotency key for a charge or refund: the request's digest tells a
/// retry from another request (and from a payment under the same key).
fn keyed(key: &str, request: &str) -> Result<Idempotency, Error> {
    super::check_idempotency_key(key)?;
    Ok(Idempotency { key: key.to_owned(), request_digest: Sha256::digest(request.as_bytes()).into() })
}
