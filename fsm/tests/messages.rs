//! Property tests of the message machine: two phones message each other over a link that
//! loses, duplicates and reorders datagrams, in virtual time.
//!
//! Whatever the link does, every message sent gets exactly one outcome (`delivered` or
//! `undelivered`) within the bound of the retransmission schedule; the receiver prints
//! each message at most once, with the text sent; a delivered message was printed; a
//! message refused by the receiver (`rate-limited`) or by the sender itself (`too-long`,
//! `queue-full`) was not. Only `unreachable` may leave the sender unsure: the receiver may
//! have printed it and every ACK been lost.

use std::collections::BTreeMap;

use parlo_fsm::messages::{
    Action, Config, Event, Line, MAX_TEXT, MessageId, Messenger, Note, Reason, Verification,
};
use parlo_fsm::{Instant, Name};
use proptest::prelude::*;

/// The link's own randomness, seeded by the test case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.below(100) < u64::from(percent)
    }
}

#[derive(Debug, Clone)]
struct Link {
    loss: u8,
    duplication: u8,
    /// Each datagram takes 1 ms up to this long: datagrams overtake each other.
    delay_max: u64,
    seed: u64,
}

/// The user of phone `from` sends a text of `len` bytes at `at`.
#[derive(Debug, Clone)]
struct Send {
    at: u64,
    from: usize,
    len: usize,
}

#[derive(Debug)]
enum Arrival {
    /// The shell of phone `phone` has its session with `to` up.
    Route { phone: usize, to: usize },
    /// A datagram reaches phone `phone` from phone `from`.
    Datagram {
        phone: usize,
        from: usize,
        line: Box<Line>,
    },
}

const NAMES: [&str; 2] = ["alice", "bob"];
/// The longest a session takes to come up.
const ROUTE_MAX: u64 = 50;
/// From a send to its outcome at the latest: the session, then 0.5+1+2+4+8 s of tries.
const OUTCOME_BOUND: u64 = ROUTE_MAX + 15_500;

fn name(i: usize) -> Name {
    Name::new(NAMES[i]).expect("short name")
}

fn phone_of(n: &Name) -> usize {
    usize::from(n.as_str() == NAMES[1])
}

/// Text `k` of `len` bytes (at least its number), recognisable at the receiver.
fn text(k: usize, len: usize) -> String {
    let mut t = format!("{k}:");
    while t.len() < len {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t
}

/// The outcomes told for one message: `None` for delivered, and when.
type Outcomes = Vec<(Option<Reason>, u64)>;

#[derive(Default)]
struct Record {
    /// (sender, id) -> (text, when sent).
    sent: BTreeMap<(usize, MessageId), (String, u64)>,
    /// (sender, id) -> outcomes, with when.
    outcomes: BTreeMap<(usize, MessageId), Outcomes>,
    /// (sender, id) -> texts printed by the receiver.
    printed: BTreeMap<(usize, MessageId), Vec<String>>,
}

struct World {
    phones: [Messenger; 2],
    rng: Rng,
    link: Link,
    pending: Vec<(u64, u64, Arrival)>,
    seq: u64,
    record: Record,
    /// The text of the send being handled, to record with its id.
    sending: Option<String>,
}

impl World {
    fn schedule(&mut self, at: u64, arrival: Arrival) {
        self.seq += 1;
        self.pending.push((at, self.seq, arrival));
    }

    fn execute(&mut self, now: u64, phone: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Connect(to) => {
                    let at = now + self.rng.below(ROUTE_MAX);
                    let to = phone_of(&to);
                    self.schedule(at, Arrival::Route { phone, to });
                }
                Action::Send { to, line } => {
                    let copies = if self.rng.chance(self.link.loss) {
                        0
                    } else if self.rng.chance(self.link.duplication) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let at = now + 1 + self.rng.below(self.link.delay_max);
                        let line = Box::new(line.clone());
                        let arrival = Arrival::Datagram {
                            phone: phone_of(&to),
                            from: phone,
                            line,
                        };
                        self.schedule(at, arrival);
                    }
                }
                Action::Notify(Note::Sending { id, .. }) => {
                    let t = self.sending.take().unwrap_or_default();
                    self.record.sent.insert((phone, id), (t, now));
                }
                Action::Notify(Note::Delivered { id, .. }) => {
                    let o = self.record.outcomes.entry((phone, id)).or_default();
                    o.push((None, now));
                }
                Action::Notify(Note::Undelivered { id, reason, .. }) => {
                    let o = self.record.outcomes.entry((phone, id)).or_default();
                    o.push((Some(reason), now));
                }
                Action::Notify(Note::Message { from, id, text, .. }) => {
                    let p = self
                        .record
                        .printed
                        .entry((phone_of(&from), id))
                        .or_default();
                    p.push(text.as_str().to_string());
                }
            }
        }
    }
}

fn simulate(link: Link, mut sends: Vec<Send>) -> Result<Record, TestCaseError> {
    sends.sort_by_key(|s| s.at);
    let seed = link.seed;
    let mut world = World {
        phones: [
            Messenger::new(Config::default(), 1, Instant(0)),
            Messenger::new(Config::default(), 2, Instant(0)),
        ],
        rng: Rng(seed),
        link,
        pending: Vec::new(),
        seq: 0,
        record: Record::default(),
        sending: None,
    };
    let mut sends = sends.into_iter().enumerate().peekable();
    for _ in 0..200_000 {
        let send_at = sends.peek().map(|(_, s)| s.at);
        let arrival_at = world.pending.iter().map(|(at, seq, _)| (*at, *seq)).min();
        let timer_at = (0..2)
            .filter_map(|p| world.phones[p].poll_timeout().map(|t| (t.0, p)))
            .min();
        let next = [send_at, arrival_at.map(|a| a.0), timer_at.map(|t| t.0)]
            .into_iter()
            .flatten()
            .min();
        let Some(now) = next else {
            return Ok(world.record);
        };
        if send_at == Some(now) {
            let Some((k, s)) = sends.next() else { continue };
            let t = text(k, s.len);
            world.sending = Some(t.clone());
            let to = name(1 - s.from);
            let actions = world.phones[s.from].handle(Instant(now), &Event::Send { to, text: &t });
            world.execute(now, s.from, actions.into_iter().collect());
        } else if arrival_at.is_some_and(|a| a.0 == now) {
            let i = world
                .pending
                .iter()
                .position(|(at, seq, _)| Some((*at, *seq)) == arrival_at)
                .unwrap_or(0);
            let (_, _, arrival) = world.pending.swap_remove(i);
            let (phone, event) = match arrival {
                Arrival::Route { phone, to } => (phone, Event::Route { to: name(to) }),
                Arrival::Datagram { phone, from, line } => (
                    phone,
                    Event::Peer {
                        from: name(from),
                        verification: Verification::Key,
                        line: *line,
                    },
                ),
            };
            let actions = world.phones[phone].handle(Instant(now), &event);
            world.execute(now, phone, actions.into_iter().collect());
        } else if let Some((_, p)) = timer_at {
            let actions = world.phones[p].handle_timeout(Instant(now));
            world.execute(now, p, actions.into_iter().collect());
        }
    }
    Err(TestCaseError::fail("the exchange did not settle"))
}

fn check(record: &Record) -> Result<(), TestCaseError> {
    for (key, (text, sent_at)) in &record.sent {
        let outcomes = record.outcomes.get(key).map_or(&[][..], Vec::as_slice);
        prop_assert_eq!(outcomes.len(), 1, "{:?}: outcomes {:?}", key, outcomes);
        let (reason, at) = outcomes[0];
        prop_assert!(
            at - sent_at <= OUTCOME_BOUND,
            "{:?}: told after {} ms",
            key,
            at - sent_at
        );
        let printed = record.printed.get(key).map_or(&[][..], Vec::as_slice);
        prop_assert!(
            printed.len() <= 1,
            "{:?} printed {} times",
            key,
            printed.len()
        );
        prop_assert!(printed.iter().all(|p| p == text), "{:?}: another text", key);
        match reason {
            None => prop_assert_eq!(printed.len(), 1, "{:?} delivered, never printed", key),
            Some(Reason::Unreachable) => {}
            Some(r) => prop_assert!(printed.is_empty(), "{:?} printed, yet {}", key, r.name()),
        }
    }
    for key in record.printed.keys() {
        prop_assert!(
            record.sent.contains_key(key),
            "{:?} printed, never sent",
            key
        );
    }
    Ok(())
}

fn link() -> impl Strategy<Value = Link> {
    (0u8..=60, 0u8..=40, 1u64..=2_000, any::<u64>()).prop_map(
        |(loss, duplication, delay_max, seed)| Link {
            loss,
            duplication,
            delay_max,
            seed,
        },
    )
}

fn sends() -> impl Strategy<Value = Vec<Send>> {
    let len = prop_oneof![8 => 1usize..64, 1 => (MAX_TEXT - 2)..(MAX_TEXT + 3)];
    // Spread over 0.5 to 8 s: bursts over the receiver's rate, and calmer exchanges.
    (500u64..8_000).prop_flat_map(move |span| {
        prop::collection::vec(
            (0..span, 0usize..2, len.clone()).prop_map(|(at, from, len)| Send { at, from, len }),
            0..60,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_message_is_settled_once_and_printed_at_most_once(link in link(), sends in sends()) {
        let record = simulate(link, sends)?;
        check(&record)?;
    }

    #[test]
    fn a_perfect_link_delivers_what_the_rate_and_queue_allow(sends in sends()) {
        let link = Link { loss: 0, duplication: 0, delay_max: 1, seed: 1 };
        let record = simulate(link, sends)?;
        check(&record)?;
        for (key, outcomes) in &record.outcomes {
            let reason = outcomes[0].0;
            prop_assert!(
                !matches!(reason, Some(Reason::Unreachable)),
                "{:?} unreachable over a perfect link", key
            );
        }
    }
}

/// Alice and Bob message each other at the same moment, several times, over a link that
/// delays every datagram alike: each phone is sender and receiver at once, and every
/// message of each is delivered and printed once.
#[test]
fn crossing_messages_are_each_delivered_once() {
    let link = Link {
        loss: 0,
        duplication: 0,
        delay_max: 1,
        seed: 7,
    };
    let sends: Vec<Send> = (0..6)
        .map(|i| Send {
            at: 100 * (i / 2),
            from: (i % 2) as usize,
            len: 10,
        })
        .collect();
    let record = simulate(link, sends).expect("settles");
    check(&record).expect("holds");
    assert_eq!(record.sent.len(), 6);
    assert!(
        record.outcomes.values().all(|o| o[0].0.is_none()),
        "all delivered: {:?}",
        record.outcomes
    );
    assert_eq!(record.printed.len(), 6);
    // Per sender, ids (counters 1, 2, 3) in both runs: the same counters, no conflict.
    let counters: Vec<(usize, u32)> = record
        .sent
        .keys()
        .map(|(p, id)| (*p, id.counter()))
        .collect();
    assert_eq!(counters, [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]);
}
