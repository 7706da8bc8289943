//! A stand-in for LND's REST API, written from LND's documentation
//! (`lnrpc` `AddInvoice`/`LookupInvoice`, `invoicesrpc` `AddHoldInvoice`,
//! `LookupInvoiceV2`, `SettleInvoice`, `CancelInvoice`: invoices.proto and
//! the REST mappings in invoices.yaml), not a live LND: plain HTTP on
//! 127.0.0.1 (coffer allows http to loopback only), the macaroon header
//! checked, the invoices' states kept here and flipped by the test (a payer
//! outside pays: `ACCEPTED`), faults scripted. coffer's real LND client
//! talks to it. Included with `#[path]` by the test files that use it.
#![allow(dead_code)]

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const MACAROON_HEX: &str = "0201036c6e640247030a10fa4e";

/// An invoice of the node: a plain one (coffer gave the preimage) or a
/// hold invoice (coffer gave the hash only).
#[derive(Clone, Debug)]
pub struct NodeInvoice {
    pub bolt11: String,
    pub amount_msat: u64,
    /// `OPEN`, `ACCEPTED`, `SETTLED` or `CANCELED`.
    pub state: &'static str,
    pub hold: bool,
    /// What `cltv_expiry` coffer asked for (hold invoices).
    pub cltv_expiry: Option<String>,
}

/// How the next settle or cancel call goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers `500` and does nothing.
    Refuse,
    /// Does it, then answers `500` (the answer is lost on the way).
    LoseAnswer,
}

#[derive(Default)]
pub struct Node {
    pub invoices: HashMap<[u8; 32], NodeInvoice>,
    /// Every preimage a settle call carried, in order.
    pub settle_calls: Vec<[u8; 32]>,
    /// Every payment hash a cancel call carried, in order.
    pub cancel_calls: Vec<[u8; 32]>,
    pub hold_creates: u32,
    pub settle_fault: Option<Fault>,
    pub cancel_fault: Option<Fault>,
    pub wrong_macaroons: u32,
}

#[derive(Clone)]
pub struct FakeLnd {
    pub node: Arc<Mutex<Node>>,
    key: SecretKey,
}

impl FakeLnd {
    /// Serves on a loopback port; returns the stand-in and its `http://` URL.
    pub async fn start() -> (FakeLnd, String) {
        let key = SecretKey::from_slice(&coffer::secrets::random_bytes::<32>()).expect("a secret key");
        let fake = FakeLnd { node: Arc::default(), key };
        let app = Router::new()
            .route("/v1/invoices", post(add_invoice))
            .route("/v1/invoice/{hash}", get(lookup_invoice))
            .route("/v2/invoices/hodl", post(add_hold_invoice))
            .route("/v2/invoices/lookup", get(lookup_hold_invoice))
            .route("/v2/invoices/settle", post(settle_invoice))
            .route("/v2/invoices/cancel", post(cancel_invoice))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the LND stand-in");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serving the LND stand-in") });
        (fake, url)
    }

    pub fn invoice(&self, hash: &[u8; 32]) -> Option<NodeInvoice> {
        self.node.lock().unwrap().invoices.get(hash).cloned()
    }

    pub fn state(&self, hash: &[u8; 32]) -> &'static str {
        self.invoice(hash).map_or("NONE", |i| i.state)
    }

    /// A payer outside pays an invoice in full: a plain invoice settles, a
    /// hold invoice is held (`ACCEPTED`). `false` if the node refuses the
    /// payment (the invoice is not open).
    pub fn pay_from_outside(&self, hash: &[u8; 32]) -> bool {
        let mut node = self.node.lock().unwrap();
        let invoice = node.invoices.get_mut(hash).expect("an invoice of this node");
        if invoice.state != "OPEN" {
            return false;
        }
        invoice.state = if invoice.hold { "ACCEPTED" } else { "SETTLED" };
        true
    }

    /// The node's state changes without coffer asking (as after a settle
    /// call whose answer was lost).
    pub fn set_state(&self, hash: &[u8; 32], state: &'static str) {
        self.node.lock().unwrap().invoices.get_mut(hash).expect("an invoice of this node").state = state;
    }

    pub fn fail_next_settle(&self, fault: Fault) {
        self.node.lock().unwrap().settle_fault = Some(fault);
    }

    pub fn fail_next_cancel(&self, fault: Fault) {
        self.node.lock().unwrap().cancel_fault = Some(fault);
    }

    pub fn settle_calls(&self) -> Vec<[u8; 32]> {
        self.node.lock().unwrap().settle_calls.clone()
    }

    pub fn cancel_calls(&self, hash: &[u8; 32]) -> usize {
        self.node.lock().unwrap().cancel_calls.iter().filter(|h| *h == hash).count()
    }

    fn sign(&self, hash: [u8; 32], amount_msat: u64, memo: &str, expiry_secs: u64, cltv: u64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
        let secp = Secp256k1::new();
        lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Bitcoin)
            .description(memo.to_owned())
            .payment_hash(sha256::Hash::from_byte_array(hash))
            .payment_secret(lightning_invoice::PaymentSecret(coffer::secrets::random_bytes::<32>()))
            .duration_since_epoch(Duration::from_secs(now.as_secs()))
            .min_final_cltv_expiry_delta(cltv)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry_secs))
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &self.key))
            .expect("signing an invoice")
            .to_string()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let ok = headers.get("grpc-metadata-macaroon").is_some_and(|v| v.as_bytes() == MACAROON_HEX.as_bytes());
        if !ok {
            self.node.lock().unwrap().wrong_macaroons += 1;
        }
        ok
    }
}

/// LND's error answer: `{"code", "message", "details"}` (a gRPC status).
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "details": []}))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, 2, "verification failed: signature mismatch after caveat verification")
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}"))
}

fn hash_from_base64(text: &str) -> [u8; 32] {
    STANDARD.decode(text).expect("base64").try_into().expect("32 bytes")
}

/// `POST /v1/invoices {"value_msat", "memo", "expiry", "r_preimage"}`.
async fn add_invoice(State(fake): State<FakeLnd>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let preimage = hash_from_base64(field(&body, "r_preimage"));
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let amount_msat = field(&body, "value_msat").parse().expect("value_msat");
    let expiry = field(&body, "expiry").parse().expect("expiry");
    let bolt11 = fake.sign(hash, amount_msat, field(&body, "memo"), expiry, 80);
    let invoice = NodeInvoice { bolt11: bolt11.clone(), amount_msat, state: "OPEN", hold: false, cltv_expiry: None };
    fake.node.lock().unwrap().invoices.insert(hash, invoice);
    Json(json!({"r_hash": STANDARD.encode(hash), "payment_request": bolt11, "add_index": "1"})).into_response()
}

/// `GET /v1/invoice/{r_hash_str}` (hex).
async fn lookup_invoice(State(fake): State<FakeLnd>, headers: HeaderMap, Path(hash): Path<String>) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let hash: [u8; 32] = hex::decode(hash).expect("hex").try_into().expect("32 bytes");
    match fake.invoice(&hash) {
        Some(invoice) => Json(json!({"r_hash": STANDARD.encode(hash), "state": invoice.state})).into_response(),
        None => error(StatusCode::NOT_FOUND, 5, "unable to locate invoice"),
    }
}

/// `POST /v2/invoices/hodl {"hash", "value_msat", "memo", "expiry", "cltv_expiry"}`.
async fn add_hold_invoice(State(fake): State<FakeLnd>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let hash = hash_from_base64(field(&body, "hash"));
    if fake.invoice(&hash).is_some() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "invoice with payment hash already exists");
    }
    let amount_msat = field(&body, "value_msat").parse().expect("value_msat");
    let expiry = field(&body, "expiry").parse().expect("expiry");
    let cltv_expiry = body["cltv_expiry"].as_str().map(str::to_owned);
    let cltv = cltv_expiry.as_deref().map_or(80, |c| c.parse().expect("cltv_expiry"));
    let bolt11 = fake.sign(hash, amount_msat, field(&body, "memo"), expiry, cltv);
    let invoice = NodeInvoice { bolt11: bolt11.clone(), amount_msat, state: "OPEN", hold: true, cltv_expiry };
    let mut node = fake.node.lock().unwrap();
    node.invoices.insert(hash, invoice);
    node.hold_creates += 1;
    Json(json!({"payment_request": bolt11, "add_index": "13", "payment_addr": STANDARD.encode([7u8; 32])}))
        .into_response()
}

/// `GET /v2/invoices/lookup?payment_hash=` (base64): an `lnrpc.Invoice`.
async fn lookup_hold_invoice(
    State(fake): State<FakeLnd>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let hash = hash_from_base64(&query["payment_hash"]);
    let Some(invoice) = fake.invoice(&hash) else { return error(StatusCode::NOT_FOUND, 5, "unable to locate invoice") };
    let paid = if matches!(invoice.state, "ACCEPTED" | "SETTLED") { invoice.amount_msat } else { 0 };
    Json(json!({
        "r_hash": STANDARD.encode(hash), "payment_request": invoice.bolt11, "value_msat": invoice.amount_msat.to_string(),
        "state": invoice.state, "amt_paid_msat": paid.to_string(), "settled": invoice.state == "SETTLED",
    }))
    .into_response()
}

/// `POST /v2/invoices/settle {"preimage"}`: an accepted invoice settles; a
/// settled one again is no error; an open or cancelled one is refused.
async fn settle_invoice(State(fake): State<FakeLnd>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let preimage = hash_from_base64(field(&body, "preimage"));
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let mut node = fake.node.lock().unwrap();
    node.settle_calls.push(preimage);
    let fault = node.settle_fault.take();
    if fault == Some(Fault::Refuse) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "unable to settle: the node is busy");
    }
    let Some(invoice) = node.invoices.get_mut(&hash) else {
        return error(StatusCode::NOT_FOUND, 5, "unable to locate invoice");
    };
    match invoice.state {
        "ACCEPTED" | "SETTLED" => invoice.state = "SETTLED",
        "OPEN" => return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "invoice still open"),
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "invoice already canceled"),
    }
    if fault == Some(Fault::LoseAnswer) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 14, "transport is closing");
    }
    Json(json!({})).into_response()
}

/// `POST /v2/invoices/cancel {"payment_hash"}`: anything but a settled
/// invoice is cancelled (a cancelled one again is no error).
async fn cancel_invoice(State(fake): State<FakeLnd>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let hash = hash_from_base64(field(&body, "payment_hash"));
    let mut node = fake.node.lock().unwrap();
    node.cancel_calls.push(hash);
    let fault = node.cancel_fault.take();
    if fault == Some(Fault::Refuse) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "unable to cancel: the node is busy");
    }
    let Some(invoice) = node.invoices.get_mut(&hash) else {
        return error(StatusCode::NOT_FOUND, 5, "unable to locate invoice");
    };
    if invoice.state == "SETTLED" {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 2, "invoice already settled");
    }
    invoice.state = "CANCELED";
    if fault == Some(Fault::LoseAnswer) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 14, "transport is closing");
    }
    Json(json!({})).into_response()
}
