//! Conference benchmarks: real `parlo-client` phones in real conferences on loopback,
//! measured from outside, next to a two-party call. Prints, for each scenario, a table
//! and how its figures were taken:
//!
//! - CPU and memory of each phone with the file device (CPU seconds per second from
//!   `/proc/PID/stat`, RSS and peak RSS from `/proc/PID/status`), in a two-party call and
//!   in conferences of 3, 5 and 8 members, every member speaking a tone of its own;
//! - media bandwidth of each phone: the media packets it sent and received over the
//!   measure (its `status` counters, every leg) times the size of one media datagram;
//! - mouth-to-ear latency between two members of a 5-member conference: one member
//!   speaks an impulse train (one identifiable sample a second), the others silence, and
//!   the impulses are looked for in what each other member played.
//!
//! Run it through `bench/conference.sh` (release build). `--help` lists the settings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parlo_tests::call_audio::{
    find_impulses, impulses, mouth_to_ear_ms, parse_rfc3339, process_usage,
};
use parlo_tests::capture::tone;
use parlo_tests::conference::{TONE_DBFS, wait_complete};
use parlo_tests::measure::{mb, percentile, status_kb};
use parlo_tests::phone_harness::{Event, Phone, SAMPLE_RATE, read_wav, write_wav};
use parlo_tests::server_harness::{Server, TempDir};

const HELP: &str = "\
conference: Parlo conference benchmarks (CPU, memory and bandwidth per phone in a call and
in conferences of several sizes, mouth-to-ear latency in a 5-member conference), with real
phones on loopback.

USAGE: conference [--seconds N] [--sizes LIST] [--latency-seconds N] [--security MODE]
                  [--only NAME]

    --seconds N           how long each scenario is measured [20]
    --sizes LIST          conference sizes, members, comma separated, 3 to 8 [3,5,8]
    --latency-seconds N   length of the latency measure [20]
    --security MODE       the phones' --security: required (encrypted legs), preferred,
                          off [required]
    --only NAME           run one scenario: call, conf-K (K members), latency
";

/// The members' names, in the order they join.
const NAMES: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];

/// How long a conference may take to form.
const FORMING: Duration = Duration::from_secs(30);

struct Settings {
    seconds: u64,
    sizes: Vec<usize>,
    latency_seconds: u64,
    security: String,
    only: Option<String>,
}

fn settings() -> Result<Settings, lexopt::Error> {
    use lexopt::prelude::*;
    let mut s = Settings {
        seconds: 20,
        sizes: vec![3, 5, 8],
        latency_seconds: 20,
        security: "required".into(),
        only: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("seconds") => s.seconds = parser.value()?.parse()?,
            Long("sizes") => {
                let text = parser.value()?.string()?;
                s.sizes = Vec::new();
                for item in text.split(',') {
                    let size: usize = item.trim().parse().map_err(|_| {
                        lexopt::Error::from(format!("--sizes: {item:?} is not a number"))
                    })?;
                    if !(3..=NAMES.len()).contains(&size) {
                        return Err(format!("--sizes: {size} is not from 3 to 8").into());
                    }
                    s.sizes.push(size);
                }
            }
            Long("latency-seconds") => s.latency_seconds = parser.value()?.parse()?,
            Long("security") => s.security = parser.value()?.string()?,
            Long("only") => s.only = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(s)
}

/// The media packets a phone's `status` says it sent and received: the sum of its
/// legs' `leg.NAME.sent=` and `leg.NAME.received=` counts, or the call's own `sent=` and
/// `received=` when it lists no leg.
fn media_packets(status: &Event) -> (u64, u64) {
    let (mut sent, mut received, mut legs) = (0u64, 0u64, false);
    for word in status.line.split(' ') {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let Some((_, counter)) = key.strip_prefix("leg.").and_then(|k| k.rsplit_once('.')) else {
            continue;
        };
        let count = value.parse::<u64>().unwrap_or(0);
        match counter {
            "sent" => sent += count,
            "received" => received += count,
            _ => continue,
        }
        legs = true;
    }
    if legs {
        (sent, received)
    } else {
        (
            status.number("sent").unwrap_or(0),
            status.number("received").unwrap_or(0),
        )
    }
}

/// When a phone's audio device started: its first `media with ...` log line (each leg
/// logs one as it starts; the first leg starts the device).
fn device_start(stderr: &[String]) -> Option<f64> {
    stderr
        .iter()
        .find(|l| l.contains("] media with "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(parse_rfc3339)
}

/// The size of one media datagram (UDP payload) of a frame: RTP (12 bytes of header) and
/// 512 samples, 2 bytes each in L16, 1 in PCMU; encrypted, 25 bytes more (type, counter,
/// tag).
fn datagram_bytes(codec: &str, encrypted: bool) -> u64 {
    let payload = if codec == "PCMU" { 512 } else { 1024 };
    12 + payload + if encrypted { 25 } else { 0 }
}

/// One phone's figures over a scenario.
struct Usage {
    who: String,
    cpu_per_s: f64,
    rss_kb: u64,
    peak_kb: u64,
    sent_bps: f64,
    received_bps: f64,
    status: String,
}

/// `file:MIC,SPEAKER` in `dir` for `who`, its microphone holding `samples`.
fn device(dir: &Path, who: &str, samples: &[i16]) -> (String, PathBuf) {
    let mic = dir.join(format!("{who}-mic.wav"));
    let speaker = dir.join(format!("{who}-speaker.wav"));
    write_wav(&mic, samples);
    (
        format!("file:{},{}", mic.display(), speaker.display()),
        speaker,
    )
}

/// Starts `mics.len()` phones (the first without auto-answer) and connects them: a call
/// for two, a conference for more. Returns the phones and their speakers' files.
fn gather(
    server: &Server,
    dir: &TempDir,
    mics: &[Vec<i16>],
    security: &str,
) -> (Vec<Phone>, Vec<PathBuf>) {
    let mut phones = Vec::new();
    let mut speakers = Vec::new();
    for (i, mic) in mics.iter().enumerate() {
        let (spec, speaker) = device(dir.path(), NAMES[i], mic);
        let mut builder = Phone::builder(NAMES[i])
            .server(server)
            .audio(spec)
            .security(security)
            .log_level("info");
        if i > 0 {
            builder = builder.auto_answer();
        }
        phones.push(Phone::start_registered(builder));
        speakers.push(speaker);
    }
    if phones.len() == 2 {
        phones[0].send("call bob");
        let connected = phones[0].expect_event("connected");
        phones[1].expect_event("connected");
        println!("  {connected}");
    } else {
        let others = NAMES[1..phones.len()].join(" ");
        phones[0].send(&format!("conf {others}"));
        let refs: Vec<&Phone> = phones.iter().collect();
        let id = wait_complete(&refs, FORMING);
        println!("  conference {id}: {} members, every leg up", phones.len());
    }
    (phones, speakers)
}

/// The codec of the first `connected` or `conference` leg a phone reported, L16 unless
/// it says otherwise.
fn codec_of(phone: &Phone) -> String {
    phone
        .events()
        .iter()
        .find_map(|e| e.field("codec"))
        .unwrap_or_else(|| "L16".into())
}

/// `size` phones (2: a call), each speaking a tone of its own, measured over `seconds`.
fn usage(size: usize, seconds: u64, security: &str) -> Vec<Usage> {
    let dir = TempDir::new(&format!("bench-conf-{size}"));
    let server = Server::start(&[]);
    let mics: Vec<Vec<i16>> = (0..size)
        .map(|i| tone(300.0 + 150.0 * i as f64, TONE_DBFS, seconds as f64 + 30.0))
        .collect();
    let (mut phones, _) = gather(&server, &dir, &mics, security);
    // A second for every leg's jitter buffer to settle.
    std::thread::sleep(Duration::from_secs(1));
    let pids: Vec<u32> = phones.iter().map(Phone::pid).collect();
    let counters_before: Vec<(u64, u64)> = phones
        .iter_mut()
        .map(|p| media_packets(&p.status()))
        .collect();
    let before: Vec<(f64, u64)> = pids
        .iter()
        .map(|&p| process_usage(p).expect("/proc of a running phone"))
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after: Vec<(f64, u64)> = pids
        .iter()
        .map(|&p| process_usage(p).expect("/proc of a running phone"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let encrypted = security != "off";
    let mut figures = Vec::new();
    for (i, phone) in phones.iter_mut().enumerate() {
        let status = phone.status();
        let (sent, received) = media_packets(&status);
        let bytes = datagram_bytes(&codec_of(phone), encrypted) as f64;
        figures.push(Usage {
            who: phone.name.clone(),
            cpu_per_s: (after[i].0 - before[i].0) / elapsed,
            rss_kb: after[i].1,
            peak_kb: status_kb(pids[i], "VmHWM"),
            sent_bps: sent.saturating_sub(counters_before[i].0) as f64 * bytes / elapsed,
            received_bps: received.saturating_sub(counters_before[i].1) as f64 * bytes / elapsed,
            status: status.to_string(),
        });
    }
    for phone in &mut phones {
        phone.send("quit");
    }
    for phone in &mut phones {
        phone.wait();
    }
    figures
}

fn report_usage(name: &str, figures: &[Usage], seconds: u64) {
    println!("{name}: {} phones, {seconds} s measured", figures.len());
    println!(
        "  | phone | CPU-s/s | RSS MB | peak RSS MB | sent kB/s | received kB/s |\n  | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for u in figures {
        println!(
            "  | {} | {:.4} | {:.2} | {:.2} | {:.1} | {:.1} |",
            u.who,
            u.cpu_per_s,
            mb(u.rss_kb),
            mb(u.peak_kb),
            u.sent_bps / 1000.0,
            u.received_bps / 1000.0
        );
    }
    let n = figures.len() as f64;
    let mean = |f: &dyn Fn(&Usage) -> f64| figures.iter().map(f).sum::<f64>() / n;
    println!(
        "  | mean | {:.4} | {:.2} | {:.2} | {:.1} | {:.1} |",
        mean(&|u| u.cpu_per_s),
        mean(&|u| mb(u.rss_kb)),
        mean(&|u| mb(u.peak_kb)),
        mean(&|u| u.sent_bps / 1000.0),
        mean(&|u| u.received_bps / 1000.0)
    );
    for u in figures {
        println!("    {}: {}", u.who, u.status);
    }
}

/// Five members; bob speaks an impulse a second, the others silence. Each other
/// member's recording is searched for bob's impulses (the mix is a plain sum, and the
/// others are silent, so each impulse keeps its exact value).
fn latency(seconds: u64, security: &str) {
    const SIZE: usize = 5;
    const TALKER: usize = 1;
    let dir = TempDir::new("bench-conf-latency");
    let server = Server::start(&[]);
    let samples = seconds as usize * SAMPLE_RATE as usize;
    let (train, marks) = impulses(samples, SAMPLE_RATE as usize);
    let mics: Vec<Vec<i16>> = (0..SIZE)
        .map(|i| {
            if i == TALKER {
                train.clone()
            } else {
                vec![0; samples]
            }
        })
        .collect();
    let (mut phones, speakers) = gather(&server, &dir, &mics, security);
    // The whole train, and the last impulse's way through the pipeline.
    std::thread::sleep(Duration::from_secs(seconds) + Duration::from_millis(1500));
    for phone in &mut phones {
        phone.send("quit");
    }
    for phone in &mut phones {
        phone.wait();
    }
    let Some(talker_start) = device_start(&phones[TALKER].stderr_lines()) else {
        println!("  {} logged no media start: no latency", NAMES[TALKER]);
        return;
    };
    println!(
        "latency: {SIZE} members, {} speaks an impulse a second for {seconds} s, the \
         others silence",
        NAMES[TALKER]
    );
    for (i, phone) in phones.iter().enumerate() {
        if i == TALKER {
            continue;
        }
        let Some(start) = device_start(&phone.stderr_lines()) else {
            println!("  {}: logged no media start", phone.name);
            continue;
        };
        let base_ms = mouth_to_ear_ms(talker_start, 0, start, 0);
        let heard = read_wav(&speakers[i]);
        let found = find_impulses(&heard, &marks);
        let latencies: Vec<f64> = marks
            .iter()
            .zip(&found)
            .filter_map(|(&(at, _), m)| {
                m.map(|m| base_ms + (m as f64 - at as f64) * 1000.0 / f64::from(SAMPLE_RATE))
            })
            .collect();
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "  {} → {}: mouth-to-ear over {} of {} impulses: min {:.0} ms, median {:.0} ms, \
             p90 {:.0} ms, max {:.0} ms (device starts {:+.1} ms apart)",
            NAMES[TALKER],
            phone.name,
            latencies.len(),
            marks.len(),
            percentile(&sorted, 0.0),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 1.0),
            base_ms
        );
    }
}

fn main() {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("conference: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let wanted = |name: &str| s.only.as_deref().is_none_or(|o| o == name);
    println!(
        "phones: --security {}, file device, L16 unless a phone says otherwise; bandwidth: \
         media packets counted by each phone's status (every leg) × the datagram size \
         (UDP payload: {} bytes a frame encrypted, {} in the clear; IP and UDP headers, \
         28 bytes, not counted), signalling not counted",
        s.security,
        datagram_bytes("L16", true),
        datagram_bytes("L16", false)
    );
    if wanted("call") {
        let figures = usage(2, s.seconds, &s.security);
        report_usage("call (two parties)", &figures, s.seconds);
    }
    for &size in &s.sizes {
        let name = format!("conf-{size}");
        if wanted(&name) {
            let figures = usage(size, s.seconds, &s.security);
            report_usage(&format!("conference of {size}"), &figures, s.seconds);
        }
    }
    if wanted("latency") {
        latency(s.latency_seconds, &s.security);
    }
}
