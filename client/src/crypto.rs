//! The loop's side of encrypted calls: the phone's sessions (`parlo_net::secure`), the
//! clocks and randomness they take, and media sent through them.
//!
//! Every decision about who is trusted is the call machine's: it says, for each message
//! it sends, the key it must be sealed for (or that it goes in the clear), and it judges
//! each message by the key it came out of. Here datagrams are only opened and sealed.
//! With `--security off` there are no sessions: encrypted datagrams are not opened.

use std::io;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use parlo_fsm::PublicKey;
use parlo_net::noise::SecretKey;
use parlo_net::secure::{self, Counters, Dropped, Opened, SealError, Sessions, Timestamp};

use crate::media::Link;
use crate::random::OsRandom;

/// Why an encrypted datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// This phone does no encryption (`--security off`).
    Off,
    /// The sessions dropped it.
    Dropped(Dropped),
}

/// The phone's encrypted sessions, if it has any.
pub struct Crypto {
    sessions: Option<Sessions>,
    random: OsRandom,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("on", &self.sessions.is_some())
            .finish()
    }
}

/// The wall clock, as the sessions take it.
fn wall() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

impl Crypto {
    /// Sessions for `identity` (none when `on` is false).
    pub fn new(identity: SecretKey, config: secure::Config, on: bool, random: OsRandom) -> Crypto {
        Crypto {
            sessions: on.then(|| Sessions::new(identity, config)),
            random,
        }
    }

    /// Opens an encrypted datagram from `from` into `out`. `now`: the phone's clock, in ms.
    pub fn open(
        &mut self,
        now: u64,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, Closed> {
        let Some(sessions) = self.sessions.as_mut() else {
            return Err(Closed::Off);
        };
        let random = &mut self.random;
        let mut ephemeral = || ephemeral(random);
        sessions
            .open(now, wall(), from, datagram, out, &mut ephemeral)
            .map_err(Closed::Dropped)
    }

    /// Seals `inner` for `to` and `key` into `out`; `start`: it is a START line.
    pub fn seal(
        &mut self,
        now: u64,
        to: SocketAddr,
        key: &PublicKey,
        inner: &[u8],
        start: bool,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let Some(sessions) = self.sessions.as_mut() else {
            return Err(SealError::NoSession);
        };
        let random = &mut self.random;
        let mut ephemeral = || ephemeral(random);
        sessions.seal(now, wall(), to, key, inner, start, out, &mut ephemeral)
    }

    /// A datagram the sessions want sent (a cached answer to a repeated call request).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        self.sessions.as_mut()?.poll_transmit()
    }

    /// The established session with `addr`.
    pub fn session(&self, addr: SocketAddr) -> Option<secure::SessionInfo> {
        self.sessions.as_ref()?.session(addr)
    }

    /// What the sessions dropped, and handshakes done.
    pub fn counters(&self) -> Counters {
        self.sessions
            .as_ref()
            .map(Sessions::counters)
            .unwrap_or_default()
    }
}

/// 32 fresh random bytes for a handshake's ephemeral key.
fn ephemeral(random: &mut OsRandom) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        chunk.copy_from_slice(&random.next_u64().to_le_bytes());
    }
    bytes
}

/// Where the phone's media goes: each packet sealed for the peer's key through its
/// session, or sent in the clear when the leg has no key (a plaintext call).
#[derive(Debug)]
pub struct SealedLink<'a> {
    /// The phone's socket.
    pub udp: &'a UdpSocket,
    /// The sessions.
    pub crypto: &'a mut Crypto,
    /// The phone's clock, in ms (for the rekey schedule).
    pub now: u64,
    /// The sealed packet.
    pub buf: &'a mut [u8; secure::MAX_DATAGRAM],
}

impl Link for SealedLink<'_> {
    fn send(&mut self, packet: &[u8], to: SocketAddr, key: Option<PublicKey>) -> io::Result<()> {
        let Some(key) = key else {
            return self.udp.send_to(packet, to).map(|_| ());
        };
        let len = self
            .crypto
            .seal(self.now, to, &key, packet, false, &mut self.buf[..])
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.udp.send_to(&self.buf[..len], to).map(|_| ())
    }
}
