//! The man in the middle of a call: a user-space relay between two real phones that can
//! impair, tamper with, record and inject datagrams. It is the network of the impaired
//! audio tests (this kernel has no netem) and the attacker of the security tests.
//!
//! A [`Relay`] registers in the directory under a name of its own, with the address of its
//! caller-facing socket. Whoever calls that name reaches the relay, which forwards
//! everything to the real callee from a second socket, and everything the callee sends to
//! that socket back to the caller. Each phone sees the relay's address as its peer's. What
//! the relay does on the way is its [`Plan`]:
//!
//! - [`Netem`]: seeded loss, duplication, reordering and delay with jitter of the media;
//!   signalling is only delayed (it has its own retransmissions), unless the plan impairs
//!   every datagram ([`Plan::impairing_everything`]: the network of the message tests);
//! - [`Tamper`]: one byte of a seeded share of the media datagrams flipped, both ways;
//! - recording: every datagram received from either side kept as it arrived, with its
//!   direction and time ([`Relay::captured`]).
//!
//! [`Relay::inject`] sends any bytes to either phone from the socket that faces it, so
//! the phone takes them as coming from its peer in the call. [`Relay::finish`] stops the
//! relay and says what it did ([`RelayReport`]).
//!
//! Media is told from signalling by shape alone ([`is_media`]), so that the relay works on
//! encrypted calls as well as on plaintext ones.

use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parlo_net::media::RAW_PCM_LEN;

use crate::phone_harness::man_in_the_middle;
use crate::server_harness::Server;

/// First bytes of a secure transport datagram (`type ‖ counter(8) ‖ ciphertext ‖ tag(16)`),
/// one per direction of the call.
pub const SECURE_TRANSPORT_TYPES: [u8; 2] = [0x03, 0x04];

/// The shortest secure transport datagram taken for media: an encrypted frame is 549
/// (PCMU) or 1061 (L16) bytes long, encrypted signalling less than 150.
pub const SECURE_MEDIA_MIN_LEN: usize = 300;

/// Whether a datagram is media, by its shape: an RTP packet (first byte `0x80`–`0xBF`,
/// version 2), a raw PCM frame of the original dialect (exactly 1024 bytes, any first
/// byte), or a secure transport datagram (first byte `0x03` or `0x04`) of
/// [`SECURE_MEDIA_MIN_LEN`] bytes or more. Everything else is signalling: plaintext lines,
/// handshakes and short secure transport datagrams.
pub fn is_media(datagram: &[u8]) -> bool {
    match datagram.first() {
        Some(0x80..=0xBF) => true,
        Some(first) if SECURE_TRANSPORT_TYPES.contains(first) => {
            datagram.len() >= SECURE_MEDIA_MIN_LEN
        }
        _ => datagram.len() == RAW_PCM_LEN,
    }
}

/// What the relay does to each media datagram, in both directions, with a seeded random
/// generator: the statistics of `netem loss P duplicate P reorder P delay D J` (uniform
/// jitter). Signalling is delayed by `delay` alone, never lost (it has its own
/// retransmissions, tested elsewhere), unless the plan impairs everything
/// ([`Plan::impairing_everything`]).
#[derive(Debug, Clone, Copy)]
pub struct Netem {
    /// Probability that a media datagram is dropped.
    pub loss: f64,
    /// Probability that a media datagram is sent twice (the copy 1 ms later).
    pub duplicate: f64,
    /// Probability that a media datagram is held back and sent right after the next one.
    pub reorder: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each media datagram's delay is `delay` plus a uniform draw in [-jitter, +jitter].
    pub jitter: Duration,
    /// Seed of the random draws.
    pub seed: u64,
}

impl Netem {
    /// No impairment at all: a transparent relay.
    pub fn clean() -> Netem {
        Netem {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 1,
        }
    }
}

/// Tampering with media in flight: each media datagram, in either direction, has one byte
/// flipped with probability `rate` (XOR with a non-zero value, at a uniformly drawn index).
/// Each direction draws from its own generator seeded from `seed`, so what happens to one
/// stream does not depend on how the two interleave.
#[derive(Debug, Clone, Copy)]
pub struct Tamper {
    /// Share of the media datagrams altered, 0 to 1.
    pub rate: f64,
    /// Seed of the draws.
    pub seed: u64,
}

/// Everything a [`Relay`] does on the way. Built from [`Plan::transparent`]:
/// `Plan::transparent().recording().tampering(0.01, 7)`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The network's impairment of media.
    pub netem: Netem,
    /// Tampering with media, if any.
    pub tamper: Option<Tamper>,
    /// Whether every datagram is kept for [`Relay::captured`].
    pub record: bool,
    /// Whether `netem` applies to every datagram, signalling and handshakes included, not
    /// only to media. Tampering still touches media only.
    pub impair_all: bool,
}

impl Plan {
    /// Forwards everything as it comes, keeps nothing.
    pub fn transparent() -> Plan {
        Plan {
            netem: Netem::clean(),
            tamper: None,
            record: false,
            impair_all: false,
        }
    }

    /// The same plan, keeping every datagram for [`Relay::captured`].
    pub fn recording(self) -> Plan {
        Plan {
            record: true,
            ..self
        }
    }

    /// The same plan, flipping a byte in `rate` of the media datagrams (see [`Tamper`]).
    pub fn tampering(self, rate: f64, seed: u64) -> Plan {
        Plan {
            tamper: Some(Tamper { rate, seed }),
            ..self
        }
    }

    /// The same plan, impairing media as `netem` says.
    pub fn impaired(self, netem: Netem) -> Plan {
        Plan { netem, ..self }
    }

    /// The same plan, with its `netem` loss, duplication, reordering and jitter applied to
    /// every datagram, not only to media: handshakes, signalling and message lines are
    /// impaired as well.
    pub fn impairing_everything(self) -> Plan {
        Plan {
            impair_all: true,
            ..self
        }
    }
}

/// Which way a datagram goes through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// From the caller to the callee.
    Callee,
    /// From the callee back to the caller.
    Caller,
}

/// One datagram as the relay received it, before anything was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Where it was going.
    pub toward: Toward,
    /// When it arrived, since the relay started.
    pub at: Duration,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What the relay did to one direction of the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams received from the sender.
    pub datagrams: usize,
    /// Media datagrams among them.
    pub media: usize,
    /// Datagrams dropped (media only, unless the plan impairs everything).
    pub lost: usize,
    /// Datagrams sent twice (media only, unless the plan impairs everything).
    pub duplicated: usize,
    /// Datagrams held back behind the next one (media only, unless the plan impairs
    /// everything).
    pub reordered: usize,
    /// Media datagrams sent on with one byte flipped (a duplicate counts once).
    pub tampered: usize,
    /// Signalling datagrams forwarded.
    pub signalling: usize,
}

/// What a [`Relay`] did, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Caller → callee.
    pub forward: Traffic,
    /// Callee → caller.
    pub backward: Traffic,
}

/// A seeded xorshift generator: the same seed gives the same draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any seed: the state is made odd, hence non-zero, as
    /// xorshift needs).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the relay thread and the test share.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Where the caller is: the source of the last datagram on the caller-facing socket.
    caller: Mutex<Option<SocketAddr>>,
    captured: Mutex<Vec<Captured>>,
}

/// Locks a mutex whose holder may have panicked: the data (an address, a list of
/// datagrams) is valid at every step, so a poisoned lock is still good to read.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A man in the middle between a caller and a callee (see the module's documentation).
/// Stops, and leaves the directory, when dropped.
#[derive(Debug)]
pub struct Relay {
    /// The address callers reach: what the directory gives for the relay's name.
    pub addr: SocketAddr,
    /// The address the callee sees the call come from: its peer's address in the call.
    pub callee_side: SocketAddr,
    front: UdpSocket,
    back: UdpSocket,
    callee: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<RelayReport>>,
    _directory: Option<TcpStream>,
}

impl Relay {
    /// Starts a relay registered as `name` on `server`, forwarding to `callee` as `plan`
    /// says.
    pub fn start(name: &str, server: &Server, callee: SocketAddr, plan: Plan) -> Relay {
        let (front, back, directory) = man_in_the_middle(name, server);
        let mut relay = Relay::between(front, back, callee, plan);
        relay._directory = Some(directory);
        relay
    }

    /// Starts a relay on sockets of the caller's choosing, with no directory: what arrives
    /// on `front` goes to `callee` from `back`, what `callee` sends to `back` goes to the
    /// last sender on `front`.
    pub fn between(front: UdpSocket, back: UdpSocket, callee: SocketAddr, plan: Plan) -> Relay {
        let addr = front.local_addr().expect("the relay's sockets are bound");
        let callee_side = back.local_addr().expect("the relay's sockets are bound");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            caller: Mutex::new(None),
            captured: Mutex::new(Vec::new()),
        });
        let sockets = (
            front.try_clone().expect("a UDP socket can be shared"),
            back.try_clone().expect("a UDP socket can be shared"),
        );
        let sharing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || run(&sockets.0, &sockets.1, callee, plan, &sharing))
            .expect("a thread for the relay");
        Relay {
            addr,
            callee_side,
            front,
            back,
            callee,
            shared,
            thread: Some(thread),
            _directory: None,
        }
    }

    /// Every datagram received so far, in order of arrival (empty unless the plan
    /// records).
    pub fn captured(&self) -> Vec<Captured> {
        lock(&self.shared.captured).clone()
    }

    /// Sends `bytes` now to one side, from the socket that faces it: the phone there sees
    /// them come from its peer's address in the call. Injected datagrams pass no plan
    /// (no impairment, no tampering, no recording). Toward the caller, fails until a
    /// caller has sent something to the relay.
    pub fn inject(&self, toward: Toward, bytes: &[u8]) -> io::Result<()> {
        let sent = match toward {
            Toward::Callee => self.back.send_to(bytes, self.callee)?,
            Toward::Caller => {
                let Some(caller) = *lock(&self.shared.caller) else {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "no caller has reached the relay yet, so nothing can be injected \
                         toward it",
                    ));
                };
                self.front.send_to(bytes, caller)?
            }
        };
        if sent != bytes.len() {
            return Err(io::Error::other(format!(
                "{} bytes to inject, {sent} sent",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Stops forwarding and says what was done.
    pub fn finish(mut self) -> RelayReport {
        self.stop()
    }

    fn stop(&mut self) -> RelayReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A datagram waiting for its departure time.
#[derive(Debug, PartialEq, Eq)]
struct Pending {
    due: Instant,
    order: u64,
    toward: Toward,
    bytes: Vec<u8>,
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.order.cmp(&self.order))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One direction's state: its counts, the datagram held back to be reordered, and its
/// tampering draws.
#[derive(Debug)]
struct Direction {
    toward: Toward,
    stats: Traffic,
    held: Option<Vec<u8>>,
    tamper: Option<(f64, Rng)>,
}

impl Direction {
    fn new(toward: Toward, tamper: Option<Tamper>) -> Direction {
        // The caller-to-callee stream draws from the seed as given, the other from a
        // different stream of the same seed.
        let stream = match toward {
            Toward::Callee => 0,
            Toward::Caller => 0xD1B5_4A32_D192_ED03,
        };
        Direction {
            toward,
            stats: Traffic::default(),
            held: None,
            tamper: tamper.map(|t| (t.rate, Rng::new(t.seed ^ stream))),
        }
    }
}

/// What both directions share: the netem draws and the departure queue.
struct Link {
    netem: Netem,
    /// Whether `netem` applies to signalling too.
    impair_all: bool,
    rng: Rng,
    queue: BinaryHeap<Pending>,
    order: u64,
}

impl Link {
    fn send(&mut self, toward: Toward, bytes: Vec<u8>, due: Instant) {
        self.order += 1;
        self.queue.push(Pending {
            due,
            order: self.order,
            toward,
            bytes,
        });
    }

    /// Decides what becomes of one datagram of `direction` and queues the copies that
    /// leave.
    fn take(&mut self, direction: &mut Direction, datagram: &[u8]) {
        let now = Instant::now();
        let toward = direction.toward;
        direction.stats.datagrams += 1;
        let media = is_media(datagram);
        if !media {
            direction.stats.signalling += 1;
            if !self.impair_all {
                self.send(toward, datagram.to_vec(), now + self.netem.delay);
                return;
            }
        } else {
            direction.stats.media += 1;
        }
        // Every draw is made for every datagram, so one impairment's rate does not shift
        // the others' sequences.
        let (lose, dup, hold, spread) = (
            self.rng.unit(),
            self.rng.unit(),
            self.rng.unit(),
            self.rng.unit(),
        );
        let flip = direction
            .tamper
            .as_mut()
            .filter(|_| media)
            .and_then(|(rate, rng)| {
                let (hit, at, value) = (rng.unit(), rng.unit(), rng.unit());
                (hit < *rate).then_some((at, value))
            });
        if lose < self.netem.loss {
            direction.stats.lost += 1;
            return;
        }
        let mut bytes = datagram.to_vec();
        if let Some((at, value)) = flip {
            // Media is never empty (its first byte or length classified it). Both draws
            // are below 1, so the index is below the length and the mask is 1 to 255.
            let index = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
            bytes[index] ^= 1 + (value * 255.0) as u8;
            direction.stats.tampered += 1;
        }
        let jitter = self.netem.jitter.as_secs_f64() * (2.0 * spread - 1.0);
        let delay = Duration::from_secs_f64((self.netem.delay.as_secs_f64() + jitter).max(0.0));
        if direction.held.is_none() && hold < self.netem.reorder {
            direction.stats.reordered += 1;
            direction.held = Some(bytes);
            return;
        }
        if dup < self.netem.duplicate {
            direction.stats.duplicated += 1;
            self.send(
                toward,
                bytes.clone(),
                now + delay + Duration::from_millis(1),
            );
        }
        self.send(toward, bytes, now + delay);
        if let Some(late) = direction.held.take() {
            self.send(toward, late, now + delay + Duration::from_micros(100));
        }
    }
}

/// The relay's thread: forwards until told to stop, and says what it did.
fn run(
    front: &UdpSocket,
    back: &UdpSocket,
    callee: SocketAddr,
    plan: Plan,
    shared: &Shared,
) -> RelayReport {
    let started = Instant::now();
    let mut link = Link {
        netem: plan.netem,
        impair_all: plan.impair_all,
        rng: Rng::new(plan.netem.seed),
        queue: BinaryHeap::new(),
        order: 0,
    };
    let mut forward = Direction::new(Toward::Callee, plan.tamper);
    let mut backward = Direction::new(Toward::Caller, plan.tamper);
    let mut caller: Option<SocketAddr> = None;
    let record = |toward: Toward, bytes: &[u8]| {
        if plan.record {
            lock(&shared.captured).push(Captured {
                toward,
                at: started.elapsed(),
                bytes: bytes.to_vec(),
            });
        }
    };
    let mut buf = [0u8; 2048];
    let _ = front.set_nonblocking(true);
    let _ = back.set_nonblocking(true);
    while !shared.stop.load(Ordering::SeqCst) {
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            if caller != Some(from) {
                caller = Some(from);
                *lock(&shared.caller) = caller;
            }
            record(Toward::Callee, &buf[..n]);
            link.take(&mut forward, &buf[..n]);
        }
        while let Ok((n, from)) = back.recv_from(&mut buf) {
            if from == callee {
                record(Toward::Caller, &buf[..n]);
                link.take(&mut backward, &buf[..n]);
            }
        }
        let now = Instant::now();
        while link.queue.peek().is_some_and(|p| p.due <= now) {
            let Some(p) = link.queue.pop() else { break };
            match p.toward {
                Toward::Callee => {
                    let _ = back.send_to(&p.bytes, callee);
                }
                Toward::Caller => {
                    if let Some(caller) = caller {
                        let _ = front.send_to(&p.bytes, caller);
                    }
                }
            }
        }
        // Half a millisecond of sleep: the scheduling granularity of the delays.
        std::thread::sleep(Duration::from_micros(500));
    }
    RelayReport {
        forward: forward.stats,
        backward: backward.stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_harness::loopback;

    /// A relay on fresh loopback sockets between a caller socket and a callee socket, with
    /// half-second read timeouts on both.
    fn relay(plan: Plan) -> (UdpSocket, Relay, UdpSocket) {
        let socket = || {
            let s = UdpSocket::bind((loopback(), 0)).expect("a loopback socket");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeouts can be set");
            s
        };
        let (caller, callee) = (socket(), socket());
        let relay = Relay::between(
            socket(),
            socket(),
            callee.local_addr().expect("bound"),
            plan,
        );
        (caller, relay, callee)
    }

    fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    }

    /// `count` RTP-shaped datagrams of `len` bytes, each carrying its index.
    fn media(count: usize, len: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let mut d = vec![0x80, 96];
                d.extend_from_slice(&(i as u32).to_be_bytes());
                d.resize(len, 0x55);
                d
            })
            .collect()
    }

    #[test]
    fn media_is_told_from_signalling_by_shape() {
        let with = |first: u8, len: usize| {
            let mut d = vec![0u8; len];
            if let Some(b) = d.first_mut() {
                *b = first;
            }
            d
        };
        // RTP, whatever its size.
        for first in [0x80, 0x9F, 0xBF] {
            assert!(is_media(&with(first, 524)));
            assert!(is_media(&with(first, 13)));
        }
        // Raw PCM: exactly 1024 bytes, any first byte (signalling text included).
        assert!(is_media(&with(b'S', 1024)));
        assert!(is_media(&with(0x00, 1024)));
        assert!(!is_media(&with(0x00, 1023)));
        assert!(!is_media(&with(0x00, 1025)));
        // Secure transport: an encrypted frame is media, encrypted signalling is not.
        for first in SECURE_TRANSPORT_TYPES {
            assert!(is_media(&with(first, 549)));
            assert!(is_media(&with(first, 1061)));
            assert!(is_media(&with(first, SECURE_MEDIA_MIN_LEN)));
            assert!(!is_media(&with(first, SECURE_MEDIA_MIN_LEN - 1)));
            assert!(!is_media(&with(first, 90)));
        }
        // Handshakes, plaintext lines, other bytes.
        for first in [0x01, 0x02, 0x05, 0x7F, 0xC0, 0xFF] {
            assert!(!is_media(&with(first, 549)));
        }
        assert!(!is_media(b"START alice call=0000002a v=2 codecs=L16,PCMU"));
        assert!(!is_media(b""));
    }

    #[test]
    fn a_transparent_relay_forwards_both_ways_and_keeps_nothing() {
        let (caller, relay, callee) = relay(Plan::transparent());
        caller.send_to(b"START alice", relay.addr).expect("sent");
        let (bytes, from) = receive(&callee).expect("forwarded to the callee");
        assert_eq!(bytes, b"START alice");
        assert_eq!(from, relay.callee_side);
        callee.send_to(b"RINGING call=1", from).expect("sent");
        let (bytes, from) = receive(&caller).expect("forwarded back");
        assert_eq!(
            (bytes.as_slice(), from),
            (&b"RINGING call=1"[..], relay.addr)
        );
        // Datagrams from anyone but the callee on the callee side are not forwarded.
        let stranger = UdpSocket::bind((loopback(), 0)).expect("a loopback socket");
        stranger.send_to(b"CLOSE", relay.callee_side).expect("sent");
        assert!(relay.captured().is_empty());
        assert_eq!(receive(&caller), None);
        let report = relay.finish();
        let one = Traffic {
            datagrams: 1,
            signalling: 1,
            ..Traffic::default()
        };
        assert_eq!(
            report,
            RelayReport {
                forward: one,
                backward: one
            }
        );
    }

    #[test]
    fn a_recording_relay_keeps_every_datagram_with_its_direction_and_time() {
        let (caller, relay, callee) = relay(Plan::transparent().recording());
        let sent = media(3, 524);
        caller.send_to(b"START alice", relay.addr).expect("sent");
        receive(&callee).expect("forwarded");
        std::thread::sleep(Duration::from_millis(20));
        for d in &sent {
            callee.send_to(d, relay.callee_side).expect("sent");
            assert_eq!(receive(&caller).map(|r| r.0).as_ref(), Some(d));
        }
        let captured = relay.captured();
        let summary: Vec<(Toward, &[u8])> = captured
            .iter()
            .map(|c| (c.toward, c.bytes.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Toward::Callee, &b"START alice"[..]),
                (Toward::Caller, &sent[0][..]),
                (Toward::Caller, &sent[1][..]),
                (Toward::Caller, &sent[2][..]),
            ]
        );
        assert!(captured[1].at >= captured[0].at + Duration::from_millis(20));
        assert!(captured.windows(2).all(|w| w[0].at <= w[1].at));
        let report = relay.finish();
        assert_eq!(report.backward.media, 3);
        assert_eq!(report.forward.signalling, 1);
    }

    #[test]
    fn tampering_flips_one_byte_of_the_asked_share_of_media_only() {
        const COUNT: usize = 400;
        let (caller, relay, callee) = relay(Plan::transparent().recording().tampering(0.25, 11));
        let sent = media(COUNT, 549);
        let mut arrived = Vec::new();
        for d in &sent {
            caller.send_to(d, relay.addr).expect("sent");
            arrived.push(receive(&callee).expect("forwarded").0);
        }
        // Signalling is never touched, whatever the rate.
        for _ in 0..50 {
            caller
                .send_to(b"ACK call=0000002a", relay.addr)
                .expect("sent");
            assert_eq!(
                receive(&callee).map(|r| r.0),
                Some(b"ACK call=0000002a".to_vec())
            );
        }
        let mut altered = 0;
        for (s, a) in sent.iter().zip(&arrived) {
            assert_eq!(s.len(), a.len());
            let differ = s.iter().zip(a).filter(|(x, y)| x != y).count();
            assert!(differ <= 1, "{differ} bytes changed in one datagram");
            altered += differ;
        }
        // The recording holds what was sent, not what was forwarded.
        let recorded: Vec<Vec<u8>> = relay.captured().into_iter().map(|c| c.bytes).collect();
        assert_eq!(&recorded[..COUNT], &sent[..]);
        let report = relay.finish();
        assert_eq!(report.forward.tampered, altered);
        assert_eq!(report.forward.media, COUNT);
        assert_eq!(report.forward.signalling, 50);
        // 100 expected; three standard deviations are 26.
        assert!((74..=126).contains(&altered), "{altered} of {COUNT}");
    }

    #[test]
    fn tampering_is_seeded_and_counted_per_direction() {
        let run = |seed: u64| {
            let (caller, relay, callee) = relay(Plan::transparent().tampering(0.1, seed));
            caller.send_to(b"START alice", relay.addr).expect("sent");
            receive(&callee).expect("forwarded");
            let mut heard = Vec::new();
            for d in media(200, 1036) {
                callee.send_to(&d, relay.callee_side).expect("sent");
                heard.push(receive(&caller).expect("forwarded back").0);
            }
            (heard, relay.finish())
        };
        let (first, report) = run(5);
        let (again, _) = run(5);
        let (other, _) = run(6);
        assert_eq!(first, again, "the same seed tampers the same bytes");
        assert_ne!(first, other, "another seed tampers others");
        assert_eq!(report.forward.tampered, 0);
        assert!(report.backward.tampered > 0);
        let changed = first
            .iter()
            .zip(media(200, 1036))
            .filter(|(a, s)| **a != *s)
            .count();
        assert_eq!(changed, report.backward.tampered);
    }

    #[test]
    fn injected_datagrams_come_from_the_relay_and_pass_no_plan() {
        let (caller, relay, callee) = relay(Plan::transparent().recording());
        let refused = relay
            .inject(Toward::Caller, b"CLOSE")
            .expect_err("no caller yet");
        assert!(refused.to_string().contains("no caller"), "{refused}");
        relay
            .inject(Toward::Callee, b"START mallory")
            .expect("sent to the callee");
        assert_eq!(
            receive(&callee),
            Some((b"START mallory".to_vec(), relay.callee_side))
        );
        caller.send_to(b"START alice", relay.addr).expect("sent");
        receive(&callee).expect("forwarded");
        relay
            .inject(Toward::Caller, b"CLOSE call=0000002a")
            .expect("sent to the caller");
        assert_eq!(
            receive(&caller),
            Some((b"CLOSE call=0000002a".to_vec(), relay.addr))
        );
        assert_eq!(relay.captured().len(), 1, "injections are not recorded");
        let report = relay.finish();
        assert_eq!(report.forward.datagrams, 1);
        assert_eq!(report.backward.datagrams, 0);
    }

    /// Sends `count` signalling lines one way through `plan` and counts what arrives,
    /// with the relay's report.
    fn signalling_through(plan: Plan, count: usize) -> (usize, RelayReport) {
        let (caller, relay, callee) = relay(plan);
        // The callee reads as the lines come, so that its socket buffer never fills.
        let reader = std::thread::spawn(move || {
            callee
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeouts can be set");
            let mut arrived = 0;
            while receive(&callee).is_some() {
                arrived += 1;
            }
            arrived
        });
        for i in 0..count {
            let line = format!("ACK {i:016x}");
            caller.send_to(line.as_bytes(), relay.addr).expect("sent");
            // Paced, so that no socket buffer on the way overflows.
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let arrived = reader.join().expect("the reader counts");
        (arrived, relay.finish())
    }

    #[test]
    fn signalling_is_impaired_only_when_the_plan_impairs_everything() {
        const COUNT: usize = 400;
        let netem = Netem {
            loss: 0.2,
            duplicate: 0.1,
            reorder: 0.1,
            delay: Duration::from_millis(2),
            jitter: Duration::from_millis(1),
            seed: 3,
        };
        // By default, signalling crosses whole.
        let (arrived, report) = signalling_through(Plan::transparent().impaired(netem), COUNT);
        assert_eq!(arrived, COUNT);
        assert_eq!(report.forward.signalling, COUNT);
        assert_eq!(
            (report.forward.lost, report.forward.duplicated),
            (0, 0),
            "{report:?}"
        );
        // Impairing everything: signalling is lost, duplicated and reordered too.
        let plan = Plan::transparent().impaired(netem).impairing_everything();
        let (arrived, report) = signalling_through(plan, COUNT);
        let f = report.forward;
        assert_eq!(f.signalling, COUNT);
        assert_eq!(f.media, 0);
        // 80 lost and 32 duplicated expected; three standard deviations are 24 and 17.
        assert!((56..=104).contains(&f.lost), "{f:?}");
        assert!((15..=49).contains(&f.duplicated), "{f:?}");
        assert!(f.reordered > 0, "{f:?}");
        assert_eq!(arrived, COUNT - f.lost + f.duplicated, "{f:?}");
    }

    #[test]
    fn the_rng_is_seeded_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let draws: Vec<f64> = (0..10_000).map(|_| a.unit()).collect();
        assert!(draws.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!(
            draws
                .iter()
                .zip((0..).map(|_| b.unit()))
                .all(|(x, y)| *x == y)
        );
        let below = draws.iter().filter(|&&x| x < 0.05).count();
        assert!((400..=600).contains(&below), "{below}");
    }
}
