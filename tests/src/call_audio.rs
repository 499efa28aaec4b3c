//! Audio measurements of real calls: JACK dummy servers and ALSA configurations for the
//! cpal path without a sound card, a seeded impairment link between two phones (loss,
//! duplication, reordering, delay with jitter: a [`Relay`] with only a [`Netem`]), and the
//! figures judged on what a phone played: alignment and its drift over a call, segmental
//! SNR, mouth-to-ear latency and the CPU and memory of a phone process.
//!
//! Latency needs one clock for both ends: each phone logs, with a wall-clock timestamp,
//! the moment its audio device starts (`media with ...`). Sample `n` of what a phone sends
//! entered its microphone at `start_A + n / 8000`; sample `m` of what the other played
//! left its speaker at `start_B + m / 8000`. Both devices run on a real-time clock from
//! that start, so the difference is the mouth-to-ear latency of the whole pipeline.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::phone_harness::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::relay::{Plan, Relay};
use crate::server_harness::Server;

/// Whether `jackd` can be run here (Debian's `jackd2`).
pub fn jackd_installed() -> bool {
    Command::new("jackd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A JACK server with the dummy driver at 8 kHz and 256-frame periods: the clock of one
/// phone's sound device. Stopped with SIGTERM on drop (a killed jackd leaves ~100 MB of
/// shared memory behind), and whatever it or its clients left in `/dev/shm` is removed.
#[derive(Debug)]
pub struct JackServer {
    child: Option<Child>,
    /// The server's name (`JACK_DEFAULT_SERVER` of its clients).
    pub name: String,
}

impl JackServer {
    /// Starts `jackd -n NAME -r -d dummy -r 8000 -p 256 -C 1 -P 1` and waits until it runs.
    /// If the thread that starts it dies without stopping it (a test process killed from
    /// outside), jackd gets SIGTERM and cleans up after itself.
    pub fn start(name: &str) -> JackServer {
        let mut command = Command::new("jackd");
        command
            .args([
                "-n", name, "-r", "-d", "dummy", "-r", "8000", "-p", "256", "-C", "1", "-P", "1",
            ])
            .env("JACK_NO_START_SERVER", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
        // async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run jackd ({e}): install Debian's jackd2 and libasound2-plugins")
        });
        let mut server = JackServer {
            child: Some(child),
            name: name.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = Command::new("jack_wait")
                .args(["-c", "-s", name])
                .output()
                .expect("jack_wait runs (jackd2 installs it)");
            // It prints "running" or "not running", and always exits 0.
            if String::from_utf8_lossy(&output.stdout).trim() == "running" {
                break;
            }
            if Instant::now() > deadline {
                server.stop();
                panic!("jackd {name} did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Stops the server cleanly: SIGTERM, then waits (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::server_harness::signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Clients still connected when the server stopped leave their semaphores behind.
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            let ours = format!("_{}_", self.name);
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(&ours) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

impl Drop for JackServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes an ALSA configuration (for `ALSA_CONFIG_PATH`) whose default PCM captures from
/// the raw file `input` and copies playback to the raw file `played` (S16_LE mono), at the
/// pace of a JACK server, through `plug` (format conversion to JACK's floats) over `jack`.
pub fn alsa_file_config(dir: &Path, input: &Path, played: &Path) -> PathBuf {
    let path = dir.join("asound.conf");
    let config = format!(
        r#"
pcm.jackslave {{
    type plug
    slave.pcm {{
        type jack
        playback_ports {{ 0 system:playback_1 }}
        capture_ports {{ 0 system:capture_1 }}
    }}
}}
pcm.!default {{
    type asym
    playback.pcm {{
        type file
        slave.pcm "jackslave"
        file "{played}"
        format "raw"
    }}
    capture.pcm {{
        type file
        slave.pcm "jackslave"
        file "/dev/null"
        infile "{input}"
        format "raw"
    }}
}}
"#,
        played = played.display(),
        input = input.display()
    );
    std::fs::write(&path, config).expect("the ALSA configuration can be written");
    path
}

/// Writes samples as raw S16_LE.
pub fn write_raw(path: &Path, samples: &[i16]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("the raw file can be written");
}

/// Reads raw S16_LE samples (a missing file reads as empty).
pub fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The impairment relay.

pub use crate::relay::{Netem, RelayReport as LinkReport, Rng, Traffic as Impaired};

/// The network between two phones, in user space (this kernel has no netem): a
/// [`Relay`] whose only plan is a [`Netem`]. Registered in the directory under a name of
/// its own with the address of its caller-facing socket, it forwards everything from
/// whoever calls that name to `callee` (from a second socket) and back, impairing the
/// media both ways.
#[derive(Debug)]
pub struct ImpairedLink {
    /// The address callers reach: what the directory gives for the link's name.
    pub addr: SocketAddr,
    relay: Relay,
}

impl ImpairedLink {
    /// Starts a link registered as `name` on `server`, forwarding to `callee`.
    pub fn start(name: &str, server: &Server, callee: SocketAddr, netem: Netem) -> ImpairedLink {
        let relay = Relay::start(name, server, callee, Plan::transparent().impaired(netem));
        ImpairedLink {
            addr: relay.addr,
            relay,
        }
    }

    /// Stops forwarding and says what was done.
    pub fn finish(self) -> LinkReport {
        self.relay.finish()
    }
}

// ---------------------------------------------------------------------------------------
// Measures on what was played.

/// Where each sent frame was found, sample-exact, in a recording.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// For each sent frame, its position in the recording, if it was found there.
    pub found: Vec<Option<usize>>,
}

impl Trace {
    /// Follows `sent` (cut in 512-sample frames) through `received`: the first frame found
    /// anywhere fixes the alignment; each next frame is looked for sample-exact within 16
    /// frames around where the last found one predicts it (the jitter buffer inserts and
    /// drops whole frames, but may land anywhere on the recording's sample grid after a
    /// device restart or a resampling device).
    pub fn follow(sent: &[i16], received: &[i16]) -> Trace {
        let frames: Vec<&[i16]> = sent.chunks_exact(FRAME_SAMPLES).collect();
        let mut found = vec![None; frames.len()];
        let mut anchor: Option<(usize, isize)> = None; // (frame, offset)
        for (k, frame) in frames.iter().enumerate() {
            if frame.iter().all(|&s| s == 0) {
                continue;
            }
            let hit = match anchor {
                None => received.windows(FRAME_SAMPLES).position(|w| w == *frame),
                Some((_, offset)) => {
                    let predicted = (k * FRAME_SAMPLES) as isize + offset;
                    let span = (16 * FRAME_SAMPLES) as isize;
                    let lo = (predicted - span).max(0) as usize;
                    let hi = ((predicted + span) as usize).min(received.len());
                    if lo + FRAME_SAMPLES > hi {
                        None
                    } else {
                        // Nearest to the prediction first.
                        let mut candidates: Vec<usize> = (lo..=hi - FRAME_SAMPLES).collect();
                        candidates.sort_by_key(|&p| (p as isize - predicted).unsigned_abs());
                        candidates
                            .into_iter()
                            .find(|&p| &received[p..p + FRAME_SAMPLES] == *frame)
                    }
                }
            };
            if let Some(p) = hit {
                found[k] = Some(p);
                anchor = Some((k, p as isize - (k * FRAME_SAMPLES) as isize));
            }
        }
        Trace { found }
    }

    /// Frames found.
    pub fn exact(&self) -> usize {
        self.found.iter().flatten().count()
    }

    /// The alignment offset (recording position − sent position, in samples) of each found
    /// frame, with the frame's index.
    pub fn offsets(&self) -> Vec<(usize, isize)> {
        self.found
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.map(|p| (k, p as isize - (k * FRAME_SAMPLES) as isize)))
            .collect()
    }

    /// The median offset of the first and of the last `n` frames found.
    pub fn start_and_end_offsets(&self, n: usize) -> Option<(isize, isize)> {
        let offsets = self.offsets();
        if offsets.len() < n {
            return None;
        }
        let median = |part: &[(usize, isize)]| {
            let mut v: Vec<isize> = part.iter().map(|&(_, o)| o).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        Some((median(&offsets[..n]), median(&offsets[offsets.len() - n..])))
    }
}

/// Segmental SNR of what was heard against what was sent, in dB: the mean over 20 ms
/// segments (160 samples) of each segment's SNR, each clamped to [-10, 35] dB (the usual
/// bounds, so that a perfect segment does not count as infinite, nor a silent one as
/// minus infinity). Every sent frame between the first and the last found is judged
/// where the most recent found frame says it should have been played: a lost frame is
/// judged against its concealment, a frame dropped by the jitter buffer against whatever
/// played in its place. Segments of sent near-silence (energy below -50 dBFS) are skipped.
pub fn segmental_snr(sent: &[i16], received: &[i16], trace: &Trace) -> Option<f64> {
    const SEGMENT: usize = 160;
    let first = trace.found.iter().position(Option::is_some)?;
    let last = trace.found.iter().rposition(Option::is_some)?;
    let mut offset = 0isize;
    let mut sum = 0.0;
    let mut count = 0usize;
    for k in first..=last {
        if let Some(p) = trace.found[k] {
            offset = p as isize - (k * FRAME_SAMPLES) as isize;
        }
        for s in 0..FRAME_SAMPLES / SEGMENT {
            let at = k * FRAME_SAMPLES + s * SEGMENT;
            let heard_at = at as isize + offset;
            if heard_at < 0 || heard_at as usize + SEGMENT > received.len() {
                continue;
            }
            let reference = &sent[at..at + SEGMENT];
            let heard = &received[heard_at as usize..heard_at as usize + SEGMENT];
            let signal: f64 = reference.iter().map(|&x| f64::from(x).powi(2)).sum();
            if signal / (SEGMENT as f64) < (32_768.0f64 * 10f64.powf(-50.0 / 20.0)).powi(2) {
                continue;
            }
            let noise: f64 = reference
                .iter()
                .zip(heard)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            let snr = if noise == 0.0 {
                35.0
            } else {
                (10.0 * (signal / noise).log10()).clamp(-10.0, 35.0)
            };
            sum += snr;
            count += 1;
        }
    }
    (count > 0).then(|| sum / count as f64)
}

/// The wall-clock time (seconds since the Unix epoch) at which a phone's audio device
/// started, read from its log line `<RFC 3339 time> [INFO] media with ...`; the last such
/// line if there were several calls.
pub fn media_start(stderr: &[String]) -> Option<f64> {
    stderr
        .iter()
        .rev()
        .find(|l| l.contains("] media with "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(parse_rfc3339)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as seconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// Mouth-to-ear latency, in milliseconds, of a sample sent at index `sent_index` by a phone
/// whose device started at `sender_start` and played at index `heard_index` by a phone
/// whose device started at `receiver_start` (see the module's documentation).
pub fn mouth_to_ear_ms(
    sender_start: f64,
    sent_index: usize,
    receiver_start: f64,
    heard_index: usize,
) -> f64 {
    let rate = f64::from(SAMPLE_RATE);
    ((receiver_start + heard_index as f64 / rate) - (sender_start + sent_index as f64 / rate))
        * 1000.0
}

/// An impulse train: silence with, every `every` samples (from `every / 2`), one sample
/// whose value identifies the impulse (1000 + 97·k, so no two are equal and none is a
/// faded copy's exact value). Returns the signal and the impulses' positions.
pub fn impulses(samples: usize, every: usize) -> (Vec<i16>, Vec<(usize, i16)>) {
    let mut signal = vec![0i16; samples];
    let mut marks = Vec::new();
    let mut k = 0i32;
    let mut at = every / 2;
    while at < samples {
        let value = (1000 + 97 * k).min(32_000) as i16;
        signal[at] = value;
        marks.push((at, value));
        k += 1;
        at += every;
    }
    (signal, marks)
}

/// Where each impulse was first heard (the first sample of exactly its value).
pub fn find_impulses(received: &[i16], marks: &[(usize, i16)]) -> Vec<Option<usize>> {
    marks
        .iter()
        .map(|&(_, value)| received.iter().position(|&s| s == value))
        .collect()
}

/// CPU time (user + system, seconds) and resident memory (kB) of a process, from /proc.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks as f64 / hz, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339("2026-11-25T20:41:21.5Z"),
            Some(1_795_639_281.5)
        );
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn a_trace_follows_inserted_and_dropped_frames() {
        let sent: Vec<i16> = (0..6 * FRAME_SAMPLES)
            .map(|i| (i % 30_011) as i16 + 1)
            .collect();
        let f = |k: usize| sent[k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES].to_vec();
        // 100 samples of lead-in, frames 0 1, a concealed frame, 2 3, frame 4 dropped, 5.
        let mut heard = vec![0i16; 100];
        for part in [f(0), f(1), vec![7; FRAME_SAMPLES], f(2), f(3), f(5)] {
            heard.extend(part);
        }
        let trace = Trace::follow(&sent, &heard);
        assert_eq!(trace.exact(), 5);
        assert_eq!(trace.found[4], None);
        assert_eq!(trace.start_and_end_offsets(1), Some((100, 100)));
        let offsets: Vec<isize> = trace.offsets().iter().map(|&(_, o)| o).collect();
        assert_eq!(offsets, vec![100, 100, 612, 612, 100]);
        let snr = segmental_snr(&sent, &heard, &trace).expect("judged");
        assert!(snr < 35.0 && snr > 20.0, "{snr}");
        assert_eq!(
            segmental_snr(
                &sent,
                &[vec![0; 100], sent.clone()].concat(),
                &Trace::follow(&sent, &[vec![0; 100], sent.clone()].concat())
            ),
            Some(35.0)
        );
    }
}
