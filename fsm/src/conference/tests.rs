//! The conference layer among simulated phones: every phone a [`Conference`], every
//! action delivered to its peer in a random order, every call answered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::string::{String, ToString};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::types::Verification;
use crate::vocab::{Name, PublicKey};

fn name(text: &str) -> Name {
    Name::new(text).expect("a valid name")
}

fn key_of(name: &Name) -> PublicKey {
    let mut bytes = [0u8; PublicKey::LEN];
    for (b, c) in bytes.iter_mut().zip(name.as_str().bytes()) {
        *b = c;
    }
    PublicKey(bytes)
}

/// What travels between phones, queued until delivered.
#[derive(Debug, Clone)]
enum Wire {
    /// A START from `from` to `to`.
    Start { from: Name, to: Name, id: ConfId },
    /// The leg between `a` (the caller) and `b` was answered.
    Answered { a: Name, b: Name },
    /// BUSY from `to` for the START of `from`.
    Busy { from: Name, to: Name },
    /// A roster to `to`.
    Roster {
        from: Name,
        to: Name,
        roster: std::boxed::Box<Roster>,
    },
    /// Links to `to`.
    Links {
        from: Name,
        to: Name,
        id: ConfId,
        seq: u32,
        peers: Vec<Name>,
    },
    /// The user of `at` invites `whom`.
    Invite { at: Name, whom: Name },
}

struct Mesh {
    phones: BTreeMap<Name, Conference>,
    queue: VecDeque<Wire>,
    /// Legs answered, by (caller, callee).
    legs: Vec<(Name, Name)>,
    busy: Vec<(Name, Name)>,
    notes: BTreeMap<Name, Vec<String>>,
    /// Whether a roster reaching a phone in no conference is over an ordinary call that
    /// the phone adopts first, as the shell does.
    adopting: bool,
}

impl Mesh {
    fn new(names: &[Name]) -> Mesh {
        Mesh {
            phones: names
                .iter()
                .map(|n| (n.clone(), Conference::new(n.clone(), key_of(n))))
                .collect(),
            queue: VecDeque::new(),
            legs: Vec::new(),
            busy: Vec::new(),
            notes: BTreeMap::new(),
            adopting: false,
        }
    }

    fn apply(&mut self, at: &Name, event: &Event<'_>) {
        let actions = self.phones.get_mut(at).expect("a phone").handle(event);
        for action in actions {
            match action {
                Action::Dial { to, id } => self.queue.push_back(Wire::Start {
                    from: at.clone(),
                    to,
                    id,
                }),
                // The user answers at once; a held leg waits for its Accept.
                Action::Accept(from) | Action::Ring(from) => {
                    self.queue.push_back(Wire::Answered {
                        a: from,
                        b: at.clone(),
                    });
                }
                Action::Hold(_) | Action::Hangup(_) => {}
                Action::Busy(from) => self.queue.push_back(Wire::Busy {
                    from,
                    to: at.clone(),
                }),
                Action::SendRoster { to, roster } => self.queue.push_back(Wire::Roster {
                    from: at.clone(),
                    to,
                    roster: std::boxed::Box::new(roster),
                }),
                Action::SendLinks { to, id, seq, peers } => self.queue.push_back(Wire::Links {
                    from: at.clone(),
                    to,
                    id,
                    seq,
                    peers: peers.into_iter().collect(),
                }),
                Action::Notify(note) => self
                    .notes
                    .entry(at.clone())
                    .or_default()
                    .push(std::format!("{note}")),
            }
        }
    }

    fn deliver(&mut self, wire: Wire) {
        match wire {
            Wire::Start { from, to, id } => {
                self.apply(&to, &Event::Incoming { from, id: Some(id) })
            }
            Wire::Answered { a, b } => {
                self.legs.push((a.clone(), b.clone()));
                self.apply(
                    &a,
                    &Event::Connected {
                        peer: b.clone(),
                        key: key_of(&b),
                        verification: Verification::Key,
                    },
                );
                self.apply(
                    &b,
                    &Event::Connected {
                        peer: a.clone(),
                        key: key_of(&a),
                        verification: Verification::Key,
                    },
                );
            }
            Wire::Busy { from, to } => {
                self.busy.push((from.clone(), to.clone()));
                self.apply(
                    &from,
                    &Event::Ended {
                        peer: to,
                        reason: LegEnd::Busy,
                    },
                );
            }
            Wire::Roster { from, to, roster } => {
                if self.adopting && self.phones[&to].phase() == Phase::Idle {
                    self.apply(
                        &to,
                        &Event::Adopt {
                            key: key_of(&from),
                            peer: from.clone(),
                            verification: Verification::Key,
                            id: roster.id,
                        },
                    );
                }
                self.apply(
                    &to,
                    &Event::Roster {
                        from,
                        roster: &roster,
                    },
                );
            }
            Wire::Links {
                from,
                to,
                id,
                seq,
                peers,
            } => {
                self.apply(
                    &to,
                    &Event::Links {
                        from,
                        id,
                        seq,
                        peers: &peers,
                    },
                );
            }
            Wire::Invite { at, whom } => self.apply(&at, &Event::Invite(whom)),
        }
    }

    /// Delivers everything queued, picking the next at random (`seed`).
    fn run(&mut self, mut seed: u64) {
        let mut steps = 0;
        while !self.queue.is_empty() {
            steps += 1;
            assert!(steps < 10_000, "the conference never settles");
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let i = usize::try_from(seed >> 33).unwrap_or(0) % self.queue.len();
            let wire = self.queue.remove(i).expect("in range");
            self.deliver(wire);
        }
    }

    /// Checks that every pair of `members` has exactly one leg, and nobody was busy.
    fn check_full_mesh(&self, members: &[Name]) {
        assert!(self.busy.is_empty(), "busy legs: {:?}", self.busy);
        let mut pairs: BTreeMap<(Name, Name), usize> = BTreeMap::new();
        for (a, b) in &self.legs {
            let pair = if a < b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            *pairs.entry(pair).or_default() += 1;
        }
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                let pair = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                assert_eq!(
                    pairs.get(&pair),
                    Some(&1),
                    "legs between {a} and {b}: {pairs:?}"
                );
            }
        }
        assert_eq!(pairs.len(), members.len() * (members.len() - 1) / 2);
        for m in members {
            let phone = &self.phones[m];
            let others: BTreeSet<&Name> = phone.connected().collect();
            assert_eq!(
                others.len(),
                members.len() - 1,
                "{m} is connected to {others:?}"
            );
            let last = self.notes[m]
                .iter()
                .rev()
                .find(|n| n.starts_with("conference"))
                .expect("a conference event");
            let want = std::format!("legs={}/{}", members.len() - 1, members.len() - 1);
            assert_eq!(
                last.matches(&want).count(),
                members.len() - 1,
                "{m}: {last}"
            );
        }
    }
}

fn names_strategy() -> impl Strategy<Value = Vec<Name>> {
    proptest::collection::btree_set("[a-z][a-z0-9]{0,5}", 3..=MAX_MEMBERS)
        .prop_map(|set| set.iter().map(|s| name(s)).collect::<Vec<_>>())
        .prop_shuffle()
}

proptest! {
    /// A conference started with some phones, the rest invited by random members at
    /// random moments, every message delivered in a random order: each pair of members
    /// ends with exactly one leg, and every member sees every other fully connected.
    #[test]
    fn each_pair_of_members_gets_exactly_one_leg(
        names in names_strategy(),
        started in 2usize..=MAX_MEMBERS,
        inviters in proptest::collection::vec(any::<usize>(), MAX_MEMBERS),
        seed in any::<u64>(),
    ) {
        let started = started.min(names.len());
        let mut mesh = Mesh::new(&names);
        let starter = names[0].clone();
        mesh.apply(&starter, &Event::Start { id: ConfId(0xc0f), others: &names[1..started] });
        for (k, whom) in names[started..].iter().enumerate() {
            // Invited by someone already in (or being brought in), maybe mid-setup.
            let at = names[inviters[k] % (started + k)].clone();
            mesh.queue.push_back(Wire::Invite { at, whom: whom.clone() });
        }
        mesh.run(seed);
        // An invite that reached a phone not yet a member did nothing: invite again
        // from the starter until everyone is in.
        for whom in &names[started..] {
            if mesh.phones[whom].phase() == Phase::Idle {
                mesh.apply(&starter, &Event::Invite(whom.clone()));
                mesh.run(seed);
            }
        }
        mesh.check_full_mesh(&names);
    }
}

#[test]
fn a_conference_of_four_is_a_full_mesh() {
    let names = [name("alice"), name("bob"), name("carol"), name("dave")];
    let mut mesh = Mesh::new(&names);
    mesh.apply(
        &names[2],
        &Event::Start {
            id: ConfId(1),
            others: &[names[0].clone(), names[1].clone(), names[3].clone()],
        },
    );
    mesh.run(7);
    mesh.check_full_mesh(&names);
}

#[test]
fn at_most_eight_members() {
    let names: Vec<Name> = (0..10).map(|i| name(&std::format!("p{i}"))).collect();
    let mut conf = Conference::new(names[0].clone(), key_of(&names[0]));
    let actions = conf.handle(&Event::Start {
        id: ConfId(9),
        others: &names[1..],
    });
    let dialled: Vec<&Name> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(dialled.len(), MAX_MEMBERS - 1);
    assert_eq!(conf.members().count(), MAX_MEMBERS - 1);
    let actions = conf.handle(&Event::Invite(names[9].clone()));
    assert_eq!(
        actions.as_slice(),
        &[Action::Notify(Note::Full(names[9].clone()))]
    );
    // A ninth phone dialling in with the id is busy.
    let actions = conf.handle(&Event::Incoming {
        from: names[8].clone(),
        id: Some(ConfId(9)),
    });
    assert_eq!(actions.as_slice(), &[Action::Busy(names[8].clone())]);
}

#[test]
fn busy_only_for_starts_outside_the_conference() {
    let me = name("bob");
    let mut conf = Conference::new(me, key_of(&name("bob")));
    let invite = conf.handle(&Event::Incoming {
        from: name("alice"),
        id: Some(ConfId(5)),
    });
    assert_eq!(invite.as_slice(), &[Action::Ring(name("alice"))]);
    let plain = conf.handle(&Event::Incoming {
        from: name("eve"),
        id: None,
    });
    assert_eq!(plain.as_slice(), &[Action::Busy(name("eve"))]);
    let other = conf.handle(&Event::Incoming {
        from: name("eve"),
        id: Some(ConfId(6)),
    });
    assert_eq!(other.as_slice(), &[Action::Busy(name("eve"))]);
    let same = conf.handle(&Event::Incoming {
        from: name("carol"),
        id: Some(ConfId(5)),
    });
    assert_eq!(same.as_slice(), &[Action::Hold(name("carol"))]);
    // Outside any conference, an ordinary call is the call machine's business.
    let mut idle = Conference::new(name("zed"), key_of(&name("zed")));
    assert!(
        idle.handle(&Event::Incoming {
            from: name("eve"),
            id: None
        })
        .is_empty()
    );
}

// ---- adopting an ordinary call ----

/// Alice's layer, her ordinary call with bob adopted into conference 7.
fn adopted() -> (Conference, Actions) {
    let mut conf = Conference::new(name("alice"), key_of(&name("alice")));
    let actions = conf.handle(&Event::Adopt {
        peer: name("bob"),
        key: key_of(&name("bob")),
        verification: Verification::Key,
        id: ConfId(7),
    });
    (conf, actions)
}

#[test]
fn an_adopted_call_is_a_connected_leg_without_joined() {
    let (mut conf, actions) = adopted();
    assert_eq!(conf.phase(), Phase::Member(ConfId(7)));
    assert_eq!(conf.connected().collect::<Vec<_>>(), [&name("bob")]);
    let roster = conf.roster().expect("a member");
    assert_eq!(
        roster
            .members
            .iter()
            .map(|e| (&e.name, e.key))
            .collect::<Vec<_>>(),
        [
            (&name("alice"), Some(key_of(&name("alice")))),
            (&name("bob"), Some(key_of(&name("bob")))),
        ]
    );
    let mut members = heapless::Vec::new();
    let _ = members.push(Status {
        name: name("bob"),
        verification: Some(Verification::Key),
        legs: 1,
        of: 1,
    });
    assert_eq!(
        actions.as_slice(),
        &[
            Action::SendRoster {
                to: name("bob"),
                roster: roster.clone(),
            },
            Action::Notify(Note::Conference {
                id: ConfId(7),
                members,
            }),
        ],
    );
    // Bob's roster shows him in the conference: now the links go to him, and from
    // then on as over any leg.
    let mut bobs = roster.clone();
    bobs.members.reverse();
    let actions = conf.handle(&Event::Roster {
        from: name("bob"),
        roster: &bobs,
    });
    let mut peers = heapless::Vec::new();
    let _ = peers.push(name("bob"));
    let links = Action::SendLinks {
        to: name("bob"),
        id: ConfId(7),
        seq: 1,
        peers,
    };
    assert_eq!(actions.as_slice(), &[links]);
    let again = conf.handle(&Event::Roster {
        from: name("bob"),
        roster: &bobs,
    });
    assert!(again.is_empty(), "{again:?}");
    let _ = conf.handle(&Event::Invite(name("carol")));
    let joined = conf.handle(&Event::Connected {
        peer: name("carol"),
        key: key_of(&name("carol")),
        verification: Verification::Key,
    });
    let links_to: Vec<&Name> = joined
        .iter()
        .filter_map(|a| match a {
            Action::SendLinks { to, seq: 2, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(links_to, [&name("bob"), &name("carol")]);
}

#[test]
fn links_wait_for_the_roster_of_an_adopted_call() {
    let (mut conf, _) = adopted();
    let _ = conf.handle(&Event::Invite(name("carol")));
    // Carol's leg comes up before bob has taken the call as a leg: the links go to her
    // alone.
    let joined = conf.handle(&Event::Connected {
        peer: name("carol"),
        key: key_of(&name("carol")),
        verification: Verification::Key,
    });
    let links_to: Vec<&Name> = joined
        .iter()
        .filter_map(|a| match a {
            Action::SendLinks { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(links_to, [&name("carol")]);
    let roster = conf.roster().expect("a member");
    let actions = conf.handle(&Event::Roster {
        from: name("bob"),
        roster: &roster,
    });
    let mut peers = heapless::Vec::new();
    let _ = peers.push(name("bob"));
    let _ = peers.push(name("carol"));
    assert!(
        actions.contains(&Action::SendLinks {
            to: name("bob"),
            id: ConfId(7),
            seq: 2,
            peers,
        }),
        "{actions:?}"
    );
}

#[test]
fn adopting_is_heeded_only_in_no_conference() {
    let (mut conf, _) = adopted();
    let again = conf.handle(&Event::Adopt {
        peer: name("carol"),
        key: key_of(&name("carol")),
        verification: Verification::Key,
        id: ConfId(8),
    });
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(conf.phase(), Phase::Member(ConfId(7)));
    assert_eq!(conf.members().collect::<Vec<_>>(), [&name("bob")]);

    let mut invited = Conference::new(name("bob"), key_of(&name("bob")));
    let _ = invited.handle(&Event::Incoming {
        from: name("alice"),
        id: Some(ConfId(5)),
    });
    let ignored = invited.handle(&Event::Adopt {
        peer: name("carol"),
        key: key_of(&name("carol")),
        verification: Verification::Key,
        id: ConfId(8),
    });
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(invited.phase(), Phase::Invited(ConfId(5)));

    // A call with oneself is no call.
    let mut me = Conference::new(name("alice"), key_of(&name("alice")));
    let nothing = me.handle(&Event::Adopt {
        peer: name("alice"),
        key: key_of(&name("alice")),
        verification: Verification::Key,
        id: ConfId(8),
    });
    assert!(nothing.is_empty());
    assert_eq!(me.phase(), Phase::Idle);
}

#[test]
fn the_end_of_an_adopted_call_ends_a_conference_of_two() {
    let (mut conf, _) = adopted();
    let actions = conf.handle(&Event::Ended {
        peer: name("bob"),
        reason: LegEnd::HungUp,
    });
    assert_eq!(
        actions.as_slice(),
        &[
            Action::Notify(Note::Left(name("bob"), LegEnd::HungUp)),
            Action::Notify(Note::Ended(ConfId(7))),
        ]
    );
    assert_eq!(conf.phase(), Phase::Idle);
}

proptest! {
    /// Two phones in an ordinary call, one of them inviting the others one by one (the
    /// first invite turning the call into a conference), every message delivered in a
    /// random order: a full mesh, the ordinary call its first leg.
    #[test]
    fn an_invite_during_a_call_grows_it_into_a_full_mesh(
        names in names_strategy(),
        seed in any::<u64>(),
    ) {
        let mut mesh = Mesh::new(&names);
        mesh.adopting = true;
        let (a, b) = (names[0].clone(), names[1].clone());
        // The ordinary call between a and b, as the call machines set it up.
        mesh.legs.push((a.clone(), b.clone()));
        mesh.apply(&a, &Event::Adopt {
            peer: b.clone(),
            key: key_of(&b),
            verification: Verification::Key,
            id: ConfId(0xad0),
        });
        // The roster over the call reaches b (which adopts it) before anyone invited can
        // dial b: an invitee answers first, and learns of b from a only then. (Were it
        // the other way round, b would take the invitee's START as an invitation: see
        // the limits in the module docs.)
        mesh.run(seed);
        for whom in &names[2..] {
            mesh.queue.push_back(Wire::Invite { at: a.clone(), whom: whom.clone() });
        }
        mesh.run(seed);
        mesh.check_full_mesh(&names);
        // Nobody was told that the other end of the call joined: it was there already.
        for (at, other) in [(&a, &b), (&b, &a)] {
            let joined = std::format!("joined {other}");
            prop_assert!(!mesh.notes[at].contains(&joined), "{}: {:?}", at, mesh.notes[at]);
        }
    }
}

#[test]
fn leg_ends_follow_the_calls_end() {
    use crate::types::EndReason;
    let cases = [
        (EndReason::Hangup, LegEnd::HungUp),
        (EndReason::RemoteHangup, LegEnd::HungUp),
        (EndReason::Cancelled, LegEnd::HungUp),
        (EndReason::Rejected, LegEnd::Rejected),
        (EndReason::Busy, LegEnd::Busy),
        (EndReason::NoAnswer, LegEnd::NoAnswer),
        (EndReason::UnknownUser, LegEnd::Unreachable),
        (EndReason::LookupFailed, LegEnd::Unreachable),
        (EndReason::PeerLost, LegEnd::PeerLost),
        (EndReason::KeyChanged, LegEnd::KeyChanged),
        (EndReason::Insecure, LegEnd::Insecure),
        (EndReason::OriginalPhone, LegEnd::Original),
    ];
    for (reason, leg) in cases {
        assert_eq!(LegEnd::of(reason), leg, "{reason:?}");
        assert_eq!(LegEnd::from(reason), leg, "{reason:?}");
    }
    let names: BTreeSet<&str> = LegEnd::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), LegEnd::ALL.len(), "every name once");
    for (leg, shown) in [
        (LegEnd::Original, "original-phone"),
        (LegEnd::KeyChanged, "key-changed"),
        (LegEnd::Insecure, "insecure"),
    ] {
        assert_eq!(leg.name(), shown);
        assert_eq!(
            Note::Left(name("bob"), leg).to_string(),
            std::format!("left bob reason={shown}")
        );
    }
}

#[test]
fn conference_ids_are_exactly_16_hex_digits() {
    assert_eq!(
        ConfId::parse("0123456789ABCDEF"),
        Some(ConfId(0x0123_4567_89ab_cdef))
    );
    assert_eq!(ConfId(0xc0).to_string(), "00000000000000c0");
    for bad in [
        "",
        "0123456789abcde",
        "0123456789abcdef0",
        "+123456789abcdef",
        "-123456789abcdef",
        "0x23456789abcdef",
        "0123456789abcdeg",
        " 123456789abcdef",
    ] {
        assert_eq!(ConfId::parse(bad), None, "{bad:?}");
    }
}
