//! What retention removes, written once for both stores: expired invoices
//! no room shows, events every consumer has read, and the webhook delivery
//! log. The ledger, payments, idempotency keys and the audit chain are never
//! pruned: the balances and `coffer audit` rest on them.
//!
//! The statements are run by the shared row operations (`sql/tx.rs`), so
//! they use the numbered placeholders of all shared SQL (`?1`, `?2`, ...).

/// Rows one statement removes at most: a pass is many short write
/// transactions, never one that holds up the writer.
pub const PRUNE_BATCH_ROWS_MAX: i64 = 1_000;

/// What may go: rows older than these instants (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cutoffs {
    /// Invoices that expired before this.
    pub invoices_expired_before_ms: i64,
    /// Events created before this, once every consumer has read them.
    pub events_before_ms: i64,
    /// Delivery attempts made before this.
    pub deliveries_before_ms: i64,
}

/// Rows removed by one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub invoices: u64,
    pub events: u64,
    pub deliveries: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.invoices + self.events + self.deliveries
    }
}

/// ?1 expired before, ?2 batch. An invoice shown in a room stays: its
/// payment-request card reads it. The partial index `invoices_expired`
/// holds only expired invoices, so this reads no paid or open one.
pub const DELETE_EXPIRED_INVOICES: &str = "DELETE FROM invoices WHERE seq IN \
     (SELECT seq FROM invoices WHERE status = 'expired' AND expires_at < ?1 AND room_id IS NULL \
     ORDER BY expires_at LIMIT ?2)";

/// The newest event every live consumer has read: a bus's cursor (leases
/// other than the webhook dispatcher's, which keeps one cursor per
/// webhook; a lease left unrenewed since before the cutoff belongs to a
/// consumer that is gone) and each active webhook's cursor. ?1 the cutoff.
/// NULL when there is no consumer.
pub const EVENTS_READ_BY_ALL: &str = "SELECT MIN(c) FROM \
     (SELECT cursor AS c FROM leases WHERE name <> 'webhooks' AND expires_at >= ?1 \
     UNION ALL SELECT after_event_id AS c FROM webhooks WHERE NOT paused) AS floors";

/// ?1 read by all, ?2 batch, ?3 created before. It looks at the oldest
/// `?2` events only (ids follow commit order, so the old ones come first).
/// The newest event always stays: PostgreSQL's sealer numbers new events
/// after the highest id left, so with every event gone it would hand out
/// ids a consumer already read past.
pub const DELETE_OLD_EVENTS: &str = "DELETE FROM events WHERE id IN \
     (SELECT id FROM events WHERE id <= ?1 AND id < (SELECT MAX(id) FROM events) ORDER BY id LIMIT ?2) \
     AND created_at < ?3";

/// ?1 batch, ?2 made before.
pub const DELETE_OLD_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE id IN \
     (SELECT id FROM webhook_deliveries ORDER BY id LIMIT ?1) AND at < ?2";
