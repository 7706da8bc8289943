//! Per-agent spending state, maintained incrementally so that evaluating a
//! payment never sums past payments: its cost and its size are bounded by
//! the policy (at most 16 windows of at most 61 buckets), not by history.
//!
//! * Rolling windows: a sorted run of time buckets, each `window / 60` wide
//!   (rounded up). The spend in `(now - window, now]` is the sum of every
//!   bucket that overlaps that interval. Counting a partly overlapping oldest
//!   bucket whole over-counts by less than one bucket and never under-counts,
//!   so a budget can never be exceeded; it can only free up to one bucket
//!   width (1/60 of the window) later than exact accounting would.
//! * Calendar windows: a counter and the start of the period it counts;
//!   it reads as zero once `now` is in a later period.
//! * Lifetime: a counter.
//! * Rate: a count of payments allowed or held in 1-second buckets over 60 s.
//!
//! Usage follows a monotone clock: `now` is never taken to be earlier than
//! the latest time seen. If the system clock steps back, windows stop sliding
//! until it catches up, which keeps spend counted longer (the safe side)
//! instead of letting recent spend look old.

use super::spec::{Budget, Policy};
use super::window::{CalendarPeriod, Window, WindowKind};
use crate::amount::Msat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many buckets a rolling window is cut into: the over-count is at most
/// one bucket, 1/60 of the window.
pub const BUCKETS_PER_WINDOW: i64 = 60;
/// A window that does not start on a bucket boundary overlaps one bucket more
/// than it spans, so 61 buckets can be live at once.
const BUCKETS_LIVE_MAX: usize = 61;
const _: () = assert!(BUCKETS_LIVE_MAX == BUCKETS_PER_WINDOW as usize + 1);
/// The rate limit counts over the last minute, in 1-second buckets (one
/// sixtieth of the window, like every ring).
pub const RATE_WINDOW_MS: i64 = 60_000;
// One minute, cut into buckets of exactly one second each.
const _: () = assert!(RATE_WINDOW_MS == super::window::MS_PER_MINUTE);
const _: () = assert!(RATE_WINDOW_MS / BUCKETS_PER_WINDOW == super::window::MS_PER_SECOND);
const _: () = assert!(RATE_WINDOW_MS % BUCKETS_PER_WINDOW == 0);

/// The money (or count) recorded in one time bucket: the instants
/// `[index * width, (index + 1) * width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    index: i64,
    value: u64,
}

/// Values in time buckets, sorted by index, holding only buckets that may
/// still be inside the window. Used for rolling spend, the rate limit and
/// the breaker.
///
/// The width is stored with the buckets, so that a blob written with another
/// width (a changed window or a future version) is converted safely: each
/// bucket moves to the new bucket holding its *last* instant, which keeps it
/// counted at least as long as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ring {
    bucket_ms: i64,
    buckets: Vec<Bucket>,
}

impl Ring {
    /// The width that cuts a window into [`BUCKETS_PER_WINDOW`] buckets,
    /// rounded up so that 60 buckets always cover the whole window.
    pub(crate) fn bucket_ms_for(window_ms: i64) -> i64 {
        (window_ms.saturating_add(BUCKETS_PER_WINDOW - 1) / BUCKETS_PER_WINDOW).max(1)
    }

    /// The sum over the buckets overlapping `(now - window, now]`.
    pub(crate) fn total(&self, window_ms: i64, now_ms: i64) -> u64 {
        self.buckets
            .iter()
            .filter(|b| is_live(self.bucket_ms, b.index, window_ms, now_ms))
            .fold(0u64, |sum, b| sum.saturating_add(b.value))
    }

    /// Adds `value` at `now_ms`, dropping buckets that left the window.
    pub(crate) fn add(&mut self, window_ms: i64, value: u64, now_ms: i64) {
        self.normalize(Ring::bucket_ms_for(window_ms), now_ms);
        let bucket_ms = self.bucket_ms;
        self.buckets.retain(|b| is_live(bucket_ms, b.index, window_ms, now_ms));
        self.add_to_bucket(now_ms.div_euclid(self.bucket_ms), value);
        // Only a corrupted blob can hold more; merging the oldest into the
        // next keeps its value counted (longer), so bounds stay safe.
        while self.buckets.len() > BUCKETS_LIVE_MAX {
            let oldest = self.buckets.remove(0);
            if let Some(next) = self.buckets.first_mut() {
                next.value = next.value.saturating_add(oldest.value);
            }
        }
    }

    /// Takes `value` back from the bucket that holds `at_ms`, if it is still
    /// kept, without going below zero. Nothing happens once the bucket has
    /// left the window: that spend no longer counts anyway.
    pub(crate) fn subtract_at(&mut self, value: u64, at_ms: i64) {
        if self.bucket_ms <= 0 {
            return;
        }
        let index = at_ms.div_euclid(self.bucket_ms);
        if let Ok(i) = self.buckets.binary_search_by_key(&index, |b| b.index)
            && let Some(bucket) = self.buckets.get_mut(i)
        {
            bucket.value = bucket.value.saturating_sub(value);
        }
        self.buckets.retain(|b| b.value > 0);
    }

    fn add_to_bucket(&mut self, index: i64, value: u64) {
        match self.buckets.binary_search_by_key(&index, |b| b.index) {
            Ok(i) => {
                if let Some(bucket) = self.buckets.get_mut(i) {
                    bucket.value = bucket.value.saturating_add(value);
                }
            }
            Err(i) => self.buckets.insert(i, Bucket { index, value }),
        }
    }

    /// Brings the ring to `bucket_ms` wide, sorted buckets with distinct
    /// indexes. A no-op for a ring this module wrote with the same width.
    fn normalize(&mut self, bucket_ms: i64, now_ms: i64) {
        let sorted = self.buckets.windows(2).all(|w| matches!(w, [a, b] if a.index < b.index));
        if self.bucket_ms == bucket_ms && sorted {
            return;
        }
        let old_ms = self.bucket_ms;
        let old = std::mem::take(&mut self.buckets);
        self.bucket_ms = bucket_ms;
        for bucket in old {
            let index = rebucket(bucket.index, old_ms, bucket_ms, now_ms);
            self.add_to_bucket(index, bucket.value);
        }
    }
}

/// Whether bucket `index` of a ring `bucket_ms` wide holds an instant in
/// `(now - window, now]` or later. Later buckets appear only in a corrupted
/// blob; counting them is the safe side. Computed in i128 so that no
/// timestamp saturates.
fn is_live(bucket_ms: i64, index: i64, window_ms: i64, now_ms: i64) -> bool {
    if bucket_ms <= 0 {
        // Unknown width (corrupted blob): keep counting everything.
        return true;
    }
    let end_exclusive_ms = (i128::from(index) + 1) * i128::from(bucket_ms);
    let first_in_window_ms = i128::from(now_ms) - i128::from(window_ms) + 1;
    end_exclusive_ms > first_in_window_ms
}

/// The index, at `new_ms` width, of the bucket holding the last instant of
/// bucket `index` at `old_ms` width. A bucket of unknown width is treated
/// as recorded now.
fn rebucket(index: i64, old_ms: i64, new_ms: i64, now_ms: i64) -> i64 {
    if old_ms <= 0 {
        return now_ms.div_euclid(new_ms);
    }
    let last_ms = (i128::from(index) + 1) * i128::from(old_ms) - 1;
    let new_index = last_ms.div_euclid(i128::from(new_ms));
    i64::try_from(new_index).unwrap_or(if new_index < 0 { i64::MIN } else { i64::MAX })
}

/// Spend in one calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PeriodSpend {
    period_start_ms: i64,
    spent_msat: Msat,
}

impl PeriodSpend {
    fn spent_at(&self, period: CalendarPeriod, now_ms: i64) -> Msat {
        // A counter from a later period exists only in a corrupted blob;
        // counting it is the safe side.
        if self.period_start_ms >= period.start_ms(now_ms) { self.spent_msat } else { Msat::ZERO }
    }

    fn add(&mut self, period: CalendarPeriod, amount: Msat, now_ms: i64) {
        let start_ms = period.start_ms(now_ms);
        if self.period_start_ms < start_ms {
            *self = PeriodSpend { period_start_ms: start_ms, spent_msat: Msat::ZERO };
        }
        self.spent_msat = saturating_add(self.spent_msat, amount);
    }
}

/// What an agent has spent, per window of its policy. See the module doc.
///
/// Persist it as JSON between payments. Usage is keyed by window (canonical
/// text such as "1h" or "day"), so when the policy changes, windows that
/// still exist keep their spend and new windows start empty. Windows the
/// policy no longer has are dropped at the next [`Usage::record`], which
/// bounds the state by the policy; re-adding one later starts it empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The latest time seen: the monotone clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clock_ms: Option<i64>,
    #[serde(default)]
    rolling: BTreeMap<String, Ring>,
    #[serde(default)]
    calendar: BTreeMap<String, PeriodSpend>,
    #[serde(default)]
    lifetime_msat: Msat,
    #[serde(default)]
    attempts: Ring,
    /// When each window began to be tracked. A release gives nothing back to
    /// a window that began after the reservation: that window never counted
    /// it, and what it holds is other, real spending.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    since_ms: BTreeMap<String, i64>,
    /// Spend per domain with L402 budgets (lower-case host name), in the
    /// windows of that domain's budgets only. Bounded by the policy: domains
    /// it no longer limits are dropped at the next record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    domains: BTreeMap<String, Usage>,
    /// The budget warnings given in each window's current instance, and in
    /// the lifetime's (see `warning`): one entry per budget of the policy
    /// at most, pruned there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) warned: BTreeMap<String, super::warning::Warned>,
}

impl Usage {
    pub fn new() -> Usage {
        Usage::default()
    }

    /// `now_ms`, or the latest time already seen if that is later.
    pub fn effective_now_ms(&self, now_ms: i64) -> i64 {
        self.clock_ms.map_or(now_ms, |clock_ms| clock_ms.max(now_ms))
    }

    /// Counts a payment that was allowed or held: `amount` is everything it
    /// may spend (amount, fee reserve, any other reservation), added to every
    /// window of `policy` and to the lifetime total; and one payment in the
    /// rate window. Saturates instead of overflowing.
    pub fn record(&mut self, policy: &Policy, amount: Msat, now_ms: i64) {
        let now_ms = self.advance_clock(now_ms);
        self.forget_windows_not_in(policy);
        for budget in &policy.budgets {
            self.add_spend(budget.window, amount, now_ms);
        }
        self.lifetime_msat = saturating_add(self.lifetime_msat, amount);
        self.attempts.add(RATE_WINDOW_MS, 1, now_ms);
    }

    /// Counts a paid request's price in the budgets of its domain (see
    /// [`crate::policy::L402Rules`]); [`Usage::record`] counts it in the
    /// agent's own budgets as well.
    pub fn record_domain(&mut self, policy: &Policy, domain: &str, amount: Msat, now_ms: i64) {
        let Some(rules) = &policy.l402 else {
            self.domains.clear();
            return;
        };
        self.domains.retain(|name, _| rules.domains.keys().any(|d| d.eq_ignore_ascii_case(name)));
        let budgets = rules.domain_budgets(domain);
        if budgets.is_empty() {
            return;
        }
        let scoped = Policy { budgets: budgets.to_vec(), ..Policy::default() };
        self.domains.entry(domain.to_ascii_lowercase()).or_default().record(&scoped, amount, now_ms);
    }

    /// What counts as spent on `domain` in `window` (zero for a domain
    /// without usage).
    pub fn domain_spent_in(&self, domain: &str, window: Window, now_ms: i64) -> Msat {
        let now_ms = self.effective_now_ms(now_ms);
        self.domains.get(&domain.to_ascii_lowercase()).map_or(Msat::ZERO, |usage| usage.spent_in(window, now_ms))
    }

    /// Gives back spend recorded at `reserved_at_ms` (pass the `now_ms` given
    /// to [`Usage::record`]) that was not spent after all: a payment denied
    /// after approval, expired, failed, or the unused part of a fee reserve.
    /// Each window gives it back only if the bucket or period it was recorded
    /// in is still kept, and never below zero; the lifetime total always
    /// gives it back. The payment still counts towards the rate limit.
    pub fn release(&mut self, policy: &Policy, amount: Msat, reserved_at_ms: i64, now_ms: i64) {
        self.advance_clock(now_ms);
        for budget in &policy.budgets {
            self.release_from(budget.window, amount, reserved_at_ms);
        }
        self.lifetime_msat = self.lifetime_msat.saturating_sub(amount);
    }

    /// What counts as spent in `window` at `now_ms`: for a rolling window,
    /// at least the exact spend in `(now - window, now]` and less than one
    /// bucket more.
    pub fn spent_in(&self, window: Window, now_ms: i64) -> Msat {
        let now_ms = self.effective_now_ms(now_ms);
        let key = window.to_string();
        if let Some(window_ms) = window.rolling_ms() {
            return self.rolling.get(&key).map_or(Msat::ZERO, |ring| Msat::new(ring.total(window_ms, now_ms)));
        }
        match (window.calendar_period(), self.calendar.get(&key)) {
            (Some(period), Some(spend)) => spend.spent_at(period, now_ms),
            _ => Msat::ZERO,
        }
    }

    pub fn lifetime_spent(&self) -> Msat {
        self.lifetime_msat
    }

    /// Payments allowed or held in the last 60 seconds (possibly up to one
    /// second more: whole buckets).
    pub fn payments_last_minute(&self, now_ms: i64) -> u64 {
        self.attempts.total(RATE_WINDOW_MS, self.effective_now_ms(now_ms))
    }

    /// The state of one budget at `now_ms`.
    pub fn window_report(&self, budget: &Budget, now_ms: i64) -> WindowReport {
        let spent_msat = self.spent_in(budget.window, now_ms);
        let resets_at_ms = budget.window.calendar_period().map(|p| p.next_start_ms(self.effective_now_ms(now_ms)));
        WindowReport {
            window: budget.window,
            kind: budget.window.kind(),
            limit_msat: budget.limit_msat,
            limit: budget.limit,
            spent_msat,
            remaining_msat: budget.limit_msat.saturating_sub(spent_msat),
            resets_at_ms,
        }
    }

    fn advance_clock(&mut self, now_ms: i64) -> i64 {
        let now_ms = self.effective_now_ms(now_ms);
        self.clock_ms = Some(now_ms);
        now_ms
    }

    fn release_from(&mut self, window: Window, amount: Msat, reserved_at_ms: i64) {
        let key = window.to_string();
        if self.since_ms.get(&key).is_some_and(|since_ms| *since_ms > reserved_at_ms) {
            return;
        }
        if let Some(ring) = self.rolling.get_mut(&key) {
            ring.subtract_at(amount.as_u64(), reserved_at_ms);
        }
        // A counter of a later period holds other payments: leave it alone.
        if let (Some(period), Some(spend)) = (window.calendar_period(), self.calendar.get_mut(&key))
            && spend.period_start_ms == period.start_ms(reserved_at_ms)
        {
            spend.spent_msat = spend.spent_msat.saturating_sub(amount);
        }
    }

    fn forget_windows_not_in(&mut self, policy: &Policy) {
        let keep: Vec<String> = policy.budgets.iter().map(|b| b.window.to_string()).collect();
        self.rolling.retain(|key, _| keep.contains(key));
        self.calendar.retain(|key, _| keep.contains(key));
        self.since_ms.retain(|key, _| keep.contains(key));
    }

    fn add_spend(&mut self, window: Window, amount: Msat, now_ms: i64) {
        let key = window.to_string();
        self.since_ms.entry(key.clone()).or_insert(now_ms);
        if let Some(window_ms) = window.rolling_ms() {
            self.rolling.entry(key).or_default().add(window_ms, amount.as_u64(), now_ms);
        } else if let Some(period) = window.calendar_period() {
            let fresh = PeriodSpend { period_start_ms: period.start_ms(now_ms), spent_msat: Msat::ZERO };
            self.calendar.entry(key).or_insert(fresh).add(period, amount, now_ms);
        }
    }
}

fn saturating_add(a: Msat, b: Msat) -> Msat {
    a.checked_add(b).unwrap_or(Msat::new(u64::MAX))
}

/// One budget as `GET /v1/agents/{id}/budget` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct WindowReport {
    pub window: Window,
    pub kind: WindowKind,
    /// For a limit in a currency: its value at the current rate (zero when
    /// no usable rate is known, which refuses every payment).
    pub limit_msat: Msat,
    /// The limit as the policy states it in a currency, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<super::fiat::FiatAmount>,
    pub spent_msat: Msat,
    pub remaining_msat: Msat,
    /// When a calendar budget starts over; rolling budgets free up gradually.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at_ms: Option<i64>,
}

/// Every limit of a policy with what is spent and what remains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct BudgetReport {
    pub windows: Vec<WindowReport>,
    pub lifetime_limit_msat: Option<Msat>,
    /// The lifetime limit as the policy states it in a currency, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_limit: Option<super::fiat::FiatAmount>,
    pub lifetime_spent_msat: Msat,
    pub lifetime_remaining_msat: Option<Msat>,
    pub max_payments_per_minute: Option<u32>,
    pub payments_last_minute: u64,
    /// The rates the limits in a currency were converted at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fiat_rates: Vec<super::fiat::RateReport>,
    /// Why limits in a currency cannot be converted now (payments under
    /// them are refused until they can).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fiat_error: Option<String>,
}

pub fn budget_report(policy: &Policy, usage: &Usage, now_ms: i64) -> BudgetReport {
    let lifetime_spent_msat = usage.lifetime_spent();
    BudgetReport {
        windows: policy.budgets.iter().map(|b| usage.window_report(b, now_ms)).collect(),
        lifetime_limit_msat: policy.lifetime_msat,
        lifetime_limit: policy.lifetime,
        lifetime_spent_msat,
        lifetime_remaining_msat: policy.lifetime_msat.map(|limit| limit.saturating_sub(lifetime_spent_msat)),
        max_payments_per_minute: policy.max_payments_per_minute,
        payments_last_minute: usage.payments_last_minute(now_ms),
        fiat_rates: Vec::new(),
        fiat_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::window::{MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE};
    use chrono::{DateTime, Utc};

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc).timestamp_millis()
    }

    fn budget(limit_msat: u64, window: &str) -> Budget {
        let window = Window::parse(window).unwrap();
        Budget { limit_msat: Msat::new(limit_msat), limit: None, window, kind: window.kind() }
    }

    fn policy(budgets: &[Budget]) -> Policy {
        Policy { budgets: budgets.to_vec(), ..Policy::default() }
    }

    fn hour() -> Window {
        Window::parse("1h").unwrap()
    }

    #[test]
    fn rolling_spend_slides_out_after_the_window() {
        let p = policy(&[budget(1_000, "1h")]);
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(300), 0);
        usage.record(&p, Msat::new(200), 30 * MS_PER_MINUTE);
        assert_eq!(usage.spent_in(hour(), 30 * MS_PER_MINUTE), Msat::new(500));
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR - 1), Msat::new(500));
        // The first payment's bucket is [0, 1 min): it has left (1h, 1h+1min].
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR + MS_PER_MINUTE), Msat::new(200));
        assert_eq!(usage.spent_in(hour(), 90 * MS_PER_MINUTE + MS_PER_MINUTE), Msat::ZERO);
    }

    #[test]
    fn partial_oldest_bucket_is_counted_whole() {
        let p = policy(&[budget(1_000, "1h")]);
        let mut usage = Usage::new();
        // At 59 s, in the bucket [0, 60 s).
        usage.record(&p, Msat::new(100), 59_000);
        // Exactly, the payment leaves (now - 1h, now] when now reaches
        // 1h + 59 s; its bucket ends at 59.999 s, so it counts until the
        // window starts after that: one bucket later at most.
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR + 58_999), Msat::new(100));
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR + 59_000), Msat::new(100));
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR + 59_998), Msat::new(100));
        assert_eq!(usage.spent_in(hour(), MS_PER_HOUR + 59_999), Msat::ZERO);
    }

    #[test]
    fn ring_stays_bounded() {
        let p = policy(&[budget(u64::MAX, "1h"), budget(u64::MAX, "30s")]);
        let mut usage = Usage::new();
        for i in 0..10_000i64 {
            usage.record(&p, Msat::new(1), i * 7_919);
        }
        for ring in usage.rolling.values() {
            assert!(ring.buckets.len() <= BUCKETS_LIVE_MAX, "{}", ring.buckets.len());
        }
        assert!(usage.attempts.buckets.len() <= BUCKETS_LIVE_MAX);
        assert_eq!(usage.lifetime_spent(), Msat::new(10_000));
    }

    #[test]
    fn calendar_day_resets_at_midnight_utc() {
        let p = policy(&[budget(1_000, "day")]);
        let day = Window::parse("day").unwrap();
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(400), ms("2025-01-31T23:59:59.999Z"));
        assert_eq!(usage.spent_in(day, ms("2025-01-31T23:59:59.999Z")), Msat::new(400));
        assert_eq!(usage.spent_in(day, ms("2025-02-01T00:00:00Z")), Msat::ZERO);
        usage.record(&p, Msat::new(50), ms("2025-02-01T00:00:00Z"));
        assert_eq!(usage.spent_in(day, ms("2025-02-01T10:00:00Z")), Msat::new(50));
    }

    #[test]
    fn calendar_week_and_month_rollover() {
        let p = policy(&[budget(1_000, "week"), budget(1_000, "month")]);
        let (week, month) = (Window::parse("week").unwrap(), Window::parse("month").unwrap());
        let mut usage = Usage::new();
        // Sunday 2024-03-31 is the last day of both a week and a month.
        usage.record(&p, Msat::new(70), ms("2024-03-31T12:00:00Z"));
        assert_eq!(usage.spent_in(week, ms("2024-03-31T23:59:59Z")), Msat::new(70));
        assert_eq!(usage.spent_in(week, ms("2024-04-01T00:00:00Z")), Msat::ZERO);
        assert_eq!(usage.spent_in(month, ms("2024-04-01T00:00:00Z")), Msat::ZERO);
        // Leap year: 29 February is still February.
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(5), ms("2024-02-01T00:00:00Z"));
        assert_eq!(usage.spent_in(month, ms("2024-02-29T23:59:59Z")), Msat::new(5));
        assert_eq!(usage.spent_in(month, ms("2024-03-01T00:00:00Z")), Msat::ZERO);
    }

    #[test]
    fn release_gives_back_only_what_is_still_tracked() {
        let p = policy(&[budget(1_000, "1h"), budget(1_000, "day")]);
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(100), 10_000);
        usage.record(&p, Msat::new(40), 20_000);
        usage.release(&p, Msat::new(40), 20_000, 25_000);
        assert_eq!(usage.spent_in(hour(), 30_000), Msat::new(100));
        assert_eq!(usage.spent_in(Window::parse("day").unwrap(), 30_000), Msat::new(100));
        assert_eq!(usage.lifetime_spent(), Msat::new(100));
        // Releasing more than the bucket holds stops at zero.
        usage.release(&p, Msat::new(1_000), 10_000, 30_000);
        assert_eq!(usage.spent_in(hour(), 30_000), Msat::ZERO);
        assert_eq!(usage.lifetime_spent(), Msat::ZERO);
        // A release for a bucket that already left changes no other bucket.
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(100), 0);
        usage.record(&p, Msat::new(60), 2 * MS_PER_HOUR);
        usage.release(&p, Msat::new(100), 0, 2 * MS_PER_HOUR);
        assert_eq!(usage.spent_in(hour(), 2 * MS_PER_HOUR), Msat::new(60));
        assert_eq!(usage.payments_last_minute(2 * MS_PER_HOUR), 1, "a release is still an attempt");
    }

    #[test]
    fn policy_change_keeps_surviving_windows() {
        let before = policy(&[budget(1_000, "1h"), budget(1_000, "day")]);
        let mut usage = Usage::new();
        usage.record(&before, Msat::new(100), 0);
        // "60m" is the same window as "1h"; "7d" is new.
        let after = policy(&[budget(1_000, "60m"), budget(1_000, "7d")]);
        usage.record(&after, Msat::new(10), 1_000);
        assert_eq!(usage.spent_in(hour(), 1_000), Msat::new(110));
        assert_eq!(usage.spent_in(Window::parse("7d").unwrap(), 1_000), Msat::new(10));
        assert!(!usage.calendar.contains_key("day"), "removed windows are dropped");
    }

    #[test]
    fn clock_stepping_back_keeps_spend_counted() {
        let p = policy(&[budget(1_000, "1h")]);
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(100), 10 * MS_PER_HOUR);
        usage.record(&p, Msat::new(100), 5 * MS_PER_HOUR);
        assert_eq!(usage.spent_in(hour(), 0), Msat::new(200));
        assert_eq!(usage.spent_in(hour(), 10 * MS_PER_HOUR + 30 * MS_PER_MINUTE), Msat::new(200));
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let p = policy(&[budget(u64::MAX, "1s"), budget(u64::MAX, "366d"), budget(u64::MAX, "month")]);
        let mut usage = Usage::new();
        for now_ms in [i64::MIN, -1, 0, i64::MAX] {
            usage.record(&p, Msat::new(u64::MAX), now_ms);
            usage.release(&p, Msat::new(u64::MAX), i64::MIN, now_ms);
            let report = budget_report(&p, &usage, now_ms);
            assert_eq!(report.windows.len(), 3);
        }
        assert_eq!(usage.effective_now_ms(i64::MIN), i64::MAX);
    }

    #[test]
    fn negative_timestamps_count_like_any_other() {
        let p = policy(&[budget(1_000, "1h"), budget(1_000, "day")]);
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(7), -5 * MS_PER_DAY);
        assert_eq!(usage.spent_in(hour(), -5 * MS_PER_DAY + 1), Msat::new(7));
        assert_eq!(usage.spent_in(Window::parse("day").unwrap(), -4 * MS_PER_DAY), Msat::ZERO);
    }

    #[test]
    fn corrupted_width_is_converted_without_losing_spend() {
        let mut ring =
            Ring { bucket_ms: 0, buckets: vec![Bucket { index: 3, value: 9 }, Bucket { index: 1, value: 1 }] };
        assert_eq!(ring.total(MS_PER_HOUR, 0), 10, "unknown width counts everything");
        ring.add(MS_PER_HOUR, 5, 1_000);
        assert_eq!(ring.bucket_ms, 60_000);
        assert_eq!(ring.total(MS_PER_HOUR, 1_000), 15);
        // A narrower width moves each bucket to the one holding its end.
        let mut ring = Ring { bucket_ms: 120_000, buckets: vec![Bucket { index: 0, value: 4 }] };
        ring.add(MS_PER_HOUR, 1, 0);
        assert_eq!(ring.buckets, vec![Bucket { index: 0, value: 1 }, Bucket { index: 1, value: 4 }]);
    }

    #[test]
    fn usage_round_trips_through_json() {
        let p = policy(&[budget(1_000, "1h"), budget(1_000, "week")]);
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(42), 123_456);
        let blob = serde_json::to_string(&usage).unwrap();
        let back: Usage = serde_json::from_str(&blob).unwrap();
        assert_eq!(back, usage);
        assert_eq!(serde_json::from_str::<Usage>("{}").unwrap(), Usage::new());
    }

    #[test]
    fn budget_report_shows_every_limit() {
        let mut p = policy(&[budget(1_000, "1h"), budget(5_000, "month")]);
        p.lifetime_msat = Some(Msat::new(10_000));
        p.max_payments_per_minute = Some(3);
        let now_ms = ms("2025-02-10T12:00:00Z");
        let mut usage = Usage::new();
        usage.record(&p, Msat::new(600), now_ms);
        usage.record(&p, Msat::new(100), now_ms + 1_000);
        let report = budget_report(&p, &usage, now_ms + 2_000);
        assert_eq!(report.windows[0].spent_msat, Msat::new(700));
        assert_eq!(report.windows[0].remaining_msat, Msat::new(300));
        assert_eq!(report.windows[0].resets_at_ms, None);
        assert_eq!(report.windows[1].kind, WindowKind::Calendar);
        assert_eq!(report.windows[1].remaining_msat, Msat::new(4_300));
        assert_eq!(report.windows[1].resets_at_ms, Some(ms("2025-03-01T00:00:00Z")));
        assert_eq!(report.lifetime_remaining_msat, Some(Msat::new(9_300)));
        assert_eq!(report.payments_last_minute, 2);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["windows"][0]["window"], "1h");
        assert_eq!(json["windows"][1]["kind"], "calendar");
    }

    #[test]
    fn release_skips_windows_added_after_the_reservation() {
        let hourly =
            Policy::from_json(r#"{"budgets":[{"limit_msat": 100000, "window": "1h", "kind": "rolling"}]}"#).unwrap();
        let both = Policy::from_json(
            r#"{"budgets":[{"limit_msat": 100000, "window": "1h", "kind": "rolling"},
                           {"limit_msat": 10000, "window": "day", "kind": "calendar"}]}"#,
        )
        .unwrap();
        let t0 = 1_800_000_000_000;
        let mut usage = Usage::new();
        usage.record(&hourly, Msat::new(5_000), t0); // a hold under the old policy
        usage.record(&both, Msat::new(3_000), t0 + 1_000); // real spend once "day" exists
        usage.release(&both, Msat::new(5_000), t0, t0 + 2_000); // the hold is denied
        assert_eq!(usage.spent_in(Window::parse("1h").unwrap(), t0 + 2_000), Msat::new(3_000));
        assert_eq!(
            usage.spent_in(Window::parse("day").unwrap(), t0 + 2_000),
            Msat::new(3_000),
            "the day window never counted the hold and keeps the real spend"
        );
    }
}
