//! The Nostr Wallet Connect wallet service (NIP-47): every agent wallet is
//! an NWC wallet, through the connections `gateway::nwc` keeps.
//!
//! One task per configured relay (`COFFER_NWC_RELAYS`) keeps a websocket
//! open: on each connection it publishes the info event (kind 13194: the
//! methods, the encryptions, the notifications) and subscribes to requests
//! addressed to the wallet's key (kind 23194, `#p`), from a few minutes
//! back so that requests sent while it was away are answered. Each request
//! is checked (id, signature, age, `expiration`) before anything else, then
//! taken in the store (`request`): a request delivered twice, by two relays
//! or to two instances, is answered once. The answer (kind 23195) goes back
//! through the relay it came from. Payment notifications (kinds 23196 and
//! 23197) follow the outbox (`notify`) and go to every relay.
//!
//! Bounds: requests being answered at once ([`REQUESTS_IN_FLIGHT_MAX`]; a
//! request past it is dropped, and its client asks again), per connection
//! ([`crate::limits::NWC_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`], answered
//! `RATE_LIMITED`), frames waiting to be sent per relay ([`OUTBOX_FRAMES_MAX`]),
//! each message's size (the relay client's), a reconnection delay that
//! doubles up to 30 s, and a ping every [`PING_INTERVAL_MS`]: a relay
//! silent for [`SILENCE_MAX_MS`] is dropped and dialled again.

mod notify;
mod request;
mod wallet;

use crate::gateway::Gateway;
use crate::lightning::nwc::event::Event;
use crate::lightning::nwc::relay::{self, RelayMessage};
use crate::model::NwcMethod;
use bitcoin::secp256k1::{All, Keypair, Secp256k1};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

pub use request::{KIND_NOTIFICATION_NIP04, KIND_NOTIFICATION_NIP44, KIND_REQUEST};

/// Requests being answered at once, over all relays and connections.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;
/// Frames (answers, notifications) waiting to be sent to one relay.
const OUTBOX_FRAMES_MAX: usize = 1_024;
const PING_INTERVAL_MS: u64 = 30_000;
const SILENCE_MAX_MS: u64 = 3 * PING_INTERVAL_MS;
/// How often requests taken long ago are forgotten.
const PRUNE_INTERVAL_MS: u64 = 60_000;
/// The subscription to requests, on each relay.
const REQUESTS_SUB: &str = "coffer-wallet";

const _: () = assert!(SILENCE_MAX_MS > PING_INTERVAL_MS);
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX <= OUTBOX_FRAMES_MAX);

/// The kind of the wallet's info event.
pub const KIND_INFO: u32 = 13194;

/// The wallet service: its key, and where its frames go.
pub struct Service {
    gateway: Arc<Gateway>,
    secp: Secp256k1<All>,
    keys: Keypair,
    wallet_hex: String,
    in_flight: Arc<Semaphore>,
    /// Requests being answered, by connection.
    per_connection: Mutex<HashMap<String, u32>>,
    /// Each relay's outbox, while it is connected.
    outlets: Mutex<HashMap<String, mpsc::Sender<Message>>>,
}

/// Starts the wallet service on every configured relay, its notifier and
/// the pruning of requests taken. Returns at once; nothing if NWC is off.
pub fn start(gateway: &Arc<Gateway>) -> Result<(), crate::error::Error> {
    let relays = gateway.settings().nwc_relays.clone();
    if relays.is_empty() {
        return Ok(());
    }
    let keys = gateway.nwc_wallet_keys()?;
    let wallet_hex = hex::encode(keys.x_only_public_key().0.serialize());
    tracing::info!(wallet = %wallet_hex, relays = relays.len(), "NWC wallet service starting");
    let service = Arc::new(Service {
        gateway: Arc::clone(gateway),
        secp: Secp256k1::new(),
        keys,
        wallet_hex,
        in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        per_connection: Mutex::default(),
        outlets: Mutex::default(),
    });
    for url in relays {
        tokio::spawn(Arc::clone(&service).follow(url));
    }
    tokio::spawn(notify::run(Arc::clone(&service)));
    tokio::spawn(prune(Arc::clone(gateway)));
    Ok(())
}

impl Service {
    /// Keeps one relay connected, for as long as the process runs.
    async fn follow(self: Arc<Self>, url: String) {
        let tls = match url.starts_with("wss://").then(relay::tls_config).transpose() {
            Ok(tls) => tls.map(Arc::new),
            Err(e) => return tracing::error!(relay = %url, error = %e, "NWC relay: TLS set-up failed"),
        };
        let mut failures = 0u32;
        loop {
            match self.session(&url, tls.as_ref()).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(relay = %url, error = %e, failures, "NWC relay connection ended");
                }
            }
            lock(&self.outlets).remove(&url);
            tokio::time::sleep(relay::backoff_delay(failures.max(1))).await;
        }
    }

    /// One connection to a relay, until it ends.
    async fn session(self: &Arc<Self>, url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<(), String> {
        let ws = relay::connect(url, tls).await?;
        let (mut sink, mut stream) = ws.split();
        let since = crate::lightning::nwc::now_secs()
            .saturating_sub(crate::gateway::nwc::NWC_REQUEST_AGE_MAX_SECS.unsigned_abs());
        let filter = json!({"kinds": [KIND_REQUEST], "#p": [self.wallet_hex], "since": since});
        for frame in [json!(["EVENT", self.info_event()]), json!(["REQ", REQUESTS_SUB, filter])] {
            sink.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
        }
        let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX_FRAMES_MAX);
        lock(&self.outlets).insert(url.to_owned(), tx.clone());
        tracing::info!(relay = %url, "NWC wallet service listening");
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(Duration::from_millis(PING_INTERVAL_MS));
            loop {
                let frame = tokio::select! {
                    frame = rx.recv() => match frame { Some(frame) => frame, None => break },
                    _ = ping.tick() => Message::Ping(Vec::new().into()),
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let ended = self.read(&mut stream, &tx).await;
        writer.abort();
        ended
    }

    async fn read(
        self: &Arc<Self>,
        stream: &mut futures_util::stream::SplitStream<relay::Ws>,
        tx: &mpsc::Sender<Message>,
    ) -> Result<(), String> {
        loop {
            let frame = tokio::time::timeout(Duration::from_millis(SILENCE_MAX_MS), stream.next())
                .await
                .map_err(|_| "the relay went silent".to_owned())?;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
            };
            match RelayMessage::parse(text.as_str()) {
                Some(RelayMessage::Event(sub, event)) if sub == REQUESTS_SUB => self.admit(event, tx.clone()),
                Some(RelayMessage::Ok { id, accepted: false, why }) => {
                    tracing::warn!(event = %short(&id), why = %why, "the NWC relay refused an event");
                }
                Some(RelayMessage::Closed(sub, why)) if sub == REQUESTS_SUB => {
                    return Err(format!("the relay closed the subscription: {why}"));
                }
                Some(RelayMessage::Notice(notice)) => tracing::warn!(notice = %notice, "NWC relay notice"),
                _ => {}
            }
        }
    }

    /// Answers a request in its own task, within the bound on requests in
    /// flight; past it the request is dropped (its client asks again).
    fn admit(self: &Arc<Self>, event: Event, reply: mpsc::Sender<Message>) {
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            tracing::warn!("NWC requests in flight at their bound: one dropped");
            return;
        };
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(answer) = service.answer(event).await {
                // A full outbox or a dropped relay loses the answer; the
                // client's call times out, as it does for a lost relay.
                let _ = reply.try_send(Message::text(json!(["EVENT", answer]).to_string()));
            }
            drop(permit);
        });
    }

    /// The info event: every method coffer answers, both encryptions, the
    /// notifications.
    fn info_event(&self) -> Event {
        let methods: Vec<&str> = NwcMethod::ALL.iter().map(|m| m.as_str()).chain(["notifications"]).collect();
        let tags = vec![
            vec!["encryption".to_owned(), "nip44_v2 nip04".to_owned()],
            vec!["notifications".to_owned(), notify::TYPES.join(" ")],
        ];
        self.sign(KIND_INFO, tags, methods.join(" "))
    }

    fn sign(&self, kind: u32, tags: Vec<Vec<String>>, content: String) -> Event {
        Event::sign(&self.secp, &self.keys, kind, tags, content, crate::lightning::nwc::now_secs())
    }

    /// Sends a frame to every connected relay (notifications).
    fn broadcast(&self, frame: &str) {
        for tx in lock(&self.outlets).values() {
            let _ = tx.try_send(Message::text(frame.to_owned()));
        }
    }
}

/// Forgets requests taken long ago, on every instance (each write is small).
async fn prune(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(PRUNE_INTERVAL_MS));
    loop {
        tick.tick().await;
        if let Err(e) = gateway.prune_nwc_requests().await {
            tracing::warn!(error = %e, "forgetting old NWC requests failed; will retry");
        }
    }
}

fn short(id: &str) -> String {
    id.chars().take(16).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
