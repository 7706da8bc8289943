//! The shared store: PostgreSQL, for several gateway instances on one
//! database.
//!
//! The design mirrors the SQLite store. All writes of an instance go through
//! one writer thread that owns one connection. It takes every job waiting in
//! its queue (up to [`BATCH_JOBS_MAX`]), runs each in its own savepoint
//! inside one transaction, commits once, and only then answers the callers:
//! group commit. PostgreSQL does about 1,000 fsync-bound commits a second
//! here, so batching is what makes it fast.
//!
//! Several instances: every write transaction first takes one
//! transaction-scoped advisory lock ([`WRITE_LOCK`]), so the write batches of
//! all instances run one after another, in the database's order, not the
//! process's. Row locks would allow more overlap, but every payment appends
//! to two totally ordered logs: the hash-chained audit trail (each record
//! names the previous one's hash) and the event outbox (whose ids readers
//! replay with `after=ID`, so an id must never become visible after a larger
//! one). Both need a total commit order; with it, the check-then-write steps
//! of the payment flows (balance, invoice status, idempotency key, approval
//! status) are serialised across instances exactly as one writer serialises
//! them in one process, no deadlock can arise between coffer writers (so a
//! batch never has to be retried for 40P01/40001), and the lock is released
//! by PostgreSQL when a transaction ends or its connection dies (a killed
//! instance holds nothing). The database still asserts the rest: the
//! no-negative CHECK on accounts, unique idempotency keys and payment
//! hashes, and invoices are marked paid only while open.
//!
//! Durability: a batch is answered after COMMIT returns, which with the
//! server's default `synchronous_commit=on` means its WAL is flushed.
//!
//! Reads run on [`READERS`] dedicated threads, each owning one connection.
//! They use the blocking `postgres` client, like the writer, because the
//! read paths share the synchronous [`crate::store::Tx`] code with the writes; and a
//! blocking client must never run, or be dropped, on a tokio worker thread
//! (it drives its own runtime), so the connections live on threads of
//! their own rather than in `spawn_blocking`.

mod schema;

mod pg;

use super::commit::{self, Reply};
use super::sql::{PolicyCache, SqlTx};
use super::{Answer, ReadOp, Store, StoreFuture, WriteOp};
use crate::error::Error;
use ::postgres::Config;
use pg::Conn;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The most jobs committed in one transaction: bounds a batch's latency.
pub const BATCH_JOBS_MAX: usize = 1_024;
/// The most jobs waiting for the writer; callers wait beyond it.
const QUEUE_JOBS_MAX: usize = 8_192;
// A full queue holds several full batches.
const _: () = assert!(BATCH_JOBS_MAX < QUEUE_JOBS_MAX);
/// The most reads waiting for a reader thread.
const QUEUE_READS_MAX: usize = 1_024;
/// Reader threads (and connections) per instance.
const READERS: usize = 4;
// Every reader can have a read waiting for it.
const _: () = assert!(READERS <= QUEUE_READS_MAX);
/// Any constant, the same in every instance: the lock each write
/// transaction takes first (see the module comment).
const WRITE_LOCK: i64 = 0x636f_6666_6572_0002;
/// A transaction left open this long (a stopped instance) is ended by the
/// server, so it cannot hold the write lock forever.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;
/// Waiting longer than this for the write lock fails the batch.
const LOCK_TIMEOUT_MS: u64 = 10_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;

type Job = Box<dyn FnOnce(&mut Writer) -> Reply + Send>;
type ReadJob = Box<dyn FnOnce(&mut Reader) + Send>;

/// What the writer thread owns.
struct Writer {
    config: Config,
    conn: Option<Conn>,
    policies: PolicyCache,
    /// Counts this instance's commits, for watchers of the outbox.
    commits: watch::Sender<u64>,
    /// Whether the job that ran last failed: its savepoint is then rolled
    /// back, not released.
    job_failed: bool,
    /// A job's savepoint could not be ended (or begun): the transaction may
    /// be aborted, and PostgreSQL answers COMMIT on an aborted transaction
    /// with a quiet ROLLBACK, so the batch must not be reported committed.
    aborted: bool,
}

pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    reads: mpsc::Sender<ReadJob>,
    commits: watch::Receiver<u64>,
}

impl PostgresStore {
    /// Connects, migrates the schema, and starts the writer and reader
    /// threads. `url` is a `postgres://` URL (or a key=value string).
    pub async fn open(url: &str) -> Result<PostgresStore, Error> {
        let mut config: Config = url.parse().map_err(|e| Error::internal("the PostgreSQL URL", e))?;
        config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        // Named by role, so pg_stat_activity tells writers from readers.
        let named = |role: &str| {
            let mut named = config.clone();
            if config.get_application_name().is_none() {
                named.application_name(role);
            }
            named
        };
        let (writer_config, reader_config) = (named("coffer-writer"), named("coffer-reader"));
        let (jobs, queue) = mpsc::channel(QUEUE_JOBS_MAX);
        let (commits, commits_seen) = watch::channel(0);
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name("coffer-pg-writer".into())
            .spawn({
                let config = writer_config;
                move || {
                    let opened = Conn::open(&config).and_then(|mut conn| {
                        schema::migrate(&mut conn.client)?;
                        Ok(conn)
                    });
                    match opened {
                        Ok(conn) => {
                            let _ = ready.send(Ok(()));
                            let policies = HashMap::new();
                            let writer = Writer {
                                config,
                                conn: Some(conn),
                                policies,
                                commits,
                                job_failed: false,
                                aborted: false,
                            };
                            run_writer(writer, queue);
                        }
                        Err(e) => drop(ready.send(Err(e))),
                    }
                }
            })
            .map_err(|e| Error::internal("starting the writer thread", e))?;
        started.await.map_err(|_| Error::Internal("the writer thread stopped while opening".into()))??;
        let (reads, read_queue) = mpsc::channel(QUEUE_READS_MAX);
        let read_queue = Arc::new(Mutex::new(read_queue));
        for i in 0..READERS {
            let (config, queue) = (reader_config.clone(), Arc::clone(&read_queue));
            std::thread::Builder::new()
                .name(format!("coffer-pg-reader-{i}"))
                .spawn(move || run_reader(config, &queue))
                .map_err(|e| Error::internal("starting a reader thread", e))?;
        }
        Ok(PostgresStore { jobs, reads, commits: commits_seen })
    }
}

impl Store for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write_tx(&self, op: WriteOp) -> StoreFuture<'_, Answer> {
        let (done, answer) = commit::answer();
        // The batch opens the job's savepoint before it and ends it after
        // (see `run_batch`).
        let job: Job = Box::new(move |writer| {
            let result = match writer.conn.as_mut() {
                Some(conn) => op(&mut SqlTx::new(conn, Some(&mut writer.policies))),
                None => Err(Error::Unavailable("the database connection is down")),
            };
            writer.job_failed = result.is_err();
            commit::reply(result, done)
        });
        Box::pin(commit::queue(&self.jobs, job, answer))
    }

    /// Runs `op` on a reader thread's connection, in one read-only
    /// transaction (one snapshot).
    fn read_tx(&self, mut op: ReadOp) -> StoreFuture<'_, Answer> {
        let (done, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |reader| {
            let mut result = reader.conn().and_then(|conn| in_snapshot(conn, &mut op));
            if result.is_err() && reader.lost() {
                // The server dropped the connection (a restart): a read
                // changes nothing, so once more on a new one is safe.
                result = reader.conn().and_then(|conn| in_snapshot(conn, &mut op));
            }
            let _ = done.send(result);
        });
        Box::pin(async move {
            self.reads.send(job).await.map_err(|_| Error::Unavailable("the store is shutting down"))?;
            answer.await.map_err(|_| Error::Unavailable("a store reader stopped"))?
        })
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }
}

fn in_snapshot(conn: &mut Conn, op: &mut ReadOp) -> Result<Answer, Error> {
    conn.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let result = op(&mut SqlTx::new(conn, None));
    // Read only: COMMIT and ROLLBACK end it alike.
    conn.client.batch_execute("COMMIT")?;
    result
}

fn run_writer(mut writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH_JOBS_MAX);
    while let Some(first) = queue.blocking_recv() {
        let commit = run_batch(&mut writer, first, &mut queue, &mut replies);
        commit::answer_batch(commit.as_ref().map(|_| ()), &writer.commits, &mut replies);
        if let Err(e) = commit {
            // Whatever the batch changed may be in the cache: forget it.
            writer.policies.clear();
            tracing::error!(error = %e, "a batch failed to commit; its callers were told");
        }
    }
}

/// A lost connection (a database restart) is opened again before the next
/// batch; if that fails, the batch fails and the next one tries again.
fn reconnect_if_closed(writer: &mut Writer) {
    if writer.conn.as_ref().is_some_and(|c| !c.client.is_closed()) {
        return;
    }
    writer.policies.clear();
    writer.conn = match Conn::open(&writer.config) {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::error!(error = %e, "reconnecting the writer failed");
            None
        }
    };
}

/// Opens the batch's transaction, takes the write lock and opens the first
/// job's savepoint. A connection the server dropped (a restart) is found
/// here, before any job ran: the batch then begins once more on a new
/// connection.
fn begin(writer: &mut Writer) -> Result<(), Error> {
    writer.aborted = false;
    for attempt in 0..2 {
        reconnect_if_closed(writer);
        let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
        match conn.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); SAVEPOINT job")) {
            Ok(()) => return Ok(()),
            Err(_) if attempt == 0 && conn.client.is_closed() => continue,
            Err(e) => {
                let _ = conn.client.batch_execute("ROLLBACK");
                return Err(Error::internal("begin", e));
            }
        }
    }
    Err(Error::Unavailable("the database connection is down"))
}

fn run_batch(
    writer: &mut Writer,
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    replies: &mut Vec<Reply>,
) -> Result<(), Error> {
    if let Err(e) = begin(writer) {
        // Run nothing: answer this job with the error.
        replies.push(Box::new(move |_| drop(first)));
        return Err(e);
    }
    // Each job runs in its own savepoint, ended together with what comes
    // next (the next job's savepoint, or the commit): one round trip
    // between jobs instead of two.
    replies.push(first(writer));
    while replies.len() < BATCH_JOBS_MAX && !writer.aborted {
        match queue.try_recv() {
            Ok(job) => {
                end_savepoint(writer, "SAVEPOINT job");
                match writer.aborted {
                    // Run nothing more: answer this job with the batch's error.
                    true => replies.push(Box::new(move |_| drop(job))),
                    false => replies.push(job(writer)),
                }
            }
            Err(_) => break,
        }
    }
    crate::metrics::METRICS.record_batch(replies.len());
    if !writer.aborted {
        end_savepoint(writer, "COMMIT");
    }
    let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
    if std::mem::take(&mut writer.aborted) {
        // COMMIT would answer a quiet ROLLBACK, or did not run: say so to
        // every caller.
        let _ = conn.client.batch_execute("ROLLBACK");
        return Err(Error::Internal("the batch's transaction was aborted and rolled back".into()));
    }
    Ok(())
}

/// Ends the savepoint of the job that ran last (released, or rolled back if
/// the job failed) and runs `then` in the same round trip. If that fails
/// (the job went on after a failed statement and left the transaction
/// aborted, or the connection dropped) the batch is `aborted`.
fn end_savepoint(writer: &mut Writer, then: &str) {
    let end = if writer.job_failed { "ROLLBACK TO job; RELEASE job" } else { "RELEASE job" };
    let ended = match writer.conn.as_mut() {
        Some(conn) => conn.client.batch_execute(&format!("{end}; {then}")),
        None => {
            writer.aborted = true;
            return;
        }
    };
    if let Err(e) = ended {
        tracing::warn!(error = %e, then, "ending a job's savepoint failed; the batch is rolled back");
        writer.aborted = true;
    }
}

/// A reader thread's connection, opened when first needed and again after
/// the server dropped it.
struct Reader {
    config: Config,
    conn: Option<Conn>,
}

impl Reader {
    fn conn(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = Some(Conn::open(&self.config)?);
        }
        self.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))
    }

    /// Whether the connection was found dropped (and is forgotten).
    fn lost(&mut self) -> bool {
        let lost = self.conn.as_ref().is_some_and(|c| c.client.is_closed());
        if lost {
            self.conn = None;
        }
        lost
    }
}

fn run_reader(config: Config, queue: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut reader = Reader { config, conn: None };
    loop {
        let job = match queue.lock() {
            Ok(mut queue) => queue.blocking_recv(),
            Err(_) => return,
        };
        let Some(job) = job else { return };
        job(&mut reader);
    }
}
