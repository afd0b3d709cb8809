//! RouterOS API over TLS ("API-SSL", TCP 8729), optionally with a pinned certificate.
//!
//! The plain API (TCP 8728) sends the router's admin password in clear text, so anyone
//! on the path between radacctd and the BNG can capture it. API-SSL encrypts the
//! conversation. RouterOS API-SSL certificates are almost always self-signed (created
//! with `/certificate add ... sign`), so verifying them against a CA store would simply
//! fail; instead the operator pins the SHA-256 fingerprint of the router's certificate
//! (`api_tls_fingerprint`), and the handshake succeeds only if the certificate the router
//! presents has exactly that fingerprint.
//!
//! The pin is optional, as RouterOS deployments commonly run api-ssl without one. Without
//! it any certificate is accepted: the conversation is still encrypted against passive
//! capture, but an active man in the middle could impersonate the router and receive the
//! API password. radacctd warns about each such NAS at start (`check-config` shows it
//! too), and the documentation recommends the pin.
//!
//! The fingerprint is taken on the router (`/certificate print detail` shows it as
//! `fingerprint=`) or with `openssl x509 -noout -fingerprint -sha256`; [`parse_fingerprint`]
//! accepts both spellings. Do not copy it from a mismatch error of this module: that
//! value is whatever the peer presented, which is exactly what the pin must not trust.
//!
//! RouterOS without a certificate on the api-ssl service offers only anonymous
//! Diffie-Hellman suites, which rustls (rightly) does not implement: such a router must
//! be given a certificate (`/ip service set api-ssl certificate=...`).
//!
//! Once connected, the stream is handed to [`routeros::disconnect_ppp_on`], so the API
//! conversation is the same code as over plain TCP.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::routeros;

/// The port RouterOS's `api-ssl` service listens on by default.
pub const DEFAULT_API_SSL_PORT: u16 = 8729;

/// Why a TLS connection to the RouterOS API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// TCP connect plus TLS handshake did not finish within the timeout.
    #[error("RouterOS API-SSL connection to {0} timed out")]
    Timeout(SocketAddr),
    /// The TCP connection could not be opened.
    #[error("RouterOS API-SSL connection to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    /// The TLS handshake failed, including a certificate that does not match the pin
    /// (the inner error is then a [`rustls::Error::InvalidCertificate`]).
    #[error("RouterOS API-SSL handshake with {addr} failed: {source}")]
    Handshake { addr: SocketAddr, source: io::Error },
    /// The TLS client could not be configured (should not happen with the built-in
    /// provider; kept as an error rather than a panic).
    #[error("RouterOS API-SSL client configuration failed: {0}")]
    Config(#[from] rustls::Error),
}

impl From<TlsError> for routeros::Error {
    /// Lets [`disconnect_ppp`] report through the same error type as the plain-TCP path,
    /// so the Disconnector's handling does not need to know which transport was used.
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Timeout(_) => routeros::Error::Timeout,
            // Nothing reached the router: a configuration problem, not an I/O one.
            TlsError::Config(_) => routeros::Error::InvalidInput(e.to_string()),
            TlsError::Connect { .. } | TlsError::Handshake { .. } => {
                routeros::Error::Io(io::Error::other(e.to_string()))
            }
        }
    }
}

/// Parses a SHA-256 certificate fingerprint: 64 hex digits, optionally separated by
/// colons (`openssl x509 -fingerprint -sha256` prints `SHA256 Fingerprint=AB:CD:...`,
/// RouterOS prints plain lowercase hex). An `openssl`-style `...Fingerprint=` prefix
/// and surrounding whitespace are tolerated; anything else yields `None`.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    // Accept a pasted openssl line whole, since that is what operators will copy.
    let s = match s.rsplit_once('=') {
        Some((label, value)) if label.to_ascii_lowercase().contains("fingerprint") => value,
        Some(_) => return None,
        None => s,
    };
    let colons = s.contains(':');
    let digits: Vec<u8> = if colons {
        // With colons every group must be exactly two digits, so "A:BC:..." or a
        // doubled colon is rejected instead of being silently re-paired.
        let mut out = Vec::with_capacity(64);
        for group in s.split(':') {
            if group.len() != 2 {
                return None;
            }
            out.extend_from_slice(group.as_bytes());
        }
        out
    } else {
        s.as_bytes().to_vec()
    };
    if digits.len() != 64 {
        return None;
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = hex_value(*pair.first()?)?;
        let lo = hex_value(*pair.get(1)?)?;
        *byte = (hi << 4) | lo;
    }
    Some(pin)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Formats a fingerprint as colon-separated uppercase hex, like `openssl` does.
pub fn format_fingerprint(pin: &[u8; 32]) -> String {
    let mut out = String::with_capacity(95);
    for (i, b) in pin.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Certificate presented by the router did not match the configured pin.
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint {presented} does not match api_tls_fingerprint")]
struct PinMismatch {
    presented: String,
}

/// With a pin, accepts exactly one certificate, identified by the SHA-256 of its DER
/// encoding; without one, accepts any certificate (see the module documentation).
///
/// Chain, validity dates and names are deliberately not checked: the pin is the whole
/// trust decision (a self-signed RouterOS certificate has no chain, its dates are often
/// wrong on routers without NTP, and it rarely names the IP we dial). The handshake
/// signatures are still verified with the provider's algorithms, which is what proves
/// the peer holds the pinned certificate's private key rather than merely replaying the
/// public certificate.
#[derive(Debug)]
struct PinnedCertVerifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // The fingerprint of a public certificate is not secret, so a plain comparison
        // leaks nothing worth a constant-time one.
        if presented == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    presented: format_fingerprint(&presented),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client configuration that trusts only the certificate with SHA-256 `pin`, or any
/// certificate when there is no pin.
fn client_config(pin: Option<[u8; 32]>) -> Result<ClientConfig, TlsError> {
    // The ring provider is named explicitly rather than taken from a process default,
    // so nothing else in the binary (or a missing default) can change what is used here.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertVerifier {
        pin,
        provider: Arc::clone(&provider),
    };
    // TLS 1.2 stays enabled: RouterOS 6 offers nothing newer on api-ssl.
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Opens a TLS connection to a RouterOS `api-ssl` service at `addr`, accepting only the
/// certificate whose SHA-256 fingerprint is `pin_sha256` (any certificate for `None`).
///
/// TCP connect and handshake together must finish within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    pin_sha256: Option<[u8; 32]>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let connector = TlsConnector::from(Arc::new(client_config(pin_sha256)?));
    // An IP address as server name: rustls sends no SNI for it (RouterOS needs none),
    // and the pinning verifier ignores names anyway.
    let server_name = ServerName::from(addr.ip());
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TlsError::Connect { addr, source })?;
        // Requests are tiny and each waits for its reply; Nagle would only add latency.
        tcp.set_nodelay(true)
            .map_err(|source| TlsError::Connect { addr, source })?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| TlsError::Handshake { addr, source })
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| TlsError::Timeout(addr))?
}

/// [`routeros::disconnect_ppp`] over API-SSL: connect with [`connect`], then run the same
/// API conversation via [`routeros::disconnect_ppp_on`].
///
/// Errors are mapped into [`routeros::Error`] so callers handle both transports alike.
pub async fn disconnect_ppp(
    addr: SocketAddr,
    pin_sha256: Option<[u8; 32]>,
    user: &str,
    password: &str,
    username: &str,
    acct_session_id: Option<&str>,
    timeout: Duration,
) -> Result<usize, routeros::Error> {
    let stream = connect(addr, pin_sha256, timeout).await?;
    routeros::disconnect_ppp_on(stream, user, password, username, acct_session_id, timeout).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rustls::ServerConfig;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::coa::routeros::{Decoder, encode_sentence};

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        pin: [u8; 32],
        /// Every command sentence received after the handshake, in order.
        received: Arc<Mutex<Vec<Vec<String>>>>,
        task: JoinHandle<()>,
    }

    /// A one-connection API-SSL server with a fresh self-signed certificate, answering
    /// like a RouterOS with one active PPP session for `bob`.
    async fn server() -> Server {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert_der = certified.cert.der().clone();
        let pin: [u8; 32] = Sha256::digest(cert_der.as_ref()).into();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert_der], key)
                .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // A rejected handshake is the expected outcome of some tests.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut decoder = Decoder::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                while let Some(sentence) = decoder.next_sentence().unwrap() {
                    let command = sentence.first().cloned().unwrap_or_default();
                    log.lock().unwrap().push(sentence);
                    let mut reply = Vec::new();
                    if command == "/ppp/active/print" {
                        reply.extend(encode_sentence(&["!re", "=.id=*1", "=name=bob"]));
                    }
                    reply.extend(encode_sentence(&["!done"]));
                    tls.write_all(&reply).await.unwrap();
                }
            }
        });
        Server {
            addr,
            pin,
            received,
            task,
        }
    }

    #[tokio::test]
    async fn correct_pin_runs_the_api_conversation() {
        let srv = server().await;
        let stream = connect(srv.addr, Some(srv.pin), TIMEOUT).await.unwrap();
        let removed =
            routeros::disconnect_ppp_on(stream, "admin", "secret", "bob", None, TIMEOUT).await;
        assert_eq!(removed.unwrap(), 1);
        srv.task.await.unwrap();
        let received = srv.received.lock().unwrap().clone();
        let commands: Vec<&str> = received
            .iter()
            .map(|s| s.first().map(String::as_str).unwrap_or(""))
            .collect();
        assert_eq!(
            commands,
            ["/login", "/ppp/active/print", "/ppp/active/remove"]
        );
        assert!(received[2].iter().any(|w| w == "=.id=*1"));
    }

    #[tokio::test]
    async fn disconnect_ppp_wrapper_works_end_to_end() {
        let srv = server().await;
        let removed = disconnect_ppp(
            srv.addr,
            Some(srv.pin),
            "admin",
            "secret",
            "bob",
            None,
            TIMEOUT,
        )
        .await;
        assert_eq!(removed.unwrap(), 1);
    }

    #[tokio::test]
    async fn wrong_pin_fails_the_handshake_before_any_api_word() {
        let srv = server().await;
        let mut wrong = srv.pin;
        wrong[0] ^= 0xFF;
        let err = connect(srv.addr, Some(wrong), TIMEOUT).await.unwrap_err();
        let TlsError::Handshake { source, .. } = &err else {
            panic!("expected a handshake error, got {err:?}");
        };
        let inner = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
            "{source:?}"
        );
        // rustls renders the inner error with Debug, so the type name is what shows.
        assert!(err.to_string().contains("PinMismatch"), "{err}");
        srv.task.await.unwrap();
        // The password-bearing /login was never sent.
        assert!(srv.received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_pin_any_certificate_is_accepted_and_the_conversation_runs() {
        let srv = server().await;
        let removed = disconnect_ppp(srv.addr, None, "admin", "secret", "bob", None, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(removed, 1);
        srv.task.await.unwrap();
        assert_eq!(srv.received.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_plain_tcp_peer_fails_the_handshake_within_the_timeout() {
        // A plain-API service (or anything not speaking TLS) on the configured port:
        // the handshake must fail or time out, never hang past the timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
            // Answer the ClientHello with a RouterOS API sentence instead of TLS.
            let _ = tcp
                .write_all(&encode_sentence(&["!fatal", "=message=not tls"]))
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let started = std::time::Instant::now();
        let err = connect(addr, None, Duration::from_millis(800))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TlsError::Handshake { .. } | TlsError::Timeout(_)),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        peer.abort();
    }

    #[test]
    fn fingerprints_parse_in_openssl_and_routeros_spellings() {
        let expected: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(17));
        let colon = format_fingerprint(&expected);
        let plain = colon.replace(':', "").to_lowercase();
        assert_eq!(parse_fingerprint(&colon), Some(expected));
        assert_eq!(parse_fingerprint(&plain), Some(expected));
        assert_eq!(
            parse_fingerprint(&format!("  sha256 Fingerprint={colon}\n")),
            Some(expected)
        );
        assert_eq!(parse_fingerprint(&colon.to_lowercase()), Some(expected));
    }

    #[test]
    fn garbage_fingerprints_are_rejected() {
        let good = "00".repeat(32);
        for bad in [
            String::new(),
            "zz".repeat(32),
            "00".repeat(31),
            "00".repeat(33),
            format!("{good}0"),
            format!("0{}", &good[1..]).replace('0', "g"),
            // Colons in the wrong places must not be re-paired into 32 bytes.
            format!("0:0{}", &good[2..]),
            format!("::{good}"),
            // Multi-byte characters must not be split or panic.
            "é".repeat(32),
            "SHA1 Finger=".to_owned() + &good,
            "ab:".repeat(32),
        ] {
            assert_eq!(parse_fingerprint(&bad), None, "{bad:?}");
        }
    }
}
