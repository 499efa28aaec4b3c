//! The attacker's tools against today's plaintext calls: each test is a control run,
//! showing that the tool finds or does what it claims when nothing protects the call.
//! The same tools, run against encrypted calls, must then come back empty-handed.
//!
//! Every call goes through a [`Relay`]: registered in the directory as `bob-far`, it
//! forwards alice's call to the real bob, so it sees, can change and can add to every
//! datagram of the call, both ways. Bob sees the relay's address as alice's.
//!
//! - A passive listener hears both phones' tones in the datagrams, finds runs of the
//!   bytes the phones sent, and reads the caller's name.
//! - A tamperer flips bytes of 1 % of the media and the plaintext call takes them.
//! - A replayed `START`, recorded during a call, rings the callee again after it ended.
//! - A forged `CLOSE` with the call id read from the capture and the address of the
//!   callee's peer ends the call.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use parlo_tests::capture::{
    Reading, find_tone, l16_bytes, names_in_capture, shared_runs, tone, tone_in_capture,
};
use parlo_tests::forge::{NOBODY, forge_udp, forging_allowed, v4};
use parlo_tests::phone_harness::{Phone, PhoneBuilder, statuses_in_call, write_wav};
use parlo_tests::relay::{Captured, Plan, Relay, Toward};
use parlo_tests::server_harness::{Server, TempDir};

/// Alice's tone, Hz.
const ALICE_HZ: f64 = 440.0;
/// Bob's tone, Hz.
const BOB_HZ: f64 = 660.0;

/// A call from alice to bob through a relay registered as `bob-far`. Declared in this
/// order so that the phones stop before the relay and the server.
struct Call {
    alice: Phone,
    bob: Phone,
    relay: Relay,
    _server: Server,
    _dir: TempDir,
}

/// Starts bob (with `bob_setup` applied), the relay in front of him with `plan`, and
/// alice; both phones play `seconds` of their own -20 dBFS tone from a file device.
/// Alice calls `bob-far`; with `bob_answers`, bob answers by himself, otherwise the test
/// answers for him. Returns once both are connected.
fn call(
    tag: &str,
    plan: Plan,
    seconds: f64,
    bob_answers: bool,
    bob_setup: impl FnOnce(PhoneBuilder) -> PhoneBuilder,
) -> Call {
    let dir = TempDir::new(tag);
    let device = |who: &str, hz: f64| {
        let mic = dir.path().join(format!("{who}-mic.wav"));
        write_wav(&mic, &tone(hz, -20.0, seconds));
        let speaker = dir.path().join(format!("{who}-speaker.wav"));
        format!("file:{},{}", mic.display(), speaker.display())
    };
    let server = Server::start(&[]);
    let mut bob = Phone::builder("bob")
        .server(&server)
        .audio(device("bob", BOB_HZ));
    if bob_answers {
        bob = bob.auto_answer();
    }
    let mut bob = Phone::start_registered(bob_setup(bob));
    let relay = Relay::start("bob-far", &server, bob.addr, plan);
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .audio(device("alice", ALICE_HZ)),
    );
    alice.send("call bob-far");
    if !bob_answers {
        let incoming = bob.expect_event("incoming");
        assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
        bob.send("accept");
    }
    alice.expect_event("connected");
    bob.expect_event("connected");
    Call {
        alice,
        bob,
        relay,
        _server: server,
        _dir: dir,
    }
}

/// The bytes of the datagrams captured going one way.
fn toward(captured: &[Captured], toward: Toward) -> Vec<Vec<u8>> {
    captured
        .iter()
        .filter(|c| c.toward == toward)
        .map(|c| c.bytes.clone())
        .collect()
}

/// The first `START` the caller sent, as captured.
fn captured_start(captured: &[Captured]) -> Vec<u8> {
    captured
        .iter()
        .find(|c| c.toward == Toward::Callee && c.bytes.starts_with(b"START "))
        .map(|c| c.bytes.clone())
        .unwrap_or_else(|| panic!("no START among {} datagrams captured", captured.len()))
}

/// The call id a `START` carries (`call=<8 hex digits>`).
fn call_id(start: &[u8]) -> String {
    let line = String::from_utf8_lossy(start);
    line.split(' ')
        .find_map(|w| w.strip_prefix("call="))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no call id in {line:?}"))
}

/// Waits until the phone's `status` says it is idle (its linger after a call is over).
fn wait_idle(phone: &mut Phone) {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let status = phone.status();
        if status.field("state").as_deref() == Some("idle") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not idle 6 s after the call: {status}",
            phone.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn plaintext_control_a_passive_listener_hears_the_tones_and_reads_the_caller() {
    const SECONDS: f64 = 10.0;
    let mut call = call(
        "passive-l16",
        Plan::transparent().recording(),
        SECONDS,
        true,
        |b| b,
    );
    // The whole tone, and the pipeline's delay, before hanging up.
    std::thread::sleep(Duration::from_secs_f64(SECONDS) + Duration::from_millis(500));
    statuses_in_call(&mut call.alice, &mut call.bob);
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    call.bob.expect_ended("remote-hangup");

    let captured = call.relay.captured();
    let (to_bob, to_alice) = (
        toward(&captured, Toward::Callee),
        toward(&captured, Toward::Caller),
    );
    println!(
        "captured {} datagrams to bob, {} to alice",
        to_bob.len(),
        to_alice.len()
    );
    // Each direction carries its talker's tone and not the other's.
    assert!(tone_in_capture(&to_bob, ALICE_HZ), "alice's tone");
    assert!(tone_in_capture(&to_alice, BOB_HZ), "bob's tone");
    assert!(!tone_in_capture(&to_bob, BOB_HZ));
    assert!(!tone_in_capture(&to_alice, ALICE_HZ));
    // RTP L16: the samples are there as the phones encoded them.
    for (what, datagrams, hz) in [("alice", &to_bob, ALICE_HZ), ("bob", &to_alice, BOB_HZ)] {
        let heard = find_tone(datagrams, hz).expect("heard");
        println!("{what}'s tone: {heard:?}");
        let runs = shared_runs(datagrams, &l16_bytes(&tone(hz, -20.0, SECONDS)), 16);
        println!("{what}: {runs} distinct 16-byte runs of the sent samples on the wire");
        assert!(runs > 0, "{what}: none of the sent samples found as bytes");
    }
    // The caller's name travels in its START; nothing in the peer protocol names the
    // callee (bob's name is only in the directory's traffic).
    let all: Vec<Vec<u8>> = captured.into_iter().map(|c| c.bytes).collect();
    assert_eq!(names_in_capture(&all, &["alice", "bob"]), vec!["alice"]);
}

#[test]
fn plaintext_control_a_passive_listener_hears_the_tones_of_a_pcmu_call() {
    const SECONDS: f64 = 4.0;
    let mut call = call(
        "passive-pcmu",
        Plan::transparent().recording(),
        SECONDS,
        true,
        |b| b.arg("--codecs").arg("PCMU,L16"),
    );
    std::thread::sleep(Duration::from_secs_f64(SECONDS));
    let [status, _] = statuses_in_call(&mut call.alice, &mut call.bob);
    assert_eq!(status.field("codec").as_deref(), Some("PCMU"), "{status}");
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");

    let captured = call.relay.captured();
    for (what, datagrams, hz) in [
        ("alice", toward(&captured, Toward::Callee), ALICE_HZ),
        ("bob", toward(&captured, Toward::Caller), BOB_HZ),
    ] {
        let heard = find_tone(&datagrams, hz);
        println!("{what}'s tone: {heard:?}");
        assert_eq!(
            heard.map(|h| h.reading),
            Some(Reading::MuLaw),
            "{what}'s tone, read as µ-law"
        );
    }
}

#[test]
fn plaintext_control_tampered_media_is_forwarded_and_the_call_stays_up() {
    // With this seed, the relay flips a byte in media datagrams 4 and 12 of alice's
    // stream and 4 and 28 of bob's (each direction draws on its own): within the first
    // two seconds.
    let mut call = call(
        "tamper",
        Plan::transparent().tampering(0.01, 188),
        4.0,
        true,
        |b| b,
    );
    std::thread::sleep(Duration::from_secs(3));
    // The phones took every tampered datagram as good media (their flipped bytes fall in
    // the samples, which nothing checks) and played it.
    for status in statuses_in_call(&mut call.alice, &mut call.bob) {
        for counter in ["garbage", "foreign_media", "lost"] {
            assert_eq!(status.number(counter), Some(0), "{status}");
        }
    }
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    call.bob.expect_ended("remote-hangup");
    let Call { relay, .. } = call;
    let report = relay.finish();
    println!("{report:?}");
    for (what, traffic) in [("to bob", report.forward), ("to alice", report.backward)] {
        assert!(traffic.media >= 30, "{what}: {traffic:?}");
        assert!(traffic.tampered >= 2, "{what}: {traffic:?}");
        // 1 %: a few, never most.
        assert!(traffic.tampered * 10 < traffic.media, "{what}: {traffic:?}");
        assert_eq!(traffic.lost, 0, "{what}: {traffic:?}");
    }
}

#[test]
fn plaintext_control_a_replayed_start_rings_the_callee_again() {
    let mut call = call("replay", Plan::transparent().recording(), 2.0, false, |b| b);
    std::thread::sleep(Duration::from_millis(500));
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    call.bob.expect_ended("remote-hangup");
    wait_idle(&mut call.bob);

    let start = captured_start(&call.relay.captured());
    println!("replaying {:?}", String::from_utf8_lossy(&start));
    call.relay
        .inject(Toward::Callee, &start)
        .expect("injected toward bob");
    let incoming = call.bob.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
}

#[test]
fn plaintext_control_a_forged_close_hangs_up_the_callee() {
    if !forging_allowed() {
        return;
    }
    let mut call = call(
        "forged-close",
        Plan::transparent().recording(),
        6.0,
        true,
        |b| b,
    );
    let id = call_id(&captured_start(&call.relay.captured()));
    let bob = v4(call.bob.addr).expect("phones listen on IPv4 loopback");
    // Bob's peer in the call: the relay's address, standing for alice's.
    let peer: SocketAddrV4 = v4(call.relay.callee_side).expect("the relay is on IPv4");
    println!("call {id}; bob at {bob}, his peer at {peer}");

    // Each half of the forgery alone is foreign: the right id from another address,
    // another id from the peer's address. Bob counts both (so they did arrive) and
    // stays in the call.
    let foreign = |status: &parlo_tests::phone_harness::Event| {
        status
            .number("foreign")
            .expect("status counts foreign messages")
    };
    let before = foreign(&call.bob.status());
    forge_udp(NOBODY, bob, format!("CLOSE call={id}").as_bytes()).expect("forged");
    let other = format!("{:08x}", u32::from_str_radix(&id, 16).expect("hex") ^ 1);
    forge_udp(peer, bob, format!("CLOSE call={other}").as_bytes()).expect("forged");
    call.bob
        .expect_no_event("ended", Duration::from_millis(500));
    let [_, status] = statuses_in_call(&mut call.alice, &mut call.bob);
    assert_eq!(foreign(&status), before + 2, "{status}");

    forge_udp(peer, bob, format!("CLOSE call={id}").as_bytes()).expect("forged");
    let ended = call.bob.expect_ended("remote-hangup");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
}
