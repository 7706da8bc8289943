//! Counters, histograms and gauges for `GET /metrics`, in the Prometheus
//! text format. Plain atomics: the hot path pays a few relaxed increments,
//! no lock. Every label value comes from a fixed enum here, never from a
//! request, so the number of series is bounded at compile time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (rendered in
/// seconds): from a synced commit's fraction of a millisecond to a payment
/// routed through Lightning for seconds.
const LATENCY_BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];
const _: () = {
    let mut i = 1;
    while i < LATENCY_BUCKETS_US.len() {
        assert!(LATENCY_BUCKETS_US[i - 1] < LATENCY_BUCKETS_US[i], "buckets must increase");
        i += 1;
    }
};

/// A latency histogram with fixed buckets: one relaxed increment per
/// bucket hit, one for the sum. The last slot counts what is above every
/// bound (`+Inf`), so `_count` is the sum of the slots and always equals
/// the `+Inf` bucket, even while observations land during a scrape.
pub struct Histogram {
    slots: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { slots: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_US.len() + 1], sum_us: AtomicU64::new(0) }
    }

    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.slots[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Relaxed)).sum()
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is empty or
    /// `name="value",` (the trailing comma joins it to `le`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (bound, slot) in LATENCY_BUCKETS_US.iter().zip(&self.slots) {
            cumulative += slot.load(Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.slots[LATENCY_BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {cumulative}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// What an HTTP route does, for its latency: a handful of classes decided
/// from the matched route (never the raw path), so the label stays bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// Moves money: payments, charges, L402, paying a room's request.
    Pay,
    /// Creates an invoice or a deposit.
    Invoice,
    /// Any other read by an agent (`GET`).
    Read,
    /// An event stream (SSE or WebSocket): the time to its first byte.
    Stream,
    /// The operator's routes: agents, policies, approvals, audit, breaker.
    Operator,
    Mcp,
    /// Health, metrics, the document, the UI, writes not named above.
    Other,
}

impl RouteClass {
    pub const ALL: [RouteClass; 7] = [
        RouteClass::Pay,
        RouteClass::Invoice,
        RouteClass::Read,
        RouteClass::Stream,
        RouteClass::Operator,
        RouteClass::Mcp,
        RouteClass::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Pay => "pay",
            RouteClass::Invoice => "invoice",
            RouteClass::Read => "read",
            RouteClass::Stream => "stream",
            RouteClass::Operator => "operator",
            RouteClass::Mcp => "mcp",
            RouteClass::Other => "other",
        }
    }

    /// The class of a request: `route` is the matched route's template
    /// (`/v1/agents/{id}/fund`), `None` when no route matched.
    pub fn of(method: &str, route: Option<&str>) -> RouteClass {
        let Some(route) = route else { return RouteClass::Other };
        let get = method == "GET";
        let streams = ["/v1/events/stream", "/v1/events/ws", "/v1/rooms/{room}/stream", "/v1/rooms/{room}/ws"];
        let operator_prefixes =
            ["/v1/agents", "/v1/approvals", "/v1/breaker", "/v1/audit", "/v1/treasury", "/v1/reports"];
        let pays = route == "/v1/payments" || route == "/v1/payments/preview" || route.starts_with("/v1/l402/");
        let pays = pays || route.ends_with("/pay") || route.ends_with("/charges") || route.ends_with("/settle");
        match route {
            _ if streams.contains(&route) => RouteClass::Stream,
            "/mcp" => RouteClass::Mcp,
            _ if pays && !get => RouteClass::Pay,
            "/v1/invoices" | "/v1/deposits" if !get => RouteClass::Invoice,
            _ if operator_prefixes.iter().any(|p| route.starts_with(p)) => RouteClass::Operator,
            _ if get && route.starts_with("/v1/") => RouteClass::Read,
            _ => RouteClass::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a payment attempt ended, as counted by
/// `coffer_payments_total{outcome, rail}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayOutcomeLabel {
    Succeeded,
    /// Sent through the backend, its outcome not known yet.
    Pending,
    /// Held for a person's approval.
    Held,
    /// Paid into escrow or to a hold invoice: the money waits.
    Escrowed,
    /// Refused by the constitution (or for want of funds).
    Denied,
    /// Refused before anything moved: bad input, a conflict, a limit.
    Rejected,
    /// The backend or the store failed it.
    Failed,
}

impl PayOutcomeLabel {
    pub const ALL: [PayOutcomeLabel; 7] = [
        PayOutcomeLabel::Succeeded,
        PayOutcomeLabel::Pending,
        PayOutcomeLabel::Held,
        PayOutcomeLabel::Escrowed,
        PayOutcomeLabel::Denied,
        PayOutcomeLabel::Rejected,
        PayOutcomeLabel::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayOutcomeLabel::Succeeded => "succeeded",
            PayOutcomeLabel::Pending => "pending",
            PayOutcomeLabel::Held => "held",
            PayOutcomeLabel::Escrowed => "escrowed",
            PayOutcomeLabel::Denied => "denied",
            PayOutcomeLabel::Rejected => "rejected",
            PayOutcomeLabel::Failed => "failed",
        }
    }
}

/// Which way a payment went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rail {
    /// Between two wallets of this gateway.
    Internal,
    /// Through the Lightning backend to another node.
    Outside,
    /// A paywall's challenge (L402).
    L402,
    /// Refused before a rail was known (an unreadable invoice, say).
    None,
}

impl Rail {
    pub const ALL: [Rail; 4] = [Rail::Internal, Rail::Outside, Rail::L402, Rail::None];

    pub fn name(self) -> &'static str {
        match self {
            Rail::Internal => "internal",
            Rail::Outside => "outside",
            Rail::L402 => "l402",
            Rail::None => "none",
        }
    }
}

const PAYMENT_SERIES: usize = PayOutcomeLabel::ALL.len() * Rail::ALL.len();

/// Counts of what the store holds, read at scrape time
/// ([`crate::store::Tx::gauges`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreGauges {
    pub approvals_pending: i64,
    /// Hold invoices accepted, waiting to be settled or cancelled.
    pub holds_open: i64,
    /// Payments in escrow, held or disputed.
    pub escrows_open: i64,
    pub agents_frozen: i64,
    /// Per outbox consumer (its lease's name, set by the code): events
    /// written after its cursor.
    pub outbox_backlog: Vec<(String, i64)>,
}

pub struct Metrics {
    http_responses: [AtomicU64; 5],
    payments_succeeded: AtomicU64,
    payments_refused: AtomicU64,
    invoices_created: AtomicU64,
    store_batches: AtomicU64,
    store_batch_jobs: AtomicU64,
    store_wal_restarts: AtomicU64,
    store_wal_stall_us: AtomicU64,
    store_reprepares: AtomicU64,
    limits_hit: [AtomicU64; crate::limits::Limit::ALL.len()],
    /// Rows removed by retention: invoices, events, deliveries.
    pruned: [AtomicU64; 3],
    event_stream_store_reads: AtomicU64,
    http_latency: [Histogram; RouteClass::ALL.len()],
    store_commit_latency: Histogram,
    /// By outcome, then rail: `outcome * Rail::ALL.len() + rail`.
    payments: [AtomicU64; PAYMENT_SERIES],
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
    store_reprepares: AtomicU64::new(0),
    limits_hit: [const { AtomicU64::new(0) }; crate::limits::Limit::ALL.len()],
    pruned: [const { AtomicU64::new(0) }; 3],
    event_stream_store_reads: AtomicU64::new(0),
    http_latency: [const { Histogram::new() }; RouteClass::ALL.len()],
    store_commit_latency: Histogram::new(),
    payments: [const { AtomicU64::new(0) }; PAYMENT_SERIES],
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

    /// SQLite prepared cached statements `n` times again while they ran.
    pub fn record_reprepares(&self, n: u64) {
        self.store_reprepares.fetch_add(n, Relaxed);
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

    /// One payment attempt, by how it ended and which way it went.
    pub fn record_payment_outcome(&self, outcome: PayOutcomeLabel, rail: Rail) {
        let series = outcome as usize * Rail::ALL.len() + rail as usize;
        self.payments[series].fetch_add(1, Relaxed);
    }

    pub fn payments_counted(&self, outcome: PayOutcomeLabel, rail: Rail) -> u64 {
        self.payments[outcome as usize * Rail::ALL.len() + rail as usize].load(Relaxed)
    }

    pub fn record_request(&self, class: RouteClass, took: Duration) {
        self.http_latency[class.index()].observe(took);
    }

    /// The time one write batch's commit took (its sync to disk included).
    pub fn record_commit(&self, took: Duration) {
        self.store_commit_latency.observe(took);
    }

    pub fn record_invoice(&self) {
        self.invoices_created.fetch_add(1, Relaxed);
    }

    /// Everything, with the event streams open now and the store's gauges
    /// when they could be read (a store that does not answer leaves them
    /// out rather than the page).
    pub fn render_with(&self, streams_open: u32, gauges: Option<&StoreGauges>) -> String {
        let mut out = self.render();
        self.render_observability(&mut out);
        let name = "coffer_event_streams_open";
        let _ = writeln!(out, "# HELP {name} Event streams open now (SSE and WebSocket, events and rooms).");
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {streams_open}");
        if let Some(gauges) = gauges {
            render_store_gauges(&mut out, gauges);
        }
        out
    }

    fn render_observability(&self, out: &mut String) {
        let name = "coffer_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer an HTTP request (to the first byte), by route class.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for class in RouteClass::ALL {
            let labels = format!("route_class=\"{}\",", class.name());
            self.http_latency[class.index()].render(out, name, &labels);
        }
        let name = "coffer_store_commit_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time one write batch took to commit (synced to disk when so set).");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.store_commit_latency.render(out, name, "");
        out.push_str("# HELP coffer_payments_total Payment attempts, by outcome and rail.\n");
        out.push_str("# TYPE coffer_payments_total counter\n");
        for outcome in PayOutcomeLabel::ALL {
            for rail in Rail::ALL {
                let (o, r, n) = (outcome.name(), rail.name(), self.payments_counted(outcome, rail));
                let _ = writeln!(out, "coffer_payments_total{{outcome=\"{o}\",rail=\"{r}\"}} {n}");
            }
        }
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
                "coffer_store_statement_reprepares_total",
                "Times SQLite prepared a cached statement again as it ran (a plan depending on a bound value).",
                &self.store_reprepares,
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

fn render_store_gauges(out: &mut String, g: &StoreGauges) {
    let simple = [
        ("coffer_approvals_pending", "Payments held, waiting for a person's approval.", g.approvals_pending),
        ("coffer_holds_open", "Hold invoices accepted, waiting to be settled or cancelled.", g.holds_open),
        ("coffer_escrows_open", "Payments in escrow, held or disputed.", g.escrows_open),
        ("coffer_agents_frozen", "Agents frozen now.", g.agents_frozen),
    ];
    for (name, help, value) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let name = "coffer_outbox_backlog_events";
    let _ = writeln!(out, "# HELP {name} Events written after an outbox consumer's cursor (webhooks, buses, bridges).");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (consumer, backlog) in &g.outbox_backlog {
        let _ = writeln!(out, "{name}{{consumer=\"{}\"}} {backlog}", label_value(consumer));
    }
}

/// A label value escaped as the text format wants (the consumers' names are
/// set by the code, but the escape keeps the page readable whatever).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_its_count_is_the_inf_bucket() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.00025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 60.000201\n"), "{out}");
    }

    #[test]
    fn routes_fall_in_their_class() {
        let cases = [
            ("POST", Some("/v1/payments"), RouteClass::Pay),
            ("POST", Some("/v1/l402/pay"), RouteClass::Pay),
            ("POST", Some("/v1/rooms/{room}/messages/{id}/pay"), RouteClass::Pay),
            ("GET", Some("/v1/payments"), RouteClass::Read),
            ("POST", Some("/v1/invoices"), RouteClass::Invoice),
            ("GET", Some("/v1/invoices/{payment_hash}"), RouteClass::Read),
            ("GET", Some("/v1/events/stream"), RouteClass::Stream),
            ("GET", Some("/v1/rooms/{room}/ws"), RouteClass::Stream),
            ("POST", Some("/v1/agents/{id}/fund"), RouteClass::Operator),
            ("POST", Some("/v1/approvals/{id}/approve"), RouteClass::Operator),
            ("POST", Some("/mcp"), RouteClass::Mcp),
            ("GET", Some("/metrics"), RouteClass::Other),
            ("GET", None, RouteClass::Other),
        ];
        for (method, route, class) in cases {
            assert_eq!(RouteClass::of(method, route), class, "{method} {route:?}");
        }
    }
}
