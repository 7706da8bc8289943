//! Property tests of limits in a currency: the conversion never allows more
//! than the amount is worth at the price (checked in exact integers), a
//! higher price never allows more, text round-trips, and a resolved budget
//! in dollars lets through no spend above its msat value.

use coffer_core::Msat;
use coffer_core::policy::{
    Attempt, Currency, Decimal, Decision, FiatAmount, FiatRate, FiatRates, Payee, Policy, Usage, evaluate, resolve,
};
use proptest::prelude::*;

const MSAT_PER_BTC: u128 = 100_000_000_000;
/// The largest fixed-point value (10^11 units of 10^-8).
const UNITS_E8_MAX: u64 = 100_000_000_000 * 100_000_000;

fn decimal(units_e8: u64) -> Decimal {
    let text = format!("{}.{:08}", units_e8 / 100_000_000, units_e8 % 100_000_000);
    Decimal::parse(&text).expect("in range")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("a currency")
}

fn fixed(price_e8: u64) -> FiatRate {
    FiatRate { btc_price: decimal(price_e8), at_ms: 0, max_age_ms: None }
}

proptest! {
    #[test]
    fn conversion_is_the_exact_value_rounded_down(amount in 1..=UNITS_E8_MAX, price in 1..=UNITS_E8_MAX) {
        let msat = FiatAmount { amount: decimal(amount), currency: usd() }.to_msat(&fixed(price));
        let exact_num = u128::from(amount) * MSAT_PER_BTC;
        let got = u128::from(msat.as_u64());
        prop_assert!(got * u128::from(price) <= exact_num, "never more than the amount is worth");
        if msat < Msat::MONEY_MAX {
            prop_assert!(exact_num < (got + 1) * u128::from(price), "and less than one msat below it");
        }
    }

    #[test]
    fn a_higher_price_never_allows_more(amount in 1..=UNITS_E8_MAX, price in 1..UNITS_E8_MAX, more in 1..=1_000_000u64) {
        let a = FiatAmount { amount: decimal(amount), currency: usd() };
        let higher = price.saturating_add(more).min(UNITS_E8_MAX);
        prop_assert!(a.to_msat(&fixed(higher)) <= a.to_msat(&fixed(price)));
    }

    #[test]
    fn decimals_round_trip_through_their_text(units in 1..=UNITS_E8_MAX) {
        let d = decimal(units);
        prop_assert_eq!(Decimal::parse(&d.to_string()), Ok(d));
        prop_assert_eq!(d.units_e8(), units);
    }

    #[test]
    fn a_resolved_dollar_budget_lets_no_spend_past_its_value(
        cents in 1u64..=100_000,
        price_dollars in 1u64..=1_000_000,
        spends in proptest::collection::vec(1u64..=5_000_000, 1..40),
    ) {
        let json = format!(
            r#"{{"budgets": [{{"limit": {{"amount": "{}.{:02}", "currency": "USD"}}, "window": "1h", "kind": "rolling"}}]}}"#,
            cents / 100,
            cents % 100
        );
        let policy = Policy::from_json(&json).expect("a valid policy");
        let mut rates = FiatRates::default();
        rates.set(usd(), fixed(price_dollars * 100_000_000)).expect("one currency");
        let resolved = resolve(&policy, &rates, 0).expect("a usable rate").into_owned();
        // What the limit is worth, exactly: cents / 100 / price BTC.
        let worth_num = u128::from(cents) * MSAT_PER_BTC;
        let worth_den = 100 * u128::from(price_dollars);
        let mut usage = Usage::new();
        let mut spent: u128 = 0;
        for (i, amount) in spends.into_iter().enumerate() {
            let attempt = Attempt { amount: Msat::new(amount), fee_limit: Msat::ZERO, payee: Payee::default() };
            let now_ms = i64::try_from(i).unwrap_or(0);
            if matches!(evaluate(&resolved, &usage, &attempt, now_ms), Decision::Allow) {
                usage.record(&resolved, attempt.spend(), now_ms);
                spent += u128::from(amount);
            }
        }
        prop_assert!(spent * worth_den <= worth_num, "spent {spent} msat past {cents} cents at {price_dollars}");
    }
}
