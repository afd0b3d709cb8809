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

/// Label values of the labelled counters, each a closed set. Every combination is
/// registered at 0 when the recorder is installed, so that a series exists from the start
/// and `rate()`/`increase()` see its first increment after a restart.
pub const PACKET_TYPES: &[&str] = &[
    "Start",
    "Interim-Update",
    "Stop",
    "Accounting-On",
    "Accounting-Off",
    // Accounting-Requests dropped or answered before their status type was read.
    "accounting",
    // Status types that are answered but not recorded.
    "unrecorded",
    "status_server",
    "other",
];
pub const DROP_REASONS: &[&str] = &[
    "unknown_nas",
    "bad_length",
    "bad_attribute",
    "encode_error",
    "unsupported_code",
    "bad_authenticator",
    "bad_message_authenticator",
    "missing_status_type",
    "queue_full",
    "shutting_down",
    "store_refused",
];
pub const DUPLICATE_ACTIONS: &[&str] = &["resent", "in_flight"];
pub const STORE_ERROR_KINDS: &[&str] = &["transient", "refused"];
/// `(method, result)` pairs of [`disconnect`].
pub const DISCONNECT_OUTCOMES: &[(&str, &str)] = &[
    ("coa", "success"),
    ("api", "success"),
    ("coa", "failed"),
    ("api", "failed"),
    ("none", "failed"),
    ("none", "already_closed"),
];

/// Upper bounds of the `_seconds` histograms: from sub-millisecond commits up to a
/// disconnect that waits out its CoA timeout (3 s) and then the RouterOS API (5 s).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
                        SECONDS_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (an embedding program's); then
            // our handle renders nothing, which is visible at /metrics.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_at_zero();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        PACKETS_RECEIVED,
        "RADIUS packets received, by type: the Acct-Status-Type of a recorded \
         Accounting-Request, accounting (dropped or a duplicate before its status type was \
         read), unrecorded (an unrecorded status type), status_server, other (another code)"
    );
    describe_counter!(PACKETS_DROPPED, "Packets dropped unanswered, by reason");
    describe_counter!(
        DUPLICATES,
        "Retransmissions recognised, by action: resent (the cached answer was sent again), \
         in_flight (the original is still waiting for its commit; this copy was ignored)"
    );
    describe_counter!(RESPONSES_SENT, "Accounting-Responses sent");
    describe_counter!(RESPONSES_FAILED, "Accounting-Responses the socket refused");
    describe_histogram!(COMMIT_BATCH_SIZE, "Records per committed transaction");
    describe_histogram!(COMMIT_SECONDS, "Time to apply and commit one batch");
    describe_gauge!(
        WRITER_QUEUE_DEPTH,
        "Records waiting for the writer (read at scrape time)"
    );
    describe_gauge!(OPEN_SESSIONS, "Open sessions in the index");
    describe_counter!(
        STORE_ERRORS,
        "Failed store transactions, by kind: transient (retried), refused (the data was \
         rejected)"
    );
    describe_counter!(
        CLOCK_SKEW,
        "Packets whose Event-Timestamp was outside the allowed skew, by NAS (label nas: as \
         radacctd_open_sessions_by_nas; unknown for the default client)"
    );
    describe_counter!(STATUS_SERVER, "Status-Server requests answered");
    describe_counter!(
        SWEEPER_CLOSED,
        "Stale sessions the sweeper closed as NAS-Idle-Timeout (closes an Interim-Update \
         overtook are not counted)"
    );
    describe_counter!(
        ARCHIVED,
        "Closed sessions the archiver moved from radacct to radacct_archive"
    );
    describe_counter!(
        DISCONNECTS,
        "Disconnect requests, by method (coa, api: the channel that gave the final answer; \
         none: nothing was sent) and result (success, failed, already_closed)"
    );
    describe_counter!(API_REQUESTS, "HTTP requests, by route template and status");
    describe_histogram!(API_SECONDS, "HTTP request latency, by route template");
}

/// Create every counter with a closed label set at 0. A counter that first appears at 1
/// has no earlier sample, so `increase()` over a restart would miss that first event.
fn register_at_zero() {
    for kind in PACKET_TYPES {
        counter!(PACKETS_RECEIVED, "type" => *kind).increment(0);
    }
    for reason in DROP_REASONS {
        counter!(PACKETS_DROPPED, "reason" => *reason).increment(0);
    }
    for action in DUPLICATE_ACTIONS {
        counter!(DUPLICATES, "action" => *action).increment(0);
    }
    for kind in STORE_ERROR_KINDS {
        counter!(STORE_ERRORS, "kind" => *kind).increment(0);
    }
    for (method, result) in DISCONNECT_OUTCOMES {
        counter!(DISCONNECTS, "method" => *method, "result" => *result).increment(0);
    }
    for name in [
        RESPONSES_SENT,
        RESPONSES_FAILED,
        CLOCK_SKEW,
        STATUS_SERVER,
        SWEEPER_CLOSED,
        ARCHIVED,
    ] {
        counter!(name).increment(0);
    }
    gauge!(WRITER_QUEUE_DEPTH).set(0.0);
    gauge!(OPEN_SESSIONS).set(0.0);
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

/// `nas` is the NAS's label (`nas_label`), so the operator sees which router's clock is off.
pub fn clock_skew(nas: &str) {
    counter!(CLOCK_SKEW, "nas" => nas.to_owned()).increment(1);
}

/// The `nas` label of a NAS: its short name, unless that is missing or an address (a
/// FreeRADIUS `nas` row often has the IP as `shortname`; radacctd falls back to
/// `nasname`) — IP addresses are never metric labels (DESIGN.md §8), so then `nas<id>`.
pub fn nas_label(name: &str, id: i64) -> String {
    let looks_like_address = name.parse::<std::net::IpAddr>().is_ok()
        || name
            .split_once('/')
            .is_some_and(|(ip, _)| ip.parse::<std::net::IpAddr>().is_ok());
    if name.is_empty() || looks_like_address {
        format!("nas{id}")
    } else {
        name.to_owned()
    }
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

const OPEN_SESSIONS_BY_NAS_HELP: &str = "Open sessions per NAS short name (nas.shortname; \
    nas<id> when the name is an address; unknown: a NAS no longer configured)";

/// The `radacctd_open_sessions_by_nas` family as Prometheus text, from counts computed at
/// scrape time. It is rendered here instead of being registered with the recorder because
/// a registered gauge cannot be removed: a renamed or deleted NAS would keep its last
/// value forever. `counts` holds exactly the series to show, already summed per label.
pub fn render_open_sessions_by_nas(counts: &std::collections::BTreeMap<String, usize>) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "# HELP {OPEN_SESSIONS_BY_NAS} {OPEN_SESSIONS_BY_NAS_HELP}\n# TYPE {OPEN_SESSIONS_BY_NAS} gauge\n"
    );
    for (nas, n) in counts {
        let _ = writeln!(
            out,
            "{OPEN_SESSIONS_BY_NAS}{{nas=\"{}\"}} {n}",
            escape_label(nas)
        );
    }
    out
}

/// A label value in the text exposition format: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_become_labels() {
        assert_eq!(nas_label("bng1", 3), "bng1");
        assert_eq!(nas_label("10.0.0.1", 3), "nas3");
        assert_eq!(nas_label("2001:db8::1", 4), "nas4");
        assert_eq!(nas_label("10.0.0.0/24", 5), "nas5");
        assert_eq!(nas_label("", 6), "nas6");
        assert_eq!(nas_label("cafe", 7), "cafe");
    }

    #[test]
    fn per_nas_family_has_help_type_and_one_escaped_line_per_name() {
        let counts = std::collections::BTreeMap::from([
            ("bng1".to_owned(), 3),
            ("unknown".to_owned(), 0),
            ("odd \"name\"\\".to_owned(), 1),
        ]);
        let text = render_open_sessions_by_nas(&counts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                format!("# HELP {OPEN_SESSIONS_BY_NAS} {OPEN_SESSIONS_BY_NAS_HELP}").as_str(),
                "# TYPE radacctd_open_sessions_by_nas gauge",
                "radacctd_open_sessions_by_nas{nas=\"bng1\"} 3",
                "radacctd_open_sessions_by_nas{nas=\"odd \\\"name\\\"\\\\\"} 1",
                "radacctd_open_sessions_by_nas{nas=\"unknown\"} 0",
            ]
        );
    }

    /// Every counter with a closed label set exists at 0 before anything happened, and
    /// every metric has a HELP line.
    #[test]
    fn counters_exist_from_the_start_and_every_metric_is_described() {
        let text = install().render();
        let mut expected: Vec<String> = Vec::new();
        expected.extend(
            PACKET_TYPES
                .iter()
                .map(|t| format!("{PACKETS_RECEIVED}{{type=\"{t}\"}}")),
        );
        expected.extend(
            DROP_REASONS
                .iter()
                .map(|r| format!("{PACKETS_DROPPED}{{reason=\"{r}\"}}")),
        );
        expected.extend(
            DUPLICATE_ACTIONS
                .iter()
                .map(|a| format!("{DUPLICATES}{{action=\"{a}\"}}")),
        );
        expected.extend(
            STORE_ERROR_KINDS
                .iter()
                .map(|k| format!("{STORE_ERRORS}{{kind=\"{k}\"}}")),
        );
        expected.extend(
            DISCONNECT_OUTCOMES
                .iter()
                .map(|(m, r)| format!("{DISCONNECTS}{{method=\"{m}\",result=\"{r}\"}}")),
        );
        for name in [
            RESPONSES_SENT,
            RESPONSES_FAILED,
            CLOCK_SKEW,
            STATUS_SERVER,
            SWEEPER_CLOSED,
            ARCHIVED,
            WRITER_QUEUE_DEPTH,
            OPEN_SESSIONS,
        ] {
            expected.push(name.to_owned());
        }
        for series in &expected {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(series.as_str()) && l[series.len()..].starts_with(' ')),
                "{series} missing from a fresh /metrics:\n{text}"
            );
        }
        let families: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .unwrap_or(n)
            })
            .collect();
        for family in families {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no HELP text"
            );
        }
    }

    /// The label lists above must hold every literal the ingest loop uses.
    #[test]
    fn label_lists_hold_every_value_ingest_uses() {
        let source = include_str!("ingest/listener.rs");
        for (call, list) in [
            ("m::dropped(\"", DROP_REASONS),
            ("m::duplicate(\"", DUPLICATE_ACTIONS),
            ("m::received(\"", PACKET_TYPES),
        ] {
            for (i, _) in source.match_indices(call) {
                let rest = &source[i + call.len()..];
                let value = &rest[..rest.find('"').unwrap()];
                assert!(
                    list.contains(&value),
                    "{call}{value}\") is not pre-registered"
                );
            }
        }
    }
}
