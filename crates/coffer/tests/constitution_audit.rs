//! The audit trail: who spent what, why, under which rule, in order, hash
//! chained; filters; `coffer audit` verifies the chain and names the first
//! record that was tampered with.

mod common;

use coffer_client::AuditRecord;
use common::{Gateway, assert_denied, invoice, send};
use reqwest::Method;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const P: u64 = 1_000;
const GENESIS_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One row of the `audit_log` table: seq, body, prev_hash, hash.
type Row = (i64, String, Vec<u8>, Vec<u8>);

/// A stored body's text: packed (`coffer_core::pack`), or text as it is
/// (a body this test wrote back).
fn body_text(stored: &[u8]) -> String {
    coffer_core::pack::json::unpack(stored).expect("a stored audit body")
}

fn rows(conn: &Connection) -> Vec<Row> {
    let mut stmt = conn.prepare("SELECT seq, body, prev_hash, hash FROM audit_log ORDER BY seq").unwrap();
    let row = |r: &rusqlite::Row<'_>| {
        let body = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => body_text(b),
            other => panic!("an audit body of type {:?}", other.data_type()),
        };
        Ok((r.get(0)?, body, r.get(2)?, r.get(3)?))
    };
    stmt.query_map([], row).unwrap().map(Result::unwrap).collect()
}

/// The stored audit records of the gateway's store, SQLite or PostgreSQL.
fn stored_rows(gw: &Gateway) -> Vec<Row> {
    let Some(db) = gw.database() else {
        return rows(&Connection::open_with_flags(gw.db_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap());
    };
    let sql = "SELECT seq::text, encode(body, 'hex'), encode(prev_hash, 'hex'), encode(hash, 'hex') FROM audit_log \
         ORDER BY audit_log.seq";
    db.query(sql, &[])
        .into_iter()
        .map(|r| {
            let col = |i: usize| r[i].clone().expect("a stored audit column");
            let body = body_text(&hex::decode(col(1)).unwrap());
            (col(0).parse().unwrap(), body, hex::decode(col(2)).unwrap(), hex::decode(col(3)).unwrap())
        })
        .collect()
}

fn link(prev: &[u8], body: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body.as_bytes());
    h.finalize().to_vec()
}

fn find<'a>(trail: &'a [AuditRecord], action: &str) -> Vec<&'a AuditRecord> {
    trail.iter().filter(|r| r.record["action"] == action).collect()
}

/// The parts of a record that say who, what and why.
fn facts(r: &AuditRecord) -> Value {
    let f = |k: &str| r.record.get(k).cloned().unwrap_or(Value::Null);
    json!({"action": f("action"), "actor": f("actor"), "key_id": f("key_id"), "agent_id": f("agent_id"),
           "amount_msat": f("amount_msat"), "payee": f("payee"), "purpose": f("purpose"), "rule": f("rule")})
}

/// A data folder with a mix of everything: allowed, held and approved,
/// denied by policy and by a freeze, the kill switch. Returns the gateway,
/// the payer's id and key id, the seller's id and the approval's id.
async fn busy_gateway() -> (Gateway, String, String, String, String) {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let created = op.create_agent("auditee").await.unwrap();
    let (id, key, key_id) = (created.id, created.key, created.key_id);
    op.mint(100 * P).await.unwrap();
    op.fund_agent(&id, 100 * P).await.unwrap();
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;
    op.set_policy(&id, &json!({"approval_above_msat": 5 * P, "max_payment_msat": 20 * P})).await.unwrap();

    assert_eq!(gw.pay_raw(&key, &invoice(&seller, P).await.bolt11, "coffee", None).await.status, 200);
    let held = gw.pay_raw(&key, &invoice(&seller, 8 * P).await.bolt11, "gpu hour", None).await;
    assert_eq!(held.status, 202, "{held:?}");
    let apr = held.json["id"].as_str().unwrap().to_owned();
    let r = gw.pay_raw(&key, &invoice(&seller, 30 * P).await.bolt11, "yacht", None).await;
    assert_denied(&r, "amount-too-large");
    op.approve(&apr).await.unwrap();
    op.freeze(&id, Some("audit drill")).await.unwrap();
    assert_denied(&gw.pay_raw(&key, &invoice(&seller, P).await.bolt11, "after freeze", None).await, "agent-frozen");
    op.unfreeze(&id).await.unwrap();
    op.set_halted(true).await.unwrap();
    op.set_halted(false).await.unwrap();
    (gw, id, key_id, seller_id, apr)
}

#[tokio::test]
async fn the_trail_says_who_what_and_why_in_order_and_chained() {
    let (gw, id, key_id, seller_id, apr) = busy_gateway().await;
    let trail = gw.audit_all("").await;

    // In sequence, without gaps, each linked to the one before.
    assert_eq!(trail.first().map(|r| r.seq), Some(1));
    for (i, r) in trail.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "{r:?}");
        assert_eq!(r.hash.len(), 64, "{r:?}");
        let expected_prev = if i == 0 { GENESIS_HEX } else { trail[i - 1].hash.as_str() };
        assert_eq!(r.prev_hash, expected_prev, "record {}", r.seq);
    }
    let times: Vec<i64> = trail.iter().map(|r| r.record["at_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // And each hash is SHA-256(previous hash || the stored body), the body
    // being exactly what the API shows.
    let stored = stored_rows(&gw);
    assert_eq!(stored.len(), trail.len());
    for ((seq, body, prev, hash), r) in stored.iter().zip(&trail) {
        assert_eq!(*seq, r.seq);
        assert_eq!(link(prev, body), *hash, "record {seq}");
        assert_eq!(hex::encode(hash), r.hash);
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), r.record);
    }

    // Who, what, which rule.
    let payee = format!("agent:{seller_id}");
    let one = |action: &str| {
        let found = find(&trail, action);
        assert_eq!(found.len(), 1, "{action}: {found:?}");
        facts(found[0])
    };
    let payment = |action: &str, amount: u64, purpose: &str, rule: &str| {
        json!({"action": action, "actor": id, "key_id": key_id, "agent_id": id, "amount_msat": amount,
               "payee": payee, "purpose": purpose, "rule": rule})
    };
    assert_eq!(one("payment.allowed"), payment("payment.allowed", P, "coffee", "allowed"));
    assert_eq!(one("payment.held"), payment("payment.held", 8 * P, "gpu hour", "approval-required"));
    let approved = one("approval.approved");
    assert_eq!(
        approved,
        json!({"action": "approval.approved", "actor": "operator", "key_id": key_id, "agent_id": id,
               "amount_msat": 8 * P, "payee": payee, "purpose": "gpu hour", "rule": apr})
    );
    let denied = find(&trail, "payment.denied");
    assert_eq!(denied.len(), 2);
    assert_eq!(facts(denied[0]), payment("payment.denied", 30 * P, "yacht", "amount-too-large"));
    assert!(denied[0].record["detail"].as_str().unwrap().contains("max_payment_msat"), "{:?}", denied[0]);
    assert_eq!(facts(denied[1]), payment("payment.denied", P, "after freeze", "agent-frozen"));
    let frozen = find(&trail, "agent.frozen");
    assert_eq!(
        (frozen[0].record["actor"].as_str(), frozen[0].record["detail"].as_str()),
        (Some("operator"), Some("audit drill"))
    );
    let policy = find(&trail, "policy.updated");
    assert_eq!(policy[0].record["actor"], "operator");
    let applied: Value = serde_json::from_str(policy[0].record["detail"].as_str().unwrap()).unwrap();
    assert_eq!(applied, json!({"approval_above_msat": 5 * P, "max_payment_msat": 20 * P}));
    for action in ["gateway.halted", "gateway.resumed", "agent.unfrozen", "treasury.minted", "agent.funded"] {
        assert_eq!(find(&trail, action).len(), 1, "{action}");
    }
    assert_eq!(find(&trail, "agent.created").len(), 2);

    // The agent filter: exactly this agent's story, in order.
    let mine = gw.audit_all(&format!("agent_id={id}")).await;
    let actions: Vec<&str> = mine.iter().map(|r| r.record["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "agent.created",
            "agent.funded",
            "policy.updated",
            "payment.allowed",
            "payment.held",
            "payment.denied",
            "approval.approved",
            "agent.frozen",
            "payment.denied",
            "agent.unfrozen"
        ]
    );
    assert!(mine.iter().all(|r| r.record["agent_id"] == id.as_str()));
    assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq));
    // The action filter, alone and combined.
    let denials = gw.audit_all("action=payment.denied").await;
    assert_eq!(denials.iter().map(|r| r.seq).collect::<Vec<_>>(), denied.iter().map(|r| r.seq).collect::<Vec<_>>());
    assert_eq!(gw.audit_all(&format!("agent_id={id}&action=payment.denied")).await.len(), 2);
    assert_eq!(gw.audit_all(&format!("agent_id={seller_id}&action=payment.denied")).await.len(), 0);
    let halted = gw.audit_all("action=gateway.halted").await;
    assert_eq!((halted[0].record["actor"].as_str(), halted[0].record.get("agent_id")), (Some("operator"), None));
    // After, limit, since and until.
    let after = gw.audit_after(denied[0].seq, "action=payment.denied").await;
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), [denied[1].seq]);
    let op = gw.operator();
    let two = op.audit(0, "limit=2").await.unwrap();
    assert_eq!(two.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(op.audit(0, "since=2999-01-01T00:00:00Z").await.unwrap().is_empty());
    assert!(op.audit(0, "until=2000-01-01T00:00:00Z").await.unwrap().is_empty());
    assert_eq!(gw.audit_all("since=2000-01-01T00:00:00Z").await.len(), trail.len());
    let r = send(gw.request(Method::GET, "/v1/audit?since=yesterday", Some(gw.operator_token()))).await;
    assert_eq!(r.assert_problem(400, "invalid-field")["field"], "since");
    let r = send(gw.request(Method::GET, "/v1/audit?agent=x", Some(gw.operator_token()))).await;
    r.assert_problem(400, "malformed-request");
    // The trail is the operator's.
    let agent = gw.client(&gw.operator().create_agent("nosy").await.unwrap().key);
    assert_eq!(agent.audit(0, "").await.unwrap_err().code(), Some("forbidden"));
}

#[tokio::test]
async fn coffer_audit_passes_on_a_live_and_a_stopped_gateway_and_names_a_tampered_record() {
    if common::sqlite_only("it tampers with the SQLite file") {
        return;
    }
    let (mut gw, id, _, _, _) = busy_gateway().await;
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit of the running gateway failed: {report}");
    gw.kill9().await;
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit of the stopped gateway failed: {report}");

    let conn = Connection::open(gw.db_path()).unwrap();
    let original = rows(&conn);
    let allowed_seq: i64 = conn
        .query_row(
            "SELECT seq FROM audit_log WHERE action = 'payment.allowed' \
             AND agent = (SELECT account_id FROM agents WHERE id = ?1)",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let (_, body, prev, _) = original.iter().find(|r| r.0 == allowed_seq).unwrap().clone();
    let last_seq = original.last().unwrap().0;
    assert!(allowed_seq < last_seq);

    // One byte of history rewritten: "coffee" becomes "toffee".
    let forged = body.replace("\"purpose\":\"coffee\"", "\"purpose\":\"toffee\"");
    assert_ne!(forged, body);
    let set_body = |b: &str| conn.execute("UPDATE audit_log SET body = ?2 WHERE seq = ?1", params![allowed_seq, b]);
    assert_eq!(set_body(&forged).unwrap(), 1);
    let (ok, report) = gw.audit().await;
    assert!(!ok, "a rewritten record passed the audit: {report}");
    assert!(report.contains(&format!("audit trail broken at record {allowed_seq}")), "{report}");
    // Put back, it passes again: the check is exact.
    set_body(&body).unwrap();
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");

    // Rewriting the record and its own hash moves the break to the next one.
    conn.execute(
        "UPDATE audit_log SET body = ?2, hash = ?3 WHERE seq = ?1",
        params![allowed_seq, forged, link(&prev, &forged)],
    )
    .unwrap();
    let (ok, report) = gw.audit().await;
    assert!(!ok, "{report}");
    assert!(report.contains(&format!("audit trail broken at record {}", allowed_seq + 1)), "{report}");
    let (_, _, _, hash) = original.iter().find(|r| r.0 == allowed_seq).unwrap().clone();
    conn.execute("UPDATE audit_log SET body = ?2, hash = ?3 WHERE seq = ?1", params![allowed_seq, body, hash]).unwrap();

    // A record removed from the middle.
    let (seq, b, p, h) = original.iter().find(|r| r.0 == allowed_seq + 1).unwrap().clone();
    let saved: (i64, Option<i64>, Option<String>, String) = conn
        .query_row("SELECT at, agent, agent_text, action FROM audit_log WHERE seq = ?1", [seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq = ?1", [seq]).unwrap();
    let (ok, report) = gw.audit().await;
    assert!(!ok, "{report}");
    assert!(report.contains(&format!("audit trail broken at record {}", seq + 1)), "{report}");
    conn.execute(
        "INSERT INTO audit_log (seq, at, agent, agent_text, action, body, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, saved.0, saved.1, saved.2, saved.3, b, p, h],
    )
    .unwrap();
    assert_eq!(rows(&conn), original);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");

    // The ledger is checked too: a balance changed behind its back fails.
    conn.execute("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 2", []).unwrap();
    let (ok, report) = gw.audit().await;
    assert!(!ok, "{report}");
}

/// The stored `prev_hash` of each record is part of the chain the API shows
/// (`GET /v1/audit`): a record whose `prev_hash` no longer names its
/// predecessor is a broken chain, and `coffer audit` must say so.
#[tokio::test]
async fn coffer_audit_catches_a_rewritten_prev_hash() {
    if common::sqlite_only("it rewrites a record in the SQLite file") {
        return;
    }
    let (mut gw, _, _, _, _) = busy_gateway().await;
    gw.kill9().await;
    let conn = Connection::open(gw.db_path()).unwrap();
    let seq = 3;
    assert_eq!(
        conn.execute("UPDATE audit_log SET prev_hash = ?2 WHERE seq = ?1", params![seq, vec![7u8; 32]]).unwrap(),
        1
    );
    let (ok, report) = gw.audit().await;
    assert!(!ok, "record {seq} names a predecessor that does not exist, and the audit passed: {report}");
    assert!(report.contains(&format!("audit trail broken at record {seq}")), "{report}");
}
