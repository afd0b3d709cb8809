//! `GET /api/sessions`, `/count`, `/active`, `/:id`: open sessions from the index, closed
//! and all from the database, always within the caller's scope.

use std::cmp::Ordering;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{ListParams, Params, path_segment};
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
        let (page, total) = active_page(&state.index, &scope, &p);
        let page: Vec<_> = page.iter().map(|s| view::json(s)).collect();
        (page, i64::try_from(total).unwrap_or(i64::MAX))
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
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let id = path_segment(id, ApiError::SessionNotFound)?;
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

/// One page of the open sessions in scope matching the filters, sorted as asked, and how
/// many match in all. By start time (the default) the page is read from the index's
/// start-time order: without filters in O(offset + limit), with filters in one pass and
/// without sorting. The other sorts select the page's rows before sorting only those.
pub fn active_page(index: &Index, scope: &Scope, p: &ListParams) -> (Vec<Arc<Session>>, usize) {
    let offset = usize::try_from(p.offset()).unwrap_or(usize::MAX);
    let limit = usize::try_from(p.limit).unwrap_or(0);
    let unfiltered = scope.is_all()
        && p.nas_id.is_none()
        && p.from.is_none()
        && p.to.is_none()
        && p.search.is_none();
    if p.sort == SortKey::StartTime && unfiltered {
        return index.page_by_start(p.descending, offset, limit);
    }
    let wanted = filter(scope, p);
    if p.sort == SortKey::StartTime {
        let mut page = Vec::new();
        let mut total = 0usize;
        index.walk_by_start(p.descending, |s| {
            if wanted(s) {
                if total >= offset && page.len() < limit {
                    page.push(Arc::clone(s));
                }
                total += 1;
            }
            ControlFlow::Continue(())
        });
        return (page, total);
    }
    let mut all = index.collect_where(wanted);
    let total = all.len();
    if offset >= total {
        return (Vec::new(), total);
    }
    let end = offset.saturating_add(limit).min(total);
    let order = order_by(p);
    if end < total {
        all.select_nth_unstable_by(end, |a, b| order(a, b));
        all.truncate(end);
    }
    all.sort_unstable_by(|a, b| order(a, b));
    all.drain(..offset);
    (all, total)
}

/// Open sessions in scope matching the filters, sorted as asked (export, `/active`).
pub fn active(index: &Index, scope: &Scope, p: &ListParams) -> Vec<Arc<Session>> {
    let wanted = filter(scope, p);
    if p.sort == SortKey::StartTime {
        let mut out = Vec::new();
        index.walk_by_start(p.descending, |s| {
            if wanted(s) {
                out.push(Arc::clone(s));
            }
            ControlFlow::Continue(())
        });
        return out;
    }
    let mut out = index.collect_where(wanted);
    let order = order_by(p);
    out.sort_unstable_by(|a, b| order(a, b));
    out
}

/// The filters of `p` and the caller's scope as one predicate.
fn filter<'a>(scope: &'a Scope, p: &'a ListParams) -> impl Fn(&Session) -> bool + 'a {
    let needle = p.search.as_deref().map(str::to_ascii_lowercase);
    move |s: &Session| {
        scope.allows(&s.fields.username)
            && p.nas_id.is_none_or(|n| s.nas_id == Some(n))
            && p.from.is_none_or(|f| s.start >= f)
            && p.to.is_none_or(|t| s.start <= t)
            && needle.as_deref().is_none_or(|n| matches_search(s, n))
    }
}

/// The order of `p`'s sort: its column, then `radacctid`, reversed when descending — the
/// same order the index's start-time walk gives.
fn order_by(p: &ListParams) -> impl Fn(&Session, &Session) -> Ordering {
    let (sort, descending) = (p.sort, p.descending);
    move |a: &Session, b: &Session| {
        let key = |s: &Session| match sort {
            SortKey::StartTime => s.start,
            SortKey::InputOctets => s.input_octets,
            SortKey::OutputOctets => s.output_octets,
            SortKey::SessionTime => s.session_time,
        };
        let ord = (key(a), a.radacctid).cmp(&(key(b), b.radacctid));
        if descending { ord.reverse() } else { ord }
    }
}

/// Substring match that ignores the case of ASCII letters only, like SQLite's `LIKE` used
/// for closed sessions: `änne` does not find `ÄNNE` here either, so `status=active` and
/// `status=all` agree. `needle` is already ASCII-lower-cased.
fn matches_search(s: &Session, needle: &str) -> bool {
    let f = &s.fields;
    contains_ascii_ci(&f.username, needle)
        || f.framedipaddress
            .is_some_and(|ip| ip.to_string().contains(needle))
        || f.callingstationid
            .as_deref()
            .is_some_and(|c| contains_ascii_ci(c, needle))
}

/// Whether `haystack` contains `needle` (ASCII-lower-case) ignoring ASCII case, without
/// allocating: the search runs over every open session.
fn contains_ascii_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::contains_ascii_ci;

    #[test]
    fn search_folds_ascii_letters_only() {
        assert!(contains_ascii_ci("Bob@Example.LB", "example.lb"));
        assert!(contains_ascii_ci(
            "ÄNNE-BOX",
            "Änne-box".to_ascii_lowercase().as_str()
        ));
        assert!(!contains_ascii_ci("ÄNNE", "änne"));
        assert!(contains_ascii_ci("anything", ""));
        assert!(!contains_ascii_ci("ab", "abc"));
        // A match never starts inside a multi-byte character.
        assert!(!contains_ascii_ci("é", "\u{a9}"));
    }
}
