//! Load generator: N sessions × (Start, K Interim-Update, Stop) with correct
//! authenticators, W requests in flight, retransmission on timeout, optional pacing;
//! reports answered packets/s, p50/p99/max latency and lost answers.
//!
//! Each of the W lanes is one simulated NAS port with its own UDP socket: it sends a
//! session's packets in order, waits for each answer (retransmitting the same bytes like a
//! NAS), then starts its next session. So W is the number of requests in flight.
//!
//! ```text
//! cargo run --release --bin loadgen -- --server 127.0.0.1:1813 --secret testing123 \
//!     --sessions 20000 --interims 3 --window 256
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use radacctd::radius::attr;
use radacctd::radius::packet::build_accounting_request;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "RADIUS accounting load generator for radacctd"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:1813")]
    server: SocketAddr,
    /// Shared secret of the NAS the packets come from.
    #[arg(long, default_value = "testing123")]
    secret: String,
    /// NAS-IP-Address to put in the packets.
    #[arg(long, default_value = "127.0.0.1")]
    nas_ip: std::net::Ipv4Addr,
    /// Sessions in total.
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// Interim-Updates per session.
    #[arg(long, default_value_t = 2)]
    interims: u64,
    /// Requests in flight (lanes).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Packets per second to aim for across all lanes; 0 = as fast as answered.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Wait per transmission before retransmitting.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Transmissions per packet before counting it lost.
    #[arg(long, default_value_t = 5)]
    tries: u32,
    /// A prefix for usernames, so that runs do not collide.
    #[arg(long, default_value = "load")]
    prefix: String,
}

struct Stats {
    answered: AtomicU64,
    lost: AtomicU64,
    retransmissions: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let stats = Arc::new(Stats {
        answered: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        retransmissions: AtomicU64::new(0),
    });
    let pacer = (args.rate > 0).then(|| Arc::new(Semaphore::new(0)));
    if let (Some(p), rate) = (&pacer, args.rate) {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            // Add permits every millisecond; cap the backlog at one second's worth.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut carry = 0.0f64;
            loop {
                tick.tick().await;
                carry += rate as f64 / 1000.0;
                let whole = carry.floor() as usize;
                carry -= whole as f64;
                if p.available_permits() < rate as usize {
                    p.add_permits(whole);
                }
            }
        });
    }
    let lanes = args.window.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (args, stats, pacer) = (Arc::clone(&args), Arc::clone(&stats), pacer.clone());
        tasks.push(tokio::spawn(async move {
            run_lane(lane, lanes, &args, &stats, pacer).await
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let answered = stats.answered.load(Ordering::Relaxed);
    println!("sessions         {}", args.sessions);
    println!("packets answered {answered}");
    println!("lost answers     {}", stats.lost.load(Ordering::Relaxed));
    println!(
        "retransmissions  {}",
        stats.retransmissions.load(Ordering::Relaxed)
    );
    println!("elapsed          {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput       {:.0} packets/s",
        answered as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency          p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

/// One lane: sessions `lane`, `lane + lanes`, … in order. Returns the latency of every
/// answered packet (first transmission to answer).
async fn run_lane(
    lane: u64,
    lanes: u64,
    args: &Args,
    stats: &Stats,
    pacer: Option<Arc<Semaphore>>,
) -> anyhow::Result<Vec<Duration>> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let mut latencies = Vec::new();
    let mut id: u8 = (lane % 256) as u8;
    let mut buf = vec![0u8; 4096];
    let mut session = lane;
    while session < args.sessions {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as u32;
        // Sessions "started" a while ago so interims carry consistent session times.
        let start = now.saturating_sub(30 + 60 * args.interims as u32);
        let user = format!("{}{session}", args.prefix);
        let sid = format!("{session:08x}");
        let base = |status: u32| -> Vec<(u8, Vec<u8>)> {
            vec![
                (attr::ACCT_STATUS_TYPE, status.to_be_bytes().to_vec()),
                (attr::USER_NAME, user.as_bytes().to_vec()),
                (attr::ACCT_SESSION_ID, sid.as_bytes().to_vec()),
                (attr::NAS_IP_ADDRESS, args.nas_ip.octets().to_vec()),
                (attr::NAS_IDENTIFIER, b"loadgen".to_vec()),
                (attr::NAS_PORT_ID, b"bridge1".to_vec()),
                (attr::NAS_PORT_TYPE, 15u32.to_be_bytes().to_vec()),
                (attr::SERVICE_TYPE, 2u32.to_be_bytes().to_vec()),
                (attr::FRAMED_PROTOCOL, 1u32.to_be_bytes().to_vec()),
                (
                    attr::FRAMED_IP_ADDRESS,
                    vec![
                        10,
                        (session >> 16) as u8,
                        (session >> 8) as u8,
                        session as u8,
                    ],
                ),
                (attr::CALLING_STATION_ID, b"AA:BB:CC:DD:EE:01".to_vec()),
                (attr::ACCT_DELAY_TIME, 0u32.to_be_bytes().to_vec()),
            ]
        };
        let mut packets = Vec::with_capacity(args.interims as usize + 2);
        let mut a = base(1);
        a.push((attr::EVENT_TIMESTAMP, start.to_be_bytes().to_vec()));
        packets.push(a);
        for k in 1..=args.interims as u32 {
            let t = 60 * k;
            let mut a = base(3);
            a.push((attr::EVENT_TIMESTAMP, (start + t).to_be_bytes().to_vec()));
            a.push((attr::ACCT_SESSION_TIME, t.to_be_bytes().to_vec()));
            a.push((attr::ACCT_INPUT_OCTETS, (t * 1000).to_be_bytes().to_vec()));
            a.push((attr::ACCT_OUTPUT_OCTETS, (t * 3000).to_be_bytes().to_vec()));
            packets.push(a);
        }
        let t = 60 * args.interims as u32 + 10;
        let mut a = base(2);
        a.push((attr::EVENT_TIMESTAMP, (start + t).to_be_bytes().to_vec()));
        a.push((attr::ACCT_SESSION_TIME, t.to_be_bytes().to_vec()));
        a.push((attr::ACCT_INPUT_OCTETS, (t * 1000).to_be_bytes().to_vec()));
        a.push((attr::ACCT_OUTPUT_OCTETS, (t * 3000).to_be_bytes().to_vec()));
        a.push((attr::ACCT_TERMINATE_CAUSE, 1u32.to_be_bytes().to_vec()));
        packets.push(a);

        for attrs in packets {
            if let Some(p) = &pacer {
                p.acquire().await?.forget();
            }
            id = id.wrapping_add(1);
            let pkt = build_accounting_request(id, args.secret.as_bytes(), &attrs);
            let sent = Instant::now();
            let mut answered = false;
            for attempt in 0..args.tries {
                if attempt > 0 {
                    stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                }
                socket.send_to(&pkt, args.server).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_millis(args.timeout_ms);
                loop {
                    match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                        Err(_) => break,
                        Ok(Err(_)) => break,
                        Ok(Ok((n, _))) => {
                            let r = &buf[..n];
                            if n >= 20
                                && r[0] == 5
                                && r[1] == id
                                && radius::core::packet::Packet::is_authentic_response(
                                    r,
                                    &pkt,
                                    args.secret.as_bytes(),
                                )
                            {
                                answered = true;
                                break;
                            }
                        }
                    }
                }
                if answered {
                    break;
                }
            }
            if answered {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                latencies.push(sent.elapsed());
            } else {
                stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        session += lanes;
    }
    Ok(latencies)
}
