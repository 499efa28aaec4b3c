//! Call benchmarks: real `parlo-client` phones in real calls on loopback, measured from
//! outside. Prints, for each scenario, the figures and how they were taken:
//!
//! - CPU and memory of each phone in a call with the file device (CPU seconds per second
//!   of call from `/proc/PID/stat`, RSS and peak RSS from `/proc/PID/status`);
//! - mouth-to-ear latency with an impulse train (one identifiable sample a second) on the
//!   file path and on the cpal path (JACK dummy servers), clean and through the impaired
//!   link;
//! - quality under impairment: segmental SNR of a speech-like signal, frames heard
//!   sample-exact, and the latency at the start and the end of the call (its drift).
//!
//! Run it through `bench/call.sh` (release build). `--help` lists the settings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parlo_tests::call_audio::{
    ImpairedLink, JackServer, Netem, Trace, alsa_file_config, find_impulses, impulses,
    jackd_installed, media_start, mouth_to_ear_ms, process_usage, read_raw, segmental_snr,
    write_raw,
};
use parlo_tests::measure::{mb, percentile, status_kb};
use parlo_tests::phone_harness::{
    FRAME_SAMPLES, Phone, SAMPLE_RATE, read_wav, speechlike, write_wav,
};
use parlo_tests::server_harness::{Server, TempDir};

const HELP: &str = "\
call: Parlo call benchmarks (CPU and memory per phone, mouth-to-ear latency, quality under
impairment), with real phones on loopback.

USAGE: call [--seconds N] [--impaired-seconds N] [--loss P] [--duplicate P] [--reorder P]
            [--delay MS] [--jitter MS] [--seed S] [--no-jack] [--only NAME]
            [--security MODE]

    --seconds N            length of the CPU/latency call on the file path [30]
    --impaired-seconds N   length of each call through the impaired link [24]
    --loss P               packet loss of the link, 0-1 [0.05]
    --duplicate P          packet duplication of the link, 0-1 [0.01]
    --reorder P            packet reordering of the link, 0-1 [0.01]
    --delay MS             one-way delay of the link [40]
    --jitter MS            uniform jitter of the link, +/- MS [30]
    --seed S               seed of the link's draws [5]
    --no-jack              skip the cpal/JACK scenarios
    --only NAME            run one scenario: file-clean, file-impaired, file-quality,
                           jack-clean, jack-impaired
    --security MODE        the phones' --security: required (encrypted calls), off (in
                           the clear) [required]
";

struct Settings {
    seconds: u64,
    impaired_seconds: u64,
    netem: Netem,
    jack: bool,
    only: Option<String>,
    security: String,
}

fn settings() -> Result<Settings, lexopt::Error> {
    use lexopt::prelude::*;
    let mut s = Settings {
        seconds: 30,
        impaired_seconds: 24,
        netem: Netem {
            loss: 0.05,
            duplicate: 0.01,
            reorder: 0.01,
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(30),
            seed: 5,
        },
        jack: true,
        only: None,
        security: "required".into(),
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("seconds") => s.seconds = parser.value()?.parse()?,
            Long("impaired-seconds") => s.impaired_seconds = parser.value()?.parse()?,
            Long("loss") => s.netem.loss = parser.value()?.parse()?,
            Long("duplicate") => s.netem.duplicate = parser.value()?.parse()?,
            Long("reorder") => s.netem.reorder = parser.value()?.parse()?,
            Long("delay") => s.netem.delay = Duration::from_millis(parser.value()?.parse()?),
            Long("jitter") => s.netem.jitter = Duration::from_millis(parser.value()?.parse()?),
            Long("seed") => s.netem.seed = parser.value()?.parse()?,
            Long("no-jack") => s.jack = false,
            Long("only") => s.only = Some(parser.value()?.string()?),
            Long("security") => s.security = parser.value()?.string()?,
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(s)
}

#[derive(Clone, Copy, PartialEq)]
enum Signal {
    /// One identifiable sample a second.
    Impulses,
    /// The speech-like signal of the tests.
    Speech,
}

/// One scenario: a call from alice to bob (auto-answer) and what each said and heard.
struct Call {
    name: &'static str,
    seconds: u64,
    jack: bool,
    netem: Option<Netem>,
    signal: Signal,
}

/// One direction of a finished call.
struct Direction {
    what: &'static str,
    said: Vec<i16>,
    heard: Vec<i16>,
    /// Milliseconds between the talker's and the listener's device starts: a sample at
    /// the same index in both files has this mouth-to-ear latency.
    base_ms: f64,
}

/// CPU and memory of one phone over the call.
struct Usage {
    who: &'static str,
    cpu_per_s: f64,
    rss_kb: u64,
    peak_kb: u64,
    /// RSS by kind: private memory, mapped files, shared memory (JACK's segments).
    anon_kb: u64,
    file_kb: u64,
    shmem_kb: u64,
    status: String,
}

struct Outcome {
    directions: Vec<Direction>,
    usage: Vec<Usage>,
    link: Option<String>,
}

fn run(call: &Call, security: &str) -> Outcome {
    let dir = TempDir::new(call.name);
    let samples = call.seconds as usize * SAMPLE_RATE as usize;
    let (said_a, said_b) = match call.signal {
        Signal::Impulses => (
            impulses(samples, SAMPLE_RATE as usize).0,
            impulses(samples, SAMPLE_RATE as usize).0,
        ),
        Signal::Speech => (speechlike(samples, 31), speechlike(samples, 42)),
    };
    let pid = std::process::id();
    let mut jacks = Vec::new();
    let mut devices = Vec::new();
    let mut speakers: Vec<PathBuf> = Vec::new();
    for (who, said) in [("alice", &said_a), ("bob", &said_b)] {
        let sub = dir.path().join(who);
        std::fs::create_dir_all(&sub).expect("a directory per phone");
        if call.jack {
            let mic = sub.join("mic.raw");
            let speaker = sub.join("speaker.raw");
            write_raw(&mic, said);
            let config = alsa_file_config(&sub, &mic, &speaker);
            jacks.push(JackServer::start(&format!("parlo-bench-{who}-{pid}")));
            devices.push(("cpal".to_owned(), Some(config)));
            speakers.push(speaker);
        } else {
            let mic = sub.join("mic.wav");
            let speaker = sub.join("speaker.wav");
            write_wav(&mic, said);
            devices.push((
                format!("file:{},{}", mic.display(), speaker.display()),
                None,
            ));
            speakers.push(speaker);
        }
    }
    let server = Server::start(&[]);
    let start_phone = |name: &str, index: usize, answer: bool, pin: Option<(&str, String)>| {
        let (device, config) = &devices[index];
        if let Some(config) = config {
            // SAFETY: the benchmark's only thread that touches the environment is this
            // one (the harness's reader threads only read pipes); each phone inherits
            // the environment at spawn.
            unsafe {
                std::env::set_var("ALSA_CONFIG_PATH", config);
                std::env::set_var("JACK_DEFAULT_SERVER", &jacks[index].name);
                std::env::set_var("JACK_NO_START_SERVER", "1");
            }
        }
        let mut builder = Phone::builder(name)
            .server(&server)
            .audio(device.clone())
            .security(security)
            .log_level("info");
        if answer {
            builder = builder.auto_answer();
        }
        if let Some((name, key)) = pin {
            builder = builder.pin(name, &key);
        }
        Phone::start_registered(builder)
    };
    let mut bob = start_phone("bob", 1, true, None);
    let link = call
        .netem
        .map(|netem| ImpairedLink::start("bob-far", &server, bob.addr, netem));
    // The link registers its name without a key: alice knows bob's key for it.
    let pin = link.as_ref().map(|_| ("bob-far", bob.public_key()));
    let mut alice = start_phone("alice", 0, false, pin);
    alice.send(if link.is_some() {
        "call bob-far"
    } else {
        "call bob"
    });
    let connected = alice.expect_event("connected");
    bob.expect_event("connected");
    println!("  {connected}");
    let pids = [alice.pid(), bob.pid()];
    let before: Vec<(f64, u64)> = pids
        .iter()
        .map(|&p| process_usage(p).expect("/proc of a running phone"))
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(call.seconds));
    let after: Vec<(f64, u64)> = pids
        .iter()
        .map(|&p| process_usage(p).expect("/proc of a running phone"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    // The end of the signal is still in the pipeline: let it out before hanging up.
    std::thread::sleep(Duration::from_millis(1200));
    let mut usage = Vec::new();
    for (i, (who, phone)) in [("alice", &mut alice), ("bob", &mut bob)]
        .into_iter()
        .enumerate()
    {
        usage.push(Usage {
            who,
            cpu_per_s: (after[i].0 - before[i].0) / elapsed,
            rss_kb: after[i].1,
            peak_kb: status_kb(pids[i], "VmHWM"),
            anon_kb: status_kb(pids[i], "RssAnon"),
            file_kb: status_kb(pids[i], "RssFile"),
            shmem_kb: status_kb(pids[i], "RssShmem"),
            status: phone.status().to_string(),
        });
    }
    alice.send("hangup");
    alice.expect_event("ended");
    bob.expect_event("ended");
    alice.quit();
    bob.quit();
    let link = link.map(|l| format!("{:?}", l.finish()));
    drop(jacks);
    let read = |p: &PathBuf| {
        if call.jack { read_raw(p) } else { read_wav(p) }
    };
    let start_a = media_start(&alice.stderr_lines()).expect("alice logs her media start");
    let start_b = media_start(&bob.stderr_lines()).expect("bob logs his media start");
    Outcome {
        directions: vec![
            Direction {
                what: "alice → bob",
                heard: read(&speakers[1]),
                said: said_a,
                base_ms: mouth_to_ear_ms(start_a, 0, start_b, 0),
            },
            Direction {
                what: "bob → alice",
                heard: read(&speakers[0]),
                said: said_b,
                base_ms: mouth_to_ear_ms(start_b, 0, start_a, 0),
            },
        ],
        usage,
        link,
    }
}

fn report_latency(d: &Direction) {
    let (_, marks) = impulses(d.said.len(), SAMPLE_RATE as usize);
    let found = find_impulses(&d.heard, &marks);
    let latencies: Vec<f64> = marks
        .iter()
        .zip(&found)
        .filter_map(|(&(at, _), heard)| {
            heard.map(|m| d.base_ms + (m as f64 - at as f64) * 1000.0 / f64::from(SAMPLE_RATE))
        })
        .collect();
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "  {}: mouth-to-ear over {} of {} impulses: min {:.0} ms, median {:.0} ms, p90 {:.0} \
         ms, max {:.0} ms; first {:.0} ms, last {:.0} ms (device starts {:+.1} ms apart)",
        d.what,
        latencies.len(),
        marks.len(),
        percentile(&sorted, 0.0),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 1.0),
        latencies.first().copied().unwrap_or(f64::NAN),
        latencies.last().copied().unwrap_or(f64::NAN),
        d.base_ms,
    );
}

fn report_quality(d: &Direction) {
    let trace = Trace::follow(&d.said, &d.heard);
    let frames = d.said.len() / FRAME_SAMPLES;
    let snr = segmental_snr(&d.said, &d.heard, &trace).unwrap_or(f64::NAN);
    let ms = |o: isize| d.base_ms + o as f64 * 1000.0 / f64::from(SAMPLE_RATE);
    let (start, end) = trace.start_and_end_offsets(10).unwrap_or((0, 0));
    let offsets: Vec<isize> = trace.offsets().iter().map(|&(_, o)| o).collect();
    println!(
        "  {}: segmental SNR {snr:.1} dB; {} of {frames} frames sample-exact ({:.1} %); \
         mouth-to-ear {:.0} ms at the start, {:.0} ms at the end (median of 10 frames), \
         range {:.0}-{:.0} ms",
        d.what,
        trace.exact(),
        100.0 * trace.exact() as f64 / frames as f64,
        ms(start),
        ms(end),
        ms(offsets.iter().copied().min().unwrap_or(0)),
        ms(offsets.iter().copied().max().unwrap_or(0)),
    );
}

fn report_usage(outcome: &Outcome, seconds: u64) {
    for u in &outcome.usage {
        println!(
            "  {}: CPU {:.4} CPU-s/s over {seconds} s of call; RSS {:.2} MB at the end, peak \
             {:.2} MB (private {:.2} MB, files {:.2} MB, shared memory {:.2} MB)",
            u.who,
            u.cpu_per_s,
            mb(u.rss_kb),
            mb(u.peak_kb),
            mb(u.anon_kb),
            mb(u.file_kb),
            mb(u.shmem_kb),
        );
        println!("    {}", u.status);
    }
    if let Some(link) = &outcome.link {
        println!("  link: {link}");
    }
}

fn main() {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("call: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let jack = s.jack && jackd_installed();
    if s.jack && !jack {
        println!("jackd is not installed: the cpal/JACK scenarios are skipped");
    }
    let netem = s.netem;
    let calls = [
        Call {
            name: "file-clean",
            seconds: s.seconds,
            jack: false,
            netem: None,
            signal: Signal::Impulses,
        },
        Call {
            name: "file-impaired",
            seconds: s.impaired_seconds,
            jack: false,
            netem: Some(netem),
            signal: Signal::Impulses,
        },
        Call {
            name: "file-quality",
            seconds: s.impaired_seconds,
            jack: false,
            netem: Some(netem),
            signal: Signal::Speech,
        },
        Call {
            name: "jack-clean",
            seconds: 12,
            jack: true,
            netem: None,
            signal: Signal::Impulses,
        },
        Call {
            name: "jack-impaired",
            seconds: s.impaired_seconds,
            jack: true,
            netem: Some(netem),
            signal: Signal::Impulses,
        },
    ];
    println!("phones: --security {}", s.security);
    println!(
        "impaired link: loss {:.1} %, duplicate {:.1} %, reorder {:.1} %, delay {} ms ± {} ms \
         (uniform), seed {}, both directions",
        netem.loss * 100.0,
        netem.duplicate * 100.0,
        netem.reorder * 100.0,
        netem.delay.as_millis(),
        netem.jitter.as_millis(),
        netem.seed
    );
    for call in &calls {
        if s.only.as_deref().is_some_and(|o| o != call.name) || (call.jack && !jack) {
            continue;
        }
        println!(
            "{}: {} s call, {} device, {}, {}",
            call.name,
            call.seconds,
            if call.jack {
                "cpal (JACK dummy)"
            } else {
                "file"
            },
            if call.netem.is_some() {
                "impaired link"
            } else {
                "direct on loopback"
            },
            match call.signal {
                Signal::Impulses => "impulse a second",
                Signal::Speech => "speech-like signal",
            }
        );
        let outcome = run(call, &s.security);
        report_usage(&outcome, call.seconds);
        for d in &outcome.directions {
            match call.signal {
                Signal::Impulses => report_latency(d),
                Signal::Speech => report_quality(d),
            }
        }
    }
}
