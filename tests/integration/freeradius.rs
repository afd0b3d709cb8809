//! Compatibility with FreeRADIUS 3.2 on PostgreSQL: radacctd migrates a database created
//! with the stock FreeRADIUS schema without changing anything FreeRADIUS relies on, and the
//! real FreeRADIUS (rlm_sql with the stock queries, started by `scripts/freeradius.sh`)
//! keeps writing accounting into it afterwards. Sessions FreeRADIUS opened are continued by
//! radacctd on the same rows.
//!
//! PostgreSQL only: radacctd refuses a FreeRADIUS SQLite file (FreeRADIUS 3.2 stores times
//! there as epoch integers; see `sqlite::refuse_foreign_radacct` and its test).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use radacctd::app::Server;
use radacctd::sessions::SessionKey;
use serde_json::Value;
use sqlx::Connection;

use crate::harness::{Acct, Backend, NAS_IP, RadClient, SECRET, TestDb, config, now, radclient};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/freeradius.sh");

/// Attributes of every packet below, as `harness::Acct` sends them to radacctd.
const NAS_IDENTIFIER: &str = "MikroTik";
const NAS_PORT_ID: &str = "bridge1";

/// A FreeRADIUS accounting server on its own UDP port, writing to `db`; stopped on drop
/// (also when a test panics, then printing the end of its log).
struct FreeRadius {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stopped: bool,
}

impl FreeRadius {
    async fn start(db: &TestDb) -> FreeRadius {
        let pg = PgTarget::parse(&db.url);
        let dir = tempfile::tempdir().unwrap();
        // The free port is found by binding and releasing it, so another process may take
        // it before FreeRADIUS binds: then FreeRADIUS exits at start and we try another.
        let mut failures = String::new();
        for _ in 0..3 {
            let port = free_udp_port();
            let out = tokio::process::Command::new(SCRIPT)
                .arg("start")
                .arg(dir.path())
                .args([
                    &port.to_string(),
                    &pg.host,
                    &pg.port,
                    &pg.user,
                    &pg.db,
                    SECRET,
                ])
                .output()
                .await
                .expect("cannot run scripts/freeradius.sh");
            if out.status.success() {
                return FreeRadius {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    dir,
                    stopped: false,
                };
            }
            failures += &String::from_utf8_lossy(&out.stdout);
            failures += &String::from_utf8_lossy(&out.stderr);
        }
        panic!("FreeRADIUS did not start:\n{failures}");
    }

    /// Send one Accounting-Request with radclient; panics unless FreeRADIUS answered, which
    /// it does only after rlm_sql's query succeeded.
    async fn send(&self, attrs: &str) {
        let (ok, out) = radclient(self.addr, "acct", SECRET, attrs).await;
        assert!(
            ok,
            "FreeRADIUS did not answer:\n{out}\n--- radius.log ---\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radius.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let status = std::process::Command::new(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("scripts/freeradius.sh stop failed: {status:?}");
        }
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- FreeRADIUS radius.log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.stop();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The parts of `postgres://user@host:port/db` rlm_sql is configured with.
struct PgTarget {
    host: String,
    port: String,
    user: String,
    db: String,
}

impl PgTarget {
    fn parse(url: &str) -> PgTarget {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .unwrap_or_else(|| panic!("not a PostgreSQL URL: {url}"));
        let (user, rest) = rest.split_once('@').expect("URL without a user");
        let user = user.split(':').next().unwrap_or(user);
        let (host_port, db) = rest.split_once('/').expect("URL without a database");
        let db = db.split('?').next().unwrap_or(db);
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
        PgTarget {
            host: host.to_owned(),
            port: port.to_owned(),
            user: user.to_owned(),
            db: db.to_owned(),
        }
    }
}

/// The stock schema file shipped with FreeRADIUS (installs the packages if needed).
async fn stock_schema() -> PathBuf {
    let out = tokio::process::Command::new(SCRIPT)
        .arg("schema")
        .output()
        .await
        .expect("cannot run scripts/freeradius.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh database created exactly as a FreeRADIUS administrator does it:
/// `psql -f schema.sql`.
async fn stock_freeradius_db() -> TestDb {
    let db = TestDb::new(Backend::Postgres).await;
    let schema = stock_schema().await;
    psql_file(&db, &schema).await;
    db
}

async fn psql_file(db: &TestDb, file: &Path) {
    let out = tokio::process::Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1"])
        .arg(&db.url)
        .arg("-f")
        .arg(file)
        .output()
        .await
        .expect("psql not found (postgresql-client)");
    assert!(
        out.status.success(),
        "psql -f {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An Accounting-Request in radclient's text form with the same attributes `Acct` gives
/// radacctd (MikroTik PPPoE), so both servers compute the same session key.
fn fr_packet(status: &str, user: &str, sid: &str, nas_port: u32, ts: u32, extra: &str) -> String {
    format!(
        "Acct-Status-Type = {status}\n\
         User-Name = \"{user}\"\n\
         Acct-Session-Id = \"{sid}\"\n\
         NAS-IP-Address = {NAS_IP}\n\
         NAS-Identifier = \"{NAS_IDENTIFIER}\"\n\
         NAS-Port-Id = \"{NAS_PORT_ID}\"\n\
         NAS-Port = {nas_port}\n\
         NAS-Port-Type = Ethernet\n\
         Service-Type = Framed-User\n\
         Framed-Protocol = PPP\n\
         Calling-Station-Id = \"F8:B4:6A:C1:71:78\"\n\
         Called-Station-Id = \"service1\"\n\
         Acct-Delay-Time = 0\n\
         Event-Timestamp = {ts}\n\
         {extra}"
    )
}

fn key(user: &str, sid: &str, nas_port: u32) -> SessionKey {
    SessionKey::freeradius(
        user.as_bytes(),
        sid.as_bytes(),
        NAS_IP,
        NAS_IDENTIFIER.as_bytes(),
        NAS_PORT_ID.as_bytes(),
        Some(nas_port),
    )
}

async fn connect(db: &TestDb) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&db.url).await.unwrap()
}

async fn strings(db: &TestDb, sql: &str) -> Vec<String> {
    let mut c = connect(db).await;
    let v = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.ok();
    v
}

/// Every `radacct` row as JSON (all columns, whatever the schema has), plus the times as
/// epoch seconds, the NAS address as text and its column type, ordered by radacctid.
async fn radacct_rows(db: &TestDb) -> Vec<Value> {
    strings(
        db,
        "SELECT (to_jsonb(r) || jsonb_build_object(\
           'start_s', EXTRACT(EPOCH FROM acctstarttime)::bigint, \
           'update_s', EXTRACT(EPOCH FROM acctupdatetime)::bigint, \
           'stop_s', EXTRACT(EPOCH FROM acctstoptime)::bigint, \
           'nasip', host(nasipaddress), \
           'nasip_type', pg_typeof(nasipaddress)::text))::text \
         FROM radacct r ORDER BY radacctid",
    )
    .await
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect()
}

fn row_of<'a>(rows: &'a [Value], sid: &str) -> &'a Value {
    let found: Vec<&Value> = rows.iter().filter(|r| r["acctsessionid"] == sid).collect();
    assert_eq!(found.len(), 1, "rows of session {sid}: {rows:#?}");
    found[0]
}

/// Structure of every table in `public`: what FreeRADIUS's queries depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schema {
    /// (table, column) → "type nullability default"
    columns: BTreeMap<(String, String), String>,
    /// index name → definition
    indexes: BTreeMap<String, String>,
    /// (table, constraint) → definition
    constraints: BTreeMap<(String, String), String>,
}

impl Schema {
    async fn read(db: &TestDb) -> Schema {
        let pairs = |v: Vec<String>| -> Vec<(String, String)> {
            v.into_iter()
                .map(|s| {
                    let (a, b) = s.split_once('\t').unwrap();
                    (a.to_owned(), b.to_owned())
                })
                .collect()
        };
        // format_type rather than information_schema's data_type: it shows lengths too.
        let columns = pairs(
            strings(
                db,
                "SELECT c.relname || '.' || a.attname || E'\\t' || \
                   format_type(a.atttypid, a.atttypmod) || \
                   CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END || ' ' || \
                   COALESCE(pg_get_expr(d.adbin, d.adrelid), '-') \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
                   AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .await,
        )
        .into_iter()
        .map(|(tc, def)| {
            let (t, c) = tc.split_once('.').unwrap();
            ((t.to_owned(), c.to_owned()), def)
        })
        .collect();
        let indexes = pairs(
            strings(
                db,
                "SELECT indexname || E'\\t' || indexdef FROM pg_indexes \
                 WHERE schemaname = 'public'",
            )
            .await,
        )
        .into_iter()
        .collect();
        let constraints = pairs(
            strings(
                db,
                "SELECT c.relname || '.' || k.conname || E'\\t' || pg_get_constraintdef(k.oid) \
                 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
            )
            .await,
        )
        .into_iter()
        .map(|(tc, def)| {
            let (t, c) = tc.split_once('.').unwrap();
            ((t.to_owned(), c.to_owned()), def)
        })
        .collect();
        Schema {
            columns,
            indexes,
            constraints,
        }
    }

    /// Panic unless everything in `self` is still in `now`, unchanged.
    fn assert_kept_in(&self, now: &Schema) {
        fn changed<K: Ord + std::fmt::Debug>(
            what: &str,
            before: &BTreeMap<K, String>,
            after: &BTreeMap<K, String>,
        ) -> Vec<String> {
            before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(*v))
                .map(|(k, v)| format!("{what} {k:?}: was {v:?}, now {:?}", after.get(k)))
                .collect()
        }
        let mut broken = changed("column", &self.columns, &now.columns);
        broken.extend(changed("index", &self.indexes, &now.indexes));
        broken.extend(changed("constraint", &self.constraints, &now.constraints));
        assert!(
            broken.is_empty(),
            "the migration changed the FreeRADIUS schema:\n{}",
            broken.join("\n")
        );
    }

    fn radacct_columns(&self) -> Vec<&str> {
        self.columns
            .keys()
            .filter(|(t, _)| t == "radacct")
            .map(|(_, c)| c.as_str())
            .collect()
    }
}

/// The rows of `radacct` restricted to `columns`, as JSON text.
async fn radacct_projection(db: &TestDb, columns: &[&str]) -> Vec<String> {
    strings(
        db,
        &format!(
            "SELECT row_to_json(x)::text FROM (SELECT {} FROM radacct ORDER BY radacctid) x",
            columns.join(", ")
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radacctd_migrates_a_stock_freeradius_schema_without_breaking_it() {
    if crate::harness::skip_postgres() {
        return;
    }
    let db = stock_freeradius_db().await;

    // Rows written by the real FreeRADIUS: one finished session, one still open.
    let t0 = now() - 200;
    let mut fr = FreeRadius::start(&db).await;
    fr.send(&fr_packet("Start", "old", "A0000001", 1, t0, ""))
        .await;
    fr.send(&fr_packet(
        "Stop",
        "old",
        "A0000001",
        1,
        t0 + 40,
        "Acct-Session-Time = 40\nAcct-Input-Octets = 111\nAcct-Output-Octets = 222\n\
         Acct-Terminate-Cause = User-Request\n",
    ))
    .await;
    fr.send(&fr_packet("Start", "open", "A0000002", 2, t0 + 10, ""))
        .await;
    fr.stop();

    let stock = Schema::read(&db).await;
    assert!(
        stock.indexes.contains_key("radacct_active_session_idx")
            && stock
                .constraints
                .contains_key(&("radacct".into(), "radacct_acctuniqueid_key".into())),
        "not the stock schema? {stock:#?}"
    );
    let stock_columns = stock.radacct_columns();
    let stock_rows = radacct_projection(&db, &stock_columns).await;
    assert_eq!(stock_rows.len(), 2);

    let server = Server::start(config(&db, "")).await.unwrap();
    let migrated = Schema::read(&db).await;
    stock.assert_kept_in(&migrated);
    assert_eq!(
        radacct_projection(&db, &stock_columns).await,
        stock_rows,
        "migration changed rows FreeRADIUS wrote"
    );
    // radacctd's own columns exist, and the open FreeRADIUS session is indexed.
    for c in ["sessionkey", "nas_id", "stopsource"] {
        assert!(
            migrated.columns.contains_key(&("radacct".into(), c.into())),
            "radacct.{c} missing"
        );
    }
    assert_eq!(server.index.len(), 1, "FreeRADIUS's open session indexed");

    // radacctd records a session of its own into the migrated table.
    let client = RadClient::new(server.radius_addr, SECRET).await;
    let t1 = now() - 100;
    let s = |a: Acct| a.port(3).framed_ip([10, 0, 0, 3]);
    client.send(&s(Acct::start("new", "B0000001")).at(t1)).await;
    client
        .send(
            &s(Acct::stop("new", "B0000001"))
                .at(t1 + 30)
                .time(30)
                .octets(1000, 2000)
                .cause(1),
        )
        .await;
    let rows = radacct_rows(&db).await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let r = row_of(&rows, "B0000001");
    assert_eq!(r["acctuniqueid"], key("new", "B0000001", 3).to_hex());
    assert_eq!(r["username"], "new");
    assert_eq!(r["nasip"], NAS_IP);
    assert_eq!(r["nasip_type"], "inet");
    assert_eq!(r["framedipaddress"], "10.0.0.3");
    assert_eq!(r["start_s"], i64::from(t1));
    assert_eq!(r["stop_s"], i64::from(t1 + 30));
    assert_eq!(r["acctsessiontime"], 30);
    assert_eq!(r["acctinputoctets"], 1000);
    assert_eq!(r["acctoutputoctets"], 2000);
    assert_eq!(r["acctterminatecause"], "User-Request");
    assert_eq!(r["nasportid"], NAS_PORT_ID);
    server.stop().await;

    // A second start on the migrated database changes nothing.
    let before = Schema::read(&db).await;
    let rows_before = radacct_rows(&db).await;
    let server = Server::start(config(&db, "")).await.unwrap();
    assert_eq!(
        Schema::read(&db).await,
        before,
        "second migration changed the schema"
    );
    assert_eq!(radacct_rows(&db).await, rows_before);
    assert_eq!(server.index.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeradius_still_writes_accounting_after_radacctd_migrated() {
    if crate::harness::skip_postgres() {
        return;
    }
    let db = stock_freeradius_db().await;
    Server::start(config(&db, "")).await.unwrap().stop().await;

    let mut fr = FreeRadius::start(&db).await;
    let t0 = now() - 250;

    // A whole session through FreeRADIUS: its Start INSERT ... ON CONFLICT, its Interim
    // and Stop UPDATEs all run against the migrated table.
    fr.send(&fr_packet(
        "Start",
        "alice",
        "C0000001",
        7,
        t0,
        "Framed-IP-Address = 10.0.0.7\n",
    ))
    .await;
    fr.send(&fr_packet(
        "Interim-Update",
        "alice",
        "C0000001",
        7,
        t0 + 60,
        "Acct-Session-Time = 60\nAcct-Input-Octets = 500\nAcct-Output-Octets = 600\n\
         Framed-IP-Address = 10.0.0.7\n",
    ))
    .await;
    fr.send(&fr_packet(
        "Stop",
        "alice",
        "C0000001",
        7,
        t0 + 90,
        "Acct-Session-Time = 90\nAcct-Input-Octets = 700\nAcct-Output-Octets = 800\n\
         Acct-Input-Gigawords = 1\nAcct-Terminate-Cause = Lost-Carrier\n\
         Framed-IP-Address = 10.0.0.7\n",
    ))
    .await;
    let rows = radacct_rows(&db).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = row_of(&rows, "C0000001");
    assert_eq!(r["acctuniqueid"], key("alice", "C0000001", 7).to_hex());
    assert_eq!(r["username"], "alice");
    assert_eq!(r["nasip"], NAS_IP);
    assert_eq!(r["nasportid"], NAS_PORT_ID);
    assert_eq!(r["nasporttype"], "Ethernet");
    assert_eq!(r["framedipaddress"], "10.0.0.7");
    assert_eq!(r["start_s"], i64::from(t0));
    assert_eq!(r["update_s"], i64::from(t0 + 90));
    assert_eq!(r["stop_s"], i64::from(t0 + 90));
    assert_eq!(r["acctsessiontime"], 90);
    assert_eq!(r["acctinputoctets"], (1i64 << 32) + 700);
    assert_eq!(r["acctoutputoctets"], 800);
    assert_eq!(r["acctterminatecause"], "Lost-Carrier");
    // FreeRADIUS names its columns, so radacctd's additions stay empty.
    assert_eq!(r["sessionkey"], Value::Null);
    assert_eq!(r["stopsource"], Value::Null);

    // A session FreeRADIUS opened and never closed: radacctd takes it over.
    let t1 = now() - 150;
    fr.send(&fr_packet(
        "Start",
        "carol",
        "C0000002",
        8,
        t1,
        "Framed-IP-Address = 10.0.0.8\n",
    ))
    .await;
    let open_id = row_of(&radacct_rows(&db).await, "C0000002")["radacctid"]
        .as_i64()
        .unwrap();

    let server = Server::start(config(&db, "")).await.unwrap();
    assert_eq!(server.index.len(), 1, "FreeRADIUS's open session indexed");
    let indexed = server
        .index
        .get(&key("carol", "C0000002", 8))
        .expect("indexed under FreeRADIUS's acctuniqueid");
    assert_eq!(indexed.radacctid, open_id);

    let client = RadClient::new(server.radius_addr, SECRET).await;
    let s = |a: Acct| a.port(8).framed_ip([10, 0, 0, 8]);
    client
        .send(
            &s(Acct::interim("carol", "C0000002"))
                .at(t1 + 60)
                .time(60)
                .octets(3000, 4000),
        )
        .await;
    let rows = radacct_rows(&db).await;
    assert_eq!(rows.len(), 2, "interim inserted a row: {rows:#?}");
    let r = row_of(&rows, "C0000002");
    assert_eq!(r["radacctid"], open_id);
    assert_eq!(r["update_s"], i64::from(t1 + 60));
    assert_eq!(r["stop_s"], Value::Null);
    assert_eq!(r["acctinputoctets"], 3000);

    client
        .send(
            &s(Acct::stop("carol", "C0000002"))
                .at(t1 + 100)
                .time(100)
                .octets(5000, 6000)
                .cause(1),
        )
        .await;
    let rows = radacct_rows(&db).await;
    assert_eq!(rows.len(), 2, "stop inserted a row: {rows:#?}");
    let r = row_of(&rows, "C0000002");
    assert_eq!(r["radacctid"], open_id);
    assert_eq!(r["acctuniqueid"], key("carol", "C0000002", 8).to_hex());
    assert_eq!(r["start_s"], i64::from(t1), "start time FreeRADIUS wrote");
    assert_eq!(r["stop_s"], i64::from(t1 + 100));
    assert_eq!(r["acctsessiontime"], 100);
    assert_eq!(r["acctinputoctets"], 5000);
    assert_eq!(r["acctoutputoctets"], 6000);
    assert_eq!(r["acctterminatecause"], "User-Request");
    assert!(server.index.is_empty(), "closed session left the index");
    server.stop().await;

    // FreeRADIUS's finished session is untouched by all of this.
    assert_eq!(
        row_of(&radacct_rows(&db).await, "C0000001")["stop_s"],
        i64::from(t0 + 90)
    );
    fr.stop();
}
