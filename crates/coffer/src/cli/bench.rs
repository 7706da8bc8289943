//! `coffer bench`: drives a gateway over HTTP and reports throughput and
//! latency. One payment = the payee creates an invoice, the payer pays it,
//! both over HTTP. Without `--url` it starts its own gateway (a child
//! process on a temporary folder) and audits the store afterwards.
//!
//! It also measures a trivial route (`GET /healthz`) at the same
//! concurrency, so the report says how close payments get to this machine's
//! HTTP ceiling. With `--trade N` it then measures trade in the same run:
//! N hold invoices paid and settled (three calls a pair: create, pay,
//! settle) and N charges against metered sessions (one open session per
//! worker, one call a charge).
//!
//! With `--signed` every agent also registers an Ed25519 signing key, and
//! the payments are measured twice in the same run, in interleaved rounds
//! (bearer, signed, signed, bearer, so neither side gets the younger
//! store): once with the bearer token alone, once with every call signed
//! (RFC 9421) and checked by the gateway.

use super::CliResult;
use base64::Engine as _;
use clap::Args;
use coffer_client::signing::Signer;
use coffer_client::{
    ChargeRequest, Client, CreateInvoiceRequest, CreateSigningKeyRequest, OpenSessionRequest, PayRequest,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bounds on a run, so a typo cannot start an endless one.
const PAYMENTS_MAX: u64 = 10_000_000;
const CONCURRENCY_MAX: usize = 1_024;
const AGENTS_MAX: usize = 10_000;
const INSTANCES_MAX: usize = 8;
const IDLE_STREAMS_MAX: usize = 4_096;
/// The wait, at most, for every instance to learn the agents' keys.
const KEY_NEWS_WAIT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct BenchArgs {
    /// A running gateway; without it, bench starts its own.
    #[arg(long, env = "COFFER_URL")]
    url: Option<String>,
    /// Operator token of the gateway at `--url`.
    #[arg(long, env = "COFFER_OPERATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data folder of the gateway bench starts (kept afterwards); a
    /// temporary one by default.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Store of the gateway bench starts: sqlite, or postgres (with
    /// --database).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    store: String,
    /// The PostgreSQL database (a postgres:// URL) of `--store postgres`;
    /// best a fresh one.
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Gateway instances bench starts on that one database; the workers
    /// spread over them (`--store postgres` only).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Payments measured.
    #[arg(long, default_value_t = 20_000)]
    payments: u64,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Agents that pay each other.
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// A policy file (TOML, as for `coffer policy apply`) set on every
    /// agent: measures the constitution on the hot path.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Store this many payments first (not measured), to show the cost of a
    /// long history.
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// How the gateway bench starts makes commits durable: `full` (synced
    /// to disk, the default) or `process` (survives a crash of the process
    /// only). See `coffer serve --durability`.
    #[arg(long, default_value = "full")]
    durability: crate::store::sqlite::Durability,
    /// Event streams (`GET /v1/events/stream`) opened with the first agent's
    /// key before the run and held through it, their events read and
    /// dropped: what idle watchers cost. Past `COFFER_LIMIT_STREAMS_PER_KEY`
    /// (8 by default) the gateway needs that raised; the one bench starts
    /// inherits it from this environment.
    #[arg(long, default_value_t = 0)]
    idle_streams: usize,
    /// Hold-and-settle pairs, and session charges, measured after the
    /// payments (0 skips both).
    #[arg(long, default_value_t = 0)]
    trade: u64,
    /// Requests to the trivial route for the ceiling (0 skips it).
    #[arg(long, default_value_t = 40_000)]
    ceiling_requests: u64,
    /// Also measure the payments with every call signed (RFC 9421) by a
    /// key each agent registers, beside the bearer-only ones.
    #[arg(long)]
    signed: bool,
    /// Nostr Wallet Connect round trips measured after the payments, through
    /// the first relay of `COFFER_NWC_RELAYS` (which the gateway bench
    /// starts inherits): the relay's no-op ceiling, `get_balance` and
    /// `pay_invoice`, this many each (0 skips them).
    #[arg(long, default_value_t = 0)]
    nwc: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
pub(super) struct Latency {
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    store: String,
    /// `full` or `process`; what a gateway at `--url` runs with is not known.
    durability: Option<&'static str>,
    instances: usize,
    payments: u64,
    concurrency: usize,
    agents: usize,
    history: u64,
    idle_streams: usize,
    policy: bool,
    elapsed_s: f64,
    payments_per_s: f64,
    pay_p99_ms: f64,
    invoice: Latency,
    pay: Latency,
    errors: BTreeMap<String, u64>,
    ceiling_requests_per_s: Option<f64>,
    /// HTTP calls per second during the payment run (two per payment)
    /// divided by the trivial route's rate.
    ceiling_ratio: Option<f64>,
    /// Hold invoices paid then settled, each pair timed from the invoice to
    /// the settlement.
    hold_settle: Option<Trade>,
    /// Charges against open metered sessions.
    session_charges: Option<Trade>,
    /// With `--signed`: the same payments with every call signed, measured
    /// in the same run as the bearer-only ones above.
    signed: Option<Signed>,
    /// With `--nwc`: NWC round trips through a relay.
    nwc: Option<super::bench_nwc::NwcReport>,
    audit: String,
}

#[derive(Serialize)]
struct Signed {
    payments: u64,
    payments_per_s: f64,
    pay_p99_ms: f64,
    invoice: Latency,
    pay: Latency,
    errors: BTreeMap<String, u64>,
    /// Signed payments/s over bearer-only payments/s.
    ratio: f64,
    /// CPU time the gateway processes spent per payment, bearer-only and
    /// signed: what signing costs the gateway, apart from the bench client
    /// that shares the machine (`None` for a gateway at `--url`, or off
    /// Linux).
    gateway_cpu_us_per_payment: Option<CpuPerPayment>,
    /// The same for this bench process, which signs.
    client_cpu_us_per_payment: Option<CpuPerPayment>,
}

#[derive(Serialize, Clone, Copy)]
struct CpuPerPayment {
    bearer: f64,
    signed: f64,
}

impl CpuPerPayment {
    /// From each run's (payments, CPU time).
    fn of(bearer: (u64, Option<Duration>), signed: (u64, Option<Duration>)) -> Option<CpuPerPayment> {
        let per_payment =
            |(payments, cpu): (u64, Option<Duration>)| Some(cpu?.as_secs_f64() * 1e6 / payments.max(1) as f64);
        Some(CpuPerPayment { bearer: per_payment(bearer)?, signed: per_payment(signed)? })
    }

    fn text(&self) -> String {
        let more = (self.signed / self.bearer.max(f64::MIN_POSITIVE) - 1.0) * 100.0;
        format!("{:.0} µs bearer-only, {:.0} µs signed ({more:+.0}%)", self.bearer, self.signed)
    }
}

#[derive(Serialize)]
pub(super) struct Trade {
    pub(super) done: u64,
    pub(super) per_s: f64,
    pub(super) latency: Latency,
    pub(super) errors: BTreeMap<String, u64>,
}

impl Trade {
    pub(super) fn of(run: TradeRun) -> Trade {
        let per_s = run.done as f64 / run.elapsed.as_secs_f64();
        Trade { done: run.done, per_s, latency: latency(run.latency_us), errors: run.errors }
    }
}

pub async fn run(args: BenchArgs) -> CliResult {
    validate(&args)?;
    // Instances after the first are dropped first: the first owns the folder.
    let mut own: Vec<super::child::OwnGateway> = Vec::new();
    let (urls, token) = match (&args.url, &args.token) {
        (Some(url), Some(token)) => (vec![url.clone()], token.clone()),
        (Some(_), None) => return Err("--url needs the operator token (--token or COFFER_OPERATOR_TOKEN)".into()),
        (None, _) => {
            let database = if args.store == "postgres" { args.database.clone() } else { None };
            let first = super::child::OwnGateway::start_with(args.data.clone(), database, args.durability).await?;
            for _ in 1..args.instances {
                let other = first.another_instance().await?;
                own.push(other);
            }
            own.insert(0, first);
            (own.iter().map(|g| g.url.clone()).collect(), own[0].token.clone())
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY_MAX)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let policy = match &args.policy {
        Some(path) => Some(serde_json::to_value(super::policy::read(path)?.policy).map_err(|e| e.to_string())?),
        None => None,
    };
    let made = setup_agents(&http, &urls[0], &token, args.agents, policy.as_ref()).await?;
    let keys: Vec<String> = made.iter().map(|(_, key)| key.clone()).collect();
    // The agents on every instance: worker w works through instance w % n.
    let agents: Vec<Vec<Client>> =
        urls.iter().map(|url| keys.iter().map(|k| Client::with_http(http.clone(), url, k)).collect()).collect();
    for instance in &agents[1..] {
        known_keys(instance).await?;
    }
    let signing = match args.signed {
        true => Some(signing_agents(&Client::with_http(http.clone(), &urls[0], &token), &made, &agents).await?),
        false => None,
    };
    if args.history > 0 {
        eprintln!("bench: storing {} payments of history first", args.history);
        run_payments(&agents, args.history, args.concurrency).await;
    }
    let ceiling = if args.ceiling_requests > 0 {
        Some(ceiling(&agents[0][0], args.ceiling_requests, args.concurrency).await)
    } else {
        None
    };
    let streams = open_idle_streams(&urls[0], &keys[0], args.idle_streams).await?;
    let (run, signed) = match &signing {
        None => (run_payments(&agents, args.payments, args.concurrency).await, None),
        Some(signing) => {
            let gateways: Vec<u32> = own.iter().filter_map(super::child::OwnGateway::pid).collect();
            let gateways = if gateways.is_empty() || gateways.len() < own.len() { None } else { Some(gateways) };
            let (bearer, signed) =
                run_both(&agents, signing, args.payments, args.concurrency, gateways.as_deref()).await;
            (bearer, Some(signed))
        }
    };
    let trade = match args.trade {
        0 => None,
        n => Some((
            Trade::of(run_trade(&agents[0], n, args.concurrency, Kind::HoldSettle).await),
            Trade::of(run_trade(&agents[0], n, args.concurrency, Kind::Charge).await),
        )),
    };
    let nwc = match args.nwc {
        0 => None,
        n => {
            let operator = Client::with_http(http.clone(), &urls[0], &token);
            let named: Vec<(String, Client)> =
                made.iter().map(|(id, _)| id.clone()).zip(agents[0].iter().cloned()).collect();
            Some(super::bench_nwc::run(&operator, &named, n, args.concurrency).await?)
        }
    };
    streams.iter().for_each(tokio::task::JoinHandle::abort);
    let audit = match own.first() {
        Some(gw) => gw.audit().await?,
        None => "skipped: the gateway at --url is audited with `coffer audit` on its host".into(),
    };
    let mut report = report(&args, run, signed, ceiling, trade, audit);
    report.nwc = nwc;
    print_report(&report, args.json)?;
    while let Some(gw) = own.pop() {
        drop(gw);
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    if args.payments == 0 || args.payments > PAYMENTS_MAX {
        return Err(format!("--payments: 1 to {PAYMENTS_MAX}"));
    }
    if args.trade > PAYMENTS_MAX {
        return Err(format!("--trade: 0 to {PAYMENTS_MAX}"));
    }
    if args.concurrency == 0 || args.concurrency > CONCURRENCY_MAX {
        return Err(format!("--concurrency: 1 to {CONCURRENCY_MAX}"));
    }
    if args.agents < 2 || args.agents > AGENTS_MAX {
        return Err(format!("--agents: 2 to {AGENTS_MAX}"));
    }
    if args.idle_streams > IDLE_STREAMS_MAX {
        return Err(format!("--idle-streams: 0 to {IDLE_STREAMS_MAX}"));
    }
    if args.instances == 0 || args.instances > INSTANCES_MAX {
        return Err(format!("--instances: 1 to {INSTANCES_MAX}"));
    }
    if args.store == "postgres" && args.url.is_none() && args.database.is_none() {
        return Err("--store postgres needs --database (or COFFER_DATABASE_URL)".into());
    }
    if args.instances > 1 && (args.store != "postgres" || args.url.is_some()) {
        return Err("--instances: several instances need --store postgres (and no --url)".into());
    }
    Ok(())
}

/// Waits until an instance knows every agent's key (keys made on another
/// instance reach it within the key refresh period).
async fn known_keys(agents: &[Client]) -> Result<(), String> {
    let start = Instant::now();
    for agent in agents {
        while agent.wallet().await.is_err() {
            if start.elapsed() > KEY_NEWS_WAIT {
                return Err("an instance did not learn the agents' keys".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates the agents, mints and funds each so that the ring of payments
/// never runs dry. Returns their ids and keys.
async fn setup_agents(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
    policy: Option<&serde_json::Value>,
) -> Result<Vec<(String, String)>, String> {
    let operator = Client::with_http(http.clone(), url, token);
    let per_agent_msat: u64 = 1_000_000_000;
    let total = per_agent_msat.checked_mul(count as u64).ok_or("too many agents")?;
    operator.mint(total).await.map_err(|e| format!("mint (is the gateway in dev mode?): {e}"))?;
    let mut agents = Vec::with_capacity(count);
    for i in 0..count {
        let created = operator.create_agent(&format!("bench-{i}")).await.map_err(|e| e.to_string())?;
        operator.fund_agent(&created.id, per_agent_msat).await.map_err(|e| e.to_string())?;
        if let Some(policy) = policy {
            operator.set_policy(&created.id, policy).await.map_err(|e| format!("setting the policy: {e}"))?;
        }
        agents.push((created.id, created.key));
    }
    Ok(agents)
}

/// Registers an Ed25519 signing key for every agent (not `required`, so the
/// bearer-only rounds still spend: a signature sent is checked all the same)
/// and returns the agents' clients on every instance, signing with it.
async fn signing_agents(
    operator: &Client,
    made: &[(String, String)],
    agents: &[Vec<Client>],
) -> Result<Vec<Vec<Client>>, String> {
    let mut signers = Vec::with_capacity(made.len());
    for (agent_id, _) in made {
        let seed = Signer::generate_seed().map_err(|e| e.to_string())?;
        let public = Signer::ed25519("pending", &seed).map_err(|e| e.to_string())?;
        let request = CreateSigningKeyRequest {
            alg: None,
            public_key: base64::engine::general_purpose::STANDARD.encode(public.public_key()),
            required: false,
        };
        let key = operator.create_signing_key(agent_id, &request).await.map_err(|e| err("signing key", &e))?;
        signers.push(Arc::new(Signer::ed25519(&key.id, &seed).map_err(|e| e.to_string())?));
    }
    let signing: Vec<Vec<Client>> = agents
        .iter()
        .map(|instance| instance.iter().zip(&signers).map(|(c, s)| c.clone().with_signer(Arc::clone(s))).collect())
        .collect();
    for instance in &signing[1..] {
        known_signing_keys(instance).await?;
    }
    Ok(signing)
}

/// Waits until an instance knows every agent's signing key: a signed
/// invoice (harmless: it is never paid) is refused until then.
async fn known_signing_keys(agents: &[Client]) -> Result<(), String> {
    let start = Instant::now();
    let probe = CreateInvoiceRequest { amount_msat: 1_000, ..Default::default() };
    for agent in agents {
        while agent.create_invoice(&probe).await.is_err() {
            if start.elapsed() > KEY_NEWS_WAIT {
                return Err("an instance did not learn the agents' signing keys".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The payments, bearer-only and signed, in four rounds of a quarter each:
/// bearer, signed, signed, bearer. Returns (bearer, signed), each with the
/// CPU time the `gateways` processes and this one spent in its rounds.
async fn run_both(
    bearer: &[Vec<Client>],
    signed: &[Vec<Client>],
    payments: u64,
    concurrency: usize,
    gateways: Option<&[u32]>,
) -> (RunResult, RunResult) {
    const ROUNDS: [bool; 4] = [false, true, true, false];
    let (mut plain, mut signing) = (RunResult::empty(), RunResult::empty());
    let gateways_cpu =
        || gateways.and_then(|pids| pids.iter().map(|&pid| cpu_time(Some(pid))).sum::<Option<Duration>>());
    for (i, is_signed) in ROUNDS.into_iter().enumerate() {
        // The rounds share the payments out, the last one taking the rest.
        let share = payments / 4 + if i == 3 { payments % 4 } else { 0 };
        let (agents, into) = if is_signed { (signed, &mut signing) } else { (bearer, &mut plain) };
        let (gateway_before, client_before) = (gateways_cpu(), cpu_time(None));
        let mut round = run_payments(agents, share.max(1), concurrency).await;
        round.gateway_cpu = gateways_cpu().zip(gateway_before).map(|(after, before)| after.saturating_sub(before));
        round.client_cpu = cpu_time(None).zip(client_before).map(|(after, before)| after.saturating_sub(before));
        into.absorb(round);
    }
    (plain, signing)
}

/// The CPU time (user and system) process `pid`, or this one, has used so
/// far, from `/proc` (Linux); `None` elsewhere or once it has gone.
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    /// `/proc` counts in USER_HZ ticks, which Linux fixes at 100 a second.
    const TICKS_PER_S: u64 = 100;
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name (in parentheses, may hold spaces):
    // the state is field 3 of proc(5), so utime (14) and stime (15) are the
    // 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()?.checked_add(fields.next()?.parse::<u64>().ok()?)?;
    Some(Duration::from_millis(ticks.checked_mul(1000 / TICKS_PER_S)?))
}

/// Opens `count` event streams with `key`, each drained by a task of its
/// own until aborted.
async fn open_idle_streams(url: &str, key: &str, count: usize) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    // No overall timeout: a stream lasts the run.
    let http = reqwest::Client::builder().http1_only().build().map_err(|e| e.to_string())?;
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let response =
            http.get(format!("{url}/v1/events/stream")).bearer_auth(key).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "idle stream {i}: {status} {body} (raise COFFER_LIMIT_STREAMS_PER_KEY, and COFFER_LIMIT_STREAMS_TOTAL past 1024)"
            ));
        }
        streams.push(tokio::spawn(async move {
            let mut response = response;
            while let Ok(Some(_)) = response.chunk().await {}
        }));
    }
    Ok(streams)
}

struct RunResult {
    elapsed: Duration,
    succeeded: u64,
    invoice_us: Vec<u32>,
    pay_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// CPU time the gateways and this process spent, where measured.
    gateway_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
}

impl RunResult {
    fn empty() -> RunResult {
        RunResult {
            elapsed: Duration::ZERO,
            succeeded: 0,
            invoice_us: Vec::new(),
            pay_us: Vec::new(),
            errors: BTreeMap::new(),
            gateway_cpu: Some(Duration::ZERO),
            client_cpu: Some(Duration::ZERO),
        }
    }

    /// Adds another run's (or worker's) payments, time and errors to this one.
    fn absorb(&mut self, other: RunResult) {
        self.elapsed += other.elapsed;
        self.succeeded += other.succeeded;
        self.invoice_us.extend(other.invoice_us);
        self.pay_us.extend(other.pay_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        // Unmeasured in any part: unmeasured.
        self.gateway_cpu = self.gateway_cpu.zip(other.gateway_cpu).map(|(a, b)| a + b);
        self.client_cpu = self.client_cpu.zip(other.client_cpu).map(|(a, b)| a + b);
    }
}

async fn run_payments(agents: &[Vec<Client>], payments: u64, concurrency: usize) -> RunResult {
    let next = Arc::new(AtomicU64::new(0));
    let agents: Arc<Vec<Vec<Client>>> = Arc::new(agents.to_vec());
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (next, agents) = (Arc::clone(&next), Arc::clone(&agents));
            tokio::spawn(async move { worker(w, &agents, &next, payments).await })
        })
        .collect();
    let mut result = RunResult::empty();
    for w in workers {
        match w.await {
            // A worker's elapsed is zero: the run's is measured here.
            Ok(part) => result.absorb(part),
            Err(e) => *result.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    result.elapsed = started.elapsed();
    result
}

async fn worker(w: usize, instances: &[Vec<Client>], next: &AtomicU64, payments: u64) -> RunResult {
    let agents = &instances[w % instances.len()];
    let mut r = RunResult::empty();
    let n = agents.len();
    while next.fetch_add(1, Ordering::Relaxed) < payments {
        // Worker w pays from agent w to agent w+1 (mod n): spread over
        // agents, and a ring, so no wallet drains.
        let (payer, payee) = (&agents[w % n], &agents[(w + 1) % n]);
        let t = Instant::now();
        let invoice = payee
            .create_invoice(&CreateInvoiceRequest {
                amount_msat: 1_000,
                memo: None,
                expiry_secs: None,
                ..Default::default()
            })
            .await;
        r.invoice_us.push(micros(t));
        let invoice = match invoice {
            Ok(i) => i,
            Err(e) => {
                *r.errors.entry(format!("invoice: {}", e.code().unwrap_or("transport"))).or_default() += 1;
                continue;
            }
        };
        let t = Instant::now();
        let paid = payer
            .pay(
                &PayRequest { bolt11: invoice.bolt11, purpose: None, amount_msat: None, ..Default::default() },
                &invoice.payment_hash,
            )
            .await;
        r.pay_us.push(micros(t));
        match paid {
            Ok(_) => r.succeeded += 1,
            Err(e) => *r.errors.entry(format!("pay: {}", e.code().unwrap_or("transport"))).or_default() += 1,
        }
    }
    r
}

#[derive(Clone, Copy)]
enum Kind {
    HoldSettle,
    Charge,
}

pub(super) struct TradeRun {
    pub(super) elapsed: Duration,
    pub(super) done: u64,
    pub(super) latency_us: Vec<u32>,
    pub(super) errors: BTreeMap<String, u64>,
}

/// `count` hold-and-settle pairs, or charges, by `concurrency` workers.
async fn run_trade(agents: &[Client], count: u64, concurrency: usize, kind: Kind) -> TradeRun {
    let next = Arc::new(AtomicU64::new(0));
    let agents: Arc<Vec<Client>> = Arc::new(agents.to_vec());
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (next, agents) = (Arc::clone(&next), Arc::clone(&agents));
            tokio::spawn(async move { trade_worker(w, &agents, &next, count, kind).await })
        })
        .collect();
    let mut all = TradeRun { elapsed: Duration::ZERO, done: 0, latency_us: Vec::new(), errors: BTreeMap::new() };
    for w in workers {
        match w.await {
            Ok(part) => {
                all.done += part.done;
                all.latency_us.extend(part.latency_us);
                for (k, v) in part.errors {
                    *all.errors.entry(k).or_default() += v;
                }
            }
            Err(e) => *all.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    all.elapsed = started.elapsed();
    all
}

async fn trade_worker(w: usize, agents: &[Client], next: &AtomicU64, count: u64, kind: Kind) -> TradeRun {
    let mut r = TradeRun { elapsed: Duration::ZERO, done: 0, latency_us: Vec::new(), errors: BTreeMap::new() };
    let n = agents.len();
    let (payer, payee) = (&agents[w % n], &agents[(w + 1) % n]);
    // A session per worker, large enough for every charge it could make.
    let session = match kind {
        Kind::HoldSettle => None,
        Kind::Charge => match open_session(payer, payee, count).await {
            Ok(id) => Some(id),
            Err(e) => {
                *r.errors.entry(format!("open session: {e}")).or_default() += 1;
                return r;
            }
        },
    };
    while next.fetch_add(1, Ordering::Relaxed) < count {
        let t = Instant::now();
        let outcome = match &session {
            None => hold_and_settle(payer, payee).await,
            Some(id) => {
                let charge = ChargeRequest { amount_msat: 1_000, memo: None };
                let key = format!("bench-{w}-{}", r.done + r.errors.values().sum::<u64>());
                payee.charge(id, &charge, &key).await.map(drop).map_err(|e| err("charge", &e))
            }
        };
        r.latency_us.push(micros(t));
        match outcome {
            Ok(()) => r.done += 1,
            Err(e) => *r.errors.entry(e).or_default() += 1,
        }
    }
    if let Some(id) = &session
        && let Err(e) = payer.close_session(id).await
    {
        *r.errors.entry(err("close session", &e)).or_default() += 1;
    }
    r
}

fn err(what: &str, e: &coffer_client::Error) -> String {
    format!("{what}: {}", e.code().unwrap_or("transport"))
}

async fn open_session(payer: &Client, payee: &Client, count: u64) -> Result<String, String> {
    let payee_id = payee.wallet().await.map_err(|e| err("wallet", &e))?.agent_id;
    let max_msat = count.saturating_mul(1_000).max(1_000);
    let request = OpenSessionRequest { payee: payee_id, max_msat, expires_in_secs: 3_600, ..Default::default() };
    Ok(payer.open_session(&request).await.map_err(|e| err("open", &e))?.id)
}

async fn hold_and_settle(payer: &Client, payee: &Client) -> Result<(), String> {
    let request = CreateInvoiceRequest { amount_msat: 1_000, hold: true, ..Default::default() };
    let invoice = payee.create_invoice(&request).await.map_err(|e| err("hold invoice", &e))?;
    let pay = PayRequest { bolt11: invoice.bolt11, ..Default::default() };
    payer.pay(&pay, &invoice.payment_hash).await.map_err(|e| err("pay", &e))?;
    payee.settle_invoice(&invoice.payment_hash).await.map_err(|e| err("settle", &e))?;
    Ok(())
}

async fn ceiling(client: &Client, requests: u64, concurrency: usize) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, client) = (Arc::clone(&next), client.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let _ = client.health().await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    requests as f64 / started.elapsed().as_secs_f64()
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

fn latency(mut samples: Vec<u32>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        f64::from(samples[i.min(samples.len() - 1)]) / 1000.0
    };
    Latency { p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: at(1.0) }
}

fn report(
    args: &BenchArgs,
    run: RunResult,
    signed: Option<RunResult>,
    ceiling: Option<f64>,
    trade: Option<(Trade, Trade)>,
    audit: String,
) -> Report {
    let elapsed_s = run.elapsed.as_secs_f64();
    let payments_per_s = run.succeeded as f64 / elapsed_s;
    let calls_per_s = (run.invoice_us.len() + run.pay_us.len()) as f64 / elapsed_s;
    let bearer_cpu = ((run.succeeded, run.gateway_cpu), (run.succeeded, run.client_cpu));
    let pay = latency(run.pay_us);
    let signed = signed.map(|s| {
        let per_s = s.succeeded as f64 / s.elapsed.as_secs_f64();
        let gateway_cpu_us_per_payment = CpuPerPayment::of(bearer_cpu.0, (s.succeeded, s.gateway_cpu));
        let client_cpu_us_per_payment = CpuPerPayment::of(bearer_cpu.1, (s.succeeded, s.client_cpu));
        let pay = latency(s.pay_us);
        Signed {
            payments: s.succeeded,
            payments_per_s: per_s,
            pay_p99_ms: pay.p99_ms,
            invoice: latency(s.invoice_us),
            pay,
            errors: s.errors,
            ratio: per_s / payments_per_s,
            gateway_cpu_us_per_payment,
            client_cpu_us_per_payment,
        }
    });
    let (hold_settle, session_charges) = match trade {
        Some((pairs, charges)) => (Some(pairs), Some(charges)),
        None => (None, None),
    };
    Report {
        store: args.store.clone(),
        durability: (args.url.is_none() && args.store == "sqlite").then_some(args.durability.as_str()),
        instances: args.instances,
        payments: run.succeeded,
        concurrency: args.concurrency,
        agents: args.agents,
        history: args.history,
        idle_streams: args.idle_streams,
        policy: args.policy.is_some(),
        elapsed_s,
        payments_per_s,
        pay_p99_ms: pay.p99_ms,
        invoice: latency(run.invoice_us),
        pay,
        errors: run.errors,
        ceiling_requests_per_s: ceiling,
        ceiling_ratio: ceiling.map(|c| calls_per_s / c),
        hold_settle,
        session_charges,
        signed,
        nwc: None,
        audit,
    }
}

fn print_report(r: &Report, json: bool) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!(
        "payments      {} in {:.2} s at concurrency {} over {} agents (history {}), {} on {} instance(s)",
        r.payments, r.elapsed_s, r.concurrency, r.agents, r.history, r.store, r.instances
    );
    if let Some(durability) = r.durability {
        println!("durability    {durability}");
    }
    if r.idle_streams > 0 {
        println!("idle streams  {} open with one agent's key through the run", r.idle_streams);
    }
    println!("throughput    {:.0} payments/s", r.payments_per_s);
    for (name, l) in [("invoice", &r.invoice), ("pay", &r.pay)] {
        println!(
            "{name:<13} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    if let (Some(c), Some(ratio)) = (r.ceiling_requests_per_s, r.ceiling_ratio) {
        println!("ceiling       {c:.0} req/s on GET /healthz; payment calls reach {:.0}% of it", ratio * 100.0);
    }
    println!("errors        {}", if r.errors.is_empty() { "none".to_owned() } else { format!("{:?}", r.errors) });
    if let Some(nwc) = &r.nwc {
        print!("{}", nwc.text());
    }
    for (name, unit, trade) in
        [("hold+settle", "pairs/s", &r.hold_settle), ("charges", "charges/s", &r.session_charges)]
    {
        let Some(t) = trade else { continue };
        let errors = if t.errors.is_empty() { "no errors".to_owned() } else { format!("{:?}", t.errors) };
        println!(
            "{name:<13} {} at {:.0} {unit}; p50 {:.2} ms  p99 {:.2} ms; {errors}",
            t.done, t.per_s, t.latency.p50_ms, t.latency.p99_ms
        );
    }
    if let Some(s) = &r.signed {
        let errors = if s.errors.is_empty() { "no errors".to_owned() } else { format!("{:?}", s.errors) };
        println!(
            "signed        {} at {:.0} payments/s ({:.0}% of bearer-only); pay p50 {:.2} ms  p99 {:.2} ms; {errors}",
            s.payments,
            s.payments_per_s,
            s.ratio * 100.0,
            s.pay.p50_ms,
            s.pay.p99_ms
        );
        if let (Some(gateway), Some(client)) = (s.gateway_cpu_us_per_payment, s.client_cpu_us_per_payment) {
            println!("cpu/payment   gateway {}; bench client {}", gateway.text(), client.text());
        }
    }
    println!("audit         {}", r.audit);
    Ok(())
}
