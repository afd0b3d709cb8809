//! Accounting semantics (DESIGN.md §3) through the real UDP listener, on both backends.

use std::time::Duration;

use radacctd::radius::attr;

use crate::both_backends;
use crate::harness::{Acct, Backend, Harness, Row, now};

both_backends!(
    full_pppoe_session_is_recorded_like_freeradius,
    retransmitted_stop_is_recorded_once,
    counters_never_rewind_and_stop_without_counters_keeps_them,
    interim_without_start_opens_a_row,
    a_late_start_and_a_late_interim_are_kept_in_the_history,
    stop_without_start_inserts_a_closed_row,
    repeated_start_and_stop_change_nothing,
    session_id_reuse_after_reboot_gets_a_new_row,
    session_id_reuse_within_the_tolerance_of_a_closed_session_is_not_lost,
    newer_session_on_same_key_closes_the_open_row_as_lost_service,
    accounting_on_closes_every_session_of_that_nas,
    accounting_off_closes_every_session_of_that_nas_at_its_event_time,
    dual_stack_listener_keys_ipv4_nases_by_their_ipv4_address,
    event_timestamp_outside_skew_falls_back_to_arrival_time,
    subscriber_online_flag_follows_open_sessions,
    late_packets_of_an_older_session_leave_the_open_one_alone,
);

async fn full_pppoe_session_is_recorded_like_freeradius(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 250;
    let s = |a: Acct| a.port(15_728_644).framed_ip([10, 10, 10, 251]);
    h.client
        .send(&s(Acct::start("bob", "81000004")).at(t0))
        .await;
    assert_eq!(h.server.index.len(), 1, "open session indexed");
    h.client
        .send(
            &s(Acct::interim("bob", "81000004"))
                .at(t0 + 60)
                .time(60)
                .octets(1000, 2000),
        )
        .await;
    // 5 GiB + 10 in: Gigawords must be joined.
    let big_in = (5u64 << 32) + 10;
    h.client
        .send(
            &s(Acct::interim("bob", "81000004"))
                .at(t0 + 120)
                .time(120)
                .octets(big_in, 3000),
        )
        .await;
    h.client
        .send(
            &s(Acct::stop("bob", "81000004"))
                .at(t0 + 130)
                .time(130)
                .octets(big_in + 5, 3500)
                .cause(1),
        )
        .await;

    let rows = h.rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    // The value FreeRADIUS computes for these attributes (key.rs has the derivation).
    let expected_key = radacctd::sessions::SessionKey::freeradius(
        b"bob",
        b"81000004",
        "127.0.0.1",
        b"MikroTik",
        b"bridge1",
        Some(15_728_644),
    );
    assert_eq!(r.acctuniqueid, expected_key.to_hex());
    assert_eq!(r.username, "bob");
    assert_eq!(r.nasipaddress, "127.0.0.1");
    assert_eq!(r.start, Some(i64::from(t0)));
    assert_eq!(r.update, Some(i64::from(t0 + 130)));
    assert_eq!(r.stop, Some(i64::from(t0 + 130)));
    assert_eq!(r.session_time, Some(130));
    assert_eq!(r.input, Some((big_in + 5) as i64));
    assert_eq!(r.output, Some(3500));
    assert_eq!(r.cause.as_deref(), Some("User-Request"));
    assert_eq!(r.nasporttype.as_deref(), Some("Ethernet"));
    assert_eq!(r.servicetype.as_deref(), Some("Framed-User"));
    assert_eq!(r.framedipaddress.as_deref(), Some("10.10.10.251"));
    assert_eq!(r.callingstationid.as_deref(), Some("F8:B4:6A:C1:71:78"));
    assert!(h.server.index.is_empty(), "closed session left the index");

    let events = h.store().events_for(r.radacctid).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["Start", "Interim-Update", "Interim-Update", "Stop"]);
    assert_eq!(events[1].input_octets, 1000);
    assert_eq!(events[2].input_octets, big_in as i64);
    assert_eq!(events[3].time, i64::from(t0 + 130));
    h.server.stop().await;
}

async fn retransmitted_stop_is_recorded_once(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    h.client.send(&Acct::start("ann", "1").at(t0)).await;
    let stop = Acct::stop("ann", "1")
        .at(t0 + 50)
        .time(50)
        .octets(10, 20)
        .cause(1);
    let pkt = stop.encode(77, &h.client.secret);
    let first = h
        .client
        .exchange(&pkt, 1, Duration::from_secs(3))
        .await
        .expect("answer");
    // The same datagram again (a retransmission): same answer, nothing applied twice.
    let second = h
        .client
        .exchange(&pkt, 1, Duration::from_secs(3))
        .await
        .expect("answer again");
    assert_eq!(first, second);
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1);
    let events = h.store().events_for(rows[0].radacctid).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events").await,
        2,
        "retransmission must not add history"
    );
    h.server.stop().await;
}

async fn counters_never_rewind_and_stop_without_counters_keeps_them(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    h.client.send(&Acct::start("cat", "2").at(t0)).await;
    h.client
        .send(
            &Acct::interim("cat", "2")
                .at(t0 + 100)
                .time(100)
                .octets(5000, 6000),
        )
        .await;
    // An older interim arriving late.
    h.client
        .send(
            &Acct::interim("cat", "2")
                .at(t0 + 50)
                .time(50)
                .octets(100, 200),
        )
        .await;
    let r = &h.rows().await[0];
    assert_eq!(
        (r.input, r.output, r.session_time),
        (Some(5000), Some(6000), Some(100))
    );
    assert_eq!(
        r.update,
        Some(i64::from(t0 + 100)),
        "update time does not go back"
    );
    // Stop without counters or session time.
    h.client
        .send(&Acct::stop("cat", "2").at(t0 + 150).cause(2))
        .await;
    let r = &h.rows().await[0];
    assert_eq!((r.input, r.output), (Some(5000), Some(6000)));
    assert_eq!(r.stop, Some(i64::from(t0 + 150)));
    assert_eq!(r.cause.as_deref(), Some("Lost-Carrier"));
    h.server.stop().await;
}

async fn interim_without_start_opens_a_row(b: Backend) {
    let h = Harness::start(b).await;
    let t = now() - 10;
    h.client
        .send(&Acct::interim("dan", "3").at(t).time(600).octets(1, 2))
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].start, Some(i64::from(t) - 600));
    assert_eq!(rows[0].stop, None);
    assert_eq!(h.server.index.len(), 1);
    // The next interim matches the same row.
    h.client
        .send(&Acct::interim("dan", "3").at(t + 60).time(660).octets(3, 4))
        .await;
    assert_eq!(h.rows().await.len(), 1);
    h.server.stop().await;
}

/// Every Start / Interim-Update / Stop of a session is an event row (DESIGN.md §3), also when
/// it arrives out of order: a Start after the Interim that opened the row brings its
/// Connect-Info, and an older Interim rewinds nothing but is still a point of the history.
/// An exact repeat adds nothing.
async fn a_late_start_and_a_late_interim_are_kept_in_the_history(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 250;
    h.client
        .send(
            &Acct::interim("late", "91")
                .at(t0 + 120)
                .time(120)
                .octets(1200, 120),
        )
        .await;
    h.client
        .send(
            &Acct::start("late", "91")
                .at(t0)
                .with(attr::CONNECT_INFO, b"1Gbps".to_vec()),
        )
        .await;
    h.client
        .send(
            &Acct::interim("late", "91")
                .at(t0 + 60)
                .time(60)
                .octets(600, 60),
        )
        .await;
    // The same Start again (a NAS repeat outside the duplicate window): nothing new.
    h.client
        .send(
            &Acct::start("late", "91")
                .at(t0)
                .with(attr::CONNECT_INFO, b"1Gbps".to_vec()),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].start, Some(i64::from(t0)));
    assert_eq!(
        (rows[0].input, rows[0].session_time),
        (Some(1200), Some(120))
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct WHERE connectinfo_start = '1Gbps'")
            .await,
        1,
        "the late Start's Connect-Info is kept"
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct_events").await,
        3,
        "Interim, Start, older Interim"
    );
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM radacct_events WHERE eventtype = 'Start' \
             AND acctinputoctets = 0 AND acctsessiontime = 0"
        )
        .await,
        1
    );
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM radacct_events WHERE eventtype = 'Interim-Update' \
             AND acctinputoctets = 600"
        )
        .await,
        1,
        "the older Interim is in the history with its own counters"
    );
    h.server.stop().await;
}

async fn stop_without_start_inserts_a_closed_row(b: Backend) {
    let h = Harness::start(b).await;
    let t = now() - 10;
    h.client
        .send(&Acct::stop("eve", "4").at(t).time(90).octets(7, 8).cause(1))
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].start, Some(i64::from(t) - 90));
    assert_eq!(rows[0].stop, Some(i64::from(t)));
    assert_eq!((rows[0].input, rows[0].output), (Some(7), Some(8)));
    assert!(h.server.index.is_empty());
    h.server.stop().await;
}

async fn repeated_start_and_stop_change_nothing(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    h.client.send(&Acct::start("fay", "5").at(t0)).await;
    // A Start sent again by the NAS (new Identifier, so not a retransmission).
    h.client.send(&Acct::start("fay", "5").at(t0 + 2)).await;
    assert_eq!(h.rows().await.len(), 1);
    h.client
        .send(
            &Acct::stop("fay", "5")
                .at(t0 + 100)
                .time(100)
                .octets(1, 1)
                .cause(1),
        )
        .await;
    let before = h.rows().await;
    h.client
        .send(
            &Acct::stop("fay", "5")
                .at(t0 + 110)
                .time(110)
                .octets(9, 9)
                .cause(2),
        )
        .await;
    h.client
        .send(
            &Acct::interim("fay", "5")
                .at(t0 + 105)
                .time(105)
                .octets(5, 5),
        )
        .await;
    assert_eq!(h.rows().await, before, "a row the NAS closed is final");
    let events = h.store().events_for(before[0].radacctid).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    h.server.stop().await;
}

/// A session of `user` on key 81000001 from `t0` that lasted `lasted` seconds, then — the
/// NAS rebooted — a Start reusing the key at `restart`: the closed row stays untouched and
/// the new session gets its own open row with a derived `acctuniqueid`. Returns the closed
/// rows as they were before the new Start.
async fn reuse_key_after(h: &Harness, user: &str, t0: u32, lasted: u32, restart: u32) -> Vec<Row> {
    h.client.send(&Acct::start(user, "81000001").at(t0)).await;
    h.client
        .send(
            &Acct::stop(user, "81000001")
                .at(t0 + lasted)
                .time(lasted)
                .cause(1),
        )
        .await;
    let closed = h.rows().await;
    h.client
        .send(&Acct::start(user, "81000001").at(restart))
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0], closed[0], "the closed row is untouched");
    assert_ne!(rows[1].acctuniqueid, rows[0].acctuniqueid);
    assert_eq!(rows[1].acctuniqueid.len(), 32);
    assert_eq!(rows[1].start, Some(i64::from(restart)));
    assert_eq!(rows[1].stop, None);
    closed
}

async fn session_id_reuse_after_reboot_gets_a_new_row(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 280;
    let closed = reuse_key_after(&h, "gus", t0, 30, t0 + 200).await;
    // Its Stop finds the new row, not the old one.
    h.client
        .send(&Acct::stop("gus", "81000001").at(t0 + 260).time(60).cause(1))
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], closed[0]);
    assert_eq!(rows[1].stop, Some(i64::from(t0 + 260)));
    // The NAS sends that Stop again (it missed the answer): the row is closed, so out of
    // the index, and is found in the database by its shared key (`sessionkey`; its
    // `acctuniqueid` is the derived one) — acknowledged, nothing changes, no third row.
    h.client
        .send(&Acct::stop("gus", "81000001").at(t0 + 260).time(60).cause(1))
        .await;
    assert_eq!(h.rows().await, rows);
    h.server.stop().await;
}

/// A short session, then a NAS reboot that reuses the key, all within the 60 s tolerance:
/// the new session starts after the closed one stopped, so it cannot be that session, and
/// it gets its own row rather than being acknowledged into the closed row and lost.
async fn session_id_reuse_within_the_tolerance_of_a_closed_session_is_not_lost(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 280;
    // With the NAS's Event-Timestamp, the new Start is known to come after the Stop.
    let closed = reuse_key_after(&h, "ivy", t0, 20, t0 + 45).await;
    h.client
        .send(
            &Acct::interim("ivy", "81000001")
                .at(t0 + 105)
                .time(60)
                .octets(5000, 500),
        )
        .await;
    h.client
        .send(
            &Acct::stop("ivy", "81000001")
                .at(t0 + 165)
                .time(120)
                .octets(9000, 900)
                .cause(1),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0], closed[0]);
    assert_eq!(rows[1].stop, Some(i64::from(t0 + 165)));
    assert_eq!(
        (rows[1].input, rows[1].session_time),
        (Some(9000), Some(120))
    );

    // Without Event-Timestamp a Start's time is its arrival, and a late retransmission of
    // the closed session's Start would look the same: that Start is left to the closed
    // row, and the new session's first Interim (its session time says when it began)
    // opens the new row.
    let t1 = now() - 40;
    h.client.send(&Acct::start("ivy", "81000002").at(t1)).await;
    h.client
        .send(&Acct::stop("ivy", "81000002").at(t1 + 10).time(10).cause(1))
        .await;
    // Arrives about 40 s after the first Start: within the tolerance, after the Stop.
    h.client
        .send(&Acct::start("ivy", "81000002").without(radacctd::radius::attr::EVENT_TIMESTAMP))
        .await;
    assert_eq!(h.rows().await.len(), 3, "the Start alone opens nothing");
    h.client
        .send(
            &Acct::interim("ivy", "81000002")
                .without(radacctd::radius::attr::EVENT_TIMESTAMP)
                .time(now() - (t1 + 20))
                .octets(77, 7),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let start = rows[3].start.unwrap();
    assert!(
        (i64::from(t1 + 19)..=i64::from(t1 + 21)).contains(&start),
        "{rows:#?}"
    );
    assert_eq!(rows[3].input, Some(77));
    assert_eq!(
        rows[2].stop,
        Some(i64::from(t1 + 10)),
        "closed row untouched"
    );
    h.server.stop().await;
}

async fn newer_session_on_same_key_closes_the_open_row_as_lost_service(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 270;
    h.client.send(&Acct::start("hal", "7").at(t0)).await;
    h.client
        .send(
            &Acct::interim("hal", "7")
                .at(t0 + 60)
                .time(60)
                .octets(11, 22),
        )
        .await;
    // The Stop was lost; the NAS rebooted and a new session reuses the key.
    h.client.send(&Acct::start("hal", "7").at(t0 + 250)).await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].cause.as_deref(), Some("Lost-Service"));
    assert_eq!(
        rows[0].stop,
        Some(i64::from(t0 + 60)),
        "closed at its last update"
    );
    assert_eq!((rows[0].input, rows[0].output), (Some(11), Some(22)));
    assert_eq!(rows[1].stop, None);
    assert_eq!(h.server.index.len(), 1);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM radacct WHERE acctstoptime IS NULL")
            .await,
        1,
        "at most one open row per key"
    );
    h.server.stop().await;
}

async fn accounting_off_closes_every_session_of_that_nas_at_its_event_time(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    for (u, sid) in [("off1", "1"), ("off2", "2")] {
        h.client.send(&Acct::start(u, sid).at(t0)).await;
    }
    h.client
        .send(
            &Acct::start("elsewhere", "3")
                .at(t0)
                .without(attr::NAS_IP_ADDRESS)
                .with(attr::NAS_IP_ADDRESS, vec![10, 9, 9, 8]),
        )
        .await;
    // Acct-Status-Type = Accounting-Off (8): the NAS is shutting down.
    let off = Acct {
        attrs: vec![
            (attr::ACCT_STATUS_TYPE, 8u32.to_be_bytes().to_vec()),
            (attr::NAS_IP_ADDRESS, vec![127, 0, 0, 1]),
            (attr::EVENT_TIMESTAMP, (t0 + 150).to_be_bytes().to_vec()),
        ],
    };
    let reply = h.client.send(&off).await;
    assert_eq!(reply[0], 5, "Accounting-Response");
    let rows = h.rows().await;
    assert_eq!(rows.len(), 3);
    for r in rows.iter().filter(|r| r.username != "elsewhere") {
        assert_eq!(r.cause.as_deref(), Some("NAS-Reboot"), "{r:?}");
        assert_eq!(r.stop, Some(i64::from(t0 + 150)));
        assert_eq!(r.session_time, Some(150));
    }
    let other = rows.iter().find(|r| r.username == "elsewhere").unwrap();
    assert_eq!(other.stop, None, "another NAS's session stays open");
    assert_eq!(h.server.index.len(), 1);
    h.server.stop().await;
}

/// A listener bound to `[::]` receives IPv4 NASes as `::ffff:a.b.c.d`. Without
/// NAS-IP-Address the source address names the NAS in `nasipaddress` and in the session
/// key, and it must be the IPv4 form FreeRADIUS writes.
async fn dual_stack_listener_keys_ipv4_nases_by_their_ipv4_address(b: Backend) {
    let db = crate::harness::TestDb::new(b).await;
    let mut cfg = crate::harness::config(&db, "");
    cfg.radius.listen = "[::]:0".parse().unwrap();
    let server = radacctd::app::Server::start(cfg).await.unwrap();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], server.radius_addr.port()));
    let client = crate::harness::RadClient::new(to, crate::harness::SECRET).await;
    client
        .send(
            &Acct::start("v4nas", "46")
                .at(now() - 5)
                .without(attr::NAS_IP_ADDRESS),
        )
        .await;
    let rows = crate::harness::rows(&server.store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].nasipaddress, "127.0.0.1", "{rows:?}");
    let key = radacctd::sessions::SessionKey::freeradius(
        b"v4nas",
        b"46",
        "127.0.0.1",
        b"MikroTik",
        b"bridge1",
        None,
    );
    assert_eq!(rows[0].acctuniqueid, key.to_hex());
    server.stop().await;
}

async fn accounting_on_closes_every_session_of_that_nas(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    for (u, sid) in [("a1", "1"), ("a2", "2"), ("a3", "3")] {
        h.client.send(&Acct::start(u, sid).at(t0)).await;
    }
    // A session of another NAS (different NAS-IP-Address) must stay open.
    h.client
        .send(
            &Acct::start("other", "9")
                .at(t0)
                .without(attr::NAS_IP_ADDRESS)
                .with(attr::NAS_IP_ADDRESS, vec![10, 9, 9, 9]),
        )
        .await;
    assert_eq!(h.server.index.len(), 4);
    let on = Acct {
        attrs: vec![
            (attr::ACCT_STATUS_TYPE, 7u32.to_be_bytes().to_vec()),
            (attr::NAS_IP_ADDRESS, vec![127, 0, 0, 1]),
            (attr::EVENT_TIMESTAMP, (t0 + 100).to_be_bytes().to_vec()),
        ],
    };
    h.client.send(&on).await;
    let rows = h.rows().await;
    for r in rows.iter().filter(|r| r.username != "other") {
        assert_eq!(r.cause.as_deref(), Some("NAS-Reboot"), "{r:?}");
        assert_eq!(r.stop, Some(i64::from(t0 + 100)));
        assert_eq!(r.session_time, Some(100));
    }
    let other = rows.iter().find(|r| r.username == "other").unwrap();
    assert_eq!(other.stop, None);
    assert_eq!(h.server.index.len(), 1);
    // The NAS's own Stop arriving later completes the row and keeps it closed: its stop
    // time and session time are the NAS's (90 s, less than radacctd's NAS-Reboot estimate
    // of 100 s), counters never go backwards, the update time is the stop time.
    h.client
        .send(
            &Acct::stop("a1", "1")
                .at(t0 + 90)
                .time(90)
                .octets(50, 60)
                .cause(1),
        )
        .await;
    let a1 = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.username == "a1")
        .unwrap();
    assert_eq!(a1.stop, Some(i64::from(t0 + 90)));
    assert_eq!(a1.update, a1.stop);
    assert_eq!(
        (a1.input, a1.output, a1.session_time),
        (Some(50), Some(60), Some(90))
    );
    assert_eq!(a1.cause.as_deref(), Some("NAS-Reboot"));
    h.server.stop().await;
}

async fn event_timestamp_outside_skew_falls_back_to_arrival_time(b: Backend) {
    let h = Harness::start(b).await;
    // A NAS whose clock says 2001.
    let before = i64::from(now());
    h.client
        .send(
            &Acct::start("ivy", "8")
                .at(1_000_000_000)
                .without(attr::ACCT_DELAY_TIME)
                .u32(attr::ACCT_DELAY_TIME, 5),
        )
        .await;
    let after = i64::from(now());
    let r = &h.rows().await[0];
    let start = r.start.unwrap();
    assert!(
        start >= before - 5 - 1 && start <= after - 5 + 1,
        "start {start} not arrival − delay"
    );
    let (_, metrics) = h.http_get("/metrics").await;
    // Counted under the NAS's label (harness: [[nas]] name = "bng1").
    assert!(
        metrics.contains("radacctd_nas_clock_skew_total{nas=\"bng1\"}"),
        "{metrics}"
    );
    h.server.stop().await;
}

async fn subscriber_online_flag_follows_open_sessions(b: Backend) {
    let h = Harness::start(b).await;
    h.store().upsert_subscriber("jon", None).await.unwrap();
    assert_eq!(
        h.store().subscriber_online("jon").await.unwrap(),
        Some(false)
    );
    let t0 = now() - 200;
    h.client.send(&Acct::start("jon", "1").at(t0)).await;
    h.client.send(&Acct::start("jon", "2").at(t0)).await;
    assert_eq!(
        h.store().subscriber_online("jon").await.unwrap(),
        Some(true)
    );
    h.client
        .send(&Acct::stop("jon", "1").at(t0 + 10).time(10).cause(1))
        .await;
    assert_eq!(
        h.store().subscriber_online("jon").await.unwrap(),
        Some(true),
        "one session still open"
    );
    h.client
        .send(&Acct::stop("jon", "2").at(t0 + 20).time(20).cause(1))
        .await;
    assert_eq!(
        h.store().subscriber_online("jon").await.unwrap(),
        Some(false)
    );
    h.server.stop().await;
}

async fn late_packets_of_an_older_session_leave_the_open_one_alone(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 290;
    h.client.send(&Acct::start("kim", "5").at(t0 + 200)).await;
    // A Stop for an earlier session of the same key, delivered late.
    h.client
        .send(
            &Acct::stop("kim", "5")
                .at(t0 + 100)
                .time(100)
                .octets(1, 2)
                .cause(1),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let open: Vec<_> = rows.iter().filter(|r| r.stop.is_none()).collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].start, Some(i64::from(t0 + 200)));
    assert_eq!(h.server.index.len(), 1);
    h.server.stop().await;
}
