//! How many log lines of one kind a second may cost: [`Quota`].
//!
//! Some lines are written because of what a peer does (a bad request, a refused
//! connection), so a peer that does it thousands of times a second would otherwise decide
//! how much the server writes to its journal: the journal's disk, and the loop, which
//! waits for stderr when the journal is slow. A quota lets the first few lines of each
//! second through and counts the rest; the server sums them up in one line when the second
//! is over ("… N more"), so nothing goes unsaid and the journal sees a bounded rate.

/// Lines of one kind: at most a fixed number a second, the rest counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    per_second: u32,
    /// Lines let through in the current second.
    written: u32,
    /// Lines held back in the current second.
    held_back: u64,
}

impl Quota {
    /// A quota of `per_second` lines a second.
    pub const fn new(per_second: u32) -> Quota {
        Quota {
            per_second,
            written: 0,
            held_back: 0,
        }
    }

    /// Whether one more line may be written in this second; if not, it is counted.
    pub fn allows(&mut self) -> bool {
        if self.written < self.per_second {
            self.written += 1;
            true
        } else {
            self.held_back += 1;
            false
        }
    }

    /// A new second begins: returns how many lines were held back in the one that ended.
    pub fn renew(&mut self) -> u64 {
        self.written = 0;
        std::mem::take(&mut self.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lines_of_a_second_pass_and_the_rest_are_counted() {
        let mut quota = Quota::new(3);
        let passed = (0..10).filter(|_| quota.allows()).count();
        assert_eq!(passed, 3);
        assert_eq!(quota.renew(), 7);
        // The next second starts afresh.
        assert!(quota.allows());
        assert_eq!(quota.renew(), 0);
        assert_eq!(quota.renew(), 0);
    }

    #[test]
    fn a_quota_of_nothing_holds_everything_back() {
        let mut quota = Quota::new(0);
        assert!(!quota.allows());
        assert_eq!(quota.renew(), 1);
    }
}
