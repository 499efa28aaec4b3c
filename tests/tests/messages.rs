//! Text messages between real phones, end to end: `msg NAME TEXT` and its events
//! (`sending`, then exactly one of `delivered` or `undelivered`; `message` at the
//! receiver), outside calls and during them, over an impaired network, to a phone that is
//! down, under a passive listener, under a flood, from senders the receiver does not
//! accept, and through the control socket.
//!
//! Every phone prints JSON events, so that ids, texts and reasons are read as fields.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parlo_fsm::PublicKey;
use parlo_net::secure::{self, Sessions, Timestamp};
use parlo_tests::attacker::{fresh_identity, random_bytes};
use parlo_tests::capture::names_in_capture;
use parlo_tests::phone_harness::{Event, Phone, PhoneBuilder, connect_call};
use parlo_tests::relay::{Netem, Plan, Relay, SECURE_TRANSPORT_TYPES, Toward};
use parlo_tests::server_harness::{Server, loopback};

/// The receiver's rate limit per sender: a burst of this many at once...
const BURST: usize = 10;
/// ...then this many a second.
const RATE: f64 = 5.0;
/// Messages a sender holds unsettled at most.
const QUEUE: usize = 16;

/// A phone called `name` on `server`, printing JSON events.
fn phone(name: &str, server: &Server) -> PhoneBuilder {
    Phone::builder(name).server(server).json()
}

/// Every event of `kind` the phone printed so far, read or not.
fn all(phone: &Phone, kind: &str) -> Vec<Event> {
    phone
        .events()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// A field that must be there.
fn field(event: &Event, key: &str) -> String {
    event
        .field(key)
        .unwrap_or_else(|| panic!("no {key:?} in {event}"))
}

/// Checks that `id` is a message id: 16 lowercase hex digits.
fn assert_id(id: &str) {
    assert!(
        id.len() == 16
            && id
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "not a message id: {id:?}"
    );
}

/// The counter part of an id (its low 32 bits).
fn counter(id: &str) -> u32 {
    u32::from_str_radix(&id[8..], 16).unwrap_or_else(|_| panic!("not a message id: {id:?}"))
}

/// `msg TO TEXT` on `phone`; returns the id its `sending` answer gives.
fn send_msg(phone: &mut Phone, to: &str, text: &str) -> String {
    phone.send(&format!("msg {to} {text}"));
    let sending = phone.expect_event("sending");
    assert_eq!(sending.field("to").as_deref(), Some(to), "{sending}");
    let id = field(&sending, "id");
    assert_id(&id);
    id
}

/// The outcomes (`delivered` and `undelivered` events) printed so far, by id.
fn outcomes(phone: &Phone) -> BTreeMap<String, Vec<Event>> {
    let mut by_id: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for event in phone
        .events()
        .into_iter()
        .filter(|e| e.kind == "delivered" || e.kind == "undelivered")
    {
        by_id.entry(field(&event, "id")).or_default().push(event);
    }
    by_id
}

/// Messages sent and not settled yet.
fn unsettled(phone: &Phone) -> usize {
    let events = phone.events();
    let sent = events.iter().filter(|e| e.kind == "sending").count();
    let settled = events
        .iter()
        .filter(|e| e.kind == "delivered" || e.kind == "undelivered")
        .count();
    sent - settled
}

/// Waits until `done` holds for `phone`, failing with its transcript after `patience`.
fn wait_until(phone: &Phone, what: &str, patience: Duration, done: impl Fn(&Phone) -> bool) {
    let deadline = Instant::now() + patience;
    while !done(phone) {
        assert!(
            Instant::now() < deadline,
            "{}: not {what} within {patience:?}\n{}",
            phone.name,
            phone.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `message` events `receiver` printed from `sender`.
fn messages_from(receiver: &Phone, sender: &str) -> Vec<Event> {
    all(receiver, "message")
        .into_iter()
        .filter(|e| e.peer() == Some(sender))
        .collect()
}

/// Waits for the outcome of `id` at `sender` and checks it is `delivered` to `to`.
fn expect_delivered(sender: &mut Phone, id: &str, to: &str) {
    let name = sender.name.clone();
    wait_until(sender, "settled", Duration::from_secs(10), |p| {
        outcomes(p).contains_key(id)
    });
    let outcome = &outcomes(sender)[id];
    assert_eq!(outcome.len(), 1, "{name}: {outcome:?}");
    assert_eq!(outcome[0].kind, "delivered", "{}", outcome[0]);
    assert_eq!(
        outcome[0].field("to").as_deref(),
        Some(to),
        "{}",
        outcome[0]
    );
}

/// The verification a first contact's message is printed with. `new` is what the phone
/// should say (see `the_first_message_of_a_new_sender_says_new_then_key`), but it says
/// `key` whenever the directory confirms the sender before its first `MSG` arrives: both
/// are accepted here, so that the other checks run.
const FIRST_CONTACT: &[&str] = &["new", "key"];

/// Waits for `receiver` to print message `id` from `sender` and checks its text and that
/// its verification is one of `verified`.
fn expect_message(receiver: &mut Phone, sender: &str, id: &str, text: &str, verified: &[&str]) {
    let event = receiver.expect_event("message");
    assert_eq!(event.peer(), Some(sender), "{event}");
    assert_eq!(event.field("id").as_deref(), Some(id), "{event}");
    assert_eq!(event.field("text").as_deref(), Some(text), "{event}");
    let how = field(&event, "verified");
    assert!(verified.contains(&how.as_str()), "{event}");
}

// ---- 1. exactly once, outside calls and during them ------------------------------------

#[test]
fn messages_outside_a_call_during_one_and_during_a_call_with_a_third_phone_arrive_once() {
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(phone("alice", &server));
    let mut bob = Phone::start_registered(phone("bob", &server));
    let mut carol = Phone::start_registered(phone("carol", &server));

    // Outside any call: a session opened for messages; bob pins alice's key (`new`).
    let outside = "outside any call";
    let first = send_msg(&mut alice, "bob", outside);
    expect_delivered(&mut alice, &first, "bob");
    expect_message(&mut bob, "alice", &first, outside, FIRST_CONTACT);

    // During a call between the two: over the call's session, both ways.
    connect_call(&mut alice, &mut bob);
    let during = "during our call, über alles ✓";
    let second = send_msg(&mut alice, "bob", during);
    expect_delivered(&mut alice, &second, "bob");
    expect_message(&mut bob, "alice", &second, during, &["key"]);
    let back = "and back to you";
    let answer = send_msg(&mut bob, "alice", back);
    expect_delivered(&mut bob, &answer, "alice");
    expect_message(&mut alice, "bob", &answer, back, &["key"]);
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");

    // During a call with a third phone: alice talks to carol and writes to bob.
    connect_call(&mut alice, &mut carol);
    let aside = "while I talk to carol";
    let third = send_msg(&mut alice, "bob", aside);
    expect_delivered(&mut alice, &third, "bob");
    expect_message(&mut bob, "alice", &third, aside, &["key"]);
    // The call is not disturbed.
    assert_eq!(
        alice.status().field("state").as_deref(),
        Some("in-call"),
        "{}",
        alice.transcript()
    );

    // Ids of one run: the same random run, counters 1, 2, 3.
    assert_eq!(
        [counter(&first), counter(&second), counter(&third)],
        [1, 2, 3]
    );
    assert!(first[..8] == second[..8] && second[..8] == third[..8]);

    // Exactly once: no copy printed late, no second outcome.
    std::thread::sleep(Duration::from_secs(1));
    let printed: Vec<(String, String)> = messages_from(&bob, "alice")
        .iter()
        .map(|e| (field(e, "id"), field(e, "text")))
        .collect();
    assert_eq!(
        printed,
        vec![
            (first.clone(), outside.to_owned()),
            (second.clone(), during.to_owned()),
            (third.clone(), aside.to_owned()),
        ],
        "{}",
        bob.transcript()
    );
    assert_eq!(messages_from(&alice, "bob").len(), 1);
    assert!(all(&carol, "message").is_empty(), "{}", carol.transcript());
    let settled = outcomes(&alice);
    assert_eq!(settled.len(), 3, "{settled:?}");
    assert!(
        settled
            .values()
            .all(|o| o.len() == 1 && o[0].kind == "delivered")
    );
}

// ---- 2. over a network that impairs every datagram -------------------------------------

/// 100 messages from each of two senders to one receiver, each through its own relay that
/// loses, duplicates, reorders and delays every datagram, handshakes and message lines
/// included: each arrives exactly once and is delivered.
///
/// The receiver's rate is per sender (a burst of 10, then 5 a second), so two senders
/// each writing 4 a second take 25 s for the 200 messages. The loss is 5 % each way: a
/// message fails a round trip (its `MSG` or its `ACK` lost) with probability 0.0975, all
/// five of its transmissions with 9e-6, so the 200 are all delivered but in one run in
/// 600 or so. At 10 % loss, one run in 20 would see an honest `unreachable`.
///
/// The order rule checked: the receiver prints in arrival order, which jitter and
/// retransmissions shuffle; the ids of one sender increase in send order, so the
/// receiver's messages of one sender, sorted by id, are the send order.
#[test]
fn two_hundred_messages_over_a_lossy_reordering_network_arrive_exactly_once_each() {
    const EACH: usize = 100;
    let netem = |seed| Netem {
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        seed,
    };
    let server = Server::start(&[]);
    let bob = Phone::start_registered(phone("bob", &server));
    let key = bob.public_key();
    let plan = |seed| {
        Plan::transparent()
            .impaired(netem(seed))
            .impairing_everything()
    };
    let relays = [
        Relay::start("bob-far", &server, bob.addr, plan(11)),
        Relay::start("bob-away", &server, bob.addr, plan(12)),
    ];
    let mut senders = [
        (
            Phone::start_registered(phone("alice", &server).pin("bob-far", &key)),
            "bob-far",
        ),
        (
            Phone::start_registered(phone("carol", &server).pin("bob-away", &key)),
            "bob-away",
        ),
    ];
    let text = |sender: &str, i: usize| format!("{sender} says number {i:03}");
    let started = Instant::now();
    for i in 0..EACH {
        for (sender, to) in &mut senders {
            // The sender's queue is never the limit.
            wait_until(sender, "below its queue", Duration::from_secs(20), |p| {
                unsettled(p) < QUEUE - 4
            });
            let line = format!("msg {to} {}", text(&sender.name, i));
            sender.send(&line);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (sender, _) in &senders {
        wait_until(sender, "settled", Duration::from_secs(30), |p| {
            outcomes(p).len() == EACH
        });
    }
    // Late copies of anything would be printed by now.
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = started.elapsed();
    let reports = relays.map(Relay::finish);

    for ((sender, to), report) in senders.iter().zip(&reports) {
        let name = sender.name.as_str();
        let sent: Vec<String> = all(sender, "sending")
            .iter()
            .map(|e| field(e, "id"))
            .collect();
        assert_eq!(sent.len(), EACH);
        let settled = outcomes(sender);
        assert_eq!(settled.len(), EACH, "{name}: {settled:?}");
        for id in &sent {
            let outcome = &settled[id];
            assert!(
                outcome.len() == 1 && outcome[0].kind == "delivered",
                "{name}: {id}: {outcome:?}"
            );
            assert_eq!(outcome[0].field("to").as_deref(), Some(*to));
        }
        // Every message printed once, with its text; sorted by id, the send order.
        let printed: Vec<(String, String)> = messages_from(&bob, name)
            .iter()
            .map(|e| (field(e, "id"), field(e, "text")))
            .collect();
        let ids: BTreeSet<&String> = printed.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), printed.len(), "{name}: a message printed twice");
        let mut by_id = printed.clone();
        by_id.sort();
        let expected: Vec<(String, String)> = sent
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), text(name, i)))
            .collect();
        assert_eq!(by_id, expected, "{name}\n{}", bob.transcript());
        let out_of_order = printed.windows(2).filter(|w| w[0].0 > w[1].0).count();
        println!(
            "{name}: {EACH} delivered and printed once; {out_of_order} printed after a later \
             one; relay forward {:?}, backward {:?}",
            report.forward, report.backward
        );
        // The network did impair the message exchange itself.
        let both =
            |f: fn(&parlo_tests::relay::Traffic) -> usize| f(&report.forward) + f(&report.backward);
        assert!(both(|t| t.lost) > 0, "{report:?}");
        assert!(both(|t| t.duplicated) > 0, "{report:?}");
        assert!(both(|t| t.reordered) > 0, "{report:?}");
        assert_eq!(both(|t| t.media), 0, "{report:?}");
    }
    println!("{} messages in {elapsed:?}", 2 * EACH);
}

// ---- 3. a phone that is down -------------------------------------------------------------

/// Bob stops (SIGSTOP: his directory connection stays open, so the directory still gives
/// his address and key, but nothing reads his socket). Alice, whose session with him is
/// up, retransmits her `MSG` until 15.5 s; carol, who has none, waits for a session for
/// 10 s. Both are told `unreachable`, within 16 s.
#[test]
fn a_phone_that_is_down_makes_messages_unreachable_within_sixteen_seconds() {
    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(phone("bob", &server));
    let mut alice = Phone::start_registered(phone("alice", &server));
    let mut carol = Phone::start_registered(phone("carol", &server));
    let first = send_msg(&mut alice, "bob", "are you there?");
    expect_delivered(&mut alice, &first, "bob");
    bob.expect_event("message");

    bob.signal("STOP");
    let mut sent = Vec::new();
    for (sender, text) in [(&mut alice, "hello?"), (&mut carol, "hello from carol?")] {
        let at = Instant::now();
        sent.push((send_msg(sender, "bob", text), at));
    }
    let mut waits = Vec::new();
    for (sender, (id, at)) in [&mut alice, &mut carol].into_iter().zip(&sent) {
        let undelivered = sender.expect_event_within("undelivered", Duration::from_secs(20));
        assert_eq!(undelivered.field("id").as_deref(), Some(id.as_str()));
        assert_eq!(undelivered.field("to").as_deref(), Some("bob"));
        assert_eq!(
            undelivered.field("reason").as_deref(),
            Some("unreachable"),
            "{undelivered}"
        );
        // From the command to the moment the outcome's line was read.
        waits.push(undelivered.at.duration_since(*at));
    }
    println!(
        "unreachable after: alice (session up) {:?}, carol (no session) {:?}",
        waits[0], waits[1]
    );
    for wait in &waits {
        assert!(*wait <= Duration::from_secs(16), "{waits:?}");
    }
    // Not given up early: alice retransmits for 15.5 s, carol waits 10 s for a session.
    assert!(waits[0] >= Duration::from_secs(14), "{waits:?}");
    assert!(waits[1] >= Duration::from_secs(9), "{waits:?}");
    assert_eq!(outcomes(&alice).len(), 2);
    assert_eq!(outcomes(&carol).len(), 1);
    bob.signal("CONT");
}

// ---- 4. a passive listener -----------------------------------------------------------------

/// A recording relay between alice and bob carries 20 messages: no text, and neither
/// name, crosses it in the clear. The same search finds a text planted in a datagram added
/// to the capture, so it can fail; and the capture does hold the messages' datagrams.
#[test]
fn a_passive_listener_reads_no_text_and_no_name_of_twenty_messages() {
    const COUNT: usize = 20;
    let server = Server::start(&[]);
    let bob = Phone::start_registered(phone("bob", &server));
    let relay = Relay::start(
        "bob-far",
        &server,
        bob.addr,
        Plan::transparent().recording(),
    );
    let mut alice =
        Phone::start_registered(phone("alice", &server).pin("bob-far", &bob.public_key()));
    let text = |i: usize| format!("zebra{i:02}quartz the parcel is under the mat");
    let mut ids = Vec::new();
    for i in 0..COUNT {
        ids.push(send_msg(&mut alice, "bob-far", &text(i)));
        if i == 0 {
            // The session up first: the messages sent while it comes up would all go at
            // once when it does, over the receiver's burst on a slow machine.
            wait_until(&alice, "delivered", Duration::from_secs(10), |p| {
                outcomes(p).len() == 1
            });
        }
        // The receiver's burst, then below its rate.
        if i >= BURST - 1 {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    wait_until(&alice, "settled", Duration::from_secs(20), |p| {
        outcomes(p).len() == COUNT
    });
    assert!(
        outcomes(&alice)
            .values()
            .all(|o| o.len() == 1 && o[0].kind == "delivered"),
        "{}",
        alice.transcript()
    );
    let printed: Vec<String> = messages_from(&bob, "alice")
        .iter()
        .map(|e| field(e, "text"))
        .collect();
    assert_eq!(printed, (0..COUNT).map(text).collect::<Vec<_>>());

    let captured = relay.captured();
    drop(relay);
    let datagrams: Vec<Vec<u8>> = captured.iter().map(|c| c.bytes.clone()).collect();
    let texts: Vec<String> = (0..COUNT).map(text).collect();
    let mut needles: Vec<&str> = texts.iter().map(String::as_str).collect();
    needles.extend(["parcel", "alice", "bob", "MSG", "HELLO"]);
    let found = names_in_capture(&datagrams, &needles);
    assert!(found.is_empty(), "read in the clear: {found:?}");
    // The control: a datagram carrying a message in the clear is found.
    let mut planted = datagrams.clone();
    planted.push(format!("MSG {} {}", ids[7], text(7)).into_bytes());
    assert_eq!(
        names_in_capture(&planted, &needles),
        vec![text(7), "parcel".into(), "MSG".into()]
    );
    // The capture holds the messages: a secure transport datagram for each MSG one way,
    // for each ACK the other.
    let transport = |toward: Toward| {
        captured
            .iter()
            .filter(|c| c.toward == toward)
            .filter(|c| {
                c.bytes
                    .first()
                    .is_some_and(|b| SECURE_TRANSPORT_TYPES.contains(b))
            })
            .count()
    };
    let (msgs, acks) = (transport(Toward::Callee), transport(Toward::Caller));
    println!(
        "captured {} datagrams: {msgs} secure transport toward bob, {acks} toward alice",
        captured.len()
    );
    assert!(msgs >= COUNT - 1 && acks >= COUNT - 1, "{msgs} {acks}");
}

// ---- 5. a flood -----------------------------------------------------------------------------

/// 1,000 `msg` lines written at once: the sender's queue takes 16, the rest are
/// `queue-full` at once; of those sent, the receiver prints its burst and what its rate
/// allows, the rest are `rate-limited`. Every id gets one outcome, and a call to the
/// receiver connects right after.
#[test]
fn a_flood_of_a_thousand_messages_is_limited_and_leaves_the_receiver_callable() {
    const FLOOD: usize = 1_000;
    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(phone("bob", &server));
    let mut alice = Phone::start_registered(phone("alice", &server));
    let lines: String = (0..FLOOD)
        .map(|i| format!("msg bob flood {i:04}\n"))
        .collect();
    let started = Instant::now();
    alice.send_raw(lines.as_bytes());
    let written = started.elapsed();
    assert!(written < Duration::from_secs(1), "{written:?}");
    wait_until(&alice, "settled", Duration::from_secs(30), |p| {
        outcomes(p).len() == FLOOD
    });
    let sending = all(&alice, "sending");
    assert_eq!(sending.len(), FLOOD);
    let settled = outcomes(&alice);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (id, outcome) in &settled {
        assert_eq!(outcome.len(), 1, "{id}: {outcome:?}");
        let kind = match outcome[0].field("reason") {
            Some(reason) => reason,
            None => outcome[0].kind.clone(),
        };
        *counts.entry(kind).or_default() += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    let printed = messages_from(&bob, "alice");
    let elapsed = printed
        .last()
        .map_or(Duration::ZERO, |last| last.at.duration_since(started));
    println!(
        "{FLOOD} lines written in {written:?}: {counts:?}; bob printed {} in {elapsed:?}",
        printed.len()
    );
    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert!(count("queue-full") > 0, "{counts:?}");
    assert!(count("rate-limited") > 0, "{counts:?}");
    assert_eq!(
        count("delivered") + count("queue-full") + count("rate-limited"),
        FLOOD,
        "{counts:?}"
    );
    // What was delivered was printed, once each, and no more than the rate allows.
    assert_eq!(printed.len(), count("delivered"), "{}", bob.transcript());
    let ids: BTreeSet<String> = printed.iter().map(|e| field(e, "id")).collect();
    assert_eq!(ids.len(), printed.len());
    let allowed = BURST + (RATE * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        (BURST..=allowed).contains(&printed.len()),
        "{} printed, {allowed} allowed",
        printed.len()
    );
    // The receiver is not worn out: a call connects right away.
    connect_call(&mut alice, &mut bob);
    alice.send("hangup");
    alice.expect_ended("hangup");
}

// ---- 6. senders the receiver does not accept -------------------------------------------------

#[test]
fn a_sender_not_listed_in_messages_from_is_refused_and_nothing_is_printed() {
    let server = Server::start(&[]);
    let mut bob =
        Phone::start_registered(phone("bob", &server).arg("--messages-from").arg("carol"));
    let mut alice = Phone::start_registered(phone("alice", &server));
    let mut carol = Phone::start_registered(phone("carol", &server));
    let refused = send_msg(&mut alice, "bob", "let me in");
    let outcome = alice.expect_event_within("undelivered", Duration::from_secs(10));
    assert_eq!(outcome.field("id").as_deref(), Some(refused.as_str()));
    assert_eq!(
        outcome.field("reason").as_deref(),
        Some("refused"),
        "{outcome}"
    );
    // The listed sender gets through: the flag refuses alice, not everyone.
    let welcome = send_msg(&mut carol, "bob", "it is me");
    expect_delivered(&mut carol, &welcome, "bob");
    expect_message(&mut bob, "carol", &welcome, "it is me", FIRST_CONTACT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        messages_from(&bob, "alice").is_empty(),
        "{}",
        bob.transcript()
    );
    assert_eq!(all(&bob, "message").len(), 1);
}

/// A test-side phone that opens message sessions by hand: a Noise IK peer with a key of
/// its own, claiming any name in its `HELLO`.
struct Forger {
    socket: UdpSocket,
    sessions: Sessions,
    started: Instant,
}

impl Forger {
    fn new() -> Forger {
        let socket = UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
        Forger {
            socket,
            sessions: Sessions::new(fresh_identity(), secure::Config::default()),
            started: Instant::now(),
        }
    }

    fn clocks(&self) -> (u64, Timestamp) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        (now, Timestamp(u64::try_from(wall).unwrap_or(u64::MAX)))
    }

    /// Seals `line` for `to` (an Init when `open`, else transport) and sends it.
    fn send(&mut self, to: SocketAddr, key: &PublicKey, line: &str, open: bool) {
        let (now, wall) = self.clocks();
        let mut out = [0u8; secure::MAX_DATAGRAM];
        let len = self
            .sessions
            .seal(
                now,
                wall,
                to,
                key,
                line.as_bytes(),
                open,
                &mut out,
                &mut random_bytes,
            )
            .unwrap_or_else(|e| panic!("cannot seal {line:?}: {e}"));
        self.socket.send_to(&out[..len], to).expect("sent");
    }

    /// The next line that comes out of a session within `patience`.
    fn line(&mut self, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        let mut buf = [0u8; 2048];
        let mut inner = [0u8; secure::MAX_INNER];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("timeouts can be set");
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let (now, wall) = self.clocks();
            if let Ok(opened) =
                self.sessions
                    .open(now, wall, from, &buf[..n], &mut inner, &mut random_bytes)
            {
                return Some(String::from_utf8_lossy(&inner[..opened.len]).into_owned());
            }
        }
    }
}

/// A phone with a key of its own claims to be alice (registered with hers): it opens a
/// session for messages (bob answers it, as he answers anyone) and sends a `MSG`, which
/// bob refuses and never prints — before he knows alice's key (from the directory) and
/// after he pinned it (alice wrote to him herself).
#[test]
fn a_forged_sender_is_refused_and_never_printed() {
    let server = Server::start(&[]);
    let bob = Phone::start_registered(phone("bob", &server));
    let mut alice = Phone::start_registered(phone("alice", &server));
    let key = PublicKey::parse(&bob.public_key()).expect("bob's key");
    let forge = |id: &str, text: &str| {
        let mut forger = Forger::new();
        forger.send(bob.addr, &key, "HELLO alice", true);
        let hello = forger.line(Duration::from_secs(5));
        assert_eq!(
            hello.as_deref(),
            Some("HELLO bob"),
            "bob answers the session"
        );
        forger.send(bob.addr, &key, &format!("MSG {id} {text}"), false);
        let answer = forger.line(Duration::from_secs(5));
        assert_eq!(
            answer,
            Some(format!("NAK {id} refused")),
            "bob refuses the forged sender"
        );
    };
    forge("00000000000000ff", "forged before any pin");
    let real = send_msg(&mut alice, "bob", "the real alice");
    expect_delivered(&mut alice, &real, "bob");
    forge("00000000000000fe", "forged after the pin");
    std::thread::sleep(Duration::from_millis(500));
    let printed = all(&bob, "message");
    assert_eq!(printed.len(), 1, "{}", bob.transcript());
    assert_eq!(printed[0].field("id").as_deref(), Some(real.as_str()));
    assert_eq!(printed[0].field("text").as_deref(), Some("the real alice"));
    let how = field(&printed[0], "verified");
    assert!(FIRST_CONTACT.contains(&how.as_str()), "{}", printed[0]);
    assert!(
        !bob.stdout_lines().iter().any(|l| l.contains("forged")),
        "{}",
        bob.transcript()
    );
}

/// The first message of a sender this phone has no pin for says `verified=new` (its key
/// was pinned just now, on the directory's word), the next ones `key`.
#[test]
fn the_first_message_of_a_new_sender_says_new_then_key() {
    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(phone("bob", &server));
    let mut alice = Phone::start_registered(phone("alice", &server));
    let first = send_msg(&mut alice, "bob", "first contact");
    expect_delivered(&mut alice, &first, "bob");
    expect_message(&mut bob, "alice", &first, "first contact", &["new"]);
    let second = send_msg(&mut alice, "bob", "known now");
    expect_delivered(&mut alice, &second, "bob");
    expect_message(&mut bob, "alice", &second, "known now", &["key"]);
}

// ---- 7. the control socket ----------------------------------------------------------------------

#[test]
fn msg_through_the_control_socket_is_answered_sending_and_delivered() {
    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(phone("bob", &server));
    let mut alice = Phone::start_registered(phone("alice", &server).control());
    let output = alice.ctl(&["msg", "bob", "sent", "through", "ctl"], "");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{answer}\n{output:?}");
    assert!(answer.contains("sending"), "{answer}");
    let id = all(&alice, "sending")
        .first()
        .map(|e| field(e, "id"))
        .expect("alice tells her own output too");
    assert!(answer.contains(&id), "{answer}");
    expect_delivered(&mut alice, &id, "bob");
    expect_message(&mut bob, "alice", &id, "sent through ctl", FIRST_CONTACT);
}
