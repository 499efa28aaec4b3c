//! Encrypted call datagrams: `Sessions::open` never panics on any bytes, from the peer's
//! address or a stranger's, and a datagram it drops changes nothing.
//!
//! Each input sets up bob with an established session with alice and, from alice's
//! address, a START waiting for its answer. The input is then cut into datagrams: a
//! selector byte, a length byte, that many bytes. The selector's low bit picks the sender
//! (alice's address or a stranger's); its next two bits pick the shape: the bytes as
//! they are, or XORed into one of alice's genuine datagrams (a transport packet, an Init,
//! a Response to bob's own waiting START) so that the changes land past the length and
//! type checks. Checked after each datagram besides "never panics": what opens fits the
//! buffer and is never a changed copy of a genuine datagram; a drop is counted once; and
//! alice's next genuine packet still opens.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use parlo_net::noise::SecretKey;
use parlo_net::secure::{Config, Counters, Kind, MAX_DATAGRAM, MAX_INNER, Sessions, Timestamp};

const ALICE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001));
const BOB: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5002));
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5003));
const WALL: Timestamp = Timestamp(1_700_000_000_000_000_000);

fn dropped(c: Counters) -> u64 {
    c.auth_failures + c.replays + c.stale + c.rate_limited + c.no_session + c.malformed
}

fuzz_target!(|data: &[u8]| {
    let config = Config {
        handshake_burst: 1_000,
        ..Config::default()
    };
    let alice_key = SecretKey::from_bytes([1; 32]);
    let bob_key = SecretKey::from_bytes([2; 32]);
    let (alice_public, bob_public) = (alice_key.public(), bob_key.public());
    let mut alice = Sessions::new(alice_key, config);
    let mut bob = Sessions::new(bob_key, config);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut inner = [0u8; MAX_INNER];
    let mut seal = |s: &mut Sessions,
                    to: SocketAddr,
                    key: &parlo_fsm::PublicKey,
                    line: &[u8],
                    start: bool,
                    eph: u8| {
        let n = s
            .seal(0, WALL, to, key, line, start, &mut buf, &mut || [eph; 32])
            .expect("sealed");
        buf[..n].to_vec()
    };
    // A call, established.
    let init = seal(
        &mut alice,
        BOB,
        &bob_public,
        b"START alice call=00000001",
        true,
        3,
    );
    bob.open(0, WALL, ALICE, &init, &mut inner, &mut || [4; 32])
        .expect("Init");
    let answer = seal(
        &mut bob,
        ALICE,
        &alice_public,
        b"ACCEPT call=00000001",
        false,
        0,
    );
    alice
        .open(0, WALL, BOB, &answer, &mut inner, &mut || [0; 32])
        .expect("Response");
    // Bob calls alice too (his START waits at alice: its Response is something to change),
    // and alice calls bob again (her second START waits at bob).
    let bob_init = seal(
        &mut bob,
        ALICE,
        &alice_public,
        b"START bob call=00000002",
        true,
        5,
    );
    alice
        .open(0, WALL, BOB, &bob_init, &mut inner, &mut || [6; 32])
        .expect("bob's Init");
    let second = seal(
        &mut alice,
        BOB,
        &bob_public,
        b"START alice call=00000003",
        true,
        7,
    );
    bob.open(0, WALL, ALICE, &second, &mut inner, &mut || [8; 32])
        .expect("second Init");
    let response = seal(
        &mut alice,
        BOB,
        &bob_public,
        b"BUSY call=00000002",
        false,
        0,
    );
    let transport = seal(
        &mut alice,
        BOB,
        &bob_public,
        b"CLOSE call=00000001",
        false,
        0,
    );
    let genuine = [&transport, &init, &response];

    let mut rest = data;
    let mut now = 1;
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        now += 1;
        let from = if selector & 1 == 0 { ALICE } else { STRANGER };
        let datagram = match (selector >> 1) & 3 {
            0 => bytes.to_vec(),
            shape => {
                let mut changed = genuine[usize::from(shape) - 1].clone();
                for (i, b) in bytes.iter().enumerate() {
                    let at = i % changed.len();
                    changed[at] ^= b;
                }
                changed
            }
        };
        let before = dropped(bob.counters());
        let result = bob.open(now, WALL, from, &datagram, &mut inner, &mut || [9; 32]);
        match result {
            Ok(opened) => {
                assert!(opened.len <= MAX_INNER);
                // Only genuine datagrams open: unchanged, or the waiting START's copy.
                let unchanged = genuine.iter().any(|g| g[..] == datagram[..]);
                assert!(
                    unchanged || opened.kind == Kind::Start && datagram == second,
                    "a changed datagram opened: {opened:?}"
                );
            }
            Err(why) => {
                let _ = why.to_string();
                assert_eq!(dropped(bob.counters()), before + 1, "counted once");
            }
        }
        let _ = bob.poll_transmit();
        let check = seal(&mut alice, BOB, &bob_public, b"ping", false, 0);
        let opened = bob
            .open(now, WALL, ALICE, &check, &mut inner, &mut || [9; 32])
            .expect("the session still opens alice's packets");
        assert_eq!(&inner[..opened.len], b"ping");
    }
});
