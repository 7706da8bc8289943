//! The circuit breaker: automatic trips freeze a runaway agent and raise an
//! alert; the operator's kill switch stops every payment at once, under
//! load; freezing by hand.

mod common;

use common::{Gateway, assert_denied, first_window, invoice};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const SAT: u64 = 1_000;

#[tokio::test]
async fn a_runaway_agent_paying_one_seller_is_frozen_by_the_breaker() {
    const FUND: u64 = 1_000 * SAT;
    const PAYMENTS_TO_ONE_PAYEE_MAX: u64 = 20;
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, agent, key) = gw.new_agent("runaway", FUND).await;
    let (seller_id, seller, _) = gw.new_agent("spam-seller", 0).await;
    op.set_policy(
        &id,
        &json!({
            "budgets": [{"limit_msat": 50_000, "window": "1h", "kind": "rolling"}],
            "breaker": {"max_payments_to_one_payee": PAYMENTS_TO_ONE_PAYEE_MAX, "window": "1m"}
        }),
    )
    .await
    .unwrap();

    // The loop of a runaway agent: pay whatever the seller asks, again and again.
    let mut outcomes = Vec::new();
    for i in 0..40 {
        let inv = invoice(&seller, SAT).await;
        let r = gw.pay_raw(&key, &inv.bolt11, "spam", Some(&format!("spam-{i}"))).await;
        outcomes.push(r);
    }
    let paid = outcomes.iter().take_while(|r| r.status == 200).count() as u64;
    // "At most 20 tolerated, one more trips": the breaker observes a payment
    // after it is made, so the 21st is paid and trips it, in the same
    // transaction. Nothing is paid after it.
    assert_eq!(paid, PAYMENTS_TO_ONE_PAYEE_MAX + 1, "{:?}", outcomes.get(paid as usize));
    for r in &outcomes[paid as usize..] {
        let p = assert_denied(r, "agent-frozen");
        assert!(p["detail"].as_str().unwrap().contains("frozen"), "{r:?}");
    }

    let loss = FUND - agent.wallet().await.unwrap().balance_msat;
    assert_eq!(loss, paid * SAT);
    assert!(loss <= 50_000, "the loss {loss} exceeds the window's budget");
    assert_eq!(op.agent(&seller_id).await.unwrap().balance_msat, paid * SAT);
    assert_eq!(first_window(&op.budget(&id).await.unwrap()), (paid * SAT, 50_000 - paid * SAT));

    let a = op.agent(&id).await.unwrap();
    assert!(a.frozen, "{a:?}");
    let reason = a.frozen_reason.unwrap_or_default();
    assert!(reason.contains("automatic trip (payee-concentration)"), "{reason}");
    assert!(reason.contains(&format!("agent:{seller_id}")), "{reason}");

    // The alert: one trip, one freeze, in the outbox.
    let trips = gw.events("breaker.tripped").await;
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0].0.as_deref(), Some(id.as_str()));
    assert_eq!(trips[0].1["code"], "payee-concentration");
    assert_eq!(trips[0].1["agent_id"], id.as_str());
    let freezes = gw.events("agent.frozen").await;
    assert_eq!(freezes.len(), 1, "{freezes:?}");
    assert_eq!(freezes[0].1["agent_id"], id.as_str());
    assert_eq!(freezes[0].1["reason"].as_str(), Some(reason.as_str()));

    let audit = gw.audit_all(&format!("agent_id={id}&action=breaker.tripped")).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].record["actor"].as_str(), audit[0].record["rule"].as_str()),
        (Some("system"), Some("payee-concentration"))
    );
    // The trip comes right after the 21st payment, and before every refusal.
    let trail = gw.audit_all(&format!("agent_id={id}")).await;
    let actions: Vec<&str> = trail.iter().filter_map(|r| r.record["action"].as_str()).collect();
    let trip_at = actions.iter().position(|a| *a == "breaker.tripped").unwrap();
    assert_eq!(actions[..trip_at].iter().filter(|a| **a == "payment.allowed").count() as u64, paid);
    assert_eq!(actions[trip_at + 1..].iter().filter(|a| **a == "payment.denied").count(), 40 - paid as usize);
    assert!(!actions[trip_at + 1..].contains(&"payment.allowed"));

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test]
async fn too_many_denials_trip_the_breaker() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, agent, key) = gw.new_agent("prober", 100 * SAT).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&id, &json!({"max_payment_msat": 5 * SAT, "breaker": {"max_denials": 3}})).await.unwrap();

    // A payment within the limit passes and does not count.
    assert_eq!(gw.pay_raw(&key, &invoice(&seller, SAT).await.bolt11, "fine", None).await.status, 200);
    // Three denials are tolerated; the fourth is still answered with its own
    // reason, and trips the breaker.
    for i in 0..4 {
        let r = gw.pay_raw(&key, &invoice(&seller, 10 * SAT).await.bolt11, "too big", None).await;
        assert_denied(&r, "amount-too-large");
        assert_eq!(op.agent(&id).await.unwrap().frozen, i == 3, "after denial {}", i + 1);
    }
    // Now even a payment within the limit is refused.
    let r = gw.pay_raw(&key, &invoice(&seller, SAT).await.bolt11, "fine again", None).await;
    assert_denied(&r, "agent-frozen");
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 99 * SAT);

    let a = op.agent(&id).await.unwrap();
    assert!(a.frozen_reason.as_deref().unwrap_or_default().contains("automatic trip (too-many-denials)"), "{a:?}");
    let trips = gw.events("breaker.tripped").await;
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0].1["code"], "too-many-denials");
    assert_eq!(gw.events("agent.frozen").await.len(), 1);
    // Each denial is its own event too: four by the policy, one by the freeze.
    assert_eq!(gw.events("payment.denied").await.len(), 5);
    let audit = gw.audit_all(&format!("agent_id={id}&action=breaker.tripped")).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].record["rule"], "too-many-denials");

    // The operator unfreezes it; a good payment passes again.
    op.unfreeze(&id).await.unwrap();
    assert_eq!(gw.pay_raw(&key, &invoice(&seller, SAT).await.bolt11, "after", None).await.status, 200);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_switch_stops_every_payment_under_load() {
    const WORKERS: usize = 16;
    let gw = Arc::new(Gateway::start().await);
    let op = gw.operator();
    let mut payers = Vec::new();
    for i in 0..WORKERS {
        payers.push(gw.new_agent(&format!("worker-{i}"), 100_000 * SAT).await);
    }
    let mut sellers = Vec::new();
    for i in 0..4 {
        sellers.push(gw.new_agent(&format!("seller-{i}"), 0).await);
    }

    let halted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let paid_before = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<_> = payers
        .iter()
        .enumerate()
        .map(|(w, (_, _, key))| {
            let (gw, key, seller) = (Arc::clone(&gw), key.clone(), sellers[w % 4].1.clone());
            let (halted, stop, paid_before) = (Arc::clone(&halted), Arc::clone(&stop), Arc::clone(&paid_before));
            tokio::spawn(async move {
                let mut refused_after_halt = 0u64;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let inv = invoice(&seller, SAT).await;
                    // Whether the halt had returned before this request was sent.
                    let after_halt = halted.load(Ordering::SeqCst);
                    let r = gw.pay_raw(&key, &inv.bolt11, "load", Some(&format!("load-{w}-{i}"))).await;
                    i += 1;
                    if after_halt {
                        assert_denied(&r, "gateway-halted");
                        refused_after_halt += 1;
                    } else if r.status == 200 {
                        paid_before.fetch_add(1, Ordering::SeqCst);
                    } else {
                        // Sent before the halt returned, decided after it.
                        assert_denied(&r, "gateway-halted");
                    }
                }
                refused_after_halt
            })
        })
        .collect();

    // Let the load build up, then pull the switch.
    let start = std::time::Instant::now();
    while paid_before.load(Ordering::SeqCst) < 200 {
        // A worker that stopped has failed: show why.
        if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
            tasks.swap_remove(i).await.expect("a worker failed");
            panic!("a worker stopped before the halt");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the load did not build up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(op.set_halted(true).await.unwrap(), coffer_client::Breaker { halted: true });
    halted.store(true, Ordering::SeqCst);
    let balances = gw.balances().await;
    let mut counts = BTreeMap::new();
    for (id, client, _) in &payers {
        counts.insert(id.clone(), gw.payment_count(client).await);
    }
    let total: usize = counts.values().sum();
    assert!(total >= 200, "only {total} payments before the halt");

    // The workers keep trying for a second: every attempt is refused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut refused = Vec::new();
    for t in tasks {
        refused.push(t.await.expect("a worker panicked"));
    }
    assert!(refused.iter().all(|n| *n > 0), "every worker tried while halted: {refused:?}");

    assert_eq!(gw.balances().await, balances, "a wallet moved while halted");
    for (id, client, _) in &payers {
        assert_eq!(gw.payment_count(client).await, counts[id], "payments of {id}");
    }
    // What moved before the halt balances exactly.
    let spent: u64 = payers.iter().map(|(id, _, _)| 100_000 * SAT - balances[id]).sum();
    let received: u64 = sellers.iter().map(|(id, _, _)| balances[id]).sum();
    assert_eq!((spent, received), (total as u64 * SAT, total as u64 * SAT));
    let halted_at = gw.audit_all("action=gateway.halted").await;
    assert_eq!(halted_at.len(), 1);
    // No payment is recorded as allowed after the halt.
    let later = gw.audit_after(halted_at[0].seq, "action=payment.allowed").await;
    assert!(later.is_empty(), "{later:?}");
    let refusals = gw.audit_all("action=payment.denied").await;
    assert!(refusals.len() as u64 >= refused.iter().sum::<u64>());
    assert!(refusals.iter().all(|r| r.record["rule"] == "gateway-halted"));

    // Released: payments go through again.
    assert_eq!(op.set_halted(false).await.unwrap(), coffer_client::Breaker { halted: false });
    let r = gw.request(reqwest::Method::GET, "/v1/breaker", Some(gw.operator_token()));
    assert_eq!(common::send(r).await.json, json!({"halted": false}));
    for (w, (_, _, key)) in payers.iter().enumerate() {
        let inv = invoice(&sellers[w % 4].1, SAT).await;
        let r = gw.pay_raw(key, &inv.bolt11, "resumed", None).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(gw.audit_all("action=gateway.resumed").await.len(), 1);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test]
async fn the_operator_freezes_and_unfreezes_an_agent() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, agent, key) = gw.new_agent("suspect", 100 * SAT).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;

    let frozen = op.freeze(&id, Some("looks compromised")).await.unwrap();
    assert!(frozen.frozen);
    assert_eq!(frozen.frozen_reason.as_deref(), Some("looks compromised"));
    assert!(op.agent(&id).await.unwrap().frozen);
    let inv = invoice(&seller, SAT).await;
    let r = gw.pay_raw(&key, &inv.bolt11, "while frozen", None).await;
    let p = assert_denied(&r, "agent-frozen");
    assert!(p["detail"].as_str().unwrap().contains("this agent is frozen"), "{r:?}");
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 100 * SAT);
    // It may still receive; it may not unfreeze itself.
    assert_eq!(invoice(&agent, SAT).await.amount_msat, SAT);
    assert_eq!(agent.unfreeze(&id).await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(agent.freeze(&id, None).await.unwrap_err().code(), Some("forbidden"));
    assert!(op.agent(&id).await.unwrap().frozen);

    let thawed = op.unfreeze(&id).await.unwrap();
    assert!(!thawed.frozen);
    assert_eq!(thawed.frozen_reason, None);
    let r = gw.pay_raw(&key, &inv.bolt11, "after", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 99 * SAT);

    // Without a body, a default reason; an unknown agent is not found.
    let r = gw.request(reqwest::Method::POST, &format!("/v1/agents/{id}/freeze"), Some(gw.operator_token()));
    let r = common::send(r).await;
    assert_eq!((r.status, r.json["frozen"].as_bool()), (200, Some(true)), "{r:?}");
    assert_eq!(r.json["frozen_reason"], "frozen by the operator");
    assert_eq!(op.freeze("agt_nobody", None).await.unwrap_err().code(), Some("not-found"));

    let trail = gw.audit_all(&format!("agent_id={id}")).await;
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .filter(|r| r.record["action"].as_str().is_some_and(|a| a.starts_with("agent.") && a != "agent.created"))
        .map(|r| (r.record["action"].as_str().unwrap(), r.record["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("agent.funded", "operator"),
            ("agent.frozen", "operator"),
            ("agent.unfrozen", "operator"),
            ("agent.frozen", "operator")
        ]
    );
    let first = trail.iter().find(|r| r.record["action"] == "agent.frozen").unwrap();
    assert_eq!(first.record["detail"], "looks compromised");
    let denied = gw.audit_all(&format!("agent_id={id}&action=payment.denied")).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].record["rule"], "agent-frozen");
    // No automatic trip here.
    assert!(gw.events("breaker.tripped").await.is_empty());
    assert_eq!(gw.events("agent.frozen").await.len(), 2);
    assert_eq!(gw.events("agent.unfrozen").await.len(), 1);
}

/// After the operator unfreezes a tripped agent, the observations that
/// tripped the breaker have been acted on: a good payment must not freeze
/// the agent again for them.
#[tokio::test]
async fn an_unfrozen_agent_is_not_frozen_again_for_the_denials_that_tripped_it() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, agent, key) = gw.new_agent("prober", 100 * SAT).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&id, &json!({"max_payment_msat": 5 * SAT, "breaker": {"max_denials": 3}})).await.unwrap();
    for _ in 0..4 {
        let r = gw.pay_raw(&key, &invoice(&seller, 10 * SAT).await.bolt11, "too big", None).await;
        assert_denied(&r, "amount-too-large");
    }
    assert!(op.agent(&id).await.unwrap().frozen);
    assert_eq!(gw.events("breaker.tripped").await.len(), 1);

    op.unfreeze(&id).await.unwrap();
    let r = gw.pay_raw(&key, &invoice(&seller, SAT).await.bolt11, "a good payment", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 99 * SAT);
    let a = op.agent(&id).await.unwrap();
    assert!(
        !a.frozen,
        "one allowed payment after the unfreeze froze the agent again ({:?}); trips: {:?}",
        a.frozen_reason,
        gw.events("breaker.tripped").await
    );
}

/// The breaker observes "a payment that went ahead (allowed or held)"
/// (`BreakerState::observe_payment`): an agent whose every payment is held
/// and that keeps paying one payee trips like one whose payments pass.
#[tokio::test]
async fn held_payments_count_toward_the_breaker() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (id, _, key) = gw.new_agent("holder", 100 * SAT).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&id, &json!({"approval_above_msat": 0, "breaker": {"max_payments_to_one_payee": 3}})).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = gw.pay_raw(&key, &invoice(&seller, SAT).await.bolt11, "hold me", None).await;
        statuses.push((r.status, r.code().map(str::to_owned)));
    }
    // Three tolerated, the fourth held trips it, the rest are refused.
    let expected: Vec<(u16, Option<String>)> = [(202, None), (202, None), (202, None), (202, None)]
        .into_iter()
        .chain([(403, Some("agent-frozen".to_owned())), (403, Some("agent-frozen".to_owned()))])
        .collect();
    assert_eq!(statuses, expected, "frozen: {:?}", op.agent(&id).await.unwrap().frozen_reason);
    assert_eq!(gw.events("breaker.tripped").await.len(), 1);
}
