//! Nostr Wallet Connect (NIP-47) as a client: any wallet that gives out a
//! `nostr+walletconnect://` string funds coffer. Requests (kind 23194) are
//! encrypted to the wallet and signed with the connection's secret; the
//! wallet's answers (kind 23195) are read only once their author and
//! signature check out (see `relay`).
//!
//! - `make_invoice {amount, description, expiry}`: NIP-47 takes no
//!   preimage, and coffer needs one to settle an invoice of one of its
//!   agents inside the gateway. coffer uses the `preimage` the answer
//!   carries (after checking it hashes to the invoice's payment hash); a
//!   wallet that does not return it cannot be used to receive, and every
//!   invoice fails with a clear error rather than making invoices coffer
//!   could not settle.
//! - `pay_invoice {invoice, amount?}`: NIP-47 has no fee limit; the wallet's
//!   own budget applies. A fee above coffer's limit is noted on the payment
//!   and only the limit is charged (`payment::outside::finish`).
//! - `lookup_invoice {payment_hash}`: for deposits and for outgoing
//!   payments alike; `NOT_FOUND` is "no record".
//! - `get_balance`.
//!
//! Hold invoices ([`HoldInvoices`], NIP-47's hold-invoice methods):
//! `make_hold_invoice {amount, description, expiry, payment_hash,
//! min_cltv_expiry_delta?}` (coffer's hash, hex; the answer's BOLT11 is
//! checked to carry it and the amount), `settle_hold_invoice {preimage}`,
//! `cancel_hold_invoice {payment_hash}` (both answer `{}`), and the state
//! through `lookup_invoice`: `pending` (open), `accepted` (held, for the
//! record's `amount`), `settled`, `expired` or `failed` (cancelled).
//! coffer polls; it does not subscribe to the `hold_invoice_accepted`
//! notification. Offered only to a wallet whose info event lists
//! `make_hold_invoice settle_hold_invoice cancel_hold_invoice
//! lookup_invoice`: `make`, `settle` and `cancel` check the info event of
//! the connection they go through and send nothing otherwise (a
//! `NOT_IMPLEMENTED` error), and [`FundingSource::hold_invoices`] answers
//! `None` once a connection has read an info event without them (before
//! the first connection it cannot know, and offers them).
//!
//! Encryption: NIP-44 v2 when the wallet's info event (kind 13194, read
//! on each connection to the relay) lists `nip44_v2` in its `encryption` tag,
//! NIP-04 when it has no such tag or lists only `nip04`, per NIP-47's
//! negotiation; each request names its scheme in an `encryption` tag
//! (omitted for NIP-04, as NIP-47 allows, for wallets older than the tag).
//!
//! Every call is bounded by `COFFER_LIGHTNING_TIMEOUT_MS`; a call without an
//! answer in time, or whose connection dropped, is an error: its outcome is
//! unknown, never guessed.

pub mod crypto;
pub mod event;
pub mod relay;
pub mod uri;

use super::{
    CreatedInvoice, FundingSource, HoldInvoices, HoldState, InvoiceState, LnError, LnFuture, PayResult,
    check_hold_bolt11, parse_hash_hex,
};
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, Keypair, Secp256k1};
use coffer_core::Msat;
use crypto::{Conversation, Encryption};
use event::Event;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
pub use uri::NwcUri;

pub const KIND_REQUEST: u32 = 23194;
#[doc(hidden)]
pub use relay::RelayMessage;
pub use relay::{KIND_INFO, KIND_RESPONSE};
/// A request's `expiration` tag is coffer's timeout plus this much: a
/// request the wallet sees later than that is ignored by it (NIP-47), while
/// clocks a minute apart still agree.
const EXPIRATION_SLACK_SECS: u64 = 60;
/// How much of a wallet's error message is kept.
const MESSAGE_LEN_MAX_CHARS: usize = 200;
/// The methods a wallet's info event must list for coffer to use its hold
/// invoices.
pub const HOLD_METHODS: [&str; 4] =
    ["make_hold_invoice", "settle_hold_invoice", "cancel_hold_invoice", "lookup_invoice"];
/// What the last info event read said about [`HOLD_METHODS`].
const HOLD_UNKNOWN: u8 = 0;
const HOLD_LISTED: u8 = 1;
const HOLD_NOT_LISTED: u8 = 2;

pub struct Nwc {
    relay: relay::Relay,
    secp: Secp256k1<All>,
    keys: Keypair,
    wallet_hex: String,
    conversation: Conversation,
    timeout: Duration,
    /// [`HOLD_UNKNOWN`], [`HOLD_LISTED`] or [`HOLD_NOT_LISTED`].
    hold: AtomicU8,
}

/// What the wallet answered a request.
enum Answer {
    Result(Value),
    Error { code: String, message: String },
}

#[derive(Deserialize)]
struct Response {
    result_type: String,
    error: Option<WalletError>,
    result: Option<Value>,
}

#[derive(Deserialize)]
struct WalletError {
    code: String,
    #[serde(default)]
    message: String,
}

/// An invoice or payment as `make_invoice` and `lookup_invoice` describe
/// it; every field optional, as NIP-47 allows.
#[derive(Deserialize, Default)]
struct Transaction {
    #[serde(rename = "type")]
    direction: Option<String>,
    state: Option<String>,
    invoice: Option<String>,
    preimage: Option<String>,
    payment_hash: Option<String>,
    fees_paid: Option<u64>,
    /// The invoice's amount, in msat.
    amount: Option<u64>,
    expires_at: Option<u64>,
    settled_at: Option<u64>,
}

impl Transaction {
    fn preimage(&self) -> Option<&str> {
        self.preimage.as_deref().filter(|p| !p.is_empty())
    }

    fn settled(&self) -> bool {
        self.state.as_deref() == Some("settled") || self.settled_at.is_some_and(|t| t > 0)
    }

    /// Fails if the wallet described another payment than the one asked.
    fn check_hash(&self, payment_hash: [u8; 32]) -> Result<(), LnError> {
        match self.payment_hash.as_deref() {
            Some(text) if parse_hash_hex("payment_hash", text)? != payment_hash => {
                Err(LnError::Protocol("the NWC wallet answered about another payment hash".into()))
            }
            _ => Ok(()),
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Nwc {
    pub fn new(uri: &NwcUri, timeout: Duration) -> Result<Nwc, String> {
        let secp = Secp256k1::new();
        let keys = Keypair::from_secret_key(&secp, &uri.secret_key()?);
        let client_hex = hex::encode(keys.x_only_public_key().0.serialize());
        let wallet_hex = hex::encode(uri.wallet.serialize());
        Ok(Nwc {
            relay: relay::Relay::new(&uri.relay, wallet_hex.clone(), client_hex)?,
            conversation: Conversation::new(&keys.secret_key(), &uri.wallet),
            secp,
            keys,
            wallet_hex,
            timeout,
            hold: AtomicU8::new(HOLD_UNKNOWN),
        })
    }

    /// One request and its answer, within the timeout.
    async fn call(&self, method: &'static str, params: Value) -> Result<Answer, LnError> {
        self.call_as(method, params, false).await
    }

    /// A hold-invoice request answered by `{}`: sent only if the wallet's
    /// info event lists [`HOLD_METHODS`].
    async fn call_hold(&self, method: &'static str, params: Value) -> Result<(), LnError> {
        match self.call_as(method, params, true).await? {
            Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
            Answer::Result(_) => Ok(()),
        }
    }

    /// One request and its answer, within the timeout; a `hold` request
    /// only to a wallet that lists [`HOLD_METHODS`].
    async fn call_as(&self, method: &'static str, params: Value, hold: bool) -> Result<Answer, LnError> {
        let limit_ms = self.timeout.as_millis();
        // One deadline for the whole call; a connection attempt inside it
        // uses the same one, and (polled first) notes its own failure.
        let deadline = tokio::time::Instant::now() + self.timeout;
        tokio::time::timeout_at(deadline, self.exchange(method, params, hold, deadline))
            .await
            .map_err(|_| LnError::Unreachable(format!("timed out: no NWC answer to {method} within {limit_ms} ms")))?
    }

    async fn exchange(
        &self,
        method: &'static str,
        params: Value,
        hold: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, LnError> {
        let _slot = self.relay.slot().await?;
        let link = self.relay.connected(deadline).await?;
        let listed = lists_hold_methods(link.info.as_ref());
        self.hold.store(if listed { HOLD_LISTED } else { HOLD_NOT_LISTED }, Ordering::Relaxed);
        if hold && !listed {
            return Err(LnError::Wallet {
                code: "NOT_IMPLEMENTED".into(),
                detail: format!("the wallet's info event does not list {}: {method} not sent", HOLD_METHODS.join(" ")),
            });
        }
        let encryption = negotiate(link.info.as_ref())?;
        let request = self.request_event(encryption, method, params)?;
        match link.request(&request).await? {
            relay::Reply::Refused(why) => {
                Err(LnError::Unreachable(format!("the NWC relay refused the request ({why}): outcome unknown")))
            }
            relay::Reply::Answer(answer) => self.read_answer(method, encryption, &answer),
        }
    }

    fn request_event(&self, encryption: Encryption, method: &str, params: Value) -> Result<Event, LnError> {
        let plaintext = json!({"method": method, "params": params}).to_string();
        let content = self
            .conversation
            .encrypt(encryption, &plaintext)
            .map_err(|e| LnError::Protocol(format!("encrypting the request: {e}")))?;
        let now = now_secs();
        let expiration = now + self.timeout.as_secs() + 1 + EXPIRATION_SLACK_SECS;
        let mut tags = vec![vec!["p".to_owned(), self.wallet_hex.clone()]];
        if encryption == Encryption::Nip44V2 {
            tags.push(vec!["encryption".into(), encryption.tag().into()]);
        }
        tags.push(vec!["expiration".into(), expiration.to_string()]);
        Ok(Event::sign(&self.secp, &self.keys, KIND_REQUEST, tags, content, now))
    }

    fn read_answer(&self, method: &str, encryption: Encryption, answer: &Event) -> Result<Answer, LnError> {
        let plaintext = self
            .conversation
            .decrypt(encryption, &answer.content)
            .map_err(|e| LnError::Protocol(format!("decrypting the NWC answer: {e}")))?;
        let response: Response = serde_json::from_str(&plaintext)
            .map_err(|e| LnError::Protocol(format!("the NWC answer is not NIP-47 JSON: {e}")))?;
        if response.result_type != method {
            return Err(LnError::Protocol(format!(
                "an NWC answer of type {} to {method}",
                shorten(&response.result_type)
            )));
        }
        match (response.error, response.result) {
            (Some(e), _) => Ok(Answer::Error { code: shorten(&e.code), message: shorten(&e.message) }),
            (None, Some(result)) => Ok(Answer::Result(result)),
            (None, None) => Err(LnError::Protocol(format!("an NWC answer to {method} with neither result nor error"))),
        }
    }

    /// The wallet's record of a payment hash; `None` for `NOT_FOUND`.
    async fn lookup(&self, payment_hash: [u8; 32]) -> Result<Option<Transaction>, LnError> {
        match self.call("lookup_invoice", json!({"payment_hash": hex::encode(payment_hash)})).await? {
            Answer::Error { code, .. } if code == "NOT_FOUND" => Ok(None),
            Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
            Answer::Result(result) => {
                let found: Transaction = parse("lookup_invoice", result)?;
                found.check_hash(payment_hash)?;
                Ok(Some(found))
            }
        }
    }
}

/// The encryption both sides speak, from the wallet's info event as read
/// when connecting: NIP-44 v2 if it offers it, else NIP-04 (NIP-47: no
/// `encryption` tag means NIP-04 only). Without an info event on the
/// relay, NIP-04, which every NWC wallet spoke before the tag existed.
fn negotiate(info: Option<&Event>) -> Result<Encryption, LnError> {
    let Some(offered) = info.and_then(|i| i.tag("encryption")) else { return Ok(Encryption::Nip04) };
    if offered.split_whitespace().any(|s| s == "nip44_v2") {
        Ok(Encryption::Nip44V2)
    } else if offered.split_whitespace().any(|s| s == "nip04") {
        Ok(Encryption::Nip04)
    } else {
        Err(LnError::Protocol("the NWC wallet offers no encryption coffer speaks".into()))
    }
}

/// Whether the wallet's info event lists every one of [`HOLD_METHODS`].
fn lists_hold_methods(info: Option<&Event>) -> bool {
    info.is_some_and(|i| HOLD_METHODS.iter().all(|m| i.content.split_whitespace().any(|c| c == *m)))
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, result: Value) -> Result<T, LnError> {
    serde_json::from_value(result).map_err(|e| LnError::Protocol(format!("the NWC {method} result: {e}")))
}

/// A wallet's free text, on one line and short.
fn shorten(text: &str) -> String {
    text.chars().take(MESSAGE_LEN_MAX_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Whether a `pay_invoice` error means the payment was certainly not made,
/// so that the reserve may be released at once. Any other answer leaves the
/// outcome unknown, and the resolver asks `lookup_invoice` later.
fn definitely_not_paid(code: &str) -> bool {
    match code {
        // NIP-47 defines it as the payment's failure (no route, timeout,
        // capacity): the wallet's final word on this payment.
        "PAYMENT_FAILED" => true,
        // Refused before paying: not enough funds for amount and fee reserve.
        "INSUFFICIENT_BALANCE" => true,
        // Refused before paying: the connection's spending budget is used up.
        "QUOTA_EXCEEDED" => true,
        // Refused before paying: this key may not pay, or has no wallet.
        "RESTRICTED" | "UNAUTHORIZED" => true,
        // The wallet does not pay invoices at all.
        "NOT_IMPLEMENTED" => true,
        // The wallet could not read the request, so it cannot have acted on it.
        "UNSUPPORTED_ENCRYPTION" => true,
        // Refused for coming too fast, before anything was done.
        "RATE_LIMITED" => true,
        // INTERNAL, OTHER, and codes NIP-47 does not define: the payment may
        // be on its way.
        _ => false,
    }
}

/// How an outgoing payment stands, from the wallet's record.
fn outgoing(found: &Transaction) -> Result<PayResult, LnError> {
    if found.direction.as_deref().is_some_and(|d| d != "outgoing") {
        return Err(LnError::Protocol("the NWC wallet's record of this hash is not a payment".into()));
    }
    if found.settled() {
        let preimage =
            found.preimage().ok_or_else(|| LnError::Protocol("a settled NWC payment without preimage".into()))?;
        let fee = Msat::new(found.fees_paid.unwrap_or(0));
        return Ok(PayResult::Succeeded { preimage: parse_hash_hex("preimage", preimage)?, fee });
    }
    Ok(match found.state.as_deref() {
        Some(state @ ("failed" | "expired")) => {
            PayResult::Failed { reason: format!("the NWC wallet reports it {state}") }
        }
        // Unsettled without the wallet's word that it failed: pending, even
        // past the invoice's expiry, since HTLCs sent before it may still
        // settle after it.
        _ => PayResult::Pending,
    })
}

/// How an invoice coffer made stands, from the wallet's record.
fn incoming(found: &Transaction, now_secs: u64) -> InvoiceState {
    if found.settled() {
        return InvoiceState::Paid;
    }
    let expired = found.expires_at.is_some_and(|t| t <= now_secs);
    match found.state.as_deref() {
        Some("expired" | "failed") => InvoiceState::Expired,
        // `accepted` (a held payment) and `pending` are still open.
        _ if expired => InvoiceState::Expired,
        _ => InvoiceState::Open,
    }
}

/// How a hold invoice stands, from the wallet's record: only the wallet's
/// word counts (a `pending` invoice past its expiry is still open; coffer
/// cancels it), and a state NIP-47 does not name is no answer.
fn hold_state(found: &Transaction) -> Result<HoldState, LnError> {
    if found.direction.as_deref().is_some_and(|d| d != "incoming") {
        return Err(LnError::Protocol("the NWC wallet's record of this hash is not an invoice".into()));
    }
    if found.settled() {
        return Ok(HoldState::Settled);
    }
    match found.state.as_deref() {
        None | Some("pending") => Ok(HoldState::Open),
        Some("accepted") => {
            let amount_msat =
                found.amount.ok_or_else(|| LnError::Protocol("an accepted NWC hold invoice without amount".into()))?;
            Ok(HoldState::Accepted { amount: Msat::new(amount_msat) })
        }
        Some("expired" | "failed") => Ok(HoldState::Cancelled),
        Some(other) => Err(LnError::Protocol(format!("an NWC invoice state NIP-47 does not name: {}", shorten(other)))),
    }
}

/// Checks a new hold invoice: the wallet's record names coffer's hash (if
/// it names one), and its BOLT11 carries that hash and the amount.
fn created_hold(found: &Transaction, payment_hash: [u8; 32], amount: Msat) -> Result<String, LnError> {
    let bolt11 = found
        .invoice
        .clone()
        .ok_or_else(|| LnError::Protocol("make_hold_invoice answered without an invoice".into()))?;
    found.check_hash(payment_hash)?;
    check_hold_bolt11(&bolt11, payment_hash, amount)?;
    Ok(bolt11)
}

/// Checks a new invoice: it has the preimage coffer needs, and the BOLT11's
/// payment hash is the preimage's hash (and the one the wallet named).
fn created(found: &Transaction) -> Result<CreatedInvoice, LnError> {
    let bolt11 =
        found.invoice.clone().ok_or_else(|| LnError::Protocol("make_invoice answered without an invoice".into()))?;
    let preimage = found.preimage().ok_or_else(|| {
        LnError::Protocol(
            "the NWC wallet does not reveal an invoice's preimage (make_invoice without preimage): coffer needs it to \
             settle payments between its agents, so this wallet cannot be used to receive"
                .into(),
        )
    })?;
    let preimage = parse_hash_hex("preimage", preimage)?;
    let payment_hash = sha256::Hash::hash(&preimage).to_byte_array();
    let parsed: lightning_invoice::Bolt11Invoice =
        bolt11.parse().map_err(|_| LnError::Protocol("make_invoice answered an invoice that is not BOLT11".into()))?;
    if parsed.payment_hash().to_byte_array() != payment_hash {
        return Err(LnError::Protocol("the NWC invoice's payment hash is not its preimage's hash".into()));
    }
    found.check_hash(payment_hash)?;
    Ok(CreatedInvoice { bolt11, payment_hash, preimage })
}

impl FundingSource for Nwc {
    fn name(&self) -> &'static str {
        "nwc"
    }

    fn create_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        _preimage: [u8; 32],
    ) -> LnFuture<'_, CreatedInvoice> {
        let params = json!({"amount": amount.as_u64(), "description": memo, "expiry": expiry_secs});
        Box::pin(async move {
            match self.call("make_invoice", params).await? {
                Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
                Answer::Result(result) => created(&parse("make_invoice", result)?),
            }
        })
    }

    fn pay_invoice(&self, bolt11: &str, amount: Msat, _max_fee: Msat) -> LnFuture<'_, PayResult> {
        // The amount goes along only for an invoice without one.
        let has_amount =
            bolt11.parse::<lightning_invoice::Bolt11Invoice>().is_ok_and(|i| i.amount_milli_satoshis().is_some());
        let params =
            if has_amount { json!({"invoice": bolt11}) } else { json!({"invoice": bolt11, "amount": amount.as_u64()}) };
        Box::pin(async move {
            match self.call("pay_invoice", params).await? {
                Answer::Error { code, message } if definitely_not_paid(&code) => {
                    Ok(PayResult::Failed { reason: format!("NWC wallet: {code}: {message}") })
                }
                Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
                Answer::Result(result) => {
                    let paid: Transaction = parse("pay_invoice", result)?;
                    let preimage = paid
                        .preimage()
                        .ok_or_else(|| LnError::Protocol("pay_invoice answered without preimage".into()))?;
                    let fee = Msat::new(paid.fees_paid.unwrap_or(0));
                    Ok(PayResult::Succeeded { preimage: parse_hash_hex("preimage", preimage)?, fee })
                }
            }
        })
    }

    fn lookup_payment(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<PayResult>> {
        Box::pin(async move {
            match self.lookup(payment_hash).await? {
                None => Ok(None),
                Some(found) => outgoing(&found).map(Some),
            }
        })
    }

    fn lookup_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, InvoiceState> {
        Box::pin(async move {
            Ok(match self.lookup(payment_hash).await? {
                None => InvoiceState::Expired,
                Some(found) if found.direction.as_deref().is_some_and(|d| d != "incoming") => {
                    return Err(LnError::Protocol("the NWC wallet's record of this hash is not an invoice".into()));
                }
                Some(found) => incoming(&found, now_secs()),
            })
        })
    }

    fn balance(&self) -> LnFuture<'_, Msat> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Balance {
                balance: u64,
            }
            match self.call("get_balance", json!({})).await? {
                Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
                Answer::Result(result) => Ok(Msat::new(parse::<Balance>("get_balance", result)?.balance)),
            }
        })
    }

    fn hold_invoices(&self) -> Option<&dyn HoldInvoices> {
        (self.hold.load(Ordering::Relaxed) != HOLD_NOT_LISTED).then_some(self as &dyn HoldInvoices)
    }
}

impl HoldInvoices for Nwc {
    fn create_hold_invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u32,
        payment_hash: [u8; 32],
        min_final_cltv_expiry_delta_blocks: Option<u32>,
    ) -> LnFuture<'_, String> {
        let mut params = json!({
            "amount": amount.as_u64(), "description": memo, "expiry": expiry_secs,
            "payment_hash": hex::encode(payment_hash),
        });
        if let Some(blocks) = min_final_cltv_expiry_delta_blocks {
            params["min_cltv_expiry_delta"] = json!(blocks);
        }
        Box::pin(async move {
            match self.call_as("make_hold_invoice", params, true).await? {
                Answer::Error { code, message } => Err(LnError::Wallet { code, detail: message }),
                Answer::Result(result) => created_hold(&parse("make_hold_invoice", result)?, payment_hash, amount),
            }
        })
    }

    fn lookup_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, Option<HoldState>> {
        Box::pin(async move {
            match self.lookup(payment_hash).await? {
                None => Ok(None),
                Some(found) => hold_state(&found).map(Some),
            }
        })
    }

    fn settle_hold_invoice(&self, preimage: [u8; 32]) -> LnFuture<'_, ()> {
        Box::pin(self.call_hold("settle_hold_invoice", json!({"preimage": hex::encode(preimage)})))
    }

    fn cancel_hold_invoice(&self, payment_hash: [u8; 32]) -> LnFuture<'_, ()> {
        Box::pin(self.call_hold("cancel_hold_invoice", json!({"payment_hash": hex::encode(payment_hash)})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(value: Value) -> Transaction {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_refusals_and_failures_release_a_payment() {
        for code in ["PAYMENT_FAILED", "INSUFFICIENT_BALANCE", "QUOTA_EXCEEDED", "RESTRICTED", "UNAUTHORIZED"] {
            assert!(definitely_not_paid(code), "{code}");
        }
        for code in ["INTERNAL", "OTHER", "NOT_FOUND", "payment_failed", ""] {
            assert!(!definitely_not_paid(code), "{code}");
        }
    }

    #[test]
    fn encryption_is_negotiated_from_the_info_event() {
        let info = |tags: Vec<Vec<String>>| Event {
            id: String::new(),
            pubkey: String::new(),
            created_at: 0,
            kind: KIND_INFO,
            tags,
            content: "pay_invoice".into(),
            sig: String::new(),
        };
        let tag = |value: &str| vec![vec!["encryption".to_owned(), value.to_owned()]];
        assert_eq!(negotiate(None).unwrap(), Encryption::Nip04);
        assert_eq!(negotiate(Some(&info(vec![]))).unwrap(), Encryption::Nip04);
        assert_eq!(negotiate(Some(&info(tag("nip44_v2 nip04")))).unwrap(), Encryption::Nip44V2);
        assert_eq!(negotiate(Some(&info(tag("nip04 nip44_v2")))).unwrap(), Encryption::Nip44V2);
        assert_eq!(negotiate(Some(&info(tag("nip04")))).unwrap(), Encryption::Nip04);
        assert!(negotiate(Some(&info(tag("nip44_v3")))).is_err());
    }

    #[test]
    fn outgoing_records_read_as_the_wallet_says() {
        let preimage = "02".repeat(32);
        let settled = tx(json!({"type": "outgoing", "state": "settled", "preimage": preimage, "fees_paid": 750}));
        assert_eq!(outgoing(&settled).unwrap(), PayResult::Succeeded { preimage: [2; 32], fee: Msat::new(750) });
        let old = tx(json!({"type": "outgoing", "settled_at": 1_700_000_000, "preimage": preimage}));
        assert_eq!(outgoing(&old).unwrap(), PayResult::Succeeded { preimage: [2; 32], fee: Msat::ZERO });
        assert!(outgoing(&tx(json!({"state": "settled"}))).is_err(), "settled without preimage is no answer");
        assert!(matches!(outgoing(&tx(json!({"state": "failed"}))).unwrap(), PayResult::Failed { .. }));
        let expired_unsettled = tx(json!({"type": "outgoing", "state": "pending", "expires_at": 1}));
        assert_eq!(outgoing(&expired_unsettled).unwrap(), PayResult::Pending);
        assert!(outgoing(&tx(json!({"type": "incoming"}))).is_err());
    }

    #[test]
    fn invoices_are_paid_open_or_expired() {
        let now = 1_800_000_000;
        assert_eq!(incoming(&tx(json!({"state": "settled"})), now), InvoiceState::Paid);
        assert_eq!(incoming(&tx(json!({"settled_at": now - 5, "expires_at": now - 1})), now), InvoiceState::Paid);
        assert_eq!(incoming(&tx(json!({"state": "pending", "expires_at": now + 60})), now), InvoiceState::Open);
        assert_eq!(incoming(&tx(json!({"state": "accepted", "expires_at": now + 60})), now), InvoiceState::Open);
        assert_eq!(incoming(&tx(json!({"state": "pending", "expires_at": now})), now), InvoiceState::Expired);
        assert_eq!(incoming(&tx(json!({"state": "expired"})), now), InvoiceState::Expired);
        assert_eq!(incoming(&tx(json!({})), now), InvoiceState::Open);
    }

    #[test]
    fn hold_states_read_as_the_wallet_says() {
        let state = |v: Value| hold_state(&tx(v));
        assert_eq!(state(json!({"type": "incoming", "state": "pending"})).unwrap(), HoldState::Open);
        assert_eq!(state(json!({"type": "incoming", "state": "pending", "expires_at": 1})).unwrap(), HoldState::Open);
        assert_eq!(state(json!({})).unwrap(), HoldState::Open);
        assert_eq!(
            state(json!({"state": "accepted", "amount": 21_000})).unwrap(),
            HoldState::Accepted { amount: Msat::new(21_000) }
        );
        assert!(state(json!({"state": "accepted"})).is_err(), "accepted for an unknown amount is no answer");
        assert_eq!(state(json!({"state": "settled"})).unwrap(), HoldState::Settled);
        assert_eq!(state(json!({"state": "accepted", "settled_at": 5, "amount": 1})).unwrap(), HoldState::Settled);
        assert_eq!(state(json!({"state": "expired"})).unwrap(), HoldState::Cancelled);
        assert_eq!(state(json!({"state": "failed"})).unwrap(), HoldState::Cancelled);
        assert!(state(json!({"state": "held"})).is_err());
        assert!(state(json!({"type": "outgoing", "state": "pending"})).is_err());
    }

    #[test]
    fn hold_methods_are_offered_only_when_all_are_listed() {
        let info = |content: &str| Event {
            id: String::new(),
            pubkey: String::new(),
            created_at: 0,
            kind: KIND_INFO,
            tags: vec![],
            content: content.into(),
            sig: String::new(),
        };
        let all = "pay_invoice make_hold_invoice settle_hold_invoice cancel_hold_invoice lookup_invoice";
        assert!(lists_hold_methods(Some(&info(all))));
        assert!(!lists_hold_methods(Some(&info("make_hold_invoice settle_hold_invoice cancel_hold_invoice"))));
        assert!(!lists_hold_methods(Some(&info(
            "make_hold_invoices settle_hold_invoice cancel_hold_invoice lookup_invoice"
        ))));
        assert!(!lists_hold_methods(None));
    }

    #[test]
    fn a_new_invoice_needs_its_preimage() {
        let err = created(&tx(json!({"invoice": "lnbc1", "payment_hash": "00".repeat(32)}))).err().unwrap();
        assert!(err.to_string().contains("cannot be used to receive"), "{err}");
        let err = created(&tx(json!({"invoice": "lnbc1", "preimage": "01".repeat(32)}))).err().unwrap();
        assert!(err.to_string().contains("not BOLT11"), "{err}");
    }

    #[test]
    fn a_new_invoice_must_match_its_preimage() {
        use crate::payment::bolt11::{Network, NodeSigner};
        let node = NodeSigner::new(bitcoin::secp256k1::SecretKey::from_slice(&[5; 32]).unwrap(), Network::Bitcoin);
        let signed = node.sign(Msat::new(21_000), "coffer", 600, Duration::from_secs(now_secs())).unwrap();
        let good = tx(json!({"invoice": signed.bolt11, "preimage": hex::encode(signed.preimage)}));
        assert_eq!(created(&good).unwrap().payment_hash, signed.payment_hash);
        let other = tx(json!({"invoice": signed.bolt11, "preimage": "07".repeat(32)}));
        assert!(created(&other).err().unwrap().to_string().contains("not its preimage's hash"));
        let named = json!({"invoice": signed.bolt11, "preimage": hex::encode(signed.preimage),
                           "payment_hash": "00".repeat(32)});
        assert!(created(&tx(named)).err().unwrap().to_string().contains("another payment hash"));
    }
}
