//! Calls seen by an attacker on the path, in pairs: each tool is first run against a
//! plaintext call (`--security off` on both phones, the control run: it finds or does what
//! it claims), then against an encrypted call (the phones' default), where it must come
//! back empty-handed.
//!
//! Every call goes through a [`Relay`]: registered in the directory as `bob-far`, it
//! forwards alice's call to the real bob, so it sees, can change and can add to every
//! datagram of the call, both ways. Bob sees the relay's address as alice's. For the
//! encrypted calls alice has bob's key pinned for the name `bob-far` (the relay registers
//! that name without a key, as anyone may): she calls bob's key, through the relay.
//!
//! - A passive listener hears both phones' tones, finds runs of the bytes the phones sent
//!   and reads the caller's name in a plaintext call; in an encrypted one, none of them.
//! - A tamperer flips a byte in 1 % of the media: the plaintext call plays the damage; the
//!   encrypted one counts each as an authentication failure, plays every other frame
//!   sample-exact, and goes on.
//! - A replayed START rings a plaintext callee again; replayed datagrams of an encrypted
//!   call, and a START an hour old made with the caller's own key, are counted and do
//!   nothing.
//! - A forged CLOSE with the peer's address hangs a plaintext call up; an encrypted call
//!   counts it as foreign and goes on.
//! - An encrypted call that changes its keys every second plays every frame sample-exact.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parlo_fsm::PublicKey;
use parlo_net::noise::SecretKey;
use parlo_net::secure::{self, Sessions, Timestamp};
use parlo_tests::call_audio::Trace;
use parlo_tests::capture::{
    Reading, find_tone, l16_bytes, names_in_capture, shared_runs, tone, tone_in_capture,
};
use parlo_tests::forge::{NOBODY, forge_udp, forging_allowed, v4};
use parlo_tests::phone_harness::{
    FRAME_SAMPLES, Phone, PhoneBuilder, read_wav, speechlike, statuses_in_call, write_wav,
};
use parlo_tests::relay::{Captured, Plan, Relay, Toward};
use parlo_tests::server_harness::{Server, TempDir};

/// Alice's tone, Hz.
const ALICE_HZ: f64 = 440.0;
/// Bob's tone, Hz.
const BOB_HZ: f64 = 660.0;

/// Whether the phones encrypt their calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `--security off`: the control runs.
    Plaintext,
    /// The phones' default.
    Encrypted,
}

/// What each phone plays into the call.
#[derive(Debug, Clone, Copy)]
enum Sound {
    /// Its own tone, -20 dBFS.
    Tones,
    /// Speech-like noise that never repeats a frame: what a sample-exact check needs.
    Speech,
}

/// A call from alice to bob through a relay registered as `bob-far`. Declared in this
/// order so that the phones stop before the relay and the server.
struct Call {
    alice: Phone,
    bob: Phone,
    relay: Relay,
    _server: Server,
    dir: TempDir,
}

/// What `who` played into a call made in `dir` (its microphone file).
fn said(dir: &TempDir, who: &str) -> Vec<i16> {
    read_wav(&dir.path().join(format!("{who}-mic.wav")))
}

/// What `who` heard (its speaker file, complete once its phone stopped).
fn heard(dir: &TempDir, who: &str) -> Vec<i16> {
    read_wav(&dir.path().join(format!("{who}-speaker.wav")))
}

/// Starts bob (with `setup` applied to both phones), the relay in front of him with
/// `plan`, and alice; both play `seconds` of `sound` from a file device. Alice calls
/// `bob-far`; with `bob_answers`, bob answers by himself, otherwise the test answers for
/// him. Returns once both are connected.
fn call(
    tag: &str,
    mode: Mode,
    plan: Plan,
    sound: Sound,
    seconds: f64,
    bob_answers: bool,
    setup: impl Fn(PhoneBuilder) -> PhoneBuilder,
) -> Call {
    let dir = TempDir::new(tag);
    let device = |who: &str, hz: f64, seed: u32| {
        let mic = dir.path().join(format!("{who}-mic.wav"));
        let samples = match sound {
            Sound::Tones => tone(hz, -20.0, seconds),
            Sound::Speech => speechlike((seconds * 8000.0) as usize, seed),
        };
        write_wav(&mic, &samples);
        let speaker = dir.path().join(format!("{who}-speaker.wav"));
        format!("file:{},{}", mic.display(), speaker.display())
    };
    let secured = |builder: PhoneBuilder| match mode {
        Mode::Plaintext => setup(builder.security("off")),
        Mode::Encrypted => setup(builder),
    };
    let server = Server::start(&[]);
    let mut bob = Phone::builder("bob")
        .server(&server)
        .audio(device("bob", BOB_HZ, 2));
    if bob_answers {
        bob = bob.auto_answer();
    }
    let mut bob = Phone::start_registered(secured(bob));
    let relay = Relay::start("bob-far", &server, bob.addr, plan);
    let mut alice = Phone::builder("alice")
        .server(&server)
        .audio(device("alice", ALICE_HZ, 1));
    if mode == Mode::Encrypted {
        alice = alice.pin("bob-far", &bob.public_key());
    }
    let mut alice = Phone::start_registered(secured(alice));
    alice.send("call bob-far");
    if !bob_answers {
        let incoming = bob.expect_event("incoming");
        assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
        bob.send("accept");
    }
    let connected = alice.expect_event("connected");
    let answered = bob.expect_event("connected");
    let verified = match mode {
        Mode::Plaintext => "plaintext",
        Mode::Encrypted => "key",
    };
    for event in [&connected, &answered] {
        assert_eq!(
            event.field("verified").as_deref(),
            Some(verified),
            "{event}"
        );
    }
    if mode == Mode::Encrypted {
        assert_eq!(connected.field("code"), answered.field("code"));
        assert!(connected.field("code").is_some(), "{connected}");
    }
    Call {
        alice,
        bob,
        relay,
        _server: server,
        dir,
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

/// A phone's counter in `status`.
fn counter(phone: &mut Phone, name: &str) -> u64 {
    let status = phone.status();
    status
        .number(name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Alice's call id, from her log (`call <id>` as the call machine logs it).
fn call_id(phone: &Phone) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(id) = phone.stderr_lines().iter().find_map(|line| {
            let (_, rest) = line.split_once("call=")?;
            let id: String = rest.chars().take(8).collect();
            (id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
        }) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no call id in {}'s log",
            phone.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- a passive listener ---------------------------------------------------------------

/// A 10 s call through a recording relay, each phone playing its tone: what the relay
/// captured each way, and the names it can read.
fn listen(mode: Mode, tag: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<String>) {
    const SECONDS: f64 = 10.0;
    let mut call = call(
        tag,
        mode,
        Plan::transparent().recording(),
        Sound::Tones,
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
    let all: Vec<Vec<u8>> = captured.iter().map(|c| c.bytes.clone()).collect();
    let names = names_in_capture(&all, &["alice", "bob"]);
    let (to_bob, to_alice) = (
        toward(&captured, Toward::Callee),
        toward(&captured, Toward::Caller),
    );
    println!(
        "{mode:?}: captured {} datagrams to bob, {} to alice",
        to_bob.len(),
        to_alice.len()
    );
    // A 10 s call is about 156 frames each way: the capture must hold them.
    assert!(to_bob.len() > 140 && to_alice.len() > 140);
    (to_bob, to_alice, names)
}

/// 16-byte runs of what `hz`'s tone was sent as (RTP L16 payloads) found in `datagrams`.
fn runs_of_tone(datagrams: &[Vec<u8>], hz: f64) -> usize {
    shared_runs(datagrams, &l16_bytes(&tone(hz, -20.0, 10.0)), 16)
}

#[test]
fn plaintext_control_a_passive_listener_hears_the_tones_and_reads_the_caller() {
    let (to_bob, to_alice, names) = listen(Mode::Plaintext, "passive-plain");
    // Each direction carries its talker's tone and not the other's.
    assert!(tone_in_capture(&to_bob, ALICE_HZ), "alice's tone");
    assert!(tone_in_capture(&to_alice, BOB_HZ), "bob's tone");
    assert!(!tone_in_capture(&to_bob, BOB_HZ));
    assert!(!tone_in_capture(&to_alice, ALICE_HZ));
    for (what, datagrams, hz) in [("alice", &to_bob, ALICE_HZ), ("bob", &to_alice, BOB_HZ)] {
        let runs = runs_of_tone(datagrams, hz);
        println!("{what}: {runs} distinct 16-byte runs of the sent samples on the wire");
        assert!(runs > 0, "{what}: none of the sent samples found as bytes");
    }
    // The caller's name travels in its START; nothing in the peer protocol names the
    // callee (bob's name is only in the directory's traffic).
    assert_eq!(names, ["alice"]);
}

#[test]
fn a_passive_listener_finds_no_tone_no_sent_bytes_and_no_name_in_an_encrypted_call() {
    let (to_bob, to_alice, names) = listen(Mode::Encrypted, "passive-encrypted");
    for (datagrams, way) in [(&to_bob, "to bob"), (&to_alice, "to alice")] {
        for hz in [ALICE_HZ, BOB_HZ] {
            assert_eq!(
                find_tone(datagrams, hz),
                None,
                "{way}: a {hz} Hz tone heard in the encrypted datagrams"
            );
            assert_eq!(
                runs_of_tone(datagrams, hz),
                0,
                "{way}: {hz} Hz samples found"
            );
        }
    }
    assert!(names.is_empty(), "names read on the wire: {names:?}");
}

#[test]
fn a_pcmu_call_is_heard_in_the_clear_and_not_once_encrypted() {
    for mode in [Mode::Plaintext, Mode::Encrypted] {
        const SECONDS: f64 = 4.0;
        let mut call = call(
            &format!("passive-pcmu-{mode:?}"),
            mode,
            Plan::transparent().recording(),
            Sound::Tones,
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
            let heard = find_tone(&datagrams, hz).map(|h| h.reading);
            println!("{mode:?}: {what}'s tone: {heard:?}");
            match mode {
                Mode::Plaintext => assert_eq!(heard, Some(Reading::MuLaw), "{what}"),
                Mode::Encrypted => assert_eq!(heard, None, "{what}"),
            }
        }
    }
}

// ---- a tamperer -----------------------------------------------------------------------

#[test]
fn plaintext_control_tampered_media_is_played() {
    // With this seed, the relay flips a byte in media datagrams 4 and 12 of alice's
    // stream and 4 and 28 of bob's: within the first two seconds.
    let mut call = call(
        "tamper-plain",
        Mode::Plaintext,
        Plan::transparent().tampering(0.01, 188),
        Sound::Tones,
        4.0,
        true,
        |b| b,
    );
    std::thread::sleep(Duration::from_secs(3));
    // The phones took every tampered datagram as good media and played it.
    for status in statuses_in_call(&mut call.alice, &mut call.bob) {
        for counter in ["garbage", "foreign_media", "lost", "auth_failures"] {
            assert_eq!(status.number(counter), Some(0), "{status}");
        }
    }
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    let report = call.relay.finish();
    assert!(report.forward.tampered >= 2 && report.backward.tampered >= 2);
}

/// How many of `said`'s whole frames `heard` holds sample-exact, out of how many.
fn exact_frames(said: &[i16], heard: &[i16]) -> (usize, usize) {
    (
        Trace::follow(said, heard).exact(),
        said.len() / FRAME_SAMPLES,
    )
}

/// What a finished call left: the directory of the recordings, the relay's report, and
/// alice's and bob's `status` once the call was over (every packet of it handled).
struct Finished {
    dir: TempDir,
    report: parlo_tests::relay::RelayReport,
    statuses: [parlo_tests::phone_harness::Event; 2],
}

/// Hangs up, lets both phones quit (their recordings complete).
fn finish(call: Call) -> Finished {
    let Call {
        mut alice,
        mut bob,
        relay,
        _server,
        dir,
    } = call;
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    // The last packets in flight arrive.
    std::thread::sleep(Duration::from_millis(200));
    let statuses = [alice.status(), bob.status()];
    assert_eq!(alice.quit().code(), Some(0));
    assert_eq!(bob.quit().code(), Some(0));
    Finished {
        dir,
        report: relay.finish(),
        statuses,
    }
}

#[test]
fn tampered_packets_of_an_encrypted_call_are_counted_and_the_rest_plays_sample_exact() {
    const SECONDS: f64 = 12.0;
    let mut call = call(
        "tamper-encrypted",
        Mode::Encrypted,
        Plan::transparent().tampering(0.01, 188),
        Sound::Speech,
        SECONDS,
        true,
        |b| b,
    );
    std::thread::sleep(Duration::from_secs_f64(SECONDS) + Duration::from_millis(500));
    for status in statuses_in_call(&mut call.alice, &mut call.bob) {
        assert_eq!(
            status.field("state").as_deref(),
            Some("in-call"),
            "{status}"
        );
    }
    let Finished {
        dir,
        report,
        statuses: [alice_status, bob_status],
    } = finish(call);
    println!("{report:?}");
    // Every flipped datagram is an authentication failure at its receiver (or, with its
    // first byte flipped, no longer reads as an encrypted datagram at all: garbage), and
    // is lost to the call; nothing else is.
    assert!(report.forward.tampered >= 1 && report.backward.tampered >= 1);
    for (status, tampered) in [
        (&bob_status, report.forward.tampered),
        (&alice_status, report.backward.tampered),
    ] {
        let count = |name: &str| status.number(name).unwrap_or(u64::MAX);
        assert_eq!(
            count("auth_failures") + count("garbage"),
            tampered as u64,
            "{status}"
        );
        assert!(count("auth_failures") >= 1, "{status}");
        // A frame lost in the call's last moments had no turn to play: not counted.
        let lost = count("lost");
        assert!(
            lost <= tampered as u64 && lost + 1 >= tampered as u64,
            "{tampered} tampered: {status}"
        );
    }
    // The rest arrived sample-exact: every frame but the lost ones, give or take the last
    // one, cut by the hang-up.
    for (way, said, heard, tampered) in [
        (
            "alice -> bob",
            said(&dir, "alice"),
            heard(&dir, "bob"),
            report.forward.tampered,
        ),
        (
            "bob -> alice",
            said(&dir, "bob"),
            heard(&dir, "alice"),
            report.backward.tampered,
        ),
    ] {
        let (exact, frames) = exact_frames(&said, &heard);
        println!("{way}: {exact} of {frames} frames sample-exact, {tampered} tampered");
        assert!(
            exact + tampered + 1 >= frames,
            "{way}: only {exact} of {frames} exact"
        );
    }
}

// ---- a replayer -----------------------------------------------------------------------

#[test]
fn plaintext_control_a_replayed_start_rings_the_callee_again() {
    let mut call = call(
        "replay-plain",
        Mode::Plaintext,
        Plan::transparent().recording(),
        Sound::Tones,
        2.0,
        false,
        |b| b,
    );
    std::thread::sleep(Duration::from_millis(500));
    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    call.bob.expect_ended("remote-hangup");
    wait_idle(&mut call.bob);
    let captured = call.relay.captured();
    let start = captured
        .iter()
        .find(|c| c.toward == Toward::Callee && c.bytes.starts_with(b"START "))
        .expect("a START captured");
    call.relay
        .inject(Toward::Callee, &start.bytes)
        .expect("injected toward bob");
    let incoming = call.bob.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
}

/// The private key in a phone's identity file.
fn identity_of(phone: &Phone) -> SecretKey {
    let path = phone.dir().join("state/parlo/identity");
    let text = std::fs::read_to_string(&path).expect("the phone's identity");
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a key line");
    SecretKey::from_bytes(PublicKey::parse(line.trim()).expect("a key").0)
}

#[test]
fn replayed_datagrams_of_an_encrypted_call_and_an_hour_old_start_do_nothing() {
    let mut call = call(
        "replay-encrypted",
        Mode::Encrypted,
        Plan::transparent().recording(),
        Sound::Tones,
        6.0,
        false,
        |b| b,
    );
    std::thread::sleep(Duration::from_millis(1500));
    // During the call: 20 of alice's media datagrams again, and her signalling.
    let captured = call.relay.captured();
    let to_bob: Vec<&Captured> = captured
        .iter()
        .filter(|c| c.toward == Toward::Callee)
        .collect();
    assert_eq!(
        to_bob[0].bytes[0],
        secure::INIT,
        "the call begins with an Init"
    );
    let replays = counter(&mut call.bob, "replays");
    let received = counter(&mut call.bob, "received");
    let media: Vec<&Captured> = to_bob
        .iter()
        .copied()
        .filter(|c| c.bytes.len() > 300)
        .collect();
    for datagram in media.iter().take(20) {
        call.relay
            .inject(Toward::Callee, &datagram.bytes)
            .expect("injected");
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = call.bob.status();
    assert_eq!(status.number("replays"), Some(replays + 20), "{status}");
    assert_eq!(
        status.field("state").as_deref(),
        Some("in-call"),
        "{status}"
    );
    let played_again = status.number("received").expect("received") - received;
    assert!(
        played_again < 20,
        "{played_again} packets received in 300 ms: {status}"
    );

    call.alice.send("hangup");
    call.alice.expect_ended("hangup");
    call.bob.expect_ended("remote-hangup");
    wait_idle(&mut call.bob);

    // After the call: everything alice sent, again, from the relay's address: the Init
    // first. Nothing rings, everything is counted.
    let replays = counter(&mut call.bob, "replays");
    let everything: Vec<Captured> = call
        .relay
        .captured()
        .into_iter()
        .filter(|c| c.toward == Toward::Callee)
        .collect();
    for datagram in &everything {
        call.relay
            .inject(Toward::Callee, &datagram.bytes)
            .expect("injected");
    }
    call.bob
        .expect_no_event("incoming", Duration::from_millis(1000));
    let status = call.bob.status();
    assert_eq!(
        status.number("replays"),
        Some(replays + everything.len() as u64),
        "{status}"
    );

    // A START made an hour ago with alice's very key (what a capture an hour old holds):
    // too old, refused, counted.
    let stale = counter(&mut call.bob, "stale");
    let bob_key = PublicKey::parse(&call.bob.public_key()).expect("bob's key");
    let mut sessions = Sessions::new(identity_of(&call.alice), secure::Config::default());
    let an_hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        - Duration::from_secs(3600);
    let line = format!("START alice call={} v=2 codecs=L16,PCMU", "0badcafe");
    let mut datagram = [0u8; secure::MAX_DATAGRAM];
    let mut seed = 0u8;
    let len = sessions
        .seal(
            0,
            Timestamp(an_hour_ago.as_nanos() as u64),
            call.relay.callee_side,
            &bob_key,
            line.as_bytes(),
            true,
            &mut datagram,
            &mut || {
                seed += 1;
                [seed; 32]
            },
        )
        .expect("sealed");
    call.relay
        .inject(Toward::Callee, &datagram[..len])
        .expect("injected");
    call.bob
        .expect_no_event("incoming", Duration::from_millis(1000));
    assert_eq!(counter(&mut call.bob, "stale"), stale + 1);
}

// ---- a forger -------------------------------------------------------------------------

/// A 6 s call through a transparent relay, for a forger who knows the call id (here from
/// alice's own log) and the addresses: the call, its id, bob's address and his peer's
/// (the relay's). `None` when datagrams cannot be forged here (not root, outside CI).
fn forging_call(tag: &str, mode: Mode) -> Option<(Call, String, SocketAddrV4, SocketAddrV4)> {
    if !forging_allowed() {
        return None;
    }
    let call = call(
        tag,
        mode,
        Plan::transparent(),
        Sound::Tones,
        6.0,
        true,
        |b| b,
    );
    let id = call_id(&call.alice);
    let bob = v4(call.bob.addr).expect("phones listen on IPv4 loopback");
    let peer: SocketAddrV4 = v4(call.relay.callee_side).expect("the relay is on IPv4");
    Some((call, id, bob, peer))
}

#[test]
fn plaintext_control_a_forged_close_hangs_up_the_callee() {
    let Some((mut call, id, bob, peer)) = forging_call("forged-plain", Mode::Plaintext) else {
        return;
    };
    // The right id from another address is foreign.
    let before = counter(&mut call.bob, "foreign");
    forge_udp(NOBODY, bob, format!("CLOSE call={id}").as_bytes()).expect("forged");
    call.bob
        .expect_no_event("ended", Duration::from_millis(500));
    assert_eq!(counter(&mut call.bob, "foreign"), before + 1);
    forge_udp(peer, bob, format!("CLOSE call={id}").as_bytes()).expect("forged");
    let ended = call.bob.expect_ended("remote-hangup");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
}

#[test]
fn a_forged_close_from_the_peer_s_address_cannot_end_an_encrypted_call() {
    let Some((mut call, id, bob, peer)) = forging_call("forged-encrypted", Mode::Encrypted) else {
        return;
    };
    let foreign = counter(&mut call.bob, "foreign");
    let auth = counter(&mut call.bob, "auth_failures");
    // In the clear, with the right id, from the peer's address.
    forge_udp(peer, bob, format!("CLOSE call={id}").as_bytes()).expect("forged");
    // As an encrypted datagram of the call: a transport header and made-up bytes.
    let mut fake = vec![secure::TRANSPORT];
    fake.extend_from_slice(&1_000_000u64.to_be_bytes());
    fake.extend_from_slice(format!("CLOSE call={id}").as_bytes());
    fake.extend_from_slice(&[0u8; 16]);
    forge_udp(peer, bob, &fake).expect("forged");
    call.bob
        .expect_no_event("ended", Duration::from_millis(1000));
    let status = call.bob.status();
    assert_eq!(status.number("foreign"), Some(foreign + 1), "{status}");
    assert_eq!(status.number("auth_failures"), Some(auth + 1), "{status}");
    assert_eq!(
        status.field("state").as_deref(),
        Some("in-call"),
        "{status}"
    );
    // The real hang-up still ends it.
    call.alice.send("hangup");
    call.bob.expect_ended("remote-hangup");
}

// ---- rekeying -------------------------------------------------------------------------

#[test]
fn an_encrypted_call_that_changes_keys_every_second_plays_sample_exact() {
    const SECONDS: f64 = 8.0;
    let mut call = call(
        "rekey",
        Mode::Encrypted,
        Plan::transparent(),
        Sound::Speech,
        SECONDS,
        true,
        |b| b.arg("--rekey-after").arg("1"),
    );
    std::thread::sleep(Duration::from_secs_f64(SECONDS) + Duration::from_millis(500));
    let statuses = statuses_in_call(&mut call.alice, &mut call.bob);
    let Finished { dir, .. } = finish(call);
    for status in &statuses {
        // Both sending keys change every second: 2 × 8 changes, give or take.
        let rekeys = status.number("rekeys").expect("rekeys");
        assert!(rekeys >= 12, "{rekeys} key changes: {status}");
        for zero in ["lost", "auth_failures", "replays", "concealed"] {
            assert_eq!(status.number(zero), Some(0), "{zero}: {status}");
        }
    }
    for (way, said, heard) in [
        ("alice -> bob", said(&dir, "alice"), heard(&dir, "bob")),
        ("bob -> alice", said(&dir, "bob"), heard(&dir, "alice")),
    ] {
        let (exact, frames) = exact_frames(&said, &heard);
        println!("{way}: {exact} of {frames} frames sample-exact");
        assert!(exact + 1 >= frames, "{way}: only {exact} of {frames} exact");
    }
}
