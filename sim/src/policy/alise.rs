//! `alise` — speculative shortest-predicted-job scheduling after ALISE (Zhao & Wang, "ALISE:
//! Accelerating Large Language Model Serving with Speculative Scheduling", ICCAD'24,
//! arXiv 2410.23537).
//!
//! What is known of the paper (only its abstract and the start of §1 are reachable, plus
//! third-party summaries; no code is public — `shared/docs/fidelity-facts.md` §1):
//! - priority: the abstract's design paradigm is "a novel speculative scheduler by estimating the
//!   execution time for each job and exploiting such prior knowledge to assign appropriate job
//!   priority orders" (arXiv 2410.23537v1, abstract); the bohrium.com summary describes a
//!   "preemptive scheduler using priority queues … based on estimating execution latency". Total
//!   vs remaining time, and re-estimation per iteration, are not stated;
//! - **aging: no reachable source mentions aging, a waiting-time term or starvation control**
//!   (abstract, §1 opening, themoonlight / bohrium / ownyourai / deeppaper / emergentmind
//!   summaries). So the default is no aging (`aging_weight = 0`); the term is kept as a switch
//!   for ablation (`scenarios/alise_aging_ablation.toml`);
//! - memory: "we employ a priority-based adaptive memory management protocol and
//!   quantization-based compression techniques" (abstract); the summaries add request-level
//!   swapping between HBM and DRAM ordered by estimated waiting time (EWT: highest EWT offloaded,
//!   lowest EWT uploaded ahead of execution — "Algorithm 2, dynamic swapping"). Both are part of
//!   ALISE's system, so both are on by default here (`offload = "ewt"`, `kv_offload_bits = 8`);
//! - a retrieval-based output-length predictor and an execution-time model
//!   `T = s·T0 + n·(α·s + β)` (themoonlight summary).
//!
//! Our choices (the paper leaves them open, `shared/docs/scheduling-papers.md` §2.2):
//! - the execution-time model is the scenario's cost model at batch size 1
//!   ([`super::common::remaining_time_ns`], summed in integer nanoseconds so that equal
//!   remaining sizes tie exactly and go by arrival) instead of a separately fitted linear form;
//! - the priority is the estimated *remaining* time, re-estimated at every iteration boundary,
//!   minus an optional aging credit: `key = remaining_s − aging_weight × waited_s`, where
//!   `waited_s` is the time since the request last ran (or arrived). With `aging_weight > 0` any
//!   request's key falls without bound while it waits, so none starves. Scale: a key is seconds of
//!   remaining work (OPT-13B on an A100, ShareGPT: tens of ms per decode at batch size 1, so a few
//!   seconds for a typical request: median output 271 tokens × ≈ 26 ms ≈ 7 s) and the credit
//!   resets each time the request runs; a weight of 0.1 needs 10 s of uninterrupted waiting to
//!   make up 1 s of remaining-time difference, so it reorders only the few longest waiters and
//!   leaves the mean untouched. `scenarios/alise_aging_ablation.toml` (5,000 requests, seeds
//!   0–2): at 1.25 req/s mean JCT is 10.97 s for w = 0 and 0.1 alike while the longest wait for a
//!   first iteration falls from 118 s to 48 s (w = 1: 12 s); past saturation large weights make
//!   aged requests preempt one another (1.5 req/s, w = 10: 0.41 req/s served instead of 1.50);
//! - a request that outlives its prediction follows the engine's rule
//!   (`generated + max(16, prediction/2)`);
//! - the default predictor is `history` (k nearest completed requests by input length), the
//!   realistic stand-in for ALISE's retrieval predictor;
//! - batch formation skips requests that do not fit; KV pressure preempts resident requests of
//!   lower priority (swap when the host pool has room, else recompute);
//! - **memory manager** (`offload = "ewt"`, the default; `reactive` ablates it): the EWT formula
//!   is not published; ours is
//!   `EWT(r) = Σ_{q ranked ahead of r} remaining_s(q) / max_batch_size` — the work queued ahead
//!   of r, shared by a full batch (the analogue of FastServe's `T_execute`). After the batch is
//!   formed, [`super::common::score_offload`] keeps `max_batch_size` GPU blocks free plus the
//!   blocks of the best-ranked request left out, swapping out non-batch resident requests by
//!   decreasing EWT, and at boundaries with no swap-out swaps host-resident requests in by
//!   increasing EWT (at most `max_batch_size` per boundary), overlapped with compute. The
//!   reserve and the no-ping-pong rule are borrowed from FastServe's code (ALISE gives neither).
//!   Because EWT is a prefix sum of non-negative times over the ranking, its order *is* the
//!   ranking: EWT adds no information to the order, only a time scale. So without aging the
//!   offload runs in ranking order over the resident requests only
//!   ([`super::ranked_offload`]), and the ranking is kept in order and re-keyed only for the
//!   requests that ran or moved: a boundary's work does not grow with the queue (an overloaded
//!   run reaches the overload error quickly). With aging every key moves with time, and each
//!   boundary re-ranks every request (O(n log n) in the queue length);
//! - **KV quantization** (`kv_offload_bits = 8`, the default; 16 ablates it): the paper gives
//!   neither bit-width nor granularity nor trigger. **8 bits is our assumption** (the milder of
//!   the usual INT8/INT4 choices). We quantize only the *offloaded* KV (GPU KV stays FP16, so
//!   compute and accuracy are untouched in the model): 8 or 4 bits divide PCIe bytes and host
//!   blocks by 16/bits, and `[swap] kv_quant_s_per_byte` (default 1e-12 s per FP16 byte) is added
//!   to each copy for the (de)quantization kernel (see [`crate::swap`]). The engine uses this
//!   parameter when the scenario's `[swap] kv_offload_bits` is not given; that global key, when
//!   given, applies to every policy and must agree with this one if both are written. Accuracy
//!   loss from quantization is not modelled.
//!
//! | parameter | unit | default | meaning |
//! |---|---|---|---|
//! | `aging_weight` | s of priority per s waited | 0 (no source mentions aging) | aging credit |
//! | `preemption` | — | `swap` | evicted KV goes to the host pool when it has room (else recompute); or `recompute` |
//! | `offload` | — | `ewt` (ALISE's memory manager) | `ewt` (the EWT memory manager above; needs `preemption = "swap"` and a host pool to do anything) or `reactive` (swap out only to make room, swap in when scheduled) |
//! | `kv_offload_bits` | bits | 8 (assumption: the paper gives no width) | bits per element of offloaded KV: 16 (no quantization), 8 or 4; used when `[swap] kv_offload_bits` is not given |
//! | `chunked_prefill` | — | false (ALISE runs whole prefills) | true: prefill chunks and decodes share `chunk_size` tokens per iteration, taken in ALISE's priority order |
//! | `chunk_size` | tokens | `max_batch_tokens` | the token budget of one iteration with `chunked_prefill` (2 ..= `max_batch_tokens`) |
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "layerwise"`, `kv_layout =
//! "layer-major"`, as `vllm` — an assumption: ALISE's engine is not described in any reachable
//! source (`shared/docs/fidelity-facts.md` §0.1); it is compared with vLLM, so it runs on the same
//! engine as the `vllm` baseline.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::common::{
    KeyedRanking, OffloadTarget, Ranking, chunk_budget, record_chunking, score_offload,
};
use super::ranked_offload::{Resident, ranked_offload};
use super::remaining::Remaining;
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, parse_params,
};
use crate::cost::CostModel;
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;
use crate::vocab::time::ns_to_s;

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "alise",
    summary: "ALISE: preemptive shortest estimated remaining time, EWT swapping, 8-bit offloaded KV; history predictor by default",
    build,
    default_predictor: "history",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub aging_weight: f64,
    /// How an evicted request gives up its KV: `swap` (host pool, if room) or `recompute`.
    pub preemption: PreemptionChoice,
    /// Host-memory management: `ewt` (default) or `reactive`.
    pub offload: AliseOffload,
    /// Bits per element of offloaded KV (16, 8 or 4): the run's `[swap] kv_offload_bits` when
    /// the scenario does not give that key (see [`crate::scenario`]).
    pub kv_offload_bits: u32,
    /// Chunked prefill: prefill chunks and decodes share `chunk_size` tokens per iteration
    /// (default the scenario's `max_batch_tokens`). Off by default: ALISE as published runs
    /// whole prefills.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub chunked_prefill: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
}

/// Default bits of offloaded KV under `alise`: an assumption (the paper gives no width).
pub const DEFAULT_KV_OFFLOAD_BITS: u32 = 8;

/// ALISE's host-memory management.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AliseOffload {
    /// Swap out only to make room for a batch; swap in when scheduled.
    Reactive,
    /// Proactive swapping by estimated waiting time (see the module docs).
    #[default]
    Ewt,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            aging_weight: 0.0,
            preemption: PreemptionChoice::Swap,
            offload: AliseOffload::Ewt,
            kv_offload_bits: DEFAULT_KV_OFFLOAD_BITS,
            chunked_prefill: false,
            chunk_size: None,
        }
    }
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, mut json) = parse_params::<Params>("alise", table)?;
    let budget = chunk_budget("alise", p.chunked_prefill, p.chunk_size, env.limits)?;
    record_chunking(&mut json, budget);
    if !(p.aging_weight.is_finite() && p.aging_weight >= 0.0) {
        return Err(SimError::config(format!(
            "[policies.alise] aging_weight must be ≥ 0, got {}",
            p.aging_weight
        )));
    }
    if !matches!(p.kv_offload_bits, 4 | 8 | 16) {
        return Err(SimError::config(format!(
            "[policies.alise] kv_offload_bits must be 4, 8 or 16, got {}",
            p.kv_offload_bits
        )));
    }
    let mut policy = Alise::new(p, env.cost.clone());
    policy.chunk_budget = budget;
    Ok((Box::new(policy), json))
}

pub struct Alise {
    p: Params,
    /// Tokens per iteration under chunked prefill (`None`: whole prefills).
    chunk_budget: Option<u32>,
    /// Remaining-time keys (memoised decode times).
    remaining: Remaining,
    /// `aging_weight > 0`: every key moves with time, so all are re-ranked at each boundary.
    ranking: Ranking,
    /// `aging_weight = 0`: the key is the remaining time, a function of the request's own state,
    /// kept in order and re-keyed only when the request may have changed, so a boundary costs
    /// O((batch + looked-at + resident) · log n), not O(queue · log queue).
    keyed: KeyedRanking,
    /// The requests that may hold KV (swap candidates of the keyed path).
    resident: Resident,
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
            chunk_budget: None,
            remaining: Remaining::new(cost),
            ranking: Ranking::default(),
            keyed: KeyedRanking::default(),
            resident: Resident::default(),
            ewt: Vec::new(),
            taken: Vec::new(),
            remaining_s: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Bring `remaining_s` up to date for the requests of the last plans (a request in a
    /// micro-batch still in the pipeline changes when that batch ends: it stays dirty).
    fn refresh_remaining(&mut self, view: &ReplicaView) {
        let remaining = &self.remaining;
        let remaining_s = &mut self.remaining_s;
        self.dirty.retain(|&s| {
            if !view.reqs.contains(s) {
                return false;
            }
            let r = view.req(s);
            remaining_s[s as usize] = remaining.key_s(r);
            r.in_flight()
        });
    }

    /// Without aging the key is the remaining time alone: the keyed ranking applies.
    fn keyed(&self) -> bool {
        self.p.aging_weight == 0.0
    }

    /// Whether the EWT memory manager acts on this replica.
    fn offloads(&self, view: &ReplicaView) -> bool {
        self.p.offload == AliseOffload::Ewt
            && self.p.preemption == PreemptionChoice::Swap
            && view.host_capacity_blocks() > 0
    }

    fn offload_target(view: &ReplicaView, free_after: u32) -> OffloadTarget {
        OffloadTarget {
            free_after,
            reserve: view.limits.max_batch_size,
            window: usize::MAX,
        }
    }

    /// [`Policy::schedule`] without aging: the keyed ranking, and the offload over the resident
    /// requests only (EWT is monotone in the ranking, so the ranking order is its order).
    fn schedule_keyed(&mut self, view: &ReplicaView, plan: &mut Plan) {
        let remaining = &self.remaining;
        let free_after =
            self.keyed
                .rank_and_form(view, plan, self.p.preemption, self.chunk_budget, |s| {
                    remaining.key_s(view.req(s))
                });
        if self.offloads(view) {
            ranked_offload(
                view,
                plan,
                &self.keyed,
                &mut self.resident,
                Self::offload_target(view, free_after),
                &mut self.taken,
            );
            // Swapped out or in: re-key them at the next boundary.
            for &(s, _) in &plan.preempt {
                self.keyed.touch(s);
            }
            for &s in &plan.swap_in {
                self.keyed.touch(s);
            }
        }
        self.resident.note_plan(plan);
    }

    /// [`Policy::schedule`] with aging: every request re-keyed and re-ranked.
    fn schedule_aging(&mut self, view: &ReplicaView, plan: &mut Plan) {
        self.refresh_remaining(view);
        let w = self.p.aging_weight;
        let remaining_s = &self.remaining_s;
        let free_after =
            self.ranking
                .rank_and_form(view, plan, self.p.preemption, self.chunk_budget, |s| {
                    let r = view.req(s);
                    let waited = ns_to_s(view.now_ns.saturating_sub(r.last_run_end_ns));
                    remaining_s[s as usize] - w * waited
                });
        if self.offloads(view) {
            self.estimate_ewt(view);
            score_offload(
                view,
                plan,
                self.ranking.order(),
                &self.ewt,
                Self::offload_target(view, free_after),
                &mut self.taken,
            );
        }
        self.dirty.extend(plan.run.iter().map(|r| r.slot));
        self.dirty.extend(plan.preempt.iter().map(|p| p.0));
        self.dirty.extend_from_slice(&plan.swap_in);
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
    fn chunks_prefill(&self) -> bool {
        self.chunk_budget.is_some()
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let key = self.remaining.key_s(view.req(s));
        if self.keyed() {
            self.keyed.add(view, s, key);
            return Ok(());
        }
        self.ranking.add(s);
        if self.remaining_s.len() <= s as usize {
            self.remaining_s.resize(s as usize + 1, 0.0);
        }
        self.remaining_s[s as usize] = key;
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        if self.keyed() {
            self.schedule_keyed(view, plan);
        } else {
            self.schedule_aging(view, plan);
        }
    }
    fn on_finish(&mut self, s: Slot) {
        if self.keyed() {
            self.keyed.remove(s);
        } else {
            self.ranking.remove(s);
        }
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        PolicyInfo {
            priority: if self.keyed() {
                self.keyed.last_key(s)
            } else {
                self.ranking.last_key(s)
            },
            ..Default::default()
        }
    }
}
