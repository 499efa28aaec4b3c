//! Building a `snow` handshake whose only randomness is 32 bytes the caller gives: the
//! handshake's ephemeral key, drawn by the shell. Shared by the directory channel
//! ([`crate::noise`]) and the encrypted calls ([`crate::secure`]).

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// A builder for `pattern` (a valid Noise protocol name, a constant of the caller) whose
/// random number generator yields `ephemeral` once, then fails.
pub(crate) fn builder(pattern: &str, ephemeral: [u8; 32]) -> snow::Builder<'static> {
    let resolver: BoxedCryptoResolver = Box::new(Seeded(ephemeral));
    // Every caller passes one of this crate's pattern constants, which its tests build.
    #[allow(clippy::expect_used)]
    let params: NoiseParams = pattern.parse().expect("the pattern parses");
    snow::Builder::with_resolver(params, resolver)
}

/// The primitives of the default resolver, and as randomness exactly the 32 bytes given.
struct Seeded([u8; 32]);

struct OneShot(Option<[u8; 32]>);

impl Random for OneShot {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(seed) if dest.len() <= seed.len() => {
                dest.copy_from_slice(&seed[..dest.len()]);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

impl CryptoResolver for Seeded {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(OneShot(Some(self.0))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}
