//! The checks behind the fuzz targets: untrusted bytes through the library entry points
//! the server itself uses, plus properties that must hold for every input. A failed
//! assertion here is a finding just like a panic inside the library.
//!
//! This file is also compiled into `tests/fuzz_regressions.rs` (with `#[path]`), so every
//! committed seed and every input that once crashed is replayed by `cargo test` on stable
//! Rust through exactly the code the fuzzer runs. It therefore uses only crates the server
//! depends on as well.
//!
//! - [`packet`]: framing, Request Authenticator, Message-Authenticator, the
//!   Accounting-Response, and record extraction with MikroTik VSAs named through the
//!   embedded dictionary — the listener's path for one datagram.
//! - [`dictionary`]: the FreeRADIUS dictionary parser, with `$INCLUDE` between several
//!   files held in memory and, when it is safe, the same files on disk.
//! - [`routeros`]: the RouterOS API word/sentence decoder, the reply classifier, and a
//!   whole disconnect conversation (login, print, remove) against a scripted router.

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Once, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use radacctd::coa::routeros::{self, Decoder, Reply};
use radacctd::ingest::request::{Extractor, Skip};
use radacctd::radius::Dictionary;
use radacctd::radius::dictionary::DictionaryError;
use radacctd::radius::packet::{self, Code, Frame, HEADER_LEN, PacketError};
use radacctd::sessions::Record;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The NAS secret the packet target verifies and signs with.
pub const SECRET: &[u8] = b"fuzz-secret";
/// The source address a datagram "arrives" from (TEST-NET-1).
pub const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Fixed arrival time, so extraction is deterministic.
pub const ARRIVAL: i64 = 1_700_000_000;
/// The server's default Event-Timestamp tolerance.
pub const SKEW_SECS: i64 = 300;

/// What happened to one datagram in [`packet`].
#[derive(Debug)]
pub struct PacketOutcome {
    /// `Frame::parse` of the bytes as received.
    pub frame: Result<(), PacketError>,
    /// The Request Authenticator as received verified with [`SECRET`].
    pub authentic_as_sent: bool,
    /// `message_authenticator_ok` of the packet as received.
    pub message_authenticator: Option<bool>,
    /// Extraction of the packet re-coded as an Accounting-Request and re-signed with
    /// [`SECRET`], i.e. what the listener would record had the NAS sent it; `None` when
    /// the bytes did not frame.
    pub extracted: Option<Result<Record, Skip>>,
}

fn dictionary_for_packets() -> &'static Dictionary {
    static DICT: OnceLock<Dictionary> = OnceLock::new();
    DICT.get_or_init(|| Dictionary::embedded().expect("the embedded dictionary loads"))
}

/// The listener renders vendor attributes through the dictionary only when TRACE is on,
/// so switch it on (into a sink) to fuzz that code too.
fn trace_into_sink() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(io::sink)
            .try_init();
    });
}

/// One datagram through the accounting listener's steps (`ingest::listener`), minus the
/// socket, the NAS table and the duplicate cache.
pub fn packet(data: &[u8]) -> PacketOutcome {
    trace_into_sink();
    let frame = match Frame::parse(data) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(!e.reason().is_empty());
            return PacketOutcome {
                frame: Err(e),
                authentic_as_sent: false,
                message_authenticator: None,
                extracted: None,
            };
        }
    };
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    assert_eq!(
        frame.bytes(),
        &data[..declared],
        "frame is the declared length"
    );
    let walked: usize = frame.attributes().map(|(_, v)| v.len() + 2).sum();
    assert_eq!(walked, declared - HEADER_LEN, "attributes cover the packet");
    for (_, _, value) in frame.vendor_attributes() {
        assert!(
            value.len() <= 253 - 6,
            "a sub-attribute is inside one attribute"
        );
    }

    let authentic_as_sent = frame.accounting_request_is_authentic(SECRET);
    if frame.code() != Code::AccountingRequest {
        assert!(!authentic_as_sent, "only an Accounting-Request verifies");
    }
    let message_authenticator = frame.message_authenticator_ok(SECRET);

    // Random bytes almost never carry a valid authenticator, so re-code the packet as an
    // Accounting-Request and sign it to reach what the listener does after the checks.
    let mut signed = frame.bytes().to_vec();
    signed[0] = Code::AccountingRequest as u8;
    packet::sign_accounting_request(&mut signed, SECRET);
    let request = Frame::parse(&signed).expect("re-signing keeps the framing");
    assert!(request.accounting_request_is_authentic(SECRET));
    assert!(!request.accounting_request_is_authentic(b"another-secret"));
    let _ = request.message_authenticator_ok(SECRET);

    check_response(&request, &signed);

    let extractor = Extractor {
        dictionary: dictionary_for_packets(),
        skew_secs: SKEW_SECS,
    };
    let extracted = extractor
        .extract(&request, SOURCE, Some(1), ARRIVAL)
        .map(|e| e.record);
    match &extracted {
        Ok(record) => check_record(record),
        Err(Skip::MissingStatusType) => {
            assert!(
                !request
                    .attributes()
                    .any(|(t, v)| t == radacctd::radius::attr::ACCT_STATUS_TYPE && v.len() == 4),
                "a 4-octet Acct-Status-Type was present"
            );
        }
        Err(Skip::Unrecorded(_)) => {}
    }
    PacketOutcome {
        frame: Ok(()),
        authentic_as_sent,
        message_authenticator,
        extracted: Some(extracted),
    }
}

/// Every verified Accounting-Request gets an Accounting-Response that carries the
/// request's Proxy-State attributes in order and nothing else, signed for the request.
fn check_response(request: &Frame<'_>, request_bytes: &[u8]) {
    let reply = request
        .accounting_response(SECRET)
        .expect("a framed request can always be answered");
    let reply_frame = Frame::parse(&reply).expect("the reply frames");
    assert_eq!(reply_frame.code(), Code::AccountingResponse);
    assert_eq!(reply_frame.identifier(), request.identifier());
    let sent: Vec<_> = reply_frame.attributes().collect();
    let proxy_states: Vec<_> = request
        .attributes()
        .filter(|(t, _)| *t == radacctd::radius::attr::PROXY_STATE)
        .collect();
    assert_eq!(sent, proxy_states);
    assert!(
        radius::core::packet::Packet::is_authentic_response(&reply, request_bytes, SECRET),
        "the reply authenticates against the request"
    );
}

fn check_record(record: &Record) {
    for octets in [record.input_octets, record.output_octets]
        .into_iter()
        .flatten()
    {
        assert!(octets >= 0, "negative byte counter {octets}");
    }
    if let Some(time) = record.session_time {
        assert!(time >= 0);
    }
    assert!(record.event_time <= ARRIVAL + SKEW_SECS);
    assert_eq!(record.key.to_hex().len(), 32);
    assert!(!record.fields.username.contains('\0'));
    assert!(!record.fields.acctsessionid.contains('\0'));
}

/// One dictionary file of a [`dictionary`] input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Split a [`dictionary`] input into files: NUL separates files, and the first line of
/// each is its name. The first file is the root, called `dictionary` if it has no name.
/// At most 16 files.
pub fn split_dictionary_input(data: &[u8]) -> Vec<DictFile> {
    let mut files: Vec<DictFile> = data
        .split(|&b| b == 0)
        .take(16)
        .map(|chunk| {
            let (name, bytes) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], &chunk[at + 1..]),
                None => (chunk, &[][..]),
            };
            DictFile {
                name: String::from_utf8_lossy(name).trim().to_owned(),
                bytes: bytes.to_vec(),
            }
        })
        .collect();
    if let Some(root) = files.first_mut()
        && root.name.is_empty()
    {
        root.name = "dictionary".to_owned();
    }
    files
}

/// The inverse of [`split_dictionary_input`], for writing seeds and test inputs.
pub fn join_dictionary_input(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(bytes);
    }
    out
}

/// What [`dictionary`] got from the parser.
#[derive(Debug)]
pub struct DictionaryOutcome {
    /// `Dictionary::parse_files` over the files in memory (non-UTF-8 replaced).
    pub memory: Result<Dictionary, DictionaryError>,
    /// `Dictionary::load_dir` over the same files written to a scratch directory; `None`
    /// when that was not safe to try (see [`dictionary`]).
    pub disk: Option<Result<Dictionary, DictionaryError>>,
}

/// The dictionary parser over several files that may `$INCLUDE` each other.
///
/// The files are parsed in memory, and, when every name is a short plain file name, the root
/// is called `dictionary`, and no `$INCLUDE` line contains a `/` (so none can leave the
/// scratch directory, e.g. for `/dev/zero`), also from disk with their raw bytes, which
/// reaches the non-UTF-8 and canonical-path cycle checks.
pub fn dictionary(data: &[u8]) -> DictionaryOutcome {
    let files = split_dictionary_input(data);
    let root = files
        .first()
        .map_or("dictionary", |f| f.name.as_str())
        .to_owned();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                String::from_utf8_lossy(&f.bytes).into_owned(),
            )
        })
        .collect();
    let memory = Dictionary::parse_files(&root, &|name: &str| {
        texts
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, text)| Cow::Borrowed(text.as_str()))
    });
    match &memory {
        Ok(dict) => check_dictionary(dict),
        Err(e) => {
            let lines = texts
                .iter()
                .find(|(name, _)| *name == e.file)
                .map(|(_, text)| text.split('\n').count());
            match lines {
                Some(lines) => assert!(e.line <= lines, "{e}: beyond the last line {lines}"),
                None => assert_eq!((e.file.as_str(), e.line), (root.as_str(), 0), "{e}"),
            }
            assert!(!e.message.is_empty());
        }
    }

    let disk_safe = root == "dictionary"
        && files.iter().all(|f| {
            // Longer names than a filesystem takes (255 octets) only prove the harness wrong.
            (1..=64).contains(&f.name.len())
                && f.name != "."
                && f.name != ".."
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                && !f.bytes.split(|&b| b == b'\n').any(includes_a_path)
        });
    let disk = disk_safe.then(|| {
        let dir = scratch_dir();
        for f in files.iter().rev() {
            // Reversed, so that the first file of a name wins, as in memory.
            std::fs::write(dir.join(&f.name), &f.bytes).expect("write a scratch file");
        }
        let loaded = Dictionary::load_dir(&dir);
        match &loaded {
            Ok(dict) => check_dictionary(dict),
            Err(e) => assert!(!e.message.is_empty()),
        }
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    });
    DictionaryOutcome { memory, disk }
}

/// Whether a line may `$INCLUDE` something outside the scratch directory: any line that
/// mentions `$INCLUDE` in any case and contains a `/` at all.
fn includes_a_path(line: &[u8]) -> bool {
    line.contains(&b'/')
        && line
            .to_ascii_lowercase()
            .windows(b"$include".len())
            .any(|w| w == b"$include")
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "radacctd-fuzz-dictionary-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Lookups agree with what was defined: every name resolves to its own definition and
/// every definition's number resolves to an attribute with that number.
fn check_dictionary(dict: &Dictionary) {
    assert_eq!(dict.len(), dict.attributes().count());
    assert_eq!(dict.is_empty(), dict.attributes().next().is_none());
    for attr in dict.attributes() {
        assert_eq!(dict.attribute_by_name(&attr.name), Some(attr));
        assert_eq!(
            dict.attribute_by_name(&attr.name.to_ascii_uppercase()),
            Some(attr)
        );
        let by_code = dict.attribute(attr.vendor, attr.code).expect("by number");
        assert_eq!((by_code.vendor, by_code.code), (attr.vendor, attr.code));
        assert!(attr.encrypt <= 3);
    }
}

/// The RouterOS password [`routeros`] logs in with; it must never show up in an error.
pub const ROUTER_PASSWORD: &str = "fuzz-router-password";

/// What [`routeros`] saw.
#[derive(Debug)]
pub struct RouterOsOutcome {
    /// Every sentence decoded from the stream, in order.
    pub sentences: Vec<Vec<String>>,
    /// The decoder's error, if the stream stopped being valid framing.
    pub decode_error: Option<String>,
    /// `parse_reply` of each non-empty sentence, as `Ok(kind)` or `Err(message)`.
    pub replies: Vec<Result<Reply, String>>,
    /// `disconnect_ppp_on` with the stream as the router's side of the connection:
    /// entries removed, or the error's text.
    pub disconnect: Result<usize, String>,
    /// The commands the client sent, decoded.
    pub commands: Vec<Vec<String>>,
}

/// The first byte picks how the rest is cut into reads (0 = all at once, n = n bytes at a
/// time); the rest is what the router sends.
pub fn routeros(data: &[u8]) -> RouterOsOutcome {
    let (step, stream) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 32), rest),
        None => (0, data),
    };
    let (sentences, decode_error) = decode_stream(stream, 0);
    let (chunked, chunked_error) = decode_stream(stream, step);
    assert_eq!(sentences, chunked, "decoding depends on how bytes arrive");
    assert_eq!(decode_error, chunked_error);

    let mut replies = Vec::new();
    for sentence in &sentences {
        // Re-encoding a decoded sentence decodes to the same words.
        let words: Vec<&str> = sentence.iter().map(String::as_str).collect();
        assert!(
            words.iter().all(|w| !w.is_empty()),
            "an empty word ends a sentence"
        );
        let (again, error) = decode_stream(&routeros::encode_sentence(&words), 0);
        assert_eq!((again, error), (vec![sentence.clone()], None));
        if sentence.is_empty() {
            continue;
        }
        replies.push(match routeros::parse_reply(sentence) {
            Ok(reply) => {
                check_reply(sentence, &reply);
                Ok(reply)
            }
            Err(e) => Err(e.to_string()),
        });
    }

    let (disconnect, commands) = converse(stream, step);
    if let Err(message) = &disconnect
        && !contains(stream, ROUTER_PASSWORD.as_bytes())
    {
        assert!(
            !message.contains(ROUTER_PASSWORD),
            "password leaked: {message}"
        );
    }
    assert_eq!(
        commands.first().and_then(|c| c.first()).map(String::as_str),
        Some("/login")
    );
    if let Ok(removed) = disconnect {
        let removes: Vec<_> = commands
            .iter()
            .filter(|c| c.first().is_some_and(|w| w == "/ppp/active/remove"))
            .collect();
        assert_eq!(
            removes.len(),
            removed,
            "one remove command per removed entry"
        );
        for remove in removes {
            assert!(remove.iter().any(|w| w.len() > 5 && w.starts_with("=.id=")));
        }
    }
    RouterOsOutcome {
        sentences,
        decode_error,
        replies,
        disconnect,
        commands,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Decode `stream` fed `step` bytes at a time (0: all at once), draining sentences after
/// every push. After an error the decoder must stay failed.
pub fn decode_stream(stream: &[u8], step: usize) -> (Vec<Vec<String>>, Option<String>) {
    let mut decoder = Decoder::new();
    let mut sentences = Vec::new();
    let chunks: Vec<&[u8]> = if step == 0 {
        vec![stream]
    } else {
        stream.chunks(step).collect()
    };
    let mut error = None;
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_sentence() {
                Ok(Some(sentence)) => sentences.push(sentence),
                Ok(None) => break,
                Err(e) => {
                    let text = e.to_string();
                    let again = decoder.next_sentence().map_err(|e| e.to_string());
                    assert_eq!(again, Err(text.clone()), "the decoder stays failed");
                    error = Some(text);
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
    }
    (sentences, error)
}

fn check_reply(sentence: &[String], reply: &Reply) {
    match reply {
        Reply::Re(attrs) | Reply::Done(attrs) => {
            let attribute_words = sentence[1..].iter().filter(|w| w.starts_with('=')).count();
            assert_eq!(attrs.len(), attribute_words);
        }
        Reply::Trap { message, .. } => assert!(!message.is_empty()),
        Reply::Fatal(reason) => assert!(!reason.is_empty()),
        Reply::Empty => {}
    }
}

/// A whole `disconnect_ppp_on` against a router whose replies are `stream`, read `step`
/// bytes at a time. Returns the outcome and the commands the client sent.
fn converse(stream: &[u8], step: usize) -> (Result<usize, String>, Vec<Vec<String>>) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    });
    let mut router = ScriptedRouter {
        replies: stream,
        step,
        received: Vec::new(),
    };
    let result = runtime.block_on(routeros::disconnect_ppp_on(
        &mut router,
        "admin",
        ROUTER_PASSWORD,
        "user1",
        Some("81c00002"),
        Duration::from_secs(5),
    ));
    let (commands, error) = decode_stream(&router.received, 0);
    assert_eq!(error, None, "the client sends valid framing");
    (result.map_err(|e| e.to_string()), commands)
}

/// The router's side of a connection: hands out canned reply bytes, then end of file,
/// and records what the client writes. Never pending, so no timer ever fires.
struct ScriptedRouter<'a> {
    replies: &'a [u8],
    step: usize,
    received: Vec<u8>,
}

impl AsyncRead for ScriptedRouter<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let step = if self.step == 0 {
            usize::MAX
        } else {
            self.step
        };
        let n = self.replies.len().min(buf.remaining()).min(step);
        let (now, later) = self.replies.split_at(n);
        buf.put_slice(now);
        self.replies = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedRouter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.received.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
