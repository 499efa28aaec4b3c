//! A log-bucketed latency histogram in the manner of HdrHistogram.
//!
//! Values (nanoseconds) below 128 have a bucket each; above, every power of two is cut into
//! 64 linear sub-buckets, so a bucket's width is at most 1/64 of its lower bound: the value
//! reported for a percentile is within 1.6 % of the true one. Recording is an index
//! computation and an increment: nothing is allocated after [`Histogram::new`].

/// Values below this have a bucket of their own.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB: u64 = LINEAR / 2;
/// log2(SUB).
const SUB_BITS: u32 = 6;
/// Buckets for the whole u64 range: the linear ones, then 64 per octave from 2^7 to 2^63.
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Counts of recorded values, log-bucketed; exact count, sum, minimum and maximum on the side.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (allocates its ~30 KB of buckets once, here).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value recorded (exact), 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// The arithmetic mean (exact), 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.total)).unwrap_or(u64::MAX)
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the highest value of the bucket holding the
    /// ⌈q·count⌉-th smallest value, capped by the exact maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(index).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

/// The bucket that holds `value`.
fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    // `value >> shift` lands in SUB..2*SUB.
    let shift = 63 - value.leading_zeros() - SUB_BITS;
    (LINEAR + u64::from(shift - 1) * SUB + ((value >> shift) - SUB)) as usize
}

/// The highest value that falls into bucket `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = (index - LINEAR) / SUB + 1;
    let mantissa = (index - LINEAR) % SUB + SUB;
    // The top bucket ends at 2^64 - 1: the shift drops the carry bit and the subtraction wraps.
    ((mantissa + 1) << shift).wrapping_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest value of bucket `index`.
    fn bucket_low(index: usize) -> u64 {
        if index == 0 {
            0
        } else {
            bucket_high(index - 1) + 1
        }
    }

    #[test]
    fn small_values_are_exact() {
        for v in 0..LINEAR {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(bucket_high(v as usize), v);
        }
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        for index in 0..BUCKETS - 1 {
            assert_eq!(
                bucket_high(index) + 1,
                bucket_low(index + 1),
                "bucket {index}"
            );
        }
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn every_value_lands_in_a_bucket_that_contains_it() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            for probe in [v - 1, v, v + 1, v * 3 / 2] {
                let b = bucket_of(probe);
                assert!(bucket_low(b) <= probe && probe <= bucket_high(b), "{probe}");
            }
            v *= 2;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_within_one_sixty_fourth() {
        for index in LINEAR as usize..BUCKETS {
            let (low, high) = (bucket_low(index), bucket_high(index));
            assert!((high - low) <= low / 64, "bucket {index}: {low}..={high}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 100_000);
        for (q, exact) in [
            (0.5, 50_000_000u64),
            (0.99, 99_000_000),
            (0.999, 99_900_000),
        ] {
            let got = h.quantile(q);
            assert!(got >= exact, "q{q}: {got} < {exact}");
            assert!(
                got - exact <= exact / 64,
                "q{q}: {got} too far above {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.mean(), 50_000_500);
    }

    #[test]
    fn one_outlier_shows_at_the_top_only() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(40_000);
        }
        h.record(9_000_000);
        assert!(h.quantile(0.99) < 41_000);
        assert!(h.quantile(0.999) < 41_000);
        assert_eq!(h.quantile(0.9999), 9_000_000);
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        a.record(10);
        b.record(1_000_000);
        b.record(5);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.min(), 5);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(0.5), 10);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::new();
        assert_eq!((h.quantile(0.99), h.max(), h.min(), h.mean()), (0, 0, 0, 0));
    }
}
