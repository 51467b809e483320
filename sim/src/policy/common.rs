//! Pieces shared by several policies.

use std::collections::VecDeque;

use super::{Plan, PreemptMode, PreemptionChoice, ReplicaView};
use crate::cost::{BatchShape, CostModel};
use crate::engine::request::{KvLoc, Request, Slot};

/// vLLM's decode-memory rule: walk `running` from highest priority (front) to lowest; while the
/// request at hand cannot get the blocks it needs, preempt (by recompute) the lowest-priority
/// running request — possibly itself — and put it at the front of `waiting`. Returns the blocks
/// left free after serving the survivors. `running` keeps only the survivors.
///
/// (vLLM v0 `scheduler.py _schedule`: `victim = self.running.pop()`, `waiting.appendleft`.)
pub fn make_room_for_decodes(
    view: &ReplicaView,
    running: &mut Vec<Slot>,
    waiting: &mut VecDeque<Slot>,
    plan: &mut Plan,
) -> u32 {
    let mut free = view.free_blocks();
    let mut i = 0;
    while i < running.len() {
        let s = running[i];
        // A request in a micro-batch still in the pipeline neither runs nor can be preempted.
        if view.req(s).in_flight() {
            i += 1;
            continue;
        }
        let need = view.extra_blocks_for_next(s);
        if need <= free {
            free -= need;
            i += 1;
            continue;
        }
        // The lowest-priority request not in flight (the request at hand is one).
        let v = running
            .iter()
            .rposition(|&x| !view.req(x).in_flight())
            .expect("the request at hand is not in flight");
        let victim = running.remove(v);
        free += view.req(victim).blocks;
        plan.preempt.push((victim, PreemptMode::Recompute));
        waiting.push_front(victim);
        // If the victim was the request at hand, the loop ends or moves on to the next one.
    }
    free
}

/// Run every request of `running` that is not in an in-flight micro-batch.
pub fn run_all_not_in_flight(view: &ReplicaView, running: &[Slot], plan: &mut Plan) {
    for &s in running {
        if !view.req(s).in_flight() {
            plan.run_on_demand(s);
        }
    }
}

/// Insert `s` into `list` (kept sorted by trace id, i.e. arrival order).
pub fn insert_by_arrival(view: &ReplicaView, list: &mut Vec<Slot>, s: Slot) {
    let id = view.req(s).id;
    let pos = list.partition_point(|&x| view.req(x).id < id);
    list.insert(pos, s);
}

/// Remove `s` from `list` if present.
pub fn remove_slot(list: &mut Vec<Slot>, s: Slot) -> bool {
    if let Some(p) = list.iter().position(|&x| x == s) {
        list.remove(p);
        true
    } else {
        false
    }
}

/// What to do with a candidate that does not fit (batch token budget or KV blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    /// Stop forming the batch (FastServe's code: no back-filling).
    Stop,
    /// Skip it and try lower-priority candidates.
    Skip,
}

/// Form a batch from `order` (every unfinished request of the replica, highest priority first).
///
/// Candidates join while the batch has room. A candidate that needs KV blocks that are not free
/// may take them from resident requests of *lower* priority, which are preempted by recompute
/// (lowest priority first). Candidates past the lowest one already considered for eviction are
/// not scheduled this iteration. Returns the GPU blocks left free once the batch has its blocks
/// (swap-outs started here not counted: they free later). With `defer_new`, requests that have not
/// started are passed over (FastServe defers prefills when host swap space runs low).
pub fn form_priority_batch(
    view: &ReplicaView,
    order: &[Slot],
    misfit: Misfit,
    preemption: PreemptionChoice,
    defer_new: bool,
    plan: &mut Plan,
) -> u32 {
    let limits = view.limits;
    let mut free = view.free_blocks();
    let mut prefill_tokens: u64 = 0;
    let mut has_prefill = false;
    let mut evict_from = order.len();
    // Blocks of swap-outs started here: free when their copies complete, not for this batch.
    let mut freeing: u32 = 0;
    let mut i = 0;
    while i < order.len() && i < evict_from {
        if plan.run.len() >= limits.max_batch_size as usize {
            break;
        }
        let s = order[i];
        let r = view.req(s);
        if !r.runnable() || (defer_new && !r.started()) {
            // Its KV is being copied, or new requests are deferred: not this iteration.
            i += 1;
            continue;
        }
        if r.needs_prefill() {
            let t = r.prefill_tokens() as u64;
            if has_prefill && prefill_tokens + t > limits.max_batch_tokens as u64 {
                match misfit {
                    Misfit::Stop => break,
                    Misfit::Skip => {
                        i += 1;
                        continue;
                    }
                }
            }
        }
        let need = view.extra_blocks_for_next(s);
        while need > free + freeing && evict_from > i + 1 {
            evict_from -= 1;
            let v = order[evict_from];
            let vr = view.req(v);
            if vr.blocks > 0 && vr.kv_loc == KvLoc::Gpu && !vr.in_flight() {
                let mode = preemption.mode_for(view, v);
                if mode == PreemptMode::Swap {
                    // The blocks free when the copy completes: not usable for this batch.
                    plan.preempt.push((v, mode));
                    freeing += vr.blocks;
                } else {
                    plan.preempt.push((v, mode));
                    free += vr.blocks;
                }
            }
        }
        if need > free {
            match misfit {
                Misfit::Stop => break,
                Misfit::Skip => {
                    i += 1;
                    continue;
                }
            }
        }
        free -= need;
        if r.needs_prefill() {
            has_prefill = true;
            prefill_tokens += r.prefill_tokens() as u64;
        }
        plan.run_on_demand(s);
        i += 1;
    }
    free
}

/// Estimated remaining execution time of `r` on its own (batch size 1), from the cost model and
/// the request's *predicted* output length: its (re-)prefill if no KV is resident, plus its
/// remaining decode iterations at its current context length.
pub fn remaining_time_s(cost: &dyn CostModel, r: &Request) -> f64 {
    let mut total = 0.0;
    let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
    if r.needs_prefill() {
        let mut b = BatchShape::default();
        b.add_prefill(r.prefill_tokens());
        total += cost.iteration_s(&b).unwrap_or(0.0);
        decodes = decodes.saturating_sub(1);
    }
    if decodes > 0 {
        let mut b = BatchShape::default();
        b.add_decode(r.input_tokens + r.generated_tokens.max(1));
        total += decodes as f64 * cost.iteration_s(&b).unwrap_or(0.0);
    }
    total
}

/// The unfinished requests of a ranking policy (SRPT, ALISE, LTR): re-ranked at every boundary by a
/// key (smaller first, ties by arrival), with the last key kept for the per-request output.
#[derive(Debug, Default)]
pub struct Ranking {
    active: Vec<Slot>,
    keys: Vec<(f64, u64, Slot)>,
    order: Vec<Slot>,
    last_key: Vec<f64>,
}

impl Ranking {
    pub fn add(&mut self, s: Slot) {
        self.active.push(s);
    }

    pub fn remove(&mut self, s: Slot) {
        if let Some(i) = self.active.iter().position(|&x| x == s) {
            self.active.swap_remove(i);
        }
    }

    /// The unfinished requests, in no particular order.
    pub fn active(&self) -> &[Slot] {
        &self.active
    }

    /// The key request `s` had at the last ranking.
    pub fn last_key(&self, s: Slot) -> f64 {
        self.last_key.get(s as usize).copied().unwrap_or(0.0)
    }

    /// Rank every unfinished request by `key` and fill `plan` in that order, skipping misfits and
    /// evicting lower-ranked resident requests by `preemption` when KV blocks run out.
    pub fn rank_and_form(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        preemption: PreemptionChoice,
        key: impl Fn(Slot) -> f64,
    ) {
        self.keys.clear();
        self.keys
            .extend(self.active.iter().map(|&s| (key(s), view.req(s).id, s)));
        self.keys
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.order.clear();
        self.order.extend(self.keys.iter().map(|k| k.2));
        if self.last_key.len() < view.slot_capacity() {
            self.last_key.resize(view.slot_capacity(), 0.0);
        }
        for &(k, _, s) in &self.keys {
            self.last_key[s as usize] = k;
        }
        form_priority_batch(view, &self.order, Misfit::Skip, preemption, false, plan);
    }
}
