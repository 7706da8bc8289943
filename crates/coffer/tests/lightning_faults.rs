//! Faults of the Lightning backend: a scripted server that speaks LNbits'
//! API (used through coffer's real LNbits client) times out, fails, or
//! answers "pending" for ever, and coffer is SIGKILLed while a payment is in
//! flight. Nothing is created or lost: `coffer audit` passes, the reserve is
//! held until the backend says how the payment ended, the payment's state
//! says what happened, and the same invoice is never sent twice.

mod common;
#[path = "common/fake_lnbits.rs"]
mod fake_lnbits;

use coffer_client::{PayOutcome, PayRequest, PaymentStatus};
use common::lightning::{assert_audit, balance_reaches, finished, pay_out, payment};
use common::problem;
use fake_lnbits::{ADMIN_KEY, Fake, Lookup, PayMode, funded_agent, start_gateway};
use std::time::Duration;

#[tokio::test]
async fn a_deposit_is_credited_once_however_often_it_is_reported() {
    let (fake, url) = Fake::start().await;
    let mut gw = start_gateway(&url).await;
    let (key, agent) = funded_agent(&gw, &fake, 50_000).await;
    drop(agent);
    // The backend keeps saying "paid"; more rounds and a restart credit
    // nothing more.
    gw.restart().await;
    let agent = gw.client(&key);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(agent.wallet().await.unwrap().balance_msat, 50_000);
    let credited = gw.events("invoice.paid").await.len();
    assert_eq!(credited, 1, "one credit event");
    assert_audit(&gw).await;
    assert_eq!(fake.script.lock().unwrap().wrong_keys, 0, "every call carried the admin key");
}

#[tokio::test]
async fn a_payment_settles_at_the_real_fee_and_releases_the_rest_of_the_reserve() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, agent) = funded_agent(&gw, &fake, 200_000).await;
    fake.set(PayMode::Succeed { fee_msat: 3_000 }, Lookup::NotFound);
    let (bolt11, hash) = fake.outside_invoice(100_000);
    let paid = pay_out(&agent, &bolt11, "k1").await;
    assert_eq!((paid.status, paid.amount_msat, paid.fee_msat), (PaymentStatus::Succeeded, 100_000, 3_000));
    assert_eq!(paid.preimage.as_deref(), fake.script.lock().unwrap().preimages.get(&hash).map(String::as_str));
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (97_000, 0), "amount and real fee, nothing reserved");
    // The same invoice again: refused, never sent twice.
    let again = agent
        .pay(&PayRequest { bolt11: bolt11.clone(), purpose: None, amount_msat: None, ..Default::default() }, "k2")
        .await
        .unwrap_err();
    assert_eq!(problem(again).code, "invoice-already-paid");
    // A retry with the first key gets the first answer.
    assert_eq!(pay_out(&agent, &bolt11, "k1").await.id, paid.id);
    assert_eq!(fake.pay_calls(&hash), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_timeout_leaves_the_payment_pending_and_a_restart_finishes_it() {
    let (fake, url) = Fake::start().await;
    let mut gw = start_gateway(&url).await;
    let (key, agent) = funded_agent(&gw, &fake, 200_000).await;
    fake.set(PayMode::Hang, Lookup::Pending);
    let (bolt11, hash) = fake.outside_invoice(100_000);
    let pending = pay_out(&agent, &bolt11, "t1").await;
    assert_eq!(pending.status, PaymentStatus::Pending);
    let detail = pending.detail.clone().unwrap_or_default();
    assert!(detail.contains("outcome unknown") && detail.contains("timed out"), "{detail}");
    let wallet = agent.wallet().await.unwrap();
    // 100 000 plus the fee limit (10 sat) stays reserved.
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000, 110_000));
    let again = agent
        .pay(&PayRequest { bolt11: bolt11.clone(), purpose: None, amount_msat: None, ..Default::default() }, "t2")
        .await
        .unwrap_err();
    assert_eq!(problem(again).code, "payment-in-flight");
    assert_audit(&gw).await;

    // Crash while pending; the backend finished the payment meanwhile.
    gw.kill9().await;
    assert_audit(&gw).await;
    fake.set_lookup(Lookup::Succeeded { fee_msat: 2_000 });
    gw.restart().await;
    let agent = gw.client(&key);
    let done = payment(&agent, &pending.id).await;
    assert_eq!((done.status, done.fee_msat), (PaymentStatus::Succeeded, 2_000), "resolved before serving");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (98_000, 0));
    assert_eq!(fake.pay_calls(&hash), 1, "never sent twice");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_error_stays_pending_until_the_backend_says_failed_then_everything_is_released() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, agent) = funded_agent(&gw, &fake, 200_000).await;
    fake.set(PayMode::Error, Lookup::Pending);
    let (bolt11, hash) = fake.outside_invoice(50_000);
    let pending = pay_out(&agent, &bolt11, "e1").await;
    assert_eq!(pending.status, PaymentStatus::Pending);
    assert!(pending.detail.unwrap_or_default().contains("500"), "the error is the payment's detail");
    assert_eq!(agent.wallet().await.unwrap().pending_msat, 60_000);
    fake.set_lookup(Lookup::Failed);
    let failed = finished(&agent, &pending.id).await;
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert!(failed.detail.unwrap_or_default().contains("failed"));
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000, 0), "refunded in full");

    // A failed invoice may be paid again; a definite failure at once.
    fake.set(PayMode::Fail, Lookup::NotFound);
    let refused = pay_out(&agent, &bolt11, "e2").await;
    assert_eq!(refused.status, PaymentStatus::Failed);
    assert!(refused.detail.unwrap_or_default().contains("no route"));
    assert_eq!(agent.wallet().await.unwrap().available_msat, 200_000);
    assert_eq!(fake.pay_calls(&hash), 2);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_unknown_answer_survives_a_crash_and_a_payment_never_sent_is_failed_after_the_grace() {
    let (fake, url) = Fake::start().await;
    let mut gw = start_gateway(&url).await;
    let (key, agent) = funded_agent(&gw, &fake, 300_000).await;
    fake.set(PayMode::Pending, Lookup::Pending);
    let (bolt11, _) = fake.outside_invoice(100_000);
    let pending = pay_out(&agent, &bolt11, "u1").await;
    assert_eq!(pending.status, PaymentStatus::Pending);
    gw.kill9().await;
    gw.restart().await;
    let agent = gw.client(&key);
    let still = payment(&agent, &pending.id).await;
    assert_eq!(still.status, PaymentStatus::Pending, "only the backend's word ends it");
    assert!(still.detail.unwrap_or_default().contains("in flight"));
    assert_eq!(agent.wallet().await.unwrap().pending_msat, 110_000);
    assert_audit(&gw).await;

    // A backend with no record of a payment (the call never reached it):
    // failed once no call can still be on its way (two timeouts).
    fake.set_lookup(Lookup::NotFound);
    let failed = finished(&agent, &pending.id).await;
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert!(failed.detail.unwrap_or_default().contains("never sent"));
    assert_eq!(agent.wallet().await.unwrap().available_msat, 300_000);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn agent_invoices_come_from_the_backend_and_settle_inside_when_an_agent_pays() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, payer) = funded_agent(&gw, &fake, 100_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice(&payee, 20_000).await;
    assert!(fake.script.lock().unwrap().invoices.contains_key(&invoice.payment_hash), "made by the backend");
    let paid = pay_out(&payer, &invoice.bolt11, "i1").await;
    assert_eq!((paid.status, paid.payee_agent_id.is_some()), (PaymentStatus::Succeeded, true));
    assert_eq!(fake.pay_calls(&invoice.payment_hash), 0, "never routed out");
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 20_000);
    // A later report that the node's invoice was paid credits nothing more.
    fake.mark_paid(&invoice.payment_hash);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 20_000);
    // Whole satoshis only with LNbits; minting is for dev mode.
    let odd = payee
        .create_invoice(&coffer_client::CreateInvoiceRequest {
            amount_msat: 1_500,
            memo: None,
            expiry_secs: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(problem(odd).code, "invalid-amount");
    assert_eq!(problem(gw.operator().mint(1_000).await.unwrap_err()).code, "mint-disabled");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn the_start_line_names_the_backend_and_never_the_key() {
    let (_fake, url) = Fake::start().await;
    let out = tokio::process::Command::new(common::BIN)
        .args(["serve", "--listen", "192.0.2.1:0"])
        .arg("--data")
        .arg(tempfile::tempdir().unwrap().path().join("d"))
        .env("COFFER_LIGHTNING", "lnbits")
        .env("COFFER_LNBITS_URL", &url)
        .env("COFFER_LNBITS_ADMIN_KEY", ADMIN_KEY)
        .env("COFFER_OPERATOR_TOKEN", "cop_test_token_0123456789abcdef0123456789")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    // A documentation address is not this machine's: binding fails, and the
    // process stops after its start-up lines.
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("lightning: lnbits at {url}, network bitcoin")), "{text}");
    assert!(!text.contains(ADMIN_KEY), "{text}");
}

#[tokio::test]
async fn a_lightning_address_is_resolved_checked_and_paid_once() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, agent) = funded_agent(&gw, &fake, 200_000).await;
    let domain = url.trim_start_matches("http://");
    let to = |name: &str, amount_msat: Option<u64>| PayRequest {
        bolt11: format!("{name}@{domain}"),
        purpose: Some("tip".into()),
        amount_msat,
        ..Default::default()
    };
    let paid = match agent.pay(&to("alice", Some(21_000)), "a1").await.unwrap() {
        PayOutcome::Done(p) => p,
        other => panic!("expected a payment, got {other:?}"),
    };
    assert_eq!((paid.status, paid.amount_msat), (PaymentStatus::Succeeded, 21_000));
    // A retry gets the first answer (it fetches an invoice again, but pays
    // nothing).
    match agent.pay(&to("alice", Some(21_000)), "a1").await.unwrap() {
        PayOutcome::Done(p) => assert_eq!(p.id, paid.id),
        other => panic!("expected the first payment, got {other:?}"),
    }
    // An invoice for another amount than asked is refused before paying.
    let lied = agent.pay(&to("liar", Some(21_000)), "a2").await.unwrap_err();
    let lied = problem(lied);
    assert_eq!(lied.code, "invalid-field");
    assert!(lied.detail.contains("amount"), "{}", lied.detail);
    let no_amount = problem(agent.pay(&to("alice", None), "a3").await.unwrap_err());
    assert_eq!(no_amount.code, "invalid-field");
    let wallet = agent.wallet().await.unwrap();
    assert_eq!((wallet.balance_msat, wallet.pending_msat), (200_000 - 21_000, 0));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn many_open_invoices_do_not_starve_a_paid_one() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    // More open invoices than one round asks about (64).
    let mut last = None;
    for _ in 0..100 {
        last = Some(common::invoice(&payee, 1_000).await);
    }
    let last = last.expect("an invoice");
    fake.mark_paid(&last.payment_hash);
    balance_reaches(&payee, 1_000).await;
    assert_audit(&gw).await;
}

/// The expiry sweep leaves an invoice of the backend's node open while the
/// deposit watcher still looks at it: a payment from outside that the node
/// reports after the invoice's expiry is credited, once, and the invoice is
/// never marked expired as well.
#[tokio::test]
async fn an_invoice_of_the_node_reported_paid_after_its_expiry_is_credited_not_swept() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = common::invoice_expiring(&payee, 5_000, 1).await;
    // Past its expiry, over several rounds of the sweep.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(gw.stored_invoice_status(&invoice.payment_hash).as_deref(), Some("open"));
    fake.mark_paid(&invoice.payment_hash);
    balance_reaches(&payee, 5_000).await;
    assert_eq!(gw.stored_invoice_status(&invoice.payment_hash).as_deref(), Some("paid"));
    assert!(gw.events("invoice.expired").await.is_empty(), "{:?}", gw.events("invoice.expired").await);
    assert_eq!(gw.events("invoice.paid").await.len(), 1);
    assert_audit(&gw).await;
}
