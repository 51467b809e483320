//! Scheduling policies: the trait, the read-only replica view they decide from, the plan they
//! return, and the registry. Adding a policy = one file + one line in [`REGISTRY`].
//!
//! Contract: at every iteration boundary the engine calls [`Policy::schedule`]; the policy fills a
//! [`Plan`] (which requests run next, which resident requests are preempted and how, optional KV
//! reservations). The engine validates the plan against `max_batch_size`, `max_batch_tokens` and
//! the KV pool, then applies it. Policies never allocate memory and never see true output lengths.

pub mod alise;
pub mod chunking;
pub mod common;
pub mod fast_forward;
pub mod fcfs;
pub mod fcfs_swap;
pub mod ltr;
pub mod mlfq;
mod plain_index;
pub mod ranked_offload;
#[cfg(test)]
mod ranked_offload_ref;
pub mod ranking;
pub mod remaining;
pub mod sarathi;
pub mod sjf;
pub mod skip_join_mlfq;
pub mod srpt;
mod swap_passes;
pub mod vllm;
pub mod vllm_v1;

use crate::cost::CostModel;
use crate::error::{Result, SimError};
use crate::vocab::KvPool;
use crate::vocab::kv::{blocks_for_tokens, extra_blocks_for};
use crate::vocab::request::{Request, Slab, Slot};
use crate::vocab::time::Ns;
pub use fast_forward::{FastForward, Steady};

/// Batch limits every policy must respect (the engine checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum requests in one iteration.
    pub max_batch_size: u32,
    /// Maximum prefill tokens in one iteration (a batch whose only prefill is larger is allowed:
    /// a prompt that alone exceeds the budget is rejected at arrival unless the policy chunks
    /// prefills, a recompute is not). A plan with a prefill chunk must keep Σ (chunk tokens +
    /// 1 per decode) within it.
    pub max_batch_tokens: u32,
    /// Model context limit in tokens (prompt + output).
    pub max_context_tokens: u32,
}

/// What a policy may read about its replica at a decision point.
pub struct ReplicaView<'a> {
    pub(crate) reqs: &'a Slab,
    pub(crate) kv: &'a KvPool,
    pub(crate) host: &'a KvPool,
    pub(crate) offload: crate::swap::KvOffload,
    pub now_ns: Ns,
    pub limits: Limits,
}

impl<'a> ReplicaView<'a> {
    pub fn req(&self, s: Slot) -> &Request {
        self.reqs.get(s)
    }
    /// One more than the largest slot in use so far (size for per-slot side tables).
    pub fn slot_capacity(&self) -> usize {
        self.reqs.capacity_hint()
    }
    pub fn free_blocks(&self) -> u32 {
        self.kv.free_blocks()
    }
    pub fn capacity_blocks(&self) -> u32 {
        self.kv.capacity_blocks()
    }
    /// Free host KV blocks (0 when the scenario has no host pool).
    pub fn host_free_blocks(&self) -> u32 {
        self.host.free_blocks()
    }
    pub fn host_capacity_blocks(&self) -> u32 {
        self.host.capacity_blocks()
    }
    /// Whether no request is in a micro-batch still in the pipeline ([`Request::in_flight`]):
    /// always so on a single-stage replica, where a policy decides only between iterations.
    /// O(1): the slab keeps its count of requests in a batch.
    #[inline]
    pub fn none_in_flight(&self) -> bool {
        self.reqs.state_counts().running == 0
    }
    /// Whether request `s` can be swapped out now (resident, not in flight, host room).
    pub fn can_swap_out(&self, s: Slot) -> bool {
        let r = self.req(s);
        r.kv_loc == crate::vocab::request::KvLoc::Gpu
            && !r.in_flight()
            && self.host_blocks_for(r.blocks) <= self.host.free_blocks()
    }
    /// Host blocks the KV of `gpu_blocks` GPU blocks takes once offloaded (fewer when offloaded
    /// KV is quantized).
    pub fn host_blocks_for(&self, gpu_blocks: u32) -> u32 {
        self.offload.host_blocks_for(gpu_blocks)
    }
    /// GPU blocks a host-resident request `s` needs to be swapped back in.
    pub fn swap_in_blocks(&self, s: Slot) -> u32 {
        self.req(s).offloaded_gpu_blocks
    }
    pub fn block_tokens(&self) -> u32 {
        self.kv.block_tokens()
    }
    pub fn blocks_for_tokens(&self, tokens: u64) -> u32 {
        blocks_for_tokens(tokens, self.kv.block_tokens()) as u32
    }
    /// Extra blocks request `s` needs before its next iteration can run (0 if its resident or
    /// reserved blocks already cover it).
    pub fn extra_blocks_for_next(&self, s: Slot) -> u32 {
        let r = self.req(s);
        extra_blocks_for(
            r.kv_tokens_after_next() as u64,
            r.blocks,
            self.kv.block_tokens(),
        )
    }
    /// Extra blocks request `s` needs to run a step with a prefill chunk of `chunk` tokens (0:
    /// its whole next step, as [`ReplicaView::extra_blocks_for_next`]).
    pub fn extra_blocks_for_chunk(&self, s: Slot, chunk: u32) -> u32 {
        self.extra_blocks_of(self.req(s), chunk)
    }
    /// [`ReplicaView::extra_blocks_for_chunk`] of request `r` (already looked up).
    #[inline]
    pub fn extra_blocks_of(&self, r: &Request, chunk: u32) -> u32 {
        let tokens = if chunk == 0 {
            r.kv_tokens_after_next() as u64
        } else {
            r.kv_tokens as u64 + chunk as u64
        };
        extra_blocks_for(tokens, r.blocks, self.kv.block_tokens())
    }
    /// [`ReplicaView::extra_blocks_for_chunk`] of a planned item.
    pub fn extra_blocks_for_item(&self, item: &RunItem) -> u32 {
        self.extra_blocks_for_chunk(item.slot, item.prefill_chunk_tokens)
    }
}

/// How a preempted request gives up its KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreemptMode {
    /// Drop the KV; the request later re-prefills prompt + generated tokens.
    Recompute,
    /// Copy the KV to the host pool (GPU blocks free when the copy completes).
    Swap,
}

/// Which preemption a policy uses when it has the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreemptionChoice {
    Recompute,
    /// Swap when the host pool has room, else recompute.
    Swap,
}

impl PreemptionChoice {
    /// The mode for evicting `s` now.
    pub fn mode_for(self, view: &ReplicaView, s: Slot) -> PreemptMode {
        match self {
            PreemptionChoice::Swap if view.can_swap_out(s) => PreemptMode::Swap,
            _ => PreemptMode::Recompute,
        }
    }
}

/// One request to run in the next iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunItem {
    pub slot: Slot,
    /// Blocks to hold at least (a reservation ahead of need, Orca style); 0 = on demand.
    pub reserve_blocks: u32,
    /// Prompt tokens to process this iteration for a request in prefill (chunked prefill:
    /// 1 ..= [`Request::prefill_left`]); 0 = the whole remaining prefill. Must be 0 for a decode.
    /// KV blocks cover the tokens done so far plus this chunk; the request emits a token only in
    /// the iteration whose chunk completes its prefill.
    pub prefill_chunk_tokens: u32,
}

impl RunItem {
    /// Run `s` with its blocks allocated on demand, its whole prefill if it is in one.
    #[inline]
    pub fn on_demand(s: Slot) -> Self {
        RunItem {
            slot: s,
            reserve_blocks: 0,
            prefill_chunk_tokens: 0,
        }
    }
}

/// A policy's decision for one iteration boundary. Buffers are reused between iterations.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub run: Vec<RunItem>,
    pub preempt: Vec<(Slot, PreemptMode)>,
    /// Host-resident requests to copy back to the GPU ahead of their turn (proactive swap-in).
    pub swap_in: Vec<Slot>,
}

impl Plan {
    pub fn clear(&mut self) {
        self.run.clear();
        self.preempt.clear();
        self.swap_in.clear();
    }
    pub fn run_on_demand(&mut self, s: Slot) {
        self.run.push(RunItem::on_demand(s));
    }
    /// Run `s` on demand with a prefill chunk of `chunk` tokens (0 = whole prefill, or a decode).
    pub fn run_chunk(&mut self, s: Slot, chunk: u32) {
        self.run.push(RunItem {
            slot: s,
            reserve_blocks: 0,
            prefill_chunk_tokens: chunk,
        });
    }
}

/// A scheduling policy for one replica.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Whether this policy runs prefills in chunks (then a prompt longer than
    /// `max_batch_tokens` is accepted at arrival).
    fn chunks_prefill(&self) -> bool {
        false
    }
    /// A request arrived at this replica. An error rejects the whole run (e.g. a request that can
    /// never be admitted under this policy's rules).
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()>;
    /// Fill `plan` for the next iteration. An empty plan means "nothing to run".
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan);
    /// The iteration that ran `batch` ended at `view.now_ns` after `duration_ns`. `batch` holds
    /// only the requests that did not finish: finished ones were reported through
    /// [`Policy::on_finish`] just before this call.
    fn on_iteration_end(&mut self, _batch: &[Slot], _duration_ns: Ns, _view: &ReplicaView) {}
    /// Opt-in fast-forward: a policy that can say how long its plan stays the same returns
    /// `Some(self)` and implements [`FastForward`]; the default `None` means the engine calls
    /// [`Policy::schedule`] at every boundary, which is always correct.
    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        None
    }
    /// Request `s` emitted its last token and leaves the replica; its slot may be reused.
    fn on_finish(&mut self, s: Slot);
    /// The policy's view of request `s` for the per-request output (called just before
    /// [`Policy::on_finish`]).
    fn describe(&self, _s: Slot) -> PolicyInfo {
        PolicyInfo::default()
    }
    /// Multi-level queues: per-level arrival, demotion and promotion counts for `summary.json`
    /// (`None`, the default, for every other policy: their summary has no such field).
    fn level_counts(&self) -> Option<Vec<LevelCounts>> {
        None
    }
}

/// One level of a multi-level queue over a run (`summary.json` `replicas[].mlfq_levels`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LevelCounts {
    pub level: u32,
    /// Requests that joined this level on arrival.
    pub arrivals: u64,
    /// Demotions into this level.
    pub demotions_in: u64,
    /// Starvation promotions out of this level (to level 0).
    pub promotions_out: u64,
}

/// Per-request policy facts written to `requests.csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PolicyInfo {
    /// Level (MLFQ) or score (ranking policies) at finish; 0 for FCFS-like policies.
    pub priority: f64,
    pub demotions: u32,
    pub promotions: u32,
}

/// Context a policy constructor may use.
pub struct PolicyEnv {
    pub limits: Limits,
    /// The scenario's iteration-time model (for policies that estimate job times).
    pub cost: std::sync::Arc<dyn CostModel>,
}

/// A policy constructor: its scenario parameter table (if any) → the policy and its fully resolved
/// parameters (for `config.json`).
pub type BuildFn =
    fn(Option<&toml::Value>, &PolicyEnv) -> Result<(Box<dyn Policy>, serde_json::Value)>;

pub struct PolicyEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub build: BuildFn,
    /// Predictor used when the scenario names none.
    pub default_predictor: &'static str,
    /// A predictor this entry always uses (the `-oracle` shorthands); naming another is an error.
    pub forced_predictor: Option<&'static str>,
    /// `[swap] reactive` when the scenario gives none: how the modelled system's iterations wait
    /// for reactive swap-ins (the policy header says which system and cites it).
    pub reactive: crate::swap::timing::Reactive,
    /// `[swap] kv_layout` when the scenario gives none: the modelled system's KV layout.
    pub kv_layout: crate::swap::KvLayout,
}

/// Every policy servesim knows. One line per policy.
#[rustfmt::skip]
pub const REGISTRY: &[PolicyEntry] = &[
    fcfs::ENTRY,
    vllm::ENTRY,
    mlfq::ENTRY,
    skip_join_mlfq::ENTRY,
    srpt::ENTRY,
    srpt::ORACLE_ENTRY,
    sjf::ENTRY,
    sjf::ORACLE_ENTRY,
    alise::ENTRY,
    ltr::ENTRY,
    fcfs_swap::ENTRY,
    sarathi::ENTRY,
    vllm_v1::ENTRY,
];

pub fn policy_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

pub fn lookup(name: &str) -> Result<&'static PolicyEntry> {
    REGISTRY.iter().find(|e| e.name == name).ok_or_else(|| {
        SimError::config(format!(
            "unknown policy `{}`; {}valid policies: {}",
            crate::error::echo(name),
            crate::error::did_you_mean(name, policy_names()),
            policy_names().join(", ")
        ))
    })
}

/// Parse a policy's parameter table with its own `deny_unknown_fields` struct.
pub fn parse_params<P>(policy: &str, table: Option<&toml::Value>) -> Result<(P, serde_json::Value)>
where
    P: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let p: P = match table {
        None => P::default(),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
            SimError::config(format!(
                "[policies.{policy}]: {}",
                crate::error::plain_serde(e.message().trim())
            ))
        })?,
    };
    let json = serde_json::to_value(&p).map_err(|e| SimError::config(e.to_string()))?;
    Ok((p, json))
}
