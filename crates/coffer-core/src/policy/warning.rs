//! Warnings before limits: which thresholds (a percentage of a budget
//! window's limit, or of the lifetime allowance) a spend carried the usage
//! across. Pure: the caller records the spend, then asks here with the usage
//! before and after it, and turns each [`Crossing`] into an event in the
//! same transaction.
//!
//! A threshold fires once per window instance: the calendar period; for a
//! rolling window, one window length from its first warning (by then the
//! spend that crossed it has slid out); for the lifetime, for as long as
//! the limit stays the same. A changed limit starts the instance over. The
//! marker of what fired is kept in [`Usage`], so a spend given back (a hold
//! denied, a fee reserve returned) and spent again does not warn twice.

use super::spec::Policy;
use super::usage::Usage;
use super::window::{Window, WindowKind};
use crate::amount::Msat;
use serde::{Deserialize, Serialize};

/// The most thresholds a gateway may warn at: one marker per threshold per
/// budget stays small.
pub const WARNING_THRESHOLDS_MAX: usize = 4;
/// The usage key of the lifetime allowance's marker (no window prints so:
/// windows are "30s", "1h", "day", ...).
const LIFETIME_KEY: &str = "lifetime";
const _: () = assert!(WARNING_THRESHOLDS_MAX >= 1);

/// Percentages of a limit to warn at, each in 1..=100, distinct, ascending,
/// at most [`WARNING_THRESHOLDS_MAX`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarningThresholds(Vec<u8>);

impl Default for WarningThresholds {
    /// 80% and 95%.
    fn default() -> WarningThresholds {
        WarningThresholds(vec![80, 95])
    }
}

impl WarningThresholds {
    /// No warnings at all.
    pub fn none() -> WarningThresholds {
        WarningThresholds(Vec::new())
    }

    /// Parses "80,95". The error is a sentence for the operator.
    pub fn parse(text: &str) -> Result<WarningThresholds, String> {
        let mut percents = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let percent: u8 = part.parse().map_err(|_| format!("{part:?} is not a whole percentage"))?;
            percents.push(percent);
        }
        WarningThresholds::new(percents)
    }

    pub fn new(mut percents: Vec<u8>) -> Result<WarningThresholds, String> {
        if let Some(bad) = percents.iter().find(|p| !(1..=100).contains(*p)) {
            return Err(format!("threshold {bad}% is outside 1..=100"));
        }
        percents.sort_unstable();
        percents.dedup();
        if percents.len() > WARNING_THRESHOLDS_MAX {
            return Err(format!("at most {WARNING_THRESHOLDS_MAX} thresholds"));
        }
        Ok(WarningThresholds(percents))
    }

    pub fn percents(&self) -> &[u8] {
        &self.0
    }
}

/// What fired in one window's current instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Warned {
    /// When the instance began (see the module doc).
    since_ms: i64,
    /// The limit the instance warned against.
    limit_msat: Msat,
    /// The thresholds that fired, at most [`WARNING_THRESHOLDS_MAX`].
    percents: Vec<u8>,
}

/// A threshold a spend carried the usage across.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Crossing {
    /// The window (`None`: the lifetime allowance).
    pub window: Option<Window>,
    pub threshold_percent: u8,
    pub spent_msat: Msat,
    pub limit_msat: Msat,
    /// When the window's instance began: a calendar period's start, the
    /// time a rolling window first warned; `None` for the lifetime.
    pub window_start_ms: Option<i64>,
    /// When a calendar window starts over; rolling windows free up
    /// gradually, the lifetime never.
    pub resets_at_ms: Option<i64>,
}

impl Crossing {
    /// The budget's name on the wire: the window ("1h", "day") or
    /// "lifetime".
    pub fn budget(&self) -> String {
        self.window.map_or_else(|| LIFETIME_KEY.to_owned(), |w| w.to_string())
    }

    /// "rolling", "calendar" or "lifetime".
    pub fn kind(&self) -> &'static str {
        self.window.map_or(LIFETIME_KEY, |w| w.kind().as_str())
    }
}

/// The thresholds that `after` (the usage once a spend is recorded) crossed
/// since `before`, in every window of `policy` and its lifetime allowance,
/// each once per window instance: marked in `after`, which the caller
/// saves. Markers of windows the policy no longer has are dropped.
pub fn crossings(
    policy: &Policy,
    before: &Usage,
    after: &mut Usage,
    thresholds: &WarningThresholds,
    now_ms: i64,
) -> Vec<Crossing> {
    let now_ms = after.effective_now_ms(now_ms);
    let keep: Vec<String> = policy.budgets.iter().map(|b| b.window.to_string()).collect();
    after.warned.retain(|key, _| key == LIFETIME_KEY || keep.contains(key));
    let mut fired = Vec::new();
    for budget in &policy.budgets {
        let window = Some(budget.window);
        let spent = (before.spent_in(budget.window, now_ms), after.spent_in(budget.window, now_ms));
        fired.extend(cross(after, window, spent, budget.limit_msat, thresholds, now_ms));
    }
    match policy.lifetime_msat {
        Some(limit) => {
            let spent = (before.lifetime_spent(), after.lifetime_spent());
            fired.extend(cross(after, None, spent, limit, thresholds, now_ms));
        }
        None => {
            after.warned.remove(LIFETIME_KEY);
        }
    }
    fired
}

/// The crossings of one budget, marked.
fn cross(
    usage: &mut Usage,
    window: Option<Window>,
    (before, after): (Msat, Msat),
    limit: Msat,
    thresholds: &WarningThresholds,
    now_ms: i64,
) -> Vec<Crossing> {
    let key = window.map_or_else(|| LIFETIME_KEY.to_owned(), |w| w.to_string());
    let crossed: Vec<u8> = thresholds
        .percents()
        .iter()
        .copied()
        .filter(|p| !reaches(before, limit, *p) && reaches(after, limit, *p))
        .collect();
    if crossed.is_empty() {
        return Vec::new();
    }
    let start_ms = instance_start_ms(window, now_ms);
    let marker = usage.warned.entry(key).or_default();
    if !same_instance(marker, window, limit, now_ms) {
        *marker = Warned { since_ms: start_ms.unwrap_or(now_ms), limit_msat: limit, percents: Vec::new() };
    }
    let resets_at_ms = window.and_then(Window::calendar_period).map(|p| p.next_start_ms(now_ms));
    let window_start_ms = window.map(|_| marker.since_ms);
    let mut fired = Vec::new();
    for percent in crossed {
        if marker.percents.contains(&percent) || marker.percents.len() >= WARNING_THRESHOLDS_MAX {
            continue;
        }
        marker.percents.push(percent);
        fired.push(Crossing {
            window,
            threshold_percent: percent,
            spent_msat: after,
            limit_msat: limit,
            window_start_ms,
            resets_at_ms,
        });
    }
    fired
}

/// Whether `spent` is at least `percent`% of `limit` (exact, in u128).
fn reaches(spent: Msat, limit: Msat, percent: u8) -> bool {
    u128::from(spent.as_u64()) * 100 >= u128::from(limit.as_u64()) * u128::from(percent)
}

/// A calendar window's instance is its period; the others begin when they
/// first warn.
fn instance_start_ms(window: Option<Window>, now_ms: i64) -> Option<i64> {
    window.and_then(Window::calendar_period).map(|p| p.start_ms(now_ms))
}

/// Whether `marker` still speaks for the instance of `window` at `now_ms`.
fn same_instance(marker: &Warned, window: Option<Window>, limit: Msat, now_ms: i64) -> bool {
    if marker.limit_msat != limit || marker.percents.is_empty() {
        return false;
    }
    match window.map(|w| (w.kind(), w)) {
        None => true,
        Some((WindowKind::Calendar, w)) => instance_start_ms(Some(w), now_ms) == Some(marker.since_ms),
        Some((WindowKind::Rolling, w)) => {
            let window_ms = w.rolling_ms().unwrap_or(i64::MAX);
            now_ms.saturating_sub(marker.since_ms) < window_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::window::{MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE};

    const T0: i64 = 1_800_000_000_000;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json).unwrap()
    }

    /// Records `amount` at `now_ms` and answers the thresholds crossed, as
    /// (budget, percent).
    fn spend(p: &Policy, usage: &mut Usage, amount: u64, now_ms: i64) -> Vec<(String, u8)> {
        let before = usage.clone();
        usage.record(p, Msat::new(amount), now_ms);
        let fired = crossings(p, &before, usage, &WarningThresholds::default(), now_ms);
        fired.iter().map(|c| (c.budget(), c.threshold_percent)).collect()
    }

    fn hourly() -> Policy {
        policy(r#"{"budgets":[{"limit_msat": 1000, "window": "1h", "kind": "rolling"}]}"#)
    }

    #[test]
    fn two_payments_crossing_80_then_95_fire_two_warnings() {
        let p = hourly();
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 700, T0), vec![]);
        assert_eq!(spend(&p, &mut usage, 100, T0 + 1), vec![("1h".into(), 80)]);
        assert_eq!(spend(&p, &mut usage, 100, T0 + 2), vec![]);
        assert_eq!(spend(&p, &mut usage, 50, T0 + 3), vec![("1h".into(), 95)]);
        assert_eq!(spend(&p, &mut usage, 50, T0 + 4), vec![], "past 100% fires nothing more");
    }

    #[test]
    fn a_payment_jumping_past_both_fires_both() {
        let p = hourly();
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 990, T0), vec![("1h".into(), 80), ("1h".into(), 95)]);
    }

    #[test]
    fn a_release_and_respend_in_one_window_does_not_fire_twice() {
        let p = hourly();
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 850, T0), vec![("1h".into(), 80)]);
        usage.release(&p, Msat::new(850), T0, T0 + 10);
        assert_eq!(spend(&p, &mut usage, 850, T0 + 20), vec![]);
        assert_eq!(spend(&p, &mut usage, 100, T0 + 30), vec![("1h".into(), 95)]);
    }

    #[test]
    fn a_calendar_window_that_resets_fires_again_in_the_new_period() {
        let p = policy(r#"{"budgets":[{"limit_msat": 1000, "window": "day", "kind": "calendar"}]}"#);
        let day_start = T0 - T0.rem_euclid(MS_PER_DAY);
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 800, day_start + MS_PER_HOUR), vec![("day".into(), 80)]);
        assert_eq!(spend(&p, &mut usage, 10, day_start + 2 * MS_PER_HOUR), vec![]);
        let next = day_start + MS_PER_DAY + MS_PER_HOUR;
        assert_eq!(spend(&p, &mut usage, 800, next), vec![("day".into(), 80)]);
    }

    #[test]
    fn a_rolling_window_warns_again_once_the_window_has_passed() {
        let p = hourly();
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 800, T0), vec![("1h".into(), 80)]);
        // Within the hour the spend still counts: nothing new crosses.
        assert_eq!(spend(&p, &mut usage, 10, T0 + 30 * MS_PER_MINUTE), vec![]);
        // Two hours on, the old spend has slid out; crossing again warns.
        assert_eq!(spend(&p, &mut usage, 800, T0 + 2 * MS_PER_HOUR), vec![("1h".into(), 80)]);
    }

    #[test]
    fn the_lifetime_allowance_warns_once_until_its_limit_changes() {
        let p = policy(r#"{"lifetime_msat": 1000}"#);
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, 800, T0), vec![("lifetime".into(), 80)]);
        usage.release(&p, Msat::new(800), T0, T0 + 1);
        assert_eq!(spend(&p, &mut usage, 800, T0 + 2), vec![]);
        let raised = policy(r#"{"lifetime_msat": 2000}"#);
        assert_eq!(spend(&raised, &mut usage, 1_000, T0 + 3), vec![("lifetime".into(), 80)]);
    }

    #[test]
    fn every_window_warns_on_its_own() {
        let p = policy(
            r#"{"budgets":[{"limit_msat": 1000, "window": "1h", "kind": "rolling"},
                           {"limit_msat": 10000, "window": "day", "kind": "calendar"}], "lifetime_msat": 1000}"#,
        );
        let mut usage = Usage::new();
        let fired = spend(&p, &mut usage, 960, T0);
        assert_eq!(fired, vec![("1h".into(), 80), ("1h".into(), 95), ("lifetime".into(), 80), ("lifetime".into(), 95)]);
    }

    #[test]
    fn crossing_names_the_window_and_its_reset() {
        let p = policy(r#"{"budgets":[{"limit_msat": 1000, "window": "day", "kind": "calendar"}]}"#);
        let mut usage = Usage::new();
        let before = usage.clone();
        usage.record(&p, Msat::new(900), T0);
        let fired = crossings(&p, &before, &mut usage, &WarningThresholds::default(), T0);
        let day_start = T0 - T0.rem_euclid(MS_PER_DAY);
        assert_eq!(fired[0].kind(), "calendar");
        assert_eq!(fired[0].window_start_ms, Some(day_start));
        assert_eq!(fired[0].resets_at_ms, Some(day_start + MS_PER_DAY));
        assert_eq!((fired[0].spent_msat, fired[0].limit_msat), (Msat::new(900), Msat::new(1000)));
    }

    #[test]
    fn markers_survive_json_and_stay_bounded() {
        let p = hourly();
        let mut usage = Usage::new();
        spend(&p, &mut usage, 990, T0);
        let back: Usage = serde_json::from_str(&serde_json::to_string(&usage).unwrap()).unwrap();
        assert_eq!(back, usage);
        // A policy without the window drops its marker.
        let none = Policy::default();
        let before = usage.clone();
        crossings(&none, &before, &mut usage, &WarningThresholds::default(), T0 + 1);
        assert!(usage.warned.is_empty());
    }

    #[test]
    fn thresholds_parse_and_are_bounded() {
        assert_eq!(WarningThresholds::parse("95, 80").unwrap().percents(), &[80, 95]);
        assert_eq!(WarningThresholds::parse("").unwrap().percents(), &[] as &[u8]);
        assert!(WarningThresholds::parse("0").is_err());
        assert!(WarningThresholds::parse("101").is_err());
        assert!(WarningThresholds::parse("x").is_err());
        assert!(WarningThresholds::parse("10,20,30,40,50").is_err());
        assert!(WarningThresholds::parse("10,20,30,40").is_ok());
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        let p = policy(r#"{"lifetime_msat": 2100000000000000000}"#);
        let mut usage = Usage::new();
        assert_eq!(spend(&p, &mut usage, u64::MAX, T0).len(), 2);
        assert!(reaches(Msat::new(u64::MAX), Msat::new(u64::MAX), 100));
    }
}
