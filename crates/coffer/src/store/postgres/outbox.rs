//! The outbox's consumers on PostgreSQL: reading events, leases, webhooks
//! and their delivery log; the same statements as SQLite's
//! (`sqlite/outbox.rs`), translated. Called by the `Store`
//! implementation in the parent module, inside its reads or write batches.
//!
//! Event ids increase in commit order here too: every write batch holds the
//! one write lock, so a reader never sees id N+1 committed before id N.

use super::{Conn, Error, PAGE_ROWS_MAX};
use crate::store::{DeliveryRecord, EventRecord, READ_EVENTS_MAX, WebhookRecord, WebhookState};
use ::postgres::Row;

pub fn events(conn: &mut Conn, after_id: i64, agent_id: Option<&str>, limit: u32) -> Result<Vec<EventRecord>, Error> {
    let limit = i64::from(limit.clamp(1, READ_EVENTS_MAX));
    let rows = match agent_id {
        None => conn.query(
            "SELECT id, type, agent_id, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after_id, &limit],
        )?,
        Some(agent) => conn.query(
            "SELECT id, type, agent_id, data, created_at FROM events WHERE agent_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
            &[&agent, &after_id, &limit],
        )?,
    };
    rows.iter().map(event_from_row).collect()
}

fn event_from_row(row: &Row) -> Result<EventRecord, Error> {
    let data: String = row.try_get(3)?;
    Ok(EventRecord {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        agent_id: row.try_get(2)?,
        data: serde_json::from_str(&data).map_err(|e| Error::internal("an event's data", e))?,
        created_at_ms: row.try_get(4)?,
    })
}

pub fn newest_event_id(conn: &mut Conn) -> Result<i64, Error> {
    let row = conn.query_opt("SELECT COALESCE(MAX(id), 0)::BIGINT FROM events", &[])?;
    Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
}

pub fn claim_lease(conn: &mut Conn, name: &str, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<i64>, Error> {
    let until_ms = now_ms.saturating_add(lease_ms);
    let row = conn.query_opt(
        "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
         WHERE leases.owner = excluded.owner OR leases.expires_at <= $4 \
         RETURNING cursor",
        &[&name, &owner, &until_ms, &now_ms],
    )?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub fn advance_lease(conn: &mut Conn, name: &str, owner: &str, cursor: i64) -> Result<bool, Error> {
    Ok(conn.execute("UPDATE leases SET cursor = $3 WHERE name = $1 AND owner = $2", &[&name, &owner, &cursor])? == 1)
}

const WEBHOOK_COLUMNS: &str =
    "id, owner, url, types, after_event_id, failures, paused, next_attempt_at, created_at FROM webhooks";

pub fn create_webhook(conn: &mut Conn, w: &WebhookRecord) -> Result<(), Error> {
    let types = serde_json::to_string(&w.types).map_err(|e| Error::internal("a webhook's types", e))?;
    conn.execute(
        "INSERT INTO webhooks (id, owner, url, types, after_event_id, failures, paused, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &w.id,
            &w.owner,
            &w.url,
            &types,
            &w.state.after_event_id,
            &i64::from(w.state.failures),
            &w.state.paused,
            &w.state.next_attempt_at_ms,
            &w.created_at_ms,
        ],
    )?;
    Ok(())
}

pub fn webhooks(conn: &mut Conn, owner: Option<&str>) -> Result<Vec<WebhookRecord>, Error> {
    let rows = match owner {
        None => conn.query(&format!("SELECT {WEBHOOK_COLUMNS} ORDER BY created_at"), &[])?,
        Some(owner) => {
            conn.query(&format!("SELECT {WEBHOOK_COLUMNS} WHERE owner = $1 ORDER BY created_at"), &[&owner])?
        }
    };
    rows.iter().map(webhook_from_row).collect()
}

pub fn webhook(conn: &mut Conn, id: &str) -> Result<Option<WebhookRecord>, Error> {
    conn.query_opt(&format!("SELECT {WEBHOOK_COLUMNS} WHERE id = $1"), &[&id])?
        .as_ref()
        .map(webhook_from_row)
        .transpose()
}

fn webhook_from_row(row: &Row) -> Result<WebhookRecord, Error> {
    let types: String = row.try_get(3)?;
    let failures: i64 = row.try_get(5)?;
    Ok(WebhookRecord {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        url: row.try_get(2)?,
        types: serde_json::from_str(&types).map_err(|e| Error::internal("a webhook's types", e))?,
        state: WebhookState {
            after_event_id: row.try_get(4)?,
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            paused: row.try_get(6)?,
            next_attempt_at_ms: row.try_get(7)?,
        },
        created_at_ms: row.try_get(8)?,
    })
}

pub fn delete_webhook(conn: &mut Conn, id: &str) -> Result<bool, Error> {
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = $1", &[&id])?;
    Ok(conn.execute("DELETE FROM webhooks WHERE id = $1", &[&id])? == 1)
}

pub fn set_webhook_state(conn: &mut Conn, id: &str, state: WebhookState) -> Result<(), Error> {
    let changed = conn.execute(
        "UPDATE webhooks SET after_event_id = $2, failures = $3, paused = $4, next_attempt_at = $5 WHERE id = $1",
        &[&id, &state.after_event_id, &i64::from(state.failures), &state.paused, &state.next_attempt_at_ms],
    )?;
    if changed == 0 {
        return Err(Error::NotFound("webhook"));
    }
    Ok(())
}

pub fn insert_delivery(conn: &mut Conn, d: &DeliveryRecord) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, status, error, delivered, at, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &d.webhook_id,
            &d.event_id,
            &i64::from(d.attempt),
            &d.status.map(i64::from),
            &d.error,
            &d.delivered,
            &d.at_ms,
            &i64::try_from(d.duration_ms).unwrap_or(i64::MAX),
        ],
    )?;
    Ok(())
}

pub fn deliveries(conn: &mut Conn, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error> {
    let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
    let rows = conn.query(
        "SELECT webhook_id, event_id, attempt, status, error, delivered, at, duration_ms FROM webhook_deliveries \
         WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        &[&webhook_id, &limit],
    )?;
    rows.iter()
        .map(|row| {
            let (attempt, status, duration_ms): (i64, Option<i64>, i64) =
                (row.try_get(2)?, row.try_get(3)?, row.try_get(7)?);
            Ok(DeliveryRecord {
                webhook_id: row.try_get(0)?,
                event_id: row.try_get(1)?,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                status: status.and_then(|s| u16::try_from(s).ok()),
                error: row.try_get(4)?,
                delivered: row.try_get(5)?,
                at_ms: row.try_get(6)?,
                duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
            })
        })
        .collect()
}
