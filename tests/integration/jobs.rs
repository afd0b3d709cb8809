//! The stale-session sweeper and the archiver, with an injected clock (no sleeping for
//! minutes), on both backends.

use std::sync::Arc;
use std::time::Duration;

use radacctd::jobs::archiver::Archiver;
use radacctd::sessions::model::{Fields, Record, StatusType};
use radacctd::sessions::{Engine, Index, SessionKey};
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::harness::{Acct, Backend, Harness, admin_token, api_json, now};

both_backends!(
    sweeper_clears_ghosts_on_its_cadence_but_spares_sessions_an_outage_made_look_stale,
    archiver_never_deletes_a_row_it_could_not_copy,
    sweeper_closes_stale_sessions_as_idle_timeout_and_keeps_fresh_ones,
    sweeper_resyncs_the_online_flag,
    sweeper_closes_a_foreign_row_whose_acctuniqueid_is_not_hex,
    sweep_drops_index_entries_whose_row_was_closed_outside_radacctd,
    archiver_moves_old_closed_sessions_with_their_history,
    archiver_interrupted_mid_batch_loses_and_duplicates_nothing,
);

async fn sweeper_closes_stale_sessions_as_idle_timeout_and_keeps_fresh_ones(b: Backend) {
    let h = Harness::start(b).await;
    h.store().upsert_subscriber("stale", None).await.unwrap();
    let t0 = i64::from(now()) - 250;
    h.client
        .send(&Acct::start("stale", "1").at(t0 as u32))
        .await;
    h.client
        .send(
            &Acct::interim("stale", "1")
                .at(t0 as u32 + 40)
                .time(40)
                .octets(5, 6),
        )
        .await;
    h.client
        .send(&Acct::start("fresh", "2").at(t0 as u32))
        .await;
    h.client
        .send(
            &Acct::interim("fresh", "2")
                .at(t0 as u32 + 200)
                .time(200)
                .octets(1, 1),
        )
        .await;
    assert_eq!(h.server.index.len(), 2);
    assert_eq!(
        h.store().subscriber_online("stale").await.unwrap(),
        Some(true)
    );

    // "Now" is 30 minutes after the fresh session's last update, minus one second: only
    // the stale one (last update t0+40) is past the threshold.
    let report = h.sweeper().run_once(t0 + 200 + 1800 - 1).await.unwrap();
    assert_eq!(report.closed, 1);
    let rows = h.rows().await;
    let stale = rows.iter().find(|r| r.username == "stale").unwrap();
    assert_eq!(stale.cause.as_deref(), Some("NAS-Idle-Timeout"));
    assert_eq!(stale.stop, Some(t0 + 40), "stop time = last update");
    assert_eq!(stale.session_time, Some(40));
    assert_eq!((stale.input, stale.output), (Some(5), Some(6)));
    let fresh = rows.iter().find(|r| r.username == "fresh").unwrap();
    assert_eq!(fresh.stop, None);
    assert_eq!(
        h.server.index.len(),
        1,
        "index and database change together"
    );
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&admin_token())).await;
    assert_eq!(v["count"], 1);
    assert_eq!(
        h.store().subscriber_online("stale").await.unwrap(),
        Some(false)
    );

    // The NAS's own Stop, late, completes the row and keeps it closed.
    h.client
        .send(
            &Acct::stop("stale", "1")
                .at(t0 as u32 + 60)
                .time(60)
                .octets(9, 9)
                .cause(2),
        )
        .await;
    let stale = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.username == "stale")
        .unwrap();
    assert_eq!(stale.stop, Some(t0 + 60));
    assert_eq!((stale.input, stale.session_time), (Some(9), Some(60)));
    assert_eq!(stale.cause.as_deref(), Some("NAS-Idle-Timeout"));

    // A second sweep finds nothing more.
    assert_eq!(
        h.sweeper()
            .run_once(t0 + 200 + 1800 - 1)
            .await
            .unwrap()
            .closed,
        0
    );
    h.server.stop().await;
}

async fn sweeper_resyncs_the_online_flag(b: Backend) {
    let h = Harness::start(b).await;
    h.store().upsert_subscriber("ghost", None).await.unwrap();
    h.store().upsert_subscriber("live", None).await.unwrap();
    h.client.send(&Acct::start("live", "1").at(now() - 5)).await;
    // A panel (or a crash of an older tool) left wrong flags behind.
    match h.store() {
        radacctd::sessions::Store::Sqlite(s) => {
            sqlx::query(
                "UPDATE subscribers SET is_online = CASE username WHEN 'ghost' THEN 1 ELSE 0 END",
            )
            .execute(s.pool())
            .await
            .unwrap();
        }
        radacctd::sessions::Store::Postgres(s) => {
            sqlx::query("UPDATE subscribers SET is_online = (username = 'ghost')")
                .execute(s.pool())
                .await
                .unwrap();
        }
    }
    let report = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!(report.online_changed, 2);
    assert_eq!(
        h.store().subscriber_online("ghost").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        h.store().subscriber_online("live").await.unwrap(),
        Some(true)
    );
    h.server.stop().await;
}

/// A row another writer inserted after start (so not in the index), whose acctuniqueid is
/// not FreeRADIUS's 32 hex digits and which has no sessionkey: it cannot be found by key,
/// yet the sweeper must close it rather than select it again on every sweep.
async fn sweeper_closes_a_foreign_row_whose_acctuniqueid_is_not_hex(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = i64::from(now()) - 4000;
    match h.store() {
        radacctd::sessions::Store::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
                 acctstarttime, acctupdatetime) VALUES ('f1', 'foreign-f1', 'foreign', \
                 '10.1.1.1', datetime(?1, 'unixepoch'), datetime(?2, 'unixepoch'))",
            )
            .bind(t0)
            .bind(t0 + 100)
            .execute(s.pool())
            .await
            .unwrap();
        }
        radacctd::sessions::Store::Postgres(s) => {
            sqlx::query(
                "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
                 acctstarttime, acctupdatetime) VALUES ('f1', 'foreign-f1', 'foreign', \
                 '10.1.1.1', to_timestamp($1), to_timestamp($2))",
            )
            .bind(t0)
            .bind(t0 + 100)
            .execute(s.pool())
            .await
            .unwrap();
        }
    }
    assert_eq!(h.server.index.len(), 0, "written behind radacctd's back");
    let report = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!(report.closed, 1);
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].acctuniqueid, "foreign-f1", "the row keeps its id");
    assert_eq!(rows[0].cause.as_deref(), Some("NAS-Idle-Timeout"));
    assert_eq!(rows[0].stop, Some(t0 + 100), "stop time = last update");
    assert_eq!(rows[0].session_time, Some(100));
    let again = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!(again.closed, 0, "nothing left to sweep");
    h.server.stop().await;
}

/// An operator (or FreeRADIUS, or another node) closes a row in SQL: the next sweep drops
/// it from the index, so the count and the active list stop showing it; open rows stay.
async fn sweep_drops_index_entries_whose_row_was_closed_outside_radacctd(b: Backend) {
    let h = Harness::start(b).await;
    let t = now() - 30;
    h.client.send(&Acct::start("kept", "1").at(t)).await;
    h.client
        .send(&Acct::start("closed-by-sql", "2").at(t))
        .await;
    assert_eq!(h.server.index.len(), 2);
    let sql = "UPDATE radacct SET acctstoptime = acctstarttime, \
               acctterminatecause = 'Admin-Reset' WHERE username = 'closed-by-sql'";
    match h.store() {
        radacctd::sessions::Store::Sqlite(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
        radacctd::sessions::Store::Postgres(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
    }
    let report = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!((report.closed, report.evicted), (0, 1), "{report:?}");
    assert_eq!(h.server.index.len(), 1);
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&admin_token())).await;
    assert_eq!(v["count"], 1);
    let (_, v) = api_json(&h, "/api/sessions", Some(&admin_token())).await;
    assert_eq!(v["data"][0]["username"], "kept", "{v}");
    let rows = h.rows().await;
    let sql_closed = rows.iter().find(|r| r.username == "closed-by-sql").unwrap();
    assert_eq!(
        sql_closed.cause.as_deref(),
        Some("Admin-Reset"),
        "row untouched"
    );
    let again = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!(again.evicted, 0);
    h.server.stop().await;
}

fn archiver(h: &Harness, batch: i64) -> Archiver {
    Archiver {
        store: h.store().clone(),
        at: (3, 0),
        after: Duration::from_secs(90 * 86_400),
        batch_size: batch,
    }
}

async fn archiver_moves_old_closed_sessions_with_their_history(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    for i in 0..5 {
        let (u, sid) = (format!("a{i}"), format!("{i}"));
        h.client.send(&Acct::start(&u, &sid).at(t0)).await;
        h.client
            .send(
                &Acct::stop(&u, &sid)
                    .at(t0 + 10)
                    .time(10)
                    .octets(1, 2)
                    .cause(1),
            )
            .await;
    }
    h.client.send(&Acct::start("still-open", "9").at(t0)).await;
    let before = h.rows().await;
    let stop = CancellationToken::new();
    // Nothing is 90 days old yet.
    assert_eq!(
        archiver(&h, 2)
            .run_once(i64::from(now()), &stop)
            .await
            .unwrap(),
        0
    );
    // 91 days later: the five closed sessions move, in batches of 2.
    let later = i64::from(now()) + 91 * 86_400;
    assert_eq!(archiver(&h, 2).run_once(later, &stop).await.unwrap(), 5);
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].username, "still-open");
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_archive").await, 5);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        10
    );
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_events").await, 1);
    // Same ids and values in the archive.
    let archived_ids = h
        .scalar("SELECT CAST(COALESCE(SUM(radacctid), 0) AS BIGINT) FROM radacct_archive")
        .await;
    let expected: i64 = before
        .iter()
        .filter(|r| r.stop.is_some())
        .map(|r| r.radacctid)
        .sum();
    assert_eq!(archived_ids, expected);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_archive WHERE acctinputoctets = 1 AND acctterminatecause = 'User-Request'")
            .await,
        5
    );
    // The API does not union the archive.
    let (_, v) = api_json(&h, "/api/sessions?status=closed", Some(&admin_token())).await;
    assert_eq!(v["pagination"]["total"], 0);
    // …it is asked for explicitly.
    let (code, v) = api_json(
        &h,
        "/api/sessions?source=archive&search=a3",
        Some(&admin_token()),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["pagination"]["total"], 1);
    assert_eq!(v["data"][0]["username"], "a3");
    assert_eq!(v["data"][0]["acctterminatecause"], "User-Request");
    let (_, v) = api_json(
        &h,
        "/api/sessions?source=archive&status=all",
        Some(&admin_token()),
    )
    .await;
    assert_eq!(v["pagination"]["total"], 5);
    let (code, _) = api_json(
        &h,
        "/api/sessions?source=archive&status=active",
        Some(&admin_token()),
    )
    .await;
    assert_eq!(code, 400);
    h.server.stop().await;
}

/// A number read on a new connection of its own: a cut transaction may still be open on a
/// pooled connection until its rollback runs, and must not be counted.
async fn committed(h: &Harness, sql: &str) -> i64 {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match b_of(h) {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&h.db.url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

fn b_of(h: &Harness) -> Backend {
    match h.store() {
        radacctd::sessions::Store::Sqlite(_) => Backend::Sqlite,
        radacctd::sessions::Store::Postgres(_) => Backend::Postgres,
    }
}

async fn archiver_interrupted_mid_batch_loses_and_duplicates_nothing(b: Backend) {
    let h = Harness::start(b).await;
    // 400 closed sessions written through the engine in one batch (faster than UDP).
    let engine = Engine::new(h.store().clone(), Arc::new(Index::new()), 60);
    let t0 = 1_700_000_000;
    let records: Vec<Record> = (0..400)
        .map(|i| {
            let (u, sid) = (format!("x{i}"), i.to_string());
            Record {
                status: StatusType::Stop,
                nas_id: None,
                nas_ip: "10.0.0.1".parse().unwrap(),
                key: SessionKey::freeradius(
                    u.as_bytes(),
                    sid.as_bytes(),
                    "10.0.0.1",
                    b"",
                    b"",
                    None,
                ),
                event_time: t0,
                timestamped: false,
                session_time: Some(30),
                input_octets: Some(1),
                output_octets: Some(1),
                terminate_cause: Some("User-Request".into()),
                connectinfo: None,
                fields: Fields {
                    username: u.clone().into(),
                    acctsessionid: sid.into(),
                    nasipaddress: Some("10.0.0.1".parse().unwrap()),
                    ..Fields::default()
                },
                target: None,
            }
        })
        .collect();
    engine.process(&records).await.unwrap();
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct").await, 400);
    let a = archiver(&h, 37);
    let stop = CancellationToken::new();
    let cutoff_now = t0 + 100 * 86_400;
    // Cut runs off after ever longer moments, so interruptions land between and inside
    // statements of a batch.
    for micros in [50u64, 200, 500, 1000, 2000, 3000, 5000, 8000, 13000] {
        let _ = tokio::time::timeout(Duration::from_micros(micros), a.run_once(cutoff_now, &stop))
            .await;
        // One statement, one snapshot, on a fresh connection: a batch whose COMMIT was
        // already sent when the run was cut may land between two separate counts, and a
        // cut transaction may still be open on a pooled connection.
        let both = committed(
            &h,
            "SELECT (SELECT COUNT(*) FROM radacct) + (SELECT COUNT(*) FROM radacct_archive)",
        )
        .await;
        assert_eq!(both, 400, "after a cut at {micros}µs");
        let in_both = committed(
            &h,
            "SELECT COUNT(*) FROM radacct r JOIN radacct_archive a ON a.radacctid = r.radacctid",
        )
        .await;
        assert_eq!(in_both, 0, "a row in both tables");
        let history = committed(
            &h,
            "SELECT (SELECT COUNT(*) FROM radacct_events) + \
             (SELECT COUNT(*) FROM radacct_events_archive)",
        )
        .await;
        assert_eq!(history, 400, "history moved with its row");
    }
    // A cut transaction's rollback completes on its connection in the background; until it
    // has, SQLite reports the file busy and the run is retried, as the daily job would be.
    let mut finished = false;
    for _ in 0..20 {
        match a.run_once(cutoff_now, &stop).await {
            Ok(_) => {
                finished = true;
                break;
            }
            Err(e) => {
                eprintln!("archiver retry: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    assert!(finished, "archiver never completed after interruptions");
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct").await, 0);
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_archive").await, 400);
    assert_eq!(
        h.scalar("SELECT COUNT(DISTINCT radacctid) FROM radacct_archive")
            .await,
        400
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        400
    );
    h.server.stop().await;
}

/// `radacct_archive` already holds a *different* row under one of the ids being archived
/// (ids reused after a restore, or a panel's own archive table): that row is not copied,
/// so it must not be deleted either. The others move; the run stops with an error naming
/// the conflict; the stuck row and its history stay in `radacct` untouched.
async fn archiver_never_deletes_a_row_it_could_not_copy(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    for i in 0..3 {
        let (u, sid) = (format!("c{i}"), format!("c{i}"));
        h.client.send(&Acct::start(&u, &sid).at(t0)).await;
        h.client
            .send(
                &Acct::stop(&u, &sid)
                    .at(t0 + 10)
                    .time(10)
                    .octets(7, 8)
                    .cause(1),
            )
            .await;
    }
    let before = h.rows().await;
    let victim = before[1].clone();
    let inserted = h
        .scalar(&format!(
            "INSERT INTO radacct_archive (radacctid, acctsessionid, acctuniqueid, username, \
             nasipaddress, acctstarttime) VALUES ({}, 'old', 'foreign-row', 'someone-else', \
             '10.9.9.9', '2020-01-01 00:00:00') RETURNING radacctid",
            victim.radacctid
        ))
        .await;
    assert_eq!(inserted, victim.radacctid);

    let later = i64::from(now()) + 91 * 86_400;
    let err = archiver(&h, 10)
        .run_once(later, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 closed row(s) were not archived"),
        "{err}"
    );

    let rows = h.rows().await;
    assert_eq!(
        rows,
        vec![victim.clone()],
        "only the conflicting row stays, unchanged"
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT COUNT(*) FROM radacct_events WHERE radacctid = {}",
            victim.radacctid
        ))
        .await,
        2,
        "its history stays with it"
    );
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_events").await, 2);
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_archive").await, 3);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_archive WHERE acctuniqueid = 'foreign-row'")
            .await,
        1,
        "the archive's own row is not overwritten"
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        4
    );
}

const FAST_SWEEPER: &str = "[jobs]\nsweep_interval_secs = 1\nstale_after_secs = 1800\n";

/// An open row last updated `age` seconds ago, written straight into the database (as a
/// NAS that went silent, or FreeRADIUS, left it); returns its radacctid.
async fn ghost(store: &radacctd::sessions::Store, b: Backend, user: &str, age: i64) -> i64 {
    let t = i64::from(now()) - age;
    let (start, update) = match b {
        Backend::Sqlite => (
            format!("datetime({}, 'unixepoch')", t - 60),
            format!("datetime({t}, 'unixepoch')"),
        ),
        Backend::Postgres => (
            format!("to_timestamp({})", t - 60),
            format!("to_timestamp({t})"),
        ),
    };
    // A FreeRADIUS-style acctuniqueid: 32 hex digits.
    let unique: String = user.bytes().map(|b| format!("{b:02x}")).collect();
    let unique = format!("{unique:0>32}");
    crate::harness::scalar(
        store,
        &format!(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
             acctstarttime, acctupdatetime) VALUES ('{user}', '{unique}', '{user}', \
             '127.0.0.1', {start}, {update}) RETURNING radacctid"
        ),
    )
    .await
}

async fn cause_of(store: &radacctd::sessions::Store, id: i64) -> Option<String> {
    crate::harness::rows(store)
        .await
        .into_iter()
        .find(|r| r.radacctid == id)
        .and_then(|r| r.cause)
}

/// The running sweeper (real clock, `sweep_interval_secs = 1`, default 30 min threshold):
/// on a database radacctd never ran on, a ghost session is closed at the first sweep, one
/// interval after start — not 30 minutes later. After an outage (the heartbeat says
/// radacctd was last alive an hour ago), only sessions that were already stale back then
/// are closed at once; one whose Interim-Updates may have been lost during the outage
/// waits for a full threshold.
async fn sweeper_clears_ghosts_on_its_cadence_but_spares_sessions_an_outage_made_look_stale(
    b: Backend,
) {
    let h = Harness::start_with(b, FAST_SWEEPER).await;
    let beat = crate::harness::eventually(Duration::from_secs(5), || async {
        h.store().heartbeat().await.unwrap().is_some()
    })
    .await;
    assert!(beat, "the heartbeat is written at start");
    let id = ghost(h.store(), b, "ghost0", 7200).await;
    let closed = crate::harness::eventually(Duration::from_secs(10), || async {
        cause_of(h.store(), id).await.is_some()
    })
    .await;
    assert!(closed, "a ghost is closed within a few sweep intervals");
    assert_eq!(
        cause_of(h.store(), id).await.as_deref(),
        Some("NAS-Idle-Timeout")
    );

    // An outage: radacctd stopped; its last heartbeat an hour ago.
    let Harness { server, db, .. } = h;
    server.stop().await;
    let store = radacctd::sessions::Store::connect(&crate::harness::config(&db, "").database)
        .await
        .unwrap();
    let old = ghost(&store, b, "ghost1", 7200).await;
    let recent = ghost(&store, b, "alive1", 3700).await;
    store.set_heartbeat(i64::from(now()) - 3600).await.unwrap();
    let server = radacctd::app::Server::start(crate::harness::config(&db, FAST_SWEEPER))
        .await
        .unwrap();
    let closed = crate::harness::eventually(Duration::from_secs(10), || async {
        cause_of(&store, old).await.is_some()
    })
    .await;
    assert!(closed, "stale before the outage: closed at once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cause_of(&store, recent).await,
        None,
        "maybe alive: spared for a threshold after start"
    );
    server.stop().await;
    store.close().await;
}
