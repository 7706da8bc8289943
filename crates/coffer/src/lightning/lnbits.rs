//! LNbits, through its HTTP API with a wallet's admin key (`X-Api-Key`).
//!
//! - `POST /api/v1/payments {"out": false, "amount", "unit": "sat", "memo", "expiry"}`: an invoice (whole
//!   satoshis only); the answer carries `payment_hash`, `bolt11` and `preimage`.
//! - `POST /api/v1/payments {"out": true, "bolt11"}`: pays. `201` with the payment (`status` `success`,
//!   `pending` or `failed`, `fee` in msat, negative); `520` with `{"detail", "status"}` when the payment
//!   failed (`failed`) or its outcome is open (`pending`); `400` when the invoice was refused unsent.
//!   LNbits takes no fee limit per call: it applies its own fee reserve (by default the larger of 2 sat and
//!   1%), which is below coffer's default limit.
//! - `GET /api/v1/payments/{payment_hash}`: `{"paid", "status", "preimage", "details": {"fee"}}`, `404`
//!   when it has no such payment.
//! - `GET /api/v1/wallet`: `{"balance"}` in msat.
//!
//! No hold invoices ([`super::FundingSource::hold_invoices`] is `None`),
//! although LNbits has an API for them (`POST /api/v1/payments` with a
//! `payment_hash`, `POST /api/v1/payments/settle {"preimage"}`,
//! `POST /api/v1/payments/cancel {"payment_hash"}`):
//! - its payment status cannot tell a held payment from an unpaid invoice:
//!   `GET /api/v1/payments/{payment_hash}` is `pending` for both (its LND
//!   funding source reads LND's `ACCEPTED` as pending), so coffer could not
//!   know when to settle;
//! - it works only when LNbits' own funding source has hold invoices (its
//!   LND sources); its FakeWallet, which the live tests run
//!   (`tests/lightning_lnbits.rs`), has none, so it could not be tested.

use super::http::{detail, send, send_json};
use super::{CreatedInvoice, FundingSource, InvoiceState, LnError, LnFuture, PayResult, parse_hash_hex};
use crate::secrets::Secret;
use coffer_core::Msat;
use serde::Deserialize;
use serde_json::json;

pub struct Lnbits {
    base: String,
    admin_key: Secret,
    http: reqwest::Client,
}

impl Lnbits {
    pub fn new(url: &str, admin_key: Secret, http: reqwest::Client) -> Lnbits {
        Lnbits { base: url.trim_end_matches('/').to_owned(), admin_key, http }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).header("X-Api-Key", self.admin_key.expose())
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).header("X-Api-Key", self.admin_key.expose())
    }

    async fn payment(&self, payment_hash: [u8; 32]) -> Result<Option<PaymentStatus>, LnError> {
        send_json(self.get(&format!("/api/v1/payments/{}", hex::encode(payment_hash)))).await
    }
}

#[derive(Deserialize)]
struct Created {
    payment_hash: String,
    bolt11: String,
    preimage: Option<String>,
}

#[derive(Deserialize)]
struct Payment {
    status: String,
    #[serde(default)]
    fee: i64,
    preimage: Option<String>,
}

#[derive(Deserialize)]
struct PaymentStatus {
    paid: bool,
    status: Option<String>,
    preimage: Option<String>,
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    fee: i64,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    detail: serde_json::Value,
    status: Option<String>,
}

#[derive(Deserialize)]
struct Wallet {
    balance: i64,
}

fn fee(msat: i64) -> Msat {
    Msat::new(msat.unsigned_abs())
}

fn succeeded(preimage: Option<&str>, fee_msat: i64) -> Result<PayResult, LnError> {
    let preimage = preimage.ok_or_else(|| LnError::Protocol("a paid payment without its preimage".into()))?;
    Ok(PayResult::Succeeded { preimage: parse_hash_hex("preimage", preimage)?, fee: fee(fee_msat) })
}

impl FundingSource for Lnbits {
    fn name(&self) -> &'static str {
        "lnbits"
    }

    fn create_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        _preimage: [u8; 32],
    ) -> LnFuture<'_, CreatedInvoice> {
        let body =
            json!({"out": false, "amount": amount.whole_sat(), "unit": "sat", "memo": memo, "expiry": expiry_secs});
        Box::pin(async move {
            if !amount.as_u64().is_multiple_of(1000) {
                return Err(LnError::Protocol("LNbits makes invoices of whole satoshis only".into()));
            }
            let created: Created = send_json(self.post("/api/v1/payments").json(&body))
                .await?
                .ok_or_else(|| LnError::Protocol("404 creating an invoice".into()))?;
            let preimage = created.preimage.ok_or_else(|| LnError::Protocol("no preimage for the invoice".into()))?;
            Ok(CreatedInvoice {
                bolt11: created.bolt11,
                payment_hash: parse_hash_hex("payment_hash", &created.payment_hash)?,
                preimage: parse_hash_hex("preimage", &preimage)?,
            })
        })
    }

    fn pay_invoice(&self, bolt11: &str, _amount: Msat, _max_fee: Msat) -> LnFuture<'_, PayResult> {
        let body = json!({"out": true, "bolt11": bolt11});
        Box::pin(async move {
            let (status, answer) = send(self.post("/api/v1/payments").json(&body)).await?;
            match status {
                200..=299 => {
                    let paid: Payment =
                        serde_json::from_slice(&answer).map_err(|e| LnError::Protocol(e.to_string()))?;
                    match paid.status.as_str() {
                        "success" => succeeded(paid.preimage.as_deref(), paid.fee),
                        "failed" => Ok(PayResult::Failed { reason: "LNbits reports the payment failed".into() }),
                        _ => Ok(PayResult::Pending),
                    }
                }
                // Refused before anything was sent: a bad invoice, a bad key.
                400 | 401 | 403 | 422 => {
                    Ok(PayResult::Failed { reason: format!("LNbits refused it: {}", detail(&answer)) })
                }
                520 => {
                    let refusal: Refusal =
                        serde_json::from_slice(&answer).map_err(|e| LnError::Protocol(e.to_string()))?;
                    let why = match refusal.detail {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    match refusal.status.as_deref() {
                        Some("failed") => Ok(PayResult::Failed { reason: format!("LNbits: {why}") }),
                        _ => Err(LnError::Status { status, detail: why }),
                    }
                }
                _ => Err(LnError::Status { status, detail: detail(&answer) }),
            }
        })
    }

    fn lookup_payment(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<PayResult>> {
        Box::pin(async move {
            let Some(found) = self.payment(payment_hash).await? else { return Ok(None) };
            if found.paid {
                let fee_msat = found.details.as_ref().map_or(0, |d| d.fee);
                return succeeded(found.preimage.as_deref(), fee_msat).map(Some);
            }
            Ok(Some(match found.status.as_deref() {
                Some("failed") => PayResult::Failed { reason: "LNbits reports the payment failed".into() },
                _ => PayResult::Pending,
            }))
        })
    }

    fn lookup_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, InvoiceState> {
        Box::pin(async move {
            let found = self.payment(payment_hash).await?;
            Ok(match found {
                None => InvoiceState::Expired,
                Some(p) if p.paid => InvoiceState::Paid,
                Some(p) if p.status.as_deref() == Some("failed") => InvoiceState::Expired,
                Some(_) => InvoiceState::Open,
            })
        })
    }

    fn balance(&self) -> LnFuture<'_, Msat> {
        Box::pin(async move {
            let wallet: Wallet = send_json(self.get("/api/v1/wallet"))
                .await?
                .ok_or_else(|| LnError::Protocol("404 reading the wallet".into()))?;
            Ok(Msat::new(wallet.balance.max(0).unsigned_abs()))
        })
    }
}
