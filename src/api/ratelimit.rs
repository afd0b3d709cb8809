//! 300 requests per minute per client address (the contract), as an exact sliding window:
//! a request is allowed when fewer than 300 were allowed from that address in the 60 s
//! before it, so no 60-second span ever holds more than 300 (a token bucket of 300 would
//! let 600 through in a minute: the burst plus its refill). Over the limit: 429 with
//! `Retry-After`, the seconds until the oldest request in the window expires. The client address is the TCP peer, or — only when the peer is a
//! configured trusted proxy — the nearest untrusted address in `X-Forwarded-For`
//! (else `X-Real-IP`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

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
    /// Times (ms since `epoch`) of the requests allowed in the last 60 s, oldest first.
    windows: DashMap<IpAddr, VecDeque<u64>>,
    epoch: Instant,
}

const WINDOW_MS: u64 = 60_000;

impl RateLimiter {
    pub fn new(per_minute: u32, trusted: Vec<IpNet>) -> Self {
        RateLimiter {
            per_minute,
            trusted,
            windows: DashMap::new(),
            epoch: Instant::now(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Count one request for `ip`; on refusal, the seconds until one is allowed again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = self.ms(now);
        let mut hits = self.windows.entry(ip).or_default();
        while hits.front().is_some_and(|&t| t + WINDOW_MS <= now) {
            hits.pop_front();
        }
        if hits.len() < self.per_minute as usize {
            hits.push_back(now);
            Ok(())
        } else {
            let oldest = hits.front().copied().unwrap_or(now);
            Err((oldest + WINDOW_MS - now).div_ceil(1000).max(1))
        }
    }

    /// Forget addresses with nothing in their window (bounded memory).
    pub fn purge(&self, now: Instant) {
        let now = self.ms(now);
        self.windows
            .retain(|_, hits| hits.back().is_some_and(|&t| t + WINDOW_MS > now));
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
    use std::time::Duration;

    #[test]
    fn at_most_300_in_any_60_seconds() {
        let l = RateLimiter::new(300, vec![]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..300 {
            assert!(l.check(ip, t0).is_ok());
        }
        assert_eq!(l.check(ip, t0), Err(60), "the window frees up in 60 s");
        assert!(
            l.check("192.0.2.2".parse().unwrap(), t0).is_ok(),
            "per address"
        );
        // A token bucket would refill 5/s here; a minute is a minute.
        assert_eq!(l.check(ip, t0 + Duration::from_secs(1)), Err(59));
        assert!(l.check(ip, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_steady_six_per_second_is_held_to_300_per_minute() {
        let l = RateLimiter::new(300, vec![]);
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        let t0 = Instant::now();
        // 6 requests/s for 3 minutes; record which were allowed.
        let allowed: Vec<u64> = (0..1080u64)
            .filter(|i| {
                l.check(ip, t0 + Duration::from_millis(i * 1000 / 6))
                    .is_ok()
            })
            .map(|i| i * 1000 / 6)
            .collect();
        for (k, &start) in allowed.iter().enumerate() {
            let in_window = allowed[k..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(
                in_window <= 300,
                "{in_window} allowed within 60 s of {start} ms"
            );
        }
        // …and it is not starved either: about 300 per minute get through.
        assert!(allowed.len() >= 890, "{}", allowed.len());
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let l = RateLimiter::new(300, vec![]);
        let t0 = Instant::now();
        l.check("192.0.2.4".parse().unwrap(), t0).unwrap();
        l.purge(t0 + Duration::from_secs(30));
        assert_eq!(l.windows.len(), 1);
        l.purge(t0 + Duration::from_secs(61));
        assert_eq!(l.windows.len(), 0);
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
