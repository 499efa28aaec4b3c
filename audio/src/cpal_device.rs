//! The cpal device: capture and playback on cpal's real-time callback threads.
//!
//! Streams are opened at 8000 Hz, mono, `i16` explicitly (cpal's default configuration is
//! the card's, e.g. 48 kHz stereo f32). On Linux this is ALSA: the `default` PCM normally
//! converts through `plug`; a raw `hw:` device that cannot do 8 kHz mono 16-bit is refused
//! with a clear error (use its `plughw:` twin).
//!
//! A watchdog thread (not real-time) marks the device failed when capture delivers nothing
//! for a second: a sound server that stops or a device that is unplugged does not always
//! make ALSA report an error.
//!
//! The data callbacks only copy samples between cpal's buffers and a frame being
//! assembled or played, and push/pop whole frames on the lock-free queues: no allocation,
//! lock, log or blocking call. The error callback (not real-time) marks the device failed,
//! keeps the first message (with a `try_lock`, never waiting) and wakes the loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::queue::{CaptureEnd, DeviceEnd, FailureSignal, PlaybackEnd};
use crate::{Error, FRAME_SAMPLES, Frame, SAMPLE_RATE, SILENCE};

/// Samples per cpal callback asked for: half a frame (32 ms).
const PERIOD_SAMPLES: u32 = FRAME_SAMPLES as u32 / 2;

/// Capture silence longer than this means the device is gone.
const STALL_LIMIT: Duration = Duration::from_secs(1);
/// How often the watchdog looks.
const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// The running input and output streams of a cpal device, and their watchdog.
pub(crate) struct Streams {
    input: cpal::Stream,
    output: cpal::Stream,
    watchdog: Watchdog,
    first_error: Arc<Mutex<Option<String>>>,
    name: String,
}

/// A thread that signals failure when capture stops delivering frames: a sound server
/// that goes away (JACK, for one) or an unplugged device does not always make ALSA report
/// an error; the stream just goes quiet.
struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    fn start(
        failure: FailureSignal,
        first_error: Arc<Mutex<Option<String>>>,
    ) -> Result<Watchdog, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("parlo-audio-watchdog".to_owned())
            .spawn(move || {
                let mut last_count = failure.captured();
                let mut last_progress = Instant::now();
                while !stop_flag.load(Ordering::Acquire) && !failure.failed() {
                    thread::park_timeout(WATCH_PERIOD);
                    let count = failure.captured();
                    if count != last_count {
                        last_count = count;
                        last_progress = Instant::now();
                    } else if last_progress.elapsed() >= STALL_LIMIT {
                        record_error(
                            &first_error,
                            "no audio from the device for 1 s: it was unplugged, or its \
                             sound server stopped"
                                .to_owned(),
                        );
                        failure.signal();
                    }
                }
            })
            .map_err(Error::Thread)?;
        Ok(Watchdog { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        // The watchdog cannot panic short of a bug; nothing to report to the caller.
        let _ = self.thread.join();
    }
}

fn record_error(slot: &Mutex<Option<String>>, message: String) {
    // Never wait: if the slot is busy, another error is being recorded.
    if let Ok(mut slot) = slot.try_lock() {
        if slot.is_none() {
            *slot = Some(message);
        }
    }
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// Opens `device` (the default device for `None`) and starts both streams.
    pub(crate) fn start(device: Option<&str>, end: DeviceEnd) -> Result<Streams, Error> {
        alsa_messages::hushed(|| Streams::open(device, end))
    }

    fn open(device: Option<&str>, end: DeviceEnd) -> Result<Streams, Error> {
        let host = cpal::default_host();
        let (input_device, output_device) = match device {
            None => (
                host.default_input_device()
                    .ok_or(Error::NoDefaultDevice { direction: "input" })?,
                host.default_output_device().ok_or(Error::NoDefaultDevice {
                    direction: "output",
                })?,
            ),
            Some(name) => {
                let found = find_device(&host, name)?;
                (found.clone(), found)
            }
        };
        let name = device.unwrap_or("default").to_owned();
        // Half-frame periods: low latency, and whole frames after two callbacks. Left to
        // its default, ALSA may pick an enormous buffer (the `jack` plugin offers up to
        // 2^31 frames) and never call back at all.
        let config = cpal::StreamConfig {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            buffer_size: cpal::BufferSize::Fixed(PERIOD_SAMPLES),
        };
        let first_error = Arc::new(Mutex::new(None));
        let input_failure = end.failure_signal();
        let output_failure = end.failure_signal();
        let watch_failure = end.failure_signal();
        let (capture, playback) = end.split();

        let mut capture = Capture {
            end: capture,
            frame: SILENCE,
            filled: 0,
        };
        let input = input_device
            .build_input_stream::<i16, _, _>(
                config,
                move |data: &[i16], _: &cpal::InputCallbackInfo| capture.on_data(data),
                error_callback(input_failure, Arc::clone(&first_error)),
                None,
            )
            .map_err(|e| sound_error(format!("open the input stream of {name:?}"), &e))?;

        let mut playback = Playback {
            end: playback,
            frame: SILENCE,
            position: FRAME_SAMPLES,
        };
        let output = output_device
            .build_output_stream::<i16, _, _>(
                config,
                move |data: &mut [i16], _: &cpal::OutputCallbackInfo| playback.on_data(data),
                error_callback(output_failure, Arc::clone(&first_error)),
                None,
            )
            .map_err(|e| sound_error(format!("open the output stream of {name:?}"), &e))?;

        output
            .play()
            .map_err(|e| sound_error(format!("start playback on {name:?}"), &e))?;
        input
            .play()
            .map_err(|e| sound_error(format!("start capture on {name:?}"), &e))?;
        let watchdog = Watchdog::start(watch_failure, Arc::clone(&first_error))?;
        Ok(Streams {
            input,
            output,
            watchdog,
            first_error,
            name,
        })
    }

    /// Stops both streams (joining cpal's threads). Returns the first error the sound
    /// system reported while running, if any.
    pub(crate) fn stop(self) -> Result<(), Error> {
        let Streams {
            input,
            output,
            watchdog,
            first_error,
            name,
        } = self;
        watchdog.stop();
        drop(input);
        drop(output);
        let message = match first_error.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match message {
            Some(message) => Err(Error::Sound {
                action: format!("keep sound device {name:?} running"),
                message,
            }),
            None => Ok(()),
        }
    }
}

/// Assembles cpal's input buffers (any size) into whole frames.
struct Capture {
    end: CaptureEnd,
    frame: Frame,
    filled: usize,
}

impl Capture {
    fn on_data(&mut self, mut data: &[i16]) {
        while !data.is_empty() {
            let n = (FRAME_SAMPLES - self.filled).min(data.len());
            self.frame[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == FRAME_SAMPLES {
                self.end.push_captured(&self.frame);
                self.filled = 0;
            }
        }
    }
}

/// Plays whole frames into cpal's output buffers (any size).
struct Playback {
    end: PlaybackEnd,
    frame: Frame,
    position: usize,
}

impl Playback {
    fn on_data(&mut self, mut out: &mut [i16]) {
        while !out.is_empty() {
            if self.position == FRAME_SAMPLES {
                self.end.pop_playback(&mut self.frame);
                self.position = 0;
            }
            let n = (FRAME_SAMPLES - self.position).min(out.len());
            out[..n].copy_from_slice(&self.frame[self.position..self.position + n]);
            self.position += n;
            out = &mut out[n..];
        }
    }
}

fn error_callback(
    failure: FailureSignal,
    first_error: Arc<Mutex<Option<String>>>,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |error: cpal::Error| {
        // A rerouted default device keeps working; anything else ends the media.
        if error.kind() == cpal::ErrorKind::DeviceChanged {
            return;
        }
        record_error(&first_error, error.to_string());
        failure.signal();
    }
}

fn sound_error(action: String, e: &cpal::Error) -> Error {
    let mut message = e.to_string();
    if e.kind() == cpal::ErrorKind::UnsupportedConfig {
        message.push_str(
            " (Parlo needs 8000 Hz mono 16-bit; for an ALSA hw: device use its plughw: twin)",
        );
    }
    Error::Sound { action, message }
}

/// Finds a device by its ALSA PCM name (as `devices()` lists it) or its description.
fn find_device(host: &cpal::Host, name: &str) -> Result<cpal::Device, Error> {
    if name == "default" {
        return host
            .default_input_device()
            .ok_or(Error::NoDefaultDevice { direction: "input" });
    }
    let devices = host
        .devices()
        .map_err(|e| sound_error("list the sound devices".to_owned(), &e))?;
    let mut available = Vec::new();
    for device in devices {
        let id = device.id().map(|id| id.id().to_owned()).ok();
        let description = device.description().map(|d| d.name().to_owned()).ok();
        if id.as_deref() == Some(name) || description.as_deref() == Some(name) {
            return Ok(device);
        }
        available.extend(id);
    }
    Err(Error::NoSuchDevice {
        name: name.to_owned(),
        available,
    })
}

/// The sound devices cpal sees, for `parlo-client devices`.
pub(crate) fn list() -> Result<Vec<DeviceInfo>, Error> {
    alsa_messages::hushed(list_devices)
}

fn list_devices() -> Result<Vec<DeviceInfo>, Error> {
    let host = cpal::default_host();
    let devices = host
        .devices()
        .map_err(|e| sound_error("list the sound devices".to_owned(), &e))?;
    // The default device is always there by name, even when the configuration gives no
    // hints to enumerate it.
    let mut list = vec![DeviceInfo {
        name: "default".to_owned(),
        description: "the system's default sound device".to_owned(),
        input: true,
        output: true,
    }];
    for device in devices {
        let Ok(id) = device.id() else { continue };
        if id.id() == "default" {
            continue;
        }
        list.push(DeviceInfo {
            name: id.id().to_owned(),
            description: device
                .description()
                .map(|d| d.name().to_owned())
                .unwrap_or_default(),
            input: device.supports_input(),
            output: device.supports_output(),
        });
    }
    Ok(list)
}

/// ALSA's own messages. alsa-lib prints them on stderr, before and besides Parlo's
/// errors: a machine without a sound card gets eight lines of `ALSA lib confmisc.c:855:
/// (parse_card) cannot find card '0'` and the like before the phone's one line. Parlo
/// keeps them instead, on the thread that opens or lists devices (cpal does both on the
/// calling thread): each goes to the debug log, and the first, which names the cause,
/// completes the error the sound system gave, if any.
#[cfg(target_os = "linux")]
mod alsa_messages {
    use crate::Error;

    /// Runs `f` with ALSA's messages of this thread kept, then logs them and adds the
    /// first to `f`'s [`Error::Sound`].
    pub(super) fn hushed<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        // alsa-lib's handler of this thread (its thread-local one, through the alsa
        // crate): it writes into a buffer, which a later call replaces. Without a buffer,
        // ALSA prints as before.
        let kept = alsa::Output::local_error_handler().ok();
        let result = f();
        let Some(kept) = kept else { return result };
        let text = kept.borrow().to_string();
        let messages: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for message in &messages {
            log::debug!("ALSA: {message}");
        }
        match (result, messages.first()) {
            (Err(Error::Sound { action, message }), Some(first)) => Err(Error::Sound {
                action,
                message: format!("{message} (ALSA: {})", cause(first)),
            }),
            (result, _) => result,
        }
    }

    /// The message without the name of the alsa-lib function that gave it: `parse_card:
    /// cannot find card '0'` is `cannot find card '0'`.
    fn cause(message: &str) -> &str {
        match message.split_once(": ") {
            Some((function, rest)) if !function.contains(' ') => rest,
            _ => message,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_cause_is_the_message_without_its_function() {
            assert_eq!(
                cause("parse_card: cannot find card '0'"),
                "cannot find card '0'"
            );
            assert_eq!(
                cause("snd_pcm_open_noupdate: Unknown PCM default"),
                "Unknown PCM default"
            );
            assert_eq!(cause("no function here: x"), "no function here: x");
        }

        #[test]
        fn alsas_message_completes_a_sound_error_and_stays_off_stderr() {
            let error = hushed(|| -> Result<(), Error> {
                // alsa-lib says `Unknown PCM parlo_no_such_pcm`, whatever its
                // configuration.
                let opened = alsa::PCM::new("parlo_no_such_pcm", alsa::Direction::Playback, false);
                assert!(opened.is_err());
                Err(Error::Sound {
                    action: "open \"parlo_no_such_pcm\"".to_owned(),
                    message: "no such device".to_owned(),
                })
            })
            .expect_err("still an error");
            let said = error.to_string();
            assert!(said.starts_with("cannot open \"parlo_no_such_pcm\": no such device (ALSA: "));
            assert!(said.contains("parlo_no_such_pcm)"), "{said}");
            assert_eq!(hushed(|| Ok(7)).ok(), Some(7));
        }
    }
}

/// Elsewhere cpal's sound system is not ALSA.
#[cfg(not(target_os = "linux"))]
mod alsa_messages {
    use crate::Error;

    pub(super) fn hushed<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        f()
    }
}

/// One sound device, as [`crate::devices`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The name `cpal:NAME` takes (on Linux, the ALSA PCM name).
    pub name: String,
    /// A human description, possibly empty.
    pub description: String,
    /// Whether it can capture.
    pub input: bool,
    /// Whether it can play.
    pub output: bool,
}

impl std::fmt::Display for DeviceInfo {
    /// `NAME  [in/out]  DESCRIPTION`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let directions = match (self.input, self.output) {
            (true, true) => "in/out",
            (true, false) => "in",
            (false, true) => "out",
            (false, false) => "-",
        };
        write!(f, "{}  [{directions}]", self.name)?;
        if !self.description.is_empty() {
            write!(f, "  {}", self.description.replace('\n', " "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::frame_queues;

    fn ramp(len: usize) -> Vec<i16> {
        (0..len).map(|i| (i % 30_000) as i16).collect()
    }

    #[test]
    fn callbacks_of_any_size_make_whole_frames_in_order() {
        // Up to a frame per callback (callbacks longer than a frame would underrun here,
        // since this loop echoes frame by frame).
        for chunk in [1, 100, 256, 333, 512] {
            let (device, mut lp) = frame_queues(Arc::new(|| {}));
            let (capture, playback) = device.split();
            let mut capture = Capture {
                end: capture,
                frame: SILENCE,
                filled: 0,
            };
            let mut playback = Playback {
                end: playback,
                frame: SILENCE,
                position: FRAME_SAMPLES,
            };
            let input = ramp(3 * FRAME_SAMPLES + 7);
            let mut played = Vec::new();
            let mut out = vec![0i16; chunk];
            for piece in input.chunks(chunk) {
                capture.on_data(piece);
                while let Some(frame) = lp.pop_captured() {
                    assert!(lp.push_playback(&frame));
                }
                playback.on_data(&mut out);
                played.extend_from_slice(&out);
            }
            for _ in 0..(4 * FRAME_SAMPLES / chunk + 1) {
                playback.on_data(&mut out);
                played.extend_from_slice(&out);
            }
            // Three whole frames were captured (the 7 extra samples wait for more), and
            // they are played in order after the silence of the first underruns.
            assert_eq!(lp.stats().captured, 3, "chunk {chunk}");
            let start = played
                .iter()
                .position(|&s| s != 0)
                .map(|p| p - 1)
                .unwrap_or_else(|| panic!("chunk {chunk}: nothing played"));
            assert_eq!(start % FRAME_SAMPLES, 0, "chunk {chunk}");
            assert!(
                played[start..start + 3 * FRAME_SAMPLES] == input[..3 * FRAME_SAMPLES],
                "chunk {chunk}: played out of order"
            );
        }
    }

    #[test]
    fn audio_handle_can_move_to_the_loop_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<crate::Audio>();
        assert_send::<Streams>();
    }
}
