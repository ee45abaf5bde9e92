//! Brute-force protection: failed logins are counted per client address. After a few,
//! each further failure is answered more slowly; after `max_failures` within the window the
//! address is refused (429) for `block`. A success resets the address. Counting by address,
//! not by user, means an attacker cannot lock the real user out from elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures before answers slow down.
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Addresses tracked at most (oldest forgotten first), so a flood of addresses is bounded.
const MAX_TRACKED: usize = 100_000;

struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

pub struct Throttle {
    max_failures: u32,
    block: Duration,
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    pub fn new(max_failures: u32, block: Duration) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            block,
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    /// How long `addr` is still refused, if it is.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let map = self.by_addr.lock().expect("throttle lock");
        let until = map.get(&addr)?.blocked_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a failed login; returns how long to wait before answering.
    pub fn failed(&self, addr: IpAddr) -> Duration {
        let now = Instant::now();
        let mut map = self.by_addr.lock().expect("throttle lock");
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            let oldest = map.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a);
            if let Some(a) = oldest {
                map.remove(&a);
            }
        }
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        // A quiet window forgives earlier failures.
        if now.duration_since(f.last) > self.block {
            f.count = 0;
            f.blocked_until = None;
        }
        f.count += 1;
        f.last = now;
        if f.count >= self.max_failures {
            f.blocked_until = Some(now + self.block);
        }
        let over = f.count.saturating_sub(FREE_FAILURES);
        if over == 0 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(over.min(5) - 1)).min(MAX_DELAY)
        }
    }

    /// A successful login from `addr` clears its record.
    pub fn succeeded(&self, addr: IpAddr) {
        let mut map = self.by_addr.lock().expect("throttle lock");
        if map.get(&addr).is_some_and(|f| f.blocked_until.is_none()) {
            map.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_then_blocks_one_address_only() {
        let t = Throttle::new(5, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed(a), Duration::from_millis(100));
        assert!(t.blocked(a).is_none());
        assert_eq!(t.failed(a), Duration::from_millis(200));
        assert!(t.blocked(a).is_some(), "the fifth failure blocks");
        assert!(t.blocked(b).is_none(), "another address is not affected");
        t.succeeded(a);
        assert!(t.blocked(a).is_some(), "a block is not lifted by a success");
        t.failed(b);
        t.succeeded(b);
        assert_eq!(t.failed(b), Duration::ZERO, "a success resets the count");
    }
}
