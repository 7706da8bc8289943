//! Connections and streams cannot stall the gateway (issue 17, item 3):
//! half-open connections time out, connections are capped in all and per
//! client with room kept for the operator and `/healthz`, streams are capped
//! per key and in all, and idle streams share one read of each commit.

mod common;

use coffer_client::{CreateInvoiceRequest, PayRequest};
use common::{Gateway, SseReader, send};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connection the server should close may stay open: generous,
/// for a loaded CI machine; the bounds under test are far shorter.
const CLOSE_WAIT: Duration = Duration::from_secs(20);
/// A request head cut before its end: the server waits for the rest.
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
const HEALTH_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn address(gw: &Gateway) -> String {
    gw.url().trim_start_matches("http://").to_owned()
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(address(gw)).await.expect("connecting to the gateway")
}

/// A client that opens a connection per request and closes it after.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

/// Reads until the server closes the connection (an end of file or a
/// reset), whatever it sent first.
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Sends a whole `GET /healthz` and reads its answer; the connection stays
/// open (keep-alive) with its request head seen.
async fn held_after_a_request(gw: &Gateway) -> TcpStream {
    let mut stream = connect(gw).await;
    stream.write_all(HEALTH_REQUEST).await.expect("sending a request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(CLOSE_WAIT, stream.read(&mut buf)).await.expect("an answer").expect("reading");
        assert!(n > 0, "the connection closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    stream
}

async fn get(path: &str, gw: &Gateway, secret: Option<&str>) -> common::Reply {
    let rb = fresh_client().get(format!("{}{path}", gw.url()));
    send(match secret {
        Some(s) => rb.bearer_auth(s),
        None => rb,
    })
    .await
}

/// A counter of `/metrics`, by its whole series name.
async fn metric(gw: &Gateway, series: &str) -> u64 {
    let text = get("/metrics", gw, None).await.text;
    let line = text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')));
    line.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

#[track_caller]
fn assert_limit(reply: &common::Reply, limit: &str) {
    reply.assert_problem(429, "limit-exceeded");
    assert_eq!(reply.json["limit"], limit, "{reply:?}");
    let retry = reply.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After of {reply:?}");
}

#[tokio::test]
async fn half_open_connections_are_closed_after_the_header_timeout_and_healthz_answers_meanwhile() {
    let gw = Gateway::start_with_env(&[
        ("COFFER_LIMIT_HEADER_READ_TIMEOUT_MS", "500"),
        ("COFFER_LIMIT_CONNECTIONS_TOTAL", "64"),
        ("COFFER_LIMIT_CONNECTIONS_RESERVED", "8"),
        ("COFFER_LIMIT_CONNECTIONS_PER_CLIENT", "1000"),
    ])
    .await;
    let mut half_open = Vec::new();
    for _ in 0..300 {
        let mut stream = connect(&gw).await;
        stream.write_all(PARTIAL_HEAD).await.expect("sending part of a head");
        half_open.push(stream);
    }
    // Every slot is taken by a connection that never finishes its head:
    // the health check takes the place of the oldest.
    let health = get("/healthz", &gw, None).await;
    assert_eq!((health.status, health.json["status"].as_str()), (200, Some("ok")), "{health:?}");
    let all_closed = async {
        for stream in &mut half_open {
            until_closed(stream).await;
        }
    };
    tokio::time::timeout(CLOSE_WAIT, all_closed).await.expect("the half-open connections were not closed");
    assert_eq!(get("/healthz", &gw, None).await.status, 200);
}

#[tokio::test]
async fn a_connection_stalled_inside_a_request_body_is_closed_after_the_idle_timeout() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_IDLE_TIMEOUT_MS", "500")]).await;
    let mut stream = connect(&gw).await;
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        gw.operator_token()
    );
    stream.write_all(head.as_bytes()).await.expect("sending a head and part of its body");
    tokio::time::timeout(CLOSE_WAIT, until_closed(&mut stream)).await.expect("the stalled connection was kept open");
    assert!(gw.operator().agents().await.expect("the agents").is_empty(), "the cut request created nothing");
}

#[tokio::test]
async fn connections_beyond_the_per_client_cap_are_refused() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_CONNECTIONS_PER_CLIENT", "4")]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&gw).await);
    }
    let mut fifth = connect(&gw).await;
    tokio::time::timeout(CLOSE_WAIT, until_closed(&mut fifth)).await.expect("the fifth connection was kept open");

    // The four within the cap are served.
    let mut first = held.remove(0);
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.expect("sending");
    let mut answer = Vec::new();
    tokio::time::timeout(CLOSE_WAIT, first.read_to_end(&mut answer)).await.expect("an answer").expect("reading");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // Closing connections frees their places (a moment later, once the
    // server sees them close).
    drop(held);
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    let refused = loop {
        if let Ok(reply) = common::try_send(fresh_client().get(format!("{}/metrics", gw.url()))).await {
            break reply.text;
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection was let in after the others closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("coffer_limits_hit_total{limit=\"connections_per_client\"} 1"), "{refused}");
}

#[tokio::test]
async fn the_reserved_connections_let_only_the_operator_and_healthz_in() {
    let gw = Gateway::start_with_env(&[
        ("COFFER_LIMIT_CONNECTIONS_TOTAL", "10"),
        ("COFFER_LIMIT_CONNECTIONS_RESERVED", "4"),
        ("COFFER_LIMIT_CONNECTIONS_PER_CLIENT", "100"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(held_after_a_request(&gw).await);
    }
    // Only the reserved room is left.
    assert_limit(&get("/openapi.json", &gw, None).await, "connections_total");
    assert_limit(&get("/v1/agents", &gw, Some("cop_not_the_operator")).await, "connections_total");
    let health = get("/healthz", &gw, None).await;
    assert_eq!(health.status, 200, "{health:?}");
    let agents = get("/v1/agents", &gw, Some(gw.operator_token())).await;
    assert_eq!(agents.status, 200, "{agents:?}");

    // With a held connection gone, anyone is let in again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    while get("/openapi.json", &gw, None).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "a freed connection was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn streams_beyond_the_caps_answer_429_and_a_closed_stream_frees_its_place() {
    let gw =
        Gateway::start_with_env(&[("COFFER_LIMIT_STREAMS_PER_KEY", "3"), ("COFFER_LIMIT_STREAMS_TOTAL", "4")]).await;
    let (_, _, a_key) = gw.new_agent("streams-a", 0).await;
    let (_, _, b_key) = gw.new_agent("streams-b", 0).await;
    let mut a_streams = Vec::new();
    for _ in 0..3 {
        a_streams.push(SseReader::open(&gw, &a_key, "/v1/events/stream", None).await.expect("a stream within the cap"));
    }
    let refused =
        SseReader::open(&gw, &a_key, "/v1/events/stream", None).await.err().expect("a fourth stream of a key");
    assert_limit(&refused, "streams_per_key");
    let room = gw.create_room(&b_key, "streams", &[]).await;
    let _b_stream = SseReader::connect(&gw, &b_key, &room.id, None).await.expect("a room stream within the total");
    let refused = SseReader::open(&gw, &b_key, "/v1/events/stream", None).await.err().expect("a fifth stream in all");
    assert_limit(&refused, "streams_total");

    drop(a_streams.pop());
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match SseReader::open(&gw, &a_key, "/v1/events/stream", None).await {
            Ok(_) => break,
            // Until the server sees the stream close, both bounds are full.
            Err(reply) => assert_eq!(reply.code(), Some("limit-exceeded"), "{reply:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "a closed stream did not give its place back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pays `payee` from `payer`; answers the payment hash.
async fn pay(payer: &coffer_client::Client, payee: &coffer_client::Client, amount_msat: u64) -> String {
    let request = CreateInvoiceRequest {
        amount_msat,
        memo: Some("idle streams".into()),
        expiry_secs: None,
        ..Default::default()
    };
    let invoice = payee.create_invoice(&request).await.expect("an invoice is still created");
    let key = format!("idle-{}", invoice.payment_hash);
    let pay = PayRequest {
        bolt11: invoice.bolt11,
        purpose: Some("idle streams".into()),
        amount_msat: None,
        ..Default::default()
    };
    let paid = payer.pay(&pay, &key).await;
    assert!(paid.is_ok(), "a payment is still made: {paid:?}");
    invoice.payment_hash
}

#[tokio::test]
async fn with_200_idle_streams_payments_are_served_and_each_stream_gets_its_events_from_one_read_per_commit() {
    const STREAMS: usize = 200;
    const PAYMENTS: usize = 5;
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_STREAMS_PER_KEY", "256")]).await;
    let (a_id, a, a_key) = gw.new_agent("idle-a", 1_000_000).await;
    let (_, b, _) = gw.new_agent("idle-b", 0).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(SseReader::open(&gw, &a_key, "/v1/events/stream", None).await.expect("an idle stream"));
    }
    let reads_before = metric(&gw, "coffer_event_stream_store_reads_total").await;
    let mut hashes = Vec::new();
    for i in 0..PAYMENTS {
        hashes.push(pay(&a, &b, 1_000 + i as u64).await);
    }
    for stream in &mut streams {
        let mut seen = Vec::new();
        let mut last_id = 0;
        while seen.len() < PAYMENTS {
            let (kind, event) = stream.next().await;
            assert_eq!(event["agent_id"], a_id.as_str(), "a stream carries only its agent's events: {event}");
            let id = event["id"].as_i64().expect("an event id");
            assert!(id > last_id, "events in id order, once each: {id} after {last_id}");
            last_id = id;
            if kind == "payment.succeeded" {
                seen.push(event["data"]["payment_hash"].as_str().expect("a payment hash").to_owned());
            }
        }
        assert_eq!(seen, hashes, "every payment, in order");
    }
    // The streams followed the commits from the one shared read: none went
    // back to the store for them (one read per stream per commit before).
    let reads_after = metric(&gw, "coffer_event_stream_store_reads_total").await;
    assert!(reads_after - reads_before < STREAMS as u64, "{reads_before} then {reads_after} store reads by streams");
}
