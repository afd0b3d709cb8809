//! RouterOS API client: the fallback that removes a PPPoE session on a MikroTik BNG when
//! its RADIUS Disconnect-Request is refused or unanswered.
//!
//! This module owns the whole API conversation: the length-prefixed word codec
//! ([`encode_length`], [`encode_sentence`], [`Decoder`]), reply classification
//! ([`parse_reply`]), login (plain since RouterOS 6.43, MD5 challenge before it), command
//! execution ([`Client`]) and the one job radacctd needs ([`disconnect_ppp`]:
//! `/ppp/active/print ?name=<user>` then `/ppp/active/remove =.id=<id>`).
//!
//! It is written by hand because the existing RouterOS API crates are GPL/AGPL licensed,
//! which this project cannot link; the protocol is small enough that owning it is cheaper
//! than working around that. It was written from the public protocol description only.
//!
//! Everything the router sends is untrusted: the decoder bounds word, sentence and row
//! sizes and turns every malformed byte sequence into [`Error::Protocol`] instead of a
//! panic, and every exchange runs under a deadline so a stalled router cannot hold a
//! disconnect forever. The login password is never stored, logged or put in an error.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Longest word accepted from the router. Real replies are far smaller; the cap stops a
/// hostile or broken peer from making us buffer up to the protocol's 4 GiB word limit.
pub const MAX_WORD_LEN: usize = 1 << 20;
/// Most words accepted in one sentence (a `/ppp/active` row has about a dozen).
pub const MAX_WORDS: usize = 1024;
/// Most bytes of word content accepted in one sentence, so `MAX_WORDS` large words
/// cannot add up to a gigabyte.
pub const MAX_SENTENCE_LEN: usize = 4 << 20;
/// Most `!re` rows collected for one command; commands here are filtered by a query, so
/// anything near this means the router is misbehaving.
pub const MAX_ROWS: usize = 10_000;

/// Properties requested from `/ppp/active`: enough to pick the right session and no more,
/// so a router with thousands of sessions sends little.
const PPP_PROPLIST: &str = "=.proplist=.id,name,address,caller-id,session-id";

/// Everything that can go wrong while talking to the RouterOS API.
///
/// No variant ever carries the login password; [`Error::Login`] and [`Error::Trap`]
/// carry only what the router itself said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, reading or writing failed, including the router closing the
    /// connection before a reply was complete (`UnexpectedEof`).
    #[error("RouterOS API I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The router did not connect or answer within the configured timeout.
    #[error("RouterOS API timed out")]
    Timeout,
    /// The router sent bytes that are not a valid API reply, or the connection can no
    /// longer be trusted to be in step with the replies.
    #[error("malformed RouterOS API reply: {0}")]
    Protocol(String),
    /// The router refused the login (`!trap` during `/login`).
    #[error("RouterOS API login failed: {0}")]
    Login(String),
    /// A command failed (`!trap`); `category` is the router's numeric error class.
    #[error("RouterOS API command failed: {message}")]
    Trap {
        message: String,
        category: Option<String>,
    },
    /// The router is closing the connection (`!fatal`), with its stated reason.
    #[error("RouterOS closed the API connection: {0}")]
    Fatal(String),
    /// The request itself cannot be sent (an empty or oversized word, an empty user
    /// name); nothing was written to the router.
    #[error("invalid RouterOS API request: {0}")]
    InvalidInput(String),
}

/// Appends the API length prefix for a word of `len` bytes.
///
/// The protocol cannot express lengths above `u32::MAX`; such lengths are clamped, so
/// callers must bound word sizes first ([`Client`] refuses words over [`MAX_WORD_LEN`]).
pub fn encode_length(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if len < 0x80 {
        out.extend_from_slice(&len.to_be_bytes()[3..]);
    } else if len < 0x4000 {
        out.extend_from_slice(&(len | 0x8000).to_be_bytes()[2..]);
    } else if len < 0x20_0000 {
        out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]);
    } else if len < 0x1000_0000 {
        out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes());
    } else {
        out.push(0xF0);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Encodes `words` as one sentence, including the terminating zero-length word.
///
/// Empty words are skipped: on the wire a zero-length word ends the sentence, so
/// sending one would split the command and let the remaining words run as a second
/// command. [`Client`] rejects them outright instead.
pub fn encode_sentence(words: &[&str]) -> Vec<u8> {
    let body: usize = words.iter().map(|w| w.len() + 5).sum();
    let mut out = Vec::with_capacity(body + 1);
    for word in words.iter().filter(|w| !w.is_empty()) {
        encode_length(word.len(), &mut out);
        out.extend_from_slice(word.as_bytes());
    }
    out.push(0);
    out
}

/// Reads one length prefix from the front of `bytes`.
///
/// Returns the word length and the prefix size, `None` if more bytes are needed, or a
/// description of why the prefix is invalid.
fn decode_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let (extra, high) = match first {
        0x00..=0x7F => (0, first),
        0x80..=0xBF => (1, first & 0x3F),
        0xC0..=0xDF => (2, first & 0x1F),
        0xE0..=0xEF => (3, first & 0x0F),
        0xF0 => (4, 0),
        // 0xF8.. are control bytes reserved by the protocol; 0xF1..=0xF7 are not defined
        // at all. Neither can start a word, and skipping them would lose framing.
        0xF8..=0xFF => return Err(format!("reserved control byte {first:#04x}")),
        0xF1..=0xF7 => return Err(format!("invalid length prefix {first:#04x}")),
    };
    let Some(rest) = bytes.get(1..1 + extra) else {
        return Ok(None);
    };
    let len = rest
        .iter()
        .fold(u64::from(high), |acc, &b| (acc << 8) | u64::from(b));
    let len = usize::try_from(len).map_err(|_| format!("word length {len} is too large"))?;
    Ok(Some((len, 1 + extra)))
}

/// Incremental sentence decoder: feed it bytes as they arrive, take complete sentences.
///
/// Never panics on any input. Word, sentence and word-count limits are checked from the
/// length prefix before the word's bytes are buffered, so memory stays bounded by
/// roughly [`MAX_WORD_LEN`] plus whatever the caller pushes at once. After the first
/// error the stream has lost its framing, so the decoder stays failed and discards input.
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded; dropped lazily in `push` to avoid shifting the
    /// buffer after every sentence.
    start: usize,
    words: Vec<String>,
    sentence_len: usize,
    failed: Option<String>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            words: Vec::new(),
            sentence_len: 0,
            failed: None,
        }
    }

    /// Buffers bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete sentence, `Ok(None)` if more bytes are needed, or
    /// [`Error::Protocol`] if the input is not valid API framing.
    ///
    /// A sentence may be empty (a lone zero-length word); callers decide whether that
    /// matters.
    pub fn next_sentence(&mut self) -> Result<Option<Vec<String>>, Error> {
        if let Some(reason) = &self.failed {
            return Err(Error::Protocol(reason.clone()));
        }
        loop {
            let available = self.buf.get(self.start..).unwrap_or_default();
            let (len, prefix) = match decode_length(available) {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(None),
                Err(reason) => return Err(self.fail(reason)),
            };
            if len == 0 {
                self.start += prefix;
                self.sentence_len = 0;
                return Ok(Some(std::mem::take(&mut self.words)));
            }
            if len > MAX_WORD_LEN {
                return Err(self.fail(format!(
                    "word of {len} bytes exceeds the {MAX_WORD_LEN} byte limit"
                )));
            }
            if self.words.len() >= MAX_WORDS {
                return Err(self.fail(format!("sentence has more than {MAX_WORDS} words")));
            }
            if self.sentence_len + len > MAX_SENTENCE_LEN {
                return Err(self.fail(format!(
                    "sentence exceeds the {MAX_SENTENCE_LEN} byte limit"
                )));
            }
            let Some(word) = available.get(prefix..prefix + len) else {
                return Ok(None);
            };
            // RouterOS speaks bytes, not UTF-8 (old versions use the console code page);
            // a lossy conversion keeps decoding total, and the ASCII fields we match on
            // (.id, name, session-id) survive it unchanged.
            let word = String::from_utf8_lossy(word).into_owned();
            self.words.push(word);
            self.start += prefix + len;
            self.sentence_len += len;
        }
    }

    fn fail(&mut self, reason: String) -> Error {
        self.buf = Vec::new();
        self.start = 0;
        self.words = Vec::new();
        self.failed = Some(reason.clone());
        Error::Protocol(reason)
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

// Hand-written so buffered bytes (which on the router's side of a test include a login
// password) never reach a log.
impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len().saturating_sub(self.start))
            .field("pending_words", &self.words.len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// One reply sentence from the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `!re`: one data row as `(key, value)` pairs in the order received.
    Re(Vec<(String, String)>),
    /// `!done`: the command finished; may carry attributes such as `ret`.
    Done(Vec<(String, String)>),
    /// `!trap`: the command failed; a `!done` follows.
    Trap {
        message: String,
        category: Option<String>,
    },
    /// `!fatal`: the router is closing the connection for the given reason.
    Fatal(String),
    /// `!empty` (RouterOS 7.18+): the command has no rows; a `!done` follows.
    Empty,
}

/// Classifies one decoded sentence. `.tag=` words are accepted and ignored.
pub fn parse_reply(sentence: &[String]) -> Result<Reply, Error> {
    let Some((kind, rest)) = sentence.split_first() else {
        return Err(Error::Protocol("empty reply sentence".into()));
    };
    match kind.as_str() {
        "!re" => Ok(Reply::Re(attributes(rest)?)),
        "!done" => Ok(Reply::Done(attributes(rest)?)),
        "!empty" => {
            attributes(rest)?;
            Ok(Reply::Empty)
        }
        "!trap" => {
            let attrs = attributes(rest)?;
            let message = attribute(&attrs, "message")
                .filter(|m| !m.is_empty())
                .unwrap_or("no message given")
                .to_owned();
            let category = attribute(&attrs, "category").map(str::to_owned);
            Ok(Reply::Trap { message, category })
        }
        "!fatal" => {
            // The reason is a bare word, not an attribute; tolerate `=message=` too.
            let reason = rest
                .iter()
                .find(|w| !w.starts_with(".tag="))
                .map(|w| w.strip_prefix("=message=").unwrap_or(w).to_owned())
                .unwrap_or_else(|| "no reason given".to_owned());
            Ok(Reply::Fatal(reason))
        }
        other => Err(Error::Protocol(format!(
            "unknown reply word {}",
            preview(other)
        ))),
    }
}

/// Splits `=key=value` attribute words. The value may itself contain `=`.
fn attributes(words: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut attrs = Vec::with_capacity(words.len());
    for word in words {
        if let Some(body) = word.strip_prefix('=') {
            let Some((key, value)) = body.split_once('=') else {
                return Err(Error::Protocol(format!(
                    "attribute word without a value: {}",
                    preview(word)
                )));
            };
            attrs.push((key.to_owned(), value.to_owned()));
        } else if !word.starts_with('.') {
            // Words starting with '.' are API metadata such as `.tag=`; anything else in
            // a reply is not part of the protocol.
            return Err(Error::Protocol(format!(
                "unexpected word in reply: {}",
                preview(word)
            )));
        }
    }
    Ok(attrs)
}

/// Value of the first attribute named `key` in a row or `!done` reply.
pub fn attribute<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A bounded, escaped excerpt of peer-supplied text for error messages.
fn preview(text: &str) -> String {
    const LIMIT: usize = 40;
    let mut shown: String = text.chars().take(LIMIT).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Computes the pre-6.43 login response: `"00"` followed by the hex MD5 of a zero byte,
/// the password and the decoded challenge.
///
/// Fails with [`Error::Protocol`] if the challenge is not hex; the error never includes
/// the password.
pub fn challenge_response(password: &str, challenge_hex: &str) -> Result<String, Error> {
    let challenge = decode_hex(challenge_hex)
        .ok_or_else(|| Error::Protocol("login challenge is not valid hex".into()))?;
    let mut md5 = Md5::new();
    md5.update([0u8]);
    md5.update(password.as_bytes());
    md5.update(&challenge);
    let digest = md5.finalize();
    let mut response = String::with_capacity(2 + 2 * digest.len());
    response.push_str("00");
    for byte in digest {
        response.push(hex_digit(byte >> 4));
        response.push(hex_digit(byte & 0x0F));
    }
    Ok(response)
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

/// What a completed command returned.
struct Response {
    rows: Vec<Vec<(String, String)>>,
    done: Vec<(String, String)>,
}

/// A connected, logged-in client over any `AsyncRead + AsyncWrite` stream (a
/// `TcpStream`, or a TLS stream supplied by the caller for port 8729).
///
/// Commands run one at a time without tags, so each reply belongs to the command just
/// sent. If a reply is abandoned midway (timeout, I/O or framing error, `!fatal`), later
/// bytes could belong to it, so the client refuses further commands.
pub struct Client<S> {
    stream: S,
    decoder: Decoder,
    /// Deadline for each whole exchange (request written and reply read to `!done`).
    timeout: Duration,
    read_buf: Vec<u8>,
    desynchronised: bool,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("desynchronised", &self.desynchronised)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Logs in as `user`, trying the plain login first and answering an MD5 challenge if
    /// the router (pre-6.43) replies with one. Each login exchange is bounded by
    /// `timeout`, which also becomes the bound for every later command.
    ///
    /// A refused login is [`Error::Login`] with the router's message.
    pub async fn login(
        stream: S,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut client = Client {
            stream,
            decoder: Decoder::new(),
            timeout,
            read_buf: vec![0; 4096],
            desynchronised: false,
        };
        let name = format!("=name={user}");
        // An empty password still needs its word, and an empty word cannot be sent, so
        // the attribute is always present with its `=` separators.
        let password_word = format!("=password={password}");
        let done = login_step(client.exchange(&["/login", &name, &password_word]).await)?;
        if let Some(challenge) = attribute(&done, "ret") {
            let response = format!("=response={}", challenge_response(password, challenge)?);
            login_step(client.exchange(&["/login", &name, &response]).await)?;
        }
        Ok(client)
    }

    /// Runs one command and returns its `!re` rows (empty on `!empty` or a bare `!done`).
    ///
    /// `!trap` becomes [`Error::Trap`] once the `!done` that follows it has been read, so
    /// the connection stays usable; `!fatal` becomes [`Error::Fatal`]. Writing the
    /// command and reading the whole reply must finish within the client's timeout, so a
    /// router that trickles bytes cannot stretch it either.
    pub async fn command(&mut self, words: &[&str]) -> Result<Vec<Vec<(String, String)>>, Error> {
        Ok(self.exchange(words).await?.rows)
    }

    /// Closes the connection politely (TLS close-notify, TCP FIN), within the timeout.
    pub async fn close(mut self) {
        // The outcome the caller cares about is already decided; a failed shutdown only
        // means the router closes its side a little later.
        let _ = timeout(self.timeout, self.stream.shutdown()).await;
    }

    async fn exchange(&mut self, words: &[&str]) -> Result<Response, Error> {
        if self.desynchronised {
            return Err(Error::Protocol(
                "connection abandoned mid-reply earlier; open a new one".into(),
            ));
        }
        validate_command(words)?;
        let deadline = Instant::now() + self.timeout;
        let request = encode_sentence(words);
        let written = timeout_at(deadline, async {
            self.stream.write_all(&request).await?;
            self.stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.desynchronised = true;
                return Err(Error::Io(e));
            }
            Err(_) => {
                self.desynchronised = true;
                return Err(Error::Timeout);
            }
        }

        let mut rows = Vec::new();
        let mut trap = None;
        let mut empty = false;
        loop {
            let sentence = match self.read_sentence(deadline).await {
                Ok(sentence) => sentence,
                Err(e) => {
                    self.desynchronised = true;
                    // When the outcome is already known, losing the trailing `!done` to a
                    // closed or stalled connection should not hide it.
                    if matches!(e, Error::Io(_) | Error::Timeout) {
                        if let Some(trap) = trap {
                            return Err(trap);
                        }
                        if empty {
                            return Ok(Response {
                                rows,
                                done: Vec::new(),
                            });
                        }
                    }
                    return Err(e);
                }
            };
            if sentence.is_empty() {
                continue;
            }
            let reply = match parse_reply(&sentence) {
                Ok(reply) => reply,
                Err(e) => {
                    self.desynchronised = true;
                    return Err(e);
                }
            };
            match reply {
                Reply::Re(row) => {
                    if rows.len() >= MAX_ROWS {
                        self.desynchronised = true;
                        return Err(Error::Protocol(format!(
                            "reply has more than {MAX_ROWS} rows"
                        )));
                    }
                    rows.push(row);
                }
                Reply::Empty => empty = true,
                Reply::Trap { message, category } => {
                    // The first trap names the cause; later ones are consequences.
                    if trap.is_none() {
                        trap = Some(Error::Trap { message, category });
                    }
                }
                Reply::Done(done) => {
                    return match trap {
                        Some(trap) => Err(trap),
                        None => Ok(Response { rows, done }),
                    };
                }
                Reply::Fatal(reason) => {
                    self.desynchronised = true;
                    return Err(Error::Fatal(reason));
                }
            }
        }
    }

    async fn read_sentence(&mut self, deadline: Instant) -> Result<Vec<String>, Error> {
        loop {
            if let Some(sentence) = self.decoder.next_sentence()? {
                return Ok(sentence);
            }
            let read = timeout_at(deadline, self.stream.read(&mut self.read_buf)).await;
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Error::Io(e)),
                Err(_) => return Err(Error::Timeout),
            };
            if n == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "router closed the connection before the reply was complete",
                )));
            }
            let Some(bytes) = self.read_buf.get(..n) else {
                return Err(Error::Protocol("stream reported an impossible read".into()));
            };
            self.decoder.push(bytes);
        }
    }
}

/// Maps a failed login exchange to [`Error::Login`], keeping the router's message.
fn login_step(result: Result<Response, Error>) -> Result<Vec<(String, String)>, Error> {
    match result {
        Ok(response) => Ok(response.done),
        Err(Error::Trap { message, .. }) => Err(Error::Login(message)),
        Err(e) => Err(e),
    }
}

/// Refuses requests the wire format cannot carry faithfully. Messages name sizes only,
/// never word contents, because one of the words may be the password.
fn validate_command(words: &[&str]) -> Result<(), Error> {
    if words.is_empty() {
        return Err(Error::InvalidInput("command has no words".into()));
    }
    if words.len() > MAX_WORDS {
        return Err(Error::InvalidInput(format!(
            "command has more than {MAX_WORDS} words"
        )));
    }
    for (index, word) in words.iter().enumerate() {
        if word.is_empty() {
            return Err(Error::InvalidInput(format!(
                "word {index} is empty and would end the sentence early"
            )));
        }
        if word.len() > MAX_WORD_LEN {
            return Err(Error::InvalidInput(format!(
                "word {index} is {} bytes, over the {MAX_WORD_LEN} byte limit",
                word.len()
            )));
        }
    }
    Ok(())
}

/// Connects to the router's plain API port, logs in and removes every `/ppp/active`
/// entry of `username` (see [`disconnect_ppp_on`] for the matching rules).
///
/// Connecting, each login exchange and each command are each bounded by `timeout`;
/// wrap the call in `tokio::time::timeout` for an overall budget. Returns how many
/// entries were removed (0 = the user has no active session).
pub async fn disconnect_ppp(
    addr: SocketAddr,
    user: &str,
    password: &str,
    username: &str,
    acct_session_id: Option<&str>,
    timeout: Duration,
) -> Result<usize, Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(Error::Timeout),
    };
    // Requests are tiny and each waits for its reply; Nagle would only add latency.
    stream.set_nodelay(true)?;
    disconnect_ppp_on(stream, user, password, username, acct_session_id, timeout).await
}

/// [`disconnect_ppp`] over an already-connected stream (the caller may wrap TLS).
///
/// An entry is removed when its `name` equals `username` exactly and, if
/// `acct_session_id` is given, its `session-id` denotes the same session; entries that
/// report no `session-id` are matched by name alone. The name is re-checked here rather
/// than trusting the router's query, because a removal is not undoable.
///
/// If a removal fails after others succeeded, the error is returned and the earlier
/// removals stand. Dropping the future midway may leave one removal in doubt.
pub async fn disconnect_ppp_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    user: &str,
    password: &str,
    username: &str,
    acct_session_id: Option<&str>,
    timeout: Duration,
) -> Result<usize, Error> {
    if username.is_empty() {
        return Err(Error::InvalidInput(
            "user name to disconnect is empty".into(),
        ));
    }
    let mut client = Client::login(stream, user, password, timeout).await?;
    let removed = remove_ppp_sessions(&mut client, username, acct_session_id).await;
    if removed.is_ok() {
        client.close().await;
    }
    removed
}

async fn remove_ppp_sessions<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    username: &str,
    acct_session_id: Option<&str>,
) -> Result<usize, Error> {
    let query = format!("?name={username}");
    let rows = client
        .command(&["/ppp/active/print", &query, PPP_PROPLIST])
        .await?;
    let ids = rows
        .iter()
        .filter(|row| is_target(row, username, acct_session_id))
        .map(|row| {
            attribute(row, ".id")
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Error::Protocol("/ppp/active entry without an .id".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for id in &ids {
        let id_word = format!("=.id={id}");
        client.command(&["/ppp/active/remove", &id_word]).await?;
    }
    Ok(ids.len())
}

fn is_target(row: &[(String, String)], username: &str, acct_session_id: Option<&str>) -> bool {
    if attribute(row, "name") != Some(username) {
        return false;
    }
    let wanted = acct_session_id.filter(|id| !id.trim().is_empty());
    let reported = attribute(row, "session-id").filter(|id| !id.trim().is_empty());
    match (wanted, reported) {
        (Some(wanted), Some(reported)) => same_session_id(wanted, reported),
        _ => true,
    }
}

/// RouterOS shows `session-id=0x81C00002` while the same session's Acct-Session-Id is
/// `81c00002`, so compare the hex digits without prefix and case.
fn same_session_id(acct_session_id: &str, session_id: &str) -> bool {
    fn digits(id: &str) -> &str {
        let id = id.trim();
        id.strip_prefix("0x")
            .or_else(|| id.strip_prefix("0X"))
            .unwrap_or(id)
    }
    digits(acct_session_id).eq_ignore_ascii_case(digits(session_id))
}

/// A fake RouterOS API server for tests: real wire protocol on 127.0.0.1, scripted
/// behaviour, and a record of every sentence it received.
#[cfg(test)]
pub(crate) mod fake {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::{JoinHandle, JoinSet};

    use super::{Decoder, challenge_response, encode_sentence};

    pub(crate) const INVALID_LOGIN: &str = "invalid user name or password (6)";

    /// One `/ppp/active` entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Session {
        pub(crate) id: String,
        pub(crate) name: String,
        pub(crate) address: String,
        pub(crate) caller_id: String,
        /// `None` models entries that report no `session-id` property.
        pub(crate) session_id: Option<String>,
    }

    impl Session {
        pub(crate) fn new(id: &str, name: &str, session_id: Option<&str>) -> Self {
            Session {
                id: id.to_owned(),
                name: name.to_owned(),
                address: "100.64.0.2".to_owned(),
                caller_id: "F8:B4:6A:C1:71:78".to_owned(),
                session_id: session_id.map(str::to_owned),
            }
        }
    }

    /// How the fake router behaves.
    #[derive(Debug, Clone)]
    pub(crate) struct Config {
        pub(crate) user: String,
        pub(crate) password: String,
        /// Behave like RouterOS before 6.43: answer the first `/login` with this
        /// challenge and expect an MD5 `=response=`.
        pub(crate) challenge: Option<String>,
        pub(crate) sessions: Vec<Session>,
        /// RouterOS 7.18+: a print without rows answers `!empty` before `!done`.
        pub(crate) empty_reply: bool,
        /// With `empty_reply`, leave out the `!done` after `!empty`.
        pub(crate) empty_without_done: bool,
        /// Answer every remove with `!trap` (message, category) then `!done`.
        pub(crate) remove_trap: Option<(String, Option<String>)>,
        /// Answer a print with `!fatal <reason>` and close the connection.
        pub(crate) fatal_on_print: Option<String>,
        /// Accept connections and read requests but never answer.
        pub(crate) hang: bool,
    }

    impl Default for Config {
        fn default() -> Self {
            Config {
                user: "api".to_owned(),
                password: "s3cr3t-pw".to_owned(),
                challenge: None,
                sessions: Vec::new(),
                empty_reply: false,
                empty_without_done: false,
                remove_trap: None,
                fatal_on_print: None,
                hang: false,
            }
        }
    }

    #[derive(Debug, Default)]
    struct State {
        sessions: Vec<Session>,
        received: Vec<Vec<String>>,
    }

    /// A running fake router; stops when dropped.
    pub(crate) struct FakeRouter {
        addr: SocketAddr,
        state: Arc<Mutex<State>>,
        task: JoinHandle<()>,
    }

    impl FakeRouter {
        pub(crate) async fn start(config: Config) -> std::io::Result<Self> {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let state = Arc::new(Mutex::new(State {
                sessions: config.sessions.clone(),
                received: Vec::new(),
            }));
            let config = Arc::new(config);
            let shared = Arc::clone(&state);
            let task = tokio::spawn(async move {
                // Owned here so that aborting the accept loop also ends every connection.
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve(stream, Arc::clone(&config), Arc::clone(&shared)));
                }
            });
            Ok(FakeRouter { addr, state, task })
        }

        pub(crate) fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// Every sentence received, in order, across all connections.
        pub(crate) fn received(&self) -> Vec<Vec<String>> {
            self.state.lock().unwrap().received.clone()
        }

        /// The `.id` of every `/ppp/active/remove` received, in order.
        pub(crate) fn removed_ids(&self) -> Vec<String> {
            self.received()
                .iter()
                .filter(|s| s.first().map(String::as_str) == Some("/ppp/active/remove"))
                .filter_map(|s| arg(s, ".id").map(str::to_owned))
                .collect()
        }

        /// Entries still active.
        pub(crate) fn sessions(&self) -> Vec<Session> {
            self.state.lock().unwrap().sessions.clone()
        }
    }

    impl Drop for FakeRouter {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Reads one sentence; `None` when the peer closed the connection.
    pub(crate) async fn read_sentence<R: AsyncRead + Unpin>(
        reader: &mut R,
        decoder: &mut Decoder,
    ) -> std::io::Result<Option<Vec<String>>> {
        let mut buf = [0u8; 1024];
        loop {
            match decoder.next_sentence() {
                Ok(Some(sentence)) => return Ok(Some(sentence)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            decoder.push(&buf[..n]);
        }
    }

    async fn serve(
        mut stream: TcpStream,
        config: Arc<Config>,
        state: Arc<Mutex<State>>,
    ) -> std::io::Result<()> {
        let mut decoder = Decoder::new();
        let mut logged_in = false;
        while let Some(sentence) = read_sentence(&mut stream, &mut decoder).await? {
            state.lock().unwrap().received.push(sentence.clone());
            if config.hang {
                continue;
            }
            let replies = respond(&config, &state, &mut logged_in, &sentence);
            for reply in &replies {
                let words: Vec<&str> = reply.iter().map(String::as_str).collect();
                stream.write_all(&encode_sentence(&words)).await?;
            }
            if replies.iter().any(|r| r[0] == "!fatal") {
                return Ok(());
            }
        }
        Ok(())
    }

    fn arg<'a>(sentence: &'a [String], key: &str) -> Option<&'a str> {
        let prefix = format!("={key}=");
        sentence
            .iter()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
    }

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn trap(message: &str, category: Option<&str>) -> Vec<Vec<String>> {
        let mut trap = words(&["!trap"]);
        if let Some(category) = category {
            trap.push(format!("=category={category}"));
        }
        trap.push(format!("=message={message}"));
        vec![trap, words(&["!done"])]
    }

    fn respond(
        config: &Config,
        state: &Mutex<State>,
        logged_in: &mut bool,
        sentence: &[String],
    ) -> Vec<Vec<String>> {
        let command = sentence.first().map(String::as_str).unwrap_or_default();
        let mut replies = match command {
            "/login" => login(config, logged_in, sentence),
            _ if !*logged_in => return vec![words(&["!fatal", "not logged in"])],
            "/ppp/active/print" => {
                if let Some(reason) = &config.fatal_on_print {
                    return vec![words(&["!fatal", reason])];
                }
                print(config, state, sentence)
            }
            "/ppp/active/remove" => remove(config, state, sentence),
            _ => trap("no such command", Some("0")),
        };
        if let Some(tag) = sentence.iter().find(|w| w.starts_with(".tag=")) {
            for reply in &mut replies {
                reply.push(tag.clone());
            }
        }
        replies
    }

    fn login(config: &Config, logged_in: &mut bool, sentence: &[String]) -> Vec<Vec<String>> {
        let name_ok = arg(sentence, "name") == Some(config.user.as_str());
        match &config.challenge {
            None => {
                if name_ok && arg(sentence, "password") == Some(config.password.as_str()) {
                    *logged_in = true;
                    vec![words(&["!done"])]
                } else {
                    trap(INVALID_LOGIN, None)
                }
            }
            Some(challenge) => match arg(sentence, "response") {
                // Old routers ignore =password= and always start with a challenge.
                None => vec![words(&["!done", &format!("=ret={challenge}")])],
                Some(response) => {
                    let expected = challenge_response(&config.password, challenge).unwrap();
                    if name_ok && response == expected {
                        *logged_in = true;
                        vec![words(&["!done"])]
                    } else {
                        trap("cannot log in", None)
                    }
                }
            },
        }
    }

    fn print(config: &Config, state: &Mutex<State>, sentence: &[String]) -> Vec<Vec<String>> {
        let name = sentence.iter().find_map(|w| w.strip_prefix("?name="));
        let proplist: Option<Vec<&str>> =
            arg(sentence, ".proplist").map(|p| p.split(',').collect());
        let sessions = state.lock().unwrap().sessions.clone();
        let mut replies: Vec<Vec<String>> = sessions
            .iter()
            .filter(|s| name.is_none_or(|n| s.name == n))
            .map(|s| {
                let mut props = vec![
                    (".id", s.id.clone()),
                    ("name", s.name.clone()),
                    ("service", "pppoe".to_owned()),
                    ("caller-id", s.caller_id.clone()),
                    ("address", s.address.clone()),
                    ("uptime", "1h2m3s".to_owned()),
                    ("encoding", String::new()),
                ];
                if let Some(id) = &s.session_id {
                    props.push(("session-id", id.clone()));
                }
                let mut row = words(&["!re"]);
                for (key, value) in props {
                    if proplist.as_ref().is_none_or(|p| p.contains(&key)) {
                        row.push(format!("={key}={value}"));
                    }
                }
                row
            })
            .collect();
        if replies.is_empty() && config.empty_reply {
            replies.push(words(&["!empty"]));
            if config.empty_without_done {
                return replies;
            }
        }
        replies.push(words(&["!done"]));
        replies
    }

    fn remove(config: &Config, state: &Mutex<State>, sentence: &[String]) -> Vec<Vec<String>> {
        if let Some((message, category)) = &config.remove_trap {
            return trap(message, category.as_deref());
        }
        let Some(id) = arg(sentence, ".id") else {
            return trap("no .id given", Some("1"));
        };
        let mut state = state.lock().unwrap();
        let before = state.sessions.len();
        state.sessions.retain(|s| s.id != id);
        if state.sessions.len() == before {
            trap("no such item", Some("4"))
        } else {
            vec![words(&["!done"])]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Config, FakeRouter, INVALID_LOGIN, Session, read_sentence};
    use super::*;

    const FIXTURE: &str = "/work/shared/fixtures/mikrotik/routeros_api_vectors.txt";
    const T: Duration = Duration::from_secs(5);

    fn unhex(text: &str) -> Vec<u8> {
        decode_hex(text).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<String>> {
        let mut decoder = Decoder::new();
        decoder.push(bytes);
        let mut sentences = Vec::new();
        while let Some(sentence) = decoder.next_sentence().unwrap() {
            sentences.push(sentence);
        }
        sentences
    }

    fn fixture_lines() -> Vec<(String, String)> {
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(" -> "))
            .map(|l| {
                let (input, output) = l.split_once(" -> ").unwrap();
                (input.trim().to_owned(), output.trim().to_owned())
            })
            .collect()
    }

    // --- codec: the fixture's vectors ---

    #[test]
    fn length_prefixes_match_the_fixture_vectors() {
        let mut checked = 0;
        for (input, output) in fixture_lines() {
            let Some(number) = input.strip_prefix("0x") else {
                continue;
            };
            let len = usize::from_str_radix(number, 16).unwrap();
            let mut encoded = Vec::new();
            encode_length(len, &mut encoded);
            assert_eq!(hex(&encoded), output, "encoding {input}");
            assert_eq!(decode_length(&encoded), Ok(Some((len, encoded.len()))));
            checked += 1;
        }
        assert_eq!(checked, 9, "fixture should list nine length vectors");
    }

    #[test]
    fn five_byte_length_form_matches_the_fixture_example() {
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        assert!(text.contains("0x10000000 -> f010000000"));
        let mut encoded = Vec::new();
        encode_length(0x1000_0000, &mut encoded);
        assert_eq!(hex(&encoded), "f010000000");
        assert_eq!(decode_length(&encoded), Ok(Some((0x1000_0000, 5))));
        let mut max = Vec::new();
        encode_length(0xFFFF_FFFF, &mut max);
        assert_eq!(hex(&max), "f0ffffffff");
    }

    #[test]
    fn sentences_match_the_fixture_vectors() {
        let mut checked = 0;
        for (input, output) in fixture_lines() {
            if !input.starts_with('/') {
                continue;
            }
            let words: Vec<&str> = input.split(" | ").collect();
            let encoded = encode_sentence(&words);
            assert_eq!(hex(&encoded), output, "encoding {input}");
            assert_eq!(decode_all(&unhex(&output)), vec![strings(&words)]);
            checked += 1;
        }
        assert_eq!(checked, 4, "fixture should list four sentences");
    }

    #[test]
    fn challenge_response_matches_the_fixture_vector() {
        let (input, output) = fixture_lines()
            .into_iter()
            .find(|(i, _)| i.starts_with("challenge="))
            .unwrap();
        let challenge = input
            .strip_prefix("challenge=")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert!(input.ends_with("password=''"));
        assert_eq!(challenge_response("", challenge).unwrap(), output);
        assert_eq!(output, "00e134102a9d330dd7b1849fedfea3cb57");
    }

    #[test]
    fn challenge_response_rejects_bad_hex_without_echoing_the_password() {
        for bad in ["", "abc", "zz", "93b4-8ec9"] {
            let err = challenge_response("hunter2", bad).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{bad:?}: {err:?}");
            assert!(!err.to_string().contains("hunter2"));
            assert!(!format!("{err:?}").contains("hunter2"));
        }
    }

    // --- codec: decoder behaviour ---

    #[test]
    fn every_length_form_round_trips_through_the_decoder() {
        for len in [
            1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1F_FFFF, 0x20_0000, 0xFFF_FFFF,
        ] {
            let mut encoded = Vec::new();
            encode_length(len, &mut encoded);
            assert_eq!(decode_length(&encoded), Ok(Some((len, encoded.len()))));
            // Every proper prefix of a length asks for more bytes.
            for cut in 0..encoded.len() {
                assert_eq!(decode_length(&encoded[..cut]), Ok(None));
            }
        }
        let word = "x".repeat(0x4000);
        let encoded = encode_sentence(&["!re", &word]);
        assert_eq!(&encoded[4..7], &[0xC0, 0x40, 0x00]);
        assert_eq!(decode_all(&encoded), vec![strings(&["!re", &word])]);
    }

    #[test]
    fn decoder_reassembles_sentences_fed_one_byte_at_a_time() {
        let mut stream = encode_sentence(&["!re", "=.id=*1", "=name=bob"]);
        stream.extend(encode_sentence(&["!done"]));
        let mut decoder = Decoder::new();
        let mut sentences = Vec::new();
        for byte in stream {
            decoder.push(&[byte]);
            while let Some(sentence) = decoder.next_sentence().unwrap() {
                sentences.push(sentence);
            }
        }
        assert_eq!(
            sentences,
            vec![
                strings(&["!re", "=.id=*1", "=name=bob"]),
                strings(&["!done"])
            ]
        );
    }

    #[test]
    fn decoder_rejects_reserved_control_bytes_and_stays_failed() {
        for byte in 0xF8..=0xFFu8 {
            let mut decoder = Decoder::new();
            decoder.push(&[0x03, b'!', b'r', b'e', byte]);
            let err = decoder.next_sentence().unwrap_err();
            assert!(matches!(err, Error::Protocol(ref m) if m.contains("control byte")));
            decoder.push(&encode_sentence(&["!done"]));
            assert!(matches!(decoder.next_sentence(), Err(Error::Protocol(_))));
        }
        for byte in 0xF1..=0xF7u8 {
            let mut decoder = Decoder::new();
            decoder.push(&[byte, 0, 0, 0, 1, b'x', 0]);
            assert!(matches!(decoder.next_sentence(), Err(Error::Protocol(_))));
        }
    }

    #[test]
    fn decoder_rejects_oversized_words_before_buffering_them() {
        let mut decoder = Decoder::new();
        let mut prefix = Vec::new();
        encode_length(MAX_WORD_LEN + 1, &mut prefix);
        decoder.push(&prefix);
        assert!(matches!(decoder.next_sentence(), Err(Error::Protocol(_))));
        // Once failed, input is discarded rather than accumulated.
        decoder.push(&[b'x'; 4096]);
        assert_eq!(decoder.buf.len(), 0);

        let mut decoder = Decoder::new();
        let mut prefix = Vec::new();
        encode_length(MAX_WORD_LEN, &mut prefix);
        decoder.push(&prefix);
        assert_eq!(decoder.next_sentence().unwrap(), None);
    }

    #[test]
    fn decoder_rejects_sentences_with_too_many_words_or_bytes() {
        let word = vec!["=a=b"; MAX_WORDS + 1];
        let mut decoder = Decoder::new();
        decoder.push(&encode_sentence(&word));
        assert!(matches!(decoder.next_sentence(), Err(Error::Protocol(_))));

        let big = "y".repeat(MAX_WORD_LEN);
        let words = vec![big.as_str(); MAX_SENTENCE_LEN / MAX_WORD_LEN + 1];
        let mut decoder = Decoder::new();
        decoder.push(&encode_sentence(&words));
        assert!(matches!(decoder.next_sentence(), Err(Error::Protocol(_))));
    }

    #[test]
    fn encode_sentence_skips_empty_words_so_they_cannot_split_a_command() {
        let encoded = encode_sentence(&["/ppp/active/print", "", "?name=bob"]);
        assert_eq!(
            decode_all(&encoded),
            vec![strings(&["/ppp/active/print", "?name=bob"])]
        );
        assert_eq!(encode_sentence(&[]), vec![0]);
    }

    #[test]
    fn non_utf8_words_decode_lossily_instead_of_failing() {
        let mut decoder = Decoder::new();
        decoder.push(&[0x05, b'=', b'a', b'=', 0xE9, 0xFF, 0x00]);
        let sentence = decoder.next_sentence().unwrap().unwrap();
        assert_eq!(sentence, vec!["=a=\u{FFFD}\u{FFFD}".to_owned()]);
    }

    /// xorshift64*: deterministic, dependency-free noise for the robustness tests.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn drain(decoder: &mut Decoder) {
        for _ in 0..10_000 {
            match decoder.next_sentence() {
                Ok(Some(sentence)) => {
                    let _ = parse_reply(&sentence);
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    #[test]
    fn decoder_and_parse_reply_survive_pseudo_random_garbage() {
        let vocabulary = [
            "!re",
            "!done",
            "!trap",
            "!fatal",
            "!empty",
            "!bogus",
            "=a=b",
            "=",
            "==",
            "=a",
            ".tag=1",
            "?name=x",
            "=message=m",
            "=category=2",
            "=ret=00",
            "plain",
            "é",
        ];
        let mut noise = Noise(0x5EED_1234_ABCD_0001);
        for round in 0..3000 {
            let mut bytes = Vec::new();
            if round % 2 == 0 {
                // Raw noise, biased toward short lengths so some words frame correctly.
                for _ in 0..noise.below(300) {
                    let byte = noise.next() as u8;
                    bytes.push(if noise.below(3) == 0 {
                        byte & 0x0F
                    } else {
                        byte
                    });
                }
            } else {
                // Well-framed sentences of protocol-looking words, then some corruption.
                for _ in 0..noise.below(6) {
                    let words: Vec<&str> = (0..noise.below(6))
                        .map(|_| vocabulary[noise.below(vocabulary.len())])
                        .collect();
                    bytes.extend(encode_sentence(&words));
                }
                for _ in 0..noise.below(3) {
                    if !bytes.is_empty() {
                        let at = noise.below(bytes.len());
                        bytes[at] = noise.next() as u8;
                    }
                }
            }
            let mut decoder = Decoder::new();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let take = 1 + noise.below(rest.len().min(17));
                decoder.push(&rest[..take]);
                rest = &rest[take..];
                drain(&mut decoder);
            }
        }
        // parse_reply on arbitrary word lists, including ones no decoder would produce.
        for _ in 0..3000 {
            let sentence: Vec<String> = (0..noise.below(5))
                .map(|_| {
                    let mut word = vocabulary[noise.below(vocabulary.len())].to_owned();
                    if noise.below(4) == 0 {
                        word.push(char::from(noise.next() as u8));
                    }
                    word
                })
                .collect();
            let _ = parse_reply(&sentence);
        }
    }

    // --- reply classification ---

    #[test]
    fn data_rows_keep_values_that_contain_equals_signs() {
        let reply = parse_reply(&strings(&["!re", "=.id=*1A", "=comment=a=b", "=empty="]));
        assert_eq!(
            reply.unwrap(),
            Reply::Re(vec![
                (".id".into(), "*1A".into()),
                ("comment".into(), "a=b".into()),
                ("empty".into(), String::new()),
            ])
        );
    }

    #[test]
    fn tags_are_ignored_in_every_reply_kind() {
        assert_eq!(
            parse_reply(&strings(&["!done", ".tag=7", "=ret=abc"])).unwrap(),
            Reply::Done(vec![("ret".into(), "abc".into())])
        );
        assert_eq!(
            parse_reply(&strings(&["!empty", ".tag=7"])).unwrap(),
            Reply::Empty
        );
        assert_eq!(
            parse_reply(&strings(&["!fatal", ".tag=7", "not logged in"])).unwrap(),
            Reply::Fatal("not logged in".into())
        );
    }

    #[test]
    fn traps_carry_message_and_category() {
        assert_eq!(
            parse_reply(&strings(&["!trap", "=category=4", "=message=no such item"])).unwrap(),
            Reply::Trap {
                message: "no such item".into(),
                category: Some("4".into())
            }
        );
        assert_eq!(
            parse_reply(&strings(&["!trap"])).unwrap(),
            Reply::Trap {
                message: "no message given".into(),
                category: None
            }
        );
    }

    #[test]
    fn fatal_takes_the_bare_reason_word() {
        assert_eq!(
            parse_reply(&strings(&["!fatal", "session terminated on request"])).unwrap(),
            Reply::Fatal("session terminated on request".into())
        );
        assert_eq!(
            parse_reply(&strings(&["!fatal"])).unwrap(),
            Reply::Fatal("no reason given".into())
        );
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        for sentence in [
            vec![],
            strings(&["!bogus"]),
            strings(&["=name=bob"]),
            strings(&["!re", "=name"]),
            strings(&["!done", "stray"]),
        ] {
            assert!(
                matches!(parse_reply(&sentence), Err(Error::Protocol(_))),
                "{sentence:?}"
            );
        }
        let long = format!("!{}", "x".repeat(10_000));
        let Err(Error::Protocol(message)) = parse_reply(&[long]) else {
            panic!("expected a protocol error");
        };
        assert!(message.len() < 100, "error text should be bounded");
    }

    // --- session matching ---

    #[test]
    fn session_ids_match_across_routeros_and_radius_spellings() {
        assert!(same_session_id("81c00002", "0x81C00002"));
        assert!(same_session_id("0x8100000a", "8100000A"));
        assert!(!same_session_id("81c00002", "0x81C00003"));
    }

    // --- client against the fake router ---

    fn config_with(sessions: Vec<Session>) -> Config {
        Config {
            sessions,
            ..Config::default()
        }
    }

    async fn disconnect(
        router: &FakeRouter,
        username: &str,
        acct_session_id: Option<&str>,
    ) -> Result<usize, Error> {
        let config = Config::default();
        disconnect_ppp(
            router.addr(),
            &config.user,
            &config.password,
            username,
            acct_session_id,
            T,
        )
        .await
    }

    #[tokio::test]
    async fn removes_the_matching_active_session() {
        let router = FakeRouter::start(config_with(vec![
            Session::new("*1A", "bob", Some("0x8100000A")),
            Session::new("*1B", "tom", Some("0x8100000D")),
        ]))
        .await
        .unwrap();

        let removed = disconnect(&router, "bob", None).await.unwrap();

        assert_eq!(removed, 1);
        assert_eq!(router.removed_ids(), vec!["*1A".to_owned()]);
        assert_eq!(
            router.received(),
            vec![
                strings(&["/login", "=name=api", "=password=s3cr3t-pw"]),
                strings(&["/ppp/active/print", "?name=bob", PPP_PROPLIST]),
                strings(&["/ppp/active/remove", "=.id=*1A"]),
            ]
        );
        assert_eq!(
            router.sessions(),
            vec![Session::new("*1B", "tom", Some("0x8100000D"))]
        );
    }

    #[tokio::test]
    async fn removes_only_the_session_with_the_matching_acct_session_id() {
        let router = FakeRouter::start(config_with(vec![
            Session::new("*1", "bob", Some("0x81000009")),
            Session::new("*2", "bob", Some("0x8100000A")),
        ]))
        .await
        .unwrap();

        let removed = disconnect(&router, "bob", Some("8100000a")).await.unwrap();

        assert_eq!(removed, 1);
        assert_eq!(router.removed_ids(), vec!["*2".to_owned()]);
    }

    #[tokio::test]
    async fn a_different_session_id_is_left_alone() {
        let router = FakeRouter::start(config_with(vec![Session::new(
            "*1",
            "bob",
            Some("0x8100000B"),
        )]))
        .await
        .unwrap();

        let removed = disconnect(&router, "bob", Some("8100000a")).await.unwrap();

        assert_eq!(removed, 0);
        assert!(router.removed_ids().is_empty());
    }

    #[tokio::test]
    async fn falls_back_to_the_name_when_no_session_id_is_reported() {
        let router = FakeRouter::start(config_with(vec![Session::new("*5", "bob", None)]))
            .await
            .unwrap();

        let removed = disconnect(&router, "bob", Some("8100000a")).await.unwrap();

        assert_eq!(removed, 1);
        assert_eq!(router.removed_ids(), vec!["*5".to_owned()]);
    }

    #[tokio::test]
    async fn removes_every_session_of_the_user_without_an_acct_session_id() {
        let router = FakeRouter::start(config_with(vec![
            Session::new("*1", "bob", Some("0x81000001")),
            Session::new("*2", "bobby", Some("0x81000002")),
            Session::new("*3", "bob", Some("0x81000003")),
        ]))
        .await
        .unwrap();

        let removed = disconnect(&router, "bob", None).await.unwrap();

        assert_eq!(removed, 2);
        assert_eq!(router.removed_ids(), vec!["*1".to_owned(), "*3".to_owned()]);
    }

    #[tokio::test]
    async fn unknown_user_is_not_found() {
        let router = FakeRouter::start(config_with(vec![Session::new("*1", "tom", None)]))
            .await
            .unwrap();

        assert_eq!(disconnect(&router, "bob", None).await.unwrap(), 0);
        assert!(router.removed_ids().is_empty());
    }

    #[tokio::test]
    async fn empty_reply_means_not_found() {
        let router = FakeRouter::start(Config {
            empty_reply: true,
            ..config_with(vec![Session::new("*1", "tom", None)])
        })
        .await
        .unwrap();

        assert_eq!(disconnect(&router, "bob", None).await.unwrap(), 0);
        assert!(router.removed_ids().is_empty());
    }

    #[tokio::test]
    async fn empty_reply_then_done_keeps_the_connection_in_step() {
        let router = FakeRouter::start(Config {
            empty_reply: true,
            ..config_with(vec![Session::new("*1", "tom", None)])
        })
        .await
        .unwrap();
        let stream = TcpStream::connect(router.addr()).await.unwrap();
        let config = Config::default();
        let mut client = Client::login(stream, &config.user, &config.password, T)
            .await
            .unwrap();

        let none = client
            .command(&["/ppp/active/print", "?name=bob"])
            .await
            .unwrap();
        let tom = client
            .command(&["/ppp/active/print", "?name=tom", "=.proplist=.id"])
            .await
            .unwrap();

        assert!(none.is_empty());
        assert_eq!(tom, vec![vec![(".id".to_owned(), "*1".to_owned())]]);
    }

    #[tokio::test]
    async fn empty_reply_without_done_still_means_not_found() {
        let router = FakeRouter::start(Config {
            empty_reply: true,
            empty_without_done: true,
            ..Config::default()
        })
        .await
        .unwrap();
        let config = Config::default();

        let removed = disconnect_ppp(
            router.addr(),
            &config.user,
            &config.password,
            "bob",
            None,
            Duration::from_millis(200),
        )
        .await;

        assert_eq!(removed.unwrap(), 0);
    }

    #[tokio::test]
    async fn login_failure_is_reported() {
        let router = FakeRouter::start(config_with(vec![Session::new("*1", "bob", None)]))
            .await
            .unwrap();

        let err = disconnect_ppp(router.addr(), "api", "wrong-pw", "bob", None, T)
            .await
            .unwrap_err();

        assert!(
            matches!(err, Error::Login(ref m) if m == INVALID_LOGIN),
            "{err:?}"
        );
        assert!(!err.to_string().contains("wrong-pw"));
        assert_eq!(
            router.received().len(),
            1,
            "nothing is sent after a failed login"
        );
        assert_eq!(router.sessions().len(), 1);
    }

    #[tokio::test]
    async fn pre_6_43_challenge_login_is_supported() {
        let challenge = "93b438ec9b80057c06dd9fe67d56aa9a";
        let router = FakeRouter::start(Config {
            challenge: Some(challenge.to_owned()),
            ..config_with(vec![Session::new("*7", "bob", None)])
        })
        .await
        .unwrap();

        assert_eq!(disconnect(&router, "bob", None).await.unwrap(), 1);

        let received = router.received();
        let expected = challenge_response("s3cr3t-pw", challenge).unwrap();
        assert_eq!(
            received[1],
            strings(&["/login", "=name=api", &format!("=response={expected}")])
        );
        assert_eq!(router.removed_ids(), vec!["*7".to_owned()]);
    }

    #[tokio::test]
    async fn wrong_password_fails_the_challenge_login() {
        let router = FakeRouter::start(Config {
            challenge: Some("00112233445566778899aabbccddeeff".to_owned()),
            ..Config::default()
        })
        .await
        .unwrap();

        let err = disconnect_ppp(router.addr(), "api", "nope", "bob", None, T)
            .await
            .unwrap_err();

        assert!(
            matches!(err, Error::Login(ref m) if m == "cannot log in"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn trap_on_remove_is_reported_with_its_category() {
        let router = FakeRouter::start(Config {
            remove_trap: Some(("failure: item is busy".to_owned(), Some("2".to_owned()))),
            ..config_with(vec![Session::new("*1", "bob", None)])
        })
        .await
        .unwrap();

        let err = disconnect(&router, "bob", None).await.unwrap_err();

        let Error::Trap { message, category } = err else {
            panic!("expected a trap, got {err:?}");
        };
        assert_eq!(message, "failure: item is busy");
        assert_eq!(category.as_deref(), Some("2"));
        assert_eq!(router.removed_ids(), vec!["*1".to_owned()]);
    }

    #[tokio::test]
    async fn trap_is_followed_by_a_usable_connection() {
        let router = FakeRouter::start(config_with(vec![Session::new("*1", "bob", None)]))
            .await
            .unwrap();
        let stream = TcpStream::connect(router.addr()).await.unwrap();
        let config = Config::default();
        let mut client = Client::login(stream, &config.user, &config.password, T)
            .await
            .unwrap();

        let err = client.command(&["/no/such/thing"]).await.unwrap_err();
        let rows = client
            .command(&[
                "/ppp/active/print",
                "?name=bob",
                "=.proplist=name",
                ".tag=3",
            ])
            .await
            .unwrap();

        assert!(matches!(err, Error::Trap { ref message, .. } if message == "no such command"));
        assert_eq!(rows, vec![vec![("name".to_owned(), "bob".to_owned())]]);
    }

    #[tokio::test]
    async fn fatal_reply_is_reported() {
        let router = FakeRouter::start(Config {
            fatal_on_print: Some("out of memory".to_owned()),
            ..config_with(vec![Session::new("*1", "bob", None)])
        })
        .await
        .unwrap();

        let err = disconnect(&router, "bob", None).await.unwrap_err();

        assert!(
            matches!(err, Error::Fatal(ref r) if r == "out of memory"),
            "{err:?}"
        );
        assert!(router.removed_ids().is_empty());
    }

    #[tokio::test]
    async fn hung_server_times_out() {
        let router = FakeRouter::start(Config {
            hang: true,
            ..Config::default()
        })
        .await
        .unwrap();
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();

        let err = disconnect_ppp(router.addr(), "api", "s3cr3t-pw", "bob", None, timeout)
            .await
            .unwrap_err();

        let elapsed = started.elapsed();
        assert!(matches!(err, Error::Timeout), "{err:?}");
        assert!(elapsed >= timeout, "gave up early after {elapsed:?}");
        assert!(elapsed < timeout * 5, "took {elapsed:?}");
        assert_eq!(router.received().len(), 1, "the login request did arrive");
    }

    #[tokio::test]
    async fn closed_port_is_an_io_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);

        let err = disconnect_ppp(addr, "api", "s3cr3t-pw", "bob", None, T)
            .await
            .unwrap_err();

        assert!(
            matches!(err, Error::Io(ref e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn empty_username_is_refused_before_connecting() {
        let router = FakeRouter::start(Config::default()).await.unwrap();

        let err = disconnect(&router, "", None).await.unwrap_err();

        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(router.received().is_empty());
    }

    // --- client against scripted in-memory peers (deterministic time) ---

    // Real time with short timeouts: the main crate's tokio lacks `test-util`, so there
    // is no paused clock to lean on.
    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn silent_peer_times_out_within_the_timeout() {
        let (ours, _theirs) = tokio::io::duplex(4096);
        let started = Instant::now();

        let err = disconnect_ppp_on(ours, "api", "pw", "bob", None, SHORT)
            .await
            .unwrap_err();

        assert!(matches!(err, Error::Timeout), "{err:?}");
        let elapsed = started.elapsed();
        assert!(elapsed >= SHORT && elapsed < SHORT * 5, "{elapsed:?}");
    }

    #[tokio::test]
    async fn reply_cut_off_midway_is_an_io_error() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut decoder = Decoder::new();
            read_sentence(&mut theirs, &mut decoder).await.unwrap();
            let done = encode_sentence(&["!done"]);
            theirs.write_all(&done[..3]).await.unwrap();
        });

        let err = Client::login(ours, "api", "pw", T).await.unwrap_err();

        peer.await.unwrap();
        assert!(
            matches!(err, Error::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn login_trap_is_reported_even_if_the_router_hangs_up_before_done() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut decoder = Decoder::new();
            read_sentence(&mut theirs, &mut decoder).await.unwrap();
            let trap = encode_sentence(&["!trap", "=message=invalid user name or password (6)"]);
            theirs.write_all(&trap).await.unwrap();
        });

        let err = Client::login(ours, "api", "pw", T).await.unwrap_err();

        peer.await.unwrap();
        assert!(
            matches!(err, Error::Login(ref m) if m == INVALID_LOGIN),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn connection_is_not_reused_after_a_timed_out_reply() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut decoder = Decoder::new();
            read_sentence(&mut theirs, &mut decoder).await.unwrap();
            theirs
                .write_all(&encode_sentence(&["!done"]))
                .await
                .unwrap();
            // Answer the print only after the client gave up on it.
            read_sentence(&mut theirs, &mut decoder).await.unwrap();
            tokio::time::sleep(SHORT * 2).await;
            theirs
                .write_all(&encode_sentence(&["!done"]))
                .await
                .unwrap();
            let later = read_sentence(&mut theirs, &mut decoder).await;
            (theirs, later.ok().flatten())
        });
        let mut client = Client::login(ours, "api", "pw", SHORT).await.unwrap();

        let first = client.command(&["/ppp/active/print"]).await.unwrap_err();
        tokio::time::sleep(SHORT * 3).await;
        let second = client.command(&["/ppp/active/print"]).await.unwrap_err();
        drop(client);

        assert!(matches!(first, Error::Timeout), "{first:?}");
        assert!(matches!(second, Error::Protocol(_)), "{second:?}");
        let (_theirs, later) = peer.await.unwrap();
        assert_eq!(later, None, "the second command must not be sent");
    }

    #[tokio::test]
    async fn empty_words_are_refused_before_anything_is_sent() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut decoder = Decoder::new();
            read_sentence(&mut theirs, &mut decoder).await.unwrap();
            theirs
                .write_all(&encode_sentence(&["!done"]))
                .await
                .unwrap();
            read_sentence(&mut theirs, &mut decoder).await.unwrap()
        });
        let mut client = Client::login(ours, "api", "pw", T).await.unwrap();

        let err = client
            .command(&["/ppp/active/remove", "", "/system/reboot"])
            .await
            .unwrap_err();
        drop(client);

        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(peer.await.unwrap(), None);
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut decoder = Decoder::new();
            let login = read_sentence(&mut theirs, &mut decoder).await.unwrap();
            theirs
                .write_all(&encode_sentence(&["!done"]))
                .await
                .unwrap();
            (theirs, decoder, login)
        });
        let client = Client::login(ours, "api", "hunter2-secret", T)
            .await
            .unwrap();
        let (_theirs, mut decoder, login) = peer.await.unwrap();

        assert!(!format!("{client:?}").contains("hunter2"));
        // Even a decoder holding a half-read login sentence does not show it.
        let half = encode_sentence(&["/login", "=password=hunter2-secret"]);
        decoder.push(&half[..half.len() - 1]);
        assert!(!format!("{decoder:?}").contains("hunter2"));
        assert_eq!(login.unwrap()[2], "=password=hunter2-secret");
    }
}
