//! `constant`: every iteration costs `iteration_s`, whatever the batch. For validation against
//! queueing theory and for teaching.

use super::{BatchShape, CostModel};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct ConstantCost {
    pub iteration_s: f64,
}

impl CostModel for ConstantCost {
    fn name(&self) -> &'static str {
        "constant"
    }
    fn iteration_s(&self, _shape: &BatchShape) -> Result<f64> {
        Ok(self.iteration_s)
    }
}
