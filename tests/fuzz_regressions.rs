//! The fuzz targets' inputs replayed on stable Rust: every committed seed under
//! `fuzz/seeds/`, every input a fuzzer run ever failed on, and hand-made hostile inputs,
//! each through the same checks the fuzzer runs (`fuzz/src/lib.rs`, included below) and
//! with the concrete outcome it must have. Its own test binary because the packet checks
//! switch TRACE logging on for the whole process.
//!
//! Seed naming: `ok-*` must be accepted, `err-*` rejected. `write_seed_corpus` (ignored)
//! regenerates the seeds from the fixtures in `../shared/fixtures/mikrotik/`, transcribed
//! here, and from `dictionaries/`.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::{
    DictionaryOutcome, PacketOutcome, ROUTER_PASSWORD, RouterOsOutcome, SECRET, decode_stream,
    join_dictionary_input,
};
use radacctd::coa::routeros::{Reply, challenge_response, encode_length, encode_sentence};
use radacctd::ingest::request::Skip;
use radacctd::radius::Dictionary;
use radacctd::radius::attr;
use radacctd::radius::packet::{
    HEADER_LEN, PacketError, build_accounting_request, sign_accounting_request, vsa,
};
use radacctd::sessions::Record;
use radacctd::sessions::model::StatusType;

// ---------------------------------------------------------------------------------------
// Seeds

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

/// `(file name, bytes)` of every committed seed of `target`, sorted by name.
fn committed_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<_> = std::fs::read_dir(seed_dir(target))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

fn u32v(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// Accounting-Requests transcribed from `mikrotik_v7_hotspot_acct_start_stop.txt`,
/// `mikrotik_v6_hotspot_acct_start_interim_2018.txt` and `mikrotik_pppoe_radacct_rows.txt`,
/// signed with the fuzz secret.
fn packet_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let v7_common = |status: u32| {
        vec![
            (attr::ACCT_STATUS_TYPE, u32v(status)),
            (attr::NAS_PORT_TYPE, u32v(19)),
            (attr::CALLING_STATION_ID, b"BC:24:11:EB:56:4D".to_vec()),
            (attr::CALLED_STATION_ID, b"hs-vlan888-hotspot".to_vec()),
            (attr::NAS_PORT_ID, b"vlan888-hotspot".to_vec()),
            (attr::USER_NAME, b"thepumper".to_vec()),
            (attr::NAS_PORT, u32v(2_148_532_244)),
            (attr::ACCT_SESSION_ID, b"80100014".to_vec()),
            (attr::FRAMED_IP_ADDRESS, vec![10, 5, 88, 2]),
            (
                attr::VENDOR_SPECIFIC,
                vsa(attr::VENDOR_MIKROTIK, 10, &[10, 5, 88, 2]),
            ),
        ]
    };
    let mut v7_start = v7_common(1);
    v7_start.extend([
        (attr::EVENT_TIMESTAMP, u32v(1_782_754_382)),
        (attr::NAS_IDENTIFIER, b"KhwanrichaiHome".to_vec()),
        (attr::ACCT_DELAY_TIME, u32v(0)),
        (attr::NAS_IP_ADDRESS, vec![10, 0, 0, 1]),
    ]);
    let mut v7_stop = v7_common(2);
    v7_stop.insert(1, (attr::ACCT_TERMINATE_CAUSE, u32v(1)));
    v7_stop.extend([
        (attr::EVENT_TIMESTAMP, u32v(1_782_754_387)),
        (attr::ACCT_INPUT_OCTETS, u32v(56)),
        (attr::ACCT_OUTPUT_OCTETS, u32v(56)),
        (attr::ACCT_INPUT_GIGAWORDS, u32v(0)),
        (attr::ACCT_OUTPUT_GIGAWORDS, u32v(0)),
        (attr::ACCT_INPUT_PACKETS, u32v(1)),
        (attr::ACCT_OUTPUT_PACKETS, u32v(1)),
        (attr::ACCT_SESSION_TIME, u32v(5)),
        (attr::NAS_IDENTIFIER, b"KhwanrichaiHome".to_vec()),
        (attr::ACCT_DELAY_TIME, u32v(0)),
        (attr::NAS_IP_ADDRESS, vec![10, 0, 0, 1]),
    ]);
    let v6_interim = vec![
        (attr::ACCT_STATUS_TYPE, u32v(3)),
        (attr::NAS_PORT_TYPE, u32v(19)),
        (attr::CALLING_STATION_ID, b"40:D3:AE:04:32:0C".to_vec()),
        (attr::CALLED_STATION_ID, b"hotspot1".to_vec()),
        (attr::NAS_PORT_ID, b"HotSpot".to_vec()),
        (attr::USER_NAME, b"40:D3:AE:04:32:0C".to_vec()),
        (attr::NAS_PORT, u32v(2_150_629_507)),
        (attr::ACCT_SESSION_ID, b"80300083".to_vec()),
        (attr::FRAMED_IP_ADDRESS, vec![192, 168, 2, 11]),
        (
            attr::VENDOR_SPECIFIC,
            vsa(attr::VENDOR_MIKROTIK, 10, &[192, 168, 2, 11]),
        ),
        (attr::EVENT_TIMESTAMP, u32v(1_520_267_087)),
        (attr::ACCT_INPUT_OCTETS, u32v(162_181)),
        (attr::ACCT_OUTPUT_OCTETS, u32v(755_131)),
        (attr::ACCT_INPUT_GIGAWORDS, u32v(0)),
        (attr::ACCT_OUTPUT_GIGAWORDS, u32v(0)),
        (attr::ACCT_INPUT_PACKETS, u32v(879)),
        (attr::ACCT_OUTPUT_PACKETS, u32v(919)),
        (attr::NAS_IDENTIFIER, b"8t37nd4K5ekznE7a".to_vec()),
        (attr::NAS_IP_ADDRESS, vec![10, 231, 0, 214]),
    ];
    // radacct row 3 (81000004) as the Stop that produced it, plus what a proxy adds.
    let pppoe_stop = vec![
        (attr::ACCT_STATUS_TYPE, u32v(2)),
        (attr::USER_NAME, b"bob".to_vec()),
        (attr::ACCT_SESSION_ID, b"81000004".to_vec()),
        (attr::NAS_IP_ADDRESS, vec![192, 168, 68, 117]),
        (attr::NAS_PORT_ID, b"bridge1".to_vec()),
        (attr::NAS_PORT_TYPE, u32v(15)),
        (attr::SERVICE_TYPE, u32v(2)),
        (attr::FRAMED_PROTOCOL, u32v(1)),
        (attr::ACCT_AUTHENTIC, u32v(1)),
        (attr::FRAMED_IP_ADDRESS, vec![0, 0, 0, 0]),
        (attr::CALLED_STATION_ID, b"service1".to_vec()),
        (attr::CALLING_STATION_ID, b"F8:B4:6A:C1:71:78".to_vec()),
        (attr::ACCT_TERMINATE_CAUSE, u32v(1)),
        (attr::ACCT_SESSION_TIME, u32v(70)),
        (attr::ACCT_INPUT_OCTETS, u32v(2958)),
        (attr::ACCT_OUTPUT_OCTETS, u32v(144)),
        (attr::EVENT_TIMESTAMP, u32v(1_644_331_447)),
        (attr::CLASS, b"\x00\x01class".to_vec()),
        (attr::PROXY_STATE, b"proxy-1".to_vec()),
        (
            attr::VENDOR_SPECIFIC,
            vsa(attr::VENDOR_MIKROTIK, 8, b"10M/20M"),
        ),
        (attr::PROXY_STATE, b"proxy-2".to_vec()),
    ];
    vec![
        (
            "ok-v7-hotspot-start.bin",
            build_accounting_request(45, SECRET, &v7_start),
        ),
        (
            "ok-v7-hotspot-stop.bin",
            build_accounting_request(46, SECRET, &v7_stop),
        ),
        (
            "ok-v6-hotspot-interim.bin",
            build_accounting_request(7, SECRET, &v6_interim),
        ),
        (
            "ok-pppoe-stop.bin",
            build_accounting_request(3, SECRET, &pppoe_stop),
        ),
    ]
}

/// The shipped dictionary tree, and small files exercising each keyword.
fn dictionary_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dictionaries");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (n != "dictionary", n.clone()));
    let texts: Vec<(String, Vec<u8>)> = names
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();
    let tree: Vec<(&str, &[u8])> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_slice()))
        .collect();
    let shipped = |name: &str| {
        let (name, text) = tree.iter().find(|(n, _)| *n == name).unwrap();
        (*name, *text)
    };
    vec![
        ("ok-shipped-tree", join_dictionary_input(&tree)),
        // A smaller real tree, quicker for the fuzzer to mutate than the whole one.
        (
            "ok-shipped-mikrotik",
            join_dictionary_input(&[
                (
                    "dictionary",
                    b"$INCLUDE dictionary.rfc2866\n$INCLUDE dictionary.mikrotik\n",
                ),
                shipped("dictionary.rfc2866"),
                shipped("dictionary.mikrotik"),
            ]),
        ),
        (
            "ok-vendor-block",
            join_dictionary_input(&[(
                "dictionary",
                b"VENDOR Acme 9999 format=2,1\nBEGIN-VENDOR Acme\n\
                  ATTRIBUTE Acme-Mode 300 integer has_tag,encrypt=2\n\
                  VALUE Acme-Mode On 1\nVALUE Acme-Mode Off 0x0\nEND-VENDOR Acme\n\
                  ATTRIBUTE Old-Style 5 string Acme\nATTRIBUTE Blob 6 octets[16]\n",
            )]),
        ),
        (
            "ok-includes",
            join_dictionary_input(&[
                (
                    "dictionary",
                    b"$INCLUDE common\n$INCLUDE- absent\n$INCLUDE common\n",
                ),
                ("common", b"ATTRIBUTE S 9 signed\nVALUE S Minus-One -1\n"),
            ]),
        ),
        (
            "err-include-cycle",
            join_dictionary_input(&[
                ("dictionary", b"$INCLUDE a\n"),
                ("a", b"ATTRIBUTE A 1 integer\n$INCLUDE dictionary\n"),
            ]),
        ),
    ]
}

/// A router's side of a disconnect, as `encode_sentence` frames it.
fn router(step: u8, sentences: &[&[&str]]) -> Vec<u8> {
    let mut out = vec![step];
    for words in sentences {
        out.extend(encode_sentence(words));
    }
    out
}

const ROW: &[&str] = &[
    "!re",
    "=.id=*1",
    "=name=user1",
    "=address=10.0.0.7",
    "=caller-id=F8:B4:6A:C1:71:78",
    "=session-id=0x81C00002",
];

/// Router replies built from `routeros_api_vectors.txt`.
fn routeros_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let removal: &[&[&str]] = &[&["!done"], ROW, &["!done"], &["!done"]];
    vec![
        ("ok-plain-login-remove.bin", router(0, removal)),
        ("ok-plain-login-remove-bytewise.bin", router(1, removal)),
        (
            "ok-challenge-login-empty.bin",
            router(
                0,
                &[
                    &["!done", "=ret=93b438ec9b80057c06dd9fe67d56aa9a"],
                    &["!done"],
                    &["!empty", ".tag=7"],
                    &["!done"],
                ],
            ),
        ),
        (
            "err-trap-on-remove.bin",
            router(
                3,
                &[
                    &["!done"],
                    ROW,
                    &["!done"],
                    &["!trap", "=category=2", "=message=no such item"],
                    &["!done"],
                ],
            ),
        ),
        (
            "err-fatal.bin",
            router(
                5,
                &[&["!done"], &["!fatal", "session terminated on request"]],
            ),
        ),
    ]
}

/// Regenerates `fuzz/seeds/`. Run after changing a generator above:
/// `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand to regenerate the seed corpus"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("packet", packet_seeds()),
        ("dictionary", dictionary_seeds()),
        ("routeros", routeros_seeds()),
    ] {
        let dir = seed_dir(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn expects_ok(name: &str) -> bool {
    match name.split('-').next() {
        Some("ok") => true,
        Some("err") => false,
        _ => panic!("seed {name} is named neither ok-* nor err-*"),
    }
}

#[test]
fn committed_seeds_are_the_generated_ones_where_not_taken_from_dictionaries() {
    // The shipped-tree seeds follow `dictionaries/`, so only their presence is checked.
    for (target, generated) in [
        ("packet", packet_seeds()),
        ("dictionary", dictionary_seeds()),
        ("routeros", routeros_seeds()),
    ] {
        let committed = committed_seeds(target);
        let names: Vec<&str> = committed.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected: Vec<&str> = generated.iter().map(|(n, _)| *n).collect();
        expected.sort_unstable();
        assert_eq!(names, expected, "{target}: run write_seed_corpus");
        for (name, bytes) in generated {
            if !name.starts_with("ok-shipped-") {
                let on_disk = &committed.iter().find(|(n, _)| n == name).unwrap().1;
                assert_eq!(on_disk, &bytes, "{target}/{name}: run write_seed_corpus");
            }
        }
    }
}

#[test]
fn packet_seeds_verify_and_become_records() {
    let seeds = committed_seeds("packet");
    assert!(seeds.len() >= 4);
    for (name, bytes) in seeds {
        assert!(expects_ok(&name), "{name}");
        let out = harness::packet(&bytes);
        assert_eq!(out.frame, Ok(()), "{name}");
        assert!(out.authentic_as_sent, "{name}: signed with the fuzz secret");
        assert_eq!(out.message_authenticator, None, "{name}");
        assert!(matches!(out.extracted, Some(Ok(_))), "{name}: {out:?}");
    }
}

#[test]
fn dictionary_seeds_load_or_fail_as_named() {
    let seeds = committed_seeds("dictionary");
    assert!(seeds.len() >= 4);
    for (name, bytes) in seeds {
        let out = harness::dictionary(&bytes);
        assert_eq!(out.memory.is_ok(), expects_ok(&name), "{name}: {out:?}");
        let disk = out.disk.expect("seeds are safe to write to disk");
        assert_eq!(disk.is_ok(), expects_ok(&name), "{name}: {disk:?}");
    }
}

#[test]
fn the_shipped_tree_seed_is_the_embedded_dictionary() {
    let (_, bytes) = committed_seeds("dictionary")
        .into_iter()
        .find(|(n, _)| n == "ok-shipped-tree")
        .unwrap();
    let out = harness::dictionary(&bytes);
    let embedded = Dictionary::embedded().unwrap();
    for dict in [out.memory.unwrap(), out.disk.unwrap().unwrap()] {
        assert_eq!(dict.len(), embedded.len());
        assert_eq!(
            dict.attribute(attr::VENDOR_MIKROTIK, 10).unwrap().name,
            "Mikrotik-Host-IP"
        );
    }
}

#[test]
fn routeros_seeds_decode_and_disconnect_as_named() {
    let seeds = committed_seeds("routeros");
    assert!(seeds.len() >= 5);
    for (name, bytes) in seeds {
        let out = harness::routeros(&bytes);
        assert_eq!(out.decode_error, None, "{name}");
        assert!(out.replies.iter().all(Result::is_ok), "{name}: {out:?}");
        assert_eq!(out.disconnect.is_ok(), expects_ok(&name), "{name}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Packets

/// A signed Accounting-Request whose attribute area is `attrs` verbatim, so that attribute
/// headers can lie.
fn raw_request(attrs: &[u8]) -> Vec<u8> {
    let mut buf = vec![4, 9, 0, 0];
    buf.extend_from_slice(&[0; 16]);
    buf.extend_from_slice(attrs);
    let len = u16::try_from(buf.len()).unwrap();
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    sign_accounting_request(&mut buf, SECRET);
    buf
}

fn status(v: u32) -> Vec<u8> {
    let mut a = vec![attr::ACCT_STATUS_TYPE, 6];
    a.extend(v.to_be_bytes());
    a
}

fn record(out: PacketOutcome) -> Record {
    match out.extracted {
        Some(Ok(record)) => record,
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn v7_hotspot_stop_seed_is_recorded_like_freeradius() {
    let (_, bytes) = packet_seeds()
        .into_iter()
        .find(|(n, _)| *n == "ok-v7-hotspot-stop.bin")
        .unwrap();
    let r = record(harness::packet(&bytes));
    assert_eq!(r.status, StatusType::Stop);
    assert_eq!(&*r.fields.username, "thepumper");
    assert_eq!(&*r.fields.acctsessionid, "80100014");
    assert_eq!(r.nas_ip.to_string(), "10.0.0.1");
    assert_eq!(r.fields.nasporttype.as_deref(), Some("Wireless-802.11"));
    assert_eq!(r.terminate_cause.as_deref(), Some("User-Request"));
    assert_eq!(r.fields.framedipaddress, Some("10.5.88.2".parse().unwrap()));
    assert_eq!((r.input_octets, r.output_octets), (Some(56), Some(56)));
    assert_eq!(r.session_time, Some(5));
    // The capture is from 2026; against the harness's arrival time it is skewed and the
    // arrival time is used.
    assert_eq!(r.event_time, harness::ARRIVAL);
}

#[test]
fn truncated_headers_are_too_short() {
    let full = raw_request(&status(1));
    for len in 0..HEADER_LEN {
        let out = harness::packet(&full[..len]);
        assert_eq!(out.frame, Err(PacketError::TooShort(len)));
        assert!(out.extracted.is_none());
    }
}

#[test]
fn length_field_outside_the_datagram_or_the_rfc_range_is_rejected() {
    let good = raw_request(&status(1));
    let with_length = |declared: u16, extra: usize| {
        let mut b = good.clone();
        b.resize(good.len() + extra, 0);
        b[2..4].copy_from_slice(&declared.to_be_bytes());
        b
    };
    let received = good.len();
    for (declared, extra) in [
        (u16::try_from(received).unwrap() + 1, 0),
        (u16::MAX, 0),
        (19, 0),
        (0, 0),
        // Larger than RFC 2865 allows even though the datagram holds it.
        (4097, 4097 - received),
    ] {
        let b = with_length(declared, extra);
        assert_eq!(
            harness::packet(&b).frame,
            Err(PacketError::BadLength {
                declared: usize::from(declared),
                received: b.len()
            })
        );
    }
    // A header alone is a well-formed packet without attributes: no status, no record.
    let mut header_only = good[..HEADER_LEN].to_vec();
    header_only[2..4].copy_from_slice(&20u16.to_be_bytes());
    let out = harness::packet(&header_only);
    assert!(matches!(out.extracted, Some(Err(Skip::MissingStatusType))));
}

#[test]
fn padding_beyond_the_declared_length_is_ignored() {
    let mut b = raw_request(&status(1));
    b.extend_from_slice(&[0xFF; 300]);
    let out = harness::packet(&b);
    assert!(out.authentic_as_sent);
    assert_eq!(record(out).status, StatusType::Start);
}

#[test]
fn attribute_lengths_zero_one_and_overflowing_are_rejected() {
    for attrs in [
        vec![attr::USER_NAME, 0],
        vec![attr::USER_NAME, 1, b'x', b'y'],
        vec![attr::USER_NAME, 9, b'x'],
        vec![attr::USER_NAME, 255],
    ] {
        let out = harness::packet(&raw_request(&attrs));
        assert_eq!(
            out.frame,
            Err(PacketError::BadAttribute(HEADER_LEN)),
            "{attrs:?}"
        );
    }
    // A good attribute followed by half an attribute header.
    let mut attrs = status(1);
    attrs.push(attr::USER_NAME);
    let out = harness::packet(&raw_request(&attrs));
    assert_eq!(out.frame, Err(PacketError::BadAttribute(HEADER_LEN + 6)));
}

#[test]
fn empty_values_and_wrong_sizes_are_ignored_not_fatal() {
    let mut attrs = status(1);
    attrs.extend([attr::USER_NAME, 2]);
    attrs.extend([attr::NAS_PORT, 5, 1, 2, 3]);
    attrs.extend([attr::FRAMED_IP_ADDRESS, 2]);
    attrs.extend([attr::ACCT_INPUT_OCTETS, 7, 0, 0, 0, 0, 1]);
    let r = record(harness::packet(&raw_request(&attrs)));
    assert_eq!(&*r.fields.username, "");
    assert_eq!(r.fields.framedipaddress, None);
    assert_eq!(r.input_octets, None);
    // A 3-octet Acct-Status-Type is no status at all.
    let out = harness::packet(&raw_request(&[attr::ACCT_STATUS_TYPE, 5, 0, 0, 1]));
    assert!(matches!(out.extracted, Some(Err(Skip::MissingStatusType))));
    let out = harness::packet(&raw_request(&status(15)));
    assert!(matches!(out.extracted, Some(Err(Skip::Unrecorded(15)))));
}

#[test]
fn a_maximum_size_packet_of_tiny_attributes_is_accepted() {
    let mut attrs = status(3);
    while attrs.len() + HEADER_LEN + 2 <= 4096 {
        attrs.extend([attr::PROXY_STATE, 2]);
    }
    let b = raw_request(&attrs);
    assert_eq!(b.len(), 4096);
    let r = record(harness::packet(&b));
    assert_eq!(r.status, StatusType::InterimUpdate);
}

fn vendor_specific(value: &[u8]) -> Vec<u8> {
    let mut a = vec![
        attr::VENDOR_SPECIFIC,
        u8::try_from(value.len() + 2).unwrap(),
    ];
    a.extend_from_slice(value);
    a
}

#[test]
fn broken_vendor_specific_attributes_are_skipped() {
    let host_ip = vsa(attr::VENDOR_MIKROTIK, 10, &[10, 5, 88, 2]);
    let mut sub_len_zero = host_ip.clone();
    sub_len_zero[5] = 0;
    let mut sub_len_one = host_ip.clone();
    sub_len_one[5] = 1;
    let mut sub_too_long = host_ip.clone();
    sub_too_long[5] = 200;
    let mut nested = attr::VENDOR_MIKROTIK.to_be_bytes().to_vec();
    nested.extend([26, 2 + host_ip.len() as u8]);
    nested.extend(&host_ip);
    for (what, value) in [
        ("empty", vec![]),
        ("vendor id cut short", vec![0, 0, 0x3a]),
        ("sub-attribute length 0", sub_len_zero),
        ("sub-attribute length 1", sub_len_one),
        ("sub-attribute past the end", sub_too_long),
        (
            "Host-IP of 3 octets",
            vsa(attr::VENDOR_MIKROTIK, 10, &[10, 5, 88]),
        ),
        ("a VSA inside a VSA", nested),
        ("unknown vendor", vsa(99_999, 10, &[10, 5, 88, 2])),
    ] {
        let mut attrs = status(1);
        attrs.extend(vendor_specific(&value));
        let r = record(harness::packet(&raw_request(&attrs)));
        assert_eq!(r.fields.framedipaddress, None, "{what}");
    }
}

#[test]
fn a_vendor_specific_of_maximum_size_full_of_sub_attributes_is_decoded() {
    // 253 octets, the most an attribute holds: the vendor id, 30 Rate-Limits, the
    // Host-IP, and a 1-octet Realm.
    let mut value = attr::VENDOR_MIKROTIK.to_be_bytes().to_vec();
    for _ in 0..30 {
        value.extend([8, 8]);
        value.extend(b"10M/20");
    }
    value.extend([10, 6, 10, 5, 88, 2]);
    value.extend([9, 3, b'x']);
    assert_eq!(value.len(), 253);
    let mut attrs = status(1);
    attrs.extend(vendor_specific(&value));
    let r = record(harness::packet(&raw_request(&attrs)));
    assert_eq!(r.fields.framedipaddress, Some("10.5.88.2".parse().unwrap()));
}

#[test]
fn non_utf8_and_nul_in_strings_are_stored_as_valid_text() {
    let mut attrs = status(1);
    attrs.extend([attr::USER_NAME, 7, 0xC3, 0x28, 0, 0xFF, b'a']);
    attrs.extend([attr::ACCT_SESSION_ID, 4, 0xED, 0xA0]);
    let r = record(harness::packet(&raw_request(&attrs)));
    assert_eq!(&*r.fields.username, "\u{fffd}(\u{fffd}a");
    assert_eq!(&*r.fields.acctsessionid, "\u{fffd}\u{fffd}");
}

#[test]
fn message_authenticator_of_the_wrong_size_fails_verification() {
    let mut attrs = status(1);
    attrs.extend([attr::MESSAGE_AUTHENTICATOR, 6, 1, 2, 3, 4]);
    let out = harness::packet(&raw_request(&attrs));
    assert_eq!(out.message_authenticator, Some(false));
}

#[test]
fn packets_with_another_code_never_verify_as_sent() {
    for code in [1u8, 2, 5, 12, 40, 255] {
        let mut b = raw_request(&status(1));
        b[0] = code;
        let out = harness::packet(&b);
        assert!(!out.authentic_as_sent, "code {code}");
        // The harness re-codes it as an Accounting-Request to reach extraction.
        assert_eq!(record(out).status, StatusType::Start);
    }
}

// ---------------------------------------------------------------------------------------
// Dictionaries

fn dict_one(text: &str) -> DictionaryOutcome {
    harness::dictionary(&join_dictionary_input(&[("dictionary", text.as_bytes())]))
}

fn dict_err(text: &str) -> (usize, String) {
    let out = dict_one(text);
    let e = out.memory.expect_err(text);
    let disk = out.disk.expect("safe on disk").expect_err(text);
    assert_eq!((disk.line, &disk.message), (e.line, &e.message), "{text}");
    (e.line, e.message)
}

#[test]
fn bad_and_huge_numbers_are_errors_with_their_line() {
    for (text, line) in [
        ("ATTRIBUTE A 0x integer\n", 1),
        ("ATTRIBUTE A +1 integer\n", 1),
        ("\nATTRIBUTE A 99999999999999999999 integer\n", 2),
        ("ATTRIBUTE A 4294967296 integer\n", 1),
        ("ATTRIBUTE A -1 integer\n", 1),
        ("ATTRIBUTE A 1 octets[99999999999]\n", 1),
        ("ATTRIBUTE A 1 octets[\n", 1),
        ("VENDOR V 0x1ffffffff\n", 1),
        ("VENDOR V 1 format=3,1\n", 1),
        ("ATTRIBUTE A 1 integer\nVALUE A Big 4294967296\n", 2),
        ("ATTRIBUTE A 1 integer\nVALUE A Neg --1\n", 2),
        ("ATTRIBUTE S 1 signed\nVALUE S Low -2147483649\n", 2),
        ("ATTRIBUTE B 1 byte\nVALUE B Big 256\n", 2),
        ("ATTRIBUTE A 1 integer extra,=\n", 1),
        ("ATTRIBUTE A 1 integer encrypt=9\n", 1),
    ] {
        assert_eq!(dict_err(text).0, line, "{text}");
    }
}

#[test]
fn extreme_numbers_that_fit_are_accepted() {
    let out = dict_one(
        "ATTRIBUTE Top 4294967295 integer\nATTRIBUTE S 1 signed\nVALUE S Low -2147483648\n\
         VALUE Top Max 0xFFFFFFFF\nVENDOR V 4294967295 format=4,0\n",
    );
    let dict = out.memory.unwrap();
    assert_eq!(dict.attribute(0, u32::MAX).unwrap().name, "Top");
    assert_eq!(dict.value_by_name(0, 1, "Low"), Some(0x8000_0000));
    assert_eq!(dict.value_name(0, u32::MAX, u32::MAX), Some("Max"));
    assert_eq!(dict.vendor_name(u32::MAX), Some("V"));
    assert!(out.disk.unwrap().is_ok());
}

#[test]
fn unterminated_and_mismatched_vendor_blocks_are_errors() {
    let (line, message) = dict_err("VENDOR V 1\n\nBEGIN-VENDOR V\nATTRIBUTE V-A 1 integer\n");
    assert_eq!(line, 3);
    assert!(message.contains("not closed"), "{message}");
    assert_eq!(
        dict_err("VENDOR V 1\nVENDOR W 2\nBEGIN-VENDOR V\nEND-VENDOR W\n").0,
        4
    );
    assert_eq!(dict_err("END-VENDOR V\n").0, 1);
    assert_eq!(dict_err("BEGIN-VENDOR Nobody\n").0, 1);
    assert_eq!(
        dict_err("VENDOR V 1 format=1,1\nBEGIN-VENDOR V\nATTRIBUTE A 256 integer\nEND-VENDOR V\n")
            .0,
        3
    );
}

#[test]
fn include_loops_are_errors_in_memory_and_on_disk() {
    let self_loop = join_dictionary_input(&[("dictionary", b"\n$INCLUDE dictionary\n")]);
    let three = join_dictionary_input(&[
        ("dictionary", b"$INCLUDE a\n"),
        ("a", b"$INCLUDE b\n"),
        ("b", b"ATTRIBUTE B 2 integer\n$include a\n"),
    ]);
    for (input, file, line) in [(self_loop, "dictionary", 2), (three, "b", 2)] {
        let out = harness::dictionary(&input);
        let e = out.memory.unwrap_err();
        assert_eq!((e.file.as_str(), e.line), (file, line));
        assert!(e.message.contains("cycle"), "{e}");
        let disk = out.disk.unwrap().unwrap_err();
        assert!(disk.file.ends_with(file) && disk.line == line, "{disk}");
        assert!(disk.message.contains("cycle"), "{disk}");
    }
}

#[test]
fn including_a_directory_or_a_path_outside_is_safe() {
    // Names with '/' are only parsed in memory: on disk they could reach /dev/zero.
    let out = dict_one("$INCLUDE /dev/zero\n");
    assert!(out.disk.is_none());
    assert!(out.memory.unwrap_err().message.contains("not found"));
    // On disk "." and ".." are directories: an error, not a hang or a crash.
    let out = dict_one("$INCLUDE ..\n");
    assert!(out.memory.is_err());
    assert_eq!(out.disk.unwrap().unwrap_err().line, 1);
}

#[test]
fn non_utf8_files_fail_on_disk_and_are_replaced_in_memory() {
    let input = join_dictionary_input(&[
        ("dictionary", b"$INCLUDE latin1\n"),
        ("latin1", b"# Caf\xe9\nATTRIBUTE A 1 integer\n"),
    ]);
    let out = harness::dictionary(&input);
    assert_eq!(out.memory.unwrap().attribute(0, 1).unwrap().name, "A");
    let e = out.disk.unwrap().unwrap_err();
    assert!(e.file.ends_with("latin1") && e.line == 0, "{e}");
    assert!(e.message.contains("UTF-8"), "{e}");
}

#[test]
fn odd_keywords_and_names_are_errors() {
    for text in [
        "ATTRIBUTE\n",
        "ATTRIBUTE A\n",
        "ATTRIBUTE A 1 integer has_tag extra\n",
        "ATTRIBUTE Na\u{e9}me 1 integer\n",
        "ATTRIBUTE A 1 bogus\n",
        "VALUE A B\n",
        "VALUE Nowhere X 1\n",
        "VENDOR\n",
        "$INCLUDE\n",
        "$INCLUDE a b\n",
        "BEGIN-VENDOR\n",
        "FOO bar\n",
    ] {
        assert_eq!(dict_err(text).0, 1, "{text:?}");
    }
    // NUL separates the harness's files, so a NUL inside a line is tried directly.
    let e =
        Dictionary::parse_files("d", &|_| Some("ATTRIBUTE A\u{0} 1 integer\n".into())).unwrap_err();
    assert!(e.message.contains("invalid attribute name"), "{e}");
    // An empty input is an empty root file.
    let out = harness::dictionary(b"");
    assert!(out.memory.unwrap().is_empty());
}

#[test]
fn a_very_long_line_is_handled() {
    let name = "A".repeat(100_000);
    let out = dict_one(&format!("ATTRIBUTE {name} 1 integer\n"));
    assert_eq!(
        out.memory.unwrap().attribute(0, 1).unwrap().name.len(),
        100_000
    );
}

// ---------------------------------------------------------------------------------------
// RouterOS API

fn prefixed(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_length(len, &mut out);
    out
}

#[test]
fn every_length_prefix_form_decodes() {
    for (len, prefix) in [
        (0x7F, vec![0x7F]),
        (0x80, vec![0x80, 0x80]),
        (0x3FFF, vec![0xBF, 0xFF]),
        (0x4000, vec![0xC0, 0x40, 0x00]),
        (0x1F_FFFF, vec![0xDF, 0xFF, 0xFF]),
        (0x20_0000, vec![0xE0, 0x20, 0x00, 0x00]),
        (0x1000_0000, vec![0xF0, 0x10, 0x00, 0x00, 0x00]),
    ] {
        assert_eq!(prefixed(len), prefix, "{len:#x}");
    }
    // Words up to the 1 MiB limit decode in every form that can express them.
    for len in [1, 0x7F, 0x80, 0x3FFF, 0x4000, 0xF_FFFF] {
        let word = format!("={}", "x".repeat(len - 1));
        let mut stream = prefixed(len);
        stream.extend(word.as_bytes());
        stream.push(0);
        let (sentences, error) = decode_stream(&stream, 0);
        assert_eq!((sentences, error), (vec![vec![word]], None), "{len:#x}");
    }
    // Longer forms than needed (RouterOS accepts them) decode too.
    for prefix in [
        vec![0x80, 0x05],
        vec![0xC0, 0x00, 0x05],
        vec![0xE0, 0x00, 0x00, 0x05],
        vec![0xF0, 0x00, 0x00, 0x00, 0x05],
    ] {
        let mut stream = prefix.clone();
        stream.extend(b"!done");
        stream.push(0);
        let out = harness::routeros(&[&[0u8][..], &stream].concat());
        assert_eq!(out.sentences, vec![vec!["!done".to_owned()]], "{prefix:x?}");
        assert_eq!(out.replies, vec![Ok(Reply::Done(vec![]))]);
    }
}

#[test]
fn over_limit_and_control_prefixes_fail_before_buffering() {
    for (prefix, why) in [
        (vec![0xF0, 0xFF, 0xFF, 0xFF, 0xFF], "exceeds"),
        (vec![0xE0, 0x10, 0x00, 0x01], "exceeds"),
        (vec![0xF8], "reserved control byte"),
        (vec![0xFF], "reserved control byte"),
        (vec![0xF1], "invalid length prefix"),
        (vec![0xF7], "invalid length prefix"),
    ] {
        for step in [0u8, 1] {
            let out = harness::routeros(&[&[step][..], &prefix].concat());
            let error = out.decode_error.expect("an error");
            assert!(error.contains(why), "{prefix:x?}: {error}");
            assert!(out.disconnect.unwrap_err().contains(why));
        }
    }
}

#[test]
fn truncated_prefixes_and_words_wait_for_more_and_then_hit_end_of_file() {
    for stream in [
        vec![0x80],
        vec![0xC0, 0x00],
        vec![0xE0, 0x00, 0x00],
        vec![0xF0, 0x00, 0x00, 0x00],
        vec![0x05, b'!', b'd'],
        vec![0x05, b'!', b'd', b'o', b'n', b'e'],
    ] {
        let out = harness::routeros(&[&[1u8][..], &stream].concat());
        assert_eq!(
            (out.sentences.len(), out.decode_error),
            (0, None),
            "{stream:x?}"
        );
        let error = out.disconnect.unwrap_err();
        assert!(error.contains("closed the connection"), "{error}");
    }
}

#[test]
fn too_many_words_in_a_sentence_is_an_error() {
    let words: Vec<String> = (0..=1024).map(|i| format!("=k{i}=v")).collect();
    let refs: Vec<&str> = std::iter::once("!re")
        .chain(words.iter().map(String::as_str))
        .collect();
    let out = harness::routeros(&[&[0u8][..], &encode_sentence(&refs)].concat());
    assert!(out.decode_error.unwrap().contains("more than 1024 words"));
}

#[test]
fn malformed_replies_fail_the_disconnect() {
    for (sentence, why) in [
        (&["!weird"][..], "unknown reply word"),
        (&["!re", "=novalue"][..], "attribute word without a value"),
        (&["!re", "plain"][..], "unexpected word"),
        (&["!done", "=a=b", "junk"][..], "unexpected word"),
    ] {
        let out = harness::routeros(&router(0, &[sentence]));
        let Err(error) = &out.replies[0] else {
            panic!("{sentence:?} was accepted");
        };
        assert!(error.contains(why), "{error}");
        assert!(out.disconnect.unwrap_err().contains(why));
    }
}

#[test]
fn login_trap_and_fatal_are_reported_without_the_password() {
    let out = harness::routeros(&router(
        0,
        &[
            &["!trap", "=message=invalid user name or password (6)"],
            &["!done"],
        ],
    ));
    let error = out.disconnect.unwrap_err();
    assert!(error.contains("login failed"), "{error}");
    assert!(!error.contains(ROUTER_PASSWORD));
    let out = harness::routeros(&router(0, &[&["!done"], &["!fatal", "too many commands"]]));
    assert!(out.disconnect.unwrap_err().contains("too many commands"));
}

#[test]
fn challenge_login_answers_with_the_md5_response() {
    let out = harness::routeros(&router(
        2,
        &[
            &["!done", "=ret=93b438ec9b80057c06dd9fe67d56aa9a"],
            &["!done"],
            &["!done"],
        ],
    ));
    assert_eq!(out.disconnect, Ok(0));
    let expected = format!(
        "=response={}",
        challenge_response(ROUTER_PASSWORD, "93b438ec9b80057c06dd9fe67d56aa9a").unwrap()
    );
    assert_eq!(out.commands[1][0], "/login");
    assert!(out.commands[1].contains(&expected), "{:?}", out.commands[1]);
    // A challenge that is not hex ends the login.
    let out = harness::routeros(&router(0, &[&["!done", "=ret=xyz"]]));
    assert!(out.disconnect.unwrap_err().contains("not valid hex"));
}

#[test]
fn only_rows_of_the_user_and_session_are_removed() {
    let other_user: &[&str] = &["!re", "=.id=*2", "=name=user10"];
    let other_session: &[&str] = &["!re", "=.id=*3", "=name=user1", "=session-id=0x81C00003"];
    let no_session_id: &[&str] = &["!re", "=.id=*4", "=name=user1"];
    let no_id: &[&str] = &["!re", "=name=user10"];
    let out = harness::routeros(&router(
        0,
        &[
            &["!done"],
            ROW,
            other_user,
            other_session,
            no_session_id,
            no_id,
            &["!done"],
            &["!done"],
            &["!done"],
        ],
    ));
    assert_eq!(out.disconnect, Ok(2));
    let removed: Vec<&str> = out
        .commands
        .iter()
        .filter(|c| c[0] == "/ppp/active/remove")
        .map(|c| c[1].as_str())
        .collect();
    assert_eq!(removed, ["=.id=*1", "=.id=*4"]);
    // A matching row without an .id cannot be removed.
    let out = harness::routeros(&router(
        0,
        &[&["!done"], &["!re", "=name=user1"], &["!done"]],
    ));
    assert!(out.disconnect.unwrap_err().contains("without an .id"));
}

#[test]
fn non_utf8_words_decode_lossily() {
    let mut stream = vec![0u8, 5, b'!', b'r', b'e', 0xFF, 0xFE, 0];
    stream.extend([7, b'=', b'a', b'=', 0xC3, 0x28, b'x', b'y', 0]);
    let out = harness::routeros(&stream);
    assert_eq!(out.sentences[0], vec!["!re\u{fffd}\u{fffd}".to_owned()]);
    assert_eq!(out.sentences[1], vec!["=a=\u{fffd}(xy".to_owned()]);
    assert!(
        out.replies[0]
            .as_ref()
            .unwrap_err()
            .contains("unknown reply word")
    );
}

#[test]
fn empty_input_is_a_closed_connection() {
    let out: RouterOsOutcome = harness::routeros(b"");
    assert!(out.sentences.is_empty());
    assert!(
        out.disconnect
            .unwrap_err()
            .contains("closed the connection")
    );
    assert_eq!(out.commands.len(), 1, "only the login was sent");
}

// ---------------------------------------------------------------------------------------
// Inputs on which a fuzzer run failed, fixed in src/ (newest last).

fn regression(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(path),
    )
    .unwrap()
}

/// `packet`: Acct-Input-Gigawords 0xc0044475 made the joined 64-bit counter negative
/// (`(gigawords << 32) | octets` overflowed i64). Fixed in `ingest::request`: a counter
/// that does not fit is ignored, like a value of the wrong size.
#[test]
fn regression_gigawords_of_2_pow_31_no_longer_store_a_negative_counter() {
    let bytes = regression("packet/negative-octets-from-gigawords.bin");
    assert_eq!(
        &bytes[41..47],
        &[attr::ACCT_INPUT_GIGAWORDS, 6, 0xc0, 0x04, 0x44, 0x75]
    );
    let r = record(harness::packet(&bytes));
    assert_eq!(r.input_octets, None);
    assert!(r.output_octets.is_some_and(|o| o >= 0));
}

/// `dictionary`: a file name longer than the filesystem allows failed the harness's write
/// to its scratch directory (not a parser bug). Such names are now parsed in memory only.
#[test]
fn regression_an_overlong_file_name_is_parsed_in_memory_only() {
    let bytes = regression("dictionary/file-name-too-long-for-disk");
    let out = harness::dictionary(&bytes);
    assert!(out.disk.is_none());
    let e = out.memory.unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("dictionary", 1));
    assert!(e.message.contains("not found"), "{e}");
}
