//! Property tests of the policy engine. The safety properties are checked by
//! brute force against the exact list of recorded payments, never against
//! the engine's own bookkeeping.

use chrono::{DateTime, Datelike, Utc};
use coffer_core::Msat;
use coffer_core::policy::{
    Attempt, BUCKETS_PER_WINDOW, Budget, Decision, DenyCode, Payee, PayeeDefault, PayeeEntry, Policy, Usage, Window,
    budget_report, evaluate, evaluate_chain,
};
use proptest::prelude::*;
use std::collections::HashMap;

const HOUR_MS: i64 = 3_600_000;
const TEN_YEARS_MS: i64 = 10 * 365 * 24 * HOUR_MS;

/// A payment that was allowed or held, and recorded: when, and its spend.
type Recorded = Vec<(i64, u64)>;

fn budget(limit_msat: u64, window: &str) -> Budget {
    let window = Window::parse(window).expect("test windows are valid");
    Budget { limit_msat: Msat::new(limit_msat), limit: None, window, kind: window.kind() }
}

fn attempt(amount: u64, fee_limit: u64) -> Attempt {
    Attempt { amount: Msat::new(amount), fee_limit: Msat::new(fee_limit), payee: Payee::default() }
}

fn goes_ahead(decision: &Decision) -> bool {
    matches!(decision, Decision::Allow | Decision::Hold { .. })
}

fn bucket_ms(window_ms: i64) -> i64 {
    (window_ms + BUCKETS_PER_WINDOW - 1) / BUCKETS_PER_WINDOW
}

/// The exact spend in `(from_ms, to_ms]`.
fn exact_spend(recorded: &[(i64, u64)], from_ms: i64, to_ms: i64) -> u64 {
    recorded.iter().filter(|(t, _)| *t > from_ms && *t <= to_ms).map(|(_, v)| v).sum()
}

/// The most spent in any interval `(a - window, a]`. The maximum is reached
/// with `a` at a payment time, so those are the only ends to try.
fn max_rolling_spend(recorded: &[(i64, u64)], window_ms: i64) -> u64 {
    recorded.iter().map(|(end, _)| exact_spend(recorded, end - window_ms, *end)).max().unwrap_or(0)
}

/// The most spent in any one calendar period, periods computed by chrono.
fn max_calendar_spend(recorded: &[(i64, u64)], period: &str) -> u64 {
    let mut sums: HashMap<(i32, u32), u64> = HashMap::new();
    for (t, v) in recorded {
        *sums.entry(calendar_key(*t, period)).or_default() += v;
    }
    sums.into_values().max().unwrap_or(0)
}

/// Which calendar period `t` is in, by chrono rather than by the engine.
fn calendar_key(t: i64, period: &str) -> (i32, u32) {
    let date = DateTime::<Utc>::from_timestamp_millis(t).expect("test times are in chrono's range").date_naive();
    match period {
        "day" => (date.year(), date.ordinal()),
        "week" => (date.iso_week().year(), date.iso_week().week()),
        "month" => (date.year(), date.month()),
        _ => unreachable!("test periods are day, week and month"),
    }
}

/// Time steps up to two hours, weighted towards bursts.
fn step_ms() -> impl Strategy<Value = i64> {
    prop_oneof![0..=1_000i64, 0..=120_000i64, 0..=2 * HOUR_MS]
}

fn start_ms() -> impl Strategy<Value = i64> {
    -TEN_YEARS_MS..=TEN_YEARS_MS
}

/// A policy with two rolling windows, two calendar windows and a lifetime.
fn budget_policy() -> impl Strategy<Value = Policy> {
    (5_000u64..=50_000, 2_000u64..=30_000, 20_000u64..=200_000, 50_000u64..=500_000, 100_000u64..=2_000_000).prop_map(
        |(hour, quarter, day, week, lifetime)| Policy {
            budgets: vec![budget(hour, "1h"), budget(quarter, "15m"), budget(day, "day"), budget(week, "week")],
            lifetime_msat: Some(Msat::new(lifetime)),
            ..Policy::default()
        },
    )
}

/// Whether the attempt fits even if every rolling window were one bucket
/// longer: then the engine must let it through (it over-counts by less
/// than one bucket, never more).
fn fits_with_slack(policy: &Policy, recorded: &[(i64, u64)], now_ms: i64, spend: u64) -> bool {
    let windows_fit = policy.budgets.iter().all(|b| {
        let used = match b.window.rolling_ms() {
            Some(w) => exact_spend(recorded, now_ms - w - bucket_ms(w), now_ms),
            None => {
                let period = b.window.to_string();
                let key = calendar_key(now_ms, &period);
                recorded.iter().filter(|(t, _)| calendar_key(*t, &period) == key).map(|(_, v)| v).sum()
            }
        };
        used + spend <= b.limit_msat.as_u64()
    });
    let total: u64 = recorded.iter().map(|(_, v)| v).sum();
    windows_fit && policy.lifetime_msat.is_none_or(|l| total + spend <= l.as_u64())
}

fn assert_within_limits(policy: &Policy, recorded: &[(i64, u64)]) -> Result<(), TestCaseError> {
    for b in &policy.budgets {
        let limit = b.limit_msat.as_u64();
        let worst = match b.window.rolling_ms() {
            Some(window_ms) => max_rolling_spend(recorded, window_ms),
            None => max_calendar_spend(recorded, &b.window.to_string()),
        };
        prop_assert!(worst <= limit, "{} budget: {} spent in one window, limit {}", b.window, worst, limit);
    }
    let total: u64 = recorded.iter().map(|(_, v)| v).sum();
    if let Some(lifetime) = policy.lifetime_msat {
        prop_assert!(total <= lifetime.as_u64(), "lifetime: {} spent, limit {}", total, lifetime);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (a) Whatever the timing, no rolling window of the policy's length,
    /// no calendar period and no lifetime ever holds more than its limit;
    /// and nothing that fits with one bucket of slack is denied.
    #[test]
    fn recorded_spend_never_exceeds_any_window(
        policy in budget_policy(),
        start in start_ms(),
        steps in prop::collection::vec((step_ms(), 1u64..=8_000, 0u64..=500), 1..120),
    ) {
        let mut usage = Usage::new();
        let mut recorded: Recorded = Vec::new();
        let mut now_ms = start;
        for (step, amount, fee) in steps {
            now_ms += step;
            let decision = evaluate(&policy, &usage, &attempt(amount, fee), now_ms);
            let must_allow = fits_with_slack(&policy, &recorded, now_ms, amount + fee);
            prop_assert!(!must_allow || decision == Decision::Allow, "denied with room to spare: {:?}", decision);
            if goes_ahead(&decision) {
                usage.record(&policy, Msat::new(amount + fee), now_ms);
                recorded.push((now_ms, amount + fee));
            } else {
                prop_assert_eq!(decision.deny_code(), Some(DenyCode::BudgetExceeded));
            }
        }
        assert_within_limits(&policy, &recorded)?;
    }

    /// The rolling spend the engine sees is at least the exact spend in the
    /// window and at most the exact spend in the window made one bucket
    /// longer.
    #[test]
    fn rolling_spend_is_bracketed_by_exact_sums(
        window in prop::sample::select(vec!["1s", "30s", "15m", "1h", "7d"]),
        start in start_ms(),
        steps in prop::collection::vec((step_ms(), 1u64..=1_000_000), 1..80),
        probe_step in step_ms(),
    ) {
        let policy = Policy { budgets: vec![budget(u64::MAX, window)], ..Policy::default() };
        let window = Window::parse(window).expect("valid");
        let window_ms = window.rolling_ms().expect("rolling");
        let mut usage = Usage::new();
        let mut recorded: Recorded = Vec::new();
        let mut now_ms = start;
        for (step, amount) in steps {
            now_ms += step;
            usage.record(&policy, Msat::new(amount), now_ms);
            recorded.push((now_ms, amount));
            for probe in [now_ms, now_ms + probe_step] {
                let seen = usage.spent_in(window, probe).as_u64();
                let exact = exact_spend(&recorded, probe - window_ms, probe);
                let slack = exact_spend(&recorded, probe - window_ms - bucket_ms(window_ms), probe);
                prop_assert!(exact <= seen && seen <= slack, "at {}: exact {} seen {} slack {}", probe, exact, seen, slack);
            }
        }
    }

    /// (b) The same inputs give the same decision, also from a clone of the
    /// usage and after the usage and the policy went through JSON.
    #[test]
    fn evaluate_is_deterministic(
        policy in any_policy(),
        start in start_ms(),
        history in prop::collection::vec((step_ms(), 1u64..=100_000), 0..40),
        (amount, fee, payee) in (1u64..=300_000, 0u64..=5_000, 0usize..4),
        later in step_ms(),
    ) {
        let mut usage = Usage::new();
        let mut now_ms = start;
        for (step, spend) in history {
            now_ms += step;
            usage.record(&policy, Msat::new(spend), now_ms);
        }
        now_ms += later;
        let mut attempt = attempt(amount, fee);
        attempt.payee.agent_id = Some(format!("agent{payee}"));
        let first = evaluate(&policy, &usage, &attempt, now_ms);
        prop_assert_eq!(&first, &evaluate(&policy, &usage, &attempt, now_ms));
        prop_assert_eq!(&first, &evaluate(&policy, &usage.clone(), &attempt, now_ms));
        let stored: Usage = serde_json::from_str(&serde_json::to_string(&usage).expect("serialises")).expect("parses");
        let reparsed = Policy::from_json(&serde_json::to_string(&policy).expect("serialises"));
        prop_assert_eq!(&reparsed, &Ok(policy.clone()));
        prop_assert_eq!(&first, &evaluate(&policy, &stored, &attempt, now_ms));
    }

    /// (c) record(x) then release(x) leaves every window, and the lifetime,
    /// exactly as if x had never been recorded, whatever was paid in between:
    /// released spend becomes spendable once, never twice, and nothing that
    /// was not reserved is given back (not even from a later bucket or period
    /// when the reservation's own has gone).
    #[test]
    fn release_restores_exactly_what_record_took(
        start in start_ms(),
        history in prop::collection::vec((step_ms(), 1u64..=100_000), 0..30),
        (reserve_step, reserved) in (step_ms(), 1u64..=100_000),
        between in prop::collection::vec((step_ms(), 1u64..=100_000), 0..5),
        release_step in step_ms(),
        after in prop::collection::vec((step_ms(), 1u64..=100_000), 0..5),
    ) {
        let policy = Policy {
            budgets: vec![budget(u64::MAX, "1h"), budget(u64::MAX, "90s"), budget(u64::MAX, "day"), budget(u64::MAX, "month")],
            lifetime_msat: Some(Msat::MONEY_MAX),
            ..Policy::default()
        };
        let mut without = Usage::new();
        let mut now_ms = start;
        for (step, spend) in history {
            now_ms += step;
            without.record(&policy, Msat::new(spend), now_ms);
        }
        let reserved_at_ms = now_ms + reserve_step;
        let mut with = without.clone();
        with.record(&policy, Msat::new(reserved), reserved_at_ms);
        for b in &policy.budgets {
            let before = without.spent_in(b.window, reserved_at_ms).as_u64();
            prop_assert_eq!(with.spent_in(b.window, reserved_at_ms).as_u64(), before + reserved, "record takes x from {}", b.window);
        }
        // Payments made while the reservation is pending may move every
        // window into a new bucket or period before it is released.
        now_ms = reserved_at_ms;
        for (step, spend) in between {
            now_ms += step;
            with.record(&policy, Msat::new(spend), now_ms);
            without.record(&policy, Msat::new(spend), now_ms);
        }
        now_ms += release_step;
        with.release(&policy, Msat::new(reserved), reserved_at_ms, now_ms);
        for (step, spend) in after {
            now_ms += step;
            with.record(&policy, Msat::new(spend), now_ms);
            without.record(&policy, Msat::new(spend), now_ms);
        }
        let (with_report, without_report) = (budget_report(&policy, &with, now_ms), budget_report(&policy, &without, now_ms));
        prop_assert_eq!(&with_report.windows, &without_report.windows);
        prop_assert_eq!(with_report.lifetime_remaining_msat, without_report.lifetime_remaining_msat);
        for probe in [now_ms + 1, now_ms + HOUR_MS, now_ms + 40 * 24 * HOUR_MS] {
            for b in &policy.budgets {
                prop_assert_eq!(with.spent_in(b.window, probe), without.spent_in(b.window, probe), "{} at {}", b.window, probe);
            }
        }
    }

    /// (d) Splitting a spend into many tiny payments does not get around a
    /// rolling budget: 1,000 payments of 1 sat, one a second, against
    /// 100 sat an hour.
    #[test]
    fn tiny_payments_cannot_split_past_an_hourly_budget(start in start_ms(), jitter in 0i64..1_000) {
        let policy = Policy { budgets: vec![budget(100_000, "1h")], ..Policy::default() };
        let mut usage = Usage::new();
        let mut recorded: Recorded = Vec::new();
        for i in 0..1_000 {
            let now_ms = start + i * 1_000 + jitter;
            if goes_ahead(&evaluate(&policy, &usage, &attempt(1_000, 0), now_ms)) {
                usage.record(&policy, Msat::new(1_000), now_ms);
                recorded.push((now_ms, 1_000));
            }
        }
        prop_assert!(max_rolling_spend(&recorded, HOUR_MS) <= 100_000);
        // All 1,000 payments fall within 17 minutes: exactly the first 100 fit.
        prop_assert_eq!(recorded.len(), 100);
    }

    /// (e) However the children of one parent spend, the parent (and its
    /// parent) stays within its budgets, and each child within its own.
    #[test]
    fn child_spend_never_exceeds_the_parents_budgets(
        start in start_ms(),
        (root_hour, parent_hour, parent_day, child_hour) in (20_000u64..=80_000, 10_000u64..=60_000, 30_000u64..=150_000, 5_000u64..=40_000),
        steps in prop::collection::vec((0usize..2, step_ms(), 1u64..=6_000, 0u64..=300), 1..120),
    ) {
        let root = Policy { budgets: vec![budget(root_hour, "1h")], ..Policy::default() };
        let parent = Policy { budgets: vec![budget(parent_hour, "1h"), budget(parent_day, "day")], ..Policy::default() };
        let child = Policy {
            budgets: vec![budget(child_hour, "30m")],
            approval_above_msat: Some(Msat::new(5_000)),
            ..Policy::default()
        };
        // Index 0 and 1: the children; 2: the parent; 3: the root.
        let mut usage = [Usage::new(), Usage::new(), Usage::new(), Usage::new()];
        let mut recorded: [Recorded; 4] = Default::default();
        let mut now_ms = start;
        let mut went_ahead = 0;
        for (who, step, amount, fee) in steps {
            now_ms += step;
            let decision = {
                let chain = [(&child, &usage[who]), (&parent, &usage[2]), (&root, &usage[3])];
                evaluate_chain(&chain, &attempt(amount, fee), now_ms)
            };
            let levels = [(who, &child), (2, &parent), (3, &root)];
            let fits = levels.iter().all(|(level, policy)| fits_with_slack(policy, &recorded[*level], now_ms, amount + fee));
            prop_assert!(!fits || goes_ahead(&decision), "denied with room at every level: {:?}", decision);
            if goes_ahead(&decision) {
                went_ahead += 1;
                for (level, policy) in levels {
                    usage[level].record(policy, Msat::new(amount + fee), now_ms);
                    recorded[level].push((now_ms, amount + fee));
                }
            }
        }
        assert_within_limits(&child, &recorded[0])?;
        assert_within_limits(&child, &recorded[1])?;
        assert_within_limits(&parent, &recorded[2])?;
        assert_within_limits(&root, &recorded[3])?;
        // Every payment that went ahead counts at the parent and the root.
        prop_assert_eq!(recorded[2].len(), went_ahead);
        prop_assert_eq!(recorded[3].len(), went_ahead);
        prop_assert_eq!(recorded[0].len() + recorded[1].len(), went_ahead);
    }
}

/// A random valid policy with every kind of rule.
fn any_policy() -> impl Strategy<Value = Policy> {
    let budgets = prop::sample::subsequence(vec!["30s", "1h", "7d", "day", "week", "month"], 0..=6);
    (
        prop::option::of(1_000u64..=400_000),
        budgets,
        prop::collection::vec(1_000u64..=2_000_000, 6),
        prop::option::of(1_000u64..=10_000_000),
        prop::option::of(1u32..=100),
        (any::<bool>(), prop::sample::subsequence(vec![0usize, 1, 2, 3], 0..=4), any::<u8>()),
        prop::option::of(0u64..=300_000),
        prop::option::of(-TEN_YEARS_MS..=TEN_YEARS_MS),
    )
        .prop_map(
            |(max_payment, windows, limits, lifetime, rate, (deny_default, listed, split), approval, expires)| {
                // Listed agents go to the allow or the deny list, never both.
                let (mut allow, mut deny) = (Vec::new(), Vec::new());
                for (i, agent) in listed.into_iter().enumerate() {
                    let entry = PayeeEntry::parse(&format!("agent:agent{agent}")).expect("valid entry");
                    if split & (1 << i) == 0 { allow.push(entry) } else { deny.push(entry) }
                }
                let mut policy = Policy {
                    max_payment_msat: max_payment.map(Msat::new),
                    budgets: windows.iter().zip(&limits).map(|(w, l)| budget(*l, w)).collect(),
                    lifetime_msat: lifetime.map(Msat::new),
                    max_payments_per_minute: rate,
                    approval_above_msat: approval.map(Msat::new),
                    expires_at: expires.and_then(DateTime::from_timestamp_millis),
                    ..Policy::default()
                };
                policy.payees.default = if deny_default { PayeeDefault::Deny } else { PayeeDefault::Allow };
                policy.payees.allow = allow;
                policy.payees.deny = deny;
                policy
            },
        )
}

/// (d), continued over three hours: the budget frees up as the hour slides,
/// so the limit is not a one-off, and still no hour holds more than 100 sat.
#[test]
fn hourly_budget_frees_up_and_still_holds_over_three_hours() {
    let policy = Policy { budgets: vec![budget(100_000, "1h")], ..Policy::default() };
    let mut usage = Usage::new();
    let mut recorded: Recorded = Vec::new();
    for i in 0..3 * 3_600 {
        let now_ms = i * 1_000;
        if goes_ahead(&evaluate(&policy, &usage, &attempt(1_000, 0), now_ms)) {
            usage.record(&policy, Msat::new(1_000), now_ms);
            recorded.push((now_ms, 1_000));
        }
    }
    assert!(max_rolling_spend(&recorded, HOUR_MS) <= 100_000);
    // Exact accounting would allow 300; whole buckets delay each hour's
    // renewal by at most one bucket (a minute), so a little less.
    assert!((250..=300).contains(&recorded.len()), "{} allowed", recorded.len());
}
