//! Three gateway instances on one PostgreSQL database take concurrent
//! payments from shared wallets, publishing the outbox to NATS JetStream and
//! Redis Streams; one is SIGKILLed mid-load: the first started, which holds
//! the buses' leases, so another instance must take them over. Afterwards
//! every acknowledged payment is in the ledger, no wallet paid more than it
//! had, a retried request pays at most once, `coffer audit` passes, and both
//! buses carry every event of the outbox, in order per agent.
//!
//! Needs PostgreSQL on 127.0.0.1:5432, NATS JetStream on :4222 and Redis on
//! :6379 (scripts/services.sh). Without NATS or Redis (outside CI) the bus
//! part is skipped, loudly.
//!
//! The buses are shared by every test and run: this test reads only what
//! came after its start, and only its own gateway's events (the `gateway`
//! field, the node key of this test's fresh data folder).

mod common;

use coffer_client::{Invoice, InvoiceStatus, Payment};
use common::{Gateway, try_send};
use reqwest::Method;
use serde_json::Value;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INSTANCES: usize = 3;
const WORKERS: usize = 12;
/// Fewer wallets than workers: each wallet is spent from every instance.
const PAYERS: usize = 3;
const PAYEES: usize = 3;
/// Enough for a few hundred payments per wallet: some run dry under load.
const FUNDING_MSAT: u64 = 400_000;
/// The first instance: it started first, so it holds the bus leases.
const KILLED: usize = 0;
/// A survivor, for the checks afterwards.
const LIVE: usize = 1;
/// Kill once this many payments were acknowledged, or after `LOAD_MAX`.
const ACKED_BEFORE_KILL: usize = 150;
const LOAD_MAX: Duration = Duration::from_secs(5);
/// The load goes on this long on the survivors after the kill.
const AFTER_KILL: Duration = Duration::from_secs(1);
/// How long the buses may take to carry every event after the load: a lease
/// takeover (10 s) after the kill, then the backlog, on a loaded machine.
const BUS_WAIT: Duration = Duration::from_secs(90);
const NATS_ADDR: &str = "127.0.0.1:4222";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const REDIS_STREAM: &str = "coffer:events";
/// Redis entries read per XRANGE.
const REDIS_PAGE: usize = 1_000;

#[derive(Clone, Debug)]
struct Acked {
    payer: usize,
    id: String,
    hash: String,
    amount_msat: u64,
}

#[derive(Clone, Debug)]
struct InFlight {
    payer: usize,
    bolt11: String,
    hash: String,
    idempotency_key: String,
}

#[derive(Default, Debug)]
struct WorkerLog {
    acked: Vec<Acked>,
    in_flight: Option<InFlight>,
    /// Refusals for want of funds: the wallet ran dry, as it should.
    refused: usize,
    unexpected: Vec<String>,
}

async fn all_pages<T: serde::de::DeserializeOwned>(gw: &Gateway, key: &str, path: &str) -> Vec<T> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=200&cursor={c}"),
            None => format!("{path}?limit=200"),
        };
        let r = common::send(gw.request(Method::GET, &url, Some(key))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let page: coffer_client::Page<T> = serde_json::from_value(r.json).expect("a page");
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return items,
        }
    }
}

/// Every instance knows `key` at once (each reads keys from the database).
async fn known_everywhere(gws: &[Gateway], key: &str) {
    for gw in gws {
        let status = common::send(gw.request(Method::GET, "/v1/wallet", Some(key))).await.status;
        assert_eq!(status, 200, "{} knows a key made elsewhere", gw.url());
    }
}

/// One worker: its payee makes an invoice on the worker's instance, the
/// shared payer pays it there, until the instance dies, the wallet runs
/// dry or the deadline passes.
async fn work(
    w: usize,
    http: reqwest::Client,
    url: String,
    payer: (usize, String),
    payee_key: String,
    acked_count: Arc<AtomicUsize>,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let deadline = Instant::now() + LOAD_MAX + AFTER_KILL + Duration::from_secs(2);
    for n in 0u64.. {
        if Instant::now() > deadline {
            break;
        }
        let amount_msat = 1_000 + (w as u64 * 37 + n * 11) % 997;
        let create = http
            .post(format!("{url}/v1/invoices"))
            .bearer_auth(&payee_key)
            .json(&json!({"amount_msat": amount_msat, "memo": format!("w{w} n{n}")}));
        let invoice = match try_send(create).await {
            Ok(r) if r.status == 201 => r.json,
            Ok(r) => {
                log.unexpected.push(format!("create invoice: {r:?}"));
                break;
            }
            Err(_) => break, // the instance is gone
        };
        let hash = invoice["payment_hash"].as_str().unwrap_or_default().to_owned();
        let bolt11 = invoice["bolt11"].as_str().unwrap_or_default().to_owned();
        let idempotency_key = format!("kill-{w}-{n}");
        let pay = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&payer.1)
            .header("Idempotency-Key", &idempotency_key)
            .json(&json!({"bolt11": bolt11, "purpose": "load"}));
        match try_send(pay).await {
            Ok(r) if r.status == 200 => {
                let id = r.json["id"].as_str().unwrap_or_default().to_owned();
                log.acked.push(Acked { payer: payer.0, id, hash, amount_msat });
                acked_count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) if r.code() == Some("insufficient-balance") => {
                log.refused += 1;
                break;
            }
            Ok(r) => {
                log.unexpected.push(format!("pay: {r:?}"));
                break;
            }
            Err(_) => {
                log.in_flight = Some(InFlight { payer: payer.0, bolt11, hash, idempotency_key });
                break;
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_one_killed_mid_load_lose_nothing_acknowledged_and_never_overspend() {
    let buses = Buses::connect().await;
    let bus_args: &[&str] = match &buses {
        Some(_) => &["--nats-url", "nats://127.0.0.1:4222", "--redis-url", REDIS_URL],
        None => &[],
    };
    let first = Gateway::start_postgres_with(bus_args).await;
    let mut gws = vec![first];
    for _ in 1..INSTANCES {
        gws.push(gws[0].another_instance().await);
    }
    let mut payers = Vec::new();
    for i in 0..PAYERS {
        let agent = gws[0].new_agent(&format!("payer-{i}"), FUNDING_MSAT).await;
        known_everywhere(&gws, &agent.2).await;
        payers.push(agent);
    }
    let mut payees = Vec::new();
    for i in 0..PAYEES {
        let agent = gws[0].new_agent(&format!("payee-{i}"), 0).await;
        known_everywhere(&gws, &agent.2).await;
        payees.push(agent);
    }

    let acked_count = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        // Worker w: instance w % 3, wallet (w / 3) % 3: every wallet is
        // spent from every instance at once.
        let gw = &gws[w % INSTANCES];
        let p = (w / INSTANCES) % PAYERS;
        workers.push(tokio::spawn(work(
            w,
            gw.http().clone(),
            gw.url().to_owned(),
            (p, payers[p].2.clone()),
            payees[w % PAYEES].2.clone(),
            Arc::clone(&acked_count),
        )));
    }
    let started = Instant::now();
    while acked_count.load(Ordering::Relaxed) < ACKED_BEFORE_KILL && started.elapsed() < LOAD_MAX {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bus_owners_at_kill = bus_owners(&gws[LIVE]);
    gws[KILLED].kill9().await;
    let acked_at_kill = acked_count.load(Ordering::Relaxed);
    tokio::time::sleep(AFTER_KILL).await;
    let mut logs = Vec::new();
    for w in workers {
        logs.push(w.await.expect("a worker panicked"));
    }
    let unexpected: Vec<_> = logs.iter().flat_map(|l| l.unexpected.clone()).collect();
    assert!(unexpected.is_empty(), "answers other than success or want of funds: {unexpected:#?}");
    let acked: Vec<Acked> = logs.iter().flat_map(|l| l.acked.clone()).collect();
    let in_flight: Vec<InFlight> = logs.iter().filter_map(|l| l.in_flight.clone()).collect();
    assert!(acked_at_kill > 0, "no payment was acknowledged before the kill");
    assert!(acked.len() > acked_at_kill, "the survivors acknowledged nothing after the kill");
    eprintln!(
        "acknowledged {} ({acked_at_kill} before the kill), {} in flight, {} refused for want of funds",
        acked.len(),
        in_flight.len(),
        logs.iter().map(|l| l.refused).sum::<usize>()
    );
    let (ok, report) = gws[0].audit().await;
    assert!(ok, "audit after the kill failed: {report}");

    // Every acknowledged payment is listed by a survivor.
    let live = &gws[LIVE];
    let mut by_payer: Vec<BTreeMap<String, Payment>> = Vec::new();
    for (_, _, key) in &payers {
        let listed: Vec<Payment> = all_pages(live, key, "/v1/payments").await;
        by_payer.push(listed.into_iter().map(|p| (p.id.clone(), p)).collect());
    }
    for a in &acked {
        let listed = by_payer[a.payer].get(&a.id).unwrap_or_else(|| panic!("acknowledged payment lost: {a:?}"));
        assert_eq!((listed.payment_hash.as_str(), listed.amount_msat), (a.hash.as_str(), a.amount_msat));
    }
    let found: usize = by_payer.iter().map(BTreeMap::len).sum();
    assert!(found >= acked.len() && found <= acked.len() + in_flight.len(), "found {found}, acked {}", acked.len());

    // A retry of each request cut off by the kill, on a survivor, pays at
    // most once: the answer it had, or a first payment if it had not
    // committed (funds permitting).
    for f in &in_flight {
        let retry = live
            .request(Method::POST, "/v1/payments", Some(&payers[f.payer].2))
            .header("Idempotency-Key", &f.idempotency_key)
            .json(&json!({"bolt11": f.bolt11, "purpose": "load"}));
        let r = common::send(retry).await;
        assert!(r.status == 200 || r.code() == Some("insufficient-balance"), "retrying {f:?}: {r:?}");
        let listed: Vec<Payment> = all_pages(live, &payers[f.payer].2, "/v1/payments").await;
        let for_hash = listed.iter().filter(|p| p.payment_hash == f.hash).count();
        assert_eq!(for_hash, usize::from(r.status == 200), "{f:?} answered {r:?}");
        by_payer[f.payer] = listed.into_iter().map(|p| (p.id.clone(), p)).collect();
    }

    // No overspend, and conservation exactly.
    let balances = live.balances().await;
    let mut paid_out = 0;
    let mut paid_hashes = BTreeSet::new();
    for (p, (id, _, _)) in payers.iter().enumerate() {
        let spent: u64 = by_payer[p].values().map(|x| x.amount_msat).sum();
        assert!(spent <= FUNDING_MSAT, "payer {p} spent {spent} of {FUNDING_MSAT}");
        assert_eq!(balances[id], FUNDING_MSAT - spent, "payer {p}");
        paid_out += spent;
        for x in by_payer[p].values() {
            assert!(paid_hashes.insert(x.payment_hash.clone()), "an invoice paid twice: {x:?}");
        }
    }
    let mut paid_in = 0;
    for (id, _, key) in &payees {
        let invoices: Vec<Invoice> = all_pages(live, key, "/v1/invoices").await;
        let received: u64 = invoices.iter().filter(|i| i.status == InvoiceStatus::Paid).map(|i| i.amount_msat).sum();
        assert_eq!(balances[id], received, "payee {id}");
        paid_in += received;
    }
    assert_eq!(paid_in, paid_out);
    let (ok, report) = gws[2].audit().await;
    assert!(ok, "audit after the retries failed: {report}");

    // The buses carry every event of the outbox, the killed instance's
    // leases taken over by a survivor.
    if let Some(buses) = buses {
        let expected = outbox(live).await;
        assert!(expected.len() > acked.len() * 2, "the outbox: {} events", expected.len());
        let node = live.operator().health().await.expect("health").node_pubkey;
        let from_nats = buses.nats_events(&node, &expected).await;
        assert_carries("NATS", &from_nats, &expected);
        let from_redis = buses.redis_events(&node, &expected).await;
        assert_carries("Redis", &from_redis, &expected);
        // The killed instance held the leases (it started first): the
        // events after the kill came through a survivor's takeover.
        let owners = bus_owners(live);
        assert_eq!(owners.len(), 2, "{owners:?}");
        assert!(owners.iter().all(|o| !bus_owners_at_kill.contains(o)), "{bus_owners_at_kill:?} -> {owners:?}");
    }
}

/// Who holds the bus leases (the instance names), read from the database.
fn bus_owners(gw: &Gateway) -> Vec<String> {
    let db = gw.database().expect("a PostgreSQL gateway");
    let rows = db.query("SELECT owner FROM leases WHERE name LIKE 'bus:%' ORDER BY name", &[]);
    rows.into_iter().filter_map(|mut r| r.pop().flatten()).collect()
}

/// An event as the checks need it: `(agent_id, id)`.
type Seen = (Option<String>, i64);

fn seen(event: &Value) -> Seen {
    (event["agent_id"].as_str().map(str::to_owned), event["id"].as_i64().expect("an event id"))
}

/// Every event of the outbox, as `GET /v1/events` lists them to the operator.
async fn outbox(gw: &Gateway) -> Vec<Seen> {
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let path = format!("/v1/events?after={after}&limit=1000");
        let r = common::send(gw.request(Method::GET, &path, Some(gw.operator_token()))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let events = r.json["events"].as_array().expect("events");
        let Some(last) = events.last() else { return all };
        after = last["id"].as_i64().expect("an id");
        all.extend(events.iter().map(seen));
    }
}

/// Asserts that `carried` (a bus's events in the bus's order, repeats
/// allowed: at least once) has every event of `expected`, in increasing id
/// order per agent. A repeat is an id not above the last one seen for its
/// agent; a gap or a reordering leaves an id out, and fails. Events after
/// the outbox was read are not looked at.
fn assert_carries(bus: &str, carried: &[Seen], expected: &[Seen]) {
    let newest = expected.iter().map(|(_, id)| *id).max().unwrap_or(0);
    let mut last: HashMap<&Option<String>, i64> = HashMap::new();
    let mut fresh: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
    for (agent, id) in carried.iter().filter(|(_, id)| *id <= newest) {
        let last = last.entry(agent).or_insert(0);
        if *id > *last {
            *last = *id;
            fresh.entry(agent.clone()).or_default().push(*id);
        }
    }
    let mut want: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
    for (agent, id) in expected {
        want.entry(agent.clone()).or_default().push(*id);
    }
    assert_eq!(fresh, want, "{bus} carries every event of the outbox, in order per agent");
}

/// The test's connections to NATS JetStream and Redis, and where each
/// stream stood before the test: it reads only after that.
struct Buses {
    js: async_nats::jetstream::Context,
    nats_from: u64,
    redis: redis::aio::MultiplexedConnection,
    redis_after: String,
}

impl Buses {
    async fn connect() -> Option<Buses> {
        if !common::service_up(NATS_ADDR, "NATS").await || !common::service_up("127.0.0.1:6379", "Redis").await {
            return None;
        }
        let js = async_nats::jetstream::new(async_nats::connect(NATS_ADDR).await.expect("connecting to NATS"));
        let nats_from = match js.get_stream("COFFER_EVENTS").await {
            Ok(mut stream) => stream.info().await.expect("the stream's info").state.last_sequence + 1,
            Err(_) => 1,
        };
        let client = redis::Client::open(REDIS_URL).expect("the Redis URL");
        let mut redis = client.get_multiplexed_async_connection().await.expect("connecting to Redis");
        let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(REDIS_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut redis)
            .await
            .expect("XREVRANGE");
        let redis_after = newest.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        Some(Buses { js, nats_from, redis, redis_after })
    }

    /// This gateway's events on NATS, in stream order, read until every id
    /// of `expected` came (or [`BUS_WAIT`] passed: then it fails).
    async fn nats_events(&self, node: &str, expected: &[Seen]) -> Vec<Seen> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        use futures_util::StreamExt;
        let stream = self.js.get_stream("COFFER_EVENTS").await.expect("the stream COFFER_EVENTS");
        let config = OrderedConfig {
            filter_subject: "coffer.events.>".into(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: self.nats_from },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("the messages");
        let mut missing: BTreeSet<i64> = expected.iter().map(|(_, id)| *id).collect();
        let mut carried = Vec::new();
        let read = tokio::time::timeout(BUS_WAIT, async {
            while !missing.is_empty() {
                let message = messages.next().await.expect("a message").expect("a good message");
                let event: Value = serde_json::from_slice(&message.payload).expect("JSON");
                if event["gateway"] == node {
                    assert_eq!(message.subject.as_str(), format!("coffer.events.{}", event["type"].as_str().unwrap()));
                    let event = seen(&event);
                    missing.remove(&event.1);
                    carried.push(event);
                }
            }
        })
        .await;
        assert!(read.is_ok(), "NATS lacks {} events after {BUS_WAIT:?}: {:?}", missing.len(), missing.first());
        carried
    }

    /// This gateway's events on the Redis stream, in stream order, read
    /// until every id of `expected` came (or [`BUS_WAIT`] passed: then it
    /// fails).
    async fn redis_events(mut self, node: &str, expected: &[Seen]) -> Vec<Seen> {
        let mut missing: BTreeSet<i64> = expected.iter().map(|(_, id)| *id).collect();
        let mut carried = Vec::new();
        let started = Instant::now();
        while !missing.is_empty() {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(REDIS_STREAM)
                .arg(format!("({}", self.redis_after))
                .arg("+")
                .arg("COUNT")
                .arg(REDIS_PAGE)
                .query_async(&mut self.redis)
                .await
                .expect("XRANGE");
            for entry in &page.ids {
                let json: String = entry.get("event").expect("an event field");
                let event: Value = serde_json::from_str(&json).expect("JSON");
                if event["gateway"] == node {
                    let event = seen(&event);
                    missing.remove(&event.1);
                    carried.push(event);
                }
            }
            match page.ids.last() {
                Some(entry) => self.redis_after = entry.id.clone(),
                None => {
                    let lacking = (missing.len(), missing.first());
                    assert!(started.elapsed() < BUS_WAIT, "Redis lacks {lacking:?} events after {BUS_WAIT:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        carried
    }
}
