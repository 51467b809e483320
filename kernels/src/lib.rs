//! servesim-kernels: the compute of one transformer iteration over a paged KV cache, behind the
//! [`Backend`] trait that live mode drives per iteration and calibration times per operator.
//!
//! [`CpuBackend`] runs real f32 compute on the CPU with random weights: faer GEMMs for the linear
//! layers and the LM head, paged decode and tiled causal prefill attention, RMSNorm, RoPE, gated
//! SiLU, and KV blocks that really move between a "device" pool and a "host" pool on swaps. Its
//! operator entry points ([`bench`]) call the same functions its `forward` calls, so a CPU
//! calibration times exactly what live mode runs.
//!
//! `CudaBackend` (feature `cuda`, module `cuda`) is the same model on an NVIDIA GPU, also f32 and
//! with the same weights for a seed: cuBLAS GEMMs, NVRTC kernels, a KV pool in GPU memory and a
//! pinned host pool. [`ledger`] holds the block bookkeeping both share.

pub mod attention;
pub mod bench;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod kv;
pub mod ledger;
pub mod model;
pub mod ops;

pub use cpu::{CpuBackend, CpuConfig, StageTimes, Threads};
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaConfig};
pub use model::ModelDims;

/// Tokens per KV block.
pub const BLOCK_TOKENS: usize = 16;

/// One sequence's share of an iteration: `new_tokens` tokens after `cached_tokens` whose K/V the
/// backend already holds. `new_tokens > 1` is a prefill (chunk); 1 is a decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqStep {
    pub seq: u64,
    pub cached_tokens: usize,
    pub new_tokens: usize,
}

/// What one iteration produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Sum of every logit of the batch's last rows (f64): changes with the batch, so a run can
    /// show that it really computed.
    pub checksum: f64,
    /// Per step (in the order given): the greedy next token.
    pub argmax: Vec<(u64, usize)>,
}

/// Everything a backend call can refuse; none of these is a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("backend configuration: {0}")]
    Config(String),
    #[error(
        "out of device KV blocks: sequence {seq} needs {needed} more, {free} free of {capacity}"
    )]
    OutOfDeviceBlocks {
        seq: u64,
        needed: usize,
        free: usize,
        capacity: usize,
    },
    #[error("out of host KV blocks: sequence {seq} needs {needed}, {free} free of {capacity}")]
    OutOfHostBlocks {
        seq: u64,
        needed: usize,
        free: usize,
        capacity: usize,
    },
    #[error("sequence {0} is unknown to the backend")]
    UnknownSeq(u64),
    #[error("sequence {seq}: {msg}")]
    BadStep { seq: u64, msg: String },
    /// A device call failed at run time (the CUDA backend): what was being done and the error.
    #[error("device: {0}")]
    Device(String),
}

/// The compute of a serving engine's iterations over a paged KV cache.
pub trait Backend {
    /// Run one iteration: allocate the KV blocks the new tokens need, write their K/V, run all
    /// layers and the LM head on each sequence's last row.
    fn forward(&mut self, steps: &[SeqStep]) -> Result<StepOutput, BackendError>;
    /// The sequence finished or was preempted by recompute: free its device and host blocks.
    /// Unknown sequences are ignored.
    fn release(&mut self, seq: u64);
    /// Copy the sequence's blocks from the device pool to the host pool, free its device blocks.
    fn swap_out(&mut self, seq: u64) -> Result<(), BackendError>;
    /// Copy them back to device blocks, free the host blocks.
    fn swap_in(&mut self, seq: u64) -> Result<(), BackendError>;
}
