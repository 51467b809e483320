//! What resolution produces: [`Resolved`] (everything a run needs, validated), the trace source
//! it names, and the models (cost, swap) and paths built from it.

use std::path::{Path, PathBuf};

use super::{CostSpec, Scenario};
use crate::catalogue::{GpuSpec, ModelSpec};
use crate::cost::CostModel;
use crate::cost::analytic::{AnalyticCost, AnalyticParams};
use crate::cost::constant::ConstantCost;
use crate::cost::profile::{ProfileCost, ProfileTables};
use crate::engine::Guards;
use crate::error::Result;
use crate::policy::Limits;
use crate::trace::{ArrivalProcess, LengthDist};

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

/// Everything a run needs, validated (cloned by live mode, which turns the KV timeline off).
#[derive(Clone)]
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
    /// What is valid but doubtful in the scenario (the groups' included): printed on stderr and
    /// kept in `summary.json` `warnings`.
    pub warnings: Vec<String>,
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
