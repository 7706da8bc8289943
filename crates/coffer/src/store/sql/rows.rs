//! Rows to records: the columns each listing selects and how one row of
//! them reads, once for both stores.

use super::SqlRow;
use crate::error::Error;
use crate::model::*;
use crate::secrets::SecretDigest;
use coffer_client::signing::Alg;
use coffer_client::{PaymentStatus, Scope};
use coffer_core::{AccountId, Balance, Msat};

pub fn msat(v: i64) -> Result<Msat, Error> {
    Msat::from_sql(v).map_err(|e| Error::internal("stored amount", e))
}

pub fn to_sql(m: Msat) -> Result<i64, Error> {
    m.to_sql().map_err(|e| Error::internal("amount", e))
}

pub fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::Internal("a stored hash is not 32 bytes".into()))
}

pub fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::internal("serialising state", e))
}

pub fn from_json<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> Result<T, Error> {
    match text {
        Some(t) => serde_json::from_str(&t).map_err(|e| Error::internal("reading stored state", e)),
        None => Ok(T::default()),
    }
}

pub fn balance(r: &dyn SqlRow, first: usize) -> Result<Balance, Error> {
    Ok(Balance {
        debits_posted: msat(r.i64(first)?)?,
        credits_posted: msat(r.i64(first + 1)?)?,
        debits_pending: msat(r.i64(first + 2)?)?,
    })
}

pub const KEY_COLUMNS: &str =
    "k.id, k.agent_id, a.account_id, k.scope, k.digest, k.expires_at FROM keys k JOIN agents a ON a.id = k.agent_id";

pub fn key(r: &dyn SqlRow) -> Result<KeyRecord, Error> {
    let scope = r.text(3)?;
    Ok(KeyRecord {
        id: r.text(0)?,
        agent_id: r.text(1)?,
        account: AccountId(r.i64(2)?),
        scope: Scope::parse(&scope).ok_or_else(|| Error::Internal(format!("unknown stored scope {scope}")))?,
        digest: SecretDigest(hash32(r.blob(4)?)?),
        expires_at_ms: r.opt_i64(5)?,
    })
}

pub const SIGNING_KEY_COLUMNS: &str =
    "id, agent_id, alg, public_key, required, created_at, revoked_at FROM signing_keys";

pub fn signing_key(r: &dyn SqlRow) -> Result<SigningKeyRecord, Error> {
    let alg = r.text(2)?;
    Ok(SigningKeyRecord {
        id: r.text(0)?,
        agent_id: r.text(1)?,
        alg: Alg::parse(&alg).ok_or_else(|| Error::Internal(format!("unknown stored signing algorithm {alg}")))?,
        public_key: r.blob(3)?,
        required: r.flag(4)?,
        created_at_ms: r.i64(5)?,
        revoked_at_ms: r.opt_i64(6)?,
    })
}

pub const NWC_CONNECTION_COLUMNS: &str = "id, agent_id, name, client_pubkey, methods, notifications, created_at, \
     expires_at, revoked_at, last_used_at FROM nwc_connections";

pub fn nwc_connection(r: &dyn SqlRow) -> Result<NwcConnectionRecord, Error> {
    let methods = r.text(4)?;
    Ok(NwcConnectionRecord {
        id: r.text(0)?,
        agent_id: r.text(1)?,
        name: r.text(2)?,
        client_pubkey: hash32(r.blob(3)?)?,
        methods: NwcMethods::parse_names(&methods)
            .ok_or_else(|| Error::Internal(format!("unknown stored NWC methods {methods}")))?,
        notifications: r.flag(5)?,
        created_at_ms: r.i64(6)?,
        expires_at_ms: r.opt_i64(7)?,
        revoked_at_ms: r.opt_i64(8)?,
        last_used_at_ms: r.opt_i64(9)?,
    })
}

pub const LINK_CODE_COLUMNS: &str = "digest, agent_id, created_at, expires_at FROM link_codes";

pub fn link_code(r: &dyn SqlRow) -> Result<LinkCodeRecord, Error> {
    Ok(LinkCodeRecord {
        digest: hash32(r.blob(0)?)?,
        agent_id: r.text(1)?,
        created_at_ms: r.i64(2)?,
        expires_at_ms: r.i64(3)?,
    })
}

pub const BRIDGE_LINK_COLUMNS: &str = "messenger, user_id, user_name, agent_id, chat_id, linked_at FROM bridge_links";

pub fn bridge_link(r: &dyn SqlRow) -> Result<BridgeLinkRecord, Error> {
    Ok(BridgeLinkRecord {
        messenger: r.text(0)?,
        user_id: r.text(1)?,
        user_name: r.text(2)?,
        agent_id: r.text(3)?,
        chat_id: r.text(4)?,
        linked_at_ms: r.i64(5)?,
    })
}

pub const ROOM_BRIDGE_COLUMNS: &str = "room_id, messenger, chat_id, created_at FROM room_bridges";

pub fn room_bridge(r: &dyn SqlRow) -> Result<RoomBridgeRecord, Error> {
    Ok(RoomBridgeRecord { room_id: r.text(0)?, messenger: r.text(1)?, chat_id: r.text(2)?, created_at_ms: r.i64(3)? })
}

pub const BRIDGE_POST_COLUMNS: &str =
    "messenger, room_id, message_id, chat_id, external_id, payment_hash FROM bridge_posts";

pub fn bridge_post(r: &dyn SqlRow) -> Result<BridgePostRecord, Error> {
    Ok(BridgePostRecord {
        messenger: r.text(0)?,
        room_id: r.text(1)?,
        message_id: r.i64(2)?,
        chat_id: r.text(3)?,
        external_id: r.text(4)?,
        payment_hash: r.opt_blob(5)?.map(hash32).transpose()?,
    })
}

pub const AGENT_COLUMNS: &str = "g.id, g.name, g.account_id, g.created_at, a.debits_posted, a.credits_posted, \
     a.debits_pending, g.parent_id, g.can_create_subagents, g.frozen_reason, g.task \
     FROM agents g JOIN accounts a ON a.id = g.account_id";

pub fn agent(r: &dyn SqlRow) -> Result<AgentRecord, Error> {
    Ok(AgentRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        account: AccountId(r.i64(2)?),
        created_at_ms: r.i64(3)?,
        balance: balance(r, 4)?,
        parent_id: r.opt_text(7)?,
        can_create_subagents: r.flag(8)?,
        frozen_reason: r.opt_text(9)?,
        task: r.opt_text(10)?,
    })
}

/// The columns [`invoice`] reads, without `FROM` (for `RETURNING`). The
/// payee and the payer are account ids in the row; the payer is a text
/// (`paid_by`) only when it is no agent (`outside`).
macro_rules! invoice_columns {
    () => {
        concat!(
            "payment_hash, ",
            agent_of!("invoices.account_id"),
            ", amount, memo, bolt11, preimage, status, created_at, expires_at, paid_at, seq, account_id, \
             COALESCE(",
            agent_of!("invoices.payer"),
            ", invoices.paid_by), room_id, backend, hold_secs, escrow_after_ms, escrow_on_timeout"
        )
    };
}
pub const INVOICE_COLUMNS: &str = concat!(invoice_columns!(), " FROM invoices");
pub const INVOICE_COLUMNS_ONLY: &str = invoice_columns!();

/// An invoice, with its place in the agent's list and the payee's account.
pub fn invoice(r: &dyn SqlRow) -> Result<(InvoiceRecord, i64, AccountId), Error> {
    let payment_hash = hash32(r.blob(0)?)?;
    let record = InvoiceRecord {
        payment_hash,
        agent_id: r.text(1)?,
        amount: msat(r.i64(2)?)?,
        memo: r.text(3)?,
        bolt11: r.packed_bolt11(4, &payment_hash)?,
        preimage: hash32(r.blob(5)?)?,
        status: StoredInvoiceStatus::parse(&r.text(6)?)?,
        created_at_ms: r.i64(7)?,
        expires_at_ms: r.i64(8)?,
        paid_at_ms: r.opt_i64(9)?,
        paid_by: r.opt_text(12)?,
        room_id: r.opt_text(13)?,
        backend: r.opt_text(14)?,
        hold_secs: r.opt_i64(15)?.map(u32::try_from).transpose().map_err(|e| Error::internal("hold_secs", e))?,
        escrow: escrow_terms(r.opt_i64(16)?, r.opt_text(17)?)?,
    };
    Ok((record, r.i64(10)?, AccountId(r.i64(11)?)))
}

/// The columns [`payment`] reads: the payer and the payee are account ids
/// in the row, and an internal payment's preimage is its invoice's.
pub const PAYMENT_COLUMNS: &str = concat!(
    "id, ",
    agent_of!("payments.agent"),
    ", payment_hash, amount, fee, status, purpose, ",
    agent_of!("payments.payee"),
    ", ",
    preimage_read!("payments.preimage", "payments.payment_hash"),
    ", created_at, seq, detail, refunded, task, tags FROM payments"
);

/// A payment, with its place in the agent's list.
pub fn payment(r: &dyn SqlRow) -> Result<(PaymentRecord, i64), Error> {
    let record = PaymentRecord {
        id: r.text(0)?,
        agent_id: r.text(1)?,
        payment_hash: hash32(r.blob(2)?)?,
        amount: msat(r.i64(3)?)?,
        fee: msat(r.i64(4)?)?,
        status: parse_status(&r.text(5)?)?,
        purpose: r.text(6)?,
        payee_agent_id: r.opt_text(7)?,
        preimage: r.opt_blob(8)?.map(hash32).transpose()?,
        created_at_ms: r.i64(9)?,
        detail: r.opt_text(11)?,
        refunded: msat(r.i64(12)?)?,
        attribution: Attribution::from_columns(r.opt_text(13)?, r.opt_text(14)?),
    };
    Ok((record, r.i64(10)?))
}

pub const EXTERNAL_COLUMNS: &str = "payment_id, payment_hash, bolt11, agent_id, account_id, amount, fee_limit, \
     status, checks, created_at FROM external_payments";

pub fn external(r: &dyn SqlRow) -> Result<ExternalPayment, Error> {
    Ok(ExternalPayment {
        payment_id: r.text(0)?,
        payment_hash: hash32(r.blob(1)?)?,
        bolt11: r.text(2)?,
        agent_id: r.text(3)?,
        account: AccountId(r.i64(4)?),
        amount: msat(r.i64(5)?)?,
        fee_limit: msat(r.i64(6)?)?,
        status: parse_status(&r.text(7)?)?,
        checks: r.i64(8)?,
        created_at_ms: r.i64(9)?,
    })
}

pub fn parse_status(status: &str) -> Result<PaymentStatus, Error> {
    match status {
        "succeeded" => Ok(PaymentStatus::Succeeded),
        "pending" => Ok(PaymentStatus::Pending),
        "failed" => Ok(PaymentStatus::Failed),
        "held" => Ok(PaymentStatus::Held),
        "refunded" => Ok(PaymentStatus::Refunded),
        other => Err(Error::Internal(format!("unknown stored payment status {other}"))),
    }
}

pub fn status_str(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Pending => "pending",
        PaymentStatus::Failed => "failed",
        PaymentStatus::Held => "held",
        PaymentStatus::Refunded => "refunded",
    }
}

pub const INCOMING_COLUMNS: &str =
    "payment_id, payee_agent_id, payer_agent_id, amount, status, created_at, decided_at FROM incoming";

pub fn incoming(r: &dyn SqlRow) -> Result<IncomingRecord, Error> {
    let status = r.text(4)?;
    Ok(IncomingRecord {
        payment_id: r.text(0)?,
        payee_agent_id: r.text(1)?,
        payer_agent_id: r.text(2)?,
        amount: msat(r.i64(3)?)?,
        status: IncomingStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown incoming status {status}")))?,
        created_at_ms: r.i64(5)?,
        decided_at_ms: r.opt_i64(6)?,
    })
}

pub const APPROVAL_COLUMNS: &str = "id, agent_id, key_id, payment_hash, bolt11, amount, purpose, payee_agent_id, \
     status, created_at, expires_at, decided_at, decided_by, payment_id, fee_limit, payee_node, escrow_after_ms, escrow_on_timeout, \
     task, tags FROM approvals";

pub fn approval(r: &dyn SqlRow) -> Result<ApprovalRecord, Error> {
    let status = r.text(8)?;
    Ok(ApprovalRecord {
        id: r.text(0)?,
        agent_id: r.text(1)?,
        key_id: r.text(2)?,
        payment_hash: hash32(r.blob(3)?)?,
        bolt11: r.text(4)?,
        amount: msat(r.i64(5)?)?,
        purpose: r.text(6)?,
        payee_agent_id: r.opt_text(7)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown approval status {status}")))?,
        created_at_ms: r.i64(9)?,
        expires_at_ms: r.i64(10)?,
        decided_at_ms: r.opt_i64(11)?,
        decided_by: r.opt_text(12)?,
        payment_id: r.opt_text(13)?,
        fee_limit: msat(r.i64(14)?)?,
        payee_node_hex: r.opt_text(15)?,
        escrow: escrow_terms(r.opt_i64(16)?, r.opt_text(17)?)?,
        attribution: Attribution::from_columns(r.opt_text(18)?, r.opt_text(19)?),
    })
}

/// Escrow terms stored as two columns, both or neither.
fn escrow_terms(release_after_ms: Option<i64>, rule: Option<String>) -> Result<Option<EscrowTerms>, Error> {
    match (release_after_ms, rule) {
        (Some(release_after_ms), Some(rule)) => {
            Ok(Some(EscrowTerms { release_after_ms, on_timeout: parse_outcome(&rule)? }))
        }
        (None, None) => Ok(None),
        _ => Err(Error::Internal("escrow terms stored half".into())),
    }
}

pub const AUDIT_COLUMNS: &str = "seq, body, prev_hash, hash FROM audit_log";

pub fn audit(r: &dyn SqlRow) -> Result<AuditRecord, Error> {
    Ok(AuditRecord {
        seq: r.i64(0)?,
        body: r.packed_json(1)?,
        prev_hash: hash32(r.blob(2)?)?,
        hash: hash32(r.blob(3)?)?,
    })
}

/// An event's kind and agent are integers in its row (schema 18): the
/// texts are read back from `event_kinds` and `agents`, each by its key.
pub const EVENT_COLUMNS: &str = "e.id, (SELECT k.name FROM event_kinds k WHERE k.code = e.kind), \
     (SELECT a.id FROM agents a WHERE a.account_id = e.agent), e.data, e.created_at FROM events e";

pub fn event(r: &dyn SqlRow) -> Result<EventRecord, Error> {
    let data = r.packed_json(3)?;
    Ok(EventRecord {
        id: r.i64(0)?,
        kind: r.text(1)?,
        agent_id: r.opt_text(2)?,
        data: serde_json::from_str(&data).map_err(|e| Error::internal("an event's data", e))?,
        created_at_ms: r.i64(4)?,
    })
}

pub const WEBHOOK_COLUMNS: &str =
    "id, owner, url, types, after_event_id, failures, paused, next_attempt_at, created_at FROM webhooks";

pub fn webhook(r: &dyn SqlRow) -> Result<WebhookRecord, Error> {
    let types = r.text(3)?;
    Ok(WebhookRecord {
        id: r.text(0)?,
        owner: r.opt_text(1)?,
        url: r.text(2)?,
        types: serde_json::from_str(&types).map_err(|e| Error::internal("a webhook's types", e))?,
        state: WebhookState {
            after_event_id: r.i64(4)?,
            failures: u32::try_from(r.i64(5)?).map_err(|e| Error::internal("a webhook's failures", e))?,
            paused: r.flag(6)?,
            next_attempt_at_ms: r.i64(7)?,
        },
        created_at_ms: r.i64(8)?,
    })
}

pub const DELIVERY_COLUMNS: &str =
    "webhook_id, event_id, attempt, status, error, delivered, at, duration_ms FROM webhook_deliveries";

pub fn delivery(r: &dyn SqlRow) -> Result<DeliveryRecord, Error> {
    Ok(DeliveryRecord {
        webhook_id: r.text(0)?,
        event_id: r.i64(1)?,
        attempt: u32::try_from(r.i64(2)?).map_err(|e| Error::internal("a delivery's attempt", e))?,
        status: r.opt_i64(3)?.map(u16::try_from).transpose().map_err(|e| Error::internal("a delivery's status", e))?,
        error: r.opt_text(4)?,
        delivered: r.flag(5)?,
        at_ms: r.i64(6)?,
        duration_ms: u64::try_from(r.i64(7)?).unwrap_or_default(),
    })
}

pub const L402_TOKEN_COLUMNS: &str =
    "agent_id, origin, scope, token, preimage, amount, payment_id, created_at, expires_at FROM l402_tokens";

pub fn l402_token(r: &dyn SqlRow) -> Result<L402TokenRecord, Error> {
    Ok(L402TokenRecord {
        agent_id: r.text(0)?,
        origin: r.text(1)?,
        scope: r.text(2)?,
        token: r.text(3)?,
        preimage: hash32(r.blob(4)?)?,
        amount: msat(r.i64(5)?)?,
        payment_id: r.text(6)?,
        created_at_ms: r.i64(7)?,
        expires_at_ms: r.i64(8)?,
    })
}

pub const ESCROW_COLUMNS: &str = "payment_id, kind, payment_hash, payer_agent_id, payee_agent_id, amount, status, \
     on_timeout, deadline_at, created_at, resolved_at, resolved_by FROM escrows";

pub fn escrow(r: &dyn SqlRow) -> Result<EscrowRecord, Error> {
    Ok(EscrowRecord {
        payment_id: r.text(0)?,
        kind: EscrowKind::parse(&r.text(1)?)?,
        payment_hash: hash32(r.blob(2)?)?,
        payer_agent_id: r.text(3)?,
        payee_agent_id: r.text(4)?,
        amount: msat(r.i64(5)?)?,
        status: EscrowStatus::parse(&r.text(6)?)?,
        on_timeout: parse_outcome(&r.text(7)?)?,
        deadline_at_ms: r.i64(8)?,
        created_at_ms: r.i64(9)?,
        resolved_at_ms: r.opt_i64(10)?,
        resolved_by: r.opt_text(11)?,
    })
}

pub const SESSION_COLUMNS: &str = "id, payer_agent_id, payee_agent_id, max, charged, charges, status, purpose, \
     created_at, expires_at, closed_at, closed_by, seq, task, tags FROM sessions";

/// A session, with its place in the listings.
pub fn session(r: &dyn SqlRow) -> Result<(SessionRecord, i64), Error> {
    let record = SessionRecord {
        id: r.text(0)?,
        payer_agent_id: r.text(1)?,
        payee_agent_id: r.text(2)?,
        max: msat(r.i64(3)?)?,
        charged: msat(r.i64(4)?)?,
        charges: u32::try_from(r.i64(5)?).map_err(|e| Error::internal("a session's charges", e))?,
        status: SessionStatus::parse(&r.text(6)?)?,
        purpose: r.text(7)?,
        created_at_ms: r.i64(8)?,
        expires_at_ms: r.i64(9)?,
        closed_at_ms: r.opt_i64(10)?,
        closed_by: r.opt_text(11)?,
        attribution: Attribution::from_columns(r.opt_text(13)?, r.opt_text(14)?),
    };
    Ok((record, r.i64(12)?))
}

pub const CHARGE_COLUMNS_ONLY: &str = "id, session_id, amount, memo, created_at";
pub const CHARGE_COLUMNS: &str = "id, session_id, amount, memo, created_at FROM session_charges";

pub fn charge(r: &dyn SqlRow) -> Result<ChargeRecord, Error> {
    Ok(ChargeRecord {
        id: r.text(0)?,
        session_id: r.text(1)?,
        amount: msat(r.i64(2)?)?,
        memo: r.text(3)?,
        created_at_ms: r.i64(4)?,
    })
}

pub const REFUND_COLUMNS: &str =
    "id, payment_id, from_agent_id, to_agent_id, amount, reason, payment_refunded, created_at FROM refunds";

pub fn refund(r: &dyn SqlRow) -> Result<RefundRecord, Error> {
    Ok(RefundRecord {
        id: r.text(0)?,
        payment_id: r.text(1)?,
        from_agent_id: r.text(2)?,
        to_agent_id: r.text(3)?,
        amount: msat(r.i64(4)?)?,
        reason: r.text(5)?,
        payment_refunded: msat(r.i64(6)?)?,
        created_at_ms: r.i64(7)?,
    })
}
