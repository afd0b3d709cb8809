//! Test harness: a real server in-process on port 0, a fresh database per test on
//! SQLite or PostgreSQL, our own RADIUS client, radclient, and raw SQL helpers.
//!
//! PostgreSQL comes from `RADACCTD_TEST_PG_URL` (set by `scripts/test.sh`, which starts a
//! throwaway cluster). Without it, PostgreSQL tests fail — they are never skipped silently —
//! unless `RADACCTD_TEST_SKIP_PG=1` is set, in which case they print that they were skipped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use radacctd::app::Server;
use radacctd::config::{Config, FileConfig, Overrides};
use radacctd::radius::attr;
use radacctd::radius::packet::{Frame, build_accounting_request};
use radacctd::sessions::Store;
use sqlx::Connection;
use tokio::net::UdpSocket;

pub const SECRET: &str = "s3cret-nas";
pub const JWT_SECRET: &str = "test-jwt-secret";
pub const NAS_IP: &str = "127.0.0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generate `sqlite` and `postgres` test functions for an `async fn name(b: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::harness::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::harness::skip_postgres() {
                        return;
                    }
                    super::$name(Backend::Postgres).await
                }
            }
        )*
    };
}

pub fn skip_postgres() -> bool {
    if std::env::var("RADACCTD_TEST_PG_URL").is_ok() {
        return false;
    }
    if std::env::var("RADACCTD_TEST_SKIP_PG").as_deref() == Ok("1")
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("SKIPPED: PostgreSQL test (RADACCTD_TEST_SKIP_PG=1)");
        return true;
    }
    panic!(
        "RADACCTD_TEST_PG_URL is not set: run the suite with scripts/test.sh, which starts a \
         throwaway PostgreSQL (or set RADACCTD_TEST_SKIP_PG=1 outside CI to skip these)"
    );
}

/// A fresh, empty database.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("radacct.db").display());
                TestDb {
                    backend,
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("RADACCTD_TEST_PG_URL").expect("RADACCTD_TEST_PG_URL");
                let name = format!("t_{}", unique_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDb {
                    backend,
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// The configuration tests run with: both listeners on port 0, one NAS on 127.0.0.1.
/// `extra_toml` is appended; if it has its own `[writer]` section, it replaces the default
/// one (TOML cannot reopen a table).
pub fn config(db: &TestDb, extra_toml: &str) -> Config {
    let writer = if extra_toml.contains("[writer]") {
        ""
    } else {
        "[writer]\nshutdown_grace_secs = 5\nretry_max_backoff_ms = 200\n"
    };
    let toml = format!(
        "[database]\nurl = \"{url}\"\nmax_connections = 4\n\
         [radius]\nlisten = \"127.0.0.1:0\"\ndefault_client = false\nnas_reload_secs = 1\n\
         [http]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_exports = 3\n\
         [auth]\njwt_secret = \"{JWT_SECRET}\"\n\
         {writer}{extra_toml}\n\
         [[nas]]\nname = \"bng1\"\nip = \"{NAS_IP}\"\nsecret = \"{SECRET}\"\n",
        url = db.url
    );
    let file = FileConfig::parse(Path::new("test.toml"), &toml).unwrap();
    Config::build(file, Overrides::default()).unwrap()
}

pub struct Harness {
    pub server: Server,
    pub db: TestDb,
    pub client: RadClient,
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Self::start_with(backend, "").await
    }

    pub async fn start_with(backend: Backend, extra_toml: &str) -> Harness {
        let db = TestDb::new(backend).await;
        let server = Server::start(config(&db, extra_toml)).await.unwrap();
        let client = RadClient::new(server.radius_addr, SECRET).await;
        Harness { server, db, client }
    }

    /// Stop the server and start a new one on the same database (a restart).
    pub async fn restart(self) -> Harness {
        let Harness { server, db, .. } = self;
        server.stop().await;
        let server = Server::start(config(&db, "")).await.unwrap();
        let client = RadClient::new(server.radius_addr, SECRET).await;
        Harness { server, db, client }
    }

    pub fn store(&self) -> &Store {
        &self.server.store
    }

    /// One number from SQL that is the same on both backends.
    pub async fn scalar(&self, sql: &str) -> i64 {
        scalar(self.store(), sql).await
    }

    pub async fn rows(&self) -> Vec<Row> {
        rows(self.store()).await
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.server.http_addr, path).await
    }

    /// A stale-session sweeper on this server's store, index and closer, with the default
    /// interval (5 min) and threshold (30 min); tests call `run_once` with their own clock.
    pub fn sweeper(&self) -> radacctd::jobs::sweeper::Sweeper {
        radacctd::jobs::sweeper::Sweeper {
            store: self.store().clone(),
            index: std::sync::Arc::clone(&self.server.index),
            closer: std::sync::Arc::clone(&self.server.api.closer),
            interval: Duration::from_secs(300),
            stale_after: Duration::from_secs(1800),
        }
    }
}

pub async fn scalar(store: &Store, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match store {
        Store::Sqlite(s) => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(s.pool())
            .await
            .unwrap(),
        Store::Postgres(s) => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(s.pool())
            .await
            .unwrap(),
    }
}

/// A `radacct` row reduced to what tests compare, read with SQL that means the same on both
/// backends (times as epoch seconds, absent text as NULL or '' → None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub radacctid: i64,
    pub acctuniqueid: String,
    pub username: String,
    pub acctsessionid: String,
    pub nasipaddress: String,
    pub start: Option<i64>,
    pub update: Option<i64>,
    pub stop: Option<i64>,
    pub session_time: Option<i64>,
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cause: Option<String>,
    pub nasporttype: Option<String>,
    pub framedipaddress: Option<String>,
    pub callingstationid: Option<String>,
    pub servicetype: Option<String>,
}

pub async fn rows(store: &Store) -> Vec<Row> {
    use sqlx::Row as _;
    macro_rules! map_rows {
        ($rows:expr) => {
            $rows
                .iter()
                .map(|r| Row {
                    radacctid: r.get("radacctid"),
                    acctuniqueid: r.get("acctuniqueid"),
                    username: r.get::<Option<String>, _>("username").unwrap_or_default(),
                    acctsessionid: r.get("acctsessionid"),
                    nasipaddress: r.get("nasip"),
                    start: r.get("s"),
                    update: r.get("u"),
                    stop: r.get("e"),
                    session_time: r.get("acctsessiontime"),
                    input: r.get("acctinputoctets"),
                    output: r.get("acctoutputoctets"),
                    cause: opt(r.get("acctterminatecause")),
                    nasporttype: opt(r.get("nasporttype")),
                    framedipaddress: opt(r.get("fip")),
                    callingstationid: opt(r.get("callingstationid")),
                    servicetype: opt(r.get("servicetype")),
                })
                .collect()
        };
    }
    let common = "radacctid, acctuniqueid, username, acctsessionid, acctsessiontime, \
        acctinputoctets, acctoutputoctets, acctterminatecause, nasporttype, callingstationid, servicetype";
    match store {
        Store::Sqlite(s) => {
            let sql = format!(
                "SELECT {common}, nasipaddress AS nasip, framedipaddress AS fip, \
                 CAST(strftime('%s', acctstarttime) AS INTEGER) AS s, \
                 CAST(strftime('%s', acctupdatetime) AS INTEGER) AS u, \
                 CAST(strftime('%s', acctstoptime) AS INTEGER) AS e FROM radacct ORDER BY radacctid"
            );
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(s.pool())
                .await
                .unwrap();
            map_rows!(r)
        }
        Store::Postgres(s) => {
            let sql = format!(
                "SELECT {common}, host(nasipaddress) AS nasip, host(framedipaddress) AS fip, \
                 EXTRACT(EPOCH FROM acctstarttime)::bigint AS s, \
                 EXTRACT(EPOCH FROM acctupdatetime)::bigint AS u, \
                 EXTRACT(EPOCH FROM acctstoptime)::bigint AS e FROM radacct ORDER BY radacctid"
            );
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(s.pool())
                .await
                .unwrap();
            map_rows!(r)
        }
    }
}

fn opt(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Hold the store's write lock from another connection until the returned guard's
/// `release` is called: writes by the server block meanwhile.
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn take(db: &TestDb) -> WriteLock {
        match db.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::raw_sql("BEGIN EXCLUSIVE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteLock::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE radacct IN EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteLock::Postgres(c)
            }
        }
    }

    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
            }
            WriteLock::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}

pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// An Accounting-Request under construction, with MikroTik PPPoE attribute shapes
/// (shared/fixtures/mikrotik/mikrotik_pppoe_radacct_rows.txt).
#[derive(Debug, Clone)]
pub struct Acct {
    pub attrs: Vec<(u8, Vec<u8>)>,
}

impl Acct {
    pub fn new(status: u32, user: &str, session_id: &str) -> Acct {
        Acct {
            attrs: vec![
                (attr::ACCT_STATUS_TYPE, status.to_be_bytes().to_vec()),
                (attr::USER_NAME, user.as_bytes().to_vec()),
                (attr::ACCT_SESSION_ID, session_id.as_bytes().to_vec()),
                (attr::NAS_IP_ADDRESS, vec![127, 0, 0, 1]),
                (attr::NAS_IDENTIFIER, b"MikroTik".to_vec()),
                (attr::NAS_PORT_ID, b"bridge1".to_vec()),
                (attr::NAS_PORT_TYPE, 15u32.to_be_bytes().to_vec()),
                (attr::SERVICE_TYPE, 2u32.to_be_bytes().to_vec()),
                (attr::FRAMED_PROTOCOL, 1u32.to_be_bytes().to_vec()),
                (attr::CALLING_STATION_ID, b"F8:B4:6A:C1:71:78".to_vec()),
                (attr::CALLED_STATION_ID, b"service1".to_vec()),
                (attr::ACCT_DELAY_TIME, 0u32.to_be_bytes().to_vec()),
            ],
        }
    }

    pub fn start(user: &str, sid: &str) -> Acct {
        Acct::new(1, user, sid)
    }
    pub fn interim(user: &str, sid: &str) -> Acct {
        Acct::new(3, user, sid)
    }
    pub fn stop(user: &str, sid: &str) -> Acct {
        Acct::new(2, user, sid)
    }

    pub fn with(mut self, typ: u8, value: Vec<u8>) -> Acct {
        self.attrs.push((typ, value));
        self
    }
    pub fn u32(self, typ: u8, v: u32) -> Acct {
        self.with(typ, v.to_be_bytes().to_vec())
    }
    pub fn without(mut self, typ: u8) -> Acct {
        self.attrs.retain(|(t, _)| *t != typ);
        self
    }
    pub fn at(self, ts: u32) -> Acct {
        self.u32(attr::EVENT_TIMESTAMP, ts)
    }
    pub fn time(self, secs: u32) -> Acct {
        self.u32(attr::ACCT_SESSION_TIME, secs)
    }
    pub fn port(self, p: u32) -> Acct {
        self.u32(attr::NAS_PORT, p)
    }
    pub fn framed_ip(self, ip: [u8; 4]) -> Acct {
        self.with(attr::FRAMED_IP_ADDRESS, ip.to_vec())
    }
    pub fn cause(self, c: u32) -> Acct {
        self.u32(attr::ACCT_TERMINATE_CAUSE, c)
    }
    /// Octets given as 64-bit totals, split into Octets + Gigawords as a NAS sends them.
    pub fn octets(self, input: u64, output: u64) -> Acct {
        self.u32(attr::ACCT_INPUT_OCTETS, input as u32)
            .u32(attr::ACCT_INPUT_GIGAWORDS, (input >> 32) as u32)
            .u32(attr::ACCT_OUTPUT_OCTETS, output as u32)
            .u32(attr::ACCT_OUTPUT_GIGAWORDS, (output >> 32) as u32)
    }

    pub fn encode(&self, id: u8, secret: &str) -> Vec<u8> {
        build_accounting_request(id, secret.as_bytes(), &self.attrs)
    }
}

/// Our own RADIUS client: one UDP socket, responses verified against the request.
pub struct RadClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub secret: String,
    next_id: std::sync::atomic::AtomicU8,
}

impl RadClient {
    pub async fn new(server: SocketAddr, secret: &str) -> RadClient {
        Self::bound("127.0.0.1:0", server, secret).await
    }

    pub async fn bound(local: &str, server: SocketAddr, secret: &str) -> RadClient {
        RadClient {
            socket: UdpSocket::bind(local).await.unwrap(),
            server,
            secret: secret.to_owned(),
            next_id: std::sync::atomic::AtomicU8::new(1),
        }
    }

    pub fn next_id(&self) -> u8 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Send and wait for a verified response (retransmitting like a NAS); panics if none.
    pub async fn send(&self, a: &Acct) -> Vec<u8> {
        let pkt = a.encode(self.next_id(), &self.secret);
        self.exchange(&pkt, 5, Duration::from_secs(2))
            .await
            .expect("no Accounting-Response")
    }

    /// Send raw bytes up to `tries` times, `timeout` apart; the first verified response.
    pub async fn exchange(&self, pkt: &[u8], tries: u32, timeout: Duration) -> Option<Vec<u8>> {
        for _ in 0..tries {
            self.socket.send_to(pkt, self.server).await.unwrap();
            if let Some(r) = self.recv_for(pkt, timeout).await {
                return Some(r);
            }
        }
        None
    }

    /// Wait up to `timeout` for a response to `request` (others are discarded).
    pub async fn recv_for(&self, request: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
            let (n, _) = tokio::time::timeout(left, self.socket.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            let resp = buf[..n].to_vec();
            if resp.len() >= 20
                && resp[1] == request[1]
                && is_authentic_response(&resp, request, self.secret.as_bytes())
            {
                return Some(resp);
            }
        }
    }

    /// Expect no answer within `wait`.
    pub async fn silent(&self, pkt: &[u8], wait: Duration) -> bool {
        self.socket.send_to(pkt, self.server).await.unwrap();
        self.recv_for(pkt, wait).await.is_none()
    }
}

pub fn is_authentic_response(resp: &[u8], req: &[u8], secret: &[u8]) -> bool {
    Frame::parse(resp).is_ok()
        && resp[0] == 5
        && radius::core::packet::Packet::is_authentic_response(resp, req, secret)
}

/// Run radclient (freeradius-utils) with the given attribute lines; returns whether it got
/// a valid answer (exit status 0) and its output.
pub async fn radclient(
    server: SocketAddr,
    kind: &str,
    secret: &str,
    attrs: &str,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("radclient")
        .args([
            "-x",
            "-r",
            "2",
            "-t",
            "2",
            &server.to_string(),
            kind,
            secret,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("radclient not found: install freeradius-utils (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attrs.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Poll `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A signed token as the panel would send it.
pub fn token(
    role: &str,
    reseller_id: Option<i64>,
    username: Option<&str>,
    permissions: &[&str],
) -> String {
    use radacctd::api::auth::{Claims, Role, mint_hs256, now_secs};
    let role = match role {
        "admin" => Role::Admin,
        "reseller" => Role::Reseller,
        _ => Role::Subscriber,
    };
    let claims = Claims {
        sub: format!("test-{role:?}"),
        role,
        reseller_id,
        username: username.map(str::to_owned),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        exp: now_secs() + 3600,
        iat: None,
        aud: None,
        iss: None,
    };
    mint_hs256(JWT_SECRET, &claims).unwrap()
}

pub fn admin_token() -> String {
    token("admin", None, None, &[])
}

/// One request through the router in-process (no socket), as the API tests do.
pub async fn oneshot(
    h: &Harness,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Vec<u8>, axum::http::HeaderMap) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some((ctype, bytes)) => req
            .header("content-type", ctype)
            .body(axum::body::Body::from(bytes)),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap();
    // In-process requests have no peer address, so they would all share one rate-limit
    // bucket; the limit itself is tested over real HTTP.
    let mut state = h.server.api.clone();
    state.limiter = std::sync::Arc::new(radacctd::api::ratelimit::RateLimiter::new(0, vec![]));
    route(state, req).await
}

/// `req` through a router built on `state`: status, body and headers.
pub async fn route(
    state: radacctd::api::AppState,
    req: axum::http::Request<axum::body::Body>,
) -> (u16, Vec<u8>, axum::http::HeaderMap) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = radacctd::api::router(state).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes, headers)
}

/// `oneshot` for JSON answers.
pub async fn api_json(h: &Harness, uri: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let (status, body, _) = oneshot(h, "GET", uri, token, None).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

/// Seed the reseller tree 1 ← 2 ← 3 and 1 ← 4 (child ← parent reads "2's parent is 1"),
/// with subscribers `r1user` (reseller 1), `r2user` (2), `r3user` (3), `r4user` (4) and
/// `nobody` (no reseller).
pub async fn seed_reseller_tree(store: &Store) {
    store.upsert_reseller(1, None, "top").await.unwrap();
    store.upsert_reseller(2, Some(1), "mid").await.unwrap();
    store.upsert_reseller(3, Some(2), "leaf").await.unwrap();
    store.upsert_reseller(4, Some(1), "side").await.unwrap();
    for (u, r) in [
        ("r1user", Some(1)),
        ("r2user", Some(2)),
        ("r3user", Some(3)),
        ("r4user", Some(4)),
        ("nobody", None),
    ] {
        store.upsert_subscriber(u, r).await.unwrap();
    }
}
