//! Live delivery of rooms (Server-Sent Events and WebSocket): the backlog
//! first, then live messages in order, with no gap and no duplicate; and
//! auto-pay, which settles requests as they are posted.

mod common;

use coffer_client::{InvoiceStatus, Message};
use common::{Gateway, SseReader, WsReader, sha256_hex};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SAT: u64 = 1_000;
const FUND: u64 = 1_000 * SAT;

/// A `message.posted` event's message.
#[track_caller]
fn posted(event: (String, Value)) -> Message {
    assert_eq!(event.0, "message.posted", "{event:?}");
    serde_json::from_value(event.1).expect("a message")
}

/// The same message as the store has it now (the view at the time it was
/// posted: an open request stays open in its `message.posted` event).
#[track_caller]
fn assert_same(event: &Message, stored: &Message) {
    let view =
        |m: &Message| (m.id, m.room_id.clone(), m.sender.clone(), m.kind.clone(), m.text.clone(), m.created_at.clone());
    assert_eq!(view(event), view(stored));
    assert_eq!(
        event.invoice.as_ref().map(|i| (&i.bolt11, &i.payment_hash)),
        stored.invoice.as_ref().map(|i| (&i.bolt11, &i.payment_hash))
    );
}

#[track_caller]
fn assert_invoice_paid(event: &(String, Value), stored: &Message, payer: &str) {
    assert_eq!(event.0, "invoice.paid", "{event:?}");
    let invoice = stored.invoice.as_ref().expect("a request");
    assert_eq!(event.1["payment_hash"].as_str(), Some(invoice.payment_hash.as_str()), "{event:?}");
    let receipt = stored.receipt.as_ref().expect("a receipt");
    assert_eq!(event.1["receipt"], serde_json::to_value(receipt).unwrap(), "the event's receipt is the stored one");
    assert_eq!((receipt.payer.as_str(), receipt.amount_msat), (payer, invoice.amount_msat));
    let preimage = hex::decode(&receipt.preimage).unwrap();
    assert_eq!(sha256_hex(&preimage), invoice.payment_hash);
}

#[tokio::test]
async fn a_watcher_gets_the_backlog_then_live_messages_and_payments() {
    let gw = Gateway::start().await;
    let (_, _, key_a) = gw.new_agent("a", 0).await;
    let (b, _, key_b) = gw.new_agent("b", FUND).await;
    let (x, _, key_x) = gw.new_agent("outsider", FUND).await;
    let room = gw.create_room(&key_a, "live", &[&b]).await.id;
    let quiet = gw.create_room(&key_b, "quiet", &[]).await.id;
    let mut sent = Vec::new();
    for text in ["before 1", "before 2", "before 3"] {
        sent.push(gw.post_text(&key_a, &room, text).await);
    }

    // SSE and WebSocket watchers, and one of another room.
    let mut sse = SseReader::connect(&gw, &key_b, &room, Some(0)).await.expect("a member streams its room");
    let mut ws = WsReader::connect(&gw, &key_b, &format!("/v1/rooms/{room}/ws?after=0")).await.expect("a WebSocket");
    let mut other = SseReader::connect(&gw, &key_b, &quiet, None).await.expect("a member streams its room");
    // The backlog, oldest first.
    for m in &sent {
        assert_same(&posted(sse.next().await), m);
        let frame = ws.next().await;
        assert_same(&posted((frame["type"].as_str().unwrap().to_owned(), frame["data"].clone())), m);
    }
    // Live messages, in order, whoever posts.
    sent.push(gw.post_text(&key_b, &room, "live 1").await);
    sent.push(gw.post_text(&key_a, &room, "live 2").await);
    let request = gw.post_request(&key_a, &room, 34 * SAT, "thirty-four", None).await;
    sent.push(request.clone());
    for m in &sent[3..] {
        let event = posted(sse.next().await);
        assert_same(&event, m);
        let frame = ws.next().await;
        let wsm = posted((frame["type"].as_str().unwrap().to_owned(), frame["data"].clone()));
        assert_same(&wsm, m);
    }

    // Paid in the room: `invoice.paid` with the receipt.
    let r = gw.pay_message_raw(&key_b, &room, request.id, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let stored = gw.message(&key_a, &room, request.id).await;
    assert_invoice_paid(&sse.next().await, &stored, &b);
    let frame = ws.next().await;
    assert_invoice_paid(&(frame["type"].as_str().unwrap().to_owned(), frame["data"].clone()), &stored, &b);

    // Paid outside the room, with the BOLT11: announced all the same.
    let second = gw.post_request(&key_a, &room, 2 * SAT, "two", None).await;
    assert_same(&posted(sse.next().await), &second);
    assert_same(
        &posted({
            let f = ws.next().await;
            (f["type"].as_str().unwrap().to_owned(), f["data"].clone())
        }),
        &second,
    );
    let r = gw.pay_raw(&key_x, &second.invoice.as_ref().unwrap().bolt11, "from outside", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let stored = gw.message(&key_a, &room, second.id).await;
    assert_invoice_paid(&sse.next().await, &stored, &x);
    let frame = ws.next().await;
    assert_invoice_paid(&(frame["type"].as_str().unwrap().to_owned(), frame["data"].clone()), &stored, &x);

    // Nothing of this room reached the other room's watcher: its first
    // event is its own room's message.
    let marker = gw.post_text(&key_b, &quiet, "quiet here").await;
    assert_same(&posted(other.next().await), &marker);
    // And the live room's watcher goes on with the next message.
    let last = gw.post_text(&key_a, &room, "the end").await;
    assert_same(&posted(sse.next().await), &last);
}

#[tokio::test]
async fn a_watcher_connecting_after_n_gets_only_later_messages() {
    let gw = Gateway::start().await;
    let (_, _, key_b) = gw.new_agent("b", 0).await;
    let (a, _, key_a) = gw.new_agent("a", 0).await;
    let room = gw.create_room(&key_b, "cursor", &[&a]).await.id;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(gw.post_text(&key_a, &room, &format!("m{i}")).await.id);
    }

    let mut sse = SseReader::connect(&gw, &key_b, &room, Some(ids[2])).await.unwrap();
    let mut ws = WsReader::connect(&gw, &key_b, &format!("/v1/rooms/{room}/ws?after={}", ids[2])).await.unwrap();
    assert_eq!(posted(sse.next().await).id, ids[3]);
    assert_eq!(posted(sse.next().await).id, ids[4]);
    assert_eq!(ws.next().await["data"]["id"].as_i64(), Some(ids[3]));
    assert_eq!(ws.next().await["data"]["id"].as_i64(), Some(ids[4]));
    // Caught up: the next event is the next message posted.
    let live = gw.post_text(&key_b, &room, "m5").await;
    assert_eq!(posted(sse.next().await).id, live.id);
    assert_eq!(ws.next().await["data"]["id"].as_i64(), Some(live.id));

    // After the last message: no backlog at all.
    let mut tail = SseReader::connect(&gw, &key_b, &room, Some(live.id)).await.unwrap();
    let next = gw.post_text(&key_a, &room, "m6").await;
    assert_eq!(posted(tail.next().await).id, next.id);
    // Without `after`: from the start.
    let mut all = SseReader::connect(&gw, &key_b, &room, None).await.unwrap();
    assert_eq!(posted(all.next().await).id, ids[0]);
    // A bad cursor is refused.
    let r =
        common::send(gw.request(reqwest::Method::GET, &format!("/v1/rooms/{room}/events?after=x"), Some(&key_b))).await;
    r.assert_problem(400, "malformed-request");
}

/// A watcher of either kind.
enum Watcher {
    Sse(SseReader),
    Ws(WsReader),
}

impl Watcher {
    async fn next(&mut self) -> (String, Value) {
        match self {
            Watcher::Sse(r) => r.next().await,
            Watcher::Ws(r) => {
                let frame = r.next().await;
                (frame["type"].as_str().expect("a frame type").to_owned(), frame["data"].clone())
            }
        }
    }

    /// Reads `message.posted` events until message `last_id`; returns their
    /// ids in the order received (other events are skipped).
    async fn ids_until(&mut self, last_id: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        loop {
            let (kind, data) = self.next().await;
            assert_ne!(kind, "reload", "the watcher fell behind");
            if kind != "message.posted" {
                continue;
            }
            let id = data["id"].as_i64().expect("a message id");
            ids.push(id);
            if id == last_id {
                return ids;
            }
        }
    }
}

/// What each watcher of [`watch_concurrent_posts`] received.
struct Received {
    label: String,
    ids: Vec<i64>,
}

/// Posters post concurrently while watchers (SSE and WebSocket in turn,
/// each with `after=0`) connect one after another, each once more messages
/// are in. Returns every stored message id, and what each watcher received
/// up to a last message posted once all were connected.
async fn watch_concurrent_posts() -> (Vec<i64>, Vec<Received>) {
    const POSTERS: usize = 4;
    const EACH: usize = 30;
    const WATCHERS: usize = 6;
    let gw = Gateway::start().await;
    let mut posters = Vec::new();
    for i in 0..POSTERS {
        posters.push(gw.new_agent(&format!("poster{i}"), 0).await);
    }
    let (w, _, key_w) = gw.new_agent("watcher", 0).await;
    let mut members: Vec<&str> = posters.iter().map(|(id, _, _)| id.as_str()).collect();
    members.push(&w);
    let room = gw.create_room(&posters[0].2, "crowd", &members).await.id;
    gw.post_text(&posters[0].2, &room, "before anyone watches").await;

    let count = AtomicUsize::new(0);
    let (gw_ref, room_ref, count_ref, key_ref) = (&gw, room.as_str(), &count, key_w.as_str());
    let posting = futures_util::future::join_all(posters.iter().enumerate().map(|(p, (_, _, key))| async move {
        for n in 0..EACH {
            gw_ref.post_text(key, room_ref, &format!("p{p} n{n}")).await;
            count_ref.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let connecting = async {
        let mut watchers = Vec::new();
        for k in 0..WATCHERS {
            let at_least = k * POSTERS * EACH / WATCHERS;
            while count_ref.load(Ordering::SeqCst) < at_least {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let watcher = if k % 2 == 0 {
                Watcher::Sse(SseReader::connect(gw_ref, key_ref, room_ref, Some(0)).await.expect("watching"))
            } else {
                let path = format!("/v1/rooms/{room_ref}/ws?after=0");
                Watcher::Ws(WsReader::connect(gw_ref, key_ref, &path).await.expect("watching"))
            };
            let kind = if k % 2 == 0 { "SSE" } else { "WebSocket" };
            let posted = count_ref.load(Ordering::SeqCst);
            watchers
                .push((format!("watcher {k} ({kind}, connected with {posted} of {} posted)", POSTERS * EACH), watcher));
        }
        watchers
    };
    let (_, mut watchers) = futures_util::future::join(posting, connecting).await;
    let end = gw.post_text(&posters[0].2, &room, "the end").await;

    let stored: Vec<i64> = gw.all_messages(&key_w, &room).await.iter().map(|m| m.id).collect();
    assert_eq!(stored.len(), 2 + POSTERS * EACH, "every post is stored");
    let mut received = Vec::new();
    for (label, watcher) in &mut watchers {
        received.push(Received { label: label.clone(), ids: watcher.ids_until(end.id).await });
    }
    (stored, received)
}

#[tokio::test]
async fn concurrent_posts_reach_watchers_without_duplicates_in_order() {
    let (_, received) = watch_concurrent_posts().await;
    let bad: Vec<String> = received
        .iter()
        .filter_map(|r| {
            let unique: BTreeSet<i64> = r.ids.iter().copied().collect();
            let out_of_order: Vec<(i64, i64)> =
                r.ids.windows(2).filter(|w| w[0] >= w[1]).map(|w| (w[0], w[1])).collect();
            let duplicates = r.ids.len() - unique.len();
            (duplicates > 0 || !out_of_order.is_empty())
                .then(|| format!("{}: {duplicates} duplicates, out of order {out_of_order:?}", r.label))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test]
async fn concurrent_posts_reach_watchers_without_gaps() {
    let (stored, received) = watch_concurrent_posts().await;
    let bad: Vec<String> = received
        .iter()
        .filter_map(|r| {
            let unique: BTreeSet<i64> = r.ids.iter().copied().collect();
            let missing: Vec<i64> = stored.iter().filter(|id| !unique.contains(id)).copied().collect();
            (!missing.is_empty())
                .then(|| format!("{}: received {} of {}, missing {missing:?}", r.label, unique.len(), stored.len()))
        })
        .collect();
    assert!(bad.is_empty(), "stored messages never delivered live: {bad:#?}");
}

#[tokio::test]
async fn auto_pay_pays_listed_requests_up_to_the_ceiling() {
    let gw = Gateway::start().await;
    let op = gw.operator_token();
    let (a, _, key_a) = gw.new_agent("seller", 0).await;
    let (b, b_client, key_b) = gw.new_agent("auto-payer", FUND).await;
    let (c, c_client, key_c) = gw.new_agent("bystander", FUND).await;
    let room = gw.create_room(&key_a, "auto", &[&b, &c]).await.id;

    // Settings are the operator's to set and read.
    let settings = json!({"auto_pay_from": [a], "auto_pay_max_msat": 50 * SAT});
    gw.put_chat_raw(&key_b, &b, &settings).await.assert_problem(403, "forbidden");
    let auto_pay = |v: &Value| (v["auto_pay_from"].clone(), v["auto_pay_max_msat"].clone());
    let r = gw.put_chat_raw(op, &b, &settings).await;
    assert_eq!((r.status, auto_pay(&r.json)), (200, auto_pay(&settings)), "{r:?}");
    let r = common::send(gw.request(reqwest::Method::GET, &format!("/v1/agents/{b}/chat"), Some(op))).await;
    assert_eq!((r.status, auto_pay(&r.json)), (200, auto_pay(&settings)), "{r:?}");
    let r = common::send(gw.request(reqwest::Method::GET, &format!("/v1/agents/{c}/chat"), Some(op))).await;
    assert_eq!((r.status, auto_pay(&r.json)), (200, (json!([]), json!(0))), "{r:?}");
    gw.put_chat_raw(op, "agt_nobody", &settings).await.assert_problem(404, "not-found");

    let mut sse = SseReader::connect(&gw, &key_c, &room, None).await.unwrap();

    // 21 sat from A: paid by B before the POST answers.
    let m = gw.post_request(&key_a, &room, 21 * SAT, "twenty-one", None).await;
    assert_eq!(m.invoice.as_ref().unwrap().status, InvoiceStatus::Paid, "auto-paid when the POST returns: {m:?}");
    let receipt = m.receipt.as_ref().expect("a receipt in the POST's answer");
    assert_eq!((receipt.payer.as_str(), receipt.amount_msat), (b.as_str(), 21 * SAT));
    let stored = gw.message(&key_c, &room, m.id).await;
    assert_eq!(stored.receipt.as_ref().map(|r| &r.preimage), Some(&receipt.preimage));
    let event = posted(sse.next().await);
    assert_eq!(event.id, m.id);
    assert_invoice_paid(&sse.next().await, &stored, &b);
    let balances = gw.balances().await;
    assert_eq!((balances[&a], balances[&b], balances[&c]), (21 * SAT, FUND - 21 * SAT, FUND));
    assert_eq!(gw.payment_count(&b_client).await, 1);
    // Paying it by hand now finds it paid.
    gw.pay_message_raw(&key_c, &room, m.id, None).await.assert_problem(409, "invoice-already-paid");

    // At the ceiling: paid; one msat over: not.
    let at = gw.post_request(&key_a, &room, 50 * SAT, "fifty", None).await;
    assert_eq!(at.receipt.as_ref().map(|r| (r.payer.as_str(), r.amount_msat)), Some((b.as_str(), 50 * SAT)), "{at:?}");
    let over = gw.post_request(&key_a, &room, 50 * SAT + 1, "fifty and a bit", None).await;
    assert_eq!(over.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{over:?}");
    let big = gw.post_request(&key_a, &room, 100 * SAT, "a hundred", None).await;
    assert_eq!(big.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{big:?}");
    // Not from a listed agent: not paid.
    let from_c = gw.post_request(&key_c, &room, SAT, "from c", None).await;
    assert_eq!(from_c.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{from_c:?}");
    // Texts pay nothing.
    gw.post_text(&key_a, &room, "thanks").await;

    let balances = gw.balances().await;
    assert_eq!((balances[&a], balances[&b], balances[&c]), (71 * SAT, FUND - 71 * SAT, FUND));
    assert_eq!(gw.payment_count(&b_client).await, 2);
    assert_eq!(gw.payment_count(&c_client).await, 0);
    for id in [over.id, big.id, from_c.id] {
        let now = gw.message(&key_a, &room, id).await;
        assert_eq!(now.invoice.unwrap().status, InvoiceStatus::Open, "message {id}");
    }
    // Still open, so payable by hand.
    assert_eq!(gw.pay_message_raw(&key_b, &room, big.id, None).await.status, 200);
    assert_eq!(gw.balances().await[&b], FUND - 171 * SAT);

    // In a room B is not in, A's requests are not B's to pay.
    let elsewhere = gw.create_room(&key_a, "without b", &[&c]).await.id;
    let m = gw.post_request(&key_a, &elsewhere, SAT, "not for b", None).await;
    assert_eq!(m.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{m:?}");
    assert_eq!(gw.balances().await[&b], FUND - 171 * SAT);
}

#[tokio::test]
async fn an_auto_pay_the_policy_denies_leaves_the_request_open() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (a, _, key_a) = gw.new_agent("seller", 0).await;
    let (b, b_client, _) = gw.new_agent("thrifty", FUND).await;
    let (c, c_client, key_c) = gw.new_agent("manual", FUND).await;
    let room = gw.create_room(&key_a, "denied", &[&b, &c]).await.id;
    let settings = json!({"auto_pay_from": [a], "auto_pay_max_msat": 50 * SAT});
    assert_eq!(gw.put_chat_raw(gw.operator_token(), &b, &settings).await.status, 200);
    op.set_policy(&b, &json!({"budgets": [{"limit_msat": 10 * SAT, "window": "1h", "kind": "rolling"}]}))
        .await
        .unwrap();

    // Over B's budget: not paid, nothing moves.
    let m = gw.post_request(&key_a, &room, 21 * SAT, "over budget", None).await;
    assert_eq!(m.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{m:?}");
    assert!(m.receipt.is_none(), "{m:?}");
    assert_eq!(gw.message(&key_c, &room, m.id).await.invoice.unwrap().status, InvoiceStatus::Open);
    assert_eq!(gw.balances().await[&b], FUND);
    assert_eq!(gw.payment_count(&b_client).await, 0);
    // The refusal is on the record, as any denial.
    let denials = gw.audit_all(&format!("agent_id={b}&action=payment.denied")).await;
    assert_eq!(denials.len(), 1, "{denials:?}");
    // Within it: paid.
    let small = gw.post_request(&key_a, &room, 10 * SAT, "within budget", None).await;
    assert_eq!(small.receipt.as_ref().map(|r| r.payer.as_str()), Some(b.as_str()), "{small:?}");
    assert_eq!(gw.balances().await[&b], FUND - 10 * SAT);

    // A frozen auto-payer pays nothing either.
    op.set_policy(&b, &json!({})).await.unwrap();
    op.freeze(&b, Some("stop")).await.unwrap();
    let frozen = gw.post_request(&key_a, &room, 5 * SAT, "while frozen", None).await;
    assert_eq!(frozen.invoice.as_ref().unwrap().status, InvoiceStatus::Open, "{frozen:?}");
    assert_eq!(gw.balances().await[&b], FUND - 10 * SAT);

    // When one auto-payer is refused, another one listed pays.
    assert_eq!(gw.put_chat_raw(gw.operator_token(), &c, &settings).await.status, 200);
    let m2 = gw.post_request(&key_a, &room, 7 * SAT, "someone pays", None).await;
    assert_eq!(m2.receipt.as_ref().map(|r| (r.payer.as_str(), r.amount_msat)), Some((c.as_str(), 7 * SAT)), "{m2:?}");
    // The requests left open are paid by hand.
    assert_eq!(gw.pay_message_raw(&key_c, &room, m.id, None).await.status, 200);
    let balances = gw.balances().await;
    assert_eq!((balances[&a], balances[&b], balances[&c]), (38 * SAT, FUND - 10 * SAT, FUND - 28 * SAT));
    assert_eq!(gw.payment_count(&b_client).await, 1);
    assert_eq!(gw.payment_count(&c_client).await, 2);
}
