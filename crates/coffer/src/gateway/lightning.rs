//! The gateway's side of the Lightning backend: invoices its node makes,
//! deposits, payments out, and the background work that finishes them.
//!
//! Never a lost or doubled sat:
//! - a payment out is reserved and recorded as pending before the backend
//!   is called (`payment::outside::begin`); what the call answers finishes
//!   it; an error or a timeout leaves it pending, with the error as its
//!   detail, and only the backend's word that it failed releases the reserve;
//! - the resolver asks the backend about every pending payment at start,
//!   before the gateway serves, and then every few seconds; it never sends
//!   a payment again (a payment hash has at most one live payment);
//! - an invoice paid from outside is credited once: the open -> paid update
//!   in the same transaction as the credit is the guard.

use super::ops;
use super::{AgentKey, Gateway, PayOutcome, Principal};
use crate::error::Error;
use crate::lightning::{FundingSource, InvoiceState, PayResult, default_fee_limit};
use crate::model::{
    ApprovalRecord, BeginExternal, ExternalOutcome, ExternalStart, Idempotency, InvoiceRecord, PayAttempt, Payer,
    PaymentRecord, TREASURY_PAYEE,
};
use crate::payment::bolt11::OutsideInvoice;
use crate::payment::outside;
use crate::secrets;
use bitcoin::hashes::{Hash, sha256};
use coffer_client::{PaymentStatus, Scope};
use coffer_core::Msat;
use std::sync::Arc;

/// Pending payments asked about per round.
pub const RESOLVE_BATCH_MAX: u32 = 64;
/// Watched invoices asked about per round.
pub const DEPOSIT_BATCH_MAX: u32 = 64;
/// An invoice is still watched this long after it expired: a payment that
/// arrived just in time may be reported late.
pub(super) const WATCH_AFTER_EXPIRY_MS: i64 = 10 * 60 * 1000;
/// A payment the backend has no record of is failed only after this many
/// backend timeouts: until then the call may still be on its way.
const NOT_FOUND_GRACE_TIMEOUTS: i64 = 2;

impl Gateway {
    /// The backend's name: `dev` without one.
    pub fn lightning_name(&self) -> &'static str {
        self.funding.as_ref().map_or("dev", |f| f.name())
    }

    /// Whether the Lightning backend answers (asked for its balance) within
    /// `limit`: `None` without one (dev mode), else why not.
    pub(crate) async fn backend_reachable(&self, limit: std::time::Duration) -> Option<Result<(), String>> {
        let funding = self.funding.as_ref()?;
        Some(match tokio::time::timeout(limit, funding.balance()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the Lightning backend ({}) did not answer: {e}", funding.name())),
            Err(_) => Err(format!("the Lightning backend ({}) did not answer within {limit:?}", funding.name())),
        })
    }

    /// Asks the backend's node for the invoice, keeping coffer's own record
    /// (agent, memo, expiry) around it.
    pub(super) async fn backend_invoice(
        &self,
        funding: &dyn FundingSource,
        local: InvoiceRecord,
    ) -> Result<InvoiceRecord, Error> {
        let expiry_secs = u32::try_from((local.expires_at_ms - local.created_at_ms) / 1000)
            .map_err(|_| Error::Internal("invoice expiry out of range".into()))?;
        if funding.name() == "lnbits" && !local.amount.as_u64().is_multiple_of(1000) {
            return Err(Error::InvalidAmount {
                field: "amount_msat",
                detail: "the LNbits backend makes invoices of whole satoshis only (a multiple of 1000 msat)".into(),
            });
        }
        let created = funding
            .create_invoice(local.amount, &local.memo, expiry_secs, local.preimage)
            .await
            .map_err(|e| Error::Backend(format!("creating the invoice: {e}")))?;
        if sha256::Hash::hash(&created.preimage).to_byte_array() != created.payment_hash {
            return Err(Error::Backend("the invoice's preimage does not match its payment hash".into()));
        }
        let parsed = crate::payment::bolt11::ParsedInvoice::parse(&created.bolt11, self.settings.network)
            .map_err(|e| Error::Backend(format!("the backend's invoice: {e}")))?;
        if parsed.payment_hash != created.payment_hash || parsed.amount != Some(local.amount) {
            return Err(Error::Backend("the backend's invoice is not the one asked for".into()));
        }
        Ok(InvoiceRecord {
            payment_hash: created.payment_hash,
            bolt11: parsed.bolt11,
            preimage: created.preimage,
            backend: Some(funding.name().to_owned()),
            ..local
        })
    }

    /// An invoice payable from the Lightning Network that credits the
    /// calling agent's wallet, or (the operator) the treasury or a named
    /// agent's wallet.
    pub async fn create_deposit(
        &self,
        caller: &Principal,
        amount_msat: u64,
        agent_id: Option<&str>,
        memo: Option<&str>,
    ) -> Result<InvoiceRecord, Error> {
        if self.funding.is_none() {
            return Err(Error::NoLightningBackend);
        }
        let payee = match (caller, agent_id) {
            (Principal::Operator, None) => TREASURY_PAYEE.to_owned(),
            (Principal::Operator, Some(id)) => self.agent(id).await?.id,
            (Principal::Agent(key), None) => receiving(key)?,
            (Principal::Agent(key), Some(id)) if id == key.agent_id => receiving(key)?,
            (Principal::Agent(_), Some(_)) => return Err(Error::Forbidden("an agent deposits to its own wallet only")),
        };
        let memo = memo.unwrap_or("coffer deposit");
        let invoice = self.make_invoice(&payee, amount_msat, Some(memo), None, None).await?;
        let (stored, quotas) = (invoice.clone(), self.quotas());
        let stored = self.store.write(move |tx| ops::invoices::create_invoice(tx, &stored, &quotas)).await;
        match caller {
            Principal::Agent(key) => self.feed_breaker(&key.agent_id, stored).await?,
            Principal::Operator => stored?,
        }
        Ok(invoice)
    }

    /// Pays an invoice of another node through the backend (see the module
    /// comment).
    pub(super) async fn pay_external(
        &self,
        funding: &dyn FundingSource,
        caller: &AgentKey,
        invoice: &OutsideInvoice,
        (purpose, attribution): (&str, crate::model::Attribution),
        idempotency: Option<Idempotency>,
    ) -> Result<PayOutcome, Error> {
        if u64::try_from(self.now_ms() / 1000).unwrap_or(u64::MAX) >= invoice.expires_at_secs {
            return Err(Error::InvoiceExpired);
        }
        let amount = invoice.amount.ok_or(Error::AmountRequired)?;
        let expires_at_secs = i64::try_from(invoice.expires_at_secs).unwrap_or(i64::MAX);
        let begin = BeginExternal {
            payment_id: secrets::new_id("pay_"),
            payer: Payer { agent_id: caller.agent_id.clone(), account: caller.account, key_id: caller.key_id.clone() },
            bolt11: invoice.bolt11.clone(),
            payment_hash: invoice.payment_hash,
            amount,
            fee_limit: default_fee_limit(amount),
            purpose: purpose.to_owned(),
            attribution,
            payee_node_hex: invoice.payee_hex.clone(),
            idempotency,
            invoice_expires_at_ms: expires_at_secs.saturating_mul(1000),
            approval_ttl_ms: self.settings.approval_ttl_ms,
            holds_pending_max: self.settings.limits.holds_pending_per_agent,
            now_ms: self.now_ms(),
            terms: self.spend_terms(),
        };
        let (bolt11, fee_limit) = (begin.bolt11.clone(), begin.fee_limit);
        let payment = match self.store.write(move |tx| outside::begin(tx, begin.clone())).await? {
            ExternalStart::Started(payment) => payment,
            ExternalStart::Held(held) => return Ok(PayOutcome::Held(held)),
            ExternalStart::Denied(denial) => return Err(Error::Denied(denial)),
            ExternalStart::Replay(PayAttempt::Paid(earlier)) => return Ok(PayOutcome::Paid(earlier)),
            ExternalStart::Replay(PayAttempt::Held(held)) => return Ok(PayOutcome::Held(held)),
            ExternalStart::Replay(other) => return Err(Error::Internal(format!("unexpected replay {other:?}"))),
        };
        self.send(funding, &payment, &bolt11, fee_limit).await.map(PayOutcome::Paid)
    }

    /// Sends a payment recorded as pending (committed: a crash from here on
    /// leaves it to the resolver) to the backend, and finishes it as the
    /// backend answers.
    async fn send(
        &self,
        funding: &dyn FundingSource,
        payment: &PaymentRecord,
        bolt11: &str,
        fee_limit: Msat,
    ) -> Result<PaymentRecord, Error> {
        let answer = funding.pay_invoice(bolt11, payment.amount, fee_limit).await;
        self.settle_answer(&payment.id, payment.payment_hash, answer, "paying").await
    }

    /// Sends the payment an approval of a held outside payment started
    /// (pending), as [`Gateway::pay_external`] sends an unheld one.
    pub(super) async fn send_approved(
        &self,
        approval: &ApprovalRecord,
        payment: PaymentRecord,
    ) -> Result<PaymentRecord, Error> {
        let Some(funding) = &self.funding else {
            // Held under a backend that is no longer configured: the payment
            // stays pending, reserved, and the resolver asks about it once a
            // backend is back (it fails it, as never sent).
            tracing::warn!(payment_id = %payment.id, "an approved payment to another node, but no Lightning backend");
            return Ok(payment);
        };
        self.send(funding.as_ref(), &payment, &approval.bolt11, approval.fee_limit).await
    }

    /// Finishes a pending payment as the backend answered, or notes why it
    /// stays pending.
    async fn settle_answer(
        &self,
        payment_id: &str,
        payment_hash: [u8; 32],
        answer: Result<PayResult, crate::lightning::LnError>,
        doing: &str,
    ) -> Result<crate::model::PaymentRecord, Error> {
        let id = payment_id.to_owned();
        match answer {
            Ok(PayResult::Succeeded { preimage, fee }) => {
                if sha256::Hash::hash(&preimage).to_byte_array() != payment_hash {
                    let why = format!("{doing}: the backend reported success with a preimage that does not match");
                    tracing::error!(payment_id, "{why}");
                    return self.note_external(id, why).await;
                }
                self.finish_external(id, ExternalOutcome::Succeeded { preimage, fee }).await
            }
            Ok(PayResult::Failed { reason }) => self.finish_external(id, ExternalOutcome::Failed { reason }).await,
            Ok(PayResult::Pending) => {
                self.note_external(id, "in flight: the backend has not finished it yet".into()).await
            }
            Err(e) => {
                tracing::warn!(payment_id, error = %e, "{doing}: outcome unknown, the payment stays pending");
                self.note_external(id, format!("outcome unknown ({doing}): {e}")).await
            }
        }
    }

    /// Settles an outside payment by the backend's answer.
    async fn finish_external(&self, id: String, outcome: ExternalOutcome) -> Result<PaymentRecord, Error> {
        let now_ms = self.now_ms();
        self.store.write(move |tx| outside::finish(tx, &id, outcome.clone(), now_ms)).await
    }

    /// Notes why an outside payment stays pending.
    async fn note_external(&self, id: String, detail: String) -> Result<PaymentRecord, Error> {
        let now_ms = self.now_ms();
        self.store.write(move |tx| outside::note(tx, &id, detail.clone(), now_ms)).await
    }

    /// One round of the resolver: asks the backend how each pending
    /// payment ended. Returns how many are still pending.
    pub async fn resolve_pending(&self) -> Result<usize, Error> {
        let Some(funding) = &self.funding else { return Ok(0) };
        let pending = self.store.read(|tx| tx.pending_external(RESOLVE_BATCH_MAX)).await?;
        let mut open = 0;
        for payment in pending {
            let looked_up = funding.lookup_payment(payment.payment_hash).await;
            // A backend that does not answer is down: one timeout per round,
            // not one per payment (the first round holds up the start).
            let down = matches!(looked_up, Err(crate::lightning::LnError::Unreachable(_)));
            let answer = match looked_up {
                Ok(Some(result)) => Ok(result),
                // No record at the backend: the call never arrived (a crash
                // before it, or a refused connection). Failed once no call
                // can still be on its way.
                Ok(None)
                    if self.now_ms() - payment.created_at_ms > NOT_FOUND_GRACE_TIMEOUTS * self.lightning_timeout_ms =>
                {
                    Ok(PayResult::Failed {
                        reason: "the backend has no record of this payment: it was never sent".into(),
                    })
                }
                Ok(None) => Ok(PayResult::Pending),
                Err(e) => Err(e),
            };
            let record = self.settle_answer(&payment.payment_id, payment.payment_hash, answer, "looking it up").await?;
            if record.status == PaymentStatus::Pending {
                open += 1;
            }
            if down {
                break;
            }
        }
        Ok(open)
    }

    /// One round of the deposit watcher: credits every watched invoice the
    /// backend reports paid, and accepts every hold invoice it reports
    /// held. Returns how many were credited.
    pub async fn credit_deposits(&self) -> Result<usize, Error> {
        let Some(funding) = &self.funding else { return Ok(0) };
        let now = self.now_ms();
        // A cursor walks every watched invoice in turn, a batch per round,
        // so that many open invoices cannot starve the later ones.
        let after = self.watch_cursor.load(std::sync::atomic::Ordering::Relaxed);
        let since_ms = now - WATCH_AFTER_EXPIRY_MS;
        let (watched, last) =
            self.store.read(move |tx| tx.watched_invoices(after, since_ms, DEPOSIT_BATCH_MAX)).await?;
        self.watch_cursor.store(last.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let mut credited = 0;
        for invoice in watched {
            if invoice.hold_secs.is_some() {
                // A hold invoice of the backend: accepted, not credited,
                // when paid (see `outside_holds`).
                if let Err(e) = self.watch_outside_hold(&invoice).await? {
                    tracing::warn!(payment_hash = %hex::encode(invoice.payment_hash), error = %e, "looking up a hold invoice failed");
                    break;
                }
                continue;
            }
            match funding.lookup_invoice(invoice.payment_hash).await {
                Ok(InvoiceState::Paid) => {
                    let (hash, now_ms) = (invoice.payment_hash, self.now_ms());
                    if self.store.write(move |tx| outside::credit_from_outside(tx, &hash, now_ms)).await? {
                        credited += 1;
                        self.announce_request(&invoice.payment_hash).await;
                    }
                }
                Ok(InvoiceState::Open | InvoiceState::Expired) => {}
                Err(e) => {
                    tracing::warn!(payment_hash = %hex::encode(invoice.payment_hash), error = %e, "looking up an invoice failed");
                    // The backend is down: try the rest next round.
                    break;
                }
            }
        }
        Ok(credited)
    }
}

fn receiving(key: &AgentKey) -> Result<String, Error> {
    key.require(Scope::Receive)?;
    Ok(key.agent_id.clone())
}

/// Runs the resolver and the deposit watcher until the process ends.
pub async fn run_background(gateway: Arc<Gateway>, interval_ms: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = gateway.resolve_pending().await {
            tracing::warn!(error = %e, "resolving pending payments failed; will retry");
        }
        if let Err(e) = gateway.credit_deposits().await {
            tracing::warn!(error = %e, "crediting deposits failed; will retry");
        }
    }
}
