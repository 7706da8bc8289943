//! Agents that acknowledge their incoming payments: the money is credited
//! but reserved until the payee accepts it; rejecting refunds the payer.

mod common;

use common::{Gateway, invoice, send};
use reqwest::Method;
use serde_json::json;

const SAT: u64 = 1_000;

#[tokio::test]
async fn incoming_payments_wait_for_the_payee_and_a_rejection_refunds() {
    let gw = Gateway::start().await;
    let (_, payer, payer_key) = gw.new_agent("payer", 100 * SAT).await;
    let (payee_id, payee, payee_key) = gw.new_agent("payee", 0).await;
    let set = gw.put_chat_raw(gw.operator_token(), &payee_id, &json!({"require_acknowledgment": true})).await;
    assert_eq!(set.status, 200, "{set:?}");

    let mut ids = Vec::new();
    for amount in [5 * SAT, 7 * SAT] {
        let bolt11 = invoice(&payee, amount).await.bolt11;
        let paid = gw.pay_raw(&payer_key, &bolt11, "for the data", None).await;
        assert_eq!(paid.status, 200, "{paid:?}");
        ids.push(paid.json["id"].as_str().unwrap().to_owned());
    }
    let w = payee.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (12 * SAT, 12 * SAT, 0), "credited, not spendable");

    let pending = send(gw.request(Method::GET, "/v1/incoming", Some(&payee_key))).await;
    assert_eq!(pending.json.as_array().map(Vec::len), Some(2), "{pending:?}");

    let accept = send(gw.request(Method::POST, &format!("/v1/incoming/{}/accept", ids[0]), Some(&payee_key))).await;
    assert_eq!((accept.status, accept.json["status"].as_str()), (200, Some("accepted")), "{accept:?}");
    let reject = send(gw.request(Method::POST, &format!("/v1/incoming/{}/reject", ids[1]), Some(&payee_key))).await;
    assert_eq!((reject.status, reject.json["status"].as_str()), (200, Some("rejected")), "{reject:?}");

    let w = payee.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.pending_msat, w.available_msat), (5 * SAT, 0, 5 * SAT));
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 100 * SAT - 5 * SAT, "the rejected 7 sat came back");

    // Decided is final; another agent cannot decide for the payee.
    let again = send(gw.request(Method::POST, &format!("/v1/incoming/{}/reject", ids[1]), Some(&payee_key))).await;
    again.assert_problem(409, "already-decided");
    let other = send(gw.request(Method::POST, &format!("/v1/incoming/{}/accept", ids[0]), Some(&payer_key))).await;
    other.assert_problem(404, "not-found");
    assert_eq!(payer.wallet().await.unwrap().balance_msat, 95 * SAT);
    assert!(gw.audit().await.0, "the ledger balances after the refund");
}

#[tokio::test]
async fn by_default_incoming_payments_are_accepted_at_once() {
    let gw = Gateway::start().await;
    let (_, _, payer_key) = gw.new_agent("payer", 10 * SAT).await;
    let (_, payee, payee_key) = gw.new_agent("payee", 0).await;
    let bolt11 = invoice(&payee, 3 * SAT).await.bolt11;
    assert_eq!(gw.pay_raw(&payer_key, &bolt11, "", None).await.status, 200);
    let w = payee.wallet().await.unwrap();
    assert_eq!((w.balance_msat, w.available_msat), (3 * SAT, 3 * SAT));
    let none = send(gw.request(Method::GET, "/v1/incoming", Some(&payee_key))).await;
    assert_eq!(none.json, json!([]));
}
