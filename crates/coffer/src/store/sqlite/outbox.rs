//! The outbox's consumers on SQLite: reading events, leases, webhooks and
//! their delivery log. Called by the `Store` implementation in the parent
//! module, inside its read or write transactions.

use super::{Error, PAGE_ROWS_MAX};
use crate::store::{DeliveryRecord, EventRecord, READ_EVENTS_MAX, WebhookRecord, WebhookState};
use rusqlite::{Connection, OptionalExtension, Row, params};

pub fn events(conn: &Connection, after_id: i64, agent_id: Option<&str>, limit: u32) -> Result<Vec<EventRecord>, Error> {
    let limit = i64::from(limit.clamp(1, READ_EVENTS_MAX));
    // Two statements, so each uses its index: (id) for all events,
    // (agent_id, id) for one agent's.
    let mut stmt = match agent_id {
        None => conn.prepare_cached(
            "SELECT id, type, agent_id, data, created_at FROM events WHERE id > ?1 AND ?2 IS NULL ORDER BY id LIMIT ?3",
        )?,
        Some(_) => conn.prepare_cached(
            "SELECT id, type, agent_id, data, created_at FROM events WHERE agent_id = ?2 AND id > ?1 \
             ORDER BY id LIMIT ?3",
        )?,
    };
    let rows = stmt.query_map(params![after_id, agent_id, limit], event_from_row)?;
    rows.map(|r| r?).collect()
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Result<EventRecord, Error>> {
    let (id, kind, agent_id, data, created_at_ms): (i64, String, Option<String>, String, i64) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
    Ok(serde_json::from_str(&data).map_err(|e| Error::internal("an event's data", e)).map(|data| EventRecord {
        id,
        kind,
        agent_id,
        data,
        created_at_ms,
    }))
}

pub fn claim_lease(
    conn: &Connection,
    name: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<i64>, Error> {
    let until_ms = now_ms.saturating_add(lease_ms);
    // One statement: take it when free or expired, renew it when ours.
    let mut stmt = conn.prepare_cached(
        "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
         WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4 \
         RETURNING cursor",
    )?;
    Ok(stmt.query_row(params![name, owner, until_ms, now_ms], |r| r.get(0)).optional()?)
}

pub fn advance_lease(conn: &Connection, name: &str, owner: &str, cursor: i64) -> Result<bool, Error> {
    let mut stmt = conn.prepare_cached("UPDATE leases SET cursor = ?3 WHERE name = ?1 AND owner = ?2")?;
    Ok(stmt.execute(params![name, owner, cursor])? == 1)
}

const WEBHOOK_COLUMNS: &str =
    "id, owner, url, types, after_event_id, failures, paused, next_attempt_at, created_at FROM webhooks";

pub fn create_webhook(conn: &Connection, w: &WebhookRecord) -> Result<(), Error> {
    let types = serde_json::to_string(&w.types).map_err(|e| Error::internal("a webhook's types", e))?;
    conn.execute(
        "INSERT INTO webhooks (id, owner, url, types, after_event_id, failures, paused, next_attempt_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            w.id,
            w.owner,
            w.url,
            types,
            w.state.after_event_id,
            w.state.failures,
            w.state.paused,
            w.state.next_attempt_at_ms,
            w.created_at_ms
        ],
    )?;
    Ok(())
}

pub fn webhooks(conn: &Connection, owner: Option<&str>) -> Result<Vec<WebhookRecord>, Error> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at"))?;
    let rows = stmt.query_map([owner], webhook_from_row)?;
    rows.map(|r| r?).collect()
}

pub fn webhook(conn: &Connection, id: &str) -> Result<Option<WebhookRecord>, Error> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} WHERE id = ?1"))?;
    stmt.query_row([id], webhook_from_row).optional()?.transpose()
}

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<Result<WebhookRecord, Error>> {
    let (id, owner, url, types): (String, Option<String>, String, String) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    let (after_event_id, failures, paused, next_attempt_at_ms, created_at_ms): (i64, u32, bool, i64, i64) =
        (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?, row.get(8)?);
    let state = WebhookState { after_event_id, failures, paused, next_attempt_at_ms };
    Ok(serde_json::from_str(&types).map_err(|e| Error::internal("a webhook's types", e)).map(|types| WebhookRecord {
        id,
        owner,
        url,
        types,
        state,
        created_at_ms,
    }))
}

pub fn delete_webhook(conn: &Connection, id: &str) -> Result<bool, Error> {
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [id])?;
    Ok(conn.execute("DELETE FROM webhooks WHERE id = ?1", [id])? == 1)
}

pub fn set_webhook_state(conn: &Connection, id: &str, state: WebhookState) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE webhooks SET after_event_id = ?2, failures = ?3, paused = ?4, next_attempt_at = ?5 WHERE id = ?1",
    )?;
    let changed =
        stmt.execute(params![id, state.after_event_id, state.failures, state.paused, state.next_attempt_at_ms])?;
    if changed == 0 {
        return Err(Error::NotFound("webhook"));
    }
    Ok(())
}

pub fn insert_delivery(conn: &Connection, d: &DeliveryRecord) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, status, error, delivered, at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let duration_ms = i64::try_from(d.duration_ms).unwrap_or(i64::MAX);
    stmt.execute(params![d.webhook_id, d.event_id, d.attempt, d.status, d.error, d.delivered, d.at_ms, duration_ms])?;
    Ok(())
}

pub fn deliveries(conn: &Connection, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT webhook_id, event_id, attempt, status, error, delivered, at, duration_ms FROM webhook_deliveries \
         WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
    let rows = stmt.query_map(params![webhook_id, limit], |row| {
        let duration_ms: i64 = row.get(7)?;
        Ok(DeliveryRecord {
            webhook_id: row.get(0)?,
            event_id: row.get(1)?,
            attempt: row.get(2)?,
            status: row.get(3)?,
            error: row.get(4)?,
            delivered: row.get(5)?,
            at_ms: row.get(6)?,
            duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
