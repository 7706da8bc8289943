//! The outbox delivered outside the gateway: webhooks (signed, in order,
//! retried with backoff, paused after failures in a row, resumed, logged)
//! and the buses operators run, against the real NATS JetStream and Redis
//! of this machine (127.0.0.1:4222 and :6379; `bash .ci/run` starts them).
//! Without those servers the bus test skips loudly, except under CI, where
//! it fails.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use coffer_client::{Client, CreateInvoiceRequest, PayRequest};
use common::{Gateway, send, service_up};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long events may take to arrive somewhere.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A webhook receiver: records every request; answers 500 while `failing`
/// is above zero (counting down), 200 afterwards.
#[derive(Clone, Default)]
struct Receiver {
    /// Every request, and whether it was answered 200.
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes, bool)>>>,
    failing: Arc<AtomicU32>,
}

impl Receiver {
    async fn start(failing: u32) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.failing.store(failing, Ordering::SeqCst);
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let fail = state.failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                    state.seen.lock().unwrap().push((headers, body, fail.is_err()));
                    if fail.is_ok() { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the receiver runs") });
        (receiver, url)
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().iter().map(|(h, b, _)| (h.clone(), b.clone())).collect()
    }

    /// The events answered 200, in the order they came.
    async fn delivered(&self, count: usize) -> Vec<Value> {
        tokio::time::timeout(ARRIVAL_TIMEOUT, async {
            loop {
                let answered_ok: Vec<Value> = {
                    let seen = self.seen.lock().unwrap();
                    seen.iter().filter(|(_, _, ok)| *ok).map(|(_, b, _)| serde_json::from_slice(b).unwrap()).collect()
                };
                if answered_ok.len() >= count {
                    return answered_ok;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} deliveries did not arrive; got {:?}", self.requests().len()))
    }
}

async fn pay(payer: &Client, payee: &Client, amount_msat: u64) -> String {
    let request = CreateInvoiceRequest { amount_msat, memo: None, expiry_secs: None, ..Default::default() };
    let invoice = payee.create_invoice(&request).await.expect("an invoice");
    let key = format!("delivery-{}", invoice.payment_hash);
    let paid = payer
        .pay(
            &PayRequest {
                bolt11: invoice.bolt11,
                purpose: Some("delivery".into()),
                amount_msat: None,
                ..Default::default()
            },
            &key,
        )
        .await;
    assert!(paid.is_ok(), "{paid:?}");
    invoice.payment_hash
}

/// Checks `Coffer-Signature: t=..,v1=..` as a receiver would.
fn assert_signed(headers: &HeaderMap, body: &[u8], secret: &str) {
    let signature = headers["coffer-signature"].to_str().expect("ASCII");
    let (t, v1) = signature.split_once(",v1=").expect("t=..,v1=..");
    let t: i64 = t.strip_prefix("t=").expect("t=").parse().expect("a time");
    let now = chrono::Utc::now().timestamp();
    assert!((now - t).abs() < 300, "the signature's time is now: {t} vs {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).expect("hex")).expect("the signature verifies");
    // And it would not for another body.
    let mut other = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    other.update(format!("{t}.{{}}").as_bytes());
    assert!(other.verify_slice(&hex::decode(v1).unwrap()).is_err());
}

async fn create_webhook(gw: &Gateway, secret: &str, body: Value) -> common::Reply {
    send(gw.request(Method::POST, "/v1/webhooks", Some(secret)).json(&body)).await
}

async fn deliveries(gw: &Gateway, id: &str) -> Vec<Value> {
    let reply =
        send(gw.request(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), Some(gw.operator_token()))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json.as_array().expect("a list").clone()
}

#[tokio::test]
async fn webhooks_are_signed_in_order_retried_paused_and_resumed() {
    // The receivers listen on loopback, which the egress guard refuses
    // unless the operator allows it.
    let args = ["--webhook-backoff-ms", "20", "--webhook-pause-after", "3"];
    let gw = Gateway::start_with_args_env(&args, &[("COFFER_EGRESS_ALLOW", "127.0.0.1")]).await;
    let (a_id, a, a_key) = gw.new_agent("hook-a", 100_000).await;
    let (_, b, _) = gw.new_agent("hook-b", 0).await;

    // The operator's webhook of two types fails twice, then takes them.
    let (flaky, flaky_url) = Receiver::start(2).await;
    let types = json!(["payment.succeeded", "invoice.paid"]);
    let created = create_webhook(&gw, gw.operator_token(), json!({"url": flaky_url, "types": types})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let (hook_id, secret) = (created.json["id"].as_str().unwrap().to_owned(), created.json["secret"].as_str().unwrap());
    // The agent's own webhook: its events only.
    let (own, own_url) = Receiver::start(0).await;
    let mine = create_webhook(&gw, &a_key, json!({"url": own_url})).await;
    assert_eq!((mine.status, mine.json["agent_id"].as_str()), (201, Some(a_id.as_str())), "{mine:?}");

    let first = pay(&a, &b, 1_000).await;
    let second = pay(&a, &b, 2_000).await;
    let events = flaky.delivered(4).await;
    let seen: Vec<(&str, &str)> =
        events.iter().map(|e| (e["type"].as_str().unwrap(), e["data"]["payment_hash"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("payment.succeeded", first.as_str()),
            ("invoice.paid", first.as_str()),
            ("payment.succeeded", second.as_str()),
            ("invoice.paid", second.as_str())
        ]
    );
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    for (headers, body) in flaky.requests() {
        assert_signed(&headers, &body, secret);
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(headers["coffer-event-id"].to_str().unwrap(), event["id"].to_string());
    }
    // The same event twice after the failures: receivers de-duplicate by id.
    let requests = flaky.requests();
    let first_ids: Vec<&str> = requests.iter().take(3).map(|(h, _)| h["coffer-event-id"].to_str().unwrap()).collect();
    assert!(first_ids.iter().all(|id| *id == first_ids[0]), "retries carry the same event: {first_ids:?}");

    // The log has every attempt: two failures, then the deliveries.
    let log = deliveries(&gw, &hook_id).await;
    let attempts: Vec<(i64, u64, bool)> = log
        .iter()
        .rev()
        .map(|d| (d["event_id"].as_i64().unwrap(), d["attempt"].as_u64().unwrap(), d["delivered"].as_bool().unwrap()))
        .collect();
    assert_eq!(attempts[..3], [(ids[0], 1, false), (ids[0], 2, false), (ids[0], 3, true)], "{log:#?}");
    assert_eq!(log.iter().filter(|d| d["delivered"] == true).count(), 4);
    assert_eq!(log.last().unwrap()["status"], 500);

    // The agent's webhook got its own payments and nothing of b's.
    let own_events = own.delivered(2).await;
    assert!(own_events.iter().all(|e| e["agent_id"] == a_id.as_str() && e["type"] == "payment.succeeded"));

    // A receiver that keeps failing pauses the webhook after three tries.
    let (down, down_url) = Receiver::start(u32::MAX).await;
    let paused = create_webhook(&gw, gw.operator_token(), json!({"url": down_url, "types": ["invoice.paid"]})).await;
    let paused_id = paused.json["id"].as_str().unwrap().to_owned();
    let third = pay(&a, &b, 3_000).await;
    let hooks = tokio::time::timeout(ARRIVAL_TIMEOUT, async {
        loop {
            let list = send(gw.request(Method::GET, "/v1/webhooks", Some(gw.operator_token()))).await;
            let hook = list.json.as_array().unwrap().iter().find(|w| w["id"] == paused_id.as_str()).cloned().unwrap();
            if hook["paused"] == true {
                return hook;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the webhook pauses");
    assert_eq!(hooks["failures"], 3);
    assert_eq!(deliveries(&gw, &paused_id).await.len(), 3, "no attempt after the third");
    // Resumed with a working receiver, it delivers the event it stopped at.
    down.failing.store(0, Ordering::SeqCst);
    let resumed =
        send(gw.request(Method::POST, &format!("/v1/webhooks/{paused_id}/resume"), Some(gw.operator_token())));
    assert_eq!(resumed.await.json["paused"], false);
    let after_resume = down.delivered(1).await;
    assert_eq!(after_resume[0]["data"]["payment_hash"], third.as_str());
    // The pause and the resume are events of the webhook's owner (here the
    // operator's: no agent).
    for kind in ["webhook.paused", "webhook.resumed"] {
        let events = gw.events(kind).await;
        assert_eq!(events.len(), 1, "{kind}: {events:?}");
        assert_eq!((events[0].0.as_deref(), events[0].1["webhook_id"].as_str()), (None, Some(paused_id.as_str())));
    }

    // Bad input changes nothing; another agent's webhook is not found.
    create_webhook(&gw, &a_key, json!({"url": "ftp://x/y"})).await.assert_problem(400, "invalid-field");
    create_webhook(&gw, &a_key, json!({"url": own_url, "agent_id": a_id})).await.assert_problem(400, "invalid-field");
    create_webhook(&gw, &a_key, json!({"url": own_url, "types": ["Not A Type"]}))
        .await
        .assert_problem(400, "invalid-field");
    create_webhook(&gw, &a_key, json!({"url": own_url, "extra": 1})).await.assert_problem(400, "malformed-request");
    let (_, _, c_key) = gw.new_agent("hook-c", 0).await;
    let foreign = send(gw.request(Method::DELETE, &format!("/v1/webhooks/{hook_id}"), Some(&c_key))).await;
    foreign.assert_problem(404, "not-found");
    let listed = send(gw.request(Method::GET, "/v1/webhooks", Some(&c_key))).await;
    assert_eq!(listed.json, json!([]), "an agent lists only its own webhooks");
    let gone = send(gw.request(Method::DELETE, &format!("/v1/webhooks/{hook_id}"), Some(gw.operator_token()))).await;
    assert_eq!(gone.status, 204);
}

/// This gateway's event ids, in the order NATS JetStream holds them.
async fn nats_ids(stream: &async_nats::jetstream::stream::Stream, from: u64, node: &str, want: usize) -> Vec<i64> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures_util::StreamExt;
    let config = OrderedConfig {
        filter_subject: "coffer.events.>".into(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("the messages");
    let mut ids = Vec::new();
    tokio::time::timeout(ARRIVAL_TIMEOUT, async {
        while ids.len() < want {
            let message = messages.next().await.expect("a message").expect("a good message");
            let event: Value = serde_json::from_slice(&message.payload).expect("JSON");
            if event["gateway"] == node {
                assert_eq!(message.subject.as_str(), format!("coffer.events.{}", event["type"].as_str().unwrap()));
                ids.push(event["id"].as_i64().unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("NATS carried {} of {want} events", ids.len()));
    ids
}

/// This gateway's event ids, in the order the Redis stream holds them.
async fn redis_ids(connection: &mut redis::aio::MultiplexedConnection, node: &str, want: usize) -> Vec<i64> {
    tokio::time::timeout(ARRIVAL_TIMEOUT, async {
        loop {
            let entries: redis::streams::StreamRangeReply =
                redis::cmd("XRANGE").arg("coffer:events").arg("-").arg("+").query_async(connection).await.unwrap();
            let ids: Vec<i64> = entries
                .ids
                .iter()
                .filter_map(|entry| {
                    let json: String = entry.get("event")?;
                    let event: Value = serde_json::from_str(&json).ok()?;
                    let id: i64 = entry.get("id")?;
                    assert_eq!(event["id"], id);
                    (event["gateway"] == node).then_some(id)
                })
                .collect();
            if ids.len() >= want {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("Redis carries every event")
}

#[tokio::test]
async fn every_event_reaches_nats_jetstream_and_redis_in_order_across_a_restart() {
    if !service_up("127.0.0.1:4222", "NATS").await || !service_up("127.0.0.1:6379", "Redis").await {
        return;
    }
    let nats = async_nats::connect("127.0.0.1:4222").await.expect("connecting to NATS");
    let js = async_nats::jetstream::new(nats);
    let redis_client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut redis = redis_client.get_multiplexed_async_connection().await.expect("connecting to Redis");

    // Read NATS from here on: the stream may hold other gateways' events.
    let from = match js.get_stream("COFFER_EVENTS").await {
        Ok(mut stream) => stream.info().await.expect("the stream's info").state.last_sequence + 1,
        Err(_) => 1,
    };
    let mut gw =
        Gateway::start_with(&["--nats-url", "nats://127.0.0.1:4222", "--redis-url", "redis://127.0.0.1:6379"]).await;
    let node = gw.operator().health().await.expect("health").node_pubkey;
    let (_, a, a_key) = gw.new_agent("bus-a", 100_000).await;
    let (_, b, _) = gw.new_agent("bus-b", 0).await;
    for amount_msat in [1_000, 2_000, 3_000] {
        pay(&a, &b, amount_msat).await;
    }
    // The stream exists once the gateway has published.
    let stream = tokio::time::timeout(ARRIVAL_TIMEOUT, async {
        loop {
            if let Ok(stream) = js.get_stream("COFFER_EVENTS").await {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stream COFFER_EVENTS");

    // A crash and a restart lose nothing: the cursor is in the store.
    gw.kill9().await;
    gw.restart().await;
    let a = Client::new(gw.url(), &a_key).unwrap();
    let created = gw.operator().create_agent("bus-c").await.expect("an agent after the restart");
    let c = Client::new(gw.url(), &created.key).unwrap();
    pay(&a, &c, 4_000).await;

    let all = send(gw.request(Method::GET, "/v1/events?limit=1000", Some(gw.operator_token()))).await;
    let expected: Vec<i64> = all.json["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(expected.len() > 10, "{expected:?}");

    let mut from_nats = nats_ids(&stream, from, &node, expected.len()).await;
    let mut from_redis = redis_ids(&mut redis, &node, expected.len()).await;
    // At least once: a repeat (an id not above the last one seen, after the
    // crash) is allowed; a gap or a reordering leaves an id out, and fails.
    for (bus, ids) in [("NATS", &mut from_nats), ("Redis", &mut from_redis)] {
        let mut last = 0;
        ids.retain(|&id| {
            let new = id > last;
            last = last.max(id);
            new
        });
        assert_eq!(*ids, expected, "{bus} carries exactly the outbox, in order");
    }
}
