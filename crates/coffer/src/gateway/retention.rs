//! Retention: on a schedule, the gateway removes expired invoices, events
//! every consumer has read and the webhook delivery log once they are older
//! than the operator allows (`COFFER_RETENTION_*`). What the ledger and the
//! audit chain need is never removed (`store/retention.rs`).

use super::Gateway;
use crate::error::Error;
use crate::store::retention::{Cutoffs, Pruned};
use std::sync::Arc;

const DAY_SECS: u64 = 24 * 3600;
/// Batches one pass removes at most (each is one short write transaction):
/// a backlog drains over several passes instead of occupying the writer.
const PRUNE_BATCHES_PER_PASS_MAX: u32 = 64;
/// The longest a retention period may be: about 100 years.
const RETENTION_MAX_SECS: u64 = 100 * 366 * DAY_SECS;

/// How long each kind of row is kept, and how often the pruner runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// An invoice that expired unpaid is kept this long after its expiry.
    pub invoices_expired_secs: u64,
    /// An event is kept this long (and until every consumer has read it).
    pub events_secs: u64,
    /// A webhook delivery attempt is kept this long in the delivery log.
    pub deliveries_secs: u64,
    pub interval_secs: u64,
}

impl Retention {
    /// What a gateway keeps unless `COFFER_RETENTION_*` says otherwise.
    pub const DEFAULT: Retention = Retention {
        invoices_expired_secs: 7 * DAY_SECS,
        events_secs: 30 * DAY_SECS,
        deliveries_secs: 7 * DAY_SECS,
        interval_secs: 3600,
    };
}

// The defaults are values `from_lookup` would accept (1 to the longest
// period), and the pruner runs several times within the shortest period.
const _: () = assert!(Retention::DEFAULT.invoices_expired_secs <= RETENTION_MAX_SECS);
const _: () = assert!(Retention::DEFAULT.events_secs <= RETENTION_MAX_SECS);
const _: () = assert!(Retention::DEFAULT.deliveries_secs <= RETENTION_MAX_SECS);
const _: () = assert!(Retention::DEFAULT.interval_secs >= 1);
const _: () = assert!(Retention::DEFAULT.interval_secs < Retention::DEFAULT.invoices_expired_secs);
const _: () = assert!(Retention::DEFAULT.interval_secs < Retention::DEFAULT.events_secs);
const _: () = assert!(Retention::DEFAULT.interval_secs < Retention::DEFAULT.deliveries_secs);
// A period in milliseconds (`Retention::cutoffs`) fits an `i64`.
const _: () = assert!(RETENTION_MAX_SECS <= i64::MAX as u64 / 1_000);

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

impl Retention {
    /// The defaults, each replaced by `COFFER_RETENTION_<NAME>_SECS` where
    /// set; a bad value is an error naming the variable.
    pub fn from_env() -> Result<Retention, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Retention, String> {
        let mut retention = Retention::default();
        for (name, slot) in [
            ("COFFER_RETENTION_INVOICES_SECS", &mut retention.invoices_expired_secs),
            ("COFFER_RETENTION_EVENTS_SECS", &mut retention.events_secs),
            ("COFFER_RETENTION_DELIVERIES_SECS", &mut retention.deliveries_secs),
            ("COFFER_RETENTION_INTERVAL_SECS", &mut retention.interval_secs),
        ] {
            if let Some(value) = lookup(name) {
                *slot = match value.trim().parse::<u64>() {
                    Ok(secs) if (1..=RETENTION_MAX_SECS).contains(&secs) => secs,
                    _ => return Err(format!("{name}: seconds from 1 to {RETENTION_MAX_SECS}, not {value:?}")),
                };
            }
        }
        Ok(retention)
    }

    /// What may go, at `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        let before = |secs: u64| now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX));
        Cutoffs {
            invoices_expired_before_ms: before(self.invoices_expired_secs),
            events_before_ms: before(self.events_secs),
            deliveries_before_ms: before(self.deliveries_secs),
        }
    }
}

impl Gateway {
    /// One pass: batches until nothing is left to remove, or the pass's
    /// bound. Every instance may run it; a row is removed once.
    pub async fn prune(&self) -> Result<Pruned, Error> {
        let cutoffs = self.settings.retention.cutoffs(self.now_ms());
        let mut pass = Pruned::default();
        for _ in 0..PRUNE_BATCHES_PER_PASS_MAX {
            let batch = self.store.write(move |tx| tx.prune(&cutoffs)).await?;
            crate::metrics::METRICS.record_pruned(&batch);
            pass.invoices += batch.invoices;
            pass.events += batch.events;
            pass.deliveries += batch.deliveries;
            if batch.total() == 0 {
                break;
            }
        }
        Ok(pass)
    }
}

/// Runs [`Gateway::prune`] every `interval_secs`, the first time right
/// after start.
pub async fn run(gateway: Arc<Gateway>) {
    let interval = std::time::Duration::from_secs(gateway.settings.retention.interval_secs);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match gateway.prune().await {
            Ok(pruned) if pruned.total() > 0 => tracing::info!(
                invoices = pruned.invoices,
                events = pruned.events,
                deliveries = pruned.deliveries,
                "retention removed old rows"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_sets_each_period_and_bad_values_name_the_variable() {
        let r = Retention::from_lookup(|n| (n == "COFFER_RETENTION_EVENTS_SECS").then(|| "60".into())).unwrap();
        assert_eq!(r.events_secs, 60);
        assert_eq!(r.invoices_expired_secs, Retention::default().invoices_expired_secs);
        for bad in ["0", "-5", "soon", "99999999999999"] {
            let err = Retention::from_lookup(|n| (n == "COFFER_RETENTION_INTERVAL_SECS").then(|| bad.into()));
            assert!(err.unwrap_err().contains("COFFER_RETENTION_INTERVAL_SECS"));
        }
        let cutoffs = r.cutoffs(1_000_000);
        assert_eq!(cutoffs.events_before_ms, 1_000_000 - 60_000);
        assert_eq!(Retention::default().cutoffs(0).events_before_ms, -30 * 24 * 3600 * 1000);
    }
}
