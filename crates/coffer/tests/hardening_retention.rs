//! Retention: expired invoices, events every consumer has read and the
//! webhook delivery log are removed once older than the operator allows;
//! the ledger, payments and the audit chain are kept whole.

mod common;

use common::{Gateway, send};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// Retention of one second, checked every second.
const RETAIN_ONE_SECOND: [(&str, &str); 5] = [
    ("COFFER_RETENTION_INVOICES_SECS", "1"),
    ("COFFER_RETENTION_EVENTS_SECS", "1"),
    ("COFFER_RETENTION_DELIVERIES_SECS", "1"),
    ("COFFER_RETENTION_INTERVAL_SECS", "1"),
    // The webhook sink below is on this machine.
    ("COFFER_EGRESS_ALLOW", "127.0.0.1"),
];
/// Generous for a loaded CI machine: the pruner runs every second.
const PRUNE_WAIT: Duration = Duration::from_secs(30);

async fn event_ids(gw: &Gateway) -> Vec<i64> {
    let r = send(gw.request(Method::GET, "/v1/events?after=0&limit=1000", Some(gw.operator_token()))).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let events = r.json["events"].as_array().expect("a page of events");
    events.iter().filter_map(|e| e["id"].as_i64()).collect()
}

/// Polls `check` until it holds, failing the test after [`PRUNE_WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PRUNE_WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {PRUNE_WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// However old, the newest event stays: no event id is handed out twice
/// (PostgreSQL numbers new events after the highest id left, so with every
/// event removed it would start again below what consumers read).
#[tokio::test]
async fn the_newest_event_stays_so_no_event_id_is_handed_out_twice() {
    let gw = Gateway::start_with_env(&RETAIN_ONE_SECOND).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    common::invoice(&payee, 1_000).await;
    let first = event_ids(&gw).await;
    let newest = *first.iter().max().expect("the agent's and the invoice's events");
    assert!(first.len() > 1, "{first:?}");
    eventually("every event but the newest is removed", || async { event_ids(&gw).await == [newest] }).await;
    common::invoice(&payee, 2_000).await;
    let now = event_ids(&gw).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[1] > newest, "a new event has an id past every one handed out before: {now:?} after {first:?}");
}

#[tokio::test]
async fn expired_invoices_and_read_events_go_and_the_ledger_stays() {
    let gw = Gateway::start_with_env(&RETAIN_ONE_SECOND).await;
    let (_, payer, payer_key) = gw.new_agent("payer", 100_000).await;
    let (_, payee, payee_key) = gw.new_agent("payee", 0).await;
    let expiring = common::invoice_expiring(&payee, 1_000, 1).await;
    let paid = common::invoice(&payee, 2_000).await;
    let payment = gw.pay_raw(&payer_key, &paid.bolt11, "kept", None).await;
    assert_eq!(payment.status, 200, "{:?}", payment.json);
    let first_events = event_ids(&gw).await;
    assert!(!first_events.is_empty());

    let path = format!("/v1/invoices/{}", expiring.payment_hash);
    eventually("the expired invoice is removed", || async {
        send(gw.request(Method::GET, &path, Some(&payee_key))).await.status == 404
    })
    .await;
    // With no consumer, every event older than a second goes.
    eventually("the old events are removed", || async {
        let now = event_ids(&gw).await;
        first_events.iter().all(|id| !now.contains(id))
    })
    .await;
    // The paid invoice, the payment and the balances are the ledger's.
    assert_eq!(payee.invoice(&paid.payment_hash).await.unwrap().status, coffer_client::InvoiceStatus::Paid);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 2_000);
    assert_eq!(gw.payment_count(&payer).await, 1);
    // Ids are never reused: a new event comes after every removed one.
    common::invoice(&payee, 3_000).await;
    let newest = *event_ids(&gw).await.iter().max().expect("the new invoice's event");
    assert!(first_events.iter().all(|id| *id < newest));
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
    let metrics = send(gw.request(Method::GET, "/metrics", None)).await.text;
    assert!(metrics.contains("coffer_retention_pruned_total{table=\"invoices\"} 1"), "{metrics}");
}

#[tokio::test]
async fn events_a_webhook_has_not_read_are_kept_until_it_has() {
    let gw = Gateway::start_with_env(&RETAIN_ONE_SECOND).await;
    let (_, alice, key) = gw.new_agent("alice", 0).await;
    // A sink that refuses everything: the webhook's cursor stays put.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let r = send(
        gw.request(Method::POST, "/v1/webhooks", Some(&key)).json(&json!({"url": url, "types": ["invoice.created"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json);
    let webhook_id = r.json["id"].as_str().unwrap().to_owned();
    // An event of alice's after the webhook's cursor, which it fails to
    // deliver.
    common::invoice(&alice, 1_000).await;
    let unread = *event_ids(&gw).await.iter().max().expect("the invoice's event");
    // The delivery log fills with failed attempts, and old attempts go.
    let deliveries = format!("/v1/webhooks/{webhook_id}/deliveries");
    eventually("a failed attempt is logged", || async {
        let r = send(gw.request(Method::GET, &deliveries, Some(&key))).await;
        r.json.as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    // Attempts older than a second go, while new ones are logged.
    eventually("the first attempt is removed from the log", || async {
        let r = send(gw.request(Method::GET, &deliveries, Some(&key))).await;
        let attempts: Vec<i64> =
            r.json.as_array().map(|d| d.iter().filter_map(|a| a["attempt"].as_i64()).collect()).unwrap_or_default();
        !attempts.is_empty() && !attempts.contains(&1)
    })
    .await;
    assert!(event_ids(&gw).await.contains(&unread), "an event the webhook has not delivered was removed");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}
