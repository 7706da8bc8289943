//! Warnings before limits: when a spend (a payment, or a hold reserving
//! one) carries a budget's usage across a threshold, a `budget.warning`
//! event for every level of the payer's chain whose budget it crossed,
//! written in the spend's own transaction (so it reaches every channel
//! through the outbox, or not at all). Which thresholds were crossed is
//! decided in `coffer_core::policy::crossings` (pure); once per window and
//! threshold, remembered in each level's usage.
//!
//! The thresholds are the gateway's (`COFFER_BUDGET_WARNING_PERCENT`),
//! passed in with the spend (`model::SpendTerms`).

use crate::error::Error;
use crate::events::kind::BudgetWarning;
use crate::events::{self, Event};
use crate::model::AgentState;
use crate::store::Tx;
use coffer_core::Msat;
use coffer_core::policy::{WarningThresholds, crossings};

/// The environment's name of the thresholds (a comma list of percents).
pub const WARNING_PERCENT_ENV: &str = "COFFER_BUDGET_WARNING_PERCENT";

/// Reads the thresholds from a setting lookup (the environment, then the
/// configuration file): "80,95" by default, "" or "off" for none.
pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<WarningThresholds, String> {
    match lookup(WARNING_PERCENT_ENV) {
        None => Ok(WarningThresholds::default()),
        Some(text) if text.trim() == "off" => Ok(WarningThresholds::none()),
        Some(text) => WarningThresholds::parse(&text).map_err(|e| format!("{WARNING_PERCENT_ENV}: {e}")),
    }
}

/// Counts a spend in every budget of the chain (in memory; the caller saves
/// it with `chain::save_policed`), and writes a `budget.warning` for each
/// threshold it carried a level across.
pub(crate) fn count_spend(
    tx: &mut dyn Tx,
    chain: &mut [AgentState],
    amount: Msat,
    thresholds: &WarningThresholds,
    now_ms: i64,
) -> Result<(), Error> {
    let payer = chain.first().map(|level| level.agent_id.clone()).unwrap_or_default();
    for level in chain.iter_mut() {
        let Some(policy) = level.policy.clone() else { continue };
        // Bounded by the policy (at most 16 windows of 61 buckets).
        let before = level.usage.clone();
        level.usage.record(&policy, amount, now_ms);
        for crossing in crossings(&policy, &before, &mut level.usage, thresholds, now_ms) {
            let warning = BudgetWarning { agent_id: level.agent_id.clone(), payer_agent_id: payer.clone(), crossing };
            events::emit(tx, &Event::BudgetWarning(warning), now_ms)?;
        }
    }
    Ok(())
}
