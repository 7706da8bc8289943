//! Upgrades: what a build says of the schema it writes.

mod common;

use common::Gateway;

/// `coffer --version` names the release and the schema version, and that
/// version is the one a store the same build created holds (SQLite's
/// `user_version`, PostgreSQL's `coffer_schema`): what an operator checks
/// before and after an upgrade.
#[tokio::test]
async fn the_version_names_the_schema_a_new_store_holds() {
    let gw = Gateway::start().await;
    let out = gw.cli(&["--version"], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let stored = match gw.database() {
        Some(db) => {
            let rows = db.query("SELECT version::text FROM coffer_schema", &[]);
            rows[0][0].clone().expect("a version").parse::<i64>().expect("a number")
        }
        None => {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
            let db = rusqlite::Connection::open_with_flags(gw.db_path(), flags).expect("the store opens");
            db.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).expect("user_version")
        }
    };
    assert!(stored > 0, "the store was migrated");
    assert_eq!(printed.trim_end(), format!("coffer {} (schema {stored})", env!("CARGO_PKG_VERSION")));
}
