//! `POST /v1/payments/preview`: it answers what the real payment that
//! follows it gets (allowed, held, or denied with the same code), for every
//! kind of denial, and it moves nothing: balance, budget, audit trail and
//! outbox are the same after it.

mod common;

use common::{Gateway, invoice, send};
use reqwest::Method;
use serde_json::{Value, json};

const PRICE: u64 = 1_000;

/// What a preview must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    wallet: Value,
    budget: Value,
    audit_len: usize,
    events_len: usize,
}

async fn snapshot(gw: &Gateway, agent_id: &str, key: &str) -> Snapshot {
    let wallet = send(gw.request(Method::GET, "/v1/wallet", Some(key))).await.json;
    let budget = gw.operator().budget(agent_id).await.expect("a budget");
    let mut events_len = 0;
    let mut after = 0;
    loop {
        let path = format!("/v1/events?after={after}&limit=200");
        let page = send(gw.request(Method::GET, &path, Some(gw.operator_token()))).await.json;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let Some(last) = events.last() else { break };
        after = last["id"].as_i64().expect("an event id");
        events_len += events.len();
    }
    Snapshot { wallet, budget, audit_len: gw.audit_all("").await.len(), events_len }
}

async fn preview(gw: &Gateway, key: &str, body: Value) -> common::Reply {
    send(gw.request(Method::POST, "/v1/payments/preview", Some(key)).json(&body)).await
}

/// Previews paying `bolt11` (checking that nothing moved), then pays it,
/// and asserts that both agree: `want` is `allow`, `hold` or a denial code.
async fn preview_then_pay(gw: &Gateway, agent_id: &str, key: &str, bolt11: &str, want: &str) -> Value {
    let before = snapshot(gw, agent_id, key).await;
    let reply = preview(gw, key, json!({"bolt11": bolt11})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(snapshot(gw, agent_id, key).await, before, "a preview moved something");
    let p = reply.json;
    let paid = gw.pay_raw(key, bolt11, "after a preview", None).await;
    match (p["decision"].as_str(), want) {
        (Some("allow"), "allow") => assert_eq!(paid.status, 200, "{paid:?}"),
        (Some("hold"), "hold") => {
            assert_eq!(paid.status, 202, "{paid:?}");
            assert_eq!(p["code"], "approval-required");
        }
        (Some("deny"), code) => {
            assert_eq!(p["code"].as_str(), Some(code), "{p}");
            // A low balance is 402; the constitution's refusals are 403.
            let status = if code == "insufficient-balance" { 402 } else { 403 };
            paid.assert_problem(status, code);
        }
        (other, _) => panic!("preview said {other:?}, wanted {want}: {p}"),
    }
    p
}

#[tokio::test]
async fn preview_agrees_with_the_payment_for_allow_hold_and_every_denial() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payee_id, payee, _) = gw.new_agent("payee", 0).await;
    let cases: Vec<(&str, Value, u64)> = vec![
        ("allow", json!({}), 10 * PRICE),
        ("hold", json!({"approval_above_msat": PRICE / 2}), 10 * PRICE),
        ("payee-not-allowed", json!({"payees": {"default": "deny", "allow": ["agent:agt_someone_else"]}}), 10 * PRICE),
        ("amount-too-large", json!({"max_payment_msat": PRICE / 2}), 10 * PRICE),
        (
            "budget-exceeded",
            json!({"budgets": [{"limit_msat": PRICE / 2, "window": "1h", "kind": "rolling"}]}),
            10 * PRICE,
        ),
        ("policy-expired", json!({"expires_at": "2020-01-01T00:00:00Z"}), 10 * PRICE),
        ("insufficient-balance", json!({}), PRICE / 2),
    ];
    for (want, policy, funds) in cases {
        let (id, _, key) = gw.new_agent(&format!("payer-{want}"), funds).await;
        op.set_policy(&id, &policy).await.unwrap_or_else(|e| panic!("{want}: {e}"));
        let bolt11 = invoice(&payee, PRICE).await.bolt11;
        let p = preview_then_pay(&gw, &id, &key, &bolt11, want).await;
        assert_eq!((p["amount_msat"].as_u64(), p["fee_limit_msat"].as_u64()), (Some(PRICE), Some(0)));
        assert_eq!(p["payer_agent_id"], id.as_str());
        if want != "allow" {
            assert_eq!((p["level"].as_u64(), p["agent_id"].as_str()), (Some(0), Some(id.as_str())), "{want}: {p}");
        }
    }

    // The rate limit: one payment a minute; the preview is not one.
    let (id, _, key) = gw.new_agent("payer-rate", 10 * PRICE).await;
    op.set_policy(&id, &json!({"max_payments_per_minute": 1})).await.unwrap();
    let first = invoice(&payee, PRICE).await.bolt11;
    preview_then_pay(&gw, &id, &key, &first, "allow").await;
    let second = invoice(&payee, PRICE).await.bolt11;
    preview_then_pay(&gw, &id, &key, &second, "rate-limited").await;

    // A frozen agent, then the kill switch.
    let (id, _, key) = gw.new_agent("payer-frozen", 10 * PRICE).await;
    op.freeze(&id, Some("preview test")).await.unwrap();
    let bolt11 = invoice(&payee, PRICE).await.bolt11;
    preview_then_pay(&gw, &id, &key, &bolt11, "agent-frozen").await;
    let (id, _, key) = gw.new_agent("payer-halted", 10 * PRICE).await;
    op.set_halted(true).await.unwrap();
    let bolt11 = invoice(&payee, PRICE).await.bolt11;
    let p = preview_then_pay(&gw, &id, &key, &bolt11, "gateway-halted").await;
    assert!(p.get("level").is_none(), "the kill switch is the gateway's: {p}");
    op.set_halted(false).await.unwrap();
    assert!(!payee_id.is_empty());
}

#[tokio::test]
async fn preview_names_the_level_that_decides_and_what_remains_in_each_window() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (parent_id, parent_key, parent_client) = gw.new_parent("parent", 20 * PRICE).await;
    let budget = json!({"budgets": [{"limit_msat": 3 * PRICE, "window": "day", "kind": "calendar"}], "lifetime_msat": 50 * PRICE});
    op.set_policy(&parent_id, &budget).await.unwrap();
    let child = parent_client.create_agent("child").await.unwrap();
    parent_client.fund_agent(&child.id, 10 * PRICE).await.unwrap();
    let (payee_id, payee, _) = gw.new_agent("payee", 0).await;

    // The child has no policy of its own: its parent's day budget decides.
    let bolt11 = invoice(&payee, 4 * PRICE).await.bolt11;
    let p = preview_then_pay(&gw, &child.id, &child.key, &bolt11, "budget-exceeded").await;
    assert_eq!((p["level"].as_u64(), p["agent_id"].as_str()), (Some(1), Some(parent_id.as_str())), "{p}");
    let day = &p["remaining"][0];
    assert_eq!((day["agent_id"].as_str(), day["window"].as_str()), (Some(parent_id.as_str()), Some("day")));
    assert_eq!((day["limit_msat"].as_u64(), day["remaining_msat"].as_u64()), (Some(3 * PRICE), Some(3 * PRICE)));
    assert!(day["resets_at_ms"].as_i64().is_some(), "{day}");
    assert_eq!(p["lifetime"][0]["remaining_msat"].as_u64(), Some(50 * PRICE));
    assert_eq!(p["balance_msat"].as_u64(), Some(10 * PRICE));

    // By amount and payee, as policies name payees; then the real payment.
    let by_payee =
        preview(&gw, &child.key, json!({"amount_msat": 2 * PRICE, "payee": format!("agent:{payee_id}")})).await;
    assert_eq!((by_payee.status, by_payee.json["decision"].as_str()), (200, Some("allow")), "{by_payee:?}");
    let bolt11 = invoice(&payee, 2 * PRICE).await.bolt11;
    let p = preview_then_pay(&gw, &child.id, &child.key, &bolt11, "allow").await;
    assert_eq!(p["remaining"][0]["remaining_msat"].as_u64(), Some(3 * PRICE));
    let after = preview(&gw, &child.key, json!({"amount_msat": PRICE, "payee": format!("agent:{payee_id}")})).await;
    assert_eq!(after.json["remaining"][0]["spent_msat"].as_u64(), Some(2 * PRICE), "{after:?}");

    // The operator, and the parent, preview for the child by its id.
    let body = json!({"amount_msat": 2 * PRICE, "payee": format!("agent:{payee_id}"), "agent_id": child.id});
    let by_operator = preview(&gw, gw.operator_token(), body.clone()).await;
    assert_eq!((by_operator.status, by_operator.json["code"].as_str()), (200, Some("budget-exceeded")));
    let by_parent = preview(&gw, &parent_key, body).await;
    assert_eq!(by_parent.json, by_operator.json);
    // The child may not preview for its parent.
    let upward =
        preview(&gw, &child.key, json!({"amount_msat": PRICE, "payee": "agent:x", "agent_id": parent_id})).await;
    upward.assert_problem(403, "forbidden");
}

#[tokio::test]
async fn bad_previews_are_problems_and_change_nothing() {
    let gw = Gateway::start().await;
    let (id, _, key) = gw.new_agent("payer", 10 * PRICE).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let bolt11 = invoice(&payee, PRICE).await.bolt11;
    let read = gw.operator().create_key(&id, coffer_client::Scope::Read).await.unwrap();
    let before = snapshot(&gw, &id, &key).await;
    let bad = [
        json!({}),
        json!({"bolt11": bolt11, "amount_msat": PRICE}),
        json!({"amount_msat": PRICE}),
        json!({"payee": "agent:x"}),
        json!({"amount_msat": 0, "payee": "agent:x"}),
        json!({"amount_msat": PRICE, "payee": "someone"}),
        json!({"amount_msat": PRICE, "payee": "domain:example.com"}),
        json!({"amount_msat": PRICE, "payee": format!("agent:{id}")}),
        json!({"bolt11": "lnbc1notaninvoice"}),
        json!({"bolt11": bolt11, "surprise": true}),
    ];
    for body in bad {
        let reply = preview(&gw, &key, body.clone()).await;
        assert!((400..500).contains(&reply.status), "{body}: {reply:?}");
        reply.assert_well_formed_problem();
    }
    // The operator must name the agent; a read key changes nothing, so it
    // cannot POST.
    preview(&gw, gw.operator_token(), json!({"bolt11": bolt11})).await.assert_problem(400, "invalid-field");
    assert_eq!(preview(&gw, &read.key, json!({"bolt11": bolt11})).await.status, 403);
    send(gw.request(Method::POST, "/v1/payments/preview", None).json(&json!({"bolt11": bolt11})))
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(snapshot(&gw, &id, &key).await, before);
}

#[tokio::test]
async fn the_client_crate_previews_too() {
    let gw = Gateway::start().await;
    let (_, payer, _) = gw.new_agent("payer", 10 * PRICE).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let bolt11 = invoice(&payee, PRICE).await.bolt11;
    let request = coffer_client::PreviewRequest { bolt11: Some(bolt11), ..Default::default() };
    let p = payer.preview_payment(&request).await.expect("a preview");
    assert_eq!((p.decision, p.amount_msat, p.balance_msat), (coffer_client::PreviewDecision::Allow, PRICE, 10 * PRICE));
}
