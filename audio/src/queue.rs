//! The two lock-free frame queues between a device and the event loop.
//!
//! [`frame_queues`] allocates, once, a capture queue (device → loop) and a playback queue
//! (loop → device), each holding [`QUEUE_FRAMES`] frames, and splits them into a
//! [`DeviceEnd`] (for the device's real-time side) and a [`LoopEnd`] (for the loop). Both
//! ends are `Send`; neither allocates, locks or blocks after set-up:
//!
//! - capture: [`DeviceEnd::push_captured`] drops the frame and counts a *capture overrun*
//!   when the loop has not kept up; otherwise it calls the [`Wake`] function.
//! - playback: [`LoopEnd::push_playback`] drops the frame and counts a *playback overrun*
//!   when the device has not kept up; [`DeviceEnd::pop_playback`] plays silence and counts a
//!   *playback underrun* when the loop has nothing ready. Either way it notes the time of
//!   the pop ([`LoopEnd::last_pop`]: the device's playback clock, which the loop follows to
//!   hand over each frame in time for the device's next tick). It does not wake the loop:
//!   the loop looks at the clock whenever it runs (a captured frame wakes it every frame),
//!   and a wake per playback tick would cost as much again.
//!
//! The counters are atomics; [`LoopEnd::stats`] reads them from the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heapless::spsc::{Consumer, Producer, Queue};

use crate::{Frame, SILENCE};

/// Frames each queue holds: 8 × 64 ms = 512 ms of slack between the device and the loop.
pub const QUEUE_FRAMES: usize = 8;

/// heapless' `Queue<T, N>` holds `N - 1` items.
type FrameQueue = Queue<Frame, { QUEUE_FRAMES + 1 }>;

/// How the device side wakes the event loop: called (from the device's thread) after each
/// captured frame is queued, and when the input ends or the device fails.
///
/// It must not block or allocate. With mio, share one `mio::Waker` and ignore its result:
/// `Arc::new(move || { let _ = waker.wake(); })`.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Counters shared by both ends.
#[derive(Debug, Default)]
struct Counters {
    captured: AtomicU64,
    capture_overruns: AtomicU64,
    played: AtomicU64,
    playback_underruns: AtomicU64,
    playback_overruns: AtomicU64,
    /// Nanoseconds from `Shared::epoch` to the last playback pop, plus one (0: none yet).
    last_pop: AtomicU64,
    input_ended: AtomicBool,
    failed: AtomicBool,
}

/// A snapshot of the queue counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Captured frames queued for the loop.
    pub captured: u64,
    /// Captured frames dropped because the capture queue was full (the loop fell behind).
    pub capture_overruns: u64,
    /// Frames the device took from the playback queue.
    pub played: u64,
    /// Device ticks that found the playback queue empty and played silence.
    pub playback_underruns: u64,
    /// Frames the loop could not queue for playback because the queue was full.
    pub playback_overruns: u64,
}

struct Shared {
    // Held only for its `Drop`, which frees the queues.
    _queues: QueueStorage,
    counters: Counters,
    wake: Wake,
    /// The origin of `Counters::last_pop`.
    epoch: Instant,
}

/// Owns the heap allocation holding both queues. The queues are reached only through the
/// producers and consumers split from them in [`frame_queues`]; this owner merely frees
/// them once both ends are gone.
struct QueueStorage(*mut (FrameQueue, FrameQueue));

// SAFETY: `QueueStorage` never touches the queues except in `drop`, which runs when the
// last `Arc<Shared>` goes, after both ends (and so all producers and consumers) are gone.
unsafe impl Send for QueueStorage {}
// SAFETY: as above: a shared `&QueueStorage` gives no access to the queues.
unsafe impl Sync for QueueStorage {}

impl Drop for QueueStorage {
    fn drop(&mut self) {
        // SAFETY: the pointer comes from `Box::into_raw` in `frame_queues`, is freed only
        // here, and no producer or consumer borrowing it is left (see above).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// The device's side: produces captured frames, consumes frames to play.
///
/// A device whose capture and playback run on different threads (cpal) splits it with
/// [`DeviceEnd::split`].
pub struct DeviceEnd {
    capture: CaptureEnd,
    playback: PlaybackEnd,
}

/// The device's capture half: pushes captured frames to the loop.
pub struct CaptureEnd {
    // Declared before `shared`: it borrows from the queue `shared` keeps alive.
    producer: Producer<'static, Frame>,
    shared: Arc<Shared>,
}

/// The device's playback half: takes frames to play from the loop.
pub struct PlaybackEnd {
    // Declared before `shared`: it borrows from the queue `shared` keeps alive.
    consumer: Consumer<'static, Frame>,
    shared: Arc<Shared>,
}

/// The loop's side: consumes captured frames, produces frames to play.
pub struct LoopEnd {
    // Declared before `shared`: these borrow from the queues `shared` keeps alive.
    capture: Consumer<'static, Frame>,
    playback: Producer<'static, Frame>,
    shared: Arc<Shared>,
}

/// Allocates both queues and returns their two ends. `wake` is called by the device side.
pub fn frame_queues(wake: Wake) -> (DeviceEnd, LoopEnd) {
    let queues: *mut (FrameQueue, FrameQueue) =
        Box::into_raw(Box::new((Queue::new(), Queue::new())));
    let shared = Arc::new(Shared {
        _queues: QueueStorage(queues),
        counters: Counters::default(),
        wake,
        epoch: Instant::now(),
    });
    // SAFETY: the queues live in a heap allocation that never moves and is freed only when
    // the last `Arc<Shared>` is dropped (`QueueStorage::drop`). Each end holds a clone of
    // that `Arc` and declares its producer/consumer fields before it, so the `'static`
    // borrows never outlive the queues. Each queue is split exactly once, here, while
    // nothing else refers to it.
    let (capture_producer, capture_consumer) = unsafe { (*queues).0.split() };
    // SAFETY: as above.
    let (playback_producer, playback_consumer) = unsafe { (*queues).1.split() };
    (
        DeviceEnd {
            capture: CaptureEnd {
                producer: capture_producer,
                shared: Arc::clone(&shared),
            },
            playback: PlaybackEnd {
                consumer: playback_consumer,
                shared: Arc::clone(&shared),
            },
        },
        LoopEnd {
            capture: capture_consumer,
            playback: playback_producer,
            shared,
        },
    )
}

impl DeviceEnd {
    /// Queues a captured frame for the loop and wakes it. Returns `false` (and counts a
    /// capture overrun) when the queue is full; the frame is then dropped.
    pub fn push_captured(&mut self, frame: &Frame) -> bool {
        self.capture.push_captured(frame)
    }

    /// Takes the next frame to play into `out`. Returns `false` (and counts a playback
    /// underrun) when the loop has queued nothing; `out` is then silence. Either way the
    /// time is noted for [`LoopEnd::last_pop`].
    pub fn pop_playback(&mut self, out: &mut Frame) -> bool {
        self.playback.pop_playback(out)
    }

    /// Tells the loop that the input has ended (a file device after its last sample).
    /// Wakes the loop the first time.
    pub fn signal_input_ended(&self) {
        self.capture.signal_input_ended();
    }

    /// Tells the loop that the device failed or disappeared. Wakes the loop the first time.
    pub fn signal_failure(&self) {
        self.capture.shared.signal_failure();
    }

    /// A handle that can signal failure from another thread (e.g. a sound system's error
    /// callback), without access to the queues.
    pub fn failure_signal(&self) -> FailureSignal {
        FailureSignal(Arc::clone(&self.capture.shared))
    }

    /// Splits into the capture and playback halves, for devices that run them on
    /// different threads.
    pub fn split(self) -> (CaptureEnd, PlaybackEnd) {
        (self.capture, self.playback)
    }
}

impl CaptureEnd {
    /// See [`DeviceEnd::push_captured`].
    pub fn push_captured(&mut self, frame: &Frame) -> bool {
        let counters = &self.shared.counters;
        if self.producer.enqueue(*frame).is_ok() {
            counters.captured.fetch_add(1, Ordering::Relaxed);
            (self.shared.wake)();
            true
        } else {
            counters.capture_overruns.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// See [`DeviceEnd::signal_input_ended`].
    pub fn signal_input_ended(&self) {
        if !self
            .shared
            .counters
            .input_ended
            .swap(true, Ordering::Release)
        {
            (self.shared.wake)();
        }
    }
}

impl PlaybackEnd {
    /// See [`DeviceEnd::pop_playback`].
    pub fn pop_playback(&mut self, out: &mut Frame) -> bool {
        let counters = &self.shared.counters;
        let popped = match self.consumer.dequeue() {
            Some(frame) => {
                *out = frame;
                counters.played.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => {
                *out = SILENCE;
                counters.playback_underruns.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        // A clock read is a vDSO call: no system call, no lock, no allocation.
        let since = self.shared.epoch.elapsed().as_nanos();
        let since = u64::try_from(since).unwrap_or(u64::MAX - 1);
        counters.last_pop.store(since + 1, Ordering::Release);
        popped
    }
}

impl Shared {
    fn signal_failure(&self) {
        if !self.counters.failed.swap(true, Ordering::Release) {
            (self.wake)();
        }
    }
}

/// Signals a device failure to the loop; see [`DeviceEnd::failure_signal`].
pub struct FailureSignal(Arc<Shared>);

impl FailureSignal {
    /// Marks the device as failed and wakes the loop (the first time).
    pub fn signal(&self) {
        self.0.signal_failure();
    }

    /// Frames captured so far, to watch a device for stalls.
    pub fn captured(&self) -> u64 {
        self.0.counters.captured.load(Ordering::Relaxed)
            + self.0.counters.capture_overruns.load(Ordering::Relaxed)
    }

    /// Whether failure was already signalled.
    pub fn failed(&self) -> bool {
        self.0.counters.failed.load(Ordering::Acquire)
    }
}

impl LoopEnd {
    /// Takes the oldest captured frame, if any.
    pub fn pop_captured(&mut self) -> Option<Frame> {
        self.capture.dequeue()
    }

    /// Queues a frame for playback. Returns `false` (and counts a playback overrun) when
    /// the queue is full; the frame is then dropped.
    pub fn push_playback(&mut self, frame: &Frame) -> bool {
        if self.playback.enqueue(*frame).is_ok() {
            true
        } else {
            let counters = &self.shared.counters;
            counters.playback_overruns.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Frames waiting in the playback queue.
    pub fn playback_queued(&self) -> usize {
        self.playback.len()
    }

    /// When the device last took a frame to play (or found none), by its own thread's
    /// clock read at that moment; `None` before its first playback tick.
    pub fn last_pop(&self) -> Option<Instant> {
        match self.shared.counters.last_pop.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.shared.epoch + Duration::from_nanos(n - 1)),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        let c = &self.shared.counters;
        QueueStats {
            captured: c.captured.load(Ordering::Relaxed),
            capture_overruns: c.capture_overruns.load(Ordering::Relaxed),
            played: c.played.load(Ordering::Relaxed),
            playback_underruns: c.playback_underruns.load(Ordering::Relaxed),
            playback_overruns: c.playback_overruns.load(Ordering::Relaxed),
        }
    }

    /// Whether the device's input has ended (file device past its last sample). Frames
    /// still queued can be drained; after the end the device captures silence.
    pub fn input_ended(&self) -> bool {
        self.shared.counters.input_ended.load(Ordering::Acquire)
    }

    /// Whether the device failed or disappeared; media should end.
    pub fn failed(&self) -> bool {
        self.shared.counters.failed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for DeviceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEnd")
            .field("counters", &self.capture.shared.counters)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CaptureEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureEnd").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PlaybackEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackEnd").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoopEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopEnd")
            .field("counters", &self.shared.counters)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FailureSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureSignal").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting_wake() -> (Wake, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let wake: Wake = Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        (wake, count)
    }

    fn frame(v: i16) -> Frame {
        [v; crate::FRAME_SAMPLES]
    }

    #[test]
    fn capture_keeps_order_wakes_and_counts_overruns() {
        let (wake, wakes) = counting_wake();
        let (mut dev, mut lp) = frame_queues(wake);
        for i in 0..QUEUE_FRAMES as i16 {
            assert!(dev.push_captured(&frame(i)));
        }
        assert!(
            !dev.push_captured(&frame(99)),
            "the queue holds QUEUE_FRAMES"
        );
        assert_eq!(wakes.load(Ordering::Relaxed), QUEUE_FRAMES);
        for i in 0..QUEUE_FRAMES as i16 {
            assert_eq!(lp.pop_captured(), Some(frame(i)));
        }
        assert_eq!(lp.pop_captured(), None);
        let stats = lp.stats();
        assert_eq!(stats.captured, QUEUE_FRAMES as u64);
        assert_eq!(stats.capture_overruns, 1);
    }

    #[test]
    fn playback_underrun_gives_silence_and_overrun_drops() {
        let (wake, _) = counting_wake();
        let (mut dev, mut lp) = frame_queues(wake);
        let mut out = frame(7);
        assert!(!dev.pop_playback(&mut out));
        assert_eq!(out, SILENCE);
        for i in 1..=QUEUE_FRAMES as i16 {
            assert!(lp.push_playback(&frame(i)));
        }
        assert!(!lp.push_playback(&frame(100)));
        assert_eq!(lp.playback_queued(), QUEUE_FRAMES);
        assert!(dev.pop_playback(&mut out));
        assert_eq!(out, frame(1));
        let stats = lp.stats();
        assert_eq!(stats.playback_underruns, 1);
        assert_eq!(stats.playback_overruns, 1);
        assert_eq!(stats.played, 1);
    }

    #[test]
    fn every_pop_notes_its_time() {
        let (wake, wakes) = counting_wake();
        let (mut dev, mut lp) = frame_queues(wake);
        let mut out = SILENCE;
        assert_eq!(lp.last_pop(), None);
        let before = Instant::now();
        assert!(!dev.pop_playback(&mut out));
        let first = lp.last_pop().expect("an underrun is a playback tick too");
        assert!(before <= first && first <= Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        assert!(lp.push_playback(&frame(1)));
        assert!(dev.pop_playback(&mut out));
        let second = lp.last_pop().expect("popped");
        assert!(
            second >= first + Duration::from_millis(2),
            "{first:?} {second:?}"
        );
        assert_eq!(
            wakes.load(Ordering::Relaxed),
            0,
            "playback does not wake the loop"
        );
    }

    #[test]
    fn ends_work_across_threads() {
        let (wake, wakes) = counting_wake();
        let (mut dev, mut lp) = frame_queues(wake);
        let producer = std::thread::spawn(move || {
            let mut sent = 0i16;
            while sent < 1000 {
                if dev.push_captured(&frame(sent)) {
                    sent += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            dev.signal_input_ended();
        });
        let mut expected = 0i16;
        while expected < 1000 {
            match lp.pop_captured() {
                Some(f) => {
                    assert_eq!(f, frame(expected));
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().expect("producer thread");
        assert!(lp.input_ended());
        assert!(!lp.failed());
        // 1000 frames plus the end-of-input signal.
        assert_eq!(wakes.load(Ordering::Relaxed), 1001);
    }

    #[test]
    fn failure_signal_wakes_once() {
        let (wake, wakes) = counting_wake();
        let (dev, lp) = frame_queues(wake);
        let signal = dev.failure_signal();
        drop(dev);
        signal.signal();
        signal.signal();
        assert!(lp.failed());
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
    }
}
