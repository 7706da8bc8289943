//! The SQL both stores share, written once.
//!
//! A backend gives one thing: [`Sql`], a connection inside a transaction
//! that runs a statement with arguments and hands back its rows. Every
//! statement here is written with SQLite's numbered placeholders (`?1`,
//! `?2`, ...); the PostgreSQL backend rewrites them as `$1`, `$2`, ... once,
//! when it prepares the statement ([`numbered_as_dollars`]). The statements
//! use only what both dialects read alike: `ON CONFLICT`, `RETURNING`,
//! `CAST(? AS TEXT)` where PostgreSQL must be told a parameter's type, and
//! `CASE` for the few scalar functions they name differently.
//!
//! [`SqlTx`] implements the store's row operations ([`super::Tx`]) over any
//! [`Sql`]; `rows.rs` maps rows to records.

/// An agent's account id in a statement, found by the agent's id in the
/// parameter `$p` (`"?2"`): rows name agents by account id (an integer,
/// where the id is 32 bytes of text; schema 19). The treasury, which pays
/// and is paid under the name [`crate::model::TREASURY_PAYEE`] and is no
/// agent, is its account (checked below).
macro_rules! account_of {
    ($p:literal) => {
        concat!(
            "COALESCE((SELECT account_id FROM agents WHERE id = ",
            $p,
            "), CASE WHEN ",
            $p,
            " = 'treasury' THEN 2 END)"
        )
    };
}

/// An agent's id in a statement, found by the account id in the column
/// `$c`: the other way of [`account_of`], for reads.
macro_rules! agent_of {
    ($c:literal) => {
        concat!(
            "COALESCE((SELECT id FROM agents WHERE account_id = ",
            $c,
            "), CASE WHEN ",
            $c,
            " = 2 THEN 'treasury' END)"
        )
    };
}

/// A payment's preimage as its row keeps it (`$p` the preimage, `$h` the
/// payment hash): empty when an invoice of this store holds it, which is
/// every internal payment's (schema 20; 32 bytes a payment). Whatever the
/// invoice's status, its preimage is the one that hashes to `$h`, and a
/// paid invoice is never removed. [`preimage_read!`] gives it back.
macro_rules! preimage_kept {
    ($p:literal, $h:literal) => {
        concat!(
            "CASE WHEN ",
            $p,
            " = (SELECT i.preimage FROM invoices i WHERE i.payment_hash = ",
            $h,
            ") THEN substr(",
            $p,
            ", 1, 0) ELSE ",
            $p,
            " END"
        )
    };
}

/// A payment's preimage read from its row (the column `$p`, the hash in
/// `$h`): the invoice's where [`preimage_kept!`] left it empty.
macro_rules! preimage_read {
    ($p:literal, $h:literal) => {
        concat!(
            "CASE WHEN length(",
            $p,
            ") = 0 THEN (SELECT i.preimage FROM invoices i WHERE i.payment_hash = ",
            $h,
            ") ELSE ",
            $p,
            " END"
        )
    };
}

// The treasury's name and account, which the fragments write as literals.
const _: () = assert!(coffer_core::ledger::AccountId::TREASURY.0 == 2);
const _: () = assert!(matches!(crate::model::TREASURY_PAYEE.as_bytes(), b"treasury"));

mod rows;
mod tx;

pub use rows::hash32;
pub use tx::SqlTx;

use crate::error::Error;
use coffer_core::policy::Policy;
use std::collections::HashMap;
use std::sync::Arc;

/// Parsed policies by agent, with the revision they were parsed from: a
/// payment re-parses a policy only after it changed. Only a writer keeps
/// one; the revision is read in the paying transaction, so a policy
/// changed elsewhere (another instance) is never served from it.
pub type PolicyCache = HashMap<String, (i64, Arc<Policy>)>;

/// One argument of a statement, borrowed from the caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    /// A flag: an integer 0/1 on SQLite, a `BOOLEAN` on PostgreSQL.
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(v)
    }
}

impl<'a> From<&'a [u8; 32]> for Arg<'a> {
    fn from(v: &'a [u8; 32]) -> Self {
        Arg::Blob(v)
    }
}

impl<'a, T> From<Option<T>> for Arg<'a>
where
    T: Into<Arg<'a>>,
{
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Arg::Null, Arg::Text)
    }
}

/// The arguments of a statement: `args![a, b, c]`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::store::sql::Arg::from($arg)),*]
    };
}
pub(crate) use args;

/// One row of a result, read by column index.
pub trait SqlRow {
    fn opt_i64(&self, column: usize) -> Result<Option<i64>, Error>;
    fn opt_text(&self, column: usize) -> Result<Option<String>, Error>;
    fn opt_blob(&self, column: usize) -> Result<Option<Vec<u8>>, Error>;
    /// A column that holds text or bytes (older rows of a packed column
    /// hold their text), as bytes.
    fn bytes(&self, column: usize) -> Result<Vec<u8>, Error>;
    /// A flag column: `BOOLEAN`, or an integer (non-zero is true).
    fn flag(&self, column: usize) -> Result<bool, Error>;

    fn i64(&self, column: usize) -> Result<i64, Error> {
        self.opt_i64(column)?.ok_or_else(|| null(column))
    }

    fn text(&self, column: usize) -> Result<String, Error> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    fn blob(&self, column: usize) -> Result<Vec<u8>, Error> {
        self.opt_blob(column)?.ok_or_else(|| null(column))
    }

    /// A JSON text stored packed (`coffer_core::pack::json`), or as it is.
    fn packed_json(&self, column: usize) -> Result<String, Error> {
        coffer_core::pack::json::unpack(&self.bytes(column)?).map_err(|e| Error::internal("a stored JSON text", e))
    }

    /// An invoice stored packed (`coffer_core::pack::bech32`), without its
    /// payment hash or with it, or as it is.
    fn packed_bolt11(&self, column: usize, payment_hash: &[u8; 32]) -> Result<String, Error> {
        coffer_core::pack::bech32::unpack_invoice(&self.bytes(column)?, payment_hash)
            .map_err(|e| Error::internal("a stored invoice", e))
    }
}

fn null(column: usize) -> Error {
    Error::Internal(format!("column {column} is unexpectedly NULL"))
}

/// How many rows an appended write must change, and the error it fails
/// with otherwise.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Any number (an insert: its failures are errors of their own).
    Any,
    /// Exactly one.
    One(fn() -> Error),
}

impl Expect {
    pub fn check(self, changed: u64) -> Result<(), Error> {
        match self {
            Expect::One(otherwise) if changed != 1 => Err(otherwise()),
            _ => Ok(()),
        }
    }
}

/// A backend's connection, inside the transaction the store opened.
pub trait Sql {
    /// Runs a statement; answers the rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error>;
    /// Runs a write whose answer the operation does not wait for: the
    /// backend may hold it and send it with the next statement, or at
    /// [`Sql::flush`], so that the writes of an operation cost one round
    /// trip, not one each. What it changed is checked against `expect`
    /// then; a failure is reported by that statement or that flush. Every
    /// later statement of the transaction sees its effect.
    fn append(&mut self, sql: &str, args: &[Arg<'_>], expect: Expect) -> Result<(), Error> {
        let changed = self.execute(sql, args)?;
        expect.check(changed)
    }
    /// Sends the appended writes; reports the first that failed.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Forgets the appended writes not sent yet (their operation failed,
    /// and what it did is rolled back).
    fn discard(&mut self) {}
    /// Runs a query, handing each row to `each` as it is read (a large
    /// result is never held whole).
    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<(), Error>,
    ) -> Result<(), Error>;

    /// Whether other writers (other gateway instances) change the rows
    /// while this transaction runs. Their writes are then kept apart by
    /// row locks, not by one writer: a write transaction locks the rows it
    /// reads in order to change them (`FOR UPDATE`), and the totally
    /// ordered logs (the audit chain, the event outbox) are numbered after
    /// commit, by the backend's sealer, in the order the rows became
    /// visible.
    fn concurrent_writers(&self) -> bool {
        false
    }
}

/// Rewrites SQLite's `?N` placeholders as PostgreSQL's `$N`. The shared
/// statements hold no `?` inside a string literal, so every `?` followed by
/// a digit is a placeholder.
pub fn numbered_as_dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            numbered_as_dollars("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?' AND CAST(?2 AS TEXT) IS NULL"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?' AND CAST($2 AS TEXT) IS NULL"
        );
        assert_eq!(numbered_as_dollars("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn arguments_convert_from_the_types_the_rows_hold() {
        let name = String::from("bot");
        let absent: Option<String> = None;
        let hash = [7u8; 32];
        let list: &[Arg<'_>] = args![1i64, 2u32, true, "x", &name, &absent, &hash, Some(5i64), None::<i64>];
        assert_eq!(
            list,
            &[
                Arg::Int(1),
                Arg::Int(2),
                Arg::Bool(true),
                Arg::Text("x"),
                Arg::Text("bot"),
                Arg::Null,
                Arg::Blob(&hash),
                Arg::Int(5),
                Arg::Null
            ]
        );
    }
}
