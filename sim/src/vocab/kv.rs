//! Paged KV-cache block accounting for one replica (the engine owns it; policies only read it).

/// Number of `block_tokens`-sized blocks needed to hold `tokens` tokens.
pub fn blocks_for_tokens(tokens: u64, block_tokens: u32) -> u64 {
    tokens.div_ceil(block_tokens as u64)
}

/// Blocks beyond the `held` ones needed to hold `tokens` tokens (0 when `held` already cover
/// them: the common decode case, answered without a division).
#[inline]
pub fn extra_blocks_for(tokens: u64, held: u32, block_tokens: u32) -> u32 {
    if tokens <= held as u64 * block_tokens as u64 {
        0
    } else {
        (blocks_for_tokens(tokens, block_tokens) - held as u64) as u32
    }
}

/// A pool of equally sized KV blocks on one replica's GPUs.
#[derive(Debug, Clone)]
pub struct KvPool {
    capacity_blocks: u32,
    free_blocks: u32,
    block_tokens: u32,
    peak_used_blocks: u32,
}

impl KvPool {
    pub fn new(capacity_blocks: u32, block_tokens: u32) -> Self {
        KvPool {
            capacity_blocks,
            free_blocks: capacity_blocks,
            block_tokens,
            peak_used_blocks: 0,
        }
    }
    pub fn capacity_blocks(&self) -> u32 {
        self.capacity_blocks
    }
    pub fn free_blocks(&self) -> u32 {
        self.free_blocks
    }
    pub fn used_blocks(&self) -> u32 {
        self.capacity_blocks - self.free_blocks
    }
    pub fn peak_used_blocks(&self) -> u32 {
        self.peak_used_blocks
    }
    pub fn block_tokens(&self) -> u32 {
        self.block_tokens
    }
    /// Take `n` blocks; `false` (and no change) when fewer are free.
    pub fn try_alloc(&mut self, n: u32) -> bool {
        if n > self.free_blocks {
            return false;
        }
        self.free_blocks -= n;
        self.peak_used_blocks = self.peak_used_blocks.max(self.used_blocks());
        true
    }
    /// Return `n` blocks. Returning more than are in use is an engine bug.
    pub fn free(&mut self, n: u32) {
        assert!(
            n <= self.used_blocks(),
            "KV accounting bug: freeing {n} blocks with only {} in use",
            self.used_blocks()
        );
        self.free_blocks += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_rounding() {
        assert_eq!(blocks_for_tokens(0, 16), 0);
        assert_eq!(blocks_for_tokens(1, 16), 1);
        assert_eq!(blocks_for_tokens(16, 16), 1);
        assert_eq!(blocks_for_tokens(17, 16), 2);
    }

    #[test]
    fn alloc_and_free_track_peak() {
        let mut p = KvPool::new(10, 16);
        assert!(p.try_alloc(7));
        assert!(!p.try_alloc(4));
        assert_eq!(p.free_blocks(), 3);
        p.free(5);
        assert!(p.try_alloc(1));
        assert_eq!(p.used_blocks(), 3);
        assert_eq!(p.peak_used_blocks(), 7);
    }
}
