//! What the gateway tells `/metrics`: each payment attempt by outcome and
//! rail, and the store's gauges (read at scrape time, reused briefly).

use super::{Gateway, PayOutcome};
use crate::error::Error;
use crate::metrics::{METRICS, PayOutcomeLabel, Rail, StoreGauges};
use crate::model::PaymentRecord;
use coffer_client::PaymentStatus;
use std::time::{Duration, Instant};

/// The store's gauges are read at most this often: `/metrics` is public,
/// and a scrape must not cost a store read each time it is asked.
pub const GAUGES_CACHE_MS: u64 = 1_000;
/// The bound on reading them; a store that does not answer in time leaves
/// the gauges out of that scrape rather than holding it.
const GAUGES_READ_MS: u64 = 2_000;

/// The last gauges read, and when; the lock also makes concurrent scrapes
/// wait for one read instead of each running its own.
static GAUGES: tokio::sync::Mutex<Option<(Instant, StoreGauges)>> = tokio::sync::Mutex::const_new(None);

impl Gateway {
    /// Counts one attempt to pay `target` on `coffer_payments_total`.
    pub(super) fn count_payment(&self, target: &str, outcome: &Result<PayOutcome, Error>) {
        let (label, rail) = match outcome {
            Ok(PayOutcome::Paid(payment)) => (status_label(payment.status), paid_rail(payment)),
            Ok(PayOutcome::Held(approval)) => {
                let rail = if approval.payee_node_hex.is_some() { Rail::Outside } else { Rail::Internal };
                (PayOutcomeLabel::Held, rail)
            }
            Err(e) => (error_label(e), self.rail_of(target)),
        };
        METRICS.record_payment_outcome(label, rail);
    }

    /// The rail a refused payment would have taken, told from its target
    /// alone (only on refusals: a success knows its rail): a Lightning
    /// address or another node's invoice goes outside, one this node signed
    /// stays inside, an unreadable one had none.
    fn rail_of(&self, target: &str) -> Rail {
        if crate::lightning::lnurl::is_address(target) {
            return Rail::Outside;
        }
        let parsed = crate::payment::bolt11::ParsedInvoice::parse(target, self.settings.network);
        match parsed.map(|p| p.outside()) {
            Ok(Ok(invoice)) if invoice.payee_hex == self.node_pubkey_hex() => Rail::Internal,
            Ok(Ok(_)) => Rail::Outside,
            _ => Rail::None,
        }
    }

    /// The store's counts for `/metrics`, at most [`GAUGES_CACHE_MS`] old;
    /// `None` when the store did not answer within its bound.
    pub async fn store_gauges(&self) -> Option<StoreGauges> {
        let mut last = GAUGES.lock().await;
        if let Some((at, gauges)) = last.as_ref()
            && at.elapsed() < Duration::from_millis(GAUGES_CACHE_MS)
        {
            return Some(gauges.clone());
        }
        let read = self.store().read(|tx| tx.gauges());
        match tokio::time::timeout(Duration::from_millis(GAUGES_READ_MS), read).await {
            Ok(Ok(gauges)) => {
                *last = Some((Instant::now(), gauges.clone()));
                Some(gauges)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the gauges for /metrics failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// A payment to another wallet of this gateway names its payee agent.
fn paid_rail(payment: &PaymentRecord) -> Rail {
    if payment.payee_agent_id.is_some() { Rail::Internal } else { Rail::Outside }
}

fn status_label(status: PaymentStatus) -> PayOutcomeLabel {
    match status {
        // A replay of a payment refunded since: it was paid.
        PaymentStatus::Succeeded | PaymentStatus::Refunded => PayOutcomeLabel::Succeeded,
        PaymentStatus::Pending => PayOutcomeLabel::Pending,
        PaymentStatus::Failed => PayOutcomeLabel::Failed,
        PaymentStatus::Held => PayOutcomeLabel::Escrowed,
    }
}

/// A refusal: the constitution's (or the wallet's), the caller's mistake,
/// or ours (the backend's, the store's).
pub(super) fn error_label(e: &Error) -> PayOutcomeLabel {
    match e {
        Error::Denied(_) | Error::InsufficientBalance { .. } => PayOutcomeLabel::Denied,
        Error::Backend(_)
        | Error::NoLightningBackend
        | Error::Unavailable(_)
        | Error::Contended(_)
        | Error::Internal(_) => PayOutcomeLabel::Failed,
        _ => PayOutcomeLabel::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart() {
        let denial = crate::model::Denial {
            code: "max-payment",
            message: String::new(),
            remaining: None,
            available: None,
            needed: None,
        };
        assert_eq!(error_label(&Error::Denied(denial)), PayOutcomeLabel::Denied);
        assert_eq!(error_label(&Error::InvoiceExpired), PayOutcomeLabel::Rejected);
        assert_eq!(error_label(&Error::Backend("down".into())), PayOutcomeLabel::Failed);
        assert_eq!(status_label(PaymentStatus::Held), PayOutcomeLabel::Escrowed);
    }
}
