//! The cpal device on the real ALSA path, without a sound card: a JACK server with the
//! dummy driver (8 kHz, 256-frame periods) provides the clock, ALSA's `jack` plugin (under
//! `plug`, which converts to JACK's float samples) connects to it, and ALSA's `file` plugin
//! feeds the capture side from a raw file and copies the playback side to another.
//!
//! It also counts heap allocations in every thread of the process during 16 steady-state
//! frames (cpal's callback threads included): there must be none.
//!
//! Needs Debian's `jackd2` and `libasound2-plugins`. The test starts its own JACK server
//! (named after the test's process id) and stops it cleanly.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use parlo_audio::{Audio, DeviceSpec, Error, FRAME_SAMPLES, Wake};
use parlo_tests::call_audio::{JackServer, alsa_file_config, read_raw, write_raw};
use parlo_tests::server_harness::TempDir;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations in every thread while `COUNTING` is set.
struct CountingAllocator;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn test_signal(len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| (((i * 7919 + i * i * 13) % 60_000) as i32 - 30_000) as i16)
        .collect()
}

fn waiter() -> (Wake, Arc<(Mutex<u64>, Condvar)>) {
    let signal = Arc::new((Mutex::new(0u64), Condvar::new()));
    let notify = Arc::clone(&signal);
    let wake: Wake = Arc::new(move || {
        let (count, cv) = &*notify;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    });
    (wake, signal)
}

fn wait_a_little(signal: &(Mutex<u64>, Condvar)) {
    let (count, cv) = signal;
    let guard = count.lock().unwrap_or_else(|e| e.into_inner());
    drop(
        cv.wait_timeout(guard, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner()),
    );
}

/// One test, so that setting the environment races with nothing.
#[test]
fn cpal_device_through_alsa_on_a_jack_dummy_server() {
    let dir = TempDir::new("jack");
    let input = dir.path().join("in.raw");
    let played = dir.path().join("played.raw");
    let frames = 24;
    let signal = test_signal(frames * FRAME_SAMPLES);
    write_raw(&input, &signal);
    let config = alsa_file_config(dir.path(), &input, &played);
    let server_name = format!("parlo-audio-{}", std::process::id());
    let mut server = JackServer::start(&server_name);
    // SAFETY: this test binary runs this single test; no other thread reads or writes the
    // environment while it is set (cpal and ALSA read it later, from this thread).
    unsafe {
        std::env::set_var("ALSA_CONFIG_PATH", &config);
        std::env::set_var("JACK_DEFAULT_SERVER", &server_name);
        std::env::set_var("JACK_NO_START_SERVER", "1");
    }

    // A device that does not exist: a clear error, nothing left running.
    let (wake, _) = waiter();
    match Audio::start(&DeviceSpec::parse("cpal:no-such-card").expect("spec"), wake) {
        Err(e @ Error::NoSuchDevice { .. }) => {
            assert!(
                e.to_string()
                    .contains("no sound device named \"no-such-card\""),
                "{e}"
            )
        }
        other => panic!("expected NoSuchDevice, got {other:?}"),
    }

    // The listing works on this configuration (it names what `cpal:NAME` takes).
    let devices = parlo_audio::devices().expect("list devices");
    for device in &devices {
        eprintln!("device: {device}");
    }
    assert_eq!(devices[0].name, "default");

    // Capture the known signal and echo it to playback, through the real callbacks.
    let (wake, signal_wakes) = waiter();
    let spec = DeviceSpec::parse("cpal:default").expect("spec");
    let mut audio = Audio::start(&spec, Arc::clone(&wake)).expect("cpal device starts");
    let started = Instant::now();
    let mut captured: Vec<i16> = Vec::with_capacity((frames + 8) * FRAME_SAMPLES);
    while captured.len() < (frames + 4) * FRAME_SAMPLES {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "capture stalled after {} samples: {:?}",
            captured.len(),
            audio.stats()
        );
        assert!(!audio.failed(), "device failed");
        let frames_so_far = captured.len() / FRAME_SAMPLES;
        // Frames 8 to 24: steady state, every thread counted (cpal's callback threads,
        // ALSA's and JACK's, the watchdog, this loop), but the collecting Vec is sized.
        COUNTING.store((8..24).contains(&frames_so_far), Ordering::Relaxed);
        wait_a_little(&signal_wakes);
        while let Some(frame) = audio.pop_captured() {
            audio.push_playback(&frame);
            captured.extend_from_slice(&frame);
        }
    }
    COUNTING.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(
        allocations, 0,
        "heap allocations during 16 steady-state frames"
    );
    let elapsed = started.elapsed();
    let stats = audio.stats();
    audio.stop().expect("cpal device stops cleanly");
    // cpal's threads and the watchdog are gone: nothing else holds the wake function.
    assert_eq!(Arc::strong_count(&wake), 1);
    eprintln!(
        "{} frames in {elapsed:?}; {stats:?}",
        captured.len() / FRAME_SAMPLES
    );

    // Capture delivered the input sample for sample, from its start, at the JACK clock's
    // pace (28 frames of 64 ms: not before 1.6 s).
    assert_eq!(&captured[..signal.len()], &signal[..]);
    assert!(
        elapsed >= Duration::from_millis(1600),
        "not paced: {elapsed:?}"
    );
    assert_eq!(stats.capture_overruns, 0);

    // Playback carried the echo: the signal appears intact in what ALSA played.
    let played = read_raw(&played);
    let offset = played
        .windows(signal.len())
        .position(|w| w == &signal[..])
        .unwrap_or_else(|| panic!("signal not found in {} played samples", played.len()));
    eprintln!("echo latency through playback: {offset} samples");

    // The sound server goes away mid-call: the device says so, and stops cleanly.
    let (wake, signal_wakes) = waiter();
    let mut audio = Audio::start(&DeviceSpec::default(), wake).expect("cpal device restarts");
    while audio.stats().captured < 3 {
        wait_a_little(&signal_wakes);
        while audio.pop_captured().is_some() {}
    }
    server.stop();
    let lost_at = Instant::now();
    while !audio.failed() {
        assert!(
            lost_at.elapsed() < Duration::from_secs(10),
            "device loss not reported: {:?}",
            audio.stats()
        );
        wait_a_little(&signal_wakes);
        while audio.pop_captured().is_some() {}
    }
    eprintln!("device loss reported after {:?}", lost_at.elapsed());
    match audio.stop() {
        Err(e @ Error::Sound { .. }) => eprintln!("stop: {e}"),
        other => panic!("expected the sound system's error, got {other:?}"),
    }
}
