//! The store: `radacct` and its companion tables on SQLite (embedded default) or
//! PostgreSQL (production), behind one small interface.
//!
//! Two concrete sqlx pools rather than the Any driver: each backend keeps its native types
//! (`inet`, `timestamptz` on PostgreSQL; FreeRADIUS's text datetimes on SQLite) and its own
//! SQL where it must differ. Both bind the same Rust values — times as Unix seconds,
//! addresses as text — and convert in SQL (`to_timestamp($1)`, `$2::inet`,
//! `datetime(?1, 'unixepoch')`), so the row-building code is shared.

pub mod audit;
pub mod directory;
pub mod jobs;
pub mod postgres;
pub mod query;
pub mod sqlite;
mod sqlite_bulk;
mod sqlite_writer;

use std::collections::HashMap;
use std::net::IpAddr;

use futures_util::stream::BoxStream;

use crate::config::{DatabaseConfig, NasConfig};

use super::key::SessionKey;
use super::model::{Event, Session, StopSource};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// From radacctd's own rusqlite connections: bulk reads and the group commit.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the SQLite bulk reader stopped before the end of the rows")]
    ReaderStopped,
    #[error("the SQLite commit thread panicked (a bug; the batch was not committed)")]
    CommitThread,
    #[error("the commit was abandoned (shutdown deadline) and rolled back")]
    Abandoned,
    #[error("not found: {0}")]
    NotFound(String),
    /// The SQLite file has a `radacct` table radacctd did not create (see
    /// `sqlite::refuse_foreign_radacct`).
    #[error(
        "the SQLite database already has a radacct table without radacctd's columns ({0}): \
         a FreeRADIUS SQLite database? radacctd adopts an existing FreeRADIUS database on \
         PostgreSQL only (FreeRADIUS 3.2 stores times in SQLite as epoch integers, radacctd \
         as UTC text); point radacctd at a new SQLite file"
    )]
    ForeignRadacct(String),
    #[error(
        "{0} closed row(s) were not archived: radacct_archive already holds a different row \
         with the same radacctid (ids reused after a restore?); they stay in radacct until \
         resolved by hand"
    )]
    ArchiveConflict(u64),
}

impl StoreError {
    /// Whether retrying the same statements later can succeed (connection lost, database
    /// locked or read-only for now, pool exhausted) as opposed to this data being refused.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::Database(db) => {
                    // Constraint violations and bad data are about the rows; everything
                    // else a server reports (disk full, read-only, shutdown, serialization)
                    // clears up by itself or by an operator.
                    !matches!(
                        db.kind(),
                        sqlx::error::ErrorKind::UniqueViolation
                            | sqlx::error::ErrorKind::ForeignKeyViolation
                            | sqlx::error::ErrorKind::NotNullViolation
                            | sqlx::error::ErrorKind::CheckViolation
                    ) && !is_data_error(db.code().as_deref())
                }
                sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::Encode(_) => false,
                _ => true,
            },
            // As for sqlx above: SQLite refusing these values (a constraint, a value too
            // big or of the wrong type) or the statement (SQLITE_ERROR: no such column) is
            // not cured by waiting; busy, locked, read-only, out of disk, I/O failing or
            // any other state of the database is, or by an operator.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => !matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::ParameterOutOfRange
                    | rusqlite::ErrorCode::Unknown
            ),
            // Decoding a value (wrong type, bad UTF-8) or binding one: about the rows.
            StoreError::Sqlite(_) | StoreError::CommitThread | StoreError::Abandoned => false,
            StoreError::ReaderStopped => true,
            StoreError::Migrate(_)
            | StoreError::UnsupportedUrl
            | StoreError::NotFound(_)
            | StoreError::ForeignRadacct(_)
            | StoreError::ArchiveConflict(_) => false,
        }
    }
}

/// PostgreSQL SQLSTATE class 22 (data exception) is about the values, and class 42 (syntax
/// error or access rule violation: undefined column, bad cast) about the statement — not
/// about the server's health; retrying cannot help, and hiding them as "unavailable" would
/// hide bugs.
fn is_data_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("22") || c.starts_with("42"))
}

/// What one committed batch writes: each touched row once, in its final state for the
/// batch, plus the history events and the subscribers whose online flag may have changed.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows with `radacctid == 0` are inserted, the others updated.
    pub rows: Vec<Session>,
    /// Per row of `rows` (or empty: all `false`): `true` when only the row's progress
    /// changed since it was read — `acctupdatetime`, `acctinterval`, `acctsessiontime`,
    /// the octet counters — as an Interim-Update does. A store may then write only those
    /// columns, which on SQLite spares rewriting the entries of every other index.
    pub progress: Vec<bool>,
    /// History events as `(index into rows, event)`, in arrival order.
    pub events: Vec<(usize, Event)>,
    /// Usernames whose `subscribers.is_online` must be recomputed.
    pub usernames: Vec<Box<str>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.usernames.is_empty()
    }
}

/// The RouterOS API-SSL columns of a `nas` row, read tolerantly: the row must stay usable
/// for accounting whatever someone wrote into them by hand. A fingerprint that does not
/// parse while TLS is on would mean "connect to whoever answers" if ignored, so the API
/// fallback of that NAS is switched off instead (password dropped) and a warning logged;
/// the RFC 5176 path is unaffected.
pub(crate) fn nas_api_tls_columns(
    nasname: &str,
    api_tls: Option<bool>,
    fingerprint: Option<String>,
    api_password: Option<String>,
) -> (bool, Option<[u8; 32]>, Option<String>) {
    let api_tls = api_tls.unwrap_or(false);
    match fingerprint
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        None => (api_tls, None, api_password),
        Some(f) => match crate::coa::tls::parse_fingerprint(f) {
            Some(pin) => (api_tls, Some(pin), api_password),
            None if api_tls => {
                tracing::warn!(
                    nas = nasname,
                    "nas.api_tls_fingerprint is not a SHA-256 fingerprint; the RouterOS API \
                     fallback is disabled for this NAS until it is fixed (radacctd nas add)"
                );
                (api_tls, None, None)
            }
            None => (api_tls, None, api_password),
        },
    }
}

/// A NAS client as stored in the `nas` table.
#[derive(Clone, PartialEq, Eq)]
pub struct NasRow {
    pub id: i64,
    pub config: NasConfig,
}

impl std::fmt::Debug for NasRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasRow")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl Store {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        if cfg.url.starts_with("sqlite:") {
            Ok(Store::Sqlite(sqlite::SqliteStore::connect(cfg).await?))
        } else if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
            Ok(Store::Postgres(postgres::PgStore::connect(cfg).await?))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Apply the embedded migrations, then ensure every index (EnsureIndexes), all before
    /// returning: `radacctd migrate` and the other commands.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.migrate().await,
            Store::Postgres(s) => s.migrate().await,
        }
    }

    /// What the server does before it listens: the migrations and the indexes ingest
    /// needs. On PostgreSQL the Sessions API's indexes are left to
    /// [`Store::ensure_api_indexes`], which the server runs in the background (a build on a
    /// big `radacct` takes minutes), unless the tables are still small; on SQLite, where
    /// any index build stops writers, every index is built here.
    pub async fn migrate_for_ingest(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.migrate().await,
            Store::Postgres(s) => s.migrate_for_ingest().await,
        }
    }

    /// The Sessions API's indexes (PostgreSQL: built concurrently, writers keep writing;
    /// SQLite: already built by [`Store::migrate_for_ingest`]).
    pub async fn ensure_api_indexes(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.ensure_api_indexes().await,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Every row of each key, open or closed, oldest first, in one query. Rows written by
    /// FreeRADIUS are found by `acctuniqueid`, radacctd's own also by `sessionkey`.
    pub async fn rows_for_keys(
        &self,
        keys: &[SessionKey],
    ) -> Result<HashMap<SessionKey, Vec<Session>>, StoreError> {
        let mut out: HashMap<SessionKey, Vec<Session>> = HashMap::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(out);
        }
        let hex: Vec<String> = keys.iter().map(SessionKey::to_hex).collect();
        let rows = match self {
            Store::Sqlite(s) => s.rows_for_keys(&hex).await?,
            Store::Postgres(s) => s.rows_for_keys(&hex).await?,
        };
        for row in rows {
            out.entry(row.key).or_default().push(row);
        }
        for rows in out.values_mut() {
            rows.sort_by_key(|r| (r.start, r.radacctid));
        }
        Ok(out)
    }

    /// Every row of one key, oldest first.
    pub async fn rows_for_key(&self, key: &SessionKey) -> Result<Vec<Session>, StoreError> {
        let mut map = self.rows_for_keys(std::slice::from_ref(key)).await?;
        Ok(map.remove(key).unwrap_or_default())
    }

    /// Every open row, for rebuilding the index: a stream, so that a million open sessions
    /// are never all held as rows at once.
    pub fn open_sessions(&self) -> BoxStream<'_, Result<Session, StoreError>> {
        match self {
            Store::Sqlite(s) => s.open_sessions(),
            Store::Postgres(s) => s.open_sessions(),
        }
    }

    /// Write a batch in one transaction; returns the `radacctid` of each row of
    /// `batch.rows`, in order. Nothing is written if it fails.
    pub async fn commit(&self, batch: Batch) -> Result<(Batch, Vec<i64>), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit(batch).await,
            Store::Postgres(s) => {
                let ids = s.commit(&batch).await?;
                Ok((batch, ids))
            }
        }
    }

    pub async fn session_by_id(&self, radacctid: i64) -> Result<Option<Session>, StoreError> {
        match self {
            Store::Sqlite(s) => s.session_by_id(radacctid).await,
            Store::Postgres(s) => s.session_by_id(radacctid).await,
        }
    }

    pub async fn events_for(&self, radacctid: i64) -> Result<Vec<Event>, StoreError> {
        match self {
            Store::Sqlite(s) => s.events_for(radacctid).await,
            Store::Postgres(s) => s.events_for(radacctid).await,
        }
    }

    pub async fn subscriber_online(&self, username: &str) -> Result<Option<bool>, StoreError> {
        match self {
            Store::Sqlite(s) => s.subscriber_online(username).await,
            Store::Postgres(s) => s.subscriber_online(username).await,
        }
    }

    pub async fn upsert_subscriber(
        &self,
        username: &str,
        reseller_id: Option<i64>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.upsert_subscriber(username, reseller_id).await,
            Store::Postgres(s) => s.upsert_subscriber(username, reseller_id).await,
        }
    }

    pub async fn nas_list(&self) -> Result<Vec<NasRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.nas_list().await,
            Store::Postgres(s) => s.nas_list().await,
        }
    }

    /// Insert or update (matched by IP address) a NAS; returns its id.
    pub async fn nas_upsert(&self, nas: &NasConfig) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.nas_upsert(nas).await,
            Store::Postgres(s) => s.nas_upsert(nas).await,
        }
    }

    /// Remove a NAS by name or IP address; returns how many rows went.
    pub async fn nas_remove(&self, name_or_ip: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.nas_remove(name_or_ip).await,
            Store::Postgres(s) => s.nas_remove(name_or_ip).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// The values of one row as both backends bind them. Keeping this one struct means the
/// two backends cannot disagree about what goes into which column.
pub(crate) struct RowValues<'a> {
    pub acctsessionid: &'a str,
    pub acctuniqueid: &'a str,
    pub sessionkey: String,
    pub nas_id: Option<i64>,
    pub username: &'a str,
    pub realm: Option<&'a str>,
    pub nasipaddress: Option<String>,
    pub nasportid: Option<&'a str>,
    pub nasporttype: Option<&'a str>,
    pub acctstarttime: i64,
    pub acctupdatetime: i64,
    pub acctstoptime: Option<i64>,
    pub acctinterval: Option<i64>,
    pub acctsessiontime: i64,
    pub acctauthentic: Option<&'a str>,
    pub connectinfo_start: Option<&'a str>,
    pub connectinfo_stop: Option<&'a str>,
    pub acctinputoctets: i64,
    pub acctoutputoctets: i64,
    pub calledstationid: Option<&'a str>,
    pub callingstationid: Option<&'a str>,
    pub acctterminatecause: Option<&'a str>,
    pub servicetype: Option<&'a str>,
    pub framedprotocol: Option<&'a str>,
    pub framedipaddress: Option<String>,
    pub framedipv6address: Option<&'a str>,
    pub framedipv6prefix: Option<&'a str>,
    pub framedinterfaceid: Option<&'a str>,
    pub delegatedipv6prefix: Option<&'a str>,
    pub class: Option<&'a str>,
    pub stopsource: Option<&'static str>,
}

impl<'a> RowValues<'a> {
    pub fn of(s: &'a Session) -> Self {
        let f = &s.fields;
        RowValues {
            acctsessionid: &f.acctsessionid,
            acctuniqueid: &s.acctuniqueid,
            sessionkey: s.key.to_hex(),
            nas_id: s.nas_id,
            username: &f.username,
            realm: f.realm.as_deref(),
            nasipaddress: f.nasipaddress.map(|ip| ip.to_string()),
            nasportid: f.nasportid.as_deref(),
            nasporttype: f.nasporttype.as_deref(),
            acctstarttime: s.start,
            acctupdatetime: s.update,
            acctstoptime: s.stop,
            acctinterval: s.interval,
            acctsessiontime: s.session_time,
            acctauthentic: f.acctauthentic.as_deref(),
            connectinfo_start: f.connectinfo_start.as_deref(),
            connectinfo_stop: s.connectinfo_stop.as_deref(),
            acctinputoctets: s.input_octets,
            acctoutputoctets: s.output_octets,
            calledstationid: f.calledstationid.as_deref(),
            callingstationid: f.callingstationid.as_deref(),
            acctterminatecause: s.terminate_cause.as_deref(),
            servicetype: f.servicetype.as_deref(),
            framedprotocol: f.framedprotocol.as_deref(),
            framedipaddress: f.framedipaddress.map(|ip| ip.to_string()),
            framedipv6address: f.framedipv6address.as_deref(),
            framedipv6prefix: f.framedipv6prefix.as_deref(),
            framedinterfaceid: f.framedinterfaceid.as_deref(),
            delegatedipv6prefix: f.delegatedipv6prefix.as_deref(),
            class: f.class.as_deref(),
            stopsource: s.stop_source.map(StopSource::as_str),
        }
    }
}

/// Bind a [`RowValues`] to a query in column order (`INSERT_COLUMNS`); used by both
/// backends so that the order is written once.
macro_rules! bind_row {
    ($q:expr, $v:expr) => {{
        let v = $v;
        $q.bind(v.acctsessionid)
            .bind(v.acctuniqueid)
            .bind(v.sessionkey)
            .bind(v.nas_id)
            .bind(v.username)
            .bind(v.realm)
            .bind(v.nasipaddress)
            .bind(v.nasportid)
            .bind(v.nasporttype)
            .bind(v.acctstarttime)
            .bind(v.acctupdatetime)
            .bind(v.acctstoptime)
            .bind(v.acctinterval)
            .bind(v.acctsessiontime)
            .bind(v.acctauthentic)
            .bind(v.connectinfo_start)
            .bind(v.connectinfo_stop)
            .bind(v.acctinputoctets)
            .bind(v.acctoutputoctets)
            .bind(v.calledstationid)
            .bind(v.callingstationid)
            .bind(v.acctterminatecause)
            .bind(v.servicetype)
            .bind(v.framedprotocol)
            .bind(v.framedipaddress)
            .bind(v.framedipv6address)
            .bind(v.framedipv6prefix)
            .bind(v.framedinterfaceid)
            .bind(v.delegatedipv6prefix)
            .bind(v.class)
            .bind(v.stopsource)
    }};
}
pub(crate) use bind_row;

/// Read a row into a [`Session`]. Each backend selects the same column names, with times as
/// Unix seconds (`start_s`, `update_s`, `stop_s`) and addresses as text (`*_t`).
/// A `Session` from a row of `ROW_SOURCE`, read by column name: an sqlx row, or (with the
/// error type and the trait that provides `try_get`) a rusqlite row of `sqlite_bulk`.
macro_rules! session_from_row {
    ($row:expr) => {
        $crate::sessions::store::session_from_row!(@ $row, sqlx::Error, sqlx::Row)
    };
    (@ $row:expr, $err:ty, $get:path) => {{
        use $get as _;
        let row = $row;
        let text = |name: &str| -> Result<Option<Box<str>>, $err> {
            Ok($crate::sessions::store::non_empty(
                row.try_get::<Option<String>, _>(name)?,
            ))
        };
        let acctuniqueid: String = row.try_get("acctuniqueid")?;
        let sessionkey: Option<String> = row.try_get("sessionkey")?;
        let key = $crate::sessions::key::SessionKey::for_row(sessionkey.as_deref(), &acctuniqueid);
        let stop_source = row.try_get::<Option<String>, _>("stopsource")?;
        let stop: Option<i64> = row.try_get("stop_s")?;
        let start: Option<i64> = row.try_get("start_s")?;
        let update: Option<i64> = row.try_get("update_s")?;
        let start = start.or(update).or(stop).unwrap_or(0);
        Ok::<_, $err>($crate::sessions::model::Session {
            radacctid: row.try_get("radacctid")?,
            acctuniqueid: acctuniqueid.into(),
            key,
            nas_id: row.try_get("nas_id")?,
            fields: $crate::sessions::model::Fields {
                username: text("username")?.unwrap_or_default(),
                acctsessionid: text("acctsessionid")?.unwrap_or_default(),
                realm: text("realm")?,
                nasipaddress: $crate::sessions::store::parse_ip(text("nasipaddress_t")?),
                nasportid: text("nasportid")?,
                nasporttype: text("nasporttype")?,
                acctauthentic: text("acctauthentic")?,
                connectinfo_start: text("connectinfo_start")?,
                calledstationid: text("calledstationid")?,
                callingstationid: text("callingstationid")?,
                servicetype: text("servicetype")?,
                framedprotocol: text("framedprotocol")?,
                framedipaddress: $crate::sessions::store::parse_ip(text("framedipaddress_t")?),
                framedipv6address: text("framedipv6address")?,
                framedipv6prefix: text("framedipv6prefix")?,
                framedinterfaceid: text("framedinterfaceid")?,
                delegatedipv6prefix: text("delegatedipv6prefix")?,
                class: text("class")?,
            },
            start,
            update: update.unwrap_or(start),
            stop,
            interval: row.try_get("acctinterval")?,
            session_time: row
                .try_get::<Option<i64>, _>("acctsessiontime")?
                .unwrap_or(0),
            input_octets: row
                .try_get::<Option<i64>, _>("acctinputoctets")?
                .unwrap_or(0),
            output_octets: row
                .try_get::<Option<i64>, _>("acctoutputoctets")?
                .unwrap_or(0),
            terminate_cause: text("acctterminatecause")?,
            connectinfo_stop: text("connectinfo_stop")?,
            stop_source: stop
                .map(|_| $crate::sessions::model::StopSource::parse(stop_source.as_deref())),
        })
    }};
}
pub(crate) use session_from_row;

/// The items of a channel as a stream that ends when every sender is gone.
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> futures_util::stream::BoxStream<'static, T> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
        .boxed()
}

/// FreeRADIUS's SQLite schema writes '' for absent strings; the model says `None`.
pub(crate) fn non_empty(s: Option<String>) -> Option<Box<str>> {
    s.filter(|s| !s.is_empty()).map(String::into_boxed_str)
}

/// Addresses read back as text; FreeRADIUS rows may hold '' or '0.0.0.0'-style values,
/// and anything unparsable is treated as absent rather than failing the whole row.
pub(crate) fn parse_ip(s: Option<Box<str>>) -> Option<IpAddr> {
    let s = s?;
    let s = s.split('/').next().unwrap_or_default();
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::nas_api_tls_columns;

    #[test]
    fn hand_edited_api_tls_columns_never_mean_an_unpinned_connection() {
        let pin = "ab".repeat(32);
        let pw = || Some("pw".to_owned());
        // A good pin is parsed; the password stays.
        let (tls, parsed, p) = nas_api_tls_columns("n", Some(true), Some(pin), pw());
        assert!(tls && parsed == Some([0xab; 32]) && p.is_some());
        // A broken pin with TLS on disables the API fallback rather than dropping the pin.
        let (tls, parsed, p) = nas_api_tls_columns("n", Some(true), Some("junk".into()), pw());
        assert!(tls && parsed.is_none() && p.is_none());
        // TLS off: the fingerprint is irrelevant, the plain API keeps working.
        let (tls, _, p) = nas_api_tls_columns("n", Some(false), Some("junk".into()), pw());
        assert!(!tls && p.is_some());
        // NULL columns (a FreeRADIUS-created row): plain API, as before.
        let (tls, parsed, p) = nas_api_tls_columns("n", None, None, pw());
        assert!(!tls && parsed.is_none() && p.is_some());
    }
}
