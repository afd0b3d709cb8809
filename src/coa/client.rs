//! RFC 5176 Disconnect-Request client.
//!
//! One request per disconnect, from its own ephemeral UDP socket (so replies cannot be
//! confused between concurrent disconnects), retransmitted unchanged until a verified reply
//! or the total timeout (3 s by default). A reply counts only if it comes from the NAS's
//! address and CoA port, carries our Identifier, and its Response Authenticator (and
//! Message-Authenticator, when present) verifies with the shared secret; anything else —
//! forged, stale, or for another request — is ignored and the wait goes on.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use tokio::net::UdpSocket;

use crate::radius::packet::{Frame, HEADER_LEN};
use crate::radius::{Dictionary, attr};

pub const DISCONNECT_REQUEST: u8 = 40;
pub const DISCONNECT_ACK: u8 = 41;
pub const DISCONNECT_NAK: u8 = 42;

/// What identifies the session to the NAS.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub username: String,
    pub acct_session_id: String,
    pub framed_ip: Option<std::net::Ipv4Addr>,
    pub nas_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack {
        rtt: Duration,
    },
    Nak {
        error_cause: Option<String>,
        rtt: Duration,
    },
    Timeout,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot send Disconnect-Request: {0}")]
    Io(#[from] std::io::Error),
}

/// Build a signed Disconnect-Request: Message-Authenticator over the packet with a zero
/// authenticator, then the Request Authenticator (RFC 5176 §2.3, RFC 3579 §3.2).
pub fn disconnect_request(identifier: u8, secret: &[u8], target: &Target) -> Vec<u8> {
    let mut attrs: Vec<(u8, Vec<u8>)> = vec![
        (attr::USER_NAME, target.username.as_bytes().to_vec()),
        (
            attr::ACCT_SESSION_ID,
            target.acct_session_id.as_bytes().to_vec(),
        ),
    ];
    if let Some(ip) = target.framed_ip {
        attrs.push((attr::FRAMED_IP_ADDRESS, ip.octets().to_vec()));
    }
    match target.nas_ip {
        Some(IpAddr::V4(ip)) => attrs.push((attr::NAS_IP_ADDRESS, ip.octets().to_vec())),
        Some(IpAddr::V6(ip)) => attrs.push((attr::NAS_IPV6_ADDRESS, ip.octets().to_vec())),
        None => {}
    }
    let mut buf = vec![DISCONNECT_REQUEST, identifier, 0, 0];
    buf.extend_from_slice(&[0u8; 16]);
    for (typ, value) in &attrs {
        let value = &value[..value.len().min(253)];
        buf.push(*typ);
        buf.push((value.len() + 2) as u8);
        buf.extend_from_slice(value);
    }
    let ma_at = buf.len() + 2;
    buf.push(attr::MESSAGE_AUTHENTICATOR);
    buf.push(18);
    buf.extend_from_slice(&[0u8; 16]);
    let len = buf.len() as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    if let Ok(mut mac) = Hmac::<Md5>::new_from_slice(secret) {
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        buf[ma_at..ma_at + 16].copy_from_slice(&tag);
    }
    let mut h = Md5::new();
    h.update(&buf);
    h.update(secret);
    let auth = h.finalize();
    buf[4..HEADER_LEN].copy_from_slice(&auth);
    buf
}

/// Whether `reply` is a genuine answer to `request`.
pub fn reply_is_authentic(reply: &[u8], request: &[u8], secret: &[u8]) -> bool {
    let Ok(frame) = Frame::parse(reply) else {
        return false;
    };
    if reply.len() < HEADER_LEN || reply[1] != request[1] {
        return false;
    }
    if !matches!(reply[0], DISCONNECT_ACK | DISCONNECT_NAK) {
        return false;
    }
    if !radius::core::packet::Packet::is_authentic_response(frame.bytes(), request, secret) {
        return false;
    }
    // A Message-Authenticator in a reply is computed with the request's authenticator in
    // the header (RFC 3579 §3.2); when present it must verify.
    match message_authenticator_at(frame.bytes()) {
        None => true,
        Some(at) => {
            let mut copy = frame.bytes().to_vec();
            let received = copy[at..at + 16].to_vec();
            copy[at..at + 16].fill(0);
            copy[4..HEADER_LEN].copy_from_slice(&request[4..HEADER_LEN]);
            Hmac::<Md5>::new_from_slice(secret)
                .map(|mut m| {
                    m.update(&copy);
                    m.verify_slice(&received).is_ok()
                })
                .unwrap_or(false)
        }
    }
}

fn message_authenticator_at(packet: &[u8]) -> Option<usize> {
    let mut i = HEADER_LEN;
    while i + 2 <= packet.len() {
        let len = usize::from(packet[i + 1]);
        if len < 2 {
            return None;
        }
        if packet[i] == attr::MESSAGE_AUTHENTICATOR && len == 18 && i + 18 <= packet.len() {
            return Some(i + 2);
        }
        i += len;
    }
    None
}

/// Send a Disconnect-Request to `nas` and wait for a verified reply, retransmitting every
/// `total / 3` until `total` has passed.
pub async fn disconnect(
    nas: SocketAddr,
    secret: &[u8],
    target: &Target,
    total: Duration,
    dictionary: &Dictionary,
) -> Result<Reply, Error> {
    let local: SocketAddr = if nas.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local).await?;
    let identifier = rand::random::<u8>();
    let request = disconnect_request(identifier, secret, target);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + total;
    let resend_every = (total / 3).max(Duration::from_millis(100));
    let mut buf = vec![0u8; 4096];
    loop {
        socket.send_to(&request, nas).await?;
        let resend_at = (tokio::time::Instant::now() + resend_every).min(deadline);
        loop {
            let received = tokio::time::timeout_at(resend_at, socket.recv_from(&mut buf)).await;
            let (n, from) = match received {
                Err(_) => break,
                Ok(Err(e)) => {
                    // ICMP port unreachable shows up here; keep waiting until the deadline
                    // like for silence, since the NAS may just be starting.
                    tracing::debug!(error = %e, %nas, "Disconnect-Request receive error");
                    tokio::time::sleep_until(resend_at).await;
                    break;
                }
                Ok(Ok(r)) => r,
            };
            let reply = &buf[..n];
            if from != nas || !reply_is_authentic(reply, &request, secret) {
                tracing::debug!(%from, %nas, "ignoring an unverified reply to a Disconnect-Request");
                continue;
            }
            let rtt = started.elapsed();
            if reply[0] == DISCONNECT_ACK {
                return Ok(Reply::Ack { rtt });
            }
            let error_cause = Frame::parse(reply).ok().and_then(|f| {
                f.attributes()
                    .find(|(t, _)| *t == attr::ERROR_CAUSE)
                    .and_then(|(_, v)| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_be_bytes)
                    .map(|v| {
                        dictionary
                            .value_name(0, u32::from(attr::ERROR_CAUSE), v)
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
            });
            return Ok(Reply::Nak { error_cause, rtt });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Reply::Timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            username: "bob".into(),
            acct_session_id: "81000004".into(),
            framed_ip: Some("10.10.10.251".parse().unwrap()),
            nas_ip: Some("192.168.68.117".parse().unwrap()),
        }
    }

    #[test]
    fn request_is_signed_per_rfc_5176() {
        let req = disconnect_request(7, b"s3", &target());
        let frame = Frame::parse(&req).unwrap();
        assert_eq!(frame.raw_code(), DISCONNECT_REQUEST);
        // The same check an RFC 5176 server performs (RFC 2866 §3 authenticator).
        assert!(radius::core::packet::Packet::is_authentic_request(
            &req, b"s3"
        ));
        assert!(!radius::core::packet::Packet::is_authentic_request(
            &req, b"s4"
        ));
        assert_eq!(frame.message_authenticator_ok(b"s3"), Some(true));
        let attrs: Vec<u8> = frame.attributes().map(|(t, _)| t).collect();
        assert_eq!(attrs, [1, 44, 8, 4, 80]);
    }

    fn reply_to(req: &[u8], code: u8, secret: &[u8], extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut buf = vec![code, req[1], 0, 0];
        buf.extend_from_slice(&req[4..20]);
        for (t, v) in extra {
            buf.push(*t);
            buf.push((v.len() + 2) as u8);
            buf.extend_from_slice(v);
        }
        let len = buf.len() as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut h = Md5::new();
        h.update(&buf);
        h.update(secret);
        let a = h.finalize();
        buf[4..20].copy_from_slice(&a);
        buf
    }

    #[test]
    fn replies_are_verified() {
        let req = disconnect_request(9, b"s3", &target());
        assert!(reply_is_authentic(
            &reply_to(&req, DISCONNECT_ACK, b"s3", &[]),
            &req,
            b"s3"
        ));
        assert!(!reply_is_authentic(
            &reply_to(&req, DISCONNECT_ACK, b"bad", &[]),
            &req,
            b"s3"
        ));
        let mut other_id = reply_to(&req, DISCONNECT_ACK, b"s3", &[]);
        other_id[1] ^= 1;
        assert!(!reply_is_authentic(&other_id, &req, b"s3"));
        assert!(!reply_is_authentic(
            &reply_to(&req, 2, b"s3", &[]),
            &req,
            b"s3"
        ));
        assert!(!reply_is_authentic(b"short", &req, b"s3"));
    }
}
