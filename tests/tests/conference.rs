//! Conferences of real phones on loopback: every member plays a tone of its own as its
//! microphone (file device), and its recording must hold every other member's tone and
//! never its own ([`parlo_tests::conference`]). A conference forms, a member hangs up, a
//! fifth one is invited, one is killed, one leg crosses an impaired link, a two-party
//! call becomes a conference, and a phone of the original project cannot be invited.
//!
//! The parts of a recording judged are placed in time from its end (the moment the phone
//! was told to quit), with a margin of a second around every change, so that a voice
//! still in a jitter buffer at a change does not count.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use parlo_fsm::PublicKey;
use parlo_tests::attacker::Attacker;
use parlo_tests::call_audio::Netem;
use parlo_tests::capture::{find_tone, l16_bytes, names_in_capture, tone};
use parlo_tests::conference::{
    Member, Recording, assert_tones, latest_conference, others_tones, tone_level, wait_complete,
    wait_for, wait_left_all,
};
use parlo_tests::phone_harness::{OriginalPeer, Phone, read_wav};
use parlo_tests::relay::{Plan, Relay};
use parlo_tests::server_harness::{FakeDirectory, Server, TempDir, loopback};

/// The members' names and tones, in the order they are used.
const MEMBERS: [(&str, f64); 5] = [
    ("alice", 350.0),
    ("bob", 500.0),
    ("carol", 700.0),
    ("dave", 900.0),
    ("erin", 1200.0),
];

/// Seconds of tone in each microphone: longer than any test.
const MIC_SECONDS: f64 = 60.0;

/// How long a conference may take to form, every leg verified and up.
const FORMING: Duration = Duration::from_secs(20);

/// How long the phones talk before a recording is judged.
const TALK: Duration = Duration::from_secs(3);

/// The margin left out of a recording after a change (a conference complete, a member
/// gone) and before its end.
const MARGIN: Duration = Duration::from_secs(1);

/// The call machine's `peer_silence` (fsm `Config::default`): a leg with no media for
/// this long is lost.
const PEER_SILENCE: Duration = Duration::from_secs(5);

fn tone_of(name: &str) -> f64 {
    MEMBERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("a member of MEMBERS")
}

/// Starts the members `names` on `server`, each with its tone; all but the first with
/// `--auto-answer` when `auto` (the first is the one that starts the conference).
fn start(server: &Server, dir: &TempDir, names: &[&str], auto: bool) -> Vec<Member> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Member::start(dir.path(), name, tone_of(name), MIC_SECONDS, |b| {
                let b = b.server(server);
                if auto && i > 0 { b.auto_answer() } else { b }
            })
        })
        .collect()
}

fn phones(members: &[Member]) -> Vec<&Phone> {
    members.iter().map(|m| &m.phone).collect()
}

/// Sends `quit` to every member at once, then waits for each to exit and reads its
/// recording.
fn quit_all(members: &mut [Member]) -> Vec<Recording> {
    for m in members.iter_mut() {
        m.send_quit();
    }
    members.iter_mut().map(Member::finish).collect()
}

/// Each member's recording between `from` and its end, less [`MARGIN`], holds the tones
/// of the other `members` and neither its own nor any of `gone`.
fn assert_each_hears_the_others(
    what: &str,
    members: &[&Member],
    recordings: &[&Recording],
    from: Instant,
    gone: &[f64],
) {
    for (m, rec) in members.iter().zip(recordings) {
        let span = rec.between(from, rec.end - MARGIN, TALK - MARGIN);
        let mut absent = vec![m.tone];
        absent.extend_from_slice(gone);
        assert_tones(
            &format!("{what}: {}", m.phone.name),
            span,
            &others_tones(members, &m.phone.name),
            &absent,
        );
    }
}

/// The control of the measure: each microphone holds its own tone, and none of the
/// others', by the same detector that judges the recordings.
fn assert_mics_are_their_tones(members: &[Member]) {
    for m in members {
        let mic = read_wav(&m.mic);
        let others: Vec<f64> = MEMBERS.iter().map(|(_, t)| *t).collect();
        let absent: Vec<f64> = others.into_iter().filter(|&t| t != m.tone).collect();
        assert_tones(
            &format!("{}'s microphone", m.phone.name),
            &mic,
            &[m.tone],
            &absent,
        );
        assert!(tone_level(&mic, m.tone) > 0.9);
    }
}

#[test]
fn four_members_hear_each_other_and_carry_on_when_one_hangs_up() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-four");
    let mut members = start(&server, &dir, &["alice", "bob", "carol", "dave"], false);
    assert_mics_are_their_tones(&members);
    members[0].phone.send("conf bob carol dave");
    // The answer to `conf` is the conference event.
    let answer = members[0].phone.expect_event("conference");
    let id = answer
        .line
        .split(' ')
        .nth(1)
        .expect("an id after `conference`")
        .to_owned();
    // The invitations ring, each from alice, verified by key, in this conference; the
    // user accepts the first, and the phone the other members' legs by itself.
    for m in &mut members[1..] {
        let incoming = m.phone.expect_event("incoming");
        assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
        assert_eq!(
            incoming.field("verified").as_deref(),
            Some("key"),
            "{incoming}"
        );
        assert_eq!(incoming.field("conf"), Some(id.clone()), "{incoming}");
        m.phone.send("accept");
    }
    assert_eq!(wait_complete(&phones(&members), FORMING), id);
    let complete = Instant::now();
    std::thread::sleep(TALK + MARGIN);

    // bob leaves: the others see him go, and carry on among themselves.
    let mut bob = members.remove(1);
    bob.phone.send("hangup");
    bob.stopped = Some(Instant::now());
    let ended = bob.phone.expect_event("conference-ended");
    assert_eq!(ended.line.split(' ').nth(1), Some(id.as_str()), "{ended}");
    bob.phone.send("quit");
    let bob_heard = bob.finish();
    let hung_up = bob.stopped.unwrap_or_else(Instant::now);
    wait_left_all(&phones(&members), "bob", "hung-up", Duration::from_secs(5));
    wait_complete(&phones(&members), FORMING);
    let rest = Instant::now();
    std::thread::sleep(TALK + MARGIN);
    let recordings = quit_all(&mut members);

    // Before bob left: everyone hears the three others.
    let everyone: Vec<&Member> = members.iter().chain([&bob]).collect();
    let all_recordings: Vec<&Recording> = recordings.iter().chain([&bob_heard]).collect();
    for (m, rec) in everyone.iter().zip(&all_recordings) {
        let until = if m.phone.name == "bob" {
            rec.end - MARGIN
        } else {
            hung_up - MARGIN
        };
        let span = rec.between(complete + MARGIN, until, TALK - MARGIN);
        assert_tones(
            &format!("four members: {}", m.phone.name),
            span,
            &others_tones(&everyone, &m.phone.name),
            &[m.tone],
        );
    }
    // After: the three left hear each other, not bob.
    let three: Vec<&Member> = members.iter().collect();
    let three_recordings: Vec<&Recording> = recordings.iter().collect();
    assert_each_hears_the_others(
        "after bob hung up",
        &three,
        &three_recordings,
        rest + MARGIN,
        &[tone_of("bob")],
    );
}

#[test]
fn a_fifth_member_invited_by_another_than_the_starter_hears_all_and_is_heard() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-invite");
    let mut members = start(&server, &dir, &["alice", "bob", "carol", "dave"], true);
    members[0].phone.send("conf bob carol dave");
    let id = wait_complete(&phones(&members), FORMING);
    let erin = Member::start(dir.path(), "erin", tone_of("erin"), MIC_SECONDS, |b| {
        b.server(&server).auto_answer()
    });
    members.push(erin);
    members[1].phone.send("invite erin");
    assert_eq!(wait_complete(&phones(&members), FORMING), id);
    let complete = Instant::now();
    std::thread::sleep(TALK + MARGIN);
    let recordings = quit_all(&mut members);
    let five: Vec<&Member> = members.iter().collect();
    let heard: Vec<&Recording> = recordings.iter().collect();
    assert_each_hears_the_others("five members", &five, &heard, complete + MARGIN, &[]);
}

#[test]
fn a_killed_member_is_lost_and_the_others_carry_on() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-kill");
    let mut members = start(&server, &dir, &["alice", "bob", "carol", "dave"], true);
    members[0].phone.send("conf bob carol dave");
    wait_complete(&phones(&members), FORMING);
    std::thread::sleep(Duration::from_secs(1));
    let mut dave = members.pop().expect("four members");
    dave.phone.kill();
    let killed = Instant::now();
    // Lost once no media came for the peer-silence time; two seconds of slack for a
    // loaded machine.
    let lost = wait_left_all(
        &phones(&members),
        "dave",
        "peer-lost",
        PEER_SILENCE + Duration::from_secs(5),
    );
    for (m, at) in members.iter().zip(&lost) {
        let after = at.saturating_duration_since(killed);
        println!("{}: dave lost {after:?} after he was killed", m.phone.name);
        assert!(
            after <= PEER_SILENCE + Duration::from_secs(2),
            "{}: dave lost {after:?} after he was killed\n{}",
            m.phone.name,
            m.phone.transcript()
        );
    }
    wait_complete(&phones(&members), FORMING);
    let rest = Instant::now();
    std::thread::sleep(TALK + MARGIN);
    let recordings = quit_all(&mut members);
    let three: Vec<&Member> = members.iter().collect();
    let heard: Vec<&Recording> = recordings.iter().collect();
    assert_each_hears_the_others(
        "after dave was killed",
        &three,
        &heard,
        rest + MARGIN,
        &[tone_of("dave")],
    );
}

/// alice reaches bob through an impaired link, the other legs are direct. alice alone
/// asks a directory of the test's own ([`FakeDirectory`]), which gives the link's address
/// for bob (with bob's real key: the leg is encrypted end to end through it) and the
/// others' real addresses; the others have alice's key pinned, as she is not in their
/// directory (nobody dials her: her name sorts first, and she started the conference).
#[test]
fn a_conference_with_an_impaired_leg_forms_and_everyone_hears_everyone() {
    let netem = Netem {
        loss: 0.05,
        duplicate: 0.01,
        reorder: 0.01,
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(30),
        seed: 7,
    };
    let server = Server::start(&[]);
    let fake = FakeDirectory::start();
    let dir = TempDir::new("conf-impaired");
    let alice = Member::start(dir.path(), "alice", tone_of("alice"), MIC_SECONDS, |b| {
        b.server_addr(fake.addr)
    });
    let alice_key = alice.phone.public_key();
    let mut members = vec![alice];
    for name in ["bob", "carol", "dave"] {
        members.push(Member::start(
            dir.path(),
            name,
            tone_of(name),
            MIC_SECONDS,
            |b| b.server(&server).auto_answer().pin("alice", &alice_key),
        ));
    }
    let socket = || UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
    let link = Relay::between(
        socket(),
        socket(),
        members[1].phone.addr,
        Plan::transparent().impaired(netem).recording(),
    );
    for m in &members[1..] {
        let key = PublicKey::parse(&m.phone.public_key()).expect("a phone's key");
        let at = if m.phone.name == "bob" {
            link.addr
        } else {
            m.phone.addr
        };
        fake.claim(&m.phone.name, at, &key);
    }
    members[0].phone.send("conf bob carol dave");
    let id = wait_complete(&phones(&members), FORMING);
    let complete = Instant::now();
    std::thread::sleep(TALK + Duration::from_secs(2) + MARGIN);
    let recordings = quit_all(&mut members);
    let captured: Vec<Vec<u8>> = link.captured().into_iter().map(|c| c.bytes).collect();
    let report = link.finish();
    // A listener on that leg hears no member, reads no name, no roster and not the
    // conference's id: what would let it into the conference.
    assert!(
        captured.len() > 100,
        "{} datagrams captured",
        captured.len()
    );
    let needles = [
        id.as_str(),
        "alice",
        "bob",
        "carol",
        "dave",
        "ROSTER",
        "LINKS",
    ];
    assert!(
        names_in_capture(&captured, &needles).is_empty(),
        "read on the wire: {:?}",
        names_in_capture(&captured, &needles)
    );
    for (name, hz) in MEMBERS {
        assert!(
            find_tone(&captured, hz).is_none(),
            "{name}'s {hz} Hz tone heard on the wire"
        );
    }
    // The control: the same searches find a plaintext START of the conference and a
    // frame of alice's tone among those datagrams.
    let mut planted = captured.clone();
    planted.push(format!("START alice call=0000002a v=2 codecs=L16 conf={id}").into_bytes());
    planted.push(l16_bytes(&tone(tone_of("alice"), -6.0, 0.064)));
    assert_eq!(names_in_capture(&planted, &needles), [id.as_str(), "alice"]);
    assert!(find_tone(&planted, tone_of("alice")).is_some());
    println!("alice ↔ bob link: {report:?}");
    // The control: the link did impair that leg's media, both ways.
    assert!(
        report.forward.lost > 0 && report.backward.lost > 0,
        "{report:?}"
    );
    let four: Vec<&Member> = members.iter().collect();
    let heard: Vec<&Recording> = recordings.iter().collect();
    assert_each_hears_the_others(
        "impaired alice ↔ bob",
        &four,
        &heard,
        complete + MARGIN,
        &[],
    );
}

/// `invite` turns a two-party call into a conference without dropping it, and the
/// members can message each other meanwhile, over their legs.
#[test]
fn invite_during_a_call_makes_it_a_conference_without_dropping_it() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-upgrade");
    let mut members = start(&server, &dir, &["alice", "bob", "carol"], true);
    members[0].phone.send("call bob");
    members[0].phone.expect_event("connected");
    members[1].phone.expect_event("connected");
    std::thread::sleep(Duration::from_millis(500));
    members[0].phone.send("invite carol");
    wait_complete(&phones(&members), FORMING);
    let complete = Instant::now();
    std::thread::sleep(TALK + MARGIN);
    // The call was never dropped: neither of its phones ended it or saw the other leave.
    for m in &members[..2] {
        let events = m.phone.events();
        let dropped: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == "ended" || e.kind == "left" || e.kind == "conference-ended")
            .map(|e| e.line.as_str())
            .collect();
        assert!(
            dropped.is_empty(),
            "{}: {dropped:?}\n{}",
            m.phone.name,
            m.phone.transcript()
        );
    }
    // A message between members goes over their leg's session, which stays up.
    members[2].phone.send("msg alice over the conference");
    let delivered = members[2].phone.expect_event("delivered");
    assert_eq!(
        delivered.field("to").as_deref(),
        Some("alice"),
        "{delivered}"
    );
    let message = members[0].phone.expect_event("message");
    assert_eq!(message.peer(), Some("carol"), "{message}");
    for m in &members {
        assert!(
            m.phone.events().iter().all(|e| e.kind != "left"),
            "{}: a member left\n{}",
            m.phone.name,
            m.phone.transcript()
        );
    }
    let recordings = quit_all(&mut members);
    let three: Vec<&Member> = members.iter().collect();
    let heard: Vec<&Recording> = recordings.iter().collect();
    assert_each_hears_the_others(
        "call become conference",
        &three,
        &heard,
        complete + MARGIN,
        &[],
    );
}

#[test]
fn a_phone_of_the_original_project_cannot_be_invited() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-original");
    let mut members = start(&server, &dir, &["alice", "bob", "carol"], true);
    let old = OriginalPeer::register("oldphone", loopback(), server.addr);
    members[0].phone.send("conf bob carol");
    let id = wait_complete(&phones(&members), FORMING);
    members[0].phone.send("invite oldphone");
    // Either the invitation is refused at once with an error that says why, or the
    // phone tries and reports that the member left for being an original phone.
    let refusal = wait_for(
        &members[0].phone,
        "a refusal of `invite oldphone`",
        Duration::from_secs(15),
        |events| {
            events
                .iter()
                .find(|e| {
                    (e.kind == "left" && e.peer() == Some("oldphone"))
                        || (e.kind == "error" && e.reason().is_some_and(|r| r.contains("original")))
                })
                .cloned()
        },
    );
    if refusal.kind == "left" {
        assert_eq!(
            refusal.reason().as_deref(),
            Some("original-phone"),
            "{refusal}"
        );
    }
    println!("alice: {refusal}");
    // The conference goes on as it was, without the old phone: no member lists it (the
    // others must not have been told of a member that will never come), and every one
    // holds all its legs to the others.
    for m in &members {
        let state = wait_for(
            &m.phone,
            "conference event without oldphone",
            Duration::from_secs(5),
            |_| latest_conference(&m.phone).filter(|c| c.member("oldphone").is_none()),
        );
        assert_eq!(state.id, id);
    }
    wait_complete(&phones(&members), FORMING);
    // The old phone was never sent a conference's audio.
    let mut buf = [0u8; 2048];
    old.udp
        .set_nonblocking(true)
        .expect("the socket can be non-blocking");
    let mut audio = 0;
    while let Ok((n, _)) = old.udp.recv_from(&mut buf) {
        if n == 1024 {
            audio += 1;
        }
    }
    assert_eq!(audio, 0, "raw PCM datagrams reached the original phone");
    let _ = quit_all(&mut members);
}

/// A stranger who does not know the conference's id is busy to its members, whatever id
/// it makes up: its START is answered BUSY, and no member's user hears of it. The
/// control: the same START, to the same phone before the conference, rings its user.
#[test]
fn a_start_with_a_made_up_conference_id_gets_busy() {
    let server = Server::start(&[]);
    let dir = TempDir::new("conf-stranger");
    let mut members = start(&server, &dir, &["alice", "bob", "carol"], true);
    let bob_key = PublicKey::parse(&members[1].phone.public_key()).expect("bob's key");
    let bob_at = members[1].phone.addr;
    let mut mallory = Attacker::new();
    let start = |call: u32, id: &str| {
        format!("START mallory call={call:08x} v=2 codecs=L16,PCMU conf={id}")
    };
    // The control: bob, in no conference, is invited by mallory's START; it rings (mallory
    // is not verified by key, so bob's user decides).
    let made_up = "00000000deadbeef";
    mallory.send_init(
        bob_at,
        &bob_key,
        &start(1, made_up),
        std::time::SystemTime::now(),
    );
    let incoming = members[1].phone.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("mallory"), "{incoming}");
    assert_eq!(
        incoming.field("conf").as_deref(),
        Some(made_up),
        "{incoming}"
    );
    members[1].phone.send("reject");
    members[1].phone.expect_event("ended");
    let _ = mallory.receive_for(Duration::from_millis(300));

    members[0].phone.send("conf bob carol");
    wait_complete(&phones(&members), FORMING);
    // Made-up ids, and none at all: each START is answered BUSY.
    let plain = format!("START mallory call={:08x} v=2 codecs=L16,PCMU", 4);
    let starts = [
        (2, start(2, made_up)),
        (3, start(3, "0123456789abcdef")),
        (4, plain),
    ];
    for (call, line) in starts {
        mallory.send_init(bob_at, &bob_key, &line, std::time::SystemTime::now());
        let answer = |r: &parlo_tests::attacker::Received| {
            r.line().filter(|l| l.contains(&format!("call={call:08x}")))
        };
        let received = mallory.receive_until(Duration::from_secs(5), |r| answer(r).is_some());
        let line = received.iter().find_map(answer).expect("an answer");
        assert!(line.starts_with("BUSY"), "bob answered {line:?} to {call}");
    }
    // Bob's user heard of mallory once, before the conference; the conference is whole.
    let rung = members[1]
        .phone
        .events()
        .iter()
        .filter(|e| e.kind == "incoming" && e.peer() == Some("mallory"))
        .count();
    assert_eq!(rung, 1, "{}", members[1].phone.transcript());
    wait_complete(&phones(&members), FORMING);
    let _ = quit_all(&mut members);
}
