//! Levels and queues: requeueing a batch after its iteration.

use super::{Demotion, LEVEL_CAP, Mlfq, State};
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

impl Mlfq {
    /// Charge every request of `batch` the iteration that ended at `now`, demote those past
    /// their quantum, and put each back at the front of its level: one at a time in batch order
    /// (so the level's front ends up reversed) with `requeue_reverses_batch`, else in reverse batch
    /// order. `kv_tokens(s)` is the request's KV length after the iteration (paper-mode demotion
    /// sizes the next iteration from it).
    ///
    /// The new order is, level by level, that level's requeued requests followed by its other
    /// members in their old order. Only the levels up to the highest new level of the batch
    /// change (demotion only lowers priority, so that covers every batch member's old level too):
    /// that prefix is rebuilt from runs found by binary search and copied in bulk; within a level
    /// that held batch members, only the entries up to its last batch member are looked at one by
    /// one (they were requeued at its front, so that is usually a few).
    pub(super) fn requeue_batch(
        &mut self,
        batch: &[Slot],
        duration_ns: Ns,
        now: Ns,
        kv_tokens: impl Fn(Slot) -> u32,
    ) {
        if batch.is_empty() {
            return;
        }
        let max_level = self.max_level();
        // New states (written back once the old order's level runs are found), how many requests
        // land at each new level, and how many leave each old level.
        let mut count = [0u32; LEVEL_CAP as usize + 2];
        let mut leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut top = 0usize;
        let mut new_states = std::mem::take(&mut self.new_states);
        new_states.clear();
        for &s in batch {
            let st = self.charged(s, duration_ns, now, max_level, &kv_tokens);
            leaving[self.state[s as usize].level as usize] += 1;
            new_states.push(st);
            count[st.level as usize + 1] += 1;
            top = top.max(st.level as usize);
        }
        // Old runs: level p is `self.order[start[p]..start[p + 1]]` (the order is sorted by level).
        let mut start = [0usize; LEVEL_CAP as usize + 2];
        {
            let (order, state) = (&self.order, &self.state);
            for (p, at) in start.iter_mut().enumerate().take(top + 2).skip(1) {
                *at = order.partition_point(|&x| (state[x as usize].level as usize) < p);
            }
        }
        let bound = start[top + 1];
        for (&s, st) in batch.iter().zip(&new_states) {
            self.state[s as usize] = *st;
        }
        self.new_states = new_states;
        // Group by new level (counting sort): `count[p]..count[p + 1]` is level p's group.
        for p in 1..=top + 1 {
            count[p] += count[p - 1];
        }
        let mut fill = count;
        self.requeued.clear();
        self.requeued.resize(batch.len(), 0);
        let reverses = self.cfg.requeue_reverses_batch;
        for &s in batch {
            let p = self.state[s as usize].level as usize;
            self.requeued[fill[p] as usize] = s;
            fill[p] += 1;
        }
        if reverses {
            for p in 0..=top {
                self.requeued[count[p] as usize..count[p + 1] as usize].reverse();
            }
        }
        self.splice_requeued(batch, &count, &start, &leaving, top, bound);
    }

    /// `s`'s state after it ran for `duration_ns` up to `now`: demoted past its quantum (the
    /// level's demotion count goes up then).
    fn charged(
        &mut self,
        s: Slot,
        duration_ns: Ns,
        now: Ns,
        max_level: u32,
        kv_tokens: &impl Fn(Slot) -> u32,
    ) -> State {
        let mut st = self.state[s as usize];
        st.attained_ns += duration_ns;
        st.last_step_ns = now;
        if st.attained_ns > self.quantum_ns_table[st.level as usize] && st.level < max_level {
            st.level = match self.cfg.demotion {
                Demotion::OneLevel => st.level + 1,
                Demotion::CoverNextIteration => {
                    let t = self.decode_time_s(kv_tokens(s) + 1);
                    let mut p = st.level + 1;
                    while p < max_level && self.quantum_s(p) < t {
                        p += 1;
                    }
                    p
                }
            };
            st.attained_ns = 0;
            st.demotions += 1;
            self.hist[st.level as usize].demotions_in += 1;
        }
        st
    }

    /// Rebuild the order's prefix `..bound` (levels `..=top`): level by level, its requeued
    /// requests (`self.requeued[count[p]..count[p + 1]]`), then its other members in their old
    /// order (`leaving[p]` batch members are skipped in its old run `start[p]..start[p + 1]`).
    fn splice_requeued(
        &mut self,
        batch: &[Slot],
        count: &[u32],
        start: &[usize],
        leaving: &[u32],
        top: usize,
        bound: usize,
    ) {
        self.mark_taken(batch, true);
        let mut next = std::mem::take(&mut self.next_order);
        next.clear();
        for p in 0..=top {
            next.extend_from_slice(&self.requeued[count[p] as usize..count[p + 1] as usize]);
            let run = &self.order[start[p]..start[p + 1]];
            let mut left = leaving[p];
            let mut i = 0;
            while left > 0 && i < run.len() {
                let x = run[i];
                if self.taken[x as usize] {
                    left -= 1;
                } else {
                    next.push(x);
                }
                i += 1;
            }
            self.requeue_touched += i as u64;
            next.extend_from_slice(&run[i..]);
        }
        self.mark_taken(batch, false);
        if next.len() == bound {
            self.order[..bound].copy_from_slice(&next);
            self.next_order = next;
        } else {
            // A batch member was not queued (cannot happen: finished requests leave the batch):
            // keep everything, as a full rebuild would.
            debug_assert!(false, "every batch member is queued");
            next.extend_from_slice(&self.order[bound..]);
            self.next_order = std::mem::replace(&mut self.order, next);
        }
    }
}
