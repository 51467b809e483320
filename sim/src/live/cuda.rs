//! `live --device cuda` (feature `cuda`): the CUDA compute backend of `servesim-kernels`
//! ([`CudaBackend`]: cuBLAS GEMMs, NVRTC paged attention, a KV pool in GPU memory and a pinned
//! host pool, swaps on a copy stream) behind live mode's [`ComputeBackend`]. The model is the
//! scenario's catalogue model with random f32 weights, on GPU 0.

use servesim_kernels::{CudaBackend, CudaConfig};

use super::backend::ComputeBackend;
use super::cpu::{KernelsCompute, open_failed, runnable_dims};
use crate::error::{Result, SimError};
use crate::scenario::Resolved;

/// Fail early (before any output is staged) when GPU 0 cannot be opened.
pub fn probe() -> Result<()> {
    servesim_kernels::cuda::probe(0)
        .map(|_| ())
        .map_err(|e| SimError::config(format!("live --device cuda: {e}")))
}

/// The CUDA backend of one replica of `r` (its catalogue model, KV pools of the scenario's
/// `kv_capacity_blocks` and host pool).
pub fn open(r: &Resolved) -> Result<Box<dyn ComputeBackend>> {
    let dims = runnable_dims(r, "CUDA", "cuda")?;
    let host_bytes = r.host_kv_blocks as usize * dims.block_bytes();
    let cfg = CudaConfig {
        dims,
        seed: r.scenario.seed,
        device_blocks: r.kv_capacity_blocks as usize,
        host_bytes,
        ordinal: 0,
    };
    match CudaBackend::new(&cfg) {
        Ok(backend) => Ok(Box::new(KernelsCompute::new("cuda", backend))),
        Err(e) => Err(open_failed(r, "cuda", e)),
    }
}
