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
    /// Give every session the same Calling-Station-Id and the same counters, as loadgen
    /// did in benchmark rounds 1–6. By default each session has its own MAC address and
    /// its own traffic rate, scattered like real subscribers', so that the database's
    /// indexes on the MAC and on the octet counters take inserts at random places as in
    /// production (with the same values they were appends).
    #[arg(long)]
    uniform: bool,
}

/// The session number times an odd constant modulo 2^24: a bijection on 24 bits (distinct
/// values for 2^24 sessions) whose high bits are scattered.
fn scramble(session: u64) -> u32 {
    (session as u32).wrapping_mul(0x9E37_79B1) & 0x00FF_FFFF
}

/// The Calling-Station-Id of `session`, in MikroTik's notation.
fn mac_of(session: u64, uniform: bool) -> String {
    if uniform {
        return "AA:BB:CC:DD:EE:01".to_owned();
    }
    let x = scramble(session);
    format!(
        "AA:BB:CC:{:02X}:{:02X}:{:02X}",
        (x >> 16) as u8,
        (x >> 8) as u8,
        x as u8
    )
}

/// Acct-Input-Octets and Acct-Output-Octets of `session` after `t` seconds: 1,000 and
/// 3,000 bytes/s when `uniform`, otherwise a rate of its own of up to 4 MB/s in and out
/// (32-bit counters hold it for the sessions loadgen makes, under 1,000 s).
fn octets_of(session: u64, t: u32, uniform: bool) -> (u32, u32) {
    if uniform {
        return (t * 1000, t * 3000);
    }
    let x = scramble(session);
    (t * (1 + (x >> 12)) * 1000, t * (1 + (x & 0xFFF)) * 1000)
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
        let mac = mac_of(session, args.uniform);
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
                (attr::CALLING_STATION_ID, mac.as_bytes().to_vec()),
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
            let (input, output) = octets_of(session, t, args.uniform);
            a.push((attr::ACCT_INPUT_OCTETS, input.to_be_bytes().to_vec()));
            a.push((attr::ACCT_OUTPUT_OCTETS, output.to_be_bytes().to_vec()));
            packets.push(a);
        }
        let t = 60 * args.interims as u32 + 10;
        let mut a = base(2);
        a.push((attr::EVENT_TIMESTAMP, (start + t).to_be_bytes().to_vec()));
        a.push((attr::ACCT_SESSION_TIME, t.to_be_bytes().to_vec()));
        let (input, output) = octets_of(session, t, args.uniform);
        a.push((attr::ACCT_INPUT_OCTETS, input.to_be_bytes().to_vec()));
        a.push((attr::ACCT_OUTPUT_OCTETS, output.to_be_bytes().to_vec()));
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

#[cfg(test)]
mod tests {
    use super::{mac_of, octets_of};

    #[test]
    fn macs_are_distinct_scattered_and_well_formed() {
        let macs: std::collections::HashSet<String> =
            (0..200_000).map(|s| mac_of(s, false)).collect();
        assert_eq!(macs.len(), 200_000);
        let (a, b) = (mac_of(1, false), mac_of(2, false));
        assert_ne!(
            a[9..11],
            b[9..11],
            "consecutive sessions share the high octet: {a} {b}"
        );
        assert_eq!(a.len(), 17);
        assert!(a.starts_with("AA:BB:CC:"));
        assert_eq!(mac_of(7, true), "AA:BB:CC:DD:EE:01");
    }

    #[test]
    fn octets_grow_with_time_and_differ_between_sessions() {
        assert_eq!(octets_of(5, 60, true), (60_000, 180_000));
        for s in 0..1000 {
            let (i1, o1) = octets_of(s, 60, false);
            let (i2, o2) = octets_of(s, 130, false);
            assert!(i2 > i1 && o2 > o1, "session {s}");
        }
        // u32 holds a long loadgen session at the highest rate.
        let (i, o) = octets_of(0x00FF_FFFF, 999, false);
        assert!(i > 0 && o > 0);
        assert_ne!(octets_of(1, 60, false), octets_of(2, 60, false));
    }
}
