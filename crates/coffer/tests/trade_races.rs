//! Trade under races, against the real binary: requests released together
//! (a barrier), each race with exactly one winner, and no money created or
//! lost (the two wallets always add up to what the payer was funded with;
//! `coffer audit` passes). Deadlines race by moving the dev clock in the
//! same instant.

mod common;

use coffer_client::{Outcome, PaymentStatus};
use common::trade::{Pair, assert_audit, hold_invoice, pair, pay, wallet};
use common::{Gateway, Reply, all_at_once, invoice};
use reqwest::Method;
use serde_json::json;

const FUND_MSAT: u64 = 1_000_000;
const ROUNDS: usize = 6;

fn clock(gw: &Gateway, ms: i64) -> reqwest::RequestBuilder {
    gw.request(Method::POST, "/v1/dev/clock", Some(gw.operator_token())).json(&json!({"advance_ms": ms}))
}

fn post(gw: &Gateway, secret: &str, path: &str) -> reqwest::RequestBuilder {
    gw.request(Method::POST, path, Some(secret)).json(&json!({}))
}

/// The wallets of the pair add up to what the payer was funded with, and
/// nothing stays reserved.
async fn conserved(p: &Pair) -> (u64, u64) {
    let (payer, payee) = (wallet(&p.payer).await, wallet(&p.payee).await);
    assert_eq!(payer.0 + payee.0, FUND_MSAT, "money created or lost: {payer:?} {payee:?}");
    assert_eq!((payer.2, payee.2), (0, 0), "a reservation was left behind");
    (payer.0, payee.0)
}

fn ok(reply: &Reply) -> bool {
    if reply.status == 200 {
        return true;
    }
    reply.assert_problem(409, "invalid-state");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settle_cancel_and_the_deadline_race_and_exactly_one_decides() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..ROUNDS {
        let inv = hold_invoice(&p.payee, 10_000, 1).await;
        let paid = pay(&p.payer, &inv.bolt11, None, &format!("hold-{round}")).await;
        let hash = &inv.payment_hash;
        let replies = all_at_once(vec![
            post(&gw, &p.payee_key, &format!("/v1/invoices/{hash}/settle")),
            post(&gw, &p.payee_key, &format!("/v1/invoices/{hash}/cancel")),
            clock(&gw, 1_000),
        ])
        .await;
        assert_eq!(replies[2].status, 200, "the clock moved: {:?}", replies[2]);
        let (settled, cancelled) = (ok(&replies[0]), ok(&replies[1]));
        let after = p.payer.payment(&paid.id).await.unwrap();
        let escrow = after.escrow.clone().expect("the hold");
        let winner = match (settled, cancelled) {
            (true, false) => "settle",
            (false, true) => "cancel",
            (false, false) => "deadline",
            (true, true) => panic!("settled and cancelled both: {replies:?}"),
        };
        let expected = match winner {
            "settle" => (PaymentStatus::Succeeded, "released", p.payee_id.as_str()),
            "cancel" => (PaymentStatus::Refunded, "refunded", p.payee_id.as_str()),
            _ => (PaymentStatus::Refunded, "refunded", "system"),
        };
        let resolved_by = escrow.resolved_by.as_deref().unwrap_or("");
        assert_eq!((after.status, escrow.status.as_str(), resolved_by), expected, "round {round}: {winner}");
        *outcomes.entry(winner).or_insert(0) += 1;
        conserved(&p).await;
    }
    let settled = outcomes.get("settle").copied().unwrap_or(0) as u64;
    assert_eq!(wallet(&p.payee).await.0, settled * 10_000, "the payee got exactly the settled holds: {outcomes:?}");
    assert_audit(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_dispute_and_the_timeout_race_and_exactly_one_decides() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let op = gw.operator();
    for round in 0..ROUNDS {
        let inv = invoice(&p.payee, 10_000).await;
        let paid = pay(&p.payer, &inv.bolt11, Some((1, Outcome::Refund)), &format!("escrow-{round}")).await;
        let replies = all_at_once(vec![
            post(&gw, &p.payer_key, &format!("/v1/payments/{}/release", paid.id)),
            post(&gw, &p.payer_key, &format!("/v1/payments/{}/dispute", paid.id)),
            clock(&gw, 1_000),
        ])
        .await;
        let (released, disputed) = (ok(&replies[0]), ok(&replies[1]));
        let escrow = p.payer.payment(&paid.id).await.unwrap().escrow.expect("the escrow");
        match (released, disputed) {
            (true, false) => assert_eq!(escrow.status, "released"),
            (false, true) => {
                // A dispute stops the clock: the operator decides, once.
                assert_eq!(escrow.status, "disputed");
                op.resolve(&paid.id, Outcome::Release).await.expect("resolved");
            }
            (false, false) => {
                assert_eq!((escrow.status.as_str(), escrow.resolved_by.as_deref()), ("refunded", Some("system")))
            }
            (true, true) => panic!("released and disputed both: {replies:?}"),
        }
        conserved(&p).await;
    }
    assert_audit(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_charges_race_for_a_session_and_never_pass_its_maximum() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let request = coffer_client::OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 20_000,
        expires_in_secs: 600,
        purpose: Some("race".into()),
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    let charges = (0..32)
        .map(|i| {
            gw.request(Method::POST, &format!("/v1/sessions/{}/charges", session.id), Some(&p.payee_key))
                .header("Idempotency-Key", format!("charge-{i}"))
                .json(&json!({"amount_msat": 1_000, "memo": format!("unit {i}")}))
        })
        .collect();
    let replies = all_at_once(charges).await;
    let mut passed = 0;
    for reply in &replies {
        if reply.status == 201 {
            passed += 1;
        } else {
            reply.assert_problem(409, "session-exhausted");
            assert_eq!(reply.json["remaining_msat"], 0, "refused only once nothing remains: {reply:?}");
        }
    }
    assert_eq!(passed, 20);
    let seen = p.payer.session(&session.id).await.unwrap();
    assert_eq!((seen.charged_msat, seen.remaining_msat, seen.charges.len()), (20_000, 0, 20));
    assert_eq!(wallet(&p.payee).await, (20_000, 20_000, 0));
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT - 20_000, FUND_MSAT - 20_000, 0));
    p.payer.close_session(&session.id).await.expect("closed");
    conserved(&p).await;
    assert_audit(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_race_and_never_pass_what_was_paid() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let paid = pay(&p.payer, &invoice(&p.payee, 10_000).await.bolt11, None, "k").await;
    let refunds = (0..8)
        .map(|i| {
            gw.request(Method::POST, &format!("/v1/payments/{}/refund", paid.id), Some(&p.payee_key))
                .header("Idempotency-Key", format!("refund-{i}"))
                .json(&json!({"amount_msat": 3_000, "reason": "race"}))
        })
        .collect();
    let replies = all_at_once(refunds).await;
    let mut passed = 0;
    for reply in &replies {
        if reply.status == 201 {
            passed += 1;
        } else {
            reply.assert_problem(409, "refund-exceeds-payment");
            assert_eq!(reply.json["remaining_msat"], 1_000, "{reply:?}");
        }
    }
    assert_eq!(passed, 3);
    let seen = p.payer.payment(&paid.id).await.unwrap();
    assert_eq!((seen.status, seen.refunded_msat, seen.refunds.len()), (PaymentStatus::Succeeded, 9_000, 3));
    assert_eq!(conserved(&p).await, (FUND_MSAT - 1_000, 1_000));
    assert_audit(&gw).await;
}
