//! The live stream `GET /api/sessions/ws` over a real WebSocket client against the real
//! HTTP server, fed by real RADIUS traffic: authentication both ways and its failures,
//! events in order and in scope, slow clients cut off without slowing ingest, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use radacctd::radius::attr;

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, JWT_SECRET, RadClient, SECRET, admin_token, api_json, eventually, now,
    radclient, seed_reseller_tree, token,
};

both_backends!(
    header_auth_streams_started_updated_stopped_in_order,
    reseller_stream_carries_only_its_subtree,
);

type Ws = WebSocketStream<TcpStream>;

const VIEW: &[&str] = &["sessions.view"];

fn request(addr: SocketAddr, token: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/api/sessions/ws")
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

/// Open the stream, authenticating by header when `token` is given.
async fn open(addr: SocketAddr, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request(addr, token), tcp)
        .await
        .map(|(ws, _)| ws)
}

/// Open the stream by header and read the `auth` answer.
async fn watch(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = open(addr, Some(token)).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        json!({ "type": "auth", "success": true })
    );
    ws
}

/// The next data or close frame (pings and pongs skipped); `None` when the stream ended.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the server within {within:?}"));
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            None | Some(Err(_)) => return None,
        }
    }
}

async fn next_json(ws: &mut Ws, within: Duration) -> Value {
    match next_frame(ws, within).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

/// The server closes with `code` and the connection ends.
async fn expect_close(ws: &mut Ws, code: CloseCode) {
    match next_frame(ws, Duration::from_secs(2)).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, code),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(next_frame(ws, Duration::from_secs(2)).await.is_none());
}

/// A router on its own listener, for limits the running server does not have.
async fn serve(state: radacctd::api::AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = radacctd::api::router(state);
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn token_expiring_at(exp: u64) -> String {
    use radacctd::api::auth::{Claims, Role, mint_hs256};
    let claims = Claims {
        sub: "panel".into(),
        role: Role::Admin,
        reseller_id: None,
        username: None,
        permissions: vec![],
        exp,
        iat: None,
        aud: None,
        iss: None,
    };
    mint_hs256(JWT_SECRET, &claims).unwrap()
}

fn unix_now() -> u64 {
    u64::from(now())
}

async fn header_auth_streams_started_updated_stopped_in_order(b: Backend) {
    let h = Harness::start(b).await;
    let mut ws = watch(h.server.http_addr, &admin_token()).await;
    let t0 = now() - 10;
    let packets = [
        (
            "started",
            Acct::start("u", "1").at(t0).framed_ip([10, 1, 0, 1]),
        ),
        (
            "updated",
            Acct::interim("u", "1")
                .at(t0 + 5)
                .time(5)
                .octets(1000, 2000),
        ),
        (
            "stopped",
            Acct::stop("u", "1")
                .at(t0 + 8)
                .time(8)
                .octets(3000, 4000)
                .cause(1),
        ),
    ];
    let mut id = None;
    for (kind, packet) in &packets {
        h.client.send(packet).await;
        let answered = Instant::now();
        let v = next_json(&mut ws, Duration::from_secs(1)).await;
        assert!(answered.elapsed() < Duration::from_secs(1));
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"], *kind, "{v}");
        let s = &v["session"];
        assert_eq!(s["username"], "u");
        assert_eq!(s["acctsessionid"], "1");
        assert_eq!(s["framedipaddress"], "10.1.0.1");
        assert_eq!(
            *id.get_or_insert_with(|| s["radacctid"].clone()),
            s["radacctid"]
        );
        match *kind {
            "started" => {
                assert_eq!(s["acctstoptime"], Value::Null);
                assert_eq!(s["acctinputoctets"], 0);
            }
            "updated" => {
                assert_eq!(s["acctstoptime"], Value::Null);
                assert_eq!(s["acctsessiontime"], 5);
                assert_eq!(s["acctinputoctets"], 1000);
                assert_eq!(s["acctoutputoctets"], 2000);
            }
            _ => {
                assert_eq!(s["acctsessiontime"], 8);
                assert_eq!(s["acctinputoctets"], 3000);
                assert_eq!(s["acctterminatecause"], "User-Request");
                // The event carries exactly the session object of the REST API.
                let (code, api) = api_json(
                    &h,
                    &format!("/api/sessions/{}", s["radacctid"]),
                    Some(&admin_token()),
                )
                .await;
                assert_eq!(code, 200);
                assert_eq!(api["data"], *s);
                assert_ne!(s["acctstoptime"], Value::Null);
            }
        }
    }
    // A retransmitted Stop changes nothing, so it is not an event.
    h.client.send(&packets[2].1).await;
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
        Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"p"),
        other => panic!("expected only the pong, got {other:?}"),
    }
    h.server.stop().await;
}

/// Authentication by first message, with radclient as the NAS; a ping is answered and a
/// malformed message gets an error without ending the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_auth_streams_radclient_traffic() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut ws = open(h.server.http_addr, None).await.unwrap();
    let auth = json!({ "type": "auth", "token": admin_token() }).to_string();
    ws.send(Message::text(auth)).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        json!({ "type": "auth", "success": true })
    );

    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(1)).await,
        json!({ "type": "error", "message": "unknown message" })
    );
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(1)).await,
        json!({ "type": "error", "message": "unknown message" })
    );
    // Well-formed messages of types the server does not know are ignored.
    ws.send(Message::text(r#"{"type":"hello"}"#)).await.unwrap();

    let attrs = format!(
        "Acct-Status-Type = Start\nUser-Name = \"viaradclient\"\nAcct-Session-Id = \"r1\"\n\
         NAS-IP-Address = 127.0.0.1\nFramed-IP-Address = 10.9.9.9\nEvent-Timestamp = {}\n",
        now()
    );
    let (ok, out) = radclient(h.server.radius_addr, "acct", SECRET, &attrs).await;
    assert!(ok, "{out}");
    let answered = Instant::now();
    let v = next_json(&mut ws, Duration::from_secs(1)).await;
    assert!(answered.elapsed() < Duration::from_secs(1));
    assert_eq!(v["type"], "event");
    assert_eq!(v["event"], "started");
    assert_eq!(v["session"]["username"], "viaradclient");
    assert_eq!(v["session"]["acctsessionid"], "r1");
    assert_eq!(v["session"]["framedipaddress"], "10.9.9.9");

    // The client's close ends the stream cleanly.
    ws.close(None).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws, Duration::from_secs(2)).await,
        Some(Message::Close(_)) | None
    ));
    h.server.stop().await;
}

/// With the header, refusals are plain HTTP answers in the contract's shape, before any
/// upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_refusals_are_http_errors_before_upgrading() {
    let h = Harness::start(Backend::Sqlite).await;
    let addr = h.server.http_addr;
    let expired = token_expiring_at(unix_now() - 3600);
    let no_view = token("reseller", Some(1), None, &["subscribers.disconnect"]);
    for (auth, status, message) in [
        ("Bearer garbage".to_owned(), 401, "invalid token"),
        (format!("Bearer {expired}"), 401, "token expired"),
        ("Basic dXNlcjpwYXNz".to_owned(), 401, "missing token"),
        (format!("Bearer {no_view}"), 403, "sessions.view denied"),
    ] {
        let mut req = request(addr, None);
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        match tokio_tungstenite::client_async(req, tcp).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{auth:.20}");
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert_eq!(body, json!({ "success": false, "message": message }));
            }
            other => panic!("{auth:.20}: expected an HTTP error, got {other:?}"),
        }
    }
    // Not a WebSocket request at all.
    let (status, body) = h.http_get("/api/sessions/ws").await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "success": false, "message": "websocket upgrade required" })
    );
    h.server.stop().await;
}

/// Without the header, a wrong first message gets `error` and a close (1008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_first_message_gets_an_error_then_close() {
    let h = Harness::start(Backend::Sqlite).await;
    let expired = token_expiring_at(unix_now() - 3600);
    let subscriber_without_view = token("subscriber", None, Some("u"), &[]);
    let cases = [
        (Message::text("hello"), "auth required"),
        (Message::text(r#"{"type":"subscribe"}"#), "auth required"),
        (Message::binary(b"{}".to_vec()), "auth required"),
        (Message::text(r#"{"type":"auth"}"#), "missing token"),
        (
            Message::text(r#"{"type":"auth","token":""}"#),
            "missing token",
        ),
        (
            Message::text(r#"{"type":"auth","token":42}"#),
            "invalid token",
        ),
        (
            Message::text(r#"{"type":"auth","token":"x.y.z"}"#),
            "invalid token",
        ),
        (
            Message::text(json!({ "type": "auth", "token": expired }).to_string()),
            "token expired",
        ),
        (
            Message::text(json!({ "type": "auth", "token": subscriber_without_view }).to_string()),
            "sessions.view denied",
        ),
    ];
    for (first, message) in cases {
        let mut ws = open(h.server.http_addr, None).await.unwrap();
        ws.send(first).await.unwrap();
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(2)).await,
            json!({ "type": "error", "message": message })
        );
        expect_close(&mut ws, CloseCode::Policy).await;
    }
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_authenticates_is_refused_after_the_timeout() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut state = h.server.api.clone();
    state.limits.ws_auth_timeout = Duration::from_millis(300);
    let addr = serve(state).await;
    let mut ws = open(addr, None).await.unwrap();
    let opened = Instant::now();
    // A ping is not an authentication.
    ws.send(Message::Ping(Vec::new().into())).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        json!({ "type": "error", "message": "auth timeout" })
    );
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    expect_close(&mut ws, CloseCode::Policy).await;
    h.server.stop().await;
}

/// A reseller sees its own and its sub-resellers' subscribers, nothing else; a subscriber
/// sees itself; the admin everything.
async fn reseller_stream_carries_only_its_subtree(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let addr = h.server.http_addr;
    let mut reseller = watch(addr, &token("reseller", Some(2), None, VIEW)).await;
    // By first message too: the scope does not depend on how the caller authenticated.
    let mut reseller_msg = open(addr, None).await.unwrap();
    let auth = json!({ "type": "auth", "token": token("reseller", Some(2), None, VIEW) });
    reseller_msg
        .send(Message::text(auth.to_string()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut reseller_msg, Duration::from_secs(2)).await["success"],
        true
    );
    let mut subscriber = watch(addr, &token("subscriber", None, Some("r3user"), VIEW)).await;
    let mut admin = watch(addr, &admin_token()).await;

    let t0 = now() - 60;
    let users = ["r1user", "r2user", "r3user", "r4user", "nobody"];
    for (i, u) in users.iter().enumerate() {
        h.client.send(&Acct::start(u, "s").at(t0 + i as u32)).await;
    }
    for u in users {
        h.client
            .send(&Acct::stop(u, "s").at(t0 + 30).time(25).cause(1))
            .await;
    }
    // Each stream ends with its last in-scope event; anything out of scope before it
    // would show up in the list.
    async fn seen(ws: &mut Ws, last: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let v = next_json(ws, Duration::from_secs(2)).await;
            let s = format!(
                "{} {}",
                v["event"].as_str().unwrap(),
                v["session"]["username"].as_str().unwrap()
            );
            let done = s == last;
            out.push(s);
            if done {
                return out;
            }
        }
    }
    let expected_reseller = [
        "started r2user",
        "started r3user",
        "stopped r2user",
        "stopped r3user",
    ];
    assert_eq!(
        seen(&mut reseller, "stopped r3user").await,
        expected_reseller
    );
    assert_eq!(
        seen(&mut reseller_msg, "stopped r3user").await,
        expected_reseller
    );
    assert_eq!(
        seen(&mut subscriber, "stopped r3user").await,
        ["started r3user", "stopped r3user"]
    );
    let all = seen(&mut admin, "stopped nobody").await;
    assert_eq!(all.len(), 10);
    assert_eq!(all[0], "started r1user");
    // Nothing else is waiting on the scoped streams.
    for ws in [&mut reseller, &mut subscriber] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ws.next())
                .await
                .is_err()
        );
    }
    h.server.stop().await;
}

/// `clients` NASes at once, each starting `per_client` sessions at `start`, one try each:
/// the time to each answer, and how many went unanswered. Long text attributes make the
/// events fat, so that fewer packets fill a stuck client's buffers.
async fn burst(
    server: SocketAddr,
    clients: usize,
    per_client: usize,
    tag: &str,
    start: u32,
) -> (Vec<Duration>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let user = format!("{tag}-{c}-{}", "x".repeat(200));
        tasks.spawn(async move {
            let client = RadClient::new(server, SECRET).await;
            let mut latencies = Vec::with_capacity(per_client);
            let mut lost = 0;
            for i in 0..per_client {
                let pkt = Acct::start(&user, &format!("{i}"))
                    .at(start)
                    .without(attr::CALLING_STATION_ID)
                    .with(attr::CALLING_STATION_ID, vec![b'c'; 240])
                    .without(attr::CALLED_STATION_ID)
                    .with(attr::CALLED_STATION_ID, vec![b'd'; 240])
                    .without(attr::NAS_PORT_ID)
                    .with(attr::NAS_PORT_ID, vec![b'p'; 240])
                    .encode(client.next_id(), SECRET);
                let sent = Instant::now();
                match client.exchange(&pkt, 1, Duration::from_secs(2)).await {
                    Some(_) => latencies.push(sent.elapsed()),
                    None => lost += 1,
                }
            }
            (latencies, lost)
        });
    }
    let mut all = Vec::new();
    let mut lost = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, n) = r.unwrap();
        all.extend(l);
        lost += n;
    }
    (all, lost)
}

/// Accounting-On from the NAS: every session it started before `at` stops, one event each.
fn accounting_on(at: u32) -> Acct {
    Acct {
        attrs: vec![
            (attr::ACCT_STATUS_TYPE, 7u32.to_be_bytes().to_vec()),
            (attr::NAS_IP_ADDRESS, vec![127, 0, 0, 1]),
            (attr::EVENT_TIMESTAMP, at.to_be_bytes().to_vec()),
        ],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// Read what the server had sent until the stream ends: (events, final disconnect reason).
async fn drain(ws: &mut Ws, within: Duration) -> (usize, Option<String>, Option<CloseCode>) {
    let mut events = 0;
    let mut reason = None;
    let mut close = None;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server never ended the stream");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert!(reason.is_none(), "a message after the disconnect: {v}");
                match v["type"].as_str() {
                    Some("event") => events += 1,
                    Some("disconnect") => reason = v["reason"].as_str().map(str::to_owned),
                    _ => panic!("unexpected {v}"),
                }
            }
            Some(Ok(Message::Close(f))) => close = f.map(|f| f.code),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (events, reason, close),
        }
    }
}

/// A client that stops reading is cut off once it is far behind, while every packet keeps
/// being answered at once: ingest never waits for a WebSocket client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_ingest_keeps_answering() {
    let h = Harness::start(Backend::Sqlite).await;
    let addr = h.server.http_addr;
    // A small receive window keeps the stuck client's side of the buffers small.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(request(addr, Some(&admin_token())), tcp)
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut stuck, Duration::from_secs(2)).await["type"],
        "auth"
    );
    // A client reading alongside gets every event; it also measures them.
    let mut reader = watch(addr, &admin_token()).await;
    let seen = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let counter = Arc::clone(&seen);
    let reading = tokio::spawn(async move {
        loop {
            match next_frame(&mut reader, Duration::from_secs(30)).await {
                Some(Message::Text(t)) => {
                    counter.1.fetch_add(t.len(), Ordering::Relaxed);
                    counter.0.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("the reading client lost its stream: {other:?}"),
            }
        }
    });

    // The stuck client is dropped once the server's socket buffer (at most the kernel's
    // tcp_wmem maximum) is full and then either `ws_max_lag` more events are queued or a
    // write stays blocked for 5 s. Flood until past that, in rounds of fat started
    // events then an Accounting-On that stops them all at once.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let max_lag = h.server.api.limits.ws_max_lag;
    let base = now() - 1000;
    let (mut latencies, mut lost, mut produced) = (Vec::new(), 0, 0);
    let started = Instant::now();
    for round in 0u32.. {
        let start = base + round * 10;
        let (l, n) = burst(
            h.server.radius_addr,
            16,
            100,
            &format!("flood{round}"),
            start,
        )
        .await;
        produced += l.len() + n;
        latencies.extend(l);
        lost += n;
        let sent = Instant::now();
        h.client.send(&accounting_on(start + 5)).await;
        latencies.push(sent.elapsed());
        produced += 1600;
        assert!(
            eventually(Duration::from_secs(10), || async {
                seen.0.load(Ordering::Relaxed) == produced
            })
            .await,
            "the reading client fell behind"
        );
        let (events, bytes) = (
            seen.0.load(Ordering::Relaxed),
            seen.1.load(Ordering::Relaxed),
        );
        let needed = wmem_max + (1 << 20) + max_lag * bytes / events;
        if bytes >= needed {
            break;
        }
    }
    latencies.sort();
    let flood = started.elapsed();
    eprintln!(
        "{produced} events, {} packets in {flood:?}: p50 {:?} p99 {:?} max {:?}, {lost} unanswered",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    // Every packet answered on its first try (no NAS retransmission), typically at once.
    // Loose bounds: the test machine is shared; the printed figures are the measurement.
    assert_eq!(lost, 0);
    assert!(percentile(&latencies, 0.5) < Duration::from_millis(500));
    // After the flood, a packet is still answered at once, and streamed.
    let sent = Instant::now();
    h.client.send(&Acct::start("after", "1").at(now())).await;
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(1), || async {
            seen.0.load(Ordering::Relaxed) == produced + 1
        })
        .await
    );
    reading.abort();

    // The stuck one, once it reads, finds the stream ended, short of the flood.
    let (events, reason, close) = drain(&mut stuck, Duration::from_secs(20)).await;
    eprintln!("stuck client: {events} events, then {reason:?} {close:?}");
    assert!(events < produced, "{events} of {produced}");
    if let Some(reason) = reason {
        assert_eq!(reason, "too slow");
    }
    h.server.stop().await;
}

/// With a short queue the client is told why it is dropped: `disconnect` `too slow`, then
/// a close (1008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_told_it_is_too_slow() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut state = h.server.api.clone();
    state.limits.ws_max_lag = 2;
    let addr = serve(state).await;
    let mut ws = watch(addr, &admin_token()).await;
    let start = now() - 100;
    let (latencies, lost) = burst(h.server.radius_addr, 16, 30, "lag", start).await;
    assert_eq!(lost, 0);
    // One commit stopping all 480 sessions: a burst far past the queue, if the starts
    // were not already one.
    h.client.send(&accounting_on(start + 5)).await;
    let produced = latencies.len() * 2;
    let (events, reason, close) = drain(&mut ws, Duration::from_secs(5)).await;
    assert!(events < produced, "{events} of {produced}");
    assert_eq!(reason.as_deref(), Some("too slow"));
    assert_eq!(close, Some(CloseCode::Policy));
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_sends_disconnect() {
    let h = Harness::start(Backend::Sqlite).await;
    let mut ws = watch(h.server.http_addr, &admin_token()).await;
    h.client.send(&Acct::start("u", "1").at(now())).await;
    let Harness { server, db, .. } = h;
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("an open live stream must not hold up shutdown");
    // What was committed before shutdown comes first.
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await["event"],
        "started"
    );
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        json!({ "type": "disconnect", "reason": "server shutting down" })
    );
    expect_close(&mut ws, CloseCode::Away).await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_when_the_token_expires() {
    let h = Harness::start(Backend::Sqlite).await;
    // `exp` 28 s ago: still inside the 30 s leeway the upgrade allows, so the stream opens
    // and must end about 2 s later, when the leeway runs out too.
    let leeway = radacctd::api::auth::LEEWAY_SECS;
    let mut ws = watch(
        h.server.http_addr,
        &token_expiring_at(unix_now() + 2 - leeway),
    )
    .await;
    let opened = Instant::now();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(4)).await,
        json!({ "type": "disconnect", "reason": "token expired" })
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "{:?}",
        opened.elapsed()
    );
    expect_close(&mut ws, CloseCode::Policy).await;
    h.server.stop().await;
}
