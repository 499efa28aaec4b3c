//! The file, tone and null devices on their real threads, with real WAV files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use parlo_audio::{Audio, DeviceSpec, Error, FRAME_SAMPLES, Frame, SILENCE, Wake};
use parlo_tests::server_harness::TempDir;

/// A wake function the test thread can wait on, counting calls.
#[derive(Clone)]
struct Waiter(Arc<(Mutex<usize>, Condvar)>);

impl Waiter {
    fn new() -> Waiter {
        Waiter(Arc::new((Mutex::new(0), Condvar::new())))
    }
    fn wake_fn(&self) -> Wake {
        let inner = Arc::clone(&self.0);
        Arc::new(move || {
            let (count, cv) = &*inner;
            *count.lock().expect("waiter lock") += 1;
            cv.notify_all();
        })
    }
    fn count(&self) -> usize {
        *self.0.0.lock().expect("waiter lock")
    }
    /// Waits until at least `n` wakes happened, or `timeout`.
    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let (count, cv) = &*self.0;
        let guard = count.lock().expect("waiter lock");
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |c| *c < n)
            .expect("waiter lock");
        *guard >= n
    }
}

fn write_wav(path: &PathBuf, spec: hound::WavSpec, samples: &[i16]) {
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        writer.write_sample(s).expect("write sample");
    }
    writer.finalize().expect("finalize wav");
}

fn read_wav(path: &PathBuf) -> (hound::WavSpec, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("open wav");
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .expect("read samples");
    (reader.spec(), samples)
}

fn spec(s: &str) -> DeviceSpec {
    DeviceSpec::parse(s).expect("valid spec")
}

/// A recognisable non-periodic signal: no two consecutive windows look alike.
fn test_signal(len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| ((i * 7919 + i * i * 13) % 60_000) as i32 - 30_000)
        .map(|v| v as i16)
        .collect()
}

#[test]
fn file_device_plays_input_in_real_time_and_records_what_is_played() {
    let dir = TempDir::new("file");
    let input = dir.path().join("in.wav");
    let output = dir.path().join("out.wav");
    // 5 whole frames and a partial one.
    let signal = test_signal(5 * FRAME_SAMPLES + 100);
    write_wav(&input, parlo_audio::device::wav_spec(), &signal);

    let waiter = Waiter::new();
    let started = Instant::now();
    let mut audio = Audio::start(
        &spec(&format!("file:{},{}", input.display(), output.display())),
        waiter.wake_fn(),
    )
    .expect("start file device");

    // Queue the whole input for playback at once: what OUT records must then not depend
    // on how promptly this thread is scheduled (an echo of each captured frame would
    // underrun whenever a loaded machine wakes the test late).
    for chunk in signal.chunks(FRAME_SAMPLES) {
        let mut frame = [0i16; FRAME_SAMPLES];
        frame[..chunk.len()].copy_from_slice(chunk);
        assert!(audio.push_playback(&frame));
    }
    let mut captured: Vec<i16> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until the input has ended and its 6 frames (the last one partial) were played back.
    while !(audio.input_ended() && captured.len() >= 7 * FRAME_SAMPLES && audio.stats().played >= 6)
    {
        assert!(Instant::now() < deadline, "file device stalled");
        waiter.wait_for(waiter.count() + 1, Duration::from_millis(200));
        while let Some(frame) = audio.pop_captured() {
            captured.extend_from_slice(&frame);
        }
    }
    let elapsed = started.elapsed();
    let stats = audio.stats();
    audio.stop().expect("stop file device");

    // Captured: the file, its last frame padded with silence, then silence.
    assert_eq!(&captured[..signal.len()], &signal[..]);
    assert!(captured[signal.len()..].iter().all(|&s| s == 0));
    // Real-time pacing: 7 frames are not captured before 6 × 64 ms.
    assert!(
        elapsed >= Duration::from_millis(6 * 64),
        "7 frames in {elapsed:?}: not paced"
    );
    assert_eq!(stats.capture_overruns, 0);

    // OUT holds what was played: at most the silence of ticks before the frames were
    // queued, then the input sample for sample.
    let (out_spec, played) = read_wav(&output);
    assert_eq!(out_spec, parlo_audio::device::wav_spec());
    let start = played
        .windows(signal.len())
        .position(|w| w == &signal[..])
        .expect("the input appears intact in OUT");
    assert!(played[..start].iter().all(|&s| s == 0));
    assert_eq!(start % FRAME_SAMPLES, 0, "played on frame boundaries");
    assert!(
        start <= 2 * FRAME_SAMPLES,
        "initial latency {start} samples"
    );
}

#[test]
fn file_device_refuses_wrong_formats_and_missing_files() {
    let dir = TempDir::new("formats");
    let stereo = dir.path().join("stereo.wav");
    write_wav(
        &stereo,
        hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
        &[0; 64],
    );
    let wake: Wake = Arc::new(|| {});
    match Audio::start(&spec(&format!("file:{}", stereo.display())), wake.clone()) {
        Err(e @ Error::WavFormat { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("stereo.wav is 44100 Hz, stereo, 16-bit PCM"),
                "{message}"
            );
            assert!(
                message.contains("needs a WAV file of 8000 Hz mono 16-bit"),
                "{message}"
            );
            assert!(message.contains("-r 8000 -c 1 -b 16"), "{message}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    let missing = dir.path().join("missing.wav");
    match Audio::start(&spec(&format!("file:{}", missing.display())), wake.clone()) {
        Err(e @ Error::Wav { action: "open", .. }) => {
            assert!(e.to_string().contains("missing.wav"), "{e}");
        }
        other => panic!("expected an open error, got {other:?}"),
    }
    // An OUT that cannot be created is refused before anything runs.
    let good = dir.path().join("good.wav");
    write_wav(&good, parlo_audio::device::wav_spec(), &[1, 2, 3]);
    let bad_out = dir.path().join("no/such/dir/out.wav");
    match Audio::start(
        &spec(&format!("file:{},{}", good.display(), bad_out.display())),
        wake.clone(),
    ) {
        Err(Error::Wav {
            action: "create", ..
        }) => {}
        other => panic!("expected a create error, got {other:?}"),
    }
    // Nothing is left holding the wake function: no thread was left running.
    assert_eq!(Arc::strong_count(&wake), 1);
}

/// What [`parlo_audio::device::check_input_wav`] says of `path`, which it must refuse.
fn input_refusal(path: &std::path::Path) -> String {
    match parlo_audio::device::check_input_wav(path) {
        Ok(()) => panic!("{} accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_input_file_is_checked_without_starting_anything() {
    let dir = TempDir::new("check-input");
    let good = dir.path().join("good.wav");
    write_wav(&good, parlo_audio::device::wav_spec(), &[1, 2, 3]);
    parlo_audio::device::check_input_wav(&good).expect("8 kHz mono 16-bit PCM");
    // Empty but well formed: the microphone is silent from the start.
    let empty = dir.path().join("empty.wav");
    write_wav(&empty, parlo_audio::device::wav_spec(), &[]);
    parlo_audio::device::check_input_wav(&empty).expect("no samples is silence");

    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "this is not a sound\n").expect("written");
    let said = input_refusal(&text);
    assert!(said.contains("notes.wav is not a WAV file"), "{said}");
    assert!(said.contains("8000 Hz mono 16-bit PCM"), "{said}");

    let short = dir.path().join("short.wav");
    std::fs::write(&short, "RIFF").expect("written");
    let said = input_refusal(&short);
    assert!(said.contains("is not a WAV file"), "{said}");

    let float = dir.path().join("float.wav");
    write_float_wav(&float);
    assert!(input_refusal(&float).contains("is 8000 Hz, mono, 32-bit float"));

    let missing = dir.path().join("missing.wav");
    assert!(input_refusal(&missing).contains("cannot open WAV file"));
}

fn write_float_wav(path: &PathBuf) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    writer.write_sample(0.5f32).expect("write sample");
    writer.finalize().expect("finalize wav");
}

#[test]
fn tone_device_captures_a_sine_at_the_requested_frequency() {
    let waiter = Waiter::new();
    let mut audio = Audio::start(&spec("tone:1000"), waiter.wake_fn()).expect("start tone");
    let mut samples = Vec::new();
    while samples.len() < 4 * FRAME_SAMPLES {
        assert!(waiter.wait_for(waiter.count() + 1, Duration::from_secs(2)));
        while let Some(frame) = audio.pop_captured() {
            samples.extend_from_slice(&frame);
        }
    }
    audio.stop().expect("stop tone");
    // 1000 Hz at 8 kHz: 2 zero crossings (sign changes) per 8 samples.
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] >= 0) != (w[1] >= 0))
        .count();
    let expected = samples.len() / 4;
    assert!(
        crossings.abs_diff(expected) <= 2,
        "{crossings} crossings, expected about {expected}"
    );
    assert_eq!(samples.iter().map(|s| s.unsigned_abs()).max(), Some(16_000));
}

#[test]
fn null_device_is_paced_without_drift_and_stops_cleanly() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    let wake: Wake = Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let started = Instant::now();
    let mut audio = Audio::start(&spec("null"), Arc::clone(&wake)).expect("start null");
    let mut frames = 0u64;
    let run = Duration::from_millis(20 * 64 + 32);
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_millis(20));
        while let Some(frame) = audio.pop_captured() {
            assert_eq!(frame, SILENCE);
            frames += 1;
        }
    }
    let stats = audio.stats();
    audio.stop().expect("stop null");
    // Ticks at 0, 64, ..., 20 × 64 ms: 21 by 1312 ms. Absolute deadlines keep the count
    // exact; a thread descheduled at the wrong moment can be one or two behind.
    let ticks = stats.played + stats.playback_underruns;
    assert!((19..=22).contains(&ticks), "{ticks} ticks in {run:?}");
    // Nothing queued for playback: every tick was an underrun, played as silence.
    assert_eq!(stats.played, 0);
    // Every tick but the first delivered the frame captured over the tick before (the
    // counters are read one after the other while the device runs: a tick may fall between).
    assert!(
        (ticks - 2..ticks).contains(&stats.captured),
        "{} captured in {ticks} ticks",
        stats.captured
    );
    assert!(frames <= stats.captured);
    // The device thread is gone: nothing but this test holds the wake function.
    assert_eq!(Arc::strong_count(&wake), 1);
}

#[test]
fn dropping_a_running_device_stops_it_and_finalizes_out() {
    let dir = TempDir::new("drop");
    let input = dir.path().join("in.wav");
    let output = dir.path().join("out.wav");
    write_wav(
        &input,
        parlo_audio::device::wav_spec(),
        &test_signal(10 * FRAME_SAMPLES),
    );
    let wake: Wake = Arc::new(|| {});
    let audio = Audio::start(
        &spec(&format!("file:{},{}", input.display(), output.display())),
        Arc::clone(&wake),
    )
    .expect("start file device");
    std::thread::sleep(Duration::from_millis(150));
    drop(audio);
    assert_eq!(Arc::strong_count(&wake), 1, "device thread left behind");
    // OUT is a valid, finalized WAV of whole frames (nothing was queued: silence).
    let (_, played) = read_wav(&output);
    assert!(!played.is_empty());
    assert_eq!(played.len() % FRAME_SAMPLES, 0);
    assert!(played.iter().all(|&s| s == 0));
}

#[test]
fn the_recording_is_whole_at_every_moment() {
    // OUT holds the previous call's whole recording until this one is finalized: the
    // new one is written beside it and moved into place at the end.
    let dir = TempDir::new("whole");
    let input = dir.path().join("in.wav");
    let output = dir.path().join("out.wav");
    let partial = dir.path().join("out.wav.partial");
    write_wav(
        &input,
        parlo_audio::device::wav_spec(),
        &test_signal(10 * FRAME_SAMPLES),
    );
    write_wav(
        &output,
        parlo_audio::device::wav_spec(),
        &[7; FRAME_SAMPLES],
    );
    let audio = Audio::start(
        &spec(&format!("file:{},{}", input.display(), output.display())),
        Arc::new(|| {}),
    )
    .expect("start file device");
    std::thread::sleep(Duration::from_millis(150));
    assert!(partial.exists(), "the new recording is written beside OUT");
    assert_eq!(
        read_wav(&output).1,
        [7; FRAME_SAMPLES],
        "OUT is still whole"
    );
    audio.stop().expect("stop");
    assert!(!partial.exists());
    let (_, recorded) = read_wav(&output);
    assert!(!recorded.is_empty() && recorded.iter().all(|&s| s == 0));
}

#[test]
fn frames_are_512_samples_of_64_ms() {
    let frame: Frame = SILENCE;
    assert_eq!(frame.len(), 512);
    assert_eq!(parlo_audio::FRAME_DURATION, Duration::from_millis(64));
}
