//! Two radacctd nodes on one PostgreSQL database (DESIGN.md §4), with a NAS that fails over
//! between them. A node's in-memory copy of a session can then be stale: the other node
//! closed the row meanwhile. Whatever the stale node does with it, the database keeps the
//! NAS's final record — no re-opened row, no rewound counters, no overwritten cause.

use radacctd::app::Server;

use crate::harness::{Acct, Backend, Harness, RadClient, SECRET, config, now, skip_postgres};

const USER: &str = "failover@example.lb";
const SID: &str = "8100ff01";
const USER_REQUEST: u32 = 1;

/// Node A (a harness on a fresh PostgreSQL database), node B (a second server on the same
/// database) and a client of node B.
async fn two_nodes() -> (Harness, Server, RadClient) {
    let a = Harness::start(Backend::Postgres).await;
    let b = Server::start(config(&a.db, "")).await.unwrap();
    let to_b = RadClient::new(b.radius_addr, SECRET).await;
    (a, b, to_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_node_cannot_reopen_or_rewind_a_row_the_other_node_closed() {
    if skip_postgres() {
        return;
    }
    let (a, b, to_b) = two_nodes().await;
    let t0 = now() - 200;
    a.store().upsert_subscriber(USER, None).await.unwrap();
    let online = || async {
        let sql =
            format!("SELECT COUNT(*) FROM subscribers WHERE username = '{USER}' AND is_online");
        a.scalar(&sql).await == 1
    };

    // Start reaches node A, which now holds the session open in memory.
    a.client.send(&Acct::start(USER, SID).at(t0).port(7)).await;
    let id = a.rows().await[0].radacctid;
    assert!(a.server.index.get_by_id(id).is_some());
    assert!(online().await);

    // The NAS fails over: its Stop, with the final counters, reaches node B, which finds
    // the open row in the database and closes it.
    to_b.send(
        &Acct::stop(USER, SID)
            .at(t0 + 100)
            .port(7)
            .time(100)
            .octets(5_000_000_000, 6_000)
            .cause(USER_REQUEST),
    )
    .await;
    let closed = a.rows().await[0].clone();
    assert_eq!(closed.stop, Some(i64::from(t0 + 100)));
    assert_eq!(closed.input, Some(5_000_000_000));
    assert!(
        !online().await,
        "node B's Stop closed the user's only session"
    );

    // A late Interim (older counters) reaches node A, whose copy still says "open".
    a.client
        .send(
            &Acct::interim(USER, SID)
                .at(t0 + 60)
                .port(7)
                .time(60)
                .octets(1_000, 1_000),
        )
        .await;
    let after = a.rows().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0], closed, "the NAS-closed row must not change");
    assert!(
        !online().await,
        "a skipped stale update does not bring the user back online"
    );

    // A new session of the same key on node A: A's stale copy would be closed as
    // Lost-Service at its last update, over the NAS's Stop. The database keeps the Stop.
    a.client
        .send(&Acct::start(USER, SID).at(t0 + 150).port(7))
        .await;
    let rows = a.rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let old = rows.iter().find(|r| r.radacctid == id).unwrap();
    assert_eq!(old, &closed, "NAS Stop kept: cause, stop time, counters");
    assert_eq!(old.cause.as_deref(), Some("User-Request"));
    let open: Vec<_> = rows.iter().filter(|r| r.stop.is_none()).collect();
    assert_eq!(open.len(), 1, "at most one open row per key: {rows:?}");
    assert_eq!(open[0].start, Some(i64::from(t0 + 150)));
    // The batch held A's skipped close of the stale copy and the new row: online again.
    assert!(online().await);

    b.stop().await;
}

/// Accounting-On reaching the node that never saw the sessions' Starts still closes them
/// all as NAS-Reboot: the open rows of that NAS are read from the database, not only from
/// the node's own index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_on_on_the_other_node_closes_every_session_of_the_nas() {
    if skip_postgres() {
        return;
    }
    let (a, b, to_b) = two_nodes().await;
    // Well inside the 300 s Event-Timestamp skew window, so a slow run cannot push the
    // Starts' times to their arrival (after the Accounting-On's event time).
    let t0 = now() - 200;
    for (u, sid) in [("r1@example.lb", "8200aa01"), ("r2@example.lb", "8200aa02")] {
        a.client.send(&Acct::start(u, sid).at(t0)).await;
    }
    assert_eq!(a.rows().await.len(), 2);
    assert_eq!(b.index.len(), 0, "node B never saw the Starts");

    let on = Acct {
        attrs: vec![
            (
                radacctd::radius::attr::ACCT_STATUS_TYPE,
                7u32.to_be_bytes().to_vec(),
            ),
            (radacctd::radius::attr::NAS_IP_ADDRESS, vec![127, 0, 0, 1]),
            (
                radacctd::radius::attr::EVENT_TIMESTAMP,
                (t0 + 100).to_be_bytes().to_vec(),
            ),
        ],
    };
    to_b.send(&on).await;
    let rows = a.rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r.cause.as_deref(), Some("NAS-Reboot"), "{r:?}");
        assert_eq!(r.stop, Some(i64::from(t0 + 100)), "{r:?}");
        assert_eq!(r.session_time, Some(100), "{r:?}");
    }
    b.stop().await;
}

/// The node that still holds a session another node closed drops it from its index at its
/// next sweep, so its live count is right again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_node_drops_the_session_from_its_index_at_the_next_sweep() {
    if skip_postgres() {
        return;
    }
    let (a, b, to_b) = two_nodes().await;
    let t0 = now() - 200;
    a.client.send(&Acct::start(USER, SID).at(t0).port(7)).await;
    to_b.send(
        &Acct::stop(USER, SID)
            .at(t0 + 100)
            .port(7)
            .time(100)
            .cause(USER_REQUEST),
    )
    .await;
    assert_eq!(a.server.index.len(), 1, "node A's copy is stale");
    let report = a.sweeper().run_once(i64::from(now())).await.unwrap();
    assert_eq!((report.closed, report.evicted), (0, 1), "{report:?}");
    assert_eq!(a.server.index.len(), 0);
    let rows = a.rows().await;
    assert_eq!(rows[0].cause.as_deref(), Some("User-Request"), "{rows:?}");
    b.stop().await;
}

/// Two nodes starting at the same moment on a fresh database: both come up and answer at
/// once, and their background EnsureIndexes take turns instead of deadlocking — in the
/// end every API index exists once and is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_starting_together_both_serve_and_build_the_indexes_once() {
    if skip_postgres() {
        return;
    }
    let db = crate::harness::TestDb::new(Backend::Postgres).await;
    let (a, b) = tokio::join!(
        Server::start(config(&db, "")),
        Server::start(config(&db, ""))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let t0 = now() - 10;
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let client = RadClient::new(node.radius_addr, SECRET).await;
        client
            .send(&Acct::start(&format!("u{i}"), &format!("s{i}")).at(t0))
            .await;
    }
    let indexes = "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                   WHERE c.relname LIKE 'radacct%' AND (c.relname LIKE '%sort%' \
                   OR c.relname LIKE '%user_start' OR c.relname LIKE '%nas_start')";
    let built = crate::harness::eventually(std::time::Duration::from_secs(30), || async {
        crate::harness::scalar(&a.store, &format!("{indexes} AND i.indisvalid")).await == 12
    })
    .await;
    assert!(built, "every API index built");
    assert_eq!(
        crate::harness::scalar(&a.store, indexes).await,
        12,
        "none left invalid"
    );
    assert_eq!(
        crate::harness::scalar(&a.store, "SELECT COUNT(*) FROM radacct").await,
        2
    );
    a.stop().await;
    b.stop().await;
}
