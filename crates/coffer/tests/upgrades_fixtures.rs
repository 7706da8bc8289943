//! Upgrades from real databases. Each folder of tests/fixtures/schemas/ holds
//! a SQLite store and node key written by an earlier build of coffer (its
//! README says which commit and how): three agents funded from a minted
//! treasury, three payments between them (from schema 10 on also a settled
//! hold invoice and a refund), an invoice left open, a read key. The binary
//! under test starts on a copy of each, migrates it to its own schema, and
//! must keep every balance and key, pass `coffer audit` and take new
//! payments. A store from a schema newer than the binary is refused and left
//! as it was; a migration failing part-way leaves the step before.
//!
//! SQLite only: the fixtures are SQLite files (PostgreSQL's migrations run
//! the same numbered steps under its single-instance lock).

mod common;

use coffer_client::{InvoiceStatus, Scope};
use common::{Gateway, invoice, send};
use reqwest::Method;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fixtures committed, by schema version: the first schema (1), the one
/// trade between agents arrived with (10), the one before NWC (13), NWC's
/// (14), bridges (15), cost attribution (16), the first whose events,
/// audit bodies and invoices are stored packed (17) and the first whose
/// events and audit records name kinds and agents by integers (18). A new
/// fixture gets a test below and a line here.
const FIXTURES: [u32; 10] = [1, 10, 13, 14, 15, 16, 17, 18, 19, 20];

#[derive(Debug, Deserialize)]
struct Fixture {
    schema_version: i64,
    commit: String,
    operator_token: String,
    agents: Vec<FixtureAgent>,
    alice_read_key: String,
    treasury_msat: u64,
    paid_invoices: Vec<PaidInvoice>,
    /// Refunds in part (schema 10 on: trade between agents).
    refunds: Vec<Refund>,
    open_invoice: OpenInvoice,
}

#[derive(Debug, Deserialize)]
struct FixtureAgent {
    name: String,
    id: String,
    spend_key: String,
    balance_msat: u64,
    pending_msat: u64,
    /// Payments in the agent's list (`GET /v1/payments`).
    payments: usize,
}

#[derive(Debug, Deserialize)]
struct PaidInvoice {
    payment_hash: String,
    payee: String,
    payer: String,
    amount_msat: u64,
    /// Its memo, which was also the payment's purpose.
    memo: String,
    /// A hold invoice, paid then settled by its payee (schema 10 on).
    #[serde(default)]
    hold: bool,
}

#[derive(Debug, Deserialize)]
struct Refund {
    payment_id: String,
    /// The payee who refunded, and the payer refunded.
    by: String,
    to: String,
    amount_msat: u64,
}

#[derive(Debug, Deserialize)]
struct OpenInvoice {
    payment_hash: String,
    payee: String,
    amount_msat: u64,
}

impl Fixture {
    fn agent(&self, name: &str) -> &FixtureAgent {
        self.agents.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no agent {name} in the fixture"))
    }
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas")
}

fn fixture_dir(version: u32) -> PathBuf {
    fixtures_root().join(format!("v{version}"))
}

fn load(version: u32) -> Fixture {
    let path = fixture_dir(version).join("fixture.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies a fixture's database and node key into a new data folder `data`
/// of `parent`, private as coffer keeps its own (0700, files 0600): the
/// committed files are never opened for writing.
fn copy_fixture(version: u32, parent: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = parent.join("data");
    std::fs::create_dir(&data).expect("creating the data folder");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    for file in ["coffer.sqlite3", "node.key"] {
        std::fs::copy(fixture_dir(version).join(file), data.join(file)).expect("copying the fixture");
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    }
    data
}

/// `PRAGMA user_version` of a database, read without writing.
fn user_version(db: &Path) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(db, flags).expect("opening the database read-only");
    conn.busy_timeout(std::time::Duration::from_secs(10)).expect("a busy timeout");
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version")
}

/// The `user_version` field of a database file's header (bytes 60..64, big
/// endian), read without opening it with SQLite: for files no process has
/// open, which SQLite would give a -wal and -shm beside them.
fn header_user_version(db: &Path) -> i64 {
    let bytes = std::fs::read(db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    assert!(bytes.starts_with(b"SQLite format 3\0"), "{} is not a SQLite database", db.display());
    i64::from(u32::from_be_bytes(bytes[60..64].try_into().expect("four bytes")))
}

fn current_schema() -> i64 {
    i64::try_from(coffer::store::SCHEMA_VERSION).expect("a small number")
}

/// Every check of one fixture: it upgrades, audits, keeps what it held, and
/// takes payments; then it survives a restart on the upgraded store.
async fn upgrades_audits_and_takes_payments(version: u32) {
    let fixture = load(version);
    assert_eq!(fixture.schema_version, i64::from(version), "fixture.json of v{version}");
    assert_eq!(
        header_user_version(&fixture_dir(version).join("coffer.sqlite3")),
        fixture.schema_version,
        "the committed database of v{version} (made at {}) holds its schema",
        fixture.commit
    );
    let folder = tempfile::tempdir().expect("a temporary folder");
    let data = copy_fixture(version, folder.path());

    // The harness starts it with an operator token of its own, which
    // replaces the fixture's stored digest (the fixture's token is kept
    // in fixture.json only to say how it was made).
    assert!(!fixture.operator_token.is_empty());
    let mut gw = Gateway::start_in(&data).await;
    assert_eq!(user_version(&gw.db_path()), current_schema(), "v{version} migrated to this build's schema");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit after upgrading v{version}: {report}");
    // The outbox reads back (text, or packed from schema 17 on): each paid
    // invoice has its `invoice.paid` event, naming its hash.
    let page = send(gw.request(Method::GET, "/v1/events?limit=1000", Some(gw.operator_token()))).await;
    assert_eq!(page.status, 200, "v{version}: the events: {page:?}");
    let events = page.json["events"].as_array().expect("events");
    for paid in &fixture.paid_invoices {
        let named = |e: &&serde_json::Value| {
            e["type"] == "invoice.paid" && e["data"]["payment_hash"] == paid.payment_hash.as_str()
        };
        assert!(events.iter().any(|e| named(&e)), "v{version}: no invoice.paid event of {paid:?} in {events:?}");
        // Read by its agent too (from schema 18 named by an integer), and
        // the payer's audit records found by agent.
        let payee = fixture.agent(&paid.payee);
        let own = send(gw.request(Method::GET, "/v1/events?limit=1000", Some(&payee.spend_key))).await;
        let own = own.json["events"].as_array().expect("an agent's events");
        let its = |e: &&serde_json::Value| named(e) && e["agent_id"] == payee.id.as_str();
        assert!(own.iter().any(|e| its(&e)), "v{version}: {}'s events lack {paid:?}: {own:?}", paid.payee);
        let payer = &fixture.agent(&paid.payer).id;
        let trail = gw.audit_all(&format!("agent_id={payer}")).await;
        // Schema 1 had no audit trail.
        assert!(version < 2 || !trail.is_empty(), "v{version}: no audit record of {payer}");
        assert!(trail.iter().all(|r| r.record["agent_id"] == payer.as_str()), "v{version}: {trail:?}");
    }

    // Balances, the treasury and the keys are as the old build left them.
    let balances = gw.balances().await;
    let expected: BTreeMap<String, u64> = fixture.agents.iter().map(|a| (a.id.clone(), a.balance_msat)).collect();
    assert_eq!(balances, expected, "v{version}: every agent's balance, and no other agent");
    assert_eq!(gw.treasury_msat().await, fixture.treasury_msat, "v{version}: the treasury");
    for a in &fixture.agents {
        let wallet =
            gw.client(&a.spend_key).wallet().await.unwrap_or_else(|e| panic!("v{version} {}'s key: {e}", a.name));
        assert_eq!((wallet.agent_id.as_str(), wallet.name.as_str()), (a.id.as_str(), a.name.as_str()));
        assert_eq!(
            (wallet.balance_msat, wallet.pending_msat),
            (a.balance_msat, a.pending_msat),
            "v{version} {}",
            a.name
        );
        assert_eq!(wallet.scope, Scope::Spend);
        assert_eq!(gw.payment_count(&gw.client(&a.spend_key)).await, a.payments, "v{version}: {}'s payments", a.name);
    }
    let read = gw.client(&fixture.alice_read_key).wallet().await.expect("alice's read key");
    assert_eq!((read.agent_id.as_str(), read.scope), (fixture.agent("alice").id.as_str(), Scope::Read));

    // Invoices: the paid ones read back paid; the one left open expired a
    // minute after it was made, long before this test, and cannot be paid.
    for paid in &fixture.paid_invoices {
        let payee = gw.client(&fixture.agent(&paid.payee).spend_key);
        let inv = payee.invoice(&paid.payment_hash).await.expect("a paid invoice of the fixture");
        assert_eq!((inv.status, inv.amount_msat), (InvoiceStatus::Paid, paid.amount_msat), "v{version} {paid:?}");
        assert_eq!(inv.hold, paid.hold, "v{version} {paid:?}");
        assert_ne!(paid.payer, paid.payee);
        if paid.hold {
            continue;
        }
        // Its payment was made under an idempotency key (`make-fixture.sh`):
        // the same request again answers that payment, naming its payee
        // (agents named by account id from schema 19), and pays nothing.
        let payer = fixture.agent(&paid.payer);
        let key = format!("fixture-{}-pays-{}", paid.payer, paid.payee);
        let again = gw.pay_raw(&payer.spend_key, &inv.bolt11, &paid.memo, Some(&key)).await;
        assert_eq!(again.status, 200, "v{version}: {paid:?} again: {again:?}");
        assert_eq!(again.json["payment_hash"], paid.payment_hash.as_str(), "v{version}: {again:?}");
        // Its preimage (kept in its invoice's row from schema 20) is the
        // one that hashes to it.
        let preimage = again.json["preimage"].as_str().and_then(|p| hex::decode(p).ok()).expect("a preimage");
        let hashed = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&preimage));
        assert_eq!(hashed, paid.payment_hash, "v{version}: {again:?}");
        let payee_id = fixture.agent(&paid.payee).id.as_str();
        assert_eq!(again.json["payee_agent_id"], payee_id, "v{version}: {again:?}");
    }
    assert_eq!(gw.balances().await, expected, "v{version}: the retries paid nothing");
    for refund in &fixture.refunds {
        let payer = gw.client(&fixture.agent(&refund.to).spend_key);
        let payment = payer.payment(&refund.payment_id).await.expect("a refunded payment of the fixture");
        assert_eq!(payment.refunded_msat, refund.amount_msat, "v{version} {refund:?}");
        assert_eq!(payment.payee_agent_id.as_deref(), Some(fixture.agent(&refund.by).id.as_str()), "v{version}");
    }
    let open = &fixture.open_invoice;
    let payee = gw.client(&fixture.agent(&open.payee).spend_key);
    let left_open = payee.invoice(&open.payment_hash).await.expect("the invoice left open");
    assert_eq!((left_open.status, left_open.amount_msat), (InvoiceStatus::Expired, open.amount_msat), "v{version}");
    let alice = fixture.agent("alice");
    let refused = gw.pay_raw(&alice.spend_key, &left_open.bolt11, "too late", None).await;
    assert!((400..500).contains(&refused.status), "v{version}: paying an expired invoice: {refused:?}");

    // New payments between the old agents, and to an agent made now.
    let (bob, carol) = (fixture.agent("bob"), fixture.agent("carol"));
    let bill = invoice(&gw.client(&bob.spend_key), 1_111).await;
    let paid = gw.pay_raw(&alice.spend_key, &bill.bolt11, "after the upgrade", None).await;
    assert_eq!(paid.status, 200, "v{version}: alice pays bob: {paid:?}");
    let bill = invoice(&gw.client(&carol.spend_key), 2_222).await;
    let paid = gw.pay_raw(&bob.spend_key, &bill.bolt11, "after the upgrade", None).await;
    assert_eq!(paid.status, 200, "v{version}: bob pays carol: {paid:?}");
    let (dave_id, dave, _) = gw.new_agent("dave", 0).await;
    let bill = invoice(&dave, 3_333).await;
    let paid = gw.pay_raw(&carol.spend_key, &bill.bolt11, "to a new agent", None).await;
    assert_eq!(paid.status, 200, "v{version}: carol pays dave: {paid:?}");

    let mut after = expected.clone();
    *after.get_mut(&alice.id).unwrap() -= 1_111;
    *after.get_mut(&bob.id).unwrap() -= 2_222 - 1_111;
    *after.get_mut(&carol.id).unwrap() -= 3_333 - 2_222;
    after.insert(dave_id, 3_333);
    assert_eq!(gw.balances().await, after, "v{version}: balances after the new payments");
    assert_eq!(gw.treasury_msat().await, fixture.treasury_msat, "v{version}: the treasury");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit after new payments on v{version}: {report}");

    // A restart on the upgraded store migrates nothing more and loses nothing.
    gw.restart().await;
    assert_eq!(user_version(&gw.db_path()), current_schema());
    assert_eq!(gw.balances().await, after, "v{version}: balances after a restart");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit after a restart on v{version}: {report}");
}

#[tokio::test]
async fn a_store_of_schema_1_the_first_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(1).await;
}

#[tokio::test]
async fn a_store_of_schema_10_trade_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(10).await;
}

#[tokio::test]
async fn a_store_of_schema_13_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(13).await;
}

#[tokio::test]
async fn a_store_of_schema_14_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(14).await;
}

#[tokio::test]
async fn a_store_of_schema_15_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(15).await;
}

#[tokio::test]
async fn a_store_of_schema_16_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(16).await;
}

/// Its events, audit bodies and invoices are stored packed: the audit
/// chain, the events and the invoices read back from them.
#[tokio::test]
async fn a_store_of_schema_17_packed_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(17).await;
}

/// Its events name their kind and agent, and its audit records their
/// agent, by integers: they read back with the texts, by agent too.
#[tokio::test]
async fn a_store_of_schema_18_integer_names_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(18).await;
}

/// Its payments name their payer and payee, its invoices their payer, and
/// its idempotency keys their agent, by account id: they read back with the
/// texts, and each payment's key still answers it.
#[tokio::test]
async fn a_store_of_schema_19_integer_payers_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(19).await;
}

/// Its invoices are packed without their hash, and its internal payments
/// keep their preimages in their invoices: they read back whole, and
/// each payment's key still answers it (naming its preimage's hash).
#[tokio::test]
async fn a_store_of_schema_20_hashless_invoices_upgrades_audits_and_takes_payments() {
    if common::sqlite_only("the fixtures are SQLite files") {
        return;
    }
    upgrades_audits_and_takes_payments(20).await;
}

/// The fixtures on disk are the ones tested above, and one was written by a
/// build of the current schema: adding a migration asks for a fixture of it
/// (tests/fixtures/schemas/README.md says how to make one).
#[test]
fn every_fixture_is_tested_and_the_current_schema_has_one() {
    let mut on_disk: Vec<u32> = std::fs::read_dir(fixtures_root())
        .expect("tests/fixtures/schemas")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix('v')?.parse().ok())
        .collect();
    on_disk.sort_unstable();
    assert_eq!(on_disk, FIXTURES, "fixture folders and the FIXTURES list differ");
    for v in FIXTURES {
        assert_eq!(load(v).schema_version, i64::from(v), "v{v}/fixture.json");
    }
    let newest = i64::from(*FIXTURES.last().expect("fixtures"));
    assert_eq!(
        newest,
        current_schema(),
        "this build writes schema {}, the newest fixture is of schema {newest}: make one with \
         tests/fixtures/schemas/make-fixture.sh (see the README there)",
        current_schema()
    );
}

/// A store whose schema is newer than the binary: `coffer serve` and
/// `coffer audit` refuse it, naming both versions, and leave the file as it
/// was (same bytes, same `user_version`).
#[tokio::test]
async fn a_store_from_a_newer_schema_is_refused_and_left_unchanged() {
    if common::sqlite_only("it edits the SQLite file's user_version") {
        return;
    }
    let newest = *FIXTURES.last().expect("fixtures");
    let folder = tempfile::tempdir().expect("a temporary folder");
    let data = copy_fixture(newest, folder.path());
    let db = data.join("coffer.sqlite3");
    let newer = current_schema() + 1;
    {
        let conn = rusqlite::Connection::open(&db).expect("opening the copy");
        conn.pragma_update(None, "user_version", newer).expect("setting user_version");
    }
    assert_eq!(header_user_version(&db), newer);
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let (bytes, names) = (std::fs::read(&db).expect("the database"), files(&data));
    assert_eq!(names, ["coffer.sqlite3", "node.key"], "no WAL left beside the edited copy");
    let want = format!("the database has schema version {newer}, newer than this coffer ({})", current_schema());

    let token = [("COFFER_OPERATOR_TOKEN", "cop_test_newer_schema_0123456789abcdef")];
    let stderr = common::serve_refused(&data, &[], &token).await;
    assert!(stderr.contains(&want), "coffer serve's refusal should say {want:?}: {stderr}");
    assert_eq!(header_user_version(&db), newer, "the refused start changed user_version");
    assert!(std::fs::read(&db).expect("the database") == bytes, "the refused start changed the database file");

    let out = tokio::process::Command::new(common::BIN)
        .arg("audit")
        .arg("--data")
        .arg(&data)
        .env_remove("COFFER_DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("running coffer audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "coffer audit ran on a newer schema: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains(&want), "coffer audit's refusal should say {want:?}: {stderr}");
    assert!(std::fs::read(&db).expect("the database") == bytes, "the refused audit changed the database file");
    assert_eq!(header_user_version(&db), newer);
}

/// Each migration is one transaction with its `user_version` bump: one that
/// fails part-way (here migration 7, which copies `invoices` into a table
/// that allows `expired`, on its last statement) leaves the store at the
/// step before, its copy and drop undone; the start is refused, and once
/// the cause is gone the next start carries on from there.
#[tokio::test]
async fn a_migration_failing_part_way_leaves_the_store_at_the_step_before() {
    if common::sqlite_only("it edits a SQLite file") {
        return;
    }
    let folder = tempfile::tempdir().expect("a temporary folder");
    let data = copy_fixture(1, folder.path());
    let db = data.join("coffer.sqlite3");
    let open = || rusqlite::Connection::open(&db).expect("opening the copy");
    // An index of migration 7's name, on another table: its last statement
    // then fails, after the invoices were copied and the old table dropped.
    open().execute_batch("CREATE INDEX invoices_open_by_expiry ON meta (key)").expect("the blocking index");
    let invoices_sql = |conn: &rusqlite::Connection| -> String {
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoices'", [], |r| r.get(0))
            .expect("the invoices table")
    };
    let before = invoices_sql(&open());
    assert!(!before.contains("expired"), "schema 1's invoices do not allow `expired`: {before}");

    let token = [("COFFER_OPERATOR_TOKEN", "cop_test_failed_migration_0123456789abcdef")];
    let stderr = common::serve_refused(&data, &[], &token).await;
    assert!(stderr.contains("migrating the schema") && stderr.contains("invoices_open_by_expiry"), "{stderr}");
    let conn = open();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert_eq!(version, 6, "migrations 2 to 6 committed, 7 did not");
    let after = invoices_sql(&conn);
    assert!(
        !after.contains("expired") && after.contains("backend"),
        "invoices as migration 6 left it (with `backend`), not migration 7's copy: {after}"
    );
    let leftovers: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'invoices_v7'", [], |r| r.get(0))
        .expect("sqlite_master");
    assert_eq!(leftovers, 0, "no half-made table of migration 7");
    let invoices: i64 = conn.query_row("SELECT count(*) FROM invoices", [], |r| r.get(0)).expect("the invoices");
    assert_eq!(invoices, 4, "every invoice of the fixture is still there");

    conn.execute_batch("DROP INDEX invoices_open_by_expiry").expect("dropping the blocking index");
    drop(conn);
    let gw = Gateway::start_in(&data).await;
    assert_eq!(user_version(&gw.db_path()), current_schema(), "the next start migrated from 6 on");
    let (ok, report) = gw.audit().await;
    assert!(ok, "coffer audit after the resumed migration: {report}");
    let fixture = load(1);
    let balances = gw.balances().await;
    for a in &fixture.agents {
        assert_eq!(balances.get(&a.id), Some(&a.balance_msat), "{}", a.name);
    }
}
