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
    archiver_lets_ingest_through_while_it_runs,
    closed_lists_sort_nulls_as_the_smallest_value,
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
    // The flag is set to what the database says, not toggled: a second sync changes
    // nothing, and on SQLite a hand-written value other than 0/1 is corrected, not flipped.
    let again = h.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!(again.online_changed, 0);
    if let radacctd::sessions::Store::Sqlite(s) = h.store() {
        sqlx::query("UPDATE subscribers SET is_online = 2 WHERE username = 'live'")
            .execute(s.pool())
            .await
            .unwrap();
        let report = h.sweeper().run_once(i64::from(now())).await.unwrap();
        assert_eq!(report.online_changed, 1);
        assert_eq!(
            h.scalar("SELECT is_online FROM subscribers WHERE username = 'live'")
                .await,
            1,
            "online, as its open row says"
        );
        let report = h.sweeper().run_once(i64::from(now())).await.unwrap();
        assert_eq!(report.online_changed, 0, "stable");
    }
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
    // statements of a batch; each run continues where the last one stopped, until one
    // finishes or the cuts run out. At least one cut must land mid-run (some rows moved,
    // some not), or the test proves nothing.
    let mut mid_run_cuts = 0;
    let mut micros = 50u64;
    while micros < 2_000_000 {
        let cut =
            tokio::time::timeout(Duration::from_micros(micros), a.run_once(cutoff_now, &stop))
                .await
                .is_err();
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
        let archived = committed(&h, "SELECT COUNT(*) FROM radacct_archive").await;
        if cut && archived > 0 && archived < 400 {
            mid_run_cuts += 1;
        }
        if archived == 400 {
            break;
        }
        micros = micros * 3 / 2;
    }
    assert!(
        mid_run_cuts > 0,
        "no run was cut with part of the rows archived"
    );
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

/// Old closed rows written straight into the database with one statement (much faster than
/// packets): `n` sessions closed in 2023, each with a Start and a Stop event.
async fn old_closed_rows(h: &Harness, n: i64) {
    let (rows, events) = match h.store() {
        radacctd::sessions::Store::Sqlite(_) => (
            format!(
                "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) \
                 INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
                 acctstarttime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets) \
                 SELECT 'old' || i, 'old-' || i, 'old' || (i % 97), '10.0.0.1', \
                 datetime(1672531200 + i, 'unixepoch'), datetime(1672531200 + i + 60, 'unixepoch'), \
                 60, i, i FROM g"
            ),
            "INSERT INTO radacct_events (radacctid, eventtype, eventtime) \
             SELECT radacctid, 'Start', acctstarttime FROM radacct WHERE acctuniqueid LIKE 'old-%' \
             UNION ALL SELECT radacctid, 'Stop', acctstoptime FROM radacct \
             WHERE acctuniqueid LIKE 'old-%'"
                .to_owned(),
        ),
        radacctd::sessions::Store::Postgres(_) => (
            format!(
                "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
                 acctstarttime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets) \
                 SELECT 'old' || i, 'old-' || i, 'old' || (i % 97), '10.0.0.1', \
                 to_timestamp(1672531200 + i), to_timestamp(1672531200 + i + 60), 60, i, i \
                 FROM generate_series(1, {n}) i"
            ),
            "INSERT INTO radacct_events (radacctid, eventtype, eventtime) \
             SELECT radacctid, 'Start', acctstarttime FROM radacct WHERE acctuniqueid LIKE 'old-%' \
             UNION ALL SELECT radacctid, 'Stop', acctstoptime FROM radacct \
             WHERE acctuniqueid LIKE 'old-%'"
                .to_owned(),
        ),
    };
    for sql in [rows, events] {
        let sql = sqlx::AssertSqlSafe(sql);
        match h.store() {
            radacctd::sessions::Store::Sqlite(s) => {
                sqlx::query(sql).execute(s.pool()).await.unwrap();
            }
            radacctd::sessions::Store::Postgres(s) => {
                sqlx::query(sql).execute(s.pool()).await.unwrap();
            }
        }
    }
}

/// The archiver moves a few thousand rows (default batch size) while a NAS keeps sending:
/// every packet is answered within 2 s, without retransmission — the archiver's batches
/// are short and it pauses between them, so the writer gets the database in time.
async fn archiver_lets_ingest_through_while_it_runs(b: Backend) {
    let h = Harness::start(b).await;
    old_closed_rows(&h, 4000).await;
    let a = archiver(&h, 1000);
    // Cut-off just after the old rows: the live sessions closed meanwhile stay.
    let later = 1_672_531_200 + 10_000 + 90 * 86_400;
    let run = tokio::spawn(async move { a.run_once(later, &CancellationToken::new()).await });
    let mut during = 0;
    let mut sent = 0u32;
    while !run.is_finished() || sent < 20 {
        let running = !run.is_finished();
        let (u, sid) = (format!("live{sent}"), format!("l{sent}"));
        let status = if sent.is_multiple_of(2) {
            Acct::start(&u, &sid).at(now())
        } else {
            Acct::stop(&format!("live{}", sent - 1), &format!("l{}", sent - 1))
                .at(now())
                .time(1)
                .cause(1)
        };
        let pkt = status.encode(h.client.next_id(), crate::harness::SECRET);
        let answer = h.client.exchange(&pkt, 1, Duration::from_secs(2)).await;
        assert!(
            answer.is_some(),
            "packet {sent} got no answer within 2 s (archiver running: {running})"
        );
        if running && !run.is_finished() {
            during += 1;
        }
        sent += 1;
        assert!(sent < 5000, "the archiver never finished");
    }
    assert_eq!(run.await.unwrap().unwrap(), 4000);
    assert!(during > 0, "no packet was sent while the archiver ran");
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct_archive").await, 4000);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        8000
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct").await,
        i64::from(sent.div_ceil(2)),
        "every live session kept, none archived"
    );
    h.server.stop().await;
}

/// One NULL placement on both backends and in memory: a NULL sorts as the smallest value
/// (first ascending, last descending), and ties are broken by radacctid in the same
/// direction.
async fn closed_lists_sort_nulls_as_the_smallest_value(b: Backend) {
    use radacctd::sessions::store::query::{ScopeFilter, SessionQuery, SortKey, StatusFilter};
    let h = Harness::start(b).await;
    old_closed_rows(&h, 4).await;
    // A row without session time or counters, as FreeRADIUS may leave one.
    let sql = "UPDATE radacct SET acctsessiontime = NULL, acctinputoctets = NULL \
               WHERE acctuniqueid = 'old-2'";
    match h.store() {
        radacctd::sessions::Store::Sqlite(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
        radacctd::sessions::Store::Postgres(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
    }
    let ids = |rows: Vec<radacctd::sessions::model::Session>| {
        rows.iter()
            .map(|s| s.fields.acctsessionid.to_string())
            .collect::<Vec<_>>()
    };
    let mut q = SessionQuery {
        status: StatusFilter::Closed,
        scope: ScopeFilter::All,
        nas_id: None,
        search: None,
        from: None,
        to: None,
        sort: SortKey::SessionTime,
        descending: false,
        offset: 0,
        limit: 10,
        archive: false,
    };
    // Session time: NULL, then 60 × 3 by radacctid.
    let asc = ids(h.store().list_sessions(&q).await.unwrap());
    assert_eq!(asc, ["old2", "old1", "old3", "old4"]);
    q.descending = true;
    let desc = ids(h.store().list_sessions(&q).await.unwrap());
    assert_eq!(desc, ["old4", "old3", "old1", "old2"]);
    q.sort = SortKey::InputOctets;
    let desc = ids(h.store().list_sessions(&q).await.unwrap());
    assert_eq!(desc, ["old4", "old3", "old1", "old2"]);
    q.descending = false;
    let asc = ids(h.store().list_sessions(&q).await.unwrap());
    assert_eq!(asc, ["old2", "old1", "old3", "old4"]);
    h.server.stop().await;
}

/// PostgreSQL: the API's indexes are built (before listening, the test table being small:
/// see the next test for a big one) and replace the old ones, and then every
/// sort of the closed and full lists (and of the archive), in both directions, is an index
/// walk — no Sort node (with sequential and bitmap scans disabled, so that the small test
/// table does not hide it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sort_of_the_closed_list_is_an_index_walk_on_postgres() {
    use radacctd::sessions::store::query::{ScopeFilter, SessionQuery, SortKey, StatusFilter};
    use sqlx::Connection;
    if crate::harness::skip_postgres() {
        return;
    }
    let h = Harness::start(Backend::Postgres).await;
    let built = crate::harness::eventually(Duration::from_secs(20), || async {
        h.scalar(
            "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname LIKE 'radacct%sort%' AND i.indisvalid",
        )
        .await
            == 8
    })
    .await;
    assert!(built, "the API indexes are built");
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('radacct_starttime', \
             'radacct_inputoctets', 'radacct_outputoctets', 'radacct_sessiontime', \
             'radacct_username', 'radacct_nas_id')"
        )
        .await,
        0,
        "the indexes they replace are gone"
    );
    old_closed_rows(&h, 5000).await;
    let mut c = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
    for sql in [
        "INSERT INTO radacct_archive SELECT * FROM radacct",
        "ANALYZE radacct",
        "ANALYZE radacct_archive",
        "SET enable_seqscan = off",
        "SET enable_bitmapscan = off",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    for archive in [false, true] {
        for status in [StatusFilter::Closed, StatusFilter::All] {
            for nas_id in [None, Some(1)] {
                for sort in [
                    SortKey::StartTime,
                    SortKey::InputOctets,
                    SortKey::OutputOctets,
                    SortKey::SessionTime,
                ] {
                    if nas_id.is_some() && sort != SortKey::StartTime {
                        continue;
                    }
                    for descending in [true, false] {
                        let q = SessionQuery {
                            status,
                            scope: ScopeFilter::All,
                            nas_id,
                            search: None,
                            from: None,
                            to: None,
                            sort,
                            descending,
                            offset: 0,
                            limit: 50,
                            archive,
                        };
                        let sql = h.store().list_sessions_sql(&q);
                        let explain = sqlx::AssertSqlSafe(format!("EXPLAIN {sql}"));
                        let mut query = sqlx::query_scalar::<_, String>(explain);
                        if let Some(n) = nas_id {
                            query = query.bind(n);
                        }
                        let plan: Vec<String> = query
                            .bind(50i64)
                            .bind(0i64)
                            .fetch_all(&mut c)
                            .await
                            .unwrap();
                        let plan = plan.join("\n");
                        assert!(
                            !plan.contains("Sort") && plan.contains("Index Scan"),
                            "{q:?}\n{plan}"
                        );
                    }
                }
            }
        }
    }
    h.server.stop().await;
}

/// PostgreSQL, a big `radacct` missing an API index (an upgrade): the server starts and
/// answers at once while the index is built in the background — here held up by a
/// transaction that `CREATE INDEX CONCURRENTLY` must wait for — and the index is there
/// once that transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_api_index_is_built_in_the_background_while_ingest_runs() {
    use sqlx::Connection;
    if crate::harness::skip_postgres() {
        return;
    }
    let db = crate::harness::TestDb::new(Backend::Postgres).await;
    let store = radacctd::sessions::Store::connect(&crate::harness::config(&db, "").database)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for sql in [
        // Past the size below which the API indexes are built before listening.
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
         acctstarttime, acctstoptime, connectinfo_start) SELECT 'b' || i, 'big-' || i, \
         'big' || (i % 100), '10.0.0.1', to_timestamp(1672531200 + i), \
         to_timestamp(1672531260 + i), repeat('x', 400) FROM generate_series(1, 60000) i",
        "DROP INDEX radacct_sort_starttime",
        // What an older radacctd left (replaced, so dropped) and an index of someone
        // else's under one of the old names (kept).
        "CREATE INDEX radacct_starttime ON radacct (acctstarttime)",
        "CREATE INDEX radacct_nas_id ON radacct (nas_id, username)",
        // A writer in the middle of a transaction: the concurrent build waits for it.
        "BEGIN",
        "UPDATE radacct SET realm = realm WHERE acctuniqueid = 'big-1'",
    ] {
        sqlx::query(sql).execute(&mut other).await.unwrap();
    }
    let server = tokio::time::timeout(
        Duration::from_secs(20),
        radacctd::app::Server::start(crate::harness::config(&db, "")),
    )
    .await
    .expect("the server waited for the index build before listening")
    .unwrap();
    let client = crate::harness::RadClient::new(server.radius_addr, crate::harness::SECRET).await;
    client.send(&Acct::start("live", "1").at(now() - 5)).await;
    let valid = "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE c.relname = 'radacct_sort_starttime' AND i.indisvalid";
    assert_eq!(
        crate::harness::scalar(&store, valid).await,
        0,
        "still waiting for the open transaction"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let built = crate::harness::eventually(Duration::from_secs(30), || async {
        crate::harness::scalar(&store, valid).await == 1
    })
    .await;
    assert!(built, "built once the transaction ended");
    let gone = crate::harness::eventually(Duration::from_secs(10), || async {
        crate::harness::scalar(
            &store,
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'radacct_starttime'",
        )
        .await
            == 0
    })
    .await;
    assert!(gone, "the index it replaces is dropped");
    assert_eq!(
        crate::harness::scalar(
            &store,
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'radacct_nas_id'"
        )
        .await,
        1,
        "an index radacctd did not make is left alone"
    );
    server.stop().await;
    store.close().await;
}

/// PostgreSQL migration 0005 on an archive that an older version (no primary key) left
/// with copies of one event and with two different events under one id: the copies become
/// one, the different event is set aside in `radacct_events_archive_conflicts` (nothing is
/// lost), and the primary key is in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0005_deduplicates_the_event_archive_before_its_primary_key() {
    if crate::harness::skip_postgres() {
        return;
    }
    let h = Harness::start(Backend::Postgres).await;
    let radacctd::sessions::Store::Postgres(s) = h.store() else {
        unreachable!()
    };
    for sql in [
        "ALTER TABLE radacct_events_archive DROP CONSTRAINT radacct_events_archive_pkey",
        "INSERT INTO radacct_events_archive (id, radacctid, eventtype, eventtime) VALUES \
         (1, 10, 'Start', to_timestamp(0)), (1, 10, 'Start', to_timestamp(0)), \
         (1, 10, 'Start', to_timestamp(0)), (2, 20, 'Stop', to_timestamp(5)), \
         (2, 21, 'Stop', to_timestamp(6)), (3, 30, 'Start', to_timestamp(7))",
    ] {
        sqlx::query(sql).execute(s.pool()).await.unwrap();
    }
    sqlx::raw_sql(include_str!(
        "../../migrations/postgres/0005_events_archive_pkey.sql"
    ))
    .execute(s.pool())
    .await
    .unwrap();
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        3
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive_conflicts WHERE id = 2")
            .await,
        1,
        "the other event under id 2 is kept aside"
    );
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM pg_constraint WHERE conname = 'radacct_events_archive_pkey'"
        )
        .await,
        1
    );
    // Run again (as on every start): nothing changes.
    sqlx::raw_sql(include_str!(
        "../../migrations/postgres/0005_events_archive_pkey.sql"
    ))
    .execute(s.pool())
    .await
    .unwrap();
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events_archive")
            .await,
        3
    );
    h.server.stop().await;
}
