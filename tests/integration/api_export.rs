//! `GET /api/sessions/export` (the contract's streamed CSV) on both backends: sessions
//! recorded through the real UDP listener, exported through the router in-process, and a
//! full-size (500,000-row) export downloaded over real HTTP while the process's memory is
//! watched.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use radacctd::api::AppState;
use radacctd::sessions::Store;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, admin_token, api_json, now, oneshot, rows, seed_reseller_tree,
    skip_postgres, token,
};

both_backends!(
    closed_sessions_export_as_csv_with_the_contract_header,
    columns_choose_and_order_the_fields,
    bad_parameters_and_callers_get_the_contract_errors,
    export_holds_only_the_callers_scope,
    active_export_comes_from_the_index_and_honours_from_to,
    more_rows_than_the_cap_is_413_and_exactly_the_cap_is_200,
    full_size_export_streams_in_flat_memory_and_survives_abandoned_downloads,
);

const DEFAULT_HEADER: &str = "radacctid,username,nasipaddress,framedipaddress,acctstarttime,\
    acctstoptime,acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause";

/// RFC 3339 UTC with `Z`, computed independently of the server's formatter.
fn rfc(t: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(t), 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// GET through the router in-process; the body as text.
async fn csv(h: &Harness, uri: &str, tok: &str) -> (u16, String, axum::http::HeaderMap) {
    let (status, body, headers) = oneshot(h, "GET", uri, Some(tok), None).await;
    (status, String::from_utf8(body).unwrap(), headers)
}

/// GET through a router built on `state` (for shrunken limits).
async fn csv_with(state: AppState, uri: &str, tok: &str) -> (u16, String, axum::http::HeaderMap) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::get(uri)
        .header("authorization", format!("Bearer {tok}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = radacctd::api::router(state).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), headers)
}

/// The data lines of a CSV body (header removed), asserting the header is `header`.
fn data_lines<'a>(body: &'a str, header: &str) -> Vec<&'a str> {
    assert!(
        body.ends_with('\n'),
        "body ends with a complete line: {body:?}"
    );
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some(header), "{body}");
    lines.collect()
}

/// The usernames of an export made with `columns=username`, sorted.
fn usernames(body: &str) -> Vec<String> {
    let mut names: Vec<String> = data_lines(body, "username")
        .into_iter()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// `attachment; filename="sessions-<status>-YYYYMMDDTHHMMSSZ.csv"`.
fn assert_attachment(disposition: &str, status: &str) {
    let prefix = format!("attachment; filename=\"sessions-{status}-");
    let stamp = disposition
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(".csv\""))
        .unwrap_or_else(|| panic!("unexpected Content-Disposition: {disposition}"));
    let parsed = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .unwrap_or_else(|_| panic!("bad timestamp in {disposition}"));
    let age = chrono::Utc::now().naive_utc() - parsed;
    assert!(
        age.num_seconds().abs() < 120,
        "timestamp is now: {disposition}"
    );
}

async fn id_of(store: &Store, username: &str) -> i64 {
    rows(store)
        .await
        .iter()
        .find(|r| r.username == username)
        .unwrap_or_else(|| panic!("no row for {username}"))
        .radacctid
}

/// A closed session recorded from a lone Stop (one packet, so tests stay quick).
async fn closed(h: &Harness, user: &str, sid: &str, stop_at: u32) {
    h.client
        .send(
            &Acct::stop(user, sid)
                .at(stop_at)
                .time(60)
                .octets(100, 200)
                .cause(1),
        )
        .await;
}

async fn closed_sessions_export_as_csv_with_the_contract_header(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 250;
    let big_in = (5u64 << 32) + 15;
    h.client
        .send(&Acct::start("bob", "b1").at(t0).framed_ip([10, 10, 10, 251]))
        .await;
    h.client
        .send(
            &Acct::stop("bob", "b1")
                .at(t0 + 130)
                .time(130)
                .octets(big_in, 3500)
                .framed_ip([10, 10, 10, 251])
                .cause(1),
        )
        .await;
    h.client.send(&Acct::start("ann", "a1").at(t0 + 10)).await;
    h.client
        .send(
            &Acct::stop("ann", "a1")
                .at(t0 + 60)
                .time(50)
                .octets(10, 20)
                .cause(2),
        )
        .await;
    // A username that needs RFC 4180 quoting (comma and double quote).
    h.client
        .send(&Acct::start("o\"neil,jr", "q1").at(t0 + 20))
        .await;
    h.client
        .send(
            &Acct::stop("o\"neil,jr", "q1")
                .at(t0 + 40)
                .time(20)
                .octets(1, 2)
                .cause(1),
        )
        .await;
    // Still open: not part of a closed export.
    h.client.send(&Acct::start("carl", "c1").at(t0 + 30)).await;

    let (bob, ann, quoted) = (
        id_of(h.store(), "bob").await,
        id_of(h.store(), "ann").await,
        id_of(h.store(), "o\"neil,jr").await,
    );
    let (status, body, headers) =
        csv(&h, "/api/sessions/export?status=closed", &admin_token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "text/csv");
    assert_attachment(header(&headers, "content-disposition"), "closed");
    // Newest start first, like GET /api/sessions.
    assert_eq!(
        data_lines(&body, DEFAULT_HEADER),
        [
            format!(
                "{quoted},\"o\"\"neil,jr\",127.0.0.1,,{},{},20,1,2,User-Request",
                rfc(t0 + 20),
                rfc(t0 + 40)
            ),
            format!(
                "{ann},ann,127.0.0.1,,{},{},50,10,20,Lost-Carrier",
                rfc(t0 + 10),
                rfc(t0 + 60)
            ),
            format!(
                "{bob},bob,127.0.0.1,10.10.10.251,{},{},130,{big_in},3500,User-Request",
                rfc(t0),
                rfc(t0 + 130)
            ),
        ]
    );

    // `format=csv` is the default spelled out; `sort`/`order` apply as in the list.
    let (status, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&format=csv&sort=acctinputoctets&order=asc\
         &columns=username",
        &admin_token(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        data_lines(&body, "username"),
        ["\"o\"\"neil,jr\"", "ann", "bob"]
    );
    h.server.stop().await;
}

async fn columns_choose_and_order_the_fields(b: Backend) {
    let h = Harness::start(b).await;
    let t = now() - 100;
    h.client
        .send(
            &Acct::stop("dora", "d1")
                .at(t)
                .time(90)
                .octets(4321, 8765)
                .cause(1),
        )
        .await;
    let admin = admin_token();
    let (status, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&columns=username,acctinputoctets",
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "username,acctinputoctets\ndora,4321\n");

    // Order is the caller's; the extra fields of the session object are columns too.
    let nas_id = h
        .scalar("SELECT nas_id FROM radacct WHERE username = 'dora'")
        .await;
    let (status, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&columns=acctoutputoctets,acctsessionid,nas_id,\
         nasportid,nasporttype,callingstationid,calledstationid,acctupdatetime,\
         framedipv6prefix,delegatedipv6prefix",
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        data_lines(
            &body,
            "acctoutputoctets,acctsessionid,nas_id,nasportid,nasporttype,callingstationid,\
             calledstationid,acctupdatetime,framedipv6prefix,delegatedipv6prefix"
        ),
        [format!(
            "8765,d1,{nas_id},bridge1,Ethernet,F8:B4:6A:C1:71:78,service1,{},,",
            rfc(t)
        )]
    );
    let unique = h
        .rows()
        .await
        .into_iter()
        .next()
        .map(|r| r.acctuniqueid)
        .unwrap();
    let (_, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&columns=acctuniqueid",
        &admin,
    )
    .await;
    assert_eq!(body, format!("acctuniqueid\n{unique}\n"));

    // Empty means the default set.
    let (status, body, _) = csv(&h, "/api/sessions/export?status=closed&columns=", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(data_lines(&body, DEFAULT_HEADER).len(), 1);

    let (status, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&columns=username,password",
        &admin,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({ "success": false, "message": "invalid columns, unknown column: password" })
    );
    h.server.stop().await;
}

async fn bad_parameters_and_callers_get_the_contract_errors(b: Backend) {
    let h = Harness::start(b).await;
    closed(&h, "eve", "e1", now() - 10).await;
    let admin = admin_token();
    let error = |message: &str| json!({ "success": false, "message": message });

    let cases = [
        ("format=xlsx", "invalid format, must be csv"),
        ("status=bogus", "invalid status, must be active/closed/all"),
        (
            "status=closed&nas_id=abc",
            "invalid nas_id, must be an integer",
        ),
        (
            "status=closed&from=2026-05-02&to=2026-05-01",
            "invalid range, from must not be after to",
        ),
        (
            "status=closed&sort=username",
            "invalid sort, must be one of acctstarttime, acctinputoctets, acctoutputoctets, \
             acctsessiontime",
        ),
        (
            "status=closed&columns=username,radacctid,username",
            "invalid columns, duplicate column: username",
        ),
        (
            "columns=%20acctstarttime%20,,acctstarttime",
            "invalid columns, duplicate column: acctstarttime",
        ),
        (
            "status=closed&columns=username,nope",
            "invalid columns, unknown column: nope",
        ),
    ];
    for (query, message) in cases {
        let (status, body, headers) =
            csv(&h, &format!("/api/sessions/export?{query}"), &admin).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            error(message),
            "{query}"
        );
    }

    // Paging is ignored, so even values the list would accept do not truncate an export.
    let (status, body, _) = csv(
        &h,
        "/api/sessions/export?status=closed&page=2&limit=1&columns=username",
        &admin,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "username\neve\n"));
    // ...and not even validated: values the list would refuse are ignored too.
    for paging in [
        "limit=1000",
        "limit=0",
        "limit=-5",
        "page=0",
        "page=abc",
        "page=0&limit=99999999999999999999",
    ] {
        for status in ["closed", "active"] {
            let (code, body, _) = csv(
                &h,
                &format!("/api/sessions/export?status={status}&columns=username&{paging}"),
                &admin,
            )
            .await;
            let want = if status == "closed" {
                "username\neve\n"
            } else {
                "username\n"
            };
            assert_eq!((code, body.as_str()), (200, want), "{status} {paging}");
        }
    }

    // An export of the archive says so in its filename (API.md).
    for (query, name) in [
        ("source=archive", "archive-closed"),
        ("source=archive&status=all", "archive-all"),
    ] {
        let (code, body, headers) = csv(
            &h,
            &format!("/api/sessions/export?{query}&columns=username"),
            &admin,
        )
        .await;
        assert_eq!((code, body.as_str()), (200, "username\n"), "{query}");
        assert_attachment(header(&headers, "content-disposition"), name);
    }

    let (status, body) = api_json(&h, "/api/sessions/export?status=closed", None).await;
    assert_eq!((status, body), (401, error("missing token")));

    let no_view = token("reseller", Some(1), None, &["subscribers.disconnect"]);
    let (status, body, _) = csv(&h, "/api/sessions/export?status=closed", &no_view).await;
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        error("sessions.view denied")
    );
    h.server.stop().await;
}

async fn export_holds_only_the_callers_scope(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let t = now() - 200;
    let users = ["r1user", "r2user", "r3user", "r4user", "nobody"];
    for (i, u) in users.iter().enumerate() {
        closed(&h, u, &format!("c{i}"), t + i as u32).await;
        h.client
            .send(&Acct::start(u, &format!("o{i}")).at(t + 100 + i as u32))
            .await;
    }
    let reseller2 = token("reseller", Some(2), None, &["sessions.view"]);
    let subscriber = token("subscriber", None, Some("r4user"), &["sessions.view"]);
    let view_all = token(
        "reseller",
        Some(3),
        None,
        &["sessions.view", "sessions.view_all"],
    );
    let mut everyone: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    everyone.sort();

    // The database path (closed, all) and the index path (active) apply the same scope.
    for status in ["closed", "active"] {
        let uri = format!("/api/sessions/export?status={status}&columns=username");
        let (code, body, _) = csv(&h, &uri, &reseller2).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(usernames(&body), ["r2user", "r3user"], "{status}");
        let (_, body, _) = csv(&h, &uri, &subscriber).await;
        assert_eq!(usernames(&body), ["r4user"], "{status}");
        let (_, body, _) = csv(&h, &uri, &admin_token()).await;
        assert_eq!(usernames(&body), everyone, "{status}");
        let (_, body, _) = csv(&h, &uri, &view_all).await;
        assert_eq!(usernames(&body), everyone, "{status}");
    }
    let (_, body, _) = csv(
        &h,
        "/api/sessions/export?status=all&columns=username",
        &reseller2,
    )
    .await;
    assert_eq!(usernames(&body), ["r2user", "r2user", "r3user", "r3user"]);
    h.server.stop().await;
}

async fn active_export_comes_from_the_index_and_honours_from_to(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 250;
    for (i, u) in ["ada", "ben", "cy"].iter().enumerate() {
        let at = t0 + 100 * i as u32;
        h.client
            .send(
                &Acct::start(u, &format!("s{i}"))
                    .at(at)
                    .framed_ip([10, 0, 0, i as u8 + 1]),
            )
            .await;
    }
    closed(&h, "dee", "s9", t0 + 120).await;
    let admin = admin_token();
    let ids = [
        id_of(h.store(), "ada").await,
        id_of(h.store(), "ben").await,
        id_of(h.store(), "cy").await,
    ];

    // No status: active, the contract's default.
    let (status, body, headers) = csv(&h, "/api/sessions/export", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_attachment(header(&headers, "content-disposition"), "active");
    let row = |i: usize, u: &str| {
        format!(
            "{},{u},127.0.0.1,10.0.0.{},{},,0,0,0,",
            ids[i],
            i + 1,
            rfc(t0 + 100 * i as u32)
        )
    };
    assert_eq!(
        data_lines(&body, DEFAULT_HEADER),
        [row(2, "cy"), row(1, "ben"), row(0, "ada")]
    );

    let (status, body, _) = csv(
        &h,
        &format!(
            "/api/sessions/export?status=active&from={}&to={}",
            rfc(t0 + 50),
            rfc(t0 + 150)
        ),
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(data_lines(&body, DEFAULT_HEADER), [row(1, "ben")]);
    // The rows come from the index, not the database: with the index emptied behind the
    // server's back, the open rows still in `radacct` are not exported as active.
    h.server.index.clear();
    let (_, body, _) = csv(&h, "/api/sessions/export?status=active", &admin).await;
    assert_eq!(data_lines(&body, DEFAULT_HEADER), Vec::<&str>::new());

    // `all` comes from the database: open and closed rows, filtered the same way.
    let (_, body, headers) = csv(
        &h,
        "/api/sessions/export?status=all&columns=username&order=asc",
        &admin,
    )
    .await;
    assert_attachment(header(&headers, "content-disposition"), "all");
    assert_eq!(data_lines(&body, "username"), ["ada", "dee", "ben", "cy"]);
    let (_, body, _) = csv(
        &h,
        &format!(
            "/api/sessions/export?status=all&columns=username&from={}&to={}",
            rfc(t0 + 1),
            rfc(t0 + 100)
        ),
        &admin,
    )
    .await;
    assert_eq!(data_lines(&body, "username"), ["ben", "dee"]);
    h.server.stop().await;
}

async fn more_rows_than_the_cap_is_413_and_exactly_the_cap_is_200(b: Backend) {
    let h = Harness::start(b).await;
    let t = now() - 200;
    for i in 0..6u32 {
        closed(&h, &format!("cap{i}"), &format!("k{i}"), t + 10 * i).await;
        h.client
            .send(&Acct::start(&format!("open{i}"), &format!("o{i}")).at(t + 10 * i))
            .await;
    }
    let mut state = h.server.api.clone();
    state.limits.export_max_rows = 5;
    let admin = admin_token();
    let too_many = json!({ "success": false, "message": "too many rows, narrow date range" });

    for status in ["closed", "active"] {
        let (code, body, headers) = csv_with(
            state.clone(),
            &format!("/api/sessions/export?status={status}"),
            &admin,
        )
        .await;
        assert_eq!(code, 413, "{status}: {body}");
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert!(headers.get("content-disposition").is_none());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            too_many
        );

        // Narrowing the range to exactly the cap is allowed. Start times are stop − 60
        // for the closed rows, t + 10·i for the open ones.
        let from = if status == "closed" {
            t + 10 - 60
        } else {
            t + 10
        };
        let (code, body, _) = csv_with(
            state.clone(),
            &format!(
                "/api/sessions/export?status={status}&from={}&columns=username",
                rfc(from)
            ),
            &admin,
        )
        .await;
        assert_eq!(code, 200, "{status}: {body}");
        assert_eq!(data_lines(&body, "username").len(), 5, "{status}");
    }
    // 12 rows in the database, 5 allowed.
    let (code, _, _) = csv_with(state, "/api/sessions/export?status=all", &admin).await;
    assert_eq!(code, 413);
    h.server.stop().await;
}

/// The full-size tests download ~75 MB while reading this process's RSS: one at a time,
/// so the SQLite and PostgreSQL variants do not measure each other.
static BIG_EXPORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BIG_ROWS: i64 = 500_000;

/// This process's resident set size in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Insert `n` closed sessions starting at radacctid `first`, in one statement. Session `i`
/// starts at `base + i`, lasts an hour, and belongs to one of 25,000 subscribers.
async fn bulk_insert(store: &Store, first: i64, n: i64, base: i64) {
    const COLUMNS: &str = "radacctid, acctsessionid, acctuniqueid, username, nasipaddress, \
        nasportid, nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, \
        acctinputoctets, acctoutputoctets, callingstationid, acctterminatecause, \
        framedipaddress, nas_id";
    let last = first + n - 1;
    match store {
        Store::Sqlite(s) => {
            let sql = format!(
                "WITH RECURSIVE n(i) AS \
                   (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO radacct ({COLUMNS}) \
                 SELECT i, printf('%08x', i), printf('%032x', i), \
                   printf('subscriber-%05d@example.lb', i % 25000), '10.1.0.1', 'ether2', \
                   'Ethernet', datetime({base} + i, 'unixepoch'), \
                   datetime({base} + i + 3600, 'unixepoch'), \
                   datetime({base} + i + 3600, 'unixepoch'), \
                   3600, 1000000000 + i, 9000000000 + i, 'AA:BB:CC:DD:EE:01', 'User-Request', \
                   printf('100.64.%d.%d', (i / 256) % 256, i % 256), 1 FROM n"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(s.pool())
                .await
                .unwrap();
        }
        Store::Postgres(s) => {
            let sql = format!(
                "INSERT INTO radacct ({COLUMNS}) \
                 SELECT i, lpad(to_hex(i), 8, '0'), lpad(to_hex(i), 32, '0'), \
                   'subscriber-' || lpad((i % 25000)::text, 5, '0') || '@example.lb', \
                   '10.1.0.1'::inet, 'ether2', 'Ethernet', to_timestamp({base} + i), \
                   to_timestamp({base} + i + 3600), to_timestamp({base} + i + 3600), 3600, \
                   1000000000 + i, 9000000000 + i, 'AA:BB:CC:DD:EE:01', 'User-Request', \
                   ('100.64.' || ((i / 256) % 256) || '.' || (i % 256))::inet, 1 \
                 FROM generate_series({first}::bigint, {last}::bigint) AS i; \
                 SELECT setval('radacct_radacctid_seq', {last})"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(s.pool())
                .await
                .unwrap();
        }
    }
}

async fn full_size_export_streams_in_flat_memory_and_survives_abandoned_downloads(b: Backend) {
    let _one_at_a_time = BIG_EXPORT.lock().await;
    let h = Harness::start(b).await;
    let base = i64::from(now()) - 30 * 86_400;
    let started = Instant::now();
    bulk_insert(h.store(), 1, BIG_ROWS, base).await;
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct").await, BIG_ROWS);
    eprintln!("{b:?}: inserted {BIG_ROWS} rows in {:?}", started.elapsed());

    let url = format!(
        "http://{}/api/sessions/export?status=closed",
        h.server.http_addr
    );
    let client = reqwest::Client::new();
    let admin = admin_token();

    // (a) Exactly the cap: 200, every row, streamed.
    let started = Instant::now();
    let baseline = rss_bytes();
    let mut peak = baseline;
    let resp = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"].to_str().unwrap(), "text/csv");
    assert_attachment(
        resp.headers()["content-disposition"].to_str().unwrap(),
        "closed",
    );
    let mut body = resp.bytes_stream();
    let (mut bytes, mut lines, mut chunks) = (0u64, 0u64, 0u64);
    let mut head = Vec::new();
    let mut last_byte = 0u8;
    let mut next_sample = 0u64;
    let download = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("the transfer completes");
            if head.len() < 4096 {
                head.extend_from_slice(&chunk[..chunk.len().min(4096)]);
            }
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|&&c| c == b'\n').count() as u64;
            chunks += 1;
            last_byte = *chunk.last().unwrap_or(&last_byte);
            if bytes >= next_sample {
                peak = peak.max(rss_bytes());
                next_sample = bytes + 256 * 1024;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), download)
        .await
        .expect("the export finishes within 2 minutes");
    let elapsed = started.elapsed();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{b:?}: exported {lines} lines, {bytes} bytes in {chunks} chunks in {elapsed:?}; \
         RSS baseline {} KiB, peak {} KiB, growth {} KiB",
        baseline / 1024,
        peak / 1024,
        growth / 1024
    );
    assert_eq!(lines, BIG_ROWS as u64 + 1, "header + every row");
    assert_eq!(last_byte, b'\n');
    let head = String::from_utf8_lossy(&head);
    let mut first = head.lines();
    assert_eq!(first.next(), Some(DEFAULT_HEADER));
    // Newest start first: the last row inserted.
    let i = BIG_ROWS;
    assert_eq!(
        first.next().unwrap(),
        format!(
            "{i},subscriber-{:05}@example.lb,10.1.0.1,100.64.{}.{},{},{},3600,{},{},User-Request",
            i % 25000,
            (i / 256) % 256,
            i % 256,
            rfc((base + i) as u32),
            rfc((base + i + 3600) as u32),
            1_000_000_000 + i,
            9_000_000_000 + i
        )
    );
    assert!(bytes > 60_000_000, "the body is large: {bytes} bytes");
    // Streaming means the body never sits in memory: what the process gains while
    // serving (and reading) it is buffers, less than the body itself. (Buffering would
    // cost the body plus the decoded rows, several times more.) The bound leaves room for
    // the other tests of this binary, which run in the same process at the same time and
    // are counted in the same RSS (seen: 2–37 MB of growth under a loaded CI).
    assert!(
        growth < 64 << 20 && growth < bytes,
        "RSS grew by {growth} bytes for a {bytes}-byte body"
    );

    // (b) One row over the cap: 413 with the contract's body instead of a download.
    bulk_insert(h.store(), BIG_ROWS + 1, 1, base).await;
    let resp = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.headers().get("content-disposition").is_none());
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({ "success": false, "message": "too many rows, narrow date range" })
    );

    // (c) Clients that hang up after the first chunk. Each abandoned export must release
    // its database connection: more of them than the pool has connections (4), then the
    // server still answers queries that need the database, and shuts down promptly.
    let narrowed = format!(
        "/api/sessions/export?status=closed&from={}",
        rfc((base + 400_000) as u32)
    );
    for n in 0..6 {
        let started = Instant::now();
        let mut conn = tokio::net::TcpStream::connect(h.server.http_addr)
            .await
            .unwrap();
        let req = format!(
            "GET {narrowed} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {admin}\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < 64 * 1024 {
            let k = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("abandoned export {n}: first chunk within 10 s"))
                .unwrap();
            assert!(k > 0, "abandoned export {n}: connection closed early");
            got.extend_from_slice(&buf[..k]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "abandoned export {n}");
        drop(conn);
        eprintln!("{b:?}: abandoned export {n} after {:?}", started.elapsed());
    }
    let started = Instant::now();
    let list = format!(
        "http://{}/api/sessions?status=closed&limit=1",
        h.server.http_addr
    );
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(&list).bearer_auth(&admin).send(),
    )
    .await
    .expect("the server still answers")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(page["pagination"]["total"], BIG_ROWS + 1);
    let small = format!(
        "http://{}/api/sessions/export?status=closed&columns=radacctid&from={}",
        h.server.http_addr,
        rfc((base + BIG_ROWS - 8) as u32)
    );
    let resp = client.get(&small).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().lines().count(), 1 + 10);
    eprintln!(
        "{b:?}: answered after the abandoned exports in {:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(30), h.server.stop())
        .await
        .expect("no export connection keeps the server from stopping");
}

/// PostgreSQL only: the one backend whose connection can be killed from outside while a
/// query streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failure_mid_export_cuts_the_download_short() {
    if skip_postgres() {
        return;
    }
    let h = Harness::start(Backend::Postgres).await;
    let rows = 100_000;
    let base = i64::from(now()) - 86_400;
    bulk_insert(h.store(), 1, rows, base).await;
    let url = format!(
        "http://{}/api/sessions/export?status=closed",
        h.server.http_addr
    );
    let client = reqwest::Client::new();
    let admin = admin_token();
    let resp = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(DEFAULT_HEADER.as_bytes()));

    // The export's query is the one statement still running on this database.
    let killed = h
        .scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' AND state = 'active' \
             AND query LIKE '%ORDER BY%') AS t",
        )
        .await;
    assert_eq!(killed, 1, "the export's connection was terminated");
    let killed_at = Instant::now();

    let mut lines = first.iter().filter(|&&c| c == b'\n').count() as i64;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => lines += c.iter().filter(|&&c| c == b'\n').count() as i64,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
    .expect("the download ends instead of hanging");
    assert!(
        outcome.is_err(),
        "a failed export must not look complete ({lines} lines received)"
    );
    assert!(lines < rows + 1, "{lines} lines");
    eprintln!(
        "cut short after {lines} lines, {:?} after the kill",
        killed_at.elapsed()
    );

    // The server itself is fine: the next export is complete.
    let small = format!(
        "http://{}/api/sessions/export?status=closed&columns=radacctid&from={}",
        h.server.http_addr,
        rfc((base + rows - 4) as u32)
    );
    let resp = client.get(&small).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().lines().count(), 1 + 5);
    eprintln!(
        "next export answered {:?} after the kill",
        killed_at.elapsed()
    );
    h.server.stop().await;
    eprintln!("stopped {:?} after the kill", killed_at.elapsed());
}

/// Exports hold a database connection for their whole download, so only
/// `http.max_concurrent_exports` stream at once; the excess gets 429 with Retry-After, and
/// a finished or abandoned export frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_beyond_the_cap_get_429() {
    use tower::ServiceExt;
    let h = Harness::start(Backend::Sqlite).await;
    h.client.send(&Acct::start("cap", "1").at(now() - 5)).await;
    let mut state: AppState = h.server.api.clone();
    state.export_slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    state.limiter = std::sync::Arc::new(radacctd::api::ratelimit::RateLimiter::new(0, vec![]));
    let router = radacctd::api::router(state);
    let request = || {
        axum::http::Request::get("/api/sessions/export?status=all")
            .header("authorization", format!("Bearer {}", admin_token()))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    // The first export's body is not read yet: it still holds the slot.
    let first = router.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = router.clone().oneshot(request()).await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "10");
    let body = http_body_util::BodyExt::collect(second.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"success": false, "message": "too many concurrent exports, try again later"})
    );
    // Other endpoints are not affected meanwhile.
    let (code, _) = api_json(&h, "/api/sessions/count", Some(&admin_token())).await;
    assert_eq!(code, 200);
    drop(first);
    let third = router.clone().oneshot(request()).await.unwrap();
    assert_eq!(third.status(), 200, "an abandoned export frees its slot");
    h.server.stop().await;
}
