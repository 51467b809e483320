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

pub fn stream(seed: u64, s: Stream) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(s as u64);
    r
}
