//! Per-frame cost of the loop's audio work, in nanoseconds per 512-sample frame:
//! queue push + pop, PCMU encode and decode, jitter buffer put + get.
//!
//! `cargo run --release -p parlo-audio --example frame_costs`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use parlo_audio::{JitterBuffer, JitterConfig, SILENCE, frame_queues, pcmu};

const FRAMES: u32 = 200_000;

fn per_frame(name: &str, mut f: impl FnMut(u32)) {
    for k in 0..1_000 {
        f(k);
    }
    let start = Instant::now();
    for k in 0..FRAMES {
        f(k);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(FRAMES);
    println!("{name:<28} {ns:>8.0} ns/frame");
}

fn main() {
    let mut frame = SILENCE;
    for (i, s) in frame.iter_mut().enumerate() {
        *s = ((i * 131 % 50_000) as i32 - 25_000) as i16;
    }
    let (mut device, mut lp) = frame_queues(Arc::new(|| {}));
    let mut out = SILENCE;
    per_frame("queue push+pop (both ways)", |_| {
        device.push_captured(black_box(&frame));
        out = lp.pop_captured().unwrap_or(SILENCE);
        lp.push_playback(&out);
        device.pop_playback(&mut out);
    });
    let mut bytes = [0u8; pcmu::FRAME_BYTES];
    per_frame("pcmu encode", |_| {
        pcmu::encode_frame(black_box(&frame), &mut bytes);
    });
    per_frame("pcmu decode", |_| {
        pcmu::decode_frame(black_box(&bytes), &mut out);
    });
    let mut jitter = Box::new(JitterBuffer::new(JitterConfig::default()));
    per_frame("jitter put+get", |k| {
        let seq = k as u16;
        jitter.put(
            seq,
            k.wrapping_mul(512),
            k.wrapping_mul(512),
            black_box(&frame),
        );
        jitter.get(&mut out);
    });
    black_box(&out);
}
