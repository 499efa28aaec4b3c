//! The anti-replay window of an encrypted datagram stream (RFC 6479's sliding bitmap, as
//! WireGuard keeps it).
//!
//! Each datagram of a session carries its sender's counter, which grows by one per
//! datagram. The receiver remembers which of the last [`WINDOW`] counters it has
//! accepted: a counter seen before, or older than the window, is a replay (or a packet so
//! late it is no use to anyone) and is refused. Datagrams may arrive out of order within
//! the window.
//!
//! The window is asked only about datagrams whose authentication tag checked out
//! ([`ReplayWindow::accept`] records the counter): an attacker who cannot forge a tag
//! cannot move the window, so forged traffic can never make genuine traffic look old.
//!
//! The bitmap is a ring of 64-bit blocks. Moving ahead clears only the blocks the window
//! leaves behind, so each datagram costs O(1) however far the counter jumps; one block is
//! kept beyond the window so that clearing never touches bits still inside it.

/// Counters below the greatest accepted one that are still told apart: a datagram at
/// least this far behind the newest is refused as too old. 2,048 datagrams are 131 s of
/// one 64 ms media stream, far beyond any jitter buffer.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

const BLOCK_BITS: u64 = u64::BITS as u64;
/// Blocks in the ring: the window's 32, plus the one being filled at its newest end.
const BLOCKS: usize = 33;

/// What the window says of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Never seen and within the window: accepted, and now remembered.
    Fresh,
    /// Accepted before: a replay or a network duplicate.
    Seen,
    /// Behind the window: too old to tell, refused.
    TooOld,
}

/// Which counters of one session have been accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One past the greatest counter accepted (0: none yet).
    next: u64,
    /// Bit `c % 64` of block `(c / 64) % BLOCKS` is set when counter `c` was accepted.
    blocks: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            next: 0,
            blocks: [0; BLOCKS],
        }
    }

    /// Records `counter` if it is [`Replay::Fresh`]; says why not otherwise. Call it only
    /// for a datagram that authenticated.
    pub fn accept(&mut self, counter: u64) -> Replay {
        if counter >= self.next {
            self.advance(counter);
        } else if self.next - 1 - counter >= WINDOW {
            return Replay::TooOld;
        }
        let (block, bit) = Self::slot(counter);
        if self.blocks[block] & bit != 0 {
            return Replay::Seen;
        }
        self.blocks[block] |= bit;
        Replay::Fresh
    }

    /// One past the greatest counter accepted: where the sender has got to, as far as
    /// this side knows.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Moves the newest end of the window to `counter`, clearing the blocks it enters.
    fn advance(&mut self, counter: u64) {
        let old_block = self.next.saturating_sub(1) / BLOCK_BITS;
        let new_block = counter / BLOCK_BITS;
        if self.next == 0 {
            // Nothing accepted yet: the ring is clear.
        } else if new_block - old_block >= BLOCKS as u64 {
            self.blocks = [0; BLOCKS];
        } else {
            for block in old_block + 1..=new_block {
                self.blocks[(block % BLOCKS as u64) as usize] = 0;
            }
        }
        self.next = counter.saturating_add(1);
    }

    fn slot(counter: u64) -> (usize, u64) {
        let block = ((counter / BLOCK_BITS) % BLOCKS as u64) as usize;
        (block, 1 << (counter % BLOCK_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// What the window must say, from everything accepted so far: the model it is checked
    /// against.
    fn model(accepted: &BTreeSet<u64>, counter: u64) -> Replay {
        let newest = accepted.last().copied();
        match newest {
            Some(newest) if counter < newest && newest - counter >= WINDOW => Replay::TooOld,
            _ if accepted.contains(&counter) => Replay::Seen,
            _ => Replay::Fresh,
        }
    }

    #[test]
    fn in_order_out_of_order_and_twice() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Replay::Fresh);
        assert_eq!(w.accept(2), Replay::Fresh);
        assert_eq!(w.accept(1), Replay::Fresh);
        assert_eq!(w.accept(1), Replay::Seen);
        assert_eq!(w.accept(2), Replay::Seen);
        assert_eq!(w.next(), 3);
    }

    #[test]
    fn the_edge_of_the_window() {
        let mut w = ReplayWindow::new();
        let newest = 10_000;
        assert_eq!(w.accept(newest), Replay::Fresh);
        assert_eq!(w.accept(newest - WINDOW), Replay::TooOld);
        assert_eq!(w.accept(newest - WINDOW + 1), Replay::Fresh);
        assert_eq!(w.accept(newest - WINDOW + 1), Replay::Seen);
    }

    #[test]
    fn a_jump_far_ahead_forgets_everything_behind_the_window() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            assert_eq!(w.accept(c), Replay::Fresh);
        }
        assert_eq!(w.accept(1_000_000), Replay::Fresh);
        assert_eq!(w.accept(99), Replay::TooOld);
        // The blocks that now stand for counters just behind the newest were cleared.
        assert_eq!(w.accept(1_000_000 - 64 * 5), Replay::Fresh);
    }

    #[test]
    fn the_last_counters_of_the_range() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(u64::MAX - 1), Replay::Fresh);
        assert_eq!(w.accept(u64::MAX), Replay::Fresh);
        assert_eq!(w.accept(u64::MAX), Replay::Seen);
        assert_eq!(w.accept(u64::MAX - 1), Replay::Seen);
        assert_eq!(w.accept(0), Replay::TooOld);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Any sequence of counters, clustered so that replays, reordering, jumps and the
        /// window's edge all happen: the window agrees with the model on every one.
        #[test]
        fn agrees_with_the_set_of_everything_accepted(
            steps in proptest::collection::vec((0u64..3, 0u64..3 * WINDOW), 1..600)
        ) {
            let mut w = ReplayWindow::new();
            let mut accepted = BTreeSet::new();
            let mut base = 0u64;
            for (kind, offset) in steps {
                let counter = match kind {
                    // Ahead of the newest, sometimes far.
                    0 => accepted.last().map_or(0, |n| n + 1) + offset / 8,
                    // Around the window's edge, behind the newest.
                    1 => accepted.last().map_or(0, |n: &u64| n.saturating_sub(offset / 2)),
                    // Anywhere near where the stream has been.
                    _ => base + offset,
                };
                base = base.max(counter.saturating_sub(WINDOW));
                let expected = model(&accepted, counter);
                prop_assert_eq!(w.accept(counter), expected, "counter {}", counter);
                if expected == Replay::Fresh {
                    accepted.insert(counter);
                }
            }
        }
    }
}
