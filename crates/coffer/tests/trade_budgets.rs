//! Trade under the constitution: what waits counts against the payer's
//! budgets from the moment it is reserved (a session its whole maximum
//! while open); money that never reached a payee (a cancelled hold, a
//! session's unused remainder) gives its budget back; a refund of money
//! that did reach the payee does not, so no cycle of paying and being
//! refunded moves more than the budget allows. Payee lists and approval
//! thresholds apply to holds, escrows and sessions as to payments.

mod common;

use coffer_client::{ChargeRequest, OpenSessionRequest, Outcome, PayOutcome, PayRequest, RefundRequest};
use common::trade::{assert_audit, hold_invoice, pair, pay};
use common::{Gateway, first_window, invoice, problem};
use serde_json::json;

const FUND_MSAT: u64 = 1_000_000;

fn daily(limit_msat: u64) -> serde_json::Value {
    json!({"budgets": [{"limit_msat": limit_msat, "window": "24h", "kind": "rolling"}]})
}

#[tokio::test]
async fn an_open_session_counts_its_maximum_until_it_closes() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let op = gw.operator();
    op.set_policy(&p.payer_id, &daily(50_000)).await.expect("a budget");
    let request = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 40_000,
        expires_in_secs: 600,
        purpose: None,
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (40_000, 10_000));

    // While it is open, the budget has 10 000 left: a payment of 20 000 is
    // refused, and so is a second session of that size.
    let inv = invoice(&p.payee, 20_000).await;
    let refused = p.payer.pay(&PayRequest { bolt11: inv.bolt11.clone(), ..Default::default() }, "p1").await;
    assert_eq!(problem(refused.unwrap_err()).code, "budget-exceeded");
    let second = OpenSessionRequest { max_msat: 20_000, ..request.clone() };
    assert_eq!(problem(p.payer.open_session(&second).await.unwrap_err()).code, "budget-exceeded");

    let charge = ChargeRequest { amount_msat: 5_000, memo: None };
    p.payee.charge(&session.id, &charge, "c1").await.expect("charged");
    p.payer.close_session(&session.id).await.expect("closed");
    // Only what was charged still counts.
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (5_000, 45_000));
    let paid = p.payer.pay(&PayRequest { bolt11: inv.bolt11, ..Default::default() }, "p2").await.expect("paid now");
    assert!(matches!(paid, PayOutcome::Done(_)));
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (25_000, 25_000));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn pay_and_refund_cycles_never_move_more_than_the_budget() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let op = gw.operator();
    op.set_policy(&p.payer_id, &daily(30_000)).await.expect("a budget");
    let mut paid_out = 0;
    for round in 0..5 {
        let inv = invoice(&p.payee, 12_000).await;
        let request = PayRequest { bolt11: inv.bolt11, ..Default::default() };
        match p.payer.pay(&request, &format!("cycle-{round}")).await {
            Ok(PayOutcome::Done(payment)) => {
                paid_out += 12_000;
                // The payee gives it all back, at once.
                let refund = RefundRequest { amount_msat: 12_000, reason: Some("cycle".into()) };
                p.payee.refund(&payment.id, &refund, &format!("r-{round}")).await.expect("refunded");
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => assert_eq!(problem(e).code, "budget-exceeded", "round {round}"),
        }
    }
    assert_eq!(paid_out, 24_000, "two payments fit a budget of 30 000, refunds or not");
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (24_000, 6_000));
    // An escrow that waits counts too, from the moment it is paid.
    let inv = invoice(&p.payee, 6_000).await;
    pay(&p.payer, &inv.bolt11, Some((600, Outcome::Refund)), "escrow").await;
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (30_000, 0));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_cancelled_hold_gives_its_budget_back() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let op = gw.operator();
    op.set_policy(&p.payer_id, &daily(20_000)).await.expect("a budget");
    let inv = hold_invoice(&p.payee, 15_000, 600).await;
    pay(&p.payer, &inv.bolt11, None, "h1").await;
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (15_000, 5_000), "counted while it waits");
    p.payee.cancel_invoice(&inv.payment_hash).await.expect("cancelled");
    assert_eq!(first_window(&op.budget(&p.payer_id).await.unwrap()), (0, 20_000), "nothing reached the payee");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn payee_lists_and_approval_thresholds_apply_to_holds_escrows_and_sessions() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let (other_id, other, _) = gw.new_agent("stranger", 0).await;
    let op = gw.operator();
    let policy = json!({"payees": {"default": "deny", "allow": [format!("agent:{}", p.payee_id)]}, "approval_above_msat": 50_000});
    op.set_policy(&p.payer_id, &policy).await.expect("a policy");

    // Not on the list: refused, whatever the kind.
    let session = OpenSessionRequest {
        payee: other_id.clone(),
        max_msat: 1_000,
        expires_in_secs: 60,
        purpose: None,
        ..Default::default()
    };
    assert_eq!(problem(p.payer.open_session(&session).await.unwrap_err()).code, "payee-not-allowed");
    let hold = hold_invoice(&other, 1_000, 60).await;
    let refused = p.payer.pay(&PayRequest { bolt11: hold.bolt11, ..Default::default() }, "h").await;
    assert_eq!(problem(refused.unwrap_err()).code, "payee-not-allowed");

    // Above the threshold, an escrow is held for a person; approved, it
    // then waits in escrow (not paid out).
    let inv = invoice(&p.payee, 60_000).await;
    let escrow = Some(coffer_client::EscrowTerms { release_after_secs: 600, on_timeout: Outcome::Refund });
    let request = PayRequest { bolt11: inv.bolt11, escrow, ..Default::default() };
    let PayOutcome::Held(approval) = p.payer.pay(&request, "big").await.expect("held") else {
        panic!("expected a hold for approval")
    };
    let decided = op.approve(&approval.id).await.expect("approved");
    let payment_id = decided.payment.expect("the payment").id;
    let seen = p.payer.payment(&payment_id).await.unwrap();
    assert_eq!((seen.status, seen.escrow.map(|e| e.kind)), (coffer_client::PaymentStatus::Held, Some("escrow".into())));
    // A session above the threshold cannot wait for a person: refused.
    let big = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 60_000,
        expires_in_secs: 60,
        purpose: None,
        ..Default::default()
    };
    assert_eq!(problem(p.payer.open_session(&big).await.unwrap_err()).code, "approval-required");
    assert_audit(&gw).await;
}
