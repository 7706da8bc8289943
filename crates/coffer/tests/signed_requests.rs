//! Signed requests (RFC 9421): with a required signing key, an agent's
//! bearer token reads but never spends; every way a signature can be wrong
//! is refused with a problem naming the component, and nothing is debited.

mod common;

use coffer_client::signing::Signer;
use coffer_client::{CreateSigningKeyRequest, PayRequest};
use common::{Gateway, PROBLEM_JSON};
use serde_json::{Value, json};
use std::sync::Arc;

const SEED: [u8; 32] = [42u8; 32];

struct Setup {
    gw: Gateway,
    payer_id: String,
    payer_secret: String,
    signer: Signer,
    payee: coffer_client::Client,
}

/// A funded payer with a required Ed25519 key, and a payee.
async fn setup() -> Setup {
    let gw = Gateway::start().await;
    let (payer_id, payer, payer_secret) = gw.new_agent("payer", 1_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let probe = Signer::ed25519("unregistered", &SEED).unwrap();
    let public_key = base64_std(&probe.public_key());
    let request = CreateSigningKeyRequest { alg: None, public_key, required: true };
    let key = payer.create_signing_key(&payer_id, &request).await.expect("registering a key");
    assert!(key.required);
    let signer = Signer::ed25519(&key.id, &SEED).unwrap();
    Setup { gw, payer_id, payer_secret, signer, payee }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A raw POST of `body` to `path` with the payer's token and `headers`.
async fn post(s: &Setup, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request =
        s.gw.http()
            .post(format!("{}{path}", s.gw.url()))
            .bearer_auth(&s.payer_secret)
            .header("content-type", "application/json")
            .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status >= 400 {
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed_headers(s: &Setup, path: &str, body: &str, key: Option<&str>) -> Vec<(&'static str, String)> {
    let uri = format!("{}{path}", s.gw.url());
    let h = s.signer.sign("POST", &uri, body.as_bytes(), key).unwrap();
    let mut headers = vec![("signature-input", h.signature_input), ("signature", h.signature)];
    if let Some(digest) = h.content_digest {
        headers.push(("content-digest", digest));
    }
    if let Some(key) = key {
        headers.push(("idempotency-key", key.to_owned()));
    }
    headers
}

async fn balance(s: &Setup) -> u64 {
    s.gw.balances().await[&s.payer_id]
}

fn assert_refused(reply: &(u16, Value), code: &str, component: &str) {
    assert_eq!(reply.0, 401, "{}", reply.1);
    assert_eq!(reply.1["code"], code, "{}", reply.1);
    assert_eq!(reply.1["component"], component, "{}", reply.1);
}

#[tokio::test]
async fn a_required_key_refuses_every_bad_signature_and_debits_nothing() {
    let s = setup().await;
    let before = balance(&s).await;
    let invoice = common::invoice(&s.payee, 21_000).await;
    let body = json!({ "bolt11": invoice.bolt11 }).to_string();

    // The bearer token alone.
    assert_refused(&post(&s, "/v1/payments", &body, &[]).await, "signature-required", "signature-input");
    // A changed body.
    let other = json!({ "bolt11": invoice.bolt11, "purpose": "changed" }).to_string();
    let headers = signed_headers(&s, "/v1/payments", &body, None);
    assert_refused(&post(&s, "/v1/payments", &other, &headers).await, "signature-invalid", "content-digest");
    // A changed Idempotency-Key.
    let mut headers = signed_headers(&s, "/v1/payments", &body, Some("k1"));
    headers.retain(|(n, _)| *n != "idempotency-key");
    headers.push(("idempotency-key", "k2".into()));
    assert_refused(&post(&s, "/v1/payments", &body, &headers).await, "signature-invalid", "signature");
    // An Idempotency-Key the signature does not cover.
    let mut headers = signed_headers(&s, "/v1/payments", &body, None);
    headers.push(("idempotency-key", "k3".into()));
    assert_refused(&post(&s, "/v1/payments", &body, &headers).await, "signature-invalid", "idempotency-key");
    // A bad signature: another key under the same keyid.
    let impostor = Signer::ed25519(s.signer.key_id(), &[7u8; 32]).unwrap();
    let uri = format!("{}/v1/payments", s.gw.url());
    let h = impostor.sign("POST", &uri, body.as_bytes(), None).unwrap();
    let headers = vec![
        ("signature-input", h.signature_input),
        ("signature", h.signature),
        ("content-digest", h.content_digest.unwrap()),
    ];
    assert_refused(&post(&s, "/v1/payments", &body, &headers).await, "signature-invalid", "signature");
    // A stale `created`.
    let stale = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 301;
    let h = s.signer.sign_at("POST", &uri, body.as_bytes(), None, stale, "stale-nonce").unwrap();
    let headers = vec![
        ("signature-input", h.signature_input),
        ("signature", h.signature),
        ("content-digest", h.content_digest.unwrap()),
    ];
    assert_refused(&post(&s, "/v1/payments", &body, &headers).await, "signature-invalid", "created");
    // Another target: the signature was made for another route.
    let headers = signed_headers(&s, "/v1/l402/pay", &body, None);
    assert_refused(&post(&s, "/v1/payments", &body, &headers).await, "signature-invalid", "signature");
    assert_eq!(balance(&s).await, before, "a refused request debits nothing");

    // A good signature pays; the same headers again are a replay.
    let headers = signed_headers(&s, "/v1/payments", &body, None);
    let paid = post(&s, "/v1/payments", &body, &headers).await;
    assert!(paid.0 == 200 || paid.0 == 201, "{paid:?}");
    assert_eq!(paid.1["status"], "succeeded");
    assert_eq!(balance(&s).await, before - 21_000);
    let replay = post(&s, "/v1/payments", &body, &headers).await;
    assert_refused(&replay, "signature-invalid", "nonce");
    assert_eq!(balance(&s).await, before - 21_000);
}

#[tokio::test]
async fn the_client_crate_signs_and_reads_need_no_signature() {
    let s = setup().await;
    let bearer_only = s.gw.client(&s.payer_secret);
    // Reads with the bearer token still work.
    let wallet = bearer_only.wallet().await.expect("a read needs no signature");
    assert_eq!(wallet.balance_msat, 1_000_000);
    let invoice = common::invoice(&s.payee, 5_000).await;
    let request = PayRequest { bolt11: invoice.bolt11.clone(), ..Default::default() };
    let refused = bearer_only.pay(&request, "bearer-1").await.expect_err("a bearer token never spends");
    assert_eq!(refused.code(), Some("signature-required"));
    // A leaked token cannot register a key of its own either.
    let rogue = CreateSigningKeyRequest { alg: None, public_key: base64_std(&[9u8; 32]), required: false };
    let refused = bearer_only.create_signing_key(&s.payer_id, &rogue).await.expect_err("unsigned");
    assert_eq!(refused.code(), Some("signature-required"));

    let signer = Arc::new(Signer::ed25519(s.signer.key_id(), &SEED).unwrap());
    let signed = s.gw.client(&s.payer_secret).with_signer(signer);
    let paid = signed.pay(&request, "signed-1").await.expect("a signed payment");
    assert!(matches!(paid, coffer_client::PayOutcome::Done(ref p) if p.amount_msat == 5_000));
    // The same Idempotency-Key again (a fresh signature): the first answer.
    signed.pay(&request, "signed-1").await.expect("an idempotent replay");
    assert_eq!(balance(&s).await, 1_000_000 - 5_000);

    // Revoked, the key's signatures are refused; the operator may revoke.
    s.gw.operator().revoke_signing_key(&s.payer_id, s.signer.key_id()).await.expect("revoking");
    let keys = s.gw.operator().signing_keys(&s.payer_id).await.unwrap();
    assert!(keys[0].revoked_at.is_some());
    let invoice = common::invoice(&s.payee, 1_000).await;
    let request = PayRequest { bolt11: invoice.bolt11, ..Default::default() };
    let refused = signed.pay(&request, "signed-2").await.expect_err("a revoked key");
    assert_eq!(refused.code(), Some("signature-invalid"));
    // With no required key left, the bearer token spends again.
    bearer_only.pay(&request, "bearer-2").await.expect("no required key left");
}

#[tokio::test]
async fn bad_public_keys_are_refused_by_field() {
    let gw = Gateway::start().await;
    let (id, agent, _) = gw.new_agent("a", 0).await;
    for (alg, key) in [(None, "not base64"), (None, "AAAA"), (Some("rsa"), "AAAA")] {
        let request = CreateSigningKeyRequest { alg: alg.map(str::to_owned), public_key: key.into(), required: true };
        let e = agent.create_signing_key(&id, &request).await.expect_err("a bad key");
        assert_eq!(e.code(), Some("invalid-field"), "{alg:?} {key}");
    }
    assert!(agent.signing_keys(&id).await.unwrap().is_empty());
}

const RFC9421_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/rfc9421.py");

fn run_python(python: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(python)
        .arg(RFC9421_PY)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running python");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("python's output")
}

/// Requests signed by PyPI `http-message-signatures` are accepted (and
/// one it signed for another body is not); what the client crate signs
/// verifies there.
#[tokio::test]
async fn an_independent_rfc_9421_implementation_agrees_both_ways() {
    let Some(python) = common::test_python("RFC 9421 interop") else { return };
    let s = setup().await;
    let before = balance(&s).await;
    let invoice = common::invoice(&s.payee, 7_000).await;
    let body = json!({ "bolt11": invoice.bolt11 }).to_string();
    let url = format!("{}/v1/payments", s.gw.url());
    let seed = hex::encode(SEED);
    let args = ["send", url.as_str(), s.payer_secret.as_str(), s.signer.key_id(), seed.as_str(), "py-1", body.as_str()];
    let out = run_python(&python, &args, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("python's JSON");
    assert!(answer["status"] == 200 || answer["status"] == 201, "{answer}");
    assert_eq!(answer["body"]["status"], "succeeded", "{answer}");
    assert_eq!(balance(&s).await, before - 7_000);
    // Signed by the same library with another key: refused.
    let other = hex::encode([5u8; 32]);
    let invoice = common::invoice(&s.payee, 1_000).await;
    let body = json!({ "bolt11": invoice.bolt11 }).to_string();
    let args =
        ["send", url.as_str(), s.payer_secret.as_str(), s.signer.key_id(), other.as_str(), "py-2", body.as_str()];
    let out = run_python(&python, &args, None);
    let answer: Value = serde_json::from_slice(&out.stdout).expect("python's JSON");
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(answer["body"]["component"], "signature", "{answer}");
    assert_eq!(balance(&s).await, before - 7_000);

    // The client crate's signature, checked by the library.
    let h = s.signer.sign("POST", &url, body.as_bytes(), Some("rust-1")).unwrap();
    let captured = |body: &str| {
        json!({
            "method": "POST", "url": url, "key_id": s.signer.key_id(), "body": body,
            "headers": {
                "content-type": "application/json", "idempotency-key": "rust-1",
                "content-digest": h.content_digest.clone().unwrap(),
                "signature-input": h.signature_input.clone(), "signature": h.signature.clone(),
            }
        })
        .to_string()
    };
    let public = hex::encode(s.signer.public_key());
    let out = run_python(&python, &["verify", public.as_str()], Some(&captured(&body)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_python(&python, &["verify", public.as_str()], Some(&captured("{\"changed\":1}")));
    assert!(!out.status.success(), "a changed body must not verify");
}

/// A POST signed with P-256 private `scalar` by the Python library, as
/// [`run_python`]'s `send` answers it.
fn send_p256(python: &std::path::Path, s: &P256Setup, scalar: &str, idempotency_key: &str, body: &str) -> Value {
    let args = ["send", &s.url, &s.secret, &s.key_id, scalar, idempotency_key, body, "ecdsa-p256-sha256"];
    let out = run_python(python, &args, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("python's JSON")
}

struct P256Setup {
    url: String,
    secret: String,
    key_id: String,
}

/// A hardware-style ECDSA P-256 key (RFC 9421 `ecdsa-p256-sha256`),
/// registered as an uncompressed point, signs for an agent by the same
/// independent library: its payment is accepted; the same request signed
/// by another P-256 key is refused and debits nothing.
#[tokio::test]
async fn an_ecdsa_p256_key_signs_end_to_end() {
    let Some(python) = common::test_python("RFC 9421 P-256") else { return };
    let gw = Gateway::start().await;
    let (payer_id, payer, secret) = gw.new_agent("payer", 1_000_000).await;
    let (_, payee, _) = gw.new_agent("payee", 0).await;
    let scalar = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
    let out = run_python(&python, &["p256-public", scalar], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let request = CreateSigningKeyRequest { alg: Some("ecdsa-p256-sha256".into()), public_key, required: true };
    let key = payer.create_signing_key(&payer_id, &request).await.expect("registering a P-256 key");
    assert_eq!(key.alg, "ecdsa-p256-sha256");
    let s = P256Setup { url: format!("{}/v1/payments", gw.url()), secret, key_id: key.id };
    let before = gw.balances().await[&payer_id];

    let invoice = common::invoice(&payee, 3_000).await;
    let answer = send_p256(&python, &s, scalar, "p256-1", &json!({ "bolt11": invoice.bolt11 }).to_string());
    assert!(answer["status"] == 200 || answer["status"] == 201, "{answer}");
    assert_eq!(answer["body"]["status"], "succeeded", "{answer}");
    assert_eq!(gw.balances().await[&payer_id], before - 3_000);

    let invoice = common::invoice(&payee, 1_000).await;
    let other = "0f56db78ca460b055c500064824bed999a25aaf48ebb519ac201537b85479813";
    let answer = send_p256(&python, &s, other, "p256-2", &json!({ "bolt11": invoice.bolt11 }).to_string());
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(answer["body"]["component"], "signature", "{answer}");
    assert_eq!(gw.balances().await[&payer_id], before - 3_000);
}
