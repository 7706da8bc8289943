//! Bad requests, table-driven: each answers its exact status and problem
//! code, as a well-formed problem, and changes nothing.

mod common;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use coffer_client::{Client, CreateInvoiceRequest, InvoiceStatus, PayOutcome, PayRequest};
use common::{Gateway, send};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone)]
enum Auth {
    None,
    Operator,
    Payer,
    Payee,
    /// The whole `Authorization` header.
    Header(String),
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    /// Bytes with this content type (none if `None`).
    Raw(Option<&'static str>, Vec<u8>),
}

struct Case {
    name: String,
    method: Method,
    path: String,
    auth: Auth,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    code: &'static str,
}

fn case(name: &str, method: Method, path: &str, auth: Auth, body: Body, status: u16, code: &'static str) -> Case {
    Case { name: name.to_owned(), method, path: path.to_owned(), auth, headers: Vec::new(), body, status, code }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
}

/// A raw JSON body: sent as `application/json`, whatever it holds.
fn raw_json(text: &str) -> Body {
    Body::Raw(Some("application/json"), text.as_bytes().to_vec())
}

/// A BOLT11 invoice signed by `signer`, on any network, for any payment
/// hash, optionally claiming another payee (so the signature is wrong).
fn forge(
    currency: Currency,
    amount_msat: Option<u64>,
    payment_hash: [u8; 32],
    signer: &SecretKey,
    claimed_payee: Option<PublicKey>,
) -> String {
    let secp = Secp256k1::new();
    let mut builder = InvoiceBuilder::new(currency)
        .description("forged".into())
        .payment_hash(sha256::Hash::from_byte_array(payment_hash))
        .payment_secret(PaymentSecret([7; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(144)
        .basic_mpp();
    if let Some(amount) = amount_msat {
        builder = builder.amount_milli_satoshis(amount);
    }
    if let Some(payee) = claimed_payee {
        builder = builder.payee_pub_key(payee);
    }
    let raw = builder.build_raw().expect("building a raw invoice");
    let signed = raw.sign::<_, ()>(|message| Ok(secp.sign_ecdsa_recoverable(message, signer))).unwrap();
    signed.to_string()
}

/// Everything a bad request could have changed.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balances: BTreeMap<String, u64>,
    treasury: u64,
    invoices: BTreeMap<String, Vec<(String, InvoiceStatus)>>,
    payments: BTreeMap<String, Vec<String>>,
}

async fn snapshot(gw: &Gateway, agents: &[(&str, &Client)]) -> Snapshot {
    let mut invoices = BTreeMap::new();
    let mut payments = BTreeMap::new();
    for (id, client) in agents {
        let page = client.invoices(None).await.unwrap();
        invoices.insert(id.to_string(), page.items.into_iter().map(|i| (i.payment_hash, i.status)).collect());
        let page = client.payments(None).await.unwrap();
        payments.insert(id.to_string(), page.items.into_iter().map(|p| p.id).collect());
    }
    Snapshot { balances: gw.balances().await, treasury: gw.treasury_msat().await, invoices, payments }
}

async fn invoice(client: &Client, amount_msat: u64, expiry_secs: u32) -> coffer_client::Invoice {
    let request =
        CreateInvoiceRequest { amount_msat, memo: None, expiry_secs: Some(expiry_secs), ..Default::default() };
    client.create_invoice(&request).await.expect("creating an invoice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_answer_exact_problems_and_change_nothing() {
    let gw = Gateway::start_with_dev_clock().await;
    let other_gw = Gateway::start().await;
    let (payer_id, payer, payer_key) = gw.new_agent("payer", 1_000_000).await;
    let (payee_id, payee, payee_key) = gw.new_agent("payee", 0).await;

    // The invoices the payment cases need.
    let own = invoice(&payer, 1_000, 600).await;
    let paid = invoice(&payee, 2_000, 600).await;
    match payer
        .pay(
            &PayRequest { bolt11: paid.bolt11.clone(), purpose: None, amount_msat: None, ..Default::default() },
            "setup",
        )
        .await
        .unwrap()
    {
        PayOutcome::Done(p) => assert_eq!(p.amount_msat, 2_000),
        PayOutcome::Held(v) => panic!("held: {v:?}"),
    }
    let open = invoice(&payee, 3_000, 600).await;
    let too_big = invoice(&payee, 2_000_000, 600).await;
    let expired = invoice(&payee, 4_000, 1).await;
    gw.advance_clock(2_000).await;
    let status = payee.invoice(&expired.payment_hash).await.unwrap().status;
    assert_eq!(status, InvoiceStatus::Expired, "an invoice of 1 s, 2 s on");
    let (_, foreign_agent, _) = other_gw.new_agent("elsewhere", 0).await;
    let foreign = invoice(&foreign_agent, 5_000, 600).await;
    assert!(foreign.bolt11.starts_with("lnbcrt"), "the same network: {}", foreign.bolt11);

    let stranger = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let someone = PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[0x43; 32]).unwrap());
    let mainnet = forge(Currency::Bitcoin, Some(10_000), [1; 32], &stranger, None);
    assert!(mainnet.starts_with("lnbc") && !mainnet.starts_with("lnbcrt"), "{mainnet}");
    let testnet = forge(Currency::BitcoinTestnet, Some(10_000), [2; 32], &stranger, None);
    assert!(testnet.starts_with("lntb"), "{testnet}");
    let mut open_hash = [0u8; 32];
    hex::decode_to_slice(&open.payment_hash, &mut open_hash).unwrap();
    // Our payment hash, 1 msat, signed by someone else: a cheap way to learn
    // the preimage, if it were accepted.
    let copy_of_ours = forge(Currency::Regtest, Some(1), open_hash, &stranger, None);
    let bad_signature = forge(Currency::Regtest, Some(10_000), [3; 32], &stranger, Some(someone));
    let no_amount = forge(Currency::Regtest, None, [4; 32], &stranger, None);

    let before = snapshot(&gw, &[(&payer_id, &payer), (&payee_id, &payee)]).await;
    assert_eq!(before.treasury, 0);

    use Auth::{Operator, Payee, Payer};
    use Method as M;
    let inv = "/v1/invoices";
    let pay = "/v1/payments";
    let fund = format!("/v1/agents/{payer_id}/fund");
    let amount = |v: Value| Body::Json(json!({ "amount_msat": v }));
    let bolt11 = |b: &str| Body::Json(json!({ "bolt11": b, "purpose": "test" }));
    let big = "a".repeat(70 * 1024);
    let long_key = "k".repeat(129);
    #[rustfmt::skip]
    let cases = vec![
        // Bodies that are not the JSON the route takes.
        case("invalid JSON", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 1000"#), 400, "malformed-request"),
        case("JSON string", M::POST, inv, Payee, raw_json(r#""1000""#), 400, "malformed-request"),
        case("empty body", M::POST, inv, Payee, raw_json(""), 400, "malformed-request"),
        case("unknown field", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "tip": 1})), 400, "malformed-request"),
        case("unknown field, pay", M::POST, pay, Payer, Body::Json(json!({"bolt11": open.bolt11, "tip": 1})), 400, "malformed-request"),
        case("amount with an invoice", M::POST, pay, Payer, Body::Json(json!({"bolt11": open.bolt11, "amount_msat": 1})), 400, "invalid-field"),
        case("duplicate field", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 1000, "amount_msat": 1}"#), 400, "malformed-request"),
        case("missing field", M::POST, inv, Payee, Body::Json(json!({"memo": "x"})), 400, "malformed-request"),
        case("missing bolt11", M::POST, pay, Payer, Body::Json(json!({"purpose": "x"})), 400, "malformed-request"),
        case("wrong type", M::POST, inv, Payee, amount(json!("1000")), 400, "malformed-request"),
        case("null amount", M::POST, inv, Payee, amount(Value::Null), 400, "malformed-request"),
        case("fractional amount", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 1000.5}"#), 400, "malformed-request"),
        case("negative amount", M::POST, inv, Payee, raw_json(r#"{"amount_msat": -1000}"#), 400, "malformed-request"),
        case("wrong type, bolt11", M::POST, pay, Payer, Body::Json(json!({"bolt11": 12})), 400, "malformed-request"),
        // Amounts.
        case("zero amount", M::POST, inv, Payee, amount(json!(0)), 400, "invalid-amount"),
        case("21e6 BTC + 1 msat", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 2100000000000000001}"#), 400, "invalid-amount"),
        case("u64 max", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 18446744073709551615}"#), 400, "invalid-amount"),
        case("u64 overflow", M::POST, inv, Payee, raw_json(r#"{"amount_msat": 18446744073709551616}"#), 400, "malformed-request"),
        case("mint zero", M::POST, "/v1/treasury/mint", Operator, amount(json!(0)), 400, "invalid-amount"),
        case("mint 21e6 BTC + 1 msat", M::POST, "/v1/treasury/mint", Operator, raw_json(r#"{"amount_msat": 2100000000000000001}"#), 400, "invalid-amount"),
        case("mint negative", M::POST, "/v1/treasury/mint", Operator, raw_json(r#"{"amount_msat": -1}"#), 400, "malformed-request"),
        case("fund zero", M::POST, &fund, Operator, amount(json!(0)), 400, "invalid-amount"),
        case("fund 21e6 BTC + 1 msat", M::POST, &fund, Operator, raw_json(r#"{"amount_msat": 2100000000000000001}"#), 400, "invalid-amount"),
        case("fund beyond the treasury", M::POST, &fund, Operator, amount(json!(1)), 402, "insufficient-balance"),
        case("fund an unknown agent", M::POST, "/v1/agents/agt_nobody/fund", Operator, amount(json!(1)), 404, "not-found"),
        // Size and media type.
        case("body over 64 KiB", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "memo": big})), 413, "body-too-large"),
        case("body over 64 KiB, pay", M::POST, pay, Payer, bolt11(&big), 413, "body-too-large"),
        case("missing content type", M::POST, inv, Payee, Body::Raw(None, br#"{"amount_msat": 1000}"#.to_vec()), 415, "unsupported-media-type"),
        case("text/plain", M::POST, inv, Payee, Body::Raw(Some("text/plain"), br#"{"amount_msat": 1000}"#.to_vec()), 415, "unsupported-media-type"),
        case("missing content type, pay", M::POST, pay, Payer, Body::Raw(None, json!({"bolt11": open.bolt11}).to_string().into_bytes()), 415, "unsupported-media-type"),
        // Authentication.
        case("missing Authorization", M::GET, "/v1/wallet", Auth::None, Body::None, 401, "unauthorized"),
        case("missing Authorization, pay", M::POST, pay, Auth::None, bolt11(&open.bolt11), 401, "unauthorized"),
        case("missing Authorization, mint", M::POST, "/v1/treasury/mint", Auth::None, amount(json!(1)), 401, "unauthorized"),
        case("wrong key", M::GET, "/v1/wallet", Auth::Header("Bearer csk_0000".into()), Body::None, 401, "unauthorized"),
        case("wrong key, pay", M::POST, pay, Auth::Header("Bearer csk_0000".into()), bolt11(&open.bolt11), 401, "unauthorized"),
        case("a key without its scheme", M::GET, "/v1/wallet", Auth::Header(payer_key.clone()), Body::None, 401, "unauthorized"),
        case("Basic scheme", M::GET, "/v1/wallet", Auth::Header(format!("Basic {payer_key}")), Body::None, 401, "unauthorized"),
        case("an over-long key", M::GET, "/v1/wallet", Auth::Header(format!("Bearer {}", "x".repeat(300))), Body::None, 401, "unauthorized"),
        case("authentication before the body", M::POST, inv, Auth::None, raw_json("{"), 401, "unauthorized"),
        // Invoices to pay.
        case("malformed bolt11", M::POST, pay, Payer, bolt11("lnbcrt1garbage"), 400, "invalid-invoice"),
        case("not an invoice", M::POST, pay, Payer, bolt11("hello"), 400, "invalid-invoice"),
        case("empty bolt11", M::POST, pay, Payer, bolt11(""), 400, "invalid-invoice"),
        case("bolt11 over 7089 characters", M::POST, pay, Payer, bolt11(&"q".repeat(8_000)), 400, "invalid-invoice"),
        case("a mainnet invoice", M::POST, pay, Payer, bolt11(&mainnet), 400, "invalid-invoice"),
        case("a testnet invoice", M::POST, pay, Payer, bolt11(&testnet), 400, "invalid-invoice"),
        case("our payment hash signed by another", M::POST, pay, Payer, bolt11(&copy_of_ours), 400, "invalid-invoice"),
        case("a bad signature", M::POST, pay, Payer, bolt11(&bad_signature), 400, "invalid-invoice"),
        case("no amount", M::POST, pay, Payer, bolt11(&no_amount), 422, "amount-required"),
        case("own invoice", M::POST, pay, Payer, bolt11(&own.bolt11), 422, "self-payment"),
        case("already paid", M::POST, pay, Payer, bolt11(&paid.bolt11), 409, "invoice-already-paid"),
        case("expired", M::POST, pay, Payer, bolt11(&expired.bolt11), 409, "invoice-expired"),
        case("another node's invoice", M::POST, pay, Payer, bolt11(&foreign.bolt11), 422, "no-lightning-backend"),
        case("more than the balance", M::POST, pay, Payer, bolt11(&too_big.bolt11), 402, "insufficient-balance"),
        case("purpose over 512 bytes", M::POST, pay, Payer, Body::Json(json!({"bolt11": open.bolt11, "purpose": "p".repeat(513)})), 400, "invalid-field"),
        case("Idempotency-Key over 128 chars", M::POST, pay, Payer, bolt11(&open.bolt11), 400, "invalid-field").header("Idempotency-Key", long_key),
        case("empty Idempotency-Key", M::POST, pay, Payer, bolt11(&open.bolt11), 400, "invalid-field").header("Idempotency-Key", ""),
        case("Idempotency-Key with a space", M::POST, pay, Payer, bolt11(&open.bolt11), 400, "invalid-field").header("Idempotency-Key", "a b"),
        // Invoice fields.
        case("memo over 639 bytes", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "memo": "m".repeat(640)})), 400, "invalid-field"),
        case("memo over 639 bytes, in 2-byte chars", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "memo": "é".repeat(320)})), 400, "invalid-field"),
        case("expiry_secs 0", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "expiry_secs": 0})), 400, "invalid-field"),
        case("expiry_secs over 7 days", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "expiry_secs": 604_801})), 400, "invalid-field"),
        case("expiry_secs negative", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "expiry_secs": -1})), 400, "malformed-request"),
        case("expiry_secs over u32", M::POST, inv, Payee, Body::Json(json!({"amount_msat": 1000, "expiry_secs": 4_294_967_296u64})), 400, "malformed-request"),
        // Operator fields.
        case("empty agent name", M::POST, "/v1/agents", Operator, Body::Json(json!({"name": ""})), 400, "invalid-field"),
        case("blank agent name", M::POST, "/v1/agents", Operator, Body::Json(json!({"name": "   "})), 400, "invalid-field"),
        case("agent name over 64 chars", M::POST, "/v1/agents", Operator, Body::Json(json!({"name": "n".repeat(65)})), 400, "invalid-field"),
        case("agent name with a control char", M::POST, "/v1/agents", Operator, Body::Json(json!({"name": "a\u{7}b"})), 400, "invalid-field"),
        case("unknown scope", M::POST, &format!("/v1/agents/{payer_id}/keys"), Operator, Body::Json(json!({"scope": "admin"})), 400, "malformed-request"),
        case("key for an unknown agent", M::POST, "/v1/agents/agt_nobody/keys", Operator, Body::Json(json!({"scope": "read"})), 404, "not-found"),
        case("revoke an unknown key", M::DELETE, "/v1/keys/key_nothing", Operator, Body::None, 404, "not-found"),
        case("an unknown agent", M::GET, "/v1/agents/agt_nobody", Operator, Body::None, 404, "not-found"),
        // Routes, methods, paths, queries.
        case("unknown route", M::GET, "/v1/nope", Payer, Body::None, 404, "not-found"),
        case("unknown route, no key", M::GET, "/nope", Auth::None, Body::None, 404, "not-found"),
        case("under an invoice", M::GET, &format!("/v1/invoices/{}/x", open.payment_hash), Payee, Body::None, 404, "not-found"),
        case("wrong method, wallet", M::DELETE, "/v1/wallet", Payer, Body::None, 405, "method-not-allowed"),
        case("wrong method, payments", M::PUT, pay, Payer, bolt11(&open.bolt11), 405, "method-not-allowed"),
        case("wrong method, mint", M::GET, "/v1/treasury/mint", Operator, Body::None, 405, "method-not-allowed"),
        case("wrong method, agents", M::PATCH, "/v1/agents", Operator, Body::None, 405, "method-not-allowed"),
        case("bad payment_hash", M::GET, "/v1/invoices/not-hex", Payee, Body::None, 400, "invalid-field"),
        case("short payment_hash", M::GET, &format!("/v1/invoices/{}", &open.payment_hash[..63]), Payee, Body::None, 400, "invalid-field"),
        case("long payment_hash", M::GET, &format!("/v1/invoices/{}00", open.payment_hash), Payee, Body::None, 400, "invalid-field"),
        case("unknown payment_hash", M::GET, &format!("/v1/invoices/{}", "ab".repeat(32)), Payee, Body::None, 404, "not-found"),
        case("limit 0", M::GET, "/v1/invoices?limit=0", Payee, Body::None, 400, "invalid-field"),
        case("limit 201", M::GET, "/v1/payments?limit=201", Payer, Body::None, 400, "invalid-field"),
        case("limit negative", M::GET, "/v1/payments?limit=-1", Payer, Body::None, 400, "malformed-request"),
        case("a cursor not ours", M::GET, "/v1/payments?cursor=abc", Payer, Body::None, 400, "invalid-field"),
        case("unknown query parameter", M::GET, "/v1/invoices?offset=2", Payee, Body::None, 400, "malformed-request"),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let mut rb = gw.request(c.method.clone(), &c.path, None);
        match &c.auth {
            Auth::None => {}
            Auth::Operator => rb = rb.bearer_auth(gw.operator_token()),
            Auth::Payer => rb = rb.bearer_auth(&payer_key),
            Auth::Payee => rb = rb.bearer_auth(&payee_key),
            Auth::Header(h) => rb = rb.header("Authorization", h),
        }
        for (name, value) in &c.headers {
            rb = rb.header(*name, value);
        }
        rb = match &c.body {
            Body::None => rb,
            Body::Json(v) => rb.json(v),
            Body::Raw(Some(ct), bytes) => rb.header("Content-Type", *ct).body(bytes.clone()),
            Body::Raw(None, bytes) => rb.body(bytes.clone()),
        };
        let r = match common::try_send(rb).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: no answer: {e}", c.name));
                continue;
            }
        };
        let outcome = std::panic::catch_unwind(|| {
            r.assert_problem(c.status, c.code);
            if r.status == 401 {
                assert_eq!(r.headers.get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
            }
        });
        if outcome.is_err() {
            failures.push(format!("{}: expected {} {}, got {} {}", c.name, c.status, c.code, r.status, r.text));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Nothing changed: no balance, no treasury, no invoice, no payment.
    let after = snapshot(&gw, &[(&payer_id, &payer), (&payee_id, &payee)]).await;
    assert_eq!(after, before);
    assert_eq!(payee.invoice(&open.payment_hash).await.unwrap().status, InvoiceStatus::Open);
    assert_eq!(foreign_agent.invoice(&foreign.payment_hash).await.unwrap().status, InvoiceStatus::Open);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");

    // The open invoice those requests aimed at is still payable, for its
    // real amount.
    let request = PayRequest { bolt11: open.bolt11.clone(), purpose: None, amount_msat: None, ..Default::default() };
    let PayOutcome::Done(p) = payer.pay(&request, "after").await.unwrap() else { panic!("held") };
    assert_eq!(p.amount_msat, 3_000);
    assert_eq!(payer.wallet().await.unwrap().balance_msat, before.balances[&payer_id] - 3_000);
}

/// A JSON array is not the object a route takes: serde's derived
/// `Deserialize` accepts a sequence for a struct (fields by position) unless
/// told otherwise, so `[1000]` would create an invoice of 1000 msat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_not_an_object() {
    let gw = Gateway::start().await;
    let (_, payer, payer_key) = gw.new_agent("payer", 10_000).await;
    let (_, payee, payee_key) = gw.new_agent("payee", 0).await;
    let open = invoice(&payee, 3_000, 600).await;
    let cases = [
        ("/v1/invoices", payee_key.as_str(), json!([1000])),
        ("/v1/invoices", payee_key.as_str(), json!([1000, "memo", 60])),
        ("/v1/payments", payer_key.as_str(), json!([open.bolt11])),
        ("/v1/treasury/mint", gw.operator_token(), json!([1000])),
        ("/v1/agents", gw.operator_token(), json!(["by position"])),
    ];
    let mut failures = Vec::new();
    for (path, secret, body) in &cases {
        let r = send(gw.request(Method::POST, path, Some(secret)).json(body)).await;
        if (r.status, r.code()) != (400, Some("malformed-request")) {
            failures.push(format!("POST {path} {body}: expected 400 malformed-request, got {} {}", r.status, r.text));
        }
    }
    assert!(failures.is_empty(), "arrays accepted as objects:\n{}", failures.join("\n"));
    assert_eq!(payee.invoices(None).await.unwrap().items.len(), 1);
    assert!(payer.payments(None).await.unwrap().items.is_empty());
    assert_eq!(gw.treasury_msat().await, 0);
}

/// The API takes amounts of 1 msat to 21 million BTC. Each either works or
/// answers a 4xx problem; a client must never be able to cause a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_amounts_answer_a_problem_never_500() {
    const MONEY_MAX_MSAT: u64 = 2_100_000_000_000_000_000;
    let gw = Gateway::start().await;
    let (_, _, key) = gw.new_agent("a", 0).await;
    let mut failures = Vec::new();

    // BOLT11 counts in pico-BTC within a u64: 1_844_674_407_370_955_161
    // msat is the most it can carry.
    for amount in [1_844_674_407_370_955_161u64, 1_844_674_407_370_955_162, MONEY_MAX_MSAT] {
        let r =
            send(gw.request(Method::POST, "/v1/invoices", Some(&key)).json(&json!({ "amount_msat": amount }))).await;
        let fine = r.status == 201 || (r.status == 400 && r.code() == Some("invalid-amount"));
        if !fine {
            failures.push(format!("invoice of {amount} msat: {} {}", r.status, r.text));
        }
    }

    // Minting the most one request may, again and again: the treasury's
    // total overflows at some point; that must be a problem, not a 500.
    let mut minted: u64 = 0;
    for i in 0..5 {
        let r = send(
            gw.request(Method::POST, "/v1/treasury/mint", Some(gw.operator_token()))
                .json(&json!({ "amount_msat": MONEY_MAX_MSAT })),
        )
        .await;
        match r.status {
            200 => minted += MONEY_MAX_MSAT,
            400..=499 => r.assert_well_formed_problem(),
            _ => failures.push(format!("mint #{i} of 21e6 BTC: {} {}", r.status, r.text)),
        }
    }
    assert_eq!(gw.treasury_msat().await, minted);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
    assert!(failures.is_empty(), "answers of 500 to valid requests:\n{}", failures.join("\n"));
}
