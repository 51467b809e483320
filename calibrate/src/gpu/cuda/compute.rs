//! Timing of the operators of one iteration: the layer GEMMs (cuBLAS), the small ops (norms,
//! rotary embedding, activation, residual adds) and paged decode and prefill attention. Inputs
//! rotate over several copies so that the L2 cache does not hold them between repetitions.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::sys;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::f16;

use super::device::Gpu;
use super::error::Ctx;
use super::{MIN_ROTATION_BYTES, R};
use crate::gpu::kernels::{DECODE_THREADS, MAX_HEAD_DIM, PREFILL_ROWS};
use crate::gpu::reference;
use crate::gpu::{GpuError, RunOptions};

/// How many copies of `set_bytes` of inputs to rotate over.
fn rotation(set_bytes: usize) -> usize {
    MIN_ROTATION_BYTES.div_ceil(set_bytes.max(1)).clamp(1, 8)
}

pub(super) fn gemm_cfg(m: usize, n: usize, k: usize) -> GemmConfig<f16> {
    // y[m, n] = x[m, k] · W[n, k]ᵀ, row-major: column-major yᵀ = W · xᵀ with W transposed.
    GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: f16::ONE,
        lda: k as i32,
        ldb: k as i32,
        beta: f16::ZERO,
        ldc: n as i32,
    }
}

pub(super) fn time_gemm(
    g: &mut Gpu,
    o: &RunOptions,
    m: usize,
    n: usize,
    k: usize,
    what: &str,
) -> R<Vec<f64>> {
    let sets = rotation(2 * (m * k + n * k + m * n));
    let mut x = g.alloc_f16(sets * m * k, what)?;
    let mut w = g.alloc_f16(sets * n * k, what)?;
    let mut y = g.alloc_f16(sets * m * n, what)?;
    g.fill(&mut x, 1.0)?;
    g.fill(&mut w, 0.05)?;
    let cfg = gemm_cfg(m, n, k);
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let s = i % sets;
        let xs = x.slice(s * m * k..(s + 1) * m * k);
        let ws = w.slice(s * n * k..(s + 1) * n * k);
        let mut ys = y.slice_mut(s * m * n..(s + 1) * m * n);
        // SAFETY: the views hold exactly m·k, n·k and m·n elements.
        unsafe { g.blas.gemm(cfg, &ws, &xs, &mut ys) }.ctx(what)
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn time_small_ops(
    g: &mut Gpu,
    o: &RunOptions,
    tokens: usize,
    hidden: usize,
    ffn: usize,
    gated: bool,
    rope_heads: usize,
    rope_kv_heads: usize,
    head_dim: usize,
    what: &str,
) -> R<Vec<f64>> {
    let up = if gated { 2 * ffn } else { ffn };
    let set = 2 * tokens * (2 * hidden + up + (rope_heads + rope_kv_heads) * head_dim);
    let sets = rotation(set);
    let th = tokens * hidden;
    let mut x = g.alloc_f16(sets * th, what)?;
    let mut res = g.alloc_f16(sets * th, what)?;
    let mut gu = g.alloc_f16(sets * tokens * up, what)?;
    let qn = tokens * rope_heads * head_dim;
    let kn = tokens * rope_kv_heads * head_dim;
    let mut q = g.alloc_f16(sets * qn.max(1), what)?;
    let mut kk = g.alloc_f16(sets * kn.max(1), what)?;
    let mut nw = g.alloc_f16(hidden, what)?;
    let mut nb = g.alloc_f16(hidden, what)?;
    let mut normed = g.alloc_f16(th, what)?;
    let mut act = g.alloc_f16(tokens * ffn, what)?;
    for b in [&mut x, &mut res, &mut gu, &mut q, &mut kk, &mut nw, &mut nb] {
        g.fill(b, 1.0)?;
    }
    let pos: Vec<i32> = (0..tokens as i32).collect();
    let pos = g.upload(&pos, what)?;
    let norm_cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let s = i % sets;
        let xs = x.slice(s * th..(s + 1) * th);
        let mut rs = res.slice_mut(s * th..(s + 1) * th);
        let gus = gu.slice(s * tokens * up..(s + 1) * tokens * up);
        let norm = |g: &Gpu, out: &mut CudaSlice<f16>, inp: &CudaView<'_, f16>| -> R<()> {
            launch_norm(g, gated, out, inp, &nw, &nb, hidden, norm_cfg)
        };
        // input norm, rotary, residual add, post-attention norm, activation, residual add
        norm(g, &mut normed, &xs)?;
        if rope_heads > 0 {
            let mut qs = q.slice_mut(s * qn..(s + 1) * qn);
            let mut ks = kk.slice_mut(s * kn..(s + 1) * kn);
            let heads = (rope_heads, rope_kv_heads, head_dim);
            launch_rope(g, &mut qs, &mut ks, &pos, tokens, heads)?;
        }
        let n_th = th as i64;
        {
            let mut b = g.stream.launch_builder(&g.k.add);
            b.arg(&mut rs).arg(&xs).arg(&normed).arg(&n_th);
            // SAFETY: matches add_f16 (out may alias nothing here).
            unsafe { b.launch(g.grid_for(th)) }.ctx("add")?;
        }
        let rs_view = rs.slice(0..th);
        norm(g, &mut normed, &rs_view)?;
        launch_activation(g, gated, &mut act, &gus, tokens, ffn)?;
        let mut b = g.stream.launch_builder(&g.k.add);
        b.arg(&mut normed).arg(&xs).arg(&rs_view).arg(&n_th);
        // SAFETY: matches add_f16.
        unsafe { b.launch(g.grid_for(th)) }.ctx("add").map(|_| ())
    })
}

/// RMSNorm (gated MLP) or LayerNorm (with bias `nb`) of `inp` into `out`, one block per token.
#[allow(clippy::too_many_arguments)]
fn launch_norm(
    g: &Gpu,
    gated: bool,
    out: &mut CudaSlice<f16>,
    inp: &CudaView<'_, f16>,
    nw: &CudaSlice<f16>,
    nb: &CudaSlice<f16>,
    hidden: usize,
    norm_cfg: LaunchConfig,
) -> R<()> {
    let h_i = hidden as i32;
    let eps = 1e-5f32;
    let mut b = g
        .stream
        .launch_builder(if gated { &g.k.rmsnorm } else { &g.k.layernorm });
    b.arg(out).arg(inp).arg(nw);
    if !gated {
        b.arg(nb);
    }
    b.arg(&h_i).arg(&eps);
    // SAFETY: matches rmsnorm_f16 / layernorm_f16; buffers hold tokens·hidden.
    unsafe { b.launch(norm_cfg) }.ctx("norm").map(|_| ())
}

/// Rotary embedding of the query and key rows of `tokens` tokens at positions `pos`;
/// `heads` = (query heads, KV heads, head dim).
fn launch_rope(
    g: &Gpu,
    qs: &mut CudaViewMut<'_, f16>,
    ks: &mut CudaViewMut<'_, f16>,
    pos: &CudaSlice<i32>,
    tokens: usize,
    (rope_heads, rope_kv_heads, head_dim): (usize, usize, usize),
) -> R<()> {
    let t_i = tokens as i32;
    let (hq_i, hkv_i, hd_i) = (rope_heads as i32, rope_kv_heads as i32, head_dim as i32);
    let mut b = g.stream.launch_builder(&g.k.rope);
    b.arg(qs)
        .arg(ks)
        .arg(pos)
        .arg(&t_i)
        .arg(&hq_i)
        .arg(&hkv_i)
        .arg(&hd_i);
    // SAFETY: matches rope_f16.
    unsafe { b.launch(g.grid_for(tokens * (rope_heads + rope_kv_heads) * head_dim / 2)) }
        .ctx("rope")?;
    Ok(())
}

/// The MLP activation of `tokens` rows: SiLU(gate)·up (gated) or ReLU into `act`.
fn launch_activation(
    g: &Gpu,
    gated: bool,
    act: &mut CudaSlice<f16>,
    gus: &CudaView<'_, f16>,
    tokens: usize,
    ffn: usize,
) -> R<()> {
    let ffn_i = ffn as i32;
    let n_act = (tokens * ffn) as i64;
    let mut b = g
        .stream
        .launch_builder(if gated { &g.k.silu_mul } else { &g.k.relu });
    b.arg(act).arg(gus);
    if gated {
        b.arg(&ffn_i);
    }
    b.arg(&n_act);
    // SAFETY: matches silu_mul_f16 / relu_f16 (relu reads the first tokens·ffn of gus).
    unsafe { b.launch(g.grid_for(tokens * ffn)) }.ctx("activation")?;
    Ok(())
}

/// Random block tables: `sets` tables of `len` distinct blocks each out of a pool of
/// `sets · len` blocks.
fn block_tables(sets: usize, len: usize, seed: u64) -> Vec<i32> {
    reference::permutation(sets * len, seed)
        .into_iter()
        .map(|b| b as i32)
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn time_decode(
    g: &mut Gpu,
    o: &RunOptions,
    batch: usize,
    context: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    bs: usize,
    what: &str,
) -> R<Vec<f64>> {
    let per_seq = context.div_ceil(bs);
    let block_elems = bs * kv_heads * head_dim;
    let sets = rotation(2 * 2 * batch * per_seq * block_elems);
    let blocks = sets * batch * per_seq;
    let mut kc = g.alloc_f16(blocks * block_elems, what)?;
    let mut vc = g.alloc_f16(blocks * block_elems, what)?;
    let mut q = g.alloc_f16(batch * heads * head_dim, what)?;
    let mut out = g.alloc_f16(batch * heads * head_dim, what)?;
    g.fill(&mut kc, 1.0)?;
    g.fill(&mut vc, 1.0)?;
    g.fill(&mut q, 1.0)?;
    let tables = g.upload(
        &block_tables(sets, batch * per_seq, o.seed ^ context as u64),
        what,
    )?;
    let lens = g.upload(&vec![context as i32; batch], what)?;
    let smem = (context * 4) as u32;
    if smem > g.decode_smem {
        g.k.decode
            .set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .ctx("allowing the decode kernel more shared memory")?;
        g.decode_smem = smem;
    }
    let cfg = LaunchConfig {
        grid_dim: (heads as u32, batch as u32, 1),
        block_dim: (DECODE_THREADS, 1, 1),
        shared_mem_bytes: smem,
    };
    let (h_i, kvh_i, hd_i, bs_i, mb_i) = (
        heads as i32,
        kv_heads as i32,
        head_dim as i32,
        bs as i32,
        per_seq as i32,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let s = i % sets;
        let t = tables.slice(s * batch * per_seq..(s + 1) * batch * per_seq);
        let mut b = g.stream.launch_builder(&g.k.decode);
        b.arg(&mut out)
            .arg(&q)
            .arg(&kc)
            .arg(&vc)
            .arg(&t)
            .arg(&lens)
            .arg(&h_i)
            .arg(&kvh_i)
            .arg(&hd_i)
            .arg(&bs_i)
            .arg(&mb_i)
            .arg(&scale);
        // SAFETY: matches paged_decode_f16; tables index blocks < pool size.
        unsafe { b.launch(cfg) }.ctx(what).map(|_| ())
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn time_prefill(
    g: &mut Gpu,
    o: &RunOptions,
    chunk: usize,
    cached: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    bs: usize,
    what: &str,
) -> R<Vec<f64>> {
    let per_seq = (cached + chunk).div_ceil(bs);
    let block_elems = bs * kv_heads * head_dim;
    let sets = rotation(2 * 2 * per_seq * block_elems + 4 * chunk * heads * head_dim);
    let mut kc = g.alloc_f16(sets * per_seq * block_elems, what)?;
    let mut vc = g.alloc_f16(sets * per_seq * block_elems, what)?;
    let qn = chunk * heads * head_dim;
    let mut q = g.alloc_f16(sets * qn, what)?;
    let mut out = g.alloc_f16(qn, what)?;
    g.fill(&mut kc, 1.0)?;
    g.fill(&mut vc, 1.0)?;
    g.fill(&mut q, 1.0)?;
    let tables = g.upload(&block_tables(sets, per_seq, o.seed ^ chunk as u64), what)?;
    let cfg = LaunchConfig {
        grid_dim: (
            heads as u32,
            chunk.div_ceil(PREFILL_ROWS as usize) as u32,
            1,
        ),
        block_dim: (PREFILL_ROWS * 32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (c_i, n_i, h_i, kvh_i, hd_i, bs_i) = (
        cached as i32,
        chunk as i32,
        heads as i32,
        kv_heads as i32,
        head_dim as i32,
        bs as i32,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let s = i % sets;
        let t = tables.slice(s * per_seq..(s + 1) * per_seq);
        let qs = q.slice(s * qn..(s + 1) * qn);
        let mut b = g.stream.launch_builder(&g.k.prefill);
        b.arg(&mut out)
            .arg(&qs)
            .arg(&kc)
            .arg(&vc)
            .arg(&t)
            .arg(&c_i)
            .arg(&n_i)
            .arg(&h_i)
            .arg(&kvh_i)
            .arg(&hd_i)
            .arg(&bs_i)
            .arg(&scale);
        // SAFETY: matches paged_prefill_f16.
        unsafe { b.launch(cfg) }.ctx(what).map(|_| ())
    })
}

pub(super) fn check_heads(head_dim: u32, heads: u32, kv_heads: u32) -> R<()> {
    if !head_dim.is_multiple_of(32)
        || head_dim > MAX_HEAD_DIM
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(GpuError::Unsupported(format!(
            "the attention kernels need head_dim a multiple of 32 and ≤ {MAX_HEAD_DIM} and query heads a multiple of KV heads (got head_dim {head_dim}, {heads}/{kv_heads} heads)"
        )));
    }
    Ok(())
}
