//! Codec benchmark: frame + verify the Request Authenticator + extract the record + encode
//! the Accounting-Response, for a MikroTik PPPoE Interim-Update — the per-packet work of
//! the listener before the writer.

use criterion::{Criterion, criterion_group, criterion_main};
use radacctd::ingest::request::Extractor;
use radacctd::radius::packet::{Frame, build_accounting_request, vsa};
use radacctd::radius::{Dictionary, attr};

fn interim() -> Vec<u8> {
    let u = |v: u32| v.to_be_bytes().to_vec();
    build_accounting_request(
        42,
        b"s3cret",
        &[
            (attr::ACCT_STATUS_TYPE, u(3)),
            (attr::USER_NAME, b"user1@example.lb".to_vec()),
            (attr::ACCT_SESSION_ID, b"81000004".to_vec()),
            (attr::NAS_IP_ADDRESS, vec![192, 168, 68, 117]),
            (attr::NAS_IDENTIFIER, b"MikroTik".to_vec()),
            (attr::NAS_PORT_ID, b"bridge1".to_vec()),
            (attr::NAS_PORT, u(15_728_644)),
            (attr::NAS_PORT_TYPE, u(15)),
            (attr::SERVICE_TYPE, u(2)),
            (attr::FRAMED_PROTOCOL, u(1)),
            (attr::FRAMED_IP_ADDRESS, vec![10, 10, 10, 251]),
            (attr::CALLING_STATION_ID, b"F8:B4:6A:C1:71:78".to_vec()),
            (attr::CALLED_STATION_ID, b"service1".to_vec()),
            (attr::EVENT_TIMESTAMP, u(1_800_000_000)),
            (attr::ACCT_DELAY_TIME, u(0)),
            (attr::ACCT_SESSION_TIME, u(3600)),
            (attr::ACCT_INPUT_OCTETS, u(4_164_618)),
            (attr::ACCT_OUTPUT_OCTETS, u(7_308_659)),
            (attr::ACCT_INPUT_GIGAWORDS, u(1)),
            (attr::ACCT_OUTPUT_GIGAWORDS, u(0)),
            (
                attr::VENDOR_SPECIFIC,
                vsa(attr::VENDOR_MIKROTIK, 10, &[10, 10, 10, 251]),
            ),
        ],
    )
}

fn codec(c: &mut Criterion) {
    let dictionary = Dictionary::embedded().expect("embedded dictionary");
    let extractor = Extractor {
        dictionary: &dictionary,
        skew_secs: 300,
    };
    let packet = interim();
    let source = "192.168.68.117".parse().expect("address");
    c.bench_function("interim: frame+verify+extract+reply", |b| {
        b.iter(|| {
            let frame = Frame::parse(std::hint::black_box(&packet)).expect("frame");
            assert!(frame.accounting_request_is_authentic(b"s3cret"));
            let record = extractor
                .extract(&frame, source, Some(1), 1_800_000_000)
                .expect("record");
            let reply = frame.accounting_response(b"s3cret").expect("reply");
            (record, reply)
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
