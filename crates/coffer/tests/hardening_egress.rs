//! Issue 17, item 2: the gateway reaches no loopback, private or link-local
//! destination on a caller's behalf (webhooks, `fetch_paid` over `/mcp`),
//! neither by address, nor by a name that resolves there, nor by a
//! redirect; and a refused webhook's delivery log tells nothing of the
//! destination.
//!
//! Every address below is either a sink of this test on 127.0.0.1 or one
//! the guard refuses before any connection; every gateway also runs with
//! `COFFER_EGRESS_DENY_PUBLIC=true`, so that nothing outside this machine
//! could be contacted even if the guard misjudged an address.

mod common;

use common::{Gateway, send};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const DENY_PUBLIC: (&str, &str) = ("COFFER_EGRESS_DENY_PUBLIC", "true");

/// An HTTP service on 127.0.0.1 counting its hits: `/redirect` answers 302
/// to `redirect_to`, anything else `fine`.
struct Sink {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Sink {
    async fn start(redirect_to: Option<String>) -> Sink {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (counter, redirect_to) = (Arc::clone(&counter), redirect_to.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                match redirect_to.filter(|_| uri.path() == "/redirect") {
                    Some(location) => axum::http::Response::builder()
                        .status(302)
                        .header("location", location)
                        .body(axum::body::Body::empty())
                        .expect("a redirect"),
                    None => axum::http::Response::new(axum::body::Body::from("fine")),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the sink");
        let port = listener.local_addr().expect("the sink's address").port();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the sink") });
        Sink { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn create_webhook(gw: &Gateway, secret: &str, url: &str) -> common::Reply {
    send(gw.request(Method::POST, "/v1/webhooks", Some(secret)).json(&json!({"url": url}))).await
}

#[tokio::test]
async fn webhooks_to_local_and_private_addresses_are_refused_at_creation() {
    let gw = Gateway::start_with_env(&[DENY_PUBLIC]).await;
    let (_, _, key) = gw.new_agent("hooks", 0).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://LOCALHOST./hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://2130706433:9/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/hook",
        "http://0.0.0.0:9/hook",
    ] {
        for secret in [key.as_str(), gw.operator_token()] {
            let reply = create_webhook(&gw, secret, url).await;
            let problem = reply.assert_problem(400, "invalid-field");
            assert_eq!(problem["field"], "url", "{url}: {problem}");
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("refused by the egress guard"), "{url}: {detail}");
        }
    }
    let listed = send(gw.request(Method::GET, "/v1/webhooks", Some(gw.operator_token()))).await;
    assert_eq!(listed.json.as_array().map(Vec::len), Some(0), "nothing was created: {listed:?}");
}

/// `localhost` is allowed when the webhook is made, then the operator
/// narrows `COFFER_EGRESS_ALLOW` and restarts: the name still resolves to
/// loopback, and the resolver refuses it at each delivery.
#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_delivery_and_logged_without_a_status() {
    let sink = Sink::start(None).await;
    let args = ["--webhook-backoff-ms", "20", "--webhook-pause-after", "2"];
    let mut gw = Gateway::start_with_args_env(&args, &[("COFFER_EGRESS_ALLOW", "localhost"), DENY_PUBLIC]).await;
    let (agent_id, _, key) = gw.new_agent("resolved", 0).await;
    let url = format!("http://localhost:{}/hook", sink.port);
    let created = create_webhook(&gw, &key, &url).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json["id"].as_str().expect("a webhook id").to_owned();

    gw.set_env("COFFER_EGRESS_ALLOW", "127.0.0.2:1");
    gw.restart().await;
    let op = gw.operator();
    op.mint(1_000).await.expect("minting");
    op.fund_agent(&agent_id, 1_000).await.expect("an event for the webhook");

    let path = format!("/v1/webhooks/{id}/deliveries");
    let log = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let reply = send(gw.request(Method::GET, &path, Some(gw.operator_token()))).await;
            let entries = reply.json.as_array().cloned().unwrap_or_default();
            if entries.len() >= 2 {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("two attempts logged within 30 s");
    for entry in &log {
        assert_eq!(entry["status"], Value::Null, "no status of the target: {entry}");
        assert_eq!(entry["delivered"], false, "{entry}");
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("destination refused by the egress guard"), "{entry}");
    }
    assert_eq!(sink.hits(), 0, "nothing reached the sink");
}

/// One JSON-RPC `tools/call` of `fetch_paid` over `/mcp`: whether the
/// answer is an error, and its text.
async fn fetch_paid(gw: &Gateway, key: &str, url: &str) -> (bool, String) {
    let params = json!({"name": "fetch_paid", "arguments": {"url": url}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    let request = gw
        .request(Method::POST, "/mcp", Some(key))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    let reply = send(request).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.json["result"];
    (result["isError"].as_bool().unwrap_or(false), result["content"].to_string())
}

#[tokio::test]
async fn fetch_paid_over_mcp_reaches_no_local_destination_and_needs_a_spend_key() {
    let forbidden = Sink::start(None).await;
    let allowed = Sink::start(Some(format!("http://127.0.0.1:{}/secret", forbidden.port))).await;
    let allow = format!("127.0.0.1:{}", allowed.port);
    let gw = Gateway::start_with_env(&[("COFFER_EGRESS_ALLOW", &allow), DENY_PUBLIC]).await;
    let (agent_id, _, spend_key) = gw.new_agent("fetcher", 10_000).await;

    let (is_error, text) = fetch_paid(&gw, &spend_key, &format!("http://127.0.0.1:{}/ok", allowed.port)).await;
    assert!(!is_error && text.contains("fine"), "an allowed destination is fetched: {text}");
    assert_eq!(allowed.hits(), 1);

    for url in [
        format!("http://127.0.0.1:{}/redirect", allowed.port),
        format!("http://127.0.0.1:{}/secret", forbidden.port),
        format!("http://localhost:{}/secret", forbidden.port),
        format!("http://[::ffff:127.0.0.1]:{}/secret", forbidden.port),
        format!("http://[::1]:{}/secret", forbidden.port),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let (is_error, text) = fetch_paid(&gw, &spend_key, &url).await;
        assert!(is_error && text.contains("refused by the egress guard"), "{url}: {text}");
    }
    assert_eq!(forbidden.hits(), 0, "no redirect or address reached the forbidden sink");
    assert_eq!(allowed.hits(), 2, "the redirect was answered, not followed");

    let read_key = gw.operator().create_key(&agent_id, coffer_client::Scope::Read).await.expect("a read key").key;
    let (is_error, text) = fetch_paid(&gw, &read_key, &format!("http://127.0.0.1:{}/ok", allowed.port)).await;
    assert!(is_error && text.contains("spend scope"), "{text}");
    assert_eq!(allowed.hits(), 2, "a read key makes the gateway fetch nothing");
}
