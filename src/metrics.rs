//! Every metric the server exports, defined once (names `radacctd_*`, labels from closed
//! sets only: never a username, session id or address), and the Prometheus recorder.
//!
//! Call sites use the small functions below rather than the `metrics` macros, so that a
//! name or label cannot be misspelt in one place.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const PACKETS_RECEIVED: &str = "radacctd_packets_received_total";
pub const PACKETS_DROPPED: &str = "radacctd_packets_dropped_total";
pub const DUPLICATES: &str = "radacctd_duplicates_total";
pub const RESPONSES_SENT: &str = "radacctd_responses_sent_total";
pub const RESPONSES_FAILED: &str = "radacctd_responses_failed_total";
pub const COMMIT_BATCH_SIZE: &str = "radacctd_commit_batch_size";
pub const COMMIT_SECONDS: &str = "radacctd_commit_duration_seconds";
pub const WRITER_QUEUE_DEPTH: &str = "radacctd_writer_queue_depth";
pub const OPEN_SESSIONS: &str = "radacctd_open_sessions";
pub const OPEN_SESSIONS_BY_NAS: &str = "radacctd_open_sessions_by_nas";
pub const STORE_ERRORS: &str = "radacctd_store_errors_total";
pub const CLOCK_SKEW: &str = "radacctd_nas_clock_skew_total";
pub const STATUS_SERVER: &str = "radacctd_status_server_total";
pub const SWEEPER_CLOSED: &str = "radacctd_sweeper_closed_total";
pub const ARCHIVED: &str = "radacctd_archived_sessions_total";
pub const DISCONNECTS: &str = "radacctd_disconnects_total";
pub const API_REQUESTS: &str = "radacctd_api_requests_total";
pub const API_SECONDS: &str = "radacctd_api_request_duration_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder once per process (tests start many servers in one
/// process) and return its handle for rendering `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(COMMIT_BATCH_SIZE.to_owned()),
                    &[
                        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
                        &[
                            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5,
                        ],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (an embedding program's); then
            // our handle renders nothing, which is visible at /metrics.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        PACKETS_RECEIVED,
        "RADIUS packets received, by packet type and Acct-Status-Type"
    );
    describe_counter!(PACKETS_DROPPED, "Packets dropped unanswered, by reason");
    describe_counter!(
        DUPLICATES,
        "Retransmissions recognised, by what was done (resent, dropped)"
    );
    describe_counter!(RESPONSES_SENT, "Accounting-Responses sent");
    describe_counter!(RESPONSES_FAILED, "Accounting-Responses the socket refused");
    describe_histogram!(COMMIT_BATCH_SIZE, "Records per committed transaction");
    describe_histogram!(COMMIT_SECONDS, "Time to apply and commit one batch");
    describe_gauge!(WRITER_QUEUE_DEPTH, "Records waiting for the writer");
    describe_gauge!(OPEN_SESSIONS, "Open sessions in the index");
    describe_gauge!(
        OPEN_SESSIONS_BY_NAS,
        "Open sessions per NAS short name (nas.shortname)"
    );
    describe_counter!(
        STORE_ERRORS,
        "Failed store transactions, by kind (transient, refused)"
    );
    describe_counter!(
        CLOCK_SKEW,
        "Packets whose Event-Timestamp was outside the allowed skew"
    );
    describe_counter!(STATUS_SERVER, "Status-Server requests answered");
    describe_counter!(
        DISCONNECTS,
        "Disconnect attempts, by outcome method (coa, api, unreachable) and what was tried"
    );
    describe_counter!(API_REQUESTS, "HTTP requests, by route template and status");
    describe_histogram!(API_SECONDS, "HTTP request latency, by route template");
}

pub fn received(kind: &'static str) {
    counter!(PACKETS_RECEIVED, "type" => kind).increment(1);
}

pub fn dropped(reason: &'static str) {
    counter!(PACKETS_DROPPED, "reason" => reason).increment(1);
}

pub fn duplicate(action: &'static str) {
    counter!(DUPLICATES, "action" => action).increment(1);
}

pub fn response_sent() {
    counter!(RESPONSES_SENT).increment(1);
}

pub fn response_send_failed() {
    counter!(RESPONSES_FAILED).increment(1);
}

pub fn commit(records: usize, took: Duration) {
    histogram!(COMMIT_BATCH_SIZE).record(records as f64);
    histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
}

pub fn writer_queue_depth(depth: usize) {
    gauge!(WRITER_QUEUE_DEPTH).set(depth as f64);
}

pub fn open_sessions(n: usize) {
    gauge!(OPEN_SESSIONS).set(n as f64);
}

pub fn store_error(kind: &'static str) {
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

pub fn clock_skew() {
    counter!(CLOCK_SKEW).increment(1);
}

pub fn status_server() {
    counter!(STATUS_SERVER).increment(1);
}

/// `route` is the matched route template (`/api/sessions/{id}`), never a raw path.
pub fn api_request(route: String, status: u16, took: Duration) {
    histogram!(API_SECONDS, "route" => route.clone()).record(took.as_secs_f64());
    counter!(API_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

/// `method`: the channel that gave the final answer (`coa`, `api`, or `none` when nothing
/// was sent); `result`: `success`, `failed`, or `already_closed`.
pub fn disconnect(method: &'static str, result: &'static str) {
    counter!(DISCONNECTS, "method" => method, "result" => result).increment(1);
}

pub fn sweeper(closed: u64) {
    counter!(SWEEPER_CLOSED).increment(closed);
}

pub fn archived(n: u64) {
    counter!(ARCHIVED).increment(n);
}

/// `nas` is the operator-configured short name: a closed set, never a session attribute.
pub fn open_sessions_by_nas(nas: String, n: usize) {
    gauge!(OPEN_SESSIONS_BY_NAS, "nas" => nas).set(n as f64);
}
