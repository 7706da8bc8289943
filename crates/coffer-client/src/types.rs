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
    /// A label for people; 1 to 64 characters.
    pub name: String,
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Millisatoshis: greater than zero, at most 21 million BTC.
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

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceRequest {
    pub amount_msat: u64,
    /// Shown to the payer; at most 639 bytes (the BOLT11 description limit).
    #[serde(default)]
    pub memo: Option<String>,
    /// Seconds until the invoice expires: 1 to 604800 (7 days); default 3600.
    #[serde(default)]
    pub expiry_secs: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    Paid,
    Expired,
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    pub bolt11: String,
    /// Why the agent pays: kept in the audit trail; at most 512 bytes.
    #[serde(default)]
    pub purpose: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Pending,
    Failed,
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
