//! Audio devices behind one handle, [`Audio`], chosen by a [`DeviceSpec`].
//!
//! | spec | capture (microphone) | playback (speaker) |
//! | --- | --- | --- |
//! | `cpal[:DEVICE]` | the sound card, on cpal's callback thread | the sound card |
//! | `file:IN.wav[,OUT.wav]` | IN, then silence (and [`Audio::input_ended`]) | every frame played, into OUT |
//! | `tone[:HZ]` | a sine at HZ (default 440) | discarded |
//! | `null` | silence | discarded |
//!
//! The file, tone and null devices run on a thread of their own that ticks once per frame
//! (64 ms) on absolute deadlines (`start + k × 64 ms`), so they do not drift however late a
//! tick runs; a late thread catches up with back-to-back ticks. They behave like a sound
//! card whose input sample `i` is spoken and output sample `i` heard at `start + i / 8 kHz`:
//! tick `k` plays frame `k` (silence on underrun) and delivers the captured frame `k - 1`,
//! whose last sample has just been spoken; a microphone cannot hand over a frame sooner.
//! WAV files are 8 kHz mono 16-bit PCM; OUT is finalized when the device stops.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

pub use crate::cpal_device::DeviceInfo;
use crate::queue::{DeviceEnd, LoopEnd, QueueStats, Wake, frame_queues};
use crate::{Error, FRAME_DURATION, FRAME_SAMPLES, Frame, SAMPLE_RATE, SILENCE};

/// Frequency of `tone` without an argument, in Hz.
pub const DEFAULT_TONE_HZ: u32 = 440;
/// Peak amplitude of the `tone` device (about -6 dBFS).
const TONE_AMPLITUDE: f64 = 16_000.0;

/// Which audio device to use, as given to the phone's `--audio` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `cpal[:DEVICE]`: a sound device through cpal (ALSA); the default device without a
    /// name.
    Cpal {
        /// The device name as `devices()` lists it; `None` for the default.
        device: Option<String>,
    },
    /// `file:IN.wav[,OUT.wav]`: IN is the microphone (paced in real time), what is played
    /// goes to OUT. IN's name cannot contain a comma.
    File {
        /// The WAV file played as the microphone.
        input: PathBuf,
        /// The WAV file receiving what is played, if any.
        output: Option<PathBuf>,
    },
    /// `tone[:HZ]`: a sine wave as the microphone; playback discarded.
    Tone {
        /// Frequency in Hz, 1 to 3999.
        hz: u32,
    },
    /// `null`: silence as the microphone; playback discarded.
    Null,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec::Cpal { device: None }
    }
}

impl DeviceSpec {
    /// Parses a spec: `cpal[:DEVICE]`, `file:IN.wav[,OUT.wav]`, `tone[:HZ]` or `null`;
    /// `default` is `cpal:default`, the device `devices` lists under that name.
    pub fn parse(spec: &str) -> Result<DeviceSpec, Error> {
        let bad = |reason| Error::BadSpec {
            spec: spec.to_owned(),
            reason,
        };
        let (kind, arg) = match spec.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => (spec, None),
        };
        match (kind, arg) {
            ("null", None) => Ok(DeviceSpec::Null),
            ("null", Some(_)) => Err(bad("null takes no argument")),
            ("tone", None) => Ok(DeviceSpec::Tone {
                hz: DEFAULT_TONE_HZ,
            }),
            ("tone", Some(hz)) => match hz.parse::<u32>() {
                Ok(hz) if (1..SAMPLE_RATE / 2).contains(&hz) => Ok(DeviceSpec::Tone { hz }),
                _ => Err(bad(
                    "the tone frequency must be a whole number of hertz from 1 to 3999",
                )),
            },
            ("file", None) => Err(bad("a file device needs a WAV file: file:IN.wav[,OUT.wav]")),
            ("file", Some(files)) => {
                let (input, output) = match files.split_once(',') {
                    Some((input, output)) => (input, Some(output)),
                    None => (files, None),
                };
                if input.is_empty() {
                    return Err(bad(
                        "the input WAV file name is empty: file:IN.wav[,OUT.wav]",
                    ));
                }
                if output.is_some_and(str::is_empty) {
                    return Err(bad("the output WAV file name after ',' is empty"));
                }
                Ok(DeviceSpec::File {
                    input: PathBuf::from(input),
                    output: output.map(PathBuf::from),
                })
            }
            ("cpal", None) => Ok(DeviceSpec::Cpal { device: None }),
            // `devices` lists `default`: the name alone is taken as that sound device.
            ("default", None) => Ok(DeviceSpec::Cpal {
                device: Some("default".to_owned()),
            }),
            ("cpal", Some("")) => Err(bad("the device name after 'cpal:' is empty")),
            ("cpal", Some(name)) => Ok(DeviceSpec::Cpal {
                device: Some(name.to_owned()),
            }),
            _ => Err(Error::UnknownDevice {
                spec: spec.to_owned(),
            }),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        DeviceSpec::parse(s)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpal { device: None } => write!(f, "cpal"),
            DeviceSpec::Cpal { device: Some(name) } => write!(f, "cpal:{name}"),
            DeviceSpec::File {
                input,
                output: None,
            } => write!(f, "file:{}", input.display()),
            DeviceSpec::File {
                input,
                output: Some(output),
            } => write!(f, "file:{},{}", input.display(), output.display()),
            DeviceSpec::Tone { hz } => write!(f, "tone:{hz}"),
            DeviceSpec::Null => write!(f, "null"),
        }
    }
}

/// A running audio device and the loop's end of its queues.
///
/// Created by [`Audio::start`]; stopped by [`Audio::stop`] or on drop. Stopping joins the
/// device's thread (or closes its cpal streams) and finalizes a file device's OUT.
#[derive(Debug)]
pub struct Audio {
    end: LoopEnd,
    runner: Runner,
}

#[derive(Debug)]
enum Runner {
    Paced {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Result<(), Error>>,
    },
    Cpal(crate::cpal_device::Streams),
    Stopped,
}

impl Audio {
    /// Opens the device described by `spec` and starts it. All allocation happens here.
    ///
    /// `wake` is called from the device's thread after each captured frame (and on end of
    /// input or failure); see [`Wake`]. Errors (a missing or
    /// malformed WAV file, an unknown sound device, ...) are reported before any thread is
    /// left running.
    pub fn start(spec: &DeviceSpec, wake: Wake) -> Result<Audio, Error> {
        let (device_end, end) = frame_queues(wake);
        let runner = match spec {
            DeviceSpec::Null => spawn_paced(device_end, Source::Silence, Sink::Discard, "null")?,
            DeviceSpec::Tone { hz } => spawn_paced(
                device_end,
                Source::Tone(Tone::new(*hz)),
                Sink::Discard,
                "tone",
            )?,
            DeviceSpec::File { input, output } => {
                let source = Source::File(WavSource::open(input)?);
                let sink = match output {
                    Some(path) => Sink::File(WavSink::create(path)?),
                    None => Sink::Discard,
                };
                spawn_paced(device_end, source, sink, "file")?
            }
            DeviceSpec::Cpal { device } => Runner::Cpal(crate::cpal_device::Streams::start(
                device.as_deref(),
                device_end,
            )?),
        };
        Ok(Audio { end, runner })
    }

    /// The loop's end of queues whose device end the caller drives itself (from
    /// [`crate::frame_queues`]): no thread, no sound card. For tests and benchmarks that
    /// play the device's part at their own pace; [`Audio::stop`] has nothing to stop.
    pub fn from_queues(end: LoopEnd) -> Audio {
        Audio {
            end,
            runner: Runner::Stopped,
        }
    }

    /// Takes the oldest captured frame, if any. Drain until `None` on each wake.
    pub fn pop_captured(&mut self) -> Option<Frame> {
        self.end.pop_captured()
    }

    /// Queues a frame for playback; `false` if the queue was full (counted, frame dropped).
    pub fn push_playback(&mut self, frame: &Frame) -> bool {
        self.end.push_playback(frame)
    }

    /// Frames waiting in the playback queue.
    pub fn playback_queued(&self) -> usize {
        self.end.playback_queued()
    }

    /// When the device last took a frame to play; see [`LoopEnd::last_pop`].
    pub fn last_pop(&self) -> Option<Instant> {
        self.end.last_pop()
    }

    /// The queue counters: frames captured and played, overruns, underruns.
    pub fn stats(&self) -> QueueStats {
        self.end.stats()
    }

    /// Whether a file device has played all of its input (it now captures silence).
    pub fn input_ended(&self) -> bool {
        self.end.input_ended()
    }

    /// Whether the device failed or disappeared (media should end; [`Audio::stop`] says
    /// why when it can).
    pub fn failed(&self) -> bool {
        self.end.failed()
    }

    /// Stops the device, joins its thread and finalizes OUT. Returns the first error the
    /// device met while running (e.g. writing OUT failed).
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.runner, Runner::Stopped) {
            Runner::Paced { stop, thread } => {
                stop.store(true, Ordering::Release);
                thread.thread().unpark();
                thread.join().map_err(|_| Error::ThreadPanicked)?
            }
            Runner::Cpal(streams) => streams.stop(),
            Runner::Stopped => Ok(()),
        }
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        // Errors were the caller's to collect through `stop`; dropping only cleans up.
        let _ = self.shutdown();
    }
}

fn spawn_paced(end: DeviceEnd, source: Source, sink: Sink, kind: &str) -> Result<Runner, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name(format!("parlo-audio-{kind}"))
        .spawn(move || run_paced(end, source, sink, &stop_flag))
        .map_err(Error::Thread)?;
    Ok(Runner::Paced { stop, thread })
}

/// The paced device loop: one playback and one capture frame per tick, ticks on absolute
/// deadlines. Tick `k` (at `start + k × 64 ms`) delivers the frame captured over the tick
/// before and starts playing frame `k`.
fn run_paced(
    mut end: DeviceEnd,
    mut source: Source,
    mut sink: Sink,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut captured = SILENCE;
    let mut played = SILENCE;
    let mut first_error = None;
    let mut tick: u32 = 0;
    'ticks: loop {
        if tick > 0 {
            match source.fill(&mut captured) {
                Ok(Fill::Data) => {}
                Ok(Fill::Ended) => end.signal_input_ended(),
                Err(e) => {
                    first_error.get_or_insert(e);
                    end.signal_input_ended();
                    end.signal_failure();
                }
            }
            end.push_captured(&captured);
        }
        end.pop_playback(&mut played);
        if first_error.is_none() {
            if let Err(e) = sink.write(&played) {
                first_error = Some(e);
                end.signal_failure();
            }
        }
        tick = tick.wrapping_add(1);
        let deadline = start + FRAME_DURATION * tick;
        loop {
            if stop.load(Ordering::Acquire) {
                break 'ticks;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            thread::park_timeout(deadline - now);
        }
    }
    let finished = sink.finish();
    match first_error {
        Some(e) => Err(e),
        None => finished,
    }
}

enum Fill {
    /// The frame holds input (a last partial frame is padded with silence).
    Data,
    /// The input is exhausted; the frame is silence.
    Ended,
}

enum Source {
    Silence,
    Tone(Tone),
    File(WavSource),
}

impl Source {
    fn fill(&mut self, frame: &mut Frame) -> Result<Fill, Error> {
        match self {
            Source::Silence => {
                *frame = SILENCE;
                Ok(Fill::Data)
            }
            Source::Tone(tone) => {
                tone.fill(frame);
                Ok(Fill::Data)
            }
            Source::File(wav) => wav.fill(frame),
        }
    }
}

struct Tone {
    phase: f64,
    step: f64,
}

impl Tone {
    fn new(hz: u32) -> Tone {
        Tone {
            phase: 0.0,
            step: std::f64::consts::TAU * f64::from(hz) / f64::from(SAMPLE_RATE),
        }
    }

    fn fill(&mut self, frame: &mut Frame) {
        for sample in frame.iter_mut() {
            *sample = (self.phase.sin() * TONE_AMPLITUDE) as i16;
            self.phase += self.step;
            if self.phase >= std::f64::consts::TAU {
                self.phase -= std::f64::consts::TAU;
            }
        }
    }
}

struct WavSource {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    ended: bool,
}

impl WavSource {
    fn open(path: &Path) -> Result<WavSource, Error> {
        let format_error = |found: String| Error::WavFormat {
            path: path.to_owned(),
            found,
        };
        let file = File::open(path).map_err(|e| wav_error(path, "open", e.into()))?;
        let reader = match hound::WavReader::new(BufReader::new(file)) {
            Ok(reader) => reader,
            Err(hound::Error::FormatError(why @ ("no RIFF tag found" | "no WAVE tag found"))) => {
                return Err(format_error(format!("not a WAV file ({why})")));
            }
            Err(hound::Error::FormatError(why)) => {
                return Err(format_error(format!("a damaged WAV file ({why})")));
            }
            Err(hound::Error::Unsupported) => {
                return Err(format_error(
                    "a WAV file in a compressed encoding, not PCM".to_owned(),
                ));
            }
            // The file is open: hound's only reading error then (an `Other` one) is that
            // the file is too short for the header.
            Err(hound::Error::IoError(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::Other
                ) =>
            {
                return Err(format_error(
                    "not a WAV file (it ends before a WAV header would)".to_owned(),
                ));
            }
            Err(e) => return Err(wav_error(path, "read", e)),
        };
        let spec = reader.spec();
        if spec != wav_spec() {
            let channels = match spec.channels {
                1 => "mono".to_owned(),
                2 => "stereo".to_owned(),
                n => format!("{n} channels"),
            };
            let format = match spec.sample_format {
                hound::SampleFormat::Int => "PCM",
                hound::SampleFormat::Float => "float",
            };
            return Err(format_error(format!(
                "{} Hz, {channels}, {}-bit {format}",
                spec.sample_rate, spec.bits_per_sample
            )));
        }
        Ok(WavSource {
            path: path.to_owned(),
            reader,
            ended: false,
        })
    }

    fn fill(&mut self, frame: &mut Frame) -> Result<Fill, Error> {
        *frame = SILENCE;
        if self.ended {
            return Ok(Fill::Ended);
        }
        let mut filled = 0;
        for (slot, sample) in frame.iter_mut().zip(self.reader.samples::<i16>()) {
            match sample {
                Ok(sample) => {
                    *slot = sample;
                    filled += 1;
                }
                Err(e) => {
                    self.ended = true;
                    return Err(wav_error(&self.path, "read", e));
                }
            }
        }
        if filled == 0 {
            self.ended = true;
            return Ok(Fill::Ended);
        }
        Ok(Fill::Data)
    }
}

enum Sink {
    Discard,
    File(WavSink),
}

impl Sink {
    fn write(&mut self, frame: &Frame) -> Result<(), Error> {
        match self {
            Sink::Discard => Ok(()),
            Sink::File(wav) => wav.write(frame),
        }
    }

    fn finish(self) -> Result<(), Error> {
        match self {
            Sink::Discard => Ok(()),
            Sink::File(wav) => wav.finish(),
        }
    }
}

/// The recording. Into a file (or a new path), it is written to `OUT.partial` beside `OUT`
/// and renamed to `OUT` once finalized, so that `OUT` is always a whole WAV file (the
/// previous call's, until this one ends), whatever interrupts the call. Anything else
/// that is there already (a pipe, a device) is written to directly.
struct WavSink {
    path: PathBuf,
    /// Where the recording is written: `OUT.partial`, or `OUT` itself.
    partial: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
}

impl WavSink {
    fn create(path: &Path) -> Result<WavSink, Error> {
        let regular = std::fs::metadata(path).map_or(true, |found| found.is_file());
        let partial = if regular {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            PathBuf::from(partial)
        } else {
            path.to_owned()
        };
        let writer = hound::WavWriter::create(&partial, wav_spec())
            .map_err(|e| wav_error(&partial, "create", e))?;
        Ok(WavSink {
            path: path.to_owned(),
            partial,
            writer,
        })
    }

    fn write(&mut self, frame: &Frame) -> Result<(), Error> {
        for &sample in frame.iter() {
            self.writer
                .write_sample(sample)
                .map_err(|e| wav_error(&self.path, "write", e))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        self.writer
            .finalize()
            .map_err(|e| wav_error(&self.partial, "finalize", e))?;
        if self.partial == self.path {
            return Ok(());
        }
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::Wav {
            path: self.path,
            action: "move the finished recording into place as",
            message: e.to_string(),
        })
    }
}

/// The WAV format of every Parlo file: 8 kHz, mono, 16-bit PCM.
pub fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

fn wav_error(path: &Path, action: &'static str, e: hound::Error) -> Error {
    Error::Wav {
        path: path.to_owned(),
        action,
        message: e.to_string(),
    }
}

/// Checks that `path` is a WAV file the file device can play as its microphone (8 kHz
/// mono 16-bit PCM), starting nothing: what [`Audio::start`] would refuse at each call,
/// said when the phone starts.
pub fn check_input_wav(path: &Path) -> Result<(), Error> {
    WavSource::open(path).map(drop)
}

/// Lists the sound devices cpal can open; `cpal:NAME` takes their [`DeviceInfo::name`].
pub fn devices() -> Result<Vec<DeviceInfo>, Error> {
    crate::cpal_device::list()
}

const _: () = assert!(FRAME_SAMPLES == 512);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DeviceSpec {
        match DeviceSpec::parse(s) {
            Ok(spec) => spec,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn parse_error(s: &str) -> String {
        match DeviceSpec::parse(s) {
            Ok(spec) => panic!("{s:?} should not parse, got {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse("null"), DeviceSpec::Null);
        assert_eq!(parse("tone"), DeviceSpec::Tone { hz: 440 });
        assert_eq!(parse("tone:1000"), DeviceSpec::Tone { hz: 1000 });
        assert_eq!(parse("cpal"), DeviceSpec::Cpal { device: None });
        assert_eq!(
            parse("cpal:hw:0,0"),
            DeviceSpec::Cpal {
                device: Some("hw:0,0".into())
            }
        );
        assert_eq!(
            parse("file:in.wav"),
            DeviceSpec::File {
                input: "in.wav".into(),
                output: None
            }
        );
        assert_eq!(
            parse("file:/tmp/a b.wav,out/x.wav"),
            DeviceSpec::File {
                input: "/tmp/a b.wav".into(),
                output: Some("out/x.wav".into())
            }
        );
        assert_eq!(DeviceSpec::default(), DeviceSpec::Cpal { device: None });
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "null",
            "tone:440",
            "cpal",
            "cpal:hw:0,0",
            "file:a.wav",
            "file:a.wav,b.wav",
        ] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn rejects_bad_specs_with_clear_errors() {
        assert!(parse_error("").contains("unknown audio device"));
        assert!(parse_error("alsa").contains("expected cpal[:DEVICE], file:IN.wav"));
        assert!(parse_error("null:1").contains("null takes no argument"));
        assert!(parse_error("tone:0").contains("from 1 to 3999"));
        assert!(parse_error("tone:4000").contains("from 1 to 3999"));
        assert!(parse_error("tone:abc").contains("whole number"));
        assert!(parse_error("file").contains("needs a WAV file"));
        assert!(parse_error("file:").contains("input WAV file name is empty"));
        assert!(parse_error("file:,out.wav").contains("input WAV file name is empty"));
        assert!(parse_error("file:in.wav,").contains("output WAV file name"));
        assert!(parse_error("cpal:").contains("device name after 'cpal:' is empty"));
    }

    #[test]
    fn tone_is_continuous_across_frames() {
        let mut tone = Tone::new(1000);
        let mut a = SILENCE;
        let mut b = SILENCE;
        tone.fill(&mut a);
        tone.fill(&mut b);
        // 1000 Hz at 8 kHz repeats every 8 samples: frame b continues frame a's cycle.
        assert_eq!(a[504..512], b[0..8]);
        assert_eq!(a[0..8], b[0..8]);
        let peak = a.iter().map(|s| s.unsigned_abs()).max();
        assert_eq!(peak, Some(16_000));
    }

    #[test]
    fn default_is_the_sound_device_of_that_name() {
        assert_eq!(
            DeviceSpec::parse("default").expect("valid"),
            DeviceSpec::Cpal {
                device: Some("default".to_owned())
            }
        );
        assert_eq!(
            DeviceSpec::parse("default").expect("valid"),
            DeviceSpec::parse("cpal:default").expect("valid")
        );
    }
}
