//! Per-client-address token buckets: the control-route request rate and the failed-password
//! allowance.
//!
//! Each address has a bucket of `burst` tokens refilled at `rate` per second; a request (or a
//! failure) takes one, and an empty bucket says how long until the next token. IPv6 addresses
//! are keyed by their /64, the block one host or network usually holds, so an attacker cannot
//! mint a fresh bucket per address. The table is bounded ([`MAX_TRACKED`]): when it is full,
//! buckets that have refilled (indistinguishable from absent ones) are dropped, and if none have,
//! the oldest is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) use crate::http::limits::client_key;

/// Most addresses a limiter tracks at once.
pub(crate) const MAX_TRACKED: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client address.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up. A rate of 0 disables the limiter.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self::with_capacity(rate, burst, MAX_TRACKED)
    }

    pub(crate) fn with_capacity(rate: f64, burst: u32, max_tracked: usize) -> Self {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        b.at = now;
    }

    fn wait_for_one(&self, b: &Bucket) -> Duration {
        // Saturates rather than panics for a rate so small the wait overflows (flags are
        // range-checked at start; an embedder's config may not be).
        Duration::try_from_secs_f64(((1.0 - b.tokens) / self.rate).max(0.0))
            .unwrap_or(Duration::from_secs(u32::MAX.into()))
    }

    /// Take a token for `ip`; when there is none, how long until there will be.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        self.take_at(ip, Instant::now())
    }

    pub(crate) fn take_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let key = client_key(ip);
        let mut map = crate::sync::lock(&self.buckets);
        if !map.contains_key(&key) && map.len() >= self.max_tracked {
            self.make_room(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_one(b))
        }
    }

    /// Give back a token taken by [`RateLimiter::take`] for something that turned out not to
    /// count (a reserved password attempt that was right).
    pub(crate) fn give_back(&self, ip: IpAddr) {
        if !self.enabled() {
            return;
        }
        let mut map = crate::sync::lock(&self.buckets);
        if let Some(b) = map.get_mut(&client_key(ip)) {
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }

    /// Whether `ip` has no token left (without taking one), and for how long.
    pub(crate) fn exhausted(&self, ip: IpAddr) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut map = crate::sync::lock(&self.buckets);
        let b = map.get_mut(&client_key(ip))?;
        self.refill(b, now);
        (b.tokens < 1.0).then(|| self.wait_for_one(b))
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        crate::sync::lock(&self.buckets).len()
    }

    fn make_room(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full_after = Duration::try_from_secs_f64(self.burst / self.rate)
            .unwrap_or(Duration::from_secs(u32::MAX.into()));
        map.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if map.len() >= self.max_tracked
            && let Some(oldest) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
    }
}

/// `Retry-After` in whole seconds, rounded up.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn burst_then_refill_per_address() {
        let l = RateLimiter::new(2.0, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at(A, t).is_ok());
        }
        let wait = l.take_at(A, t).unwrap_err();
        assert_eq!(retry_secs(wait), 1);
        assert!(l.take_at(B, t).is_ok(), "another address is not affected");
        assert!(l.take_at(A, t + Duration::from_millis(500)).is_ok());
        assert!(l.take_at(A, t + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(m), A);
    }

    #[test]
    fn table_is_bounded() {
        let l = RateLimiter::with_capacity(1.0, 1, 4);
        let t = Instant::now();
        for i in 0..100u8 {
            let _ = l.take_at(IpAddr::V4([10, 1, 0, i].into()), t);
            assert!(l.tracked() <= 4);
        }
    }

    #[test]
    fn zero_rate_disables() {
        let l = RateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(l.take(A).is_ok());
        }
        assert_eq!(l.exhausted(A), None);
    }
}
