//! The constitution's limits, end to end: budgets under races, many small
//! payments against one window, policy validation, who may set a policy,
//! payee lists, the largest payment, expiry and the rate limit.

mod common;

use coffer_client::Scope;
use common::{Gateway, all_at_once, assert_denied, first_window, invoice};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

fn rolling_hour(limit_msat: u64) -> Value {
    json!({"budgets": [{"limit_msat": limit_msat, "window": "1h", "kind": "rolling"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_racing_payments_against_a_budget_of_ten_prices_exactly_ten_pass() {
    const PRICE: u64 = 2_500;
    let gw = Gateway::start().await;
    let op = gw.operator();
    // The wallet holds a hundred prices: only the budget can stop them.
    let (payer_id, payer, payer_key) = gw.new_agent("payer", 100 * PRICE).await;
    op.set_policy(&payer_id, &rolling_hour(10 * PRICE)).await.unwrap();
    let mut payees = Vec::new();
    for i in 0..4 {
        payees.push(gw.new_agent(&format!("payee-{i}"), 0).await);
    }
    let mut invoices = Vec::new();
    for i in 0..64 {
        invoices.push(invoice(&payees[i % 4].1, PRICE).await);
    }
    let requests = invoices
        .iter()
        .enumerate()
        .map(|(i, inv)| {
            gw.request(Method::POST, "/v1/payments", Some(&payer_key))
                .header("Idempotency-Key", format!("budget-race-{i}"))
                .json(&json!({"bolt11": inv.bolt11, "purpose": "race"}))
        })
        .collect();
    let replies = all_at_once(requests).await;

    let (mut paid, mut refused) = (0, 0);
    for r in &replies {
        if r.status == 200 {
            assert_eq!((r.json["status"].as_str(), r.json["amount_msat"].as_u64()), (Some("succeeded"), Some(PRICE)));
            paid += 1;
        } else {
            let p = assert_denied(r, "budget-exceeded");
            // Every price divides the budget: a refusal comes only once it is spent.
            assert_eq!(p["remaining_msat"].as_u64(), Some(0), "{r:?}");
            refused += 1;
        }
    }
    assert_eq!((paid, refused), (10, 54));

    let report = op.budget(&payer_id).await.unwrap();
    assert_eq!(first_window(&report), (10 * PRICE, 0), "{report}");
    assert_eq!(report["windows"][0]["limit_msat"].as_u64(), Some(10 * PRICE));
    let w = payer.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat), (90 * PRICE, 0));
    let mut credited = 0;
    for (id, _, _) in &payees {
        credited += op.agent(id).await.unwrap().balance_msat;
    }
    assert_eq!(credited, 10 * PRICE);
    assert_eq!(gw.payment_count(&payer).await, 10);
    // Every refusal is in the audit trail, under its rule.
    let denied = gw.audit_all(&format!("agent_id={payer_id}&action=payment.denied")).await;
    assert_eq!(denied.len(), 54);
    assert!(denied.iter().all(|r| r.record["rule"] == "budget-exceeded"), "{denied:?}");
    assert_eq!(gw.audit_all(&format!("agent_id={payer_id}&action=payment.allowed")).await.len(), 10);

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_one_sat_payments_cannot_split_past_a_hundred_sat_budget() {
    const SAT: u64 = 1_000;
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 125;
    let gw = Arc::new(Gateway::start().await);
    let op = gw.operator();
    let (payer_id, payer, payer_key) = gw.new_agent("splitter", 10_000 * SAT).await;
    op.set_policy(&payer_id, &rolling_hour(100 * SAT)).await.unwrap();
    let mut payees = Vec::new();
    for i in 0..4 {
        payees.push(gw.new_agent(&format!("seller-{i}"), 0).await);
    }
    let payee_clients: Arc<Vec<_>> = Arc::new(payees.iter().map(|(_, c, _)| c.clone()).collect());

    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (gw, key, payees) = (Arc::clone(&gw), payer_key.clone(), Arc::clone(&payee_clients));
            tokio::spawn(async move {
                let (mut paid, mut refused) = (0u64, 0u64);
                for i in 0..PER_WORKER {
                    let inv = invoice(&payees[(w + i) % payees.len()], SAT).await;
                    let r = gw.pay_raw(&key, &inv.bolt11, "one sat", Some(&format!("split-{w}-{i}"))).await;
                    if r.status == 200 {
                        paid += 1;
                    } else {
                        let p = assert_denied(&r, "budget-exceeded");
                        assert_eq!(p["remaining_msat"].as_u64(), Some(0), "{r:?}");
                        refused += 1;
                    }
                }
                (paid, refused)
            })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for t in tasks {
        let (p, r) = t.await.expect("a worker panicked");
        paid += p;
        refused += r;
    }
    assert_eq!((paid, refused), (100, 900));

    let w = payer.wallet().await.unwrap();
    assert_eq!(10_000 * SAT - w.balance_msat, 100 * SAT, "debited exactly the budget");
    let mut credited = 0;
    for (id, _, _) in &payees {
        credited += op.agent(id).await.unwrap().balance_msat;
    }
    assert_eq!(credited, 100 * SAT);
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (100 * SAT, 0));
    assert_eq!(gw.payment_count(&payer).await, 100);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test]
async fn bad_policy_documents_are_refused_with_the_field_and_change_nothing() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, _, _) = gw.new_agent("governed", 0).await;
    let good = json!({
        "max_payment_msat": 50_000,
        "budgets": [{"limit_msat": 100_000, "window": "1h", "kind": "rolling"}],
        "payees": {"default": "allow", "allow": [], "deny": ["agent:agt_someone"]},
        "breaker": {"max_denials": 5, "window": "1m"}
    });
    let applied = op.set_policy(&id, &good).await.unwrap();
    let before = op.policy(&id).await.unwrap();
    assert_eq!(before, applied);
    assert_eq!(before["max_payment_msat"], 50_000);

    let budget = |limit: Value, window: &str, kind: &str| json!({"budgets": [{"limit_msat": limit, "window": window, "kind": kind}]});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("negative amount", json!({"max_payment_msat": -1}), "max_payment_msat"),
        ("negative budget", budget(json!(-5), "1h", "rolling"), "budgets[0].limit_msat"),
        (
            "negative second budget",
            json!({"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling"},
                               {"limit_msat": -5, "window": "day", "kind": "calendar"}]}),
            "budgets[1].limit_msat",
        ),
        ("unknown field", json!({"max_payment_msats": 5_000}), "max_payment_msats"),
        ("unknown nested field", json!({"breaker": {"max_denial": 3}}), "breaker.max_denial"),
        ("zero-length window", budget(json!(5_000), "0s", "rolling"), "budgets[0].window"),
        ("unparsable window", budget(json!(5_000), "2 hours", "rolling"), "budgets[0].window"),
        ("calendar window called rolling", budget(json!(5_000), "day", "rolling"), "budgets[0].kind"),
        ("rolling window called calendar", budget(json!(5_000), "24h", "calendar"), "budgets[0].kind"),
        ("missing kind", json!({"budgets": [{"limit_msat": 5, "window": "1h"}]}), "budgets[0].kind"),
        (
            "one window twice",
            json!({"budgets": [{"limit_msat": 5, "window": "1h", "kind": "rolling"},
                               {"limit_msat": 9, "window": "60m", "kind": "rolling"}]}),
            "budgets[1].window",
        ),
        (
            "a payee allowed and denied",
            json!({"payees": {"allow": ["agent:agt_x"], "deny": ["agent:agt_x"]}}),
            "payees.deny[0]",
        ),
        ("zero budget", budget(json!(0), "1h", "rolling"), "budgets[0].limit_msat"),
        ("zero max payment", json!({"max_payment_msat": 0}), "max_payment_msat"),
        ("zero rate", json!({"max_payments_per_minute": 0}), "max_payments_per_minute"),
        ("malformed payee", json!({"payees": {"deny": ["agent:ok", "agnt:x"]}}), "payees.deny[1]"),
        ("malformed node key", json!({"payees": {"allow": ["node:02ab"]}}), "payees.allow[0]"),
        ("bad default", json!({"payees": {"default": "maybe"}}), "payees.default"),
        ("bad expires_at", json!({"expires_at": "next tuesday"}), "expires_at"),
        ("impossible expires_at", json!({"expires_at": "2027-13-01T00:00:00Z"}), "expires_at"),
        ("calendar breaker window", json!({"breaker": {"max_denials": 3, "window": "day"}}), "breaker.window"),
        (
            "zero breaker payee count",
            json!({"breaker": {"max_payments_to_one_payee": 0}}),
            "breaker.max_payments_to_one_payee",
        ),
        ("above 21M BTC", json!({"lifetime_msat": 2_100_000_000_000_000_001u64}), "lifetime_msat"),
    ];
    for (what, doc, field) in &cases {
        let r = gw.put_policy_raw(gw.operator_token(), &id, doc).await;
        let p = r.assert_problem(400, "invalid-policy");
        assert_eq!(p["field"].as_str(), Some(*field), "{what}: {doc} -> {r:?}");
        assert_eq!(op.policy(&id).await.unwrap(), before, "{what}: the policy changed");
    }
    // Only the one good document was ever applied.
    let updates = gw.audit_all(&format!("agent_id={id}&action=policy.updated")).await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(gw.events("policy.updated").await.len(), 1);
}

#[tokio::test]
async fn an_agent_never_sets_its_own_policy() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, agent, key) = gw.new_agent("self-governed", 100_000).await;
    let (other_id, _, _) = gw.new_agent("other", 0).await;
    op.set_policy(&id, &json!({"max_payment_msat": 1_000})).await.unwrap();
    let before = op.policy(&id).await.unwrap();

    // With its spend key: raising its own limit, or removing it.
    for doc in [json!({"max_payment_msat": 1_000_000}), json!({})] {
        let r = gw.put_policy_raw(&key, &id, &doc).await;
        r.assert_problem(403, "forbidden");
    }
    // Nor another top-level agent's, nor with a weaker key.
    gw.put_policy_raw(&key, &other_id, &json!({"max_payment_msat": 1})).await.assert_problem(403, "forbidden");
    let read = op.create_key(&id, Scope::Read).await.unwrap();
    gw.put_policy_raw(&read.key, &id, &json!({})).await.assert_problem(403, "forbidden");
    let e = agent.set_policy(&id, &json!({})).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));

    assert_eq!(op.policy(&id).await.unwrap(), before);
    assert_eq!(op.policy(&other_id).await.unwrap(), json!({}));
    // The limit still holds.
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let inv = invoice(&payee, 2_000).await;
    assert_denied(&gw.pay_raw(&key, &inv.bolt11, "too big", None).await, "amount-too-large");
    assert_eq!(gw.audit_all(&format!("agent_id={id}&action=policy.updated")).await.len(), 1);
}

#[tokio::test]
async fn payee_lists_largest_payment_expiry_and_rate_limit() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, payer, key) = gw.new_agent("payer", 1_000_000).await;
    let (good_id, good, _) = gw.new_agent("good-seller", 0).await;
    let (bad_id, bad, _) = gw.new_agent("bad-seller", 0).await;
    let node = op.health().await.unwrap().node_pubkey;

    // A deny list: the denied payee is refused, others are paid.
    op.set_policy(&id, &json!({"payees": {"default": "allow", "deny": [format!("agent:{bad_id}")]}})).await.unwrap();
    let denied_invoice = invoice(&bad, 1_000).await;
    let r = gw.pay_raw(&key, &denied_invoice.bolt11, "deny list", None).await;
    assert_denied(&r, "payee-not-allowed");
    assert_eq!(gw.pay_raw(&key, &invoice(&good, 1_000).await.bolt11, "ok", None).await.status, 200);

    // Default deny: only the allow list is paid.
    op.set_policy(&id, &json!({"payees": {"default": "deny", "allow": [format!("agent:{good_id}")]}})).await.unwrap();
    assert_denied(&gw.pay_raw(&key, &denied_invoice.bolt11, "default deny", None).await, "payee-not-allowed");
    assert_eq!(gw.pay_raw(&key, &invoice(&good, 1_000).await.bolt11, "allowed", None).await.status, 200);

    // The deny list wins over the allow list, for a node key too: every
    // invoice of this gateway is signed by its node.
    op.set_policy(
        &id,
        &json!({"payees": {"default": "allow", "allow": [format!("agent:{good_id}")], "deny": [format!("node:{node}")]}}),
    )
    .await
    .unwrap();
    assert_denied(
        &gw.pay_raw(&key, &invoice(&good, 1_000).await.bolt11, "node denied", None).await,
        "payee-not-allowed",
    );

    // The largest payment: equal passes, one more msat does not.
    op.set_policy(&id, &json!({"max_payment_msat": 5_000})).await.unwrap();
    assert_denied(&gw.pay_raw(&key, &invoice(&good, 5_001).await.bolt11, "big", None).await, "amount-too-large");
    assert_eq!(gw.pay_raw(&key, &invoice(&good, 5_000).await.bolt11, "at the limit", None).await.status, 200);

    // An expired policy refuses everything, even a payment it would allow.
    op.set_policy(&id, &json!({"max_payment_msat": 5_000, "expires_at": "2020-01-01T00:00:00Z"})).await.unwrap();
    let r = gw.pay_raw(&key, &invoice(&good, 1_000).await.bolt11, "expired", None).await;
    assert_denied(&r, "policy-expired");
    // One in the future does not.
    op.set_policy(&id, &json!({"expires_at": "2999-01-01T00:00:00Z"})).await.unwrap();
    assert_eq!(gw.pay_raw(&key, &invoice(&good, 1_000).await.bolt11, "not yet expired", None).await.status, 200);

    // The rate limit, on a payer of its own (the count of the last minute
    // includes payments made under an earlier policy): five within the
    // minute, the sixth is refused.
    let (rate_id, rate_payer, rate_key) = gw.new_agent("rate-payer", 100_000).await;
    op.set_policy(&rate_id, &json!({"max_payments_per_minute": 5})).await.unwrap();
    for i in 0..5 {
        let r = gw.pay_raw(&rate_key, &invoice(&good, 1_000).await.bolt11, "rate", None).await;
        assert_eq!(r.status, 200, "payment {i}: {r:?}");
    }
    let sixth = invoice(&good, 1_000).await;
    assert_denied(&gw.pay_raw(&rate_key, &sixth.bolt11, "rate", None).await, "rate-limited");
    assert_eq!(op.budget(&rate_id).await.unwrap()["payments_last_minute"], 5);
    assert_eq!(rate_payer.wallet().await.unwrap().balance_msat, 100_000 - 5_000);
    assert_eq!(good.invoice(&sixth.payment_hash).await.unwrap().status, coffer_client::InvoiceStatus::Open);
    let rate_denials = gw.audit_all(&format!("agent_id={rate_id}&action=payment.denied")).await;
    assert_eq!(rate_denials.len(), 1);
    assert_eq!(rate_denials[0].record["rule"], "rate-limited");

    // Paid: 1,000 + 1,000 + 5,000 + 1,000; nothing of the refusals.
    let w = payer.wallet().await.unwrap();
    assert_eq!(w.balance_msat, 1_000_000 - 8_000);
    assert_eq!(op.agent(&good_id).await.unwrap().balance_msat, 8_000 + 5_000);
    assert_eq!(op.agent(&bad_id).await.unwrap().balance_msat, 0);
    assert_eq!(bad.invoice(&denied_invoice.payment_hash).await.unwrap().status, coffer_client::InvoiceStatus::Open);
    let rules: Vec<String> = gw
        .audit_all(&format!("agent_id={id}&action=payment.denied"))
        .await
        .iter()
        .map(|r| r.record["rule"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        rules,
        ["payee-not-allowed", "payee-not-allowed", "payee-not-allowed", "amount-too-large", "policy-expired",]
    );
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}
