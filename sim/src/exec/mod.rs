//! The seam between simulation and hardware: an [`Executor`] turns a resolved batch into a
//! duration. [`SimExecutor`] asks a cost model (virtual clock); a live executor measures. An
//! executor that really runs the batch asks for its request-level view ([`ExecBatch`]).

pub mod batch;
pub mod check;

pub use batch::{ExecBatch, ExecItem, KvEvent, KvEventKind};

use crate::cost::{BatchShape, CostModel};
use crate::error::{Result, SimError};
use crate::vocab::time::{Ns, duration_ns_ceil};

pub trait Executor: Send {
    /// Run (or model) one iteration of the given shape; return its duration in nanoseconds (≥ 1).
    /// With pipeline parallelism this is the compute of the whole model (all stages back to
    /// back); the engine splits it over the stages.
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns>;
    /// Whether this executor needs the request-level view of each iteration: then the engine
    /// builds an [`ExecBatch`] and calls [`Executor::run_batch`] instead of
    /// [`Executor::run_iteration`], and steps every iteration (no fast-forward). Asked once,
    /// when the replica is built.
    fn wants_requests(&self) -> bool {
        false
    }
    /// [`Executor::run_iteration`] with the batch's requests and the KV events since the last
    /// call (only for an executor that [`wants_requests`](Executor::wants_requests)).
    fn run_batch(&mut self, batch: &ExecBatch, shape: &BatchShape) -> Result<Ns> {
        let _ = batch;
        self.run_iteration(shape)
    }
    /// The run is over (or stopped): `batch` holds the KV events after the last iteration (the
    /// last finishes) and no items. Only for an executor that wants requests.
    fn end_run(&mut self, batch: &ExecBatch) -> Result<()> {
        let _ = batch;
        Ok(())
    }
    /// Whether this executor performs the KV copies of each step itself, inside
    /// [`Executor::run_batch`] before the forward pass, so that the duration it returns includes
    /// them (a compute backend: its swaps are real copies). The engine then takes no time of its
    /// own for those copies (a zero-time swap model, `serial` reactive timing) instead of adding
    /// its modelled copy time on top of the measured one. Asked once, when the replica is built.
    fn copies_in_iteration(&self) -> bool {
        false
    }
    /// The replica's pipeline (default: one stage, one batch in flight).
    fn pipeline(&self) -> Pipeline {
        Pipeline::SINGLE
    }
}

/// Pipeline parallelism of a replica: `stages` stages hold the layers evenly; a micro-batch takes
/// `compute / stages` per stage plus the send of its activations to the next stage, and up to
/// `stages` micro-batches are in flight (a request in at most one, FastServe's scheme).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Pipeline {
    pub stages: u32,
    /// Stage-to-stage send: fixed latency per micro-batch.
    pub send_latency_s: f64,
    /// Activation bytes sent per token of the micro-batch (hidden × dtype bytes).
    pub send_bytes_per_token: f64,
    /// Stage-to-stage link bandwidth.
    pub send_bytes_per_s: f64,
}

impl Pipeline {
    pub const SINGLE: Pipeline = Pipeline {
        stages: 1,
        send_latency_s: 0.0,
        send_bytes_per_token: 0.0,
        send_bytes_per_s: 1.0,
    };
    /// Seconds to send the activations of `tokens` tokens to the next stage.
    pub fn send_s(&self, tokens: u64) -> f64 {
        if self.stages <= 1 {
            return 0.0;
        }
        self.send_latency_s + tokens as f64 * self.send_bytes_per_token / self.send_bytes_per_s
    }
}

/// Executes nothing: the duration comes from a cost model.
pub struct SimExecutor<C: CostModel + ?Sized> {
    cost: Box<C>,
    pipeline: Pipeline,
}

impl<C: CostModel + ?Sized> SimExecutor<C> {
    pub fn new(cost: Box<C>) -> Self {
        SimExecutor {
            cost,
            pipeline: Pipeline::SINGLE,
        }
    }
    pub fn with_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = pipeline;
        self
    }
}

impl<C: CostModel + ?Sized> Executor for SimExecutor<C> {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        let s = self.cost.iteration_s(shape)?;
        duration_ns_ceil(s).ok_or_else(|| SimError::Cost {
            model: self.cost.name().into(),
            msg: format!(
                "invalid iteration time {} s for a batch of {shape}",
                crate::error::num(s)
            ),
        })
    }
    fn pipeline(&self) -> Pipeline {
        self.pipeline
    }
}
