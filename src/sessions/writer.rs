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
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::engine::{Change, Engine};
use super::model::Record;
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
    /// The records behind these tickets are committed: answer them.
    fn ack(&self, tickets: &[Self::Ticket]) -> impl std::future::Future<Output = ()> + Send;
    /// The record behind this ticket will not be committed: forget it, unanswered.
    fn abandon(&self, ticket: &Self::Ticket);
}

/// Where a record came from, and so how its commit is acknowledged: a NAS packet is
/// answered through [`Acknowledge`]; a record the server made itself (a confirmed
/// disconnect) reports back on a channel.
#[derive(Debug)]
pub enum Origin<T> {
    Nas(T),
    Server(oneshot::Sender<bool>),
}

/// Hands server-made records (the stop of a confirmed disconnect) to the writer, so that
/// they are ordered and committed with the NAS traffic instead of racing it.
pub trait Closer: Send + Sync {
    /// Queue `record` and wait up to `wait` for its commit; `false` if it was not committed.
    fn submit(&self, record: Record, wait: Duration) -> BoxFuture<'_, bool>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The writer queue's sending side, as a [`Closer`].
pub struct Submitter<T> {
    pub queue: mpsc::Sender<Pending<Origin<T>>>,
}

impl<T: Send + 'static> Closer for Submitter<T> {
    fn submit(&self, record: Record, wait: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let pending = Pending {
                record,
                ticket: Origin::Server(tx),
            };
            let queued = tokio::time::timeout(wait, self.queue.send(pending)).await;
            if !matches!(queued, Ok(Ok(()))) {
                return false;
            }
            matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(true)))
        })
    }
}

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
    /// once instead of waiting. `shutdown` only limits how long a failing store is retried
    /// after shutdown began (`shutdown_grace`): what cannot be committed by then stays
    /// unanswered, and the NAS sends it again to the next instance.
    pub async fn run(mut self, shutdown: CancellationToken, drain: CancellationToken) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut closed = false;
        loop {
            let n = tokio::select! {
                biased;
                n = self.rx.recv_many(&mut batch, self.config.max_batch) => n,
                _ = drain.cancelled(), if !closed => {
                    self.rx.close();
                    closed = true;
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            m::writer_queue_depth(self.rx.len());
            let taken = std::mem::take(&mut batch);
            self.commit_batch(taken, &shutdown).await;
        }
    }

    async fn commit_batch(
        &self,
        batch: Vec<Pending<Origin<A::Ticket>>>,
        shutdown: &CancellationToken,
    ) {
        let (records, replies): (Vec<Record>, Vec<Origin<A::Ticket>>) =
            batch.into_iter().map(|p| (p.record, p.ticket)).unzip();
        match self.commit_until_stored(&records, shutdown).await {
            Outcome::Stored(changed) => self.finish(changed, replies).await,
            Outcome::GaveUp => replies.into_iter().for_each(|r| self.abandon(r)),
            Outcome::Refused(e) if records.len() == 1 => {
                for r in replies {
                    self.refuse(&e, r);
                }
            }
            Outcome::Refused(_) => {
                for (record, reply) in records.into_iter().zip(replies) {
                    let one = std::slice::from_ref(&record);
                    match self.commit_until_stored(one, shutdown).await {
                        Outcome::Stored(changed) => self.finish(changed, vec![reply]).await,
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
    ) -> Outcome {
        let mut backoff = Duration::from_millis(50);
        let mut failing_since: Option<Instant> = None;
        let mut shutdown_at: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.engine.process(records).await {
                Ok(changed) => {
                    m::commit(records.len(), started.elapsed());
                    if failing_since.is_some() {
                        tracing::warn!(records = records.len(), "store writable again; resuming");
                    }
                    return Outcome::Stored(changed);
                }
                Err(e) if e.is_transient() => {
                    m::store_error("transient");
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::error!(
                            error = %e,
                            records = records.len(),
                            "cannot write to the store; holding packets unanswered until it is back"
                        );
                    } else {
                        tracing::debug!(error = %e, "store still failing");
                    }
                }
                Err(e) => {
                    m::store_error("refused");
                    return Outcome::Refused(e);
                }
            }
            if shutdown.is_cancelled() {
                let since = *shutdown_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.config.shutdown_grace {
                    tracing::error!(
                        records = records.len(),
                        "shutting down with the store unwritable; these packets were not \
                         acknowledged and the NAS will send them again"
                    );
                    return Outcome::GaveUp;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled(), if shutdown_at.is_none() => {}
            }
            backoff = (backoff * 2).min(self.config.retry_max_backoff);
        }
    }

    async fn finish(&self, changed: Vec<Change>, tickets: Vec<Origin<A::Ticket>>) {
        let mut nas = Vec::with_capacity(tickets.len());
        for t in tickets {
            match t {
                Origin::Nas(t) => nas.push(t),
                // The requester may have given up waiting; that is fine.
                Origin::Server(tx) => {
                    let _ = tx.send(true);
                }
            }
        }
        self.acks.ack(&nas).await;
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
                let _ = tx.send(false);
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
