//! Forged UDP datagrams on loopback: a datagram that claims any source address, as an
//! attacker on the path (or one who can spoof addresses) sends it. Built by hand, IPv4
//! and UDP headers with their checksums, and sent through a raw socket (`IPPROTO_RAW`,
//! `IP_HDRINCL`), which needs root (`CAP_NET_RAW`).
//!
//! Only loopback addresses (127.0.0.0/8) are accepted, as source and as destination: the
//! tests forge between their own phones and never send anything off the machine.
//!
//! A test that forges asks [`forging_allowed`] first: where forging is impossible it is
//! skipped, saying why, except under CI (`CI=true`), where it must run and fails instead.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Length of the IPv4 header built (no options).
pub const IPV4_HEADER_LEN: usize = 20;

/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// The longest payload a forged datagram may carry: what fits in one IPv4 packet.
pub const MAX_PAYLOAD: usize = 65_535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// The Internet checksum (RFC 1071) of `bytes`: the ones' complement of the ones'
/// complement sum of its 16-bit big-endian words, an odd last byte padded with zero.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    // The sum is folded at each step, so it fits in 16 bits.
    !(sum as u16)
}

/// The IPv4 packet of a UDP datagram from `src` to `dst` carrying `payload`: a 20-byte
/// IPv4 header (TTL 64, don't fragment, header checksum set) and a UDP header whose
/// checksum covers the pseudo-header, as the receiver's kernel checks it. Fails for a
/// payload longer than [`MAX_PAYLOAD`].
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a forged UDP payload holds at most {MAX_PAYLOAD} bytes, {} given",
                payload.len()
            ),
        ));
    }
    // Both fit in 16 bits: the payload is at most MAX_PAYLOAD.
    let udp_len = (UDP_HEADER_LEN + payload.len()) as u16;
    let total_len = (IPV4_HEADER_LEN + usize::from(udp_len)) as u16;
    let mut packet = Vec::with_capacity(usize::from(total_len));
    // Version 4, header of 5 words; no TOS; length; id 0; don't fragment; TTL 64; UDP.
    packet.extend_from_slice(&[0x45, 0x00]);
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0x00, 0x00, 0x40, 0x00, 64, libc::IPPROTO_UDP as u8]);
    packet.extend_from_slice(&[0x00, 0x00]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    let header_checksum = internet_checksum(&packet);
    packet[10..12].copy_from_slice(&header_checksum.to_be_bytes());

    let udp_start = packet.len();
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0x00, 0x00]);
    packet.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + usize::from(udp_len));
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0x00, libc::IPPROTO_UDP as u8]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&packet[udp_start..]);
    // A computed 0 is sent as all ones: 0 means "no checksum" in UDP over IPv4.
    let udp_checksum = match internet_checksum(&pseudo) {
        0 => 0xFFFF,
        sum => sum,
    };
    packet[udp_start + 6..udp_start + 8].copy_from_slice(&udp_checksum.to_be_bytes());
    Ok(packet)
}

/// Opens a raw IPv4 socket whose packets carry their own header.
fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the descriptor it returns, if any, is owned by
    // nobody else.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a valid descriptor just opened, and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    // SAFETY: the option value points to a c_int that lives across the call, with its
    // size given. (IPPROTO_RAW implies IP_HDRINCL on Linux; set anyway, to say so.)
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Sends a UDP datagram carrying `payload` to `dst` that claims to come from `src`. Both
/// addresses must be on loopback (127.0.0.0/8); anything else is refused before a socket
/// is opened. Needs root (a raw socket); see [`can_forge`].
pub fn forge_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
    for (what, addr) in [("source", src), ("destination", dst)] {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("forged datagrams stay on loopback (127.0.0.0/8); the {what} is {addr}"),
            ));
        }
    }
    let packet = udp_packet(src, dst, payload)?;
    let socket = raw_socket()?;
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        // The kernel takes the port from the UDP header; a raw socket's address has none.
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and the address point to live values of the given sizes for the
    // whole call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != packet.len() {
        return Err(io::Error::other(format!(
            "a forged packet of {} bytes, {sent} sent",
            packet.len()
        )));
    }
    Ok(())
}

/// Why datagrams cannot be forged here, or `None` when they can: the effective user must
/// be root and a raw socket must open.
pub fn why_not_forge() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Some(format!(
            "forging needs root (a raw socket); running as uid {uid}"
        ));
    }
    raw_socket()
        .err()
        .map(|e| format!("a raw socket cannot be opened: {e}"))
}

/// Whether datagrams can be forged here: effective uid 0 and a raw socket opens.
pub fn can_forge() -> bool {
    why_not_forge().is_none()
}

/// Whether a test that forges may run: true when it can; false, after saying why on
/// stderr, when it cannot, and the test should return (skipped). Under CI (`CI=true`),
/// where the forging tests must run, it panics instead.
pub fn forging_allowed() -> bool {
    let Some(why) = why_not_forge() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test forges datagrams, which must run under CI: {why}");
    }
    eprintln!("skipped: this test forges datagrams, which cannot be done here: {why}");
    false
}

/// The address of `addr` as IPv4, for [`forge_udp`]: `None` for an IPv6 address.
pub fn v4(addr: std::net::SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        std::net::SocketAddr::V4(a) => Some(a),
        std::net::SocketAddr::V6(_) => None,
    }
}

/// A loopback address no socket uses, to forge from.
pub const NOBODY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 254, 253, 252), 4_321);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_harness::loopback;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    #[test]
    fn the_internet_checksum_matches_a_known_header() {
        // The classic example: 192.168.0.1 -> 192.168.0.199, UDP, TTL 64, 115 bytes.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header), 0xb861);
        // An odd length pads with zero.
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
        assert_eq!(internet_checksum(&[]), 0xFFFF);
    }

    #[test]
    fn a_forged_packet_checks_out_as_a_receiver_verifies_it() {
        let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 5001);
        let dst = SocketAddrV4::new(Ipv4Addr::new(127, 3, 2, 1), 40_000);
        for payload in [&b"CLOSE call=0000002a"[..], b"odd", b""] {
            let packet = udp_packet(src, dst, payload).expect("a small payload");
            assert_eq!(packet.len(), 28 + payload.len());
            assert_eq!(&packet[28..], payload);
            assert_eq!(
                u16::from_be_bytes([packet[2], packet[3]]) as usize,
                packet.len()
            );
            assert_eq!(packet[9], 17, "UDP");
            assert_eq!(&packet[12..16], &[127, 0, 0, 9]);
            assert_eq!(&packet[16..20], &[127, 3, 2, 1]);
            assert_eq!(&packet[20..24], &[0x13, 0x89, 0x9c, 0x40], "the ports");
            // A header with its checksum in sums to zero; so does the pseudo-header with
            // the datagram.
            assert_eq!(internet_checksum(&packet[..20]), 0);
            let mut pseudo = packet[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            pseudo.extend_from_slice(&packet[20..]);
            assert_eq!(internet_checksum(&pseudo), 0);
        }
        let huge = vec![0u8; MAX_PAYLOAD + 1];
        let refused = udp_packet(src, dst, &huge).expect_err("too long");
        assert!(refused.to_string().contains("65507"), "{refused}");
    }

    #[test]
    fn forging_off_loopback_is_refused() {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001);
        let away = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5001);
        for (src, dst, what) in [(away, lo, "source"), (lo, away, "destination")] {
            let refused = forge_udp(src, dst, b"CLOSE").expect_err("not loopback");
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
            assert!(
                refused
                    .to_string()
                    .contains(&format!("the {what} is 10.0.0.2")),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_forged_datagram_arrives_from_the_address_it_claims() {
        if !forging_allowed() {
            return;
        }
        let receiver = UdpSocket::bind((loopback(), 0)).expect("a loopback socket");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeouts can be set");
        let dst = v4(receiver.local_addr().expect("bound")).expect("IPv4 loopback");
        for src in [NOBODY, SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5001)] {
            forge_udp(src, dst, b"CLOSE call=0000002a").expect("forged");
            let mut buf = [0u8; 64];
            let (n, from) = receiver.recv_from(&mut buf).expect("the forgery arrives");
            assert_eq!(&buf[..n], b"CLOSE call=0000002a");
            assert_eq!(from, SocketAddr::V4(src));
        }
        // A long one, past any single-buffer assumption.
        let long: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        forge_udp(NOBODY, dst, &long).expect("forged");
        let mut buf = [0u8; 2048];
        let (n, _) = receiver.recv_from(&mut buf).expect("the forgery arrives");
        assert_eq!(&buf[..n], &long[..]);
    }
}
