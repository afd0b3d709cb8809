//! The hot index: every open session, in memory, so that matching an Interim-Update or a
//! Stop to its row, counting sessions and listing active ones never reads the database.
//!
//! It is only changed after the database has committed the change (the writer applies a
//! committed batch), so it never shows a session the store does not have. At start it is
//! rebuilt from the open rows of `radacct`.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::key::SessionKey;
use super::model::Session;

#[derive(Debug, Default)]
pub struct Index {
    /// Open row per session key: at most one open row per key exists (DESIGN.md §3).
    by_key: DashMap<SessionKey, Arc<Session>>,
    /// `radacctid` → key, for the API's lookups by id.
    by_id: DashMap<i64, SessionKey>,
}

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

    /// Record the committed state of a row: open rows are (re)inserted, closed rows leave.
    pub fn apply(&self, session: &Session) {
        if session.is_open() {
            let previous = self.by_key.insert(session.key, Arc::new(session.clone()));
            if let Some(prev) = previous
                && prev.radacctid != session.radacctid
            {
                self.by_id.remove(&prev.radacctid);
            }
            self.by_id.insert(session.radacctid, session.key);
        } else {
            let removed = self
                .by_key
                .remove_if(&session.key, |_, open| open.radacctid == session.radacctid);
            if removed.is_some() {
                self.by_id.remove(&session.radacctid);
            }
        }
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

    /// Every open session (a snapshot; used by tests and the rebuild check).
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        self.by_key.iter().map(|e| Arc::clone(e.value())).collect()
    }

    pub fn clear(&self) {
        self.by_key.clear();
        self.by_id.clear();
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

    #[test]
    fn open_rows_enter_and_closed_rows_leave() {
        let index = Index::new();
        index.apply(&session(1, 7, None));
        assert_eq!(index.len(), 1);
        assert_eq!(index.get_by_id(1).unwrap().radacctid, 1);
        index.apply(&session(1, 7, Some(200)));
        assert!(index.is_empty());
        assert!(index.get_by_id(1).is_none());
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
    }
}
