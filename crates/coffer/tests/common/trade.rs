//! Helpers of the trade tests: two agents, hold invoices, escrowed
//! payments, wallets read exactly.

use super::{Gateway, Reply, send};
use coffer_client::{Client, CreateInvoiceRequest, EscrowTerms, Invoice, Outcome, PayOutcome, PayRequest, Payment};
use reqwest::Method;
use serde_json::{Value, json};

/// A payer funded with `fund_msat` and a payee with nothing.
pub struct Pair {
    pub payer_id: String,
    pub payer: Client,
    pub payer_key: String,
    pub payee_id: String,
    pub payee: Client,
    pub payee_key: String,
}

pub async fn pair(gw: &Gateway, fund_msat: u64) -> Pair {
    let (payer_id, payer, payer_key) = gw.new_agent("buyer", fund_msat).await;
    let (payee_id, payee, payee_key) = gw.new_agent("seller", 0).await;
    Pair { payer_id, payer, payer_key, payee_id, payee, payee_key }
}

/// A hold invoice of `payee`, valid ten minutes, waiting `hold_secs` once
/// paid.
pub async fn hold_invoice(payee: &Client, amount_msat: u64, hold_secs: u32) -> Invoice {
    let request = CreateInvoiceRequest {
        amount_msat,
        memo: Some("served after payment".into()),
        expiry_secs: Some(600),
        hold: true,
        hold_secs: Some(hold_secs),
    };
    let invoice = payee.create_invoice(&request).await.expect("a hold invoice");
    assert!(invoice.hold && invoice.hold_secs == Some(hold_secs), "{invoice:?}");
    invoice
}

/// Pays `bolt11`, into escrow when `escrow` is given; the payment must be
/// made (not held for approval).
pub async fn pay(payer: &Client, bolt11: &str, escrow: Option<(u32, Outcome)>, key: &str) -> Payment {
    let escrow = escrow.map(|(release_after_secs, on_timeout)| EscrowTerms { release_after_secs, on_timeout });
    let request = PayRequest { bolt11: bolt11.into(), purpose: Some("a job".into()), escrow, ..Default::default() };
    match payer.pay(&request, key).await.expect("paying") {
        PayOutcome::Done(payment) => payment,
        other => panic!("expected a payment, got {other:?}"),
    }
}

/// `(balance, available, pending)` of a wallet, in msat.
pub async fn wallet(agent: &Client) -> (u64, u64, u64) {
    let w = agent.wallet().await.expect("the wallet");
    (w.balance_msat, w.available_msat, w.pending_msat)
}

/// `POST path` with a secret and an optional body: the whole answer.
pub async fn post(gw: &Gateway, secret: &str, path: &str, body: Option<Value>) -> Reply {
    let rb = gw.request(Method::POST, path, Some(secret));
    send(match body {
        Some(body) => rb.json(&body),
        None => rb.json(&json!({})),
    })
    .await
}

/// Asserts `coffer audit` passes.
pub async fn assert_audit(gw: &Gateway) {
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// The events of a kind that concern `payment_id` (its `payment_id` field).
pub async fn events_of(gw: &Gateway, kind: &str, payment_id: &str) -> Vec<(Option<String>, Value)> {
    gw.events(kind).await.into_iter().filter(|(_, data)| data["payment_id"] == payment_id).collect()
}
