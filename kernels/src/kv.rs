//! Paged KV memory: a pool of blocks per memory ("device" and "host", both RAM on the CPU), a free
//! list per pool, and chunk copies between pools. Layout of a pool: `[layer][K|V][block]`, each
//! (layer, K|V, block) chunk `[kv_head][slot 0..16][head_dim]` f32.

use crate::BLOCK_TOKENS;
use crate::model::Rng;

/// One pool of KV blocks.
#[derive(Debug)]
pub struct KvPool {
    pub blocks: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    data: Vec<f32>,
}

impl KvPool {
    /// A zeroed pool (the allocator maps the pages lazily).
    pub fn new(blocks: usize, layers: usize, kv_heads: usize, head_dim: usize) -> KvPool {
        KvPool {
            blocks,
            layers,
            kv_heads,
            head_dim,
            data: vec![0.0; 2 * layers * blocks * kv_heads * BLOCK_TOKENS * head_dim],
        }
    }
    /// A zeroed pool, or an error when its size overflows or the memory cannot be had.
    pub fn try_new(
        blocks: usize,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<KvPool, crate::BackendError> {
        let n = [2, layers, blocks, kv_heads, BLOCK_TOKENS, head_dim]
            .into_iter()
            .try_fold(1usize, |a, b| a.checked_mul(b))
            .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize));
        let too_big = || {
            crate::BackendError::Config(format!(
                "a KV pool of {blocks} blocks ({layers} layers, {kv_heads} KV heads of {head_dim}) does not fit in memory"
            ))
        };
        let n = n.ok_or_else(too_big)?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| too_big())?;
        data.resize(n, 0.0);
        Ok(KvPool {
            blocks,
            layers,
            kv_heads,
            head_dim,
            data,
        })
    }
    /// f32 values of one chunk (one layer's K or V of one block).
    pub fn chunk_len(&self) -> usize {
        self.kv_heads * BLOCK_TOKENS * self.head_dim
    }
    /// Offset of chunk (layer, `kv` 0 = K / 1 = V, block).
    pub fn chunk_offset(&self, layer: usize, kv: usize, block: usize) -> usize {
        ((layer * 2 + kv) * self.blocks + block) * self.chunk_len()
    }
    /// Offset of one token's row of one KV head inside the pool.
    pub fn row_offset(
        &self,
        layer: usize,
        kv: usize,
        block: usize,
        head: usize,
        slot: usize,
    ) -> usize {
        self.chunk_offset(layer, kv, block) + (head * BLOCK_TOKENS + slot) * self.head_dim
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Fill with random values (benchmarks: attention over a full pool).
    pub fn randomize(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        for v in &mut self.data {
            *v = rng.next_f32();
        }
    }
    /// Fill every layer's K and V chunks of `blocks` with random values.
    pub fn randomize_blocks(&mut self, blocks: &[u32], seed: u64) {
        let mut rng = Rng::new(seed);
        let n = self.chunk_len();
        for layer in 0..self.layers {
            for kv in 0..2 {
                for &b in blocks {
                    let o = self.chunk_offset(layer, kv, b as usize);
                    for v in &mut self.data[o..o + n] {
                        *v = rng.next_f32();
                    }
                }
            }
        }
    }
    /// Write `row` (head_dim values) as token `slot` of KV head `head` in `block`.
    pub fn write_row(&mut self, at: (usize, usize, usize), head: usize, slot: usize, row: &[f32]) {
        let (layer, kv, block) = at;
        let o = self.row_offset(layer, kv, block, head, slot);
        self.data[o..o + self.head_dim].copy_from_slice(row);
    }
}

/// Free block ids of a pool. The initial order is shuffled (with a seed), so sequences get
/// scattered blocks as in a long-running server, not one contiguous run.
#[derive(Debug, Clone)]
pub struct FreeList {
    free: Vec<u32>,
    capacity: usize,
}

impl FreeList {
    pub fn new(capacity: usize, seed: u64) -> FreeList {
        let mut free: Vec<u32> = (0..capacity as u32).collect();
        let mut rng = Rng::new(seed);
        for i in (1..free.len()).rev() {
            free.swap(i, rng.below(i + 1));
        }
        FreeList { free, capacity }
    }
    pub fn available(&self) -> usize {
        self.free.len()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// `n` blocks, or `None` (nothing taken) when fewer are free.
    pub fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        Some(self.free.split_off(self.free.len() - n))
    }
    pub fn give_back(&mut self, blocks: &[u32]) {
        self.free.extend_from_slice(blocks);
    }
}

/// Copy chunk `src_chunks[i]` of `src` to chunk `dst_chunks[i]` of `dst` (chunk indices in units
/// of `chunk` f32 values): one `memcpy` per chunk, as a per-chunk `cudaMemcpyAsync` would do.
pub fn copy_chunks(src: &[f32], dst: &mut [f32], chunk: usize, pairs: &[(usize, usize)]) {
    for &(s, d) in pairs {
        dst[d * chunk..(d + 1) * chunk].copy_from_slice(&src[s * chunk..(s + 1) * chunk]);
    }
}

/// The chunk pairs that move a sequence's blocks `from` → `to` (same length) in all layers, K and V.
pub fn block_pairs(
    from: &[u32],
    from_blocks: usize,
    to: &[u32],
    to_blocks: usize,
    layers: usize,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::with_capacity(2 * layers * from.len());
    for lk in 0..2 * layers {
        for (&f, &t) in from.iter().zip(to) {
            pairs.push((lk * from_blocks + f as usize, lk * to_blocks + t as usize));
        }
    }
    pairs
}
