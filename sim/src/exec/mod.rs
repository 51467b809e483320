//! The seam between simulation and hardware: an [`Executor`] turns a resolved batch into a
//! duration. [`SimExecutor`] asks a cost model (virtual clock); a live executor (GPU) measures.

use crate::cost::{BatchShape, CostModel};
use crate::engine::time::{Ns, duration_ns_ceil};
use crate::error::{Result, SimError};

pub trait Executor: Send {
    /// Run (or model) one iteration of the given shape; return its duration in nanoseconds (≥ 1).
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns>;
}

/// Executes nothing: the duration comes from a cost model.
pub struct SimExecutor<C: CostModel + ?Sized> {
    cost: Box<C>,
}

impl<C: CostModel + ?Sized> SimExecutor<C> {
    pub fn new(cost: Box<C>) -> Self {
        SimExecutor { cost }
    }
}

impl<C: CostModel + ?Sized> Executor for SimExecutor<C> {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        let s = self.cost.iteration_s(shape)?;
        duration_ns_ceil(s).ok_or_else(|| SimError::Cost {
            model: self.cost.name().into(),
            msg: format!("invalid iteration time {s} s for batch {shape:?}"),
        })
    }
}
