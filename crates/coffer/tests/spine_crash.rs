//! Crash safety: SIGKILL the server under load, restart it on the same data
//! folder, and find every acknowledged write, with the ledger balanced.

mod common;

use coffer_client::{Invoice, InvoiceStatus, Payment, PaymentStatus};
use common::{Gateway, sha256_hex, try_send};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WORKERS: usize = 16;
const PAYEES: usize = 4;
const FUNDING_MSAT: u64 = 1_000_000_000;
/// Kill once this many payments were acknowledged, or after `LOAD_MAX`.
const ACKED_BEFORE_KILL: usize = 1_500;
const LOAD_MAX: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Acked {
    payer: usize,
    payee: usize,
    id: String,
    hash: String,
    amount_msat: u64,
}

/// A payment whose request was under way when the server died: it may or
/// may not have committed.
#[derive(Clone, Debug)]
struct InFlight {
    payer: usize,
    payee: usize,
    bolt11: String,
    hash: String,
    amount_msat: u64,
    idempotency_key: String,
}

#[derive(Default, Debug)]
struct WorkerLog {
    acked: Vec<Acked>,
    /// Invoices whose creation was acknowledged: (payee, hash).
    invoices: Vec<(usize, String)>,
    in_flight: Option<InFlight>,
    /// Any answer that was neither a 2xx nor a transport failure.
    unexpected: Vec<String>,
}

/// Every page of a listing.
async fn all_pages<T: serde::de::DeserializeOwned>(gw: &Gateway, key: &str, path: &str) -> Vec<T> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=200&cursor={c}"),
            None => format!("{path}?limit=200"),
        };
        let r = common::send(gw.request(Method::GET, &url, Some(key))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let page: coffer_client::Page<T> = serde_json::from_value(r.json).expect("a page");
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_payment_survives_sigkill() {
    let mut gw = Gateway::start().await;
    let mut payers = Vec::new();
    for i in 0..WORKERS {
        payers.push(gw.new_agent(&format!("payer-{i}"), FUNDING_MSAT).await);
    }
    let mut payees = Vec::new();
    for i in 0..PAYEES {
        payees.push(gw.new_agent(&format!("payee-{i}"), 0).await);
    }
    let minted = WORKERS as u64 * FUNDING_MSAT;

    // The load: each worker has its payee make an invoice, then pays it.
    let acked_count = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (w, (_, _, payer_key)) in payers.iter().enumerate() {
        let p = w % PAYEES;
        let http = gw.http().clone();
        let url = gw.url().to_owned();
        let payer_key = payer_key.clone();
        let payee_key = payees[p].2.clone();
        let acked_count = Arc::clone(&acked_count);
        workers.push(tokio::spawn(async move {
            let mut log = WorkerLog::default();
            let deadline = Instant::now() + LOAD_MAX + Duration::from_secs(3);
            for n in 0u64.. {
                if Instant::now() > deadline {
                    break; // a bound, in case the kill never comes
                }
                // Amounts differ per worker and per round, so sums are not
                // a coincidence.
                let amount_msat = 1_000 + (w as u64 * 37 + n * 11) % 997;
                let create = http
                    .post(format!("{url}/v1/invoices"))
                    .bearer_auth(&payee_key)
                    .json(&json!({"amount_msat": amount_msat, "memo": format!("w{w} n{n}")}));
                let invoice = match try_send(create).await {
                    Ok(r) if r.status == 201 => r.json,
                    Ok(r) => {
                        log.unexpected.push(format!("create invoice: {r:?}"));
                        break;
                    }
                    Err(_) => break, // the server is gone
                };
                let hash = invoice["payment_hash"].as_str().unwrap().to_owned();
                let bolt11 = invoice["bolt11"].as_str().unwrap().to_owned();
                log.invoices.push((p, hash.clone()));
                let idempotency_key = format!("crash-{w}-{n}");
                let pay = http
                    .post(format!("{url}/v1/payments"))
                    .bearer_auth(&payer_key)
                    .header("Idempotency-Key", &idempotency_key)
                    .json(&json!({"bolt11": bolt11, "purpose": "load"}));
                match try_send(pay).await {
                    Ok(r) if r.status == 200 => {
                        assert_eq!(r.json["payment_hash"].as_str(), Some(hash.as_str()));
                        assert_eq!(r.json["amount_msat"].as_u64(), Some(amount_msat));
                        let id = r.json["id"].as_str().unwrap().to_owned();
                        log.acked.push(Acked { payer: w, payee: p, id, hash, amount_msat });
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        log.unexpected.push(format!("pay: {r:?}"));
                        break;
                    }
                    Err(_) => {
                        log.in_flight =
                            Some(InFlight { payer: w, payee: p, bolt11, hash, amount_msat, idempotency_key });
                        break;
                    }
                }
            }
            log
        }));
    }

    let started = Instant::now();
    while acked_count.load(Ordering::Relaxed) < ACKED_BEFORE_KILL && started.elapsed() < LOAD_MAX {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.kill9().await;
    let mut logs = Vec::new();
    for w in workers {
        logs.push(w.await.expect("a worker panicked"));
    }
    let unexpected: Vec<_> = logs.iter().flat_map(|l| l.unexpected.clone()).collect();
    assert!(unexpected.is_empty(), "answers other than success under load: {unexpected:#?}");
    let acked: Vec<Acked> = logs.iter().flat_map(|l| l.acked.clone()).collect();
    let in_flight: Vec<InFlight> = logs.iter().filter_map(|l| l.in_flight.clone()).collect();
    assert!(!acked.is_empty(), "no payment was acknowledged before the kill");
    eprintln!("killed after {} acknowledged payments, {} in flight", acked.len(), in_flight.len());

    // The store as the kill left it is consistent on its own.
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit after SIGKILL failed: {report}");

    gw.restart().await;

    // Every acknowledged invoice and payment is there.
    for (p, hash) in logs.iter().flat_map(|l| l.invoices.clone()) {
        let inv = gw
            .client(&payees[p].2)
            .invoice(&hash)
            .await
            .unwrap_or_else(|e| panic!("acknowledged invoice {hash} lost: {e}"));
        assert_eq!(inv.payment_hash, hash);
    }
    let mut payments_by_payer: Vec<BTreeMap<String, Payment>> = Vec::new();
    for (_, _, key) in &payers {
        let listed: Vec<Payment> = all_pages(&gw, key, "/v1/payments").await;
        payments_by_payer.push(listed.into_iter().map(|p| (p.id.clone(), p)).collect());
    }
    for a in &acked {
        let inv = gw.client(&payees[a.payee].2).invoice(&a.hash).await.unwrap();
        assert_eq!(inv.status, InvoiceStatus::Paid, "acknowledged payment {a:?}: its invoice is not paid");
        let listed =
            payments_by_payer[a.payer].get(&a.id).unwrap_or_else(|| panic!("acknowledged payment lost: {a:?}"));
        assert_eq!((listed.payment_hash.as_str(), listed.amount_msat), (a.hash.as_str(), a.amount_msat));
        assert_eq!(listed.status, PaymentStatus::Succeeded);
    }
    // At most one request per worker was in flight: at most that many
    // payments committed without an answer.
    let found: usize = payments_by_payer.iter().map(BTreeMap::len).sum();
    assert!(
        found >= acked.len() && found <= acked.len() + in_flight.len(),
        "found {found}, acked {}, in flight {}",
        acked.len(),
        in_flight.len()
    );

    // A retry of each request in flight, with its Idempotency-Key, settles
    // it exactly once, whether or not it had committed.
    for f in &in_flight {
        let committed_before = payments_by_payer[f.payer].values().filter(|p| p.payment_hash == f.hash).count();
        assert!(committed_before <= 1);
        let retry = gw
            .request(Method::POST, "/v1/payments", Some(&payers[f.payer].2))
            .header("Idempotency-Key", &f.idempotency_key)
            .json(&json!({"bolt11": f.bolt11, "purpose": "load"}));
        let r = common::send(retry).await;
        assert_eq!(r.status, 200, "retrying {f:?} after the restart: {r:?}");
        assert_eq!(
            (r.json["payment_hash"].as_str(), r.json["amount_msat"].as_u64()),
            (Some(f.hash.as_str()), Some(f.amount_msat))
        );
        let listed: Vec<Payment> = all_pages(&gw, &payers[f.payer].2, "/v1/payments").await;
        let for_hash: Vec<_> = listed.iter().filter(|p| p.payment_hash == f.hash).collect();
        assert_eq!(for_hash.len(), 1, "{f:?} paid {} times", for_hash.len());
        assert_eq!(Some(for_hash[0].id.as_str()), r.json["id"].as_str());
        payments_by_payer[f.payer] = listed.into_iter().map(|p| (p.id.clone(), p)).collect();
        let inv = gw.client(&payees[f.payee].2).invoice(&f.hash).await.unwrap();
        assert_eq!(inv.status, InvoiceStatus::Paid);
    }

    // Conservation, exactly: each payer lost what its listed payments say,
    // each payee gained what its paid invoices say, and they agree.
    let balances = gw.balances().await;
    let mut paid_out = 0;
    let mut paid_hashes = BTreeSet::new();
    for (w, (id, _, _)) in payers.iter().enumerate() {
        let spent: u64 = payments_by_payer[w].values().map(|p| p.amount_msat).sum();
        assert_eq!(balances[id], FUNDING_MSAT - spent, "payer {w}");
        paid_out += spent;
        for p in payments_by_payer[w].values() {
            assert!(paid_hashes.insert(p.payment_hash.clone()), "an invoice paid twice: {p:?}");
            let preimage = hex::decode(p.preimage.as_deref().unwrap()).unwrap();
            assert_eq!(sha256_hex(&preimage), p.payment_hash);
        }
    }
    let mut paid_in = 0;
    let mut paid_invoices = BTreeSet::new();
    for (id, _, key) in &payees {
        let invoices: Vec<Invoice> = all_pages(&gw, key, "/v1/invoices").await;
        let paid: Vec<_> = invoices.iter().filter(|i| i.status == InvoiceStatus::Paid).collect();
        let received: u64 = paid.iter().map(|i| i.amount_msat).sum();
        assert_eq!(balances[id], received, "payee {id}");
        paid_invoices.extend(paid.iter().map(|i| i.payment_hash.clone()));
        paid_in += received;
    }
    assert_eq!(paid_in, paid_out);
    assert_eq!(paid_invoices, paid_hashes);
    let total: u64 = balances.values().sum::<u64>() + gw.treasury_msat().await;
    assert_eq!(total, minted, "money was made or lost");

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit after the restart failed: {report}");

    // The restarted gateway works on.
    let payer = gw.client(&payers[0].2);
    let request =
        coffer_client::CreateInvoiceRequest { amount_msat: 1_234, memo: None, expiry_secs: None, ..Default::default() };
    let invoice = gw.client(&payees[0].2).create_invoice(&request).await.unwrap();
    let before = payer.wallet().await.unwrap().balance_msat;
    let r = payer
        .pay(
            &coffer_client::PayRequest {
                bolt11: invoice.bolt11,
                purpose: None,
                amount_msat: None,
                ..Default::default()
            },
            "after-restart",
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, before - 1_234);
}

/// `coffer audit` is not a rubber stamp: a ledger changed behind the
/// gateway's back fails it, and passes again once repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fails_on_a_tampered_ledger() {
    if common::sqlite_only("it tampers with the SQLite file") {
        return;
    }
    let mut gw = Gateway::start().await;
    let (_, payer, _) = gw.new_agent("payer", 50_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let request =
        coffer_client::CreateInvoiceRequest { amount_msat: 5_000, memo: None, expiry_secs: None, ..Default::default() };
    let invoice = payee.create_invoice(&request).await.unwrap();
    payer
        .pay(
            &coffer_client::PayRequest {
                bolt11: invoice.bolt11,
                purpose: None,
                amount_msat: None,
                ..Default::default()
            },
            "k",
        )
        .await
        .unwrap();
    gw.kill9().await;
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit of an untouched ledger failed: {report}");

    let db = rusqlite::Connection::open(gw.data_dir().join("coffer.sqlite3")).unwrap();
    let tamper = |delta: i64| {
        let sql = "UPDATE accounts SET credits_posted = credits_posted + ?1 \
                   WHERE id = (SELECT MIN(id) FROM accounts WHERE kind = 'wallet')";
        assert_eq!(db.execute(sql, [delta]).unwrap(), 1);
    };
    tamper(1);
    let (ok, report) = gw.audit().await;
    assert!(!ok, "audit passed a wallet credited 1 msat out of nowhere: {report}");
    tamper(-1);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit of the repaired ledger failed: {report}");
}
