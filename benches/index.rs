//! Index benchmark at 1,000,000 open sessions (DESIGN.md §9): the lookups ingest makes
//! per packet, the changes the writer applies per committed row, and what the Sessions
//! API asks of it — count, the default active page, filtered scans.
//!
//! `cargo bench --bench index -- --noplot` (building the index takes a few seconds first).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use radacctd::api::params::{ListParams, Params};
use radacctd::api::scope::Scope;
use radacctd::api::sessions::active_page;
use radacctd::sessions::model::{Fields, Session};
use radacctd::sessions::{Index, SessionKey};

const OPEN: usize = 1_000_000;
const T0: i64 = 1_800_000_000;

fn key(n: usize) -> SessionKey {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(n as u64).to_le_bytes());
    k[8..].copy_from_slice(&(n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    SessionKey(k)
}

/// Session `n`: one of 16 NASes, started within the last ~11 days in no particular order.
fn session(n: usize) -> Session {
    let nas = IpAddr::V4(Ipv4Addr::new(10, 255, 0, (n % 16) as u8 + 1));
    Session {
        radacctid: n as i64 + 1,
        acctuniqueid: key(n).to_hex().into(),
        key: key(n),
        nas_id: Some((n % 16) as i64 + 1),
        fields: Fields {
            username: format!("user{n}").into(),
            acctsessionid: format!("{:08x}", 0x8100_0000_usize + n).into(),
            nasipaddress: Some(nas),
            nasportid: Some("bridge1".into()),
            nasporttype: Some("Ethernet".into()),
            calledstationid: Some("service1".into()),
            callingstationid: Some(
                format!("F8:B4:6A:{:02X}:{:02X}:78", n % 256, n / 256 % 256).into(),
            ),
            servicetype: Some("Framed-User".into()),
            framedprotocol: Some("PPP".into()),
            framedipaddress: Some(IpAddr::V4(Ipv4Addr::from(0x6400_0000_u32 + n as u32))),
            ..Fields::default()
        },
        start: T0 - ((n as i64).wrapping_mul(7_919) % 1_000_000),
        update: T0,
        stop: None,
        interval: Some(300),
        session_time: 300,
        input_octets: 1_000 * n as i64,
        output_octets: 3_000 * n as i64,
        terminate_cause: None,
        connectinfo_stop: None,
        stop_source: None,
    }
}

fn index(c: &mut Criterion) {
    let index = Index::new();
    for n in 0..OPEN {
        index.apply(&session(n));
    }
    assert_eq!(index.len(), OPEN);

    let mut group = c.benchmark_group("index-1M");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    let mut n = 0usize;
    group.bench_function("get (hit)", |b| {
        b.iter(|| {
            n = (n + 7_919) % OPEN;
            index.get(&key(n)).expect("open")
        })
    });
    group.bench_function("get_by_id", |b| {
        b.iter(|| {
            n = (n + 7_919) % OPEN;
            index.get_by_id(n as i64 + 1).expect("open")
        })
    });
    let mut fresh = OPEN;
    group.bench_function("apply open + apply close of a new session", |b| {
        b.iter_batched(
            || {
                fresh += 1;
                let open = session(fresh);
                let mut closed = open.clone();
                closed.stop = Some(T0 + 60);
                (open, closed)
            },
            |(open, closed)| {
                index.apply(&open);
                index.apply(&closed);
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("apply update of an open session", |b| {
        b.iter_batched(
            || {
                n = (n + 7_919) % OPEN;
                let mut s = session(n);
                s.session_time += 300;
                s
            },
            |s| index.apply(&s),
            BatchSize::SmallInput,
        )
    });
    assert_eq!(index.len(), OPEN);
    group.bench_function("len (count, no filter)", |b| b.iter(|| index.len()));

    let nas = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1));
    group.bench_function("count_where nasipaddress (1/16)", |b| {
        b.iter(|| index.count_where(|s| s.fields.nasipaddress == Some(nas)))
    });

    // What GET /api/sessions?status=active asks for by default: page 1 of 50, newest
    // start first, every session in scope.
    let default = ListParams::parse(&Params::default()).expect("defaults");
    group.bench_function("active page 1 (start desc, limit 50)", |b| {
        b.iter(|| active_page(&index, &Scope::All, &default))
    });
    let filtered =
        ListParams::parse(&Params::parse(Some("nas_id=1&limit=50"))).expect("nas filter");
    group.bench_function("active page 1 nas_id filter (1/16)", |b| {
        b.iter(|| active_page(&index, &Scope::All, &filtered))
    });
    let by_octets = ListParams::parse(&Params::parse(Some("sort=acctinputoctets"))).expect("sort");
    group.bench_function("active page 1 sorted by input octets", |b| {
        b.iter(|| active_page(&index, &Scope::All, &by_octets))
    });
    // The panel's search box: a substring of username, framed IP or Calling-Station-Id,
    // ASCII case ignored, over every open session.
    for (name, query) in [
        (
            "active page 1 search username (1 of 1M)",
            "search=USER999999",
        ),
        (
            "active page 1 search framed IP (64 of 1M)",
            "search=100.15.66",
        ),
        ("active page 1 search MAC (1/256)", "search=6a:0f:"),
    ] {
        let searched = ListParams::parse(&Params::parse(Some(query))).expect("search");
        group.bench_function(name, |b| {
            b.iter(|| active_page(&index, &Scope::All, &searched))
        });
    }
    group.bench_function("collect_where username contains (1 of 1M)", |b| {
        b.iter(|| index.collect_where(|s| s.fields.username.contains("user999999")))
    });
    group.finish();
}

criterion_group!(benches, index);
criterion_main!(benches);
