//! LND and Core Lightning, fixture-tested: neither can run on this machine,
//! so a local HTTP server answers with bodies written from their API
//! documentation (tests/fixtures) and records what coffer sent. Each test
//! checks the exact request (path, auth header, body) and how coffer reads
//! the answer. A fixture's `"$name"` strings are filled in by the test
//! (`Server::set`), for values signed at run time (a hold invoice's BOLT11).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer::lightning::cln::Cln;
use coffer::lightning::lnbits::Lnbits;
use coffer::lightning::lnd::Lnd;
use coffer::lightning::{FundingSource, HoldState, InvoiceState, LnError, PayResult};
use coffer::payment::bolt11::{Network, NodeSigner};
use coffer::secrets::Secret;
use coffer_core::Msat;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MACAROON_HEX: &str = "0201036c6e6402f801fixture";
const RUNE: &str = "fixture-rune-Ie3s1GhTmQ==";
const PREIMAGE_1: [u8; 32] = [1; 32];
const HASH_1: &str = "72cd6e8422c407fb6d098690f1130b7ded7ec2f7f5e1d30bd9d521f015363793";
const PREIMAGE_2: [u8; 32] = [2; 32];
const HASH_2: &str = "75877bb41d393b5fb8455ce60ecd8dda001d06316496b14dfa7f895656eeca4a";

/// What a request looked like.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Server {
    /// `"METHOD /path"` -> (status, fixture file).
    answers: Arc<Mutex<HashMap<String, (u16, &'static str)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// `"$name"` in a fixture -> its value.
    vars: Arc<Mutex<HashMap<String, String>>>,
}

impl Server {
    async fn start() -> (Server, String) {
        let server = Server::default();
        let app = axum::Router::new().fallback(answer).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, url)
    }

    fn answer(&self, route: &str, status: u16, fixture: &'static str) {
        self.answers.lock().unwrap().insert(route.to_owned(), (status, fixture));
    }

    fn set(&self, name: &str, value: &str) {
        self.vars.lock().unwrap().insert(name.to_owned(), value.to_owned());
    }

    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("a request")
    }
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn answer(State(server): State<Server>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    server.seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path: path.clone(), headers, body });
    let route = format!("{} {}", parts.method, parts.uri.path());
    match server.answers.lock().unwrap().get(&route) {
        Some((status, name)) => {
            let mut text = fixture(name);
            for (var, value) in server.vars.lock().unwrap().iter() {
                text = text.replace(&format!("\"${var}\""), &format!("\"{value}\""));
            }
            (StatusCode::from_u16(*status).unwrap(), text).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no fixture for {route}")).into_response(),
    }
}

fn http() -> reqwest::Client {
    coffer::tls::install_crypto_provider();
    coffer::lightning::config::client(Duration::from_secs(5), None).unwrap()
}

#[tokio::test]
async fn lnd_invoices_carry_coffers_preimage_and_the_macaroon() {
    let (server, url) = Server::start().await;
    let lnd = Lnd::new(&url, Secret::new(MACAROON_HEX.into()), http());
    server.answer("POST /v1/invoices", 200, "lnd/add_invoice.json");
    let made = lnd.create_invoice(Msat::new(21_000), "coffer", 3_600, PREIMAGE_1).await.unwrap();
    assert_eq!(hex::encode(made.payment_hash), HASH_1);
    assert_eq!((made.bolt11.as_str(), made.preimage), ("lnbcrt210n1fixtureinvoicefromlnd", PREIMAGE_1));
    let seen = server.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v1/invoices"));
    assert_eq!(seen.headers["grpc-metadata-macaroon"], MACAROON_HEX);
    assert_eq!(
        seen.body,
        json!({"value_msat": "21000", "memo": "coffer", "expiry": "3600",
               "r_preimage": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="})
    );

    server.answer(&format!("GET /v1/invoice/{HASH_1}"), 200, "lnd/lookup_invoice_settled.json");
    assert_eq!(lnd.lookup_invoice(made.payment_hash).await.unwrap(), InvoiceState::Paid);
    server.answer("GET /v1/balance/channels", 200, "lnd/channel_balance.json");
    assert_eq!(lnd.balance().await.unwrap(), Msat::new(150_000_000));
}

#[tokio::test]
async fn lnd_payments_send_the_fee_limit_and_read_every_ending() {
    let (server, url) = Server::start().await;
    let lnd = Lnd::new(&url, Secret::new(MACAROON_HEX.into()), http());
    server.answer("POST /v2/router/send", 200, "lnd/send_succeeded.jsonl");
    let paid = lnd.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.unwrap();
    assert_eq!(paid, PayResult::Succeeded { preimage: PREIMAGE_2, fee: Msat::new(1_250) });
    let seen = server.last();
    assert_eq!(seen.path, "/v2/router/send");
    assert_eq!(seen.headers["grpc-metadata-macaroon"], MACAROON_HEX);
    assert_eq!(seen.body["payment_request"], "lnbcrt500n1outside");
    assert_eq!(seen.body["fee_limit_msat"], "10000");
    assert_eq!(seen.body["no_inflight_updates"], true);

    server.answer("POST /v2/router/send", 200, "lnd/send_failed.jsonl");
    let failed = lnd.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.unwrap();
    assert!(matches!(failed, PayResult::Failed { reason } if reason.contains("NO_ROUTE")));

    // Lookups: the track stream's first line, base64url hash in the path.
    let hash: [u8; 32] = hex::decode(HASH_2).unwrap().try_into().unwrap();
    let track = "GET /v2/router/track/dYd7tB05O1-4RVzmDs2N2gAdBjFklrFN-n-JVlbuyko=";
    server.answer(track, 200, "lnd/track_in_flight.jsonl");
    assert_eq!(lnd.lookup_payment(hash).await.unwrap(), Some(PayResult::Pending));
    server.answer(track, 200, "lnd/track_not_initiated.jsonl");
    assert_eq!(lnd.lookup_payment(hash).await.unwrap(), None, "unknown to LND");
    server.answer(track, 200, "lnd/send_succeeded.jsonl");
    assert!(matches!(lnd.lookup_payment(hash).await.unwrap(), Some(PayResult::Succeeded { .. })));

    // A server error is no answer: the outcome stays unknown.
    server.answer("POST /v2/router/send", 503, "lnd/track_not_initiated.jsonl");
    assert!(lnd.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.is_err());
}

#[tokio::test]
async fn cln_calls_carry_the_rune_and_coffers_preimage() {
    let (server, url) = Server::start().await;
    let cln = Cln::new(&url, Secret::new(RUNE.into()), http());
    server.answer("POST /v1/invoice", 201, "cln/invoice.json");
    let made = cln.create_invoice(Msat::new(21_000), "coffer", 3_600, PREIMAGE_1).await.unwrap();
    assert_eq!((hex::encode(made.payment_hash), made.preimage), (HASH_1.to_owned(), PREIMAGE_1));
    let seen = server.last();
    assert_eq!(seen.headers["rune"], RUNE);
    assert_eq!(
        seen.body,
        json!({"amount_msat": 21_000, "label": format!("coffer-{HASH_1}"), "description": "coffer", "expiry": 3_600,
               "preimage": hex::encode(PREIMAGE_1)})
    );
    server.answer("POST /v1/listinvoices", 201, "cln/listinvoices_paid.json");
    assert_eq!(cln.lookup_invoice(made.payment_hash).await.unwrap(), InvoiceState::Paid);
    assert_eq!(server.last().body, json!({"payment_hash": HASH_1}));
    server.answer("POST /v1/listfunds", 201, "cln/listfunds.json");
    assert_eq!(cln.balance().await.unwrap(), Msat::new(150_000_000));
}

#[tokio::test]
async fn cln_payments_read_the_fee_and_tell_failed_from_unknown() {
    let (server, url) = Server::start().await;
    let cln = Cln::new(&url, Secret::new(RUNE.into()), http());
    server.answer("POST /v1/pay", 201, "cln/pay_complete.json");
    let paid = cln.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.unwrap();
    assert_eq!(paid, PayResult::Succeeded { preimage: PREIMAGE_2, fee: Msat::new(750) });
    assert_eq!(server.last().body, json!({"bolt11": "lnbcrt500n1outside", "maxfee": 10_000}));
    assert_eq!(server.last().headers["rune"], RUNE);

    server.answer("POST /v1/pay", 500, "cln/pay_no_route.json");
    let failed = cln.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.unwrap();
    assert!(matches!(failed, PayResult::Failed { reason } if reason.contains("Ran out of routes")));
    // 210: timed out, possibly still in flight: not a failure.
    server.answer("POST /v1/pay", 500, "cln/pay_timeout.json");
    assert!(cln.pay_invoice("lnbcrt500n1outside", Msat::new(50_000), Msat::new(10_000)).await.is_err());

    let hash: [u8; 32] = hex::decode(HASH_2).unwrap().try_into().unwrap();
    server.answer("POST /v1/listpays", 201, "cln/listpays_pending.json");
    assert_eq!(cln.lookup_payment(hash).await.unwrap(), Some(PayResult::Pending), "a failed part, one pending");
    assert_eq!(server.last().body, json!({"payment_hash": HASH_2}));
    server.answer("POST /v1/listpays", 201, "cln/listpays_complete.json");
    assert_eq!(
        cln.lookup_payment(hash).await.unwrap(),
        Some(PayResult::Succeeded { preimage: PREIMAGE_2, fee: Msat::new(600) })
    );
    server.answer("POST /v1/listpays", 201, "cln/listpays_empty.json");
    assert_eq!(cln.lookup_payment(hash).await.unwrap(), None);
}

/// `HASH_1` as LND's REST API spells bytes: standard base64.
const HASH_1_BASE64: &str = "cs1uhCLEB/ttCYaQ8RMLfe1+wvf14dML2dUh8BU2N5M=";

/// A BOLT11 of LND's node for a preimage's hash, as LND signs a hold
/// invoice for coffer's hash.
fn lnd_signed(preimage: [u8; 32], amount_msat: u64) -> String {
    let node = NodeSigner::new(bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(), Network::Regtest);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    node.sign_with_preimage(preimage, Msat::new(amount_msat), "coffer hold", 600, now).unwrap().bolt11
}

#[tokio::test]
async fn lnd_hold_invoices_send_coffers_hash_and_read_every_state() {
    let (server, url) = Server::start().await;
    let lnd = Lnd::new(&url, Secret::new(MACAROON_HEX.into()), http());
    let hold = lnd.hold_invoices().expect("LND has hold invoices");
    let hash: [u8; 32] = hex::decode(HASH_1).unwrap().try_into().unwrap();

    let bolt11 = lnd_signed(PREIMAGE_1, 21_000);
    server.set("payment_request", &bolt11);
    server.answer("POST /v2/invoices/hodl", 200, "lnd/add_hold_invoice.json");
    let made = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, Some(144)).await.unwrap();
    assert_eq!(made, bolt11);
    let seen = server.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/v2/invoices/hodl"));
    assert_eq!(seen.headers["grpc-metadata-macaroon"], MACAROON_HEX);
    assert_eq!(
        seen.body,
        json!({"hash": HASH_1_BASE64, "value_msat": "21000", "memo": "coffer hold", "expiry": "600",
               "cltv_expiry": "144"})
    );
    hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, None).await.unwrap();
    assert_eq!(
        server.last().body,
        json!({"hash": HASH_1_BASE64, "value_msat": "21000", "memo": "coffer hold", "expiry": "600"}),
        "no CLTV delta: LND's default"
    );

    // Lookups: the hash as base64 in the query, its `+`, `/`, `=` escaped.
    let lookup = "GET /v2/invoices/lookup";
    for (name, state) in [
        ("lnd/lookup_hold_open.json", HoldState::Open),
        ("lnd/lookup_hold_accepted.json", HoldState::Accepted { amount: Msat::new(21_000) }),
        ("lnd/lookup_hold_settled.json", HoldState::Settled),
        ("lnd/lookup_hold_canceled.json", HoldState::Cancelled),
    ] {
        server.answer(lookup, 200, name);
        assert_eq!(hold.lookup_hold_invoice(hash).await.unwrap(), Some(state), "{name}");
        let seen = server.last();
        assert_eq!(seen.path, "/v2/invoices/lookup?payment_hash=cs1uhCLEB%2FttCYaQ8RMLfe1%2Bwvf14dML2dUh8BU2N5M%3D");
        assert_eq!((seen.method.as_str(), seen.headers["grpc-metadata-macaroon"].as_str()), ("GET", MACAROON_HEX));
    }
    server.answer(lookup, 404, "lnd/lookup_hold_not_found.json");
    assert_eq!(hold.lookup_hold_invoice(hash).await.unwrap(), None, "no record at LND");
    server.answer(lookup, 200, "lnd/lookup_hold_other_hash.json");
    let other = hold.lookup_hold_invoice(hash).await.unwrap_err();
    assert_eq!(other, LnError::Protocol("LND answered about another invoice".into()));
    server.answer(lookup, 200, "lnd/lookup_hold_unknown_state.json");
    let unknown = hold.lookup_hold_invoice(hash).await.unwrap_err();
    assert_eq!(unknown, LnError::Protocol("an invoice state LND does not document: HELD".into()));
    server.answer(lookup, 503, "lnd/lookup_hold_not_found.json");
    assert!(matches!(hold.lookup_hold_invoice(hash).await, Err(LnError::Status { status: 503, .. })));

    // Settle with the preimage, cancel by hash: base64 bodies, `{}` answers.
    server.answer("POST /v2/invoices/settle", 200, "lnd/settle_invoice.json");
    hold.settle_hold_invoice(PREIMAGE_1).await.unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.path.as_str(), seen.headers["grpc-metadata-macaroon"].as_str()),
        ("/v2/invoices/settle", MACAROON_HEX)
    );
    assert_eq!(seen.body, json!({"preimage": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}));
    server.answer("POST /v2/invoices/cancel", 200, "lnd/cancel_invoice.json");
    hold.cancel_hold_invoice(hash).await.unwrap();
    let seen = server.last();
    assert_eq!(
        (seen.path.as_str(), seen.headers["grpc-metadata-macaroon"].as_str()),
        ("/v2/invoices/cancel", MACAROON_HEX)
    );
    assert_eq!(seen.body, json!({"payment_hash": HASH_1_BASE64}));
}

#[tokio::test]
async fn lnd_hold_refusals_are_errors_and_a_wrong_invoice_is_refused() {
    let (server, url) = Server::start().await;
    let lnd = Lnd::new(&url, Secret::new(MACAROON_HEX.into()), http());
    let hold = lnd.hold_invoices().unwrap();
    let hash: [u8; 32] = hex::decode(HASH_1).unwrap().try_into().unwrap();

    server.answer("POST /v2/invoices/settle", 500, "lnd/settle_still_open.json");
    assert_eq!(
        hold.settle_hold_invoice(PREIMAGE_1).await.unwrap_err(),
        LnError::Status {
            status: 500,
            detail: r#"{"code": 2, "message": "invoice still open", "details": []} "#.into()
        }
    );
    server.answer("POST /v2/invoices/cancel", 500, "lnd/cancel_already_settled.json");
    let settled = hold.cancel_hold_invoice(hash).await.unwrap_err();
    assert!(
        matches!(&settled, LnError::Status { status: 500, detail } if detail.contains("already settled")),
        "{settled:?}"
    );
    // Unlike a lookup, a 404 to settle or cancel is no success.
    server.answer("POST /v2/invoices/cancel", 404, "lnd/lookup_hold_not_found.json");
    assert!(matches!(hold.cancel_hold_invoice(hash).await, Err(LnError::Status { status: 404, .. })));
    server.answer("POST /v2/invoices/hodl", 500, "lnd/add_hold_duplicate.json");
    let duplicate = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, None).await.unwrap_err();
    assert!(matches!(&duplicate, LnError::Status { status: 500, detail } if detail.contains("already exists")));

    // The BOLT11 LND made must carry coffer's hash and amount.
    server.answer("POST /v2/invoices/hodl", 200, "lnd/add_hold_invoice.json");
    server.set("payment_request", &lnd_signed(PREIMAGE_2, 21_000));
    let other_hash = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, None).await.unwrap_err();
    assert_eq!(other_hash, LnError::Protocol("the hold invoice carries another payment hash than coffer's".into()));
    server.set("payment_request", &lnd_signed(PREIMAGE_1, 20_000));
    let other_amount = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, None).await.unwrap_err();
    assert_eq!(other_amount, LnError::Protocol("the hold invoice is for another amount than asked".into()));
    server.set("payment_request", "lnbcrt210n1fixtureholdinvoicefromlnd");
    let garbled = hold.create_hold_invoice(Msat::new(21_000), "coffer hold", 600, hash, None).await.unwrap_err();
    assert_eq!(garbled, LnError::Protocol("the hold invoice is not BOLT11".into()));
}

#[tokio::test]
async fn core_lightning_and_lnbits_offer_no_hold_invoices() {
    // Neither is reached: the answer does not depend on the node.
    let cln = Cln::new("http://127.0.0.1:9", Secret::new(RUNE.into()), http());
    assert!(cln.hold_invoices().is_none());
    let lnbits = Lnbits::new("http://127.0.0.1:9", Secret::new("fixture-admin-key".into()), http());
    assert!(lnbits.hold_invoices().is_none());
    let lnd = Lnd::new("http://127.0.0.1:9", Secret::new(MACAROON_HEX.into()), http());
    assert!(lnd.hold_invoices().is_some());
}
