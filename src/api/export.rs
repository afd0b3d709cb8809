//! `GET /api/sessions/export`: the sessions `GET /api/sessions` would list (same filters,
//! same scope, paging ignored) as a streamed CSV download, with the `format` and `columns`
//! parameters and the contract's 500,000-row cap (413 before any byte of body).
//!
//! Open sessions come from the index, closed and all from the database through
//! [`Store::stream_sessions`](crate::sessions::Store::stream_sessions). Rows are formatted
//! into ~64 KiB chunks as the client reads them, so memory stays flat whatever the size of
//! the export; when the client goes away the body is dropped, which drops the channel's
//! receiver, which ends the database query.
//!
//! Values are written as stored, quoted per RFC 4180. They are *not* rewritten against
//! spreadsheet formula injection (a leading `=`, `+`, `-`, `@`): this is accounting data
//! read by billing and reconciliation scripts, and a prefixed `'` would make a username or
//! Calling-Station-Id differ from `radacct` and from the JSON API. Whoever opens the file
//! in a spreadsheet should import the columns as text.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::AppState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{ListParams, Params, rfc3339};
use super::scope::Scope;
use super::sessions::active;
use crate::sessions::Session;
use crate::sessions::store::StoreError;
use crate::sessions::store::query::StatusFilter;

/// Size at which a chunk of CSV is handed to the connection: large enough that framing and
/// wake-ups cost nothing next to the data, small enough to be irrelevant to memory.
const CHUNK_BYTES: usize = 64 * 1024;

/// Longest unknown column name echoed back in the 400 message.
const MAX_ECHOED_NAME_CHARS: usize = 64;

/// A column of the export: every field of the session object (`view::SessionView`),
/// under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    RadAcctId,
    UserName,
    AcctSessionId,
    AcctUniqueId,
    NasIpAddress,
    NasId,
    NasPortId,
    NasPortType,
    FramedIpAddress,
    FramedIpv6Prefix,
    DelegatedIpv6Prefix,
    CallingStationId,
    CalledStationId,
    AcctStartTime,
    AcctStopTime,
    AcctUpdateTime,
    AcctInputOctets,
    AcctOutputOctets,
    AcctSessionTime,
    AcctTerminateCause,
}

/// The contract's sample header, in its order.
const DEFAULT_COLUMNS: &[Column] = &[
    Column::RadAcctId,
    Column::UserName,
    Column::NasIpAddress,
    Column::FramedIpAddress,
    Column::AcctStartTime,
    Column::AcctStopTime,
    Column::AcctSessionTime,
    Column::AcctInputOctets,
    Column::AcctOutputOctets,
    Column::AcctTerminateCause,
];

const ALL_COLUMNS: &[Column] = &[
    Column::RadAcctId,
    Column::UserName,
    Column::AcctSessionId,
    Column::AcctUniqueId,
    Column::NasIpAddress,
    Column::NasId,
    Column::NasPortId,
    Column::NasPortType,
    Column::FramedIpAddress,
    Column::FramedIpv6Prefix,
    Column::DelegatedIpv6Prefix,
    Column::CallingStationId,
    Column::CalledStationId,
    Column::AcctStartTime,
    Column::AcctStopTime,
    Column::AcctUpdateTime,
    Column::AcctInputOctets,
    Column::AcctOutputOctets,
    Column::AcctSessionTime,
    Column::AcctTerminateCause,
];

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::RadAcctId => "radacctid",
            Column::UserName => "username",
            Column::AcctSessionId => "acctsessionid",
            Column::AcctUniqueId => "acctuniqueid",
            Column::NasIpAddress => "nasipaddress",
            Column::NasId => "nas_id",
            Column::NasPortId => "nasportid",
            Column::NasPortType => "nasporttype",
            Column::FramedIpAddress => "framedipaddress",
            Column::FramedIpv6Prefix => "framedipv6prefix",
            Column::DelegatedIpv6Prefix => "delegatedipv6prefix",
            Column::CallingStationId => "callingstationid",
            Column::CalledStationId => "calledstationid",
            Column::AcctStartTime => "acctstarttime",
            Column::AcctStopTime => "acctstoptime",
            Column::AcctUpdateTime => "acctupdatetime",
            Column::AcctInputOctets => "acctinputoctets",
            Column::AcctOutputOctets => "acctoutputoctets",
            Column::AcctSessionTime => "acctsessiontime",
            Column::AcctTerminateCause => "acctterminatecause",
        }
    }

    fn from_name(name: &str) -> Option<Column> {
        ALL_COLUMNS.iter().copied().find(|c| c.name() == name)
    }

    /// Append this column of `s` to `out`, as `SessionView` would show it; absent is empty.
    fn write(self, s: &Session, out: &mut Vec<u8>) {
        let f = &s.fields;
        match self {
            Column::RadAcctId => int(out, s.radacctid),
            Column::UserName => text(out, &f.username),
            Column::AcctSessionId => text(out, &f.acctsessionid),
            Column::AcctUniqueId => text(out, &s.acctuniqueid),
            Column::NasIpAddress => {
                if let Some(ip) = f.nasipaddress {
                    out.extend_from_slice(ip.to_string().as_bytes());
                }
            }
            Column::NasId => {
                if let Some(n) = s.nas_id {
                    int(out, n);
                }
            }
            Column::NasPortId => opt_text(out, f.nasportid.as_deref()),
            Column::NasPortType => opt_text(out, f.nasporttype.as_deref()),
            Column::FramedIpAddress => {
                if let Some(ip) = f.framedipaddress {
                    out.extend_from_slice(ip.to_string().as_bytes());
                }
            }
            Column::FramedIpv6Prefix => opt_text(out, f.framedipv6prefix.as_deref()),
            Column::DelegatedIpv6Prefix => opt_text(out, f.delegatedipv6prefix.as_deref()),
            Column::CallingStationId => opt_text(out, f.callingstationid.as_deref()),
            Column::CalledStationId => opt_text(out, f.calledstationid.as_deref()),
            Column::AcctStartTime => out.extend_from_slice(rfc3339(s.start).as_bytes()),
            Column::AcctStopTime => {
                if let Some(t) = s.stop {
                    out.extend_from_slice(rfc3339(t).as_bytes());
                }
            }
            Column::AcctUpdateTime => out.extend_from_slice(rfc3339(s.update).as_bytes()),
            Column::AcctInputOctets => int(out, s.input_octets),
            Column::AcctOutputOctets => int(out, s.output_octets),
            Column::AcctSessionTime => int(out, s.session_time),
            Column::AcctTerminateCause => opt_text(out, s.terminate_cause.as_deref()),
        }
    }
}

/// The `columns` parameter: absent or empty means the contract's default set. Empty items
/// (a trailing comma) are skipped; an unknown or repeated name is a 400, so a typo is
/// never silently dropped from a report.
fn parse_columns(raw: Option<&str>) -> Result<Vec<Column>, ApiError> {
    let mut columns = Vec::new();
    for name in raw.unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let column = Column::from_name(name).ok_or_else(|| {
            ApiError::bad(format!("invalid columns, unknown column: {}", echoed(name)))
        })?;
        if columns.contains(&column) {
            return Err(ApiError::bad(format!(
                "invalid columns, duplicate column: {name}"
            )));
        }
        columns.push(column);
    }
    if columns.is_empty() {
        columns.extend_from_slice(DEFAULT_COLUMNS);
    }
    Ok(columns)
}

/// A client-supplied name, cut short so an error body cannot be made arbitrarily large.
fn echoed(name: &str) -> String {
    match name.char_indices().nth(MAX_ECHOED_NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

fn int(out: &mut Vec<u8>, n: i64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    if let Some(s) = s {
        text(out, s);
    }
}

/// RFC 4180 §2: a field holding a comma, a double quote, CR or LF is enclosed in double
/// quotes, and a double quote inside it is doubled. Anything else is written verbatim.
fn text(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// One CSV record. Records end with LF rather than RFC 4180's CRLF: it is what
/// line-oriented tools (`wc -l`, `awk`, `psql \copy`) expect, and every CSV reader
/// accepts it (a CR or LF inside a value is quoted either way).
fn write_row(out: &mut Vec<u8>, s: &Session, columns: &[Column]) {
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        c.write(s, out);
    }
    out.push(b'\n');
}

/// The first line, at the start of the first chunk's buffer.
fn header_row(columns: &[Column]) -> Vec<u8> {
    let mut out = chunk_buffer();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(c.name().as_bytes());
    }
    out.push(b'\n');
    out
}

/// Where the rows come from.
enum Rows {
    /// A snapshot of the index taken when the request arrived (pointers only: the
    /// sessions themselves are shared with the index).
    Memory(std::vec::IntoIter<Arc<Session>>),
    /// The rows of `stream_sessions`; dropping the stream stops the query.
    Database(BoxStream<'static, Result<Session, StoreError>>),
}

/// The state of a download between two chunks.
struct Export {
    /// The export slot, released when the body is done or dropped (client gone).
    _permit: tokio::sync::OwnedSemaphorePermit,
    rows: Rows,
    columns: Vec<Column>,
    /// The header row, until the first chunk takes it.
    header: Option<Vec<u8>>,
    /// Rows written so far, for the log.
    written: u64,
    finished: bool,
}

impl Export {
    /// The next chunk: at least `CHUNK_BYTES` unless the rows ran out; `None` at the end.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.finished {
            return None;
        }
        let mut buf = self.header.take().unwrap_or_else(chunk_buffer);
        while buf.len() < CHUNK_BYTES {
            let more = match &mut self.rows {
                Rows::Memory(sessions) => sessions
                    .next()
                    .map(|s| write_row(&mut buf, &s, &self.columns))
                    .is_some(),
                Rows::Database(rows) => match rows.next().await {
                    Some(Ok(s)) => {
                        write_row(&mut buf, &s, &self.columns);
                        true
                    }
                    Some(Err(e)) => return Some(Err(self.abort(e))),
                    None => false,
                },
            };
            if !more {
                self.finished = true;
                tracing::debug!(rows = self.written, "CSV export complete");
                break;
            }
            self.written += 1;
        }
        (!buf.is_empty()).then(|| Ok(Bytes::from(buf)))
    }

    /// A store error after the status line went out: all that is left is to cut the
    /// transfer short (hyper then sends no final chunk), so that the client sees a failed
    /// download rather than a complete-looking partial file.
    fn abort(&mut self, e: StoreError) -> std::io::Error {
        self.finished = true;
        if e.is_transient() {
            tracing::warn!(error = %e, rows = self.written, "CSV export cut short: store down");
        } else {
            tracing::error!(error = %e, rows = self.written, "CSV export cut short");
        }
        std::io::Error::other("export aborted: store error")
    }
}

/// Room for a chunk and the row that crosses the threshold, so it is seldom reallocated.
fn chunk_buffer() -> Vec<u8> {
    Vec::with_capacity(CHUNK_BYTES + 4096)
}

/// `GET /api/sessions/export` (permission `sessions.view`, the caller's scope).
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let params = Params::parse(raw.as_deref());
    let list = ListParams::parse_unpaged(&params)?;
    match params.get("format").map(str::to_ascii_lowercase).as_deref() {
        None | Some("csv") => {}
        Some(_) => return Err(ApiError::bad("invalid format, must be csv")),
    }
    let columns = parse_columns(params.get("columns"))?;
    // Held until the body is finished or dropped: an export occupies a database
    // connection for its whole download.
    let permit = Arc::clone(&state.export_slots)
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyExports)?;
    let scope = Scope::of(&caller, &state.store).await?;

    // Counted first so that 413 is an ordinary error response, not a truncated download.
    // Rows committed between the count and the query are exported too: the cap bounds the
    // cost of an export, it is not an exact row budget.
    let max = state.limits.export_max_rows;
    let (rows, status) = match list.status {
        StatusFilter::Active => {
            let sessions = active(&state.index, &scope, &list);
            if i64::try_from(sessions.len()).unwrap_or(i64::MAX) > max {
                return Err(ApiError::TooManyRows);
            }
            (Rows::Memory(sessions.into_iter()), "active")
        }
        StatusFilter::Closed | StatusFilter::All => {
            let query = list.query(scope.filter());
            if state.store.count_sessions(&query).await? > max {
                return Err(ApiError::TooManyRows);
            }
            let status = if list.status == StatusFilter::Closed {
                "closed"
            } else {
                "all"
            };
            (Rows::Database(state.store.stream_sessions(&query)), status)
        }
    };

    let source = if list.archive { "archive-" } else { "" };
    let filename = format!(
        "attachment; filename=\"sessions-{source}{status}-{}.csv\"",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let disposition = HeaderValue::from_str(&filename)
        .map_err(|e| ApiError::Internal(format!("export filename header: {e}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                // Exactly what the contract names; the body is UTF-8 (attribute text is decoded
                // as UTF-8 on ingest, invalid bytes replaced).
                HeaderValue::from_static("text/csv"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(chunks(rows, columns, permit)),
    )
        .into_response())
}

/// The body: the header row, then the rows, in chunks of about `CHUNK_BYTES`, produced
/// only as fast as the connection takes them.
fn chunks(
    rows: Rows,
    columns: Vec<Column>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let export = Export {
        _permit: permit,
        header: Some(header_row(&columns)),
        rows,
        columns,
        written: 0,
        finished: false,
    };
    futures_util::stream::unfold(export, |mut export| async move {
        let chunk = export.next_chunk().await?;
        Some((chunk, export))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut out = Vec::new();
        text(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_quoted_only_when_rfc_4180_requires_it() {
        assert_eq!(field("bob@example.lb"), "bob@example.lb");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(field(""), "");
        // Formula-looking values are data, left as they are (see the module doc).
        assert_eq!(field("=1+2"), "=1+2");
    }

    #[test]
    fn columns_default_to_the_contract_header_and_reject_unknown_names() {
        let header = header_row(&parse_columns(None).unwrap());
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,\
             acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause\n"
        );
        assert_eq!(
            parse_columns(Some(" username , nas_id,")).unwrap(),
            [Column::UserName, Column::NasId]
        );
        assert_eq!(parse_columns(Some(",")).unwrap(), DEFAULT_COLUMNS);
        assert_eq!(
            parse_columns(Some("username,password"))
                .unwrap_err()
                .to_string(),
            "invalid columns, unknown column: password"
        );
        assert!(
            parse_columns(Some("username,username"))
                .unwrap_err()
                .to_string()
                .starts_with("invalid columns, duplicate column")
        );
        let long = "x".repeat(1000);
        assert!(parse_columns(Some(&long)).unwrap_err().to_string().len() < 120);
    }

    fn session() -> Session {
        use crate::sessions::SessionKey;
        use crate::sessions::model::Fields;
        Session {
            radacctid: 7,
            acctuniqueid: "0123456789abcdef0123456789abcdef".into(),
            key: SessionKey::for_row(None, "0123456789abcdef0123456789abcdef"),
            nas_id: Some(2),
            fields: Fields {
                username: "o'neil,jr@example.lb".into(),
                acctsessionid: "8a3f9c01".into(),
                nasipaddress: "10.0.0.1".parse().ok(),
                nasportid: Some("ether2".into()),
                framedipaddress: "100.64.0.9".parse().ok(),
                callingstationid: Some("AA:BB:CC:DD:EE:01".into()),
                ..Fields::default()
            },
            start: 1_778_573_662,
            update: 1_778_588_294,
            stop: Some(1_778_588_294),
            interval: None,
            session_time: 14632,
            input_octets: 1_234_567_890,
            output_octets: 9_876_543_210,
            terminate_cause: Some("User-Request".into()),
            connectinfo_stop: None,
            stop_source: None,
        }
    }

    #[test]
    fn a_row_shows_what_the_session_object_shows() {
        let mut out = Vec::new();
        write_row(&mut out, &session(), DEFAULT_COLUMNS);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7,\"o'neil,jr@example.lb\",10.0.0.1,100.64.0.9,2026-05-12T08:14:22Z,\
             2026-05-12T12:18:14Z,14632,1234567890,9876543210,User-Request\n"
        );
        let mut open = session();
        open.stop = None;
        open.terminate_cause = None;
        open.fields.framedipaddress = None;
        let mut out = Vec::new();
        write_row(&mut out, &open, DEFAULT_COLUMNS);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7,\"o'neil,jr@example.lb\",10.0.0.1,,2026-05-12T08:14:22Z,,14632,1234567890,\
             9876543210,\n"
        );
    }

    #[test]
    fn every_session_object_field_is_a_column() {
        let s = session();
        let view = serde_json::to_value(super::super::view::SessionView::from(&s)).unwrap();
        let mut fields: Vec<_> = view.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        let mut names: Vec<_> = ALL_COLUMNS.iter().map(|c| c.name().to_owned()).collect();
        names.sort();
        assert_eq!(names, fields);
    }

    async fn collect(rows: Rows) -> Vec<Result<Bytes, std::io::Error>> {
        use futures_util::StreamExt;
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        chunks(rows, vec![Column::RadAcctId, Column::UserName], permit)
            .collect()
            .await
    }

    #[tokio::test]
    async fn rows_are_sent_in_chunks_of_about_64_kib() {
        let sessions: Vec<_> = (1..=20_000)
            .map(|i| {
                let mut s = session();
                s.radacctid = i;
                Arc::new(s)
            })
            .collect();
        let out = collect(Rows::Memory(sessions.into_iter())).await;
        let chunks: Vec<Bytes> = out.into_iter().map(Result::unwrap).collect();
        assert!(chunks.len() > 1);
        let (last, full) = chunks.split_last().unwrap();
        for c in full {
            assert!(
                (CHUNK_BYTES..CHUNK_BYTES + 1024).contains(&c.len()),
                "{}",
                c.len()
            );
        }
        assert!(!last.is_empty() && last.len() <= CHUNK_BYTES + 1024);
        let text = String::from_utf8(chunks.concat()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 20_001);
        assert_eq!(lines[0], "radacctid,username");
        assert_eq!(lines[20_000], "20000,\"o'neil,jr@example.lb\"");
    }

    #[tokio::test]
    async fn an_empty_export_is_the_header_alone() {
        let out = collect(Rows::Memory(Vec::new().into_iter())).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().as_ref(), b"radacctid,username\n");
    }

    #[tokio::test]
    async fn a_store_error_mid_stream_ends_the_body_with_an_error() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let rows = crate::sessions::store::receiver_stream(rx);
        let (store, _) = tokio::join!(collect(Rows::Database(rows)), async move {
            for i in 0..3000 {
                let mut s = session();
                s.radacctid = i;
                tx.send(Ok(s)).await.unwrap();
            }
            tx.send(Err(StoreError::NotFound("gone".into())))
                .await
                .unwrap();
            // Anything after the error is never read.
            let _ = tx.send(Ok(session())).await;
        });
        let (last, before) = store.split_last().unwrap();
        assert!(last.is_err(), "the transfer is cut short, not completed");
        assert!(!before.is_empty() && before.iter().all(Result::is_ok));
    }
}
