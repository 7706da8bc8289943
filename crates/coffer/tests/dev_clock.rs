//! The dev clock: a gateway started with `COFFER_DEV_CLOCK=1` in dev mode
//! lets its operator move its clock forward (`POST /v1/dev/clock`), so that
//! tests of expiry need not sleep. Anywhere else the clock cannot be moved:
//! a gateway without it has no such route, one with a Lightning backend
//! refuses to start with it, and no one but the operator moves it, never
//! backwards.

mod common;

use common::{DEV_CLOCK, Gateway, send};
use reqwest::Method;
use serde_json::json;

const PATH: &str = "/v1/dev/clock";

async fn advance_raw(gw: &Gateway, secret: &str, body: &serde_json::Value) -> common::Reply {
    send(gw.request(Method::POST, PATH, Some(secret)).json(body)).await
}

#[tokio::test]
async fn a_gateway_without_the_dev_clock_refuses_to_move_its_clock() {
    let gw = Gateway::start().await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice_expiring(&payee, 1_000, 60).await;
    for ms in [61_000, 3_600_000] {
        advance_raw(&gw, gw.operator_token(), &json!({"advance_ms": ms})).await.assert_problem(404, "not-found");
    }
    // The invoice of a minute is still open: time did not move.
    let read = payee.invoice(&invoice.payment_hash).await.expect("the invoice");
    assert_eq!(read.status, coffer_client::InvoiceStatus::Open);
    let spec = send(gw.request(Method::GET, "/openapi.json", None)).await;
    assert!(spec.json["paths"].get(PATH).is_none(), "the dev clock is not part of the API");
}

#[tokio::test]
async fn a_gateway_with_a_lightning_backend_refuses_to_start_with_the_dev_clock() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data = dir.path().join("data");
    let env = [
        ("COFFER_OPERATOR_TOKEN", "cop_test_dev_clock_0123456789abcdef0123"),
        DEV_CLOCK,
        ("COFFER_LIGHTNING", "lnbits"),
        ("COFFER_LNBITS_URL", "http://127.0.0.1:9"),
        ("COFFER_LNBITS_ADMIN_KEY", "an-admin-key"),
    ];
    let stderr = common::serve_refused(&data, &[], &env).await;
    assert!(stderr.contains("COFFER_DEV_CLOCK") && stderr.contains("dev mode"), "{stderr}");
    assert!(!data.exists(), "the refused start created its data folder");
}

#[tokio::test]
async fn only_the_operator_moves_the_dev_clock_and_only_forward() {
    let gw = Gateway::start_with_dev_clock().await;
    let (_, payee, key) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice_expiring(&payee, 1_000, 60).await;

    advance_raw(&gw, &key, &json!({"advance_ms": 61_000})).await.assert_problem(403, "forbidden");
    for refused in [json!({"advance_ms": 0}), json!({"advance_ms": -61_000}), json!({"advance_ms": i64::MAX})] {
        advance_raw(&gw, gw.operator_token(), &refused).await.assert_problem(400, "invalid-field");
    }
    advance_raw(&gw, gw.operator_token(), &json!({"back_ms": 1})).await.assert_problem(400, "malformed-request");
    let read = payee.invoice(&invoice.payment_hash).await.expect("the invoice");
    assert_eq!(read.status, coffer_client::InvoiceStatus::Open, "a refused move moved the clock");

    let before = chrono::Utc::now().timestamp_millis();
    let now = gw.advance_clock(61_000).await;
    assert!(now >= before + 61_000, "{now} is not a minute after {before}");
    let read = payee.invoice(&invoice.payment_hash).await.expect("the invoice");
    assert_eq!(read.status, coffer_client::InvoiceStatus::Expired);
    let swept = gw.events("invoice.expired").await;
    assert_eq!(swept.len(), 1, "the sweep ran at the new time before the clock answered: {swept:?}");
}
