//! coffer as a Nostr Wallet Connect wallet (NIP-47), against real outside
//! components: PyPI's `nostr-relay` (started by `.ci/run` on loopback) and
//! `@getalby/sdk`'s `NWCClient` (npm), driven by
//! tests/interop/js/nwc_client.mjs. What the SDK cannot do (publish one
//! request twice, forge a signature) a client written here does
//! (`common::nostr`), through the same relays.

mod common;

use coffer_client::{Client, CreateNwcConnectionRequest, NwcConnectionCreated};
use common::nostr::{self, NwcClient, Relay};
use common::{Gateway, invoice};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const FUNDS_MSAT: u64 = 100_000;
const CAP_MSAT: u64 = 20_000;

fn js_dir() -> Option<PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/js");
    if dir.join("node_modules/@getalby/sdk").is_dir() {
        return Some(dir);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!in_ci, "{}/node_modules is missing under CI: the setup step `npm ci` must run", dir.display());
    eprintln!("\n*** SKIPPED: the @getalby/sdk interop: run `npm ci` in {} (bash .ci/run does) ***", dir.display());
    None
}

/// Runs `calls` with @getalby/sdk's NWCClient on `uri`: one JSON line
/// each, in order.
async fn sdk(dir: &std::path::Path, uri: &str, calls: Value) -> Vec<Value> {
    let out = tokio::process::Command::new("node")
        .arg(dir.join("nwc_client.mjs"))
        .arg(uri)
        .arg(calls.to_string())
        .arg("15000")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

async fn connect(gw: &Gateway, agent_id: &str, name: &str, methods: Option<&[&str]>) -> NwcConnectionCreated {
    let request = CreateNwcConnectionRequest {
        name: name.into(),
        methods: methods.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
        expires_at: None,
        notifications: None,
    };
    gw.operator().create_nwc_connection(agent_id, &request).await.expect("an NWC connection")
}

async fn available(client: &Client) -> u64 {
    client.wallet().await.expect("the wallet").available_msat
}

/// The gateway and relay of a test: `None` when the relays are not there
/// (and not under CI).
async fn nwc_gateway(what: &str) -> Option<(Gateway, String, String)> {
    let (relay, nosig) = nostr::relays(what)?;
    let relays = format!("{relay},{nosig}");
    let gw = Gateway::start_with_env(&[("COFFER_NWC_RELAYS", &relays)]).await;
    Some((gw, relay, nosig))
}

#[tokio::test]
async fn getalby_nwc_client_spends_an_agent_wallet_within_its_constitution() {
    let Some(dir) = js_dir() else { return };
    let Some((gw, _, _)) = nwc_gateway("NWCClient against coffer").await else { return };
    let (payer_id, payer, _) = gw.new_agent("payer", FUNDS_MSAT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    gw.operator().set_policy(&payer_id, &json!({"max_payment_msat": CAP_MSAT})).await.expect("a policy");
    let created = connect(&gw, &payer_id, "an agent tool", None).await;
    assert!(created.uri.starts_with("nostr+walletconnect://") && created.uri.contains("secret="), "{}", created.uri);
    let (within, over) = (invoice(&payee, 10_000).await, invoice(&payee, 50_000).await);

    let calls = json!([
        {"method": "getInfo"},
        {"method": "getBalance"},
        {"method": "makeInvoice", "params": {"amount": 7_000, "description": "for a weather report"}},
        {"method": "payInvoice", "params": {"invoice": within.bolt11}},
        {"method": "lookupInvoice", "params": {"payment_hash": within.payment_hash}},
        {"method": "lookupInvoice", "params": {"payment_hash": {"$ref": "2.payment_hash"}}},
        {"method": "listTransactions", "params": {}},
        {"method": "payInvoice", "params": {"invoice": over.bolt11}},
        {"method": "getBalance"},
    ]);
    let r = sdk(&dir, &created.uri, calls).await;
    assert!(r[..7].iter().all(|c| c["ok"] == true), "{r:#?}");
    assert_eq!(r[0]["encryption"], "nip44_v2", "the SDK chose NIP-44 from coffer's info event");
    let methods = r[0]["result"]["methods"].as_array().expect("methods");
    assert!(methods.iter().any(|m| m == "pay_invoice") && methods.iter().any(|m| m == "list_transactions"));
    assert_eq!(r[1]["result"]["balance"], FUNDS_MSAT);

    let made = &r[2]["result"];
    assert_eq!((made["amount"].as_u64(), made["type"].as_str()), (Some(7_000), Some("incoming")), "{made}");
    let hash = made["payment_hash"].as_str().expect("a payment hash");
    assert_eq!(payer.invoice(hash).await.expect("the agent's own invoice").amount_msat, 7_000);

    let preimage = hex::decode(r[3]["result"]["preimage"].as_str().expect("a preimage")).expect("hex");
    assert_eq!(common::sha256_hex(&preimage), within.payment_hash, "the preimage is the paid invoice's");
    let looked = &r[4]["result"];
    assert_eq!((looked["type"].as_str(), looked["state"].as_str()), (Some("outgoing"), Some("settled")), "{looked}");
    assert_eq!(r[5]["result"]["state"], "pending", "its own unpaid invoice");
    let listed = r[6]["result"]["transactions"].as_array().expect("transactions");
    assert!(listed.iter().any(|t| t["payment_hash"] == within.payment_hash.as_str()), "{listed:?}");

    // Over the cap: a NIP-47 error that names the rule, and nothing moves.
    assert_eq!((r[7]["ok"].as_bool(), r[7]["code"].as_str()), (Some(false), Some("QUOTA_EXCEEDED")), "{:?}", r[7]);
    assert!(r[7]["message"].as_str().is_some_and(|m| m.contains("max_payment_msat")), "{:?}", r[7]);
    assert_eq!(r[8]["result"]["balance"], FUNDS_MSAT - 10_000);
    assert_eq!(available(&payer).await, FUNDS_MSAT - 10_000, "paid once, within policy");
    assert_eq!(available(&payee).await, 10_000);
    let denied = gw.events("payment.denied").await;
    assert_eq!(denied.len(), 1, "the refusal is recorded once, as an HTTP one is");
    assert_eq!(denied[0].1["purpose"], "NWC: an agent tool", "{:?}", denied[0]);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");

    // The connection acts under its name, and is listed as used.
    let listed = gw.operator().nwc_connections(&payer_id).await.expect("the connections");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some() && listed[0].revoked_at.is_none(), "{listed:?}");

    // Revoked: refused, and nothing is paid.
    gw.operator().revoke_nwc_connection(&payer_id, &created.id).await.expect("revoked");
    let again = invoice(&payee, 1_000).await;
    let r = sdk(&dir, &created.uri, json!([{"method": "payInvoice", "params": {"invoice": again.bolt11}}])).await;
    assert_eq!((r[0]["ok"].as_bool(), r[0]["code"].as_str()), (Some(false), Some("UNAUTHORIZED")), "{r:?}");
    assert_eq!(available(&payer).await, FUNDS_MSAT - 10_000, "a revoked connection pays nothing");
}

#[tokio::test]
async fn a_connection_gets_only_the_methods_it_was_given() {
    let Some(dir) = js_dir() else { return };
    let Some((gw, _, _)) = nwc_gateway("NWC method grants").await else { return };
    let (payer_id, payer, _) = gw.new_agent("reader", FUNDS_MSAT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let created = connect(&gw, &payer_id, "read only", Some(&["get_info", "get_balance"])).await;
    let bill = invoice(&payee, 1_000).await;
    let calls = json!([
        {"method": "getInfo"},
        {"method": "getBalance"},
        {"method": "payInvoice", "params": {"invoice": bill.bolt11}},
    ]);
    let r = sdk(&dir, &created.uri, calls).await;
    assert_eq!(r[0]["result"]["methods"], json!(["get_info", "get_balance"]), "{r:?}");
    assert_eq!(r[1]["result"]["balance"], FUNDS_MSAT);
    assert_eq!(r[2]["code"], "RESTRICTED", "{r:?}");
    assert_eq!(available(&payer).await, FUNDS_MSAT);

    let bad = CreateNwcConnectionRequest {
        name: "x".into(),
        methods: Some(vec!["pay_keysend".into()]),
        expires_at: None,
        notifications: None,
    };
    let e = common::problem(gw.operator().create_nwc_connection(&payer_id, &bad).await.expect_err("unknown method"));
    assert_eq!((e.status, e.code.as_str()), (400, "invalid-field"), "{}", e.detail);
    let e = common::problem(payer.create_nwc_connection("agt_someone_else", &bad).await.expect_err("not its own"));
    assert!(matches!(e.status, 403 | 404), "{e:?}");
}

#[tokio::test]
async fn notifications_reach_the_sdk_client() {
    let Some(dir) = js_dir() else { return };
    let Some((gw, _, _)) = nwc_gateway("NWC notifications").await else { return };
    let (payer_id, _, _) = gw.new_agent("payer", FUNDS_MSAT).await;
    let (payee_id, _, _) = gw.new_agent("payee", 0).await;
    let payer_uri = connect(&gw, &payer_id, "payer tool", None).await.uri;
    let payee_uri = connect(&gw, &payee_id, "payee tool", None).await.uri;
    let calls = json!([
        {"method": "subscribe"},
        {"method": "subscribe", "uri": payer_uri},
        {"method": "makeInvoice", "params": {"amount": 3_000, "description": "a route"}},
        {"method": "payInvoice", "uri": payer_uri, "params": {"invoice": {"$ref": "2.invoice"}}},
        {"method": "notifications", "params": {"count": 1, "timeout_ms": 10_000}},
        {"method": "notifications", "uri": payer_uri, "params": {"count": 1, "timeout_ms": 10_000}},
    ]);
    let r = sdk(&dir, &payee_uri, calls).await;
    assert!(r.iter().all(|c| c["ok"] == true), "{r:#?}");
    let hash = r[2]["result"]["payment_hash"].as_str().expect("a payment hash");
    let received = &r[4]["result"][0];
    assert_eq!(received["notification_type"], "payment_received", "{r:#?}");
    assert_eq!(
        (received["notification"]["payment_hash"].as_str(), received["notification"]["amount"].as_u64()),
        (Some(hash), Some(3_000))
    );
    let sent = &r[5]["result"][0];
    assert_eq!(sent["notification_type"], "payment_sent", "{r:#?}");
    assert_eq!(sent["notification"]["payment_hash"].as_str(), Some(hash));
    assert_eq!(r[4]["result"].as_array().map(Vec::len), Some(1), "one notification each");
}

/// Relays deliver a request more than once; a forged one reaches coffer
/// through the relay that checks no signatures.
#[tokio::test]
async fn a_request_published_twice_pays_once_and_a_forged_one_is_ignored() {
    let Some((gw, relay_url, nosig_url)) = nwc_gateway("NWC duplicates and forgeries").await else { return };
    let (payer_id, payer, _) = gw.new_agent("payer", FUNDS_MSAT).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let client = NwcClient::from_uri(&connect(&gw, &payer_id, "raw client", None).await.uri);
    nostr::wait_for_wallet(&relay_url, &client.wallet_hex).await;
    nostr::wait_for_wallet(&nosig_url, &client.wallet_hex).await;
    let mut relay = Relay::connect(&relay_url).await;
    relay.subscribe("answers", client.answers_filter()).await;
    let mut nosig = Relay::connect(&nosig_url).await;
    nosig.subscribe("answers", client.answers_filter()).await;

    let bill = invoice(&payee, 4_000).await;
    let request = client.request("pay_invoice", json!({"invoice": bill.bolt11}), vec![]);
    relay.publish(&request).await;
    relay.publish(&request).await;
    nosig.publish(&request).await;
    // An answer goes back through the relay that delivered the request
    // first: either.
    let answers = both(&mut relay, &mut nosig).await;
    let by_request = nostr::by_request(&answers);
    let answered = by_request.get(&request.id).map_or(0, Vec::len);
    assert_eq!(answered, 1, "one answer to a request delivered three times, of {} answers", answers.len());
    let answer = client.read(by_request[&request.id][0]);
    assert_eq!(answer["result_type"], "pay_invoice");
    assert!(answer["result"]["preimage"].is_string(), "{answer}");
    assert_eq!(available(&payer).await, FUNDS_MSAT - 4_000, "paid once");

    // A forged signature (one bit of it flipped), and a changed content under
    // the original id and signature: neither is answered nor paid.
    let second = invoice(&payee, 5_000).await;
    let mut forged = client.request("pay_invoice", json!({"invoice": second.bolt11}), vec![]);
    let mut sig = hex::decode(&forged.sig).expect("hex");
    sig[63] ^= 1;
    forged.sig = hex::encode(sig);
    let mut swapped = client.request("get_balance", json!({}), vec![]);
    swapped.content = client.request("pay_invoice", json!({"invoice": second.bolt11}), vec![]).content;
    // A request that expired is ignored too.
    let expired = client.request(
        "pay_invoice",
        json!({"invoice": second.bolt11}),
        vec![vec!["expiration".into(), (nostr::now_secs() - 1).to_string()]],
    );
    for event in [&forged, &swapped, &expired] {
        nosig.publish(event).await;
    }
    // The same path answers a good request: the silence above is the checks'.
    let good = client.request("get_balance", json!({}), vec![]);
    nosig.publish(&good).await;
    let answers = both(&mut relay, &mut nosig).await;
    let ids: Vec<&str> = answers.iter().filter_map(|a| a.tag("e")).collect();
    assert_eq!(ids, [good.id.as_str()], "only the good request is answered");
    assert_eq!(client.read(&answers[0])["result"]["balance"], FUNDS_MSAT - 4_000);
    assert_eq!(available(&payer).await, FUNDS_MSAT - 4_000, "nothing forged was paid");
    assert_eq!(gw.payment_count(&payer).await, 1);
}

/// The answers both relays carry within a few seconds.
async fn both(relay: &mut Relay, nosig: &mut Relay) -> Vec<coffer::lightning::nwc::event::Event> {
    let wait = Duration::from_secs(5);
    let (mut a, b) = tokio::join!(relay.events_for("answers", wait), nosig.events_for("answers", wait));
    a.extend(b);
    a
}

/// Two instances on one PostgreSQL read the same relay: each request is
/// answered once, and a payment is made once.
#[tokio::test]
async fn two_postgres_instances_answer_each_request_once() {
    let Some((relay_url, _)) = nostr::relays("NWC on two instances") else { return };
    let gw = Gateway::start_postgres_with_env(&[], &[("COFFER_NWC_RELAYS", &relay_url)]).await;
    let other = gw.another_instance().await;
    let (payer_id, payer, _) = gw.new_agent("payer", FUNDS_MSAT).await;
    let (_, payee, _) = other.new_agent("payee", 0).await;
    let client = NwcClient::from_uri(&connect(&other, &payer_id, "shared", None).await.uri);
    let mut relay = Relay::connect(&relay_url).await;
    relay.subscribe("answers", client.answers_filter()).await;
    // Both instances are listening once their info events are out.
    nostr::wait_for_wallet(&relay_url, &client.wallet_hex).await;

    let mut requests = Vec::new();
    for _ in 0..3 {
        let bill = invoice(&payee, 2_000).await;
        requests.push(client.request("pay_invoice", json!({"invoice": bill.bolt11}), vec![]));
    }
    for _ in 0..10 {
        requests.push(client.request("get_balance", json!({}), vec![]));
    }
    for request in &requests {
        relay.publish(request).await;
    }
    let answers = relay.events_for("answers", Duration::from_secs(6)).await;
    let by_request = nostr::by_request(&answers);
    for request in &requests {
        let answered = by_request.get(&request.id).map_or(0, Vec::len);
        assert_eq!(answered, 1, "request {} answered once, of {} answers", request.id, answers.len());
    }
    assert_eq!(answers.len(), requests.len());
    assert_eq!(available(&payer).await, FUNDS_MSAT - 3 * 2_000);
    assert_eq!(gw.payment_count(&payer).await, 3);
}
