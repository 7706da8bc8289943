//! The shared SQL on a PostgreSQL connection: each statement prepared once
//! per connection (its `?N` placeholders written `$N`), arguments converted
//! to the types the server inferred for them, and columns read from theirs.

use super::IDLE_IN_TRANSACTION_TIMEOUT_MS;
use crate::error::Error;
use crate::store::sql::{Arg, Sql, SqlRow, numbered_as_dollars};
use ::postgres::error::SqlState;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::private::BytesMut;
use ::postgres::types::{IsNull, ToSql, Type};
use ::postgres::{Client, Config, NoTls, Row, Statement};
use std::collections::HashMap;

/// Prepared statements kept per connection.
const STATEMENTS_MAX: usize = 256;

type ToSqlResult = Result<IsNull, Box<dyn std::error::Error + Sync + Send>>;

/// One connection and its prepared statements, by their shared SQL.
pub struct Conn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// A connection whose waits for a lock end after `lock_timeout_ms`.
    pub fn open(config: &Config, lock_timeout_ms: u64) -> Result<Conn, Error> {
        let mut client = config.connect(NoTls).map_err(|e| Error::internal("connecting to PostgreSQL", e))?;
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}; \
                 SET lock_timeout = {lock_timeout_ms};"
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
        let statement = self.client.prepare(&numbered_as_dollars(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl Sql for Conn {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        Ok(self.client.execute(&statement, &params)?)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let statement = self.statement(sql)?;
        let mut rows = self.client.query_raw(&statement, args.iter())?;
        while let Some(row) = rows.next()? {
            each(&PgRow(&row))?;
        }
        Ok(())
    }

    fn concurrent_writers(&self) -> bool {
        true
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

impl From<::postgres::Error> for Error {
    /// What another transaction holding the same rows causes is
    /// [`Error::Contended`]: the writer runs the operation again.
    fn from(e: ::postgres::Error) -> Error {
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
