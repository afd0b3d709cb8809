//! PostgreSQL backend: the production store, FreeRADIUS-compatible (`inet`,
//! `timestamptz`, `bigint`), safe to point at an existing FreeRADIUS database.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::{Batch, NasRow, RowValues, StoreError, bind_row, session_from_row};
use crate::config::{self, DatabaseConfig, NasConfig};
use crate::sessions::key::SessionKey;
use crate::sessions::model::{Event, Session, StopSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Indexes ensured at every start (EnsureIndexes), built CONCURRENTLY so that ingest from
/// other nodes (or FreeRADIUS) keeps writing while a missing one is built on a big table.
const ENSURE_INDEXES: &[(&str, &str)] = &[
    ("radacct_sessionkey", "ON radacct (sessionkey)"),
    // The partial index the contract names: open sessions only, small and hot.
    (
        "radacct_open",
        "ON radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL",
    ),
    (
        "radacct_open_username",
        "ON radacct (username) WHERE acctstoptime IS NULL",
    ),
    ("radacct_username", "ON radacct (username, acctstarttime)"),
    ("radacct_starttime", "ON radacct (acctstarttime)"),
    ("radacct_stoptime", "ON radacct (acctstoptime)"),
    ("radacct_framedip", "ON radacct (framedipaddress)"),
    ("radacct_callingstation", "ON radacct (callingstationid)"),
    ("radacct_nas_id", "ON radacct (nas_id, acctstarttime)"),
];

const ROW_SOURCE: &str = "SELECT radacctid, acctuniqueid, sessionkey, nas_id, username, \
    acctsessionid, realm, host(nasipaddress) AS nasipaddress_t, nasportid, nasporttype, \
    EXTRACT(EPOCH FROM acctstarttime)::bigint AS start_s, \
    EXTRACT(EPOCH FROM acctupdatetime)::bigint AS update_s, \
    EXTRACT(EPOCH FROM acctstoptime)::bigint AS stop_s, \
    acctinterval, acctsessiontime, acctauthentic, connectinfo_start, connectinfo_stop, \
    acctinputoctets, acctoutputoctets, calledstationid, callingstationid, acctterminatecause, \
    servicetype, framedprotocol, host(framedipaddress) AS framedipaddress_t, \
    host(framedipv6address) AS framedipv6address, framedipv6prefix::text AS framedipv6prefix, \
    framedinterfaceid, delegatedipv6prefix::text AS delegatedipv6prefix, class, stopsource \
    FROM radacct";

const INSERT_ROW: &str = "INSERT INTO radacct (acctsessionid, acctuniqueid, sessionkey, nas_id, \
    username, realm, nasipaddress, nasportid, nasporttype, acctstarttime, acctupdatetime, \
    acctstoptime, acctinterval, acctsessiontime, acctauthentic, connectinfo_start, \
    connectinfo_stop, acctinputoctets, acctoutputoctets, calledstationid, callingstationid, \
    acctterminatecause, servicetype, framedprotocol, framedipaddress, framedipv6address, \
    framedipv6prefix, framedinterfaceid, delegatedipv6prefix, class, stopsource) VALUES \
    ($1, $2, $3, $4, $5, $6, COALESCE($7::inet, '0.0.0.0'::inet), $8, $9, to_timestamp($10), \
    to_timestamp($11), to_timestamp($12), $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
    $23, $24, $25::inet, $26::inet, $27::inet, $28, $29::inet, $30, $31) RETURNING radacctid";

const UPDATE_ROW: &str = "UPDATE radacct SET acctsessionid = $1, acctuniqueid = $2, \
    sessionkey = $3, nas_id = $4, username = $5, realm = $6, \
    nasipaddress = COALESCE($7::inet, nasipaddress), nasportid = $8, nasporttype = $9, \
    acctstarttime = to_timestamp($10), acctupdatetime = to_timestamp($11), \
    acctstoptime = to_timestamp($12), acctinterval = $13, acctsessiontime = $14, \
    acctauthentic = $15, connectinfo_start = $16, connectinfo_stop = $17, \
    acctinputoctets = $18, acctoutputoctets = $19, calledstationid = $20, \
    callingstationid = $21, acctterminatecause = $22, servicetype = $23, \
    framedprotocol = $24, framedipaddress = $25::inet, framedipv6address = $26::inet, \
    framedipv6prefix = $27::inet, framedinterfaceid = $28, delegatedipv6prefix = $29::inet, \
    class = $30, stopsource = $31 WHERE radacctid = $32";

const INSERT_EVENT: &str = "INSERT INTO radacct_events (radacctid, eventtype, eventtime, \
    acctsessiontime, acctinputoctets, acctoutputoctets, source) \
    VALUES ($1, $2, to_timestamp($3), $4, $5, $6, $7)";

const SYNC_ONLINE: &str = "UPDATE subscribers SET is_online = EXISTS (SELECT 1 FROM radacct \
    WHERE radacct.username = subscribers.username AND acctstoptime IS NULL), \
    updated_at = now() WHERE username = $1";

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&cfg.url)?.application_name("radacctd");
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            // Times are read as epoch seconds and written with to_timestamp(), so the
            // session time zone cannot shift them; UTC keeps psql output readable.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET TIME ZONE 'UTC'").execute(conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        self.ensure_indexes().await
    }

    /// EnsureIndexes: create what is missing without blocking writers, and rebuild any
    /// index an interrupted concurrent build left invalid.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        for (name, definition) in ENSURE_INDEXES {
            let invalid: Option<bool> = sqlx::query_scalar(
                "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE c.relname = $1",
            )
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
            match invalid {
                Some(false) => continue,
                Some(true) => {
                    tracing::warn!(index = name, "rebuilding an invalid index");
                    let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
                    sqlx::raw_sql(AssertSqlSafe(sql))
                        .execute(&self.pool)
                        .await?;
                }
                None => {}
            }
            tracing::info!(index = name, "creating index");
            let sql = format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}");
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn rows_for_key(&self, key: &SessionKey) -> Result<Vec<Session>, StoreError> {
        let sql = format!(
            "{ROW_SOURCE} WHERE sessionkey = $1 OR acctuniqueid = $1 ORDER BY start_s, radacctid"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(key.to_hex())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .collect()
    }

    pub async fn open_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let sql = format!("{ROW_SOURCE} WHERE acctstoptime IS NULL");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .collect()
    }

    pub async fn session_by_id(&self, radacctid: i64) -> Result<Option<Session>, StoreError> {
        let sql = format!("{ROW_SOURCE} WHERE radacctid = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(radacctid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .transpose()
    }

    pub async fn commit(&self, batch: &Batch) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(batch.rows.len());
        for session in &batch.rows {
            let values = RowValues::of(session);
            if session.radacctid == 0 {
                let id: i64 = bind_row!(sqlx::query_scalar(INSERT_ROW), values)
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
            } else {
                bind_row!(sqlx::query(UPDATE_ROW), values)
                    .bind(session.radacctid)
                    .execute(&mut *tx)
                    .await?;
                ids.push(session.radacctid);
            }
        }
        for (row, event) in &batch.events {
            let Some(&id) = ids.get(*row) else { continue };
            sqlx::query(INSERT_EVENT)
                .bind(id)
                .bind(event.kind)
                .bind(event.time)
                .bind(event.session_time)
                .bind(event.input_octets)
                .bind(event.output_octets)
                .bind(event.source.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for username in &batch.usernames {
            sqlx::query(SYNC_ONLINE)
                .bind(&**username)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn events_for(&self, radacctid: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT eventtype, EXTRACT(EPOCH FROM eventtime)::bigint AS t, acctsessiontime, \
             acctinputoctets, acctoutputoctets, source FROM radacct_events \
             WHERE radacctid = $1 ORDER BY eventtime, id",
        )
        .bind(radacctid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    kind: super::sqlite::event_kind(&r.try_get::<String, _>("eventtype")?),
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
        Ok(
            sqlx::query_scalar("SELECT is_online FROM subscribers WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn upsert_subscriber(
        &self,
        username: &str,
        reseller_id: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subscribers (username, reseller_id, is_online) VALUES ($1, $2, \
             EXISTS (SELECT 1 FROM radacct WHERE username = $1 AND acctstoptime IS NULL)) \
             ON CONFLICT (username) DO UPDATE SET reseller_id = excluded.reseller_id, \
             updated_at = now()",
        )
        .bind(username)
        .bind(reseller_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn nas_list(&self) -> Result<Vec<NasRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id::bigint AS id, nasname, shortname, secret, coa_port::bigint AS coa_port, \
             api_user, api_password, api_port::bigint AS api_port, description FROM nas ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().filter_map(nas_from_row).collect())
    }

    pub async fn nas_upsert(&self, nas: &NasConfig) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id::bigint FROM nas WHERE nasname = $1 ORDER BY id LIMIT 1 FOR UPDATE",
        )
        .bind(nas.ip.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let id = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE nas SET shortname = $2, secret = $3, coa_port = $4, api_user = $5, \
                     api_password = $6, api_port = $7, description = COALESCE($8, description) \
                     WHERE id = $1",
                )
                .bind(id as i32)
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i32::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i32::from(nas.api_port))
                .bind(&nas.description)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO nas (nasname, shortname, type, secret, coa_port, api_user, \
                 api_password, api_port, description) VALUES ($1, $2, 'mikrotik', $3, $4, $5, \
                 $6, $7, COALESCE($8, 'RADIUS Client')) RETURNING id::bigint",
                )
                .bind(nas.ip.to_string())
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i32::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i32::from(nas.api_port))
                .bind(&nas.description)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    pub async fn nas_remove(&self, name_or_ip: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM nas WHERE nasname = $1 OR shortname = $1")
            .bind(name_or_ip)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn nas_from_row(r: &sqlx::postgres::PgRow) -> Option<NasRow> {
    let nasname: String = r.try_get("nasname").ok()?;
    let ip = nasname.parse().ok()?;
    let port = |col: &str, default: u16| -> u16 {
        r.try_get::<Option<i64>, _>(col)
            .ok()
            .flatten()
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(default)
    };
    let name: Option<String> = r.try_get("shortname").ok()?;
    Some(NasRow {
        id: r.try_get("id").ok()?,
        config: NasConfig {
            name: name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| nasname.clone()),
            ip,
            secret: r.try_get("secret").ok()?,
            coa_port: port("coa_port", config::DEFAULT_COA_PORT),
            api_user: r.try_get("api_user").ok().flatten(),
            api_password: r.try_get("api_password").ok().flatten(),
            api_port: port("api_port", config::DEFAULT_API_PORT),
            description: r.try_get("description").ok().flatten(),
        },
    })
}
