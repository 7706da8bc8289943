//! A payer outside the gateway pays an agent's hold invoice through the
//! Lightning backend, end to end through the real `coffer serve` and
//! coffer's real LND client. The backend is a stand-in written from LND's
//! documentation (`tests/common/fake_lnd.rs`: AddHoldInvoice,
//! LookupInvoiceV2, SettleInvoice, CancelInvoice over REST), not a live
//! LND; the test flips its invoices' states (a payer outside pays: the
//! node holds the payment, `ACCEPTED`) and scripts its faults.
//!
//! Shown: the hold invoice is made at the backend for coffer's hash; the
//! outside payment makes the invoice `accepted` without crediting the
//! payee; settling calls the backend's settle with the preimage first and
//! credits the payee once; cancelling calls the backend's cancel and credits
//! nothing; a backend error on settle or cancel changes nothing and a retry
//! works; past the deadline the sweep cancels at the backend (or, when the
//! backend already settled, credits once); an inside payment and an outside
//! one never both win; a SIGKILL with a hold open does not lose its
//! deadline. On a backend without hold invoices (LNbits, here its scripted
//! stand-in) a hold invoice is signed by coffer as before, payable inside
//! only. After each, `coffer audit` passes.

mod common;
#[path = "common/fake_lnbits.rs"]
mod fake_lnbits;
#[path = "common/fake_lnd.rs"]
mod fake_lnd;

use bitcoin::hashes::{Hash, sha256};
use coffer_client::{Client, CreateInvoiceRequest, DepositRequest, Invoice, InvoiceStatus, PaymentStatus};
use common::lightning::{balance_reaches, wait_for};
use common::trade::{assert_audit, pay};
use common::{Gateway, problem};
use fake_lnd::{FakeLnd, Fault, MACAROON_HEX};

async fn start() -> (FakeLnd, Gateway) {
    let (lnd, url) = FakeLnd::start().await;
    let gw = Gateway::start_with_env(&[
        ("COFFER_LIGHTNING", "lnd"),
        ("COFFER_LND_URL", &url),
        ("COFFER_LND_MACAROON", MACAROON_HEX),
        ("COFFER_LIGHTNING_TIMEOUT_MS", "2000"),
    ])
    .await;
    (lnd, gw)
}

/// An agent with nothing in its wallet: `(id, client)`.
async fn agent(gw: &Gateway, name: &str) -> (String, Client) {
    let created = gw.operator().create_agent(name).await.expect("creating an agent");
    (created.id.clone(), gw.client(&created.key))
}

/// An agent funded by a deposit the stand-in's node receives.
async fn funded(gw: &Gateway, lnd: &FakeLnd, amount_msat: u64) -> (String, Client) {
    let (id, client) = agent(gw, "buyer").await;
    let deposit = DepositRequest { amount_msat, agent_id: None, memo: None };
    let invoice = client.create_deposit(&deposit).await.expect("a deposit invoice");
    assert!(lnd.pay_from_outside(&hash(&invoice)));
    balance_reaches(&client, amount_msat).await;
    (id, client)
}

async fn hold_invoice(payee: &Client, amount_msat: u64, hold_secs: u32) -> Invoice {
    let request = CreateInvoiceRequest {
        amount_msat,
        memo: Some("served after payment".into()),
        expiry_secs: Some(600),
        hold: true,
        hold_secs: Some(hold_secs),
    };
    payee.create_invoice(&request).await.expect("a hold invoice")
}

fn hash(invoice: &Invoice) -> [u8; 32] {
    hex::decode(&invoice.payment_hash).expect("hex").try_into().expect("32 bytes")
}

async fn status_reaches(payee: &Client, invoice: &Invoice, status: InvoiceStatus) -> Invoice {
    wait_for(&format!("invoice status {status:?}"), || async {
        let now = payee.invoice(&invoice.payment_hash).await.expect("the invoice");
        (now.status == status).then_some(now)
    })
    .await
}

async fn balance(agent: &Client) -> (u64, u64) {
    let w = agent.wallet().await.expect("the wallet");
    (w.balance_msat, w.pending_msat)
}

/// The `invoice.paid` events of this invoice, as `(agent_id, from)`.
async fn paid_events(gw: &Gateway, invoice: &Invoice) -> Vec<(Option<String>, String)> {
    let events = gw.events("invoice.paid").await.into_iter();
    events
        .filter(|(_, d)| d["payment_hash"] == invoice.payment_hash)
        .map(|(agent, d)| (agent, d["from"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

async fn events_of(gw: &Gateway, kind: &str, invoice: &Invoice) -> Vec<(Option<String>, serde_json::Value)> {
    gw.events(kind).await.into_iter().filter(|(_, d)| d["payment_hash"] == invoice.payment_hash).collect()
}

/// An outside payer pays `invoice`; waits until the gateway accepted it.
async fn paid_from_outside(lnd: &FakeLnd, payee: &Client, invoice: &Invoice) {
    assert!(lnd.pay_from_outside(&hash(invoice)), "the node takes the payment");
    status_reaches(payee, invoice, InvoiceStatus::Accepted).await;
}

#[tokio::test]
async fn an_outside_payment_waits_at_the_node_and_settling_credits_the_payee_once() {
    let (lnd, gw) = start().await;
    let (payee_id, payee) = agent(&gw, "seller").await;
    let invoice = hold_invoice(&payee, 21_000, 600).await;
    // Made at the backend, for coffer's hash, with the CLTV delta the hold
    // needs: the BOLT11 is the node's.
    let at_node = lnd.invoice(&hash(&invoice)).expect("the node made the invoice");
    assert!(at_node.hold, "a hold invoice at the node");
    assert_eq!((at_node.bolt11.as_str(), at_node.amount_msat), (invoice.bolt11.as_str(), 21_000));
    assert_eq!(at_node.cltv_expiry.as_deref(), Some("80"));
    assert_eq!((invoice.status, invoice.hold, invoice.hold_secs), (InvoiceStatus::Open, true, Some(600)));
    // Nothing to settle before it is paid, and nothing asked of the node.
    assert_eq!(problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err()).code, "not-found");
    assert!(lnd.settle_calls().is_empty());

    paid_from_outside(&lnd, &payee, &invoice).await;
    assert_eq!(balance(&payee).await, (0, 0), "accepted: not credited");
    let escrows = payee.escrows(Some("held")).await.expect("the payee's holds");
    assert_eq!(escrows.len(), 1, "{escrows:?}");
    let held = &escrows[0];
    assert_eq!((held.kind.as_str(), held.payer_agent_id.as_str()), ("hold", "outside"));
    assert_eq!((held.payee_agent_id.as_str(), held.amount_msat), (payee_id.as_str(), 21_000));
    let accepted = events_of(&gw, "invoice.accepted", &invoice).await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].0.as_deref(), Some(payee_id.as_str()), "the payee's event");
    assert_eq!(accepted[0].1["payer_agent_id"], "outside");

    let settled = payee.settle_invoice(&invoice.payment_hash).await.expect("settling");
    assert_eq!(settled.status, PaymentStatus::Succeeded);
    assert_eq!(settled.escrow.as_ref().map(|e| e.status.as_str()), Some("released"));
    // The node was asked to settle with the preimage of the invoice's hash.
    let calls = lnd.settle_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(sha256::Hash::hash(&calls[0]).to_byte_array(), hash(&invoice));
    assert_eq!(settled.preimage, Some(hex::encode(calls[0])));
    assert_eq!(lnd.state(&hash(&invoice)), "SETTLED");
    assert_eq!(balance(&payee).await, (21_000, 0), "credited");
    assert_eq!(payee.invoice(&invoice.payment_hash).await.unwrap().status, InvoiceStatus::Paid);
    assert_eq!(paid_events(&gw, &invoice).await, vec![(Some(payee_id.clone()), "outside".to_owned())]);

    // Settling again: refused, nothing asked of the node, nothing credited.
    let again = problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(again.code, "invalid-state", "{}", again.detail);
    assert_eq!(lnd.settle_calls().len(), 1);
    assert_eq!(balance(&payee).await, (21_000, 0));
    assert_eq!(gw.audit_all("action=hold.settled").await.len(), 1);
    assert_audit(&gw).await;
    assert_eq!(lnd.node.lock().unwrap().wrong_macaroons, 0);
}

#[tokio::test]
async fn cancelling_cancels_at_the_node_and_credits_nothing_even_after_an_error() {
    let (lnd, gw) = start().await;
    let (payee_id, payee) = agent(&gw, "seller").await;
    let invoice = hold_invoice(&payee, 30_000, 600).await;
    paid_from_outside(&lnd, &payee, &invoice).await;

    // The node refuses the first cancel: nothing changes here.
    lnd.fail_next_cancel(Fault::Refuse);
    let failed = problem(payee.cancel_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(failed.code, "lightning-backend", "{}", failed.detail);
    assert_eq!(payee.invoice(&invoice.payment_hash).await.unwrap().status, InvoiceStatus::Accepted);
    assert_eq!(payee.escrows(Some("held")).await.unwrap().len(), 1);
    assert_eq!(lnd.state(&hash(&invoice)), "ACCEPTED");

    let cancelled = payee.cancel_invoice(&invoice.payment_hash).await.expect("cancelling again");
    assert_eq!(cancelled.status, PaymentStatus::Refunded);
    assert_eq!(cancelled.preimage, None, "the preimage stays secret");
    assert_eq!(lnd.cancel_calls(&hash(&invoice)), 2);
    assert!(lnd.settle_calls().is_empty());
    assert_eq!(lnd.state(&hash(&invoice)), "CANCELED", "the outside payer has its money back");
    assert_eq!(payee.invoice(&invoice.payment_hash).await.unwrap().status, InvoiceStatus::Cancelled);
    assert_eq!(balance(&payee).await, (0, 0), "nothing credited");
    assert!(paid_events(&gw, &invoice).await.is_empty());
    let cancelled_events = events_of(&gw, "invoice.cancelled", &invoice).await;
    assert_eq!(cancelled_events.len(), 1);
    assert_eq!(cancelled_events[0].0.as_deref(), Some(payee_id.as_str()));
    // Settling a cancelled hold: refused, the node not asked.
    let late = problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(late.code, "invalid-state");
    assert!(lnd.settle_calls().is_empty());
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_backend_error_on_settle_changes_nothing_and_a_retry_credits_once() {
    let (lnd, gw) = start().await;
    let (_, payee) = agent(&gw, "seller").await;
    let invoice = hold_invoice(&payee, 40_000, 600).await;
    paid_from_outside(&lnd, &payee, &invoice).await;

    // Refused: not settled at the node, nothing here.
    lnd.fail_next_settle(Fault::Refuse);
    let failed = problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(failed.code, "lightning-backend", "{}", failed.detail);
    assert_eq!(lnd.state(&hash(&invoice)), "ACCEPTED");
    assert_eq!(payee.invoice(&invoice.payment_hash).await.unwrap().status, InvoiceStatus::Accepted);
    assert_eq!(balance(&payee).await, (0, 0));
    assert_audit(&gw).await;

    // Settled at the node but the answer lost: still nothing here (coffer
    // cannot know), and the retry (LND settles a settled invoice again
    // without error) credits once.
    lnd.fail_next_settle(Fault::LoseAnswer);
    let lost = problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(lost.code, "lightning-backend");
    assert_eq!(lnd.state(&hash(&invoice)), "SETTLED");
    assert_eq!(balance(&payee).await, (0, 0), "never credited on an error");

    let settled = payee.settle_invoice(&invoice.payment_hash).await.expect("the retry");
    assert_eq!(settled.status, PaymentStatus::Succeeded);
    assert_eq!(lnd.settle_calls().len(), 3);
    assert_eq!(balance(&payee).await, (40_000, 0));
    assert_eq!(paid_events(&gw, &invoice).await.len(), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn past_its_deadline_an_outside_hold_is_cancelled_at_the_node() {
    let (lnd, gw) = start().await;
    let (_, payee) = agent(&gw, "seller").await;
    // A one-second hold: the sweep (every second) finds it due.
    let invoice = hold_invoice(&payee, 12_000, 1).await;
    paid_from_outside(&lnd, &payee, &invoice).await;
    status_reaches(&payee, &invoice, InvoiceStatus::Cancelled).await;
    assert_eq!(lnd.state(&hash(&invoice)), "CANCELED");
    assert!(lnd.cancel_calls(&hash(&invoice)) >= 1);
    assert!(lnd.settle_calls().is_empty());
    let ended = payee.escrows(Some("refunded")).await.expect("the payee's holds");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].resolved_by.as_deref(), Some("system"));
    assert_eq!(balance(&payee).await, (0, 0));
    let late = problem(payee.settle_invoice(&invoice.payment_hash).await.unwrap_err());
    assert_eq!(late.code, "invalid-state");
    assert!(lnd.settle_calls().is_empty(), "a settle past the deadline is not sent");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn past_its_deadline_a_hold_the_node_settled_is_credited_once() {
    let (lnd, gw) = start().await;
    let (_, payee) = agent(&gw, "seller").await;
    let invoice = hold_invoice(&payee, 15_000, 1).await;
    paid_from_outside(&lnd, &payee, &invoice).await;
    // The payee's settle reached the node, its answer never came back: the
    // node has settled, coffer has not recorded it. At the deadline the
    // sweep's cancel is refused (settled), the lookup says so, and the
    // payee is credited, once.
    lnd.set_state(&hash(&invoice), "SETTLED");
    status_reaches(&payee, &invoice, InvoiceStatus::Paid).await;
    assert_eq!(balance(&payee).await, (15_000, 0));
    assert_eq!(lnd.state(&hash(&invoice)), "SETTLED");
    assert_eq!(paid_events(&gw, &invoice).await.len(), 1);
    let ended = payee.escrows(Some("released")).await.expect("the payee's holds");
    assert_eq!(ended.len(), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_inside_payment_and_an_outside_one_never_both_win() {
    let (lnd, gw) = start().await;
    let (_, payee) = agent(&gw, "seller").await;
    let (_, buyer) = funded(&gw, &lnd, 100_000).await;

    // Outside first: the agent's payment is refused, its wallet untouched.
    let first = hold_invoice(&payee, 20_000, 600).await;
    paid_from_outside(&lnd, &payee, &first).await;
    let request = coffer_client::PayRequest { bolt11: first.bolt11.clone(), ..Default::default() };
    let refused = problem(buyer.pay(&request, "inside-1").await.unwrap_err());
    assert_eq!(refused.code, "invoice-already-paid");
    assert_eq!(balance(&buyer).await, (100_000, 0));

    // Inside first: the agent's payment waits in the gateway and the node's
    // invoice is cancelled, so no outside payer's money gets locked on it.
    let second = hold_invoice(&payee, 25_000, 600).await;
    let held = pay(&buyer, &second.bolt11, None, "inside-2").await;
    assert_eq!(held.status, PaymentStatus::Held);
    assert_eq!(lnd.state(&hash(&second)), "CANCELED");
    assert!(!lnd.pay_from_outside(&hash(&second)), "the node refuses an outside payment now");
    assert_eq!(balance(&buyer).await, (100_000, 25_000), "reserved on the buyer's wallet");
    let settled = payee.settle_invoice(&second.payment_hash).await.expect("settling inside");
    assert_eq!(settled.status, PaymentStatus::Succeeded);
    assert!(lnd.settle_calls().is_empty(), "an inside hold never goes to the node");
    assert_eq!(balance(&buyer).await, (75_000, 0));

    // The first one, settled: the payee has both, each once.
    payee.settle_invoice(&first.payment_hash).await.expect("settling the outside hold");
    assert_eq!(balance(&payee).await, (45_000, 0));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn an_outside_hold_open_across_a_sigkill_still_ends_at_its_deadline() {
    let (lnd, mut gw) = start().await;
    let created = gw.operator().create_agent("seller").await.expect("creating an agent");
    let payee = gw.client(&created.key);
    let invoice = hold_invoice(&payee, 9_000, 2).await;
    paid_from_outside(&lnd, &payee, &invoice).await;
    gw.kill9().await;
    gw.restart().await;
    let payee = gw.client(&created.key);
    status_reaches(&payee, &invoice, InvoiceStatus::Cancelled).await;
    assert_eq!(lnd.state(&hash(&invoice)), "CANCELED");
    assert_eq!(balance(&payee).await, (0, 0));
    assert_eq!(events_of(&gw, "invoice.cancelled", &invoice).await.len(), 1, "ended once");
    assert_audit(&gw).await;
}

#[tokio::test]
async fn without_hold_invoices_at_the_backend_coffer_signs_the_hold_invoice() {
    let (fake, url) = fake_lnbits::Fake::start().await;
    let gw = fake_lnbits::start_gateway(&url).await;
    let (_, payee) = agent(&gw, "seller").await;
    let invoice = hold_invoice(&payee, 5_000, 600).await;
    assert!(invoice.hold);
    // LNbits made no invoice for it: coffer's own key signed it, so only
    // agents of this gateway can pay it.
    assert!(!fake.script.lock().unwrap().invoices.contains_key(&invoice.payment_hash));
    let (_, buyer) = fake_lnbits::funded_agent(&gw, &fake, 20_000).await;
    let held = pay(&buyer, &invoice.bolt11, None, "inside").await;
    assert_eq!(held.status, PaymentStatus::Held);
    payee.settle_invoice(&invoice.payment_hash).await.expect("settling inside");
    assert_eq!(balance(&payee).await, (5_000, 0));
    assert_eq!(fake.total_pay_calls(), 0, "nothing went to the backend");
    assert_audit(&gw).await;
}
