//! Budgets in the operator's currency, end to end: a limit in dollars
//! holds at a fixed price to the msat; a price endpoint on 127.0.0.1
//! (polled through the egress guard) that stops answering leaves a stale
//! price, which refuses payments with `fiat-rate-unavailable` and debits
//! nothing; a new price applies to the next payment.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Gateway, assert_denied, first_window, invoice};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test waits for the poller to bring a new price, at most (it
/// polls every second): a bound on a hang, not a measure of speed.
const PRICE_WAIT_LIMIT: Duration = Duration::from_secs(30);
const PRICE_POINTER: &str = "/bitcoin/usd";
/// The max age of a polled price in these tests, in seconds.
const MAX_AGE_S: i64 = 30;

fn five_dollars_an_hour() -> Value {
    json!({"budgets": [{"limit": {"amount": "5.00", "currency": "USD"}, "window": "1h", "kind": "rolling"}]})
}

/// A price endpoint: answers `{"bitcoin": {"usd": PRICE}}`, or 503 while
/// `price` is `None`.
struct PriceServer {
    price: Arc<Mutex<Option<String>>>,
    url: String,
}

impl PriceServer {
    async fn start(price: &str) -> PriceServer {
        let shared = Arc::new(Mutex::new(Some(price.to_owned())));
        let app = Router::new().route("/price", get(answer)).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the price server");
        let port = listener.local_addr().expect("its address").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        PriceServer { price: shared, url: format!("http://127.0.0.1:{port}/price") }
    }

    fn set(&self, price: Option<&str>) {
        *self.price.lock().expect("the price") = price.map(str::to_owned);
    }

    /// A dev-clock gateway polling this endpoint every second.
    async fn gateway(&self) -> Gateway {
        Gateway::start_with_env(&[
            common::DEV_CLOCK,
            ("COFFER_EGRESS_ALLOW", "127.0.0.1"),
            ("COFFER_FIAT_RATE_URL", &self.url),
            ("COFFER_FIAT_RATE_POINTER", PRICE_POINTER),
            ("COFFER_FIAT_RATE_CURRENCY", "USD"),
            ("COFFER_FIAT_RATE_INTERVAL_S", "1"),
            ("COFFER_FIAT_RATE_MAX_AGE_S", &MAX_AGE_S.to_string()),
        ])
        .await
    }
}

async fn answer(State(price): State<Arc<Mutex<Option<String>>>>) -> Result<axum::Json<Value>, StatusCode> {
    let price = price.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?.clone();
    price.map(|p| axum::Json(json!({"bitcoin": {"usd": p}}))).ok_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Waits until the agent's budget report shows its first window's limit at
/// `limit_msat`: the poller has brought the price that makes it so.
async fn wait_for_limit(gw: &Gateway, agent_id: &str, limit_msat: u64) -> Value {
    let op = gw.operator();
    let deadline = tokio::time::Instant::now() + PRICE_WAIT_LIMIT;
    loop {
        let report = op.budget(agent_id).await.expect("the budget report");
        if report["windows"][0]["limit_msat"].as_u64() == Some(limit_msat) && report.get("fiat_error").is_none() {
            return report;
        }
        assert!(tokio::time::Instant::now() < deadline, "the price never arrived: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_budget_in_dollars_allows_exactly_its_msat_at_the_fixed_price_and_no_more() {
    // One bitcoin is 95,000 USD: 5.00 USD is 5 * 10^11 / 95,000 msat,
    // 5,263,157.89..., rounded down.
    const LIMIT_MSAT: u64 = 5_263_157;
    let gw = Gateway::start_with_env(&[("COFFER_FIAT_RATES", "USD:95000.00")]).await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", 10_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let stored = op.set_policy(&payer_id, &five_dollars_an_hour()).await.expect("setting the policy");
    assert_eq!(stored["budgets"][0]["limit"], json!({"amount": "5.00", "currency": "USD"}), "{stored}");
    assert!(stored["budgets"][0].get("limit_msat").is_none(), "the policy keeps its own form: {stored}");

    let report = op.budget(&payer_id).await.unwrap();
    assert_eq!(report["windows"][0]["limit_msat"].as_u64(), Some(LIMIT_MSAT), "{report}");
    assert_eq!(report["windows"][0]["limit"], json!({"amount": "5.00", "currency": "USD"}), "{report}");
    assert_eq!(report["fiat_rates"][0]["btc_price"], "95000.00", "{report}");

    let first = gw.pay_raw(&key, &invoice(&payee, 5_000_000).await.bolt11, "most", None).await;
    assert_eq!(first.status, 200, "{first:?}");
    let rest = gw.pay_raw(&key, &invoice(&payee, LIMIT_MSAT - 5_000_000).await.bolt11, "rest", None).await;
    assert_eq!(rest.status, 200, "exactly the converted limit is allowed: {rest:?}");
    let over = gw.pay_raw(&key, &invoice(&payee, 1).await.bolt11, "one more", None).await;
    assert_eq!(assert_denied(&over, "budget-exceeded")["remaining_msat"].as_u64(), Some(0), "{over:?}");

    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (LIMIT_MSAT, 0));
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000_000 - LIMIT_MSAT);
    let bad = gw
        .put_policy_raw(
            gw.operator_token(),
            &payer_id,
            &json!({"budgets": [{"limit_msat": 5, "limit": {"amount": "5", "currency": "USD"}, "window": "1h", "kind": "rolling"}]}),
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.json.to_string().contains("budgets[0].limit"), "{bad:?}");
    let (ok, audit) = gw.audit().await;
    assert!(ok, "audit failed: {audit}");
}

#[tokio::test]
async fn without_a_price_a_dollar_limit_refuses_and_a_plain_policy_does_not_care() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", 10_000).await;
    let (plain_id, _, plain_key) = gw.new_agent("plain", 10_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    op.set_policy(&payer_id, &five_dollars_an_hour()).await.unwrap();
    op.set_policy(&plain_id, &json!({"max_payment_msat": 5_000})).await.unwrap();

    let refused = gw.pay_raw(&key, &invoice(&payee, 1).await.bolt11, "no price", None).await;
    let problem = assert_denied(&refused, "fiat-rate-unavailable");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("USD")), "{refused:?}");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000, "nothing is debited");
    let report = op.budget(&payer_id).await.unwrap();
    assert!(report["fiat_error"].as_str().is_some(), "{report}");
    assert_eq!(first_window(&report), (0, 0), "{report}");

    let plain = gw.pay_raw(&plain_key, &invoice(&payee, 1_000).await.bolt11, "msat only", None).await;
    assert_eq!(plain.status, 200, "a policy in msat needs no price: {plain:?}");
    let denied = gw.audit_all(&format!("agent_id={payer_id}&action=payment.denied")).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].record["rule"], "fiat-rate-unavailable", "{denied:?}");
}

#[tokio::test]
async fn a_stale_price_refuses_with_its_own_code_and_debits_nothing() {
    let prices = PriceServer::start("100000").await;
    let gw = prices.gateway().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", 10_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    op.set_policy(&payer_id, &five_dollars_an_hour()).await.unwrap();
    // One bitcoin is 100,000 USD: 5.00 USD is 5,000,000 msat.
    wait_for_limit(&gw, &payer_id, 5_000_000).await;
    let paid = gw.pay_raw(&key, &invoice(&payee, 1_000).await.bolt11, "fresh", None).await;
    assert_eq!(paid.status, 200, "{paid:?}");

    prices.set(None);
    gw.advance_clock((MAX_AGE_S + 1) * 1_000).await;
    let stale = gw.pay_raw(&key, &invoice(&payee, 1_000).await.bolt11, "stale", None).await;
    let problem = assert_denied(&stale, "fiat-rate-unavailable");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("maximum age")), "{stale:?}");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000_000 - 1_000, "nothing more is debited");
    let report = op.budget(&payer_id).await.unwrap();
    assert!(report["fiat_error"].as_str().is_some_and(|e| e.contains("maximum age")), "{report}");
    let denied = gw.audit_all(&format!("agent_id={payer_id}&action=payment.denied")).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].record["rule"], "fiat-rate-unavailable", "{denied:?}");

    // A fresh price lifts the refusal.
    prices.set(Some("100000"));
    wait_for_limit(&gw, &payer_id, 5_000_000).await;
    let again = gw.pay_raw(&key, &invoice(&payee, 1_000).await.bolt11, "fresh again", None).await;
    assert_eq!(again.status, 200, "{again:?}");
    let (ok, audit) = gw.audit().await;
    assert!(ok, "audit failed: {audit}");
}

#[tokio::test]
async fn a_new_price_applies_to_the_next_payment() {
    let prices = PriceServer::start("100000").await;
    let gw = prices.gateway().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", 20_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    op.set_policy(&payer_id, &five_dollars_an_hour()).await.unwrap();
    wait_for_limit(&gw, &payer_id, 5_000_000).await;
    let paid = gw.pay_raw(&key, &invoice(&payee, 4_000_000).await.bolt11, "at 100k", None).await;
    assert_eq!(paid.status, 200, "{paid:?}");

    // Bitcoin doubles: 5.00 USD is now 2,500,000 msat, less than spent.
    prices.set(Some("200000"));
    let report = wait_for_limit(&gw, &payer_id, 2_500_000).await;
    assert_eq!(first_window(&report), (4_000_000, 0), "{report}");
    let over = gw.pay_raw(&key, &invoice(&payee, 1).await.bolt11, "at 200k", None).await;
    assert_denied(&over, "budget-exceeded");

    // Bitcoin falls to 50,000 USD: 5.00 USD is 10,000,000 msat.
    prices.set(Some("50000"));
    wait_for_limit(&gw, &payer_id, 10_000_000).await;
    let more = gw.pay_raw(&key, &invoice(&payee, 6_000_000).await.bolt11, "at 50k", None).await;
    assert_eq!(more.status, 200, "{more:?}");
    let past = gw.pay_raw(&key, &invoice(&payee, 1).await.bolt11, "past 50k", None).await;
    assert_denied(&past, "budget-exceeded");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000_000);
    let (ok, audit) = gw.audit().await;
    assert!(ok, "audit failed: {audit}");
}

#[tokio::test]
async fn a_session_is_judged_by_the_largest_payment_in_dollars_too() {
    // One bitcoin is 100,000 USD: 0.50 USD is 500,000 msat.
    let gw = Gateway::start_with_env(&[("COFFER_FIAT_RATES", "USD:100000")]).await;
    let op = gw.operator();
    let (payer_id, _, key) = gw.new_agent("payer", 10_000_000).await;
    let (payee_id, _, _) = gw.new_agent("payee", 0).await;
    op.set_policy(&payer_id, &json!({"max_payment": {"amount": "0.50", "currency": "USD"}})).await.unwrap();
    let open = |max_msat: u64| {
        let body = json!({"payee": payee_id, "max_msat": max_msat, "expires_in_secs": 60});
        gw.request(reqwest::Method::POST, "/v1/sessions", Some(&key)).json(&body)
    };
    let over = common::send(open(500_001)).await;
    assert_denied(&over, "amount-too-large");
    let fits = common::send(open(500_000)).await;
    assert!(fits.status == 200 || fits.status == 201, "{fits:?}");
}

/// A price outage is the operator's source failing, not the agent: its
/// refusals do not count toward a breaker on denials, which other denials
/// do trip.
#[tokio::test]
async fn refusals_for_want_of_a_price_do_not_trip_the_breaker() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", 10_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let mut policy = five_dollars_an_hour();
    policy["breaker"] = json!({"max_denials": 2, "window": "1h"});
    policy["max_payment_msat"] = json!(5_000);
    op.set_policy(&payer_id, &policy).await.unwrap();
    for _ in 0..3 {
        let refused = gw.pay_raw(&key, &invoice(&payee, 1).await.bolt11, "no price", None).await;
        assert_denied(&refused, "fiat-rate-unavailable");
    }
    assert!(!op.agent(&payer_id).await.unwrap().frozen, "three refusals for want of a price freeze nothing");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000);

    // The same breaker trips on the agent's own denials (over its cap):
    // the check above can fail.
    op.set_policy(&payer_id, &json!({"breaker": {"max_denials": 2, "window": "1h"}, "max_payment_msat": 5}))
        .await
        .unwrap();
    for _ in 0..3 {
        let refused = gw.pay_raw(&key, &invoice(&payee, 10).await.bolt11, "too much", None).await;
        assert!(refused.status >= 400, "{refused:?}");
    }
    assert!(op.agent(&payer_id).await.unwrap().frozen, "three denials of its own (more than 2) trip it");
}
