//! Live tests against a real LNbits (FakeWallet funding source) that
//! `.ci/run` starts on 127.0.0.1:5010 (`COFFER_TEST_LNBITS_URL`). coffer
//! gets a fresh LNbits wallet per test; a second wallet plays the outside
//! world, topped up by the LNbits super user. FakeWallet pays only invoices
//! of the same LNbits, so "outside" is another wallet of that LNbits.
//!
//! Skipped when LNbits is not configured, except under CI, where that fails.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use coffer_client::{Client, DepositRequest, PayOutcome, PayRequest, PaymentStatus};
use common::Gateway;
use common::lightning::{assert_audit, balance_reaches, finished, outside_invoice, pay_out, payment, wait_for};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// LNbits' service fee, in percent (see `charge_service_fee`).
const SERVICE_FEE_PERCENT: f64 = 1.0;

struct Lnbits {
    url: String,
    http: reqwest::Client,
    token: String,
}

/// A wallet of that LNbits: its id and admin key.
struct Wallet {
    id: String,
    admin_key: String,
}

impl Lnbits {
    async fn connect() -> Option<Lnbits> {
        let url = std::env::var("COFFER_TEST_LNBITS_URL").ok().filter(|v| !v.is_empty());
        let Some(url) = url else {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
            assert!(!in_ci, "COFFER_TEST_LNBITS_URL is not set, and CI is: run `bash .ci/run` (step lnbits)");
            eprintln!("\n*** SKIPPED: live LNbits tests: set COFFER_TEST_LNBITS_URL (bash .ci/run does) ***");
            return None;
        };
        coffer::tls::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
        let login = json!({
            "username": std::env::var("COFFER_TEST_LNBITS_USER").expect("COFFER_TEST_LNBITS_USER"),
            "password": std::env::var("COFFER_TEST_LNBITS_PASSWORD").expect("COFFER_TEST_LNBITS_PASSWORD"),
        });
        let answer: Value = http
            .post(format!("{url}/api/v1/auth"))
            .json(&login)
            .send()
            .await
            .expect("reaching LNbits")
            .json()
            .await
            .expect("LNbits' login answer");
        let token = answer["access_token"].as_str().expect("an access token").to_owned();
        let lnbits = Lnbits { url, http, token };
        lnbits.charge_service_fee().await;
        Some(lnbits)
    }

    /// Makes LNbits charge a service fee of 1% on every payment, internal
    /// ones included: FakeWallet routes nothing, so this is the fee coffer
    /// must account for. Every test sets the same values.
    async fn charge_service_fee(&self) {
        let fees = self.new_wallet("service-fees", 0).await;
        let settings = json!({"lnbits_service_fee": SERVICE_FEE_PERCENT, "lnbits_service_fee_wallet": fees.id,
            "lnbits_service_fee_ignore_internal": false, "lnbits_service_fee_max": 0});
        let status = self
            .http
            .put(format!("{}/admin/api/v1/settings", self.url))
            .bearer_auth(&self.token)
            .json(&settings)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "setting LNbits' service fee: {status}");
    }

    async fn new_wallet(&self, name: &str, topup_sat: u64) -> Wallet {
        let created: Value = self
            .http
            .post(format!("{}/api/v1/account", self.url))
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let wallet = Wallet {
            id: created["id"].as_str().expect("a wallet id").to_owned(),
            admin_key: created["adminkey"].as_str().expect("an admin key").to_owned(),
        };
        if topup_sat > 0 {
            let status = self
                .http
                .put(format!("{}/users/api/v1/balance", self.url))
                .bearer_auth(&self.token)
                .json(&json!({"id": wallet.id, "amount": topup_sat}))
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_success(), "topping up a wallet: {status}");
        }
        wallet
    }

    async fn balance_msat(&self, wallet: &Wallet) -> u64 {
        let w: Value = self
            .http
            .get(format!("{}/api/v1/wallet", self.url))
            .header("X-Api-Key", &wallet.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        w["balance"].as_u64().expect("a balance")
    }

    async fn pay(&self, wallet: &Wallet, bolt11: &str) -> Value {
        let answer = self
            .http
            .post(format!("{}/api/v1/payments", self.url))
            .header("X-Api-Key", &wallet.admin_key)
            .json(&json!({"out": true, "bolt11": bolt11}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "LNbits paying: {}", answer.status());
        answer.json().await.unwrap()
    }

    async fn invoice(&self, wallet: &Wallet, sat: u64) -> (String, String) {
        let made: Value = self
            .http
            .post(format!("{}/api/v1/payments", self.url))
            .header("X-Api-Key", &wallet.admin_key)
            .json(&json!({"out": false, "amount": sat, "unit": "sat", "memo": "from outside"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (made["bolt11"].as_str().unwrap().to_owned(), made["payment_hash"].as_str().unwrap().to_owned())
    }
}

/// A gateway on LNbits. Its bound on each LNbits call is generous: LNbits
/// (Python) on a loaded two-core CI machine once took over 3 s to pay.
async fn gateway(url: &str, wallet: &Wallet) -> Gateway {
    gateway_with_timeout(url, wallet, "20000").await
}

async fn gateway_with_timeout(url: &str, wallet: &Wallet, timeout_ms: &str) -> Gateway {
    Gateway::start_with_env(&[
        ("COFFER_LIGHTNING", "lnbits"),
        ("COFFER_LNBITS_URL", url),
        ("COFFER_LNBITS_ADMIN_KEY", &wallet.admin_key),
        ("COFFER_LIGHTNING_TIMEOUT_MS", timeout_ms),
    ])
    .await
}

/// A new agent whose wallet `outside` fills through a deposit invoice.
async fn deposited_agent(gw: &Gateway, lnbits: &Lnbits, outside: &Wallet, sat: u64) -> (String, Client) {
    let created = gw.operator().create_agent("agent").await.unwrap();
    let agent = gw.client(&created.key);
    let deposit = agent
        .create_deposit(&DepositRequest { amount_msat: sat * 1000, agent_id: None, memo: None })
        .await
        .expect("a deposit invoice");
    assert!(deposit.bolt11.starts_with("lnbc"), "an invoice of LNbits' node: {}", deposit.bolt11);
    let paid = lnbits.pay(outside, &deposit.bolt11).await;
    assert_eq!(paid["status"], "success", "{paid}");
    balance_reaches(&agent, sat * 1000).await;
    (created.key, agent)
}

#[tokio::test]
async fn deposit_then_withdrawal_with_fee_accounting() {
    let Some(lnbits) = Lnbits::connect().await else { return };
    let coffer_wallet = lnbits.new_wallet("coffer", 0).await;
    let outside = lnbits.new_wallet("outside", 1_000).await;
    let mut gw = gateway(&lnbits.url, &coffer_wallet).await;
    let (key, agent) = deposited_agent(&gw, &lnbits, &outside, 300).await;
    assert_eq!(lnbits.balance_msat(&coffer_wallet).await, 300_000, "the sats are at coffer's LNbits wallet");
    // Credited once: more rounds and a restart change nothing.
    gw.restart().await;
    let agent = {
        drop(agent);
        gw.client(&key)
    };
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 300_000);

    // Withdraw to an invoice of the outside wallet.
    let before = lnbits.balance_msat(&outside).await;
    let (bolt11, _) = lnbits.invoice(&outside, 120).await;
    let paid = pay_out(&agent, &bolt11, "w1").await;
    assert_eq!(paid.status, PaymentStatus::Succeeded, "{paid:?}");
    assert_eq!(paid.amount_msat, 120_000);
    assert_eq!(paid.fee_msat, 1_200, "LNbits' service fee of 1%");
    let wallet = agent.wallet().await.unwrap();
    // The wallet pays the amount and exactly the fee LNbits reported; the
    // rest of the reserve (the fee limit) is released.
    assert_eq!(wallet.balance_msat, 300_000 - 120_000 - paid.fee_msat);
    assert_eq!(wallet.pending_msat, 0);
    assert_eq!(lnbits.balance_msat(&outside).await, before + 120_000, "the outside wallet received it");
    assert_eq!(lnbits.balance_msat(&coffer_wallet).await, 300_000 - 120_000 - paid.fee_msat);
    assert!(paid.preimage.is_some());
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_payment_lnbits_cannot_make_fails_and_is_refunded() {
    let Some(lnbits) = Lnbits::connect().await else { return };
    let coffer_wallet = lnbits.new_wallet("coffer", 0).await;
    let outside = lnbits.new_wallet("outside", 1_000).await;
    let gw = gateway(&lnbits.url, &coffer_wallet).await;
    let (_, agent) = deposited_agent(&gw, &lnbits, &outside, 200).await;
    // An invoice of a node FakeWallet cannot reach.
    let (bolt11, _, _) = outside_invoice(50_000);
    let failed = pay_out(&agent, &bolt11, "f1").await;
    let failed = if failed.status == PaymentStatus::Pending { finished(&agent, &failed.id).await } else { failed };
    assert_eq!(failed.status, PaymentStatus::Failed, "{failed:?}");
    assert!(failed.detail.is_some(), "the failure says why");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000, 0), "refunded in full");
    assert_eq!(lnbits.balance_msat(&coffer_wallet).await, 200_000);
    assert_audit(&gw).await;
}

/// Forwards every call to LNbits, but while `swallow` is on, swallows the
/// answer to payments and every lookup of one: LNbits pays, coffer never
/// hears it (as if the network broke just then).
#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    swallow: Arc<AtomicBool>,
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let paying = parts.method == axum::http::Method::POST
        && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["out"] == json!(true));
    let looking_up = parts.method == axum::http::Method::GET && parts.uri.path().starts_with("/api/v1/payments/");
    if looking_up && proxy.swallow.load(Ordering::SeqCst) {
        // coffer's resolver must not learn the outcome before the crash.
        return std::future::pending().await;
    }
    let url = format!("{}{}", proxy.upstream, parts.uri.path_and_query().map_or("", |p| p.as_str()));
    let mut upstream = proxy.http.request(parts.method.clone(), url).body(body.to_vec());
    for name in ["x-api-key", "content-type"] {
        if let Some(value) = parts.headers.get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let answer = upstream.send().await.unwrap();
    if paying && proxy.swallow.load(Ordering::SeqCst) {
        return std::future::pending().await;
    }
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap();
    (axum::http::StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], Body::from(bytes))
        .into_response()
}

#[tokio::test]
async fn a_restart_while_pending_finishes_the_payment_lnbits_made() {
    let Some(lnbits) = Lnbits::connect().await else { return };
    let coffer_wallet = lnbits.new_wallet("coffer", 0).await;
    let outside = lnbits.new_wallet("outside", 1_000).await;
    let proxy =
        Proxy { upstream: lnbits.url.clone(), http: reqwest::Client::new(), swallow: Arc::new(AtomicBool::new(false)) };
    let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A short bound: the proxy swallows LNbits' answer, and the payment
    // must be left pending when the call times out.
    let mut gw = gateway_with_timeout(&proxy_url, &coffer_wallet, "3000").await;
    let (key, agent) = deposited_agent(&gw, &lnbits, &outside, 300).await;
    proxy.swallow.store(true, Ordering::SeqCst);
    let (bolt11, _) = lnbits.invoice(&outside, 100).await;
    let pending = pay_out(&agent, &bolt11, "p1").await;
    assert_eq!(pending.status, PaymentStatus::Pending, "{pending:?}");
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 300_000, "nothing posted before the backend answers");
    gw.kill9().await;
    assert_audit(&gw).await;
    // LNbits did pay it, and its 1% fee: in its own time, as it may still be
    // paying when coffer's call times out.
    wait_for("LNbits to pay it", || async { (lnbits.balance_msat(&coffer_wallet).await == 199_000).then_some(()) })
        .await;

    proxy.swallow.store(false, Ordering::SeqCst);
    gw.restart().await;
    let agent = gw.client(&key);
    let done = wait_for("the payment to be resolved", || async {
        let p = payment(&agent, &pending.id).await;
        (p.status != PaymentStatus::Pending).then_some(p)
    })
    .await;
    assert_eq!(done.status, PaymentStatus::Succeeded, "{done:?}");
    assert_eq!(done.fee_msat, 1_000, "the fee LNbits reports on lookup");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000 - done.fee_msat, 0));
    assert_eq!(lnbits.balance_msat(&coffer_wallet).await, 200_000 - done.fee_msat);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_held_withdrawal_is_sent_once_approved_at_lnbits_fee() {
    let Some(lnbits) = Lnbits::connect().await else { return };
    let coffer_wallet = lnbits.new_wallet("coffer", 0).await;
    let outside = lnbits.new_wallet("outside", 1_000).await;
    let gw = gateway(&lnbits.url, &coffer_wallet).await;
    let (_, agent) = deposited_agent(&gw, &lnbits, &outside, 300).await;
    let agent_id = agent.wallet().await.unwrap().agent_id;
    gw.operator().set_policy(&agent_id, &json!({"approval_above_msat": 50_000})).await.unwrap();
    let before = lnbits.balance_msat(&outside).await;
    let (bolt11, _) = lnbits.invoice(&outside, 120).await;
    let request = PayRequest { bolt11, purpose: Some("withdrawal".into()), amount_msat: None, ..Default::default() };
    let held = match agent.pay(&request, "h1").await {
        Ok(PayOutcome::Held(held)) => held,
        other => panic!("expected a hold, got {other:?}"),
    };
    // Amount plus the fee limit (1%, at least 10 sat) wait, reserved.
    assert_eq!((held.amount_msat, held.fee_limit_msat), (120_000, 10_000));
    assert_eq!(agent.wallet().await.unwrap().pending_msat, 130_000);
    assert_eq!(lnbits.balance_msat(&outside).await, before, "nothing sent while held");

    let paid = gw.operator().approve(&held.id).await.unwrap().payment.expect("the payment made");
    assert_eq!((paid.status, paid.fee_msat), (PaymentStatus::Succeeded, 1_200), "LNbits' service fee of 1%");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (300_000 - 121_200, 0));
    assert_eq!(lnbits.balance_msat(&outside).await, before + 120_000, "received once");
    // A retry of the held request answers with that payment.
    match agent.pay(&request, "h1").await {
        Ok(PayOutcome::Done(p)) => assert_eq!(p.id, paid.id),
        other => panic!("expected the payment, got {other:?}"),
    }
    assert_eq!(lnbits.balance_msat(&outside).await, before + 120_000);
    assert_audit(&gw).await;
}
