//! The scenario file's TOML schema: the [`Scenario`] struct, one struct per table, their
//! defaults and bounds, and the CLI [`Overrides`] of the common fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cost::linear::LinearCost;
use crate::cost::profile::ProfileMode;
use crate::engine::Guards;
use crate::trace::{ArrivalProcess, LengthDist};

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Scenario name; the default output directory is `results/<name>/<policy>/`.
    pub name: String,
    /// The one seed of the run; every random stream derives from it.
    #[serde(default)]
    pub seed: u64,
    /// Model name from the catalogue (e.g. `opt-13b`, `llama-2-7b`).
    pub model: String,
    /// GPU name from the catalogue (e.g. `a100-40gb`).
    pub gpu: String,
    /// Tensor-parallel degree (GPUs per pipeline stage).
    #[serde(default = "one")]
    pub tp: u32,
    /// Pipeline-parallel degree (stages per replica).
    #[serde(default = "one")]
    pub pp: u32,
    /// Number of model replicas; `router` picks each request's replica.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Heterogeneous clusters: groups of replicas, each with its own GPU type and parallelism
    /// (top-level `gpu`, `tp`, `pp` are the defaults of a group's missing fields). Replaces
    /// `replicas`: the cluster has Σ `count` replicas, numbered group by group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_groups: Vec<ReplicaGroup>,
    /// Cluster router (`round-robin` by default; see `servesim list`).
    #[serde(default = "default_router", skip_serializing_if = "is_default_router")]
    pub router: String,
    /// Per-router parameter tables, `[routers.NAME]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routers: BTreeMap<String, toml::Value>,
    /// Extra catalogue files (`[models.NAME]`, `[gpus.NAME]` tables) added to the built-in one.
    #[serde(default)]
    pub catalogue_files: Vec<PathBuf>,
    /// Output-length predictor the policies see (default: the policy's own default, `oracle`
    /// for most; `history` for `alise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<String>,
    /// Per-predictor parameter tables, `[predictors.NAME]`.
    #[serde(default)]
    pub predictors: BTreeMap<String, toml::Value>,
    pub trace: TraceSpec,
    #[serde(default)]
    pub memory: MemorySpec,
    /// Host↔GPU transfer model (defaults from the GPU's PCIe figures).
    #[serde(default)]
    pub swap: crate::swap::SwapSpec,
    /// Stage-to-stage activation sends of pipeline parallelism (used when `pp` > 1).
    #[serde(default, skip_serializing_if = "PipelineSpec::is_default")]
    pub pipeline: PipelineSpec,
    pub cost: CostSpec,
    pub scheduler: SchedulerSpec,
    /// Per-policy parameter tables, `[policies.NAME]`.
    #[serde(default)]
    pub policies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Latency targets for goodput (`[slo]`); when present `summary.json` gains `goodput` and
    /// `sweep.csv` a `goodput` column. Absent: outputs are exactly as without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
    /// What `servesim run` writes besides the fixed files.
    #[serde(default, skip_serializing_if = "OutputSpec::is_default")]
    pub output: OutputSpec,
    /// Sweep axes (used by `servesim sweep`; `run` runs the base scenario).
    #[serde(default, skip_serializing)]
    pub sweep: Option<toml::Value>,
}

/// One `[[replica_groups]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaGroup {
    /// Replicas in this group.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pp: Option<u32>,
}

/// Scenario `[pipeline]` table: the link between consecutive pipeline stages.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSpec {
    /// Fixed cost of one micro-batch's send to the next stage (default 20 µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_latency_s: Option<f64>,
    /// Stage-to-stage bandwidth (default 12.5 GB/s: one 100 Gb/s network link, since pipeline
    /// stages usually sit on different nodes; an assumption, not a measurement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_bytes_per_s: Option<f64>,
}

impl PipelineSpec {
    fn is_default(&self) -> bool {
        *self == PipelineSpec::default()
    }
}

fn one() -> u32 {
    1
}

/// The largest seed: TOML integers (a `[sweep]` seed axis, the scenario a sweep writes for each
/// run) hold up to `i64::MAX`.
pub const MAX_SEED: u64 = i64::MAX as u64;

/// Most replicas one scenario may have (`replicas`, or the sum of the `[[replica_groups]]`
/// counts): every replica holds its own engine state, so the count is bounded before anything is
/// allocated (65,536 replicas take about 250 MB).
pub const MAX_REPLICAS: u32 = 65_536;

/// Most tokens per KV block (`[memory] block_tokens`; vLLM uses 16): the engine sizes per-block
/// tables by it.
pub const MAX_BLOCK_TOKENS: u32 = 65_536;

fn default_router() -> String {
    crate::route::DEFAULT_ROUTER.to_string()
}

fn is_default_router(r: &str) -> bool {
    r == crate::route::DEFAULT_ROUTER
}

/// `[trace]`: either `file`, or a synthetic trace (`arrival`, `rate_per_s`, `num_requests`,
/// lengths from `lengths_file` or `input_lengths` + `output_lengths`, optional `cv`,
/// `replay_file`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// Canonical (`arrival_s,input_tokens,output_tokens`) or Vidur trace CSV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Synthetic: `poisson`, `gamma`, `constant` or `replay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival: Option<ArrivalProcess>,
    /// Synthetic: mean arrival rate. With `file`: rescale the file's arrivals to this mean rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Synthetic gamma: coefficient of variation of inter-arrival times (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    /// Synthetic: CSV of `input_tokens,output_tokens` sampled with replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lengths_file: Option<PathBuf>,
    /// Synthetic: number of requests. With `file`: read at most this many rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_requests: Option<u64>,
    /// Synthetic: skip lengths-file rows whose input + output exceed the model context (the
    /// count is reported); without it such a row is an error naming its line. With parametric
    /// lengths: redraw pairs that exceed the context.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_over_context: bool,
    /// Synthetic `replay`: the trace whose arrival times are replayed (rescaled to `rate_per_s`
    /// when it is given). Implies `arrival = "replay"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_file: Option<PathBuf>,
    /// Synthetic: parametric input lengths (instead of `lengths_file`), e.g.
    /// `{ dist = "lognormal", mean = 19.31, sigma = 0.6 }`; needs `output_lengths` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_lengths: Option<LengthDist>,
    /// Synthetic: parametric output lengths (instead of `lengths_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lengths: Option<LengthDist>,
}

/// `[memory]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySpec {
    /// Tokens per KV block.
    pub block_tokens: u32,
    /// Fraction of each GPU's memory servesim may use.
    pub gpu_memory_utilization: f64,
    /// Bytes per GPU kept for activations and workspace.
    pub activation_reserve_bytes: u64,
    /// Override: KV blocks per replica (ignores the memory arithmetic; for tests and teaching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_capacity_blocks: Option<u32>,
    /// Host memory for swapped-out KV, per replica (0 disables swapping: swap preemption then
    /// degrades to recompute).
    pub host_kv_bytes: u64,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            block_tokens: 16,
            gpu_memory_utilization: 0.9,
            activation_reserve_bytes: 1 << 30,
            kv_capacity_blocks: None,
            host_kv_bytes: 32 << 30,
        }
    }
}

/// `[cost]`: `model = "analytic" | "linear" | "constant" | "profile"` and that model's parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "model", rename_all = "lowercase", deny_unknown_fields)]
pub enum CostSpec {
    Constant {
        iteration_s: f64,
    },
    Linear(LinearCost),
    Analytic {
        /// Overrides of the fitted parameters for this scenario's GPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<toml::Value>,
    },
    /// A calibration profile (`servesim calibrate`), e.g. `calibrate/profiles/a100-80gb/llama-2-7b/tp1`.
    Profile {
        /// The profile directory, relative to the scenario file.
        path: PathBuf,
        /// `interpolate` (measured grid, default) or `fitted` (the per-operator fits only).
        #[serde(default)]
        mode: ProfileMode,
        /// Replaces the profile's fixed per-iteration overhead (seconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iteration_overhead_s: Option<f64>,
    },
}

/// `[scheduler]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSpec {
    pub policy: String,
    #[serde(default = "default_batch")]
    pub max_batch_size: u32,
    #[serde(default = "default_tokens")]
    pub max_batch_tokens: u32,
    /// Context limit; defaults to the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<u32>,
}

fn default_batch() -> u32 {
    256
}
fn default_tokens() -> u32 {
    2048
}

/// `[slo]`: per-request latency targets. A request meets the SLO when its TTFT ≤ `ttft_s` and
/// its TPOT ≤ `tpot_s` (TPOT by vLLM's benchmark convention, (finish − first token) /
/// (output tokens − 1); a one-token request is judged on TTFT alone). Goodput is the fraction of
/// requests that meet it (FastServe Fig. 13).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    pub ttft_s: f64,
    pub tpot_s: f64,
}

impl SloSpec {
    /// Both targets finite and > 0; the error names the offending field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("[slo] {k} must be a finite number > 0, got {v}"));
            }
        }
        Ok(())
    }
}

/// `[output]`: optional outputs of `servesim run`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSpec {
    /// Period of `kv_timeline.csv` samples in simulated seconds (0 = no file).
    pub kv_timeline_interval_s: f64,
}

/// Default `kv_timeline.csv` period (s).
pub const DEFAULT_KV_TIMELINE_INTERVAL_S: f64 = 1.0;

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            kv_timeline_interval_s: DEFAULT_KV_TIMELINE_INTERVAL_S,
        }
    }
}

impl OutputSpec {
    fn is_default(&self) -> bool {
        *self == OutputSpec::default()
    }
}

/// `[limits]`: guards that end a run with an error instead of a hang.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    pub max_events: u64,
    pub max_sim_s: f64,
    pub max_queue: u64,
    /// Shortest window of the overload detector in simulated seconds (0 = off).
    pub overload_window_s: f64,
    /// Unfinished requests per replica before the detector may call a run overloaded.
    pub overload_min_queue: u64,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        let g = Guards::default();
        LimitsSpec {
            max_events: g.max_events,
            max_sim_s: g.max_sim_ns as f64 / 1e9,
            max_queue: g.max_queue as u64,
            overload_window_s: g.overload_window_ns as f64 / 1e9,
            overload_min_queue: g.overload_min_queue as u64,
        }
    }
}

/// CLI overrides of the common fields.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub trace: Option<PathBuf>,
    pub policy: Option<String>,
    pub rate_per_s: Option<f64>,
    pub seed: Option<u64>,
    pub num_requests: Option<u64>,
}
