//! The engine driven directly with whole batches, so that packets of one session landing
//! in the same group commit are tested deterministically, on both backends.

use std::sync::Arc;

use radacctd::sessions::model::{Fields, Record, StatusType};
use radacctd::sessions::{Engine, Index, SessionKey, Store};

use crate::both_backends;
use crate::harness::{Backend, TestDb, config, rows};

both_backends!(
    one_batch_holding_a_whole_session_writes_one_row,
    one_batch_holding_two_sessions_of_a_key_closes_the_first,
    accounting_on_in_a_batch_closes_sessions_opened_earlier_in_it,
    rebuilt_index_matches_the_database,
    interims_write_counters_and_filled_attributes_in_batches_of_any_size,
    the_online_flag_follows_every_open_row_of_a_user_across_and_within_batches,
);

async fn engine(b: Backend) -> (Engine, Store, TestDb) {
    let db = TestDb::new(b).await;
    let store = Store::connect(&config(&db, "").database).await.unwrap();
    store.migrate().await.unwrap();
    let engine = Engine::new(store.clone(), Arc::new(Index::new()), 60);
    (engine, store, db)
}

fn record(status: StatusType, user: &str, sid: &str, t: i64, session_time: Option<i64>) -> Record {
    let nas_ip = "10.0.0.1".parse().unwrap();
    Record {
        status,
        nas_id: Some(1),
        nas_ip,
        key: SessionKey::freeradius(user.as_bytes(), sid.as_bytes(), "10.0.0.1", b"", b"", None),
        event_time: t,
        timestamped: false,
        session_time,
        input_octets: session_time.map(|s| s * 10),
        output_octets: session_time.map(|s| s * 20),
        terminate_cause: (status == StatusType::Stop).then(|| "User-Request".into()),
        connectinfo: None,
        fields: Fields {
            username: user.into(),
            acctsessionid: sid.into(),
            nasipaddress: Some(nas_ip),
            ..Fields::default()
        },
        target: None,
    }
}

async fn one_batch_holding_a_whole_session_writes_one_row(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    let t0 = 1_800_000_000;
    let changed = engine
        .process(&[
            record(StatusType::Start, "u", "1", t0, None),
            record(StatusType::InterimUpdate, "u", "1", t0 + 60, Some(60)),
            record(StatusType::Stop, "u", "1", t0 + 90, Some(90)),
        ])
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    let rows = rows(&store).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].stop, Some(t0 + 90));
    assert_eq!(rows[0].input, Some(900));
    assert_eq!(store.events_for(rows[0].radacctid).await.unwrap().len(), 3);
    assert!(engine.index().is_empty());
}

async fn one_batch_holding_two_sessions_of_a_key_closes_the_first(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    let t0 = 1_800_000_000;
    engine
        .process(&[
            record(StatusType::Start, "u", "1", t0, None),
            record(StatusType::InterimUpdate, "u", "1", t0 + 60, Some(60)),
            record(StatusType::Start, "u", "1", t0 + 600, None),
        ])
        .await
        .unwrap();
    let rows = rows(&store).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].cause.as_deref(), Some("Lost-Service"));
    assert_eq!(rows[0].stop, Some(t0 + 60));
    assert_eq!(rows[1].stop, None);
    assert_ne!(rows[0].acctuniqueid, rows[1].acctuniqueid);
    assert_eq!(engine.index().len(), 1);
    assert_eq!(engine.index().snapshot()[0].radacctid, rows[1].radacctid);
}

async fn accounting_on_in_a_batch_closes_sessions_opened_earlier_in_it(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    let t0 = 1_800_000_000;
    engine
        .process(&[record(StatusType::Start, "a", "1", t0, None)])
        .await
        .unwrap();
    let mut on = record(StatusType::AccountingOn, "", "", t0 + 100, None);
    on.fields = Fields::default();
    engine
        .process(&[
            record(StatusType::Start, "b", "2", t0 + 50, None),
            on,
            record(StatusType::Start, "c", "3", t0 + 200, None),
        ])
        .await
        .unwrap();
    let rows = rows(&store).await;
    let by = |u: &str| rows.iter().find(|r| r.username == u).unwrap().clone();
    assert_eq!(by("a").cause.as_deref(), Some("NAS-Reboot"));
    assert_eq!(by("b").cause.as_deref(), Some("NAS-Reboot"));
    assert_eq!(by("b").stop, Some(t0 + 100));
    assert_eq!(by("c").stop, None, "started after the reboot");
    assert_eq!(engine.index().len(), 1);
}

async fn rebuilt_index_matches_the_database(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    let t0 = 1_800_000_000;
    let batch: Vec<Record> = (0..300)
        .map(|i| {
            record(
                StatusType::Start,
                &format!("u{i}"),
                &i.to_string(),
                t0,
                None,
            )
        })
        .chain((0..100).map(|i| {
            record(
                StatusType::Stop,
                &format!("u{i}"),
                &i.to_string(),
                t0 + 9,
                Some(9),
            )
        }))
        .collect();
    engine.process(&batch).await.unwrap();
    let fresh = Engine::new(store.clone(), Arc::new(Index::new()), 60);
    assert_eq!(fresh.rebuild_index().await.unwrap(), 200);
    let mut a: Vec<_> = engine
        .index()
        .snapshot()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let mut b: Vec<_> = fresh
        .index()
        .snapshot()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    a.sort_by_key(|s| s.radacctid);
    b.sort_by_key(|s| s.radacctid);
    assert_eq!(a.len(), 200);
    assert_eq!(
        a, b,
        "index after commits equals index rebuilt from the database"
    );
}

/// Batches of sizes that cut into several multi-row statements (and one that does not),
/// Interims that only advance counters (progress-only update) mixed with Interims that
/// also fill a missing attribute (full update) and Stops, in one batch.
async fn interims_write_counters_and_filled_attributes_in_batches_of_any_size(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    let t0 = 1_800_000_000;
    let n = 300; // 256 + 32 + 8 + 4: four INSERT statements on SQLite
    let starts: Vec<Record> = (0..n)
        .map(|i| {
            record(
                StatusType::Start,
                &format!("u{i}"),
                &i.to_string(),
                t0,
                None,
            )
        })
        .collect();
    let changed = engine.process(&starts).await.unwrap();
    assert_eq!(changed.len(), n);
    let mut ids: Vec<i64> = changed.iter().map(|c| c.session.radacctid).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every new row got its own id");
    for c in &changed {
        let indexed = engine.index().get_by_id(c.session.radacctid).unwrap();
        assert_eq!(
            indexed.acctuniqueid, c.session.acctuniqueid,
            "id matches its row"
        );
    }

    let batch: Vec<Record> = (0..n)
        .map(|i| {
            let (user, sid) = (format!("u{i}"), i.to_string());
            match i % 3 {
                0 => record(StatusType::InterimUpdate, &user, &sid, t0 + 60, Some(60)),
                1 => {
                    let mut r = record(StatusType::InterimUpdate, &user, &sid, t0 + 60, Some(60));
                    r.fields.framedipaddress = Some([10, 1, 0, (i % 250) as u8].into());
                    r
                }
                _ => record(StatusType::Stop, &user, &sid, t0 + 60, Some(60)),
            }
        })
        .collect();
    engine.process(&batch).await.unwrap();
    let rows = rows(&store).await;
    assert_eq!(rows.len(), n);
    for r in &rows {
        let i: usize = r.username[1..].parse().unwrap();
        assert_eq!(r.session_time, Some(60), "{r:?}");
        assert_eq!((r.input, r.output), (Some(600), Some(1200)), "{r:?}");
        assert_eq!(r.update, Some(t0 + 60), "{r:?}");
        assert_eq!(r.nasipaddress, "10.0.0.1", "{r:?}");
        match i % 3 {
            0 => assert!(r.stop.is_none() && r.framedipaddress.is_none(), "{r:?}"),
            1 => {
                assert!(r.stop.is_none(), "{r:?}");
                let want = format!("10.1.0.{}", i % 250);
                assert_eq!(r.framedipaddress.as_deref(), Some(want.as_str()), "{r:?}");
            }
            _ => assert_eq!(r.stop, Some(t0 + 60), "{r:?}"),
        }
    }
    // Each row: its Start, then its Interim or Stop.
    for r in rows.iter().take(5) {
        assert_eq!(store.events_for(r.radacctid).await.unwrap().len(), 2);
    }
    let open = 2 * n / 3;
    assert_eq!(engine.index().len(), open);
    let fresh = Engine::new(store.clone(), Arc::new(Index::new()), 60);
    assert_eq!(fresh.rebuild_index().await.unwrap(), open);
    for s in engine.index().snapshot() {
        assert_eq!(fresh.index().get_by_id(s.radacctid).as_deref(), Some(&*s));
    }
}

/// The writer's statements (key lookups, the batch UPDATE by primary key, the online-flag
/// sync) read radacct by index while the table is young, before autovacuum has analysed
/// it: planned for a table of a few pages and cached on the connection, they used to scan
/// every row once per batch (a fresh database fell from 10,700 to 1,900 packets/s as the
/// table grew; docs/BENCHMARKS.md). Counted with PostgreSQL's own statistics, which a
/// backend publishes within about a second of going idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ingest_never_scans_a_young_radacct() {
    if crate::harness::skip_postgres() {
        return;
    }
    let (engine, store, _db) = engine(Backend::Postgres).await;
    let stat = |column: &'static str| {
        let store = store.clone();
        async move {
            let sql = format!(
                "SELECT COALESCE(SUM({column}), 0)::bigint FROM pg_stat_user_tables \
                 WHERE relname = 'radacct'"
            );
            crate::harness::scalar(&store, &sql).await
        }
    };
    // The migrations' own scans (index builds), once all published. A backend publishes
    // its statistics when it goes idle, at most once a second, and an idle one still
    // holding some publishes them up to 10 s later (PostgreSQL's PGSTAT_IDLE_INTERVAL):
    // the count is settled once it has not moved for longer than that. (Two equal
    // readings 2 s apart were not enough: both could come before the index builds'
    // 26 scans were published, which then counted as ingest's.)
    let mut scans_before = stat("seq_scan").await;
    let mut steady_since = std::time::Instant::now();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while steady_since.elapsed() < std::time::Duration::from_secs(11)
        && std::time::Instant::now() < give_up
    {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = stat("seq_scan").await;
        if now != scans_before {
            scans_before = now;
            steady_since = std::time::Instant::now();
        }
    }
    let t0 = 1_800_000_000;
    let (sessions, per_batch) = (3_000, 150);
    for (status, at, time) in [
        (StatusType::Start, t0, None),
        (StatusType::InterimUpdate, t0 + 300, Some(300)),
        (StatusType::Stop, t0 + 400, Some(400)),
    ] {
        for first in (0..sessions).step_by(per_batch) {
            let batch: Vec<Record> = (first..first + per_batch)
                .map(|i| record(status, &format!("u{i}"), &i.to_string(), at, time))
                .collect();
            engine.process(&batch).await.unwrap();
        }
    }
    // Every insert and update published means every statement before them was too.
    let published = crate::harness::eventually(std::time::Duration::from_secs(20), || async {
        stat("n_tup_ins").await == sessions as i64 && stat("n_tup_upd").await == 2 * sessions as i64
    })
    .await;
    assert!(
        published,
        "radacct statistics never showed the {sessions} sessions' writes"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let scans = stat("seq_scan").await - scans_before;
    assert_eq!(
        scans, 0,
        "sequential scans of radacct while ingesting {sessions} sessions into a young table"
    );
}

/// `subscribers.is_online` after each batch: a row the batch did not touch keeps the user
/// online, as do a row it opened and a row it updated and left open; closing the last
/// open row takes it offline, also when another row of the user closes in the same batch.
async fn the_online_flag_follows_every_open_row_of_a_user_across_and_within_batches(b: Backend) {
    let (engine, store, _db) = engine(b).await;
    for user in ["u", "w"] {
        store.upsert_subscriber(user, None).await.unwrap();
    }
    let online = |user: &'static str| {
        let store = store.clone();
        async move {
            let sql =
                format!("SELECT COUNT(*) FROM subscribers WHERE username = '{user}' AND is_online");
            crate::harness::scalar(&store, &sql).await == 1
        }
    };
    let t0 = 1_800_000_000;
    use StatusType::{InterimUpdate, Start, Stop};
    // (packets of the batch, u online after it, w online after it)
    type Packet = (StatusType, &'static str, &'static str, i64, Option<i64>);
    let steps: [(&[Packet], bool, bool); 5] = [
        // Sessions 1 and 2 of u open in one batch; w opens and closes in the same batch.
        (
            &[
                (Start, "u", "1", t0, None),
                (Start, "u", "2", t0, None),
                (Start, "w", "9", t0, None),
                (Stop, "w", "9", t0 + 5, Some(5)),
            ],
            true,
            false,
        ),
        // Session 1 closes; session 2, untouched by this batch, keeps u online.
        (&[(Stop, "u", "1", t0 + 60, Some(60))], true, false),
        // Session 3 opens and session 2 is updated.
        (
            &[
                (Start, "u", "3", t0 + 90, None),
                (InterimUpdate, "u", "2", t0 + 120, Some(120)),
            ],
            true,
            false,
        ),
        // Session 2 closes while session 3 is updated and stays open, in one batch.
        (
            &[
                (Stop, "u", "2", t0 + 180, Some(180)),
                (InterimUpdate, "u", "3", t0 + 180, Some(90)),
            ],
            true,
            false,
        ),
        // The last open row closes.
        (&[(Stop, "u", "3", t0 + 240, Some(150))], false, false),
    ];
    for (n, (records, u_online, w_online)) in steps.iter().enumerate() {
        let batch: Vec<Record> = records
            .iter()
            .map(|&(status, user, sid, at, time)| record(status, user, sid, at, time))
            .collect();
        engine.process(&batch).await.unwrap();
        assert_eq!(online("u").await, *u_online, "u after batch {n}");
        assert_eq!(online("w").await, *w_online, "w after batch {n}");
    }
}
