//! PostgreSQL backend: the production store, FreeRADIUS-compatible (`inet`,
//! `timestamptz`, `bigint`), safe to point at an existing FreeRADIUS database.

use std::collections::HashMap;
use std::str::FromStr;

use futures_util::stream::{BoxStream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::{Batch, NasRow, RowValues, StoreError, session_from_row};
use crate::config::{self, DatabaseConfig, NasConfig};
use crate::sessions::model::{Event, Session, StopSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Indexes ensured at every start (EnsureIndexes), built CONCURRENTLY so that ingest from
/// other nodes (or FreeRADIUS) keeps writing while a missing one is built on a big table.
///
/// These are the ones ingest itself needs, so the server builds them before it listens:
/// finding a session's rows by key (`rows_for_keys`; `acctuniqueid` is UNIQUE in the
/// schema), the open rows of a NAS (Accounting-On/Off) and a user's open rows (the
/// `subscribers.is_online` sync of every commit).
const INGEST_INDEXES: &[(&str, &str)] = &[
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
];

/// The Sessions API's indexes on `radacct` and `radacct_archive`: filters and sorts of
/// closed sessions. A running server builds them in the background, after it listens.
///
/// The API's order is the sort column with NULLs as its smallest value, then `radacctid`
/// in the same direction (`query::order_by`), so one index per column serves both
/// directions: read forwards for `DESC NULLS LAST`, backwards for `ASC NULLS FIRST`. The
/// start-time ones carry `acctstoptime` (INCLUDE), so the exact count of closed sessions
/// in a period, of a NAS or of a user (`pagination.total`) is an index-only scan.
const API_INDEXES: &[(&str, &str)] = &[
    ("radacct_stoptime", "ON radacct (acctstoptime)"),
    ("radacct_framedip", "ON radacct (framedipaddress)"),
    ("radacct_callingstation", "ON radacct (callingstationid)"),
    (
        "radacct_user_start",
        "ON radacct (username, acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_nas_start",
        "ON radacct (nas_id, acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_sort_starttime",
        "ON radacct (acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_sort_inputoctets",
        "ON radacct (acctinputoctets DESC NULLS LAST, radacctid DESC)",
    ),
    (
        "radacct_sort_outputoctets",
        "ON radacct (acctoutputoctets DESC NULLS LAST, radacctid DESC)",
    ),
    (
        "radacct_sort_sessiontime",
        "ON radacct (acctsessiontime DESC NULLS LAST, radacctid DESC)",
    ),
    // `source=archive`: the same filters and sorts (no open sessions there).
    (
        "radacct_archive_user_start",
        "ON radacct_archive (username, acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_archive_nas_start",
        "ON radacct_archive (nas_id, acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_archive_sort_starttime",
        "ON radacct_archive (acctstarttime DESC NULLS LAST, radacctid DESC) \
         INCLUDE (acctstoptime)",
    ),
    (
        "radacct_archive_sort_inputoctets",
        "ON radacct_archive (acctinputoctets DESC NULLS LAST, radacctid DESC)",
    ),
    (
        "radacct_archive_sort_outputoctets",
        "ON radacct_archive (acctoutputoctets DESC NULLS LAST, radacctid DESC)",
    ),
    (
        "radacct_archive_sort_sessiontime",
        "ON radacct_archive (acctsessiontime DESC NULLS LAST, radacctid DESC)",
    ),
];

/// Indexes older radacctd versions created, replaced by `API_INDEXES` (their ascending
/// order could not serve the API's default `DESC NULLS LAST`). Dropped once the new ones
/// are built, and only when the index of that name is exactly the one radacctd made (its
/// definition ends with the column list below): an index of someone else's that happens
/// to bear the name is left alone.
const RETIRED_INDEXES: &[(&str, &str)] = &[
    ("radacct_username", "(username, acctstarttime)"),
    ("radacct_starttime", "(acctstarttime)"),
    ("radacct_nas_id", "(nas_id, acctstarttime)"),
    ("radacct_inputoctets", "(acctinputoctets)"),
    ("radacct_outputoctets", "(acctoutputoctets)"),
    ("radacct_sessiontime", "(acctsessiontime)"),
];

/// Key of the session advisory lock that serialises EnsureIndexes between radacctd nodes:
/// two concurrent `CREATE INDEX CONCURRENTLY` on one table can deadlock, and a node must
/// not mistake the other's build in progress (not yet valid) for a leftover to rebuild.
const ENSURE_INDEXES_LOCK: i64 = 0x7261_6461_6363_7464; // "radacctd"

/// Below this size of `radacct` plus `radacct_archive` (about 50,000 rows) the API's
/// indexes are built before the server listens rather than in the background.
const SMALL_TABLES_BYTES: i64 = 16 << 20;

/// SQLSTATE 40P01, deadlock_detected.
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// Attempts per statement of EnsureIndexes when PostgreSQL reports a deadlock.
const DEADLOCK_ATTEMPTS: u32 = 5;

pub(crate) const ROW_SOURCE: &str = "SELECT radacctid, acctuniqueid, sessionkey, nas_id, username, \
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

/// The element types of the 32 arrays `Columns::bind` binds, in order: the 31 columns of
/// `RowValues`, then `radacctid`.
const COLUMN_TYPES: [&str; 32] = [
    "text", "text", "text", "int8", "text", "text", "text", "text", "text", "int8", "int8", "int8",
    "int8", "int8", "text", "text", "text", "int8", "int8", "text", "text", "text", "text", "text",
    "text", "text", "text", "text", "text", "text", "text", "int8",
];

/// `UNNEST` of one `Columns` bound from parameter `$first` on, as the rows `v`.
fn unnest_rows(first: usize) -> String {
    let arrays: Vec<String> = COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "UNNEST({}) WITH ORDINALITY AS v(acctsessionid, acctuniqueid, sessionkey, nas_id, \
         username, realm, nasipaddress, nasportid, nasporttype, acctstarttime, acctupdatetime, \
         acctstoptime, acctinterval, acctsessiontime, acctauthentic, connectinfo_start, \
         connectinfo_stop, acctinputoctets, acctoutputoctets, calledstationid, \
         callingstationid, acctterminatecause, servicetype, framedprotocol, framedipaddress, \
         framedipv6address, framedipv6prefix, framedinterfaceid, delegatedipv6prefix, class, \
         stopsource, radacctid, ord)",
        arrays.join(", ")
    )
}

/// The whole group commit as one statement, so one round trip and PostgreSQL's implicit
/// transaction instead of BEGIN, four statements and COMMIT (each a wait for the server
/// and a wake-up on two busy cores: at 64 packets in flight the batches are small and
/// those waits were most of a commit). Parameters: `$1..$32` the new rows, `$33..$64` the
/// changed rows (`Columns::bind` each), `$65..$72` the history events, `$73` the usernames
/// whose online flag is recomputed. It returns one row per new row (`radacctid`,
/// `acctuniqueid`) and one with a NULL `acctuniqueid` whose `radacctid` is the number of
/// changed rows actually updated.
///
/// `ins` — every new row. `nasipaddress` is NOT NULL in the FreeRADIUS schema; a row always
/// has one (the NAS's or the packet's source).
///
/// `upd` — every changed row, guarded for several radacctd nodes (or FreeRADIUS) writing
/// the same table: a node's in-memory copy of a row can be stale when another writer
/// closed it meanwhile (NAS failover). The database then wins where this node's rules
/// would also have left the row alone — a row the NAS (or another writer) closed is never
/// touched, a closed row is never re-opened, and counters never go backwards — so a stale
/// copy can only fail to apply, never rewind billing data. On a single node these guards
/// never fire: the engine already follows the same rules (docs/ACCOUNTING.md).
///
/// `ev` — the history events in arrival order; an event of a new row names it by
/// `acctuniqueid` (its id is only known from `ins`). Should that ever miss, the NULL id
/// violates `radacctid NOT NULL` and the whole statement fails: nothing is half-written.
///
/// `sub` — `subscribers.is_online`. Every part of one statement sees the table as it was
/// before the statement, so a user is online when a row this batch did not touch is open,
/// or a row it inserted or updated is open afterwards (`ins`/`upd` return the rows as
/// written; a changed row that the guard skipped is closed in the table, so it rightly
/// counts for neither).
fn commit_sql() -> String {
    format!(
        "WITH ins AS (INSERT INTO radacct (acctsessionid, acctuniqueid, sessionkey, nas_id, \
         username, realm, nasipaddress, nasportid, nasporttype, acctstarttime, acctupdatetime, \
         acctstoptime, acctinterval, acctsessiontime, acctauthentic, connectinfo_start, \
         connectinfo_stop, acctinputoctets, acctoutputoctets, calledstationid, \
         callingstationid, acctterminatecause, servicetype, framedprotocol, framedipaddress, \
         framedipv6address, framedipv6prefix, framedinterfaceid, delegatedipv6prefix, class, \
         stopsource) \
         SELECT acctsessionid, acctuniqueid, sessionkey, nas_id, username, realm, \
         COALESCE(nasipaddress::inet, '0.0.0.0'::inet), nasportid, nasporttype, \
         to_timestamp(acctstarttime), to_timestamp(acctupdatetime), to_timestamp(acctstoptime), \
         acctinterval, acctsessiontime, acctauthentic, connectinfo_start, connectinfo_stop, \
         acctinputoctets, acctoutputoctets, calledstationid, callingstationid, \
         acctterminatecause, servicetype, framedprotocol, framedipaddress::inet, \
         framedipv6address::inet, framedipv6prefix::inet, framedinterfaceid, \
         delegatedipv6prefix::inet, class, stopsource FROM {new_rows} ORDER BY ord \
         RETURNING radacctid, acctuniqueid, username, acctstoptime), \
         upd AS (UPDATE radacct r SET acctsessionid = v.acctsessionid, \
         acctuniqueid = v.acctuniqueid, sessionkey = v.sessionkey, nas_id = v.nas_id, \
         username = v.username, realm = v.realm, \
         nasipaddress = COALESCE(v.nasipaddress::inet, r.nasipaddress), \
         nasportid = v.nasportid, nasporttype = v.nasporttype, \
         acctstarttime = to_timestamp(v.acctstarttime), \
         acctupdatetime = to_timestamp(v.acctupdatetime), \
         acctstoptime = CASE WHEN v.acctstoptime IS NULL THEN r.acctstoptime \
         ELSE to_timestamp(v.acctstoptime) END, acctinterval = v.acctinterval, \
         acctsessiontime = v.acctsessiontime, acctauthentic = v.acctauthentic, \
         connectinfo_start = v.connectinfo_start, connectinfo_stop = v.connectinfo_stop, \
         acctinputoctets = GREATEST(r.acctinputoctets, v.acctinputoctets), \
         acctoutputoctets = GREATEST(r.acctoutputoctets, v.acctoutputoctets), \
         calledstationid = v.calledstationid, callingstationid = v.callingstationid, \
         acctterminatecause = v.acctterminatecause, servicetype = v.servicetype, \
         framedprotocol = v.framedprotocol, framedipaddress = v.framedipaddress::inet, \
         framedipv6address = v.framedipv6address::inet, \
         framedipv6prefix = v.framedipv6prefix::inet, framedinterfaceid = v.framedinterfaceid, \
         delegatedipv6prefix = v.delegatedipv6prefix::inet, class = v.class, \
         stopsource = v.stopsource FROM {changed_rows} WHERE r.radacctid = v.radacctid \
         AND (r.acctstoptime IS NULL OR r.stopsource = 'server') \
         RETURNING r.radacctid, r.username, r.acctstoptime), \
         ev AS (INSERT INTO radacct_events (radacctid, eventtype, eventtime, acctsessiontime, \
         acctinputoctets, acctoutputoctets, source) \
         SELECT CASE WHEN e.id = 0 THEN ins.radacctid ELSE e.id END, e.kind, to_timestamp(e.t), e.st, e.i, e.o, e.src \
         FROM UNNEST($65::int8[], $66::text[], $67::text[], $68::int8[], $69::int8[], \
         $70::int8[], $71::int8[], $72::text[]) WITH ORDINALITY AS e(id, uid, kind, t, st, i, o, \
         src, ord) LEFT JOIN ins ON e.id = 0 AND ins.acctuniqueid = e.uid ORDER BY e.ord), \
         sub AS (UPDATE subscribers s SET is_online = \
         EXISTS (SELECT 1 FROM radacct WHERE radacct.username = s.username \
         AND radacct.acctstoptime IS NULL AND radacct.radacctid <> ALL($64::int8[])) \
         OR EXISTS (SELECT 1 FROM ins WHERE ins.username = s.username \
         AND ins.acctstoptime IS NULL) \
         OR EXISTS (SELECT 1 FROM upd WHERE upd.username = s.username \
         AND upd.acctstoptime IS NULL), updated_at = now() WHERE s.username = ANY($73::text[])) \
         SELECT radacctid, acctuniqueid FROM ins \
         UNION ALL SELECT COUNT(*), NULL FROM upd",
        new_rows = unnest_rows(1),
        changed_rows = unnest_rows(33),
    )
}

/// One batch's rows as parallel arrays (one per column), for UNNEST.
#[derive(Default)]
struct Columns<'a> {
    acctsessionid: Vec<&'a str>,
    acctuniqueid: Vec<&'a str>,
    sessionkey: Vec<String>,
    nas_id: Vec<Option<i64>>,
    username: Vec<&'a str>,
    realm: Vec<Option<&'a str>>,
    nasipaddress: Vec<Option<String>>,
    nasportid: Vec<Option<&'a str>>,
    nasporttype: Vec<Option<&'a str>>,
    acctstarttime: Vec<i64>,
    acctupdatetime: Vec<i64>,
    acctstoptime: Vec<Option<i64>>,
    acctinterval: Vec<Option<i64>>,
    acctsessiontime: Vec<i64>,
    acctauthentic: Vec<Option<&'a str>>,
    connectinfo_start: Vec<Option<&'a str>>,
    connectinfo_stop: Vec<Option<&'a str>>,
    acctinputoctets: Vec<i64>,
    acctoutputoctets: Vec<i64>,
    calledstationid: Vec<Option<&'a str>>,
    callingstationid: Vec<Option<&'a str>>,
    acctterminatecause: Vec<Option<&'a str>>,
    servicetype: Vec<Option<&'a str>>,
    framedprotocol: Vec<Option<&'a str>>,
    framedipaddress: Vec<Option<String>>,
    framedipv6address: Vec<Option<&'a str>>,
    framedipv6prefix: Vec<Option<&'a str>>,
    framedinterfaceid: Vec<Option<&'a str>>,
    delegatedipv6prefix: Vec<Option<&'a str>>,
    class: Vec<Option<&'a str>>,
    stopsource: Vec<Option<&'static str>>,
    radacctid: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn len(&self) -> usize {
        self.radacctid.len()
    }

    fn push(&mut self, s: &'a Session) {
        // Destructured so that a column added to RowValues cannot be forgotten here.
        let RowValues {
            acctsessionid,
            acctuniqueid,
            sessionkey,
            nas_id,
            username,
            realm,
            nasipaddress,
            nasportid,
            nasporttype,
            acctstarttime,
            acctupdatetime,
            acctstoptime,
            acctinterval,
            acctsessiontime,
            acctauthentic,
            connectinfo_start,
            connectinfo_stop,
            acctinputoctets,
            acctoutputoctets,
            calledstationid,
            callingstationid,
            acctterminatecause,
            servicetype,
            framedprotocol,
            framedipaddress,
            framedipv6address,
            framedipv6prefix,
            framedinterfaceid,
            delegatedipv6prefix,
            class,
            stopsource,
        } = RowValues::of(s);
        self.acctsessionid.push(acctsessionid);
        self.acctuniqueid.push(acctuniqueid);
        self.sessionkey.push(sessionkey);
        self.nas_id.push(nas_id);
        self.username.push(username);
        self.realm.push(realm);
        self.nasipaddress.push(nasipaddress);
        self.nasportid.push(nasportid);
        self.nasporttype.push(nasporttype);
        self.acctstarttime.push(acctstarttime);
        self.acctupdatetime.push(acctupdatetime);
        self.acctstoptime.push(acctstoptime);
        self.acctinterval.push(acctinterval);
        self.acctsessiontime.push(acctsessiontime);
        self.acctauthentic.push(acctauthentic);
        self.connectinfo_start.push(connectinfo_start);
        self.connectinfo_stop.push(connectinfo_stop);
        self.acctinputoctets.push(acctinputoctets);
        self.acctoutputoctets.push(acctoutputoctets);
        self.calledstationid.push(calledstationid);
        self.callingstationid.push(callingstationid);
        self.acctterminatecause.push(acctterminatecause);
        self.servicetype.push(servicetype);
        self.framedprotocol.push(framedprotocol);
        self.framedipaddress.push(framedipaddress);
        self.framedipv6address.push(framedipv6address);
        self.framedipv6prefix.push(framedipv6prefix);
        self.framedinterfaceid.push(framedinterfaceid);
        self.delegatedipv6prefix.push(delegatedipv6prefix);
        self.class.push(class);
        self.stopsource.push(stopsource);
        self.radacctid.push(s.radacctid);
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        q.bind(self.acctsessionid)
            .bind(self.acctuniqueid)
            .bind(self.sessionkey)
            .bind(self.nas_id)
            .bind(self.username)
            .bind(self.realm)
            .bind(self.nasipaddress)
            .bind(self.nasportid)
            .bind(self.nasporttype)
            .bind(self.acctstarttime)
            .bind(self.acctupdatetime)
            .bind(self.acctstoptime)
            .bind(self.acctinterval)
            .bind(self.acctsessiontime)
            .bind(self.acctauthentic)
            .bind(self.connectinfo_start)
            .bind(self.connectinfo_stop)
            .bind(self.acctinputoctets)
            .bind(self.acctoutputoctets)
            .bind(self.calledstationid)
            .bind(self.callingstationid)
            .bind(self.acctterminatecause)
            .bind(self.servicetype)
            .bind(self.framedprotocol)
            .bind(self.framedipaddress)
            .bind(self.framedipv6address)
            .bind(self.framedipv6prefix)
            .bind(self.framedinterfaceid)
            .bind(self.delegatedipv6prefix)
            .bind(self.class)
            .bind(self.stopsource)
            .bind(self.radacctid)
    }
}

/// Connections of the ingest pool (`PgStore::ingest`): the writer commits one batch at a
/// time, and the engine's key lookups run before it, on the same task.
const INGEST_CONNECTIONS: u32 = 2;

#[derive(Debug, Clone)]
pub struct PgStore {
    /// The API, the jobs and the CLI: PostgreSQL's planner as configured.
    pool: PgPool,
    /// The writer's statements only (key lookups and the group commit), on connections
    /// with `enable_seqscan = off` and `plan_cache_mode = force_generic_plan`.
    ///
    /// Generic plans: the statements are always the same texts with arrays as parameters,
    /// so one plan serves every batch; by default PostgreSQL plans each execution anew
    /// while it compares costs, and for the one-statement commit (`commit_sql`) planning
    /// took longer than executing a batch of 32 rows (5,200 against 9,200 packets/s at 64
    /// in flight, measured).
    ///
    /// Sequential scans priced out: each of those statements reads radacct by an index
    /// (the primary key, `acctuniqueid`, `radacct_sessionkey`, `radacct_open_username`),
    /// but on a young radacct — no statistics yet, or statistics from when it was a few
    /// pages long — the planner costs a sequential scan lower and keeps that plan cached
    /// on the connection until autovacuum next analyses the table: measured, a fresh
    /// database took 42 ms per key lookup (a scan of every row for each batch) and ingest
    /// fell from 10,700 to 1,900 packets/s as radacct grew (docs/BENCHMARKS.md). With
    /// sequential scans priced out, the index plans are chosen at any table size. The
    /// setting is a cost, not a ban: without a usable index PostgreSQL still scans.
    ingest: PgPool,
}

impl PgStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&cfg.url)?.application_name("radacctd");
        // Times are read as epoch seconds and written with to_timestamp(), so the session
        // time zone cannot shift them; UTC keeps psql output readable.
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET TIME ZONE 'UTC'").execute(conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        let ingest = PgPoolOptions::new()
            .max_connections(INGEST_CONNECTIONS)
            .acquire_timeout(cfg.connect_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET TIME ZONE 'UTC'; SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.application_name("radacctd-ingest"));
        Ok(PgStore { pool, ingest })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Everything: the schema migrations, then every index (`radacctd migrate`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_for_ingest().await?;
        self.ensure_api_indexes().await
    }

    /// What the server needs before it may accept packets: the schema migrations and the
    /// indexes ingest uses.
    ///
    /// While `radacct` and `radacct_archive` are small (a new database, a test) the API's
    /// indexes are built here too: that takes well under a second, and then nothing builds
    /// in the background while the server runs.
    pub async fn migrate_for_ingest(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        self.ensure_indexes(INGEST_INDEXES, &[]).await?;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(pg_relation_size(to_regclass('radacct')), 0) \
             + COALESCE(pg_relation_size(to_regclass('radacct_archive')), 0) AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        if bytes < SMALL_TABLES_BYTES {
            self.ensure_api_indexes().await?;
        }
        Ok(())
    }

    /// The Sessions API's indexes, and the retirement of the ones they replace.
    pub async fn ensure_api_indexes(&self) -> Result<(), StoreError> {
        self.ensure_indexes(API_INDEXES, RETIRED_INDEXES).await
    }

    /// EnsureIndexes: create what is missing without blocking writers, rebuild any index an
    /// interrupted concurrent build left invalid, then drop `retired` ones. One node at a
    /// time (advisory lock, held on one connection); a deadlock is retried. When every
    /// index is already in place nothing waits for the lock, so a node starting while
    /// another builds the API's indexes starts at once.
    async fn ensure_indexes(
        &self,
        wanted: &[(&str, &str)],
        retired: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        if self.indexes_in_place(wanted, retired).await? {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        // Polled, not `pg_advisory_lock`: a statement waiting for the lock is a transaction
        // that the other node's `CREATE INDEX CONCURRENTLY` waits for in turn (it waits for
        // every older snapshot) — a deadlock.
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(ENSURE_INDEXES_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if locked {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let result = ensure_indexes_on(&mut conn, wanted, retired).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(ENSURE_INDEXES_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock must not outlive this run on a pooled connection.
            conn.detach();
        }
        result
    }

    /// Whether every `wanted` index exists and is valid and no `retired` one is left.
    async fn indexes_in_place(
        &self,
        wanted: &[(&str, &str)],
        retired: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let wanted: Vec<&str> = wanted.iter().map(|(name, _)| *name).collect();
        let retired: Vec<&str> = retired.iter().map(|(name, _)| *name).collect();
        Ok(sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = ANY($1) AND i.indisvalid AND pg_table_is_visible(c.oid)) \
             = cardinality($1) AND NOT EXISTS (SELECT 1 FROM pg_indexes \
             WHERE schemaname = current_schema() AND indexname = ANY($2))",
        )
        .bind(&wanted)
        .bind(&retired)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn rows_for_keys(&self, keys_hex: &[String]) -> Result<Vec<Session>, StoreError> {
        let sql = format!("{ROW_SOURCE} WHERE sessionkey = ANY($1) OR acctuniqueid = ANY($1)");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(keys_hex)
            .fetch_all(&self.ingest)
            .await?;
        rows.iter()
            .map(|r| session_from_row!(r).map_err(StoreError::from))
            .collect()
    }

    /// Every open row, streamed: decoded one at a time as the database returns them.
    pub fn open_sessions(&self) -> BoxStream<'_, Result<Session, StoreError>> {
        let sql = format!("{ROW_SOURCE} WHERE acctstoptime IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .fetch(&self.pool)
            .map(|r| session_from_row!(&r?).map_err(StoreError::from))
            .boxed()
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

    /// Group commit: the whole batch in one statement (`commit_sql`), whatever its size.
    pub async fn commit(&self, batch: &Batch) -> Result<Vec<i64>, StoreError> {
        let mut inserts = Columns::default();
        let mut updates = Columns::default();
        for s in &batch.rows {
            if s.radacctid == 0 {
                inserts.push(s);
            } else {
                updates.push(s);
            }
        }
        let wanted = updates.len();
        let n = batch.events.len();
        let (mut id, mut uid, mut kind, mut t, mut st, mut i, mut o, mut src) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (row, e) in &batch.events {
            let Some(s) = batch.rows.get(*row) else {
                continue;
            };
            id.push(s.radacctid);
            uid.push(&*s.acctuniqueid);
            kind.push(e.kind);
            t.push(e.time);
            st.push(e.session_time);
            i.push(e.input_octets);
            o.push(e.output_octets);
            src.push(e.source.as_str());
        }
        let names: Vec<&str> = batch.usernames.iter().map(|u| &**u).collect();
        let sql = commit_sql();
        let query = updates.bind(inserts.bind(sqlx::query(AssertSqlSafe(sql))));
        let rows = query
            .bind(id)
            .bind(uid)
            .bind(kind)
            .bind(t)
            .bind(st)
            .bind(i)
            .bind(o)
            .bind(src)
            .bind(names)
            .fetch_all(&self.ingest)
            .await?;
        let mut new_ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        let mut updated = 0;
        for r in rows {
            match r.try_get::<Option<String>, _>("acctuniqueid")? {
                Some(u) => {
                    new_ids.insert(u, r.try_get("radacctid")?);
                }
                None => updated = r.try_get::<i64, _>("radacctid")? as usize,
            }
        }
        let skipped = wanted.saturating_sub(updated);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "rows closed meanwhile by another writer of this database were left as they \
                 are (several radacctd nodes or FreeRADIUS on one radacct table)"
            );
        }
        batch
            .rows
            .iter()
            .map(|s| match s.radacctid {
                0 => new_ids
                    .get(&*s.acctuniqueid)
                    .copied()
                    .ok_or_else(|| StoreError::NotFound(format!("id of {}", s.acctuniqueid))),
                id => Ok(id),
            })
            .collect()
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
             api_user, api_password, api_port::bigint AS api_port, api_tls, api_tls_fingerprint, \
             description FROM nas ORDER BY id",
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
                     api_password = $6, api_port = $7, description = COALESCE($8, description), \
                     api_tls = $9, api_tls_fingerprint = $10 WHERE id = $1",
                )
                .bind(id as i32)
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i32::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i32::from(nas.api_port))
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
                 api_password, api_port, description, api_tls, api_tls_fingerprint) VALUES ($1, \
                 $2, 'mikrotik', $3, $4, $5, $6, $7, COALESCE($8, 'RADIUS Client'), $9, $10) \
                 RETURNING id::bigint",
                )
                .bind(nas.ip.to_string())
                .bind(&nas.name)
                .bind(&nas.secret)
                .bind(i32::from(nas.coa_port))
                .bind(&nas.api_user)
                .bind(&nas.api_password)
                .bind(i32::from(nas.api_port))
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
        let done = sqlx::query("DELETE FROM nas WHERE nasname = $1 OR shortname = $1")
            .bind(name_or_ip)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.ingest.close().await;
        self.pool.close().await;
    }
}

async fn ensure_indexes_on(
    conn: &mut sqlx::PgConnection,
    wanted: &[(&str, &str)],
    retired: &[(&str, &str)],
) -> Result<(), StoreError> {
    for (name, definition) in wanted {
        let mut attempt = 1;
        // A build that lost a deadlock leaves an invalid index behind: the next attempt
        // finds it and rebuilds it.
        while let Err(e) = ensure_index(conn, name, definition).await {
            if !is_deadlock(&e) || attempt >= DEADLOCK_ATTEMPTS {
                return Err(e.into());
            }
            tracing::warn!(index = name, attempt, "deadlock detected; retrying");
            tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
            attempt += 1;
        }
    }
    for (name, columns) in retired {
        let ours: Option<bool> = sqlx::query_scalar(
            "SELECT tablename = 'radacct' AND indexdef LIKE '% USING btree ' || $2 \
             FROM pg_indexes WHERE indexname = $1 AND schemaname = current_schema()",
        )
        .bind(name)
        .bind(columns)
        .fetch_optional(&mut *conn)
        .await?;
        match ours {
            Some(true) => {
                tracing::info!(index = name, "dropping an index replaced by a newer one");
                let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
                let mut attempt = 1;
                while let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                    .execute(&mut *conn)
                    .await
                {
                    if !is_deadlock(&e) || attempt >= DEADLOCK_ATTEMPTS {
                        return Err(e.into());
                    }
                    tracing::warn!(index = name, attempt, "deadlock detected; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)))
                        .await;
                    attempt += 1;
                }
            }
            Some(false) => {
                tracing::debug!(index = name, "not radacctd's index; left as it is")
            }
            None => {}
        }
    }
    Ok(())
}

/// One index: nothing when it exists and is valid; otherwise (re)built concurrently.
async fn ensure_index(
    conn: &mut sqlx::PgConnection,
    name: &str,
    definition: &str,
) -> Result<(), sqlx::Error> {
    let invalid: Option<bool> = sqlx::query_scalar(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = $1 AND pg_table_is_visible(c.oid)",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    match invalid {
        Some(false) => return Ok(()),
        Some(true) => {
            tracing::warn!(index = name, "rebuilding an invalid index");
            let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await?;
        }
        None => {}
    }
    tracing::info!(index = name, "creating index");
    let sql = format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}");
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
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
    let (api_tls, api_tls_fingerprint, api_password) = super::nas_api_tls_columns(
        &nasname,
        r.try_get("api_tls").ok().flatten(),
        r.try_get("api_tls_fingerprint").ok().flatten(),
        r.try_get("api_password").ok().flatten(),
    );
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
            api_password,
            api_port: port("api_port", config::DEFAULT_API_PORT),
            api_tls,
            api_tls_fingerprint,
            description: r.try_get("description").ok().flatten(),
        },
    })
}
