//! `sarathi` — Sarathi-Serve's stall-free batching with chunked prefills (Agrawal et al., "Taming
//! Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve", OSDI'24, arXiv 2403.02310,
//! Algorithm 3; code: microsoft/sarathi-serve `sarathi/core/scheduler/sarathi_scheduler.py` and
//! `base_scheduler.py`; Vidur 0.0.26 `vidur/scheduler/replica_scheduler/sarathi_replica_scheduler.py`;
//! `shared/docs/chunked-prefill.md` §2).
//!
//! Every iteration shares one token budget τ = `chunk_size` between decodes and prefill chunks:
//! 1. Running requests in arrival order (oldest first). Each decoding one runs (1 token, no budget
//!    check), but only while at least one KV block is free: with none free, the latest-arrived
//!    running request not yet visited is preempted by recompute (to the head of the waiting
//!    queue) until one is; with nobody left to preempt, the request itself is (see below).
//! 2. Partially prefilled requests (FCFS) get chunk = min(remaining prefill, τ − tokens so far).
//! 3. Waiting requests FCFS, while the running set stays below `max_num_seqs`, the blocks of the
//!    **whole** prompt (plus tokens generated before a recompute) fit above the watermark, and
//!    the budget is not spent: chunk = min(remaining prefill, τ − tokens so far); the blocks of the
//!    whole prompt are reserved at admission (`RunItem::reserve_blocks`), so later chunks never
//!    allocate.
//!
//! A request emits its first token (or its next one after a recompute) at the end of the
//! iteration whose chunk completes its prefill. Chunks are greedy (the first is τ − #decodes,
//! the last the remainder); the dynamic chunking schedule of the reference code (off by default)
//! is not modelled.
//!
//! Differences from the reference code (Vidur's choices where they differ, §2.4):
//! - Recompute follows Vidur: a resumed request re-prefills prompt + generated tokens and its
//!   output length stays the trace's (the reference code's stop test lets it exceed it).
//! - The watermark is waived while nothing is running (as `vllm` does), and a decode that needs
//!   no new block is not preempted when nobody else can be: otherwise a request whose KV fills
//!   the whole pool would be preempted and re-admitted forever. With other requests running the
//!   reference rule holds (a decode with room in its last block still preempts when no block is
//!   free: §7 T4 (a)).
//! - With pipeline parallelism, requests still in a micro-batch are kept and skipped (as the
//!   reference code and Vidur do); Vidur's per-stage decode cap (`batch_size_cap / stages`) is
//!   not modelled.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `chunk_size` | 512, or the scenario's `max_batch_tokens` if smaller | token budget τ per iteration (decodes + chunks); ≤ `max_batch_tokens`, > `max_num_seqs` |
//! | `max_num_seqs` | 128, or the scenario's `max_batch_size` or `chunk_size − 1` if smaller | most running requests (holding KV); ≤ `max_batch_size` |
//! | `watermark_fraction` | 0.01 | admission keeps ⌊fraction × KV blocks⌋ blocks free after reserving the whole prompt |
//!
//! Swap timing (registry defaults for `[swap]`): as `vllm`'s (`reactive = "layerwise"`,
//! `kv_layout = "layer-major"`, the vLLM code Sarathi-Serve's engine derives from); this policy
//! preempts by recompute only, so they matter only where something else swaps.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::common::{insert_by_arrival, remove_slot};
use super::{
    FastForward, Limits, Plan, Policy, PolicyEntry, PolicyEnv, PreemptMode, ReplicaView, RunItem,
    Steady, parse_params,
};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub chunk_size: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub watermark_fraction: Option<f64>,
}

/// The parameters once defaults are resolved against the scenario's limits (for `config.json`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Resolved {
    pub chunk_size: u32,
    pub max_num_seqs: u32,
    pub watermark_fraction: f64,
}

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "sarathi",
    summary: "Sarathi-Serve: stall-free batching, decodes first, then prefill chunks within a token budget",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

/// Resolve `p` against the scenario's limits.
pub fn resolve(p: &Params, limits: Limits) -> Result<Resolved> {
    let err = |m: String| Err(SimError::config(format!("[policies.sarathi] {m}")));
    let chunk_size = p.chunk_size.unwrap_or(512.min(limits.max_batch_tokens));
    if chunk_size > limits.max_batch_tokens {
        return err(format!(
            "chunk_size = {chunk_size} exceeds the scenario's max_batch_tokens = {}",
            limits.max_batch_tokens
        ));
    }
    if chunk_size < 2 {
        return err(format!("chunk_size must be ≥ 2, got {chunk_size}"));
    }
    let max_num_seqs = p
        .max_num_seqs
        .unwrap_or(128.min(limits.max_batch_size).min(chunk_size - 1));
    if max_num_seqs == 0 || max_num_seqs > limits.max_batch_size {
        return err(format!(
            "max_num_seqs must be in 1..={} (the scenario's max_batch_size), got {max_num_seqs}",
            limits.max_batch_size
        ));
    }
    if chunk_size <= max_num_seqs {
        return err(format!(
            "chunk_size = {chunk_size} must exceed max_num_seqs = {max_num_seqs} (decodes are not budget-checked)"
        ));
    }
    let watermark_fraction = p.watermark_fraction.unwrap_or(0.01);
    if !(watermark_fraction.is_finite() && (0.0..1.0).contains(&watermark_fraction)) {
        return err(format!(
            "watermark_fraction must be in [0, 1), got {watermark_fraction}"
        ));
    }
    Ok(Resolved {
        chunk_size,
        max_num_seqs,
        watermark_fraction,
    })
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (params, _) = parse_params::<Params>("sarathi", table)?;
    let resolved = resolve(&params, env.limits)?;
    let json = serde_json::to_value(resolved).map_err(|e| SimError::config(e.to_string()))?;
    Ok((Box::new(Sarathi::new(resolved)), json))
}

pub struct Sarathi {
    p: Resolved,
    waiting: VecDeque<Slot>,
    /// Requests holding KV (admitted, not finished nor preempted), in arrival order.
    running: Vec<Slot>,
    /// Scratch lists, reused between iterations.
    queue: VecDeque<Slot>,
    kept: Vec<Slot>,
    partial: Vec<Slot>,
}

impl Sarathi {
    pub fn new(p: Resolved) -> Self {
        Sarathi {
            p,
            waiting: VecDeque::new(),
            running: Vec::new(),
            queue: VecDeque::new(),
            kept: Vec::new(),
            partial: Vec::new(),
        }
    }

    fn watermark_blocks(&self, view: &ReplicaView) -> u32 {
        (self.p.watermark_fraction * view.capacity_blocks() as f64).floor() as u32
    }

    /// Pass 1 of [`Policy::schedule`]: every decoding request, oldest first (no budget check);
    /// a decode needs one free block, else the latest-arrived request not yet visited is
    /// preempted by recompute (or, with none left, the decode itself if it needs a block).
    /// Partial prefills are set aside in `partial`. Returns the tokens scheduled.
    fn schedule_decodes(&mut self, view: &ReplicaView, plan: &mut Plan, free: &mut u32) -> u32 {
        let mut n: u32 = 0;
        while let Some(s) = self.queue.pop_front() {
            let r = view.req(s);
            if r.in_flight() {
                self.kept.push(s);
                continue;
            }
            if r.in_prefill() {
                self.partial.push(s);
                continue;
            }
            let need = view.extra_blocks_for_next(s);
            let mut runs = true;
            while *free == 0 {
                if let Some(v) = Self::pop_victim(&mut self.queue, view) {
                    plan.preempt.push((v, PreemptMode::Recompute));
                    *free += view.req(v).blocks;
                    self.waiting.push_front(v);
                } else {
                    if need > 0 {
                        plan.preempt.push((s, PreemptMode::Recompute));
                        *free += r.blocks;
                        self.waiting.push_front(s);
                        runs = false;
                    }
                    break;
                }
            }
            if runs {
                *free -= need;
                plan.run_chunk(s, 0);
                n += 1;
                self.kept.push(s);
            }
        }
        n
    }

    /// The latest-arrived request of `queue` (the unvisited running requests) that is not in a
    /// micro-batch, removed from it.
    fn pop_victim(queue: &mut VecDeque<Slot>, view: &ReplicaView) -> Option<Slot> {
        let i = queue.iter().rposition(|&v| !view.req(v).in_flight())?;
        queue.remove(i)
    }
}

impl Policy for Sarathi {
    fn name(&self) -> &'static str {
        "sarathi"
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
        let tau = self.p.chunk_size;
        let mut free = view.free_blocks();
        self.queue.clear();
        self.queue.extend(self.running.drain(..));
        self.kept.clear();
        self.partial.clear();
        let mut n = self.schedule_decodes(view, plan, &mut free);
        // 2. Partial prefills, FCFS (their whole prompt is reserved already).
        for i in 0..self.partial.len() {
            let s = self.partial[i];
            let c = view.req(s).prefill_left().min(tau.saturating_sub(n));
            if c > 0 {
                plan.run_chunk(s, c);
                n += c;
            }
            self.kept.push(s);
        }
        // 3. Waiting requests, FCFS; blocks for the whole prompt reserved at admission.
        let watermark = self.watermark_blocks(view);
        while let Some(&s) = self.waiting.front() {
            let r = view.req(s);
            let need = view.blocks_for_tokens(r.prefill_tokens() as u64);
            let keep_free = if self.kept.is_empty() { 0 } else { watermark };
            if free < need + keep_free || self.kept.len() >= self.p.max_num_seqs as usize {
                break;
            }
            let c = r.prefill_left().min(tau.saturating_sub(n));
            if c == 0 {
                break;
            }
            self.waiting.pop_front();
            plan.run.push(RunItem {
                slot: s,
                reserve_blocks: need,
                prefill_chunk_tokens: c,
            });
            n += c;
            free -= need;
            self.kept.push(s);
        }
        for i in 0..self.kept.len() {
            insert_by_arrival(view, &mut self.running, self.kept[i]);
        }
    }

    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        remove_slot(&mut self.running, s);
    }
}

impl FastForward for Sarathi {
    /// Steady when the decode-only `batch` is every running request (so there is no partial
    /// prefill to chunk: the budget always has room for one, as τ > `max_num_seqs`) and the
    /// waiting head cannot be admitted: the running set is full, or the whole prompt's blocks
    /// plus the watermark do not fit now (until an arrival or a completion, free blocks only
    /// shrink and the head stays the same). Pass 1 preempts while no block is free before a
    /// decode is visited: every repeat must leave a block free (then the pool never runs dry
    /// within a pass). The running order (by arrival) does not change, nor does the batch's.
    /// (A decode-only plan already admitted nobody at this boundary, so the two set checks hold
    /// whenever the engine asks; they are kept so the rule does not rest on that.)
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady> {
        if batch.len() != self.running.len() {
            return None;
        }
        if let Some(&s) = self.waiting.front()
            && self.running.len() < self.p.max_num_seqs as usize
        {
            let need = view.blocks_for_tokens(view.req(s).prefill_tokens() as u64);
            if view.free_blocks() >= need + self.watermark_blocks(view) {
                return None;
            }
        }
        Some(Steady {
            min_free_blocks: 1,
            ..Steady::UNBOUNDED
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::ranking::tests::view;
    use crate::vocab::KvPool;
    use crate::vocab::request::{KvLoc, Request, Slab};

    /// A decoding request holding `blocks` blocks of 16 tokens.
    fn decoding(reqs: &mut Slab, id: u64, blocks: u32) -> Slot {
        let mut r = Request::new(id, 0, 16 * blocks, 100, 100);
        (r.kv_tokens, r.generated_tokens) = (16 * blocks, 1);
        (r.blocks, r.kv_loc) = (blocks, KvLoc::Gpu);
        reqs.insert(r)
    }

    /// Two running decodes, a waiting 64-token prompt (4 blocks), a pool of 10 blocks.
    fn setup(max_num_seqs: Option<u32>, used_blocks: u32) -> (Slab, KvPool, Sarathi, Vec<Slot>) {
        let mut reqs = Slab::default();
        let batch = vec![decoding(&mut reqs, 0, 2), decoding(&mut reqs, 1, 2)];
        let waiting = reqs.insert(Request::new(2, 0, 64, 10, 10));
        let mut kv = KvPool::new(10, 16);
        assert!(kv.try_alloc(used_blocks));
        let host = KvPool::new(0, 16);
        let params = Params {
            max_num_seqs,
            ..Params::default()
        };
        let mut p = Sarathi::new(resolve(&params, view(&reqs, &kv, &host).limits).unwrap());
        p.running = batch.clone();
        p.waiting.push_back(waiting);
        (reqs, kv, p, batch)
    }

    /// Steady only when the waiting prompt cannot be admitted (running set full, or its blocks do
    /// not fit), the batch is every running request, and each repeat keeps a block free (pass 1
    /// preempts when none is).
    #[test]
    fn steady_only_while_nobody_can_be_admitted() {
        let host = KvPool::new(0, 16);
        // 6 free blocks ≥ the prompt's 4: admitted at the next boundary.
        let (reqs, kv, p, batch) = setup(None, 4);
        assert_eq!(p.steady(&batch, &view(&reqs, &kv, &host)), None);
        // The running set is full (max_num_seqs = 2).
        let (reqs, kv, p, batch) = setup(Some(2), 4);
        let steady = p.steady(&batch, &view(&reqs, &kv, &host)).unwrap();
        assert_eq!(steady.min_free_blocks, 1);
        // 3 free blocks < 4.
        let (reqs, kv, p, batch) = setup(None, 7);
        assert!(p.steady(&batch, &view(&reqs, &kv, &host)).is_some());
        // A running request left out of the batch.
        let (reqs, kv, p, batch) = setup(Some(2), 4);
        assert_eq!(p.steady(&batch[..1], &view(&reqs, &kv, &host)), None);
    }
}
