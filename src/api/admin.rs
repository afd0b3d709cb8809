//! Admin endpoints for the data that scoping rests on: subscribers (which reseller each
//! username belongs to) and the reseller tree. One at a time as JSON
//! (`PUT /api/subscribers/{username}`, `PUT /api/resellers/{id}`), or in bulk as CSV
//! (`POST /api/subscribers/import`, `POST /api/resellers/import`, and the CLI through
//! [`import_subscribers_csv`] / [`import_resellers_csv`]). Only the `admin` role may use
//! them; any other role gets 403 `not authorized`.
//!
//! Every write is one transaction and all-or-nothing: an import with one bad line imports
//! nothing and names the line. Changes apply to scoping from the next request, because
//! [`Scope`](super::scope::Scope) is resolved from the database per request.
//!
//! Bodies are read here rather than through axum's `Json`/`Bytes` extractors so that the
//! size limits (64 KiB JSON, 10 MiB CSV) and every rejection use the contract's error
//! shape and messages a panel can show.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::{Caller, Role};
use super::error::{self, ApiError};
use super::params::{DEFAULT_LIMIT, MAX_LIMIT, Params, path_segment};
use crate::sessions::Store;
use crate::sessions::store::StoreError;
use crate::sessions::store::directory::{DirectoryError, ResellerRow, SubscriberRow};

/// Largest JSON body of a `PUT`: the objects are a few fields.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Largest CSV import: about half a million subscribers per request.
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;
/// Longest username: a RADIUS attribute value holds at most 253 octets.
const MAX_USERNAME_BYTES: usize = 253;
/// Longest reseller name (the SQLite schema's `varchar(128)`).
const MAX_NAME_CHARS: usize = 128;

/// The 400 for a `{username}` segment whose percent-encoded bytes are not UTF-8.
const USERNAME_NOT_UTF8: &str = "invalid username, must be percent-encoded UTF-8";
/// The 400 for a `{id}` segment that is not a positive integer (undecodable bytes included).
const BAD_RESELLER_ID: &str = "invalid reseller id, must be a positive integer";

const SUBSCRIBER_HEADER: [&str; 2] = ["username", "reseller_id"];
const RESELLER_HEADER: [&str; 3] = ["id", "parent_id", "name"];

/// Why a CSV import was refused. Nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is wrong at `line` (1-based; the header is line 1).
    #[error("line {line}: {problem}")]
    Invalid { line: usize, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            ImportError::Store(e) => ApiError::from(e),
        }
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.claims.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::OutOfScope)
    }
}

// ---------------------------------------------------------------------------------------
// Subscribers

/// `GET /api/subscribers?reseller_id=&page=&limit=`: subscribers by username, optionally
/// only those assigned directly to one reseller; paged like `GET /api/sessions`.
pub async fn list_subscribers(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let p = Params::parse(raw.as_deref());
    let reseller_id = p
        .get("reseller_id")
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::bad("invalid reseller_id, must be an integer"))
        })
        .transpose()?;
    let (page, limit) = paging(&p)?;
    let (data, total) = state
        .store
        .subscribers_page(reseller_id, (page - 1).saturating_mul(limit), limit)
        .await?;
    Ok(Json(json!({
        "success": true,
        "data": data,
        "pagination": { "page": page, "limit": limit, "total": total },
    }))
    .into_response())
}

/// `page` and `limit` with the Sessions API's defaults, bounds and messages.
fn paging(p: &Params) -> Result<(i64, i64), ApiError> {
    let page = match p.get("page") {
        None => 1,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1_000_000_000).contains(n))
            .ok_or_else(|| ApiError::bad("invalid page, must be a positive integer"))?,
    };
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad("invalid limit, must be between 1 and 500"))?,
    };
    Ok((page, limit))
}

/// `GET /api/subscribers/{username}`.
pub async fn get_subscriber(
    State(state): State<AppState>,
    caller: Caller,
    username: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let username = path_segment(username, ApiError::bad(USERNAME_NOT_UTF8))?;
    // The rules of PUT: a name that could never be stored is a 400, and it never reaches
    // the database (PostgreSQL refuses a NUL in text, which would be a 500).
    if let Some(problem) = username_problem(&username) {
        return Err(ApiError::bad(format!("invalid username, {problem}")));
    }
    let subscriber = state
        .store
        .subscriber(&username)
        .await?
        .ok_or(ApiError::NotFound("subscriber not found"))?;
    Ok(Json(json!({ "success": true, "data": subscriber })).into_response())
}

/// `PUT /api/subscribers/{username}` with `{"reseller_id": 2}` (or `null`: no reseller):
/// create the subscriber or move it to that reseller. 200 with the subscriber as stored.
pub async fn put_subscriber(
    State(state): State<AppState>,
    caller: Caller,
    username: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = match read_body(request, MAX_JSON_BYTES, "64 KiB").await {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let username = path_segment(username, ApiError::bad(USERNAME_NOT_UTF8))?;
    if let Some(problem) = username_problem(&username) {
        return Err(ApiError::bad(format!("invalid username, {problem}")));
    }
    let example = r#"{"reseller_id": 2}"#;
    let mut body = json_object(&body, example)?;
    only_fields(&body, &["reseller_id"])?;
    let reseller_id = nullable_id(&mut body, "reseller_id")?
        .ok_or_else(|| ApiError::bad("missing field reseller_id"))?;
    let row = SubscriberRow {
        username: username.clone(),
        reseller_id,
    };
    match state
        .store
        .put_subscribers(std::slice::from_ref(&row))
        .await
    {
        Ok(_) => {}
        Err(DirectoryError::UnknownReseller { .. }) => {
            return Err(ApiError::bad("unknown reseller_id"));
        }
        Err(e) => return Err(directory_error(e)),
    }
    let stored = state
        .store
        .subscriber(&username)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("subscriber {username:?} vanished")))?;
    Ok(Json(json!({ "success": true, "data": stored })).into_response())
}

/// `POST /api/subscribers/import`: CSV `username,reseller_id` (header required, empty
/// `reseller_id` means none). 200 `{"success": true, "imported": N}`.
pub async fn import_subscribers(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = match read_body(request, MAX_IMPORT_BYTES, "10 MiB").await {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let text = csv_text(&body)?;
    let imported = import_subscribers_csv(&state.store, text).await?;
    Ok(Json(json!({ "success": true, "imported": imported })).into_response())
}

/// Import subscribers from CSV (`username,reseller_id`, header first): validate every
/// line, then insert or update all of them in one transaction. Returns how many rows the
/// file held. Blank lines are skipped; fields may be double-quoted (RFC 4180).
pub async fn import_subscribers_csv(store: &Store, csv: &str) -> Result<usize, ImportError> {
    let (lines, rows) = parse_subscribers(csv)?;
    store
        .put_subscribers(&rows)
        .await
        .map_err(|e| at_line(e, &lines, |i| rows[i].username.clone()))
}

fn parse_subscribers(csv: &str) -> Result<(Vec<usize>, Vec<SubscriberRow>), ImportError> {
    let records = records(csv, &SUBSCRIBER_HEADER)?;
    let mut lines = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(records.len());
    for (line, fields) in records {
        let invalid = |problem: String| ImportError::Invalid { line, problem };
        let [username, reseller] = <[String; 2]>::try_from(fields).map_err(|f| {
            invalid(format!(
                "expected 2 fields (username,reseller_id), found {}",
                f.len()
            ))
        })?;
        if let Some(problem) = username_problem(&username) {
            return Err(invalid(format!("invalid username, {problem}")));
        }
        let reseller_id = optional_id(&reseller).map_err(|()| {
            invalid(format!(
                "invalid reseller_id {}, {ID_RULE}",
                shown(&reseller)
            ))
        })?;
        if let Some(first) = seen.insert(username.clone(), line) {
            return Err(invalid(format!(
                "duplicate username {} (first on line {first})",
                shown(&username)
            )));
        }
        lines.push(line);
        rows.push(SubscriberRow {
            username,
            reseller_id,
        });
    }
    Ok((lines, rows))
}

// ---------------------------------------------------------------------------------------
// Resellers

/// `GET /api/resellers`: the whole tree as a flat list by id (a tree holds hundreds of
/// resellers, not millions, so it is not paged).
pub async fn list_resellers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let data = state.store.resellers().await?;
    Ok(Json(json!({ "success": true, "data": data })).into_response())
}

/// `PUT /api/resellers/{id}` with `{"parent_id": 1, "name": "x"}`: create or change a
/// reseller. `parent_id` is required (`null` for a root) and must exist; a change that
/// would make a reseller its own ancestor is refused. `name` may be omitted (or `null`) to
/// keep the stored name.
pub async fn put_reseller(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = match read_body(request, MAX_JSON_BYTES, "64 KiB").await {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let id = path_segment(id, ApiError::bad(BAD_RESELLER_ID))?
        .parse::<i64>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| ApiError::bad(BAD_RESELLER_ID))?;
    let example = r#"{"parent_id": 1, "name": "North"}"#;
    let mut body = json_object(&body, example)?;
    only_fields(&body, &["parent_id", "name"])?;
    let parent_id = nullable_id(&mut body, "parent_id")?
        .ok_or_else(|| ApiError::bad("missing field parent_id"))?;
    let name = match body.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match name_problem(&s) {
            None => Some(s),
            Some(problem) => return Err(ApiError::bad(format!("invalid name, {problem}"))),
        },
        Some(_) => return Err(ApiError::bad("invalid name, must be a string")),
    };
    let row = ResellerRow {
        id,
        parent_id,
        name,
    };
    let stored = match state.store.put_resellers(std::slice::from_ref(&row)).await {
        Ok(mut stored) => stored
            .pop()
            .ok_or_else(|| ApiError::Internal("reseller write returned no row".into()))?,
        Err(DirectoryError::UnknownParent { .. }) => {
            return Err(ApiError::bad("unknown parent_id"));
        }
        Err(DirectoryError::Cycle { .. }) => {
            return Err(ApiError::bad("reseller tree must not contain cycles"));
        }
        Err(e) => return Err(directory_error(e)),
    };
    Ok(Json(json!({ "success": true, "data": stored })).into_response())
}

/// `POST /api/resellers/import`: CSV `id,parent_id,name`. Parents may come later in the
/// file than their children; the resulting tree must have every parent and no cycle.
pub async fn import_resellers(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = match read_body(request, MAX_IMPORT_BYTES, "10 MiB").await {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let text = csv_text(&body)?;
    let imported = import_resellers_csv(&state.store, text).await?;
    Ok(Json(json!({ "success": true, "imported": imported })).into_response())
}

/// Import resellers from CSV (`id,parent_id,name`, header first; empty `parent_id` for a
/// root; an empty name is stored as empty). The tree after the import is checked as a
/// whole, so lines may come in any order. Returns how many rows the file held.
pub async fn import_resellers_csv(store: &Store, csv: &str) -> Result<usize, ImportError> {
    let (lines, rows) = parse_resellers(csv)?;
    let stored = store
        .put_resellers(&rows)
        .await
        .map_err(|e| at_line(e, &lines, |i| rows[i].id.to_string()))?;
    Ok(stored.len())
}

fn parse_resellers(csv: &str) -> Result<(Vec<usize>, Vec<ResellerRow>), ImportError> {
    let records = records(csv, &RESELLER_HEADER)?;
    let mut lines = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len());
    let mut seen: HashMap<i64, usize> = HashMap::with_capacity(records.len());
    for (line, fields) in records {
        let invalid = |problem: String| ImportError::Invalid { line, problem };
        let [id, parent, name] = <[String; 3]>::try_from(fields).map_err(|f| {
            invalid(format!(
                "expected 3 fields (id,parent_id,name), found {}",
                f.len()
            ))
        })?;
        let id = match optional_id(&id) {
            Ok(Some(id)) => id,
            _ => {
                return Err(invalid(format!(
                    "invalid id {}, must be a positive integer",
                    shown(&id)
                )));
            }
        };
        let parent_id = optional_id(&parent)
            .map_err(|()| invalid(format!("invalid parent_id {}, {ID_RULE}", shown(&parent))))?;
        if let Some(problem) = name_problem(&name) {
            return Err(invalid(format!("invalid name, {problem}")));
        }
        if let Some(first) = seen.insert(id, line) {
            return Err(invalid(format!(
                "duplicate id {id} (first on line {first})"
            )));
        }
        lines.push(line);
        rows.push(ResellerRow {
            id,
            parent_id,
            name: Some(name),
        });
    }
    Ok((lines, rows))
}

// ---------------------------------------------------------------------------------------
// Shared helpers

/// A store refusal of an import, named by the line it concerns; `what(i)` shows row `i`.
fn at_line(e: DirectoryError, lines: &[usize], what: impl Fn(usize) -> String) -> ImportError {
    let line = |i: usize| lines.get(i).copied().unwrap_or(1);
    match e {
        DirectoryError::UnknownReseller { index, id } => ImportError::Invalid {
            line: line(index),
            problem: format!("unknown reseller_id {id}"),
        },
        DirectoryError::UnknownParent { index, parent_id } => ImportError::Invalid {
            line: line(index),
            problem: format!("unknown parent_id {parent_id}"),
        },
        DirectoryError::Cycle { index } => ImportError::Invalid {
            line: line(index),
            problem: format!(
                "reseller tree must not contain cycles (reseller {} would be its own ancestor)",
                what(index)
            ),
        },
        DirectoryError::Duplicate { index, first } => ImportError::Invalid {
            line: line(index),
            problem: format!(
                "duplicate entry {} (first on line {})",
                shown(&what(index)),
                line(first)
            ),
        },
        DirectoryError::Store(e) => ImportError::Store(e),
    }
}

/// A store refusal the single-object endpoints did not expect.
fn directory_error(e: DirectoryError) -> ApiError {
    match e {
        DirectoryError::Store(e) => ApiError::from(e),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Read a request body of at most `limit` bytes. A larger body is refused with 413 as
/// soon as it is known to be too large (from `Content-Length`, else while streaming), so
/// an oversized upload is not buffered.
async fn read_body(request: Request, limit: usize, shown_limit: &str) -> Result<Bytes, Response> {
    let too_large = || {
        error::body(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body too large, at most {shown_limit}"),
        )
    };
    let (parts, body): (_, Body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "cannot read request body");
            error::body(StatusCode::BAD_REQUEST, "cannot read request body")
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The body as text; a CSV that is not UTF-8 is refused with the line of the first bad
/// byte. A leading byte-order mark (spreadsheet exports write one) is dropped.
fn csv_text(body: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = 1 + body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ApiError::bad(format!("line {line}: CSV must be UTF-8 text"))
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// The data records of a CSV with the given header, each with its 1-based line number.
/// Blank lines are skipped; the first non-blank line must be the header (names compared
/// case-insensitively).
fn records(csv: &str, header: &[&str]) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let expected = header.join(",");
    let mut out = Vec::new();
    let mut seen_header = false;
    for (n, raw) in csv.split('\n').enumerate() {
        let line = n + 1;
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        if text.trim().is_empty() {
            continue;
        }
        let fields = split_fields(text).map_err(|problem| ImportError::Invalid {
            line,
            problem: problem.to_owned(),
        })?;
        if !seen_header {
            let matches = fields.len() == header.len()
                && fields
                    .iter()
                    .zip(header)
                    .all(|(f, h)| f.trim().eq_ignore_ascii_case(h));
            if !matches {
                return Err(ImportError::Invalid {
                    line,
                    problem: format!("expected the header {expected}"),
                });
            }
            seen_header = true;
            continue;
        }
        out.push((line, fields));
    }
    if !seen_header {
        return Err(ImportError::Invalid {
            line: 1,
            problem: format!("empty file, expected the header {expected}"),
        });
    }
    Ok(out)
}

/// Split one CSV line into fields: RFC 4180 double quotes (`""` inside is a quote),
/// unquoted fields trimmed. Written here rather than with a CSV crate because both import
/// formats are two or three short fields that never span lines, and the errors must name
/// the line.
fn split_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        let start = rest.trim_start();
        if let Some(quoted) = start.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated quoted field"),
                    Some((i, '"')) => {
                        if quoted[i + 1..].starts_with('"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            out.push(value);
            let tail = quoted[end..].trim_start();
            if tail.is_empty() {
                return Ok(out);
            }
            rest = tail
                .strip_prefix(',')
                .ok_or("unexpected text after a quoted field")?;
        } else {
            let (field, next) = match rest.split_once(',') {
                Some((f, r)) => (f, Some(r)),
                None => (rest, None),
            };
            if field.contains('"') {
                return Err("quote inside an unquoted field (quote the whole field)");
            }
            out.push(field.trim().to_owned());
            match next {
                Some(r) => rest = r,
                None => return Ok(out),
            }
        }
    }
}

const ID_RULE: &str = "must be a positive integer or empty";

/// An id cell: empty (or `null`) is none, otherwise a positive integer.
fn optional_id(cell: &str) -> Result<Option<i64>, ()> {
    let cell = cell.trim();
    if cell.is_empty() || cell.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    match cell.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(()),
    }
}

fn username_problem(u: &str) -> Option<&'static str> {
    if u.is_empty() || u.len() > MAX_USERNAME_BYTES || u.chars().any(char::is_control) {
        Some("must be 1 to 253 bytes without control characters")
    } else {
        None
    }
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        Some("must be at most 128 characters without control characters")
    } else {
        None
    }
}

/// A value from the client shown in an error message: quoted, and cut short so that a
/// huge cell cannot make a huge response.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// Parse a JSON object body. Syntax errors give the position, not serde's internals.
fn json_object(body: &[u8], example: &str) -> Result<Map<String, Value>, ApiError> {
    let not_object = || {
        ApiError::bad(format!(
            "request body must be a JSON object such as {example}"
        ))
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(not_object());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(not_object()),
        Err(e) => Err(ApiError::bad(format!(
            "invalid JSON body at line {} column {}, expected an object such as {example}",
            e.line(),
            e.column()
        ))),
    }
}

/// Unknown fields are refused rather than ignored: a typo (`reseler_id`) must not turn
/// into "no reseller".
fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(format!(
            "unknown field {}, expected {}",
            shown(k),
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A required-but-nullable id field: `None` when absent, `Some(None)` for `null`.
fn nullable_id(body: &mut Map<String, Value>, name: &str) -> Result<Option<Option<i64>>, ApiError> {
    match body.remove(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Ok(Some(Some(n))),
            _ => Err(ApiError::bad(format!(
                "invalid {name}, must be a positive integer or null"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_rfc4180_quoting() {
        assert_eq!(split_fields("bob, 2").unwrap(), vec!["bob", "2"]);
        assert_eq!(
            split_fields(r#""a,b" , "say ""hi""",x"#).unwrap(),
            vec!["a,b", r#"say "hi""#, "x"]
        );
        assert_eq!(split_fields("a,,").unwrap(), vec!["a", "", ""]);
        assert!(split_fields(r#""open"#).is_err());
        assert!(split_fields(r#""a"b,c"#).is_err());
        assert!(split_fields(r#"a"b,c"#).is_err());
    }

    #[test]
    fn subscriber_csv_names_the_bad_line() {
        let err = |csv: &str| parse_subscribers(csv).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "line 1: empty file, expected the header username,reseller_id"
        );
        assert_eq!(
            err("user,reseller\nbob,1\n"),
            "line 1: expected the header username,reseller_id"
        );
        assert_eq!(
            err("username,reseller_id\nbob,1\n\ncarol,x\n"),
            "line 4: invalid reseller_id \"x\", must be a positive integer or empty"
        );
        assert_eq!(
            err("username,reseller_id\nbob,1,extra\n"),
            "line 2: expected 2 fields (username,reseller_id), found 3"
        );
        assert_eq!(
            err("username,reseller_id\nbob,1\nbob,2\n"),
            "line 3: duplicate username \"bob\" (first on line 2)"
        );
        assert_eq!(
            err("username,reseller_id\n,1\n"),
            "line 2: invalid username, must be 1 to 253 bytes without control characters"
        );
        assert_eq!(
            err("username,reseller_id\nbob,0\n"),
            "line 2: invalid reseller_id \"0\", must be a positive integer or empty"
        );
    }

    #[test]
    fn subscriber_csv_accepts_crlf_bom_blank_and_empty_reseller() {
        let text =
            csv_text("\u{feff}Username,Reseller_ID\r\nbob,2\r\n\r\n\"carol\",\r\n".as_bytes())
                .unwrap();
        let (lines, rows) = parse_subscribers(text).unwrap();
        assert_eq!(lines, vec![2, 4]);
        assert_eq!(
            rows,
            vec![
                SubscriberRow {
                    username: "bob".into(),
                    reseller_id: Some(2)
                },
                SubscriberRow {
                    username: "carol".into(),
                    reseller_id: None
                },
            ]
        );
    }

    #[test]
    fn reseller_csv_is_validated_per_line() {
        let err = |csv: &str| parse_resellers(csv).unwrap_err().to_string();
        assert_eq!(
            err("id,parent_id,name\n1,,top\n1,,again\n"),
            "line 3: duplicate id 1 (first on line 2)"
        );
        assert_eq!(
            err("id,parent_id,name\n-1,,top\n"),
            "line 2: invalid id \"-1\", must be a positive integer"
        );
        assert_eq!(
            err("id,parent_id,name\n1,,top\n2,1\n"),
            "line 3: expected 3 fields (id,parent_id,name), found 2"
        );
        let (_, rows) = parse_resellers("id,parent_id,name\n2,1,\"North, East\"\n1,,\n").unwrap();
        assert_eq!(rows[0].name.as_deref(), Some("North, East"));
        assert_eq!(rows[1].parent_id, None);
    }

    #[test]
    fn csv_must_be_utf8() {
        let err = csv_text(b"username,reseller_id\nbo\xffb,1\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: CSV must be UTF-8 text");
    }

    #[test]
    fn json_bodies_get_clear_messages() {
        let ex = r#"{"reseller_id": 2}"#;
        let e = json_object(b"{\"reseller_id\": ", ex)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid JSON body at line 1 column"), "{e}");
        assert_eq!(
            json_object(b"[1]", ex).unwrap_err().to_string(),
            "request body must be a JSON object such as {\"reseller_id\": 2}"
        );
        let mut m = json_object(br#"{"reseller_id": "2"}"#, ex).unwrap();
        assert_eq!(
            nullable_id(&mut m, "reseller_id").unwrap_err().to_string(),
            "invalid reseller_id, must be a positive integer or null"
        );
        let m = json_object(br#"{"reseler_id": 2}"#, ex).unwrap();
        assert_eq!(
            only_fields(&m, &["reseller_id"]).unwrap_err().to_string(),
            "unknown field \"reseler_id\", expected reseller_id"
        );
        assert!(shown(&"x".repeat(500)).len() < 80);
    }
}
