//! PostgreSQL restarted in the middle of traffic: nothing acknowledged is lost and nothing
//! is applied twice. Runs on a cluster of its own (scripts/pg-cluster.sh) so that the
//! restart does not disturb the other tests sharing the suite's cluster.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use radacctd::app::Server;

use crate::harness::{
    Acct, Backend, RadClient, SECRET, TestDb, config, now, rows, scalar, skip_postgres,
};

struct Cluster {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh")
}

impl Cluster {
    fn start() -> (Cluster, String) {
        let dir = tempfile::Builder::new()
            .prefix("radacctd-pgr")
            .tempdir_in("/tmp")
            .unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot start a cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (Cluster { dir }, url)
    }

    fn restart(path: PathBuf, down_secs: u32) {
        let out = Command::new("bash")
            .arg(script())
            .arg("restart")
            .arg(&path)
            .env("PG_DOWN_SECS", down_secs.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("destroy")
            .arg(self.dir.path())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_during_traffic_loses_nothing_and_applies_nothing_twice() {
    if skip_postgres() {
        return;
    }
    let (cluster, url) = Cluster::start();
    let mut db = TestDb::new(Backend::Sqlite).await;
    db.backend = Backend::Postgres;
    db.url = url;
    let server = Server::start(config(&db, "")).await.unwrap();
    let addr = server.radius_addr;

    const SESSIONS: usize = 40;
    let t0 = now() - 200;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        tasks.push(tokio::spawn(async move {
            // Sessions spread over ~4 s, so that traffic keeps arriving before, during and
            // after the outage.
            tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
            let client = RadClient::new(addr, SECRET).await;
            let (u, sid) = (format!("r{i}"), format!("{i}"));
            let packets = [
                Acct::start(&u, &sid).at(t0),
                Acct::interim(&u, &sid)
                    .at(t0 + 60)
                    .time(60)
                    .octets(600, 1200),
                Acct::stop(&u, &sid)
                    .at(t0 + 90)
                    .time(90)
                    .octets(900, 1800)
                    .cause(1),
            ];
            // (first sent, answered) of each acknowledged packet.
            let mut acked = Vec::new();
            for p in &packets {
                let bytes = p.encode(client.next_id(), SECRET);
                let sent = Instant::now();
                // Like a NAS: retransmit the same packet until answered (up to ~15 s).
                if client
                    .exchange(&bytes, 60, Duration::from_millis(250))
                    .await
                    .is_some()
                {
                    acked.push((sent, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = cluster.dir.path().to_owned();
    let down_from = Instant::now();
    tokio::task::spawn_blocking(move || Cluster::restart(path, 2))
        .await
        .unwrap();
    let back = Instant::now();

    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(
        acked.len(),
        SESSIONS * 3,
        "every packet was acknowledged after the restart"
    );
    // The restart really happened in the middle of the traffic: packets were answered
    // before it, and packets first sent while PostgreSQL was down were answered only after.
    let before = acked.iter().filter(|(_, a)| *a < down_from).count();
    let across = acked
        .iter()
        .filter(|(s, a)| *s >= down_from && *s < back && *a >= back)
        .count();
    assert!(
        before > 0 && across > 0,
        "traffic did not straddle the restart ({before} answered before it, {across} \
         sent during it; restart took {:?} after {:?})",
        back - down_from,
        down_from - started
    );
    let rows = rows(&server.store).await;
    assert_eq!(rows.len(), SESSIONS, "one row per session: {rows:#?}");
    for r in &rows {
        assert_eq!(r.stop, Some(i64::from(t0 + 90)), "{r:?}");
        assert_eq!(
            (r.input, r.output, r.session_time),
            (Some(900), Some(1800), Some(90)),
            "{r:?}"
        );
    }
    assert_eq!(
        scalar(&server.store, "SELECT COUNT(*) FROM radacct_events").await,
        (SESSIONS * 3) as i64,
        "each packet applied exactly once"
    );
    assert!(server.index.is_empty());
    server.stop().await;
}
