//! The phone's side of the directory protocol, without I/O: [`Client`].
//!
//! A phone keeps one TCP connection to its directory server. The client decides everything
//! about it: when to connect and when to give up, registering (REG with the phone's UDP
//! port) as soon as the connection is up, matching responses to requests in order (they
//! carry no id), the answer timeout, the reconnection delay, the idle `PING`, walking the
//! pages of `LIST`, and what to send to a server that did not say it is Parlo's. The shell
//! around it owns the socket, the clock and the host-name lookup, and nothing else.
//!
//! # Contract
//!
//! Time is a [`parlo_fsm::Instant`] (milliseconds) passed into every input; a time earlier
//! than one already seen is taken as that one. After **every** input, the shell drains the
//! outputs in this order, then sleeps until [`Client::poll_timeout`] (or until its socket
//! is ready) and calls [`Client::handle_timeout`]:
//!
//! 1. [`Client::poll_link`] until `None`: [`Link::Connect`] asks for a connection to the
//!    server (look its host name up first if it has one, then start the TCP connection and
//!    say so with [`Client::handle_connecting`]; report the outcome with
//!    [`Client::handle_connected`] or [`Client::handle_failed`]). [`Link::Close`] asks to
//!    drop the connection or the attempt under way; after it, nothing from that
//!    connection may be reported.
//! 2. [`Client::poll_transmit`]: bytes to write on the connection. Write what the socket
//!    takes and report the count with [`Client::handle_written`]; the rest stays here until
//!    the socket is writable again.
//! 3. [`Client::poll_event`] until `None`: what the phone is told.
//!
//! While connected, the shell feeds every byte read to [`Client::handle_received`], the end
//! of the stream to [`Client::handle_closed`] and a socket error to
//! [`Client::handle_failed`]. The phone asks with [`Client::handle_query`] and quits with
//! [`Client::handle_quit`]. Every query is answered exactly once by an [`Event::Answer`]
//! carrying the query's tag: the phone's own note of why it asked.
//!
//! # Rules
//!
//! - Registration: REG is the first request of every connection. A REG answered
//!   `"server":"parlo"` makes the server a Parlo server for the rest of the connection.
//!   A refused REG (the name is taken: another phone, or a stale registration of ours that
//!   the server has not dropped yet) closes the connection; asking again at once would
//!   only be refused again, so refusals are retried after [`REFUSED_BACKOFF_INITIAL_MS`],
//!   doubling up to [`REFUSED_BACKOFF_CAP_MS`].
//! - Order: a Parlo server gets its requests back to back. Any other server (the original
//!   project's reads one request per `recv` and fails on two) gets one request at a time:
//!   the next is written once the previous is answered.
//! - `PING` goes only to a Parlo server, after [`PING_IDLE_MS`] without a request: the
//!   original server's handler fails on a request without `"name"` and leaves its
//!   registration behind. For the same reason `LIST` goes only to a Parlo server; to any
//!   other the answer is [`Failure::ListUnsupported`].
//! - A request unanswered for [`ANSWER_TIMEOUT_MS`] means the server is stuck; more than
//!   [`UNSENT_LIMIT`] bytes of requests waiting to be written mean it does not read them;
//!   bytes that are not a response, or a response nobody asked for, mean the order of
//!   answers can no longer be trusted. In every such case, as when the connection ends,
//!   the connection is dropped, each request still waiting is answered
//!   [`Failure::Lost`], and a new attempt follows after [`BACKOFF_INITIAL_MS`], doubling
//!   up to [`BACKOFF_CAP_MS`].
//! - Reconnection: losing a registration (the server restarts, mostly) is retried at
//!   once, after a random delay below [`RECONNECT_JITTER_MS`] so that a whole site does
//!   not come back in the same millisecond. Within [`RECONNECT_WINDOW_MS`] of that loss
//!   the delay then doubles only up to [`RECONNECT_CAP_MS`], so a server that is back is
//!   found within seconds; past it, up to [`BACKOFF_CAP_MS`] as above. A successful
//!   registration resets every delay.
//! - News: a loss is news for the user ([`Event::Lost`]'s `announce`) when it starts an
//!   outage or changes its kind (the server away, or refusing us, and why); its retries
//!   are not.
//! - `LIST` is asked once by the phone; the client walks the pages and answers with every
//!   name, at most [`LIST_MAX_NAMES`] names in at most [`LIST_MAX_PAGES`] pages. A server
//!   that goes on answering `"more":true` past that (or with an empty page) gets an answer
//!   that says the list was cut. Each page after the first is asked `"after"` the last
//!   name of the one before (the cursor), and also by `"offset"`, for a server of Parlo's
//!   first version, which knows only that.
//! - Text from the server reaches the phone escaped ([`ServerText`]): it can be printed.
//! - Encryption ([`Client::with_security`]; a client without it speaks plain JSON only):
//!   with the server's key known ([`ServerKey`]: given by the user, or pinned), every
//!   connection starts with a Noise handshake ([`crate::noise`]) and carries its requests
//!   sealed; a handshake the server does not complete (it answers with something else,
//!   closes, or fails the connection) is a refusal, [`Refusal::ServerKey`], retried like
//!   any refusal and never followed by plain text. Without a key, the first request of a
//!   connection is `KEY`, in plain JSON: a server that answers with its key gets it
//!   pinned ([`Event::ServerKeyLearned`], which the shell stores) and is connected to
//!   again at once, through Noise; one that does not (the original project's, an older
//!   Parlo's) is spoken to in plain JSON on that connection ([`Event::Unencrypted`], the
//!   first time), since nothing better can be had from it; the next connection asks
//!   again, so a server upgraded meanwhile gets pinned. `KEY` carries a `"name"`: the original server
//!   reads one before the command, and answers an unknown command with an error.
//!
//! Memory is bounded: the requests waiting (by [`UNSENT_LIMIT`]), the received bytes (one
//! [`FrameBuffer`]), a list being gathered (by [`LIST_MAX_NAMES`]). No input panics.

use core::fmt;
use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

use parlo_fsm::{CallIds, Instant, SplitMix64};

use super::{
    Contact, MAX_ENCODED_REQUEST, Name, PublicKey, Reply, ReplyError, Request, RequestError,
    ServerKind, ServerText,
};
use crate::framing::{Frame, FrameBuffer, MAX_REQUEST};
use crate::noise::{Channel, SecretKey, fingerprint};

/// How long the shell may take to look the server's host name up and start connecting
/// (from [`Link::Connect`] to [`Client::handle_connecting`]).
pub const LOOKUP_TIMEOUT_MS: u64 = 10_000;
/// How long a connection attempt may take (from [`Client::handle_connecting`]).
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// The first delay before a new attempt, doubled after each failure...
pub const BACKOFF_INITIAL_MS: u64 = 1_000;
/// ...up to this.
pub const BACKOFF_CAP_MS: u64 = 30_000;
/// The first attempt after losing a registration comes after a random delay below this.
pub const RECONNECT_JITTER_MS: u64 = 1_000;
/// For this long after losing a registration, the delay doubles only up to
/// [`RECONNECT_CAP_MS`]: a restarting server is found soon after it is back, and a
/// server gone for good is then asked no more often than one never reached.
pub const RECONNECT_WINDOW_MS: u64 = 5 * 60_000;
/// The longest delay between attempts within [`RECONNECT_WINDOW_MS`] of losing a
/// registration.
pub const RECONNECT_CAP_MS: u64 = 3_000;
/// The first delay after the server refused our REG, doubled after each refusal...
pub const REFUSED_BACKOFF_INITIAL_MS: u64 = 5_000;
/// ...up to this.
pub const REFUSED_BACKOFF_CAP_MS: u64 = 5 * 60_000;
/// A request unanswered this long means the server is stuck: the connection is dropped
/// and made again.
pub const ANSWER_TIMEOUT_MS: u64 = 10_000;
/// After this long without a request, a PING checks that a Parlo server still answers
/// (TCP keepalive alone cannot see a server process that hangs).
pub const PING_IDLE_MS: u64 = 60_000;
/// Bytes of requests waiting to be written beyond which the server is taken as not
/// reading them (a request waiting its turn counts as [`MAX_ENCODED_REQUEST`] bytes).
pub const UNSENT_LIMIT: usize = 64 * 1024;
/// The most names one `list` gathers. 1,000 names is about 40 KB.
pub const LIST_MAX_NAMES: usize = 1_000;
/// The most LIST pages one `list` asks for. An honest server's first
/// [`LIST_MAX_NAMES`] names fit in fewer: a page holds at least 14 names of the longest
/// escaped kind.
pub const LIST_MAX_PAGES: u32 = 100;

/// What the phone may ask the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Where is this name registered? (GET)
    Lookup(Name),
    /// Who is registered? (LIST, every page)
    List,
}

/// The directory's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is registered there.
    Found(Contact),
    /// Nobody holds the name.
    NotFound,
    /// The registered names, in the server's order.
    Users {
        /// The names gathered, at most [`LIST_MAX_NAMES`].
        names: Vec<Name>,
        /// `false` when the list was cut: the server had more than [`LIST_MAX_NAMES`]
        /// names, or kept saying more follow past [`LIST_MAX_PAGES`] pages or on an
        /// empty page.
        complete: bool,
    },
}

/// Why a [`Query`] got no [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// There is no connection to the server now (or the phone is quitting).
    NotConnected,
    /// The server did not say it is Parlo's, and only Parlo's servers know `LIST`.
    ListUnsupported,
    /// The server refused the request (`{"ack":"Error"}`), saying this (maybe nothing).
    Refused(ServerText),
    /// The server answered with a response of another kind (says which).
    Unexpected(&'static str),
    /// The server's response could not be understood.
    BadReply(ReplyError),
    /// The connection was lost before the answer came.
    Lost(Loss),
}

/// Why the connection to the server is down.
///
/// `Display` says it as what the server did, to follow "the directory server X ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// The connection attempt failed; the shell's words (connection refused, the host
    /// name has no address, ...).
    Unreachable(String),
    /// The host name was not looked up within [`LOOKUP_TIMEOUT_MS`].
    LookupTimeout,
    /// The connection was not made within [`CONNECT_TIMEOUT_MS`].
    ConnectTimeout,
    /// The server ended the connection.
    Closed,
    /// The connection failed; the shell's words (connection reset, ...).
    Failed(String),
    /// A request was not answered within [`ANSWER_TIMEOUT_MS`].
    Stuck,
    /// More than [`UNSENT_LIMIT`] bytes of requests were waiting to be written.
    NotReading,
    /// The server sent bytes that are not a response (what was wrong with them).
    Garbled(RequestError),
    /// The server sent a response when no request was waiting for one.
    Unsolicited {
        /// What kind of response.
        what: &'static str,
        /// Its reason, for an error response (an idle server's goodbye says why).
        reason: ServerText,
    },
    /// The server did not accept our registration.
    Refused(Refusal),
}

/// How a server refused our REG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Error Registering`: another registration holds the name; the server's words.
    NameTaken(ServerText),
    /// `Error`: the REG was refused; the server's words.
    Error(ServerText),
    /// An answer of another kind (says which).
    Unexpected(&'static str),
    /// An answer that could not be understood.
    BadReply(ReplyError),
    /// The server did not complete the Noise handshake for the key we hold for it: it has
    /// another key (or is another server), or speaks no Noise. Nothing is sent in plain
    /// text to it.
    ServerKey(ServerKey),
}

/// The server's public key as the phone knows it, and where from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    /// The key.
    pub key: PublicKey,
    /// Given by the user (`--server-key`) rather than pinned on first contact.
    pub configured: bool,
}

/// What a phone needs to encrypt its directory connection.
pub struct Security {
    /// The phone's own key pair.
    pub identity: SecretKey,
    /// The server's key, if known.
    pub server: Option<ServerKey>,
    /// 32 random bytes for each handshake's ephemeral key (from the operating system);
    /// `None` if there are none, which fails the attempt.
    pub entropy: Box<dyn FnMut() -> Option<[u8; 32]> + Send>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("public", &self.identity.public())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// How the current connection speaks.
#[derive(Debug)]
enum Speech {
    /// Plain JSON (no security, or a server that speaks no Noise).
    Plain,
    /// Plain JSON, `KEY` asked: its answer decides.
    Asking,
    /// Noise, through this channel.
    Noise(Box<Channel>),
}

/// When the next connection attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The time of the attempt.
    pub at: Instant,
    /// How long after the loss that is, in milliseconds.
    pub after_ms: u64,
}

/// What the client tells the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// The server accepted our registration.
    Registered {
        /// Whether it said it is Parlo's.
        server: ServerKind,
    },
    /// The connection is down (or could not be made).
    Lost {
        /// Why.
        reason: Loss,
        /// The next attempt; `None` once the phone quits.
        retry: Option<Retry>,
        /// Whether this is news for the user: the first loss since the last registration,
        /// or one of another kind than the last (the server away, or refusing us, and
        /// why); not a retry failing as the one before.
        announce: bool,
    },
    /// The answer to a query, with the query's tag.
    Answer {
        /// What the phone gave with the query.
        tag: T,
        /// The answer, or why there is none.
        result: Result<Answer, Failure>,
    },
    /// The answer to the DISCONNECT sent when the phone quit.
    Disconnected(Result<(), Failure>),
    /// The server said its key on first contact: the shell pins it (stores it for this
    /// server's address). The client uses it from now on.
    ServerKeyLearned(PublicKey),
    /// The server knows no `KEY`: it speaks no Noise, and gets plain JSON (what it said
    /// instead). Told once.
    Unencrypted(ServerText),
}

/// What the shell is to do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Connect to the server now (looking its host name up first, if it has one).
    Connect,
    /// Drop the connection, or the attempt under way.
    Close,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection; the next attempt is at `retry_at`.
    Waiting { retry_at: Instant },
    /// [`Link::Connect`] was asked; the shell looks the host name up.
    Opening { deadline: Instant },
    /// The TCP connection is being made.
    Connecting { deadline: Instant },
    /// Connected (registered once REG is answered).
    Open,
    /// The phone quit: no more attempts.
    Stopped,
}

/// What kind of outage a loss belongs to: a loss of another kind than the last is news.
// One per client, kept in place: the size of a refusal's text costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outage {
    /// The server cannot be reached, or went away.
    Away,
    /// The server refused our registration, for this reason.
    Refused(Refusal),
}

/// What a request was sent for: what to do with its answer.
#[derive(Debug)]
enum Purpose<T> {
    Register,
    Key,
    Ping,
    Disconnect,
    Lookup(T),
    /// A `list`, gathering pages: the names so far, the offset of the page asked (for a
    /// server that pages by offset only), and how many pages were asked.
    List {
        tag: T,
        names: Vec<Name>,
        offset: u32,
        pages: u32,
    },
}

/// A request waiting for its turn to be written.
#[derive(Debug)]
struct Queued<T> {
    request: Request,
    purpose: Purpose<T>,
}

/// A request written, waiting for its answer.
#[derive(Debug)]
struct Sent<T> {
    purpose: Purpose<T>,
    at: Instant,
}

/// The phone's directory connection, without I/O (see the module docs for the contract).
///
/// `T` is the phone's tag for a query: whatever it needs to act on the answer.
#[derive(Debug)]
pub struct Client<T> {
    name: Name,
    udp_port: u16,
    /// The latest time seen.
    now: Instant,
    state: State,
    /// What the REG answer said, on this connection.
    server: Option<ServerKind>,
    registered: bool,
    quitting: bool,
    /// The next delay after a failure to reach the server.
    backoff_ms: u64,
    /// The next delay after a refusal.
    refused_backoff_ms: u64,
    /// When the last registration was lost, during the outage that followed.
    lost_at: Option<Instant>,
    /// The kind of the outage under way (`None`: registered, or not tried yet).
    outage: Option<Outage>,
    /// Where the reconnection delay's randomness comes from.
    jitter: SplitMix64,
    /// When the last request was written (or the connection made).
    last_request: Instant,
    frames: FrameBuffer,
    queued: VecDeque<Queued<T>>,
    sent: VecDeque<Sent<T>>,
    outbox: Vec<u8>,
    links: VecDeque<Link>,
    events: VecDeque<Event<T>>,
    /// Encryption, when the phone has an identity.
    security: Option<Security>,
    /// The server answered `KEY` with something else (said once).
    unencrypted: bool,
    /// How the current connection speaks.
    speech: Speech,
}

impl<T> Client<T> {
    /// The client of the phone `name`, whose calls arrive on UDP `udp_port`. The first
    /// connection attempt is due at `now`. `seed` seeds the random delay of a
    /// reconnection: it must differ from phone to phone (the shell draws it from the
    /// operating system), or a site's phones would reconnect all at once.
    pub fn new(name: Name, udp_port: u16, seed: u64, now: Instant) -> Self {
        Client {
            name,
            udp_port,
            now,
            state: State::Waiting { retry_at: now },
            server: None,
            registered: false,
            quitting: false,
            backoff_ms: BACKOFF_INITIAL_MS,
            refused_backoff_ms: REFUSED_BACKOFF_INITIAL_MS,
            lost_at: None,
            outage: None,
            jitter: SplitMix64(seed),
            last_request: now,
            frames: FrameBuffer::new(),
            queued: VecDeque::new(),
            sent: VecDeque::new(),
            outbox: Vec::new(),
            links: VecDeque::new(),
            events: VecDeque::new(),
            security: None,
            unencrypted: false,
            speech: Speech::Plain,
        }
    }

    /// Encrypts the connection with `security` (see the module docs).
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = Some(security);
        self
    }

    /// The server's key as the client knows it now.
    pub fn server_key(&self) -> Option<ServerKey> {
        self.security.as_ref().and_then(|s| s.server)
    }

    /// Whether the current connection speaks Noise (its bytes are not text).
    pub fn speaks_noise(&self) -> bool {
        matches!(self.speech, Speech::Noise(_))
    }

    /// Whether the current connection is encrypted (its handshake done).
    pub fn is_encrypted(&self) -> bool {
        matches!(&self.speech, Speech::Noise(channel) if channel.is_established())
    }

    /// Whether the connection is up: queries are sent now.
    pub fn is_connected(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the server holds our registration.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// What the server said it is, once it answered REG on this connection.
    pub fn server(&self) -> Option<ServerKind> {
        self.server
    }

    /// Whether requests wait for their answer (or their turn).
    pub fn has_pending(&self) -> bool {
        !self.sent.is_empty() || !self.queued.is_empty()
    }

    // ---- inputs ----

    /// Does what is due at `now`: a connection attempt, giving up one that took too long,
    /// giving up on a stuck server, an idle PING.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        match self.state {
            State::Waiting { retry_at } if retry_at <= now => {
                self.state = State::Opening {
                    deadline: now.after(LOOKUP_TIMEOUT_MS),
                };
                self.links.push_back(Link::Connect);
            }
            State::Opening { deadline } if deadline <= now => self.fail(now, Loss::LookupTimeout),
            State::Connecting { deadline } if deadline <= now => {
                self.fail(now, Loss::ConnectTimeout);
            }
            State::Open => match self.sent.front() {
                Some(first) if first.at.after(ANSWER_TIMEOUT_MS) <= now => {
                    self.fail(now, Loss::Stuck);
                }
                None if self.wants_ping() && self.last_request.after(PING_IDLE_MS) <= now => {
                    self.queued.push_back(Queued {
                        request: Request::Ping,
                        purpose: Purpose::Ping,
                    });
                    self.pump(now);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The shell has the server's address and started the TCP connection: it has
    /// [`CONNECT_TIMEOUT_MS`] to be made.
    pub fn handle_connecting(&mut self, now: Instant) {
        let now = self.clock(now);
        if let State::Opening { .. } = self.state {
            self.state = State::Connecting {
                deadline: now.after(CONNECT_TIMEOUT_MS),
            };
        }
    }

    /// The connection is made: REG goes out first.
    pub fn handle_connected(&mut self, now: Instant) {
        let now = self.clock(now);
        if !matches!(self.state, State::Opening { .. } | State::Connecting { .. }) {
            return;
        }
        self.state = State::Open;
        self.last_request = now;
        self.queued.push_front(Queued {
            request: Request::Reg {
                name: self.name.clone(),
                port: Some(self.udp_port),
            },
            purpose: Purpose::Register,
        });
        self.speech = Speech::Plain;
        if let Some(security) = self.security.as_mut() {
            match security.server {
                Some(server) => {
                    let Some(ephemeral) = (security.entropy)() else {
                        let why = "the operating system's random source failed";
                        return self.fail(now, Loss::Failed(why.into()));
                    };
                    match Channel::initiator(&security.identity, &server.key, ephemeral) {
                        Ok(mut channel) => {
                            if let Some(hello) = channel.poll_transmit() {
                                self.outbox.extend_from_slice(hello);
                                let n = hello.len();
                                channel.handle_written(n);
                            }
                            self.speech = Speech::Noise(Box::new(channel));
                        }
                        Err(_) => {
                            return self.fail(now, Loss::Refused(Refusal::ServerKey(server)));
                        }
                    }
                }
                None => {
                    self.speech = Speech::Asking;
                    self.queued.push_front(Queued {
                        request: Request::Key,
                        purpose: Purpose::Key,
                    });
                }
            }
        }
        self.pump(now);
    }

    /// The Noise handshake under way did not complete: the server's key is not the one
    /// held, or it speaks no Noise.
    fn handshake_failed(&mut self) -> Option<Loss> {
        match &self.speech {
            Speech::Noise(channel) if !channel.is_established() => self
                .server_key()
                .map(|key| Loss::Refused(Refusal::ServerKey(key))),
            _ => None,
        }
    }

    /// The connection attempt, or the connection, failed; `why` in the shell's words.
    pub fn handle_failed(&mut self, now: Instant, why: impl Into<String>) {
        let now = self.clock(now);
        match self.state {
            State::Opening { .. } | State::Connecting { .. } => {
                self.fail(now, Loss::Unreachable(why.into()));
            }
            State::Open => {
                let loss = self
                    .handshake_failed()
                    .unwrap_or_else(|| Loss::Failed(why.into()));
                self.fail(now, loss);
            }
            State::Waiting { .. } | State::Stopped => {}
        }
    }

    /// The server ended the connection (end of stream).
    pub fn handle_closed(&mut self, now: Instant) {
        let now = self.clock(now);
        match self.state {
            State::Open => {
                let loss = self.handshake_failed().unwrap_or(Loss::Closed);
                self.fail(now, loss);
            }
            State::Opening { .. } | State::Connecting { .. } => {
                self.fail(
                    now,
                    Loss::Unreachable("the connection ended at once".into()),
                );
            }
            State::Waiting { .. } | State::Stopped => {}
        }
    }

    /// Bytes read from the connection, in any cut.
    pub fn handle_received(&mut self, now: Instant, bytes: &[u8]) {
        let now = self.clock(now);
        if let Speech::Noise(_) = self.speech {
            return self.receive_sealed(now, bytes);
        }
        self.receive_plain(now, bytes);
    }

    /// Bytes of a Noise connection: the handshake, then sealed responses.
    fn receive_sealed(&mut self, now: Instant, mut bytes: &[u8]) {
        while self.state == State::Open {
            let Speech::Noise(channel) = &mut self.speech else {
                return;
            };
            let taken = channel.handle_received(bytes);
            bytes = &bytes[taken..];
            let was_established = channel.is_established();
            let mut plain = [0u8; MAX_REQUEST];
            let read = channel.read(&mut plain);
            if let Some(message) = channel.poll_transmit() {
                self.outbox.extend_from_slice(message);
                let n = message.len();
                channel.handle_written(n);
            }
            let established = channel.is_established();
            let n =
                match read {
                    Ok(n) => n,
                    Err(_) => {
                        let loss = self.handshake_failed().unwrap_or(Loss::Garbled(
                            RequestError::Malformed("an encrypted response that does not verify"),
                        ));
                        return self.fail(now, loss);
                    }
                };
            if established && !was_established {
                // The handshake is done: the requests waiting go out, sealed.
                self.pump(now);
            }
            if n > 0 {
                self.receive_plain(now, &plain[..n]);
            } else if bytes.is_empty() || taken == 0 {
                return;
            }
        }
    }

    /// Plain bytes: responses, in any cut.
    fn receive_plain(&mut self, now: Instant, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.state == State::Open {
            let spare = self.frames.spare();
            let n = spare.len().min(bytes.len());
            if n == 0 {
                // Unreachable: after `next_frame` returns `None` the buffer has room
                // (framing's contract). Were it full, the stream could not go on anyway.
                return self.fail(now, Loss::Garbled(RequestError::TooLong));
            }
            spare[..n].copy_from_slice(&bytes[..n]);
            self.frames.filled(n);
            bytes = &bytes[n..];
            self.take_replies(now);
        }
    }

    /// `n` bytes of [`Client::poll_transmit`] were written.
    pub fn handle_written(&mut self, n: usize) {
        let n = n.min(self.outbox.len());
        self.outbox.drain(..n);
    }

    /// The phone asks `query`; the answer comes as [`Event::Answer`] with `tag`.
    pub fn handle_query(&mut self, now: Instant, query: Query, tag: T) {
        let now = self.clock(now);
        if self.quitting || self.state != State::Open {
            return self.answer(tag, Err(Failure::NotConnected));
        }
        let (request, purpose) = match query {
            Query::Lookup(name) => (Request::Get { name }, Purpose::Lookup(tag)),
            Query::List if self.server == Some(ServerKind::Original) => {
                return self.answer(tag, Err(Failure::ListUnsupported));
            }
            Query::List => (
                Request::List {
                    after: None,
                    offset: 0,
                },
                Purpose::List {
                    tag,
                    names: Vec::new(),
                    offset: 0,
                    pages: 0,
                },
            ),
        };
        self.queued.push_back(Queued { request, purpose });
        self.pump(now);
    }

    /// The phone quits: DISCONNECT if connected (its answer comes as
    /// [`Event::Disconnected`]), and no new connection after this one.
    pub fn handle_quit(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.quitting {
            return;
        }
        self.quitting = true;
        match self.state {
            State::Open => {
                self.queued.push_back(Queued {
                    request: Request::Disconnect {
                        name: self.name.clone(),
                    },
                    purpose: Purpose::Disconnect,
                });
                self.pump(now);
            }
            State::Opening { .. } | State::Connecting { .. } => {
                self.links.push_back(Link::Close);
                self.state = State::Stopped;
            }
            State::Waiting { .. } => self.state = State::Stopped,
            State::Stopped => {}
        }
    }

    // ---- outputs ----

    /// What to do with the connection, if anything.
    #[must_use]
    pub fn poll_link(&mut self) -> Option<Link> {
        self.links.pop_front()
    }

    /// The bytes to write on the connection, if any; report what was written with
    /// [`Client::handle_written`].
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        (self.state == State::Open && !self.outbox.is_empty()).then_some(self.outbox.as_slice())
    }

    /// The next event for the phone, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] is next due, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { retry_at } => Some(retry_at),
            State::Opening { deadline } | State::Connecting { deadline } => Some(deadline),
            State::Open => match self.sent.front() {
                Some(first) => Some(first.at.after(ANSWER_TIMEOUT_MS)),
                None if self.wants_ping() => Some(self.last_request.after(PING_IDLE_MS)),
                None => None,
            },
            State::Stopped => None,
        }
    }

    // ---- the rules ----

    /// `now`, or the latest time seen if `now` is earlier.
    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    /// Whether an idle connection should be checked with PING: only a Parlo server takes
    /// it, and only when nothing else is going on.
    fn wants_ping(&self) -> bool {
        self.server == Some(ServerKind::Parlo)
            && !self.quitting
            && self.sent.is_empty()
            && self.queued.is_empty()
    }

    /// Writes the requests whose turn it is: all of them to a Parlo server, the next one
    /// when nothing awaits an answer to any other.
    fn pump(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        if let Speech::Noise(channel) = &self.speech
            && !channel.is_established()
        {
            return; // they go once the handshake is done
        }
        if let Speech::Asking = self.speech
            && !self.sent.is_empty()
        {
            return; // nothing goes before KEY is answered
        }
        let parlo = self.server == Some(ServerKind::Parlo);
        while !self.queued.is_empty() && (parlo || self.sent.is_empty()) {
            let Some(Queued { request, purpose }) = self.queued.pop_front() else {
                break;
            };
            if !parlo && matches!(request, Request::List { .. } | Request::Ping) {
                // Asked before the server said what it is. Only a list has someone to
                // answer; a PING is never asked of such a server.
                if let Purpose::List { tag, .. } = purpose {
                    self.answer(tag, Err(Failure::ListUnsupported));
                }
                continue;
            }
            let mut buf = [0u8; MAX_ENCODED_REQUEST];
            let Ok(len) = request.encode(&mut buf) else {
                // Unreachable: MAX_ENCODED_REQUEST holds every request.
                continue;
            };
            if let Speech::Noise(channel) = &mut self.speech {
                let mut sealed = [0u8; Channel::sealed_len(MAX_ENCODED_REQUEST)];
                let Ok(len) = channel.seal(&buf[..len], &mut sealed) else {
                    // Unreachable: the channel is established (checked above).
                    continue;
                };
                self.outbox.extend_from_slice(&sealed[..len]);
            } else {
                self.outbox.extend_from_slice(&buf[..len]);
            }
            self.sent.push_back(Sent { purpose, at: now });
            self.last_request = now;
        }
        let unsent = self.outbox.len() + self.queued.len() * MAX_ENCODED_REQUEST;
        if unsent > UNSENT_LIMIT {
            self.fail(now, Loss::NotReading);
        }
    }

    /// Takes every complete response out of the receive buffer, in order.
    fn take_replies(&mut self, now: Instant) {
        while self.state == State::Open {
            let reply = match self.frames.next_frame() {
                None => break,
                Some(Frame::Invalid(error)) => Err(error),
                Some(Frame::Object(bytes)) => Ok(Reply::parse(bytes)),
            };
            let reply = match reply {
                Ok(reply) => reply,
                // The stream is no longer cut where the server's responses end: no later
                // response can be matched to its request.
                Err(error) => return self.fail(now, Loss::Garbled(error)),
            };
            let Some(sent) = self.sent.pop_front() else {
                let (what, reason) = match &reply {
                    Ok(Reply::Error { reason }) => ("an error", reason.clone()),
                    Ok(reply) => (reply.kind(), ServerText::default()),
                    Err(_) => ("an unreadable response", ServerText::default()),
                };
                return self.fail(now, Loss::Unsolicited { what, reason });
            };
            self.dispatch(now, sent.purpose, reply);
        }
        self.pump(now);
    }

    /// Acts on the answer to one request.
    fn dispatch(&mut self, now: Instant, purpose: Purpose<T>, reply: Result<Reply, ReplyError>) {
        match purpose {
            Purpose::Register => match reply {
                Ok(Reply::Registered { server }) => {
                    self.registered = true;
                    self.server = Some(server);
                    self.backoff_ms = BACKOFF_INITIAL_MS;
                    self.refused_backoff_ms = REFUSED_BACKOFF_INITIAL_MS;
                    self.lost_at = None;
                    self.outage = None;
                    self.events.push_back(Event::Registered { server });
                }
                other => {
                    let refusal = match other {
                        Ok(Reply::NameTaken { reason }) => Refusal::NameTaken(reason),
                        Ok(Reply::Error { reason }) => Refusal::Error(reason),
                        Ok(reply) => Refusal::Unexpected(reply.kind()),
                        Err(error) => Refusal::BadReply(error),
                    };
                    self.fail(now, Loss::Refused(refusal));
                }
            },
            Purpose::Key => match reply {
                Ok(Reply::Key(key)) => {
                    if let Some(security) = self.security.as_mut() {
                        security.server = Some(ServerKey {
                            key,
                            configured: false,
                        });
                    }
                    self.events.push_back(Event::ServerKeyLearned(key));
                    // Again at once, through Noise; the REG waiting goes on that one.
                    self.links.push_back(Link::Close);
                    self.frames = FrameBuffer::new();
                    self.outbox.clear();
                    // The phone's queries wait for the next connection (which makes its
                    // own REG); nothing but KEY was sent on this one.
                    self.queued
                        .retain(|q| !matches!(q.purpose, Purpose::Register));
                    self.sent.clear();
                    self.speech = Speech::Plain;
                    self.state = State::Waiting { retry_at: now };
                }
                other => {
                    let said = match other {
                        Ok(Reply::Error { reason }) => reason,
                        Ok(reply) => ServerText::new(reply.kind()),
                        Err(error) => ServerText::new(&std::format!("{error}")),
                    };
                    self.speech = Speech::Plain;
                    // News once: every connection asks again (the server may be upgraded
                    // meanwhile), and a server that stays as it is is no news.
                    if !self.unencrypted {
                        self.unencrypted = true;
                        self.events.push_back(Event::Unencrypted(said));
                    }
                }
            },
            // Any answer shows that the server is alive, which is all a PING asks.
            Purpose::Ping => {}
            Purpose::Disconnect => {
                let result = match reply {
                    Ok(Reply::Disconnected) => {
                        self.registered = false;
                        Ok(())
                    }
                    other => Err(failure(other)),
                };
                self.events.push_back(Event::Disconnected(result));
            }
            Purpose::Lookup(tag) => {
                let result = match reply {
                    Ok(Reply::Found(contact)) => Ok(Answer::Found(contact)),
                    Ok(Reply::NotFound) => Ok(Answer::NotFound),
                    other => Err(failure(other)),
                };
                self.answer(tag, result);
            }
            Purpose::List {
                tag,
                mut names,
                offset,
                pages,
            } => {
                let (page, more) = match reply {
                    Ok(Reply::Users { names: page, more }) => (page, more),
                    other => return self.answer(tag, Err(failure(other))),
                };
                let room = LIST_MAX_NAMES.saturating_sub(names.len());
                let cut = page.len() > room;
                names.extend(page.iter().take(room).cloned());
                let pages = pages.saturating_add(1);
                let go_on = more
                    && !cut
                    && !page.is_empty()
                    && names.len() < LIST_MAX_NAMES
                    && pages < LIST_MAX_PAGES;
                if go_on {
                    // A page holds at most LIST_PAGE names: the cast cannot truncate.
                    let offset = offset.saturating_add(page.len() as u32);
                    self.queued.push_back(Queued {
                        request: Request::List {
                            after: page.last().cloned(),
                            offset,
                        },
                        purpose: Purpose::List {
                            tag,
                            names,
                            offset,
                            pages,
                        },
                    });
                } else {
                    let complete = !more && !cut;
                    self.answer(tag, Ok(Answer::Users { names, complete }));
                }
            }
        }
    }

    fn answer(&mut self, tag: T, result: Result<Answer, Failure>) {
        self.events.push_back(Event::Answer { tag, result });
    }

    /// A random delay in `[0, bound)` milliseconds.
    fn jitter_below(&mut self, bound: u64) -> u64 {
        // Any 32 random bits will do: a delay need not be secret, only differ from the
        // other phones'. The modulo's bias (below 1 in 4 million) does not matter.
        u64::from(self.jitter.next_call_id().0) % bound.max(1)
    }

    /// Drops the connection: every request waiting is answered, and the next attempt is
    /// scheduled (unless the phone quit).
    fn fail(&mut self, now: Instant, reason: Loss) {
        if matches!(
            self.state,
            State::Opening { .. } | State::Connecting { .. } | State::Open
        ) {
            self.links.push_back(Link::Close);
        }
        self.frames = FrameBuffer::new();
        self.outbox.clear();
        self.server = None;
        self.speech = Speech::Plain;
        let was_registered = core::mem::replace(&mut self.registered, false);
        let sent = core::mem::take(&mut self.sent)
            .into_iter()
            .map(|s| s.purpose);
        let queued = core::mem::take(&mut self.queued)
            .into_iter()
            .map(|q| q.purpose);
        for purpose in sent.chain(queued) {
            let lost = Failure::Lost(reason.clone());
            match purpose {
                Purpose::Register | Purpose::Ping | Purpose::Key => {}
                Purpose::Disconnect => self.events.push_back(Event::Disconnected(Err(lost))),
                Purpose::Lookup(tag) | Purpose::List { tag, .. } => self.answer(tag, Err(lost)),
            }
        }
        if self.quitting {
            self.state = State::Stopped;
            self.events.push_back(Event::Lost {
                reason,
                retry: None,
                announce: false,
            });
            return;
        }
        let (after_ms, outage) = match &reason {
            Loss::Refused(refusal) => {
                let after_ms = self.refused_backoff_ms;
                self.refused_backoff_ms = after_ms.saturating_mul(2).min(REFUSED_BACKOFF_CAP_MS);
                (after_ms, Outage::Refused(refusal.clone()))
            }
            _ if was_registered => {
                self.lost_at = Some(now);
                self.backoff_ms = BACKOFF_INITIAL_MS;
                (self.jitter_below(RECONNECT_JITTER_MS), Outage::Away)
            }
            _ => {
                let cap = match self.lost_at {
                    Some(lost) if now < lost.after(RECONNECT_WINDOW_MS) => RECONNECT_CAP_MS,
                    _ => BACKOFF_CAP_MS,
                };
                let after_ms = self.backoff_ms.min(cap);
                self.backoff_ms = after_ms.saturating_mul(2).min(BACKOFF_CAP_MS);
                (after_ms, Outage::Away)
            }
        };
        let announce = self.outage.as_ref() != Some(&outage);
        self.outage = Some(outage);
        let at = now.after(after_ms);
        self.state = State::Waiting { retry_at: at };
        self.events.push_back(Event::Lost {
            reason,
            retry: Some(Retry { at, after_ms }),
            announce,
        });
    }
}

/// Why an answer is not the one asked for.
fn failure(reply: Result<Reply, ReplyError>) -> Failure {
    match reply {
        Ok(Reply::Error { reason }) => Failure::Refused(reason),
        Ok(reply) => Failure::Unexpected(reply.kind()),
        Err(error) => Failure::BadReply(error),
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotConnected => f.write_str("not connected to the directory server"),
            Failure::ListUnsupported => f.write_str(
                "the directory server does not support listing (it did not say it is Parlo's: \
                 an original server)",
            ),
            Failure::Refused(reason) if reason.is_empty() => f.write_str("the server refused"),
            Failure::Refused(reason) => write!(f, "the server refused: {reason}"),
            Failure::Unexpected(what) => write!(f, "unexpected answer ({what})"),
            Failure::BadReply(error) => error.fmt(f),
            Failure::Lost(loss) => write!(f, "the directory server {loss}"),
        }
    }
}

impl core::error::Error for Failure {}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Unreachable(why) => write!(f, "cannot be reached: {why}"),
            Loss::LookupTimeout => write!(
                f,
                "cannot be looked up: no answer within {} s",
                LOOKUP_TIMEOUT_MS / 1000
            ),
            Loss::ConnectTimeout => write!(
                f,
                "cannot be reached: no answer within {} s",
                CONNECT_TIMEOUT_MS / 1000
            ),
            Loss::Closed => f.write_str("closed the connection"),
            Loss::Failed(why) => write!(f, "was lost: {why}"),
            Loss::Stuck => write!(f, "did not answer within {} s", ANSWER_TIMEOUT_MS / 1000),
            Loss::NotReading => write!(
                f,
                "does not read its requests (more than {} KiB waiting)",
                UNSENT_LIMIT / 1024
            ),
            Loss::Garbled(error) => {
                f.write_str("sent something that is not a response: ")?;
                match error {
                    RequestError::TooLong => {
                        write!(f, "a response longer than {MAX_REQUEST} bytes")
                    }
                    RequestError::NotAnObject => f.write_str("bytes outside a JSON object"),
                    RequestError::UnterminatedString => f.write_str("a line ended inside a string"),
                    other => other.fmt(f),
                }
            }
            Loss::Unsolicited { what, reason } if reason.is_empty() => {
                write!(f, "sent an answer nobody asked for ({what})")
            }
            Loss::Unsolicited { what, reason } => {
                write!(f, "sent an answer nobody asked for ({what}: {reason})")
            }
            Loss::Refused(refusal) => write!(f, "refused our registration: {refusal}"),
        }
    }
}

impl core::error::Error for Loss {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NameTaken(reason) if reason.is_empty() => {
                f.write_str("the name is registered by another phone")
            }
            Refusal::NameTaken(reason) => write!(f, "the name is taken ({reason})"),
            Refusal::Error(reason) if reason.is_empty() => f.write_str("refused"),
            Refusal::Error(reason) => reason.fmt(f),
            Refusal::Unexpected(what) => write!(f, "unexpected answer ({what})"),
            Refusal::BadReply(error) => error.fmt(f),
            Refusal::ServerKey(ServerKey { key, configured }) => write!(
                f,
                "it did not complete the encrypted handshake for the key {} (fingerprint {}, \
                 {}): it holds another key, or is another server, or speaks no encryption; \
                 nothing is sent to it in plain text. Check `parlo-server id` on the server{}",
                key,
                fingerprint(key),
                if *configured {
                    "given with --server-key"
                } else {
                    "pinned on first contact"
                },
                if *configured {
                    ""
                } else {
                    " and, if its key changed on purpose, remove the pin"
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::string::ToString;
    use std::vec;

    use crate::directory::{DEFAULT_PEER_PORT, Dialect, ServerKind};

    /// The phone's note of why it asked, in these tests a number.
    type Tag = u32;

    /// The seed of the reconnection delays in these tests.
    const SEED: u64 = 7;

    const REG_ALICE: &str = "{\"command\":\"REG\",\"name\":\"alice\",\"port\":5001}\n";
    const PARLO_REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n";
    /// The original server's answer: Python's spacing, no newline, no "server".
    const ORIGINAL_REGISTERED: &str = "{\"ack\": \"Registered successfully\"}";

    fn at(ms: u64) -> Instant {
        Instant(ms)
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("test names are valid")
    }

    fn get(who: &str) -> String {
        format!("{{\"command\":\"GET\",\"name\":\"{who}\"}}\n")
    }

    fn contact(last: u8, port: u16, dialect: Option<Dialect>) -> Contact {
        Contact {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
            dialect,
            key: None,
        }
    }

    /// Everything the client has to write, as text, reported written.
    fn written(client: &mut Client<Tag>) -> String {
        let bytes = client
            .poll_transmit()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        client.handle_written(bytes.len());
        String::from_utf8(bytes).expect("requests are UTF-8")
    }

    fn links(client: &mut Client<Tag>) -> Vec<Link> {
        core::iter::from_fn(|| client.poll_link()).collect()
    }

    fn events(client: &mut Client<Tag>) -> Vec<Event<Tag>> {
        core::iter::from_fn(|| client.poll_event()).collect()
    }

    fn receive(client: &mut Client<Tag>, ms: u64, text: &str) {
        client.handle_received(at(ms), text.as_bytes());
    }

    fn ask(client: &mut Client<Tag>, ms: u64, who: &str, tag: Tag) {
        client.handle_query(at(ms), Query::Lookup(name(who)), tag);
    }

    // The result an event carries, built the same way: its size is the event's.
    #[allow(clippy::result_large_err)]
    fn lost(loss: Loss) -> Result<Answer, Failure> {
        Err(Failure::Lost(loss))
    }

    /// The first attempt, at 0 ms, with the TCP connection under way.
    fn connecting() -> Client<Tag> {
        let mut client = Client::new(name("alice"), 5001, SEED, at(0));
        assert_eq!(client.poll_timeout(), Some(at(0)));
        client.handle_timeout(at(0));
        assert_eq!(links(&mut client), [Link::Connect]);
        client.handle_connecting(at(0));
        client
    }

    /// Connected at 0 ms; REG written.
    fn connected() -> Client<Tag> {
        let mut client = connecting();
        client.handle_connected(at(0));
        assert_eq!(written(&mut client), REG_ALICE);
        assert!(client.is_connected() && !client.is_registered());
        client
    }

    /// Registered at 10 ms with a server that answered `answer`.
    fn registered(answer: &str, server: ServerKind) -> Client<Tag> {
        let mut client = connected();
        receive(&mut client, 10, answer);
        assert_eq!(events(&mut client), [Event::Registered { server }]);
        assert!(client.is_registered());
        assert_eq!(client.server(), Some(server));
        client
    }

    fn registered_parlo() -> Client<Tag> {
        registered(PARLO_REGISTERED, ServerKind::Parlo)
    }

    fn registered_original() -> Client<Tag> {
        registered(ORIGINAL_REGISTERED, ServerKind::Original)
    }

    /// The one `Lost` event expected after the answers to the requests that waited.
    fn expect_lost(events: &[Event<Tag>]) -> (Loss, Option<Retry>, bool) {
        match events.last() {
            Some(Event::Lost {
                reason,
                retry,
                announce,
            }) => (reason.clone(), *retry, *announce),
            other => panic!("expected a loss last, got {other:?} in {events:?}"),
        }
    }

    mod connecting {
        use super::*;

        #[test]
        fn registers_with_the_udp_port_as_soon_as_connected() {
            let mut client = Client::<Tag>::new(name("door"), 6000, SEED, at(0));
            client.handle_timeout(at(0));
            assert_eq!(links(&mut client), [Link::Connect]);
            client.handle_connected(at(4));
            assert_eq!(
                written(&mut client),
                "{\"command\":\"REG\",\"name\":\"door\",\"port\":6000}\n"
            );
            assert_eq!(client.poll_timeout(), Some(at(4 + ANSWER_TIMEOUT_MS)));
        }

        #[test]
        fn a_connection_not_made_in_3_s_is_given_up() {
            let mut client = connecting();
            client.handle_timeout(at(2_000));
            assert_eq!(client.poll_timeout(), Some(at(CONNECT_TIMEOUT_MS)));
            assert!(events(&mut client).is_empty());
            client.handle_timeout(at(CONNECT_TIMEOUT_MS));
            assert_eq!(links(&mut client), [Link::Close]);
            let (reason, retry, announce) = expect_lost(&events(&mut client));
            assert_eq!(reason, Loss::ConnectTimeout);
            assert_eq!(
                retry,
                Some(Retry {
                    at: at(CONNECT_TIMEOUT_MS + BACKOFF_INITIAL_MS),
                    after_ms: BACKOFF_INITIAL_MS
                })
            );
            assert!(announce);
            assert_eq!(
                reason.to_string(),
                "cannot be reached: no answer within 3 s"
            );
        }

        #[test]
        fn a_host_name_not_looked_up_in_10_s_is_given_up() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            client.handle_timeout(at(0));
            assert_eq!(links(&mut client), [Link::Connect]);
            assert_eq!(client.poll_timeout(), Some(at(LOOKUP_TIMEOUT_MS)));
            client.handle_timeout(at(LOOKUP_TIMEOUT_MS));
            assert_eq!(links(&mut client), [Link::Close]);
            let (reason, ..) = expect_lost(&events(&mut client));
            assert_eq!(reason, Loss::LookupTimeout);
        }

        #[test]
        fn failures_back_off_1_2_4_8_16_30_s_and_only_the_first_is_news() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            let mut now = 0;
            let mut delays = Vec::new();
            let mut news = Vec::new();
            for _ in 0..8 {
                assert_eq!(client.poll_timeout(), Some(at(now)));
                client.handle_timeout(at(now));
                assert_eq!(links(&mut client), [Link::Connect]);
                client.handle_failed(at(now), "connection refused");
                assert_eq!(links(&mut client), [Link::Close]);
                let (reason, retry, announce) = expect_lost(&events(&mut client));
                assert_eq!(reason, Loss::Unreachable("connection refused".into()));
                let retry = retry.expect("a next attempt");
                assert_eq!(retry.at, at(now + retry.after_ms));
                delays.push(retry.after_ms / 1000);
                news.push(announce);
                now = retry.at.0;
            }
            assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
            assert_eq!(
                news,
                [true, false, false, false, false, false, false, false]
            );
        }

        #[test]
        fn registering_resets_the_delay_and_the_next_outage_is_news_again() {
            let mut client = connecting();
            client.handle_failed(at(0), "refused");
            let _ = (links(&mut client), events(&mut client));
            client.handle_timeout(at(1_000));
            client.handle_failed(at(1_000), "refused");
            let (_, retry, _) = expect_lost(&events(&mut client));
            assert_eq!(retry.map(|r| r.after_ms), Some(2_000));
            let _ = links(&mut client);
            client.handle_timeout(at(3_000));
            client.handle_connected(at(3_000));
            let _ = (links(&mut client), written(&mut client));
            receive(&mut client, 3_010, PARLO_REGISTERED);
            assert!(matches!(
                events(&mut client)[..],
                [Event::Registered { .. }]
            ));
            client.handle_closed(at(5_000));
            let (reason, retry, announce) = expect_lost(&events(&mut client));
            assert_eq!(reason, Loss::Closed);
            let retry = retry.expect("a next attempt");
            assert!(retry.after_ms < RECONNECT_JITTER_MS, "at once: {retry:?}");
            assert!(announce);
            // The server is not back yet: the delay starts again from the first.
            let _ = links(&mut client);
            client.handle_timeout(retry.at);
            client.handle_failed(retry.at, "refused");
            let (_, again, announce) = expect_lost(&events(&mut client));
            assert_eq!(again.map(|r| r.after_ms), Some(BACKOFF_INITIAL_MS));
            assert!(!announce);
        }

        #[test]
        fn reports_about_a_connection_already_given_up_are_ignored() {
            let mut client = connecting();
            client.handle_timeout(at(CONNECT_TIMEOUT_MS));
            let _ = (links(&mut client), events(&mut client));
            client.handle_connected(at(3_001));
            client.handle_received(at(3_001), PARLO_REGISTERED.as_bytes());
            client.handle_failed(at(3_002), "late");
            assert!(!client.is_connected());
            assert!(links(&mut client).is_empty() && events(&mut client).is_empty());
            assert_eq!(written(&mut client), "");
        }
    }

    mod registering {
        use super::*;

        #[test]
        fn a_parlo_server_says_so_and_an_original_does_not() {
            let _ = registered_parlo();
            let _ = registered_original();
        }

        #[test]
        fn a_name_taken_closes_and_retries_with_the_reason_escaped() {
            let mut client = connected();
            receive(
                &mut client,
                10,
                r#"{"ack":"Error Registering","reason":"\u001b[31m\"alice\" is taken\u001b[0m"}"#,
            );
            assert_eq!(links(&mut client), [Link::Close]);
            let (reason, retry, announce) = expect_lost(&events(&mut client));
            let Loss::Refused(Refusal::NameTaken(said)) = &reason else {
                panic!("a refusal: {reason:?}");
            };
            assert_eq!(said.as_str(), r#"\u{1b}[31m"alice" is taken\u{1b}[0m"#);
            let text = reason.to_string();
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert_eq!(
                text,
                r#"refused our registration: the name is taken (\u{1b}[31m"alice" is taken\u{1b}[0m)"#
            );
            assert_eq!(
                retry.map(|r| r.at),
                Some(at(10 + REFUSED_BACKOFF_INITIAL_MS))
            );
            assert!(announce);
            assert!(!client.is_registered() && !client.is_connected());
            // The next attempt registers again; refused again, it is not news again.
            client.handle_timeout(at(5_010));
            assert_eq!(links(&mut client), [Link::Connect]);
            client.handle_connected(at(5_011));
            assert_eq!(written(&mut client), REG_ALICE);
            receive(
                &mut client,
                5_020,
                r#"{"ack":"Error Registering","reason":"\u001b[31m\"alice\" is taken\u001b[0m"}"#,
            );
            let (_, retry, announce) = expect_lost(&events(&mut client));
            assert_eq!(retry.map(|r| r.after_ms), Some(10_000));
            assert!(!announce);
            // Refused in other words, it is news again.
            client.handle_timeout(at(15_020));
            client.handle_connected(at(15_021));
            receive(&mut client, 15_030, r#"{"ack": "Error Registering"}"#);
            let (reason, retry, announce) = expect_lost(&events(&mut client));
            assert_eq!(
                reason.to_string(),
                "refused our registration: the name is registered by another phone"
            );
            assert_eq!(retry.map(|r| r.after_ms), Some(20_000));
            assert!(announce);
        }

        #[test]
        fn any_other_answer_to_reg_is_a_refusal() {
            for (answer, expected) in [
                (
                    r#"{"ack":"Error","reason":"name is empty"}"#,
                    Refusal::Error(ServerText::new("name is empty")),
                ),
                (r#"{"ack":"PONG"}"#, Refusal::Unexpected("PONG")),
                (
                    r#"{"ack":"Welcome"}"#,
                    Refusal::BadReply(
                        Reply::parse(br#"{"ack":"Welcome"}"#).expect_err("unknown ack"),
                    ),
                ),
            ] {
                let mut client = connected();
                receive(&mut client, 10, answer);
                let (reason, ..) = expect_lost(&events(&mut client));
                assert_eq!(reason, Loss::Refused(expected), "{answer}");
            }
        }
    }

    mod backoff {
        use super::*;

        /// How an attempt ends in these tests.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Outcome {
            /// The connection cannot be made.
            Unreachable,
            /// REG is answered "Error Registering".
            NameTaken,
            /// REG is answered "Error", saying why.
            Refused,
        }

        /// Makes the attempt due at `now` end as `how`; returns the next attempt and
        /// whether the loss was news.
        fn attempt(client: &mut Client<Tag>, now: u64, how: Outcome) -> (Retry, bool) {
            assert_eq!(client.poll_timeout(), Some(at(now)));
            client.handle_timeout(at(now));
            assert_eq!(links(client), [Link::Connect]);
            match how {
                Outcome::Unreachable => client.handle_failed(at(now), "connection refused"),
                Outcome::NameTaken | Outcome::Refused => {
                    client.handle_connected(at(now));
                    assert_eq!(written(client), REG_ALICE);
                    let answer = match how {
                        Outcome::NameTaken => r#"{"ack":"Error Registering"}"#,
                        _ => r#"{"ack":"Error","reason":"no such key"}"#,
                    };
                    receive(client, now, answer);
                }
            }
            assert_eq!(links(client), [Link::Close]);
            let (_, retry, announce) = expect_lost(&events(client));
            let retry = retry.expect("a next attempt");
            assert_eq!(retry.at, at(now + retry.after_ms));
            (retry, announce)
        }

        /// `client` registered at `now`.
        fn register(client: &mut Client<Tag>, now: u64) {
            client.handle_timeout(at(now));
            assert_eq!(links(client), [Link::Connect]);
            client.handle_connected(at(now));
            let _ = written(client);
            receive(client, now, PARLO_REGISTERED);
            assert!(client.is_registered());
            let _ = events(client);
        }

        /// The delays, in seconds, of `count` attempts from `start` all ending as `how`,
        /// with whether each loss was news; the time of the next attempt.
        fn delays(
            client: &mut Client<Tag>,
            start: u64,
            count: usize,
            how: Outcome,
        ) -> (Vec<u64>, Vec<bool>, u64) {
            let mut now = start;
            let (mut delays, mut news) = (Vec::new(), Vec::new());
            for _ in 0..count {
                let (retry, announce) = attempt(client, now, how);
                delays.push(retry.after_ms / 1000);
                news.push(announce);
                now = retry.at.0;
            }
            (delays, news, now)
        }

        #[test]
        fn refusals_back_off_5_s_doubling_to_5_min_and_only_the_first_is_news() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            let (delays, news, _) = delays(&mut client, 0, 9, Outcome::NameTaken);
            assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
            assert_eq!(
                news,
                [true, false, false, false, false, false, false, false, false]
            );
        }

        #[test]
        fn a_change_between_away_and_refused_is_news_each_time() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            let (_, first, now) = delays(&mut client, 0, 2, Outcome::Unreachable);
            assert_eq!(first, [true, false]);
            // The server comes back, but the name is taken: news, and its own delay.
            let (refused, news, now) = delays(&mut client, now, 2, Outcome::NameTaken);
            assert_eq!((refused, news), (vec![5, 10], vec![true, false]));
            // Refused for another reason: news again, the refusal delay goes on doubling.
            let (refused, news, now) = delays(&mut client, now, 1, Outcome::Refused);
            assert_eq!((refused, news), (vec![20], vec![true]));
            // The server goes away: news again, its delay goes on where it was.
            let (away, news, _) = delays(&mut client, now, 2, Outcome::Unreachable);
            assert_eq!((away, news), (vec![4, 8], vec![true, false]));
        }

        #[test]
        fn a_registration_resets_the_refusal_delay() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            let (_, _, now) = delays(&mut client, 0, 3, Outcome::NameTaken);
            register(&mut client, now);
            client.handle_closed(at(now + 10));
            let retry = expect_lost(&events(&mut client)).1.expect("a next attempt");
            let _ = links(&mut client);
            let (refused, news, _) = delays(&mut client, retry.at.0, 1, Outcome::NameTaken);
            assert_eq!((refused, news), (vec![5], vec![true]));
        }

        #[test]
        fn a_lost_registration_is_retried_at_once_each_phone_at_its_own_moment() {
            let mut firsts = Vec::new();
            for seed in 0..16 {
                let mut client = Client::<Tag>::new(name("alice"), 5001, seed, at(0));
                register(&mut client, 0);
                client.handle_closed(at(1_000));
                assert_eq!(links(&mut client), [Link::Close]);
                let (reason, retry, announce) = expect_lost(&events(&mut client));
                assert_eq!(reason, Loss::Closed);
                assert!(announce);
                let retry = retry.expect("a next attempt");
                assert!(retry.after_ms < RECONNECT_JITTER_MS, "{retry:?}");
                firsts.push(retry.after_ms);
            }
            firsts.sort_unstable();
            firsts.dedup();
            assert!(
                firsts.len() >= 12,
                "phones spread over the second: {firsts:?}"
            );
            // The same seed, the same delay: the randomness is the seed's alone.
            let delay = |seed| {
                let mut client = Client::<Tag>::new(name("alice"), 5001, seed, at(0));
                register(&mut client, 0);
                client.handle_failed(at(7), "connection reset by peer");
                expect_lost(&events(&mut client)).1.map(|r| r.after_ms)
            };
            assert_eq!(delay(3), delay(3));
        }

        #[test]
        fn after_a_lost_registration_retries_stay_within_3_s_for_5_min_then_back_off_to_30_s() {
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            register(&mut client, 0);
            let lost = 60_000;
            client.handle_closed(at(lost));
            let _ = links(&mut client);
            let first = expect_lost(&events(&mut client)).1.expect("a next attempt");
            let (early, news, _) = delays(&mut client, first.at.0, 6, Outcome::Unreachable);
            assert_eq!(early, [1, 2, 3, 3, 3, 3]);
            assert_eq!(news, [false; 6], "one outage, told once");
            // Gone for 5 minutes: a server that is not coming back soon.
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            register(&mut client, 0);
            client.handle_closed(at(lost));
            let _ = (links(&mut client), events(&mut client));
            let mut now = client.poll_timeout().expect("a retry").0;
            while now < lost + RECONNECT_WINDOW_MS {
                now = attempt(&mut client, now, Outcome::Unreachable).0.at.0;
            }
            let (late, _, _) = delays(&mut client, now, 5, Outcome::Unreachable);
            assert_eq!(late, [6, 12, 24, 30, 30]);
        }
    }

    mod queries {
        use super::*;

        #[test]
        fn a_lookup_answer_gives_the_callee_s_key() {
            let mut client = registered_parlo();
            ask(&mut client, 20, "bob", 1);
            ask(&mut client, 20, "carol", 2);
            let _ = written(&mut client);
            let key = parlo_fsm::PublicKey([9; 32]);
            receive(
                &mut client,
                30,
                &format!(
                    "{{\"ip\":\"10.0.0.2\",\"port\":5001,\"dialect\":\"parlo\",\"key\":\"{key}\"}}\n\
                     {{\"ip\":\"10.0.0.3\",\"key\":\"not a key\"}}\n"
                ),
            );
            let answers = events(&mut client);
            assert_eq!(
                answers[0],
                Event::Answer {
                    tag: 1,
                    result: Ok(Answer::Found(Contact {
                        key: Some(key),
                        ..contact(2, 5001, Some(Dialect::Parlo))
                    }))
                }
            );
            assert!(
                matches!(
                    &answers[1],
                    Event::Answer {
                        tag: 2,
                        result: Err(Failure::BadReply(ReplyError::BadKey(_)))
                    }
                ),
                "{answers:?}"
            );
        }

        #[test]
        fn requests_in_flight_are_answered_in_order() {
            let mut client = registered_parlo();
            ask(&mut client, 20, "bob", 1);
            ask(&mut client, 20, "carol", 2);
            ask(&mut client, 21, "dave", 3);
            // A Parlo server gets them back to back.
            assert_eq!(
                written(&mut client),
                get("bob") + &get("carol") + &get("dave")
            );
            assert!(client.has_pending());
            // Two answers and the start of the third in one read, the rest in another.
            receive(
                &mut client,
                30,
                "{\"ip\":\"10.0.0.2\",\"port\":5001,\"dialect\":\"parlo\"}\n{\"ip\":\"None\"}\n{\"ip\":\"10.0.0.4\"",
            );
            assert_eq!(
                events(&mut client),
                [
                    Event::Answer {
                        tag: 1,
                        result: Ok(Answer::Found(contact(2, 5001, Some(Dialect::Parlo))))
                    },
                    Event::Answer {
                        tag: 2,
                        result: Ok(Answer::NotFound)
                    },
                ]
            );
            receive(
                &mut client,
                31,
                ",\"port\":6000,\"dialect\":\"original\"}\n",
            );
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 3,
                    result: Ok(Answer::Found(contact(4, 6000, Some(Dialect::Original))))
                }]
            );
            assert!(!client.has_pending());
        }

        #[test]
        fn an_original_server_gets_one_request_at_a_time() {
            let mut client = registered_original();
            ask(&mut client, 20, "bob", 1);
            ask(&mut client, 20, "carol", 2);
            assert_eq!(written(&mut client), get("bob"));
            receive(&mut client, 30, r#"{"ip": "10.0.0.2"}"#);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 1,
                    result: Ok(Answer::Found(contact(2, DEFAULT_PEER_PORT, None)))
                }]
            );
            assert_eq!(written(&mut client), get("carol"));
            receive(&mut client, 40, r#"{"ip": "None"}"#);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 2,
                    result: Ok(Answer::NotFound)
                }]
            );
        }

        #[test]
        fn before_the_server_says_what_it_is_requests_wait_for_the_reg_answer() {
            let mut client = connected();
            ask(&mut client, 1, "bob", 1);
            ask(&mut client, 1, "carol", 2);
            assert_eq!(written(&mut client), "", "REG is still unanswered");
            receive(&mut client, 10, PARLO_REGISTERED);
            let _ = events(&mut client);
            assert_eq!(written(&mut client), get("bob") + &get("carol"));
        }

        #[test]
        fn refusals_and_odd_answers_reach_the_asker_and_the_connection_goes_on() {
            let mut client = registered_parlo();
            ask(&mut client, 20, "bob", 1);
            ask(&mut client, 20, "carol", 2);
            ask(&mut client, 20, "dave", 3);
            let _ = written(&mut client);
            receive(
                &mut client,
                30,
                "{\"ack\":\"Error\",\"reason\":\"\\u001b]0;owned\\u0007 no\"}\n{\"ack\":\"PONG\"}\n{\"ack\":\"Maybe\"}\n",
            );
            let events = events(&mut client);
            let [
                Event::Answer {
                    tag: 1,
                    result: Err(Failure::Refused(said)),
                },
                Event::Answer {
                    tag: 2,
                    result: Err(Failure::Unexpected("PONG")),
                },
                Event::Answer {
                    tag: 3,
                    result: Err(Failure::BadReply(ReplyError::UnknownAck(_))),
                },
            ] = &events[..]
            else {
                panic!("{events:?}");
            };
            assert_eq!(said.as_str(), r"\u{1b}]0;owned\u{7} no");
            let printed = Failure::Refused(said.clone()).to_string();
            assert_eq!(printed, r"the server refused: \u{1b}]0;owned\u{7} no");
            assert!(client.is_connected() && client.is_registered());
        }

        #[test]
        fn a_query_without_a_connection_is_answered_at_once() {
            let mut client = connecting();
            ask(&mut client, 1, "bob", 7);
            client.handle_query(at(1), Query::List, 8);
            assert_eq!(
                events(&mut client),
                [
                    Event::Answer {
                        tag: 7,
                        result: Err(Failure::NotConnected)
                    },
                    Event::Answer {
                        tag: 8,
                        result: Err(Failure::NotConnected)
                    },
                ]
            );
            assert_eq!(written(&mut client), "");
        }

        #[test]
        fn time_that_goes_backwards_is_taken_as_the_latest_seen() {
            let mut client = registered_parlo();
            ask(&mut client, 5_000, "bob", 1);
            receive(&mut client, 5_001, r#"{"ip":"None"}"#);
            ask(&mut client, 100, "carol", 2);
            assert_eq!(client.poll_timeout(), Some(at(5_001 + ANSWER_TIMEOUT_MS)));
        }
    }

    mod listing {
        use super::*;

        /// `count` names starting at `first`, as a page the server sends.
        fn page(first: usize, count: usize, more: bool) -> String {
            let names: Vec<String> = (first..first + count)
                .map(|i| format!("\"u{i:05}\""))
                .collect();
            format!("{{\"users\":[{}],\"more\":{more}}}\n", names.join(","))
        }

        /// Answers every LIST the client writes with `answer(offset)` until the client
        /// answers the phone; returns that answer and how many pages were asked.
        fn walk(
            client: &mut Client<Tag>,
            answer: impl Fn(usize) -> String,
        ) -> (Result<Answer, Failure>, usize) {
            client.handle_query(at(20), Query::List, 9);
            let mut pages = 0;
            for ms in 21.. {
                let asked = written(client);
                if asked.is_empty() {
                    break;
                }
                assert!(pages <= LIST_MAX_PAGES as usize, "asked without end");
                let offset: usize = asked
                    .split("\"offset\":")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches("}\n").parse().ok())
                    .unwrap_or(0);
                // Every page but the first is asked after the last name received too.
                let after = asked
                    .split("\"after\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next());
                let last = offset.checked_sub(1).map(|i| format!("u{i:05}"));
                assert_eq!(after, last.as_deref(), "{asked}");
                pages += 1;
                receive(client, ms, &answer(offset));
            }
            let events = events(client);
            let [Event::Answer { tag: 9, result }] = &events[..] else {
                panic!("one answer to the list: {events:?}");
            };
            (result.clone(), pages)
        }

        fn names(result: &Result<Answer, Failure>) -> (usize, bool) {
            match result {
                Ok(Answer::Users { names, complete }) => (names.len(), *complete),
                other => panic!("a list: {other:?}"),
            }
        }

        #[test]
        fn the_phone_asks_once_and_gets_every_page() {
            let mut client = registered_parlo();
            client.handle_query(at(20), Query::List, 9);
            assert_eq!(written(&mut client), "{\"command\":\"LIST\"}\n");
            receive(&mut client, 21, r#"{"users":["alice","bob"],"more":true}"#);
            assert!(events(&mut client).is_empty());
            // After the last name (the cursor), and by offset for a server of Parlo's
            // first version.
            assert_eq!(
                written(&mut client),
                "{\"command\":\"LIST\",\"after\":\"bob\",\"offset\":2}\n"
            );
            receive(&mut client, 22, r#"{"users":["carol"],"more":false}"#);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 9,
                    result: Ok(Answer::Users {
                        names: vec![name("alice"), name("bob"), name("carol")],
                        complete: true
                    })
                }]
            );
        }

        #[test]
        fn a_large_directory_comes_whole_up_to_the_limit() {
            let (result, pages) = walk(&mut registered_parlo(), |offset| {
                let count = 32.min(LIST_MAX_NAMES - offset);
                page(offset, count, offset + count < LIST_MAX_NAMES)
            });
            assert_eq!(names(&result), (LIST_MAX_NAMES, true));
            assert_eq!(pages, LIST_MAX_NAMES.div_ceil(32));
        }

        #[test]
        fn a_server_that_always_has_more_gets_a_cut_answer() {
            // Full pages: cut at the name limit.
            let (result, pages) = walk(&mut registered_parlo(), |offset| page(offset, 32, true));
            assert_eq!(names(&result), (LIST_MAX_NAMES, false));
            assert_eq!(pages, LIST_MAX_NAMES.div_ceil(32));
            // One name a page: cut at the page limit.
            let (result, pages) = walk(&mut registered_parlo(), |offset| page(offset, 1, true));
            assert_eq!(names(&result), (LIST_MAX_PAGES as usize, false));
            assert_eq!(pages, LIST_MAX_PAGES as usize);
            // Empty pages: cut at once.
            let (result, pages) = walk(&mut registered_parlo(), |_| page(0, 0, true));
            assert_eq!(names(&result), (0, false));
            assert_eq!(pages, 1);
        }

        #[test]
        fn an_original_server_is_never_asked_for_a_list() {
            let mut client = registered_original();
            client.handle_query(at(20), Query::List, 9);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 9,
                    result: Err(Failure::ListUnsupported)
                }]
            );
            assert_eq!(written(&mut client), "");
            // Nor when the list was asked before the server said what it is.
            let mut client = connected();
            client.handle_query(at(1), Query::List, 9);
            receive(&mut client, 10, ORIGINAL_REGISTERED);
            assert_eq!(
                events(&mut client),
                [
                    Event::Registered {
                        server: ServerKind::Original
                    },
                    Event::Answer {
                        tag: 9,
                        result: Err(Failure::ListUnsupported)
                    }
                ]
            );
            assert_eq!(written(&mut client), "");
            assert!(
                Failure::ListUnsupported
                    .to_string()
                    .contains("does not support listing")
            );
        }

        #[test]
        fn a_page_lost_with_the_connection_answers_the_list() {
            let mut client = registered_parlo();
            client.handle_query(at(20), Query::List, 9);
            receive(&mut client, 21, &page(0, 32, true));
            client.handle_closed(at(22));
            let events = events(&mut client);
            assert_eq!(
                events[0],
                Event::Answer {
                    tag: 9,
                    result: lost(Loss::Closed)
                }
            );
        }
    }

    mod idle {
        use super::*;

        #[test]
        fn a_parlo_server_gets_a_ping_after_60_s_without_a_request() {
            let mut client = registered_parlo();
            // REG, written at 0, was the last request.
            let due = PING_IDLE_MS;
            assert_eq!(client.poll_timeout(), Some(at(due)));
            client.handle_timeout(at(due - 1));
            assert_eq!(written(&mut client), "");
            client.handle_timeout(at(due));
            assert_eq!(written(&mut client), "{\"command\":\"PING\"}\n");
            assert_eq!(client.poll_timeout(), Some(at(due + ANSWER_TIMEOUT_MS)));
            receive(&mut client, due + 5, "{\"ack\":\"PONG\"}\n");
            assert!(events(&mut client).is_empty(), "a PONG is nobody's news");
            assert_eq!(client.poll_timeout(), Some(at(due + PING_IDLE_MS)));
        }

        #[test]
        fn a_request_puts_the_ping_off() {
            let mut client = registered_parlo();
            ask(&mut client, 30_000, "bob", 1);
            receive(&mut client, 30_010, r#"{"ip":"None"}"#);
            let _ = (written(&mut client), events(&mut client));
            assert_eq!(client.poll_timeout(), Some(at(30_000 + PING_IDLE_MS)));
        }

        #[test]
        fn an_unanswered_ping_means_a_stuck_server() {
            let mut client = registered_parlo();
            let due = PING_IDLE_MS;
            client.handle_timeout(at(due));
            let _ = written(&mut client);
            client.handle_timeout(at(due + ANSWER_TIMEOUT_MS));
            assert_eq!(links(&mut client), [Link::Close]);
            assert_eq!(expect_lost(&events(&mut client)).0, Loss::Stuck);
        }

        #[test]
        fn an_original_server_never_gets_a_ping() {
            let mut client = registered_original();
            assert_eq!(client.poll_timeout(), None);
            client.handle_timeout(at(100 * PING_IDLE_MS));
            assert_eq!(written(&mut client), "");
        }
    }

    mod losses {
        use super::*;

        #[test]
        fn a_server_that_goes_away_mid_request_answers_every_request_and_is_tried_again() {
            let mut client = registered_parlo();
            ask(&mut client, 20, "bob", 1);
            client.handle_query(at(20), Query::List, 2);
            let _ = written(&mut client);
            client.handle_closed(at(50));
            assert_eq!(links(&mut client), [Link::Close]);
            let events = events(&mut client);
            assert_eq!(
                events[..2],
                [
                    Event::Answer {
                        tag: 1,
                        result: lost(Loss::Closed)
                    },
                    Event::Answer {
                        tag: 2,
                        result: lost(Loss::Closed)
                    },
                ]
            );
            let (reason, retry, announce) = expect_lost(&events);
            assert_eq!(reason, Loss::Closed);
            let retry = retry.expect("a next attempt");
            assert!(retry.after_ms < RECONNECT_JITTER_MS, "{retry:?}");
            assert_eq!(retry.at, at(50 + retry.after_ms));
            assert!(announce);
            assert!(!client.is_registered() && !client.has_pending());
            assert_eq!(client.server(), None, "the next server may be another");
            assert_eq!(
                Failure::Lost(Loss::Closed).to_string(),
                "the directory server closed the connection"
            );
            assert_eq!(client.poll_timeout(), Some(retry.at));
            client.handle_timeout(retry.at);
            assert_eq!(links(&mut client), [Link::Connect]);
        }

        #[test]
        fn a_failed_connection_says_what_the_shell_saw() {
            let mut client = registered_parlo();
            client.handle_failed(at(50), "connection reset by peer");
            assert_eq!(links(&mut client), [Link::Close]);
            let (reason, ..) = expect_lost(&events(&mut client));
            assert_eq!(reason.to_string(), "was lost: connection reset by peer");
        }

        #[test]
        fn a_request_unanswered_for_10_s_means_a_stuck_server() {
            let mut client = registered_parlo();
            ask(&mut client, 100, "bob", 1);
            let _ = written(&mut client);
            assert_eq!(client.poll_timeout(), Some(at(100 + ANSWER_TIMEOUT_MS)));
            client.handle_timeout(at(99 + ANSWER_TIMEOUT_MS));
            assert!(events(&mut client).is_empty());
            client.handle_timeout(at(100 + ANSWER_TIMEOUT_MS));
            assert_eq!(links(&mut client), [Link::Close]);
            let events = events(&mut client);
            assert_eq!(
                events[0],
                Event::Answer {
                    tag: 1,
                    result: lost(Loss::Stuck)
                }
            );
            assert_eq!(expect_lost(&events).0, Loss::Stuck);
            assert_eq!(Loss::Stuck.to_string(), "did not answer within 10 s");
        }

        #[test]
        fn an_unanswered_reg_means_a_stuck_server_too() {
            let mut client = connected();
            client.handle_timeout(at(ANSWER_TIMEOUT_MS));
            assert_eq!(expect_lost(&events(&mut client)).0, Loss::Stuck);
        }

        #[test]
        fn a_server_that_does_not_read_is_dropped_past_the_unsent_limit() {
            let mut client = registered_parlo();
            // The shell never manages to write: the requests pile up.
            let mut tag = 0;
            while client.is_connected() {
                tag += 1;
                ask(&mut client, 20, "bob", tag);
                assert!(client.poll_transmit().map_or(0, <[u8]>::len) <= UNSENT_LIMIT);
            }
            let events = events(&mut client);
            assert_eq!(events.len(), tag as usize + 1, "every request answered");
            assert_eq!(expect_lost(&events).0, Loss::NotReading);
        }
    }

    mod malicious {
        use super::*;

        #[test]
        fn garbage_instead_of_a_response_drops_the_connection() {
            let mut client = registered_parlo();
            ask(&mut client, 20, "bob", 1);
            receive(&mut client, 30, "HTTP/1.1 400 Bad Request\r\n\r\n");
            assert_eq!(links(&mut client), [Link::Close]);
            let events = events(&mut client);
            let loss = Loss::Garbled(RequestError::NotAnObject);
            assert_eq!(
                events[0],
                Event::Answer {
                    tag: 1,
                    result: lost(loss.clone())
                }
            );
            assert_eq!(expect_lost(&events).0, loss);
        }

        #[test]
        fn an_oversized_response_drops_the_connection() {
            let mut client = registered_parlo();
            client.handle_query(at(20), Query::List, 1);
            let huge = format!("{{\"users\":[\"{}\"],\"more\":false}}\n", "x".repeat(5000));
            // In small reads, as a slow link delivers it.
            for chunk in huge.as_bytes().chunks(100) {
                client.handle_received(at(30), chunk);
            }
            let (reason, ..) = expect_lost(&events(&mut client));
            assert_eq!(reason, Loss::Garbled(RequestError::TooLong));
            assert_eq!(
                reason.to_string(),
                "sent something that is not a response: a response longer than 1024 bytes"
            );
        }

        #[test]
        fn a_response_nobody_asked_for_drops_the_connection() {
            let mut client = registered_parlo();
            receive(
                &mut client,
                30,
                "{\"ack\":\"Error\",\"reason\":\"nothing received for 60 s, closing\u{7}\"}\n",
            );
            assert_eq!(links(&mut client), [Link::Close]);
            let (reason, ..) = expect_lost(&events(&mut client));
            assert_eq!(
                reason.to_string(),
                r"sent an answer nobody asked for (an error: nothing received for 60 s, closing\u{7})"
            );
            // The rest of that read is not taken for answers.
            let mut client = registered_parlo();
            receive(&mut client, 30, "{\"ack\":\"PONG\"}\n{\"ip\":\"None\"}\n");
            assert_eq!(events(&mut client).len(), 1);
        }

        #[test]
        fn nothing_a_server_sends_makes_the_client_panic_or_hoard() {
            // Every cut of every kind of response, in every state the connection has.
            let inputs = [
                PARLO_REGISTERED,
                ORIGINAL_REGISTERED,
                "{\"ip\":\"10.0.0.1\",\"port\":0}",
                "{\"users\":[\"a b\"],\"more\":true}",
                "{\"users\":[],\"more\":true}",
                "}{]]\"\\\n{\"ack\":\"Error\"}",
                "\u{1b}[2J{\"ack\":\"\u{1b}\"}",
            ];
            for input in inputs {
                for cut in 0..input.len() {
                    let (first, second) = input.as_bytes().split_at(cut);
                    for mut client in [connected(), registered_parlo(), registered_original()] {
                        ask(&mut client, 20, "bob", 1);
                        client.handle_query(at(20), Query::List, 2);
                        client.handle_received(at(30), first);
                        client.handle_received(at(31), second);
                        let _ = (written(&mut client), links(&mut client));
                        let events = events(&mut client);
                        assert!(events.len() <= 4, "{input:?}: {events:?}");
                        for event in events {
                            let text = format!("{event:?}");
                            assert!(!text.contains('\u{1b}'), "{text}");
                        }
                    }
                }
            }
        }
    }

    mod quitting {
        use super::*;

        #[test]
        fn quit_sends_disconnect_and_no_connection_follows() {
            let mut client = registered_parlo();
            client.handle_quit(at(100));
            assert_eq!(
                written(&mut client),
                "{\"command\":\"DISCONNECT\",\"name\":\"alice\"}\n"
            );
            assert!(client.has_pending());
            ask(&mut client, 101, "bob", 1);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 1,
                    result: Err(Failure::NotConnected)
                }]
            );
            receive(&mut client, 110, "{\"ack\":\"Disconnected\"}\n");
            assert_eq!(events(&mut client), [Event::Disconnected(Ok(()))]);
            assert!(!client.has_pending() && !client.is_registered());
            assert_eq!(client.poll_timeout(), None, "no PING while quitting");
            client.handle_closed(at(120));
            assert_eq!(links(&mut client), [Link::Close]);
            assert_eq!(
                events(&mut client),
                [Event::Lost {
                    reason: Loss::Closed,
                    retry: None,
                    announce: false
                }]
            );
            client.handle_timeout(at(1_000_000));
            assert!(links(&mut client).is_empty());
        }

        #[test]
        fn quit_waits_its_turn_with_an_original_server() {
            let mut client = registered_original();
            ask(&mut client, 20, "bob", 1);
            client.handle_quit(at(21));
            assert_eq!(written(&mut client), get("bob"));
            receive(&mut client, 30, r#"{"ip": "None"}"#);
            assert_eq!(
                written(&mut client),
                "{\"command\":\"DISCONNECT\",\"name\":\"alice\"}\n"
            );
        }

        #[test]
        fn quit_without_a_connection_stops_at_once() {
            let mut client = connecting();
            client.handle_quit(at(1));
            assert_eq!(links(&mut client), [Link::Close]);
            assert_eq!(client.poll_timeout(), None);
            let mut client = Client::<Tag>::new(name("alice"), 5001, SEED, at(0));
            client.handle_quit(at(0));
            client.handle_timeout(at(0));
            assert!(links(&mut client).is_empty() && events(&mut client).is_empty());
        }
    }

    mod security {
        use super::*;
        use crate::noise::{Channel, MSG1_LEN, SecretKey};

        fn server_secret() -> SecretKey {
            SecretKey::from_bytes([1; 32])
        }

        fn security(server: Option<ServerKey>) -> Security {
            let mut draws = 0u8;
            Security {
                identity: SecretKey::from_bytes([2; 32]),
                server,
                entropy: Box::new(move || {
                    draws = draws.wrapping_add(1);
                    Some([draws; 32])
                }),
            }
        }

        fn pinned(key: PublicKey) -> Option<ServerKey> {
            Some(ServerKey {
                key,
                configured: false,
            })
        }

        /// Connected at 0 ms with `security`.
        fn connected_with(security: Security) -> Client<Tag> {
            let mut client = Client::new(name("alice"), 5001, SEED, at(0)).with_security(security);
            client.handle_timeout(at(0));
            assert_eq!(links(&mut client), [Link::Connect]);
            client.handle_connecting(at(0));
            client.handle_connected(at(0));
            client
        }

        /// The bytes the client has to write, reported written.
        fn wire(client: &mut Client<Tag>) -> Vec<u8> {
            let bytes = client
                .poll_transmit()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            client.handle_written(bytes.len());
            bytes
        }

        /// A server's end of the channel, fed `bytes`; returns the plaintext it read.
        fn server_reads(server: &mut Channel, mut bytes: &[u8]) -> Vec<u8> {
            let mut plain = Vec::new();
            loop {
                let taken = server.handle_received(bytes);
                bytes = &bytes[taken..];
                let mut buf = [0u8; 256];
                loop {
                    let n = server.read(&mut buf).expect("the phone's frames verify");
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&buf[..n]);
                }
                if bytes.is_empty() {
                    return plain;
                }
            }
        }

        /// The server's handshake message, framed.
        fn server_says(server: &mut Channel) -> Vec<u8> {
            let message = server
                .poll_transmit()
                .expect("a handshake message")
                .to_vec();
            server.handle_written(message.len());
            message
        }

        fn sealed(server: &mut Channel, text: &str) -> Vec<u8> {
            let mut out = vec![0u8; Channel::sealed_len(text.len())];
            let n = server.seal(text.as_bytes(), &mut out).expect("established");
            out.truncate(n);
            out
        }

        /// Through the handshake with a server holding `secret`: REG arrives sealed.
        fn handshake(client: &mut Client<Tag>, secret: &SecretKey) -> Channel {
            let mut server = Channel::responder(secret, [9; 32]).expect("responder");
            let hello = wire(client);
            assert_eq!(&hello[..2], &[0, MSG1_LEN as u8], "a Noise frame, not JSON");
            assert!(server_reads(&mut server, &hello).is_empty());
            let answer = server_says(&mut server);
            client.handle_received(at(5), &answer);
            let rest = wire(client);
            assert_eq!(server_reads(&mut server, &rest), REG_ALICE.as_bytes());
            assert_eq!(
                server.remote_key(),
                Some(SecretKey::from_bytes([2; 32]).public())
            );
            server
        }

        #[test]
        fn with_a_key_everything_goes_sealed_after_the_handshake() {
            let mut client = connected_with(security(pinned(server_secret().public())));
            let mut server = handshake(&mut client, &server_secret());
            let answer = sealed(&mut server, PARLO_REGISTERED);
            client.handle_received(at(6), &answer);
            assert_eq!(
                events(&mut client),
                [Event::Registered {
                    server: ServerKind::Parlo
                }]
            );
            assert!(client.is_encrypted());
            ask(&mut client, 7, "bob", 1);
            let request = wire(&mut client);
            assert!(!request.windows(3).any(|w| w == b"bob"));
            assert_eq!(server_reads(&mut server, &request), get("bob").as_bytes());
            let found = sealed(&mut server, "{\"ip\":\"None\"}\n");
            client.handle_received(at(8), &found);
            assert_eq!(
                events(&mut client),
                [Event::Answer {
                    tag: 1,
                    result: Ok(Answer::NotFound)
                }]
            );
        }

        #[test]
        fn a_server_with_another_key_is_refused_and_nothing_goes_in_plain_text() {
            let expected = SecretKey::from_bytes([8; 32]).public();
            let mut client = connected_with(security(pinned(expected)));
            let mut server = Channel::responder(&server_secret(), [9; 32]).expect("r");
            let hello = wire(&mut client);
            server.handle_received(&hello);
            assert_eq!(
                server.read(&mut [0; 8]),
                Err(crate::noise::NoiseError::Handshake)
            );
            // The server says so in JSON, then closes.
            receive(
                &mut client,
                5,
                "{\"ack\":\"Error\",\"reason\":\"not our key\"}\n",
            );
            let (loss, retry, announce) = expect_lost(&events(&mut client));
            let refusal = Refusal::ServerKey(ServerKey {
                key: expected,
                configured: false,
            });
            assert_eq!(loss, Loss::Refused(refusal));
            assert!(announce);
            assert_eq!(retry.map(|r| r.after_ms), Some(REFUSED_BACKOFF_INITIAL_MS));
            assert_eq!(links(&mut client), [Link::Close]);
            assert!(
                loss.to_string().contains("pinned on first contact"),
                "{loss}"
            );
            assert_eq!(client.poll_transmit(), None);
            // The next attempt is Noise again, never plain JSON.
            client.handle_timeout(at(5 + REFUSED_BACKOFF_INITIAL_MS));
            client.handle_connecting(at(5 + REFUSED_BACKOFF_INITIAL_MS));
            client.handle_connected(at(5 + REFUSED_BACKOFF_INITIAL_MS));
            assert_eq!(wire(&mut client)[..2], [0, MSG1_LEN as u8]);
        }

        #[test]
        fn a_server_that_closes_or_fails_during_the_handshake_is_refused_too() {
            let key = ServerKey {
                key: server_secret().public(),
                configured: true,
            };
            let mut client = connected_with(security(Some(key)));
            let _ = wire(&mut client);
            client.handle_closed(at(5));
            let (loss, _, _) = expect_lost(&events(&mut client));
            assert_eq!(loss, Loss::Refused(Refusal::ServerKey(key)));
            assert!(loss.to_string().contains("--server-key"), "{loss}");
            let mut client = connected_with(security(Some(key)));
            client.handle_failed(at(5), "connection reset");
            let (loss, _, _) = expect_lost(&events(&mut client));
            assert_eq!(loss, Loss::Refused(Refusal::ServerKey(key)));
        }

        #[test]
        fn without_a_key_the_first_question_is_key_and_its_answer_is_pinned() {
            let mut client = connected_with(security(None));
            assert_eq!(
                written(&mut client),
                "{\"command\":\"KEY\",\"name\":\"server key\"}\n"
            );
            // A lookup asked meanwhile waits for the encrypted connection.
            ask(&mut client, 1, "bob", 1);
            assert_eq!(client.poll_transmit(), None);
            let key = server_secret().public();
            receive(
                &mut client,
                5,
                &std::format!("{{\"server_key\":\"{key}\"}}\n"),
            );
            assert_eq!(events(&mut client), [Event::ServerKeyLearned(key)]);
            assert_eq!(links(&mut client), [Link::Close]);
            assert_eq!(client.server_key(), pinned(key));
            // Again at once, through Noise.
            assert_eq!(client.poll_timeout(), Some(at(5)));
            client.handle_timeout(at(5));
            assert_eq!(links(&mut client), [Link::Connect]);
            client.handle_connecting(at(5));
            client.handle_connected(at(6));
            let mut server = handshake(&mut client, &server_secret());
            let registered = sealed(&mut server, PARLO_REGISTERED);
            client.handle_received(at(7), &registered);
            let request = wire(&mut client);
            assert_eq!(server_reads(&mut server, &request), get("bob").as_bytes());
        }

        #[test]
        fn a_server_without_a_key_gets_plain_json_with_a_warning_once() {
            let mut client = connected_with(security(None));
            let _ = written(&mut client);
            receive(&mut client, 5, ORIGINAL_ERROR);
            assert!(matches!(
                &events(&mut client)[..],
                [Event::Unencrypted(said)] if said.is_empty()
            ));
            assert_eq!(written(&mut client), REG_ALICE);
            receive(&mut client, 6, ORIGINAL_REGISTERED);
            assert_eq!(
                events(&mut client),
                [Event::Registered {
                    server: ServerKind::Original
                }]
            );
            assert!(!client.is_encrypted());
            // The next connection asks again (the server may have been upgraded); the same
            // answer is no news.
            client.handle_closed(at(10));
            let _ = events(&mut client);
            let _ = links(&mut client);
            let retry = client.poll_timeout().expect("a retry");
            client.handle_timeout(retry);
            client.handle_connecting(retry);
            client.handle_connected(retry);
            assert_eq!(
                written(&mut client),
                "{\"command\":\"KEY\",\"name\":\"server key\"}\n"
            );
            receive(&mut client, retry.0 + 1, ORIGINAL_ERROR);
            assert!(events(&mut client).is_empty());
            assert_eq!(written(&mut client), REG_ALICE);
        }

        /// The original server's answer to a command it does not know.
        const ORIGINAL_ERROR: &str = "{\"ack\": \"Error\"}";
    }
}
