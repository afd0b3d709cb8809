//! `GET /api/sessions/ws`: the live stream of committed session changes in the caller's
//! scope (DESIGN.md §5), over WebSocket. Every message is one JSON text frame.
//!
//! # Authentication
//!
//! - With an `Authorization: Bearer <jwt>` header on the upgrade request, the token is
//!   checked before upgrading, exactly as on every other endpoint: a missing, invalid or
//!   expired token is a plain `401`, a token without `sessions.view` a plain `403`
//!   `sessions.view denied`, both with the contract's `{"success": false, "message": …}`
//!   body, and no WebSocket is opened.
//! - Without the header (browsers cannot set it on a WebSocket), the connection is upgraded
//!   and the client's first message must be `{"type":"auth","token":"<jwt>"}`, within
//!   `limits.ws_auth_timeout` (10 s by default). Otherwise the server sends
//!   `{"type":"error","message":…}` and closes (code 1008): `auth timeout`, `auth required`
//!   (the first message was not an `auth` message), `missing token`, `invalid token`,
//!   `token expired`, `sessions.view denied`, `authentication is not configured`, or
//!   `database unavailable` when the reseller scope cannot be read.
//!
//! Both ways, the first message the server sends on a new stream is
//! `{"type":"auth","success":true}`. Every change committed after it is delivered.
//!
//! # Events
//!
//! `{"type":"event","event":"started"|"updated"|"stopped","session":{…}}`, the session
//! object being the one of `GET /api/sessions/:id`. Events come in commit order, sent
//! after the NAS's packet was answered. Only sessions in the caller's scope
//! ([`Scope`], resolved at authentication): a reseller's subscriber list is read again
//! every 30 s, so a subscriber moved into or out of its tree shows up within that time.
//!
//! # The end of a stream
//!
//! The server sends `{"type":"disconnect","reason":…}` and a close frame:
//! - `too slow` (close code 1008): the client fell more than `limits.ws_max_lag` events
//!   behind, the broadcast it reads from overran it, or one write to it stayed blocked for
//!   5 s. What was queued for it is dropped, and the message is best effort (a client that
//!   reads nothing will not see it; it finds the connection closed). Ingest never waits
//!   for a WebSocket client: the writer's broadcast never blocks, and each client holds
//!   at most `ws_max_lag` queued messages, so a client that stops reading is cut off
//!   instead of slowing accounting or growing memory.
//! - `server shutting down` (1001): the server stopped producing changes (every sender of
//!   the change broadcast is gone). Events committed before are written first.
//! - `token expired` (1008): the token's `exp` has passed; authenticate again. Events
//!   committed before are written first.
//!
//! # Client messages
//!
//! Pings are answered with pongs (by the WebSocket layer); a close ends the stream. Any
//! other text message that is a JSON object with a string `type` is ignored (room for
//! future requests); anything else gets `{"type":"error","message":"unknown message"}`
//! and the stream goes on. The server pings every 30 s so that idle streams survive
//! proxies that close silent connections.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

use super::AppState;
use super::auth::{Caller, SESSIONS_VIEW, Verifier, bearer, now_secs};
use super::error::{self, ApiError};
use super::scope::Scope;
use super::view::SessionView;
use crate::sessions::Store;
use crate::sessions::engine::Change;

/// How often a reseller's subtree is read again.
const SCOPE_REFRESH: Duration = Duration::from_secs(30);
/// How long one write to the client may stay blocked before the client counts as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last message and the close get: the client may be the reason we close.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);
/// Server pings keep idle streams open through proxies (nginx closes after 60 s).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Queued messages written before one flush: one syscall for a burst, not one each.
const WRITE_BATCH: usize = 64;
/// Client messages are small; refusing large ones bounds what a client can make us hold.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// What a connection needs after the upgrade. Deliberately no [`AppState`]: it holds a
/// `Sender` of the changes, and the stream learns of shutdown by every sender being gone.
struct Context {
    store: Store,
    verifier: Option<Arc<Verifier>>,
    changes: broadcast::WeakSender<Arc<Change>>,
    auth_timeout: Duration,
    max_lag: usize,
    /// Cancelled by the server's shutdown once the writer has drained: the HTTP server's
    /// graceful shutdown does not cover upgraded connections, so streams end on this.
    shutdown: tokio_util::sync::CancellationToken,
}

/// A caller allowed to watch, and what it may see.
struct Watcher {
    caller: Caller,
    scope: Scope,
}

pub async fn live(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    // Same answers as every other endpoint when the header is there: a panel behind a
    // server can read the status, and no socket is opened for a caller we would refuse.
    let watcher = if parts.headers.contains_key(AUTHORIZATION) {
        let token = bearer(&parts).ok_or(ApiError::Unauthorized("missing token"))?;
        Some(admit(&state.store, state.verifier.as_deref(), token).await?)
    } else {
        None
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return Ok(error::body(
                rejection.status(),
                "websocket upgrade required",
            ));
        }
    };
    let context = Context {
        store: state.store.clone(),
        verifier: state.verifier.clone(),
        changes: state.changes.downgrade(),
        auth_timeout: state.limits.ws_auth_timeout,
        max_lag: state.limits.ws_max_lag.max(1),
        shutdown: state.streams.clone(),
    };
    let tracker = state.stream_tasks.clone();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| tracker.track_future(connection(socket, context, watcher)))
        .into_response())
}

/// Verify a token, require `sessions.view` and resolve the scope.
async fn admit(
    store: &Store,
    verifier: Option<&Verifier>,
    token: &str,
) -> Result<Watcher, ApiError> {
    let verifier = verifier.ok_or(ApiError::Unauthorized("authentication is not configured"))?;
    let caller = Caller {
        claims: verifier.verify(token)?,
    };
    caller.require(SESSIONS_VIEW)?;
    let scope = Scope::of(&caller, store).await?;
    Ok(Watcher { caller, scope })
}

type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

async fn connection(socket: WebSocket, context: Context, watcher: Option<Watcher>) {
    let (mut sink, mut source) = socket.split();
    let watcher = match watcher {
        Some(w) => w,
        None => match first_message(&mut source, &context).await {
            Ok(w) => w,
            Err(Refusal::Gone) => return,
            Err(Refusal::Error(message)) => {
                tracing::debug!(%message, "live stream: authentication refused");
                let last = vec![error_message(&message)];
                farewell(&mut sink, last, close_code::POLICY, "", FAREWELL_TIMEOUT).await;
                return;
            }
        },
    };
    // Subscribe before saying yes, so that nothing committed after the client reads the
    // `auth` answer is missed; and only now, so a slow authentication cannot lag us.
    let Some(changes) = context.changes.upgrade().map(|tx| tx.subscribe()) else {
        let last = vec![disconnect_message(SHUTTING_DOWN.reason)];
        let d = SHUTTING_DOWN;
        farewell(&mut sink, last, d.code, d.reason, FAREWELL_TIMEOUT).await;
        return;
    };
    let welcome = text(&serde_json::json!({ "type": "auth", "success": true }));
    if !matches!(timeout(SEND_TIMEOUT, sink.send(welcome)).await, Ok(Ok(()))) {
        return;
    }
    tracing::debug!(sub = %watcher.caller.claims.sub, "live stream opened");

    let (queue_tx, queue_rx) = mpsc::channel(context.max_lag);
    let (end_tx, end_rx) = oneshot::channel();
    let (scope_tx, scope_rx) = watch::channel(watcher.scope.clone());
    let exp = watcher.caller.claims.exp;
    tokio::join!(
        async move {
            let end = read_loop(source, changes, queue_tx, scope_rx, exp, context.shutdown).await;
            // The writer may already be gone (it gave up on the client); nothing to tell.
            let _ = end_tx.send(end);
        },
        write_loop(sink, queue_rx, end_rx),
        refresh_scope(scope_tx, watcher, context.store),
    );
}

enum Refusal {
    /// The client went away: nobody to tell.
    Gone,
    Error(String),
}

/// What every client message must be: a JSON object with a string `type`.
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    /// Only in `auth`; any JSON here, so that a token of the wrong type is an invalid
    /// token rather than a malformed message.
    #[serde(default)]
    token: serde_json::Value,
}

/// Wait for `{"type":"auth","token":…}` and admit its caller.
async fn first_message(source: &mut Source, context: &Context) -> Result<Watcher, Refusal> {
    let deadline = Instant::now() + context.auth_timeout;
    let token = loop {
        let next = match tokio::time::timeout_at(deadline, source.next()).await {
            Ok(next) => next,
            Err(_) => return Err(Refusal::Error("auth timeout".into())),
        };
        match next {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Refusal::Gone),
            // Pongs are sent by the WebSocket layer; a ping is not a first message.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => return Err(Refusal::Error("auth required".into())),
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientMessage>(&t) {
                Ok(m) if m.kind == "auth" => break m.token,
                _ => return Err(Refusal::Error("auth required".into())),
            },
        }
    };
    let token = match token {
        serde_json::Value::Null => "",
        serde_json::Value::String(ref t) => t.as_str(),
        _ => return Err(Refusal::Error("invalid token".into())),
    };
    if token.is_empty() {
        return Err(Refusal::Error("missing token".into()));
    }
    match admit(&context.store, context.verifier.as_deref(), token).await {
        Ok(watcher) => Ok(watcher),
        Err(e) => {
            if let ApiError::Internal(detail) = &e {
                tracing::error!(error = %detail, "live stream: cannot resolve the caller's scope");
            }
            Err(Refusal::Error(e.to_string()))
        }
    }
}

/// Why the server ends a stream, as told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Disconnect {
    reason: &'static str,
    code: u16,
}

impl Disconnect {
    /// Whether what is already queued is still written before the disconnect.
    fn flushes(self) -> bool {
        self != TOO_SLOW
    }
}

const TOO_SLOW: Disconnect = Disconnect {
    reason: "too slow",
    code: close_code::POLICY,
};
const SHUTTING_DOWN: Disconnect = Disconnect {
    reason: "server shutting down",
    code: close_code::AWAY,
};
const TOKEN_EXPIRED: Disconnect = Disconnect {
    reason: "token expired",
    code: close_code::POLICY,
};

/// How the reader ended, for the writer.
enum End {
    /// Closed by the client, or the connection is gone: just close.
    Client,
    Server(Disconnect),
}

/// Read the client and the changes; queue what the client should get. Never blocks on
/// the client: a full queue means it is too slow.
async fn read_loop(
    mut source: Source,
    mut changes: broadcast::Receiver<Arc<Change>>,
    queue: mpsc::Sender<Message>,
    scope: watch::Receiver<Scope>,
    exp: u64,
    shutdown: tokio_util::sync::CancellationToken,
) -> End {
    let mut expired = std::pin::pin!(expiry(exp));
    let push = |m: Message| match queue.try_send(m) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => Some(End::Server(TOO_SLOW)),
        // The writer gave up on the client and has already said why.
        Err(mpsc::error::TrySendError::Closed(_)) => Some(End::Client),
    };
    loop {
        // Client messages first, so that a firehose of changes cannot starve a close.
        let outcome = tokio::select! {
            biased;
            _ = queue.closed() => Some(End::Client),
            _ = shutdown.cancelled() => Some(End::Server(SHUTTING_DOWN)),
            _ = &mut expired => Some(End::Server(TOKEN_EXPIRED)),
            m = source.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Some(End::Client),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Text(t))) if is_well_formed(&t) => None,
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    push(error_message("unknown message"))
                }
            },
            change = changes.recv() => match change {
                Ok(change) => {
                    if scope.borrow().allows(&change.session.fields.username) {
                        event_message(&change).and_then(push)
                    } else {
                        None
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "live stream client lagged behind the broadcast");
                    Some(End::Server(TOO_SLOW))
                }
                Err(broadcast::error::RecvError::Closed) => Some(End::Server(SHUTTING_DOWN)),
            },
        };
        if let Some(end) = outcome {
            match &end {
                End::Server(TOO_SLOW) => {
                    tracing::info!("live stream client too slow; disconnected");
                }
                End::Server(d) => tracing::debug!(reason = d.reason, "live stream ended"),
                End::Client => tracing::debug!("live stream closed"),
            }
            // Shutdown or expiry can win the race against changes already broadcast but
            // not yet received here: those were committed before, so they still go out.
            if let End::Server(d) = end
                && d.flushes()
            {
                while let Ok(change) = changes.try_recv() {
                    if scope.borrow().allows(&change.session.fields.username)
                        && let Some(stop) = event_message(&change).and_then(push)
                    {
                        return stop;
                    }
                }
            }
            return end;
        }
    }
}

/// Resolves when a token with this `exp` stops being valid.
async fn expiry(exp: u64) {
    // The same leeway the HTTP verifier allows, so a token accepted for the upgrade is not
    // cut off the moment the stream opens.
    let exp = exp.saturating_add(crate::api::auth::LEEWAY_SECS);
    let left = Duration::from_secs(exp.saturating_sub(now_secs()));
    match Instant::now().checked_add(left) {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Any JSON object with a string `type` is a message we may simply not know yet.
fn is_well_formed(text: &str) -> bool {
    serde_json::from_str::<ClientMessage>(text).is_ok()
}

/// Write the queue to the client in batches until the reader ends the stream or the client
/// cannot take a write within [`SEND_TIMEOUT`].
async fn write_loop(
    mut sink: Sink,
    mut queue: mpsc::Receiver<Message>,
    end: oneshot::Receiver<End>,
) {
    let mut end = end;
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let end = loop {
        tokio::select! {
            biased;
            end = &mut end => break end.unwrap_or(End::Client),
            n = queue.recv_many(&mut batch, WRITE_BATCH) => if n == 0 {
                // The reader is done; its verdict follows (or it is gone: the client).
                break (&mut end).await.unwrap_or(End::Client);
            },
            _ = keepalive.tick() => batch.push(Message::Ping(Default::default())),
        }
        let write = timeout(SEND_TIMEOUT, write_batch(&mut sink, &mut batch));
        tokio::pin!(write);
        let written = tokio::select! {
            biased;
            // A client too slow to read gets no more of what it was sent; but a stream
            // ending for another reason finishes the write in hand first.
            verdict = &mut end => match verdict.unwrap_or(End::Client) {
                End::Server(d) if d.flushes() => match (&mut write).await {
                    Ok(Ok(())) => break End::Server(d),
                    Ok(Err(_)) => return,
                    Err(_) => break End::Server(TOO_SLOW),
                },
                e => break e,
            },
            r = &mut write => r,
        };
        match written {
            Ok(Ok(())) => keepalive.reset(),
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("live stream client blocked a write too long; disconnected");
                break End::Server(TOO_SLOW);
            }
        }
    };
    queue.close();
    match end {
        End::Client => {
            let _ = timeout(FAREWELL_TIMEOUT, sink.close()).await;
        }
        // Events committed before shutdown or expiry are still the client's to have.
        End::Server(d) if d.flushes() => {
            let mut last = Vec::with_capacity(queue.len() + 1);
            while let Ok(m) = queue.try_recv() {
                last.push(m);
            }
            last.push(disconnect_message(d.reason));
            farewell(&mut sink, last, d.code, d.reason, SEND_TIMEOUT).await;
        }
        // What is still queued is dropped: the client was not keeping up with it.
        End::Server(d) => {
            let last = vec![disconnect_message(d.reason)];
            farewell(&mut sink, last, d.code, d.reason, FAREWELL_TIMEOUT).await;
        }
    }
}

async fn write_batch(sink: &mut Sink, batch: &mut Vec<Message>) -> Result<(), axum::Error> {
    for m in batch.drain(..) {
        sink.feed(m).await?;
    }
    sink.flush().await
}

/// The last messages and a close frame, best effort: the client may be why we close.
async fn farewell(
    sink: &mut Sink,
    last: Vec<Message>,
    code: u16,
    reason: &'static str,
    within: Duration,
) {
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = timeout(within, async {
        for m in last {
            sink.feed(m).await?;
        }
        sink.send(close).await
    })
    .await;
}

/// Keep a reseller's scope current; other scopes cannot change while the token is valid.
async fn refresh_scope(scope: watch::Sender<Scope>, watcher: Watcher, store: Store) {
    if !matches!(watcher.scope, Scope::Resellers { .. }) {
        return;
    }
    let mut tick = tokio::time::interval_at(Instant::now() + SCOPE_REFRESH, SCOPE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = scope.closed() => return,
            _ = tick.tick() => {}
        }
        match Scope::of(&watcher.caller, &store).await {
            Ok(fresh) => {
                scope.send_replace(fresh);
            }
            // The last known tree is the best answer while the database is away.
            Err(e) => tracing::debug!(error = %e, "live stream: cannot refresh the scope"),
        }
    }
}

#[derive(Serialize)]
struct EventMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    session: SessionView<'a>,
}

fn event_message(change: &Change) -> Option<Message> {
    let event = EventMessage {
        kind: "event",
        event: change.kind.as_str(),
        session: SessionView::from(&change.session),
    };
    match serde_json::to_string(&event) {
        Ok(s) => Some(Message::Text(s.into())),
        Err(e) => {
            // A session is plain data; failing here is a bug, not an operator's problem.
            debug_assert!(false, "live stream: cannot serialise a session: {e}");
            tracing::warn!(error = %e, "live stream: cannot serialise a session; event skipped");
            None
        }
    }
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

fn error_message(message: &str) -> Message {
    text(&serde_json::json!({ "type": "error", "message": message }))
}

fn disconnect_message(reason: &str) -> Message {
    text(&serde_json::json!({ "type": "disconnect", "reason": reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_with_a_type_are_well_formed() {
        assert!(is_well_formed(r#"{"type":"auth","token":"x"}"#));
        assert!(is_well_formed(r#"{"type":"subscribe","filter":{}}"#));
        assert!(!is_well_formed("hello"));
        assert!(!is_well_formed(r#"{"kind":"auth"}"#));
        assert!(!is_well_formed(r#"{"type":42}"#));
        assert!(is_well_formed(r#"{"type":"auth","token":42}"#));
        assert!(!is_well_formed("[]"));
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let v = |m: Message| -> serde_json::Value {
            let Message::Text(t) = m else {
                panic!("not text")
            };
            serde_json::from_str(&t).unwrap()
        };
        assert_eq!(
            v(error_message("unknown message")),
            serde_json::json!({ "type": "error", "message": "unknown message" })
        );
        assert_eq!(
            v(disconnect_message(TOO_SLOW.reason)),
            serde_json::json!({ "type": "disconnect", "reason": "too slow" })
        );
    }

    #[tokio::test]
    async fn a_far_future_expiry_never_fires() {
        let fired = timeout(Duration::from_millis(20), expiry(u64::MAX)).await;
        assert!(fired.is_err());
    }
}
