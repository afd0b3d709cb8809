//! The writer: group commit. It takes every record waiting in its queue (up to
//! `max_batch`), applies them in one transaction, and only after the commit sends their
//! Accounting-Responses (RFC 2866 §4.1: no answer for what is not recorded).
//!
//! While the store cannot be written, the writer holds its batch and retries with backoff;
//! nothing is answered, the queue fills, ingest sheds new packets unanswered, and the NASes
//! retransmit until the store is back. A batch the store refuses for its data (a constraint
//! violation, say) is retried record by record so that one bad record cannot hold up the
//! rest; a record refused on its own is dropped unanswered and logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{CAUSE_ADMIN_RESET, CAUSE_IDLE_TIMEOUT, Change, ChangeKind, Engine};
use super::model::Record;
use super::model::StatusType;
use super::store::StoreError;
use crate::config::WriterConfig;
use crate::metrics as m;

/// A verified record waiting for its commit, with whatever its acknowledgement needs.
#[derive(Debug)]
pub struct Pending<T> {
    pub record: Record,
    pub ticket: T,
}

/// How committed records are acknowledged. Ingest implements it with its UDP socket and
/// duplicate cache; this module knows nothing of either.
pub trait Acknowledge: Send + Sync + 'static {
    type Ticket: Send + 'static;
    /// The records behind these tickets are committed: answer them (now, or by handing
    /// them to whatever sends the answers).
    fn ack(&self, tickets: Vec<Self::Ticket>) -> impl std::future::Future<Output = ()> + Send;
    /// The record behind this ticket will not be committed: forget it, unanswered.
    fn abandon(&self, ticket: &Self::Ticket);
}

/// Where a record came from, and so how its commit is acknowledged: a NAS packet is
/// answered through [`Acknowledge`]; a record the server made itself (a confirmed
/// disconnect) reports back on a channel.
#[derive(Debug)]
pub enum Origin<T> {
    Nas(T),
    Server(oneshot::Sender<Submitted>),
}

/// What became of a record the server submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Not committed: the queue was full or closed, the store stayed unwritable, or the
    /// wait ran out.
    NotCommitted,
    /// Committed. `closed`: the record closed its target session. It is `false` when the
    /// session was already closed, or when an Interim-Update committed first and the
    /// engine's re-check left an idle-timeout close without effect.
    Committed { closed: bool },
}

/// Hands server-made records (the stop of a confirmed disconnect, a sweeper close) to the
/// writer, so that they are ordered and committed with the NAS traffic instead of racing it.
pub trait Closer: Send + Sync {
    /// Queue `record` and wait up to `wait` for its commit.
    fn close(&self, record: Record, wait: Duration) -> BoxFuture<'_, Submitted>;

    /// Queue `record` and wait up to `wait` for its commit; `false` if it was not committed.
    fn submit(&self, record: Record, wait: Duration) -> BoxFuture<'_, bool> {
        Box::pin(
            async move { matches!(self.close(record, wait).await, Submitted::Committed { .. }) },
        )
    }

    /// Records waiting in the writer's queue, where the implementation knows it.
    fn queued(&self) -> Option<usize> {
        None
    }
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The writer queue's sending side, as a [`Closer`].
pub struct Submitter<T> {
    pub queue: mpsc::Sender<Pending<Origin<T>>>,
}

impl<T: Send + 'static> Closer for Submitter<T> {
    fn close(&self, record: Record, wait: Duration) -> BoxFuture<'_, Submitted> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let pending = Pending {
                record,
                ticket: Origin::Server(tx),
            };
            let queued = tokio::time::timeout(wait, self.queue.send(pending)).await;
            if !matches!(queued, Ok(Ok(()))) {
                return Submitted::NotCommitted;
            }
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(outcome)) => outcome,
                _ => Submitted::NotCommitted,
            }
        })
    }

    /// Exact at the moment of the call: the channel's capacity minus its free slots. The
    /// writer's own updates of the gauge lag while it is stuck in a commit.
    fn queued(&self) -> Option<usize> {
        Some(
            self.queue
                .max_capacity()
                .saturating_sub(self.queue.capacity()),
        )
    }
}

/// How long the store may fail before the outage is logged at ERROR (an operator must
/// act); shorter failures, such as lock contention that clears by itself, are warnings.
const ESCALATE_AFTER: Duration = Duration::from_secs(10);
/// While the store keeps failing, a reminder at most this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);
/// How often the queue-depth gauge is refreshed while a commit is in progress or retried.
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(1);

pub struct Writer<A: Acknowledge> {
    engine: Engine,
    rx: mpsc::Receiver<Pending<Origin<A::Ticket>>>,
    acks: A,
    config: WriterConfig,
    changes: broadcast::Sender<Arc<Change>>,
}

enum Outcome {
    Stored(Vec<Change>),
    Refused(StoreError),
    GaveUp,
}

/// What the writer keeps across batches: how long the store has been failing (so an
/// outage is logged once and escalated once, however many batches it holds up), and the
/// single shutdown deadline shared by every batch still queued when shutdown began.
#[derive(Debug, Default)]
struct Health {
    failing_since: Option<Instant>,
    escalated: bool,
    last_logged: Option<Instant>,
    /// Shutdown began: what is not committed by then is abandoned.
    deadline: Option<Instant>,
    gave_up: bool,
}

impl Health {
    fn shutdown_seen(&mut self, grace: Duration) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + grace);
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn failed(&mut self, e: &StoreError, records: usize) {
        let now = Instant::now();
        let Some(since) = self.failing_since else {
            self.failing_since = Some(now);
            self.last_logged = Some(now);
            tracing::warn!(
                error = %e,
                records,
                "cannot write to the store; holding packets unanswered and retrying"
            );
            return;
        };
        let failing_secs = now.duration_since(since).as_secs();
        let quiet = self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < REMIND_EVERY);
        if !self.escalated && now.duration_since(since) >= ESCALATE_AFTER {
            self.escalated = true;
            self.last_logged = Some(now);
            tracing::error!(
                error = %e,
                failing_secs,
                "the store has been unwritable for {failing_secs} s; accounting packets are \
                 held unanswered and the NASes retransmit them until it is back"
            );
        } else if !quiet {
            self.last_logged = Some(now);
            tracing::warn!(error = %e, failing_secs, "the store is still unwritable");
        } else {
            tracing::debug!(error = %e, "store still failing");
        }
    }

    fn stored(&mut self, records: usize) {
        let Some(since) = self.failing_since.take() else {
            return;
        };
        let failed_secs = since.elapsed().as_secs_f64();
        if std::mem::take(&mut self.escalated) {
            tracing::warn!(
                records,
                failed_secs,
                "store writable again after {failed_secs:.0} s; resuming"
            );
        } else {
            tracing::info!(
                records,
                failed_secs,
                "store writable again after {failed_secs:.1} s; resuming"
            );
        }
        self.last_logged = None;
    }
}

impl<A: Acknowledge> Writer<A> {
    pub fn new(
        engine: Engine,
        rx: mpsc::Receiver<Pending<Origin<A::Ticket>>>,
        acks: A,
        config: WriterConfig,
        changes: broadcast::Sender<Arc<Change>>,
    ) -> Self {
        Writer {
            engine,
            rx,
            acks,
            config,
            changes,
        }
    }

    /// Run until `drain` is cancelled (ingest has stopped) and everything queued by then
    /// is committed and answered; then the queue is closed, so late submissions fail at
    /// once instead of waiting. `shutdown` starts one deadline (`shutdown_grace`) for all
    /// that is still queued: what cannot be committed by then stays unanswered, and the
    /// NAS sends it again to the next instance.
    pub async fn run(mut self, shutdown: CancellationToken, drain: CancellationToken) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut closed = false;
        let mut health = Health::default();
        loop {
            let n = tokio::select! {
                biased;
                n = self.rx.recv_many(&mut batch, self.config.max_batch) => n,
                _ = drain.cancelled(), if !closed => {
                    self.rx.close();
                    closed = true;
                    continue;
                }
                _ = shutdown.cancelled(), if health.deadline.is_none() => {
                    health.shutdown_seen(self.config.shutdown_grace);
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            m::writer_queue_depth(self.rx.len());
            let taken = std::mem::take(&mut batch);
            self.commit_batch(taken, &shutdown, &mut health).await;
        }
        m::writer_queue_depth(0);
    }

    async fn commit_batch(
        &self,
        batch: Vec<Pending<Origin<A::Ticket>>>,
        shutdown: &CancellationToken,
        health: &mut Health,
    ) {
        let (records, replies): (Vec<Record>, Vec<Origin<A::Ticket>>) =
            batch.into_iter().map(|p| (p.record, p.ticket)).unzip();
        match self.commit_until_stored(&records, shutdown, health).await {
            Outcome::Stored(changed) => self.finish(changed, &records, replies).await,
            Outcome::GaveUp => replies.into_iter().for_each(|r| self.abandon(r)),
            Outcome::Refused(e) if records.len() == 1 => {
                for r in replies {
                    self.refuse(&e, r);
                }
            }
            Outcome::Refused(_) => {
                for (record, reply) in records.iter().zip(replies) {
                    let one = std::slice::from_ref(record);
                    match self.commit_until_stored(one, shutdown, health).await {
                        Outcome::Stored(changed) => self.finish(changed, one, vec![reply]).await,
                        Outcome::Refused(e) => self.refuse(&e, reply),
                        Outcome::GaveUp => self.abandon(reply),
                    }
                }
            }
        }
    }

    async fn commit_until_stored(
        &self,
        records: &[Record],
        shutdown: &CancellationToken,
        health: &mut Health,
    ) -> Outcome {
        let mut backoff = Duration::from_millis(50);
        loop {
            if health.past_deadline() {
                return self.give_up(records.len(), health);
            }
            let started = Instant::now();
            let Some(result) = self.attempt(records, shutdown, health).await else {
                return self.give_up(records.len(), health);
            };
            match result {
                Ok(changed) => {
                    m::commit(records.len(), started.elapsed());
                    health.stored(records.len());
                    return Outcome::Stored(changed);
                }
                Err(e) if e.is_transient() => {
                    m::store_error("transient");
                    health.failed(&e, records.len());
                }
                Err(e) => {
                    m::store_error("refused");
                    return Outcome::Refused(e);
                }
            }
            m::writer_queue_depth(self.rx.len());
            let mut wake = Instant::now() + backoff;
            if let Some(deadline) = health.deadline {
                wake = wake.min(deadline);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled(), if health.deadline.is_none() => {
                    health.shutdown_seen(self.config.shutdown_grace);
                }
            }
            backoff = (backoff * 2).min(self.config.retry_max_backoff);
        }
    }

    /// One transaction. While it runs, the queue-depth gauge keeps moving, and once
    /// shutdown has begun the attempt is abandoned at the deadline (`None`): a store that
    /// blocks (PostgreSQL waiting on a lock) must not hold shutdown beyond the grace.
    async fn attempt(
        &self,
        records: &[Record],
        shutdown: &CancellationToken,
        health: &mut Health,
    ) -> Option<Result<Vec<Change>, StoreError>> {
        let work = self.engine.process(records);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(QUEUE_DEPTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut slow_logged = false;
        loop {
            let deadline = health.deadline;
            tokio::select! {
                biased;
                result = &mut work => return Some(result),
                _ = shutdown.cancelled(), if deadline.is_none() => {
                    health.shutdown_seen(self.config.shutdown_grace);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => return None,
                _ = tick.tick() => {
                    m::writer_queue_depth(self.rx.len());
                    // A store that blocks rather than fails (PostgreSQL waiting on a lock)
                    // reports no error; say so once per attempt.
                    if !slow_logged && started.elapsed() >= ESCALATE_AFTER {
                        slow_logged = true;
                        tracing::warn!(
                            records = records.len(),
                            waiting_secs = started.elapsed().as_secs(),
                            "a commit has been waiting for over {} s (a lock held elsewhere?); \
                             packets are held unanswered meanwhile",
                            ESCALATE_AFTER.as_secs()
                        );
                    }
                }
            }
        }
    }

    fn give_up(&self, records: usize, health: &mut Health) -> Outcome {
        if std::mem::replace(&mut health.gave_up, true) {
            tracing::debug!(records, "shutdown deadline passed; batch not committed");
        } else {
            tracing::warn!(
                records,
                grace_secs = self.config.shutdown_grace.as_secs_f64(),
                "shutting down with the store unwritable: this batch and the rest of the \
                 queue were not acknowledged, and the NASes will send them again"
            );
        }
        Outcome::GaveUp
    }

    async fn finish(
        &self,
        changed: Vec<Change>,
        records: &[Record],
        tickets: Vec<Origin<A::Ticket>>,
    ) {
        let mut nas = Vec::with_capacity(tickets.len());
        for (record, t) in records.iter().zip(tickets) {
            match t {
                Origin::Nas(t) => nas.push(t),
                // The requester may have given up waiting; that is fine.
                Origin::Server(tx) => {
                    let closed = closed_by(record, &changed);
                    let _ = tx.send(Submitted::Committed { closed });
                }
            }
        }
        self.acks.ack(nas).await;
        m::open_sessions(self.engine.index().len());
        for s in changed {
            // No receivers is fine: nobody is watching the live stream.
            let _ = self.changes.send(Arc::new(s));
        }
    }

    fn abandon(&self, ticket: Origin<A::Ticket>) {
        match ticket {
            Origin::Nas(t) => self.acks.abandon(&t),
            Origin::Server(tx) => {
                let _ = tx.send(Submitted::NotCommitted);
            }
        }
    }

    fn refuse(&self, e: &StoreError, ticket: Origin<A::Ticket>) {
        m::dropped("store_refused");
        tracing::error!(
            error = %e,
            "the store refused an accounting record; it was not acknowledged"
        );
        self.abandon(ticket);
    }
}

/// Whether the committed batch `changed` closed the session a server-made `record` targets,
/// with that record's terminate cause. The engine turns an idle-timeout close into nothing
/// when an Interim-Update committed first, and any close into nothing when the session was
/// already closed (by the NAS, another node, or an Accounting-On in the same batch).
fn closed_by(record: &Record, changed: &[Change]) -> bool {
    let cause = match record.status {
        StatusType::IdleTimeout => CAUSE_IDLE_TIMEOUT,
        StatusType::AdminReset => CAUSE_ADMIN_RESET,
        _ => return false,
    };
    let Some(target) = record.target else {
        return false;
    };
    changed.iter().any(|c| {
        c.kind == ChangeKind::Stopped
            && c.session.radacctid == target
            && c.session.terminate_cause.as_deref() == Some(cause)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> StoreError {
        StoreError::Db(sqlx::Error::PoolTimedOut)
    }

    fn ago(d: Duration) -> Instant {
        Instant::now()
            .checked_sub(d)
            .expect("monotonic clock too young")
    }

    /// One WARN when the store starts failing, one ERROR once it has failed for longer
    /// than `ESCALATE_AFTER` (however many failures and batches), reset on recovery.
    #[test]
    fn an_outage_is_escalated_once_after_the_threshold_and_reset_on_recovery() {
        let mut h = Health::default();
        h.failed(&timeout(), 3);
        assert!(h.failing_since.is_some() && !h.escalated);
        h.failing_since = Some(ago(ESCALATE_AFTER / 2));
        h.failed(&timeout(), 3);
        assert!(!h.escalated, "escalated before the threshold");
        h.failing_since = Some(ago(ESCALATE_AFTER + Duration::from_secs(1)));
        h.failed(&timeout(), 3);
        assert!(h.escalated);
        h.stored(3);
        assert!(h.failing_since.is_none() && !h.escalated);
        // A new outage starts over at WARN.
        h.failed(&timeout(), 1);
        assert!(!h.escalated);
    }

    /// The shutdown deadline is set once, at the first sight of shutdown; later sightings
    /// (other batches) do not move it.
    #[test]
    fn the_shutdown_deadline_is_set_once() {
        let mut h = Health::default();
        assert!(!h.past_deadline());
        h.shutdown_seen(Duration::from_secs(60));
        let first = h.deadline;
        h.shutdown_seen(Duration::from_secs(600));
        assert_eq!(h.deadline, first);
        assert!(!h.past_deadline());
        h.deadline = Some(ago(Duration::from_millis(1)));
        assert!(h.past_deadline());
    }
}
