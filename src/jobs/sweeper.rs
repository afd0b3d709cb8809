//! The stale-session sweeper: every `sweep_interval` (5 min), open sessions whose last
//! update is older than `stale_after` (30 min) are closed as NAS-Idle-Timeout, with stop
//! time = last update and session time = last update − start. This is what clears ghost
//! sessions when a NAS reboots without Accounting-On or loses its Stop packets.
//!
//! Closes go through the writer (as records), so they are ordered with NAS traffic and the
//! index and the database change together; an Interim-Update that arrives after the
//! sweeper looked wins (the engine re-checks the update time at commit). Then
//! `subscribers.is_online` is re-synced for everyone.
//!
//! After a radacctd outage every open row looks stale — the NASes' Interim-Updates during
//! the outage were lost — yet most of those sessions are alive. So the sweeper records a
//! heartbeat in the database (`radacctd_state`, after every sweep and at shutdown), and
//! for one `stale_after` after start it closes only rows that were already stale when
//! the heartbeat was last written: those the sweeper would have closed had it kept running.
//! The rest get a full threshold to send their next Interim-Update. The first sweep runs
//! one `sweep_interval` after start, so ghost sessions in a database radacctd has not run
//! on (no heartbeat) are cleared on the normal cadence.
//!
//! Each sweep also reconciles the index with the database: an open session in memory whose
//! row is no longer open in `radacct` — closed by another radacctd node sharing the
//! database, by FreeRADIUS, or by an operator's SQL — leaves the index, so the live count
//! and active list stop showing it within one sweep interval.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::sessions::model::Timestamp;
use crate::sessions::writer::{Closer, Submitted};
use crate::sessions::{Index, Record, Store};

/// The cutoff of a sweep at `now` by a server started at `started`, whose previous
/// heartbeat (if any) was written at `last_alive`: the steady-state `now − stale_after`,
/// lowered during the first `stale_after` after start to what was already stale at
/// `last_alive`.
pub fn cutoff(
    now: Timestamp,
    started: Timestamp,
    last_alive: Option<Timestamp>,
    stale_after: Duration,
) -> Timestamp {
    let stale = stale_after.as_secs() as i64;
    match last_alive {
        Some(alive) if now < started + stale => (now - stale).min(alive - stale),
        _ => now - stale,
    }
}

/// Most sessions closed per sweep; a backlog larger than this is worked off over several
/// runs rather than in one burst that would crowd out NAS traffic.
const MAX_PER_SWEEP: i64 = 50_000;

pub struct Sweeper {
    pub store: Store,
    pub index: Arc<Index>,
    pub closer: Arc<dyn Closer>,
    pub interval: Duration,
    pub stale_after: Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sessions closed. A close that changed nothing — an Interim-Update committed after
    /// the sweeper looked (the engine re-checks), or the session was closed meanwhile — is
    /// not counted.
    pub closed: u64,
    pub online_changed: u64,
    /// Index entries dropped because their row is no longer open in the database.
    pub evicted: u64,
}

impl Sweeper {
    /// One sweep at `now` in steady state: close what is older than `stale_after`.
    pub async fn run_once(
        &self,
        now: Timestamp,
    ) -> Result<Report, crate::sessions::store::StoreError> {
        self.sweep(now - self.stale_after.as_secs() as i64).await
    }

    /// Close every open session last updated before `cutoff` (at most `MAX_PER_SWEEP`).
    pub async fn sweep(
        &self,
        cutoff: Timestamp,
    ) -> Result<Report, crate::sessions::store::StoreError> {
        let stale = self.store.stale_sessions(cutoff, MAX_PER_SWEEP).await?;
        // Many closes in flight at once, so they share group commits.
        let mut closed = 0u64;
        for chunk in stale.chunks(512) {
            let submits: Vec<_> = chunk
                .iter()
                .map(|s| {
                    self.closer
                        .close(Record::idle_timeout(s, cutoff), Duration::from_secs(30))
                })
                .collect();
            closed += futures_util::future::join_all(submits)
                .await
                .into_iter()
                .filter(|s| matches!(s, Submitted::Committed { closed: true }))
                .count() as u64;
        }
        // Counted before anything else can fail: these closes are committed.
        m::sweeper(closed);
        let online_changed = self.store.sync_online().await?;
        let evicted = self.reconcile().await?;
        Ok(Report {
            closed,
            online_changed,
            evicted,
        })
    }

    /// Drop index entries whose row is no longer open in the database. The ids are taken
    /// from the index *before* the database is asked, so each was committed before the
    /// query ran: a session opened meanwhile is never mistaken for a closed one.
    pub async fn reconcile(&self) -> Result<u64, crate::sessions::store::StoreError> {
        let ids = self.index.ids();
        let mut evicted = 0u64;
        for chunk in ids.chunks(10_000) {
            let open: std::collections::HashSet<i64> =
                self.store.still_open(chunk).await?.into_iter().collect();
            for &id in chunk.iter().filter(|id| !open.contains(id)) {
                if let Some(s) = self.index.get_by_id(id) {
                    let mut gone = (*s).clone();
                    gone.stop = Some(gone.update.max(gone.start));
                    self.index.apply(&gone);
                    evicted += 1;
                    tracing::info!(
                        radacctid = id,
                        "session closed outside this node; removed from the index"
                    );
                }
            }
        }
        Ok(evicted)
    }

    pub async fn run(self, stop: CancellationToken) {
        let started = chrono::Utc::now().timestamp();
        let last_alive = match self.store.heartbeat().await {
            Ok(h) => h,
            Err(e) => {
                // Without it, the first threshold after start is treated as after an
                // outage of unknown length: nothing that might be alive is closed.
                tracing::warn!(error = %e, "cannot read the sweeper heartbeat");
                Some(started)
            }
        };
        self.beat(started).await;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.beat(chrono::Utc::now().timestamp()).await;
                    return;
                }
                _ = tick.tick() => {}
            }
            let now = chrono::Utc::now().timestamp();
            match self
                .sweep(cutoff(now, started, last_alive, self.stale_after))
                .await
            {
                Ok(r) if r.closed > 0 || r.online_changed > 0 || r.evicted > 0 => {
                    tracing::info!(
                        closed = r.closed,
                        online_changed = r.online_changed,
                        evicted = r.evicted,
                        "stale-session sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stale-session sweep failed; retrying next interval")
                }
            }
            self.beat(now).await;
        }
    }

    async fn beat(&self, now: Timestamp) {
        if let Err(e) = self.store.set_heartbeat(now).await {
            tracing::warn!(error = %e, "cannot write the sweeper heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_an_outage_only_rows_stale_before_it_are_closed_for_one_threshold() {
        let t = Duration::from_secs(1800);
        let started = 1_000_000;
        // No heartbeat (a database radacctd never ran on): steady state from the start.
        assert_eq!(
            cutoff(started + 300, started, None, t),
            started + 300 - 1800
        );
        // Down for an hour: during the first 30 min only what was stale an hour ago goes.
        let alive = started - 3600;
        assert_eq!(cutoff(started + 300, started, Some(alive), t), alive - 1800);
        assert_eq!(
            cutoff(started + 1799, started, Some(alive), t),
            alive - 1800
        );
        // A full threshold after start, the NASes have had their chance: steady state.
        assert_eq!(cutoff(started + 1800, started, Some(alive), t), started);
        // A quick restart changes (almost) nothing.
        let alive = started - 5;
        assert_eq!(cutoff(started + 300, started, Some(alive), t), alive - 1800);
        // A heartbeat from the future (clock stepped back) cannot make it more eager.
        assert_eq!(
            cutoff(started + 300, started, Some(started + 9999), t),
            started + 300 - 1800
        );
    }
}
