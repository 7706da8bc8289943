//! The spine, end to end through the real binary: agents, funding, an
//! invoice, a payment, the listings and their pagination, and the CLI.

mod common;

use coffer_client::{CreateInvoiceRequest, InvoiceStatus, PayOutcome, PayRequest, Payment, PaymentStatus, Scope};
use common::{Gateway, send, sha256_hex};
use reqwest::Method;
use serde_json::Value;

fn invoice_request(amount_msat: u64, memo: &str) -> CreateInvoiceRequest {
    CreateInvoiceRequest { amount_msat, memo: Some(memo.to_owned()), expiry_secs: Some(600), ..Default::default() }
}

async fn pay(client: &coffer_client::Client, bolt11: &str, purpose: &str, key: &str) -> Payment {
    let request = PayRequest {
        bolt11: bolt11.to_owned(),
        purpose: Some(purpose.to_owned()),
        amount_msat: None,
        ..Default::default()
    };
    match client.pay(&request, key).await.expect("paying") {
        PayOutcome::Done(p) => p,
        PayOutcome::Held(v) => panic!("an internal payment was held: {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_between_two_agents_moves_exactly_its_amount() {
    let gw = Gateway::start().await;
    let (payer_id, payer, _) = gw.new_agent("payer", 1_000_000).await;
    let (payee_id, payee, _) = gw.new_agent("payee", 0).await;
    assert_eq!(gw.treasury_msat().await, 0);

    let invoice = payee.create_invoice(&invoice_request(12_345, "one answer")).await.unwrap();
    assert_eq!(invoice.status, InvoiceStatus::Open);
    assert_eq!(invoice.amount_msat, 12_345);
    assert_eq!(invoice.memo, "one answer");
    assert_eq!(invoice.paid_at, None);
    assert!(invoice.bolt11.starts_with("lnbcrt"), "a regtest invoice: {}", invoice.bolt11);
    assert_eq!(invoice.payment_hash.len(), 64);

    let payment = pay(&payer, &invoice.bolt11, "buy one answer", "e2e-first").await;
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(payment.payment_hash, invoice.payment_hash);
    assert_eq!(payment.amount_msat, 12_345);
    assert_eq!(payment.fee_msat, 0);
    assert_eq!(payment.purpose, "buy one answer");
    assert_eq!(payment.payee_agent_id.as_deref(), Some(payee_id.as_str()));
    assert!(payment.id.starts_with("pay_"), "{}", payment.id);
    let preimage = hex::decode(payment.preimage.as_deref().expect("a preimage")).expect("hex preimage");
    assert_eq!(preimage.len(), 32);
    assert_eq!(sha256_hex(&preimage), payment.payment_hash, "sha256(preimage) == payment_hash");

    // Exactly the amount left one wallet and reached the other.
    let w = payer.wallet().await.unwrap();
    assert_eq!(
        (w.agent_id.as_str(), w.balance_msat, w.available_msat, w.pending_msat),
        (payer_id.as_str(), 987_655, 987_655, 0)
    );
    assert_eq!(w.scope, Scope::Spend);
    let w = payee.wallet().await.unwrap();
    assert_eq!(
        (w.agent_id.as_str(), w.balance_msat, w.available_msat, w.pending_msat),
        (payee_id.as_str(), 12_345, 12_345, 0)
    );
    let op = gw.operator();
    assert_eq!(op.agent(&payer_id).await.unwrap().balance_msat, 987_655);
    assert_eq!(op.agent(&payee_id).await.unwrap().balance_msat, 12_345);
    assert_eq!(gw.treasury_msat().await, 0);

    let seen = payee.invoice(&invoice.payment_hash).await.unwrap();
    assert_eq!(seen.status, InvoiceStatus::Paid);
    assert!(seen.paid_at.is_some());
    assert_eq!(seen.bolt11, invoice.bolt11);

    // The listings show it, to the right agent only.
    let payments = payer.payments(None).await.unwrap();
    assert_eq!(payments.items, vec![payment.clone()]);
    assert_eq!(payments.next_cursor, None);
    let invoices = payee.invoices(None).await.unwrap();
    assert_eq!(invoices.items.len(), 1);
    assert_eq!(invoices.items[0].payment_hash, invoice.payment_hash);
    assert_eq!(invoices.items[0].status, InvoiceStatus::Paid);
    assert!(payee.payments(None).await.unwrap().items.is_empty());
    assert!(payer.invoices(None).await.unwrap().items.is_empty());

    // A retry with the same Idempotency-Key answers the same payment.
    let again = pay(&payer, &invoice.bolt11, "buy one answer", "e2e-first").await;
    assert_eq!(again, payment);
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 987_655);

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// Walks a listing with `limit`, returning each page's items' `key` field.
async fn walk(gw: &Gateway, secret: &str, path: &str, key: &str, limit: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let r = send(gw.request(Method::GET, &url, Some(secret))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let items = r.json["items"].as_array().expect("items").clone();
        assert!(items.len() <= limit as usize, "a page longer than its limit: {r:?}");
        pages.push(items.iter().map(|i| i[key].as_str().expect("key").to_owned()).collect());
        match &r.json["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => break,
            other => panic!("next_cursor is {other}"),
        }
        assert!(pages.len() <= 100, "the walk does not end");
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_without_duplicates_or_gaps() {
    let gw = Gateway::start().await;
    let (_, payer, payer_key) = gw.new_agent("payer", 10_000_000).await;
    let (_, payee, payee_key) = gw.new_agent("payee", 0).await;

    // 11 invoices, 11 payments, oldest first.
    let mut hashes = Vec::new();
    let mut ids = Vec::new();
    for i in 0..11u64 {
        let inv = payee.create_invoice(&invoice_request(1_000 + i, &format!("item {i}"))).await.unwrap();
        let p = pay(&payer, &inv.bolt11, &format!("item {i}"), &format!("page-{i}")).await;
        hashes.push(inv.payment_hash);
        ids.push(p.id);
    }
    let newest_first = |v: &Vec<String>| v.iter().rev().cloned().collect::<Vec<_>>();

    let pages = walk(&gw, &payer_key, "/v1/payments", "id", 2).await;
    // 2+2+2+2+2+1: six pages, the last one short and without a cursor.
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2, 2, 2, 1]);
    assert_eq!(pages.concat(), newest_first(&ids));

    let pages = walk(&gw, &payee_key, "/v1/invoices", "payment_hash", 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2, 2, 2, 1]);
    assert_eq!(pages.concat(), newest_first(&hashes));

    // A multiple of the limit: the last full page still has a cursor, the
    // page after it is empty.
    let pages = walk(&gw, &payer_key, "/v1/payments", "id", 11).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![11, 0]);
    assert_eq!(pages.concat(), newest_first(&ids));

    // The default page holds them all.
    let page = payer.payments(None).await.unwrap();
    assert_eq!(page.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), newest_first(&ids));
    assert_eq!(page.next_cursor, None);

    // A row added during a walk does not shift the pages after the cursor.
    let first = send(gw.request(Method::GET, "/v1/payments?limit=3", Some(&payer_key))).await;
    assert_eq!(first.status, 200);
    let cursor = first.json["next_cursor"].as_str().expect("a cursor").to_owned();
    let inv = payee.create_invoice(&invoice_request(5_000, "late")).await.unwrap();
    let late = pay(&payer, &inv.bolt11, "late", "page-late").await;
    let mut walked: Vec<String> =
        first.json["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    let rest =
        send(gw.request(Method::GET, &format!("/v1/payments?limit=200&cursor={cursor}"), Some(&payer_key))).await;
    assert_eq!(rest.status, 200);
    walked.extend(rest.json["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
    assert_eq!(walked, newest_first(&ids));
    assert_eq!(payer.payments(None).await.unwrap().items[0].id, late.id);

    // Exact totals: 11 payments of 1000..=1010 msat, and the late one.
    let total: u64 = (0..11).map(|i| 1_000 + i).sum::<u64>() + 5_000;
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000_000 - total);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, total);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_mirrors_the_api() {
    let gw = Gateway::start().await;

    // Operator commands.
    let created = gw.cli_operator_json(&["agent", "create", "cli-bot", "--json"]).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let key = created["key"].as_str().expect("a key").to_owned();
    assert!(id.starts_with("agt_") && key.starts_with("csk_"), "{created}");
    let minted = gw.cli_operator_json(&["treasury", "mint", "50000", "--json"]).await;
    assert_eq!((minted["amount_msat"].as_u64(), minted["balance_msat"].as_u64()), (Some(50_000), Some(50_000)));
    let funded = gw.cli_operator_json(&["agent", "fund", &id, "50000", "--json"]).await;
    assert_eq!(funded["balance_msat"].as_u64(), Some(50_000));
    let shown = gw.cli_operator_json(&["agent", "show", &id, "--json"]).await;
    assert_eq!((shown["name"].as_str(), shown["balance_msat"].as_u64()), (Some("cli-bot"), Some(50_000)));
    let treasury = gw.cli_operator_json(&["treasury", "balance", "--json"]).await;
    assert_eq!(treasury["balance_msat"].as_u64(), Some(0));

    // The agent made by the CLI is a real one: its key works over HTTP.
    let bot = gw.client(&key);
    assert_eq!(bot.wallet().await.unwrap().agent_id, id);

    // Agent commands.
    let balance = gw.cli_agent_json(&key, &["balance", "--json"]).await;
    assert_eq!((balance["agent_id"].as_str(), balance["balance_msat"].as_u64()), (Some(id.as_str()), Some(50_000)));

    let (payee_id, payee, payee_key) = gw.new_agent("payee", 0).await;
    let invoice = payee.create_invoice(&invoice_request(7_000, "via the cli")).await.unwrap();
    let paid = gw.cli_agent_json(&key, &["pay", &invoice.bolt11, "--purpose", "cli test", "--json"]).await;
    assert_eq!(paid["status"].as_str(), Some("succeeded"), "{paid}");
    assert_eq!(paid["amount_msat"].as_u64(), Some(7_000));
    assert_eq!(paid["payment_hash"].as_str(), Some(invoice.payment_hash.as_str()));
    assert_eq!(paid["payee_agent_id"].as_str(), Some(payee_id.as_str()));
    let preimage = hex::decode(paid["preimage"].as_str().expect("a preimage")).unwrap();
    assert_eq!(sha256_hex(&preimage), invoice.payment_hash);

    let balance = gw.cli_agent_json(&key, &["balance", "--json"]).await;
    assert_eq!(balance["balance_msat"].as_u64(), Some(43_000));
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 7_000);
    let payments = gw.cli_agent_json(&key, &["payments", "--json"]).await;
    let items = payments["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], paid["id"]);

    // Paying it again through the CLI fails and moves nothing.
    let out = gw.cli(&["pay", &invoice.bolt11, "--json"], &[("COFFER_AGENT_KEY", &key)]).await;
    assert!(!out.status.success(), "paying a paid invoice succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(bot.wallet().await.unwrap().balance_msat, 43_000);

    // The other way: the CLI makes an invoice, HTTP pays it, the CLI sees it paid.
    let made = gw.cli_agent_json(&payee_key, &["invoice", "create", "2500", "--memo", "back", "--json"]).await;
    assert_eq!((made["amount_msat"].as_u64(), made["status"].as_str()), (Some(2_500), Some("open")));
    let bolt11 = made["bolt11"].as_str().unwrap();
    let hash = made["payment_hash"].as_str().unwrap();
    pay(&bot, bolt11, "back", "cli-back").await;
    let shown = gw.cli_agent_json(&payee_key, &["invoice", "show", hash, "--json"]).await;
    assert_eq!(shown["status"].as_str(), Some("paid"));
    assert_eq!(bot.wallet().await.unwrap().balance_msat, 40_500);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 9_500);

    // A wrong key: the CLI fails.
    let out = gw.cli(&["balance", "--json"], &[("COFFER_AGENT_KEY", "csk_wrong")]).await;
    assert!(!out.status.success());

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// An invoice is the same invoice in upper case and behind a `lightning:`
/// URI prefix, as wallets and QR codes present it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_pays_in_upper_case_behind_a_lightning_prefix() {
    let gw = Gateway::start().await;
    let (_, payer, _) = gw.new_agent("payer", 10_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let invoice = payee.create_invoice(&invoice_request(4_321, "qr")).await.unwrap();
    let shouted = format!("LIGHTNING:{}", invoice.bolt11.to_uppercase());
    let p = pay(&payer, &shouted, "qr", "qr-1").await;
    assert_eq!((p.payment_hash.as_str(), p.amount_msat), (invoice.payment_hash.as_str(), 4_321));
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000 - 4_321);
    assert_eq!(payee.wallet().await.unwrap().balance_msat, 4_321);
    // The retry, as the original text: a different body, so a different
    // request; the invoice is paid already.
    let e = payer
        .pay(
            &PayRequest {
                bolt11: invoice.bolt11.clone(),
                purpose: Some("qr".into()),
                amount_msat: None,
                ..Default::default()
            },
            "qr-2",
        )
        .await
        .unwrap_err();
    assert_eq!(common::problem(e).code, "invoice-already-paid");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 10_000 - 4_321);
}

/// `coffer serve` on an address already taken tells the operator which
/// address and why, instead of a bare "internal error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_taken_address_names_it_and_the_cause() {
    let gw = Gateway::start().await;
    let taken = gw.url().trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(common::BIN)
        .args(["serve", "--listen", &taken, "--data"])
        .arg(dir.path())
        .env("COFFER_OPERATOR_TOKEN", "cop_test_a_second_instance_of_32_chars_or_more")
        .env_remove("COFFER_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second gateway started on {taken}: {stderr}");
    assert!(stderr.contains(&format!("listening on {taken}")), "the address is not named: {stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "the cause is not named: {stderr}");
    // The first gateway is untouched.
    assert!(gw.operator().treasury().await.is_ok());
}
