//! `GET /api/sessions`, `/count`, `/active`, `/:id`: open sessions from the index, closed
//! and all from the database, always within the caller's scope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{ListParams, Params};
use super::scope::Scope;
use super::view;
use crate::sessions::store::query::{SortKey, StatusFilter};
use crate::sessions::{Index, Session};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let p = ListParams::parse(&Params::parse(raw.as_deref()))?;
    let scope = Scope::of(&caller, &state.store).await?;
    let (data, total) = if p.status == StatusFilter::Active {
        let all = active(&state.index, &scope, &p);
        let total = all.len();
        let page: Vec<_> = all
            .iter()
            .skip(usize::try_from(p.offset()).unwrap_or(usize::MAX))
            .take(p.limit as usize)
            .map(|s| view::json(s))
            .collect();
        (page, total as i64)
    } else {
        let q = p.query(scope.filter());
        let rows = state.store.list_sessions(&q).await?;
        let total = state.store.count_sessions(&q).await?;
        (rows.iter().map(view::json).collect(), total)
    };
    Ok(Json(json!({
        "success": true,
        "data": data,
        "pagination": { "page": p.page, "limit": p.limit, "total": total },
    }))
    .into_response())
}

/// Active sessions in scope: from memory, so the dashboard never waits on the database.
pub async fn count(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let scope = Scope::of(&caller, &state.store).await?;
    let count = if scope.is_all() {
        state.index.len()
    } else {
        state
            .index
            .count_where(|s| scope.allows(&s.fields.username))
    };
    Ok(Json(json!({ "success": true, "count": count })).into_response())
}

/// The array of active sessions in scope, newest first (DESIGN.md §5, from the
/// workspaces seed). Serialised in chunks so a large index is not held twice in memory.
pub async fn active_list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let scope = Scope::of(&caller, &state.store).await?;
    let p = ListParams::parse(&Params::default())?;
    let sessions = active(&state.index, &scope, &p);
    let stream = futures_util::stream::iter(
        std::iter::once(Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from_static(b"["),
        ))
        .chain(
            sessions
                .chunks(1000)
                .enumerate()
                .map(|(n, chunk)| {
                    let mut buf = Vec::with_capacity(chunk.len() * 400);
                    for (i, s) in chunk.iter().enumerate() {
                        if n > 0 || i > 0 {
                            buf.push(b',');
                        }
                        let _ = serde_json::to_writer(&mut buf, &view::SessionView::from(&**s));
                    }
                    Ok(bytes::Bytes::from(buf))
                })
                .collect::<Vec<_>>(),
        )
        .chain(std::iter::once(Ok(bytes::Bytes::from_static(b"]")))),
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let session = find(&state, &id).await?;
    let scope = Scope::of(&caller, &state.store).await?;
    if !scope.allows(&session.fields.username) {
        return Err(ApiError::OutOfScope);
    }
    Ok(Json(json!({ "success": true, "data": view::json(&session) })).into_response())
}

/// A session by `radacctid`: the index for open ones, else the database. A path that is
/// not a number cannot name a session: 404 like any unknown id.
pub async fn find(state: &AppState, id: &str) -> Result<Arc<Session>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::SessionNotFound)?;
    if let Some(s) = state.index.get_by_id(id) {
        return Ok(s);
    }
    state
        .store
        .session_by_id(id)
        .await?
        .map(Arc::new)
        .ok_or(ApiError::SessionNotFound)
}

/// Open sessions in scope matching the filters, sorted as asked.
pub fn active(index: &Index, scope: &Scope, p: &ListParams) -> Vec<Arc<Session>> {
    let needle = p.search.as_deref().map(str::to_lowercase);
    let mut out = index.collect_where(|s| {
        scope.allows(&s.fields.username)
            && p.nas_id.is_none_or(|n| s.nas_id == Some(n))
            && p.from.is_none_or(|f| s.start >= f)
            && p.to.is_none_or(|t| s.start <= t)
            && needle.as_deref().is_none_or(|n| matches_search(s, n))
    });
    let key = |s: &Session| match p.sort {
        SortKey::StartTime => s.start,
        SortKey::InputOctets => s.input_octets,
        SortKey::OutputOctets => s.output_octets,
        SortKey::SessionTime => s.session_time,
    };
    if p.descending {
        out.sort_unstable_by_key(|s| std::cmp::Reverse((key(s), s.radacctid)));
    } else {
        out.sort_unstable_by_key(|s| (key(s), s.radacctid));
    }
    out
}

/// Case-insensitive substring match, like the SQL `ILIKE '%…%'` used for closed sessions.
fn matches_search(s: &Session, needle: &str) -> bool {
    let f = &s.fields;
    f.username.to_lowercase().contains(needle)
        || f.framedipaddress
            .is_some_and(|ip| ip.to_string().contains(needle))
        || f.callingstationid
            .as_deref()
            .is_some_and(|c| c.to_lowercase().contains(needle))
}
