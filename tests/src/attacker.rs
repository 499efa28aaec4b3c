//! An attacker that speaks Parlo's encrypted call protocol: a test-side phone built on
//! `parlo_net::secure::Sessions`, the same implementation the real phones use, driven by
//! hand so that it can send what no honest phone would.
//!
//! An [`Attacker`] has a UDP socket on a loopback address of its own and a static key: a
//! fresh random one ([`Attacker::new`]), or one stolen from a phone's identity file
//! ([`identity_of`], [`Attacker::with_identity`]). It can
//!
//! - call a phone with a START sealed for that phone's key, claiming any name
//!   ([`Attacker::send_start`], or [`Attacker::send_start_at`] with a chosen wall-clock
//!   timestamp, e.g. an hour ago);
//! - answer a phone that called it, or go on talking in a session it holds, with any
//!   line sealed for that phone's key ([`Attacker::send_sealed`]): a man in the middle
//!   that terminates the encryption;
//! - send any bytes in the clear ([`Attacker::send_plain`]): plaintext STARTs, copies of
//!   datagrams it captured;
//! - receive for a while ([`Attacker::receive_for`]), opening what its sessions can (an
//!   Init, a Response, transport) and reporting every datagram with what it carried.
//!
//! It counts every byte it sends and receives ([`Attacker::bytes_sent`],
//! [`Attacker::bytes_received`]), for the amplification checks: a phone must not give a
//! sender that has not proved its key more bytes than it sent.
//!
//! Like a phone, it resends the cached Response when a caller's Init comes again after it
//! answered (what `Sessions::poll_transmit` gives), and those bytes are counted as sent.

use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parlo_fsm::{CallId, PublicKey};
use parlo_net::media::{self, DatagramKind};
use parlo_net::noise::SecretKey;
use parlo_net::secure::{self, Dropped, Kind, SealError, Sessions, ShortCode, Timestamp};

use crate::phone_harness::Phone;
use crate::relay;
use crate::server_harness::loopback;

/// 32 bytes from the kernel's random source.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .expect("/dev/urandom gives random bytes");
    bytes
}

/// The wall clock at `time`, as the sessions take it: nanoseconds since the Unix epoch.
fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// A fresh random static key.
pub fn fresh_identity() -> SecretKey {
    SecretKey::from_bytes(random_bytes())
}

/// The private key in an identity file: comment lines (`#`), then the key as 44 base64
/// characters, as `parlo-client keygen` writes it.
pub fn read_identity(path: &Path) -> SecretKey {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the identity {}: {e}", path.display()));
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_else(|| panic!("no key in the identity {}: {text:?}", path.display()));
    let key = PublicKey::parse(line).unwrap_or_else(|e| {
        panic!(
            "the identity {} holds {line:?}, not a key: {e}",
            path.display()
        )
    });
    SecretKey::from_bytes(key.0)
}

/// The private key of a running phone, read from its identity file
/// (`dir/state/parlo/identity`): what a thief who copied the file holds.
pub fn identity_of(phone: &Phone) -> SecretKey {
    read_identity(&phone.dir().join("state/parlo/identity"))
}

/// The START line of a Parlo call from `claimed_name`: `START NAME call=ID v=2
/// codecs=L16,PCMU`, as a Parlo phone writes it.
pub fn start_line(claimed_name: &str, call_id: CallId) -> String {
    format!("START {claimed_name} call={call_id} v=2 codecs=L16,PCMU")
}

/// What an encrypted datagram carried, once the attacker's sessions opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    /// An Init's START, a Response's answer, or transport.
    pub kind: Kind,
    /// The inner packet: a signalling line or an RTP packet.
    pub packet: Vec<u8>,
    /// The key its sender proved it holds.
    pub key: PublicKey,
    /// The session's short code (none for a START not answered yet).
    pub code: Option<ShortCode>,
}

/// One datagram the attacker received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Where it came from.
    pub from: SocketAddr,
    /// Its bytes, as they arrived.
    pub datagram: Vec<u8>,
    /// What it carried, when it was encrypted and the sessions opened it.
    pub opened: Option<Inner>,
    /// Why the sessions dropped it, when it was encrypted and they did.
    pub dropped: Option<Dropped>,
}

impl Received {
    /// Whether it was encrypted (its first byte is one of the secure layer's).
    pub fn is_encrypted(&self) -> bool {
        self.datagram
            .first()
            .copied()
            .is_some_and(secure::is_secure)
    }

    /// The signalling line it carried, as text: the inner packet of an opened datagram,
    /// the datagram itself when it came in the clear; `None` for media, for what could
    /// not be opened, and for anything else that is not a line.
    pub fn line(&self) -> Option<String> {
        let packet = match (&self.opened, self.is_encrypted()) {
            (Some(inner), _) => &inner.packet,
            (None, false) => &self.datagram,
            (None, true) => return None,
        };
        match media::classify(packet, None) {
            Ok(DatagramKind::Signalling) => Some(String::from_utf8_lossy(packet).into_owned()),
            _ => None,
        }
    }

    /// Whether it is, or carried, media: by its shape on the wire (RTP, raw PCM, an
    /// encrypted datagram the size of a frame), or by what it was found to carry (an RTP
    /// packet inside).
    pub fn is_media(&self) -> bool {
        relay::is_media(&self.datagram)
            || self.opened.as_ref().is_some_and(|inner| {
                matches!(
                    media::classify(&inner.packet, None),
                    Ok(DatagramKind::Rtp | DatagramKind::RawPcm)
                )
            })
    }
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes from {}", self.datagram.len(), self.from)?;
        match (&self.opened, &self.dropped) {
            (Some(inner), _) => write!(
                f,
                " ({:?}: {})",
                inner.kind,
                String::from_utf8_lossy(&inner.packet)
            ),
            (None, Some(why)) => write!(f, " (dropped: {why})"),
            (None, None) => write!(f, " (clear: {})", String::from_utf8_lossy(&self.datagram)),
        }
    }
}

/// A Parlo caller (or callee) in the attacker's hands; see the module docs.
#[derive(Debug)]
pub struct Attacker {
    socket: UdpSocket,
    sessions: Sessions,
    public: PublicKey,
    /// The origin of the sessions' clock (`now` in ms).
    started: Instant,
    sent: usize,
    received: usize,
}

impl Attacker {
    /// An attacker with a fresh random key.
    pub fn new() -> Attacker {
        Attacker::with_identity(fresh_identity())
    }

    /// An attacker holding `identity` (a phone's, stolen: [`identity_of`]).
    pub fn with_identity(identity: SecretKey) -> Attacker {
        let socket = UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
        let public = identity.public();
        let config = secure::Config {
            // It takes every handshake it is sent: the phones are under test, not it.
            handshake_burst: 1_000,
            handshake_rate: 1_000,
            ..secure::Config::default()
        };
        Attacker {
            socket,
            sessions: Sessions::new(identity, config),
            public,
            started: Instant::now(),
            sent: 0,
            received: 0,
        }
    }

    /// The address it sends from and receives on.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("the socket is bound")
    }

    /// Its static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Bytes sent so far, every datagram together.
    pub fn bytes_sent(&self) -> usize {
        self.sent
    }

    /// Bytes received so far, every datagram together.
    pub fn bytes_received(&self) -> usize {
        self.received
    }

    /// The short code of its current session with `peer`, once a handshake with it is
    /// done.
    pub fn code_with(&self, peer: SocketAddr) -> Option<ShortCode> {
        self.sessions.session(peer).map(|session| session.code)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Calls `to` as `claimed_name`: the START line ([`start_line`]) sealed as an Init for
    /// `callee_key`, timestamped now. Returns the datagram sent (to send copies of it
    /// with [`Attacker::send_plain`], as a caller retransmitting does).
    pub fn send_start(
        &mut self,
        to: SocketAddr,
        callee_key: &PublicKey,
        claimed_name: &str,
        call_id: CallId,
    ) -> Vec<u8> {
        self.send_start_at(to, callee_key, claimed_name, call_id, SystemTime::now())
    }

    /// Like [`Attacker::send_start`], the Init timestamped `wall` (an hour ago, say).
    pub fn send_start_at(
        &mut self,
        to: SocketAddr,
        callee_key: &PublicKey,
        claimed_name: &str,
        call_id: CallId,
        wall: SystemTime,
    ) -> Vec<u8> {
        let line = start_line(claimed_name, call_id);
        self.send_init(to, callee_key, &line, wall)
    }

    /// Sends `line` (a START of the attacker's making) sealed as an Init for
    /// `callee_key`, timestamped `wall`. Returns the datagram sent.
    pub fn send_init(
        &mut self,
        to: SocketAddr,
        callee_key: &PublicKey,
        line: &str,
        wall: SystemTime,
    ) -> Vec<u8> {
        let wall = timestamp(wall);
        let mut out = [0u8; secure::MAX_DATAGRAM];
        let now = self.now();
        let len = self
            .sessions
            .seal(
                now,
                wall,
                to,
                callee_key,
                line.as_bytes(),
                true,
                &mut out,
                &mut random_bytes,
            )
            .unwrap_or_else(|e| panic!("the attacker cannot seal {line:?}: {e}"));
        self.send_plain(to, &out[..len]);
        out[..len].to_vec()
    }

    /// Seals `inner` for `to`, whose key is `key`, and sends it: the Response to a START
    /// waiting for its answer, or transport in the session with `to`. Returns the
    /// datagram's length.
    pub fn send_sealed(
        &mut self,
        to: SocketAddr,
        key: &PublicKey,
        inner: &[u8],
    ) -> Result<usize, SealError> {
        let mut out = [0u8; secure::MAX_DATAGRAM];
        let now = self.now();
        let wall = timestamp(SystemTime::now());
        let len = self.sessions.seal(
            now,
            wall,
            to,
            key,
            inner,
            false,
            &mut out,
            &mut random_bytes,
        )?;
        self.send_plain(to, &out[..len]);
        Ok(len)
    }

    /// Sends `bytes` to `to` as they are.
    pub fn send_plain(&mut self, to: SocketAddr, bytes: &[u8]) {
        let sent = self
            .socket
            .send_to(bytes, to)
            .unwrap_or_else(|e| panic!("the attacker cannot send to {to}: {e}"));
        assert_eq!(sent, bytes.len(), "a datagram goes out whole");
        self.sent += sent;
    }

    /// Receives for `duration`: every datagram, opened when it is encrypted and the
    /// sessions can open it (a cached Response they want resent goes out at once, as a
    /// phone's would).
    pub fn receive_for(&mut self, duration: Duration) -> Vec<Received> {
        let deadline = Instant::now() + duration;
        let mut received = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return received;
            }
            received.extend(self.receive_one(left));
        }
    }

    /// Receives until a datagram for which `pick` holds arrives (returned, with every one
    /// before it), failing the test after `patience`.
    pub fn receive_until(
        &mut self,
        patience: Duration,
        mut pick: impl FnMut(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + patience;
        let mut received = Vec::new();
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(datagram) = self.receive_one(left) {
                let done = pick(&datagram);
                received.push(datagram);
                if done {
                    return received;
                }
            }
        }
        let seen: Vec<String> = received.iter().map(ToString::to_string).collect();
        panic!(
            "the attacker did not receive what it waited for within {patience:?}; it got:\n{}",
            seen.join("\n")
        );
    }

    /// One datagram within `patience`, if any.
    fn receive_one(&mut self, patience: Duration) -> Option<Received> {
        let mut buf = [0u8; 2048];
        self.socket
            .set_read_timeout(Some(patience.max(Duration::from_millis(1))))
            .expect("timeouts can be set");
        let (n, from) = self.socket.recv_from(&mut buf).ok()?;
        self.received += n;
        Some(self.take(from, &buf[..n]))
    }

    /// Opens `datagram` from `from` if it is encrypted, and sends what the sessions want
    /// resent.
    fn take(&mut self, from: SocketAddr, datagram: &[u8]) -> Received {
        let mut received = Received {
            from,
            datagram: datagram.to_vec(),
            opened: None,
            dropped: None,
        };
        if !received.is_encrypted() {
            return received;
        }
        let mut inner = [0u8; secure::MAX_INNER];
        let now = self.now();
        let wall = timestamp(SystemTime::now());
        match self
            .sessions
            .open(now, wall, from, datagram, &mut inner, &mut random_bytes)
        {
            Ok(opened) => {
                received.opened = Some(Inner {
                    kind: opened.kind,
                    packet: inner[..opened.len].to_vec(),
                    key: opened.key,
                    code: opened.code,
                });
            }
            Err(why) => received.dropped = Some(why),
        }
        let resend = self
            .sessions
            .poll_transmit()
            .map(|(to, bytes)| (to, bytes.to_vec()));
        if let Some((to, bytes)) = resend {
            self.send_plain(to, &bytes);
        }
        received
    }
}

impl Default for Attacker {
    fn default() -> Attacker {
        Attacker::new()
    }
}
