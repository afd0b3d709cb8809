//! Bad input, restarts, an unwritable store and shutdown, on both backends.

use std::time::Duration;

use radacctd::radius::attr;

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, RadClient, SECRET, WriteLock, eventually, now, radclient,
};

both_backends!(
    wrong_secret_and_unknown_nas_get_no_answer,
    garbage_and_truncated_packets_are_dropped_and_the_server_keeps_answering,
    status_server_is_answered,
    radclient_records_a_mikrotik_session,
    restart_rebuilds_the_index_and_loses_nothing,
    unwritable_store_means_no_answer_then_recovery_without_loss,
    shutdown_commits_and_answers_everything_accepted,
    queue_depth_shows_what_waits_while_the_store_is_unwritable,
    shutdown_grace_is_one_deadline_for_the_whole_queue,
);

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wrong_secret_and_unknown_nas_get_no_answer(b: Backend) {
    let h = Harness::start(b).await;
    let (_, before) = h.http_get("/metrics").await;
    let wrong = RadClient::new(h.server.radius_addr, "not-the-secret").await;
    let pkt = Acct::start("mallory", "1")
        .at(now())
        .encode(1, "not-the-secret");
    assert!(
        wrong.silent(&pkt, Duration::from_millis(700)).await,
        "wrong secret answered"
    );
    // 127.0.0.2 is not a configured NAS.
    let stranger = RadClient::bound("127.0.0.2:0", h.server.radius_addr, SECRET).await;
    let pkt = Acct::start("mallory", "2").at(now()).encode(2, SECRET);
    assert!(
        stranger.silent(&pkt, Duration::from_millis(700)).await,
        "unknown NAS answered"
    );
    assert!(h.rows().await.is_empty());
    let (_, after) = h.http_get("/metrics").await;
    for reason in ["bad_authenticator", "unknown_nas"] {
        let key = format!("radacctd_packets_dropped_total{{reason=\"{reason}\"}}");
        assert!(
            metric(&after, &key) >= metric(&before, &key) + 1.0,
            "{key} not counted:\n{after}"
        );
    }
    h.server.stop().await;
}

async fn garbage_and_truncated_packets_are_dropped_and_the_server_keeps_answering(b: Backend) {
    let h = Harness::start(b).await;
    let valid = Acct::start("zed", "1").at(now()).encode(9, SECRET);
    let mut bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![4],
        vec![4, 1, 0, 20],
        valid[..valid.len() - 3].to_vec(),
        vec![0xff; 5000],
        vec![0u8; 4097],
    ];
    // Lying length field, attribute lengths 0, 1 and past the end.
    let mut lying = valid.clone();
    lying[2..4].copy_from_slice(&4000u16.to_be_bytes());
    bad.push(lying);
    for len in [0u8, 1, 250] {
        let mut p = valid.clone();
        p[21] = len;
        bad.push(p);
    }
    // An Access-Request: not this server's job.
    let mut access = valid.clone();
    access[0] = 1;
    bad.push(access);
    // Huge Acct-Session-Id, non-UTF-8 and SQL metacharacters in strings: stored, not fatal.
    let hostile = Acct::start("x'); DROP TABLE radacct;--", &"9".repeat(253))
        .with(attr::CALLING_STATION_ID, vec![0xff, 0xfe, 0, b'a'])
        .at(now());
    // Deterministic noise.
    let mut x: u32 = 12345;
    for _ in 0..200 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = (x % 300) as usize;
        bad.push((0..len).map(|i| (x >> (i % 24)) as u8).collect());
    }
    for p in &bad {
        h.client
            .socket
            .send_to(p, h.server.radius_addr)
            .await
            .unwrap();
    }
    h.client.send(&hostile).await;
    let reply = h.client.exchange(&valid, 3, Duration::from_secs(2)).await;
    assert!(reply.is_some(), "server stopped answering after bad input");
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .any(|r| r.username == "x'); DROP TABLE radacct;--")
    );
    assert!(rows.iter().any(|r| r.acctsessionid.len() == 253));
    let (_, m) = h.http_get("/metrics").await;
    assert!(
        metric(&m, "radacctd_packets_dropped_total{reason=\"bad_length\"}") >= 4.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "radacctd_packets_dropped_total{reason=\"bad_attribute\"}"
        ) >= 3.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "radacctd_packets_dropped_total{reason=\"unsupported_code\"}"
        ) >= 1.0,
        "{m}"
    );
    h.server.stop().await;
}

async fn status_server_is_answered(b: Backend) {
    let h = Harness::start(b).await;
    let (ok, out) = radclient(
        h.server.radius_addr,
        "status",
        SECRET,
        "Message-Authenticator = 0x00\n",
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("Received Accounting-Response"), "{out}");
    h.server.stop().await;
}

async fn radclient_records_a_mikrotik_session(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    // Attribute shapes of a RouterOS PPPoE server (shared/fixtures/mikrotik).
    let common = "User-Name = \"bob\"\nAcct-Session-Id = \"81000004\"\nNAS-IP-Address = 127.0.0.1\n\
        NAS-Identifier = \"MikroTik\"\nNAS-Port-Id = \"bridge1\"\nNAS-Port = 15728644\n\
        NAS-Port-Type = Ethernet\nService-Type = Framed-User\nFramed-Protocol = PPP\n\
        Calling-Station-Id = \"F8:B4:6A:C1:71:78\"\nCalled-Station-Id = \"service1\"\n\
        Framed-IP-Address = 10.10.10.251\nAcct-Authentic = RADIUS\nAcct-Delay-Time = 0\n";
    let send = |extra: String| {
        let attrs = format!("{common}{extra}");
        let addr = h.server.radius_addr;
        async move { radclient(addr, "acct", SECRET, &attrs).await }
    };
    let (ok, out) = send(format!(
        "Acct-Status-Type = Start\nEvent-Timestamp = {t0}\n"
    ))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = send(format!(
        "Acct-Status-Type = Interim-Update\nEvent-Timestamp = {}\nAcct-Session-Time = 60\n\
         Acct-Input-Octets = 4164618\nAcct-Output-Octets = 7308659\nAcct-Input-Gigawords = 1\n",
        t0 + 60
    ))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = send(format!(
        "Acct-Status-Type = Stop\nEvent-Timestamp = {}\nAcct-Session-Time = 70\n\
         Acct-Input-Octets = 4164700\nAcct-Output-Octets = 7308700\nAcct-Input-Gigawords = 1\n\
         Acct-Terminate-Cause = Lost-Carrier\n",
        t0 + 70
    ))
    .await;
    assert!(ok, "{out}");
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    let key = radacctd::sessions::SessionKey::freeradius(
        b"bob",
        b"81000004",
        "127.0.0.1",
        b"MikroTik",
        b"bridge1",
        Some(15_728_644),
    );
    assert_eq!(r.acctuniqueid, key.to_hex());
    assert_eq!(r.start, Some(i64::from(t0)));
    assert_eq!(r.stop, Some(i64::from(t0 + 70)));
    assert_eq!(r.input, Some((1i64 << 32) + 4_164_700));
    assert_eq!(r.output, Some(7_308_700));
    assert_eq!(r.cause.as_deref(), Some("Lost-Carrier"));
    assert_eq!(r.nasporttype.as_deref(), Some("Ethernet"));
    h.server.stop().await;
}

async fn restart_rebuilds_the_index_and_loses_nothing(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 250;
    for i in 0..20 {
        h.client
            .send(&Acct::start(&format!("u{i}"), &format!("{i}")).at(t0))
            .await;
    }
    h.client
        .send(&Acct::stop("u0", "0").at(t0 + 10).time(10).cause(1))
        .await;
    let before = h.rows().await;
    let h = h.restart().await;
    assert_eq!(h.server.index.len(), 19, "open sessions reloaded");
    assert_eq!(h.rows().await, before);
    // An interim after the restart matches the existing row (no new row).
    h.client
        .send(
            &Acct::interim("u5", "5")
                .at(t0 + 60)
                .time(60)
                .octets(123, 456),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 20);
    let u5 = rows.iter().find(|r| r.username == "u5").unwrap();
    assert_eq!((u5.input, u5.output), (Some(123), Some(456)));
    h.server.stop().await;
}

async fn unwritable_store_means_no_answer_then_recovery_without_loss(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    let packets: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            Acct::start(&format!("w{i}"), &format!("{i}"))
                .at(t0)
                .encode(100 + i as u8, SECRET)
        })
        .collect();
    let lock = WriteLock::take(&h.db).await;
    for p in &packets {
        h.client
            .socket
            .send_to(p, h.server.radius_addr)
            .await
            .unwrap();
    }
    // SQLite gives up on a lock after its 5 s busy timeout and the writer retries; PostgreSQL
    // waits on the lock. Either way nothing may be answered while the store cannot commit.
    let wait = match b {
        Backend::Sqlite => Duration::from_secs(6),
        Backend::Postgres => Duration::from_secs(2),
    };
    assert!(
        h.client.recv_for(&packets[0], wait).await.is_none(),
        "answered without a commit"
    );
    lock.release().await;
    for p in &packets {
        // The NAS retransmits the same packet until it is answered.
        assert!(
            h.client
                .exchange(p, 10, Duration::from_secs(1))
                .await
                .is_some(),
            "no answer after recovery"
        );
    }
    let rows = h.rows().await;
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events").await,
        5,
        "applied exactly once"
    );
    h.server.stop().await;
}

async fn shutdown_commits_and_answers_everything_accepted(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    let packets: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            Acct::start(&format!("s{i}"), &format!("{i}"))
                .at(t0)
                .encode(i as u8, SECRET)
        })
        .collect();
    // Hold the store so the packets pile up in the writer's queue, then ask for shutdown.
    let lock = WriteLock::take(&h.db).await;
    for p in &packets {
        h.client
            .socket
            .send_to(p, h.server.radius_addr)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(h.server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "stopped before committing what it accepted"
    );
    lock.release().await;
    stopping.await.unwrap();
    let mut answered = 0;
    for p in &packets {
        if h.client
            .recv_for(p, Duration::from_millis(100))
            .await
            .is_some()
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 30, "every accepted packet answered before exit");
    // The server closed its pool on the way out; open the database again.
    let store = radacctd::sessions::Store::connect(&crate::harness::config(&h.db, "").database)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            crate::harness::rows(&store).await.len() == 30
        })
        .await
    );
}

/// Send without waiting for an answer (none comes while the store is held).
async fn send_unanswered(h: &Harness, a: &Acct, id: u8) {
    h.client
        .socket
        .send_to(&a.encode(id, SECRET), h.server.radius_addr)
        .await
        .unwrap();
}

/// The backlog alert needs the gauge while the writer is stuck in a commit, not only when
/// it takes its next batch.
async fn queue_depth_shows_what_waits_while_the_store_is_unwritable(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    let lock = WriteLock::take(&h.db).await;
    // The first packet is the writer's batch, stuck on the lock; the rest wait behind it.
    send_unanswered(&h, &Acct::start("q0", "0").at(t0), 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 1..20u8 {
        send_unanswered(
            &h,
            &Acct::start(&format!("q{i}"), &format!("{i}")).at(t0),
            i,
        )
        .await;
    }
    // Other servers in this test binary share the registry; only the scrape sets the gauge
    // from this server's queue, so several scrapes tolerate one interleaving.
    let seen = std::sync::Mutex::new(0.0);
    let waited = eventually(Duration::from_secs(5), || async {
        let (_, text) = h.http_get("/metrics").await;
        let depth = metric(&text, "radacctd_writer_queue_depth");
        *seen.lock().unwrap() = depth;
        depth >= 19.0
    })
    .await;
    assert!(
        waited,
        "queue depth {} while 19 records wait behind a stuck commit",
        seen.lock().unwrap()
    );
    lock.release().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.rows().await.len() == 20
        })
        .await
    );
    // The same tolerance of other servers' writers setting the shared gauge between this
    // server's scrape and its rendering.
    let drained = eventually(Duration::from_secs(5), || async {
        let (_, text) = h.http_get("/metrics").await;
        let depth = metric(&text, "radacctd_writer_queue_depth");
        *seen.lock().unwrap() = depth;
        depth == 0.0
    })
    .await;
    assert!(
        drained,
        "queue depth {} after everything was committed",
        seen.lock().unwrap()
    );
    h.server.stop().await;
}

/// `writer.shutdown_grace_secs` is one deadline for everything still queued at shutdown,
/// not a grace per batch (nor unlimited while a commit waits on a lock, as on PostgreSQL):
/// with the store held for longer than the grace, nothing is committed, even though the
/// store comes back before the old per-batch graces would have run out.
async fn shutdown_grace_is_one_deadline_for_the_whole_queue(b: Backend) {
    let h = Harness::start_with(
        b,
        "[writer]\nmax_batch = 2\nqueue_capacity = 64\nshutdown_grace_secs = 1\n\
         retry_max_backoff_ms = 100\n",
    )
    .await;
    let t0 = now() - 100;
    let lock = WriteLock::take(&h.db).await;
    // Twenty records: ten batches of two.
    for i in 0..20u8 {
        send_unanswered(
            &h,
            &Acct::start(&format!("g{i}"), &format!("{i}")).at(t0),
            i,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(h.server.stop());
    // Well past the 1 s deadline, the store is writable again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    lock.release().await;
    let stopped = tokio::time::timeout(Duration::from_secs(30), stopping).await;
    assert!(
        stopped.is_ok(),
        "shutdown still running 30 s after the store came back"
    );
    let store = radacctd::sessions::Store::connect(&crate::harness::config(&h.db, "").database)
        .await
        .unwrap();
    let rows = crate::harness::rows(&store).await;
    assert!(
        rows.is_empty(),
        "{} records committed after the shutdown deadline",
        rows.len()
    );
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(
        Duration::from_millis(200),
        h.client.socket.recv_from(&mut buf),
    )
    .await;
    assert!(answer.is_err(), "a packet was answered without a commit");
}

/// More packets than the server can take: it sheds load by not answering (the queue is
/// bounded), acknowledges nothing it has not committed, keeps the API responsive, and
/// recovers by itself; everything a NAS retransmits ends up recorded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_packets_unanswered_and_recovers() {
    let h = Harness::start_with(
        Backend::Sqlite,
        "[writer]\nmax_batch = 16\nqueue_capacity = 64\n",
    )
    .await;
    let (_, before) = h.http_get("/metrics").await;
    let t0 = now() - 100;
    let packets: Vec<Vec<u8>> = (0..1500)
        .map(|i| {
            Acct::start(&format!("o{i}"), &format!("{i}"))
                .at(t0)
                .encode((i % 256) as u8, SECRET)
        })
        .collect();
    // The store is stuck: nothing can be committed, so nothing may be answered.
    let lock = WriteLock::take(&h.db).await;
    for p in &packets {
        h.client
            .socket
            .send_to(p, h.server.radius_addr)
            .await
            .unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        h.client.socket.recv_from(&mut buf),
    )
    .await;
    assert!(
        early.is_err(),
        "an answer was sent while nothing could be committed"
    );
    // The API answers while ingest is saturated.
    let started = std::time::Instant::now();
    let (code, v) = crate::harness::api_json(
        &h,
        "/api/sessions/count",
        Some(&crate::harness::admin_token()),
    )
    .await;
    assert_eq!((code, v["count"].as_i64()), (200, Some(0)));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "API blocked by ingest"
    );
    let (_, during) = h.http_get("/metrics").await;
    let shed = metric(
        &during,
        "radacctd_packets_dropped_total{reason=\"queue_full\"}",
    ) - metric(
        &before,
        "radacctd_packets_dropped_total{reason=\"queue_full\"}",
    );
    assert!(
        shed >= 1000.0,
        "only {shed} packets shed with a queue of 64"
    );
    lock.release().await;
    // Like NASes, retransmit until answered: every packet gets in eventually.
    let client = &h.client;
    let mut missing: Vec<&Vec<u8>> = packets.iter().collect();
    for _round in 0..30 {
        if missing.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for chunk in missing.chunks(50) {
            for p in chunk {
                client
                    .socket
                    .send_to(p, h.server.radius_addr)
                    .await
                    .unwrap();
            }
            for p in chunk {
                if client
                    .recv_for(p, Duration::from_millis(300))
                    .await
                    .is_none()
                {
                    still.push(*p);
                }
            }
        }
        missing = still;
    }
    assert!(
        missing.is_empty(),
        "{} packets never answered after the overload",
        missing.len()
    );
    assert_eq!(h.scalar("SELECT COUNT(*) FROM radacct").await, 1500);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events").await,
        1500,
        "each applied once"
    );
    h.server.stop().await;
}

/// Every connection the SQLite pool may hold (the harness's max_connections = 4), taken
/// at once so that each is a different connection; they go back to the pool on drop.
async fn every_pooled_connection(h: &Harness) -> Vec<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
    let radacctd::sessions::Store::Sqlite(s) = h.store() else {
        unreachable!("SQLite only")
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(s.pool().acquire().await.unwrap());
    }
    held
}

/// SQLite rolls a transaction back by itself when the disk is full; no connection may stay
/// convinced it is still in one (sqlx's ROLLBACK then failed and every later BEGIN on it
/// failed too, so a writer on it would retry forever and the NAS never be answered again,
/// even after space is freed). `PRAGMA max_page_count` at the current size on the writer's
/// own connection and every pooled one makes SQLite return a real SQLITE_FULL ("database or
/// disk is full"); raising it again stands for the operator freeing space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_holds_packets_then_recovers_without_loss() {
    let h = Harness::start(Backend::Sqlite).await;
    // Sets the limit on the writer's own connection, which commits the batches, and on
    // every connection the pool may hold.
    async fn limit_pages(h: &Harness, limit: Option<i64>) {
        let radacctd::sessions::Store::Sqlite(s) = h.store() else {
            unreachable!("SQLite only")
        };
        s.on_writer(move |c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.pragma_update(None, "max_page_count", limit.unwrap_or(pages))
        })
        .await
        .expect("a file database has a writer connection")
        .unwrap();
        for mut c in every_pooled_connection(h).await {
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            let max = limit.unwrap_or(pages);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA max_page_count = {max}"
            )))
            .execute(&mut *c)
            .await
            .unwrap();
        }
    }
    limit_pages(&h, None).await;
    let (_, before) = h.http_get("/metrics").await;
    let key = "radacctd_store_errors_total{kind=\"transient\"}";

    // Enough new rows (each with its history event and index entries) to need new pages.
    let t0 = now() - 100;
    let packets: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            Acct::start(
                &format!("full-{i:02}-{}", "x".repeat(200)),
                &format!("f{i}"),
            )
            .at(t0)
            .encode(i as u8, SECRET)
        })
        .collect();
    for p in &packets {
        h.client
            .socket
            .send_to(p, h.server.radius_addr)
            .await
            .unwrap();
    }
    let full = eventually(Duration::from_secs(10), || async {
        let (_, now) = h.http_get("/metrics").await;
        metric(&now, key) > metric(&before, key)
    })
    .await;
    assert!(
        full,
        "the disk-full error was never hit (the test tests nothing)"
    );
    // The first packets may have been committed before the pages ran out; a packet whose
    // row is not in the database must not be answered.
    let stored: Vec<String> = h.rows().await.into_iter().map(|r| r.username).collect();
    let held = (0..packets.len())
        .find(|i| {
            !stored
                .iter()
                .any(|u| u.starts_with(&format!("full-{i:02}-")))
        })
        .expect("every record fitted: the disk never filled");
    let answered = h
        .client
        .recv_for(&packets[held], Duration::from_millis(500))
        .await;
    assert!(
        answered.is_none(),
        "packet {held} answered although it was not committed"
    );

    // Space is freed.
    limit_pages(&h, Some(1_073_741_823)).await;
    for p in &packets {
        // The NAS retransmits each packet until it is answered.
        assert!(
            h.client
                .exchange(p, 15, Duration::from_secs(1))
                .await
                .is_some(),
            "no answer after space was freed: the writer did not recover from SQLITE_FULL"
        );
    }
    assert_eq!(h.rows().await.len(), 40);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events").await,
        40,
        "applied exactly once"
    );
    h.server.stop().await;
}

/// The state a disk-full COMMIT leaves behind (seen on a full tmpfs): SQLite has rolled the
/// transaction back itself, sqlx's own ROLLBACK on drop then fails, and the connection's
/// transaction depth stays at 1, so every later BEGIN on it fails. Here every pooled
/// connection is put in that state the same way (a ROLLBACK behind sqlx's back); the pool
/// must replace them rather than hand them to the writer forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connections_left_in_a_failed_transaction_are_replaced() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut held = every_pooled_connection(&h).await;
    for c in &mut held {
        let mut tx = sqlx::Connection::begin(&mut **c).await.unwrap();
        sqlx::raw_sql("ROLLBACK").execute(&mut *tx).await.unwrap();
        drop(tx);
        // The failed ROLLBACK has run by the time the connection answers again.
        sqlx::query("SELECT 1").execute(&mut **c).await.unwrap();
        assert!(
            sqlx::Connection::is_in_transaction(&**c),
            "setup: the connection should believe it is still in a transaction"
        );
    }
    drop(held);

    let pkt = Acct::start("after-full", "af1")
        .at(now() - 5)
        .encode(7, SECRET);
    assert!(
        h.client
            .exchange(&pkt, 5, Duration::from_secs(1))
            .await
            .is_some(),
        "no answer: the writer kept getting a connection stuck in a transaction"
    );
    assert_eq!(h.rows().await.len(), 1);
    h.server.stop().await;
}
