//! Records to wire types: the JSON the HTTP API answers, the events carry
//! and the room streams send, built in one place for all of them.

use crate::model::card;
use crate::model::{
    AgentRecord, ApprovalRecord, ApprovalStatus, AuditRecord, ChargeRecord, DeliveryRecord, EscrowRecord,
    InvoiceRecord, MessageKind, MessageRecord, PaymentRecord, RefundRecord, RoomRecord, SessionRecord, SessionStatus,
    StoredInvoiceStatus, WebhookRecord,
};
use chrono::{DateTime, SecondsFormat};
use coffer_client::{Agent, Approval, Delivery, Invoice, InvoiceStatus, Payment, Webhook};
use coffer_client::{Charge, Escrow, Refund, Session};
use coffer_core::Msat;

pub fn timestamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

pub fn agent(a: AgentRecord) -> Agent {
    Agent {
        id: a.id,
        name: a.name,
        balance_msat: a.balance.net_u64(),
        pending_msat: a.balance.debits_pending.as_u64(),
        created_at: timestamp(a.created_at_ms),
        parent_id: a.parent_id,
        can_create_subagents: a.can_create_subagents,
        frozen: a.frozen_reason.is_some(),
        frozen_reason: a.frozen_reason,
        task: a.task,
    }
}

/// `held` is how a payment's answer names a pending approval.
pub fn approval(a: ApprovalRecord, held: bool) -> Approval {
    let status = if held && a.status == ApprovalStatus::Pending { "held" } else { a.status.as_str() };
    Approval {
        id: a.id,
        status: status.to_owned(),
        agent_id: a.agent_id,
        key_id: a.key_id,
        payment_hash: hex::encode(a.payment_hash),
        bolt11: a.bolt11,
        amount_msat: a.amount.as_u64(),
        purpose: a.purpose,
        payee_agent_id: a.payee_agent_id,
        reason: "approval-required".into(),
        created_at: timestamp(a.created_at_ms),
        expires_at: timestamp(a.expires_at_ms),
        decided_at: a.decided_at_ms.map(timestamp),
        decided_by: a.decided_by,
        payment_id: a.payment_id,
        fee_limit_msat: a.fee_limit.as_u64(),
        payee_node: a.payee_node_hex,
        task: a.attribution.task,
        tags: a.attribution.tags,
    }
}

pub fn audit_record(r: AuditRecord) -> coffer_client::AuditRecord {
    coffer_client::AuditRecord {
        seq: r.seq,
        record: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)),
        hash: hex::encode(r.hash),
        prev_hash: hex::encode(r.prev_hash),
    }
}

fn invoice_status(i: &InvoiceRecord, now_ms: i64) -> InvoiceStatus {
    match i.status {
        StoredInvoiceStatus::Paid => InvoiceStatus::Paid,
        StoredInvoiceStatus::Expired => InvoiceStatus::Expired,
        StoredInvoiceStatus::Open if now_ms >= i.expires_at_ms => InvoiceStatus::Expired,
        StoredInvoiceStatus::Open => InvoiceStatus::Open,
        StoredInvoiceStatus::Accepted => InvoiceStatus::Accepted,
        StoredInvoiceStatus::Cancelled => InvoiceStatus::Cancelled,
    }
}

pub fn invoice(i: InvoiceRecord, now_ms: i64) -> Invoice {
    let status = invoice_status(&i, now_ms);
    Invoice {
        payment_hash: hex::encode(i.payment_hash),
        bolt11: i.bolt11,
        amount_msat: i.amount.as_u64(),
        memo: i.memo,
        status,
        created_at: timestamp(i.created_at_ms),
        expires_at: timestamp(i.expires_at_ms),
        paid_at: i.paid_at_ms.map(timestamp),
        hold: i.hold_secs.is_some(),
        hold_secs: i.hold_secs,
        escrow: None,
    }
}

pub fn payment(p: PaymentRecord) -> Payment {
    Payment {
        id: p.id,
        status: p.status,
        payment_hash: hex::encode(p.payment_hash),
        preimage: p.preimage.map(hex::encode),
        amount_msat: p.amount.as_u64(),
        fee_msat: p.fee.as_u64(),
        purpose: p.purpose,
        payee_agent_id: p.payee_agent_id,
        created_at: timestamp(p.created_at_ms),
        detail: p.detail,
        refunded_msat: p.refunded.as_u64(),
        escrow: None,
        refunds: Vec::new(),
        task: p.attribution.task,
        tags: p.attribution.tags,
    }
}

/// A payment with the hold or escrow its money waits (or waited) in.
pub fn payment_with(p: PaymentRecord, e: Option<EscrowRecord>) -> Payment {
    Payment { escrow: e.map(escrow), ..payment(p) }
}

pub fn escrow(e: EscrowRecord) -> Escrow {
    Escrow {
        payment_id: e.payment_id,
        kind: e.kind.as_str().into(),
        status: e.status.as_str().into(),
        payment_hash: hex::encode(e.payment_hash),
        payer_agent_id: e.payer_agent_id,
        payee_agent_id: e.payee_agent_id,
        amount_msat: e.amount.as_u64(),
        deadline: timestamp(e.deadline_at_ms),
        on_timeout: e.on_timeout,
        created_at: timestamp(e.created_at_ms),
        resolved_at: e.resolved_at_ms.map(timestamp),
        resolved_by: e.resolved_by,
    }
}

pub fn refund(r: RefundRecord) -> Refund {
    Refund {
        id: r.id,
        payment_id: r.payment_id,
        from_agent_id: r.from_agent_id,
        to_agent_id: r.to_agent_id,
        amount_msat: r.amount.as_u64(),
        reason: r.reason,
        payment_refunded_msat: r.payment_refunded.as_u64(),
        created_at: timestamp(r.created_at_ms),
    }
}

pub fn charge(c: ChargeRecord) -> Charge {
    Charge {
        id: c.id,
        session_id: c.session_id,
        amount_msat: c.amount.as_u64(),
        memo: c.memo,
        created_at: timestamp(c.created_at_ms),
    }
}

/// A session; `returned` once it ended, its charges on `GET`.
pub fn session(x: SessionRecord, returned: Option<Msat>, charges: Vec<ChargeRecord>) -> Session {
    let returned = returned.or_else(|| (x.status != SessionStatus::Open).then(|| x.remaining()));
    Session {
        id: x.id.clone(),
        payer_agent_id: x.payer_agent_id.clone(),
        payee_agent_id: x.payee_agent_id.clone(),
        max_msat: x.max.as_u64(),
        charged_msat: x.charged.as_u64(),
        remaining_msat: if x.status == SessionStatus::Open { x.remaining().as_u64() } else { 0 },
        status: x.status.as_str().into(),
        purpose: x.purpose,
        created_at: timestamp(x.created_at_ms),
        expires_at: timestamp(x.expires_at_ms),
        closed_at: x.closed_at_ms.map(timestamp),
        closed_by: x.closed_by,
        returned_msat: returned.map(Msat::as_u64),
        charges: charges.into_iter().map(charge).collect(),
        task: x.attribution.task,
        tags: x.attribution.tags,
    }
}

pub fn room(r: RoomRecord) -> coffer_client::Room {
    coffer_client::Room {
        id: r.id,
        name: r.name,
        created_by: r.created_by,
        created_at: timestamp(r.created_at_ms),
        members: r.members,
    }
}

/// The receipt of a paid invoice: who paid, how much, when, the preimage.
pub fn receipt(i: &InvoiceRecord) -> Option<coffer_client::Receipt> {
    Some(coffer_client::Receipt {
        payer: i.paid_by.clone()?,
        amount_msat: i.amount.as_u64(),
        paid_at: timestamp(i.paid_at_ms?),
        preimage: hex::encode(i.preimage),
    })
}

/// A message as `viewer` reads it: a payment request's card shows where it
/// stands (from its invoice and the hold or escrow its payment waits in,
/// `waiting`) and what the viewer may do.
pub fn message(
    m: MessageRecord,
    waiting: Option<&EscrowRecord>,
    viewer: card::Viewer<'_>,
    now_ms: i64,
) -> coffer_client::Message {
    let receipt = m.invoice.as_ref().and_then(receipt);
    let invoice = m.invoice.map(|i| {
        let terms = i.escrow.map(crate::model::EscrowTerms::to_wire);
        request_card(i, terms, waiting, viewer, now_ms)
    });
    coffer_client::Message {
        id: m.id,
        room_id: m.room_id,
        sender: m.sender,
        kind: match m.kind {
            MessageKind::Text => "text",
            MessageKind::PaymentRequest => "payment_request",
        }
        .to_owned(),
        text: m.text,
        created_at: timestamp(m.created_at_ms),
        invoice,
        receipt,
    }
}

/// The card of a payment request.
fn request_card(
    i: InvoiceRecord,
    escrow: Option<coffer_client::EscrowTerms>,
    waiting: Option<&EscrowRecord>,
    viewer: card::Viewer<'_>,
    now_ms: i64,
) -> coffer_client::MessageInvoice {
    let hash = hex::encode(i.payment_hash);
    let status = invoice_status(&i, now_ms);
    let waiting = waiting.filter(|e| e.payment_hash == i.payment_hash);
    let state = card::state(status, waiting.map(|e| (e.kind, e.status)));
    let payer = waiting.map(|e| e.payer_agent_id.clone()).or_else(|| i.paid_by.clone());
    let actions = card::actions(state, viewer, &i.agent_id, payer.as_deref());
    let payment_id = waiting.map(|e| e.payment_id.clone());
    let receipt_url = payment_id.as_deref().and_then(|id| card::receipt_url(state, id));
    coffer_client::MessageInvoice {
        status,
        qr_svg: format!("/v1/invoices/{hash}/qr.svg"),
        qr_png: format!("/v1/invoices/{hash}/qr.png"),
        payment_hash: hash,
        bolt11: i.bolt11,
        amount_msat: i.amount.as_u64(),
        memo: i.memo,
        expires_at: timestamp(i.expires_at_ms),
        state: state.as_str().to_owned(),
        actions: actions.into_iter().map(str::to_owned).collect(),
        payee: i.agent_id,
        payer,
        payment_id,
        deadline: waiting.filter(|e| e.status.is_open()).map(|e| timestamp(e.deadline_at_ms)),
        hold: i.hold_secs.is_some(),
        hold_secs: i.hold_secs,
        escrow,
        receipt_url,
    }
}

/// What a room's watchers are told when a request changes state (the
/// event's kind is [`card::CardState::room_event`]): the card's changing
/// fields, `actions` left for each watcher's stream to fill in, and the
/// receipt once paid. `None` for a state nobody is told of.
pub fn request_update(
    i: &InvoiceRecord,
    waiting: Option<&EscrowRecord>,
    now_ms: i64,
) -> Option<(&'static str, serde_json::Value)> {
    let card = request_card(i.clone(), None, waiting, card::Viewer::Operator, now_ms);
    let kind = card::CardState::parse(&card.state)?.room_event()?;
    let data = serde_json::json!({
        "payment_hash": card.payment_hash,
        "status": card.status,
        "state": card.state,
        "actions": [],
        "payee": card.payee,
        "payer": card.payer,
        "payment_id": card.payment_id,
        "deadline": card.deadline,
        "receipt_url": card.receipt_url,
        "receipt": receipt(i),
    });
    Some((kind, data))
}

pub fn incoming(i: crate::model::IncomingRecord) -> coffer_client::Incoming {
    coffer_client::Incoming {
        payment_id: i.payment_id,
        payer_agent_id: i.payer_agent_id,
        amount_msat: i.amount.as_u64(),
        status: i.status.as_str().to_owned(),
        created_at: timestamp(i.created_at_ms),
        decided_at: i.decided_at_ms.map(timestamp),
    }
}

pub fn l402_token(t: crate::model::L402TokenRecord, paid: bool) -> coffer_client::L402Token {
    coffer_client::L402Token {
        authorization: crate::gateway::l402::authorization(&t),
        token: t.token,
        origin: t.origin,
        scope: t.scope,
        amount_msat: t.amount.as_u64(),
        payment_id: t.payment_id,
        expires_at: timestamp(t.expires_at_ms),
        paid,
    }
}

pub fn webhook(w: WebhookRecord) -> Webhook {
    Webhook {
        id: w.id,
        agent_id: w.owner,
        url: w.url,
        types: w.types,
        delivered_through: w.state.after_event_id,
        failures: w.state.failures,
        paused: w.state.paused,
        created_at: timestamp(w.created_at_ms),
    }
}

pub fn delivery(d: DeliveryRecord) -> Delivery {
    Delivery {
        event_id: d.event_id,
        attempt: d.attempt,
        status: d.status,
        error: d.error,
        delivered: d.delivered,
        at: timestamp(d.at_ms),
        duration_ms: d.duration_ms,
    }
}
