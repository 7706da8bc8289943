//! `coffer simulate` against a real gateway: the economy trades (safely:
//! escrow, metered sessions, hold invoices), the runaway agent is frozen by
//! its breaker, and the ledger still balances.

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
    // They traded safely: jobs through escrow (one bad delivery disputed and
    // refunded by the operator), compute through metered sessions, and the
    // failing seller's holds cancelled.
    let trade = &report["trade"];
    let count = |field: &str| trade[field].as_u64().unwrap_or_else(|| panic!("no {field} in {report}"));
    for field in [
        "escrows_held",
        "escrows_released",
        "escrows_disputed",
        "escrows_refunded",
        "sessions_opened",
        "session_charges",
        "sessions_closed",
        "session_returned_msat",
        "holds_accepted",
        "holds_settled",
        "holds_cancelled",
    ] {
        assert!(count(field) > 0, "{field}: {report}");
    }
    // One job a round, the second one bad; each ended once.
    assert_eq!((count("escrows_held"), count("escrows_released")), (6, 5), "{report}");
    assert_eq!((count("escrows_disputed"), count("escrows_refunded")), (1, 1), "{report}");
    assert_eq!(count("holds_accepted"), count("holds_settled") + count("holds_cancelled"), "{report}");
    assert_eq!(count("sessions_opened"), count("sessions_closed"), "{report}");
    assert_eq!(count("session_charged_msat"), count("session_charges") * 20_000, "{report}");
    // Each session reserved 120 sat: what was not charged came back.
    assert_eq!(
        count("session_returned_msat"),
        count("sessions_opened") * 120_000 - count("session_charged_msat"),
        "{report}"
    );
    // Nothing is left waiting.
    let op = gw.operator();
    for status in ["held", "disputed"] {
        let open = op.escrows(Some(status)).await.expect("listing escrows");
        assert!(open.is_empty(), "{status}: {open:?}");
    }
    assert!(gw.audit().await.0, "the ledger balances after the simulation");
}
