//! Write rates and the breaker's feed, in memory: a token bucket per key and
//! per agent (`writes_per_second_per_key`, `writes_per_second_per_agent`;
//! the burst is one second's worth), and a count of the limits each agent
//! hits, every `limit_hits_per_breaker_denial` of which is one denial for its
//! breaker.
//!
//! In memory, not in the store: a rate is about this process's load, and a
//! store write per request would cost what the bound protects. With several
//! instances each applies the bound on its own.

use crate::error::Error;
use crate::limits::{Limit, Limits};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets (or hit counts) kept at most; past it the idle ones are dropped
/// (a full bucket is the same as none), then, if a flood of distinct callers
/// left none idle, all of them.
const ENTRIES_MAX: usize = 65_536;
/// Limit hits older than this no longer count toward a denial.
const HIT_WINDOW_MS: u64 = 60_000;
/// One token, in thousandths: refills are exact in whole milliseconds.
const MILLITOKENS_PER_TOKEN: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    tokens_milli: u64,
    at_ms: u64,
}

impl Bucket {
    /// The bucket refilled at `rate_per_second` up to one second's worth.
    fn refilled(self, rate_per_second: u32, now_ms: u64) -> Bucket {
        let rate = u64::from(rate_per_second);
        let gained = now_ms.saturating_sub(self.at_ms).saturating_mul(rate);
        Bucket {
            tokens_milli: self.tokens_milli.saturating_add(gained).min(rate * MILLITOKENS_PER_TOKEN),
            at_ms: now_ms,
        }
    }

    /// Seconds until it holds a whole token again.
    fn retry_after_secs(self, rate_per_second: u32) -> u64 {
        let missing_milli = MILLITOKENS_PER_TOKEN.saturating_sub(self.tokens_milli);
        missing_milli.div_ceil(u64::from(rate_per_second.max(1))).div_ceil(1_000)
    }

    fn full(self, rate_per_second: u32, now_ms: u64) -> bool {
        self.refilled(rate_per_second, now_ms).tokens_milli >= u64::from(rate_per_second) * MILLITOKENS_PER_TOKEN
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Bucket>,
    agents: HashMap<String, Bucket>,
    /// Per agent: hits in the current window, and when it started.
    hits: HashMap<String, (u32, u64)>,
}

pub struct Throttle {
    started: Instant,
    state: Mutex<State>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle { started: Instant::now(), state: Mutex::new(State::default()) }
    }
}

impl Throttle {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes one write from the key's and the agent's buckets, or refuses
    /// with the wait until the emptier one has a token.
    pub fn admit_write(&self, limits: &Limits, key_id: &str, agent_id: &str) -> Result<(), Error> {
        let now_ms = self.now_ms();
        let mut state = self.state.lock().map_err(|_| Error::Internal("rate state poisoned".into()))?;
        let (key_rate, agent_rate) = (limits.writes_per_second_per_key, limits.writes_per_second_per_agent);
        let refused = |limit, bucket: Bucket, rate| {
            Error::limit(limit, bucket.retry_after_secs(rate), format!("at most {rate} writes a second"))
        };
        let key =
            take(&mut state.keys, key_id, key_rate, now_ms).map_err(|b| refused(Limit::WritesPerKey, b, key_rate))?;
        let agent = take(&mut state.agents, agent_id, agent_rate, now_ms)
            .map_err(|b| refused(Limit::WritesPerAgent, b, agent_rate))?;
        state.keys.insert(key_id.to_owned(), key);
        state.agents.insert(agent_id.to_owned(), agent);
        Ok(())
    }

    /// Counts a limit the agent hit; answers whether that made one more
    /// denial for its breaker.
    pub fn hit(&self, limits: &Limits, agent_id: &str) -> bool {
        let now_ms = self.now_ms();
        let Ok(mut state) = self.state.lock() else { return false };
        if state.hits.len() >= ENTRIES_MAX && !state.hits.contains_key(agent_id) {
            state.hits.retain(|_, (_, since)| now_ms.saturating_sub(*since) < HIT_WINDOW_MS);
            if state.hits.len() >= ENTRIES_MAX {
                state.hits.clear();
            }
        }
        let entry = state.hits.entry(agent_id.to_owned()).or_insert((0, now_ms));
        if now_ms.saturating_sub(entry.1) >= HIT_WINDOW_MS {
            *entry = (0, now_ms);
        }
        entry.0 += 1;
        if entry.0 < limits.limit_hits_per_breaker_denial {
            return false;
        }
        *entry = (0, now_ms);
        true
    }
}

/// The bucket of `id` with one token taken (to keep if the write goes
/// ahead), or the bucket as it stands when it has no token.
fn take(buckets: &mut HashMap<String, Bucket>, id: &str, rate: u32, now_ms: u64) -> Result<Bucket, Bucket> {
    if buckets.len() >= ENTRIES_MAX && !buckets.contains_key(id) {
        buckets.retain(|_, b| !b.full(rate, now_ms));
        if buckets.len() >= ENTRIES_MAX {
            buckets.clear();
        }
    }
    let full = Bucket { tokens_milli: u64::from(rate) * MILLITOKENS_PER_TOKEN, at_ms: now_ms };
    let bucket = buckets.get(id).map_or(full, |b| b.refilled(rate, now_ms));
    if bucket.tokens_milli < MILLITOKENS_PER_TOKEN {
        return Err(bucket);
    }
    Ok(Bucket { tokens_milli: bucket.tokens_milli - MILLITOKENS_PER_TOKEN, at_ms: now_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_one_seconds_worth() {
        let empty = Bucket { tokens_milli: 0, at_ms: 0 };
        assert_eq!(empty.retry_after_secs(4), 1);
        assert_eq!(empty.refilled(4, 250).tokens_milli, MILLITOKENS_PER_TOKEN);
        assert_eq!(empty.refilled(4, 10_000).tokens_milli, 4 * MILLITOKENS_PER_TOKEN);
        let mut buckets = HashMap::new();
        for _ in 0..4 {
            let taken = take(&mut buckets, "k", 4, 0).expect("a token");
            buckets.insert("k".into(), taken);
        }
        assert_eq!(take(&mut buckets, "k", 4, 0).map_err(|b| b.retry_after_secs(4)), Err(1));
        assert!(take(&mut buckets, "k", 4, 250).is_ok());
    }
}
