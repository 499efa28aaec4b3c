//! Call ids and RTP SSRCs from the operating system's random source.
//!
//! The call machine takes its call ids from an injected [`CallIds`] (tests and specs use
//! the seeded [`SplitMix64`]); the phone gives it an [`OsRandom`], which reads each id
//! from the operating system (`getrandom(2)` on Linux), and draws each call's SSRC,
//! first sequence number and timestamp from another. A guessable call id would let
//! anyone who can reach the phone's port hang up or answer its calls; a guessable SSRC
//! would let them forge its media.
//!
//! Failure policy: [`OsRandom::new`] draws once and fails if the source cannot be read,
//! so a phone never starts with predictable ids (it exits with that error). Once it has
//! started, a read that fails (on Linux this does not happen once a first read has
//! succeeded: the pool is initialised, and interrupted reads are retried) falls back,
//! loudly (an error in the log, once), to a [`SplitMix64`] seeded from the operating
//! system at start: still unknown to others, if no longer fresh from the OS.

use parlo_fsm::{CallId, CallIds, SplitMix64};

/// The operating system's random source, with a fallback seeded from it (see the module
/// documentation). A clone reads the same source (conference legs each take one); only
/// the fallback, if it is ever used, would repeat in the clones.
#[derive(Debug, Clone)]
pub struct OsRandom {
    fallback: SplitMix64,
    failed: bool,
}

impl OsRandom {
    /// Reads the source once, for the fallback's seed: an error means the phone must not
    /// start.
    pub fn new() -> Result<OsRandom, getrandom::Error> {
        Ok(OsRandom {
            fallback: SplitMix64(getrandom::u64()?),
            failed: false,
        })
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        match getrandom::u64() {
            Ok(bits) => bits,
            Err(e) => {
                if !self.failed {
                    self.failed = true;
                    log::error!(
                        "the operating system's random source failed ({e}): call ids and \
                         SSRCs now come from a generator seeded from it at start"
                    );
                }
                let high = u64::from(self.fallback.next_call_id().0);
                (high << 32) | u64::from(self.fallback.next_call_id().0)
            }
        }
    }
}

impl CallIds for OsRandom {
    fn next_call_id(&mut self) -> CallId {
        // Truncation intended: a call id is 32 of the random bits.
        CallId(self.next_u64() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_os_and_differ() {
        let mut random = OsRandom::new().expect("the OS random source works here");
        let ids: Vec<CallId> = (0..8).map(|_| random.next_call_id()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        // Eight 32-bit draws collide with probability about 7e-9.
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        // Two sources started together do not share a sequence (as seeded generators
        // started in the same nanosecond by the same process could).
        let mut other = OsRandom::new().expect("the OS random source works here");
        assert_ne!(random.next_u64(), other.next_u64());
        assert!(!random.failed);
    }
}
