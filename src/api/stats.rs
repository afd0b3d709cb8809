//! `GET /api/sessions/stats` (totals over a period) and `GET /api/sessions/:id/logs` (one
//! session's Start / Interim-Update / Stop history), both within the caller's scope.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{Params, path_segment, rfc3339};
use super::scope::Scope;
use super::sessions::find;
use crate::sessions::model::Timestamp;

/// The periods `?period=` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(p: &Params) -> Result<Period, ApiError> {
        match p.get("period").map(str::to_ascii_lowercase).as_deref() {
            None | Some("day") => Ok(Period::Day),
            Some("week") => Ok(Period::Week),
            Some("month") => Ok(Period::Month),
            Some(_) => Err(ApiError::bad("invalid period, must be day/week/month")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// Length in seconds: a month is 30 days, so every period is a fixed window ending
    /// now rather than a calendar unit (no time-zone question to answer).
    pub fn secs(self) -> i64 {
        const DAY: i64 = 86_400;
        match self {
            Period::Day => DAY,
            Period::Week => 7 * DAY,
            Period::Month => 30 * DAY,
        }
    }
}

/// `GET /api/sessions/stats?period=day|week|month` (default `day`).
///
/// The period is the window `[now − 1/7/30 days, now]`; `since` is its start. A session
/// counts when it was active at any time in the window: still open, or stopped at or after
/// `since` (so a session that began before the window and is still running counts).
/// Over those sessions:
/// - `total_sessions`: how many; `unique_users`: distinct usernames;
/// - `total_duration_hours`: the sum of their `acctsessiontime` in hours, rounded to two
///   decimals — whole sessions, not clipped to the window, and for open sessions the time
///   the last Interim-Update reported;
/// - `total_input_octets` / `total_output_octets`: the sum of their counters (again whole
///   sessions);
/// - `top_nas`: the five NAS with the most of these sessions, most first, with the NAS's
///   short name when it is a known client (`nas` table), else `null`.
///
/// `active_sessions` is the number of sessions open right now, from the in-memory index.
/// Everything is restricted to the caller's scope. Sessions archived to `radacct_archive`
/// (closed more than 90 days ago) are outside every period.
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let period = Period::parse(&Params::parse(raw.as_deref()))?;
    let scope = Scope::of(&caller, &state.store).await?;
    let since = window_start(period, chrono::Utc::now().timestamp());
    let totals = state.store.period_stats(since, &scope.filter()).await?;
    let active = if scope.is_all() {
        state.index.len()
    } else {
        state
            .index
            .count_where(|s| scope.allows(&s.fields.username))
    };
    let nas = state.store.nas_list().await?;
    let by_id: HashMap<i64, &str> = nas.iter().map(|n| (n.id, n.config.name.as_str())).collect();
    // Rows written by FreeRADIUS carry no nas_id: name them by address instead.
    let by_ip: HashMap<String, &str> = nas
        .iter()
        .map(|n| (n.config.ip.to_string(), n.config.name.as_str()))
        .collect();
    let top_nas: Vec<_> = totals
        .top_nas
        .iter()
        .map(|(nas_id, ip, count)| {
            let name = nas_id
                .and_then(|id| by_id.get(&id))
                .or_else(|| ip.as_ref().and_then(|ip| by_ip.get(ip)))
                .copied();
            json!({
                "nas_id": nas_id,
                "nasipaddress": ip,
                "name": name,
                "sessions_count": count,
            })
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "data": {
            "period": period.as_str(),
            "since": rfc3339(since),
            "total_sessions": totals.total_sessions,
            "active_sessions": active,
            "total_duration_hours": hours(totals.total_session_seconds),
            "unique_users": totals.unique_users,
            "total_input_octets": totals.total_input_octets,
            "total_output_octets": totals.total_output_octets,
            "top_nas": top_nas,
        }
    }))
    .into_response())
}

/// Seconds as hours, rounded to two decimals (half away from zero).
fn hours(secs: i64) -> f64 {
    (secs as f64 / 36.0).round() / 100.0
}

/// The output formats of `/logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

/// `GET /api/sessions/:id/logs?format=json|text` (default `json`): the session's history,
/// oldest first — one entry per Start, Interim-Update and Stop the NAS sent that changed
/// the session (`source: "nas"`), and one per close radacctd made itself (Lost-Service,
/// NAS-Reboot, Admin-Reset, NAS-Idle-Timeout: `source: "server"`). Counters are the
/// values the packet carried.
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let format = match Params::parse(raw.as_deref())
        .get("format")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some(_) => return Err(ApiError::bad("invalid format, must be json/text")),
    };
    let id = path_segment(id, ApiError::SessionNotFound)?;
    let session = find(&state, &id).await?;
    let scope = Scope::of(&caller, &state.store).await?;
    if !scope.allows(&session.fields.username) {
        return Err(ApiError::OutOfScope);
    }
    let events = state.store.events_for(session.radacctid).await?;
    match format {
        Format::Json => {
            let logs: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "timestamp": rfc3339(e.time),
                        "type": e.kind,
                        "source": e.source.as_str(),
                        "acctsessiontime": e.session_time,
                        "acctinputoctets": e.input_octets,
                        "acctoutputoctets": e.output_octets,
                    })
                })
                .collect();
            Ok(Json(json!({
                "success": true,
                "data": {
                    "radacctid": session.radacctid,
                    "acctuniqueid": &*session.acctuniqueid,
                    "logs": logs,
                }
            }))
            .into_response())
        }
        Format::Text => {
            let mut out = String::with_capacity(events.len() * 96);
            for e in &events {
                let _ = writeln!(
                    out,
                    "{} {} source={} session_time={} input_octets={} output_octets={}",
                    rfc3339(e.time),
                    e.kind,
                    e.source.as_str(),
                    e.session_time,
                    e.input_octets,
                    e.output_octets
                );
            }
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
        }
    }
}

/// The start of the period's window ending at `now`.
pub fn window_start(period: Period, now: Timestamp) -> Timestamp {
    now - period.secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_to_two_decimals() {
        assert_eq!(hours(0), 0.0);
        assert_eq!(hours(240), 0.07);
        assert_eq!(hours(3600), 1.0);
        assert_eq!(hours(3840), 1.07);
        assert_eq!(hours(18), 0.01);
        assert_eq!(hours(17), 0.0);
    }

    #[test]
    fn periods_parse_with_day_as_default() {
        let p = |q: &str| Period::parse(&Params::parse(Some(q))).map_err(|e| e.to_string());
        assert_eq!(p(""), Ok(Period::Day));
        assert_eq!(p("period=WEEK"), Ok(Period::Week));
        assert_eq!(p("period=month"), Ok(Period::Month));
        assert_eq!(
            p("period=year"),
            Err("invalid period, must be day/week/month".to_owned())
        );
        assert_eq!(
            window_start(Period::Month, 3_000_000),
            3_000_000 - 30 * 86_400
        );
    }
}
