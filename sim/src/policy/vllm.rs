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
}

impl Vllm {
    pub fn new(params: Params, limits: Limits) -> Self {
        Vllm {
            params,
            limits,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
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
        make_room_for_decodes(view, &mut self.running, &mut self.waiting, plan);
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
