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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
pub const META_FILE: &str = "meta.toml";
pub const FIT_FILE: &str = "fit.toml";
pub const MEASUREMENTS_FILE: &str = "measurements.csv";
pub const MEASUREMENTS_HEADER: &str = "op,x,y,time_s,min_s,max_s,repeats,source";

/// A profiled operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Qkv,
    OutProj,
    MlpUp,
    MlpDown,
    LmHead,
    SmallOps,
    AttnPrefill,
    AttnDecode,
    AllReduce,
    H2dPinnedMemcpy,
    H2dPinnedGather,
    H2dPageableMemcpy,
    D2hPinnedMemcpy,
    D2hPinnedGather,
    D2hPageableMemcpy,
}

/// The fitted form an operator uses (see [`OpFit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Roofline,
    Linear,
    Prefill,
    Decode,
    Copy,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Roofline => "roofline",
            Form::Linear => "linear",
            Form::Prefill => "prefill",
            Form::Decode => "decode",
            Form::Copy => "copy",
        }
    }
}

/// Host memory and method of a measured host↔GPU copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyVariant {
    /// Pinned host memory, one `cuMemcpyAsync` per chunk.
    PinnedMemcpy,
    /// Pinned (mapped) host memory, one gather/scatter kernel for all chunks.
    PinnedGather,
    /// Pageable host memory, one `cuMemcpyAsync` per chunk.
    PageableMemcpy,
}

impl CopyVariant {
    pub const ALL: [CopyVariant; 3] = [
        CopyVariant::PinnedMemcpy,
        CopyVariant::PinnedGather,
        CopyVariant::PageableMemcpy,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CopyVariant::PinnedMemcpy => "pinned_memcpy",
            CopyVariant::PinnedGather => "pinned_gather",
            CopyVariant::PageableMemcpy => "pageable_memcpy",
        }
    }
    pub fn parse(s: &str) -> Option<CopyVariant> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::Qkv,
        Op::OutProj,
        Op::MlpUp,
        Op::MlpDown,
        Op::LmHead,
        Op::SmallOps,
        Op::AttnPrefill,
        Op::AttnDecode,
        Op::AllReduce,
        Op::H2dPinnedMemcpy,
        Op::H2dPinnedGather,
        Op::H2dPageableMemcpy,
        Op::D2hPinnedMemcpy,
        Op::D2hPinnedGather,
        Op::D2hPageableMemcpy,
    ];
    pub const COUNT: usize = Self::ALL.len();
    /// The linear (GEMM) operators of one layer.
    pub const LAYER_GEMMS: [Op; 4] = [Op::Qkv, Op::OutProj, Op::MlpUp, Op::MlpDown];
    /// The operators an iteration-time model needs (all-reduce only with TP > 1).
    pub const ITERATION: [Op; 8] = [
        Op::Qkv,
        Op::OutProj,
        Op::MlpUp,
        Op::MlpDown,
        Op::LmHead,
        Op::SmallOps,
        Op::AttnPrefill,
        Op::AttnDecode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Qkv => "qkv",
            Op::OutProj => "out_proj",
            Op::MlpUp => "mlp_up",
            Op::MlpDown => "mlp_down",
            Op::LmHead => "lm_head",
            Op::SmallOps => "small_ops",
            Op::AttnPrefill => "attn_prefill",
            Op::AttnDecode => "attn_decode",
            Op::AllReduce => "all_reduce",
            Op::H2dPinnedMemcpy => "h2d_pinned_memcpy",
            Op::H2dPinnedGather => "h2d_pinned_gather",
            Op::H2dPageableMemcpy => "h2d_pageable_memcpy",
            Op::D2hPinnedMemcpy => "d2h_pinned_memcpy",
            Op::D2hPinnedGather => "d2h_pinned_gather",
            Op::D2hPageableMemcpy => "d2h_pageable_memcpy",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Self::ALL.into_iter().find(|o| o.name() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The fitted form of this operator.
    pub fn form(self) -> Form {
        match self {
            Op::Qkv | Op::OutProj | Op::MlpUp | Op::MlpDown | Op::LmHead => Form::Roofline,
            Op::SmallOps | Op::AllReduce => Form::Linear,
            Op::AttnPrefill => Form::Prefill,
            Op::AttnDecode => Form::Decode,
            _ => Form::Copy,
        }
    }

    /// What `x` and `y` mean for this operator (units included).
    pub fn axes(self) -> (&'static str, &'static str) {
        match self {
            Op::Qkv | Op::OutProj | Op::MlpUp | Op::MlpDown | Op::SmallOps => ("tokens", "-"),
            Op::LmHead => ("rows", "-"),
            Op::AttnPrefill => ("chunk tokens", "cached tokens"),
            Op::AttnDecode => ("sequences", "context tokens per sequence"),
            Op::AllReduce => ("bytes", "-"),
            _ => ("chunks", "bytes per chunk"),
        }
    }

    /// The copy operator of a direction and variant.
    pub fn copy(host_to_device: bool, v: CopyVariant) -> Op {
        match (host_to_device, v) {
            (true, CopyVariant::PinnedMemcpy) => Op::H2dPinnedMemcpy,
            (true, CopyVariant::PinnedGather) => Op::H2dPinnedGather,
            (true, CopyVariant::PageableMemcpy) => Op::H2dPageableMemcpy,
            (false, CopyVariant::PinnedMemcpy) => Op::D2hPinnedMemcpy,
            (false, CopyVariant::PinnedGather) => Op::D2hPinnedGather,
            (false, CopyVariant::PageableMemcpy) => Op::D2hPageableMemcpy,
        }
    }

    pub fn is_copy(self) -> bool {
        self.form() == Form::Copy
    }
}

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

    fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in self.params() {
            let ok = if k == "bytes_per_s" {
                v.is_finite() && v > 0.0
            } else {
                v.is_finite() && v >= 0.0
            };
            if !ok {
                return Err(format!(
                    "`{k}` must be a finite number {} 0, got {v}",
                    if k == "bytes_per_s" { ">" } else { "≥" }
                ));
            }
        }
        Ok(())
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

fn io(path: &Path, msg: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn check_version(path: &Path, v: u32) -> Result<()> {
    if v != SCHEMA_VERSION {
        return Err(io(
            path,
            format!(
                "profile schema version {v} is not supported by this servesim (it reads version {SCHEMA_VERSION}); re-create the profile with `servesim calibrate`"
            ),
        ));
    }
    Ok(())
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES)
        .map_err(|e| io(path, format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| SimError::Scenario {
        path: path.to_path_buf(),
        msg: crate::error::toml_error_message(&text, &e),
    })
}

/// Parse `measurements.csv` text (`path` only names it in errors).
pub fn parse_measurements(text: &str, path: &Path) -> Result<Vec<Measurement>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| io(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.join(",") != MEASUREMENTS_HEADER {
        return Err(io(
            path,
            format!(
                "header must be `{MEASUREMENTS_HEADER}`, got `{}`",
                header.join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| io(path, e))?;
        let bad = |field: &str, msg: String| SimError::Input {
            path: path.to_path_buf(),
            line,
            field: field.into(),
            msg,
        };
        let get = |k: usize| rec.get(k).map(str::trim).unwrap_or("");
        let op = Op::parse(get(0)).ok_or_else(|| {
            bad(
                "op",
                format!(
                    "unknown operator `{}`; valid: {}",
                    get(0),
                    Op::ALL.map(Op::name).join(", ")
                ),
            )
        })?;
        let uint = |k: usize, name: &str| -> Result<u64> {
            get(k)
                .parse::<u64>()
                .map_err(|_| bad(name, format!("`{}` is not a non-negative integer", get(k))))
        };
        let secs = |k: usize, name: &str| -> Result<Option<f64>> {
            let s = get(k);
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
                _ => Err(bad(
                    name,
                    format!("`{s}` is not a positive number of seconds"),
                )),
            }
        };
        let x = uint(1, "x")?;
        if x == 0 {
            return Err(bad("x", "must be ≥ 1".into()));
        }
        let time_s = secs(3, "time_s")?.ok_or_else(|| bad("time_s", "missing".into()))?;
        let repeats = match get(6) {
            "" => None,
            s => Some(
                s.parse::<u32>()
                    .map_err(|_| bad("repeats", format!("`{s}` is not an integer")))?,
            ),
        };
        rows.push(Measurement {
            op,
            x,
            y: uint(2, "y")?,
            time_s,
            min_s: secs(4, "min_s")?,
            max_s: secs(5, "max_s")?,
            repeats,
            source: get(7).to_string(),
        });
    }
    Ok(rows)
}

/// `measurements.csv` text.
pub fn measurements_csv(rows: &[Measurement]) -> String {
    let mut s = String::from(MEASUREMENTS_HEADER);
    s.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{:e},{},{},{},{}",
            r.op.name(),
            r.x,
            r.y,
            r.time_s,
            opt(r.min_s),
            opt(r.max_s),
            r.repeats.map(|n| n.to_string()).unwrap_or_default(),
            r.source.replace([',', '\n', '"'], ";"),
        );
    }
    s
}

/// The measured domain of every operator present in `rows`.
pub fn grids(rows: &[Measurement]) -> BTreeMap<String, GridInfo> {
    let mut by_op: BTreeMap<Op, Vec<&Measurement>> = BTreeMap::new();
    for r in rows {
        by_op.entry(r.op).or_default().push(r);
    }
    by_op
        .into_iter()
        .map(|(op, rs)| {
            let distinct = |f: fn(&Measurement) -> u64| {
                let mut v: Vec<u64> = rs.iter().map(|r| f(r)).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let xs = distinct(|r| r.x);
            let ys = distinct(|r| r.y);
            (
                op.name().to_string(),
                GridInfo {
                    rows: rs.len() as u64,
                    x_min: xs[0],
                    x_max: *xs.last().expect("non-empty"),
                    x_values: xs.len() as u64,
                    y_min: ys[0],
                    y_max: *ys.last().expect("non-empty"),
                    y_values: ys.len() as u64,
                },
            )
        })
        .collect()
}

impl Profile {
    /// Read and validate a profile directory.
    pub fn load(dir: &Path) -> Result<Profile> {
        if !dir.is_dir() {
            return Err(io(
                dir,
                "not a profile directory (expected meta.toml, fit.toml and measurements.csv; see `servesim calibrate import-vidur` or `servesim calibrate run`)",
            ));
        }
        let meta_path = dir.join(META_FILE);
        let meta: Meta = read_toml(&meta_path)?;
        check_version(&meta_path, meta.schema_version)?;
        let fit_path = dir.join(FIT_FILE);
        let fit: FitFile = read_toml(&fit_path)?;
        check_version(&fit_path, fit.schema_version)?;
        if !(fit.iteration_overhead_s.is_finite() && fit.iteration_overhead_s >= 0.0) {
            return Err(io(
                &fit_path,
                "iteration_overhead_s must be a finite number ≥ 0",
            ));
        }
        for (name, f) in &fit.ops {
            let op = Op::parse(name).ok_or_else(|| {
                io(
                    &fit_path,
                    format!(
                        "[ops.{name}]: unknown operator; valid: {}",
                        Op::ALL.map(Op::name).join(", ")
                    ),
                )
            })?;
            if f.form() != op.form() {
                return Err(io(
                    &fit_path,
                    format!(
                        "[ops.{name}]: form `{}` but this operator uses `{}`",
                        f.form().name(),
                        op.form().name()
                    ),
                ));
            }
            f.validate()
                .map_err(|m| io(&fit_path, format!("[ops.{name}]: {m}")))?;
        }
        let m_path = dir.join(MEASUREMENTS_FILE);
        let text = crate::input::read_text(&m_path, crate::input::MAX_DATA_BYTES)
            .map_err(|e| io(&m_path, format!("cannot read: {e}")))?;
        let rows = parse_measurements(&text, &m_path)?;
        Ok(Profile { meta, fit, rows })
    }

    /// The fitted model of `op`, if the profile has one.
    pub fn op_fit(&self, op: Op) -> Option<&OpFit> {
        self.fit.ops.get(op.name())
    }

    /// The rows of one operator, in file order.
    pub fn rows_of(&self, op: Op) -> impl Iterator<Item = &Measurement> {
        self.rows.iter().filter(move |r| r.op == op)
    }

    /// The three files' text (meta's grid recomputed from the rows).
    pub fn render(&self) -> Result<[(&'static str, String); 3]> {
        let mut meta = self.meta.clone();
        meta.schema_version = SCHEMA_VERSION;
        meta.grid = grids(&self.rows);
        let mut fit = self.fit.clone();
        fit.schema_version = SCHEMA_VERSION;
        let ser = |e: toml::ser::Error| SimError::config(format!("cannot serialise profile: {e}"));
        Ok([
            (
                META_FILE,
                format!(
                    "# servesim calibration profile: metadata (schema {SCHEMA_VERSION}). Written by {}.\n{}",
                    meta.tool,
                    toml::to_string(&meta).map_err(ser)?
                ),
            ),
            (
                FIT_FILE,
                format!(
                    "# servesim calibration profile: fitted per-operator models (schema {SCHEMA_VERSION}); forms in sim/src/profile/mod.rs.\n{}",
                    toml::to_string(&fit).map_err(ser)?
                ),
            ),
            (MEASUREMENTS_FILE, measurements_csv(&self.rows)),
        ])
    }

    /// Write the profile into `dir` atomically (staged in a sibling directory, then renamed). An
    /// existing directory is replaced when servesim wrote it (or it is empty), or with `force`;
    /// never one holding `replace.inputs`.
    pub fn write(&self, dir: &Path, replace: &crate::staging::Replace) -> Result<PathBuf> {
        let files = self.render()?;
        let staged = crate::staging::StagedDir::new(dir, replace)?;
        for (name, text) in &files {
            staged.write(name, text.as_bytes())?;
        }
        staged.commit()
    }
}

/// Counts the queries a profile-based model answered outside its measured grid. Shared (through
/// an `Arc`) between the models of one run; the run reads it after the simulation.
#[derive(Debug, Default)]
pub struct ExtrapolationCounter {
    iterations: AtomicU64,
    ops: [AtomicU64; Op::COUNT],
    transfers: AtomicU64,
}

impl ExtrapolationCounter {
    /// Record one iteration; `outside[op]` tells which operators were outside their grid.
    pub fn record_iteration(&self, outside: &[bool; Op::COUNT]) {
        if outside.iter().any(|&o| o) {
            self.iterations.fetch_add(1, Ordering::Relaxed);
            for (i, &o) in outside.iter().enumerate() {
                if o {
                    self.ops[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Record one transfer outside the measured copy grid.
    pub fn record_transfer(&self, op: Op) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.ops[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> ExtrapolationReport {
        ExtrapolationReport {
            iterations: self.iterations.load(Ordering::Relaxed),
            transfers: self.transfers.load(Ordering::Relaxed),
            by_operator: Op::ALL
                .iter()
                .filter_map(|op| {
                    let n = self.ops[op.index()].load(Ordering::Relaxed);
                    (n > 0).then(|| (op.name().to_string(), n))
                })
                .collect(),
        }
    }
}

/// `summary.json` `profile_extrapolations`: how often the profile models were asked outside the
/// measured grid (and extrapolated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtrapolationReport {
    /// Iterations with at least one operator outside its measured grid.
    pub iterations: u64,
    /// Host↔GPU transfers outside the measured copy grid.
    pub transfers: u64,
    /// Operator → queries outside its grid (operators with none omitted).
    pub by_operator: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        let mut ops = BTreeMap::new();
        ops.insert(
            "qkv".to_string(),
            OpFit::Roofline {
                latency_s: 1e-5,
                slope_s: 1e-8,
                floor_s: 2e-5,
            },
        );
        ops.insert(
            "h2d_pinned_gather".to_string(),
            OpFit::Copy {
                latency_s: 1e-5,
                s_per_chunk: 1e-7,
                bytes_per_s: 2e10,
            },
        );
        Profile {
            meta: Meta {
                schema_version: SCHEMA_VERSION,
                gpu: "a100-80gb".into(),
                model: "llama-2-7b".into(),
                tp: 1,
                created: "2026-01-01".into(),
                source: "measured".into(),
                tool: "test".into(),
                device: DeviceInfo {
                    name: "Test GPU".into(),
                    sm_count: Some(108),
                    ..Default::default()
                },
                measurement: MeasurementInfo {
                    dtype: "fp16".into(),
                    statistic: "median".into(),
                    repeats: Some(20),
                    ..Default::default()
                },
                provenance: Provenance::default(),
                grid: BTreeMap::new(),
                fit: BTreeMap::new(),
            },
            fit: FitFile {
                schema_version: SCHEMA_VERSION,
                iteration_overhead_s: 0.002,
                notes: vec!["a note".into()],
                swap_variant: Some(CopyVariant::PinnedGather),
                ops,
            },
            rows: vec![
                Measurement {
                    op: Op::Qkv,
                    x: 16,
                    y: 0,
                    time_s: 3.25e-5,
                    min_s: Some(3.1e-5),
                    max_s: Some(3.5e-5),
                    repeats: Some(20),
                    source: "measured".into(),
                },
                Measurement {
                    op: Op::H2dPinnedGather,
                    x: 64,
                    y: 131072,
                    time_s: 4.5e-4,
                    min_s: None,
                    max_s: None,
                    repeats: None,
                    source: "derived:test".into(),
                },
            ],
        }
    }

    #[test]
    fn op_names_round_trip_and_forms() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
            assert_eq!(Op::ALL[op.index()], op);
        }
        assert_eq!(Op::Qkv.form(), Form::Roofline);
        assert_eq!(
            Op::copy(false, CopyVariant::PinnedGather),
            Op::D2hPinnedGather
        );
        assert!(Op::D2hPageableMemcpy.is_copy() && !Op::AttnDecode.is_copy());
    }

    #[test]
    fn profile_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample();
        let dest = dir.path().join("a100-80gb/llama-2-7b/tp1");
        p.write(&dest, &Default::default()).unwrap();
        let back = Profile::load(&dest).unwrap();
        assert_eq!(back.fit, p.fit);
        assert_eq!(back.rows, p.rows);
        let mut want = p.meta.clone();
        want.grid = grids(&p.rows);
        assert_eq!(back.meta, want);
        assert_eq!(back.meta.grid["h2d_pinned_gather"].y_max, 131072);
        // Rewriting the loaded profile gives the same bytes.
        assert_eq!(back.render().unwrap(), p.render().unwrap());
    }

    #[test]
    fn load_rejects_other_schema_versions_and_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("p");
        sample().write(&dest, &Default::default()).unwrap();
        let meta = std::fs::read_to_string(dest.join(META_FILE)).unwrap();
        std::fs::write(
            dest.join(META_FILE),
            meta.replace("schema_version = 1", "schema_version = 7"),
        )
        .unwrap();
        let e = Profile::load(&dest).unwrap_err().to_string();
        assert!(e.contains("schema version 7"), "{e}");
        std::fs::write(dest.join(META_FILE), meta).unwrap();
        std::fs::write(
            dest.join(MEASUREMENTS_FILE),
            format!("{MEASUREMENTS_HEADER}\nqkv,16,0,-1,,,,measured\n"),
        )
        .unwrap();
        let e = Profile::load(&dest).unwrap_err().to_string();
        assert!(e.contains(":2: field `time_s`"), "{e}");
        std::fs::write(
            dest.join(MEASUREMENTS_FILE),
            format!("{MEASUREMENTS_HEADER}\nwarp,16,0,1,,,,measured\n"),
        )
        .unwrap();
        let e = Profile::load(&dest).unwrap_err().to_string();
        assert!(e.contains("unknown operator `warp`"), "{e}");
        assert!(Profile::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn fit_forms_are_checked_against_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("p");
        let mut p = sample();
        p.fit.ops.insert(
            "attn_decode".into(),
            OpFit::Linear {
                latency_s: 0.0,
                slope_s: 1.0,
            },
        );
        p.write(&dest, &Default::default()).unwrap();
        let e = Profile::load(&dest).unwrap_err().to_string();
        assert!(e.contains("[ops.attn_decode]: form `linear`"), "{e}");
    }

    #[test]
    fn fitted_forms_by_hand() {
        let r = OpFit::Roofline {
            latency_s: 1.0,
            slope_s: 3.0,
            floor_s: 4.0,
        };
        assert_eq!(r.eval(1.0, 0.0), 6.0);
        let p = OpFit::Prefill {
            latency_s: 1.0,
            s_per_token: 0.5,
            s_per_token_sq: 0.25,
        };
        // 1 + 0.5·2 + 0.25·2·(2 + 2·1) = 4
        assert_eq!(p.eval(2.0, 1.0), 4.0);
        assert_eq!(p.prefill_batch(2.0, 4.0, 8.0), 2.0 + 2.0 + 2.0);
        let d = OpFit::Decode {
            latency_s: 1.0,
            s_per_sequence: 0.5,
            s_per_context_token: 0.01,
        };
        assert!((d.eval(4.0, 100.0) - (1.0 + 2.0 + 4.0)).abs() < 1e-12);
        let c = OpFit::Copy {
            latency_s: 1e-5,
            s_per_chunk: 1e-6,
            bytes_per_s: 1e9,
        };
        assert!((c.eval(10.0, 1e6) - (1e-5 + 1e-5 + 1e-2)).abs() < 1e-15);
    }

    #[test]
    fn counter_reports_by_operator() {
        let c = ExtrapolationCounter::default();
        let mut out = [false; Op::COUNT];
        c.record_iteration(&out);
        out[Op::AttnDecode.index()] = true;
        out[Op::LmHead.index()] = true;
        c.record_iteration(&out);
        c.record_transfer(Op::H2dPinnedGather);
        let r = c.report();
        assert_eq!((r.iterations, r.transfers), (1, 1));
        assert_eq!(r.by_operator["attn_decode"], 1);
        assert_eq!(r.by_operator["h2d_pinned_gather"], 1);
        assert!(!r.by_operator.contains_key("qkv"));
    }
}
