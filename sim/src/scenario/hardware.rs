//! Hardware sizing and the cost and swap models: `[memory]` and the KV blocks it leaves, `[cost]`
//! (the fitted analytic parameters, calibration profiles) and `[swap]` (PCIe or profile model).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CostSpec, Loaded, MAX_BLOCK_TOKENS, MemorySpec, Scenario};
use crate::catalogue::{GpuSpec, ModelSpec};
use crate::cost::analytic::{AnalyticCost, AnalyticParams};
use crate::cost::profile::ProfileTables;
use crate::error::{Result, SimError};

/// Shortest iteration a cost model may be given (the engine's clock step, 1 ns).
const MIN_ITERATION_S: f64 = 1e-9;

/// What `[cost]` resolves to besides the model choice: the analytic model's parameters, or the
/// profile model's tables and directory (see [`Resolved`](super::Resolved)).
type CostParts = (
    Option<AnalyticParams>,
    Option<(Arc<ProfileTables>, PathBuf)>,
);

const ANALYTIC_FIT_TOML: &str = include_str!("../../catalogue/analytic_fit.toml");

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
    let no_fit = || {
        format!(
            "no fitted analytic parameters for GPU `{gpu}` (fitted: {}); give all of them in [cost.params]",
            fits.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    // A GPU without a fit (e.g. one from `catalogue_files`) takes its parameters from
    // [cost.params] alone.
    let fitted = fits.get(&key);
    let mut table = match (fitted, overrides) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => toml::Table::new(),
        (None, None) => return Err(no_fit()),
    };
    table.retain(|k, _| !k.starts_with("fit_"));
    if let Some(o) = overrides {
        let o = o
            .as_table()
            .ok_or("[cost.params] must be a table of analytic parameters")?;
        for (k, v) in o {
            table.insert(k.clone(), v.clone());
        }
    }
    let p: AnalyticParams =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| match fitted {
                Some(_) => format!("[cost.params]: {}", e.message().trim()),
                None => format!("{}: {}", no_fit(), e.message().trim()),
            })?;
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

impl Loaded {
    /// Load a calibration profile for `section` and check that it was made on the scenario's GPU.
    pub(super) fn load_profile(
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
    pub(super) fn swap_profile(
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

    /// `[memory]` checked and the KV blocks per replica (`kv_capacity_blocks` or the memory
    /// arithmetic), with a warning when a `kv_capacity_blocks` override is over twice what the
    /// GPU memory holds (a teaching override, so not an error); also checks `[scheduler]
    /// max_context_tokens`.
    pub(super) fn resolve_kv_capacity(
        &self,
        s: &Scenario,
        model: &ModelSpec,
        gpu: &GpuSpec,
    ) -> Result<(u32, Option<String>)> {
        let sch = &s.scheduler;
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
        if sch.max_context_tokens.is_some_and(|c| c < 2) {
            return Err(self.err_at(
                &["scheduler", "max_context_tokens"],
                "[scheduler] max_context_tokens must be ≥ 2 (a request has at least one input and one output token)",
            ));
        }
        // The memory arithmetic runs even with `kv_capacity_blocks`: the override replaces the
        // computed KV capacity, not the checks that the utilization is a fraction and that the
        // weights fit.
        let computed = kv_blocks_from_memory(model, gpu, s.tp, s.pp, m);
        // Far above only: a few blocks over is a common teaching round number (1000 for 906).
        let over = |b: u32, holds: u32| {
            (u64::from(b) > 2 * u64::from(holds)).then(|| {
                let at = super::load::line_of_key(&self.text, &["memory", "kv_capacity_blocks"])
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                format!(
                    "{at}[memory] kv_capacity_blocks = {b} is more than twice the {holds} KV blocks {} GPU memory holds ({} × {}, tp × pp = {}); the run models memory the hardware does not have",
                    if holds == 0 { "that" } else { "this" },
                    s.model,
                    s.gpu,
                    s.tp * s.pp
                )
            })
        };
        Ok(match (m.kv_capacity_blocks, computed) {
            (Some(0), _) => {
                return Err(self.err_at(
                    &["memory", "kv_capacity_blocks"],
                    "[memory] kv_capacity_blocks must be ≥ 1",
                ));
            }
            (Some(b), Ok(holds)) => (b, over(b, holds)),
            (Some(b), Err(e)) if e.starts_with(NO_BLOCK_ROOM) => (b, over(b, 0)),
            (_, Err(e)) if e.contains("gpu_memory_utilization") => {
                return Err(self.err_at(&["memory", "gpu_memory_utilization"], e));
            }
            (_, Err(e)) => return Err(self.err_at(&["model"], e)),
            (None, Ok(b)) => (b, None),
        })
    }

    /// `[cost]` checked: the analytic model's parameters, or the profile model's tables and
    /// directory.
    pub(super) fn resolve_cost(
        &self,
        s: &Scenario,
        model: &ModelSpec,
        gpu: &GpuSpec,
    ) -> Result<CostParts> {
        let mut cost_profile = None;
        let analytic_params = match &s.cost {
            CostSpec::Constant { iteration_s } => {
                if !(iteration_s.is_finite() && *iteration_s >= MIN_ITERATION_S) {
                    return Err(self.err_at(
                        &["cost", "iteration_s"],
                        format!(
                            "[cost] iteration_s must be a finite number of seconds ≥ 1e-9 (the simulator's 1 ns clock step; an iteration takes time), got {}",
                            crate::error::num(*iteration_s)
                        ),
                    ));
                }
                None
            }
            CostSpec::Linear(lc) => {
                lc.validate().map_err(|e| {
                    // "[cost] KEY must …" names the key; other messages blame [cost].
                    let msg = e.to_string();
                    let key = msg
                        .strip_prefix("[cost] ")
                        .and_then(|m| m.split(' ').next())
                        .filter(|k| k.chars().all(|c| c.is_alphanumeric() || c == '_'));
                    match key {
                        Some(k) => self.err_at(&["cost", k], msg.clone()),
                        None => self.err_at(&["cost"], msg.clone()),
                    }
                })?;
                None
            }
            CostSpec::Analytic { params } => {
                let p = analytic_params_for(&s.gpu, params.as_ref())
                    .map_err(|e| self.err_at(&["cost", "params"], e))?;
                AnalyticCost::new(model.clone(), gpu.clone(), s.tp, p.clone())
                    .map_err(|e| self.wrap(e))?;
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
                    model,
                    s.tp,
                    *mode,
                    *iteration_overhead_s,
                )
                .map_err(|e| self.err(format!("[cost] profile {}: {e}", dir.display())))?;
                cost_profile = Some((std::sync::Arc::new(tables), dir));
                None
            }
        };
        Ok((analytic_params, cost_profile))
    }

    /// Bytes of one KV block (whole replica), refused when they overflow 64 bits.
    pub(super) fn kv_block_bytes(&self, s: &Scenario, model: &ModelSpec) -> Result<u64> {
        let m = &s.memory;
        model
            .kv_bytes_per_token()
            .checked_mul(m.block_tokens as u64)
            .ok_or_else(|| {
                self.err(format!(
                    "[memory] block_tokens = {}: a KV block of {} bytes per token × {} tokens does not fit in 64 bits; use fewer tokens per block",
                    m.block_tokens,
                    model.kv_bytes_per_token(),
                    m.block_tokens
                ))
            })
    }

    /// The PCIe swap model from `[swap]`; its errors name the key at fault.
    pub(super) fn resolve_swap(
        &self,
        s: &Scenario,
        gpu: &GpuSpec,
        kv_layout: crate::swap::KvLayout,
        stage_layers: u32,
    ) -> Result<crate::swap::PcieSwap> {
        crate::swap::PcieSwap::resolve(
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
        })
    }
}
