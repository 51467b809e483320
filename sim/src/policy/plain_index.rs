//! The requests of a [`super::KeyedRanking`] a batch formation may pass over without looking.
//!
//! A *plain* request has no KV anywhere (new, or preempted by recompute) and is out of the
//! pipeline: its next step needs `need ≥ 1` GPU blocks, a number that changes only when it runs
//! (every request of a plan is re-keyed, and re-classified, before the next formation). While a
//! formation has no free GPU block and `freeing` blocks on their way out (swap-outs it started),
//! a plain candidate with `need ≤ freeing` is a no-op: it cannot join, and it makes nobody be
//! evicted ([`super::common::form_priority_batch_from`]). In a burst nearly the whole queue is
//! such candidates between the batch's few residents; [`Skipper`] finds the next candidate that is
//! not a no-op in O(log n) instead of walking them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound::{Excluded, Unbounded};

use super::ReplicaView;
use super::ranking::RankKey;
use crate::vocab::request::{KvLoc, Slot};

/// The ranked requests split into the plain ones, by the blocks their next step needs, and the
/// others; both in ranking order.
#[derive(Debug, Default)]
pub(super) struct PlainIndex {
    /// Blocks each plain slot's next step needs; 0 for the others.
    need: Vec<u32>,
    by_need: BTreeMap<u32, BTreeSet<RankKey>>,
    others: BTreeSet<RankKey>,
}

impl PlainIndex {
    /// The blocks plain request `s` needs for its next step; 0 if it is not plain.
    fn classify(view: &ReplicaView, s: Slot) -> u32 {
        let r = view.req(s);
        if r.kv_loc == KvLoc::None && !r.in_flight() {
            view.extra_blocks_for_next(s)
        } else {
            0
        }
    }

    /// Ranked request `k` was put in the ranking (in its state in `view`).
    pub(super) fn insert(&mut self, view: &ReplicaView, k: RankKey) {
        self.put(k, Self::classify(view, k.slot()));
    }

    fn put(&mut self, k: RankKey, need: u32) {
        let i = k.slot() as usize;
        if self.need.len() <= i {
            self.need.resize(i + 1, 0);
        }
        self.need[i] = need;
        if need > 0 {
            self.by_need.entry(need).or_default().insert(k);
        } else {
            self.others.insert(k);
        }
    }

    /// Ranked request `k` left the ranking.
    pub(super) fn remove(&mut self, k: RankKey) {
        let need = self.need[k.slot() as usize];
        if need == 0 {
            self.others.remove(&k);
            return;
        }
        if let Some(b) = self.by_need.get_mut(&need) {
            b.remove(&k);
            if b.is_empty() {
                self.by_need.remove(&need);
            }
        }
    }

    /// Ranked request `old` may have changed: it is now `new` (the same request).
    pub(super) fn update(&mut self, view: &ReplicaView, old: RankKey, new: RankKey) {
        let need = Self::classify(view, new.slot());
        if new != old || need != self.need[new.slot() as usize] {
            self.remove(old);
            self.put(new, need);
        }
    }

    /// Whether `s` was plain when last classified.
    pub(super) fn is_plain(&self, s: Slot) -> bool {
        self.need.get(s as usize).is_some_and(|&n| n > 0)
    }
}

/// Consecutive plain candidates a formation walks before [`Skipper`] starts to jump (below this,
/// walking is cheaper than the bucket heads).
pub(super) const SKIP_AFTER: u32 = 32;

/// One formation's search for the next candidate that is not a no-op: the first request of each
/// bucket of plain requests that needs more than `freeing` blocks, ranked below the current
/// candidate, in a heap (a k-way merge), and the others looked up directly.
#[derive(Debug, Default)]
pub(super) struct Skipper {
    heads: BinaryHeap<Reverse<(RankKey, u32)>>,
    /// The smallest need the heads were taken for; `None` before the first search.
    lo: Option<u32>,
}

impl Skipper {
    /// Ready for a new formation (the heap keeps its allocation).
    pub(super) fn clear(&mut self) {
        self.heads.clear();
        self.lo = None;
    }

    /// The first request ranked below `cur` that is not a plain one needing `1..lo` blocks;
    /// `looked_at` counts the index look-ups.
    pub(super) fn next_relevant(
        &mut self,
        idx: &PlainIndex,
        cur: RankKey,
        lo: u32,
        looked_at: &mut usize,
    ) -> Option<RankKey> {
        let after = (Excluded(cur), Unbounded);
        if self.lo.is_none_or(|l| lo < l) {
            self.heads.clear();
            for (&need, b) in idx.by_need.range(lo..) {
                *looked_at += 1;
                if let Some(&k) = b.range(after).next() {
                    self.heads.push(Reverse((k, need)));
                }
            }
            self.lo = Some(lo);
        }
        let plain = loop {
            let Some(&Reverse((k, need))) = self.heads.peek() else {
                break None;
            };
            if need < lo {
                // Needs no more than is freeing now: a no-op from here on.
                self.heads.pop();
            } else if k <= cur {
                self.heads.pop();
                *looked_at += 1;
                if let Some(&k) = idx.by_need.get(&need).and_then(|b| b.range(after).next()) {
                    self.heads.push(Reverse((k, need)));
                }
            } else {
                break Some(k);
            }
        };
        *looked_at += 1;
        let other = idx.others.range(after).next().copied();
        match (plain, other) {
            (Some(p), Some(o)) => Some(p.min(o)),
            (p, o) => p.or(o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::{KeyedRanking, Ranking};
    use super::super::ranking::tests::view;
    use super::super::{Plan, PreemptionChoice};
    use crate::vocab::KvPool;
    use crate::vocab::request::{KvLoc, Request, Slab};

    /// Forms one batch with [`KeyedRanking`] and with the re-sorting [`Ranking`] (ranked by
    /// predicted output length) over `reqs`; returns both plans, the entries the keyed
    /// formation looked at and how far down the ranking the batch reaches. Every request counts
    /// as in the last plans (re-keyed first).
    fn form_both(reqs: &Slab, kv: &KvPool, host: &KvPool, n: u32) -> (Plan, Plan, usize, usize) {
        let v = view(reqs, kv, host);
        let key = |s| v.req(s).predicted_output_tokens as f64;
        let (mut reference, mut keyed) = (Ranking::default(), KeyedRanking::jumping());
        for s in 0..n {
            reference.add(s);
            keyed.add(&v, s, key(s));
            keyed.touch(s);
        }
        let (mut want, mut got) = (Plan::default(), Plan::default());
        reference.rank_and_form(&v, &mut want, PreemptionChoice::Swap, None, key);
        keyed.rank_and_form(&v, &mut got, PreemptionChoice::Swap, None, key);
        let order = reference.order();
        let reach = got
            .run
            .iter()
            .filter_map(|r| order.iter().position(|&s| s == r.slot));
        let reach = reach.max().unwrap_or(0);
        (got, want, keyed.looked_at(), reach)
    }

    /// A resident request (KV on the GPU, 2 blocks) whose next decode token fits its blocks.
    fn resident(id: u64, predicted: u32) -> Request {
        let mut r = Request::new(id, 0, 16, 100, predicted);
        (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (4, 20, 2, KvLoc::Gpu);
        r
    }

    /// A burst at a boundary with no free GPU block: `queued` new requests (as boosted ones)
    /// rank ahead of 24 resident ones. The first evicts the lowest resident by swap; the rest need
    /// no more blocks than that frees (one in 97 needs one more: it evicts the next one), so
    /// they neither join nor evict, and the residents ranked below them fill the batch.
    fn burst_boundary(queued: u32) -> (Plan, Plan, usize, usize) {
        let residents = 24u32;
        let mut reqs = Slab::default();
        for i in 0..queued {
            let input = if i % 97 == 50 { 40 } else { 20 };
            let mut r = Request::new(i as u64, 0, input, 100, 1 + i % 7);
            if i % 50 == 3 && i < 300 {
                // A few swapped-out ones: looked at, and no-ops too.
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (4, input + 4, KvLoc::Host);
            }
            reqs.insert(r);
        }
        for i in 0..residents {
            reqs.insert(resident((queued + i) as u64, 1000 + i));
        }
        let mut kv = KvPool::new(2 * residents, 16);
        assert!(kv.try_alloc(2 * residents));
        let host = KvPool::new(100_000, 16);
        form_both(&reqs, &kv, &host, queued + residents)
    }

    /// The work of a burst boundary does not grow with the queue: the no-op candidates between
    /// the front and the residents are jumped over (the old walk looked at every one of them).
    #[test]
    fn burst_formation_work_does_not_grow_with_the_queue() {
        let mut work = Vec::new();
        for queued in [2_000, 20_000] {
            let (got, want, looked_at, _) = burst_boundary(queued);
            assert_eq!(got.run, want.run);
            assert_eq!(got.preempt, want.preempt);
            assert_eq!(got.run.len(), 16);
            assert!(got.preempt.len() >= 2, "{:?}", got.preempt);
            work.push(looked_at);
        }
        assert_eq!(work[0], work[1], "work per boundary: {work:?}");
        assert!(work[1] <= 200, "work per boundary: {work:?}");
    }

    /// Random boundaries (requests new, resident, swapped out or being copied, of random sizes
    /// and ranks; few free blocks, a host pool that sometimes forces recompute): the keyed
    /// formation, jumps included, forms the plans of the re-sorting one.
    #[test]
    fn jumps_form_the_same_plans_as_the_walk() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut jumped = 0;
        for case in 0..300 {
            let n = 50 + next(400) as u32;
            let mut reqs = Slab::default();
            let mut used = 0;
            for i in 0..n {
                let input = 1 + next(90) as u32;
                // Resident ones rank anywhere or (most of them) below the rest.
                let low = next(2) as u32 * 30;
                let mut r = Request::new(i as u64, 0, input, 100, 1 + low + next(30) as u32);
                match next(40) {
                    0..=5 => {
                        let g = 1 + next(20) as u32;
                        let kv = input + g - next(2) as u32;
                        r.blocks = (input + g).div_ceil(16);
                        (r.generated_tokens, r.kv_tokens, r.kv_loc) = (g, kv, KvLoc::Gpu);
                        used += r.blocks;
                    }
                    6 => (r.generated_tokens, r.kv_tokens, r.kv_loc) = (3, input + 3, KvLoc::Host),
                    7 => r.kv_loc = KvLoc::SwappingIn,
                    _ => r.predicted_output_tokens -= low,
                }
                reqs.insert(r);
            }
            let mut kv = KvPool::new(used + next(3) as u32, 16);
            assert!(kv.try_alloc(used));
            let host = KvPool::new(next(40) as u32, 16);
            let (got, want, looked_at, reach) = form_both(&reqs, &kv, &host, n);
            assert_eq!(got.run, want.run, "case {case}");
            assert_eq!(got.preempt, want.preempt, "case {case}");
            jumped += usize::from(looked_at < reach);
        }
        assert!(jumped > 10, "few formations jumped: {jumped}");
    }
}
