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
    let needle = p.search.as_deref().map(Needle::new);
    move |s: &Session| {
        scope.allows(&s.fields.username)
            && p.nas_id.is_none_or(|n| s.nas_id == Some(n))
            && p.from.is_none_or(|f| s.start >= f)
            && p.to.is_none_or(|t| s.start <= t)
            && needle.as_ref().is_none_or(|n| n.matches(s))
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

/// The `search` parameter, prepared once for a scan of every open session.
struct Needle {
    /// ASCII-lower-cased.
    text: String,
    /// Whether the text of an address can contain it: addresses print as decimal digits
    /// and dots, or lower-case hex digits and colons. Most searches (user names) cannot,
    /// and then no address is formatted at all.
    in_address: bool,
}

impl Needle {
    fn new(search: &str) -> Needle {
        let text = search.to_ascii_lowercase();
        let in_address = text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'a'..=b'f' | b'.' | b':'));
        Needle { text, in_address }
    }

    /// Substring match that ignores the case of ASCII letters only, like SQLite's `LIKE`
    /// used for closed sessions: `änne` does not find `ÄNNE` here either, so
    /// `status=active` and `status=all` agree.
    fn matches(&self, s: &Session) -> bool {
        let f = &s.fields;
        contains_ascii_ci(&f.username, &self.text)
            || (self.in_address
                && f.framedipaddress
                    .is_some_and(|ip| AddressText::of(ip).contains(&self.text)))
            || f.callingstationid
                .as_deref()
                .is_some_and(|c| contains_ascii_ci(c, &self.text))
    }
}

/// Whether `haystack` contains `needle` (ASCII-lower-case) ignoring ASCII case, without
/// allocating: the search runs over every open session.
fn contains_ascii_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    let Some(last_start) = h.len().checked_sub(n.len()) else {
        return false;
    };
    h[..=last_start].iter().enumerate().any(|(i, &b)| {
        b.to_ascii_lowercase() == first && h[i + 1..i + n.len()].eq_ignore_ascii_case(rest)
    })
}

/// An address as `Display` writes it (`ip.to_string()`), in a buffer on the stack: the
/// longest, an IPv6 address with an embedded IPv4 one, is 45 bytes.
struct AddressText {
    buf: [u8; 48],
    len: usize,
}

impl AddressText {
    fn of(ip: std::net::IpAddr) -> AddressText {
        use std::fmt::Write;
        let mut text = AddressText {
            buf: [0; 48],
            len: 0,
        };
        // Cannot fail: every address fits.
        let _ = write!(text, "{ip}");
        text
    }

    fn contains(&self, needle: &str) -> bool {
        let (h, n) = (&self.buf[..self.len], needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w == n)
    }
}

impl std::fmt::Write for AddressText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{AddressText, Needle, contains_ascii_ci};
    use std::net::IpAddr;

    #[test]
    fn an_address_is_searched_as_display_writes_it() {
        for text in [
            "10.0.0.3",
            "255.255.255.255",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.168.100.200",
            "::",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let formatted = AddressText::of(ip);
            assert_eq!(&formatted.buf[..formatted.len], ip.to_string().as_bytes());
            assert!(formatted.contains(&text[1..]));
        }
        let v6 = Needle::new("2001:DB8::");
        assert!(v6.in_address);
        assert!(AddressText::of("2001:db8::7".parse().unwrap()).contains(&v6.text));
        assert!(!AddressText::of("10.0.0.3".parse().unwrap()).contains("10.0.0.4"));
        // Letters beyond hex, or anything else, cannot be in an address: none is formatted.
        assert!(Needle::new("10.0.0.3").in_address);
        assert!(Needle::new("F8:B4").in_address);
        assert!(!Needle::new("user1").in_address);
        assert!(!Needle::new("10.0.0.3/24").in_address);
    }

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
