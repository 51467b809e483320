//! The GPU runner (feature `cuda`): cudarc with dynamic loading.
//!
//! Every shape is timed with CUDA events around each repetition (all pairs queued back to back,
//! read once at the end), after a warm-up, on one non-blocking stream; the median of the repeats
//! is recorded with the minimum and maximum. Inputs are random (a hash-based fill kernel on the
//! device, a xorshift fill on the host), and the inputs of small shapes rotate over several copies
//! so that the L2 cache does not hold them from one repetition to the next. Every CUDA, cuBLAS and
//! NVRTC result is checked; an out-of-memory error names the shape.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::{cublasOperation_t, cublasStatus_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{self, CUdevice_attribute as A, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{CompileError, CompileOptions, compile_ptx_with_opts};
use half::f16;
use servesim::profile::{CopyVariant, Measurement};

use super::kernels::{self, DECODE_STATIC_SMEM, DECODE_THREADS, MAX_HEAD_DIM, PREFILL_ROWS};
use super::reference::{self, Paged};
use super::{DeviceReport, GpuError, Progress, RunOptions, summarize};
use crate::plan::{Kernel, PlanItem, describe};

/// The CUDA version the bindings were generated for (cudarc feature `cuda-13000`).
const NEEDED_DRIVER: i32 = 13000;
/// Inputs of one shape are replicated until they span at least this many bytes (or 8 copies).
const MIN_ROTATION_BYTES: usize = 256 << 20;

type R<T> = Result<T, GpuError>;

fn describe_driver(e: &DriverError) -> String {
    let name = e
        .error_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e
        .error_string()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}: {text}")
}

/// Attach what was being done to a CUDA-side error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T> Ctx<T> for Result<T, DriverError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                GpuError::OutOfMemory {
                    what: what.to_string(),
                    detail: describe_driver(&e),
                }
            } else {
                GpuError::Cuda {
                    what: what.to_string(),
                    detail: describe_driver(&e),
                }
            }
        })
    }
}

impl<T> Ctx<T> for Result<T, CublasError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            if e.0 == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
                GpuError::OutOfMemory {
                    what: what.to_string(),
                    detail: format!("cuBLAS {e}"),
                }
            } else {
                GpuError::Cuda {
                    what: what.to_string(),
                    detail: format!("cuBLAS {e}"),
                }
            }
        })
    }
}

impl<T> Ctx<T> for Result<T, CompileError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            let detail = match &e {
                CompileError::CompileError { log, .. } => {
                    format!("NVRTC: {}", log.to_string_lossy())
                }
                other => format!("NVRTC: {other}"),
            };
            GpuError::Cuda {
                what: what.to_string(),
                detail,
            }
        })
    }
}

fn driver_present() -> bool {
    // SAFETY: only dlopen/dlclose of candidate library names.
    unsafe { sys::is_culib_present() }
}

fn driver_version() -> R<i32> {
    if !driver_present() {
        return Err(GpuError::NoDriver);
    }
    let mut v: std::ffi::c_int = 0;
    unsafe { sys::cuDriverGetVersion(&mut v) }
        .result()
        .ctx("cuDriverGetVersion")?;
    Ok(v)
}

fn nvrtc_version() -> Option<String> {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .ok()?;
    Some(format!("{major}.{minor}"))
}

/// Open device `ordinal`: every failure is an error, nothing panics.
fn open(ordinal: usize) -> R<(Arc<CudaContext>, DeviceReport)> {
    let found = driver_version()?;
    if found < NEEDED_DRIVER {
        return Err(GpuError::DriverTooOld {
            found,
            needed: NEEDED_DRIVER,
        });
    }
    let count = CudaContext::device_count().ctx("cuDeviceGetCount")?;
    if ordinal as i32 >= count {
        return Err(GpuError::NoDevice { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal).ctx("creating the CUDA context")?;
    let attr = |a: A| ctx.attribute(a).ctx("cuDeviceGetAttribute");
    let report = DeviceReport {
        name: ctx.name().ctx("cuDeviceGetName")?,
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
        memory_bytes: ctx.total_mem().ctx("cuDeviceTotalMem")? as u64,
        compute_capability: ctx.compute_capability().ctx("compute capability")?,
        driver_version: format!("{}.{}", found / 1000, found % 1000 / 10),
        nvrtc_version: nvrtc_version(),
        device_count: count as u32,
        l2_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
    };
    Ok((ctx, report))
}

/// Probe the driver and device `ordinal` without running anything.
pub fn probe(ordinal: usize) -> R<DeviceReport> {
    open(ordinal).map(|(_, r)| r)
}

fn arch_for(cc: (i32, i32)) -> Option<&'static str> {
    Some(match cc {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => return None,
    })
}

fn compile_options(arch: Option<&'static str>) -> CompileOptions {
    CompileOptions {
        arch,
        options: vec!["--std=c++17".into()],
        name: Some("servesim_calibrate.cu".into()),
        ..Default::default()
    }
}

/// Compile the kernels with NVRTC for `arch` (e.g. `compute_90`) without a GPU; the PTX's size.
/// Needs only libnvrtc.
pub fn compile_check(arch: Option<&'static str>) -> Result<usize, GpuError> {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::MissingLib("nvrtc"));
    }
    let ptx = compile_ptx_with_opts(kernels::SOURCE, compile_options(arch))
        .ctx("compiling the kernels")?;
    let text = ptx.to_src();
    for n in kernels::NAMES {
        if !text.contains(&format!(".entry {n}(")) {
            return Err(GpuError::Cuda {
                what: "compiling the kernels".into(),
                detail: format!("the PTX has no entry `{n}`"),
            });
        }
    }
    Ok(text.len())
}

struct Kernels {
    _module: Arc<CudaModule>,
    fill: CudaFunction,
    rmsnorm: CudaFunction,
    layernorm: CudaFunction,
    silu_mul: CudaFunction,
    relu: CudaFunction,
    rope: CudaFunction,
    add: CudaFunction,
    decode: CudaFunction,
    prefill: CudaFunction,
    gather: CudaFunction,
}

/// An open device: context, one stream, a cuBLAS handle on it, our kernels.
struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    report: DeviceReport,
    seed: u64,
    /// Dynamic shared memory (bytes) the decode kernel may use now.
    decode_smem: u32,
}

impl Gpu {
    fn open(ordinal: usize, seed: u64) -> R<Gpu> {
        let (ctx, report) = open(ordinal)?;
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::MissingLib("nvrtc"));
        }
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(GpuError::MissingLib("cublas"));
        }
        // One stream orders everything: cudarc's per-buffer event tracking is not needed and would
        // add event calls inside the timed regions.
        // SAFETY: every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().ctx("creating a stream")?;
        let blas = CudaBlas::new(stream.clone()).ctx("creating the cuBLAS handle")?;
        let opts = compile_options(arch_for(report.compute_capability));
        let ptx = compile_ptx_with_opts(kernels::SOURCE, opts).ctx("compiling the kernels")?;
        let module = ctx
            .load_module(ptx)
            .ctx("loading the kernels (an NVRTC newer than the driver gives CUDA_ERROR_UNSUPPORTED_PTX_VERSION)")?;
        let f = |n: &str| module.load_function(n).ctx(&format!("kernel {n}"));
        let k = Kernels {
            fill: f("fill_random_f16")?,
            rmsnorm: f("rmsnorm_f16")?,
            layernorm: f("layernorm_f16")?,
            silu_mul: f("silu_mul_f16")?,
            relu: f("relu_f16")?,
            rope: f("rope_f16")?,
            add: f("add_f16")?,
            decode: f("paged_decode_f16")?,
            prefill: f("paged_prefill_f16")?,
            gather: f("gather_copy")?,
            _module: module,
        };
        Ok(Gpu {
            ctx,
            stream,
            blas,
            k,
            report,
            seed,
            // Without opting in, static + dynamic shared memory is limited to 48 KiB.
            decode_smem: (48 << 10) - DECODE_STATIC_SMEM,
        })
    }

    fn grid_for(&self, n: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(256)
            .clamp(1, self.report.sm_count.max(1) as usize * 32);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn alloc_f16(&self, n: usize, what: &str) -> R<CudaSlice<f16>> {
        // SAFETY: every buffer is filled (random or by a kernel) before it is read.
        unsafe { self.stream.alloc::<f16>(n.max(1)) }
            .ctx(&format!("allocating {} MiB for {what}", (n * 2) >> 20))
    }

    /// Random values in [−scale, scale).
    fn fill(&mut self, buf: &mut CudaSlice<f16>, scale: f32) -> R<()> {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let n = buf.len() as i64;
        let cfg = self.grid_for(buf.len());
        let mut b = self.stream.launch_builder(&self.k.fill);
        b.arg(buf).arg(&n).arg(&self.seed).arg(&scale);
        // SAFETY: arguments match `fill_random_f16(f16_t*, long long, unsigned long long, float)`.
        unsafe { b.launch(cfg) }.ctx("fill_random_f16")?;
        Ok(())
    }

    fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T], what: &str) -> R<CudaSlice<T>> {
        self.stream.clone_htod(v).ctx(what)
    }

    fn event(&self) -> R<CudaEvent> {
        self.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .ctx("creating a timing event")
    }

    /// Warm up, then time `repeats` runs of `work(i)` (i counts every call, for rotation).
    fn time(
        &mut self,
        warmup: u32,
        repeats: u32,
        what: &str,
        work: &mut dyn FnMut(&mut Gpu, usize) -> R<()>,
    ) -> R<Vec<f64>> {
        for i in 0..warmup as usize {
            work(self, i)?;
        }
        self.stream.synchronize().ctx(what)?;
        let mut pairs = Vec::with_capacity(repeats as usize);
        for r in 0..repeats as usize {
            let (a, b) = (self.event()?, self.event()?);
            a.record(&self.stream).ctx(what)?;
            work(self, warmup as usize + r)?;
            b.record(&self.stream).ctx(what)?;
            pairs.push((a, b));
        }
        let mut out = Vec::with_capacity(pairs.len());
        for (a, b) in &pairs {
            out.push(a.elapsed_ms(b).ctx(what)? as f64 * 1e-3);
        }
        Ok(out)
    }
}

/// How many copies of `set_bytes` of inputs to rotate over.
fn rotation(set_bytes: usize) -> usize {
    MIN_ROTATION_BYTES.div_ceil(set_bytes.max(1)).clamp(1, 8)
}

fn gemm_cfg(m: usize, n: usize, k: usize) -> GemmConfig<f16> {
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

fn time_gemm(g: &mut Gpu, o: &RunOptions, m: usize, n: usize, k: usize, what: &str) -> R<Vec<f64>> {
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
fn time_small_ops(
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
    let (h_i, ffn_i, t_i) = (hidden as i32, ffn as i32, tokens as i32);
    let (hq_i, hkv_i, hd_i) = (rope_heads as i32, rope_kv_heads as i32, head_dim as i32);
    let eps = 1e-5f32;
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
        let norm =
            |g: &Gpu, out: &mut CudaSlice<f16>, inp: &cudarc::driver::CudaView<'_, f16>| -> R<()> {
                let mut b =
                    g.stream
                        .launch_builder(if gated { &g.k.rmsnorm } else { &g.k.layernorm });
                b.arg(out).arg(inp).arg(&nw);
                if !gated {
                    b.arg(&nb);
                }
                b.arg(&h_i).arg(&eps);
                // SAFETY: matches rmsnorm_f16 / layernorm_f16; buffers hold tokens·hidden.
                unsafe { b.launch(norm_cfg) }.ctx("norm").map(|_| ())
            };
        // input norm, rotary, residual add, post-attention norm, activation, residual add
        norm(g, &mut normed, &xs)?;
        if rope_heads > 0 {
            let mut qs = q.slice_mut(s * qn..(s + 1) * qn);
            let mut ks = kk.slice_mut(s * kn..(s + 1) * kn);
            let mut b = g.stream.launch_builder(&g.k.rope);
            b.arg(&mut qs)
                .arg(&mut ks)
                .arg(&pos)
                .arg(&t_i)
                .arg(&hq_i)
                .arg(&hkv_i)
                .arg(&hd_i);
            // SAFETY: matches rope_f16.
            unsafe { b.launch(g.grid_for(tokens * (rope_heads + rope_kv_heads) * head_dim / 2)) }
                .ctx("rope")?;
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
        let n_act = (tokens * ffn) as i64;
        {
            let mut b = g
                .stream
                .launch_builder(if gated { &g.k.silu_mul } else { &g.k.relu });
            b.arg(&mut act).arg(&gus);
            if gated {
                b.arg(&ffn_i);
            }
            b.arg(&n_act);
            // SAFETY: matches silu_mul_f16 / relu_f16 (relu reads the first tokens·ffn of gus).
            unsafe { b.launch(g.grid_for(tokens * ffn)) }.ctx("activation")?;
        }
        let mut b = g.stream.launch_builder(&g.k.add);
        b.arg(&mut normed).arg(&xs).arg(&rs_view).arg(&n_th);
        // SAFETY: matches add_f16.
        unsafe { b.launch(g.grid_for(th)) }.ctx("add").map(|_| ())
    })
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
fn time_decode(
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
fn time_prefill(
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

/// Host and device pools shared by every copy measurement (allocated and filled once).
struct CopyPools {
    bytes: usize,
    device: CudaSlice<f16>,
    device_ptr: u64,
    pinned: PinnedHostSlice<u8>,
    pinned_ptr: *mut u8,
    /// The pinned pool's address in the device's address space (mapped memory).
    pinned_dev: u64,
    pageable: Vec<u8>,
}

fn xorshift_fill(buf: &mut [u8], seed: u64) {
    let mut s = seed | 1;
    for c in buf.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let b = s.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

impl CopyPools {
    fn new(g: &mut Gpu, bytes: usize, seed: u64) -> R<CopyPools> {
        let what = "the host↔GPU copy pools";
        let mut device = g.alloc_f16(bytes / 2, what)?;
        g.fill(&mut device, 1.0)?;
        let (device_ptr, _) = device.device_ptr(&g.stream);
        // Page-locked, mapped into the device address space (for the gather kernel), not
        // write-combined (the host reads what D2H copies write).
        // SAFETY: filled right below before any read.
        let mut pinned = unsafe {
            g.ctx.alloc_pinned_with_flags::<u8>(
                bytes,
                sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP,
            )
        }
        .ctx(&format!(
            "allocating {} MiB of pinned host memory",
            bytes >> 20
        ))?;
        xorshift_fill(pinned.as_mut_slice().ctx(what)?, seed);
        let pinned_ptr = pinned.as_mut_ptr().ctx(what)?;
        let mut pinned_dev: sys::CUdeviceptr = 0;
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut pinned_dev, pinned_ptr as *mut c_void, 0) }
            .result()
            .ctx("mapping pinned host memory into the device address space")?;
        let mut pageable = vec![0u8; bytes];
        xorshift_fill(&mut pageable, seed ^ 1);
        Ok(CopyPools {
            bytes,
            device,
            device_ptr,
            pinned,
            pinned_ptr,
            pinned_dev,
            pageable,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn time_copy(
    g: &mut Gpu,
    o: &RunOptions,
    pools: &mut CopyPools,
    h2d: bool,
    variant: CopyVariant,
    chunks: usize,
    chunk_bytes: usize,
    what: &str,
) -> R<Vec<f64>> {
    if !chunk_bytes.is_multiple_of(16) {
        return Err(GpuError::Unsupported(format!(
            "{what}: chunk sizes must be multiples of 16 bytes"
        )));
    }
    let slots = pools.bytes / chunk_bytes;
    if slots < 2 * chunks {
        return Err(GpuError::Unsupported(format!(
            "{what}: the copy pools hold {slots} chunks, need {}",
            2 * chunks
        )));
    }
    // Two rotations of scattered chunk placements on both sides.
    let seed = o.seed ^ (chunks as u64) << 20 ^ chunk_bytes as u64;
    let host_slots = reference::permutation(slots, seed);
    let dev_slots = reference::permutation(slots, seed ^ 0xABCD);
    let offs = |v: &[usize], r: usize| -> Vec<i64> {
        v[r * chunks..(r + 1) * chunks]
            .iter()
            .map(|&s| (s * chunk_bytes) as i64)
            .collect()
    };
    let host_offs = [offs(&host_slots, 0), offs(&host_slots, 1)];
    let dev_offs = [offs(&dev_slots, 0), offs(&dev_slots, 1)];
    let (dev, pinned_ptr, pinned_dev) = (pools.device_ptr, pools.pinned_ptr, pools.pinned_dev);
    let pageable = pools.pageable.as_mut_ptr();
    let _keep = (&pools.device, &pools.pinned);
    match variant {
        CopyVariant::PinnedGather => {
            let d_host = [
                g.upload(&host_offs[0], what)?,
                g.upload(&host_offs[1], what)?,
            ];
            let d_dev = [g.upload(&dev_offs[0], what)?, g.upload(&dev_offs[1], what)?];
            let cfg = LaunchConfig {
                grid_dim: (chunks.min(1024) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (n_i, cb) = (chunks as i32, chunk_bytes as i64);
            g.time(o.warmup, o.repeats, what, &mut |g, i| {
                let r = i % 2;
                let (src, dst, so, dso) = if h2d {
                    (pinned_dev, dev, &d_host[r], &d_dev[r])
                } else {
                    (dev, pinned_dev, &d_dev[r], &d_host[r])
                };
                let mut b = g.stream.launch_builder(&g.k.gather);
                b.arg(&src).arg(&dst).arg(so).arg(dso).arg(&cb).arg(&n_i);
                // SAFETY: every offset + chunk_bytes lies inside its pool.
                unsafe { b.launch(cfg) }.ctx(what).map(|_| ())
            })
        }
        CopyVariant::PinnedMemcpy | CopyVariant::PageableMemcpy => {
            let host = if variant == CopyVariant::PinnedMemcpy {
                pinned_ptr
            } else {
                pageable
            };
            g.time(o.warmup, o.repeats, what, &mut |g, i| {
                let r = i % 2;
                let st = g.stream.cu_stream();
                for c in 0..chunks {
                    let h = unsafe { host.add(host_offs[r][c] as usize) };
                    let d = dev + dev_offs[r][c] as u64;
                    // SAFETY: both ranges lie inside their pools, which outlive the copies
                    // (the stream is synchronised before the pools are dropped).
                    let res = unsafe {
                        if h2d {
                            sys::cuMemcpyHtoDAsync_v2(d, h as *const c_void, chunk_bytes, st)
                        } else {
                            sys::cuMemcpyDtoHAsync_v2(h as *mut c_void, d, chunk_bytes, st)
                        }
                    };
                    res.result().ctx(what)?;
                }
                Ok(())
            })
        }
    }
}

#[cfg(feature = "nccl")]
fn time_all_reduce(
    g: &mut Gpu,
    o: &RunOptions,
    bytes: usize,
    gpus: usize,
    what: &str,
) -> R<Vec<f64>> {
    use cudarc::nccl::{Comm, ReduceOp, group_end, group_start};
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err(GpuError::MissingLib("nccl"));
    }
    let nccl = |e: cudarc::nccl::result::NcclError| GpuError::Cuda {
        what: what.to_string(),
        detail: format!("NCCL error {:?}", e.0),
    };
    if (g.report.device_count as usize) < gpus {
        return Err(GpuError::Unsupported(format!(
            "{what}: needs {gpus} GPUs, {} visible",
            g.report.device_count
        )));
    }
    let mut streams = vec![g.stream.clone()];
    for i in 1..gpus {
        let c = CudaContext::new(i).ctx("creating a peer context")?;
        unsafe { c.disable_event_tracking() };
        streams.push(c.new_stream().ctx("creating a peer stream")?);
    }
    let comms = Comm::from_devices(streams.clone()).map_err(nccl)?;
    let n = bytes / 2;
    let mut sends = Vec::new();
    let mut recvs = Vec::new();
    for s in &streams {
        sends.push(s.clone_htod(&vec![f16::from_f32(0.001); n]).ctx(what)?);
        recvs.push(unsafe { s.alloc::<f16>(n) }.ctx(what)?);
    }
    let streams2 = streams.clone();
    let samples = g.time(o.warmup, o.repeats, what, &mut |_, _| {
        group_start().map_err(nccl)?;
        for ((c, s), r) in comms.iter().zip(&sends).zip(recvs.iter_mut()) {
            c.all_reduce(s, r, &ReduceOp::Sum).map_err(nccl)?;
        }
        group_end().map_err(nccl)?;
        Ok(())
    })?;
    for s in &streams2 {
        s.synchronize().ctx(what)?;
    }
    Ok(samples)
}

#[cfg(not(feature = "nccl"))]
fn time_all_reduce(_: &mut Gpu, _: &RunOptions, _: usize, _: usize, what: &str) -> R<Vec<f64>> {
    Err(GpuError::Unsupported(format!(
        "{what}: measuring all-reduce needs NCCL; build with: cargo build --release -p servesim-calibrate --features nccl"
    )))
}

fn check_heads(head_dim: u32, heads: u32, kv_heads: u32) -> R<()> {
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

/// Measure every item of a plan on device `opts.ordinal`.
pub fn measure(
    items: &[PlanItem],
    opts: &RunOptions,
    progress: Progress<'_>,
) -> Result<(DeviceReport, Vec<Measurement>), GpuError> {
    let mut g = Gpu::open(opts.ordinal, opts.seed)?;
    let pool_bytes = items
        .iter()
        .filter_map(|i| match i.kernel {
            Kernel::Copy {
                chunks,
                chunk_bytes,
                ..
            } => Some(2 * chunks as usize * chunk_bytes as usize),
            _ => None,
        })
        .max();
    let mut pools = match pool_bytes {
        Some(b) => Some(CopyPools::new(&mut g, b.max(64 << 20), opts.seed)?),
        None => None,
    };
    let mut rows = Vec::with_capacity(items.len());
    for (idx, item) in items.iter().enumerate() {
        let what = format!("{} ({})", item.op.name(), describe(&item.kernel));
        let samples = match item.kernel {
            Kernel::Gemm { m, n, k } => {
                time_gemm(&mut g, opts, m as usize, n as usize, k as usize, &what)?
            }
            Kernel::SmallOps {
                tokens,
                hidden,
                ffn,
                gated,
                rope_heads,
                rope_kv_heads,
                head_dim,
            } => time_small_ops(
                &mut g,
                opts,
                tokens as usize,
                hidden as usize,
                ffn as usize,
                gated,
                rope_heads as usize,
                rope_kv_heads as usize,
                head_dim as usize,
                &what,
            )?,
            Kernel::AttnDecode {
                batch,
                context,
                heads,
                kv_heads,
                head_dim,
                block_tokens,
            } => {
                check_heads(head_dim, heads, kv_heads)?;
                time_decode(
                    &mut g,
                    opts,
                    batch as usize,
                    context as usize,
                    heads as usize,
                    kv_heads as usize,
                    head_dim as usize,
                    block_tokens as usize,
                    &what,
                )?
            }
            Kernel::AttnPrefill {
                chunk,
                cached,
                heads,
                kv_heads,
                head_dim,
                block_tokens,
            } => {
                check_heads(head_dim, heads, kv_heads)?;
                time_prefill(
                    &mut g,
                    opts,
                    chunk as usize,
                    cached as usize,
                    heads as usize,
                    kv_heads as usize,
                    head_dim as usize,
                    block_tokens as usize,
                    &what,
                )?
            }
            Kernel::Copy {
                host_to_device,
                variant,
                chunks,
                chunk_bytes,
            } => {
                let p = pools
                    .as_mut()
                    .expect("pools exist when the plan has copies");
                time_copy(
                    &mut g,
                    opts,
                    p,
                    host_to_device,
                    variant,
                    chunks as usize,
                    chunk_bytes as usize,
                    &what,
                )?
            }
            Kernel::AllReduce { bytes, gpus } => {
                time_all_reduce(&mut g, opts, bytes as usize, gpus as usize, &what)?
            }
        };
        let (median, min, max) = summarize(&samples).ok_or_else(|| GpuError::Cuda {
            what: what.clone(),
            detail: "no samples".into(),
        })?;
        if !(median.is_finite() && median > 0.0) {
            return Err(GpuError::Cuda {
                what,
                detail: format!("measured a non-positive time {median} s"),
            });
        }
        rows.push(Measurement {
            op: item.op,
            x: item.x,
            y: item.y,
            time_s: median,
            min_s: Some(min),
            max_s: Some(max),
            repeats: Some(samples.len() as u32),
            source: "measured".into(),
        });
        progress(idx, items.len(), item, median);
    }
    g.stream.synchronize().ctx("final synchronisation")?;
    drop(pools);
    Ok((g.report.clone(), rows))
}

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
    let check = |name: &str, err: f32, tol: f32, out: &mut String| -> R<()> {
        *out += &format!("{name:<28} max |GPU − CPU| = {err:.2e} (tolerance {tol:.0e})\n");
        if err.is_finite() && err <= tol {
            Ok(())
        } else {
            Err(GpuError::SelfTest(format!(
                "{name}: max abs error {err} > {tol}"
            )))
        }
    };
    let s = g.stream.clone();
    let dl = |v: &CudaSlice<f16>| {
        s.clone_dtoh(v)
            .ctx("copying results back")
            .map(|v| to_f32(&v))
    };

    // GEMM.
    let (m, n, k) = (64usize, 48usize, 96usize);
    let x = rounded(&reference::pseudo_random(m * k, 1));
    let w = rounded(&reference::pseudo_random(n * k, 2));
    let dx = g.upload(&to_f16(&x), "gemm")?;
    let dw = g.upload(&to_f16(&w), "gemm")?;
    let mut dy = g.alloc_f16(m * n, "gemm")?;
    unsafe { g.blas.gemm(gemm_cfg(m, n, k), &dw, &dx, &mut dy) }.ctx("gemm")?;
    check(
        "cuBLAS linear (x·Wᵀ)",
        max_abs_diff(&dl(&dy)?, &reference::linear_ref(&x, &w, m, n, k)),
        0.05,
        &mut out,
    )?;

    // RMSNorm and SiLU·mul.
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
        max_abs_diff(&dl(&dn)?, &reference::rmsnorm_ref(&xv, &wv, h, 1e-5)),
        0.02,
        &mut out,
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
        max_abs_diff(&dl(&da)?, &reference::silu_mul_ref(&gu, f)),
        0.01,
        &mut out,
    )?;

    // Paged decode and prefill (GQA 4 query heads on 2 KV heads, scattered blocks).
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
            .arg(&dkc)
            .arg(&dvc)
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
    let want = reference::paged_decode_ref(&geo, &q, &kc, &vc, &tables, &lens, per_seq);
    check(
        "paged decode attention",
        max_abs_diff(&dl(&dout)?, &want),
        0.01,
        &mut out,
    )?;
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
        b.arg(&mut doutp).arg(&dqp).arg(&dkc).arg(&dvc).arg(&dtp);
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
    let want = reference::paged_prefill_ref(&geo, &qp, &kc, &vc, &table, cached, chunk);
    check(
        "paged prefill attention",
        max_abs_diff(&dl(&doutp)?, &want),
        0.01,
        &mut out,
    )?;

    // Copies: per-chunk memcpy and the gather kernel move the right bytes both ways.
    let mut pools = CopyPools::new(&mut g, 4 << 20, opts.seed)?;
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
            &mut g,
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
        out += &format!(
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

    // A large GEMM, timed.
    let o = RunOptions {
        warmup: 3,
        repeats: 20,
        ..opts.clone()
    };
    let samples = time_gemm(&mut g, &o, 4096, 4096, 4096, "4096³ fp16 GEMM")?;
    let (med, _, _) = summarize(&samples).unwrap_or((f64::NAN, 0.0, 0.0));
    out += &format!(
        "4096³ fp16 GEMM: median {:.3} ms = {:.0} TFLOP/s\nself-test passed in {:.1} s\n",
        med * 1e3,
        2.0 * 4096f64.powi(3) / med / 1e12,
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
