//! `ltr` — ranking by predicted output length with vllm-ltr's starvation rule (Fu et al.,
//! "Efficient LLM Scheduling by Learning to Rank", NeurIPS'24; code hao-ai-lab/vllm-ltr
//! `vllm/core/scheduler.py _get_opt_ordered_requests`).
//!
//! At every boundary all unfinished requests (waiting, running, preempted) are ordered by their
//! predicted output length (the rank score; shorter first, ties by arrival) and the batch is filled
//! in that order, skipping misfits; KV pressure preempts lower-ranked resident requests by swap
//! (vllm-ltr forces `PreemptionMode.SWAP` in `reserve_free_blocks`), or recompute when the host
//! pool is full. Starvation: a request not scheduled for `starvation_iterations` consecutive
//! iterations gets top priority for its next `boost_iterations` scheduled iterations, 200 and 10
//! as in vllm-ltr's `starv200-period10` policy string; boosted requests go first, by arrival. The
//! rule is **off by default** (`starvation = false`): vllm-ltr uses it only in its fairness
//! experiments (`benchmarks/fair-*.sh`), while its headline latency and throughput runs
//! (`bench*.sh`, `burst-*.sh`, `synthetic-*.sh`) rank with no starvation control
//! (`shared/docs/fidelity-facts.md` §2.3). With it on, serial swapping and a noisy ranking can
//! feed each other (boosted requests preempt by swap, the copies stall compute, more requests
//! starve): `results/README.md` shows the effect.
//!
//! Default predictor: `ranking` (a ranker of known quality, [`crate::predict::rank_noise`]) with
//! Kendall τ = 0.52 — the τ vllm-ltr reports for its OPT-125M ranker of Llama-3-8B outputs on
//! ShareGPT (hao-ai-lab/vllm-ltr `train/train.sh`, comments "Reproduce results in Table 3";
//! `shared/docs/fidelity-facts.md` §2.1). `predictor = "oracle"` gives the perfect ranking (the
//! default before); `[predictors.ranking] kendall_tau` sets another quality (LMSYS: 0.64).
//!
//! | parameter | unit | default |
//! |---|---|---|
//! | `starvation` | — | false (vllm-ltr's headline runs) |
//! | `starvation_iterations` | iterations | 200 |
//! | `boost_iterations` | iterations | 10 |
//! | `preemption` | — | `swap` (else `recompute`) |
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "serial"`, `kv_layout =
//! "layer-major"` — vllm-ltr runs on vLLM 0.4.1, whose `Worker.cache_swap` issues the step's
//! swap-ins and swap-outs on the compute stream before `execute_model` (hao-ai-lab/vllm-ltr
//! @13bbf6f `vllm/worker/worker.py`; the fork's `cache_stream`, per-layer events and
//! `_swap_by_layer` are never called), with one `cudaMemcpyAsync` per block per layer for K and
//! V (`csrc/cache_kernels.cu swap_blocks`); `shared/docs/fidelity-facts.md` §2.2, §3.1–3.2.

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

use super::common::KeyedRanking;
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, parse_params,
};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "ltr",
    summary: "vllm-ltr: order by predicted length rank (ranking predictor, τ = 0.52); optional starvation rule (idle ≥ 200 iterations ⇒ top priority for 10)",
    build,
    default_predictor: "ranking",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Serial,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// vllm-ltr's starvation prevention (`starv<N>-period<M>`): off by default, as in its
    /// headline experiments.
    pub starvation: bool,
    pub starvation_iterations: u32,
    pub boost_iterations: u32,
    /// How an evicted request gives up its KV: `swap` (host pool, if room) or `recompute`.
    pub preemption: PreemptionChoice,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            starvation: false,
            starvation_iterations: 200,
            boost_iterations: 10,
            preemption: PreemptionChoice::Swap,
        }
    }
}

fn build(
    table: Option<&toml::Value>,
    _env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, json) = parse_params::<Params>("ltr", table)?;
    if p.starvation_iterations == 0 {
        return Err(SimError::config(
            "[policies.ltr] starvation_iterations must be ≥ 1",
        ));
    }
    Ok((Box::new(Ltr::new(p)), json))
}

/// Per-request state. A request's idle count (boundaries since it last ran, arrived or was
/// boosted) is not stored: only the boundary at which it would reach `starvation_iterations`, so
/// a boundary costs nothing for the requests it leaves waiting.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    boost_left: u32,
    promotions: u32,
    /// The boundary at which it starves if it does not run before (only when not boosted).
    due: Option<u64>,
}

pub struct Ltr {
    p: Params,
    ranking: KeyedRanking,
    state: Vec<State>,
    in_batch: Vec<bool>,
    /// Boundaries so far.
    tick: u64,
    /// `(due, slot)` of every request that is not boosted (the starvation deadlines), in the
    /// order they were set, which is the order of `due` (always the boundary count then plus
    /// `starvation_iterations`). An entry whose request has another `due` since (it ran, was
    /// boosted or finished) is stale, and dropped when it reaches the front: a deadline costs
    /// O(1), where an ordered set cost O(log n) per request run.
    deadlines: VecDeque<(u64, Slot)>,
}

impl Ltr {
    pub fn new(p: Params) -> Self {
        Ltr {
            p,
            ranking: KeyedRanking::jumping(),
            state: Vec::new(),
            in_batch: Vec::new(),
            tick: 0,
            deadlines: VecDeque::new(),
        }
    }

    fn key(st: &State, predicted_output_tokens: u32) -> f64 {
        if st.boost_left > 0 {
            -1.0
        } else {
            predicted_output_tokens as f64
        }
    }

    /// Request `s` was reset at boundary `t` (idle 0): its deadline follows.
    fn reset(&mut self, s: Slot, t: u64) {
        let st = &mut self.state[s as usize];
        st.due = None;
        if st.boost_left == 0 && self.p.starvation {
            let d = t.saturating_add(self.p.starvation_iterations as u64);
            debug_assert!(self.deadlines.back().is_none_or(|b| b.0 <= d));
            st.due = Some(d);
            self.deadlines.push_back((d, s));
        }
    }
}

impl Policy for Ltr {
    fn name(&self) -> &'static str {
        "ltr"
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        if self.state.len() <= s as usize {
            self.state.resize(s as usize + 1, State::default());
            self.in_batch.resize(s as usize + 1, false);
        }
        self.state[s as usize] = State::default();
        self.reset(s, self.tick);
        let k = Self::key(&self.state[s as usize], view.req(s).predicted_output_tokens);
        self.ranking.add(view, s, k);
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let state = &self.state;
        self.ranking
            .rank_and_form(view, plan, self.p.preemption, None, |s| {
                Self::key(&state[s as usize], view.req(s).predicted_output_tokens)
            });
        // Every request's idle count grows by one at this boundary except the batch's, which
        // reset; a request whose count reaches `starvation_iterations` unboosted is boosted.
        self.tick += 1;
        let t = self.tick;
        for i in 0..plan.run.len() {
            let s = plan.run[i].slot;
            self.in_batch[s as usize] = true;
            let st = &mut self.state[s as usize];
            st.boost_left = st.boost_left.saturating_sub(1);
            self.reset(s, t);
        }
        while let Some(&(d, s)) = self.deadlines.front() {
            if d > t {
                break;
            }
            self.deadlines.pop_front();
            if self.state[s as usize].due != Some(d) {
                continue; // Stale.
            }
            debug_assert!(!self.in_batch[s as usize], "the batch's deadlines moved on");
            let st = &mut self.state[s as usize];
            st.boost_left = self.p.boost_iterations;
            st.promotions += 1;
            self.reset(s, t);
            self.ranking.touch(s);
        }
        for item in &plan.run {
            self.in_batch[item.slot as usize] = false;
        }
    }
    fn on_iteration_end(&mut self, _batch: &[Slot], _d: Ns, _view: &ReplicaView) {}
    fn on_finish(&mut self, s: Slot) {
        self.ranking.remove(s);
        self.state[s as usize].due = None;
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        let st = self.state[s as usize];
        PolicyInfo {
            priority: self.ranking.last_key(s),
            promotions: st.promotions,
            demotions: 0,
        }
    }
}
