//! Figures of text messages between phones on loopback, measured against the real
//! binaries (not a test):
//!
//! - the round trip of a message, `msg` -> `delivered`, over MESSAGES messages each sent
//!   once the previous one of its sender is delivered: median and p99, for the first
//!   messages of each sender (within the receiver's burst of 10) and for the paced ones.
//!   The receiver takes 5 messages a second from each sender after its burst, and no flag
//!   lifts that, so the messages come from SENDERS phones at once, each waiting 200 ms
//!   between its messages: the rate limit is never the one measured;
//! - the bytes on the wire of a 100-byte message: the `MSG` datagram and its `ACK`, as a
//!   recording relay sees them (and the session's opening handshake).
//!
//! `cargo run --release -p parlo-tests --example messages [-- MESSAGES [SENDERS]]`
//! (defaults: 1,000 messages from 5 senders).

use std::time::{Duration, Instant};

use parlo_tests::phone_harness::{Event, Phone};
use parlo_tests::relay::{Captured, Plan, Relay, SECURE_TRANSPORT_TYPES, Toward};
use parlo_tests::server_harness::Server;

/// The receiver's burst per sender: messages within it are not paced.
const BURST: usize = 10;
/// Between two messages of one sender, beyond the burst: the receiver's rate.
const PACE: Duration = Duration::from_millis(200);

/// The `p` quantile (0 to 1) of sorted durations, in ms.
fn quantile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1_000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what}: {} messages, median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        quantile(&times, 1.0)
    );
}

/// A field that must be there.
fn field(event: &Event, key: &str) -> String {
    event
        .field(key)
        .unwrap_or_else(|| panic!("no {key:?} in {event}"))
}

/// Sends `msg to text` and waits for it to be delivered: the round trip, from the
/// `sending` line to the `delivered` line, as read from the phone's stdout.
fn round_trip(sender: &mut Phone, to: &str, text: &str) -> Duration {
    sender.send(&format!("msg {to} {text}"));
    let sending = sender.expect_event("sending");
    let id = field(&sending, "id");
    let outcome = sender.expect_event("delivered");
    assert_eq!(field(&outcome, "id"), id, "{outcome}");
    outcome.at.duration_since(sending.at)
}

fn round_trips(messages: usize, senders: usize) {
    let server = Server::start(&[]);
    let mut bob = Phone::builder("bob")
        .server(&server)
        .json()
        .log_level("warn");
    bob = bob.arg("--messages-from").arg(
        (0..senders)
            .map(|i| format!("sender{i}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    let bob = Phone::start_registered(bob);
    let mut phones: Vec<Phone> = (0..senders)
        .map(|i| {
            Phone::start_registered(
                Phone::builder(&format!("sender{i}"))
                    .server(&server)
                    .json()
                    .log_level("warn"),
            )
        })
        .collect();
    let text = "x".repeat(100);
    let (mut burst, mut paced) = (Vec::new(), Vec::new());
    let each = messages.div_ceil(senders);
    let started = Instant::now();
    'all: for i in 0..each {
        let round = Instant::now();
        for (n, phone) in phones.iter_mut().enumerate() {
            if i * senders + n >= messages {
                break 'all;
            }
            let time = round_trip(phone, "bob", &text);
            if i < BURST { &mut burst } else { &mut paced }.push(time);
        }
        if i + 1 >= BURST {
            std::thread::sleep(PACE.saturating_sub(round.elapsed()));
        }
    }
    println!(
        "{messages} messages from {senders} senders in {:.1} s (bob printed {})",
        started.elapsed().as_secs_f64(),
        bob.events().iter().filter(|e| e.kind == "message").count()
    );
    report("round trip, first 10 of each sender", burst.clone());
    report("round trip, paced 200 ms", paced.clone());
    burst.extend(paced);
    report("round trip, all", burst);
}

/// Sizes of the secure datagrams one way, in order.
fn sizes(captured: &[Captured], toward: Toward) -> Vec<(u8, usize)> {
    captured
        .iter()
        .filter(|c| c.toward == toward)
        .map(|c| (c.bytes.first().copied().unwrap_or(0), c.bytes.len()))
        .collect()
}

fn wire_sizes() {
    let server = Server::start(&[]);
    // Logging at its default level: its key is read from its log.
    let bob = Phone::start_registered(Phone::builder("bob").server(&server).json());
    let relay = Relay::start(
        "bob-far",
        &server,
        bob.addr,
        Plan::transparent().recording(),
    );
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .json()
            .log_level("warn")
            .pin("bob-far", &bob.public_key()),
    );
    let text = "y".repeat(100);
    // The first opens the session; the second travels over it alone.
    round_trip(&mut alice, "bob-far", &text);
    std::thread::sleep(Duration::from_millis(200));
    let before = relay.captured().len();
    round_trip(&mut alice, "bob-far", &text);
    std::thread::sleep(Duration::from_millis(200));
    let captured = relay.captured();
    let opening = &captured[..before];
    let second = &captured[before..];
    println!(
        "session opening (first message included), (first byte, bytes): to bob {:?}, to alice {:?}",
        sizes(opening, Toward::Callee),
        sizes(opening, Toward::Caller)
    );
    let msg = sizes(second, Toward::Callee);
    let ack = sizes(second, Toward::Caller);
    println!("a 100-byte message: MSG datagram(s) {msg:?}, ACK datagram(s) {ack:?}");
    let transport = |s: &[(u8, usize)]| {
        s.iter()
            .filter(|(first, _)| SECURE_TRANSPORT_TYPES.contains(first))
            .map(|(_, len)| *len)
            .collect::<Vec<_>>()
    };
    if let (Some(m), Some(a)) = (transport(&msg).first(), transport(&ack).first()) {
        println!(
            "MSG {m} bytes (line of {} bytes + {} of framing), ACK {a} bytes (line of {} \
             bytes + {} of framing)",
            4 + 16 + 1 + 100,
            m - (4 + 16 + 1 + 100),
            4 + 16,
            a - (4 + 16)
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let senders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    wire_sizes();
    round_trips(messages, senders);
}
