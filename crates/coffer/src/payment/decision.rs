//! The gateway's decision on one payment attempt: a pure function of the
//! state loaded in the payment's transaction. Order: the kill switch, a
//! frozen agent anywhere up the chain, the policies of the chain (see
//! `coffer_core::policy::evaluate_chain`), then the wallet's balance.
//!
//! Limits stated in a currency are resolved to msat here, at the rates the
//! payment took a snapshot of, for every payment kind: no rail decides
//! without them, and a missing or stale rate refuses the payment.

use crate::model::{AgentState, Denial};
use coffer_core::Msat;
use coffer_core::policy::{Attempt, Decision, FiatError, FiatRates, Policy, Usage, evaluate_chain, resolve};
use std::borrow::Cow;
use std::sync::Arc;

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

/// `chain[0]` is the payer, then its parent, and so on up. Each level's
/// policy is replaced by its msat form at `fiat` (see [`resolve_chain`]),
/// so that what the caller then counts and warns about uses the limits
/// decided with.
pub fn decide(
    halted: bool,
    chain: &mut [AgentState],
    fiat: &FiatRates,
    available: Msat,
    attempt: &Attempt,
    now_ms: i64,
) -> Verdict {
    if let Some(stopped) = stop(halted, chain) {
        return Verdict::Deny(stopped);
    }
    if let Err(refused) = resolve_chain(chain, fiat, now_ms) {
        return Verdict::Deny(refused);
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

/// Replaces every level's policy that states limits in a currency by its
/// msat form at `fiat`; a level whose rate is missing or stale refuses the
/// payment (`fiat-rate-unavailable`), naming the level. In memory only:
/// the stored policy keeps its currency.
pub fn resolve_chain(chain: &mut [AgentState], fiat: &FiatRates, now_ms: i64) -> Result<(), Denial> {
    for (depth, level) in chain.iter_mut().enumerate() {
        let Some(policy) = level.policy.as_ref() else { continue };
        match resolve(policy, fiat, now_ms) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(resolved)) => level.policy = Some(Arc::new(resolved)),
            Err(e) => return Err(fiat_denial(depth, &e)),
        }
    }
    Ok(())
}

fn fiat_denial(depth: usize, e: &FiatError) -> Denial {
    let message = match depth {
        0 => format!("{e}: payments are refused until a fresh rate arrives"),
        1 => format!("the parent agent's policy: {e}: payments are refused until a fresh rate arrives"),
        _ => format!("the policy of the ancestor agent {depth} levels up: {e}"),
    };
    denial(FiatError::CODE, message)
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
            task: None,
        }
    }

    fn attempt(amount: u64) -> Attempt {
        Attempt { amount: Msat::new(amount), fee_limit: Msat::ZERO, payee: Payee::default() }
    }

    #[test]
    fn halt_comes_first_then_frozen_ancestors_then_policy_then_balance() {
        let mut chain = [level("child", false, Some(r#"{"max_payment_msat": 10}"#)), level("parent", true, None)];
        let code = |v: Verdict| match v {
            Verdict::Deny(d) => d.code,
            other => panic!("expected a denial, got {other:?}"),
        };
        assert_eq!(code(decide(true, &mut chain, &none(), Msat::new(5), &attempt(50), 0)), "gateway-halted");
        assert_eq!(code(decide(false, &mut chain, &none(), Msat::new(5), &attempt(50), 0)), "agent-frozen");
        let mut unfrozen = [level("child", false, Some(r#"{"max_payment_msat": 10}"#)), level("parent", false, None)];
        assert_eq!(code(decide(false, &mut unfrozen, &none(), Msat::new(5), &attempt(50), 0)), "amount-too-large");
        assert_eq!(code(decide(false, &mut unfrozen, &none(), Msat::new(5), &attempt(8), 0)), "insufficient-balance");
        assert_eq!(decide(false, &mut unfrozen, &none(), Msat::new(8), &attempt(8), 0), Verdict::Allow);
    }

    #[test]
    fn a_denial_names_the_level_that_refused_even_past_levels_without_policy() {
        let mut chain = [level("child", false, None), level("parent", false, Some(r#"{"max_payment_msat": 10}"#))];
        match decide(false, &mut chain, &none(), Msat::new(100), &attempt(50), 0) {
            Verdict::Deny(d) => assert!(d.message.contains("parent"), "{}", d.message),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn none() -> FiatRates {
        FiatRates::default()
    }

    #[test]
    fn limits_in_a_currency_are_decided_at_the_snapshot_rate_or_refused() {
        use coffer_core::policy::{Currency, Decimal, FiatRate};
        let fiat = r#"{"max_payment": {"amount": "1.00", "currency": "USD"}}"#;
        let mut chain = [level("child", false, None), level("parent", false, Some(fiat))];
        let refused = match decide(false, &mut chain, &none(), Msat::new(100), &attempt(1), 0) {
            Verdict::Deny(d) => d,
            other => panic!("expected a denial, got {other:?}"),
        };
        assert_eq!(refused.code, "fiat-rate-unavailable");
        assert!(refused.message.contains("parent") && refused.message.contains("USD"), "{}", refused.message);
        // 1 BTC = 100,000,000 USD: 1 USD = 1,000 msat.
        let mut rates = FiatRates::default();
        let rate = FiatRate { btc_price: Decimal::parse("100000000").unwrap(), at_ms: 0, max_age_ms: Some(10) };
        rates.set(Currency::parse("USD").unwrap(), rate).unwrap();
        assert_eq!(decide(false, &mut chain, &rates, Msat::new(5_000), &attempt(1_000), 10), Verdict::Allow);
        assert_eq!(chain[1].policy.as_ref().and_then(|p| p.max_payment_msat), Some(Msat::new(1_000)));
        let mut chain = [level("child", false, Some(fiat))];
        let code = |v: Verdict| match v {
            Verdict::Deny(d) => d.code,
            other => panic!("expected a denial, got {other:?}"),
        };
        assert_eq!(code(decide(false, &mut chain, &rates, Msat::new(5_000), &attempt(1_001), 10)), "amount-too-large");
        let mut chain = [level("child", false, Some(fiat))];
        assert_eq!(code(decide(false, &mut chain, &rates, Msat::new(5_000), &attempt(1), 11)), "fiat-rate-unavailable");
    }

    #[test]
    fn a_hold_needs_the_funds_too() {
        let mut chain = [level("a", false, Some(r#"{"approval_above_msat": 5}"#))];
        assert_eq!(decide(false, &mut chain, &none(), Msat::new(10), &attempt(10), 0), Verdict::Hold);
        assert!(matches!(decide(false, &mut chain, &none(), Msat::new(9), &attempt(10), 0), Verdict::Deny(_)));
    }
}
