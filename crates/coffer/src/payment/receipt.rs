//! Signed receipts: proof of a settled payment (or a closed session) that
//! anyone can check offline with the gateway's node public key alone, the
//! key that signs its BOLT11 invoices. docs/receipts.md describes the
//! format for people; docs/vectors/receipts.json holds test vectors, which
//! the tests below check.
//!
//! - The **canonical form** of a receipt is its JSON with the keys of every
//!   object sorted by byte order, no insignificant whitespace, integers in
//!   plain decimal and strings as serde_json writes them (`"`, `\` and the
//!   control characters escaped, nothing else; `\u00XX` in lower case).
//!   It is RFC 8785-compatible for this schema, which holds only strings,
//!   integers (below 2^53 in practice) and objects: no floats, booleans,
//!   nulls or arrays, which the canonical form refuses.
//! - The **signature** is ECDSA over secp256k1 of the SHA-256 of the
//!   canonical bytes, deterministic (RFC 6979), low-S, written as the
//!   64-byte compact `r‖s` in hex.
//! - The **envelope** served is `{"receipt": {...}, "signature": "<hex>",
//!   "alg": "secp256k1-sha256"}`; a verifier re-derives the canonical bytes
//!   from `receipt`.
//!
//! The canonical form, signing and verification are pure; [`for_payment`]
//! and [`for_session`] assemble a receipt from the store's records, in the
//! caller's (read) transaction.

use super::bolt11::{Network, ParsedInvoice};
use super::chain::APPROVAL_PREFIX;
use crate::error::Error;
use crate::model::{ApprovalStatus, EscrowKind, EscrowStatus, PaymentRecord, SessionRecord, SessionStatus, views};
use crate::store::Tx;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, ecdsa::Signature};
use coffer_client::{PaymentReceipt, PaymentStatus, ReceiptDecision, ReceiptKind, SignedReceipt};
use serde_json::Value;

/// The receipt format's version.
pub const VERSION: u32 = 1;
/// The envelope's `alg`.
pub const ALG: &str = "secp256k1-sha256";
/// The largest envelope [`verify`] reads: a receipt is well under 2 KiB
/// (a purpose is at most 512 bytes).
pub const ENVELOPE_LEN_MAX_BYTES: usize = 64 * 1024;
/// The audit records of one action, agent and millisecond looked at to
/// find the decision of a receipt; more is ambiguous anyway.
const AUDIT_CANDIDATES_MAX: u32 = 16;

/// The canonical bytes of a JSON value of the receipt schema (objects,
/// strings and integers only).
pub fn canonical(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out.into_bytes())
}

fn write_canonical(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            // `String`'s order is the byte order of its UTF-8 (and, for
            // the ASCII keys of this schema, RFC 8785's UTF-16 order).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out)?;
                out.push(':');
                write_canonical(item, out)?;
            }
            out.push('}');
            Ok(())
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => {
                out.push_str(&u.to_string());
                Ok(())
            }
            (None, Some(i)) => {
                out.push_str(&i.to_string());
                Ok(())
            }
            _ => Err(format!("{n} is not an integer")),
        },
        Value::Null => Err("null is not part of a receipt".into()),
        Value::Bool(_) => Err("a boolean is not part of a receipt".into()),
        Value::Array(_) => Err("an array is not part of a receipt".into()),
    }
}

fn write_string(s: &str, out: &mut String) -> Result<(), String> {
    out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
    Ok(())
}

/// The canonical bytes of a receipt.
pub fn canonical_receipt(receipt: &PaymentReceipt) -> Result<Vec<u8>, String> {
    canonical(&serde_json::to_value(receipt).map_err(|e| e.to_string())?)
}

/// SHA-256 of the canonical bytes: what is signed.
pub fn digest(canonical: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(canonical).to_byte_array()
}

/// Signs a receipt with `sign` (ECDSA over a digest, compact `r‖s`: the
/// node key's [`super::bolt11::NodeSigner::sign_digest`]).
pub fn sign(receipt: PaymentReceipt, sign: impl FnOnce([u8; 32]) -> [u8; 64]) -> Result<SignedReceipt, Error> {
    let bytes = canonical_receipt(&receipt).map_err(|e| Error::Internal(format!("a receipt's canonical form: {e}")))?;
    let signature = hex::encode(sign(digest(&bytes)));
    Ok(SignedReceipt { receipt, signature, alg: ALG.to_owned() })
}

/// Why a receipt does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a receipt envelope of this format.
    Malformed(String),
    /// The receipt names another gateway than the key it is checked with.
    WrongGateway { claimed: String, expected: String },
    /// The signature is not the key's over this receipt.
    BadSignature,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Malformed(why) => write!(f, "malformed receipt: {why}"),
            VerifyError::WrongGateway { claimed, expected } => {
                write!(f, "wrong gateway key: the receipt names gateway {claimed}, checked against {expected}")
            }
            VerifyError::BadSignature => {
                f.write_str("bad signature: the signature is not the gateway key's over this receipt")
            }
        }
    }
}

/// A node public key in hex: 33 bytes, compressed.
pub fn parse_node_key(hex_str: &str) -> Result<PublicKey, String> {
    let hex_str = hex_str.trim();
    let bytes = hex::decode(hex_str).map_err(|_| "a node key is 66 hexadecimal characters".to_owned())?;
    if bytes.len() != 33 {
        return Err("a node key is a 33-byte compressed secp256k1 public key (66 hexadecimal characters)".into());
    }
    PublicKey::from_slice(&bytes).map_err(|_| "not a secp256k1 public key".into())
}

/// Verifies an envelope (its JSON text) against the node key: well formed,
/// naming that gateway, and signed by it. Answers the receipt.
pub fn verify(envelope: &[u8], node_key: &PublicKey) -> Result<PaymentReceipt, VerifyError> {
    let malformed = |why: String| VerifyError::Malformed(why);
    if envelope.len() > ENVELOPE_LEN_MAX_BYTES {
        return Err(malformed(format!("longer than {ENVELOPE_LEN_MAX_BYTES} bytes")));
    }
    // Typed first: unknown, missing and repeated fields are refused here.
    let signed: SignedReceipt = serde_json::from_slice(envelope).map_err(|e| malformed(e.to_string()))?;
    // The bytes signed are re-derived from the receipt as sent, so that
    // nothing the typed reading would drop (a null, say) goes unchecked.
    let value: Value = serde_json::from_slice(envelope).map_err(|e| malformed(e.to_string()))?;
    let bytes = canonical(&value["receipt"]).map_err(malformed)?;
    if signed.alg != ALG {
        return Err(malformed(format!("alg {:?}, not {ALG:?}", signed.alg)));
    }
    if signed.receipt.version != VERSION {
        return Err(malformed(format!("version {}, not {VERSION}", signed.receipt.version)));
    }
    let expected = node_key.to_string();
    if signed.receipt.gateway != expected {
        return Err(VerifyError::WrongGateway { claimed: signed.receipt.gateway, expected });
    }
    let mut compact = [0u8; 64];
    hex::decode_to_slice(&signed.signature, &mut compact)
        .map_err(|_| malformed("the signature is not 128 hexadecimal characters".into()))?;
    let signature = Signature::from_compact(&compact).map_err(|_| malformed("not an ECDSA signature".into()))?;
    // libsecp256k1 accepts only low-S signatures: a high-S twin of a valid
    // one fails here.
    Secp256k1::verification_only()
        .verify_ecdsa(&Message::from_digest(digest(&bytes)), &signature, node_key)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(signed.receipt)
}

// Assembly from the store's records.

/// The receipt of a payment, if it was settled: an internal payment, a
/// hold settled or an escrow released, or a payment to another node; one
/// its payee later refunded (even in full, `refunded`) keeps its receipt of
/// what was paid. Anything else (pending, held, failed, a hold cancelled or
/// an escrow refunded, which never reached the payee) is `invalid-state`.
pub fn for_payment(
    tx: &mut dyn Tx,
    payment: &PaymentRecord,
    gateway_hex: &str,
    network: Network,
) -> Result<PaymentReceipt, Error> {
    let unsettled = || {
        Error::InvalidState(format!(
            "the payment is {}: only a settled payment has a receipt",
            status_word(payment.status)
        ))
    };
    // Settled, the payer has the preimage; a hold cancelled or an escrow
    // refunded never revealed it.
    let preimage = match (payment.status, payment.preimage) {
        (PaymentStatus::Succeeded | PaymentStatus::Refunded, Some(preimage)) => preimage,
        (PaymentStatus::Succeeded, None) => {
            return Err(Error::Internal(format!("succeeded payment {} has no preimage", payment.id)));
        }
        _ => return Err(unsettled()),
    };
    let (kind, payee, settled_at_ms) = match tx.escrow(&payment.id)? {
        Some(escrow) => {
            let at = escrow.resolved_at_ms.filter(|_| escrow.status == EscrowStatus::Released);
            let at = at.ok_or_else(unsettled)?;
            let kind = match escrow.kind {
                EscrowKind::Hold => ReceiptKind::Hold,
                EscrowKind::Escrow => ReceiptKind::Escrow,
            };
            (kind, escrow.payee_agent_id, at)
        }
        None => match &payment.payee_agent_id {
            Some(agent) => (ReceiptKind::Internal, agent.clone(), payment.created_at_ms),
            None => {
                let external = tx
                    .external(&payment.id)?
                    .ok_or_else(|| Error::Internal(format!("payment {} has neither payee nor invoice", payment.id)))?;
                let at = tx.external_settled_at(&payment.id)?.unwrap_or(external.created_at_ms);
                let node = ParsedInvoice::parse(&external.bolt11, network)
                    .and_then(ParsedInvoice::outside)
                    .map_err(|e| Error::Internal(format!("the invoice of payment {}: {e}", payment.id)))?;
                (ReceiptKind::Outside, node.payee_hex, at)
            }
        },
    };
    let payee_name = match kind {
        ReceiptKind::Outside => format!("node:{payee}"),
        _ => format!("agent:{payee}"),
    };
    let decision = payment_decision(tx, payment, &payee_name)?;
    Ok(PaymentReceipt {
        version: VERSION,
        gateway: gateway_hex.to_owned(),
        payment_id: payment.id.clone(),
        kind,
        payer: payment.agent_id.clone(),
        payee,
        amount_msat: payment.amount.as_u64(),
        fee_msat: payment.fee.as_u64(),
        purpose: payment.purpose.clone(),
        payment_hash: hex::encode(payment.payment_hash),
        preimage: hex::encode(preimage),
        settled_at: views::timestamp(settled_at_ms),
        decision,
    })
}

/// The receipt of a session once it ended (closed or expired): what was
/// charged in all, from its payer to its payee. No payment hash or
/// preimage: the charges moved inside the gateway.
pub fn for_session(tx: &mut dyn Tx, session: &SessionRecord, gateway_hex: &str) -> Result<PaymentReceipt, Error> {
    let settled_at_ms = match (session.status, session.closed_at_ms) {
        (SessionStatus::Closed | SessionStatus::Expired, Some(at)) => at,
        _ => return Err(Error::InvalidState("the session is open: it has a receipt once closed or expired".into())),
    };
    let opened = tx.audit_at(&session.payer_agent_id, "session.opened", session.created_at_ms, AUDIT_CANDIDATES_MAX)?;
    let audit_seq = only(opened.iter().filter(|r| body_of(&r.body)["detail"] == session.id.as_str()).map(|r| r.seq));
    Ok(PaymentReceipt {
        version: VERSION,
        gateway: gateway_hex.to_owned(),
        payment_id: session.id.clone(),
        kind: ReceiptKind::Session,
        payer: session.payer_agent_id.clone(),
        payee: session.payee_agent_id.clone(),
        amount_msat: session.charged.as_u64(),
        fee_msat: 0,
        purpose: session.purpose.clone(),
        payment_hash: String::new(),
        preimage: String::new(),
        settled_at: views::timestamp(settled_at_ms),
        decision: ReceiptDecision { rule: "allowed".into(), audit_seq },
    })
}

/// `approved` when a person approved the held payment (its hold has the
/// payment's id with [`APPROVAL_PREFIX`]), `allowed` otherwise; with the
/// audit record of that decision when exactly one matches.
fn payment_decision(tx: &mut dyn Tx, payment: &PaymentRecord, payee_name: &str) -> Result<ReceiptDecision, Error> {
    if let Some(rest) = payment.id.strip_prefix("pay_")
        && let Some(approval) = tx.approval(&format!("{APPROVAL_PREFIX}{rest}"))?
        && approval.status == ApprovalStatus::Approved
        && approval.payment_id.as_deref() == Some(payment.id.as_str())
    {
        let audit_seq = match approval.decided_at_ms {
            Some(at) => {
                let found = tx.audit_at(&approval.agent_id, "approval.approved", at, AUDIT_CANDIDATES_MAX)?;
                only(found.iter().filter(|r| body_of(&r.body)["rule"] == approval.id.as_str()).map(|r| r.seq))
            }
            None => None,
        };
        return Ok(ReceiptDecision { rule: "approved".into(), audit_seq });
    }
    let found = tx.audit_at(&payment.agent_id, "payment.allowed", payment.created_at_ms, AUDIT_CANDIDATES_MAX)?;
    let matches = |body: &Value| {
        body["amount_msat"] == payment.amount.as_u64()
            && body["purpose"] == payment.purpose.as_str()
            && body["payee"] == payee_name
    };
    let audit_seq = only(found.iter().filter(|r| matches(&body_of(&r.body))).map(|r| r.seq));
    Ok(ReceiptDecision { rule: "allowed".into(), audit_seq })
}

fn body_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The one item, or `None` when there are none or several.
fn only(mut items: impl Iterator<Item = i64>) -> Option<i64> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

fn status_word(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Pending => "pending",
        PaymentStatus::Failed => "failed",
        PaymentStatus::Held => "held",
        PaymentStatus::Refunded => "refunded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::bolt11::NodeSigner;
    use bitcoin::secp256k1::SecretKey;

    /// docs/vectors/receipts.json: kept in step with the code by
    /// [`the_vectors_hold`].
    const VECTORS: &str = include_str!("../../../../docs/vectors/receipts.json");

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("docs/vectors/receipts.json is JSON")
    }

    fn test_signer(v: &Value) -> NodeSigner {
        let secret = hex::decode(v["private_key"].as_str().expect("private_key")).expect("hex");
        NodeSigner::new(SecretKey::from_slice(&secret).expect("a secret key"), Network::Regtest)
    }

    fn envelope(signed: &SignedReceipt) -> Vec<u8> {
        serde_json::to_vec(signed).expect("an envelope serializes")
    }

    #[test]
    fn the_vectors_hold() {
        let v = vectors();
        let node = test_signer(&v);
        assert_eq!(node.pubkey().to_string(), v["public_key"].as_str().expect("public_key"));
        for case in v["cases"].as_array().expect("cases") {
            let name = case["name"].as_str().expect("name");
            let receipt: PaymentReceipt = serde_json::from_value(case["receipt"].clone()).expect("a receipt");
            let bytes = canonical_receipt(&receipt).expect("canonical");
            assert_eq!(
                String::from_utf8(bytes.clone()).expect("UTF-8"),
                case["canonical"].as_str().expect("canonical"),
                "{name}"
            );
            assert_eq!(canonical(&case["receipt"]).expect("canonical"), bytes, "{name}: from the JSON as written");
            assert_eq!(hex::encode(digest(&bytes)), case["sha256"].as_str().expect("sha256"), "{name}");
            let signed = sign(receipt.clone(), |d| node.sign_digest(d)).expect("signing");
            assert_eq!(
                signed.signature,
                case["signature"].as_str().expect("signature"),
                "{name}: RFC 6979 is deterministic"
            );
            let text = serde_json::to_vec(&case["envelope"]).expect("envelope");
            assert_eq!(verify(&text, &node.pubkey()), Ok(receipt), "{name}");
        }
    }

    /// Every top-level field changed, one at a time: each fails.
    #[test]
    fn a_changed_field_fails() {
        let v = vectors();
        let node = test_signer(&v);
        let case = &v["cases"][0];
        let fields: Vec<String> = case["receipt"].as_object().expect("an object").keys().cloned().collect();
        assert_eq!(fields.len(), 13, "every field of the format is in the vector");
        for field in fields {
            let mut changed = case["envelope"].clone();
            let value = &mut changed["receipt"][&field];
            *value = match value.take() {
                Value::String(s) if field == "kind" => {
                    Value::String(if s == "internal" { "escrow" } else { "internal" }.into())
                }
                Value::String(s) if s.is_empty() => Value::String("0".into()),
                // The last character changed (a hex digit stays one).
                Value::String(mut s) => {
                    let last = if s.ends_with('0') { '1' } else { '0' };
                    s.pop();
                    s.push(last);
                    Value::String(s)
                }
                Value::Number(n) => Value::from(n.as_u64().expect("an integer") + 1),
                Value::Object(mut o) => {
                    o.insert("rule".into(), "approved".into());
                    Value::Object(o)
                }
                other => panic!("unexpected {other}"),
            };
            let text = serde_json::to_vec(&changed).expect("JSON");
            let err = verify(&text, &node.pubkey()).expect_err(&field);
            match field.as_str() {
                "gateway" => assert!(matches!(err, VerifyError::WrongGateway { .. }), "{field}: {err}"),
                "version" => assert!(matches!(err, VerifyError::Malformed(_)), "{field}: {err}"),
                _ => assert_eq!(err, VerifyError::BadSignature, "{field}"),
            }
        }
    }

    #[test]
    fn another_key_a_high_s_twin_and_malformed_envelopes_fail() {
        let v = vectors();
        let node = test_signer(&v);
        let text = serde_json::to_vec(&v["cases"][0]["envelope"]).expect("JSON");
        let other = NodeSigner::new(SecretKey::from_slice(&[7u8; 32]).expect("a key"), Network::Regtest);
        assert!(matches!(verify(&text, &other.pubkey()), Err(VerifyError::WrongGateway { .. })));

        // The same receipt signed by the other key, claiming the first
        // gateway: a bad signature.
        let receipt: PaymentReceipt = serde_json::from_value(v["cases"][0]["receipt"].clone()).expect("receipt");
        let forged = sign(receipt.clone(), |d| other.sign_digest(d)).expect("signing");
        assert_eq!(verify(&envelope(&forged), &node.pubkey()), Err(VerifyError::BadSignature));

        // s replaced by n - s: the same point, not low-S, refused.
        let good = sign(receipt, |d| node.sign_digest(d)).expect("signing");
        let mut compact = [0u8; 64];
        hex::decode_to_slice(&good.signature, &mut compact).expect("hex");
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").expect("n");
        let mut borrow = 0i16;
        for i in (32..64).rev() {
            let d = i16::from(n[i - 32]) - i16::from(compact[i]) - borrow;
            compact[i] = u8::try_from(d.rem_euclid(256)).expect("a byte");
            borrow = i16::from(d < 0);
        }
        let twin = SignedReceipt { signature: hex::encode(compact), ..good.clone() };
        assert_eq!(verify(&envelope(&twin), &node.pubkey()), Err(VerifyError::BadSignature));

        for bad in [
            b"not json".to_vec(),
            br#"{"receipt": {}, "signature": "", "alg": "secp256k1-sha256"}"#.to_vec(),
            envelope(&SignedReceipt { alg: "ed25519".into(), ..good.clone() }),
            envelope(&SignedReceipt { signature: "zz".into(), ..good.clone() }),
        ] {
            assert!(
                matches!(verify(&bad, &node.pubkey()), Err(VerifyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        // An extra field, or a null in place of an absent one: refused.
        let mut extra: Value = serde_json::to_value(&good).expect("JSON");
        extra["receipt"]["note"] = "added".into();
        assert!(matches!(
            verify(&serde_json::to_vec(&extra).expect("JSON"), &node.pubkey()),
            Err(VerifyError::Malformed(_))
        ));
        let mut null: Value = serde_json::to_value(&good).expect("JSON");
        null["receipt"]["decision"]["audit_seq"] = Value::Null;
        let text = serde_json::to_vec(&null).expect("JSON");
        assert!(verify(&text, &node.pubkey()).is_err());
        assert_eq!(verify(&envelope(&good), &node.pubkey()).map(|_| ()), Ok(()));
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_refuses_what_the_schema_has_not() {
        let value = serde_json::json!({"b": 1, "a": {"z": "\u{e9}\n\"", "y": -2}, "B": "x"});
        // Non-ASCII as is; the newline and the quote escaped.
        let want = "{\"B\":\"x\",\"a\":{\"y\":-2,\"z\":\"\u{e9}\\n\\\"\"},\"b\":1}";
        assert_eq!(String::from_utf8(canonical(&value).expect("canonical")).expect("UTF-8"), want);
        for bad in [
            serde_json::json!({"a": 1.5}),
            serde_json::json!({"a": null}),
            serde_json::json!({"a": [1]}),
            serde_json::json!({"a": true}),
        ] {
            assert!(canonical(&bad).is_err(), "{bad}");
        }
        assert_eq!(canonical(&serde_json::json!({"c": "\u{1f}"})).expect("canonical"), br#"{"c":"\u001f"}"#);
    }

    #[test]
    fn node_keys_are_33_bytes_compressed() {
        let v = vectors();
        assert!(parse_node_key(v["public_key"].as_str().expect("key")).is_ok());
        assert!(parse_node_key("02").is_err());
        assert!(parse_node_key(&"ab".repeat(33)).is_err());
        let node = test_signer(&v);
        let uncompressed = hex::encode(node.pubkey().serialize_uncompressed());
        assert!(parse_node_key(&uncompressed).is_err());
    }
}
