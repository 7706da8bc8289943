//! Hold invoices an agent makes through the Lightning backend, so that a
//! payer outside the gateway can pay them (`POST /v1/invoices {"hold":
//! true}` on a backend whose [`FundingSource::hold_invoices`] is `Some`:
//! LND, and NWC wallets that list NIP-47's hold methods).
//!
//! - Made: coffer chooses the preimage (as for every invoice), the backend
//!   makes a hold invoice for its hash; its BOLT11 is checked (hash and
//!   amount) and stored with `backend` and `hold_secs`.
//! - Accepted: the deposit watcher looks each open one up; once the backend
//!   holds the payer's payment (`ACCEPTED`), the invoice becomes `accepted`
//!   and an escrow row (payer [`OUTSIDE_PAYER`](crate::model::OUTSIDE_PAYER)) keeps its deadline
//!   (accepted + `hold_secs`), `invoice.accepted` for the payee. Nothing is
//!   reserved in the ledger: the money is at the node. An agent of this
//!   gateway may still pay the invoice inside instead; the `open` ->
//!   `accepted` update decides which payment wins, and the loser's hold at
//!   the backend is cancelled (the outside payer gets its money back).
//! - Settled: the backend is asked to settle with the preimage FIRST; only
//!   its success (or a later lookup reading `SETTLED`) credits the payee
//!   from `outside`, once (`payment::outside_hold::settled`).
//! - Cancelled: by the payee, or by the deadline sweep past the deadline:
//!   the backend cancels first, then the invoice is `cancelled`.
//!
//! A backend error leaves coffer's records as they were (`502
//! lightning-backend`): repeating the call is safe (LND settles a settled
//! invoice and cancels a cancelled one without error), and the sweep reads
//! the backend's state after an error, so a settle whose answer was lost is
//! still credited, once.
//!
//! With a backend without hold invoices (Core Lightning, LNbits) or none
//! (`dev`), a hold invoice is signed by coffer's own key as before: payable
//! by the agents of this gateway only.

use super::Gateway;
use crate::error::Error;
use crate::lightning::{HoldInvoices, HoldState, LnError};
use crate::model::{COMMERCE_SWEEP_BATCH_MAX, EscrowRecord, InvoiceRecord, PaymentRecord};
use crate::payment::bolt11::ParsedInvoice;
use crate::payment::escrow::Ended;
use crate::payment::outside_hold::{self, Acceptance};
use coffer_client::PaymentStatus;

/// Blocks of margin on the final hop's CLTV delta of a hold invoice, past
/// its `hold_secs`: the node cancels a held payment some blocks before its
/// HTLCs time out, and blocks come irregularly.
const HOLD_CLTV_MARGIN_BLOCKS: u32 = 40;
/// The smallest CLTV delta coffer asks for (LND's default for its
/// invoices).
const HOLD_CLTV_MIN_BLOCKS: u32 = 80;
/// Seconds per block, on average.
const BLOCK_SECS: u32 = 600;

/// The final hop's CLTV delta for a hold invoice that waits `hold_secs`
/// once accepted: its blocks half again (blocks come faster at times),
/// plus a margin. The longest hold (7 days) asks for 1552 blocks, under
/// the 2016 a payer accepts for a whole route by default.
pub fn hold_cltv_blocks(hold_secs: u32) -> u32 {
    let blocks = hold_secs.div_ceil(BLOCK_SECS);
    (blocks.saturating_mul(3).div_ceil(2) + HOLD_CLTV_MARGIN_BLOCKS).max(HOLD_CLTV_MIN_BLOCKS)
}

impl Gateway {
    /// The backend's hold invoices, if it has them.
    pub(super) fn hold_backend(&self) -> Option<&dyn HoldInvoices> {
        self.funding.as_deref().and_then(|f| f.hold_invoices())
    }

    /// A hold invoice signed by coffer (`local`, with its `hold_secs`)
    /// made again by the backend's node for the same payment hash, when the
    /// backend has hold invoices; `local` as it is otherwise.
    pub(super) async fn backend_hold_invoice(&self, local: InvoiceRecord) -> Result<InvoiceRecord, Error> {
        let (Some(funding), Some(hold)) = (self.funding.as_deref(), self.hold_backend()) else { return Ok(local) };
        let hold_secs = local.hold_secs.ok_or_else(|| Error::Internal("a hold invoice without hold_secs".into()))?;
        let expiry_secs = u32::try_from((local.expires_at_ms - local.created_at_ms) / 1000)
            .map_err(|_| Error::Internal("invoice expiry out of range".into()))?;
        let bolt11 = hold
            .create_hold_invoice(
                local.amount,
                &local.memo,
                expiry_secs,
                local.payment_hash,
                Some(hold_cltv_blocks(hold_secs)),
            )
            .await
            .map_err(|e| Error::Backend(format!("creating the hold invoice: {e}")))?;
        let parsed = ParsedInvoice::parse(&bolt11, self.settings.network)
            .map_err(|e| Error::Backend(format!("the backend's hold invoice: {e}")))?;
        if parsed.payment_hash != local.payment_hash || parsed.amount != Some(local.amount) {
            return Err(Error::Backend("the backend's hold invoice is not the one asked for".into()));
        }
        Ok(InvoiceRecord { bolt11: parsed.bolt11, backend: Some(funding.name().to_owned()), ..local })
    }

    /// The deposit watcher's look at one open hold invoice of the backend:
    /// accepted there, it is accepted here. `Err` only when the backend did
    /// not answer (the watcher stops its round).
    pub(super) async fn watch_outside_hold(&self, invoice: &InvoiceRecord) -> Result<Result<(), LnError>, Error> {
        let Some(hold) = self.hold_backend() else { return Ok(Ok(())) };
        let hash = invoice.payment_hash;
        let amount = match hold.lookup_hold_invoice(hash).await {
            Ok(Some(HoldState::Accepted { amount })) => amount,
            Ok(Some(HoldState::Settled)) => {
                // Only coffer has the preimage, and it settles accepted
                // invoices only: the backend's answer cannot be.
                tracing::error!(payment_hash = %hex::encode(hash), "the backend reports an open hold invoice settled");
                return Ok(Ok(()));
            }
            Ok(_) => return Ok(Ok(())),
            Err(e) => return Ok(Err(e)),
        };
        let now_ms = self.now_ms();
        match self.store.write(move |tx| outside_hold::accept(tx, &hash, amount, now_ms)).await {
            Ok(Acceptance::Accepted(_)) => self.announce_request(&hash).await,
            Ok(Acceptance::Already) => {}
            // An agent paid it inside first: the outside payment is given
            // back at once rather than locked until the node gives up on it.
            Ok(Acceptance::Lost) => self.cancel_backend_hold(hash, "it is not open any more").await,
            Err(Error::Backend(why)) => {
                tracing::warn!(payment_hash = %hex::encode(hash), "an outside hold not accepted: {why}");
            }
            Err(e) => return Err(e),
        }
        Ok(Ok(()))
    }

    /// After an agent's payment of a hold invoice of the backend was
    /// accepted inside: the backend's invoice is cancelled, so that no
    /// outside payer's money gets locked on an invoice that will not be
    /// settled for it. Best effort: a failure is logged (the node then gives
    /// such a payment back when its HTLCs near their timeout).
    pub(super) async fn close_backend_hold_paid_inside(&self, payment: &PaymentRecord) {
        if payment.status != PaymentStatus::Held || self.hold_backend().is_none() {
            return;
        }
        let Ok(Some(invoice)) = self.stored_invoice(payment.payment_hash).await else { return };
        if invoice.hold_secs.is_some() && invoice.backend.is_some() {
            self.cancel_backend_hold(invoice.payment_hash, "an agent paid it inside").await;
        }
    }

    async fn cancel_backend_hold(&self, hash: [u8; 32], why: &str) {
        let Some(hold) = self.hold_backend() else { return };
        if let Err(e) = hold.cancel_hold_invoice(hash).await {
            tracing::warn!(payment_hash = %hex::encode(hash), error = %e, "cancelling a backend hold invoice ({why}) failed");
        }
    }

    /// The hold of `hash` paid from outside, if it is one.
    pub(super) async fn outside_hold(&self, hash: [u8; 32]) -> Result<Option<EscrowRecord>, Error> {
        self.store.read(move |tx| outside_hold::find(tx, &hash)).await
    }

    /// The payee settles a hold paid from outside: settled at the backend
    /// first, then credited here (see the module comment).
    pub(super) async fn settle_outside_hold(&self, payee: &str, escrow: EscrowRecord) -> Result<Ended, Error> {
        let (invoice, hold) = self.open_outside_hold(payee, &escrow).await?;
        if self.now_ms() >= escrow.deadline_at_ms {
            return Err(Error::InvalidState("the hold is past its deadline: it is cancelled".into()));
        }
        hold.settle_hold_invoice(invoice.preimage)
            .await
            .map_err(|e| Error::Backend(format!("settling the hold invoice: {e}")))?;
        let (hash, actor, now_ms) = (escrow.payment_hash, payee.to_owned(), self.now_ms());
        let ended = self.store.write(move |tx| outside_hold::settled(tx, &hash, &actor, now_ms)).await?;
        self.announce_request(&hash).await;
        Ok(ended)
    }

    /// The payee cancels a hold paid from outside: cancelled at the backend
    /// first (the payer's money goes back), then here.
    pub(super) async fn cancel_outside_hold(&self, payee: &str, escrow: EscrowRecord) -> Result<Ended, Error> {
        let (_, hold) = self.open_outside_hold(payee, &escrow).await?;
        hold.cancel_hold_invoice(escrow.payment_hash)
            .await
            .map_err(|e| Error::Backend(format!("cancelling the hold invoice: {e}")))?;
        let (hash, actor, now_ms) = (escrow.payment_hash, payee.to_owned(), self.now_ms());
        let ended = self.store.write(move |tx| outside_hold::cancelled(tx, &hash, &actor, now_ms)).await?;
        self.announce_request(&hash).await;
        Ok(ended)
    }

    /// An outside hold the payee may still decide, its invoice, and the
    /// backend to decide it at.
    async fn open_outside_hold(
        &self,
        payee: &str,
        escrow: &EscrowRecord,
    ) -> Result<(InvoiceRecord, &dyn HoldInvoices), Error> {
        if escrow.payee_agent_id != payee {
            return Err(Error::NotFound("hold"));
        }
        if !escrow.status.is_open() {
            return Err(Error::InvalidState(format!("it was {} already", escrow.status.as_str())));
        }
        let invoice = self.stored_invoice(escrow.payment_hash).await?.ok_or(Error::NotFound("invoice"))?;
        let hold = self.hold_backend().ok_or_else(|| {
            Error::Backend("the hold was paid through a backend that no longer offers hold invoices".into())
        })?;
        Ok((invoice, hold))
    }

    /// Cancels the holds paid from outside past their deadline, at the
    /// backend first. After an error the backend's state decides: cancelled,
    /// it is recorded so; settled (the payee's settle reached the backend
    /// but its answer was lost), the payee is credited. Answers how many
    /// ended.
    pub(super) async fn expire_outside_holds(&self) -> Result<u64, Error> {
        let Some(hold) = self.hold_backend() else { return Ok(0) };
        let now = self.now_ms();
        let due = self.store.read(move |tx| tx.due_outside_holds(now, COMMERCE_SWEEP_BATCH_MAX)).await?;
        let mut ended = 0;
        for escrow in due {
            let hash = escrow.payment_hash;
            let settled = match hold.cancel_hold_invoice(hash).await {
                Ok(()) => false,
                Err(cancelling) => match hold.lookup_hold_invoice(hash).await {
                    Ok(Some(HoldState::Cancelled)) => false,
                    Ok(Some(HoldState::Settled)) => true,
                    looked_up => {
                        tracing::warn!(payment_hash = %hex::encode(hash), error = %cancelling, state = ?looked_up,
                            "cancelling a hold past its deadline failed; will retry");
                        // The backend is down: try the rest next round.
                        if matches!(looked_up, Err(LnError::Unreachable(_))) {
                            break;
                        }
                        continue;
                    }
                },
            };
            let now_ms = self.now_ms();
            self.store
                .write(move |tx| {
                    if settled {
                        outside_hold::settled(tx, &hash, "system", now_ms)
                    } else {
                        outside_hold::cancelled(tx, &hash, "system", now_ms)
                    }
                })
                .await?;
            self.announce_request(&hash).await;
            ended += 1;
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::hold_cltv_blocks;

    #[test]
    fn the_cltv_delta_covers_the_hold_with_a_margin() {
        assert_eq!(hold_cltv_blocks(1), 80, "at least LND's default");
        assert_eq!(hold_cltv_blocks(3600), 80);
        assert_eq!(hold_cltv_blocks(24 * 3600), 216 + 40);
        assert_eq!(hold_cltv_blocks(crate::model::HOLD_SECS_MAX), 1512 + 40);
    }
}
