//! Output-length predictors. A policy sees `predicted_output_tokens`, never the true length; an
//! oracle scheduler is a policy paired with the `oracle` predictor.

use crate::error::{Result, SimError};

/// Estimates a request's output length at arrival.
pub trait Predictor: Send {
    fn name(&self) -> &'static str;
    fn predict(&mut self, input_tokens: u32, true_output_tokens: u32) -> u32;
}

/// Knows the true output length.
#[derive(Debug, Default, Clone)]
pub struct Oracle;

impl Predictor for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn predict(&mut self, _input_tokens: u32, true_output_tokens: u32) -> u32 {
        true_output_tokens
    }
}

pub const PREDICTOR_NAMES: &[&str] = &["oracle"];

pub fn build(name: &str) -> Result<Box<dyn Predictor>> {
    match name {
        "oracle" => Ok(Box::new(Oracle)),
        _ => Err(SimError::config(format!(
            "unknown predictor `{name}`; valid predictors: {}",
            PREDICTOR_NAMES.join(", ")
        ))),
    }
}
