//! The shapes of `POST /v1/payments/preview`: whether a payment would pass
//! now, which rule would stop or hold it, and what remains of each budget,
//! without moving anything.

use serde::{Deserialize, Serialize};

#[cfg(feature = "schema")]
use utoipa::ToSchema;

/// A payment to preview: an invoice (`bolt11`), or an amount to a payee.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// A BOLT11 invoice (of this gateway or of another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bolt11: Option<String>,
    /// With `payee`: the amount to preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_100_000_000_000_000_000_u64))]
    pub amount_msat: Option<u64>,
    /// With `amount_msat`: `agent:ID` (an agent of this gateway) or
    /// `node:PUBKEY_HEX` (another node), as policies name payees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<String>,
    /// The payer: the caller's own agent by default; the operator (or an
    /// ancestor agent) names the agent it previews for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// What a real payment would answer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PreviewDecision {
    Allow,
    /// Held for a person's approval.
    Hold,
    Deny,
}

/// One budget window of one level of the payer's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct PreviewWindow {
    /// Whose budget: the payer (level 0) or an ancestor.
    pub agent_id: String,
    pub level: u32,
    /// "1h", "day", ...
    pub window: String,
    /// "rolling" or "calendar".
    pub kind: String,
    pub limit_msat: u64,
    pub spent_msat: u64,
    pub remaining_msat: u64,
    /// When a calendar window starts over (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at_ms: Option<i64>,
}

/// The lifetime allowance of one level of the payer's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct PreviewLifetime {
    pub agent_id: String,
    pub level: u32,
    pub limit_msat: u64,
    pub spent_msat: u64,
    pub remaining_msat: u64,
}

/// The answer of a preview. Nothing moved: no debit, no usage, no audit
/// entry, no event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(ToSchema))]
pub struct PaymentPreview {
    pub decision: PreviewDecision,
    /// The rule, as a real denial's problem `code` names it
    /// (`budget-exceeded`, `insufficient-balance`, ...) or
    /// `approval-required` for a hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The level of the payer's chain that decided (0: the payer, 1: its
    /// parent, ...); none for the kill switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// The agent of that level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The payer.
    pub payer_agent_id: String,
    pub amount_msat: u64,
    /// Reserved for routing fees (zero inside this gateway).
    pub fee_limit_msat: u64,
    /// The payer's spendable balance.
    pub balance_msat: u64,
    /// Every budget window of every level of the chain, payer first.
    pub remaining: Vec<PreviewWindow>,
    /// The lifetime allowance of every level that has one.
    pub lifetime: Vec<PreviewLifetime>,
}
