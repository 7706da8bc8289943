//! `coffer simulate` against a real gateway: the economy trades, the runaway
//! agent is frozen by its breaker, and the ledger still balances.

mod common;

use common::Gateway;

#[tokio::test]
async fn the_simulated_economy_trades_and_the_runaway_agent_is_frozen() {
    let gw = Gateway::start().await;
    let token = gw.operator_token().to_owned();
    let out =
        gw.cli(&["simulate", "--rounds", "6", "--pause-ms", "0", "--json"], &[("COFFER_OPERATOR_TOKEN", &token)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["agents"], 16);
    assert!(report["payments"].as_u64().unwrap_or(0) > 12, "{report}");
    let trips = report["breaker_trips"].as_array().expect("trips");
    assert_eq!(trips.len(), 1, "{report}");
    assert_eq!(trips[0]["agent"], "runaway-bot");
    assert_eq!(trips[0]["rule"], "payee-concentration");
    // The runaway bot lost at most what its breaker tolerates plus one.
    let bot = report["spend_against_budget"].as_array().unwrap().iter().find(|s| s["agent"] == "runaway-bot").unwrap();
    assert_eq!(bot["spent_msat"], 13 * 3_000, "{bot}");
    assert!(report["denials_by_reason"]["agent-frozen"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(gw.audit().await.0, "the ledger balances after the simulation");
}
