//! How long sealing and opening a media packet takes, printed, not asserted (a timed
//! assertion fails on a busy machine). Run it optimised:
//!
//! ```sh
//! cargo test -p parlo-net --release --test secure_speed -- --ignored --nocapture
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use parlo_net::noise::SecretKey;
use parlo_net::secure::{Config, MAX_DATAGRAM, MAX_INNER, Sessions, Timestamp};

const ALICE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001));
const BOB: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5002));

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn nanoseconds_per_seal_and_open_of_an_l16_rtp_packet() {
    let wall = Timestamp(1_700_000_000_000_000_000);
    let alice_key = SecretKey::from_bytes([1; 32]);
    let bob_key = SecretKey::from_bytes([2; 32]);
    let (alice_public, bob_public) = (alice_key.public(), bob_key.public());
    let mut alice = Sessions::new(alice_key, Config::default());
    let mut bob = Sessions::new(bob_key, Config::default());
    let mut datagram = [0u8; MAX_DATAGRAM];
    let mut inner = [0u8; MAX_INNER];
    let n = alice
        .seal(
            0,
            wall,
            BOB,
            &bob_public,
            b"START alice call=0000002a",
            true,
            &mut datagram,
            &mut || [3; 32],
        )
        .expect("Init");
    bob.open(0, wall, ALICE, &datagram[..n], &mut inner, &mut || [4; 32])
        .expect("Init opened");
    let n = bob
        .seal(
            0,
            wall,
            ALICE,
            &alice_public,
            b"ACCEPT call=0000002a",
            false,
            &mut datagram,
            &mut || [0; 32],
        )
        .expect("Response");
    alice
        .open(0, wall, BOB, &datagram[..n], &mut inner, &mut || [0; 32])
        .expect("Response opened");

    let mut packet = [0x5au8; 1036];
    packet[0] = 0x80;
    const ROUNDS: u64 = 200_000;
    let start = Instant::now();
    for i in 0..ROUNDS {
        packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        // 20 ms of `now` a packet: the sending key changes every 6,000.
        let now = i * 20;
        let n = alice
            .seal(
                now,
                wall,
                BOB,
                &bob_public,
                &packet,
                false,
                &mut datagram,
                &mut || [0; 32],
            )
            .expect("sealed");
        let opened = bob
            .open(now, wall, ALICE, &datagram[..n], &mut inner, &mut || {
                [0; 32]
            })
            .expect("opened");
        assert_eq!(opened.len, packet.len());
    }
    let elapsed = start.elapsed();
    assert_eq!(inner[..packet.len()], packet[..]);
    println!(
        "seal + open of a 1036-byte packet: {} ns ({ROUNDS} rounds, {} key changes)",
        elapsed.as_nanos() / u128::from(ROUNDS),
        alice.session(BOB).expect("session").rekeys
    );
}
