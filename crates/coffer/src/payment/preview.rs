//! A payment previewed: the decision a real payment would get now, read in
//! one read transaction through the very functions a payment calls
//! ([`load_chain`], [`decide`]), so that the two cannot disagree. Nothing
//! is written: no debit, no usage, no audit entry, no event.

use super::chain::load_chain;
use super::decision::{Verdict, decide};
use crate::error::Error;
use crate::model::AgentState;
use crate::store::Tx;
use coffer_core::Msat;
use coffer_core::policy::{Attempt, Decision, Policy, evaluate};

/// What a payment of `attempt` by the chain's payer would get now.
#[derive(Debug)]
pub struct Preview {
    pub verdict: Verdict,
    /// The level of the chain that decided (0: the payer); `None` for the
    /// kill switch, which is the gateway's.
    pub level: Option<usize>,
    /// The payer first, then its ancestors, as the decision saw them.
    pub chain: Vec<AgentState>,
    /// The payer's spendable balance.
    pub available: Msat,
}

/// Decides `attempt` for `agent_id` as a payment would, in `tx` (a read).
pub fn preview(
    tx: &mut dyn Tx,
    agent_id: &str,
    attempt: &Attempt,
    fiat: &coffer_core::policy::FiatRates,
    now_ms: i64,
) -> Result<Preview, Error> {
    let mut chain = load_chain(tx, agent_id)?;
    let halted = tx.halted()?;
    let account = chain.first().map(|level| level.account).ok_or(Error::NotFound("agent"))?;
    let available = tx.balance(account)?.available();
    // Limits in a currency are resolved into `chain` by `decide`.
    let verdict = decide(halted, &mut chain, fiat, available, attempt, now_ms);
    let level = deciding_level(&verdict, &chain, attempt, now_ms);
    Ok(Preview { verdict, level, chain, available })
}

/// Which level decided: the frozen one, the payer for its balance, or the
/// first whose own policy gives the verdict's kind (as `evaluate_chain`
/// walks them).
fn deciding_level(verdict: &Verdict, chain: &[AgentState], attempt: &Attempt, now_ms: i64) -> Option<usize> {
    let code = match verdict {
        Verdict::Allow => return None,
        Verdict::Hold => None,
        Verdict::Deny(denial) => Some(denial.code),
    };
    match code {
        Some("gateway-halted") => None,
        Some("agent-frozen") => chain.iter().position(|level| level.frozen),
        Some("insufficient-balance") => Some(0),
        _ => {
            let unlimited = Policy::default();
            chain.iter().position(|level| {
                let decision = evaluate(level.policy.as_deref().unwrap_or(&unlimited), &level.usage, attempt, now_ms);
                match code {
                    Some(_) => decision.is_deny(),
                    None => matches!(decision, Decision::Hold { .. }),
                }
            })
        }
    }
}
