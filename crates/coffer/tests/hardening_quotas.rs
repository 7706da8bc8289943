//! Quotas and write rates: each bound answers 429 with `Retry-After` and a
//! problem naming it, nothing is created past it (under concurrency too),
//! `/metrics` counts the hits, and an agent that keeps hitting limits trips
//! its breaker. A sub-agent past the deepest tree payments walk is refused
//! with a 4xx that retrying cannot lift.

mod common;

use common::{Gateway, Reply, send};
use reqwest::Method;
use serde_json::{Value, json};

/// Asserts a `limit-exceeded` problem naming `limit`, with `Retry-After`
/// equal to its `retry_after_secs`; returns the wait.
#[track_caller]
fn assert_limit(reply: &Reply, limit: &str) -> u64 {
    let problem = reply.assert_problem(429, "limit-exceeded");
    assert_eq!(problem["limit"].as_str(), Some(limit), "{reply:?}");
    let secs = problem["retry_after_secs"].as_u64().unwrap_or_else(|| panic!("no retry_after_secs: {reply:?}"));
    let header = reply.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(header, Some(secs), "{reply:?}");
    assert!(secs >= 1, "{reply:?}");
    secs
}

async fn post(gw: &Gateway, secret: &str, path: &str, body: Value) -> Reply {
    send(gw.request(Method::POST, path, Some(secret)).json(&body)).await
}

async fn limit_hits(gw: &Gateway, limit: &str) -> u64 {
    let text = send(gw.request(Method::GET, "/metrics", None)).await.text;
    let line = format!("coffer_limits_hit_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} on /metrics"))
}

async fn open_invoices(gw: &Gateway, secret: &str) -> usize {
    let r = send(gw.request(Method::GET, "/v1/invoices?limit=200", Some(secret))).await;
    r.json["items"].as_array().expect("a page of invoices").iter().filter(|i| i["status"] == "open").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_invoices_stop_at_the_bound_even_when_created_at_once() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_INVOICES_OPEN_PER_AGENT", "10")]).await;
    let (_, _, key) = gw.new_agent("busy", 0).await;
    let (_, _, other) = gw.new_agent("other", 0).await;
    let requests = (0..32).map(|i| post(&gw, &key, "/v1/invoices", json!({"amount_msat": 1_000 + i})));
    let replies = futures_util::future::join_all(requests).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_limit(r, "invoices_open_per_agent");
    }
    assert_eq!(created, 10, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(open_invoices(&gw, &key).await, 10);
    assert_eq!(limit_hits(&gw, "invoices_open_per_agent").await, 22);
    // A payment request in a room is an open invoice too.
    let room = gw.create_room_raw(&key, "shop", &[]).await.json["id"].as_str().expect("a room").to_owned();
    let r =
        post(&gw, &key, &format!("/v1/rooms/{room}/messages"), json!({"payment_request": {"amount_msat": 5}})).await;
    assert_limit(&r, "invoices_open_per_agent");
    assert_eq!(open_invoices(&gw, &key).await, 10);
    // Another agent's bound is its own.
    assert_eq!(post(&gw, &other, "/v1/invoices", json!({"amount_msat": 1})).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_holds_stop_at_the_bound() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_HOLDS_PENDING_PER_AGENT", "2")]).await;
    let (payer_id, payer, key) = gw.new_agent("payer", 100_000).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    gw.operator().set_policy(&payer_id, &json!({"approval_above_msat": 1})).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let inv = common::invoice(&seller, 1_000).await;
        let r = gw.pay_raw(&key, &inv.bolt11, "held", Some(&format!("hold-{i}"))).await;
        statuses.push(r.status);
        if i == 2 {
            assert_limit(&r, "holds_pending_per_agent");
        }
    }
    assert_eq!(statuses, [202, 202, 429]);
    assert_eq!(gw.operator().approvals().await.unwrap().len(), 2);
    // Only the two holds are reserved.
    assert_eq!(payer.wallet().await.unwrap().available_msat, 100_000 - 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_holds_an_invoice_once_at_a_time() {
    let gw = Gateway::start().await;
    let (payer_id, payer, key) = gw.new_agent("payer", 100_000).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    let (second_id, second, second_key) = gw.new_agent("second", 100_000).await;
    for agent in [&payer_id, &second_id] {
        gw.operator().set_policy(agent, &json!({"approval_above_msat": 1})).await.unwrap();
    }
    let inv = common::invoice(&seller, 1_000).await;
    assert_eq!(gw.pay_raw(&key, &inv.bolt11, "held", Some("first")).await.status, 202);
    // The same payer, under another idempotency key, does not reserve the
    // money again for the invoice that can be paid once.
    gw.pay_raw(&key, &inv.bolt11, "again", Some("second")).await.assert_problem(409, "payment-held");
    assert_eq!(payer.wallet().await.unwrap().available_msat, 100_000 - 1_000);
    // Another payer's hold is its own: a hold does not lock the invoice.
    assert_eq!(gw.pay_raw(&second_key, &inv.bolt11, "mine", Some("third")).await.status, 202);
    assert_eq!(second.wallet().await.unwrap().available_msat, 100_000 - 1_000);
    assert_eq!(gw.operator().approvals().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_per_agent_and_members_per_room_are_bounded_and_rooms_can_be_left_or_refused() {
    let gw =
        Gateway::start_with_env(&[("COFFER_LIMIT_ROOMS_PER_AGENT", "2"), ("COFFER_LIMIT_ROOM_MEMBERS", "3")]).await;
    let (_, _, a) = gw.new_agent("a", 0).await;
    let (b_id, _, b) = gw.new_agent("b", 0).await;
    let (c_id, _, c) = gw.new_agent("c", 0).await;
    let (d_id, _, _) = gw.new_agent("d", 0).await;
    let (e_id, _, _) = gw.new_agent("e", 0).await;
    let (f_id, _, _) = gw.new_agent("f", 0).await;
    let rooms_of = |secret: String| {
        let gw = &gw;
        async move {
            let r = send(gw.request(Method::GET, "/v1/rooms", Some(&secret))).await;
            r.json["items"].as_array().expect("a page of rooms").len()
        }
    };
    let first = gw.create_room_raw(&a, "one", &[&b_id]).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(gw.create_room_raw(&a, "two", &[&b_id]).await.status, 201);
    // B is in two rooms: nobody puts it in a third.
    assert_limit(&gw.create_room_raw(&c, "three", &[&b_id]).await, "rooms_per_agent");
    assert_eq!(rooms_of(c.clone()).await, 0, "nothing was created");
    // C's room fills up at three members.
    let room = gw.create_room_raw(&c, "full", &[&d_id]).await.json["id"].as_str().unwrap().to_owned();
    let add = |secret: String, agent: String| {
        let (gw, room) = (&gw, room.clone());
        async move { post(gw, &secret, &format!("/v1/rooms/{room}/members"), json!({"agent_id": agent})).await }
    };
    assert_eq!(add(c.clone(), e_id.clone()).await.status, 200);
    assert_limit(&add(c.clone(), f_id.clone()).await, "room_members");
    assert_eq!(limit_hits(&gw, "room_members").await, 1);
    // B leaves a room, and may then be added; D refuses rooms.
    let one = first.json["id"].as_str().unwrap();
    let r = send(gw.request(Method::DELETE, &format!("/v1/rooms/{one}/members/{b_id}"), Some(&b))).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(rooms_of(b.clone()).await, 1);
    let r = send(gw.request(Method::DELETE, &format!("/v1/rooms/{room}/members/{d_id}"), Some(&c))).await;
    assert_eq!(r.status, 204, "the creator removes a member: {r:?}");
    assert_eq!(add(c.clone(), b_id.clone()).await.status, 200);
    let settings = json!({"accept_rooms": "nobody"});
    let r =
        send(gw.request(Method::PUT, &format!("/v1/agents/{d_id}/chat"), Some(gw.operator_token())).json(&settings))
            .await;
    assert_eq!(r.status, 200, "{r:?}");
    gw.create_room_raw(&c, "refused", &[&d_id]).await.assert_problem(403, "forbidden");
    // A member removes nobody but itself.
    let r = send(gw.request(Method::DELETE, &format!("/v1/rooms/{room}/members/{c_id}"), Some(&a))).await;
    r.assert_problem(403, "forbidden");
    // The list is paged.
    let r = send(gw.request(Method::GET, "/v1/rooms?limit=1", Some(&a))).await;
    let cursor = r.json["next_cursor"].as_str().expect("a next page").to_owned();
    let r = send(gw.request(Method::GET, &format!("/v1/rooms?limit=1&cursor={cursor}"), Some(&a))).await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1), "{r:?}");
    assert_ne!(r.json["items"][0]["id"].as_str(), Some(cursor.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_takes_so_many_messages_a_minute() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_ROOM_MESSAGES_PER_MINUTE", "5")]).await;
    let (_, _, a) = gw.new_agent("a", 0).await;
    let room = gw.create_room_raw(&a, "chatty", &[]).await.json["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/rooms/{room}/messages");
    for i in 0..5 {
        assert_eq!(post(&gw, &a, &path, json!({"text": format!("hello {i}")})).await.status, 201);
    }
    let secs = assert_limit(&post(&gw, &a, &path, json!({"text": "one too many"})).await, "room_messages_per_minute");
    assert!(secs <= 60, "{secs}");
    assert_eq!(gw.all_messages(&a, &room).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subagents_are_bounded_per_parent_and_in_depth() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_SUBAGENTS_PER_PARENT", "2")]).await;
    let op = gw.operator();
    let create = |secret: String, name: &'static str| {
        let gw = &gw;
        async move {
            let body = json!({"name": name, "can_create_subagents": true});
            send(gw.request(Method::POST, "/v1/agents", Some(&secret)).json(&body)).await
        }
    };
    let top = create(gw.operator_token().to_owned(), "level 1").await;
    let mut secret = top.json["key"].as_str().unwrap().to_owned();
    assert_eq!(create(secret.clone(), "sibling").await.status, 201);
    // Levels 2 to 8: the deepest tree a payment walks (the default bound).
    let mut ids = vec![top.json["id"].as_str().unwrap().to_owned()];
    for _ in 2..=8 {
        let child = create(secret.clone(), "deeper").await;
        assert_eq!(child.status, 201, "{child:?}");
        secret = child.json["key"].as_str().unwrap().to_owned();
        ids.push(child.json["id"].as_str().unwrap().to_owned());
    }
    assert_limit(&create(ids_key(&top), "third child").await, "subagents_per_parent");
    let r = create(secret.clone(), "level 9").await;
    let problem = r.assert_problem(422, "limit-exceeded");
    assert_eq!(problem["limit"].as_str(), Some("tree_depth"), "{r:?}");
    assert!(r.headers.get("retry-after").is_none(), "waiting cannot lift it: {r:?}");
    assert_eq!(limit_hits(&gw, "tree_depth").await, 1);
    assert_eq!(op.agents().await.unwrap().len(), 9, "level 1, its sibling child and levels 2 to 8");
    // The deepest agent pays: funds sent down the tree are never stuck.
    let deepest = ids.last().unwrap();
    op.mint(10_000).await.unwrap();
    op.fund_agent(deepest, 10_000).await.unwrap();
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    let inv = common::invoice(&seller, 1_000).await;
    let r = gw.pay_raw(&secret, &inv.bolt11, "from the bottom", None).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn ids_key(created: &Reply) -> String {
    created.json["key"].as_str().expect("a key").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_writing_too_fast_is_refused_and_hitting_limits_trips_the_breaker() {
    let gw = Gateway::start_with_env(&[
        ("COFFER_LIMIT_WRITES_PER_SECOND_PER_KEY", "1"),
        ("COFFER_LIMIT_LIMIT_HITS_PER_BREAKER_DENIAL", "2"),
    ])
    .await;
    let (id, agent, key) = gw.new_agent("hasty", 10_000).await;
    let op = gw.operator();
    op.set_policy(&id, &json!({"breaker": {"max_denials": 2, "window": "1m"}})).await.unwrap();
    let mut refused = 0;
    // Each pass is far quicker than a second; a refill between two passes
    // only makes the loop run once more.
    for _ in 0..1_000 {
        let r = post(&gw, &key, "/v1/invoices", json!({"amount_msat": 1})).await;
        if r.status != 201 {
            assert_limit(&r, "writes_per_second_per_key");
            refused += 1;
        }
        if refused == 6 {
            break;
        }
    }
    assert_eq!(refused, 6, "a key writing as fast as it can was refused");
    // Reads are not writes.
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 10_000);
    let a = op.agent(&id).await.unwrap();
    assert!(a.frozen, "six limit hits are three denials, one past max_denials: {a:?}");
    assert!(a.frozen_reason.unwrap_or_default().contains("too-many-denials"));
    let tripped = gw.events("breaker.tripped").await;
    assert_eq!(tripped.len(), 1, "{tripped:?}");
    assert_eq!(tripped[0].0.as_deref(), Some(id.as_str()));
    assert!(limit_hits(&gw, "writes_per_second_per_key").await >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_of_one_agent_share_its_write_rate() {
    let gw = Gateway::start_with_env(&[("COFFER_LIMIT_WRITES_PER_SECOND_PER_AGENT", "2")]).await;
    let (id, _, key) = gw.new_agent("two keys", 0).await;
    let second = gw.operator().create_key(&id, coffer_client::Scope::Receive).await.unwrap().key;
    let (mut created, mut refused) = (0, false);
    for _ in 0..1_000 {
        let (first, other) = tokio::join!(
            post(&gw, &key, "/v1/invoices", json!({"amount_msat": 1})),
            post(&gw, &second, "/v1/invoices", json!({"amount_msat": 1}))
        );
        let over: Vec<_> = [&first, &other].into_iter().filter(|r| r.status != 201).collect();
        created += 2 - over.len();
        refused = !over.is_empty();
        if let Some(r) = over.first() {
            assert_limit(r, "writes_per_second_per_agent");
            break;
        }
    }
    assert!(refused, "two keys writing as fast as they can were refused");
    assert!(created >= 2, "the burst is one second's worth: {created}");
    assert_eq!(open_invoices(&gw, &key).await, created);
}
