//! What the dashboard reads of trade: an agent's sessions, for the operator
//! (`GET /v1/agents/{id}/sessions`).

mod common;

use coffer_client::{OpenSessionRequest, Page, Session};
use common::Gateway;
use reqwest::Method;

const SAT: u64 = 1_000;

#[tokio::test]
async fn the_operator_lists_an_agents_sessions_as_payer_and_as_payee() {
    let gw = Gateway::start().await;
    let (buyer, buyer_client, key_b) = gw.new_agent("buyer", 100 * SAT).await;
    let (seller, _, _) = gw.new_agent("seller", 0).await;
    let (loner, _, _) = gw.new_agent("loner", 0).await;
    let open = |max_msat| OpenSessionRequest {
        payee: seller.clone(),
        max_msat,
        expires_in_secs: 600,
        purpose: Some("compute".into()),
        ..Default::default()
    };
    let first = buyer_client.open_session(&open(10 * SAT)).await.expect("a session");
    let second = buyer_client.open_session(&open(20 * SAT)).await.expect("a session");
    buyer_client.close_session(&first.id).await.expect("closing it");
    let op = gw.operator_token().to_owned();

    let list = |agent: String, secret: String| {
        let gw = &gw;
        async move { common::send(gw.request(Method::GET, &format!("/v1/agents/{agent}/sessions"), Some(&secret))).await }
    };
    for agent in [&buyer, &seller] {
        let r = list(agent.clone(), op.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
        let page: Page<Session> = serde_json::from_value(r.json).expect("a page of sessions");
        let rows: Vec<_> = page.items.iter().map(|x| (x.id.as_str(), x.status.as_str(), x.max_msat)).collect();
        // Newest first.
        assert_eq!(rows, [(second.id.as_str(), "open", 20 * SAT), (first.id.as_str(), "closed", 10 * SAT)], "{agent}");
        assert_eq!(page.next_cursor, None);
    }
    let r = list(loner, op.clone()).await;
    assert_eq!((r.status, r.json["items"].as_array().map(Vec::len)), (200, Some(0)), "{r:?}");
    list("agt_nobody".into(), op.clone()).await.assert_problem(404, "not-found");
    // Only the operator: an agent lists its own with GET /v1/sessions.
    assert_eq!(list(buyer.clone(), key_b.clone()).await.status, 403);
}
