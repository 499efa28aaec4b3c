//! The impaired link the audio tests and the call benchmark put between two phones does
//! what it claims: seeded loss, duplication and reordering of media at the asked rates,
//! delay within the asked jitter, signalling delayed but never lost, both directions.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use parlo_tests::call_audio::{ImpairedLink, Netem};
use parlo_tests::server_harness::{Server, loopback};

/// A datagram that looks like RTP (version 2) carrying its index.
fn media(index: u32) -> Vec<u8> {
    let mut d = vec![0x80, 11];
    d.extend_from_slice(&index.to_be_bytes());
    d
}

#[test]
fn the_link_loses_duplicates_reorders_and_delays_as_asked() {
    const PACKETS: u32 = 600;
    const SPACING: Duration = Duration::from_millis(4);
    let netem = Netem {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.02,
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(30),
        seed: 9,
    };
    let server = Server::start(&[]);
    let callee = UdpSocket::bind((loopback(), 0)).expect("a loopback socket");
    callee
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeouts can be set");
    let link = ImpairedLink::start("far", &server, callee.local_addr().expect("bound"), netem);
    let caller = UdpSocket::bind((loopback(), 0)).expect("a loopback socket");
    caller
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeouts can be set");

    // Signalling first: delayed by the fixed delay, never dropped.
    let sent_at = Instant::now();
    caller.send_to(b"START alice", link.addr).expect("sent");
    let mut buf = [0u8; 64];
    let (n, back_addr) = callee.recv_from(&mut buf).expect("signalling arrives");
    let signalling_delay = sent_at.elapsed();
    assert_eq!(&buf[..n], b"START alice");
    assert!(
        signalling_delay >= Duration::from_millis(39),
        "{signalling_delay:?}"
    );

    // Media, one packet every 4 ms; each arrival timed against its send time.
    let start = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut arrivals: Vec<(u32, Duration)> = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = callee.recv(&mut buf) {
            if n == 6 {
                let index = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
                arrivals.push((index, start.elapsed()));
            }
        }
        (callee, arrivals)
    });
    for i in 0..PACKETS {
        let due = start + SPACING * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        caller.send_to(&media(i), link.addr).expect("sent");
    }
    let (callee, arrivals) = receiver.join().expect("the receiver ends");

    // The way back goes through the link too, to the caller's address.
    callee.send_to(&media(7), back_addr).expect("sent back");
    let mut buf = [0u8; 64];
    let n = caller.recv(&mut buf).expect("media comes back");
    assert_eq!(&buf[..n], &media(7)[..]);

    let report = link.finish();
    println!("{report:?}");
    let forward = report.forward;
    assert_eq!(forward.media, PACKETS as usize);
    let mut copies: HashMap<u32, usize> = HashMap::new();
    for &(index, _) in &arrivals {
        *copies.entry(index).or_default() += 1;
    }
    let lost = (0..PACKETS).filter(|i| !copies.contains_key(i)).count();
    let twice = copies.values().filter(|&&c| c == 2).count();
    assert_eq!(
        lost, forward.lost,
        "what arrived matches what the link says"
    );
    assert_eq!(twice, forward.duplicated);
    assert!(copies.values().all(|&c| c <= 2));
    // Rates within three standard deviations of what was asked.
    for (what, count, p) in [
        ("lost", forward.lost, netem.loss),
        ("duplicated", forward.duplicated, netem.duplicate),
        ("reordered", forward.reordered, netem.reorder),
    ] {
        let mean = f64::from(PACKETS) * p;
        let sigma = (mean * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - mean).abs() <= 3.0 * sigma + 1.0,
            "{what}: {count} of {PACKETS}, expected about {mean}"
        );
    }
    // Delays: 40 ms ± 30 ms, plus the sender's pacing error and the link's 0.5 ms tick;
    // a held-back packet leaves with the next one (4 ms later, plus that one's delay).
    let delays: Vec<f64> = arrivals
        .iter()
        .map(|&(i, at)| (at.as_secs_f64() - (SPACING * i).as_secs_f64()) * 1000.0)
        .collect();
    let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
    let max = delays.iter().copied().fold(0.0, f64::max);
    println!(
        "delays {min:.1}..{max:.1} ms over {} arrivals",
        delays.len()
    );
    assert!(min >= 9.0, "a packet left before 40 - 30 ms: {min:.1} ms");
    assert!(max <= 70.0 + 4.0 * 3.0 + 15.0, "{max:.1} ms");
    // The jitter is really there: the spread covers most of the 60 ms window.
    assert!(max - min >= 45.0, "delays {min:.1}..{max:.1} ms");
    // Jitter larger than the spacing reorders packets on its own.
    let out_of_order = arrivals.windows(2).filter(|w| w[1].0 < w[0].0).count();
    assert!(out_of_order > 0);
}
