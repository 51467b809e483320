//! Memory management: proactive offloading (FastServe's `reserve_free_blocks`, or the paper's
//! ENST order, module `enst`).

use super::super::swap_passes::swap_out_one;
use super::super::{Plan, PreemptionChoice, ReplicaView, RunItem};
use super::{Mlfq, Offload};
use crate::vocab::request::{KvLoc, Slot};

/// For the requests of the order met front to back: whether each is in `run` (formed from the
/// order in order, so a subsequence of it: the two are walked together) or marked in `taken`.
fn plan_members<'a>(run: &'a [RunItem], taken: &'a [bool]) -> impl FnMut(Slot) -> bool + 'a {
    let mut j = 0;
    move |s| {
        if j < run.len() && run[j].slot == s {
            j += 1;
            true
        } else {
            taken[s as usize]
        }
    }
}

impl Mlfq {
    pub(super) fn preemption(&self) -> PreemptionChoice {
        self.cfg.preemption
    }

    /// Proactive offloading after the batch is formed (see [`Offload`]).
    pub(super) fn proactive(&mut self, view: &ReplicaView, plan: &mut Plan, free_after: u32) {
        if self.cfg.offload == Offload::Reactive
            || self.cfg.preemption != PreemptionChoice::Swap
            || view.host_capacity_blocks() == 0
        {
            return;
        }
        let reserve = view.limits.max_batch_size.max(self.cfg.min_free_blocks);
        if self.cfg.offload == Offload::Paper {
            self.paper_offload(view, plan, free_after, reserve);
            return;
        }
        if self.taken.len() < view.slot_capacity() {
            self.taken.resize(view.slot_capacity(), false);
        }
        // The batch is a subsequence of the order (formed from it in order), so the scans from
        // the front tell its members by walking both; the preempted ones (few) are marked.
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = true;
        }
        // The highest-priority request left out of the batch for want of GPU memory (no KV on the
        // GPU): memory is made for it and never given to anyone below it.
        let blocked = {
            let mut in_plan = plan_members(&plan.run, &self.taken);
            self.order.iter().enumerate().find(|&(_, s)| {
                !in_plan(s) && matches!(view.req(s).kv_loc, KvLoc::None | KvLoc::Host)
            })
        };
        let blocked_need = blocked.map_or(0, |(_, s)| view.extra_blocks_for_next(s));
        let deficit = reserve as i64 + blocked_need as i64 - free_after as i64;
        let floor = blocked.map_or(0, |(i, _)| i + 1);
        // The victims hold KV, so have run: walk `ran_order` down to its part below `floor`.
        let ran_floor = self
            .order
            .iter()
            .take(floor)
            .filter(|&s| self.has_run(s))
            .count();
        let swapped_out = deficit > 0 && self.swap_out_for_reserve(view, plan, ran_floor, deficit);
        if !swapped_out {
            self.swap_in_front(view, plan, free_after, reserve);
        }
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = false;
        }
    }

    /// Swap out GPU-resident requests outside the batch from the lowest priority up to
    /// `ran_order[ran_floor]` (those the host can take) until `deficit` blocks are made; whether
    /// any was.
    pub(super) fn swap_out_below(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        ran_floor: usize,
        mut deficit: i64,
    ) -> bool {
        let mut host_free = i64::from(view.host_free_blocks());
        let mut swapped_out = false;
        for item in &plan.run {
            self.taken[item.slot as usize] = true;
        }
        let below = self.ran_order.len() - ran_floor;
        let mut looked = 0;
        for s in self.ran_order.iter_rev().take(below) {
            if deficit <= 0 {
                break;
            }
            looked += 1;
            let r = view.req(s);
            if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || r.in_flight() {
                continue;
            }
            // Only for the few GPU-resident candidates: most of a long queue holds no KV.
            swapped_out |= swap_out_one(
                view,
                plan,
                &mut self.taken,
                s,
                (&mut deficit, &mut host_free),
            );
        }
        self.scanned += looked;
        for item in &plan.run {
            self.taken[item.slot as usize] = false;
        }
        swapped_out
    }

    /// With nothing swapped out: swap in the host-resident requests at the front of the order
    /// (within `max_batch_size` of it) while the free blocks cover the reserve and theirs.
    fn swap_in_front(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        free_after: u32,
        reserve: u32,
    ) {
        let mut in_plan = plan_members(&plan.run, &self.taken);
        let mut free = free_after as i64;
        let mut quota = view.limits.max_batch_size;
        for s in self.order.iter() {
            if quota == 0 {
                break;
            }
            quota -= 1;
            if in_plan(s) {
                continue;
            }
            let r = view.req(s);
            if r.kv_loc == KvLoc::Gpu || r.in_transfer() {
                continue;
            }
            let need = view.swap_in_blocks(s) as i64;
            if r.kv_loc != KvLoc::Host || free < reserve as i64 + need {
                break; // memory goes to this request first
            }
            plan.swap_in.push(s);
            free -= need;
        }
    }
}
