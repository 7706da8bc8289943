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
//! read paths share the synchronous [`Tx`] code with the writes; and a
//! blocking client must never run, or be dropped, on a tokio worker thread
//! (it drives its own runtime), so the connections live on threads of
//! their own rather than in `spawn_blocking`.

mod outbox;
mod schema;

use super::*;
use crate::payment::{external, internal};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Row, Statement};
use coffer_client::PaymentStatus;
use coffer_client::Scope;
use coffer_core::Msat;
use coffer_core::audit_chain;
use coffer_core::ledger::{self, Transfer};
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
/// Prepared statements kept per connection.
const STATEMENTS_MAX: usize = 256;
/// Any constant, the same in every instance: the lock each write
/// transaction takes first (see the module comment).
const WRITE_LOCK: i64 = 0x636f_6666_6572_0002;
/// A transaction left open this long (a stopped instance) is ended by the
/// server, so it cannot hold the write lock forever.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;
/// Waiting longer than this for the write lock fails the batch.
const LOCK_TIMEOUT_MS: u64 = 10_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Expired approvals handled per call: bounds one background step.
const EXPIRE_BATCH_MAX: i64 = 256;

type Reply = Box<dyn FnOnce(Result<(), &Error>) + Send>;
type Job = Box<dyn FnOnce(&mut Writer) -> Reply + Send>;
type ReadJob = Box<dyn FnOnce(&mut Reader) + Send>;
type Param<'a> = &'a (dyn ToSql + Sync);

/// Parsed policies by agent, with the revision they were parsed from. The
/// revision is read in the paying transaction, under the write lock, so a
/// policy changed by another instance is never served from here.
type PolicyCache = HashMap<String, (i64, Arc<Policy>)>;

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn open(config: &Config) -> Result<Conn, Error> {
        let mut client = config.connect(NoTls).map_err(|e| Error::internal("connecting to PostgreSQL", e))?;
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}; \
                 SET lock_timeout = {LOCK_TIMEOUT_MS};"
            ))
            .map_err(|e| Error::internal("configuring a PostgreSQL session", e))?;
        Ok(Conn { client, statements: HashMap::new() })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        if self.statements.len() >= STATEMENTS_MAX {
            self.statements.clear();
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql)?;
        Ok(self.client.query(&statement, params)?)
    }

    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, Error> {
        let statement = self.statement(sql)?;
        Ok(self.client.query_opt(&statement, params)?)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, Error> {
        let statement = self.statement(sql)?;
        Ok(self.client.execute(&statement, params)?)
    }
}

/// What the writer thread owns.
struct Writer {
    config: Config,
    conn: Option<Conn>,
    policies: PolicyCache,
    /// Counts this instance's commits, for watchers of the outbox.
    commits: watch::Sender<u64>,
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
                            run_writer(Writer { config, conn: Some(conn), policies, commits }, queue);
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

    /// Runs `op` in the writer's next batch; resolves once it is committed.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgTx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |writer| {
            let result = match writer.conn.as_mut() {
                Some(conn) => in_savepoint(conn, &mut writer.policies, op),
                None => Err(Error::Unavailable("the database connection is down")),
            };
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
        F: Fn(&mut PgTx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |reader| {
            let mut result = reader.conn().and_then(|conn| op(&mut PgTx { conn, policies: None }));
            if result.is_err() && reader.lost() {
                // The server dropped the connection (a restart): a read
                // changes nothing, so once more on a new one is safe.
                result = reader.conn().and_then(|conn| op(&mut PgTx { conn, policies: None }));
            }
            let _ = done.send(result);
        });
        Box::pin(async move {
            self.reads.send(job).await.map_err(|_| Error::Unavailable("the store is shutting down"))?;
            answer.await.map_err(|_| Error::Unavailable("a store reader stopped"))?
        })
    }
}

fn in_savepoint<T>(
    conn: &mut Conn,
    policies: &mut PolicyCache,
    op: impl FnOnce(&mut PgTx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    conn.client.batch_execute("SAVEPOINT job")?;
    let result = op(&mut PgTx { conn, policies: Some(policies) });
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    conn.client.batch_execute(end)?;
    result
}

fn run_writer(mut writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH_JOBS_MAX);
    while let Some(first) = queue.blocking_recv() {
        let commit = run_batch(&mut writer, first, &mut queue, &mut replies);
        let commit_ref = commit.as_ref().map(|_| ());
        // Counted before the callers hear of it, as on SQLite.
        if commit.is_ok() {
            writer.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        for reply in replies.drain(..) {
            reply(commit_ref);
        }
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

/// Opens the batch's transaction and takes the write lock. A connection the
/// server dropped (a restart) is found here, before any job ran: the batch
/// then begins once more on a new connection.
fn begin(writer: &mut Writer) -> Result<(), Error> {
    for attempt in 0..2 {
        reconnect_if_closed(writer);
        let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
        match conn.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")) {
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
    replies.push(first(writer));
    while replies.len() < BATCH_JOBS_MAX {
        match queue.try_recv() {
            Ok(job) => replies.push(job(writer)),
            Err(_) => break,
        }
    }
    crate::metrics::METRICS.record_batch(replies.len());
    let conn = writer.conn.as_mut().ok_or(Error::Unavailable("the database connection is down"))?;
    conn.client.batch_execute("COMMIT").map_err(|e| {
        let _ = conn.client.batch_execute("ROLLBACK");
        Error::internal("commit", e)
    })
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

impl From<::postgres::Error> for Error {
    fn from(e: ::postgres::Error) -> Error {
        Error::internal("postgres", e)
    }
}

/// One store transaction on PostgreSQL: the writer's (inside its batch) or
/// a reader's (each statement on its own).
pub struct PgTx<'a> {
    conn: &'a mut Conn,
    /// The writer's policy cache; readers parse every time.
    policies: Option<&'a mut PolicyCache>,
}

fn balance_row(d: i64, c: i64, p: i64) -> Result<Balance, Error> {
    Ok(Balance { debits_posted: msat(d)?, credits_posted: msat(c)?, debits_pending: msat(p)? })
}

const KEY_COLUMNS: &str =
    "k.id, k.agent_id, a.account_id, k.scope, k.digest, k.expires_at FROM keys k JOIN agents a ON a.id = k.agent_id";

fn key_from_row(r: &Row) -> Result<KeyRecord, Error> {
    let scope: String = r.try_get(3)?;
    Ok(KeyRecord {
        id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        account: AccountId(r.try_get(2)?),
        scope: Scope::parse(&scope).ok_or_else(|| Error::Internal(format!("unknown stored scope {scope}")))?,
        digest: SecretDigest(hash32(r.try_get(4)?)?),
        expires_at_ms: r.try_get(5)?,
    })
}

const AGENT_COLUMNS: &str = "g.id, g.name, g.account_id, g.created_at, a.debits_posted, a.credits_posted, \
     a.debits_pending, g.parent_id, g.can_create_subagents, g.frozen_reason \
     FROM agents g JOIN accounts a ON a.id = g.account_id";

fn agent_from_row(r: &Row) -> Result<AgentRecord, Error> {
    Ok(AgentRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        account: AccountId(r.try_get(2)?),
        created_at_ms: r.try_get(3)?,
        balance: balance_row(r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)?,
        parent_id: r.try_get(7)?,
        can_create_subagents: r.try_get(8)?,
        frozen_reason: r.try_get(9)?,
    })
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
/// Open invoices due for the sweep (`$1`: now, `$2`: the deposit watcher's
/// horizon), by the partial index `invoices_open_by_expiry`.
const INVOICES_DUE: &str = "status = 'open' AND expires_at <= $1 AND (backend IS NULL OR expires_at < $2)";

fn invoice_from_row(r: &Row) -> Result<(InvoiceRecord, i64, AccountId), Error> {
    let status: String = r.try_get(6)?;
    let record = InvoiceRecord {
        payment_hash: hash32(r.try_get(0)?)?,
        agent_id: r.try_get(1)?,
        amount: msat(r.try_get(2)?)?,
        memo: r.try_get(3)?,
        bolt11: r.try_get(4)?,
        preimage: hash32(r.try_get(5)?)?,
        status: StoredInvoiceStatus::parse(&status)?,
        created_at_ms: r.try_get(7)?,
        expires_at_ms: r.try_get(8)?,
        paid_at_ms: r.try_get(9)?,
        paid_by: r.try_get(12)?,
        room_id: r.try_get(13)?,
        backend: r.try_get(14)?,
    };
    Ok((record, r.try_get(10)?, AccountId(r.try_get(11)?)))
}

const PAYMENT_COLUMNS: &str = "id, agent_id, payment_hash, amount, fee, status, purpose, payee_agent_id, preimage, \
     created_at, seq, detail FROM payments";

fn payment_from_row(r: &Row) -> Result<(PaymentRecord, i64), Error> {
    let status: String = r.try_get(5)?;
    let status = parse_status(&status)?;
    let preimage: Option<Vec<u8>> = r.try_get(8)?;
    let record = PaymentRecord {
        id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        payment_hash: hash32(r.try_get(2)?)?,
        amount: msat(r.try_get(3)?)?,
        fee: msat(r.try_get(4)?)?,
        status,
        purpose: r.try_get(6)?,
        payee_agent_id: r.try_get(7)?,
        preimage: preimage.map(hash32).transpose()?,
        created_at_ms: r.try_get(9)?,
        detail: r.try_get(11)?,
    };
    Ok((record, r.try_get(10)?))
}

fn parse_status(status: &str) -> Result<PaymentStatus, Error> {
    match status {
        "succeeded" => Ok(PaymentStatus::Succeeded),
        "pending" => Ok(PaymentStatus::Pending),
        "failed" => Ok(PaymentStatus::Failed),
        other => Err(Error::Internal(format!("unknown stored payment status {other}"))),
    }
}

const EXTERNAL_COLUMNS: &str = "payment_id, payment_hash, bolt11, agent_id, account_id, amount, fee_limit, status, \
     checks, created_at FROM external_payments";

fn external_from_row(r: &Row) -> Result<ExternalPayment, Error> {
    let status: String = r.try_get(7)?;
    Ok(ExternalPayment {
        payment_id: r.try_get(0)?,
        payment_hash: hash32(r.try_get(1)?)?,
        bolt11: r.try_get(2)?,
        agent_id: r.try_get(3)?,
        account: AccountId(r.try_get(4)?),
        amount: msat(r.try_get(5)?)?,
        fee_limit: msat(r.try_get(6)?)?,
        status: parse_status(&status)?,
        checks: r.try_get(8)?,
        created_at_ms: r.try_get(9)?,
    })
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

fn incoming_from_row(r: &Row) -> Result<IncomingRecord, Error> {
    let status: String = r.try_get(4)?;
    Ok(IncomingRecord {
        payment_id: r.try_get(0)?,
        payee_agent_id: r.try_get(1)?,
        payer_agent_id: r.try_get(2)?,
        amount: msat(r.try_get(3)?)?,
        status: IncomingStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown incoming status {status}")))?,
        created_at_ms: r.try_get(5)?,
        decided_at_ms: r.try_get(6)?,
    })
}

const APPROVAL_COLUMNS: &str = "id, agent_id, key_id, payment_hash, bolt11, amount, purpose, payee_agent_id, status, \
     created_at, expires_at, decided_at, decided_by, payment_id, fee_limit, payee_node FROM approvals";

fn approval_from_row(r: &Row) -> Result<ApprovalRecord, Error> {
    let status: String = r.try_get(8)?;
    Ok(ApprovalRecord {
        id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        key_id: r.try_get(2)?,
        payment_hash: hash32(r.try_get(3)?)?,
        bolt11: r.try_get(4)?,
        amount: msat(r.try_get(5)?)?,
        purpose: r.try_get(6)?,
        payee_agent_id: r.try_get(7)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown approval status {status}")))?,
        created_at_ms: r.try_get(9)?,
        expires_at_ms: r.try_get(10)?,
        decided_at_ms: r.try_get(11)?,
        decided_by: r.try_get(12)?,
        payment_id: r.try_get(13)?,
        fee_limit: msat(r.try_get(14)?)?,
        payee_node_hex: r.try_get(15)?,
    })
}

fn audit_from_row(r: &Row) -> Result<AuditRecord, Error> {
    Ok(AuditRecord {
        seq: r.try_get(0)?,
        body: r.try_get(1)?,
        prev_hash: hash32(r.try_get(2)?)?,
        hash: hash32(r.try_get(3)?)?,
    })
}

fn rows<T>(rows: Vec<Row>, parse: impl Fn(&Row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    rows.iter().map(parse).collect()
}

impl PgTx<'_> {
    fn insert_invoice(&mut self, inv: &InvoiceRecord) -> Result<(), Error> {
        let account: i64 = if inv.agent_id == TREASURY_PAYEE {
            AccountId::TREASURY.0
        } else {
            self.conn
                .query_opt("SELECT account_id FROM agents WHERE id = $1", &[&inv.agent_id])?
                .ok_or(Error::NotFound("agent"))?
                .try_get(0)?
        };
        self.conn.execute(
            "INSERT INTO invoices (payment_hash, agent_id, account_id, amount, memo, bolt11, preimage, status, \
             created_at, expires_at, room_id, backend) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10, $11)",
            &[
                &inv.payment_hash.as_slice(),
                &inv.agent_id,
                &account,
                &to_sql(inv.amount)?,
                &inv.memo,
                &inv.bolt11,
                &inv.preimage.as_slice(),
                &inv.created_at_ms,
                &inv.expires_at_ms,
                &inv.room_id,
                &inv.backend,
            ],
        )?;
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
        let sql = "SELECT 1 FROM approvals WHERE status = 'pending' AND expires_at <= $1 LIMIT 1";
        Ok(self.conn.query_opt(sql, &[&now_ms])?.is_some())
    }

    /// Expires the pending approvals past their time, a batch at a time,
    /// releasing what each reserved.
    fn expire_due_approvals(&mut self, now_ms: i64) -> Result<u64, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        );
        let due = rows(self.conn.query(&sql, &[&now_ms, &EXPIRE_BATCH_MAX])?, approval_from_row)?;
        let count = due.len() as u64;
        for approval in due {
            internal::release(self, approval, ApprovalStatus::Expired, "system", now_ms)?;
        }
        Ok(count)
    }

    /// Whether an open invoice is due for the sweep (see
    /// [`Store::expire_invoices`]).
    fn invoices_due(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<bool, Error> {
        let sql = format!("SELECT 1 FROM invoices WHERE {INVOICES_DUE} LIMIT 1");
        Ok(self.conn.query_opt(&sql, &[&now_ms, &watched_since_ms])?.is_some())
    }

    /// The sweep's step: one conditional statement, so an invoice paid
    /// meanwhile is not expired (and one expired is not paid: the payment
    /// flows read the status in their own transaction). The write lock
    /// orders the sweeps of all instances; the outer `status = 'open'` would
    /// keep an invoice from expiring twice even without it.
    fn expire_invoices(&mut self, now_ms: i64, watched_since_ms: i64) -> Result<u64, Error> {
        let sql = format!(
            "UPDATE invoices SET status = 'expired' WHERE status = 'open' AND seq IN \
             (SELECT seq FROM invoices WHERE {INVOICES_DUE} ORDER BY expires_at LIMIT $3) RETURNING {INVOICE_COLUMNS_ONLY}"
        );
        let limit = i64::from(INVOICE_EXPIRY_BATCH_MAX);
        let mut expired = rows(self.conn.query(&sql, &[&now_ms, &watched_since_ms, &limit])?, invoice_from_row)?;
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
        self.conn.execute(
            "INSERT INTO room_members (room_id, member, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&room_id, &member, &now_ms],
        )?;
        Ok(())
    }

    fn room(&mut self, id: &str) -> Result<Option<RoomRecord>, Error> {
        let Some(row) = self.conn.query_opt("SELECT name, created_by, created_at FROM rooms WHERE id = $1", &[&id])?
        else {
            return Ok(None);
        };
        let members = self
            .conn
            .query("SELECT member FROM room_members WHERE room_id = $1 ORDER BY added_at, member", &[&id])?
            .iter()
            .map(|r| r.try_get(0).map_err(Error::from))
            .collect::<Result<_, _>>()?;
        Ok(Some(RoomRecord {
            id: id.to_owned(),
            name: row.try_get(0)?,
            created_by: row.try_get(1)?,
            created_at_ms: row.try_get(2)?,
            members,
        }))
    }

    fn messages_where(&mut self, filter: &str, args: &[Param<'_>]) -> Result<Vec<MessageRecord>, Error> {
        let sql = format!(
            "SELECT m.id, m.room_id, m.sender, m.kind, m.text, m.created_at, m.payment_hash \
             FROM messages m WHERE {filter}"
        );
        let found = self.conn.query(&sql, args)?;
        found
            .iter()
            .map(|r| {
                let hash: Option<Vec<u8>> = r.try_get(6)?;
                let invoice = match hash {
                    Some(h) => self.invoice(&hash32(h)?)?.map(|(i, _)| i),
                    None => None,
                };
                let kind: String = r.try_get(3)?;
                let kind = if kind == "payment_request" { MessageKind::PaymentRequest } else { MessageKind::Text };
                Ok(MessageRecord {
                    id: r.try_get(0)?,
                    room_id: r.try_get(1)?,
                    sender: r.try_get(2)?,
                    kind,
                    text: r.try_get(4)?,
                    created_at_ms: r.try_get(5)?,
                    invoice,
                })
            })
            .collect()
    }

    fn policy(&mut self, agent_id: &str, rev: i64, text: Option<String>) -> Result<Option<Arc<Policy>>, Error> {
        let Some(text) = text else { return Ok(None) };
        if let Some(cache) = self.policies.as_ref()
            && let Some((cached_rev, policy)) = cache.get(agent_id)
            && *cached_rev == rev
        {
            return Ok(Some(Arc::clone(policy)));
        }
        let policy = Arc::new(Policy::from_json(&text).map_err(|e| Error::internal("a stored policy", e))?);
        if let Some(cache) = self.policies.as_mut() {
            cache.insert(agent_id.to_owned(), (rev, Arc::clone(&policy)));
        }
        Ok(Some(policy))
    }

    fn agent_record(&mut self, id: &str) -> Result<Option<AgentRecord>, Error> {
        let sql = format!("SELECT {AGENT_COLUMNS} WHERE g.id = $1");
        self.conn.query_opt(&sql, &[&id])?.as_ref().map(agent_from_row).transpose()
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
        self.conn.execute(
            "INSERT INTO keys (id, agent_id, digest, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&key.id, &key.agent_id, &key.digest.0.as_slice(), &key.scope.as_str(), &now_ms, &key.expires_at_ms],
        )?;
        Ok(())
    }
}

impl Tx for PgTx<'_> {
    fn balance(&mut self, account: AccountId) -> Result<Balance, Error> {
        let row = self
            .conn
            .query_opt(
                "SELECT debits_posted, credits_posted, debits_pending FROM accounts WHERE id = $1",
                &[&account.0],
            )?
            .ok_or(Error::NotFound("account"))?;
        balance_row(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)
    }

    fn save_balance(&mut self, account: AccountId, b: &Balance) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE accounts SET debits_posted = $2, credits_posted = $3, debits_pending = $4 WHERE id = $1",
            &[&account.0, &to_sql(b.debits_posted)?, &to_sql(b.credits_posted)?, &to_sql(b.debits_pending)?],
        )?;
        Ok(())
    }

    fn insert_transfer(&mut self, t: &Transfer, kind: &str, now_ms: i64) -> Result<i64, Error> {
        let row = self
            .conn
            .query_opt(
                "INSERT INTO transfers (debit, credit, amount, kind, created_at) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id",
                &[&t.debit.0, &t.credit.0, &to_sql(t.amount)?, &kind, &now_ms],
            )?
            .ok_or_else(|| Error::Internal("an insert returned no id".into()))?;
        Ok(row.try_get(0)?)
    }

    fn invoice(&mut self, payment_hash: &[u8; 32]) -> Result<Option<(InvoiceRecord, AccountId)>, Error> {
        let sql = format!("SELECT {INVOICE_COLUMNS} WHERE payment_hash = $1");
        let row = self.conn.query_opt(&sql, &[&payment_hash.as_slice()])?;
        Ok(row.as_ref().map(invoice_from_row).transpose()?.map(|(record, _, account)| (record, account)))
    }

    fn mark_invoice_paid(&mut self, payment_hash: &[u8; 32], payer_agent_id: &str, now_ms: i64) -> Result<(), Error> {
        // Only an open invoice: the flow checked that it is, and the
        // database asserts it too.
        let changed = self.conn.execute(
            "UPDATE invoices SET status = 'paid', paid_at = $2, paid_by = $3 \
             WHERE payment_hash = $1 AND status = 'open'",
            &[&payment_hash.as_slice(), &now_ms, &payer_agent_id],
        )?;
        if changed != 1 {
            return Err(Error::InvoiceAlreadyPaid);
        }
        Ok(())
    }

    fn insert_payment(&mut self, p: &PaymentRecord, key_id: &str, transfer_id: Option<i64>) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO payments (id, agent_id, key_id, payment_hash, amount, fee, status, purpose, payee_agent_id, \
             preimage, transfer_id, created_at, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &p.id,
                &p.agent_id,
                &key_id,
                &p.payment_hash.as_slice(),
                &to_sql(p.amount)?,
                &to_sql(p.fee)?,
                &status_str(p.status),
                &p.purpose,
                &p.payee_agent_id,
                &p.preimage.as_ref().map(|x| x.as_slice()),
                &transfer_id,
                &p.created_at_ms,
                &p.detail,
            ],
        )?;
        Ok(())
    }

    fn payment(&mut self, id: &str) -> Result<Option<PaymentRecord>, Error> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} WHERE id = $1");
        Ok(self.conn.query_opt(&sql, &[&id])?.as_ref().map(payment_from_row).transpose()?.map(|(p, _)| p))
    }

    fn idempotency(&mut self, agent_id: &str, key: &str) -> Result<Option<([u8; 32], String)>, Error> {
        let row = self.conn.query_opt(
            "SELECT request_digest, payment_id FROM idempotency WHERE agent_id = $1 AND key = $2",
            &[&agent_id, &key],
        )?;
        row.map(|r| Ok((hash32(r.try_get(0)?)?, r.try_get(1)?))).transpose()
    }

    fn insert_idempotency(
        &mut self,
        agent_id: &str,
        idem: &Idempotency,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO idempotency (agent_id, key, request_digest, payment_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&agent_id, &idem.key, &idem.request_digest.as_slice(), &target_id, &now_ms],
        )?;
        Ok(())
    }

    fn halted(&mut self) -> Result<bool, Error> {
        let row = self.conn.query_opt("SELECT value FROM meta WHERE key = 'halted'", &[])?;
        let value: Option<Vec<u8>> = row.map(|r| r.try_get(0)).transpose()?;
        Ok(value.as_deref() == Some(&[1u8][..]))
    }

    fn agent_state(&mut self, agent_id: &str) -> Result<Option<AgentState>, Error> {
        let Some(row) = self.conn.query_opt(
            "SELECT account_id, parent_id, frozen_reason, policy, policy_rev, usage, breaker FROM agents WHERE id = $1",
            &[&agent_id],
        )?
        else {
            return Ok(None);
        };
        let frozen_reason: Option<String> = row.try_get(2)?;
        Ok(Some(AgentState {
            agent_id: agent_id.to_owned(),
            account: AccountId(row.try_get(0)?),
            parent_id: row.try_get(1)?,
            frozen: frozen_reason.is_some(),
            policy: self.policy(agent_id, row.try_get(4)?, row.try_get(3)?)?,
            usage: from_json(row.try_get(5)?)?,
            breaker: from_json(row.try_get(6)?)?,
        }))
    }

    fn save_agent_state(&mut self, state: &AgentState) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE agents SET usage = $2, breaker = $3 WHERE id = $1",
            &[&state.agent_id, &json(&state.usage)?, &json(&state.breaker)?],
        )?;
        Ok(())
    }

    fn set_frozen(&mut self, agent_id: &str, reason: Option<&str>, _now_ms: i64) -> Result<(), Error> {
        // Unfreezing starts the breaker's counts afresh: what tripped it
        // must not trip it again.
        let changed = self.conn.execute(
            "UPDATE agents SET frozen_reason = $2, breaker = CASE WHEN $2::text IS NULL THEN NULL ELSE breaker END \
             WHERE id = $1",
            &[&agent_id, &reason],
        )?;
        if changed == 0 {
            return Err(Error::NotFound("agent"));
        }
        Ok(())
    }

    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO approvals (id, agent_id, key_id, payment_hash, bolt11, amount, purpose, payee_agent_id, \
             status, created_at, expires_at, fee_limit, payee_node) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &a.id,
                &a.agent_id,
                &a.key_id,
                &a.payment_hash.as_slice(),
                &a.bolt11,
                &to_sql(a.amount)?,
                &a.purpose,
                &a.payee_agent_id,
                &a.status.as_str(),
                &a.created_at_ms,
                &a.expires_at_ms,
                &to_sql(a.fee_limit)?,
                &a.payee_node_hex,
            ],
        )?;
        Ok(())
    }

    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} WHERE id = $1");
        self.conn.query_opt(&sql, &[&id])?.as_ref().map(approval_from_row).transpose()
    }

    fn held(&mut self, payment_hash: &[u8; 32], payer: Option<&str>) -> Result<Option<ApprovalRecord>, Error> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} WHERE payment_hash = $1 AND status = 'pending' \
             AND ($2::TEXT IS NULL OR agent_id = $2) LIMIT 1"
        );
        self.conn.query_opt(&sql, &[&payment_hash.as_slice(), &payer])?.as_ref().map(approval_from_row).transpose()
    }

    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        // Only a pending approval is decided, once: the flows checked it,
        // and the database asserts it too.
        let changed = self.conn.execute(
            "UPDATE approvals SET status = $2, decided_at = $3, decided_by = $4, payment_id = $5 \
             WHERE id = $1 AND status = 'pending'",
            &[&a.id, &a.status.as_str(), &a.decided_at_ms, &a.decided_by, &a.payment_id],
        )?;
        if changed != 1 {
            return Err(Error::ApprovalNotPending("the approval was already decided"));
        }
        Ok(())
    }

    fn audit(&mut self, entry: &AuditEntry) -> Result<(), Error> {
        // The write lock makes this batch the only one appending, so the
        // last record is the chain's head, and the next number is free.
        let last = self.conn.query_opt("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[])?;
        let (seq, prev) = match last {
            Some(r) => (r.try_get::<_, i64>(0)? + 1, hash32(r.try_get(1)?)?),
            None => (1, audit_chain::GENESIS),
        };
        let body = json(entry)?;
        let hash = audit_chain::link(&prev, body.as_bytes());
        self.conn.execute(
            "INSERT INTO audit_log (seq, at, agent_id, action, body, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&seq, &entry.at_ms, &entry.agent_id, &entry.action, &body, &prev.as_slice(), &hash.as_slice()],
        )?;
        Ok(())
    }

    fn acknowledges_incoming(&mut self, agent_id: &str) -> Result<bool, Error> {
        let row = self.conn.query_opt("SELECT ack_incoming FROM agents WHERE id = $1", &[&agent_id])?;
        Ok(row.map(|r| r.try_get::<_, bool>(0)).transpose()? == Some(true))
    }

    fn save_incoming(&mut self, i: &IncomingRecord) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO incoming (payment_id, payee_agent_id, payer_agent_id, amount, status, created_at, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (payment_id) DO UPDATE SET status = excluded.status, decided_at = excluded.decided_at",
            &[
                &i.payment_id,
                &i.payee_agent_id,
                &i.payer_agent_id,
                &to_sql(i.amount)?,
                &i.status.as_str(),
                &i.created_at_ms,
                &i.decided_at_ms,
            ],
        )?;
        Ok(())
    }

    /// Event ids come from an identity column; under the write lock they
    /// are handed out and committed in one order, so they only increase as
    /// they become visible (a replay `after=ID` misses none). A rolled-back
    /// job leaves a gap, which a replay skips.
    fn update_payment(&mut self, p: &PaymentRecord, transfer_id: Option<i64>) -> Result<(), Error> {
        let changed = self.conn.execute(
            "UPDATE payments SET status = $2, fee = $3, preimage = $4, detail = $5, \
             transfer_id = COALESCE($6, transfer_id) WHERE id = $1",
            &[
                &p.id,
                &status_str(p.status),
                &to_sql(p.fee)?,
                &p.preimage.as_ref().map(|x| x.as_slice()),
                &p.detail,
                &transfer_id,
            ],
        )?;
        if changed != 1 {
            return Err(Error::Internal(format!("payment {} to update is missing", p.id)));
        }
        Ok(())
    }

    fn insert_external(&mut self, e: &ExternalPayment) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO external_payments (payment_id, payment_hash, bolt11, agent_id, account_id, amount, \
             fee_limit, status, checks, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            &[
                &e.payment_id,
                &e.payment_hash.as_slice(),
                &e.bolt11,
                &e.agent_id,
                &e.account.0,
                &to_sql(e.amount)?,
                &to_sql(e.fee_limit)?,
                &status_str(e.status),
                &e.checks,
                &e.created_at_ms,
            ],
        )?;
        Ok(())
    }

    fn external(&mut self, payment_id: &str) -> Result<Option<ExternalPayment>, Error> {
        let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_id = $1");
        self.conn.query_opt(&sql, &[&payment_id])?.as_ref().map(external_from_row).transpose()
    }

    fn live_external(&mut self, payment_hash: &[u8; 32]) -> Result<Option<ExternalPayment>, Error> {
        let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE payment_hash = $1 AND status <> 'failed'");
        self.conn.query_opt(&sql, &[&payment_hash.as_slice()])?.as_ref().map(external_from_row).transpose()
    }

    fn update_external(&mut self, e: &ExternalPayment, now_ms: i64) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE external_payments SET status = $2, checks = $3, updated_at = $4 WHERE payment_id = $1",
            &[&e.payment_id, &status_str(e.status), &e.checks, &now_ms],
        )?;
        Ok(())
    }

    fn mark_invoice_paid_from_outside(&mut self, payment_hash: &[u8; 32], now_ms: i64) -> Result<bool, Error> {
        let changed = self.conn.execute(
            "UPDATE invoices SET status = 'paid', paid_at = $2, paid_by = 'outside' \
             WHERE payment_hash = $1 AND status IN ('open', 'expired')",
            &[&payment_hash.as_slice(), &now_ms],
        )?;
        Ok(changed == 1)
    }

    fn l402_tokens(&mut self, agent_id: &str, origin: &str, now_ms: i64) -> Result<Vec<L402TokenRecord>, Error> {
        let limit = i64::try_from(L402_TOKENS_PER_ORIGIN_MAX).unwrap_or(i64::MAX);
        let found = self.conn.query(
            "SELECT scope, token, preimage, amount, payment_id, created_at, expires_at FROM l402_tokens \
             WHERE agent_id = $1 AND origin = $2 AND expires_at > $3 LIMIT $4",
            &[&agent_id, &origin, &now_ms, &limit],
        )?;
        found
            .iter()
            .map(|r| {
                Ok(L402TokenRecord {
                    agent_id: agent_id.to_owned(),
                    origin: origin.to_owned(),
                    scope: r.try_get(0)?,
                    token: r.try_get(1)?,
                    preimage: hash32(r.try_get(2)?)?,
                    amount: msat(r.try_get(3)?)?,
                    payment_id: r.try_get(4)?,
                    created_at_ms: r.try_get(5)?,
                    expires_at_ms: r.try_get(6)?,
                })
            })
            .collect()
    }

    fn save_l402_token(&mut self, t: &L402TokenRecord, now_ms: i64) -> Result<(), Error> {
        self.conn.execute(
            "DELETE FROM l402_tokens WHERE agent_id = $1 AND origin = $2 AND expires_at <= $3",
            &[&t.agent_id, &t.origin, &now_ms],
        )?;
        // At the bound, the token that expires first makes room.
        let limit = i64::try_from(L402_TOKENS_PER_ORIGIN_MAX).unwrap_or(i64::MAX);
        self.conn.execute(
            "DELETE FROM l402_tokens WHERE agent_id = $1 AND origin = $2 AND scope <> $3 AND scope IN \
             (SELECT scope FROM l402_tokens WHERE agent_id = $1 AND origin = $2 ORDER BY expires_at \
              LIMIT GREATEST(0, (SELECT count(*) FROM l402_tokens WHERE agent_id = $1 AND origin = $2) - $4 + 1))",
            &[&t.agent_id, &t.origin, &t.scope, &limit],
        )?;
        self.conn.execute(
            "INSERT INTO l402_tokens (agent_id, origin, scope, token, preimage, amount, payment_id, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (agent_id, origin, scope) \
             DO UPDATE SET token = excluded.token, preimage = excluded.preimage, amount = excluded.amount, \
             payment_id = excluded.payment_id, created_at = excluded.created_at, expires_at = excluded.expires_at",
            &[
                &t.agent_id,
                &t.origin,
                &t.scope,
                &t.token,
                &t.preimage.as_slice(),
                &to_sql(t.amount)?,
                &t.payment_id,
                &t.created_at_ms,
                &t.expires_at_ms,
            ],
        )?;
        Ok(())
    }

    fn forget_l402_token(&mut self, agent_id: &str, origin: &str, token: &str) -> Result<(), Error> {
        self.conn.execute(
            "DELETE FROM l402_tokens WHERE agent_id = $1 AND origin = $2 AND token = $3",
            &[&agent_id, &origin, &token],
        )?;
        Ok(())
    }

    fn count(&mut self, counted: quota::Counted<'_>, cap: u32) -> Result<quota::Count, Error> {
        let sql = counted.sql().replace('?', "$");
        let (subject, cap) = (counted.subject(), i64::from(cap));
        let row = match counted.time() {
            Some(at_ms) => self.conn.query_opt(&sql, &[&subject, &cap, &at_ms])?,
            None => self.conn.query_opt(&sql, &[&subject, &cap])?,
        };
        let row = row.ok_or_else(|| Error::Internal("a count returned no row".into()))?;
        let rows: i64 = row.try_get(0)?;
        let frees_at_ms: Option<i64> = row.try_get(1)?;
        Ok(quota::Count { rows: u32::try_from(rows).unwrap_or(u32::MAX), frees_at_ms })
    }

    fn emit(&mut self, kind: &str, agent_id: Option<&str>, data: &serde_json::Value, now_ms: i64) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO events (type, agent_id, data, created_at) VALUES ($1, $2, $3, $4)",
            &[&kind, &agent_id, &data.to_string(), &now_ms],
        )?;
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

fn set_meta(tx: &mut PgTx<'_>, key: &str, value: &[u8]) -> Result<(), Error> {
    tx.conn.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

impl Store for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    fn operator_digest(&self) -> StoreFuture<'_, Option<SecretDigest>> {
        self.read(|tx| {
            let row = tx.conn.query_opt("SELECT value FROM meta WHERE key = 'operator_token_digest'", &[])?;
            row.map(|r| Ok(SecretDigest(hash32(r.try_get(0)?)?))).transpose()
        })
    }

    fn set_operator_digest(&self, digest: SecretDigest) -> StoreFuture<'_, ()> {
        self.write(move |tx| set_meta(tx, "operator_token_digest", &digest.0))
    }

    fn create_agent(&self, agent: NewAgent, now_ms: i64) -> StoreFuture<'_, AgentRecord> {
        self.write(move |tx| {
            quota::check_subagent(tx, &agent.quotas, &agent, now_ms)?;
            let row = tx
                .conn
                .query_opt(
                    "INSERT INTO accounts (id, kind) SELECT GREATEST(MAX(id), $1) + 1, 'wallet' FROM accounts \
                     RETURNING id",
                    &[&(AccountId::FIRST_WALLET - 1)],
                )?
                .ok_or_else(|| Error::Internal("an insert returned no id".into()))?;
            let account = AccountId(row.try_get(0)?);
            tx.conn.execute(
                "INSERT INTO agents (id, account_id, name, created_at, parent_id, can_create_subagents) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&agent.id, &account.0, &agent.name, &now_ms, &agent.parent_id, &agent.can_create_subagents],
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
            let sql = format!("SELECT {AGENT_COLUMNS} ORDER BY g.created_at, g.id");
            rows(tx.conn.query(&sql, &[])?, agent_from_row)
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
            let sql = format!("SELECT {KEY_COLUMNS} WHERE k.id = $1 AND k.revoked_at IS NULL");
            let Some(key) = tx.conn.query_opt(&sql, &[&key_id])?.as_ref().map(key_from_row).transpose()? else {
                return Ok(None);
            };
            tx.conn.execute("UPDATE keys SET revoked_at = $2 WHERE id = $1", &[&key_id, &now_ms])?;
            let data = serde_json::json!({"agent_id": key.agent_id, "key_id": key.id});
            tx.emit("key.revoked", Some(&key.agent_id), &data, now_ms)?;
            Ok(Some(key))
        })
    }

    fn live_keys(&self) -> StoreFuture<'_, Vec<KeyRecord>> {
        self.read(|tx| {
            let sql = format!("SELECT {KEY_COLUMNS} WHERE k.revoked_at IS NULL");
            rows(tx.conn.query(&sql, &[])?, key_from_row)
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
            let sql = format!("SELECT {INVOICE_COLUMNS} WHERE agent_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3");
            let found = rows(tx.conn.query(&sql, &[&agent_id, &before, &limit])?, invoice_from_row)?;
            let cursor = next_cursor(found.len(), limit, found.last().map(|r| r.1));
            Ok((found.into_iter().map(|r| r.0).collect(), cursor))
        })
    }

    fn pay_internal(&self, pay: PayInternal) -> StoreFuture<'_, PayAttempt> {
        self.write(move |tx| internal::pay(tx, pay))
    }

    fn payments(&self, agent_id: String, page: PageRequest) -> StoreFuture<'_, (Vec<PaymentRecord>, Option<i64>)> {
        self.read(move |tx| {
            let (before, limit) = page_bounds(page);
            let sql = format!("SELECT {PAYMENT_COLUMNS} WHERE agent_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3");
            let found = rows(tx.conn.query(&sql, &[&agent_id, &before, &limit])?, payment_from_row)?;
            let cursor = next_cursor(found.len(), limit, found.last().map(|r| r.1));
            Ok((found.into_iter().map(|r| r.0).collect(), cursor))
        })
    }

    fn audit_input(&self) -> StoreFuture<'_, AuditInput> {
        self.read(|tx| {
            // One snapshot, so the accounts and the transfers agree.
            tx.conn.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let result = audit_snapshot(tx.conn);
            tx.conn.client.batch_execute("COMMIT")?;
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
                "UPDATE agents SET policy = $2, policy_rev = policy_rev + 1 WHERE id = $1",
                &[&agent_id, &text],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("agent"));
            }
            if let Some(cache) = tx.policies.as_mut() {
                cache.remove(&agent_id);
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
            set_meta(tx, "halted", &[u8::from(halted)])?;
            tx.emit("breaker.halted", None, &serde_json::json!({"halted": halted}), now_ms)?;
            let action = if halted { "gateway.halted" } else { "gateway.resumed" };
            tx.audit(&operator_entry(action, actor, None, now_ms))
        })
    }

    fn approvals(&self, status: Option<ApprovalStatus>, limit: u32) -> StoreFuture<'_, Vec<ApprovalRecord>> {
        self.read(move |tx| {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC, id DESC \
                 LIMIT $2"
            );
            let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
            rows(tx.conn.query(&sql, &[&status.map(ApprovalStatus::as_str), &limit])?, approval_from_row)
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

    /// Every instance runs this; under the write lock, the first batch to
    /// run after an approval's time expires it, and the others no longer
    /// find it pending.
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
            let invoices = tx.conn.execute(DELETE_EXPIRED_INVOICES, &[&cutoffs.invoices_expired_before_ms, &batch])?;
            let floor = tx.conn.query_opt(EVENTS_READ_BY_ALL, &[&cutoffs.events_before_ms])?;
            let read_by_all: Option<i64> = floor.and_then(|row| row.get(0));
            let events = tx
                .conn
                .execute(DELETE_OLD_EVENTS, &[&read_by_all.unwrap_or(i64::MAX), &batch, &cutoffs.events_before_ms])?;
            let deliveries = tx.conn.execute(DELETE_OLD_DELIVERIES, &[&batch, &cutoffs.deliveries_before_ms])?;
            Ok(Pruned { invoices, events, deliveries })
        })
    }

    fn audit_log(&self, filter: AuditFilter, after_seq: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRecord>> {
        self.read(move |tx| {
            let limit = i64::from(limit.clamp(1, PAGE_ROWS_MAX));
            let found = tx.conn.query(
                "SELECT seq, body, prev_hash, hash FROM audit_log WHERE seq > $1 \
                 AND ($2::text IS NULL OR agent_id = $2) AND ($3::text IS NULL OR action = $3) \
                 AND ($4::bigint IS NULL OR at >= $4) AND ($5::bigint IS NULL OR at < $5) ORDER BY seq LIMIT $6",
                &[&after_seq, &filter.agent_id, &filter.action, &filter.since_ms, &filter.until_ms, &limit],
            )?;
            rows(found, audit_from_row)
        })
    }

    fn audit_chain(&self) -> StoreFuture<'_, Vec<AuditRecord>> {
        self.read(|tx| {
            rows(tx.conn.query("SELECT seq, body, prev_hash, hash FROM audit_log ORDER BY seq", &[])?, audit_from_row)
        })
    }

    fn create_room(&self, room: RoomRecord, quotas: Quotas) -> StoreFuture<'_, RoomRecord> {
        self.write(move |tx| {
            quota::check_room(tx, &quotas, &room)?;
            tx.conn.execute(
                "INSERT INTO rooms (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
                &[&room.id, &room.name, &room.created_by, &room.created_at_ms],
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
            // As SQLite's: oldest first, after the cursor room's (created_at, id).
            let found = tx.conn.query(
                "SELECT r.id FROM rooms r WHERE ($1::TEXT IS NULL OR EXISTS (SELECT 1 FROM room_members m \
                 WHERE m.room_id = r.id AND m.member = $1)) AND ($2::TEXT IS NULL OR (r.created_at, r.id) > \
                 (SELECT created_at, id FROM rooms WHERE id = $2)) ORDER BY r.created_at, r.id LIMIT $3",
                &[&member, &after, &i64::from(limit)],
            )?;
            let ids: Vec<String> = found.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
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
            let removed =
                tx.conn.execute("DELETE FROM room_members WHERE room_id = $1 AND member = $2", &[&room_id, &member])?;
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
            let row = tx
                .conn
                .query_opt(
                    "INSERT INTO messages (room_id, sender, kind, text, payment_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[&m.room_id, &m.sender, &kind, &m.text, &hash, &m.now_ms],
                )?
                .ok_or_else(|| Error::Internal("an insert returned no id".into()))?;
            let id: i64 = row.try_get(0)?;
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
            tx.messages_where("m.room_id = $1 AND m.id > $2 ORDER BY m.id LIMIT $3", &[&room_id, &after_id, &limit])
        })
    }

    fn message(&self, room_id: String, id: i64) -> StoreFuture<'_, Option<MessageRecord>> {
        self.read(move |tx| Ok(tx.messages_where("m.room_id = $1 AND m.id = $2", &[&room_id, &id])?.pop()))
    }

    fn chat_settings(&self, agent_id: String) -> StoreFuture<'_, ChatSettings> {
        self.read(move |tx| {
            let row = tx.conn.query_opt("SELECT chat FROM agents WHERE id = $1", &[&agent_id])?;
            from_json(row.ok_or(Error::NotFound("agent"))?.try_get(0)?)
        })
    }

    fn set_chat_settings(&self, agent_id: String, settings: ChatSettings, now_ms: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let changed = tx.conn.execute(
                "UPDATE agents SET chat = $2, ack_incoming = $3 WHERE id = $1",
                &[&agent_id, &json(&settings)?, &settings.require_acknowledgment],
            )?;
            if changed == 0 {
                return Err(Error::NotFound("agent"));
            }
            let data = serde_json::json!({"agent_id": agent_id, "settings": settings});
            tx.emit("chat.settings_updated", Some(&agent_id), &data, now_ms)
        })
    }

    fn incoming(&self, payee_agent_id: String, status: Option<IncomingStatus>) -> StoreFuture<'_, Vec<IncomingRecord>> {
        self.read(move |tx| {
            let sql = format!(
                "SELECT {INCOMING_COLUMNS} WHERE payee_agent_id = $1 AND ($2::text IS NULL OR status = $2) \
                 ORDER BY created_at DESC, payment_id DESC LIMIT $3"
            );
            let limit = i64::from(PAGE_ROWS_MAX);
            rows(
                tx.conn.query(&sql, &[&payee_agent_id, &status.map(IncomingStatus::as_str), &limit])?,
                incoming_from_row,
            )
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
            let sql = format!("SELECT {INCOMING_COLUMNS} WHERE payment_id = $1");
            let found = tx.conn.query_opt(&sql, &[&payment_id])?.as_ref().map(incoming_from_row).transpose()?;
            let incoming =
                found.filter(|i| i.payee_agent_id == payee_agent_id).ok_or(Error::NotFound("incoming payment"))?;
            internal::decide_incoming(tx, incoming, accept, &key_id, now_ms)
        })
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
            let sql = format!("SELECT {EXTERNAL_COLUMNS} WHERE status = 'pending' ORDER BY updated_at LIMIT $1");
            let limit = i64::from(limit.min(PAGE_ROWS_MAX));
            rows(tx.conn.query(&sql, &[&limit])?, external_from_row)
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
                "SELECT {INVOICE_COLUMNS} WHERE status = 'open' AND backend IS NOT NULL AND seq > $1 \
                 AND expires_at >= $2 ORDER BY seq LIMIT $3"
            );
            let limit = i64::from(limit.min(PAGE_ROWS_MAX));
            let found = rows(tx.conn.query(&sql, &[&after_seq, &since_ms, &limit])?, invoice_from_row)?;
            let last = found.last().map(|r| r.1);
            Ok((found.into_iter().map(|r| r.0).collect(), last))
        })
    }

    fn credit_from_outside(&self, payment_hash: [u8; 32], now_ms: i64) -> StoreFuture<'_, bool> {
        self.write(move |tx| external::credit_from_outside(tx, &payment_hash, now_ms))
    }

    fn events(&self, after_id: i64, agent_id: Option<String>, limit: u32) -> StoreFuture<'_, Vec<EventRecord>> {
        self.read(move |tx| outbox::events(tx.conn, after_id, agent_id.as_deref(), limit))
    }

    fn newest_event_id(&self) -> StoreFuture<'_, i64> {
        self.read(|tx| outbox::newest_event_id(tx.conn))
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
            let after_event_id: i64 = outbox::newest_event_id(tx.conn)?;
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
}

fn audit_snapshot(conn: &mut Conn) -> Result<AuditInput, Error> {
    let found =
        conn.query("SELECT id, debits_posted, credits_posted, debits_pending FROM accounts ORDER BY id", &[])?;
    let accounts = found
        .iter()
        .map(|r| Ok((AccountId(r.try_get(0)?), balance_row(r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut sums = ledger::TransferSums::default();
    // Streamed: the history may be larger than memory.
    let statement = conn.statement("SELECT debit, credit, amount FROM transfers")?;
    let mut stream = conn.client.query_raw(&statement, std::iter::empty::<i64>())?;
    while let Some(r) = stream.next()? {
        let amount = msat(r.try_get(2)?)?;
        sums.add(&Transfer { debit: AccountId(r.try_get(0)?), credit: AccountId(r.try_get(1)?), amount });
    }
    Ok(AuditInput { accounts, sums })
}
