//! Chat rooms: who is in them, what they say and in which order, and that
//! only members (and the operator) get in.

mod common;

use coffer_client::Room;
use common::{Gateway, SseReader, WsReader, send};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

fn member_set(room: &Room) -> BTreeSet<&str> {
    room.members.iter().map(String::as_str).collect()
}

async fn rooms_of(gw: &Gateway, secret: &str) -> BTreeSet<String> {
    let r = send(gw.request(Method::GET, "/v1/rooms", Some(secret))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rooms: coffer_client::Page<Room> = serde_json::from_value(r.json).expect("a page of rooms");
    rooms.items.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn a_room_is_created_with_its_members_and_listed_for_them() {
    let gw = Gateway::start().await;
    let op = gw.operator_token();
    let (a, _, key_a) = gw.new_agent("a", 0).await;
    let (b, _, key_b) = gw.new_agent("b", 0).await;
    let (_c, _, key_c) = gw.new_agent("c", 0).await;

    // By the operator: it is a member as `operator`; duplicates count once.
    let r = gw.create_room_raw(op, "  ops  ", &[&a, &b, &a]).await;
    assert_eq!(r.status, 201, "{r:?}");
    let ops: Room = serde_json::from_value(r.json).unwrap();
    assert!(ops.id.starts_with("room_"), "{ops:?}");
    assert_eq!((ops.name.as_str(), ops.created_by.as_str()), ("ops", "operator"));
    assert_eq!(ops.members.len(), 3, "{ops:?}");
    assert_eq!(member_set(&ops), BTreeSet::from(["operator", a.as_str(), b.as_str()]));

    // By an agent: the creator is a member by its id, listed or not.
    let pair = gw.create_room(&key_a, "pair", &[&b]).await;
    assert_eq!(pair.created_by, a);
    assert_eq!(member_set(&pair), BTreeSet::from([a.as_str(), b.as_str()]));
    let solo = gw.create_room(&key_b, "solo", &[&b]).await;
    assert_eq!(solo.members, std::slice::from_ref(&b));

    // Each agent lists its rooms; the operator lists every room.
    assert_eq!(rooms_of(&gw, &key_a).await, BTreeSet::from([ops.id.clone(), pair.id.clone()]));
    assert_eq!(rooms_of(&gw, &key_b).await, BTreeSet::from([ops.id.clone(), pair.id.clone(), solo.id.clone()]));
    assert_eq!(rooms_of(&gw, &key_c).await, BTreeSet::new());
    assert_eq!(rooms_of(&gw, op).await, BTreeSet::from([ops.id.clone(), pair.id.clone(), solo.id.clone()]));

    // Refused: an unknown member, a bad name, no key. Nothing is created.
    gw.create_room_raw(op, "ghosts", &[&a, "agt_nobody"]).await.assert_problem(404, "not-found");
    gw.create_room_raw(&key_a, "", &[]).await.assert_problem(400, "invalid-field");
    gw.create_room_raw(&key_a, &"x".repeat(65), &[]).await.assert_problem(400, "invalid-field");
    let r = send(gw.request(Method::POST, "/v1/rooms", None).json(&json!({"name": "anon"}))).await;
    r.assert_problem(401, "unauthorized");
    assert_eq!(rooms_of(&gw, op).await.len(), 3);
}

#[tokio::test]
async fn text_messages_are_kept_in_order_and_paged_with_after() {
    let gw = Gateway::start().await;
    let (a, _, key_a) = gw.new_agent("a", 0).await;
    let (b, _, key_b) = gw.new_agent("b", 0).await;
    let room = gw.create_room(&key_a, "talk", &[&b]).await.id;
    let other = gw.create_room(&key_a, "elsewhere", &[]).await.id;

    let mut posted = Vec::new();
    for i in 0..7 {
        let (sender, key) = if i % 2 == 0 { (&a, &key_a) } else { (&b, &key_b) };
        let m = gw.post_text(key, &room, &format!("line {i}")).await;
        assert_eq!((m.sender.as_str(), m.kind.as_str(), m.room_id.as_str()), (sender.as_str(), "text", room.as_str()));
        assert!(m.invoice.is_none() && m.receipt.is_none(), "{m:?}");
        posted.push(m);
        // Another room's messages interleave, and never show here.
        gw.post_text(&key_a, &other, &format!("aside {i}")).await;
    }
    assert!(posted.windows(2).all(|w| w[0].id < w[1].id), "ids increase: {posted:?}");

    let all = gw.all_messages(&key_b, &room).await;
    let seen: Vec<(i64, &str, &str)> = all.iter().map(|m| (m.id, m.sender.as_str(), m.text.as_str())).collect();
    let want: Vec<(i64, &str, &str)> = posted.iter().map(|m| (m.id, m.sender.as_str(), m.text.as_str())).collect();
    assert_eq!(seen, want);
    assert_eq!(all[3].text, "line 3");
    assert_eq!(all[0].created_at, posted[0].created_at);

    // Pages: `after` is exclusive, `limit` bounds, oldest first.
    let ids = |page: Vec<coffer_client::Message>| page.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let p = |i: usize| posted[i].id;
    assert_eq!(ids(gw.messages_page(&key_a, &room, 0, 3).await), [p(0), p(1), p(2)]);
    assert_eq!(ids(gw.messages_page(&key_a, &room, p(2), 3).await), [p(3), p(4), p(5)]);
    assert_eq!(ids(gw.messages_page(&key_a, &room, p(5), 3).await), [p(6)]);
    assert_eq!(ids(gw.messages_page(&key_a, &room, p(6), 3).await), Vec::<i64>::new());
    // An id of the other room in between is no obstacle.
    assert_eq!(ids(gw.messages_page(&key_a, &room, p(3) + 1, 2).await), [p(4), p(5)]);
    let r = gw.messages_raw(&key_a, &room, "").await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(7), "{r:?}");
    gw.messages_raw(&key_a, &room, "after=abc").await.assert_problem(400, "malformed-request");
    gw.messages_raw(&key_a, &room, "before=3").await.assert_problem(400, "malformed-request");

    // Bad messages are refused and not kept.
    let bad = [
        json!({}),
        json!({"text": ""}),
        json!({"text": "x".repeat(4_097)}),
        json!({"text": "both", "payment_request": {"amount_msat": 1_000}}),
    ];
    for body in bad {
        gw.post_raw(&key_a, &room, &body).await.assert_problem(400, "invalid-field");
    }
    gw.post_raw(&key_a, &room, &json!({"txt": "typo"})).await.assert_problem(400, "malformed-request");
    let longest = gw.post_text(&key_a, &room, &"x".repeat(4_096)).await;
    assert_eq!(longest.text.len(), 4_096);
    let all = gw.all_messages(&key_a, &room).await;
    assert_eq!(all.len(), 8);
    assert_eq!(all.last().unwrap().id, longest.id);
}

#[tokio::test]
async fn membership_is_enforced_on_every_room_route() {
    let gw = Gateway::start().await;
    let op = gw.operator_token();
    let (a, _, key_a) = gw.new_agent("a", 0).await;
    let (b, _, key_b) = gw.new_agent("b", 10_000).await;
    let (c, _, key_c) = gw.new_agent("outsider", 10_000).await;
    let room = gw.create_room(&key_a, "private", &[&b]).await.id;
    let text = gw.post_text(&key_a, &room, "members only").await;
    let request = gw.post_request(&key_a, &room, 1_000, "for members", None).await;

    // The outsider: 403 everywhere, and nothing changes.
    gw.messages_raw(&key_c, &room, "").await.assert_problem(403, "forbidden");
    gw.messages_raw(&key_c, &room, &format!("after={}", text.id)).await.assert_problem(403, "forbidden");
    gw.post_raw(&key_c, &room, &json!({"text": "let me in"})).await.assert_problem(403, "forbidden");
    let body = json!({"payment_request": {"amount_msat": 500, "memo": "pay me"}});
    gw.post_raw(&key_c, &room, &body).await.assert_problem(403, "forbidden");
    gw.pay_message_raw(&key_c, &room, request.id, None).await.assert_problem(403, "forbidden");
    gw.pay_message_raw(&key_c, &room, request.id, Some("k")).await.assert_problem(403, "forbidden");
    gw.add_member_raw(&key_c, &room, &c).await.assert_problem(403, "forbidden");
    match SseReader::connect(&gw, &key_c, &room, Some(0)).await {
        Ok(_) => panic!("an outsider streams the room's events"),
        Err(r) => {
            r.assert_problem(403, "forbidden");
        }
    }
    match WsReader::connect(&gw, &key_c, &format!("/v1/rooms/{room}/ws")).await {
        Ok(_) => panic!("an outsider opens the room's WebSocket"),
        Err((status, answer)) => {
            assert_eq!(status, 403, "{answer}");
            assert!(answer.contains("\"code\":\"forbidden\""), "{answer}");
        }
    }
    assert!(!rooms_of(&gw, &key_c).await.contains(&room));
    let all = gw.all_messages(&key_a, &room).await;
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), [text.id, request.id]);
    assert_eq!(all[1].invoice.as_ref().unwrap().status, coffer_client::InvoiceStatus::Open);
    let balances = gw.balances().await;
    assert_eq!((balances[&a], balances[&b], balances[&c]), (0, 10_000, 10_000));
    let r = send(gw.request(Method::GET, "/v1/rooms", Some(op))).await;
    let rooms: coffer_client::Page<Room> = serde_json::from_value(r.json).unwrap();
    let private = rooms.items.iter().find(|r| r.id == room).expect("the room is listed for the operator");
    assert_eq!(member_set(private), BTreeSet::from([a.as_str(), b.as_str()]), "the outsider was not added");

    // The operator is not a member, yet reads and watches any room.
    let seen = gw.all_messages(op, &room).await;
    assert_eq!(seen.iter().map(|m| m.id).collect::<Vec<_>>(), [text.id, request.id]);
    let mut sse = SseReader::connect(&gw, op, &room, Some(0)).await.expect("the operator streams any room");
    let (kind, data) = sse.next().await;
    assert_eq!((kind.as_str(), data["id"].as_i64()), ("message.posted", Some(text.id)));
    let mut ws = WsReader::connect(&gw, op, &format!("/v1/rooms/{room}/ws?after={}", text.id))
        .await
        .expect("the operator opens any room's WebSocket");
    let frame = ws.next().await;
    assert_eq!((frame["type"].as_str(), frame["data"]["id"].as_i64()), (Some("message.posted"), Some(request.id)));
    // The operator cannot pay (it has no wallet) and posts no request.
    gw.pay_message_raw(op, &room, request.id, None).await.assert_problem(403, "forbidden");
    gw.post_raw(op, &room, &json!({"payment_request": {"amount_msat": 500}})).await.assert_problem(403, "forbidden");

    // No key: 401. An unknown room: 404, for members and the operator.
    let r = send(gw.request(Method::GET, &format!("/v1/rooms/{room}/messages"), None)).await;
    r.assert_problem(401, "unauthorized");
    for secret in [key_a.as_str(), op] {
        let nowhere = "room_doesnotexist";
        gw.messages_raw(secret, nowhere, "").await.assert_problem(404, "not-found");
        gw.post_raw(secret, nowhere, &json!({"text": "hello?"})).await.assert_problem(404, "not-found");
        gw.add_member_raw(secret, nowhere, &b).await.assert_problem(404, "not-found");
        match SseReader::connect(&gw, secret, nowhere, None).await {
            Ok(_) => panic!("a stream of an unknown room"),
            Err(r) => {
                r.assert_problem(404, "not-found");
            }
        }
    }
    gw.pay_message_raw(&key_b, "room_doesnotexist", request.id, None).await.assert_problem(404, "not-found");
    // A member paying a message that is not there, or not a request.
    gw.pay_message_raw(&key_b, &room, request.id + 1_000, None).await.assert_problem(404, "not-found");
    gw.pay_message_raw(&key_b, &room, text.id, None).await.assert_problem(400, "invalid-field");
    let balances = gw.balances().await;
    assert_eq!((balances[&a], balances[&b], balances[&c]), (0, 10_000, 10_000));
}

#[tokio::test]
async fn a_new_member_reads_the_history() {
    let gw = Gateway::start().await;
    let (a, _, key_a) = gw.new_agent("a", 0).await;
    let (b, _, key_b) = gw.new_agent("b", 0).await;
    let (c, _, key_c) = gw.new_agent("c", 0).await;
    let room = gw.create_room(&key_a, "history", &[&b]).await.id;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(gw.post_text(&key_a, &room, text).await.id);
    }
    gw.messages_raw(&key_c, &room, "").await.assert_problem(403, "forbidden");

    // A member (not the creator) adds C.
    let r = gw.add_member_raw(&key_b, &room, &c).await;
    assert_eq!(r.status, 200, "{r:?}");
    let updated: Room = serde_json::from_value(r.json).unwrap();
    assert_eq!(member_set(&updated), BTreeSet::from([a.as_str(), b.as_str(), c.as_str()]));
    assert_eq!(updated.members.len(), 3);

    let history = gw.all_messages(&key_c, &room).await;
    let seen: Vec<(i64, &str)> = history.iter().map(|m| (m.id, m.text.as_str())).collect();
    assert_eq!(seen, [(ids[0], "one"), (ids[1], "two"), (ids[2], "three")]);
    assert!(rooms_of(&gw, &key_c).await.contains(&room));
    let reply = gw.post_text(&key_c, &room, "hello all").await;
    assert_eq!(reply.sender, c);
    assert_eq!(gw.all_messages(&key_a, &room).await.len(), 4);

    // Adding again changes nothing; an unknown agent is refused.
    let r = gw.add_member_raw(&key_a, &room, &c).await;
    assert_eq!(r.status, 200, "{r:?}");
    let again: Room = serde_json::from_value(r.json).unwrap();
    assert_eq!(again.members.len(), 3, "{again:?}");
    gw.add_member_raw(&key_a, &room, "agt_nobody").await.assert_problem(404, "not-found");
    // The operator adds members to any room.
    let (d, _, key_d) = gw.new_agent("d", 0).await;
    let r = gw.add_member_raw(gw.operator_token(), &room, &d).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.all_messages(&key_d, &room).await.len(), 4);
}

#[tokio::test]
async fn concurrent_posts_are_all_kept_once_in_each_senders_order() {
    const SENDERS: usize = 5;
    const EACH: usize = 10;
    let gw = Gateway::start().await;
    let mut agents = Vec::new();
    for i in 0..SENDERS {
        agents.push(gw.new_agent(&format!("sender{i}"), 0).await);
    }
    let others: Vec<&str> = agents[1..].iter().map(|(id, _, _)| id.as_str()).collect();
    let room = gw.create_room(&agents[0].2, "busy", &others).await.id;

    // Each sender posts its messages one after the other; the senders run
    // at the same time.
    let gw_ref = &gw;
    let room_ref = room.as_str();
    let answers = futures_util::future::join_all(agents.iter().enumerate().map(|(s, (_, _, key))| async move {
        let mut ids = Vec::with_capacity(EACH);
        for n in 0..EACH {
            ids.push(gw_ref.post_text(key, room_ref, &format!("s{s} n{n}")).await.id);
        }
        ids
    }))
    .await;

    let all = gw.all_messages(&agents[0].2, &room).await;
    assert_eq!(all.len(), SENDERS * EACH, "every message once: {all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids strictly increase");
    let texts: BTreeSet<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), SENDERS * EACH, "no duplicate text");
    let mut by_sender: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for m in &all {
        by_sender.entry(m.sender.as_str()).or_default().push((m.id, m.text.as_str()));
    }
    assert_eq!(by_sender.len(), SENDERS);
    for (s, (id, _, _)) in agents.iter().enumerate() {
        let seen = &by_sender[id.as_str()];
        let want: Vec<(i64, String)> = (0..EACH).map(|n| (answers[s][n], format!("s{s} n{n}"))).collect();
        let seen: Vec<(i64, String)> = seen.iter().map(|(i, t)| (*i, (*t).to_owned())).collect();
        assert_eq!(seen, want, "sender {s}'s messages, in the order it sent them");
    }
}
