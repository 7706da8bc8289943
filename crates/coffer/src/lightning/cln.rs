//! Core Lightning, through clnrest (`POST /v1/<method>` with the method's
//! parameters as a JSON object) and a rune in the `Rune` header.
//!
//! - `invoice {"amount_msat", "label", "description", "expiry", "preimage"}` → `{"payment_hash", "bolt11"}`
//!   (coffer chooses the preimage; the label is the payment hash, unique per node).
//! - `pay {"bolt11", "maxfee"}` → `{"status": "complete"|"pending"|"failed", "payment_preimage",
//!   "amount_msat", "amount_sent_msat"}`; errors as `{"code", "message"}`: 203 (permanent failure), 205 (no
//!   route), 206 (fee above `maxfee`) and 207 (expired) mean not paid; others (210: still in flight) leave
//!   it open.
//! - `listpays {"payment_hash"}` → `{"pays": [{"status", "preimage", "amount_msat", "amount_sent_msat"}]}`.
//! - `listinvoices {"payment_hash"}` → `{"invoices": [{"status": "unpaid"|"paid"|"expired"}]}`.
//! - `listfunds {}` → `{"channels": [{"our_amount_msat"}]}`.
//!
//! No hold invoices ([`super::FundingSource::hold_invoices`] is `None`):
//! Core Lightning itself has none. An `invoice` is settled by the node as
//! soon as it is paid; holding a payment needs a plugin on the
//! `invoice_payment`/`htlc_accepted` hooks (such as `holdinvoice`), whose
//! commands are not part of core's API and which coffer does not assume.

use super::http::{detail, send};
use super::{CreatedInvoice, FundingSource, InvoiceState, LnError, LnFuture, PayResult, parse_hash_hex};
use crate::secrets::Secret;
use coffer_core::Msat;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `pay` error codes after which the invoice was definitely not paid.
const NOT_PAID_CODES: [i64; 4] = [203, 205, 206, 207];

pub struct Cln {
    base: String,
    rune: Secret,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Invoice {
    payment_hash: String,
    bolt11: String,
}

#[derive(Deserialize)]
struct Pay {
    status: String,
    #[serde(alias = "payment_preimage")]
    preimage: Option<String>,
    amount_msat: Option<u64>,
    amount_sent_msat: Option<u64>,
}

#[derive(Deserialize)]
struct Pays {
    pays: Vec<Pay>,
}

#[derive(Deserialize)]
struct Invoices {
    invoices: Vec<InvoiceStatus>,
}

#[derive(Deserialize)]
struct InvoiceStatus {
    status: String,
}

#[derive(Deserialize)]
struct Funds {
    #[serde(default)]
    channels: Vec<Channel>,
}

#[derive(Deserialize)]
struct Channel {
    #[serde(default)]
    our_amount_msat: u64,
}

/// A clnrest call that failed: its status and CLN's error object.
struct Failure {
    status: u16,
    code: Option<i64>,
    message: String,
}

impl Cln {
    pub fn new(url: &str, rune: Secret, http: reqwest::Client) -> Cln {
        Cln { base: url.trim_end_matches('/').to_owned(), rune, http }
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<Result<T, Failure>, LnError> {
        let request =
            self.http.post(format!("{}/v1/{method}", self.base)).header("Rune", self.rune.expose()).json(&params);
        let (status, body) = send(request).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map(Ok).map_err(|e| LnError::Protocol(e.to_string()));
        }
        let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // clnrest wraps the error object in some versions.
        let error = error.get("error").cloned().unwrap_or(error);
        let code = error.get("code").and_then(Value::as_i64);
        let message = error.get("message").and_then(Value::as_str).map_or_else(|| detail(&body), str::to_owned);
        Ok(Err(Failure { status, code, message }))
    }

    async fn call_ok<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, LnError> {
        self.call(method, params).await?.map_err(|f| LnError::Status { status: f.status, detail: f.message })
    }
}

fn pay_result(p: &Pay) -> Result<PayResult, LnError> {
    Ok(match p.status.as_str() {
        "complete" => {
            let preimage =
                p.preimage.as_deref().ok_or_else(|| LnError::Protocol("a complete pay without preimage".into()))?;
            let fee = p.amount_sent_msat.unwrap_or(0).saturating_sub(p.amount_msat.unwrap_or(0));
            PayResult::Succeeded { preimage: parse_hash_hex("preimage", preimage)?, fee: Msat::new(fee) }
        }
        "failed" => PayResult::Failed { reason: "Core Lightning reports the payment failed".into() },
        _ => PayResult::Pending,
    })
}

impl FundingSource for Cln {
    fn name(&self) -> &'static str {
        "cln"
    }

    fn create_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        preimage: [u8; 32],
    ) -> LnFuture<'_, CreatedInvoice> {
        let label = format!(
            "coffer-{}",
            hex::encode(bitcoin::hashes::Hash::to_byte_array(
                <bitcoin::hashes::sha256::Hash as bitcoin::hashes::Hash>::hash(&preimage),
            ))
        );
        let params = json!({
            "amount_msat": amount.as_u64(), "label": label, "description": memo, "expiry": expiry_secs,
            "preimage": hex::encode(preimage),
        });
        Box::pin(async move {
            let made: Invoice = self.call_ok("invoice", params).await?;
            Ok(CreatedInvoice {
                bolt11: made.bolt11,
                payment_hash: parse_hash_hex("payment_hash", &made.payment_hash)?,
                preimage,
            })
        })
    }

    fn pay_invoice(&self, bolt11: &str, _amount: Msat, max_fee: Msat) -> LnFuture<'_, PayResult> {
        let params = json!({"bolt11": bolt11, "maxfee": max_fee.as_u64()});
        Box::pin(async move {
            match self.call::<Pay>("pay", params).await? {
                Ok(paid) => pay_result(&paid),
                Err(f) if f.code.is_some_and(|c| NOT_PAID_CODES.contains(&c)) => {
                    Ok(PayResult::Failed { reason: format!("Core Lightning: {}", f.message) })
                }
                Err(f) => Err(LnError::Status { status: f.status, detail: f.message }),
            }
        })
    }

    fn lookup_payment(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<PayResult>> {
        Box::pin(async move {
            let found: Pays = self.call_ok("listpays", json!({"payment_hash": hex::encode(payment_hash)})).await?;
            // Several attempts may be listed: one complete wins, then one
            // pending; only when every one failed did the payment fail.
            let results = found.pays.iter().map(pay_result).collect::<Result<Vec<_>, _>>()?;
            let succeeded = results.iter().find(|r| matches!(r, PayResult::Succeeded { .. }));
            let pending = results.iter().find(|r| matches!(r, PayResult::Pending));
            Ok(succeeded.or(pending).or(results.first()).cloned())
        })
    }

    fn lookup_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, InvoiceState> {
        Box::pin(async move {
            let found: Invoices =
                self.call_ok("listinvoices", json!({"payment_hash": hex::encode(payment_hash)})).await?;
            Ok(match found.invoices.first().map(|i| i.status.as_str()) {
                Some("paid") => InvoiceState::Paid,
                Some("unpaid") => InvoiceState::Open,
                _ => InvoiceState::Expired,
            })
        })
    }

    fn balance(&self) -> LnFuture<'_, Msat> {
        Box::pin(async move {
            let funds: Funds = self.call_ok("listfunds", json!({})).await?;
            let total = funds.channels.iter().fold(0u64, |sum, c| sum.saturating_add(c.our_amount_msat));
            Ok(Msat::new(total))
        })
    }
}
