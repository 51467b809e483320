//! `analytic`: a roofline iteration-time model per transformer layer.
//!
//! For one replica of `tp` tensor-parallel GPUs (each holds 1/tp of every weight and KV head), per
//! layer:
//! - linear layers (QKV, output projection, MLP): `2·T·P_layer/tp` FLOPs and `P_layer·dtype/tp`
//!   weight bytes for the `T` tokens of the batch; time = a smooth roofline
//!   `√(compute² + memory²)` with fitted efficiencies, plus a fixed `gemm_latency_s` (the hard
//!   `max(compute, memory)` overstates how sharp the ridge is: measured GEMMs near the ridge point
//!   run up to ~40% slower than either bound alone);
//! - prefill attention: `2·Σ s²·heads·head_dim/tp` FLOPs (causal QKᵀ and AV) at a fitted fraction
//!   of peak FLOP/s, plus a fixed kernel latency when the batch has prefills;
//! - decode attention: reads `Σ context · 2·kv_heads·head_dim·dtype/tp` KV bytes at a fitted
//!   fraction of peak HBM bandwidth, plus a fixed kernel latency and a per-request cost when the
//!   batch has decodes;
//! - small operators (two norms, activation, rotary, residual add): a fixed `layer_overhead_s` plus
//!   their activation traffic per token (see [`AnalyticCost::elementwise_bytes_per_token`]) at a
//!   fitted fraction of HBM bandwidth, plus an optional extra `layer_s_per_token`;
//! - with tp > 1, two ring all-reduces per layer of `T·hidden·dtype` bytes.
//!
//! Per iteration: the layers, the LM head (one row of logits per request, smooth roofline without
//! the per-layer GEMM latency) and a fixed `iteration_overhead_s`.
//!
//! The efficiency factors are fitted to Vidur's measured operator times by
//! `servesim-calibrate`'s `fit-vidur`; the fitted values, their errors and provenance live in
//! `sim/catalogue/analytic_fit.toml`.

use serde::{Deserialize, Serialize};

use super::memo::Memo;
use super::{BatchShape, CostModel};
use crate::catalogue::{GpuSpec, ModelSpec};
use crate::error::{Result, SimError};

/// Efficiency factors and overheads of the analytic model. Dimensionless efficiencies are
/// fractions of the GPU's datasheet peak; times are seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalyticParams {
    /// Fraction of peak FLOP/s reached by large GEMMs.
    pub gemm_compute_eff: f64,
    /// Fraction of peak HBM bandwidth reached when GEMMs are weight-bound (small batches).
    pub gemm_memory_eff: f64,
    /// Fixed seconds per layer of the four linear operators (launch and tail effects).
    pub gemm_latency_s: f64,
    /// Fraction of peak FLOP/s reached by prefill attention.
    pub attn_prefill_eff: f64,
    /// Fixed seconds per layer of the prefill attention kernel (only when the batch has prefills).
    pub attn_prefill_latency_s: f64,
    /// Fraction of peak HBM bandwidth reached by decode attention reading the KV cache.
    pub attn_decode_eff: f64,
    /// Fixed seconds per layer of the decode attention kernel (only when the batch has decodes).
    pub attn_decode_latency_s: f64,
    /// Seconds per layer per decode request in the decode attention kernel.
    pub attn_decode_s_per_request: f64,
    /// Fraction of peak HBM bandwidth reached by the small element-wise operators.
    pub elementwise_eff: f64,
    /// Fixed seconds per layer for the small operators (norms, activation, rotary, residual add).
    pub layer_overhead_s: f64,
    /// Extra seconds per layer per token, on top of the element-wise traffic (0 in the Vidur fit).
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
            ("elementwise_eff", self.elementwise_eff),
            ("allreduce_eff", self.allreduce_eff),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(SimError::config(format!(
                    "cost.{k} must be in (0, 1], got {v}"
                )));
            }
        }
        for (k, v) in [
            ("gemm_latency_s", self.gemm_latency_s),
            ("attn_prefill_latency_s", self.attn_prefill_latency_s),
            ("attn_decode_latency_s", self.attn_decode_latency_s),
            ("attn_decode_s_per_request", self.attn_decode_s_per_request),
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
    kv_heads_per_shard: f64,
    elementwise_bytes_per_token: f64,
    /// `linear_layer_s(t)` by token count and the LM head's time by request count: the two smooth
    /// rooflines of every iteration, remembered instead of recomputed (same values: the same
    /// function of the same argument).
    linear_s_by_tokens: Memo<1>,
    head_s_by_requests: Memo<1>,
}

/// Table sizes (larger batches are computed directly).
const LINEAR_TABLE_TOKENS: usize = 8192;
const HEAD_TABLE_REQUESTS: usize = 1024;

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
        let kv_heads_per_shard = (model.kv_heads as f64 / tp as f64).max(1.0);
        Ok(AnalyticCost {
            layer_params: model.layer_linear_params() as f64,
            dtype: model.dtype_bytes as f64,
            elementwise_bytes_per_token: Self::elementwise_bytes_per_token(
                &model,
                tp,
                kv_heads_per_shard,
            ),
            kv_heads_per_shard,
            model,
            gpu,
            tp,
            params,
            linear_s_by_tokens: Memo::new(LINEAR_TABLE_TOKENS),
            head_s_by_requests: Memo::new(HEAD_TABLE_REQUESTS),
        })
    }

    pub fn params(&self) -> &AnalyticParams {
        &self.params
    }

    /// Activation bytes the small operators of one layer read and write per token, per TP shard:
    /// the two norms read and write the hidden vector (2 × 2·hidden), the residual add reads two and
    /// writes one (3·hidden) — these are replicated on every shard; rotary embedding (absent with
    /// learned positions) reads and writes this shard's queries and keys; the activation reads the
    /// shard's MLP intermediate and writes it back (gated: reads gate and up, writes one — 3·ffn/tp;
    /// otherwise 2·ffn/tp).
    pub fn elementwise_bytes_per_token(m: &ModelSpec, tp: u32, kv_heads_per_shard: f64) -> f64 {
        let h = m.hidden as f64;
        let hd = m.head_dim() as f64;
        let tp = tp as f64;
        let norms_and_add = 2.0 * 2.0 * h + 3.0 * h;
        let rope = if m.learned_positions {
            0.0
        } else {
            2.0 * (m.heads as f64 / tp + kv_heads_per_shard) * hd
        };
        let act = if m.gated_mlp { 3.0 } else { 2.0 } * m.ffn as f64 / tp;
        (norms_and_add + rope + act) * m.dtype_bytes as f64
    }

    /// Time of one layer's linear operators for `tokens` tokens (per TP shard).
    pub fn linear_layer_s(&self, tokens: f64) -> f64 {
        let tp = self.tp as f64;
        let flops = 2.0 * tokens * self.layer_params / tp;
        let bytes = self.layer_params * self.dtype / tp;
        self.params.gemm_latency_s + self.roofline(flops, bytes)
    }

    /// The LM head for `requests` requests (one row of logits each): a smooth roofline without the
    /// per-layer GEMM latency.
    fn head_s(&self, requests: u64) -> f64 {
        let h = self.model.hidden as f64;
        let v = self.model.vocab as f64;
        self.roofline(
            2.0 * requests as f64 * h * v / self.tp as f64,
            h * v * self.dtype / self.tp as f64,
        )
    }

    /// Smooth roofline √(compute² + memory²) of a GEMM-like operator.
    fn roofline(&self, flops: f64, bytes: f64) -> f64 {
        let p = &self.params;
        let compute = flops / (self.gpu.flops_per_s * p.gemm_compute_eff);
        let memory = bytes / (self.gpu.hbm_bytes_per_s * p.gemm_memory_eff);
        compute.hypot(memory)
    }

    /// Prefill attention time of one layer for Σ s² (per TP shard); 0 without prefills.
    pub fn prefill_attention_layer_s(&self, tokens_sq: f64) -> f64 {
        if tokens_sq <= 0.0 {
            return 0.0;
        }
        let q_dim = (self.model.heads as u64 * self.model.head_dim()) as f64;
        let flops = 2.0 * tokens_sq * q_dim / self.tp as f64;
        self.params.attn_prefill_latency_s
            + flops / (self.gpu.flops_per_s * self.params.attn_prefill_eff)
    }

    /// Decode attention time of one layer for `requests` decodes attending to Σ `context_tokens`
    /// (per TP shard); 0 without decodes.
    pub fn decode_attention_layer_s(&self, requests: f64, context_tokens: f64) -> f64 {
        if requests <= 0.0 {
            return 0.0;
        }
        let bytes = context_tokens
            * 2.0
            * self.kv_heads_per_shard
            * self.model.head_dim() as f64
            * self.dtype;
        self.params.attn_decode_latency_s
            + self.params.attn_decode_s_per_request * requests
            + bytes / (self.gpu.hbm_bytes_per_s * self.params.attn_decode_eff)
    }

    /// Time of one layer's small operators (norms, activation, rotary, residual add).
    pub fn small_ops_layer_s(&self, tokens: f64) -> f64 {
        let p = &self.params;
        p.layer_overhead_s
            + tokens
                * (p.layer_s_per_token
                    + self.elementwise_bytes_per_token
                        / (self.gpu.hbm_bytes_per_s * p.elementwise_eff))
    }

    /// Time of one all-reduce of `bytes` across the `tp` GPUs (0 without tensor parallelism).
    pub fn allreduce_bytes_s(&self, bytes: f64) -> f64 {
        if self.tp <= 1 {
            return 0.0;
        }
        let tp = self.tp as f64;
        // Ring all-reduce moves 2(k-1)/k of the message over each GPU's link.
        self.params.allreduce_latency_s
            + bytes * 2.0 * (tp - 1.0)
                / tp
                / (self.gpu.nvlink_bytes_per_s * self.params.allreduce_eff)
    }

    /// Time of one all-reduce of the activations of `tokens` tokens.
    fn allreduce_s(&self, tokens: f64) -> f64 {
        self.allreduce_bytes_s(tokens * self.model.hidden as f64 * self.dtype)
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
        let linear = self
            .linear_s_by_tokens
            .get_f64_or(s.tokens() as usize, || self.linear_layer_s(tokens));
        let layer = linear
            + self.prefill_attention_layer_s(s.prefill_attention_sq() as f64)
            + self
                .decode_attention_layer_s(s.decode_requests as f64, s.decode_context_tokens as f64)
            + self.small_ops_layer_s(tokens)
            + 2.0 * self.allreduce_s(tokens);
        let requests = s.requests() as u64;
        let head = self
            .head_s_by_requests
            .get_f64_or(requests as usize, || self.head_s(requests));
        let t = self.model.layers as f64 * layer + head + p.iteration_overhead_s;
        if !t.is_finite() {
            return Err(SimError::Cost {
                model: "analytic".into(),
                msg: format!("non-finite time for a batch of {s}"),
            });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;

    fn params() -> AnalyticParams {
        AnalyticParams {
            gemm_compute_eff: 0.7,
            gemm_memory_eff: 0.8,
            gemm_latency_s: 30e-6,
            attn_prefill_eff: 0.2,
            attn_prefill_latency_s: 20e-6,
            attn_decode_eff: 0.9,
            attn_decode_latency_s: 6e-6,
            attn_decode_s_per_request: 1e-6,
            elementwise_eff: 0.5,
            layer_overhead_s: 9e-6,
            layer_s_per_token: 0.0,
            iteration_overhead_s: 2e-3,
            allreduce_latency_s: 40e-6,
            allreduce_eff: 0.6,
        }
    }

    fn cost(model: &str, tp: u32) -> AnalyticCost {
        let c = Catalogue::builtin();
        AnalyticCost::new(
            c.model(model).unwrap().clone(),
            c.gpu("a100-80gb").unwrap().clone(),
            tp,
            params(),
        )
        .unwrap()
    }

    #[test]
    fn elementwise_bytes_by_hand() {
        // Llama-2-7B, TP 1: norms + add 7·4096, rotary 2·(32 + 32)·128, SwiGLU 3·11008; fp16.
        let c = cost("llama-2-7b", 1);
        assert_eq!(
            c.elementwise_bytes_per_token,
            (7.0 * 4096.0 + 2.0 * 64.0 * 128.0 + 3.0 * 11008.0) * 2.0
        );
        // OPT-13B, TP 2: learned positions (no rotary), GELU 2·ffn/tp.
        let c = cost("opt-13b", 2);
        assert_eq!(
            c.elementwise_bytes_per_token,
            (7.0 * 5120.0 + 2.0 * 20480.0 / 2.0) * 2.0
        );
        // Llama-2-70B, TP 8: one KV head per shard.
        let c = cost("llama-2-70b", 8);
        assert_eq!(
            c.elementwise_bytes_per_token,
            (7.0 * 8192.0 + 2.0 * (8.0 + 1.0) * 128.0 + 3.0 * 28672.0 / 8.0) * 2.0
        );
    }

    #[test]
    fn linear_layer_is_a_smooth_roofline_plus_latency() {
        let c = cost("llama-2-7b", 1);
        let p = c.layer_params;
        let memory = p * 2.0 / (2.039e12 * 0.8);
        let compute = |t: f64| 2.0 * t * p / (312e12 * 0.7);
        // One token: weight-bound.
        let t1 = c.linear_layer_s(1.0);
        assert!((t1 - 30e-6 - compute(1.0).hypot(memory)).abs() < 1e-15);
        assert!(t1 > 30e-6 + memory && t1 < 30e-6 + memory * 1.001);
        // Many tokens: compute-bound; at the ridge point √2 above either bound.
        let big = c.linear_layer_s(1e6);
        assert!((big - 30e-6) / compute(1e6) < 1.0001);
        let ridge = memory * 312e12 * 0.7 / (2.0 * p);
        let r = c.linear_layer_s(ridge) - 30e-6;
        assert!((r / memory - 2f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn attention_costs_only_what_the_batch_has() {
        let c = cost("llama-2-7b", 1);
        assert_eq!(c.prefill_attention_layer_s(0.0), 0.0);
        assert_eq!(c.decode_attention_layer_s(0.0, 0.0), 0.0);
        let pre = c.prefill_attention_layer_s(1000.0 * 1000.0);
        assert!((pre - 20e-6 - 2.0 * 1e6 * 4096.0 / (312e12 * 0.2)).abs() < 1e-15);
        let dec = c.decode_attention_layer_s(4.0, 4000.0);
        let kv = 4000.0 * 2.0 * 32.0 * 128.0 * 2.0;
        assert!((dec - 6e-6 - 4e-6 - kv / (2.039e12 * 0.9)).abs() < 1e-15);
    }

    #[test]
    fn iteration_time_grows_with_work_and_tp_adds_allreduces() {
        let c = cost("llama-2-7b", 1);
        let mut small = BatchShape::default();
        small.add_decode(100);
        let mut big = small;
        big.add_prefill(512);
        let (a, b) = (c.iteration_s(&small).unwrap(), c.iteration_s(&big).unwrap());
        assert!(a > 2e-3 && b > a, "{a} {b}");
        assert!(c.iteration_s(&BatchShape::default()).is_err());
        assert_eq!(c.allreduce_bytes_s(1e6), 0.0);
        let c2 = cost("llama-2-7b", 2);
        let ar = c2.allreduce_bytes_s(1e6);
        assert!((ar - 40e-6 - 1e6 / (300e9 * 0.6)).abs() < 1e-15);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut p = params();
        p.elementwise_eff = 0.0;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("elementwise_eff")
        );
        let mut p = params();
        p.attn_decode_s_per_request = -1.0;
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("attn_decode_s_per_request"), "{e}");
        let mut p = params();
        p.gemm_latency_s = f64::NAN;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("gemm_latency_s")
        );
    }

    #[test]
    fn every_catalogue_gpu_has_valid_fitted_params() {
        // The CPU device has no analytic fit: it is simulated from a calibrated profile.
        let gpus = Catalogue::builtin().gpus;
        for gpu in gpus.keys().filter(|g| *g != crate::catalogue::CPU_DEVICE) {
            let p = crate::scenario::analytic_params_for(gpu, None)
                .unwrap_or_else(|e| panic!("{gpu}: {e}"));
            p.validate().unwrap();
        }
    }
}
