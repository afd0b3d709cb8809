//! Duplicate detection (RFC 5080 §2.2.2): a retransmission has the same source address
//! and port, Identifier and Request Authenticator as the original. While the original is
//! waiting for its commit, the copy is dropped (the answer is on its way); once answered,
//! the copy gets the same answer again, and the record is not applied twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub source: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

#[derive(Debug, Clone)]
enum Slot {
    InFlight(Instant),
    Answered(Instant, Arc<[u8]>),
}

/// What to do with an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// First sight: process it.
    New,
    /// Same request still being committed: drop this copy.
    InFlight,
    /// Already committed and answered: send this answer again.
    Answered(Arc<[u8]>),
}

#[derive(Debug)]
pub struct Dedup {
    slots: DashMap<DedupKey, Slot>,
    /// How long an answer is kept for retransmissions. NASes retransmit for seconds, not
    /// minutes; MikroTik's default is a handful of tries 300 ms apart.
    window: Duration,
}

impl Dedup {
    pub fn new(window: Duration) -> Self {
        Dedup {
            slots: DashMap::new(),
            window,
        }
    }

    pub fn check(&self, key: DedupKey, now: Instant) -> Verdict {
        match self.slots.entry(key) {
            Entry::Occupied(mut e) => match e.get() {
                Slot::InFlight(_) => Verdict::InFlight,
                Slot::Answered(at, reply) if now.duration_since(*at) <= self.window => {
                    Verdict::Answered(Arc::clone(reply))
                }
                Slot::Answered(..) => {
                    e.insert(Slot::InFlight(now));
                    Verdict::New
                }
            },
            Entry::Vacant(e) => {
                e.insert(Slot::InFlight(now));
                Verdict::New
            }
        }
    }

    pub fn answered(&self, key: DedupKey, reply: Arc<[u8]>, now: Instant) {
        self.slots.insert(key, Slot::Answered(now, reply));
    }

    /// The request was not accepted (queue full, store refused it): let a retransmission
    /// be processed as new.
    pub fn forget(&self, key: &DedupKey) {
        self.slots.remove(key);
    }

    /// Drop expired answers. In-flight entries are kept while they are young: a request
    /// can wait for the store for as long as the store is down.
    pub fn purge(&self, now: Instant) {
        let window = self.window;
        self.slots.retain(|_, slot| match slot {
            Slot::Answered(at, _) => now.duration_since(*at) <= window,
            Slot::InFlight(at) => now.duration_since(*at) <= window * 20,
        });
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> DedupKey {
        DedupKey {
            source: "10.0.0.1:40000".parse().unwrap(),
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn retransmission_in_flight_is_dropped_then_answered_again() {
        let d = Dedup::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(d.check(key(1), t0), Verdict::New);
        assert_eq!(d.check(key(1), t0), Verdict::InFlight);
        let reply: Arc<[u8]> = Arc::from(&b"reply"[..]);
        d.answered(key(1), reply.clone(), t0);
        assert_eq!(d.check(key(1), t0), Verdict::Answered(reply));
        assert_eq!(d.check(key(2), t0), Verdict::New);
    }

    #[test]
    fn answers_expire_after_the_window() {
        let d = Dedup::new(Duration::from_secs(30));
        let t0 = Instant::now();
        d.check(key(1), t0);
        d.answered(key(1), Arc::from(&b"r"[..]), t0);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(d.check(key(1), later), Verdict::New);
        d.answered(key(1), Arc::from(&b"r"[..]), t0);
        d.purge(later);
        assert!(d.is_empty());
    }

    #[test]
    fn forgotten_request_is_new_again() {
        let d = Dedup::new(Duration::from_secs(30));
        let t0 = Instant::now();
        d.check(key(1), t0);
        d.forget(&key(1));
        assert_eq!(d.check(key(1), t0), Verdict::New);
    }
}
