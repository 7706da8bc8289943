//! The NIP-47 methods, each through the gateway operation HTTP uses: one
//! decision, one audit trail, whatever the rail. Amounts are millisatoshis
//! and times Unix seconds, as NIP-47 has them.

use crate::error::Error;
use crate::gateway::nwc::NwcLookup;
use crate::gateway::{AgentKey, Gateway, PayOptions, PayOutcome, parse_hash};
use crate::model::{InvoiceRecord, NwcConnectionRecord, NwcMethod, PageRequest, PaymentRecord, StoredInvoiceStatus};
use coffer_client::PaymentStatus;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// How long `pay_invoice` waits for an outside payment to end before it
/// answers; a payment still pending then is answered `OTHER` (pending),
/// its outcome told later by `payment_sent` or `lookup_invoice`.
const PAY_WAIT_MAX_MS: u64 = 60_000;
const PAY_POLL_MS: u64 = 200;
/// The most transactions one `list_transactions` answers.
const LIST_TRANSACTIONS_MAX: u32 = 100;
/// How much of a rule's message an error carries.
const MESSAGE_LEN_MAX_CHARS: usize = 300;

/// A NIP-47 error: its code and a message that names the rule.
#[derive(Debug)]
pub struct NwcError {
    pub code: &'static str,
    pub message: String,
}

impl NwcError {
    pub fn new(code: &'static str, message: impl Into<String>) -> NwcError {
        NwcError { code, message: message.into().chars().take(MESSAGE_LEN_MAX_CHARS).collect() }
    }
}

impl From<Error> for NwcError {
    /// Refusals by the constitution name their rule; NIP-47's codes are
    /// coarser than coffer's problems, so the problem's text rides along.
    fn from(e: Error) -> NwcError {
        let code = match &e {
            Error::Denied(denial) => match denial.code {
                "insufficient-balance" => "INSUFFICIENT_BALANCE",
                "amount-too-large" | "budget-exceeded" => "QUOTA_EXCEEDED",
                "rate-limited" => "RATE_LIMITED",
                _ => "RESTRICTED",
            },
            Error::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Error::LimitExceeded { .. } => "RATE_LIMITED",
            Error::Forbidden(_) | Error::Signature { .. } => "RESTRICTED",
            Error::Unauthorized => "UNAUTHORIZED",
            Error::NotFound(_) => "NOT_FOUND",
            Error::InvoiceExpired
            | Error::InvoiceAlreadyPaid
            | Error::SelfPayment
            | Error::PaymentInFlight
            | Error::NoLightningBackend
            | Error::Backend(_) => "PAYMENT_FAILED",
            Error::Internal(_) | Error::Unavailable(_) => "INTERNAL",
            _ => "OTHER",
        };
        let message = match &e {
            Error::Denied(denial) => format!("{}: {}", denial.code, denial.message),
            other => other.to_string(),
        };
        NwcError::new(code, message)
    }
}

fn bad_params(e: serde_json::Error) -> NwcError {
    NwcError::new("OTHER", format!("bad params: {e}"))
}

/// Calls `method` for the connection.
pub async fn call(
    gateway: &Gateway,
    connection: &NwcConnectionRecord,
    key: &AgentKey,
    method: NwcMethod,
    params: &Value,
    event_id: &str,
) -> Result<Value, NwcError> {
    match method {
        NwcMethod::GetInfo => get_info(gateway, connection),
        NwcMethod::GetBalance => {
            let (_, balance) = gateway.wallet(key).await?;
            Ok(json!({"balance": balance.available().as_u64()}))
        }
        NwcMethod::MakeInvoice => make_invoice(gateway, key, params).await,
        NwcMethod::PayInvoice => pay_invoice(gateway, connection, key, params, event_id).await,
        NwcMethod::LookupInvoice => lookup_invoice(gateway, key, params).await,
        NwcMethod::ListTransactions => list_transactions(gateway, key, params).await,
    }
}

fn get_info(gateway: &Gateway, connection: &NwcConnectionRecord) -> Result<Value, NwcError> {
    let methods: Vec<&str> = connection.methods.iter().map(NwcMethod::as_str).collect();
    let notifications: &[&str] = if connection.notifications { &super::notify::TYPES } else { &[] };
    Ok(json!({
        "alias": "coffer",
        "color": "#f7931a",
        "pubkey": gateway.node_pubkey_hex(),
        "network": network_name(gateway),
        "block_height": 0,
        "block_hash": "",
        "methods": methods,
        "notifications": notifications,
    }))
}

fn network_name(gateway: &Gateway) -> &'static str {
    use crate::payment::bolt11::Network;
    match gateway.settings().network {
        Network::Bitcoin => "mainnet",
        Network::Testnet => "testnet",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

#[derive(Deserialize)]
struct MakeInvoice {
    amount: u64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expiry: Option<u32>,
}

async fn make_invoice(gateway: &Gateway, key: &AgentKey, params: &Value) -> Result<Value, NwcError> {
    let p = MakeInvoice::deserialize(params).map_err(bad_params)?;
    let invoice = gateway.create_invoice(key, p.amount, p.description.as_deref(), p.expiry, None).await?;
    Ok(incoming(&invoice))
}

#[derive(Deserialize)]
struct PayInvoice {
    invoice: String,
    #[serde(default)]
    amount: Option<u64>,
}

/// Pays as `POST /v1/payments` does, keyed by the request's event id: a
/// request delivered again never pays twice.
async fn pay_invoice(
    gateway: &Gateway,
    connection: &NwcConnectionRecord,
    key: &AgentKey,
    params: &Value,
    event_id: &str,
) -> Result<Value, NwcError> {
    let p = PayInvoice::deserialize(params).map_err(bad_params)?;
    let purpose = format!("NWC: {}", connection.name);
    let idempotency_key = format!("nwc-{event_id}");
    let options = PayOptions {
        amount_msat: p.amount,
        purpose: Some(&purpose),
        idempotency_key: Some(&idempotency_key),
        ..PayOptions::default()
    };
    let outcome = gateway.pay_to(key, &p.invoice, options).await?;
    let payment = match outcome {
        PayOutcome::Paid(payment) => payment,
        PayOutcome::Held(approval) => {
            let detail = format!(
                "held for a person's approval ({}); its outcome comes as payment_sent or by lookup_invoice",
                approval.id
            );
            return Err(NwcError::new("OTHER", detail));
        }
    };
    let payment = settled(gateway, key, payment).await?;
    match (payment.status, payment.preimage) {
        (PaymentStatus::Succeeded, Some(preimage)) => {
            Ok(json!({"preimage": hex::encode(preimage), "fees_paid": payment.fee.as_u64()}))
        }
        (PaymentStatus::Succeeded, None) => {
            Err(NwcError::new("INTERNAL", format!("payment {} succeeded without a preimage", payment.id)))
        }
        (PaymentStatus::Pending | PaymentStatus::Held, _) => {
            let detail = format!("payment {} has not ended yet ({:?})", payment.id, payment.status);
            Err(NwcError::new("OTHER", detail))
        }
        (PaymentStatus::Failed | PaymentStatus::Refunded, _) => {
            let detail = payment.detail.unwrap_or_else(|| "the payment failed".into());
            Err(NwcError::new("PAYMENT_FAILED", detail))
        }
    }
}

/// The payment once it has ended (neither pending at the backend nor
/// held, as a paid hold invoice is until its payee settles), or as it
/// stands after [`PAY_WAIT_MAX_MS`].
async fn settled(gateway: &Gateway, key: &AgentKey, mut payment: PaymentRecord) -> Result<PaymentRecord, NwcError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(PAY_WAIT_MAX_MS);
    let open = |p: &PaymentRecord| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Held);
    while open(&payment) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(PAY_POLL_MS)).await;
        payment = gateway.payment(key, &payment.id).await?.payment;
    }
    Ok(payment)
}

#[derive(Deserialize)]
struct LookupInvoice {
    #[serde(default)]
    payment_hash: Option<String>,
    #[serde(default)]
    invoice: Option<String>,
}

async fn lookup_invoice(gateway: &Gateway, key: &AgentKey, params: &Value) -> Result<Value, NwcError> {
    let p = LookupInvoice::deserialize(params).map_err(bad_params)?;
    let hash = match (p.payment_hash, p.invoice) {
        (Some(hash), _) => parse_hash(&hash)?,
        (None, Some(bolt11)) => {
            crate::payment::bolt11::ParsedInvoice::parse(&bolt11, gateway.settings().network)
                .map_err(|e| NwcError::new("OTHER", format!("invoice: {e}")))?
                .payment_hash
        }
        (None, None) => return Err(NwcError::new("OTHER", "payment_hash or invoice is required")),
    };
    Ok(match gateway.nwc_lookup(&key.agent_id, hash).await? {
        NwcLookup::Incoming(invoice) => incoming(&invoice),
        NwcLookup::Outgoing(payment, invoice) => outgoing(&payment, invoice.as_deref()),
    })
}

#[derive(Deserialize, Default)]
struct ListTransactions {
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    until: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
    #[serde(default)]
    unpaid: bool,
    #[serde(default, rename = "type")]
    direction: Option<String>,
}

/// The newest invoices and payments, merged newest first. Each listing is
/// read one page deep (the bound on a page), so `offset + limit` beyond it
/// answers fewer.
async fn list_transactions(gateway: &Gateway, key: &AgentKey, params: &Value) -> Result<Value, NwcError> {
    let p = if params.is_null() {
        ListTransactions::default()
    } else {
        ListTransactions::deserialize(params).map_err(bad_params)?
    };
    let limit = p.limit.unwrap_or(LIST_TRANSACTIONS_MAX).min(LIST_TRANSACTIONS_MAX);
    let page = PageRequest { before: None, limit: crate::model::PAGE_ROWS_MAX };
    let want = |kind: &str| p.direction.as_deref().is_none_or(|d| d == kind);
    let mut rows: Vec<(i64, Value)> = Vec::new();
    if want("incoming") {
        let (invoices, _) = gateway.invoices(key, page).await?;
        let shown = invoices.iter().filter(|i| p.unpaid || settled_at_ms(i).is_some());
        rows.extend(shown.map(|i| (i.created_at_ms, incoming(i))));
    }
    if want("outgoing") {
        let (payments, _) = gateway.payments(key, page).await?;
        let shown = payments.iter().filter(|x| p.unpaid || x.status != PaymentStatus::Pending);
        rows.extend(shown.map(|x| (x.created_at_ms, outgoing(x, None))));
    }
    let in_range = |at_ms: i64| p.from.is_none_or(|f| at_ms / 1000 >= f) && p.until.is_none_or(|u| at_ms / 1000 <= u);
    rows.retain(|(at_ms, _)| in_range(*at_ms));
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    let offset = usize::try_from(p.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let transactions: Vec<Value> = rows.into_iter().skip(offset).take(limit as usize).map(|(_, v)| v).collect();
    Ok(json!({"transactions": transactions}))
}

fn settled_at_ms(invoice: &InvoiceRecord) -> Option<i64> {
    matches!(invoice.status, StoredInvoiceStatus::Paid).then_some(invoice.paid_at_ms).flatten()
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// An invoice of the agent's as a NIP-47 transaction.
pub fn incoming(invoice: &InvoiceRecord) -> Value {
    let state = match invoice.status {
        StoredInvoiceStatus::Paid => "settled",
        StoredInvoiceStatus::Expired => "expired",
        StoredInvoiceStatus::Open | StoredInvoiceStatus::Accepted => "pending",
        _ => "failed",
    };
    let settled = settled_at_ms(invoice);
    json!({
        "type": "incoming",
        "state": state,
        "invoice": invoice.bolt11,
        "description": invoice.memo,
        "description_hash": "",
        "preimage": if settled.is_some() { hex::encode(invoice.preimage) } else { String::new() },
        "payment_hash": hex::encode(invoice.payment_hash),
        "amount": invoice.amount.as_u64(),
        "fees_paid": 0,
        "created_at": secs(invoice.created_at_ms),
        "expires_at": secs(invoice.expires_at_ms),
        "settled_at": settled.map(secs),
        "metadata": {},
    })
}

/// A payment of the agent's as a NIP-47 transaction.
pub fn outgoing(payment: &PaymentRecord, invoice: Option<&InvoiceRecord>) -> Value {
    let state = match payment.status {
        PaymentStatus::Succeeded => "settled",
        PaymentStatus::Pending | PaymentStatus::Held => "pending",
        PaymentStatus::Failed | PaymentStatus::Refunded => "failed",
    };
    json!({
        "type": "outgoing",
        "state": state,
        "invoice": invoice.map(|i| i.bolt11.as_str()).unwrap_or_default(),
        "description": payment.purpose,
        "description_hash": "",
        "preimage": payment.preimage.map(hex::encode).unwrap_or_default(),
        "payment_hash": hex::encode(payment.payment_hash),
        "amount": payment.amount.as_u64(),
        "fees_paid": payment.fee.as_u64(),
        "created_at": secs(payment.created_at_ms),
        "expires_at": invoice.map(|i| secs(i.expires_at_ms)),
        "settled_at": (payment.status == PaymentStatus::Succeeded).then(|| secs(payment.created_at_ms)),
        "metadata": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Denial;

    fn denied(code: &'static str) -> NwcError {
        let denial = Denial { code, message: "why".into(), remaining: None, available: None, needed: None };
        NwcError::from(Error::Denied(denial))
    }

    #[test]
    fn refusals_map_to_nip47_codes_and_name_their_rule() {
        assert_eq!(denied("amount-too-large").code, "QUOTA_EXCEEDED");
        assert_eq!(denied("budget-exceeded").code, "QUOTA_EXCEEDED");
        assert_eq!(denied("insufficient-balance").code, "INSUFFICIENT_BALANCE");
        assert_eq!(denied("rate-limited").code, "RATE_LIMITED");
        for code in ["payee-not-allowed", "agent-frozen", "gateway-halted", "policy-expired"] {
            assert_eq!(denied(code).code, "RESTRICTED", "{code}");
        }
        assert_eq!(denied("budget-exceeded").message, "budget-exceeded: why");
        assert_eq!(NwcError::from(Error::InvoiceAlreadyPaid).code, "PAYMENT_FAILED");
        assert_eq!(NwcError::from(Error::NotFound("invoice")).code, "NOT_FOUND");
        assert_eq!(NwcError::from(Error::Internal("x".into())).code, "INTERNAL");
        assert_eq!(NwcError::new("OTHER", "y".repeat(1_000)).message.len(), MESSAGE_LEN_MAX_CHARS);
    }
}
