//! Online backup and restore of an embedded store.
//!
//! A backup is one SQLite file written by `VACUUM INTO` from a connection of
//! its own: it reads one snapshot (a read transaction in WAL mode), so it is
//! consistent while the gateway goes on writing, and it holds every
//! transaction committed before it began. Copying the live file is not a
//! backup: the newest commits sit in the `-wal` file beside it.
//!
//! With the node key (`node_key`), the backup carries it in its `meta`
//! table (`backup_node_key`): the gateway's identity travels with its
//! ledger. The file is created mode 0600 before anything is written to it,
//! since its rows hold preimages, and the key when asked for.
//!
//! A restore refuses a folder that holds a database already (live or not:
//! nothing is overwritten), checks the backup (`integrity_check`, a schema
//! this build knows), copies it in under a temporary name, syncs it and
//! renames it into place, then writes the node key it carries (0600) and
//! removes it from the restored database.

use crate::error::Error;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;

/// The `meta` key of a node key carried by a backup.
const NODE_KEY_META: &str = "backup_node_key";
/// How long the backup's connection waits for a lock the gateway holds.
const BUSY_TIMEOUT_MS: u32 = 10_000;

/// What a backup holds.
#[derive(Debug)]
pub struct BackupReport {
    pub bytes: u64,
    pub schema_version: usize,
    pub payments: i64,
    pub with_node_key: bool,
}

/// What a restore wrote.
#[derive(Debug)]
pub struct RestoreReport {
    pub schema_version: usize,
    pub node_key: Option<[u8; 32]>,
}

fn fail(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::internal(what, e)
}

/// Writes a consistent copy of the store at `database` into `out` (which
/// must not exist), with `node_key` if given.
pub fn backup(database: &Path, out: &Path, node_key: Option<&[u8]>) -> Result<BackupReport, Error> {
    if !database.is_file() {
        return Err(Error::NotFound("database in that data folder"));
    }
    // Created empty and private first: VACUUM INTO writes into an empty file
    // and keeps its mode. It fails if the file exists: nothing is replaced.
    crate::secrets::write_private_file(out, b"").map_err(|e| Error::internal("creating the backup file", e))?;
    let written = write_backup(database, out, node_key);
    if written.is_err() {
        let _ = std::fs::remove_file(out);
    }
    written
}

fn write_backup(database: &Path, out: &Path, node_key: Option<&[u8]>) -> Result<BackupReport, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let source = Connection::open_with_flags(database, flags).map_err(fail("opening the database"))?;
    source.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS))).map_err(fail("busy timeout"))?;
    let out_text = out.to_str().ok_or_else(|| Error::Internal("the backup path is not UTF-8".into()))?;
    source.execute("VACUUM INTO ?1", [out_text]).map_err(fail("writing the backup (VACUUM INTO)"))?;
    drop(source);
    let copy = Connection::open(out).map_err(fail("opening the backup"))?;
    check(&copy)?;
    if let Some(key) = node_key {
        copy.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", rusqlite::params![NODE_KEY_META, key])
            .map_err(fail("adding the node key"))?;
    }
    let schema_version = schema_version(&copy)?;
    let payments: i64 = copy.query_row("SELECT count(*) FROM payments", [], |r| r.get(0)).map_err(fail("counting"))?;
    drop(copy);
    let file = std::fs::File::open(out).map_err(|e| Error::internal("opening the backup", e))?;
    file.sync_all().map_err(|e| Error::internal("syncing the backup", e))?;
    let bytes = file.metadata().map_err(|e| Error::internal("reading the backup's size", e))?.len();
    Ok(BackupReport { bytes, schema_version, payments, with_node_key: node_key.is_some() })
}

/// Restores `backup` as the database at `database` (which must not exist),
/// returning the node key the backup carried.
pub fn restore(backup: &Path, database: &Path) -> Result<RestoreReport, Error> {
    if database.exists() {
        return Err(Error::InvalidField {
            field: "--data",
            detail: format!(
                "{} exists: a restore never overwrites a store; restore into a new folder",
                database.display()
            ),
        });
    }
    let copy =
        Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail("opening the backup"))?;
    check(&copy)?;
    drop(copy);
    let mut partial = database.as_os_str().to_owned();
    partial.push(".restoring");
    let partial = std::path::PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    crate::secrets::write_private_file(&partial, b"").map_err(|e| Error::internal("creating the database", e))?;
    let restored = fill(backup, &partial).and_then(|report| {
        std::fs::rename(&partial, database).map_err(|e| Error::internal("moving the database into place", e))?;
        Ok(report)
    });
    if restored.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    restored
}

/// Copies the backup into `into` (empty, private), takes the node key out
/// of it, and syncs it.
fn fill(backup: &Path, into: &Path) -> Result<RestoreReport, Error> {
    std::fs::copy(backup, into).map_err(|e| Error::internal("copying the backup", e))?;
    let conn = Connection::open(into).map_err(fail("opening the restored database"))?;
    let key: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [NODE_KEY_META], |r| r.get(0))
        .optional()
        .map_err(fail("reading the node key"))?;
    let node_key = match key {
        None => None,
        Some(bytes) => Some(
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| Error::Internal("the backup's node key is not 32 bytes".into()))?,
        ),
    };
    conn.execute("DELETE FROM meta WHERE key = ?1", [NODE_KEY_META]).map_err(fail("removing the node key"))?;
    let schema_version = schema_version(&conn)?;
    drop(conn);
    std::fs::File::open(into)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::internal("syncing the restored database", e))?;
    Ok(RestoreReport { schema_version, node_key })
}

/// A sound SQLite file of a schema this build knows.
fn check(conn: &Connection) -> Result<(), Error> {
    let verdict: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(fail("checking the backup"))?;
    if verdict != "ok" {
        return Err(Error::Internal(format!("the backup is damaged: {verdict}")));
    }
    let version = schema_version(conn)?;
    if version == 0 || version > super::schema::VERSION {
        return Err(Error::Internal(format!(
            "the backup has schema version {version}; this coffer reads 1 to {}",
            super::schema::VERSION
        )));
    }
    Ok(())
}

fn schema_version(conn: &Connection) -> Result<usize, Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(fail("reading the schema"))?;
    usize::try_from(version).map_err(|_| Error::Internal("a negative schema version".into()))
}
