//! Trade between agents, end to end over HTTP against the real binary: every
//! lifecycle of a hold invoice, an escrow, a metered session and refunds,
//! with exact balances after each step, the events each side receives, and
//! `coffer audit` passing at the end. Deadlines are reached by moving the
//! gateway's dev clock, never by sleeping.

mod common;

use coffer_client::{ChargeRequest, InvoiceStatus, OpenSessionRequest, Outcome, PaymentStatus, RefundRequest};
use common::trade::{assert_audit, events_of, hold_invoice, pair, pay, post, wallet};
use common::{Gateway, invoice, problem, sha256_hex};
use serde_json::json;

const FUND_MSAT: u64 = 100_000;

#[tokio::test]
async fn hold_then_settle_pays_the_payee_and_reveals_the_preimage_only_then() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = hold_invoice(&p.payee, 30_000, 600).await;

    let paid = pay(&p.payer, &inv.bolt11, None, "hold-1").await;
    assert_eq!((paid.status, paid.preimage.as_deref()), (PaymentStatus::Held, None));
    let escrow = paid.escrow.clone().expect("the hold");
    assert_eq!((escrow.kind.as_str(), escrow.status.as_str(), escrow.on_timeout), ("hold", "held", Outcome::Refund));
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, 70_000, 30_000), "the amount waits on the payer's wallet");
    assert_eq!(wallet(&p.payee).await, (0, 0, 0), "the payee is not credited yet");
    assert_eq!(p.payee.invoice(&inv.payment_hash).await.unwrap().status, InvoiceStatus::Accepted);
    // A second payment of an accepted invoice is refused.
    let again = coffer_client::PayRequest { bolt11: inv.bolt11.clone(), ..Default::default() };
    assert_eq!(problem(p.payer.pay(&again, "hold-2").await.unwrap_err()).code, "invoice-already-paid");
    // The payer cannot settle the payee's invoice.
    post(&gw, &p.payer_key, &format!("/v1/invoices/{}/settle", inv.payment_hash), None)
        .await
        .assert_problem(404, "not-found");

    let settled = p.payee.settle_invoice(&inv.payment_hash).await.expect("settled");
    assert_eq!(settled.status, PaymentStatus::Succeeded);
    let seen = p.payer.payment(&paid.id).await.expect("the payer's view");
    let preimage = hex::decode(seen.preimage.expect("the preimage, once settled")).unwrap();
    assert_eq!(sha256_hex(&preimage), inv.payment_hash, "the preimage proves the payment");
    assert_eq!(seen.escrow.map(|e| (e.status, e.resolved_by)), Some(("released".into(), Some(p.payee_id.clone()))));
    assert_eq!(wallet(&p.payer).await, (70_000, 70_000, 0));
    assert_eq!(wallet(&p.payee).await, (30_000, 30_000, 0));
    assert_eq!(p.payee.invoice(&inv.payment_hash).await.unwrap().status, InvoiceStatus::Paid);
    // Settling twice, or cancelling after, is refused and changes nothing.
    assert_eq!(problem(p.payee.settle_invoice(&inv.payment_hash).await.unwrap_err()).code, "invalid-state");
    assert_eq!(problem(p.payee.cancel_invoice(&inv.payment_hash).await.unwrap_err()).code, "invalid-state");
    assert_eq!(wallet(&p.payee).await, (30_000, 30_000, 0));

    let accepted = events_of(&gw, "invoice.accepted", &paid.id).await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].0.as_deref(), Some(p.payee_id.as_str()), "the payee's event");
    assert_eq!(events_of(&gw, "payment.escrowed", &paid.id).await.len(), 1);
    let released = events_of(&gw, "payment.released", &paid.id).await;
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].0.as_deref(), Some(p.payer_id.as_str()), "the payer's event");
    assert_eq!(events_of(&gw, "invoice.paid", &paid.id).await.len(), 1);
    let trail = gw.audit_all(&format!("agent_id={}&action=escrow.released", p.payer_id)).await;
    assert_eq!(trail.len(), 1, "who settled, in the audit trail");
    assert_eq!(trail[0].record["actor"], json!(p.payee_id));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn hold_then_cancel_refunds_the_payer_in_full() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = hold_invoice(&p.payee, 25_000, 600).await;
    let paid = pay(&p.payer, &inv.bolt11, None, "k").await;
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, 75_000, 25_000));

    let cancelled = p.payee.cancel_invoice(&inv.payment_hash).await.expect("cancelled");
    assert_eq!((cancelled.status, cancelled.refunded_msat), (PaymentStatus::Refunded, 25_000));
    assert_eq!(cancelled.preimage, None, "a cancelled hold never reveals its preimage");
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, FUND_MSAT, 0));
    assert_eq!(wallet(&p.payee).await, (0, 0, 0));
    assert_eq!(p.payee.invoice(&inv.payment_hash).await.unwrap().status, InvoiceStatus::Cancelled);
    let retry = coffer_client::PayRequest { bolt11: inv.bolt11.clone(), ..Default::default() };
    let refused = problem(p.payer.pay(&retry, "k2").await.unwrap_err());
    assert_eq!(refused.code, "invalid-state", "a cancelled invoice is not paid again");
    let refunded = events_of(&gw, "payment.refunded", &paid.id).await;
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0].1["amount_msat"], 25_000);
    assert_eq!(events_of(&gw, "invoice.cancelled", &paid.id).await.len(), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_hold_not_settled_by_its_deadline_is_cancelled() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = hold_invoice(&p.payee, 40_000, 60).await;
    let paid = pay(&p.payer, &inv.bolt11, None, "k").await;
    gw.advance_clock(59_000).await;
    assert_eq!(p.payer.payment(&paid.id).await.unwrap().status, PaymentStatus::Held, "not yet");

    gw.advance_clock(1_000).await;
    let after = p.payer.payment(&paid.id).await.unwrap();
    assert_eq!((after.status, after.preimage), (PaymentStatus::Refunded, None));
    assert_eq!(after.escrow.and_then(|e| e.resolved_by).as_deref(), Some("system"));
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, FUND_MSAT, 0));
    assert_eq!(problem(p.payee.settle_invoice(&inv.payment_hash).await.unwrap_err()).code, "invalid-state");
    assert_eq!(wallet(&p.payee).await, (0, 0, 0));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn escrow_released_by_the_buyer_pays_the_seller() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = invoice(&p.payee, 12_000).await;
    let paid = pay(&p.payer, &inv.bolt11, Some((3_600, Outcome::Refund)), "k").await;
    let escrow = paid.escrow.clone().expect("the escrow");
    assert_eq!(
        (paid.status, escrow.kind.as_str(), escrow.on_timeout),
        (PaymentStatus::Held, "escrow", Outcome::Refund)
    );
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, 88_000, 12_000));
    // The seller cannot take escrowed money: only the buyer releases it.
    assert_eq!(problem(p.payee.settle_invoice(&inv.payment_hash).await.unwrap_err()).code, "invalid-state");
    // Escrow terms are checked before anything moves.
    let bad = json!({"bolt11": invoice(&p.payee, 1_000).await.bolt11,
        "escrow": {"release_after_secs": 0, "on_timeout": "refund"}});
    post(&gw, &p.payer_key, "/v1/payments", Some(bad)).await.assert_problem(400, "invalid-field");

    let released = p.payer.release(&paid.id).await.expect("released");
    assert_eq!(released.status, PaymentStatus::Succeeded);
    assert!(released.preimage.is_some());
    assert_eq!(wallet(&p.payer).await, (88_000, 88_000, 0));
    assert_eq!(wallet(&p.payee).await, (12_000, 12_000, 0));
    assert_eq!(problem(p.payer.release(&paid.id).await.unwrap_err()).code, "invalid-state");
    assert_eq!(problem(p.payer.dispute(&paid.id).await.unwrap_err()).code, "invalid-state");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn escrow_at_its_deadline_follows_its_rule_release_or_refund() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let to_release = pay(&p.payer, &invoice(&p.payee, 10_000).await.bolt11, Some((120, Outcome::Release)), "a").await;
    let to_refund = pay(&p.payer, &invoice(&p.payee, 20_000).await.bolt11, Some((120, Outcome::Refund)), "b").await;
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, 70_000, 30_000));

    gw.advance_clock(120_000).await;
    let released = p.payer.payment(&to_release.id).await.unwrap();
    let refunded = p.payer.payment(&to_refund.id).await.unwrap();
    assert_eq!((released.status, refunded.status), (PaymentStatus::Succeeded, PaymentStatus::Refunded));
    assert_eq!(wallet(&p.payer).await, (90_000, 90_000, 0));
    assert_eq!(wallet(&p.payee).await, (10_000, 10_000, 0));
    // The payee sees the payment it was paid by.
    assert_eq!(p.payee.payment(&to_release.id).await.unwrap().status, PaymentStatus::Succeeded);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_disputed_escrow_waits_past_its_deadline_for_the_operator() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let first = pay(&p.payer, &invoice(&p.payee, 15_000).await.bolt11, Some((60, Outcome::Release)), "a").await;
    let second = pay(&p.payer, &invoice(&p.payee, 5_000).await.bolt11, Some((60, Outcome::Refund)), "b").await;
    assert_eq!(p.payer.dispute(&first.id).await.expect("disputed").status, "disputed");
    assert_eq!(p.payer.dispute(&second.id).await.expect("disputed").status, "disputed");
    assert_eq!(problem(p.payee.dispute(&first.id).await.unwrap_err()).code, "not-found", "only the payer disputes");

    gw.advance_clock(3_600_000).await;
    assert_eq!(p.payer.payment(&first.id).await.unwrap().status, PaymentStatus::Held, "no timeout once disputed");
    let disputes = gw.operator().escrows(Some("disputed")).await.expect("the operator's disputes");
    assert_eq!(disputes.len(), 2);
    // Only the operator resolves.
    let path = format!("/v1/payments/{}/resolve", first.id);
    post(&gw, &p.payer_key, &path, Some(json!({"outcome": "refund"}))).await.assert_problem(403, "forbidden");

    let op = gw.operator();
    assert_eq!(op.resolve(&first.id, Outcome::Refund).await.expect("resolved").status, PaymentStatus::Refunded);
    assert_eq!(op.resolve(&second.id, Outcome::Release).await.expect("resolved").status, PaymentStatus::Succeeded);
    assert_eq!(problem(op.resolve(&first.id, Outcome::Release).await.unwrap_err()).code, "invalid-state");
    assert_eq!(wallet(&p.payer).await, (95_000, 95_000, 0));
    assert_eq!(wallet(&p.payee).await, (5_000, 5_000, 0));
    assert!(gw.operator().escrows(Some("disputed")).await.unwrap().is_empty());
    let trail = gw.audit_all(&format!("agent_id={}&action=escrow.refunded", p.payer_id)).await;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].record["actor"], "operator");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_session_charges_what_was_used_and_returns_the_rest_on_close() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let request = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 10_000,
        expires_in_secs: 3_600,
        purpose: Some("gpu minutes".into()),
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    assert_eq!((session.status.as_str(), session.remaining_msat), ("open", 10_000));
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, 90_000, 10_000), "the maximum is reserved");

    let charge = |amount_msat| ChargeRequest { amount_msat, memo: Some("a minute".into()) };
    let after = p.payee.charge(&session.id, &charge(3_000), "c1").await.expect("charged");
    assert_eq!((after.charged_msat, after.remaining_msat), (3_000, 7_000));
    // A retry of the same charge is answered the same, and charges once.
    let retry = p.payee.charge(&session.id, &charge(3_000), "c1").await.expect("a retry");
    assert_eq!(retry.charges[0].id, after.charges[0].id);
    p.payee.charge(&session.id, &charge(2_500), "c2").await.expect("charged");
    let past = problem(p.payee.charge(&session.id, &charge(5_000), "c3").await.unwrap_err());
    assert_eq!((past.code.as_str(), past.extensions["remaining_msat"].as_u64()), ("session-exhausted", Some(4_500)));
    // The payer cannot charge its own session.
    assert_eq!(problem(p.payer.charge(&session.id, &charge(1), "x").await.unwrap_err()).code, "not-found");
    assert_eq!(wallet(&p.payee).await, (5_500, 5_500, 0), "charges are paid at once");

    let both = [p.payer.session(&session.id).await.unwrap(), p.payee.session(&session.id).await.unwrap()];
    for seen in &both {
        assert_eq!((seen.charged_msat, seen.remaining_msat, seen.charges.len()), (5_500, 4_500, 2));
    }
    let closed = p.payer.close_session(&session.id).await.expect("closed");
    assert_eq!((closed.status.as_str(), closed.returned_msat), ("closed", Some(4_500)));
    assert_eq!(wallet(&p.payer).await, (94_500, 94_500, 0), "the rest returned");
    assert_eq!(problem(p.payee.charge(&session.id, &charge(1), "c4").await.unwrap_err()).code, "invalid-state");
    assert_eq!(problem(p.payee.close_session(&session.id).await.unwrap_err()).code, "invalid-state");
    let opened = gw.events("session.opened").await;
    assert_eq!(opened.len(), 2, "the payer and the payee each learn of it");
    assert_eq!(gw.events("session.charged").await.len(), 2);
    let closed_events = gw.events("session.closed").await;
    assert_eq!(closed_events.len(), 2);
    assert_eq!(closed_events[0].1["returned_msat"], 4_500);
    assert_eq!(p.payer.sessions(None).await.unwrap().items.len(), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_expired_session_returns_its_remainder() {
    let gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let request = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 8_000,
        expires_in_secs: 60,
        purpose: None,
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    let charge = ChargeRequest { amount_msat: 1_000, memo: None };
    p.payee.charge(&session.id, &charge, "c1").await.expect("charged");

    gw.advance_clock(60_000).await;
    let ended = p.payer.session(&session.id).await.unwrap();
    assert_eq!(
        (ended.status.as_str(), ended.returned_msat, ended.closed_by.as_deref()),
        ("expired", Some(7_000), Some("system"))
    );
    assert_eq!(wallet(&p.payer).await, (99_000, 99_000, 0));
    assert_eq!(wallet(&p.payee).await, (1_000, 1_000, 0));
    assert_eq!(problem(p.payee.charge(&session.id, &charge, "c2").await.unwrap_err()).code, "invalid-state");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn refunds_in_parts_up_to_the_total_and_never_past_it() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let paid = pay(&p.payer, &invoice(&p.payee, 10_000).await.bolt11, None, "k").await;
    assert_eq!(paid.status, PaymentStatus::Succeeded);
    let refund = |amount_msat| RefundRequest { amount_msat, reason: Some("part was missing".into()) };

    let first = p.payee.refund(&paid.id, &refund(4_000), "r1").await.expect("refunded");
    assert_eq!((first.amount_msat, first.payment_refunded_msat), (4_000, 4_000));
    let retried = p.payee.refund(&paid.id, &refund(4_000), "r1").await.expect("a retry");
    assert_eq!(retried.id, first.id, "a retry refunds once");
    // The payer cannot refund itself.
    assert_eq!(problem(p.payer.refund(&paid.id, &refund(1), "x").await.unwrap_err()).code, "not-found");
    let past = problem(p.payee.refund(&paid.id, &refund(6_001), "r2").await.unwrap_err());
    assert_eq!(
        (past.code.as_str(), past.extensions["remaining_msat"].as_u64()),
        ("refund-exceeds-payment", Some(6_000))
    );
    p.payee.refund(&paid.id, &refund(6_000), "r3").await.expect("the rest");
    assert_eq!(problem(p.payee.refund(&paid.id, &refund(1), "r4").await.unwrap_err()).code, "invalid-state");

    let seen = p.payer.payment(&paid.id).await.unwrap();
    assert_eq!((seen.status, seen.refunded_msat, seen.refunds.len()), (PaymentStatus::Refunded, 10_000, 2));
    assert_eq!(wallet(&p.payer).await, (FUND_MSAT, FUND_MSAT, 0));
    assert_eq!(wallet(&p.payee).await, (0, 0, 0));
    let events = events_of(&gw, "payment.refunded", &paid.id).await;
    assert_eq!(events.iter().map(|e| e.1["refunded_msat"].as_u64().unwrap()).collect::<Vec<_>>(), [4_000, 10_000]);
    assert_audit(&gw).await;
}
