//! A NIP-47 client for the tests, written here against a real relay: it
//! signs and encrypts requests with a connection's secret, publishes them
//! (again, or forged, when a test asks), and collects the wallet's events.
//! The relays are PyPI's `nostr-relay`, started by `.ci/run`
//! (`COFFER_TEST_NOSTR_RELAY`, and `COFFER_TEST_NOSTR_RELAY_NOSIG`, a second
//! one that checks no signatures, so that a forged event reaches coffer).

use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};
use coffer::lightning::nwc::crypto::{Conversation, Encryption};
use coffer::lightning::nwc::event::Event;
use coffer::lightning::nwc::{NwcUri, RelayMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const KIND_REQUEST: u32 = 23194;
pub const KIND_RESPONSE: u32 = 23195;

/// The relay `.ci/run` starts (`ws://127.0.0.1:5020`), and the one that
/// checks no signatures, or `None` to skip loudly; under CI both must be
/// set.
pub fn relays(what: &str) -> Option<(String, String)> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(main), Some(nosig)) = (get("COFFER_TEST_NOSTR_RELAY"), get("COFFER_TEST_NOSTR_RELAY_NOSIG")) {
        return Some((main, nosig));
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!in_ci, "COFFER_TEST_NOSTR_RELAY(_NOSIG) unset under CI: {what} must run (bash .ci/run starts the relays)");
    eprintln!(
        "\n*** SKIPPED: {what}: set COFFER_TEST_NOSTR_RELAY and COFFER_TEST_NOSTR_RELAY_NOSIG (bash .ci/run does) ***"
    );
    None
}

/// One websocket to a relay.
pub struct Relay {
    ws: coffer::lightning::nwc::relay::Ws,
}

impl Relay {
    pub async fn connect(url: &str) -> Relay {
        Relay { ws: coffer::lightning::nwc::relay::connect(url, None).await.expect("connecting to the test relay") }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::text(frame.to_string())).await.expect("sending to the relay");
    }

    /// Subscribes and waits for the relay's end of stored events.
    pub async fn subscribe(&mut self, sub: &str, filter: Value) {
        self.send(json!(["REQ", sub, filter])).await;
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(RelayMessage::Eose(s)) if s == sub => return,
                Some(_) => {}
                None => panic!("no EOSE for {sub}"),
            }
        }
    }

    pub async fn publish(&mut self, event: &Event) {
        self.send(json!(["EVENT", event])).await;
    }

    /// The next message the relay sends within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<RelayMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            if let Ok(Message::Text(text)) = frame
                && let Some(message) = RelayMessage::parse(text.as_str())
            {
                return Some(message);
            }
        }
    }

    /// Every event of `sub` that arrives within `wait`.
    pub async fn events_for(&mut self, sub: &str, wait: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = Vec::new();
        while let Some(message) = self.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            if let RelayMessage::Event(s, event) = message
                && s == sub
            {
                events.push(event);
            }
        }
        events
    }
}

/// A connection's client side: its keys, from the URI coffer gave.
pub struct NwcClient {
    secp: Secp256k1<bitcoin::secp256k1::All>,
    keys: Keypair,
    pub wallet_hex: String,
    conversation: Conversation,
}

impl NwcClient {
    pub fn from_uri(uri: &str) -> NwcClient {
        let parsed = NwcUri::parse(uri).expect("coffer's NWC URI parses");
        let secret: SecretKey = parsed.secret_key().expect("the URI's secret");
        let secp = Secp256k1::new();
        let keys = Keypair::from_secret_key(&secp, &secret);
        let conversation = Conversation::new(&secret, &parsed.wallet);
        NwcClient { secp, keys, wallet_hex: hex::encode(parsed.wallet.serialize()), conversation }
    }

    pub fn pubkey_hex(&self) -> String {
        hex::encode(self.keys.x_only_public_key().0.serialize())
    }

    /// A signed request (NIP-44 encrypted), with extra tags.
    pub fn request(&self, method: &str, params: Value, extra_tags: Vec<Vec<String>>) -> Event {
        let body = json!({"method": method, "params": params}).to_string();
        let content = self.conversation.encrypt(Encryption::Nip44V2, &body).expect("encrypting");
        let mut tags =
            vec![vec!["p".to_owned(), self.wallet_hex.clone()], vec!["encryption".into(), "nip44_v2".into()]];
        tags.extend(extra_tags);
        Event::sign(&self.secp, &self.keys, KIND_REQUEST, tags, content, now_secs())
    }

    /// The answer's JSON, once its author and signature check out.
    pub fn read(&self, answer: &Event) -> Value {
        assert_eq!(answer.pubkey, self.wallet_hex, "answered by the wallet");
        answer.verify(&self.secp).expect("the answer's signature holds");
        let plain = self.conversation.decrypt(Encryption::Nip44V2, &answer.content).expect("decrypting the answer");
        serde_json::from_str(&plain).expect("the answer is JSON")
    }

    /// The filter of the wallet's answers to this client.
    pub fn answers_filter(&self) -> Value {
        json!({"kinds": [KIND_RESPONSE], "authors": [self.wallet_hex], "#p": [self.pubkey_hex()]})
    }
}

/// Waits until the wallet's info event is on the relay: the wallet service
/// publishes it right before it subscribes to requests, so a request sent
/// a moment later is heard.
pub async fn wait_for_wallet(relay_url: &str, wallet_hex: &str) {
    let mut relay = Relay::connect(relay_url).await;
    relay.send(json!(["REQ", "info", {"kinds": [13194], "authors": [wallet_hex]}])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match relay.next(left).await {
            Some(RelayMessage::Event(sub, _)) if sub == "info" => break,
            Some(_) => {}
            None => panic!("the wallet {wallet_hex} published no info event on {relay_url}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Answers by the request id they answer (`e` tag).
pub fn by_request(answers: &[Event]) -> HashMap<String, Vec<&Event>> {
    let mut map: HashMap<String, Vec<&Event>> = HashMap::new();
    for answer in answers {
        map.entry(answer.tag("e").unwrap_or_default().to_owned()).or_default().push(answer);
    }
    map
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
