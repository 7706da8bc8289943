//! The outbox as keys see it: every change writes its event in the same
//! transaction, with increasing ids; `GET /v1/events?after=ID` replays it,
//! SSE and WebSocket stream it live (and resume after a reconnect), and each
//! key sees only its own agent's events while the operator sees all.

mod common;

use coffer_client::{CreateInvoiceRequest, PayRequest};
use common::{Gateway, SseReader, WsReader, send};
use reqwest::Method;
use serde_json::Value;

/// One page of events for `secret`.
async fn page(gw: &Gateway, secret: &str, query: &str) -> common::Reply {
    send(gw.request(Method::GET, &format!("/v1/events{query}"), Some(secret))).await
}

/// Every event `secret` may see, paging `limit` at a time.
async fn all_events(gw: &Gateway, secret: &str, limit: u32) -> Vec<Value> {
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let reply = page(gw, secret, &format!("?after={after}&limit={limit}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let events = reply.json["events"].as_array().expect("events").clone();
        assert!(events.len() <= limit as usize);
        if events.is_empty() {
            assert_eq!(reply.json["next_after"], after, "an empty page keeps the cursor");
            return all;
        }
        after = reply.json["next_after"].as_i64().expect("next_after");
        assert_eq!(Some(after), events.last().and_then(|e| e["id"].as_i64()));
        all.extend(events);
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().expect("a type")).collect()
}

/// Agent A pays agent B `amount_msat`; answers the payment hash.
async fn pay(payer: &coffer_client::Client, payee: &coffer_client::Client, amount_msat: u64) -> String {
    let request =
        CreateInvoiceRequest { amount_msat, memo: Some("events".into()), expiry_secs: None, ..Default::default() };
    let invoice = payee.create_invoice(&request).await.expect("an invoice");
    let key = format!("events-{}", invoice.payment_hash);
    let paid = payer
        .pay(
            &PayRequest {
                bolt11: invoice.bolt11,
                purpose: Some("events test".into()),
                amount_msat: None,
                ..Default::default()
            },
            &key,
        )
        .await;
    assert!(paid.is_ok(), "{paid:?}");
    invoice.payment_hash
}

#[tokio::test]
async fn every_change_is_an_event_and_each_key_sees_only_its_own() {
    let gw = Gateway::start().await;
    let (a_id, a, a_key) = gw.new_agent("events-a", 50_000).await;
    let (b_id, b, b_key) = gw.new_agent("events-b", 0).await;
    let hash = pay(&a, &b, 21_000).await;

    let all = all_events(&gw, gw.operator_token(), 200).await;
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let node = gw.operator().health().await.expect("health").node_pubkey;
    assert!(all.iter().all(|e| e["gateway"] == node.as_str() && e["created_at"].is_string()), "{all:#?}");
    let kinds = types(&all);
    for wanted in ["agent.created", "invoice.created", "payment.succeeded", "invoice.paid"] {
        assert!(kinds.contains(&wanted), "no {wanted} in {kinds:?}");
    }
    let paid = all.iter().find(|e| e["type"] == "payment.succeeded").expect("the payment's event");
    assert_eq!(
        (paid["agent_id"].as_str(), paid["data"]["payment_hash"].as_str()),
        (Some(a_id.as_str()), Some(hash.as_str()))
    );

    // Paging a few at a time gives the same events.
    assert_eq!(all_events(&gw, gw.operator_token(), 3).await, all);

    // Each agent sees its own events, and no one else's.
    let of_a = all_events(&gw, &a_key, 200).await;
    let of_b = all_events(&gw, &b_key, 200).await;
    assert!(!of_a.is_empty() && !of_b.is_empty());
    assert!(of_a.iter().all(|e| e["agent_id"] == a_id.as_str()), "{of_a:#?}");
    assert!(of_b.iter().all(|e| e["agent_id"] == b_id.as_str()), "{of_b:#?}");
    assert!(types(&of_a).contains(&"payment.succeeded") && !types(&of_a).contains(&"invoice.paid"));
    assert!(types(&of_b).contains(&"invoice.paid") && !types(&of_b).contains(&"payment.succeeded"));
    let mine: Vec<&Value> = all.iter().filter(|e| e["agent_id"] == a_id.as_str()).collect();
    assert_eq!(of_a.iter().collect::<Vec<_>>(), mine, "an agent sees all of its own events");

    // Bad input is a problem and changes nothing.
    page(&gw, &a_key, "?after=-1").await.assert_problem(400, "invalid-field");
    page(&gw, &a_key, "?after=x").await.assert_problem(400, "malformed-request");
    page(&gw, &a_key, "?before=1").await.assert_problem(400, "malformed-request");
    send(gw.request(Method::GET, "/v1/events", None)).await.assert_problem(401, "unauthorized");
    assert_eq!(all_events(&gw, gw.operator_token(), 200).await, all);
}

#[tokio::test]
async fn streams_follow_live_and_resume_where_they_stopped() {
    let gw = Gateway::start().await;
    let (a_id, a, a_key) = gw.new_agent("stream-a", 50_000).await;
    let (_, b, _) = gw.new_agent("stream-b", 0).await;

    // Only new events, when no start is given.
    let mut live = SseReader::open(&gw, &a_key, "/v1/events/stream", None).await.expect("the stream");
    let mut ws = WsReader::connect(&gw, &a_key, "/v1/events/ws").await.expect("the WebSocket");
    let hash = pay(&a, &b, 1_000).await;
    let (kind, first) = live.next().await;
    assert_eq!((kind.as_str(), first["data"]["payment_hash"].as_str()), ("payment.succeeded", Some(hash.as_str())));
    assert_eq!(first["agent_id"], a_id.as_str());
    let framed = ws.next().await;
    assert_eq!(framed, first, "the WebSocket carries the same event");

    // A reconnect with Last-Event-ID replays what came after it, then follows.
    let second_hash = pay(&a, &b, 2_000).await;
    let (_, second) = live.next().await;
    assert_eq!(second["data"]["payment_hash"], second_hash.as_str());
    drop(live);
    let first_id = first["id"].as_i64().expect("an id");
    let mut resumed = SseReader::open(&gw, &a_key, "/v1/events/stream", Some(first_id)).await.expect("resumed");
    let (_, replayed) = resumed.next().await;
    assert_eq!(replayed, second, "the event after Last-Event-ID comes first");
    let third_hash = pay(&a, &b, 3_000).await;
    let (_, third) = resumed.next().await;
    assert_eq!(third["data"]["payment_hash"], third_hash.as_str());
    assert!(third["id"].as_i64() > second["id"].as_i64());

    // Another agent's stream carries none of these.
    let (_, _, c_key) = gw.new_agent("stream-c", 0).await;
    let other = page(&gw, &c_key, "?after=0").await;
    assert!(other.json["events"].as_array().expect("events").iter().all(|e| e["type"] != "payment.succeeded"));
}

/// The gateway's clock is moved past the invoice's expiry instead of
/// waiting for it: the sweep has run at the new time when the clock answers.
#[tokio::test]
async fn an_expired_invoice_is_swept_once_with_its_event_and_stays_unpayable() {
    let gw = Gateway::start_with_dev_clock().await;
    let (a_id, a, a_key) = gw.new_agent("expiry-a", 10_000).await;
    let (b_id, b, b_key) = gw.new_agent("expiry-b", 0).await;
    let before = all_events(&gw, gw.operator_token(), 200).await;
    let after = before.last().and_then(|e| e["id"].as_i64()).expect("events so far");
    let invoice = common::invoice_expiring(&b, 1_000, 60).await;
    let hash = invoice.payment_hash.clone();
    // An invoice paid in time is never swept.
    let paid_hash = pay(&a, &b, 2_000).await;
    assert_eq!(b.invoice(&hash).await.expect("the invoice").status, coffer_client::InvoiceStatus::Open);

    // The sweep marks it expired and tells of it, once.
    gw.advance_clock(61_000).await;
    let events = all_events(&gw, gw.operator_token(), 200).await;
    let expired = events.iter().find(|e| e["type"] == "invoice.expired").expect("an invoice.expired event").clone();
    assert_eq!(
        (expired["agent_id"].as_str(), expired["data"]["payment_hash"].as_str()),
        (Some(b_id.as_str()), Some(hash.as_str()))
    );
    assert_eq!(expired["data"]["amount_msat"], 1_000);
    assert_eq!(gw.stored_invoice_status(&hash).as_deref(), Some("expired"));
    assert_eq!(gw.stored_invoice_status(&paid_hash).as_deref(), Some("paid"));
    let read = b.invoice(&hash).await.expect("the invoice");
    assert_eq!(read.status, coffer_client::InvoiceStatus::Expired);

    // Paying it now is refused, and moves nothing.
    let refused = gw.pay_raw(&a_key, &invoice.bolt11, "too late", Some("late-1")).await;
    refused.assert_problem(409, "invoice-expired");
    assert_eq!(a.wallet().await.expect("the wallet").balance_msat, 8_000);

    // More sweep rounds add nothing: exactly one event for it.
    for _ in 0..3 {
        gw.advance_clock(60_000).await;
    }
    let swept: Vec<Value> = all_events(&gw, gw.operator_token(), 200)
        .await
        .into_iter()
        .filter(|e| e["type"] == "invoice.expired")
        .collect();
    assert_eq!(swept, std::slice::from_ref(&expired), "one invoice.expired event, for the unpaid invoice only");
    assert_eq!(gw.events("invoice.expired").await.len(), 1);

    // Replayed by after=, to its agent and the operator only.
    let replay = page(&gw, &b_key, &format!("?after={after}&limit=200")).await;
    let of_b = replay.json["events"].as_array().expect("events");
    assert!(of_b.contains(&expired), "{of_b:#?}");
    let just_before = expired["id"].as_i64().expect("an id") - 1;
    let replay = page(&gw, gw.operator_token(), &format!("?after={just_before}&limit=1")).await;
    assert_eq!(replay.json["events"][0], expired);
    let of_a = all_events(&gw, &a_key, 200).await;
    assert!(of_a.iter().all(|e| e["type"] != "invoice.expired" && e["agent_id"] == a_id.as_str()), "{of_a:#?}");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}

/// Funding, chat settings and webhook subscriptions are changes too: each
/// writes its event, which the agent concerned sees, and no other agent.
#[tokio::test]
async fn settings_funding_and_subscriptions_are_events_of_their_agent() {
    // The webhook below names loopback, which the egress guard refuses
    // unless the operator allows it.
    let gw = Gateway::start_with_env(&[("COFFER_EGRESS_ALLOW", "127.0.0.1")]).await;
    let (a_id, _, a_key) = gw.new_agent("settings-a", 4_000).await;
    let (_, _, b_key) = gw.new_agent("settings-b", 0).await;
    let settings = serde_json::json!({"require_acknowledgment": true});
    let set = gw.put_chat_raw(gw.operator_token(), &a_id, &settings).await;
    assert_eq!(set.status, 200, "{set:?}");
    // A receiver that is never there: the webhook is only made and deleted.
    let hook = serde_json::json!({"url": "http://127.0.0.1:9/secret-token/hook"});
    let created = send(gw.request(Method::POST, "/v1/webhooks", Some(&a_key)).json(&hook)).await;
    assert_eq!(created.status, 201, "{created:?}");
    let hook_id = created.json["id"].as_str().expect("a webhook id");
    let deleted = send(gw.request(Method::DELETE, &format!("/v1/webhooks/{hook_id}"), Some(&a_key))).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");

    let of_a = all_events(&gw, &a_key, 200).await;
    let find = |kind: &str| of_a.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("no {kind}: {of_a:#?}"));
    assert_eq!(find("transfer.fund")["data"]["amount_msat"], 4_000);
    assert_eq!(find("chat.settings_updated")["data"]["settings"]["require_acknowledgment"], true);
    for kind in ["webhook.created", "webhook.deleted"] {
        let event = find(kind);
        assert_eq!(event["data"]["webhook_id"], hook_id);
        assert!(!event.to_string().contains("secret-token"), "the URL stays out of events: {event}");
    }
    // The new webhook starts at or before its own event (after it where
    // events are numbered as written; on PostgreSQL, numbered after commit,
    // before it: `webhook::is_own_creation` passes it over, which
    // tests/events_delivery.rs checks with a receiver).
    assert!(created.json["delivered_through"].as_i64() <= find("webhook.created")["id"].as_i64(), "{created:?}");
    let of_b = all_events(&gw, &b_key, 200).await;
    assert!(of_b.iter().all(|e| e["agent_id"] != a_id.as_str()), "{of_b:#?}");
    // The operator's mint is the operator's alone.
    assert!(of_a.iter().chain(&of_b).all(|e| e["type"] != "transfer.mint"));
}
