//! The decision on one payment attempt: a pure, deterministic function of
//! the policy, the usage, the attempt and the time.

use super::spec::{Budget, Payee, PayeeDefault, PayeeRules, Policy};
use super::usage::Usage;
use crate::amount::Msat;
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

/// A payment the agent wants to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The invoice amount.
    pub amount: Msat,
    /// The most the payment may pay in routing fees (reserved up front);
    /// zero for a payment inside the gateway.
    pub fee_limit: Msat,
    pub payee: Payee,
}

impl Attempt {
    /// What the payment may spend at most: what every limit is checked
    /// against. Saturates, and anything that large is denied anyway.
    pub fn spend(&self) -> Msat {
        self.amount.checked_add(self.fee_limit).unwrap_or(Msat::new(u64::MAX))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow,
    /// Fits every limit but waits for a person. The caller reserves and
    /// records its spend now, so that what is held also counts.
    Hold {
        reason: HoldReason,
    },
    Deny {
        code: DenyCode,
        /// For people: names the limit and the numbers.
        message: String,
        /// For a budget denial, what could still be spent (amount plus fee
        /// limit) under the tightest budget.
        #[serde(skip_serializing_if = "Option::is_none")]
        remaining_msat: Option<Msat>,
    },
}

impl Decision {
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }

    pub fn deny_code(&self) -> Option<DenyCode> {
        match self {
            Decision::Deny { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn deny(code: DenyCode, message: String) -> Decision {
        Decision::Deny { code, message, remaining_msat: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldReason {
    ApprovalRequired,
}

impl HoldReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            HoldReason::ApprovalRequired => "approval-required",
        }
    }
}

/// Why a payment was denied. [`DenyCode::as_str`] is stable: it is the
/// suffix of the HTTP problem type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyCode {
    PolicyExpired,
    PayeeNotAllowed,
    AmountTooLarge,
    RateLimited,
    BudgetExceeded,
}

impl DenyCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyCode::PolicyExpired => "policy-expired",
            DenyCode::PayeeNotAllowed => "payee-not-allowed",
            DenyCode::AmountTooLarge => "amount-too-large",
            DenyCode::RateLimited => "rate-limited",
            DenyCode::BudgetExceeded => "budget-exceeded",
        }
    }
}

/// Decides one attempt against one policy. Checks, in order: expiry, payee,
/// size, rate, budgets (every window and the lifetime, on amount plus fee
/// limit), and last approval. Budgets come before approval so that a held
/// payment also fits: its spend is reserved and recorded when it is held.
///
/// `now_ms` is taken no earlier than the latest time `usage` has seen (see
/// [`Usage`]). The policy should be validated; an unvalidated one is still
/// evaluated without panicking.
pub fn evaluate(policy: &Policy, usage: &Usage, attempt: &Attempt, now_ms: i64) -> Decision {
    let now_ms = usage.effective_now_ms(now_ms);
    let denial = check_expiry(policy, now_ms)
        .or_else(|| check_payee(&policy.payees, &attempt.payee))
        .or_else(|| check_size(policy, attempt))
        .or_else(|| check_l402(policy, usage, attempt, now_ms))
        .or_else(|| check_rate(policy, usage, now_ms))
        .or_else(|| check_budgets(policy, usage, attempt, now_ms));
    if let Some(denial) = denial {
        return denial;
    }
    match policy.approval_above_msat {
        Some(threshold_msat) if attempt.amount > threshold_msat => {
            Decision::Hold { reason: HoldReason::ApprovalRequired }
        }
        _ => Decision::Allow,
    }
}

/// Decides an attempt of a sub-agent: `chain` is the agent's own policy and
/// usage first, then its parent's, and so on up. A child's spend counts
/// against every ancestor, so every level must pass: the first denial wins,
/// and the payment is held if any level holds it. An empty chain has no
/// limits, like [`Policy::default`].
///
/// The caller must then record the spend (and later any release) into the
/// [`Usage`] of **every** level, not only the agent's own.
pub fn evaluate_chain(chain: &[(&Policy, &Usage)], attempt: &Attempt, now_ms: i64) -> Decision {
    let mut decision = Decision::Allow;
    for (level, (policy, usage)) in chain.iter().enumerate() {
        match evaluate(policy, usage, attempt, now_ms) {
            Decision::Deny { code, message, remaining_msat } => {
                let message = match level {
                    0 => message,
                    1 => format!("the parent agent's policy: {message}"),
                    _ => format!("the policy of the ancestor agent {level} levels up: {message}"),
                };
                return Decision::Deny { code, message, remaining_msat };
            }
            hold @ Decision::Hold { .. } if decision == Decision::Allow => decision = hold,
            Decision::Hold { .. } | Decision::Allow => {}
        }
    }
    decision
}

fn check_expiry(policy: &Policy, now_ms: i64) -> Option<Decision> {
    let expires_at = policy.expires_at?;
    if expires_at.timestamp_millis() > now_ms {
        return None;
    }
    let when = expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    Some(Decision::deny(DenyCode::PolicyExpired, format!("the policy expired at {when}")))
}

fn check_payee(rules: &PayeeRules, payee: &Payee) -> Option<Decision> {
    if let Some(entry) = rules.deny.iter().find(|entry| entry.matches(payee)) {
        return Some(Decision::deny(DenyCode::PayeeNotAllowed, format!("payee {entry} is on the deny list")));
    }
    if rules.default == PayeeDefault::Allow || rules.allow.iter().any(|entry| entry.matches(payee)) {
        return None;
    }
    let message = format!("payee {} is not on the allow list, and other payees are denied", payee.key());
    Some(Decision::deny(DenyCode::PayeeNotAllowed, message))
}

fn check_size(policy: &Policy, attempt: &Attempt) -> Option<Decision> {
    let spend = attempt.spend();
    if spend > Msat::MONEY_MAX {
        return Some(Decision::deny(
            DenyCode::AmountTooLarge,
            format!("the payment needs up to {} ({}), more than 21 million bitcoin", spend, breakdown(attempt)),
        ));
    }
    let max = policy.max_payment_msat?;
    if spend <= max {
        return None;
    }
    let message = format!("the payment needs up to {spend} ({}), above max_payment_msat of {max}", breakdown(attempt));
    Some(Decision::deny(DenyCode::AmountTooLarge, message))
}

/// A paid HTTP request (a payee with a domain): its price against
/// `l402.max_price_msat`, then the budgets of its domain.
fn check_l402(policy: &Policy, usage: &Usage, attempt: &Attempt, now_ms: i64) -> Option<Decision> {
    let domain = attempt.payee.domain.as_deref()?;
    let rules = policy.l402.as_ref()?;
    if let Some(max) = rules.max_price_msat
        && attempt.spend() > max
    {
        let message = format!(
            "the request to {domain} costs up to {} ({}), above l402.max_price_msat of {max}",
            attempt.spend(),
            breakdown(attempt)
        );
        return Some(Decision::deny(DenyCode::AmountTooLarge, message));
    }
    let (budget, remaining_msat) = rules
        .domain_budgets(domain)
        .iter()
        .map(|budget| (budget, budget.limit_msat.saturating_sub(usage.domain_spent_in(domain, budget.window, now_ms))))
        .min_by_key(|(_, remaining)| *remaining)?;
    if attempt.spend() <= remaining_msat {
        return None;
    }
    let message = format!(
        "the request to {domain} costs up to {} ({}), but the {} {} budget for {domain} of {} has {remaining_msat} remaining",
        attempt.spend(),
        breakdown(attempt),
        budget.window,
        budget.kind,
        budget.limit_msat
    );
    Some(Decision::Deny { code: DenyCode::BudgetExceeded, message, remaining_msat: Some(remaining_msat) })
}

fn check_rate(policy: &Policy, usage: &Usage, now_ms: i64) -> Option<Decision> {
    let max = policy.max_payments_per_minute?;
    let recent = usage.payments_last_minute(now_ms);
    if recent < u64::from(max) {
        return None;
    }
    let message = format!("rate limit reached: {recent} payments in the last minute, at most {max} allowed");
    Some(Decision::deny(DenyCode::RateLimited, message))
}

/// A limit on total spend: a budget window or the lifetime.
enum Limit<'a> {
    Window(&'a Budget),
    Lifetime,
}

/// Checks every budget and the lifetime; a denial names the tightest one
/// (least remaining), so that its `remaining_msat` is what could really be
/// spent.
fn check_budgets(policy: &Policy, usage: &Usage, attempt: &Attempt, now_ms: i64) -> Option<Decision> {
    let windows = policy.budgets.iter().map(|budget| {
        let remaining = budget.limit_msat.saturating_sub(usage.spent_in(budget.window, now_ms));
        (Limit::Window(budget), budget.limit_msat, remaining)
    });
    let lifetime =
        policy.lifetime_msat.map(|limit| (Limit::Lifetime, limit, limit.saturating_sub(usage.lifetime_spent())));
    // `min_by_key` keeps the first of equal minima: the order is stable.
    let (limit, limit_msat, remaining_msat) = windows.chain(lifetime).min_by_key(|(_, _, remaining)| *remaining)?;
    if attempt.spend() <= remaining_msat {
        return None;
    }
    let name = match limit {
        Limit::Window(budget) => format!("the {} {} budget", budget.window, budget.kind),
        Limit::Lifetime => "the lifetime budget".to_owned(),
    };
    let message = format!(
        "the payment needs up to {} ({}), but {name} of {limit_msat} has {remaining_msat} remaining",
        attempt.spend(),
        breakdown(attempt)
    );
    Some(Decision::Deny { code: DenyCode::BudgetExceeded, message, remaining_msat: Some(remaining_msat) })
}

fn breakdown(attempt: &Attempt) -> String {
    format!("amount {} + fee limit {}", attempt.amount.as_u64(), attempt.fee_limit.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::PayeeEntry;
    use crate::policy::window::{MS_PER_HOUR, Window};
    use chrono::{DateTime, Utc};

    const NOW_MS: i64 = 1_750_000_000_000;
    const NODE: &str = "03aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

    fn budget(limit_msat: u64, window: &str) -> Budget {
        let window = Window::parse(window).unwrap();
        Budget { limit_msat: Msat::new(limit_msat), limit: None, window, kind: window.kind() }
    }

    fn to_node(amount: u64, fee_limit: u64) -> Attempt {
        Attempt {
            amount: Msat::new(amount),
            fee_limit: Msat::new(fee_limit),
            payee: Payee { node_pubkey_hex: Some(NODE.into()), ..Payee::default() },
        }
    }

    fn to_agent(id: &str, amount: u64) -> Attempt {
        Attempt {
            amount: Msat::new(amount),
            fee_limit: Msat::ZERO,
            payee: Payee { agent_id: Some(id.into()), ..Payee::default() },
        }
    }

    fn code(decision: &Decision) -> Option<DenyCode> {
        decision.deny_code()
    }

    #[test]
    fn default_policy_allows() {
        let decision = evaluate(&Policy::default(), &Usage::new(), &to_node(1_000, 10), NOW_MS);
        assert_eq!(decision, Decision::Allow);
    }

    #[test]
    fn expired_policy_denies_from_the_instant_of_expiry() {
        let expires_at: DateTime<Utc> = DateTime::from_timestamp_millis(NOW_MS).unwrap();
        let policy = Policy { expires_at: Some(expires_at), ..Policy::default() };
        let usage = Usage::new();
        assert_eq!(evaluate(&policy, &usage, &to_node(1, 0), NOW_MS - 1), Decision::Allow);
        let decision = evaluate(&policy, &usage, &to_node(1, 0), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::PolicyExpired));
        if let Decision::Deny { message, .. } = decision {
            assert!(message.contains("2025-06-15T15:06:40Z"), "{message}");
        }
    }

    #[test]
    fn deny_list_wins_over_allow_list() {
        let mut policy = Policy::default();
        policy.payees.allow.push(PayeeEntry::parse("agent:bob").unwrap());
        policy.payees.deny.push(PayeeEntry::parse(&format!("node:{NODE}")).unwrap());
        let usage = Usage::new();
        // One payee with two identities: allowed as bob, denied as the node.
        let mut attempt = to_agent("bob", 5);
        attempt.payee.node_pubkey_hex = Some(NODE.to_ascii_uppercase());
        assert_eq!(code(&evaluate(&policy, &usage, &attempt, NOW_MS)), Some(DenyCode::PayeeNotAllowed));
        assert_eq!(evaluate(&policy, &usage, &to_agent("bob", 5), NOW_MS), Decision::Allow);
        assert_eq!(evaluate(&policy, &usage, &to_agent("carol", 5), NOW_MS), Decision::Allow, "default allow");
    }

    #[test]
    fn default_deny_needs_the_allow_list() {
        let mut policy = Policy::default();
        policy.payees.default = PayeeDefault::Deny;
        policy.payees.allow.push(PayeeEntry::parse("domain:api.example.com").unwrap());
        let usage = Usage::new();
        let decision = evaluate(&policy, &usage, &to_agent("carol", 5), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::PayeeNotAllowed));
        let api =
            Attempt { payee: Payee { domain: Some("API.example.com".into()), ..Payee::default() }, ..to_agent("x", 5) };
        assert_eq!(evaluate(&policy, &usage, &api, NOW_MS), Decision::Allow);
    }

    #[test]
    fn max_payment_counts_the_fee_limit() {
        let policy = Policy { max_payment_msat: Some(Msat::new(1_000)), ..Policy::default() };
        let usage = Usage::new();
        assert_eq!(evaluate(&policy, &usage, &to_node(990, 10), NOW_MS), Decision::Allow);
        let decision = evaluate(&policy, &usage, &to_node(990, 11), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::AmountTooLarge));
        if let Decision::Deny { message, .. } = decision {
            assert!(message.contains("1001 msat") && message.contains("1000 msat"), "{message}");
        }
    }

    #[test]
    fn absurd_amounts_are_denied_without_overflow() {
        let usage = Usage::new();
        let decision = evaluate(&Policy::default(), &usage, &to_node(u64::MAX, u64::MAX), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::AmountTooLarge));
        let decision = evaluate(&Policy::default(), &usage, &to_node(crate::MONEY_MAX_MSAT, 1), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::AmountTooLarge));
    }

    #[test]
    fn rate_limit_counts_the_last_minute() {
        let policy = Policy { max_payments_per_minute: Some(2), ..Policy::default() };
        let mut usage = Usage::new();
        usage.record(&policy, Msat::new(1), NOW_MS);
        usage.record(&policy, Msat::new(1), NOW_MS + 10_000);
        let decision = evaluate(&policy, &usage, &to_node(1, 0), NOW_MS + 20_000);
        assert_eq!(code(&decision), Some(DenyCode::RateLimited));
        // One second of slack: whole 1-second buckets are counted.
        assert_eq!(evaluate(&policy, &usage, &to_node(1, 0), NOW_MS + 61_000), Decision::Allow);
    }

    #[test]
    fn budget_names_the_tightest_window_and_remaining() {
        let policy = Policy {
            budgets: vec![budget(10_000, "day"), budget(1_000, "1h")],
            lifetime_msat: Some(Msat::new(50_000)),
            ..Policy::default()
        };
        let mut usage = Usage::new();
        usage.record(&policy, Msat::new(700), NOW_MS);
        assert_eq!(evaluate(&policy, &usage, &to_node(290, 10), NOW_MS), Decision::Allow);
        let decision = evaluate(&policy, &usage, &to_node(291, 10), NOW_MS);
        match decision {
            Decision::Deny { code, message, remaining_msat } => {
                assert_eq!(code, DenyCode::BudgetExceeded);
                assert_eq!(remaining_msat, Some(Msat::new(300)));
                assert!(message.contains("1h rolling budget"), "{message}");
                assert!(message.contains("301 msat") && message.contains("300 msat remaining"), "{message}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        // An hour later the rolling budget has freed up.
        assert_eq!(evaluate(&policy, &usage, &to_node(900, 0), NOW_MS + MS_PER_HOUR + 60_000), Decision::Allow);
    }

    #[test]
    fn lifetime_budget_denies() {
        let policy = Policy { lifetime_msat: Some(Msat::new(1_000)), ..Policy::default() };
        let mut usage = Usage::new();
        usage.record(&policy, Msat::new(1_000), NOW_MS);
        let decision = evaluate(&policy, &usage, &to_node(1, 0), NOW_MS + 400 * 24 * MS_PER_HOUR);
        assert_eq!(code(&decision), Some(DenyCode::BudgetExceeded));
        assert!(matches!(decision, Decision::Deny { ref message, .. } if message.contains("lifetime")));
    }

    #[test]
    fn approval_threshold_holds_after_the_budget_check() {
        let policy =
            Policy { approval_above_msat: Some(Msat::new(100)), budgets: vec![budget(150, "1h")], ..Policy::default() };
        let usage = Usage::new();
        assert_eq!(evaluate(&policy, &usage, &to_node(100, 50), NOW_MS), Decision::Allow, "fee is not compared");
        let held = evaluate(&policy, &usage, &to_node(101, 0), NOW_MS);
        assert_eq!(held, Decision::Hold { reason: HoldReason::ApprovalRequired });
        // Over budget: denied, not held for a person to approve in vain.
        assert_eq!(code(&evaluate(&policy, &usage, &to_node(151, 0), NOW_MS)), Some(DenyCode::BudgetExceeded));
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let expired = DateTime::from_timestamp_millis(NOW_MS - 1).unwrap();
        let mut policy = Policy {
            expires_at: Some(expired),
            max_payment_msat: Some(Msat::new(10)),
            max_payments_per_minute: Some(1),
            budgets: vec![budget(5, "1h")],
            ..Policy::default()
        };
        policy.payees.deny.push(PayeeEntry::parse("agent:eve").unwrap());
        let mut usage = Usage::new();
        usage.record(&policy, Msat::new(5), NOW_MS - 10);
        let attempt = to_agent("eve", 50);
        let mut codes = Vec::new();
        for _ in 0..5 {
            let decision = evaluate(&policy, &usage, &attempt, NOW_MS);
            let Some(code) = decision.deny_code() else {
                break;
            };
            codes.push(code);
            match code {
                DenyCode::PolicyExpired => policy.expires_at = None,
                DenyCode::PayeeNotAllowed => policy.payees.deny.clear(),
                DenyCode::AmountTooLarge => policy.max_payment_msat = None,
                DenyCode::RateLimited => policy.max_payments_per_minute = None,
                DenyCode::BudgetExceeded => policy.budgets.clear(),
            }
        }
        use DenyCode::*;
        assert_eq!(codes, [PolicyExpired, PayeeNotAllowed, AmountTooLarge, RateLimited, BudgetExceeded]);
        assert_eq!(evaluate(&policy, &usage, &attempt, NOW_MS), Decision::Allow);
    }

    #[test]
    fn deny_codes_have_stable_slugs() {
        let slugs: Vec<&str> = [
            DenyCode::BudgetExceeded,
            DenyCode::PayeeNotAllowed,
            DenyCode::RateLimited,
            DenyCode::AmountTooLarge,
            DenyCode::PolicyExpired,
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(
            slugs,
            ["budget-exceeded", "payee-not-allowed", "rate-limited", "amount-too-large", "policy-expired"]
        );
        assert_eq!(serde_json::to_value(DenyCode::RateLimited).unwrap(), "rate-limited");
        assert_eq!(HoldReason::ApprovalRequired.as_str(), "approval-required");
        let json = serde_json::to_value(Decision::Hold { reason: HoldReason::ApprovalRequired }).unwrap();
        assert_eq!(json, serde_json::json!({"decision": "hold", "reason": "approval-required"}));
    }

    #[test]
    fn chain_first_denial_wins_and_any_hold_holds() {
        let child = Policy { approval_above_msat: Some(Msat::new(10)), ..Policy::default() };
        let parent = Policy { budgets: vec![budget(100, "1h")], ..Policy::default() };
        let (child_usage, mut parent_usage) = (Usage::new(), Usage::new());
        parent_usage.record(&parent, Msat::new(95), NOW_MS);
        let chain = [(&child, &child_usage), (&parent, &parent_usage)];
        assert_eq!(evaluate_chain(&chain, &to_node(5, 0), NOW_MS), Decision::Allow);
        let decision = evaluate_chain(&chain, &to_node(6, 0), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::BudgetExceeded));
        assert!(
            matches!(&decision, Decision::Deny { message, .. } if message.starts_with("the parent agent's policy"))
        );
        // The child would hold it for approval, but the parent denies: a
        // denial anywhere wins.
        let decision = evaluate_chain(&chain, &to_node(11, 0), NOW_MS);
        assert_eq!(code(&decision), Some(DenyCode::BudgetExceeded));
        let relaxed = Policy::default();
        let chain = [(&relaxed, &child_usage), (&child, &child_usage)];
        assert_eq!(
            evaluate_chain(&chain, &to_node(11, 0), NOW_MS),
            Decision::Hold { reason: HoldReason::ApprovalRequired }
        );
        assert_eq!(evaluate_chain(&[], &to_node(11, 0), NOW_MS), Decision::Allow);
    }

    #[test]
    fn evaluation_never_panics_on_extreme_time() {
        let policy = Policy {
            budgets: vec![budget(1, "1s"), budget(1, "366d"), budget(1, "week")],
            max_payments_per_minute: Some(1),
            expires_at: DateTime::from_timestamp_millis(0),
            ..Policy::default()
        };
        for now_ms in [i64::MIN, -1, 0, i64::MAX] {
            let decision = evaluate(&policy, &Usage::new(), &to_node(u64::MAX, 0), now_ms);
            assert!(decision.is_deny(), "{now_ms}: {decision:?}");
        }
    }
}

#[cfg(test)]
mod l402_tests {
    use super::*;
    use crate::policy::window::MS_PER_HOUR;

    const NOW_MS: i64 = 1_750_000_000_000;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json).unwrap()
    }

    fn request(domain: &str, price_msat: u64) -> Attempt {
        Attempt {
            amount: Msat::new(price_msat),
            fee_limit: Msat::ZERO,
            payee: Payee { agent_id: Some("agt_seller".into()), domain: Some(domain.into()), ..Payee::default() },
        }
    }

    fn deny_message(decision: Decision) -> (DenyCode, String) {
        match decision {
            Decision::Deny { code, message, .. } => (code, message),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn max_price_applies_to_paid_requests_only() {
        let p = policy(r#"{"l402": {"max_price_msat": 1000}}"#);
        let usage = Usage::new();
        assert_eq!(evaluate(&p, &usage, &request("api.example.com", 1000), NOW_MS), Decision::Allow);
        let (code, message) = deny_message(evaluate(&p, &usage, &request("api.example.com", 1001), NOW_MS));
        assert_eq!(code, DenyCode::AmountTooLarge);
        assert!(message.contains("l402.max_price_msat") && message.contains("api.example.com"), "{message}");
        let plain = Attempt { payee: Payee { agent_id: Some("x".into()), ..Payee::default() }, ..request("a.b", 5000) };
        assert_eq!(evaluate(&p, &usage, &plain, NOW_MS), Decision::Allow, "not an L402 payment");
    }

    #[test]
    fn domain_budgets_count_per_domain_and_case_blind() {
        let p = policy(
            r#"{"l402": {"domains": {"api.example.com": [{"limit_msat": 3000, "window": "1h", "kind": "rolling"}]}}}"#,
        );
        let mut usage = Usage::new();
        for _ in 0..3 {
            assert_eq!(evaluate(&p, &usage, &request("API.example.com", 1000), NOW_MS), Decision::Allow);
            usage.record(&p, Msat::new(1000), NOW_MS);
            usage.record_domain(&p, "API.example.com", Msat::new(1000), NOW_MS);
        }
        let (code, message) = deny_message(evaluate(&p, &usage, &request("api.example.com", 1), NOW_MS));
        assert_eq!(code, DenyCode::BudgetExceeded);
        assert!(message.contains("budget for api.example.com"), "{message}");
        assert_eq!(evaluate(&p, &usage, &request("other.example.com", 1000), NOW_MS), Decision::Allow);
        assert_eq!(
            evaluate(&p, &usage, &request("api.example.com", 1000), NOW_MS + MS_PER_HOUR + 60_000),
            Decision::Allow
        );
    }

    #[test]
    fn domain_usage_survives_a_round_trip_and_is_dropped_with_its_budget() {
        let p =
            policy(r#"{"l402": {"domains": {"a.com": [{"limit_msat": 10, "window": "day", "kind": "calendar"}]}}}"#);
        let mut usage = Usage::new();
        usage.record_domain(&p, "a.com", Msat::new(7), NOW_MS);
        let again: Usage = serde_json::from_str(&serde_json::to_string(&usage).unwrap()).unwrap();
        let day = crate::policy::Window::parse("day").unwrap();
        assert_eq!(again.domain_spent_in("A.com", day, NOW_MS), Msat::new(7));
        let mut usage = again;
        usage.record_domain(&Policy::default(), "a.com", Msat::new(1), NOW_MS);
        assert_eq!(usage.domain_spent_in("a.com", day, NOW_MS), Msat::ZERO);
    }

    #[test]
    fn domains_join_the_payee_lists() {
        let p = policy(r#"{"payees": {"default": "deny", "allow": ["domain:api.example.com"]}}"#);
        assert_eq!(evaluate(&p, &Usage::new(), &request("api.example.com", 5), NOW_MS), Decision::Allow);
        let (code, _) = deny_message(evaluate(&p, &Usage::new(), &request("evil.example.com", 5), NOW_MS));
        assert_eq!(code, DenyCode::PayeeNotAllowed);
    }

    #[test]
    fn l402_errors_name_the_field() {
        let err = |json: &str| Policy::from_json(json).unwrap_err().field;
        assert_eq!(err(r#"{"l402": {"max_price_msat": 0}}"#), "l402.max_price_msat");
        assert_eq!(err(r#"{"l402": {"domains": {"-bad-": []}}}"#), "l402.domains.-bad-");
        assert_eq!(
            err(r#"{"l402": {"domains": {"a.com": [{"limit_msat": 0, "window": "1h", "kind": "rolling"}]}}}"#),
            "l402.domains.a.com[0].limit_msat"
        );
        assert_eq!(
            err(r#"{"l402": {"domains": {"a.com": [{"limit_msat": 5, "window": "day", "kind": "rolling"}]}}}"#),
            "l402.domains.a.com[0].kind"
        );
        assert_eq!(err(r#"{"l402": {"max_price": 5}}"#), "l402.max_price");
        assert!(Policy::from_json(r#"{"l402": {}}"#).is_ok());
    }
}
