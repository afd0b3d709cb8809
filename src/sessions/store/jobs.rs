//! Store work of the background jobs: finding stale open sessions, re-syncing
//! `subscribers.is_online`, and moving old closed sessions to the archive tables.

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, postgres, session_from_row, sqlite};
use crate::sessions::model::{Session, Timestamp};

/// Every column of `radacct` (FreeRADIUS's and radacctd's), named, so the archive copy
/// does not depend on the two tables' column order.
const RADACCT_COLUMNS: &str = "radacctid, acctsessionid, acctuniqueid, username, realm, \
    nasipaddress, nasportid, nasporttype, acctstarttime, acctupdatetime, acctstoptime, \
    acctinterval, acctsessiontime, acctauthentic, connectinfo_start, connectinfo_stop, \
    acctinputoctets, acctoutputoctets, calledstationid, callingstationid, acctterminatecause, \
    servicetype, framedprotocol, framedipaddress, framedipv6address, framedipv6prefix, \
    framedinterfaceid, delegatedipv6prefix, class, nas_id, sessionkey, stopsource";

const EVENT_COLUMNS: &str = "id, radacctid, eventtype, eventtime, acctsessiontime, \
    acctinputoctets, acctoutputoctets, source";

/// The flag is *set* to what the database says, never toggled: a toggle computed from a
/// stale read (a concurrent commit on PostgreSQL) would flip it the wrong way, and a value
/// other than 0/1 on SQLite would flip forever. Only rows whose value differs are written.
const ONLINE_NOW: &str = "EXISTS (SELECT 1 FROM radacct \
    WHERE radacct.username = subscribers.username AND acctstoptime IS NULL)";

fn sync_online_sql(distinct: &str) -> String {
    format!(
        "UPDATE subscribers SET is_online = {ONLINE_NOW}, updated_at = CURRENT_TIMESTAMP \
         WHERE is_online {distinct} {ONLINE_NOW}"
    )
}

/// Sessions read through the backend's `ROW_SOURCE` with a per-backend WHERE clause (the
/// two dialects differ in placeholders and time functions) and the same binds.
macro_rules! sessions_where {
    ($store:expr, sqlite: $sqlite:expr, postgres: $postgres:expr, binds: [$($bind:expr),*]) => {{
        macro_rules! fetch {
            ($pool:expr, $source:expr, $cond:expr) => {{
                let sql = format!("{} WHERE {}", $source, $cond);
                let rows = sqlx::query(AssertSqlSafe(sql))
                    $(.bind($bind))*
                    .fetch_all($pool)
                    .await?;
                rows.iter()
                    .map(|r| session_from_row!(r).map_err(StoreError::from))
                    .collect()
            }};
        }
        match $store {
            Store::Sqlite(s) => fetch!(s.pool(), sqlite::ROW_SOURCE, $sqlite),
            Store::Postgres(s) => fetch!(s.pool(), postgres::ROW_SOURCE, $postgres),
        }
    }};
}

impl Store {
    /// When the sweeper last wrote its heartbeat (epoch seconds), if ever.
    pub async fn heartbeat(&self) -> Result<Option<Timestamp>, StoreError> {
        const SQL: &str = "SELECT value FROM radacctd_state WHERE name = 'sweeper_heartbeat'";
        Ok(match self {
            Store::Sqlite(s) => sqlx::query_scalar(SQL).fetch_optional(s.pool()).await?,
            Store::Postgres(s) => sqlx::query_scalar(SQL).fetch_optional(s.pool()).await?,
        })
    }

    pub async fn set_heartbeat(&self, now: Timestamp) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO radacctd_state (name, value) \
            VALUES ('sweeper_heartbeat', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        match self {
            Store::Sqlite(s) => {
                sqlx::query(SQL).bind(now).execute(s.pool()).await?;
            }
            Store::Postgres(s) => {
                sqlx::query(SQL).bind(now).execute(s.pool()).await?;
            }
        }
        Ok(())
    }

    /// Open rows of the NAS at `nas_ip` that started at or before `before`, read from the
    /// database: Accounting-On/Off closes them all, including rows this node's index does
    /// not hold (written by another node sharing the database, or by FreeRADIUS).
    pub async fn open_for_nas(
        &self,
        nas_ip: std::net::IpAddr,
        before: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        sessions_where!(
            self,
            sqlite: "acctstoptime IS NULL AND nasipaddress = ?1 \
                     AND acctstarttime <= datetime(?2, 'unixepoch')",
            postgres: "acctstoptime IS NULL AND nasipaddress = $1::inet \
                       AND acctstarttime <= to_timestamp($2)",
            binds: [nas_ip.to_string(), before]
        )
    }

    /// Open sessions not updated since `cutoff`, oldest update first, at most `limit`.
    pub async fn stale_sessions(
        &self,
        cutoff: Timestamp,
        limit: i64,
    ) -> Result<Vec<Session>, StoreError> {
        sessions_where!(
            self,
            sqlite: "acctstoptime IS NULL AND COALESCE(acctupdatetime, acctstarttime) < \
                     datetime(?1, 'unixepoch') ORDER BY update_s LIMIT ?2",
            postgres: "acctstoptime IS NULL AND COALESCE(acctupdatetime, acctstarttime) < \
                       to_timestamp($1) ORDER BY update_s LIMIT $2",
            binds: [cutoff, limit]
        )
    }

    /// Which of `ids` are rows still open in `radacct` (the index reconciliation: an index
    /// entry whose row another writer closed or deleted is stale).
    pub async fn still_open(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
                Ok(sqlx::query_scalar(
                    "SELECT radacctid FROM radacct WHERE acctstoptime IS NULL \
                     AND radacctid IN (SELECT value FROM json_each(?1))",
                )
                .bind(list)
                .fetch_all(s.pool())
                .await?)
            }
            Store::Postgres(s) => Ok(sqlx::query_scalar(
                "SELECT radacctid FROM radacct WHERE acctstoptime IS NULL \
                 AND radacctid = ANY($1)",
            )
            .bind(ids)
            .fetch_all(s.pool())
            .await?),
        }
    }

    /// Make `subscribers.is_online` true exactly for usernames with an open row; returns
    /// how many subscribers changed.
    pub async fn sync_online(&self) -> Result<u64, StoreError> {
        let done = match self {
            Store::Sqlite(s) => sqlx::query(AssertSqlSafe(sync_online_sql("IS NOT")))
                .execute(s.pool())
                .await?
                .rows_affected(),
            Store::Postgres(s) => sqlx::query(AssertSqlSafe(sync_online_sql("IS DISTINCT FROM")))
                .execute(s.pool())
                .await?
                .rows_affected(),
        };
        Ok(done)
    }

    /// How many rows one archive batch may take on this backend: a SQLite batch holds the
    /// database's single write lock for its whole transaction, so it is kept short (ingest
    /// waits for it); PostgreSQL locks only the batch's own rows.
    pub fn archive_batch_cap(&self, wanted: i64) -> i64 {
        match self {
            Store::Sqlite(_) => wanted.clamp(1, SQLITE_ARCHIVE_BATCH),
            Store::Postgres(_) => wanted.max(1),
        }
    }

    /// Move up to `limit` sessions closed before `cutoff`, with their history, to the
    /// archive tables in one transaction: an interruption at any point rolls the whole
    /// batch back, so no row is lost or copied twice. Returns how many were moved.
    ///
    /// Every statement is driven by the batch's ids and reaches the other tables by primary
    /// key (or the `radacctid` index of the event tables), so a batch costs the same
    /// whatever the size of `radacct` and of the archive.
    pub async fn archive_batch(&self, cutoff: Timestamp, limit: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                // IMMEDIATE: read-then-write in a deferred transaction can fail with
                // SQLITE_BUSY_SNAPSHOT when ingest commits in between.
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT radacctid FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < datetime(?1, 'unixepoch') ORDER BY radacctid LIMIT ?2",
                )
                .bind(cutoff)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let list = json_ids(&ids);
                // Copies that already exist (an identical row: same radacctid and
                // acctuniqueid) are skipped; a *different* row under the same id is not
                // copied, and is not `moved` below, so it is never deleted.
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT OR IGNORE INTO radacct_archive ({RADACCT_COLUMNS}) SELECT \
                     {RADACCT_COLUMNS} FROM radacct WHERE radacctid IN {SQLITE_SET}"
                )))
                .bind(&list)
                .execute(&mut *tx)
                .await?;
                let moved: Vec<i64> = sqlx::query_scalar(
                    "SELECT r.radacctid FROM json_each(?1) j \
                     JOIN radacct r ON r.radacctid = j.value \
                     JOIN radacct_archive a ON a.radacctid = j.value \
                     WHERE a.acctuniqueid = r.acctuniqueid",
                )
                .bind(&list)
                .fetch_all(&mut *tx)
                .await?;
                let moved_list = json_ids(&moved);
                for sql in [
                    format!(
                        "INSERT OR IGNORE INTO radacct_events_archive ({EVENT_COLUMNS}) SELECT \
                         {EVENT_COLUMNS} FROM radacct_events WHERE radacctid IN {SQLITE_SET}"
                    ),
                    // An event is deleted only once the archive holds it (same id, same row).
                    format!(
                        "DELETE FROM radacct_events WHERE radacctid IN {SQLITE_SET} AND EXISTS \
                         (SELECT 1 FROM radacct_events_archive a \
                         WHERE a.id = radacct_events.id AND a.radacctid = radacct_events.radacctid)"
                    ),
                    format!("DELETE FROM radacct WHERE radacctid IN {SQLITE_SET}"),
                ] {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&moved_list)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                stuck(ids.len() as u64, moved.len() as u64)
            }
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                // SKIP LOCKED: a second node archiving at the same time takes other rows.
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT radacctid FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < to_timestamp($1) ORDER BY radacctid LIMIT $2 \
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(cutoff)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO radacct_archive ({RADACCT_COLUMNS}) SELECT {RADACCT_COLUMNS} \
                     FROM radacct WHERE radacctid = ANY($1) ON CONFLICT DO NOTHING"
                )))
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                let moved: Vec<i64> = sqlx::query_scalar(
                    "SELECT r.radacctid FROM radacct r JOIN radacct_archive a \
                     ON a.radacctid = r.radacctid AND a.acctuniqueid = r.acctuniqueid \
                     WHERE r.radacctid = ANY($1) AND a.radacctid = ANY($1)",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                for sql in [
                    format!(
                        "INSERT INTO radacct_events_archive ({EVENT_COLUMNS}) SELECT \
                         {EVENT_COLUMNS} FROM radacct_events WHERE radacctid = ANY($1) \
                         ON CONFLICT DO NOTHING"
                    ),
                    "DELETE FROM radacct_events e WHERE radacctid = ANY($1) AND EXISTS \
                     (SELECT 1 FROM radacct_events_archive a \
                     WHERE a.id = e.id AND a.radacctid = e.radacctid)"
                        .to_owned(),
                    "DELETE FROM radacct WHERE radacctid = ANY($1)".to_owned(),
                ] {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&moved)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                stuck(ids.len() as u64, moved.len() as u64)
            }
        }
    }
}

/// Rows per archive batch on SQLite at most (see [`Store::archive_batch_cap`]).
const SQLITE_ARCHIVE_BATCH: i64 = 200;

/// A batch's ids as one JSON array parameter, read back with `json_each` (SQLite).
const SQLITE_SET: &str = "(SELECT value FROM json_each(?1))";

fn json_ids(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// The batch's outcome: every selected row moved, or [`StoreError::ArchiveConflict`] for
/// rows whose `radacctid` a *different* row already holds in `radacct_archive`. Those stay
/// in `radacct`, untouched, and the run stops (it would select them again forever); the
/// rows moved before are committed.
fn stuck(selected: u64, moved: u64) -> Result<u64, StoreError> {
    if moved == selected {
        Ok(moved)
    } else {
        Err(StoreError::ArchiveConflict(selected - moved))
    }
}
