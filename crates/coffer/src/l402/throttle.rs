//! Challenges per client per minute. Each challenge stores a new invoice
//! of the seller, so an unpaid client could otherwise fill the store at
//! the speed it can send requests. A client is its address (an IPv6 client
//! its /64, the block one host is usually given).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Clients tracked at once: beyond (after dropping windows that ended),
/// new clients are refused until windows end.
pub const CLIENTS_TRACKED_MAX: usize = 65_536;
const WINDOW_MS: i64 = 60_000;

pub struct ChallengeThrottle {
    per_minute: u32,
    /// The current window of each client: its start (unix ms) and the
    /// challenges given in it.
    clients: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl ChallengeThrottle {
    pub fn new(per_minute: u32) -> ChallengeThrottle {
        ChallengeThrottle { per_minute, clients: Mutex::new(HashMap::new()) }
    }

    /// Counts one challenge for `client`; refused with the seconds until
    /// its window ends once it had `per_minute` in this one.
    pub fn take(&self, client: IpAddr, now_ms: i64) -> Result<(), u64> {
        let key = client_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !clients.contains_key(&key) && clients.len() >= CLIENTS_TRACKED_MAX {
            clients.retain(|_, (started_ms, _)| now_ms.saturating_sub(*started_ms) < WINDOW_MS);
            if clients.len() >= CLIENTS_TRACKED_MAX {
                // Refusing is the safe side: a refused client retries, an
                // untracked one would get invoices without bound.
                return Err(secs_left(WINDOW_MS));
            }
        }
        let (started_ms, count) = clients.entry(key).or_insert((now_ms, 0));
        let elapsed_ms = now_ms.saturating_sub(*started_ms);
        if elapsed_ms >= WINDOW_MS {
            (*started_ms, *count) = (now_ms, 0);
        } else if *count >= self.per_minute {
            return Err(secs_left(WINDOW_MS - elapsed_ms));
        }
        *count += 1;
        Ok(())
    }
}

fn secs_left(ms: i64) -> u64 {
    u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000)
}

/// An IPv4 address as it is (also when it came as `::ffff:a.b.c.d`); an
/// IPv6 address as its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_bound_per_window_and_others_are_apart() {
        let throttle = ChallengeThrottle::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(throttle.take(a, 0), Ok(()));
        assert_eq!(throttle.take("::ffff:192.0.2.1".parse().unwrap(), 1), Ok(()));
        assert_eq!(throttle.take(a, 30_000), Err(30));
        assert_eq!(throttle.take(b, 30_000), Ok(()));
        assert_eq!(throttle.take("2001:db8::2".parse().unwrap(), 30_000), Ok(()));
        assert_eq!(throttle.take("2001:db8::3".parse().unwrap(), 30_001), Err(60));
        assert_eq!(throttle.take(a, 60_000), Ok(()), "a new window");
    }
}
