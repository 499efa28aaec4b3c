//! How long sealing and opening a media packet takes, printed, not asserted (a timed
//! assertion fails on a busy machine). Run it optimised:
//!
//! ```sh
//! cargo test -p parlo-net --release --test secure_speed -- --ignored --nocapture
//! ```

use std::time::Instant;

use parlo_net::secure::{Config, MAX_DATAGRAM, MAX_INNER};

mod common;
use common::{ALICE, BOB, WALL};

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn nanoseconds_per_seal_and_open_of_an_l16_rtp_packet() {
    let wall = WALL;
    let (mut alice, mut bob) = common::established(Config::default());
    let bob_public = common::bob().public();
    let mut datagram = [0u8; MAX_DATAGRAM];
    let mut inner = [0u8; MAX_INNER];

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

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn microseconds_per_handshake() {
    const ROUNDS: u32 = 500;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        let (alice, _) = common::established(Config::default());
        assert!(alice.session(BOB).is_some());
    }
    let elapsed = start.elapsed();
    println!(
        "a whole handshake (Init sealed and opened, Response sealed and opened, both \
         sides' work): {} µs ({ROUNDS} rounds)",
        elapsed.as_micros() / u128::from(ROUNDS)
    );
}
