//! The wire JSON of every event kind, pinned: `type`, `agent_id` and `data`
//! as the outbox stores them and every consumer receives them. The
//! expected values are written by hand from what the gateway wrote before
//! events were typed; a change here is a change of the contract.

use super::*;
use crate::events::{nats, redis, webhook, wire};
use crate::model::{ApprovalStatus, EscrowKind, EscrowStatus, EventRecord, IncomingStatus, SessionStatus};
use coffer_client::Outcome;
use coffer_client::{AcceptRooms, PaymentStatus};
use coffer_core::AccountId;
use coffer_core::policy::TripCode;
use std::collections::BTreeSet;

const HASH: [u8; 32] = [0xab; 32];

fn hash_hex() -> String {
    "ab".repeat(32)
}

fn settlement() -> Settlement {
    Settlement {
        payment_id: "pay_1".into(),
        payment_hash: HASH,
        amount: Msat::new(21_000),
        payer_agent_id: "agt_a".into(),
        payee_agent_id: "agt_b".into(),
        key_id: "key_a".into(),
        purpose: "a coffee".into(),
    }
}

fn outgoing(status: PaymentStatus, fee: u64, detail: Option<&str>) -> Outgoing {
    Outgoing {
        payment: PaymentRecord {
            id: "pay_2".into(),
            agent_id: "agt_a".into(),
            payment_hash: HASH,
            amount: Msat::new(40_000),
            fee: Msat::new(fee),
            status,
            purpose: "an API call".into(),
            payee_agent_id: None,
            preimage: None,
            created_at_ms: 1_700_000_000_000,
            detail: detail.map(str::to_owned),
            refunded: Msat::ZERO,
            attribution: Default::default(),
        },
        fee_limit: Msat::new(400),
    }
}

fn denied(payee: DeniedPayee) -> Denied {
    Denied {
        payment_hash: HASH,
        amount: Msat::new(60_000),
        payer_agent_id: "agt_a".into(),
        payee,
        code: "budget-exceeded",
        message: "over the hourly budget".into(),
        purpose: "too much".into(),
    }
}

fn held_inside() -> ApprovalRecord {
    ApprovalRecord {
        id: "apr_1".into(),
        agent_id: "agt_a".into(),
        key_id: "key_a".into(),
        payment_hash: HASH,
        bolt11: "lnbcrt1".into(),
        amount: Msat::new(300_000),
        purpose: "a big one".into(),
        payee_agent_id: Some("agt_b".into()),
        status: ApprovalStatus::Pending,
        created_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_000_900_000,
        decided_at_ms: None,
        decided_by: None,
        payment_id: None,
        fee_limit: Msat::ZERO,
        payee_node_hex: None,
        escrow: None,
        attribution: Default::default(),
    }
}

fn decided_outside() -> ApprovalRecord {
    ApprovalRecord {
        payee_agent_id: None,
        payee_node_hex: Some("02cd".into()),
        fee_limit: Msat::new(3_000),
        status: ApprovalStatus::Approved,
        decided_at_ms: Some(1_700_000_100_000),
        decided_by: Some("operator".into()),
        payment_id: Some("pay_1".into()),
        ..held_inside()
    }
}

fn incoming() -> IncomingRecord {
    IncomingRecord {
        payment_id: "pay_1".into(),
        payee_agent_id: "agt_b".into(),
        payer_agent_id: "agt_a".into(),
        amount: Msat::new(21_000),
        status: IncomingStatus::Accepted,
        created_at_ms: 1_700_000_000_000,
        decided_at_ms: Some(1_700_000_001_000),
    }
}

fn webhook_change(owner: Option<&str>, failures: u32, paused: bool) -> WebhookChange {
    WebhookChange {
        webhook_id: "wh_1".into(),
        owner: owner.map(str::to_owned),
        types: vec!["payment.succeeded".into(), "invoice.paid".into()],
        failures,
        paused,
    }
}

fn notice(payee: &str, room_id: Option<&str>) -> InvoiceNotice {
    InvoiceNotice {
        payment_hash: HASH,
        payee: payee.into(),
        amount: Msat::new(21_000),
        expires_at_ms: 1_700_003_600_000,
        room_id: room_id.map(str::to_owned),
    }
}

/// Each event with its expected `(type, agent_id, data)`: every variant at
/// least once, and each shape a kind has.
fn cases() -> Vec<(Event, &'static str, Option<&'static str>, Value)> {
    let h = hash_hex();
    let settled = json!({
        "payment_id": "pay_1", "payment_hash": h, "amount_msat": 21_000, "fee_msat": 0,
        "payer_agent_id": "agt_a", "payee_agent_id": "agt_b", "key_id": "key_a", "purpose": "a coffee",
    });
    let policy: Policy = serde_json::from_value(json!({"max_payment_msat": 50_000})).unwrap();
    let settings = ChatSettings {
        auto_pay_from: vec!["agt_b".into()],
        auto_pay_max_msat: 5_000,
        require_acknowledgment: true,
        accept_rooms: AcceptRooms::Nobody,
    };
    let mut all = vec![
        (
            Event::AgentCreated { agent_id: "agt_a".into(), name: "alice".into(), parent_id: None },
            "agent.created",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "name": "alice", "parent_id": null}),
        ),
        (
            Event::AgentCreated { agent_id: "agt_c".into(), name: "carol".into(), parent_id: Some("agt_a".into()) },
            "agent.created",
            Some("agt_c"),
            json!({"agent_id": "agt_c", "name": "carol", "parent_id": "agt_a"}),
        ),
        (
            Event::KeyCreated { agent_id: "agt_a".into(), key_id: "key_r".into(), scope: Scope::Receive },
            "key.created",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "key_id": "key_r", "scope": "receive"}),
        ),
        (
            Event::KeyRevoked { agent_id: "agt_a".into(), key_id: "key_r".into() },
            "key.revoked",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "key_id": "key_r"}),
        ),
        (
            Event::TransferMint(Posted {
                transfer_id: 5,
                transfer: Transfer { debit: AccountId::OUTSIDE, credit: AccountId::TREASURY, amount: Msat::new(1_000) },
            }),
            "transfer.mint",
            None,
            json!({"transfer_id": 5, "debit": "outside", "credit": "treasury", "amount_msat": 1_000, "kind": "mint"}),
        ),
        (
            Event::TransferFund {
                agent_id: "agt_a".into(),
                posted: Posted {
                    transfer_id: 6,
                    transfer: Transfer { debit: AccountId::TREASURY, credit: AccountId(100), amount: Msat::new(2_500) },
                },
            },
            "transfer.fund",
            Some("agt_a"),
            json!({"transfer_id": 6, "debit": "treasury", "credit": "wallet#100", "amount_msat": 2_500, "kind": "fund"}),
        ),
        (
            Event::InvoiceCreated(notice("agt_b", None)),
            "invoice.created",
            Some("agt_b"),
            json!({
                "payment_hash": h, "agent_id": "agt_b", "amount_msat": 21_000,
                "expires_at_ms": 1_700_003_600_000_i64, "room_id": null,
            }),
        ),
        (
            Event::InvoiceCreated(notice("treasury", None)),
            "invoice.created",
            None,
            json!({
                "payment_hash": h, "agent_id": "treasury", "amount_msat": 21_000,
                "expires_at_ms": 1_700_003_600_000_i64, "room_id": null,
            }),
        ),
        (
            Event::InvoiceExpired(notice("agt_b", Some("room_1"))),
            "invoice.expired",
            Some("agt_b"),
            json!({
                "payment_hash": h, "payee": "agt_b", "amount_msat": 21_000,
                "expires_at_ms": 1_700_003_600_000_i64, "room_id": "room_1",
            }),
        ),
        (
            Event::InvoiceExpired(notice("treasury", None)),
            "invoice.expired",
            None,
            json!({
                "payment_hash": h, "payee": "treasury", "amount_msat": 21_000,
                "expires_at_ms": 1_700_003_600_000_i64, "room_id": null,
            }),
        ),
        (Event::InvoicePaid(Paid::Internal(settlement())), "invoice.paid", Some("agt_b"), settled.clone()),
        (
            Event::InvoicePaid(Paid::FromOutside(Deposit {
                payment_hash: HASH,
                amount: Msat::new(8_000),
                payee: "agt_b".into(),
                transfer_id: 9,
            })),
            "invoice.paid",
            Some("agt_b"),
            json!({"payment_hash": h, "amount_msat": 8_000, "payee": "agt_b", "transfer_id": 9, "from": "outside"}),
        ),
        (
            Event::InvoicePaid(Paid::FromOutside(Deposit {
                payment_hash: HASH,
                amount: Msat::new(8_000),
                payee: "treasury".into(),
                transfer_id: 10,
            })),
            "invoice.paid",
            None,
            json!({"payment_hash": h, "amount_msat": 8_000, "payee": "treasury", "transfer_id": 10, "from": "outside"}),
        ),
        (
            Event::PaymentPending(outgoing(PaymentStatus::Pending, 0, Some("sent to the Lightning backend"))),
            "payment.pending",
            Some("agt_a"),
            json!({
                "payment_id": "pay_2", "payment_hash": h, "amount_msat": 40_000, "fee_msat": 0,
                "fee_limit_msat": 400, "payer_agent_id": "agt_a", "status": "pending",
                "detail": "sent to the Lightning backend", "purpose": "an API call",
            }),
        ),
        (Event::PaymentSucceeded(Succeeded::Internal(settlement())), "payment.succeeded", Some("agt_a"), settled),
        (
            Event::PaymentSucceeded(Succeeded::Outside(outgoing(PaymentStatus::Succeeded, 7, None))),
            "payment.succeeded",
            Some("agt_a"),
            json!({
                "payment_id": "pay_2", "payment_hash": h, "amount_msat": 40_000, "fee_msat": 7,
                "fee_limit_msat": 400, "payer_agent_id": "agt_a", "status": "succeeded",
                "detail": null, "purpose": "an API call",
            }),
        ),
        (
            Event::PaymentFailed(outgoing(PaymentStatus::Failed, 0, Some("no route"))),
            "payment.failed",
            Some("agt_a"),
            json!({
                "payment_id": "pay_2", "payment_hash": h, "amount_msat": 40_000, "fee_msat": 0,
                "fee_limit_msat": 400, "payer_agent_id": "agt_a", "status": "failed",
                "detail": "no route", "purpose": "an API call",
            }),
        ),
        (
            Event::PaymentDenied(denied(DeniedPayee::Agent("agt_b".into()))),
            "payment.denied",
            Some("agt_a"),
            json!({
                "payment_hash": h, "amount_msat": 60_000, "payer_agent_id": "agt_a", "payee_agent_id": "agt_b",
                "code": "budget-exceeded", "message": "over the hourly budget", "purpose": "too much",
            }),
        ),
        (
            Event::PaymentDenied(denied(DeniedPayee::Node("02cd".into()))),
            "payment.denied",
            Some("agt_a"),
            json!({
                "payment_hash": h, "amount_msat": 60_000, "payer_agent_id": "agt_a", "payee": "node:02cd",
                "code": "budget-exceeded", "message": "over the hourly budget", "purpose": "too much",
            }),
        ),
        (
            Event::PaymentHeld(held_inside()),
            "payment.held",
            Some("agt_a"),
            json!({
                "approval_id": "apr_1", "agent_id": "agt_a", "payment_hash": h, "amount_msat": 300_000,
                "fee_limit_msat": 0, "payee": "agent:agt_b", "purpose": "a big one", "status": "pending",
                "expires_at_ms": 1_700_000_900_000_i64, "payment_id": null,
            }),
        ),
        (
            Event::ApprovalDecided(decided_outside()),
            "approval.decided",
            Some("agt_a"),
            json!({
                "approval_id": "apr_1", "agent_id": "agt_a", "payment_hash": h, "amount_msat": 300_000,
                "fee_limit_msat": 3_000, "payee": "node:02cd", "purpose": "a big one", "status": "approved",
                "expires_at_ms": 1_700_000_900_000_i64, "payment_id": "pay_1",
            }),
        ),
        (
            Event::ApprovalDecided(ApprovalRecord { payee_agent_id: None, ..held_inside() }),
            "approval.decided",
            Some("agt_a"),
            json!({
                "approval_id": "apr_1", "agent_id": "agt_a", "payment_hash": h, "amount_msat": 300_000,
                "fee_limit_msat": 0, "payee": null, "purpose": "a big one", "status": "pending",
                "expires_at_ms": 1_700_000_900_000_i64, "payment_id": null,
            }),
        ),
        (
            Event::IncomingAccepted(incoming()),
            "incoming.accepted",
            Some("agt_b"),
            json!({"payment_id": "pay_1", "payee_agent_id": "agt_b", "payer_agent_id": "agt_a", "amount_msat": 21_000}),
        ),
        (
            Event::IncomingRejected(IncomingRecord { status: IncomingStatus::Rejected, ..incoming() }),
            "incoming.rejected",
            Some("agt_b"),
            json!({"payment_id": "pay_1", "payee_agent_id": "agt_b", "payer_agent_id": "agt_a", "amount_msat": 21_000}),
        ),
        (
            Event::PolicyUpdated { agent_id: "agt_a".into(), policy: Some(policy) },
            "policy.updated",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "policy": {"max_payment_msat": 50_000}}),
        ),
        (
            Event::PolicyUpdated { agent_id: "agt_a".into(), policy: None },
            "policy.updated",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "policy": null}),
        ),
        (
            Event::AgentFrozen { agent_id: "agt_a".into(), reason: "automatic trip (spend-burst): fast".into() },
            "agent.frozen",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "reason": "automatic trip (spend-burst): fast"}),
        ),
        (
            Event::AgentUnfrozen { agent_id: "agt_a".into() },
            "agent.unfrozen",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "reason": null}),
        ),
        (
            Event::BreakerTripped { agent_id: "agt_a".into(), code: TripCode::SpendBurst, message: "fast".into() },
            "breaker.tripped",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "code": "spend-burst", "message": "fast"}),
        ),
        (Event::BreakerHalted { halted: true }, "breaker.halted", None, json!({"halted": true})),
        (Event::BreakerHalted { halted: false }, "breaker.halted", None, json!({"halted": false})),
        (
            Event::RoomCreated {
                room_id: "room_1".into(),
                name: "lobby".into(),
                members: vec!["agt_a".into(), "operator".into()],
            },
            "room.created",
            None,
            json!({"room_id": "room_1", "name": "lobby", "members": ["agt_a", "operator"]}),
        ),
        (
            Event::RoomMemberAdded { room_id: "room_1".into(), member: "agt_b".into() },
            "room.member_added",
            None,
            json!({"room_id": "room_1", "member": "agt_b"}),
        ),
        (
            Event::RoomMemberRemoved { room_id: "room_1".into(), member: "agt_b".into() },
            "room.member_removed",
            None,
            json!({"room_id": "room_1", "member": "agt_b"}),
        ),
        (
            Event::MessagePosted {
                room_id: "room_1".into(),
                message_id: 12,
                sender: "agt_a".into(),
                kind: MessageKind::PaymentRequest,
            },
            "message.posted",
            None,
            json!({"room_id": "room_1", "message_id": 12, "sender": "agt_a", "kind": "payment_request"}),
        ),
        (
            Event::MessagePosted {
                room_id: "room_1".into(),
                message_id: 13,
                sender: "operator".into(),
                kind: MessageKind::Text,
            },
            "message.posted",
            None,
            json!({"room_id": "room_1", "message_id": 13, "sender": "operator", "kind": "text"}),
        ),
        (
            Event::ChatSettingsUpdated { agent_id: "agt_a".into(), settings },
            "chat.settings_updated",
            Some("agt_a"),
            json!({"agent_id": "agt_a", "settings": {
                "auto_pay_from": ["agt_b"], "auto_pay_max_msat": 5_000, "require_acknowledgment": true,
                "accept_rooms": "nobody",
            }}),
        ),
        (
            Event::WebhookCreated(webhook_change(Some("agt_a"), 0, false)),
            "webhook.created",
            Some("agt_a"),
            json!({
                "webhook_id": "wh_1", "agent_id": "agt_a", "types": ["payment.succeeded", "invoice.paid"],
                "failures": 0, "paused": false,
            }),
        ),
        (
            Event::WebhookPaused(webhook_change(None, 10, true)),
            "webhook.paused",
            None,
            json!({
                "webhook_id": "wh_1", "agent_id": null, "types": ["payment.succeeded", "invoice.paid"],
                "failures": 10, "paused": true,
            }),
        ),
        (
            Event::WebhookResumed(webhook_change(Some("agt_a"), 0, false)),
            "webhook.resumed",
            Some("agt_a"),
            json!({
                "webhook_id": "wh_1", "agent_id": "agt_a", "types": ["payment.succeeded", "invoice.paid"],
                "failures": 0, "paused": false,
            }),
        ),
        (
            Event::WebhookDeleted(WebhookChange { types: Vec::new(), ..webhook_change(None, 3, false) }),
            "webhook.deleted",
            None,
            json!({"webhook_id": "wh_1", "agent_id": null, "types": [], "failures": 3, "paused": false}),
        ),
    ];
    all.extend(commerce_cases());
    all
}

fn escrow(kind: EscrowKind, status: EscrowStatus, resolved_by: Option<&str>) -> EscrowRecord {
    EscrowRecord {
        payment_id: "pay_1".into(),
        kind,
        payment_hash: HASH,
        payer_agent_id: "agt_payer".into(),
        payee_agent_id: "agt_payee".into(),
        amount: Msat::new(5_000),
        status,
        on_timeout: if kind == EscrowKind::Hold { Outcome::Refund } else { Outcome::Release },
        deadline_at_ms: 1_700_000_600_000,
        created_at_ms: 1_700_000_000_000,
        resolved_at_ms: resolved_by.map(|_| 1_700_000_100_000),
        resolved_by: resolved_by.map(str::to_owned),
    }
}

fn escrow_json(kind: &str, status: &str, on_timeout: &str, resolved_by: Option<&str>) -> Value {
    json!({
        "payment_id": "pay_1", "kind": kind, "status": status, "payment_hash": hash_hex(),
        "payer_agent_id": "agt_payer", "payee_agent_id": "agt_payee", "amount_msat": 5_000,
        "deadline_at_ms": 1_700_000_600_000_i64, "on_timeout": on_timeout, "resolved_by": resolved_by,
    })
}

fn session(status: SessionStatus, charged: u64, closed_by: Option<&str>) -> SessionRecord {
    SessionRecord {
        id: "ses_1".into(),
        payer_agent_id: "agt_payer".into(),
        payee_agent_id: "agt_payee".into(),
        max: Msat::new(10_000),
        charged: Msat::new(charged),
        charges: u32::from(charged > 0),
        status,
        purpose: "gpu minutes".into(),
        created_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_003_600_000,
        closed_at_ms: closed_by.map(|_| 1_700_000_200_000),
        closed_by: closed_by.map(str::to_owned),
        attribution: Default::default(),
    }
}

fn session_json(status: &str, charged: u64, closed_by: Option<&str>) -> Value {
    json!({
        "session_id": "ses_1", "payer_agent_id": "agt_payer", "payee_agent_id": "agt_payee",
        "max_msat": 10_000, "charged_msat": charged, "remaining_msat": 10_000 - charged, "status": status,
        "expires_at_ms": 1_700_003_600_000_i64, "purpose": "gpu minutes", "closed_by": closed_by,
    })
}

fn commerce_cases() -> Vec<(Event, &'static str, Option<&'static str>, Value)> {
    let charge = ChargeRecord {
        id: "chg_1".into(),
        session_id: "ses_1".into(),
        amount: Msat::new(2_500),
        memo: "minute 1".into(),
        created_at_ms: 1_700_000_060_000,
    };
    let mut charged = session_json("open", 2_500, None);
    charged["charge_id"] = json!("chg_1");
    charged["amount_msat"] = json!(2_500);
    charged["memo"] = json!("minute 1");
    let mut closed = session_json("closed", 2_500, Some("agt_payee"));
    closed["returned_msat"] = json!(7_500);
    vec![
        (
            Event::InvoiceAccepted(escrow(EscrowKind::Hold, EscrowStatus::Held, None)),
            "invoice.accepted",
            Some("agt_payee"),
            escrow_json("hold", "held", "refund", None),
        ),
        (
            Event::InvoiceCancelled(escrow(EscrowKind::Hold, EscrowStatus::Refunded, Some("agt_payee"))),
            "invoice.cancelled",
            Some("agt_payee"),
            escrow_json("hold", "refunded", "refund", Some("agt_payee")),
        ),
        (
            Event::PaymentEscrowed(escrow(EscrowKind::Escrow, EscrowStatus::Held, None)),
            "payment.escrowed",
            Some("agt_payer"),
            escrow_json("escrow", "held", "release", None),
        ),
        (
            Event::PaymentDisputed(escrow(EscrowKind::Escrow, EscrowStatus::Disputed, None)),
            "payment.disputed",
            Some("agt_payer"),
            escrow_json("escrow", "disputed", "release", None),
        ),
        (
            Event::PaymentReleased(escrow(EscrowKind::Escrow, EscrowStatus::Released, Some("system"))),
            "payment.released",
            Some("agt_payer"),
            escrow_json("escrow", "released", "release", Some("system")),
        ),
        (
            Event::PaymentRefunded(Refunded {
                payment_id: "pay_1".into(),
                payment_hash: HASH,
                amount: Msat::new(1_000),
                refunded_total: Msat::new(3_000),
                payer_agent_id: "agt_payer".into(),
                payee_agent_id: "agt_payee".into(),
                reason: "one item was missing".into(),
                refund_id: Some("ref_1".into()),
            }),
            "payment.refunded",
            Some("agt_payer"),
            json!({
                "payment_id": "pay_1", "payment_hash": hash_hex(), "amount_msat": 1_000, "refunded_msat": 3_000,
                "payer_agent_id": "agt_payer", "payee_agent_id": "agt_payee", "reason": "one item was missing",
                "refund_id": "ref_1",
            }),
        ),
        (
            Event::SessionOpened { agent_id: "agt_payee".into(), session: session(SessionStatus::Open, 0, None) },
            "session.opened",
            Some("agt_payee"),
            session_json("open", 0, None),
        ),
        (
            Event::SessionCharged { session: session(SessionStatus::Open, 2_500, None), charge },
            "session.charged",
            Some("agt_payer"),
            charged,
        ),
        (
            Event::SessionClosed {
                agent_id: "agt_payer".into(),
                session: session(SessionStatus::Closed, 2_500, Some("agt_payee")),
                returned: Msat::new(7_500),
            },
            "session.closed",
            Some("agt_payer"),
            closed,
        ),
        (
            Event::BudgetWarning(crate::events::kind::BudgetWarning {
                agent_id: "agt_parent".into(),
                payer_agent_id: "agt_child".into(),
                crossing: coffer_core::policy::Crossing {
                    window: Some(coffer_core::policy::Window::parse("day").expect("a window")),
                    threshold_percent: 80,
                    spent_msat: Msat::new(8_500),
                    limit_msat: Msat::new(10_000),
                    window_start_ms: Some(1_800_000_000_000),
                    resets_at_ms: Some(1_800_086_400_000),
                },
            }),
            "budget.warning",
            Some("agt_parent"),
            json!({
                "agent_id": "agt_parent", "payer_agent_id": "agt_child", "budget": "day", "kind": "calendar",
                "threshold_percent": 80, "spent_msat": 8_500, "limit_msat": 10_000,
                "window_start_ms": 1_800_000_000_000_i64, "resets_at_ms": 1_800_086_400_000_i64,
            }),
        ),
    ]
}

/// The variant's place in the enum. Exhaustive, without a wildcard: a new
/// variant does not compile until it is named here, and then the test
/// below wants a case for it.
fn variant(event: &Event) -> usize {
    match event {
        Event::AgentCreated { .. } => 0,
        Event::KeyCreated { .. } => 1,
        Event::KeyRevoked { .. } => 2,
        Event::TransferMint(_) => 3,
        Event::TransferFund { .. } => 4,
        Event::InvoiceCreated(_) => 5,
        Event::InvoicePaid(_) => 6,
        Event::InvoiceExpired(_) => 7,
        Event::PaymentPending(_) => 8,
        Event::PaymentSucceeded(_) => 9,
        Event::PaymentFailed(_) => 10,
        Event::PaymentDenied(_) => 11,
        Event::PaymentHeld(_) => 12,
        Event::ApprovalDecided(_) => 13,
        Event::IncomingAccepted(_) => 14,
        Event::IncomingRejected(_) => 15,
        Event::PolicyUpdated { .. } => 16,
        Event::AgentFrozen { .. } => 17,
        Event::AgentUnfrozen { .. } => 18,
        Event::BreakerTripped { .. } => 19,
        Event::BreakerHalted { .. } => 20,
        Event::RoomCreated { .. } => 21,
        Event::RoomMemberAdded { .. } => 22,
        Event::RoomMemberRemoved { .. } => 23,
        Event::MessagePosted { .. } => 24,
        Event::ChatSettingsUpdated { .. } => 25,
        Event::WebhookCreated(_) => 26,
        Event::WebhookPaused(_) => 27,
        Event::WebhookResumed(_) => 28,
        Event::WebhookDeleted(_) => 29,
        Event::InvoiceAccepted(_) => 30,
        Event::InvoiceCancelled(_) => 31,
        Event::PaymentEscrowed(_) => 32,
        Event::PaymentDisputed(_) => 33,
        Event::PaymentReleased(_) => 34,
        Event::PaymentRefunded(_) => 35,
        Event::SessionOpened { .. } => 36,
        Event::SessionCharged { .. } => 37,
        Event::SessionClosed { .. } => 38,
        Event::BudgetWarning(_) => 39,
    }
}
const VARIANTS: usize = 40;

#[test]
fn every_kind_writes_exactly_its_wire_json() {
    for (event, kind, agent_id, data) in cases() {
        assert_eq!(event.kind(), kind, "{event:?}");
        assert_eq!(event.agent_id(), agent_id, "{kind}: {event:?}");
        assert_eq!(event.data(), data, "{kind}: {event:?}");
    }
}

#[test]
fn kinds_name_every_variant_once() {
    let unique: BTreeSet<&str> = KINDS.iter().copied().collect();
    assert_eq!(unique.len(), KINDS.len(), "a kind is listed twice: {KINDS:?}");
    let cases = cases();
    let covered: BTreeSet<usize> = cases.iter().map(|(e, ..)| variant(e)).collect();
    assert_eq!(covered, (0..VARIANTS).collect(), "a variant has no case in cases()");
    let kinds: BTreeSet<&str> = cases.iter().map(|(e, ..)| e.kind()).collect();
    assert_eq!(kinds, unique, "KINDS and the variants' kinds differ");
    assert_eq!(KINDS.len(), VARIANTS, "one kind per variant");
    for kind in KINDS {
        assert!(kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'), "{kind}");
    }
}

#[test]
fn webhook_changes_name_their_kinds() {
    let kinds: Vec<&str> = WebhookEvent::ALL.iter().map(|which| which.kind()).collect();
    assert_eq!(kinds, ["webhook.created", "webhook.paused", "webhook.resumed", "webhook.deleted"]);
}

/// The README lists every kind, and nothing else.
#[test]
fn the_readme_lists_every_kind() {
    let readme = include_str!("../../../../README.md");
    let start = readme.find("in the same transaction (an outbox): ").expect("the README's list of events");
    let end = start + readme[start..].find("Ids increase").expect("the end of the list");
    let listed: BTreeSet<&str> = readme[start..end].split('`').skip(1).step_by(2).collect();
    assert_eq!(listed, KINDS.iter().copied().collect::<BTreeSet<_>>());
}

/// One event through every publisher's own encoding: the NATS subject, the
/// Redis stream entry and the webhook body.
#[test]
fn one_event_on_the_buses_and_in_a_webhook_body() {
    let event = Event::PaymentSucceeded(Succeeded::Internal(settlement()));
    let record = EventRecord {
        id: 42,
        kind: event.kind().to_owned(),
        agent_id: event.agent_id().map(str::to_owned),
        data: event.data(),
        created_at_ms: 1_700_000_000_000,
    };
    let expected = json!({
        "id": 42, "type": "payment.succeeded", "agent_id": "agt_a", "gateway": "02gateway",
        "created_at": "2023-11-14T22:13:20.000Z",
        "data": {
            "payment_id": "pay_1", "payment_hash": hash_hex(), "amount_msat": 21_000, "fee_msat": 0,
            "payer_agent_id": "agt_a", "payee_agent_id": "agt_b", "key_id": "key_a", "purpose": "a coffee",
        },
    });
    let wired = wire(&record, "02gateway");

    assert_eq!(nats::subject(&wired), "coffer.events.payment.succeeded");
    assert_eq!((nats::STREAM, nats::SUBJECT_PREFIX), ("COFFER_EVENTS", "coffer.events"));

    assert_eq!(redis::STREAM_KEY, "coffer:events");
    let [(id_field, id), (type_field, kind), (event_field, json)] = redis::entry(&wired).unwrap();
    assert_eq!(
        (id_field, id.as_str(), type_field, kind.as_str(), event_field),
        ("id", "42", "type", "payment.succeeded", "event")
    );
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), expected);

    let body = webhook::body(&record, "02gateway");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected);

    // An operator's event has no `agent_id` at all on the wire (not null).
    let halted = Event::BreakerHalted { halted: true };
    let record = EventRecord {
        id: 43,
        kind: halted.kind().to_owned(),
        agent_id: halted.agent_id().map(str::to_owned),
        data: halted.data(),
        created_at_ms: 1_700_000_000_001,
    };
    let body = webhook::body(&record, "02gateway");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({
            "id": 43, "type": "breaker.halted", "gateway": "02gateway", "created_at": "2023-11-14T22:13:20.001Z",
            "data": {"halted": true},
        })
    );
    assert_eq!(nats::subject(&wire(&record, "02gateway")), "coffer.events.breaker.halted");
}
