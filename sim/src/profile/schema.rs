//! The in-memory schema of a profile: one `measurements.csv` row ([`Measurement`]), `fit.toml`
//! ([`FitFile`]), the tables of `meta.toml` ([`Meta`]) and the whole profile ([`Profile`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CopyVariant, Op, OpFit};

/// One row of `measurements.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub op: Op,
    pub x: u64,
    pub y: u64,
    /// The statistic of the repeats (`meta.toml` `measurement.statistic`, the median), seconds.
    pub time_s: f64,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    pub repeats: Option<u32>,
    /// `measured`, `vidur:<file>` or `derived:<how>`.
    pub source: String,
}

impl Measurement {
    /// A derived row is computed from other rows, not measured.
    pub fn is_derived(&self) -> bool {
        self.source.starts_with("derived")
    }
}
/// `fit.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitFile {
    pub schema_version: u32,
    /// Fixed seconds per iteration outside the profiled kernels (scheduling, sampling, launches).
    pub iteration_overhead_s: f64,
    /// How the values were obtained, and what is assumed rather than measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The copy variant the swap model uses unless the scenario names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_variant: Option<CopyVariant>,
    /// Operator name → fitted model.
    pub ops: BTreeMap<String, OpFit>,
}

/// `meta.toml` `[device]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// As the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
}

/// `meta.toml` `[measurement]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementInfo {
    /// Element type of the kernels, e.g. `fp16`.
    pub dtype: String,
    /// Statistic of the repeats stored in `time_s`, e.g. `median`.
    pub statistic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u32>,
    /// KV block sizes (tokens) whose chunk sizes the copy grid includes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_tokens: Vec<u32>,
    /// Wall-clock seconds the measurement took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
}

/// `meta.toml` `[provenance]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Where the measurements come from (files with checksums, a GPU run, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Operator → how its derived rows were computed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub derived: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// `meta.toml` `[grid.<op>]`: the measured domain of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridInfo {
    pub rows: u64,
    pub x_min: u64,
    pub x_max: u64,
    /// Distinct x values.
    pub x_values: u64,
    pub y_min: u64,
    pub y_max: u64,
    pub y_values: u64,
}

/// `meta.toml` `[fit.<op>]`: residuals of the fitted model against the rows of one operator,
/// |fitted / measured − 1|.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residuals {
    pub form: String,
    /// Rows the residuals are over (derived rows excluded when there are measured ones).
    pub points: u64,
    pub median_rel_err: f64,
    pub mean_rel_err: f64,
    pub max_rel_err: f64,
    /// `measured` or `derived` (when the operator has derived rows only).
    pub over: String,
}

/// `meta.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub schema_version: u32,
    /// Catalogue GPU name (e.g. `a100-80gb`).
    pub gpu: String,
    /// Catalogue model name (e.g. `llama-2-7b`).
    pub model: String,
    pub tp: u32,
    /// Date the profile was made, `YYYY-MM-DD`.
    pub created: String,
    /// `measured` (a GPU run) or `vidur-import`.
    pub source: String,
    /// Program and version that wrote it.
    pub tool: String,
    pub device: DeviceInfo,
    pub measurement: MeasurementInfo,
    #[serde(default)]
    pub provenance: Provenance,
    #[serde(default)]
    pub grid: BTreeMap<String, GridInfo>,
    #[serde(default)]
    pub fit: BTreeMap<String, Residuals>,
}

/// A whole profile in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub meta: Meta,
    pub fit: FitFile,
    pub rows: Vec<Measurement>,
}

impl Profile {
    /// The fitted model of `op`, if the profile has one.
    pub fn op_fit(&self, op: Op) -> Option<&OpFit> {
        self.fit.ops.get(op.name())
    }

    /// The rows of one operator, in file order.
    pub fn rows_of(&self, op: Op) -> impl Iterator<Item = &Measurement> {
        self.rows.iter().filter(move |r| r.op == op)
    }
}
