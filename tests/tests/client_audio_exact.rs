//! parlo-client end to end: a WAV sent through a call over loopback arrives sample-exact,
//! both ways, apart from the delay of the path.
//!
//! Alone in its test binary on purpose: cargo runs test binaries one after another, so no
//! other test's phones compete for the CPU with these two. On two busy cores, sibling tests
//! can delay a phone's device thread by more than a frame; the jitter buffer then rightly
//! stalls (plays silence) and later shrinks (drops a frame), and the recording is no longer
//! sample-exact — a fact about the machine, not the network, which `client_audio.rs`
//! tolerates and counts.

use parlo_tests::phone_harness::{assert_arrived_intact, two_way_call};

#[test]
fn a_wav_sent_through_a_call_arrives_sample_exact_both_ways() {
    let call = two_way_call();
    assert_arrived_intact("alice -> bob", &call.alice_says, &call.bob_heard);
    assert_arrived_intact("bob -> alice", &call.bob_says, &call.alice_heard);
}
