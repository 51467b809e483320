//! `live --device cpu`: the CPU compute backend of `servesim-kernels` ([`CpuBackend`]: faer GEMMs,
//! paged attention, real KV block copies between a device and a host pool) behind live mode's
//! [`ComputeBackend`]. The model is the scenario's catalogue model with random weights.

use servesim_kernels::{Backend, CpuBackend, CpuConfig, ModelDims};

use super::backend::{BackendError, ComputeBackend, SeqStep, StepOutput};
use crate::error::{Result, SimError};
use crate::scenario::Resolved;

/// A `servesim-kernels` [`Backend`] as a [`ComputeBackend`] (the CPU one here, the CUDA one in
/// `live/cuda.rs`).
pub struct KernelsCompute<B> {
    name: &'static str,
    backend: B,
    steps: Vec<servesim_kernels::SeqStep>,
}

impl<B: Backend> KernelsCompute<B> {
    pub fn new(name: &'static str, backend: B) -> Self {
        KernelsCompute {
            name,
            backend,
            steps: Vec::new(),
        }
    }
}

impl<B: Backend + Send> ComputeBackend for KernelsCompute<B> {
    fn name(&self) -> &str {
        self.name
    }
    fn forward(&mut self, steps: &[SeqStep]) -> std::result::Result<StepOutput, BackendError> {
        self.steps.clear();
        self.steps
            .extend(steps.iter().map(|s| servesim_kernels::SeqStep {
                seq: s.seq,
                cached_tokens: s.cached_tokens,
                new_tokens: s.new_tokens,
            }));
        let out = self.backend.forward(&self.steps)?;
        Ok(StepOutput {
            checksum: out.checksum.to_bits(),
            argmax: out.argmax.iter().map(|&(_, t)| t as u32).collect(),
        })
    }
    fn release(&mut self, seq: u64) {
        self.backend.release(seq);
    }
    fn swap_out(&mut self, seq: u64) -> std::result::Result<(), BackendError> {
        Ok(self.backend.swap_out(seq)?)
    }
    fn swap_in(&mut self, seq: u64) -> std::result::Result<(), BackendError> {
        Ok(self.backend.swap_in(seq)?)
    }
}

/// The backend's dimensions of a catalogue model (f32 whatever the catalogue's dtype).
pub fn dims_of(model: &crate::catalogue::ModelSpec) -> ModelDims {
    ModelDims {
        layers: model.layers as usize,
        hidden: model.hidden as usize,
        heads: model.heads as usize,
        kv_heads: model.kv_heads as usize,
        ffn: model.ffn as usize,
        vocab: model.vocab as usize,
        max_context_tokens: model.max_context_tokens as usize,
    }
}

/// The model dimensions a `servesim-kernels` backend (`which`: "CPU" or "CUDA", `device`: the
/// `--device` name) can run for `r`: one shard, 16-token blocks, Llama-style blocks.
pub fn runnable_dims(r: &Resolved, which: &str, device: &str) -> Result<ModelDims> {
    let s = &r.scenario;
    let bad = |m: String| Err(SimError::config(format!("live --device {device}: {m}")));
    if s.tp != 1 || s.pp != 1 {
        return bad(format!(
            "the {which} backend runs one shard (tp = 1, pp = 1), the scenario has tp = {}, pp = {}",
            s.tp, s.pp
        ));
    }
    if s.memory.block_tokens as usize != servesim_kernels::BLOCK_TOKENS {
        return bad(format!(
            "the {which} backend's KV blocks hold {} tokens; set [memory] block_tokens = {}",
            servesim_kernels::BLOCK_TOKENS,
            servesim_kernels::BLOCK_TOKENS
        ));
    }
    let m = &r.model;
    if !m.gated_mlp || m.learned_positions {
        return bad(format!(
            "model `{}`: the {which} backend runs Llama-style blocks (gated MLP, rotary positions); try cpu-small-4x512",
            s.model
        ));
    }
    Ok(dims_of(m))
}

/// What a backend that cannot be built says, with the scenario keys that size its pools.
pub fn open_failed(r: &Resolved, device: &str, e: impl std::fmt::Display) -> SimError {
    let s = &r.scenario;
    SimError::config(format!(
        "live --device {device}: model `{}`: {e} (device pool: [memory] kv_capacity_blocks = {}; host pool: [memory] host_kv_bytes = {} B, 32 GiB unless set)",
        s.model, r.kv_capacity_blocks, s.memory.host_kv_bytes
    ))
}

/// The CPU backend of one replica of `r` (its catalogue model, KV pools of the scenario's
/// `kv_capacity_blocks` and host pool), on `threads` threads (default: every core).
pub fn open(r: &Resolved, threads: Option<u32>) -> Result<Box<dyn ComputeBackend>> {
    let dims = runnable_dims(r, "CPU", "cpu")?;
    let host_bytes = r.host_kv_blocks as usize * dims.block_bytes();
    let cfg = CpuConfig {
        dims,
        threads: threads.unwrap_or(0) as usize,
        seed: r.scenario.seed,
        device_blocks: r.kv_capacity_blocks as usize,
        host_bytes,
    };
    match CpuBackend::new(&cfg) {
        Ok(backend) => Ok(Box::new(KernelsCompute::new("cpu", backend))),
        Err(e) => Err(open_failed(r, "cpu", e)),
    }
}
