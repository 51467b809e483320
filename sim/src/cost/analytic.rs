//! `analytic`: a roofline iteration-time model per transformer layer.
//!
//! For one replica of `tp` tensor-parallel GPUs (each holds 1/tp of every weight and KV head):
//! - linear layers (QKV, output projection, MLP): `2·T·P_layer/tp` FLOPs and `P_layer·dtype/tp`
//!   weight bytes for the `T` tokens of the batch; time = max(compute, memory) with fitted
//!   efficiencies;
//! - prefill attention: `2·Σ s²·heads·head_dim/tp` FLOPs (causal QKᵀ and AV);
//! - decode attention: reads `Σ context · 2·kv_heads·head_dim·dtype/tp` KV bytes;
//! - LM head: one row of logits per request;
//! - a fixed per-iteration and per-layer overhead;
//! - with tp > 1, two ring all-reduces per layer of `T·hidden·dtype` bytes.
//!
//! The efficiency factors are fitted to Vidur's measured operator times; the fitted values and
//! their provenance live in `sim/catalogue/analytic_fit.toml`.

use serde::{Deserialize, Serialize};

use super::{BatchShape, CostModel};
use crate::catalogue::{GpuSpec, ModelSpec};
use crate::error::{Result, SimError};

/// Efficiency factors and overheads of the analytic model. Dimensionless efficiencies are
/// fractions of the GPU's datasheet peak.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalyticParams {
    /// Fraction of peak FLOP/s reached by large GEMMs.
    pub gemm_compute_eff: f64,
    /// Fraction of peak HBM bandwidth reached when GEMMs are weight-bound (small batches).
    pub gemm_memory_eff: f64,
    /// Fraction of peak FLOP/s reached by prefill attention.
    pub attn_prefill_eff: f64,
    /// Fraction of peak HBM bandwidth reached by decode attention reading the KV cache.
    pub attn_decode_eff: f64,
    /// Seconds per layer for the small operators (norms, activation, rotary, residual adds).
    pub layer_overhead_s: f64,
    /// Seconds per layer per token for the element-wise operators.
    pub layer_s_per_token: f64,
    /// Fixed seconds per iteration (scheduling, sampling, kernel launches outside the layers).
    pub iteration_overhead_s: f64,
    /// Latency of one all-reduce (TP > 1).
    pub allreduce_latency_s: f64,
    /// Fraction of the NVLink bandwidth an all-reduce achieves (TP > 1).
    pub allreduce_eff: f64,
}

impl AnalyticParams {
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [
            ("gemm_compute_eff", self.gemm_compute_eff),
            ("gemm_memory_eff", self.gemm_memory_eff),
            ("attn_prefill_eff", self.attn_prefill_eff),
            ("attn_decode_eff", self.attn_decode_eff),
            ("allreduce_eff", self.allreduce_eff),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(SimError::config(format!(
                    "cost.{k} must be in (0, 1], got {v}"
                )));
            }
        }
        for (k, v) in [
            ("layer_overhead_s", self.layer_overhead_s),
            ("layer_s_per_token", self.layer_s_per_token),
            ("iteration_overhead_s", self.iteration_overhead_s),
            ("allreduce_latency_s", self.allreduce_latency_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::config(format!(
                    "cost.{k} must be a finite number ≥ 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct AnalyticCost {
    model: ModelSpec,
    gpu: GpuSpec,
    tp: u32,
    params: AnalyticParams,
    // Precomputed per-shard constants.
    layer_params: f64,
    dtype: f64,
}

impl AnalyticCost {
    pub fn new(model: ModelSpec, gpu: GpuSpec, tp: u32, params: AnalyticParams) -> Result<Self> {
        params.validate()?;
        if tp == 0
            || !model.heads.is_multiple_of(tp)
            || !model.kv_heads.is_multiple_of(tp) && !tp.is_multiple_of(model.kv_heads)
        {
            return Err(SimError::config(format!(
                "tp = {tp} does not divide the model's {} attention heads",
                model.heads
            )));
        }
        Ok(AnalyticCost {
            layer_params: model.layer_linear_params() as f64,
            dtype: model.dtype_bytes as f64,
            model,
            gpu,
            tp,
            params,
        })
    }

    pub fn params(&self) -> &AnalyticParams {
        &self.params
    }

    /// Time of one layer's linear operators for `tokens` tokens (per TP shard).
    pub fn linear_layer_s(&self, tokens: f64) -> f64 {
        let tp = self.tp as f64;
        let flops = 2.0 * tokens * self.layer_params / tp;
        let bytes = self.layer_params * self.dtype / tp;
        self.roofline(flops, bytes)
    }

    fn roofline(&self, flops: f64, bytes: f64) -> f64 {
        let p = &self.params;
        (flops / (self.gpu.flops_per_s * p.gemm_compute_eff))
            .max(bytes / (self.gpu.hbm_bytes_per_s * p.gemm_memory_eff))
    }

    /// Prefill attention time of one layer for Σ s² (per TP shard).
    pub fn prefill_attention_layer_s(&self, tokens_sq: f64) -> f64 {
        let q_dim = (self.model.heads as u64 * self.model.head_dim()) as f64;
        let flops = 2.0 * tokens_sq * q_dim / self.tp as f64;
        flops / (self.gpu.flops_per_s * self.params.attn_prefill_eff)
    }

    /// Decode attention time of one layer for Σ context tokens (per TP shard).
    pub fn decode_attention_layer_s(&self, context_tokens: f64) -> f64 {
        let kv_heads_per_shard = (self.model.kv_heads as f64 / self.tp as f64).max(1.0);
        let bytes =
            context_tokens * 2.0 * kv_heads_per_shard * self.model.head_dim() as f64 * self.dtype;
        bytes / (self.gpu.hbm_bytes_per_s * self.params.attn_decode_eff)
    }

    fn allreduce_s(&self, tokens: f64) -> f64 {
        if self.tp <= 1 {
            return 0.0;
        }
        let tp = self.tp as f64;
        let bytes = tokens * self.model.hidden as f64 * self.dtype;
        // Ring all-reduce moves 2(k-1)/k of the message over each GPU's link.
        self.params.allreduce_latency_s
            + bytes * 2.0 * (tp - 1.0)
                / tp
                / (self.gpu.nvlink_bytes_per_s * self.params.allreduce_eff)
    }
}

impl CostModel for AnalyticCost {
    fn name(&self) -> &'static str {
        "analytic"
    }
    fn iteration_s(&self, s: &BatchShape) -> Result<f64> {
        if s.is_empty() {
            return Err(SimError::Cost {
                model: "analytic".into(),
                msg: "empty batch".into(),
            });
        }
        let p = &self.params;
        let tokens = s.tokens() as f64;
        let layer = self.linear_layer_s(tokens)
            + self.prefill_attention_layer_s(s.prefill_tokens_sq as f64)
            + self.decode_attention_layer_s(s.decode_context_tokens as f64)
            + p.layer_overhead_s
            + p.layer_s_per_token * tokens
            + 2.0 * self.allreduce_s(tokens);
        let h = self.model.hidden as f64;
        let v = self.model.vocab as f64;
        let head = self.roofline(
            2.0 * s.requests() as f64 * h * v / self.tp as f64,
            h * v * self.dtype / self.tp as f64,
        );
        let t = self.model.layers as f64 * layer + head + p.iteration_overhead_s;
        if !t.is_finite() {
            return Err(SimError::Cost {
                model: "analytic".into(),
                msg: format!("non-finite time for batch {s:?}"),
            });
        }
        Ok(t)
    }
}
