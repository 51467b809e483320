//! Scenario parameters of `mlfq` / `skip-join-mlfq`, their presets and the resolved configuration.

use serde::{Deserialize, Serialize};

use super::super::PreemptionChoice;
use crate::cost::{BatchShape, CostModel};
use crate::error::{Result, SimError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Code,
    Paper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Demotion {
    OneLevel,
    CoverNextIteration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MisfitRule {
    Stop,
    Skip,
}

/// Scenario parameters (`[policies.mlfq]` / `[policies.skip-join-mlfq]`): a preset plus overrides.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub preset: Preset,
    pub base_quantum_s: Option<f64>,
    pub ratio: Option<f64>,
    pub max_levels: Option<u32>,
    pub demotion: Option<Demotion>,
    pub starvation_threshold_s: Option<f64>,
    pub starvation_period_iterations: Option<u64>,
    pub starvation_clock_from_zero: Option<bool>,
    pub reset_attained_on_promotion: Option<bool>,
    pub misfit: Option<MisfitRule>,
    pub requeue_reverses_batch: Option<bool>,
    pub preemption: Option<PreemptionChoice>,
    pub offload: Option<Offload>,
    pub min_free_blocks: Option<u32>,
    pub defer_new_below_host_free_frac: Option<f64>,
    pub swap_in_window: Option<u32>,
    pub batch_memory: Option<BatchMemory>,
    pub host_full: Option<HostFull>,
    pub starvation_check: Option<StarvationCheck>,
    pub chunked_prefill: Option<bool>,
    pub chunk_size: Option<u32>,
}

/// How a batch gets its GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchMemory {
    /// FastServe's code (`MLFQ.get_next_batch` + `reserve_free_blocks`): pop the batch by priority
    /// with only the size and token checks, then swap out queued GPU-resident requests from the
    /// lowest priority up until the batch (and the reserve) fits, and only then drop batch members
    /// from the batch's tail.
    Reserve,
    /// Each candidate, in priority order, takes the blocks it needs from the lowest-priority
    /// resident requests as it joins ([`crate::policy::common::form_priority_batch`]).
    Evict,
}

/// What happens when a swap-out has no room in the host pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFull {
    /// Nobody is evicted without host room: the request that needed the memory waits (see the
    /// policy header for the exact rule).
    Defer,
    /// The victim is preempted by recompute instead.
    Recompute,
}

/// When the starvation check runs at a boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StarvationCheck {
    /// Before the batch is formed (promotions change this boundary's batch).
    BeforeBatch,
    /// After the batch is formed, over the requests left out of it (FastServe's code: the
    /// `prevent_starvation` call at the end of `get_next_batch`).
    AfterBatch,
}

/// How host memory is used (with `preemption = "swap"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// Swap out only to make room for a batch; swap in when a host-resident request is
    /// scheduled (the iteration waits for the copy).
    Reactive,
    /// FastServe's `reserve_free_blocks`: keep `max(max_batch_size, min_free_blocks)` GPU blocks
    /// free by swapping out the lowest-priority resident requests; when no swap-out happened at a
    /// boundary, swap in host-resident requests among the next `max_batch_size` in priority order
    /// ahead of their turn, overlapped with compute. Also accepted as `code`.
    #[serde(alias = "code")]
    Proactive,
    /// FastServe paper: the same reserve, but swaps are ordered by the Estimated Next Scheduled
    /// Time `ENST = min(T_promote, T_execute)` — largest ENST swapped out first, smallest swapped
    /// in first — overlapped with compute (module `enst`).
    Paper,
}

/// The concrete configuration (recorded in `config.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Config {
    pub preset: Preset,
    pub skip_join: bool,
    pub base_quantum_s: f64,
    pub ratio: f64,
    pub max_levels: u32,
    pub demotion: Demotion,
    pub starvation_threshold_s: f64,
    pub starvation_period_iterations: u64,
    pub starvation_clock_from_zero: bool,
    pub reset_attained_on_promotion: bool,
    pub misfit: MisfitRule,
    pub requeue_reverses_batch: bool,
    pub preemption: PreemptionChoice,
    pub offload: Offload,
    pub min_free_blocks: u32,
    pub defer_new_below_host_free_frac: f64,
    /// `offload = "paper"`: proactive swap-ins only among the first N requests in priority order
    /// (0 = no window, the default: the paper states none). Left out of `config.json` when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub swap_in_window: u32,
    pub batch_memory: BatchMemory,
    pub host_full: HostFull,
    pub starvation_check: StarvationCheck,
    /// `fcfs-swap`: one level in arrival order; a batch is not moved to the front when requeued
    /// and nobody is promoted (not a scenario parameter; left out of `config.json` when false).
    #[serde(skip_serializing_if = "is_false")]
    pub fifo: bool,
    /// Chunked prefill (off by default: FastServe runs whole prefills): prefill chunks and
    /// decodes share `chunk_size` tokens per iteration (default `max_batch_tokens`, set by the
    /// policy's constructor). Both left out of `config.json` without chunking.
    #[serde(skip_serializing_if = "is_false")]
    pub chunked_prefill: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Time of the smallest possible iteration: one decode with a one-token context.
pub fn min_iteration_s(cost: &dyn CostModel) -> Result<f64> {
    let mut s = BatchShape::default();
    s.add_decode(1);
    cost.iteration_s(&s)
}

impl Params {
    /// The configuration these parameters give (defaults by preset), checked.
    pub fn resolve(&self, skip_join: bool, cost: &dyn CostModel, policy: &str) -> Result<Config> {
        let code = self.preset == Preset::Code;
        let base = match self.base_quantum_s {
            Some(b) => b,
            None if code => 0.010,
            None => min_iteration_s(cost)?,
        };
        let c = self.with_defaults(skip_join, base);
        c.check(policy)?;
        Ok(c)
    }

    /// Every unset parameter filled with its preset's default (`base`: the first quantum).
    fn with_defaults(&self, skip_join: bool, base: f64) -> Config {
        let code = self.preset == Preset::Code;
        let batch_memory =
            self.batch_memory
                .unwrap_or(if code && self.offload != Some(Offload::Paper) {
                    BatchMemory::Reserve
                } else {
                    BatchMemory::Evict
                });
        Config {
            preset: self.preset,
            skip_join,
            base_quantum_s: base,
            ratio: self.ratio.unwrap_or(2.0),
            max_levels: self.max_levels.unwrap_or(0),
            demotion: self.demotion.unwrap_or(if code {
                Demotion::OneLevel
            } else {
                Demotion::CoverNextIteration
            }),
            starvation_threshold_s: self.starvation_threshold_s.unwrap_or(if code {
                3.0
            } else {
                0.3
            }),
            starvation_period_iterations: self.starvation_period_iterations.unwrap_or(if code {
                1000
            } else {
                1
            }),
            starvation_clock_from_zero: self.starvation_clock_from_zero.unwrap_or(code),
            reset_attained_on_promotion: self.reset_attained_on_promotion.unwrap_or(!code),
            misfit: self.misfit.unwrap_or(if code {
                MisfitRule::Stop
            } else {
                MisfitRule::Skip
            }),
            requeue_reverses_batch: self.requeue_reverses_batch.unwrap_or(code),
            preemption: self.preemption.unwrap_or(PreemptionChoice::Swap),
            offload: self.offload.unwrap_or(Offload::Proactive),
            min_free_blocks: self.min_free_blocks.unwrap_or(0),
            defer_new_below_host_free_frac: self.defer_new_below_host_free_frac.unwrap_or(0.1),
            swap_in_window: self.swap_in_window.unwrap_or(0),
            batch_memory,
            host_full: self.host_full.unwrap_or(match batch_memory {
                BatchMemory::Reserve => HostFull::Defer,
                BatchMemory::Evict => HostFull::Recompute,
            }),
            starvation_check: self.starvation_check.unwrap_or(if code {
                StarvationCheck::AfterBatch
            } else {
                StarvationCheck::BeforeBatch
            }),
            fifo: false,
            chunked_prefill: self.chunked_prefill.unwrap_or(false),
            chunk_size: None,
        }
    }
}

impl Config {
    /// The checks on a resolved configuration, named `[policies.{policy}]` in their messages.
    fn check(&self, policy: &str) -> Result<()> {
        let c = self;
        let bad = |m: String| SimError::config(format!("[policies.{policy}] {m}"));
        if !(c.base_quantum_s.is_finite() && c.base_quantum_s > 0.0) {
            return Err(bad(format!(
                "base_quantum_s must be > 0, got {}",
                c.base_quantum_s
            )));
        }
        if !(c.ratio.is_finite() && c.ratio >= 1.0) {
            return Err(bad(format!("ratio must be ≥ 1, got {}", c.ratio)));
        }
        if !(c.starvation_threshold_s.is_finite() && c.starvation_threshold_s > 0.0) {
            return Err(bad("starvation_threshold_s must be > 0".into()));
        }
        let frac = c.defer_new_below_host_free_frac;
        if !(0.0..=1.0).contains(&frac) {
            // NaN or below 0 turned deferral off silently; above 1 deferred every new request
            // while the host held anything, and the run stalled (round 12, 08).
            return Err(bad(format!(
                "defer_new_below_host_free_frac must be a fraction of the host pool in [0, 1], got {}",
                crate::error::num(frac)
            )));
        }
        if c.starvation_period_iterations == 0 {
            return Err(bad("starvation_period_iterations must be ≥ 1".into()));
        }
        if c.batch_memory == BatchMemory::Reserve && c.offload == Offload::Paper {
            return Err(bad(
                "batch_memory = \"reserve\" is FastServe's code and goes with offload = \"proactive\" or \"reactive\", not \"paper\"".into(),
            ));
        }
        if c.host_full == HostFull::Defer && c.batch_memory == BatchMemory::Evict {
            return Err(bad(
                "host_full = \"defer\" needs batch_memory = \"reserve\" (the evict rule recomputes a victim the host cannot take)".into(),
            ));
        }
        Ok(())
    }
}
