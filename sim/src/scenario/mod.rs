//! Scenario files (TOML): schema, validation, CLI overrides and resolution into the parts a run
//! needs. Every table denies unknown keys. Relative paths are relative to the scenario file's
//! directory (paths given on the command line are relative to the working directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, GpuSpec, ModelSpec};
use crate::cost::CostModel;
use crate::cost::analytic::{AnalyticCost, AnalyticParams};
use crate::cost::constant::ConstantCost;
use crate::cost::linear::LinearCost;
use crate::cost::profile::{ProfileCost, ProfileMode, ProfileTables};
use crate::engine::Guards;
use crate::error::{Result, SimError};
use crate::policy::Limits;
use crate::trace::{ArrivalProcess, LengthDist};

const ANALYTIC_FIT_TOML: &str = include_str!("../../catalogue/analytic_fit.toml");

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

use crate::error::toml_error_message;

/// The longest scenario name (it names a directory).
pub const MAX_NAME_CHARS: usize = 100;

/// A scenario name is an identifier that becomes one directory, `results/<name>/`: letters,
/// digits and `-_.+@=,`, not starting with `.`, at most [`MAX_NAME_CHARS`] characters. So no path
/// separators, no `..`, no absolute path, no control characters.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let shown: String = name.chars().take(40).flat_map(char::escape_debug).collect();
    if name.is_empty() {
        return Err("the scenario name is empty; give an identifier such as \"my_study\"".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the scenario name \"{shown}…\" is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "the scenario name \"{shown}\" starts with `.`; names become directories under results/ and must not be hidden or climb out (`..`)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "-_.+@=,".contains(*c)))
    {
        return Err(format!(
            "the scenario name \"{shown}\" contains {}; names become directories under results/: use letters, digits and - _ . + @ = , only",
            match c {
                '/' | '\\' => "a path separator".to_string(),
                c if c.is_control() => format!("the control character {}", c.escape_default()),
                c => format!("`{c}`"),
            }
        ));
    }
    Ok(())
}

/// 1-based line of a key in TOML `text`, by its path (tables, then the key): the key's line,
/// or the line of the deepest table of the path that is present (`None` when none is, or the
/// text does not parse).
pub fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut line = None;
    for seg in path {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg) else {
            break;
        };
        let start = k.span().start.min(text.len());
        line = Some(text[..start].matches('\n').count() + 1);
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    line
}

/// The key of `table` that `check` rejects on its own (each key tried alone, the others left
/// at their defaults): names the key a parameter parser's message leaves out.
fn blame_key(table: &toml::Value, check: &dyn Fn(&toml::Value) -> Result<()>) -> Option<String> {
    table.as_table()?.iter().find_map(|(k, v)| {
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        check(&toml::Value::Table(one)).is_err().then(|| k.clone())
    })
}

/// A loaded scenario with its base directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub scenario: Scenario,
    /// The scenario file's text (to name the line of a key in errors).
    pub text: std::sync::Arc<str>,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| {
        SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read scenario: {e}"),
        }
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Loaded> {
    let scenario: Scenario = toml::from_str(text).map_err(|e| SimError::Scenario {
        path: path.to_path_buf(),
        msg: toml_error_message(text, &e),
    })?;
    if let Err(msg) = check_name(&scenario.name) {
        let line = line_of_key(text, &["name"])
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        return Err(SimError::Scenario {
            path: path.to_path_buf(),
            msg: format!("{line}field `name`: {msg}"),
        });
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        base_dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        scenario,
        text: text.into(),
    })
}

/// Where a run's requests come from, with paths resolved.
#[derive(Debug, Clone)]
pub enum TraceSource {
    File {
        path: PathBuf,
        rate_per_s: Option<f64>,
        limit: Option<u64>,
    },
    Synthetic {
        arrival: ArrivalProcess,
        /// Required except for `replay` (where it rescales the replayed trace).
        rate_per_s: Option<f64>,
        cv: f64,
        /// `replay` only.
        replay_file: Option<PathBuf>,
        lengths: SyntheticLengths,
        num_requests: u64,
        drop_over_context: bool,
    },
}

/// Lengths of a synthetic trace, with paths resolved.
#[derive(Debug, Clone)]
pub enum SyntheticLengths {
    /// Sampled with replacement from a lengths file.
    File(PathBuf),
    /// Drawn from parametric distributions.
    Parametric {
        input: LengthDist,
        output: LengthDist,
    },
}

/// Everything a run needs, validated.
pub struct Resolved {
    pub scenario: Scenario,
    pub scenario_path: PathBuf,
    pub model: ModelSpec,
    pub gpu: GpuSpec,
    pub trace: TraceSource,
    pub limits: Limits,
    pub guards: Guards,
    pub kv_capacity_blocks: u32,
    /// Host KV blocks per replica.
    pub host_kv_blocks: u32,
    /// Bytes of one KV block (whole replica).
    pub kv_block_bytes: u64,
    pub swap: crate::swap::PcieSwap,
    /// `[swap] reactive` (or the policy's default) and the layers of one pipeline stage.
    pub swap_timing: crate::swap::timing::SwapTiming,
    /// Pipeline of each replica (one stage unless `pp` > 1).
    pub pipeline: crate::exec::Pipeline,
    /// `[swap] kv_offload_bits`, `kv_quant_s_per_byte`: the format of offloaded KV.
    pub offload: crate::swap::KvOffload,
    /// `[output] kv_timeline_interval_s` in ns (0 = off).
    pub kv_timeline_interval_ns: u64,
    /// `[swap] profile`: replaces `swap` when set.
    pub swap_profile: Option<crate::swap::profile::ProfileSwap>,
    /// `[cost] model = "profile"`: the profile's tables and its directory.
    pub cost_profile: Option<(std::sync::Arc<ProfileTables>, PathBuf)>,
    pub policy_params: serde_json::Value,
    /// `[[replica_groups]]`: each group resolved as a scenario of its own (its GPU, `tp`, `pp`
    /// and `replicas = count`); empty for a homogeneous cluster.
    pub groups: Vec<Resolved>,
    /// The router's resolved parameters.
    pub router_params: serde_json::Value,
    pub analytic_params: Option<AnalyticParams>,
    /// The predictor the policy sees (forced, named, or the policy's default).
    pub predictor: String,
}

impl Loaded {
    fn err(&self, msg: impl Into<String>) -> SimError {
        SimError::Scenario {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// An error about the key at `path` (tables, then the key): names its line when the file
    /// has it.
    fn err_at(&self, path: &[&str], msg: impl Into<String>) -> SimError {
        match line_of_key(&self.text, path) {
            Some(line) => self.err(format!("line {line}: {}", msg.into())),
            None => self.err(msg),
        }
    }

    /// An error of a parameter table (`[SECTION.NAME]`) from its parser: the message with the
    /// line of the key at fault (found by [`blame_key`]) or of the table.
    fn table_err(
        &self,
        section: &str,
        name: &str,
        table: &toml::Value,
        e: SimError,
        check: &dyn Fn(&toml::Value) -> Result<()>,
    ) -> SimError {
        let msg = match e {
            SimError::Config(m) | SimError::Scenario { msg: m, .. } => m,
            other => return other,
        };
        match blame_key(table, check) {
            Some(k) => {
                let msg = msg.replacen(
                    &format!("[{section}.{name}]:"),
                    &format!("[{section}.{name}] `{k}`:"),
                    1,
                );
                self.err_at(&[section, name, &k], msg)
            }
            None => self.err_at(&[section, name], msg),
        }
    }

    /// Load a calibration profile for `section` and check that it was made on the scenario's GPU.
    fn load_profile(
        &self,
        dir: &Path,
        gpu: &str,
        section: &str,
    ) -> Result<crate::profile::Profile> {
        let profile = crate::profile::Profile::load(dir).map_err(|e| match e {
            SimError::Config(m) => self.err(format!("{section} profile: {m}")),
            other => other,
        })?;
        if !profile.meta.gpu.eq_ignore_ascii_case(gpu) {
            return Err(self.err(format!(
                "{section} profile {} was made on GPU `{}`, the scenario's gpu is `{gpu}`",
                dir.display(),
                profile.meta.gpu
            )));
        }
        Ok(profile)
    }

    /// `[swap] profile = "DIR"`: the profile swap model (`None` without `profile`).
    fn swap_profile(
        &self,
        model: &ModelSpec,
        s: &Scenario,
        kv_layout: crate::swap::KvLayout,
    ) -> Result<Option<crate::swap::profile::ProfileSwap>> {
        let w = &s.swap;
        let Some(p) = &w.profile else {
            if w.variant.is_some() {
                return Err(self.err("[swap]: `variant` goes with `profile`"));
            }
            return Ok(None);
        };
        if w.latency_s.is_some()
            || w.per_block_s.is_some()
            || w.per_call_s.is_some()
            || w.h2d_bytes_per_s.is_some()
            || w.d2h_bytes_per_s.is_some()
            || w.efficiency.is_some()
        {
            return Err(self.err(
                "[swap]: `profile` replaces latency_s, per_call_s, per_block_s, h2d_bytes_per_s, d2h_bytes_per_s and efficiency; remove them",
            ));
        }
        let dir = self.rel(p);
        let profile = self.load_profile(&dir, &s.gpu, "[swap]")?;
        crate::swap::profile::ProfileSwap::new(
            &profile,
            dir.clone(),
            w.variant,
            model,
            s.pp,
            s.tp * s.pp,
            kv_layout,
        )
        .map(Some)
        .map_err(|e| self.err(format!("[swap] profile {}: {e}", dir.display())))
    }

    fn rel(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Apply CLI overrides and validate everything that can be checked before the run.
    pub fn resolve(mut self, o: &Overrides) -> Result<Resolved> {
        let s = &mut self.scenario;
        if let Some(seed) = o.seed {
            s.seed = seed;
        }
        if let Some(p) = &o.policy {
            s.scheduler.policy = p.clone();
        }
        let mut trace_from_cli = false;
        if let Some(t) = &o.trace {
            s.trace = TraceSpec {
                file: Some(t.clone()),
                ..Default::default()
            };
            trace_from_cli = true;
        }
        if let Some(r) = o.rate_per_s {
            s.trace.rate_per_s = Some(r);
        }
        if let Some(n) = o.num_requests {
            s.trace.num_requests = Some(n);
        }
        let groups = self.resolve_groups()?;
        if let Some(first) = groups.first() {
            // The top-level `gpu`, `tp`, `pp` are only the groups' defaults: what the cluster as a
            // whole resolves to (config.json, validation) is replica 0's hardware, so a default
            // that no group keeps need not fit the model.
            self.scenario.replicas = groups.iter().map(|g| g.scenario.replicas).sum();
            self.scenario.gpu = first.scenario.gpu.clone();
            self.scenario.tp = first.scenario.tp;
            self.scenario.pp = first.scenario.pp;
        }
        let s = self.scenario.clone();
        let mut cat = Catalogue::builtin();
        for f in &s.catalogue_files {
            cat.extend_from_file(&self.rel(f))?;
        }
        let wrap = |e: SimError| match e {
            SimError::Config(m) => self.err(m),
            other => other,
        };
        let model = cat.model(&s.model).map_err(wrap)?.clone();
        let gpu = cat.gpu(&s.gpu).map_err(wrap)?.clone();
        for (k, v) in [("tp", s.tp), ("pp", s.pp), ("replicas", s.replicas)] {
            if v == 0 {
                return Err(self.err_at(&[k], format!("`{k}` must be ≥ 1")));
            }
        }
        if s.replicas > MAX_REPLICAS {
            return Err(self.err_at(
                &["replicas"],
                format!(
                    "`replicas` = {} is above the limit of {MAX_REPLICAS} replicas per scenario",
                    s.replicas
                ),
            ));
        }
        if model.layers % s.pp != 0 {
            return Err(self.err_at(
                &["pp"],
                format!(
                    "pp = {} does not divide the model's {} layers",
                    s.pp, model.layers
                ),
            ));
        }
        if model.heads % s.tp != 0 {
            return Err(self.err_at(
                &["tp"],
                format!(
                    "tp = {} does not divide the model's {} attention heads",
                    s.tp, model.heads
                ),
            ));
        }
        if !model.kv_heads.is_multiple_of(s.tp) && !s.tp.is_multiple_of(model.kv_heads) {
            return Err(self.err_at(&["tp"], format!(
                "tp = {} and the model's {} KV heads: one must divide the other (each GPU holds whole KV heads, or each KV head is replicated over whole GPUs)",
                s.tp, model.kv_heads
            )));
        }

        // Trace.
        let t = &s.trace;
        let parametric = t.input_lengths.is_some() || t.output_lengths.is_some();
        let synthetic_keys = t.lengths_file.is_some() || parametric || t.replay_file.is_some();
        let trace = match &t.file {
            Some(_) if synthetic_keys => {
                return Err(self.err_at(
                    &["trace", "file"],
                    "[trace]: give either `file` or a synthetic trace (`lengths_file`, `input_lengths`/`output_lengths`, `replay_file`), not both",
                ));
            }
            None if !synthetic_keys => {
                return Err(self.err_at(
                    &["trace"],
                    "[trace]: give `file` (a trace CSV) or a synthetic trace (`arrival`, `rate_per_s`, `num_requests`, and `lengths_file` or `input_lengths` + `output_lengths`)",
                ));
            }
            Some(f) => {
                if t.arrival.is_some() || t.cv.is_some() || t.drop_over_context {
                    return Err(self.err_at(
                        &["trace", "file"],
                        "[trace]: `arrival`, `cv` and `drop_over_context` apply to synthetic traces only, not to `file`",
                    ));
                }
                TraceSource::File {
                    path: if trace_from_cli {
                        f.clone()
                    } else {
                        self.rel(f)
                    },
                    rate_per_s: t.rate_per_s,
                    limit: t.num_requests,
                }
            }
            None => {
                let lengths = match (&t.lengths_file, &t.input_lengths, &t.output_lengths) {
                    (Some(l), None, None) => SyntheticLengths::File(self.rel(l)),
                    (None, Some(i), Some(o)) => {
                        for (k, d) in [("input_lengths", i), ("output_lengths", o)] {
                            d.validate().map_err(|e| {
                                self.err_at(&["trace", k], format!("[trace] {k}: {e}"))
                            })?;
                        }
                        SyntheticLengths::Parametric {
                            input: i.clone(),
                            output: o.clone(),
                        }
                    }
                    (Some(_), _, _) => {
                        return Err(self.err_at(
                            &["trace", "lengths_file"],
                            "[trace]: give either `lengths_file` or `input_lengths` + `output_lengths`, not both",
                        ));
                    }
                    (None, None, None) => {
                        return Err(self.err_at(
                            &["trace"],
                            "[trace]: synthetic traces need lengths: `lengths_file` or `input_lengths` + `output_lengths`",
                        ));
                    }
                    (None, _, _) => {
                        return Err(self.err_at(
                            &["trace"],
                            "[trace]: `input_lengths` and `output_lengths` go together; give both",
                        ));
                    }
                };
                let arrival = match (t.arrival, &t.replay_file) {
                    (None, Some(_)) | (Some(ArrivalProcess::Replay), Some(_)) => {
                        ArrivalProcess::Replay
                    }
                    (Some(ArrivalProcess::Replay), None) => {
                        return Err(self.err_at(
                            &["trace", "arrival"],
                            "[trace]: `arrival = \"replay\"` needs `replay_file` (the trace whose arrival times are replayed)",
                        ));
                    }
                    (Some(a), Some(_)) => {
                        return Err(self.err_at(
                            &["trace", "replay_file"],
                            format!(
                                "[trace]: `replay_file` goes with `arrival = \"replay\"`, not `{}`",
                                ArrivalProcess::NAMES[a as usize]
                            ),
                        ));
                    }
                    (a, None) => a.unwrap_or(ArrivalProcess::Poisson),
                };
                // `cv` shapes gamma arrivals; elsewhere it may only state the process's own cv
                // (Poisson 1, constant 0), so a sweep over `arrival` can keep one `cv`.
                let own_cv = match arrival {
                    ArrivalProcess::Poisson => Some(1.0),
                    ArrivalProcess::Constant => Some(0.0),
                    _ => None,
                };
                if let Some(cv) = t.cv
                    && arrival != ArrivalProcess::Gamma
                    && own_cv != Some(cv)
                {
                    return Err(self.err_at(
                        &["trace", "cv"],
                        format!(
                            "[trace] cv = {} has no effect on `{}` arrivals{}; it shapes `arrival = \"gamma\"` only",
                            crate::error::num(cv),
                            ArrivalProcess::NAMES[arrival as usize],
                            own_cv.map_or(String::new(), |c| format!(" (whose cv is {c})"))
                        ),
                    ));
                }
                if arrival != ArrivalProcess::Replay && t.rate_per_s.is_none() {
                    return Err(
                        self.err_at(&["trace"], "[trace]: synthetic traces need `rate_per_s`")
                    );
                }
                TraceSource::Synthetic {
                    arrival,
                    rate_per_s: t.rate_per_s,
                    cv: t.cv.unwrap_or(1.0),
                    replay_file: t.replay_file.as_ref().map(|p| self.rel(p)),
                    lengths,
                    num_requests: t.num_requests.ok_or_else(|| {
                        self.err_at(&["trace"], "[trace]: synthetic traces need `num_requests`")
                    })?,
                    drop_over_context: t.drop_over_context,
                }
            }
        };
        if let Some(r) = t.rate_per_s
            && !(r.is_finite() && r > 0.0)
        {
            return Err(self.err_at(
                &["trace", "rate_per_s"],
                format!(
                    "[trace] rate_per_s must be a finite number > 0, got {}",
                    crate::error::num(r)
                ),
            ));
        }
        use crate::trace::synthetic::{MAX_CV, MIN_CV};
        if let Some(cv) = t.cv
            && t.arrival == Some(ArrivalProcess::Gamma)
            && !(cv.is_finite() && (MIN_CV..=MAX_CV).contains(&cv))
        {
            return Err(self.err_at(
                &["trace", "cv"],
                format!(
                    "[trace] cv must be from {MIN_CV:e} to {MAX_CV:e} for gamma arrivals, got {}",
                    crate::error::num(cv)
                ),
            ));
        }

        // Limits.
        let sch = &s.scheduler;
        if let Some(slo) = &s.slo {
            slo.validate().map_err(|m| self.err_at(&["slo"], m))?;
        }
        if sch.max_batch_size == 0 || sch.max_batch_tokens == 0 {
            let key = if sch.max_batch_size == 0 {
                "max_batch_size"
            } else {
                "max_batch_tokens"
            };
            return Err(self.err_at(
                &["scheduler", key],
                "[scheduler] max_batch_size and max_batch_tokens must be ≥ 1",
            ));
        }
        let limits = Limits {
            max_batch_size: sch.max_batch_size,
            max_batch_tokens: sch.max_batch_tokens,
            max_context_tokens: sch.max_context_tokens.unwrap_or(model.max_context_tokens),
        };
        let l = &s.limits;
        if !(l.max_sim_s.is_finite() && l.max_sim_s > 0.0) || l.max_events == 0 || l.max_queue == 0
        {
            return Err(self.err_at(&["limits"], "[limits]: every limit must be > 0"));
        }
        if !(l.overload_window_s.is_finite() && l.overload_window_s >= 0.0) {
            return Err(self.err_at(
                &["limits", "overload_window_s"],
                "[limits] overload_window_s must be a finite number of seconds ≥ 0 (0 turns the overload check off)",
            ));
        }
        let guards = Guards {
            max_events: l.max_events,
            max_sim_ns: (l.max_sim_s * 1e9).min(u64::MAX as f64 / 2.0) as u64,
            max_queue: l.max_queue.min(usize::MAX as u64) as usize,
            overload_window_ns: (l.overload_window_s * 1e9)
                .min(u64::MAX as f64 / 2.0)
                .ceil() as u64,
            overload_min_queue: l.overload_min_queue.min(usize::MAX as u64) as usize,
        };

        // Memory.
        let m = &s.memory;
        if m.block_tokens == 0 {
            return Err(self.err_at(
                &["memory", "block_tokens"],
                "[memory] block_tokens must be ≥ 1",
            ));
        }
        if m.block_tokens > MAX_BLOCK_TOKENS {
            return Err(self.err_at(
                &["memory", "block_tokens"],
                format!(
                    "[memory] block_tokens must be at most {MAX_BLOCK_TOKENS}, got {}",
                    m.block_tokens
                ),
            ));
        }
        if sch.max_context_tokens == Some(0) {
            return Err(self.err_at(
                &["scheduler", "max_context_tokens"],
                "[scheduler] max_context_tokens must be ≥ 1",
            ));
        }
        // The memory arithmetic runs even with `kv_capacity_blocks`: the override replaces the
        // computed KV capacity, not the checks that the utilization is a fraction and that the
        // weights fit.
        let computed = kv_blocks_from_memory(&model, &gpu, s.tp, s.pp, m);
        let kv_capacity_blocks = match (m.kv_capacity_blocks, computed) {
            (Some(0), _) => {
                return Err(self.err_at(
                    &["memory", "kv_capacity_blocks"],
                    "[memory] kv_capacity_blocks must be ≥ 1",
                ));
            }
            (Some(b), Ok(_)) => b,
            (Some(b), Err(e)) if e.starts_with(NO_BLOCK_ROOM) => b,
            (_, Err(e)) if e.contains("gpu_memory_utilization") => {
                return Err(self.err_at(&["memory", "gpu_memory_utilization"], e));
            }
            (_, Err(e)) => return Err(self.err_at(&["model"], e)),
            (None, Ok(b)) => b,
        };

        // Policy parameters.
        let entry = crate::policy::lookup(&sch.policy).map_err(wrap)?;
        for k in s.policies.keys() {
            crate::policy::lookup(k).map_err(|_| {
                self.err_at(
                    &["policies", k],
                    format!(
                        "[policies.{}]: unknown policy; valid policies: {}",
                        crate::error::echo(k),
                        crate::policy::policy_names().join(", ")
                    ),
                )
            })?;
        }
        let predictor = match (entry.forced_predictor, &s.predictor) {
            (Some(f), Some(named)) if named != f => {
                return Err(self.err(format!(
                    "policy `{}` always uses the `{f}` predictor; remove `predictor = \"{named}\"` or use the policy without the suffix",
                    sch.policy
                )));
            }
            (Some(f), _) => f.to_string(),
            (None, Some(named)) => named.clone(),
            (None, None) => entry.default_predictor.to_string(),
        };
        crate::predict::check_name(&predictor).map_err(wrap)?;
        for (k, v) in &s.predictors {
            crate::predict::check_name(k)
                .map_err(|e| self.err_at(&["predictors", k], format!("[predictors.{k}]: {e}")))?;
            let check = |t: &toml::Value| crate::predict::check_params(k, t);
            check(v).map_err(|e| self.table_err("predictors", k, v, e, &check))?;
        }

        // Cost model.
        let mut cost_profile = None;
        let analytic_params = match &s.cost {
            CostSpec::Constant { iteration_s } => {
                if !(iteration_s.is_finite() && *iteration_s >= 0.0) {
                    return Err(self.err_at(
                        &["cost", "iteration_s"],
                        format!(
                            "[cost] iteration_s must be a finite number ≥ 0, got {iteration_s}"
                        ),
                    ));
                }
                None
            }
            CostSpec::Linear(lc) => {
                lc.validate().map_err(wrap)?;
                None
            }
            CostSpec::Analytic { params } => {
                let p = analytic_params_for(&s.gpu, params.as_ref())
                    .map_err(|e| self.err_at(&["cost", "params"], e))?;
                AnalyticCost::new(model.clone(), gpu.clone(), s.tp, p.clone()).map_err(wrap)?;
                Some(p)
            }
            CostSpec::Profile {
                path,
                mode,
                iteration_overhead_s,
            } => {
                let dir = self.rel(path);
                let profile = self.load_profile(&dir, &s.gpu, "[cost]")?;
                let tables = ProfileTables::new(
                    &profile,
                    &s.model,
                    &model,
                    s.tp,
                    *mode,
                    *iteration_overhead_s,
                )
                .map_err(|e| self.err(format!("[cost] profile {}: {e}", dir.display())))?;
                cost_profile = Some((std::sync::Arc::new(tables), dir));
                None
            }
        };

        let kv_block_bytes = model
            .kv_bytes_per_token()
            .checked_mul(m.block_tokens as u64)
            .ok_or_else(|| {
                self.err(format!(
                    "[memory] block_tokens = {}: a KV block of {} bytes per token × {} tokens does not fit in 64 bits; use fewer tokens per block",
                    m.block_tokens,
                    model.kv_bytes_per_token(),
                    m.block_tokens
                ))
            })?;
        let host_kv_blocks = (m.host_kv_bytes / kv_block_bytes).min(u32::MAX as u64) as u32;
        let kv_layout = s.swap.kv_layout.unwrap_or(entry.kv_layout);
        let stage_layers = crate::swap::layers_per_stage(model.layers, s.pp);
        let swap_timing = crate::swap::timing::SwapTiming {
            reactive: s.swap.reactive.unwrap_or(entry.reactive),
            layers: stage_layers,
        };
        let swap = crate::swap::PcieSwap::resolve(
            &s.swap,
            gpu.pcie_bytes_per_s,
            s.tp * s.pp,
            kv_layout,
            stage_layers,
        )
        .map_err(|e| match e {
            SimError::Config(m) => {
                let w = &s.swap;
                let bad = [
                    ("per_call_s", w.per_call_s),
                    ("per_block_s", w.per_block_s),
                    ("latency_s", w.latency_s),
                ]
                .into_iter()
                .find(|(_, v)| matches!(v, Some(v) if !(v.is_finite() && *v >= 0.0)))
                .map(|(k, _)| k);
                match bad {
                    Some(k) => self.err_at(&["swap", k], m),
                    None => self.err_at(&["swap"], m),
                }
            }
            other => other,
        })?;
        let swap_profile = self.swap_profile(&model, &s, kv_layout)?;
        // Checked whatever `pp` (a bad value is a mistake even where it is not used).
        let pipeline = {
            let p = crate::exec::Pipeline {
                stages: s.pp,
                send_latency_s: s.pipeline.send_latency_s.unwrap_or(20e-6),
                send_bytes_per_token: (model.hidden as u64 * model.dtype_bytes as u64) as f64,
                send_bytes_per_s: s.pipeline.send_bytes_per_s.unwrap_or(12.5e9),
            };
            if !(p.send_latency_s.is_finite() && p.send_latency_s >= 0.0) {
                return Err(self.err_at(
                    &["pipeline", "send_latency_s"],
                    "[pipeline] send_latency_s must be a finite number ≥ 0",
                ));
            }
            if !(p.send_bytes_per_s.is_finite() && p.send_bytes_per_s > 0.0) {
                return Err(self.err_at(
                    &["pipeline", "send_bytes_per_s"],
                    "[pipeline] send_bytes_per_s must be a finite number > 0",
                ));
            }
            if s.pp > 1 {
                p
            } else {
                crate::exec::Pipeline::SINGLE
            }
        };
        let offload = crate::swap::KvOffload::resolve(&s.swap).map_err(wrap)?;
        let iv = s.output.kv_timeline_interval_s;
        if !(iv.is_finite() && (iv == 0.0 || iv >= 1e-6)) {
            return Err(self.err_at(&["output", "kv_timeline_interval_s"], format!(
                "[output] kv_timeline_interval_s must be 0 (off) or a finite number ≥ 1e-6 s, got {iv}"
            )));
        }
        let kv_timeline_interval_ns = (iv * 1e9).round() as u64;
        let mut resolved = Resolved {
            scenario: s.clone(),
            scenario_path: self.path.clone(),
            model,
            gpu,
            trace,
            limits,
            guards,
            kv_capacity_blocks,
            host_kv_blocks,
            kv_block_bytes,
            swap,
            swap_timing,
            pipeline,
            offload,
            kv_timeline_interval_ns,
            swap_profile,
            cost_profile,
            policy_params: serde_json::Value::Null,
            groups,
            router_params: serde_json::Value::Null,
            analytic_params,
            predictor,
        };
        let env = crate::policy::PolicyEnv {
            limits,
            cost: resolved.cost_model()?.into(),
        };
        // Every table present is checked, also of policies this run does not use (a typo there
        // would otherwise pass until the policy is swept or named with --policy).
        for (k, v) in &s.policies {
            let build = crate::policy::lookup(k).map_err(wrap)?.build;
            let check = |t: &toml::Value| build(Some(t), &env).map(|_| ());
            check(v).map_err(|e| self.table_err("policies", k, v, e, &check))?;
        }
        let (_, policy_params) =
            (entry.build)(s.policies.get(&s.scheduler.policy), &env).map_err(wrap)?;
        // A policy's own offloaded-KV format (`alise`: `kv_offload_bits`, validated by its build)
        // applies when `[swap] kv_offload_bits` is not given; both written must agree.
        if let Some(bits) = policy_params
            .get("kv_offload_bits")
            .and_then(|v| v.as_u64())
        {
            let policy = &s.scheduler.policy;
            let written = s
                .policies
                .get(policy)
                .and_then(|t| t.get("kv_offload_bits"));
            match s.swap.kv_offload_bits {
                None => resolved.offload.bits = bits as u32,
                Some(g) if g as u64 != bits && written.is_some() => {
                    return Err(self.err_at(
                        &["policies", policy, "kv_offload_bits"],
                        format!(
                            "[policies.{policy}] kv_offload_bits = {bits} contradicts [swap] kv_offload_bits = {g}; give one of them"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        resolved.policy_params = policy_params;
        let router = crate::route::lookup(&s.router).map_err(wrap)?;
        for k in s.routers.keys() {
            crate::route::lookup(k).map_err(|_| {
                self.err_at(
                    &["routers", k],
                    format!(
                        "[routers.{}]: unknown router; valid routers: {}",
                        crate::error::echo(k),
                        crate::route::router_names().join(", ")
                    ),
                )
            })?;
        }
        let router_env = resolved.router_env()?;
        for (k, v) in &s.routers {
            let build = crate::route::lookup(k).map_err(wrap)?.build;
            let check = |t: &toml::Value| build(Some(t), &router_env).map(|_| ());
            check(v).map_err(|e| self.table_err("routers", k, v, e, &check))?;
        }
        let (_, router_params) =
            (router.build)(s.routers.get(&s.router), &router_env).map_err(wrap)?;
        resolved.router_params = router_params;
        Ok(resolved)
    }

    /// Resolve every `[[replica_groups]]` entry as a scenario of its own (overrides already
    /// applied); errors name the group.
    fn resolve_groups(&self) -> Result<Vec<Resolved>> {
        let s = &self.scenario;
        if s.replica_groups.is_empty() {
            return Ok(Vec::new());
        }
        if s.replicas != 1 {
            return Err(self.err(
                "give either `replicas` or `[[replica_groups]]` (whose `count`s add up to the replicas), not both",
            ));
        }
        // Bound the cluster before resolving (and so allocating) anything per group.
        let total: u64 = s.replica_groups.iter().map(|g| g.count as u64).sum();
        if total > MAX_REPLICAS as u64 {
            return Err(self.err(format!(
                "[[replica_groups]]: the counts add up to {total} replicas, above the limit of {MAX_REPLICAS} replicas per scenario"
            )));
        }
        let mut out = Vec::with_capacity(s.replica_groups.len());
        for (i, g) in s.replica_groups.iter().enumerate() {
            if g.count == 0 {
                return Err(self.err(format!(
                    "[[replica_groups]] #{}: `count` must be ≥ 1",
                    i + 1
                )));
            }
            let mut sub = self.clone();
            let sc = &mut sub.scenario;
            sc.replica_groups.clear();
            sc.replicas = g.count;
            if let Some(gpu) = &g.gpu {
                sc.gpu = gpu.clone();
            }
            sc.tp = g.tp.unwrap_or(sc.tp);
            sc.pp = g.pp.unwrap_or(sc.pp);
            let what = format!("{} × {} tp {} pp {}", g.count, sc.gpu, sc.tp, sc.pp);
            let r = sub.resolve(&Overrides::default()).map_err(|e| match e {
                SimError::Scenario { path, msg } => SimError::Scenario {
                    path,
                    msg: format!("[[replica_groups]] #{} ({what}): {msg}", i + 1),
                },
                other => other,
            })?;
            out.push(r);
        }
        Ok(out)
    }
}

/// Start of [`kv_blocks_from_memory`]'s error when the weights fit but no KV block does (then a
/// `kv_capacity_blocks` override may still stand).
const NO_BLOCK_ROOM: &str = "no room for even one KV block";

/// KV blocks per replica: (tp·pp GPUs × (memory × utilisation − activation reserve) − weights)
/// / (KV bytes per token × block tokens).
pub fn kv_blocks_from_memory(
    model: &ModelSpec,
    gpu: &GpuSpec,
    tp: u32,
    pp: u32,
    m: &MemorySpec,
) -> std::result::Result<u32, String> {
    if !(m.gpu_memory_utilization > 0.0 && m.gpu_memory_utilization <= 1.0) {
        return Err(format!(
            "[memory] gpu_memory_utilization must be in (0, 1], got {}",
            crate::error::num(m.gpu_memory_utilization)
        ));
    }
    let gpus = (tp * pp) as f64;
    let usable = gpus
        * (gpu.memory_bytes as f64 * m.gpu_memory_utilization - m.activation_reserve_bytes as f64);
    let weights = model.weight_bytes() as f64;
    let kv_bytes = usable - weights;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    if kv_bytes <= 0.0 {
        return Err(format!(
            "the model does not fit: weights {:.1} GiB, usable memory {:.1} GiB on {} GPU(s) (tp × pp); raise tp or pp, or use a larger GPU",
            gib(weights),
            gib(usable),
            tp * pp
        ));
    }
    let block_bytes = model.kv_bytes_per_token() as f64 * m.block_tokens as f64;
    let blocks = (kv_bytes / block_bytes).floor();
    if blocks < 1.0 {
        return Err(format!("{NO_BLOCK_ROOM} after the weights"));
    }
    Ok(blocks.min(u32::MAX as f64) as u32)
}

/// The fitted analytic parameters for `gpu`, with the scenario's overrides applied.
pub fn analytic_params_for(
    gpu: &str,
    overrides: Option<&toml::Value>,
) -> std::result::Result<AnalyticParams, String> {
    let fits: BTreeMap<String, toml::Table> =
        toml::from_str(ANALYTIC_FIT_TOML).expect("built-in analytic_fit.toml is valid (tested)");
    let key = gpu.to_lowercase();
    let mut table = fits.get(&key).cloned().ok_or_else(|| {
        format!(
            "no fitted analytic parameters for GPU `{gpu}` (fitted: {}); give all of them in [cost.params]",
            fits.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    table.retain(|k, _| !k.starts_with("fit_"));
    if let Some(o) = overrides {
        let o = o
            .as_table()
            .ok_or("[cost.params] must be a table of analytic parameters")?;
        for (k, v) in o {
            table.insert(k.clone(), v.clone());
        }
    }
    let p: AnalyticParams = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("[cost.params]: {}", e.message().trim()))?;
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

impl Resolved {
    /// Every file and directory the run reads: the scenario, its trace, replay and lengths files,
    /// catalogue files and profiles. An output path must never hold one of them.
    pub fn input_paths(&self) -> Vec<PathBuf> {
        let base = self
            .scenario_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut v = vec![self.scenario_path.clone()];
        match &self.trace {
            TraceSource::File { path, .. } => v.push(path.clone()),
            TraceSource::Synthetic {
                replay_file,
                lengths,
                ..
            } => {
                v.extend(replay_file.iter().cloned());
                if let SyntheticLengths::File(p) = lengths {
                    v.push(p.clone());
                }
            }
        }
        v.extend(self.scenario.catalogue_files.iter().map(|f| base.join(f)));
        v.extend(self.cost_profile.iter().map(|(_, dir)| dir.clone()));
        v.extend(self.swap_profile.iter().map(|p| p.profile.clone()));
        for g in &self.groups {
            v.extend(g.input_paths());
        }
        v
    }

    /// What the scenario's router is built from.
    pub fn router_env(&self) -> Result<crate::route::RouterEnv> {
        // Heterogeneous clusters: the first group's model (see README "Clusters"), which is the
        // cluster's own since resolve() gives it replica 0's hardware.
        Ok(crate::route::RouterEnv {
            cost: self.cost_model()?.into(),
            replicas: self.scenario.replicas,
            max_context_tokens: self.limits.max_context_tokens,
        })
    }

    pub fn cost_model(&self) -> Result<Box<dyn CostModel>> {
        self.cost_model_counted(None)
    }

    /// The cost model; a `profile` model reports its off-grid queries to `counter`.
    pub fn cost_model_counted(
        &self,
        counter: Option<std::sync::Arc<crate::profile::ExtrapolationCounter>>,
    ) -> Result<Box<dyn CostModel>> {
        Ok(match &self.scenario.cost {
            CostSpec::Profile { .. } => {
                let (tables, _) = self
                    .cost_profile
                    .as_ref()
                    .expect("resolve() loads the profile of the profile model");
                Box::new(ProfileCost::new(tables.clone(), counter))
            }
            CostSpec::Constant { iteration_s } => Box::new(ConstantCost {
                iteration_s: *iteration_s,
            }),
            CostSpec::Linear(l) => Box::new(l.clone()),
            CostSpec::Analytic { .. } => Box::new(AnalyticCost::new(
                self.model.clone(),
                self.gpu.clone(),
                self.scenario.tp,
                self.analytic_params
                    .clone()
                    .expect("resolve() sets analytic params for the analytic model"),
            )?),
        })
    }

    /// The swap model; a profile model reports its off-grid transfers to `counter`.
    pub fn swap_model(
        &self,
        counter: Option<std::sync::Arc<crate::profile::ExtrapolationCounter>>,
    ) -> Box<dyn crate::swap::SwapModel> {
        match (&self.swap_profile, counter) {
            (Some(p), Some(c)) => Box::new(p.with_counter(c)),
            (Some(p), None) => Box::new(p.clone()),
            (None, _) => Box::new(self.swap),
        }
    }

    /// Whether a profile-based model is in use (its extrapolations go into the summary).
    pub fn uses_profile(&self) -> bool {
        self.cost_profile.is_some()
            || self.swap_profile.is_some()
            || self.groups.iter().any(|g| g.uses_profile())
    }
}
