//! Budget windows: rolling durations ("15m", "1h", "7d") and UTC calendar
//! periods ("day", "week", "month"), and the time arithmetic on them.
//!
//! Times are unix milliseconds (UTC) as `i64`. Every function here is total:
//! absurd timestamps (far past, far future, `i64::MIN`) saturate instead of
//! overflowing, because a panic in the policy engine would be a denial of
//! service and a wrap would be a hole.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
pub const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
const MS_PER_WEEK: i64 = 7 * MS_PER_DAY;
/// The longest rolling window: longer ones would be calendar years, and a
/// bound keeps every derived quantity (bucket width, counts) small.
pub const ROLLING_WINDOW_MAX_MS: i64 = 366 * MS_PER_DAY;

/// Whether a budget slides with time or resets at calendar boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum WindowKind {
    Rolling,
    Calendar,
}

impl WindowKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            WindowKind::Rolling => "rolling",
            WindowKind::Calendar => "calendar",
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UTC calendar period. Weeks are ISO weeks: they start on Monday 00:00 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CalendarPeriod {
    Day,
    Week,
    Month,
}

impl CalendarPeriod {
    pub const fn as_str(self) -> &'static str {
        match self {
            CalendarPeriod::Day => "day",
            CalendarPeriod::Week => "week",
            CalendarPeriod::Month => "month",
        }
    }

    /// The start of the period containing `now_ms`.
    pub fn start_ms(self, now_ms: i64) -> i64 {
        let day = now_ms.div_euclid(MS_PER_DAY);
        let start_day = match self {
            CalendarPeriod::Day => day,
            // Day 0 (1970-01-01) was a Thursday, three days after a Monday.
            CalendarPeriod::Week => day - (day + 3).rem_euclid(7),
            CalendarPeriod::Month => {
                let (year, month, _) = civil_from_days(day);
                days_from_civil(year, month, 1)
            }
        };
        start_day.saturating_mul(MS_PER_DAY)
    }

    /// The start of the next period: when a budget of this period resets.
    pub fn next_start_ms(self, now_ms: i64) -> i64 {
        let start_ms = self.start_ms(now_ms);
        match self {
            CalendarPeriod::Day => start_ms.saturating_add(MS_PER_DAY),
            CalendarPeriod::Week => start_ms.saturating_add(MS_PER_WEEK),
            CalendarPeriod::Month => {
                let (year, month, _) = civil_from_days(now_ms.div_euclid(MS_PER_DAY));
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                days_from_civil(next_year, next_month, 1).saturating_mul(MS_PER_DAY)
            }
        }
    }
}

/// A budget window. Only [`Window::parse`] and [`Window::calendar`] make
/// one, so a rolling duration is always whole seconds in 1 s ..= 366 days.
///
/// The text form is canonical: "60m" parses to the same window as "1h" and
/// prints as "1h", so the two can neither coexist in one policy nor lose
/// their usage when an operator rewrites one as the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window(Repr);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Rolling { duration_ms: i64 },
    Calendar(CalendarPeriod),
}

const WINDOW_SYNTAX: &str =
    "expected a rolling duration such as \"30s\", \"15m\", \"1h\" or \"7d\", or \"day\", \"week\" or \"month\"";

impl Window {
    /// A rolling minute: the breaker's default window.
    pub const ONE_MINUTE: Window = Window(Repr::Rolling { duration_ms: MS_PER_MINUTE });

    pub const fn calendar(period: CalendarPeriod) -> Window {
        Window(Repr::Calendar(period))
    }

    /// Parses "30s", "15m", "1h", "7d" (positive, at most 366 days) or
    /// "day", "week", "month". The error is a sentence for the operator.
    pub fn parse(text: &str) -> Result<Window, String> {
        match text {
            "day" => return Ok(Window::calendar(CalendarPeriod::Day)),
            "week" => return Ok(Window::calendar(CalendarPeriod::Week)),
            "month" => return Ok(Window::calendar(CalendarPeriod::Month)),
            _ => {}
        }
        let duration_ms = parse_duration_ms(text)?;
        if duration_ms == 0 {
            return Err(format!("window {text:?} is empty: a window must be longer than zero"));
        }
        if duration_ms > ROLLING_WINDOW_MAX_MS {
            return Err(format!("window {text:?} is longer than 366 days"));
        }
        Ok(Window(Repr::Rolling { duration_ms }))
    }

    pub const fn kind(self) -> WindowKind {
        match self.0 {
            Repr::Rolling { .. } => WindowKind::Rolling,
            Repr::Calendar(_) => WindowKind::Calendar,
        }
    }

    /// The length of a rolling window; `None` for a calendar period.
    pub const fn rolling_ms(self) -> Option<i64> {
        match self.0 {
            Repr::Rolling { duration_ms } => Some(duration_ms),
            Repr::Calendar(_) => None,
        }
    }

    pub const fn calendar_period(self) -> Option<CalendarPeriod> {
        match self.0 {
            Repr::Rolling { .. } => None,
            Repr::Calendar(period) => Some(period),
        }
    }
}

/// Digits then one unit letter; no sign, no leading zero, no spaces, so that
/// there is exactly one spelling per number.
fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid window {text:?}: {WINDOW_SYNTAX}");
    let units = [('s', MS_PER_SECOND), ('m', MS_PER_MINUTE), ('h', MS_PER_HOUR), ('d', MS_PER_DAY)];
    let (digits, unit_ms) = units
        .into_iter()
        .find_map(|(unit, unit_ms)| text.strip_suffix(unit).map(|digits| (digits, unit_ms)))
        .ok_or_else(bad)?;
    let well_formed =
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if !well_formed {
        return Err(bad());
    }
    // Anything that overflows is far beyond the 366-day limit anyway.
    let too_long = || format!("window {text:?} is longer than 366 days");
    let count: i64 = digits.parse().map_err(|_| too_long())?;
    count.checked_mul(unit_ms).ok_or_else(too_long)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Calendar(period) => f.write_str(period.as_str()),
            Repr::Rolling { duration_ms } => {
                // The largest unit that divides exactly: one spelling per window.
                let (unit_ms, unit) = [(MS_PER_DAY, "d"), (MS_PER_HOUR, "h"), (MS_PER_MINUTE, "m")]
                    .into_iter()
                    .find(|(unit_ms, _)| duration_ms % unit_ms == 0)
                    .unwrap_or((MS_PER_SECOND, "s"));
                write!(f, "{}{unit}", duration_ms / unit_ms)
            }
        }
    }
}

impl FromStr for Window {
    type Err = String;
    fn from_str(text: &str) -> Result<Window, String> {
        Window::parse(text)
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Window, D::Error> {
        super::serde_text::deserialize(deserializer, "a window such as \"1h\" or \"day\"", Window::parse)
    }
}

/// (year, month 1..=12, day 1..=31) of a day counted from 1970-01-01, in the
/// proleptic Gregorian calendar. Howard Hinnant's `civil_from_days`; exact
/// for every day an `i64` of milliseconds can name, with no overflow.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, NaiveDate, Utc};

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc).timestamp_millis()
    }

    #[test]
    fn parses_rolling_and_calendar_windows() {
        assert_eq!(Window::parse("30s").unwrap().rolling_ms(), Some(30_000));
        assert_eq!(Window::parse("15m").unwrap().rolling_ms(), Some(900_000));
        assert_eq!(Window::parse("24h").unwrap().rolling_ms(), Some(MS_PER_DAY));
        assert_eq!(Window::parse("366d").unwrap().rolling_ms(), Some(ROLLING_WINDOW_MAX_MS));
        assert_eq!(Window::parse("week").unwrap().calendar_period(), Some(CalendarPeriod::Week));
        assert_eq!(Window::parse("1h").unwrap().kind(), WindowKind::Rolling);
        assert_eq!(Window::parse("month").unwrap().kind(), WindowKind::Calendar);
    }

    #[test]
    fn rejects_bad_windows() {
        for bad in ["", "h", "1", "1x", "-1h", "+1h", "1.5h", " 1h", "1h ", "01h", "1H", "Day", "1 h", "1é"] {
            let err = Window::parse(bad).unwrap_err();
            assert!(err.contains("invalid window"), "{bad:?}: {err}");
        }
        assert!(Window::parse("0s").unwrap_err().contains("longer than zero"));
        assert!(Window::parse("367d").unwrap_err().contains("366 days"));
        assert!(Window::parse("99999999999999999999d").unwrap_err().contains("366 days"));
        assert!(Window::parse("9223372036854775807s").unwrap_err().contains("366 days"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        assert_eq!(Window::parse("60m").unwrap().to_string(), "1h");
        assert_eq!(Window::parse("24h").unwrap().to_string(), "1d");
        assert_eq!(Window::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(Window::parse("90m").unwrap().to_string(), "90m");
        assert_eq!(Window::parse("60m").unwrap(), Window::parse("1h").unwrap());
        for text in ["30s", "15m", "7d", "day", "week", "month"] {
            let window = Window::parse(text).unwrap();
            assert_eq!(window.to_string(), text);
            let json = serde_json::to_string(&window).unwrap();
            assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), window);
        }
    }

    #[test]
    fn day_boundaries() {
        let day = CalendarPeriod::Day;
        assert_eq!(day.start_ms(ms("2025-03-10T23:59:59.999Z")), ms("2025-03-10T00:00:00Z"));
        assert_eq!(day.start_ms(ms("2025-03-11T00:00:00Z")), ms("2025-03-11T00:00:00Z"));
        assert_eq!(day.next_start_ms(ms("2025-03-10T12:00:00Z")), ms("2025-03-11T00:00:00Z"));
        // Before 1970: floor, not truncation toward zero.
        assert_eq!(day.start_ms(-1), -MS_PER_DAY);
    }

    #[test]
    fn iso_week_starts_on_monday() {
        let week = CalendarPeriod::Week;
        // 2025-03-09 is a Sunday, 2025-03-10 a Monday.
        assert_eq!(week.start_ms(ms("2025-03-09T23:59:59.999Z")), ms("2025-03-03T00:00:00Z"));
        assert_eq!(week.start_ms(ms("2025-03-10T00:00:00Z")), ms("2025-03-10T00:00:00Z"));
        assert_eq!(week.next_start_ms(ms("2025-03-12T08:00:00Z")), ms("2025-03-17T00:00:00Z"));
        // The epoch was a Thursday; its week began on Monday 1969-12-29.
        assert_eq!(week.start_ms(0), ms("1969-12-29T00:00:00Z"));
        // A week across a year end.
        assert_eq!(week.start_ms(ms("2026-01-01T10:00:00Z")), ms("2025-12-29T00:00:00Z"));
    }

    #[test]
    fn month_boundaries_and_leap_years() {
        let month = CalendarPeriod::Month;
        assert_eq!(month.start_ms(ms("2025-01-31T23:59:59.999Z")), ms("2025-01-01T00:00:00Z"));
        assert_eq!(month.next_start_ms(ms("2025-01-31T23:59:59.999Z")), ms("2025-02-01T00:00:00Z"));
        assert_eq!(month.start_ms(ms("2025-02-01T00:00:00Z")), ms("2025-02-01T00:00:00Z"));
        assert_eq!(month.next_start_ms(ms("2024-02-29T12:00:00Z")), ms("2024-03-01T00:00:00Z"));
        assert_eq!(month.next_start_ms(ms("2025-02-28T12:00:00Z")), ms("2025-03-01T00:00:00Z"));
        assert_eq!(month.next_start_ms(ms("2025-12-15T00:00:00Z")), ms("2026-01-01T00:00:00Z"));
        assert_eq!(month.start_ms(ms("1969-12-31T23:00:00Z")), ms("1969-12-01T00:00:00Z"));
    }

    #[test]
    fn civil_conversion_matches_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        // Every 97th day over ~±1100 years crosses every leap rule (4, 100, 400).
        for days in (-400_000..400_000).step_by(97) {
            let date = epoch + chrono::TimeDelta::days(days);
            let expected = (i64::from(date.year()), i64::from(date.month()), i64::from(date.day()));
            assert_eq!(civil_from_days(days), expected, "day {days}");
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
        }
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        for now_ms in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            for period in [CalendarPeriod::Day, CalendarPeriod::Week, CalendarPeriod::Month] {
                let start = period.start_ms(now_ms);
                let next = period.next_start_ms(now_ms);
                assert!(start <= now_ms && start <= next, "{period:?} at {now_ms}: {start}, {next}");
            }
        }
    }
}
