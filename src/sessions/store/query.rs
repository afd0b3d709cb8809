//! Session queries for the API on the database: filtered, sorted, paginated lists,
//! counts, streamed exports and period statistics over `radacct` (closed sessions, or all).
//! Open sessions are answered from the index; this is for what only the database has.
//!
//! The WHERE clause is built once for both dialects from a [`SessionQuery`]; every value
//! is a bound parameter, and the SQL text only ever contains fragments written here.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::AssertSqlSafe;
use tokio::sync::mpsc;

use super::{Store, StoreError, postgres, session_from_row, sqlite};
use crate::sessions::model::{Session, Timestamp};

/// Which sessions by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Active,
    Closed,
    All,
}

/// Sort columns the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    StartTime,
    InputOctets,
    OutputOctets,
    SessionTime,
}

impl SortKey {
    pub fn column(self) -> &'static str {
        match self {
            SortKey::StartTime => "acctstarttime",
            SortKey::InputOctets => "acctinputoctets",
            SortKey::OutputOctets => "acctoutputoctets",
            SortKey::SessionTime => "acctsessiontime",
        }
    }
}

/// Who may be seen: everything, the subscribers of a set of resellers, or one username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeFilter {
    All,
    Resellers(Vec<i64>),
    User(String),
}

#[derive(Debug, Clone)]
pub struct SessionQuery {
    pub status: StatusFilter,
    pub scope: ScopeFilter,
    pub nas_id: Option<i64>,
    /// Substring of username, framedipaddress or callingstationid (case-insensitive).
    pub search: Option<String>,
    /// Sessions started at or after / at or before (Unix seconds).
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: i64,
    pub limit: i64,
    /// Read `radacct_archive` (sessions the archiver moved) instead of `radacct`.
    pub archive: bool,
}

impl SessionQuery {
    fn table(&self) -> &'static str {
        if self.archive {
            "radacct_archive"
        } else {
            "radacct"
        }
    }
}

/// A backend's row source reading `table` instead of `radacct`.
fn source_for(row_source: &'static str, table: &str) -> std::borrow::Cow<'static, str> {
    if table == "radacct" {
        std::borrow::Cow::Borrowed(row_source)
    } else {
        std::borrow::Cow::Owned(format!(
            "{} FROM {table}",
            row_source.trim_end_matches(" FROM radacct")
        ))
    }
}

/// Totals over the sessions active at any time since a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodStats {
    pub total_sessions: i64,
    pub unique_users: i64,
    pub total_session_seconds: i64,
    pub total_input_octets: i64,
    pub total_output_octets: i64,
    /// `(nas_id, nasipaddress, sessions)`, most sessions first.
    pub top_nas: Vec<(Option<i64>, Option<String>, i64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

enum Arg {
    Int(i64),
    Text(String),
    Ints(Vec<i64>),
}

impl Arg {
    /// The same value bound on a rusqlite statement (`Ints` as the JSON array that the
    /// SQLite dialect's `json_each` reads, as `BindInts` binds it for sqlx).
    fn to_sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self {
            Arg::Int(v) => Value::Integer(*v),
            Arg::Text(v) => Value::Text(v.clone()),
            Arg::Ints(v) => Value::Text(ints_json(v)),
        }
    }
}

struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    fn placeholder(&mut self, d: Dialect, arg: Arg) -> String {
        self.args.push(arg);
        match d {
            Dialect::Sqlite => format!("?{}", self.args.len()),
            Dialect::Postgres => format!("${}", self.args.len()),
        }
    }

    fn and(&mut self, clause: &str) {
        self.sql.push_str(if self.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        self.sql.push_str(clause);
    }
}

fn time_param(d: Dialect, p: &str) -> String {
    match d {
        Dialect::Sqlite => format!("datetime({p}, 'unixepoch')"),
        Dialect::Postgres => format!("to_timestamp({p})"),
    }
}

fn int_list(d: Dialect, p: &str) -> String {
    match d {
        Dialect::Sqlite => format!("(SELECT value FROM json_each({p}))"),
        Dialect::Postgres => format!("(SELECT unnest({p}::int8[]))"),
    }
}

/// `LIKE` pattern matching `s` anywhere, with the wildcards in `s` taken literally.
fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn scope_clause(d: Dialect, w: &mut Where, scope: &ScopeFilter) {
    match scope {
        ScopeFilter::All => {}
        ScopeFilter::Resellers(ids) => {
            let p = w.placeholder(d, Arg::Ints(ids.clone()));
            let list = int_list(d, &p);
            w.and(&format!(
                "username IN (SELECT username FROM subscribers WHERE reseller_id IN {list})"
            ));
        }
        ScopeFilter::User(u) => {
            let p = w.placeholder(d, Arg::Text(u.clone()));
            w.and(&format!("username = {p}"));
        }
    }
}

fn build_where(d: Dialect, q: &SessionQuery) -> Where {
    let mut w = Where {
        sql: String::new(),
        args: Vec::new(),
    };
    match q.status {
        StatusFilter::Active => w.and("acctstoptime IS NULL"),
        StatusFilter::Closed => w.and("acctstoptime IS NOT NULL"),
        StatusFilter::All => {}
    }
    scope_clause(d, &mut w, &q.scope);
    if let Some(nas) = q.nas_id {
        let p = w.placeholder(d, Arg::Int(nas));
        w.and(&format!("nas_id = {p}"));
    }
    if let Some(s) = &q.search {
        let p = w.placeholder(d, Arg::Text(contains_pattern(s)));
        let (like, fip) = match d {
            Dialect::Sqlite => ("LIKE", "framedipaddress"),
            Dialect::Postgres => ("ILIKE", "host(framedipaddress)"),
        };
        w.and(&format!(
            "(username {like} {p} ESCAPE '\\' OR {fip} {like} {p} ESCAPE '\\' \
             OR callingstationid {like} {p} ESCAPE '\\')"
        ));
    }
    if let Some(from) = q.from {
        let p = w.placeholder(d, Arg::Int(from));
        w.and(&format!("acctstarttime >= {}", time_param(d, &p)));
    }
    if let Some(to) = q.to {
        let p = w.placeholder(d, Arg::Int(to));
        w.and(&format!("acctstarttime <= {}", time_param(d, &p)));
    }
    w
}

/// The API's order: the sort column with NULLs as its smallest value (first ascending,
/// last descending), then `radacctid` in the same direction — as the in-memory list of
/// open sessions orders them. It is SQLite's natural order, and on PostgreSQL exactly the
/// order of the `(column DESC NULLS LAST, radacctid DESC)` indexes read forwards (DESC) or
/// backwards (ASC), so a page is an index walk in both directions.
fn order_by(d: Dialect, q: &SessionQuery) -> String {
    let col = q.sort.column();
    match (d, q.descending) {
        (Dialect::Sqlite, true) => format!(" ORDER BY {col} DESC, radacctid DESC"),
        (Dialect::Sqlite, false) => format!(" ORDER BY {col} ASC, radacctid ASC"),
        (Dialect::Postgres, true) => format!(" ORDER BY {col} DESC NULLS LAST, radacctid DESC"),
        (Dialect::Postgres, false) => {
            format!(" ORDER BY {col} ASC NULLS FIRST, radacctid ASC")
        }
    }
}

macro_rules! bind_args {
    ($query:expr, $args:expr, $dialect:expr) => {{
        let _ = $dialect;
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::Ints(v) => query.bind_ints(v),
            };
        }
        query
    }};
}

/// One method name for both backends: PostgreSQL binds an array, SQLite a JSON array for
/// `json_each`.
trait BindInts: Sized {
    fn bind_ints(self, v: Vec<i64>) -> Self;
}

/// A list of ids as SQLite reads it with `json_each`.
fn ints_json(v: &[i64]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl<'q> BindInts for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    fn bind_ints(self, v: Vec<i64>) -> Self {
        self.bind(ints_json(&v))
    }
}

impl<'q> BindInts for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_ints(self, v: Vec<i64>) -> Self {
        self.bind(v)
    }
}

impl<'q, O> BindInts
    for sqlx::query::QueryScalar<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>
{
    fn bind_ints(self, v: Vec<i64>) -> Self {
        self.bind(ints_json(&v))
    }
}

impl<'q, O> BindInts
    for sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
{
    fn bind_ints(self, v: Vec<i64>) -> Self {
        self.bind(v)
    }
}

impl Store {
    fn dialect(&self) -> Dialect {
        match self {
            Store::Sqlite(_) => Dialect::Sqlite,
            Store::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The statement of [`Store::list_sessions`] and its arguments.
    fn list_query(&self, q: &SessionQuery) -> (String, Vec<Arg>) {
        let d = self.dialect();
        let mut w = build_where(d, q);
        let limit = w.placeholder(d, Arg::Int(q.limit));
        let offset = w.placeholder(d, Arg::Int(q.offset));
        let order = order_by(d, q);
        let source = match d {
            Dialect::Sqlite => source_for(sqlite::ROW_SOURCE, q.table()),
            Dialect::Postgres => source_for(postgres::ROW_SOURCE, q.table()),
        };
        let sql = format!("{source}{}{order} LIMIT {limit} OFFSET {offset}", w.sql);
        (sql, w.args)
    }

    /// The SQL text [`Store::list_sessions`] runs for `q` (placeholders unbound), for
    /// tests that check its plan.
    #[doc(hidden)]
    pub fn list_sessions_sql(&self, q: &SessionQuery) -> String {
        self.list_query(q).0
    }

    /// One page of sessions matching `q`.
    pub async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<Session>, StoreError> {
        let d = self.dialect();
        let (sql, args) = self.list_query(q);
        match self {
            Store::Sqlite(s) => {
                let rows = bind_args!(sqlx::query(AssertSqlSafe(sql)), args, d)
                    .fetch_all(s.pool())
                    .await?;
                rows.iter()
                    .map(|r| session_from_row!(r).map_err(StoreError::from))
                    .collect()
            }
            Store::Postgres(s) => {
                let rows = bind_args!(sqlx::query(AssertSqlSafe(sql)), args, d)
                    .fetch_all(s.pool())
                    .await?;
                rows.iter()
                    .map(|r| session_from_row!(r).map_err(StoreError::from))
                    .collect()
            }
        }
    }

    /// How many sessions match `q` (paging ignored).
    pub async fn count_sessions(&self, q: &SessionQuery) -> Result<i64, StoreError> {
        let d = self.dialect();
        let w = build_where(d, q);
        let sql = format!("SELECT COUNT(*) FROM {}{}", q.table(), w.sql);
        Ok(match self {
            Store::Sqlite(s) => {
                bind_args!(sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)), w.args, d)
                    .fetch_one(s.pool())
                    .await?
            }
            Store::Postgres(s) => {
                bind_args!(sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)), w.args, d)
                    .fetch_one(s.pool())
                    .await?
            }
        })
    }

    /// Stream every session matching `q` (paging ignored): memory stays flat whatever the
    /// size, and dropping the stream (the HTTP client went away) stops the query. SQLite
    /// files are read in bulk on a blocking thread (`sqlite_bulk`); otherwise rows come
    /// from sqlx through a small channel.
    pub fn stream_sessions(
        &self,
        q: &SessionQuery,
    ) -> BoxStream<'static, Result<Session, StoreError>> {
        let d = self.dialect();
        let w = build_where(d, q);
        let order = order_by(d, q);
        let table = q.table();
        if let Store::Sqlite(s) = self {
            let sql = format!("{}{}{order}", source_for(sqlite::ROW_SOURCE, table), w.sql);
            let params = w.args.iter().map(Arg::to_sqlite).collect();
            if let Some(rows) = s.bulk_sessions(sql, params) {
                return rows;
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let store = self.clone();
        tokio::spawn(async move {
            macro_rules! pump {
                ($pool:expr, $source:expr) => {{
                    let sql = format!("{}{}{order}", $source, w.sql);
                    let query = bind_args!(sqlx::query(AssertSqlSafe(sql)), w.args, d);
                    let mut rows = query.fetch($pool);
                    while let Some(row) = rows.next().await {
                        let item = row
                            .and_then(|r| session_from_row!(&r))
                            .map_err(StoreError::from);
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                }};
            }
            match &store {
                Store::Sqlite(s) => pump!(s.pool(), source_for(sqlite::ROW_SOURCE, table)),
                Store::Postgres(s) => pump!(s.pool(), source_for(postgres::ROW_SOURCE, table)),
            }
        });
        super::receiver_stream(rx)
    }

    /// Totals over sessions in scope that were active at any time since `since`.
    pub async fn period_stats(
        &self,
        since: Timestamp,
        scope: &ScopeFilter,
    ) -> Result<PeriodStats, StoreError> {
        use sqlx::Row as _;
        let d = self.dialect();
        let mut w = Where {
            sql: String::new(),
            args: Vec::new(),
        };
        let p = w.placeholder(d, Arg::Int(since));
        w.and(&format!(
            "(acctstoptime IS NULL OR acctstoptime >= {})",
            time_param(d, &p)
        ));
        scope_clause(d, &mut w, scope);
        let totals = format!(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT username) AS users, \
             CAST(COALESCE(SUM(acctsessiontime), 0) AS BIGINT) AS secs, \
             CAST(COALESCE(SUM(acctinputoctets), 0) AS BIGINT) AS inp, \
             CAST(COALESCE(SUM(acctoutputoctets), 0) AS BIGINT) AS outp FROM radacct{}",
            w.sql
        );
        let nasip = match d {
            Dialect::Sqlite => "nasipaddress",
            Dialect::Postgres => "host(nasipaddress)",
        };
        let top = format!(
            "SELECT nas_id, {nasip} AS ip, COUNT(*) AS n FROM radacct{} \
             GROUP BY nas_id, {nasip} ORDER BY n DESC, ip LIMIT 5",
            w.sql
        );
        macro_rules! run {
            ($pool:expr) => {{
                let t = bind_args!(sqlx::query(AssertSqlSafe(totals)), w.args, d)
                    .fetch_one($pool)
                    .await?;
                let mut w2 = Where {
                    sql: String::new(),
                    args: Vec::new(),
                };
                let p = w2.placeholder(d, Arg::Int(since));
                w2.and(&format!(
                    "(acctstoptime IS NULL OR acctstoptime >= {})",
                    time_param(d, &p)
                ));
                scope_clause(d, &mut w2, scope);
                let rows = bind_args!(sqlx::query(AssertSqlSafe(top)), w2.args, d)
                    .fetch_all($pool)
                    .await?;
                let mut top_nas = Vec::with_capacity(rows.len());
                for r in &rows {
                    top_nas.push((
                        r.try_get::<Option<i64>, _>("nas_id")?,
                        r.try_get::<Option<String>, _>("ip")?,
                        r.try_get::<i64, _>("n")?,
                    ));
                }
                PeriodStats {
                    total_sessions: t.try_get("n")?,
                    unique_users: t.try_get("users")?,
                    total_session_seconds: t.try_get("secs")?,
                    total_input_octets: t.try_get("inp")?,
                    total_output_octets: t.try_get("outp")?,
                    top_nas,
                }
            }};
        }
        Ok(match self {
            Store::Sqlite(s) => run!(s.pool()),
            Store::Postgres(s) => run!(s.pool()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> SessionQuery {
        SessionQuery {
            status: StatusFilter::Closed,
            scope: ScopeFilter::Resellers(vec![1, 2]),
            nas_id: Some(3),
            search: Some("50%_off\\".into()),
            from: Some(10),
            to: Some(20),
            sort: SortKey::InputOctets,
            descending: true,
            offset: 0,
            limit: 50,
            archive: false,
        }
    }

    #[test]
    fn where_clause_binds_every_value() {
        let w = build_where(Dialect::Postgres, &q());
        assert!(w.sql.contains("acctstoptime IS NOT NULL"));
        assert!(w.sql.contains("nas_id = $2"), "{}", w.sql);
        assert!(w.sql.contains("ILIKE $3"), "{}", w.sql);
        assert!(w.sql.contains("to_timestamp($5)"), "{}", w.sql);
        assert_eq!(w.args.len(), 5);
        assert!(!w.sql.contains("50%"), "values never in SQL text");
        let w = build_where(Dialect::Sqlite, &q());
        assert!(w.sql.contains("json_each(?1)"), "{}", w.sql);
    }

    #[test]
    fn archive_queries_read_the_archive_table() {
        let src = source_for(postgres::ROW_SOURCE, "radacct_archive");
        assert!(src.ends_with(" FROM radacct_archive"), "{src}");
        assert!(!src.contains(" FROM radacct "), "{src}");
        assert_eq!(
            source_for(sqlite::ROW_SOURCE, "radacct"),
            sqlite::ROW_SOURCE
        );
    }

    #[test]
    fn nulls_sort_as_the_smallest_value_in_both_dialects() {
        let mut query = q();
        query.sort = SortKey::StartTime;
        assert_eq!(
            order_by(Dialect::Postgres, &query),
            " ORDER BY acctstarttime DESC NULLS LAST, radacctid DESC"
        );
        query.descending = false;
        assert_eq!(
            order_by(Dialect::Postgres, &query),
            " ORDER BY acctstarttime ASC NULLS FIRST, radacctid ASC"
        );
        assert_eq!(
            order_by(Dialect::Sqlite, &query),
            " ORDER BY acctstarttime ASC, radacctid ASC"
        );
    }

    #[test]
    fn search_wildcards_are_literal() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
