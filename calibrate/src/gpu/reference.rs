//! CPU references of the GPU kernels (same layouts as [`super::kernels`]), used by the GPU
//! self-test to check results, and unit-tested here on hand-made inputs.

/// Geometry of a paged KV cache.
#[derive(Debug, Clone, Copy)]
pub struct Paged {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

impl Paged {
    fn at(&self, cache: &[f32], table: &[i32], t: usize, kvh: usize, d: usize) -> f32 {
        let phys = table[t / self.block_size] as usize;
        cache[((phys * self.block_size + t % self.block_size) * self.num_kv_heads + kvh)
            * self.head_dim
            + d]
    }

    fn kv_head(&self, h: usize) -> usize {
        h / (self.num_heads / self.num_kv_heads)
    }

    /// Softmax-weighted V of one query vector over tokens `0..len` of one sequence.
    fn attend(
        &self,
        qv: &[f32],
        k: &[f32],
        v: &[f32],
        table: &[i32],
        len: usize,
        h: usize,
    ) -> Vec<f32> {
        let kvh = self.kv_head(h);
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let logits: Vec<f32> = (0..len)
            .map(|t| {
                (0..self.head_dim)
                    .map(|d| qv[d] * self.at(k, table, t, kvh, d))
                    .sum::<f32>()
                    * scale
            })
            .collect();
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = logits.iter().map(|x| (x - m).exp()).collect();
        let sum: f32 = e.iter().sum();
        (0..self.head_dim)
            .map(|d| {
                (0..len)
                    .map(|t| e[t] * self.at(v, table, t, kvh, d))
                    .sum::<f32>()
                    / sum
            })
            .collect()
    }
}

/// `paged_decode_f16`: `q` `[seqs, heads, hd]` → `[seqs, heads, hd]`.
pub fn paged_decode_ref(
    g: &Paged,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    block_tables: &[i32],
    context_lens: &[i32],
    max_blocks_per_seq: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(q.len());
    for (s, &len) in context_lens.iter().enumerate() {
        let table = &block_tables[s * max_blocks_per_seq..(s + 1) * max_blocks_per_seq];
        for h in 0..g.num_heads {
            let qv = &q[(s * g.num_heads + h) * g.head_dim..][..g.head_dim];
            out.extend(g.attend(qv, k, v, table, len as usize, h));
        }
    }
    out
}

/// `paged_prefill_f16`: `q` `[chunk, heads, hd]` of one sequence whose query `i` is at position
/// `cached + i` → `[chunk, heads, hd]`.
pub fn paged_prefill_ref(
    g: &Paged,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    block_table: &[i32],
    cached: usize,
    chunk: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(q.len());
    for i in 0..chunk {
        for h in 0..g.num_heads {
            let qv = &q[(i * g.num_heads + h) * g.head_dim..][..g.head_dim];
            out.extend(g.attend(qv, k, v, block_table, cached + i + 1, h));
        }
    }
    out
}

/// `rmsnorm_f16` on `[tokens, hidden]`.
pub fn rmsnorm_ref(x: &[f32], w: &[f32], hidden: usize, eps: f32) -> Vec<f32> {
    x.chunks(hidden)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / hidden as f32 + eps).sqrt();
            row.iter().zip(w).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

/// `silu_mul_f16`: `[tokens, 2·ffn]` → `[tokens, ffn]`.
pub fn silu_mul_ref(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    gate_up
        .chunks(2 * ffn)
        .flat_map(|row| (0..ffn).map(move |j| row[j] / (1.0 + (-row[j]).exp()) * row[ffn + j]))
        .collect()
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` (a linear layer).
pub fn linear_ref(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
    }
    y
}

/// A deterministic pseudo-random permutation of `0..n` (for scattered block tables).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Deterministic values in [−1, 1) (host-side test data).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Paged {
        Paged {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            block_size: 4,
        }
    }

    #[test]
    fn constant_values_come_back_unchanged() {
        let g = geometry();
        let blocks = 6;
        let n = blocks * g.block_size * g.num_kv_heads * g.head_dim;
        let k = pseudo_random(n, 1);
        let v = vec![0.5f32; n];
        let q = pseudo_random(2 * g.num_heads * g.head_dim, 2);
        let tables = [5, 2, 0, 1, 3, 4];
        let out = paged_decode_ref(&g, &q, &k, &v, &tables, &[7, 9], 3);
        assert!(out.iter().all(|x| (x - 0.5).abs() < 1e-6));
    }

    #[test]
    fn prefill_last_row_equals_decode_and_first_row_sees_only_itself() {
        let g = geometry();
        let n = 8 * g.block_size * g.num_kv_heads * g.head_dim;
        let (k, v) = (pseudo_random(n, 3), pseudo_random(n, 4));
        let table: Vec<i32> = permutation(8, 5).iter().map(|&b| b as i32).collect();
        let (cached, chunk) = (5, 6);
        let q = pseudo_random(chunk * g.num_heads * g.head_dim, 6);
        let pre = paged_prefill_ref(&g, &q, &k, &v, &table, cached, chunk);
        let stride = g.num_heads * g.head_dim;
        let last_q = &q[(chunk - 1) * stride..];
        let dec = paged_decode_ref(&g, last_q, &k, &v, &table, &[(cached + chunk) as i32], 8);
        for (a, b) in pre[(chunk - 1) * stride..].iter().zip(&dec) {
            assert!((a - b).abs() < 1e-6);
        }
        // With no prefix, query 0 attends only to token 0: its output is V of token 0.
        let pre0 = paged_prefill_ref(&g, &q, &k, &v, &table, 0, 1);
        let p = &g;
        for h in 0..g.num_heads {
            for d in 0..g.head_dim {
                let want = p.at(&v, &table, 0, p.kv_head(h), d);
                assert!((pre0[h * g.head_dim + d] - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn small_references_by_hand() {
        let y = rmsnorm_ref(&[3.0, 4.0], &[1.0, 2.0], 2, 0.0);
        let rms = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / rms).abs() < 1e-6 && (y[1] - 8.0 / rms).abs() < 1e-6);
        let s = silu_mul_ref(&[0.0, 2.0], 1);
        assert_eq!(s, vec![0.0]);
        // [1 2] · [[1 0] [0 1] [1 1]]ᵀ = [1 2 3]
        assert_eq!(
            linear_ref(&[1.0, 2.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 1, 3, 2),
            vec![1.0, 2.0, 3.0]
        );
        let p = permutation(50, 7);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(p, sorted);
        assert!(
            pseudo_random(1000, 1)
                .iter()
                .all(|x| (-1.0..1.0).contains(x))
        );
    }
}
