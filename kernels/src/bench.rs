//! Operator entry points for calibration: each bench owns its inputs and calls the very functions
//! [`crate::CpuBackend`]'s forward pass calls (same GEMM routine and parallelism rule, same paged
//! attention, same elementwise operators, same chunk copy), on the backend's kind of thread pool.

use crate::attention::{Heads, SeqRows, attention, write_kv};
use crate::kv::{FreeList, KvPool, copy_chunks};
use crate::model::{LayerWeights, ModelDims, Rng, Weights};
use crate::ops::{linear, rms_norm, rope, silu_gate};
use crate::{BLOCK_TOKENS, Threads};

/// Bytes of weight copies a [`GemmBench`] rotates through: more than a server CPU's last-level
/// cache, so each call reads its weights from memory as a forward pass over all layers does.
pub const GEMM_ROTATE_BYTES: usize = 64 << 20;

/// `Y[m, n] = X[m, k] · W[k, n]`, as one linear layer of `m` tokens; successive calls use
/// successive copies of `W` (see [`GEMM_ROTATE_BYTES`]).
#[derive(Debug)]
pub struct GemmBench {
    threads: Threads,
    m: usize,
    k: usize,
    n: usize,
    x: Vec<f32>,
    w: Vec<Vec<f32>>,
    next: usize,
    y: Vec<f32>,
}

impl GemmBench {
    pub fn new(threads: &Threads, m: usize, k: usize, n: usize, seed: u64) -> GemmBench {
        let mut rng = Rng::new(seed);
        let w = rng.fill(k * n, 1.0 / (k as f32).sqrt());
        let copies = GEMM_ROTATE_BYTES.div_ceil(4 * w.len().max(1)).clamp(1, 64);
        GemmBench {
            threads: threads.clone(),
            m,
            k,
            n,
            x: rng.fill(m * k, 1.0),
            w: vec![w; copies],
            next: 0,
            y: vec![0.0; m * n],
        }
    }
    pub fn run(&mut self) {
        let (m, k, n, t) = (self.m, self.k, self.n, self.threads.count());
        self.next = (self.next + 1) % self.w.len();
        let (x, w, y) = (&self.x, &self.w[self.next], &mut self.y);
        self.threads.install(|| linear(x, m, k, w, n, y, false, t));
    }
}

/// One layer's elementwise operators on `tokens` rows: two RMSNorms, RoPE, the gated SiLU (the
/// residual adds are fused into the output GEMMs, as in the forward pass).
#[derive(Debug)]
pub struct SmallOpsBench {
    threads: Threads,
    dims: ModelDims,
    layer: LayerWeights,
    positions: Vec<usize>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

impl SmallOpsBench {
    pub fn new(threads: &Threads, dims: &ModelDims, tokens: usize, seed: u64) -> SmallOpsBench {
        let one_layer = ModelDims {
            layers: 1,
            vocab: 1,
            ..dims.clone()
        };
        let w = Weights::random(&one_layer, seed);
        let mut rng = Rng::new(seed ^ 7);
        SmallOpsBench {
            threads: threads.clone(),
            layer: w.layers.into_iter().next().expect("one layer"),
            positions: (0..tokens).map(|i| i % dims.max_context_tokens).collect(),
            x: rng.fill(tokens * dims.hidden, 1.0),
            h: vec![0.0; tokens * dims.hidden],
            qkv: rng.fill(tokens * dims.qkv_width(), 1.0),
            gu: rng.fill(tokens * 2 * dims.ffn, 1.0),
            act: vec![0.0; tokens * dims.ffn],
            dims: dims.clone(),
        }
    }
    pub fn run(&mut self) {
        let d = &self.dims;
        let (l, p) = (&self.layer, &self.positions);
        let (x, h, qkv, gu, act) = (&self.x, &mut self.h, &mut self.qkv, &self.gu, &mut self.act);
        self.threads.install(|| {
            rms_norm(x, &l.attn_norm, h);
            rope(qkv, p, d.heads, d.kv_heads, d.head_dim());
            rms_norm(x, &l.mlp_norm, h);
            silu_gate(gu, d.ffn, act);
        });
    }
}

/// One layer's attention over a paged pool for a batch of `(cached, new)` sequences with
/// scattered blocks: the new tokens' K/V writes, then decode or tiled prefill attention.
#[derive(Debug)]
pub struct AttnBench {
    threads: Threads,
    heads: Heads,
    pool: KvPool,
    seqs: Vec<SeqRows>,
    qkv: Vec<f32>,
    out: Vec<f32>,
}

impl AttnBench {
    /// A decode batch of `batch` sequences attending over `context` tokens each.
    pub fn decode(
        threads: &Threads,
        dims: &ModelDims,
        batch: usize,
        context: usize,
        seed: u64,
    ) -> AttnBench {
        let shape = vec![(context.max(1) - 1, 1); batch];
        AttnBench::new(threads, dims, &shape, seed)
    }
    /// A prefill of `chunk` tokens after `cached` ones.
    pub fn prefill(
        threads: &Threads,
        dims: &ModelDims,
        chunk: usize,
        cached: usize,
        seed: u64,
    ) -> AttnBench {
        AttnBench::new(threads, dims, &[(cached, chunk)], seed)
    }
    pub fn new(
        threads: &Threads,
        dims: &ModelDims,
        shape: &[(usize, usize)],
        seed: u64,
    ) -> AttnBench {
        let heads = Heads {
            heads: dims.heads,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim(),
        };
        let need: usize = shape
            .iter()
            .map(|&(c, n)| (c + n).div_ceil(BLOCK_TOKENS))
            .sum();
        // A pool with room to spare, so the blocks a sequence gets are scattered over it.
        let blocks = need + need / 2 + 1;
        let mut pool = KvPool::new(blocks, 1, dims.kv_heads, dims.head_dim());
        pool.randomize(seed);
        let mut free = FreeList::new(blocks, seed ^ 3);
        let mut row0 = 0;
        let seqs = shape
            .iter()
            .enumerate()
            .map(|(i, &(cached, new))| {
                let table = free
                    .take((cached + new).div_ceil(BLOCK_TOKENS))
                    .expect("the pool was sized for the batch");
                let s = SeqRows {
                    seq: i as u64,
                    row0,
                    cached,
                    new,
                    table,
                };
                row0 += new;
                s
            })
            .collect();
        let mut rng = Rng::new(seed ^ 5);
        AttnBench {
            threads: threads.clone(),
            heads,
            pool,
            seqs,
            qkv: rng.fill(row0 * heads.qkv_width(), 1.0),
            out: vec![0.0; row0 * heads.heads * heads.head_dim],
        }
    }
    pub fn run(&mut self) {
        let (pool, seqs, qkv, out, h) = (
            &mut self.pool,
            &self.seqs,
            &self.qkv,
            &mut self.out,
            self.heads,
        );
        self.threads.install(|| {
            write_kv(pool, 0, qkv, seqs, h);
            attention(pool, 0, qkv, seqs, h, out);
        });
    }
    /// The attention output of the last run (`[new tokens, heads·head_dim]`).
    pub fn output(&self) -> &[f32] {
        &self.out
    }
}

/// `chunks` chunks of `chunk_bytes` from scattered blocks of one pool to another, one `memcpy`
/// each: what a swap does per (layer, K|V, block).
#[derive(Debug)]
pub struct CopyBench {
    chunk: usize,
    src: Vec<f32>,
    dst: Vec<f32>,
    pairs: Vec<(usize, usize)>,
}

impl CopyBench {
    pub fn new(chunks: usize, chunk_bytes: usize, seed: u64) -> CopyBench {
        let chunk = chunk_bytes.div_ceil(4).max(1);
        // Sources scattered over a pool twice the size of the copy; destinations contiguous.
        let slots = 2 * chunks;
        let mut order = FreeList::new(slots, seed);
        let src_ids = order.take(chunks).expect("2 × chunks slots");
        let pairs = src_ids
            .iter()
            .enumerate()
            .map(|(d, &s)| (s as usize, d))
            .collect();
        let mut rng = Rng::new(seed ^ 11);
        CopyBench {
            chunk,
            src: rng.fill(slots * chunk, 1.0),
            dst: vec![0.0; chunks * chunk],
            pairs,
        }
    }
    pub fn run(&mut self) {
        copy_chunks(&self.src, &mut self.dst, self.chunk, &self.pairs);
    }
}
