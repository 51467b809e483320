//! Timing of one all-reduce over the first `gpus` devices with NCCL (feature `nccl`); without
//! the feature, an error that says how to build with it.

#[cfg(feature = "nccl")]
use cudarc::driver::CudaContext;
#[cfg(feature = "nccl")]
use half::f16;

use super::R;
use super::device::Gpu;
#[cfg(feature = "nccl")]
use super::error::Ctx;
use crate::gpu::{GpuError, RunOptions};

#[cfg(feature = "nccl")]
pub(super) fn time_all_reduce(
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
pub(super) fn time_all_reduce(
    _: &mut Gpu,
    _: &RunOptions,
    _: usize,
    _: usize,
    what: &str,
) -> R<Vec<f64>> {
    Err(GpuError::Unsupported(format!(
        "{what}: measuring all-reduce needs NCCL; build with: cargo build --release -p servesim-calibrate --features nccl"
    )))
}
