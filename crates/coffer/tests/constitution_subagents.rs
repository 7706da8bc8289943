//! Sub-agents: a parent creates, funds and governs its children; a child's
//! spending counts against every ancestor's budget; freezing an ancestor
//! stops the whole subtree; nobody manages what is not below it.

mod common;

use coffer_client::{CreateAgentRequest, Scope};
use common::{Gateway, assert_denied, first_window, invoice};
use serde_json::{Value, json};

const P: u64 = 1_000;

fn rolling_hour(limit_msat: u64) -> Value {
    json!({"budgets": [{"limit_msat": limit_msat, "window": "1h", "kind": "rolling"}]})
}

fn may_create(name: &str) -> CreateAgentRequest {
    CreateAgentRequest { name: name.to_owned(), can_create_subagents: true, task: None }
}

#[tokio::test]
async fn a_parent_governs_its_child_and_the_child_spends_from_the_parents_budget() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let created = op.create_agent_with(&may_create("parent")).await.unwrap();
    let (parent_id, parent_key) = (created.id.clone(), created.key.clone());
    let parent = gw.client(&parent_key);
    op.mint(100 * P).await.unwrap();
    op.fund_agent(&parent_id, 100 * P).await.unwrap();
    op.set_policy(&parent_id, &rolling_hour(10 * P)).await.unwrap();
    let (seller_id, seller, _) = gw.new_agent("seller", 0).await;

    // The parent creates a child with its spend key.
    let child_created = parent.create_agent("child").await.unwrap();
    let (child_id, child_key) = (child_created.id.clone(), child_created.key.clone());
    let child = gw.client(&child_key);
    let c = op.agent(&child_id).await.unwrap();
    assert_eq!((c.parent_id.as_deref(), c.can_create_subagents), (Some(parent_id.as_str()), false));
    let created_by = gw.audit_all(&format!("agent_id={child_id}&action=agent.created")).await;
    assert_eq!(created_by[0].record["actor"], parent_id.as_str());

    // It funds the child from its own wallet; funding is not spending.
    let t = parent.fund_agent(&child_id, 8 * P).await.unwrap();
    assert_eq!(t.balance_msat, 8 * P);
    assert_eq!(parent.wallet().await.unwrap().balance_msat, 92 * P);
    assert_eq!(first_window(&op.budget(&parent_id).await.unwrap()), (0, 10 * P));
    let e = parent.fund_agent(&child_id, 1_000 * P).await.unwrap_err();
    assert_eq!(e.code(), Some("insufficient-balance"));
    let read = op.create_key(&parent_id, Scope::Read).await.unwrap();
    let parent_read = gw.client(&read.key);
    assert_eq!(parent_read.fund_agent(&child_id, P).await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(
        (parent.wallet().await.unwrap().balance_msat, child.wallet().await.unwrap().balance_msat),
        (92 * P, 8 * P)
    );

    // It sets the child's policy; a read key may not.
    let child_policy = json!({
        "max_payment_msat": 3 * P,
        "budgets": [{"limit_msat": 8 * P, "window": "1h", "kind": "rolling"}]
    });
    let applied = parent.set_policy(&child_id, &child_policy).await.unwrap();
    assert_eq!(parent.policy(&child_id).await.unwrap(), applied);
    assert_eq!(op.policy(&child_id).await.unwrap(), applied);
    assert_eq!(parent_read.set_policy(&child_id, &json!({})).await.unwrap_err().code(), Some("forbidden"));
    let set_by = gw.audit_all(&format!("agent_id={child_id}&action=policy.updated")).await;
    assert_eq!(set_by.len(), 1);
    assert_eq!(set_by[0].record["actor"], parent_id.as_str());

    // The child cannot raise its own limits, nor its parent's, nor create agents.
    for doc in [json!({}), json!({"max_payment_msat": 1_000 * P})] {
        gw.put_policy_raw(&child_key, &child_id, &doc).await.assert_problem(403, "forbidden");
    }
    gw.put_policy_raw(&child_key, &parent_id, &json!({})).await.assert_problem(403, "forbidden");
    assert_eq!(child.create_agent("grandchild").await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(op.policy(&child_id).await.unwrap(), applied);
    assert_eq!(op.policy(&parent_id).await.unwrap(), rolling_hour(10 * P));

    // Freezing the parent stops the child too; unfreezing restores both.
    op.freeze(&parent_id, Some("investigating")).await.unwrap();
    let held_invoice = invoice(&seller, P).await;
    let r = gw.pay_raw(&child_key, &held_invoice.bolt11, "while the parent is frozen", None).await;
    let p = assert_denied(&r, "agent-frozen");
    assert!(p["detail"].as_str().unwrap().contains(&format!("ancestor {parent_id}")), "{r:?}");
    assert_denied(&gw.pay_raw(&parent_key, &invoice(&seller, P).await.bolt11, "frozen", None).await, "agent-frozen");
    assert!(!op.agent(&child_id).await.unwrap().frozen, "only the parent is frozen itself");
    op.unfreeze(&parent_id).await.unwrap();
    assert_eq!(gw.pay_raw(&child_key, &held_invoice.bolt11, "unfrozen", None).await.status, 200);

    // The child spends 6 prices in all: within its own 8, and 6 of the parent's 10.
    for i in 1..6 {
        let r = gw.pay_raw(&child_key, &invoice(&seller, P).await.bolt11, "child spend", None).await;
        assert_eq!(r.status, 200, "child payment {i}: {r:?}");
    }
    assert_eq!(first_window(&parent.budget(&child_id).await.unwrap()), (6 * P, 2 * P));
    assert_eq!(first_window(&op.budget(&parent_id).await.unwrap()), (6 * P, 4 * P));

    // So the parent has exactly 4 prices left.
    let r = gw.pay_raw(&parent_key, &invoice(&seller, 5 * P).await.bolt11, "five", None).await;
    assert_eq!(assert_denied(&r, "budget-exceeded")["remaining_msat"].as_u64(), Some(4 * P), "{r:?}");
    for i in 0..4 {
        let r = gw.pay_raw(&parent_key, &invoice(&seller, P).await.bolt11, "parent spend", None).await;
        assert_eq!(r.status, 200, "parent payment {i}: {r:?}");
    }
    let r = gw.pay_raw(&parent_key, &invoice(&seller, P).await.bolt11, "one more", None).await;
    assert_eq!(assert_denied(&r, "budget-exceeded")["remaining_msat"].as_u64(), Some(0), "{r:?}");
    // The child's own budget has room, its parent's does not.
    let r = gw.pay_raw(&child_key, &invoice(&seller, P).await.bolt11, "child again", None).await;
    let p = assert_denied(&r, "budget-exceeded");
    assert_eq!(p["remaining_msat"].as_u64(), Some(0), "{r:?}");
    assert!(p["detail"].as_str().unwrap().contains("parent agent's policy"), "{r:?}");
    assert_eq!(first_window(&op.budget(&child_id).await.unwrap()), (6 * P, 2 * P));
    assert_eq!(first_window(&op.budget(&parent_id).await.unwrap()), (10 * P, 0));

    assert_eq!(child.wallet().await.unwrap().balance_msat, 2 * P);
    assert_eq!(parent.wallet().await.unwrap().balance_msat, 88 * P);
    assert_eq!(op.agent(&seller_id).await.unwrap().balance_msat, 10 * P);
    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

#[tokio::test]
async fn only_ancestors_manage_and_only_permitted_agents_create() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let parent_created = op.create_agent_with(&may_create("parent")).await.unwrap();
    let (parent_id, parent_key) = (parent_created.id, parent_created.key);
    let parent = gw.client(&parent_key);
    let uncle_created = op.create_agent_with(&may_create("uncle")).await.unwrap();
    let uncle = gw.client(&uncle_created.key);
    op.mint(100 * P).await.unwrap();
    op.fund_agent(&parent_id, 50 * P).await.unwrap();
    op.fund_agent(&uncle_created.id, 50 * P).await.unwrap();
    let (_, seller, _) = gw.new_agent("seller", 0).await;

    // An agent created without the right gets 403 creating one.
    let (_, plain, _) = gw.new_agent("plain", 0).await;
    assert_eq!(plain.create_agent("nope").await.unwrap_err().code(), Some("forbidden"));
    // So does a key weaker than spend, even of an agent with the right.
    let read = op.create_key(&parent_id, Scope::Read).await.unwrap();
    assert_eq!(gw.client(&read.key).create_agent("nope").await.unwrap_err().code(), Some("forbidden"));

    let child = parent.create_agent("child").await.unwrap();
    let child2 = parent.create_agent_with(&may_create("child2")).await.unwrap();
    let grandchild = gw.client(&child2.key).create_agent("grandchild").await.unwrap();
    assert_eq!(op.agent(&grandchild.id).await.unwrap().parent_id.as_deref(), Some(child2.id.as_str()));
    let names: Vec<String> = op.agents().await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names.len(), 7, "{names:?}");

    // A sibling of the parent manages nothing of its subtree.
    for target in [&child.id, &grandchild.id] {
        gw.put_policy_raw(&uncle_created.key, target, &json!({})).await.assert_problem(403, "forbidden");
        assert_eq!(uncle.policy(target).await.unwrap_err().code(), Some("forbidden"));
        assert_eq!(uncle.budget(target).await.unwrap_err().code(), Some("forbidden"));
        assert_eq!(uncle.fund_agent(target, P).await.unwrap_err().code(), Some("forbidden"));
    }
    // Nor does a sibling child, nor a child its parent; nobody manages itself.
    gw.put_policy_raw(&child.key, &grandchild.id, &json!({})).await.assert_problem(403, "forbidden");
    gw.put_policy_raw(&grandchild.key, &child2.id, &json!({})).await.assert_problem(403, "forbidden");
    gw.put_policy_raw(&child2.key, &child2.id, &json!({})).await.assert_problem(403, "forbidden");
    assert_eq!(gw.audit_all("action=policy.updated").await.len(), 0);
    assert_eq!(uncle.wallet().await.unwrap().balance_msat, 50 * P);

    // Every ancestor manages: the parent and the grandparent of the grandchild.
    parent.fund_agent(&child2.id, 10 * P).await.unwrap();
    gw.client(&child2.key).fund_agent(&grandchild.id, 5 * P).await.unwrap();
    parent.set_policy(&grandchild.id, &json!({"max_payment_msat": 2 * P})).await.unwrap();
    gw.client(&child2.key).set_policy(&grandchild.id, &rolling_hour(4 * P)).await.unwrap();
    assert_eq!(parent.policy(&grandchild.id).await.unwrap(), rolling_hour(4 * P));

    // The grandchild's spend counts against the grandparent's budget too.
    op.set_policy(&parent_id, &rolling_hour(3 * P)).await.unwrap();
    let r = gw.pay_raw(&grandchild.key, &invoice(&seller, 2 * P).await.bolt11, "two", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(first_window(&op.budget(&parent_id).await.unwrap()), (2 * P, P));
    assert_eq!(first_window(&op.budget(&grandchild.id).await.unwrap()), (2 * P, 2 * P));
    let r = gw.pay_raw(&grandchild.key, &invoice(&seller, 2 * P).await.bolt11, "two more", None).await;
    let p = assert_denied(&r, "budget-exceeded");
    assert_eq!(p["remaining_msat"].as_u64(), Some(P), "{r:?}");

    // Freezing the grandparent stops the grandchild.
    op.freeze(&parent_id, None).await.unwrap();
    assert_denied(
        &gw.pay_raw(&grandchild.key, &invoice(&seller, P).await.bolt11, "frozen", None).await,
        "agent-frozen",
    );
    op.unfreeze(&parent_id).await.unwrap();
    let r = gw.pay_raw(&grandchild.key, &invoice(&seller, P).await.bolt11, "thawed", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(first_window(&op.budget(&parent_id).await.unwrap()), (3 * P, 0));
    assert_eq!(gw.client(&grandchild.key).wallet().await.unwrap().balance_msat, 2 * P);

    let (ok, report) = gw.audit().await;
    assert!(ok, "audit failed: {report}");
}

/// A denial names the agent whose policy refused, counting levels of the
/// tree: levels without a policy still count.
#[tokio::test]
async fn a_denial_by_an_ancestors_budget_names_that_ancestor() {
    let gw = Gateway::start().await;
    let op = gw.operator();
    let top = op.create_agent_with(&may_create("top")).await.unwrap();
    op.mint(10 * P).await.unwrap();
    op.fund_agent(&top.id, 10 * P).await.unwrap();
    op.set_policy(&top.id, &rolling_hour(P)).await.unwrap();
    let middle = gw.client(&top.key).create_agent_with(&may_create("middle")).await.unwrap();
    gw.client(&top.key).fund_agent(&middle.id, 5 * P).await.unwrap();
    let bottom = gw.client(&middle.key).create_agent("bottom").await.unwrap();
    gw.client(&middle.key).fund_agent(&bottom.id, 5 * P).await.unwrap();
    let (_, seller, _) = gw.new_agent("seller", 0).await;

    // A child without a policy of its own, refused by its parent's budget.
    let r = gw.pay_raw(&middle.key, &invoice(&seller, 2 * P).await.bolt11, "too much", None).await;
    let p = assert_denied(&r, "budget-exceeded");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("the parent agent's policy"), "reads as the payer's own budget: {detail}");

    let r = gw.pay_raw(&bottom.key, &invoice(&seller, 2 * P).await.bolt11, "too much", None).await;
    let p = assert_denied(&r, "budget-exceeded");
    assert_eq!(p["remaining_msat"].as_u64(), Some(P), "{r:?}");
    let detail = p["detail"].as_str().unwrap();
    // The middle agent has no policy: the limit is not its parent's (the
    // middle agent's), it is the top agent's, two levels up.
    assert!(!detail.contains("the parent agent's policy"), "blames the parent (middle), which has no policy: {detail}");
    assert!(detail.contains("2 levels up"), "{detail}");
}
