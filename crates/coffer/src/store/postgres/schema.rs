//! The PostgreSQL schema, as migrations applied in order; the table
//! `coffer_schema` counts the ones applied.
//!
//! Version N here is the same schema as SQLite's migration N
//! (`sqlite/schema.rs`), translated: INTEGER → BIGINT, BLOB → BYTEA,
//! 0/1 flags → BOOLEAN, rowid keys → identity columns. One version
//! number names one schema on both backends.

use super::pg::Conn;
use crate::error::Error;

/// Any constant: the session lock that makes instances starting together
/// migrate one after another.
const MIGRATION_LOCK: i64 = 0x636f_6666_6572_0001;

const MIGRATIONS: &[&str] = &[
    // 1: the spine.
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('outside', 'treasury', 'fees', 'wallet')),
    debits_posted BIGINT NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted BIGINT NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending BIGINT NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    -- The invariant, asserted by the database too: only `outside` goes negative.
    CHECK (kind = 'outside' OR credits_posted - debits_posted - debits_pending >= 0)
);
INSERT INTO accounts (id, kind) VALUES (1, 'outside'), (2, 'treasury'), (3, 'fees');
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    digest BYTEA NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'receive', 'spend')),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE transfers (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debit BIGINT NOT NULL,
    credit BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (debit <> credit)
);
CREATE TABLE invoices (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_hash BYTEA NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    bolt11 TEXT NOT NULL,
    preimage BYTEA NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    paid_at BIGINT
);
CREATE INDEX invoices_by_agent ON invoices (agent_id, seq);
CREATE TABLE payments (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BYTEA NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    fee BIGINT NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed')),
    purpose TEXT NOT NULL,
    payee_agent_id TEXT,
    preimage BYTEA,
    transfer_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX payments_by_agent ON payments (agent_id, seq);
CREATE TABLE idempotency (
    agent_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_digest BYTEA NOT NULL,
    payment_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type TEXT NOT NULL,
    agent_id TEXT,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#,
    // 2: the constitution.
    r#"
ALTER TABLE agents ADD COLUMN parent_id TEXT;
ALTER TABLE agents ADD COLUMN can_create_subagents BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE agents ADD COLUMN frozen_reason TEXT;
ALTER TABLE agents ADD COLUMN policy TEXT;
ALTER TABLE agents ADD COLUMN policy_rev BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage TEXT;
ALTER TABLE agents ADD COLUMN breaker TEXT;
CREATE INDEX agents_by_parent ON agents (parent_id);
ALTER TABLE keys ADD COLUMN expires_at BIGINT;
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BYTEA NOT NULL,
    bolt11 TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    purpose TEXT NOT NULL,
    payee_agent_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    payment_id TEXT
);
CREATE INDEX approvals_by_status ON approvals (status, expires_at);
-- `seq` is set by the writer (the last + 1, under the write lock), not by a
-- sequence: sequence values are used up by transactions that roll back, and
-- the chain's records are numbered without gaps.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    agent_id TEXT,
    action TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX audit_by_agent ON audit_log (agent_id, seq);
"#,
    // 3: chat rooms. A payment request is a message tied to an invoice; its
    // receipt is read from the invoice (who paid, when, the preimage).
    r#"
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE room_members (
    room_id TEXT NOT NULL,
    member TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, member)
);
CREATE INDEX room_members_by_member ON room_members (member, room_id);
CREATE TABLE messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'payment_request')),
    text TEXT NOT NULL,
    payment_hash BYTEA,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_room ON messages (room_id, id);
ALTER TABLE invoices ADD COLUMN paid_by TEXT;
ALTER TABLE invoices ADD COLUMN room_id TEXT;
ALTER TABLE agents ADD COLUMN chat TEXT;
-- TRUE when the agent acknowledges incoming payments itself (default: accept).
ALTER TABLE agents ADD COLUMN ack_incoming BOOLEAN NOT NULL DEFAULT FALSE;
-- Incoming payments waiting for their payee's acknowledgment: credited and
-- reserved on the payee's wallet until accepted, refunded if rejected.
CREATE TABLE incoming (
    payment_id TEXT PRIMARY KEY,
    payee_agent_id TEXT NOT NULL,
    payer_agent_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX incoming_by_payee ON incoming (payee_agent_id, status);
"#,
    // 4: paid L402 tokens (SQLite's migration 4).
    r#"
CREATE TABLE l402_tokens (
    agent_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    scope TEXT NOT NULL,
    token TEXT NOT NULL,
    preimage BYTEA NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    payment_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, origin, scope)
);
"#,
    // 5: the outbox's consumers (SQLite's migration 5).
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    cursor BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT,
    url TEXT NOT NULL,
    types TEXT NOT NULL,
    after_event_id BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_owner ON webhooks (owner);
CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    status BIGINT,
    error TEXT,
    delivered BOOLEAN NOT NULL,
    at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX events_by_agent ON events (agent_id, id);
"#,
    // 6: Lightning (SQLite's migration 6).
    r#"
ALTER TABLE invoices ADD COLUMN backend TEXT;
CREATE INDEX invoices_watched ON invoices (seq) WHERE status = 'open' AND backend IS NOT NULL;
ALTER TABLE payments ADD COLUMN detail TEXT;
CREATE TABLE external_payments (
    payment_id TEXT PRIMARY KEY,
    payment_hash BYTEA NOT NULL,
    bolt11 TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    fee_limit BIGINT NOT NULL CHECK (fee_limit >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    checks BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX external_payments_live ON external_payments (payment_hash) WHERE status <> 'failed';
CREATE INDEX external_payments_pending ON external_payments (updated_at) WHERE status = 'pending';
"#,
    // 7: expired invoices (SQLite's migration 7). The sweep finds due
    // invoices by the partial index `invoices_open_by_expiry`, which holds
    // open invoices only. Its price on the hot path: one index entry per
    // invoice made; marking an invoice paid adds none (the paid row is not
    // in it, and that update was never HOT: `invoices_watched` names
    // `status` already).
    r#"
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check CHECK (status IN ('open', 'paid', 'expired'));
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
"#,
    // 8: held payments to invoices outside this gateway (SQLite's migration 8).
    r#"
ALTER TABLE approvals ADD COLUMN fee_limit BIGINT NOT NULL DEFAULT 0 CHECK (fee_limit >= 0);
ALTER TABLE approvals ADD COLUMN payee_node TEXT;
CREATE UNIQUE INDEX approvals_held_outside ON approvals (payment_hash) WHERE status = 'pending' AND payee_node IS NOT NULL;
"#,
    // 9: quotas and retention (SQLite's migration 9).
    r#"
CREATE INDEX invoices_open_by_agent ON invoices (agent_id, expires_at) WHERE status = 'open';
CREATE INDEX approvals_pending_by_agent ON approvals (agent_id, expires_at) WHERE status = 'pending';
CREATE INDEX invoices_expired ON invoices (expires_at) WHERE status = 'expired';
CREATE INDEX approvals_pending_by_hash ON approvals (payment_hash, agent_id) WHERE status = 'pending';
"#,
    // 10: trade between agents (SQLite's migration 10; PostgreSQL changes
    // the CHECKs in place).
    r#"
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('open', 'paid', 'expired', 'accepted', 'cancelled'));
ALTER TABLE invoices ADD COLUMN hold_secs BIGINT CHECK (hold_secs > 0);
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('succeeded', 'pending', 'failed', 'held', 'refunded'));
ALTER TABLE payments ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount);
ALTER TABLE approvals ADD COLUMN escrow_after_ms BIGINT;
ALTER TABLE approvals ADD COLUMN escrow_on_timeout TEXT CHECK (escrow_on_timeout IN ('release', 'refund'));
CREATE TABLE escrows (
    payment_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('hold', 'escrow')),
    payment_hash BYTEA NOT NULL,
    payer_agent_id TEXT NOT NULL,
    payee_agent_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('held', 'disputed', 'released', 'refunded')),
    on_timeout TEXT NOT NULL CHECK (on_timeout IN ('release', 'refund')),
    deadline_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolved_by TEXT
);
CREATE UNIQUE INDEX escrows_by_hash ON escrows (payment_hash);
CREATE INDEX escrows_due ON escrows (deadline_at) WHERE status = 'held';
CREATE INDEX escrows_open_by_payer ON escrows (payer_agent_id, deadline_at) WHERE status IN ('held', 'disputed');
CREATE INDEX escrows_open_by_payee ON escrows (payee_agent_id, deadline_at) WHERE status IN ('held', 'disputed');
CREATE INDEX escrows_disputed ON escrows (created_at) WHERE status = 'disputed';
CREATE TABLE sessions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payer_agent_id TEXT NOT NULL,
    payee_agent_id TEXT NOT NULL,
    max BIGINT NOT NULL CHECK (max > 0),
    charged BIGINT NOT NULL DEFAULT 0 CHECK (charged >= 0 AND charged <= max),
    charges BIGINT NOT NULL DEFAULT 0 CHECK (charges >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'expired')),
    purpose TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT
);
CREATE INDEX sessions_by_payer ON sessions (payer_agent_id, seq);
CREATE INDEX sessions_by_payee ON sessions (payee_agent_id, seq);
CREATE INDEX sessions_due ON sessions (expires_at) WHERE status = 'open';
CREATE INDEX sessions_open_by_payer ON sessions (payer_agent_id, expires_at) WHERE status = 'open';
CREATE TABLE session_charges (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    transfer_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX session_charges_by_session ON session_charges (session_id, seq);
CREATE TABLE refunds (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL,
    from_agent_id TEXT NOT NULL,
    to_agent_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    reason TEXT NOT NULL,
    payment_refunded BIGINT NOT NULL,
    transfer_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, seq);
"#,
    // 11: escrow terms of a room's payment request (SQLite's migration 11).
    r#"
ALTER TABLE invoices ADD COLUMN escrow_after_ms BIGINT CHECK (escrow_after_ms > 0);
ALTER TABLE invoices ADD COLUMN escrow_on_timeout TEXT CHECK (escrow_on_timeout IN ('release', 'refund'));
"#,
    // 12: signing keys (SQLite's migration 12).
    r#"
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    alg TEXT NOT NULL CHECK (alg IN ('ed25519', 'ecdsa-p256-sha256')),
    public_key BYTEA NOT NULL,
    required BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX signing_keys_by_agent ON signing_keys (agent_id, created_at);
"#,
    // 13: no write lock shared by the instances (SQLite's migration 13
    // changes nothing). Transactions of several instances commit in any
    // order, so an audit record or an event is written unnumbered, with
    // only its place in the order of writing (`pos`); the sealer
    // (`seal.rs`) numbers them afterwards, in the order they became
    // visible: the audit record's `seq`, `prev_hash` and `hash`, the
    // event's public `id`. Readers see numbered rows only, so an id never
    // appears below one already read.
    r#"
ALTER TABLE events RENAME COLUMN id TO pos;
ALTER TABLE events ADD COLUMN id BIGINT;
UPDATE events SET id = pos;
CREATE UNIQUE INDEX events_by_id ON events (id);
CREATE INDEX events_unsealed ON events (pos) WHERE id IS NULL;
DROP INDEX events_by_agent;
CREATE INDEX events_by_agent ON events (agent_id, id);
ALTER TABLE audit_log ADD COLUMN pos BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log ADD PRIMARY KEY (pos);
ALTER TABLE audit_log ALTER COLUMN seq DROP NOT NULL, ALTER COLUMN prev_hash DROP NOT NULL,
    ALTER COLUMN hash DROP NOT NULL;
CREATE UNIQUE INDEX audit_by_seq ON audit_log (seq);
CREATE INDEX audit_unsealed ON audit_log (pos) WHERE seq IS NULL;
-- The kill switch's row exists from the start: every write batch holds a
-- share lock on it, which halting waits for (`writer.rs`).
INSERT INTO meta (key, value) VALUES ('halted', '\x00'::bytea) ON CONFLICT (key) DO NOTHING;
"#,
    // 14: Nostr Wallet Connect connections and the requests taken
    // (SQLite's migration 14).
    r#"
CREATE TABLE nwc_connections (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    client_pubkey BYTEA NOT NULL UNIQUE CHECK (length(client_pubkey) = 32),
    methods TEXT NOT NULL,
    notifications BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX nwc_connections_by_agent ON nwc_connections (agent_id, created_at);
CREATE TABLE nwc_requests (
    event_id BYTEA PRIMARY KEY CHECK (length(event_id) = 32),
    connection_id TEXT NOT NULL,
    taken_at BIGINT NOT NULL
);
CREATE INDEX nwc_requests_by_time ON nwc_requests (taken_at);
"#,
    // 15: bridges to messengers (SQLite's migration 15).
    r#"
CREATE TABLE link_codes (
    digest BYTEA PRIMARY KEY CHECK (length(digest) = 32),
    agent_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX link_codes_by_agent ON link_codes (agent_id, expires_at);
CREATE TABLE bridge_links (
    messenger TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (messenger, user_id)
);
CREATE INDEX bridge_links_by_agent ON bridge_links (agent_id, linked_at);
CREATE TABLE room_bridges (
    room_id TEXT NOT NULL,
    messenger TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, messenger),
    UNIQUE (messenger, chat_id)
);
CREATE TABLE bridge_posts (
    messenger TEXT NOT NULL,
    room_id TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    chat_id TEXT NOT NULL,
    external_id TEXT NOT NULL,
    payment_hash BYTEA CHECK (payment_hash IS NULL OR length(payment_hash) = 32),
    PRIMARY KEY (messenger, room_id, message_id)
);
CREATE UNIQUE INDEX bridge_posts_by_external ON bridge_posts (messenger, chat_id, external_id);
CREATE INDEX bridge_posts_by_hash ON bridge_posts (payment_hash) WHERE payment_hash IS NOT NULL;
"#,
    // 16: cost attribution (SQLite's migration 16).
    r#"
ALTER TABLE agents ADD COLUMN task TEXT;
ALTER TABLE payments ADD COLUMN task TEXT;
ALTER TABLE payments ADD COLUMN tags TEXT;
ALTER TABLE approvals ADD COLUMN task TEXT;
ALTER TABLE approvals ADD COLUMN tags TEXT;
ALTER TABLE sessions ADD COLUMN task TEXT;
ALTER TABLE sessions ADD COLUMN tags TEXT;
CREATE TABLE spend_totals (
    dimension TEXT NOT NULL CHECK (dimension IN ('payee', 'task', 'tag')),
    day BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    value TEXT NOT NULL,
    payments BIGINT NOT NULL CHECK (payments > 0),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    fee BIGINT NOT NULL CHECK (fee >= 0),
    PRIMARY KEY (dimension, day, agent_id, value)
);
"#,
    // 17: events' data, audit bodies and invoices are stored packed
    // (`coffer_core::pack`, SQLite's migration 17), which is bytes; the
    // texts already stored become their UTF-8 bytes and read as they are.
    r#"
ALTER TABLE events ALTER COLUMN data TYPE BYTEA USING convert_to(data, 'UTF8');
ALTER TABLE audit_log ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
ALTER TABLE invoices ALTER COLUMN bolt11 TYPE BYTEA USING convert_to(bolt11, 'UTF8');
"#,
    // 18: an event names its kind and its agent by integers, an audit
    // record its agent (SQLite's migration 18): the kind's code in
    // `event_kinds`, the agent's account id. The rows keep their place,
    // their ids and their links.
    r#"
CREATE TABLE event_kinds (
    code INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO event_kinds (name) SELECT DISTINCT type FROM events ORDER BY type;
ALTER TABLE events ADD COLUMN kind INTEGER, ADD COLUMN agent BIGINT;
UPDATE events e SET kind = (SELECT k.code FROM event_kinds k WHERE k.name = e.type),
    agent = (SELECT a.account_id FROM agents a WHERE a.id = e.agent_id);
DROP INDEX events_by_agent;
ALTER TABLE events DROP COLUMN type, DROP COLUMN agent_id, ALTER COLUMN kind SET NOT NULL;
CREATE INDEX events_by_agent ON events (agent, id);
ALTER TABLE audit_log ADD COLUMN agent BIGINT, ADD COLUMN agent_text TEXT;
UPDATE audit_log l SET agent = (SELECT a.account_id FROM agents a WHERE a.id = l.agent_id),
    agent_text = CASE WHEN NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = l.agent_id) THEN l.agent_id END;
DROP INDEX audit_by_agent;
ALTER TABLE audit_log DROP COLUMN agent_id;
CREATE INDEX audit_by_agent ON audit_log (agent, seq);
"#,
    // 19: payments, invoices and idempotency keys name their agents by
    // account id (SQLite's migration 19): a payment's payer and payee, an
    // invoice's payer (its payee was also its account), an idempotency
    // key's agent. The treasury is its account (2); an invoice's payer that
    // is no agent (`outside`) stays text in `paid_by`.
    r#"
ALTER TABLE invoices ADD COLUMN payer BIGINT;
UPDATE invoices i SET payer = a.account_id, paid_by = NULL FROM agents a WHERE a.id = i.paid_by;
DROP INDEX invoices_by_agent;
DROP INDEX invoices_open_by_agent;
ALTER TABLE invoices DROP COLUMN agent_id;
CREATE INDEX invoices_by_agent ON invoices (account_id, seq);
CREATE INDEX invoices_open_by_agent ON invoices (account_id, expires_at) WHERE status = 'open';
ALTER TABLE payments ADD COLUMN agent BIGINT, ADD COLUMN payee BIGINT;
UPDATE payments p SET
    agent = COALESCE((SELECT a.account_id FROM agents a WHERE a.id = p.agent_id),
        CASE WHEN p.agent_id = 'treasury' THEN 2 END),
    payee = COALESCE((SELECT a.account_id FROM agents a WHERE a.id = p.payee_agent_id),
        CASE WHEN p.payee_agent_id = 'treasury' THEN 2 END);
DROP INDEX payments_by_agent;
ALTER TABLE payments DROP COLUMN agent_id, DROP COLUMN payee_agent_id, ALTER COLUMN agent SET NOT NULL;
CREATE INDEX payments_by_agent ON payments (agent, seq);
ALTER TABLE idempotency ADD COLUMN agent BIGINT;
UPDATE idempotency k SET agent = a.account_id FROM agents a WHERE a.id = k.agent_id;
ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey;
ALTER TABLE idempotency DROP COLUMN agent_id, ALTER COLUMN agent SET NOT NULL;
ALTER TABLE idempotency ADD PRIMARY KEY (agent, key);
"#,
    // 20 (SQLite's migration 20): an invoice is packed without its payment
    // hash, which its row holds anyway (`pack_invoice`: 32 bytes), and an
    // internal payment keeps an empty preimage, read from its invoice (32
    // bytes more). Rows written before read as they are; the version tells
    // an older build that it cannot read this store.
    r#"
-- Nothing to change.
"#,
];

/// The schema version this build writes: the number of migrations.
pub const VERSION: usize = MIGRATIONS.len();

/// Applies the missing migrations, each in its own transaction. A session
/// advisory lock makes instances that start together take turns: the
/// second finds the work done.
pub fn migrate(conn: &mut Conn) -> Result<(), Error> {
    let fail = |e: tokio_postgres::Error| Error::internal("migrating the schema", e);
    conn.execute_typed("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).map_err(fail)?;
    let result = apply(conn);
    if result.is_err() {
        // A migration that failed midway left its transaction open, aborted.
        let _ = conn.batch_execute("ROLLBACK");
    }
    conn.execute_typed("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).map_err(fail)?;
    result
}

fn apply(conn: &mut Conn) -> Result<(), Error> {
    let fail = |e: tokio_postgres::Error| Error::internal("migrating the schema", e);
    conn.batch_execute("CREATE TABLE IF NOT EXISTS coffer_schema (version BIGINT NOT NULL)").map_err(fail)?;
    let rows = conn.query_typed("SELECT version FROM coffer_schema", &[]).map_err(fail)?;
    let applied: usize = match rows.first() {
        Some(r) => {
            let version: i64 = r.try_get(0).map_err(fail)?;
            version.try_into().map_err(|_| Error::Internal("negative schema version".into()))?
        }
        None => {
            conn.execute_typed("INSERT INTO coffer_schema (version) VALUES (0)", &[]).map_err(fail)?;
            0
        }
    };
    if applied > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the database has schema version {applied}, newer than this coffer ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i + 1;
        conn.batch_execute(&format!("BEGIN; {sql}; UPDATE coffer_schema SET version = {version}; COMMIT;"))
            .map_err(fail)?;
    }
    Ok(())
}
