//! The shared store: PostgreSQL, for several gateway instances on one
//! database.
//!
//! - `writer.rs`: the writes of an instance go to [`WRITERS`] writer
//!   threads in turn, each owning one connection and committing in batches
//!   (group commit). Writers share no lock, in one instance or across
//!   instances: a write locks the rows it changes, waits for another's
//!   briefly, and runs again later rather than wait long.
//! - `seal.rs`: audit records and events are numbered after commit, in the
//!   order they became visible, by one sealer at a time in the cluster; so
//!   the audit chain stays one chain and `after=ID` never skips an event
//!   that committed late.
//! - `pg.rs`: the shared SQL on a connection; `schema.rs`: the migrations.
//!
//! The database asserts what it can itself: the no-negative CHECK on
//! accounts, unique idempotency keys and payment hashes, invoices marked
//! paid only while open, decisions taken only once (conditional updates).
//!
//! Reads run on [`READERS`] dedicated threads, each owning one connection.
//! Every connection is driven synchronously, by a runtime of its own on its
//! thread (`pg.rs`), like the writer's, because the read paths share the
//! synchronous [`crate::store::Tx`] code with the writes; and such a
//! connection must never run, or be dropped, on a tokio worker thread, so
//! the connections live on threads of their own rather than in
//! `spawn_blocking`.

mod pg;
pub(crate) mod schema;
mod seal;
mod writer;

use super::commit;
use super::sql::SqlTx;
use super::{Answer, ReadOp, Store, StoreFuture, WriteOp};
use crate::error::Error;
use pg::Conn;
use seal::Sealer;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Config;
use writer::{Job, Writer};

/// The most jobs committed in one transaction: bounds a batch's latency.
pub const BATCH_JOBS_MAX: usize = 1_024;
/// The most jobs waiting for the writer; callers wait beyond it.
const QUEUE_JOBS_MAX: usize = 8_192;
// A full queue holds several full batches.
const _: () = assert!(BATCH_JOBS_MAX < QUEUE_JOBS_MAX);
/// The most reads waiting for a reader thread.
const QUEUE_READS_MAX: usize = 1_024;
/// Writer threads (and connections) per instance. A payment's time on
/// PostgreSQL is mostly round trips (BENCHMARKS.md): with no lock shared
/// by the writers, more than one overlap them.
const WRITERS: usize = 2;
/// Reader threads (and connections) per instance.
const READERS: usize = 4;
// Every reader can have a read waiting for it.
const _: () = assert!(READERS <= QUEUE_READS_MAX);
/// Any constant, the same in every instance: the lock a sealer holds
/// while it numbers (see `seal.rs`).
const SEAL_LOCK: i64 = 0x636f_6666_6572_0002;
/// A transaction left open this long (a stopped instance) is ended by the
/// server, so it cannot hold rows forever.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;
/// Lock waits of the connections other than the writers' after migrating
/// (the migration itself, the sealer, the readers) end after this long.
const CONNECT_LOCK_TIMEOUT_MS: u64 = 10_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;

type ReadJob = Box<dyn FnOnce(&mut Reader) + Send>;

pub struct PostgresStore {
    /// Each writer's queue; writes go to them in turn.
    jobs: Vec<mpsc::Sender<Job>>,
    next_writer: AtomicUsize,
    reads: mpsc::Sender<ReadJob>,
    /// Changes when the sealer numbered events.
    commits: watch::Receiver<u64>,
    sealer: Sealer,
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
        let (commits, commits_seen) = watch::channel(0);
        let (sealer, sealing) = Sealer::new(named("coffer-sealer"), commits);
        let mut jobs = Vec::with_capacity(WRITERS);
        for i in 0..WRITERS {
            // One after another: the first migrates the schema, the others
            // find it done.
            let (sender, queue) = mpsc::channel(QUEUE_JOBS_MAX);
            let (ready, started) = oneshot::channel();
            let (config, sealer) = (writer_config.clone(), sealer.clone());
            std::thread::Builder::new()
                .name(format!("coffer-pg-writer-{i}"))
                .spawn(move || match writer::open_conn(&config) {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        writer::run(Writer::new(config, conn, sealer), queue);
                    }
                    Err(e) => drop(ready.send(Err(e))),
                })
                .map_err(|e| Error::internal("starting a writer thread", e))?;
            started.await.map_err(|_| Error::Internal("a writer thread stopped while opening".into()))??;
            jobs.push(sender);
        }
        sealing.start()?;
        let (reads, read_queue) = mpsc::channel(QUEUE_READS_MAX);
        let read_queue = Arc::new(Mutex::new(read_queue));
        for i in 0..READERS {
            let (config, queue) = (reader_config.clone(), Arc::clone(&read_queue));
            std::thread::Builder::new()
                .name(format!("coffer-pg-reader-{i}"))
                .spawn(move || run_reader(config, &queue))
                .map_err(|e| Error::internal("starting a reader thread", e))?;
        }
        Ok(PostgresStore { jobs, next_writer: AtomicUsize::new(0), reads, commits: commits_seen, sealer })
    }
}

impl Store for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write_tx(&self, op: WriteOp) -> StoreFuture<'_, Answer> {
        let (done, answer) = commit::answer();
        let turn = self.next_writer.fetch_add(1, Ordering::Relaxed) % self.jobs.len();
        let Some(jobs) = self.jobs.get(turn) else {
            return Box::pin(async { Err(Error::Unavailable("the store has no writer")) });
        };
        Box::pin(commit::queue(jobs, Job::new(op, done), answer))
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

    fn sealed(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.sealer.sealed())
    }
}

fn in_snapshot(conn: &mut Conn, op: &mut ReadOp) -> Result<Answer, Error> {
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let result = op(&mut SqlTx::new(conn, None));
    // Read only: COMMIT and ROLLBACK end it alike.
    conn.batch_execute("COMMIT")?;
    result
}

/// A reader thread's connection, opened when first needed and again after
/// the server dropped it.
struct Reader {
    config: Config,
    conn: Option<Conn>,
}

impl Reader {
    fn conn(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(Conn::open(&self.config, CONNECT_LOCK_TIMEOUT_MS)?);
        }
        self.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))
    }

    /// Whether the connection was found dropped (and is forgotten).
    fn lost(&mut self) -> bool {
        let lost = self.conn.as_ref().is_some_and(|c| c.is_closed());
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
