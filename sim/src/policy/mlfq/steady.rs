//! Fast-forward for the multi-level queues: how long the plan repeats (`steady`) and how the
//! queue state follows the repeats, stepwise through the lazy state (`lazy.rs`) or at once.

use super::*;

impl FastForward for Mlfq {
    /// The plan repeats while: the batch is a prefix of the priority order (so the first request
    /// left out stays out: its reason — batch full, KV blocks, deferral — cannot ease while free
    /// blocks only shrink), nobody in the batch passes its quantum (no demotion), no queued request
    /// reaches the starvation threshold, and proactive offloading keeps its reserve without a swap.
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady> {
        debug_assert!(!self.lazy.active, "schedule wrote the lazy state back");
        let queued = self.order.len();
        if batch.len() > queued || !self.order.starts_with(batch) {
            return None;
        }
        let threshold_ns = (self.cfg.starvation_threshold_s * 1e9).round() as Ns;
        if threshold_ns == 0 {
            return None;
        }
        let reserve_floor = self.reserve_floor(view);
        if batch.len() == queued && !self.cfg.fifo {
            // The batch holds every request: demotions and requeues reorder it but cannot change
            // it (nobody is left out, nobody waits to be promoted, no swap has a candidate); the
            // engine checks memory. Followed step by step.
            // A prefill in it repeats as a decode, and a completion leaves every other request in
            // it: the plan is still "everyone".
            return Some(Steady {
                stepwise: true,
                with_prefills: true,
                through_completions: true,
                min_free_blocks: reserve_floor,
                ..Steady::UNBOUNDED
            });
        }
        if self.cfg.chunk_size.is_some() && self.cfg.batch_memory == BatchMemory::Reserve {
            // Under chunked prefill, `reserve_free_blocks` may recompute a queued request only
            // for batch members that need blocks at this boundary and arrived before it (the
            // recompute guard): a decode crossing into a new block later can let the popped
            // request left out now evict a queued one and join. Not steady.
            return None;
        }
        let max_service_ns = self.service_left(batch);
        // `fifo` has no starvation promotion, so no deadline.
        let until_ns = if self.cfg.fifo {
            Ns::MAX
        } else {
            self.starvation_deadline_ns(batch.len(), threshold_ns, view.now_ns)
        };
        let offloading =
            self.cfg.preemption == PreemptionChoice::Swap && view.host_capacity_blocks() > 0;
        let proactive = offloading
            && match self.cfg.offload {
                Offload::Reactive => false,
                Offload::Proactive => true,
                // ENST moves with the clock: its swap order can change while nothing else does.
                Offload::Paper => return None,
            };
        let min_free_blocks = if self.cfg.batch_memory == BatchMemory::Reserve {
            reserve_floor
        } else if proactive {
            // No swap-out while free blocks cover the reserve plus what the first request left
            // out without GPU memory needs; no swap-in became possible (free blocks only shrink).
            let reserve = view.limits.max_batch_size.max(self.cfg.min_free_blocks);
            let blocked = self
                .order
                .iter_from(batch.len())
                .find(|&s| matches!(view.req(s).kv_loc, KvLoc::None | KvLoc::Host));
            let need = blocked.map_or(0, |s| view.extra_blocks_for_next(s));
            let min = reserve.saturating_add(need);
            if view.free_blocks() < min {
                return None;
            }
            min
        } else {
            0
        };
        Some(Steady {
            max_iterations: u64::MAX,
            min_free_blocks,
            max_service_ns,
            until_ns,
            ..Steady::UNBOUNDED
        })
    }

    fn on_steady_step(
        &mut self,
        batch: &mut [Slot],
        repeat: u64,
        duration_ns: Ns,
        view: &ReplicaView,
    ) {
        // What `on_iteration_end` does, with the batch = every queued request, followed lazily.
        let _ = batch;
        if !self.lazy.active {
            self.lazy_begin();
        }
        self.lazy_step(duration_ns, view.now_ns, |s| {
            view.req(s).kv_tokens_after_next() + repeat as u32 - 1
        });
        // What the next `schedule` does before forming the (same) batch: count the boundary and
        // maybe run the starvation check, which promotes nobody (everyone just ran).
        self.iterations += 1;
    }

    fn on_steady_begin(&mut self, max_service_ns: Ns) {
        // A run that may take in arrivals goes on past the next event: every threshold counts.
        self.lazy.bound_ns = if self.absorbs() {
            i64::MAX
        } else {
            max_service_ns.min(i64::MAX as Ns) as i64
        };
    }

    fn takes_arrivals(&self) -> bool {
        self.absorbs()
    }

    fn may_absorb(&self, batch_len: usize, arrivals: &[Slot], view: &ReplicaView) -> bool {
        Mlfq::may_absorb(self, batch_len, arrivals, view)
    }

    fn on_steady_absorb(
        &mut self,
        arrivals: &[Slot],
        repeat: u64,
        duration_ns: Ns,
        view: &ReplicaView,
    ) {
        self.lazy_absorb(arrivals, duration_ns, view.now_ns, |x| {
            view.req(x).kv_tokens_after_next() + repeat as u32 - 1
        });
    }

    fn steady_order(&mut self, batch: &mut [Slot]) {
        if self.lazy.active && !self.lazy.fresh_slots.is_empty() {
            // An arrival the run did not take in is queued too: the batch is the others.
            self.lazy_order_without_fresh(batch);
        } else if self.lazy.active {
            let lz = &self.lazy;
            let mut i = 0;
            for (p, q) in lz.levels.iter().enumerate() {
                if q.is_empty() {
                    continue;
                }
                let out = &mut batch[i..i + q.len()];
                if lz.reversed(p) {
                    for (o, &s) in out.iter_mut().zip(q.iter().rev()) {
                        *o = s;
                    }
                } else {
                    out.copy_from_slice(q.as_slice());
                }
                i += q.len();
            }
        } else if self.order.len() > batch.len() {
            // The run's first boundary, with arrivals the batch does not hold.
            self.order_without_newest(batch);
        } else {
            self.order.copy_prefix(batch);
        }
    }

    fn on_steady_iterations(
        &mut self,
        batch: &mut [Slot],
        iterations: u64,
        service_ns: Ns,
        view: &ReplicaView,
    ) {
        self.materialize();
        self.iterations += iterations;
        for &s in batch.iter() {
            self.leave_block(s);
        }
        for &s in batch.iter() {
            let st = &mut self.state[s as usize];
            st.attained_ns += service_ns;
            st.last_step_ns = view.now_ns;
        }
        // Each requeue puts the batch back at the front of its levels, reversed when
        // `requeue_reverses_batch`: the batch is a prefix of the order, i.e. whole levels and the
        // front of one, so an odd number of requeues reverses each level's batch segment.
        let reverse = self.cfg.requeue_reverses_batch && iterations % 2 == 1;
        self.ensure_ran(self.state.len());
        let mut left = batch.len();
        let mut i = 0;
        for p in self.order.numbers() {
            if left == 0 {
                break;
            }
            let q = self.order.level_mut(p);
            let k = left.min(q.len());
            if reverse {
                q.as_mut_slice()[..k].reverse();
            }
            // The batch has run: its members that had run before are the front of the level in
            // `ran_order`, which now starts with the level's whole batch segment.
            let segment = &mut batch[i..i + k];
            segment.copy_from_slice(&q.as_slice()[..k]);
            let ran = &mut self.ran;
            let before = segment.iter().filter(|&&s| ran[s as usize]).count();
            let rq = self.ran_order.level_mut(p);
            rq.drop_front(before);
            for &s in segment.iter().rev() {
                rq.push_front(s);
                ran[s as usize] = true;
            }
            self.ran_order.sync(p);
            // So in `resident` (its members of the segment are the front of its level).
            let res = &mut self.res;
            if self.res_valid {
                let before = segment.iter().filter(|&&s| res[s as usize]).count();
                let rq = self.resident.level_mut(p);
                rq.drop_front(before);
                for &s in segment.iter().rev() {
                    rq.push_front(s);
                }
                self.resident.sync(p);
            }
            for &s in segment.iter() {
                res[s as usize] = true;
            }
            left -= k;
            i += k;
        }
    }
}

impl Mlfq {
    /// The free blocks a repeat must keep (0 unless reserving):
    /// `batch_memory = "reserve"`: the repeat's decision is the same while the blocks left free
    /// after its allocations cover the reserve (else `reserve_free_blocks` would swap out or
    /// drop batch members); a proactive swap-in cannot become possible (free blocks only
    /// shrink) and the popped batch is the same (the first request left out of a prefix stays
    /// out: its reason — batch full, deferral, memory — cannot ease).
    fn reserve_floor(&self, view: &ReplicaView) -> u32 {
        if self.cfg.batch_memory == BatchMemory::Reserve
            && self.cfg.preemption == PreemptionChoice::Swap
            && view.host_capacity_blocks() > 0
            && self.cfg.offload == Offload::Proactive
        {
            view.limits.max_batch_size.max(self.cfg.min_free_blocks)
        } else {
            0
        }
    }

    /// When the first request of `order[from..]` reaches the starvation threshold — or, once
    /// one has reached it by `now_ns`, that request's time: any time not after `now_ns` stops a
    /// repeat before it starts (the first boundary it could start at is the end of the
    /// iteration under way), so the rest of a long queue of idle requests is not scanned.
    fn starvation_deadline_ns(&self, from: usize, threshold_ns: Ns, now_ns: Ns) -> Ns {
        let mut first = Ns::MAX;
        for s in self.order.iter_from(from) {
            let at = self.state[s as usize]
                .last_step_ns
                .saturating_add(threshold_ns);
            if at <= now_ns {
                return at;
            }
            first = first.min(at);
        }
        first
    }

    /// The most service any batch member can get before it passes its quantum (`Ns::MAX`: all
    /// are at the lowest level).
    fn service_left(&self, batch: &[Slot]) -> Ns {
        let mut max_service_ns = Ns::MAX;
        for &s in batch {
            let st = &self.state[s as usize];
            if st.level < self.max_level() {
                let q = self.quantum_ns_table[st.level as usize];
                max_service_ns = max_service_ns.min(q.saturating_sub(st.attained_ns));
            }
        }
        max_service_ns
    }
}
