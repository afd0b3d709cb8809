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

const SYNC_ONLINE: &str = "UPDATE subscribers SET is_online = NOT is_online, \
    updated_at = CURRENT_TIMESTAMP WHERE is_online <> EXISTS (SELECT 1 FROM radacct \
    WHERE radacct.username = subscribers.username AND acctstoptime IS NULL)";

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
            Store::Sqlite(s) => sqlx::query(SYNC_ONLINE)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Store::Postgres(s) => sqlx::query(SYNC_ONLINE)
                .execute(s.pool())
                .await?
                .rows_affected(),
        };
        Ok(done)
    }

    /// Move up to `limit` sessions closed before `cutoff`, with their history, to the
    /// archive tables in one transaction: an interruption at any point rolls the whole
    /// batch back, so no row is lost or copied twice. Returns how many were moved.
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
                let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                let set = "(SELECT value FROM json_each(?1))";
                // Copies that already exist (an identical row: same radacctid and
                // acctuniqueid) are skipped; a *different* row under the same id is not,
                // and neither copy is deleted — see `moved` below.
                let moved = "(SELECT r.radacctid FROM radacct r JOIN radacct_archive a \
                     ON a.radacctid = r.radacctid AND a.acctuniqueid = r.acctuniqueid \
                     WHERE r.radacctid IN (SELECT value FROM json_each(?1)))";
                for sql in [
                    format!(
                        "INSERT OR IGNORE INTO radacct_archive ({RADACCT_COLUMNS}) SELECT \
                         {RADACCT_COLUMNS} FROM radacct WHERE radacctid IN {set}"
                    ),
                    format!(
                        "INSERT OR IGNORE INTO radacct_events_archive ({EVENT_COLUMNS}) SELECT \
                         {EVENT_COLUMNS} FROM radacct_events WHERE radacctid IN {moved}"
                    ),
                    format!(
                        "DELETE FROM radacct_events WHERE radacctid IN {moved} AND id IN \
                         (SELECT id FROM radacct_events_archive)"
                    ),
                ] {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&list)
                        .execute(&mut *tx)
                        .await?;
                }
                let deleted = sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM radacct WHERE radacctid IN {moved}"
                )))
                .bind(&list)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                stuck(ids.len() as u64, deleted)
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
                let moved = "(SELECT r.radacctid FROM radacct r JOIN radacct_archive a \
                     ON a.radacctid = r.radacctid AND a.acctuniqueid = r.acctuniqueid \
                     WHERE r.radacctid = ANY($1))";
                for sql in [
                    format!(
                        "INSERT INTO radacct_archive ({RADACCT_COLUMNS}) SELECT {RADACCT_COLUMNS} \
                         FROM radacct WHERE radacctid = ANY($1) ON CONFLICT DO NOTHING"
                    ),
                    format!(
                        "INSERT INTO radacct_events_archive ({EVENT_COLUMNS}) SELECT \
                         {EVENT_COLUMNS} FROM radacct_events WHERE radacctid IN {moved} \
                         ON CONFLICT DO NOTHING"
                    ),
                    format!(
                        "DELETE FROM radacct_events e WHERE radacctid IN {moved} AND EXISTS \
                         (SELECT 1 FROM radacct_events_archive a WHERE a.id = e.id)"
                    ),
                ] {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&ids)
                        .execute(&mut *tx)
                        .await?;
                }
                let deleted = sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM radacct WHERE radacctid IN {moved}"
                )))
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                stuck(ids.len() as u64, deleted)
            }
        }
    }
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
