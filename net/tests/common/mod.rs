//! What the integration tests of `secure` share: two phones' sessions, set up.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use parlo_net::noise::SecretKey;
use parlo_net::secure::{Config, MAX_DATAGRAM, MAX_INNER, Sessions, Timestamp};

/// Alice's address, as Bob sees it.
pub const ALICE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001));
/// Bob's address, as Alice sees it.
pub const BOB: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5002));
/// The wall clock of the handshake.
pub const WALL: Timestamp = Timestamp(1_700_000_000_000_000_000);

/// Alice's key pair.
pub fn alice() -> SecretKey {
    SecretKey::from_bytes([1; 32])
}

/// Bob's key pair.
pub fn bob() -> SecretKey {
    SecretKey::from_bytes([2; 32])
}

/// Alice's and Bob's sessions, with `config`, after Alice called Bob and Bob answered:
/// the session between them is established on both sides.
pub fn established(config: Config) -> (Sessions, Sessions) {
    let (alice_key, bob_key) = (alice(), bob());
    let (alice_public, bob_public) = (alice_key.public(), bob_key.public());
    let mut alice = Sessions::new(alice_key, config);
    let mut bob = Sessions::new(bob_key, config);
    let mut datagram = [0u8; MAX_DATAGRAM];
    let mut inner = [0u8; MAX_INNER];
    let n = alice
        .seal(
            0,
            WALL,
            BOB,
            &bob_public,
            b"START alice call=0000002a",
            true,
            &mut datagram,
            &mut || [3; 32],
        )
        .expect("Init");
    bob.open(0, WALL, ALICE, &datagram[..n], &mut inner, &mut || [4; 32])
        .expect("Init opened");
    let n = bob
        .seal(
            0,
            WALL,
            ALICE,
            &alice_public,
            b"ACCEPT call=0000002a",
            false,
            &mut datagram,
            &mut || [0; 32],
        )
        .expect("Response");
    alice
        .open(0, WALL, BOB, &datagram[..n], &mut inner, &mut || [0; 32])
        .expect("Response opened");
    (alice, bob)
}
