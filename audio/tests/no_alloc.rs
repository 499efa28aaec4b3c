//! Zero heap allocations per frame in steady state, proved with a counting global
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use parlo_audio::{
    Audio, DeviceSpec, FRAME_SAMPLES, Frame, JitterBuffer, JitterConfig, Playout, SILENCE, Wake,
    frame_queues, pcmu,
};

/// Counts allocations (and reallocations) made by the current thread while its flag is
/// set, and by every thread while `COUNT_ALL` is set.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static COUNT_ALL: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNT_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNT_ALL.load(Ordering::Relaxed) || COUNT_THIS_THREAD.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The tests below must not count each other's allocations.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allocations made by `f` on this thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNT_THIS_THREAD.with(|c| c.set(true));
    let result = f();
    COUNT_THIS_THREAD.with(|c| c.set(false));
    (ALLOCATIONS.load(Ordering::Relaxed) - before, result)
}

fn test_frame(k: u32) -> Frame {
    let mut frame = SILENCE;
    for (i, s) in frame.iter_mut().enumerate() {
        *s = (((k as usize * 977 + i * 131) % 50_000) as i32 - 25_000) as i16;
    }
    frame
}

/// One call's media path, both directions, for `frames` frames, in one thread: the
/// device captures, the loop takes the frame, encodes it (PCMU), "sends" it (reordering
/// pairs and dropping every 50th), the peer's jitter buffer takes it, one frame comes out
/// per tick, is decoded... and goes to playback, which the device plays.
fn media_path(frames: u32) -> (u64, u64) {
    let wake: Wake = Arc::new(|| {});
    let (mut device, mut lp) = frame_queues(wake);
    let mut jitter = Box::new(JitterBuffer::new(JitterConfig::default()));

    let mut captured = SILENCE;
    let mut to_play = SILENCE;
    let mut played = SILENCE;
    let mut decoded = SILENCE;
    let mut wire = [0u8; pcmu::FRAME_BYTES];
    let mut held: Option<(u16, [u8; pcmu::FRAME_BYTES])> = None;
    let mut received_frames = 0u64;

    let mut run = |range: std::ops::Range<u32>| {
        for k in range {
            captured = test_frame(k);
            device.push_captured(&captured);
            let Some(frame) = lp.pop_captured() else {
                panic!("captured frame {k} missing")
            };
            pcmu::encode_frame(&frame, &mut wire);
            let seq = k as u16;
            // The network: every 50th packet lost, odd/even pairs swapped.
            if k % 50 != 49 {
                if k % 2 == 0 {
                    held = Some((seq, wire));
                } else {
                    for (s, bytes) in [(seq, wire)].into_iter().chain(held.take()) {
                        pcmu::decode_frame(&bytes, &mut decoded);
                        jitter.put(s, u32::from(s) * 512, k * 512, &decoded);
                    }
                }
            }
            if jitter.get(&mut to_play) == Playout::Received {
                received_frames += 1;
            }
            lp.push_playback(&to_play);
            device.pop_playback(&mut played);
        }
    };
    // Warm-up: the buffer fills and settles.
    run(0..50);
    let (allocations, ()) = allocations_in(|| run(50..50 + frames));
    (allocations, received_frames)
}

#[test]
fn media_path_allocates_nothing_per_frame() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (allocations, received) = media_path(2_000);
    assert_eq!(allocations, 0, "allocations over 2,000 frames");
    // The path really carried audio (2 % loss, some concealment).
    assert!(received > 1_900, "only {received} frames received");
    // The counter works: a Vec allocates.
    let (allocations, v) = allocations_in(|| vec![0u8; FRAME_SAMPLES]);
    assert_eq!(allocations, 1);
    drop(v);
}

#[test]
fn running_device_and_loop_allocate_nothing_per_frame() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The tone device's own thread, the wake function and the loop side, counted in
    // every thread of the process, over 30 frames (about 2 s) after a warm-up.
    let signal = Arc::new((Mutex::new(0u64), Condvar::new()));
    let notify = Arc::clone(&signal);
    let wake: Wake = Arc::new(move || {
        let (count, cv) = &*notify;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_one();
    });
    let spec = DeviceSpec::parse("tone:440").expect("valid spec");
    let mut audio = Audio::start(&spec, wake).expect("tone device starts");
    let mut jitter = Box::new(JitterBuffer::new(JitterConfig::default()));
    let mut out = SILENCE;
    let mut seq = 0u16;
    let mut frames = 0u64;
    let mut step = |audio: &mut Audio, frames: &mut u64| {
        let (count, cv) = &*signal;
        let guard = count.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            cv.wait_timeout(guard, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner()),
        );
        while let Some(frame) = audio.pop_captured() {
            jitter.put(seq, u32::from(seq) * 512, u32::from(seq) * 512, &frame);
            seq = seq.wrapping_add(1);
            jitter.get(&mut out);
            audio.push_playback(&out);
            *frames += 1;
        }
    };
    while frames < 5 {
        step(&mut audio, &mut frames);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNT_ALL.store(true, Ordering::Relaxed);
    while frames < 35 {
        step(&mut audio, &mut frames);
    }
    COUNT_ALL.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let stats = audio.stats();
    audio.stop().expect("tone device stops");
    assert_eq!(
        allocations, 0,
        "allocations in 30 frames of a running device"
    );
    assert!(stats.played >= 30, "{stats:?}");
}
