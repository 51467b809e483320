//! Live execution on a compute backend: the kernels of one transformer iteration over a paged
//! KV cache, driven sequence by sequence. [`ComputeBackend`] mirrors the backend crate's
//! `Backend` trait (forward / release / swap_out / swap_in), so a backend crate plugs in with a
//! thin adapter in [`open_backend`]; [`BackendExecutor`] turns the engine's request-level view
//! of each iteration ([`ExecBatch`]) into those calls and measures them with a monotonic clock.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cost::{BatchShape, CostModel};
use crate::error::{Result, SimError};
use crate::exec::{ExecBatch, Executor, KvEventKind, Pipeline};
use crate::scenario::Resolved;
use crate::vocab::time::Ns;

/// A backend's error, as its crate reports it.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// One sequence's work in an iteration: `new_tokens` > 1 is a prefill (chunk) after a cached
/// prefix of `cached_tokens` (0 for a whole prompt); 1 is a decode over `cached_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqStep {
    pub seq: u64,
    pub cached_tokens: usize,
    pub new_tokens: usize,
}

/// What one forward pass returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutput {
    /// A checksum of the logits: changes with the batch, so a run shows it really computed.
    pub checksum: u64,
    /// Each step's most likely next token, in step order.
    pub argmax: Vec<u32>,
}

/// The compute of one replica over its own paged KV cache (device pool and host pool).
pub trait ComputeBackend: Send {
    /// Short name for messages and `summary.json` (`cpu`, `cuda`, …).
    fn name(&self) -> &str;
    /// Allocate the KV blocks the new tokens need, write their K/V, run every layer and the LM
    /// head over the batch.
    fn forward(&mut self, steps: &[SeqStep]) -> std::result::Result<StepOutput, BackendError>;
    /// The sequence finished or was preempted by recompute: free its device and host blocks.
    fn release(&mut self, seq: u64);
    /// Copy the sequence's blocks device pool → host pool and free its device blocks.
    fn swap_out(&mut self, seq: u64) -> std::result::Result<(), BackendError>;
    /// Copy them back host pool → device pool and free its host blocks.
    fn swap_in(&mut self, seq: u64) -> std::result::Result<(), BackendError>;
}

/// Which executor runs the batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// [`super::MockExecutor`]: sleeps the cost model's times (no compute).
    Mock,
    /// The CPU compute backend.
    Cpu,
    /// The CUDA compute backend.
    Cuda,
}

impl ExecutorKind {
    /// The name `--device` takes and `summary.json` records.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Mock => "mock",
            ExecutorKind::Cpu => "cpu",
            ExecutorKind::Cuda => "cuda",
        }
    }
}

/// Fail early (before any output is staged) when `device` cannot run in this build.
pub fn check_device(device: ExecutorKind) -> Result<()> {
    match device {
        ExecutorKind::Mock => Ok(()),
        ExecutorKind::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        ExecutorKind::Cuda => super::cuda::probe(),
        #[cfg(not(feature = "cuda"))]
        ExecutorKind::Cuda => Err(SimError::config(super::NO_GPU_EXECUTOR)),
    }
}

/// The compute backend of one replica of `r` on `device`, using `threads` CPU threads when given.
pub fn open_backend(
    device: ExecutorKind,
    r: &Resolved,
    threads: Option<u32>,
) -> Result<Box<dyn ComputeBackend>> {
    check_device(device)?;
    match device {
        ExecutorKind::Cpu => super::cpu::open(r, threads),
        #[cfg(feature = "cuda")]
        ExecutorKind::Cuda => super::cuda::open(r),
        _ => Err(SimError::config(format!(
            "live --device {}: no compute backend",
            device.name()
        ))),
    }
}

/// What an executor notes about the iteration it just ran, for the iteration tap (iterations run
/// one at a time, and the engine reports each right after its executor returns).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IterationNote {
    /// The backend's checksum of the logits (none from the mock executor).
    pub checksum: Option<u64>,
    /// The scenario's cost model's time for this very batch, plus its swap model's time for the
    /// step's copies (which a backend runs inside the iteration, one after another).
    pub predicted_s: Option<f64>,
}

/// Where the executor leaves its [`IterationNote`].
pub type NoteSlot = Arc<Mutex<Option<IterationNote>>>;

/// The scenario's models, to predict each executed batch (the simulator's view of it).
pub struct Predictor {
    pub cost: Box<dyn CostModel>,
    pub swap: Box<dyn crate::swap::SwapModel>,
    /// Bytes of one KV block on the device (a copy moves `blocks × block_bytes`).
    pub block_bytes: u64,
}

impl Predictor {
    /// Predicted seconds of one iteration: the batch's compute plus its step's copies in sequence.
    pub fn iteration_s(&self, batch: &ExecBatch, shape: &BatchShape) -> Result<f64> {
        let mut s = self.cost.iteration_s(shape)?;
        for e in &batch.events {
            let dir = match e.kind {
                KvEventKind::SwapOut => crate::swap::Direction::DeviceToHost,
                KvEventKind::SwapIn => crate::swap::Direction::HostToDevice,
                KvEventKind::Finish | KvEventKind::Recompute => continue,
            };
            s += self
                .swap
                .transfer_s(dir, e.blocks as u64 * self.block_bytes, e.blocks);
        }
        Ok(s)
    }
}

/// Runs each iteration on a [`ComputeBackend`]: applies the KV events since the last call in
/// order (finishes and recompute preemptions release, swap-outs and swap-ins copy), then runs the
/// batch's forward pass. The measured duration (wall time / `scale`) includes those copies, so
/// the engine adds no modelled copy time ([`Executor::copies_in_iteration`]).
pub struct BackendExecutor {
    backend: Box<dyn ComputeBackend>,
    scale: f64,
    pipeline: Pipeline,
    steps: Vec<SeqStep>,
    note: NoteSlot,
    predictor: Option<Predictor>,
}

impl BackendExecutor {
    pub fn new(
        backend: Box<dyn ComputeBackend>,
        scale: f64,
        pipeline: Pipeline,
        note: NoteSlot,
    ) -> Self {
        BackendExecutor {
            backend,
            scale,
            pipeline,
            steps: Vec::new(),
            note,
            predictor: None,
        }
    }

    /// Also predict each executed batch with the scenario's models (`iterations.csv`
    /// `predicted_s`).
    pub fn with_predictor(mut self, predictor: Predictor) -> Self {
        self.predictor = Some(predictor);
        self
    }

    fn fail(&self, what: &str, e: BackendError) -> SimError {
        SimError::config(format!(
            "live backend `{}`: {what}: {e}",
            self.backend.name()
        ))
    }

    /// Apply the batch's KV events to the backend, in order.
    fn apply_events(&mut self, batch: &ExecBatch) -> Result<()> {
        for e in &batch.events {
            match e.kind {
                KvEventKind::Finish | KvEventKind::Recompute => self.backend.release(e.id),
                KvEventKind::SwapOut => {
                    let r = self.backend.swap_out(e.id);
                    r.map_err(|x| self.fail(&format!("swap-out of request {}", e.id), x))?
                }
                KvEventKind::SwapIn => {
                    let r = self.backend.swap_in(e.id);
                    r.map_err(|x| self.fail(&format!("swap-in of request {}", e.id), x))?
                }
            }
        }
        Ok(())
    }
}

impl Executor for BackendExecutor {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        Err(SimError::config(format!(
            "live backend `{}` needs the batch's requests, not only its shape ({shape})",
            self.backend.name()
        )))
    }
    fn wants_requests(&self) -> bool {
        true
    }
    fn run_batch(&mut self, batch: &ExecBatch, shape: &BatchShape) -> Result<Ns> {
        let start = Instant::now();
        self.apply_events(batch)?;
        self.steps.clear();
        self.steps.extend(batch.items.iter().map(|i| SeqStep {
            seq: i.id,
            cached_tokens: i.cached_tokens as usize,
            new_tokens: i.new_tokens as usize,
        }));
        let out = self.backend.forward(&self.steps);
        let out = out.map_err(|e| self.fail("forward", e))?;
        let ns = super::wall_to_ns(start.elapsed(), self.scale).max(1);
        // Outside the measured window.
        let predicted_s = match &self.predictor {
            Some(p) => Some(p.iteration_s(batch, shape)?),
            None => None,
        };
        if let Ok(mut slot) = self.note.lock() {
            *slot = Some(IterationNote {
                checksum: Some(out.checksum),
                predicted_s,
            });
        }
        Ok(ns)
    }
    fn end_run(&mut self, batch: &ExecBatch) -> Result<()> {
        self.apply_events(batch)
    }
    fn copies_in_iteration(&self) -> bool {
        true
    }
    fn pipeline(&self) -> Pipeline {
        self.pipeline
    }
}
