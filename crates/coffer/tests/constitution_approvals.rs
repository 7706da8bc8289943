//! Held payments: above a threshold a payment waits for a person. Its
//! amount is reserved and counted in the budget until it is approved (paid
//! exactly once), denied or expired (released).

mod common;

use coffer_client::{Approval, InvoiceStatus, PaymentStatus};
use common::{Gateway, Reply, all_at_once, assert_denied, first_window, invoice, invoice_expiring, send};
use reqwest::Method;
use serde_json::json;

const P: u64 = 1_000;
const FUND: u64 = 100 * P;

async fn approvals(gw: &Gateway, status: &str) -> Vec<Approval> {
    let r = send(gw.request(Method::GET, &format!("/v1/approvals?status={status}"), Some(gw.operator_token()))).await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_value(r.json).expect("a list of approvals")
}

#[track_caller]
fn assert_held(r: &Reply, amount_msat: u64) -> String {
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json["status"], "held", "{r:?}");
    assert_eq!(r.json["amount_msat"].as_u64(), Some(amount_msat), "{r:?}");
    assert_eq!(r.json["reason"], "approval-required", "{r:?}");
    let id = r.json["id"].as_str().expect("an approval id").to_owned();
    assert!(id.starts_with("apr_"), "{id}");
    id
}

#[tokio::test]
async fn held_payments_are_reserved_counted_and_paid_once_approved() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", FUND).await;
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(
        &payer_id,
        &json!({"approval_above_msat": P, "budgets": [{"limit_msat": 10 * P, "window": "1h", "kind": "rolling"}]}),
    )
    .await
    .unwrap();
    let wallet = || async { payer.wallet().await.unwrap() };
    let seller_balance = || async { op.agent(&seller_id).await.unwrap().balance_msat };

    // Above the threshold: held, reserved, counted.
    let inv_a = invoice(&seller, 2 * P).await;
    let first = gw.pay_raw(&key, &inv_a.bolt11, "needs a person", Some("hold-a")).await;
    let apr_a = assert_held(&first, 2 * P);
    assert_eq!(first.json["payment_hash"], inv_a.payment_hash.as_str());
    assert_eq!(first.json["agent_id"], payer_id.as_str());
    // The same key again: the same hold, reserved once.
    let again = gw.pay_raw(&key, &inv_a.bolt11, "needs a person", Some("hold-a")).await;
    assert_eq!((again.status, &again.json), (202, &first.json));
    let w = wallet().await;
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND, 2 * P, FUND - 2 * P));
    assert_eq!(op.agent(&payer_id).await.unwrap().pending_msat, 2 * P);
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (2 * P, 8 * P));
    let queue = op.approvals().await.unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!((queue[0].id.as_str(), queue[0].status.as_str()), (apr_a.as_str(), "pending"));
    assert_eq!(queue[0].purpose, "needs a person");
    assert_eq!(payer.approvals().await.unwrap_err().code(), Some("forbidden"), "the queue is the operator's");
    assert_eq!(payer.approve(&apr_a).await.unwrap_err().code(), Some("forbidden"), "an agent approves nothing");
    assert_eq!(seller.invoice(&inv_a.payment_hash).await.unwrap().status, InvoiceStatus::Open);
    assert_eq!(seller_balance().await, 0);

    // At the threshold: paid at once.
    let r = gw.pay_raw(&key, &invoice(&seller, P).await.bolt11, "small", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (3 * P, 7 * P));

    // Approved: paid once, the reservation turned into the debit.
    let decision = op.approve(&apr_a).await.unwrap();
    assert_eq!(decision.approval.status, "approved");
    assert_eq!(decision.approval.decided_by.as_deref(), Some("operator"));
    let payment = decision.payment.expect("the payment made");
    assert_eq!((payment.status, payment.amount_msat), (PaymentStatus::Succeeded, 2 * P));
    assert_eq!(payment.payment_hash, inv_a.payment_hash);
    assert_eq!(decision.approval.payment_id.as_deref(), Some(payment.id.as_str()));
    assert_eq!(seller_balance().await, 3 * P);
    assert_eq!(seller.invoice(&inv_a.payment_hash).await.unwrap().status, InvoiceStatus::Paid);
    let w = wallet().await;
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND - 3 * P, 0, FUND - 3 * P));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (3 * P, 7 * P), "counted once");
    assert_eq!(gw.payment_count(&payer).await, 2);

    // Deciding again is refused, and moves nothing.
    assert_eq!(op.approve(&apr_a).await.unwrap_err().code(), Some("approval-not-pending"));
    let r = send(gw.request(Method::POST, &format!("/v1/approvals/{apr_a}/deny"), Some(gw.operator_token()))).await;
    r.assert_problem(409, "approval-not-pending");
    // A retry of the held request pays nothing more either: once approved,
    // it answers with the payment the approval made.
    let retried = gw.pay_raw(&key, &inv_a.bolt11, "needs a person", Some("hold-a")).await;
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.json["id"], apr_a.replacen("apr_", "pay_", 1).as_str(), "{retried:?}");
    assert_eq!(seller_balance().await, 3 * P);
    assert_eq!(wallet().await.balance_msat, FUND - 3 * P);
    assert_eq!(gw.payment_count(&payer).await, 2);

    // Denied: the reservation and the budget are given back, the invoice stays open.
    let inv_b = invoice(&seller, 3 * P).await;
    let apr_b = assert_held(&gw.pay_raw(&key, &inv_b.bolt11, "deny me", None).await, 3 * P);
    let w = wallet().await;
    assert_eq!((w.pending_msat, w.available_msat), (3 * P, FUND - 6 * P));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (6 * P, 4 * P));
    let decision = op.deny(&apr_b).await.unwrap();
    assert_eq!((decision.approval.status.as_str(), decision.payment.is_none()), ("denied", true));
    let w = wallet().await;
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND - 3 * P, 0, FUND - 3 * P));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (3 * P, 7 * P));
    assert_eq!(seller.invoice(&inv_b.payment_hash).await.unwrap().status, InvoiceStatus::Open);
    assert_eq!(seller_balance().await, 3 * P);
    assert_eq!(op.approve(&apr_b).await.unwrap_err().code(), Some("approval-not-pending"));

    // A held payment counts against the budget while it waits.
    let inv_c = invoice(&seller, 6 * P).await;
    let apr_c = assert_held(&gw.pay_raw(&key, &inv_c.bolt11, "big", None).await, 6 * P);
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (9 * P, P));
    let inv_d = invoice(&seller, 2 * P).await;
    let r = gw.pay_raw(&key, &inv_d.bolt11, "over while held", None).await;
    assert_eq!(assert_denied(&r, "budget-exceeded")["remaining_msat"].as_u64(), Some(P), "{r:?}");
    op.deny(&apr_c).await.unwrap();
    let apr_d = assert_held(&gw.pay_raw(&key, &inv_d.bolt11, "fits now", None).await, 2 * P);

    // A freeze stops an approval too; the hold survives it.
    op.freeze(&payer_id, Some("hold on")).await.unwrap();
    let r = send(gw.request(Method::POST, &format!("/v1/approvals/{apr_d}/approve"), Some(gw.operator_token()))).await;
    r.assert_problem(403, "agent-frozen");
    assert_eq!(approvals(&gw, "pending").await.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [apr_d.as_str()]);
    assert_eq!(wallet().await.pending_msat, 2 * P);
    op.unfreeze(&payer_id).await.unwrap();
    // So does the kill switch.
    op.set_halted(true).await.unwrap();
    assert_eq!(op.approve(&apr_d).await.unwrap_err().code(), Some("gateway-halted"));
    assert_eq!(op.approvals().await.unwrap().len(), 1);
    op.set_halted(false).await.unwrap();
    assert!(op.approve(&apr_d).await.unwrap().payment.is_some());
    let w = wallet().await;
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND - 5 * P, 0, FUND - 5 * P));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (5 * P, 5 * P));
    assert_eq!(seller_balance().await, 5 * P);

    let by_status = |list: Vec<Approval>| list.into_iter().map(|a| (a.id, a.status)).collect::<Vec<_>>();
    let all = by_status(approvals(&gw, "all").await);
    assert_eq!(all.len(), 4, "{all:?}");
    for (id, status) in [(&apr_a, "approved"), (&apr_b, "denied"), (&apr_c, "denied"), (&apr_d, "approved")] {
        assert!(all.contains(&(id.clone(), status.to_owned())), "{id} {status}: {all:?}");
    }
    assert!(op.approvals().await.unwrap().is_empty());
    assert_eq!(gw.events("payment.held").await.len(), 4);
    assert_eq!(gw.events("approval.decided").await.len(), 4);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// The gateway's clock is moved past the invoice's expiry: no waiting.
#[tokio::test]
async fn a_held_payment_expires_with_its_invoice_and_is_released() {
    let gw = Gateway::start_with_dev_clock().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", FUND).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(
        &payer_id,
        &json!({"approval_above_msat": P, "budgets": [{"limit_msat": 10 * P, "window": "1h", "kind": "rolling"}]}),
    )
    .await
    .unwrap();

    // An invoice of a minute: the hold ends with it.
    let inv = invoice_expiring(&seller, 4 * P, 60).await;
    let apr = assert_held(&gw.pay_raw(&key, &inv.bolt11, "short-lived", None).await, 4 * P);
    let w = payer.wallet().await.unwrap();
    assert_eq!((w.pending_msat, w.available_msat), (4 * P, FUND - 4 * P));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (4 * P, 6 * P));

    // Not before its time: half a minute on, it still waits.
    gw.advance_clock(30_000).await;
    assert!(approvals(&gw, "expired").await.is_empty(), "expired early");
    assert_eq!(op.approvals().await.unwrap().len(), 1);

    // Past the invoice's expiry, the sweep has released it.
    gw.advance_clock(31_000).await;
    let expired = approvals(&gw, "expired").await.into_iter().find(|a| a.id == apr).expect("expired");
    assert_eq!(expired.decided_by.as_deref(), Some("system"));
    assert_eq!(expired.payment_id, None);
    let w = payer.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND, 0, FUND));
    assert_eq!(first_window(&op.budget(&payer_id).await.unwrap()), (0, 10 * P));
    assert!(op.approvals().await.unwrap().is_empty());
    assert_eq!(op.approve(&apr).await.unwrap_err().code(), Some("approval-not-pending"));
    assert_eq!(seller.invoice(&inv.payment_hash).await.unwrap().status, InvoiceStatus::Expired);
    let trail = gw.audit_all(&format!("agent_id={payer_id}&action=approval.expired")).await;
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].record["actor"].as_str(), trail[0].record["rule"].as_str()),
        (Some("system"), Some(apr.as_str()))
    );
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// Releasing a hold gives back only what the hold took. A budget window
/// added while the payment was held never counted it, so the release must
/// not take the held amount out of that window's real spending.
#[tokio::test]
async fn releasing_a_hold_does_not_erase_spending_from_a_window_added_meanwhile() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, _, key) = gw.new_agent("payer", FUND).await;
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;
    let hour = json!({"limit_msat": 20 * P, "window": "1h", "kind": "rolling"});
    op.set_policy(&payer_id, &json!({"approval_above_msat": 4 * P, "budgets": [hour]})).await.unwrap();
    let apr = assert_held(&gw.pay_raw(&key, &invoice(&seller, 5 * P).await.bolt11, "held", None).await, 5 * P);

    // The operator adds a daily budget of 10 prices; 3 are spent under it.
    let day = json!({"limit_msat": 10 * P, "window": "day", "kind": "calendar"});
    op.set_policy(&payer_id, &json!({"approval_above_msat": 4 * P, "budgets": [hour, day]})).await.unwrap();
    assert_eq!(gw.pay_raw(&key, &invoice(&seller, 3 * P).await.bolt11, "spent", None).await.status, 200);
    let report = op.budget(&payer_id).await.unwrap();
    assert_eq!(report["windows"][1]["spent_msat"].as_u64(), Some(3 * P), "{report}");

    op.deny(&apr).await.unwrap();
    let report = op.budget(&payer_id).await.unwrap();
    assert_eq!(first_window(&report), (3 * P, 17 * P), "{report}");
    assert_eq!(
        report["windows"][1]["spent_msat"].as_u64(),
        Some(3 * P),
        "denying the hold erased real spending from the day window: {report}"
    );
    // The day allows 7 more prices, not 10.
    assert_eq!(gw.pay_raw(&key, &invoice(&seller, 4 * P).await.bolt11, "four", None).await.status, 200);
    let r = gw.pay_raw(&key, &invoice(&seller, 4 * P).await.bolt11, "four more", None).await;
    assert_eq!(assert_denied(&r, "budget-exceeded")["remaining_msat"].as_u64(), Some(3 * P), "{r:?}");
    assert!(op.agent(&seller_id).await.unwrap().balance_msat <= 10 * P);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_decisions_on_one_hold_pay_at_most_once() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", FUND).await;
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&payer_id, &json!({"approval_above_msat": 0})).await.unwrap();
    let mut paid_total = 0;
    for round in 0..4 {
        let inv = invoice(&seller, 2 * P).await;
        let apr = assert_held(&gw.pay_raw(&key, &inv.bolt11, "race", None).await, 2 * P);
        // In the first two rounds only approvals race; then approvals and denials.
        let verbs: Vec<&str> = (0..16).map(|i| if round < 2 || i % 2 == 0 { "approve" } else { "deny" }).collect();
        let requests = verbs
            .iter()
            .map(|verb| gw.request(Method::POST, &format!("/v1/approvals/{apr}/{verb}"), Some(gw.operator_token())))
            .collect();
        let mut winners = Vec::new();
        for (verb, r) in verbs.into_iter().zip(all_at_once(requests).await) {
            if r.status == 200 {
                winners.push((verb, r.json["approval"]["status"].as_str().unwrap().to_owned()));
            } else {
                r.assert_problem(409, "approval-not-pending");
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let paid = winners[0] == ("approve", "approved".to_owned());
        assert!(paid || winners[0] == ("deny", "denied".to_owned()), "{winners:?}");
        let status = seller.invoice(&inv.payment_hash).await.unwrap().status;
        assert_eq!(status, if paid { InvoiceStatus::Paid } else { InvoiceStatus::Open });
        if paid {
            paid_total += 2 * P;
        }
        let w = payer.wallet().await.unwrap();
        assert_eq!((w.balance_msat, w.pending_msat), (FUND - paid_total, 0), "round {round}");
        assert_eq!(op.agent(&seller_id).await.unwrap().balance_msat, paid_total, "round {round}");
    }
    assert!(paid_total >= 4 * P, "the first two rounds race approvals only");
    assert_eq!(gw.payment_count(&payer).await as u64, paid_total / (2 * P));
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test]
async fn a_held_invoice_paid_by_someone_else_is_released_not_paid_twice() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (payer_id, payer, key) = gw.new_agent("payer", FUND).await;
    let (_, other, other_key) = gw.new_agent("other-payer", FUND).await;
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&payer_id, &json!({"approval_above_msat": 0})).await.unwrap();
    let inv = invoice(&seller, 3 * P).await;
    let apr = assert_held(&gw.pay_raw(&key, &inv.bolt11, "held", None).await, 3 * P);
    assert_eq!(gw.pay_raw(&other_key, &inv.bolt11, "faster", None).await.status, 200);

    let r = send(gw.request(Method::POST, &format!("/v1/approvals/{apr}/approve"), Some(gw.operator_token()))).await;
    r.assert_problem(409, "approval-not-pending");
    let w = payer.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (FUND, 0, FUND));
    assert_eq!(other.wallet().await.unwrap().balance_msat, FUND - 3 * P);
    assert_eq!(op.agent(&seller_id).await.unwrap().balance_msat, 3 * P);
    let expired = approvals(&gw, "expired").await;
    assert_eq!(expired.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [apr.as_str()]);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}
