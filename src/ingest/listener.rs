//! The UDP accounting listener: receive, identify the NAS, frame, verify, de-duplicate,
//! extract, and queue for the writer. A bad packet is counted and skipped; only cancelling
//! the listener ends the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::clients::Clients;
use super::dedup::{Dedup, DedupKey, Verdict};
use super::request::{Extractor, Skip};
use crate::metrics as m;
use crate::radius::Dictionary;
use crate::radius::packet::{Code, Frame};
use crate::sessions::writer::{Acknowledge, Origin, Pending};

/// What the writer needs to answer one committed request.
#[derive(Debug)]
pub struct Ticket {
    pub to: SocketAddr,
    pub reply: Arc<[u8]>,
    pub dedup: DedupKey,
}

/// Answers committed requests on the listener's socket and records the answers for
/// retransmissions. The answers go out from a task of their own ([`Responder::spawn`]), so
/// that the writer begins its next commit while the last batch's answers are sent: on
/// loopback a `sendto` also delivers the datagram to the receiver, and a hundred of them
/// per batch were a millisecond of the writer's serial path. Nothing is answered before
/// its commit: the writer hands the tickets over only after it.
pub struct Responder {
    answers: mpsc::Sender<Vec<Ticket>>,
    dedup: Arc<Dedup>,
}

/// Committed batches whose answers may wait for the sending task before the writer waits
/// too (back-pressure instead of an unbounded queue).
const ANSWER_BATCHES: usize = 64;

impl Responder {
    /// The responder and its sending task, which ends once the responder is dropped (the
    /// writer has stopped) and every answer handed to it is sent.
    pub fn spawn(
        socket: Arc<UdpSocket>,
        dedup: Arc<Dedup>,
    ) -> (Responder, tokio::task::JoinHandle<()>) {
        let (answers, mut rx) = mpsc::channel::<Vec<Ticket>>(ANSWER_BATCHES);
        let marks = Arc::clone(&dedup);
        let task = tokio::spawn(async move {
            while let Some(tickets) = rx.recv().await {
                let now = Instant::now();
                for t in tickets {
                    // Mark first, so that a retransmission racing with the send gets this
                    // answer.
                    marks.answered(t.dedup, Arc::clone(&t.reply), now);
                    send(&socket, &t.reply, t.to).await;
                }
            }
        });
        (Responder { answers, dedup }, task)
    }
}

impl Acknowledge for Responder {
    type Ticket = Ticket;

    async fn ack(&self, tickets: Vec<Ticket>) {
        if tickets.is_empty() {
            return;
        }
        if let Err(refused) = self.answers.send(tickets).await {
            // The sending task is gone only when the runtime is shutting down: the records
            // are committed, so the NAS's retransmissions will find them and be answered.
            for t in refused.0 {
                self.dedup.forget(&t.dedup);
            }
        }
    }

    fn abandon(&self, ticket: &Ticket) {
        self.dedup.forget(&ticket.dedup);
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    match socket.send_to(bytes, to).await {
        Ok(_) => m::response_sent(),
        Err(e) => {
            m::response_send_failed();
            tracing::debug!(%to, error = %e, "cannot send a response");
        }
    }
}

pub struct Listener {
    pub socket: Arc<UdpSocket>,
    pub clients: Arc<Clients>,
    pub dedup: Arc<Dedup>,
    pub dictionary: Arc<Dictionary>,
    pub skew_secs: i64,
    pub queue: mpsc::Sender<Pending<Origin<Ticket>>>,
}

impl Listener {
    /// Receive until `shutdown`; then return, dropping the queue sender so that the writer
    /// drains what was accepted and stops.
    pub async fn run(self, shutdown: CancellationToken) {
        // Larger than any RADIUS packet, so an oversized datagram is seen whole and
        // rejected by its length rather than silently truncated.
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = self.socket.recv_from(&mut buf) => r,
            };
            match received {
                Ok((n, source)) => self.handle(&buf[..n], source).await,
                // ICMP errors from earlier sends surface here on some systems; the socket is
                // still fine.
                Err(e) => tracing::debug!(error = %e, "recv_from failed; continuing"),
            }
        }
        tracing::info!("accounting listener stopped");
    }

    async fn handle(&self, datagram: &[u8], source: SocketAddr) {
        let Some(client) = self.clients.get(source.ip()) else {
            m::dropped("unknown_nas");
            tracing::debug!(%source, "packet from an unknown NAS dropped");
            return;
        };
        let frame = match Frame::parse(datagram) {
            Ok(f) => f,
            Err(e) => {
                m::dropped(e.reason());
                tracing::debug!(%source, error = %e, "malformed packet dropped");
                return;
            }
        };
        match frame.code() {
            Code::AccountingRequest => self.accounting(frame, source, &client).await,
            Code::StatusServer => self.status_server(frame, source, &client).await,
            _ => {
                m::received("other");
                m::dropped("unsupported_code");
                tracing::debug!(%source, code = frame.raw_code(), "not an accounting packet; dropped");
            }
        }
    }

    async fn accounting(
        &self,
        frame: Frame<'_>,
        source: SocketAddr,
        client: &super::clients::Client,
    ) {
        if !frame.accounting_request_is_authentic(&client.secret) {
            m::received("accounting");
            m::dropped("bad_authenticator");
            tracing::debug!(%source, nas = %client.name, "bad Request Authenticator (wrong secret?)");
            return;
        }
        if frame.message_authenticator_ok(&client.secret) == Some(false) {
            m::received("accounting");
            m::dropped("bad_message_authenticator");
            tracing::debug!(%source, nas = %client.name, "bad Message-Authenticator");
            return;
        }
        let dedup = DedupKey {
            source,
            identifier: frame.identifier(),
            authenticator: frame.authenticator(),
        };
        match self.dedup.check(dedup, Instant::now()) {
            Verdict::New => {}
            Verdict::InFlight => {
                m::received("accounting");
                m::duplicate("in_flight");
                return;
            }
            Verdict::Answered(reply) => {
                m::received("accounting");
                m::duplicate("resent");
                send(&self.socket, &reply, source).await;
                return;
            }
        }
        let reply: Arc<[u8]> = match frame.accounting_response(&client.secret) {
            Ok(r) => r.into(),
            Err(e) => {
                m::received("accounting");
                m::dropped(e.reason());
                self.dedup.forget(&dedup);
                return;
            }
        };
        let extractor = Extractor {
            dictionary: &self.dictionary,
            skew_secs: self.skew_secs,
        };
        let arrival = chrono::Utc::now().timestamp();
        // A socket bound to `[::]` sees IPv4 NASes as ::ffff:a.b.c.d; the session key and
        // `nasipaddress` use the IPv4 form, as FreeRADIUS does.
        let source_ip = source.ip().to_canonical();
        let extracted = match extractor.extract(&frame, source_ip, client.nas_id, arrival) {
            Ok(e) => e,
            Err(Skip::MissingStatusType) => {
                m::received("accounting");
                m::dropped("missing_status_type");
                self.dedup.forget(&dedup);
                return;
            }
            Err(Skip::Unrecorded(status)) => {
                m::received("unrecorded");
                tracing::debug!(%source, status, "Acct-Status-Type not recorded; acknowledged");
                self.dedup
                    .answered(dedup, Arc::clone(&reply), Instant::now());
                send(&self.socket, &reply, source).await;
                return;
            }
        };
        m::received(extracted.record.status.name());
        if extracted.clock_skewed {
            m::clock_skew(&client.label);
        }
        let pending = Pending {
            record: extracted.record,
            ticket: Origin::Nas(Ticket {
                to: source,
                reply,
                dedup,
            }),
        };
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Shed load by not answering: the NAS retransmits later.
                m::dropped("queue_full");
                self.dedup.forget(&dedup);
            }
            Err(TrySendError::Closed(_)) => {
                m::dropped("shutting_down");
                self.dedup.forget(&dedup);
            }
        }
    }

    /// RFC 5997: Status-Server on the accounting port is answered with an
    /// Accounting-Response; it must carry a valid Message-Authenticator.
    async fn status_server(
        &self,
        frame: Frame<'_>,
        source: SocketAddr,
        client: &super::clients::Client,
    ) {
        m::received("status_server");
        if frame.message_authenticator_ok(&client.secret) != Some(true) {
            m::dropped("bad_message_authenticator");
            return;
        }
        match frame.accounting_response(&client.secret) {
            Ok(reply) => {
                m::status_server();
                send(&self.socket, &reply, source).await;
            }
            Err(e) => m::dropped(e.reason()),
        }
    }
}
