//! parlo-audio: the real-time audio side of a Parlo phone.
//!
//! Audio moves in [`Frame`]s: 512 mono `i16` samples at 8 kHz, 64 ms each, the unit of one
//! RTP packet. The crate provides:
//!
//! - [`queue`]: the two fixed-capacity lock-free single-producer/single-consumer queues
//!   between a device thread and the phone's event loop (capture: device → loop; playback:
//!   loop → device), with overrun/underrun counters readable from the loop.
//! - [`device`]: the audio devices behind one [`Audio`] handle, chosen by a [`DeviceSpec`]
//!   parsed from the phone's `--audio` flag: `cpal[:DEVICE]`, `file:IN.wav[,OUT.wav]`,
//!   `tone[:HZ]`, `null`.
//! - [`jitter`]: the jitter buffer the loop feeds with received packets and drains once per
//!   playback tick (reordering, duplicate/late drop, adaptive depth, loss concealment).
//! - [`mix`]: the saturating mixer that sums other members' frames in a conference.
//! - [`pcmu`]: G.711 µ-law encode/decode.
//!
//! # Contract
//!
//! The loop calls [`Audio::start`] once when media starts, giving a [`Wake`] function that
//! wakes its poll (typically a closure over a shared `mio::Waker`; this crate does not
//! depend on mio). The device thread calls that function after each captured frame it
//! pushes, and when the input ends or the device fails. On each wake the loop:
//!
//! 1. drains [`Audio::pop_captured`] until it returns `None`, sending a packet for each
//!    captured frame: the capture clock paces sending;
//! 2. checks [`Audio::failed`] (the device failed or disappeared: end media, and
//!    [`Audio::stop`] returns the reason) and [`Audio::input_ended`] (a file device has
//!    played all of its input).
//!
//! The playback clock paces playout. [`Audio::last_pop`] is the time of the device's last
//! playback tick and [`Audio::playback_queued`] what it has still to take; from them the
//! loop keeps one frame queued ahead of the device: it takes a frame from its
//! [`JitterBuffer`] ([`JitterBuffer::get`]) and hands it to [`Audio::push_playback`] as
//! soon as the frame due has arrived, or else shortly before the device's next tick.
//!
//! Received packets go to [`JitterBuffer::put`] as they arrive, with the arrival time in
//! 8 kHz ticks (the loop's clock; the buffer reads none). [`Audio::stop`] (or dropping the
//! handle) stops the device and joins its threads; [`Audio::stats`] and
//! [`JitterBuffer::stats`] give the counters for `status`. [`devices`] lists the sound
//! devices for `parlo-client devices`.
//!
//! # Real-time rules
//!
//! The device side (cpal's callbacks, or the paced thread of the file/tone/null devices)
//! never allocates, locks, logs or blocks on the queues: a full queue drops the frame and
//! counts an overrun, an empty playback queue plays silence and counts an underrun. All
//! allocation happens in [`Audio::start`]. The jitter buffer and the codecs never allocate.
//! Tests prove it with a counting global allocator (`tests/no_alloc.rs`, and
//! `tests/cpal_jack.rs` for cpal's threads).
//!
//! # Without a sound card
//!
//! alsa-lib's own messages (on a machine without the card asked for, lines of `ALSA lib
//! ... cannot find card '0'`) are kept off stderr while devices are opened or listed: they
//! go to the debug log, and the first completes the error Parlo reports, in its one line.
//!
//! `tests/cpal_jack.rs` runs the cpal device through ALSA on a JACK server with the dummy
//! driver (`jackd -n NAME -r -d dummy -r 8000 -p 256 -C 1 -P 1`), with `ALSA_CONFIG_PATH`
//! pointing at a configuration whose default PCM is `plug` over `jack` (and ALSA's `file`
//! plugin for capture from and playback to raw files), `JACK_DEFAULT_SERVER=NAME` and
//! `JACK_NO_START_SERVER=1`.

mod cpal_device;
pub mod device;
mod error;
pub mod jitter;
pub mod mix;
pub mod pcmu;
pub mod queue;

use std::time::Duration;

pub use device::{Audio, DeviceInfo, DeviceSpec, devices};
pub use error::Error;
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PutOutcome};
pub use queue::{DeviceEnd, LoopEnd, QueueStats, Wake, frame_queues};

pub use parlo_fsm::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Duration of one frame: 512 samples at 8 kHz.
pub const FRAME_DURATION: Duration = Duration::from_millis(parlo_fsm::FRAME_MS);

/// A frame of silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];
