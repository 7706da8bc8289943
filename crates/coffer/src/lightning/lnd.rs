//! LND, through its REST API (`lnd.conf` `restlisten`), with a macaroon in
//! the `Grpc-Metadata-macaroon` header (hex) and its self-signed `tls.cert`
//! pinned: rustls refuses that certificate even as a trusted root (it is a
//! CA used as an end entity), so the verifier accepts exactly that
//! certificate and nothing else.
//!
//! - `POST /v1/invoices {"value_msat", "memo", "expiry", "r_preimage"}` → `{"r_hash", "payment_request"}`
//!   (bytes as base64; coffer chooses the preimage).
//! - `POST /v2/router/send {"payment_request", "fee_limit_msat", "timeout_seconds", "no_inflight_updates"}`
//!   → a stream of `{"result": Payment}` lines, the last one final; `Payment` has `status` (`IN_FLIGHT`,
//!   `SUCCEEDED`, `FAILED`), `fee_msat`, `payment_preimage` (hex) and `failure_reason`.
//! - `GET /v2/router/track/{payment_hash}` (base64url): the same stream; its first line is the current
//!   state. An unknown payment is an error answer (`payment isn't initiated`).
//! - `GET /v1/invoice/{r_hash_str}` (hex) → `{"state"}`: `OPEN`, `ACCEPTED`, `SETTLED`, `CANCELED`.
//! - `GET /v1/balance/channels` → `{"local_balance": {"msat"}}`.
//!
//! Hold invoices ([`HoldInvoices`], LND's `invoicesrpc`, compiled into
//! LND's release builds; the macaroon needs the `invoices` permissions):
//!
//! - `POST /v2/invoices/hodl {"hash", "value_msat", "memo", "expiry", "cltv_expiry"?}` → `{"payment_request"}`
//!   (coffer's payment hash as base64).
//! - `GET /v2/invoices/lookup?payment_hash=` (base64) → `{"r_hash", "state", "amt_paid_msat"}`, state `OPEN`,
//!   `ACCEPTED`, `SETTLED` or `CANCELED` (LND cancels an open invoice at its expiry); `404` (gRPC NotFound)
//!   when LND has no such invoice.
//! - `POST /v2/invoices/settle {"preimage"}` and `POST /v2/invoices/cancel {"payment_hash"}` (base64) → `{}`.
//!   Settling a settled invoice and cancelling a cancelled one succeed; settling an open or cancelled one and
//!   cancelling a settled one are errors (`500`, `{"code", "message"}`).
//!
//! Integers of 64 bits are JSON strings in LND's REST answers.

use super::http::{RESPONSE_LEN_MAX_BYTES, detail, send, send_json};
use super::{
    CreatedInvoice, FundingSource, HoldInvoices, HoldState, InvoiceState, LnError, LnFuture, PayResult,
    check_hold_bolt11, parse_hash_hex,
};
use crate::secrets::Secret;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use coffer_core::Msat;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// How long LND itself keeps trying to route one payment.
const PAY_TIMEOUT_SECS: u32 = 60;

pub struct Lnd {
    base: String,
    macaroon_hex: Secret,
    http: reqwest::Client,
}

impl Lnd {
    pub fn new(url: &str, macaroon_hex: Secret, http: reqwest::Client) -> Lnd {
        Lnd { base: url.trim_end_matches('/').to_owned(), macaroon_hex, http }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("Grpc-Metadata-macaroon", self.macaroon_hex.expose())
    }
}

#[derive(Deserialize)]
struct AddInvoice {
    r_hash: String,
    payment_request: String,
}

#[derive(Deserialize)]
struct StreamLine {
    result: Option<Payment>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Payment {
    status: String,
    #[serde(default)]
    fee_msat: String,
    #[serde(default)]
    payment_preimage: String,
    #[serde(default)]
    failure_reason: String,
}

#[derive(Deserialize)]
struct Invoice {
    state: String,
}

#[derive(Deserialize)]
struct AddHoldInvoice {
    payment_request: String,
}

/// A hold invoice as `LookupInvoiceV2` describes it (an `lnrpc.Invoice`).
#[derive(Deserialize)]
struct HoldInvoice {
    #[serde(default)]
    r_hash: String,
    state: String,
    #[serde(default)]
    amt_paid_msat: String,
}

#[derive(Deserialize)]
struct ChannelBalance {
    local_balance: Option<Amount>,
}

#[derive(Deserialize)]
struct Amount {
    msat: String,
}

fn msat(field: &str, text: &str) -> Result<Msat, LnError> {
    if text.is_empty() {
        return Ok(Msat::ZERO);
    }
    text.parse::<u64>().map(Msat::new).map_err(|_| LnError::Protocol(format!("{field} is not a whole number")))
}

fn base64_32(field: &str, text: &str) -> Result<[u8; 32], LnError> {
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|_| LnError::Protocol(format!("{field} is not base64")))?;
    bytes.try_into().map_err(|_| LnError::Protocol(format!("{field} is not 32 bytes")))
}

fn pay_result(p: &Payment) -> Result<PayResult, LnError> {
    Ok(match p.status.as_str() {
        "SUCCEEDED" => PayResult::Succeeded {
            preimage: parse_hash_hex("payment_preimage", &p.payment_preimage)?,
            fee: msat("fee_msat", &p.fee_msat)?,
        },
        "FAILED" => PayResult::Failed { reason: format!("LND: {}", p.failure_reason) },
        _ => PayResult::Pending,
    })
}

fn hold_state(invoice: &HoldInvoice, payment_hash: [u8; 32]) -> Result<HoldState, LnError> {
    if !invoice.r_hash.is_empty() && base64_32("r_hash", &invoice.r_hash)? != payment_hash {
        return Err(LnError::Protocol("LND answered about another invoice".into()));
    }
    match invoice.state.as_str() {
        "OPEN" => Ok(HoldState::Open),
        "ACCEPTED" => Ok(HoldState::Accepted { amount: msat("amt_paid_msat", &invoice.amt_paid_msat)? }),
        "SETTLED" => Ok(HoldState::Settled),
        "CANCELED" => Ok(HoldState::Cancelled),
        other => {
            Err(LnError::Protocol(format!("an invoice state LND does not document: {}", detail(other.as_bytes()))))
        }
    }
}

impl Lnd {
    /// A call answered by an empty message: any 2xx is done, anything else
    /// (a 404 too) an error.
    async fn post_empty(&self, path: &str, body: serde_json::Value) -> Result<(), LnError> {
        let (status, answer) = send(self.request(reqwest::Method::POST, path).json(&body)).await?;
        if (200..300).contains(&status) { Ok(()) } else { Err(LnError::Status { status, detail: detail(&answer) }) }
    }
}

impl HoldInvoices for Lnd {
    fn create_hold_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        payment_hash: [u8; 32],
        min_final_cltv_expiry_delta_blocks: Option<u32>,
    ) -> LnFuture<'_, String> {
        let mut body = json!({
            "hash": STANDARD.encode(payment_hash), "value_msat": amount.as_u64().to_string(), "memo": memo,
            "expiry": expiry_secs.to_string(),
        });
        if let Some(blocks) = min_final_cltv_expiry_delta_blocks {
            body["cltv_expiry"] = json!(blocks.to_string());
        }
        Box::pin(async move {
            let added: AddHoldInvoice = send_json(self.request(reqwest::Method::POST, "/v2/invoices/hodl").json(&body))
                .await?
                .ok_or_else(|| LnError::Protocol("404 adding a hold invoice (LND without invoicesrpc?)".into()))?;
            check_hold_bolt11(&added.payment_request, payment_hash, amount)?;
            Ok(added.payment_request)
        })
    }

    fn lookup_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<HoldState>> {
        Box::pin(async move {
            // Standard base64, its `+`, `/` and `=` escaped for the query.
            let escaped = STANDARD.encode(payment_hash).replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
            let path = format!("/v2/invoices/lookup?payment_hash={escaped}");
            match send_json::<HoldInvoice>(self.request(reqwest::Method::GET, &path)).await? {
                None => Ok(None),
                Some(invoice) => hold_state(&invoice, payment_hash).map(Some),
            }
        })
    }

    fn settle_hold_invoice(&self, preimage: [u8; 32]) -> LnFuture<'_, ()> {
        Box::pin(self.post_empty("/v2/invoices/settle", json!({"preimage": STANDARD.encode(preimage)})))
    }

    fn cancel_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, ()> {
        Box::pin(self.post_empty("/v2/invoices/cancel", json!({"payment_hash": STANDARD.encode(payment_hash)})))
    }
}

/// The payment state in a stream's lines: the last line with a result; an
/// error line is an error.
fn read_stream(body: &[u8], first_only: bool) -> Result<Option<PayResult>, LnError> {
    let mut last = None;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let parsed: StreamLine = serde_json::from_slice(line).map_err(|e| LnError::Protocol(e.to_string()))?;
        if let Some(error) = parsed.error {
            let text = error.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
            if text.contains("isn't initiated") || text.contains("not found") {
                return Ok(None);
            }
            return Err(LnError::Status { status: 200, detail: text });
        }
        if let Some(payment) = parsed.result {
            last = Some(pay_result(&payment)?);
            if first_only {
                break;
            }
        }
    }
    last.ok_or_else(|| LnError::Protocol("a payment stream without a result".into())).map(Some)
}

impl FundingSource for Lnd {
    fn name(&self) -> &'static str {
        "lnd"
    }

    fn create_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        preimage: [u8; 32],
    ) -> LnFuture<'_, CreatedInvoice> {
        let body = json!({
            "value_msat": amount.as_u64().to_string(), "memo": memo, "expiry": expiry_secs.to_string(),
            "r_preimage": STANDARD.encode(preimage),
        });
        Box::pin(async move {
            let added: AddInvoice = send_json(self.request(reqwest::Method::POST, "/v1/invoices").json(&body))
                .await?
                .ok_or_else(|| LnError::Protocol("404 adding an invoice".into()))?;
            Ok(CreatedInvoice {
                bolt11: added.payment_request,
                payment_hash: base64_32("r_hash", &added.r_hash)?,
                preimage,
            })
        })
    }

    fn pay_invoice(&self, bolt11: &str, _amount: Msat, max_fee: Msat) -> LnFuture<'_, PayResult> {
        let body = json!({
            "payment_request": bolt11, "fee_limit_msat": max_fee.as_u64().to_string(),
            "timeout_seconds": PAY_TIMEOUT_SECS, "no_inflight_updates": true,
        });
        Box::pin(async move {
            let (status, answer) = send(self.request(reqwest::Method::POST, "/v2/router/send").json(&body)).await?;
            if !(200..300).contains(&status) {
                return Err(LnError::Status { status, detail: detail(&answer) });
            }
            read_stream(&answer, false)?.ok_or_else(|| LnError::Protocol("LND lost the payment it was sent".into()))
        })
    }

    fn lookup_payment(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<PayResult>> {
        let path = format!("/v2/router/track/{}", URL_SAFE.encode(payment_hash));
        Box::pin(async move {
            // The track stream stays open while the payment is in flight:
            // read its first line only.
            let mut response = self
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .map_err(|e| LnError::Unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| LnError::Unreachable(e.to_string()))? {
                body.extend_from_slice(&chunk);
                if body.contains(&b'\n') || body.len() > RESPONSE_LEN_MAX_BYTES {
                    break;
                }
            }
            if status == 404 {
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(LnError::Status { status, detail: detail(&body) });
            }
            read_stream(&body, true)
        })
    }

    fn lookup_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, InvoiceState> {
        let path = format!("/v1/invoice/{}", hex::encode(payment_hash));
        Box::pin(async move {
            let Some(invoice) = send_json::<Invoice>(self.request(reqwest::Method::GET, &path)).await? else {
                return Ok(InvoiceState::Expired);
            };
            Ok(match invoice.state.as_str() {
                "SETTLED" => InvoiceState::Paid,
                "CANCELED" => InvoiceState::Expired,
                _ => InvoiceState::Open,
            })
        })
    }

    fn balance(&self) -> LnFuture<'_, Msat> {
        Box::pin(async move {
            let balance: ChannelBalance = send_json(self.request(reqwest::Method::GET, "/v1/balance/channels"))
                .await?
                .ok_or_else(|| LnError::Protocol("404 reading the channel balance".into()))?;
            balance.local_balance.map_or(Ok(Msat::ZERO), |a| msat("local_balance.msat", &a.msat))
        })
    }

    fn hold_invoices(&self) -> Option<&dyn HoldInvoices> {
        Some(self)
    }
}

/// A TLS client configuration that trusts exactly the certificate in `pem`.
pub fn pinned_tls(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pinned = CertificateDer::from_pem_slice(pem).map_err(|e| format!("the TLS certificate file: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { der: pinned.as_ref().to_vec(), provider: Arc::clone(&provider) });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// Accepts the one pinned certificate (compared byte for byte) and checks
/// the handshake signatures against it.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
