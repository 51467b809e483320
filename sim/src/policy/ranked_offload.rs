//! [`super::common::score_offload`] for a score that is monotone in the ranking (ALISE's EWT: a
//! prefix sum of non-negative remaining times over the ranking, so ordering by EWT, ties by
//! position, *is* the ranking order), over a [`KeyedRanking`] and ordered indexes of the requests
//! it looks at ([`Resident`]: those waiting with no KV, those on the host, the swap-out
//! candidates), kept up to date from the requests that may have changed, instead of a scan of
//! the whole ranking or of every request holding KV. A boundary costs O((plan + changed +
//! looked-at) · log n): with thousands of requests holding KV (a burst at `max_batch_size` 1,
//! round 8 case 13) the work no longer grows with them.
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
//! when the policy decides, and the decisions are `score_offload`'s.

use std::collections::{BTreeMap, BTreeSet};

use super::common::{KeyedRanking, OffloadTarget, RankKey, mark_plan, unmark_plan};
use super::swap_passes::{SwapInRoom, swap_in_while_room, swap_out_one};
use super::{Plan, ReplicaView};
use crate::vocab::request::{KvLoc, Slot};

/// Where a request waits, for the left-out and swap-in searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waits {
    /// No KV anywhere, out of the pipeline (new, or preempted by recompute).
    Empty,
    /// KV on the host only.
    Host,
}

/// The requests an offload looks at, kept by rank in ordered sets brought up to date from the
/// requests that may have changed, so that a boundary costs O((plan + changed) · log n) instead
/// of a walk of every request that holds KV.
///
/// Only a plan moves KV (runs, swaps, preempts) or changes a key ([`KeyedRanking`] re-keys the
/// members of the last plans), so a request is re-classified when it was in the last plan, while
/// it is in the pipeline or has a copy in flight (its state moves without a plan), and when it
/// arrives. The swap-out index, needed only at boundaries short of memory, is brought up to date
/// only then (the requests that may have changed since wait in `stale`).
#[derive(Debug, Default)]
pub struct Resident {
    /// Requests to re-classify at the next boundary, and whether each is listed.
    watch: Vec<Slot>,
    watched: Vec<bool>,
    /// Requests to re-classify before the next swap-out pass, and whether each is listed.
    stale: Vec<Slot>,
    is_stale: Vec<bool>,
    /// Requests with no KV, out of the pipeline; and those with KV on the host only.
    empty: BTreeSet<RankKey>,
    host: BTreeSet<RankKey>,
    /// Per slot: which of `empty` and `host` holds it, under which key.
    waits: Vec<Option<(Waits, RankKey)>>,
    /// GPU-resident requests with blocks, out of the pipeline (the swap-out candidates), with
    /// the count of each number of blocks they hold (the smallest says whether any fits the host).
    gpu: BTreeSet<RankKey>,
    gpu_blocks: BTreeMap<u32, u32>,
    /// Per slot: its key in `gpu` and its blocks there.
    in_gpu: Vec<Option<(RankKey, u32)>>,
    /// Entries looked at (listed requests re-classified, index entries visited) so far: the work
    /// a test counts.
    looked_at: u64,
    keep: Vec<Slot>,
}

/// Put `s` in `list` unless `flag` says it is there.
fn list(list: &mut Vec<Slot>, flag: &mut Vec<bool>, s: Slot) {
    let i = s as usize;
    if flag.len() <= i {
        flag.resize(i + 1, false);
    }
    if !flag[i] {
        flag[i] = true;
        list.push(s);
    }
}

impl Resident {
    /// Request `s` arrived (it waits with no KV).
    pub fn note_arrival(&mut self, s: Slot) {
        list(&mut self.watch, &mut self.watched, s);
    }

    /// Add the slots of `plan` (after it was formed: they are the only ones whose KV can move).
    pub fn note_plan(&mut self, plan: &Plan) {
        let slots = plan.run.iter().map(|r| r.slot);
        let slots = slots.chain(plan.preempt.iter().map(|p| p.0));
        for s in slots.chain(plan.swap_in.iter().copied()) {
            list(&mut self.watch, &mut self.watched, s);
        }
    }

    /// Request `s` finished: it leaves every index (its slot may be reused).
    pub fn note_finish(&mut self, s: Slot) {
        if self.waits.get(s as usize).is_some_and(Option::is_some) {
            self.set_waits(s, None);
        }
        if self.in_gpu.get(s as usize).is_some_and(Option::is_some) {
            self.set_gpu(s, None);
        }
    }

    /// Entries looked at so far.
    pub fn looked_at(&self) -> u64 {
        self.looked_at
    }

    fn set_waits(&mut self, s: Slot, new: Option<(Waits, RankKey)>) {
        let i = s as usize;
        if self.waits.len() <= i {
            self.waits.resize(i + 1, None);
        }
        let old = self.waits[i];
        if old == new {
            return;
        }
        match old {
            Some((Waits::Empty, k)) => self.empty.remove(&k),
            Some((Waits::Host, k)) => self.host.remove(&k),
            None => false,
        };
        match new {
            Some((Waits::Empty, k)) => self.empty.insert(k),
            Some((Waits::Host, k)) => self.host.insert(k),
            None => false,
        };
        self.waits[i] = new;
    }

    fn set_gpu(&mut self, s: Slot, new: Option<(RankKey, u32)>) {
        let i = s as usize;
        if self.in_gpu.len() <= i {
            self.in_gpu.resize(i + 1, None);
        }
        let old = self.in_gpu[i];
        if old == new {
            return;
        }
        if let Some((k, b)) = old {
            self.gpu.remove(&k);
            let n = self.gpu_blocks.get_mut(&b).expect("counted when added");
            *n -= 1;
            if *n == 0 {
                self.gpu_blocks.remove(&b);
            }
        }
        if let Some((k, b)) = new {
            self.gpu.insert(k);
            *self.gpu_blocks.entry(b).or_insert(0) += 1;
        }
        self.in_gpu[i] = new;
    }

    /// Re-classify the listed requests (after the ranking re-keyed them); those still in the
    /// pipeline or with a copy in flight stay listed, every one waits for the swap-out index.
    fn classify(&mut self, view: &ReplicaView, ranking: &KeyedRanking) {
        let mut watch = std::mem::take(&mut self.watch);
        self.looked_at += watch.len() as u64;
        self.keep.clear();
        for &s in &watch {
            self.watched[s as usize] = false;
            if !view.reqs.contains(s) {
                self.set_waits(s, None);
                continue;
            }
            let r = view.req(s);
            let waits = match r.kv_loc {
                KvLoc::None if !r.in_flight() => Some(Waits::Empty),
                KvLoc::Host => Some(Waits::Host),
                _ => None,
            };
            // The usual case (a decode on the GPU, waiting nowhere) touches no index.
            let listed = self.waits.get(s as usize).is_some_and(Option::is_some);
            if waits.is_some() || listed {
                self.set_waits(s, waits.map(|w| (w, ranking.rank_key(s))));
            }
            if r.in_flight() || r.in_transfer() {
                self.keep.push(s);
            }
            list(&mut self.stale, &mut self.is_stale, s);
        }
        watch.clear();
        for &s in &self.keep {
            self.watched[s as usize] = true;
        }
        watch.extend_from_slice(&self.keep);
        self.watch = watch;
    }

    /// Bring the swap-out index up to date.
    fn refresh_gpu(&mut self, view: &ReplicaView, ranking: &KeyedRanking) {
        let stale = std::mem::take(&mut self.stale);
        self.looked_at += stale.len() as u64;
        for &s in &stale {
            self.is_stale[s as usize] = false;
            let new = view.reqs.contains(s).then(|| view.req(s)).and_then(|r| {
                let candidate = r.kv_loc == KvLoc::Gpu && !r.in_flight() && r.blocks > 0;
                candidate.then(|| (ranking.rank_key(s), r.blocks))
            });
            self.set_gpu(s, new);
        }
        self.stale = stale;
        self.stale.clear();
    }

    /// The best-ranked request left out of `plan` (not taken, not in the pipeline) with no KV on
    /// the GPU.
    fn left_out(&mut self, view: &ReplicaView, taken: &[bool]) -> Option<RankKey> {
        let mut looked = 0;
        let mut first = |set: &BTreeSet<RankKey>| {
            set.iter()
                .inspect(|_| looked += 1)
                .find(|k| !taken[k.slot() as usize] && !view.req(k.slot()).in_flight())
                .copied()
        };
        let (empty, host) = (first(&self.empty), first(&self.host));
        self.looked_at += looked;
        match (empty, host) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Swap out GPU-resident requests ranked below `floor`, lowest-ranked first (skipping those
    /// taken, or without host room), until `deficit` blocks are freed; whether any was.
    fn swap_out(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        taken: &mut [bool],
        floor: Option<RankKey>,
        (mut deficit, mut host_free): (i64, i64),
    ) -> bool {
        let Some(&smallest) = self.gpu_blocks.keys().next() else {
            return false;
        };
        // The host room only shrinks: once the smallest candidate does not fit, none does.
        let min_need = view.host_blocks_for(smallest) as i64;
        let mut swapped_out = false;
        for k in self.gpu.iter().rev() {
            if deficit <= 0 || min_need > host_free || floor.is_some_and(|f| *k <= f) {
                break;
            }
            self.looked_at += 1;
            let s = k.slot();
            if !taken[s as usize] {
                swapped_out |= swap_out_one(view, plan, taken, s, (&mut deficit, &mut host_free));
            }
        }
        swapped_out
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
    resident.classify(view, ranking);
    let host_free = mark_plan(view, plan, taken);
    // The best-ranked request left out of the batch (not in a plan, not in the pipeline) with no
    // KV on the GPU: the reserve keeps room for its next step.
    let floor = resident.left_out(view, taken);
    let blocked = floor.map(|k| k.slot());
    let blocked_need = blocked.map_or(0, |s| view.extra_blocks_for_next(s)) as i64;
    let deficit = reserve as i64 + blocked_need - free_after as i64;
    let mut swapped_out = false;
    if deficit > 0 {
        resident.refresh_gpu(view, ranking);
        swapped_out = resident.swap_out(view, plan, taken, floor, (deficit, host_free));
    }
    let room = SwapInRoom {
        free_after,
        reserve,
        blocked,
        blocked_need,
    };
    if !swapped_out && room.may_fit_any(view) {
        // Host-resident, highest-ranked first.
        let mut looked = 0;
        let cand = resident.host.iter().inspect(|_| looked += 1);
        let cand = cand.map(|k| k.slot()).filter(|&s| !taken[s as usize]);
        swap_in_while_room(view, plan, cand, room);
        resident.looked_at += looked;
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
    /// and looks at no candidate: a full host pool costs nothing per boundary (round 8, case 13:
    /// 2,000 GPU-resident requests were heaped and popped at every boundary).
    #[test]
    fn a_full_host_pool_costs_no_swap_out_candidate() {
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
        resident.note_arrival(n - 1);
        resident.note_plan(&all);
        let target = OffloadTarget {
            free_after: kv.free_blocks(),
            reserve: 16,
            window: usize::MAX,
        };
        let (mut plan, mut taken) = (Plan::default(), Vec::new());
        ranked_offload(&v, &mut plan, &ranking, &mut resident, target, &mut taken);
        assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
        // The next boundary (nothing changed) looks at the waiting request only.
        let before = resident.looked_at();
        ranked_offload(&v, &mut plan, &ranking, &mut resident, target, &mut taken);
        assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
        assert_eq!(resident.looked_at() - before, 1);
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
        for s in [in_flight, waiting] {
            resident.note_arrival(s);
        }
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
