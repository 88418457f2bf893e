//! Per-client rate limits of the public API: a token bucket per client IP address, in a table
//! with a bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use firewall::clock::now_ns;
use firewall_common::bucket::{BURST_MAX, TokenBucket, UNIT};

use super::{Api, ApiError};

/// Client addresses tracked at once. When the table is full, idle clients (full buckets) are
/// forgotten; if none is idle, a new client is refused until one is.
pub const MAX_CLIENTS: usize = 4096;

/// Token buckets by client address.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: u64,
    burst: u64,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// Requests refused (answered 429) since start.
    refused: AtomicU64,
}

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within budget.
    Admit,
    /// Over this client's budget.
    OverBudget,
    /// The client table is full of active clients.
    TableFull,
}

impl RateLimiter {
    /// A limiter allowing `rate_per_sec` requests per second and bursts of `burst` per client.
    pub fn new(rate_per_sec: u32, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter {
            rate_per_sec: u64::from(rate_per_sec),
            burst: u64::from(burst),
            max_clients,
            buckets: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one request from `client`'s budget at `now_ns`; counts it if refused.
    pub fn admit(&self, client: IpAddr, now_ns: u64) -> Admission {
        let admission = self.decide(client, now_ns);
        if admission != Admission::Admit {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        admission
    }

    /// Requests refused since start, over budget or with the client table full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn decide(&self, client: IpAddr, now_ns: u64) -> Admission {
        let client = client_key(client);
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !buckets.contains_key(&client) && buckets.len() >= self.max_clients {
            let (rate, burst) = (self.rate_per_sec, self.burst);
            // A bucket that would be full again holds no state worth keeping.
            let capacity = burst.clamp(1, BURST_MAX) * UNIT;
            buckets.retain(|_, bucket| {
                let mut probe = *bucket;
                // Refilled, and full before this one token was taken.
                !(probe.take(now_ns, rate, burst) && probe.tokens + UNIT >= capacity)
            });
            if buckets.len() >= self.max_clients {
                return Admission::TableFull;
            }
        }
        let bucket = buckets
            .entry(client)
            .or_insert_with(|| TokenBucket::full(now_ns, self.burst));
        if bucket.take(now_ns, self.rate_per_sec, self.burst) {
            Admission::Admit
        } else {
            Admission::OverBudget
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// The key of a client's budget: its IPv4 address, or the /64 of its IPv6 address (one host
/// commonly holds a whole /64, and must not get a budget per address in it).
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Middleware: refuses a request over its client's budget with 429 `rate_limited`.
pub async fn rate_limit(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match api.limiter.admit(peer.ip(), now_ns()) {
        Admission::Admit => next.run(request).await,
        Admission::OverBudget => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!(
                "more than {} requests per second (burst {}) from one address",
                api.config.rate_per_sec, api.config.burst
            ),
            retry_after: Some(1),
            reason: None,
        }
        .into_response(),
        Admission::TableFull => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many clients at once; try again shortly".into(),
            retry_after: Some(1),
            reason: None,
        }
        .into_response(),
    }
}

/// Builds the limiter of an API configuration.
pub fn limiter(config: &crate::config::ApiConfig) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(
        config.rate_per_sec,
        config.burst,
        MAX_CLIENTS,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 5, 16);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.admit(a, SEC), Admission::Admit);
        }
        assert_eq!(limiter.admit(a, SEC), Admission::OverBudget);
        // 100 ms later, one more token.
        assert_eq!(limiter.admit(a, SEC + SEC / 10), Admission::Admit);
        assert_eq!(limiter.admit(a, SEC + SEC / 10), Admission::OverBudget);
    }

    #[test]
    fn refusals_are_counted_and_admissions_are_not() {
        let limiter = RateLimiter::new(1, 2, 1);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        assert_eq!(limiter.admit(ip(1), SEC), Admission::Admit);
        assert_eq!(limiter.admit(ip(1), SEC), Admission::Admit);
        assert_eq!(limiter.refused(), 0);
        assert_eq!(limiter.admit(ip(1), SEC), Admission::OverBudget);
        assert_eq!(limiter.admit(ip(2), SEC), Admission::TableFull);
        assert_eq!(limiter.refused(), 2);
    }

    #[test]
    fn clients_have_separate_budgets() {
        let limiter = RateLimiter::new(1, 1, 16);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert_eq!(limiter.admit(a, SEC), Admission::Admit);
        assert_eq!(limiter.admit(a, SEC), Admission::OverBudget);
        assert_eq!(limiter.admit(b, SEC), Admission::Admit);
    }

    #[test]
    fn an_ipv6_client_has_one_budget_for_its_whole_64() {
        let limiter = RateLimiter::new(1, 1, 16);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter.admit(a, SEC), Admission::Admit);
        assert_eq!(limiter.admit(b, SEC), Admission::OverBudget);
        assert_eq!(limiter.admit(other, SEC), Admission::Admit);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_clients_first() {
        let limiter = RateLimiter::new(1, 2, 2);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        assert_eq!(limiter.admit(ip(1), SEC), Admission::Admit);
        assert_eq!(limiter.admit(ip(2), SEC), Admission::Admit);
        // Both are mid-budget: a third client is refused, not given someone's slot.
        assert_eq!(limiter.admit(ip(3), SEC), Admission::TableFull);
        assert_eq!(limiter.clients(), 2);
        // Ten seconds on, both buckets are full again: they are forgotten to make room.
        assert_eq!(limiter.admit(ip(3), 11 * SEC), Admission::Admit);
        assert!(limiter.clients() <= 2);
    }
}
