//! Mixing the voices of a conference into the one frame a member hears.
//!
//! Each member hears the others, never itself: the loop adds the frame it played out of
//! each other member's jitter buffer, and what it captured from its own microphone never
//! enters the mix. The sum is kept in 32 bits, where even eight full-scale voices cannot
//! overflow, and saturated to 16 bits once, at the end: two loud voices clip, as they
//! would in the air, instead of wrapping round into a crack of the opposite sign.
//!
//! A [`Mixer`] is a fixed array, reused for every frame: mixing allocates nothing.

use crate::{FRAME_SAMPLES, Frame};

/// The running sum of the voices of one frame period.
#[derive(Debug, Clone)]
pub struct Mixer {
    sum: [i32; FRAME_SAMPLES],
    voices: usize,
}

impl Default for Mixer {
    fn default() -> Self {
        Mixer::new()
    }
}

impl Mixer {
    /// An empty mix: silence.
    pub const fn new() -> Mixer {
        Mixer {
            sum: [0; FRAME_SAMPLES],
            voices: 0,
        }
    }

    /// Adds one member's frame.
    pub fn add(&mut self, frame: &Frame) {
        for (sum, &sample) in self.sum.iter_mut().zip(frame) {
            // At most 2^15 per voice: i32 holds the sum of 65,536 of them.
            *sum += i32::from(sample);
        }
        self.voices += 1;
    }

    /// How many frames were added since the last [`Mixer::take`].
    pub fn voices(&self) -> usize {
        self.voices
    }

    /// Writes the mix, saturated to 16 bits, into `out`, and starts the next one.
    pub fn take(&mut self, out: &mut Frame) {
        for (out, sum) in out.iter_mut().zip(&mut self.sum) {
            // The clamp makes the value fit: the cast cannot truncate.
            *out = (*sum).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            *sum = 0;
        }
        self.voices = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SILENCE;
    use proptest::prelude::*;

    fn frame_of(f: impl Fn(usize) -> i16) -> Frame {
        core::array::from_fn(f)
    }

    #[test]
    fn nothing_added_is_silence() {
        let mut mixer = Mixer::new();
        let mut out = frame_of(|_| 7);
        mixer.take(&mut out);
        assert_eq!(out, SILENCE);
    }

    #[test]
    fn loud_voices_clip_instead_of_wrapping() {
        let mut mixer = Mixer::new();
        mixer.add(&frame_of(|_| 30_000));
        mixer.add(&frame_of(|_| 30_000));
        mixer.add(&frame_of(|i| if i == 0 { i16::MIN } else { 0 }));
        assert_eq!(mixer.voices(), 3);
        let mut out = SILENCE;
        mixer.take(&mut out);
        // 60,000 - 32,768 = 27,232 at sample 0; 60,000 clipped everywhere else. Wrapping
        // would have given -5,536.
        assert_eq!(out[0], 27_232);
        assert!(out[1..].iter().all(|&s| s == i16::MAX));
        let mut mixer = Mixer::new();
        for _ in 0..8 {
            mixer.add(&frame_of(|_| i16::MIN));
        }
        mixer.take(&mut out);
        assert!(out.iter().all(|&s| s == i16::MIN));
    }

    #[test]
    fn each_take_starts_a_new_mix() {
        let mut mixer = Mixer::new();
        mixer.add(&frame_of(|_| 100));
        let mut out = SILENCE;
        mixer.take(&mut out);
        mixer.add(&frame_of(|_| 5));
        mixer.take(&mut out);
        assert!(out.iter().all(|&s| s == 5));
        assert_eq!(mixer.voices(), 0);
    }

    /// A sample, the extremes and their neighbours often: where a wrapping sum would show.
    fn sample() -> impl Strategy<Value = i16> {
        prop_oneof![
            2 => any::<i16>(),
            1 => Just(i16::MAX),
            1 => Just(i16::MIN),
            1 => prop_oneof![Just(i16::MAX - 1), Just(i16::MIN + 1), Just(0), Just(-1)],
        ]
    }

    proptest! {
        // Each case is up to 7 frames of 512 samples: 64 cases try 100,000 sums or so.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// One to seven other members, any samples (the extremes often): every output
        /// sample is the true sum, in 32 bits, clamped to 16 bits, so the mix never wraps.
        #[test]
        fn the_mix_is_the_saturated_sum(
            voices in proptest::collection::vec(
                proptest::collection::vec(sample(), FRAME_SAMPLES), 1..=7),
        ) {
            let mut mixer = Mixer::new();
            for voice in &voices {
                mixer.add(&frame_of(|i| voice[i]));
            }
            prop_assert_eq!(mixer.voices(), voices.len());
            let mut out = SILENCE;
            mixer.take(&mut out);
            for (i, &sample) in out.iter().enumerate() {
                let sum: i32 = voices.iter().map(|v| i32::from(v[i])).sum();
                let expected = sum.clamp(i32::from(i16::MIN), i32::from(i16::MAX));
                prop_assert_eq!(i32::from(sample), expected, "sample {}", i);
            }
        }

        /// One voice is heard exactly as it came: a call of one leg plays what it
        /// received, sample for sample.
        #[test]
        fn one_voice_is_itself(voice in proptest::collection::vec(sample(), FRAME_SAMPLES)) {
            let frame = frame_of(|i| voice[i]);
            let mut mixer = Mixer::new();
            mixer.add(&frame);
            let mut out = SILENCE;
            mixer.take(&mut out);
            prop_assert_eq!(out, frame);
        }
    }
}
