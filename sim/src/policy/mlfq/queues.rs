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
        self.ensure_ran(self.state.len());
        for &s in batch {
            let st = self.charged(s, duration_ns, now, max_level, &kv_tokens);
            let old = self.state[s as usize].level as usize;
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
        self.mark_taken(batch, true);
        let taken = &self.taken;
        for p in 0..=top {
            let group = &self.requeued[count[p] as usize..count[p + 1] as usize];
            if leaving[p] > 0 || !group.is_empty() {
                self.requeue_touched += self.order.requeue_level(p, leaving[p], taken, group);
            }
            if ran_leaving[p] > 0 || !group.is_empty() {
                self.ran_order
                    .requeue_level(p, ran_leaving[p], taken, group);
            }
            // The batch holds GPU blocks: it is (again) in `resident`, at its level's front.
            if self.res_valid && (res_leaving[p] > 0 || !group.is_empty()) {
                self.resident.requeue_level(p, res_leaving[p], taken, group);
            }
            // And in `fit0` (its next token may fit its blocks).
            if self.fit_valid && (fit_leaving[p] > 0 || !group.is_empty()) {
                self.fit0.requeue_level(p, fit_leaving[p], taken, group);
            }
        }
        for &s in batch {
            self.taken[s as usize] = false;
            self.ran[s as usize] = true;
            self.res[s as usize] = true;
        }
        for &s in batch {
            self.set_fit0(s, true);
        }
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
