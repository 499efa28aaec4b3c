//! The media path allocates nothing per frame, on either side of a call.
//!
//! Two media sessions, a caller's and a callee's, talk over real UDP sockets on loopback
//! through a relay that drops, duplicates and reorders packets (seeded). The test plays
//! both audio devices itself, through the same lock-free queues a device thread uses
//! ([`Audio::from_queues`]), so 1,000+ frames take milliseconds instead of 64 ms each.
//! Each tick, on each side: the device plays a frame and delivers a captured one, the
//! loop's wake handler sends it, the playout deadline moves one frame from the jitter
//! buffer to playback, then every datagram that
//! arrived is parsed, shown to the call machine (`Event::Media`) and given to the jitter
//! buffer — what the phone's loop does. After a warm-up, the process-wide allocation
//! counter of the phone (`alloc_count`, installed here as the global allocator) must not
//! move, for L16, PCMU and the original protocol's raw PCM, and for L16 and PCMU in an
//! encrypted call (each packet sealed and opened by the phone's sessions, duplicates
//! caught by their replay window, both sending keys changed every 20 frames).
//!
//! A conference too: four members in a full mesh, each with an encrypted leg to each of
//! the three others (L16 or PCMU by pair) through a lossy relay of its own, each sending
//! every captured frame to all three and playing the mix of what it receives. There the
//! call machine is left out (it holds one call): the media path and the sessions are
//! counted.
//!
//! One test function: the counter is process-wide, so nothing else may run beside it.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdp};

use mio::net::UdpSocket;
use parlo_audio::{Audio, DeviceEnd, Frame, SILENCE, frame_queues};
use parlo_client::alloc_count::{self, Counting};
use parlo_client::crypto::{Closed, Crypto, SealedLink};
use parlo_client::media::Media;
use parlo_client::media::MediaStats;
use parlo_client::random::OsRandom;
use parlo_fsm::{self as fsm, Machine, PublicKey, SplitMix64};
use parlo_net::media::Datagram;
use parlo_net::noise::SecretKey;
use parlo_net::peer::{Codec, Dialect};
use parlo_net::secure::{self, Dropped};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Ticks before counting: the jitter buffer fills, sockets and queues settle.
const WARM_UP: u32 = 100;
/// Ticks counted: each is one frame sent and one played, on each side.
const MEASURED: u32 = 1_200;

/// A tiny seeded generator (xorshift64*), allocation-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The frame captured at `tick`: a ramp of step 100 whose start depends on the tick, so
/// that a frame played intact is recognisable (every step +100, or the wrap -19,900).
fn captured(tick: u32, out: &mut Frame) {
    for (i, sample) in out.iter_mut().enumerate() {
        let phase = (tick as usize * 7 + i) % 200;
        *sample = (phase as i16 - 100) * 100;
    }
}

fn is_intact_ramp(frame: &Frame) -> bool {
    frame
        .windows(2)
        .all(|w| matches!(i32::from(w[1]) - i32::from(w[0]), 100 | -19_900))
}

/// One side of the call: its media, its socket, the device end the test plays, and its
/// call machine (which sees every media packet, as in the phone).
struct Side {
    media: Media,
    udp: UdpSocket,
    device: DeviceEnd,
    machine: Machine<SplitMix64>,
    dialect: Dialect,
    frame: Frame,
    played: Frame,
    buf: [u8; 2048],
    intact: u64,
    nonsilent: u64,
    /// In an encrypted call: this side's sessions and the peer's key.
    crypto: Option<(Crypto, PublicKey)>,
    sealed: Box<[u8; secure::MAX_DATAGRAM]>,
    inner: [u8; secure::MAX_INNER],
}

/// The key pair of side `n` of an encrypted call.
fn identity(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

impl Side {
    fn new(
        name: &str,
        addr: &str,
        peer: SocketAddr,
        dialect: Dialect,
        codec: Codec,
        caller: bool,
        encrypted: bool,
    ) -> Side {
        let (me, them) = if caller { (1, 2) } else { (2, 1) };
        let crypto = encrypted.then(|| {
            let config = secure::Config {
                // 20 frames.
                rekey_after: 1_280,
                ..secure::Config::default()
            };
            let random = OsRandom::new().expect("the system's random source");
            (
                Crypto::new(identity(me), config, true, random),
                identity(them).public(),
            )
        });
        let udp = UdpSocket::bind(addr.parse().expect("address")).expect("bind");
        let (device, end) = frame_queues(std::sync::Arc::new(|| {}));
        let mut media = Media::new(parlo_audio::DeviceSpec::Null);
        media.start_on(
            Audio::from_queues(end),
            peer,
            dialect,
            codec,
            crypto.as_ref().map(|(_, key)| *key),
            0x1234_5678,
        );
        let mut config = fsm::Config::new(fsm::Name::new(name).expect("name"));
        // A plaintext call, as the phone makes them.
        config.security = fsm::Security::Preferred;
        let mut machine = Machine::new(config, SplitMix64(1), fsm::Instant(0));
        let now = fsm::Instant(0);
        let other = fsm::Name::new(if caller { "callee" } else { "caller" }).expect("name");
        if caller {
            let _ = machine.handle(now, &fsm::Event::Dial(other.clone()));
            let _ = machine.handle(
                now,
                &fsm::Event::Resolved {
                    name: other,
                    addr: peer,
                    dialect: None,
                    key: None,
                    pinned: None,
                },
            );
            let call = machine.call_id();
            let message = fsm::Message::Accept { call, codec: None };
            let _ = machine.handle(
                now,
                &fsm::Event::Peer {
                    from: peer,
                    message,
                    sender: fsm::Sender::Plain,
                    pinned: None,
                },
            );
        } else {
            let message =
                fsm::Message::start(other, fsm::CallId(7), fsm::CodecSet::only(fsm::Codec::L16));
            let _ = machine.handle(
                now,
                &fsm::Event::Peer {
                    from: peer,
                    message,
                    sender: fsm::Sender::Plain,
                    pinned: None,
                },
            );
            let _ = machine.handle(now, &fsm::Event::Accept);
        }
        assert_eq!(machine.state(), fsm::State::InCall);
        Side {
            media,
            udp,
            device,
            machine,
            dialect,
            frame: SILENCE,
            played: SILENCE,
            buf: [0; 2048],
            intact: 0,
            nonsilent: 0,
            crypto,
            sealed: Box::new([0; secure::MAX_DATAGRAM]),
            inner: [0; secure::MAX_INNER],
        }
    }

    /// The address this side knows its peer by (the relay's socket facing it).
    fn peer(&self) -> SocketAddr {
        self.machine.peer_addr().expect("in a call")
    }

    /// The device's tick: play the frame handed over before it, deliver one captured
    /// frame; then the loop handles the wake (sends the frame) and, at its playout
    /// deadline, hands over the next frame to play.
    fn tick(&mut self, tick: u32) {
        self.play(tick);
        captured(tick, &mut self.frame);
        assert!(self.device.push_captured(&self.frame), "capture queue full");
        let failed = match &mut self.crypto {
            Some((crypto, _)) => self.media.handle_wake(&mut SealedLink {
                udp: &self.udp,
                crypto,
                now: u64::from(tick) * 64,
                buf: &mut self.sealed,
            }),
            None => self.media.handle_wake(&mut &self.udp),
        };
        assert!(!failed, "the device failed");
        // The deadline comes: the frame for the next tick is handed over, if it was not
        // already (the jitter buffer had it). The next tick checks that it was.
        let due = self
            .media
            .playout_deadline()
            .expect("the device has ticked");
        self.media.handle_playout(due);
    }

    /// The device plays the frame handed over for this tick (none before the first).
    fn play(&mut self, tick: u32) {
        let played = self.device.pop_playback(&mut self.played);
        assert!(played || tick == 0, "nothing played at tick {tick}");
        if self.played != SILENCE {
            self.nonsilent += 1;
        }
        if is_intact_ramp(&self.played) {
            self.intact += 1;
        }
    }

    /// Everything that arrived, as the phone's UDP handler takes it.
    fn receive(&mut self, now_ms: u64, arrival: u32) {
        loop {
            let (len, from) = match self.udp.recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("receive: {e}"),
            };
            let (datagram, key) = match &mut self.crypto {
                Some((crypto, _)) => {
                    match crypto.open(now_ms, from, &self.buf[..len], &mut self.inner) {
                        Ok(opened) => (&self.inner[..opened.len], Some(opened.key)),
                        // The relay's duplicates.
                        Err(Closed::Dropped(Dropped::Replay)) => continue,
                        Err(e) => panic!("cannot open a packet: {e:?}"),
                    }
                }
                None => (&self.buf[..len], None),
            };
            match Datagram::parse(datagram, Some(self.dialect)) {
                Ok(Datagram::Rtp(packet)) => {
                    let _ = self.machine.handle(
                        fsm::Instant(now_ms),
                        &fsm::Event::Media {
                            from,
                            sender: fsm::Sender::of(key),
                        },
                    );
                    self.media.handle_rtp(from, &packet, arrival, key);
                }
                Ok(Datagram::RawPcm(raw)) => {
                    let _ = self.machine.handle(
                        fsm::Instant(now_ms),
                        &fsm::Event::Media {
                            from,
                            sender: fsm::Sender::Plain,
                        },
                    );
                    self.media.handle_raw(from, &raw, arrival);
                }
                other => panic!("unexpected datagram: {other:?}"),
            }
        }
    }
}

/// Sets up the encrypted session between the caller `a` and the callee `b`, as their
/// phones would: `a` seals its START for `b`'s key, `b` answers it with RINGING.
fn handshake(a: &mut Side, b: &mut Side) {
    let (a_peer, b_peer) = (a.peer(), b.peer());
    let (Some((a_crypto, b_key)), Some((b_crypto, a_key))) = (&mut a.crypto, &mut b.crypto) else {
        panic!("both sides encrypt");
    };
    handshake_keys(a_crypto, a_peer, b_key, b_crypto, b_peer, a_key);
}

/// The session between `a_crypto` (which knows the other as `a_peer`, with key `b_key`)
/// and `b_crypto` (which knows the first as `b_peer`, with key `a_key`), `a` calling.
fn handshake_keys(
    a_crypto: &mut Crypto,
    a_peer: SocketAddr,
    b_key: &PublicKey,
    b_crypto: &mut Crypto,
    b_peer: SocketAddr,
    a_key: &PublicKey,
) {
    let mut datagram = [0u8; secure::MAX_DATAGRAM];
    let mut inner = [0u8; secure::MAX_INNER];
    let start = b"START caller call=00000007 v=2 codecs=L16,PCMU";
    let n = a_crypto
        .seal(0, a_peer, b_key, start, true, &mut datagram)
        .expect("the Init");
    let opened = b_crypto
        .open(0, b_peer, &datagram[..n], &mut inner)
        .expect("the callee opens the Init");
    assert_eq!((&inner[..opened.len], opened.key), (&start[..], *a_key));
    let n = b_crypto
        .seal(
            0,
            b_peer,
            a_key,
            b"RINGING call=00000007",
            false,
            &mut datagram,
        )
        .expect("the Response");
    let opened = a_crypto
        .open(0, a_peer, &datagram[..n], &mut inner)
        .expect("the caller opens the Response");
    assert_eq!(opened.kind, secure::Kind::Answer);
}

/// One direction of the relay: what one side sends arrives on `inbound` and leaves from
/// `outbound` (the socket the other side knows as its peer) towards `to`.
struct Lane {
    held: [u8; 2048],
    held_len: Option<usize>,
    buf: [u8; 2048],
    dropped: u64,
    duplicated: u64,
    reordered: u64,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            held: [0; 2048],
            held_len: None,
            buf: [0; 2048],
            dropped: 0,
            duplicated: 0,
            reordered: 0,
        }
    }

    /// Forwards what waits on `inbound`: 3 % dropped and, with `shuffle`, 2 % sent twice
    /// and 3 % held back and sent after the next packet (swapping the two).
    fn pump(
        &mut self,
        inbound: &StdUdp,
        outbound: &StdUdp,
        to: SocketAddr,
        rng: &mut Rng,
        shuffle: bool,
    ) {
        loop {
            let len = match inbound.recv_from(&mut self.buf) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("relay: {e}"),
            };
            let roll = match rng.below(100) {
                3..8 if !shuffle => 8,
                roll => roll,
            };
            if roll < 3 {
                self.dropped += 1;
                continue;
            }
            if roll < 6 && self.held_len.is_none() {
                self.held[..len].copy_from_slice(&self.buf[..len]);
                self.held_len = Some(len);
                self.reordered += 1;
                continue;
            }
            outbound.send_to(&self.buf[..len], to).expect("relay send");
            if roll < 8 {
                outbound.send_to(&self.buf[..len], to).expect("relay send");
                self.duplicated += 1;
            }
            if let Some(held) = self.held_len.take() {
                outbound
                    .send_to(&self.held[..held], to)
                    .expect("relay send");
            }
        }
    }
}

fn relay_socket(addr: &str) -> StdUdp {
    let socket = StdUdp::bind(addr).expect("bind the relay");
    socket.set_nonblocking(true).expect("non-blocking");
    socket
}

struct Report {
    allocations: u64,
    ticks: u32,
}

/// Runs a call of `WARM_UP + MEASURED` ticks; returns the allocations counted after the
/// warm-up. `net` is the loopback address block of this run (127.0.<net>.x).
fn call(net: u8, dialect: Dialect, codec: Codec, encrypted: bool) -> Report {
    // The relay: the caller's peer address is `for_caller`, the callee's `for_callee`.
    let for_caller = relay_socket(&format!("127.0.{net}.3:0"));
    let for_callee = relay_socket(&format!("127.0.{net}.4:0"));
    let mut a = Side::new(
        "caller",
        &format!("127.0.{net}.1:0"),
        for_caller.local_addr().expect("address"),
        dialect,
        codec,
        true,
        encrypted,
    );
    let mut b = Side::new(
        "callee",
        &format!("127.0.{net}.2:0"),
        for_callee.local_addr().expect("address"),
        dialect,
        codec,
        false,
        encrypted,
    );
    if encrypted {
        handshake(&mut a, &mut b);
    }
    let a_addr = a.udp.local_addr().expect("address");
    let b_addr = b.udp.local_addr().expect("address");
    let mut to_b = Lane::new();
    let mut to_a = Lane::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(net));

    let mut before = 0;
    for tick in 0..WARM_UP + MEASURED {
        if tick == WARM_UP {
            before = alloc_count::allocations();
        }
        a.tick(tick);
        b.tick(tick);
        // Raw PCM has no sequence numbers: duplicates and reordering would be played as
        // they come, so the original protocol only gets loss.
        let shuffle = dialect == Dialect::Parlo;
        to_b.pump(&for_caller, &for_callee, b_addr, &mut rng, shuffle);
        to_a.pump(&for_callee, &for_caller, a_addr, &mut rng, shuffle);
        // Virtual time: 64 ms per tick, arrivals jittered by up to 30 ms (240 samples).
        let now_ms = u64::from(tick) * 64;
        let arrival = tick * 512 + rng.below(240) as u32;
        a.receive(now_ms, arrival);
        b.receive(now_ms, arrival);
    }
    let allocations = alloc_count::allocations() - before;
    // The frame handed over at the last tick's deadline plays at the device's next tick.
    a.play(WARM_UP + MEASURED);
    b.play(WARM_UP + MEASURED);

    for (side, lane, name) in [(&a, &to_a, "caller"), (&b, &to_b, "callee")] {
        let stats = side.media.stats();
        let ticks = u64::from(WARM_UP + MEASURED);
        assert_eq!(stats.sent, ticks, "{name}: {stats:?}");
        assert_eq!(stats.codec, Some(codec), "{name}: {stats:?}");
        assert!(lane.dropped > 0, "{name}: the relay dropped nothing");
        assert!(
            side.nonsilent >= ticks * 9 / 10,
            "{name}: only {} of {ticks} frames played sound: {stats:?}",
            side.nonsilent
        );
        if dialect == Dialect::Parlo {
            // The jitter buffer saw the impairments the relay made.
            assert!(lane.duplicated > 0 && lane.reordered > 0);
            // Encrypted, duplicates are caught by the session's replay window first.
            let duplicates = match &side.crypto {
                Some((crypto, _)) => {
                    let session = crypto.session(side.peer()).expect("a session");
                    assert!(session.rekeys >= 100, "{name}: {session:?}");
                    crypto.counters().replays
                }
                None => stats.duplicate,
            };
            assert!(stats.lost > 0 && duplicates > 0, "{name}: {stats:?}");
        }
        if codec == Codec::L16 || dialect == Dialect::Original {
            // Lossless: every frame played from a packet is the frame sent, bit for bit.
            assert!(
                side.intact >= stats.played,
                "{name}: {} intact, {stats:?}",
                side.intact
            );
        }
        eprintln!(
            "{dialect:?}/{codec}: {name} sent {} received {} played {} lost {} late {} \
             duplicate {} concealed {}; relay dropped {} duplicated {} reordered {}",
            stats.sent,
            stats.received,
            stats.played,
            stats.lost,
            stats.late,
            stats.duplicate,
            stats.concealed,
            lane.dropped,
            lane.duplicated,
            lane.reordered
        );
    }
    a.media.stop().expect("stops");
    b.media.stop().expect("stops");
    Report {
        allocations,
        ticks: MEASURED,
    }
}

/// Members of the conference: a full mesh of encrypted legs.
const MEMBERS: usize = 4;

/// The codec of the legs between members `i` and `j` (both ways): L16 or PCMU by pair,
/// so that a member sends both at once.
fn pair_codec(i: usize, j: usize) -> Codec {
    if (i + j) % 2 == 0 {
        Codec::L16
    } else {
        Codec::Pcmu
    }
}

/// A member of the conference: its media with a leg to each other member, its socket,
/// the device end the test plays, and its sessions.
struct Member {
    media: Media,
    udp: UdpSocket,
    device: DeviceEnd,
    crypto: Crypto,
    frame: Frame,
    played: Frame,
    buf: [u8; 2048],
    nonsilent: u64,
    sealed: Box<[u8; secure::MAX_DATAGRAM]>,
    inner: [u8; secure::MAX_INNER],
}

impl Member {
    /// Member `n` on `addr`, with a leg to each of `peers` (the address it knows another
    /// member by, that member's number).
    fn new(n: usize, addr: &str, peers: &[(SocketAddr, usize)]) -> Member {
        let config = secure::Config {
            // 20 frames.
            rekey_after: 1_280,
            ..secure::Config::default()
        };
        let random = OsRandom::new().expect("the system's random source");
        let crypto = Crypto::new(identity(n as u8 + 1), config, true, random);
        let udp = UdpSocket::bind(addr.parse().expect("address")).expect("bind");
        let (device, end) = frame_queues(std::sync::Arc::new(|| {}));
        let mut media = Media::new(parlo_audio::DeviceSpec::Null);
        let mut end = Some(end);
        for &(peer, m) in peers {
            // The device is the first leg's; the others join it.
            let end = end
                .take()
                .unwrap_or_else(|| frame_queues(std::sync::Arc::new(|| {})).1);
            media.start_on(
                Audio::from_queues(end),
                peer,
                Dialect::Parlo,
                pair_codec(n, m),
                Some(identity(m as u8 + 1).public()),
                0x1234_5678 + m as u64,
            );
        }
        assert_eq!(media.legs().count(), peers.len());
        Member {
            media,
            udp,
            device,
            crypto,
            frame: SILENCE,
            played: SILENCE,
            buf: [0; 2048],
            nonsilent: 0,
            sealed: Box::new([0; secure::MAX_DATAGRAM]),
            inner: [0; secure::MAX_INNER],
        }
    }

    /// As [`Side::tick`]: play, capture, send to every leg, hand over the mix.
    fn tick(&mut self, tick: u32) {
        self.play(tick);
        captured(tick, &mut self.frame);
        assert!(self.device.push_captured(&self.frame), "capture queue full");
        let failed = self.media.handle_wake(&mut SealedLink {
            udp: &self.udp,
            crypto: &mut self.crypto,
            now: u64::from(tick) * 64,
            buf: &mut self.sealed,
        });
        assert!(!failed, "the device failed");
        let due = self
            .media
            .playout_deadline()
            .expect("the device has ticked");
        self.media.handle_playout(due);
    }

    fn play(&mut self, tick: u32) {
        let played = self.device.pop_playback(&mut self.played);
        assert!(played || tick == 0, "nothing played at tick {tick}");
        if self.played != SILENCE {
            self.nonsilent += 1;
        }
    }

    /// Everything that arrived, opened and given to the media.
    fn receive(&mut self, now_ms: u64, arrival: u32) {
        loop {
            let (len, from) = match self.udp.recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("receive: {e}"),
            };
            let opened = match self
                .crypto
                .open(now_ms, from, &self.buf[..len], &mut self.inner)
            {
                Ok(opened) => opened,
                Err(Closed::Dropped(Dropped::Replay)) => continue,
                Err(e) => panic!("cannot open a packet: {e:?}"),
            };
            match Datagram::parse(&self.inner[..opened.len], Some(Dialect::Parlo)) {
                Ok(Datagram::Rtp(packet)) => {
                    assert!(
                        self.media
                            .handle_rtp(from, &packet, arrival, Some(opened.key)),
                        "a leg's own media"
                    );
                }
                other => panic!("unexpected datagram: {other:?}"),
            }
        }
    }
}

/// Runs a conference of [`MEMBERS`] for `WARM_UP + MEASURED` ticks; returns the
/// allocations counted after the warm-up. `net` as for [`call`].
fn conference(net: u8) -> Report {
    // view[i][j]: the relay's socket member i knows member j by. What i sends there
    // leaves from view[j][i], the address j knows i by.
    let view: Vec<Vec<StdUdp>> = (0..MEMBERS)
        .map(|i| {
            (0..MEMBERS)
                .map(|j| relay_socket(&format!("127.0.{net}.{}:0", 10 + 10 * i + j)))
                .collect()
        })
        .collect();
    let addr = |i: usize, j: usize| view[i][j].local_addr().expect("address");
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|i| {
            let peers: Vec<(SocketAddr, usize)> = (0..MEMBERS)
                .filter(|&j| j != i)
                .map(|j| (addr(i, j), j))
                .collect();
            Member::new(i, &format!("127.0.{net}.{}:0", i + 1), &peers)
        })
        .collect();
    // Each pair's session, the lower-numbered member calling.
    for i in 0..MEMBERS {
        for j in i + 1..MEMBERS {
            let (low, high) = members.split_at_mut(j);
            let (a, b) = (&mut low[i], &mut high[0]);
            let (a_key, b_key) = (
                identity(i as u8 + 1).public(),
                identity(j as u8 + 1).public(),
            );
            handshake_keys(
                &mut a.crypto,
                addr(i, j),
                &b_key,
                &mut b.crypto,
                addr(j, i),
                &a_key,
            );
        }
    }
    let member_addr: Vec<SocketAddr> = members
        .iter()
        .map(|m| m.udp.local_addr().expect("address"))
        .collect();
    // lanes[i * MEMBERS + j]: from i to j.
    let mut lanes: Vec<Lane> = (0..MEMBERS * MEMBERS).map(|_| Lane::new()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(net));

    let mut before = 0;
    for tick in 0..WARM_UP + MEASURED {
        if tick == WARM_UP {
            before = alloc_count::allocations();
        }
        for member in &mut members {
            member.tick(tick);
        }
        for i in 0..MEMBERS {
            for j in (0..MEMBERS).filter(|&j| j != i) {
                lanes[i * MEMBERS + j].pump(
                    &view[i][j],
                    &view[j][i],
                    member_addr[j],
                    &mut rng,
                    true,
                );
            }
        }
        let now_ms = u64::from(tick) * 64;
        let arrival = tick * 512 + rng.below(240) as u32;
        for member in &mut members {
            member.receive(now_ms, arrival);
        }
    }
    let allocations = alloc_count::allocations() - before;

    let ticks = u64::from(WARM_UP + MEASURED);
    for (i, member) in members.iter_mut().enumerate() {
        member.play(WARM_UP + MEASURED);
        let stats = member.media.stats();
        assert_eq!(
            stats.sent,
            ticks * (MEMBERS as u64 - 1),
            "member {i}: {stats:?}"
        );
        assert!(
            member.nonsilent >= ticks * 9 / 10,
            "member {i}: only {} of {ticks} frames played sound: {stats:?}",
            member.nonsilent
        );
        let legs: Vec<(SocketAddr, MediaStats)> = member.media.legs().collect();
        for (peer, leg) in &legs {
            assert_eq!(leg.sent, ticks, "member {i} to {peer}: {leg:?}");
            assert!(
                leg.played >= ticks * 9 / 10,
                "member {i} from {peer}: {leg:?}"
            );
            assert_eq!(leg.foreign_media, 0, "member {i} from {peer}: {leg:?}");
            let session = member.crypto.session(*peer).expect("a session");
            assert!(session.rekeys >= 100, "member {i} with {peer}: {session:?}");
        }
        assert!(
            stats.lost > 0,
            "member {i}: the relay lost nothing? {stats:?}"
        );
        eprintln!(
            "conference: member {i} sent {} received {} played {} lost {} late {} \
             duplicate {} concealed {} over {} legs",
            stats.sent,
            stats.received,
            stats.played,
            stats.lost,
            stats.late,
            stats.duplicate,
            stats.concealed,
            legs.len()
        );
    }
    let dropped: u64 = lanes.iter().map(|l| l.dropped).sum();
    let duplicated: u64 = lanes.iter().map(|l| l.duplicated).sum();
    let reordered: u64 = lanes.iter().map(|l| l.reordered).sum();
    assert!(dropped > 0 && duplicated > 0 && reordered > 0);
    eprintln!("conference: relay dropped {dropped} duplicated {duplicated} reordered {reordered}");
    for member in &mut members {
        member.media.stop().expect("stops");
    }
    Report {
        allocations,
        ticks: MEASURED,
    }
}

#[test]
fn media_allocates_nothing_per_frame_on_either_side() {
    for (net, dialect, codec, encrypted) in [
        (221, Dialect::Parlo, Codec::L16, false),
        (222, Dialect::Parlo, Codec::Pcmu, false),
        (223, Dialect::Original, Codec::L16, false),
        (224, Dialect::Parlo, Codec::L16, true),
        (225, Dialect::Parlo, Codec::Pcmu, true),
    ] {
        let report = call(net, dialect, codec, encrypted);
        let how = if encrypted { "encrypted" } else { "plaintext" };
        eprintln!(
            "{dialect:?}/{codec} {how}: {} allocations over {} frames each way",
            report.allocations, report.ticks
        );
        assert_eq!(
            report.allocations, 0,
            "{dialect:?}/{codec} {how}: the media path allocated"
        );
    }
    let report = conference(226);
    eprintln!(
        "conference of {MEMBERS}, encrypted: {} allocations over {} frames to and from each \
         of {} legs per member ({} per frame)",
        report.allocations,
        report.ticks,
        MEMBERS - 1,
        report.allocations as f64 / f64::from(report.ticks)
    );
    assert_eq!(
        report.allocations, 0,
        "conference: the media path allocated"
    );
}
