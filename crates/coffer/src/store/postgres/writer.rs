//! A writer: one thread, one connection, group commit; and what it does
//! when another writer (of this instance or another) holds the rows a job
//! needs.
//!
//! It takes every job waiting in its queue (up to [`BATCH_JOBS_MAX`]), runs
//! each in its own savepoint inside one transaction, commits once, and only
//! then answers the callers. PostgreSQL does about 1,000 fsync-bound
//! commits a second here, so batching is what makes it fast.
//!
//! No lock is shared by the instances: a job locks the rows it reads in
//! order to change them (`FOR UPDATE`, see `Sql::concurrent_writers`), so
//! payments of disjoint agents commit in parallel on any instances, and
//! conflicting ones take turns on their rows. A batch holds the locks of
//! all its jobs until it commits, in whatever order its jobs took them, so
//! two batches could wait for each other. No wait is long: the first job of
//! a batch waits at most [`LOCK_WAIT_MS`] (the connection's
//! `lock_timeout`), the others [`LOCK_WAIT_LATER_MS`], and the job that
//! waited in vain ([`Error::Contended`], which a deadlock or a
//! unique key another transaction wrote first also give) is rolled back to
//! its savepoint and deferred: it runs again, first, in a later batch,
//! after this batch's commit released what it held. A job still contended
//! after [`JOB_DEADLINE_MS`] (a transaction left open on its rows) is
//! answered [`Error::Unavailable`]. Operations are written to be run again:
//! what they did is rolled back with the savepoint, and they read anew.
//!
//! Durability: a batch is answered after COMMIT returns, which with the
//! server's default `synchronous_commit=on` means its WAL is flushed.

use super::pg::Conn;
use super::seal::Sealer;
use super::{BATCH_JOBS_MAX, CONNECT_LOCK_TIMEOUT_MS};
use crate::error::Error;
use crate::store::WriteOp;
use crate::store::commit::{self, Done, Reply};
use crate::store::sql::{PolicyCache, Sql, SqlTx};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::Config;

/// The first job of a batch waits this long for a row (its batch holds
/// nothing yet but what the job itself locked).
const LOCK_WAIT_MS: u64 = 50;
/// The later jobs of a batch wait this long: their batch holds the rows of
/// the jobs before them, which other batches may be waiting for, so a job
/// that finds a row taken is deferred at once (to be first in the next
/// batch) rather than let two batches wait for each other.
const LOCK_WAIT_LATER_MS: u64 = 1;
const _: () = assert!(LOCK_WAIT_LATER_MS < LOCK_WAIT_MS);
/// A job contended for this long is given up.
const JOB_DEADLINE_MS: u64 = 10_000;
/// A job is run at most this many times.
const JOB_RUNS_MAX: u32 = 256;
const _: () = assert!(LOCK_WAIT_MS * 4 <= JOB_DEADLINE_MS);

/// A write waiting for its batch.
pub struct Job {
    op: WriteOp,
    done: Done,
    /// When it first ran; its deadline counts from there.
    first_run: Option<Instant>,
    runs: u32,
}

impl Job {
    pub fn new(op: WriteOp, done: Done) -> Job {
        Job { op, done, first_run: None, runs: 0 }
    }

    /// Answers the job with `error` (it did not run, or its batch ended
    /// before it could).
    fn fail(self, error: Error) -> Reply {
        commit::reply(Err(error), self.done)
    }
}

/// What the writer thread owns.
pub struct Writer {
    config: Config,
    conn: Option<Conn>,
    policies: PolicyCache,
    sealer: Sealer,
    /// Whether the job that ran last failed: its savepoint is then rolled
    /// back, not released.
    job_failed: bool,
    /// A job's savepoint could not be ended (or begun): the transaction may
    /// be aborted, and PostgreSQL answers COMMIT on an aborted transaction
    /// with a quiet ROLLBACK, so the batch must not be reported committed.
    aborted: bool,
    /// Jobs rolled back because another transaction held their rows, to
    /// run first in the next batch.
    deferred: VecDeque<Job>,
}

/// How a job's run ended.
enum Ran {
    Answered(Reply),
    Deferred(Job),
}

impl Writer {
    pub fn new(config: Config, conn: Conn, sealer: Sealer) -> Writer {
        Writer {
            config,
            conn: Some(conn),
            policies: PolicyCache::new(),
            sealer,
            job_failed: false,
            aborted: false,
            deferred: VecDeque::new(),
        }
    }
}

pub fn run(mut writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH_JOBS_MAX);
    loop {
        let first = match writer.deferred.pop_front() {
            Some(job) => job,
            None => match queue.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        let commit = run_batch(&mut writer, first, &mut queue, &mut replies);
        let sealer = &writer.sealer;
        commit::answer_batch(commit.as_ref().map(|_| ()), || sealer.wake(), &mut replies);
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
    if writer.conn.as_ref().is_some_and(|c| !c.is_closed()) {
        return;
    }
    writer.policies.clear();
    writer.conn = match Conn::open(&writer.config, LOCK_WAIT_MS) {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::error!(error = %e, "reconnecting the writer failed");
            None
        }
    };
}

/// How a batch begins. Every batch holds a share lock on the kill switch's
/// row for its life, and halting updates that row: so the halt commits
/// only after every batch that read the switch off has committed, and a
/// payment acknowledged after the halt was acknowledged read it on. Share
/// locks do not wait for one another.
const BEGIN: &str = "BEGIN; SELECT 1 FROM meta WHERE key = 'halted' FOR SHARE; SAVEPOINT job";
/// A batch that cannot take its share lock (a halt is waiting for it)
/// tries again this many times, each after its lock wait.
const BEGIN_ATTEMPTS_MAX: u32 = 200;
const _: () = assert!(BEGIN_ATTEMPTS_MAX as u64 * LOCK_WAIT_MS >= JOB_DEADLINE_MS);

/// Opens the batch's transaction and the first job's savepoint. A
/// connection the server dropped (a restart) is found here, before any job
/// ran: the batch then begins once more on a new connection.
fn begin(writer: &mut Writer) -> Result<(), Error> {
    writer.aborted = false;
    let mut reconnected = false;
    for _ in 0..BEGIN_ATTEMPTS_MAX {
        reconnect_if_closed(writer);
        let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
        let Err(e) = conn.batch_execute(BEGIN) else { return Ok(()) };
        if conn.is_closed() && !std::mem::replace(&mut reconnected, true) {
            continue;
        }
        let _ = conn.batch_execute("ROLLBACK");
        if e.code() != Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return Err(Error::internal("begin", e));
        }
    }
    Err(Error::Unavailable("a halt kept the batch from beginning"))
}

fn run_batch(
    writer: &mut Writer,
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    replies: &mut Vec<Reply>,
) -> Result<(), Error> {
    if let Err(e) = begin(writer) {
        // Run nothing: answer this job with the error.
        replies.push(first.fail(Error::Unavailable("the database connection is down")));
        return Err(e);
    }
    // Jobs deferred before this batch run first, until one of them waits in
    // vain again (the rest likely wait for the same rows); then new ones.
    let mut retries_left = writer.deferred.len();
    let mut ran = 0;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        let retry = job.runs > 0;
        match run_job(writer, job) {
            Ran::Answered(reply) => replies.push(reply),
            Ran::Deferred(job) => {
                writer.deferred.push_back(job);
                if retry {
                    retries_left = 0;
                }
            }
        }
        ran += 1;
        if ran >= BATCH_JOBS_MAX || writer.aborted {
            break;
        }
        let candidate = match retries_left {
            0 => queue.try_recv().ok(),
            _ => {
                retries_left -= 1;
                writer.deferred.pop_front()
            }
        };
        let Some(job) = candidate else { break };
        // Each job runs in its own savepoint, ended together with what
        // comes next (the next job's savepoint, or the commit): one round
        // trip between jobs instead of two.
        match ran {
            1 => end_savepoint(writer, &format!("SET LOCAL lock_timeout = {LOCK_WAIT_LATER_MS}; SAVEPOINT job")),
            _ => end_savepoint(writer, "SAVEPOINT job"),
        }
        match writer.aborted {
            // Run nothing more: answer this job with the batch's error.
            true => replies.push(job.fail(Error::Internal("the batch's transaction was aborted".into()))),
            false => next = Some(job),
        }
    }
    crate::metrics::METRICS.record_batch(ran);
    if !writer.aborted {
        let committing = Instant::now();
        end_savepoint(writer, "COMMIT");
        crate::metrics::METRICS.record_commit(committing.elapsed());
    }
    let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
    if std::mem::take(&mut writer.aborted) {
        // COMMIT would answer a quiet ROLLBACK, or did not run: say so to
        // every caller.
        let _ = conn.batch_execute("ROLLBACK");
        return Err(Error::Internal("the batch's transaction was aborted and rolled back".into()));
    }
    Ok(())
}

fn run_job(writer: &mut Writer, mut job: Job) -> Ran {
    let first_run = *job.first_run.get_or_insert_with(Instant::now);
    job.runs = job.runs.saturating_add(1);
    let result = match writer.conn.as_mut() {
        Some(conn) => {
            // The writes the job appended are sent before its savepoint
            // ends, so that their failure is the job's (rolled back with
            // it), not the next job's.
            let result = (job.op)(&mut SqlTx::new(conn, Some(&mut writer.policies)));
            match result {
                Ok(answer) => conn.flush().map(|()| answer),
                Err(e) => {
                    conn.discard();
                    Err(e)
                }
            }
        }
        None => Err(Error::Unavailable("the database connection is down")),
    };
    writer.job_failed = result.is_err();
    if writer.job_failed {
        // A policy it parsed may be one its rolled-back work wrote.
        writer.policies.clear();
    }
    match result {
        Err(Error::Contended(why)) => {
            let given_up = job.runs >= JOB_RUNS_MAX
                || first_run.elapsed() >= Duration::from_millis(JOB_DEADLINE_MS.saturating_sub(LOCK_WAIT_MS));
            if !given_up {
                return Ran::Deferred(job);
            }
            tracing::warn!(why, runs = job.runs, "a write stayed contended; it was given up");
            Ran::Answered(job.fail(Error::Unavailable("the rows this write needs stayed locked by another writer")))
        }
        result => Ran::Answered(commit::reply(result, job.done)),
    }
}

/// Ends the savepoint of the job that ran last (released, or rolled back if
/// the job failed) and runs `then` in the same round trip. If that fails
/// (the job went on after a failed statement and left the transaction
/// aborted, or the connection dropped) the batch is `aborted`.
fn end_savepoint(writer: &mut Writer, then: &str) {
    let end = if writer.job_failed { "ROLLBACK TO job; RELEASE job" } else { "RELEASE job" };
    let ended = match writer.conn.as_mut() {
        Some(conn) => conn.batch_execute(&format!("{end}; {then}")),
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

/// The connection the writer opens first (and migrates with): its lock
/// waits are long until the schema is in place, then [`LOCK_WAIT_MS`].
pub fn open_conn(config: &Config) -> Result<Conn, Error> {
    let mut conn = Conn::open(config, CONNECT_LOCK_TIMEOUT_MS)?;
    super::schema::migrate(&mut conn)?;
    conn.batch_execute(&format!("SET lock_timeout = {LOCK_WAIT_MS}"))
        .map_err(|e| Error::internal("configuring the writer's session", e))?;
    Ok(conn)
}
