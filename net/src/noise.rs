//! The encrypted directory channel, without I/O: [`Channel`], a Noise session over a TCP
//! byte stream, and the keys around it ([`SecretKey`], [`fingerprint`]).
//!
//! The pattern is [`PATTERN`], `Noise_XK_25519_ChaChaPoly_BLAKE2s`: the phone (initiator)
//! knows the server's static key before it connects, the server (responder) learns the
//! phone's static key in the third handshake message. Every Noise message travels as a
//! frame: its length in 2 bytes, big-endian, then the message. The handshake binds
//! [`PROLOGUE`], which names Parlo's directory and the version of this channel, so a
//! handshake made for anything else fails.
//!
//! A Noise connection and an original JSON one share the server's port: the first byte
//! tells them apart ([`Wire::of_first_byte`]). A JSON request starts with `{` (maybe after
//! white space); a Noise connection starts with the length of the phone's first handshake
//! message, [`MSG1_LEN`] bytes, whose high byte is 0.
//!
//! # Contract
//!
//! Both ends build a [`Channel`] when the TCP connection is made, with 32 random bytes for
//! the handshake's ephemeral key (the shell draws them from the operating system; this
//! module never does). Then, after every input, the shell:
//! 1. puts what it read into [`Channel::spare`] and reports the count with
//!    [`Channel::filled`];
//! 2. takes the decrypted bytes out with [`Channel::read`] until it returns 0 (this also
//!    moves the handshake on);
//! 3. writes [`Channel::poll_transmit`] (handshake messages) and reports what was written
//!    with [`Channel::handle_written`];
//! 4. once [`Channel::is_established`], encrypts what it sends with [`Channel::seal`].
//!
//! Any error is final: the connection must be closed. Memory is fixed per channel: one
//! frame of input ([`MAX_FRAME`]), one frame of plaintext ([`MAX_PAYLOAD`]), the
//! handshake's largest message, and `snow`'s state. No input panics.

use core::fmt;

use parlo_fsm::PublicKey;
use snow::params::{DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Dh, Hash};
use snow::{HandshakeState, TransportState};

/// The Noise protocol of the directory channel.
pub const PATTERN: &str = "Noise_XK_25519_ChaChaPoly_BLAKE2s";

/// Bound into every handshake: Parlo's directory channel, version 1. Fixed size.
pub const PROLOGUE: [u8; 16] = *b"Parlo directory1";

/// Bytes of plaintext one frame carries at most (a request or response is at most
/// 1024 bytes; longer text is cut into several frames).
pub const MAX_PAYLOAD: usize = 1024;

/// The authentication tag each encrypted message carries.
pub const TAG_LEN: usize = 16;

/// Bytes of a frame's length prefix.
pub const LEN_PREFIX: usize = 2;

/// The longest frame accepted, prefix included: a longer one is an error.
pub const MAX_FRAME: usize = LEN_PREFIX + MAX_PAYLOAD + TAG_LEN;

/// The phone's first handshake message (`e, es`, no payload): 32 + 16 bytes.
pub const MSG1_LEN: usize = 48;

/// The longest handshake message (the third: `s, se`, no payload): 48 + 16 bytes.
const MAX_HANDSHAKE: usize = 64;

/// Memory a channel holds at most, for a server's budget: itself, and on the heap its two
/// buffers (2 KiB) and `snow`'s state (measured with a counting allocator: 3.6 KiB of
/// heap during the handshake, 3.4 KiB once established).
pub const CHANNEL_COST: usize = size_of::<Channel>() + 4 * 1024;

/// How a connection to the directory's port speaks, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The original JSON protocol (anything that does not start a Noise frame: what is
    /// not JSON is then answered as bad JSON, as before).
    Json,
    /// A Noise handshake: the high byte of the first message's length, 0.
    Noise,
}

impl Wire {
    /// How a connection whose first byte is `first` speaks.
    pub fn of_first_byte(first: u8) -> Wire {
        // MSG1_LEN < 256: the first frame's high length byte is 0, which neither `{` nor
        // JSON's white space is.
        if first == 0 { Wire::Noise } else { Wire::Json }
    }
}

/// Why a channel failed. Every one of them ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseError {
    /// A frame announced more than [`MAX_FRAME`] bytes.
    FrameTooLong(usize),
    /// A handshake message did not verify: the initiator used another key than ours (or
    /// does not speak this protocol), or the responder does not hold the key we expect.
    Handshake,
    /// An encrypted message did not verify: forged, replayed, reordered or damaged.
    Decrypt,
    /// Data to encrypt before the handshake is done.
    NotEstablished,
    /// The channel failed before: it takes nothing more.
    Failed,
    /// The Noise library refused (a key of the wrong length, randomness missing).
    Library,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoiseError::FrameTooLong(len) => write!(
                f,
                "a Noise frame of {len} bytes, longer than the {MAX_FRAME} accepted"
            ),
            NoiseError::Handshake => f.write_str(
                "the Noise handshake failed: the other end does not hold the expected key, \
                 or does not speak Parlo's encrypted directory protocol",
            ),
            NoiseError::Decrypt => f.write_str("an encrypted message did not verify"),
            NoiseError::NotEstablished => f.write_str("the Noise handshake is not done yet"),
            NoiseError::Failed => f.write_str("the encrypted channel failed earlier"),
            NoiseError::Library => f.write_str("the Noise library refused the keys given"),
        }
    }
}

impl core::error::Error for NoiseError {}

/// A static X25519 private key: an identity. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// The key made of these 32 bytes (random ones for a new identity; X25519 clamps them).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// The key's bytes, to be stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        let mut dh = dh();
        dh.set(&self.0);
        let mut key = [0u8; PublicKey::LEN];
        key.copy_from_slice(dh.pubkey());
        PublicKey(key)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The short form of a public key people compare: base32 (RFC 4648, lowercase, no
/// padding) of the first 10 bytes of the key's BLAKE2s-256 hash, 16 characters shown in
/// groups of 4 (`abcd-efgh-ijkl-mnop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// The 16 characters, without the dashes.
    pub fn as_str(&self) -> &str {
        // Only base32 letters and digits are ever stored: ASCII.
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.as_str();
        for (i, group) in [0, 4, 8, 12].into_iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(text.get(group..group + 4).unwrap_or(""))?;
        }
        Ok(())
    }
}

/// The fingerprint of `key` (see [`Fingerprint`]).
pub fn fingerprint(key: &PublicKey) -> Fingerprint {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut hash = blake2s();
    hash.input(key.as_bytes());
    let mut digest = [0u8; 32];
    hash.result(&mut digest);
    // 10 bytes = 80 bits = 16 groups of 5 bits, no padding.
    let bits = digest[..10]
        .iter()
        .fold(0u128, |acc, &b| acc << 8 | u128::from(b));
    let mut text = [0u8; 16];
    for (i, c) in text.iter_mut().enumerate() {
        *c = ALPHABET[(bits >> (75 - 5 * i) & 0x1f) as usize];
    }
    Fingerprint(text)
}

fn dh() -> Box<dyn Dh> {
    // The default resolver always has Curve25519 (feature `use-curve25519`).
    #[allow(clippy::expect_used)]
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .expect("snow is built with use-curve25519")
}

fn blake2s() -> Box<dyn Hash> {
    // The default resolver always has BLAKE2s (feature `use-blake2`).
    #[allow(clippy::expect_used)]
    DefaultResolver
        .resolve_hash(&HashChoice::Blake2s)
        .expect("snow is built with use-blake2")
}

/// Where the channel stands.
enum Phase {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Failed,
}

/// One end of an encrypted directory connection (see the module docs for the contract).
pub struct Channel {
    phase: Phase,
    /// Received bytes not yet taken as frames: at most [`MAX_FRAME`] bytes, the start of
    /// the next frames (several small ones, or the beginning of a long one).
    rx: Box<[u8; MAX_FRAME]>,
    rx_len: usize,
    /// The plaintext of the last frame, and how much of it was read.
    plain: Box<[u8; MAX_PAYLOAD]>,
    plain_len: usize,
    plain_read: usize,
    /// A handshake message to send, framed, and how much of it was written.
    tx: [u8; LEN_PREFIX + MAX_HANDSHAKE],
    tx_len: usize,
    tx_written: usize,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Transport(_) => "transport",
            Phase::Failed => "failed",
        };
        f.debug_struct("Channel")
            .field("phase", &phase)
            .field("rx_len", &self.rx_len)
            .finish()
    }
}

impl Channel {
    /// The phone's end: `identity` is the phone's key, `server` the key the server must
    /// hold, `ephemeral` 32 random bytes. Its first message waits in
    /// [`Channel::poll_transmit`].
    pub fn initiator(
        identity: &SecretKey,
        server: &PublicKey,
        ephemeral: [u8; 32],
    ) -> Result<Channel, NoiseError> {
        let state = builder(ephemeral)
            .local_private_key(identity.as_bytes())
            .and_then(|b| b.remote_public_key(server.as_bytes()))
            .and_then(|b| b.prologue(&PROLOGUE))
            .and_then(snow::Builder::build_initiator)
            .map_err(|_| NoiseError::Library)?;
        let mut channel = Channel::with(state);
        channel.write_handshake()?;
        Ok(channel)
    }

    /// The server's end: `identity` is the server's key, `ephemeral` 32 random bytes.
    pub fn responder(identity: &SecretKey, ephemeral: [u8; 32]) -> Result<Channel, NoiseError> {
        let state = builder(ephemeral)
            .local_private_key(identity.as_bytes())
            .and_then(|b| b.prologue(&PROLOGUE))
            .and_then(snow::Builder::build_responder)
            .map_err(|_| NoiseError::Library)?;
        Ok(Channel::with(state))
    }

    fn with(state: HandshakeState) -> Channel {
        Channel {
            phase: Phase::Handshake(Box::new(state)),
            rx: Box::new([0; MAX_FRAME]),
            rx_len: 0,
            plain: Box::new([0; MAX_PAYLOAD]),
            plain_len: 0,
            plain_read: 0,
            tx: [0; LEN_PREFIX + MAX_HANDSHAKE],
            tx_len: 0,
            tx_written: 0,
        }
    }

    /// Whether the handshake is done: [`Channel::seal`] works, and the peer's key is known.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Transport(_))
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// The static key the peer proved it holds, once the handshake is done.
    pub fn remote_key(&self) -> Option<PublicKey> {
        let Phase::Transport(state) = &self.phase else {
            return None;
        };
        let bytes = state.get_remote_static()?;
        let mut key = [0u8; PublicKey::LEN];
        (bytes.len() == key.len()).then(|| {
            key.copy_from_slice(bytes);
            PublicKey(key)
        })
    }

    /// Room for received bytes (empty only while whole frames fill the buffer: read them
    /// first). One read may bring several frames: the fewer reads, the better.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.rx[self.rx_len..]
    }

    /// `n` bytes were put at the start of [`Channel::spare`].
    pub fn filled(&mut self, n: usize) {
        self.rx_len = (self.rx_len + n).min(MAX_FRAME);
    }

    /// Takes as much of `bytes` as the channel holds now; returns how many. Call
    /// [`Channel::read`] and offer the rest again.
    pub fn handle_received(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let spare = self.spare();
            let n = spare.len().min(bytes.len() - taken);
            if n == 0 {
                return taken;
            }
            spare[..n].copy_from_slice(&bytes[taken..taken + n]);
            self.filled(n);
            taken += n;
        }
    }

    /// Whether bytes wait to be read: a frame complete, or plaintext not read yet.
    pub fn has_input(&self) -> bool {
        self.plain_read < self.plain_len
            || self
                .frame_len()
                .is_some_and(|len| len <= MAX_FRAME && self.rx_len >= len)
    }

    /// Copies decrypted bytes into `out`, handling the frames received (handshake
    /// messages included); returns how many, 0 when no more are there for now.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, NoiseError> {
        let mut copied = 0;
        while copied < out.len() {
            if self.plain_read < self.plain_len {
                let n = (self.plain_len - self.plain_read).min(out.len() - copied);
                out[copied..copied + n]
                    .copy_from_slice(&self.plain[self.plain_read..self.plain_read + n]);
                self.plain_read += n;
                copied += n;
                continue;
            }
            if !self.take_frame()? {
                break;
            }
        }
        Ok(copied)
    }

    /// A handshake message to write, if any.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        (self.tx_written < self.tx_len).then(|| &self.tx[self.tx_written..self.tx_len])
    }

    /// `n` bytes of [`Channel::poll_transmit`] were written.
    pub fn handle_written(&mut self, n: usize) {
        self.tx_written = (self.tx_written + n).min(self.tx_len);
    }

    /// Bytes [`Channel::seal`] makes of `len` bytes of plaintext.
    pub const fn sealed_len(len: usize) -> usize {
        let frames = len.div_ceil(MAX_PAYLOAD);
        len + frames * (LEN_PREFIX + TAG_LEN)
    }

    /// Encrypts `plaintext` into `out` as frames of at most [`MAX_PAYLOAD`] bytes each;
    /// returns the bytes written. `out` must hold [`Channel::sealed_len`] bytes.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        let Phase::Transport(state) = &mut self.phase else {
            return Err(match self.phase {
                Phase::Failed => NoiseError::Failed,
                _ => NoiseError::NotEstablished,
            });
        };
        if out.len() < Channel::sealed_len(plaintext.len()) {
            return Err(NoiseError::Library);
        }
        let mut at = 0;
        for chunk in plaintext.chunks(MAX_PAYLOAD) {
            let body = &mut out[at + LEN_PREFIX..at + LEN_PREFIX + chunk.len() + TAG_LEN];
            let len = state
                .write_message(chunk, body)
                .map_err(|_| NoiseError::Library)?;
            // len <= MAX_PAYLOAD + TAG_LEN < 65536.
            out[at..at + LEN_PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
            at += LEN_PREFIX + len;
        }
        Ok(at)
    }

    /// The length of the frame at the start of `rx`, prefix included, once known.
    fn frame_len(&self) -> Option<usize> {
        (self.rx_len >= LEN_PREFIX)
            .then(|| LEN_PREFIX + usize::from(u16::from_be_bytes([self.rx[0], self.rx[1]])))
    }

    /// Handles the frame at the start of `rx` if it is complete; returns whether it was.
    fn take_frame(&mut self) -> Result<bool, NoiseError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(NoiseError::Failed);
        }
        let Some(len) = self.frame_len() else {
            return Ok(false);
        };
        if len > MAX_FRAME {
            self.phase = Phase::Failed;
            return Err(NoiseError::FrameTooLong(len));
        }
        if self.rx_len < len {
            return Ok(false);
        }
        let result = self.open(len);
        // The next frames' bytes move to the front; the rest of any frame fits behind them.
        self.rx.copy_within(len..self.rx_len, 0);
        self.rx_len -= len;
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result.map(|()| true)
    }

    /// Handles one complete frame of `len` bytes.
    fn open(&mut self, len: usize) -> Result<(), NoiseError> {
        let message = &self.rx[LEN_PREFIX..len];
        match &mut self.phase {
            Phase::Handshake(state) => {
                let mut payload = [0u8; MAX_PAYLOAD];
                state
                    .read_message(message, &mut payload)
                    .map_err(|_| NoiseError::Handshake)?;
                if state.is_my_turn() && !state.is_handshake_finished() {
                    self.write_handshake()?;
                } else {
                    self.finish_handshake()?;
                }
                Ok(())
            }
            Phase::Transport(state) => {
                self.plain_len = state
                    .read_message(message, &mut self.plain[..])
                    .map_err(|_| NoiseError::Decrypt)?;
                self.plain_read = 0;
                Ok(())
            }
            Phase::Failed => Err(NoiseError::Failed),
        }
    }

    /// Writes our next handshake message into `tx`; turns to transport once the
    /// handshake is done.
    fn write_handshake(&mut self) -> Result<(), NoiseError> {
        let Phase::Handshake(state) = &mut self.phase else {
            return Err(NoiseError::Failed);
        };
        let len = state
            .write_message(&[], &mut self.tx[LEN_PREFIX..])
            .map_err(|_| NoiseError::Library)?;
        // len <= MAX_HANDSHAKE.
        self.tx[..LEN_PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
        self.tx_len = LEN_PREFIX + len;
        self.tx_written = 0;
        self.finish_handshake()
    }

    fn finish_handshake(&mut self) -> Result<(), NoiseError> {
        let done = matches!(&self.phase, Phase::Handshake(s) if s.is_handshake_finished());
        if done && let Phase::Handshake(state) = core::mem::replace(&mut self.phase, Phase::Failed)
        {
            let transport = state
                .into_transport_mode()
                .map_err(|_| NoiseError::Library)?;
            self.phase = Phase::Transport(Box::new(transport));
        }
        Ok(())
    }
}

fn builder(ephemeral: [u8; 32]) -> snow::Builder<'static> {
    crate::seeded::builder(PATTERN, ephemeral)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    /// Moves everything `from` has to send into `to`, as one stream.
    fn pass(from: &mut Channel, to: &mut Channel, sealed: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        if let Some(bytes) = from.poll_transmit() {
            wire.extend_from_slice(bytes);
            let n = bytes.len();
            from.handle_written(n);
        }
        wire.extend_from_slice(sealed);
        let mut plain = Vec::new();
        let mut rest = &wire[..];
        loop {
            let taken = to.handle_received(rest);
            rest = &rest[taken..];
            let mut buf = [0u8; 300];
            loop {
                let n = to.read(&mut buf).expect("a good stream reads");
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&buf[..n]);
            }
            if rest.is_empty() && !to.has_input() {
                return plain;
            }
        }
    }

    /// A phone and a server, through the handshake.
    fn established() -> (Channel, Channel) {
        let server_key = key(1);
        let mut phone = Channel::initiator(&key(2), &server_key.public(), [3; 32]).expect("init");
        let mut server = Channel::responder(&server_key, [4; 32]).expect("resp");
        pass(&mut phone, &mut server, &[]); // -> e, es
        pass(&mut server, &mut phone, &[]); // <- e, ee
        assert!(phone.is_established());
        pass(&mut phone, &mut server, &[]); // -> s, se
        assert!(server.is_established());
        (phone, server)
    }

    fn seal(channel: &mut Channel, text: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; Channel::sealed_len(text.len())];
        let n = channel.seal(text, &mut out).expect("established");
        out.truncate(n);
        out
    }

    mod handshake {
        use super::*;

        #[test]
        fn the_pattern_parses_and_the_first_message_starts_with_a_zero_byte() {
            let phone = Channel::initiator(&key(2), &key(1).public(), [3; 32]).expect("init");
            let first = phone.poll_transmit().expect("message 1");
            assert_eq!(first.len(), LEN_PREFIX + MSG1_LEN);
            assert_eq!(Wire::of_first_byte(first[0]), Wire::Noise);
            assert_eq!(Wire::of_first_byte(b'{'), Wire::Json);
            assert_eq!(Wire::of_first_byte(b' '), Wire::Json);
        }

        #[test]
        fn the_server_learns_the_phone_s_key() {
            let (phone, server) = established();
            assert_eq!(server.remote_key(), Some(key(2).public()));
            assert_eq!(phone.remote_key(), Some(key(1).public()));
        }

        #[test]
        fn a_phone_expecting_another_key_fails_the_server_s_first_read() {
            let phone = Channel::initiator(&key(2), &key(9).public(), [3; 32]).expect("i");
            let mut server = Channel::responder(&key(1), [4; 32]).expect("r");
            let first = phone.poll_transmit().expect("message 1").to_vec();
            server.handle_received(&first);
            assert_eq!(server.read(&mut [0; 8]), Err(NoiseError::Handshake));
            assert_eq!(server.read(&mut [0; 8]), Err(NoiseError::Failed));
        }

        #[test]
        fn an_oversized_frame_is_refused() {
            let mut server = Channel::responder(&key(1), [4; 32]).expect("r");
            server.handle_received(&[0xff, 0xff, 0]);
            assert_eq!(
                server.read(&mut [0; 8]),
                Err(NoiseError::FrameTooLong(LEN_PREFIX + 0xffff))
            );
        }

        #[test]
        fn nothing_is_sealed_before_the_handshake() {
            let mut phone = Channel::initiator(&key(2), &key(1).public(), [3; 32]).expect("i");
            assert_eq!(
                phone.seal(b"x", &mut [0; 64]),
                Err(NoiseError::NotEstablished)
            );
        }
    }

    mod transport {
        use super::*;

        #[test]
        fn text_goes_both_ways_in_any_cut_and_leaves_no_plaintext_on_the_wire() {
            let (mut phone, mut server) = established();
            let request = b"{\"command\":\"REG\",\"name\":\"alice\"}\n".repeat(50);
            let wire = seal(&mut phone, &request);
            assert!(!wire.windows(5).any(|w| w == b"alice"));
            // Byte by byte.
            let mut got = Vec::new();
            for byte in &wire {
                assert_eq!(server.handle_received(&[*byte]), 1);
                let mut buf = [0u8; 7];
                loop {
                    let n = server.read(&mut buf).expect("reads");
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(got, request);
            let answer = seal(&mut server, b"{\"ack\":\"PONG\"}\n");
            assert_eq!(
                pass(&mut server, &mut phone, &answer),
                b"{\"ack\":\"PONG\"}\n"
            );
        }

        #[test]
        fn a_damaged_or_replayed_frame_fails_the_channel() {
            let (mut phone, mut server) = established();
            let mut wire = seal(&mut phone, b"hello");
            let replay = wire.clone();
            pass(&mut phone, &mut server, &wire);
            server.handle_received(&replay);
            assert_eq!(server.read(&mut [0; 8]), Err(NoiseError::Decrypt));
            let (mut phone, mut server) = established();
            wire = seal(&mut phone, b"hello");
            wire[4] ^= 1;
            server.handle_received(&wire);
            assert_eq!(server.read(&mut [0; 8]), Err(NoiseError::Decrypt));
        }
    }

    mod keys {
        use super::*;

        #[test]
        fn the_public_half_is_x25519_s() {
            // RFC 7748 section 6.1: Alice's private and public keys.
            let secret = [
                0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
                0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
                0x1d, 0xb9, 0x2c, 0x2a,
            ];
            let public = SecretKey::from_bytes(secret).public();
            assert_eq!(
                public.to_string(),
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
            );
        }

        #[test]
        fn a_fingerprint_is_16_base32_characters_in_groups_of_4() {
            let print = fingerprint(&PublicKey([0; 32]));
            let text = print.to_string();
            assert_eq!(text.len(), 19);
            assert!(
                text.split('-').all(|g| g.len() == 4
                    && g.bytes()
                        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))),
                "{text}"
            );
            assert_ne!(print, fingerprint(&PublicKey([1; 32])));
            // Base32 of the first 10 bytes of the hash, worked out bit by bit.
            let mut hash = blake2s();
            hash.input(&[0; 32]);
            let mut digest = [0u8; 32];
            hash.result(&mut digest);
            let mut bits = String::new();
            for byte in &digest[..10] {
                bits.push_str(&format!("{byte:08b}"));
            }
            let expected: String = bits
                .as_bytes()
                .chunks(5)
                .map(|c| {
                    let v = c.iter().fold(0, |a, b| a * 2 + usize::from(b - b'0'));
                    char::from(b"abcdefghijklmnopqrstuvwxyz234567"[v])
                })
                .collect();
            assert_eq!(print.as_str(), expected);
        }

        #[test]
        fn a_secret_key_is_not_shown_by_debug() {
            assert_eq!(format!("{:?}", key(7)), "SecretKey(..)");
        }
    }
}
