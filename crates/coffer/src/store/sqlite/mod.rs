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
//!
//! Faults heal by themselves. A batch that fails to commit (a full disk, an
//! I/O error) is answered `Unavailable` (503 with `Retry-After`), never as
//! an internal error, and the writer then drops its connection and opens a
//! fresh one before the next batch, retrying with a backoff that doubles
//! from [`HEAL_BACKOFF_MIN_MS`] to [`HEAL_BACKOFF_MAX_MS`]; meanwhile the
//! jobs that arrive are answered `Unavailable` at once instead of waiting.
//! The first batch that commits again ends it, with no restart. Why a fresh
//! connection rather than a retry on the same one: a connection whose
//! COMMIT failed may be left inside its transaction (a failed ROLLBACK), and
//! after a failed *sync* Linux may have dropped the dirty pages it could not
//! write, so nothing the connection believes about what is on disk is to be
//! trusted; a fresh connection holds no transaction, no cached pages and no
//! prepared statements, and reads the WAL's state anew. A batch whose sync
//! failed was answered as failed; should its frames still have reached the
//! disk, a caller's retry with the same `Idempotency-Key` finds the payment.

pub mod pcache;
pub(crate) mod schema;

pub mod backup;
mod lite;

use super::commit::{self, Reply};
use super::sql::{PolicyCache, SqlTx};
use super::{Answer, ReadOp, Store, StoreFuture, WriteOp};
use crate::error::Error;
use lite::Lite;
use rusqlite::{Connection, OpenFlags, ffi};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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
/// After a batch failed to commit, the writer reopens its connection and
/// tries again after this long, doubling at each failure up to
/// [`HEAL_BACKOFF_MAX_MS`].
const HEAL_BACKOFF_MIN_MS: u64 = 50;
const HEAL_BACKOFF_MAX_MS: u64 = 1_000;
const _: () = assert!(HEAL_BACKOFF_MIN_MS >= 1 && HEAL_BACKOFF_MIN_MS <= HEAL_BACKOFF_MAX_MS);
/// What a caller is told while the store cannot write.
const CANNOT_WRITE: &str = "the store cannot write just now (disk full or an I/O error); try again shortly";

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

type Job = Box<dyn FnOnce(&Writer) -> Reply + Send>;

/// What the writer thread owns: the only write connection, and caches that
/// only it touches.
struct Writer {
    conn: Connection,
    /// Where and how to open a fresh connection after a failure.
    path: PathBuf,
    durability: Durability,
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
        let wal_frames = Arc::new(AtomicU32::new(0));
        let conn = open_writer(path, durability, &wal_frames)?;
        schema::migrate(&conn)?;
        let (jobs, queue) = mpsc::channel(QUEUE_JOBS_MAX);
        let (commits, commits_seen) = watch::channel(0);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            path: path.to_owned(),
            durability,
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
}

/// Opens and configures the writer's connection.
fn open_writer(path: &Path, durability: Durability, wal_frames: &Arc<AtomicU32>) -> Result<Connection, Error> {
    let mut conn = Connection::open(path).map_err(|e| Error::internal("opening the database", e))?;
    configure_writer(&conn, durability)?;
    let frames = Arc::clone(wal_frames);
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
        frames.store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }))
    .map_err(|e| Error::internal("configuring the database", e))?;
    Ok(conn)
}

impl Store for SqliteStore {
    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write_tx(&self, mut op: WriteOp) -> StoreFuture<'_, Answer> {
        let (done, answer) = commit::answer();
        let job: Job = Box::new(move |writer| {
            let result = in_savepoint(&writer.conn, |conn| {
                let mut policies = writer.policies.borrow_mut();
                op(&mut SqlTx::new(&mut Lite(conn), Some(&mut policies)))
            });
            commit::reply(result, done)
        });
        Box::pin(commit::queue(&self.jobs, job, answer))
    }

    /// Runs `op` on a reader connection, in one read transaction (one
    /// snapshot of the WAL).
    fn read_tx(&self, mut op: ReadOp) -> StoreFuture<'_, Answer> {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = readers.take()?;
                conn.execute_batch("BEGIN")?;
                let result = op(&mut SqlTx::new(&mut Lite(&conn), None));
                // A read changes nothing: ending it can only fail on a
                // broken connection, which is then not kept.
                if conn.execute_batch("COMMIT").is_ok() {
                    readers.put(conn);
                }
                result
            })
            .await
            .map_err(|e| Error::internal("read task", e))?
        })
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
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
    conn.execute_batch("SAVEPOINT job").map_err(Error::from)?;
    let result = op(conn);
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    conn.execute_batch(end).map_err(Error::from)?;
    result
}

/// The writer's state after failed commits: when it may try again.
struct Heal {
    /// Failed commits in a row.
    failures: u32,
    /// Jobs are refused until then; then the connection is reopened and
    /// the next batch runs.
    retry_at: Instant,
}

impl Heal {
    fn backoff(failures: u32) -> Duration {
        let ms = HEAL_BACKOFF_MIN_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
        Duration::from_millis(ms.min(HEAL_BACKOFF_MAX_MS))
    }
}

fn run_writer(mut writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(writer.batch_jobs_max);
    let mut restart = WalRestart { waiting: None, last_frames: 0 };
    let mut heal: Option<Heal> = None;
    while let Some(first) = queue.blocking_recv() {
        if let Some(h) = &heal {
            if Instant::now() < h.retry_at {
                refuse(first, &mut queue, writer.batch_jobs_max);
                continue;
            }
            if let Err(e) = writer.reopen() {
                let failures = h.failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "the store's writer could not reopen its connection; will retry");
                heal = Some(Heal { failures, retry_at: Instant::now() + Heal::backoff(failures) });
                refuse(first, &mut queue, writer.batch_jobs_max);
                continue;
            }
        }
        restart.between_batches(&writer);
        let commit = run_batch(&writer, first, &mut queue, &mut replies);
        commit::answer_batch(commit.as_ref().map(|_| ()), || commit::count(&writer.commits), &mut replies);
        match commit {
            Ok(()) => {
                if let Some(h) = heal.take() {
                    tracing::warn!(failures = h.failures, "the store writes again");
                }
            }
            Err(e) => {
                let failures = heal.as_ref().map_or(1, |h| h.failures.saturating_add(1));
                if failures == 1 {
                    tracing::error!(error = %e, "a batch failed to commit; its callers were told to retry");
                }
                heal = Some(Heal { failures, retry_at: Instant::now() + Heal::backoff(failures) });
            }
        }
    }
}

/// Answers `first`, and the jobs waiting behind it (a batch's worth),
/// `Unavailable` without running them: the store cannot write now.
fn refuse(first: Job, queue: &mut mpsc::Receiver<Job>, most: usize) {
    drop(first);
    for _ in 1..most {
        match queue.try_recv() {
            Ok(job) => drop(job),
            Err(_) => break,
        }
    }
}

impl Writer {
    /// Drops the connection and opens a fresh one (see the module's
    /// comment: after a failed commit the old one is not to be trusted).
    fn reopen(&mut self) -> Result<(), Error> {
        let fresh = open_writer(&self.path, self.durability, &self.wal_frames)?;
        let old = std::mem::replace(&mut self.conn, fresh);
        if !old.is_autocommit() {
            let _ = old.execute_batch("ROLLBACK");
        }
        drop(old);
        // Changes of the failed batch may be in the cache: forget them.
        self.policies.borrow_mut().clear();
        // A WAL that filled the disk must start over, or every commit that
        // grows it fails again: copy it all back and truncate it (freeing
        // its space). It may fail while the disk is still full; the batch
        // that follows then fails too, and the next attempt tries again.
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "the writer could not empty the WAL");
        }
        Ok(())
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
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "the writer could not begin a transaction");
        // Run nothing: dropping the job answers it `Unavailable`.
        replies.push(Box::new(move |_| drop(first)));
        return Err(Error::Unavailable(CANNOT_WRITE));
    }
    replies.push(first(writer));
    while replies.len() < writer.batch_jobs_max {
        match queue.try_recv() {
            Ok(job) => replies.push(job(writer)),
            Err(_) => break,
        }
    }
    crate::metrics::METRICS.record_batch(replies.len());
    let committing = std::time::Instant::now();
    let committed = conn.execute_batch("COMMIT");
    crate::metrics::METRICS.record_commit(committing.elapsed());
    committed.map_err(|e| {
        tracing::warn!(error = %e, "a commit failed");
        let _ = conn.execute_batch("ROLLBACK");
        // Changes of this batch may be in the caches: forget them.
        writer.policies.borrow_mut().clear();
        Error::Unavailable(CANNOT_WRITE)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::METRICS;
    use crate::secrets::SecretDigest;
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
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_with_wal_bound(&path, Durability::Process, 64).expect("open"));
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
                        store.read(|tx| tx.operator_digest()).await.expect("read");
                    } else {
                        store.write(move |tx| tx.set_operator_digest(&digest)).await.expect("write");
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
        let stored = store.read(|tx| tx.operator_digest()).await.expect("read").expect("a digest is stored");
        assert!(written.contains(&stored), "the stored digest is one that was written");
        drop(store);
        let check: String = Connection::open(&path)
            .and_then(|conn| conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .expect("check");
        assert_eq!(check, "ok");
    }

    /// After failed commits the writer waits 50 ms, doubling at each
    /// failure, never more than a second.
    #[test]
    fn the_writers_backoff_doubles_up_to_a_second() {
        let ms = |failures| Heal::backoff(failures).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(3), ms(5)], [50, 50, 100, 200, 800]);
        assert_eq!(ms(6), 1_000);
        assert_eq!(ms(u32::MAX), 1_000);
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
