//! The SQLite schema, as migrations applied in order; `PRAGMA user_version`
//! counts the ones applied.

use crate::error::Error;
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the spine.
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('outside', 'treasury', 'fees', 'wallet')),
    debits_posted INTEGER NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted INTEGER NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending INTEGER NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    -- The invariant, asserted by the database too: only `outside` goes negative.
    CHECK (kind = 'outside' OR credits_posted - debits_posted - debits_pending >= 0)
);
INSERT INTO accounts (id, kind) VALUES (1, 'outside'), (2, 'treasury'), (3, 'fees');
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'receive', 'spend')),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    debit INTEGER NOT NULL,
    credit INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    kind TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    CHECK (debit <> credit)
);
CREATE TABLE invoices (
    seq INTEGER PRIMARY KEY,
    payment_hash BLOB NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    bolt11 TEXT NOT NULL,
    preimage BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    paid_at INTEGER
);
CREATE INDEX invoices_by_agent ON invoices (agent_id, seq);
CREATE TABLE payments (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    fee INTEGER NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed')),
    purpose TEXT NOT NULL,
    payee_agent_id TEXT,
    preimage BLOB,
    transfer_id INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX payments_by_agent ON payments (agent_id, seq);
CREATE TABLE idempotency (
    agent_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    payment_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, key)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    agent_id TEXT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    // 2: the constitution.
    r#"
ALTER TABLE agents ADD COLUMN parent_id TEXT;
ALTER TABLE agents ADD COLUMN can_create_subagents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN frozen_reason TEXT;
ALTER TABLE agents ADD COLUMN policy TEXT;
ALTER TABLE agents ADD COLUMN policy_rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN usage TEXT;
ALTER TABLE agents ADD COLUMN breaker TEXT;
CREATE INDEX agents_by_parent ON agents (parent_id);
ALTER TABLE keys ADD COLUMN expires_at INTEGER;
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BLOB NOT NULL,
    bolt11 TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    purpose TEXT NOT NULL,
    payee_agent_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER,
    decided_by TEXT,
    payment_id TEXT
) WITHOUT ROWID;
CREATE INDEX approvals_by_status ON approvals (status, expires_at);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    agent_id TEXT,
    action TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
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
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE room_members (
    room_id TEXT NOT NULL,
    member TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, member)
) WITHOUT ROWID;
CREATE INDEX room_members_by_member ON room_members (member, room_id);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'payment_request')),
    text TEXT NOT NULL,
    payment_hash BLOB,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_by_room ON messages (room_id, id);
ALTER TABLE invoices ADD COLUMN paid_by TEXT;
ALTER TABLE invoices ADD COLUMN room_id TEXT;
ALTER TABLE agents ADD COLUMN chat TEXT;
-- 1 when the agent acknowledges incoming payments itself (default: accept).
ALTER TABLE agents ADD COLUMN ack_incoming INTEGER NOT NULL DEFAULT 0;
-- Incoming payments waiting for their payee's acknowledgment: credited and
-- reserved on the payee's wallet until accepted, refunded if rejected.
CREATE TABLE incoming (
    payment_id TEXT PRIMARY KEY,
    payee_agent_id TEXT NOT NULL,
    payer_agent_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at INTEGER NOT NULL,
    decided_at INTEGER
) WITHOUT ROWID;
CREATE INDEX incoming_by_payee ON incoming (payee_agent_id, status);
"#,
    // 4: paid L402 tokens, per agent, origin and path prefix, kept by the
    // gateway so that every process of the agent reuses them. The preimage
    // is the proof of payment the token needs; it is the agent's own.
    r#"
CREATE TABLE l402_tokens (
    agent_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    scope TEXT NOT NULL,
    token TEXT NOT NULL,
    preimage BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    payment_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, origin, scope)
) WITHOUT ROWID;
"#,
    // 5: the outbox's consumers: leases (one instance runs each background
    // job), webhook subscriptions and their delivery log.
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT,
    url TEXT NOT NULL,
    types TEXT NOT NULL,
    after_event_id INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_by_owner ON webhooks (owner);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    delivered INTEGER NOT NULL,
    at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX events_by_agent ON events (agent_id, id);
"#,
    // 6: Lightning. An invoice made by the funding source's
    // node names it in `backend` and is watched until paid or expired; one
    // paid from outside is credited from `outside` exactly once (the
    // open -> paid update is the guard). An external payment is a payment
    // row plus its row here; at most one live (pending or succeeded) per
    // payment hash, so the same invoice is never sent twice.
    r#"
ALTER TABLE invoices ADD COLUMN backend TEXT;
CREATE INDEX invoices_watched ON invoices (seq) WHERE status = 'open' AND backend IS NOT NULL;
ALTER TABLE payments ADD COLUMN detail TEXT;
CREATE TABLE external_payments (
    payment_id TEXT PRIMARY KEY,
    payment_hash BLOB NOT NULL,
    bolt11 TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    fee_limit INTEGER NOT NULL CHECK (fee_limit >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    checks INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX external_payments_live ON external_payments (payment_hash) WHERE status <> 'failed';
CREATE INDEX external_payments_pending ON external_payments (updated_at) WHERE status = 'pending';
"#,
    // 7: expired invoices. The sweep marks open invoices past their expiry
    // `expired` (with their `invoice.expired` event). SQLite cannot change a
    // CHECK in place, so the table is copied into one that allows the new
    // status, with the same rows (and `seq`s) and indexes.
    //
    // The sweep finds due invoices by `invoices_open_by_expiry`. It is
    // partial, so it holds open invoices only: without it each sweep would
    // scan every invoice ever made. Its price on the hot path: one index
    // entry per invoice made, and one removed when it is paid (or expired).
    r#"
CREATE TABLE invoices_v7 (
    seq INTEGER PRIMARY KEY,
    payment_hash BLOB NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    bolt11 TEXT NOT NULL,
    preimage BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'expired')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    paid_at INTEGER,
    paid_by TEXT,
    room_id TEXT,
    backend TEXT
);
INSERT INTO invoices_v7 (seq, payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status,
    created_at, expires_at, paid_at, paid_by, room_id, backend)
SELECT seq, payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status,
    created_at, expires_at, paid_at, paid_by, room_id, backend FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_v7 RENAME TO invoices;
CREATE INDEX invoices_by_agent ON invoices (agent_id, seq);
CREATE INDEX invoices_watched ON invoices (seq) WHERE status = 'open' AND backend IS NOT NULL;
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
"#,
    // 8: held payments to invoices outside this gateway. Their hold
    // reserves the fee limit with the amount (`fee_limit`, 0 inside), and
    // names the payee node (`payee_node`, set only for them). One pending
    // hold per outside invoice: a second would reserve the money twice for
    // an invoice that can be paid once.
    r#"
ALTER TABLE approvals ADD COLUMN fee_limit INTEGER NOT NULL DEFAULT 0 CHECK (fee_limit >= 0);
ALTER TABLE approvals ADD COLUMN payee_node TEXT;
CREATE UNIQUE INDEX approvals_held_outside ON approvals (payment_hash) WHERE status = 'pending' AND payee_node IS NOT NULL;
"#,
    // 9: quotas (`store::quota`) and retention (`store/retention.rs`). An agent's
    // open invoices and pending holds are counted in the transaction that
    // adds one: the first two indexes keep that count to the rows counted,
    // however many the agent had before. Retention finds invoices expired
    // long enough by the third; the payment path never touches it (only the
    // expiry sweep marks an invoice expired). The fourth finds the pending
    // holds of an invoice (a payer holds an invoice once at a time).
    r#"
CREATE INDEX invoices_open_by_agent ON invoices (agent_id, expires_at) WHERE status = 'open';
CREATE INDEX approvals_pending_by_agent ON approvals (agent_id, expires_at) WHERE status = 'pending';
CREATE INDEX invoices_expired ON invoices (expires_at) WHERE status = 'expired';
CREATE INDEX approvals_pending_by_hash ON approvals (payment_hash, agent_id) WHERE status = 'pending';
"#,
    // 10: trade between agents (`payment/escrow.rs`, `session.rs`,
    // `refund.rs`). Invoices may be hold invoices (`hold_secs`) and take two
    // statuses more; payments two more, and the total refunded. SQLite
    // cannot change a CHECK in place: both tables are copied, rows, `seq`s
    // and indexes the same. Money that waits is a row of `escrows` (one per
    // payment of a hold invoice or into escrow) or of `sessions`, its
    // amount reserved on the payer's wallet while open; the partial indexes
    // find what a deadline is due for, and count the open ones per payer.
    r#"
CREATE TABLE invoices_v10 (
    seq INTEGER PRIMARY KEY,
    payment_hash BLOB NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    bolt11 TEXT NOT NULL,
    preimage BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'expired', 'accepted', 'cancelled')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    paid_at INTEGER,
    paid_by TEXT,
    room_id TEXT,
    backend TEXT,
    hold_secs INTEGER CHECK (hold_secs > 0)
);
INSERT INTO invoices_v10 (seq, payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status,
    created_at, expires_at, paid_at, paid_by, room_id, backend)
SELECT seq, payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status,
    created_at, expires_at, paid_at, paid_by, room_id, backend FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_v10 RENAME TO invoices;
CREATE INDEX invoices_by_agent ON invoices (agent_id, seq);
CREATE INDEX invoices_watched ON invoices (seq) WHERE status = 'open' AND backend IS NOT NULL;
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
CREATE INDEX invoices_open_by_agent ON invoices (agent_id, expires_at) WHERE status = 'open';
CREATE INDEX invoices_expired ON invoices (expires_at) WHERE status = 'expired';
CREATE TABLE payments_v10 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    fee INTEGER NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed', 'held', 'refunded')),
    purpose TEXT NOT NULL,
    payee_agent_id TEXT,
    preimage BLOB,
    transfer_id INTEGER,
    created_at INTEGER NOT NULL,
    detail TEXT,
    refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount)
);
INSERT INTO payments_v10 (seq, id, agent_id, key_id, payment_hash, amount, fee, status, purpose, payee_agent_id,
    preimage, transfer_id, created_at, detail)
SELECT seq, id, agent_id, key_id, payment_hash, amount, fee, status, purpose, payee_agent_id,
    preimage, transfer_id, created_at, detail FROM payments;
DROP TABLE payments;
ALTER TABLE payments_v10 RENAME TO payments;
CREATE INDEX payments_by_agent ON payments (agent_id, seq);
ALTER TABLE approvals ADD COLUMN escrow_after_ms INTEGER;
ALTER TABLE approvals ADD COLUMN escrow_on_timeout TEXT CHECK (escrow_on_timeout IN ('release', 'refund'));
CREATE TABLE escrows (
    payment_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('hold', 'escrow')),
    payment_hash BLOB NOT NULL,
    payer_agent_id TEXT NOT NULL,
    payee_agent_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('held', 'disputed', 'released', 'refunded')),
    on_timeout TEXT NOT NULL CHECK (on_timeout IN ('release', 'refund')),
    deadline_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT
) WITHOUT ROWID;
CREATE UNIQUE INDEX escrows_by_hash ON escrows (payment_hash);
CREATE INDEX escrows_due ON escrows (deadline_at) WHERE status = 'held';
CREATE INDEX escrows_open_by_payer ON escrows (payer_agent_id, deadline_at) WHERE status IN ('held', 'disputed');
CREATE INDEX escrows_open_by_payee ON escrows (payee_agent_id, deadline_at) WHERE status IN ('held', 'disputed');
CREATE INDEX escrows_disputed ON escrows (created_at) WHERE status = 'disputed';
CREATE TABLE sessions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payer_agent_id TEXT NOT NULL,
    payee_agent_id TEXT NOT NULL,
    max INTEGER NOT NULL CHECK (max > 0),
    charged INTEGER NOT NULL DEFAULT 0 CHECK (charged >= 0 AND charged <= max),
    charges INTEGER NOT NULL DEFAULT 0 CHECK (charges >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'expired')),
    purpose TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    closed_at INTEGER,
    closed_by TEXT
);
CREATE INDEX sessions_by_payer ON sessions (payer_agent_id, seq);
CREATE INDEX sessions_by_payee ON sessions (payee_agent_id, seq);
CREATE INDEX sessions_due ON sessions (expires_at) WHERE status = 'open';
CREATE INDEX sessions_open_by_payer ON sessions (payer_agent_id, expires_at) WHERE status = 'open';
CREATE TABLE session_charges (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    transfer_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX session_charges_by_session ON session_charges (session_id, seq);
CREATE TABLE refunds (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL,
    from_agent_id TEXT NOT NULL,
    to_agent_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    reason TEXT NOT NULL,
    payment_refunded INTEGER NOT NULL,
    transfer_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, seq);
"#,
    // 11: a room's payment request may ask to be paid into escrow: its
    // terms, on its invoice (both or neither).
    r#"
ALTER TABLE invoices ADD COLUMN escrow_after_ms INTEGER CHECK (escrow_after_ms > 0);
ALTER TABLE invoices ADD COLUMN escrow_on_timeout TEXT CHECK (escrow_on_timeout IN ('release', 'refund'));
"#,
    // 12: public keys agents sign their requests with (RFC 9421).
    r#"
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    alg TEXT NOT NULL CHECK (alg IN ('ed25519', 'ecdsa-p256-sha256')),
    public_key BLOB NOT NULL,
    required INTEGER NOT NULL CHECK (required IN (0, 1)),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX signing_keys_by_agent ON signing_keys (agent_id, created_at);
"#,
    // 13: PostgreSQL numbers its audit records and events after commit
    // (its migration 13); one writer numbers them here as it writes them,
    // so nothing changes.
    "",
    // 14: Nostr Wallet Connect connections (only the client's public key,
    // which verifies its requests), and the requests taken (one row per
    // request event, so a request delivered twice or seen by two instances
    // is answered once; pruned after NWC_REQUEST_KEPT_MS).
    r#"
CREATE TABLE nwc_connections (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    client_pubkey BLOB NOT NULL UNIQUE CHECK (length(client_pubkey) = 32),
    methods TEXT NOT NULL,
    notifications INTEGER NOT NULL CHECK (notifications IN (0, 1)),
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
) WITHOUT ROWID;
CREATE INDEX nwc_connections_by_agent ON nwc_connections (agent_id, created_at);
CREATE TABLE nwc_requests (
    event_id BLOB PRIMARY KEY CHECK (length(event_id) = 32),
    connection_id TEXT NOT NULL,
    taken_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nwc_requests_by_time ON nwc_requests (taken_at);
"#,
    // 15: bridges to messengers: single-use link codes (their digests), the
    // messenger users linked to agents or to the operator, the rooms
    // bridged to chats, and what each bridge posted for a room's messages.
    r#"
CREATE TABLE link_codes (
    digest BLOB PRIMARY KEY CHECK (length(digest) = 32),
    agent_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX link_codes_by_agent ON link_codes (agent_id, expires_at);
CREATE TABLE bridge_links (
    messenger TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (messenger, user_id)
) WITHOUT ROWID;
CREATE INDEX bridge_links_by_agent ON bridge_links (agent_id, linked_at);
CREATE TABLE room_bridges (
    room_id TEXT NOT NULL,
    messenger TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, messenger),
    UNIQUE (messenger, chat_id)
) WITHOUT ROWID;
CREATE TABLE bridge_posts (
    messenger TEXT NOT NULL,
    room_id TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    chat_id TEXT NOT NULL,
    external_id TEXT NOT NULL,
    payment_hash BLOB CHECK (payment_hash IS NULL OR length(payment_hash) = 32),
    PRIMARY KEY (messenger, room_id, message_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX bridge_posts_by_external ON bridge_posts (messenger, chat_id, external_id);
CREATE INDEX bridge_posts_by_hash ON bridge_posts (payment_hash) WHERE payment_hash IS NOT NULL;
"#,
    // 16: cost attribution. A payment (and a hold, and a session, whose
    // charges are payments of its payer) names the task it served and up to
    // 8 tags; an agent may carry a task its payments inherit. Reports read
    // maintained totals per dimension (payee, task, tag), agent and UTC day,
    // updated in the transaction that settles a payment: a report costs the
    // rows of its days, not the payments behind them.
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
    day INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    value TEXT NOT NULL,
    payments INTEGER NOT NULL CHECK (payments > 0),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    fee INTEGER NOT NULL CHECK (fee >= 0),
    PRIMARY KEY (dimension, day, agent_id, value)
) WITHOUT ROWID;
"#,
    // 17: events' data and audit bodies (`coffer_core::pack::json`: a
    // third of their text) and invoices (`pack::bech32`: three fifths) are
    // written packed, given back byte for byte, as BLOBs. A TEXT column
    // keeps a BLOB as it is, so no row and no column changes here: rows
    // written before stay text and read as they are. The version tells an
    // older build that it cannot read this store.
    r#"
-- Nothing to change.
"#,
    // 18: an event names its kind and its agent by integers, and an audit
    // record its agent: the kind's code in `event_kinds` (learned as kinds
    // are first written), the agent's account id. They were texts in every
    // row and in every entry of `events_by_agent` and `audit_by_agent`,
    // four of each per payment. Reads give the texts back through both
    // tables (an audit record's body names its agent too: the chain links
    // the body; a name that is no agent's, `operator` linking a chat, stays
    // text in `agent_text`). The rows are copied with their ids, and the
    // events' id sequence carries over (an id once given is never given
    // again).
    r#"
CREATE TABLE event_kinds (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO event_kinds (name) SELECT DISTINCT type FROM events ORDER BY type;
CREATE TABLE events_v18 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    agent INTEGER,
    data BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO events_v18 (id, kind, agent, data, created_at)
SELECT e.id, (SELECT k.code FROM event_kinds k WHERE k.name = e.type),
    (SELECT a.account_id FROM agents a WHERE a.id = e.agent_id), e.data, e.created_at
FROM events e ORDER BY e.id;
DELETE FROM sqlite_sequence WHERE name = 'events_v18';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v18', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v18 RENAME TO events;
CREATE INDEX events_by_agent ON events (agent, id);
CREATE TABLE audit_log_v18 (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    agent INTEGER,
    agent_text TEXT,
    action TEXT NOT NULL,
    body BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_log_v18 (seq, at, agent, agent_text, action, body, prev_hash, hash)
SELECT l.seq, l.at, (SELECT a.account_id FROM agents a WHERE a.id = l.agent_id),
    CASE WHEN NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = l.agent_id) THEN l.agent_id END,
    l.action, l.body, l.prev_hash, l.hash
FROM audit_log l ORDER BY l.seq;
DROP TABLE audit_log;
ALTER TABLE audit_log_v18 RENAME TO audit_log;
CREATE INDEX audit_by_agent ON audit_log (agent, seq);
"#,
    // 19: payments, invoices and idempotency keys name their agents by
    // account id, as events do since 18: a payment's payer and payee, an
    // invoice's payer (its payee was there twice: as a text and as its
    // account), an idempotency key's agent. They were texts in every row
    // and in every entry of `payments_by_agent`, `invoices_by_agent` and
    // the keys' primary key. The treasury, which is no agent, is its
    // account (2); an invoice's payer that is no agent (`outside`) stays
    // text in `paid_by`. Reads give the texts back through `agents`.
    r#"
CREATE TABLE invoices_v19 (
    seq INTEGER PRIMARY KEY,
    payment_hash BLOB NOT NULL UNIQUE,
    account_id INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    memo TEXT NOT NULL,
    bolt11 TEXT NOT NULL,
    preimage BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'expired', 'accepted', 'cancelled')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    paid_at INTEGER,
    payer INTEGER,
    paid_by TEXT,
    room_id TEXT,
    backend TEXT,
    hold_secs INTEGER CHECK (hold_secs > 0),
    escrow_after_ms INTEGER CHECK (escrow_after_ms > 0),
    escrow_on_timeout TEXT CHECK (escrow_on_timeout IN ('release', 'refund'))
);
INSERT INTO invoices_v19 (seq, payment_hash, account_id, amount, memo, bolt11, preimage, status, created_at,
    expires_at, paid_at, payer, paid_by, room_id, backend, hold_secs, escrow_after_ms, escrow_on_timeout)
SELECT i.seq, i.payment_hash, i.account_id, i.amount, i.memo, i.bolt11, i.preimage, i.status, i.created_at,
    i.expires_at, i.paid_at, (SELECT a.account_id FROM agents a WHERE a.id = i.paid_by),
    CASE WHEN NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = i.paid_by) THEN i.paid_by END,
    i.room_id, i.backend, i.hold_secs, i.escrow_after_ms, i.escrow_on_timeout
FROM invoices i ORDER BY i.seq;
DROP TABLE invoices;
ALTER TABLE invoices_v19 RENAME TO invoices;
CREATE INDEX invoices_by_agent ON invoices (account_id, seq);
CREATE INDEX invoices_watched ON invoices (seq) WHERE status = 'open' AND backend IS NOT NULL;
CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';
CREATE INDEX invoices_open_by_agent ON invoices (account_id, expires_at) WHERE status = 'open';
CREATE INDEX invoices_expired ON invoices (expires_at) WHERE status = 'expired';
CREATE TABLE payments_v19 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    agent INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    payment_hash BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    fee INTEGER NOT NULL CHECK (fee >= 0),
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed', 'held', 'refunded')),
    purpose TEXT NOT NULL,
    payee INTEGER,
    preimage BLOB,
    transfer_id INTEGER,
    created_at INTEGER NOT NULL,
    detail TEXT,
    refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount),
    task TEXT,
    tags TEXT
);
INSERT INTO payments_v19 (seq, id, agent, key_id, payment_hash, amount, fee, status, purpose, payee, preimage,
    transfer_id, created_at, detail, refunded, task, tags)
SELECT p.seq, p.id,
    COALESCE((SELECT a.account_id FROM agents a WHERE a.id = p.agent_id), CASE WHEN p.agent_id = 'treasury' THEN 2 END),
    p.key_id, p.payment_hash, p.amount, p.fee, p.status, p.purpose,
    COALESCE((SELECT a.account_id FROM agents a WHERE a.id = p.payee_agent_id),
        CASE WHEN p.payee_agent_id = 'treasury' THEN 2 END),
    p.preimage, p.transfer_id, p.created_at, p.detail, p.refunded, p.task, p.tags
FROM payments p ORDER BY p.seq;
DROP TABLE payments;
ALTER TABLE payments_v19 RENAME TO payments;
CREATE INDEX payments_by_agent ON payments (agent, seq);
CREATE TABLE idempotency_v19 (
    agent INTEGER NOT NULL,
    key TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    payment_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (agent, key)
) WITHOUT ROWID;
INSERT INTO idempotency_v19 (agent, key, request_digest, payment_id, created_at)
SELECT (SELECT a.account_id FROM agents a WHERE a.id = k.agent_id), k.key, k.request_digest, k.payment_id, k.created_at
FROM idempotency k;
DROP TABLE idempotency;
ALTER TABLE idempotency_v19 RENAME TO idempotency;
"#,
    // 20: an invoice is packed without its payment hash, which its row
    // holds anyway (`coffer_core::pack::bech32::pack_invoice`: 32 bytes),
    // and an internal payment keeps an empty preimage, read from its
    // invoice (32 bytes more). Rows written before read as they are; the
    // version tells an older build that it cannot read this store.
    r#"
-- Nothing to change.
"#,
];

/// The schema version this build writes: the number of migrations.
pub const VERSION: usize = MIGRATIONS.len();

pub fn migrate(conn: &Connection) -> Result<(), Error> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| Error::internal("reading the schema version", e))?
        .try_into()
        .map_err(|_| Error::Internal("negative schema version".into()))?;
    if applied > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the database has schema version {applied}, newer than this coffer ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i + 1;
        let repair = if version == REPAIR_VERSION { schema_3_repair(conn)? } else { "" };
        conn.execute_batch(&format!("BEGIN; {repair}{sql}; PRAGMA user_version = {version}; COMMIT;"))
            .map_err(|e| Error::internal("migrating the schema", e))?;
    }
    Ok(())
}

/// The migration that also mends an early schema 3 (see
/// [`SCHEMA_3_REPAIR`]).
const REPAIR_VERSION: usize = 16;
const _: () = assert!(REPAIR_VERSION > 3 && REPAIR_VERSION <= MIGRATIONS.len());

/// Migration 3 gained `agents.ack_incoming` and the `incoming` table after
/// it had shipped: stores written by the builds of that time (commits
/// 333728d to 4b4eb3f) have schema 3 without them, and every later build
/// failed on their first incoming payment. Migration 16 adds what is
/// missing; migrations 4 to 15 do not touch either.
const SCHEMA_3_REPAIR: &str = r#"
ALTER TABLE agents ADD COLUMN ack_incoming INTEGER NOT NULL DEFAULT 0;
CREATE TABLE incoming (
    payment_id TEXT PRIMARY KEY,
    payee_agent_id TEXT NOT NULL,
    payer_agent_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at INTEGER NOT NULL,
    decided_at INTEGER
) WITHOUT ROWID;
CREATE INDEX incoming_by_payee ON incoming (payee_agent_id, status);
"#;

/// [`SCHEMA_3_REPAIR`] when the store lacks what it adds, else nothing.
fn schema_3_repair(conn: &Connection) -> Result<&'static str, Error> {
    let sql = "SELECT count(*) FROM pragma_table_info('agents') WHERE name = 'ack_incoming'";
    let found: i64 = conn.query_row(sql, [], |r| r.get(0)).map_err(|e| Error::internal("reading the schema", e))?;
    Ok(if found == 0 { SCHEMA_3_REPAIR } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_count(conn: &Connection, table: &str, column: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = '{column}'");
        conn.query_row(&sql, [], |r| r.get(0)).expect("reading the schema")
    }

    /// A store of an early schema 3 (no `ack_incoming`, no `incoming`) is
    /// mended by migration 16; a complete one is migrated as it is.
    #[test]
    fn migration_16_mends_an_early_schema_3() {
        for early in [true, false] {
            let conn = Connection::open_in_memory().expect("a database");
            for (i, sql) in MIGRATIONS.iter().enumerate().take(REPAIR_VERSION - 1) {
                conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))
                    .expect("migrating");
            }
            if early {
                conn.execute_batch(
                    "DROP INDEX incoming_by_payee; DROP TABLE incoming; ALTER TABLE agents DROP COLUMN ack_incoming",
                )
                .expect("making an early schema 3");
                assert_eq!(column_count(&conn, "agents", "ack_incoming"), 0);
            }
            migrate(&conn).expect("migrating to the newest schema");
            assert_eq!(column_count(&conn, "agents", "ack_incoming"), 1, "early: {early}");
            assert_eq!(column_count(&conn, "incoming", "payee_agent_id"), 1, "early: {early}");
            assert_eq!(column_count(&conn, "payments", "task"), 1, "early: {early}");
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
            assert_eq!(version, i64::try_from(VERSION).expect("small"));
        }
    }
}
