//! Nostr Wallet Connect (NIP-47), fixture-tested: no NWC wallet can run on
//! this machine, so each test runs a small relay on 127.0.0.1 (NIP-01 over
//! a websocket) with a wallet service attached to it. The wallet holds its
//! own key, checks each request's signature, decrypts it, records its
//! method and parameters, and answers with the fixture of
//! tests/fixtures/nwc (written from NIP-47's examples), encrypted with the
//! scheme the request named and signed with its key. The real `coffer`
//! binary is the client, except in one test that calls the client directly.
//! These are fixtures, not a live wallet.

mod common;

use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bitcoin::secp256k1::{Keypair, Secp256k1};
use coffer::lightning::nwc::crypto::{Conversation, Encryption};
use coffer::lightning::nwc::event::Event;
use coffer::lightning::nwc::{KIND_INFO, KIND_REQUEST, KIND_RESPONSE, Nwc, NwcUri};
use coffer::lightning::{FundingSource, HoldState, InvoiceState, LnError};
use coffer::payment::bolt11::{Network, NodeSigner, ParsedInvoice};
use coffer_client::{Client, DepositRequest, PaymentStatus};
use coffer_core::Msat;
use common::Gateway;
use common::lightning::{assert_audit, balance_reaches, finished, other_node, outside_invoice, pay_out, payment};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How the wallet answers `pay_invoice`.
#[derive(Clone, Copy, Debug)]
enum Pay {
    Succeed {
        fee_msat: u64,
    },
    Fail,
    Internal,
    /// Never answers.
    Silent,
    /// Closes the client's connection instead of answering.
    Drop,
}

/// How it answers `lookup_invoice` for a payment it sent.
#[derive(Clone, Copy, Debug)]
enum LookupOut {
    NotFound,
    Pending,
    Settled { fee_msat: u64 },
}

/// A request as the wallet read it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    params: Value,
    encryption_tag: Option<String>,
    content: String,
}

/// A hold invoice the wallet's node made for coffer's payment hash.
struct Held {
    bolt11: String,
    amount_msat: u64,
    description: String,
    created_at: u64,
    expires_at: u64,
    /// As `lookup_invoice` names it: `pending`, `accepted`, `settled`,
    /// `failed` (cancelled) or `expired`.
    state: &'static str,
    /// Learnt when coffer settles.
    preimage: Option<[u8; 32]>,
}

/// An invoice the wallet's node made.
struct Made {
    bolt11: String,
    preimage: [u8; 32],
    amount_msat: u64,
    description: String,
    expires_at: u64,
    paid: bool,
}

struct Wallet {
    keys: Keypair,
    node: NodeSigner,
    /// The key of the node's hold invoices (signed for a hash, without
    /// the preimage, as a real node does).
    hold_key: bitcoin::secp256k1::SecretKey,
    held: HashMap<String, Held>,
    info: &'static str,
    make_invoice: &'static str,
    pay: Pay,
    lookup_out: LookupOut,
    /// Forged answers (another author, a bad signature) go first.
    forge: bool,
    /// The relay refuses requests (`OK false`) and never passes them on.
    refuse: bool,
    made: HashMap<String, Made>,
    /// Invoices of other nodes, by payment hash: (bolt11, preimage, amount).
    outside: HashMap<String, (String, [u8; 32], u64)>,
    pay_calls: HashMap<String, u32>,
    seen: Vec<Seen>,
    forged_sent: u32,
    /// What the wallet found wrong in a request (checked by every test).
    errors: Vec<String>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Option<String>>,
    subs: HashMap<String, Value>,
}

struct RelayState {
    wallet: Wallet,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    info_event: Event,
}

#[derive(Clone)]
struct Relay {
    state: Arc<Mutex<RelayState>>,
    url: String,
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/nwc/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture with every `"$name"` string replaced by `vars[name]`.
fn fill(template: Value, vars: &HashMap<&str, Value>) -> Value {
    match template {
        Value::String(s) if s.starts_with('$') => vars.get(&s[1..]).cloned().unwrap_or(Value::Null),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| fill(v, vars)).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, fill(v, vars))).collect()),
        other => other,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn random_keys() -> Keypair {
    Keypair::from_seckey_slice(&Secp256k1::new(), &coffer::secrets::random_bytes::<32>()).unwrap()
}

fn pubkey_hex(keys: &Keypair) -> String {
    hex::encode(keys.x_only_public_key().0.serialize())
}

impl Relay {
    async fn start(info: &'static str) -> Relay {
        let keys = random_keys();
        let template = fixture(info);
        let tags = serde_json::from_value(template["tags"].clone()).unwrap();
        let content = template["content"].as_str().unwrap().to_owned();
        let info_event = Event::sign(&Secp256k1::new(), &keys, KIND_INFO, tags, content, now_secs());
        let wallet = Wallet {
            keys,
            node: other_node(Network::Bitcoin),
            hold_key: bitcoin::secp256k1::SecretKey::from_slice(&[9; 32]).unwrap(),
            held: HashMap::new(),
            info,
            make_invoice: "make_invoice.json",
            pay: Pay::Succeed { fee_msat: 0 },
            lookup_out: LookupOut::NotFound,
            forge: false,
            refuse: false,
            made: HashMap::new(),
            outside: HashMap::new(),
            pay_calls: HashMap::new(),
            seen: Vec::new(),
            forged_sent: 0,
            errors: Vec::new(),
        };
        let state = RelayState { wallet, conns: HashMap::new(), next_conn: 0, info_event };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let relay = Relay { state: Arc::new(Mutex::new(state)), url };
        let app = axum::Router::new().fallback(upgrade).with_state(relay.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        relay
    }

    /// A connection string with a fresh client secret.
    fn uri(&self) -> (String, String) {
        let secret = hex::encode(coffer::secrets::random_bytes::<32>());
        let wallet = pubkey_hex(&self.wallet(|w| w.keys));
        (format!("nostr+walletconnect://{wallet}?relay={}&secret={secret}&lud16=x@y.z", self.url), secret)
    }

    fn wallet<T>(&self, f: impl FnOnce(&mut Wallet) -> T) -> T {
        f(&mut self.state.lock().unwrap().wallet)
    }

    /// An invoice of another node that this wallet can pay.
    fn outside_invoice(&self, amount_msat: u64) -> (String, String) {
        let (bolt11, hash, preimage) = outside_invoice(amount_msat);
        self.wallet(|w| w.outside.insert(hash.clone(), (bolt11.clone(), preimage, amount_msat)));
        (bolt11, hash)
    }

    fn seen(&self, method: &str) -> Vec<Seen> {
        self.wallet(|w| w.seen.iter().filter(|s| s.method == method).cloned().collect())
    }

    /// Every request was well formed and used the scheme the wallet offers.
    fn assert_clean(&self) {
        let (errors, seen, info) = self.wallet(|w| (w.errors.clone(), w.seen.clone(), w.info));
        assert!(errors.is_empty(), "the wallet found: {errors:?}");
        assert!(!seen.is_empty(), "the wallet was asked nothing");
        let nip44 = info.starts_with("info_nip44");
        for s in seen {
            assert_eq!(s.encryption_tag.as_deref(), nip44.then_some("nip44_v2"), "{s:?}");
            assert_eq!(s.content.contains("?iv="), !nip44, "{s:?}");
        }
    }
}

async fn upgrade(State(relay): State<Relay>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(1 << 20).on_upgrade(move |socket| serve(relay, socket))
}

async fn serve(relay: Relay, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    let id = {
        let mut s = relay.state.lock().unwrap();
        s.next_conn += 1;
        let id = s.next_conn;
        s.conns.insert(id, Conn { tx, subs: HashMap::new() });
        id
    };
    tokio::spawn(async move {
        while let Some(Some(text)) = rx.recv().await {
            if sink.send(WsMessage::Text(text.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(Ok(WsMessage::Text(text))) = stream.next().await {
        let message: Vec<Value> = serde_json::from_str(text.as_str()).unwrap_or_default();
        relay.state.lock().unwrap().handle(id, message);
    }
    relay.state.lock().unwrap().conns.remove(&id);
}

fn matches(filter: &Value, event: &Event) -> bool {
    let listed = |key: &str, value: &Value| filter.get(key).and_then(Value::as_array).is_none_or(|a| a.contains(value));
    listed("kinds", &json!(event.kind))
        && listed("authors", &json!(event.pubkey))
        && listed("#p", &json!(event.tag("p")))
        && filter.get("since").and_then(Value::as_u64).is_none_or(|s| event.created_at >= s)
}

impl RelayState {
    fn send(&self, conn: u64, message: Value) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Some(message.to_string()));
        }
    }

    fn handle(&mut self, conn: u64, message: Vec<Value>) {
        match message.first().and_then(Value::as_str) {
            Some("REQ") => {
                let (sub, filter) = (message[1].as_str().unwrap().to_owned(), message[2].clone());
                if matches(&filter, &self.info_event) {
                    self.send(conn, json!(["EVENT", sub, self.info_event]));
                }
                self.send(conn, json!(["EOSE", sub]));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.subs.insert(sub, filter);
                }
            }
            Some("CLOSE") => {
                let sub = message[1].as_str().unwrap_or_default();
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.subs.remove(sub);
                }
            }
            Some("EVENT") => {
                let event: Event = serde_json::from_value(message[1].clone()).unwrap();
                if self.wallet.refuse {
                    self.send(conn, json!(["OK", event.id, false, "rate-limited: slow down"]));
                    return;
                }
                self.send(conn, json!(["OK", event.id, true, ""]));
                match self.wallet.answer(&event) {
                    Reaction::Answer(events) => events.iter().for_each(|e| self.broadcast(e)),
                    Reaction::Silent => {}
                    Reaction::Drop => {
                        if let Some(c) = self.conns.remove(&conn) {
                            let _ = c.tx.send(None);
                        }
                    }
                }
            }
            other => self.wallet.errors.push(format!("unexpected client message {other:?}")),
        }
    }

    /// To every subscription that matches (answers are ephemeral events:
    /// a relay does not store them).
    fn broadcast(&self, event: &Event) {
        for (id, conn) in &self.conns {
            for (sub, filter) in &conn.subs {
                if matches(filter, event) {
                    self.send(*id, json!(["EVENT", sub, event]));
                }
            }
        }
    }
}

enum Reaction {
    Answer(Vec<Event>),
    Silent,
    Drop,
}

impl Wallet {
    fn answer(&mut self, request: &Event) -> Reaction {
        let secp = Secp256k1::new();
        let wallet_hex = pubkey_hex(&self.keys);
        if request.kind != KIND_REQUEST
            || request.verify(&secp).is_err()
            || request.tag("p") != Some(wallet_hex.as_str())
        {
            self.errors.push(format!("a bad request: {request:?}"));
            return Reaction::Silent;
        }
        let expiration = request.tag("expiration").and_then(|t| t.parse::<u64>().ok());
        if expiration.is_none_or(|t| t <= now_secs()) {
            self.errors.push(format!("a request without a future expiration: {:?}", request.tags));
        }
        let encryption = match request.tag("encryption") {
            Some("nip44_v2") => Encryption::Nip44V2,
            None => Encryption::Nip04,
            Some(other) => {
                self.errors.push(format!("unknown encryption {other}"));
                return Reaction::Silent;
            }
        };
        let client = bitcoin::secp256k1::XOnlyPublicKey::from_slice(&hex::decode(&request.pubkey).unwrap()).unwrap();
        let conversation = Conversation::new(&self.keys.secret_key(), &client);
        let body: Value = match conversation.decrypt(encryption, &request.content) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(e) => {
                self.errors.push(format!("undecryptable request: {e}"));
                return Reaction::Silent;
            }
        };
        let (method, params) = (body["method"].as_str().unwrap_or_default().to_owned(), body["params"].clone());
        let seen = Seen {
            method: method.clone(),
            params: params.clone(),
            encryption_tag: request.tag("encryption").map(str::to_owned),
            content: request.content.clone(),
        };
        self.seen.push(seen);
        let response = match self.respond(&method, &params) {
            Respond::With(response) => response,
            Respond::Silent => return Reaction::Silent,
            Respond::Drop => return Reaction::Drop,
        };
        let mut events = Vec::new();
        if self.forge {
            events.extend(self.forged(request, encryption, &client));
        }
        let content = conversation.encrypt(encryption, &response.to_string()).unwrap();
        events.push(Event::sign(&secp, &self.keys, KIND_RESPONSE, answer_tags(request), content, now_secs()));
        Reaction::Answer(events)
    }

    /// A `PAYMENT_FAILED` from another key, and one from the wallet's key
    /// with a broken signature: both must be dropped.
    fn forged(
        &mut self,
        request: &Event,
        encryption: Encryption,
        client: &bitcoin::secp256k1::XOnlyPublicKey,
    ) -> Vec<Event> {
        let secp = Secp256k1::new();
        let failed = fixture("pay_invoice_failed.json").to_string();
        let stranger = random_keys();
        let content = Conversation::new(&stranger.secret_key(), client).encrypt(encryption, &failed).unwrap();
        let other_author = Event::sign(&secp, &stranger, KIND_RESPONSE, answer_tags(request), content, now_secs());
        let content = Conversation::new(&self.keys.secret_key(), client).encrypt(encryption, &failed).unwrap();
        let mut bad_sig = Event::sign(&secp, &self.keys, KIND_RESPONSE, answer_tags(request), content, now_secs());
        let flipped = if bad_sig.sig.starts_with('0') { "1" } else { "0" };
        bad_sig.sig.replace_range(..1, flipped);
        self.forged_sent += 2;
        vec![other_author, bad_sig]
    }

    fn respond(&mut self, method: &str, params: &Value) -> Respond {
        match method {
            "make_invoice" => Respond::With(self.make_invoice(params)),
            "lookup_invoice" => Respond::With(self.lookup(params)),
            "make_hold_invoice" | "settle_hold_invoice" | "cancel_hold_invoice" if !self.offers_hold() => {
                self.errors.push(format!("{method} to a wallet whose info event does not list it"));
                Respond::With(json!({"result_type": method, "error": {"code": "NOT_IMPLEMENTED", "message": "no"}}))
            }
            "make_hold_invoice" => Respond::With(self.make_hold_invoice(params)),
            "settle_hold_invoice" => Respond::With(self.settle_hold_invoice(params)),
            "cancel_hold_invoice" => Respond::With(self.cancel_hold_invoice(params)),
            "pay_invoice" => self.pay_invoice(params),
            "get_balance" => Respond::With(fixture("get_balance.json")),
            other => {
                self.errors.push(format!("unexpected method {other}"));
                Respond::With(json!({"result_type": other, "error": {"code": "NOT_IMPLEMENTED", "message": "no"}}))
            }
        }
    }

    fn make_invoice(&mut self, params: &Value) -> Value {
        let amount_msat = params["amount"].as_u64().unwrap_or_default();
        let description = params["description"].as_str().unwrap_or_default().to_owned();
        let expiry = params["expiry"].as_u64().unwrap_or_default();
        if amount_msat == 0 || expiry == 0 {
            self.errors.push(format!("make_invoice without amount or expiry: {params}"));
        }
        let now = now_secs();
        let signed =
            self.node.sign(Msat::new(amount_msat), &description, expiry as u32, Duration::from_secs(now)).unwrap();
        let made = Made {
            bolt11: signed.bolt11,
            preimage: signed.preimage,
            amount_msat,
            description,
            expires_at: now + expiry,
            paid: false,
        };
        let hash = hex::encode(signed.payment_hash);
        let vars = made_vars(&hash, &made);
        self.made.insert(hash, made);
        fill(fixture(self.make_invoice), &vars)
    }

    fn offers_hold(&self) -> bool {
        let content = fixture(self.info)["content"].as_str().unwrap_or_default().to_owned();
        ["make_hold_invoice", "settle_hold_invoice", "cancel_hold_invoice"]
            .iter()
            .all(|m| content.split_whitespace().any(|c| c == *m))
    }

    /// Signs a BOLT11 for the hash coffer sent: the node never sees the
    /// preimage.
    fn make_hold_invoice(&mut self, params: &Value) -> Value {
        let amount_msat = params["amount"].as_u64().unwrap_or_default();
        let description = params["description"].as_str().unwrap_or_default().to_owned();
        let expiry = params["expiry"].as_u64().unwrap_or_default();
        let hash = params["payment_hash"].as_str().unwrap_or_default().to_owned();
        let Ok(hash_bytes) = <[u8; 32]>::try_from(hex::decode(&hash).unwrap_or_default()) else {
            self.errors.push(format!("make_hold_invoice without a payment hash: {params}"));
            return fixture("lookup_not_found.json");
        };
        if amount_msat == 0 || expiry == 0 {
            self.errors.push(format!("make_hold_invoice without amount or expiry: {params}"));
        }
        let cltv = params.get("min_cltv_expiry_delta").and_then(Value::as_u64).unwrap_or(144);
        let now = now_secs();
        let secp = Secp256k1::new();
        use bitcoin::hashes::Hash;
        let invoice = lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Bitcoin)
            .description(description.clone())
            .payment_hash(bitcoin::hashes::sha256::Hash::from_byte_array(hash_bytes))
            .payment_secret(lightning_invoice::PaymentSecret(coffer::secrets::random_bytes::<32>()))
            .duration_since_epoch(Duration::from_secs(now))
            .min_final_cltv_expiry_delta(cltv)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &self.hold_key))
            .unwrap();
        let held = Held {
            bolt11: invoice.to_string(),
            amount_msat,
            description,
            created_at: now,
            expires_at: now + expiry,
            state: "pending",
            preimage: None,
        };
        let vars = held_vars(&hash, &held);
        self.held.insert(hash, held);
        fill(fixture("make_hold_invoice.json"), &vars)
    }

    fn settle_hold_invoice(&mut self, params: &Value) -> Value {
        use bitcoin::hashes::Hash;
        let preimage =
            <[u8; 32]>::try_from(hex::decode(params["preimage"].as_str().unwrap_or_default()).unwrap_or_default());
        let Ok(preimage) = preimage else {
            self.errors.push(format!("settle_hold_invoice without a preimage: {params}"));
            return fill(fixture("not_found.json"), &HashMap::from([("method", json!("settle_hold_invoice"))]));
        };
        let hash = hex::encode(bitcoin::hashes::sha256::Hash::hash(&preimage).to_byte_array());
        let Some(held) = self.held.get_mut(&hash) else {
            return fill(fixture("not_found.json"), &HashMap::from([("method", json!("settle_hold_invoice"))]));
        };
        match held.state {
            "accepted" | "settled" => {
                held.state = "settled";
                held.preimage = Some(preimage);
                fixture("settle_hold_invoice.json")
            }
            _ => fixture("settle_hold_not_accepted.json"),
        }
    }

    fn cancel_hold_invoice(&mut self, params: &Value) -> Value {
        let hash = params["payment_hash"].as_str().unwrap_or_default();
        let Some(held) = self.held.get_mut(hash) else {
            return fill(fixture("not_found.json"), &HashMap::from([("method", json!("cancel_hold_invoice"))]));
        };
        if held.state == "settled" {
            return fixture("cancel_hold_settled.json");
        }
        held.state = "failed";
        fixture("cancel_hold_invoice.json")
    }

    fn lookup(&mut self, params: &Value) -> Value {
        let hash = params["payment_hash"].as_str().unwrap_or_default().to_owned();
        if let Some(held) = self.held.get(&hash) {
            return fill(fixture("lookup_hold_invoice.json"), &held_vars(&hash, held));
        }
        if let Some(made) = self.made.get(&hash) {
            let name = if made.paid { "lookup_invoice_settled.json" } else { "lookup_invoice_pending.json" };
            return fill(fixture(name), &made_vars(&hash, made));
        }
        let Some((bolt11, preimage, amount)) = self.outside.get(&hash).cloned() else {
            return fixture("lookup_not_found.json");
        };
        let (name, fee_msat) = match self.lookup_out {
            LookupOut::NotFound => return fixture("lookup_not_found.json"),
            LookupOut::Pending => ("lookup_payment_pending.json", 0),
            LookupOut::Settled { fee_msat } => ("lookup_payment_settled.json", fee_msat),
        };
        let now = now_secs();
        let vars = HashMap::from([
            ("invoice", json!(bolt11)),
            ("preimage", json!(hex::encode(preimage))),
            ("payment_hash", json!(hash)),
            ("amount", json!(amount)),
            ("fees_paid", json!(fee_msat)),
            ("created_at", json!(now - 5)),
            ("expires_at", json!(now + 3600)),
            ("settled_at", json!(now - 1)),
        ]);
        fill(fixture(name), &vars)
    }

    fn pay_invoice(&mut self, params: &Value) -> Respond {
        let bolt11 = params["invoice"].as_str().unwrap_or_default();
        if params.get("amount").is_some() {
            self.errors.push(format!("pay_invoice with an amount for an invoice that has one: {params}"));
        }
        let Ok(parsed) = ParsedInvoice::parse(bolt11, Network::Bitcoin) else {
            self.errors.push(format!("pay_invoice of a bad invoice: {params}"));
            return Respond::Silent;
        };
        let hash = hex::encode(parsed.payment_hash);
        *self.pay_calls.entry(hash.clone()).or_default() += 1;
        let preimage = self.outside.get(&hash).map(|(_, p, _)| hex::encode(p)).unwrap_or_default();
        match self.pay {
            Pay::Succeed { fee_msat } => Respond::With(fill(
                fixture("pay_invoice.json"),
                &HashMap::from([("preimage", json!(preimage)), ("fees_paid", json!(fee_msat))]),
            )),
            Pay::Fail => Respond::With(fixture("pay_invoice_failed.json")),
            Pay::Internal => Respond::With(fixture("pay_invoice_internal.json")),
            Pay::Silent => Respond::Silent,
            Pay::Drop => Respond::Drop,
        }
    }
}

enum Respond {
    With(Value),
    Silent,
    Drop,
}

fn answer_tags(request: &Event) -> Vec<Vec<String>> {
    vec![vec!["p".into(), request.pubkey.clone()], vec!["e".into(), request.id.clone()]]
}

fn held_vars<'a>(hash: &str, held: &Held) -> HashMap<&'a str, Value> {
    let mut vars = HashMap::from([
        ("state", json!(held.state)),
        ("invoice", json!(held.bolt11)),
        ("description", json!(held.description)),
        ("payment_hash", json!(hash)),
        ("amount", json!(held.amount_msat)),
        ("created_at", json!(held.created_at)),
        ("expires_at", json!(held.expires_at)),
    ]);
    if let Some(preimage) = held.preimage {
        vars.insert("preimage", json!(hex::encode(preimage)));
        vars.insert("settled_at", json!(now_secs()));
    }
    vars
}

fn made_vars<'a>(hash: &str, made: &Made) -> HashMap<&'a str, Value> {
    HashMap::from([
        ("invoice", json!(made.bolt11)),
        ("description", json!(made.description)),
        ("preimage", json!(hex::encode(made.preimage))),
        ("payment_hash", json!(hash)),
        ("amount", json!(made.amount_msat)),
        ("created_at", json!(made.expires_at.saturating_sub(3600))),
        ("expires_at", json!(made.expires_at)),
        ("settled_at", json!(now_secs())),
    ])
}

async fn start_gateway(relay: &Relay) -> Gateway {
    let (uri, _) = relay.uri();
    Gateway::start_with_env(&[
        ("COFFER_LIGHTNING", "nwc"),
        ("COFFER_NWC_URI", &uri),
        ("COFFER_LIGHTNING_TIMEOUT_MS", "1500"),
    ])
    .await
}

/// An agent funded by a deposit from outside: the wallet reports the
/// invoice settled.
async fn funded_agent(gw: &Gateway, relay: &Relay, amount_msat: u64) -> (String, Client) {
    let created = gw.operator().create_agent("payer").await.expect("creating an agent");
    let agent = gw.client(&created.key);
    let request = DepositRequest { amount_msat, agent_id: None, memo: None };
    let deposit = agent.create_deposit(&request).await.expect("a deposit invoice");
    relay.wallet(|w| w.made.get_mut(&deposit.payment_hash).expect("made by the wallet").paid = true);
    balance_reaches(&agent, amount_msat).await;
    (created.key, agent)
}

#[tokio::test]
async fn a_nip44_deposit_is_made_by_the_wallet_and_credited_once_even_after_a_restart() {
    let relay = Relay::start("info_nip44.json").await;
    let mut gw = start_gateway(&relay).await;
    let (key, agent) = funded_agent(&gw, &relay, 50_000).await;
    let made = relay.seen("make_invoice");
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].params["amount"], 50_000);
    assert_eq!(made[0].params["description"], "coffer deposit");
    assert!(made[0].params["expiry"].as_u64().is_some_and(|e| e > 0), "{:?}", made[0].params);
    drop(agent);
    // More rounds and a restart credit nothing more.
    gw.restart().await;
    let agent = gw.client(&key);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 50_000);
    assert_eq!(gw.events("invoice.paid").await.len(), 1, "one credit");
    assert!(!relay.seen("lookup_invoice").is_empty(), "the watcher asked the wallet");
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_nip04_withdrawal_settles_at_the_wallets_fee_and_releases_the_reserve() {
    let relay = Relay::start("info_nip04.json").await;
    let gw = start_gateway(&relay).await;
    let (_, agent) = funded_agent(&gw, &relay, 200_000).await;
    relay.wallet(|w| w.pay = Pay::Succeed { fee_msat: 3_000 });
    let (bolt11, hash) = relay.outside_invoice(100_000);
    let paid = pay_out(&agent, &bolt11, "w1").await;
    assert_eq!((paid.status, paid.amount_msat, paid.fee_msat), (PaymentStatus::Succeeded, 100_000, 3_000));
    let preimage = relay.wallet(|w| hex::encode(w.outside[&hash].1));
    assert_eq!(paid.preimage.as_deref(), Some(preimage.as_str()));
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (97_000, 0), "amount and real fee, nothing reserved");
    assert_eq!(relay.seen("pay_invoice")[0].params, json!({"invoice": bolt11}));
    // A retry with the same key gets the first answer and pays nothing.
    assert_eq!(pay_out(&agent, &bolt11, "w1").await.id, paid.id);
    assert_eq!(relay.wallet(|w| w.pay_calls[&hash]), 1);
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn payment_failed_fails_the_payment_and_refunds_it_in_full() {
    let relay = Relay::start("info_nip44.json").await;
    let gw = start_gateway(&relay).await;
    let (_, agent) = funded_agent(&gw, &relay, 200_000).await;
    relay.wallet(|w| w.pay = Pay::Fail);
    let (bolt11, _) = relay.outside_invoice(50_000);
    let failed = pay_out(&agent, &bolt11, "f1").await;
    assert_eq!(failed.status, PaymentStatus::Failed);
    let detail = failed.detail.unwrap_or_default();
    assert!(detail.contains("PAYMENT_FAILED") && detail.contains("no route"), "{detail}");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.available_msat, wallet.pending_msat), (200_000, 200_000, 0));
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_silent_wallet_leaves_the_payment_pending_until_lookup_invoice_settles_it_after_a_restart() {
    let relay = Relay::start("info_nip04.json").await;
    let mut gw = start_gateway(&relay).await;
    let (key, agent) = funded_agent(&gw, &relay, 200_000).await;
    relay.wallet(|w| {
        w.pay = Pay::Silent;
        w.lookup_out = LookupOut::Pending;
    });
    let (bolt11, hash) = relay.outside_invoice(100_000);
    let pending = pay_out(&agent, &bolt11, "s1").await;
    assert_eq!(pending.status, PaymentStatus::Pending);
    let detail = pending.detail.clone().unwrap_or_default();
    assert!(detail.contains("outcome unknown") && detail.contains("timed out"), "{detail}");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000, 110_000), "amount and fee limit reserved");
    assert_audit(&gw).await;

    // Crash while pending; the wallet finished the payment meanwhile.
    gw.kill9().await;
    relay.wallet(|w| w.lookup_out = LookupOut::Settled { fee_msat: 2_000 });
    gw.restart().await;
    let agent = gw.client(&key);
    let done = finished(&agent, &pending.id).await;
    assert_eq!((done.status, done.fee_msat), (PaymentStatus::Succeeded, 2_000));
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (98_000, 0));
    assert_eq!(relay.wallet(|w| w.pay_calls[&hash]), 1, "never sent twice");
    let looked_up = relay.seen("lookup_invoice");
    assert!(looked_up.iter().any(|s| s.params == json!({"payment_hash": hash})), "{looked_up:?}");
    // Settled once: later rounds change nothing.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(payment(&agent, &pending.id).await.fee_msat, 2_000);
    assert_eq!(gw.events("payment.succeeded").await.len(), 1);
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn forged_answers_are_dropped_and_the_wallets_own_is_used() {
    let relay = Relay::start("info_nip44.json").await;
    let gw = start_gateway(&relay).await;
    let (_, agent) = funded_agent(&gw, &relay, 200_000).await;
    relay.wallet(|w| {
        w.forge = true;
        w.pay = Pay::Succeed { fee_msat: 1_000 };
    });
    let (bolt11, _) = relay.outside_invoice(60_000);
    let paid = pay_out(&agent, &bolt11, "g1").await;
    // The forged answers came first and said PAYMENT_FAILED.
    assert_eq!((paid.status, paid.fee_msat), (PaymentStatus::Succeeded, 1_000));
    assert!(relay.wallet(|w| w.forged_sent) >= 2);
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 200_000 - 61_000);
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_agents_invoice_comes_from_the_wallet_and_settles_inside_when_another_agent_pays() {
    let relay = Relay::start("info_nip44.json").await;
    let gw = start_gateway(&relay).await;
    let (_, payer) = funded_agent(&gw, &relay, 100_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice(&payee, 20_000).await;
    assert!(relay.wallet(|w| w.made.contains_key(&invoice.payment_hash)), "made by the wallet");
    let paid = pay_out(&payer, &invoice.bolt11, "i1").await;
    assert_eq!((paid.status, paid.payee_agent_id.is_some()), (PaymentStatus::Succeeded, true));
    // Settled with the wallet's preimage, inside coffer: never sent out.
    let preimage = relay.wallet(|w| hex::encode(w.made[&invoice.payment_hash].preimage));
    assert_eq!(paid.preimage.as_deref(), Some(preimage.as_str()));
    assert!(relay.seen("pay_invoice").is_empty());
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 20_000);
    relay.assert_clean();
    assert_audit(&gw).await;
}

#[tokio::test]
async fn the_client_reads_balance_and_not_found_and_never_guesses_an_outcome() {
    coffer::tls::install_crypto_provider();
    let relay = Relay::start("info_nip44.json").await;
    let uri = NwcUri::parse(&relay.uri().0).unwrap();
    let nwc = Nwc::new(&uri, Duration::from_millis(1_500)).unwrap();
    assert_eq!(nwc.balance().await.unwrap(), Msat::new(150_000_000));
    assert_eq!(nwc.lookup_payment([9; 32]).await.unwrap(), None, "NOT_FOUND is no record");
    assert_eq!(nwc.lookup_invoice([9; 32]).await.unwrap(), InvoiceState::Expired);

    let (bolt11, _) = relay.outside_invoice(10_000);
    relay.wallet(|w| w.pay = Pay::Internal);
    let internal = nwc.pay_invoice(&bolt11, Msat::new(10_000), Msat::new(10_000)).await;
    assert!(matches!(&internal, Err(LnError::Wallet { code, .. }) if code == "INTERNAL"), "{internal:?}");
    relay.wallet(|w| w.pay = Pay::Drop);
    let dropped = nwc.pay_invoice(&bolt11, Msat::new(10_000), Msat::new(10_000)).await.unwrap_err();
    assert!(dropped.to_string().contains("dropped"), "{dropped}");
    // The next call connects again.
    assert_eq!(nwc.balance().await.unwrap(), Msat::new(150_000_000));
    // A relay that refuses a request: no answer, outcome unknown.
    relay.wallet(|w| w.refuse = true);
    let refused = nwc.pay_invoice(&bolt11, Msat::new(10_000), Msat::new(10_000)).await.unwrap_err();
    assert!(refused.to_string().contains("refused") && refused.to_string().contains("rate-limited"), "{refused}");
    relay.wallet(|w| w.refuse = false);

    // A wallet that keeps its preimages cannot make coffer's invoices.
    relay.wallet(|w| w.make_invoice = "make_invoice_without_preimage.json");
    let refused = nwc.create_invoice(Msat::new(21_000), "coffer", 600, [0; 32]).await.unwrap_err();
    assert!(refused.to_string().contains("cannot be used to receive"), "{refused}");
    relay.wallet(|w| w.make_invoice = "make_invoice.json");
    let made = nwc.create_invoice(Msat::new(21_000), "coffer", 600, [0; 32]).await.unwrap();
    assert_eq!(
        relay.seen("make_invoice").last().unwrap().params,
        json!({"amount": 21_000, "description": "coffer", "expiry": 600})
    );
    assert!(relay.wallet(|w| w.made.contains_key(&hex::encode(made.payment_hash))));
    relay.assert_clean();
}

#[tokio::test]
async fn the_start_line_names_nwc_and_the_relay_and_never_the_secret() {
    let relay = Relay::start("info_nip44.json").await;
    let (uri, secret) = relay.uri();
    let out = tokio::process::Command::new(common::BIN)
        .args(["serve", "--listen", "192.0.2.1:0"])
        .arg("--data")
        .arg(tempfile::tempdir().unwrap().path().join("d"))
        .env("COFFER_LIGHTNING", "nwc")
        .env("COFFER_NWC_URI", &uri)
        .env("COFFER_OPERATOR_TOKEN", "cop_test_token_0123456789abcdef0123456789")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    // A documentation address is not this machine's: binding fails, and the
    // process stops after its start-up lines.
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("lightning: nwc at {}, network bitcoin", relay.url)), "{text}");
    assert!(!text.contains(&secret), "{text}");
}

/// coffer's payment hash for a preimage it keeps.
fn hash_of(preimage: [u8; 32]) -> [u8; 32] {
    use bitcoin::hashes::Hash;
    bitcoin::hashes::sha256::Hash::hash(&preimage).to_byte_array()
}

/// The client against a wallet that lists the hold methods: every call, its
/// exact parameters, and every state `lookup_invoice` reports.
async fn hold_invoices_through(info: &'static str) {
    coffer::tls::install_crypto_provider();
    let relay = Relay::start(info).await;
    let uri = NwcUri::parse(&relay.uri().0).unwrap();
    let nwc = Nwc::new(&uri, Duration::from_millis(1_500)).unwrap();
    let hold = nwc.hold_invoices().expect("offered before the first connection");
    let (preimage, other) = ([0x11; 32], [0x22; 32]);
    let (hash, other_hash) = (hash_of(preimage), hash_of(other));

    let bolt11 = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, Some(144)).await.unwrap();
    assert_eq!(
        relay.seen("make_hold_invoice").last().unwrap().params,
        json!({"amount": 21_000, "description": "coffer hold", "expiry": 600, "payment_hash": hex::encode(hash),
               "min_cltv_expiry_delta": 144})
    );
    assert_eq!(relay.wallet(|w| w.held[&hex::encode(hash)].bolt11.clone()), bolt11);
    assert!(nwc.hold_invoices().is_some(), "the info event lists them");
    assert_eq!(hold.lookup_hold_invoice(hash).await.unwrap(), Some(HoldState::Open));
    assert_eq!(relay.seen("lookup_invoice").last().unwrap().params, json!({"payment_hash": hex::encode(hash)}));

    // Settling before the payer paid is refused; the invoice stays open.
    let early = hold.settle_hold_invoice(preimage).await.unwrap_err();
    assert_eq!(
        early,
        LnError::Wallet { code: "OTHER".into(), detail: "the hold invoice has no accepted payment to settle".into() }
    );
    // The payer's HTLCs arrive and wait.
    relay.wallet(|w| w.held.get_mut(&hex::encode(hash)).unwrap().state = "accepted");
    assert_eq!(hold.lookup_hold_invoice(hash).await.unwrap(), Some(HoldState::Accepted { amount: Msat::new(21_000) }));
    hold.settle_hold_invoice(preimage).await.unwrap();
    assert_eq!(relay.seen("settle_hold_invoice").last().unwrap().params, json!({"preimage": hex::encode(preimage)}));
    assert_eq!(hold.lookup_hold_invoice(hash).await.unwrap(), Some(HoldState::Settled));
    hold.settle_hold_invoice(preimage).await.unwrap();
    let settled = hold.cancel_hold_invoice(hash).await.unwrap_err();
    assert_eq!(settled, LnError::Wallet { code: "OTHER".into(), detail: "the hold invoice is already settled".into() });

    // Another one, cancelled: the payer gets the money back.
    hold.create_hold_invoice(Msat::new(5_000), "coffer hold", 300, other_hash, None).await.unwrap();
    assert_eq!(
        relay.seen("make_hold_invoice").last().unwrap().params,
        json!({"amount": 5_000, "description": "coffer hold", "expiry": 300, "payment_hash": hex::encode(other_hash)})
    );
    relay.wallet(|w| w.held.get_mut(&hex::encode(other_hash)).unwrap().state = "accepted");
    hold.cancel_hold_invoice(other_hash).await.unwrap();
    assert_eq!(
        relay.seen("cancel_hold_invoice").last().unwrap().params,
        json!({"payment_hash": hex::encode(other_hash)})
    );
    assert_eq!(hold.lookup_hold_invoice(other_hash).await.unwrap(), Some(HoldState::Cancelled));
    relay.wallet(|w| w.held.get_mut(&hex::encode(other_hash)).unwrap().state = "expired");
    assert_eq!(hold.lookup_hold_invoice(other_hash).await.unwrap(), Some(HoldState::Cancelled));

    // Unknown hashes: no record, and NOT_FOUND to settle or cancel.
    assert_eq!(hold.lookup_hold_invoice([3; 32]).await.unwrap(), None);
    let unknown = hold.cancel_hold_invoice([3; 32]).await.unwrap_err();
    assert!(matches!(&unknown, LnError::Wallet { code, .. } if code == "NOT_FOUND"), "{unknown:?}");
    let unknown = hold.settle_hold_invoice([3; 32]).await.unwrap_err();
    assert!(matches!(&unknown, LnError::Wallet { code, .. } if code == "NOT_FOUND"), "{unknown:?}");
    relay.assert_clean();
}

#[tokio::test]
async fn nip44_hold_invoices_are_made_for_coffers_hash_then_settled_or_cancelled() {
    hold_invoices_through("info_nip44_hold.json").await;
}

#[tokio::test]
async fn nip04_hold_invoices_are_made_for_coffers_hash_then_settled_or_cancelled() {
    hold_invoices_through("info_nip04_hold.json").await;
}

#[tokio::test]
async fn a_wallet_without_hold_methods_is_never_sent_one_and_is_not_offered_them() {
    coffer::tls::install_crypto_provider();
    let relay = Relay::start("info_nip44.json").await;
    let uri = NwcUri::parse(&relay.uri().0).unwrap();
    let nwc = Nwc::new(&uri, Duration::from_millis(1_500)).unwrap();
    let hold = nwc.hold_invoices().expect("unknown before the first connection");
    let refused = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, [4; 32], None).await.unwrap_err();
    assert!(
        matches!(&refused, LnError::Wallet { code, detail } if code == "NOT_IMPLEMENTED"
        && detail.contains("make_hold_invoice not sent")),
        "{refused:?}"
    );
    assert!(nwc.hold_invoices().is_none(), "its info event was read");
    assert!(
        matches!(hold.settle_hold_invoice([4; 32]).await, Err(LnError::Wallet { code, .. }) if code == "NOT_IMPLEMENTED")
    );
    assert!(
        matches!(hold.cancel_hold_invoice([4; 32]).await, Err(LnError::Wallet { code, .. }) if code == "NOT_IMPLEMENTED")
    );
    assert!(relay.seen("make_hold_invoice").is_empty() && relay.seen("settle_hold_invoice").is_empty());
    assert!(relay.seen("cancel_hold_invoice").is_empty());
    // Other calls go on as before.
    assert_eq!(nwc.balance().await.unwrap(), Msat::new(150_000_000));
    relay.assert_clean();
}
