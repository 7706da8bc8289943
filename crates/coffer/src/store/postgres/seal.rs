//! The sealer: numbers audit records and events after their transactions
//! committed, in the order they became visible.
//!
//! Instances write without a lock they all share, so their transactions
//! commit in any order: a row written first (a lower `pos`) may become
//! visible after one written later. A reader that replays the outbox with
//! `after=ID`, or a chain whose every record names its predecessor's hash,
//! needs an order in which nothing ever appears before what was already
//! read. The sealer gives it: in one transaction under [`SEAL_LOCK`] (one
//! sealer at a time in the whole cluster) it numbers the unnumbered rows it
//! can see, which are committed ones, after the highest number given; a row
//! that commits later is numbered by a later pass, higher. Readers see
//! numbered rows only (an unnumbered event has no `id`, an unnumbered audit
//! record no `seq`).
//!
//! Every instance runs one. It seals after each commit of its writer, when
//! a reader asks ([`Store::sealed`](crate::store::Store::sealed)), and every
//! [`SEAL_IDLE_MS`] (rows an instance that died committed but did not
//! seal).

use super::pg::Conn;
use super::{CONNECT_LOCK_TIMEOUT_MS, SEAL_LOCK};
use crate::error::Error;
use crate::store::sql::hash32;
use coffer_core::audit_chain;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::Config;

/// The most rows of each log one pass's transaction numbers; a pass goes
/// on while a transaction numbered this many.
const SEAL_ROWS_MAX: i64 = 4_096;
/// Without a wake, the sealer looks for unnumbered rows this often.
const SEAL_IDLE_MS: u64 = 1_000;
/// After a failed pass, the sealer waits this long before the next.
const SEAL_RETRY_MS: u64 = 100;
/// Wakes waiting for the sealer; one is enough, more are dropped.
const SEAL_WAKES_MAX: usize = 64;
/// A reader waits this long for a pass before it is told to try again.
const SEAL_WAIT_MS: u64 = 10_000;
const _: () = assert!(SEAL_RETRY_MS < SEAL_IDLE_MS && SEAL_IDLE_MS < SEAL_WAIT_MS);

/// Numbers the events not numbered yet, after the highest id, in the order
/// they were written.
const SEAL_EVENTS: &str = "WITH todo AS (SELECT pos FROM events WHERE id IS NULL ORDER BY pos LIMIT $1), \
     top AS (SELECT COALESCE(MAX(id), 0) AS id FROM events), \
     numbered AS (SELECT todo.pos, top.id + row_number() OVER (ORDER BY todo.pos) AS id FROM todo CROSS JOIN top) \
     UPDATE events e SET id = numbered.id FROM numbered WHERE e.pos = numbered.pos";
const LAST_SEALED_AUDIT: &str = "SELECT seq, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1";
const UNSEALED_AUDIT: &str = "SELECT pos, body FROM audit_log WHERE seq IS NULL ORDER BY pos LIMIT $1";
const SEAL_AUDIT: &str = "UPDATE audit_log a SET seq = u.seq, prev_hash = u.prev, hash = u.hash \
     FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BYTEA[], $4::BYTEA[]) AS u(pos, seq, prev, hash) \
     WHERE a.pos = u.pos";

/// The handle the store and its writer keep.
#[derive(Clone)]
pub struct Sealer {
    wakes: SyncSender<()>,
    /// Passes begun: a pass begun after a write committed numbers it.
    begun: Arc<AtomicU64>,
    /// The number of the last pass that ended well.
    done: watch::Receiver<u64>,
}

/// The sealer's thread, not started yet.
pub struct Unstarted {
    thread: SealerThread,
    woken: mpsc::Receiver<()>,
}

impl Unstarted {
    /// Starts it: once the schema is in place (the writers migrate it).
    pub fn start(self) -> Result<(), Error> {
        let Unstarted { thread, woken } = self;
        std::thread::Builder::new()
            .name("coffer-pg-sealer".into())
            .spawn(move || thread.run(&woken))
            .map_err(|e| Error::internal("starting the sealer thread", e))?;
        Ok(())
    }
}

impl Sealer {
    /// The handle, and the thread to start; `commits` changes whenever it
    /// numbered events.
    pub fn new(config: Config, commits: watch::Sender<u64>) -> (Sealer, Unstarted) {
        let (wakes, woken) = mpsc::sync_channel(SEAL_WAKES_MAX);
        let begun = Arc::new(AtomicU64::new(0));
        let (done_tx, done) = watch::channel(0);
        let thread = SealerThread { config, conn: None, begun: Arc::clone(&begun), done: done_tx, commits };
        (Sealer { wakes, begun, done }, Unstarted { thread, woken })
    }

    /// Asks for a pass soon; one already asked for is enough.
    pub fn wake(&self) {
        let _ = self.wakes.try_send(());
    }

    /// Resolves once a pass that began after this call ended well.
    pub async fn sealed(&self) -> Result<(), Error> {
        let target = self.begun.load(Ordering::SeqCst).wrapping_add(1);
        let mut done = self.done.clone();
        self.wake();
        let waited = tokio::time::timeout(Duration::from_millis(SEAL_WAIT_MS), done.wait_for(|n| *n >= target));
        match waited.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable("the sealer stopped")),
            Err(_) => Err(Error::Unavailable("the database did not number recent writes in time")),
        }
    }
}

struct SealerThread {
    config: Config,
    conn: Option<Conn>,
    begun: Arc<AtomicU64>,
    done: watch::Sender<u64>,
    commits: watch::Sender<u64>,
}

impl SealerThread {
    fn run(mut self, woken: &mpsc::Receiver<()>) {
        loop {
            match woken.recv_timeout(Duration::from_millis(SEAL_IDLE_MS)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                // The store and its writer are gone.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Every wake that came meanwhile is served by this pass.
            while woken.try_recv().is_ok() {}
            let pass = self.begun.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
            match self.pass() {
                Ok(events) => {
                    self.done.send_replace(pass);
                    if events > 0 {
                        super::commit::count(&self.commits);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sealing the audit trail and the outbox failed; trying again");
                    if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
                        self.conn = None;
                    }
                    std::thread::sleep(Duration::from_millis(SEAL_RETRY_MS));
                }
            }
        }
    }

    /// Numbers everything committed and unnumbered; answers how many
    /// events it numbered.
    fn pass(&mut self) -> Result<u64, Error> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(Conn::open(&self.config, CONNECT_LOCK_TIMEOUT_MS)?);
        }
        let conn = self.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
        let mut events = 0;
        loop {
            let (sealed_events, sealed_audit) = seal_once(conn)?;
            events += sealed_events;
            if sealed_events < SEAL_ROWS_MAX as u64 && sealed_audit < SEAL_ROWS_MAX as u64 {
                return Ok(events);
            }
        }
    }
}

/// One transaction: numbers up to [`SEAL_ROWS_MAX`] events and audit
/// records.
///
/// Its reads of the unnumbered rows go through the partial indexes
/// (`events_unsealed`, `audit_unsealed`) by index scans, never bitmap
/// scans, which the planner otherwise picks: every row's unnumbered version
/// leaves a dead entry in those indexes once numbered, and only an index
/// scan marks the dead entries it passes so that the next pass skips them.
/// Under bitmap scans they piled up until a vacuum, and each pass read them
/// all: 2.6 ms a pass 30,000 events into a run, the most costly statement
/// of the whole write path (`pg_stat_statements`, BENCHMARKS.md).
fn seal_once(conn: &mut Conn) -> Result<(u64, u64), Error> {
    conn.batch_execute(&format!(
        "BEGIN; SET LOCAL enable_bitmapscan = off; SELECT pg_advisory_xact_lock({SEAL_LOCK})"
    ))?;
    let sealed = seal_in_transaction(conn);
    let end = if sealed.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.batch_execute(end)?;
    sealed
}

fn seal_in_transaction(conn: &mut Conn) -> Result<(u64, u64), Error> {
    let events = conn.execute_typed(SEAL_EVENTS, &[&SEAL_ROWS_MAX])?;
    let last = conn.query_typed(LAST_SEALED_AUDIT, &[])?;
    let (mut seq, mut prev) = match last.first() {
        Some(row) => (row.try_get::<_, i64>(0)?, hash32(row.try_get(1)?)?),
        None => (0, audit_chain::GENESIS),
    };
    let unsealed = conn.query_typed(UNSEALED_AUDIT, &[&SEAL_ROWS_MAX])?;
    let count = unsealed.len();
    let (mut positions, mut seqs) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let (mut prevs, mut hashes) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for row in &unsealed {
        // The chain links the body's text, which the row holds packed.
        let stored: Vec<u8> = row.try_get(1)?;
        let body =
            coffer_core::pack::json::unpack(&stored).map_err(|e| Error::internal("an audit record's body", e))?;
        seq = seq.checked_add(1).ok_or(Error::Internal("the audit log is full".into()))?;
        let hash = audit_chain::link(&prev, body.as_bytes());
        positions.push(row.try_get::<_, i64>(0)?);
        seqs.push(seq);
        prevs.push(prev.to_vec());
        hashes.push(hash.to_vec());
        prev = hash;
    }
    if count > 0 {
        conn.execute_typed(SEAL_AUDIT, &[&positions, &seqs, &prevs, &hashes])?;
    }
    Ok((events, count as u64))
}
