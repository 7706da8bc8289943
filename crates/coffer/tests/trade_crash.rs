//! Trade survives a crash: holds, escrows and sessions open when the
//! gateway is SIGKILLed are all there after the restart, each resumes its
//! deadline and resolves exactly once (one event each, one audit record
//! each), with exact balances and `coffer audit` passing.

mod common;

use coffer_client::{OpenSessionRequest, Outcome, PaymentStatus};
use common::trade::{assert_audit, hold_invoice, pair, pay, wallet};
use common::{Gateway, invoice};

const FUND_MSAT: u64 = 100_000;

#[tokio::test]
async fn open_holds_escrows_and_sessions_resume_their_deadlines_after_sigkill() {
    let mut gw = Gateway::start_with_dev_clock().await;
    let p = pair(&gw, FUND_MSAT).await;
    let hold = pay(&p.payer, &hold_invoice(&p.payee, 10_000, 120).await.bolt11, None, "hold").await;
    let to_release = pay(&p.payer, &invoice(&p.payee, 20_000).await.bolt11, Some((120, Outcome::Release)), "e1").await;
    let to_refund = pay(&p.payer, &invoice(&p.payee, 5_000).await.bolt11, Some((120, Outcome::Refund)), "e2").await;
    let request = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 30_000,
        expires_in_secs: 120,
        purpose: None,
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    let charge = coffer_client::ChargeRequest { amount_msat: 4_000, memo: None };
    p.payee.charge(&session.id, &charge, "c1").await.expect("charged");
    assert_eq!(wallet(&p.payer).await, (96_000, 35_000, 61_000), "everything open before the crash");

    gw.kill9().await;
    gw.restart().await;
    // New clients: the port changed.
    let (payer, payee) = (gw.client(&p.payer_key), gw.client(&p.payee_key));
    assert_eq!(wallet(&payer).await, (96_000, 35_000, 61_000), "every reservation survived");
    assert_eq!(payer.payment(&hold.id).await.unwrap().status, PaymentStatus::Held);
    assert_eq!(payer.session(&session.id).await.unwrap().status, "open");

    // The restarted clock starts from the system's again: two minutes on
    // from there is past every deadline set before the crash.
    gw.advance_clock(121_000).await;
    assert_eq!(payer.payment(&hold.id).await.unwrap().status, PaymentStatus::Refunded);
    assert_eq!(payer.payment(&to_release.id).await.unwrap().status, PaymentStatus::Succeeded);
    assert_eq!(payer.payment(&to_refund.id).await.unwrap().status, PaymentStatus::Refunded);
    let ended = payer.session(&session.id).await.unwrap();
    assert_eq!((ended.status.as_str(), ended.returned_msat), ("expired", Some(26_000)));
    assert_eq!(wallet(&payer).await, (76_000, 76_000, 0));
    assert_eq!(wallet(&payee).await, (24_000, 24_000, 0));

    // Each resolved once, and stays resolved when the sweep runs again.
    gw.advance_clock(60_000).await;
    assert_eq!(gw.events("payment.refunded").await.len(), 2, "the hold and the refunded escrow, once each");
    assert_eq!(gw.events("payment.released").await.len(), 1);
    assert_eq!(gw.events("session.closed").await.len(), 2, "one for each side, once");
    assert_eq!(gw.audit_all("action=escrow.refunded").await.len(), 2);
    assert_eq!(gw.audit_all("action=escrow.released").await.len(), 1);
    assert_eq!(gw.audit_all("action=session.expired").await.len(), 1);
    assert_audit(&gw).await;
}
