//! The archiver: once a day (03:00 local by default) sessions closed more than 90 days ago
//! move, with their history, to `radacct_archive` and `radacct_events_archive`, in batches
//! of `archive_batch_size` rows (at most 200 on SQLite), each batch one transaction and
//! followed by a pause at least as long as the batch took. Interrupting it at any moment
//! loses nothing and copies nothing twice (the batch rolls back), ingest keeps flowing
//! between batches, and the next run simply continues.

use std::time::{Duration, Instant};

use chrono::{Local, NaiveTime, TimeZone};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::sessions::Store;
use crate::sessions::model::Timestamp;
use crate::sessions::store::StoreError;

/// Bounds of the pause between two batches (see [`Archiver::run_once`]).
const MIN_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub struct Archiver {
    pub store: Store,
    pub at: (u32, u32),
    pub after: Duration,
    pub batch_size: i64,
}

impl Archiver {
    /// Archive everything closed before `now − after`; returns how many sessions moved.
    pub async fn run_once(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let cutoff = now - self.after.as_secs() as i64;
        let batch = self.store.archive_batch_cap(self.batch_size);
        let mut total = 0;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let moved = self.store.archive_batch(cutoff, batch).await?;
            total += moved;
            m::archived(moved);
            if moved < batch as u64 {
                break;
            }
            // Let the writer in between batches: on SQLite the batch held the database's
            // only write lock, so pause at least as long as it took (ingest then gets half
            // the time or more, whatever the batch cost).
            let pause = started.elapsed().clamp(MIN_PAUSE, MAX_PAUSE);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        Ok(total)
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            let wait = until_next(self.at);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.run_once(chrono::Utc::now().timestamp(), &stop).await {
                Ok(n) => tracing::info!(archived = n, "archiver run finished"),
                Err(e @ StoreError::ArchiveConflict(_)) => {
                    // Needs a person: the same rows will conflict again tomorrow.
                    tracing::error!(error = %e, "archiver run stopped");
                }
                Err(e) => tracing::warn!(error = %e, "archiver run failed; it continues tomorrow"),
            }
        }
    }
}

/// Time until the next `hh:mm` local time (tomorrow's if today's has passed).
fn until_next((hour, minute): (u32, u32)) -> Duration {
    let now = Local::now();
    let Some(time) = NaiveTime::from_hms_opt(hour, minute, 0) else {
        return Duration::from_secs(86_400);
    };
    let mut day = now.date_naive();
    for _ in 0..3 {
        if let Some(at) = Local.from_local_datetime(&day.and_time(time)).earliest()
            && at > now
        {
            return (at - now).to_std().unwrap_or(Duration::from_secs(60));
        }
        day = day.succ_opt().unwrap_or(day);
    }
    Duration::from_secs(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_run_is_within_a_day() {
        let d = until_next((3, 0));
        assert!(
            d > Duration::ZERO && d <= Duration::from_secs(86_400 + 3600),
            "{d:?}"
        );
    }
}
