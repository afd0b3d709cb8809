//! Query parameters of the Sessions API, validated with the contract's defaults and limits.
//! Every bad value is a 400 naming the parameter and what it must be; unknown parameters
//! are ignored (panels add cache-busters and the like).

use std::collections::HashMap;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::error::ApiError;
use crate::sessions::model::Timestamp;
use crate::sessions::store::query::{ScopeFilter, SessionQuery, SortKey, StatusFilter};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// Longest accepted search string; longer ones cannot match a RADIUS attribute (≤ 253).
const MAX_SEARCH_LEN: usize = 253;

/// Decoded `?a=b&c=d`; the first occurrence of a name wins.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let mut map = HashMap::new();
        if let Some(raw) = raw {
            for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Params(map)
    }

    /// A parameter's value, `None` when absent or empty (`?nas_id=` means no filter).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

/// The `{id}` / `{username}` segment of a route, or `invalid` when it cannot be decoded
/// (percent-encoded bytes that are not UTF-8, such as `/api/sessions/%FF`). Handlers take
/// the segment as a `Result` and call this after their token and permission checks, so
/// that the order of checks is the same as for query parameters and the answer is the
/// contract's JSON error rather than axum's plain-text rejection.
pub fn path_segment(
    segment: Result<Path<String>, PathRejection>,
    invalid: ApiError,
) -> Result<String, ApiError> {
    match segment {
        Ok(Path(s)) => Ok(s),
        Err(PathRejection::FailedToDeserializePathParams(e)) => {
            tracing::debug!(error = %e.body_text(), "undecodable path segment");
            Err(invalid)
        }
        // No parameter at all: a route registered without `{…}`, a bug of ours.
        Err(e) => Err(ApiError::Internal(format!(
            "path parameter: {}",
            e.body_text()
        ))),
    }
}

/// Filters, sort and paging of `GET /api/sessions` (and export, which ignores paging).
#[derive(Debug, Clone)]
pub struct ListParams {
    pub status: StatusFilter,
    pub page: i64,
    pub limit: i64,
    pub search: Option<String>,
    pub nas_id: Option<i64>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub sort: SortKey,
    pub descending: bool,
    /// `source=archive`: closed sessions the archiver moved to `radacct_archive` (the
    /// default `source=live` never unions the archive, as the contract says).
    pub archive: bool,
}

impl ListParams {
    pub fn parse(p: &Params) -> Result<ListParams, ApiError> {
        Self::parse_with(p, true)
    }

    /// The filters and sort only, for the export: `page` and `limit` are ignored, not even
    /// validated (an integration that passes `limit=1000` along with its filters gets its
    /// CSV), and left at their defaults.
    pub fn parse_unpaged(p: &Params) -> Result<ListParams, ApiError> {
        Self::parse_with(p, false)
    }

    fn parse_with(p: &Params, paged: bool) -> Result<ListParams, ApiError> {
        let archive = match p.get("source").map(str::to_ascii_lowercase).as_deref() {
            None | Some("live") => false,
            Some("archive") => true,
            Some(_) => return Err(ApiError::bad("invalid source, must be live/archive")),
        };
        let status = match p.get("status") {
            // The archive only holds closed sessions.
            None if archive => StatusFilter::Closed,
            None => StatusFilter::Active,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "active" if archive => {
                    return Err(ApiError::bad(
                        "invalid status, the archive holds closed sessions only",
                    ));
                }
                "active" => StatusFilter::Active,
                "closed" => StatusFilter::Closed,
                "all" => StatusFilter::All,
                _ => return Err(ApiError::bad("invalid status, must be active/closed/all")),
            },
        };
        let page = match p.get("page").filter(|_| paged) {
            None => 1,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1_000_000_000).contains(n))
                .ok_or_else(|| ApiError::bad("invalid page, must be a positive integer"))?,
        };
        let limit = match p.get("limit").filter(|_| paged) {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::bad("invalid limit, must be between 1 and 500"))?,
        };
        let search = match p.get("search") {
            Some(s) if s.chars().count() > MAX_SEARCH_LEN => {
                return Err(ApiError::bad(
                    "invalid search, must be at most 253 characters",
                ));
            }
            Some(s) => Some(s.to_owned()),
            None => None,
        };
        let nas_id = match p.get("nas_id") {
            None => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .map_err(|_| ApiError::bad("invalid nas_id, must be an integer"))?,
            ),
        };
        let from = p.get("from").map(|s| parse_time(s, "from")).transpose()?;
        let to = p.get("to").map(|s| parse_time(s, "to")).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(ApiError::bad("invalid range, from must not be after to"));
        }
        let sort = match p.get("sort").map(str::to_ascii_lowercase).as_deref() {
            None => SortKey::StartTime,
            Some("acctstarttime") => SortKey::StartTime,
            Some("acctinputoctets") => SortKey::InputOctets,
            Some("acctoutputoctets") => SortKey::OutputOctets,
            Some("acctsessiontime") => SortKey::SessionTime,
            Some(_) => {
                return Err(ApiError::bad(
                    "invalid sort, must be one of acctstarttime, acctinputoctets, \
                     acctoutputoctets, acctsessiontime",
                ));
            }
        };
        let descending = match p.get("order").map(str::to_ascii_lowercase).as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => return Err(ApiError::bad("invalid order, must be asc/desc")),
        };
        Ok(ListParams {
            status,
            page,
            limit,
            search,
            nas_id,
            from,
            to,
            sort,
            descending,
            archive,
        })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.limit)
    }

    pub fn query(&self, scope: ScopeFilter) -> SessionQuery {
        SessionQuery {
            status: self.status,
            scope,
            nas_id: self.nas_id,
            search: self.search.clone(),
            from: self.from,
            to: self.to,
            sort: self.sort,
            descending: self.descending,
            offset: self.offset(),
            limit: self.limit,
            archive: self.archive,
        }
    }
}

/// ISO 8601 / RFC 3339: `2026-05-01T00:00:00Z`, with an offset, without one (UTC), with a
/// space instead of `T`, or a bare date (midnight UTC).
pub fn parse_time(s: &str, name: &str) -> Result<Timestamp, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp());
    }
    Err(ApiError::bad(format!(
        "invalid {name}, must be an ISO 8601 datetime such as 2026-05-01T00:00:00Z"
    )))
}

/// A Unix time as RFC 3339 UTC with `Z` (the API's time format).
pub fn rfc3339(t: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<ListParams, String> {
        ListParams::parse(&Params::parse(Some(q))).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let p = parse("").unwrap();
        assert_eq!(p.status, StatusFilter::Active);
        assert_eq!((p.page, p.limit), (1, 50));
        assert_eq!(p.sort, SortKey::StartTime);
        assert!(p.descending);
    }

    #[test]
    fn bad_values_get_precise_messages() {
        assert_eq!(
            parse("status=open").unwrap_err(),
            "invalid status, must be active/closed/all"
        );
        assert!(parse("page=0").unwrap_err().starts_with("invalid page"));
        assert!(parse("page=x").unwrap_err().starts_with("invalid page"));
        assert!(parse("limit=501").unwrap_err().starts_with("invalid limit"));
        assert!(parse("limit=-1").unwrap_err().starts_with("invalid limit"));
        assert!(
            parse("nas_id=abc")
                .unwrap_err()
                .starts_with("invalid nas_id")
        );
        assert!(
            parse("from=yesterday")
                .unwrap_err()
                .starts_with("invalid from")
        );
        assert!(
            parse("to=2026-13-01")
                .unwrap_err()
                .starts_with("invalid to")
        );
        assert!(
            parse("sort=username")
                .unwrap_err()
                .starts_with("invalid sort")
        );
        assert!(parse("order=up").unwrap_err().starts_with("invalid order"));
        assert!(
            parse("from=2026-05-02&to=2026-05-01")
                .unwrap_err()
                .starts_with("invalid range")
        );
    }

    #[test]
    fn unpaged_parsing_ignores_page_and_limit_but_not_filters() {
        let p = ListParams::parse_unpaged(&Params::parse(Some("limit=1000&page=0&status=all")))
            .unwrap();
        assert_eq!((p.page, p.limit), (1, DEFAULT_LIMIT));
        assert_eq!(p.status, StatusFilter::All);
        assert!(ListParams::parse_unpaged(&Params::parse(Some("limit=1000&status=open"))).is_err());
    }

    #[test]
    fn archive_source_defaults_to_closed_and_refuses_active() {
        let p = parse("source=archive").unwrap();
        assert!(p.archive);
        assert_eq!(p.status, StatusFilter::Closed);
        assert!(
            parse("source=archive&status=active")
                .unwrap_err()
                .contains("archive")
        );
        assert!(
            parse("source=cold")
                .unwrap_err()
                .starts_with("invalid source")
        );
    }

    #[test]
    fn times_accept_common_iso_forms() {
        let z = parse_time("2026-05-12T08:14:22Z", "from").unwrap();
        assert_eq!(parse_time("2026-05-12T08:14:22", "from").unwrap(), z);
        assert_eq!(parse_time("2026-05-12 08:14:22", "from").unwrap(), z);
        assert_eq!(parse_time("2026-05-12T11:14:22+03:00", "from").unwrap(), z);
        assert_eq!(
            parse_time("2026-05-12", "from").unwrap(),
            z - (8 * 3600 + 14 * 60 + 22)
        );
        assert_eq!(rfc3339(z), "2026-05-12T08:14:22Z");
    }

    #[test]
    fn first_occurrence_wins_and_empty_means_absent() {
        let p = Params::parse(Some("status=closed&status=all&nas_id="));
        assert_eq!(p.get("status"), Some("closed"));
        assert_eq!(p.get("nas_id"), None);
        assert_eq!(parse("limit=500&page=3").unwrap().offset(), 1000);
    }
}
