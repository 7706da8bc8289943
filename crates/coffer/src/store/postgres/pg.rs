//! The shared SQL on a PostgreSQL connection: each statement prepared once
//! per connection (its `?N` placeholders written `$N`), arguments converted
//! to the types the server inferred for them, and columns read from theirs.
//!
//! A connection is the asynchronous client driven by a runtime of its own
//! on the calling thread (a writer's, a reader's, the sealer's; never a
//! task of the gateway's runtime), as the blocking client does it, so that
//! writes can be pipelined: the writes an operation appends ([`Sql::append`])
//! are sent together with its next statement, or at its flush, and their
//! answers read back in one round trip.

use super::IDLE_IN_TRANSACTION_TIMEOUT_MS;
use crate::error::Error;
use crate::store::sql::{Arg, Expect, Sql, SqlRow, numbered_as_dollars};
use futures_util::future::{join, join_all};
use futures_util::{StreamExt, pin_mut};
use std::collections::HashMap;
use std::future::Future;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// Prepared statements kept per connection.
const STATEMENTS_MAX: usize = 256;
/// Writes held for the next round trip, at most: an operation appends a
/// dozen; more are sent at once.
const APPENDED_MAX: usize = 64;

type ToSqlResult = Result<IsNull, Box<dyn std::error::Error + Sync + Send>>;
type PgError = tokio_postgres::Error;

/// One connection, its prepared statements by their shared SQL, and the
/// writes appended and not sent yet.
pub struct Conn {
    runtime: Runtime,
    client: Client,
    statements: HashMap<String, Statement>,
    appended: Vec<Appended>,
}

/// A write held for the next round trip.
struct Appended {
    statement: Statement,
    args: Vec<Value>,
    expect: Expect,
}

impl Conn {
    /// A connection whose waits for a lock end after `lock_timeout_ms`.
    pub fn open(config: &Config, lock_timeout_ms: u64) -> Result<Conn, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::internal("starting a PostgreSQL connection's runtime", e))?;
        let (client, connection) =
            runtime.block_on(config.connect(NoTls)).map_err(|e| Error::internal("connecting to PostgreSQL", e))?;
        // Driven whenever the thread waits on the client; it ends when the
        // connection closes, or with the runtime when the `Conn` is dropped.
        runtime.spawn(connection);
        let mut conn = Conn { runtime, client, statements: HashMap::new(), appended: Vec::new() };
        conn.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}; \
             SET lock_timeout = {lock_timeout_ms};"
        ))
        .map_err(|e| Error::internal("configuring a PostgreSQL session", e))?;
        Ok(conn)
    }

    /// Whether the server closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs statements without arguments, in one round trip. Nothing may
    /// be appended and not flushed: they would be sent after these.
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), PgError> {
        debug_assert!(self.appended.is_empty(), "batch_execute with writes appended");
        self.runtime.block_on(self.client.batch_execute(sql))
    }

    /// Runs a statement with typed arguments (the sealer's arrays).
    pub fn execute_typed(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
        debug_assert!(self.appended.is_empty(), "execute_typed with writes appended");
        self.runtime.block_on(self.client.execute(sql, params))
    }

    /// Every row of a query with typed arguments.
    pub fn query_typed(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
        debug_assert!(self.appended.is_empty(), "query_typed with writes appended");
        self.runtime.block_on(self.client.query(sql, params))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        if self.statements.len() >= STATEMENTS_MAX {
            self.statements.clear();
        }
        let statement = self.runtime.block_on(self.client.prepare(&numbered_as_dollars(sql)))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Sends `appended` and then `then` in one round trip, and answers
/// `then`'s result, or the first failure of the writes (a write's failure
/// aborts the transaction, so what follows it fails too, for that reason).
fn pipelined<T>(
    runtime: &Runtime,
    client: &Client,
    appended: &[Appended],
    then: impl Future<Output = Result<T, PgError>>,
) -> Result<T, Error> {
    let (written, result) = runtime.block_on(async {
        // Polled in order, so sent in order: tokio-postgres writes a
        // request when its future is first polled.
        let writes = join_all(appended.iter().map(|a| client.execute_raw(&a.statement, a.args.iter())));
        join(writes, then).await
    });
    for (write, changed) in appended.iter().zip(written) {
        write.expect.check(changed?)?;
    }
    Ok(result?)
}

impl Sql for Conn {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        let statement = self.statement(sql)?;
        let appended = std::mem::take(&mut self.appended);
        pipelined(&self.runtime, &self.client, &appended, self.client.execute_raw(&statement, args.iter()))
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let statement = self.statement(sql)?;
        // The appended writes' answers come first; the rows are then read
        // as they arrive (a large result is never held whole).
        let appended = std::mem::take(&mut self.appended);
        let rows = pipelined(&self.runtime, &self.client, &appended, self.client.query_raw(&statement, args.iter()))?;
        self.runtime.block_on(async {
            pin_mut!(rows);
            while let Some(row) = rows.next().await {
                each(&PgRow(&row?))?;
            }
            Ok(())
        })
    }

    fn append(&mut self, sql: &str, args: &[Arg<'_>], expect: Expect) -> Result<(), Error> {
        let statement = self.statement(sql)?;
        self.appended.push(Appended { statement, args: args.iter().map(Value::from).collect(), expect });
        if self.appended.len() >= APPENDED_MAX {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.appended.is_empty() {
            return Ok(());
        }
        let appended = std::mem::take(&mut self.appended);
        pipelined(&self.runtime, &self.client, &appended, async { Ok(()) })
    }

    fn discard(&mut self) {
        self.appended.clear();
    }

    fn concurrent_writers(&self) -> bool {
        true
    }
}

/// An argument owned, for a write sent later.
#[derive(Clone, Debug)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

impl From<&Arg<'_>> for Value {
    fn from(arg: &Arg<'_>) -> Value {
        match *arg {
            Arg::Null => Value::Null,
            Arg::Int(v) => Value::Int(v),
            Arg::Bool(v) => Value::Bool(v),
            Arg::Text(v) => Value::Text(v.to_owned()),
            Arg::Blob(v) => Value::Blob(v.to_vec()),
        }
    }
}

impl Value {
    fn as_arg(&self) -> Arg<'_> {
        match self {
            Value::Null => Arg::Null,
            Value::Int(v) => Arg::Int(*v),
            Value::Bool(v) => Arg::Bool(*v),
            Value::Text(v) => Arg::Text(v),
            Value::Blob(v) => Arg::Blob(v),
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> ToSqlResult {
        self.as_arg().to_sql(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> ToSqlResult {
        self.to_sql(ty, out)
    }
}

/// An argument in the type the server inferred for its placeholder: the
/// shared SQL passes integers and flags alike, and PostgreSQL wants an
/// `INT4`, `INT8` or `BOOLEAN` exactly.
impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> ToSqlResult {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => int_to_sql(v, ty, out),
            Arg::Bool(v) if *ty == Type::BOOL => v.to_sql(ty, out),
            Arg::Bool(v) => int_to_sql(i64::from(v), ty, out),
            Arg::Text(v) => v.to_sql(ty, out),
            Arg::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, whose errors name the mismatch.
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> ToSqlResult {
        self.to_sql(ty, out)
    }
}

fn int_to_sql(v: i64, ty: &Type, out: &mut BytesMut) -> ToSqlResult {
    match *ty {
        Type::BOOL => (v != 0).to_sql(ty, out),
        Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
        Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
        _ => v.to_sql(ty, out),
    }
}

struct PgRow<'a>(&'a Row);

impl SqlRow for PgRow<'_> {
    fn opt_i64(&self, column: usize) -> Result<Option<i64>, Error> {
        let ty = self.column_type(column)?;
        Ok(match ty {
            Type::INT2 => self.0.try_get::<_, Option<i16>>(column)?.map(i64::from),
            Type::INT4 => self.0.try_get::<_, Option<i32>>(column)?.map(i64::from),
            Type::BOOL => self.0.try_get::<_, Option<bool>>(column)?.map(i64::from),
            _ => self.0.try_get::<_, Option<i64>>(column)?,
        })
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, Error> {
        Ok(self.0.try_get(column)?)
    }

    fn opt_blob(&self, column: usize) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.try_get(column)?)
    }

    fn bytes(&self, column: usize) -> Result<Vec<u8>, Error> {
        match self.column_type(column)? {
            Type::BYTEA => Ok(self.0.try_get(column)?),
            _ => Ok(self.0.try_get::<_, String>(column)?.into_bytes()),
        }
    }

    fn flag(&self, column: usize) -> Result<bool, Error> {
        match self.column_type(column)? {
            Type::BOOL => Ok(self.0.try_get(column)?),
            Type::BYTEA => Ok(self.0.try_get::<_, Vec<u8>>(column)?.iter().any(|b| *b != 0)),
            _ => Ok(self.i64(column)? != 0),
        }
    }
}

impl PgRow<'_> {
    fn column_type(&self, column: usize) -> Result<Type, Error> {
        let columns = self.0.columns();
        let found = columns.get(column).ok_or_else(|| Error::Internal(format!("no column {column}")))?;
        Ok(found.type_().clone())
    }
}

impl From<PgError> for Error {
    /// What another transaction holding the same rows causes is
    /// [`Error::Contended`]: the writer runs the operation again.
    fn from(e: PgError) -> Error {
        match e.code() {
            Some(&SqlState::LOCK_NOT_AVAILABLE) => Error::Contended("a row it needs stayed locked"),
            Some(&SqlState::T_R_DEADLOCK_DETECTED) => Error::Contended("a deadlock"),
            Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Error::Contended("a serialization failure"),
            // Another instance wrote the same key first: run again, the
            // operation then finds it (an idempotency key, a payment hash).
            Some(&SqlState::UNIQUE_VIOLATION) => Error::Contended("a unique key written by another transaction"),
            _ => Error::internal("postgres", e),
        }
    }
}
