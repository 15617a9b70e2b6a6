//! Token-bucket rate limits on introspection requests, per client (by peer IP) and overall.
//!
//! Checked before the gate, so a flood costs neither TokenReviews nor SubjectAccessReviews nor
//! worker calls. The limiter's own state is bounded: at most [`MAX_TRACKED_CLIENTS`] per-client
//! buckets; when a new client does not fit, buckets that have refilled to full (idle clients, which
//! a fresh bucket would equal) are dropped first, then the least recently seen one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-client buckets kept at most.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// Which bound refused a request (the `scope` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Client,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Global => "global",
        }
    }
}

/// A refusal: which bound, and how long until a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// Requests per second and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, now);
        probe.tokens >= rate.burst
    }
}

#[derive(Debug)]
struct State {
    clients: HashMap<IpAddr, Bucket>,
    global: Bucket,
}

/// The introspection limiter.
#[derive(Debug)]
pub struct RateLimiter {
    client_rate: Rate,
    global_rate: Rate,
    max_clients: usize,
    state: Mutex<State>,
}

impl RateLimiter {
    pub fn new(client_rate: Rate, global_rate: Rate) -> Self {
        Self::with_max_clients(client_rate, global_rate, MAX_TRACKED_CLIENTS)
    }

    pub fn with_max_clients(client_rate: Rate, global_rate: Rate, max_clients: usize) -> Self {
        let now = Instant::now();
        RateLimiter {
            client_rate,
            global_rate,
            max_clients: max_clients.max(1),
            state: Mutex::new(State {
                clients: HashMap::new(),
                global: Bucket::full(global_rate, now),
            }),
        }
    }

    /// Admits one request from `client` at `now`, or refuses it.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.clients.contains_key(&client) && state.clients.len() >= self.max_clients {
            self.make_room(&mut state.clients, now);
        }
        let bucket = state
            .clients
            .entry(client)
            .or_insert_with(|| Bucket::full(self.client_rate, now));
        bucket
            .take(self.client_rate, now)
            .map_err(|retry_after| Refusal {
                scope: Scope::Client,
                retry_after,
            })?;
        state
            .global
            .take(self.global_rate, now)
            .map_err(|retry_after| Refusal {
                scope: Scope::Global,
                retry_after,
            })
    }

    /// Per-client buckets held now (never above the cap).
    pub fn tracked_clients(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .len()
    }

    fn make_room(&self, clients: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let rate = self.client_rate;
        clients.retain(|_, bucket| !bucket.is_full(rate, now));
        if clients.len() >= self.max_clients {
            if let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(ip, _)| *ip)
            {
                clients.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_refill() {
        let limiter = RateLimiter::new(rate(2.0, 3.0), rate(1000.0, 1000.0));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip(1), start).is_ok());
        }
        let refusal = limiter.check(ip(1), start).unwrap_err();
        assert_eq!(refusal.scope, Scope::Client);
        assert_eq!(refusal.retry_after, Duration::from_millis(500));
        // Another client is not affected.
        assert!(limiter.check(ip(2), start).is_ok());
        // Half a second later one token is back.
        let later = start + Duration::from_millis(500);
        assert!(limiter.check(ip(1), later).is_ok());
        assert!(limiter.check(ip(1), later).is_err());
    }

    #[test]
    fn the_global_bound_covers_every_client() {
        let limiter = RateLimiter::new(rate(100.0, 100.0), rate(1.0, 2.0));
        let now = Instant::now();
        assert!(limiter.check(ip(1), now).is_ok());
        assert!(limiter.check(ip(2), now).is_ok());
        let refusal = limiter.check(ip(3), now).unwrap_err();
        assert_eq!(refusal.scope, Scope::Global);
        assert_eq!(refusal.retry_after, Duration::from_secs(1));
    }

    #[test]
    fn tracked_clients_stay_under_the_cap() {
        let limiter = RateLimiter::with_max_clients(rate(1.0, 5.0), rate(1e9, 1e9), 16);
        let now = Instant::now();
        for n in 0..1000 {
            assert!(limiter.check(ip(n), now).is_ok());
            assert!(limiter.tracked_clients() <= 16);
        }
        // Idle clients (buckets refilled to full) make room before a busy one is forgotten.
        let limiter = RateLimiter::with_max_clients(rate(0.01, 2.0), rate(1e9, 1e9), 2);
        assert!(limiter.check(ip(1), now).is_ok());
        let busy_at = now + Duration::from_secs(1);
        assert!(limiter.check(ip(2), busy_at).is_ok());
        assert!(limiter.check(ip(2), busy_at).is_ok());
        let later = now + Duration::from_secs(101);
        assert!(limiter.check(ip(3), later).is_ok());
        assert_eq!(limiter.tracked_clients(), 2);
        assert!(limiter.check(ip(2), later).is_ok(), "one token refilled");
        assert!(
            limiter.check(ip(2), later).is_err(),
            "ip 2's bucket was kept, not replaced by a full one"
        );
    }
}
