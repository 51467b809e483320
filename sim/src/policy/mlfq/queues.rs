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
        // The same for `ran_order`: the batch members that had run leave it.
        let mut ran_leaving = [0u32; LEVEL_CAP as usize + 1];
        self.ensure_ran(self.state.len());
        let mut new_states = std::mem::take(&mut self.new_states);
        new_states.clear();
        for &s in batch {
            let st = self.charged(s, duration_ns, now, max_level, &kv_tokens);
            let old = self.state[s as usize].level as usize;
            leaving[old] += 1;
            ran_leaving[old] += self.ran[s as usize] as u32;
            new_states.push(st);
            count[st.level as usize + 1] += 1;
            top = top.max(st.level as usize);
        }
        // Old runs: level p is `self.order[start[p]..start[p + 1]]` (the order is sorted by level),
        // and `self.ran_order[ran_start[p]..ran_start[p + 1]]`.
        let start = self.order_lens.starts(top);
        let ran_start = self.ran_lens.starts(top);
        for (&s, st) in batch.iter().zip(&new_states) {
            self.state[s as usize] = *st;
        }
        self.new_states = new_states;
        self.group_requeued(batch, &mut count, top);
        self.mark_taken(batch, true);
        let groups = Groups {
            requeued: &self.requeued,
            count: &count,
            taken: &self.taken,
            top,
        };
        self.requeue_touched += splice(
            &mut self.order,
            &mut self.next_order,
            &groups,
            &start,
            &leaving,
        );
        splice(
            &mut self.ran_order,
            &mut self.next_ran,
            &groups,
            &ran_start,
            &ran_leaving,
        );
        self.mark_taken(batch, false);
        for &s in batch {
            self.ran[s as usize] = true;
        }
        for p in 0..=top {
            let joined = count[p + 1] - count[p];
            self.order_lens.0[p] = self.order_lens.0[p] + joined - leaving[p];
            self.ran_lens.0[p] = self.ran_lens.0[p] + joined - ran_leaving[p];
        }
    }

    /// Group `batch` (its new states set) by new level into `self.requeued` (counting sort:
    /// `count[p + 1]` holds level p's size on entry, `count[p]..count[p + 1]` is its group on
    /// return), each group in requeue order.
    fn group_requeued(&mut self, batch: &[Slot], count: &mut [u32], top: usize) {
        for p in 1..=top + 1 {
            count[p] += count[p - 1];
        }
        let mut fill = [0u32; LEVEL_CAP as usize + 2];
        fill.copy_from_slice(count);
        self.requeued.clear();
        self.requeued.resize(batch.len(), 0);
        for &s in batch {
            let p = self.state[s as usize].level as usize;
            self.requeued[fill[p] as usize] = s;
            fill[p] += 1;
        }
        if self.cfg.requeue_reverses_batch {
            for p in 0..=top {
                self.requeued[count[p] as usize..count[p + 1] as usize].reverse();
            }
        }
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
}

/// Per level, how many entries of a queue sorted by level hold it: level p's run starts at the
/// sum of the lengths before it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LevelLens(pub(super) [u32; LEVEL_CAP as usize + 1]);

impl LevelLens {
    pub(super) fn new() -> Self {
        LevelLens([0; LEVEL_CAP as usize + 1])
    }

    /// Where level `p`'s run starts (`p` up to `LEVEL_CAP + 1`: the end).
    pub(super) fn start(&self, p: usize) -> usize {
        self.0[..p].iter().map(|&n| n as usize).sum()
    }

    /// Where each level's run starts, for levels `..=top + 1`.
    fn starts(&self, top: usize) -> [usize; LEVEL_CAP as usize + 2] {
        let mut start = [0usize; LEVEL_CAP as usize + 2];
        for p in 0..=top {
            start[p + 1] = start[p] + self.0[p] as usize;
        }
        start
    }

    /// Count the levels of `seq` anew.
    #[cfg(test)]
    pub(super) fn recount(&mut self, seq: &[Slot], state: &[State]) {
        self.0 = [0; LEVEL_CAP as usize + 1];
        for &s in seq {
            self.0[state[s as usize].level as usize] += 1;
        }
    }
}

/// The requeued batch grouped by new level: level p's group is
/// `requeued[count[p]..count[p + 1]]`; `taken` marks the batch; levels `..=top` change.
struct Groups<'a> {
    requeued: &'a [Slot],
    count: &'a [u32],
    taken: &'a [bool],
    top: usize,
}

/// Rebuild the prefix of `seq` (a queue sorted by level) holding levels `..=top`: level by level,
/// its requeued requests, then its other members in their old order (`leaving[p]` batch members
/// are skipped in its old run `start[p]..start[p + 1]`). Returns the entries looked at one by one
/// (the rest of each run is copied in bulk).
fn splice(
    seq: &mut Vec<Slot>,
    next: &mut Vec<Slot>,
    groups: &Groups,
    start: &[usize],
    leaving: &[u32],
) -> u64 {
    let bound = start[groups.top + 1];
    let mut touched = 0u64;
    next.clear();
    for p in 0..=groups.top {
        next.extend_from_slice(
            &groups.requeued[groups.count[p] as usize..groups.count[p + 1] as usize],
        );
        let run = &seq[start[p]..start[p + 1]];
        let mut left = leaving[p];
        let mut i = 0;
        while left > 0 && i < run.len() {
            let x = run[i];
            if groups.taken[x as usize] {
                left -= 1;
            } else {
                next.push(x);
            }
            i += 1;
        }
        touched += i as u64;
        next.extend_from_slice(&run[i..]);
    }
    if next.len() == bound && 2 * bound <= seq.len() {
        seq[..bound].copy_from_slice(next);
    } else {
        // The shorter copy: the rest after the new prefix, and the two swap. (`ran_order` also
        // grows here when batch members ran for the first time.)
        next.extend_from_slice(&seq[bound..]);
        std::mem::swap(seq, next);
    }
    touched
}
