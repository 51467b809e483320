//! `alise` — speculative shortest-predicted-job scheduling after ALISE (Zhao & Wang, "ALISE:
//! Accelerating Large Language Model Serving with Speculative Scheduling", ICCAD'24,
//! arXiv 2410.23537).
//!
//! What the paper specifies (per its abstract and two third-party summaries; no code is public):
//! a retrieval-based output-length predictor; an execution-time model `T = s·T0 + n·(α·s + β)`;
//! a preemptive scheduler with priority queues ordered by estimated execution time; a
//! priority-based KV cache manager that swaps whole requests between GPU and host by estimated
//! waiting time (EWT: highest EWT offloaded, lowest EWT uploaded ahead of its turn — "Algorithm 2,
//! dynamic swapping"); quantization-based compression of the KV cache.
//!
//! Our choices (the paper leaves them open, `shared/docs/scheduling-papers.md` §2.2):
//! - the execution-time model is the scenario's cost model at batch size 1
//!   ([`super::common::remaining_time_s`]) instead of a separately fitted linear form;
//! - the priority is the estimated *remaining* time, re-estimated at every iteration boundary,
//!   minus an aging credit: `key = remaining_s − aging_weight × waited_s`, where `waited_s` is the
//!   time since the request last ran (or arrived). Any request's key falls without bound while it
//!   waits, so none starves;
//! - a request that outlives its prediction follows the engine's rule
//!   (`generated + max(16, prediction/2)`);
//! - the default predictor is `history` (k nearest completed requests by input length), the
//!   realistic stand-in for ALISE's retrieval predictor;
//! - batch formation skips requests that do not fit; KV pressure preempts resident requests of
//!   lower priority (swap when the host pool has room, else recompute);
//! - **memory manager** (`offload = "ewt"`; the default `reactive` keeps the behaviour that the
//!   golden curves record): the EWT formula is not published; ours is
//!   `EWT(r) = Σ_{q ranked ahead of r} remaining_s(q) / max_batch_size` — the work queued ahead
//!   of r, shared by a full batch (the analogue of FastServe's `T_execute`). After the batch is
//!   formed, [`super::common::score_offload`] keeps `max_batch_size` GPU blocks free plus the
//!   blocks of the best-ranked request left out, swapping out non-batch resident requests by
//!   decreasing EWT, and at boundaries with no swap-out swaps host-resident requests in by
//!   increasing EWT (at most `max_batch_size` per boundary), overlapped with compute. The
//!   reserve and the no-ping-pong rule are borrowed from FastServe's code (ALISE gives neither).
//!   Because EWT is a prefix sum of non-negative times over the ranking, its order *is* the
//!   ranking: EWT adds no information to the order, only a time scale;
//! - **KV quantization**: the paper gives neither bit-width nor trigger. We quantize only the
//!   *offloaded* KV (GPU KV stays FP16, so compute and accuracy are untouched in the model):
//!   `[swap] kv_offload_bits` = 16 (default, off), 8 or 4 divides PCIe bytes and host blocks by
//!   16/bits, and `[swap] kv_quant_s_per_byte` (default 1e-12 s per FP16 byte) is added to each
//!   copy for the (de)quantization kernel (see [`crate::swap`]). It applies to any policy that
//!   swaps, not only `alise`. Accuracy loss from quantization is not modelled.
//!
//! | parameter | unit | default | meaning |
//! |---|---|---|---|
//! | `aging_weight` | s of priority per s waited | 0.1 | aging credit |
//! | `preemption` | — | `swap` | evicted KV goes to the host pool when it has room (else recompute); or `recompute` |
//! | `offload` | — | `reactive` | `reactive` (swap out only to make room, swap in when scheduled) or `ewt` (the EWT memory manager above; needs `preemption = "swap"` and a host pool to do anything) |

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::common::{OffloadTarget, Ranking, remaining_key_s, score_offload};
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, parse_params,
};
use crate::cost::CostModel;
use crate::engine::request::Slot;
use crate::engine::time::ns_to_s;
use crate::error::{Result, SimError};

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "alise",
    summary: "ALISE: preemptive shortest estimated remaining time with aging; history predictor by default",
    build,
    default_predictor: "history",
    forced_predictor: None,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub aging_weight: f64,
    /// How an evicted request gives up its KV: `swap` (host pool, if room) or `recompute`.
    pub preemption: PreemptionChoice,
    /// Host-memory management: `reactive` or `ewt` (left out of `config.json` when `reactive`,
    /// so that scenarios written before it existed record the same configuration).
    #[serde(skip_serializing_if = "AliseOffload::is_reactive")]
    pub offload: AliseOffload,
}

/// ALISE's host-memory management.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AliseOffload {
    /// Swap out only to make room for a batch; swap in when scheduled.
    #[default]
    Reactive,
    /// Proactive swapping by estimated waiting time (see the module docs).
    Ewt,
}

impl AliseOffload {
    fn is_reactive(&self) -> bool {
        *self == AliseOffload::Reactive
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            aging_weight: 0.1,
            preemption: PreemptionChoice::Swap,
            offload: AliseOffload::Reactive,
        }
    }
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, json) = parse_params::<Params>("alise", table)?;
    if !(p.aging_weight.is_finite() && p.aging_weight >= 0.0) {
        return Err(SimError::config(format!(
            "[policies.alise] aging_weight must be ≥ 0, got {}",
            p.aging_weight
        )));
    }
    Ok((Box::new(Alise::new(p, env.cost.clone())), json))
}

pub struct Alise {
    p: Params,
    cost: Arc<dyn CostModel>,
    ranking: Ranking,
    ewt: Vec<f64>,
    taken: Vec<bool>,
    /// Each request's [`remaining_key_s`] (a function of its own state only), recomputed only
    /// for the requests that may have changed: the cost-model calls per boundary are O(batch),
    /// not O(queue).
    remaining_s: Vec<f64>,
    /// Requests whose state may have changed since their `remaining_s` was computed.
    dirty: Vec<Slot>,
}

impl Alise {
    pub fn new(p: Params, cost: Arc<dyn CostModel>) -> Self {
        Alise {
            p,
            cost,
            ranking: Ranking::default(),
            ewt: Vec::new(),
            taken: Vec::new(),
            remaining_s: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Bring `remaining_s` up to date for the requests of the last plans (a request in a
    /// micro-batch still in the pipeline changes when that batch ends: it stays dirty).
    fn refresh_remaining(&mut self, view: &ReplicaView) {
        let cost = self.cost.as_ref();
        let remaining_s = &mut self.remaining_s;
        self.dirty.retain(|&s| {
            if !view.reqs.contains(s) {
                return false;
            }
            let r = view.req(s);
            remaining_s[s as usize] = remaining_key_s(cost, r);
            r.in_flight()
        });
    }

    /// Estimated waiting time (s) of every request of the last ranking, in ranking order.
    fn estimate_ewt(&mut self, view: &ReplicaView) {
        let b = view.limits.max_batch_size.max(1) as f64;
        let mut ahead = 0.0;
        self.ewt.clear();
        for &s in self.ranking.order() {
            self.ewt.push(ahead / b);
            ahead += self.remaining_s[s as usize];
        }
    }
}

impl Policy for Alise {
    fn name(&self) -> &'static str {
        "alise"
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        self.ranking.add(s);
        if self.remaining_s.len() <= s as usize {
            self.remaining_s.resize(s as usize + 1, 0.0);
        }
        self.remaining_s[s as usize] = remaining_key_s(self.cost.as_ref(), view.req(s));
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        self.refresh_remaining(view);
        let w = self.p.aging_weight;
        let remaining_s = &self.remaining_s;
        let free_after = self
            .ranking
            .rank_and_form(view, plan, self.p.preemption, |s| {
                let r = view.req(s);
                let waited = ns_to_s(view.now_ns.saturating_sub(r.last_run_end_ns));
                remaining_s[s as usize] - w * waited
            });

        if self.p.offload == AliseOffload::Ewt
            && self.p.preemption == PreemptionChoice::Swap
            && view.host_capacity_blocks() > 0
        {
            self.estimate_ewt(view);
            score_offload(
                view,
                plan,
                self.ranking.order(),
                &self.ewt,
                OffloadTarget {
                    free_after,
                    reserve: view.limits.max_batch_size,
                    window: usize::MAX,
                },
                &mut self.taken,
            );
        }
        self.dirty.extend(plan.run.iter().map(|r| r.slot));
        self.dirty.extend(plan.preempt.iter().map(|p| p.0));
        self.dirty.extend_from_slice(&plan.swap_in);
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
