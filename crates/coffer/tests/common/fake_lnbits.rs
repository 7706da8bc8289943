//! A scripted Lightning backend for the fault and approval tests: a server
//! that speaks LNbits' API (used through coffer's real LNbits client) and
//! times out, fails, or answers "pending" for ever as a test sets it; and
//! the helpers those tests share. Included with `#[path]` by the test files
//! that use it (not from `common`, so that the other test binaries do not
//! build it). Each test file uses part of it.
#![allow(dead_code)]

use super::common::Gateway;
use super::common::lightning::{balance_reaches, other_node, outside_invoice};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use coffer::payment::bolt11::{Network, NodeSigner};
use coffer_client::{Client, DepositRequest};
use coffer_core::Msat;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ADMIN_KEY: &str = "fake-lnbits-admin-key";

/// How the scripted backend answers a payment.
#[derive(Clone, Debug)]
pub enum PayMode {
    /// Never answers: the call times out.
    Hang,
    /// 500, outcome unknown.
    Error,
    /// 201 with `status: pending`.
    Pending,
    /// 201 with `status: success` and this fee.
    Succeed { fee_msat: i64 },
    /// 520 with `status: failed`.
    Fail,
}

/// How it answers a lookup of an outgoing payment.
#[derive(Clone, Debug)]
pub enum Lookup {
    NotFound,
    Pending,
    Succeeded { fee_msat: i64 },
    Failed,
}

pub struct Script {
    pay: PayMode,
    lookup: Lookup,
    /// Preimages of the outside invoices, as their node would reveal them.
    pub preimages: HashMap<String, String>,
    /// Invoices this "node" made: hash -> (preimage, paid).
    pub invoices: HashMap<String, (String, bool)>,
    pay_calls: HashMap<String, u32>,
    pub wrong_keys: u32,
}

#[derive(Clone)]
pub struct Fake {
    pub script: Arc<Mutex<Script>>,
    node: Arc<NodeSigner>,
}

impl Fake {
    pub async fn start() -> (Fake, String) {
        let fake = Fake {
            script: Arc::new(Mutex::new(Script {
                pay: PayMode::Succeed { fee_msat: 0 },
                lookup: Lookup::NotFound,
                preimages: HashMap::new(),
                invoices: HashMap::new(),
                pay_calls: HashMap::new(),
                wrong_keys: 0,
            })),
            node: Arc::new(other_node(Network::Bitcoin)),
        };
        let app = Router::new()
            .route("/api/v1/payments", post(create_or_pay))
            .route("/api/v1/payments/{hash}", get(lookup))
            .route("/api/v1/wallet", get(|| async { Json(json!({"name": "fake", "balance": 1_000_000_000})) }))
            .route("/.well-known/lnurlp/{name}", get(lnurl_pay_request))
            .route("/lnurl/{name}", get(lnurl_callback))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake backend");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serving the fake backend") });
        (fake, url)
    }

    pub fn set(&self, pay: PayMode, lookup: Lookup) {
        let mut s = self.script.lock().unwrap();
        s.pay = pay;
        s.lookup = lookup;
    }

    pub fn set_lookup(&self, lookup: Lookup) {
        self.script.lock().unwrap().lookup = lookup;
    }

    /// An invoice of another node whose preimage this backend learns when
    /// it pays it.
    pub fn outside_invoice(&self, amount_msat: u64) -> (String, String) {
        let (bolt11, hash, preimage) = outside_invoice(amount_msat);
        self.script.lock().unwrap().preimages.insert(hash.clone(), hex::encode(preimage));
        (bolt11, hash)
    }

    pub fn mark_paid(&self, hash: &str) {
        let mut s = self.script.lock().unwrap();
        s.invoices.get_mut(hash).expect("an invoice this backend made").1 = true;
    }

    pub fn pay_calls(&self, hash: &str) -> u32 {
        self.script.lock().unwrap().pay_calls.get(hash).copied().unwrap_or(0)
    }

    pub fn total_pay_calls(&self) -> u32 {
        self.script.lock().unwrap().pay_calls.values().sum()
    }
}

fn authorized(headers: &HeaderMap, fake: &Fake) -> bool {
    let ok = headers.get("x-api-key").is_some_and(|v| v.as_bytes() == ADMIN_KEY.as_bytes());
    if !ok {
        fake.script.lock().unwrap().wrong_keys += 1;
    }
    ok
}

pub fn hash_of(bolt11: &str) -> String {
    let parsed = coffer::payment::bolt11::ParsedInvoice::parse(bolt11, Network::Bitcoin).expect("a valid invoice");
    hex::encode(parsed.payment_hash)
}

async fn create_or_pay(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers, &fake) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"detail": "Invalid key"}))).into_response();
    }
    if body["out"] == json!(false) {
        let sats = body["amount"].as_u64().expect("an amount in sat");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let signed = fake
            .node
            .sign(Msat::new(sats * 1000), body["memo"].as_str().unwrap_or(""), 3600, Duration::from_secs(now.as_secs()))
            .unwrap();
        let (hash, preimage) = (hex::encode(signed.payment_hash), hex::encode(signed.preimage));
        fake.script.lock().unwrap().invoices.insert(hash.clone(), (preimage.clone(), false));
        let answer = json!({"payment_hash": hash, "bolt11": signed.bolt11, "preimage": preimage, "status": "pending",
            "amount": sats * 1000, "fee": 0});
        return (StatusCode::CREATED, Json(answer)).into_response();
    }
    let bolt11 = body["bolt11"].as_str().expect("a bolt11").to_owned();
    let hash = hash_of(&bolt11);
    let (mode, preimage) = {
        let mut s = fake.script.lock().unwrap();
        *s.pay_calls.entry(hash.clone()).or_default() += 1;
        (s.pay.clone(), s.preimages.get(&hash).cloned())
    };
    match mode {
        PayMode::Hang => std::future::pending().await,
        PayMode::Error => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
        PayMode::Pending => {
            (StatusCode::CREATED, Json(json!({"payment_hash": hash, "status": "pending", "fee": -10_000})))
                .into_response()
        }
        PayMode::Succeed { fee_msat } => (
            StatusCode::CREATED,
            Json(json!({"payment_hash": hash, "status": "success", "fee": -fee_msat, "preimage": preimage})),
        )
            .into_response(),
        PayMode::Fail => StatusCode::from_u16(520)
            .map(|s| (s, Json(json!({"detail": "no route to the payee", "status": "failed"}))).into_response())
            .unwrap(),
    }
}

async fn lookup(State(fake): State<Fake>, headers: HeaderMap, Path(hash): Path<String>) -> Response {
    if !authorized(&headers, &fake) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"detail": "Invalid key"}))).into_response();
    }
    let s = fake.script.lock().unwrap();
    if let Some((preimage, paid)) = s.invoices.get(&hash) {
        let answer = if *paid { json!({"paid": true, "preimage": preimage}) } else { json!({"paid": false}) };
        return Json(answer).into_response();
    }
    let preimage = s.preimages.get(&hash).cloned();
    match &s.lookup {
        Lookup::NotFound => (StatusCode::NOT_FOUND, Json(json!({"detail": "Payment does not exist."}))).into_response(),
        Lookup::Pending => Json(json!({"paid": false, "status": "pending", "details": {"fee": 0}})).into_response(),
        Lookup::Succeeded { fee_msat } => {
            Json(json!({"paid": true, "preimage": preimage, "details": {"fee": -fee_msat}})).into_response()
        }
        Lookup::Failed => Json(json!({"paid": false, "status": "failed", "details": {"fee": 0}})).into_response(),
    }
}

/// LNURL-pay (LUD-06/16) on the same server: `alice` is honest, `liar`
/// answers with an invoice for more than asked.
async fn lnurl_pay_request(Path(name): Path<String>, headers: HeaderMap) -> Json<Value> {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    Json(json!({"callback": format!("http://{host}/lnurl/{name}"), "minSendable": 1_000, "maxSendable": 1_000_000_000,
        "metadata": "[[\"text/plain\",\"alice's tips\"]]", "tag": "payRequest"}))
}

async fn lnurl_callback(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, u64>>,
) -> Json<Value> {
    let amount_msat = query["amount"] + if name == "liar" { 1_000 } else { 0 };
    let (bolt11, _) = fake.outside_invoice(amount_msat);
    Json(json!({"pr": bolt11, "routes": []}))
}

pub async fn start_gateway(url: &str) -> Gateway {
    Gateway::start_with_env(&[
        ("COFFER_LIGHTNING", "lnbits"),
        ("COFFER_LNBITS_URL", url),
        ("COFFER_LNBITS_ADMIN_KEY", ADMIN_KEY),
        ("COFFER_LIGHTNING_TIMEOUT_MS", "1000"),
        // The fake also serves Lightning addresses (LNURL) on loopback,
        // which the egress guard refuses unless the operator allows it.
        ("COFFER_EGRESS_ALLOW", "127.0.0.1"),
    ])
    .await
}

/// An agent funded by a deposit from outside (minting is for dev mode).
/// Returns the agent's key (to make clients again after a restart) and a
/// client.
pub async fn funded_agent(gw: &Gateway, fake: &Fake, amount_msat: u64) -> (String, Client) {
    let created = gw.operator().create_agent("payer").await.expect("creating an agent");
    let agent = gw.client(&created.key);
    let request = DepositRequest { amount_msat, agent_id: None, memo: None };
    let deposit = agent.create_deposit(&request).await.expect("a deposit invoice");
    fake.mark_paid(&deposit.payment_hash);
    balance_reaches(&agent, amount_msat).await;
    (created.key, agent)
}
