//! Signed receipts, end to end against the real binary: every settled
//! payment (internal, approved after a hold for a person, a hold settled,
//! an escrow released, a payment to another node through a backend) and a
//! closed session has a receipt its payer and payee (and the operator) may
//! fetch, and nobody else; an unsettled one is `invalid-state`. The
//! receipt verifies with `coffer receipt verify` and, independently, with
//! PyPI `coincurve` (tests/interop/verify_receipt.py) from the node's
//! public key alone; any field changed, or another node key, fails both.

mod common;
#[path = "common/fake_lnbits.rs"]
mod fake_lnbits;

use coffer_client::{ChargeRequest, OpenSessionRequest, Outcome, PayOutcome, PayRequest, PaymentStatus};
use common::trade::{hold_invoice, pair, pay};
use common::{Gateway, Reply, send, sha256_hex};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FUND_MSAT: u64 = 100_000;
const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/verify_receipt.py");
/// A bound on the Python verifier: a hang fails the test.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);
/// The top-level fields of a version 1 receipt.
const FIELDS: [&str; 13] = [
    "version",
    "gateway",
    "payment_id",
    "kind",
    "payer",
    "payee",
    "amount_msat",
    "fee_msat",
    "purpose",
    "payment_hash",
    "preimage",
    "settled_at",
    "decision",
];

async fn get(gw: &Gateway, secret: &str, path: &str) -> Reply {
    send(gw.request(reqwest::Method::GET, path, Some(secret))).await
}

async fn node_key(gw: &Gateway) -> String {
    gw.operator().health().await.expect("health").node_pubkey
}

/// `GET /v1/payments/{id}/receipt` as `secret`: a signed receipt, checked
/// for its shape.
async fn receipt(gw: &Gateway, secret: &str, path: &str) -> Value {
    let reply = get(gw, secret, path).await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    let signed = reply.json;
    assert_eq!(signed["alg"], "secp256k1-sha256", "{signed}");
    assert_eq!(signed["signature"].as_str().map(str::len), Some(128), "{signed}");
    let fields: Vec<&str> = signed["receipt"].as_object().expect("a receipt").keys().map(String::as_str).collect();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(fields, want, "every field, nothing else: {signed}");
    assert_eq!(signed["receipt"]["version"], 1);
    assert_eq!(signed["receipt"]["gateway"], node_key(gw).await.as_str());
    signed
}

/// The settled payment's receipt as its payer, its payee and the operator
/// see it: the same bytes each time (RFC 6979 is deterministic). A third
/// agent, and an unknown id, are not found.
async fn both_sides(gw: &Gateway, payer_key: &str, payee_key: Option<&str>, id: &str) -> Value {
    let path = format!("/v1/payments/{id}/receipt");
    let signed = receipt(gw, payer_key, &path).await;
    if let Some(payee_key) = payee_key {
        assert_eq!(receipt(gw, payee_key, &path).await, signed, "the payee's copy");
    }
    assert_eq!(receipt(gw, gw.operator_token(), &path).await, signed, "the operator's copy");
    let (_, _, stranger) = gw.new_agent("stranger", 0).await;
    get(gw, &stranger, &path).await.assert_problem(404, "not-found");
    get(gw, payer_key, "/v1/payments/pay_nosuchpayment/receipt").await.assert_problem(404, "not-found");
    signed
}

/// The audit record of `action` for `agent`: its `seq`.
async fn audit_seq(gw: &Gateway, agent: &str, action: &str) -> i64 {
    let trail = gw.audit_all(&format!("agent_id={agent}&action={action}")).await;
    assert_eq!(trail.len(), 1, "one {action} of {agent}: {trail:?}");
    trail[0].seq
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("JSON")).expect("writing a receipt file");
    path
}

/// The envelope with one top-level field of its receipt changed.
fn changed(signed: &Value, field: &str) -> Value {
    let mut out = signed.clone();
    let value = &mut out["receipt"][field];
    *value = match value.take() {
        Value::String(s) if field == "kind" => {
            Value::String(if s == "internal" { "escrow" } else { "internal" }.into())
        }
        Value::String(s) if s.is_empty() => Value::String("0".into()),
        Value::String(mut s) => {
            // The last character changed (a hex digit stays one).
            let last = if s.ends_with('0') { '1' } else { '0' };
            s.pop();
            s.push(last);
            Value::String(s)
        }
        Value::Number(n) => Value::from(n.as_u64().expect("an integer") + 1),
        Value::Object(mut o) => {
            let rule = if o["rule"] == "allowed" { "approved" } else { "allowed" };
            o.insert("rule".into(), rule.into());
            Value::Object(o)
        }
        other => panic!("unexpected {other}"),
    };
    assert_ne!(&out, signed, "{field} changed");
    out
}

/// `coffer receipt verify FILE --node-key KEY`: (exit code, stdout, stderr).
async fn verify_cli(gw: &Gateway, file: &Path, node_key: Option<&str>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut args = vec!["receipt", "verify", file.to_str().expect("a UTF-8 path")];
    if let Some(key) = node_key {
        args.extend(["--node-key", key]);
    }
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "COFFER_NODE_KEY") {
        env.push(("COFFER_NODE_KEY", ""));
    }
    let out = gw.cli(&args, &env).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The receipt verifies with `coffer receipt verify` (and the node key from
/// `COFFER_NODE_KEY`); with any field changed, or another node key, it
/// does not, and says why. With Python at hand, coincurve agrees on every
/// file.
async fn assert_verifies_only_intact(gw: &Gateway, signed: &Value) {
    let key = node_key(gw).await;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let good = write(dir.path(), "receipt.json", signed);
    let (code, stdout, stderr) = verify_cli(gw, &good, Some(&key), &[]).await;
    assert_eq!(code, 0, "a fetched receipt verifies: {stdout}{stderr}");
    assert!(stdout.starts_with("valid: "), "{stdout}");
    let (code, _, stderr) = verify_cli(gw, &good, None, &[("COFFER_NODE_KEY", &key)]).await;
    assert_eq!(code, 0, "the node key from COFFER_NODE_KEY: {stderr}");

    let mut files = vec![(good, true)];
    for field in FIELDS {
        let file = write(dir.path(), &format!("changed-{field}.json"), &changed(signed, field));
        let (code, stdout, stderr) = verify_cli(gw, &file, Some(&key), &[]).await;
        assert_eq!(code, 1, "{field} changed must not verify: {stdout}{stderr}");
        let why = match field {
            "gateway" => "wrong gateway key",
            "version" => "malformed",
            _ => "bad signature",
        };
        assert!(stderr.contains(why), "{field} changed: {stderr}");
        files.push((file, false));
    }
    // The signature itself changed: its last byte with one bit flipped (a
    // fixed replacement would leave one signature in 256 as it was).
    let signature = signed["signature"].as_str().expect("hex");
    let (head, tail) = signature.split_at(signature.len() - 2);
    let last = u8::from_str_radix(tail, 16).expect("a hex byte");
    let mut forged = signed.clone();
    forged["signature"] = json!(format!("{head}{:02x}", last ^ 1));
    assert_ne!(forged["signature"], signed["signature"], "the signature changed");
    let forged_file = write(dir.path(), "changed-signature.json", &forged);
    assert_eq!(verify_cli(gw, &forged_file, Some(&key), &[]).await.0, 1, "a changed signature");
    files.push((forged_file, false));
    // Another node's key, given on the command line or in the environment:
    // the receipt's own `gateway` field is not trusted.
    let other = common::lightning::other_node(coffer::payment::bolt11::Network::Regtest).pubkey().to_string();
    let (code, _, stderr) = verify_cli(gw, &files[0].0, Some(&other), &[]).await;
    assert_eq!(code, 1, "another node key: {stderr}");
    assert!(stderr.contains("wrong gateway key"), "{stderr}");
    assert_eq!(verify_cli(gw, &files[0].0, None, &[("COFFER_NODE_KEY", &other)]).await.0, 1);
    // Not a key, or not a receipt: refused, never valid.
    assert_eq!(verify_cli(gw, &files[0].0, Some("02abcd"), &[]).await.0, 2, "a malformed node key");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"receipt\": 1}").expect("writing");
    let (code, _, stderr) = verify_cli(gw, &junk, Some(&key), &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("malformed"), "{stderr}");

    let Some(python) = common::test_python("the receipt interop with PyPI coincurve") else { return };
    let verdicts = python_verify(&python, &key, &files).await;
    for ((file, want), verdict) in files.iter().zip(&verdicts) {
        assert_eq!(verdict["valid"], *want, "coincurve on {}: {verdict}", file.display());
    }
    let others = python_verify(&python, &other, &files[..1]).await;
    assert_eq!(others[0]["valid"], false, "coincurve with another node key: {}", others[0]);
}

/// Runs the coincurve verifier on the files: one verdict per file.
async fn python_verify(python: &Path, node_key: &str, files: &[(PathBuf, bool)]) -> Vec<Value> {
    let run = tokio::process::Command::new(python)
        .arg(VERIFIER)
        .arg(node_key)
        .args(files.iter().map(|(f, _)| f))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PYTHON_TIMEOUT, run)
        .await
        .expect("the Python verifier did not finish in time")
        .unwrap_or_else(|e| panic!("cannot run COFFER_TEST_PYTHON={}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(verdicts.len(), files.len(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let all_valid = verdicts.iter().all(|v| v["valid"] == true);
    assert_eq!(out.status.success(), all_valid, "exit 0 only if every file is valid: {stdout}");
    verdicts
}

#[tokio::test]
async fn an_internal_payment_has_a_receipt_both_parties_fetch_and_anyone_verifies() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let invoice = p
        .payee
        .create_invoice(&coffer_client::CreateInvoiceRequest {
            amount_msat: 21_000,
            memo: Some("an answer".into()),
            ..Default::default()
        })
        .await
        .expect("an invoice");
    let request = PayRequest {
        bolt11: invoice.bolt11.clone(),
        purpose: Some("Bericht für \"Q4\" ☕ \\ done".into()),
        ..Default::default()
    };
    let paid = match p.payer.pay(&request, "k1").await.expect("paid") {
        PayOutcome::Done(payment) => payment,
        other => panic!("expected a payment, got {other:?}"),
    };
    assert_eq!(paid.status, PaymentStatus::Succeeded);

    let signed = both_sides(&gw, &p.payer_key, Some(&p.payee_key), &paid.id).await;
    let r = &signed["receipt"];
    assert_eq!(r["payment_id"], paid.id.as_str());
    assert_eq!(r["kind"], "internal");
    assert_eq!((r["payer"].as_str(), r["payee"].as_str()), (Some(p.payer_id.as_str()), Some(p.payee_id.as_str())));
    assert_eq!((r["amount_msat"].as_u64(), r["fee_msat"].as_u64()), (Some(21_000), Some(0)));
    assert_eq!(r["purpose"], "Bericht für \"Q4\" ☕ \\ done");
    assert_eq!(r["payment_hash"], invoice.payment_hash.as_str());
    let preimage = hex::decode(r["preimage"].as_str().expect("hex")).expect("hex");
    assert_eq!(sha256_hex(&preimage), invoice.payment_hash, "the preimage proves the payment");
    assert_eq!(r["settled_at"], paid.created_at.as_str());
    let seq = audit_seq(&gw, &p.payer_id, "payment.allowed").await;
    assert_eq!(r["decision"], json!({"rule": "allowed", "audit_seq": seq}));
    // The client crate reads the same receipt.
    let typed = p.payee.receipt(&paid.id).await.expect("the client's receipt");
    assert_eq!(serde_json::to_value(&typed).expect("JSON"), signed);

    assert_verifies_only_intact(&gw, &signed).await;

    // `coffer receipt get` prints the JSON to keep, which verifies.
    let fetched = gw.cli_agent_json(&p.payer_key, &["receipt", "get", &paid.id]).await;
    assert_eq!(fetched, signed);

    // Refunded in full later by its payee: it was paid all the same, and
    // the receipt says so, byte for byte the same.
    let refund = coffer_client::RefundRequest { amount_msat: 21_000, reason: None };
    p.payee.refund(&paid.id, &refund, "r1").await.expect("refunded");
    assert_eq!(p.payer.payment(&paid.id).await.expect("the payment").status, PaymentStatus::Refunded);
    assert_eq!(receipt(&gw, &p.payer_key, &format!("/v1/payments/{}/receipt", paid.id)).await, signed);
}

#[tokio::test]
async fn a_payment_held_for_a_person_names_the_approval_in_its_receipt() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let policy = json!({"approval_above_msat": 1_000});
    assert_eq!(gw.put_policy_raw(gw.operator_token(), &p.payer_id, &policy).await.status, 200);
    let invoice = p
        .payee
        .create_invoice(&coffer_client::CreateInvoiceRequest { amount_msat: 5_000, ..Default::default() })
        .await
        .expect("an invoice");
    let request = PayRequest { bolt11: invoice.bolt11, purpose: Some("needs a person".into()), ..Default::default() };
    let held = match p.payer.pay(&request, "k1").await.expect("held") {
        PayOutcome::Held(approval) => approval,
        other => panic!("expected a hold, got {other:?}"),
    };
    gw.operator().approve(&held.id).await.expect("approved");
    let id = held.id.replacen("apr_", "pay_", 1);
    let signed = both_sides(&gw, &p.payer_key, Some(&p.payee_key), &id).await;
    let seq = audit_seq(&gw, &p.payer_id, "approval.approved").await;
    assert_eq!(signed["receipt"]["decision"], json!({"rule": "approved", "audit_seq": seq}));
    assert_eq!(signed["receipt"]["kind"], "internal");
    assert_verifies_only_intact(&gw, &signed).await;
}

#[tokio::test]
async fn a_hold_has_a_receipt_once_settled() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = hold_invoice(&p.payee, 30_000, 600).await;
    let paid = pay(&p.payer, &inv.bolt11, None, "hold-1").await;
    assert_eq!(paid.status, PaymentStatus::Held);
    let path = format!("/v1/payments/{}/receipt", paid.id);
    for secret in [&p.payer_key, &p.payee_key] {
        get(&gw, secret, &path).await.assert_problem(409, "invalid-state");
    }

    let settled = p.payee.settle_invoice(&inv.payment_hash).await.expect("settled");
    let signed = both_sides(&gw, &p.payer_key, Some(&p.payee_key), &paid.id).await;
    let r = &signed["receipt"];
    assert_eq!((r["kind"].as_str(), r["amount_msat"].as_u64()), (Some("hold"), Some(30_000)));
    assert_eq!(r["payee"], p.payee_id.as_str());
    assert_eq!(r["preimage"].as_str(), settled.preimage.as_deref());
    let resolved_at = settled.escrow.and_then(|e| e.resolved_at).expect("when it was settled");
    assert_eq!(r["settled_at"], resolved_at.as_str());
    assert_eq!(r["decision"]["rule"], "allowed");
    assert_verifies_only_intact(&gw, &signed).await;
}

#[tokio::test]
async fn an_escrow_has_a_receipt_once_released_and_a_refunded_one_never() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let inv = p
        .payee
        .create_invoice(&coffer_client::CreateInvoiceRequest { amount_msat: 40_000, ..Default::default() })
        .await
        .expect("an invoice");
    let paid = pay(&p.payer, &inv.bolt11, Some((3_600, Outcome::Refund)), "esc-1").await;
    assert_eq!(paid.status, PaymentStatus::Held);
    let path = format!("/v1/payments/{}/receipt", paid.id);
    get(&gw, &p.payee_key, &path).await.assert_problem(409, "invalid-state");

    let released = p.payer.release(&paid.id).await.expect("released");
    assert_eq!(released.status, PaymentStatus::Succeeded);
    let signed = both_sides(&gw, &p.payer_key, Some(&p.payee_key), &paid.id).await;
    let r = &signed["receipt"];
    assert_eq!((r["kind"].as_str(), r["amount_msat"].as_u64()), (Some("escrow"), Some(40_000)));
    assert_eq!(r["payment_hash"], inv.payment_hash.as_str());
    let seq = audit_seq(&gw, &p.payer_id, "payment.allowed").await;
    assert_eq!(r["decision"], json!({"rule": "allowed", "audit_seq": seq}));
    assert_verifies_only_intact(&gw, &signed).await;

    // An escrow given back: refunded, never settled, no receipt.
    let inv = p
        .payee
        .create_invoice(&coffer_client::CreateInvoiceRequest { amount_msat: 1_000, ..Default::default() })
        .await
        .expect("an invoice");
    let paid = pay(&p.payer, &inv.bolt11, Some((3_600, Outcome::Refund)), "esc-2").await;
    p.payee.cancel_invoice(&inv.payment_hash).await.expect("given back");
    let path = format!("/v1/payments/{}/receipt", paid.id);
    get(&gw, &p.payer_key, &path).await.assert_problem(409, "invalid-state");
}

#[tokio::test]
async fn a_closed_session_has_a_receipt_of_what_it_charged() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let request = OpenSessionRequest {
        payee: p.payee_id.clone(),
        max_msat: 10_000,
        expires_in_secs: 600,
        purpose: Some("metered inference".into()),
        ..Default::default()
    };
    let session = p.payer.open_session(&request).await.expect("opened");
    let path = format!("/v1/sessions/{}/receipt", session.id);
    get(&gw, &p.payer_key, &path).await.assert_problem(409, "invalid-state");
    let charge = |amount_msat| ChargeRequest { amount_msat, memo: None };
    p.payee.charge(&session.id, &charge(3_000), "c1").await.expect("charged");
    p.payee.charge(&session.id, &charge(2_500), "c2").await.expect("charged");
    let closed = p.payer.close_session(&session.id).await.expect("closed");

    let signed = receipt(&gw, &p.payer_key, &path).await;
    assert_eq!(receipt(&gw, &p.payee_key, &path).await, signed, "the payee's copy");
    assert_eq!(receipt(&gw, gw.operator_token(), &path).await, signed, "the operator's copy");
    let (_, _, stranger) = gw.new_agent("stranger", 0).await;
    get(&gw, &stranger, &path).await.assert_problem(404, "not-found");
    let r = &signed["receipt"];
    assert_eq!((r["kind"].as_str(), r["payment_id"].as_str()), (Some("session"), Some(session.id.as_str())));
    assert_eq!((r["payer"].as_str(), r["payee"].as_str()), (Some(p.payer_id.as_str()), Some(p.payee_id.as_str())));
    assert_eq!((r["amount_msat"].as_u64(), r["fee_msat"].as_u64()), (Some(5_500), Some(0)));
    assert_eq!((r["payment_hash"].as_str(), r["preimage"].as_str()), (Some(""), Some("")));
    assert_eq!(r["purpose"], "metered inference");
    assert_eq!(r["settled_at"].as_str(), closed.closed_at.as_deref());
    let seq = audit_seq(&gw, &p.payer_id, "session.opened").await;
    assert_eq!(r["decision"], json!({"rule": "allowed", "audit_seq": seq}));
    let typed = p.payer.session_receipt(&session.id).await.expect("the client's receipt");
    assert_eq!(serde_json::to_value(&typed).expect("JSON"), signed);
    assert_verifies_only_intact(&gw, &signed).await;
}

#[tokio::test]
async fn a_payment_to_another_node_has_a_receipt_naming_that_node() {
    let (fake, url) = fake_lnbits::Fake::start().await;
    let gw = fake_lnbits::start_gateway(&url).await;
    let (payer_key, payer) = fake_lnbits::funded_agent(&gw, &fake, 200_000).await;
    fake.set(fake_lnbits::PayMode::Succeed { fee_msat: 3_000 }, fake_lnbits::Lookup::NotFound);
    // An invoice of a node whose key the test knows.
    let node = common::lightning::other_node(coffer::payment::bolt11::Network::Bitcoin);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let invoice = node
        .sign(coffer_core::Msat::new(100_000), "outside", 3_600, Duration::from_secs(now.as_secs()))
        .expect("an invoice");
    let hash = hex::encode(invoice.payment_hash);
    fake.script.lock().expect("the script").preimages.insert(hash.clone(), hex::encode(invoice.preimage));
    let paid = common::lightning::pay_out(&payer, &invoice.bolt11, "k1").await;
    assert_eq!(paid.status, PaymentStatus::Succeeded);

    let signed = both_sides(&gw, &payer_key, None, &paid.id).await;
    let r = &signed["receipt"];
    assert_eq!(r["kind"], "outside");
    assert_eq!(r["payee"], node.pubkey().to_string().as_str(), "the invoice's node");
    assert_eq!((r["amount_msat"].as_u64(), r["fee_msat"].as_u64()), (Some(100_000), Some(3_000)));
    assert_eq!((r["payment_hash"].as_str(), r["preimage"].as_str()), (Some(hash.as_str()), paid.preimage.as_deref()));
    assert_eq!(r["purpose"], "outside");
    let payer_id = payer.wallet().await.expect("wallet").agent_id;
    let seq = audit_seq(&gw, &payer_id, "payment.allowed").await;
    assert_eq!(r["decision"], json!({"rule": "allowed", "audit_seq": seq}));
    assert_verifies_only_intact(&gw, &signed).await;
}

#[tokio::test]
async fn a_released_request_card_links_its_receipt() {
    let gw = Gateway::start().await;
    let p = pair(&gw, FUND_MSAT).await;
    let room = gw.create_room(&p.payee_key, "shop", &[&p.payer_id]).await.id;
    let request = json!({"amount_msat": 7_000, "memo": "a report",
        "escrow": {"release_after_secs": 3600, "on_timeout": "refund"}});
    let posted = gw.post_raw(&p.payee_key, &room, &json!({"payment_request": request})).await;
    assert_eq!(posted.status, 201, "{posted:?}");
    let message_id = posted.json["id"].as_i64().expect("a message id");
    let paid = gw.pay_message_raw(&p.payer_key, &room, message_id, None).await;
    assert_eq!((paid.status, paid.json["status"].as_str()), (200, Some("held")), "{paid:?}");
    let payment_id = paid.json["id"].as_str().expect("a payment id").to_owned();

    let held = gw.message(&p.payer_key, &room, message_id).await.invoice.expect("a card");
    assert_eq!((held.state.as_str(), held.receipt_url.as_deref()), ("held", None), "no receipt before release");
    p.payer.release(&payment_id).await.expect("released");
    let url = format!("/v1/payments/{payment_id}/receipt");
    for secret in [&p.payer_key, &p.payee_key] {
        let card = gw.message(secret, &room, message_id).await.invoice.expect("a card");
        assert_eq!((card.state.as_str(), card.receipt_url.as_deref()), ("released", Some(url.as_str())));
    }
    assert_eq!(receipt(&gw, &p.payee_key, &url).await["receipt"]["kind"], "escrow");
}
