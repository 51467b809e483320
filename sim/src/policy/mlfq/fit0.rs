//! `fit0`: the subsequence of `resident` of the requests whose next step may need no new KV
//! block, which the `host_full = "defer"` backfill walks when no block is free.
//!
//! Under a burst the GPU pool fills with decoding requests, each at the end of its last block, and
//! the host pool fills too: at every boundary the backfill ([`Mlfq::backfill_resident`]) walked
//! all of `resident` (thousands of requests) to find the few whose next token fits their blocks.
//! Without chunked prefill a request's need for new blocks changes only when it runs (its KV
//! grows, it gets blocks), is swapped in, or loses its KV: a request seen needing a block stays
//! so until it runs or is swapped in. `fit0` holds every request of `resident` not known to need
//! a block (and possibly requests that left `resident`: it is a superset), in `resident`'s order:
//! a request joins it where and when it joins `resident` (it ran or is swapped in), a walk drops
//! those it finds needing a block or off the GPU, and it is rebuilt from `resident` whenever
//! `resident` is (or is marked stale).

use super::super::{Plan, ReplicaView};
use super::{LEVEL_CAP, Mlfq};
use crate::vocab::request::{KvLoc, Slot};

impl Mlfq {
    /// Rebuild `fit0` as a copy of `resident` (valid).
    fn rebuild_fit0(&mut self) {
        // Every flag set is of a member (flags are set only while valid).
        for (_, q) in self.fit0.levels() {
            for &s in q.as_slice() {
                self.f0[s as usize] = false;
            }
        }
        self.fit0.clear();
        if self.f0.len() < self.res.len() {
            self.f0.resize(self.res.len(), false);
        }
        for (p, q) in self.resident.levels() {
            let to = self.fit0.level_mut(p);
            for &s in q.as_slice() {
                self.f0[s as usize] = true;
                to.push_back(s);
            }
            self.fit0.sync(p);
        }
        self.fit_rebuilds += 1;
        self.fit_valid = true;
    }

    /// Whether `s` is in `fit0` (meaningful while `fit_valid`).
    pub(super) fn in_fit0(&self, s: Slot) -> bool {
        self.f0.get(s as usize) == Some(&true)
    }

    /// Set `s`'s `fit0` flag (only while `fit0` is valid: the flags then tell its members).
    pub(super) fn set_fit0(&mut self, s: Slot, on: bool) {
        if !self.fit_valid {
            return;
        }
        if self.f0.len() <= s as usize {
            self.f0.resize(s as usize + 1, false);
        }
        self.f0[s as usize] = on;
    }

    /// `s` leaves the queues: it leaves `fit0` too.
    pub(super) fn fit0_remove(&mut self, s: Slot, level: usize) {
        if self.in_fit0(s) {
            self.f0[s as usize] = false;
            if self.fit_valid {
                self.fit0.remove(level, s);
            }
        }
    }

    /// `fifo`: `s` (it ran) joins `fit0` at its place by arrival.
    pub(super) fn fit0_join_fifo(&mut self, s: Slot) {
        if self.fit_valid && !self.in_fit0(s) {
            let p = self.state[s as usize].level as usize;
            let seq = &self.arrival_seq;
            let q = self.fit0.level_mut(p);
            let at = q
                .as_slice()
                .partition_point(|&x| seq[x as usize] < seq[s as usize]);
            q.insert(at, s);
            self.set_fit0(s, true);
        }
    }

    /// `s` (a swap-in of the plan) joins `fit0` at its place in `ran_order`.
    pub(super) fn fit0_join_swap_in(&mut self, s: Slot) {
        if !self.fit_valid || self.in_fit0(s) {
            return;
        }
        let p = self.state[s as usize].level as usize;
        let f0 = &self.f0;
        let mut at = 0;
        for &x in self.ran_order.level(p).as_slice() {
            if x == s {
                break;
            }
            at += (f0.get(x as usize) == Some(&true)) as usize;
        }
        self.set_fit0(s, true);
        self.fit0.level_mut(p).insert(at, s);
    }

    /// The backfill with no free block, without chunked prefill: what the walk of `resident`
    /// would add (the GPU-resident runnable requests outside `taken` whose next token fits their
    /// blocks, in priority order up to `max_batch_size`), found by walking `fit0`, dropping the
    /// requests met that need a block or are off the GPU. `taken` is marked by the caller.
    pub(super) fn backfill_fit0(&mut self, view: &ReplicaView, plan: &mut Plan, free: i64) {
        debug_assert!(free <= 0 && self.cfg.chunk_size.is_none());
        if !self.fit_valid {
            self.rebuild_fit0();
        }
        self.fit_walks += 1;
        let b = view.limits.max_batch_size as usize;
        let mut walked = [(0usize, false); LEVEL_CAP as usize + 1];
        'levels: for (p, q) in self.fit0.levels() {
            for &s in q.as_slice() {
                if plan.run.len() >= b {
                    break 'levels;
                }
                walked[p].0 += 1;
                let r = view.req(s);
                let off_gpu = matches!(r.kv_loc, KvLoc::Host | KvLoc::SwappingOut)
                    || (r.kv_loc == KvLoc::None && r.blocks == 0);
                if off_gpu {
                    self.f0[s as usize] = false;
                    walked[p].1 = true;
                    continue;
                }
                if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || !r.runnable() {
                    continue;
                }
                let n = view.extra_blocks_of(r, 0) as i64;
                if n <= free {
                    plan.run_chunk(s, 0);
                } else if n > 0 {
                    // It needs a block until it runs or is swapped in (it then joins again).
                    self.f0[s as usize] = false;
                    walked[p].1 = true;
                }
            }
        }
        self.backfill_looked += walked.iter().map(|w| w.0 as u64).sum::<u64>();
        for (p, &(n, dropped)) in walked.iter().enumerate() {
            if dropped {
                let f0 = &self.f0;
                self.fit0.level_mut(p).retain_first(n, |s| f0[s as usize]);
                self.fit0.sync(p);
            }
        }
    }
}
