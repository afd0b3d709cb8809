//! `/metrics` after real traffic: the counters move by exactly the right amounts. Its own
//! test binary, because the metrics registry is per process and other tests would add to
//! the same counters.

#[path = "integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use harness::{Acct, Backend, Harness, RadClient, WriteLock, admin_token, now, oneshot};

/// The registry is process-wide and a scrape sets gauges from its own server: the tests
/// that start a server take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DAY: i64 = 86_400;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_traffic_sent() {
    let _turn = SERIAL.lock().await;
    let h = Harness::start(Backend::Sqlite).await;
    let (_, before) = h.http_get("/metrics").await;
    let t0 = now() - 100;
    h.client.send(&Acct::start("m1", "1").at(t0)).await;
    h.client.send(&Acct::start("m2", "2").at(t0)).await;
    h.client.send(&Acct::start("m3", "3").at(t0)).await;
    h.client
        .send(&Acct::interim("m1", "1").at(t0 + 10).time(10))
        .await;
    h.client
        .send(&Acct::interim("m2", "2").at(t0 + 10).time(10))
        .await;
    let stop = Acct::stop("m3", "3")
        .at(t0 + 20)
        .time(20)
        .cause(1)
        .encode(200, harness::SECRET);
    assert!(
        h.client
            .exchange(&stop, 1, Duration::from_secs(2))
            .await
            .is_some()
    );
    // The same Stop again: a retransmission, answered from the duplicate cache.
    assert!(
        h.client
            .exchange(&stop, 1, Duration::from_secs(2))
            .await
            .is_some()
    );
    let wrong = RadClient::new(h.server.radius_addr, "wrong").await;
    let bad = Acct::start("m4", "4").at(t0).encode(1, "wrong");
    assert!(wrong.silent(&bad, Duration::from_millis(300)).await);
    let (code, _, _) = oneshot(
        &h,
        "GET",
        "/api/sessions/424242",
        Some(&admin_token()),
        None,
    )
    .await;
    assert_eq!(code, 404);

    let (status, after) = h.http_get("/metrics").await;
    assert_eq!(status, 200);
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        delta("radacctd_packets_received_total{type=\"Start\"}"),
        3.0,
        "{after}"
    );
    assert_eq!(
        delta("radacctd_packets_received_total{type=\"Interim-Update\"}"),
        2.0
    );
    assert_eq!(delta("radacctd_packets_received_total{type=\"Stop\"}"), 1.0);
    assert_eq!(
        delta("radacctd_packets_dropped_total{reason=\"bad_authenticator\"}"),
        1.0
    );
    assert_eq!(delta("radacctd_duplicates_total{action=\"resent\"}"), 1.0);
    assert_eq!(delta("radacctd_responses_sent_total"), 7.0);
    assert!(delta("radacctd_commit_batch_size_count") >= 1.0);
    assert_eq!(
        delta("radacctd_commit_batch_size_sum"),
        6.0,
        "six records committed"
    );
    assert_eq!(value(&after, "radacctd_open_sessions"), 2.0);
    assert_eq!(
        value(&after, "radacctd_open_sessions_by_nas{nas=\"bng1\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta("radacctd_api_requests_total{route=\"/api/sessions/{id}\",status=\"404\"}"),
        1.0,
        "{after}"
    );
    // One commit-latency observation per commit, and the API latency of that one request,
    // in buckets that reach past a disconnect's CoA timeout.
    assert_eq!(
        delta("radacctd_commit_duration_seconds_count"),
        delta("radacctd_commit_batch_size_count"),
        "{after}"
    );
    assert!(delta("radacctd_commit_duration_seconds_count") >= 1.0);
    assert_eq!(
        delta("radacctd_api_request_duration_seconds_count{route=\"/api/sessions/{id}\"}"),
        1.0,
        "{after}"
    );
    assert!(
        after.contains(
            "radacctd_api_request_duration_seconds_bucket{route=\"/api/sessions/{id}\",le=\"30\"}"
        ),
        "{after}"
    );
    assert_eq!(value(&after, "radacctd_writer_queue_depth"), 0.0);
    assert!(after.contains("radacctd_writer_queue_depth 0"), "{after}");
    // Labels come from closed sets: no username, session id or address in any series.
    for secret in ["m1", "m2", "m3", "424242", "127.0.0.1"] {
        assert!(
            !after
                .lines()
                .filter(|l| !l.starts_with('#'))
                .any(|l| l.contains(secret)),
            "{secret} appears in /metrics"
        );
    }

    // The jobs: the sweeper closes m1 and m2 (last update t0 + 10), the archiver then
    // moves all three closed sessions once they are 90 days old.
    let later = i64::from(now()) + 1800 + 60;
    let report = h.sweeper().run_once(later).await.unwrap();
    assert_eq!(report.closed, 2, "{report:?}");
    let archiver = radacctd::jobs::archiver::Archiver {
        store: h.store().clone(),
        at: (3, 0),
        after: Duration::from_secs(90 * DAY as u64),
        batch_size: 2,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let moved = archiver.run_once(later + 91 * DAY, &stop).await.unwrap();
    assert_eq!(moved, 3);
    let (_, jobs) = h.http_get("/metrics").await;
    let delta = |series: &str| value(&jobs, series) - value(&after, series);
    assert_eq!(delta("radacctd_sweeper_closed_total"), 2.0, "{jobs}");
    assert_eq!(delta("radacctd_archived_sessions_total"), 3.0, "{jobs}");
    assert_eq!(value(&jobs, "radacctd_open_sessions"), 0.0);
    assert_eq!(
        value(&jobs, "radacctd_open_sessions_by_nas{nas=\"bng1\"}"),
        0.0,
        "{jobs}"
    );
    h.server.stop().await;
}

/// A close the engine turns into nothing — an Interim-Update committed between the
/// sweeper's look and its close — is not counted as a sweeper close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_counts_only_the_sessions_it_closed() {
    let _turn = SERIAL.lock().await;
    let h = Harness::start(Backend::Sqlite).await;
    // Starts an hour old: reported late (Acct-Delay-Time), so within the allowed skew.
    let t0 = now() - 4000;
    for (user, sid) in [("ghost", "g"), ("alive", "a")] {
        let start = Acct::start(user, sid)
            .at(t0)
            .without(radacctd::radius::attr::ACCT_DELAY_TIME)
            .u32(radacctd::radius::attr::ACCT_DELAY_TIME, 4000);
        h.client.send(&start).await;
    }
    let (_, before) = h.http_get("/metrics").await;

    // The store is held: alive's Interim-Update waits in the writer, while the database
    // still shows both sessions stale; the sweeper's closes queue up behind the update.
    let lock = WriteLock::take(&h.db).await;
    let late = now() - 10;
    let interim = Acct::interim("alive", "a")
        .at(late)
        .time(late - t0)
        .encode(77, harness::SECRET);
    h.client
        .socket
        .send_to(&interim, h.server.radius_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sweeper = h.sweeper();
    let cutoff = i64::from(now()) - 1800;
    let sweep = tokio::spawn(async move { sweeper.sweep(cutoff).await });
    let closer = std::sync::Arc::clone(&h.server.api.closer);
    assert!(
        harness::eventually(Duration::from_secs(5), || async {
            closer.queued() == Some(2)
        })
        .await,
        "the sweeper's two closes never queued"
    );
    lock.release().await;
    let report = sweep.await.unwrap().unwrap();
    assert_eq!(report.closed, 1, "only ghost was closed: {report:?}");
    let rows = h.rows().await;
    let alive = rows.iter().find(|r| r.username == "alive").unwrap();
    assert_eq!(alive.stop, None, "the Interim-Update won: {alive:?}");
    let (_, after) = h.http_get("/metrics").await;
    assert_eq!(
        value(&after, "radacctd_sweeper_closed_total")
            - value(&before, "radacctd_sweeper_closed_total"),
        1.0,
        "{after}"
    );
    h.server.stop().await;
}

/// The per-NAS family shows exactly the NAS names configured now: a renamed NAS's old
/// series goes, and two NASes with one name are summed rather than overwriting each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_by_nas_follows_renames_and_sums_shared_names() {
    let _turn = SERIAL.lock().await;
    let h = Harness::start(Backend::Sqlite).await;
    let t0 = now() - 100;
    h.client.send(&Acct::start("n1", "1").at(t0)).await;
    h.client.send(&Acct::start("n2", "2").at(t0)).await;
    let (_, first) = h.http_get("/metrics").await;
    assert_eq!(
        value(&first, "radacctd_open_sessions_by_nas{nas=\"bng1\"}"),
        2.0,
        "{first}"
    );
    let rows = h.store().nas_list().await.unwrap();
    let mut bng1 = rows
        .iter()
        .find(|r| r.config.name == "bng1")
        .unwrap()
        .config
        .clone();
    bng1.name = "edge".to_owned();
    h.store().nas_upsert(&bng1).await.unwrap();
    let mut other = bng1.clone();
    other.ip = "127.0.0.3".parse().unwrap();
    h.store().nas_upsert(&other).await.unwrap();

    let (_, text) = h.http_get("/metrics").await;
    let family: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("radacctd_open_sessions_by_nas"))
        .collect();
    assert_eq!(
        family,
        [
            "radacctd_open_sessions_by_nas{nas=\"edge\"} 2",
            "radacctd_open_sessions_by_nas{nas=\"unknown\"} 0",
        ],
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE radacctd_open_sessions_by_nas gauge")
            .count(),
        1
    );
    h.server.stop().await;
}

/// The Grafana dashboard queries only metrics that exist, and rates use
/// `$__rate_interval` (`$__interval` can be shorter than two scrapes).
#[test]
fn grafana_dashboard_uses_existing_metrics() {
    use radacctd::metrics as m;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let known = [
        m::PACKETS_RECEIVED,
        m::PACKETS_DROPPED,
        m::DUPLICATES,
        m::RESPONSES_SENT,
        m::RESPONSES_FAILED,
        m::COMMIT_BATCH_SIZE,
        m::COMMIT_SECONDS,
        m::WRITER_QUEUE_DEPTH,
        m::OPEN_SESSIONS,
        m::OPEN_SESSIONS_BY_NAS,
        m::STORE_ERRORS,
        m::CLOCK_SKEW,
        m::STATUS_SERVER,
        m::SWEEPER_CLOSED,
        m::ARCHIVED,
        m::DISCONNECTS,
        m::API_REQUESTS,
        m::API_SECONDS,
    ];
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        assert!(!expr.contains("$__interval"), "{expr}");
        for (i, _) in expr.match_indices("radacctd_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            assert!(known.contains(&family.as_str()), "{name} in {expr}");
            used.insert(family);
        }
    }
    assert!(
        used.contains(m::OPEN_SESSIONS_BY_NAS),
        "no panel for open sessions per NAS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_also_be_served_on_their_own_listener() {
    let _turn = SERIAL.lock().await;
    let db = harness::TestDb::new(Backend::Sqlite).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = harness::config(&db, "");
    config.http.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let server = radacctd::app::Server::start(config).await.unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = harness::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("radacctd_open_sessions"), "{body}");
    let (status, _) = harness::http_get(addr, "/api/sessions").await;
    assert_eq!(status, 404, "only /metrics on the metrics listener");
    server.stop().await;
}
