//! `resident`: the subsequence of `ran_order` of the requests that may hold GPU blocks, which the
//! `batch_memory = "reserve"` eviction walks from the lowest priority up.
//!
//! Under a burst spread over many replicas every request of a replica runs early and then waits
//! on its host pool, so `ran_order` is mostly host-resident requests; a walk of it for victims
//! looked at all of them at every eviction. `resident` holds every request of `ran_order` that is
//! GPU-resident with blocks (and possibly others: it is a superset, pruned as it is walked), in
//! the same order, so a walk over it meets the same victims in the same order.
//!
//! How a request gets GPU blocks is always seen here: it runs (its batch is requeued: it joins
//! `resident` at the front of its level, as it joins `ran_order`), or a plan swaps it in (it joins
//! at its place when the plan is made). A request leaves the GPU only by a preemption or a finish;
//! one met on the host, being swapped out or without KV is dropped from `resident` as the walk
//! passes it (it can come back only by one of the two ways above). Moves of `ran_order` that are
//! not followed one by one here (a starvation promotion, a lazily followed run written back) mark
//! `resident` stale: the next walk rebuilds it from `ran_order` and the requests' KV.

use super::super::{Plan, PreemptMode, ReplicaView};
use super::Mlfq;
use super::reserve::Room;
use super::{HostFull, LEVEL_CAP};
use crate::vocab::request::{KvLoc, Request, Slot};

/// A request that cannot hold GPU blocks again until it runs or is swapped in.
pub(super) fn off_gpu(r: &Request) -> bool {
    matches!(r.kv_loc, KvLoc::Host | KvLoc::SwappingOut)
        || (r.kv_loc == KvLoc::None && r.blocks == 0)
}

impl Mlfq {
    /// `resident` no longer follows `ran_order`: rebuilt at the next walk.
    pub(super) fn resident_stale(&mut self) {
        self.res_valid = false;
        self.fit_valid = false;
    }

    /// Rebuild `resident` from `ran_order` and the requests' KV.
    pub(super) fn rebuild_resident(&mut self, view: &ReplicaView) {
        self.resident.clear();
        if self.res.len() < self.ran.len() {
            self.res.resize(self.ran.len(), false);
        }
        for (p, q) in self.ran_order.levels() {
            let to = self.resident.level_mut(p);
            for &s in q.as_slice() {
                let keep = !off_gpu(view.req(s));
                self.res[s as usize] = keep;
                if keep {
                    to.push_back(s);
                }
            }
            self.resident.sync(p);
        }
        self.res_rebuilds += 1;
        self.fit_valid = false;
        self.res_valid = true;
    }

    /// `s` (queued, it ran) leaves the queues: it leaves `resident` too.
    pub(super) fn resident_remove(&mut self, s: Slot, level: usize) {
        self.fit0_remove(s, level);
        if self.res.get(s as usize) == Some(&true) {
            self.res[s as usize] = false;
            if self.res_valid {
                self.resident.remove(level, s);
            }
        }
    }

    /// `fifo`: the batch (it ran) joins `resident` at its places by arrival.
    pub(super) fn resident_join_fifo(&mut self, batch: &[Slot]) {
        for &s in batch {
            self.fit0_join_fifo(s);
            if self.res_valid && !self.res[s as usize] {
                let p = self.state[s as usize].level as usize;
                let seq = &self.arrival_seq;
                let q = self.resident.level_mut(p);
                let at = q
                    .as_slice()
                    .partition_point(|&x| seq[x as usize] < seq[s as usize]);
                q.insert(at, s);
            }
            self.res[s as usize] = true;
        }
    }

    /// The requests a plan swaps in join `resident` at their places in `ran_order` (found from
    /// the front of their level: a swap-in is of a request near the front).
    pub(super) fn resident_join_swap_ins(&mut self, plan: &Plan) {
        if !self.res_valid {
            return;
        }
        for &s in &plan.swap_in {
            if !self.has_run(s) {
                continue;
            }
            self.fit0_join_swap_in(s);
            if self.res[s as usize] {
                continue;
            }
            let p = self.state[s as usize].level as usize;
            let res = &self.res;
            let mut at = 0;
            for &x in self.ran_order.level(p).as_slice() {
                self.res_looked += 1;
                if x == s {
                    break;
                }
                at += res[x as usize] as usize;
            }
            self.res[s as usize] = true;
            self.resident.level_mut(p).insert(at, s);
        }
    }

    /// Swap out (or recompute) queued GPU-resident requests from the lowest priority up until
    /// `room.deficit` is covered: `resident` walked from the back (it holds them all, in
    /// `ran_order`'s order), dropping the requests off the GPU that it passes.
    pub(super) fn evict_queued(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        room: &mut Room,
        host_full: HostFull,
    ) {
        #[cfg(test)]
        if self.walk_ran_order {
            return self.evict_queued_by_ran_order(view, plan, room, host_full);
        }
        if !self.res_valid {
            self.rebuild_resident(view);
        }
        let mut looked = 0u64;
        // What the smallest victim (one block) takes on the host.
        let smallest_host_blocks = view.host_blocks_for(1) as i64;
        // Per level walked: how many of its last entries were walked, and whether any was dropped.
        let mut walked = [(0usize, false); LEVEL_CAP as usize + 1];
        'levels: for p in self.resident.numbers().rev() {
            for &s in self.resident.level(p).as_slice().iter().rev() {
                if room.deficit <= 0 {
                    break 'levels;
                }
                looked += 1;
                walked[p].0 += 1;
                let r = view.req(s);
                if off_gpu(r) {
                    self.res[s as usize] = false;
                    walked[p].1 = true;
                    continue;
                }
                if self.taken[s as usize]
                    || r.kv_loc != KvLoc::Gpu
                    || r.in_flight()
                    || r.blocks == 0
                {
                    continue;
                }
                match self.evict_mode(view, s, &mut room.host_free, host_full) {
                    Some(PreemptMode::Recompute) if !self.may_recompute(s, room.guard) => {
                        room.host_blocked = true;
                    }
                    Some(mode) => {
                        plan.preempt.push((s, mode));
                        room.deficit -= r.blocks as i64;
                        if mode == PreemptMode::Recompute {
                            room.freed_now += r.blocks as i64;
                        }
                    }
                    None => {
                        room.host_blocked = true;
                        // `defer` refuses every victim from here on: no one is left to evict.
                        if host_full == HostFull::Defer && room.host_free < smallest_host_blocks {
                            break 'levels;
                        }
                    }
                }
            }
        }
        self.drop_walked(&walked, true);
        self.scanned += looked;
    }

    /// Drop from `resident` the requests a walk unmarked: per level, `walked[p]` = (how many of
    /// its first — `from_back`: last — entries the walk passed, whether it unmarked any).
    pub(super) fn drop_walked(&mut self, walked: &[(usize, bool)], from_back: bool) {
        for (p, &(n, dropped)) in walked.iter().enumerate() {
            if dropped {
                let res = &self.res;
                let q = self.resident.level_mut(p);
                if from_back {
                    q.retain_last(n, |s| res[s as usize]);
                } else {
                    q.retain_first(n, |s| res[s as usize]);
                }
                self.resident.sync(p);
            }
        }
    }

    /// `defer`: when the host refused a swap-out, the requests that wait for memory leave
    /// their batch places to queued requests below them whose KV is already on the GPU (in
    /// priority order, size limit only: they are decodes), so that the GPU-resident work
    /// goes on and frees memory — the code has no such case (it crashes on a full pool).
    /// They are in `resident` (built by the eviction walk before this), walked from the front.
    pub(super) fn backfill_resident(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        free: &mut i64,
    ) {
        let b = view.limits.max_batch_size as usize;
        let mut tokens_left = self.tokens_left(plan);
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = true;
        }
        for &s in &self.popped {
            self.taken[s as usize] = true;
        }
        if !self.res_valid {
            self.rebuild_resident(view);
        }
        #[cfg(test)]
        let reference = self.walk_ran_order;
        #[cfg(not(test))]
        let reference = false;
        if !reference && *free <= 0 && self.cfg.chunk_size.is_none() {
            // Only a request needing no new block can join: `fit0` holds them all.
            self.backfill_fit0(view, plan, *free);
            self.untake_preempted_popped(plan);
            return;
        }
        let order = if reference {
            &self.ran_order
        } else {
            &self.resident
        };
        let mut walked = [(0usize, false); LEVEL_CAP as usize + 1];
        'levels: for (p, q) in order.levels() {
            for &s in q.as_slice() {
                if plan.run.len() >= b {
                    break 'levels;
                }
                walked[p].0 += 1;
                let r = view.req(s);
                if !reference && off_gpu(r) {
                    self.res[s as usize] = false;
                    walked[p].1 = true;
                    continue;
                }
                if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || !r.runnable() {
                    continue;
                }
                let Some((chunk, tokens)) = self.step_for(view, s, tokens_left) else {
                    break 'levels;
                };
                let n = view.extra_blocks_for_chunk(s, chunk) as i64;
                if n <= *free {
                    *free -= n;
                    tokens_left -= tokens;
                    plan.run_chunk(s, chunk);
                }
            }
        }
        self.backfill_looked += walked.iter().map(|w| w.0 as u64).sum::<u64>();
        self.drop_walked(&walked, false);
        self.untake_preempted_popped(plan);
    }

    /// Unmark in `taken` the plan's preemptions and the popped batch.
    fn untake_preempted_popped(&mut self, plan: &Plan) {
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = false;
        }
        for &s in &self.popped {
            self.taken[s as usize] = false;
        }
    }
}
