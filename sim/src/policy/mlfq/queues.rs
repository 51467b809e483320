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
    /// Each level becomes its requeued requests followed by its other members in their old order.
    /// The batch leaves its old levels from their fronts: only the entries up to a level's last
    /// batch member are looked at (they were requeued at its front, so that is usually a few), and
    /// the requeued requests take the places they left, or are pushed in front of them. Nothing
    /// else moves.
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
        if self.block.len > 0 {
            for &s in batch {
                self.leave_block(s);
            }
        }
        let max_level = self.max_level();
        // How many batch members leave each old level, of `order` and of `ran_order`, how many
        // land at each new level (`count[p + 1]`), and the lowest level either reaches.
        let mut leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut ran_leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut res_leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut fit_leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut count = [0u32; LEVEL_CAP as usize + 2];
        let mut top = 0usize;
        // Whether the batch goes by old level (it was formed in priority order): then the
        // members leaving level p are `batch[from[p]..from[p + 1]]`. And bit p of `moved`: a
        // member left level p for another or came to it from another.
        let mut sorted = true;
        let mut prev = 0usize;
        let mut moved = 0u64;
        self.ensure_ran(self.state.len());
        for &s in batch {
            let st = self.charged(s, duration_ns, now, max_level, &kv_tokens);
            let old = self.state[s as usize].level as usize;
            sorted &= old >= prev;
            prev = old;
            if st.level as usize != old {
                moved |= 1 << old | 1 << st.level;
            }
            leaving[old] += 1;
            ran_leaving[old] += self.ran[s as usize] as u32;
            res_leaving[old] += self.res[s as usize] as u32;
            fit_leaving[old] += self.in_fit0(s) as u32;
            count[st.level as usize + 1] += 1;
            top = top.max(st.level as usize).max(old);
            // Only `s`'s own state is read for it: it is written back at once.
            self.state[s as usize] = st;
        }
        self.group_requeued(batch, &mut count, top);
        let leaving = [&leaving, &ran_leaving, &res_leaving, &fit_leaving];
        let marked = self.requeue_levels(batch, (sorted, moved), top, &count, leaving);
        for &s in batch {
            self.ran[s as usize] = true;
            self.res[s as usize] = true;
        }
        if marked {
            self.mark_taken(batch, false);
        }
        if self.fit_valid {
            for &s in batch {
                self.set_fit0(s, true);
            }
        }
    }

    /// Requeue `batch` (grouped by new level in `self.requeued`, `count` as
    /// [`Mlfq::group_requeued`] leaves it) at levels `0..=top` of each queue:
    /// `leaving[i][p]` of its members leave level p of queue i ([`Mlfq::requeue_one`]; `sorted`
    /// and `moved` as `requeue_batch` found them). Returns whether the batch was marked in
    /// `taken`.
    fn requeue_levels(
        &mut self,
        batch: &[Slot],
        (sorted, moved): (bool, u64),
        top: usize,
        count: &[u32],
        leaving: [&[u32; LEVEL_CAP as usize + 1]; 4],
    ) -> bool {
        let mut marked = false;
        let mut from = 0usize;
        for p in 0..=top {
            let n = leaving[0][p] as usize;
            let group = count[p] as usize..count[p + 1] as usize;
            if n == 0 && group.is_empty() {
                continue;
            }
            let seg = match sorted {
                true => &batch[from..from + n],
                false => &[][..],
            };
            from += n;
            let stay = sorted && moved >> p & 1 == 0;
            let valid = [true, true, self.res_valid, self.fit_valid];
            let counts = [leaving[0][p], leaving[1][p], leaving[2][p], leaving[3][p]];
            // Unrolled: each queue's own `requeue_one` (its `match` folds away).
            macro_rules! one {
                ($i:literal) => {
                    if valid[$i] && (counts[$i] > 0 || !group.is_empty()) {
                        let g = group.clone();
                        let m = (counts[$i], stay);
                        let touched = self.requeue_one(($i, p), seg, m, g, batch, &mut marked);
                        if $i == 0 {
                            self.requeue_touched += touched;
                        }
                    }
                };
            }
            one!(0);
            one!(1);
            one!(2);
            one!(3);
        }
        marked
    }

    /// Requeue at level `p` of queue `i` (`order`, `ran_order`, `resident`, `fit0`) the `m`
    /// batch members that leave it and the group `self.requeued[group]`; returns the entries
    /// looked at. `seg`: the batch members that leave level p of `order`, in batch order (empty
    /// when the batch does not go by old level). Where the level starts with `seg` (all `m` are
    /// in it), they are replaced without a search: `stay` (nobody left the level for another or
    /// came to it) reverses them in place with `requeue_reverses_batch` (the group is `seg`
    /// reversed) or keeps them (it is `seg`), else the group takes their places
    /// ([`Levels::requeue_prefix`](super::levels::Levels::requeue_prefix)). Elsewhere the batch is
    /// marked in `taken` (once, `marked`) and searched for.
    #[inline(always)]
    fn requeue_one(
        &mut self,
        (i, p): (usize, usize),
        seg: &[Slot],
        (m, stay): (u32, bool),
        group: std::ops::Range<usize>,
        batch: &[Slot],
        marked: &mut bool,
    ) -> u64 {
        let reverses = self.cfg.requeue_reverses_batch;
        let q = match i {
            0 => &mut self.order,
            1 => &mut self.ran_order,
            2 => &mut self.resident,
            _ => &mut self.fit0,
        };
        let group = &self.requeued[group];
        if m as usize == seg.len() && !seg.is_empty() {
            let done = match stay {
                true => q.requeue_prefix_in_place(p, seg, reverses),
                false => q.requeue_prefix(p, seg, group),
            };
            if done {
                return m as u64;
            }
        }
        // (With nobody leaving, the search reads no marks.)
        if m > 0 && !*marked {
            *marked = true;
            self.requeue_marks += batch.len() as u64;
            if self.taken.len() < self.state.len() {
                self.taken.resize(self.state.len(), false);
            }
            for &s in batch {
                self.taken[s as usize] = true;
            }
        }
        q.requeue_level(p, m, &self.taken, group)
    }

    /// Group `batch` (its new states set) by new level into `self.requeued` (counting sort:
    /// `count[p + 1]` holds level p's size on entry, `count[p]..count[p + 1]` is its group on
    /// return), each group in requeue order: one at a time to the front in batch order (so
    /// reversed) with `requeue_reverses_batch`, else in batch order.
    fn group_requeued(&mut self, batch: &[Slot], count: &mut [u32], top: usize) {
        for p in 1..=top + 1 {
            count[p] += count[p - 1];
        }
        let mut fill = [0u32; LEVEL_CAP as usize + 2];
        fill.copy_from_slice(count);
        // Every place up to `batch.len()` is written below (no need to clear it first).
        if self.requeued.len() < batch.len() {
            self.requeued.resize(batch.len(), 0);
        }
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
