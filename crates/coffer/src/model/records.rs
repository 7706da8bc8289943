//! The records the store keeps and the domain works on: agents, keys,
//! invoices, payments, approvals, rooms, events, webhooks.

use crate::error::Error;
use crate::quota::Quotas;
use crate::secrets::SecretDigest;
use coffer_client::Scope;
use coffer_core::policy::{BreakerState, Policy, Usage};
use coffer_core::{AccountId, Balance, Msat};
use std::sync::Arc;

/// The most live L402 tokens kept per agent and origin: past it, a new
/// token replaces the one that expires first.
pub const L402_TOKENS_PER_ORIGIN_MAX: usize = 64;

/// The most rows one listing call returns.
pub const PAGE_ROWS_MAX: u32 = 200;

/// The most events one read of the outbox returns (`Tx::events` clamps
/// the `limit` it is given to this), on every store.
pub const READ_EVENTS_MAX: u32 = 1_000;
// An events listing of one page is read whole.
const _: () = assert!(PAGE_ROWS_MAX <= READ_EVENTS_MAX);

#[derive(Clone, Debug)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub account: AccountId,
    pub balance: Balance,
    pub created_at_ms: i64,
    pub parent_id: Option<String>,
    pub can_create_subagents: bool,
    /// Why the agent is frozen (by the operator or an automatic trip).
    pub frozen_reason: Option<String>,
    /// The task its payments are counted under when they name none.
    pub task: Option<String>,
}

/// An agent to create.
#[derive(Clone, Debug)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub can_create_subagents: bool,
    /// The task this agent works on: its payments inherit it.
    pub task: Option<String>,
    pub key: NewKey,
    /// Checked against the parent's children and the tree's depth.
    pub quotas: Quotas,
}

/// What a payment decision needs to know of one agent of the payer's chain.
#[derive(Clone, Debug)]
pub struct AgentState {
    pub agent_id: String,
    pub account: AccountId,
    pub parent_id: Option<String>,
    pub frozen: bool,
    pub policy: Option<Arc<Policy>>,
    pub usage: Usage,
    pub breaker: BreakerState,
    /// The agent's task, which its payments inherit (see
    /// [`super::Attribution::or_task`]).
    pub task: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        [ApprovalStatus::Pending, ApprovalStatus::Approved, ApprovalStatus::Denied, ApprovalStatus::Expired]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

/// A payment held for a person's approval. Its amount is reserved on the
/// payer's wallet and counted in every budget of its chain until decided.
#[derive(Clone, Debug)]
pub struct ApprovalRecord {
    pub id: String,
    pub agent_id: String,
    pub key_id: String,
    pub payment_hash: [u8; 32],
    pub bolt11: String,
    pub amount: Msat,
    pub purpose: String,
    pub payee_agent_id: Option<String>,
    pub status: ApprovalStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub decided_by: Option<String>,
    pub payment_id: Option<String>,
    /// Reserved with the amount: the fee limit of a payment to another
    /// node (zero inside this gateway, where nothing is routed).
    pub fee_limit: Msat,
    /// The payee node (hex) of a payment to an invoice outside this
    /// gateway, paid through the Lightning backend once approved; `None`
    /// for an invoice of this gateway.
    pub payee_node_hex: Option<String>,
    /// A payment into escrow: its terms, applied once approved.
    pub escrow: Option<super::EscrowTerms>,
    /// What the payment, once approved, is counted under in reports.
    pub attribution: super::Attribution,
}

impl ApprovalRecord {
    /// What the hold keeps reserved and counted: the amount plus the fee
    /// limit, all that the payment may spend.
    pub fn reserved(&self) -> Result<Msat, Error> {
        Ok(self.amount.checked_add(self.fee_limit).map_err(coffer_core::LedgerError::from)?)
    }

    /// The payee as policies and the audit trail name it: `agent:ID` inside
    /// this gateway, `node:PUBKEY` outside.
    pub fn payee(&self) -> Option<String> {
        match (&self.payee_node_hex, &self.payee_agent_id) {
            (Some(node), _) => Some(format!("node:{node}")),
            (None, Some(agent)) => Some(format!("agent:{agent}")),
            (None, None) => None,
        }
    }
}

/// One record of the audit trail: who did what, under which rule.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub action: &'static str,
    /// `operator`, `system` (automatic trips, expiry) or an agent id.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_msat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The rule that decided: a deny code, `approval-required`, `allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A stored audit record, with its place in the hash chain.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub seq: i64,
    pub body: String,
    pub hash: [u8; 32],
    pub prev_hash: [u8; 32],
}

/// The operator's name as a room member and message sender.
pub const OPERATOR: &str = "operator";

#[derive(Clone, Debug)]
pub struct RoomRecord {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// Agent ids, and `operator` when the operator is a member.
    pub members: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    PaymentRequest,
}

/// A message, with its invoice for a payment request (whose status and
/// receipt are read from the invoice).
#[derive(Clone, Debug)]
pub struct MessageRecord {
    pub id: i64,
    pub room_id: String,
    pub sender: String,
    pub kind: MessageKind,
    pub text: String,
    pub created_at_ms: i64,
    pub invoice: Option<InvoiceRecord>,
}

/// A message to post; a payment request carries its new invoice.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room_id: String,
    pub sender: String,
    pub text: String,
    pub invoice: Option<InvoiceRecord>,
    pub now_ms: i64,
    /// Checked against the room's messages this minute (and the poster's
    /// open invoices, for a payment request).
    pub quotas: Quotas,
}

/// An agent's chat settings, set by the operator; stored as this JSON.
pub use coffer_client::ChatSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncomingStatus {
    Pending,
    Accepted,
    Rejected,
}

impl IncomingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncomingStatus::Pending => "pending",
            IncomingStatus::Accepted => "accepted",
            IncomingStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<IncomingStatus> {
        [IncomingStatus::Pending, IncomingStatus::Accepted, IncomingStatus::Rejected]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

/// A payment to an agent that acknowledges its incoming payments.
#[derive(Clone, Debug)]
pub struct IncomingRecord {
    pub payment_id: String,
    pub payee_agent_id: String,
    pub payer_agent_id: String,
    pub amount: Msat,
    pub status: IncomingStatus,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub agent_id: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// A key as the authenticator needs it.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    pub id: String,
    pub agent_id: String,
    pub account: AccountId,
    pub scope: Scope,
    pub digest: SecretDigest,
    pub expires_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredInvoiceStatus {
    Open,
    Paid,
    /// Marked by the expiry sweep ([`crate::gateway::ops::invoices::expire_invoices`]): never paid
    /// afterwards.
    Expired,
    /// Paid into a hold or escrow: the money waits on the payer's wallet.
    Accepted,
    /// Accepted, then given back to the payer.
    Cancelled,
}

impl StoredInvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredInvoiceStatus::Open => "open",
            StoredInvoiceStatus::Paid => "paid",
            StoredInvoiceStatus::Expired => "expired",
            StoredInvoiceStatus::Accepted => "accepted",
            StoredInvoiceStatus::Cancelled => "cancelled",
        }
    }

    /// As stored; an unknown text is an error of the store.
    pub fn parse(s: &str) -> Result<StoredInvoiceStatus, Error> {
        match s {
            "open" => Ok(StoredInvoiceStatus::Open),
            "paid" => Ok(StoredInvoiceStatus::Paid),
            "expired" => Ok(StoredInvoiceStatus::Expired),
            "accepted" => Ok(StoredInvoiceStatus::Accepted),
            "cancelled" => Ok(StoredInvoiceStatus::Cancelled),
            other => Err(Error::Internal(format!("unknown stored invoice status {other}"))),
        }
    }
}

/// The most invoices one call of [`crate::gateway::ops::invoices::expire_invoices`] expires: bounds
/// the transaction (and so the batch it holds up) of one sweep step.
pub const INVOICE_EXPIRY_BATCH_MAX: u32 = 256;

#[derive(Clone, Debug)]
pub struct InvoiceRecord {
    pub payment_hash: [u8; 32],
    pub agent_id: String,
    pub amount: Msat,
    pub memo: String,
    pub bolt11: String,
    pub preimage: [u8; 32],
    pub status: StoredInvoiceStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    /// The agent that paid it, once paid.
    pub paid_by: Option<String>,
    /// The room whose payment request it is.
    pub room_id: Option<String>,
    /// The funding source whose node made the invoice (payable from the
    /// Lightning Network, watched until paid); `None` when coffer signed it
    /// with its own key (payable inside this gateway only).
    pub backend: Option<String>,
    /// A hold invoice: how long, once paid, it waits for its payee to
    /// settle it.
    pub hold_secs: Option<u32>,
    /// A room's payment request that asks to be paid into escrow: the
    /// terms its Pay action pays with.
    pub escrow: Option<super::EscrowTerms>,
}

/// The payee name of a deposit to the operator's treasury: the invoice is
/// the treasury's, not an agent's.
pub const TREASURY_PAYEE: &str = "treasury";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: String,
    pub agent_id: String,
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    pub fee: Msat,
    pub status: coffer_client::PaymentStatus,
    pub purpose: String,
    pub payee_agent_id: Option<String>,
    pub preimage: Option<[u8; 32]>,
    pub created_at_ms: i64,
    /// What happened, in words: why a payment failed, or why one is still
    /// pending (the backend's last error, an unknown outcome).
    pub detail: Option<String>,
    /// Given back to the payer by the payee's refunds.
    pub refunded: Msat,
    /// The task and tags the payment is counted under in reports.
    pub attribution: super::Attribution,
}

/// A payment to an invoice outside this gateway, through the funding
/// source. Its amount plus fee limit stay reserved on the payer's wallet
/// while it is pending.
#[derive(Clone, Debug)]
pub struct ExternalPayment {
    pub payment_id: String,
    pub payment_hash: [u8; 32],
    pub bolt11: String,
    pub agent_id: String,
    pub account: AccountId,
    pub amount: Msat,
    pub fee_limit: Msat,
    pub status: coffer_client::PaymentStatus,
    /// How many times the backend was asked about it.
    pub checks: i64,
    pub created_at_ms: i64,
}

/// A payment to start: checked, reserved and recorded as pending in one
/// transaction, before the backend is called.
#[derive(Clone, Debug)]
pub struct BeginExternal {
    pub payment_id: String,
    pub payer: Payer,
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    pub fee_limit: Msat,
    pub purpose: String,
    pub attribution: super::Attribution,
    /// The payee node's key (hex), for payee rules naming nodes.
    pub payee_node_hex: String,
    pub idempotency: Option<Idempotency>,
    /// When the invoice expires: a held payment waits no longer.
    pub invoice_expires_at_ms: i64,
    /// How long a held payment waits for a person at most.
    pub approval_ttl_ms: i64,
    /// The most payments the payer may have held at once.
    pub holds_pending_max: u32,
    pub now_ms: i64,
    /// What the spend is decided and counted with, taken from the
    /// gateway's configuration before the transaction.
    pub terms: super::SpendTerms,
}

/// The outcome of [`crate::payment::outside::begin`].
#[derive(Debug)]
pub enum ExternalStart {
    /// Recorded as pending: now call the backend.
    Started(PaymentRecord),
    /// An earlier request with this idempotency key: its answer.
    Replay(PayAttempt),
    /// Held for a person's approval; amount plus fee limit reserved.
    Held(ApprovalRecord),
    Denied(Denial),
}

/// What the backend said, finally, about a pending external payment.
#[derive(Clone, Debug)]
pub enum ExternalOutcome {
    Succeeded { preimage: [u8; 32], fee: Msat },
    Failed { reason: String },
}

/// Who pays: the agent's wallet and the key that asked.
#[derive(Clone, Debug)]
pub struct Payer {
    pub agent_id: String,
    pub account: AccountId,
    pub key_id: String,
}

/// An internal payment: settle an invoice of this gateway.
#[derive(Clone, Debug)]
pub struct PayInternal {
    /// This gateway's node key, for payee rules naming nodes.
    pub node_pubkey_hex: Arc<str>,
    /// How long a held payment waits for a person at most.
    pub approval_ttl_ms: i64,
    /// The most payments the payer may have held at once.
    pub holds_pending_max: u32,
    pub payment_id: String,
    pub payer: Payer,
    /// Lower case; must equal the stored invoice's text.
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub purpose: String,
    /// As the caller named it; the payer's task is inherited in the
    /// transaction.
    pub attribution: super::Attribution,
    pub idempotency: Option<Idempotency>,
    /// For a paid HTTP request (L402): the host it goes to, a payee name of
    /// its own for the policy (`domain:HOST`, `l402` limits).
    pub domain: Option<String>,
    /// Pay into escrow instead of to the payee.
    pub escrow: Option<super::EscrowTerms>,
    /// The most holds and escrows the payer may have open at once.
    pub escrows_open_max: u32,
    pub now_ms: i64,
    /// What the spend is decided and counted with, taken from the
    /// gateway's configuration before the transaction.
    pub terms: super::SpendTerms,
}

/// A paid L402 token of an agent, kept so that every process of the agent
/// reuses it until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L402TokenRecord {
    pub agent_id: String,
    /// `scheme://host[:port]`.
    pub origin: String,
    /// The path prefix the token is for.
    pub scope: String,
    /// As the server sent it (base64).
    pub token: String,
    pub preimage: [u8; 32],
    pub amount: Msat,
    pub payment_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Pay an L402 challenge, unless a live token for the same access is kept.
#[derive(Clone, Debug)]
pub struct L402Pay {
    pub pay: PayInternal,
    pub origin: String,
    /// The request's path: a kept token whose scope covers it is reused.
    pub path: String,
    /// The token bought by this payment, and what it is for.
    pub token: String,
    pub scope: String,
    pub expires_at_ms: i64,
    /// A kept token the server refused: forgotten before looking.
    pub rejected_token: Option<String>,
}

#[derive(Debug)]
pub enum L402Attempt {
    Reused(L402TokenRecord),
    Paid(L402TokenRecord),
    Denied(Denial),
    NotOurs,
}

#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the request, to tell a retry from a different request.
    pub request_digest: [u8; 32],
}

/// Why a payment was refused after it was looked at: recorded in the audit
/// trail (and counted by the breaker), unlike malformed requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// A stable code: a policy deny code, `agent-frozen`, `gateway-halted`
    /// or `insufficient-balance`.
    pub code: &'static str,
    pub message: String,
    pub remaining: Option<Msat>,
    /// For `insufficient-balance`: what the wallet has, and what was needed.
    pub available: Option<Msat>,
    pub needed: Option<Msat>,
}

/// The outcome of [`crate::payment::internal::pay`].
#[derive(Debug)]
pub enum PayAttempt {
    Paid(PaymentRecord),
    Held(ApprovalRecord),
    Denied(Denial),
    /// No invoice of this gateway has that payment hash.
    NotOurs,
}

/// The outcome of deciding a held payment.
#[derive(Debug)]
// One per decision, moved once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ApprovalOutcome {
    Paid(ApprovalRecord, PaymentRecord),
    Released(ApprovalRecord),
}

/// Which listing page: rows older than `before` (a cursor from the previous
/// page), at most `limit`.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub before: Option<i64>,
    pub limit: u32,
}

/// What `coffer audit` needs from a store.
pub struct AuditInput {
    pub accounts: Vec<(AccountId, Balance)>,
    /// Posted totals per account recomputed from the transfers.
    pub sums: coffer_core::ledger::TransferSums,
}

/// One event of the outbox: written in the transaction of the change it
/// tells of, with an id that increases in commit order.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub id: i64,
    pub kind: String,
    /// The agent it concerns; `None` for gateway-wide events (the operator's).
    pub agent_id: Option<String>,
    pub data: serde_json::Value,
    pub created_at_ms: i64,
}

/// A webhook subscription: events of one agent (`owner`), or of the whole
/// gateway (`owner: None`, the operator's), POSTed to `url` in id order.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub owner: Option<String>,
    pub url: String,
    /// Event types delivered; empty for all.
    pub types: Vec<String>,
    pub state: WebhookState,
    pub created_at_ms: i64,
}

/// Where a webhook's delivery stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookState {
    /// Every event up to this id is delivered (or not for this webhook).
    pub after_event_id: i64,
    /// Failed attempts in a row; reset by a success.
    pub failures: u32,
    /// Paused after too many failures in a row, until resumed.
    pub paused: bool,
    /// No attempt before this time (the backoff after a failure).
    pub next_attempt_at_ms: i64,
}

/// One attempt to deliver an event to a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub webhook_id: String,
    pub event_id: i64,
    /// 1 for the first attempt at this event.
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    pub at_ms: i64,
    pub duration_ms: u64,
}

/// A key to store: its digest only, never the secret.
/// A public key an agent signs its requests with (RFC 9421).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub id: String,
    pub agent_id: String,
    pub alg: coffer_client::signing::Alg,
    /// The raw public key ([`coffer_client::signing::Alg::public_key_len`]).
    pub public_key: Vec<u8>,
    /// Every write request of the agent must then be signed.
    pub required: bool,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct NewKey {
    pub id: String,
    pub agent_id: String,
    pub scope: Scope,
    pub digest: SecretDigest,
    pub expires_at_ms: Option<i64>,
}

/// What a spend's transaction reads from the gateway's configuration, taken
/// once before it and passed in, so that deciding and counting stay
/// functions of their inputs: the bitcoin prices limits in a currency are
/// converted at (see `payment::decision::decide`), and the thresholds
/// budget warnings fire at (see `payment::warning`).
#[derive(Clone, Debug, Default)]
pub struct SpendTerms {
    pub fiat: Arc<coffer_core::policy::FiatRates>,
    pub warnings: Arc<coffer_core::policy::WarningThresholds>,
}
