//! The shared SQL on a SQLite connection: statements from the
//! connection's cache, arguments and columns in SQLite's types.

use crate::error::Error;
use crate::store::sql::{Arg, Sql, SqlRow};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, Row, ToSql, params_from_iter};

/// A connection inside the transaction the store opened.
pub struct Lite<'a>(pub &'a Connection);

impl Sql for Lite<'_> {
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let changed = stmt.execute(params_from_iter(args.iter()));
        count_reprepares(&stmt);
        Ok(changed? as u64)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        let mut read = Ok(());
        while let Some(row) = rows.next()? {
            read = each(&LiteRow(row));
            if read.is_err() {
                break;
            }
        }
        drop(rows);
        count_reprepares(&stmt);
        read
    }
}

/// Counts the times SQLite prepared a cached statement again while it ran
/// (`SQLITE_STMTSTATUS_REPREPARE`, reset at each run). SQLite does when the
/// schema changed, and on every run of a statement whose plan depends on a
/// bound value (a bound `LIMIT`, an `INSERT ... SELECT` over a join): then
/// the cache saves nothing, and the parser shows in the writer's profile.
/// `coffer_store_statement_reprepares_total` shows it, and a test holds
/// the payment path to none.
fn count_reprepares(stmt: &rusqlite::Statement<'_>) {
    let again = stmt.reset_status(rusqlite::StatementStatus::RePrepare);
    if let Ok(again @ 1..) = u64::try_from(again) {
        crate::metrics::METRICS.record_reprepares(again);
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Int(v) => ToSqlOutput::Owned(Value::Integer(v)),
            Arg::Bool(v) => ToSqlOutput::Owned(Value::Integer(i64::from(v))),
            Arg::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

struct LiteRow<'a, 'b>(&'a Row<'b>);

impl SqlRow for LiteRow<'_, '_> {
    fn opt_i64(&self, column: usize) -> Result<Option<i64>, Error> {
        Ok(self.0.get(column)?)
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, Error> {
        Ok(self.0.get(column)?)
    }

    fn opt_blob(&self, column: usize) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(column)?)
    }

    fn bytes(&self, column: usize) -> Result<Vec<u8>, Error> {
        match self.0.get_ref(column)? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            other => Err(Error::Internal(format!("column {column} holds no bytes ({:?})", other.data_type()))),
        }
    }

    fn flag(&self, column: usize) -> Result<bool, Error> {
        // Flags are integers here; the gateway's own settings in `meta`
        // are a byte (older stores hold the integer there too).
        match self.0.get_ref(column)? {
            ValueRef::Integer(v) => Ok(v != 0),
            ValueRef::Blob(bytes) => Ok(bytes.iter().any(|b| *b != 0)),
            other => Err(Error::Internal(format!("column {column} is not a flag ({:?})", other.data_type()))),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            // A full disk, an I/O error, a lock held too long: the caller
            // may retry (503 with Retry-After), and the writer heals.
            Some(C::DiskFull | C::SystemIoFailure | C::CannotOpen | C::DatabaseBusy | C::DatabaseLocked) => {
                tracing::warn!(error = %e, "the store cannot write just now");
                Error::Unavailable("the store cannot write just now (disk full or an I/O error); try again shortly")
            }
            _ => Error::internal("sqlite", e),
        }
    }
}
