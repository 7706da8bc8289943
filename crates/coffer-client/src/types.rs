//! The JSON shapes of coffer's HTTP API. The gateway serialises these very
//! types and derives its OpenAPI schemas from them, so client and server
//! cannot drift apart.
//!
//! Amounts are integer millisatoshis (`*_msat`); times are RFC 3339 strings
//! in UTC.

use serde::{Deserialize, Serialize};

#[cfg(feature = "schema")]
use utoipa::ToSchema;

/// What a key may do. Each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Balance and history.
    Read,
    /// Read, and create invoices.
    Receive,
    /// Receive, and pay.
    Spend,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Receive => "receive",
            Scope::Spend => "spend",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "receive" => Some(Scope::Receive),
            "spend" => Some(Scope::Spend),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    /// A label for people; 1 to 64 characters, none of them a control character.
    #[cfg_attr(feature = "schema", schema(min_length = 1, max_length = 64))]
    pub name: String,
    /// Whether the new agent may create sub-agents of its own. Called with an
    /// agent's key, this creates a sub-agent of that agent.
    #[serde(default)]
    pub can_create_subagents: bool,
    /// The task the agent works on (at most 128 bytes, one line): its
    /// payments that name no task of their own are counted under it. A
    /// parent passes its task on by naming it here for a sub-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 128))]
    pub task: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct AgentCreated {
    pub id: String,
    /// The agent's first `spend` key. Shown once; coffer keeps only its hash.
    pub key: String,
    pub key_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub balance_msat: u64,
    /// Reserved for payments that are not final yet.
    pub pending_msat: u64,
    pub created_at: String,
    /// The agent that created this one, for a sub-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub can_create_subagents: bool,
    #[serde(default)]
    pub frozen: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_reason: Option<String>,
    /// The task its payments inherit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Millisatoshis: greater than zero, at most 21 million BTC.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Transferred {
    pub transfer_id: i64,
    pub amount_msat: u64,
    /// The balance of the credited account afterwards.
    pub balance_msat: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub scope: Scope,
    /// RFC 3339; the key stops working then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A public key an agent signs its requests with (RFC 9421). The private
/// key stays with the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSigningKeyRequest {
    /// `ed25519` (the default) or `ecdsa-p256-sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Standard base64 of the raw public key: 32 bytes for Ed25519, the
    /// 65-byte uncompressed point for P-256.
    pub public_key: String,
    /// From now on every write request of the agent must be signed (a
    /// bearer token alone then reads but never spends).
    #[serde(default)]
    pub required: bool,
}

/// A registered signing key. Its `id` is the `keyid` of `Signature-Input`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct SigningKey {
    pub id: String,
    pub agent_id: String,
    pub alg: String,
    /// Standard base64 of the raw public key.
    pub public_key: String,
    pub required: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A new Nostr Wallet Connect (NIP-47) connection to an agent's wallet.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNwcConnectionRequest {
    /// Who uses it (a tool, an app), 1 to 100 characters.
    pub name: String,
    /// The NIP-47 methods it may call; default: all coffer offers
    /// (`get_info`, `get_balance`, `make_invoice`, `pay_invoice`,
    /// `lookup_invoice`, `list_transactions`). Its key scope follows:
    /// `pay_invoice` spends, `make_invoice` receives, the rest read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// RFC 3339; without it, until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whether it is sent `payment_received` and `payment_sent`
    /// notifications (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<bool>,
}

/// An agent's NWC connection. Its secret is never stored: only the
/// client's public key, which verifies its requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct NwcConnection {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    /// The client's public key (hex, x-only): the author of its requests.
    pub client_pubkey: String,
    pub methods: Vec<String>,
    pub notifications: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// A connection just created, with its URI: the only time the secret in
/// it is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct NwcConnectionCreated {
    pub id: String,
    /// `nostr+walletconnect://<wallet pubkey>?relay=…&secret=…`: hand it to
    /// the tool; keep it secret.
    pub uri: String,
    /// The URI's QR code, as SVG, for a wallet app to scan: shown once too.
    pub uri_qr_svg: String,
    pub connection: NwcConnection,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct KeyCreated {
    pub id: String,
    pub agent_id: String,
    pub scope: Scope,
    /// The secret. Shown once; coffer keeps only its hash.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Wallet {
    pub agent_id: String,
    pub name: String,
    pub balance_msat: u64,
    pub pending_msat: u64,
    /// Balance less pending: what the agent can spend now.
    pub available_msat: u64,
    /// The scope of the key that asked.
    pub scope: Scope,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceRequest {
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
    /// Shown to the payer; at most 639 bytes (the BOLT11 description limit).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 639))]
    pub memo: Option<String>,
    /// Seconds until the invoice expires: 1 to 604800 (7 days); default 3600.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub expiry_secs: Option<u32>,
    /// A hold invoice: paying it only reserves the amount (status
    /// `accepted`); the payee then settles it (`POST
    /// /v1/invoices/{payment_hash}/settle`) or cancels it, refunding the
    /// payer in full. Not settled within `hold_secs`, it is cancelled.
    /// On a gateway whose Lightning backend has hold invoices (LND, an NWC
    /// wallet offering NIP-47's hold methods) the backend's node makes it,
    /// so a payer outside the gateway can pay it too: its payment waits at
    /// the node (the escrow's payer is `outside`) and settling or
    /// cancelling goes to the backend first (`502 lightning-backend` if it
    /// fails, nothing changed: retry). Otherwise (no backend, Core
    /// Lightning, LNbits) coffer signs it with its own key and only agents
    /// of this gateway can pay it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// How long an accepted hold invoice waits for its payee to settle:
    /// 1 to 604800 seconds (7 days); default 3600. Only with `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub hold_secs: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    /// A hold invoice paid: the amount waits, reserved on the payer's
    /// wallet, for the payee to settle or cancel (or for an escrow's
    /// payer to release it).
    Accepted,
    Paid,
    Expired,
    /// Accepted, then cancelled: the payer was refunded in full.
    Cancelled,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Invoice {
    pub payment_hash: String,
    pub bolt11: String,
    pub amount_msat: u64,
    pub memo: String,
    pub status: InvoiceStatus,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    /// A hold invoice: settled by its payee after it is accepted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// For a hold invoice, seconds its payee has to settle once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_secs: Option<u32>,
    /// The payment whose money waits on this invoice (`accepted`), or paid
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<Escrow>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// A BOLT11 invoice, or a Lightning address (`name@domain`, which
    /// takes `amount_msat`).
    pub bolt11: String,
    /// Why the agent pays: kept in the audit trail; at most 512 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub purpose: Option<String>,
    /// The amount to pay a Lightning address; not with an invoice, which
    /// carries its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: Option<u64>,
    /// Pay into escrow (an invoice of this gateway only): the amount leaves
    /// the payer's spendable balance and waits until the payer releases it
    /// (`POST /v1/payments/{id}/release`), disputes it, or the deadline
    /// applies `on_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowTerms>,
    /// The task reports count it under (at most 128 bytes, one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 128))]
    pub task: Option<String>,
    /// Up to 8 tags reports count it under: each 1 to 64 ASCII letters,
    /// digits or `-_.:/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(max_items = 8))]
    pub tags: Vec<String>,
}

/// How an escrowed payment ends when its payer neither releases nor
/// disputes it in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EscrowTerms {
    /// Seconds until `on_timeout` applies: 1 to 2592000 (30 days).
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_592_000))]
    pub release_after_secs: u32,
    pub on_timeout: Outcome,
}

/// Where money that waited goes: to the payee, or back to the payer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Release,
    Refund,
}

/// Money waiting between two agents: a paid hold invoice (`kind: hold`,
/// settled or cancelled by the payee) or an escrowed payment (`kind:
/// escrow`, released or disputed by the payer). `id` is the payment's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Escrow {
    pub payment_id: String,
    /// `hold` or `escrow`.
    pub kind: String,
    /// `held`, `disputed`, `released` or `refunded`.
    pub status: String,
    pub payment_hash: String,
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    pub amount_msat: u64,
    /// When `on_timeout` applies, unless resolved (or disputed) before.
    pub deadline: String,
    pub on_timeout: Outcome,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Who ended it: an agent id, `operator`, or `system` (the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// The operator's decision on a disputed escrow.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub outcome: Outcome,
}

/// A refund of (part of) a payment, by its payee.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// At most what the payment left unrefunded.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
    /// Why, in words: kept in the audit trail; at most 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    /// The payee, who gave the money back.
    pub from_agent_id: String,
    /// The payer, who got it back.
    pub to_agent_id: String,
    pub amount_msat: u64,
    pub reason: String,
    /// Refunded of the payment in all, this refund included.
    pub payment_refunded_msat: u64,
    pub created_at: String,
}

/// A metered session: the payer reserves up to `max_msat` for one payee,
/// who charges against it; the unused remainder returns on close or
/// expiry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenSessionRequest {
    /// The agent (of this gateway) that will charge.
    pub payee: String,
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub max_msat: u64,
    /// 1 to 2592000 (30 days).
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_592_000))]
    pub expires_in_secs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub purpose: Option<String>,
    /// The task its charges are counted under (at most 128 bytes, one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 128))]
    pub task: Option<String>,
    /// Up to 8 tags reports count it under: each 1 to 64 ASCII letters,
    /// digits or `-_.:/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schema(max_items = 8))]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
    /// What the charge is for; at most 512 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub memo: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Charge {
    pub id: String,
    pub session_id: String,
    pub amount_msat: u64,
    pub memo: String,
    pub created_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Session {
    pub id: String,
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    pub max_msat: u64,
    pub charged_msat: u64,
    /// What the payee may still charge; what returns to the payer on close.
    pub remaining_msat: u64,
    /// `open`, `closed` or `expired`.
    pub status: String,
    pub purpose: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Who closed it: an agent id, or `system` at expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// Returned to the payer when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned_msat: Option<u64>,
    /// The charges, oldest first (on `GET /v1/sessions/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charges: Vec<Charge>,
    /// The task its charges are counted under in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// An invoice payable from the Lightning Network: an agent's key credits
/// that agent; the operator's credits the treasury, or `agent_id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 639))]
    pub memo: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Pending,
    Failed,
    /// The amount waits (a hold invoice accepted, or escrow): reserved on
    /// the payer's wallet, not yet the payee's.
    Held,
    /// Given back to the payer in full: a hold cancelled, an escrow
    /// refunded, or refunds by the payee adding up to the amount.
    Refunded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Payment {
    pub id: String,
    pub status: PaymentStatus,
    pub payment_hash: String,
    /// Proof of payment (hex); present once the payment succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preimage: Option<String>,
    pub amount_msat: u64,
    pub fee_msat: u64,
    #[serde(default)]
    pub purpose: String,
    /// The agent paid, for a payment inside this gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_agent_id: Option<String>,
    pub created_at: String,
    /// What happened, in words: why it failed, or why it is still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Refunded to the payer so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refunded_msat: u64,
    /// The hold or escrow the money waits in (or waited in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<Escrow>,
    /// The payee's refunds, oldest first (on `GET /v1/payments/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// The task it is counted under in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One page of a listing, newest first. Pass `next_cursor` back as `cursor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Treasury {
    pub balance_msat: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
    pub network: String,
    pub node_pubkey: String,
}

/// An RFC 9457 problem. `type` is stable, `detail` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The last segment of `type`, for programs that branch on it.
    pub code: String,
    /// Extra facts, such as `available_msat` for an insufficient balance.
    #[serde(flatten, default)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// A payment held for a person's approval (`202` from `POST /v1/payments`),
/// to an invoice of this gateway or of another node. Its amount (plus the
/// fee limit, for another node) is reserved and counted in the budgets
/// until decided; approved, it is paid once (through the Lightning backend
/// for another node, the payment's own status then says how it ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Approval {
    pub id: String,
    /// `held` in a payment's answer; `pending`, `approved`, `denied` or
    /// `expired` in the approvals queue.
    pub status: String,
    pub agent_id: String,
    pub key_id: String,
    pub payment_hash: String,
    pub bolt11: String,
    pub amount_msat: u64,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_agent_id: Option<String>,
    /// Why it is held: `approval-required`.
    pub reason: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The payment made when it was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Reserved with the amount until decided: the fee limit of a payment
    /// to another node's invoice (0 for an invoice of this gateway).
    #[serde(default)]
    pub fee_limit_msat: u64,
    /// The payee node (hex public key) of an invoice of another node, paid
    /// through the Lightning backend once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_node: Option<String>,
    /// The task it is counted under in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The answer to approving or denying a held payment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct ApprovalDecision {
    pub approval: Approval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// Shown to the agent and kept in the audit trail; at most 512 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub reason: Option<String>,
}

/// The kill switch: `halted` stops every outgoing payment at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub halted: bool,
}

/// One record of the hash-chained audit trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct AuditRecord {
    pub seq: i64,
    /// What happened: `at_ms`, `action`, `actor`, `key_id`, `agent_id`,
    /// `amount_msat`, `payee`, `purpose`, `rule`, `detail`.
    #[cfg_attr(feature = "schema", schema(value_type = Object))]
    pub record: serde_json::Value,
    /// SHA-256 of the previous record's hash and this record's body (hex).
    pub hash: String,
    pub prev_hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    /// 1 to 64 characters.
    #[cfg_attr(feature = "schema", schema(min_length = 1, max_length = 64))]
    pub name: String,
    /// Agent ids to add; an agent creating a room is added itself. At most 256.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 256))]
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Room {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: String,
    /// Agent ids, and `operator` when the operator is a member.
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub agent_id: String,
}

/// A payment request to post: coffer creates the invoice for the poster.
/// With `hold` it is a hold invoice (the poster settles or cancels it once
/// paid); with `escrow`, paying it through the room's pay route pays into
/// escrow on these terms (the payer releases or disputes it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestBody {
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: u64,
    /// At most 639 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 639))]
    pub memo: Option<String>,
    /// 1 to 604800 (7 days); default 3600.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub expiry_secs: Option<u32>,
    /// A hold invoice: paying it reserves the amount (`accepted`) until the
    /// poster settles it (`POST /v1/invoices/{payment_hash}/settle`) or
    /// cancels it, refunding the payer. Not with `escrow`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// Seconds an accepted hold waits for the poster: 1 to 604800; default
    /// 3600. Only with `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 604_800))]
    pub hold_secs: Option<u32>,
    /// The escrow a member pays with through the room's pay route: the
    /// amount waits until the payer releases it (`POST
    /// /v1/payments/{id}/release`) or disputes it, or the deadline applies
    /// `on_timeout`. Not with `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowTerms>,
}

/// Either `{"text"}` or `{"payment_request": {...}}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PostMessageRequest {
    /// 1 to 4096 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(min_length = 1, max_length = 4096))]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request: Option<PaymentRequestBody>,
}

/// A payment request's invoice, as a message carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct MessageInvoice {
    pub bolt11: String,
    pub payment_hash: String,
    pub amount_msat: u64,
    pub memo: String,
    pub status: InvoiceStatus,
    pub expires_at: String,
    /// The QR code (`lightning:` and the BOLT11 in upper case).
    pub qr_svg: String,
    pub qr_png: String,
    /// Where the request stands: `open`, `expired`, `accepted` (a hold
    /// paid, waiting for the payee), `held` (paid into escrow, waiting for
    /// the payer), `disputed` (waiting for the operator), `paid`,
    /// `released` (an escrow released), `cancelled` (a hold cancelled) or
    /// `refunded` (an escrow given back).
    pub state: String,
    /// What the member reading it may do now: `pay`; `settle`, `cancel`
    /// (the payee of an accepted hold; `cancel` also gives back an
    /// escrow); `release`, `dispute` (the payer of a held escrow);
    /// `resolve` (the operator, for a disputed one).
    #[serde(default)]
    pub actions: Vec<String>,
    /// The member that posted the request and receives the payment.
    pub payee: String,
    /// The member whose payment is accepted, held or paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// The payment whose money waits (or waited): the id to release,
    /// dispute or resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// When a waiting payment's `on_timeout` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// A hold invoice.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_secs: Option<u32>,
    /// The escrow the request asks to be paid with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowTerms>,
    /// Once paid (or released) and its payment's id is known: where its
    /// signed receipt is (`/v1/payments/{id}/receipt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_url: Option<String>,
}

/// Proof that a payment request was paid.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Receipt {
    pub payer: String,
    pub amount_msat: u64,
    pub paid_at: String,
    pub preimage: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Message {
    /// Increasing across the gateway: order and `after` cursor.
    pub id: i64,
    pub room_id: String,
    /// An agent id, or `operator`.
    pub sender: String,
    /// `text` or `payment_request`.
    pub kind: String,
    pub text: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<MessageInvoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// An agent's chat settings (operator): pay requests from these agents at
/// once, up to a ceiling each, still through the agent's policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// At most 256 agents.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 256))]
    pub auto_pay_from: Vec<String>,
    #[serde(default)]
    pub auto_pay_max_msat: u64,
    /// Incoming payments wait for the agent to accept them (`/v1/incoming`),
    /// or to reject them, which refunds the payer. Default: accepted at once.
    #[serde(default)]
    pub require_acknowledgment: bool,
    /// Who may put the agent in a room (create one with it, or add it):
    /// `anyone` (the default) or `nobody`. The agent can always leave.
    #[serde(default)]
    pub accept_rooms: AcceptRooms,
}

/// Whether an agent may be put in rooms by others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AcceptRooms {
    #[default]
    Anyone,
    Nobody,
}

/// A payment waiting for its payee's acknowledgment: credited but reserved.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Incoming {
    pub payment_id: String,
    pub payer_agent_id: String,
    pub amount_msat: u64,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
}

/// Pay an L402 paywall's challenge (`POST /v1/l402/pay`), within the
/// agent's policy; the purpose recorded is the URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct L402PayRequest {
    /// The URL that answered `402` (http or https, at most 512 bytes).
    #[cfg_attr(feature = "schema", schema(max_length = 512))]
    pub url: String,
    /// Its `WWW-Authenticate` value: `L402 version="0", token="…", invoice="…"`
    /// (or the older `macaroon="…"` form, or the `LSAT` scheme).
    pub challenge: String,
    /// A kept token the server refused: forgotten, then the challenge is paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_token: Option<String>,
}

/// An agent's paid L402 token, kept by the gateway for every process of
/// the agent until it expires.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct L402Token {
    /// The `Authorization` header value: `L402 <token>:<preimage hex>`.
    pub authorization: String,
    pub token: String,
    /// `scheme://host[:port]` the token is for.
    pub origin: String,
    /// The path prefix the token is for.
    pub scope: String,
    /// What the token cost.
    pub amount_msat: u64,
    pub payment_id: String,
    pub expires_at: String,
    /// Whether this call paid for it (false: an earlier payment's token).
    pub paid: bool,
}

/// One event of the outbox, as every consumer sees it (`GET /v1/events`,
/// SSE, WebSocket, webhooks, NATS, Redis). Ids increase in commit order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Event {
    pub id: i64,
    /// `payment.succeeded`, `invoice.paid`, `approval.decided`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The agent it concerns; absent for gateway-wide events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The gateway's node public key: tells gateways apart on a shared bus.
    pub gateway: String,
    pub created_at: String,
    #[cfg_attr(feature = "schema", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// A page of events: pass `next_after` as `after` for the next one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next_after: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: an `http` or `https` URL of at most 2048 bytes.
    #[cfg_attr(feature = "schema", schema(max_length = 2048))]
    pub url: String,
    /// Event types to deliver (at most 64); all when absent or empty.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 64))]
    pub types: Vec<String>,
    /// Operator only: the agent whose events go to it; the whole gateway's
    /// when absent. An agent's key always subscribes to its own events.
    #[serde(default)]
    pub agent_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Webhook {
    pub id: String,
    /// Whose events: an agent's, or absent for the whole gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub url: String,
    pub types: Vec<String>,
    /// Every event up to this id is delivered.
    pub delivered_through: i64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Paused after too many failures in a row; `POST .../resume` restarts it.
    pub paused: bool,
    pub created_at: String,
}

/// A new webhook and its signing secret, shown only here.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key of the `Coffer-Signature` header.
    pub secret: String,
}

/// One attempt to deliver an event to a webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct Delivery {
    pub event_id: i64,
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub delivered: bool,
    pub at: String,
    pub duration_ms: u64,
}

// Signed receipts (`GET /v1/payments/{id}/receipt`,
// `GET /v1/sessions/{id}/receipt`): see docs/receipts.md.

/// What a signed receipt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReceiptKind {
    /// A payment to an invoice of this gateway.
    Internal,
    /// A payment to an invoice of another node, through the Lightning backend.
    Outside,
    /// A hold invoice, settled by its payee.
    Hold,
    /// A payment into escrow, released to its payee.
    Escrow,
    /// A metered session, closed or expired: what was charged.
    Session,
}

/// The policy decision that let a payment through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptDecision {
    /// `allowed` (the payer's policies allowed it), or `approved` (held
    /// for a person, and approved).
    pub rule: String,
    /// The `seq` of the audit record of that decision (`GET /v1/audit`),
    /// when it is found unambiguously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<i64>,
}

/// A settled payment, as the gateway signs it. Every field is covered by
/// the signature; the canonical form is the JSON of this object with its
/// keys sorted, no whitespace (docs/receipts.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PaymentReceipt {
    /// 1.
    pub version: u32,
    /// The gateway's node public key (33-byte compressed secp256k1, hex):
    /// the key that signs the receipt and the gateway's BOLT11 invoices.
    pub gateway: String,
    /// The payment's id (a session's id for a session).
    pub payment_id: String,
    pub kind: ReceiptKind,
    /// The paying agent's id (`outside` for a hold invoice paid from
    /// outside the gateway).
    pub payer: String,
    /// The paid agent's id; for a payment to another node, that node's
    /// public key (hex).
    pub payee: String,
    pub amount_msat: u64,
    pub fee_msat: u64,
    pub purpose: String,
    /// Hex; empty for a session.
    pub payment_hash: String,
    /// Hex; empty for a session.
    pub preimage: String,
    /// RFC 3339, UTC, millisecond precision.
    pub settled_at: String,
    pub decision: ReceiptDecision,
}

/// A receipt and the gateway's signature over its canonical form:
/// ECDSA secp256k1 over SHA-256, low-S, compact `r‖s` (64 bytes), hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    pub receipt: PaymentReceipt,
    pub signature: String,
    /// `secp256k1-sha256`.
    pub alg: String,
}

/// A single-use code that links a messenger user to an agent (or to the
/// operator): sent to the bridge's bot as `/link CODE` before it expires.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct LinkCode {
    pub code: String,
    pub expires_at: String,
}

/// A messenger user who acts as an agent (or as the operator) through a
/// bridge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct BridgeLink {
    /// `telegram` or `matrix`.
    pub messenger: String,
    pub user_id: String,
    pub user_name: String,
    /// The agent, or `operator`.
    pub agent_id: String,
    /// The chat the user linked from, where the operator's approvals and
    /// alerts go.
    pub chat_id: String,
    pub linked_at: String,
}

/// Bridges a room to a chat: Telegram's `chat_id`, or Matrix's `room_id`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutRoomBridgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
}

/// A room mirrored into a messenger's chat.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct RoomBridge {
    pub room_id: String,
    pub messenger: String,
    pub chat_id: String,
    pub created_at: String,
}

/// Payments, amount and fees added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct SpendSum {
    pub payments: u64,
    pub amount_msat: u64,
    pub fee_msat: u64,
}

/// One row of a spend report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct SpendReportRow {
    /// An agent id (`agent`, `tree`), a task, a tag, a payee (`agent:ID`,
    /// `node:PUBKEY`) or a day (`YYYY-MM-DD`).
    pub key: String,
    /// The agent's name, where the key is or names an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub payments: u64,
    pub amount_msat: u64,
    pub fee_msat: u64,
}

/// Where the money went: settled payments and session charges of the
/// caller's agents (every agent for the operator; an agent's own tree for
/// an agent), added up by `group_by` over whole UTC days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct SpendReport {
    /// `agent`, `tree`, `task`, `tag`, `payee` or `day`.
    pub group_by: String,
    /// The first UTC day covered, `YYYY-MM-DD`.
    pub from: String,
    /// The last UTC day covered (included), `YYYY-MM-DD`.
    pub to: String,
    /// Largest amount first; by day, oldest first.
    pub rows: Vec<SpendReportRow>,
    /// All the caller's agents spent in the range, whatever the grouping: a
    /// payment without a task (or tags) is in no task (or tag) row.
    pub total: SpendSum,
    /// Rows were left out: at most 1000 are answered.
    #[serde(default)]
    pub truncated: bool,
}
