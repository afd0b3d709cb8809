//! `/metrics` after real traffic: the counters move by exactly the right amounts. Its own
//! test binary, because the metrics registry is per process and other tests would add to
//! the same counters.

#[path = "integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use harness::{Acct, Backend, Harness, RadClient, admin_token, now, oneshot};

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_traffic_sent() {
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
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_also_be_served_on_their_own_listener() {
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
