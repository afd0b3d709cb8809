//! The HTTP API (axum): health, readiness and Prometheus metrics. The Sessions API of
//! `shared/seeds/sessions-api-radacct.txt` is built on this router.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::sessions::{Index, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub index: Arc<Index>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The error body of the contract: `{"success": false, "message": "…"}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "success": false, "message": message })),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
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
            error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::open_sessions(state.index.len());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
