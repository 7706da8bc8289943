//! Circuit-breaker rules: when an agent behaves like it is out of control
//! (many denials, a burst of spend, many payments to one payee), the
//! gateway freezes it and alerts a person. This module only decides; the
//! gateway freezes.
//!
//! The state is bounded like [`super::Usage`]: rolling counters in at most
//! 61 buckets each, and per-payee counts for the 64 most recently paid
//! payees only.

use super::spec::{PolicyError, check_amount};
use super::usage::Ring;
use super::window::{MS_PER_MINUTE, Window};
use crate::amount::Msat;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many payees the breaker keeps counts for. A payee that is being paid
/// repeatedly is among the most recent, so evicting the least recently paid
/// one never hides a concentration of payments.
pub const PAYEES_TRACKED_MAX: usize = 64;
/// Longer payee keys are replaced by their hash, to bound the state.
const PAYEE_KEY_LEN_MAX_BYTES: usize = 128;
// The hash that replaces a longer key ("sha256:" and 64 hex digits) is
// itself within the bound, so it is kept as it is.
const _: () = assert!("sha256:".len() + 64 <= PAYEE_KEY_LEN_MAX_BYTES);

/// When to trip. Each limit is the most tolerated within `window`; one
/// more trips the breaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct BreakerRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_denials: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend_msat: Option<Msat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payments_to_one_payee: Option<u32>,
    /// A rolling window; one minute when absent.
    #[serde(default = "default_window")]
    pub window: Window,
}

fn default_window() -> Window {
    Window::ONE_MINUTE
}

impl Default for BreakerRules {
    fn default() -> BreakerRules {
        BreakerRules {
            max_denials: None,
            max_spend_msat: None,
            max_payments_to_one_payee: None,
            window: default_window(),
        }
    }
}

impl BreakerRules {
    pub(crate) fn validate(&self, field: &str) -> Result<(), PolicyError> {
        if self.max_denials == Some(0) {
            return Err(PolicyError::new(format!("{field}.max_denials"), "must be at least 1"));
        }
        if self.max_payments_to_one_payee == Some(0) {
            return Err(PolicyError::new(format!("{field}.max_payments_to_one_payee"), "must be at least 1"));
        }
        if let Some(max) = self.max_spend_msat {
            check_amount(&format!("{field}.max_spend_msat"), max)?;
        }
        if self.window.rolling_ms().is_none() {
            return Err(PolicyError::new(
                format!("{field}.window"),
                format!("the breaker needs a rolling window such as \"1m\", not {:?}", self.window.to_string()),
            ));
        }
        Ok(())
    }

    /// The window length; an unvalidated calendar window falls back to one
    /// minute rather than failing.
    fn window_ms(&self) -> i64 {
        self.window.rolling_ms().unwrap_or(MS_PER_MINUTE)
    }
}

/// Why the breaker tripped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TripReason {
    pub code: TripCode,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TripCode {
    TooManyDenials,
    SpendBurst,
    PayeeConcentration,
}

impl TripCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            TripCode::TooManyDenials => "too-many-denials",
            TripCode::SpendBurst => "spend-burst",
            TripCode::PayeeConcentration => "payee-concentration",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PayeeActivity {
    key: String,
    last_paid_ms: i64,
    payments: Ring,
}

/// What the breaker has observed. Persist it as JSON like [`super::Usage`];
/// it follows the same monotone clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clock_ms: Option<i64>,
    #[serde(default)]
    denials: Ring,
    #[serde(default)]
    spend: Ring,
    /// Most recently paid last.
    #[serde(default)]
    payees: Vec<PayeeActivity>,
}

impl BreakerState {
    pub fn new() -> BreakerState {
        BreakerState::default()
    }

    pub fn observe_denial(&mut self, rules: &BreakerRules, now_ms: i64) {
        let now_ms = self.advance_clock(now_ms);
        self.denials.add(rules.window_ms(), 1, now_ms);
    }

    /// A payment that went ahead (allowed or held). `payee_key` names the
    /// payee, e.g. [`super::Payee::key`].
    pub fn observe_payment(&mut self, rules: &BreakerRules, payee_key: &str, amount: Msat, now_ms: i64) {
        let now_ms = self.advance_clock(now_ms);
        let window_ms = rules.window_ms();
        self.spend.add(window_ms, amount.as_u64(), now_ms);
        let key = bounded_key(payee_key);
        let mut activity = match self.payees.iter().position(|p| p.key == key) {
            Some(i) => self.payees.remove(i),
            None => PayeeActivity { key, ..PayeeActivity::default() },
        };
        activity.last_paid_ms = now_ms;
        activity.payments.add(window_ms, 1, now_ms);
        self.payees.push(activity);
        if self.payees.len() > PAYEES_TRACKED_MAX {
            self.payees.remove(0);
        }
    }

    /// The first rule the observations break at `now_ms`, if any.
    pub fn should_trip(&self, rules: &BreakerRules, now_ms: i64) -> Option<TripReason> {
        let now_ms = self.clock_ms.map_or(now_ms, |clock_ms| clock_ms.max(now_ms));
        let (window_ms, window) = (rules.window_ms(), rules.window);
        if let Some(max) = rules.max_denials {
            let denials = self.denials.total(window_ms, now_ms);
            if denials > u64::from(max) {
                let message = format!("{denials} payments denied within {window}, more than the {max} tolerated");
                return Some(TripReason { code: TripCode::TooManyDenials, message });
            }
        }
        if let Some(max) = rules.max_spend_msat {
            let spent = Msat::new(self.spend.total(window_ms, now_ms));
            if spent > max {
                let message = format!("{spent} spent within {window}, more than the {max} tolerated");
                return Some(TripReason { code: TripCode::SpendBurst, message });
            }
        }
        let max = rules.max_payments_to_one_payee?;
        let (key, count) = self
            .payees
            .iter()
            .map(|p| (&p.key, p.payments.total(window_ms, now_ms)))
            .max_by_key(|(_, count)| *count)?;
        (count > u64::from(max)).then(|| TripReason {
            code: TripCode::PayeeConcentration,
            message: format!("{count} payments to {key} within {window}, more than the {max} tolerated"),
        })
    }

    fn advance_clock(&mut self, now_ms: i64) -> i64 {
        let now_ms = self.clock_ms.map_or(now_ms, |clock_ms| clock_ms.max(now_ms));
        self.clock_ms = Some(now_ms);
        now_ms
    }
}

fn bounded_key(payee_key: &str) -> String {
    if payee_key.len() <= PAYEE_KEY_LEN_MAX_BYTES {
        return payee_key.to_owned();
    }
    format!("sha256:{}", hex::encode(Sha256::digest(payee_key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn rules() -> BreakerRules {
        BreakerRules {
            max_denials: Some(3),
            max_spend_msat: Some(Msat::new(1_000)),
            max_payments_to_one_payee: Some(2),
            ..BreakerRules::default()
        }
    }

    #[test]
    fn trips_after_too_many_denials_in_the_window() {
        let (rules, mut state) = (rules(), BreakerState::new());
        for i in 0..3 {
            state.observe_denial(&rules, i * 1_000);
        }
        assert_eq!(state.should_trip(&rules, 3_000), None, "three are tolerated");
        state.observe_denial(&rules, 3_000);
        let reason = state.should_trip(&rules, 3_000).unwrap();
        assert_eq!(reason.code, TripCode::TooManyDenials);
        assert!(reason.message.contains("4 payments denied within 1m"), "{}", reason.message);
        // Spread out over more than the window, they do not trip it.
        assert_eq!(state.should_trip(&rules, 2 * MS_PER_MINUTE), None);
    }

    #[test]
    fn trips_on_a_spend_burst() {
        let (rules, mut state) = (rules(), BreakerState::new());
        state.observe_payment(&rules, "node:a", Msat::new(600), 0);
        state.observe_payment(&rules, "node:b", Msat::new(400), 1_000);
        assert_eq!(state.should_trip(&rules, 1_000), None);
        state.observe_payment(&rules, "node:c", Msat::new(1), 2_000);
        assert_eq!(state.should_trip(&rules, 2_000).map(|r| r.code), Some(TripCode::SpendBurst));
    }

    #[test]
    fn trips_on_payments_concentrated_on_one_payee() {
        let rules = BreakerRules { max_payments_to_one_payee: Some(2), ..BreakerRules::default() };
        let mut state = BreakerState::new();
        state.observe_payment(&rules, "node:a", Msat::new(1), 0);
        state.observe_payment(&rules, "node:b", Msat::new(1), 0);
        state.observe_payment(&rules, "node:a", Msat::new(1), 0);
        assert_eq!(state.should_trip(&rules, 0), None);
        state.observe_payment(&rules, "node:a", Msat::new(1), 0);
        let reason = state.should_trip(&rules, 0).unwrap();
        assert_eq!(reason.code, TripCode::PayeeConcentration);
        assert!(reason.message.contains("node:a"), "{}", reason.message);
    }

    #[test]
    fn payee_tracking_is_bounded_and_keeps_the_hot_payee() {
        let rules = BreakerRules { max_payments_to_one_payee: Some(100), ..BreakerRules::default() };
        let mut state = BreakerState::new();
        for i in 0..1_000 {
            state.observe_payment(&rules, "node:hot", Msat::new(1), i);
            state.observe_payment(&rules, &format!("node:cold{i}"), Msat::new(1), i);
        }
        assert_eq!(state.payees.len(), PAYEES_TRACKED_MAX);
        assert_eq!(state.should_trip(&rules, 1_000).map(|r| r.code), Some(TripCode::PayeeConcentration));
        state.observe_payment(&rules, &"x".repeat(10_000), Msat::new(1), 1_000);
        assert!(state.payees.iter().all(|p| p.key.len() <= 7 + 64));
    }

    #[test]
    fn breaker_rules_parse_inside_a_policy_and_validate() {
        let policy = Policy::from_json(r#"{"breaker": {"max_denials": 5, "window": "10m"}}"#).unwrap();
        assert_eq!(policy.breaker.unwrap().window, Window::parse("10m").unwrap());
        let e = Policy::from_json(r#"{"breaker": {"max_denials": 0}}"#).unwrap_err();
        assert_eq!(e.field, "breaker.max_denials");
        let e = Policy::from_json(r#"{"breaker": {"window": "day"}}"#).unwrap_err();
        assert_eq!(e.field, "breaker.window");
        let e = Policy::from_json(r#"{"breaker": {"max_spend_msat": 0}}"#).unwrap_err();
        assert_eq!(e.field, "breaker.max_spend_msat");
        let e = Policy::from_json(r#"{"breaker": {"max_denial": 1}}"#).unwrap_err();
        assert_eq!(e.field, "breaker.max_denial");
    }

    #[test]
    fn state_round_trips_and_survives_extremes() {
        let rules = rules();
        let mut state = BreakerState::new();
        for now_ms in [i64::MIN, 0, i64::MAX] {
            state.observe_denial(&rules, now_ms);
            state.observe_payment(&rules, "node:a", Msat::new(u64::MAX), now_ms);
        }
        assert!(state.should_trip(&rules, i64::MIN).is_some());
        let back: BreakerState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }
}
