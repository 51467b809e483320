//! The self-test: every kernel checked against its CPU reference on small inputs, the copies
//! checked byte for byte, and a large GEMM timed.

use std::time::Instant;

use cudarc::cublas::Gemm;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::f16;
use servesim::profile::CopyVariant;

use super::R;
use super::compute::{gemm_cfg, time_gemm};
use super::copy::{CopyPools, time_copy};
use super::device::Gpu;
use super::error::Ctx;
use crate::gpu::kernels::{DECODE_THREADS, PREFILL_ROWS};
use crate::gpu::reference::{self, Paged};
use crate::gpu::{GpuError, RunOptions, summarize};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn to_f32(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn rounded(v: &[f32]) -> Vec<f32> {
    to_f32(&to_f16(v))
}

/// Check every kernel against its CPU reference on small inputs and time a large GEMM; returns a
/// printable report, or the first mismatch as an error.
pub fn self_test(opts: &RunOptions) -> Result<String, GpuError> {
    let started = Instant::now();
    let mut g = Gpu::open(opts.ordinal, opts.seed)?;
    let mut out = device_line(&g, opts);
    check_gemm(&mut g, &mut out)?;
    check_norm_and_silu(&mut g, &mut out)?;
    check_attention(&mut g, &mut out)?;
    check_copies(&mut g, opts, &mut out)?;
    time_large_gemm(&mut g, opts, started, &mut out)?;
    Ok(out)
}

/// The report's first line: the device and its driver.
fn device_line(g: &Gpu, opts: &RunOptions) -> String {
    let mut out = String::new();
    let r = &g.report;
    out += &format!(
        "device {}: {} ({} SMs, {:.1} GiB, compute {}.{}, driver CUDA {}, NVRTC {}, {} device(s))\n",
        opts.ordinal,
        r.name,
        r.sm_count,
        r.memory_bytes as f64 / (1u64 << 30) as f64,
        r.compute_capability.0,
        r.compute_capability.1,
        r.driver_version,
        r.nvrtc_version.as_deref().unwrap_or("?"),
        r.device_count
    );
    out
}

/// Report one kernel's error against its reference; an error above `tol` fails the test.
fn check(name: &str, err: f32, tol: f32, out: &mut String) -> R<()> {
    *out += &format!("{name:<28} max |GPU − CPU| = {err:.2e} (tolerance {tol:.0e})\n");
    if err.is_finite() && err <= tol {
        Ok(())
    } else {
        Err(GpuError::SelfTest(format!(
            "{name}: max abs error {err} > {tol}"
        )))
    }
}

/// A device buffer copied back to the host, as f32.
fn download(g: &Gpu, v: &CudaSlice<f16>) -> R<Vec<f32>> {
    g.stream
        .clone_dtoh(v)
        .ctx("copying results back")
        .map(|v| to_f32(&v))
}

fn check_gemm(g: &mut Gpu, out: &mut String) -> R<()> {
    let (m, n, k) = (64usize, 48usize, 96usize);
    let x = rounded(&reference::pseudo_random(m * k, 1));
    let w = rounded(&reference::pseudo_random(n * k, 2));
    let dx = g.upload(&to_f16(&x), "gemm")?;
    let dw = g.upload(&to_f16(&w), "gemm")?;
    let mut dy = g.alloc_f16(m * n, "gemm")?;
    unsafe { g.blas.gemm(gemm_cfg(m, n, k), &dw, &dx, &mut dy) }.ctx("gemm")?;
    check(
        "cuBLAS linear (x·Wᵀ)",
        max_abs_diff(&download(g, &dy)?, &reference::linear_ref(&x, &w, m, n, k)),
        0.05,
        out,
    )
}

fn check_norm_and_silu(g: &mut Gpu, out: &mut String) -> R<()> {
    let (t, h, f) = (5usize, 256usize, 64usize);
    let xv = rounded(&reference::pseudo_random(t * h, 3));
    let wv = rounded(&reference::pseudo_random(h, 4));
    let (dxv, dwv) = (
        g.upload(&to_f16(&xv), "rmsnorm")?,
        g.upload(&to_f16(&wv), "rmsnorm")?,
    );
    let mut dn = g.alloc_f16(t * h, "rmsnorm")?;
    {
        let (h_i, eps) = (h as i32, 1e-5f32);
        let mut b = g.stream.launch_builder(&g.k.rmsnorm);
        b.arg(&mut dn).arg(&dxv).arg(&dwv).arg(&h_i).arg(&eps);
        let cfg = LaunchConfig {
            grid_dim: (t as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { b.launch(cfg) }.ctx("rmsnorm")?;
    }
    check(
        "rmsnorm",
        max_abs_diff(
            &download(g, &dn)?,
            &reference::rmsnorm_ref(&xv, &wv, h, 1e-5),
        ),
        0.02,
        out,
    )?;
    let gu = rounded(&reference::pseudo_random(t * 2 * f, 5));
    let dgu = g.upload(&to_f16(&gu), "silu")?;
    let mut da = g.alloc_f16(t * f, "silu")?;
    {
        let (f_i, n_i) = (f as i32, (t * f) as i64);
        let mut b = g.stream.launch_builder(&g.k.silu_mul);
        b.arg(&mut da).arg(&dgu).arg(&f_i).arg(&n_i);
        unsafe { b.launch(g.grid_for(t * f)) }.ctx("silu_mul")?;
    }
    check(
        "silu·mul",
        max_abs_diff(&download(g, &da)?, &reference::silu_mul_ref(&gu, f)),
        0.01,
        out,
    )?;
    Ok(())
}

/// Paged decode and prefill (GQA 4 query heads on 2 KV heads, scattered blocks) over one cache.
fn check_attention(g: &mut Gpu, out: &mut String) -> R<()> {
    let geo = Paged {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        block_size: 16,
    };
    let blocks = 12usize;
    let cache = blocks * geo.block_size * geo.num_kv_heads * geo.head_dim;
    let kc = rounded(&reference::pseudo_random(cache, 6));
    let vc = rounded(&reference::pseudo_random(cache, 7));
    let (dkc, dvc) = (
        g.upload(&to_f16(&kc), "attention")?,
        g.upload(&to_f16(&vc), "attention")?,
    );
    let cache = Cache {
        geo: &geo,
        blocks,
        kc: &kc,
        vc: &vc,
        dkc: &dkc,
        dvc: &dvc,
    };
    check_decode(g, &cache, out)?;
    check_prefill(g, &cache, out)
}

/// The paged KV cache both attention checks read: host copies and device copies.
struct Cache<'a> {
    geo: &'a Paged,
    blocks: usize,
    kc: &'a [f32],
    vc: &'a [f32],
    dkc: &'a CudaSlice<f16>,
    dvc: &'a CudaSlice<f16>,
}

fn check_decode(g: &mut Gpu, c: &Cache<'_>, out: &mut String) -> R<()> {
    let Cache {
        geo,
        blocks,
        kc,
        vc,
        dkc,
        dvc,
    } = *c;
    let lens = [5i32, 33, 17];
    let per_seq = 3usize;
    let tables: Vec<i32> = reference::permutation(blocks, 8)[..3 * per_seq]
        .iter()
        .map(|&b| b as i32)
        .collect();
    let q = rounded(&reference::pseudo_random(
        3 * geo.num_heads * geo.head_dim,
        9,
    ));
    let dq = g.upload(&to_f16(&q), "decode")?;
    let dt = g.upload(&tables, "decode")?;
    let dlens = g.upload(&lens, "decode")?;
    let mut dout = g.alloc_f16(q.len(), "decode")?;
    {
        let (h_i, kvh_i, hd_i, bs_i, mb_i) = (4i32, 2i32, 64i32, 16i32, per_seq as i32);
        let scale = 1.0 / 8.0f32;
        let mut b = g.stream.launch_builder(&g.k.decode);
        b.arg(&mut dout)
            .arg(&dq)
            .arg(dkc)
            .arg(dvc)
            .arg(&dt)
            .arg(&dlens);
        b.arg(&h_i)
            .arg(&kvh_i)
            .arg(&hd_i)
            .arg(&bs_i)
            .arg(&mb_i)
            .arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (4, 3, 1),
            block_dim: (DECODE_THREADS, 1, 1),
            shared_mem_bytes: 33 * 4,
        };
        unsafe { b.launch(cfg) }.ctx("paged decode")?;
    }
    let want = reference::paged_decode_ref(geo, &q, kc, vc, &tables, &lens, per_seq);
    check(
        "paged decode attention",
        max_abs_diff(&download(g, &dout)?, &want),
        0.01,
        out,
    )?;
    Ok(())
}

fn check_prefill(g: &mut Gpu, c: &Cache<'_>, out: &mut String) -> R<()> {
    let Cache {
        geo,
        blocks,
        kc,
        vc,
        dkc,
        dvc,
    } = *c;
    let (cached, chunk) = (21usize, 19usize);
    let table: Vec<i32> = reference::permutation(blocks, 10)[..(cached + chunk).div_ceil(16)]
        .iter()
        .map(|&b| b as i32)
        .collect();
    let qp = rounded(&reference::pseudo_random(
        chunk * geo.num_heads * geo.head_dim,
        11,
    ));
    let dqp = g.upload(&to_f16(&qp), "prefill")?;
    let dtp = g.upload(&table, "prefill")?;
    let mut doutp = g.alloc_f16(qp.len(), "prefill")?;
    {
        let (c_i, n_i, h_i, kvh_i, hd_i, bs_i) =
            (cached as i32, chunk as i32, 4i32, 2i32, 64i32, 16i32);
        let scale = 1.0 / 8.0f32;
        let mut b = g.stream.launch_builder(&g.k.prefill);
        b.arg(&mut doutp).arg(&dqp).arg(dkc).arg(dvc).arg(&dtp);
        b.arg(&c_i)
            .arg(&n_i)
            .arg(&h_i)
            .arg(&kvh_i)
            .arg(&hd_i)
            .arg(&bs_i)
            .arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (4, chunk.div_ceil(PREFILL_ROWS as usize) as u32, 1),
            block_dim: (PREFILL_ROWS * 32, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { b.launch(cfg) }.ctx("paged prefill")?;
    }
    let want = reference::paged_prefill_ref(geo, &qp, kc, vc, &table, cached, chunk);
    check(
        "paged prefill attention",
        max_abs_diff(&download(g, &doutp)?, &want),
        0.01,
        out,
    )?;
    Ok(())
}

/// Per-chunk memcpy and the gather kernel move the right bytes both ways.
fn check_copies(g: &mut Gpu, opts: &RunOptions, out: &mut String) -> R<()> {
    let mut pools = CopyPools::new(g, 4 << 20, opts.seed)?;
    for (h2d, variant) in [
        (true, CopyVariant::PinnedMemcpy),
        (true, CopyVariant::PinnedGather),
        (false, CopyVariant::PinnedGather),
        (false, CopyVariant::PageableMemcpy),
    ] {
        let o = RunOptions {
            warmup: 0,
            repeats: 1,
            ..opts.clone()
        };
        let (chunks, cb) = (8usize, 4096usize);
        time_copy(
            g,
            &o,
            &mut pools,
            h2d,
            variant,
            chunks,
            cb,
            "copy self-test",
        )?;
        g.stream.synchronize().ctx("copy self-test")?;
        let dev = pools.device_ptr;
        let mut dev_bytes = vec![0u8; pools.bytes];
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut dev_bytes, dev) }
            .ctx("reading the device pool")?;
        let host: &[u8] = match variant {
            CopyVariant::PageableMemcpy => &pools.pageable,
            _ => pools.pinned.as_slice().ctx("reading the pinned pool")?,
        };
        // Rotation 0 placements, as time_copy computes them (its single timed call is i = 0).
        let seed = o.seed ^ (chunks as u64) << 20 ^ cb as u64;
        let slots = pools.bytes / cb;
        let hs = reference::permutation(slots, seed);
        let ds = reference::permutation(slots, seed ^ 0xABCD);
        let bad = (0..chunks)
            .filter(|&c| {
                host[hs[c] * cb..(hs[c] + 1) * cb] != dev_bytes[ds[c] * cb..(ds[c] + 1) * cb]
            })
            .count();
        *out += &format!(
            "copy {} {:<16} {} of {chunks} chunks correct\n",
            if h2d { "h2d" } else { "d2h" },
            variant.name(),
            chunks - bad
        );
        if bad > 0 {
            return Err(GpuError::SelfTest(format!(
                "copy {} {}: {bad} of {chunks} chunks differ",
                if h2d { "h2d" } else { "d2h" },
                variant.name()
            )));
        }
    }
    drop(pools);
    Ok(())
}

/// A large GEMM, timed: the report's last lines.
fn time_large_gemm(g: &mut Gpu, opts: &RunOptions, started: Instant, out: &mut String) -> R<()> {
    let o = RunOptions {
        warmup: 3,
        repeats: 20,
        ..opts.clone()
    };
    let samples = time_gemm(g, &o, 4096, 4096, 4096, "4096³ fp16 GEMM")?;
    let (med, _, _) = summarize(&samples).unwrap_or((f64::NAN, 0.0, 0.0));
    *out += &format!(
        "4096³ fp16 GEMM: median {:.3} ms = {:.0} TFLOP/s\nself-test passed in {:.1} s\n",
        med * 1e3,
        2.0 * 4096f64.powi(3) / med / 1e12,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
