//! From a verified Accounting-Request to a [`Record`]: attribute values decoded and named
//! through the dictionary, counters joined with their Gigawords, the event time reconciled,
//! and the session key computed the way FreeRADIUS does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::radius::Dictionary;
use crate::radius::attr;
use crate::radius::dictionary::AttrType;
use crate::radius::packet::Frame;
use crate::sessions::key::SessionKey;
use crate::sessions::model::{Fields, Record, StatusType, Timestamp};

/// Why a verified request is not turned into a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No Acct-Status-Type: malformed per RFC 2866; dropped.
    MissingStatusType,
    /// A status the server does not record (Failed, tunnel accounting, …): acknowledged
    /// without storing, as FreeRADIUS does, so the NAS does not retransmit it forever.
    Unrecorded(u32),
}

/// The extracted record plus what the listener reports about it.
#[derive(Debug)]
pub struct Extracted {
    pub record: Record,
    /// Event-Timestamp was present but too far from arrival time, and was not used.
    pub clock_skewed: bool,
}

pub struct Extractor<'a> {
    pub dictionary: &'a Dictionary,
    /// Largest accepted difference between Event-Timestamp and arrival − Acct-Delay-Time.
    pub skew_secs: i64,
}

impl Extractor<'_> {
    pub fn extract(
        &self,
        frame: &Frame<'_>,
        source: IpAddr,
        nas_id: Option<i64>,
        arrival: Timestamp,
    ) -> Result<Extracted, Skip> {
        let mut a = Attrs::default();
        for (typ, value) in frame.attributes() {
            a.take(typ, value);
        }
        let status_value = a.status.ok_or(Skip::MissingStatusType)?;
        let host_ip = self.vendor_attributes(frame);
        let status = StatusType::from_value(status_value).ok_or(Skip::Unrecorded(status_value))?;

        let nas_ip = a
            .nas_ipv6
            .map(IpAddr::V6)
            .or(a.nas_ip.map(IpAddr::V4))
            .unwrap_or(source);
        let key = SessionKey::freeradius(
            a.user_name.unwrap_or_default(),
            a.session_id.unwrap_or_default(),
            &nas_ip.to_string(),
            a.nas_identifier.unwrap_or_default(),
            a.nas_port_id.unwrap_or_default(),
            a.nas_port,
        );

        // An Acct-Delay-Time beyond 90 days is not a NAS that buffered accounting through
        // an outage but a broken value (it would date the session decades back): ignore it
        // and count it as clock trouble.
        let delay = i64::from(a.delay.unwrap_or(0));
        let delay_broken = delay > MAX_DELAY_SECS;
        let base = if delay_broken {
            arrival
        } else {
            arrival - delay
        };
        let (event_time, clock_skewed) = match a.event_timestamp {
            Some(ts) if (i64::from(ts) - base).abs() <= self.skew_secs => (i64::from(ts), false),
            Some(_) => (base, true),
            None => (base, delay_broken),
        };

        let name = |code: u8, v: Option<u32>| v.map(|v| self.enum_name(code, v));
        let fields = Fields {
            username: text(a.user_name).unwrap_or_default(),
            acctsessionid: text(a.session_id).unwrap_or_default(),
            realm: None,
            nasipaddress: Some(nas_ip),
            // As FreeRADIUS's queries.conf: NAS-Port-Id, else NAS-Port (MikroTik sends only
            // NAS-Port for some services).
            nasportid: text(a.nas_port_id)
                .filter(|s| !s.is_empty())
                .or_else(|| a.nas_port.map(|p| p.to_string().into_boxed_str())),
            nasporttype: name(attr::NAS_PORT_TYPE, a.nas_port_type),
            acctauthentic: name(attr::ACCT_AUTHENTIC, a.authentic),
            connectinfo_start: if status == StatusType::Start {
                text(a.connect_info)
            } else {
                None
            },
            calledstationid: text(a.called),
            callingstationid: text(a.calling),
            servicetype: name(attr::SERVICE_TYPE, a.service_type),
            framedprotocol: name(attr::FRAMED_PROTOCOL, a.framed_protocol),
            // HotSpot sessions may carry only Mikrotik-Host-IP.
            framedipaddress: a.framed_ip.or(host_ip).map(IpAddr::V4),
            framedipv6address: a.framed_ipv6.map(|ip| ip.to_string().into_boxed_str()),
            framedipv6prefix: a.framed_ipv6_prefix.and_then(ipv6_prefix),
            framedinterfaceid: a.interface_id.and_then(interface_id),
            delegatedipv6prefix: a.delegated_prefix.and_then(ipv6_prefix),
            class: a.class.map(|c| format!("0x{}", hex(c)).into_boxed_str()),
        };
        let octets = |low: Option<u32>, high: Option<u32>| octet_count(low?, high);
        let record = Record {
            status,
            nas_id,
            nas_ip,
            key,
            event_time,
            timestamped: a.event_timestamp.is_some() && !clock_skewed,
            session_time: a.session_time.map(i64::from),
            input_octets: octets(a.in_octets, a.in_gigawords),
            output_octets: octets(a.out_octets, a.out_gigawords),
            terminate_cause: name(attr::ACCT_TERMINATE_CAUSE, a.terminate_cause),
            connectinfo: text(a.connect_info),
            fields,
            target: None,
        };
        Ok(Extracted {
            record,
            clock_skewed,
        })
    }

    /// Decode the Vendor-Specific attributes through the dictionary: logged by name at trace
    /// level, and Mikrotik-Host-IP returned (no `radacct` column holds the others).
    fn vendor_attributes(&self, frame: &Frame<'_>) -> Option<Ipv4Addr> {
        let mut host_ip = None;
        for (vendor, typ, value) in frame.vendor_attributes() {
            let Some(attribute) = self.dictionary.attribute(vendor, u32::from(typ)) else {
                tracing::trace!(vendor, typ, "vendor attribute not in the dictionary");
                continue;
            };
            if attribute.name == "Mikrotik-Host-IP" && attribute.kind == AttrType::IpAddr {
                host_ip = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
            }
            if tracing::enabled!(tracing::Level::TRACE) {
                let shown = match attribute.kind {
                    AttrType::IpAddr => <[u8; 4]>::try_from(value)
                        .map(|b| Ipv4Addr::from(b).to_string())
                        .unwrap_or_else(|_| format!("0x{}", hex(value))),
                    AttrType::Integer => <[u8; 4]>::try_from(value)
                        .map(|b| {
                            let v = u32::from_be_bytes(b);
                            self.dictionary
                                .value_name(vendor, u32::from(typ), v)
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .unwrap_or_else(|_| format!("0x{}", hex(value))),
                    AttrType::String => String::from_utf8_lossy(value).into_owned(),
                    _ => format!("0x{}", hex(value)),
                };
                tracing::trace!(attribute = %attribute.name, value = %shown, "vendor attribute");
            }
        }
        host_ip
    }

    /// The dictionary name of an enumerated value, or its number as FreeRADIUS prints an
    /// unknown value.
    fn enum_name(&self, code: u8, value: u32) -> Box<str> {
        match self.dictionary.value_name(0, u32::from(code), value) {
            Some(n) => n.into(),
            None => value.to_string().into_boxed_str(),
        }
    }
}

/// The attributes a record is built from; the first instance of each counts.
#[derive(Default)]
struct Attrs<'a> {
    status: Option<u32>,
    user_name: Option<&'a [u8]>,
    session_id: Option<&'a [u8]>,
    nas_ip: Option<Ipv4Addr>,
    nas_ipv6: Option<Ipv6Addr>,
    nas_identifier: Option<&'a [u8]>,
    nas_port: Option<u32>,
    nas_port_id: Option<&'a [u8]>,
    nas_port_type: Option<u32>,
    service_type: Option<u32>,
    framed_protocol: Option<u32>,
    framed_ip: Option<Ipv4Addr>,
    framed_ipv6: Option<Ipv6Addr>,
    framed_ipv6_prefix: Option<&'a [u8]>,
    delegated_prefix: Option<&'a [u8]>,
    interface_id: Option<&'a [u8]>,
    called: Option<&'a [u8]>,
    calling: Option<&'a [u8]>,
    class: Option<&'a [u8]>,
    authentic: Option<u32>,
    connect_info: Option<&'a [u8]>,
    delay: Option<u32>,
    event_timestamp: Option<u32>,
    session_time: Option<u32>,
    in_octets: Option<u32>,
    out_octets: Option<u32>,
    in_gigawords: Option<u32>,
    out_gigawords: Option<u32>,
    terminate_cause: Option<u32>,
}

impl<'a> Attrs<'a> {
    /// Keep a value if this is the first instance and it has the right shape. A value of
    /// the wrong size (an integer of 3 octets, say) is ignored rather than rejecting the
    /// packet: the rest of the record is still worth keeping.
    fn take(&mut self, typ: u8, v: &'a [u8]) {
        fn set<T>(slot: &mut Option<T>, value: Option<T>) {
            if slot.is_none() {
                *slot = value;
            }
        }
        let int = || <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes);
        let ipv4 = || <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from);
        let ipv6 = || <[u8; 16]>::try_from(v).ok().map(Ipv6Addr::from);
        let bytes = || Some(v);
        match typ {
            attr::ACCT_STATUS_TYPE => set(&mut self.status, int()),
            attr::USER_NAME => set(&mut self.user_name, bytes()),
            attr::ACCT_SESSION_ID => set(&mut self.session_id, bytes()),
            attr::NAS_IP_ADDRESS => set(&mut self.nas_ip, ipv4()),
            attr::NAS_IPV6_ADDRESS => set(&mut self.nas_ipv6, ipv6()),
            attr::NAS_IDENTIFIER => set(&mut self.nas_identifier, bytes()),
            attr::NAS_PORT => set(&mut self.nas_port, int()),
            attr::NAS_PORT_ID => set(&mut self.nas_port_id, bytes()),
            attr::NAS_PORT_TYPE => set(&mut self.nas_port_type, int()),
            attr::SERVICE_TYPE => set(&mut self.service_type, int()),
            attr::FRAMED_PROTOCOL => set(&mut self.framed_protocol, int()),
            attr::FRAMED_IP_ADDRESS => set(&mut self.framed_ip, ipv4()),
            attr::FRAMED_IPV6_ADDRESS => set(&mut self.framed_ipv6, ipv6()),
            attr::FRAMED_IPV6_PREFIX => set(&mut self.framed_ipv6_prefix, bytes()),
            attr::DELEGATED_IPV6_PREFIX => set(&mut self.delegated_prefix, bytes()),
            attr::FRAMED_INTERFACE_ID => set(&mut self.interface_id, bytes()),
            attr::CALLED_STATION_ID => set(&mut self.called, bytes()),
            attr::CALLING_STATION_ID => set(&mut self.calling, bytes()),
            attr::CLASS => set(&mut self.class, bytes()),
            attr::ACCT_AUTHENTIC => set(&mut self.authentic, int()),
            attr::CONNECT_INFO => set(&mut self.connect_info, bytes()),
            attr::ACCT_DELAY_TIME => set(&mut self.delay, int()),
            attr::EVENT_TIMESTAMP => set(&mut self.event_timestamp, int()),
            attr::ACCT_SESSION_TIME => set(&mut self.session_time, int()),
            attr::ACCT_INPUT_OCTETS => set(&mut self.in_octets, int()),
            attr::ACCT_OUTPUT_OCTETS => set(&mut self.out_octets, int()),
            attr::ACCT_INPUT_GIGAWORDS => set(&mut self.in_gigawords, int()),
            attr::ACCT_OUTPUT_GIGAWORDS => set(&mut self.out_gigawords, int()),
            attr::ACCT_TERMINATE_CAUSE => set(&mut self.terminate_cause, int()),
            _ => {}
        }
    }
}

/// An octet counter joined with its Gigawords (RFC 2869 §5.1, §5.2), or `None` when it
/// does not fit the signed 64-bit column (`bigint` in FreeRADIUS's schema): Gigawords of
/// 2^31 or more, i.e. over 8 EiB in one session, which only a broken or hostile NAS sends.
/// Such a counter is ignored like a value of the wrong size, so the session keeps the last
/// believable count; shifting it in regardless would store a negative one (found by the
/// `packet` fuzz target).
fn octet_count(low: u32, gigawords: Option<u32>) -> Option<i64> {
    let total = (u64::from(gigawords.unwrap_or(0)) << 32) | u64::from(low);
    i64::try_from(total).ok()
}

/// A RADIUS text value as stored text: invalid UTF-8 replaced (U+FFFD) and NUL removed,
/// because PostgreSQL `text` cannot hold NUL and a panel cannot show broken UTF-8.
/// The largest Acct-Delay-Time taken at its word (90 days, the archiver's default age:
/// older records would go straight to the archive anyway).
const MAX_DELAY_SECS: i64 = 90 * 86_400;

fn text(v: Option<&[u8]>) -> Option<Box<str>> {
    let v = v?;
    let s = String::from_utf8_lossy(v);
    Some(if s.contains('\0') {
        s.replace('\0', "").into_boxed_str()
    } else {
        s.into_owned().into_boxed_str()
    })
}

/// RFC 3162 §2.3 prefix: reserved octet, prefix length, then up to 16 prefix octets.
fn ipv6_prefix(v: &[u8]) -> Option<Box<str>> {
    let (&len, rest) = v.get(1..)?.split_first()?;
    if len > 128 || rest.len() > 16 {
        return None;
    }
    let mut octets = [0u8; 16];
    octets[..rest.len()].copy_from_slice(rest);
    Some(format!("{}/{}", Ipv6Addr::from(octets), len).into_boxed_str())
}

/// RFC 3162 §2.2 interface id, printed as FreeRADIUS does (four groups of hex).
fn interface_id(v: &[u8]) -> Option<Box<str>> {
    let v: [u8; 8] = v.try_into().ok()?;
    Some(
        format!(
            "{:x}:{:x}:{:x}:{:x}",
            u16::from_be_bytes([v[0], v[1]]),
            u16::from_be_bytes([v[2], v[3]]),
            u16::from_be_bytes([v[4], v[5]]),
            u16::from_be_bytes([v[6], v[7]])
        )
        .into_boxed_str(),
    )
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::packet::{build_accounting_request, vsa};

    fn u32v(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn extract(attrs: &[(u8, Vec<u8>)], arrival: i64) -> Result<Extracted, Skip> {
        let dict = Dictionary::embedded().unwrap();
        let buf = build_accounting_request(1, b"s", attrs);
        let frame = Frame::parse(&buf).unwrap();
        Extractor {
            dictionary: &dict,
            skew_secs: 300,
        }
        .extract(&frame, "192.0.2.1".parse().unwrap(), Some(3), arrival)
    }

    #[test]
    fn mikrotik_pppoe_stop_becomes_a_record() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(2)),
                (attr::USER_NAME, b"bob".to_vec()),
                (attr::ACCT_SESSION_ID, b"81000004".to_vec()),
                (attr::NAS_IP_ADDRESS, vec![192, 168, 68, 117]),
                (attr::NAS_IDENTIFIER, b"MikroTik".to_vec()),
                (attr::NAS_PORT_ID, b"bridge1".to_vec()),
                (attr::NAS_PORT, u32v(15_728_644)),
                (attr::NAS_PORT_TYPE, u32v(15)),
                (attr::SERVICE_TYPE, u32v(2)),
                (attr::FRAMED_PROTOCOL, u32v(1)),
                (attr::FRAMED_IP_ADDRESS, vec![10, 10, 10, 251]),
                (attr::CALLING_STATION_ID, b"F8:B4:6A:C1:71:78".to_vec()),
                (attr::ACCT_TERMINATE_CAUSE, u32v(2)),
                (attr::ACCT_SESSION_TIME, u32v(70)),
                (attr::ACCT_INPUT_OCTETS, u32v(2958)),
                (attr::ACCT_INPUT_GIGAWORDS, u32v(1)),
                (attr::ACCT_OUTPUT_OCTETS, u32v(144)),
                (attr::VENDOR_SPECIFIC, vsa(14988, 10, &[10, 10, 10, 251])),
            ],
            1_700_000_000,
        )
        .unwrap();
        let r = e.record;
        assert_eq!(r.status, StatusType::Stop);
        assert_eq!(r.key.to_hex(), "1ff3443d272d276937ce49e1212c0503");
        assert_eq!(r.input_octets, Some((1 << 32) + 2958));
        assert_eq!(r.output_octets, Some(144));
        assert_eq!(r.session_time, Some(70));
        assert_eq!(r.terminate_cause.as_deref(), Some("Lost-Carrier"));
        assert_eq!(r.fields.nasporttype.as_deref(), Some("Ethernet"));
        assert_eq!(r.fields.servicetype.as_deref(), Some("Framed-User"));
        assert_eq!(r.fields.framedprotocol.as_deref(), Some("PPP"));
        assert_eq!(
            r.fields.framedipaddress,
            Some("10.10.10.251".parse().unwrap())
        );
        assert_eq!(r.nas_ip, "192.168.68.117".parse::<IpAddr>().unwrap());
        assert_eq!(r.nas_id, Some(3));
        assert_eq!(r.implied_start(), 1_700_000_000 - 70);
    }

    #[test]
    fn gigawords_that_would_make_the_counter_negative_are_ignored() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(3)),
                (attr::ACCT_INPUT_OCTETS, u32v(u32::MAX)),
                (attr::ACCT_INPUT_GIGAWORDS, u32v(0x7FFF_FFFF)),
                (attr::ACCT_OUTPUT_OCTETS, u32v(10)),
                (attr::ACCT_OUTPUT_GIGAWORDS, u32v(0x8000_0000)),
            ],
            1,
        )
        .unwrap();
        assert_eq!(e.record.input_octets, Some(i64::MAX));
        assert_eq!(e.record.output_octets, None);
        // Gigawords without the octets attribute give no counter either.
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(3)),
                (attr::ACCT_INPUT_GIGAWORDS, u32v(1)),
            ],
            1,
        )
        .unwrap();
        assert_eq!(e.record.input_octets, None);
    }

    #[test]
    fn event_timestamp_is_used_within_skew_and_counted_outside() {
        let base = [(attr::ACCT_STATUS_TYPE, u32v(1))];
        let mut a = base.to_vec();
        a.push((attr::EVENT_TIMESTAMP, u32v(1_700_000_000 - 100)));
        let e = extract(&a, 1_700_000_000).unwrap();
        assert_eq!(e.record.event_time, 1_700_000_000 - 100);
        assert!(!e.clock_skewed);

        let mut a = base.to_vec();
        a.push((attr::EVENT_TIMESTAMP, u32v(1_000_000_000)));
        a.push((attr::ACCT_DELAY_TIME, u32v(7)));
        let e = extract(&a, 1_700_000_000).unwrap();
        assert_eq!(e.record.event_time, 1_700_000_000 - 7);
        assert!(e.clock_skewed);
    }

    #[test]
    fn an_absurd_acct_delay_time_is_ignored_and_counted() {
        let now = 1_700_000_000;
        let delayed = |d: u32| {
            extract(
                &[
                    (attr::ACCT_STATUS_TYPE, u32v(1)),
                    (attr::ACCT_DELAY_TIME, u32v(d)),
                ],
                now,
            )
            .unwrap()
        };
        // Forty days of buffering during an outage is taken as sent.
        let e = delayed(40 * 86_400);
        assert_eq!(e.record.event_time, now - 40 * 86_400);
        assert!(!e.clock_skewed);
        // Four billion seconds would date the session in 1900.
        let e = delayed(4_000_000_000);
        assert_eq!(e.record.event_time, now);
        assert!(e.clock_skewed);
        assert!(!e.record.timestamped);
    }

    #[test]
    fn nasportid_falls_back_to_nas_port_like_freeradius() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(1)),
                (attr::NAS_PORT, u32v(15_728_644)),
            ],
            1,
        )
        .unwrap();
        assert_eq!(e.record.fields.nasportid.as_deref(), Some("15728644"));
        for id in [&b""[..], b"<pppoe-bob>"] {
            let e = extract(
                &[
                    (attr::ACCT_STATUS_TYPE, u32v(1)),
                    (attr::NAS_PORT, u32v(7)),
                    (attr::NAS_PORT_ID, id.to_vec()),
                ],
                1,
            )
            .unwrap();
            let want = if id.is_empty() { "7" } else { "<pppoe-bob>" };
            assert_eq!(e.record.fields.nasportid.as_deref(), Some(want));
        }
        let e = extract(&[(attr::ACCT_STATUS_TYPE, u32v(1))], 1).unwrap();
        assert_eq!(e.record.fields.nasportid, None);
    }

    #[test]
    fn missing_nas_ip_uses_the_source_address_like_freeradius() {
        let e = extract(&[(attr::ACCT_STATUS_TYPE, u32v(1))], 1).unwrap();
        assert_eq!(e.record.nas_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_and_missing_status_types_are_skipped() {
        assert_eq!(extract(&[], 1).unwrap_err(), Skip::MissingStatusType);
        assert_eq!(
            extract(&[(attr::ACCT_STATUS_TYPE, u32v(15))], 1).unwrap_err(),
            Skip::Unrecorded(15)
        );
    }

    #[test]
    fn hostile_strings_are_stored_safely() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(1)),
                (
                    attr::USER_NAME,
                    b"a\0b\xff'; DROP TABLE radacct;--".to_vec(),
                ),
                (attr::ACCT_TERMINATE_CAUSE, u32v(999)),
                (attr::NAS_PORT, vec![1, 2, 3]),
            ],
            1,
        )
        .unwrap();
        assert_eq!(
            &*e.record.fields.username,
            "ab\u{fffd}'; DROP TABLE radacct;--"
        );
        assert_eq!(e.record.terminate_cause.as_deref(), Some("999"));
    }

    #[test]
    fn mikrotik_host_ip_is_decoded_through_the_dictionary() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(1)),
                (attr::VENDOR_SPECIFIC, vsa(14988, 10, &[10, 5, 88, 2])),
                // An unknown vendor and a malformed VSA are skipped, not fatal.
                (attr::VENDOR_SPECIFIC, vsa(99999, 1, b"x")),
                (attr::VENDOR_SPECIFIC, vec![0, 0, 0x3a, 0x8c, 10, 9, 1]),
            ],
            1,
        )
        .unwrap();
        assert_eq!(
            e.record.fields.framedipaddress,
            Some("10.5.88.2".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_attributes_are_printed_like_freeradius() {
        let e = extract(
            &[
                (attr::ACCT_STATUS_TYPE, u32v(1)),
                (
                    attr::FRAMED_IPV6_PREFIX,
                    vec![0, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0],
                ),
                (attr::FRAMED_INTERFACE_ID, vec![0, 0, 0, 0, 0, 0, 0, 1]),
            ],
            1,
        )
        .unwrap();
        assert_eq!(
            e.record.fields.framedipv6prefix.as_deref(),
            Some("2001:db8:1::/64")
        );
        assert_eq!(
            e.record.fields.framedinterfaceid.as_deref(),
            Some("0:0:0:1")
        );
    }
}
