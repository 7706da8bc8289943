//! The gateway's clock: the one place its operations take the time from
//! (creation times, expiries, budget windows, leases). The system clock by
//! default; a gateway started for tests may run on a [`DevClock`] that can
//! be moved forward, so that a test of expiry moves time instead of
//! sleeping through it.
//!
//! Timeouts and write rates measure durations on the monotonic clock
//! (`Instant`) instead: they bound waiting, and say nothing about dates.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The system clock plus an offset that only grows: time still passes as
/// usual, and a test may skip ahead. It never goes back, so nothing the
/// gateway wrote can end up in its own future.
#[derive(Debug, Default)]
pub struct DevClock {
    offset_ms: AtomicI64,
}

/// The longest step a [`DevClock`] takes at once: beyond any expiry or
/// budget window the gateway knows (a year and a day).
pub const DEV_CLOCK_STEP_MAX_MS: i64 = 366 * 24 * 3600 * 1000;
// One step can pass the longest budget window, invoice expiry and L402
// token: a test can see any of them run out.
const _: () = assert!(DEV_CLOCK_STEP_MAX_MS >= coffer_core::policy::ROLLING_WINDOW_MAX_MS);
const _: () = assert!(DEV_CLOCK_STEP_MAX_MS >= crate::payment::bolt11::EXPIRY_MAX_SECS as i64 * 1_000);
const _: () = assert!(DEV_CLOCK_STEP_MAX_MS >= crate::l402::TOKEN_TTL_MAX_SECS as i64 * 1_000);

impl DevClock {
    /// Moves the clock `by_ms` forward (1 to [`DEV_CLOCK_STEP_MAX_MS`]);
    /// returns the new time.
    pub fn advance(&self, by_ms: i64) -> Result<i64, String> {
        if !(1..=DEV_CLOCK_STEP_MAX_MS).contains(&by_ms) {
            return Err(format!("1 to {DEV_CLOCK_STEP_MAX_MS} milliseconds"));
        }
        // Checked, not wrapping: many steps must not overflow the offset
        // into the past.
        self.offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset_ms| offset_ms.checked_add(by_ms))
            .map_err(|_| "the dev clock cannot move further".to_owned())?;
        Ok(self.now_ms())
    }
}

impl Clock for DevClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_clock_moves_forward_only_and_within_its_step() {
        let clock = DevClock::default();
        let before = clock.now_ms();
        let after = clock.advance(60_000).expect("a minute forward");
        assert!(after >= before + 60_000, "{before} -> {after}");
        assert!(clock.advance(0).is_err());
        assert!(clock.advance(-1).is_err());
        assert!(clock.advance(DEV_CLOCK_STEP_MAX_MS + 1).is_err());
        assert!(clock.now_ms() >= after, "the clock went back");
    }
}
