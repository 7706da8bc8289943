//! Spending policy: the agent's constitution, and its pure evaluation.
//!
//! * [`Policy`] is the document an operator writes (JSON), with
//!   [`Policy::from_json`] and [`Policy::validate`].
//! * [`Usage`] is what an agent has spent, maintained incrementally so that
//!   a decision costs the same after a million payments as after one.
//! * [`evaluate`] and [`evaluate_chain`] decide one attempt: allow, hold for
//!   approval, or deny with a stable [`DenyCode`].
//! * [`BreakerRules`] and [`BreakerState`] decide when to freeze an agent.
//!
//! Nothing here reads a clock: every time is an argument `now_ms`, unix
//! milliseconds UTC. Nothing panics on any input, and money is integer
//! millisatoshis with checked or saturating arithmetic.
//!
//! The caller's loop for one payment:
//! 1. `evaluate_chain` with the agent's and its ancestors' policies and usage;
//! 2. on Allow or Hold, `Usage::record` amount plus fee limit into every
//!    level's usage (a held payment's spend is reserved too);
//! 3. when the payment settles with a lower fee, fails, expires or is
//!    rejected by the approver, `Usage::release` what was not spent, at
//!    every level, with the `now_ms` of step 2 as `reserved_at_ms`.

mod breaker;
mod evaluate;
mod fiat;
mod json_path;
mod serde_text;
mod spec;
mod usage;
mod warning;
mod window;

pub use breaker::{BreakerRules, BreakerState, PAYEES_TRACKED_MAX, TripCode, TripReason};
pub use evaluate::{Attempt, Decision, DenyCode, HoldReason, evaluate, evaluate_chain};
pub use fiat::{
    Currency, Decimal, FIAT_CURRENCIES_MAX, FIAT_FRACTION_DIGITS_MAX, FIAT_UNITS_MAX, FiatAmount, FiatError, FiatRate,
    FiatRates, RateReport, budget_report_at, resolve,
};
pub use spec::{
    BUDGETS_MAX, Budget, L402_DOMAINS_MAX, L402Rules, PAYEE_ENTRIES_MAX, PAYMENTS_PER_MINUTE_MAX, Payee, PayeeDefault,
    PayeeEntry, PayeeRules, Policy, PolicyError,
};
pub use usage::{BUCKETS_PER_WINDOW, BudgetReport, RATE_WINDOW_MS, Usage, WindowReport, budget_report};
pub use warning::{Crossing, WARNING_THRESHOLDS_MAX, WarningThresholds, crossings};
pub use window::{CalendarPeriod, ROLLING_WINDOW_MAX_MS, Window, WindowKind};
