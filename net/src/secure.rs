//! Encrypted calls, without I/O: [`Sessions`], the Noise sessions of one phone with other
//! Parlo phones, by peer address.
//!
//! A call between two Parlo phones is encrypted and authenticated with [`PATTERN`],
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s`. Each phone has a static X25519 key
//! ([`SecretKey`]); the caller knows the callee's public key (from the directory) before
//! it calls, the callee learns the caller's from the first message. The signalling lines
//! and RTP packets of the call (the *inner* packets) travel inside this layer unchanged;
//! the call machine never sees a byte of it.
//!
//! # Wire format
//!
//! The receiver sorts every datagram by its first byte (see [`crate::media::classify`]);
//! this layer owns the bytes `0x01`–`0x04` ([`is_secure`]). All integers are big-endian
//! unless stated otherwise.
//!
//! | first byte | datagram | contents |
//! | --- | --- | --- |
//! | `0x01` [`INIT`] | `0x01 ‖ msg1` | Noise IK message 1 (`e, es, s, ss`); payload `timestamp (8) ‖ START line` |
//! | `0x02` [`RESPONSE`] | `0x02 ‖ msg2` | Noise IK message 2 (`e, ee, se`); payload: the callee's answer line |
//! | `0x03` [`TRANSPORT`] | `0x03 ‖ counter (8) ‖ ciphertext ‖ tag (16)` | an inner packet, key phase 0 |
//! | `0x04` [`TRANSPORT_PHASE_1`] | `0x04 ‖ counter (8) ‖ ciphertext ‖ tag (16)` | an inner packet, key phase 1 |
//!
//! - **Handshake.** The prologue is [`PROLOGUE`], `Parlo call 1`. The Init's payload
//!   starts with a timestamp: nanoseconds since the Unix epoch (wall clock), 8 bytes; the
//!   rest is the START line. The Init is `105 + n` bytes for a START line of `n` bytes
//!   ([`INIT_OVERHEAD`]). The Response's payload is the line that answers the START
//!   (`RINGING`, `ACCEPT`, `REJECT` or `BUSY`); it is `49 + n` bytes ([`RESPONSE_OVERHEAD`]),
//!   and never longer than the Init it answers: no sender that has not yet proved its key
//!   gets more bytes back than it sent.
//! - **Transport keys.** Both come from the finished handshake (Noise's `Split()`): the
//!   caller sends with the first and receives with the second, the callee the other way
//!   round.
//! - **Transport.** ChaCha20-Poly1305 under the sender's current key; the nonce is Noise's
//!   (4 zero bytes, then the counter as 8 bytes *little*-endian), the associated data the
//!   9-byte header (type and counter). The plaintext is the inner packet, unchanged: a
//!   signalling line or an RTP packet. [`OVERHEAD`] = 25 bytes. Counters start at 0 in each
//!   direction, grow by one per packet, and are never reused in a session (they go on
//!   across key changes); `2^64 − 1` is never sent.
//! - **Key phases.** Every [`Config::rekey_after`] ms each side replaces its *sending* key
//!   `k` by Noise's `REKEY(k)` (the first 32 bytes of `ENCRYPT(k, nonce 2^64 − 1, no
//!   associated data, 32 zero bytes)`) and flips the phase bit (`0x03` ↔ `0x04`). The
//!   receiver, given a packet whose phase differs from its current one, tries
//!   `REKEY(current)`: if that opens it, it becomes current and the old key is kept as
//!   previous, for late packets of the old phase (tried when the next key fails). No
//!   message is exchanged and nothing stops: loss and reordering across a key change lose
//!   no packet.
//! - **Anti-replay.** After a transport packet authenticates, its counter goes through a
//!   [`ReplayWindow`] (2,048 counters), one per session and direction.
//! - **Short code.** Both ends of a session compute the same [`ShortCode`] from the final
//!   handshake hash: its first 4 bytes as a big-endian number, modulo 10⁸, shown
//!   `1234-5678`. Users read it to each other: a man in the middle makes two sessions with
//!   two different codes.
//!
//! # Contract
//!
//! One [`Sessions`] per phone, made with the phone's identity. The shell:
//! - passes every received datagram whose first byte [`is_secure`] to [`Sessions::open`]
//!   and hands what it opened (`out[..opened.len]`) to the call machine as coming from
//!   [`Opened::key`]; then sends what [`Sessions::poll_transmit`] gives (a cached
//!   Response resent for a retransmitted Init);
//! - seals every packet it would send to a peer whose key it knows with
//!   [`Sessions::seal`], `start = true` for a START line (also for its retransmissions:
//!   the same Init goes out again).
//!
//! `now` is the phone's monotonic clock in milliseconds (it may stand still; a time that
//! goes backwards counts as no time at all), `wall` the wall clock, used only for the
//! Init's timestamp. Randomness comes from the `ephemeral` argument, called once per new
//! handshake (a new Init sealed, an Init opened), never per transport packet.
//!
//! Per address there are at most a waiting initiator (our START, not answered yet), a
//! waiting responder (a START received, not answered yet), the current session and the
//! previous one (late packets of a call replaced by a newer one from the same address).
//! A newly finished handshake becomes current; when two sessions exist already, the one
//! used less recently is dropped. At most [`MAX_PEERS`] addresses are kept, the least
//! recently used forgotten first.
//!
//! **Answers and sessions.** A packet sealed for a peer whose START waits becomes the
//! Response when it is a signalling line of that call: media never does, nor a line that
//! names another call id. So the winner of a glare (docs/protocol.md §3.7) acknowledges
//! its own call over that call's session and leaves the loser's START unanswered, and the
//! media and lines of a call in progress never answer a new START from the same peer.
//! Transport goes over the newer of the peer's sessions that the peer surely holds (one
//! this phone called, or one the peer has sent on), else the newer: a callee's Response
//! may be lost, and with it the caller's end of that session.
//!
//! **Replayed Inits.** For each of up to [`MAX_KEYS`] static keys (the least recently seen
//! forgotten first) the greatest Init timestamp accepted is kept: an Init whose timestamp
//! is not greater is a replay; one further than [`Config::max_skew`] from our wall clock
//! is stale. An exact copy of an Init already accepted from the same address is the
//! caller retransmitting: it is opened again, marked [`Opened::repeat`], and once the
//! START was answered the cached Response goes out again. A copy counts as a repeat only
//! for [`REPEAT_WINDOW`] ms after the Init first came, and only until the session it made
//! has received a transport packet (the caller got the answer then); after that it is a
//! replay. Handshake messages that need Diffie-Hellman work go through a token bucket
//! ([`Config::handshake_burst`], [`Config::handshake_rate`]).
//!
//! A dropped datagram changes nothing (the next good one opens) and is counted
//! ([`Counters`]). No input panics; the transport path does not allocate.

use core::fmt;
use core::net::SocketAddr;

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce, Tag};
use parlo_fsm::{CallId, PublicKey};
use snow::HandshakeState;

use crate::media::{self, DatagramKind};
use crate::noise::SecretKey;
use crate::peer::{Message, Wire};
use crate::replay::{Replay, ReplayWindow};
use crate::seeded;

/// The Noise protocol of a call.
pub const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Bound into every call handshake: Parlo's calls, version 1 of this layer.
pub const PROLOGUE: &[u8] = b"Parlo call 1";

/// First byte of an Init: Noise message 1, from the caller.
pub const INIT: u8 = 0x01;
/// First byte of a Response: Noise message 2, from the callee.
pub const RESPONSE: u8 = 0x02;
/// First byte of a transport datagram under a key of phase 0.
pub const TRANSPORT: u8 = 0x03;
/// First byte of a transport datagram under a key of phase 1.
pub const TRANSPORT_PHASE_1: u8 = 0x04;

/// Bytes of a transport datagram's header: the type byte and the counter.
pub const HEADER_LEN: usize = 9;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a transport datagram adds to the inner packet it carries.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The longest inner packet this layer carries (an L16 RTP packet is 1036 bytes).
pub const MAX_INNER: usize = 1200;

const DH_LEN: usize = 32;
const TIMESTAMP_LEN: usize = 8;

/// Bytes an Init adds to its START line: type, `e`, encrypted `s` and its tag, the
/// timestamp, the payload's tag.
pub const INIT_OVERHEAD: usize = 1 + DH_LEN + (DH_LEN + TAG_LEN) + TIMESTAMP_LEN + TAG_LEN;
/// Bytes a Response adds to its answer line: type, `e`, the payload's tag.
pub const RESPONSE_OVERHEAD: usize = 1 + DH_LEN + TAG_LEN;
/// A buffer of this many bytes holds anything this layer writes or accepts: the longest
/// datagram is an Init of a [`MAX_INNER`]-byte START (longer datagrams are malformed).
pub const MAX_DATAGRAM: usize = INIT_OVERHEAD + MAX_INNER;

/// Addresses kept at most (each with its handshakes and sessions).
pub const MAX_PEERS: usize = 32;
/// Static keys whose greatest Init timestamp is remembered at most.
pub const MAX_KEYS: usize = 256;
/// How long (ms of `now`) an exact copy of an accepted Init is still taken as the caller
/// retransmitting. START copies go out until 7.5 s after the first (docs/protocol.md
/// §3.5); 10 s leaves the network 2.5 s.
pub const REPEAT_WINDOW: u64 = 10_000;

/// Whether a datagram whose first byte is `first_byte` belongs to this layer.
pub fn is_secure(first_byte: u8) -> bool {
    matches!(first_byte, INIT..=TRANSPORT_PHASE_1)
}

/// A wall-clock time: nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// The code both ends of a session show, from its handshake hash: users who read the same
/// code to each other talk without a man in the middle. Shown `1234-5678`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortCode(u32);

impl ShortCode {
    /// The code of a handshake whose final hash is `hash`: its first 4 bytes, big-endian,
    /// modulo 10⁸.
    fn of_hash(hash: &[u8]) -> ShortCode {
        let mut first = [0u8; 4];
        for (to, from) in first.iter_mut().zip(hash) {
            *to = *from;
        }
        ShortCode(u32::from_be_bytes(first) % 100_000_000)
    }

    /// The code as a number below 10⁸.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:04}", self.0 / 10_000, self.0 % 10_000)
    }
}

/// The limits of a phone's secure sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Ms: a START whose timestamp is further than this from our wall clock, either way,
    /// is stale. Default 300,000 (5 minutes).
    pub max_skew: u64,
    /// Ms between two changes of a session's sending key. Default 120,000 (2 minutes).
    pub rekey_after: u64,
    /// Handshake messages (Inits and Responses, which cost Diffie-Hellman work) processed
    /// at once after a quiet time. Default 20.
    pub handshake_burst: u32,
    /// Handshake messages processed per second in the long run. Default 20.
    pub handshake_rate: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_skew: 300_000,
            rekey_after: 120_000,
            handshake_burst: 20,
            handshake_rate: 20,
        }
    }
}

/// What an opened datagram carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An Init's START line (a new call, or a retransmission: [`Opened::repeat`]).
    Start,
    /// A Response's answer line: the session with the callee is now established.
    Answer,
    /// An inner packet of an established session.
    Transport,
}

/// A datagram [`Sessions::open`] opened. The inner packet is `out[..len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of the inner packet.
    pub len: usize,
    /// What it is.
    pub kind: Kind,
    /// The static key its sender proved it holds.
    pub key: PublicKey,
    /// The session's short code: `None` for a START not answered yet.
    pub code: Option<ShortCode>,
    /// Whether this is an exact copy of an Init opened before (the caller retransmitting).
    pub repeat: bool,
}

/// Why a datagram was dropped. Each one is counted ([`Counters`]); none changes any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Too short or too long for its type, not a type of this layer, or a reserved counter.
    Malformed,
    /// It did not authenticate: forged, damaged, or sealed for another key.
    Auth,
    /// Seen before: a transport counter already accepted (or too old), an Init whose
    /// timestamp is not greater than the greatest from its key, a stale copy of an Init or
    /// Response already used.
    Replay,
    /// An Init whose timestamp is further than [`Config::max_skew`] from our clock.
    Stale,
    /// A Response or transport datagram from an address without a handshake or session.
    NoSession,
    /// A handshake message beyond the rate limit: dropped unread.
    RateLimited,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::Malformed => {
                "malformed encrypted datagram: an unknown type, a wrong length for its type, \
                 or a reserved counter"
            }
            Dropped::Auth => {
                "encrypted datagram did not authenticate: forged, damaged, or for another key"
            }
            Dropped::Replay => "encrypted datagram seen before (a replay or a network duplicate)",
            Dropped::Stale => {
                "call request with a timestamp too far from this phone's clock \
                 (is one of the two clocks wrong?)"
            }
            Dropped::NoSession => "encrypted datagram from an address with no session",
            Dropped::RateLimited => "call handshake dropped: too many at once",
        })
    }
}

impl core::error::Error for Dropped {}

/// Why [`Sessions::seal`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// No waiting START to answer and no established session with that address and key.
    NoSession,
    /// The inner packet is longer than [`MAX_INNER`], `out` is too small, or an answer
    /// line would make the Response longer than the Init it answers.
    TooLarge,
    /// The Noise library refused (a key it cannot use, randomness missing).
    Handshake,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::NoSession => {
                f.write_str("no encrypted session with that address and key to send on")
            }
            SealError::TooLarge => write!(
                f,
                "packet too large to encrypt: more than {MAX_INNER} bytes, more than the \
                 buffer holds, or an answer longer than the call request allows"
            ),
            SealError::Handshake => f.write_str("the Noise library refused the call handshake"),
        }
    }
}

impl core::error::Error for SealError {}

/// An established session, as [`Sessions::session`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's static key.
    pub key: PublicKey,
    /// The session's short code.
    pub code: ShortCode,
    /// Key changes so far, both directions together.
    pub rekeys: u64,
}

/// What was dropped, by reason, and handshakes completed: totals since [`Sessions::new`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// [`Dropped::Auth`].
    pub auth_failures: u64,
    /// [`Dropped::Replay`].
    pub replays: u64,
    /// [`Dropped::Stale`].
    pub stale: u64,
    /// [`Dropped::RateLimited`].
    pub rate_limited: u64,
    /// [`Dropped::NoSession`].
    pub no_session: u64,
    /// [`Dropped::Malformed`].
    pub malformed: u64,
    /// Handshakes completed, as caller and as callee.
    pub handshakes: u64,
}

/// Which of the two transport keys of a direction is in use: the type byte says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Zero,
    One,
}

impl Phase {
    fn of_type(byte: u8) -> Option<Phase> {
        match byte {
            TRANSPORT => Some(Phase::Zero),
            TRANSPORT_PHASE_1 => Some(Phase::One),
            _ => None,
        }
    }

    fn type_byte(self) -> u8 {
        match self {
            Phase::Zero => TRANSPORT,
            Phase::One => TRANSPORT_PHASE_1,
        }
    }

    fn flipped(self) -> Phase {
        match self {
            Phase::Zero => Phase::One,
            Phase::One => Phase::Zero,
        }
    }
}

/// One transport key, ready to use.
struct CipherKey(ChaCha20Poly1305);

impl CipherKey {
    fn new(bytes: [u8; 32]) -> CipherKey {
        CipherKey(ChaCha20Poly1305::new(&bytes.into()))
    }

    /// Noise's REKEY: the first 32 bytes of `ENCRYPT(k, 2^64 − 1, "", 32 zero bytes)`.
    fn rekeyed(&self) -> CipherKey {
        let mut next = [0u8; 32];
        // Encryption fails only past ChaCha20-Poly1305's 256 GiB limit, not for 32 bytes.
        #[allow(clippy::expect_used)]
        self.0
            .encrypt_in_place_detached(&nonce(u64::MAX), &[], &mut next)
            .expect("32 bytes are within the AEAD's limit");
        CipherKey::new(next)
    }

    /// Encrypts `buf` in place; returns the tag.
    fn seal(&self, counter: u64, header: &[u8], buf: &mut [u8]) -> Option<Tag> {
        self.0
            .encrypt_in_place_detached(&nonce(counter), header, buf)
            .ok()
    }

    /// Decrypts `buf` in place if `tag` checks out; returns whether it did.
    fn open(&self, counter: u64, header: &[u8], buf: &mut [u8], tag: &Tag) -> bool {
        self.0
            .decrypt_in_place_detached(&nonce(counter), header, buf, tag)
            .is_ok()
    }
}

/// Noise's ChaChaPoly nonce: 4 zero bytes, then the counter little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    bytes.into()
}

/// Our direction of a session.
struct Sending {
    key: CipherKey,
    phase: Phase,
    /// The next counter to send.
    counter: u64,
    /// When (`now`) the key came into use.
    since: u64,
}

/// The peer's direction of a session.
struct Receiving {
    current: CipherKey,
    phase: Phase,
    /// The key before `current`, for late packets of the old phase.
    previous: Option<CipherKey>,
    window: ReplayWindow,
}

/// Which key opened a packet.
enum Opener {
    Current,
    Next(CipherKey),
    Previous,
}

/// How a session came about: what is needed to recognise copies of its handshake.
enum Origin {
    /// This phone called; `response` is the Response that finished the handshake.
    Called { response: Vec<u8> },
    /// This phone answered `init` (whose START line is `start`, first opened at
    /// `opened_at`) with `response`.
    Answered {
        init: Vec<u8>,
        start: Vec<u8>,
        response: Vec<u8>,
        opened_at: u64,
    },
}

/// An established session.
struct Transport {
    remote: PublicKey,
    code: ShortCode,
    send: Sending,
    recv: Receiving,
    rekeys: u64,
    /// When it was last used (a tick of [`Sessions`]).
    used: u64,
    origin: Origin,
}

impl Transport {
    /// The session of a finished handshake: `keys` from its split (the caller sends with
    /// the first).
    fn new(
        keys: ([u8; 32], [u8; 32]),
        caller: bool,
        remote: PublicKey,
        code: ShortCode,
        now: u64,
        tick: u64,
        origin: Origin,
    ) -> Transport {
        let (send, recv) = if caller {
            (keys.0, keys.1)
        } else {
            (keys.1, keys.0)
        };
        Transport {
            remote,
            code,
            send: Sending {
                key: CipherKey::new(send),
                phase: Phase::Zero,
                counter: 0,
                since: now,
            },
            recv: Receiving {
                current: CipherKey::new(recv),
                phase: Phase::Zero,
                previous: None,
                window: ReplayWindow::new(),
            },
            rekeys: 0,
            used: tick,
            origin,
        }
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            key: self.remote,
            code: self.code,
            rekeys: self.rekeys,
        }
    }

    /// Whether the peer has sent a transport packet on this session.
    fn heard(&self) -> bool {
        self.recv.window.next() > 0
    }

    /// Whether the peer surely holds this session: we called (its Response finished
    /// it), or it has sent on it. A callee's Response may yet be lost, and with it the
    /// session at the caller's end.
    fn held(&self) -> bool {
        matches!(self.origin, Origin::Called { .. }) || self.heard()
    }

    /// Seals `inner` into `out` (the caller checked `inner` against [`MAX_INNER`]).
    fn seal(
        &mut self,
        now: u64,
        rekey_after: u64,
        inner: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let len = OVERHEAD + inner.len();
        if out.len() < len {
            return Err(SealError::TooLarge);
        }
        // 2^64 − 1 is REKEY's nonce: after 2^64 − 1 packets the session is used up.
        if self.send.counter == u64::MAX {
            return Err(SealError::NoSession);
        }
        if now.saturating_sub(self.send.since) >= rekey_after {
            self.send.key = self.send.key.rekeyed();
            self.send.phase = self.send.phase.flipped();
            self.send.since = now;
            self.rekeys += 1;
        }
        let counter = self.send.counter;
        let (header, rest) = out[..len].split_at_mut(HEADER_LEN);
        header[0] = self.send.phase.type_byte();
        header[1..].copy_from_slice(&counter.to_be_bytes());
        let (body, tag) = rest.split_at_mut(inner.len());
        body.copy_from_slice(inner);
        let sealed = self
            .send
            .key
            .seal(counter, header, body)
            .ok_or(SealError::TooLarge)?;
        tag.copy_from_slice(&sealed);
        self.send.counter += 1;
        Ok(len)
    }

    /// Opens a transport datagram (the caller checked its length, its type, its counter
    /// and that `out` holds the inner packet). Fails with `Auth` or `Replay`, and then
    /// changes nothing but `out`.
    fn open(&mut self, datagram: &[u8], out: &mut [u8]) -> Result<usize, Dropped> {
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let phase = Phase::of_type(header[0]).ok_or(Dropped::Malformed)?;
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&header[1..]);
        let counter = u64::from_be_bytes(counter);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let tag = Tag::from(tag_bytes);
        let plain = &mut out[..body.len()];
        let mut attempt = |key: &CipherKey| {
            plain.copy_from_slice(body);
            key.open(counter, header, plain, &tag)
        };
        let opener = if phase == self.recv.phase {
            if !attempt(&self.recv.current) {
                return Err(Dropped::Auth);
            }
            Opener::Current
        } else {
            let next = self.recv.current.rekeyed();
            if attempt(&next) {
                Opener::Next(next)
            } else if self.recv.previous.as_ref().is_some_and(&mut attempt) {
                Opener::Previous
            } else {
                return Err(Dropped::Auth);
            }
        };
        if self.recv.window.accept(counter) != Replay::Fresh {
            return Err(Dropped::Replay);
        }
        if let Opener::Next(next) = opener {
            self.recv.previous = Some(core::mem::replace(&mut self.recv.current, next));
            self.recv.phase = phase;
            self.rekeys += 1;
        }
        Ok(body.len())
    }
}

/// Our START to a peer, not answered yet.
struct Initiator {
    /// The key the callee must hold.
    key: PublicKey,
    /// The START line, to recognise its retransmissions.
    start: Vec<u8>,
    /// The Init datagram, sent again for each retransmission.
    init: Vec<u8>,
    state: Box<HandshakeState>,
}

/// A peer's START, not answered yet.
struct Responder {
    /// The caller's key.
    key: PublicKey,
    /// The Init datagram, to recognise copies.
    init: Vec<u8>,
    /// Its START line, opened again for copies.
    start: Vec<u8>,
    /// The START's call id: only a line of this call answers it.
    call: Option<CallId>,
    /// When (`now`) the Init first came.
    opened_at: u64,
    state: Box<HandshakeState>,
}

/// Everything kept about one address.
struct Peer {
    addr: SocketAddr,
    used: u64,
    initiator: Option<Initiator>,
    responder: Option<Responder>,
    current: Option<Transport>,
    previous: Option<Transport>,
}

impl Peer {
    fn new(addr: SocketAddr, tick: u64) -> Peer {
        Peer {
            addr,
            used: tick,
            initiator: None,
            responder: None,
            current: None,
            previous: None,
        }
    }

    /// Makes `session` current; of the two older ones, keeps the one used last.
    fn install(&mut self, session: Transport) {
        self.previous = match (self.current.take(), self.previous.take()) {
            (Some(a), Some(b)) => Some(if a.used >= b.used { a } else { b }),
            (a, b) => a.or(b),
        };
        self.current = Some(session);
    }

    /// The session to send on to `key`: the newer of those the peer surely holds, else
    /// the newer.
    fn session_for(&mut self, key: &PublicKey) -> Option<&mut Transport> {
        let with_key = |slot: &Option<Transport>| slot.as_ref().is_some_and(|s| s.remote == *key);
        let held =
            |slot: &Option<Transport>| slot.as_ref().is_some_and(|s| s.remote == *key && s.held());
        let slot = if held(&self.current) || !held(&self.previous) && with_key(&self.current) {
            &mut self.current
        } else {
            &mut self.previous
        };
        slot.as_mut().filter(|s| s.remote == *key)
    }

    /// Opens a transport datagram with the current session, or the previous one.
    fn open_transport(
        &mut self,
        tick: u64,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, Dropped> {
        if self.current.is_none() && self.previous.is_none() {
            return Err(Dropped::NoSession);
        }
        for session in [&mut self.current, &mut self.previous]
            .into_iter()
            .flatten()
        {
            match session.open(datagram, out) {
                Ok(len) => {
                    session.used = tick;
                    let opened = Opened {
                        len,
                        kind: Kind::Transport,
                        key: session.remote,
                        code: Some(session.code),
                        repeat: false,
                    };
                    self.used = tick;
                    return Ok(opened);
                }
                Err(Dropped::Auth) => {}
                Err(other) => return Err(other),
            }
        }
        Err(Dropped::Auth)
    }
}

/// The greatest Init timestamp accepted from one key.
struct Seen {
    key: PublicKey,
    greatest: u64,
    used: u64,
}

/// A token bucket on `now`, in thousandths of a token.
struct Bucket {
    milli: u64,
    at: u64,
}

impl Bucket {
    fn take(&mut self, now: u64, burst: u32, rate: u32) -> bool {
        let capacity = u64::from(burst) * 1000;
        if now > self.at {
            // `rate` tokens a second are `rate` thousandths a millisecond.
            let gained = (now - self.at).saturating_mul(u64::from(rate));
            self.milli = self.milli.saturating_add(gained).min(capacity);
            self.at = now;
        }
        self.milli = self.milli.min(capacity);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// The one datagram waiting in [`Sessions::poll_transmit`].
struct Transmit {
    to: Option<SocketAddr>,
    len: usize,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

/// Every secure session of one phone, by peer address (see the module docs for the
/// contract).
pub struct Sessions {
    identity: SecretKey,
    config: Config,
    peers: Vec<Peer>,
    seen: Vec<Seen>,
    bucket: Bucket,
    /// The timestamp of the last Init written: the next one is greater.
    last_timestamp: u64,
    /// Grows by one per call of `open` or `seal`: the order of use, for evictions.
    tick: u64,
    counters: Counters,
    transmit: Transmit,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.config)
            .field("peers", &self.peers.len())
            .field("keys_seen", &self.seen.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The sessions of a phone whose static key is `identity`.
    pub fn new(identity: SecretKey, config: Config) -> Sessions {
        Sessions {
            identity,
            config,
            peers: Vec::with_capacity(MAX_PEERS),
            seen: Vec::with_capacity(MAX_KEYS),
            bucket: Bucket {
                milli: u64::from(config.handshake_burst) * 1000,
                at: 0,
            },
            last_timestamp: 0,
            tick: 0,
            counters: Counters::default(),
            transmit: Transmit {
                to: None,
                len: 0,
                buf: Box::new([0; MAX_DATAGRAM]),
            },
        }
    }

    /// Opens a received datagram whose first byte [`is_secure`]. The inner packet is
    /// written to `out[..opened.len]` (`out` of [`MAX_INNER`] bytes always suffices; a
    /// datagram whose inner packet does not fit is malformed). `ephemeral` is called only
    /// when a handshake needs fresh randomness (an Init to answer), never per transport
    /// packet. `now` is monotonic ms (the phone's clock), `wall` the wall clock.
    ///
    /// On error nothing changes (but the bytes of `out`) and the reason is counted.
    /// Afterwards, send what [`Sessions::poll_transmit`] gives.
    pub fn open(
        &mut self,
        now: u64,
        wall: Timestamp,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        ephemeral: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<Opened, Dropped> {
        self.tick += 1;
        let result = match datagram.first() {
            _ if datagram.len() > MAX_DATAGRAM => Err(Dropped::Malformed),
            Some(&INIT) => self.open_init(now, wall, from, datagram, out, ephemeral),
            Some(&RESPONSE) => self.open_response(now, from, datagram, out),
            Some(&(TRANSPORT | TRANSPORT_PHASE_1)) => self.open_transport(from, datagram, out),
            _ => Err(Dropped::Malformed),
        };
        if let Err(dropped) = result {
            let counter = match dropped {
                Dropped::Malformed => &mut self.counters.malformed,
                Dropped::Auth => &mut self.counters.auth_failures,
                Dropped::Replay => &mut self.counters.replays,
                Dropped::Stale => &mut self.counters.stale,
                Dropped::NoSession => &mut self.counters.no_session,
                Dropped::RateLimited => &mut self.counters.rate_limited,
            };
            *counter += 1;
        }
        result
    }

    /// Seals `inner` for `to`, whose static key must be `key`, into `out` (of
    /// [`MAX_DATAGRAM`] bytes, which always suffice); returns the datagram's length.
    ///
    /// - `start`: `inner` is a START line (this phone calls). If an Init for `to` with the
    ///   same key and the same `inner` waits for its answer, the very same Init bytes again
    ///   (a retransmission); otherwise a new Init (`ephemeral` is called), timestamped
    ///   with `wall` or, if that is not greater, one more than the last Init's timestamp.
    ///   It replaces any Init to `to` still waiting.
    /// - Otherwise, if a START from `to` with static key `key` waits for its answer and
    ///   `inner` answers it, `inner` becomes the Response and the session is established.
    ///   A packet answers the START when it is not media (RTP or raw PCM) and does not
    ///   name another call (both lines carry call ids and they differ): so that the
    ///   messages of an earlier call, and the ACK of our own call that won a glare,
    ///   still go over the session they belong to.
    /// - Else the established session with `to` and `key` seals `inner` as transport,
    ///   after changing its sending key when [`Config::rekey_after`] has passed. Of two
    ///   such sessions, the newer one the peer surely holds: one this phone called, or
    ///   one the peer has sent on (so that while the Response of a newer handshake may
    ///   still be lost, packets go over the older one, which the peer can open); if
    ///   neither, the newer.
    /// - Else [`SealError::NoSession`].
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        &mut self,
        now: u64,
        wall: Timestamp,
        to: SocketAddr,
        key: &PublicKey,
        inner: &[u8],
        start: bool,
        out: &mut [u8],
        ephemeral: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<usize, SealError> {
        if inner.len() > MAX_INNER {
            return Err(SealError::TooLarge);
        }
        self.tick += 1;
        if start {
            self.seal_init(wall, to, key, inner, out, ephemeral)
        } else {
            self.seal_after_start(now, to, key, inner, out)
        }
    }

    /// A datagram this layer wants sent: a cached Response, resent because its Init came
    /// again. At most one waits; it is handed out once. Drain after each
    /// [`Sessions::open`] (the next `open` may replace it).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        let to = self.transmit.to.take()?;
        Some((to, &self.transmit.buf[..self.transmit.len]))
    }

    /// The current session with `addr` (the newest established), if any.
    pub fn session(&self, addr: SocketAddr) -> Option<SessionInfo> {
        let peer = self.peers.iter().find(|p| p.addr == addr)?;
        peer.current.as_ref().map(Transport::info)
    }

    /// What was dropped and why, and handshakes completed, since [`Sessions::new`].
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn find(&self, addr: SocketAddr) -> Option<usize> {
        self.peers.iter().position(|p| p.addr == addr)
    }

    /// The entry of `addr`, made if needed (forgetting the least recently used address
    /// when [`MAX_PEERS`] are kept), marked as used now.
    fn peer_mut(&mut self, addr: SocketAddr) -> &mut Peer {
        let index = match self.find(addr) {
            Some(index) => index,
            None => {
                if self.peers.len() >= MAX_PEERS
                    && let Some(oldest) = (0..self.peers.len()).min_by_key(|&i| self.peers[i].used)
                {
                    self.peers.swap_remove(oldest);
                }
                self.peers.push(Peer::new(addr, self.tick));
                self.peers.len() - 1
            }
        };
        let peer = &mut self.peers[index];
        peer.used = self.tick;
        peer
    }

    fn open_init(
        &mut self,
        now: u64,
        wall: Timestamp,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        ephemeral: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<Opened, Dropped> {
        let Some(start_len) = datagram.len().checked_sub(INIT_OVERHEAD) else {
            return Err(Dropped::Malformed);
        };
        if out.len() < start_len {
            return Err(Dropped::Malformed);
        }
        if let Some(index) = self.find(from)
            && let Some(opened) = self.open_copy(index, now, datagram, out)?
        {
            return Ok(opened);
        }
        if !self.take_token(now) {
            return Err(Dropped::RateLimited);
        }
        // The parameters are constants: building fails only if snow lacks a primitive.
        let mut state = seeded::builder(PATTERN, ephemeral())
            .local_private_key(self.identity.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(snow::Builder::build_responder)
            .map_err(|_| Dropped::Auth)?;
        let mut payload = [0u8; MAX_DATAGRAM];
        let n = state
            .read_message(&datagram[1..], &mut payload)
            .map_err(|_| Dropped::Auth)?;
        let key = remote_key(&state).ok_or(Dropped::Auth)?;
        let Some((timestamp, start)) = payload[..n].split_first_chunk::<TIMESTAMP_LEN>() else {
            return Err(Dropped::Malformed);
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp.abs_diff(wall.0) > self.config.max_skew.saturating_mul(1_000_000) {
            return Err(Dropped::Stale);
        }
        if self
            .seen
            .iter()
            .any(|seen| seen.key == key && timestamp <= seen.greatest)
        {
            return Err(Dropped::Replay);
        }
        self.record_timestamp(key, timestamp);
        out[..start.len()].copy_from_slice(start);
        let responder = Responder {
            key,
            init: datagram.to_vec(),
            start: start.to_vec(),
            call: Message::parse(start).ok().and_then(|m| m.call_id()),
            opened_at: now,
            state: Box::new(state),
        };
        self.peer_mut(from).responder = Some(responder);
        Ok(Opened {
            len: start.len(),
            kind: Kind::Start,
            key,
            code: None,
            repeat: false,
        })
    }

    /// An exact copy of an Init accepted from this peer before: opened again as a repeat
    /// (and, once answered, its Response queued again) while the caller may still be
    /// retransmitting, a replay after that; `None` for any other Init.
    fn open_copy(
        &mut self,
        index: usize,
        now: u64,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Opened>, Dropped> {
        let tick = self.tick;
        let peer = &mut self.peers[index];
        if let Some(responder) = &peer.responder
            && responder.init == datagram
        {
            if now.saturating_sub(responder.opened_at) > REPEAT_WINDOW {
                return Err(Dropped::Replay);
            }
            out[..responder.start.len()].copy_from_slice(&responder.start);
            let opened = Opened {
                len: responder.start.len(),
                kind: Kind::Start,
                key: responder.key,
                code: None,
                repeat: true,
            };
            peer.used = tick;
            return Ok(Some(opened));
        }
        for session in [&peer.current, &peer.previous].into_iter().flatten() {
            let Origin::Answered {
                init,
                start,
                response,
                opened_at,
            } = &session.origin
            else {
                continue;
            };
            if init != datagram {
                continue;
            }
            if session.heard() || now.saturating_sub(*opened_at) > REPEAT_WINDOW {
                return Err(Dropped::Replay);
            }
            out[..start.len()].copy_from_slice(start);
            self.transmit.buf[..response.len()].copy_from_slice(response);
            self.transmit.len = response.len();
            self.transmit.to = Some(peer.addr);
            let opened = Opened {
                len: start.len(),
                kind: Kind::Start,
                key: session.remote,
                code: Some(session.code),
                repeat: true,
            };
            peer.used = tick;
            return Ok(Some(opened));
        }
        Ok(None)
    }

    fn open_response(
        &mut self,
        now: u64,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, Dropped> {
        let Some(line_len) = datagram.len().checked_sub(RESPONSE_OVERHEAD) else {
            return Err(Dropped::Malformed);
        };
        if out.len() < line_len {
            return Err(Dropped::Malformed);
        }
        let index = self.find(from).ok_or(Dropped::NoSession)?;
        let peer = &self.peers[index];
        if peer.initiator.is_none() {
            let copy = [&peer.current, &peer.previous]
                .into_iter()
                .flatten()
                .any(|s| matches!(&s.origin, Origin::Called { response } if response == datagram));
            return Err(if copy {
                Dropped::Replay
            } else {
                Dropped::NoSession
            });
        }
        if !self.take_token(now) {
            return Err(Dropped::RateLimited);
        }
        let tick = self.tick;
        let peer = &mut self.peers[index];
        let Some(initiator) = peer.initiator.as_mut() else {
            return Err(Dropped::NoSession);
        };
        let mut payload = [0u8; MAX_DATAGRAM];
        // A failed read leaves the handshake as it was (snow restores its state).
        let n = initiator
            .state
            .read_message(&datagram[1..], &mut payload)
            .map_err(|_| Dropped::Auth)?;
        if !initiator.state.is_handshake_finished() {
            return Err(Dropped::Auth);
        }
        let code = ShortCode::of_hash(initiator.state.get_handshake_hash());
        let keys = initiator.state.dangerously_get_raw_split();
        let key = initiator.key;
        peer.initiator = None;
        out[..n].copy_from_slice(&payload[..n]);
        let origin = Origin::Called {
            response: datagram.to_vec(),
        };
        peer.install(Transport::new(keys, true, key, code, now, tick, origin));
        peer.used = tick;
        self.counters.handshakes += 1;
        Ok(Opened {
            len: n,
            kind: Kind::Answer,
            key,
            code: Some(code),
            repeat: false,
        })
    }

    fn open_transport(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, Dropped> {
        let Some(inner_len) = datagram.len().checked_sub(OVERHEAD) else {
            return Err(Dropped::Malformed);
        };
        let counter = datagram
            .get(1..HEADER_LEN)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes);
        if counter.is_none_or(|c| c == u64::MAX) || out.len() < inner_len {
            return Err(Dropped::Malformed);
        }
        let tick = self.tick;
        let index = self.find(from).ok_or(Dropped::NoSession)?;
        self.peers[index].open_transport(tick, datagram, out)
    }

    fn seal_init(
        &mut self,
        wall: Timestamp,
        to: SocketAddr,
        key: &PublicKey,
        inner: &[u8],
        out: &mut [u8],
        ephemeral: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<usize, SealError> {
        let len = INIT_OVERHEAD + inner.len();
        if out.len() < len {
            return Err(SealError::TooLarge);
        }
        if let Some(index) = self.find(to)
            && let Some(initiator) = &self.peers[index].initiator
            && initiator.key == *key
            && initiator.start == inner
        {
            out[..initiator.init.len()].copy_from_slice(&initiator.init);
            let len = initiator.init.len();
            self.peers[index].used = self.tick;
            return Ok(len);
        }
        let timestamp = wall.0.max(self.last_timestamp.saturating_add(1));
        let mut payload = [0u8; TIMESTAMP_LEN + MAX_INNER];
        payload[..TIMESTAMP_LEN].copy_from_slice(&timestamp.to_be_bytes());
        payload[TIMESTAMP_LEN..TIMESTAMP_LEN + inner.len()].copy_from_slice(inner);
        let mut state = seeded::builder(PATTERN, ephemeral())
            .local_private_key(self.identity.as_bytes())
            .and_then(|b| b.remote_public_key(key.as_bytes()))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(snow::Builder::build_initiator)
            .map_err(|_| SealError::Handshake)?;
        out[0] = INIT;
        let written = state
            .write_message(&payload[..TIMESTAMP_LEN + inner.len()], &mut out[1..len])
            .map_err(|_| SealError::Handshake)?;
        let len = 1 + written;
        self.last_timestamp = timestamp;
        let initiator = Initiator {
            key: *key,
            start: inner.to_vec(),
            init: out[..len].to_vec(),
            state: Box::new(state),
        };
        self.peer_mut(to).initiator = Some(initiator);
        Ok(len)
    }

    fn seal_after_start(
        &mut self,
        now: u64,
        to: SocketAddr,
        key: &PublicKey,
        inner: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let tick = self.tick;
        let rekey_after = self.config.rekey_after;
        let index = self.find(to).ok_or(SealError::NoSession)?;
        let peer = &mut self.peers[index];
        if let Some(responder) = peer.responder.as_mut()
            && responder.key == *key
            && answers(responder.call, inner)
        {
            let len = RESPONSE_OVERHEAD + inner.len();
            if len > responder.init.len() || out.len() < len {
                return Err(SealError::TooLarge);
            }
            out[0] = RESPONSE;
            let written = responder
                .state
                .write_message(inner, &mut out[1..len])
                .map_err(|_| SealError::Handshake)?;
            if !responder.state.is_handshake_finished() {
                return Err(SealError::Handshake);
            }
            let len = 1 + written;
            let code = ShortCode::of_hash(responder.state.get_handshake_hash());
            let keys = responder.state.dangerously_get_raw_split();
            let Some(responder) = peer.responder.take() else {
                return Err(SealError::Handshake);
            };
            let origin = Origin::Answered {
                init: responder.init,
                start: responder.start,
                response: out[..len].to_vec(),
                opened_at: responder.opened_at,
            };
            let session = Transport::new(keys, false, responder.key, code, now, tick, origin);
            peer.install(session);
            peer.used = tick;
            self.counters.handshakes += 1;
            return Ok(len);
        }
        let session = peer.session_for(key).ok_or(SealError::NoSession)?;
        let len = session.seal(now, rekey_after, inner, out)?;
        session.used = tick;
        peer.used = tick;
        Ok(len)
    }

    fn take_token(&mut self, now: u64) -> bool {
        self.bucket
            .take(now, self.config.handshake_burst, self.config.handshake_rate)
    }

    /// Records `timestamp` as the greatest accepted from `key` (forgetting the least
    /// recently seen key when [`MAX_KEYS`] are kept).
    fn record_timestamp(&mut self, key: PublicKey, timestamp: u64) {
        let tick = self.tick;
        if let Some(seen) = self.seen.iter_mut().find(|seen| seen.key == key) {
            seen.greatest = seen.greatest.max(timestamp);
            seen.used = tick;
            return;
        }
        if self.seen.len() >= MAX_KEYS
            && let Some(oldest) = (0..self.seen.len()).min_by_key(|&i| self.seen[i].used)
        {
            self.seen.swap_remove(oldest);
        }
        self.seen.push(Seen {
            key,
            greatest: timestamp,
            used: tick,
        });
    }
}

/// Whether `inner` answers a START whose call id is `call`: it is not media, and does not
/// name another call.
fn answers(call: Option<CallId>, inner: &[u8]) -> bool {
    if matches!(
        media::classify(inner, None),
        Ok(DatagramKind::Rtp | DatagramKind::RawPcm)
    ) {
        return false;
    }
    match (call, Message::parse(inner).ok().and_then(|m| m.call_id())) {
        (Some(start), Some(line)) => start == line,
        _ => true,
    }
}

/// The static key the initiator of `state` proved it holds.
fn remote_key(state: &HandshakeState) -> Option<PublicKey> {
    let bytes = state.get_remote_static()?;
    <[u8; PublicKey::LEN]>::try_from(bytes).ok().map(PublicKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddrV4};

    const ALICE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5001));
    const BOB: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5001));
    const CAROL: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 5001));

    const START: &[u8] = b"START alice call=0000002a v=2 codecs=L16,PCMU";
    const RINGING: &[u8] = b"RINGING call=0000002a";
    const ACCEPT: &[u8] = b"ACCEPT call=0000002a codec=L16";
    /// The wall clock at `now` = 0: some day in 2023, in ns.
    const WALL: u64 = 1_700_000_000_000_000_000;

    fn wall(now: u64) -> u64 {
        WALL + now * 1_000_000
    }

    /// The `n`th ephemeral an end with `seed` draws (from 1). (Not in the first byte:
    /// X25519 clears its low 3 bits, so 1 and 2 there would make the same key.)
    fn eph(seed: u8, n: u32) -> [u8; 32] {
        let mut e = [seed; 32];
        e[1..5].copy_from_slice(&n.to_le_bytes());
        e
    }

    /// Tests run many handshakes in a moment: no rate limit unless a test sets one.
    fn roomy() -> Config {
        Config {
            handshake_burst: 1_000_000,
            ..Config::default()
        }
    }

    /// One phone: its sessions, its key and address, and how many ephemerals it drew.
    struct End {
        sessions: Sessions,
        secret: SecretKey,
        public: PublicKey,
        addr: SocketAddr,
        seed: u8,
        draws: u32,
    }

    impl End {
        fn new(seed: u8, addr: SocketAddr) -> End {
            End::with_config(seed, addr, roomy())
        }

        fn with_config(seed: u8, addr: SocketAddr, config: Config) -> End {
            let secret = SecretKey::from_bytes([seed; 32]);
            End {
                sessions: Sessions::new(secret.clone(), config),
                public: secret.public(),
                secret,
                addr,
                seed,
                draws: 0,
            }
        }

        fn key(&self) -> PublicKey {
            self.public
        }

        #[allow(clippy::too_many_arguments)]
        fn seal_with(
            &mut self,
            now: u64,
            wall: u64,
            to: SocketAddr,
            key: &PublicKey,
            inner: &[u8],
            start: bool,
        ) -> Result<Vec<u8>, SealError> {
            let mut out = vec![0u8; MAX_DATAGRAM];
            let (seed, draws) = (self.seed, &mut self.draws);
            let mut ephemeral = || {
                *draws += 1;
                eph(seed, *draws)
            };
            let n = self.sessions.seal(
                now,
                Timestamp(wall),
                to,
                key,
                inner,
                start,
                &mut out,
                &mut ephemeral,
            )?;
            out.truncate(n);
            Ok(out)
        }

        fn seal(
            &mut self,
            now: u64,
            to: &End,
            inner: &[u8],
            start: bool,
        ) -> Result<Vec<u8>, SealError> {
            self.seal_with(now, wall(now), to.addr, &to.key(), inner, start)
        }

        fn open_with(
            &mut self,
            now: u64,
            wall: u64,
            from: SocketAddr,
            datagram: &[u8],
        ) -> Result<(Opened, Vec<u8>), Dropped> {
            let mut out = vec![0u8; MAX_INNER];
            let (seed, draws) = (self.seed, &mut self.draws);
            let mut ephemeral = || {
                *draws += 1;
                eph(seed, *draws)
            };
            let opened = self.sessions.open(
                now,
                Timestamp(wall),
                from,
                datagram,
                &mut out,
                &mut ephemeral,
            )?;
            out.truncate(opened.len);
            Ok((opened, out))
        }

        fn open(
            &mut self,
            now: u64,
            from: &End,
            datagram: &[u8],
        ) -> Result<(Opened, Vec<u8>), Dropped> {
            self.open_with(now, wall(now), from.addr, datagram)
        }
    }

    fn alice() -> End {
        End::new(1, ALICE)
    }

    fn bob() -> End {
        End::new(2, BOB)
    }

    /// Alice sealed her START for bob at 0, bob opened it at 1.
    fn called() -> (End, End, Vec<u8>) {
        let (mut a, mut b) = (alice(), bob());
        let init = a.seal(0, &b, START, true).expect("alice seals her START");
        let (opened, line) = b.open(1, &a, &init).expect("bob opens the Init");
        assert_eq!(line, START);
        assert_eq!(opened.kind, Kind::Start);
        (a, b, init)
    }

    /// ... and bob answered RINGING at 2, which alice opened at 3.
    fn established() -> (End, End) {
        let (mut a, mut b, _) = called();
        let response = b.seal(2, &a, RINGING, false).expect("bob answers");
        let (opened, line) = a.open(3, &b, &response).expect("alice opens the Response");
        assert_eq!((opened.kind, line.as_slice()), (Kind::Answer, RINGING));
        (a, b)
    }

    /// Seals `inner` at `from` and opens it at `to`; returns what `to` opened.
    fn pass(now: u64, from: &mut End, to: &mut End, inner: &[u8]) -> Opened {
        let datagram = from.seal(now, to, inner, false).expect("sealed");
        let (opened, got) = to.open(now, from, &datagram).expect("opened");
        assert_eq!(got, inner);
        opened
    }

    /// An RTP packet of an L16 frame: 12 bytes of header, 1024 of payload.
    fn rtp(seq: u16) -> Vec<u8> {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0; 8]);
        packet.extend((0..1024).map(|i| (i as u8).wrapping_add(seq as u8)));
        packet
    }

    mod call {
        use super::*;

        #[test]
        fn a_whole_call_both_ways_with_the_same_code_at_both_ends() {
            let (mut a, mut b) = (alice(), bob());
            let init = a.seal(0, &b, START, true).expect("alice seals her START");
            assert_eq!(init[0], INIT);
            assert_eq!(init.len(), INIT_OVERHEAD + START.len());
            assert!(
                !init.windows(5).any(|w| w == b"alice"),
                "the START is hidden"
            );
            let (opened, line) = b.open(1, &a, &init).expect("bob opens the Init");
            assert_eq!(line, START);
            assert_eq!((opened.kind, opened.key), (Kind::Start, a.key()));
            assert_eq!((opened.code, opened.repeat), (None, false));
            assert_eq!(b.sessions.session(ALICE), None, "not answered yet");

            let response = b.seal(2, &a, RINGING, false).expect("bob answers");
            assert_eq!(response[0], RESPONSE);
            assert_eq!(response.len(), RESPONSE_OVERHEAD + RINGING.len());
            let (answer, line) = a.open(3, &b, &response).expect("alice opens");
            assert_eq!(line, RINGING);
            assert_eq!(answer.kind, Kind::Answer);
            assert_eq!(answer.key, b.key());
            let code = answer.code.expect("the answer has a code");
            let at_bob = b.sessions.session(ALICE).expect("bob's session");
            let at_alice = a.sessions.session(BOB).expect("alice's session");
            assert_eq!(at_bob.code, code);
            assert_eq!(at_alice.code, code);
            assert_eq!(at_bob.key, a.key());
            assert_eq!(at_alice.key, b.key());

            let accept = pass(4, &mut b, &mut a, ACCEPT);
            assert_eq!(accept.kind, Kind::Transport);
            assert_eq!((accept.key, accept.code), (b.key(), Some(code)));
            let media = pass(5, &mut a, &mut b, &rtp(1));
            assert_eq!((media.kind, media.key), (Kind::Transport, a.key()));
            let sealed = a.seal(6, &b, &rtp(2), false).expect("sealed");
            assert_eq!(sealed.len(), rtp(2).len() + OVERHEAD);
            assert_eq!(sealed[0], TRANSPORT);
            assert_eq!(sealed[1..9], 1u64.to_be_bytes(), "alice's second packet");
            assert!(!sealed.windows(16).any(|w| w == &rtp(2)[20..36]));
            assert_eq!(a.sessions.counters().handshakes, 1);
            assert_eq!(b.sessions.counters().handshakes, 1);
            assert_eq!(
                a.sessions.counters(),
                Counters {
                    handshakes: 1,
                    ..Counters::default()
                }
            );
        }

        #[test]
        fn randomness_is_drawn_once_per_handshake_and_never_per_packet() {
            let (mut a, mut b, init) = called();
            assert_eq!((a.draws, b.draws), (1, 1));
            a.seal(1, &b, START, true).expect("a retransmission");
            b.open(2, &a, &init).expect("a repeat");
            let response = b.seal(3, &a, RINGING, false).expect("answer");
            a.open(4, &b, &response).expect("answer opened");
            for now in 5..50 {
                pass(now, &mut a, &mut b, &rtp(now as u16));
                pass(now, &mut b, &mut a, &rtp(now as u16));
            }
            assert_eq!((a.draws, b.draws), (1, 1));
        }

        #[test]
        fn the_datagrams_are_noise_ik_with_parlo_s_prologue_payloads_and_keys() {
            let (mut a, mut b, init) = called();
            let response = b.seal(2, &a, RINGING, false).expect("answer");
            a.open(3, &b, &response).expect("opened");

            // The same handshake, made with snow alone from the same keys and ephemerals.
            let bob_key = b.key();
            let reference = |payload1: &[u8], payload2: &[u8]| {
                let mut i = seeded::builder(PATTERN, eph(1, 1))
                    .local_private_key(a.secret.as_bytes())
                    .and_then(|x| x.remote_public_key(bob_key.as_bytes()))
                    .and_then(|x| x.prologue(PROLOGUE))
                    .and_then(snow::Builder::build_initiator)
                    .expect("initiator");
                let mut r = seeded::builder(PATTERN, eph(2, 1))
                    .local_private_key(b.secret.as_bytes())
                    .and_then(|x| x.prologue(PROLOGUE))
                    .and_then(snow::Builder::build_responder)
                    .expect("responder");
                let mut msg1 = vec![0u8; 1000];
                let n = i.write_message(payload1, &mut msg1).expect("msg1");
                msg1.truncate(n);
                r.read_message(&msg1, &mut [0; 1000]).expect("read msg1");
                let mut msg2 = vec![0u8; 1000];
                let n = r.write_message(payload2, &mut msg2).expect("msg2");
                msg2.truncate(n);
                i.read_message(&msg2, &mut [0; 1000]).expect("read msg2");
                let hash = i.get_handshake_hash().to_vec();
                let split = i.dangerously_get_raw_split();
                (
                    msg1,
                    msg2,
                    hash,
                    split,
                    i.into_transport_mode().expect("transport"),
                )
            };
            let mut payload1 = WALL.to_be_bytes().to_vec();
            payload1.extend_from_slice(START);
            let (msg1, msg2, hash, (k1, k2), mut snow_alice) = reference(&payload1, RINGING);
            assert_eq!(
                init[1..],
                msg1[..],
                "Init = 0x01 ‖ msg1, payload timestamp ‖ START"
            );
            assert_eq!(response[1..], msg2[..], "Response = 0x02 ‖ msg2");
            let code = a.sessions.session(BOB).expect("session").code;
            let first = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
            assert_eq!(code.value(), first % 100_000_000);

            // Transport: ChaCha20-Poly1305, Noise's nonce, the header as associated data;
            // alice sends with the first key of the split, bob with the second.
            let open_with = |key: [u8; 32], datagram: &[u8]| {
                let cipher = ChaCha20Poly1305::new(&key.into());
                let (header, rest) = datagram.split_at(HEADER_LEN);
                let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
                let counter = u64::from_be_bytes(header[1..].try_into().expect("8 bytes"));
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let mut plain = body.to_vec();
                let tag: [u8; 16] = tag.try_into().expect("16 bytes");
                cipher
                    .decrypt_in_place_detached(&nonce.into(), header, &mut plain, &tag.into())
                    .map(|()| plain)
            };
            let from_alice = a
                .seal(4, &b, b"CLOSE call=0000002a", false)
                .expect("sealed");
            assert_eq!(
                open_with(k1, &from_alice).as_deref(),
                Ok(&b"CLOSE call=0000002a"[..])
            );
            let from_bob = b
                .seal(4, &a, b"CLOSED call=0000002a", false)
                .expect("sealed");
            assert_eq!(
                open_with(k2, &from_bob).as_deref(),
                Ok(&b"CLOSED call=0000002a"[..])
            );
            assert!(
                open_with(k2, &from_alice).is_err(),
                "control: the other key fails"
            );

            // REKEY is snow's: after a key change alice's packets open under snow's
            // rekeyed first key.
            let later = a
                .seal(200_000, &b, b"x", false)
                .expect("sealed after a rekey");
            assert_eq!(later[0], TRANSPORT_PHASE_1);
            snow_alice.rekey_outgoing();
            let mut snow_says = [0u8; 17];
            snow_alice
                .write_message(b"x", &mut snow_says)
                .expect("snow seals");
            let ours = CipherKey::new(k1).rekeyed();
            let mut buf = *b"x";
            let tag = ours.seal(0, &[], &mut buf).expect("sealed");
            assert_eq!(&snow_says[..1], &buf);
            assert_eq!(&snow_says[1..], tag.as_slice());
            // The same REKEY, in raw bytes, opens alice's packet of phase 1.
            let mut rekeyed = [0u8; 32];
            ChaCha20Poly1305::new(&k1.into())
                .encrypt_in_place_detached(&nonce(u64::MAX), &[], &mut rekeyed)
                .expect("rekey");
            assert_eq!(open_with(rekeyed, &later).as_deref(), Ok(&b"x"[..]));
            assert!(
                open_with(k1, &later).is_err(),
                "control: not under the old key"
            );
        }

        #[test]
        fn the_short_code_is_eight_digits_in_two_groups() {
            assert_eq!(ShortCode(12_345_678).to_string(), "1234-5678");
            assert_eq!(ShortCode(42).to_string(), "0000-0042");
            assert_eq!(
                ShortCode::of_hash(&[0xff; 32]).value(),
                u32::MAX % 100_000_000
            );
            assert_eq!(ShortCode::of_hash(&[0, 0, 1, 0, 9]).value(), 256);
        }

        #[test]
        fn the_first_byte_tells_this_layer_s_datagrams() {
            assert!(!is_secure(0x00));
            for byte in [INIT, RESPONSE, TRANSPORT, TRANSPORT_PHASE_1] {
                assert!(is_secure(byte));
            }
            assert!(!is_secure(0x05));
            assert!(!is_secure(b'A'));
            assert!(!is_secure(0x80));
            assert_eq!(OVERHEAD, 25);
            assert_eq!(MAX_DATAGRAM, 1305);
        }

        #[test]
        fn sealing_needs_a_session_with_that_address_and_that_key() {
            let (mut a, b) = established();
            let carol = End::new(3, CAROL);
            assert_eq!(
                a.seal_with(5, wall(5), BOB, &carol.key(), b"ACK call=0000002a", false),
                Err(SealError::NoSession)
            );
            assert_eq!(
                a.seal_with(5, wall(5), CAROL, &b.key(), b"ACK call=0000002a", false),
                Err(SealError::NoSession)
            );
            assert_eq!(
                a.seal(5, &b, &[b'A'; MAX_INNER + 1], false),
                Err(SealError::TooLarge)
            );
            let mut small = [0u8; 30];
            let got = a.sessions.seal(
                5,
                Timestamp(wall(5)),
                BOB,
                &b.key(),
                b"ACK call=0000002a",
                false,
                &mut small,
                &mut || [0; 32],
            );
            assert_eq!(got, Err(SealError::TooLarge));
            assert!(a.seal(5, &b, &[b'A'; MAX_INNER], false).is_ok());
        }

        #[test]
        fn errors_read_as_sentences() {
            let all = [
                Dropped::Malformed,
                Dropped::Auth,
                Dropped::Replay,
                Dropped::Stale,
                Dropped::NoSession,
                Dropped::RateLimited,
            ];
            let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
            for (i, text) in texts.iter().enumerate() {
                assert!(text.len() > 20, "{text}");
                assert!(!texts[..i].contains(text), "{text} twice");
            }
            for error in [
                SealError::NoSession,
                SealError::TooLarge,
                SealError::Handshake,
            ] {
                assert!(error.to_string().len() > 20);
            }
        }
    }

    mod retransmission {
        use super::*;

        #[test]
        fn the_caller_resends_the_very_same_init_and_a_new_start_makes_a_new_one() {
            let (mut a, b) = (alice(), bob());
            let first = a.seal(0, &b, START, true).expect("init");
            let again = a.seal(500, &b, START, true).expect("retransmission");
            assert_eq!(first, again);
            assert_eq!(a.draws, 1);
            let other = a
                .seal(600, &b, b"START alice call=0000002b v=2", true)
                .expect("another call");
            assert_ne!(other[1..33], first[1..33], "a new ephemeral");
            assert_eq!(a.draws, 2);
            // The first Init's handshake is gone: the second START replaced it.
            let third = a.seal(700, &b, START, true).expect("init");
            assert_ne!(third, first);
        }

        #[test]
        fn init_timestamps_grow_even_when_the_wall_clock_stands_still_or_goes_back() {
            let (mut a, mut b) = (alice(), bob());
            let one = a
                .seal_with(0, WALL, BOB, &b.key(), START, true)
                .expect("one");
            let two = a
                .seal_with(1, WALL, BOB, &b.key(), b"START alice call=0000002b", true)
                .expect("two");
            let three = a
                .seal_with(
                    2,
                    WALL - 5,
                    BOB,
                    &b.key(),
                    b"START alice call=0000002c",
                    true,
                )
                .expect("three");
            for init in [&one, &two, &three] {
                let (opened, _) = b.open_with(3, WALL, ALICE, init).expect("fresh");
                assert!(!opened.repeat);
            }
            // Control: opened again from elsewhere, the same Inits are replays.
            assert_eq!(
                b.open_with(4, WALL, CAROL, &two).map(|_| ()),
                Err(Dropped::Replay)
            );
        }

        #[test]
        fn a_copy_of_the_init_before_the_answer_is_a_repeat_even_if_it_came_late() {
            let (a, mut b, init) = called();
            // No timestamp check for a copy: even with bob's clock far ahead.
            let late = wall(1) + 10 * 300_000 * 1_000_000;
            let (opened, line) = b.open_with(900, late, ALICE, &init).expect("a repeat");
            assert_eq!(line, START);
            assert!(opened.repeat);
            assert_eq!(
                (opened.kind, opened.key, opened.code),
                (Kind::Start, a.key(), None)
            );
            assert_eq!(b.sessions.poll_transmit(), None, "nothing to resend yet");
            assert_eq!(b.draws, 1, "no handshake work for a copy");
        }

        #[test]
        fn once_answered_each_copy_of_the_init_gets_the_same_response_again() {
            let (mut a, mut b, init) = called();
            let response = b.seal(2, &a, RINGING, false).expect("answer");
            // The Response is lost; alice retransmits her START.
            for now in [500, 1500] {
                let resent = a.seal(now, &b, START, true).expect("retransmission");
                assert_eq!(resent, init);
                let (opened, line) = b.open(now, &a, &resent).expect("a repeat");
                assert_eq!(line, START);
                assert!(opened.repeat);
                let code = b.sessions.session(ALICE).expect("session").code;
                assert_eq!(opened.code, Some(code));
                let (to, bytes) = b.sessions.poll_transmit().expect("the Response again");
                assert_eq!((to, bytes), (ALICE, &response[..]));
                assert_eq!(b.sessions.poll_transmit(), None, "handed out once");
            }
            let (opened, _) = a.open(1600, &b, &response).expect("alice gets it at last");
            assert_eq!(opened.kind, Kind::Answer);
            // Another copy of the Response (the network, or the second resend) is a replay.
            assert_eq!(
                a.open(1601, &b, &response).map(|_| ()),
                Err(Dropped::Replay)
            );
            assert_eq!(a.sessions.counters().replays, 1);
            pass(1602, &mut a, &mut b, b"ACK call=0000002a");
        }

        #[test]
        fn a_copy_is_a_repeat_only_until_the_caller_was_heard_or_the_window_closed() {
            // Heard: alice's transport packet proves she has the answer.
            let (mut a, mut b, init) = called();
            let response = b.seal(2, &a, RINGING, false).expect("answer");
            a.open(3, &b, &response).expect("answer opened");
            pass(4, &mut a, &mut b, b"ACK call=0000002a");
            assert_eq!(b.open(5, &a, &init).map(|_| ()), Err(Dropped::Replay));
            assert_eq!(b.sessions.poll_transmit(), None);

            // The window: a copy 10 s after the Init first came is still a repeat, later not.
            let (a, mut b, init) = called();
            b.seal(2, &a, RINGING, false).expect("answer");
            let edge = 1 + REPEAT_WINDOW;
            assert!(b.open(edge, &a, &init).expect("repeat").0.repeat);
            let _ = b.sessions.poll_transmit();
            assert_eq!(
                b.open(edge + 1, &a, &init).map(|_| ()),
                Err(Dropped::Replay)
            );
            assert_eq!(b.sessions.poll_transmit(), None);

            // The same for a START never answered (a glare winner ignores one).
            let (a, mut b, init) = called();
            assert_eq!(
                b.open(edge + 1, &a, &init).map(|_| ()),
                Err(Dropped::Replay)
            );
        }

        #[test]
        fn a_copy_from_another_address_is_not_a_repeat() {
            let (_, mut b, init) = called();
            assert_eq!(
                b.open_with(2, wall(2), CAROL, &init).map(|_| ()),
                Err(Dropped::Replay)
            );
            assert_eq!(b.sessions.session(CAROL), None);
        }

        #[test]
        fn no_response_is_longer_than_the_init_it_answers() {
            let (mut a, mut b) = (alice(), bob());
            let start = b"START alice";
            let init = a.seal(0, &b, start, true).expect("init");
            b.open(1, &a, &init).expect("opened");
            // 49 + n <= 105 + 11: answers up to 67 bytes fit.
            let long = [b'A'; 68];
            assert_eq!(b.seal(2, &a, &long, false), Err(SealError::TooLarge));
            assert_eq!(b.sessions.session(ALICE), None, "still waiting");
            let fits = [b'A'; 67];
            let response = b.seal(3, &a, &fits, false).expect("fits");
            assert_eq!(response.len(), init.len());
            assert_eq!(a.open(4, &b, &response).expect("opened").1, fits);
        }
    }

    mod replayed_init {
        use super::*;

        /// A fresh alice (who does not remember her last timestamp) calling bob at `ns`.
        fn init_at(b: &End, ns: u64, line: &[u8]) -> Vec<u8> {
            let mut fresh = alice();
            fresh
                .seal_with(0, ns, BOB, &b.key(), line, true)
                .expect("init")
        }

        #[test]
        fn an_init_not_newer_than_the_last_from_its_key_is_a_replay_and_changes_nothing() {
            let (a, mut b, _) = called();
            let same_time = init_at(&b, WALL, b"START alice call=00000099");
            let older = init_at(&b, WALL - 1, b"START alice call=00000099");
            assert_eq!(b.open(5, &a, &same_time).map(|_| ()), Err(Dropped::Replay));
            assert_eq!(b.open(6, &a, &older).map(|_| ()), Err(Dropped::Replay));
            assert_eq!(b.sessions.counters().replays, 2);
            // The first START still waits for its answer, and alice can open it.
            let mut a = a;
            let response = b.seal(7, &a, RINGING, false).expect("answers the first");
            assert_eq!(a.open(8, &b, &response).expect("opened").1, RINGING);
            // Control: a newer one is accepted.
            let newer = init_at(&b, WALL + 1, b"START alice call=00000099");
            assert!(b.open(9, &a, &newer).is_ok());
        }

        #[test]
        fn an_init_too_far_from_our_clock_either_way_is_stale() {
            let skew = Config::default().max_skew * 1_000_000;
            for (ns, stale) in [
                (WALL - skew - 1, true),
                (WALL + skew + 1, true),
                (WALL - skew, false),
                (WALL + skew, false),
            ] {
                let mut b = End::new(2, BOB);
                let init = init_at(&b, ns, START);
                let got = b.open_with(0, WALL, ALICE, &init).map(|(o, _)| o.kind);
                if stale {
                    assert_eq!(got, Err(Dropped::Stale), "{ns}");
                    assert_eq!(b.sessions.counters().stale, 1);
                    let a = alice();
                    assert_eq!(b.seal(1, &a, RINGING, false), Err(SealError::NoSession));
                } else {
                    assert_eq!(got, Ok(Kind::Start), "{ns}");
                }
            }
        }

        #[test]
        fn a_stale_init_does_not_raise_the_greatest_timestamp() {
            let mut b = bob();
            let skew = Config::default().max_skew * 1_000_000;
            let future = init_at(&b, WALL + skew + 1_000, START);
            assert_eq!(
                b.open_with(0, WALL, ALICE, &future).map(|_| ()),
                Err(Dropped::Stale)
            );
            let now = init_at(&b, WALL, START);
            assert!(b.open_with(0, WALL, ALICE, &now).is_ok());
        }

        #[test]
        fn the_greatest_timestamps_of_256_keys_are_kept_the_least_recently_seen_forgotten() {
            let mut s = Sessions::new(SecretKey::from_bytes([2; 32]), Config::default());
            let key = |i: usize| {
                let mut bytes = [7u8; 32];
                bytes[..2].copy_from_slice(&(i as u16).to_le_bytes());
                PublicKey(bytes)
            };
            for i in 0..MAX_KEYS {
                s.tick += 1;
                s.record_timestamp(key(i), 100 + i as u64);
            }
            s.tick += 1;
            s.record_timestamp(key(0), 50); // seen again (an older one: the greatest stays)
            s.tick += 1;
            s.record_timestamp(key(MAX_KEYS), 1);
            assert_eq!(s.seen.len(), MAX_KEYS);
            let greatest = |s: &Sessions, k: PublicKey| {
                s.seen
                    .iter()
                    .find(|seen| seen.key == k)
                    .map(|seen| seen.greatest)
            };
            assert_eq!(greatest(&s, key(0)), Some(100));
            assert_eq!(
                greatest(&s, key(1)),
                None,
                "the least recently seen is forgotten"
            );
            assert_eq!(greatest(&s, key(2)), Some(102));
            assert_eq!(greatest(&s, key(MAX_KEYS)), Some(1));
        }
    }

    mod glare {
        use super::*;

        const ALICE_START: &[u8] = b"START alice call=00000050 v=2 codecs=L16,PCMU";
        const BOB_START: &[u8] = b"START bob call=00000010 v=2 codecs=L16,PCMU";

        /// Both dialled each other, and each opened the other's Init.
        fn crossed() -> (End, End) {
            let (mut a, mut b) = (alice(), bob());
            let from_alice = a.seal(0, &b, ALICE_START, true).expect("alice's Init");
            let from_bob = b.seal(0, &a, BOB_START, true).expect("bob's Init");
            assert_eq!(
                b.open(1, &a, &from_alice).expect("bob opens").1,
                ALICE_START
            );
            assert_eq!(a.open(1, &b, &from_bob).expect("alice opens").1, BOB_START);
            (a, b)
        }

        #[test]
        fn the_loser_answers_the_winner_s_start_and_the_winner_s_ack_uses_that_session() {
            let (mut a, mut b) = crossed();
            // Alice's call loses (higher id): she answers bob's START.
            let accept = a
                .seal(2, &b, b"ACCEPT call=00000010 codec=L16", false)
                .expect("sealed");
            assert_eq!(accept[0], RESPONSE, "the waiting responder answers first");
            let (opened, _) = b.open(3, &a, &accept).expect("bob's call is answered");
            assert_eq!(opened.kind, Kind::Answer);
            // Bob's ACK names his own call: it goes over that session, not as an answer to
            // alice's START, which bob ignores.
            let ack = b.seal(4, &a, b"ACK call=00000010", false).expect("sealed");
            assert_eq!(ack[0], TRANSPORT);
            let (opened, line) = a.open(5, &b, &ack).expect("alice opens it");
            assert_eq!(
                (opened.kind, line.as_slice()),
                (Kind::Transport, &b"ACK call=00000010"[..])
            );
            assert_eq!(
                a.sessions.session(BOB).map(|s| s.code),
                b.sessions.session(ALICE).map(|s| s.code)
            );
            pass(6, &mut a, &mut b, &rtp(1));
            pass(6, &mut b, &mut a, &rtp(1));
        }

        #[test]
        fn a_response_from_the_peer_completes_our_own_call_beside_its_waiting_start() {
            let (mut a, mut b) = crossed();
            // Here bob answers alice's START: alice's own initiator completes.
            let ringing = b
                .seal(2, &a, b"RINGING call=00000050", false)
                .expect("sealed");
            assert_eq!(ringing[0], RESPONSE);
            let (opened, _) = a.open(3, &b, &ringing).expect("alice's call answered");
            assert_eq!(opened.kind, Kind::Answer);
            // Bob's START still waits at alice: she can still answer it (with BUSY).
            let busy = a.seal(4, &b, b"BUSY call=00000010", false).expect("sealed");
            assert_eq!(busy[0], RESPONSE);
            assert_eq!(b.open(5, &a, &busy).expect("opened").0.kind, Kind::Answer);
        }

        #[test]
        fn media_never_answers_a_waiting_start() {
            let (mut a, mut b) = established();
            // Alice calls bob again from the same address while their call goes on.
            let init = a
                .seal(10, &b, b"START alice call=00000077 v=2", true)
                .expect("a new Init");
            b.open(11, &a, &init).expect("opened");
            let media = b.seal(12, &a, &rtp(3), false).expect("sealed");
            assert_eq!(media[0], TRANSPORT, "RTP goes over the call's session");
            assert_eq!(a.open(12, &b, &media).expect("opened").1, rtp(3));
            // A line of the current call too; the new call's answer makes a Response.
            let close = b
                .seal(13, &a, b"CLOSE call=0000002a", false)
                .expect("sealed");
            assert_eq!(close[0], TRANSPORT);
            let busy = b
                .seal(14, &a, b"BUSY call=00000077", false)
                .expect("sealed");
            assert_eq!(busy[0], RESPONSE);
        }

        #[test]
        fn a_new_call_from_the_same_address_replaces_the_session_and_late_packets_still_open() {
            let (mut a, mut b) = established();
            let late = a
                .seal(10, &b, &rtp(1), false)
                .expect("a packet of the first call");
            let old_code = b.sessions.session(ALICE).expect("session").code;
            let init = a
                .seal(20, &b, b"START alice call=00000077 v=2", true)
                .expect("a new call");
            b.open(21, &a, &init).expect("opened");
            let response = b
                .seal(22, &a, b"RINGING call=00000077", false)
                .expect("answer");
            a.open(23, &b, &response).expect("opened");
            let new_code = b.sessions.session(ALICE).expect("session").code;
            assert_ne!(new_code, old_code);
            assert_eq!(a.sessions.session(BOB).map(|s| s.code), Some(new_code));
            // The late packet of the first call opens with the previous session.
            let (opened, _) = b.open(24, &a, &late).expect("late packet opens");
            assert_eq!(opened.code, Some(old_code));
            // New packets use the new session.
            assert_eq!(pass(25, &mut a, &mut b, &rtp(2)).code, Some(new_code));
            assert_eq!(pass(25, &mut b, &mut a, &rtp(2)).code, Some(new_code));
        }

        #[test]
        fn packets_use_the_new_session_once_the_peer_has_sent_on_it() {
            let (mut a, mut b) = established();
            let old_code = b.sessions.session(ALICE).expect("session").code;
            pass(4, &mut a, &mut b, b"ACK call=0000002a");
            // Alice calls again from the same address; bob's BUSY is lost for now.
            let init = a
                .seal(20, &b, b"START alice call=00000077 v=2", true)
                .expect("a new call");
            b.open(21, &a, &init).expect("opened");
            let busy = b
                .seal(22, &a, b"BUSY call=00000077", false)
                .expect("answer");
            assert_ne!(b.sessions.session(ALICE).expect("session").code, old_code);
            // Meanwhile bob's packets go over the session alice surely holds.
            assert_eq!(pass(23, &mut b, &mut a, &rtp(1)).code, Some(old_code));
            // The BUSY arrives: alice sends on the new session, and so does bob then.
            let new_code = a.open(24, &b, &busy).expect("opened").0.code;
            assert_eq!(pass(25, &mut a, &mut b, &rtp(2)).code, new_code);
            assert_eq!(pass(26, &mut b, &mut a, &rtp(3)).code, new_code);
        }

        #[test]
        fn a_third_session_drops_the_one_used_less_recently() {
            let (mut a, mut b) = established();
            let call_key = a.key();
            // Two strangers' Inits from alice's address (address spoofing), each answered
            // with BUSY: the call with alice survives both.
            for (seed, now) in [(5u8, 10u64), (6, 20)] {
                let mut stranger = End::new(seed, ALICE);
                let init = stranger
                    .seal(now, &b, b"START eve call=00000099", true)
                    .expect("init");
                let (opened, _) = b.open(now, &stranger, &init).expect("opened");
                b.seal_with(
                    now,
                    wall(now),
                    ALICE,
                    &opened.key,
                    b"BUSY call=00000099",
                    false,
                )
                .expect("busy");
                pass(now + 1, &mut a, &mut b, &rtp(now as u16));
                pass(now + 2, &mut b, &mut a, &rtp(now as u16));
            }
            let datagram = b
                .seal_with(30, wall(30), ALICE, &call_key, &rtp(9), false)
                .expect("the call's session is still there");
            assert_eq!(a.open(30, &b, &datagram).expect("opened").1, rtp(9));
        }
    }

    mod tampering {
        use super::*;

        /// Every single-byte change of `datagram` is dropped with `expected` (any drop for
        /// the type byte), and none changes anything: afterwards `datagram` itself opens.
        fn every_flip_is_dropped(
            end: &mut End,
            from: SocketAddr,
            now: u64,
            datagram: &[u8],
            expected: Dropped,
        ) {
            let before = end.sessions.counters();
            let mut flips = 0;
            for i in 0..datagram.len() {
                for mask in [0x01, 0x80] {
                    let mut bad = datagram.to_vec();
                    bad[i] ^= mask;
                    let got = end.open_with(now, wall(now), from, &bad).map(|(o, _)| o);
                    if i == 0 {
                        assert!(got.is_err(), "type byte 0x{:02x}", bad[0]);
                    } else {
                        assert_eq!(got, Err(expected), "byte {i} ^ {mask:#x}");
                    }
                    flips += 1;
                }
            }
            let after = end.sessions.counters();
            let dropped = |c: Counters| {
                c.auth_failures + c.replays + c.stale + c.rate_limited + c.no_session + c.malformed
            };
            assert_eq!(
                dropped(after) - dropped(before),
                flips,
                "every drop counted"
            );
            assert!(
                end.open_with(now, wall(now), from, datagram).is_ok(),
                "state unchanged"
            );
        }

        #[test]
        fn a_changed_init_does_not_authenticate() {
            let (mut a, mut b) = (alice(), bob());
            let init = a.seal(0, &b, START, true).expect("init");
            every_flip_is_dropped(&mut b, ALICE, 1, &init, Dropped::Auth);
            assert_eq!(
                b.sessions.counters().auth_failures,
                2 * (init.len() as u64 - 1)
            );
        }

        #[test]
        fn a_changed_response_does_not_authenticate_and_the_real_one_still_does() {
            let (mut a, mut b, _) = called();
            let response = b.seal(2, &a, RINGING, false).expect("answer");
            every_flip_is_dropped(&mut a, BOB, 3, &response, Dropped::Auth);
            assert!(a.sessions.session(BOB).is_some());
        }

        #[test]
        fn a_changed_transport_datagram_does_not_authenticate() {
            let (mut a, mut b) = established();
            let datagram = a.seal(4, &b, &rtp(1), false).expect("sealed");
            every_flip_is_dropped(&mut b, ALICE, 4, &datagram, Dropped::Auth);
            // And after a rekey, in the other phase.
            let later = a
                .seal(200_000, &b, b"CLOSE call=0000002a", false)
                .expect("sealed");
            assert_eq!(later[0], TRANSPORT_PHASE_1);
            every_flip_is_dropped(&mut b, ALICE, 200_000, &later, Dropped::Auth);
        }

        #[test]
        fn a_replayed_transport_datagram_is_dropped() {
            let (mut a, mut b) = established();
            let datagram = a.seal(4, &b, &rtp(1), false).expect("sealed");
            b.open(4, &a, &datagram).expect("the first time");
            assert_eq!(b.open(5, &a, &datagram).map(|_| ()), Err(Dropped::Replay));
            assert_eq!(b.sessions.counters().replays, 1);
            // Far behind the window: still a replay, not a fresh packet.
            let first = a.seal(6, &b, b"x", false).expect("sealed");
            for _ in 0..crate::replay::WINDOW + 10 {
                a.seal(6, &b, b"y", false).expect("sealed");
            }
            let newest = a.seal(6, &b, b"z", false).expect("sealed");
            b.open(6, &a, &newest).expect("opened");
            assert_eq!(b.open(7, &a, &first).map(|_| ()), Err(Dropped::Replay));
        }

        #[test]
        fn datagrams_from_an_address_without_a_session_are_dropped() {
            let (mut a, mut b) = established();
            let datagram = a.seal(4, &b, &rtp(1), false).expect("sealed");
            assert_eq!(
                b.open_with(4, wall(4), CAROL, &datagram).map(|_| ()),
                Err(Dropped::NoSession)
            );
            let (_, mut b2, _) = called();
            // (Another line than the RINGING alice got: same keys and ephemerals would
            // make the very same Response, a copy.)
            let response = b2.seal(2, &a, ACCEPT, false).expect("answer");
            // Alice has no call waiting for bob any more.
            assert_eq!(
                a.open(5, &b2, &response).map(|_| ()),
                Err(Dropped::NoSession)
            );
            assert_eq!(a.sessions.counters().no_session, 1);
        }

        #[test]
        fn datagrams_of_the_wrong_size_or_type_are_malformed() {
            let (mut a, mut b) = established();
            let good = a.seal(4, &b, b"ping", false).expect("sealed");
            let mut max_counter = good.clone();
            max_counter[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
            let too_long = vec![TRANSPORT; MAX_DATAGRAM + 1];
            let cases: [&[u8]; 9] = [
                &[],
                &[0x00, 1, 2, 3],
                &[0x05; 100],
                &[INIT; INIT_OVERHEAD - 1],
                &[RESPONSE; RESPONSE_OVERHEAD - 1],
                &[TRANSPORT; OVERHEAD - 1],
                &[TRANSPORT_PHASE_1; OVERHEAD - 1],
                &max_counter,
                &too_long,
            ];
            for case in cases {
                assert_eq!(
                    b.open(5, &a, case).map(|_| ()),
                    Err(Dropped::Malformed),
                    "{:?}",
                    &case[..case.len().min(12)]
                );
            }
            assert_eq!(b.sessions.counters().malformed, cases.len() as u64);
            // Too small a buffer for the inner packet: malformed, and nothing changes.
            let mut tiny = [0u8; 3];
            let got = b
                .sessions
                .open(5, Timestamp(wall(5)), ALICE, &good, &mut tiny, &mut || {
                    [0; 32]
                });
            assert_eq!(got, Err(Dropped::Malformed));
            assert_eq!(b.open(5, &a, &good).expect("opens").1, b"ping");
        }
    }

    mod rekey {
        use super::*;

        fn quick() -> Config {
            Config {
                rekey_after: 100,
                ..roomy()
            }
        }

        fn established_quick() -> (End, End) {
            let (mut a, mut b) = (
                End::with_config(1, ALICE, quick()),
                End::with_config(2, BOB, quick()),
            );
            let init = a.seal(0, &b, START, true).expect("init");
            b.open(0, &a, &init).expect("opened");
            let response = b.seal(0, &a, RINGING, false).expect("answer");
            a.open(0, &b, &response).expect("opened");
            (a, b)
        }

        #[test]
        fn the_sending_key_changes_every_rekey_after_and_the_phase_bit_says_so() {
            let (mut a, mut b) = established_quick();
            let mut types = Vec::new();
            for now in (0..=300).step_by(50) {
                let datagram = a.seal(now, &b, &rtp(now as u16), false).expect("sealed");
                types.push(datagram[0]);
                b.open(now, &a, &datagram).expect("opens");
            }
            // Keys change at 100, 200 and 300.
            assert_eq!(types, [3, 3, 4, 4, 3, 3, 4]);
            assert_eq!(a.sessions.session(BOB).expect("session").rekeys, 3);
            assert_eq!(b.sessions.session(ALICE).expect("session").rekeys, 3);
        }

        #[test]
        fn reordered_lost_and_duplicated_packets_around_two_key_changes_all_arrive_once() {
            let (mut a, mut b) = established_quick();
            // 30 packets, 10 ms apart: the key changes at 100 and 200.
            let packets: Vec<Vec<u8>> = (0..30u16)
                .map(|i| {
                    a.seal(u64::from(i) * 10, &b, &rtp(i), false)
                        .expect("sealed")
                })
                .collect();
            assert_eq!(packets[9][0], TRANSPORT);
            assert_eq!(packets[10][0], TRANSPORT_PHASE_1);
            assert_eq!(packets[20][0], TRANSPORT);
            // Each packet late by up to 4 places, across both changes; some twice.
            let order = [
                1, 0, 2, 3, 5, 4, 6, 10, 11, 7, 8, 12, 9, 13, 14, 16, 15, 17, 20, 21, 18, 22, 19,
                23, 24, 26, 25, 27, 29, 28,
            ];
            let mut got = Vec::new();
            for (step, &i) in order.iter().enumerate() {
                let now = 300 + step as u64;
                let (_, inner) = b.open(now, &a, &packets[i]).expect("opens");
                got.push(inner);
                if i % 7 == 0 {
                    assert_eq!(
                        b.open(now, &a, &packets[i]).map(|_| ()),
                        Err(Dropped::Replay)
                    );
                }
            }
            got.sort_by_key(|p| u16::from_be_bytes([p[2], p[3]]));
            let sent: Vec<Vec<u8>> = (0..30).map(rtp).collect();
            assert_eq!(got, sent);
            assert_eq!(b.sessions.counters().auth_failures, 0);
        }

        #[test]
        fn a_packet_of_the_phase_before_last_does_not_open() {
            let (mut a, mut b) = established_quick();
            let old = a.seal(0, &b, b"phase 0", false).expect("sealed");
            pass(100, &mut a, &mut b, b"phase 1");
            pass(200, &mut a, &mut b, b"phase 0 again");
            // Same phase bit as the current key, two keys back: gone.
            assert_eq!(b.open(201, &a, &old).map(|_| ()), Err(Dropped::Auth));
        }

        #[test]
        fn a_forged_phase_change_moves_nothing() {
            let (mut a, mut b) = established_quick();
            let mut forged = a.seal(10, &b, b"hello", false).expect("sealed");
            forged[0] = TRANSPORT_PHASE_1;
            assert_eq!(b.open(10, &a, &forged).map(|_| ()), Err(Dropped::Auth));
            pass(20, &mut a, &mut b, b"still phase 0");
            assert_eq!(b.sessions.session(ALICE).expect("session").rekeys, 0);
        }

        #[test]
        fn each_direction_changes_its_own_key() {
            let (mut a, mut b) = established_quick();
            pass(150, &mut a, &mut b, b"alice rekeyed");
            let from_bob = b.seal(150, &a, b"bob too", false).expect("sealed");
            assert_eq!(from_bob[0], TRANSPORT_PHASE_1);
            assert_eq!(a.open(150, &b, &from_bob).expect("opens").1, b"bob too");
            // 10 ms later his key stays.
            let again = b.seal(160, &a, b"same key", false).expect("sealed");
            assert_eq!(again[0], TRANSPORT_PHASE_1);
            a.open(160, &b, &again).expect("opens");
        }
    }

    mod limits {
        use super::*;

        #[test]
        fn handshakes_beyond_the_token_bucket_are_dropped_unread() {
            let config = Config {
                handshake_burst: 3,
                handshake_rate: 2,
                ..Config::default()
            };
            let mut b = End::with_config(2, BOB, config);
            let inits: Vec<(SocketAddr, Vec<u8>)> = (0..6u8)
                .map(|i| {
                    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, i), 5001));
                    let mut caller = End::new(10 + i, addr);
                    (addr, caller.seal(0, &b, START, true).expect("init"))
                })
                .collect();
            for (addr, init) in &inits[..3] {
                assert!(b.open_with(0, WALL, *addr, init).is_ok());
            }
            let (addr, init) = &inits[3];
            assert_eq!(
                b.open_with(0, WALL, *addr, init).map(|_| ()),
                Err(Dropped::RateLimited)
            );
            assert_eq!(b.draws, 3, "no handshake work for the dropped one");
            assert_eq!(b.sessions.counters().rate_limited, 1);
            // 2 a second: one more after 500 ms, not two.
            assert!(b.open_with(500, WALL, *addr, init).is_ok());
            let (addr, init) = &inits[4];
            assert_eq!(
                b.open_with(500, WALL, *addr, init).map(|_| ()),
                Err(Dropped::RateLimited)
            );
            // A clock that goes back gives nothing.
            assert_eq!(
                b.open_with(100, WALL, *addr, init).map(|_| ()),
                Err(Dropped::RateLimited)
            );
            assert!(b.open_with(1000, WALL, *addr, init).is_ok());
        }

        #[test]
        fn copies_of_accepted_inits_pass_the_limit() {
            let config = Config {
                handshake_burst: 1,
                handshake_rate: 1,
                ..Config::default()
            };
            let (mut a, mut b) = (alice(), End::with_config(2, BOB, config));
            let init = a.seal(0, &b, START, true).expect("init");
            b.open(0, &a, &init).expect("opened");
            for _ in 0..5 {
                assert!(b.open(0, &a, &init).expect("a repeat").0.repeat);
            }
        }

        #[test]
        fn at_most_32_addresses_the_least_recently_used_forgotten() {
            let mut b = bob();
            let mut callers: Vec<End> = (0..=MAX_PEERS as u8)
                .map(|i| {
                    End::new(
                        10 + i,
                        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, i), 5001)),
                    )
                })
                .collect();
            for i in 0..callers.len() {
                let now = i as u64 * 10;
                let caller = &mut callers[i];
                let init = caller.seal(now, &b, START, true).expect("init");
                b.open(now, caller, &init).expect("opened");
                let response = b.seal(now, caller, RINGING, false).expect("answer");
                caller.open(now, &b, &response).expect("opened");
                // The first caller keeps talking; the others go quiet.
                pass(now + 1, &mut callers[0], &mut b, b"x");
            }
            assert_eq!(b.sessions.peers.len(), MAX_PEERS);
            assert!(
                b.sessions.session(callers[0].addr).is_some(),
                "in use: kept"
            );
            assert!(
                b.sessions.session(callers[1].addr).is_none(),
                "least recently used"
            );
            assert!(b.sessions.session(callers[MAX_PEERS].addr).is_some());
        }
    }

    mod relay {
        use super::*;

        #[test]
        fn a_relay_with_its_own_key_passes_neither_for_the_callee_nor_for_the_caller() {
            let (mut a, mut b) = (alice(), bob());
            let mut relay = End::new(9, CAROL);
            // The directory gave alice the relay's key (and address) for bob.
            let init = a
                .seal_with(0, wall(0), CAROL, &relay.key(), START, true)
                .expect("init");
            // Forwarded as it is, bob cannot open it.
            assert_eq!(
                b.open_with(1, wall(1), CAROL, &init).map(|_| ()),
                Err(Dropped::Auth)
            );
            // The relay can (it was sealed for its key), and learns who calls...
            let (opened, line) = relay.open(1, &a, &init).expect("the relay opens it");
            assert_eq!(opened.key, a.key());
            // ... but a START it sends on carries its own key, never alice's.
            let relayed = relay.seal(1, &b, &line, true).expect("relay's Init");
            let (at_bob, got) = b.open(2, &relay, &relayed).expect("bob opens it");
            assert_eq!(got, START);
            assert_eq!(at_bob.key, relay.key());
            assert_ne!(at_bob.key, a.key());
            // Bob's answer, forwarded as it is, does not open at alice.
            let response = b.seal(3, &relay, RINGING, false).expect("bob answers");
            assert_eq!(
                a.open_with(4, wall(4), CAROL, &response).map(|_| ()),
                Err(Dropped::Auth)
            );
            // The relay must answer alice itself: two sessions, two codes.
            let (to_bob, _) = relay.open(4, &b, &response).expect("relay opens");
            let own = relay
                .seal(5, &a, RINGING, false)
                .expect("relay answers alice");
            let (to_alice, _) = a.open_with(6, wall(6), CAROL, &own).expect("alice opens");
            assert_eq!(to_alice.key, relay.key());
            assert_ne!(to_alice.code, to_bob.code);
            assert_eq!(at_bob.code, None);
            assert_eq!(b.sessions.session(CAROL).map(|s| s.code), to_bob.code);
        }
    }

    mod any_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Random bytes under any type byte, from the peer or a stranger, never open,
            /// never panic, and change nothing.
            #[test]
            fn random_datagrams_are_dropped(
                first in 0u8..=6,
                rest in proptest::collection::vec(any::<u8>(), 0..1400),
                from_peer in any::<bool>(),
            ) {
                let (mut a, mut b) = established();
                let mut datagram = vec![first];
                datagram.extend(rest);
                let from = if from_peer { ALICE } else { CAROL };
                prop_assert!(b.open_with(10, wall(10), from, &datagram).is_err());
                pass(11, &mut a, &mut b, b"still open");
                pass(11, &mut b, &mut a, b"both ways");
            }

            /// Valid datagrams of each kind, changed (bytes flipped, cut, lengthened):
            /// dropped, and the original still opens.
            #[test]
            fn changed_datagrams_are_dropped(
                which in 0usize..3,
                edits in proptest::collection::vec((any::<usize>(), 1u8..=255, 0u8..3), 1..4),
            ) {
                let (mut a, mut b, init) = called();
                let response = b.seal(2, &a, RINGING, false).expect("answer");
                let (original, target, from) = match which {
                    0 => (init, bob(), ALICE),
                    1 => (response, {
                        // A fresh alice whose START waits for bob's answer.
                        let mut fresh = alice();
                        fresh.seal(0, &b, START, true).expect("init");
                        fresh
                    }, BOB),
                    _ => {
                        a.open(3, &b, &response).expect("answer opened");
                        let datagram = a.seal(4, &b, &rtp(1), false).expect("sealed");
                        (datagram, b, ALICE)
                    }
                };
                let mut target = target;
                let mut changed = original.clone();
                for (at, value, how) in edits {
                    match how {
                        0 if !changed.is_empty() => {
                            let i = at % changed.len();
                            changed[i] ^= value;
                        }
                        1 => changed.truncate(at % (changed.len() + 1)),
                        _ => changed.push(value),
                    }
                }
                prop_assume!(changed != original);
                prop_assert!(target.open_with(4, wall(4), from, &changed).is_err());
                prop_assert!(target.open_with(4, wall(4), from, &original).is_ok());
            }
        }
    }
}
