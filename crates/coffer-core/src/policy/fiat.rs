//! Limits stated in the operator's currency, and their resolution to msat.
//!
//! A policy may state a budget, the lifetime limit or the largest payment as
//! `{"amount": "5.00", "currency": "USD"}` instead of msat. Before a payment
//! is decided, [`resolve`] converts every such limit at the current price of
//! a bitcoin into the msat policy that [`super::evaluate`] understands. The
//! conversion rounds down (the stricter side), uses integers only, and
//! fails when a rate is missing or older than its maximum age: the caller
//! then refuses the payment.

use super::spec::{Budget, Policy};
use super::usage::{BudgetReport, Usage, budget_report};
use crate::amount::{MSAT_PER_SAT, Msat, SAT_PER_BTC};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Fraction digits a fiat amount or price may have, at most.
pub const FIAT_FRACTION_DIGITS_MAX: u32 = 8;
/// One unit of a currency in the fixed-point form amounts are kept in.
const FIAT_SCALE: u64 = 100_000_000;
const _: () = assert!(FIAT_SCALE == 10u64.pow(FIAT_FRACTION_DIGITS_MAX));
/// The largest amount or price, in whole units of its currency: big enough
/// for any real limit or price, small enough that the fixed-point value
/// fits a u64 and the conversion's product a u128.
pub const FIAT_UNITS_MAX: u64 = 100_000_000_000;
const _: () = assert!(FIAT_UNITS_MAX.checked_mul(FIAT_SCALE).is_some());
const MSAT_PER_BTC: u128 = (SAT_PER_BTC as u128) * (MSAT_PER_SAT as u128);
const _: () = assert!(((FIAT_UNITS_MAX * FIAT_SCALE) as u128).checked_mul(MSAT_PER_BTC).is_some());
/// Currencies a rate snapshot holds, at most.
pub const FIAT_CURRENCIES_MAX: usize = 32;
/// Decimal text longer than this is refused before it is read.
const DECIMAL_LEN_MAX_BYTES: usize = 32;

/// An ISO 4217 style currency code: three upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(text: &str) -> Result<Currency, String> {
        match text.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Currency([*a, *b, *c])),
            _ => Err(format!("invalid currency {text:?}: expected three upper-case letters such as \"USD\"")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only upper-case ASCII letters get in (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Currency {
    type Err = String;
    fn from_str(text: &str) -> Result<Currency, String> {
        Currency::parse(text)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
        super::serde_text::deserialize(deserializer, "a currency code such as \"USD\"", Currency::parse)
    }
}

/// A positive decimal with at most [`FIAT_FRACTION_DIGITS_MAX`] fraction
/// digits, kept as an integer of 10^-8 units: no floating point for money.
/// Written as a JSON string ("5.00") so that no reader rounds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal {
    units_e8: u64,
}

impl Decimal {
    /// Parses "5", "5.00" or "0.00012345": digits, an optional point and
    /// 1 to 8 fraction digits; no sign, exponent or spaces; more than zero
    /// and at most [`FIAT_UNITS_MAX`].
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let bad = |why: &str| format!("invalid amount {text:?}: {why}");
        if text.len() > DECIMAL_LEN_MAX_BYTES {
            return Err(bad("too long"));
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
            return Err(bad("expected a decimal number such as \"5.00\""));
        }
        if fraction.len() > FIAT_FRACTION_DIGITS_MAX as usize {
            return Err(bad(&format!("at most {FIAT_FRACTION_DIGITS_MAX} digits after the point")));
        }
        let whole: u64 = whole.parse().map_err(|_| bad(&format!("at most {FIAT_UNITS_MAX}")))?;
        if whole > FIAT_UNITS_MAX {
            return Err(bad(&format!("at most {FIAT_UNITS_MAX}")));
        }
        let padded = format!("{fraction:0<8}");
        let fraction: u64 = padded.parse().map_err(|_| bad("bad fraction"))?;
        let units_e8 = whole * FIAT_SCALE + fraction;
        if units_e8 == 0 {
            return Err(bad("must be more than zero"));
        }
        if units_e8 > FIAT_UNITS_MAX * FIAT_SCALE {
            return Err(bad(&format!("at most {FIAT_UNITS_MAX}")));
        }
        Ok(Decimal { units_e8 })
    }

    /// The value in 10^-8 units.
    pub const fn units_e8(self) -> u64 {
        self.units_e8
    }
}

impl fmt::Display for Decimal {
    /// At least two fraction digits, no trailing zeros beyond them: "5.00",
    /// "0.125".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fraction = format!("{:08}", self.units_e8 % FIAT_SCALE);
        let trimmed = fraction.trim_end_matches('0');
        let shown = if trimmed.len() < 2 { &fraction[..2] } else { trimmed };
        write!(f, "{}.{shown}", self.units_e8 / FIAT_SCALE)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        super::serde_text::deserialize(deserializer, "a decimal string such as \"5.00\"", Decimal::parse)
    }
}

/// An amount in a currency: `{"amount": "5.00", "currency": "USD"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct FiatAmount {
    /// A decimal string, at most 8 fraction digits, more than zero.
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "5.00"))]
    pub amount: Decimal,
    /// Three upper-case letters (ISO 4217), such as "USD".
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "USD"))]
    pub currency: Currency,
}

impl FiatAmount {
    /// What this amount buys at `rate`, in msat, rounded down (a limit in
    /// a currency never allows more than it says), and at most 21 million
    /// bitcoin.
    pub fn to_msat(&self, rate: &FiatRate) -> Msat {
        let price = u128::from(rate.btc_price.units_e8);
        // Both are fixed-point with the same scale: the scales cancel.
        let msat = u128::from(self.amount.units_e8) * MSAT_PER_BTC / price;
        Msat::new(u64::try_from(msat).unwrap_or(u64::MAX).min(Msat::MONEY_MAX.as_u64()))
    }
}

impl fmt::Display for FiatAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// The price of one bitcoin in a currency, when it was learned, and how
/// old it may grow before it no longer counts (`None`: a fixed rate the
/// operator set, which never ages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiatRate {
    pub btc_price: Decimal,
    pub at_ms: i64,
    pub max_age_ms: Option<i64>,
}

/// The rates known at one moment: what a payment is decided with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FiatRates {
    rates: BTreeMap<Currency, FiatRate>,
}

impl FiatRates {
    /// Sets a currency's rate; refuses a new currency beyond
    /// [`FIAT_CURRENCIES_MAX`].
    pub fn set(&mut self, currency: Currency, rate: FiatRate) -> Result<(), String> {
        if !self.rates.contains_key(&currency) && self.rates.len() >= FIAT_CURRENCIES_MAX {
            return Err(format!("at most {FIAT_CURRENCIES_MAX} currencies"));
        }
        self.rates.insert(currency, rate);
        Ok(())
    }

    pub fn get(&self, currency: Currency) -> Option<&FiatRate> {
        self.rates.get(&currency)
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Currency, &FiatRate)> {
        self.rates.iter().map(|(c, r)| (*c, r))
    }

    /// The rate of `currency` if it may be used at `now_ms`.
    pub fn usable(&self, currency: Currency, now_ms: i64) -> Result<&FiatRate, FiatError> {
        let rate = self.rates.get(&currency).ok_or(FiatError::Missing { currency })?;
        let age_ms = now_ms.saturating_sub(rate.at_ms);
        match rate.max_age_ms {
            Some(max_age_ms) if age_ms > max_age_ms => Err(FiatError::Stale { currency, age_ms, max_age_ms }),
            _ => Ok(rate),
        }
    }

    /// `amount` in msat at the usable rate of its currency.
    pub fn to_msat(&self, amount: &FiatAmount, now_ms: i64) -> Result<Msat, FiatError> {
        self.usable(amount.currency, now_ms).map(|rate| amount.to_msat(rate))
    }
}

/// Why a policy with limits in a currency cannot be resolved now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiatError {
    Missing { currency: Currency },
    Stale { currency: Currency, age_ms: i64, max_age_ms: i64 },
}

impl FiatError {
    /// The stable code of the denial it causes.
    pub const CODE: &'static str = "fiat-rate-unavailable";
}

impl fmt::Display for FiatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FiatError::Missing { currency } => {
                write!(f, "the policy states a limit in {currency}, and the gateway has no {currency} rate")
            }
            FiatError::Stale { currency, age_ms, max_age_ms } => write!(
                f,
                "the policy states a limit in {currency}, and the latest {currency} rate is {} s old, \
                 older than its maximum age of {} s",
                age_ms / 1_000,
                max_age_ms / 1_000
            ),
        }
    }
}

impl std::error::Error for FiatError {}

/// The msat policy `policy` means at `now_ms` with `rates`: every limit in
/// a currency converted (rounded down) into its msat field, the currency
/// form dropped. A policy without such limits comes back as it is, and
/// needs no rate. Fails on the first currency without a usable rate.
pub fn resolve<'p>(policy: &'p Policy, rates: &FiatRates, now_ms: i64) -> Result<Cow<'p, Policy>, FiatError> {
    if !policy.has_fiat_limits() {
        return Ok(Cow::Borrowed(policy));
    }
    let convert = |amount: &FiatAmount| rates.to_msat(amount, now_ms);
    let mut resolved = policy.clone();
    if let Some(max) = resolved.max_payment.take() {
        resolved.max_payment_msat = Some(convert(&max)?);
    }
    if let Some(lifetime) = resolved.lifetime.take() {
        resolved.lifetime_msat = Some(convert(&lifetime)?);
    }
    resolve_budgets(&mut resolved.budgets, &convert)?;
    if let Some(l402) = resolved.l402.as_mut() {
        for budgets in l402.domains.values_mut() {
            resolve_budgets(budgets, &convert)?;
        }
    }
    Ok(Cow::Owned(resolved))
}

/// A rate as the budget report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RateReport {
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "USD"))]
    pub currency: Currency,
    /// What one bitcoin costs in the currency.
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "95000.00"))]
    pub btc_price: Decimal,
    /// When the price was learned (absent for a fixed price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// The budget report of `policy` with its limits in a currency at `rates`:
/// their msat value beside the currency form. Without a usable rate they
/// show zero msat (what may be spent under them) and `fiat_error` says why.
pub fn budget_report_at(policy: &Policy, usage: &Usage, rates: &FiatRates, now_ms: i64) -> BudgetReport {
    if !policy.has_fiat_limits() {
        return budget_report(policy, usage, now_ms);
    }
    let mut report = match resolve(policy, rates, now_ms) {
        Ok(resolved) => budget_report(&resolved, usage, now_ms),
        Err(e) => {
            let mut report = budget_report(policy, usage, now_ms);
            if policy.lifetime.is_some() {
                (report.lifetime_limit_msat, report.lifetime_remaining_msat) = (Some(Msat::ZERO), Some(Msat::ZERO));
            }
            report.fiat_error = Some(e.to_string());
            report
        }
    };
    for (window, budget) in report.windows.iter_mut().zip(&policy.budgets) {
        window.limit = budget.limit;
    }
    report.lifetime_limit = policy.lifetime;
    report.fiat_rates = policy
        .fiat_currencies()
        .into_iter()
        .filter_map(|currency| rates.get(currency).map(|r| (currency, r)))
        .map(|(currency, r)| RateReport { currency, btc_price: r.btc_price, at_ms: r.max_age_ms.map(|_| r.at_ms) })
        .collect();
    report
}

fn resolve_budgets(
    budgets: &mut [Budget],
    convert: &dyn Fn(&FiatAmount) -> Result<Msat, FiatError>,
) -> Result<(), FiatError> {
    for budget in budgets.iter_mut() {
        if let Some(limit) = budget.limit.take() {
            budget.limit_msat = convert(&limit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> FiatAmount {
        FiatAmount { amount: Decimal::parse(text).unwrap(), currency: Currency::parse("USD").unwrap() }
    }

    fn rate(price: &str, at_ms: i64, max_age_ms: Option<i64>) -> FiatRate {
        FiatRate { btc_price: Decimal::parse(price).unwrap(), at_ms, max_age_ms }
    }

    fn rates(price: &str, at_ms: i64, max_age_ms: Option<i64>) -> FiatRates {
        let mut rates = FiatRates::default();
        rates.set(Currency::parse("USD").unwrap(), rate(price, at_ms, max_age_ms)).unwrap();
        rates
    }

    #[test]
    fn decimals_parse_strictly_and_print_canonically() {
        for (text, units_e8, shown) in [
            ("5", 500_000_000, "5.00"),
            ("5.00", 500_000_000, "5.00"),
            ("0.125", 12_500_000, "0.125"),
            ("0.00000001", 1, "0.00000001"),
            ("100000000000", FIAT_UNITS_MAX * FIAT_SCALE, "100000000000.00"),
        ] {
            let d = Decimal::parse(text).unwrap();
            assert_eq!(d.units_e8(), units_e8, "{text}");
            assert_eq!(d.to_string(), shown);
            assert_eq!(Decimal::parse(shown), Ok(d));
        }
        for bad in
            ["", ".", "5.", ".5", "-1", "+1", "1e3", " 1", "1,00", "0", "0.00", "0.000000001", "100000000000.01", "NaN"]
        {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Decimal::parse(&"9".repeat(40)).unwrap_err().contains("too long"));
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["usd", "US", "USDT", "U$D", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conversion_rounds_down() {
        // 1 BTC = 100,000 USD: 1 USD = 1,000 sat = 1,000,000 msat.
        let r = rate("100000", 0, None);
        assert_eq!(usd("5.00").to_msat(&r), Msat::new(5_000_000_000 / 1_000));
        // 1 BTC = 3 USD: 1 USD = 33,333,333,333.33... msat, rounded down.
        assert_eq!(usd("1").to_msat(&rate("3", 0, None)), Msat::new(33_333_333_333));
        // Never more than all the bitcoin there is.
        assert_eq!(usd("100000000000").to_msat(&rate("0.00000001", 0, None)), Msat::MONEY_MAX);
    }

    #[test]
    fn conversion_never_exceeds_the_exact_value() {
        // amount / price * 1e11 >= msat > that - 1, checked in integers.
        for amount in ["0.01", "1", "5.55", "12345.6789", "99999999.99999999"] {
            for price in ["0.5", "1", "3", "95000.12", "123456789.87654321"] {
                let (a, p) = (Decimal::parse(amount).unwrap(), Decimal::parse(price).unwrap());
                let msat = u128::from(usd(amount).to_msat(&rate(price, 0, None)).as_u64());
                let exact_num = u128::from(a.units_e8()) * MSAT_PER_BTC;
                let den = u128::from(p.units_e8());
                if msat < u128::from(Msat::MONEY_MAX.as_u64()) {
                    assert!(msat * den <= exact_num && exact_num < (msat + 1) * den, "{amount} at {price}");
                }
            }
        }
    }

    #[test]
    fn a_missing_or_stale_rate_fails() {
        let policy = Policy::from_json(r#"{"max_payment": {"amount": "1", "currency": "EUR"}}"#).unwrap();
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(resolve(&policy, &rates("1", 0, None), 0), Err(FiatError::Missing { currency: eur }));
        let mut fresh = FiatRates::default();
        fresh.set(eur, rate("100000", 1_000, Some(60_000))).unwrap();
        assert!(resolve(&policy, &fresh, 61_000).is_ok(), "exactly the max age is still fresh");
        let stale = resolve(&policy, &fresh, 61_001).unwrap_err();
        assert_eq!(stale, FiatError::Stale { currency: eur, age_ms: 60_001, max_age_ms: 60_000 });
        assert!(stale.to_string().contains("older than its maximum age of 60 s"), "{stale}");
    }

    #[test]
    fn a_policy_without_currency_limits_needs_no_rate() {
        let policy = Policy::from_json(r#"{"max_payment_msat": 5}"#).unwrap();
        assert!(matches!(resolve(&policy, &FiatRates::default(), 0), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn resolution_fills_every_msat_field_and_drops_the_currency_form() {
        let json = r#"{"max_payment": {"amount": "1", "currency": "USD"},
            "lifetime": {"amount": "100", "currency": "USD"},
            "budgets": [{"limit": {"amount": "5.00", "currency": "USD"}, "window": "1h", "kind": "rolling"},
                        {"limit_msat": 7, "window": "day", "kind": "calendar"}],
            "l402": {"domains": {"a.com": [{"limit": {"amount": "0.5", "currency": "USD"}, "window": "1h", "kind": "rolling"}]}}}"#;
        let policy = Policy::from_json(json).unwrap();
        let resolved = resolve(&policy, &rates("100000", 0, Some(1_000)), 500).unwrap().into_owned();
        assert_eq!(resolved.max_payment_msat, Some(Msat::new(1_000_000)));
        assert_eq!(resolved.lifetime_msat, Some(Msat::new(100_000_000)));
        assert_eq!(resolved.budgets[0].limit_msat, Msat::new(5_000_000));
        assert_eq!(resolved.budgets[1].limit_msat, Msat::new(7));
        assert_eq!(resolved.l402.as_ref().unwrap().domain_budgets("a.com")[0].limit_msat, Msat::new(500_000));
        assert!(!resolved.has_fiat_limits());
        assert_eq!(resolved.validate(), Ok(()), "the resolved policy is a plain msat policy");
    }

    #[test]
    fn the_budget_report_shows_both_forms_or_zero_without_a_rate() {
        let json = r#"{"lifetime": {"amount": "2", "currency": "USD"},
            "budgets": [{"limit": {"amount": "5.00", "currency": "USD"}, "window": "1h", "kind": "rolling"}]}"#;
        let policy = Policy::from_json(json).unwrap();
        let mut usage = Usage::new();
        let now_ms = 1_000;
        usage.record(&policy, Msat::new(1_000), now_ms);
        let report = budget_report_at(&policy, &usage, &rates("100000", now_ms, Some(60_000)), now_ms);
        assert_eq!(report.windows[0].limit_msat, Msat::new(5_000_000));
        assert_eq!(report.windows[0].remaining_msat, Msat::new(4_999_000));
        assert_eq!(report.windows[0].limit, Some(usd("5")));
        assert_eq!((report.lifetime_limit_msat, report.lifetime_limit), (Some(Msat::new(2_000_000)), Some(usd("2"))));
        assert_eq!(report.fiat_rates.len(), 1);
        assert_eq!(report.fiat_error, None);
        let none = budget_report_at(&policy, &usage, &FiatRates::default(), now_ms);
        assert_eq!((none.windows[0].limit_msat, none.windows[0].remaining_msat), (Msat::ZERO, Msat::ZERO));
        assert_eq!(none.lifetime_remaining_msat, Some(Msat::ZERO));
        assert!(none.fiat_error.unwrap().contains("no USD rate"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["windows"][0]["limit"], serde_json::json!({"amount": "5.00", "currency": "USD"}));
    }

    #[test]
    fn snapshots_are_bounded() {
        let mut rates = FiatRates::default();
        for i in 0..FIAT_CURRENCIES_MAX {
            let code = format!("A{}{}", (b'A' + (i / 26) as u8) as char, (b'A' + (i % 26) as u8) as char);
            rates.set(Currency::parse(&code).unwrap(), rate("1", 0, None)).unwrap();
        }
        assert!(rates.set(Currency::parse("ZZZ").unwrap(), rate("1", 0, None)).is_err());
        assert!(rates.set(Currency::parse("AAA").unwrap(), rate("2", 0, None)).is_ok(), "an update is no new entry");
    }
}
