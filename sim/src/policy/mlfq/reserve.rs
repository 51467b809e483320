//! Batch formation and GPU memory as FastServe's official code does them (`batch_memory =
//! "reserve"`): `MLFQ.get_next_batch` pops the batch, `MLFQ.reserve_free_blocks` makes its memory
//! and swaps in ahead of time (LLMServe/FastServe `fastserve/scheduler.py`). See the policy header
//! for each rule and where servesim departs from the code.

use super::super::{Plan, PreemptMode, PreemptionChoice, ReplicaView, RunItem};
use super::pop_skip::PopWalk;
use super::{HostFull, Mlfq, Offload};
use crate::vocab::request::{KvLoc, Slot};

impl Mlfq {
    /// GPU blocks of this policy's swap-outs still being copied. FastServe counts them as
    /// available (`BlockManager.get_num_avail_gpu_blocks` = free + swapping; an allocation that
    /// needs them waits for the copies, `_get_free_blocks` → `wait_for_all_swap_out`).
    fn swapping_out_blocks(&mut self, view: &ReplicaView) -> u32 {
        self.swapping_out
            .retain(|&s| view.reqs.contains(s) && view.req(s).kv_loc == KvLoc::SwappingOut);
        self.swapping_out.iter().map(|&s| view.req(s).blocks).sum()
    }

    /// How a victim gives up its GPU blocks: swap when the host pool takes it, else by
    /// `host_full` (`None` = defer: it is not evicted). Without a host pool, or with
    /// `preemption = "recompute"`, by recompute.
    pub(super) fn evict_mode(
        &self,
        view: &ReplicaView,
        s: Slot,
        host_free: &mut i64,
        host_full: HostFull,
    ) -> Option<PreemptMode> {
        if self.cfg.preemption != PreemptionChoice::Swap || view.host_capacity_blocks() == 0 {
            return Some(PreemptMode::Recompute);
        }
        let need = view.host_blocks_for(view.req(s).blocks) as i64;
        if need <= *host_free {
            *host_free -= need;
            Some(PreemptMode::Swap)
        } else {
            match host_full {
                HostFull::Defer => None,
                HostFull::Recompute => Some(PreemptMode::Recompute),
            }
        }
    }

    /// Fill `plan` as FastServe's `get_next_batch` + `reserve_free_blocks` do; `defer_new`: new
    /// prefills are set aside (host pool < 10 % free). Falls back to `host_full = "recompute"` for
    /// a boundary at which deferring would leave nothing to run and nothing in progress.
    pub(super) fn schedule_reserve(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        defer_new: bool,
    ) {
        self.reserve_pass(view, plan, defer_new, self.cfg.host_full);
        // A plan of recompute preemptions alone frees blocks that nothing uses: the replica would
        // idle for ever as well.
        let idle = plan
            .preempt
            .iter()
            .all(|&(_, m)| m == PreemptMode::Recompute);
        if plan.run.is_empty()
            && idle
            && plan.swap_in.is_empty()
            && !self.popped.is_empty()
            && self.nothing_in_progress(view)
        {
            plan.clear();
            self.unstick(view, plan, defer_new);
        }
        for &(s, mode) in &plan.preempt {
            if mode == PreemptMode::Swap {
                self.swapping_out.push(s);
            }
        }
    }

    /// Whether no queued request is being copied or in a batch in flight. Copies are of requests
    /// that ran (`ran_order`, usually short: the answer is mostly found there); only a request in
    /// flight for its first iteration (pipeline parallelism) needs the whole order, and only
    /// while some request of the replica is in a batch in flight (the slab counts them).
    pub(super) fn nothing_in_progress(&self, view: &ReplicaView) -> bool {
        let busy = |s: Slot| view.req(s).in_transfer() || view.req(s).in_flight();
        !self.ran_order.any(busy)
            && (view.reqs.state_counts().running == 0 || !self.order.any(busy))
    }

    /// Nothing can run and no copy is in flight: with `defer`, the GPU and the host are full and
    /// every GPU-resident request needs a new block (the code would crash here). The
    /// lowest-priority resident request (under chunked prefill: the latest arrival, see
    /// [`Mlfq::may_recompute`]) is recomputed and its blocks go to the resident requests in
    /// priority order, a prefill chunk shrinking to the blocks left; without any resident
    /// request, the boundary is planned with `recompute`. If that still runs nothing, the plan
    /// is [`Mlfq::run_what_fits`] (before, such a boundary ended the run with "nothing to run";
    /// round 8, 12).
    fn unstick(&mut self, view: &ReplicaView, plan: &mut Plan, defer_new: bool) {
        // Resident requests have run: `ran_order` holds them all.
        let evictable = |s: Slot| {
            let r = view.req(s);
            r.kv_loc == KvLoc::Gpu && r.blocks > 0 && !r.in_flight()
        };
        let victim = if self.cfg.chunk_size.is_some() {
            let seq = &self.arrival_seq;
            self.ran_order
                .iter()
                .filter(|&s| evictable(s))
                .max_by_key(|&s| seq[s as usize])
        } else {
            self.ran_order.iter_rev().find(|&s| evictable(s))
        };
        match victim {
            Some(v) => self.give_blocks_of(view, plan, v),
            None => self.reserve_pass(view, plan, defer_new, HostFull::Recompute),
        }
        if plan.run.is_empty() {
            // The freed blocks serve no resident request: run, without evicting anyone, what
            // fits in the free blocks in priority order (a swap-in or a prefill chunk).
            plan.clear();
            self.run_what_fits(view, plan);
        }
    }

    /// The last resort of [`Mlfq::unstick`]: every runnable request in priority order whose
    /// next step fits in the free blocks (a prefill chunk shrinking to them) joins the batch,
    /// its KV on the GPU or not (a host-resident one is swapped in on demand).
    pub(super) fn run_what_fits(&mut self, view: &ReplicaView, plan: &mut Plan) {
        let mut free = view.free_blocks() as i64;
        let mut tokens_left = self.tokens_left(plan);
        let b = view.limits.max_batch_size as usize;
        let mut looked = 0u64;
        for s in self.order.iter() {
            if plan.run.len() >= b || free <= 0 {
                break;
            }
            looked += 1;
            let r = view.req(s);
            if !r.runnable() || r.in_flight() {
                continue;
            }
            if self
                .add_if_fits(view, plan, s, &mut tokens_left, &mut free)
                .is_none()
            {
                break;
            }
        }
        self.scanned += looked;
    }

    /// Run `s`'s next step (a prefill chunk shrinking to the `free` blocks) if its blocks fit;
    /// `None` when the token budget has no room for a step (the caller stops there).
    fn add_if_fits(
        &self,
        view: &ReplicaView,
        plan: &mut Plan,
        s: Slot,
        tokens_left: &mut u32,
        free: &mut i64,
    ) -> Option<()> {
        let (chunk, tokens) = self.step_for(view, s, *tokens_left)?;
        let (chunk, tokens) = fit_chunk(view, s, chunk, tokens, *free);
        let n = view.extra_blocks_for_chunk(s, chunk) as i64;
        if n <= *free {
            *free -= n;
            *tokens_left -= tokens;
            plan.run_chunk(s, chunk);
        }
        Some(())
    }

    /// `batch_memory = "evict"` under chunked prefill, when the formation ran nothing and
    /// nothing is in progress: the latest arrival among the GPU-resident requests is recomputed
    /// and its blocks go to the others in priority order ([`Mlfq::give_blocks_of`]); if that
    /// runs nothing, [`Mlfq::run_what_fits`].
    pub(super) fn unstick_chunked(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let seq = &self.arrival_seq;
        let victim = self
            .ran_order
            .iter()
            .filter(|&s| {
                let r = view.req(s);
                r.kv_loc == KvLoc::Gpu && r.blocks > 0 && !r.in_flight()
            })
            .max_by_key(|&s| seq[s as usize]);
        if let Some(v) = victim {
            self.give_blocks_of(view, plan, v);
        }
        if plan.run.is_empty() {
            plan.clear();
            self.run_what_fits(view, plan);
        }
    }

    /// Recompute `v` and run the GPU-resident requests in priority order in the blocks it frees,
    /// a prefill chunk shrinking to the blocks left (a smaller chunk still moves on).
    fn give_blocks_of(&mut self, view: &ReplicaView, plan: &mut Plan, v: Slot) {
        plan.preempt.push((v, PreemptMode::Recompute));
        let mut free = view.free_blocks() as i64 + view.req(v).blocks as i64;
        let mut tokens_left = self.tokens_left(plan);
        for s in self.ran_order.iter() {
            if plan.run.len() >= view.limits.max_batch_size as usize {
                break;
            }
            let r = view.req(s);
            if s == v || r.kv_loc != KvLoc::Gpu || !r.runnable() {
                continue;
            }
            if self
                .add_if_fits(view, plan, s, &mut tokens_left, &mut free)
                .is_none()
            {
                break;
            }
        }
    }

    /// One planning pass at a boundary, in the code's steps: pop the batch, make its memory,
    /// keep what can run now, and swap in ahead of time.
    fn reserve_pass(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        defer_new: bool,
        host_full: HostFull,
    ) {
        let limits = view.limits;
        let b = limits.max_batch_size as usize;
        let need = self.pop_batch(view, plan, defer_new);
        // 2. `reserve_free_blocks(batch)`.
        let swap = self.cfg.preemption == PreemptionChoice::Swap && view.host_capacity_blocks() > 0;
        let proactive = swap && self.cfg.offload == Offload::Proactive;
        let reserve = if proactive {
            limits.max_batch_size.max(self.cfg.min_free_blocks) as i64
        } else {
            0
        };
        let avail = view.free_blocks() as i64 + self.swapping_out_blocks(view) as i64;
        let deficit = reserve + need - avail;
        let swap_out_needed = deficit > 0;
        // Blocks that recompute preemptions free at once (swap-outs free when their copy ends).
        let (freed_now, host_blocked) = if swap_out_needed {
            self.make_room(view, plan, deficit, reserve, host_full)
        } else {
            (0, false)
        };
        // 3. What servesim's engine can run now: a member whose blocks are not free yet (they come
        //    from swap-outs still copying) waits for the next boundary; the code's iteration
        //    would wait for the copies instead.
        let mut free = view.free_blocks() as i64 + freed_now;
        if !swap_out_needed && need <= free {
            // The batch is the popped one and its whole need is free: the walk below would keep
            // every member (each prefix of the need fits), so it is skipped.
            free -= need;
        } else {
            self.blocks_looked += plan.run.len() as u64;
            plan.run.retain(|item| {
                let n = view.extra_blocks_for_item(item) as i64;
                if n <= free {
                    free -= n;
                    true
                } else {
                    false
                }
            });
        }
        if host_blocked && plan.run.len() < b {
            self.backfill_resident(view, plan, &mut free);
        }
        // 4. Proactive swap-in, only when no swap-out was needed: the next `max_batch_size`
        //    queued requests after the popped batch, each counting against the quota whether or
        //    not it is on the host; a host-resident one is swapped in when the available blocks
        //    cover the reserve + the batch's need + its blocks.
        if !swap_out_needed && proactive {
            self.swap_in_ahead(view, plan, reserve + need, avail, free);
        }
    }

    /// 1. `get_next_batch`: pop by priority with only the size and token checks (a new prefill
    ///    is set aside while the host pool is short; a request whose KV is being copied cannot
    ///    run here and is passed over). Returns the extra KV blocks the popped batch needs.
    fn pop_batch(&mut self, view: &ReplicaView, plan: &mut Plan, defer_new: bool) -> i64 {
        debug_assert!(
            plan.run.is_empty(),
            "the batch is popped into an empty plan"
        );
        let mut w = PopWalk {
            prefill_tokens: 0,
            has_prefill: false,
            tokens_left: self.cfg.chunk_size.unwrap_or(0),
            need: 0,
            looked: 0,
            defer_new,
            chunked: self.cfg.chunk_size.is_some(),
            misfit: self.cfg.misfit,
        };
        // Deferred new requests are passed over: walk the requests that ran.
        self.pop_walk(view, plan, &mut w);
        let (looked, need) = (w.looked, w.need);
        self.scanned += looked;
        self.blocks_looked += plan.run.len() as u64;
        self.popped.clear();
        self.popped.extend(plan.run.iter().map(|i| i.slot));
        need
    }

    /// The swap-outs of `reserve_free_blocks` when the batch's need + the reserve exceed the
    /// available blocks; returns the blocks that recompute preemptions free at once and whether
    /// the host refused a swap-out.
    fn make_room(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        deficit: i64,
        reserve: i64,
        host_full: HostFull,
    ) -> (i64, bool) {
        let mut room = Room {
            deficit,
            freed_now: 0,
            host_blocked: false,
            host_free: view.host_free_blocks() as i64,
            guard: self.recompute_guard(view, plan),
        };
        self.mark_run(view, plan, true);
        self.evict_queued(view, plan, &mut room, host_full);
        let Room {
            mut deficit,
            mut freed_now,
            mut host_blocked,
            mut host_free,
            guard,
        } = room;
        // Then drop batch members from its tail, swapping out the GPU-resident ones. A
        // GPU-resident member the host cannot take (`defer`) stays in the batch (dropping it
        // would free nothing) and the next one up is tried; once the host refused a
        // swap-out, members are dropped only while the batch itself does not fit, not to
        // restore the reserve.
        let mut i = plan.run.len();
        while deficit > 0 && i > 0 {
            if deficit <= reserve && (host_blocked || plan.run.len() == 1) {
                // The batch itself fits: the reserve does not take its last member (the code
                // would drop it and, with nothing left to swap out, idle for ever — possible
                // only on a GPU pool of a few blocks).
                break;
            }
            i -= 1;
            let s = plan.run[i].slot;
            let r = view.req(s);
            let n = view.extra_blocks_for_item(&plan.run[i]) as i64;
            if r.kv_loc == KvLoc::Gpu && r.blocks > 0 && !r.in_flight() {
                match self.evict_mode(view, s, &mut host_free, host_full) {
                    Some(PreemptMode::Recompute) if !self.may_recompute(s, guard) => {
                        host_blocked = true;
                        if n == 0 {
                            // It needs no block: dropping it would free nothing and leave its
                            // place empty (it once left the plan empty: round 8, 12).
                            continue;
                        }
                        // Dropped with its KV kept (frees nothing).
                        deficit -= n;
                    }
                    Some(mode) => {
                        plan.preempt.push((s, mode));
                        deficit -= n + r.blocks as i64;
                        if mode == PreemptMode::Recompute {
                            freed_now += r.blocks as i64;
                        }
                    }
                    None => {
                        host_blocked = true;
                        continue;
                    }
                }
            } else {
                deficit -= n;
            }
            self.taken[s as usize] = false;
            plan.run.remove(i);
        }
        self.mark_run(view, plan, false);
        (freed_now, host_blocked)
    }

    /// Under chunked prefill, the smallest arrival number of the batch members that hold KV and
    /// need more blocks: only a request that arrived after it may be preempted by recompute for
    /// them (`u64::MAX` when there is none: a request yet to start takes no one's KV by
    /// recompute). `None`: no such rule, without chunking.
    fn recompute_guard(&self, view: &ReplicaView, plan: &Plan) -> Option<u64> {
        self.cfg.chunk_size?;
        let started = |i: &&RunItem| view.req(i.slot).blocks > 0;
        let min = plan
            .run
            .iter()
            .filter(started)
            .filter(|i| view.extra_blocks_for_item(i) > 0)
            .map(|i| self.arrival_seq[i.slot as usize])
            .min();
        Some(min.unwrap_or(u64::MAX))
    }

    /// Whether `s` may be preempted by recompute for a batch whose [`Mlfq::recompute_guard`] is
    /// `guard`: the earliest arrival among the members that need blocks must precede it. The
    /// earliest unfinished arrival therefore never loses its KV by recompute, and its chunks
    /// accumulate: chunked prefills cannot evict one another in a cycle.
    pub(super) fn may_recompute(&self, s: Slot, guard: Option<u64>) -> bool {
        guard.is_none_or(|g| self.arrival_seq[s as usize] > g)
    }

    /// Mark (or unmark) the plan's batch members in `taken`.
    fn mark_run(&mut self, view: &ReplicaView, plan: &Plan, on: bool) {
        if self.taken.len() < view.slot_capacity() {
            self.taken.resize(view.slot_capacity(), false);
        }
        for item in &plan.run {
            self.taken[item.slot as usize] = on;
        }
    }

    /// 4. Proactive swap-in (see `reserve_pass`): `wanted` = the reserve + the batch's need.
    fn swap_in_ahead(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        wanted: i64,
        mut avail: i64,
        mut free: i64,
    ) {
        if self.popped.len() == self.order.len() {
            // Every queued request was popped: none is left to swap in (the walk below would
            // pass over them all).
            return;
        }
        let mut quota = view.limits.max_batch_size;
        if self.taken.len() < view.slot_capacity() {
            self.taken.resize(view.slot_capacity(), false);
        }
        for &s in &self.popped {
            self.taken[s as usize] = true;
        }
        let taken = &self.taken;
        let mut looked = 0u64;
        self.order.any(|s| {
            if quota == 0 {
                return true;
            }
            looked += 1;
            if taken[s as usize] {
                return false;
            }
            quota -= 1;
            if view.req(s).kv_loc != KvLoc::Host {
                return false;
            }
            let theirs = view.swap_in_blocks(s) as i64;
            if avail >= wanted + theirs && free >= theirs {
                plan.swap_in.push(s);
                avail -= theirs;
                free -= theirs;
            }
            false
        });
        self.ahead_looked += looked;
        for &s in &self.popped {
            self.taken[s as usize] = false;
        }
    }
}

/// `(chunk, tokens)` of `s`'s step cut, for a prefill chunk, to the tokens that the request's
/// blocks and `free` more hold (at least one token; a decode is kept as it is).
fn fit_chunk(view: &ReplicaView, s: Slot, chunk: u32, tokens: u32, free: i64) -> (u32, u32) {
    if chunk == 0 {
        return (chunk, tokens);
    }
    let r = view.req(s);
    let room = (r.blocks as i64 + free.max(0)) * view.block_tokens() as i64 - r.kv_tokens as i64;
    let c = (chunk as i64).min(room.max(1)) as u32;
    (c, c)
}

/// What [`Mlfq::make_room`] still has to free and what it freed so far.
pub(super) struct Room {
    pub(super) deficit: i64,
    /// Blocks that recompute preemptions free at once.
    pub(super) freed_now: i64,
    /// The host refused a swap-out, or `may_recompute` spared a victim.
    pub(super) host_blocked: bool,
    pub(super) host_free: i64,
    pub(super) guard: Option<u64>,
}
