//! Figures of a phone on loopback, measured against the real binaries (not a test):
//!
//! - call set-up time, dial -> connected, with an auto-answering callee (median of N calls);
//! - CPU and memory of one phone during a call with the file device;
//! - end-to-end latency of the file-to-file audio path (where the sent recording starts in
//!   the received one).
//!
//! `cargo run --release -p parlo-tests --example measure [-- CALLS [CALL_SECONDS [SECURITY]]]`
//! (defaults: 20 calls, a 30 s call, the phones' `--security required`: encrypted calls;
//! `off` for calls in the clear).

use std::time::{Duration, Instant};

use parlo_tests::phone_harness::{
    FRAME_SAMPLES, Phone, SAMPLE_RATE, align, read_wav, speechlike, walk_frames, write_wav,
};
use parlo_tests::server_harness::{Server, TempDir};

/// Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// Process figures read from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Proc {
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    switches: u64,
}

fn proc_figures(pid: u32) -> Proc {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Proc {
        cpu_ticks: field(11) + field(12),
        rss_kib: line("VmRSS:"),
        hwm_kib: line("VmHWM:"),
        threads: line("Threads:"),
        switches: line("voluntary_ctxt_switches:") + line("nonvoluntary_ctxt_switches:"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let call_seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let security = args.get(2).cloned().unwrap_or_else(|| "required".into());
    println!("phones with --security {security}");

    // 1. Set-up time.
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .security(&security)
            .log_level("warn"),
    );
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .security(&security)
            .auto_answer()
            .log_level("warn"),
    );
    let mut setup_ms = Vec::with_capacity(calls);
    for _ in 0..calls {
        alice.skip_unread();
        let dialed = Instant::now();
        alice.send("call bob");
        let connected = alice.expect_event("connected");
        setup_ms.push((connected.at - dialed).as_secs_f64() * 1000.0);
        bob.expect_event("connected");
        alice.send("hangup");
        alice.expect_event("ended");
        bob.expect_event("ended");
        // Let both phones finish closing before the next call.
        std::thread::sleep(Duration::from_millis(50));
    }
    setup_ms.sort_by(f64::total_cmp);
    println!(
        "call set-up, dial -> connected, auto-answer, loopback, {calls} calls: median {:.2} ms, \
         min {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        percentile(&setup_ms, 0.5),
        setup_ms[0],
        percentile(&setup_ms, 0.9),
        setup_ms[setup_ms.len() - 1]
    );
    drop(alice);
    drop(bob);

    // 2. A long call with the file device; 3. the latency of the file-to-file path. New
    // phones, with keys of their own: a server of their own (the first one binds the names
    // to the first phones' keys).
    let server = Server::start(&[]);
    let dir = TempDir::new("measure");
    // A second shorter than the call, so that all of it has arrived when the call ends.
    let says = speechlike(
        (call_seconds.saturating_sub(1).max(1) as usize) * SAMPLE_RATE as usize,
        5,
    );
    let silence = vec![0i16; SAMPLE_RATE as usize];
    let alice_in = dir.path().join("alice-says.wav");
    let bob_in = dir.path().join("bob-says.wav");
    let bob_out = dir.path().join("bob-hears.wav");
    write_wav(&alice_in, &says);
    write_wav(&bob_in, &silence);
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .security(&security)
            .audio(format!("file:{}", alice_in.display()))
            .log_level("warn"),
    );
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .security(&security)
            .audio(format!("file:{},{}", bob_in.display(), bob_out.display()))
            .auto_answer()
            .log_level("warn"),
    );
    let idle = proc_figures(alice.pid());
    alice.send("call bob");
    alice.expect_event("connected");
    bob.expect_event("connected");
    let start = Instant::now();
    let a0 = proc_figures(alice.pid());
    let b0 = proc_figures(bob.pid());
    let mut a_peak = a0;
    while start.elapsed() < Duration::from_secs(call_seconds) {
        std::thread::sleep(Duration::from_millis(500));
        let now = proc_figures(alice.pid());
        a_peak.rss_kib = a_peak.rss_kib.max(now.rss_kib);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let a1 = proc_figures(alice.pid());
    let b1 = proc_figures(bob.pid());
    let status_a = alice.status();
    let status_b = bob.status();
    alice.send("hangup");
    alice.expect_event("ended");
    bob.expect_event("ended");
    for (who, before, after) in [("caller (alice)", a0, a1), ("callee (bob)", b0, b1)] {
        let cpu = (after.cpu_ticks - before.cpu_ticks) as f64 / TICKS;
        println!(
            "{who}, {elapsed:.1} s call, file device: CPU {cpu:.2} s = {:.3} CPU-s/s ({:.2} %), \
             RSS {} KiB (peak {} KiB), {} threads, {:.0} context switches/s",
            cpu / elapsed,
            100.0 * cpu / elapsed,
            after.rss_kib,
            after.hwm_kib,
            after.threads,
            (after.switches - before.switches) as f64 / elapsed
        );
    }
    println!(
        "caller before the call: RSS {} KiB, {} threads",
        idle.rss_kib, idle.threads
    );
    println!("caller status at the end: {}", status_a.line);
    println!("callee status at the end: {}", status_b.line);
    let _ = alice.quit();
    let _ = bob.quit();

    let heard = read_wav(&bob_out);
    match walk_frames(&says, &heard) {
        Some(walk) => {
            let frames = says.len() / FRAME_SAMPLES;
            println!(
                "file-to-file path: the first frame sent starts {} samples ({:.1} ms) into the \
                 received file; {} of {frames} frames played exactly and in order, missing {:?}, \
                 {} frames inserted (after frames {:?}); sample-exact overall: {}",
                walk.offset,
                walk.offset as f64 * 1000.0 / f64::from(SAMPLE_RATE),
                walk.played,
                walk.missing,
                walk.inserted,
                walk.inserted_after,
                align(&says, &heard).is_some_and(|a| a.mismatches == 0 && a.overlap == says.len())
            );
        }
        None => println!(
            "file-to-file path: no frame sent was found in the {} samples received",
            heard.len()
        ),
    }
}
