//! `coffer bench --nwc N`: Nostr Wallet Connect round trips through a
//! relay (the first of `COFFER_NWC_RELAYS`, which the gateway bench starts
//! inherits), measured three ways in one run, each `N` times:
//!
//! - the relay's own ceiling: a no-op request (a signed ephemeral event the
//!   client publishes and reads back through its own subscription), no
//!   wallet involved;
//! - `get_balance`, answered by coffer's wallet service: the NWC path and
//!   a store write (the request taken) without a payment;
//! - `pay_invoice`: a payment between two agents, each request through the
//!   agent's own connection.
//!
//! The client is coffer's own NWC client (the `nwc` funding backend), one per
//! paying agent; invoices are made over HTTP beforehand, not measured.

use super::bench::{Trade, TradeRun};
use crate::lightning::FundingSource;
use crate::lightning::nwc::event::Event;
use crate::lightning::nwc::relay::{self, RelayMessage};
use crate::lightning::nwc::{Nwc, NwcUri};
use bitcoin::secp256k1::{Keypair, Secp256k1};
use coffer_client::{Client, CreateInvoiceRequest, CreateNwcConnectionRequest};
use coffer_core::Msat;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// The bound on one round trip.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);
const PAYMENT_MSAT: u64 = 1_000;

#[derive(Serialize)]
pub struct NwcReport {
    relay: String,
    round_trips: u64,
    concurrency: usize,
    connections: usize,
    /// A no-op request through the relay: its ceiling.
    relay_echo: Trade,
    get_balance: Trade,
    pay_invoice: Trade,
    /// `pay_invoice` per second over the relay's no-op ceiling.
    pay_ratio_to_relay: f64,
}

impl NwcReport {
    pub fn text(&self) -> String {
        let line = |name: &str, t: &Trade| {
            format!(
                "  {name:<12} {:>8.0}/s  p50 {:.1} ms  p99 {:.1} ms  ({} done, errors {:?})\n",
                t.per_s, t.latency.p50_ms, t.latency.p99_ms, t.done, t.errors
            )
        };
        format!(
            "NWC through {} ({} round trips each, concurrency {}, {} connections):\n{}{}{}  pay_invoice / relay ceiling: {:.2}\n",
            self.relay,
            self.round_trips,
            self.concurrency,
            self.connections,
            line("relay no-op", &self.relay_echo),
            line("get_balance", &self.get_balance),
            line("pay_invoice", &self.pay_invoice),
            self.pay_ratio_to_relay
        )
    }
}

/// Measures the three; `agents` are the bench's (funded), `operator` makes
/// their connections.
pub async fn run(
    operator: &Client,
    agents: &[(String, Client)],
    round_trips: u64,
    concurrency: usize,
) -> Result<NwcReport, String> {
    let relays = std::env::var("COFFER_NWC_RELAYS").unwrap_or_default();
    let relay = relays.split(',').next().filter(|r| !r.is_empty()).ok_or("--nwc needs COFFER_NWC_RELAYS")?;
    let relay_echo = Trade::of(echo(relay, round_trips, concurrency).await?);
    let clients = connect(operator, agents).await?;
    let get_balance = Trade::of(balances(&clients, round_trips, concurrency).await);
    let invoices = invoices(agents, round_trips).await?;
    let pay_invoice = Trade::of(payments(&clients, invoices, concurrency).await);
    let pay_ratio_to_relay = pay_invoice.per_s / relay_echo.per_s.max(f64::MIN_POSITIVE);
    Ok(NwcReport {
        relay: relay.to_owned(),
        round_trips,
        concurrency,
        connections: clients.len(),
        relay_echo,
        get_balance,
        pay_invoice,
        pay_ratio_to_relay,
    })
}

/// An NWC connection for each agent, and coffer's NWC client on it.
async fn connect(operator: &Client, agents: &[(String, Client)]) -> Result<Vec<Arc<Nwc>>, String> {
    let mut clients = Vec::with_capacity(agents.len());
    for (id, _) in agents {
        let request = CreateNwcConnectionRequest {
            name: "bench".into(),
            methods: None,
            expires_at: None,
            notifications: Some(false),
        };
        let created =
            operator.create_nwc_connection(id, &request).await.map_err(|e| format!("an NWC connection: {e}"))?;
        let uri = NwcUri::parse(&created.uri)?;
        clients.push(Arc::new(Nwc::new(&uri, ROUND_TRIP_TIMEOUT)?));
    }
    // The first call of each waits for its connection; not measured.
    for client in &clients {
        client.balance().await.map_err(|e| format!("the first NWC call: {e}"))?;
    }
    Ok(clients)
}

/// Invoices of agent `i + 1` for agent `i` to pay, round robin.
async fn invoices(agents: &[(String, Client)], count: u64) -> Result<Vec<Vec<String>>, String> {
    let mut by_payer = vec![Vec::new(); agents.len()];
    for i in 0..count {
        let payer = usize::try_from(i).unwrap_or(0) % agents.len();
        let payee = &agents[(payer + 1) % agents.len()].1;
        let request = CreateInvoiceRequest { amount_msat: PAYMENT_MSAT, ..CreateInvoiceRequest::default() };
        let invoice = payee.create_invoice(&request).await.map_err(|e| format!("an invoice: {e}"))?;
        by_payer[payer].push(invoice.bolt11);
    }
    Ok(by_payer)
}

async fn balances(clients: &[Arc<Nwc>], count: u64, concurrency: usize) -> TradeRun {
    let clients = clients.to_vec();
    timed(count, concurrency, move |i| {
        let client = Arc::clone(&clients[usize::try_from(i).unwrap_or(0) % clients.len()]);
        async move { client.balance().await.map(drop).map_err(|e| e.to_string()) }
    })
    .await
}

async fn payments(clients: &[Arc<Nwc>], invoices: Vec<Vec<String>>, concurrency: usize) -> TradeRun {
    let count: u64 = invoices.iter().map(|v| v.len() as u64).sum();
    // Each payer's invoices in order; worker i takes payer i % n's next.
    let queues: Arc<Vec<Mutex<Vec<String>>>> = Arc::new(
        invoices
            .into_iter()
            .map(|mut v| {
                v.reverse();
                Mutex::new(v)
            })
            .collect(),
    );
    let clients = clients.to_vec();
    timed(count, concurrency, move |i| {
        let payer = usize::try_from(i).unwrap_or(0) % clients.len();
        let (client, queues) = (Arc::clone(&clients[payer]), Arc::clone(&queues));
        async move {
            let bolt11 = queues[payer].lock().map_err(|_| "poisoned".to_owned())?.pop().ok_or("no invoice left")?;
            let amount = Msat::new(PAYMENT_MSAT);
            match client.pay_invoice(&bolt11, amount, Msat::ZERO).await.map_err(|e| e.to_string())? {
                crate::lightning::PayResult::Succeeded { .. } => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
}

/// `count` calls of `call(i)` by `concurrency` workers, each timed.
async fn timed<F, Fut>(count: u64, concurrency: usize, call: F) -> TradeRun
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let (next, call) = (Arc::new(AtomicU64::new(0)), Arc::new(call));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, call) = (Arc::clone(&next), Arc::clone(&call));
            tokio::spawn(async move {
                let (mut latency_us, mut errors) = (Vec::new(), BTreeMap::<String, u64>::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let at = Instant::now();
                    match call(i).await {
                        Ok(()) => latency_us.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(e) => *errors.entry(e.chars().take(80).collect()).or_default() += 1,
                    }
                }
                (latency_us, errors)
            })
        })
        .collect();
    let mut run = TradeRun { elapsed: Duration::ZERO, done: 0, latency_us: Vec::new(), errors: BTreeMap::new() };
    for worker in workers {
        if let Ok((latency_us, errors)) = worker.await {
            run.done += latency_us.len() as u64;
            run.latency_us.extend(latency_us);
            errors.into_iter().for_each(|(k, v)| *run.errors.entry(k).or_default() += v);
        }
    }
    run.elapsed = started.elapsed();
    run
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// The relay's ceiling: `count` signed ephemeral events, each published and
/// read back through the client's own subscription (what a request and its
/// answer cost the relay, with no wallet between them).
async fn echo(url: &str, count: u64, concurrency: usize) -> Result<TradeRun, String> {
    let tls = url.starts_with("wss://").then(relay::tls_config).transpose()?.map(Arc::new);
    let ws = relay::connect(url, tls.as_ref()).await?;
    let (mut sink, stream) = ws.split();
    let secp = Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&crate::secrets::random_bytes::<32>())
        .map_err(|_| "a random key out of range".to_owned())?;
    let keys = Keypair::from_secret_key(&secp, &secret);
    let me = hex::encode(keys.x_only_public_key().0.serialize());
    let filter = json!({"kinds": [crate::nwc::KIND_REQUEST], "#p": [me], "authors": [me]});
    sink.send(Message::text(json!(["REQ", "echo", filter]).to_string())).await.map_err(|e| e.to_string())?;
    let waiting: Waiting = Arc::default();
    let reader = tokio::spawn(read_echoes(stream_until_eose(stream).await?, Arc::clone(&waiting)));
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let run = timed(count, concurrency, move |i| {
        let (sink, waiting, secp, me) = (Arc::clone(&sink), Arc::clone(&waiting), secp.clone(), me.clone());
        async move {
            let tags = vec![vec!["p".to_owned(), me]];
            let event = Event::sign(
                &secp,
                &keys,
                crate::nwc::KIND_REQUEST,
                tags,
                i.to_string(),
                crate::lightning::nwc::now_secs(),
            );
            let (tx, rx) = oneshot::channel();
            waiting.lock().map_err(|_| "poisoned".to_owned())?.insert(event.id.clone(), tx);
            let frame = Message::text(json!(["EVENT", event]).to_string());
            sink.lock().await.send(frame).await.map_err(|e| e.to_string())?;
            tokio::time::timeout(ROUND_TRIP_TIMEOUT, rx)
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|_| "dropped".to_owned())
        }
    })
    .await;
    reader.abort();
    Ok(run)
}

/// The stream once the relay has sent its stored events (`EOSE`).
async fn stream_until_eose<S>(mut stream: S) -> Result<S, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                if matches!(RelayMessage::parse(text.as_str()), Some(RelayMessage::Eose(_))) {
                    return Ok(stream);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the relay closed the connection".into()),
        }
    }
}

async fn read_echoes<S>(mut stream: S, waiting: Waiting)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(frame)) = stream.next().await {
        if let Message::Text(text) = frame
            && let Some(RelayMessage::Event(_, event)) = RelayMessage::parse(text.as_str())
            && let Some(tx) = waiting.lock().ok().and_then(|mut w| w.remove(&event.id))
        {
            let _ = tx.send(());
        }
    }
}
