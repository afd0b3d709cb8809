//! 300 requests per minute per client address (the contract), as a token bucket per
//! address: a burst of 300 is allowed, then 5 per second. Over the limit: 429 with
//! `Retry-After`. The client address is the TCP peer, or — only when the peer is a
//! configured trusted proxy — the nearest untrusted address in `X-Forwarded-For`
//! (else `X-Real-IP`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use super::AppState;
use super::error::ApiError;
use crate::config::IpNet;

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    trusted: Vec<IpNet>,
    buckets: DashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32, trusted: Vec<IpNet>) -> Self {
        RateLimiter {
            per_minute,
            trusted,
            buckets: DashMap::new(),
        }
    }

    /// Take one token for `ip`; on refusal, the seconds until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let mut b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Forget addresses whose bucket has been full for a while (bounded memory).
    pub fn purge(&self, now: Instant) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(120));
    }

    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        let Some(peer) = peer else {
            return IpAddr::from([0, 0, 0, 0]);
        };
        let peer = peer.to_canonical();
        if !self.trusted.iter().any(|n| n.contains(peer)) {
            return peer;
        }
        // Walk X-Forwarded-For from the right: the first address that is not one of our
        // proxies is the client; anything further left could be forged by it.
        if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            for hop in xff.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) if self.trusted.iter().any(|n| n.contains(ip)) => continue,
                    Ok(ip) => return ip.to_canonical(),
                    Err(_) => return peer,
                }
            }
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .unwrap_or(peer)
    }
}

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = state.limiter.client_ip(peer, request.headers());
    match state.limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_then_refills() {
        let l = RateLimiter::new(300, vec![]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..300 {
            assert!(l.check(ip, t0).is_ok());
        }
        let retry = l.check(ip, t0).unwrap_err();
        assert!(retry >= 1);
        assert!(
            l.check("192.0.2.2".parse().unwrap(), t0).is_ok(),
            "per address"
        );
        assert!(
            l.check(ip, t0 + Duration::from_secs(1)).is_ok(),
            "5 per second refill"
        );
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let l = RateLimiter::new(300, vec![IpNet::parse("10.0.0.0/8").unwrap()]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.0.0.2".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            l.client_ip(Some(proxy), &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(
            l.client_ip(Some(stranger), &h),
            stranger,
            "spoofed header ignored"
        );
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", "198.51.100.8".parse().unwrap());
        assert_eq!(
            l.client_ip(Some(proxy), &h),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
    }
}
