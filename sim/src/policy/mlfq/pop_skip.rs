//! The batch pop of `batch_memory = "reserve"` ([`Mlfq::pop_batch`]) with `misfit = "skip"`,
//! without chunked prefill: once the batch's prefill tokens leave no room for any new request,
//! the rest of the walk reads `ran_order` instead of `order`.
//!
//! Under a burst the queue holds thousands of requests that never ran, each a whole prefill.
//! With `misfit = "skip"` the pop passed over every prefill that does not fit the token budget
//! and, the batch rarely reaching `max_batch_size`, walked the whole queue at every boundary
//! (round 12, 11: quadratic time). A request that never ran joins only as a prefill of its
//! `input_tokens`; [`NewPrompts`] keeps a lower bound of those of the queued ones, so that once
//! the budget left is below it, the rest of `order` can add only requests that ran: the walk
//! goes on in `ran_order` (level by level the subsequence of `order` of the requests that ran)
//! from the same place.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::super::{Plan, ReplicaView};
use super::{MisfitRule, Mlfq, chunk_step};
use crate::vocab::request::Slot;

/// The prompts of the queued requests that never ran: a min-heap of `(input_tokens, slot,
/// arrival number)` pushed at every arrival, its stale entries (the request ran, left, or the
/// slot was reused) dropped when they reach the top. Its least valid entry is at most the
/// prompt of every queued request that never ran (a stale entry that looks valid only lowers
/// it: the walk then reads more, never less).
#[derive(Clone, Debug, Default)]
pub(super) struct NewPrompts {
    heap: BinaryHeap<Reverse<(u32, Slot, u64)>>,
    /// Scratch: entries of batch members taken off the top while looking for the least prompt
    /// outside the batch (put back after the pop).
    held: Vec<Reverse<(u32, Slot, u64)>>,
    /// Tests: some request was queued without its entry (the pop then walks `order`).
    #[cfg(test)]
    pub(super) partial: bool,
}

impl NewPrompts {
    /// Entries held (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(super) fn push(&mut self, s: Slot, input_tokens: u32, seq: u64) {
        self.heap.push(Reverse((input_tokens, s, seq)));
    }

    /// The least prompt of the queued requests that never ran and are not in `plan` (a lower
    /// bound; `u32::MAX` when there is none).
    fn least_outside(
        &mut self,
        view: &ReplicaView,
        plan: &Plan,
        ran: &[bool],
        arrival_seq: &[u64],
    ) -> u32 {
        while let Some(&Reverse((t, s, seq))) = self.heap.peek() {
            let valid = arrival_seq.get(s as usize) == Some(&seq)
                && ran.get(s as usize) != Some(&true)
                && view.reqs.contains(s)
                && view.req(s).is_new();
            if !valid {
                self.heap.pop();
            } else if plan.run.iter().any(|i| i.slot == s) {
                self.held.push(Reverse((t, s, seq)));
                self.heap.pop();
            } else {
                return t;
            }
        }
        u32::MAX
    }

    /// Put back the batch members' entries taken off by [`NewPrompts::least_outside`].
    fn put_back(&mut self) {
        self.heap.extend(self.held.drain(..));
    }
}

/// The state of one pop: the batch's prefill tokens, the chunk budget left, the extra KV blocks
/// it needs, and the queue entries looked at.
pub(super) struct PopWalk {
    pub(super) prefill_tokens: u64,
    pub(super) has_prefill: bool,
    pub(super) tokens_left: u32,
    pub(super) need: i64,
    pub(super) looked: u64,
    pub(super) defer_new: bool,
    pub(super) chunked: bool,
    pub(super) misfit: MisfitRule,
}

impl PopWalk {
    /// Look at queue entry `s`, adding it to the batch if it may join; `true`: the pop stops.
    pub(super) fn step(&mut self, view: &ReplicaView, plan: &mut Plan, s: Slot) -> bool {
        let limits = view.limits;
        if plan.run.len() >= limits.max_batch_size as usize {
            return true;
        }
        self.looked += 1;
        let r = view.req(s);
        if !r.runnable() || r.in_flight() || (self.defer_new && r.is_new()) {
            return false;
        }
        if self.chunked {
            // Chunked prefill: one token budget; a spent budget ends the batch.
            let Some((chunk, tokens)) = chunk_step(r, self.tokens_left) else {
                return true;
            };
            self.tokens_left -= tokens;
            self.need += view.extra_blocks_of(r, chunk) as i64;
            plan.run_chunk(s, chunk);
            return false;
        }
        if r.needs_prefill() {
            let t = r.prefill_tokens() as u64;
            if self.has_prefill && self.prefill_tokens + t > limits.max_batch_tokens as u64 {
                return self.misfit == MisfitRule::Stop;
            }
            self.has_prefill = true;
            self.prefill_tokens += t;
        }
        self.need += view.extra_blocks_of(r, 0) as i64;
        plan.run_on_demand(s);
        false
    }

    /// Whether no request that never ran, of prompt at least `least`, can join any more.
    fn new_ones_done(&self, view: &ReplicaView, least: u32) -> bool {
        self.has_prefill && self.prefill_tokens + least as u64 > view.limits.max_batch_tokens as u64
    }
}

impl Mlfq {
    /// The walk of the pop: `order` (`ran_order` when new requests are deferred), each entry
    /// looked at by [`PopWalk::step`]; with `misfit = "skip"` and no chunking, `ran_order` once
    /// no request that never ran can join.
    pub(super) fn pop_walk(&mut self, view: &ReplicaView, plan: &mut Plan, w: &mut PopWalk) {
        let indexed = !w.defer_new && !w.chunked && w.misfit == MisfitRule::Skip;
        #[cfg(test)]
        let indexed = indexed && !self.pop_by_walk && !self.new_prompts.partial;
        if !indexed {
            self.scan_order(w.defer_new).any(|s| w.step(view, plan, s));
            return;
        }
        let mut least = self
            .new_prompts
            .least_outside(view, plan, &self.ran, &self.arrival_seq);
        'levels: for (p, q) in self.order.levels() {
            let mut ran_seen = 0;
            for &s in q.as_slice() {
                if w.new_ones_done(view, least) {
                    // The rest of `order` past `ran_seen` entries of `ran_order`'s level `p`.
                    let rest = &self.ran_order.level(p).as_slice()[ran_seen..];
                    let later = self.ran_order.levels().filter(|&(l, _)| l > p);
                    let mut tail = rest.iter().chain(later.flat_map(|(_, q)| q.iter()));
                    tail.any(|&s| w.step(view, plan, s));
                    break 'levels;
                }
                let before = plan.run.len();
                if w.step(view, plan, s) {
                    break 'levels;
                }
                ran_seen += (self.ran.get(s as usize) == Some(&true)) as usize;
                if plan.run.len() > before && view.req(s).needs_prefill() {
                    least =
                        self.new_prompts
                            .least_outside(view, plan, &self.ran, &self.arrival_seq);
                }
            }
        }
        self.new_prompts.put_back();
    }
}
