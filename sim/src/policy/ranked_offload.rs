//! [`super::common::score_offload`] for a score that is monotone in the ranking (ALISE's EWT: a
//! prefix sum of non-negative remaining times over the ranking, so ordering by EWT, ties by
//! position, *is* the ranking order), over a [`KeyedRanking`] and the short list of requests that
//! may hold KV ([`Resident`]) instead of a scan of the whole ranking.
//!
//! Same decisions as `score_offload` with `window = usize::MAX`: swap-out candidates are the
//! GPU-resident requests ranked below the first left-out request without GPU KV, lowest-ranked
//! first; swap-in candidates the host-resident ones, highest-ranked first. One difference, with
//! pipeline parallelism only: a request in a micro-batch still in the pipeline is not *left out*
//! (it is in a batch, and holds the blocks of its step), so it is never the request the reserve
//! is kept for. A prefill in flight (no KV location yet, its next step needing no block) taken as
//! that request made the reserve look met, and the swap-in pass brought back the request the
//! formation had just swapped out to make room for the one really left out, which swapped it out
//! again at the next boundary, and so on (alise, pp 4, 130 blocks, 3,000 requests at once with a
//! slow pipeline send: 2.8 M preemptions; round 8, case 06). With pp = 1 nothing is in flight
//! when the policy decides, and the decisions are `score_offload`'s. The work per boundary
//! is O(resident · log resident + looked-at) instead of O(queue) — the queue of an overloaded
//! replica grows without bound, the resident requests are bounded by the GPU and host pools.

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
    /// Swap-out candidates put on the heap so far (the work a test counts).
    out_candidates: u64,
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
pub fn ranked_offload(
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
        resident.out_candidates += out.len() as u64;
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

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::policy::PreemptMode;
    use crate::vocab::KvPool;
    use crate::vocab::request::{Request, Slab};

    /// With the host pool too full for any resident request, the swap-out pass swaps out nothing
    /// and puts no candidate on its heap: a full host pool costs no pops per boundary (round 8,
    /// case 13: 2,000 GPU-resident requests were heaped and popped at every boundary).
    #[test]
    fn a_full_host_pool_heaps_no_swap_out_candidate() {
        let n = 2000u32;
        let mut reqs = Slab::default();
        for i in 0..n as u64 {
            let s = reqs.insert(Request::new(i, 0, 60, 50, 50));
            if i + 1 < n as u64 {
                let mut r = reqs.get_mut(s);
                r.kv_loc = KvLoc::Gpu;
                r.blocks = 4;
            }
        }
        let (mut kv, host) = (KvPool::new(4 * n, 16), KvPool::new(1, 16));
        assert!(kv.try_alloc(4 * (n - 1)));
        let v = crate::policy::ranking::tests::view(&reqs, &kv, &host);
        let mut ranking = KeyedRanking::default();
        // The waiting request ranks first, every resident one below it.
        ranking.add(&v, n - 1, 0.0);
        let mut all = Plan::default();
        for s in 0..n - 1 {
            ranking.add(&v, s, 1.0 + s as f64);
            all.preempt.push((s, PreemptMode::Swap));
        }
        let mut resident = Resident::default();
        resident.note_plan(&all);
        let target = OffloadTarget {
            free_after: kv.free_blocks(),
            reserve: 16,
            window: usize::MAX,
        };
        let (mut plan, mut taken) = (Plan::default(), Vec::new());
        ranked_offload(&v, &mut plan, &ranking, &mut resident, target, &mut taken);
        assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
        assert_eq!(resident.out_candidates, 0);
    }

    /// With pipeline parallelism: the best-ranked request is a prefill in flight (no KV
    /// location yet, its blocks held), the next one a new request the free blocks cannot hold,
    /// and a request swapped out for it waits on the host. The reserve is kept for the new
    /// request, not for the one in flight, so the host request is not swapped back in (it was,
    /// and the formation swapped it out again at the next boundary: round 8, case 06).
    #[test]
    fn a_request_in_flight_is_not_the_left_out_one() {
        let mut reqs = Slab::default();
        let in_flight = reqs.insert(Request::new(0, 0, 320, 50, 50));
        {
            let mut r = reqs.get_mut(in_flight);
            (r.blocks, r.in_batch) = (20, true);
        }
        let waiting = reqs.insert(Request::new(1, 0, 480, 50, 50));
        let on_host = reqs.insert(Request::new(2, 0, 64, 50, 50));
        {
            let mut r = reqs.get_mut(on_host);
            (r.kv_loc, r.generated_tokens, r.offloaded_gpu_blocks) = (KvLoc::Host, 10, 5);
            (r.kv_tokens, r.host_blocks) = (73, 3);
        }
        let (mut kv, host) = (KvPool::new(40, 16), KvPool::new(100, 16));
        assert!(kv.try_alloc(20));
        let v = crate::policy::ranking::tests::view(&reqs, &kv, &host);
        let mut ranking = KeyedRanking::default();
        for (s, key) in [(in_flight, 0.0), (waiting, 1.0), (on_host, 2.0)] {
            ranking.add(&v, s, key);
        }
        let mut resident = Resident::default();
        resident.note_plan(&Plan {
            preempt: vec![(on_host, PreemptMode::Swap)],
            ..Plan::default()
        });
        let target = OffloadTarget {
            free_after: kv.free_blocks(),
            reserve: 4,
            window: usize::MAX,
        };
        let (mut plan, mut taken) = (Plan::default(), Vec::new());
        ranked_offload(&v, &mut plan, &ranking, &mut resident, target, &mut taken);
        assert_eq!(v.extra_blocks_for_next(waiting), 30);
        assert!(plan.swap_in.is_empty(), "{:?}", plan.swap_in);
        assert!(plan.preempt.is_empty(), "{:?}", plan.preempt);
    }

    /// Whenever [`SwapInRoom::may_fit_any`] says no, the swap-in pass over every host-resident request,
    /// in any order, swaps in nothing: skipping it changes no plan.
    #[test]
    fn a_skipped_swap_in_pass_would_have_swapped_in_nothing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (kv, host) = (KvPool::new(1000, 16), KvPool::new(1000, 16));
        let mut skipped = 0;
        for case in 0..2000 {
            let mut reqs = Slab::default();
            let mut slots = Vec::new();
            for i in 0..rng.random_range(1..8u64) {
                let s = reqs.insert(Request::new(i, 0, 16, 50, 50));
                let mut r = reqs.get_mut(s);
                r.kv_loc = if rng.random_bool(0.7) {
                    KvLoc::Host
                } else {
                    KvLoc::None
                };
                r.offloaded_gpu_blocks = rng.random_range(0..6);
                slots.push(s);
            }
            let view = crate::policy::ranking::tests::view(&reqs, &kv, &host);
            let blocked = rng
                .random_bool(0.8)
                .then(|| slots[rng.random_range(0..slots.len())]);
            let room = SwapInRoom {
                free_after: rng.random_range(0..12),
                reserve: rng.random_range(0..6),
                blocked,
                blocked_need: blocked.map_or(0, |b| view.extra_blocks_for_next(b)) as i64,
            };
            if room.may_fit_any(&view) {
                continue;
            }
            skipped += 1;
            let on_host = slots
                .iter()
                .copied()
                .filter(|&s| view.req(s).kv_loc == KvLoc::Host);
            let mut order: Vec<Slot> = on_host.collect();
            if rng.random_bool(0.5) {
                order.reverse();
            }
            let mut plan = Plan::default();
            swap_in_while_room(&view, &mut plan, order.into_iter(), room);
            assert!(plan.swap_in.is_empty(), "case {case}: {room:?}");
        }
        assert!(skipped > 200, "only {skipped} skipped cases");
    }
}
