//! `vllm-v1` — vLLM V1's unified scheduler with chunked prefill (vLLM `vllm/v1/core/sched/scheduler.py`
//! `Scheduler.schedule`, as of the 0.9–0.11 releases (the `vllm/v1` code at commit `00024d3` read for
//! `shared/docs/chunked-prefill.md` §3); the older V0 scheduler is the `vllm` policy).
//!
//! A request has no prefill or decode phase, only tokens not yet in the KV cache: a prefill is
//! "many tokens behind", a decode "one behind". Each iteration has one token budget
//! (`max_num_batched_tokens`):
//! 1. Pass over the `running` list in list order (admission order; a resumed request goes to the
//!    tail): each gets min(tokens behind, `long_prefill_token_threshold` if > 0, budget left)
//!    tokens; the pass ends when the budget is spent. KV blocks are allocated for the tokens done
//!    so far plus this step's (per chunk, not for the whole prompt); when they do not fit, the
//!    tail of `running` is preempted by recompute (to the head of the waiting queue) until they
//!    do; if the tail is the request itself, it is preempted and the pass ends.
//! 2. Only if nothing was preempted: admit waiting requests FCFS while `running` is shorter
//!    than `max_num_seqs` and budget is left, each with min(prompt (+ generated tokens after a
//!    recompute), threshold if > 0, budget left) tokens, stopping at the first whose blocks do
//!    not fit (waiting requests never preempt).
//!
//! With pipeline parallelism (pp > 1) the requests in a micro-batch still in flight cannot be
//! preempted (their KV is in use), so the victim is the last request of `running` not in
//! flight. When that is the request being served itself while younger ones are in flight, it
//! does not preempt itself (vLLM would pop the younger tail): the pass ends and nothing is
//! admitted, and it waits for a younger request to come back and become the victim. Evicting
//! it instead let the oldest request lose its KV over and over to younger ones in flight, a
//! livelock with a tight KV pool (pp 4: 7.5 M preemptions for 1,000 requests). With pp = 1
//! nothing is in flight when the scheduler runs and the rule never applies.
//!
//! A request emits its first token (or its next after a recompute) at the end of the iteration
//! that completes its prefill; the tokens sampled after partial chunks are discarded.
//!
//! Not modelled: prefix caching (on by default in vLLM; a recomputed request here always
//! re-prefills from scratch), priority scheduling, speculative decoding, encoder inputs,
//! `max_num_partial_prefills` (consulted only to auto-set the threshold), async scheduling.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `max_num_batched_tokens` | the scenario's `max_batch_tokens` | token budget per iteration (decodes + chunks); ≤ `max_batch_tokens` |
//! | `max_num_seqs` | the scenario's `max_batch_size` | most requests in `running`; ≤ `max_batch_size` |
//! | `long_prefill_token_threshold` | 0 (off) | most prefill tokens one request gets per iteration |
//!
//! Defaults: vLLM's own `max_num_batched_tokens` depends on version, GPU and entry point (V1:
//! 2048 or 8192 for the OpenAI server, 8192 or 16384 for the `LLM` class, the larger on GPUs of
//! ≥ 70 GiB other than A100; §3.7), so the scenario's `[scheduler] max_batch_tokens` — the same
//! knob — is the budget unless the table overrides it; likewise `max_num_seqs` (vLLM: 256 or 1024)
//! is the scenario's `max_batch_size`.
//!
//! Swap timing (registry defaults for `[swap]`): as `vllm`'s (`reactive = "layerwise"`,
//! `kv_layout = "layer-major"`); V1 preempts by recompute only, so they matter only where
//! something else swaps.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::common::remove_slot;
use super::{
    FastForward, Limits, Plan, Policy, PolicyEntry, PolicyEnv, PreemptMode, ReplicaView, Steady,
    parse_params,
};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub max_num_batched_tokens: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub long_prefill_token_threshold: u32,
}

/// The parameters once defaults are resolved against the scenario's limits (for `config.json`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Resolved {
    pub max_num_batched_tokens: u32,
    pub max_num_seqs: u32,
    pub long_prefill_token_threshold: u32,
}

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "vllm-v1",
    summary: "vLLM V1: one token budget, running list first (decodes, prefill chunks), then FCFS admission; recompute",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

/// Resolve `p` against the scenario's limits.
pub fn resolve(p: &Params, limits: Limits) -> Result<Resolved> {
    let err = |m: String| Err(SimError::config(format!("[policies.vllm-v1] {m}")));
    let budget = p.max_num_batched_tokens.unwrap_or(limits.max_batch_tokens);
    if budget == 0 || budget > limits.max_batch_tokens {
        return err(format!(
            "max_num_batched_tokens must be in 1..={} (the scenario's max_batch_tokens), got {budget}",
            limits.max_batch_tokens
        ));
    }
    let seqs = p.max_num_seqs.unwrap_or(limits.max_batch_size);
    if seqs == 0 || seqs > limits.max_batch_size {
        return err(format!(
            "max_num_seqs must be in 1..={} (the scenario's max_batch_size), got {seqs}",
            limits.max_batch_size
        ));
    }
    Ok(Resolved {
        max_num_batched_tokens: budget,
        max_num_seqs: seqs,
        long_prefill_token_threshold: p.long_prefill_token_threshold,
    })
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (params, _) = parse_params::<Params>("vllm-v1", table)?;
    let resolved = resolve(&params, env.limits)?;
    let json = serde_json::to_value(resolved).map_err(|e| SimError::config(e.to_string()))?;
    Ok((Box::new(VllmV1::new(resolved)), json))
}

pub struct VllmV1 {
    p: Resolved,
    waiting: VecDeque<Slot>,
    /// Requests holding KV, in admission order (a resumed request joins at the tail).
    running: Vec<Slot>,
}

impl VllmV1 {
    pub fn new(p: Resolved) -> Self {
        VllmV1 {
            p,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Tokens a request `left` tokens behind gets with `budget` left.
    fn want(&self, left: u32, budget: u32) -> u32 {
        let t = self.p.long_prefill_token_threshold;
        let w = if t > 0 { left.min(t) } else { left };
        w.min(budget)
    }
}

impl Policy for VllmV1 {
    fn name(&self) -> &'static str {
        "vllm-v1"
    }

    fn chunks_prefill(&self) -> bool {
        true
    }

    fn on_arrival(&mut self, s: Slot, _view: &ReplicaView) -> Result<()> {
        self.waiting.push_back(s);
        Ok(())
    }

    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let mut budget = self.p.max_num_batched_tokens;
        let mut free = view.free_blocks();
        let mut preempted = false;
        // Pass 1: the running list, in order.
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let s = self.running[i];
            let r = view.req(s);
            if r.in_flight() {
                i += 1;
                continue;
            }
            let prefill = r.in_prefill();
            let want = if prefill {
                self.want(r.prefill_left(), budget)
            } else {
                1
            };
            let need = view.blocks_for_tokens((r.kv_tokens + want) as u64);
            let need = need.saturating_sub(r.blocks);
            while need > free {
                // Preempt the tail of `running` (the last one not in a micro-batch).
                let j = (i..self.running.len())
                    .rev()
                    .find(|&j| !view.req(self.running[j]).in_flight())
                    .expect("the request itself is not in flight");
                if j == i && i + 1 < self.running.len() {
                    // Every younger request is in a micro-batch: wait for one to come back
                    // rather than evict this older one (see the module docs).
                    preempted = true;
                    break 'running;
                }
                let v = self.running.remove(j);
                plan.preempt.push((v, PreemptMode::Recompute));
                free += view.req(v).blocks;
                self.waiting.push_front(v);
                preempted = true;
                if j == i {
                    break 'running;
                }
            }
            free -= need;
            plan.run_chunk(s, if prefill { want } else { 0 });
            budget -= want;
            i += 1;
        }
        if preempted {
            return;
        }
        // Pass 2: admit waiting requests FCFS.
        while budget > 0 && self.running.len() < self.p.max_num_seqs as usize {
            let Some(&s) = self.waiting.front() else {
                break;
            };
            let r = view.req(s);
            let want = self.want(r.prefill_left(), budget);
            let need = view
                .blocks_for_tokens((r.kv_tokens + want) as u64)
                .saturating_sub(r.blocks);
            if need > free {
                break;
            }
            self.waiting.pop_front();
            self.running.push(s);
            plan.run_chunk(s, want);
            budget -= want;
            free -= need;
        }
    }

    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        remove_slot(&mut self.running, s);
    }
}

impl FastForward for VllmV1 {
    /// Steady when the decode-only `batch` is the whole `running` list (each decode takes one
    /// token of the budget, so the same list is served at every boundary) and the waiting head
    /// cannot be admitted: no budget left after the decodes, `running` full, or its first chunk's
    /// blocks do not fit now (until an arrival or a completion, free blocks only shrink, the budget
    /// left and the head stay the same). The decodes preempt only when their blocks do not fit,
    /// which the engine checks; the running order (by admission) does not change. (A decode-only
    /// plan already admitted nobody at this boundary, so the checks hold whenever the engine
    /// asks; they are kept so the rule does not rest on that.)
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady> {
        if batch.len() != self.running.len() {
            return None;
        }
        let budget = self
            .p
            .max_num_batched_tokens
            .checked_sub(batch.len() as u32)?;
        if let Some(&s) = self.waiting.front()
            && budget > 0
            && self.running.len() < self.p.max_num_seqs as usize
        {
            let r = view.req(s);
            let want = self.want(r.prefill_left(), budget);
            let need = view
                .blocks_for_tokens((r.kv_tokens + want) as u64)
                .saturating_sub(r.blocks);
            if need <= view.free_blocks() {
                return None;
            }
        }
        Some(Steady::UNBOUNDED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::ranking::tests::view;
    use crate::vocab::KvPool;
    use crate::vocab::request::{KvLoc, Request, Slab};

    /// A decoding request holding `blocks` blocks of 16 tokens, `in_batch` or not.
    fn decoding(reqs: &mut Slab, id: u64, blocks: u32, in_batch: bool) -> Slot {
        let mut r = Request::new(id, 0, 16 * blocks, 100, 100);
        (r.kv_tokens, r.generated_tokens) = (16 * blocks, 1);
        (r.blocks, r.kv_loc, r.in_batch) = (blocks, KvLoc::Gpu, in_batch);
        reqs.insert(r)
    }

    /// pp > 1, a full pool: the oldest running request needs a block while the only younger one
    /// is in a micro-batch. It waits (the old code evicted it, and then again each time it came
    /// back: a livelock); once the younger one is back, that one is the victim.
    #[test]
    fn an_older_request_waits_for_a_younger_one_in_flight_instead_of_evicting_itself() {
        let mut reqs = Slab::default();
        let old = decoding(&mut reqs, 0, 1, false);
        let young = decoding(&mut reqs, 1, 3, true);
        let (mut kv, host) = (KvPool::new(4, 16), KvPool::new(0, 16));
        assert!(kv.try_alloc(4));
        let limits = view(&reqs, &kv, &host).limits;
        let mut p = VllmV1::new(resolve(&Params::default(), limits).unwrap());
        p.running = vec![old, young];
        let mut plan = Plan::default();
        p.schedule(&view(&reqs, &kv, &host), &mut plan);
        assert!(plan.preempt.is_empty(), "{:?}", plan.preempt);
        assert!(plan.run.is_empty());
        assert_eq!(p.running, vec![old, young]);
        reqs.get_mut(young).in_batch = false;
        p.schedule(&view(&reqs, &kv, &host), &mut plan);
        assert_eq!(plan.preempt, vec![(young, PreemptMode::Recompute)]);
        assert_eq!(plan.run.len(), 1);
        assert_eq!(plan.run[0].slot, old);
        assert_eq!(p.waiting.front(), Some(&young));
    }

    /// Steady only when the batch is the whole running list and the waiting head cannot be
    /// admitted: no budget left after the decodes, `running` full, or its first chunk's blocks
    /// do not fit.
    #[test]
    fn steady_only_while_nobody_can_be_admitted() {
        let mut reqs = Slab::default();
        let batch = vec![
            decoding(&mut reqs, 0, 2, false),
            decoding(&mut reqs, 1, 2, false),
        ];
        let waiting = reqs.insert(Request::new(2, 0, 64, 10, 10));
        let host = KvPool::new(0, 16);
        let pool = |used: u32| {
            let mut kv = KvPool::new(10, 16);
            assert!(kv.try_alloc(used));
            kv
        };
        let policy = |p: Params, kv: &KvPool| {
            let limits = view(&reqs, kv, &host).limits;
            let mut v1 = VllmV1::new(resolve(&p, limits).unwrap());
            v1.running = batch.clone();
            v1.waiting.push_back(waiting);
            v1
        };
        // 6 free blocks: the 64-token prompt (4 blocks) is admitted at the next boundary.
        let kv = pool(4);
        let p = policy(Params::default(), &kv);
        assert_eq!(p.steady(&batch, &view(&reqs, &kv, &host)), None);
        assert_eq!(p.steady(&batch[..1], &view(&reqs, &kv, &host)), None);
        // With a 16-token threshold its first chunk needs 1 block: 1 free block admits it.
        let kv = pool(9);
        let p = policy(Params::default(), &kv);
        assert!(p.steady(&batch, &view(&reqs, &kv, &host)).is_some());
        let threshold = Params {
            long_prefill_token_threshold: 16,
            ..Params::default()
        };
        let p = policy(threshold, &kv);
        assert_eq!(p.steady(&batch, &view(&reqs, &kv, &host)), None);
        // The decodes spend the budget, or `running` is full.
        let kv = pool(4);
        for full in [
            Params {
                max_num_batched_tokens: Some(2),
                ..Params::default()
            },
            Params {
                max_num_seqs: Some(2),
                ..Params::default()
            },
        ] {
            let p = policy(full, &kv);
            assert_eq!(
                p.steady(&batch, &view(&reqs, &kv, &host)),
                Some(Steady::UNBOUNDED)
            );
        }
    }

    #[test]
    fn defaults_follow_the_scenario_limits() {
        let limits = Limits {
            max_batch_size: 64,
            max_batch_tokens: 4096,
            max_context_tokens: 8192,
        };
        let r = resolve(&Params::default(), limits).unwrap();
        assert_eq!(
            (
                r.max_num_batched_tokens,
                r.max_num_seqs,
                r.long_prefill_token_threshold
            ),
            (4096, 64, 0)
        );
        let too_big = Params {
            max_num_batched_tokens: Some(8192),
            ..Params::default()
        };
        assert!(resolve(&too_big, limits).is_err());
    }
}
