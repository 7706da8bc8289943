//! Trade between agents: money that waits (a paid hold invoice, an escrow),
//! metered sessions and refunds. In each the payer's money stays in its
//! own wallet, reserved (`debits_pending`), until it is moved to the payee
//! or given back: the ledger never holds it anywhere else.

use crate::error::Error;
use coffer_client::Outcome;
use coffer_core::Msat;

/// The longest a paid hold invoice waits for its payee (7 days), and the
/// default (an hour).
pub const HOLD_SECS_MAX: u32 = 7 * 24 * 3600;
pub const HOLD_SECS_DEFAULT: u32 = 3600;
/// The longest an escrow waits for its payer (30 days).
pub const ESCROW_SECS_MAX: u32 = 30 * 24 * 3600;
/// The longest a session stays open (30 days).
pub const SESSION_SECS_MAX: u32 = 30 * 24 * 3600;
/// The most charges one session takes: bounds its rows and its view.
pub const SESSION_CHARGES_MAX: u32 = 10_000;
/// The most refunds one payment takes.
pub const REFUNDS_PER_PAYMENT_MAX: u32 = 100;
/// The most rows one deadline sweep step resolves: bounds its transaction.
pub const COMMERCE_SWEEP_BATCH_MAX: u32 = 128;
/// The charges `GET /v1/sessions/{id}` shows at most (the newest).
pub const SESSION_CHARGES_SHOWN_MAX: u32 = 1_000;
const _: () = assert!(HOLD_SECS_DEFAULT <= HOLD_SECS_MAX);
const _: () = assert!(SESSION_CHARGES_SHOWN_MAX <= SESSION_CHARGES_MAX);
// A deadline in milliseconds from any time this side of year 2200 fits i64.
const _: () = assert!((ESCROW_SECS_MAX as i64) * 1000 < i64::MAX / 1024);

/// The payer of a hold invoice paid from outside the gateway, through the
/// Lightning backend's node (`escrows.payer_agent_id`): no agent's wallet
/// is reserved, the money waits at the node until coffer settles or
/// cancels it there. Agent ids start with `agt_`, so no agent has this id.
pub const OUTSIDE_PAYER: &str = "outside";

/// Who settles money that waits: the payee (a hold invoice) or the payer
/// (an escrow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowKind {
    /// A hold invoice, paid: its payee settles or cancels it.
    Hold,
    /// A payment into escrow: its payer releases or disputes it.
    Escrow,
}

impl EscrowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowKind::Hold => "hold",
            EscrowKind::Escrow => "escrow",
        }
    }

    pub fn parse(s: &str) -> Result<EscrowKind, Error> {
        match s {
            "hold" => Ok(EscrowKind::Hold),
            "escrow" => Ok(EscrowKind::Escrow),
            other => Err(Error::Internal(format!("unknown escrow kind {other}"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowStatus {
    /// The money waits; the deadline applies.
    Held,
    /// The payer disputed it: it waits for the operator, past any deadline.
    Disputed,
    Released,
    Refunded,
}

impl EscrowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowStatus::Held => "held",
            EscrowStatus::Disputed => "disputed",
            EscrowStatus::Released => "released",
            EscrowStatus::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Result<EscrowStatus, Error> {
        [EscrowStatus::Held, EscrowStatus::Disputed, EscrowStatus::Released, EscrowStatus::Refunded]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::Internal(format!("unknown escrow status {s}")))
    }

    /// Still waiting: neither released nor refunded.
    pub fn is_open(self) -> bool {
        matches!(self, EscrowStatus::Held | EscrowStatus::Disputed)
    }
}

pub fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Release => "release",
        Outcome::Refund => "refund",
    }
}

pub fn parse_outcome(s: &str) -> Result<Outcome, Error> {
    match s {
        "release" => Ok(Outcome::Release),
        "refund" => Ok(Outcome::Refund),
        other => Err(Error::Internal(format!("unknown escrow outcome {other}"))),
    }
}

/// How money paid into escrow waits: what the payer asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscrowTerms {
    pub release_after_ms: i64,
    pub on_timeout: Outcome,
}

impl EscrowTerms {
    /// As the API states them (whole seconds: terms are made of them).
    pub fn to_wire(self) -> coffer_client::EscrowTerms {
        let release_after_secs = u32::try_from(self.release_after_ms / 1000).unwrap_or(u32::MAX);
        coffer_client::EscrowTerms { release_after_secs, on_timeout: self.on_timeout }
    }
}

/// Money that waits: one per payment of a hold invoice or into escrow,
/// keyed by the payment's id. Its amount stays reserved on the payer's
/// wallet while it is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowRecord {
    pub payment_id: String,
    pub kind: EscrowKind,
    pub payment_hash: [u8; 32],
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    pub amount: Msat,
    pub status: EscrowStatus,
    pub on_timeout: Outcome,
    pub deadline_at_ms: i64,
    pub created_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub resolved_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    Closed,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Closed => "closed",
            SessionStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<SessionStatus, Error> {
        [SessionStatus::Open, SessionStatus::Closed, SessionStatus::Expired]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::Internal(format!("unknown session status {s}")))
    }
}

/// A metered session: `max` reserved on the payer's wallet when opened;
/// each charge moves part of it to the payee; the rest returns at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    pub max: Msat,
    pub charged: Msat,
    pub charges: u32,
    pub status: SessionStatus,
    pub purpose: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub closed_by: Option<String>,
    /// What its charges are counted under in reports.
    pub attribution: super::Attribution,
}

impl SessionRecord {
    /// What the payee may still charge: still reserved on the payer's
    /// wallet while the session is open.
    pub fn remaining(&self) -> Msat {
        self.max.saturating_sub(self.charged)
    }
}

/// One charge against a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRecord {
    pub id: String,
    pub session_id: String,
    pub amount: Msat,
    pub memo: String,
    pub created_at_ms: i64,
}

/// A payee's refund of (part of) a payment it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRecord {
    pub id: String,
    pub payment_id: String,
    pub from_agent_id: String,
    pub to_agent_id: String,
    pub amount: Msat,
    pub reason: String,
    /// The payment's refunded total, this refund included.
    pub payment_refunded: Msat,
    pub created_at_ms: i64,
}

/// Open a session (see [`crate::payment::session::open`]).
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: String,
    pub payer: crate::model::Payer,
    pub payee_agent_id: String,
    pub max: Msat,
    pub expires_at_ms: i64,
    pub purpose: String,
    pub attribution: super::Attribution,
    /// This gateway's node key, for payee rules naming nodes.
    pub node_pubkey_hex: std::sync::Arc<str>,
    pub sessions_open_max: u32,
    pub now_ms: i64,
    /// What the session is decided and counted with (see
    /// [`super::SpendTerms`]).
    pub terms: super::SpendTerms,
}
