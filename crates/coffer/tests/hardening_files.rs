//! Files and secrets: the data folder is its owner's alone, every database
//! file is 0600, and a chosen operator token must be strong enough.

mod common;

use common::Gateway;
use std::path::Path;

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_is_0700_and_every_database_file_0600() {
    let gw = Gateway::start().await;
    // A write, so that the WAL and its index exist.
    let (_, _agent, _) = gw.new_agent("alice", 1_000).await;
    assert_eq!(mode(gw.data_dir()), 0o700, "the data folder");
    assert_eq!(mode(&gw.data_dir().join("node.key")), 0o600, "the node key");
    if common::postgres_mode() {
        return;
    }
    let db = gw.db_path();
    for path in [db.clone(), db.with_extension("sqlite3-wal"), db.with_extension("sqlite3-shm")] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_database_left_world_readable_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    if common::postgres_mode() {
        return;
    }
    let mut gw = Gateway::start().await;
    gw.new_agent("alice", 1_000).await;
    gw.kill9().await;
    let db = gw.db_path();
    let wal = db.with_extension("sqlite3-wal");
    for path in [gw.data_dir().to_owned(), db.clone(), wal.clone()] {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    gw.restart().await;
    assert_eq!(mode(gw.data_dir()), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&wal), 0o600);
    assert!(gw.audit().await.0, "the store is intact");
}

#[tokio::test]
async fn a_short_operator_token_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stderr = common::serve_refused(&data, &[], &[("COFFER_OPERATOR_TOKEN", "op-secret")]).await;
    assert!(stderr.contains("COFFER_OPERATOR_TOKEN") && stderr.contains("at least 32"), "{stderr}");
    assert!(!data.exists(), "the refused start created its data folder");
}

/// A name, memo, purpose or message holding a control or bidirectional
/// formatting character is refused with a problem naming the field, and
/// nothing is created.
#[tokio::test]
async fn hidden_characters_in_names_memos_and_messages_are_refused() {
    let gw = Gateway::start().await;
    let (_, _alice, alice_key) = gw.new_agent("alice", 100_000).await;
    let agents_before = gw.operator().agents().await.unwrap().len();
    let name = serde_json::json!({"name": "bob\u{202E}gpj.exe"});
    let r = common::send(gw.request(reqwest::Method::POST, "/v1/agents", Some(gw.operator_token())).json(&name)).await;
    assert_eq!(r.assert_problem(400, "invalid-field")["field"], "name");
    assert_eq!(gw.operator().agents().await.unwrap().len(), agents_before);

    let memo = serde_json::json!({"amount_msat": 1_000, "memo": "pay me\u{1b}[2J"});
    let r = common::send(gw.request(reqwest::Method::POST, "/v1/invoices", Some(&alice_key)).json(&memo)).await;
    assert_eq!(r.assert_problem(400, "invalid-field")["field"], "memo");

    let r = gw.create_room_raw(&alice_key, "market\u{2066}", &[]).await;
    assert_eq!(r.assert_problem(400, "invalid-field")["field"], "name");
    let room = gw.create_room(&alice_key, "market", &[]).await;
    let r = gw.post_raw(&alice_key, &room.id, &serde_json::json!({"text": "hello\u{200F}"})).await;
    assert_eq!(r.assert_problem(400, "invalid-field")["field"], "text");
    assert!(gw.all_messages(&alice_key, &room.id).await.is_empty(), "a refused message was stored");
    // Line breaks are text, not control, in a message.
    gw.post_text(&alice_key, &room.id, "line one\nline two").await;
}
