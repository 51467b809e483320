//! Hardware sizing and the models' own files: KV blocks from GPU memory, the fitted analytic
//! cost parameters, and calibration profiles (cost and swap).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Loaded, MemorySpec, Scenario};
use crate::catalogue::{GpuSpec, ModelSpec};
use crate::cost::analytic::AnalyticParams;
use crate::error::{Result, SimError};

const ANALYTIC_FIT_TOML: &str = include_str!("../../catalogue/analytic_fit.toml");

/// Start of [`kv_blocks_from_memory`]'s error when the weights fit but no KV block does (then a
/// `kv_capacity_blocks` override may still stand).
pub(super) const NO_BLOCK_ROOM: &str = "no room for even one KV block";

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
}
