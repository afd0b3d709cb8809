//! The stale-session sweeper: every `sweep_interval` (5 min), open sessions whose last
//! update is older than `stale_after` (30 min) are closed as NAS-Idle-Timeout, with stop
//! time = last update and session time = last update − start. This is what clears ghost
//! sessions when a NAS reboots without Accounting-On or loses its Stop packets.
//!
//! Closes go through the writer (as records), so they are ordered with NAS traffic and the
//! index and the database change together; an Interim-Update that arrives after the
//! sweeper looked wins (the engine re-checks the update time at commit). Then
//! `subscribers.is_online` is re-synced for everyone.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::sessions::model::Timestamp;
use crate::sessions::writer::Closer;
use crate::sessions::{Record, Store};

/// Most sessions closed per sweep; a backlog larger than this is worked off over several
/// runs rather than in one burst that would crowd out NAS traffic.
const MAX_PER_SWEEP: i64 = 50_000;

pub struct Sweeper {
    pub store: Store,
    pub closer: Arc<dyn Closer>,
    pub interval: Duration,
    pub stale_after: Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Closes committed. One may have changed nothing if an update arrived after the
    /// sweeper looked (the engine re-checks).
    pub closed: u64,
    pub online_changed: u64,
}

impl Sweeper {
    pub async fn run_once(
        &self,
        now: Timestamp,
    ) -> Result<Report, crate::sessions::store::StoreError> {
        let cutoff = now - self.stale_after.as_secs() as i64;
        let stale = self.store.stale_sessions(cutoff, MAX_PER_SWEEP).await?;
        // Many closes in flight at once, so they share group commits.
        let mut committed = 0u64;
        for chunk in stale.chunks(512) {
            let submits: Vec<_> = chunk
                .iter()
                .map(|s| {
                    self.closer
                        .submit(Record::idle_timeout(s, cutoff), Duration::from_secs(30))
                })
                .collect();
            committed += futures_util::future::join_all(submits)
                .await
                .into_iter()
                .filter(|ok| *ok)
                .count() as u64;
        }
        let online_changed = self.store.sync_online().await?;
        m::sweeper(committed);
        Ok(Report {
            closed: committed,
            online_changed,
        })
    }

    pub async fn run(self, stop: CancellationToken) {
        // The first sweep waits a full threshold after start: after an outage every open
        // row looks stale, and the NASes need time to send their next Interim-Update
        // before the sweeper may judge them.
        let first = self.stale_after.max(self.interval);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.run_once(chrono::Utc::now().timestamp()).await {
                Ok(r) if r.closed > 0 || r.online_changed > 0 => {
                    tracing::info!(
                        closed = r.closed,
                        online_changed = r.online_changed,
                        "stale-session sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stale-session sweep failed; retrying next interval")
                }
            }
        }
    }
}
