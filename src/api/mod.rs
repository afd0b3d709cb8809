//! The HTTP API (axum): the Sessions API of `shared/seeds/sessions-api-radacct.txt`, the
//! additions of DESIGN.md §5, admin endpoints for subscribers and resellers, health,
//! readiness and Prometheus metrics. Every error is `{"success": false, "message": …}`.

pub mod admin;
pub mod auth;
pub mod disconnect;
pub mod error;
pub mod export;
pub mod openapi;
pub mod params;
pub mod ratelimit;
pub mod scope;
pub mod sessions;
pub mod stats;
pub mod view;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;

use crate::sessions::engine::Change;
use crate::sessions::{Index, Store};

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub index: Arc<Index>,
    pub metrics: PrometheusHandle,
    /// `None` when no JWT key is configured: every `/api` request is then refused.
    pub verifier: Option<Arc<auth::Verifier>>,
    pub limiter: Arc<ratelimit::RateLimiter>,
    /// Committed session changes, for the live stream.
    pub changes: broadcast::Sender<Arc<Change>>,
    pub limits: Limits,
    pub disconnector: Arc<crate::coa::Disconnector>,
    /// Writes the stop of a confirmed disconnect through the writer.
    pub closer: Arc<dyn crate::sessions::writer::Closer>,
    /// Cancelled at shutdown, after the writer has drained, to end live streams.
    pub streams: tokio_util::sync::CancellationToken,
    /// Live-stream connections, so shutdown can wait for their goodbyes.
    pub stream_tasks: tokio_util::task::TaskTracker,
    /// One permit per CSV export allowed to stream at once (`http.max_concurrent_exports`).
    pub export_slots: Arc<tokio::sync::Semaphore>,
}

/// Tunables of the API that tests shrink.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most rows one CSV export may return (the contract's 500,000).
    pub export_max_rows: i64,
    /// How long a WebSocket client has to send its `auth` message.
    pub ws_auth_timeout: Duration,
    /// Events a WebSocket client may fall behind before it is dropped.
    pub ws_max_lag: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            export_max_rows: 500_000,
            ws_auth_timeout: Duration::from_secs(10),
            ws_max_lag: 1024,
        }
    }
}

/// A router with only `/metrics`, for `http.metrics_listen` (a separate scrape port).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/sessions", get(sessions::list))
        .route("/api/sessions/count", get(sessions::count))
        .route("/api/sessions/active", get(sessions::active_list))
        .route("/api/sessions/export", get(export::export))
        .route("/api/sessions/stats", get(stats::stats))
        .route("/api/sessions/ws", get(ws::live))
        .route(
            "/api/sessions/{id}",
            get(sessions::get).delete(disconnect::disconnect),
        )
        .route(
            "/api/sessions/{id}/disconnect",
            post(disconnect::disconnect),
        )
        .route("/api/sessions/{id}/logs", get(stats::logs))
        .route("/api/subscribers", get(admin::list_subscribers))
        .route("/api/subscribers/import", post(admin::import_subscribers))
        .route(
            "/api/subscribers/{username}",
            put(admin::put_subscriber).get(admin::get_subscriber),
        )
        .route("/api/resellers", get(admin::list_resellers))
        .route("/api/resellers/import", post(admin::import_resellers))
        .route("/api/resellers/{id}", put(admin::put_reseller))
        .route("/api/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::middleware,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(track))
        .with_state(state)
}

async fn not_found() -> Response {
    error::body(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error::body(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Count and time every request by route template (never the raw path: ids and usernames
/// must not become labels) and status.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::api_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when the store answers: a load balancer should not send panel traffic to a node
/// whose database is gone.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({
            "status": "ready",
            "open_sessions": state.index.len(),
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: store unavailable");
            error::body(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// The Prometheus scrape. The gauges that are cheap to read exactly are set here, at
/// scrape time, rather than on every packet: open sessions, the writer queue depth, and
/// open sessions per NAS. The per-NAS family is rendered here and appended (see
/// [`crate::metrics::render_open_sessions_by_nas`]), so it always shows exactly the NASes
/// configured now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::open_sessions(state.index.len());
    if let Some(queued) = state.closer.queued() {
        crate::metrics::writer_queue_depth(queued);
    }
    let per_nas = match state.store.nas_list().await {
        Ok(rows) => {
            let names: Vec<(i64, String)> = rows
                .iter()
                .map(|r| (r.id, crate::metrics::nas_label(&r.config.name, r.id)))
                .collect();
            Some(open_sessions_by_nas(
                &names,
                state.index.snapshot().iter().map(|s| s.nas_id),
            ))
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read NAS names for the per-NAS gauge");
            None
        }
    };
    let mut body = state.metrics.render();
    if let Some(per_nas) = per_nas {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(&crate::metrics::render_open_sessions_by_nas(&per_nas));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Open sessions per `nas` label: every configured NAS (`names`: id and label) appears,
/// with 0 if it has none; NASes sharing a label are summed; sessions of a NAS that is no
/// longer configured (or of the default client) count as `unknown`.
fn open_sessions_by_nas(
    names: &[(i64, String)],
    sessions: impl Iterator<Item = Option<i64>>,
) -> std::collections::BTreeMap<String, usize> {
    let mut per_id: std::collections::HashMap<Option<i64>, usize> =
        std::collections::HashMap::new();
    for nas_id in sessions {
        *per_id.entry(nas_id).or_default() += 1;
    }
    let mut out = std::collections::BTreeMap::new();
    for (id, label) in names {
        *out.entry(label.clone()).or_default() += per_id.remove(&Some(*id)).unwrap_or(0);
    }
    *out.entry("unknown".to_owned()).or_default() += per_id.values().sum::<usize>();
    out
}

#[cfg(test)]
mod open_sessions_by_nas_tests {
    use super::open_sessions_by_nas;

    #[test]
    fn per_nas_counts_sum_shared_names_and_show_only_configured_nases() {
        let names = [
            (1, "bng1".to_owned()),
            (2, "bng1".to_owned()),
            (3, "idle".to_owned()),
        ];
        let sessions = [Some(1), Some(2), Some(2), Some(9), None, Some(1)];
        let counts = open_sessions_by_nas(&names, sessions.into_iter());
        let counts: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(counts, [("bng1", 4), ("idle", 0), ("unknown", 2)]);
    }
}
