//! The accounting engine: turns a batch of [`Record`]s into the rows they create or
//! change (DESIGN.md §3), commits them in one transaction, and only then updates the
//! index.
//!
//! Rules, per packet, after finding the row of its session — same key, and an implied
//! start (event time − Acct-Session-Time) within the tolerance of the row's start:
//! - Start: opens a row; for an existing row it changes nothing.
//! - Interim-Update: updates times and counters; without a row, opens one.
//! - Stop: closes the row; without a row, inserts a closed one.
//! - Counters and session time only move forward (`max`), so a late packet never rewinds
//!   them and a Stop without counters keeps the last ones.
//! - A row the NAS closed is never changed again. A row the server closed (Lost-Service,
//!   NAS-Reboot, Admin-Reset, NAS-Idle-Timeout) is completed by the NAS's Stop — stop time,
//!   session time, counters — and stays closed; the server's terminate cause is kept.
//! - A packet of a newer session on a key whose open row is an older session first closes
//!   that row as Lost-Service, at its last update time (the last moment it was known alive).
//!   A packet of an older session than the open one is stored as a closed row and leaves
//!   the open one alone, so at most one row per key is open.
//! - Accounting-On/Off closes every open session of that NAS started before the event, as
//!   NAS-Reboot at the event time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;

use super::index::Index;
use super::key::{SessionKey, derived_uniqueid};
use super::model::{Event, Record, Session, StatusType, StopSource, Timestamp};
use super::store::{Batch, Store, StoreError};

/// What a committed batch did to one row, for the live stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Started,
    Updated,
    Stopped,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Started => "started",
            ChangeKind::Updated => "updated",
            ChangeKind::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub session: Session,
}

pub const CAUSE_LOST_SERVICE: &str = "Lost-Service";
pub const CAUSE_NAS_REBOOT: &str = "NAS-Reboot";
pub const CAUSE_ADMIN_RESET: &str = "Admin-Reset";
pub const CAUSE_IDLE_TIMEOUT: &str = "NAS-Idle-Timeout";

#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    index: Arc<Index>,
    /// How far apart two implied start times may be and still name the same session.
    tolerance_secs: i64,
}

impl Engine {
    pub fn new(store: Store, index: Arc<Index>, tolerance_secs: i64) -> Self {
        Engine {
            store,
            index,
            tolerance_secs,
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Apply `records` in order as one transaction. On success the index reflects the
    /// commit and the changed rows are returned (with their ids); on error nothing was
    /// written and the index is unchanged, so the same records can be retried.
    pub async fn process(&self, records: &[Record]) -> Result<Vec<Change>, StoreError> {
        let keys = self.keys_to_prefetch(records);
        let mut work = Work {
            prefetched: self.store.rows_for_keys(&keys).await?,
            prefetched_keys: keys.into_iter().collect(),
            ..Work::default()
        };
        for record in records {
            self.apply(&mut work, record).await?;
        }
        let (batch, was_open) = work.into_batch();
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (mut batch, ids) = self.store.commit(batch).await?;
        let mut changes = Vec::with_capacity(batch.rows.len());
        for ((mut row, id), was_open) in batch.rows.drain(..).zip(ids).zip(was_open) {
            let kind = match (row.radacctid == 0, was_open, row.is_open()) {
                (true, _, true) => ChangeKind::Started,
                (_, true, false) | (true, _, false) => ChangeKind::Stopped,
                _ => ChangeKind::Updated,
            };
            row.radacctid = id;
            self.index.apply(&row);
            changes.push(Change { kind, session: row });
        }
        Ok(changes)
    }

    /// Read, in one query, every row of the keys whose packets the index cannot place:
    /// new sessions, and packets that do not belong to the key's open row.
    fn keys_to_prefetch(&self, records: &[Record]) -> Vec<SessionKey> {
        let mut keys: Vec<SessionKey> = records
            .iter()
            .filter(|r| {
                !matches!(
                    r.status,
                    StatusType::AccountingOn | StatusType::AccountingOff
                )
            })
            .filter(|r| match self.index.get(&r.key) {
                Some(open) => !self.belongs_to_open(&open, r),
                None => true,
            })
            .map(|r| r.key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether `r` is a packet of the open row `open` (the `find_match` rule for one row).
    fn belongs_to_open(&self, open: &Session, r: &Record) -> bool {
        if r.session_time.is_some() || r.status == StatusType::Start {
            (open.start - r.implied_start()).abs() <= self.tolerance_secs
        } else {
            open.is_open()
        }
    }

    /// Rebuild the index from the open rows of `radacct`; returns how many were loaded.
    /// Rows go from the query's stream straight into the index (no list of rows, no copy),
    /// which keeps the newest open row of a key when there are several (`Index::load`).
    /// On error the index is left empty.
    pub async fn rebuild_index(&self) -> Result<usize, StoreError> {
        self.index.clear();
        let mut rows = self.store.open_sessions();
        while let Some(row) = rows.next().await {
            match row {
                Ok(session) => {
                    self.index.load(session);
                }
                Err(e) => {
                    drop(rows);
                    self.index.clear();
                    return Err(e);
                }
            }
        }
        Ok(self.index.len())
    }

    async fn apply(&self, work: &mut Work, r: &Record) -> Result<(), StoreError> {
        match r.status {
            StatusType::AccountingOn | StatusType::AccountingOff => {
                self.nas_reboot(work, r).await?;
                Ok(())
            }
            StatusType::AdminReset | StatusType::IdleTimeout => self.server_close(work, r).await,
            StatusType::Start | StatusType::InterimUpdate | StatusType::Stop => {
                self.apply_session(work, r).await
            }
        }
    }

    async fn apply_session(&self, work: &mut Work, r: &Record) -> Result<(), StoreError> {
        let implied = r.implied_start();
        self.load(work, r).await?;
        let rows = work
            .by_key
            .get(&r.key)
            .map(|k| k.rows.clone())
            .unwrap_or_default();

        let matching = self.find_match(work, &rows, r);
        if let Some(i) = matching {
            self.update_row(work, i, r);
            return Ok(());
        }

        let open = rows.iter().copied().find(|&i| work.rows[i].is_open());
        let older_than_open = match open {
            Some(o) if implied > work.rows[o].start => {
                close_lost_service(work, o);
                false
            }
            Some(_) => true,
            None => false,
        };
        let taken: HashSet<Box<str>> = rows
            .iter()
            .map(|&i| work.rows[i].acctuniqueid.clone())
            .collect();
        let acctuniqueid = if taken.is_empty() {
            r.key.to_hex()
        } else {
            (0u32..)
                .map(|n| derived_uniqueid(&r.key, implied, n))
                .find(|id| !taken.contains(id.as_str()))
                .unwrap_or_default()
        };
        let row = new_row(r, acctuniqueid.into_boxed_str(), older_than_open);
        let kind = r.status.name();
        let event = event_of(&row, kind, r.event_time, StopSource::Nas);
        let username = row.fields.username.clone();
        let i = work.push(row, true);
        work.by_key.entry(r.key).or_default().rows.push(i);
        work.events.push((i, event));
        if older_than_open && r.status != StatusType::Stop {
            let close = event_of(&work.rows[i], "Stop", r.event_time, StopSource::Server);
            work.events.push((i, close));
        }
        work.usernames.insert(username);
        Ok(())
    }

    /// Make sure `work` knows every row of the record's key that could be its session: the
    /// open row from the index when it matches (the common case, no database read),
    /// otherwise all rows of the key from the database.
    async fn load(&self, work: &mut Work, r: &Record) -> Result<(), StoreError> {
        let key = r.key;
        if !work.by_key.contains_key(&key) {
            match self.index.get(&key) {
                Some(open) => {
                    let i = work.push((*open).clone(), false);
                    work.by_key.insert(
                        key,
                        KeyRows {
                            rows: vec![i],
                            complete: false,
                        },
                    );
                }
                None => {
                    let rows = match work.prefetched.remove(&key) {
                        Some(rows) => rows,
                        None if work.fetched(&key) => Vec::new(),
                        None => self.store.rows_for_key(&key).await?,
                    };
                    let idx: Vec<usize> = rows.into_iter().map(|s| work.push(s, false)).collect();
                    work.by_key.insert(
                        key,
                        KeyRows {
                            rows: idx,
                            complete: true,
                        },
                    );
                    return Ok(());
                }
            }
        }
        let Some(known) = work.by_key.get(&key) else {
            return Ok(());
        };
        if known.complete || self.find_match(work, &known.rows, r).is_some() {
            return Ok(());
        }
        self.complete(work, key).await
    }

    /// Add every database row of `key` that `work` does not know yet.
    async fn complete(&self, work: &mut Work, key: SessionKey) -> Result<(), StoreError> {
        if work.by_key.get(&key).is_some_and(|k| k.complete) {
            return Ok(());
        }
        let db_rows = match work.prefetched.remove(&key) {
            Some(rows) => rows,
            None if work.fetched(&key) => Vec::new(),
            None => self.store.rows_for_key(&key).await?,
        };
        let mut add = Vec::new();
        for s in db_rows {
            let seen = work.by_key.get(&key).is_some_and(|k| {
                k.rows
                    .iter()
                    .any(|&i| work.rows[i].acctuniqueid == s.acctuniqueid)
            });
            if !seen {
                add.push(work.push(s, false));
            }
        }
        if let Some(k) = work.by_key.get_mut(&key) {
            k.rows.extend(add);
            k.complete = true;
        }
        Ok(())
    }

    /// The row of this packet's session among `rows` of its key. With Acct-Session-Time
    /// (or for a Start, whose session time is 0) the implied start must lie within the
    /// tolerance of the row's start. An Interim or Stop without Acct-Session-Time implies
    /// nothing, so it belongs to the open row, else to the newest row started before it.
    ///
    /// A closed row is not this packet's session when the packet's session began after the
    /// row's stop: a session cannot start after it ended. That is a new session of the same
    /// key (a short session, then a NAS reboot reusing the Acct-Session-Id, within the
    /// tolerance), and it gets its own row instead of being acknowledged into the closed
    /// one and lost. A Start's time is only this certain when it is the NAS's own
    /// Event-Timestamp: without one, arrival time stands in, and a Start the NAS
    /// retransmitted late (after its Stop) would look like a new session; such a Start is
    /// left to the closed row, and the new session's first Interim or Stop opens its row.
    fn find_match(&self, work: &Work, rows: &[usize], r: &Record) -> Option<usize> {
        if r.session_time.is_some() || r.status == StatusType::Start {
            let implied = r.implied_start();
            let certain = r.status != StatusType::Start || r.timestamped;
            return rows
                .iter()
                .copied()
                .filter(|&i| (work.rows[i].start - implied).abs() <= self.tolerance_secs)
                .filter(|&i| !(certain && work.rows[i].stop.is_some_and(|stop| implied > stop)))
                .min_by_key(|&i| (work.rows[i].start - implied).abs());
        }
        rows.iter()
            .copied()
            .find(|&i| work.rows[i].is_open())
            .or_else(|| {
                rows.iter()
                    .copied()
                    .filter(|&i| work.rows[i].start <= r.event_time)
                    .max_by_key(|&i| work.rows[i].start)
            })
    }

    fn update_row(&self, work: &mut Work, i: usize, r: &Record) {
        let row = &mut work.rows[i];
        let was_open = row.is_open();
        // Whether this packet changes only the row's progress (times and counters).
        let mut progress = true;
        let event = match (r.status, row.stop_source) {
            // The Start of a session an Interim-Update opened (the Start came late): it
            // brings the attributes only a Start has (Connect-Info) and is kept in the
            // history. A Start repeated by the NAS brings nothing new and changes nothing.
            (StatusType::Start, None) => {
                let filled = row.fields.fill_missing_from(&r.fields);
                progress = !filled;
                filled.then_some("Start")
            }
            (StatusType::Start, _) => None,
            (StatusType::InterimUpdate, None) => {
                progress = !row.fields.fill_missing_from(&r.fields);
                // A late, older Interim-Update rewinds nothing but is still one of the
                // session's data points for the history; only an exact repeat (same time,
                // nothing new) is not.
                let older = r.event_time < row.update;
                let changed = advance(row, r);
                if r.event_time > row.update {
                    row.interval = Some(r.event_time - row.update);
                    row.update = r.event_time;
                }
                (changed || older).then_some("Interim-Update")
            }
            (StatusType::Stop, None) => {
                progress = false;
                row.fields.fill_missing_from(&r.fields);
                advance(row, r);
                row.stop = Some(r.event_time.max(row.start));
                row.update = row.update.max(r.event_time);
                row.terminate_cause.clone_from(&r.terminate_cause);
                row.connectinfo_stop.clone_from(&r.connectinfo);
                row.stop_source = Some(StopSource::Nas);
                Some("Stop")
            }
            // The server closed it; the NAS's own Stop completes the row.
            // Its session time and stop time are the NAS's, even when smaller than what
            // radacctd estimated at its close (clock offset, rounding): the NAS measured
            // the session. Octet counters still never go backwards.
            (StatusType::Stop, Some(StopSource::Server)) => {
                progress = false;
                advance(row, r);
                if let Some(t) = r.session_time {
                    row.session_time = t;
                }
                let stop = r.event_time.max(row.start);
                row.stop = Some(stop);
                row.update = stop;
                if r.connectinfo.is_some() {
                    row.connectinfo_stop.clone_from(&r.connectinfo);
                }
                row.stop_source = Some(StopSource::Nas);
                Some("Stop")
            }
            // Late interim of a session the server closed: keep the counters (billing),
            // leave the row closed.
            (StatusType::InterimUpdate, Some(StopSource::Server)) => {
                let changed = advance(row, r);
                row.update = row.update.max(r.event_time);
                changed.then_some("Interim-Update")
            }
            // Closed by the NAS: final.
            (_, Some(StopSource::Nas)) => None,
            // Handled elsewhere (nas_reboot, server_close); never routed here.
            (
                StatusType::AccountingOn
                | StatusType::AccountingOff
                | StatusType::AdminReset
                | StatusType::IdleTimeout,
                _,
            ) => None,
        };
        if let Some(kind) = event {
            let ev = event_of(&work.rows[i], kind, r.event_time, StopSource::Nas);
            // Record the packet's own values, not the max-ed row values, so the history
            // shows what the NAS said.
            let ev = if kind == "Start" {
                Event {
                    session_time: 0,
                    input_octets: 0,
                    output_octets: 0,
                    ..ev
                }
            } else {
                Event {
                    session_time: r.session_time.unwrap_or(ev.session_time),
                    input_octets: r.input_octets.unwrap_or(ev.input_octets),
                    output_octets: r.output_octets.unwrap_or(ev.output_octets),
                    ..ev
                }
            };
            work.touch(i, progress);
            work.events.push((i, ev));
            if was_open != work.rows[i].is_open() {
                let u = work.rows[i].fields.username.clone();
                work.usernames.insert(u);
            }
        }
    }

    /// A close the server makes itself, for the row `r.target` only and only while it is
    /// still open: if the NAS's own Stop or a new session got there first, there is nothing
    /// to do.
    /// - Admin-Reset (a confirmed disconnect): stop at `r.event_time`.
    /// - NAS-Idle-Timeout (the stale-session sweeper): stop at the row's last update, and
    ///   only if that is still before `r.event_time` (the sweeper's cutoff) — an
    ///   Interim-Update that arrived after the sweeper looked keeps the session open.
    async fn server_close(&self, work: &mut Work, r: &Record) -> Result<(), StoreError> {
        let Some(target) = r.target else {
            return Ok(());
        };
        self.load(work, r).await?;
        let has_target = |work: &Work| {
            work.by_key
                .get(&r.key)
                .is_some_and(|k| k.rows.iter().any(|&i| work.rows[i].radacctid == target))
        };
        if !has_target(work) {
            self.complete(work, r.key).await?;
        }
        if !has_target(work) {
            // A row another writer inserted with an acctuniqueid that is not 32 hex digits
            // (and no sessionkey) cannot be found by key: read it by its id, so the
            // sweeper can still close it instead of selecting it again every sweep.
            if let Some(s) = self.store.session_by_id(target).await?
                && s.key == r.key
            {
                let i = work.push(s, false);
                work.by_key
                    .entry(r.key)
                    .or_insert_with(|| KeyRows {
                        rows: Vec::new(),
                        complete: false,
                    })
                    .rows
                    .push(i);
            }
        }
        let rows = work
            .by_key
            .get(&r.key)
            .map(|k| k.rows.clone())
            .unwrap_or_default();
        let Some(i) = rows
            .into_iter()
            .find(|&i| work.rows[i].radacctid == target && work.rows[i].is_open())
        else {
            return Ok(());
        };
        let s = &mut work.rows[i];
        let (stop, cause) = match r.status {
            StatusType::IdleTimeout if s.update >= r.event_time => return Ok(()),
            StatusType::IdleTimeout => (s.update.max(s.start), CAUSE_IDLE_TIMEOUT),
            _ => (r.event_time.max(s.start), CAUSE_ADMIN_RESET),
        };
        s.stop = Some(stop);
        s.update = s.update.max(stop);
        s.session_time = s.session_time.max(stop - s.start);
        s.terminate_cause = Some(cause.into());
        s.stop_source = Some(StopSource::Server);
        let ev = event_of(s, "Stop", stop, StopSource::Server);
        let u = s.fields.username.clone();
        work.touch(i, false);
        work.events.push((i, ev));
        work.usernames.insert(u);
        Ok(())
    }

    async fn nas_reboot(&self, work: &mut Work, r: &Record) -> Result<(), StoreError> {
        // Open rows of this NAS already in the batch, then the rest from the index, then
        // any the index does not hold (another node's or FreeRADIUS's rows) from the
        // database. The newest copy of a row wins: batch, then index, then database.
        let indexed = self.index.open_for_nas(r.nas_ip);
        let stored = self.store.open_for_nas(r.nas_ip, r.event_time).await?;
        let candidates = indexed.iter().map(|s| &**s).chain(stored.iter());
        for s in candidates {
            let present = work.by_key.get(&s.key).is_some_and(|k| {
                k.rows
                    .iter()
                    .any(|&i| work.rows[i].radacctid == s.radacctid)
            });
            if present {
                continue;
            }
            let i = work.push(s.clone(), false);
            work.by_key
                .entry(s.key)
                .or_insert_with(|| KeyRows {
                    rows: Vec::new(),
                    complete: false,
                })
                .rows
                .push(i);
        }
        let targets: Vec<usize> = (0..work.rows.len())
            .filter(|&i| {
                let s = &work.rows[i];
                s.is_open() && s.fields.nasipaddress == Some(r.nas_ip) && s.start <= r.event_time
            })
            .collect();
        for i in targets {
            let s = &mut work.rows[i];
            s.stop = Some(r.event_time);
            s.update = s.update.max(r.event_time);
            s.session_time = s.session_time.max(r.event_time - s.start);
            s.terminate_cause = Some(CAUSE_NAS_REBOOT.into());
            s.stop_source = Some(StopSource::Server);
            let ev = event_of(s, "Stop", r.event_time, StopSource::Server);
            let u = s.fields.username.clone();
            work.touch(i, false);
            work.events.push((i, ev));
            work.usernames.insert(u);
        }
        Ok(())
    }
}

/// Move time and counters forward; returns whether anything changed.
fn advance(row: &mut Session, r: &Record) -> bool {
    let before = (row.session_time, row.input_octets, row.output_octets);
    if let Some(t) = r.session_time {
        row.session_time = row.session_time.max(t);
    }
    if let Some(v) = r.input_octets {
        row.input_octets = row.input_octets.max(v);
    }
    if let Some(v) = r.output_octets {
        row.output_octets = row.output_octets.max(v);
    }
    before != (row.session_time, row.input_octets, row.output_octets) || r.event_time > row.update
}

fn close_lost_service(work: &mut Work, i: usize) {
    let s = &mut work.rows[i];
    let stop = s.update.max(s.start);
    s.stop = Some(stop);
    s.session_time = s.session_time.max(stop - s.start);
    s.terminate_cause = Some(CAUSE_LOST_SERVICE.into());
    s.stop_source = Some(StopSource::Server);
    let ev = event_of(s, "Stop", stop, StopSource::Server);
    let u = s.fields.username.clone();
    work.touch(i, false);
    work.events.push((i, ev));
    work.usernames.insert(u);
}

fn new_row(r: &Record, acctuniqueid: Box<str>, older_than_open: bool) -> Session {
    let start = r.implied_start();
    let mut row = Session {
        radacctid: 0,
        acctuniqueid,
        key: r.key,
        nas_id: r.nas_id,
        fields: r.fields.clone(),
        start,
        update: r.event_time.max(start),
        stop: None,
        interval: None,
        session_time: r.session_time.unwrap_or(0).max(0),
        input_octets: r.input_octets.unwrap_or(0),
        output_octets: r.output_octets.unwrap_or(0),
        terminate_cause: None,
        connectinfo_stop: None,
        stop_source: None,
    };
    if r.status == StatusType::Stop {
        row.stop = Some(r.event_time.max(start));
        row.terminate_cause.clone_from(&r.terminate_cause);
        row.connectinfo_stop.clone_from(&r.connectinfo);
        row.stop_source = Some(StopSource::Nas);
    } else if older_than_open {
        row.stop = Some(r.event_time.max(start));
        row.terminate_cause = Some(CAUSE_LOST_SERVICE.into());
        row.stop_source = Some(StopSource::Server);
    }
    row
}

fn event_of(s: &Session, kind: &'static str, time: Timestamp, source: StopSource) -> Event {
    Event {
        kind,
        time,
        session_time: s.session_time,
        input_octets: s.input_octets,
        output_octets: s.output_octets,
        source,
    }
}

/// Rows known to one batch: loaded (clean) or changed (dirty), by key.
#[derive(Default)]
struct Work {
    rows: Vec<Session>,
    dirty: Vec<bool>,
    /// For a dirty row: only its progress changed (see `Batch::progress`).
    progress: Vec<bool>,
    was_open: Vec<bool>,
    by_key: HashMap<SessionKey, KeyRows>,
    events: Vec<(usize, Event)>,
    usernames: HashSet<Box<str>>,
    /// Rows read ahead for keys the index could not place; a key read ahead with no rows
    /// is recorded in `prefetched_keys` so that it is not read again.
    prefetched: HashMap<SessionKey, Vec<Session>>,
    prefetched_keys: HashSet<SessionKey>,
}

#[derive(Default)]
struct KeyRows {
    rows: Vec<usize>,
    /// Every database row of the key is in `rows`, not only the open one.
    complete: bool,
}

impl Work {
    /// Whether the database was already asked for this key in this batch.
    fn fetched(&self, key: &SessionKey) -> bool {
        self.prefetched_keys.contains(key)
    }

    fn push(&mut self, s: Session, dirty: bool) -> usize {
        // A row pushed dirty is new (not yet in the database), so it was not open before.
        self.was_open.push(!dirty && s.is_open());
        self.rows.push(s);
        self.dirty.push(dirty);
        self.progress.push(false);
        self.rows.len() - 1
    }

    /// Mark row `i` changed; `progress` says whether this change was to its progress only
    /// (update time, interval, session time, counters). A new row is never progress-only.
    fn touch(&mut self, i: usize, progress: bool) {
        let first = !self.dirty[i];
        self.progress[i] = progress && (first || self.progress[i]);
        self.dirty[i] = true;
    }

    /// The batch to commit, and for each of its rows whether it was open before.
    fn into_batch(self) -> (Batch, Vec<bool>) {
        let mut remap = vec![usize::MAX; self.rows.len()];
        let mut rows = Vec::new();
        let mut was_open = Vec::new();
        let mut progress = Vec::new();
        for (i, (((row, dirty), open), only_progress)) in self
            .rows
            .into_iter()
            .zip(self.dirty)
            .zip(self.was_open)
            .zip(self.progress)
            .enumerate()
        {
            if dirty {
                remap[i] = rows.len();
                rows.push(row);
                was_open.push(open);
                progress.push(only_progress);
            }
        }
        let events = self
            .events
            .into_iter()
            .filter_map(|(i, e)| remap.get(i).filter(|&&j| j != usize::MAX).map(|&j| (j, e)))
            .collect();
        let mut usernames: Vec<Box<str>> = self
            .usernames
            .into_iter()
            .filter(|u| !u.is_empty())
            .collect();
        usernames.sort();
        (
            Batch {
                rows,
                progress,
                events,
                usernames,
            },
            was_open,
        )
    }
}
