//! One websocket to the NWC relay (NIP-01), shared by every call.
//!
//! On connect coffer subscribes to answers for it (kind 23195, `#p` = its
//! key) and asks for the wallet's info event (kind 13194, kept with the
//! connection); it waits for both `EOSE`s before any request is published,
//! so that no answer can come before the subscription. A reader
//! task then hands each answer to the call waiting for it, by the answer's
//! `e` tag, once the answer's author, `p` tag, id and signature are checked;
//! anything else is dropped. When the connection ends, every waiting call
//! learns it at once, and its outcome is unknown: nothing is guessed.
//!
//! Bounds: each message at most [`RELAY_MESSAGE_LEN_MAX_BYTES`], at most
//! [`IN_FLIGHT_MAX`] requests waiting, reconnection after a failure only
//! after a delay that doubles up to [`BACKOFF_MAX_MS`]; the caller bounds
//! every call in time.

use super::event::Event;
use crate::lightning::LnError;
use bitcoin::secp256k1::{Secp256k1, VerifyOnly};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The largest relay message read: NWC answers are a few kB, and NIP-47
/// asks relays to allow 64 kB payloads.
pub const RELAY_MESSAGE_LEN_MAX_BYTES: usize = 256 * 1024;
// A message carries the largest payload NIP-47 asks relays to allow (and
// the largest encrypted content: see `crypto`).
const _: () = assert!(RELAY_MESSAGE_LEN_MAX_BYTES >= 64 * 1024);
/// Requests waiting for their answer at once; more wait for a place.
pub const IN_FLIGHT_MAX: usize = 64;
/// The first and the longest delay before connecting again after a failure.
const BACKOFF_MIN_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 30_000;
const _: () = assert!(BACKOFF_MIN_MS <= BACKOFF_MAX_MS);
/// Subscription ids on the relay.
const ANSWERS_SUB: &str = "coffer-nwc";
const INFO_SUB: &str = "coffer-nwc-info";
/// Stored answers older than this are not asked for on (re)subscribing:
/// their calls ended long ago.
const ANSWERS_LOOKBACK_SECS: u64 = 60;
/// How much of a relay's `NOTICE` or refusal is logged.
const RELAY_TEXT_LEN_MAX_CHARS: usize = 200;

pub const KIND_INFO: u32 = 13194;
pub const KIND_RESPONSE: u32 = 23195;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Ws = WebSocketStream<Box<dyn Io>>;
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

/// What the relay said about one request.
pub enum Reply {
    /// The wallet's answer, checked.
    Answer(Event),
    /// The relay did not accept the request (`OK false`).
    Refused(String),
}

/// Who may answer, and to whom.
struct Trust {
    secp: Secp256k1<VerifyOnly>,
    wallet_hex: String,
    client_hex: String,
}

impl Trust {
    fn check(&self, event: &Event, kind: u32) -> Result<(), &'static str> {
        if event.kind != kind {
            return Err("not the kind asked for");
        }
        if event.pubkey != self.wallet_hex {
            return Err("not written by the wallet");
        }
        if kind == KIND_RESPONSE && event.tag("p") != Some(self.client_hex.as_str()) {
            return Err("not addressed to coffer");
        }
        event.verify(&self.secp)
    }
}

pub struct Relay {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    trust: Arc<Trust>,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    backoff: Mutex<Backoff>,
    slots: Arc<Semaphore>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

/// A live connection: the writing half, the calls waiting for answers,
/// and the wallet's info event as the relay had it when connecting.
pub struct Link {
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    waiting: Waiting,
    alive: Arc<AtomicBool>,
    pub info: Option<Event>,
}

impl Relay {
    pub fn new(url: &str, wallet_hex: String, client_hex: String) -> Result<Relay, String> {
        let tls = if url.starts_with("wss://") { Some(Arc::new(tls_config()?)) } else { None };
        let trust = Arc::new(Trust { secp: Secp256k1::verification_only(), wallet_hex, client_hex });
        Ok(Relay {
            url: url.to_owned(),
            tls,
            trust,
            link: tokio::sync::Mutex::new(None),
            backoff: Mutex::new(Backoff::default()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT_MAX)),
        })
    }

    /// A place among the requests in flight.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, LnError> {
        Arc::clone(&self.slots).acquire_owned().await.map_err(|_| LnError::Unreachable("NWC client closed".into()))
    }

    /// The live connection, or a new one (after the back-off delay, if the
    /// last attempt failed and the delay ends before `deadline`). An
    /// attempt that does not finish by `deadline` counts as failed.
    pub async fn connected(&self, deadline: Instant) -> Result<Arc<Link>, LnError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref().filter(|l| l.alive.load(Ordering::Acquire)) {
            return Ok(Arc::clone(link));
        }
        self.wait_for_backoff(deadline).await?;
        let opened = tokio::time::timeout_at(deadline, self.open())
            .await
            .unwrap_or_else(|_| Err(LnError::Unreachable("timed out connecting to the NWC relay".into())));
        match opened {
            Ok(link) => {
                *lock(&self.backoff) = Backoff::default();
                *current = Some(Arc::clone(&link));
                Ok(link)
            }
            Err(e) => {
                let mut backoff = lock(&self.backoff);
                backoff.failures = backoff.failures.saturating_add(1);
                backoff.retry_at = Some(Instant::now() + backoff_delay(backoff.failures));
                Err(e)
            }
        }
    }

    async fn wait_for_backoff(&self, deadline: Instant) -> Result<(), LnError> {
        let Some(retry_at) = lock(&self.backoff).retry_at else { return Ok(()) };
        if retry_at >= deadline {
            let wait_ms = retry_at.saturating_duration_since(Instant::now()).as_millis();
            return Err(LnError::Unreachable(format!("the NWC relay failed; next attempt in {wait_ms} ms")));
        }
        tokio::time::sleep_until(retry_at).await;
        Ok(())
    }

    async fn open(&self) -> Result<Arc<Link>, LnError> {
        let mut ws = self.connect().await?;
        let since = super::now_secs().saturating_sub(ANSWERS_LOOKBACK_SECS);
        let answers = json!({"kinds": [KIND_RESPONSE], "#p": [self.trust.client_hex], "since": since});
        send(&mut ws, json!(["REQ", ANSWERS_SUB, answers])).await?;
        let info = json!({"kinds": [KIND_INFO], "authors": [self.trust.wallet_hex], "limit": 1});
        send(&mut ws, json!(["REQ", INFO_SUB, info])).await?;
        let info = self.subscribed(&mut ws).await?;
        send(&mut ws, json!(["CLOSE", INFO_SUB])).await?;
        match info.as_ref().map(|i| i.tag("encryption").unwrap_or("none: NIP-04 only")) {
            Some(encryption) => tracing::info!(encryption, "connected to the NWC relay; the wallet's info event read"),
            None => tracing::warn!("connected to the NWC relay, which has no info event of the wallet: NIP-04 assumed"),
        }
        let (sink, stream) = ws.split();
        let link = Arc::new(Link {
            sink: tokio::sync::Mutex::new(sink),
            waiting: Arc::default(),
            alive: Arc::new(AtomicBool::new(true)),
            info,
        });
        tokio::spawn(read_answers(stream, Arc::clone(&link.waiting), Arc::clone(&link.alive), Arc::clone(&self.trust)));
        Ok(link)
    }

    /// Reads until the relay has sent what it stores for the subscriptions
    /// (`EOSE`), keeping the newest valid info event.
    async fn subscribed(&self, ws: &mut Ws) -> Result<Option<Event>, LnError> {
        let (mut answers_ready, mut info_ready, mut info) = (false, false, None::<Event>);
        while !(answers_ready && info_ready) {
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Err(dropped("while subscribing")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(LnError::Unreachable(format!("the NWC relay: {e}"))),
            };
            match RelayMessage::parse(text.as_str()) {
                Some(RelayMessage::Eose(sub)) if sub == ANSWERS_SUB => answers_ready = true,
                Some(RelayMessage::Eose(sub)) if sub == INFO_SUB => info_ready = true,
                Some(RelayMessage::Event(sub, event)) if sub == INFO_SUB => match self.trust.check(&event, KIND_INFO) {
                    Ok(()) if info.as_ref().is_none_or(|i| i.created_at < event.created_at) => info = Some(event),
                    Ok(()) => {}
                    Err(why) => tracing::warn!(why, "dropped an NWC info event"),
                },
                Some(RelayMessage::Closed(_, why)) => {
                    return Err(LnError::Unreachable(format!("the NWC relay closed the subscription: {why}")));
                }
                Some(RelayMessage::Notice(text)) => tracing::warn!(notice = %text, "NWC relay notice"),
                _ => {}
            }
        }
        Ok(info)
    }

    async fn connect(&self) -> Result<Ws, LnError> {
        connect(&self.url, self.tls.as_ref()).await.map_err(|e| LnError::Unreachable(format!("the NWC relay: {e}")))
    }
}

/// A websocket to a relay (`ws://`, or `wss://` with `tls`), each message
/// bounded by [`RELAY_MESSAGE_LEN_MAX_BYTES`]: the one way coffer opens
/// one, as a client of a wallet and as a wallet service.
pub async fn connect(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Ws, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().ok_or("no host")?;
    let port = parsed.port_or_known_default().ok_or("no port")?;
    let tcp = tokio::net::TcpStream::connect(format!("{host}:{port}")).await.map_err(|e| e.to_string())?;
    // Answers and requests are small and latency-bound: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            Box::new(connector.connect(name, tcp).await.map_err(|e| e.to_string())?)
        }
        None => Box::new(tcp),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(RELAY_MESSAGE_LEN_MAX_BYTES))
        .max_frame_size(Some(RELAY_MESSAGE_LEN_MAX_BYTES));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, io, Some(config)).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

impl Link {
    /// Publishes a request and waits for the relay's refusal or the
    /// wallet's answer. The caller bounds the wait.
    pub async fn request(&self, event: &Event) -> Result<Reply, LnError> {
        let (tx, rx) = oneshot::channel();
        let _registered = Registered::new(&self.waiting, &event.id, tx);
        // Checked after registering: a reader that ends clears the map after
        // it marks the link dead, so one of the two sees the other.
        if !self.alive.load(Ordering::Acquire) {
            return Err(dropped("before the request was sent"));
        }
        let frame = json!(["EVENT", event]).to_string();
        if let Err(e) = self.sink.lock().await.send(Message::text(frame)).await {
            self.alive.store(false, Ordering::Release);
            return Err(LnError::Unreachable(format!("sending to the NWC relay failed ({e}): outcome unknown")));
        }
        rx.await.map_err(|_| dropped("before the wallet answered: outcome unknown"))
    }
}

/// A waiting call's place in the map, removed when the call ends however
/// it ends (answered, timed out, dropped).
struct Registered<'a> {
    waiting: &'a Waiting,
    id: String,
}

impl<'a> Registered<'a> {
    fn new(waiting: &'a Waiting, id: &str, tx: oneshot::Sender<Reply>) -> Registered<'a> {
        lock(waiting).insert(id.to_owned(), tx);
        Registered { waiting, id: id.to_owned() }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.id);
    }
}

async fn read_answers(mut stream: SplitStream<Ws>, waiting: Waiting, alive: Arc<AtomicBool>, trust: Arc<Trust>) {
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match RelayMessage::parse(text.as_str()) {
            Some(RelayMessage::Event(sub, event)) if sub == ANSWERS_SUB => deliver(&waiting, &trust, event),
            Some(RelayMessage::Ok { id, accepted: false, why }) => {
                if let Some(tx) = lock(&waiting).remove(&id) {
                    let _ = tx.send(Reply::Refused(why));
                }
            }
            Some(RelayMessage::Closed(sub, why)) if sub == ANSWERS_SUB => {
                tracing::warn!(why = %why, "the NWC relay closed coffer's subscription; reconnecting on the next call");
                break;
            }
            Some(RelayMessage::Notice(text)) => tracing::warn!(notice = %text, "NWC relay notice"),
            _ => {}
        }
    }
    alive.store(false, Ordering::Release);
    // Dropping the senders tells every waiting call that no answer comes.
    lock(&waiting).clear();
}

fn deliver(waiting: &Waiting, trust: &Trust, event: Event) {
    if let Err(why) = trust.check(&event, KIND_RESPONSE) {
        tracing::warn!(why, event_id = %event.id.chars().take(16).collect::<String>(), "dropped an event from the NWC relay");
        return;
    }
    let Some(request_id) = event.tag("e").map(str::to_owned) else { return };
    if let Some(tx) = lock(waiting).remove(&request_id) {
        let _ = tx.send(Reply::Answer(event));
    }
}

/// The relay messages coffer reads (NIP-01). Public for the fuzz targets.
pub enum RelayMessage {
    Event(String, Event),
    Ok { id: String, accepted: bool, why: String },
    Eose(String),
    Closed(String, String),
    Notice(String),
}

impl RelayMessage {
    pub fn parse(text: &str) -> Option<RelayMessage> {
        let items: Vec<Value> = serde_json::from_str(text).ok()?;
        let text_at = |i: usize| items.get(i).and_then(Value::as_str).map(str::to_owned);
        let short_at = |i: usize| text_at(i).map(|t| shorten(&t)).unwrap_or_default();
        match items.first()?.as_str()? {
            "EVENT" => Some(RelayMessage::Event(text_at(1)?, serde_json::from_value(items.get(2)?.clone()).ok()?)),
            "OK" => Some(RelayMessage::Ok { id: text_at(1)?, accepted: items.get(2)?.as_bool()?, why: short_at(3) }),
            "EOSE" => Some(RelayMessage::Eose(text_at(1)?)),
            "CLOSED" => Some(RelayMessage::Closed(text_at(1)?, short_at(2))),
            "NOTICE" => Some(RelayMessage::Notice(short_at(1))),
            _ => None,
        }
    }
}

/// A relay's free text, on one line and short.
fn shorten(text: &str) -> String {
    text.chars().take(RELAY_TEXT_LEN_MAX_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

async fn send(ws: &mut Ws, message: Value) -> Result<(), LnError> {
    ws.send(Message::text(message.to_string())).await.map_err(|e| LnError::Unreachable(format!("the NWC relay: {e}")))
}

fn dropped(when: &str) -> LnError {
    LnError::Unreachable(format!("the NWC relay connection dropped {when}"))
}

pub fn backoff_delay(failures: u32) -> std::time::Duration {
    let ms = BACKOFF_MIN_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    std::time::Duration::from_millis(ms.min(BACKOFF_MAX_MS))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// TLS to the relay: rustls with ring and the platform's roots, as the
/// HTTP backends' client has (reqwest's rustls-platform-verifier).
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let delays: Vec<u128> = [1, 2, 3, 9, 10, 40, u32::MAX].iter().map(|f| backoff_delay(*f).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 25_600, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn relay_messages_are_read_strictly() {
        assert!(
            matches!(RelayMessage::parse(r#"["EOSE","coffer-nwc"]"#), Some(RelayMessage::Eose(s)) if s == "coffer-nwc")
        );
        assert!(matches!(
            RelayMessage::parse(r#"["OK","ab",false,"blocked: no"]"#),
            Some(RelayMessage::Ok { accepted: false, why, .. }) if why == "blocked: no"
        ));
        assert!(matches!(
            RelayMessage::parse(r#"["CLOSED","coffer-nwc","auth-required: x"]"#),
            Some(RelayMessage::Closed(..))
        ));
        for junk in
            ["", "[]", "{}", r#"["EVENT","s",{"id":1}]"#, r#"["OK","ab","yes"]"#, r#"["AUTH","c"]"#, "[\"EOSE\"]"]
        {
            assert!(RelayMessage::parse(junk).is_none(), "{junk}");
        }
    }
}
