//! Attention over the paged KV cache: K/V writes for the batch's new tokens, paged decode (one task
//! per sequence walking its block table once, all heads of a KV head's group together) and causal
//! prefill in query tiles (`S = Q·Kᵀ`, `O = P·V` as small faer GEMMs over the gathered visible
//! keys), with grouped-query heads. Also a dense reference for the tests.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::BLOCK_TOKENS;
use crate::kv::KvPool;
use crate::ops::{axpy, dot, softmax};

/// Query rows per prefill tile.
pub const TILE_ROWS: usize = 64;

/// Head counts and size of the attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Width of a fused QKV row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// One sequence of a batch: its rows `row0 .. row0 + new` of the batch's buffers hold tokens at
/// positions `cached .. cached + new`; `table` holds its blocks (enough for `cached + new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRows {
    pub seq: u64,
    pub row0: usize,
    pub cached: usize,
    pub new: usize,
    pub table: Vec<u32>,
}

/// Write the K and V of every new token of the batch (rows of `qkv`, rotary already applied)
/// into `layer` of the pool.
pub fn write_kv(pool: &mut KvPool, layer: usize, qkv: &[f32], seqs: &[SeqRows], h: Heads) {
    let w = h.qkv_width();
    let hd = h.head_dim;
    for s in seqs {
        for r in 0..s.new {
            let pos = s.cached + r;
            let block = s.table[pos / BLOCK_TOKENS] as usize;
            let slot = pos % BLOCK_TOKENS;
            let row = &qkv[(s.row0 + r) * w..(s.row0 + r + 1) * w];
            for g in 0..h.kv_heads {
                let k = &row[(h.heads + g) * hd..(h.heads + g + 1) * hd];
                pool.write_row((layer, 0, block), g, slot, k);
                let v = &row[(h.heads + h.kv_heads + g) * hd..(h.heads + h.kv_heads + g + 1) * hd];
                pool.write_row((layer, 1, block), g, slot, v);
            }
        }
    }
}

enum Task {
    /// One decode token's query heads of one KV head group (GQA), so a batch's decode work splits
    /// into sequences × KV heads: even with one sequence, or contexts of very different lengths,
    /// every thread gets a share (as GPU paged-attention kernels split by sequence and head).
    Decode {
        seq: usize,
        group: usize,
    },
    Tile {
        seq: usize,
        head: usize,
        i0: usize,
    },
}

/// Attention of every new token of the batch over its sequence's cached and new keys in `layer`
/// (K/V already written): `out[rows, heads·head_dim]`. One parallel region for the whole batch.
pub fn attention(
    pool: &KvPool,
    layer: usize,
    qkv: &[f32],
    seqs: &[SeqRows],
    h: Heads,
    out: &mut [f32],
) {
    let mut tasks = Vec::new();
    for (i, s) in seqs.iter().enumerate() {
        if s.new == 1 {
            tasks.extend((0..h.kv_heads).map(|group| Task::Decode { seq: i, group }));
        } else {
            for head in 0..h.heads {
                for i0 in (0..s.new).step_by(TILE_ROWS) {
                    tasks.push(Task::Tile { seq: i, head, i0 });
                }
            }
        }
    }
    let run = |t: &Task| match *t {
        Task::Decode { seq, group } => {
            let s = &seqs[seq];
            let w = h.qkv_width();
            let q = &qkv[s.row0 * w..s.row0 * w + h.heads * h.head_dim];
            let cols = h.group() * h.head_dim;
            (
                s.row0,
                group * cols,
                cols,
                decode_one(pool, layer, q, &s.table, s.cached + 1, h, group),
            )
        }
        Task::Tile { seq, head, i0 } => {
            let s = &seqs[seq];
            let o = prefill_tile(pool, layer, qkv, s, head, i0, h);
            (s.row0 + i0, head * h.head_dim, h.head_dim, o)
        }
    };
    let results: Vec<(usize, usize, usize, Vec<f32>)> = if tasks.len() > 1 {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    let width = h.heads * h.head_dim;
    for (row, col, cols, data) in results {
        for (r, chunk) in data.chunks(cols).enumerate() {
            let o = (row + r) * width + col;
            out[o..o + cols].copy_from_slice(chunk);
        }
    }
}

/// One decode token's query heads of KV head `g` (`q` = all its query heads) over `ctx` keys of a
/// sequence's blocks: `[group, head_dim]`. Compiled for AVX2 + FMA when the CPU has them (the
/// default x86-64 target only has SSE2, and this loop is where a decode step reads the KV cache).
fn decode_one(
    pool: &KvPool,
    layer: usize,
    q: &[f32],
    table: &[u32],
    ctx: usize,
    h: Heads,
    g: usize,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports every feature `decode_avx2` is compiled for (checked above).
        return unsafe { decode_avx2(pool, layer, q, table, ctx, h, g) };
    }
    decode_body(pool, layer, q, table, ctx, h, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn decode_avx2(
    pool: &KvPool,
    layer: usize,
    q: &[f32],
    table: &[u32],
    ctx: usize,
    h: Heads,
    g: usize,
) -> Vec<f32> {
    decode_body(pool, layer, q, table, ctx, h, g)
}

#[inline(always)]
fn decode_body(
    pool: &KvPool,
    layer: usize,
    q: &[f32],
    table: &[u32],
    ctx: usize,
    h: Heads,
    g: usize,
) -> Vec<f32> {
    let (hd, group) = (h.head_dim, h.group());
    let scale = 1.0 / (hd as f32).sqrt();
    let data = pool.data();
    let mut out = vec![0.0f32; group * hd];
    let mut s = vec![0.0f32; group * ctx];
    let blocks = ctx.div_ceil(BLOCK_TOKENS);
    for (bi, &b) in table[..blocks].iter().enumerate() {
        let base = bi * BLOCK_TOKENS;
        let n = BLOCK_TOKENS.min(ctx - base);
        let off = pool.row_offset(layer, 0, b as usize, g, 0);
        for j in 0..n {
            let k = &data[off + j * hd..off + (j + 1) * hd];
            for hh in 0..group {
                let qh = &q[(g * group + hh) * hd..(g * group + hh + 1) * hd];
                s[hh * ctx + base + j] = dot(qh, k) * scale;
            }
        }
    }
    for hh in 0..group {
        softmax(&mut s[hh * ctx..(hh + 1) * ctx]);
    }
    for (bi, &b) in table[..blocks].iter().enumerate() {
        let base = bi * BLOCK_TOKENS;
        let n = BLOCK_TOKENS.min(ctx - base);
        let off = pool.row_offset(layer, 1, b as usize, g, 0);
        for j in 0..n {
            let v = &data[off + j * hd..off + (j + 1) * hd];
            for hh in 0..group {
                axpy(&mut out[hh * hd..(hh + 1) * hd], s[hh * ctx + base + j], v);
            }
        }
    }
    out
}

/// One query head's tile of rows `i0 .. i0 + TILE_ROWS` of a prefill chunk: `[rows, head_dim]`.
fn prefill_tile(
    pool: &KvPool,
    layer: usize,
    qkv: &[f32],
    s: &SeqRows,
    head: usize,
    i0: usize,
    h: Heads,
) -> Vec<f32> {
    let hd = h.head_dim;
    let w = h.qkv_width();
    let i1 = (i0 + TILE_ROWS).min(s.new);
    let rows = i1 - i0;
    let nk = s.cached + i1;
    let g = head / h.group();
    // Gather the visible keys and values of KV head g (16-row copies per block).
    let mut k = vec![0.0f32; nk * hd];
    let mut v = vec![0.0f32; nk * hd];
    let data = pool.data();
    for (bi, &b) in s.table[..nk.div_ceil(BLOCK_TOKENS)].iter().enumerate() {
        let base = bi * BLOCK_TOKENS;
        let n = BLOCK_TOKENS.min(nk - base) * hd;
        let ko = pool.row_offset(layer, 0, b as usize, g, 0);
        let vo = pool.row_offset(layer, 1, b as usize, g, 0);
        k[base * hd..base * hd + n].copy_from_slice(&data[ko..ko + n]);
        v[base * hd..base * hd + n].copy_from_slice(&data[vo..vo + n]);
    }
    let mut q = vec![0.0f32; rows * hd];
    for r in 0..rows {
        let o = (s.row0 + i0 + r) * w + head * hd;
        q[r * hd..(r + 1) * hd].copy_from_slice(&qkv[o..o + hd]);
    }
    let mut sc = vec![0.0f32; rows * nk];
    let scale = 1.0 / (hd as f32).sqrt();
    matmul(
        MatMut::from_row_major_slice_mut(&mut sc, rows, nk),
        Accum::Replace,
        MatRef::from_row_major_slice(&q, rows, hd),
        MatRef::from_row_major_slice(&k, nk, hd).transpose(),
        scale,
        Par::Seq,
    );
    for (r, row) in sc.chunks_mut(nk).enumerate() {
        let allowed = s.cached + i0 + r + 1;
        softmax(&mut row[..allowed]);
        row[allowed..].fill(0.0);
    }
    let mut o = vec![0.0f32; rows * hd];
    matmul(
        MatMut::from_row_major_slice_mut(&mut o, rows, hd),
        Accum::Replace,
        MatRef::from_row_major_slice(&sc, rows, nk),
        MatRef::from_row_major_slice(&v, nk, hd),
        1.0f32,
        Par::Seq,
    );
    o
}

/// Dense causal attention (the tests' reference): query row `r` (`q[n, heads·head_dim]`) sits at
/// position `cached + r` and sees keys `0 ..= cached + r` of `k`, `v` (`[ctx, kv_heads·head_dim]`).
pub fn reference_attention(q: &[f32], k: &[f32], v: &[f32], cached: usize, h: Heads) -> Vec<f32> {
    let hd = h.head_dim;
    let (qw, kw) = (h.heads * hd, h.kv_heads * hd);
    let n = q.len() / qw;
    let mut out = vec![0.0f32; n * qw];
    for r in 0..n {
        let visible = cached + r + 1;
        for head in 0..h.heads {
            let g = head / h.group();
            let qh = &q[r * qw + head * hd..r * qw + (head + 1) * hd];
            let mut s: Vec<f32> = (0..visible)
                .map(|j| {
                    let kj = &k[j * kw + g * hd..j * kw + (g + 1) * hd];
                    qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                })
                .collect();
            softmax(&mut s);
            for (j, p) in s.iter().enumerate() {
                let vj = &v[j * kw + g * hd..j * kw + (g + 1) * hd];
                for d in 0..hd {
                    out[r * qw + head * hd + d] += p * vj[d];
                }
            }
        }
    }
    out
}
