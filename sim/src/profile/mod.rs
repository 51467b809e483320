//! Calibration profiles: the versioned on-disk format that `servesim-calibrate` writes (GPU
//! measurement, Vidur import, fit) and the `profile` cost and swap models read. The schema lives in
//! this crate so that the writer and the reader cannot drift.
//!
//! A profile is one directory, by convention `calibrate/profiles/<gpu>/<model>/tp<k>/` (catalogue
//! names), holding three files:
//!
//! | file | content |
//! |---|---|
//! | `measurements.csv` | raw measurements, one row per operator and shape: `op,x,y,time_s,min_s,max_s,repeats,source` |
//! | `fit.toml` | the fitted model of every operator ([`OpFit`]) and the fixed per-iteration overhead |
//! | `meta.toml` | schema version, GPU / model / TP, device (name, SMs, memory, driver and CUDA versions), date, measurement settings (repeats, warm-up, statistic), the grid of every operator, fit residuals per operator, provenance |
//!
//! Operators and the meaning of `x` and `y` ([`Op`]); every time is seconds on one GPU of the TP
//! group (one shard), one layer unless noted:
//!
//! | op | x | y | time of |
//! |---|---|---|---|
//! | `qkv`, `out_proj`, `mlp_up`, `mlp_down` | tokens | 0 | one linear layer (`mlp_up`: gate and up fused for a gated MLP) |
//! | `lm_head` | rows (requests) | 0 | the LM head, once per iteration |
//! | `small_ops` | tokens | 0 | the two norms, activation, rotary embedding and residual adds |
//! | `attn_prefill` | chunk tokens of one sequence | tokens already cached for it | causal prefill attention |
//! | `attn_decode` | sequences | context tokens per sequence | paged decode attention |
//! | `all_reduce` | bytes | 0 | one all-reduce over the TP group |
//! | `h2d_pinned_memcpy`, `h2d_pinned_gather`, `h2d_pageable_memcpy`, and `d2h_…` | chunks copied | bytes per chunk | one host↔GPU transfer (a chunk is one layer's K or V part of one KV block) |
//!
//! `source` says where a row comes from: `measured` (a GPU run), `vidur:<file>` (imported), or
//! `derived:<how>` (computed from other rows; never counted as a measurement in the residuals).
//!
//! [`ExtrapolationCounter`] counts the queries the models answer outside the measured grid; the
//! run reads it after the simulation and reports it in `summary.json`.

pub mod table;

mod extrapolation;
mod op;
mod read;
mod schema;
pub mod validate;
mod write;

pub use extrapolation::{ExtrapolationCounter, ExtrapolationReport};
pub use op::{CopyVariant, Form, Op, OpSet};
pub use read::{parse_measurements, read_measurements_text};
pub use schema::{
    DeviceInfo, FitFile, GridInfo, Measurement, MeasurementInfo, Meta, Profile, Provenance,
    Residuals,
};
pub use write::{grids, measurements_csv};

use serde::{Deserialize, Serialize};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
pub const META_FILE: &str = "meta.toml";
pub const FIT_FILE: &str = "fit.toml";
pub const MEASUREMENTS_FILE: &str = "measurements.csv";
pub const MEASUREMENTS_HEADER: &str = "op,x,y,time_s,min_s,max_s,repeats,source";

/// The fitted model of one operator. `x`, `y` as in the operator table of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpFit {
    /// `latency_s + √((slope_s·x)² + floor_s²)`: a GEMM with a weight-read floor and a compute
    /// slope (a smooth roofline).
    Roofline {
        latency_s: f64,
        slope_s: f64,
        floor_s: f64,
    },
    /// `latency_s + slope_s·x`.
    Linear { latency_s: f64, slope_s: f64 },
    /// One sequence of `x` new tokens after `y` cached ones:
    /// `latency_s + s_per_token·x + s_per_token_sq·x·(x + 2y)` (causal query–key pairs).
    Prefill {
        latency_s: f64,
        s_per_token: f64,
        s_per_token_sq: f64,
    },
    /// `x` sequences of `y` context tokens each:
    /// `latency_s + s_per_sequence·x + s_per_context_token·x·y`.
    Decode {
        latency_s: f64,
        s_per_sequence: f64,
        s_per_context_token: f64,
    },
    /// `x` chunks of `y` bytes: `latency_s + s_per_chunk·x + x·y / bytes_per_s`.
    Copy {
        latency_s: f64,
        s_per_chunk: f64,
        bytes_per_s: f64,
    },
}

impl OpFit {
    pub fn form(&self) -> Form {
        match self {
            OpFit::Roofline { .. } => Form::Roofline,
            OpFit::Linear { .. } => Form::Linear,
            OpFit::Prefill { .. } => Form::Prefill,
            OpFit::Decode { .. } => Form::Decode,
            OpFit::Copy { .. } => Form::Copy,
        }
    }

    /// Predicted seconds at one measured shape.
    pub fn eval(&self, x: f64, y: f64) -> f64 {
        match *self {
            OpFit::Roofline {
                latency_s,
                slope_s,
                floor_s,
            } => latency_s + (slope_s * x).hypot(floor_s),
            OpFit::Linear { latency_s, slope_s } => latency_s + slope_s * x,
            OpFit::Prefill { .. } => self.prefill_batch(1.0, x, x * (x + 2.0 * y)),
            OpFit::Decode {
                latency_s,
                s_per_sequence,
                s_per_context_token,
            } => latency_s + s_per_sequence * x + s_per_context_token * x * y,
            OpFit::Copy {
                latency_s,
                s_per_chunk,
                bytes_per_s,
            } => latency_s + s_per_chunk * x + x * y / bytes_per_s,
        }
    }

    /// A prefill batch of `sequences` (possibly fractional, see the cost model) with `tokens` new
    /// tokens and `pairs` causal query–key pairs in all. Only meaningful for [`OpFit::Prefill`].
    pub fn prefill_batch(&self, sequences: f64, tokens: f64, pairs: f64) -> f64 {
        match *self {
            OpFit::Prefill {
                latency_s,
                s_per_token,
                s_per_token_sq,
            } => latency_s * sequences + s_per_token * tokens + s_per_token_sq * pairs,
            _ => f64::NAN,
        }
    }

    /// The parameters by name, in declaration order.
    pub fn params(&self) -> Vec<(&'static str, f64)> {
        match *self {
            OpFit::Roofline {
                latency_s,
                slope_s,
                floor_s,
            } => vec![
                ("latency_s", latency_s),
                ("slope_s", slope_s),
                ("floor_s", floor_s),
            ],
            OpFit::Linear { latency_s, slope_s } => {
                vec![("latency_s", latency_s), ("slope_s", slope_s)]
            }
            OpFit::Prefill {
                latency_s,
                s_per_token,
                s_per_token_sq,
            } => vec![
                ("latency_s", latency_s),
                ("s_per_token", s_per_token),
                ("s_per_token_sq", s_per_token_sq),
            ],
            OpFit::Decode {
                latency_s,
                s_per_sequence,
                s_per_context_token,
            } => vec![
                ("latency_s", latency_s),
                ("s_per_sequence", s_per_sequence),
                ("s_per_context_token", s_per_context_token),
            ],
            OpFit::Copy {
                latency_s,
                s_per_chunk,
                bytes_per_s,
            } => vec![
                ("latency_s", latency_s),
                ("s_per_chunk", s_per_chunk),
                ("bytes_per_s", bytes_per_s),
            ],
        }
    }
}

#[cfg(test)]
mod tests;
