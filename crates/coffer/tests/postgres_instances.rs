//! Several `coffer serve` instances on one PostgreSQL database stay one
//! gateway: the database, not any one process, decides who pays, which
//! request an idempotency key answered, which keys live and which held
//! payment expires.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (scripts/services.sh); each test makes
//! a database of its own.

mod common;

use common::{Gateway, Reply, all_at_once, invoice, invoice_expiring, send};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const P: u64 = 1_000;

async fn instances(count: usize) -> Vec<Gateway> {
    let first = Gateway::start_postgres().await;
    let mut all = Vec::with_capacity(count);
    for _ in 1..count {
        all.push(first.another_instance().await);
    }
    all.insert(0, first);
    all
}

async fn wallet_status(gw: &Gateway, key: &str) -> u16 {
    send(gw.request(Method::GET, "/v1/wallet", Some(key))).await.status
}

/// An agent created on the first instance: its key works on every
/// instance at once (each reads keys from the database).
async fn agent_everywhere(gws: &[Gateway], name: &str, fund_msat: u64) -> (String, coffer_client::Client, String) {
    let (id, client, key) = gws[0].new_agent(name, fund_msat).await;
    for gw in &gws[1..] {
        assert_eq!(wallet_status(gw, &key).await, 200, "{} knows a key made on another instance", gw.url());
    }
    (id, client, key)
}

fn pay_request(gw: &Gateway, key: &str, bolt11: &str, idempotency_key: Option<&str>) -> reqwest::RequestBuilder {
    let rb = gw
        .request(Method::POST, "/v1/payments", Some(key))
        .json(&json!({"bolt11": bolt11, "purpose": "across instances"}));
    match idempotency_key {
        Some(k) => rb.header("Idempotency-Key", k),
        None => rb,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_payments_on_three_instances_spend_exactly_what_the_wallet_has() {
    let gws = instances(3).await;
    let affordable = 10;
    let (payer_id, _, key) = agent_everywhere(&gws, "payer", affordable * P).await;
    let (seller_id, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let mut requests = Vec::new();
    for i in 0..64 {
        let inv = invoice(&seller, P).await;
        requests.push(pay_request(&gws[i % gws.len()], &key, &inv.bolt11, None));
    }
    let replies = all_at_once(requests).await;

    let paid = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    assert_eq!(paid, affordable as usize, "{replies:?}");
    for r in &refused {
        assert_eq!(r.code(), Some("insufficient-balance"), "{r:?}");
    }
    for gw in &gws {
        let balances = gw.balances().await;
        assert_eq!(balances[&payer_id], 0, "seen from {}", gw.url());
        assert_eq!(balances[&seller_id], affordable * P, "seen from {}", gw.url());
    }
    let (ok, report) = gws[2].audit().await;
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_every_instance_pays_once() {
    let gws = instances(3).await;
    let (payer_id, payer, key) = agent_everywhere(&gws, "payer", 50 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let inv = invoice(&seller, 3 * P).await;
    let requests = (0..12).map(|i| pay_request(&gws[i % gws.len()], &key, &inv.bolt11, Some("once"))).collect();
    let replies = all_at_once(requests).await;

    let first = &replies[0];
    assert_eq!(first.status, 200, "{first:?}");
    for r in &replies {
        assert_eq!((r.status, &r.json), (first.status, &first.json), "every instance answers the one payment");
    }
    assert_eq!(gws[1].payment_count(&payer).await, 1);
    assert_eq!(gws[0].balances().await[&payer_id], 47 * P);
    // The same key with another request is refused on any instance.
    let other = invoice(&seller, P).await;
    let conflict = send(pay_request(&gws[2], &key, &other.bolt11, Some("once"))).await;
    assert_eq!(conflict.code(), Some("idempotency-conflict"), "{conflict:?}");
    let (ok, report) = gws[0].audit().await;
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_created_or_revoked_on_one_instance_is_honoured_on_the_other_at_once() {
    let gws = instances(2).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (agent_id, _, first_key) = agent_everywhere(&gws, "agent", 5 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    // B refused the secret before it existed; that does not stick.
    assert_eq!(wallet_status(b, "not-yet-a-key").await, 401);
    let created = a.operator().create_key(&agent_id, coffer_client::Scope::Spend).await.expect("a new key");
    assert_eq!(wallet_status(b, &created.key).await, 200, "B knows A's new key at once");
    let inv = invoice(&seller, P).await;
    let paid = send(pay_request(b, &created.key, &inv.bolt11, None)).await;
    assert_eq!(paid.status, 200, "B lets A's new key spend at once: {paid:?}");

    a.operator().revoke_key(&created.id).await.expect("revoking on A");
    assert_eq!(wallet_status(a, &created.key).await, 401, "A refuses its revoked key at once");
    assert_eq!(wallet_status(b, &created.key).await, 401, "B refuses A's revoked key at once");
    let inv = invoice(&seller, P).await;
    let refused = send(pay_request(b, &created.key, &inv.bolt11, None)).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(b.balances().await[&agent_id], 4 * P, "only the payment before the revocation");
    // The other key of the agent is untouched.
    assert_eq!(wallet_status(b, &first_key).await, 200);
}

/// Signing keys are read from the database like bearer keys: a required
/// key registered on A makes B refuse the agent's unsigned spend at once,
/// and once it is revoked on A, B refuses its signatures at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signing_key_registered_or_revoked_on_one_instance_rules_the_other_at_once() {
    use coffer_client::signing::Signer;
    let gws = instances(2).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (agent_id, agent, key) = agent_everywhere(&gws, "agent", 5 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let seed = [9u8; 32];
    let public_key = {
        use base64::Engine as _;
        let probe = Signer::ed25519("probe", &seed).expect("a signer");
        base64::engine::general_purpose::STANDARD.encode(probe.public_key())
    };
    let request = coffer_client::CreateSigningKeyRequest { alg: None, public_key, required: true };
    let registered = agent.create_signing_key(&agent_id, &request).await.expect("registered on A");
    let inv = invoice(&seller, P).await;
    let unsigned = send(pay_request(b, &key, &inv.bolt11, None)).await;
    assert_eq!((unsigned.status, unsigned.code()), (401, Some("signature-required")), "{unsigned:?}");

    let signer = std::sync::Arc::new(Signer::ed25519(&registered.id, &seed).expect("a signer"));
    let on_b = coffer_client::Client::new(b.url(), &key).expect("a client").with_signer(std::sync::Arc::clone(&signer));
    let paid = on_b
        .pay(&coffer_client::PayRequest { bolt11: inv.bolt11.clone(), ..Default::default() }, &inv.payment_hash)
        .await;
    assert!(paid.is_ok(), "B accepts a signature by A's new key at once: {paid:?}");

    let on_a = coffer_client::Client::new(a.url(), &key).expect("a client").with_signer(signer);
    on_a.revoke_signing_key(&agent_id, &registered.id).await.expect("revoked on A");
    let inv = invoice(&seller, P).await;
    let refused = on_b
        .pay(&coffer_client::PayRequest { bolt11: inv.bolt11.clone(), ..Default::default() }, &inv.payment_hash)
        .await;
    assert_eq!(refused.as_ref().err().and_then(|e| e.code()), Some("signature-invalid"), "{refused:?}");
    assert_eq!(b.balances().await[&agent_id], 4 * P, "only the signed payment before the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_payments_expire_once_though_every_instance_runs_the_expiry_job() {
    let gws = instances(3).await;
    let (payer_id, payer, key) = agent_everywhere(&gws, "payer", 100 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    gws[0].operator().set_policy(&payer_id, &json!({"approval_above_msat": P})).await.expect("setting the policy");
    // Holds whose invoices end in two seconds: every instance's expiry job
    // then finds them due at about the same time.
    let mut held = Vec::new();
    while held.len() < 6 {
        let inv = invoice_expiring(&seller, 2 * P, 2).await;
        let r = send(pay_request(&gws[held.len() % gws.len()], &key, &inv.bolt11, None)).await;
        if r.code() == Some("invoice-expired") {
            continue;
        }
        assert_eq!((r.status, r.json["status"].as_str()), (202, Some("held")), "{r:?}");
        held.push(r.json["id"].as_str().expect("an approval id").to_owned());
        assert!(held.len() < 100, "could not hold six payments");
    }
    assert_eq!(payer.wallet().await.expect("the wallet").pending_msat, 12 * P);

    let start = Instant::now();
    loop {
        let pending = gws[1].operator().approvals().await.expect("listing approvals");
        if pending.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give every instance's job a few more rounds to do harm, if it would.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let w = payer.wallet().await.expect("the wallet");
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (100 * P, 0, 100 * P));
    let trail = gws[2].audit_all(&format!("agent_id={payer_id}&action=approval.expired")).await;
    let mut expired: Vec<&str> = trail.iter().filter_map(|r| r.record["rule"].as_str()).collect();
    expired.sort_unstable();
    let mut want: Vec<&str> = held.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(expired, want, "each hold expired exactly once");
    assert_eq!(gws[0].events("approval.decided").await.len(), held.len());
    let (ok, report) = gws[0].audit().await;
    assert!(ok, "{report}");
}

/// Every instance sweeps expired invoices each second; the database decides:
/// each invoice ends either paid or expired, never both, and an expired one
/// has exactly one `invoice.expired` event. Payments race the expiry from
/// every instance around the moment it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoices_expire_once_though_every_instance_sweeps_and_payments_race_the_expiry() {
    const INVOICES: usize = 12;
    let gws = instances(3).await;
    let (payer_id, _, key) = agent_everywhere(&gws, "payer", 100 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let mut invoices = Vec::new();
    for _ in 0..INVOICES {
        invoices.push(invoice_expiring(&seller, P, 3).await);
    }
    // Payments spread over the two seconds around each invoice's expiry,
    // each on another instance than the last: some come in time, some too
    // late, a few at about the moment the sweeps run.
    let mut racing = Vec::new();
    for (i, inv) in invoices.iter().enumerate() {
        let rb = pay_request(&gws[i % gws.len()], &key, &inv.bolt11, None);
        let expires_at = chrono::DateTime::parse_from_rfc3339(&inv.expires_at).expect("an RFC 3339 time");
        let offset_ms = i as i64 * 2_000 / (INVOICES as i64 - 1) - 1_000;
        let at_ms = expires_at.timestamp_millis() + offset_ms;
        racing.push(tokio::spawn(async move {
            let wait_ms = at_ms - chrono::Utc::now().timestamp_millis();
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))).await;
            send(rb).await
        }));
    }
    let mut paid = Vec::new();
    for (inv, task) in invoices.iter().zip(racing) {
        let r = task.await.expect("a payment task");
        match r.status {
            200 => paid.push(inv.payment_hash.clone()),
            _ => assert_eq!(r.code(), Some("invoice-expired"), "{r:?}"),
        }
    }

    eprintln!("{} of {INVOICES} invoices paid in time, the others too late", paid.len());
    // Every unpaid invoice is swept, once, whichever instance does it.
    let unpaid: Vec<&str> =
        invoices.iter().map(|i| i.payment_hash.as_str()).filter(|h| !paid.iter().any(|p| p == h)).collect();
    let start = Instant::now();
    while gws[0].events("invoice.expired").await.len() < unpaid.len() {
        assert!(start.elapsed() < Duration::from_secs(30), "not every unpaid invoice expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give every instance's sweep a few more rounds to do harm, if it would.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut expired: Vec<String> = gws[1]
        .events("invoice.expired")
        .await
        .into_iter()
        .map(|(_, data)| data["payment_hash"].as_str().expect("a payment hash").to_owned())
        .collect();
    expired.sort_unstable();
    let mut want: Vec<String> = unpaid.iter().map(|h| (*h).to_owned()).collect();
    want.sort_unstable();
    assert_eq!(expired, want, "each unpaid invoice expired exactly once, and no paid one");
    for inv in &invoices {
        let stored = gws[2].stored_invoice_status(&inv.payment_hash);
        let wanted = if paid.contains(&inv.payment_hash) { "paid" } else { "expired" };
        assert_eq!(stored.as_deref(), Some(wanted), "{}", inv.payment_hash);
    }
    assert_eq!(gws[0].balances().await[&payer_id], 100 * P - paid.len() as u64 * P);
    let (ok, report) = gws[0].audit().await;
    assert!(ok, "{report}");
}

/// A freeze and the kill switch set on A stop the next payment on B, and
/// lifting them on A lets B pay again: both are read in the paying
/// transaction, so no instance serves them from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_and_the_kill_switch_set_on_one_instance_stop_the_other_at_once() {
    let gws = instances(2).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (payer_id, _, key) = agent_everywhere(&gws, "payer", 100 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let pay_on_b = || async {
        let inv = invoice(&seller, P).await;
        send(pay_request(b, &key, &inv.bolt11, None)).await
    };
    assert_eq!(pay_on_b().await.status, 200);

    a.operator().freeze(&payer_id, Some("across instances")).await.expect("frozen on A");
    pay_on_b().await.assert_problem(403, "agent-frozen");
    a.operator().unfreeze(&payer_id).await.expect("unfrozen on A");
    assert_eq!(pay_on_b().await.status, 200);

    a.operator().set_halted(true).await.expect("halted on A");
    pay_on_b().await.assert_problem(403, "gateway-halted");
    a.operator().set_halted(false).await.expect("resumed on A");
    assert_eq!(pay_on_b().await.status, 200);
    assert_eq!(b.balances().await[&payer_id], 97 * P, "three payments, none while stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_changed_on_one_instance_rules_the_next_payment_on_the_other() {
    let gws = instances(2).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (payer_id, _, key) = agent_everywhere(&gws, "payer", 100 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    a.operator().set_policy(&payer_id, &json!({"approval_above_msat": 10 * P})).await.expect("a policy");
    // B pays under the first policy, so it has parsed (and cached) it.
    let inv = invoice(&seller, 2 * P).await;
    let paid = send(pay_request(b, &key, &inv.bolt11, None)).await;
    assert_eq!(paid.status, 200, "{paid:?}");

    a.operator().set_policy(&payer_id, &json!({"approval_above_msat": P})).await.expect("a stricter policy");
    // At once, no waiting: B reads the policy's revision in the paying
    // transaction.
    let inv = invoice(&seller, 2 * P).await;
    let held = send(pay_request(b, &key, &inv.bolt11, None)).await;
    assert_eq!((held.status, held.json["status"].as_str()), (202, Some("held")), "{held:?}");
}

/// `coffer audit` with `COFFER_DATABASE_URL` checks the PostgreSQL store
/// for real: a record or a balance changed behind the gateway's back fails
/// it, and it passes again once repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coffer_audit_on_postgres_catches_a_rewritten_record_and_a_tampered_balance() {
    let gw = Gateway::start_postgres().await;
    let (_, _, key) = gw.new_agent("payer", 50 * P).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    let inv = invoice(&seller, 3 * P).await;
    let paid = send(pay_request(&gw, &key, &inv.bolt11, None)).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
    let db = gw.database().expect("a PostgreSQL gateway");

    let found = db.query("SELECT seq::text, encode(body, 'hex') FROM audit_log WHERE action = 'payment.allowed'", &[]);
    let seq = found[0][0].clone().expect("the payment's audit record");
    let stored = found[0][1].clone().expect("its body");
    // The body is stored packed: rewritten, it is stored as text.
    let text = coffer_core::pack::json::unpack(&hex::decode(&stored).expect("hex")).expect("a stored body");
    let forged = text.replace("across instances", "across the sea");
    assert_ne!(forged, text);
    let rewrite = "UPDATE audit_log SET body = convert_to($2, 'UTF8') WHERE seq = $1::text::bigint RETURNING seq::text";
    assert_eq!(db.query(rewrite, &[&seq, &forged]).len(), 1);
    let (ok, report) = gw.audit().await;
    assert!(!ok, "a rewritten record passed the audit: {report}");
    assert!(report.contains(&format!("audit trail broken at record {seq}")), "{report}");
    let repair = "UPDATE audit_log SET body = decode($2, 'hex') WHERE seq = $1::text::bigint RETURNING seq::text";
    assert_eq!(db.query(repair, &[&seq, &stored]).len(), 1);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");

    let tamper = |delta: &str| {
        let sql = "UPDATE accounts SET credits_posted = credits_posted + $1::text::bigint \
                   WHERE id = (SELECT MIN(id) FROM accounts WHERE kind = 'wallet') RETURNING id::text";
        assert_eq!(db.query(sql, &[delta]).len(), 1);
    };
    tamper("1");
    let (ok, report) = gw.audit().await;
    assert!(!ok, "a wallet credited 1 msat out of nowhere passed the audit: {report}");
    tamper("-1");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}

/// A connection PostgreSQL drops (a restart, an administrator) costs at
/// most the requests that were on it: the writer and the readers connect
/// again, and a retry with the same Idempotency-Key pays once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_reconnects_after_postgres_drops_its_connections() {
    let gw = Gateway::start_postgres().await;
    let (payer_id, payer, key) = gw.new_agent("payer", 50 * P).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    let db = gw.database().expect("a PostgreSQL gateway");
    let dropped = db.query(
        "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name LIKE 'coffer-%'",
        &[],
    );
    assert!(dropped.len() >= 2, "the writer and a reader were connected: {dropped:?}");

    let inv = invoice_retrying(&gw, &seller).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        let r = send(pay_request(&gw, &key, &inv, Some("after-drop"))).await;
        let paid = r.status == 200;
        answers.push(r);
        if paid {
            break;
        }
    }
    let failed = &answers[..answers.len() - 1];
    assert_eq!(answers.last().map(|r| r.status), Some(200), "{answers:?}");
    assert!(failed.len() <= 2 && failed.iter().all(|r| r.status >= 500), "{answers:?}");
    assert_eq!(gw.payment_count(&payer).await, 1);
    assert_eq!(gw.balances().await[&payer_id], 47 * P);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}

/// An invoice of 3 sats; the first try may meet a dropped connection.
async fn invoice_retrying(gw: &Gateway, seller: &coffer_client::Client) -> String {
    for _ in 0..3 {
        let request = coffer_client::CreateInvoiceRequest {
            amount_msat: 3 * P,
            memo: None,
            expiry_secs: None,
            ..Default::default()
        };
        match seller.create_invoice(&request).await {
            Ok(inv) => return inv.bolt11,
            Err(e) => eprintln!("creating an invoice after the drop: {e}"),
        }
    }
    panic!("no invoice from {} after the connections dropped", gw.url());
}

/// One page of `GET /v1/events?after=` through `gw` with the operator's
/// token: the ids, and the cursor to go on from.
async fn event_ids_after(gw: &Gateway, token: &str, after: i64) -> (Vec<i64>, i64) {
    let page = send(gw.request(Method::GET, &format!("/v1/events?after={after}&limit=500"), Some(token))).await;
    assert_eq!(page.status, 200, "{page:?}");
    let ids =
        page.json["events"].as_array().expect("events").iter().map(|e| e["id"].as_i64().expect("an id")).collect();
    (ids, page.json["next_after"].as_i64().expect("next_after"))
}

/// Every event after `after`, page by page, through `gw`.
async fn all_event_ids(gw: &Gateway, token: &str) -> Vec<i64> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let (ids, next) = event_ids_after(gw, token, after).await;
        if ids.is_empty() {
            return all;
        }
        all.extend(ids);
        after = next;
    }
}

/// A consumer that follows `GET /v1/events?after=ID` while three instances
/// commit payments concurrently sees every event, in id order, exactly
/// once: no event becomes visible behind a cursor that already passed its
/// id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_events_consumer_following_after_id_misses_nothing_while_three_instances_commit() {
    let gws = instances(3).await;
    let token = gws[0].operator_token().to_owned();
    let mut pairs = Vec::new();
    for i in 0..3 {
        let (_, _, payer) = agent_everywhere(&gws, &format!("payer {i}"), 100 * P).await;
        let (_, seller, _) = agent_everywhere(&gws, &format!("seller {i}"), 0).await;
        pairs.push((payer, seller));
    }
    let (_, start) = event_ids_after(&gws[0], &token, 0).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (gws_urls, token, done) =
            (gws.iter().map(|g| g.url().to_owned()).collect::<Vec<_>>(), token.clone(), done.clone());
        let http = gws[0].http().clone();
        tokio::spawn(async move {
            let (mut seen, mut after, mut i) = (Vec::new(), start, 0usize);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let url = format!("{}/v1/events?after={after}&limit=500", gws_urls[i % gws_urls.len()]);
                i += 1;
                let page: serde_json::Value =
                    http.get(url).bearer_auth(&token).send().await.expect("a page").json().await.expect("JSON");
                let ids: Vec<i64> = page["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| e["id"].as_i64().expect("an id"))
                    .collect();
                if ids.is_empty() && finished {
                    return seen;
                }
                if ids.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                after = page["next_after"].as_i64().expect("next_after");
                seen.extend(ids);
            }
        })
    };
    let mut payments = Vec::new();
    for round in 0..10 {
        for (i, (payer, seller)) in pairs.iter().enumerate() {
            let inv = invoice(seller, P).await;
            payments.push(pay_request(&gws[(round + i) % gws.len()], payer, &inv.bolt11, None));
        }
    }
    let replies = all_at_once(payments).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = consumer.await.expect("the consumer");

    let all: Vec<i64> = all_event_ids(&gws[1], &token).await.into_iter().filter(|id| *id > start).collect();
    assert!(all.len() >= 60, "each payment wrote events: {}", all.len());
    assert_eq!(seen, all, "the consumer saw every event once, in order");
    let (ok, report) = gws[2].audit().await;
    assert!(ok, "{report}");
}

/// A transaction of someone else's, left open on this database: it runs
/// `statements` on a thread of its own, says when they ran, and ends
/// (`COMMIT` or `ROLLBACK`, as told) when told.
struct OpenTransaction {
    end: std::sync::mpsc::Sender<&'static str>,
    thread: std::thread::JoinHandle<()>,
}

impl OpenTransaction {
    fn begin(url: &str, statements: String) -> OpenTransaction {
        let (began_tx, began) = std::sync::mpsc::channel();
        let (end, end_rx) = std::sync::mpsc::channel::<&'static str>();
        let url = url.to_owned();
        let thread = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connecting");
            client.batch_execute(&format!("BEGIN; {statements}")).expect("the open transaction's statements");
            began_tx.send(()).expect("telling it began");
            let how = end_rx.recv().unwrap_or("ROLLBACK");
            client.batch_execute(how).expect("ending the open transaction");
        });
        began.recv().expect("the open transaction began");
        OpenTransaction { end, thread }
    }

    fn end(self, how: &'static str) {
        self.end.send(how).expect("telling it to end");
        self.thread.join().expect("the open transaction's thread");
    }
}

/// The sealer's transaction-scoped advisory lock (`store/postgres/mod.rs`):
/// a test that holds it keeps every instance from numbering what commits.
const SEAL_LOCK: i64 = 0x636f_6666_6572_0002;

/// A new webhook starts "now": after every event committed before it was
/// asked for, even one the sealer had not numbered yet (which then gets a
/// higher id than the newest numbered one): none of them is taken for new.
/// The same start serves live streams and the buses' feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_webhook_starts_after_the_events_committed_before_it_though_not_yet_numbered() {
    let gw = Gateway::start_postgres_with_env(&[], &[("COFFER_EGRESS_ALLOW", "127.0.0.1")]).await;
    let token = gw.operator_token().to_owned();
    let db = gw.database().expect("a PostgreSQL gateway");
    let sealer_held = OpenTransaction::begin(&db.url, format!("SELECT pg_advisory_xact_lock({SEAL_LOCK})"));
    // Its events commit, and wait for the sealer.
    let (agent_id, _, _) = gw.new_agent("before the webhook", 5 * P).await;
    // Port 9 on loopback: deliveries fail, which does not matter here.
    let body = json!({"url": "http://127.0.0.1:9/hook"});
    let create = tokio::spawn(send(gw.request(Method::POST, "/v1/webhooks", Some(&token)).json(&body)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(move || sealer_held.end("ROLLBACK")).await.expect("the sealer let go");
    let created = create.await.expect("the request");
    assert_eq!(created.status, 201, "{created:?}");
    let start = created.json["delivered_through"].as_i64().expect("the webhook's start");

    let page = send(gw.request(Method::GET, "/v1/events?after=0", Some(&token))).await;
    let agents: Vec<i64> = page.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["agent_id"] == agent_id.as_str())
        .map(|e| e["id"].as_i64().expect("an id"))
        .collect();
    assert!(!agents.is_empty(), "the agent's events: {page:?}");
    assert!(agents.iter().all(|id| *id <= start), "the webhook starts at {start}, before the agent's {agents:?}");
}

/// No lock is shared by the instances: while another transaction holds one
/// agent's rows (its agent row and its account), two instances go on
/// committing payments of other agents, and the held agent's own payment
/// waits for its rows, then commits once they are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_of_other_agents_commit_on_two_instances_while_a_transaction_holds_one_agents_rows() {
    let gws = instances(2).await;
    let (held_id, _, held_key) = agent_everywhere(&gws, "held", 10 * P).await;
    let (free_id, _, free_key) = agent_everywhere(&gws, "free", 10 * P).await;
    let (_, seller_of_held, _) = agent_everywhere(&gws, "seller of held", 0).await;
    let (seller_id, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let db = gws[0].database().expect("a PostgreSQL gateway");
    let lock = format!(
        "SELECT 1 FROM agents WHERE id = '{held_id}' FOR UPDATE; \
         SELECT 1 FROM accounts WHERE id = (SELECT account_id FROM agents WHERE id = '{held_id}') FOR UPDATE;"
    );
    let open = OpenTransaction::begin(&db.url, lock);

    let inv = invoice(&seller_of_held, 2 * P).await;
    let held_payment = tokio::spawn(send(pay_request(&gws[0], &held_key, &inv.bolt11, None)));
    for i in 0..6 {
        let inv = invoice(&seller, P).await;
        let paid = send(pay_request(&gws[i % 2], &free_key, &inv.bolt11, None)).await;
        assert_eq!(paid.status, 200, "a payment of another agent, through instance {}: {paid:?}", i % 2);
    }
    let balances = gws[1].balances().await;
    assert_eq!((balances[&free_id], balances[&seller_id]), (4 * P, 6 * P));
    assert!(!held_payment.is_finished(), "the held agent's payment did not wait for its rows");

    open.end("ROLLBACK");
    let paid = held_payment.await.expect("the held agent's payment");
    assert_eq!(paid.status, 200, "once its rows were free: {paid:?}");
    assert_eq!(gws[0].balances().await[&held_id], 8 * P);
    let (ok, report) = gws[1].audit().await;
    assert!(ok, "{report}");
}

/// An audit record and an event written first but committed last (another
/// transaction left open meanwhile) are numbered after everything already
/// read: a consumer past the newest event id still gets the late one, and
/// the audit chain takes the late record in as its newest link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_and_an_audit_record_that_commit_late_are_numbered_after_those_already_read() {
    let gws = instances(2).await;
    let token = gws[0].operator_token().to_owned();
    let db = gws[0].database().expect("a PostgreSQL gateway");
    let late = OpenTransaction::begin(
        &db.url,
        "INSERT INTO event_kinds (name) VALUES ('late.event'); \
         INSERT INTO events (kind, agent, data, created_at) \
         VALUES ((SELECT code FROM event_kinds WHERE name = 'late.event'), NULL, '{}', 1); \
         INSERT INTO audit_log (at, agent, action, body) VALUES (1, NULL, 'late.record', '{\"late\":true}');"
            .to_owned(),
    );
    let (_, _, payer) = agent_everywhere(&gws, "payer", 10 * P).await;
    let (_, seller, _) = agent_everywhere(&gws, "seller", 0).await;
    let inv = invoice(&seller, P).await;
    assert_eq!(send(pay_request(&gws[1], &payer, &inv.bolt11, None)).await.status, 200);
    let read = all_event_ids(&gws[1], &token).await;
    let newest = *read.last().expect("the payment's events");

    // Its statements ran before the payment's: its rows were written first.
    late.end("COMMIT");
    let page = send(gws[0].request(Method::GET, &format!("/v1/events?after={newest}"), Some(&token))).await;
    let kinds: Vec<&str> =
        page.json["events"].as_array().expect("events").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["late.event"], "the late event comes after the newest one read: {page:?}");
    let (ok, report) = gws[0].audit().await;
    assert!(ok, "{report}");
    let last = db.query("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1", &[]);
    assert_eq!(last[0][0].as_deref(), Some("late.record"), "the late record is the newest link");
}

/// Every event as the operator reads it (`GET /v1/events`, every field),
/// and those `key` reads: its agent's.
async fn every_event(gw: &Gateway, key: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut read = Vec::new();
    for token in [gw.operator_token(), key] {
        let page = send(gw.request(Method::GET, "/v1/events?after=0&limit=500", Some(token))).await;
        assert_eq!(page.status, 200, "{page:?}");
        read.push(page.json["events"].as_array().expect("events").clone());
    }
    let mine = read.pop().unwrap_or_default();
    (read.pop().unwrap_or_default(), mine)
}

/// The audit records `query` finds, as `(seq, hash, record)`.
async fn audit(gw: &Gateway, query: &str) -> Vec<(i64, String, serde_json::Value)> {
    gw.audit_all(query).await.into_iter().map(|r| (r.seq, r.hash, r.record)).collect()
}

/// Schema 18 names an event's kind and agent, and an audit record's agent,
/// by integers. A PostgreSQL store of schema 17 with payments behind it,
/// put back in that shape by hand, upgrades with every event and record
/// read as before (ids, kinds, agents, filters), passes `coffer audit`,
/// and numbers its next events after the old ones.
#[tokio::test]
async fn a_store_of_schema_17_on_postgres_upgrades_to_integer_kinds_and_agents() {
    let mut gw = Gateway::start_postgres().await;
    let (buyer_id, _, key) = gw.new_agent("buyer", 50 * P).await;
    let (_, seller, _) = gw.new_agent("seller", 0).await;
    for _ in 0..3 {
        let inv = invoice(&seller, P).await;
        assert_eq!(send(pay_request(&gw, &key, &inv.bolt11, None)).await.status, 200);
    }
    let (events, mine) = every_event(&gw, &key).await;
    let trail = audit(&gw, "").await;
    let buyers = audit(&gw, &format!("agent_id={buyer_id}")).await;
    assert!(events.len() > 6 && mine.len() >= 3 && !buyers.is_empty(), "{events:#?}");
    gw.kill9().await;

    // Migrations 19 and 18 undone: the texts back in their rows, the
    // integers gone.
    let db = gw.database().expect("a PostgreSQL gateway");
    undo_migration_19(db);
    for sql in [
        "ALTER TABLE events ADD COLUMN type TEXT, ADD COLUMN agent_id TEXT",
        "UPDATE events e SET type = (SELECT k.name FROM event_kinds k WHERE k.code = e.kind), \
         agent_id = (SELECT a.id FROM agents a WHERE a.account_id = e.agent)",
        "DROP INDEX events_by_agent",
        "ALTER TABLE events DROP COLUMN kind, DROP COLUMN agent, ALTER COLUMN type SET NOT NULL",
        "CREATE INDEX events_by_agent ON events (agent_id, id)",
        "DROP TABLE event_kinds",
        "ALTER TABLE audit_log ADD COLUMN agent_id TEXT",
        "UPDATE audit_log l SET agent_id = COALESCE((SELECT a.id FROM agents a WHERE a.account_id = l.agent), agent_text)",
        "DROP INDEX audit_by_agent",
        "ALTER TABLE audit_log DROP COLUMN agent, DROP COLUMN agent_text",
        "CREATE INDEX audit_by_agent ON audit_log (agent_id, seq)",
        "UPDATE coffer_schema SET version = 17",
    ] {
        db.query(sql, &[]);
    }
    let columns = "SELECT string_agg(column_name, ',' ORDER BY column_name)::text FROM information_schema.columns \
                   WHERE table_name = $1";
    let shape = |table: &str| db.query(columns, &[table])[0][0].clone().unwrap_or_default();
    assert_eq!(shape("events"), "agent_id,created_at,data,id,pos,type", "schema 17's events");
    assert!(shape("audit_log").contains("agent_id") && !shape("audit_log").contains("agent,"), "schema 17's audit");

    gw.restart().await;
    let db = gw.database().expect("a PostgreSQL gateway");
    let version = db.query("SELECT version::text FROM coffer_schema", &[]);
    assert_eq!(version[0][0].as_deref(), Some(coffer::store::SCHEMA_VERSION.to_string().as_str()));
    assert_eq!(every_event(&gw, &key).await, (events.clone(), mine), "the events read as before");
    assert_eq!(audit(&gw, "").await, trail, "the audit trail reads as before");
    assert_eq!(audit(&gw, &format!("agent_id={buyer_id}")).await, buyers, "and filters by agent");
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");

    let seller = gw.client(&gw.new_agent("seller2", 0).await.2);
    let inv = invoice(&seller, P).await;
    assert_eq!(send(pay_request(&gw, &key, &inv.bolt11, None)).await.status, 200);
    let (after, _) = every_event(&gw, &key).await;
    let newest_before = events.last().and_then(|e| e["id"].as_i64()).expect("an id");
    assert!(after.len() > events.len() && after[events.len()..].iter().all(|e| e["id"].as_i64() > Some(newest_before)));
}

/// Puts a store of schema 19 back in schema 18's shape: payments, invoices
/// and idempotency keys name their agents by id again.
fn undo_migration_19(db: &common::TestDatabase) {
    let agent_of = |column: &str| {
        format!(
            "COALESCE((SELECT a.id FROM agents a WHERE a.account_id = {column}), \
             CASE WHEN {column} = 2 THEN 'treasury' END)"
        )
    };
    for sql in [
        "ALTER TABLE invoices ADD COLUMN agent_id TEXT".to_owned(),
        format!(
            "UPDATE invoices i SET agent_id = {}, paid_by = COALESCE({}, paid_by)",
            agent_of("i.account_id"),
            agent_of("i.payer")
        ),
        "DROP INDEX invoices_by_agent".into(),
        "DROP INDEX invoices_open_by_agent".into(),
        "ALTER TABLE invoices DROP COLUMN payer, ALTER COLUMN agent_id SET NOT NULL".into(),
        "CREATE INDEX invoices_by_agent ON invoices (agent_id, seq)".into(),
        "CREATE INDEX invoices_open_by_agent ON invoices (agent_id, expires_at) WHERE status = 'open'".into(),
        "ALTER TABLE payments ADD COLUMN agent_id TEXT, ADD COLUMN payee_agent_id TEXT".into(),
        format!("UPDATE payments p SET agent_id = {}, payee_agent_id = {}", agent_of("p.agent"), agent_of("p.payee")),
        "DROP INDEX payments_by_agent".into(),
        "ALTER TABLE payments DROP COLUMN agent, DROP COLUMN payee, ALTER COLUMN agent_id SET NOT NULL".into(),
        "CREATE INDEX payments_by_agent ON payments (agent_id, seq)".into(),
        "ALTER TABLE idempotency ADD COLUMN agent_id TEXT".into(),
        format!("UPDATE idempotency k SET agent_id = {}", agent_of("k.agent")),
        "ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey".into(),
        "ALTER TABLE idempotency DROP COLUMN agent, ALTER COLUMN agent_id SET NOT NULL".into(),
        "ALTER TABLE idempotency ADD PRIMARY KEY (agent_id, key)".into(),
        "UPDATE coffer_schema SET version = 18".into(),
    ] {
        db.query(&sql, &[]);
    }
}

/// Everything a payment leaves that schema 19 stores by account id, as the
/// API reads it: each agent's payments and invoices, in full.
async fn payments_and_invoices(gw: &Gateway, keys: &[&str]) -> Vec<serde_json::Value> {
    let mut read = Vec::new();
    for key in keys {
        for path in ["/v1/payments?limit=100", "/v1/invoices?limit=100"] {
            let page = send(gw.request(Method::GET, path, Some(key))).await;
            assert_eq!(page.status, 200, "{page:?}");
            read.push(page.json.clone());
        }
    }
    read
}

/// Schema 19 names the agents of payments, invoices and idempotency keys
/// by account id. A PostgreSQL store of schema 18 with payments behind it,
/// put back in that shape by hand, upgrades with every payment and invoice
/// read as before, keeps its idempotency keys (a retry pays nothing again)
/// and its invoices' payers, and passes `coffer audit`.
#[tokio::test]
async fn a_store_of_schema_18_on_postgres_upgrades_to_integer_payers_and_payees() {
    let mut gw = Gateway::start_postgres().await;
    let (_, _, key) = gw.new_agent("buyer", 50 * P).await;
    let (_, seller, seller_key) = gw.new_agent("seller", 0).await;
    let mut paid = Vec::new();
    for i in 0..3 {
        let inv = invoice(&seller, P).await;
        let r = send(pay_request(&gw, &key, &inv.bolt11, Some(&format!("retry-{i}")))).await;
        assert_eq!(r.status, 200, "{r:?}");
        paid.push((inv.bolt11, r.json["id"].clone()));
    }
    let open = invoice(&seller, 2 * P).await;
    let before = payments_and_invoices(&gw, &[&key, &seller_key]).await;
    let balances = gw.balances().await;
    gw.kill9().await;

    let db = gw.database().expect("a PostgreSQL gateway");
    undo_migration_19(db);
    let columns = "SELECT string_agg(column_name, ',' ORDER BY column_name)::text FROM information_schema.columns \
                   WHERE table_name = $1";
    let shape = |table: &str| db.query(columns, &[table])[0][0].clone().unwrap_or_default();
    assert!(shape("payments").contains("payee_agent_id") && !shape("payments").contains("payee,"), "schema 18's");
    assert_eq!(shape("idempotency"), "agent_id,created_at,key,payment_id,request_digest", "schema 18's keys");

    gw.restart().await;
    let db = gw.database().expect("a PostgreSQL gateway");
    let version = db.query("SELECT version::text FROM coffer_schema", &[]);
    assert_eq!(version[0][0].as_deref(), Some(coffer::store::SCHEMA_VERSION.to_string().as_str()));
    assert_eq!(payments_and_invoices(&gw, &[&key, &seller_key]).await, before, "read as before");
    // The keys hold: each retry answers its payment and pays nothing.
    for (i, (bolt11, id)) in paid.iter().enumerate() {
        let r = send(pay_request(&gw, &key, bolt11, Some(&format!("retry-{i}")))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(&r.json["id"], id, "{r:?}");
    }
    assert_eq!(gw.balances().await, balances);
    // The open invoice is still the seller's, and paid now by the buyer:
    // every paid invoice names the buyer's account as its payer.
    assert_eq!(send(pay_request(&gw, &key, &open.bolt11, None)).await.status, 200);
    let payers = db.query(
        "SELECT (SELECT a.name FROM agents a WHERE a.account_id = i.payer), paid_by, status FROM invoices i \
         ORDER BY seq",
        &[],
    );
    let expected: Vec<Vec<Option<String>>> =
        (0..4).map(|_| vec![Some("buyer".into()), None, Some("paid".into())]).collect();
    assert_eq!(payers, expected);
    let (ok, report) = gw.audit().await;
    assert!(ok, "{report}");
}
