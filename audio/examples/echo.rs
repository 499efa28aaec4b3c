//! Runs an audio device as a phone's loop would, echoing what it captures back to its
//! playback through a jitter buffer, then prints the counters and the CPU time used.
//!
//! `cargo run --release -p parlo-audio --example echo -- SPEC [SECONDS]`, e.g.
//! `file:in.wav,out.wav 10`, `tone:1000 5`, `null 30`, `cpal`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use parlo_audio::{Audio, DeviceSpec, JitterBuffer, JitterConfig, SILENCE, Wake};

/// User and system CPU seconds of this process, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = DeviceSpec::parse(&args.next().unwrap_or_else(|| "null".to_owned()))?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);

    let signal = Arc::new((Mutex::new(false), Condvar::new()));
    let notify = Arc::clone(&signal);
    let wake: Wake = Arc::new(move || {
        let (ready, cv) = &*notify;
        *ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_one();
    });
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let mut audio = Audio::start(&spec, wake)?;
    let mut jitter = Box::new(JitterBuffer::new(JitterConfig::default()));
    let mut out = SILENCE;
    let mut seq = 0u16;
    while started.elapsed() < Duration::from_secs(seconds) && !audio.failed() {
        let (ready, cv) = &*signal;
        let guard = ready.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = cv
            .wait_timeout_while(guard, Duration::from_millis(500), |r| !*r)
            .unwrap_or_else(|e| e.into_inner());
        *guard = false;
        drop(guard);
        while let Some(frame) = audio.pop_captured() {
            let ts = u32::from(seq) * 512;
            jitter.put(seq, ts, ts, &frame);
            seq = seq.wrapping_add(1);
            jitter.get(&mut out);
            audio.push_playback(&out);
        }
    }
    let queues = audio.stats();
    let failed = audio.failed();
    let stopped = audio.stop();
    let elapsed = started.elapsed().as_secs_f64();
    println!("device {spec} ran {elapsed:.2} s");
    println!("queues {queues:?}");
    println!("jitter {:?}", jitter.stats());
    if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
        println!("cpu {:.3} s, {:.4} CPU-s/s", b - a, (b - a) / elapsed);
    }
    if failed {
        println!("device failed");
    }
    stopped?;
    Ok(())
}
