//! The routes of the bridges (issue 23), without a messenger: who may
//! create link codes and bridge rooms, what bad input gets, and the bounds.
//! The bridges at work are tests/bridge_telegram.rs and tests/bridge_matrix.rs.

mod common;

use common::{Gateway, send};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn link_codes_are_for_whoever_manages_the_agent_and_bounded() {
    let gw = Gateway::start().await;
    let (alice, _, alice_key) = gw.new_agent("alice", 0).await;
    let (bob, _, _) = gw.new_agent("bob", 0).await;

    let own = send(gw.request(Method::POST, &format!("/v1/agents/{alice}/link-codes"), Some(&alice_key))).await;
    assert_eq!(own.status, 201, "{own:?}");
    let code = own.json["code"].as_str().expect("a code");
    assert_eq!(code.len(), 10, "{code}");
    assert!(code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{code}");
    assert!(own.json["expires_at"].is_string());

    let others = send(gw.request(Method::POST, &format!("/v1/agents/{bob}/link-codes"), Some(&alice_key))).await;
    others.assert_problem(403, "forbidden");
    let read_key = gw.operator().create_key(&alice, coffer_client::Scope::Read).await.expect("a read key").key;
    let read = send(gw.request(Method::POST, &format!("/v1/agents/{alice}/link-codes"), Some(&read_key))).await;
    read.assert_problem(403, "forbidden");
    let operator_code = send(gw.request(Method::POST, "/v1/link-codes", Some(&alice_key))).await;
    operator_code.assert_problem(403, "forbidden");
    let missing = send(gw.request(Method::POST, "/v1/agents/agt_nobody/link-codes", Some(gw.operator_token()))).await;
    missing.assert_problem(404, "not-found");

    // Eight wait at once (one made above); the ninth is refused until one
    // is used or expires.
    for _ in 1..8 {
        let made = send(gw.request(Method::POST, &format!("/v1/agents/{alice}/link-codes"), Some(gw.operator_token())));
        assert_eq!(made.await.status, 201);
    }
    let ninth = send(gw.request(Method::POST, &format!("/v1/agents/{alice}/link-codes"), Some(&alice_key))).await;
    ninth.assert_problem(429, "limit-exceeded");
    assert!(ninth.headers.get("retry-after").is_some(), "{ninth:?}");
    let listed = send(gw.request(Method::GET, &format!("/v1/agents/{alice}/links"), Some(&alice_key))).await;
    assert_eq!((listed.status, listed.json.clone()), (200, json!([])), "no one has linked");
}

#[tokio::test]
async fn only_the_operator_bridges_rooms_and_bad_input_changes_nothing() {
    let gw = Gateway::start().await;
    let (alice, _, alice_key) = gw.new_agent("alice", 0).await;
    let room = gw.create_room(gw.operator_token(), "market", &[&alice]).await.id;
    let put = |messenger: &str, body: serde_json::Value, secret: &str| {
        gw.request(Method::PUT, &format!("/v1/rooms/{room}/bridges/{messenger}"), Some(secret)).json(&body)
    };
    let token = gw.operator_token().to_owned();

    send(put("telegram", json!({"chat_id": "-100"}), &alice_key)).await.assert_problem(403, "forbidden");
    send(put("discord", json!({"chat_id": "-100"}), &token)).await.assert_problem(400, "invalid-field");
    send(put("telegram", json!({}), &token)).await.assert_problem(400, "invalid-field");
    send(put("telegram", json!({"chat_id": "1", "room_id": "2"}), &token)).await.assert_problem(400, "invalid-field");
    send(put("telegram", json!({"chat_id": "a\u{0}b"}), &token)).await.assert_problem(400, "invalid-field");
    send(put("telegram", json!({"chat_id": "x".repeat(257)}), &token)).await.assert_problem(400, "invalid-field");
    send(put("telegram", json!({"chat": "-100"}), &token)).await.assert_well_formed_problem();
    let listed = send(gw.request(Method::GET, &format!("/v1/rooms/{room}/bridges"), Some(&alice_key))).await;
    assert_eq!((listed.status, listed.json.clone()), (200, json!([])), "nothing bridged by bad input");

    let bridged = send(put("telegram", json!({"chat_id": "-100"}), &token)).await;
    assert_eq!(bridged.status, 200, "{bridged:?}");
    assert_eq!(
        (bridged.json["messenger"].as_str(), bridged.json["chat_id"].as_str()),
        (Some("telegram"), Some("-100"))
    );
    let matrix = send(put("matrix", json!({"room_id": "!abc:localhost"}), &token)).await;
    assert_eq!(matrix.status, 200, "{matrix:?}");
    let other_room = gw.create_room(gw.operator_token(), "other", &[&alice]).await.id;
    let taken = gw.request(Method::PUT, &format!("/v1/rooms/{other_room}/bridges/telegram"), Some(&token));
    send(taken.json(&json!({"chat_id": "-100"}))).await.assert_problem(409, "invalid-state");

    let listed = send(gw.request(Method::GET, &format!("/v1/rooms/{room}/bridges"), Some(&alice_key))).await;
    let messengers: Vec<&str> =
        listed.json.as_array().expect("a list").iter().filter_map(|b| b["messenger"].as_str()).collect();
    assert_eq!(messengers, ["matrix", "telegram"]);
    let removed = send(gw.request(Method::DELETE, &format!("/v1/rooms/{room}/bridges/telegram"), Some(&token))).await;
    assert_eq!(removed.status, 204);
    let again = send(gw.request(Method::DELETE, &format!("/v1/rooms/{room}/bridges/telegram"), Some(&token))).await;
    again.assert_problem(404, "not-found");
    let moved = gw.request(Method::PUT, &format!("/v1/rooms/{other_room}/bridges/telegram"), Some(&token));
    assert_eq!(send(moved.json(&json!({"chat_id": "-100"}))).await.status, 200, "the chat is free again");
    let unknown = send(gw.request(Method::DELETE, "/v1/links/telegram/42", Some(&token))).await;
    unknown.assert_problem(404, "not-found");
}
