//! Held payments to invoices of other nodes: above the approval threshold
//! an outside payment waits for a person like one inside the gateway. The
//! hold reserves amount plus fee limit and counts them in the budgets;
//! approved, it is decided again and sent through the scripted backend
//! exactly once (also when approved twice at once, or when the process dies
//! with the backend call in flight); denied or expired, it is released.
//! `coffer audit` passes after each. Runs on PostgreSQL too
//! (`COFFER_TEST_STORE=postgres`), where the double approval comes from two
//! instances.

mod common;
#[path = "common/fake_lnbits.rs"]
mod fake_lnbits;

use coffer::payment::bolt11::Network;
use coffer_client::{Approval, PaymentStatus};
use coffer_core::Msat;
use common::lightning::{assert_audit, other_node, payment, wait_for};
use common::{Gateway, Reply, all_at_once, first_window, postgres_mode, send};
use fake_lnbits::{Fake, Lookup, PayMode, funded_agent, start_gateway};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const FUND: u64 = 300_000;
const AMOUNT: u64 = 100_000;
/// The default fee limit of a 100 000 msat payment (1 %, at least 10 sat).
const FEE_LIMIT: u64 = 10_000;
const BUDGET: u64 = 1_000_000;

/// A funded agent whose payments above 10 000 msat wait for a person:
/// `(agent id, its key, its client)`.
async fn cautious_agent(gw: &Gateway, fake: &Fake) -> (String, String, coffer_client::Client) {
    let (key, agent) = funded_agent(gw, fake, FUND).await;
    let agent_id = agent.wallet().await.expect("the wallet").agent_id;
    let policy = json!({"approval_above_msat": 10_000,
        "budgets": [{"limit_msat": BUDGET, "window": "1h", "kind": "rolling"}]});
    gw.operator().set_policy(&agent_id, &policy).await.expect("setting the policy");
    (agent_id, key, agent)
}

#[track_caller]
fn assert_held(r: &Reply) -> String {
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!((r.json["status"].as_str(), r.json["reason"].as_str()), (Some("held"), Some("approval-required")));
    assert_eq!((r.json["amount_msat"].as_u64(), r.json["fee_limit_msat"].as_u64()), (Some(AMOUNT), Some(FEE_LIMIT)));
    assert!(r.json["payee_node"].as_str().is_some_and(|n| n.len() == 66), "{r:?}");
    r.json["id"].as_str().expect("an approval id").to_owned()
}

async fn wallet(agent: &coffer_client::Client) -> (u64, u64) {
    let w = agent.wallet().await.expect("the wallet");
    (w.balance_msat, w.pending_msat)
}

async fn spent(gw: &Gateway, agent_id: &str) -> u64 {
    first_window(&gw.operator().budget(agent_id).await.expect("the budget")).0
}

async fn approve_raw(gw: &Gateway, id: &str) -> Reply {
    send(gw.request(Method::POST, &format!("/v1/approvals/{id}/approve"), Some(gw.operator_token()))).await
}

async fn approval(gw: &Gateway, id: &str) -> Approval {
    let r = send(gw.request(Method::GET, "/v1/approvals?status=all", Some(gw.operator_token()))).await;
    let all: Vec<Approval> = serde_json::from_value(r.json).expect("a list of approvals");
    all.into_iter().find(|a| a.id == id).unwrap_or_else(|| panic!("no approval {id}"))
}

fn paid_id(approval_id: &str) -> String {
    approval_id.replacen("apr_", "pay_", 1)
}

#[tokio::test]
async fn a_held_outside_payment_is_paid_once_approved_at_the_real_fee() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (agent_id, key, agent) = cautious_agent(&gw, &fake).await;
    fake.set(PayMode::Succeed { fee_msat: 3_000 }, Lookup::NotFound);
    let (bolt11, hash) = fake.outside_invoice(AMOUNT);

    let first = gw.pay_raw(&key, &bolt11, "needs a person", Some("h1")).await;
    let id = assert_held(&first);
    assert_eq!(fake.pay_calls(&hash), 0, "nothing sent before the approval");
    assert_eq!(wallet(&agent).await, (FUND, AMOUNT + FEE_LIMIT), "amount plus fee limit reserved");
    assert_eq!(spent(&gw, &agent_id).await, AMOUNT + FEE_LIMIT);
    // A retry is the same hold; the same invoice under another key is
    // refused: one hold per outside invoice.
    assert_eq!(gw.pay_raw(&key, &bolt11, "needs a person", Some("h1")).await.json, first.json);
    gw.pay_raw(&key, &bolt11, "again", Some("h2")).await.assert_problem(409, "payment-held");
    assert_eq!(wallet(&agent).await, (FUND, AMOUNT + FEE_LIMIT), "reserved once");
    // Told like an internal hold: the agent's events and the queue.
    let events = send(gw.request(Method::GET, "/v1/events?after=0", Some(&key))).await;
    let held: Vec<_> =
        events.json["events"].as_array().expect("events").iter().filter(|e| e["type"] == "payment.held").collect();
    assert_eq!(held.len(), 1, "{events:?}");
    assert_eq!(
        (held[0]["data"]["approval_id"].as_str(), held[0]["data"]["payment_hash"].as_str()),
        (Some(&*id), Some(&*hash))
    );
    assert_eq!(held[0]["data"]["fee_limit_msat"].as_u64(), Some(FEE_LIMIT));
    assert_eq!(approval(&gw, &id).await.status, "pending");

    let decision = gw.operator().approve(&id).await.expect("approving");
    assert_eq!(
        (decision.approval.status.as_str(), decision.approval.payment_id.clone()),
        ("approved", Some(paid_id(&id)))
    );
    let paid = decision.payment.expect("the payment made");
    assert_eq!((paid.status, paid.amount_msat, paid.fee_msat), (PaymentStatus::Succeeded, AMOUNT, 3_000));
    assert_eq!(paid.preimage.as_deref(), fake.script.lock().unwrap().preimages.get(&hash).map(String::as_str));
    assert_eq!(wallet(&agent).await, (FUND - AMOUNT - 3_000, 0), "amount and real fee, the rest released");
    assert_eq!(spent(&gw, &agent_id).await, AMOUNT + 3_000, "counted once, at the real fee");

    // Nothing pays it again: a second approval, a retry, the same invoice.
    approve_raw(&gw, &id).await.assert_problem(409, "approval-not-pending");
    let retried = gw.pay_raw(&key, &bolt11, "needs a person", Some("h1")).await;
    assert_eq!((retried.status, retried.json["id"].as_str()), (200, Some(&*paid_id(&id))), "{retried:?}");
    gw.pay_raw(&key, &bolt11, "again", Some("h3")).await.assert_problem(409, "invoice-already-paid");
    assert_eq!(fake.pay_calls(&hash), 1);
    let trail = gw.audit_all(&format!("agent_id={agent_id}")).await;
    let actions: Vec<_> = trail.iter().filter_map(|r| r.record["action"].as_str()).collect();
    for action in ["payment.held", "approval.approved", "payment.allowed", "payment.settled"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_denied_or_expired_outside_hold_is_released_and_nothing_is_sent() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (agent_id, key, agent) = cautious_agent(&gw, &fake).await;
    let (bolt11, hash) = fake.outside_invoice(AMOUNT);
    let id = assert_held(&gw.pay_raw(&key, &bolt11, "deny me", None).await);
    let decision = gw.operator().deny(&id).await.expect("denying");
    assert_eq!((decision.approval.status.as_str(), decision.payment.is_none()), ("denied", true));
    assert_eq!(wallet(&agent).await, (FUND, 0));
    assert_eq!(spent(&gw, &agent_id).await, 0);
    approve_raw(&gw, &id).await.assert_problem(409, "approval-not-pending");
    assert_audit(&gw).await;

    // An invoice of two seconds: the hold ends with it. (BOLT11 expiry is
    // whole seconds, so it may have only one left: hold it at once.)
    let mut held = None;
    for _ in 0..3 {
        let bolt11 = short_lived_invoice(AMOUNT, 2);
        let r = gw.pay_raw(&key, &bolt11, "short-lived", None).await;
        if r.code() == Some("invoice-expired") {
            continue;
        }
        held = Some(assert_held(&r));
        break;
    }
    let short = held.expect("holding a fresh invoice before it expires");
    assert_eq!(wallet(&agent).await, (FUND, AMOUNT + FEE_LIMIT));
    let expired = wait_for("the hold to expire", || async {
        let a = approval(&gw, &short).await;
        (a.status == "expired").then_some(a)
    })
    .await;
    assert_eq!((expired.decided_by.as_deref(), expired.payment_id), (Some("system"), None));
    approve_raw(&gw, &short).await.assert_problem(409, "approval-not-pending");
    assert_eq!(wallet(&agent).await, (FUND, 0), "released");
    assert_eq!(spent(&gw, &agent_id).await, 0);
    assert_eq!(fake.pay_calls(&hash), 0);
    assert_eq!(fake.total_pay_calls(), 0, "nothing was sent");
    assert_audit(&gw).await;
}

/// An invoice of another node that expires after `expiry_secs`.
fn short_lived_invoice(amount_msat: u64, expiry_secs: u32) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let signed = other_node(Network::Bitcoin)
        .sign(Msat::new(amount_msat), "short", expiry_secs, Duration::from_secs(now.as_secs()))
        .expect("signing an invoice");
    signed.bolt11
}

#[tokio::test]
async fn an_approval_is_decided_again_a_freeze_a_halt_or_a_smaller_budget_stop_it() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    let (agent_id, key, agent) = cautious_agent(&gw, &fake).await;
    let op = gw.operator();
    let (bolt11, hash) = fake.outside_invoice(AMOUNT);
    let id = assert_held(&gw.pay_raw(&key, &bolt11, "wait", None).await);

    op.freeze(&agent_id, Some("hold on")).await.unwrap();
    approve_raw(&gw, &id).await.assert_problem(403, "agent-frozen");
    op.unfreeze(&agent_id).await.unwrap();
    op.set_halted(true).await.unwrap();
    approve_raw(&gw, &id).await.assert_problem(403, "gateway-halted");
    op.set_halted(false).await.unwrap();
    let smaller = json!({"budgets": [{"limit_msat": AMOUNT, "window": "1h", "kind": "rolling"}]});
    op.set_policy(&agent_id, &smaller).await.unwrap();
    approve_raw(&gw, &id).await.assert_problem(403, "budget-exceeded");
    // Each refusal left the hold as it was.
    assert_eq!(approval(&gw, &id).await.status, "pending");
    assert_eq!(wallet(&agent).await, (FUND, AMOUNT + FEE_LIMIT));
    assert_eq!(fake.pay_calls(&hash), 0);
    assert_audit(&gw).await;

    // A backend that fails it: the whole reserve comes back.
    op.set_policy(&agent_id, &json!({"approval_above_msat": 10_000})).await.unwrap();
    fake.set(PayMode::Fail, Lookup::NotFound);
    let failed = op.approve(&id).await.expect("approving").payment.expect("the payment");
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert_eq!(wallet(&agent).await, (FUND, 0));
    assert_eq!(fake.pay_calls(&hash), 1);
    assert_audit(&gw).await;
}

#[tokio::test]
async fn two_approvals_at_once_and_a_retry_pay_once() {
    let (fake, url) = Fake::start().await;
    let gw = start_gateway(&url).await;
    // On PostgreSQL the second approval comes from another instance.
    let other = if postgres_mode() { Some(gw.another_instance().await) } else { None };
    let (_, key, agent) = cautious_agent(&gw, &fake).await;
    fake.set(PayMode::Succeed { fee_msat: 1_000 }, Lookup::NotFound);
    let (bolt11, hash) = fake.outside_invoice(AMOUNT);
    let id = assert_held(&gw.pay_raw(&key, &bolt11, "race", Some("r1")).await);

    let second = other.as_ref().unwrap_or(&gw);
    let path = format!("/v1/approvals/{id}/approve");
    let retry = gw
        .request(Method::POST, "/v1/payments", Some(&key))
        .header("idempotency-key", "r1")
        .json(&json!({"bolt11": bolt11, "purpose": "race"}));
    let replies = all_at_once(vec![
        gw.request(Method::POST, &path, Some(gw.operator_token())),
        second.request(Method::POST, &path, Some(second.operator_token())),
        retry,
    ])
    .await;
    let approved: Vec<_> = replies[..2].iter().filter(|r| r.status == 200).collect();
    assert_eq!(approved.len(), 1, "{replies:?}");
    assert!(replies[..2].iter().any(|r| r.code() == Some("approval-not-pending")), "{replies:?}");
    assert_eq!(approved[0].json["payment"]["status"], "succeeded", "{replies:?}");
    assert!([200, 202].contains(&replies[2].status), "the retry answers the hold or its payment: {replies:?}");
    assert_eq!(fake.pay_calls(&hash), 1, "sent once");
    assert_eq!(wallet(&agent).await, (FUND - AMOUNT - 1_000, 0));
    assert_audit(&gw).await;
}

#[tokio::test]
async fn a_crash_after_the_approval_with_the_backend_call_in_flight_is_resolved_on_restart() {
    let (fake, url) = Fake::start().await;
    let mut gw = start_gateway(&url).await;
    let (_, key, agent) = cautious_agent(&gw, &fake).await;
    drop(agent);
    fake.set(PayMode::Hang, Lookup::Pending);
    let (bolt11, hash) = fake.outside_invoice(AMOUNT);
    let id = assert_held(&gw.pay_raw(&key, &bolt11, "crash", None).await);

    let approving =
        tokio::spawn(send(gw.request(Method::POST, &format!("/v1/approvals/{id}/approve"), Some(gw.operator_token()))));
    wait_for("the backend call", || async { (fake.pay_calls(&hash) == 1).then_some(()) }).await;
    gw.kill9().await;
    approving.abort();
    assert_audit(&gw).await;

    // The backend finished the payment meanwhile: the resolver learns it
    // before the restarted gateway serves.
    fake.set_lookup(Lookup::Succeeded { fee_msat: 2_000 });
    gw.restart().await;
    let agent = gw.client(&key);
    let done = payment(&agent, &paid_id(&id)).await;
    assert_eq!((done.status, done.fee_msat), (PaymentStatus::Succeeded, 2_000));
    assert_eq!(wallet(&agent).await, (FUND - AMOUNT - 2_000, 0));
    assert_eq!(approval(&gw, &id).await.status, "approved");
    approve_raw(&gw, &id).await.assert_problem(409, "approval-not-pending");
    assert_eq!(fake.pay_calls(&hash), 1, "never sent twice");
    assert_audit(&gw).await;
}
