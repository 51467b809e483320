//! Seeded random streams. One explicit seed per run; every component draws from its own ChaCha
//! stream, so adding a consumer never shifts another's draws.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The components that draw random numbers. Never renumber: it would change every result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Arrivals = 1,
    Lengths = 2,
    Predictor = 3,
    /// `trace import`: the seeded shuffle of a dataset's rows.
    Shuffle = 4,
}

/// xorshift64 for tests: a fixed, dependency-free stream of pseudo-random numbers.
#[cfg(test)]
pub(crate) struct XorShift(pub u64);

#[cfg(test)]
impl XorShift {
    /// The next number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub fn stream(seed: u64, s: Stream) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(s as u64);
    r
}
