//! `live --device cpu`: the CPU compute backend of `servesim-kernels` ([`CpuBackend`]: faer GEMMs,
//! paged attention, real KV block copies between a device and a host pool) behind live mode's
//! [`ComputeBackend`]. The model is the scenario's catalogue model with random weights.

use servesim_kernels::{Backend, CpuBackend, CpuConfig, ModelDims};

use super::backend::{BackendError, ComputeBackend, SeqStep, StepOutput};
use crate::error::{Result, SimError};
use crate::scenario::Resolved;

/// [`CpuBackend`] as a [`ComputeBackend`].
pub struct CpuCompute {
    backend: CpuBackend,
    steps: Vec<servesim_kernels::SeqStep>,
}

impl ComputeBackend for CpuCompute {
    fn name(&self) -> &str {
        "cpu"
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

/// The CPU backend of one replica of `r` (its catalogue model, KV pools of the scenario's
/// `kv_capacity_blocks` and host pool), on `threads` threads (default: every core).
pub fn open(r: &Resolved, threads: Option<u32>) -> Result<Box<dyn ComputeBackend>> {
    let s = &r.scenario;
    let bad = |m: String| Err(SimError::config(format!("live --device cpu: {m}")));
    if s.tp != 1 || s.pp != 1 {
        return bad(format!(
            "the CPU backend runs one shard (tp = 1, pp = 1), the scenario has tp = {}, pp = {}",
            s.tp, s.pp
        ));
    }
    if s.memory.block_tokens as usize != servesim_kernels::BLOCK_TOKENS {
        return bad(format!(
            "the CPU backend's KV blocks hold {} tokens; set [memory] block_tokens = {}",
            servesim_kernels::BLOCK_TOKENS,
            servesim_kernels::BLOCK_TOKENS
        ));
    }
    let m = &r.model;
    if !m.gated_mlp || m.learned_positions {
        return bad(format!(
            "model `{}`: the CPU backend runs Llama-style blocks (gated MLP, rotary positions); try cpu-small-4x512",
            s.model
        ));
    }
    let dims = dims_of(m);
    let host_bytes = r.host_kv_blocks as usize * dims.block_bytes();
    let cfg = CpuConfig {
        dims,
        threads: threads.unwrap_or(0) as usize,
        seed: s.seed,
        device_blocks: r.kv_capacity_blocks as usize,
        host_bytes,
    };
    match CpuBackend::new(&cfg) {
        Ok(backend) => Ok(Box::new(CpuCompute {
            backend,
            steps: Vec::new(),
        })),
        Err(e) => bad(format!(
            "model `{}`: {e} (device pool: [memory] kv_capacity_blocks = {}; host pool: [memory] host_kv_bytes = {} B, 32 GiB unless set)",
            s.model, r.kv_capacity_blocks, s.memory.host_kv_bytes
        )),
    }
}
