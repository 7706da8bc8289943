//! Every kind of event the gateway writes to its outbox, with its payload
//! typed. [`Event::kind`], [`Event::agent_id`] and [`Event::data`] give
//! what the outbox stores, which goes on the wire as it is: `type`,
//! `agent_id` and `data` of each event (the API, the buses, the webhooks).
//! That JSON is a contract; `kind_tests.rs` pins it for every kind.

use crate::error::Error;
use crate::model::{
    ApprovalRecord, ChargeRecord, ChatSettings, EscrowRecord, IncomingRecord, MessageKind, PaymentRecord,
    SessionRecord, TREASURY_PAYEE, outcome_str,
};
use crate::store::Tx;
use coffer_client::Scope;
use coffer_core::policy::{Policy, TripCode};
use coffer_core::{Msat, Transfer};
use serde_json::{Value, json};

/// An event, before it is written: one variant per kind.
#[derive(Clone, Debug)]
pub enum Event {
    /// `agent.created`: the agent's.
    AgentCreated { agent_id: String, name: String, parent_id: Option<String> },
    /// `key.created`: the key's agent's.
    KeyCreated { agent_id: String, key_id: String, scope: Scope },
    /// `key.revoked`: the key's agent's.
    KeyRevoked { agent_id: String, key_id: String },
    /// `transfer.mint`: the operator's.
    TransferMint(Posted),
    /// `transfer.fund`: the funded agent's.
    TransferFund { agent_id: String, posted: Posted },
    /// `invoice.created`: the payee's (the operator's for the treasury).
    InvoiceCreated(InvoiceNotice),
    /// `invoice.paid`: the payee's (the operator's for the treasury).
    InvoicePaid(Paid),
    /// `invoice.expired`: the payee's (the operator's for the treasury).
    InvoiceExpired(InvoiceNotice),
    /// `payment.pending`: a payment sent to the Lightning backend; the
    /// payer's.
    PaymentPending(Outgoing),
    /// `payment.succeeded`: the payer's.
    PaymentSucceeded(Succeeded),
    /// `payment.failed`: a payment the Lightning backend failed; the
    /// payer's.
    PaymentFailed(Outgoing),
    /// `payment.denied`: the payer's.
    PaymentDenied(Denied),
    /// `payment.held` (for a person's approval): the payer's.
    PaymentHeld(ApprovalRecord),
    /// `approval.decided`: the payer's.
    ApprovalDecided(ApprovalRecord),
    /// `incoming.accepted`: the payee's.
    IncomingAccepted(IncomingRecord),
    /// `incoming.rejected`: the payee's.
    IncomingRejected(IncomingRecord),
    /// `policy.updated` (`None`: removed): the agent's.
    PolicyUpdated { agent_id: String, policy: Option<Policy> },
    /// `agent.frozen`, by the operator or by an automatic trip: the agent's.
    AgentFrozen { agent_id: String, reason: String },
    /// `agent.unfrozen`: the agent's.
    AgentUnfrozen { agent_id: String },
    /// `breaker.tripped`: the agent's.
    BreakerTripped { agent_id: String, code: TripCode, message: String },
    /// `breaker.halted` (the kill switch, on or off): the operator's.
    BreakerHalted { halted: bool },
    /// `room.created`: the operator's.
    RoomCreated { room_id: String, name: String, members: Vec<String> },
    /// `room.member_added`: the operator's.
    RoomMemberAdded { room_id: String, member: String },
    /// `room.member_removed`: the operator's.
    RoomMemberRemoved { room_id: String, member: String },
    /// `message.posted`: the operator's.
    MessagePosted { room_id: String, message_id: i64, sender: String, kind: MessageKind },
    /// `chat.settings_updated`: the agent's.
    ChatSettingsUpdated { agent_id: String, settings: ChatSettings },
    /// `webhook.created`: the owner's (the operator's without one).
    WebhookCreated(WebhookChange),
    /// `webhook.paused`: the owner's (the operator's without one).
    WebhookPaused(WebhookChange),
    /// `webhook.resumed`: the owner's (the operator's without one).
    WebhookResumed(WebhookChange),
    /// `webhook.deleted`: the owner's (the operator's without one).
    WebhookDeleted(WebhookChange),
    /// `invoice.accepted` (paid into a hold or escrow; the money waits):
    /// the payee's.
    InvoiceAccepted(EscrowRecord),
    /// `invoice.cancelled` (the waiting money went back): the payee's.
    InvoiceCancelled(EscrowRecord),
    /// `payment.escrowed` (the payer's money waits): the payer's.
    PaymentEscrowed(EscrowRecord),
    /// `payment.disputed`: the payer's.
    PaymentDisputed(EscrowRecord),
    /// `payment.released` (the waiting money went to the payee): the
    /// payer's.
    PaymentReleased(EscrowRecord),
    /// `payment.refunded` (a hold or escrow given back, or a payee's
    /// refund): the payer's.
    PaymentRefunded(Refunded),
    /// `session.opened`: one for the payer and one for the payee.
    SessionOpened { agent_id: String, session: SessionRecord },
    /// `session.charged`: the payer's.
    SessionCharged { session: SessionRecord, charge: ChargeRecord },
    /// `session.closed` (closed or expired): one for the payer and one for
    /// the payee.
    SessionClosed { agent_id: String, session: SessionRecord, returned: Msat },
    /// `budget.warning` (a spend carried a budget's usage across a warning
    /// threshold): the agent's whose budget it is.
    BudgetWarning(BudgetWarning),
}

/// A budget of `agent_id` that a spend (of `payer_agent_id`: the agent or
/// a sub-agent of its tree) carried across `threshold_percent` of its
/// limit; see `coffer_core::policy::crossings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetWarning {
    pub agent_id: String,
    pub payer_agent_id: String,
    pub crossing: coffer_core::policy::Crossing,
}

/// Money given back to a payer: a whole hold or escrow (`refund_id`
/// `None`), or a payee's refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refunded {
    pub payment_id: String,
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    /// The payment's refunded total, this one included.
    pub refunded_total: Msat,
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    pub reason: String,
    pub refund_id: Option<String>,
}

/// Every kind, once.
pub const KINDS: &[&str] = &[
    "agent.created",
    "key.created",
    "key.revoked",
    "transfer.mint",
    "transfer.fund",
    "invoice.created",
    "invoice.paid",
    "invoice.expired",
    "payment.pending",
    "payment.succeeded",
    "payment.failed",
    "payment.denied",
    "payment.held",
    "approval.decided",
    "incoming.accepted",
    "incoming.rejected",
    "policy.updated",
    "agent.frozen",
    "agent.unfrozen",
    "breaker.tripped",
    "breaker.halted",
    "room.created",
    "room.member_added",
    "room.member_removed",
    "message.posted",
    "chat.settings_updated",
    "webhook.created",
    "webhook.paused",
    "webhook.resumed",
    "webhook.deleted",
    "invoice.accepted",
    "invoice.cancelled",
    "payment.escrowed",
    "payment.disputed",
    "payment.released",
    "payment.refunded",
    "session.opened",
    "session.charged",
    "session.closed",
    "budget.warning",
];

/// A transfer posted by the operator (a mint or a funding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posted {
    pub transfer_id: i64,
    pub transfer: Transfer,
}

/// An invoice as its `invoice.created` and `invoice.expired` events tell
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceNotice {
    pub payment_hash: [u8; 32],
    /// The payee agent, or [`TREASURY_PAYEE`].
    pub payee: String,
    pub amount: Msat,
    pub expires_at_ms: i64,
    pub room_id: Option<String>,
}

impl From<&crate::model::InvoiceRecord> for InvoiceNotice {
    fn from(invoice: &crate::model::InvoiceRecord) -> InvoiceNotice {
        InvoiceNotice {
            payment_hash: invoice.payment_hash,
            payee: invoice.agent_id.clone(),
            amount: invoice.amount,
            expires_at_ms: invoice.expires_at_ms,
            room_id: invoice.room_id.clone(),
        }
    }
}

/// A payment settled inside this gateway: the payer's `payment.succeeded`
/// and the payee's `invoice.paid` carry the same data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub payment_id: String,
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    pub payer_agent_id: String,
    pub payee_agent_id: String,
    /// The payer's key.
    pub key_id: String,
    pub purpose: String,
}

/// An invoice the Lightning Network paid, credited from `outside`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    /// The payee agent, or [`TREASURY_PAYEE`].
    pub payee: String,
    pub transfer_id: i64,
}

/// A payment to an invoice outside this gateway, as it stands.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub payment: PaymentRecord,
    pub fee_limit: Msat,
}

/// How an invoice came to be paid.
#[derive(Clone, Debug)]
pub enum Paid {
    /// By an agent of this gateway.
    Internal(Settlement),
    /// From the Lightning Network.
    FromOutside(Deposit),
}

/// Which payment succeeded.
#[derive(Clone, Debug)]
pub enum Succeeded {
    /// Settled inside this gateway.
    Internal(Settlement),
    /// Paid by the Lightning backend.
    Outside(Outgoing),
}

/// A payment the constitution denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub payment_hash: [u8; 32],
    pub amount: Msat,
    pub payer_agent_id: String,
    pub payee: DeniedPayee,
    /// The denial's problem code.
    pub code: &'static str,
    pub message: String,
    pub purpose: String,
}

/// Whom a denied payment was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeniedPayee {
    /// An agent of this gateway: `payee_agent_id` in the data.
    Agent(String),
    /// A node outside, by its public key in hex: `payee` (`node:KEY`) in
    /// the data.
    Node(String),
}

/// A webhook subscription after a change. Its URL stays out: it may carry
/// the receiver's token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookChange {
    pub webhook_id: String,
    pub owner: Option<String>,
    pub types: Vec<String>,
    pub failures: u32,
    pub paused: bool,
}

/// The changes of a webhook subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookEvent {
    Created,
    Paused,
    Resumed,
    Deleted,
}

impl WebhookEvent {
    #[cfg(test)]
    pub(crate) const ALL: [WebhookEvent; 4] =
        [WebhookEvent::Created, WebhookEvent::Paused, WebhookEvent::Resumed, WebhookEvent::Deleted];

    pub fn event(self, change: WebhookChange) -> Event {
        match self {
            WebhookEvent::Created => Event::WebhookCreated(change),
            WebhookEvent::Paused => Event::WebhookPaused(change),
            WebhookEvent::Resumed => Event::WebhookResumed(change),
            WebhookEvent::Deleted => Event::WebhookDeleted(change),
        }
    }

    #[cfg(test)]
    pub(crate) fn kind(self) -> &'static str {
        self.event(WebhookChange::default()).kind()
    }
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentCreated { .. } => "agent.created",
            Event::KeyCreated { .. } => "key.created",
            Event::KeyRevoked { .. } => "key.revoked",
            Event::TransferMint(_) => "transfer.mint",
            Event::TransferFund { .. } => "transfer.fund",
            Event::InvoiceCreated(_) => "invoice.created",
            Event::InvoicePaid(_) => "invoice.paid",
            Event::InvoiceExpired(_) => "invoice.expired",
            Event::PaymentPending(_) => "payment.pending",
            Event::PaymentSucceeded(_) => "payment.succeeded",
            Event::PaymentFailed(_) => "payment.failed",
            Event::PaymentDenied(_) => "payment.denied",
            Event::PaymentHeld(_) => "payment.held",
            Event::ApprovalDecided(_) => "approval.decided",
            Event::IncomingAccepted(_) => "incoming.accepted",
            Event::IncomingRejected(_) => "incoming.rejected",
            Event::PolicyUpdated { .. } => "policy.updated",
            Event::AgentFrozen { .. } => "agent.frozen",
            Event::AgentUnfrozen { .. } => "agent.unfrozen",
            Event::BreakerTripped { .. } => "breaker.tripped",
            Event::BreakerHalted { .. } => "breaker.halted",
            Event::RoomCreated { .. } => "room.created",
            Event::RoomMemberAdded { .. } => "room.member_added",
            Event::RoomMemberRemoved { .. } => "room.member_removed",
            Event::MessagePosted { .. } => "message.posted",
            Event::ChatSettingsUpdated { .. } => "chat.settings_updated",
            Event::WebhookCreated(_) => "webhook.created",
            Event::WebhookPaused(_) => "webhook.paused",
            Event::WebhookResumed(_) => "webhook.resumed",
            Event::WebhookDeleted(_) => "webhook.deleted",
            Event::InvoiceAccepted(_) => "invoice.accepted",
            Event::InvoiceCancelled(_) => "invoice.cancelled",
            Event::PaymentEscrowed(_) => "payment.escrowed",
            Event::PaymentDisputed(_) => "payment.disputed",
            Event::PaymentReleased(_) => "payment.released",
            Event::PaymentRefunded(_) => "payment.refunded",
            Event::SessionOpened { .. } => "session.opened",
            Event::SessionCharged { .. } => "session.charged",
            Event::SessionClosed { .. } => "session.closed",
            Event::BudgetWarning(_) => "budget.warning",
        }
    }

    /// The agent the event belongs to (its key sees it); `None` for the
    /// operator's alone.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Event::AgentCreated { agent_id, .. }
            | Event::KeyCreated { agent_id, .. }
            | Event::KeyRevoked { agent_id, .. }
            | Event::TransferFund { agent_id, .. }
            | Event::PolicyUpdated { agent_id, .. }
            | Event::AgentFrozen { agent_id, .. }
            | Event::AgentUnfrozen { agent_id }
            | Event::BreakerTripped { agent_id, .. }
            | Event::ChatSettingsUpdated { agent_id, .. }
            | Event::SessionOpened { agent_id, .. }
            | Event::SessionClosed { agent_id, .. }
            | Event::BudgetWarning(BudgetWarning { agent_id, .. }) => Some(agent_id),
            Event::InvoiceAccepted(e) | Event::InvoiceCancelled(e) => Some(&e.payee_agent_id),
            Event::PaymentEscrowed(e) | Event::PaymentDisputed(e) | Event::PaymentReleased(e) => {
                Some(&e.payer_agent_id)
            }
            Event::PaymentRefunded(r) => Some(&r.payer_agent_id),
            Event::SessionCharged { session, .. } => Some(&session.payer_agent_id),
            Event::TransferMint(_)
            | Event::BreakerHalted { .. }
            | Event::RoomCreated { .. }
            | Event::RoomMemberAdded { .. }
            | Event::RoomMemberRemoved { .. }
            | Event::MessagePosted { .. } => None,
            Event::InvoiceCreated(n) | Event::InvoiceExpired(n) => agent_payee(&n.payee),
            Event::InvoicePaid(Paid::Internal(s)) => Some(&s.payee_agent_id),
            Event::InvoicePaid(Paid::FromOutside(d)) => agent_payee(&d.payee),
            Event::PaymentSucceeded(Succeeded::Internal(s)) => Some(&s.payer_agent_id),
            Event::PaymentSucceeded(Succeeded::Outside(o)) | Event::PaymentPending(o) | Event::PaymentFailed(o) => {
                Some(&o.payment.agent_id)
            }
            Event::PaymentDenied(d) => Some(&d.payer_agent_id),
            Event::PaymentHeld(a) | Event::ApprovalDecided(a) => Some(&a.agent_id),
            Event::IncomingAccepted(i) | Event::IncomingRejected(i) => Some(&i.payee_agent_id),
            Event::WebhookCreated(w)
            | Event::WebhookPaused(w)
            | Event::WebhookResumed(w)
            | Event::WebhookDeleted(w) => w.owner.as_deref(),
        }
    }

    /// The event's `data`, as the outbox stores it.
    pub fn data(&self) -> Value {
        match self {
            Event::AgentCreated { agent_id, name, parent_id } => {
                json!({"agent_id": agent_id, "name": name, "parent_id": parent_id})
            }
            Event::KeyCreated { agent_id, key_id, scope } => {
                json!({"agent_id": agent_id, "key_id": key_id, "scope": scope.as_str()})
            }
            Event::KeyRevoked { agent_id, key_id } => json!({"agent_id": agent_id, "key_id": key_id}),
            Event::TransferMint(posted) => posted.data("mint"),
            Event::TransferFund { posted, .. } => posted.data("fund"),
            Event::InvoiceCreated(n) => json!({
                "payment_hash": hex::encode(n.payment_hash), "agent_id": n.payee,
                "amount_msat": n.amount.as_u64(), "expires_at_ms": n.expires_at_ms, "room_id": n.room_id,
            }),
            Event::InvoiceExpired(n) => json!({
                "payment_hash": hex::encode(n.payment_hash), "payee": n.payee,
                "amount_msat": n.amount.as_u64(), "expires_at_ms": n.expires_at_ms, "room_id": n.room_id,
            }),
            Event::InvoicePaid(Paid::Internal(s)) | Event::PaymentSucceeded(Succeeded::Internal(s)) => s.data(),
            Event::InvoicePaid(Paid::FromOutside(d)) => json!({
                "payment_hash": hex::encode(d.payment_hash), "amount_msat": d.amount.as_u64(),
                "payee": d.payee, "transfer_id": d.transfer_id, "from": "outside",
            }),
            Event::PaymentSucceeded(Succeeded::Outside(o)) | Event::PaymentPending(o) | Event::PaymentFailed(o) => {
                o.data()
            }
            Event::PaymentDenied(d) => d.data(),
            Event::PaymentHeld(a) | Event::ApprovalDecided(a) => approval_data(a),
            Event::IncomingAccepted(i) | Event::IncomingRejected(i) => json!({
                "payment_id": i.payment_id, "payee_agent_id": i.payee_agent_id,
                "payer_agent_id": i.payer_agent_id, "amount_msat": i.amount.as_u64(),
            }),
            Event::PolicyUpdated { agent_id, policy } => json!({"agent_id": agent_id, "policy": policy}),
            Event::AgentFrozen { agent_id, reason } => json!({"agent_id": agent_id, "reason": reason}),
            Event::AgentUnfrozen { agent_id } => json!({"agent_id": agent_id, "reason": Value::Null}),
            Event::BreakerTripped { agent_id, code, message } => {
                json!({"agent_id": agent_id, "code": code.as_str(), "message": message})
            }
            Event::BreakerHalted { halted } => json!({"halted": halted}),
            Event::RoomCreated { room_id, name, members } => {
                json!({"room_id": room_id, "name": name, "members": members})
            }
            Event::RoomMemberAdded { room_id, member } | Event::RoomMemberRemoved { room_id, member } => {
                json!({"room_id": room_id, "member": member})
            }
            Event::MessagePosted { room_id, message_id, sender, kind } => {
                let kind = match kind {
                    MessageKind::PaymentRequest => "payment_request",
                    MessageKind::Text => "text",
                };
                json!({"room_id": room_id, "message_id": message_id, "sender": sender, "kind": kind})
            }
            Event::ChatSettingsUpdated { agent_id, settings } => json!({"agent_id": agent_id, "settings": settings}),
            Event::WebhookCreated(w)
            | Event::WebhookPaused(w)
            | Event::WebhookResumed(w)
            | Event::WebhookDeleted(w) => {
                json!({
                    "webhook_id": w.webhook_id, "agent_id": w.owner, "types": w.types,
                    "failures": w.failures, "paused": w.paused,
                })
            }
            Event::InvoiceAccepted(e)
            | Event::InvoiceCancelled(e)
            | Event::PaymentEscrowed(e)
            | Event::PaymentDisputed(e)
            | Event::PaymentReleased(e) => escrow_data(e),
            Event::PaymentRefunded(r) => json!({
                "payment_id": r.payment_id, "payment_hash": hex::encode(r.payment_hash),
                "amount_msat": r.amount.as_u64(), "refunded_msat": r.refunded_total.as_u64(),
                "payer_agent_id": r.payer_agent_id, "payee_agent_id": r.payee_agent_id, "reason": r.reason,
                "refund_id": r.refund_id,
            }),
            Event::SessionOpened { session, .. } => session_data(session),
            Event::SessionCharged { session, charge } => {
                let mut data = session_data(session);
                if let Value::Object(map) = &mut data {
                    map.insert("charge_id".into(), Value::String(charge.id.clone()));
                    map.insert("amount_msat".into(), charge.amount.as_u64().into());
                    map.insert("memo".into(), Value::String(charge.memo.clone()));
                }
                data
            }
            Event::SessionClosed { session, returned, .. } => {
                let mut data = session_data(session);
                if let Value::Object(map) = &mut data {
                    map.insert("returned_msat".into(), returned.as_u64().into());
                }
                data
            }
            Event::BudgetWarning(w) => {
                let c = &w.crossing;
                json!({
                    "agent_id": w.agent_id, "payer_agent_id": w.payer_agent_id, "budget": c.budget(),
                    "kind": c.kind(), "threshold_percent": c.threshold_percent,
                    "spent_msat": c.spent_msat.as_u64(), "limit_msat": c.limit_msat.as_u64(),
                    "window_start_ms": c.window_start_ms, "resets_at_ms": c.resets_at_ms,
                })
            }
        }
    }
}

/// Writes `event` to the outbox, in the caller's transaction.
pub fn emit(tx: &mut dyn Tx, event: &Event, now_ms: i64) -> Result<(), Error> {
    tx.insert_event(event.kind(), event.agent_id(), &event.data(), now_ms)
}

/// An invoice's payee as an event's agent: the treasury's invoices are the
/// operator's (no agent).
fn agent_payee(payee: &str) -> Option<&str> {
    (payee != TREASURY_PAYEE).then_some(payee)
}

impl Posted {
    fn data(&self, kind: &str) -> Value {
        let t = &self.transfer;
        json!({
            "transfer_id": self.transfer_id, "debit": t.debit.to_string(), "credit": t.credit.to_string(),
            "amount_msat": t.amount.as_u64(), "kind": kind,
        })
    }
}

impl Settlement {
    fn data(&self) -> Value {
        json!({
            "payment_id": self.payment_id, "payment_hash": hex::encode(self.payment_hash),
            "amount_msat": self.amount.as_u64(), "fee_msat": 0, "payer_agent_id": self.payer_agent_id,
            "payee_agent_id": self.payee_agent_id, "key_id": self.key_id, "purpose": self.purpose,
        })
    }
}

impl Outgoing {
    fn data(&self) -> Value {
        let p = &self.payment;
        json!({
            "payment_id": p.id, "payment_hash": hex::encode(p.payment_hash), "amount_msat": p.amount.as_u64(),
            "fee_msat": p.fee.as_u64(), "fee_limit_msat": self.fee_limit.as_u64(), "payer_agent_id": p.agent_id,
            "status": p.status, "detail": p.detail, "purpose": p.purpose,
        })
    }
}

impl Denied {
    fn data(&self) -> Value {
        let mut data = json!({
            "payment_hash": hex::encode(self.payment_hash), "amount_msat": self.amount.as_u64(),
            "payer_agent_id": self.payer_agent_id, "code": self.code, "message": self.message,
            "purpose": self.purpose,
        });
        let (key, payee) = match &self.payee {
            DeniedPayee::Agent(agent_id) => ("payee_agent_id", agent_id.clone()),
            DeniedPayee::Node(node_hex) => ("payee", format!("node:{node_hex}")),
        };
        if let Value::Object(map) = &mut data {
            map.insert(key.to_owned(), Value::String(payee));
        }
        data
    }
}

fn approval_data(a: &ApprovalRecord) -> Value {
    json!({
        "approval_id": a.id, "agent_id": a.agent_id, "payment_hash": hex::encode(a.payment_hash),
        "amount_msat": a.amount.as_u64(), "fee_limit_msat": a.fee_limit.as_u64(), "payee": a.payee(),
        "purpose": a.purpose, "status": a.status.as_str(), "expires_at_ms": a.expires_at_ms,
        "payment_id": a.payment_id,
    })
}

fn escrow_data(e: &EscrowRecord) -> Value {
    json!({
        "payment_id": e.payment_id, "kind": e.kind.as_str(), "status": e.status.as_str(),
        "payment_hash": hex::encode(e.payment_hash), "payer_agent_id": e.payer_agent_id,
        "payee_agent_id": e.payee_agent_id, "amount_msat": e.amount.as_u64(),
        "deadline_at_ms": e.deadline_at_ms, "on_timeout": outcome_str(e.on_timeout),
        "resolved_by": e.resolved_by,
    })
}

fn session_data(x: &SessionRecord) -> Value {
    json!({
        "session_id": x.id, "payer_agent_id": x.payer_agent_id, "payee_agent_id": x.payee_agent_id,
        "max_msat": x.max.as_u64(), "charged_msat": x.charged.as_u64(), "remaining_msat": x.remaining().as_u64(),
        "status": x.status.as_str(), "expires_at_ms": x.expires_at_ms, "purpose": x.purpose,
        "closed_by": x.closed_by,
    })
}

#[cfg(test)]
#[path = "kind_tests.rs"]
mod tests;
