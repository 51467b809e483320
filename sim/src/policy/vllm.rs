//! `vllm` — FCFS with a paged KV cache allocated on demand and preemption by recompute, as in vLLM
//! v0 (Kwon et al., "Efficient Memory Management for Large Language Model Serving with
//! PagedAttention", SOSP'23; code: vLLM v0.2 `vllm/core/scheduler.py _schedule`). This is the
//! V0 scheduler without chunked prefill; vLLM V1's unified scheduler is `vllm-v1`
//! ([`super::vllm_v1`]).
//!
//! At each iteration boundary:
//! 1. Admit waiting requests in FCFS order while the running set stays ≤ `max_batch_size`, the
//!    prefill tokens stay ≤ `max_batch_tokens`, and the KV pool keeps `watermark_frac` of its
//!    blocks free after allocating the prompt (waived while nothing is running); stop at the first
//!    that does not fit. If any was admitted, the iteration is **prefill-only** (vLLM v0 does not
//!    mix phases).
//! 2. Otherwise run one decode step for every running request, oldest first; when a request
//!    cannot get its next block, preempt the most recently arrived running request by recompute
//!    (possibly itself) and put it at the front of the waiting queue.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `watermark_frac` | 0.01 | fraction of KV blocks kept free at admission (vLLM's 1% watermark) |
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "layerwise"`, `kv_layout =
//! "layer-major"` — vLLM v0.1.7, FastServe's vLLM baseline: swaps run on a cache stream with one
//! event per layer, and each layer's attention waits for its layer's event (vLLM v0.1.0
//! `vllm/worker/cache_engine.py _swap`, `vllm/model_executor/layers/attention.py`); `swap_blocks`
//! issues one `cudaMemcpyAsync` per block per layer for K and V (`csrc/cache_kernels.cu`);
//! `shared/docs/fidelity-facts.md` §3.1–3.2. This policy preempts by recompute, so they matter
//! only where it swaps nothing else.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::common::{insert_by_arrival, make_room_for_decodes, remove_slot, run_all_not_in_flight};
use super::{
    FastForward, Limits, Plan, Policy, PolicyEntry, PolicyEnv, ReplicaView, Steady, parse_params,
};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub watermark_frac: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            watermark_frac: 0.01,
        }
    }
}

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "vllm",
    summary: "vLLM V0 (no chunked prefill; V1 is vllm-v1): FCFS, paged KV on demand, prefill-first, preempt latest arrival by recompute",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (params, json) = parse_params::<Params>("vllm", table)?;
    if !(params.watermark_frac.is_finite() && (0.0..1.0).contains(&params.watermark_frac)) {
        return Err(SimError::config(format!(
            "[policies.vllm] watermark_frac must be in [0, 1), got {}",
            params.watermark_frac
        )));
    }
    Ok((Box::new(Vllm::new(params, env.limits)), json))
}

pub struct Vllm {
    params: Params,
    limits: Limits,
    waiting: VecDeque<Slot>,
    /// Requests with resident KV, in arrival order (front = highest priority).
    running: Vec<Slot>,
    /// Test reference: always walk `running` for room ([`make_room_for_decodes`]), as before
    /// [`Vllm::decodes_surely_fit`].
    #[cfg(test)]
    walk_always: bool,
    /// Decode boundaries planned without the walk.
    #[cfg(test)]
    walks_skipped: u64,
}

impl Vllm {
    pub fn new(params: Params, limits: Limits) -> Self {
        Vllm {
            params,
            limits,
            waiting: VecDeque::new(),
            running: Vec::new(),
            #[cfg(test)]
            walk_always: false,
            #[cfg(test)]
            walks_skipped: 0,
        }
    }

    /// Whether every running request can get the blocks of its next decode without anyone being
    /// preempted, told without reading any request (then [`make_room_for_decodes`] would preempt
    /// nobody). Every running request is decoding: an admitted request runs its whole prefill in
    /// the iteration that admits it, and a preempted one leaves `running`; and it holds the
    /// blocks of its resident tokens, so its next token needs at most one more block. With
    /// nothing in flight every running request is served, so the free blocks must cover one
    /// each.
    fn decodes_surely_fit(&self, view: &ReplicaView) -> bool {
        #[cfg(test)]
        if self.walk_always {
            return false;
        }
        let fit = view.none_in_flight() && view.free_blocks() as usize >= self.running.len();
        debug_assert!(
            !fit || self
                .running
                .iter()
                .all(|&s| !view.req(s).in_prefill() && view.extra_blocks_for_next(s) <= 1),
            "a running request needs more than one block"
        );
        fit
    }

    fn watermark_blocks(&self, view: &ReplicaView) -> u32 {
        (self.params.watermark_frac * view.capacity_blocks() as f64).ceil() as u32
    }
}

impl Policy for Vllm {
    fn name(&self) -> &'static str {
        "vllm"
    }

    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let r = view.req(s);
        let need = view.blocks_for_tokens(r.input_tokens as u64) + self.watermark_blocks(view);
        if need > view.capacity_blocks() {
            return Err(SimError::Request {
                id: r.id,
                msg: format!(
                    "prompt needs {need} KV blocks with the watermark; the replica has {}",
                    view.capacity_blocks()
                ),
            });
        }
        self.waiting.push_back(s);
        Ok(())
    }

    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let watermark = self.watermark_blocks(view);
        let mut free = view.free_blocks();
        let mut tokens: u64 = 0;
        while let Some(&s) = self.waiting.front() {
            if self.running.len() >= self.limits.max_batch_size as usize {
                break;
            }
            let r = view.req(s);
            let t = r.prefill_tokens() as u64;
            if !plan.run.is_empty() && tokens + t > self.limits.max_batch_tokens as u64 {
                break;
            }
            let need = view.extra_blocks_for_next(s);
            // With nothing resident the watermark protects nobody. Waiving it then guarantees
            // progress: a request preempted late re-prefills prompt + generated tokens, which
            // may need more than capacity − watermark blocks (it always fits in capacity).
            let keep_free = if self.running.is_empty() {
                0
            } else {
                watermark
            };
            if free < need + keep_free {
                break;
            }
            free -= need;
            tokens += t;
            self.waiting.pop_front();
            insert_by_arrival(view, &mut self.running, s);
            plan.run_on_demand(s);
        }
        if !plan.run.is_empty() {
            return; // prefill-only iteration
        }
        if self.decodes_surely_fit(view) {
            #[cfg(test)]
            {
                self.walks_skipped += 1;
            }
        } else {
            make_room_for_decodes(view, &mut self.running, &mut self.waiting, plan);
        }
        run_all_not_in_flight(view, &self.running, plan);
    }

    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        remove_slot(&mut self.running, s);
    }
}

impl FastForward for Vllm {
    /// A decode-only plan runs every running request and admits nobody; until a request finishes
    /// or arrives, free blocks only shrink, so a waiting request that did not fit still does not,
    /// and the decodes need no preemption while their blocks fit (the engine checks that).
    fn steady(&self, _batch: &[Slot], _view: &ReplicaView) -> Option<Steady> {
        Some(Steady::UNBOUNDED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PreemptMode;
    use crate::policy::mlfq::resident_tests::{Engine, assert_same_plans};
    use crate::rng::XorShift;
    use crate::vocab::KvPool;
    use crate::vocab::request::Slab;

    fn engine(x: &mut XorShift) -> Engine {
        Engine {
            reqs: Slab::default(),
            kv: KvPool::new(20 + x.below(60) as u32, 16),
            host: KvPool::new(0, 16),
            now: 0,
            b: 1 + x.below(12) as u32,
            next_id: 0,
        }
    }

    fn limits(e: &Engine) -> Limits {
        e.view().limits
    }

    /// Seeded random runs (arrivals, admissions, decodes, recompute preemptions, finishes, and
    /// requests of `running` held in an in-flight micro-batch at random): the policy that skips
    /// the walk for room when the decodes surely fit plans every boundary as the one that always
    /// walks. 300 runs of 200 boundaries.
    #[test]
    fn skipping_the_walk_plans_as_the_walk() {
        let mut x = XorShift(0x7e11_a5c4_0d3f_9b21);
        let (mut skipped, mut preempted) = (0, 0);
        for case in 0..300 {
            let mut e = engine(&mut x);
            let mut a = Vllm::new(Params::default(), limits(&e));
            let mut b = Vllm::new(Params::default(), limits(&e));
            b.walk_always = true;
            let (mut pa, mut pb) = (Plan::default(), Plan::default());
            for step in 0..200 {
                e.now += 10_000_000;
                for _ in 0..x.below(3) {
                    let s = e.arrive(1 + x.below(150) as u32, 1 + x.below(120) as u32, 40);
                    a.on_arrival(s, &e.view()).unwrap();
                    b.on_arrival(s, &e.view()).unwrap();
                }
                // A pipeline's micro-batch in flight holds some running requests.
                let held: Vec<Slot> = if x.below(4) == 0 {
                    a.running
                        .iter()
                        .copied()
                        .filter(|_| x.below(3) == 0)
                        .collect()
                } else {
                    Vec::new()
                };
                for &s in &held {
                    e.reqs.get_mut(s).in_batch = true;
                }
                a.schedule(&e.view(), &mut pa);
                b.schedule(&e.view(), &mut pb);
                assert_same_plans(&pa, &pb, &format!("case {case} step {step}"));
                assert_eq!(a.running, b.running);
                assert_eq!(a.waiting, b.waiting);
                for &s in &held {
                    e.reqs.get_mut(s).in_batch = false;
                }
                preempted += pa.preempt.len();
                e.preempt(&pa);
                let (_, done) = e.run(&pa);
                for s in done {
                    a.on_finish(s);
                    b.on_finish(s);
                }
            }
            skipped += a.walks_skipped;
            assert_eq!(b.walks_skipped, 0);
        }
        assert!(skipped > 10_000, "only {skipped} walks skipped");
        assert!(preempted > 1_000, "only {preempted} preemptions");
    }

    /// A decode boundary with a free block for every running request plans without the walk
    /// (it read every running request); one block short, it walks.
    #[test]
    fn decodes_that_surely_fit_skip_the_walk() {
        let mut x = XorShift(1);
        let mut e = engine(&mut x);
        e.kv = KvPool::new(36, 16);
        e.b = 8;
        let mut v = Vllm::new(Params::default(), limits(&e));
        let mut plan = Plan::default();
        for _ in 0..4 {
            // 8 blocks each: the first decode fills the 8th block.
            let s = e.arrive(127, 50, 50);
            v.on_arrival(s, &e.view()).unwrap();
        }
        v.schedule(&e.view(), &mut plan);
        assert_eq!(plan.run.len(), 4, "all admitted");
        e.run(&plan);
        assert_eq!(e.kv.free_blocks(), 4);
        v.schedule(&e.view(), &mut plan);
        assert_eq!((plan.run.len(), plan.preempt.len()), (4, 0));
        assert_eq!(v.walks_skipped, 1);
        e.run(&plan);
        // Each decode now needs a 9th block: 4 free for 4 requests.
        assert!(e.kv.try_alloc(1));
        v.schedule(&e.view(), &mut plan);
        assert_eq!(
            v.walks_skipped, 1,
            "3 free blocks for 4 requests: the walk decides"
        );
        assert_eq!(plan.preempt, vec![(3, PreemptMode::Recompute)]);
    }
}
