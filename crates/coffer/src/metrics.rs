//! Counters for `GET /metrics`, in the Prometheus text format. Plain atomics:
//! the hot path pays one relaxed increment per counter, no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Metrics {
    http_responses: [AtomicU64; 5],
    payments_succeeded: AtomicU64,
    payments_refused: AtomicU64,
    invoices_created: AtomicU64,
    store_batches: AtomicU64,
    store_batch_jobs: AtomicU64,
    store_wal_restarts: AtomicU64,
    store_wal_stall_us: AtomicU64,
    limits_hit: [AtomicU64; crate::limits::Limit::ALL.len()],
    /// Rows removed by retention: invoices, events, deliveries.
    pruned: [AtomicU64; 3],
    event_stream_store_reads: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    http_responses: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    payments_succeeded: AtomicU64::new(0),
    payments_refused: AtomicU64::new(0),
    invoices_created: AtomicU64::new(0),
    store_batches: AtomicU64::new(0),
    store_batch_jobs: AtomicU64::new(0),
    store_wal_restarts: AtomicU64::new(0),
    store_wal_stall_us: AtomicU64::new(0),
    limits_hit: [const { AtomicU64::new(0) }; crate::limits::Limit::ALL.len()],
    pruned: [const { AtomicU64::new(0) }; 3],
    event_stream_store_reads: AtomicU64::new(0),
};

const PRUNED_TABLES: [&str; 3] = ["invoices", "events", "webhook_deliveries"];

impl Metrics {
    pub fn record_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_responses[class].fetch_add(1, Relaxed);
    }

    pub fn record_batch(&self, jobs: usize) {
        self.store_batches.fetch_add(1, Relaxed);
        self.store_batch_jobs.fetch_add(jobs as u64, Relaxed);
    }

    pub fn record_wal_restart(&self) {
        self.store_wal_restarts.fetch_add(1, Relaxed);
    }

    /// Time the writer spent checkpointing so that the WAL could start over.
    pub fn record_wal_stall(&self, stalled: std::time::Duration) {
        let us = u64::try_from(stalled.as_micros()).unwrap_or(u64::MAX);
        self.store_wal_stall_us.fetch_add(us, Relaxed);
    }

    pub fn wal_stall_us(&self) -> u64 {
        self.store_wal_stall_us.load(Relaxed)
    }

    pub fn wal_restarts(&self) -> u64 {
        self.store_wal_restarts.load(Relaxed)
    }

    pub fn record_limit_hit(&self, limit: crate::limits::Limit) {
        self.limits_hit[limit.index()].fetch_add(1, Relaxed);
    }

    /// An event stream read the outbox itself (catching up at its start or
    /// after falling behind), not the shared feed.
    pub fn record_event_stream_store_read(&self) {
        self.event_stream_store_reads.fetch_add(1, Relaxed);
    }

    pub fn limit_hits(&self, limit: crate::limits::Limit) -> u64 {
        self.limits_hit[limit.index()].load(Relaxed)
    }

    pub fn record_pruned(&self, pruned: &crate::store::retention::Pruned) {
        for (counter, rows) in self.pruned.iter().zip([pruned.invoices, pruned.events, pruned.deliveries]) {
            counter.fetch_add(rows, Relaxed);
        }
    }

    pub fn record_payment(&self, succeeded: bool) {
        let counter = if succeeded { &self.payments_succeeded } else { &self.payments_refused };
        counter.fetch_add(1, Relaxed);
    }

    pub fn record_invoice(&self) {
        self.invoices_created.fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP coffer_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE coffer_http_responses_total counter\n");
        for (i, counter) in self.http_responses.iter().enumerate() {
            let _ = writeln!(out, "coffer_http_responses_total{{class=\"{}xx\"}} {}", i + 1, counter.load(Relaxed));
        }
        let simple = [
            ("coffer_payments_succeeded_total", "Payments that succeeded.", &self.payments_succeeded),
            ("coffer_payments_refused_total", "Payment requests refused.", &self.payments_refused),
            ("coffer_invoices_created_total", "Invoices created.", &self.invoices_created),
            ("coffer_store_batches_total", "Store write transactions committed (group commits).", &self.store_batches),
            ("coffer_store_batch_jobs_total", "Jobs written in those transactions.", &self.store_batch_jobs),
            (
                "coffer_store_wal_restarts_total",
                "Times the SQLite WAL started over from its beginning.",
                &self.store_wal_restarts,
            ),
            (
                "coffer_store_wal_stall_microseconds_total",
                "Time the writer spent checkpointing so that the WAL could start over (no commits meanwhile).",
                &self.store_wal_stall_us,
            ),
            (
                "coffer_event_stream_store_reads_total",
                "Reads of the outbox by one event stream (catching up), besides the one shared read per commit.",
                &self.event_stream_store_reads,
            ),
        ];
        for (name, help, counter) in simple {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.load(Relaxed));
        }
        out.push_str("# HELP coffer_retention_pruned_total Rows removed by retention, by table.\n");
        out.push_str("# TYPE coffer_retention_pruned_total counter\n");
        for (table, counter) in PRUNED_TABLES.iter().zip(&self.pruned) {
            let _ = writeln!(out, "coffer_retention_pruned_total{{table=\"{table}\"}} {}", counter.load(Relaxed));
        }
        out.push_str("# HELP coffer_limits_hit_total Requests refused with 429 because a limit was reached.\n");
        out.push_str("# TYPE coffer_limits_hit_total counter\n");
        for limit in crate::limits::Limit::ALL {
            let hits = self.limits_hit[limit.index()].load(Relaxed);
            let _ = writeln!(out, "coffer_limits_hit_total{{limit=\"{}\"}} {hits}", limit.name());
        }
        out
    }
}
