//! Framing and authentication of RADIUS packets.
//!
//! The `radius` crate decodes attributes and encodes replies, but it does not check the
//! Request Authenticator on decode, knows nothing of Message-Authenticator and does not
//! split Vendor-Specific attributes. Those checks live here, so that everything the
//! listener hands on has been framed, verified and walked exactly once.

use hmac::{Hmac, Mac};
use md5::Md5;
use radius::core::avp::AVP;
pub use radius::core::code::Code;
use radius::core::packet::Packet;

use super::attr;

/// RFC 2865 §3: packets are 20..=4096 octets.
pub const HEADER_LEN: usize = 20;
pub const MAX_PACKET_LEN: usize = 4096;

/// Why a datagram was rejected. Each variant is a closed-set metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram of {0} octets is shorter than a RADIUS header")]
    TooShort(usize),
    #[error("length field {declared} does not fit the datagram of {received} octets")]
    BadLength { declared: usize, received: usize },
    #[error("attribute at offset {0} is truncated or has length < 2")]
    BadAttribute(usize),
    #[error("cannot encode reply: {0}")]
    Encode(String),
}

impl PacketError {
    /// Label for `radacctd_packets_dropped_total{reason=…}`.
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::TooShort(_) | PacketError::BadLength { .. } => "bad_length",
            PacketError::BadAttribute(_) => "bad_attribute",
            PacketError::Encode(_) => "encode_error",
        }
    }
}

/// A datagram whose header and attribute chain are well-formed, trimmed to the length the
/// header declares (RFC 2865 §3: octets beyond it are padding and are ignored).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    bytes: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Check the header length field and walk every attribute header once.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < HEADER_LEN {
            return Err(PacketError::TooShort(buf.len()));
        }
        let declared = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&declared) || declared > buf.len() {
            return Err(PacketError::BadLength {
                declared,
                received: buf.len(),
            });
        }
        let bytes = &buf[..declared];
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let Some(&len) = bytes.get(offset + 1) else {
                return Err(PacketError::BadAttribute(offset));
            };
            let len = usize::from(len);
            if len < 2 || offset + len > bytes.len() {
                return Err(PacketError::BadAttribute(offset));
            }
            offset += len;
        }
        Ok(Frame { bytes })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn code(&self) -> Code {
        Code::from(self.bytes[0])
    }

    pub fn raw_code(&self) -> u8 {
        self.bytes[0]
    }

    pub fn identifier(&self) -> u8 {
        self.bytes[1]
    }

    pub fn authenticator(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.bytes[4..HEADER_LEN]);
        out
    }

    /// Iterate `(type, value)` over the attributes. The chain was validated in `parse`.
    pub fn attributes(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let bytes = self.bytes;
        let mut offset = HEADER_LEN;
        std::iter::from_fn(move || {
            if offset + 2 > bytes.len() {
                return None;
            }
            let typ = bytes[offset];
            let len = usize::from(bytes[offset + 1]);
            let value = bytes.get(offset + 2..offset + len)?;
            let start = offset;
            offset += len;
            debug_assert!(offset > start);
            Some((typ, value))
        })
    }

    /// Vendor-Specific sub-attributes in the RFC 2865 §5.26 recommended format (one octet
    /// type, one octet length), as `(vendor, type, value)`. A VSA whose content does not
    /// follow that format is skipped: some vendors use other layouts, and an unreadable
    /// VSA must not cost the accounting record.
    pub fn vendor_attributes(&self) -> impl Iterator<Item = (u32, u8, &'a [u8])> + 'a {
        self.attributes()
            .filter(|(t, _)| *t == attr::VENDOR_SPECIFIC)
            .flat_map(|(_, v)| split_vsa(v).into_iter().flatten())
    }

    /// Request Authenticator check for Accounting-Request (RFC 2866 §3), using the crate's
    /// implementation on exactly the declared bytes.
    pub fn accounting_request_is_authentic(&self, secret: &[u8]) -> bool {
        self.code() == Code::AccountingRequest && Packet::is_authentic_request(self.bytes, secret)
    }

    /// Message-Authenticator (RFC 3579 §3.2, RFC 5997 §3): `None` when the packet has none,
    /// otherwise whether it verifies. For Accounting-Request, like FreeRADIUS, the HMAC is
    /// taken with the Request Authenticator field zeroed; for Status-Server and
    /// Access-Request the field is used as sent.
    pub fn message_authenticator_ok(&self, secret: &[u8]) -> Option<bool> {
        let offset = self.attribute_offset(attr::MESSAGE_AUTHENTICATOR)?;
        if usize::from(self.bytes[offset + 1]) != 18 {
            return Some(false);
        }
        let mut copy = self.bytes.to_vec();
        let received: [u8; 16] = copy[offset + 2..offset + 18].try_into().ok()?;
        copy[offset + 2..offset + 18].fill(0);
        if matches!(
            self.code(),
            Code::AccountingRequest | Code::DisconnectRequest | Code::CoARequest
        ) {
            copy[4..HEADER_LEN].fill(0);
        }
        let mut mac = Hmac::<Md5>::new_from_slice(secret).ok()?;
        mac.update(&copy);
        Some(mac.verify_slice(&received).is_ok())
    }

    fn attribute_offset(&self, wanted: u8) -> Option<usize> {
        let mut offset = HEADER_LEN;
        while offset + 2 <= self.bytes.len() {
            if self.bytes[offset] == wanted {
                return Some(offset);
            }
            offset += usize::from(self.bytes[offset + 1]).max(2);
        }
        None
    }

    /// An Accounting-Response to this request (RFC 2866 §4.2, and RFC 5997 §3 for
    /// Status-Server on the accounting port): no attributes except the request's
    /// Proxy-State attributes, copied in order; Response Authenticator computed over the
    /// request's authenticator and the shared secret.
    pub fn accounting_response(&self, secret: &[u8]) -> Result<Vec<u8>, PacketError> {
        // The crate signs a reply with the authenticator of the packet it was made from,
        // so decode just this header (no attributes, no allocation per attribute).
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        header[2..4].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        let request =
            Packet::decode(&header, secret).map_err(|e| PacketError::Encode(e.to_string()))?;
        let mut reply = request.make_response_packet(Code::AccountingResponse);
        for (typ, value) in self.attributes() {
            if typ == attr::PROXY_STATE {
                reply.add(AVP::from_bytes(typ, value));
            }
        }
        reply
            .encode()
            .map_err(|e| PacketError::Encode(e.to_string()))
    }
}

/// Split one Vendor-Specific value into its sub-attributes, or `None` if the layout is
/// not the RFC 2865 recommended one.
fn split_vsa(value: &[u8]) -> Option<Vec<(u32, u8, &[u8])>> {
    let vendor = u32::from_be_bytes(value.get(0..4)?.try_into().ok()?);
    let mut rest = value.get(4..)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let typ = *rest.first()?;
        let len = usize::from(*rest.get(1)?);
        if len < 2 || len > rest.len() {
            return None;
        }
        out.push((vendor, typ, &rest[2..len]));
        rest = &rest[len..];
    }
    Some(out)
}

/// Build a signed Accounting-Request. Used by tests, the load generator and examples; the
/// server itself never sends one.
pub fn build_accounting_request(
    identifier: u8,
    secret: &[u8],
    attributes: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut buf = vec![Code::AccountingRequest as u8, identifier, 0, 0];
    buf.extend_from_slice(&[0u8; 16]);
    for (typ, value) in attributes {
        // Values longer than 253 octets are cut: callers build test traffic, not data.
        let value = &value[..value.len().min(253)];
        buf.push(*typ);
        buf.push((value.len() + 2) as u8);
        buf.extend_from_slice(value);
    }
    let len = buf.len() as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    sign_accounting_request(&mut buf, secret);
    buf
}

/// Fill in the Request Authenticator of an Accounting-Request (RFC 2866 §3): the MD5 of
/// the packet with a zero authenticator field, followed by the shared secret. `packet`
/// must be exactly the declared length (trim any padding first), as the check in
/// [`Frame::accounting_request_is_authentic`] hashes exactly those bytes. A buffer
/// shorter than a header is left unchanged. Used by [`build_accounting_request`], tests
/// and the fuzz targets, which re-sign mutated packets to reach the extraction step.
pub fn sign_accounting_request(packet: &mut [u8], secret: &[u8]) {
    use md5::Digest;
    if packet.len() < HEADER_LEN {
        return;
    }
    packet[4..HEADER_LEN].fill(0);
    let mut h = Md5::new();
    h.update(&*packet);
    h.update(secret);
    let digest = h.finalize();
    packet[4..HEADER_LEN].copy_from_slice(&digest);
}

/// Encode a Vendor-Specific attribute value holding one sub-attribute.
pub fn vsa(vendor: u32, typ: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vendor.to_be_bytes().to_vec();
    out.push(typ);
    out.push((value.len() + 2) as u8);
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_accounting_request(
            7,
            b"testing123",
            &[
                (attr::ACCT_STATUS_TYPE, 1u32.to_be_bytes().to_vec()),
                (attr::USER_NAME, b"bob".to_vec()),
                (attr::PROXY_STATE, b"ps-1".to_vec()),
                (
                    attr::VENDOR_SPECIFIC,
                    vsa(attr::VENDOR_MIKROTIK, 10, &[10, 5, 88, 2]),
                ),
                (attr::PROXY_STATE, b"ps-2".to_vec()),
            ],
        )
    }

    #[test]
    fn signed_request_verifies_only_with_its_secret() {
        let buf = sample();
        let frame = Frame::parse(&buf).unwrap();
        assert!(frame.accounting_request_is_authentic(b"testing123"));
        assert!(!frame.accounting_request_is_authentic(b"testing124"));
    }

    #[test]
    fn re_signing_a_modified_request_makes_it_authentic_again() {
        let mut buf = sample();
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        assert!(
            !Frame::parse(&buf)
                .unwrap()
                .accounting_request_is_authentic(b"testing123")
        );
        sign_accounting_request(&mut buf, b"testing123");
        assert!(
            Frame::parse(&buf)
                .unwrap()
                .accounting_request_is_authentic(b"testing123")
        );
        // Signing an already signed packet reproduces it: the old authenticator is
        // zeroed before hashing.
        let mut again = sample();
        sign_accounting_request(&mut again, b"testing123");
        assert_eq!(again, sample());
        let mut short = vec![4u8; HEADER_LEN - 1];
        sign_accounting_request(&mut short, b"testing123");
        assert_eq!(short, vec![4u8; HEADER_LEN - 1]);
    }

    #[test]
    fn trailing_padding_is_ignored_for_the_authenticator() {
        let mut buf = sample();
        buf.extend_from_slice(&[0xAA; 9]);
        let frame = Frame::parse(&buf).unwrap();
        assert!(frame.accounting_request_is_authentic(b"testing123"));
    }

    #[test]
    fn short_and_lying_lengths_are_rejected() {
        assert_eq!(
            Frame::parse(&[4, 1, 0]).unwrap_err(),
            PacketError::TooShort(3)
        );
        let mut buf = sample();
        buf[3] = buf[3].wrapping_add(1);
        assert!(matches!(
            Frame::parse(&buf).unwrap_err(),
            PacketError::BadLength { .. }
        ));
        let mut buf = sample();
        buf[2] = 0x10; // 4096+ declared
        assert!(Frame::parse(&buf).is_err());
    }

    #[test]
    fn attribute_length_zero_one_and_overflow_are_rejected() {
        for bad_len in [0u8, 1, 200] {
            let mut buf = sample();
            buf[HEADER_LEN + 1] = bad_len;
            assert!(
                matches!(Frame::parse(&buf), Err(PacketError::BadAttribute(20))),
                "length {bad_len}"
            );
        }
    }

    #[test]
    fn vendor_attributes_are_split() {
        let buf = sample();
        let frame = Frame::parse(&buf).unwrap();
        let vsas: Vec<_> = frame.vendor_attributes().collect();
        assert_eq!(vsas, vec![(14988, 10, &[10u8, 5, 88, 2][..])]);
    }

    #[test]
    fn response_copies_proxy_state_in_order_and_authenticates() {
        let buf = sample();
        let frame = Frame::parse(&buf).unwrap();
        let reply = frame.accounting_response(b"testing123").unwrap();
        assert_eq!(reply[0], Code::AccountingResponse as u8);
        assert_eq!(reply[1], 7);
        assert!(Packet::is_authentic_response(&reply, &buf, b"testing123"));
        let rf = Frame::parse(&reply).unwrap();
        let states: Vec<_> = rf.attributes().collect();
        assert_eq!(
            states,
            vec![
                (attr::PROXY_STATE, &b"ps-1"[..]),
                (attr::PROXY_STATE, &b"ps-2"[..])
            ]
        );
    }

    #[test]
    fn message_authenticator_is_checked_when_present() {
        let secret = b"s3";
        // Build with a zero placeholder, compute the HMAC the way a NAS does (zero request
        // authenticator for accounting), then sign the request authenticator.
        let mut buf = build_accounting_request(
            1,
            secret,
            &[
                (attr::ACCT_STATUS_TYPE, 3u32.to_be_bytes().to_vec()),
                (attr::MESSAGE_AUTHENTICATOR, vec![0; 16]),
            ],
        );
        buf[4..20].fill(0);
        let mut mac = Hmac::<Md5>::new_from_slice(secret).unwrap();
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        let at = HEADER_LEN + 6 + 2;
        buf[at..at + 16].copy_from_slice(&tag);
        let digest = {
            use md5::Digest;
            let mut h = Md5::new();
            h.update(&buf);
            h.update(secret);
            h.finalize()
        };
        buf[4..20].copy_from_slice(&digest);
        let frame = Frame::parse(&buf).unwrap();
        assert!(frame.accounting_request_is_authentic(secret));
        assert_eq!(frame.message_authenticator_ok(secret), Some(true));
        assert_eq!(frame.message_authenticator_ok(b"other"), Some(false));
        assert_eq!(
            Frame::parse(&sample())
                .unwrap()
                .message_authenticator_ok(secret),
            None
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic xorshift so the test is reproducible without extra crates.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 120) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if buf.len() >= 4 && x.is_multiple_of(3) {
                buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            if let Ok(frame) = Frame::parse(&buf) {
                let _ = frame.attributes().count();
                let _ = frame.vendor_attributes().count();
                let _ = frame.accounting_request_is_authentic(b"k");
                let _ = frame.message_authenticator_ok(b"k");
                let _ = frame.accounting_response(b"k");
            }
        }
    }
}
