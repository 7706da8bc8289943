//! Online backup and restore of an embedded store (`coffer backup`,
//! `coffer restore`), taken from outside, with the real binary, while
//! clients keep paying.

mod common;

use common::{Gateway, invoice};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PAYERS: usize = 8;
const FUNDS_MSAT: u64 = 100_000_000;

/// Payment ids the gateway acknowledged (200), in the order answered.
type Acknowledged = Arc<Mutex<Vec<String>>>;

async fn cli_ok(gw: &Gateway, args: &[&str]) -> serde_json::Value {
    let out = gw.cli(args, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "coffer {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("coffer {args:?} printed no JSON ({e}): {stdout}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("the file").permissions().mode() & 0o777
}

#[tokio::test]
async fn a_backup_taken_while_eight_clients_pay_restores_every_payment_acknowledged_before_it() {
    if common::sqlite_only("coffer backup copies an embedded store; PostgreSQL's is pg_dump") {
        return;
    }
    let gw = Arc::new(Gateway::start().await);
    let (_, shop, _) = gw.new_agent("shop", 0).await;
    let shop = Arc::new(shop);
    let mut payers = Vec::new();
    for i in 0..PAYERS {
        let (_, client, key) = gw.new_agent(&format!("payer-{i}"), FUNDS_MSAT).await;
        payers.push((client, key));
    }
    let (stop, acknowledged): (Arc<AtomicBool>, Acknowledged) = (Arc::default(), Arc::default());
    let workers: Vec<_> = payers
        .iter()
        .map(|(_, key)| {
            let (gw, shop, key) = (Arc::clone(&gw), Arc::clone(&shop), key.clone());
            let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let bill = invoice(&shop, 1_000).await;
                    let reply = gw.pay_raw(&key, &bill.bolt11, "during the backup", None).await;
                    assert_eq!(reply.status, 200, "{reply:?}");
                    let id = reply.json["id"].as_str().expect("a payment id").to_owned();
                    acknowledged.lock().expect("the list").push(id);
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before: BTreeSet<String> = acknowledged.lock().expect("the list").iter().cloned().collect();
    let folder = tempfile::tempdir().expect("a folder");
    let file = folder.path().join("coffer.backup");
    let (data, file_text) = (gw.data_dir().display().to_string(), file.display().to_string());
    let made = cli_ok(&gw, &["backup", "--data", &data, "--out", &file_text, "--node-key", "--json"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a payer");
    }
    let all: Vec<String> = acknowledged.lock().expect("the list").clone();
    assert!(!before.is_empty() && all.len() > before.len(), "payments before ({}) and during the backup", before.len());
    assert_eq!(mode(&file), 0o600, "the backup holds preimages and the node key");
    assert!(made["payments"].as_i64().is_some_and(|n| n >= before.len() as i64), "{made}");
    assert_eq!(made["node_key"], true);

    // Restored into a new folder: audited, and every payment acknowledged
    // before the backup began is there, under the same node key.
    let restored = folder.path().join("restored");
    let restored_text = restored.display().to_string();
    let done = cli_ok(&gw, &["restore", &file_text, "--data", &restored_text, "--json"]).await;
    assert_eq!(done["node_key"], "restored", "{done}");
    let audit = gw.cli(&["audit", "--data", &restored_text], &[]).await;
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    let key = |dir: &Path| std::fs::read_to_string(dir.join("node.key")).expect("a node key");
    assert_eq!(key(&restored), key(gw.data_dir()));
    assert_eq!(mode(&restored.join("node.key")), 0o600);
    assert_eq!(mode(&restored.join("coffer.sqlite3")), 0o600);
    let copy = Gateway::start_in(&restored).await;
    let mut found = BTreeSet::new();
    for (_, key) in &payers {
        found.extend(copy.payment_ids(key).await);
    }
    let missing: Vec<&String> = before.difference(&found).collect();
    assert!(missing.is_empty(), "acknowledged before the backup, missing from it: {missing:?}");

    // The live gateway lost nothing, and a restore never overwrites a store.
    let mut live = 0;
    for (client, _) in &payers {
        live += gw.payment_count(client).await;
    }
    assert_eq!(live, all.len(), "every acknowledged payment is in the live store");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
    let again = gw.cli(&["restore", &file_text, "--data", &data], &[]).await;
    assert!(!again.status.success(), "a restore over a live store must be refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"), "{again:?}");
}

#[tokio::test]
async fn a_backup_never_replaces_a_file_and_a_damaged_one_is_not_restored() {
    if common::sqlite_only("coffer backup copies an embedded store") {
        return;
    }
    let gw = Gateway::start().await;
    gw.new_agent("someone", 1_000).await;
    let folder = tempfile::tempdir().expect("a folder");
    let (data, file) = (gw.data_dir().display().to_string(), folder.path().join("b"));
    std::fs::write(&file, b"precious").expect("a file");
    let file_text = file.display().to_string();
    let out = gw.cli(&["backup", "--data", &data, "--out", &file_text], &[]).await;
    assert!(!out.status.success(), "an existing file is never replaced");
    assert_eq!(std::fs::read(&file).expect("the file"), b"precious");

    std::fs::remove_file(&file).expect("removed");
    cli_ok(&gw, &["backup", "--data", &data, "--out", &file_text, "--json"]).await;
    // The header of a page in the middle overwritten: no valid page type.
    let mut bytes = std::fs::read(&file).expect("the backup");
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        size => usize::from(size),
    };
    let middle_page = (bytes.len() / page_size / 2).max(1);
    bytes[middle_page * page_size..middle_page * page_size + 8].fill(0xA5);
    let damaged = folder.path().join("damaged");
    std::fs::write(&damaged, &bytes).expect("a damaged copy");
    let into = folder.path().join("restored");
    let out = gw.cli(&["restore", &damaged.display().to_string(), "--data", &into.display().to_string()], &[]).await;
    assert!(!out.status.success(), "a damaged backup is refused: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!into.join("coffer.sqlite3").exists(), "nothing is left behind");
    let done = cli_ok(&gw, &["restore", &file_text, "--data", &into.display().to_string(), "--json"]).await;
    assert_eq!(done["node_key"], "none", "no node key was asked for: {done}");
}
