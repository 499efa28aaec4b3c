//! End to end, two real phones on loopback:
//! - they negotiate PCMU and carry a sweep through it. Alice offers the default
//!   `L16,PCMU`; Bob, with `--codecs PCMU,L16 --auto-answer`, picks PCMU. Both announce
//!   `codec=PCMU`, `status` reports it, and the WAV Bob writes holds Alice's sweep as
//!   µ-law carries it: every sample a µ-law value, and close to the original (SNR
//!   measured at the best alignment);
//! - a sound device that fails mid-call ends the call cleanly and says why;
//! - a sound card that is not there stops the phone at start, exit 2.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{
    PATIENCE, Server, TempDir, loopback, wait_exit, workspace_binary,
};

const RATE: u32 = 8000;

fn write_wav(path: &Path, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&RATE.to_le_bytes());
    bytes.extend_from_slice(&(RATE * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write the WAV");
}

/// The samples of a 16-bit mono WAV (its `data` chunk, found by name).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("read the WAV");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if id == b"data" {
            let end = (at + 8 + len).min(bytes.len());
            return bytes[at + 8..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        }
        at += 8 + len + len % 2;
    }
    panic!("no data chunk in {}", path.display());
}

/// G.711 µ-law decoding (ITU-T G.711), to know which values µ-law can carry.
fn mulaw_decode(code: u8) -> i16 {
    let u = !code;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

struct Phone {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Phone {
    fn start(server: SocketAddr, name: &str, dir: &Path, flags: &[&str]) -> Phone {
        let output = dir.join(format!("{name}-out.wav"));
        Phone::start_with_output(server, name, dir, &output, flags)
    }

    fn start_with_output(
        server: SocketAddr,
        name: &str,
        dir: &Path,
        output: &Path,
        flags: &[&str],
    ) -> Phone {
        // A free UDP port on a fresh loopback address.
        let listen = UdpSocket::bind((loopback(), 0))
            .and_then(|s| s.local_addr())
            .expect("a free port");
        let input = dir.join("in.wav");
        let audio = format!("file:{},{}", input.display(), output.display());
        let mut child = Command::new(workspace_binary("parlo-client"))
            .args(["--server", &server.to_string(), "--name", name])
            .args(["--listen", &listen.to_string(), "--audio", &audio])
            .args(["--log-level", "warn"])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("parlo-client starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Phone {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the phone reads stdin");
    }

    /// The next line starting with `prefix` (others are skipped).
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn phones_negotiate_pcmu_and_the_sweep_arrives_mu_law_coded() {
    let server = Server::start(&[]);
    let dir = TempDir::new("pcmu-call");
    // 2 s of a sweep from 200 to 1,800 Hz at about -12 dBFS: unlike a steady tone, it
    // lines up with its recording at one lag only.
    let tone: Vec<i16> = (0..2 * RATE)
        .map(|n| {
            let t = f64::from(n) / f64::from(RATE);
            let phase = 2.0 * std::f64::consts::PI * (200.0 * t + 400.0 * t * t);
            (8000.0 * phase.sin()) as i16
        })
        .collect();
    write_wav(&dir.path().join("in.wav"), &tone);

    let mut alice = Phone::start(server.addr, "alice", dir.path(), &[]);
    let mut bob = Phone::start(
        server.addr,
        "bob",
        dir.path(),
        &["--auto-answer", "--codecs", "PCMU,L16"],
    );
    alice.expect("registered");
    bob.expect("registered");

    alice.send("call bob");
    let connected = alice.expect("connected");
    assert_eq!(field(&connected, "codec"), Some("PCMU"), "{connected}");
    let connected = bob.expect("connected");
    assert_eq!(field(&connected, "codec"), Some("PCMU"), "{connected}");

    // The sweep lasts 2 s; give it time to cross, with the jitter buffer's delay.
    std::thread::sleep(Duration::from_millis(2_800));
    // Frames bob's jitter buffer filled in itself (a fade, not µ-law values), should the
    // machine hold a phone up for more than a frame.
    let mut concealed = 0;
    for phone in [&mut alice, &mut bob] {
        phone.send("status");
        let status = phone.expect("status");
        concealed = field(&status, "concealed")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("concealed=");
        assert_eq!(field(&status, "codec"), Some("PCMU"), "{status}");
        let received: u64 = field(&status, "received")
            .and_then(|n| n.parse().ok())
            .expect("received=");
        assert!(received >= 30, "{status}");
        for key in [
            "jitter_ms",
            "capture_overruns",
            "playback_overruns",
            "underruns",
        ] {
            assert!(field(&status, key).is_some(), "no {key} in {status}");
        }
    }
    alice.send("hangup");
    alice.expect("ended");
    bob.expect("ended");
    alice.send("quit");
    bob.send("quit");
    for phone in [&mut alice, &mut bob] {
        let status = wait_exit(&mut phone.child, PATIENCE).expect("the phone quits");
        assert!(status.success(), "exit {status}");
    }

    let heard = read_wav(&dir.path().join("bob-out.wav"));
    let mulaw: std::collections::HashSet<i16> = (0..=255u8).map(mulaw_decode).collect();
    let nonzero: Vec<i16> = heard.iter().copied().filter(|&s| s != 0).collect();
    assert!(nonzero.len() > RATE as usize, "Bob heard almost nothing");
    let coded = nonzero.iter().filter(|s| mulaw.contains(s)).count();
    // Every sample decoded from the wire is a µ-law value; only concealed frames are not.
    let filled_in = concealed * 512;
    assert!(
        (coded + filled_in) * 100 >= nonzero.len() * 99,
        "only {coded} of {} samples are µ-law values ({concealed} frames concealed)",
        nonzero.len()
    );

    // Align on the sweep (the call's latency) and measure the SNR over 1 s of it.
    let window = &tone[RATE as usize / 2..RATE as usize * 3 / 2];
    let best = (0..heard.len().saturating_sub(window.len() + RATE as usize / 2))
        .map(|lag| {
            let part = &heard[lag + RATE as usize / 2..][..window.len()];
            let noise: f64 = window
                .iter()
                .zip(part)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            (lag, noise)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("Bob's recording is longer than the tone");
    let signal: f64 = window.iter().map(|&a| f64::from(a).powi(2)).sum();
    let snr = 10.0 * (signal / best.1.max(1.0)).log10();
    // The offset counts from the start of Bob's recording (his media starts as he
    // answers, before Alice's): a bound on the latency, not a measure of it.
    eprintln!(
        "PCMU call: the sweep starts {} samples ({} ms) into Bob's recording; SNR {snr:.1} dB",
        best.0,
        best.0 as u32 * 1000 / RATE
    );
    // µ-law on a -12 dBFS sine gives about 38 dB; far below that, something else broke.
    assert!(snr > 30.0, "SNR {snr:.1} dB");
}

#[test]
fn a_device_failing_mid_call_ends_the_call_and_says_why() {
    let server = Server::start(&[]);
    let dir = TempDir::new("device-fails");
    let sound: Vec<i16> = (0..2 * RATE).map(|n| (n % 100) as i16 * 50).collect();
    write_wav(&dir.path().join("in.wav"), &sound);

    let mut alice = Phone::start(server.addr, "alice", dir.path(), &[]);
    // Bob's received audio goes to /dev/full: writing it fails a few frames into the
    // call, once the WAV writer's buffer is flushed.
    let mut bob = Phone::start_with_output(
        server.addr,
        "bob",
        dir.path(),
        Path::new("/dev/full"),
        &["--auto-answer"],
    );
    alice.expect("registered");
    bob.expect("registered");
    alice.send("call bob");
    alice.expect("connected");
    bob.expect("connected");

    let error = bob.expect("error");
    eprintln!("Bob: {error}");
    assert!(error.contains("audio device"), "{error}");
    assert!(
        error.contains("/dev/full"),
        "the device problem is named: {error}"
    );
    assert!(error.contains("hanging up"), "{error}");
    let ended = bob.expect("ended");
    assert_eq!(field(&ended, "reason"), Some("hangup"), "{ended}");
    let ended = alice.expect("ended");
    assert_eq!(field(&ended, "reason"), Some("remote-hangup"), "{ended}");

    // Bob's phone stays up: called again, it answers, and fails again, as cleanly.
    bob.send("status");
    let status = bob.expect("status");
    assert!(
        matches!(field(&status, "state"), Some("idle" | "closing")),
        "{status}"
    );
    alice.send("call bob");
    alice.expect("connected");
    let error = bob.expect("error");
    assert!(error.contains("/dev/full"), "{error}");
    alice.expect("ended");
    alice.send("quit");
    bob.send("quit");
    let status = wait_exit(&mut alice.child, PATIENCE).expect("Alice quits");
    assert!(status.success(), "Alice: exit {status}");
    let status = wait_exit(&mut bob.child, PATIENCE).expect("Bob quits");
    assert_eq!(status.code(), Some(1), "a device error is exit 1 (warning)");
}

#[test]
fn a_missing_sound_card_is_a_clear_error_at_start() {
    let listen = UdpSocket::bind((loopback(), 0))
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let output = Command::new(workspace_binary("parlo-client"))
        .args(["--server", "127.0.0.1:10000", "--name", "alice"])
        .args([
            "--listen",
            &listen.to_string(),
            "--audio",
            "cpal:no-such-card",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("parlo-client runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no sound device named \"no-such-card\""),
        "{stderr}"
    );
    assert!(stderr.contains("parlo-client devices"), "a hint: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing started");
}
