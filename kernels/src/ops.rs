//! The dense operators of a layer: linear layers as faer GEMMs, RMSNorm, rotary embeddings, the
//! gated SiLU, residual adds and the greedy pick. Row-major `[rows, width]` f32 buffers throughout.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Below this many multiply-adds a GEMM runs on one thread (a fork-join costs more than it saves).
pub const PAR_MIN_MACS: usize = 1 << 20;
/// Below this many rows the elementwise operators run on one thread.
pub const PAR_MIN_ROWS: usize = 64;
pub const NORM_EPS: f32 = 1e-5;
pub const ROPE_BASE: f32 = 10_000.0;

/// faer's parallelism for a GEMM of `macs` multiply-adds on `threads` threads.
pub fn par_for(macs: usize, threads: usize) -> Par {
    if threads <= 1 || macs < PAR_MIN_MACS {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// `y[t, n] = x[t, k] · w[k, n]` (or `+=` with `accumulate`). Contiguous row-major buffers only:
/// faer 0.24's strided row-major *mutable* view is broken, so none is built here.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    debug_assert!(x.len() >= t * k && w.len() == k * n && y.len() >= t * n);
    if t == 0 {
        return;
    }
    let a = MatRef::from_row_major_slice(&x[..t * k], t, k);
    let b = MatRef::from_row_major_slice(w, k, n);
    let c = MatMut::from_row_major_slice_mut(&mut y[..t * n], t, n);
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    matmul(c, accum, a, b, 1.0f32, par_for(t * k * n, threads));
}

/// `out[r] = x[r] / rms(x[r]) · gain` for each row of width `gain.len()`.
pub fn rms_norm(x: &[f32], gain: &[f32], out: &mut [f32]) {
    let w = gain.len();
    let rows = x.len() / w;
    let one = |(xr, or): (&[f32], &mut [f32])| {
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / w as f32 + NORM_EPS).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(gain) {
            *o = v * inv * g;
        }
    };
    if rows >= PAR_MIN_ROWS {
        x.par_chunks(w)
            .zip(out.par_chunks_mut(w))
            .for_each(|(a, b)| one((a, b)));
    } else {
        x.chunks(w).zip(out.chunks_mut(w)).for_each(one);
    }
}

/// Rotary embedding (rotate-half form) of the query and key heads of each row of a fused QKV
/// buffer (`[rows, (heads + 2·kv_heads)·head_dim]`, V untouched), row `r` at `positions[r]`.
pub fn rope(qkv: &mut [f32], positions: &[usize], heads: usize, kv_heads: usize, head_dim: usize) {
    let width = (heads + 2 * kv_heads) * head_dim;
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| ROPE_BASE.powf(-2.0 * i as f32 / head_dim as f32))
        .collect();
    let one = |(row, &pos): (&mut [f32], &usize)| {
        let (sin, cos): (Vec<f32>, Vec<f32>) =
            inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()).unzip();
        for h in row[..(heads + kv_heads) * head_dim].chunks_mut(head_dim) {
            let (a, b) = h.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
    };
    if positions.len() >= PAR_MIN_ROWS {
        qkv.par_chunks_mut(width).zip(positions).for_each(one);
    } else {
        qkv.chunks_mut(width).zip(positions).for_each(one);
    }
}

/// `out[r, i] = silu(gu[r, i]) · gu[r, ffn + i]` for each row of the fused gate/up buffer.
pub fn silu_gate(gu: &[f32], ffn: usize, out: &mut [f32]) {
    let one = |(g, o): (&[f32], &mut [f32])| {
        let (gate, up) = g.split_at(ffn);
        for ((o, &a), &u) in o.iter_mut().zip(gate).zip(up) {
            *o = a / (1.0 + (-a).exp()) * u;
        }
    };
    if gu.len() / (2 * ffn) >= PAR_MIN_ROWS {
        gu.par_chunks(2 * ffn)
            .zip(out.par_chunks_mut(ffn))
            .for_each(|(a, b)| one((a, b)));
    } else {
        gu.chunks(2 * ffn).zip(out.chunks_mut(ffn)).for_each(one);
    }
}

/// `x += y`.
pub fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Index of the largest value (the first one on ties); 0 for an empty row.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Dot product over 16 independent lanes (the compiler vectorises it).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, ar) = a.split_at(a.len() / 16 * 16);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(16).zip(bc.chunks_exact(16)) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (p, q) in y.iter_mut().zip(x) {
        *p += a * q;
    }
}

/// In-place softmax of `s` (max-subtracted).
#[inline(always)]
pub fn softmax(s: &mut [f32]) {
    let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in s.iter_mut() {
        *v *= inv;
    }
}
