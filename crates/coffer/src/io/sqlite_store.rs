//! The embedded store: SQLite in WAL mode.
//!
//! All writes go through one writer thread that owns the only write
//! connection. It takes every job waiting in its queue (up to
//! [`BATCH_JOBS_MAX`]), runs each in its own savepoint inside one
//! transaction, commits once, and only then answers the callers: group
//! commit. One writer also means every check-then-write (balance, invoice
//! status, idempotency) is serialised, so no race can overspend a wallet.
//!
//! Durability: `synchronous=NORMAL` in WAL mode. A committed transaction
//! survives a crash of the process (SIGKILL); surviving power loss needs
//! `synchronous=FULL` (`Durability::Full`), which fsyncs every commit.
//!
//! Reads go to a small pool of read-only connections, which WAL lets run
//! beside the writer.
//!
//! Checkpoints (copying the WAL back into the database file, with fsyncs)
//! run on a thread of their own, so that SQLite's automatic checkpoint does
//! not stall every waiting request. A writer that never pauses would keep
//! such a checkpoint from ever letting the WAL start over, so the writer
//! itself restarts the WAL between batches once it passes
//! [`WAL_RESTART_BYTES`]; by then the background checkpoints have copied
//! nearly all of it, and the pause is short.

use super::*;
use coffer_client::PaymentStatus;
use coffer_core::ledger::{self, Transfer};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most jobs committed in one transaction: bounds a batch's latency.
pub const BATCH_JOBS_MAX: usize = 1_024;
/// The most jobs waiting for the writer; callers wait beyond it.
const QUEUE_JOBS_MAX: usize = 8_192;
/// Read-only connections kept open.
const READERS_MAX: usize = 8;
/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_INTERVAL_MS: u64 = 50;
/// The WAL file is truncated to this size after a checkpoint resets it.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Past this size the writer restarts the WAL from its beginning.
const WAL_RESTART_BYTES: u64 = 64 * 1024 * 1024;
/// The writer looks at the WAL's size once per this many batches.
const WAL_CHECK_BATCHES: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a process crash; a power loss may lose the last commits.
    Process,
    /// Survives power loss: one fsync per batch.
    Full,
}

type Reply = Box<dyn FnOnce(Result<(), &Error>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
}

impl SqliteStore {
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore, Error> {
        let conn = Connection::open(path).map_err(|e| Error::internal("opening the database", e))?;
        configure_writer(&conn, durability)?;
        migrate(&conn)?;
        let (jobs, queue) = mpsc::channel(QUEUE_JOBS_MAX);
        std::thread::Builder::new()
            .name("coffer-sqlite-writer".into())
            .spawn({
                let wal = wal_path(path);
                move || run_writer(conn, queue, &wal)
            })
            .map_err(|e| Error::internal("starting the writer thread", e))?;
        let checkpointer = Connection::open(path).map_err(|e| Error::internal("opening the checkpointer", e))?;
        let stop = jobs.downgrade();
        std::thread::Builder::new()
            .name("coffer-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, stop))
            .map_err(|e| Error::internal("starting the checkpoint thread", e))?;
        let readers = Arc::new(ReaderPool { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        Ok(SqliteStore { jobs, readers })
    }

    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, op);
            Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(Error::internal("commit", e)),
                };
                // The caller may have gone away; the work is committed anyway.
                let _ = done.send(outcome);
            })
        });
        Box::pin(async move {
            self.jobs.send(job).await.map_err(|_| Error::Unavailable("the store is shutting down"))?;
            answer.await.map_err(|_| Error::Unavailable("the store writer stopped"))?
        })
    }

    fn read<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = readers.take()?;
                let result = op(&conn);
                readers.put(conn);
                result
            })
            .await
            .map_err(|e| Error::internal("read task", e))?
        })
    }
}

fn configure_writer(conn: &Connection, durability: Durability) -> Result<(), Error> {
    let synchronous = match durability {
        Durability::Process => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=5000; \
         PRAGMA temp_store=MEMORY; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=0; \
         PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES};"
    ))
    .map_err(|e| Error::internal("configuring the database", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn in_savepoint<T>(conn: &Connection, op: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
    conn.execute_batch("SAVEPOINT job").map_err(|e| Error::internal("savepoint", e))?;
    let result = op(conn);
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    conn.execute_batch(end).map_err(|e| Error::internal("savepoint", e))?;
    result
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn run_writer(conn: Connection, mut queue: mpsc::Receiver<Job>, wal: &Path) {
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH_JOBS_MAX);
    let mut batches_since_check = 0u32;
    while let Some(first) = queue.blocking_recv() {
        batches_since_check += 1;
        if batches_since_check >= WAL_CHECK_BATCHES {
            batches_since_check = 0;
            restart_wal_if_large(&conn, wal);
        }
        let commit = run_batch(&conn, first, &mut queue, &mut replies);
        let commit_ref = commit.as_ref().map(|_| ());
        for reply in replies.drain(..) {
            reply(commit_ref);
        }
        if let Err(e) = commit {
            tracing::error!(error = %e, "a batch failed to commit; its callers were told");
        }
    }
}

/// Bounds the WAL: a RESTART checkpoint makes the next transaction write
/// from the WAL's beginning. Busy (another checkpoint is running) is fine:
/// the next check tries again.
fn restart_wal_if_large(conn: &Connection, wal: &Path) {
    let large = std::fs::metadata(wal).is_ok_and(|m| m.len() > WAL_RESTART_BYTES);
    if large && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "restarting the WAL failed; will retry");
    }
}

fn run_batch(
    conn: &Connection,
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    replies: &mut Vec<Reply>,
) -> Result<(), Error> {
    let begin = conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| Error::internal("begin", e));
    if let Err(e) = begin {
        // Run nothing: answer this job with the error.
        replies.push(Box::new(move |_| drop(first)));
        return Err(e);
    }
    replies.push(first(conn));
    while replies.len() < BATCH_JOBS_MAX {
        match queue.try_recv() {
            Ok(job) => replies.push(job(conn)),
            Err(_) => break,
        }
    }
    crate::metrics::METRICS.record_batch(replies.len());
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        Error::internal("commit", e)
    })
}

/// Copies the WAL into the database every few milliseconds, without
/// blocking the writer (PASSIVE), until the store is dropped.
fn run_checkpointer(conn: Connection, store: mpsc::WeakSender<Job>) {
    if let Err(e) = conn.execute_batch("PRAGMA busy_timeout=5000;") {
        tracing::error!(error = %e, "the checkpointer cannot configure its connection");
        return;
    }
    while store.upgrade().is_some() {
        std::thread::sleep(std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpoint failed; the WAL grows until the next one succeeds");
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, Error> {
        if let Some(conn) = self.idle.lock().map_err(|_| Error::Internal("reader pool poisoned".into()))?.pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&self.path, flags).map_err(|e| Error::internal("opening a reader", e))?;
        conn.execute_batch("PRAGMA busy_timeout=5000;").map_err(|e| Error::internal("configuring a reader", e))?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < READERS_MAX
        {
            idle.push(conn);
        }
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

fn migrate(conn: &Connection) -> Result<(), Error> {
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
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {version}; COMMIT;"))
            .map_err(|e| Error::internal("migrating the schema", e))?;
    }
    Ok(())
}

fn sql_err(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::internal(context, e)
}

fn msat(v: i64) -> Result<Msat, Error> {
    Msat::from_sql(v).map_err(|e| Error::internal("stored amount", e))
}

fn to_sql(m: Msat) -> Result<i64, Error> {
    m.to_sql().map_err(|e| Error::internal("amount", e))
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::Internal("a stored hash is not 32 bytes".into()))
}

fn load_balance(conn: &Connection, account: AccountId) -> Result<Balance, Error> {
    conn.prepare_cached("SELECT debits_posted, credits_posted, debits_pending FROM accounts WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([account.0], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))).optional()
        })
        .map_err(sql_err("loading a balance"))?
        .ok_or(Error::NotFound("account"))
        .and_then(|(d, c, p)| {
            Ok(Balance { debits_posted: msat(d)?, credits_posted: msat(c)?, debits_pending: msat(p)? })
        })
}

fn save_balance(conn: &Connection, account: AccountId, b: &Balance) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4 WHERE id = ?1",
    )?;
    stmt.execute(params![account.0, to_sql(b.debits_posted)?, to_sql(b.credits_posted)?, to_sql(b.debits_pending)?])?;
    Ok(())
}

/// Posts a transfer: checks it against the loaded balances, writes both
/// accounts and the transfer row. Returns the transfer id and the credited
/// account's new balance.
fn post_transfer(conn: &Connection, t: Transfer, kind: &str, now_ms: i64) -> Result<(i64, Balance), Error> {
    let mut debit = load_balance(conn, t.debit)?;
    let mut credit = load_balance(conn, t.credit)?;
    ledger::post(t, &mut debit, &mut credit)?;
    save_balance(conn, t.debit, &debit)?;
    save_balance(conn, t.credit, &credit)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO transfers (debit, credit, amount, kind, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![t.debit.0, t.credit.0, to_sql(t.amount)?, kind, now_ms])?;
    Ok((conn.last_insert_rowid(), credit))
}

fn emit(
    conn: &Connection,
    kind: &str,
    agent_id: Option<&str>,
    data: &serde_json::Value,
    now_ms: i64,
) -> Result<(), Error> {
    conn.prepare_cached("INSERT INTO events (type, agent_id, data, created_at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![kind, agent_id, data.to_string(), now_ms]))
        .map_err(sql_err("recording an event"))
        .map(|_| ())
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::internal("sqlite", e)
    }
}

fn scope_from(s: &str) -> Result<Scope, Error> {
    Scope::parse(s).ok_or_else(|| Error::Internal(format!("unknown stored scope {s}")))
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, i64, String, Vec<u8>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn key_record(
    (id, agent_id, account, scope, digest): (String, String, i64, String, Vec<u8>),
) -> Result<KeyRecord, Error> {
    Ok(KeyRecord {
        id,
        agent_id,
        account: AccountId(account),
        scope: scope_from(&scope)?,
        digest: SecretDigest(hash32(digest)?),
    })
}

const KEY_COLUMNS: &str =
    "k.id, k.agent_id, a.account_id, k.scope, k.digest FROM keys k JOIN agents a ON a.id = k.agent_id";

fn insert_key(conn: &Connection, key: &NewKey, now_ms: i64) -> Result<(), Error> {
    conn.prepare_cached("INSERT INTO keys (id, agent_id, digest, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![key.id, key.agent_id, key.digest.0.as_slice(), key.scope.as_str(), now_ms]))
        .map_err(sql_err("storing a key"))
        .map(|_| ())
}

const AGENT_COLUMNS: &str = "g.id, g.name, g.account_id, g.created_at, a.debits_posted, a.credits_posted, a.debits_pending \
     FROM agents g JOIN accounts a ON a.id = g.account_id";

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, i64, i64, i64, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn agent_record(
    (id, name, account, created, d, c, p): (String, String, i64, i64, i64, i64, i64),
) -> Result<AgentRecord, Error> {
    Ok(AgentRecord {
        id,
        name,
        account: AccountId(account),
        created_at_ms: created,
        balance: Balance { debits_posted: msat(d)?, credits_posted: msat(c)?, debits_pending: msat(p)? },
    })
}

const INVOICE_COLUMNS: &str = "payment_hash, agent_id, amount, memo, bolt11, preimage, status, created_at, expires_at, paid_at, seq, account_id FROM invoices";

struct InvoiceRow {
    record: InvoiceRecord,
    seq: i64,
    account: AccountId,
}

fn invoice_from_row(r: &Row<'_>) -> rusqlite::Result<Result<InvoiceRow, Error>> {
    let status: String = r.get(6)?;
    let build = |hash: Vec<u8>, preimage: Vec<u8>, amount: i64| -> Result<InvoiceRow, Error> {
        Ok(InvoiceRow {
            record: InvoiceRecord {
                payment_hash: hash32(hash)?,
                agent_id: r.get(1)?,
                amount: msat(amount)?,
                memo: r.get(3)?,
                bolt11: r.get(4)?,
                preimage: hash32(preimage)?,
                status: if status == "paid" { StoredInvoiceStatus::Paid } else { StoredInvoiceStatus::Open },
                created_at_ms: r.get(7)?,
                expires_at_ms: r.get(8)?,
                paid_at_ms: r.get(9)?,
            },
            seq: r.get(10)?,
            account: AccountId(r.get(11)?),
        })
    };
    Ok(build(r.get(0)?, r.get(5)?, r.get(2)?))
}

fn load_invoice(conn: &Connection, payment_hash: &[u8; 32]) -> Result<Option<InvoiceRow>, Error> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {INVOICE_COLUMNS} WHERE payment_hash = ?1"))?;
    stmt.query_row([payment_hash.as_slice()], invoice_from_row).optional()?.transpose()
}

const PAYMENT_COLUMNS: &str =
    "id, agent_id, payment_hash, amount, fee, status, purpose, payee_agent_id, preimage, created_at, seq FROM payments";

fn payment_from_row(r: &Row<'_>) -> rusqlite::Result<Result<(PaymentRecord, i64), Error>> {
    let hash: Vec<u8> = r.get(2)?;
    let preimage: Option<Vec<u8>> = r.get(8)?;
    let (amount, fee): (i64, i64) = (r.get(3)?, r.get(4)?);
    let status: String = r.get(5)?;
    let (id, agent_id, purpose, payee, created, seq): (String, String, String, Option<String>, i64, i64) =
        (r.get(0)?, r.get(1)?, r.get(6)?, r.get(7)?, r.get(9)?, r.get(10)?);
    Ok((|| {
        let status = match status.as_str() {
            "succeeded" => PaymentStatus::Succeeded,
            "pending" => PaymentStatus::Pending,
            "failed" => PaymentStatus::Failed,
            other => return Err(Error::Internal(format!("unknown stored payment status {other}"))),
        };
        Ok((
            PaymentRecord {
                id,
                agent_id,
                payment_hash: hash32(hash)?,
                amount: msat(amount)?,
                fee: msat(fee)?,
                status,
                purpose,
                payee_agent_id: payee,
                preimage: preimage.map(hash32).transpose()?,
                created_at_ms: created,
            },
            seq,
        ))
    })())
}

fn load_payment(conn: &Connection, id: &str) -> Result<PaymentRecord, Error> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {PAYMENT_COLUMNS} WHERE id = ?1"))?;
    let row = stmt.query_row([id], payment_from_row).optional()?;
    row.transpose()?
        .map(|(p, _)| p)
        .ok_or_else(|| Error::Internal("an idempotency record names a missing payment".into()))
}

/// The payment an earlier request with this idempotency key made, if any.
fn replay_idempotent(conn: &Connection, agent_id: &str, idem: &Idempotency) -> Result<Option<PaymentRecord>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT request_digest, payment_id FROM idempotency WHERE agent_id = ?1 AND key = ?2")?;
    let found: Option<(Vec<u8>, String)> =
        stmt.query_row(params![agent_id, idem.key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    let Some((digest, payment_id)) = found else { return Ok(None) };
    if digest.as_slice() != idem.request_digest.as_slice() {
        return Err(Error::IdempotencyConflict);
    }
    load_payment(conn, &payment_id).map(Some)
}

fn pay_internal(conn: &Connection, pay: PayInternal) -> Result<PayAttempt, Error> {
    if let Some(idem) = &pay.idempotency
        && let Some(earlier) = replay_idempotent(conn, &pay.payer.agent_id, idem)?
    {
        return Ok(PayAttempt::Paid(earlier));
    }
    let Some(InvoiceRow { record: invoice, account: payee_account, .. }) = load_invoice(conn, &pay.payment_hash)?
    else {
        return Ok(PayAttempt::NotOurs);
    };
    check_payable(&invoice, &pay)?;
    let transfer = Transfer { debit: pay.payer.account, credit: payee_account, amount: invoice.amount };
    let (transfer_id, _) = post_transfer(conn, transfer, "payment", pay.now_ms)?;
    conn.prepare_cached("UPDATE invoices SET status = 'paid', paid_at = ?2 WHERE payment_hash = ?1")?
        .execute(params![pay.payment_hash.as_slice(), pay.now_ms])?;
    let payment = PaymentRecord {
        id: pay.payment_id,
        agent_id: pay.payer.agent_id,
        payment_hash: pay.payment_hash,
        amount: invoice.amount,
        fee: Msat::ZERO,
        status: PaymentStatus::Succeeded,
        purpose: pay.purpose,
        payee_agent_id: Some(invoice.agent_id.clone()),
        preimage: Some(invoice.preimage),
        created_at_ms: pay.now_ms,
    };
    insert_payment(conn, &payment, &pay.payer.key_id, transfer_id)?;
    if let Some(idem) = &pay.idempotency {
        conn.prepare_cached(
            "INSERT INTO idempotency (agent_id, key, request_digest, payment_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![payment.agent_id, idem.key, idem.request_digest.as_slice(), payment.id, pay.now_ms])?;
    }
    let hash_hex = hex::encode(pay.payment_hash);
    let data = serde_json::json!({
        "payment_id": payment.id, "payment_hash": hash_hex, "amount_msat": invoice.amount.as_u64(),
        "payer_agent_id": payment.agent_id, "payee_agent_id": invoice.agent_id, "key_id": pay.payer.key_id,
        "purpose": payment.purpose,
    });
    emit(conn, "payment.succeeded", Some(&payment.agent_id), &data, pay.now_ms)?;
    emit(conn, "invoice.paid", Some(&invoice.agent_id), &data, pay.now_ms)?;
    Ok(PayAttempt::Paid(payment))
}

fn check_payable(invoice: &InvoiceRecord, pay: &PayInternal) -> Result<(), Error> {
    if invoice.bolt11 != pay.bolt11 {
        return Err(Error::InvalidInvoice(
            "the invoice does not match the one this gateway issued for its payment hash".into(),
        ));
    }
    if invoice.agent_id == pay.payer.agent_id {
        return Err(Error::SelfPayment);
    }
    if invoice.status == StoredInvoiceStatus::Paid {
        return Err(Error::InvoiceAlreadyPaid);
    }
    if pay.now_ms >= invoice.expires_at_ms {
        return Err(Error::InvoiceExpired);
    }
    Ok(())
}

fn insert_payment(conn: &Connection, p: &PaymentRecord, key_id: &str, transfer_id: i64) -> Result<(), Error> {
    let status = match p.status {
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Pending => "pending",
        PaymentStatus::Failed => "failed",
    };
    conn.prepare_cached(
        "INSERT INTO payments (id, agent_id, key_id, payment_hash, amount, fee, status, purpose, payee_agent_id, \
         preimage, transfer_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        p.id,
        p.agent_id,
        key_id,
        p.payment_hash.as_slice(),
        to_sql(p.amount)?,
        to_sql(p.fee)?,
        status,
        p.purpose,
        p.payee_agent_id,
        p.preimage.as_ref().map(|x| x.as_slice()),
        transfer_id,
        p.created_at_ms
    ])?;
    Ok(())
}

fn page_bounds(page: PageRequest) -> (i64, i64) {
    let limit = page.limit.clamp(1, PAGE_LIMIT_MAX);
    (page.before.unwrap_or(i64::MAX), i64::from(limit))
}

fn next_cursor(rows: usize, limit: i64, last_seq: Option<i64>) -> Option<i64> {
    if i64::try_from(rows).unwrap_or(i64::MAX) >= limit { last_seq } else { None }
}

impl Store for SqliteStore {
    fn operator_digest(&self) -> StoreFuture<'_, Option<SecretDigest>> {
        self.read(|conn| {
            let value: Option<Vec<u8>> = conn
                .query_row("SELECT value FROM meta WHERE key = 'operator_token_digest'", [], |r| r.get(0))
                .optional()?;
            value.map(|v| hash32(v).map(SecretDigest)).transpose()
        })
    }

    fn set_operator_digest(&self, digest: SecretDigest) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('operator_token_digest', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [digest.0.as_slice()],
            )?;
            Ok(())
        })
    }

    fn create_agent(&self, id: String, name: String, key: NewKey, now_ms: i64) -> StoreFuture<'_, AgentRecord> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO accounts (id, kind) VALUES ((SELECT MAX(MAX(id), ?1) + 1 FROM accounts), 'wallet')",
                [AccountId::FIRST_WALLET - 1],
            )?;
            let account = AccountId(conn.last_insert_rowid());
            conn.execute(
                "INSERT INTO agents (id, account_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, account.0, name, now_ms],
            )?;
            insert_key(conn, &key, now_ms)?;
            emit(conn, "agent.created", Some(&id), &serde_json::json!({"agent_id": id, "name": name}), now_ms)?;
            Ok(AgentRecord { id, name, account, balance: Balance::default(), created_at_ms: now_ms })
        })
    }

    fn agents(&self) -> StoreFuture<'_, Vec<AgentRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {AGENT_COLUMNS} ORDER BY g.created_at, g.id"))?;
            let rows = stmt.query_map([], agent_from_row)?;
            rows.map(|r| agent_record(r?)).collect()
        })
    }

    fn agent(&self, id: String) -> StoreFuture<'_, Option<AgentRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {AGENT_COLUMNS} WHERE g.id = ?1"))?;
            stmt.query_row([id], agent_from_row).optional()?.map(agent_record).transpose()
        })
    }

    fn create_key(&self, key: NewKey, now_ms: i64) -> StoreFuture<'_, KeyRecord> {
        self.write(move |conn| {
            let account: Option<i64> = conn
                .query_row("SELECT account_id FROM agents WHERE id = ?1", [&key.agent_id], |r| r.get(0))
                .optional()?;
            let account = account.ok_or(Error::NotFound("agent"))?;
            insert_key(conn, &key, now_ms)?;
            let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id, "scope": key.scope.as_str()});
            emit(conn, "key.created", Some(&key.agent_id), &data, now_ms)?;
            Ok(KeyRecord {
                id: key.id,
                agent_id: key.agent_id,
                account: AccountId(account),
                scope: key.scope,
                digest: key.digest,
            })
        })
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> StoreFuture<'_, Option<KeyRecord>> {
        self.write(move |conn| {
            let sql = format!("SELECT {KEY_COLUMNS} WHERE k.id = ?1 AND k.revoked_at IS NULL");
            let Some(row) = conn.query_row(&sql, [&key_id], key_from_row).optional()? else { return Ok(None) };
            let key = key_record(row)?;
            conn.execute("UPDATE keys SET revoked_at = ?2 WHERE id = ?1", params![key_id, now_ms])?;
            emit(
                conn,
                "key.revoked",
                Some(&key.agent_id),
                &serde_json::json!({"agent_id": key.agent_id, "key_id": key.id}),
                now_ms,
            )?;
            Ok(Some(key))
        })
    }

    fn live_keys(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {KEY_COLUMNS} WHERE k.revoked_at IS NULL"))?;
            let rows = stmt.query_map([], key_from_row)?;
            rows.map(|r| key_record(r?)).collect()
        })
    }

    fn transfer(&self, transfer: Transfer, kind: &'static str, now_ms: i64) -> StoreFuture<'_, (i64, Balance)> {
        self.write(move |conn| {
            let posted = post_transfer(conn, transfer, kind, now_ms)?;
            let data = serde_json::json!({
                "transfer_id": posted.0, "debit": transfer.debit.to_string(), "credit": transfer.credit.to_string(),
                "amount_msat": transfer.amount.as_u64(), "kind": kind,
            });
            emit(conn, &format!("transfer.{kind}"), None, &data, now_ms)?;
            Ok(posted)
        })
    }

    fn balance(&self, account: AccountId) -> StoreFuture<'_, Balance> {
        self.read(move |conn| load_balance(conn, account))
    }

    fn insert_invoice(&self, inv: InvoiceRecord) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let account: i64 = conn
                .prepare_cached("SELECT account_id FROM agents WHERE id = ?1")?
                .query_row([&inv.agent_id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound("agent"))?;
            conn.prepare_cached(
                "INSERT INTO invoices (payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status, \
                 created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9)",
            )?
            .execute(params![
                inv.payment_hash.as_slice(),
                inv.agent_id,
                account,
                to_sql(inv.amount)?,
                inv.memo,
                inv.bolt11,
                inv.preimage.as_slice(),
                inv.created_at_ms,
                inv.expires_at_ms
            ])?;
            let data = serde_json::json!({
                "payment_hash": hex::encode(inv.payment_hash), "agent_id": inv.agent_id,
                "amount_msat": inv.amount.as_u64(), "expires_at_ms": inv.expires_at_ms,
            });
            emit(conn, "invoice.created", Some(&inv.agent_id), &data, inv.created_at_ms)
        })
    }

    fn invoice(&self, payment_hash: [u8; 32]) -> StoreFuture<'_, Option<InvoiceRecord>> {
        self.read(move |conn| Ok(load_invoice(conn, &payment_hash)?.map(|row| row.record)))
    }

    fn invoices(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)> {
        self.read(move |conn| {
            let (before, limit) = page_bounds(page);
            let sql = format!("SELECT {INVOICE_COLUMNS} WHERE agent_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows: Vec<InvoiceRow> = stmt
                .query_map(params![agent_id, before, limit], invoice_from_row)?
                .map(|r| r?)
                .collect::<Result<_, _>>()?;
            let cursor = next_cursor(rows.len(), limit, rows.last().map(|r| r.seq));
            Ok((rows.into_iter().map(|r| r.record).collect(), cursor))
        })
    }

    fn pay_internal(&self, pay: PayInternal) -> StoreFuture<'_, PayAttempt> {
        self.write(move |conn| pay_internal(conn, pay))
    }

    fn payments(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<PaymentRecord>, Option<i64>)> {
        self.read(move |conn| {
            let (before, limit) = page_bounds(page);
            let sql = format!("SELECT {PAYMENT_COLUMNS} WHERE agent_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows: Vec<(PaymentRecord, i64)> = stmt
                .query_map(params![agent_id, before, limit], payment_from_row)?
                .map(|r| r?)
                .collect::<Result<_, _>>()?;
            let cursor = next_cursor(rows.len(), limit, rows.last().map(|r| r.1));
            Ok((rows.into_iter().map(|r| r.0).collect(), cursor))
        })
    }

    fn audit_input(&self) -> StoreFuture<'_, AuditInput> {
        self.read(|conn| {
            // One read transaction, so the accounts and the transfers are
            // one consistent snapshot.
            conn.execute_batch("BEGIN")?;
            let result = audit_snapshot(conn);
            conn.execute_batch("COMMIT")?;
            result
        })
    }
}

fn audit_snapshot(conn: &Connection) -> Result<AuditInput, Error> {
    let mut stmt =
        conn.prepare("SELECT id, debits_posted, credits_posted, debits_pending FROM accounts ORDER BY id")?;
    let accounts = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)))?
        .map(|r| {
            let (id, d, c, p) = r?;
            Ok((AccountId(id), Balance { debits_posted: msat(d)?, credits_posted: msat(c)?, debits_pending: msat(p)? }))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut sums = ledger::TransferSums::default();
    let mut stmt = conn.prepare("SELECT debit, credit, amount FROM transfers")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let amount = msat(r.get(2)?)?;
        sums.add(&Transfer { debit: AccountId(r.get(0)?), credit: AccountId(r.get(1)?), amount });
    }
    Ok(AuditInput { accounts, sums })
}
