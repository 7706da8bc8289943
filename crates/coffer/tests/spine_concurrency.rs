//! Races: many payments against one wallet, many retries of one payment,
//! many payers of one invoice. The store must serialise them exactly.

mod common;

use coffer_client::{CreateInvoiceRequest, InvoiceStatus};
use common::{Gateway, all_at_once, send};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;

fn invoice_request(amount_msat: u64) -> CreateInvoiceRequest {
    CreateInvoiceRequest { amount_msat, memo: None, expiry_secs: Some(600), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_payments_against_ten_prices_exactly_ten_succeed() {
    const PRICE: u64 = 2_500;
    let gw = Gateway::start().await;
    let (payer_id, payer, payer_key) = gw.new_agent("payer", 10 * PRICE).await;
    let mut payees = Vec::new();
    for i in 0..4 {
        payees.push(gw.new_agent(&format!("payee-{i}"), 0).await);
    }
    let mut invoices = Vec::new();
    for i in 0..64 {
        let (_, payee, _) = &payees[i % 4];
        invoices.push(payee.create_invoice(&invoice_request(PRICE)).await.unwrap());
    }
    let requests = invoices
        .iter()
        .enumerate()
        .map(|(i, inv)| {
            gw.request(Method::POST, "/v1/payments", Some(&payer_key))
                .header("Idempotency-Key", format!("race-{i}"))
                .json(&json!({"bolt11": inv.bolt11, "purpose": "race"}))
        })
        .collect();
    let replies = all_at_once(requests).await;

    let mut paid_hashes = BTreeSet::new();
    let mut paid_ids = BTreeSet::new();
    let mut refused = 0;
    for r in &replies {
        match r.status {
            200 => {
                assert_eq!(r.json["status"], "succeeded", "{r:?}");
                assert_eq!(r.json["amount_msat"], PRICE);
                assert!(paid_hashes.insert(r.json["payment_hash"].as_str().unwrap().to_owned()));
                assert!(paid_ids.insert(r.json["id"].as_str().unwrap().to_owned()));
            }
            _ => {
                let p = r.assert_problem(402, "insufficient-balance");
                // Every price divides the balance: a refusal comes only once
                // the wallet is empty.
                assert_eq!((p["available_msat"].as_u64(), p["needed_msat"].as_u64()), (Some(0), Some(PRICE)), "{r:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((paid_hashes.len(), refused), (10, 54));

    let w = payer.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.available_msat, w.pending_msat), (0, 0, 0));
    let op = gw.operator();
    assert_eq!(op.agent(&payer_id).await.unwrap().balance_msat, 0);

    // Exactly the ten acknowledged invoices are paid, and their payees hold
    // exactly ten prices.
    let mut credited = 0;
    let mut paid_seen = BTreeSet::new();
    for (id, payee, _) in &payees {
        let balance = op.agent(id).await.unwrap().balance_msat;
        let invs = payee.invoices(None).await.unwrap().items;
        assert_eq!(invs.len(), 16);
        let paid: Vec<_> = invs.iter().filter(|i| i.status == InvoiceStatus::Paid).collect();
        assert_eq!(balance, paid.len() as u64 * PRICE, "payee {id}");
        paid_seen.extend(paid.iter().map(|i| i.payment_hash.clone()));
        credited += balance;
    }
    assert_eq!(credited, 10 * PRICE);
    assert_eq!(paid_seen, paid_hashes);
    let listed = payer.payments(None).await.unwrap().items;
    assert_eq!(listed.iter().map(|p| p.id.clone()).collect::<BTreeSet<_>>(), paid_ids);
    assert_eq!(gw.treasury_msat().await, 0);

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_retries_with_one_idempotency_key_pay_once() {
    let gw = Gateway::start().await;
    let (_, payer, payer_key) = gw.new_agent("payer", 100_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = payee.create_invoice(&invoice_request(4_200)).await.unwrap();
    let body = json!({"bolt11": invoice.bolt11, "purpose": "retry me"});
    let attempt = |key: &str, body: &serde_json::Value| {
        gw.request(Method::POST, "/v1/payments", Some(&payer_key)).header("Idempotency-Key", key).json(body)
    };

    let replies = all_at_once((0..20).map(|_| attempt("retry-key-1", &body)).collect()).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{r:?}");
    }
    let first = &replies[0].json;
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["amount_msat"], 4_200);
    for r in &replies {
        // The very same payment, every field of it.
        assert_eq!(&r.json, first);
    }

    let debited = |balance: u64| 100_000 - balance;
    assert_eq!(debited(payer.wallet().await.unwrap().balance_msat), 4_200, "debited exactly once");
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 4_200, "credited exactly once");
    assert_eq!(payer.payments(None).await.unwrap().items.len(), 1);

    // The same key with another purpose: a conflict, and nothing moves.
    let r = send(attempt("retry-key-1", &json!({"bolt11": invoice.bolt11, "purpose": "something else"}))).await;
    r.assert_problem(409, "idempotency-conflict");
    // The same key for another invoice: a conflict too; that invoice stays open.
    let other = payee.create_invoice(&invoice_request(1_000)).await.unwrap();
    let r = send(attempt("retry-key-1", &json!({"bolt11": other.bolt11, "purpose": "retry me"}))).await;
    r.assert_problem(409, "idempotency-conflict");
    assert_eq!(payee.invoice(&other.payment_hash).await.unwrap().status, InvoiceStatus::Open);
    // The same body with a new key: the invoice is paid already.
    let r = send(attempt("retry-key-2", &body)).await;
    r.assert_problem(409, "invoice-already-paid");

    assert_eq!(payer.wallet().await.unwrap().balance_msat, 95_800);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 4_200);
    assert_eq!(payer.payments(None).await.unwrap().items.len(), 1);

    // Keys belong to their agent: another agent may use the same one.
    let (_, _, third_key) = gw.new_agent("third", 10_000).await;
    let r = send(
        gw.request(Method::POST, "/v1/payments", Some(&third_key))
            .header("Idempotency-Key", "retry-key-1")
            .json(&json!({"bolt11": other.bolt11, "purpose": "retry me"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.json["id"], first["id"]);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 5_200);

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_payers_of_one_invoice_exactly_one_pays() {
    let gw = Gateway::start().await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let mut payers = Vec::new();
    for i in 0..16 {
        payers.push(gw.new_agent(&format!("payer-{i}"), 10_000).await);
    }
    let invoice = payee.create_invoice(&invoice_request(3_000)).await.unwrap();
    let requests = payers
        .iter()
        .map(|(_, _, key)| gw.request(Method::POST, "/v1/payments", Some(key)).json(&json!({"bolt11": invoice.bolt11})))
        .collect();
    let replies = all_at_once(requests).await;
    let mut winners = 0;
    for r in &replies {
        if r.status == 200 {
            winners += 1;
        } else {
            r.assert_problem(409, "invoice-already-paid");
        }
    }
    assert_eq!(winners, 1);
    let balances = gw.balances().await;
    let total_payers: u64 = payers.iter().map(|(id, _, _)| balances[id]).sum();
    assert_eq!(total_payers, 16 * 10_000 - 3_000);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 3_000);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}
