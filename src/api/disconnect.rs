//! `POST /api/sessions/:id/disconnect` and its alias `DELETE /api/sessions/:id`.
//!
//! Disconnect-Request to the NAS (RFC 5176), RouterOS API as fallback, 503 `NAS unreachable`
//! when both fail. On a confirmation radacctd writes the stop itself at once (Admin-Reset,
//! last known counters) through the writer — inside the shared attempt, see
//! `coa::Disconnector` — so the index, the count and the live stream show it by the time
//! the response is sent; the NAS's own Stop later completes the row. Idempotent: a session
//! already closed answers `already_closed`. Every attempt goes to the audit log.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::{Caller, SUBSCRIBERS_DISCONNECT};
use super::error::ApiError;
use super::params::path_segment;
use super::scope::Scope;
use super::sessions::find;
use crate::coa::Method;
use crate::sessions::store::audit::AuditEntry;

pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(SUBSCRIBERS_DISCONNECT)?;
    // Percent-encoded bytes that are not UTF-8 cannot name a session either.
    let id = path_segment(id, ApiError::SessionNotFound)?;
    let session = find(&state, &id).await?;
    let scope = Scope::of(&caller, &state.store).await?;
    if !scope.allows(&session.fields.username) {
        return Err(ApiError::OutOfScope);
    }
    let mut entry = AuditEntry {
        actor: caller.actor(),
        actor_role: format!("{:?}", caller.claims.role).to_lowercase(),
        action: "disconnect".into(),
        radacctid: Some(session.radacctid),
        username: Some(session.fields.username.to_string()),
        nas_id: session.nas_id,
        nasipaddress: session.fields.nasipaddress.map(|ip| ip.to_string()),
        ..AuditEntry::default()
    };
    if !session.is_open() {
        entry.result = "already_closed".into();
        audit(&state, &entry).await;
        crate::metrics::disconnect("none", "already_closed");
        return Ok(already_closed());
    }

    let (attempt, joined) = state.disconnector.disconnect(&session).await;
    entry.method = Some(attempt.tried.to_owned());
    entry.error_cause = attempt.error_cause.clone();
    entry.rtt_ms = Some(attempt.rtt.as_millis().min(i64::MAX as u128) as i64);
    entry.detail = Some(if joined {
        format!("joined a disconnect already under way: {}", attempt.detail)
    } else {
        attempt.detail.clone()
    });
    if let Some((nas_id, ip)) = attempt.nas {
        // 0: the built-in localhost client, which has no `nas` row.
        entry.nas_id = (nas_id > 0).then_some(nas_id);
        entry.nasipaddress = Some(ip.to_string());
    }
    match attempt.method {
        Method::Coa | Method::Api => {
            entry.result = if attempt.method == Method::Coa {
                "coa_ack".into()
            } else {
                "api_removed".into()
            };
            audit(&state, &entry).await;
            Ok(Json(json!({
                "success": true,
                "method": attempt.method.as_str(),
                "message": "disconnect request sent",
            }))
            .into_response())
        }
        Method::Unreachable => {
            entry.result = if attempt.tried == "none" {
                "no_nas".into()
            } else {
                "failed".into()
            };
            audit(&state, &entry).await;
            // The session may have ended meanwhile (the NAS's Stop arrived): that is the
            // idempotent answer, not an error.
            if state.index.get_by_id(session.radacctid).is_none() {
                crate::metrics::disconnect("none", "already_closed");
                return Ok(already_closed());
            }
            Err(ApiError::Unavailable("NAS unreachable"))
        }
    }
}

fn already_closed() -> Response {
    Json(json!({
        "success": true,
        "method": "already_closed",
        "message": "session already closed",
    }))
    .into_response()
}

/// The audit log must not make a disconnect fail; a failure to write it is an ERROR an
/// operator should see.
async fn audit(state: &AppState, entry: &AuditEntry) {
    if let Err(e) = state.store.audit(entry).await {
        tracing::error!(error = %e, radacctid = ?entry.radacctid, "cannot write the audit log");
    }
}
