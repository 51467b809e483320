//! Pieces shared by several policies.

use std::collections::VecDeque;

pub use super::chunking::{chunk_budget, chunk_step, record_chunking};
use super::plain_index::NoOps;
#[cfg(test)]
pub use super::ranking::Ranking;
pub use super::ranking::{KeyedRanking, RankKey};
use super::swap_passes::{SwapInRoom, swap_in_while_room, swap_out_while_short};
use super::{Plan, PreemptMode, PreemptionChoice, ReplicaView, RunItem};
use crate::cost::{BatchShape, CostModel};
use crate::vocab::request::{KvLoc, Request, Slot};

/// vLLM's decode-memory rule: walk `running` from highest priority (front) to lowest; while the
/// request at hand cannot get the blocks it needs, preempt (by recompute) the lowest-priority
/// running request — possibly itself — and put it at the front of `waiting`. Returns the blocks
/// left free after serving the survivors. `running` keeps only the survivors.
///
/// Only the first `max_batch_size` survivors out of the pipeline are served (those that
/// [`run_all_not_in_flight`] runs): with pipeline parallelism the requests of several
/// micro-batches may be back at once, more than one micro-batch holds; the rest stay admitted,
/// need no block this iteration, and run in a later micro-batch.
///
/// (vLLM v0 `scheduler.py _schedule`: `victim = self.running.pop()`, `waiting.appendleft`.)
pub fn make_room_for_decodes(
    view: &ReplicaView,
    running: &mut Vec<Slot>,
    waiting: &mut VecDeque<Slot>,
    plan: &mut Plan,
) -> u32 {
    let cap = view.limits.max_batch_size as usize;
    let mut free = view.free_blocks();
    let mut served = 0;
    let mut i = 0;
    while i < running.len() && served < cap {
        let s = running[i];
        // A request in a micro-batch still in the pipeline neither runs nor can be preempted.
        if view.req(s).in_flight() {
            i += 1;
            continue;
        }
        let need = view.extra_blocks_for_next(s);
        if need <= free {
            free -= need;
            served += 1;
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

/// Run the requests of `running` that are not in an in-flight micro-batch, in order, at most
/// `max_batch_size` of them (with pipeline parallelism more may be out of the pipeline at once:
/// the rest run in a later micro-batch).
pub fn run_all_not_in_flight(view: &ReplicaView, running: &[Slot], plan: &mut Plan) {
    let cap = view.limits.max_batch_size as usize;
    if view.none_in_flight() {
        // The first `cap`, without reading any request.
        let first = &running[..running.len().min(cap)];
        plan.run
            .extend(first.iter().map(|&s| RunItem::on_demand(s)));
        return;
    }
    let out_of_pipeline = running.iter().filter(|&&s| !view.req(s).in_flight());
    for &s in out_of_pipeline.take(cap) {
        plan.run_on_demand(s);
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
#[cfg(test)]
pub fn form_priority_batch(
    view: &ReplicaView,
    order: &[Slot],
    misfit: Misfit,
    preemption: PreemptionChoice,
    defer_new: bool,
    chunk_budget: Option<u32>,
    plan: &mut Plan,
) -> u32 {
    let mut window = SliceWindow {
        order,
        front: 0,
        back: order.len(),
    };
    form_priority_batch_from(
        view,
        &mut window,
        misfit,
        preemption,
        defer_new,
        chunk_budget,
        None,
        plan,
    )
}

/// The candidates a batch formation has left: the ranking (highest priority first) between the
/// last candidate taken from the front and the last request considered for eviction from the back.
pub(super) trait Window {
    /// The next candidate from the front; `None` once the window is empty.
    fn next_candidate(&mut self) -> Option<Slot>;
    /// The lowest-ranked request of the window that can be evicted ([`evictable`]); the window
    /// then ends above it. `None` if there is none: the window is then empty.
    fn pop_victim(&mut self, view: &ReplicaView) -> Option<Slot>;
    /// True only if no request of the window has its KV on the GPU and is out of the pipeline:
    /// then every runnable candidate left needs blocks, and none can be freed by eviction.
    fn no_resident_left(&mut self, view: &ReplicaView) -> bool;
    /// The window may pass over the plain candidates that are no-ops under `no_ops` (they
    /// cannot join, and make nobody be evicted: [`NoOps`]). Only when misfits are skipped, with
    /// no chunk budget and no deferred new request.
    fn pass_no_ops(&mut self, _no_ops: &NoOps) {}
    /// [`Window::pop_victim`] passing over (out of the window) every victim whose `seq` is at most
    /// `after`: the lowest-ranked evictable request of the window that arrived after `after`.
    fn pop_victim_later(&mut self, view: &ReplicaView, seq: &[u64], after: u64) -> Option<Slot> {
        pop_later_by_pops(self, view, seq, after)
    }
    /// The victim [`Window::pop_victim`] just returned is not evicted after all: the window
    /// ends below it again (it may still be a candidate). Only formations with a
    /// [`RecomputeGuard`] call it; by default it stays out of the window.
    fn keep_victim(&mut self) {}
    /// Pass over the candidates up to the next one that holds KV: called when a candidate holding
    /// no KV could neither join nor evict (no block free, and the next victim is one the
    /// [`RecomputeGuard`] spares), so that every candidate holding no KV after it until the next
    /// one that holds KV is a no-op too. By default none are passed over.
    fn pass_kvless(&mut self, _view: &ReplicaView) {}
}

/// Under chunked prefill (`mlfq`, `skip-join-mlfq`): per slot, its arrival sequence number. A
/// candidate may take a victim's KV by recompute only if it holds KV itself and arrived before
/// the victim, so that prefills under way cannot throw one another's chunks away in a cycle
/// (see the `mlfq` module's "Chunked prefill and recompute").
#[derive(Clone, Copy)]
pub(super) struct RecomputeGuard<'a> {
    pub(super) arrival_seq: &'a [u64],
}

impl RecomputeGuard<'_> {
    /// Whether candidate `c` may preempt `v` by recompute.
    fn allows(&self, view: &ReplicaView, c: Slot, v: Slot) -> bool {
        view.req(c).blocks > 0 && self.arrival_seq[c as usize] < self.arrival_seq[v as usize]
    }
}

/// [`Window::pop_victim_later`] by one [`Window::pop_victim`] per victim passed over (the
/// default, and the tests' reference).
pub(super) fn pop_later_by_pops(
    w: &mut (impl Window + ?Sized),
    view: &ReplicaView,
    seq: &[u64],
    after: u64,
) -> Option<Slot> {
    loop {
        let v = w.pop_victim(view)?;
        if seq[v as usize] > after {
            return Some(v);
        }
    }
}

/// Whether `s` can be preempted to give up GPU blocks.
pub(super) fn evictable(view: &ReplicaView, s: Slot) -> bool {
    let r = view.req(s);
    r.blocks > 0 && r.kv_loc == KvLoc::Gpu && !r.in_flight()
}

/// [`Window`] over a ranking given as a slice: victims are searched by walking the back.
#[cfg(test)]
struct SliceWindow<'a> {
    order: &'a [Slot],
    front: usize,
    back: usize,
}

#[cfg(test)]
impl Window for SliceWindow<'_> {
    fn next_candidate(&mut self) -> Option<Slot> {
        (self.front < self.back).then(|| {
            self.front += 1;
            self.order[self.front - 1]
        })
    }
    fn pop_victim(&mut self, view: &ReplicaView) -> Option<Slot> {
        while self.back > self.front {
            self.back -= 1;
            let v = self.order[self.back];
            if evictable(view, v) {
                return Some(v);
            }
        }
        None
    }
    fn no_resident_left(&mut self, _view: &ReplicaView) -> bool {
        false
    }
    fn keep_victim(&mut self) {
        self.back += 1;
    }
}

/// [`form_priority_batch`] over a [`Window`] of the ranking: candidates are taken from the front
/// and eviction victims from the back. The formation ends when the batch is full, the window is
/// empty, or no block is free and none can be freed (nothing left can join).
///
/// With a `guard` ([`RecomputeGuard`]): a victim the guard spares is passed over (it keeps its
/// KV and leaves the window) when the candidate holds KV, and ends the candidate's evictions
/// when it holds none; a prefill chunk shrinks to the blocks it could get; a candidate that
/// still does not fit is skipped whatever `misfit` says (the ones below may fit).
#[inline]
#[allow(clippy::too_many_arguments)]
// Long on purpose: one candidate loop whose limits (size, tokens, blocks, guard) read in order.
pub(super) fn form_priority_batch_from(
    view: &ReplicaView,
    order: &mut impl Window,
    misfit: Misfit,
    preemption: PreemptionChoice,
    defer_new: bool,
    chunk_budget: Option<u32>,
    guard: Option<RecomputeGuard<'_>>,
    plan: &mut Plan,
) -> u32 {
    let limits = view.limits;
    let mut tokens_left = chunk_budget.unwrap_or(0);
    let mut free = view.free_blocks();
    let mut prefill_tokens: u64 = 0;
    let mut has_prefill = false;
    // Blocks of swap-outs started here: free when their copies complete, not for this batch.
    let mut freeing: u32 = 0;
    let may_pass = misfit == Misfit::Skip && chunk_budget.is_none() && !defer_new;
    loop {
        if plan.run.len() >= limits.max_batch_size as usize {
            break;
        }
        // Every runnable candidate left needs at least one block (it holds none on the GPU):
        // none can join, and no eviction can happen, so the plan is final.
        if free == 0 && order.no_resident_left(view) {
            break;
        }
        if may_pass {
            let prefills = has_prefill.then_some(prefill_tokens);
            order.pass_no_ops(&no_ops(view, prefills, free, freeing));
        }
        let Some(s) = order.next_candidate() else {
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
        let mut need = view.extra_blocks_for_chunk(s, step.0);
        let spared = evict_lower(
            view,
            order,
            (preemption, guard.map(|g| (g, s))),
            need,
            (&mut free, &mut freeing),
            plan,
        );
        let step = if need > free && guard.is_some() {
            shrink_chunk(view, s, step, free, &mut need)
        } else {
            step
        };
        if need > free {
            if spared && free == 0 {
                // Until something changes, each candidate holding no KV meets the same spared
                // victim with no block free: a no-op.
                order.pass_kvless(view);
            }
            if guard.is_some() || misfit == Misfit::Skip {
                continue;
            }
            break;
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

/// The no-op candidates of a formation whose batch holds `prefills` prefill tokens (`None`: no
/// prefill yet) with `free` GPU blocks free and `freeing` on their way out.
fn no_ops(view: &ReplicaView, prefills: Option<u64>, free: u32, freeing: u32) -> NoOps {
    let max_batch_tokens = view.limits.max_batch_tokens as i64;
    NoOps {
        tokens_left: prefills.map(|p| max_batch_tokens - p as i64),
        free,
        freeing,
        block_tokens: view.block_tokens(),
    }
}

/// Evict resident requests from the back of `order` (lowest priority first) until `need` blocks
/// are free or freeing; `room` = (free, freeing by swap-outs started here).
/// `how` = the preemption choice and, with a guard, the guard and the candidate. Returns true
/// when the evictions ended at a victim the guard spares for a candidate holding no KV (the
/// victim stays the window's next one).
fn evict_lower(
    view: &ReplicaView,
    order: &mut impl Window,
    how: (PreemptionChoice, Option<(RecomputeGuard<'_>, Slot)>),
    need: u32,
    room: (&mut u32, &mut u32),
    plan: &mut Plan,
) -> bool {
    let (free, freeing) = room;
    let (preemption, guard) = how;
    // A candidate holding KV passes over every victim the guard spares when every eviction is a
    // recompute (no host room for even one block): the window may skip them without reading.
    let no_swap = preemption == PreemptionChoice::Recompute
        || view.host_blocks_for(1) > view.host_free_blocks();
    let later = guard.filter(|&(_, c)| no_swap && view.req(c).blocks > 0);
    while need > *free + *freeing {
        let v = match later {
            Some((g, c)) => order.pop_victim_later(view, g.arrival_seq, g.arrival_seq[c as usize]),
            None => order.pop_victim(view),
        };
        let Some(v) = v else {
            break;
        };
        let blocks = view.req(v).blocks;
        let mode = preemption.mode_for(view, v);
        if let Some((g, c)) = guard
            && mode == PreemptMode::Recompute
            && !g.allows(view, c, v)
        {
            if view.req(c).blocks > 0 {
                continue;
            }
            order.keep_victim();
            return true;
        }
        plan.preempt.push((v, mode));
        if mode == PreemptMode::Swap {
            // The blocks free when the copy completes: not usable for this batch.
            *freeing += blocks;
        } else {
            *free += blocks;
        }
    }
    false
}

/// `(chunk, tokens)` of candidate `s`'s step, a prefill chunk cut to the tokens that its blocks
/// and `free` more hold (unchanged when not even one token fits, or for a decode); `need` becomes
/// the blocks of the step returned.
fn shrink_chunk(
    view: &ReplicaView,
    s: Slot,
    step: (u32, u32),
    free: u32,
    need: &mut u32,
) -> (u32, u32) {
    if step.0 == 0 {
        return step;
    }
    let r = view.req(s);
    let room = (r.blocks as u64 + free as u64) * view.block_tokens() as u64;
    let room = room.saturating_sub(r.kv_tokens as u64);
    if room == 0 {
        return step;
    }
    let c = (step.0 as u64).min(room) as u32;
    *need = view.extra_blocks_for_chunk(s, c);
    (c, c)
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
    remaining_time_ns_with(cost, r, |context| decode_ns(cost, context))
}

/// The time of one decode step of a lone request at `context` tokens, rounded up to whole
/// nanoseconds (0 if the cost model fails).
pub fn decode_ns(cost: &dyn CostModel, context: u32) -> u64 {
    let mut b = BatchShape::default();
    b.add_decode(context);
    batch_ns(cost, &b)
}

/// The time of a lone whole prefill of `tokens` tokens (no KV yet), rounded up to whole
/// nanoseconds (0 if the cost model fails): [`remaining_time_ns`]'s prefill part for a request
/// that [`Request::needs_prefill`] with `tokens` = its [`Request::prefill_tokens`].
pub fn prefill_ns(cost: &dyn CostModel, tokens: u32) -> u64 {
    let mut b = BatchShape::default();
    b.add_prefill_chunk(tokens, 0);
    batch_ns(cost, &b)
}

fn batch_ns(cost: &dyn CostModel, b: &BatchShape) -> u64 {
    cost.iteration_s(b)
        .ok()
        .and_then(crate::vocab::time::duration_ns_ceil)
        .unwrap_or(0)
}

/// [`remaining_time_ns`] with the decode step's time at a context length from `decode_ns`
/// (which must equal [`decode_ns`]; e.g. a memo of it).
pub fn remaining_time_ns_with(
    cost: &dyn CostModel,
    r: &Request,
    decode_ns: impl FnOnce(u32) -> u64,
) -> u64 {
    let mut total: u64 = 0;
    let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
    if r.in_prefill() {
        total = batch_ns(cost, &rest_of_prefill(r));
        decodes = decodes.saturating_sub(1);
    }
    total.saturating_add(decode_rest_ns(
        r.input_tokens,
        r.generated_tokens,
        decodes,
        decode_ns,
    ))
}

/// The decode part of [`remaining_time_ns`]: `decodes` steps of a request with `input` prompt
/// tokens that has generated `generated`, each timed at its current context by `decode_ns`
/// (which must equal [`decode_ns`]).
#[inline]
pub fn decode_rest_ns(
    input: u32,
    generated: u32,
    decodes: u32,
    decode_ns: impl FnOnce(u32) -> u64,
) -> u64 {
    if decodes == 0 {
        return 0;
    }
    (decodes as u64).saturating_mul(decode_ns(input + generated.max(1)))
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
    use std::sync::Arc;

    use super::*;
    use crate::cost::constant::ConstantCost;
    use crate::policy::ranking::tests::view;
    use crate::policy::{Policy, fcfs, sjf};
    use crate::vocab::KvPool;
    use crate::vocab::request::Slab;

    /// Put `plan`'s requests in a micro-batch that enters the pipeline.
    fn launch(reqs: &mut Slab, plan: &Plan) {
        for item in &plan.run {
            reqs.get_mut(item.slot).in_batch = true;
        }
    }

    /// The micro-batch of `plan` leaves the pipeline: each request has its prompt's KV (10
    /// tokens, one block) and its first token.
    fn land(reqs: &mut Slab, plan: &Plan) {
        for item in &plan.run {
            let mut r = reqs.get_mut(item.slot);
            r.in_batch = false;
            (r.kv_tokens, r.generated_tokens, r.kv_loc) = (10, 1, KvLoc::Gpu);
            r.blocks = r.blocks.max(1);
        }
    }

    fn ids(reqs: &Slab, plan: &Plan) -> Vec<u64> {
        plan.run.iter().map(|i| reqs.get(i.slot).id).collect()
    }

    /// Pipeline parallelism with a batch cap of 16 per micro-batch: 24 requests arrive; the first
    /// micro-batch admits 16, the next (the first still in the pipeline) the other 8. When both
    /// leave the pipeline before the first stage frees, 24 admitted requests are out of it: the
    /// plan runs 16 of them, highest priority (arrival order) first, preempts nobody, and the
    /// next micro-batch (those 16 in flight) runs the other 8. The old code ran all 24.
    fn micro_batches_back_together(policy: &mut dyn Policy) {
        let mut reqs = Slab::default();
        let (kv, host) = (KvPool::new(10_000, 16), KvPool::new(0, 16));
        for i in 0..24 {
            let s = reqs.insert(Request::new(i, 0, 10, 5, 5));
            policy.on_arrival(s, &view(&reqs, &kv, &host)).unwrap();
        }
        let (mut first, mut second, mut plan) = (Plan::default(), Plan::default(), Plan::default());
        policy.schedule(&view(&reqs, &kv, &host), &mut first);
        assert_eq!(first.run.len(), 16);
        launch(&mut reqs, &first);
        policy.schedule(&view(&reqs, &kv, &host), &mut second);
        assert_eq!(second.run.len(), 8);
        launch(&mut reqs, &second);
        land(&mut reqs, &first);
        land(&mut reqs, &second);
        policy.schedule(&view(&reqs, &kv, &host), &mut plan);
        assert_eq!(
            ids(&reqs, &plan),
            (0..16).collect::<Vec<_>>(),
            "{}",
            policy.name()
        );
        assert!(plan.preempt.is_empty());
        launch(&mut reqs, &plan);
        policy.schedule(&view(&reqs, &kv, &host), &mut plan);
        assert_eq!(
            ids(&reqs, &plan),
            (16..24).collect::<Vec<_>>(),
            "{}",
            policy.name()
        );
    }

    #[test]
    fn fcfs_and_sjf_cap_a_micro_batch_when_several_come_back_at_once() {
        let limits = view(&Slab::default(), &KvPool::new(0, 16), &KvPool::new(0, 16)).limits;
        let reserve = fcfs::Params {
            reserve: fcfs::Reserve::Oracle,
        };
        micro_batches_back_together(&mut fcfs::Fcfs::new(reserve, limits));
        micro_batches_back_together(&mut fcfs::Fcfs::new(fcfs::Params::default(), limits));
        let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
        micro_batches_back_together(&mut sjf::Sjf::new(cost));
    }
}
