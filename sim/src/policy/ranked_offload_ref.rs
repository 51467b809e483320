//! The offload of [`super::ranked_offload`] as it was before its indexes (round 8, case 13): the
//! list of every request that was in a plan, pruned and filtered at each boundary (O(resident)
//! per boundary). Kept for the tests as the reference the indexed version must match plan for
//! plan.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::common::{KeyedRanking, OffloadTarget, RankKey, mark_plan, unmark_plan};
use super::swap_passes::{SwapInRoom, swap_in_while_room, swap_out_while_short};
use super::{Plan, ReplicaView};
use crate::vocab::request::{KvLoc, Slot};

/// The slots that may hold KV on the GPU or the host (or have a copy in flight): every request
/// that was in a plan, until it is found with no KV (finished, or preempted by recompute).
#[derive(Debug, Default)]
pub struct Resident {
    slots: Vec<Slot>,
    member: Vec<bool>,
    /// Scratch for the swap-out and swap-in candidates (kept to avoid an allocation per boundary).
    out: Vec<RankKey>,
    into: Vec<Reverse<RankKey>>,
    /// Entries looked at so far (the list walked by `prune` and the two filters).
    pub looked_at: u64,
}

impl Resident {
    /// Add the slots of `plan` (after it was formed: they are the only ones whose KV can move).
    pub fn note_plan(&mut self, plan: &Plan) {
        let slots = plan.run.iter().map(|r| r.slot);
        let slots = slots.chain(plan.preempt.iter().map(|p| p.0));
        for s in slots.chain(plan.swap_in.iter().copied()) {
            let i = s as usize;
            if self.member.len() <= i {
                self.member.resize(i + 1, false);
            }
            if !self.member[i] {
                self.member[i] = true;
                self.slots.push(s);
            }
        }
    }

    /// Drop the slots that hold no KV any more; the rest stay, in no particular order.
    fn prune(&mut self, view: &ReplicaView) {
        self.looked_at += self.slots.len() as u64;
        let member = &mut self.member;
        self.slots.retain(|&s| {
            let keep = view.reqs.contains(s)
                && (view.req(s).kv_loc != KvLoc::None || view.req(s).in_flight());
            member[s as usize] = keep;
            keep
        });
    }
}

/// Proactive offloading after the batch of `plan` was formed from `ranking` (see the module
/// docs and [`super::common::score_offload`], whose decisions this reproduces).
pub fn reference_offload(
    view: &ReplicaView,
    plan: &mut Plan,
    ranking: &KeyedRanking,
    resident: &mut Resident,
    target: OffloadTarget,
    taken: &mut Vec<bool>,
) {
    let OffloadTarget {
        free_after,
        reserve,
        window: _,
    } = target;
    let host_free = mark_plan(view, plan, taken);
    // The best-ranked request left out of the batch (not in a plan, not in the pipeline) with no
    // KV on the GPU: the reserve keeps room for its next step.
    let blocked = ranking.iter().find(|&s| {
        let r = view.req(s);
        !taken[s as usize] && !r.in_flight() && matches!(r.kv_loc, KvLoc::None | KvLoc::Host)
    });
    let blocked_need = blocked.map_or(0, |s| view.extra_blocks_for_next(s)) as i64;
    let deficit = reserve as i64 + blocked_need - free_after as i64;
    resident.prune(view);
    let mut swapped_out = false;
    if deficit > 0 {
        // GPU-resident, ranked below `blocked`, not in a micro-batch in the pipeline; popped
        // lowest-ranked first (a heap: only the few popped cost a log).
        let floor = blocked.map(|b| ranking.rank_key(b));
        resident.looked_at += resident.slots.len() as u64;
        let mut out = std::mem::take(&mut resident.out);
        out.clear();
        out.extend(
            resident
                .slots
                .iter()
                .filter(|&&s| {
                    let r = view.req(s);
                    // One the pass would skip whatever came before it (no blocks, or more host
                    // room than there is now: the room only shrinks) is left off the heap, so a
                    // full host pool costs no pops (round 8, case 13).
                    !taken[s as usize]
                        && r.kv_loc == KvLoc::Gpu
                        && !r.in_flight()
                        && r.blocks > 0
                        && view.host_blocks_for(r.blocks) as i64 <= host_free
                })
                .map(|&s| ranking.rank_key(s))
                .filter(|k| floor.is_none_or(|f| *k > f)),
        );
        let mut heap = BinaryHeap::from(out);
        // Popped lazily: only the few swapped out (or skipped) cost a log.
        let cand = std::iter::from_fn(|| heap.pop().map(|k| k.slot()));
        swapped_out = swap_out_while_short(view, plan, taken, cand, deficit, host_free);
        resident.out = heap.into_vec();
    }
    let room = SwapInRoom {
        free_after,
        reserve,
        blocked,
        blocked_need,
    };
    if !swapped_out && room.may_fit_any(view) {
        // Host-resident, popped highest-ranked first.
        resident.looked_at += resident.slots.len() as u64;
        let mut into = std::mem::take(&mut resident.into);
        into.clear();
        into.extend(
            resident
                .slots
                .iter()
                .filter(|&&s| !taken[s as usize] && view.req(s).kv_loc == KvLoc::Host)
                .map(|&s| Reverse(ranking.rank_key(s))),
        );
        let mut heap = BinaryHeap::from(into);
        let cand = std::iter::from_fn(|| heap.pop().map(|Reverse(k)| k.slot()));
        swap_in_while_room(view, plan, cand, room);
        resident.into = heap.into_vec();
    }
    unmark_plan(plan, taken);
}
