//! The hot index: every open session, in memory, so that matching an Interim-Update or a
//! Stop to its row, counting sessions and listing active ones never reads the database.
//!
//! It is only changed after the database has committed the change (the writer applies a
//! committed batch), so it never shows a session the store does not have. At start it is
//! rebuilt from the open rows of `radacct`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::key::SessionKey;
use super::model::{Session, Timestamp};

/// Position of an open session in start-time order; `radacctid` breaks ties, as in the
/// API's sort.
type StartKey = (Timestamp, i64);

#[derive(Debug, Default)]
pub struct Index {
    /// Open row per session key: at most one open row per key exists (DESIGN.md §3).
    by_key: DashMap<SessionKey, Arc<Session>>,
    /// `radacctid` → key, for the API's lookups by id.
    by_id: DashMap<i64, SessionKey>,
    /// The same sessions ordered by start time, so that the API's default listing (newest
    /// first, one page) reads a page instead of sorting every open session per request.
    /// Changes take its write lock for their whole update of all three maps, which keeps
    /// the maps in step; scans of `by_key` do not take it, so a long filtered count never
    /// holds up the writer.
    by_start: RwLock<BTreeMap<StartKey, Arc<Session>>>,
}

/// Sessions visited per hold of the read lock in [`Index::walk_by_start`]: long enough to
/// make the lock cheap, short enough that the writer never waits for a whole scan.
const WALK_CHUNK: usize = 4096;

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, key: &SessionKey) -> Option<Arc<Session>> {
        self.by_key.get(key).map(|e| Arc::clone(e.value()))
    }

    pub fn get_by_id(&self, radacctid: i64) -> Option<Arc<Session>> {
        let key = *self.by_id.get(&radacctid)?.value();
        self.get(&key).filter(|s| s.radacctid == radacctid)
    }

    /// A poisoned lock only means a panic elsewhere mid-update of a plain map; the map
    /// itself is still valid, so keep serving rather than fail every later call.
    fn order(&self) -> RwLockReadGuard<'_, BTreeMap<StartKey, Arc<Session>>> {
        self.by_start.read().unwrap_or_else(|e| e.into_inner())
    }

    fn order_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<StartKey, Arc<Session>>> {
        self.by_start.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the committed state of a row: open rows are (re)inserted, closed rows leave.
    pub fn apply(&self, session: &Session) {
        let mut order = self.order_mut();
        if session.is_open() {
            let new = Arc::new(session.clone());
            let previous = self.by_key.insert(session.key, Arc::clone(&new));
            if let Some(prev) = previous {
                order.remove(&(prev.start, prev.radacctid));
                if prev.radacctid != session.radacctid {
                    self.by_id.remove(&prev.radacctid);
                }
            }
            self.by_id.insert(session.radacctid, session.key);
            order.insert((session.start, session.radacctid), new);
        } else {
            let removed = self
                .by_key
                .remove_if(&session.key, |_, open| open.radacctid == session.radacctid);
            if let Some((_, prev)) = removed {
                self.by_id.remove(&session.radacctid);
                order.remove(&(prev.start, prev.radacctid));
            }
        }
    }

    /// Take an open row read from the database at start-up, without copying it. Two open
    /// rows of one key can exist in a database FreeRADIUS also wrote to; the newest one
    /// (latest start, then highest id) is the live session and the other is not indexed.
    /// Returns whether `session` was taken.
    pub fn load(&self, session: Session) -> bool {
        if !session.is_open() {
            return false;
        }
        let mut order = self.order_mut();
        let at = (session.start, session.radacctid);
        let session = Arc::new(session);
        match self.by_key.entry(session.key) {
            Entry::Occupied(e) if (e.get().start, e.get().radacctid) >= at => return false,
            Entry::Occupied(mut e) => {
                let prev = e.insert(Arc::clone(&session));
                self.by_id.remove(&prev.radacctid);
                order.remove(&(prev.start, prev.radacctid));
            }
            Entry::Vacant(e) => {
                e.insert(Arc::clone(&session));
            }
        }
        self.by_id.insert(session.radacctid, session.key);
        order.insert(at, session);
        true
    }

    /// Open sessions of one NAS (by NAS IP), for Accounting-On/Off. A full scan: those
    /// packets are rare and the scan does not block writers for long (DashMap shards).
    pub fn open_for_nas(&self, nas_ip: IpAddr) -> Vec<Arc<Session>> {
        self.by_key
            .iter()
            .filter(|e| e.value().fields.nasipaddress == Some(nas_ip))
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// How many open sessions satisfy `pred`, without copying any.
    pub fn count_where(&self, pred: impl Fn(&Session) -> bool) -> usize {
        self.by_key.iter().filter(|e| pred(e.value())).count()
    }

    /// The open sessions that satisfy `pred`.
    pub fn collect_where(&self, pred: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        self.by_key
            .iter()
            .filter(|e| pred(e.value()))
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// One page of all open sessions in start-time order (then `radacctid`), and how many
    /// there are: O(offset + limit), under one short hold of the read lock.
    pub fn page_by_start(
        &self,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> (Vec<Arc<Session>>, usize) {
        let order = self.order();
        let pick = |it: &mut dyn Iterator<Item = &Arc<Session>>| -> Vec<Arc<Session>> {
            it.skip(offset).take(limit).map(Arc::clone).collect()
        };
        let page = if descending {
            pick(&mut order.values().rev())
        } else {
            pick(&mut order.values())
        };
        (page, order.len())
    }

    /// Visit open sessions in start-time order (then `radacctid`; newest first when
    /// `descending`) until `visit` breaks. The read lock is taken per chunk of
    /// [`WALK_CHUNK`] sessions, so a full walk is not one consistent snapshot: a session
    /// changed meanwhile is seen in its old or its new state.
    pub fn walk_by_start(
        &self,
        descending: bool,
        mut visit: impl FnMut(&Arc<Session>) -> ControlFlow<()>,
    ) {
        let mut after: Option<StartKey> = None;
        loop {
            let order = self.order();
            let range = match (descending, after) {
                (_, None) => order.range::<StartKey, _>(..),
                (false, Some(k)) => order.range((Bound::Excluded(k), Bound::Unbounded)),
                (true, Some(k)) => order.range(..k),
            };
            let mut seen = 0;
            let mut step = |(k, s): (&StartKey, &Arc<Session>)| {
                seen += 1;
                after = Some(*k);
                match visit(s) {
                    ControlFlow::Break(()) => ControlFlow::Break(true),
                    ControlFlow::Continue(()) if seen == WALK_CHUNK => ControlFlow::Break(false),
                    ControlFlow::Continue(()) => ControlFlow::Continue(()),
                }
            };
            let stopped = if descending {
                range.rev().try_for_each(&mut step)
            } else {
                range.into_iter().try_for_each(&mut step)
            };
            match stopped {
                ControlFlow::Break(false) => continue,
                _ => return,
            }
        }
    }

    /// The `radacctid` of every open session, without touching the sessions themselves
    /// (the sweeper's reconciliation; no reference count is taken per session).
    pub fn ids(&self) -> Vec<i64> {
        self.by_id.iter().map(|e| *e.key()).collect()
    }

    /// Every open session (a snapshot; used by tests and the rebuild check).
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        self.by_key.iter().map(|e| Arc::clone(e.value())).collect()
    }

    pub fn clear(&self) {
        let mut order = self.order_mut();
        self.by_key.clear();
        self.by_id.clear();
        order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::model::Fields;

    fn session(id: i64, key: u8, stop: Option<i64>) -> Session {
        Session {
            radacctid: id,
            acctuniqueid: format!("u{id}").into(),
            key: SessionKey([key; 16]),
            nas_id: None,
            fields: Fields::default(),
            start: 100,
            update: 100,
            stop,
            interval: None,
            session_time: 0,
            input_octets: 0,
            output_octets: 0,
            terminate_cause: None,
            connectinfo_stop: None,
            stop_source: None,
        }
    }

    fn ids(sessions: &[Arc<Session>]) -> Vec<i64> {
        sessions.iter().map(|s| s.radacctid).collect()
    }

    fn in_order(index: &Index, descending: bool) -> Vec<i64> {
        let mut out = Vec::new();
        index.walk_by_start(descending, |s| {
            out.push(s.radacctid);
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn open_rows_enter_and_closed_rows_leave() {
        let index = Index::new();
        index.apply(&session(1, 7, None));
        assert_eq!(index.len(), 1);
        assert_eq!(index.get_by_id(1).unwrap().radacctid, 1);
        assert_eq!(in_order(&index, true), [1]);
        index.apply(&session(1, 7, Some(200)));
        assert!(index.is_empty());
        assert!(index.get_by_id(1).is_none());
        assert!(in_order(&index, true).is_empty());
    }

    #[test]
    fn closing_an_older_row_keeps_the_newer_open_one() {
        let index = Index::new();
        index.apply(&session(1, 7, None));
        index.apply(&session(2, 7, None)); // new session of the same key replaced it
        index.apply(&session(1, 7, Some(200))); // late close of the old row
        assert_eq!(index.get(&SessionKey([7; 16])).unwrap().radacctid, 2);
        assert!(index.get_by_id(1).is_none());
        assert!(index.get_by_id(2).is_some());
        assert_eq!(in_order(&index, false), [2]);
        assert_eq!(index.ids(), [2], "ids() lists the open row only");
    }

    #[test]
    fn start_order_follows_updates_and_ties_break_by_id() {
        let index = Index::new();
        for (id, key, start) in [(1, 1, 300), (2, 2, 100), (3, 3, 200), (4, 4, 200)] {
            index.apply(&Session {
                start,
                ..session(id, key, None)
            });
        }
        assert_eq!(in_order(&index, false), [2, 3, 4, 1]);
        assert_eq!(in_order(&index, true), [1, 4, 3, 2]);
        // An update replaces the entry (same place), a new start time moves it.
        index.apply(&Session {
            start: 50,
            session_time: 60,
            ..session(1, 1, None)
        });
        assert_eq!(in_order(&index, false), [1, 2, 3, 4]);
        assert_eq!(index.get_by_id(1).unwrap().session_time, 60);
        let (page, total) = index.page_by_start(true, 1, 2);
        assert_eq!((ids(&page), total), (vec![3, 2], 4));
        let (page, total) = index.page_by_start(false, 3, 50);
        assert_eq!((ids(&page), total), (vec![4], 4));
        assert!(index.page_by_start(false, 9, 50).0.is_empty());
    }

    #[test]
    fn a_walk_crosses_chunks_without_repeating_or_skipping() {
        let index = Index::new();
        let n = WALK_CHUNK * 2 + 17;
        for i in 0..n {
            let mut s = session(i as i64 + 1, 0, None);
            s.key = SessionKey((i as u128).to_le_bytes());
            s.start = (i / 3) as i64; // ties, so the id tie-break is crossed too
            index.apply(&s);
        }
        let up = in_order(&index, false);
        assert_eq!(up, (1..=n as i64).collect::<Vec<_>>());
        let mut down = in_order(&index, true);
        down.reverse();
        assert_eq!(down, up);
        let mut first = Vec::new();
        index.walk_by_start(true, |s| {
            first.push(s.radacctid);
            if first.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(first, [n as i64, n as i64 - 1, n as i64 - 2]);
    }

    #[test]
    fn load_keeps_the_newest_open_row_of_a_key() {
        let index = Index::new();
        assert!(index.load(Session {
            start: 200,
            ..session(5, 7, None)
        }));
        // Older start: not the live session, whatever its id.
        assert!(!index.load(Session {
            start: 100,
            ..session(9, 7, None)
        }));
        // Same start, higher id: newer.
        assert!(index.load(Session {
            start: 200,
            ..session(6, 7, None)
        }));
        assert!(
            !index.load(session(8, 8, Some(300))),
            "closed rows are not indexed"
        );
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(&SessionKey([7; 16])).unwrap().radacctid, 6);
        assert!(index.get_by_id(5).is_none() && index.get_by_id(9).is_none());
        assert_eq!(in_order(&index, false), [6]);
    }
}
