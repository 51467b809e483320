//! Pieces shared by several policies.

use std::collections::VecDeque;

pub use super::chunking::{chunk_budget, chunk_step, record_chunking};
use super::swap_passes::{SwapInRoom, swap_in_while_room, swap_out_while_short};
use super::{Plan, PreemptMode, PreemptionChoice, ReplicaView};
use crate::cost::{BatchShape, CostModel};
use crate::vocab::request::{KvLoc, Request, Slot};

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
/// (swap-outs started here not counted: they free later). With `defer_new`, new requests (no
/// token, no KV: [`Request::is_new`]) are passed over (FastServe defers prefills when host swap
/// space runs low). With a `chunk_budget` ([`chunk_budget`]) decodes and prefill chunks share that
/// many tokens: a prefill that does not fit whole runs the chunk that does, and the batch ends when
/// the budget is spent.
pub fn form_priority_batch(
    view: &ReplicaView,
    order: &[Slot],
    misfit: Misfit,
    preemption: PreemptionChoice,
    defer_new: bool,
    chunk_budget: Option<u32>,
    plan: &mut Plan,
) -> u32 {
    form_priority_batch_from(
        view,
        order.iter().copied(),
        misfit,
        preemption,
        defer_new,
        chunk_budget,
        plan,
    )
}

/// [`form_priority_batch`] over the ranking as a double-ended iterator (highest priority first):
/// candidates are taken from the front and eviction victims from the back, so the work is
/// proportional to the requests looked at, not to the length of the ranking.
pub fn form_priority_batch_from(
    view: &ReplicaView,
    mut order: impl DoubleEndedIterator<Item = Slot>,
    misfit: Misfit,
    preemption: PreemptionChoice,
    defer_new: bool,
    chunk_budget: Option<u32>,
    plan: &mut Plan,
) -> u32 {
    let limits = view.limits;
    let mut tokens_left = chunk_budget.unwrap_or(0);
    let mut free = view.free_blocks();
    let mut prefill_tokens: u64 = 0;
    let mut has_prefill = false;
    // Blocks of swap-outs started here: free when their copies complete, not for this batch.
    let mut freeing: u32 = 0;
    // `order` yields the candidates not yet looked at and not yet considered for eviction.
    loop {
        if plan.run.len() >= limits.max_batch_size as usize {
            break;
        }
        let Some(s) = order.next() else {
            break;
        };
        let r = view.req(s);
        if !r.runnable() || (defer_new && r.is_new()) {
            // Its KV is being copied, or new requests are deferred: not this iteration.
            continue;
        }
        let step = match chunk_budget {
            // Every candidate needs at least one token: a spent budget ends the batch.
            Some(_) => match chunk_step(r, tokens_left) {
                Some(step) => step,
                None => break,
            },
            None if r.needs_prefill()
                && has_prefill
                && prefill_tokens + r.prefill_tokens() as u64 > limits.max_batch_tokens as u64 =>
            {
                match misfit {
                    Misfit::Stop => break,
                    Misfit::Skip => continue,
                }
            }
            None => (0, 0),
        };
        let need = view.extra_blocks_for_chunk(s, step.0);
        evict_lower(
            view,
            &mut order,
            preemption,
            need,
            (&mut free, &mut freeing),
            plan,
        );
        if need > free {
            match misfit {
                Misfit::Stop => break,
                Misfit::Skip => continue,
            }
        }
        free -= need;
        tokens_left -= step.1;
        if chunk_budget.is_none() && r.needs_prefill() {
            has_prefill = true;
            prefill_tokens += r.prefill_tokens() as u64;
        }
        plan.run_chunk(s, step.0);
    }
    free
}

/// Evict resident requests from the back of `order` (lowest priority first) until `need` blocks
/// are free or freeing; `room` = (free, freeing by swap-outs started here).
fn evict_lower(
    view: &ReplicaView,
    order: &mut impl DoubleEndedIterator<Item = Slot>,
    preemption: PreemptionChoice,
    need: u32,
    room: (&mut u32, &mut u32),
    plan: &mut Plan,
) {
    let (free, freeing) = room;
    while need > *free + *freeing {
        let Some(v) = order.next_back() else {
            break;
        };
        let vr = view.req(v);
        if vr.blocks > 0 && vr.kv_loc == KvLoc::Gpu && !vr.in_flight() {
            let mode = preemption.mode_for(view, v);
            plan.preempt.push((v, mode));
            if mode == PreemptMode::Swap {
                // The blocks free when the copy completes: not usable for this batch.
                *freeing += vr.blocks;
            } else {
                *free += vr.blocks;
            }
        }
    }
}

/// [`remaining_time_ns`] in seconds: the key SRPT and ALISE rank by. Equal nanosecond counts give
/// equal keys (one conversion of one integer), so ties stay ties and go by arrival.
pub fn remaining_key_s(cost: &dyn CostModel, r: &Request) -> f64 {
    crate::vocab::time::ns_to_s(remaining_time_ns(cost, r))
}

/// The rest of `r`'s prefill as one batch: the whole (re-)prefill, or what a chunked prefill
/// under way has left, attending to the chunks already in the KV cache.
fn rest_of_prefill(r: &Request) -> BatchShape {
    let mut b = BatchShape::default();
    b.add_prefill_chunk(r.prefill_left(), r.kv_tokens);
    b
}

/// Estimated remaining execution time of `r` on its own (batch size 1) in integer nanoseconds:
/// the rest of its (re-)prefill if it is in prefill, plus its remaining predicted decode iterations at its
/// current context length, each iteration rounded up to whole nanoseconds as the engine times
/// it. Summed in integers, so that requests of equal remaining size get *exactly* equal
/// estimates (in floating point `c + 6·c < 7·c` for c = 0.01 s, which ordered such ties either
/// way instead of by arrival).
pub fn remaining_time_ns(cost: &dyn CostModel, r: &Request) -> u64 {
    let ns = |b: &BatchShape| {
        cost.iteration_s(b)
            .ok()
            .and_then(crate::vocab::time::duration_ns_ceil)
            .unwrap_or(0)
    };
    let mut total: u64 = 0;
    let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
    if r.in_prefill() {
        total = ns(&rest_of_prefill(r));
        decodes = decodes.saturating_sub(1);
    }
    if decodes > 0 {
        let mut b = BatchShape::default();
        b.add_decode(r.input_tokens + r.generated_tokens.max(1));
        total = total.saturating_add((decodes as u64).saturating_mul(ns(&b)));
    }
    total
}

/// Estimated remaining execution time of `r` on its own (batch size 1), from the cost model and
/// the request's *predicted* output length: the rest of its (re-)prefill if it is in prefill, plus its
/// remaining decode iterations at its current context length. Floating-point form (the
/// `least-work` router's estimate); the policies rank by [`remaining_time_ns`].
pub fn remaining_time_s(cost: &dyn CostModel, r: &Request) -> f64 {
    let mut total = 0.0;
    let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
    if r.in_prefill() {
        total += cost.iteration_s(&rest_of_prefill(r)).unwrap_or(0.0);
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

    /// The requests in the order of the last ranking (highest priority first).
    pub fn order(&self) -> &[Slot] {
        &self.order
    }

    /// The unfinished requests, in no particular order.
    pub fn active(&self) -> &[Slot] {
        &self.active
    }

    /// The key request `s` had at the last ranking.
    pub fn last_key(&self, s: Slot) -> f64 {
        self.last_key.get(s as usize).copied().unwrap_or(0.0)
    }

    /// Rank every unfinished request by `key` (smaller first, ties by arrival) and record each
    /// one's key; `self.order` holds the ranking.
    fn rank(&mut self, view: &ReplicaView, key: impl Fn(Slot) -> f64) {
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
    }

    /// Rank every unfinished request by `key` and fill `plan` in that order, skipping misfits and
    /// evicting lower-ranked resident requests by `preemption` when KV blocks run out. Returns
    /// the GPU blocks left free (see [`form_priority_batch`]).
    pub fn rank_and_form(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        preemption: PreemptionChoice,
        chunk_budget: Option<u32>,
        key: impl Fn(Slot) -> f64,
    ) -> u32 {
        self.rank(view, key);
        form_priority_batch(
            view,
            &self.order,
            Misfit::Skip,
            preemption,
            false,
            chunk_budget,
            plan,
        )
    }
}

/// A key of [`KeyedRanking`]: ordered like [`Ranking`] sorts (`f64::total_cmp`, then trace id).
#[derive(Debug, Clone, Copy)]
pub struct RankKey(f64, u64, Slot);

impl RankKey {
    /// The request this key ranks.
    pub fn slot(&self) -> Slot {
        self.2
    }
}

impl PartialEq for RankKey {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for RankKey {}
impl PartialOrd for RankKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for RankKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&o.0)
            .then(self.1.cmp(&o.1))
            .then(self.2.cmp(&o.2))
    }
}

/// [`Ranking`] for a key that is a function of the request's own state only (SRPT's remaining
/// time), kept in an ordered set: a key is recomputed only when its request may have changed
/// (it ran, was preempted, arrived), so a boundary costs O((batch + looked-at) · log n) instead of
/// re-keying and sorting every unfinished request. Same order, same keys, same plans.
#[derive(Debug, Default)]
pub struct KeyedRanking {
    set: std::collections::BTreeSet<RankKey>,
    /// Key in the set of each slot (valid while the slot is active).
    key: Vec<f64>,
    /// Trace id of each slot's request.
    id: Vec<u64>,
    active: Vec<bool>,
    /// Slots whose state may have changed since their key was computed.
    dirty: Vec<Slot>,
    /// Scratch for the dirty slots kept for the next boundary (in a micro-batch in flight).
    keep: Vec<Slot>,
}

impl KeyedRanking {
    fn insert(&mut self, view: &ReplicaView, s: Slot, k: f64) {
        let i = s as usize;
        if self.key.len() <= i {
            self.key.resize(i + 1, 0.0);
            self.id.resize(i + 1, 0);
            self.active.resize(i + 1, false);
        }
        self.key[i] = k;
        self.id[i] = view.req(s).id;
        self.active[i] = true;
        self.set.insert(RankKey(k, self.id[i], s));
    }

    /// Request `s` arrived with key `k`.
    pub fn add(&mut self, view: &ReplicaView, s: Slot, k: f64) {
        self.insert(view, s, k);
    }

    /// Request `s` finished.
    pub fn remove(&mut self, s: Slot) {
        let i = s as usize;
        if self.active.get(i).copied().unwrap_or(false) {
            self.set.remove(&RankKey(self.key[i], self.id[i], s));
            self.active[i] = false;
        }
    }

    /// The key of request `s` may have changed for a reason other than running or being
    /// preempted: re-key it at the next boundary.
    pub fn touch(&mut self, s: Slot) {
        self.dirty.push(s);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The key request `s` had at the last ranking.
    pub fn last_key(&self, s: Slot) -> f64 {
        self.key.get(s as usize).copied().unwrap_or(0.0)
    }

    /// The unfinished requests, highest priority first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Slot> + '_ {
        self.set.iter().map(|k| k.2)
    }

    /// The place of active request `s` in the ranking (smaller: ranked ahead).
    pub fn rank_key(&self, s: Slot) -> RankKey {
        RankKey(self.key[s as usize], self.id[s as usize], s)
    }

    /// Re-key the requests that may have changed (those of the last plans).
    fn refresh(&mut self, view: &ReplicaView, key: &impl Fn(Slot) -> f64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.keep.clear();
        for &s in &dirty {
            let i = s as usize;
            if !self.active.get(i).copied().unwrap_or(false) {
                continue;
            }
            let id = self.id[i];
            self.set.remove(&RankKey(self.key[i], id, s));
            let k = key(s);
            self.key[i] = k;
            self.set.insert(RankKey(k, id, s));
            if view.req(s).in_flight() {
                // Its micro-batch is still in the pipeline: it changes when that batch ends.
                self.keep.push(s);
            }
        }
        dirty.clear();
        dirty.extend_from_slice(&self.keep);
        self.dirty = dirty;
    }

    /// [`Ranking::rank_and_form`], re-keying only the requests that may have changed.
    pub fn rank_and_form(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        preemption: PreemptionChoice,
        chunk_budget: Option<u32>,
        key: impl Fn(Slot) -> f64,
    ) -> u32 {
        self.refresh(view, &key);
        let free = form_priority_batch_from(
            view,
            self.set.iter().map(|k| k.2),
            Misfit::Skip,
            preemption,
            false,
            chunk_budget,
            plan,
        );
        self.dirty.extend(plan.run.iter().map(|r| r.slot));
        self.dirty.extend(plan.preempt.iter().map(|p| p.0));
        free
    }

    /// Fast-forward: when the batch holds every unfinished request, the ranking can reorder it but
    /// not change it (the engine checks that its blocks fit).
    pub fn steady(&self, batch: &[Slot]) -> Option<super::Steady> {
        (batch.len() == self.set.len()).then_some(super::Steady::UNBOUNDED)
    }

    /// After a fast-forward: rank as the last repeated boundary did (the view holds the state at
    /// that boundary) and put the batch (every unfinished request) in that order.
    pub fn rerank_batch(
        &mut self,
        view: &ReplicaView,
        batch: &mut [Slot],
        key: impl Fn(Slot) -> f64,
    ) {
        self.dirty.extend_from_slice(batch);
        self.refresh(view, &key);
        for (b, k) in batch.iter_mut().zip(self.set.iter()) {
            *b = k.2;
        }
        // They run again: re-key them at the next boundary.
        self.dirty.extend_from_slice(batch);
    }
}

/// Memory target and swap-in window of [`score_offload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadTarget {
    /// GPU blocks left free by the formed batch ([`form_priority_batch`]'s result).
    pub free_after: u32,
    /// GPU blocks to keep free.
    pub reserve: u32,
    /// Swap-in candidates: the first `window` requests of `order` (`usize::MAX`: all).
    pub window: usize,
}

/// Proactive offloading ordered by a per-request score (FastServe paper: ENST; ALISE: EWT),
/// after the batch of `plan` is formed from `order` (highest priority first; `scores[i]` belongs
/// to `order[i]`, smaller = needed sooner), with the limits of `target` ([`OffloadTarget`]).
///
/// - Memory target: keep `reserve` GPU blocks free plus the blocks of the highest-priority
///   request left out of the batch that has no KV on the GPU (as FastServe's code does).
/// - Swap-out: while short of the target, GPU-resident requests ranked below that request and not
///   in the plan are swapped out, **largest score first** (host room permitting).
/// - Swap-in: only at a boundary with no swap-out (no ping-pong), host-resident requests not in
///   the plan are swapped in, **smallest score first**, at most `max_batch_size` per boundary,
///   among the first `window` requests of `order` only (`usize::MAX`: all of them),
///   while the GPU keeps `reserve` free blocks plus the left-out request's blocks; the first one
///   that does not fit stops the pass (memory is kept for it).
///
/// `taken` is a per-slot scratch buffer (all `false` on entry and on return).
pub fn score_offload(
    view: &ReplicaView,
    plan: &mut Plan,
    order: &[Slot],
    scores: &[f64],
    target: OffloadTarget,
    taken: &mut Vec<bool>,
) {
    debug_assert_eq!(order.len(), scores.len());
    let OffloadTarget {
        free_after,
        reserve,
        window,
    } = target;
    let host_free = mark_plan(view, plan, taken);
    let blocked = order.iter().position(|&s| {
        !taken[s as usize] && matches!(view.req(s).kv_loc, KvLoc::None | KvLoc::Host)
    });
    let blocked_need = blocked.map_or(0, |i| view.extra_blocks_for_next(order[i])) as i64;
    let deficit = reserve as i64 + blocked_need - free_after as i64;
    let floor = blocked.map_or(0, |i| i + 1);
    let mut swapped_out = false;
    if deficit > 0 {
        let cand = swap_out_candidates(view, order, scores, floor, taken);
        let cand = cand.into_iter().map(|i| order[i]);
        swapped_out = swap_out_while_short(view, plan, taken, cand, deficit, host_free);
    }
    if !swapped_out {
        let cand = swap_in_candidates(view, order, scores, window, taken);
        let room = SwapInRoom {
            free_after,
            reserve,
            blocked: blocked.map(|i| order[i]),
            blocked_need,
        };
        swap_in_while_room(view, plan, cand.into_iter().map(|i| order[i]), room);
    }
    unmark_plan(plan, taken);
}

/// Undo [`mark_plan`]'s marks.
pub(super) fn unmark_plan(plan: &Plan, taken: &mut [bool]) {
    for item in &plan.run {
        taken[item.slot as usize] = false;
    }
    for &(s, _) in &plan.preempt {
        taken[s as usize] = false;
    }
}

/// Candidates ranked by (score, position in `order`); `a`, `b` are positions.
fn by_score(scores: &[f64], a: usize, b: usize) -> std::cmp::Ordering {
    scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
}

/// Mark the plan's members and preempted requests in `taken`; the host blocks left free once
/// the plan's swap-outs are copied.
pub(super) fn mark_plan(view: &ReplicaView, plan: &Plan, taken: &mut Vec<bool>) -> i64 {
    if taken.len() < view.slot_capacity() {
        taken.resize(view.slot_capacity(), false);
    }
    let mut host_free = view.host_free_blocks() as i64;
    for item in &plan.run {
        taken[item.slot as usize] = true;
    }
    for &(s, mode) in &plan.preempt {
        taken[s as usize] = true;
        let r = view.req(s);
        if mode == PreemptMode::Swap && r.kv_loc == KvLoc::Gpu {
            host_free -= view.host_blocks_for(r.blocks) as i64;
        }
    }
    host_free
}

/// Swap-out candidates: GPU-resident requests from `floor` on, not taken, largest score first.
fn swap_out_candidates(
    view: &ReplicaView,
    order: &[Slot],
    scores: &[f64],
    floor: usize,
    taken: &[bool],
) -> Vec<usize> {
    // A request in a micro-batch still in the pipeline cannot be swapped out.
    let mut out: Vec<usize> = (floor..order.len())
        .filter(|&i| {
            let r = view.req(order[i]);
            !taken[order[i] as usize] && r.kv_loc == KvLoc::Gpu && !r.in_flight()
        })
        .collect();
    out.sort_by(|a, b| by_score(scores, *b, *a));
    out
}

/// Swap-in candidates: host-resident requests among the first `window` of `order`, not taken,
/// smallest score first.
fn swap_in_candidates(
    view: &ReplicaView,
    order: &[Slot],
    scores: &[f64],
    window: usize,
    taken: &[bool],
) -> Vec<usize> {
    let mut cand: Vec<usize> = (0..order.len().min(window))
        .filter(|&i| !taken[order[i] as usize] && view.req(order[i]).kv_loc == KvLoc::Host)
        .collect();
    cand.sort_by(|a, b| by_score(scores, *a, *b));
    cand
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::policy::Limits;
    use crate::swap::KvOffload;
    use crate::vocab::KvPool;
    use crate::vocab::request::{Request, Slab};

    fn view<'a>(reqs: &'a Slab, kv: &'a KvPool, host: &'a KvPool) -> ReplicaView<'a> {
        ReplicaView {
            reqs,
            kv,
            host,
            offload: KvOffload::default(),
            now_ns: 0,
            limits: Limits {
                max_batch_size: 16,
                max_batch_tokens: 2048,
                max_context_tokens: 4096,
            },
        }
    }

    /// With 5000 waiting requests (keys with many ties), [`KeyedRanking`] forms the same plans and
    /// keeps the same keys as the re-sorting [`Ranking`], boundary after boundary as batches
    /// finish, while evaluating the key only for the last plan's requests: the work per boundary
    /// does not grow with the queue.
    #[test]
    fn keyed_ranking_matches_ranking_and_rekeys_only_the_last_plan() {
        let n = 5000u32;
        let mut reqs = Slab::default();
        for i in 0..n as u64 {
            let p = 1 + (i * 7919 % 97) as u32;
            reqs.insert(Request::new(i, 0, 10, p, p));
        }
        let (kv, host) = (KvPool::new(100_000, 16), KvPool::new(0, 16));
        let mut reference = Ranking::default();
        let mut keyed = KeyedRanking::default();
        let key = |v: &ReplicaView, s: Slot| v.req(s).predicted_output_tokens as f64;
        {
            let v = view(&reqs, &kv, &host);
            for s in 0..n {
                reference.add(s);
                keyed.add(&v, s, key(&v, s));
            }
        }
        let mut last = 0usize;
        for boundary in 0..50 {
            let v = view(&reqs, &kv, &host);
            let (mut want, mut got) = (Plan::default(), Plan::default());
            reference.rank_and_form(&v, &mut want, PreemptionChoice::Recompute, None, |s| {
                key(&v, s)
            });
            let calls = Cell::new(0usize);
            keyed.rank_and_form(&v, &mut got, PreemptionChoice::Recompute, None, |s| {
                calls.set(calls.get() + 1);
                key(&v, s)
            });
            assert_eq!(got.run, want.run, "boundary {boundary}");
            assert_eq!(got.run.len(), 16);
            assert!(
                calls.get() <= last,
                "boundary {boundary}: {} keys",
                calls.get()
            );
            for s in 0..n {
                if reqs.contains(s) {
                    assert_eq!(keyed.last_key(s), reference.last_key(s));
                }
            }
            // Every other boundary the batch finishes; otherwise it stays (and is re-keyed).
            if boundary % 2 == 1 {
                for item in &got.run {
                    reference.remove(item.slot);
                    keyed.remove(item.slot);
                    reqs.remove(item.slot);
                }
            }
            last = got.run.len();
        }
        assert_eq!(keyed.len(), reference.active().len());
    }
}
