//! Engine and writer benchmark: what one group commit costs on CPU.
//!
//! - `engine/*`: `Engine::process` on 256-record batches — new sessions (Start) and
//!   updates of open ones (Interim-Update) — on an in-memory SQLite database, so that no
//!   fsync hides the per-record cost of the engine and the store; then the same on a
//!   SQLite file with `synchronous = full` (the default: acknowledged means committed).
//! - `writer/*`: the group-commit writer fed through its queue, as ingest feeds it: 2,048
//!   Interim-Updates queued at once, timed until every one is acknowledged.
//!
//! `cargo bench --bench engine -- --noplot`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use radacctd::config::{DatabaseConfig, SqliteSynchronous, WriterConfig};
use radacctd::sessions::model::{Fields, Record, StatusType};
use radacctd::sessions::writer::{Acknowledge, Origin, Pending, Writer};
use radacctd::sessions::{Engine, Index, SessionKey, Store};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 256;
const T0: i64 = 1_800_000_000;

/// A MikroTik PPPoE packet of session `n` at `T0 + session_time`.
fn record(status: StatusType, n: usize, session_time: Option<i64>) -> Record {
    let nas_ip = "192.168.68.117".parse().expect("address");
    let user = format!("user{n}@example.lb");
    let sid = format!("{:08x}", 0x8100_0000_usize + n);
    let framed = std::net::Ipv4Addr::from(0x0a00_0000_u32 + n as u32);
    Record {
        status,
        nas_id: Some(1),
        nas_ip,
        key: SessionKey::freeradius(
            user.as_bytes(),
            sid.as_bytes(),
            "192.168.68.117",
            b"MikroTik",
            b"bridge1",
            Some(15_728_644),
        ),
        event_time: T0 + session_time.unwrap_or(0),
        timestamped: false,
        session_time,
        input_octets: session_time.map(|s| s * 1_000),
        output_octets: session_time.map(|s| s * 3_000),
        terminate_cause: None,
        connectinfo: None,
        fields: Fields {
            username: user.into(),
            acctsessionid: sid.into(),
            nasipaddress: Some(nas_ip),
            nasportid: Some("bridge1".into()),
            nasporttype: Some("Ethernet".into()),
            acctauthentic: Some("RADIUS".into()),
            calledstationid: Some("service1".into()),
            callingstationid: Some(
                format!("F8:B4:6A:{:02X}:{:02X}:78", n % 256, n / 256 % 256).into(),
            ),
            servicetype: Some("Framed-User".into()),
            framedprotocol: Some("PPP".into()),
            framedipaddress: Some(framed.into()),
            ..Fields::default()
        },
        target: None,
    }
}

fn starts(from: usize) -> Vec<Record> {
    (from..from + BATCH)
        .map(|n| record(StatusType::Start, n, None))
        .collect()
}

fn interims(from: usize, session_time: i64) -> Vec<Record> {
    (from..from + BATCH)
        .map(|n| record(StatusType::InterimUpdate, n, Some(session_time)))
        .collect()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn store(url: &str, synchronous: SqliteSynchronous) -> Store {
    let store = Store::connect(&DatabaseConfig {
        url: url.to_owned(),
        // An in-memory database exists once per connection.
        max_connections: 1,
        sqlite_synchronous: synchronous,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// Process 256 Starts of new sessions, then 256 Interims of open ones, per iteration.
fn bench_process(c: &mut Criterion, name: &str, url: &str, synchronous: SqliteSynchronous) {
    let rt = runtime();
    let engine = rt
        .block_on(async { Engine::new(store(url, synchronous).await, Arc::new(Index::new()), 60) });
    let mut group = c.benchmark_group(format!("engine/{name}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut next = 0usize;
    group.bench_function("process 256 Start", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let batch = starts(next);
                next += BATCH;
                let t = Instant::now();
                rt.block_on(engine.process(&batch)).expect("process");
                spent += t.elapsed();
            }
            spent
        })
    });

    // Every session opened above is open; update them 256 at a time, round robin, with a
    // session time that rises per round so that every Interim changes its row.
    let open = next;
    let mut cursor = 0usize;
    let mut round = 1i64;
    group.bench_function("process 256 Interim-Update", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if cursor + BATCH > open {
                    cursor = 0;
                    round += 1;
                }
                let batch = interims(cursor, 60 * round);
                cursor += BATCH;
                let t = Instant::now();
                rt.block_on(engine.process(&batch)).expect("process");
                spent += t.elapsed();
            }
            spent
        })
    });
    group.finish();
}

fn engine_memory(c: &mut Criterion) {
    bench_process(
        c,
        "sqlite-memory",
        "sqlite::memory:",
        SqliteSynchronous::Full,
    );
}

fn engine_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench_process(c, "sqlite-file-sync-full", &url, SqliteSynchronous::Full);
}

/// Acknowledges by counting, and wakes the bench when all of a round are in.
struct Counter {
    acked: AtomicUsize,
    done: Notify,
    want: AtomicUsize,
}

struct Acks(Arc<Counter>);

impl Acknowledge for Acks {
    type Ticket = ();
    async fn ack(&self, tickets: Vec<()>) {
        let n = self.0.acked.fetch_add(tickets.len(), Ordering::SeqCst) + tickets.len();
        if n >= self.0.want.load(Ordering::SeqCst) {
            self.0.done.notify_one();
        }
    }
    fn abandon(&self, _: &()) {}
}

/// The writer with its default batch limit: 2,048 Interims queued at once (the writer
/// commits them in as many batches as `recv_many` hands it), timed until all are acked.
fn writer(c: &mut Criterion) {
    const ROUND: usize = 2_048;
    let rt = runtime();
    let counter = Arc::new(Counter {
        acked: AtomicUsize::new(0),
        done: Notify::new(),
        want: AtomicUsize::new(usize::MAX),
    });
    let (queue, rx) = mpsc::channel(65_536);
    let shutdown = CancellationToken::new();
    let engine = rt.block_on(async {
        let engine = Engine::new(
            store("sqlite::memory:", SqliteSynchronous::Full).await,
            Arc::new(Index::new()),
            60,
        );
        for from in (0..ROUND).step_by(BATCH) {
            engine.process(&starts(from)).await.expect("open");
        }
        engine
    });
    let (changes, _) = broadcast::channel(4096);
    let task = rt.spawn(
        Writer::new(
            engine,
            rx,
            Acks(Arc::clone(&counter)),
            WriterConfig {
                max_batch: 2048,
                queue_capacity: 65_536,
                retry_max_backoff: Duration::from_secs(1),
                shutdown_grace: Duration::from_secs(1),
            },
            changes,
        )
        .run(shutdown.clone(), shutdown.clone()),
    );

    let mut group = c.benchmark_group("writer/sqlite-memory");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(ROUND as u64));
    let mut round = 1i64;
    group.bench_function("2048 Interim-Update queued, until all acked", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let records: Vec<Record> = (0..ROUND / BATCH)
                    .flat_map(|k| interims(k * BATCH, 60 * round))
                    .collect();
                let target = counter.acked.load(Ordering::SeqCst) + ROUND;
                counter.want.store(target, Ordering::SeqCst);
                let t = Instant::now();
                rt.block_on(async {
                    for record in records {
                        let pending = Pending {
                            record,
                            ticket: Origin::Nas(()),
                        };
                        queue.send(pending).await.expect("queue");
                    }
                    while counter.acked.load(Ordering::SeqCst) < target {
                        counter.done.notified().await;
                    }
                });
                spent += t.elapsed();
            }
            spent
        })
    });
    group.finish();
    shutdown.cancel();
    let _ = rt.block_on(task);
}

criterion_group!(benches, engine_memory, engine_file, writer);
criterion_main!(benches);
