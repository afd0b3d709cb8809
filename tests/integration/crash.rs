//! `kill -9` at random moments under accounting traffic, against the real binary.
//!
//! DESIGN.md §3: acknowledge only after the record is durably committed; nothing acknowledged
//! is ever lost, also on `kill -9`; a retransmission is never applied twice.
//!
//! Several NAS "lanes" (each its own UDP socket, like one NAS) run sessions Start →
//! Interim-Update(s) → Stop with realistic Event-Timestamps and session times, some left open.
//! Like a NAS, each packet is sent and its same bytes retransmitted until answered, also to the
//! next server when the one it was sent to died. Meanwhile the server is killed with SIGKILL at
//! seeded random moments and restarted on the same database and ports; one of the restarts is
//! itself killed part-way through start-up. Every other kill comes after a short window in which
//! the NASes "lose" every answer (they ignore it and keep retransmitting): those packets are
//! committed before the kill but unanswered, so the restarted server sees them again and must
//! recognise them by the accounting rules alone (its duplicate cache died with the old
//! process) — a repeated Start changes nothing, an Interim with the same counters adds no
//! event, a repeated Stop changes nothing.
//!
//! Checked: after every kill, every packet acknowledged so far is in `radacct_events`, none
//! twice; at the end, one `radacct` row per session with the FreeRADIUS `acctuniqueid` and
//! exactly the values of its last packet, exactly one event per packet, and the open-session
//! count the API serves from the index equals the database's, also after a last `kill -9`.
//!
//! `RADACCTD_CRASH_SEED=N` replays another schedule.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use radacctd::sessions::{SessionKey, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{
    Acct, Backend, JWT_SECRET, RadClient, SECRET, TestDb, admin_token, config, now, radclient, rows,
};

const BIN: &str = env!("CARGO_BIN_EXE_radacctd");

/// Concurrent NAS lanes.
const LANES: usize = 10;
/// How long traffic flows; the kills are spread over it.
const TRAFFIC: Duration = Duration::from_secs(14);
const KILLS: usize = 5;
/// A NAS's retransmission interval.
const RETRY: Duration = Duration::from_millis(400);
/// A packet still unanswered after this long fails the test.
const PACKET_DEADLINE: Duration = Duration::from_secs(40);
/// Share of sessions still open at the end of their lane's run (no Stop sent).
const OPEN_SHARE: f64 = 0.15;

const NAS_IDENTIFIER: &[u8] = b"MikroTik";
const NAS_PORT_ID: &[u8] = b"bridge1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_packet_sqlite() {
    run(Backend::Sqlite, seed(0x5eed_0001)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_packet_postgres() {
    if crate::harness::skip_postgres() {
        return;
    }
    run(Backend::Postgres, seed(0x5eed_0002)).await;
}

fn seed(default: u64) -> u64 {
    std::env::var("RADACCTD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What one accounting packet leaves in `radacct_events`: the packet's own values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Ev {
    sid: String,
    kind: String,
    time: i64,
    session_time: i64,
    input: i64,
    output: i64,
}

/// A session as its NAS ran it: the packets it got acknowledged, in order.
#[derive(Debug, Clone)]
struct SessionLog {
    user: String,
    sid: String,
    port: u32,
    ip: [u8; 4],
    start: i64,
    cause: Option<&'static str>,
    events: Vec<Ev>,
}

impl SessionLog {
    fn is_open(&self) -> bool {
        self.events.last().is_none_or(|e| e.kind != "Stop")
    }
}

#[derive(Debug, Default)]
struct Stats {
    packets: usize,
    sends: usize,
    /// Packets sent more than once.
    retransmitted: usize,
    /// Answers the NAS ignored (the "lost answer" windows before some kills).
    lost_answers: usize,
    /// Packets answered by a later server than the one they were first sent to.
    across_restart: usize,
    unanswered: Vec<Ev>,
}

/// State shared by the lanes and the killer.
struct Shared {
    /// Incremented at every spawn of the server.
    generation: AtomicU32,
    /// While equal to `generation`, the NASes ignore every answer (as if lost on the way).
    lossy: AtomicU32,
    stop: AtomicBool,
    /// Every packet acknowledged so far.
    acked: Mutex<Vec<Ev>>,
    /// Per lane, the packet waiting for its answer.
    in_flight: Mutex<Vec<Option<Ev>>>,
}

/// The server process. Dropping it kills it (also on panic, then printing its log's tail).
struct Proc {
    dir: tempfile::TempDir,
    url: String,
    udp: u16,
    http: u16,
    child: Option<Child>,
}

impl Proc {
    fn new(url: &str) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("radacctd.toml"),
            format!(
                "[database]\nmax_connections = 4\n\
                 [radius]\ndefault_client = false\n\
                 [auth]\njwt_secret = \"{JWT_SECRET}\"\n\
                 [[nas]]\nname = \"bng1\"\nip = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n"
            ),
        )
        .unwrap();
        Proc {
            dir,
            url: url.to_owned(),
            udp: free_udp_port(),
            http: free_tcp_port(),
            child: None,
        }
    }

    fn radius_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.udp))
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("radacctd.log")
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("radacctd.toml"))
            .arg("serve")
            .arg("--database-url")
            .arg(&self.url)
            .current_dir(self.dir.path())
            .env_remove("RADACCTD_DATABASE_URL")
            .env_remove("RADACCTD_JWT_SECRET")
            .env("RADACCTD_LOG", "info")
            .env("RADACCTD_RADIUS_LISTEN", format!("127.0.0.1:{}", self.udp))
            .env("RADACCTD_HTTP_LISTEN", format!("127.0.0.1:{}", self.http))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run radacctd")
    }

    /// Start the server and wait until it answers HTTP /readyz and a Status-Server; a server
    /// that exits at once (a port still held) is started again. Returns the time it took.
    async fn start(&mut self, shared: &Shared) -> Duration {
        assert!(self.child.is_none());
        let began = Instant::now();
        let deadline = began + Duration::from_secs(30);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        loop {
            let mut child = self.spawn();
            shared.generation.fetch_add(1, SeqCst);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        Instant::now() < deadline,
                        "radacctd keeps exiting ({status}):\n{}",
                        self.log_tail()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                if self.ready(&http).await {
                    self.child = Some(child);
                    return began.elapsed();
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("radacctd not ready within 30 s:\n{}", self.log_tail());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn ready(&self, http: &reqwest::Client) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.http);
        let up = matches!(http.get(url).send().await, Ok(r) if r.status() == 200);
        up && radclient(
            self.radius_addr(),
            "status",
            SECRET,
            "Message-Authenticator = 0x00\n",
        )
        .await
        .0
    }

    /// SIGKILL the server and wait until it is gone.
    async fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("radacctd exited by itself ({status}):\n{}", self.log_tail());
        }
        child.kill().unwrap();
        let began = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "still alive after SIGKILL"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    /// Start the server and SIGKILL it `after` later, ready or not (during migrations,
    /// the index rebuild, binding...). Returns whether it was still running then.
    async fn start_and_kill_after(&mut self, shared: &Shared, after: Duration) -> bool {
        assert!(self.child.is_none());
        let mut child = self.spawn();
        shared.generation.fetch_add(1, SeqCst);
        tokio::time::sleep(after).await;
        if child.try_wait().unwrap().is_some() {
            // Exited by itself (a port still held): the next start tries again.
            return false;
        }
        self.child = Some(child);
        self.kill9().await;
        true
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- radacctd log (tail) ---\n{}", self.log_tail());
        }
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn run(backend: Backend, seed: u64) {
    let began = Instant::now();
    eprintln!("crash test {backend:?}: seed {seed} (RADACCTD_CRASH_SEED replays it)");
    let db = TestDb::new(backend).await;
    let mut server = Proc::new(&db.url);
    let shared = Arc::new(Shared {
        generation: AtomicU32::new(0),
        lossy: AtomicU32::new(u32::MAX),
        stop: AtomicBool::new(false),
        acked: Mutex::new(Vec::new()),
        in_flight: Mutex::new(vec![None; LANES]),
    });
    let first_start = server.start(&shared).await;
    // Our own connection, for the checks (the server created the schema).
    let store = Store::connect(&config(&db, "").database).await.unwrap();

    let addr = server.radius_addr();
    let traffic_began = tokio::time::Instant::now();
    let lanes: Vec<_> = (0..LANES)
        .map(|i| tokio::spawn(lane(i, seed, addr, Arc::clone(&shared))))
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    // One restart is itself killed part-way through start-up.
    let kill_in_startup = rng.random_range(0..KILLS);
    let slot = (TRAFFIC - Duration::from_secs(2)) / KILLS as u32;
    let mut restarts = Vec::new();
    let mut committed_unanswered = 0;
    let lossy_first = rng.random_bool(0.5);
    for k in 0..KILLS {
        let at =
            Duration::from_secs(1) + slot * k as u32 + slot.mul_f64(rng.random_range(0.1..0.9));
        let jitter = Duration::from_millis(rng.random_range(0..200));
        tokio::time::sleep_until((traffic_began + at).max(tokio::time::Instant::now() + jitter))
            .await;
        let lossy = (k % 2 == 0) == lossy_first;
        if lossy {
            // From now on every answer of this server is "lost": the NASes keep
            // retransmitting what it committed until the next server answers.
            shared.lossy.store(shared.generation.load(SeqCst), SeqCst);
            tokio::time::sleep(Duration::from_millis(rng.random_range(150..400))).await;
        }
        let killed_at = traffic_began.elapsed();
        server.kill9().await;

        // The server is dead: everything it acknowledged is committed, so in the database.
        let acked = shared.acked.lock().unwrap().clone();
        let in_flight: Vec<Ev> = shared
            .in_flight
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect();
        let stored = events(&store).await;
        check_acked_stored(&acked, &stored, &format!("after kill {}", k + 1));
        let stored: HashSet<Ev> = stored.into_iter().collect();
        let pending_committed = in_flight.iter().filter(|e| stored.contains(e)).count();
        committed_unanswered += pending_committed;

        let mut line = format!(
            "  {backend:?} kill {} at {:.1} s{}: {} packets acknowledged so far, all in the \
             database; {} of the {} unanswered were committed",
            k + 1,
            killed_at.as_secs_f64(),
            if lossy {
                " (answers lost before it)"
            } else {
                ""
            },
            acked.len(),
            pending_committed,
            in_flight.len(),
        );

        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        if k == kill_in_startup {
            let after = first_start.mul_f64(rng.random_range(0.05..1.0));
            let killed = server.start_and_kill_after(&shared, after).await;
            let acked = shared.acked.lock().unwrap().clone();
            let stored = events(&store).await;
            check_acked_stored(&acked, &stored, "after the kill during start-up");
            line += &format!(
                "; killed again {} ms into start-up{}",
                after.as_millis(),
                if killed { "" } else { " (it had exited)" }
            );
        }
        let took = server.start(&shared).await;
        eprintln!("{line}; back in {} ms", took.as_millis());
        restarts.push(took);
    }
    tokio::time::sleep_until(traffic_began + TRAFFIC).await;
    shared.stop.store(true, SeqCst);

    let mut sessions = Vec::new();
    let mut stats = Stats::default();
    for l in lanes {
        let (s, st) = tokio::time::timeout(PACKET_DEADLINE + Duration::from_secs(20), l)
            .await
            .expect("a lane did not finish")
            .unwrap();
        sessions.extend(s);
        stats.packets += st.packets;
        stats.sends += st.sends;
        stats.retransmitted += st.retransmitted;
        stats.lost_answers += st.lost_answers;
        stats.across_restart += st.across_restart;
        stats.unanswered.extend(st.unanswered);
    }
    let traffic_secs = traffic_began.elapsed().as_secs_f64();
    assert!(
        stats.unanswered.is_empty(),
        "packets never answered: {:?}",
        stats.unanswered
    );
    assert!(
        stats.lost_answers > 0,
        "the lost-answer windows lost nothing"
    );
    assert!(
        stats.across_restart > 0,
        "no packet was answered across a restart"
    );

    check_database(&store, &sessions).await;
    let open = sessions.iter().filter(|s| s.is_open()).count();
    assert!(open > 0, "some sessions are left open");
    check_count(&server, &store, open, "before the last kill").await;

    // A last kill -9 with no traffic: the index rebuilt from radacct matches it.
    server.kill9().await;
    let took = server.start(&shared).await;
    restarts.push(took);
    check_count(&server, &store, open, "after the last restart").await;
    check_database(&store, &sessions).await;

    let max_restart = restarts.iter().max().unwrap();
    eprintln!(
        "crash test {backend:?} passed: {} sessions ({open} open), {} packets, {} sends, \
         {} retransmitted, {} answers lost, {} answered across a restart, \
         {committed_unanswered} committed-but-unanswered at a kill; {} kills; first start \
         {} ms, slowest restart {} ms; traffic {traffic_secs:.1} s, total {:.1} s",
        sessions.len(),
        stats.packets,
        stats.sends,
        stats.retransmitted,
        stats.lost_answers,
        stats.across_restart,
        KILLS + 2,
        first_start.as_millis(),
        max_restart.as_millis(),
        began.elapsed().as_secs_f64()
    );
}

/// One NAS: sessions one after another until told to stop (the session under way is
/// finished), each packet retransmitted until answered.
async fn lane(
    id: usize,
    seed: u64,
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> (Vec<SessionLog>, Stats) {
    let client = RadClient::new(addr, SECRET).await;
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut sessions = Vec::new();
    let mut stats = Stats::default();
    let mut n: u32 = 0;
    while !shared.stop.load(SeqCst) {
        let (mut log, packets) = plan_session(&mut rng, id, n);
        for (acct, ev) in packets {
            let bytes = acct.encode(client.next_id(), SECRET);
            shared.in_flight.lock().unwrap()[id] = Some(ev.clone());
            let d = deliver(&client, &bytes, &shared).await;
            stats.packets += 1;
            stats.sends += d.sends as usize;
            stats.retransmitted += usize::from(d.sends > 1);
            stats.lost_answers += d.lost as usize;
            let Some(answered_by) = d.answered_by else {
                stats.unanswered.push(ev);
                sessions.push(log);
                return (sessions, stats);
            };
            stats.across_restart += usize::from(answered_by != d.first_sent_to);
            shared.acked.lock().unwrap().push(ev.clone());
            shared.in_flight.lock().unwrap()[id] = None;
            log.events.push(ev);
            tokio::time::sleep(Duration::from_millis(rng.random_range(2..25))).await;
        }
        sessions.push(log);
        n += 1;
    }
    (sessions, stats)
}

/// A session's packets. It started 210 s ago (so that every Event-Timestamp lies in the
/// past and within the 300 s skew when it arrives); Interim-Updates 20–50 s apart, a Stop
/// 5–30 s after the last one unless the session stays open; counters grow at the session's
/// rate, past 4 GiB (Gigawords) for some.
fn plan_session(rng: &mut StdRng, lane: usize, n: u32) -> (SessionLog, Vec<(Acct, Ev)>) {
    let lane32 = lane as u32;
    let log = SessionLog {
        user: format!("nas{lane}-sub{}", n % 5),
        sid: format!("{:08x}", 0x8100_0000 | (lane32 << 16) | n),
        port: 15_728_640 + lane32 * 4096 + n,
        ip: [10, 64 + lane as u8, (n >> 8) as u8, n as u8],
        start: i64::from(now()) - 210,
        cause: None,
        events: Vec::new(),
    };
    let fast = rng.random_ratio(1, 8);
    let (in_rate, out_rate): (u64, u64) = if fast {
        (
            rng.random_range(5_000_000..10_000_000),
            rng.random_range(25_000_000..40_000_000),
        )
    } else {
        (
            rng.random_range(1_000..100_000),
            rng.random_range(10_000..1_000_000),
        )
    };
    let base = |kind: u32| {
        Acct::new(kind, &log.user, &log.sid)
            .port(log.port)
            .framed_ip(log.ip)
    };
    let ev = |kind: &str, t: i64| Ev {
        sid: log.sid.clone(),
        kind: kind.to_owned(),
        time: log.start + t,
        session_time: t,
        input: (in_rate * t as u64) as i64,
        output: (out_rate * t as u64) as i64,
    };
    let mut packets = vec![(base(1).at(log.start as u32), ev("Start", 0))];
    let mut t: i64 = 0;
    for _ in 0..rng.random_range(0..=3) {
        t += rng.random_range(20..=50);
        let e = ev("Interim-Update", t);
        let a = base(3)
            .at(e.time as u32)
            .time(t as u32)
            .octets(e.input as u64, e.output as u64);
        packets.push((a, e));
    }
    let mut cause = None;
    if !rng.random_bool(OPEN_SHARE) {
        t += rng.random_range(5..=30);
        let (code, name) = [
            (1, "User-Request"),
            (2, "Lost-Carrier"),
            (4, "Idle-Timeout"),
            (5, "Session-Timeout"),
        ][rng.random_range(0..4)];
        cause = Some(name);
        let e = ev("Stop", t);
        let a = base(2)
            .at(e.time as u32)
            .time(t as u32)
            .octets(e.input as u64, e.output as u64)
            .cause(code);
        packets.push((a, e));
    }
    (SessionLog { cause, ..log }, packets)
}

struct Delivery {
    sends: u32,
    lost: u32,
    first_sent_to: u32,
    answered_by: Option<u32>,
}

/// Send the same bytes every `RETRY` until answered, like a NAS, whichever server is up.
async fn deliver(client: &RadClient, bytes: &[u8], shared: &Shared) -> Delivery {
    let deadline = Instant::now() + PACKET_DEADLINE;
    let mut d = Delivery {
        sends: 0,
        lost: 0,
        first_sent_to: shared.generation.load(SeqCst),
        answered_by: None,
    };
    while Instant::now() < deadline {
        let sent = Instant::now();
        // A send error (ICMP port unreachable while the server is down) is a lost packet.
        let _ = client.socket.send_to(bytes, client.server).await;
        d.sends += 1;
        if client.recv_for(bytes, RETRY).await.is_some() {
            let generation = shared.generation.load(SeqCst);
            if shared.lossy.load(SeqCst) != generation {
                d.answered_by = Some(generation);
                return d;
            }
            d.lost += 1;
        }
        if let Some(rest) = RETRY.checked_sub(sent.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    d
}

/// Every event of `radacct_events`, with its row's Acct-Session-Id ("<orphan>" if none).
async fn events(store: &Store) -> Vec<Ev> {
    type R = (Option<String>, String, i64, i64, i64, i64, String);
    let sql = |time: &str| {
        sqlx::AssertSqlSafe(format!(
            "SELECT r.acctsessionid, e.eventtype, {time}, e.acctsessiontime, \
             e.acctinputoctets, e.acctoutputoctets, e.source FROM radacct_events e \
             LEFT JOIN radacct r ON r.radacctid = e.radacctid ORDER BY e.id"
        ))
    };
    let raw: Vec<R> = match store {
        Store::Sqlite(s) => sqlx::query_as(sql("CAST(strftime('%s', e.eventtime) AS INTEGER)"))
            .fetch_all(s.pool())
            .await
            .unwrap(),
        Store::Postgres(s) => sqlx::query_as(sql("EXTRACT(EPOCH FROM e.eventtime)::bigint"))
            .fetch_all(s.pool())
            .await
            .unwrap(),
    };
    raw.into_iter()
        .map(|(sid, kind, time, session_time, input, output, source)| {
            assert_eq!(
                source, "nas",
                "an event radacctd made itself: {kind} of {sid:?}"
            );
            Ev {
                sid: sid.unwrap_or_else(|| "<orphan>".into()),
                kind,
                time,
                session_time,
                input,
                output,
            }
        })
        .collect()
}

fn counts(evs: &[Ev]) -> HashMap<&Ev, usize> {
    let mut m = HashMap::new();
    for e in evs {
        *m.entry(e).or_insert(0) += 1;
    }
    m
}

/// Every acknowledged packet has its event, and no event is there twice.
fn check_acked_stored(acked: &[Ev], stored: &[Ev], when: &str) {
    let have = counts(stored);
    let lost: Vec<&Ev> = acked.iter().filter(|e| !have.contains_key(e)).collect();
    assert!(
        lost.is_empty(),
        "{when}: {} acknowledged packets are not in the database (of {}), e.g. {:#?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let twice: Vec<&&Ev> = have
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(e, _)| e)
        .collect();
    assert!(
        twice.is_empty(),
        "{when}: {} packets applied more than once, e.g. {:#?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
}

/// The database holds exactly what the NASes had acknowledged: one row per session with
/// the values of its last packet, one event per packet.
async fn check_database(store: &Store, sessions: &[SessionLog]) {
    let expected: Vec<Ev> = sessions.iter().flat_map(|s| s.events.clone()).collect();
    let stored = events(store).await;
    check_acked_stored(&expected, &stored, "at the end");
    let want = counts(&expected);
    let extra: Vec<&Ev> = stored.iter().filter(|e| !want.contains_key(e)).collect();
    assert!(
        extra.is_empty(),
        "{} events no packet explains, e.g. {:#?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    assert_eq!(stored.len(), expected.len(), "one event per packet");

    let rows = rows(store).await;
    let mut by_sid: HashMap<&str, Vec<&crate::harness::Row>> = HashMap::new();
    for r in &rows {
        by_sid.entry(r.acctsessionid.as_str()).or_default().push(r);
    }
    let mut wrong = Vec::new();
    for s in sessions {
        let Some(found) = by_sid.get(s.sid.as_str()) else {
            wrong.push(format!("{}: no row", s.sid));
            continue;
        };
        if found.len() != 1 {
            wrong.push(format!("{}: {} rows: {found:#?}", s.sid, found.len()));
            continue;
        }
        let r = found[0];
        let last = s.events.last().expect("a session has its Start");
        let key = SessionKey::freeradius(
            s.user.as_bytes(),
            s.sid.as_bytes(),
            "127.0.0.1",
            NAS_IDENTIFIER,
            NAS_PORT_ID,
            Some(s.port),
        );
        let ip = format!("{}.{}.{}.{}", s.ip[0], s.ip[1], s.ip[2], s.ip[3]);
        let want = (
            key.to_hex(),
            s.user.as_str(),
            Some(s.start),
            Some(last.time),
            (!s.is_open()).then_some(last.time),
            Some(last.session_time),
            Some(last.input),
            Some(last.output),
            s.cause,
            Some(ip.as_str()),
        );
        let have = (
            r.acctuniqueid.clone(),
            r.username.as_str(),
            r.start,
            r.update,
            r.stop,
            r.session_time,
            r.input,
            r.output,
            r.cause.as_deref(),
            r.framedipaddress.as_deref(),
        );
        if want != have {
            wrong.push(format!("{}: want {want:?}\n  have {have:?}", s.sid));
        }
    }
    assert_eq!(
        rows.len(),
        sessions.len(),
        "one row per session, no other rows"
    );
    assert!(
        wrong.is_empty(),
        "{} of {} sessions wrong:\n{}",
        wrong.len(),
        sessions.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

/// `GET /api/sessions/count` (served from the index) = open rows in the database = the
/// sessions the NASes left open.
async fn check_count(server: &Proc, store: &Store, open: usize, when: &str) {
    let in_db = crate::harness::scalar(
        store,
        "SELECT COUNT(*) FROM radacct WHERE acctstoptime IS NULL",
    )
    .await;
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/sessions/count",
            server.http
        ))
        .bearer_auth(admin_token())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(in_db, open as i64, "{when}: open rows in the database");
    assert_eq!(
        body["count"],
        serde_json::json!(open),
        "{when}: the index's count: {body}"
    );
}
