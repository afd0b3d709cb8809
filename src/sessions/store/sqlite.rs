//! SQLite backend: the embedded default. One file, WAL journal, `synchronous=FULL` unless
//! configured otherwise, so that an acknowledged record survives power loss.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::stream::{BoxStream, StreamExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use super::sqlite_writer::WriterConnection;
use super::{Batch, NasRow, RowValues, StoreError, bind_row, session_from_row};
use crate::config::{self, DatabaseConfig, NasConfig};
use crate::sessions::model::{Event, Session, StopSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Indexes ensured at every start (EnsureIndexes). `IF NOT EXISTS` makes each a no-op
/// once present. On SQLite an index build holds the file's write lock for its whole
/// duration, so a build in the background would stall ingest just the same (and past the
/// writer's busy timeout): they are all built at start, before the server listens.
///
/// The API sorts by a column with NULLs as its smallest value, then by `radacctid` in the
/// same direction — SQLite's own order — and every SQLite index ends with the rowid
/// (`radacctid`), so `(column)` serves both directions of `ORDER BY column, radacctid`.
const ENSURE_INDEXES: &[&str] = &[
    // A row's `sessionkey` differs from its `acctuniqueid` only for a later session of a
    // reused key (docs/ACCOUNTING.md); every other row is found by `acctuniqueid`, whose
    // UNIQUE index exists anyway. Indexing only the few derived rows spares every Start a
    // write to one more B-tree on a random key (+16 % ingest in six A/B pairs,
    // docs/BENCHMARKS.md round 6). The full index of earlier versions is dropped.
    "DROP INDEX IF EXISTS radacct_sessionkey",
    "CREATE INDEX IF NOT EXISTS radacct_sessionkey_derived ON radacct(sessionkey) \
     WHERE sessionkey <> acctuniqueid",
    "CREATE INDEX IF NOT EXISTS radacct_open ON radacct(nasipaddress) WHERE acctstoptime IS NULL",
    "CREATE INDEX IF NOT EXISTS radacct_open_username ON radacct(username) WHERE acctstoptime IS NULL",
    "CREATE INDEX IF NOT EXISTS radacct_username ON radacct(username, acctstarttime)",
    "CREATE INDEX IF NOT EXISTS radacct_starttime ON radacct(acctstarttime)",
    "CREATE INDEX IF NOT EXISTS radacct_stoptime ON radacct(acctstoptime)",
    "CREATE INDEX IF NOT EXISTS radacct_framedip ON radacct(framedipaddress)",
    "CREATE INDEX IF NOT EXISTS radacct_callingstation ON radacct(callingstationid)",
    "CREATE INDEX IF NOT EXISTS radacct_nas_id ON radacct(nas_id, acctstarttime)",
    // The API's other sort columns, so a sorted page of closed sessions is an index walk.
    "CREATE INDEX IF NOT EXISTS radacct_inputoctets ON radacct(acctinputoctets)",
    "CREATE INDEX IF NOT EXISTS radacct_outputoctets ON radacct(acctoutputoctets)",
    "CREATE INDEX IF NOT EXISTS radacct_sessiontime ON radacct(acctsessiontime)",
    // `source=archive`: the same filters and sorts (no open sessions there).
    "CREATE INDEX IF NOT EXISTS radacct_archive_username ON radacct_archive(username, acctstarttime)",
    "CREATE INDEX IF NOT EXISTS radacct_archive_nas_id ON radacct_archive(nas_id, acctstarttime)",
    "CREATE INDEX IF NOT EXISTS radacct_archive_starttime ON radacct_archive(acctstarttime)",
    "CREATE INDEX IF NOT EXISTS radacct_archive_inputoctets ON radacct_archive(acctinputoctets)",
    "CREATE INDEX IF NOT EXISTS radacct_archive_outputoctets ON radacct_archive(acctoutputoctets)",
    "CREATE INDEX IF NOT EXISTS radacct_archive_sessiontime ON radacct_archive(acctsessiontime)",
];

/// Column expressions that present a row the way `SELECT_COLUMNS` names them.
pub(crate) const ROW_SOURCE: &str = "SELECT radacctid, acctuniqueid, sessionkey, nas_id, username, \
    acctsessionid, realm, nasipaddress AS nasipaddress_t, nasportid, nasporttype, \
    CAST(strftime('%s', acctstarttime) AS INTEGER) AS start_s, \
    CAST(strftime('%s', acctupdatetime) AS INTEGER) AS update_s, \
    CAST(strftime('%s', acctstoptime) AS INTEGER) AS stop_s, \
    acctinterval, acctsessiontime, acctauthentic, connectinfo_start, connectinfo_stop, \
    acctinputoctets, acctoutputoctets, calledstationid, callingstationid, acctterminatecause, \
    servicetype, framedprotocol, framedipaddress AS framedipaddress_t, framedipv6address, \
    framedipv6prefix, framedinterfaceid, delegatedipv6prefix, class, stopsource FROM radacct";

// FreeRADIUS's schema declares most text columns NOT NULL DEFAULT '', so absent values are
// written as '' (COALESCE) rather than NULL.
const ROW_COLUMNS: &str = "acctsessionid, acctuniqueid, sessionkey, nas_id, username, realm, \
    nasipaddress, nasportid, nasporttype, acctstarttime, acctupdatetime, acctstoptime, \
    acctinterval, acctsessiontime, acctauthentic, connectinfo_start, connectinfo_stop, \
    acctinputoctets, acctoutputoctets, calledstationid, callingstationid, acctterminatecause, \
    servicetype, framedprotocol, framedipaddress, framedipv6address, framedipv6prefix, \
    framedinterfaceid, delegatedipv6prefix, class, stopsource";

/// The 31 values of one new row, in `ROW_COLUMNS` (and `bind_row!`) order. Plain `?`
/// placeholders: numbered ones (`?NN`) cost sqlx more per bind and per prepare.
const INSERT_VALUES: &str = "(?, ?, ?, ?, ?, COALESCE(?, ''), COALESCE(?, ''), ?, ?, \
    datetime(?, 'unixepoch'), datetime(?, 'unixepoch'), datetime(?, 'unixepoch'), \
    ?, ?, ?, ?, ?, ?, ?, COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), ?, ?, \
    COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), ?, ?)";

/// What the update of one row sets, from the CTE `v` (`update_rows_sql`).
const UPDATE_SET: &str = "acctsessionid = v.acctsessionid, acctuniqueid = v.acctuniqueid, \
    sessionkey = v.sessionkey, nas_id = v.nas_id, username = v.username, \
    realm = COALESCE(v.realm, ''), nasipaddress = COALESCE(v.nasipaddress, ''), \
    nasportid = v.nasportid, nasporttype = v.nasporttype, \
    acctstarttime = datetime(v.acctstarttime, 'unixepoch'), \
    acctupdatetime = datetime(v.acctupdatetime, 'unixepoch'), \
    acctstoptime = datetime(v.acctstoptime, 'unixepoch'), acctinterval = v.acctinterval, \
    acctsessiontime = v.acctsessiontime, acctauthentic = v.acctauthentic, \
    connectinfo_start = v.connectinfo_start, connectinfo_stop = v.connectinfo_stop, \
    acctinputoctets = v.acctinputoctets, acctoutputoctets = v.acctoutputoctets, \
    calledstationid = COALESCE(v.calledstationid, ''), \
    callingstationid = COALESCE(v.callingstationid, ''), \
    acctterminatecause = COALESCE(v.acctterminatecause, ''), servicetype = v.servicetype, \
    framedprotocol = v.framedprotocol, framedipaddress = COALESCE(v.framedipaddress, ''), \
    framedipv6address = COALESCE(v.framedipv6address, ''), \
    framedipv6prefix = COALESCE(v.framedipv6prefix, ''), \
    framedinterfaceid = COALESCE(v.framedinterfaceid, ''), \
    delegatedipv6prefix = COALESCE(v.delegatedipv6prefix, ''), class = v.class, \
    stopsource = v.stopsource";

/// The 31 row values plus the `radacctid` of the row to update.
const UPDATE_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

const EVENT_VALUES: &str = "(?, ?, datetime(?, 'unixepoch'), ?, ?, ?, ?)";

// The multi-row statements are `OR FAIL`, not the default `OR ABORT`: on a constraint
// violation ABORT undoes the statement's earlier rows, for which SQLite writes every page
// the statement changes to a statement journal first (a temp file: a fifth of a commit's
// time in `benches/engine.rs` on a file). FAIL needs no journal, and the outcome is the
// same, because an error makes `commit` return and the whole transaction is rolled back.

/// Rows per multi-row statement, largest first. A batch is cut greedily into chunks of
/// these sizes, so every statement is one of a few texts that each connection prepares
/// once and then finds in sqlx's statement cache (100 entries; 4 × 9 used here). 256 rows
/// of 32 values stay far below SQLite's limit of 32,766 bound variables (3.32 and later;
/// the bundled library is newer).
const CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// `(offset, len)` of each chunk of `n` rows.
pub(super) fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let left = n - at;
        let len = CHUNKS.into_iter().find(|&c| c <= left)?;
        let chunk = (at, len);
        at += len;
        Some(chunk)
    })
}

/// The statement text for each chunk size, built once.
struct ChunkSql([String; CHUNKS.len()]);

impl ChunkSql {
    fn build(make: impl Fn(usize) -> String) -> Self {
        ChunkSql(CHUNKS.map(make))
    }

    fn get(&'static self, rows: usize) -> &'static str {
        let i = CHUNKS.iter().position(|&c| c == rows).unwrap_or(0);
        &self.0[i]
    }
}

fn values(row: &str, n: usize) -> String {
    let mut out = String::with_capacity((row.len() + 2) * n);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(row);
    }
    out
}

/// New rows. RETURNING gives each row's id with its `acctuniqueid` (UNIQUE), because SQLite
/// does not promise to return the rows of a multi-row INSERT in VALUES order.
pub(super) fn insert_rows_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<ChunkSql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        ChunkSql::build(|n| {
            format!(
                "INSERT OR FAIL INTO radacct ({ROW_COLUMNS}) VALUES {} RETURNING radacctid, acctuniqueid",
                values(INSERT_VALUES, n)
            )
        })
    })
    .get(n)
}

/// Changed rows, joined by `radacctid` (the table's INTEGER PRIMARY KEY) to a CTE of their
/// values: one statement instead of one UPDATE per row.
pub(super) fn update_rows_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<ChunkSql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        ChunkSql::build(|n| {
            format!(
                "WITH v({ROW_COLUMNS}, radacctid) AS (VALUES {}) \
                 UPDATE OR FAIL radacct SET {UPDATE_SET} FROM v WHERE radacct.radacctid = v.radacctid",
                values(UPDATE_VALUES, n)
            )
        })
    })
    .get(n)
}

/// Rows whose progress alone changed (`Batch::progress`): five columns, so SQLite touches
/// only the indexes on those (the counters and session time), not all twelve.
pub(super) fn update_progress_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<ChunkSql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        ChunkSql::build(|n| {
            format!(
                "WITH v(acctupdatetime, acctinterval, acctsessiontime, acctinputoctets, \
                 acctoutputoctets, radacctid) AS (VALUES {}) \
                 UPDATE OR FAIL radacct SET acctupdatetime = datetime(v.acctupdatetime, 'unixepoch'), \
                 acctinterval = v.acctinterval, acctsessiontime = v.acctsessiontime, \
                 acctinputoctets = v.acctinputoctets, acctoutputoctets = v.acctoutputoctets \
                 FROM v WHERE radacct.radacctid = v.radacctid",
                values("(?, ?, ?, ?, ?, ?)", n)
            )
        })
    })
    .get(n)
}

/// History events, inserted in batch order (their `id` orders events of equal time).
pub(super) fn insert_events_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<ChunkSql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        ChunkSql::build(|n| {
            format!(
                "INSERT OR FAIL INTO radacct_events (radacctid, eventtype, eventtime, acctsessiontime, \
                 acctinputoctets, acctoutputoctets, source) VALUES {}",
                values(EVENT_VALUES, n)
            )
        })
    })
    .get(n)
}

/// Every username of a batch in one statement, as one JSON array parameter.
pub(super) const SYNC_ONLINE: &str = "UPDATE subscribers SET is_online = EXISTS (SELECT 1 FROM radacct \
    WHERE radacct.username = subscribers.username AND acctstoptime IS NULL), \
    updated_at = CURRENT_TIMESTAMP WHERE username IN (SELECT value FROM json_each(?))";

/// The rows of the keys in a JSON array (`SqliteStore::rows_for_keys`).
fn rows_for_keys_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "{ROW_SOURCE} WHERE radacctid IN (\
             SELECT radacctid FROM radacct WHERE acctuniqueid IN (SELECT value FROM json_each(?1)) \
             UNION SELECT radacctid FROM radacct WHERE sessionkey IN (SELECT value FROM json_each(?1)) \
             AND sessionkey <> acctuniqueid)"
        )
    })
}

/// A batch's rows by statement: new rows, changed rows, rows whose progress alone changed
/// (`Batch::progress`), with the ids known before the commit (0 for new rows).
pub(super) struct Partition {
    pub ids: Vec<i64>,
    pub inserts: Vec<usize>,
    pub updates: Vec<usize>,
    pub progress: Vec<usize>,
}

impl Partition {
    pub fn of(batch: &Batch) -> Self {
        let mut p = Partition {
            ids: vec![0i64; batch.rows.len()],
            inserts: Vec::new(),
            updates: Vec::new(),
            progress: Vec::new(),
        };
        for (i, s) in batch.rows.iter().enumerate() {
            if s.radacctid == 0 {
                p.inserts.push(i);
            } else {
                p.ids[i] = s.radacctid;
                if batch.progress.get(i).copied().unwrap_or(false) {
                    p.progress.push(i);
                } else {
                    p.updates.push(i);
                }
            }
        }
        p
    }

    /// The batch's events with the ids of their rows (`ids` complete after the inserts).
    pub fn events<'b>(batch: &'b Batch, ids: &[i64]) -> Vec<(i64, &'b Event)> {
        batch
            .events
            .iter()
            .filter_map(|(row, e)| ids.get(*row).map(|&id| (id, e)))
            .collect()
    }

    /// The `SYNC_ONLINE` parameter, or `None` when no username was touched.
    pub fn usernames_json(batch: &Batch) -> Option<String> {
        if batch.usernames.is_empty() {
            return None;
        }
        let names: Vec<&str> = batch.usernames.iter().map(|u| &**u).collect();
        Some(serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned()))
    }
}

/// A `radacct` that exists without radacctd's own columns was made by someone else — in
/// practice FreeRADIUS's SQLite schema, whose rlm_sql queries store times as epoch integers
/// where radacctd stores UTC text and compares it as text. Left to the migrations, such a
/// file would be changed (`_sqlx_migrations`, `nas` columns) and then fail at the first
/// index on a missing column, with an error naming only the column; adding the columns
/// would leave two time formats in one table. Refused with an error saying what to do, read-only and
/// before anything opens the file for writing (connecting switches a file to WAL mode).
/// A file that does not exist or cannot be read as a database is left to the connection to
/// create or report. (On PostgreSQL both write `timestamptz`, and adopting a FreeRADIUS
/// database is supported.)
fn refuse_foreign_radacct(path: &std::path::Path) -> Result<(), StoreError> {
    use rusqlite::OpenFlags;
    if !path.is_file() {
        return Ok(());
    }
    let columns = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('radacct')")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
    });
    let Ok(columns) = columns else {
        return Ok(());
    };
    if columns.is_empty() {
        return Ok(());
    }
    let missing: Vec<&str> = ["nas_id", "sessionkey", "stopsource"]
        .into_iter()
        .filter(|c| !columns.iter().any(|have| have.eq_ignore_ascii_case(c)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::ForeignRadacct(format!(
            "missing {}",
            missing.join(", ")
        )))
    }
}

/// The database holds NAS secrets and RouterOS passwords (`nas` table): a new file is
/// created owner-only (SQLite gives its `-wal` and `-shm` files the same mode), and an
/// existing file readable by every local user is warned about at start.
fn protect_database_file(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return;
        }
        // create_new: never touches an existing file; failure (e.g. a missing directory)
        // is left for SQLite to report with its own message.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the SQLite database holds NAS secrets and RouterOS passwords and is readable \
                 by every user; chmod o-r it (and its -wal and -shm files)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, for bulk reads (`sqlite_bulk`); `None` in memory.
    file: Option<Arc<Path>>,
    /// The group commit's own connection (`sqlite_writer`); `None` in memory.
    writer: Option<Arc<WriterConnection>>,
}

/// Whether a pooled connection may be handed out again. When SQLite itself rolls a
/// transaction back after an error (disk full, I/O error), sqlx's ROLLBACK on drop fails
/// ("no transaction is active") and the connection keeps believing it is inside a
/// transaction: every later `begin` on it fails at once, and a writer that retries would
/// retry on that same connection forever. Such a connection is closed instead; the pool
/// opens a fresh one. The ping first lets a rollback still queued on the connection's
/// worker run, so only a connection that stays stuck is dropped.
async fn healthy(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("closing a SQLite connection left inside a failed transaction");
        return Ok(false);
    }
    Ok(true)
}

impl SqliteStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let synchronous = match cfg.sqlite_synchronous {
            config::SqliteSynchronous::Full => SqliteSynchronous::Full,
            config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
            config::SqliteSynchronous::Extra => SqliteSynchronous::Extra,
        };
        let options = SqliteConnectOptions::from_str(&cfg.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(false);
        // An in-memory database (`sqlite::memory:`, `mode=memory`) has no file; sqlx names
        // it `file:sqlx-in-memory-N`, which must not be created on disk.
        let in_memory = cfg.url.contains(":memory:") || cfg.url.contains("mode=memory");
        let file = (!in_memory).then(|| Arc::from(options.get_filename()));
        if let Some(file) = &file {
            refuse_foreign_radacct(file)?;
            protect_database_file(file);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .before_acquire(|conn, _| Box::pin(healthy(conn)))
            .connect_with(options)
            .await?;
        let writer = file
            .clone()
            .map(|f| Arc::new(WriterConnection::new(f, cfg.sqlite_synchronous)));
        Ok(SqliteStore { pool, file, writer })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Run `work` on the group commit's own connection (`sqlite_writer`), which is not one
    /// of the pool's: for what must reach that connection in particular, as a per-connection
    /// pragma in a test. `None` for an in-memory database, whose commits use the pool.
    pub async fn on_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Option<Result<T, StoreError>> {
        Some(self.writer.as_ref()?.run(work).await)
    }

    /// The schema migrations, then every index (see `ENSURE_INDEXES` for why all of them
    /// are built before the server listens).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        for stmt in ENSURE_INDEXES {
            sqlx::query(*stmt).execute(&self.pool).await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Every row of these keys, by `sessionkey` or `acctuniqueid`. For a file database on
    /// the writer's own connection (the writer is the caller, between its commits): no
    /// hand-off to sqlx's thread and no per-value copies on the serial path of ingest.
    pub async fn rows_for_keys(&self, keys_hex: &[String]) -> Result<Vec<Session>, StoreError> {
        // One JSON array parameter instead of a variable number of placeholders.
        let keys = serde_json::to_string(keys_hex).unwrap_or_else(|_| "[]".to_owned());
        if let Some(writer) = &self.writer {
            return writer
                .run(move |conn| {
                    let mut stmt = conn.prepare_cached(rows_for_keys_sql())?;
                    super::sqlite_bulk::collect(&mut stmt, [keys])
                })
                .await;
        }
        let rows = sqlx::query(rows_for_keys_sql())
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .collect()
    }

    /// The sessions of `sql` (a `ROW_SOURCE` query) read in bulk from the file on a
    /// blocking thread (`sqlite_bulk`), or `None` for an in-memory database.
    pub(crate) fn bulk_sessions(
        &self,
        sql: String,
        params: Vec<rusqlite::types::Value>,
    ) -> Option<BoxStream<'static, Result<Session, StoreError>>> {
        let file = self.file.clone()?;
        Some(super::sqlite_bulk::sessions(file, sql, params))
    }

    /// Every open row, streamed as the database returns them.
    pub fn open_sessions(&self) -> BoxStream<'_, Result<Session, StoreError>> {
        let sql = format!("{ROW_SOURCE} WHERE acctstoptime IS NULL");
        if let Some(rows) = self.bulk_sessions(sql.clone(), Vec::new()) {
            return rows;
        }
        sqlx::query(AssertSqlSafe(sql))
            .fetch(&self.pool)
            .map(|r| session_from_row!(&r?).map_err(StoreError::from))
            .boxed()
    }

    pub async fn session_by_id(&self, radacctid: i64) -> Result<Option<Session>, StoreError> {
        let sql = format!("{ROW_SOURCE} WHERE radacctid = ?1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(radacctid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .transpose()
    }

    /// Group commit: a few multi-row statements per batch (see `CHUNKS`), not one per row,
    /// in one `BEGIN IMMEDIATE` transaction — on the writer's own rusqlite connection for a
    /// file (`sqlite_writer`), through the pool for an in-memory database. The batch comes
    /// back with the rows' ids.
    pub async fn commit(&self, batch: Batch) -> Result<(Batch, Vec<i64>), StoreError> {
        match &self.writer {
            Some(writer) => writer.commit(batch).await,
            None => {
                let ids = self.commit_sqlx(&batch).await?;
                Ok((batch, ids))
            }
        }
    }

    /// The commit through sqlx, for an in-memory database (`sqlite_writer` otherwise).
    async fn commit_sqlx(&self, batch: &Batch) -> Result<Vec<i64>, StoreError> {
        let Partition {
            mut ids,
            inserts,
            updates,
            progress,
        } = Partition::of(batch);
        // IMMEDIATE: take the write lock (waiting up to busy_timeout) before any statement.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (at, n) in chunks(inserts.len()) {
            let rows = &inserts[at..at + n];
            let mut q = sqlx::query(insert_rows_sql(n));
            for &i in rows {
                q = bind_row!(q, RowValues::of(&batch.rows[i]));
            }
            let returned = q.fetch_all(&mut *tx).await?;
            let position: HashMap<&str, usize> = rows
                .iter()
                .map(|&i| (&*batch.rows[i].acctuniqueid, i))
                .collect();
            for r in &returned {
                let uniqueid: &str = r.try_get("acctuniqueid")?;
                let id: i64 = r.try_get("radacctid")?;
                if let Some(&i) = position.get(uniqueid) {
                    ids[i] = id;
                }
            }
        }
        if let Some(i) = inserts.iter().find(|&&i| ids[i] == 0) {
            let uniqueid = &batch.rows[*i].acctuniqueid;
            return Err(StoreError::NotFound(format!("id of {uniqueid}")));
        }
        for (at, n) in chunks(updates.len()) {
            let mut q = sqlx::query(update_rows_sql(n));
            for &i in &updates[at..at + n] {
                let s = &batch.rows[i];
                q = bind_row!(q, RowValues::of(s)).bind(s.radacctid);
            }
            q.execute(&mut *tx).await?;
        }
        for (at, n) in chunks(progress.len()) {
            let mut q = sqlx::query(update_progress_sql(n));
            for &i in &progress[at..at + n] {
                let s = &batch.rows[i];
                q = q
                    .bind(s.update)
                    .bind(s.interval)
                    .bind(s.session_time)
                    .bind(s.input_octets)
                    .bind(s.output_octets)
                    .bind(s.radacctid);
            }
            q.execute(&mut *tx).await?;
        }
        let events = Partition::events(batch, &ids);
        for (at, n) in chunks(events.len()) {
            let mut q = sqlx::query(insert_events_sql(n));
            for &(id, e) in &events[at..at + n] {
                q = q
                    .bind(id)
                    .bind(e.kind)
                    .bind(e.time)
                    .bind(e.session_time)
                    .bind(e.input_octets)
                    .bind(e.output_octets)
                    .bind(e.source.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(names) = Partition::usernames_json(batch) {
            sqlx::query(SYNC_ONLINE)
                .bind(names)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn events_for(&self, radacctid: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT eventtype, CAST(strftime('%s', eventtime) AS INTEGER) AS t, acctsessiontime, \
             acctinputoctets, acctoutputoctets, source FROM radacct_events \
             WHERE radacctid = ?1 ORDER BY eventtime, id",
        )
        .bind(radacctid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    kind: event_kind(&r.try_get::<String, _>("eventtype")?),
                    time: r.try_get("t")?,
                    session_time: r.try_get("acctsessiontime")?,
                    input_octets: r.try_get("acctinputoctets")?,
                    output_octets: r.try_get("acctoutputoctets")?,
                    source: StopSource::parse(r.try_get::<Option<String>, _>("source")?.as_deref()),
                })
            })
            .collect()
    }

    pub async fn subscriber_online(&self, username: &str) -> Result<Option<bool>, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT is_online FROM subscribers WHERE username = ?1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.map(|v| v != 0))
    }

    pub async fn upsert_subscriber(
        &self,
        username: &str,
        reseller_id: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subscribers (username, reseller_id, is_online) VALUES (?1, ?2, \
             EXISTS (SELECT 1 FROM radacct WHERE username = ?1 AND acctstoptime IS NULL)) \
             ON CONFLICT(username) DO UPDATE SET reseller_id = excluded.reseller_id, \
             updated_at = CURRENT_TIMESTAMP",
        )
        .bind(username)
        .bind(reseller_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn nas_list(&self) -> Result<Vec<NasRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, nasname, shortname, secret, coa_port, api_user, api_password, api_port, \
             api_tls, api_tls_fingerprint, description FROM nas ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().filter_map(nas_from_row).collect())
    }

    pub async fn nas_upsert(&self, nas: &NasConfig) -> Result<i64, StoreError> {
        // IMMEDIATE: a deferred transaction that reads and then writes fails at once with
        // SQLITE_BUSY_SNAPSHOT (no busy wait) when the writer committed in between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM nas WHERE nasname = ?1 ORDER BY id LIMIT 1")
                .bind(nas.ip.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let id = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE nas SET shortname = ?2, secret = ?3, coa_port = ?4, api_user = ?5, \
                     api_password = ?6, api_port = ?7, description = COALESCE(?8, description), \
                     api_tls = ?9, api_tls_fingerprint = ?10 WHERE id = ?1",
                )
                .bind(id)
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i64::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i64::from(nas.api_port))
                .bind(&nas.description)
                .bind(nas.api_tls)
                .bind(
                    nas.api_tls_fingerprint
                        .as_ref()
                        .map(crate::coa::tls::format_fingerprint),
                )
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO nas (nasname, shortname, type, secret, coa_port, api_user, \
                     api_password, api_port, description, api_tls, api_tls_fingerprint) VALUES \
                     (?1, ?2, 'mikrotik', ?3, ?4, ?5, ?6, ?7, COALESCE(?8, 'RADIUS Client'), ?9, \
                     ?10) RETURNING id",
                )
                .bind(nas.ip.to_string())
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i64::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i64::from(nas.api_port))
                .bind(&nas.description)
                .bind(nas.api_tls)
                .bind(
                    nas.api_tls_fingerprint
                        .as_ref()
                        .map(crate::coa::tls::format_fingerprint),
                )
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    pub async fn nas_remove(&self, name_or_ip: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM nas WHERE nasname = ?1 OR shortname = ?1")
            .bind(name_or_ip)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close();
        }
        self.pool.close().await;
    }
}

/// History event names are a closed set; map stored text back to it.
pub(crate) fn event_kind(s: &str) -> &'static str {
    match s {
        "Start" => "Start",
        "Interim-Update" => "Interim-Update",
        "Stop" => "Stop",
        _ => "Other",
    }
}

/// A `nas` row, or `None` (logged by the caller's count) when its address or ports are not
/// usable: FreeRADIUS allows names and CIDR ranges in `nasname`, which radacctd does not
/// match on.
fn nas_from_row(r: &sqlx::sqlite::SqliteRow) -> Option<NasRow> {
    let nasname: String = r.try_get("nasname").ok()?;
    let ip = nasname.parse().ok()?;
    let id: i64 = r.try_get("id").ok()?;
    let name: Option<String> = r.try_get("shortname").ok()?;
    let (api_tls, api_tls_fingerprint, api_password) = super::nas_api_tls_columns(
        &nasname,
        r.try_get("api_tls").ok().flatten(),
        r.try_get("api_tls_fingerprint").ok().flatten(),
        r.try_get("api_password").ok().flatten(),
    );
    let port = |col: &str, default: u16| -> u16 {
        r.try_get::<Option<i64>, _>(col)
            .ok()
            .flatten()
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(default)
    };
    Some(NasRow {
        id,
        config: NasConfig {
            name: name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| nasname.clone()),
            ip,
            secret: r.try_get("secret").ok()?,
            coa_port: port("coa_port", config::DEFAULT_COA_PORT),
            api_user: r.try_get("api_user").ok().flatten(),
            api_password,
            api_port: port("api_port", config::DEFAULT_API_PORT),
            api_tls,
            api_tls_fingerprint,
            description: r.try_get("description").ok().flatten(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_memory_files() -> Vec<String> {
        std::fs::read_dir(".")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("file:sqlx-in-memory"))
            .collect()
    }

    #[tokio::test]
    async fn an_in_memory_database_leaves_no_file_behind() {
        let cfg = DatabaseConfig {
            url: "sqlite::memory:".into(),
            max_connections: 1,
            sqlite_synchronous: config::SqliteSynchronous::Full,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(in_memory_files(), Vec::<String>::new());
    }

    /// Only rows of a reused key (derived `acctuniqueid`) are in the `sessionkey` index; the
    /// full index of earlier versions is dropped at the next start.
    #[tokio::test]
    async fn only_derived_rows_are_indexed_by_sessionkey() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("r.db").display()),
            max_connections: 2,
            sqlite_synchronous: config::SqliteSynchronous::Full,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        sqlx::raw_sql(
            "CREATE INDEX radacct_sessionkey ON radacct(sessionkey); \
             INSERT INTO radacct (acctuniqueid, sessionkey) VALUES ('k1', 'k1'), ('d1', 'k1'), \
             ('f1', NULL)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%sessionkey%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(indexes, ["radacct_sessionkey_derived"]);
        let indexed: Vec<String> = sqlx::query_scalar(
            "SELECT acctuniqueid FROM radacct INDEXED BY radacct_sessionkey_derived \
             WHERE sessionkey = 'k1' AND sessionkey <> acctuniqueid",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(indexed, ["d1"]);
    }

    /// The tables of a FreeRADIUS 3.2 SQLite database (`mods-config/sql/main/sqlite/
    /// schema.sql`, its radacct and nas tables reduced to what matters here), with one row.
    const FREERADIUS_SQLITE: &str = "CREATE TABLE radacct (\
        radacctid INTEGER PRIMARY KEY AUTOINCREMENT, \
        acctsessionid varchar(64) NOT NULL default '', \
        acctuniqueid varchar(32) NOT NULL default '', \
        username varchar(64) NOT NULL default '', \
        nasipaddress varchar(15) NOT NULL default '', \
        acctstarttime datetime NULL default NULL, \
        acctstoptime datetime NULL default NULL); \
        CREATE UNIQUE INDEX acctuniqueid ON radacct(acctuniqueid); \
        CREATE TABLE nas (id INTEGER PRIMARY KEY AUTOINCREMENT, nasname varchar(128) NOT NULL, \
        secret varchar(60) DEFAULT 'secret' NOT NULL); \
        INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
        acctstarttime) VALUES ('A1', 'caedd9d0113fe0ef457b87a2abc06234', 'alice', \
        '10.0.0.1', 1796322132);";

    #[tokio::test]
    async fn a_freeradius_sqlite_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freeradius.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(FREERADIUS_SQLITE)
            .unwrap();
        let before = std::fs::read(&path).unwrap();

        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", path.display()),
            max_connections: 2,
            sqlite_synchronous: config::SqliteSynchronous::Full,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let Err(err) = SqliteStore::connect(&cfg).await else {
            panic!("a FreeRADIUS SQLite file was accepted");
        };
        assert!(matches!(err, StoreError::ForeignRadacct(_)), "{err:?}");
        let msg = err.to_string();
        for part in [
            "missing nas_id, sessionkey, stopsource",
            "FreeRADIUS",
            "new SQLite file",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert!(!err.is_transient());
        // Not even switched to WAL mode: the file is byte for byte what it was.
        assert!(
            std::fs::read(&path).unwrap() == before,
            "a refused file was changed"
        );
        assert!(!dir.path().join("freeradius.db-wal").exists());
    }
}
