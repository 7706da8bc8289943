//! Spend reports: payments carry a task and tags (a sub-agent inherits the
//! task it was given), and `GET /v1/reports/spend` adds up exactly the
//! money that left, by agent, tree, task, tag, payee and day, for the
//! operator over every agent and for an agent over its own tree.

mod common;

use coffer_client::{Client, CreateAgentRequest, EscrowTerms, Outcome, PayOutcome, PayRequest, SpendReport};
use common::{Gateway, invoice, send};
use serde_json::json;
use std::collections::BTreeMap;

const FUND_MSAT: u64 = 1_000_000;

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

/// Pays `amount_msat` to `payee` under `task` and `tags`.
async fn pay(payer: &Client, payee: &Client, amount_msat: u64, task: Option<&str>, tag_list: &[&str]) -> PayOutcome {
    let bolt11 = invoice(payee, amount_msat).await.bolt11;
    let request = PayRequest {
        bolt11,
        purpose: Some("work".into()),
        task: task.map(str::to_owned),
        tags: tags(tag_list),
        ..Default::default()
    };
    payer.pay(&request, &format!("k-{amount_msat}")).await.expect("paying")
}

async fn paid(payer: &Client, payee: &Client, amount_msat: u64, task: Option<&str>, tag_list: &[&str]) {
    match pay(payer, payee, amount_msat, task, tag_list).await {
        PayOutcome::Done(p) => {
            assert_eq!(p.task.as_deref(), task, "the payment names its task");
            assert_eq!(p.tags, tags(tag_list), "and its tags");
        }
        PayOutcome::Held(a) => panic!("held: {a:?}"),
    }
}

/// `key -> (payments, amount_msat)` of a report.
fn by_key(report: &SpendReport) -> BTreeMap<String, (u64, u64)> {
    report.rows.iter().map(|r| (r.key.clone(), (r.payments, r.amount_msat))).collect()
}

fn expect(rows: &[(&str, u64, u64)]) -> BTreeMap<String, (u64, u64)> {
    rows.iter().map(|(k, n, a)| ((*k).to_owned(), (*n, *a))).collect()
}

struct World {
    gw: Gateway,
    op: Client,
    parent: Client,
    parent_id: String,
    child: Client,
    child_id: String,
    seller1: Client,
    seller1_id: String,
    seller2: Client,
    seller2_id: String,
}

async fn world() -> World {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let (parent_id, _, parent) = gw.new_parent("parent", FUND_MSAT).await;
    op.mint(FUND_MSAT).await.expect("minting for the child");
    // The parent passes a task on to the sub-agent it creates.
    let request =
        CreateAgentRequest { name: "child".into(), can_create_subagents: false, task: Some("research".into()) };
    let child_created = parent.create_agent_with(&request).await.expect("the child");
    op.fund_agent(&child_created.id, FUND_MSAT).await.expect("funding the child");
    let child_agent = op.agent(&child_created.id).await.expect("the child");
    assert_eq!(child_agent.task.as_deref(), Some("research"));
    let (seller1_id, seller1, _) = gw.new_agent("seller one", 0).await;
    let (seller2_id, seller2, _) = gw.new_agent("seller two", 0).await;
    World {
        op,
        parent,
        parent_id,
        child: gw.client(&child_created.key),
        child_id: child_created.id,
        seller1,
        seller1_id,
        seller2,
        seller2_id,
        gw,
    }
}

#[tokio::test]
async fn reports_add_up_exactly_the_payments_made_by_agent_tree_task_tag_payee_and_day() {
    let w = world().await;
    paid(&w.parent, &w.seller1, 10_000, Some("crawl"), &["a", "b"]).await;
    paid(&w.parent, &w.seller2, 20_000, Some("crawl"), &["b"]).await;
    paid(&w.parent, &w.seller1, 3_000, None, &[]).await;
    // The child's payment without a task counts under the task it was given.
    match pay(&w.child, &w.seller1, 5_000, None, &["a"]).await {
        PayOutcome::Done(p) => assert_eq!((p.task.as_deref(), p.tags.clone()), (Some("research"), tags(&["a"]))),
        PayOutcome::Held(a) => panic!("held: {a:?}"),
    }
    paid(&w.child, &w.seller2, 7_000, Some("crawl"), &[]).await;

    // A session's charges count under the session's task.
    let open = coffer_client::OpenSessionRequest {
        payee: w.seller2_id.clone(),
        max_msat: 9_000,
        expires_in_secs: 600,
        task: Some("gpu".into()),
        ..Default::default()
    };
    let session = w.parent.open_session(&open).await.expect("a session");
    assert_eq!(session.task.as_deref(), Some("gpu"));
    let charge = coffer_client::ChargeRequest { amount_msat: 4_000, memo: None };
    w.seller2.charge(&session.id, &charge, "c1").await.expect("charged");
    w.seller2.close_session(&session.id).await.expect("closed");

    // Money in escrow has not left yet; released, it counts.
    let escrowed = PayRequest {
        bolt11: invoice(&w.seller1, 2_000).await.bolt11,
        escrow: Some(EscrowTerms { release_after_secs: 600, on_timeout: Outcome::Release }),
        task: Some("escrowed".into()),
        ..Default::default()
    };
    let PayOutcome::Done(held) = w.parent.pay(&escrowed, "escrow-1").await.expect("paid into escrow") else {
        panic!("held for approval")
    };
    let before = w.op.spend_report("task", None, None).await.expect("a report");
    assert!(!by_key(&before).contains_key("escrowed"), "money in escrow has not been spent yet");
    w.parent.release(&held.id).await.expect("released");

    // A payment held for approval counts once approved, under its own task.
    w.op.set_policy(w.parent_id.as_str(), &json!({"approval_above_msat": 50_000})).await.expect("a policy");
    let PayOutcome::Held(approval) = pay(&w.parent, &w.seller1, 60_000, Some("big"), &["b"]).await else {
        panic!("not held")
    };
    assert_eq!(approval.task.as_deref(), Some("big"));
    w.op.approve(&approval.id).await.expect("approved");

    // A denied payment counts nowhere.
    w.op.set_policy(w.child_id.as_str(), &json!({"max_payment_msat": 6_000})).await.expect("a policy");
    let bolt11 = invoice(&w.seller1, 8_000).await.bolt11;
    let denied = w.child.pay(&PayRequest { bolt11, task: Some("crawl".into()), ..Default::default() }, "denied").await;
    assert!(denied.is_err(), "{denied:?}");

    let report = |group_by: &'static str| {
        let op = w.op.clone();
        async move { op.spend_report(group_by, None, None).await.expect("a report") }
    };
    let parent_total = 10_000 + 20_000 + 3_000 + 4_000 + 2_000 + 60_000;
    let child_total = 5_000 + 7_000;
    let total = parent_total + child_total;
    for group_by in ["agent", "tree", "task", "tag", "payee", "day"] {
        let r = report(group_by).await;
        assert_eq!((r.total.payments, r.total.amount_msat), (8, total), "{group_by}: the total of every payment");
        assert_eq!(r.group_by, group_by);
        assert!(!r.truncated);
    }
    let task = report("task").await;
    assert_eq!(
        by_key(&task),
        expect(&[
            ("crawl", 3, 37_000),
            ("research", 1, 5_000),
            ("gpu", 1, 4_000),
            ("escrowed", 1, 2_000),
            ("big", 1, 60_000)
        ])
    );
    assert_eq!(task.rows[0].key, "big", "largest first");
    assert_eq!(by_key(&report("tag").await), expect(&[("a", 2, 15_000), ("b", 3, 90_000)]));
    let agents = report("agent").await;
    assert_eq!(
        by_key(&agents),
        expect(&[(w.parent_id.as_str(), 6, parent_total), (w.child_id.as_str(), 2, child_total)])
    );
    assert_eq!(agents.rows[0].label.as_deref(), Some("parent"), "names for people");
    assert_eq!(
        by_key(&report("tree").await),
        expect(&[(w.parent_id.as_str(), 8, total), (w.child_id.as_str(), 2, child_total)]),
        "the sub-agent's payments count in its parent's tree"
    );
    let payees = report("payee").await;
    let (s1, s2) = (format!("agent:{}", w.seller1_id), format!("agent:{}", w.seller2_id));
    assert_eq!(by_key(&payees), expect(&[(s1.as_str(), 5, 80_000), (s2.as_str(), 3, 31_000)]));
    assert!(payees.rows.iter().any(|r| r.label.as_deref() == Some("seller one")));
    let days = report("day").await;
    assert_eq!(days.rows.iter().map(|r| r.amount_msat).sum::<u64>(), total);
    assert!(days.rows.iter().all(|r| r.key.len() == 10 && r.key.as_bytes()[4] == b'-'), "{:?}", days.rows);

    // The child sees its own tree only, the parent its whole tree.
    let child_view = w.child.spend_report("task", None, None).await.expect("the child's report");
    assert_eq!(by_key(&child_view), expect(&[("crawl", 1, 7_000), ("research", 1, 5_000)]));
    assert_eq!(child_view.total.amount_msat, child_total);
    let parent_view = w.parent.spend_report("tree", None, None).await.expect("the parent's report");
    assert_eq!(parent_view.total.amount_msat, total);
    let seller_view = w.seller1.spend_report("agent", None, None).await.expect("a seller's report");
    assert!(seller_view.rows.is_empty() && seller_view.total.payments == 0, "a seller spent nothing");

    // A range without the payments is empty.
    let old = w.op.spend_report("task", Some("2001-01-01"), Some("2001-01-31")).await.expect("an old range");
    assert!(old.rows.is_empty() && old.total.payments == 0);
    assert_eq!((old.from.as_str(), old.to.as_str()), ("2001-01-01", "2001-01-31"));
    let (audit_ok, audit) = w.gw.audit().await;
    assert!(audit_ok, "{audit}");
}

#[tokio::test]
async fn the_csv_export_holds_the_rows_of_the_json_report() {
    let w = world().await;
    paid(&w.parent, &w.seller1, 1_000, Some("a, \"quoted\" task"), &[]).await;
    paid(&w.parent, &w.seller1, 2_000, Some("=SUM(A1)"), &[]).await;
    let json = w.op.spend_report("task", None, None).await.expect("a report");
    let token = w.gw.operator_token().to_owned();
    let path = "/v1/reports/spend?group_by=task&format=csv";
    let reply = send(w.gw.request(reqwest::Method::GET, path, Some(&token))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.content_type.as_deref().is_some_and(|t| t.starts_with("text/csv")), "{:?}", reply.headers);
    let lines: Vec<&str> = reply.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "key,label,payments,amount_msat,fee_msat");
    assert_eq!(lines.len(), json.rows.len() + 1);
    assert_eq!(lines[1], "'=SUM(A1),,1,2000,0", "a formula is kept as text");
    assert_eq!(lines[2], "\"a, \"\"quoted\"\" task\",,1,1000,0");
}

#[tokio::test]
async fn bad_attribution_and_bad_report_queries_are_refused_and_change_nothing() {
    let w = world().await;
    let before = w.op.agent(&w.parent_id).await.expect("the parent").balance_msat;
    let bolt11 = invoice(&w.seller1, 1_000).await.bolt11;
    let cases = [
        json!({"bolt11": bolt11, "task": "x".repeat(129)}),
        json!({"bolt11": bolt11, "task": "two\nlines"}),
        json!({"bolt11": bolt11, "tags": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
        json!({"bolt11": bolt11, "tags": ["no spaces"]}),
        json!({"bolt11": bolt11, "tags": "not-a-list"}),
    ];
    let key = w.parent_key().await;
    let token = w.gw.operator_token().to_owned();
    for body in cases {
        let reply = send(w.gw.request(reqwest::Method::POST, "/v1/payments", Some(&key)).json(&body)).await;
        assert!((400..500).contains(&reply.status), "{body}: {} {}", reply.status, reply.text);
        reply.assert_well_formed_problem();
    }
    assert_eq!(w.op.agent(&w.parent_id).await.expect("the parent").balance_msat, before, "nothing was paid");
    let sub = json!({"name": "kid", "task": ""});
    let reply = send(w.gw.request(reqwest::Method::POST, "/v1/agents", Some(&key)).json(&sub)).await;
    assert!((400..500).contains(&reply.status), "an empty task: {}", reply.text);

    for query in [
        "group_by=bogus",
        "group_by=task&from=2020-02-02&to=2020-02-01",
        "group_by=task&from=yesterday",
        "group_by=task&from=1990-01-01&to=2020-01-01",
        "group_by=task&format=xml",
        "group_by=task&unknown=1",
        "from=2020-01-01",
    ] {
        let path = format!("/v1/reports/spend?{query}");
        let reply = send(w.gw.request(reqwest::Method::GET, &path, Some(&token))).await;
        assert!((400..500).contains(&reply.status), "{query}: {} {}", reply.status, reply.text);
        reply.assert_well_formed_problem();
    }
    let reply = send(w.gw.request(reqwest::Method::GET, "/v1/reports/spend?group_by=task", Some("not-a-key"))).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}

impl World {
    /// The parent's spend key, read back from its client's construction.
    async fn parent_key(&self) -> String {
        let created = self.op.create_key(&self.parent_id, coffer_client::Scope::Spend).await.expect("a key");
        created.key
    }
}

#[tokio::test]
async fn the_cli_pays_under_a_task_and_reads_the_report() {
    let w = world().await;
    let key = w.parent_key().await;
    let bolt11 = invoice(&w.seller1, 4_321).await.bolt11;
    let paid = w.gw.cli_agent_json(&key, &["pay", &bolt11, "--task", "from the cli", "--tag", "cli", "--json"]).await;
    assert_eq!((paid["task"].as_str(), paid["tags"][0].as_str()), (Some("from the cli"), Some("cli")), "{paid}");
    let report = w.gw.cli_operator_json(&["report", "--group-by", "task", "--json"]).await;
    assert_eq!(report["rows"][0]["key"], "from the cli", "{report}");
    assert_eq!(report["rows"][0]["amount_msat"], 4_321, "{report}");
    let out = w.gw.cli(&["report", "--group-by", "tags"], &[("COFFER_OPERATOR_TOKEN", w.gw.operator_token())]).await;
    assert!(!out.status.success(), "a bad grouping is refused");
}
