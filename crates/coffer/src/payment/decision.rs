//! The gateway's decision on one payment attempt: a pure function of the
//! state loaded in the payment's transaction. Order: the kill switch, a
//! frozen agent anywhere up the chain, the policies of the chain (see
//! `coffer_core::policy::evaluate_chain`), then the wallet's balance.

use crate::model::{AgentState, Denial};
use coffer_core::Msat;
use coffer_core::policy::{Attempt, Decision, Policy, Usage, evaluate_chain};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Hold,
    Deny(Denial),
}

/// What stops every outgoing payment of a chain, whatever its policies say
/// and whoever approved it: the kill switch, or a frozen agent.
pub fn stop(halted: bool, chain: &[AgentState]) -> Option<Denial> {
    if halted {
        return Some(denial("gateway-halted", "the operator has halted all outgoing payments".into()));
    }
    let frozen = chain.iter().position(|level| level.frozen)?;
    let whose = if frozen == 0 { "this agent".to_owned() } else { format!("its ancestor {}", chain[frozen].agent_id) };
    Some(denial("agent-frozen", format!("{whose} is frozen: no outgoing payments until the operator unfreezes it")))
}

/// `chain[0]` is the payer, then its parent, and so on up.
pub fn decide(halted: bool, chain: &[AgentState], available: Msat, attempt: &Attempt, now_ms: i64) -> Verdict {
    if let Some(stopped) = stop(halted, chain) {
        return Verdict::Deny(stopped);
    }
    // Every level takes part, an agent without a policy as an unlimited one,
    // so that a denial names the level whose policy refused.
    let unlimited = Policy::default();
    let policies: Vec<(&Policy, &Usage)> =
        chain.iter().map(|level| (level.policy.as_deref().unwrap_or(&unlimited), &level.usage)).collect();
    let verdict = match evaluate_chain(&policies, attempt, now_ms) {
        Decision::Allow => Verdict::Allow,
        Decision::Hold { .. } => Verdict::Hold,
        Decision::Deny { code, message, remaining_msat } => {
            return Verdict::Deny(Denial {
                code: code.as_str(),
                message,
                remaining: remaining_msat,
                available: None,
                needed: None,
            });
        }
    };
    let needed = attempt.spend();
    if available < needed {
        return Verdict::Deny(Denial {
            code: "insufficient-balance",
            message: format!(
                "insufficient balance: {} msat available, {} msat needed",
                available.as_u64(),
                needed.as_u64()
            ),
            remaining: None,
            available: Some(available),
            needed: Some(needed),
        });
    }
    verdict
}

fn denial(code: &'static str, message: String) -> Denial {
    Denial { code, message, remaining: None, available: None, needed: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::AccountId;
    use coffer_core::policy::{BreakerState, Payee};
    use std::sync::Arc;

    fn level(id: &str, frozen: bool, policy: Option<&str>) -> AgentState {
        AgentState {
            agent_id: id.into(),
            account: AccountId(100),
            parent_id: None,
            frozen,
            policy: policy.map(|p| Arc::new(Policy::from_json(p).unwrap())),
            usage: Usage::new(),
            breaker: BreakerState::new(),
        }
    }

    fn attempt(amount: u64) -> Attempt {
        Attempt { amount: Msat::new(amount), fee_limit: Msat::ZERO, payee: Payee::default() }
    }

    #[test]
    fn halt_comes_first_then_frozen_ancestors_then_policy_then_balance() {
        let chain = [level("child", false, Some(r#"{"max_payment_msat": 10}"#)), level("parent", true, None)];
        let code = |v: Verdict| match v {
            Verdict::Deny(d) => d.code,
            other => panic!("expected a denial, got {other:?}"),
        };
        assert_eq!(code(decide(true, &chain, Msat::new(5), &attempt(50), 0)), "gateway-halted");
        assert_eq!(code(decide(false, &chain, Msat::new(5), &attempt(50), 0)), "agent-frozen");
        let unfrozen = [level("child", false, Some(r#"{"max_payment_msat": 10}"#)), level("parent", false, None)];
        assert_eq!(code(decide(false, &unfrozen, Msat::new(5), &attempt(50), 0)), "amount-too-large");
        assert_eq!(code(decide(false, &unfrozen, Msat::new(5), &attempt(8), 0)), "insufficient-balance");
        assert_eq!(decide(false, &unfrozen, Msat::new(8), &attempt(8), 0), Verdict::Allow);
    }

    #[test]
    fn a_denial_names_the_level_that_refused_even_past_levels_without_policy() {
        let chain = [level("child", false, None), level("parent", false, Some(r#"{"max_payment_msat": 10}"#))];
        match decide(false, &chain, Msat::new(100), &attempt(50), 0) {
            Verdict::Deny(d) => assert!(d.message.contains("parent"), "{}", d.message),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn a_hold_needs_the_funds_too() {
        let chain = [level("a", false, Some(r#"{"approval_above_msat": 5}"#))];
        assert_eq!(decide(false, &chain, Msat::new(10), &attempt(10), 0), Verdict::Hold);
        assert!(matches!(decide(false, &chain, Msat::new(9), &attempt(10), 0), Verdict::Deny(_)));
    }
}
