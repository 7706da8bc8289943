//! Records to wire types.

use crate::io::{AgentRecord, InvoiceRecord, PaymentRecord, StoredInvoiceStatus};
use chrono::{DateTime, SecondsFormat};
use coffer_client::{Agent, Invoice, InvoiceStatus, Payment};

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
    }
}

pub fn invoice(i: InvoiceRecord, now_ms: i64) -> Invoice {
    let status = match i.status {
        StoredInvoiceStatus::Paid => InvoiceStatus::Paid,
        StoredInvoiceStatus::Open if now_ms >= i.expires_at_ms => InvoiceStatus::Expired,
        StoredInvoiceStatus::Open => InvoiceStatus::Open,
    };
    Invoice {
        payment_hash: hex::encode(i.payment_hash),
        bolt11: i.bolt11,
        amount_msat: i.amount.as_u64(),
        memo: i.memo,
        status,
        created_at: timestamp(i.created_at_ms),
        expires_at: timestamp(i.expires_at_ms),
        paid_at: i.paid_at_ms.map(timestamp),
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
    }
}
