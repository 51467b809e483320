//! `srpt` — preemptive shortest remaining processing time at iteration boundaries.
//! `srpt-oracle` is the same policy with the `oracle` predictor: the preemptive lower bound that
//! FastServe's code keeps for comparison (`fastserve/scheduler.py` class `SRPT`).
//!
//! At every boundary all unfinished requests are ranked by their estimated remaining time
//! ([`super::common::remaining_time_ns`]: re-prefill if needed + remaining predicted decode
//! iterations × the cost model's batch-size-1 decode time at the current context, summed in
//! integer nanoseconds so that equal remaining sizes tie exactly), shortest first, ties by
//! arrival; the batch is filled in that order under the batch, token and KV
//! limits, skipping requests that do not fit. A request that needs KV blocks takes them from
//! resident requests with longer remaining time, which are preempted by recompute.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `preemption` | `swap` | how an evicted request gives up its KV (`swap` to the host pool when it has room, else recompute; or always `recompute`) |
//! | `chunked_prefill` | false | true: prefill chunks and decodes share `chunk_size` tokens per iteration, taken in SRPT order (the budget goes to the shortest remaining jobs first, so decodes can stall behind a short job's chunks); longer prompts than `max_batch_tokens` are then accepted |
//! | `chunk_size` | `max_batch_tokens` | the token budget of one iteration with `chunked_prefill` (2 ..= `max_batch_tokens`) |
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "layerwise"`, `kv_layout =
//! "layer-major"`, as `vllm` — an assumption: SRPT models no system of its own, so it runs on
//! the same (vLLM v0.1.7) engine as the `vllm` baseline and comparisons isolate the policy.

use std::sync::Arc;

use super::common::{KeyedRanking, chunk_budget, record_chunking};
use super::remaining::Remaining;
use super::{
    FastForward, Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView,
    Steady, parse_params,
};
use crate::cost::CostModel;
use crate::error::Result;
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "srpt",
    summary: "preemptive shortest remaining (predicted) processing time",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

pub const ORACLE_ENTRY: PolicyEntry = PolicyEntry {
    name: "srpt-oracle",
    summary: "srpt with the oracle predictor (the preemptive bound)",
    build: build_oracle,
    default_predictor: "oracle",
    forced_predictor: Some("oracle"),
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// How an evicted request gives up its KV: `swap` (host pool, if room) or `recompute`.
    pub preemption: PreemptionChoice,
    /// Chunked prefill: prefill chunks and decodes share `chunk_size` tokens per iteration
    /// (default the scenario's `max_batch_tokens`). Off by default: SRPT as published runs whole
    /// prefills.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub chunked_prefill: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            preemption: PreemptionChoice::Swap,
            chunked_prefill: false,
            chunk_size: None,
        }
    }
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    build_named("srpt", table, env)
}

/// `srpt-oracle`: errors name its own table.
fn build_oracle(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    build_named("srpt-oracle", table, env)
}

fn build_named(
    name: &str,
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, mut json) = parse_params::<Params>(name, table)?;
    let budget = chunk_budget(name, p.chunked_prefill, p.chunk_size, env.limits)?;
    record_chunking(&mut json, budget);
    let mut policy = Srpt::new(env.cost.clone(), p.preemption);
    policy.chunk_budget = budget;
    Ok((Box::new(policy), json))
}

pub struct Srpt {
    /// Remaining-time keys (memoised decode times).
    remaining: Remaining,
    preemption: PreemptionChoice,
    /// Tokens per iteration under chunked prefill (`None`: whole prefills).
    chunk_budget: Option<u32>,
    ranking: KeyedRanking,
}

impl Srpt {
    pub fn new(cost: Arc<dyn CostModel>, preemption: PreemptionChoice) -> Self {
        Srpt {
            remaining: Remaining::new(cost),
            preemption,
            chunk_budget: None,
            // The jump index over no-op candidates costs +65 % instructions on ordinary
            // load (bench_sharegpt_srpt, 20k requests: 7.59 → 12.50 G); srpt's bursts walk
            // the queue at about 1 s per 30k requests, so it walks.
            ranking: KeyedRanking::default(),
        }
    }
}

impl Policy for Srpt {
    fn name(&self) -> &'static str {
        "srpt"
    }
    fn chunks_prefill(&self) -> bool {
        self.chunk_budget.is_some()
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let k = self.remaining.key_s(view.req(s));
        self.ranking.add(view, s, k);
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let remaining = &self.remaining;
        self.ranking
            .rank_and_form(view, plan, self.preemption, self.chunk_budget, |s| {
                remaining.key_s(view.req(s))
            });
    }
    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        self.ranking.remove(s);
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        PolicyInfo {
            priority: self.ranking.last_key(s),
            ..Default::default()
        }
    }
}

impl FastForward for Srpt {
    /// The remaining-time key of a request is a function of its own state only, so with every
    /// request in the batch the plan's set cannot change between events; with a full batch of
    /// the best-ranked requests it stays while their keys after each step still rank ahead of
    /// the first waiting request's ([`KeyedRanking::steady`]).
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady> {
        let remaining = &self.remaining;
        self.ranking
            .steady(batch, view.limits.max_batch_size, |s, m| {
                remaining.key_s_after(view.req(s), m)
            })
    }

    fn on_steady_iterations(
        &mut self,
        batch: &mut [Slot],
        _iterations: u64,
        _service_ns: Ns,
        view: &ReplicaView,
    ) {
        let remaining = &self.remaining;
        self.ranking
            .rerank_batch(view, batch, |s| remaining.key_s(view.req(s)));
    }
}
