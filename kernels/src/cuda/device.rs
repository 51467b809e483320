//! Opening the GPU without panicking (cudarc loads libcuda, libnvrtc and libcublas lazily and
//! panics when one is missing, so each is probed first), compiling the kernels, and the launch
//! helpers the forward pass uses.

use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{self, CUdevice_attribute as A, CUfunction_attribute as F};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::source::{NAMES, SOURCE, THREADS};
use crate::BackendError;

/// The CUDA version the bindings were generated for (cudarc feature `cuda-13000`).
const NEEDED_DRIVER: i32 = 13000;
/// Largest grid of the grid-stride kernels.
const MAX_GRID: usize = 8192;

pub(super) type R<T> = Result<T, BackendError>;

/// Any CUDA, cuBLAS or NVRTC error as a [`BackendError::Device`] naming what was being done.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Debug> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| BackendError::Device(format!("{what}: {e:?}")))
    }
}

pub(super) fn config(msg: impl std::fmt::Display) -> BackendError {
    BackendError::Config(format!("CUDA backend: {msg}"))
}

/// Device `ordinal`'s context, or a [`BackendError::Config`] saying what is missing.
fn open_context(ordinal: usize) -> R<Arc<CudaContext>> {
    // SAFETY: the probes only dlopen/dlclose candidate library names.
    if !unsafe { sys::is_culib_present() } {
        return Err(config(
            "no CUDA driver found (libcuda is not on this machine's loader path); --device cuda needs an NVIDIA GPU",
        ));
    }
    let mut found: std::ffi::c_int = 0;
    unsafe { sys::cuDriverGetVersion(&mut found) }
        .result()
        .map_err(|e| config(format!("cuDriverGetVersion failed: {e:?}")))?;
    if found < NEEDED_DRIVER {
        return Err(config(format!(
            "the CUDA driver supports CUDA {}.{}, this build needs {}.{} or newer",
            found / 1000,
            found % 1000 / 10,
            NEEDED_DRIVER / 1000,
            NEEDED_DRIVER % 1000 / 10
        )));
    }
    let count = CudaContext::device_count()
        .map_err(|e| config(format!("no usable GPU (cuDeviceGetCount: {e:?})")))?;
    if ordinal as i32 >= count {
        return Err(config(format!("GPU {ordinal} asked for, {count} present")));
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(config(
            "libnvrtc not found (put the CUDA toolkit's or the nvidia-cuda-nvrtc wheel's lib directory on LD_LIBRARY_PATH)",
        ));
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(config(
            "libcublas not found (put the CUDA toolkit's or the nvidia-cublas wheel's lib directory on LD_LIBRARY_PATH)",
        ));
    }
    CudaContext::new(ordinal).map_err(|e| config(format!("cannot open GPU {ordinal}: {e:?}")))
}

/// Compile the kernels with NVRTC and check every entry point is in the PTX; needs libnvrtc
/// only, no GPU. The PTX's size in bytes.
pub fn compile_check() -> R<usize> {
    // SAFETY: only dlopen/dlclose of candidate library names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(config("libnvrtc not found"));
    }
    let ptx = compile_ptx_with_opts(SOURCE, compile_options())
        .map_err(|e| config(format!("NVRTC could not compile the kernels: {e:?}")))?;
    let text = ptx.to_src();
    for n in NAMES {
        if !text.contains(&format!(".entry {n}(")) {
            return Err(config(format!("the PTX has no entry `{n}`")));
        }
    }
    Ok(text.len())
}

fn compile_options() -> CompileOptions {
    CompileOptions {
        name: Some("servesim_kernels.cu".into()),
        ..Default::default()
    }
}

/// Whether GPU `ordinal` can be opened (driver, device, NVRTC and cuBLAS found): its name.
pub fn probe(ordinal: usize) -> R<String> {
    let ctx = open_context(ordinal)?;
    ctx.name().ctx("cuDeviceGetName")
}

pub(super) struct Kernels {
    _module: Arc<CudaModule>,
    pub(super) gather: CudaFunction,
    pub(super) rms_norm: CudaFunction,
    pub(super) rope: CudaFunction,
    pub(super) silu_gate: CudaFunction,
    pub(super) write_kv: CudaFunction,
    pub(super) attention: CudaFunction,
    pub(super) argmax_sum: CudaFunction,
}

/// An open GPU: a compute stream (cuBLAS runs on it), a copy stream for swaps, the kernels.
pub(super) struct Dev {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) compute: Arc<CudaStream>,
    pub(super) copy: Arc<CudaStream>,
    pub(super) blas: CudaBlas,
    pub(super) k: Kernels,
    pub(super) name: String,
}

impl Dev {
    /// Open GPU `ordinal` and compile the kernels; `attn_smem_bytes` is the attention kernel's
    /// largest dynamic shared memory (a sequence at the model's full context).
    pub(super) fn open(ordinal: usize, attn_smem_bytes: usize) -> R<Dev> {
        let ctx = open_context(ordinal)?;
        // The two streams are ordered by hand (join before and after each swap), so cudarc's
        // per-buffer event tracking is not needed. SAFETY: nothing is allocated yet.
        unsafe { ctx.disable_event_tracking() };
        let compute = ctx.new_stream().ctx("creating the compute stream")?;
        let copy = ctx.new_stream().ctx("creating the copy stream")?;
        let blas = CudaBlas::new(compute.clone()).ctx("creating the cuBLAS handle")?;
        let ptx = compile_ptx_with_opts(SOURCE, compile_options())
            .map_err(|e| config(format!("NVRTC could not compile the kernels: {e:?}")))?;
        let module = ctx.load_module(ptx).map_err(|e| {
            config(format!(
                "loading the kernels failed ({e:?}; an NVRTC newer than the driver gives CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"
            ))
        })?;
        let f = |n: &str| module.load_function(n).ctx(&format!("kernel {n}"));
        debug_assert_eq!(NAMES.len(), 7);
        let k = Kernels {
            gather: f(NAMES[0])?,
            rms_norm: f(NAMES[1])?,
            rope: f(NAMES[2])?,
            silu_gate: f(NAMES[3])?,
            write_kv: f(NAMES[4])?,
            attention: f(NAMES[5])?,
            argmax_sum: f(NAMES[6])?,
            _module: module,
        };
        if attn_smem_bytes > 48 << 10 {
            let optin = ctx
                .attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .ctx("cuDeviceGetAttribute")? as usize;
            if attn_smem_bytes + 4 * THREADS as usize > optin {
                return Err(config(format!(
                    "the attention kernel keeps a whole context's scores in shared memory: {attn_smem_bytes} B needed, the GPU allows {optin} B per block (lower the model's context)"
                )));
            }
            k.attention
                .set_attribute(
                    F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    attn_smem_bytes as i32,
                )
                .ctx("allowing the attention kernel more shared memory")?;
        }
        let name = ctx.name().ctx("cuDeviceGetName")?;
        Ok(Dev {
            ctx,
            compute,
            copy,
            blas,
            k,
            name,
        })
    }

    /// Free and total GPU memory in bytes.
    pub(super) fn memory(&self) -> R<(usize, usize)> {
        self.ctx.mem_get_info().ctx("cuMemGetInfo")
    }

    pub(super) fn alloc(&self, n: usize, what: &str) -> R<CudaSlice<f32>> {
        self.compute.alloc_zeros::<f32>(n.max(1)).map_err(|e| {
            BackendError::Device(format!(
                "allocating {} MiB for {what}: {e:?}",
                (n * 4) >> 20
            ))
        })
    }

    pub(super) fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        v: &[T],
        what: &str,
    ) -> R<CudaSlice<T>> {
        self.compute.clone_htod(v).ctx(what)
    }

    /// A grid-stride launch over `n` elements.
    pub(super) fn grid(&self, n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(THREADS as usize).clamp(1, MAX_GRID) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One block per row.
    pub(super) fn per_row(&self, rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `y[t, n] = x[t, k] · w[k, n]` (row-major; `accumulate`: `y +=`), on the compute stream.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        x: &CudaSlice<f32>,
        t: usize,
        k: usize,
        w: &CudaSlice<f32>,
        n: usize,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> R<()> {
        // Column-major, yᵀ[n, t] = wᵀ[n, k] · xᵀ[k, t], and a row-major [k, n] is a column-major
        // [n, k] with leading dimension n: no transposes.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n as i32,
            n: t as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: n as i32,
            ldb: k as i32,
            beta: if accumulate { 1.0 } else { 0.0 },
            ldc: n as i32,
        };
        // SAFETY: x holds ≥ t·k, w k·n and y ≥ t·n values (the scratch grows to the batch).
        unsafe { self.blas.gemm(cfg, w, x, y) }.ctx("cuBLAS sgemm")
    }

    /// RMSNorm of `rows` rows of width `gain.len()`.
    pub(super) fn rms_norm(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        gain: &CudaSlice<f32>,
        rows: usize,
    ) -> R<()> {
        let (width, eps) = (gain.len() as i32, crate::ops::NORM_EPS);
        let mut b = self.compute.launch_builder(&self.k.rms_norm);
        b.arg(out).arg(x).arg(gain).arg(&width).arg(&eps);
        // SAFETY: matches rms_norm_f32; out and x hold ≥ rows·width values.
        unsafe { b.launch(self.per_row(rows)) }.ctx("rms_norm_f32")?;
        Ok(())
    }

    /// `out[r] = src[idx[r]]` for `rows` rows of `width`.
    pub(super) fn gather(
        &self,
        out: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        idx: &CudaSlice<i32>,
        rows: usize,
        width: usize,
    ) -> R<()> {
        let (r, w) = (rows as i32, width as i32);
        let mut b = self.compute.launch_builder(&self.k.gather);
        b.arg(out).arg(src).arg(idx).arg(&r).arg(&w);
        // SAFETY: matches gather_rows_f32; every idx is a row of src.
        unsafe { b.launch(self.grid(rows * width)) }.ctx("gather_rows_f32")?;
        Ok(())
    }
}
