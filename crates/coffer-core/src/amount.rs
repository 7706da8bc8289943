//! Money: integer millisatoshis, checked arithmetic, never floats.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Millisatoshis per satoshi.
pub const MSAT_PER_SAT: u64 = 1_000;
/// Satoshis per bitcoin.
pub const SAT_PER_BTC: u64 = 100_000_000;
/// The 21 million bitcoin supply cap, in millisatoshis. No single amount that
/// coffer accepts from outside may exceed it.
pub const MONEY_MAX_MSAT: u64 = 21_000_000 * SAT_PER_BTC * MSAT_PER_SAT;
// Every single amount fits the `i64` that SQL databases store
// (`Msat::to_sql`), and the sum of two does not overflow a `u64`.
const _: () = assert!(MONEY_MAX_MSAT <= i64::MAX as u64);
const _: () = assert!(MONEY_MAX_MSAT <= u64::MAX / 2);

/// An amount of money in millisatoshis.
///
/// The value is never above [`MONEY_MAX_MSAT`] when it came from outside
/// (see [`Msat::parse_positive`]); sums of many amounts (posted totals) may
/// exceed it and are still checked against `u64` overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Msat(u64);

/// Why an amount was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountError {
    Zero,
    AboveMaxMoney,
    Overflow,
    Underflow,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountError::Zero => "amount must be greater than zero",
            AmountError::AboveMaxMoney => "amount exceeds 21 million bitcoin",
            AmountError::Overflow => "amount arithmetic overflowed",
            AmountError::Underflow => "amount arithmetic went below zero",
        })
    }
}

impl std::error::Error for AmountError {}

impl Msat {
    pub const ZERO: Msat = Msat(0);
    pub const MONEY_MAX: Msat = Msat(MONEY_MAX_MSAT);

    pub const fn new(value_msat: u64) -> Msat {
        Msat(value_msat)
    }

    /// An amount a caller asked to move: greater than zero and at most 21M BTC.
    pub fn parse_positive(value_msat: u64) -> Result<Msat, AmountError> {
        if value_msat == 0 {
            return Err(AmountError::Zero);
        }
        if value_msat > MONEY_MAX_MSAT {
            return Err(AmountError::AboveMaxMoney);
        }
        Ok(Msat(value_msat))
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Msat) -> Result<Msat, AmountError> {
        self.0.checked_add(other.0).map(Msat).ok_or(AmountError::Overflow)
    }

    pub fn checked_sub(self, other: Msat) -> Result<Msat, AmountError> {
        self.0.checked_sub(other.0).map(Msat).ok_or(AmountError::Underflow)
    }

    /// `self - other`, or zero when `other` is larger. For "remaining" figures.
    pub const fn saturating_sub(self, other: Msat) -> Msat {
        Msat(self.0.saturating_sub(other.0))
    }

    /// `self + other`, or the largest amount when that overflows. For
    /// totals that are only read (reports), never for a balance.
    pub const fn saturating_add(self, other: Msat) -> Msat {
        Msat(self.0.saturating_add(other.0))
    }

    /// Whole satoshis, rounded down; for display only.
    pub const fn whole_sat(self) -> u64 {
        self.0 / MSAT_PER_SAT
    }

    /// The value as the `i64` that SQL databases store. Every amount coffer
    /// stores is at most a sum of amounts bounded by [`MONEY_MAX_MSAT`] plus
    /// checked additions, so this fails only on corrupted state.
    pub fn to_sql(self) -> Result<i64, AmountError> {
        let value = i64::try_from(self.0).map_err(|_| AmountError::Overflow)?;
        // Postcondition, paired with `from_sql`'s: what is written reads back
        // as the same amount.
        assert!(value >= 0);
        assert_eq!(value.unsigned_abs(), self.0);
        Ok(value)
    }

    /// Reads an amount stored by [`Msat::to_sql`]; negative values are corruption.
    pub fn from_sql(value: i64) -> Result<Msat, AmountError> {
        let amount = u64::try_from(value).map(Msat).map_err(|_| AmountError::Underflow)?;
        // Postcondition, paired with `to_sql`'s: the amount writes back as
        // the same value.
        assert!(amount.0 <= i64::MAX as u64);
        assert_eq!(amount.0, value.unsigned_abs());
        Ok(amount)
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

/// Deserialising checks only the type (a non-negative integer that fits u64);
/// the range rules of an amount in a request live in [`Msat::parse_positive`],
/// so that an error can name the field.
impl<'de> Deserialize<'de> for Msat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Msat, D::Error> {
        u64::deserialize(deserializer).map(Msat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_positive_bounds() {
        assert_eq!(Msat::parse_positive(0), Err(AmountError::Zero));
        assert_eq!(Msat::parse_positive(1), Ok(Msat(1)));
        assert_eq!(Msat::parse_positive(MONEY_MAX_MSAT), Ok(Msat::MONEY_MAX));
        assert_eq!(Msat::parse_positive(MONEY_MAX_MSAT + 1), Err(AmountError::AboveMaxMoney));
        assert_eq!(Msat::parse_positive(u64::MAX), Err(AmountError::AboveMaxMoney));
    }

    #[test]
    fn checked_arithmetic_never_wraps() {
        assert_eq!(Msat(u64::MAX).checked_add(Msat(1)), Err(AmountError::Overflow));
        assert_eq!(Msat(0).checked_sub(Msat(1)), Err(AmountError::Underflow));
        assert_eq!(Msat(5).checked_sub(Msat(5)), Ok(Msat::ZERO));
        assert_eq!(Msat(3).saturating_sub(Msat(5)), Msat::ZERO);
    }

    #[test]
    fn sql_round_trip_rejects_negative() {
        assert_eq!(Msat::from_sql(-1), Err(AmountError::Underflow));
        let max = Msat::MONEY_MAX;
        assert_eq!(Msat::from_sql(max.to_sql().unwrap()), Ok(max));
        assert!(Msat(u64::MAX).to_sql().is_err());
    }

    #[test]
    fn deserialize_rejects_negative_and_fractional() {
        assert!(serde_json::from_str::<Msat>("-1").is_err());
        assert!(serde_json::from_str::<Msat>("1.5").is_err());
        assert!(serde_json::from_str::<Msat>("18446744073709551616").is_err());
        assert_eq!(serde_json::from_str::<Msat>("42").unwrap(), Msat(42));
    }
}
