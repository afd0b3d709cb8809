//! Disconnect (DESIGN.md §6; the contract's `POST /api/sessions/:id/disconnect` and its
//! alias `DELETE /api/sessions/:id`), end to end: the real server in-process against
//! - a fake NAS speaking RFC 5176 on UDP, which checks everything it receives (Request
//!   Authenticator, Message-Authenticator, the attributes naming the session) with code
//!   written here, independently of `radacctd::coa`, and answers ACK, NAK, nothing, or
//!   replies the client must ignore;
//! - a fake RouterOS API server speaking the length-prefixed word protocol on TCP (only the
//!   codec is reused from `radacctd::coa::routeros`), which records every command;
//! - FreeRADIUS 3.2 as an independent CoA receiver (`scripts/freeradius.sh coa`).
//!
//! Each test checks the API answer against the contract, what was written (or not) to
//! `radacct`, the index and the count, the audit log, the metrics, and that neither the NAS
//! secret nor the RouterOS password leaks into any of them.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use radacctd::coa::routeros::{Decoder, encode_sentence};
use radacctd::config::{DEFAULT_API_PORT, NasConfig};
use radacctd::radius::attr;
use radacctd::sessions::Store;
use radacctd::sessions::engine::ChangeKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, NAS_IP, SECRET, WriteLock, admin_token, api_json, now, oneshot,
    seed_reseller_tree, token,
};

both_backends!(
    coa_ack_closes_the_session_at_once_as_admin_reset_and_the_nas_stop_completes_it,
    nak_falls_back_to_the_routeros_api_which_removes_the_session,
    coa_silence_and_refused_api_is_503_nas_unreachable_and_writes_nothing,
    disconnecting_a_closed_session_is_already_closed_every_time,
    errors_follow_the_contract_table,
    a_disconnect_while_the_confirmed_stop_is_being_committed_is_not_sent_again,
    nak_falls_back_to_routeros_api_ssl_with_the_pinned_certificate,
);

/// RFC 5176 packet codes and the Error-Cause a NAS sends for a session it does not have.
const DISCONNECT_REQUEST: u8 = 40;
const DISCONNECT_ACK: u8 = 41;
const DISCONNECT_NAK: u8 = 42;
const SESSION_CONTEXT_NOT_FOUND: u32 = 503;

/// The session every test disconnects, with MikroTik-shaped values.
const USER: &str = "bob@example.lb";
const SID: &str = "81000004";
const ROS_SESSION_ID: &str = "0x81000004";
const ROS_ID: &str = "*1A";
const FRAMED_IP: [u8; 4] = [100, 64, 0, 2];
/// Counters of the last interim: input above 2^32 so Gigawords matter.
const IN_OCTETS: u64 = 5_000_000_000;
const OUT_OCTETS: u64 = 123_456;

const API_USER: &str = "radacctd-api";
const API_PASSWORD: &str = "ros-Pw-7731-secret";
/// A password radacctd is given but the router does not accept; must not leak either.
const WRONG_API_PASSWORD: &str = "ros-Wrong-4410-secret";

/// Time the CoA client waits in total (DESIGN.md §6), and the RouterOS API timeout per
/// exchange (`coa::Disconnector::api_timeout`).
const COA_BUDGET: Duration = Duration::from_secs(3);
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);
/// An answer that did not wait out the CoA budget (an ACK or NAK takes milliseconds; the
/// margin is for a loaded machine).
const NO_WAIT: Duration = Duration::from_millis(2500);

// ---------------------------------------------------------------------------------------
// Fake NAS: RFC 5176 on UDP.
// ---------------------------------------------------------------------------------------

/// How the fake NAS answers an authentic Disconnect-Request. Unauthentic requests are
/// always dropped silently, as RFC 5176 §5 requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coa {
    /// Disconnect-ACK, like a NAS that had the session; a later, different request for a
    /// session it already disconnected gets NAK 503 (the session is gone). Retransmissions
    /// get the same answer again.
    Ack,
    /// The same, but the ACK is sent only after a delay (a slow NAS).
    AckAfter(Duration),
    /// Disconnect-NAK with Error-Cause 503 (Session-Context-Not-Found) and a valid
    /// Message-Authenticator.
    Nak,
    /// No answer at all.
    Silent,
    /// Disconnect-ACK signed with another secret: must be ignored.
    WrongSecret,
    /// Disconnect-ACK, correctly signed, with another Identifier: must be ignored.
    WrongIdentifier,
    /// Forged or unrelated Disconnect-NAKs (wrong secret, wrong Identifier, from another
    /// port, bad Message-Authenticator), then the real ACK: only the ACK may count.
    ForgedNaksThenAck,
    /// Nothing for the first transmission, ACK for the retransmission.
    AckSecondTransmission,
}

/// One datagram the fake NAS received, with what it verified.
#[derive(Debug, Clone)]
struct Received {
    bytes: Vec<u8>,
    code: u8,
    identifier: u8,
    authenticator: [u8; 16],
    /// RFC 5176 §2.3: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret).
    request_authenticator_ok: bool,
    /// RFC 5176 §3.1 / RFC 3579 §3.2; `None` when absent.
    message_authenticator_ok: Option<bool>,
    attrs: Vec<(u8, Vec<u8>)>,
}

impl Received {
    fn attr(&self, typ: u8) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == typ)
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, typ: u8) -> Option<String> {
        self.attr(typ)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn ipv4(&self, typ: u8) -> Option<Ipv4Addr> {
        self.attr(typ)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(Ipv4Addr::from)
    }

    fn authentic(&self) -> bool {
        self.code == DISCONNECT_REQUEST
            && self.request_authenticator_ok
            && self.message_authenticator_ok != Some(false)
    }
}

/// Parse and verify a datagram as a Disconnect-Request would be on a NAS. `None` when it
/// is not even a well-formed RADIUS packet.
fn decode_request(datagram: &[u8], secret: &[u8]) -> Option<Received> {
    if datagram.len() < 20 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if !(20..=4096).contains(&len) || len > datagram.len() {
        return None;
    }
    let pkt = &datagram[..len];
    let mut attrs = Vec::new();
    let mut ma_at = None;
    let mut i = 20;
    while i < len {
        if i + 2 > len {
            return None;
        }
        let alen = usize::from(pkt[i + 1]);
        if alen < 2 || i + alen > len {
            return None;
        }
        if pkt[i] == attr::MESSAGE_AUTHENTICATOR && alen == 18 {
            ma_at = Some(i + 2);
        }
        attrs.push((pkt[i], pkt[i + 2..i + alen].to_vec()));
        i += alen;
    }
    let mut zeroed = pkt.to_vec();
    zeroed[4..20].fill(0);
    let mut md5 = Md5::new();
    md5.update(&zeroed);
    md5.update(secret);
    let request_authenticator_ok = md5.finalize().as_slice() == &pkt[4..20];
    let message_authenticator_ok = ma_at.map(|at| {
        let received = pkt[at..at + 16].to_vec();
        let mut copy = zeroed.clone();
        copy[at..at + 16].fill(0);
        let mut mac = Hmac::<Md5>::new_from_slice(secret).unwrap();
        mac.update(&copy);
        mac.verify_slice(&received).is_ok()
    });
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&pkt[4..20]);
    Some(Received {
        bytes: pkt.to_vec(),
        code: pkt[0],
        identifier: pkt[1],
        authenticator,
        request_authenticator_ok,
        message_authenticator_ok,
        attrs,
    })
}

/// A reply to `request`: Response Authenticator = MD5(Code+Identifier+Length+Request
/// Authenticator+Attributes+Secret) (RFC 5176 §2.3), optionally with a
/// Message-Authenticator computed over the reply with the request's authenticator in the
/// header (RFC 3579 §3.2), `corrupt_ma` flipping one of its bits.
fn build_reply(
    code: u8,
    identifier: u8,
    request: &Received,
    attrs: &[(u8, Vec<u8>)],
    secret: &[u8],
    message_authenticator: bool,
    corrupt_ma: bool,
) -> Vec<u8> {
    let mut buf = vec![code, identifier, 0, 0];
    buf.extend_from_slice(&request.authenticator);
    for (t, v) in attrs {
        buf.push(*t);
        buf.push((v.len() + 2) as u8);
        buf.extend_from_slice(v);
    }
    let ma_at = buf.len() + 2;
    if message_authenticator {
        buf.push(attr::MESSAGE_AUTHENTICATOR);
        buf.push(18);
        buf.extend_from_slice(&[0; 16]);
    }
    let len = buf.len() as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    if message_authenticator {
        let mut mac = Hmac::<Md5>::new_from_slice(secret).unwrap();
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        buf[ma_at..ma_at + 16].copy_from_slice(&tag);
        if corrupt_ma {
            buf[ma_at] ^= 0x01;
        }
    }
    let mut md5 = Md5::new();
    md5.update(&buf);
    md5.update(secret);
    let auth = md5.finalize();
    buf[4..20].copy_from_slice(&auth);
    buf
}

fn nas_identifier() -> (u8, Vec<u8>) {
    // What MikroTik puts in its Disconnect-ACK (fixtures/mikrotik/mikrotik_disconnect_ack.txt).
    (attr::NAS_IDENTIFIER, b"MikroTik".to_vec())
}

fn ack(request: &Received) -> Vec<u8> {
    build_reply(
        DISCONNECT_ACK,
        request.identifier,
        request,
        &[nas_identifier()],
        SECRET.as_bytes(),
        false,
        false,
    )
}

fn nak(request: &Received, secret: &[u8], identifier: u8, corrupt_ma: bool) -> Vec<u8> {
    build_reply(
        DISCONNECT_NAK,
        identifier,
        request,
        &[
            (
                attr::ERROR_CAUSE,
                SESSION_CONTEXT_NOT_FOUND.to_be_bytes().to_vec(),
            ),
            nas_identifier(),
        ],
        secret,
        true,
        corrupt_ma,
    )
}

struct FakeNas {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeNas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNas {
    async fn start(mode: Coa) -> FakeNas {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            // Replies already given, so a retransmission gets the same answer; and the
            // sessions this NAS has disconnected (by Acct-Session-Id).
            let mut answered: HashMap<(u8, [u8; 16]), Vec<u8>> = HashMap::new();
            let mut gone: HashSet<Vec<u8>> = HashSet::new();
            let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(req) = decode_request(&buf[..n], SECRET.as_bytes()) else {
                    continue;
                };
                let transmission = {
                    let mut log = log.lock().unwrap();
                    log.push(req.clone());
                    log.iter().filter(|r| r.bytes == req.bytes).count()
                };
                if !req.authentic() {
                    continue;
                }
                let key = (req.identifier, req.authenticator);
                if let Some(reply) = answered.get(&key) {
                    let _ = socket.send_to(reply, from).await;
                    continue;
                }
                let sid = req.attr(attr::ACCT_SESSION_ID).unwrap_or_default().to_vec();
                // A NAS that already tore the session down does not know it any more.
                let answer = |req: &Received, gone: &mut HashSet<Vec<u8>>| {
                    if gone.insert(sid.clone()) {
                        ack(req)
                    } else {
                        nak(req, SECRET.as_bytes(), req.identifier, false)
                    }
                };
                match mode {
                    Coa::Ack => {
                        let reply = answer(&req, &mut gone);
                        answered.insert(key, reply.clone());
                        let _ = socket.send_to(&reply, from).await;
                    }
                    Coa::AckAfter(delay) => {
                        let reply = answer(&req, &mut gone);
                        answered.insert(key, reply.clone());
                        let socket = Arc::clone(&socket);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = socket.send_to(&reply, from).await;
                        });
                    }
                    Coa::Nak => {
                        let reply = nak(&req, SECRET.as_bytes(), req.identifier, false);
                        answered.insert(key, reply.clone());
                        let _ = socket.send_to(&reply, from).await;
                    }
                    Coa::Silent => {}
                    Coa::WrongSecret => {
                        let reply = build_reply(
                            DISCONNECT_ACK,
                            req.identifier,
                            &req,
                            &[nas_identifier()],
                            b"not-the-nas-secret",
                            false,
                            false,
                        );
                        let _ = socket.send_to(&reply, from).await;
                    }
                    Coa::WrongIdentifier => {
                        let reply = build_reply(
                            DISCONNECT_ACK,
                            req.identifier.wrapping_add(1),
                            &req,
                            &[nas_identifier()],
                            SECRET.as_bytes(),
                            false,
                            false,
                        );
                        let _ = socket.send_to(&reply, from).await;
                    }
                    Coa::ForgedNaksThenAck => {
                        let secret = SECRET.as_bytes();
                        let id = req.identifier;
                        let _ = socket
                            .send_to(&nak(&req, b"not-the-nas-secret", id, false), from)
                            .await;
                        let _ = socket
                            .send_to(&nak(&req, secret, id.wrapping_add(7), false), from)
                            .await;
                        let _ = socket.send_to(&nak(&req, secret, id, true), from).await;
                        // Correct in every way but sent from another port than the CoA port.
                        let _ = other.send_to(&nak(&req, secret, id, false), from).await;
                        // Let the forgeries arrive first.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let reply = ack(&req);
                        answered.insert(key, reply.clone());
                        let _ = socket.send_to(&reply, from).await;
                    }
                    Coa::AckSecondTransmission => {
                        if transmission >= 2 {
                            let reply = ack(&req);
                            answered.insert(key, reply.clone());
                            let _ = socket.send_to(&reply, from).await;
                        }
                    }
                }
            }
        });
        FakeNas {
            addr,
            received,
            task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Datagrams received, retransmissions included.
    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Distinct requests (a retransmission repeats Identifier and Authenticator).
    fn distinct(&self) -> usize {
        self.received()
            .iter()
            .map(|r| (r.identifier, r.authenticator))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Every datagram is an authentic Disconnect-Request naming our session, the
    /// retransmissions byte-identical to the first (RFC 5176 §2.3: retransmissions keep
    /// Identifier and Authenticator). Returns how many arrived.
    fn assert_requests_valid(&self) -> usize {
        let got = self.received();
        assert!(!got.is_empty(), "the NAS received no Disconnect-Request");
        for r in &got {
            assert_eq!(r.code, DISCONNECT_REQUEST, "{r:?}");
            assert!(
                r.request_authenticator_ok,
                "Request Authenticator does not verify: {r:?}"
            );
            assert!(
                radius::core::packet::Packet::is_authentic_request(&r.bytes, SECRET.as_bytes()),
                "radius-rs disagrees about the Request Authenticator"
            );
            assert_eq!(
                r.message_authenticator_ok,
                Some(true),
                "Message-Authenticator missing or wrong: {r:?}"
            );
            assert_eq!(r.text(attr::USER_NAME).as_deref(), Some(USER));
            assert_eq!(r.text(attr::ACCT_SESSION_ID).as_deref(), Some(SID));
            assert_eq!(
                r.ipv4(attr::FRAMED_IP_ADDRESS),
                Some(Ipv4Addr::from(FRAMED_IP))
            );
            assert_eq!(
                r.ipv4(attr::NAS_IP_ADDRESS),
                Some(NAS_IP.parse::<Ipv4Addr>().unwrap())
            );
            assert_eq!(r.bytes, got[0].bytes, "a retransmission changed the packet");
        }
        got.len()
    }
}

// ---------------------------------------------------------------------------------------
// Fake RouterOS API server: the word protocol on TCP.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ros {
    /// The user has one `/ppp/active` entry (`.id=*1A`); remove succeeds.
    Removes,
    /// `/ppp/active/print` finds nothing: a bare `!done`.
    NotFound,
    /// `/ppp/active/print` finds nothing, RouterOS 7.18+ style: `!empty` then `!done`.
    NotFoundEmpty,
    /// The entry is found, but `/ppp/active/remove` answers `!trap`.
    RemoveTraps,
    /// Accepts connections and reads everything, answers nothing.
    Hangs,
}

struct FakeRouter {
    port: u16,
    commands: Arc<Mutex<Vec<Vec<String>>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRouter {
    async fn start(mode: Ros) -> FakeRouter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&commands);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve_api(stream, mode, Arc::clone(&log)));
            }
        });
        FakeRouter {
            port,
            commands,
            task,
        }
    }

    /// The same router on its `api-ssl` service: TLS with a fresh self-signed certificate
    /// (as `/certificate add ... sign` makes on RouterOS), whose SHA-256 is returned for
    /// pinning. A failed handshake ends that connection before any API word is read.
    async fn start_tls(mode: Ros) -> (FakeRouter, [u8; 32]) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let certified = rcgen::generate_simple_self_signed(vec!["bng1.example".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let pin: [u8; 32] = sha2::Sha256::digest(cert.as_ref()).into();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&commands);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let log = Arc::clone(&log);
                conns.spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve_api(tls, mode, log).await;
                    }
                });
            }
        });
        (
            FakeRouter {
                port,
                commands,
                task,
            },
            pin,
        )
    }

    fn commands(&self) -> Vec<Vec<String>> {
        self.commands.lock().unwrap().clone()
    }

    fn verbs(&self) -> Vec<String> {
        self.commands().into_iter().map(|c| c[0].clone()).collect()
    }
}

async fn serve_api(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    mode: Ros,
    log: Arc<Mutex<Vec<Vec<String>>>>,
) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let mut logged_in = false;
    let mut active = true;
    loop {
        loop {
            let sentence = match decoder.next_sentence() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(_) => return,
            };
            if sentence.is_empty() {
                continue;
            }
            log.lock().unwrap().push(sentence.clone());
            if mode == Ros::Hangs {
                continue;
            }
            let has = |w: &str| sentence.iter().any(|x| x == w);
            let trap = |m: &str| vec![vec!["!trap".to_owned(), format!("=message={m}")], done()];
            let (replies, close) = match sentence[0].as_str() {
                "/login" => {
                    if has(&format!("=name={API_USER}"))
                        && has(&format!("=password={API_PASSWORD}"))
                    {
                        logged_in = true;
                        (vec![done()], false)
                    } else {
                        (trap("invalid user name or password (6)"), true)
                    }
                }
                _ if !logged_in => (trap("not logged in"), true),
                "/ppp/active/print" => {
                    let wanted = has(&format!("?name={USER}"));
                    match mode {
                        Ros::NotFound => (vec![done()], false),
                        Ros::NotFoundEmpty => (vec![vec!["!empty".to_owned()], done()], false),
                        _ if wanted && active => (
                            vec![
                                vec![
                                    "!re".to_owned(),
                                    format!("=.id={ROS_ID}"),
                                    format!("=name={USER}"),
                                    "=address=100.64.0.2".to_owned(),
                                    "=caller-id=F8:B4:6A:C1:71:78".to_owned(),
                                    format!("=session-id={ROS_SESSION_ID}"),
                                ],
                                done(),
                            ],
                            false,
                        ),
                        _ => (vec![done()], false),
                    }
                }
                "/ppp/active/remove" => {
                    if mode == Ros::RemoveTraps || !active || !has(&format!("=.id={ROS_ID}")) {
                        (trap("no such item"), false)
                    } else {
                        active = false;
                        (vec![done()], false)
                    }
                }
                _ => (trap("no such command"), false),
            };
            for reply in replies {
                let words: Vec<&str> = reply.iter().map(String::as_str).collect();
                if stream.write_all(&encode_sentence(&words)).await.is_err() {
                    return;
                }
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

fn done() -> Vec<String> {
    vec!["!done".to_owned()]
}

/// A TCP port on 127.0.0.1 nobody listens on (connections are refused).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// Where the test NAS (127.0.0.1) gets disconnected: its CoA port, and the RouterOS API
/// port and password when it has API credentials. The disconnect path reads the `nas`
/// table on every attempt, so this applies to the next request.
async fn configure_nas(h: &Harness, coa_port: u16, api: Option<(u16, &str)>) {
    h.store()
        .nas_upsert(&NasConfig {
            name: "bng1".into(),
            ip: NAS_IP.parse().unwrap(),
            secret: SECRET.into(),
            coa_port,
            api_user: api.map(|_| API_USER.to_owned()),
            api_password: api.map(|(_, pw)| pw.to_owned()),
            api_port: api.map_or(DEFAULT_API_PORT, |(port, _)| port),
            api_tls: false,
            api_tls_fingerprint: None,
            description: None,
        })
        .await
        .unwrap();
}

/// The test NAS with its RouterOS API on API-SSL (TLS) at `api_port`, certificate pinned
/// to `pin` when given.
async fn configure_nas_tls(h: &Harness, coa_port: u16, api_port: u16, pin: Option<[u8; 32]>) {
    h.store()
        .nas_upsert(&NasConfig {
            name: "bng1".into(),
            ip: NAS_IP.parse().unwrap(),
            secret: SECRET.into(),
            coa_port,
            api_user: Some(API_USER.to_owned()),
            api_password: Some(API_PASSWORD.to_owned()),
            api_port,
            api_tls: true,
            api_tls_fingerprint: pin,
            description: None,
        })
        .await
        .unwrap();
}

/// Open `user`'s session (start 200 s ago, one interim with counters 100 s later; both
/// inside the server's 300 s Event-Timestamp skew window); returns its id and start time.
async fn open_session(h: &Harness, user: &str) -> (i64, u32) {
    let t0 = now() - 200;
    h.client
        .send(&Acct::start(user, SID).at(t0).framed_ip(FRAMED_IP))
        .await;
    h.client
        .send(
            &Acct::interim(user, SID)
                .at(t0 + 100)
                .time(100)
                .octets(IN_OCTETS, OUT_OCTETS),
        )
        .await;
    let row = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.username == user && r.stop.is_none())
        .expect("the session is open");
    assert_eq!(
        row.input,
        Some(IN_OCTETS as i64),
        "the interim's counters: {row:?}"
    );
    (row.radacctid, t0)
}

fn disconnector() -> String {
    token("admin", None, None, &[])
}

/// `POST /api/sessions/{id}/disconnect` (or the `DELETE` alias): status, JSON body, time.
async fn request(h: &Harness, method: &str, id: &str, tok: &str) -> (u16, Value, Duration) {
    let uri = if method == "DELETE" {
        format!("/api/sessions/{id}")
    } else {
        format!("/api/sessions/{id}/disconnect")
    };
    let started = Instant::now();
    let (status, body, _) = oneshot(h, method, &uri, Some(tok), None).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_no_secrets(&text, "API response");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, took)
}

async fn disconnect(h: &Harness, id: i64, tok: &str) -> (u16, Value, Duration) {
    request(h, "POST", &id.to_string(), tok).await
}

fn ok(method: &str) -> Value {
    json!({"success": true, "method": method, "message": "disconnect request sent"})
}

fn already_closed() -> Value {
    json!({"success": true, "method": "already_closed", "message": "session already closed"})
}

fn error(message: &str) -> Value {
    json!({"success": false, "message": message})
}

async fn open_count(h: &Harness) -> i64 {
    let (status, v) = api_json(h, "/api/sessions/count", Some(&admin_token())).await;
    assert_eq!(status, 200, "{v}");
    v["count"].as_i64().unwrap()
}

async fn stopsource(h: &Harness, id: i64) -> Option<String> {
    for s in ["server", "nas"] {
        let sql =
            format!("SELECT COUNT(*) FROM radacct WHERE radacctid = {id} AND stopsource = '{s}'");
        if h.scalar(&sql).await == 1 {
            return Some(s.to_owned());
        }
    }
    None
}

async fn is_online(h: &Harness, user: &str) -> bool {
    let sql = format!("SELECT COUNT(*) FROM subscribers WHERE username = '{user}' AND is_online");
    h.scalar(&sql).await == 1
}

/// One `audit_log` row, read with SQL that means the same on both backends.
#[derive(Debug, Clone)]
struct Audit {
    actor: String,
    actor_role: String,
    action: String,
    radacctid: Option<i64>,
    username: Option<String>,
    nasipaddress: Option<String>,
    method: Option<String>,
    result: String,
    error_cause: Option<String>,
    rtt_ms: Option<i64>,
    detail: Option<String>,
}

async fn audit_rows(h: &Harness) -> Vec<Audit> {
    use sqlx::Row as _;
    macro_rules! read {
        ($pool:expr, $nasip:expr) => {{
            let sql = format!(
                "SELECT actor, actor_role, action, radacctid, username, {} AS nasip, method, \
                 result, error_cause, rtt_ms, detail FROM audit_log ORDER BY id",
                $nasip
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| Audit {
                    actor: r.get("actor"),
                    actor_role: r.get("actor_role"),
                    action: r.get("action"),
                    radacctid: r.get("radacctid"),
                    username: r.get("username"),
                    nasipaddress: r.get("nasip"),
                    method: r.get("method"),
                    result: r.get("result"),
                    error_cause: r.get("error_cause"),
                    rtt_ms: r.get("rtt_ms"),
                    detail: r.get("detail"),
                })
                .collect()
        }};
    }
    let rows: Vec<Audit> = match h.store() {
        Store::Sqlite(s) => read!(s.pool(), "nasipaddress"),
        Store::Postgres(s) => read!(s.pool(), "host(nasipaddress)"),
    };
    for a in &rows {
        assert_no_secrets(&format!("{a:?}"), "audit_log");
    }
    rows
}

/// The audit row of one attempt: who, which session, and that an RTT was measured.
fn assert_attempt(a: &Audit, id: i64, method: &str, result: &str) {
    assert_eq!(a.actor, "test-Admin", "{a:?}");
    assert_eq!(a.actor_role, "admin", "{a:?}");
    assert_eq!(a.action, "disconnect", "{a:?}");
    assert_eq!(a.radacctid, Some(id), "{a:?}");
    assert_eq!(a.username.as_deref(), Some(USER), "{a:?}");
    assert_eq!(a.nasipaddress.as_deref(), Some(NAS_IP), "{a:?}");
    assert_eq!(a.method.as_deref(), Some(method), "{a:?}");
    assert_eq!(a.result, result, "{a:?}");
    assert!(a.rtt_ms.is_some_and(|ms| ms >= 0), "rtt_ms not set: {a:?}");
}

fn assert_no_secrets(text: &str, what: &str) {
    for secret in [SECRET, API_PASSWORD, WRONG_API_PASSWORD] {
        assert!(!text.contains(secret), "{what} contains a secret: {text}");
    }
}

/// `radacctd_disconnects_total{method=…,result=…}`. The recorder is shared by every test
/// in this process, so callers compare before and after.
async fn disconnects_metric(h: &Harness, method: &str, result: &str) -> f64 {
    let (status, text) = h.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert_no_secrets(&text, "/metrics");
    let m = format!("method=\"{method}\"");
    let t = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("radacctd_disconnects_total{") && l.contains(&m) && l.contains(&t)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------
// Tests: outcomes, on both backends.
// ---------------------------------------------------------------------------------------

/// ACK → 200 `coa`; the server writes the stop at once (Admin-Reset, now, last counters,
/// `stopsource = 'server'`), the session leaves the index, the count and the live stream
/// show it, `is_online` follows; the NAS's own Stop later completes the row and it stays
/// closed as Admin-Reset.
async fn coa_ack_closes_the_session_at_once_as_admin_reset_and_the_nas_stop_completes_it(
    b: Backend,
) {
    let h = Harness::start(b).await;
    h.store().upsert_subscriber(USER, None).await.unwrap();
    let nas = FakeNas::start(Coa::Ack).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, t0) = open_session(&h, USER).await;
    let count_before = open_count(&h).await;
    assert!(is_online(&h, USER).await);
    let metric_before = disconnects_metric(&h, "coa", "success").await;
    let mut changes = h.server.changes.subscribe();

    let before = i64::from(now());
    let (status, body, took) = disconnect(&h, id, &disconnector()).await;
    let after = i64::from(now());

    assert_eq!((status, body), (200, ok("coa")));
    assert!(took < NO_WAIT, "an ACK took {took:?}");
    assert_eq!(
        nas.assert_requests_valid(),
        1,
        "exactly one Disconnect-Request"
    );

    // Written at once, before the answer.
    let row = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.radacctid == id)
        .unwrap();
    let stop = row.stop.expect("closed at once");
    assert!(
        (before..=after).contains(&stop),
        "stop {stop} not now ({before}..{after})"
    );
    assert_eq!(row.cause.as_deref(), Some("Admin-Reset"));
    assert_eq!(
        row.input,
        Some(IN_OCTETS as i64),
        "last known counters kept"
    );
    assert_eq!(row.output, Some(OUT_OCTETS as i64));
    assert_eq!(row.start, Some(i64::from(t0)));
    assert_eq!(row.session_time, Some(stop - i64::from(t0)));
    assert_eq!(stopsource(&h, id).await.as_deref(), Some("server"));
    assert!(h.server.index.get_by_id(id).is_none(), "still in the index");
    assert_eq!(open_count(&h).await, count_before - 1);
    assert!(
        !is_online(&h, USER).await,
        "is_online follows the open sessions"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let c = changes.recv().await.unwrap();
            if c.session.radacctid == id && c.kind == ChangeKind::Stopped {
                return c;
            }
        }
    })
    .await
    .expect("the live stream reports the stop");
    assert_eq!(
        stopped.session.terminate_cause.as_deref(),
        Some("Admin-Reset")
    );

    let audit = audit_rows(&h).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_attempt(&audit[0], id, "coa", "coa_ack");
    assert_eq!(audit[0].error_cause, None);
    assert!(
        disconnects_metric(&h, "coa", "success").await >= metric_before + 1.0,
        "radacctd_disconnects_total{{method=\"coa\",result=\"success\"}} did not move"
    );

    // The NAS's own Stop (what MikroTik sends after tearing the session down) completes it.
    let t_stop = now();
    h.client
        .send(
            &Acct::stop(USER, SID)
                .at(t_stop)
                .time(t_stop - t0)
                .octets(IN_OCTETS + 1_000, OUT_OCTETS + 2_000)
                .cause(1),
        )
        .await;
    let rows = h.rows().await;
    assert_eq!(
        rows.len(),
        1,
        "the Stop completes the row, no new one: {rows:?}"
    );
    let row = &rows[0];
    assert_eq!(row.stop, Some(i64::from(t_stop)));
    assert_eq!(row.session_time, Some(i64::from(t_stop - t0)));
    assert_eq!(row.input, Some((IN_OCTETS + 1_000) as i64));
    assert_eq!(row.output, Some((OUT_OCTETS + 2_000) as i64));
    assert_eq!(
        row.cause.as_deref(),
        Some("Admin-Reset"),
        "the server's cause stays"
    );
    assert_eq!(stopsource(&h, id).await.as_deref(), Some("nas"));
    assert!(h.server.index.get_by_id(id).is_none(), "stays closed");
    assert_eq!(open_count(&h).await, count_before - 1);
    assert!(!is_online(&h, USER).await);
    assert_eq!(nas.count(), 1);
}

/// NAK (Error-Cause 503) → the RouterOS API fallback logs in, finds the entry by name and
/// removes it by `.id` → 200 `api`; the stop is written at once as for an ACK.
async fn nak_falls_back_to_the_routeros_api_which_removes_the_session(b: Backend) {
    let h = Harness::start(b).await;
    let nas = FakeNas::start(Coa::Nak).await;
    let router = FakeRouter::start(Ros::Removes).await;
    configure_nas(&h, nas.port(), Some((router.port, API_PASSWORD))).await;
    let (id, _) = open_session(&h, USER).await;
    let count_before = open_count(&h).await;
    let metric_before = disconnects_metric(&h, "api", "success").await;

    let before = i64::from(now());
    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("api")));
    assert!(took < NO_WAIT, "a NAK must not wait: {took:?}");
    assert_eq!(
        nas.assert_requests_valid(),
        1,
        "a NAK is final, no retransmission"
    );
    let commands = router.commands();
    assert_eq!(
        router.verbs(),
        ["/login", "/ppp/active/print", "/ppp/active/remove"]
    );
    assert!(
        commands[0].contains(&format!("=name={API_USER}")),
        "{commands:?}"
    );
    assert!(
        commands[0].contains(&format!("=password={API_PASSWORD}")),
        "{commands:?}"
    );
    assert!(
        commands[1].contains(&format!("?name={USER}")),
        "{commands:?}"
    );
    assert_eq!(
        commands[2],
        ["/ppp/active/remove", &format!("=.id={ROS_ID}")]
    );

    let row = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.radacctid == id)
        .unwrap();
    assert!(row.stop.is_some_and(|s| s >= before), "{row:?}");
    assert_eq!(row.cause.as_deref(), Some("Admin-Reset"));
    assert_eq!(row.input, Some(IN_OCTETS as i64));
    assert_eq!(stopsource(&h, id).await.as_deref(), Some("server"));
    assert!(h.server.index.get_by_id(id).is_none());
    assert_eq!(open_count(&h).await, count_before - 1);

    let audit = audit_rows(&h).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_attempt(&audit[0], id, "coa+api", "api_removed");
    assert_eq!(
        audit[0].error_cause.as_deref(),
        Some("Session-Context-Not-Found")
    );
    assert!(disconnects_metric(&h, "api", "success").await >= metric_before + 1.0);
}

/// No answer to the Disconnect-Request (retransmitted, unchanged, for 3 s) and the RouterOS
/// API port refuses connections → 503 `NAS unreachable`, and nothing is written: the row,
/// the index and the count are as before (the sweeper will close it later).
async fn coa_silence_and_refused_api_is_503_nas_unreachable_and_writes_nothing(b: Backend) {
    let h = Harness::start(b).await;
    let nas = FakeNas::start(Coa::Silent).await;
    configure_nas(&h, nas.port(), Some((closed_port(), API_PASSWORD))).await;
    let (id, _) = open_session(&h, USER).await;
    let rows_before = h.rows().await;
    let count_before = open_count(&h).await;
    let metric_before = disconnects_metric(&h, "api", "failed").await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    assert!(
        took >= COA_BUDGET - Duration::from_millis(100) && took < COA_BUDGET + SLACK,
        "3 s CoA budget, then a refused connection fails at once: took {took:?}"
    );
    let sent = nas.assert_requests_valid();
    assert!(
        (2..=4).contains(&sent),
        "retransmitted within the budget: {sent} packets"
    );
    assert_eq!(nas.distinct(), 1);
    assert_eq!(h.rows().await, rows_before, "nothing written");
    assert_eq!(stopsource(&h, id).await, None);
    assert!(h.server.index.get_by_id(id).is_some());
    assert_eq!(open_count(&h).await, count_before);

    let audit = audit_rows(&h).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_attempt(&audit[0], id, "coa+api", "failed");
    assert_eq!(audit[0].error_cause, None, "silence is not a NAK");
    assert!(audit[0].rtt_ms.unwrap() >= 2900, "{:?}", audit[0]);
    assert!(disconnects_metric(&h, "api", "failed").await >= metric_before + 1.0);
}

/// Idempotent: once a session is closed — by our disconnect or by the NAS's own Stop —
/// every further POST or DELETE answers 200 `already_closed` without contacting the NAS,
/// and each is audited.
async fn disconnecting_a_closed_session_is_already_closed_every_time(b: Backend) {
    let h = Harness::start(b).await;
    let nas = FakeNas::start(Coa::Ack).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, t0) = open_session(&h, USER).await;
    let tok = disconnector();

    assert_eq!(disconnect(&h, id, &tok).await.1, ok("coa"));
    let row = h.rows().await;
    let closed_before = disconnects_metric(&h, "none", "already_closed").await;
    for method in ["POST", "POST", "DELETE"] {
        let (status, body, _) = request(&h, method, &id.to_string(), &tok).await;
        assert_eq!((status, body), (200, already_closed()), "{method}");
    }
    assert_eq!(nas.count(), 1, "a closed session is not disconnected again");
    assert_eq!(h.rows().await, row, "nothing changes");

    // A session the NAS itself stopped.
    let other = "alice@example.lb";
    h.client.send(&Acct::start(other, "82000001").at(t0)).await;
    h.client
        .send(&Acct::stop(other, "82000001").at(t0 + 60).time(60).cause(1))
        .await;
    let closed = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.username == other)
        .unwrap();
    for _ in 0..2 {
        let (status, body, _) = disconnect(&h, closed.radacctid, &tok).await;
        assert_eq!((status, body), (200, already_closed()));
    }
    assert_eq!(nas.count(), 1);
    assert!(
        disconnects_metric(&h, "none", "already_closed").await >= closed_before + 5.0,
        "already_closed answers are counted"
    );

    let audit = audit_rows(&h).await;
    let results: Vec<&str> = audit.iter().map(|a| a.result.as_str()).collect();
    assert_eq!(
        results,
        [
            "coa_ack",
            "already_closed",
            "already_closed",
            "already_closed",
            "already_closed",
            "already_closed"
        ]
    );
    for a in &audit[1..] {
        assert_eq!(a.actor, "test-Admin");
        assert_eq!(a.method, None, "nothing was tried: {a:?}");
    }
    assert_eq!(audit[3].radacctid, Some(id));
    assert_eq!(audit[5].radacctid, Some(closed.radacctid));
}

/// The contract's error table: 404 `session not found`, 403 `subscribers.disconnect
/// denied`, 403 `not authorized` outside a reseller's subtree (and 401 without a token) —
/// none of them sends anything to the NAS or changes the session. A reseller whose subtree
/// holds the subscriber may disconnect.
async fn errors_follow_the_contract_table(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let nas = FakeNas::start(Coa::Ack).await;
    configure_nas(&h, nas.port(), None).await;
    // r2user belongs to reseller 2, under 1; reseller 4 is a sibling branch.
    let t0 = now() - 200;
    h.client
        .send(&Acct::start("r2user", SID).at(t0).framed_ip(FRAMED_IP))
        .await;
    let id = h.rows().await[0].radacctid;
    let rows_before = h.rows().await;
    let admin = disconnector();

    for method in ["POST", "DELETE"] {
        for bad in ["987654321", "abc", "-1"] {
            let (status, body, _) = request(&h, method, bad, &admin).await;
            assert_eq!(
                (status, body),
                (404, error("session not found")),
                "{method} {bad}"
            );
        }
        let denied = [
            token(
                "reseller",
                Some(1),
                None,
                &["sessions.view", "sessions.view_all"],
            ),
            token("subscriber", None, Some("r2user"), &["sessions.view"]),
        ];
        for tok in &denied {
            let (status, body, _) = request(&h, method, &id.to_string(), tok).await;
            assert_eq!(
                (status, body),
                (403, error("subscribers.disconnect denied")),
                "{method}"
            );
        }
        let outside = token("reseller", Some(4), None, &["subscribers.disconnect"]);
        let (status, body, _) = request(&h, method, &id.to_string(), &outside).await;
        assert_eq!((status, body), (403, error("not authorized")), "{method}");
        let other_user = token(
            "subscriber",
            None,
            Some("r3user"),
            &["subscribers.disconnect"],
        );
        let (status, body, _) = request(&h, method, &id.to_string(), &other_user).await;
        assert_eq!((status, body), (403, error("not authorized")), "{method}");
        let uri = if method == "DELETE" {
            format!("/api/sessions/{id}")
        } else {
            format!("/api/sessions/{id}/disconnect")
        };
        let (status, _, _) = oneshot(&h, method, &uri, None, None).await;
        assert_eq!(status, 401, "{method} without a token");
    }
    assert_eq!(nas.count(), 0, "nothing sent for a refused request");
    assert_eq!(h.rows().await, rows_before);
    assert!(h.server.index.get_by_id(id).is_some());

    // Reseller 1 is an ancestor of reseller 2: in scope.
    let parent = token("reseller", Some(1), None, &["subscribers.disconnect"]);
    let (status, body, _) = request(&h, "DELETE", &id.to_string(), &parent).await;
    assert_eq!((status, body), (200, ok("coa")));
    assert_eq!(nas.count(), 1);
    assert!(h.server.index.get_by_id(id).is_none());
    let audit = audit_rows(&h).await;
    assert_eq!(
        audit.len(),
        1,
        "only the performed disconnect is audited: {audit:?}"
    );
    assert_eq!(audit[0].actor, "test-Reseller");
    assert_eq!(audit[0].actor_role, "reseller");
    assert_eq!(audit[0].result, "coa_ack");
}

// ---------------------------------------------------------------------------------------
// Tests: the RFC 5176 client's behaviour (the database does not matter: SQLite).
// ---------------------------------------------------------------------------------------

async fn sqlite() -> Harness {
    Harness::start(Backend::Sqlite).await
}

/// The first transmission is lost: the client retransmits the identical packet about a
/// second later, within its 3 s budget, and the ACK to it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_request_is_retransmitted_within_the_three_second_budget() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::AckSecondTransmission).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("coa")));
    assert_eq!(nas.assert_requests_valid(), 2);
    assert_eq!(nas.distinct(), 1, "a retransmission, not a new request");
    assert!(
        took >= Duration::from_millis(900) && took < COA_BUDGET,
        "retransmitted after ~1 s and answered within the budget: {took:?}"
    );
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa", "coa_ack");
    assert!(audit[0].rtt_ms.unwrap() >= 900, "{:?}", audit[0]);
}

/// No answer within the 3 s budget (three transmissions) → the RouterOS API removes the
/// session → 200 `api`, and the stop is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coa_silence_falls_back_to_the_routeros_api() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::Silent).await;
    let router = FakeRouter::start(Ros::Removes).await;
    configure_nas(&h, nas.port(), Some((router.port, API_PASSWORD))).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("api")));
    assert!(took >= COA_BUDGET - Duration::from_millis(100), "{took:?}");
    assert!(took < COA_BUDGET + SLACK, "{took:?}");
    assert_eq!(nas.assert_requests_valid(), 3, "sent at 0, 1 and 2 s");
    assert_eq!(nas.distinct(), 1);
    assert_eq!(
        router.commands()[2],
        ["/ppp/active/remove", &format!("=.id={ROS_ID}")]
    );
    assert!(h.server.index.get_by_id(id).is_none());
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa+api", "api_removed");
    assert_eq!(audit[0].error_cause, None, "silence is not a NAK");
}

/// A Disconnect-ACK signed with another secret is no answer: the client keeps waiting and
/// retransmitting for the whole budget, then falls back to the RouterOS API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_signed_with_a_wrong_secret_is_ignored() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::WrongSecret).await;
    let router = FakeRouter::start(Ros::Removes).await;
    configure_nas(&h, nas.port(), Some((router.port, API_PASSWORD))).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("api")));
    assert!(took >= COA_BUDGET - Duration::from_millis(100), "{took:?}");
    assert!(took < COA_BUDGET + SLACK, "{took:?}");
    assert!(nas.assert_requests_valid() >= 2, "kept retransmitting");
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa+api", "api_removed");
    assert_eq!(audit[0].error_cause, None);
}

/// A correctly signed Disconnect-ACK with another Identifier is no answer either; without
/// RouterOS API credentials there is no fallback: 503, and the session stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_a_wrong_identifier_is_ignored() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::WrongIdentifier).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    assert!(took >= COA_BUDGET - Duration::from_millis(100), "{took:?}");
    assert!(took < COA_BUDGET + SLACK, "{took:?}");
    assert!(nas.assert_requests_valid() >= 2);
    assert!(h.server.index.get_by_id(id).is_some());
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa", "failed");
}

/// Forged Disconnect-NAKs (wrong secret, wrong Identifier, bad Message-Authenticator, from
/// another port) arriving before the real ACK neither end the wait nor count as a NAK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_naks_do_not_end_the_wait_for_the_real_ack() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::ForgedNaksThenAck).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("coa")));
    assert!(took < NO_WAIT, "{took:?}");
    assert_eq!(nas.assert_requests_valid(), 1);
    assert_eq!(audit_rows(&h).await[0].error_cause, None);
}

/// Five disconnects of the same session at once share one attempt: the NAS receives
/// exactly one Disconnect-Request, every caller gets 200 `coa`, every caller is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disconnects_of_one_session_send_one_disconnect_request() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::AckAfter(Duration::from_millis(300))).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, _) = open_session(&h, USER).await;
    let tok = disconnector();

    let id_s = id.to_string();
    let calls = (0..5).map(|i| {
        let method = if i % 2 == 0 { "POST" } else { "DELETE" };
        request(&h, method, &id_s, &tok)
    });
    let answers = futures_util::future::join_all(calls).await;

    for (status, body, _) in &answers {
        assert_eq!((*status, body), (200, &ok("coa")));
    }
    assert_eq!(
        nas.assert_requests_valid(),
        1,
        "exactly one Disconnect-Request"
    );
    let audit = audit_rows(&h).await;
    assert_eq!(audit.len(), 5, "{audit:?}");
    for a in &audit {
        assert_attempt(a, id, "coa", "coa_ack");
    }
    let joined = audit
        .iter()
        .filter(|a| a.detail.as_deref().is_some_and(|d| d.starts_with("joined")))
        .count();
    assert_eq!(joined, 4, "{audit:?}");
    let rows = h.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].cause.as_deref(), Some("Admin-Reset"));
    assert_eq!(
        disconnect(&h, id, &tok).await.1,
        already_closed(),
        "and afterwards it is closed"
    );
    assert_eq!(nas.count(), 1);
}

/// A second disconnect of a session whose ACK has arrived but whose stop is still being
/// committed (a slow store) is still the same disconnect: the NAS must not get a second
/// Disconnect-Request (a real NAS NAKs it: the session is gone), and the caller must not
/// be told the NAS is unreachable.
async fn a_disconnect_while_the_confirmed_stop_is_being_committed_is_not_sent_again(b: Backend) {
    let h = Harness::start(b).await;
    let nas = FakeNas::start(Coa::Ack).await;
    configure_nas(&h, nas.port(), None).await;
    let (id, _) = open_session(&h, USER).await;
    let tok = disconnector();

    let lock = WriteLock::take(&h.db).await;
    let (first, second) = tokio::join!(disconnect(&h, id, &tok), async {
        // The first request has its ACK; its stop now waits for the store.
        let acked =
            crate::harness::eventually(Duration::from_secs(2), || async { nas.count() == 1 }).await;
        assert!(acked, "the first Disconnect-Request did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut second = tokio::spawn({
            let api = h.server.api.clone();
            let tok = tok.clone();
            async move { raw_disconnect(api, id, &tok).await }
        });
        // On PostgreSQL the second request can finish while radacct is locked; on SQLite
        // its audit insert waits for the lock, so let go after a while.
        let early = tokio::time::timeout(Duration::from_millis(1500), &mut second).await;
        lock.release().await;
        match early {
            Ok(done) => done.unwrap(),
            Err(_) => second.await.unwrap(),
        }
    });

    assert_eq!((first.0, first.1), (200, ok("coa")));
    assert_eq!(
        nas.distinct(),
        1,
        "a second Disconnect-Request was sent for a session the NAS had already confirmed \
         disconnected (second caller got {} {})",
        second.0,
        second.1
    );
    assert_eq!(second.0, 200, "second caller: {}", second.1);
    assert!(
        second.1 == ok("coa") || second.1 == already_closed(),
        "{}",
        second.1
    );
}

/// `oneshot` without borrowing the harness, for a request run in its own task.
async fn raw_disconnect(mut state: radacctd::api::AppState, id: i64, tok: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    state.limiter = Arc::new(radacctd::api::ratelimit::RateLimiter::new(0, vec![]));
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/api/sessions/{id}/disconnect"))
        .header("authorization", format!("Bearer {tok}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = radacctd::api::router(state).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

// ---------------------------------------------------------------------------------------
// Tests: the RouterOS API fallback failing (SQLite; CoA NAKs so the fallback runs at once).
// ---------------------------------------------------------------------------------------

/// Runs a disconnect with a NAKing NAS and `router`; expects 503 with the session open.
async fn failed_fallback(h: &Harness, router_port: u16, password: &str) -> (Duration, Audit) {
    let nas = FakeNas::start(Coa::Nak).await;
    configure_nas(h, nas.port(), Some((router_port, password))).await;
    let (id, _) = open_session(h, USER).await;
    let rows_before = h.rows().await;

    let (status, body, took) = disconnect(h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    assert_eq!(nas.assert_requests_valid(), 1);
    assert_eq!(h.rows().await, rows_before, "nothing written");
    assert!(h.server.index.get_by_id(id).is_some());
    let audit = audit_rows(h).await.pop().unwrap();
    assert_attempt(&audit, id, "coa+api", "failed");
    assert_eq!(
        audit.error_cause.as_deref(),
        Some("Session-Context-Not-Found")
    );
    (took, audit)
}

/// A refused RouterOS login ends the fallback: nothing but `/login` is sent, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routeros_login_failure_fails_the_fallback() {
    let h = sqlite().await;
    let router = FakeRouter::start(Ros::Removes).await;

    let (took, audit) = failed_fallback(&h, router.port, WRONG_API_PASSWORD).await;

    assert!(took < NO_WAIT, "{took:?}");
    assert_eq!(router.verbs(), ["/login"]);
    let detail = audit.detail.unwrap_or_default();
    assert!(detail.contains("invalid user name or password"), "{detail}");
}

/// `!trap` on `/ppp/active/remove` is a failure, not a success: 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routeros_trap_on_remove_fails_the_fallback() {
    let h = sqlite().await;
    let router = FakeRouter::start(Ros::RemoveTraps).await;

    let (took, _) = failed_fallback(&h, router.port, API_PASSWORD).await;

    assert!(took < NO_WAIT, "{took:?}");
    assert_eq!(
        router.verbs(),
        ["/login", "/ppp/active/print", "/ppp/active/remove"]
    );
    assert_eq!(router.commands()[2][1], format!("=.id={ROS_ID}"));
}

/// A user RouterOS does not list (bare `!done`, or `!empty` then `!done`) was not
/// removed: 503, and no remove is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_routeros_does_not_list_fails_the_fallback() {
    for mode in [Ros::NotFound, Ros::NotFoundEmpty] {
        let h = sqlite().await;
        let router = FakeRouter::start(mode).await;

        let (took, _) = failed_fallback(&h, router.port, API_PASSWORD).await;

        assert!(took < NO_WAIT, "{mode:?}: {took:?}");
        assert_eq!(router.verbs(), ["/login", "/ppp/active/print"], "{mode:?}");
    }
}

/// A closed RouterOS API port fails the fallback at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routeros_connection_refused_fails_the_fallback_at_once() {
    let h = sqlite().await;

    let (took, audit) = failed_fallback(&h, closed_port(), API_PASSWORD).await;

    assert!(took < NO_WAIT, "{took:?}");
    assert!(audit.detail.unwrap_or_default().contains("RouterOS API"));
}

/// A router that accepts the connection and never answers holds the disconnect for the
/// API timeout (5 s) after the CoA budget (3 s), no longer: 503 after about 8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nas_and_hung_routeros_give_up_after_coa_budget_plus_api_timeout() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::Silent).await;
    let router = FakeRouter::start(Ros::Hangs).await;
    configure_nas(&h, nas.port(), Some((router.port, API_PASSWORD))).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    let bound = COA_BUDGET + API_TIMEOUT;
    assert!(
        took >= bound - Duration::from_millis(200) && took < bound + SLACK,
        "expected about {bound:?}, took {took:?}"
    );
    assert_eq!(
        router.verbs(),
        ["/login"],
        "the login was sent and never answered"
    );
    assert!(h.server.index.get_by_id(id).is_some());
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa+api", "failed");
}

// ---------------------------------------------------------------------------------------
// Independent peer: FreeRADIUS 3.2 as the CoA receiver.
// ---------------------------------------------------------------------------------------

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/freeradius.sh");

/// FreeRADIUS answering Disconnect-Requests on its own UDP port; stopped on drop (also
/// when a test panics, then printing the end of its logs).
struct FreeRadiusCoa {
    port: u16,
    dir: tempfile::TempDir,
}

impl FreeRadiusCoa {
    async fn start() -> FreeRadiusCoa {
        let dir = tempfile::tempdir().unwrap();
        let mut failures = String::new();
        // A free port found by bind-and-release can be taken before FreeRADIUS binds it.
        for _ in 0..3 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = tokio::process::Command::new(SCRIPT)
                .arg("coa")
                .arg(dir.path())
                .args([&port.to_string(), SECRET])
                .output()
                .await
                .expect("cannot run scripts/freeradius.sh");
            if out.status.success() {
                return FreeRadiusCoa { port, dir };
            }
            failures += &String::from_utf8_lossy(&out.stdout);
            failures += &String::from_utf8_lossy(&out.stderr);
        }
        panic!("FreeRADIUS did not start in CoA mode:\n{failures}");
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for FreeRadiusCoa {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- FreeRADIUS radius.log ---\n{}", self.file("radius.log"));
            eprintln!("--- FreeRADIUS coa.log ---\n{}", self.file("coa.log"));
        }
        let status = std::process::Command::new(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("scripts/freeradius.sh stop failed: {status:?}");
        }
    }
}

/// FreeRADIUS, which drops a Disconnect-Request whose Request Authenticator or
/// Message-Authenticator does not verify, ACKs ours: 200 `coa`, and it logged the
/// request with our User-Name, Acct-Session-Id, Framed-IP-Address and NAS-IP-Address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeradius_acks_our_disconnect_request() {
    let fr = FreeRadiusCoa::start().await;
    let h = sqlite().await;
    configure_nas(&h, fr.port, None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!(
        (status, body),
        (200, ok("coa")),
        "{}",
        fr.file("radius.log")
    );
    assert!(took < NO_WAIT, "{took:?}");
    let logged = fr.file("coa.log");
    let expected = format!(
        "Disconnect-Request User-Name={USER} Acct-Session-Id={SID} \
         Framed-IP-Address={} NAS-IP-Address={NAS_IP}",
        Ipv4Addr::from(FRAMED_IP)
    );
    assert_eq!(
        logged.lines().collect::<Vec<_>>(),
        [expected.as_str()],
        "{logged}"
    );
    let log = fr.file("radius.log");
    assert!(!log.contains("invalid"), "{log}");
    assert!(h.server.index.get_by_id(id).is_none());
    let row = &h.rows().await[0];
    assert_eq!(row.cause.as_deref(), Some("Admin-Reset"));
}

// ---------------------------------------------------------------------------------------
// RouterOS API-SSL (TLS, 8729), with and without a pinned certificate.
// ---------------------------------------------------------------------------------------

/// NAK → the API fallback over TLS to a router whose certificate matches the pin stored in
/// the `nas` table (so the columns round-trip through both backends): the same API
/// conversation runs inside TLS, the session is removed and the stop written.
async fn nak_falls_back_to_routeros_api_ssl_with_the_pinned_certificate(b: Backend) {
    let h = Harness::start(b).await;
    let nas = FakeNas::start(Coa::Nak).await;
    let (router, pin) = FakeRouter::start_tls(Ros::Removes).await;
    configure_nas_tls(&h, nas.port(), router.port, Some(pin)).await;
    let stored = h.store().nas_list().await.unwrap();
    assert!(stored[0].config.api_tls, "{stored:?}");
    assert_eq!(stored[0].config.api_tls_fingerprint, Some(pin));
    let (id, _) = open_session(&h, USER).await;

    let (status, body, _) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("api")));
    assert_eq!(
        router.verbs(),
        ["/login", "/ppp/active/print", "/ppp/active/remove"]
    );
    assert!(h.server.index.get_by_id(id).is_none());
    let row = h
        .rows()
        .await
        .into_iter()
        .find(|r| r.radacctid == id)
        .unwrap();
    assert_eq!(row.cause.as_deref(), Some("Admin-Reset"));
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa+api", "api_removed");
    let detail = audit[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("RouterOS API-SSL removed 1"), "{detail}");
    assert_no_secrets(&detail, "audit detail");
}

/// A router presenting another certificate than the pinned one (a man in the middle, or a
/// re-generated certificate) fails the handshake: no API word — above all not the
/// password-bearing `/login` — is sent, nothing is written, and the caller gets 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_with_a_different_certificate_than_pinned_sends_nothing() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::Nak).await;
    let (router, pin) = FakeRouter::start_tls(Ros::Removes).await;
    let mut other = pin;
    other[31] ^= 0x01;
    configure_nas_tls(&h, nas.port(), router.port, Some(other)).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    assert!(took < NO_WAIT, "a failed handshake must not wait: {took:?}");
    assert!(router.commands().is_empty(), "{:?}", router.commands());
    assert!(h.server.index.get_by_id(id).is_some(), "nothing written");
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa+api", "failed");
    let detail = audit[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("RouterOS API-SSL"), "{detail}");
    assert!(detail.contains("certificate"), "{detail}");
}

/// Without a pin the API-SSL fallback still works against a self-signed certificate
/// (encrypted, peer not authenticated; radacctd warns at start and in check-config).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_without_a_pin_accepts_the_router_certificate() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::Nak).await;
    let (router, _) = FakeRouter::start_tls(Ros::Removes).await;
    configure_nas_tls(&h, nas.port(), router.port, None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, _) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("api")));
    assert_eq!(router.verbs().len(), 3);
    assert!(h.server.index.get_by_id(id).is_none());
}

/// A NAS configured for API-SSL whose port speaks the plain API (TLS not enabled on the
/// router): the handshake fails fast and the attempt is 503, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_against_a_plain_api_port_fails_without_hanging() {
    let h = sqlite().await;
    let nas = FakeNas::start(Coa::Nak).await;
    let router = FakeRouter::start(Ros::Removes).await;
    configure_nas_tls(&h, nas.port(), router.port, None).await;
    let (id, _) = open_session(&h, USER).await;

    let (status, body, took) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (503, error("NAS unreachable")));
    assert!(took < API_TIMEOUT + SLACK, "{took:?}");
    // The plain router sees only the TLS ClientHello, which its decoder may or may not cut
    // into "words" depending on its random bytes: what matters is that no API command
    // (and no login with the password) went over the wire in plaintext.
    let commands = router.commands();
    assert!(
        commands.iter().all(|c| !c
            .iter()
            .any(|w| w.starts_with('/') || w.contains(API_PASSWORD))),
        "{commands:?}"
    );
}

/// With no configuration at all, sessions come from the built-in localhost client
/// (127.0.0.1, `testing123`), which has no `nas` row. Disconnecting one still sends a
/// proper Disconnect-Request to 127.0.0.1:1700 signed with that secret, and the ACK
/// closes the session — the out-of-the-box setup works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_localhost_client_is_disconnected_on_port_1700() {
    use radacctd::config::{Config, FileConfig, Overrides};
    const DEFAULT_SECRET: &[u8] = b"testing123";
    let db = crate::harness::TestDb::new(Backend::Sqlite).await;
    let toml = format!(
        "[database]\nurl = \"{}\"\n[radius]\nlisten = \"127.0.0.1:0\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[auth]\njwt_secret = \"{}\"\n",
        db.url,
        crate::harness::JWT_SECRET
    );
    let config = Config::build(
        FileConfig::parse(std::path::Path::new("t.toml"), &toml).unwrap(),
        Overrides::default(),
    )
    .unwrap();
    assert!(config.radius.default_client && config.nas.is_empty());
    let server = radacctd::app::Server::start(config).await.unwrap();
    let client = crate::harness::RadClient::new(server.radius_addr, "testing123").await;
    let h = Harness { server, db, client };

    let socket = UdpSocket::bind("127.0.0.1:1700")
        .await
        .expect("UDP 127.0.0.1:1700 must be free for this test");
    let nas = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let req = decode_request(&buf[..n], DEFAULT_SECRET).expect("a RADIUS packet");
        assert_eq!(req.code, DISCONNECT_REQUEST);
        assert!(req.authentic(), "signed with testing123");
        let reply = build_reply(
            DISCONNECT_ACK,
            req.identifier,
            &req,
            &[],
            DEFAULT_SECRET,
            false,
            false,
        );
        socket.send_to(&reply, from).await.unwrap();
        req
    });
    let (id, _) = open_session(&h, USER).await;
    assert!(h.store().nas_list().await.unwrap().is_empty(), "no nas row");

    let (status, body, _) = disconnect(&h, id, &disconnector()).await;

    assert_eq!((status, body), (200, ok("coa")));
    let req = nas.await.unwrap();
    assert_eq!(req.text(attr::ACCT_SESSION_ID).as_deref(), Some(SID));
    assert!(h.server.index.get_by_id(id).is_none());
    let audit = audit_rows(&h).await;
    assert_attempt(&audit[0], id, "coa", "coa_ack");
    h.server.stop().await;
}
