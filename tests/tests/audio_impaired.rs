//! Calls through a bad network: a seeded user-space link between two real phones loses,
//! duplicates, reorders and delays with jitter the media in both directions (what `netem
//! loss 5% duplicate 1% reorder 1% delay 40ms 30ms` would do; this kernel has no netem).
//! The call must stay up, the received audio must stay aligned (the delay does not grow
//! over the call), and its quality is measured by segmental SNR against what was sent.
//!
//! Both phones use the file device (a WAV paced in real time as the microphone, what is
//! played written to a WAV): the test hears exactly what the phone played.

use std::time::Duration;

use parlo_tests::call_audio::{
    Impaired, ImpairedLink, Netem, Trace, media_start, mouth_to_ear_ms, segmental_snr,
};
use parlo_tests::phone_harness::{
    FRAME_SAMPLES, Phone, SAMPLE_RATE, read_wav, speechlike, statuses_in_call, write_wav,
};
use parlo_tests::server_harness::{Server, TempDir};

/// What one direction of the call sounded like.
struct Heard {
    frames: usize,
    exact: usize,
    start_offset: isize,
    end_offset: isize,
    max_offset: isize,
    min_offset: isize,
    snr: f64,
}

fn hear(what: &str, said: &[i16], played: &[i16], talker: &Phone, listener: &Phone) -> Heard {
    let trace = Trace::follow(said, played);
    let offsets = trace.offsets();
    assert!(
        offsets.len() > said.len() / FRAME_SAMPLES / 2,
        "{what}: only {} frames of {} heard exactly",
        offsets.len(),
        said.len() / FRAME_SAMPLES
    );
    // The median of 10 frames (640 ms) at each end: a concealed frame or a single late
    // one does not move it.
    let (start_offset, end_offset) = trace.start_and_end_offsets(10).expect("enough frames");
    let max_offset = offsets.iter().map(|&(_, o)| o).max().unwrap_or(0);
    let min_offset = offsets.iter().map(|&(_, o)| o).min().unwrap_or(0);
    let snr = segmental_snr(said, played, &trace).expect("segments to judge");
    // The time between the two devices' starts: offset 0 in the recording means this
    // mouth-to-ear latency.
    let base_ms = mouth_to_ear_ms(
        media_start(&talker.stderr_lines()).expect("the talker logs its media start"),
        0,
        media_start(&listener.stderr_lines()).expect("the listener logs its media start"),
        0,
    );
    let ms = |samples: isize| samples as f64 * 1000.0 / f64::from(SAMPLE_RATE);
    let trajectory: Vec<String> = offsets
        .iter()
        .step_by(offsets.len().div_ceil(8).max(1))
        .map(|&(k, o)| format!("{:.1}s:{:.0}ms", k as f64 * 0.064, ms(o)))
        .collect();
    let heard = Heard {
        frames: said.len() / FRAME_SAMPLES,
        exact: offsets.len(),
        start_offset,
        end_offset,
        max_offset,
        min_offset,
        snr,
    };
    println!(
        "{what}: {} of {} frames sample-exact; mouth-to-ear latency {:.0} ms at the start, \
         {:.0} ms at the end (drift {:+.0} ms; min {:.0}, max {:.0} ms); recording offsets \
         {}; segmental SNR {:.1} dB",
        heard.exact,
        heard.frames,
        base_ms + ms(start_offset),
        base_ms + ms(end_offset),
        ms(end_offset - start_offset),
        base_ms + ms(min_offset),
        base_ms + ms(max_offset),
        trajectory.join(" "),
        snr,
    );
    heard
}

fn assert_impaired(what: &str, stats: &Impaired, netem: &Netem) {
    println!("{what}: {stats:?}");
    let expected = stats.media as f64 * netem.loss;
    // The seeded draws give about the asked rate (within 3 standard deviations).
    let sigma = (expected * (1.0 - netem.loss)).sqrt();
    assert!(
        (stats.lost as f64 - expected).abs() <= 3.0 * sigma + 1.0,
        "{what}: {} lost of {}",
        stats.lost,
        stats.media
    );
}

#[test]
fn five_percent_loss_and_30_ms_jitter_keep_the_call_up_aligned_and_clear() {
    const SECONDS: usize = 24;
    let netem = Netem {
        loss: 0.05,
        duplicate: 0.01,
        reorder: 0.01,
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(30),
        seed: 5,
    };
    let dir = TempDir::new("audio-impaired");
    let samples = SECONDS * SAMPLE_RATE as usize;
    let said_a = speechlike(samples, 31);
    let said_b = speechlike(samples, 42);
    let path = |name: &str| dir.path().join(name);
    write_wav(&path("alice-mic.wav"), &said_a);
    write_wav(&path("bob-mic.wav"), &said_b);
    let device = |who: &str| {
        format!(
            "file:{},{}",
            path(&format!("{who}-mic.wav")).display(),
            path(&format!("{who}-speaker.wav")).display()
        )
    };

    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .auto_answer()
            .audio(device("bob")),
    );
    let link = ImpairedLink::start("bob-far", &server, bob.addr, netem);
    // The link registers its name without a key, as anyone may: alice has bob's key
    // pinned for it, and the call through the link is encrypted end to end.
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .audio(device("alice"))
            .pin("bob-far", &bob.public_key()),
    );
    alice.send("call bob-far");
    let connected = alice.expect_event("connected");
    let answered = bob.expect_event("connected");
    for event in [&connected, &answered] {
        assert_eq!(event.field("verified").as_deref(), Some("key"), "{event}");
    }
    assert_eq!(connected.field("code"), answered.field("code"));
    std::thread::sleep(Duration::from_secs(SECONDS as u64) + Duration::from_millis(1500));
    // Still up at the end, and the phones counted what the network did.
    let [status_a, status_b] = statuses_in_call(&mut alice, &mut bob);
    for status in [&status_a, &status_b] {
        assert!(status.number("lost").is_some_and(|n| n > 0), "{status}");
    }
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    assert!(alice.quit().success(), "{}", alice.transcript());
    assert!(bob.quit().success(), "{}", bob.transcript());
    let report = link.finish();
    assert_impaired("alice → bob", &report.forward, &netem);
    assert_impaired("bob → alice", &report.backward, &netem);
    // The phones counted what the network did to what they received. The status was
    // taken a moment before the link's report (media flows until the hangup): a packet
    // or two in flight may differ. A duplicate of an encrypted packet is caught by the
    // session's replay window, before the jitter buffer: it is counted as a replay.
    for (status, link) in [(&status_b, &report.forward), (&status_a, &report.backward)] {
        assert_eq!(status.number("duplicate"), Some(0), "{status}");
        assert_eq!(status.number("auth_failures"), Some(0), "{status}");
        for (field, done) in [("lost", link.lost), ("replays", link.duplicated)] {
            let counted = status.number(field).unwrap_or(u64::MAX) as usize;
            assert!(
                counted <= done && done - counted <= 2,
                "{field}: the phone counted {counted}, the link did {done}: {status}"
            );
        }
    }

    let heard_by_bob = read_wav(&path("bob-speaker.wav"));
    let heard_by_alice = read_wav(&path("alice-speaker.wav"));
    for (what, said, heard, talker, listener) in [
        ("alice → bob", &said_a, &heard_by_bob, &alice, &bob),
        ("bob → alice", &said_b, &heard_by_alice, &bob, &alice),
    ] {
        let h = hear(what, said, heard, talker, listener);
        // Aligned: the delay does not grow with the call. The jitter buffer may move by a
        // few frames as it adapts (a jitter spread of 60 ms is about a frame; a reordered
        // packet arrives a frame late; it deepens after losses and shrinks again), so the
        // delay at the end is within 3 frames (192 ms) of the delay at the start, and the
        // whole call stays within a 4-frame band. A buffer that only grows (a frame per
        // loss or late packet never taken back) would be 20 frames deeper by the end.
        let frame = FRAME_SAMPLES as isize;
        assert!(
            (h.end_offset - h.start_offset).abs() <= 3 * frame,
            "{what}: the alignment drifted from {} to {} samples",
            h.start_offset,
            h.end_offset
        );
        assert!(
            h.max_offset - h.min_offset <= 4 * frame,
            "{what}: the delay varied from {} to {} samples during the call",
            h.min_offset,
            h.max_offset
        );
        // Quality: segments are clamped to [-10, 35] dB, so with a fraction f of frames
        // damaged (lost and concealed, or skipped by the jitter buffer) the mean is at
        // least 35 - 45 f. 5 % of packets are lost; a floor of 28 dB allows f = 15 %:
        // three times the loss, room for the buffer's adaptation, but not for a buffer
        // that plays garbage or misorders frames (then most segments are near 0 dB).
        assert!(h.snr >= 28.0, "{what}: segmental SNR {:.1} dB", h.snr);
        assert!(
            h.exact * 100 >= h.frames * 85,
            "{what}: {} of {} frames sample-exact",
            h.exact,
            h.frames
        );
    }
}
