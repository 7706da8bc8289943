//! Warnings before limits: a payment (or a hold) that carries a budget's
//! usage across 80% or 95% of its limit writes one `budget.warning`, once
//! per window and threshold, for every level of the payer's chain; it
//! reaches the event stream (SSE) and webhooks like every event.

mod common;

use axum::body::Bytes;
use common::{Gateway, SseReader, invoice, send};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: u64 = 10_000;

fn hourly() -> Value {
    json!({"budgets": [{"limit_msat": LIMIT, "window": "1h", "kind": "rolling"}]})
}

/// The `budget.warning` events of `agent_id`, as `(threshold, budget)`.
async fn warnings(gw: &Gateway, agent_id: &str) -> Vec<(u64, String)> {
    gw.events("budget.warning")
        .await
        .into_iter()
        .filter(|(owner, _)| owner.as_deref() == Some(agent_id))
        .map(|(_, d)| (d["threshold_percent"].as_u64().unwrap_or(0), d["budget"].as_str().unwrap_or("").to_owned()))
        .collect()
}

async fn pay(gw: &Gateway, key: &str, payee: &coffer_client::Client, amount_msat: u64) -> common::Reply {
    let bolt11 = invoice(payee, amount_msat).await.bolt11;
    gw.pay_raw(key, &bolt11, "warnings", None).await
}

/// A webhook receiver on loopback that keeps every body it gets.
async fn receiver() -> (Arc<Mutex<Vec<Value>>>, String) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    state.lock().unwrap().push(value);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the receiver runs") });
    (seen, url)
}

#[tokio::test]
async fn each_threshold_fires_once_per_window_on_sse_and_webhooks() {
    // The receiver listens on loopback, which the egress guard refuses
    // unless allowed.
    let gw = Gateway::start_with_env(&[("COFFER_EGRESS_ALLOW", "127.0.0.1")]).await;
    let (id, _, key) = gw.new_agent("payer", 2 * LIMIT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    gw.operator().set_policy(&id, &hourly()).await.unwrap();
    let (hooked, url) = receiver().await;
    let created = send(
        gw.request(Method::POST, "/v1/webhooks", Some(&key)).json(&json!({"url": url, "types": ["budget.warning"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let mut stream = SseReader::open(&gw, &key, "/v1/events/stream", None).await.expect("the stream");

    // 70%: nothing; 80%: one warning; 90%: nothing; 96%: the second.
    for amount in [7_000, 1_000, 1_000, 600] {
        assert_eq!(pay(&gw, &key, &payee, amount).await.status, 200);
    }
    assert_eq!(warnings(&gw, &id).await, vec![(80, "1h".to_owned()), (95, "1h".to_owned())]);
    let (_, first) = gw.events("budget.warning").await.remove(0);
    assert_eq!(first["agent_id"], id.as_str());
    assert_eq!(first["payer_agent_id"], id.as_str());
    assert_eq!((first["kind"].as_str(), first["limit_msat"].as_u64()), (Some("rolling"), Some(LIMIT)));
    assert_eq!(first["spent_msat"].as_u64(), Some(8_000));
    assert!(first["window_start_ms"].as_i64().is_some(), "{first}");

    // On the stream, among the payments' own events.
    let mut streamed = Vec::new();
    while streamed.len() < 2 {
        let (kind, event) = stream.next().await;
        if kind == "budget.warning" {
            streamed.push(event["data"]["threshold_percent"].as_u64());
        }
    }
    assert_eq!(streamed, vec![Some(80), Some(95)]);

    // And at the webhook.
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let got: Vec<Value> = hooked.lock().unwrap().clone();
            if got.len() >= 2 {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two webhook deliveries");
    let thresholds: Vec<Option<u64>> = delivered.iter().map(|e| e["data"]["threshold_percent"].as_u64()).collect();
    assert_eq!(thresholds, vec![Some(80), Some(95)], "{delivered:?}");
    assert!(delivered.iter().all(|e| e["type"] == "budget.warning"), "{delivered:?}");

    // Past the limit nothing more fires; the payment is refused as ever.
    common::assert_denied(&pay(&gw, &key, &payee, 1_000).await, "budget-exceeded");
    assert_eq!(warnings(&gw, &id).await.len(), 2);
}

#[tokio::test]
async fn a_payment_past_both_thresholds_fires_both_and_a_released_hold_does_not_fire_again() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (_, payee, _) = gw.new_agent("payee", 0).await;

    let (id, _, key) = gw.new_agent("jumper", 2 * LIMIT).await;
    op.set_policy(&id, &hourly()).await.unwrap();
    assert_eq!(pay(&gw, &key, &payee, 9_900).await.status, 200);
    assert_eq!(warnings(&gw, &id).await, vec![(80, "1h".to_owned()), (95, "1h".to_owned())]);

    // A hold reserves its spend, so it warns; denied, its spend comes back;
    // held again in the same window, it does not warn twice.
    let (id, _, key) = gw.new_agent("holder", 2 * LIMIT).await;
    let mut policy = hourly();
    policy["approval_above_msat"] = json!(1_000);
    op.set_policy(&id, &policy).await.unwrap();
    let held = pay(&gw, &key, &payee, 8_500).await;
    assert_eq!(held.status, 202, "{held:?}");
    assert_eq!(warnings(&gw, &id).await, vec![(80, "1h".to_owned())]);
    op.deny(held.json["id"].as_str().expect("an approval id")).await.unwrap();
    let again = pay(&gw, &key, &payee, 8_500).await;
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(warnings(&gw, &id).await, vec![(80, "1h".to_owned())], "the same threshold, the same window");
}

#[tokio::test]
async fn a_sub_agents_payment_warns_its_parent() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (parent_id, _, parent_client) = gw.new_parent("parent", 2 * LIMIT).await;
    op.set_policy(&parent_id, &json!({"lifetime_msat": LIMIT})).await.unwrap();
    let child = parent_client.create_agent("child").await.unwrap();
    parent_client.fund_agent(&child.id, LIMIT).await.unwrap();
    let (_, payee, _) = gw.new_agent("payee", 0).await;

    assert_eq!(pay(&gw, &child.key, &payee, 8_000).await.status, 200);
    let fired = gw.events("budget.warning").await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (owner, data) = &fired[0];
    assert_eq!(owner.as_deref(), Some(parent_id.as_str()));
    assert_eq!((data["budget"].as_str(), data["kind"].as_str()), (Some("lifetime"), Some("lifetime")));
    assert_eq!(data["payer_agent_id"], child.id.as_str());
    assert_eq!(data["threshold_percent"].as_u64(), Some(80));
}

#[tokio::test]
async fn a_calendar_window_warns_again_in_its_next_period() {
    let gw = Gateway::start_with_dev_clock().await;
    let (id, _, key) = gw.new_agent("daily", 2 * LIMIT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let day = json!({"budgets": [{"limit_msat": LIMIT, "window": "day", "kind": "calendar"}]});
    gw.operator().set_policy(&id, &day).await.unwrap();
    assert_eq!(pay(&gw, &key, &payee, 8_000).await.status, 200);
    assert_eq!(pay(&gw, &key, &payee, 100).await.status, 200);
    assert_eq!(warnings(&gw, &id).await, vec![(80, "day".to_owned())]);
    gw.advance_clock(24 * 3_600 * 1_000).await;
    assert_eq!(pay(&gw, &key, &payee, 8_000).await.status, 200);
    assert_eq!(warnings(&gw, &id).await, vec![(80, "day".to_owned()), (80, "day".to_owned())]);
    let fired = gw.events("budget.warning").await;
    let (first, second) = (&fired[0].1, &fired[1].1);
    assert!(second["window_start_ms"].as_i64() > first["window_start_ms"].as_i64(), "{first} {second}");
}

#[tokio::test]
async fn the_thresholds_are_configurable() {
    let gw = Gateway::start_with_env(&[("COFFER_BUDGET_WARNING_PERCENT", "50")]).await;
    let (id, _, key) = gw.new_agent("payer", 2 * LIMIT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    gw.operator().set_policy(&id, &hourly()).await.unwrap();
    assert_eq!(pay(&gw, &key, &payee, 9_900).await.status, 200);
    assert_eq!(warnings(&gw, &id).await, vec![(50, "1h".to_owned())]);
}
