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
//!   aged requests preempt one another (1.5 req/s, w = 10: 0.41 req/s served instead of 1.50).
//!   So does a long queue with a small KV pool at any weight: running resets a request's credit
//!   and puts it behind every request that waited longer, so aged requests take turns of one
//!   iteration, a preemption per token (3,000 ShareGPT requests at once, 130 blocks, w = 0.1:
//!   ≈ 10⁶ preemptions for 10⁶ tokens, against 10⁴ at w = 0; with a slow pipeline send and a full
//!   host pool the turns are recomputes and the burst takes 127 simulated days instead of 1.5).
//!   This is the priority as documented, not a livelock (each turn yields a token);
//! - a request that outlives its prediction follows the engine's rule
//!   (`generated + max(16, prediction/2)`, at most what the context leaves);
//! - the default predictor is `history` (k nearest completed requests by input length), the
//!   realistic stand-in for ALISE's retrieval predictor;
//! - batch formation skips requests that do not fit; KV pressure preempts resident requests of
//!   lower priority (swap when the host pool has room, else recompute);
//! - **memory manager** (`offload = "ewt"`, the default; `reactive` ablates it): the EWT formula
//!   is not published; ours is
//!   `EWT(r) = Σ_{q ranked ahead of r} remaining_s(q) / max_batch_size` — the work queued ahead
//!   of r, shared by a full batch (the analogue of FastServe's `T_execute`). After the batch is
//!   formed, [`super::common::score_offload`] keeps `max_batch_size` GPU blocks free plus the
//!   blocks of the best-ranked request left out (with pipeline parallelism, one in none of the
//!   micro-batches: a request in flight holds its blocks and is not waiting for memory; counting
//!   it made the swap-in pass undo the formation's swap-outs at every other boundary, see
//!   [`super::ranked_offload`]), swapping out non-batch resident requests by
//!   decreasing EWT, and at boundaries with no swap-out swaps host-resident requests in by
//!   increasing EWT (at most `max_batch_size` per boundary), overlapped with compute. The
//!   reserve and the no-ping-pong rule are borrowed from FastServe's code (ALISE gives neither).
//!   Because EWT is a prefix sum of non-negative times over the ranking, its order *is* the
//!   ranking: EWT adds no information to the order, only a time scale. So without aging the
//!   offload runs in ranking order over indexes of the requests it looks at
//!   ([`super::ranked_offload`]), and the ranking is kept in order and re-keyed only for the
//!   requests that ran or moved: a boundary's work does not grow with the queue (an overloaded
//!   run reaches the overload error quickly). With aging the same holds: the ranking is kept in
//!   the time-invariant form `remaining_s + aging_weight × last_run_end_s`, which orders the
//!   requests at every boundary as `remaining_s − aging_weight × waited_s` does (the term
//!   `aging_weight × now` is common to all) and moves only when the request runs. Float rounding
//!   of the two forms can differ, so requests whose priorities tie to within about 1e-15 relative
//!   may be ordered differently than a re-sort at each boundary would; `priority_at_finish` in
//!   `requests.csv` reports the time-invariant key;
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

use super::common::{KeyedRanking, OffloadTarget, chunk_budget, record_chunking};
use super::ranked_offload::{Resident, ranked_offload};
#[cfg(test)]
use super::ranked_offload_ref::reference_offload;
use super::remaining::Remaining;
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, parse_params,
};
use crate::cost::CostModel;
use crate::error::{Result, SimError};
use crate::vocab::request::{Request, Slot};
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
    /// The ranking, kept in order: a request's key is a function of its own state (remaining
    /// time, and with aging the end of its last run), re-keyed only when the request may have
    /// changed, so a boundary costs O((batch + looked-at + resident) · log n), not
    /// O(queue · log queue).
    keyed: KeyedRanking,
    /// The requests that may hold KV (swap candidates).
    resident: Resident,
    taken: Vec<bool>,
    /// Tests: offload with the reference (the list walk the indexes replaced).
    #[cfg(test)]
    use_reference: bool,
    #[cfg(test)]
    reference: super::ranked_offload_ref::Resident,
}

impl Alise {
    pub fn new(p: Params, cost: Arc<dyn CostModel>) -> Self {
        // With aging every request is preempted again and again, and a burst's formation would
        // walk the queue at every boundary: the jump index pays for itself there. Without aging
        // it only costs (about +65 % instructions on ordinary load, as for srpt).
        let keyed = if p.aging_weight > 0.0 {
            KeyedRanking::jumping()
        } else {
            KeyedRanking::default()
        };
        Alise {
            p,
            chunk_budget: None,
            remaining: Remaining::new(cost),
            keyed,
            resident: Resident::default(),
            taken: Vec::new(),
            #[cfg(test)]
            use_reference: false,
            #[cfg(test)]
            reference: Default::default(),
        }
    }

    /// The ranking key of `r`: its estimated remaining time, plus with aging
    /// `aging_weight × last_run_end_s`. At any boundary `now` this orders requests exactly as
    /// `remaining_s − aging_weight × (now − last_run_end_s)` (the documented priority) does,
    /// because `aging_weight × now` is common to all, and it does not move while the request
    /// waits.
    fn key_s(remaining: &Remaining, aging_weight: f64, r: &Request) -> f64 {
        let key = remaining.key_s(r);
        if aging_weight == 0.0 {
            key
        } else {
            key + aging_weight * ns_to_s(r.last_run_end_ns)
        }
    }

    /// Whether the EWT memory manager acts on this replica.
    fn offloads(&self, view: &ReplicaView) -> bool {
        self.p.offload == AliseOffload::Ewt
            && self.p.preemption == PreemptionChoice::Swap
            && view.host_capacity_blocks() > 0
    }

    /// The EWT offload toward `target` free blocks ([`ranked_offload`]; under test, the list walk
    /// it replaced when `use_reference` is set).
    fn offload(&mut self, view: &ReplicaView, plan: &mut Plan, target: OffloadTarget) {
        #[cfg(test)]
        if self.use_reference {
            let (keyed, taken) = (&self.keyed, &mut self.taken);
            reference_offload(view, plan, keyed, &mut self.reference, target, taken);
            return;
        }
        ranked_offload(
            view,
            plan,
            &self.keyed,
            &mut self.resident,
            target,
            &mut self.taken,
        );
    }
    fn offload_target(view: &ReplicaView, free_after: u32) -> OffloadTarget {
        OffloadTarget {
            free_after,
            reserve: view.limits.max_batch_size,
            window: usize::MAX,
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
        let key = Self::key_s(&self.remaining, self.p.aging_weight, view.req(s));
        self.keyed.add(view, s, key);
        if self.offloads(view) {
            self.resident.note_arrival(s);
        }
        Ok(())
    }
    /// The keyed ranking, and the offload over the resident requests only (EWT is monotone in
    /// the ranking, so the ranking order is its order).
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let (remaining, w) = (&self.remaining, self.p.aging_weight);
        let free_after =
            self.keyed
                .rank_and_form(view, plan, self.p.preemption, self.chunk_budget, |s| {
                    Self::key_s(remaining, w, view.req(s))
                });
        if self.offloads(view) {
            let target = Self::offload_target(view, free_after);
            self.offload(view, plan, target);
            // Swapped out or in: re-key them at the next boundary.
            for &(s, _) in &plan.preempt {
                self.keyed.touch(s);
            }
            for &s in &plan.swap_in {
                self.keyed.touch(s);
            }
            self.resident.note_plan(plan);
            #[cfg(test)]
            self.reference.note_plan(plan);
        }
    }
    fn on_finish(&mut self, s: Slot) {
        self.keyed.remove(s);
        self.resident.note_finish(s);
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        PolicyInfo {
            priority: self.keyed.last_key(s),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod offload_tests;

#[cfg(test)]
mod tests {
    use super::super::common::form_priority_batch;
    use super::*;
    use crate::cost::linear::LinearCost;
    use crate::policy::ranking::tests::view;
    use crate::vocab::KvPool;
    use crate::vocab::request::Slab;

    /// In a burst (here with aging) the formation jumps over the requests whose prefill the
    /// batch's token budget has no room for: it looks at a few dozen entries of a 20,000-request
    /// queue (the walk looked at every one).
    #[test]
    fn a_burst_formation_jumps_over_token_budget_skips() {
        let cost = Arc::new(crate::cost::constant::ConstantCost { iteration_s: 0.01 });
        let p = Params {
            aging_weight: 1.0,
            ..Params::default()
        };
        let mut alise = Alise::new(p, cost);
        let reqs = crate::policy::ranking::tests::token_skip_burst(20_000);
        let (kv, host) = (KvPool::new(100_000, 16), KvPool::new(0, 16));
        let v = view(&reqs, &kv, &host);
        for s in 0..20_000 {
            alise.on_arrival(s, &v).unwrap();
        }
        let mut plan = Plan::default();
        alise.schedule(&v, &mut plan);
        assert_eq!(plan.run.len(), 1);
        assert!(alise.keyed.looked_at() < 100, "{}", alise.keyed.looked_at());
    }

    /// With aging, the kept-in-order ranking orders the waiting requests exactly as the
    /// documented priority `remaining_s − aging_weight × (now − last_run_end_s)` evaluated at the
    /// boundary does (here re-sorted from scratch), and forms the batch of that order.
    #[test]
    fn aging_keeps_the_order_of_the_priority_at_the_boundary() {
        let cost: LinearCost = toml::from_str(
            "a_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.000001",
        )
        .unwrap();
        let w = 0.7;
        let p = Params {
            aging_weight: w,
            ..Params::default()
        };
        let mut alise = Alise::new(p, Arc::new(cost));
        let (n, now_ns) = (3000u64, 5_000_000_000_000);
        let mut reqs = Slab::default();
        for i in 0..n {
            let (input, output) = (1 + (i * 7919 % 120) as u32, 2 + (i * 104_729 % 300) as u32);
            let mut r = Request::new(i, i * 1_000_000, input, output, output);
            // Some were preempted by recompute after generating a few tokens; all last ran (or
            // arrived) at scattered times before `now`.
            r.generated_tokens = (i % 5) as u32;
            r.last_run_end_ns = (i * 2_654_435_761) % now_ns;
            reqs.insert(r);
        }
        let (kv, host) = (KvPool::new(1_000_000, 16), KvPool::new(0, 16));
        let mut v = view(&reqs, &kv, &host);
        for s in 0..n as Slot {
            alise.on_arrival(s, &v).unwrap();
        }
        v.now_ns = now_ns;
        let mut plan = Plan::default();
        alise.schedule(&v, &mut plan);
        assert_eq!(
            alise.keyed.len(),
            n as usize,
            "aging ranks in the kept-in-order ranking"
        );
        let priority = |s: Slot| {
            let r = v.req(s);
            alise.remaining.key_s(r) - w * ns_to_s(now_ns - r.last_run_end_ns)
        };
        let mut want: Vec<Slot> = (0..n as Slot).collect();
        want.sort_by(|&a, &b| priority(a).total_cmp(&priority(b)).then(a.cmp(&b)));
        let got: Vec<Slot> = alise.keyed.iter().collect();
        assert_eq!(got, want);
        let mut reference = Plan::default();
        let (preemption, misfit) = (PreemptionChoice::Swap, super::super::common::Misfit::Skip);
        form_priority_batch(&v, &want, misfit, preemption, false, None, &mut reference);
        assert_eq!(plan.run, reference.run);
        assert_eq!(plan.run.len(), 16);
    }
}
