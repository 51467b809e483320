//! Iteration-time models: batch composition → seconds. One trait, several models, selected by the
//! scenario's `[cost]` table.

pub mod analytic;
pub mod constant;
pub mod linear;
pub mod profile;

use crate::error::Result;

/// The shape of one iteration's batch, as aggregates (no per-iteration allocation).
///
/// Prefill items process `tokens` prompt tokens each (a recompute re-prefills prompt + generated
/// tokens); decode items process one token each while attending to their whole context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchShape {
    pub prefill_requests: u32,
    /// Σ prefill tokens over prefill items.
    pub prefill_tokens: u64,
    /// Σ (prefill tokens)² over prefill items (causal attention work grows with the square).
    pub prefill_tokens_sq: u64,
    pub decode_requests: u32,
    /// Σ context length (KV tokens attended, the new token included) over decode items.
    pub decode_context_tokens: u64,
}

/// For error messages: `2 prefill requests (300 tokens), 5 decode requests (1200 context tokens)`.
impl std::fmt::Display for BatchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} prefill requests ({} tokens), {} decode requests ({} context tokens)",
            self.prefill_requests,
            self.prefill_tokens,
            self.decode_requests,
            self.decode_context_tokens
        )
    }
}

impl BatchShape {
    pub fn add_prefill(&mut self, tokens: u32) {
        self.prefill_requests += 1;
        self.prefill_tokens += tokens as u64;
        self.prefill_tokens_sq += (tokens as u64) * (tokens as u64);
    }
    pub fn add_decode(&mut self, context_tokens: u32) {
        self.decode_requests += 1;
        self.decode_context_tokens += context_tokens as u64;
    }
    pub fn requests(&self) -> u32 {
        self.prefill_requests + self.decode_requests
    }
    /// Tokens run through the linear layers: every prefill token plus one per decode.
    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_requests as u64
    }
    pub fn is_empty(&self) -> bool {
        self.requests() == 0
    }
}

/// An iteration-time model. Must be deterministic and return a finite, non-negative time; a query
/// it cannot answer is an error, never a silent 0.
pub trait CostModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn iteration_s(&self, shape: &BatchShape) -> Result<f64>;
}
