//! parlo-client end to end: a WAV sent through a call over loopback arrives sample-exact,
//! both ways, apart from the delay of the path.
//!
//! Alone in its test binary on purpose: cargo runs test binaries one after another, so no
//! other test's phones compete for the CPU with these two. On two busy cores, sibling tests
//! can delay a phone's device thread by more than a frame; the jitter buffer then rightly
//! stalls (plays silence) and later shrinks (drops a frame), and the recording is no longer
//! sample-exact — a fact about the machine, not the network, which `client_audio.rs`
//! tolerates and counts.
//!
//! Even alone, something else on the machine (the end of the previous test binary, the
//! system) can stall a device thread now and then. Such a call shows it in its counters:
//! a playback underrun after the first, or a concealed frame. Only then is the call made
//! again, once, and the second must be exact; a call that differs without the machine
//! having stalled fails at once.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use parlo_tests::phone_harness::{TwoWay, assert_arrived_intact, two_way_call};

fn assert_exact(call: &TwoWay) {
    assert_arrived_intact("alice -> bob", &call.alice_says, &call.bob_heard);
    assert_arrived_intact("bob -> alice", &call.bob_says, &call.alice_heard);
}

/// Whether a phone's counters show that its device thread was held up during the call:
/// an underrun beyond the one of the call's start, or a frame concealed.
fn machine_stalled(call: &TwoWay) -> bool {
    call.statuses.iter().any(|status| {
        let count = |field: &str| {
            status
                .field(field)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        count("underruns") > 1 || count("concealed") > 0
    })
}

#[test]
fn a_wav_sent_through_a_call_arrives_sample_exact_both_ways() {
    let call = two_way_call();
    let Err(failure) = catch_unwind(AssertUnwindSafe(|| assert_exact(&call))) else {
        return;
    };
    if !machine_stalled(&call) {
        resume_unwind(failure);
    }
    for status in &call.statuses {
        println!("the machine held a phone up; calling again: {status}");
    }
    assert_exact(&two_way_call());
}
