//! Observability: `/metrics` read by Prometheus's own text-format parser
//! (PyPI `prometheus_client`) after real traffic, with its latency
//! histograms, gauges and payment counters; `/health/live` and
//! `/health/ready` telling up from ready; JSON logs with
//! `COFFER_LOG_FORMAT=json`.

mod common;

use common::{Gateway, SseReader, send};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/prometheus_parse.py");
/// A guard against a hung child, not a measurement.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The page as the parser read it: family name to `{type, samples}`.
async fn parse_metrics(python: &Path, page: &str) -> Value {
    let mut child = tokio::process::Command::new(python)
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run COFFER_TEST_PYTHON={}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(page.as_bytes()).await.expect("writing the page to the parser");
    drop(stdin);
    let out = tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output())
        .await
        .expect("the parser did not finish in time")
        .expect("running the parser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "prometheus_client refused the page: {stderr}\n{page}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = families[family]["samples"].as_array().unwrap_or_else(|| panic!("no family {family}"));
    let found = samples.iter().find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)));
    let found = found.unwrap_or_else(|| panic!("no sample {name} {labels:?} in {family}: {samples:?}"));
    found[2].as_f64().unwrap_or_else(|| panic!("{found}"))
}

fn family_type<'a>(families: &'a Value, family: &str) -> &'a str {
    families[family]["type"].as_str().unwrap_or_else(|| panic!("no family {family}"))
}

async fn metrics_page(gw: &Gateway) -> String {
    let r = send(gw.request(Method::GET, "/metrics", None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
}

#[tokio::test]
async fn metrics_after_traffic_parse_and_show_latencies_gauges_and_payments_by_outcome_and_rail() {
    let Some(python) = common::test_python("the /metrics parse by prometheus_client") else { return };
    let gw = Gateway::start().await;
    let (payer_id, _, payer_key) = gw.new_agent("payer", 1_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let (frozen_id, _, _) = gw.new_agent("frozen", 0).await;
    let _stream = SseReader::open(&gw, &payer_key, "/v1/events/stream", None).await.expect("the event stream");

    let paid = common::invoice(&payee, 1_000).await;
    assert_eq!(gw.pay_raw(&payer_key, &paid.bolt11, "paid", None).await.status, 200);
    let policy = json!({"max_payment_msat": 50_000, "approval_above_msat": 10_000});
    assert_eq!(gw.put_policy_raw(gw.operator_token(), &payer_id, &policy).await.status, 200);
    let too_big = common::invoice(&payee, 60_000).await;
    common::assert_denied(&gw.pay_raw(&payer_key, &too_big.bolt11, "denied", None).await, "amount-too-large");
    let held = common::invoice(&payee, 20_000).await;
    assert_eq!(gw.pay_raw(&payer_key, &held.bolt11, "held", None).await.status, 202);
    let freeze = gw.request(Method::POST, &format!("/v1/agents/{frozen_id}/freeze"), Some(gw.operator_token()));
    assert_eq!(send(freeze.json(&json!({"reason": "a test"}))).await.status, 200);

    let families = parse_metrics(&python, &metrics_page(&gw).await).await;

    let http = "coffer_http_request_duration_seconds";
    assert_eq!(family_type(&families, http), "histogram");
    for class in ["pay", "invoice", "operator"] {
        let count = sample(&families, http, &format!("{http}_count"), &[("route_class", class)]);
        let inf = sample(&families, http, &format!("{http}_bucket"), &[("route_class", class), ("le", "+Inf")]);
        assert!(count >= 1.0 && count == inf, "{class}: count {count}, +Inf {inf}");
    }
    let pays = sample(&families, http, &format!("{http}_count"), &[("route_class", "pay")]);
    assert!(pays >= 3.0, "three payments were timed as pay: {pays}");
    let commit = "coffer_store_commit_duration_seconds";
    assert_eq!(family_type(&families, commit), "histogram");
    assert!(sample(&families, commit, &format!("{commit}_count"), &[]) >= 1.0);

    for gauge in ["coffer_approvals_pending", "coffer_agents_frozen", "coffer_event_streams_open", "coffer_holds_open"]
    {
        assert_eq!(family_type(&families, gauge), "gauge", "{gauge}");
    }
    assert_eq!(family_type(&families, "coffer_outbox_backlog_events"), "gauge");
    assert_eq!(sample(&families, "coffer_approvals_pending", "coffer_approvals_pending", &[]), 1.0);
    assert_eq!(sample(&families, "coffer_agents_frozen", "coffer_agents_frozen", &[]), 1.0);
    assert_eq!(sample(&families, "coffer_holds_open", "coffer_holds_open", &[]), 0.0);
    assert!(sample(&families, "coffer_event_streams_open", "coffer_event_streams_open", &[]) >= 1.0);

    // prometheus_client names a counter's family without `_total`.
    assert_eq!(family_type(&families, "coffer_payments"), "counter");
    let payments = |outcome: &str| {
        sample(&families, "coffer_payments", "coffer_payments_total", &[("outcome", outcome), ("rail", "internal")])
    };
    assert_eq!((payments("succeeded"), payments("denied"), payments("held")), (1.0, 1.0, 1.0));
    assert_eq!(payments("failed"), 0.0);
    // The names CONTRACT.md lists are still there.
    assert_eq!(sample(&families, "coffer_payments_succeeded", "coffer_payments_succeeded_total", &[]), 1.0);
    assert_eq!(sample(&families, "coffer_payments_refused", "coffer_payments_refused_total", &[]), 2.0);
    assert!(sample(&families, "coffer_invoices_created", "coffer_invoices_created_total", &[]) >= 3.0);
}

#[tokio::test]
async fn live_is_always_up_and_ready_is_200_on_a_working_gateway() {
    let gw = Gateway::start().await;
    let live = send(gw.request(Method::GET, "/health/live", None)).await;
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.json["status"], "ok");
    let ready = send(gw.request(Method::GET, "/health/ready", None)).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!((ready.json["ready"].as_bool(), ready.json["store"].as_str()), (Some(true), Some("ok")));
    assert_eq!(ready.json["backend"], "none", "dev mode has no backend");
    // The old names answer as before.
    assert_eq!(send(gw.request(Method::GET, "/healthz", None)).await.status, 200);
    assert_eq!(send(gw.request(Method::GET, "/readyz", None)).await.status, 200);
}

#[tokio::test]
async fn ready_is_503_naming_the_backend_when_it_cannot_be_reached_while_live_stays_200() {
    // A loopback port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}");
    let env = [
        ("COFFER_LIGHTNING", "lnbits"),
        ("COFFER_LNBITS_URL", url.as_str()),
        ("COFFER_LNBITS_ADMIN_KEY", "an-admin-key"),
        ("COFFER_LIGHTNING_TIMEOUT_MS", "500"),
    ];
    let gw = Gateway::start_with_env(&env).await;
    assert_eq!(send(gw.request(Method::GET, "/health/live", None)).await.status, 200);
    let ready = send(gw.request(Method::GET, "/health/ready", None)).await;
    let problem = ready.assert_problem(503, "not-ready");
    assert_eq!(problem["store"], "ok", "{problem}");
    assert!(problem["backend"].as_str().is_some_and(|b| b != "ok" && b != "none"), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("backend")), "{problem}");
    assert!(ready.headers.contains_key(reqwest::header::RETRY_AFTER));
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_without_secrets() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let token = coffer::secrets::new_secret("cop_test_");
    let mut command = tokio::process::Command::new(common::BIN);
    command.env_remove("COFFER_DATABASE_URL");
    if common::postgres_mode() {
        // The log's format does not depend on the store: SQLite suffices.
        eprintln!("runs on SQLite under COFFER_TEST_STORE=postgres too");
    }
    let mut child = command
        .args(["serve", "--data"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("COFFER_OPERATOR_TOKEN", &token)
        .env("COFFER_LOG_FORMAT", "json")
        .env("COFFER_LOG", "debug")
        .env_remove("COFFER_NATS_URL")
        .env_remove("COFFER_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning coffer serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(CHILD_TIMEOUT, async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if let Some(url) = line.strip_prefix("coffer listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("coffer serve exited before listening");
    })
    .await
    .expect("coffer serve did not listen in time");
    // Some requests, a failing one among them, so that there is more to log.
    coffer::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let _ = http.get(format!("{url}/v1/wallet")).bearer_auth("not-a-key").send().await;
    let _ = http.get(format!("{url}/v1/agents")).bearer_auth(&token).send().await;
    // SIGTERM: the gateway logs its graceful stop (info lines) on the way out.
    let pid = child.id().expect("its pid").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
    let out = tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output())
        .await
        .expect("coffer serve did not stop in time")
        .expect("its output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.contains("stopping")), "the stop was not logged: {stderr}");
    for line in &lines {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["message"].is_string(), "{line}");
        assert!(parsed["timestamp"].is_string() && parsed["target"].is_string(), "{line}");
    }
    assert!(!stderr.contains(&token), "the operator token was logged");
}
