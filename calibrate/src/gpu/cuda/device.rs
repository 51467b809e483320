//! The device: driver and NVRTC probing, kernel compilation, and [`Gpu`], an open device with
//! its stream, cuBLAS handle and kernels, the helpers every measurement uses (allocation, random
//! fill, upload, events) and the warm-up-then-time loop.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{self, CUdevice_attribute as A, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use half::f16;

use super::error::Ctx;
use super::{NEEDED_DRIVER, R};
use crate::gpu::kernels::{self, DECODE_STATIC_SMEM};
use crate::gpu::{DeviceReport, GpuError};

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

pub(super) struct Kernels {
    _module: Arc<CudaModule>,
    fill: CudaFunction,
    pub(super) rmsnorm: CudaFunction,
    pub(super) layernorm: CudaFunction,
    pub(super) silu_mul: CudaFunction,
    pub(super) relu: CudaFunction,
    pub(super) rope: CudaFunction,
    pub(super) add: CudaFunction,
    pub(super) decode: CudaFunction,
    pub(super) prefill: CudaFunction,
    pub(super) gather: CudaFunction,
}

/// An open device: context, one stream, a cuBLAS handle on it, our kernels.
pub(super) struct Gpu {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) blas: CudaBlas,
    pub(super) k: Kernels,
    pub(super) report: DeviceReport,
    seed: u64,
    /// Dynamic shared memory (bytes) the decode kernel may use now.
    pub(super) decode_smem: u32,
}

impl Gpu {
    pub(super) fn open(ordinal: usize, seed: u64) -> R<Gpu> {
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

    pub(super) fn grid_for(&self, n: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(256)
            .clamp(1, self.report.sm_count.max(1) as usize * 32);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub(super) fn alloc_f16(&self, n: usize, what: &str) -> R<CudaSlice<f16>> {
        // SAFETY: every buffer is filled (random or by a kernel) before it is read.
        unsafe { self.stream.alloc::<f16>(n.max(1)) }
            .ctx(&format!("allocating {} MiB for {what}", (n * 2) >> 20))
    }

    /// Random values in [−scale, scale).
    pub(super) fn fill(&mut self, buf: &mut CudaSlice<f16>, scale: f32) -> R<()> {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let n = buf.len() as i64;
        let cfg = self.grid_for(buf.len());
        let mut b = self.stream.launch_builder(&self.k.fill);
        b.arg(buf).arg(&n).arg(&self.seed).arg(&scale);
        // SAFETY: arguments match `fill_random_f16(f16_t*, long long, unsigned long long, float)`.
        unsafe { b.launch(cfg) }.ctx("fill_random_f16")?;
        Ok(())
    }

    pub(super) fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        v: &[T],
        what: &str,
    ) -> R<CudaSlice<T>> {
        self.stream.clone_htod(v).ctx(what)
    }

    fn event(&self) -> R<CudaEvent> {
        self.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .ctx("creating a timing event")
    }

    /// Warm up, then time `repeats` runs of `work(i)` (i counts every call, for rotation).
    pub(super) fn time(
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
