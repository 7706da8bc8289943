//! The embedded store: SQLite in WAL mode.
//!
//! All writes go through one writer thread that owns the only write
//! connection. It takes the jobs waiting in its queue (up to
//! [`Durability::batch_jobs_max`]), runs each in its own savepoint inside
//! one transaction, commits once, and only then answers the callers: group
//! commit. One writer also means every check-then-write (balance, invoice
//! status, idempotency) is serialised, so no race can overspend a wallet.
//!
//! Durability: by default `synchronous=FULL` in WAL mode (`Durability::Full`):
//! every commit is synced to disk before its callers are answered, so an
//! acknowledged request survives a crash of the machine (power loss), not
//! only of the process. Group commit makes one sync serve a whole batch.
//! `Durability::Process` (`synchronous=NORMAL`) is the explicit, weaker
//! option: it survives a crash of the process (SIGKILL), but a power loss
//! may lose the last acknowledged commits.
//!
//! Reads go to a small pool of read-only connections, which WAL lets run
//! beside the writer.
//!
//! SQLite's page cache is wrapped (`pcache.rs`) so that a commit does not
//! walk the whole cache looking for pages past the end of the file.
//!
//! Checkpoints (copying the WAL back into the database file, and syncing
//! it) run on a thread of their own, so that SQLite's automatic checkpoint
//! does not stall every waiting request. A writer that never pauses would keep
//! such a checkpoint from ever letting the WAL start over. So once the WAL
//! holds [`WAL_RESTART_FRAMES`], the writer waits for the next background
//! pass to finish, copies what that pass left and lets SQLite start the WAL
//! over at its next transaction.

mod outbox;
pub mod pcache;
mod schema;

use super::*;
use crate::payment::{external, internal};
use coffer_client::PaymentStatus;
use coffer_client::Scope;
use coffer_core::Msat;
use coffer_core::audit_chain;
use coffer_core::ledger::{self, Transfer};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ffi, params};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

/// The most jobs committed in one transaction when every commit is synced
/// (`Durability::Full`): bounds a batch's latency.
pub const BATCH_JOBS_MAX: usize = 1_024;
/// The most jobs in one transaction when commits are not synced
/// (`Durability::Process`). Such a commit costs only the WAL frames it
/// writes, so a small batch is cheap, and it answers its callers sooner:
/// while the writer runs the next batch, the HTTP workers answer this one's
/// callers and read their next requests. Measured with `coffer bench` at 32
/// clients: 16 gives 5-15% more payments/s than 1,024 (BENCHMARKS.md).
const BATCH_JOBS_UNSYNCED_MAX: usize = 16;
/// The most jobs waiting for the writer; callers wait beyond it.
const QUEUE_JOBS_MAX: usize = 8_192;
// A batch is taken from the queue: the unsynced batch is the smaller one,
// and a full queue holds several full batches.
const _: () = assert!(BATCH_JOBS_UNSYNCED_MAX >= 1);
const _: () = assert!(BATCH_JOBS_UNSYNCED_MAX <= BATCH_JOBS_MAX);
const _: () = assert!(BATCH_JOBS_MAX < QUEUE_JOBS_MAX);
/// The writer's page cache, at most (SQLite fills it as pages are used).
/// With a long history the random indexes (payment hashes, per-agent
/// listings, idempotency keys) outgrow a small cache, and every miss is a
/// read from the file: with 1,000,000 payments stored, 64 MiB cost ~30% of
/// the throughput, 512 MiB under 10%.
const PAGE_CACHE_MAX_KIB: u64 = 512 * 1024;
/// Read-only connections kept open.
const READERS_MAX: usize = 8;
/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_INTERVAL_MS: u64 = 50;
/// Past this many frames (about 128 MiB of 4 KiB pages) the writer starts
/// the WAL over from its beginning. Each restart stalls the writer for a
/// checkpoint's two fsyncs (9-23 ms here, fresh or with millions of
/// payments stored, since the checkpointer syncs the database file after
/// its passes), so the bound sets how often that happens.
const WAL_RESTART_FRAMES: u32 = 32_768;
/// The WAL file is truncated to this size after it starts over: above the
/// restart bound, so that steady load does not shrink and regrow the file
/// at every restart.
const WAL_SIZE_LIMIT_BYTES: i64 = 256 * 1024 * 1024;
// Above the restart bound: the restart frames, each a 4 KiB page and its
// 24-byte frame header, plus the 32-byte WAL header.
const _: () = assert!(32 + WAL_RESTART_FRAMES as i64 * (4_096 + 24) < WAL_SIZE_LIMIT_BYTES);
/// A WAL past its bound is forced to start over (waiting for readers) after
/// this many batches, if the cheap way (`WalRestart`) did not succeed.
const WAL_RESTART_WAIT_BATCHES_MAX: u32 = 1_024;
const _: () = assert!(WAL_RESTART_WAIT_BATCHES_MAX >= 1);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a process crash; a power loss may lose the last commits.
    Process,
    /// Survives power loss: one fsync per batch. The default.
    #[default]
    Full,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "full" => Ok(Durability::Full),
            "process" => Ok(Durability::Process),
            other => Err(format!("durability is full or process, not {other:?}")),
        }
    }
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::Full => "full",
        }
    }

    /// The most jobs committed in one transaction.
    pub fn batch_jobs_max(self) -> usize {
        match self {
            Durability::Process => BATCH_JOBS_UNSYNCED_MAX,
            Durability::Full => BATCH_JOBS_MAX,
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), &Error>) + Send>;
type Job = Box<dyn FnOnce(&Writer) -> Reply + Send>;

/// Parsed policies by agent, with the revision they were parsed from: a
/// payment re-parses a policy only after it changed.
type PolicyCache = HashMap<String, (i64, Arc<Policy>)>;

/// What the writer thread owns: the only write connection, and caches that
/// only it touches.
struct Writer {
    conn: Connection,
    policies: RefCell<PolicyCache>,
    /// Counts commits, for watchers of the outbox.
    commits: watch::Sender<u64>,
    batch_jobs_max: usize,
    /// Counts the background checkpoints that finished.
    checkpoints: Arc<AtomicU64>,
    /// Frames in the WAL after the last commit (from SQLite's WAL hook).
    wal_frames: Arc<AtomicU32>,
    /// Past this many frames the WAL starts over ([`WAL_RESTART_FRAMES`]).
    wal_restart_frames: u32,
}

pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
    commits: watch::Receiver<u64>,
}

impl SqliteStore {
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore, Error> {
        SqliteStore::open_with_wal_bound(path, durability, WAL_RESTART_FRAMES)
    }

    fn open_with_wal_bound(path: &Path, durability: Durability, wal_restart_frames: u32) -> Result<SqliteStore, Error> {
        // Before the first connection of the process, or never.
        pcache::install();
        // The rows hold preimages: the file, and its -wal and -shm (which
        // SQLite creates with the database file's mode), are the owner's only.
        crate::secrets::create_private_file(path).map_err(|e| Error::internal("creating the database file", e))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                crate::secrets::restrict_to_owner(&side)
                    .map_err(|e| Error::internal("restricting the WAL files", e))?;
            }
        }
        let mut conn = Connection::open(path).map_err(|e| Error::internal("opening the database", e))?;
        configure_writer(&conn, durability)?;
        let wal_frames = Arc::new(AtomicU32::new(0));
        let frames = Arc::clone(&wal_frames);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            frames.store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }))
        .map_err(|e| Error::internal("configuring the database", e))?;
        schema::migrate(&conn)?;
        let (jobs, queue) = mpsc::channel(QUEUE_JOBS_MAX);
        let (commits, commits_seen) = watch::channel(0);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            policies: RefCell::new(HashMap::new()),
            commits,
            batch_jobs_max: durability.batch_jobs_max(),
            checkpoints: Arc::clone(&checkpoints),
            wal_frames,
            wal_restart_frames,
        };
        std::thread::Builder::new()
            .name("coffer-sqlite-writer".into())
            .spawn(move || run_writer(writer, queue))
            .map_err(|e| Error::internal("starting the writer thread", e))?;
        let checkpointer = Connection::open(path).map_err(|e| Error::internal("opening the checkpointer", e))?;
        let stop = jobs.downgrade();
        std::thread::Builder::new()
            .name("coffer-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer, stop, &checkpoints))
            .map_err(|e| Error::internal("starting the checkpoint thread", e))?;
        let readers = Arc::new(ReaderPool { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        Ok(SqliteStore { jobs, readers, commits: commits_seen })
    }

    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteTx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |writer| {
            let result =
                in_savepoint(&writer.conn, |conn| op(&mut SqliteTx { conn, policies: Some(&writer.policies) }));
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
        F: FnOnce(&mut SqliteTx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = readers.take()?;
                let result = op(&mut SqliteTx { conn: &conn, policies: None });
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
         PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{PAGE_CACHE_MAX_KIB}; PRAGMA wal_autocheckpoint=0; \
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

fn run_writer(writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(writer.batch_jobs_max);
    let mut restart = WalRestart { waiting: None, last_frames: 0 };
    while let Some(first) = queue.blocking_recv() {
        restart.between_batches(&writer);
        let commit = run_batch(&writer, first, &mut queue, &mut replies);
        let commit_ref = commit.as_ref().map(|_| ());
        // Counted before the callers hear of it: a caller that has its
        // answer sees the counter past its own commit.
        if commit.is_ok() {
            writer.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        for reply in replies.drain(..) {
            reply(commit_ref);
        }
        if let Err(e) = commit {
            tracing::error!(error = %e, "a batch failed to commit; its callers were told");
        }
    }
}

/// Bounds the WAL. SQLite starts the WAL over by itself when a transaction
/// begins while every frame is in the database file and no reader needs
/// the old ones. A writer that never pauses gives the background
/// checkpointer no such moment, so the writer makes one: right after a
/// background pass it copies the frames committed since (a PASSIVE
/// checkpoint: no waiting for readers), and its next transaction starts
/// the WAL over. A RESTART checkpoint instead waits for every reader and
/// copies more: measured at 18-33 ms of stalled writer on a fresh store,
/// where the PASSIVE copy took 10-25 ms.
struct WalRestart {
    /// The WAL is past its bound: (background passes finished when last
    /// looked, batches since it passed).
    waiting: Option<(u64, u32)>,
    /// Frames after the batch before: fewer now means the WAL started over.
    last_frames: u32,
}

impl WalRestart {
    fn between_batches(&mut self, writer: &Writer) {
        let frames = writer.wal_frames.load(Ordering::Relaxed);
        if frames < self.last_frames {
            crate::metrics::METRICS.record_wal_restart();
        }
        self.last_frames = frames;
        if frames < writer.wal_restart_frames {
            self.waiting = None;
            return;
        }
        let finished = writer.checkpoints.load(Ordering::Acquire);
        let Some((seen, waited)) = &mut self.waiting else {
            self.waiting = Some((finished, 0));
            return;
        };
        *waited += 1;
        if *waited >= WAL_RESTART_WAIT_BATCHES_MAX {
            self.waiting = None;
            checkpoint(&writer.conn, "RESTART");
        } else if *seen != finished {
            // A reader on an old snapshot keeps the WAL from starting over;
            // then this runs again after the next pass.
            *seen = finished;
            checkpoint(&writer.conn, "PASSIVE");
        }
    }
}

/// The writer's checkpoint: it commits nothing meanwhile, so its time is
/// counted (`coffer_store_wal_stall_microseconds_total`). Busy (a
/// background checkpoint is running) is fine: the next check tries again.
fn checkpoint(conn: &Connection, mode: &str) {
    let started = std::time::Instant::now();
    if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
        tracing::warn!(error = %e, mode, "checkpoint failed; will retry");
    }
    crate::metrics::METRICS.record_wal_stall(started.elapsed());
}

fn run_batch(
    writer: &Writer,
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    replies: &mut Vec<Reply>,
) -> Result<(), Error> {
    let conn = &writer.conn;
    let begin = conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| Error::internal("begin", e));
    if let Err(e) = begin {
        // Run nothing: answer this job with the error.
        replies.push(Box::new(move |_| drop(first)));
        return Err(e);
    }
    replies.push(first(writer));
    while replies.len() < writer.batch_jobs_max {
        match queue.try_recv() {
            Ok(job) => replies.push(job(writer)),
            Err(_) => break,
        }
    }
    crate::metrics::METRICS.record_batch(replies.len());
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        // Changes of this batch may be in the caches: forget them.
        writer.policies.borrow_mut().clear();
        Error::internal("commit", e)
    })
}

/// Copies the WAL into the database every few milliseconds, without
/// blocking the writer (PASSIVE), and syncs the database file after each
/// pass that copied frames, until the store is dropped.
fn run_checkpointer(conn: Connection, store: mpsc::WeakSender<Job>, finished: &AtomicU64) {
    if let Err(e) = conn.execute_batch("PRAGMA busy_timeout=5000;") {
        tracing::error!(error = %e, "the checkpointer cannot configure its connection");
        return;
    }
    // The WAL's frames copied into the database, as the last pass reported
    // them: a pass that copied nothing new leaves nothing to sync, so an
    // idle gateway does not sync the disk 20 times a second.
    let mut copied_before: i64 = 0;
    while store.upgrade().is_some() {
        std::thread::sleep(std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS));
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2)) {
            Ok(copied) => {
                if copied > 0
                    && copied != copied_before
                    && let Err(e) = sync_database_file(&conn)
                {
                    tracing::warn!(error = %e, "syncing the database file failed; the next restart syncs it");
                }
                copied_before = copied;
                finished.fetch_add(1, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; the WAL grows until the next one succeeds"),
        }
    }
}

/// Syncs the database file (not the WAL) through this connection's own
/// file handle.
///
/// Why: SQLite syncs the database file only at the end of a checkpoint that
/// reaches the WAL's last frame. A background pass that the writer outruns
/// never does, so every page the passes copied since the WAL last started
/// over waited, unsynced, for the writer's own checkpoint before the next
/// restart, and the writer stalled on that fsync: measured 73 ms per
/// restart with 1,000,000 payments stored (their pages are scattered over
/// the file), 15 ms on a fresh store. Syncing here, off the writer's path,
/// leaves that fsync only the last few pages. An extra sync only makes
/// copied pages durable sooner; it changes nothing SQLite relies on.
///
/// SQLite's own handle, not a second `File` on the same path: closing any
/// descriptor of a file drops the process's POSIX locks on it, SQLite's
/// included.
fn sync_database_file(conn: &Connection) -> Result<(), Error> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread only; FILE_POINTER
    // writes the main database's `sqlite3_file` (or null) into `file`,
    // which the connection owns and keeps open while it is open.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(Error::Internal(format!("no database file handle (SQLite code {rc})")));
    }
    // SAFETY: `file` is the connection's open file; its methods are the
    // VFS's, set while the file is open (null once closed).
    let sync = unsafe { (*file).pMethods.as_ref().and_then(|m| m.xSync) };
    let Some(sync) = sync else { return Err(Error::Internal("the database file is not open".into())) };
    // SAFETY: the VFS's own sync of its own open file, from the only thread
    // using this connection.
    let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
    if rc != ffi::SQLITE_OK {
        return Err(Error::Internal(format!("fsync of the database file failed (SQLite code {rc})")));
    }
    Ok(())
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

fn msat(v: i64) -> Result<Msat, Error> {
    Msat::from_sql(v).map_err(|e| Error::internal("stored amount", e))
}

fn to_sql(m: Msat) -> Result<i64, Error> {
    m.to_sql().map_err(|e| Error::internal("amount", e))
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::Internal("a stored hash is not 32 bytes".into()))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::internal("serialising state", e))
}

fn from_json<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> Result<T, Error> {
    match text {
        Some(t) => serde_json::from_str(&t).map_err(|e| Error::internal("reading stored state", e)),
        None => Ok(T::default()),
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::internal("sqlite", e)
    }
}

/// One store transaction on SQLite: the writer's (inside its batch) or a
/// reader's.
pub struct SqliteTx<'a> {
    conn: &'a Connection,
    /// The writer's policy cache; readers parse every time.
    policies: Option<&'a RefCell<PolicyCache>>,
}

fn balance_row(d: i64, c: i64, p: i64) -> Result<Balance, Error> {
    Ok(Balance { debits_posted: msat(d)?, credits_posted: msat(c)?, debits_pending: msat(p)? })
}

const KEY_COLUMNS: &str =
    "k.id, k.agent_id, a.account_id, k.scope, k.digest, k.expires_at FROM keys k JOIN agents a ON a.id = k.agent_id";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<Result<KeyRecord, Error>> {
    let (id, agent_id, account, scope, digest): (String, String, i64, String, Vec<u8>) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let expires_at_ms: Option<i64> = r.get(5)?;
    Ok((|| {
        Ok(KeyRecord {
            id,
            agent_id,
            account: AccountId(account),
            scope: Scope::parse(&scope).ok_or_else(|| Error::Internal(format!("unknown stored scope {scope}")))?,
            digest: SecretDigest(hash32(digest)?),
            expires_at_ms,
        })
    })())
}

const AGENT_COLUMNS: &str = "g.id, g.name, g.account_id, g.created_at, a.debits_posted, a.credits_posted, \
     a.debits_pending, g.parent_id, g.can_create_subagents, g.frozen_reason \
     FROM agents g JOIN accounts a ON a.id = g.account_id";

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AgentRecord, Error>> {
    let (id, name, account, created_at_ms): (String, String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (parent_id, can_create, frozen_reason): (Option<String>, i64, Option<String>) =
        (r.get(7)?, r.get(8)?, r.get(9)?);
    let balance = balance_row(r.get(4)?, r.get(5)?, r.get(6)?);
    Ok(balance.map(|balance| AgentRecord {
        id,
        name,
        account: AccountId(account),
        created_at_ms,
        balance,
        parent_id,
        can_create_subagents: can_create != 0,
        frozen_reason,
    }))
}

/// The columns [`invoice_from_row`] reads, without `FROM` (for `RETURNING`).
macro_rules! invoice_columns {
    () => {
        "payment_hash, agent_id, amount, memo, bolt11, preimage, status, created_at, \
         expires_at, paid_at, seq, account_id, paid_by, room_id, backend"
    };
}
const INVOICE_COLUMNS: &str = concat!(invoice_columns!(), " FROM invoices");
const INVOICE_COLUMNS_ONLY: &str = invoice_columns!();
/// Open invoices due for the sweep (`?1`: now, `?2`: the deposit watcher's
/// horizon), by the partial index `invoices_open_by_expiry`.
const INVOICES_DUE: &str = "status = 'open' AND expires_at <= ?1 AND (backend IS NULL OR expires_at < ?2)";

fn invoice_from_row(r: &Row<'_>) -> rusqlite::Result<Result<(InvoiceRecord, i64, AccountId), Error>> {
    let (hash, preimage, amount, status): (Vec<u8>, Vec<u8>, i64, String) =
        (r.get(0)?, r.get(5)?, r.get(2)?, r.get(6)?);
    let (agent_id, memo, bolt11): (String, String, String) = (r.get(1)?, r.get(3)?, r.get(4)?);
    let (created, expires, paid, seq, account): (i64, i64, Option<i64>, i64, i64) =
        (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?);
    let (paid_by, room_id, backend): (Option<String>, Option<String>, Option<String>) =
        (r.get(12)?, r.get(13)?, r.get(14)?);
    Ok((|| {
        let record = InvoiceRecord {
            payment_hash: hash32(hash)?,
            agent_id,
            amount: msat(amount)?,
            memo,
            bolt11,
            preimage: hash32(preimage)?,
            status: StoredInvoiceStatus::parse(&status)?,
            created_at_ms: created,
            expires_at_ms: expires,
            paid_at_ms: paid,
            paid_by,
            room_id,
            backend,
        };
        Ok((record, seq, AccountId(account)))
    })())
}

const PAYMENT_COLUMNS: &str = "id, agent_id, payment_hash, amount, fee, status, purpose, payee_agent_id, preimage, created_at, seq, detail FROM payments";

fn payment_from_row(r: &Row<'_>) -> rusqlite::Result<Result<(PaymentRecord, i64), Error>> {
    let hash: Vec<u8> = r.get(2)?;
    let preimage: Option<Vec<u8>> = r.get(8)?;
    let (amount, fee): (i64, i64) = (r.get(3)?, r.get(4)?);
    let status: String = r.get(5)?;
    let (id, agent_id, purpose, payee, created, seq): (String, String, String, Option<String>, i64, i64) =
        (r.get(0)?, r.get(1)?, r.get(6)?, r.get(7)?, r.get(9)?, r.get(10)?);
    let detail: Option<String> = r.get(11)?;
    Ok((|| {
        let status = parse_status(&status)?;
        let record = PaymentRecord {
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
            detail,
        };
        Ok((record, seq))
    })())
}

const EXTERNAL_COLUMNS: &str = "payment_id, payment_hash, bolt11, agent_id, account_id, amount, fee_limit, status, \
     checks, created_at FROM external_payments";

fn external_from_row(r: &Row<'_>) -> rusqlite::Result<Result<ExternalPayment, Error>> {
    let (payment_id, hash, bolt11, agent_id): (String, Vec<u8>, String, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (account, amount, fee_limit, status, checks, created): (i64, i64, i64, String, i64, i64) =
        (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?);
    Ok((|| {
        Ok(ExternalPayment {
            payment_id,
            payment_hash: hash32(hash)?,
            bolt11,
            agent_id,
            account: AccountId(account),
            amount: msat(amount)?,
            fee_limit: msat(fee_limit)?,
            status: parse_status(&status)?,
            checks,
            created_at_ms: created,
        })
    })())
}

fn parse_status(status: &str) -> Result<PaymentStatus, Error> {
    match status {
        "succeeded" => Ok(PaymentStatus::Succeeded),
        "pending" => Ok(PaymentStatus::Pending),
        "failed" => Ok(PaymentStatus::Failed),
        other => Err(Error::Internal(format!("unknown stored payment status {other}"))),
    }
}

fn status_str(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Pending => "pending",
        PaymentStatus::Failed => "failed",
    }
}

const INCOMING_COLUMNS: &str =
    "payment_id, payee_agent_id, payer_agent_id, amount, status, created_at, decided_at FROM incoming";

fn incoming_from_row(r: &Row<'_>) -> rusqlite::Result<Result<IncomingRecord, Error>> {
    let (payment_id, payee, payer, amount, status): (String, String, String, i64, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let (created, decided): (i64, Option<i64>) = (r.get(5)?, r.get(6)?);
    Ok((|| {
        Ok(IncomingRecord {
            payment_id,
            payee_agent_id: payee,
            payer_agent_id: payer,
            amount: msat(amount)?,
            status: IncomingStatus::parse(&status)
                .ok_or_else(|| Error::Internal(format!("unknown incoming status {status}")))?,
            created_at_ms: created,
            decided_at_ms: decided,
        })
    })())
}

const APPROVAL_COLUMNS: &str = "id, agent_id, key_id, payment_hash, bolt11, amount, purpose, payee_agent_id, status, \
     created_at, expires_at, decided_at, decided_by, payment_id, fee_limit, payee_node FROM approvals";

fn approval_from_row(r: &Row<'_>) -> rusqlite::Result<Result<ApprovalRecord, Error>> {
    let (hash, amount, status): (Vec<u8>, i64, String) = (r.get(3)?, r.get(5)?, r.get(8)?);
    let (id, agent_id, key_id, bolt11, purpose): (String, String, String, String, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(4)?, r.get(6)?);
    let (payee, created, expires, decided, by, payment): (
        Option<String>,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
    ) = (r.get(7)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?);
    let (fee_limit, payee_node): (i64, Option<String>) = (r.get(14)?, r.get(15)?);
    Ok((|| {
        Ok(ApprovalRecord {
            id,
            agent_id,
            key_id,
            payment_hash: hash32(hash)?,
            bolt11,
            amount: msat(amount)?,
            purpose,
            payee_agent_id: payee,
            status: ApprovalStatus::parse(&status)
                .ok_or_else(|| Error::Internal(format!("unknown approval status {status}")))?,
            created_at_ms: created,
            expires_at_ms: expires,
            decided_at_ms: decided,
            decided_by: by,
            payment_id: payment,
            fee_limit: msat(fee_limit)?,
            payee_node_hex: payee_node,
        })
    })())
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AuditRecord, Error>> {
    let (seq, body, prev, hash): (i64, String, Vec<u8>, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    Ok((|| Ok(AuditRecord { seq, body, prev_hash: hash32(prev)?, hash: hash32(hash)? }))())
}

impl SqliteTx<'_> {
    fn insert_invoice(&mut self, inv: &InvoiceRecord) -> Result<(), Error> {
        let account: i64 = if inv.agent_id == TREASURY_PAYEE {
            AccountId::TREASURY.0
        } else {
            self.conn
                .prepare_cached("SELECT account_id FROM agents WHERE id = ?1")?
                .query_row([&inv.agent_id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound("agent"))?
        };
        self.conn
            .prepare_cached(
                "INSERT INTO invoices (payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status, \
                 created_at, expires_at, room_id, backend) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10, ?11)",
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
                inv.expires_at_ms,
                inv.room_id,
                inv.backend
            ])?;
        let data = serde_json::json!({
            "payment_hash": hex::encode(inv.payment_hash), "agent_id": inv.agent_id,
            "amount_msat": inv.amount.as_u64(), "expires_at_ms": inv.expires_at_ms, "room_id": inv.room_id,
        });
        let agent_id = (inv.agent_id != TREASURY_PAYEE).then_some(inv.agent_id.as_str());
        self.emit("invoice.created", agent_id, &data, inv.created_at_ms)
    }

    /// Whether a pending approval is due to expire (see
    /// [`Store::approvals_due`]).
    fn approvals_due(&mut self, now_ms: i64) -> Result<bool, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM approvals WHERE status = 'pending' AND expires_at <= ?1 LIMIT 1")?;
        Ok(stmt.exists(params![now_ms])?)
    }

    /// Expires the pending approvals past their time, a batch at a time,
    /// releasing what each reserved.
    fn expire_due_approvals(&mut self, now_ms: i64) -> Result<u64, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
        );
        let due: Vec<ApprovalRecord> = {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![now_ms, EXPIRE_BATCH_MAX], approval_from_row)?;
            rows.map(|r| r?).collect::<Result<_, Error>>()?
        };
        let count = due.len() as u64;
        for approval in due {
            internal::release(self, approval, ApprovalStatus::Expired, "system", now_ms)?;
        }
        Ok(count)
    }

    /// Whether an open invoice is due for the sweep (see
    /// [`Store::expire_invoices`]).
    fn invoices_due(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<bool, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT 1 FROM invoices WHERE {INVOICES_DUE} LIMIT 1"))?;
        Ok(stmt.exists(params![now_ms, watched_since_ms])?)
    }

    /// The sweep's step: one conditional statement, so an invoice paid
    /// meanwhile is not expired (and one expired is not paid: the payment
    /// flows read the status in their own transaction).
    fn expire_invoices(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<u64, Error> {
        let sql = format!(
            "UPDATE invoices SET status = 'expired' WHERE status = 'open' AND seq IN \
             (SELECT seq FROM invoices WHERE {INVOICES_DUE} ORDER BY expires_at LIMIT ?3) RETURNING {INVOICE_COLUMNS_ONLY}"
        );
        let mut expired: Vec<(InvoiceRecord, i64, AccountId)> = {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let limit = i64::from(INVOICE_EXPIRY_BATCH_MAX);
            let rows = stmt.query_map(params![now_ms, watched_since_ms, limit], invoice_from_row)?;
            rows.map(|r| r?).collect::<Result<_, Error>>()?
        };
        // RETURNING gives no order: the events go out in the invoices' order.
        expired.sort_by_key(|(_, seq, _)| *seq);
        for (invoice, _, _) in &expired {
            emit_invoice_expired(self, invoice, now_ms)?;
        }
        Ok(expired.len() as u64)
    }

    /// Sets a webhook's delivery state, with the event of a pause or a
    /// resume. The webhook is read first (by its key) to tell a change.
    fn set_webhook_state(&mut self, id: &str, state: WebhookState, now_ms: i64) -> Result<(), Error> {
        let webhook = outbox::webhook(self.conn, id)?.ok_or(Error::NotFound("webhook"))?;
        outbox::set_webhook_state(self.conn, id, state)?;
        match webhook_state_event(webhook.state, state) {
            Some(kind) => emit_webhook_event(self, kind, &webhook, state, now_ms),
            None => Ok(()),
        }
    }

    fn add_member(&mut self, room_id: &str, member: &str, now_ms: i64) -> Result<(), Error> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO room_members (room_id, member, added_at) VALUES (?1, ?2, ?3)")?
            .execute(params![room_id, member, now_ms])?;
        Ok(())
    }

    fn room_members(&mut self, room_id: &str) -> Result<Vec<String>, Error> {
        let mut stmt =
            self.conn.prepare_cached("SELECT member FROM room_members WHERE room_id = ?1 ORDER BY added_at")?;
        let rows = stmt.query_map([room_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn room(&mut self, id: &str) -> Result<Option<RoomRecord>, Error> {
        let mut stmt = self.conn.prepare_cached("SELECT name, created_by, created_at FROM rooms WHERE id = ?1")?;
        let row: Option<(String, String, i64)> =
            stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
        let Some((name, created_by, created_at_ms)) = row else { return Ok(None) };
        let members = self.room_members(id)?;
        Ok(Some(RoomRecord { id: id.to_owned(), name, created_by, created_at_ms, members }))
    }

    fn messages_where(&mut self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<MessageRecord>, Error> {
        let sql = format!(
            "SELECT m.id, m.room_id, m.sender, m.kind, m.text, m.created_at, m.payment_hash FROM messages m WHERE {filter}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        type Row7 = (i64, String, String, String, String, i64, Option<Vec<u8>>);
        let rows: Vec<Row7> = stmt
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, room_id, sender, kind, text, created_at_ms, hash)| {
                let invoice = match hash {
                    Some(h) => self.invoice(&hash32(h)?)?.map(|(i, _)| i),
                    None => None,
                };
                let kind = if kind == "payment_request" { MessageKind::PaymentRequest } else { MessageKind::Text };
                Ok(MessageRecord { id, room_id, sender, kind, text, created_at_ms, invoice })
            })
            .collect()
    }

    fn policy(&self, agent_id: &str, rev: i64, text: Option<String>) -> Result<Option<Arc<Policy>>, Error> {
        let Some(text) = text else { return Ok(None) };
        if let Some(cache) = self.policies
            && let Some((cached_rev, policy)) = cache.borrow().get(agent_id)
            && *cached_rev == rev
        {
            return Ok(Some(Arc::clone(policy)));
        }
        let policy = Arc::new(Policy::from_json(&text).map_err(|e| Error::internal("a stored policy", e))?);
        if let Some(cache) = self.policies {
            cache.borrow_mut().insert(agent_id.to_owned(), (rev, Arc::clone(&policy)));
        }
        Ok(Some(policy))
    }

    fn agent_record(&mut self, id: &str) -> Result<Option<AgentRecord>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {AGENT_COLUMNS} WHERE g.id = ?1"))?;
        stmt.query_row([id], agent_from_row).optional()?.transpose()
    }

    fn post_transfer(&mut self, t: Transfer, kind: &str, now_ms: i64) -> Result<(i64, Balance), Error> {
        let mut debit = self.balance(t.debit)?;
        let mut credit = self.balance(t.credit)?;
        ledger::post(t, &mut debit, &mut credit)?;
        self.save_balance(t.debit, &debit)?;
        self.save_balance(t.credit, &credit)?;
        Ok((self.insert_transfer(&t, kind, now_ms)?, credit))
    }

    fn insert_key(&mut self, key: &NewKey, now_ms: i64) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO keys (id, agent_id, digest, scope, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![key.id, key.agent_id, key.digest.0.as_slice(), key.scope.as_str(), now_ms, key.expires_at_ms])?;
        Ok(())
    }
}

impl Tx for SqliteTx<'_> {
    fn balance(&mut self, account: AccountId) -> Result<Balance, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT debits_posted, credits_posted, debits_pending FROM accounts WHERE id = ?1")?;
        let row = stmt.query_row([account.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
        let (d, c, p) = row.ok_or(Error::NotFound("account"))?;
        balance_row(d, c, p)
    }

    fn save_balance(&mut self, account: AccountId, b: &Balance) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4 WHERE id = ?1",
        )?;
        stmt.execute(params![
            account.0,
            to_sql(b.debits_posted)?,
            to_sql(b.credits_posted)?,
            to_sql(b.debits_pending)?
        ])?;
        Ok(())
    }

    fn insert_transfer(&mut self, t: &Transfer, kind: &str, now_ms: i64) -> Result<i64, Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO transfers (debit, credit, amount, kind, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![t.debit.0, t.credit.0, to_sql(t.amount)?, kind, now_ms])?;
        Ok(self.conn.last_insert_rowid())
    }

    fn invoice(&mut self, payment_hash: &[u8; 32]) -> Result<Option<(InvoiceRecord, AccountId)>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {INVOICE_COLUMNS} WHERE payment_hash = ?1"))?;
        let row = stmt.query_row([payment_hash.as_slice()], invoice_from_row).optional()?.transpose()?;
        Ok(row.map(|(record, _, account)| (record, account)))
    }

    fn mark_invoice_paid(&mut self, payment_hash: &[u8; 32], payer_agent_id: &str, now_ms: i64) -> Result<(), Error> {
        // Only an open invoice: the flow checked that it is, and the
        // statement asserts it too (the sweep may not expire it meanwhile).
        let mut stmt = self.conn.prepare_cached(
            "UPDATE invoices SET status = 'paid', paid_at = ?2, paid_by = ?3 WHERE payment_hash = ?1 AND status = 'open'",
        )?;
        if stmt.execute(params![payment_hash.as_slice(), now_ms, payer_agent_id])? != 1 {
            return Err(Error::InvoiceAlreadyPaid);
        }
        Ok(())
    }

    fn insert_payment(&mut self, p: &PaymentRecord, key_id: &str, transfer_id: Option<i64>) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO payments (id, agent_id, key_id, payment_hash, amount, fee, status, purpose, payee_agent_id, \
             preimage, transfer_id, created_at, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        stmt.execute(params![
            p.id,
            p.agent_id,
            key_id,
            p.payment_hash.as_slice(),
            to_sql(p.amount)?,
            to_sql(p.fee)?,
            status_str(p.status),
            p.purpose,
            p.payee_agent_id,
            p.preimage.as_ref().map(|x| x.as_slice()),
            transfer_id,
            p.created_at_ms,
            p.detail
        ])?;
        Ok(())
    }

    fn update_payment(&mut self, p: &PaymentRecord, transfer_id: Option<i64>) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE payments SET status = ?2, fee = ?3, preimage = ?4, detail = ?5, \
             transfer_id = COALESCE(?6, transfer_id) WHERE id = ?1",
        )?;
        let changed = stmt.execute(params![
            p.id,
            status_str(p.status),
            to_sql(p.fee)?,
            p.preimage.as_ref().map(|x| x.as_slice()),
            p.detail,
            transfer_id
        ])?;
        if changed != 1 {
            return Err(Error::Internal(format!("payment {} to update is missing", p.id)));
        }
        Ok(())
    }

    fn insert_external(&mut self, e: &ExternalPayment) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO external_payments (payment_id, payment_hash, bolt11, agent_id, account_id, amount, \
             fee_limit, status, checks, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )?;
        stmt.execute(params![
            e.payment_id,
            e.payment_hash.as_slice(),
            e.bolt11,
            e.agent_id,
            e.account.0,
            to_sql(e.amount)?,
            to_sql(e.fee_limit)?,
            status_str(e.status),
            e.checks,
            e.created_at_ms
        ])?;
        Ok(())
    }

    fn external(&mut self, payment_id: &str) -> Result<Option<ExternalPayment>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_id = ?1"))?;
        stmt.query_row([payment_id], external_from_row).optional()?.transpose()
    }

    fn live_external(&mut self, payment_hash: &[u8; 32]) -> Result<Option<ExternalPayment>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_hash = ?1 AND status <> 'failed'"))?;
        stmt.query_row([payment_hash.as_slice()], external_from_row).optional()?.transpose()
    }

    fn update_external(&mut self, e: &ExternalPayment, now_ms: i64) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE external_payments SET status = ?2, checks = ?3, updated_at = ?4 WHERE payment_id = ?1",
        )?;
        stmt.execute(params![e.payment_id, status_str(e.status), e.checks, now_ms])?;
        Ok(())
    }

    fn mark_invoice_paid_from_outside(&mut self, payment_hash: &[u8; 32], now_ms: i64) -> Result<bool, Error> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE invoices SET status = 'paid', paid_at = ?2, paid_by = 'outside' \
             WHERE payment_hash = ?1 AND status IN ('open', 'expired')",
        )?;
        Ok(stmt.execute(params![payment_hash.as_slice(), now_ms])? == 1)
    }

    fn payment(&mut self, id: &str) -> Result<Option<PaymentRecord>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {PAYMENT_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], payment_from_row).optional()?.transpose()?.map(|(p, _)| p))
    }

    fn idempotency(&mut self, agent_id: &str, key: &str) -> Result<Option<([u8; 32], String)>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT request_digest, payment_id FROM idempotency WHERE agent_id = ?1 AND key = ?2")?;
        let row: Option<(Vec<u8>, String)> =
            stmt.query_row(params![agent_id, key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        row.map(|(digest, target)| Ok((hash32(digest)?, target))).transpose()
    }

    fn insert_idempotency(
        &mut self,
        agent_id: &str,
        idem: &Idempotency,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO idempotency (agent_id, key, request_digest, payment_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![agent_id, idem.key, idem.request_digest.as_slice(), target_id, now_ms])?;
        Ok(())
    }

    fn halted(&mut self) -> Result<bool, Error> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM meta WHERE key = 'halted'")?;
        let value: Option<i64> = stmt.query_row([], |r| r.get(0)).optional()?;
        Ok(value == Some(1))
    }

    fn agent_state(&mut self, agent_id: &str) -> Result<Option<AgentState>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT account_id, parent_id, frozen_reason, policy, policy_rev, usage, breaker FROM agents WHERE id = ?1",
        )?;
        type Row7 = (i64, Option<String>, Option<String>, Option<String>, i64, Option<String>, Option<String>);
        let row: Option<Row7> = stmt
            .query_row([agent_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .optional()?;
        let Some((account, parent_id, frozen_reason, policy, rev, usage, breaker)) = row else { return Ok(None) };
        Ok(Some(AgentState {
            agent_id: agent_id.to_owned(),
            account: AccountId(account),
            parent_id,
            frozen: frozen_reason.is_some(),
            policy: self.policy(agent_id, rev, policy)?,
            usage: from_json(usage)?,
            breaker: from_json(breaker)?,
        }))
    }

    fn save_agent_state(&mut self, state: &AgentState) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached("UPDATE agents SET usage = ?2, breaker = ?3 WHERE id = ?1")?;
        stmt.execute(params![state.agent_id, json(&state.usage)?, json(&state.breaker)?])?;
        Ok(())
    }

    fn set_frozen(&mut self, agent_id: &str, reason: Option<&str>, _now_ms: i64) -> Result<(), Error> {
        let changed =
            // Unfreezing starts the breaker's counts afresh: what tripped it
            // must not trip it again.
            self.conn.execute(
                "UPDATE agents SET frozen_reason = ?2, breaker = CASE WHEN ?2 IS NULL THEN NULL ELSE breaker END \
                 WHERE id = ?1",
                params![agent_id, reason],
            )?;
        if changed == 0 {
            return Err(Error::NotFound("agent"));
        }
        Ok(())
    }

    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO approvals (id, agent_id, key_id, payment_hash, bolt11, amount, purpose, payee_agent_id, status, \
             created_at, expires_at, fee_limit, payee_node) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        stmt.execute(params![
            a.id,
            a.agent_id,
            a.key_id,
            a.payment_hash.as_slice(),
            a.bolt11,
            to_sql(a.amount)?,
            a.purpose,
            a.payee_agent_id,
            a.status.as_str(),
            a.created_at_ms,
            a.expires_at_ms,
            to_sql(a.fee_limit)?,
            a.payee_node_hex
        ])?;
        Ok(())
    }

    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {APPROVAL_COLUMNS} WHERE id = ?1"))?;
        stmt.query_row([id], approval_from_row).optional()?.transpose()
    }

    fn held(&mut self, payment_hash: &[u8; 32], payer: Option<&str>) -> Result<Option<ApprovalRecord>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} WHERE payment_hash = ?1 AND status = 'pending' \
             AND (?2 IS NULL OR agent_id = ?2) LIMIT 1"
        ))?;
        stmt.query_row(params![payment_hash.as_slice(), payer], approval_from_row).optional()?.transpose()
    }

    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE approvals SET status = ?2, decided_at = ?3, decided_by = ?4, payment_id = ?5 WHERE id = ?1",
        )?;
        stmt.execute(params![a.id, a.status.as_str(), a.decided_at_ms, a.decided_by, a.payment_id])?;
        Ok(())
    }

    fn audit(&mut self, entry: &AuditEntry) -> Result<(), Error> {
        let mut last = self.conn.prepare_cached("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")?;
        let prev = match last.query_row([], |r| r.get::<_, Vec<u8>>(0)).optional()? {
            Some(bytes) => hash32(bytes)?,
            None => audit_chain::GENESIS,
        };
        let body = json(entry)?;
        let hash = audit_chain::link(&prev, body.as_bytes());
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO audit_log (at, agent_id, action, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        stmt.execute(params![entry.at_ms, entry.agent_id, entry.action, body, prev.as_slice(), hash.as_slice()])?;
        Ok(())
    }

    fn acknowledges_incoming(&mut self, agent_id: &str) -> Result<bool, Error> {
        let mut stmt = self.conn.prepare_cached("SELECT ack_incoming FROM agents WHERE id = ?1")?;
        Ok(stmt.query_row([agent_id], |r| r.get::<_, i64>(0)).optional()? == Some(1))
    }

    fn save_incoming(&mut self, i: &IncomingRecord) -> Result<(), Error> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO incoming (payment_id, payee_agent_id, payer_agent_id, amount, status, created_at, decided_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (payment_id) DO UPDATE SET status = excluded.status, decided_at = excluded.decided_at",
        )?;
        stmt.execute(params![
            i.payment_id,
            i.payee_agent_id,
            i.payer_agent_id,
            to_sql(i.amount)?,
            i.status.as_str(),
            i.created_at_ms,
            i.decided_at_ms
        ])?;
        Ok(())
    }

    fn l402_tokens(&mut self, agent_id: &str, origin: &str, now_ms: i64) -> Result<Vec<L402TokenRecord>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT scope, token, preimage, amount, payment_id, created_at, expires_at FROM l402_tokens \
             WHERE agent_id = ?1 AND origin = ?2 AND expires_at > ?3 LIMIT ?4",
        )?;
        type Row7 = (String, String, Vec<u8>, i64, String, i64, i64);
        let rows: Vec<Row7> = stmt
            .query_map(params![agent_id, origin, now_ms, L402_TOKENS_PER_ORIGIN_MAX as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(scope, token, preimage, amount, payment_id, created_at_ms, expires_at_ms)| {
                Ok(L402TokenRecord {
                    agent_id: agent_id.to_owned(),
                    origin: origin.to_owned(),
                    scope,
                    token,
                    preimage: hash32(preimage)?,
                    amount: msat(amount)?,
                    payment_id,
                    created_at_ms,
                    expires_at_ms,
                })
            })
            .collect()
    }

    fn save_l402_token(&mut self, t: &L402TokenRecord, now_ms: i64) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND expires_at <= ?3")?
            .execute(params![t.agent_id, t.origin, now_ms])?;
        // At the bound, the token that expires first makes room.
        self.conn
            .prepare_cached(
                "DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND scope <> ?3 AND scope IN \
                 (SELECT scope FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 ORDER BY expires_at \
                  LIMIT max(0, (SELECT count(*) FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2) - ?4 + 1))",
            )?
            .execute(params![t.agent_id, t.origin, t.scope, L402_TOKENS_PER_ORIGIN_MAX as i64])?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO l402_tokens (agent_id, origin, scope, token, preimage, amount, payment_id, \
                 created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                t.agent_id,
                t.origin,
                t.scope,
                t.token,
                t.preimage.as_slice(),
                to_sql(t.amount)?,
                t.payment_id,
                t.created_at_ms,
                t.expires_at_ms
            ])?;
        Ok(())
    }

    fn forget_l402_token(&mut self, agent_id: &str, origin: &str, token: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM l402_tokens WHERE agent_id = ?1 AND origin = ?2 AND token = ?3")?
            .execute(params![agent_id, origin, token])?;
        Ok(())
    }

    fn count(&mut self, counted: quota::Counted<'_>, cap: u32) -> Result<quota::Count, Error> {
        let mut stmt = self.conn.prepare_cached(counted.sql())?;
        let row = |r: &Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?));
        let (rows, frees_at_ms) = match counted.time() {
            Some(at_ms) => stmt.query_row(params![counted.subject(), cap, at_ms], row)?,
            None => stmt.query_row(params![counted.subject(), cap], row)?,
        };
        Ok(quota::Count { rows: u32::try_from(rows).unwrap_or(u32::MAX), frees_at_ms })
    }

    fn emit(&mut self, kind: &str, agent_id: Option<&str>, data: &serde_json::Value, now_ms: i64) -> Result<(), Error> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO events (type, agent_id, data, created_at) VALUES (?1, ?2, ?3, ?4)")?;
        stmt.execute(params![kind, agent_id, data.to_string(), now_ms])?;
        Ok(())
    }
}

fn page_bounds(page: PageRequest) -> (i64, i64) {
    let limit = page.limit.clamp(1, PAGE_ROWS_MAX);
    (page.before.unwrap_or(i64::MAX), i64::from(limit))
}

fn next_cursor(rows: usize, limit: i64, last_seq: Option<i64>) -> Option<i64> {
    if i64::try_from(rows).unwrap_or(i64::MAX) >= limit { last_seq } else { None }
}

fn operator_entry(action: &'static str, actor: String, agent_id: Option<String>, now_ms: i64) -> AuditEntry {
    AuditEntry { at_ms: now_ms, action, actor, agent_id, ..AuditEntry::default() }
}

/// Expired approvals handled per call: bounds one background step.
const EXPIRE_BATCH_MAX: i64 = 256;

impl Store for SqliteStore {
    fn operator_digest(&self) -> StoreFuture<'_, Option<SecretDigest>> {
        self.read(|tx| {
            let value: Option<Vec<u8>> = tx
                .conn
                .query_row("SELECT value FROM meta WHERE key = 'operator_token_digest'", [], |r| r.get(0))
                .optional()?;
            value.map(|v| hash32(v).map(SecretDigest)).transpose()
        })
    }

    fn set_operator_digest(&self, digest: SecretDigest) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('operator_token_digest', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [digest.0.as_slice()],
            )?;
            Ok(())
        })
    }

    fn create_agent(&self, agent: NewAgent, now_ms: i64) -> StoreFuture<'_, AgentRecord> {
        self.write(move |tx| {
            quota::check_subagent(tx, &agent.quotas, &agent, now_ms)?;
            tx.conn.execute(
                "INSERT INTO accounts (id, kind) VALUES ((SELECT MAX(MAX(id), ?1) + 1 FROM accounts), 'wallet')",
                [AccountId::FIRST_WALLET - 1],
            )?;
            let account = AccountId(tx.conn.last_insert_rowid());
            tx.conn.execute(
                "INSERT INTO agents (id, account_id, name, created_at, parent_id, can_create_subagents) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![agent.id, account.0, agent.name, now_ms, agent.parent_id, agent.can_create_subagents],
            )?;
            tx.insert_key(&agent.key, now_ms)?;
            let data = serde_json::json!({"agent_id": agent.id, "name": agent.name, "parent_id": agent.parent_id});
            tx.emit("agent.created", Some(&agent.id), &data, now_ms)?;
            let actor = agent.parent_id.clone().unwrap_or_else(|| "operator".into());
            tx.audit(&operator_entry("agent.created", actor, Some(agent.id.clone()), now_ms))?;
            tx.agent_record(&agent.id)?.ok_or(Error::NotFound("agent"))
        })
    }

    fn agents(&self) -> StoreFuture<'_, Vec<AgentRecord>> {
        self.read(|tx| {
            let mut stmt = tx.conn.prepare(&format!("SELECT {AGENT_COLUMNS} ORDER BY g.created_at, g.id"))?;
            let rows = stmt.query_map([], agent_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn agent(&self, id: String) -> StoreFuture<'_, Option<AgentRecord>> {
        self.read(move |tx| tx.agent_record(&id))
    }

    fn create_key(&self, key: NewKey, now_ms: i64) -> StoreFuture<'_, KeyRecord> {
        self.write(move |tx| {
            let agent = tx.agent_record(&key.agent_id)?.ok_or(Error::NotFound("agent"))?;
            tx.insert_key(&key, now_ms)?;
            let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id, "scope": key.scope.as_str()});
            tx.emit("key.created", Some(&key.agent_id), &data, now_ms)?;
            Ok(KeyRecord {
                id: key.id,
                agent_id: key.agent_id,
                account: agent.account,
                scope: key.scope,
                digest: key.digest,
                expires_at_ms: key.expires_at_ms,
            })
        })
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> StoreFuture<'_, Option<KeyRecord>> {
        self.write(move |tx| {
            let sql = format!("SELECT {KEY_COLUMNS} WHERE k.id = ?1 AND k.revoked_at IS NULL");
            let Some(key) = tx.conn.query_row(&sql, [&key_id], key_from_row).optional()?.transpose()? else {
                return Ok(None);
            };
            tx.conn.execute("UPDATE keys SET revoked_at = ?2 WHERE id = ?1", params![key_id, now_ms])?;
            let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id});
            tx.emit("key.revoked", Some(&key.agent_id), &data, now_ms)?;
            Ok(Some(key))
        })
    }

    fn live_keys(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.read(|tx| {
            let mut stmt = tx.conn.prepare(&format!("SELECT {KEY_COLUMNS} WHERE k.revoked_at IS NULL"))?;
            let rows = stmt.query_map([], key_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn transfer(
        &self,
        transfer: Transfer,
        kind: &'static str,
        agent_id: Option<String>,
        actor: String,
        now_ms: i64,
    ) -> StoreFuture<'_, (i64, Balance)> {
        self.write(move |tx| {
            let posted = tx.post_transfer(transfer, kind, now_ms)?;
            let data = serde_json::json!({
                "transfer_id": posted.0, "debit": transfer.debit.to_string(), "credit": transfer.credit.to_string(),
                "amount_msat": transfer.amount.as_u64(), "kind": kind,
            });
            // A funding is the funded agent's event too; a mint the operator's.
            tx.emit(&format!("transfer.{kind}"), agent_id.as_deref(), &data, now_ms)?;
            tx.audit(&AuditEntry {
                amount_msat: Some(transfer.amount.as_u64()),
                detail: Some(format!("{} -> {}", transfer.debit, transfer.credit)),
                ..operator_entry(
                    if kind == "mint" { "treasury.minted" } else { "agent.funded" },
                    actor,
                    agent_id,
                    now_ms,
                )
            })?;
            Ok(posted)
        })
    }

    fn balance(&self, account: AccountId) -> StoreFuture<'_, Balance> {
        self.read(move |tx| tx.balance(account))
    }

    fn insert_invoice(&self, inv: InvoiceRecord, quotas: Quotas) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            quota::check_invoice(tx, &quotas, &inv.agent_id, inv.created_at_ms)?;
            tx.insert_invoice(&inv)
        })
    }

    fn invoice(&self, payment_hash: [u8; 32]) -> StoreFuture<'_, Option<InvoiceRecord>> {
        self.read(move |tx| Ok(tx.invoice(&payment_hash)?.map(|(record, _)| record)))
    }

    fn invoices(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)> {
        self.read(move |tx| {
            let (before, limit) = page_bounds(page);
            let sql = format!("SELECT {INVOICE_COLUMNS} WHERE agent_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
            let mut stmt = tx.conn.prepare_cached(&sql)?;
            let rows: Vec<(InvoiceRecord, i64, AccountId)> = stmt
                .query_map(params![agent_id, before, limit], invoice_from_row)?
                .map(|r| r?)
                .collect::<Result<_, _>>()?;
            let cursor = next_cursor(rows.len(), limit, rows.last().map(|r| r.1));
            Ok((rows.into_iter().map(|r| r.0).collect(), cursor))
        })
    }

    fn pay_internal(&self, pay: PayInternal) -> StoreFuture<'_, PayAttempt> {
        self.write(move |tx| internal::pay(tx, pay))
    }

    fn pay_l402(&self, pay: L402Pay) -> StoreFuture<'_, L402Attempt> {
        self.write(move |tx| internal::pay_l402(tx, pay))
    }

    fn l402_token(
        &self,
        agent_id: String,
        origin: String,
        path: String,
        now_ms: i64,
    ) -> StoreFuture<'_, Option<L402TokenRecord>> {
        self.read(move |tx| Ok(internal::covering(tx.l402_tokens(&agent_id, &origin, now_ms)?, &path)))
    }

    fn begin_external(&self, begin: BeginExternal) -> StoreFuture<'_, ExternalStart> {
        self.write(move |tx| external::begin(tx, begin))
    }

    fn finish_external(
        &self,
        payment_id: String,
        outcome: ExternalOutcome,
        now_ms: i64,
    ) -> StoreFuture<'_, PaymentRecord> {
        self.write(move |tx| external::finish(tx, &payment_id, outcome, now_ms))
    }

    fn note_external(&self, payment_id: String, detail: String, now_ms: i64) -> StoreFuture<'_, PaymentRecord> {
        self.write(move |tx| external::note(tx, &payment_id, detail, now_ms))
    }

    fn pending_external(&self, limit: u32) -> StoreFuture<'_, Vec<ExternalPayment>> {
        self.read(move |tx| {
            // Least recently asked first: every check updates the row, so a
            // payment stuck at the backend does not starve the others.
            let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE status = 'pending' ORDER BY updated_at LIMIT ?1");
            let mut stmt = tx.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([limit.min(PAGE_ROWS_MAX)], external_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn watched_invoices(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<InvoiceRecord>, Option<i64>)> {
        self.read(move |tx| {
            let sql = format!(
                "SELECT {INVOICE_COLUMNS} WHERE status = 'open' AND backend IS NOT NULL AND seq > ?1 \
                 AND expires_at >= ?2 ORDER BY seq LIMIT ?3"
            );
            let mut stmt = tx.conn.prepare_cached(&sql)?;
            let rows: Vec<(InvoiceRecord, i64, AccountId)> = stmt
                .query_map(params![after_seq, since_ms, limit.min(PAGE_ROWS_MAX)], invoice_from_row)?
                .map(|r| r?)
                .collect::<Result<_, _>>()?;
            let last = rows.last().map(|r| r.1);
            Ok((rows.into_iter().map(|r| r.0).collect(), last))
        })
    }

    fn credit_from_outside(&self, payment_hash: [u8; 32], now_ms: i64) -> StoreFuture<'_, bool> {
        self.write(move |tx| external::credit_from_outside(tx, &payment_hash, now_ms))
    }

    fn payments(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<PaymentRecord>, Option<i64>)> {
        self.read(move |tx| {
            let (before, limit) = page_bounds(page);
            let sql = format!("SELECT {PAYMENT_COLUMNS} WHERE agent_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
            let mut stmt = tx.conn.prepare_cached(&sql)?;
            let rows: Vec<(PaymentRecord, i64)> = stmt
                .query_map(params![agent_id, before, limit], payment_from_row)?
                .map(|r| r?)
                .collect::<Result<_, _>>()?;
            let cursor = next_cursor(rows.len(), limit, rows.last().map(|r| r.1));
            Ok((rows.into_iter().map(|r| r.0).collect(), cursor))
        })
    }

    fn audit_input(&self) -> StoreFuture<'_, AuditInput> {
        self.read(|tx| {
            // One read transaction, so the accounts and the transfers are
            // one consistent snapshot.
            tx.conn.execute_batch("BEGIN")?;
            let result = audit_snapshot(tx.conn);
            tx.conn.execute_batch("COMMIT")?;
            result
        })
    }

    fn agent_state(&self, agent_id: String) -> StoreFuture<'_, Option<AgentState>> {
        self.read(move |tx| tx.agent_state(&agent_id))
    }

    fn set_policy(&self, agent_id: String, policy: Option<Policy>, actor: String, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let text = policy.as_ref().map(json).transpose()?;
            let changed = tx.conn.execute(
                "UPDATE agents SET policy = ?2, policy_rev = policy_rev + 1 WHERE id = ?1",
                params![agent_id, text],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("agent"));
            }
            if let Some(cache) = tx.policies {
                cache.borrow_mut().remove(&agent_id);
            }
            let data = serde_json::json!({"agent_id": agent_id, "policy": policy});
            tx.emit("policy.updated", Some(&agent_id), &data, now_ms)?;
            tx.audit(&AuditEntry { detail: text, ..operator_entry("policy.updated", actor, Some(agent_id), now_ms) })
        })
    }

    fn set_frozen(&self, agent_id: String, reason: Option<String>, actor: String, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            tx.set_frozen(&agent_id, reason.as_deref(), now_ms)?;
            let (action, kind) =
                if reason.is_some() { ("agent.frozen", "agent.frozen") } else { ("agent.unfrozen", "agent.unfrozen") };
            tx.emit(kind, Some(&agent_id), &serde_json::json!({"agent_id": agent_id, "reason": reason}), now_ms)?;
            tx.audit(&AuditEntry { detail: reason, ..operator_entry(action, actor, Some(agent_id), now_ms) })
        })
    }

    fn halted(&self) -> StoreFuture<'_, bool> {
        self.read(|tx| tx.halted())
    }

    fn set_halted(&self, halted: bool, actor: String, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('halted', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [i64::from(halted)],
            )?;
            tx.emit("breaker.halted", None, &serde_json::json!({"halted": halted}), now_ms)?;
            let action = if halted { "gateway.halted" } else { "gateway.resumed" };
            tx.audit(&operator_entry(action, actor, None, now_ms))
        })
    }

    fn approvals(&self, status: Option<ApprovalStatus>, limit: u32) -> StoreFuture<'_, Vec<ApprovalRecord>> {
        self.read(move |tx| {
            let sql =
                format!("SELECT {APPROVAL_COLUMNS} WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at DESC LIMIT ?2");
            let mut stmt = tx.conn.prepare_cached(&sql)?;
            let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
            let rows = stmt.query_map(params![status.map(ApprovalStatus::as_str), limit], approval_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn decide_approval(
        &self,
        id: String,
        approve: bool,
        actor: String,
        now_ms: i64,
    ) -> StoreFuture<'_, ApprovalOutcome> {
        self.write(move |tx| internal::decide_approval(tx, &id, approve, &actor, now_ms))
    }

    fn approvals_due(&self, now_ms: i64) -> StoreFuture<'_, bool> {
        self.read(move |tx| tx.approvals_due(now_ms))
    }

    fn expire_approvals(&self, now_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |tx| tx.expire_due_approvals(now_ms))
    }

    fn invoices_due(&self, now_ms: i64, watched_since_ms: i64) -> StoreFuture<'_, bool> {
        self.read(move |tx| tx.invoices_due(now_ms, watched_since_ms))
    }

    fn expire_invoices(&self, now_ms: i64, watched_since_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |tx| tx.expire_invoices(now_ms, watched_since_ms))
    }

    fn prune(&self, cutoffs: retention::Cutoffs) -> StoreFuture<'_, retention::Pruned> {
        use retention::*;
        self.write(move |tx| {
            let batch = PRUNE_BATCH_ROWS_MAX;
            let invoices =
                tx.conn.execute(DELETE_EXPIRED_INVOICES, params![cutoffs.invoices_expired_before_ms, batch])?;
            let read_by_all: Option<i64> =
                tx.conn.query_row(EVENTS_READ_BY_ALL, params![cutoffs.events_before_ms], |r| r.get(0))?;
            let events = tx.conn.execute(
                DELETE_OLD_EVENTS,
                params![read_by_all.unwrap_or(i64::MAX), batch, cutoffs.events_before_ms],
            )?;
            let deliveries = tx.conn.execute(DELETE_OLD_DELIVERIES, params![batch, cutoffs.deliveries_before_ms])?;
            Ok(Pruned { invoices: invoices as u64, events: events as u64, deliveries: deliveries as u64 })
        })
    }

    fn audit_log(&self, filter: AuditFilter, after_seq: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRecord>> {
        self.read(move |tx| {
            let mut stmt = tx.conn.prepare_cached(
                "SELECT seq, body, prev_hash, hash FROM audit_log WHERE seq > ?1 \
                 AND (?2 IS NULL OR agent_id = ?2) AND (?3 IS NULL OR action = ?3) \
                 AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5) ORDER BY seq LIMIT ?6",
            )?;
            let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
            let rows = stmt.query_map(
                params![after_seq, filter.agent_id, filter.action, filter.since_ms, filter.until_ms, limit],
                audit_from_row,
            )?;
            rows.map(|r| r?).collect()
        })
    }

    fn audit_chain(&self) -> StoreFuture<'_, Vec<AuditRecord>> {
        self.read(|tx| {
            let mut stmt = tx.conn.prepare("SELECT seq, body, prev_hash, hash FROM audit_log ORDER BY seq")?;
            let rows = stmt.query_map([], audit_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn create_room(&self, room: RoomRecord, quotas: Quotas) -> StoreFuture<'_, RoomRecord> {
        self.write(move |tx| {
            quota::check_room(tx, &quotas, &room)?;
            tx.conn.execute(
                "INSERT INTO rooms (id, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![room.id, room.name, room.created_by, room.created_at_ms],
            )?;
            for member in &room.members {
                tx.add_member(&room.id, member, room.created_at_ms)?;
            }
            let data = serde_json::json!({"room_id": room.id, "name": room.name, "members": room.members});
            tx.emit("room.created", None, &data, room.created_at_ms)?;
            tx.room(&room.id)?.ok_or(Error::NotFound("room"))
        })
    }

    fn room(&self, id: String) -> StoreFuture<'_, Option<RoomRecord>> {
        self.read(move |tx| tx.room(&id))
    }

    fn rooms(
        &self,
        member: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<RoomRecord>, Option<String>)> {
        self.read(move |tx| {
            let limit = limit.clamp(1, PAGE_ROWS_MAX);
            // Oldest first; the cursor is the last room's id, and the page
            // goes on after its (created_at, id).
            let sql = "SELECT r.id FROM rooms r WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM room_members m \
                       WHERE m.room_id = r.id AND m.member = ?1)) AND (?2 IS NULL OR (r.created_at, r.id) > \
                       (SELECT created_at, id FROM rooms WHERE id = ?2)) ORDER BY r.created_at, r.id LIMIT ?3";
            let ids: Vec<String> = {
                let mut stmt = tx.conn.prepare_cached(sql)?;
                stmt.query_map(params![member, after, limit], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            let next = (ids.len() == limit as usize).then(|| ids.last().cloned()).flatten();
            let rooms = ids.iter().filter_map(|id| tx.room(id).transpose()).collect::<Result<_, _>>()?;
            Ok((rooms, next))
        })
    }

    fn add_member(&self, room_id: String, member: String, quotas: Quotas, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let room = tx.room(&room_id)?.ok_or(Error::NotFound("room"))?;
            if room.members.contains(&member) {
                return Ok(());
            }
            quota::check_member(tx, &quotas, &room_id, &member, now_ms)?;
            tx.add_member(&room_id, &member, now_ms)?;
            let data = serde_json::json!({"room_id": room_id, "member": member});
            tx.emit("room.member_added", None, &data, now_ms)
        })
    }

    fn remove_member(&self, room_id: String, member: String, now_ms: i64) -> StoreFuture<'_, bool> {
        self.write(move |tx| {
            let removed = tx
                .conn
                .prepare_cached("DELETE FROM room_members WHERE room_id = ?1 AND member = ?2")?
                .execute(params![room_id, member])?;
            if removed == 0 {
                return Ok(false);
            }
            let data = serde_json::json!({"room_id": room_id, "member": member});
            tx.emit("room.member_removed", None, &data, now_ms)?;
            Ok(true)
        })
    }

    fn observe_limit_denial(&self, agent_id: String, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let mut chain = internal::load_chain(tx, &agent_id)?;
            internal::observe_denial(tx, &mut chain, now_ms)
        })
    }

    fn post_message(&self, m: NewMessage) -> StoreFuture<'_, MessageRecord> {
        self.write(move |tx| {
            quota::check_message(tx, &m.quotas, &m.room_id, m.now_ms)?;
            if let Some(invoice) = &m.invoice {
                quota::check_invoice(tx, &m.quotas, &invoice.agent_id, m.now_ms)?;
                tx.insert_invoice(invoice)?;
            }
            let kind = if m.invoice.is_some() { "payment_request" } else { "text" };
            let hash = m.invoice.as_ref().map(|i| i.payment_hash.to_vec());
            tx.conn
                .prepare_cached(
                    "INSERT INTO messages (room_id, sender, kind, text, payment_hash, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![m.room_id, m.sender, kind, m.text, hash, m.now_ms])?;
            let id = tx.conn.last_insert_rowid();
            let data = serde_json::json!({"room_id": m.room_id, "message_id": id, "sender": m.sender, "kind": kind});
            tx.emit("message.posted", None, &data, m.now_ms)?;
            let kind = if m.invoice.is_some() { MessageKind::PaymentRequest } else { MessageKind::Text };
            Ok(MessageRecord {
                id,
                room_id: m.room_id,
                sender: m.sender,
                kind,
                text: m.text,
                created_at_ms: m.now_ms,
                invoice: m.invoice,
            })
        })
    }

    fn messages(&self, room_id: String, after_id: i64, limit: u32) -> StoreFuture<'_, Vec<MessageRecord>> {
        self.read(move |tx| {
            let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
            tx.messages_where("m.room_id = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3", &[&room_id, &after_id, &limit])
        })
    }

    fn message(&self, room_id: String, id: i64) -> StoreFuture<'_, Option<MessageRecord>> {
        self.read(move |tx| Ok(tx.messages_where("m.room_id = ?1 AND m.id = ?2", &[&room_id, &id])?.pop()))
    }

    fn chat_settings(&self, agent_id: String) -> StoreFuture<'_, ChatSettings> {
        self.read(move |tx| {
            let text: Option<Option<String>> =
                tx.conn.query_row("SELECT chat FROM agents WHERE id = ?1", [&agent_id], |r| r.get(0)).optional()?;
            from_json(text.ok_or(Error::NotFound("agent"))?)
        })
    }

    fn incoming(&self, payee_agent_id: String, status: Option<IncomingStatus>) -> StoreFuture<'_, Vec<IncomingRecord>> {
        self.read(move |tx| {
            let mut stmt = tx.conn.prepare_cached(&format!(
                "SELECT {INCOMING_COLUMNS} WHERE payee_agent_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 ORDER BY created_at DESC LIMIT ?3"
            ))?;
            let limit = i64::from(PAGE_ROWS_MAX);
            let rows =
                stmt.query_map(params![payee_agent_id, status.map(IncomingStatus::as_str), limit], incoming_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn decide_incoming(
        &self,
        payee_agent_id: String,
        payment_id: String,
        accept: bool,
        key_id: String,
        now_ms: i64,
    ) -> StoreFuture<'_, IncomingRecord> {
        self.write(move |tx| {
            let mut stmt = tx.conn.prepare_cached(&format!("SELECT {INCOMING_COLUMNS} WHERE payment_id = ?1"))?;
            let found = stmt.query_row([&payment_id], incoming_from_row).optional()?.transpose()?;
            drop(stmt);
            let incoming =
                found.filter(|i| i.payee_agent_id == payee_agent_id).ok_or(Error::NotFound("incoming payment"))?;
            internal::decide_incoming(tx, incoming, accept, &key_id, now_ms)
        })
    }

    fn events(&self, after_id: i64, agent_id: Option<String>, limit: u32) -> StoreFuture<'_, Vec<EventRecord>> {
        self.read(move |tx| outbox::events(tx.conn, after_id, agent_id.as_deref(), limit))
    }

    fn newest_event_id(&self) -> StoreFuture<'_, i64> {
        self.read(|tx| Ok(tx.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    fn claim_lease(&self, name: String, owner: String, now_ms: i64, lease_ms: i64) -> StoreFuture<'_, Option<i64>> {
        self.write(move |tx| outbox::claim_lease(tx.conn, &name, &owner, now_ms, lease_ms))
    }

    fn advance_lease(&self, name: String, owner: String, cursor: i64) -> StoreFuture<'_, bool> {
        self.write(move |tx| outbox::advance_lease(tx.conn, &name, &owner, cursor))
    }

    fn create_webhook(&self, webhook: WebhookRecord) -> StoreFuture<'_, WebhookRecord> {
        self.write(move |tx| {
            emit_webhook_event(tx, "webhook.created", &webhook, webhook.state, webhook.created_at_ms)?;
            // Delivery starts after the newest event, this one included: a
            // new webhook is not told of itself.
            let after_event_id: i64 = tx.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
            let webhook = WebhookRecord { state: WebhookState { after_event_id, ..webhook.state }, ..webhook };
            outbox::create_webhook(tx.conn, &webhook)?;
            Ok(webhook)
        })
    }

    fn webhooks(&self, owner: Option<String>) -> StoreFuture<'_, Vec<WebhookRecord>> {
        self.read(move |tx| outbox::webhooks(tx.conn, owner.as_deref()))
    }

    fn webhook(&self, id: String) -> StoreFuture<'_, Option<WebhookRecord>> {
        self.read(move |tx| outbox::webhook(tx.conn, &id))
    }

    fn delete_webhook(&self, id: String, now_ms: i64) -> StoreFuture<'_, bool> {
        self.write(move |tx| {
            let Some(webhook) = outbox::webhook(tx.conn, &id)? else { return Ok(false) };
            outbox::delete_webhook(tx.conn, &id)?;
            emit_webhook_event(tx, "webhook.deleted", &webhook, webhook.state, now_ms)?;
            Ok(true)
        })
    }

    fn set_webhook_state(&self, id: String, state: WebhookState, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| tx.set_webhook_state(&id, state, now_ms))
    }

    fn record_delivery(&self, delivery: DeliveryRecord, state: WebhookState) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            outbox::insert_delivery(tx.conn, &delivery)?;
            tx.set_webhook_state(&delivery.webhook_id, state, delivery.at_ms)
        })
    }

    fn deliveries(&self, webhook_id: String, limit: u32) -> StoreFuture<'_, Vec<DeliveryRecord>> {
        self.read(move |tx| outbox::deliveries(tx.conn, &webhook_id, limit))
    }

    fn set_chat_settings(&self, agent_id: String, settings: ChatSettings, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let changed = tx.conn.execute(
                "UPDATE agents SET chat = ?2, ack_incoming = ?3 WHERE id = ?1",
                params![agent_id, json(&settings)?, settings.require_acknowledgment],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("agent"));
            }
            let data = serde_json::json!({"agent_id": agent_id, "settings": settings});
            tx.emit("chat.settings_updated", Some(&agent_id), &data, now_ms)
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
            Ok((AccountId(id), balance_row(d, c, p)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::METRICS;
    use std::time::{Duration, Instant};

    /// Power-safe by default: the writer syncs every commit
    /// (`synchronous=FULL` is 2, `NORMAL` 1), and a batch may then hold many
    /// jobs, so that one sync serves them all.
    #[test]
    fn commits_are_synced_by_default() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let conn = Connection::open(dir.path().join("db")).expect("open");
        configure_writer(&conn, Durability::default()).expect("configure");
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma");
        assert_eq!(synchronous, 2, "synchronous=FULL");
        assert_eq!(Durability::default().batch_jobs_max(), BATCH_JOBS_MAX);
        configure_writer(&conn, "process".parse().expect("a durability")).expect("configure");
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma");
        assert_eq!(synchronous, 1, "synchronous=NORMAL, only when asked for");
    }

    /// Writers that keep the writer busy without a pause, and readers
    /// beside them: the WAL must still start over, again and again, and
    /// lose nothing. Without `WalRestart` it would only ever grow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_never_pauses_still_starts_the_wal_over() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("coffer.sqlite3");
        let store = Arc::new(SqliteStore::open_with_wal_bound(&path, Durability::Process, 64).expect("open"));
        let (restarts_before, stall_us_before) = (METRICS.wal_restarts(), METRICS.wal_stall_us());
        let deadline = Instant::now() + Duration::from_secs(30);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for task in 0..16u32 {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut last = None;
                for i in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let digest = SecretDigest::of(&format!("{task}-{i}"));
                    if task % 4 == 0 {
                        store.operator_digest().await.expect("read");
                    } else {
                        store.set_operator_digest(digest).await.expect("write");
                        last = Some(digest);
                    }
                }
                last
            }));
        }
        while METRICS.wal_restarts() < restarts_before + 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut written = Vec::new();
        for task in tasks {
            written.extend(task.await.expect("task"));
        }
        let restarts = METRICS.wal_restarts() - restarts_before;
        assert!(restarts >= 5, "the WAL started over {restarts} times under continuous writes");
        assert!(METRICS.wal_stall_us() > stall_us_before, "the writer's checkpoints were not timed");
        let stored = store.operator_digest().await.expect("read").expect("a digest is stored");
        assert!(written.contains(&stored), "the stored digest is one that was written");
        let check: String =
            store.read(|tx| Ok(tx.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)).await.expect("check");
        assert_eq!(check, "ok");
    }

    /// The checkpointer's sync of the database file goes through SQLite's
    /// own handle: it works on a file, and a database without one (in
    /// memory) is an error, not a crash.
    #[test]
    fn the_database_file_syncs_through_sqlites_handle() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let conn = Connection::open(dir.path().join("sync.sqlite3")).expect("open");
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .expect("write");
        sync_database_file(&conn).expect("sync of an open file");
        let memory = Connection::open_in_memory().expect("open");
        assert!(sync_database_file(&memory).is_err(), "an in-memory database has no file to sync");
    }
}
