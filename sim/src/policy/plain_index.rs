//! The requests of a [`super::KeyedRanking`] a batch formation may pass over without looking.
//!
//! Three kinds of requests keep the GPU blocks their next step needs until they run or are
//! evicted (every request of a plan is re-keyed, and re-classified, before the next formation):
//! - a *plain* request has no KV anywhere and holds no block (new, or preempted by recompute) and
//!   is out of the pipeline: its next step is a whole prefill of `prefill_tokens` tokens, which
//!   needs `⌈prefill_tokens / block_tokens⌉` blocks;
//! - a *swapped* request has its KV on the host (the copy done), holds no GPU block, is past its
//!   prefill and out of the pipeline: its next step is a decode that needs the blocks of its KV
//!   and the next token;
//! - a *resident* one that needs a block has its KV on the GPU, is past its prefill and out of
//!   the pipeline, and its next token starts a new block: its next step is a decode that needs
//!   that one block (a resident one whose next token fits its blocks joins whenever there is
//!   room: it is never a no-op).
//!
//! In a formation ([`super::common::form_priority_batch_from`], misfits skipped, whole prefills)
//! such a candidate is a *no-op* — it neither joins nor makes anyone be evicted, the walk just
//! skips it — when ([`NoOps`])
//! - it is plain, the batch holds a prefill, and its prefill would exceed the tokens left; or
//! - it needs more blocks than are free, but no more than are free plus freeing (swap-outs the
//!   formation started: their blocks are not usable for this batch, but no eviction is needed).
//!
//! In a burst nearly the whole queue is no-ops; with a large GPU pool, so are the many resident
//! requests left out of the batch whose next token needs a block once the formation has started a
//! swap-out (ltr with its starvation rule boosts swapped-out and new requests above them).
//! [`PlainIndex`] keeps the plain requests in ranking order per range of prefill tokens and the
//! swapped ones per range of blocks needed ([`RangeTree`]), and the block-needing resident ones
//! in ranking order (one set: a request that runs goes in and out of it every `block_tokens`
//! steps, so it must cost no more than the set of the others), so the first candidate that is
//! not a no-op — a plain one whose prefill tokens lie in one of at most two ranges, a swapped one
//! whose need lies in one of two ranges, a block-needing resident one when one block is not a
//! no-op, or any other request — is found with O(levels) ordered-set look-ups instead of walking
//! the no-ops.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use super::ReplicaView;
use super::ranking::RankKey;
use crate::vocab::request::{KvLoc, Slot};

/// Ranges of values per tree node, level to level.
const FANOUT: u64 = 4;
/// Levels of a [`RangeTree`]: level `k` groups values by `FANOUT^k`; the top one is searched
/// group by group (groups of 1,024).
const LEVELS: usize = 6;

/// How a ranked request was classified when last re-keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Other,
    /// Plain, with these prefill tokens.
    Plain(u32),
    /// Swapped, needing these GPU blocks.
    Swapped(u32),
    /// Resident, its next token needing one more block.
    NeedsBlock,
}

/// Ranked requests by a value (below `u32::MAX`), in ranking order per value range: the requests
/// with values in any range are a union of O(levels · FANOUT) ordered sets.
#[derive(Debug)]
struct RangeTree {
    /// `levels[k]`: the requests by `value / FANOUT^k`.
    levels: Vec<BTreeMap<u32, BTreeSet<RankKey>>>,
}

impl Default for RangeTree {
    fn default() -> Self {
        RangeTree {
            levels: (0..LEVELS).map(|_| BTreeMap::new()).collect(),
        }
    }
}

impl RangeTree {
    fn insert(&mut self, value: u32, k: RankKey) {
        let mut g = value;
        for level in &mut self.levels {
            level.entry(g).or_default().insert(k);
            g /= FANOUT as u32;
        }
    }

    fn remove(&mut self, value: u32, k: RankKey) {
        let mut g = value;
        for level in &mut self.levels {
            if let Some(b) = level.get_mut(&g) {
                b.remove(&k);
                if b.is_empty() {
                    level.remove(&g);
                }
            }
            g /= FANOUT as u32;
        }
    }

    /// Every set of the tree that holds requests with values in `[lo, hi]` (no two overlapping).
    fn for_each_node(&self, (lo, hi): (u64, u64), f: &mut impl FnMut(&BTreeSet<RankKey>)) {
        // Values are below `u32::MAX`: every group index fits a u32.
        let (mut l, mut h) = (lo, hi.saturating_add(1).min(u32::MAX as u64));
        let (top, below) = self.levels.split_last().expect("LEVELS > 0");
        for level in below {
            while l < h && l % FANOUT != 0 {
                if let Some(b) = level.get(&(l as u32)) {
                    f(b);
                }
                l += 1;
            }
            while l < h && h % FANOUT != 0 {
                h -= 1;
                if let Some(b) = level.get(&(h as u32)) {
                    f(b);
                }
            }
            if l >= h {
                return;
            }
            (l, h) = (l / FANOUT, h / FANOUT);
        }
        if l < h {
            top.range(l as u32..=(h - 1) as u32).for_each(|(_, b)| f(b));
        }
    }
}

/// The ranked requests split into the plain ones, by their prefill tokens, the swapped ones, by
/// the blocks they need, the resident ones that need a block, and the others; each in ranking
/// order.
#[derive(Debug, Default)]
pub(super) struct PlainIndex {
    /// Class of each ranked slot.
    class: Vec<Class>,
    plain: RangeTree,
    swapped: RangeTree,
    needs_block: BTreeSet<RankKey>,
    others: BTreeSet<RankKey>,
    /// Whether block-needing resident requests are told apart from the others (only under
    /// memory pressure, [`PlainIndex::index_needs_block`]: a running request changes class every
    /// `block_tokens` steps, two ordered-set updates each time).
    needs_block_on: bool,
    /// Class changes so far (re-keyed requests moved from one set to another).
    pub(super) moves: usize,
}

/// What makes a plain, swapped or block-needing candidate a no-op at this point of a formation (see the module
/// docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct NoOps {
    /// Prefill tokens the batch has room for, once it holds a prefill (`None` before); negative
    /// if its prefills already exceed the budget.
    pub tokens_left: Option<i64>,
    /// GPU blocks free.
    pub free: u32,
    /// GPU blocks on their way out (swap-outs started by the formation).
    pub freeing: u32,
    pub block_tokens: u32,
}

impl NoOps {
    /// The ranges (inclusive, at most two) of blocks needed by the candidates that are not
    /// no-ops for memory: they fit the free blocks, or need more than are free and freeing (an
    /// eviction, or the end of the formation).
    fn relevant_needs(&self) -> [Option<(u64, u64)>; 2] {
        let (free, freeing) = (self.free as u64, self.freeing as u64);
        if freeing == 0 {
            return [Some((0, u64::MAX)), None];
        }
        [Some((0, free)), Some((free + freeing + 1, u64::MAX))]
    }

    /// The ranges (inclusive, at most two) of prefill tokens of the plain candidates that are
    /// not no-ops: the prefill fits the tokens left and its need is a relevant one.
    fn relevant_tokens(&self) -> [Option<(u64, u64)>; 2] {
        let cap = match self.tokens_left {
            None => u64::MAX,
            Some(t) if t < 0 => return [None, None],
            Some(t) => t as u64,
        };
        // ⌈tokens / bt⌉ ≤ n ⟺ tokens ≤ n · bt.
        let bt = self.block_tokens as u64;
        self.relevant_needs().map(|range| {
            let (lo, hi) = range?;
            let lo = if lo == 0 { 0 } else { (lo - 1) * bt + 1 };
            let hi = hi.saturating_mul(bt).min(cap);
            (lo <= hi).then_some((lo, hi))
        })
    }
}

impl PlainIndex {
    /// The class of request `s` in `view`.
    fn classify(&self, view: &ReplicaView, s: Slot) -> Class {
        let r = view.req(s);
        if r.in_flight() {
            return Class::Other;
        }
        let value = match r.kv_loc {
            KvLoc::None if r.kv_tokens == 0 && r.blocks == 0 => Class::Plain(r.prefill_tokens()),
            KvLoc::Host if r.blocks == 0 && !r.in_prefill() => {
                Class::Swapped(view.extra_blocks_for_next(s))
            }
            // (A decode needs at most one more block: any other need is walked.)
            KvLoc::Gpu
                if self.needs_block_on
                    && r.blocks > 0
                    && !r.in_prefill()
                    && view.extra_blocks_for_next(s) == 1 =>
            {
                Class::NeedsBlock
            }
            _ => return Class::Other,
        };
        match value {
            Class::Plain(v) | Class::Swapped(v) if v == u32::MAX => Class::Other,
            c => c,
        }
    }

    /// Ranked request `k` was put in the ranking (in its state in `view`).
    pub(super) fn insert(&mut self, view: &ReplicaView, k: RankKey) {
        self.put(k, self.classify(view, k.slot()));
    }

    /// Tell the block-needing resident requests apart from the others (`on`), or stop. Turning
    /// it on re-classifies `gpu`'s requests (a superset of those with KV on the GPU; `key_of`:
    /// a ranked one's key): a request's state changes only when it is re-keyed, so this is the
    /// class it would have been given then.
    pub(super) fn index_needs_block(
        &mut self,
        view: &ReplicaView,
        on: bool,
        gpu: &[Slot],
        key_of: impl Fn(Slot) -> Option<RankKey>,
    ) {
        self.needs_block_on = on;
        if !on {
            for k in std::mem::take(&mut self.needs_block) {
                self.class[k.slot() as usize] = Class::Other;
                self.others.insert(k);
            }
            return;
        }
        for &s in gpu {
            let Some(k) = key_of(s) else { continue };
            if self.class[s as usize] == Class::Other && self.classify(view, s) == Class::NeedsBlock
            {
                self.others.remove(&k);
                self.put(k, Class::NeedsBlock);
            }
        }
    }

    fn put(&mut self, k: RankKey, class: Class) {
        let i = k.slot() as usize;
        if self.class.len() <= i {
            self.class.resize(i + 1, Class::Other);
        }
        self.class[i] = class;
        match class {
            Class::Other => _ = self.others.insert(k),
            Class::Plain(v) => self.plain.insert(v, k),
            Class::Swapped(v) => self.swapped.insert(v, k),
            Class::NeedsBlock => _ = self.needs_block.insert(k),
        }
    }

    /// Ranked request `k` left the ranking.
    pub(super) fn remove(&mut self, k: RankKey) {
        match self.class[k.slot() as usize] {
            Class::Other => _ = self.others.remove(&k),
            Class::Plain(v) => self.plain.remove(v, k),
            Class::Swapped(v) => self.swapped.remove(v, k),
            Class::NeedsBlock => _ = self.needs_block.remove(&k),
        }
    }

    /// Ranked request `old` may have changed: it is now `new` (the same request).
    pub(super) fn update(&mut self, view: &ReplicaView, old: RankKey, new: RankKey) {
        let class = self.classify(view, new.slot());
        if new != old || class != self.class[new.slot() as usize] {
            self.moves += 1;
            self.remove(old);
            self.put(new, class);
        }
    }

    /// Whether `s` was plain, swapped or needing a block when last classified.
    pub(super) fn is_plain(&self, s: Slot) -> bool {
        self.class
            .get(s as usize)
            .is_some_and(|&c| c != Class::Other)
    }

    /// The first request ranked below `cur` that is not a no-op under `no_ops`; `looked_at`
    /// counts the ordered-set look-ups.
    pub(super) fn next_relevant(
        &self,
        cur: RankKey,
        no_ops: &NoOps,
        looked_at: &mut usize,
    ) -> Option<RankKey> {
        let after = (Excluded(cur), Unbounded);
        *looked_at += 1;
        let mut best = self.others.range(after).next().copied();
        let mut consider = |set: &BTreeSet<RankKey>| {
            *looked_at += 1;
            if let Some(&k) = set.range(after).next() {
                best = Some(best.map_or(k, |b| b.min(k)));
            }
        };
        for range in no_ops.relevant_tokens().into_iter().flatten() {
            self.plain.for_each_node(range, &mut consider);
        }
        let needs = no_ops.relevant_needs();
        for range in needs.into_iter().flatten() {
            self.swapped.for_each_node(range, &mut consider);
        }
        if needs
            .into_iter()
            .flatten()
            .any(|(lo, hi)| lo <= 1 && 1 <= hi)
        {
            consider(&self.needs_block);
        }
        best
    }
}

/// Consecutive plain, swapped or block-needing candidates a formation walks before it starts to jump (below
/// this, walking is cheaper than the look-ups).
pub(super) const SKIP_AFTER: u32 = 32;

#[cfg(test)]
mod tests {
    use super::super::common::{KeyedRanking, Ranking};
    use super::super::ranking::tests::view;
    use super::super::{Plan, PreemptionChoice};
    use crate::vocab::KvPool;
    use crate::vocab::request::{KvLoc, Request, Slab, Slot};

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
        let mut rng = crate::rng::XorShift(0x2545_f491_4f6c_dd1d);
        let mut next = |m: u64| rng.below(m);
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

    /// `queued` requests ranked by `make(i)`'s prediction ahead of 24 resident ones (2 blocks
    /// each, ranked last), with `free` GPU blocks; one formation of both rankings.
    fn boundary(
        queued: u32,
        free: u32,
        make: impl Fn(u32) -> Request,
    ) -> (Plan, Plan, usize, usize) {
        let residents = 24u32;
        let mut reqs = Slab::default();
        for i in 0..queued {
            reqs.insert(make(i));
        }
        for i in 0..residents {
            reqs.insert(resident((queued + i) as u64, 1000 + i));
        }
        let mut kv = KvPool::new(2 * residents + free, 16);
        assert!(kv.try_alloc(2 * residents));
        let host = KvPool::new(100_000, 16);
        form_both(&reqs, &kv, &host, queued + residents)
    }

    /// Asserts that both rankings form the same plan at boundaries of 2,000 and 20,000 queued
    /// requests, and that the keyed one looks at no more than `bound` entries (the walk looks at
    /// about all of them).
    fn work_does_not_grow(
        free: u32,
        bound: usize,
        make: impl Fn(u32) -> Request + Copy,
    ) -> Vec<Plan> {
        let (mut work, mut plans) = (Vec::new(), Vec::new());
        for queued in [2_000, 20_000] {
            let (got, want, looked_at, _) = boundary(queued, free, make);
            assert_eq!(got.run, want.run);
            assert_eq!(got.preempt, want.preempt);
            work.push(looked_at);
            plans.push(got);
        }
        assert!(work[1] <= bound, "work per boundary: {work:?}");
        plans
    }

    /// Token-budget skips (srpt with history predictions in a burst): a 2,000-token prompt ranks
    /// first; after it the batch has 48 tokens left, so the 300-token prompts queued behind it
    /// are skipped (the old walk looked at every one), and one 10-token prompt in 500 fits
    /// until the budget is spent.
    #[test]
    fn token_budget_skips_are_jumped_over() {
        let plans = work_does_not_grow(10_000, 200, |i| {
            let input = match i {
                0 => 2000,
                _ if i % 500 == 7 => 10,
                _ => 300,
            };
            Request::new(i as u64, 0, input, 100, 1 + i % 900)
        });
        // The long prompt, four short ones, and 11 residents (decodes: no prefill tokens).
        assert_eq!(plans[0].run.len(), 16);
        assert!(plans[0].preempt.is_empty());
    }

    /// Memory skips with free blocks (alise with reactive swapping in a burst): 5 blocks are
    /// free; the first request needs 10, so it swaps out 3 residents (6 blocks freeing) and is
    /// skipped; the queue behind it — new prompts and swapped-out requests that need 6 to 11
    /// blocks — neither fits nor evicts, and the residents fill the batch.
    #[test]
    fn memory_skips_with_free_blocks_are_jumped_over() {
        let plans = work_does_not_grow(5, 200, |i| {
            let mut r = Request::new(
                i as u64,
                0,
                if i == 0 { 160 } else { 100 },
                100,
                1 + i % 900,
            );
            if i % 3 == 1 {
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (5, 104, KvLoc::Host);
            }
            r
        });
        assert_eq!(plans[0].run.len(), 16);
        assert_eq!(plans[0].preempt.len(), 3);
    }

    /// A random request for [`jumps_form_the_same_plans_with_budgets_and_swaps`]: new (most),
    /// preempted by recompute, resident, swapped out, or being copied in; prompts mostly of 200 to
    /// 1,500 tokens against the 2,048-token budget, some short. Returns it and the GPU blocks it holds.
    fn random_request(i: u32, next: &mut impl FnMut(u64) -> u64) -> (Request, u32) {
        let input = if next(8) == 0 {
            1 + next(40)
        } else {
            200 + next(1300)
        } as u32;
        let mut r = Request::new(i as u64, 0, input, 3000, 1 + next(60) as u32);
        let g = 1 + next(30) as u32;
        match next(20) {
            0..=2 => {
                r.blocks = (input + g).div_ceil(16);
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (g, input + g - 1, KvLoc::Gpu);
            }
            3..=4 => (r.generated_tokens, r.kv_tokens, r.kv_loc) = (g, input + g, KvLoc::Host),
            5 => r.generated_tokens = g,
            6 => r.kv_loc = KvLoc::SwappingIn,
            _ => {}
        }
        if matches!(r.kv_loc, KvLoc::Gpu | KvLoc::SwappingIn) && next(4) > 0 {
            // Most of the others rank below the queue (runs of plain candidates start jumps).
            r.predicted_output_tokens += 60;
        }
        let held = r.blocks;
        (r, held)
    }

    /// Random boundaries where most of the queue is new requests of random prompt lengths (token
    /// budget skips), with random free blocks, swapped-out requests, and host pools that allow
    /// swap-outs or force recompute: the keyed formation, jumps included, forms the plans of the
    /// walk over the re-sorted ranking (`form_priority_batch`, kept as the reference).
    #[test]
    fn jumps_form_the_same_plans_with_budgets_and_swaps() {
        let mut rng = crate::rng::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut next = |m: u64| rng.below(m);
        let mut jumped = 0;
        for case in 0..400 {
            let n = 50 + next(600) as u32;
            let mut reqs = Slab::default();
            let mut used = 0;
            for i in 0..n {
                let (r, held) = random_request(i, &mut next);
                used += held;
                reqs.insert(r);
            }
            let mut kv = KvPool::new(used + next(150) as u32, 16);
            assert!(kv.try_alloc(used));
            let host = KvPool::new(next(100) as u32, 16);
            let (got, want, looked_at, reach) = form_both(&reqs, &kv, &host, n);
            assert_eq!(got.run, want.run, "case {case}");
            assert_eq!(got.preempt, want.preempt, "case {case}");
            jumped += usize::from(looked_at < reach);
        }
        assert!(jumped > 40, "few formations jumped: {jumped}");
    }

    /// A boundary with no free block where the first candidate (swapped out, needing 3 blocks)
    /// evicts the two lowest residents by swap (4 blocks freeing), then `queued` requests that
    /// can neither join nor evict: new 20-token prompts (2 blocks) and resident requests whose
    /// next token starts a block (1 block), interleaved; then residents that fit (decodes
    /// within their blocks) fill the batch.
    fn resident_no_ops_boundary(queued: u32) -> (Plan, Plan, usize, usize) {
        let mut reqs = Slab::default();
        let mut held = 0;
        for i in 0..queued {
            let predicted = 2 + (i / 2) % 50;
            let mut r = Request::new(i as u64, 0, 20, 100, predicted);
            if i == 0 {
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (14, 34, KvLoc::Host);
                r.predicted_output_tokens = 1;
            } else if i % 2 == 1 {
                // 32 tokens in 2 blocks: the next one needs a third.
                r.input_tokens = 16;
                (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (16, 32, 2, KvLoc::Gpu);
                held += 2;
            }
            reqs.insert(r);
        }
        let residents = 24u32;
        for i in 0..residents {
            reqs.insert(resident((queued + i) as u64, 1000 + i));
        }
        let mut kv = KvPool::new(held + 2 * residents, 16);
        assert!(kv.try_alloc(held + 2 * residents));
        let host = KvPool::new(1_000_000, 16);
        form_both(&reqs, &kv, &host, queued + residents)
    }

    /// The resident requests that need a block once a swap-out is freeing blocks are jumped over
    /// like the plain ones, and the victims come from the ordered residents: the work of such a
    /// boundary does not grow with the resident requests queued (the old formation walked them
    /// all, and built a heap of every resident request). ltr with starvation, a large GPU pool
    /// and a burst (adv8 08) formed such batches at nearly every boundary.
    #[test]
    fn resident_no_ops_are_jumped_over() {
        let mut work = Vec::new();
        for queued in [2_000, 20_000] {
            let (got, want, looked_at, _) = resident_no_ops_boundary(queued);
            assert_eq!(got.run, want.run);
            assert_eq!(got.preempt, want.preempt);
            assert_eq!(got.run.len(), 16);
            assert_eq!(got.preempt.len(), 2);
            work.push(looked_at);
        }
        assert_eq!(work[0], work[1], "work per boundary: {work:?}");
        assert!(work[1] <= 200, "work per boundary: {work:?}");
    }

    /// One step of a mini engine: copies started at the last boundary land (no re-key asked
    /// for: a jumping ranking re-keys the requests being copied until they land), then `plan`
    /// runs (prefill or decode; a swapped-out one is copied in) and evicts (swap or recompute).
    /// Returns the slots that finished.
    fn step(reqs: &mut Slab, kv: &mut KvPool, live: &[Slot], plan: &Plan) -> Vec<Slot> {
        for &s in live {
            let mut r = reqs.get_mut(s);
            match r.kv_loc {
                KvLoc::SwappingOut => {
                    kv.free(r.blocks);
                    (r.blocks, r.kv_loc) = (0, KvLoc::Host);
                }
                KvLoc::SwappingIn => r.kv_loc = KvLoc::Gpu,
                _ => {}
            }
        }
        for &(v, mode) in &plan.preempt {
            let mut r = reqs.get_mut(v);
            if mode == super::super::PreemptMode::Swap {
                r.kv_loc = KvLoc::SwappingOut;
            } else {
                kv.free(r.blocks);
                (r.blocks, r.kv_tokens, r.kv_loc) = (0, 0, KvLoc::None);
            }
        }
        let mut done = Vec::new();
        for item in &plan.run {
            let mut r = reqs.get_mut(item.slot);
            let need = r
                .kv_tokens_after_next()
                .div_ceil(16)
                .saturating_sub(r.blocks);
            assert!(kv.try_alloc(need));
            r.blocks += need;
            r.kv_tokens = if r.in_prefill() {
                r.prefill_tokens()
            } else {
                r.kv_tokens + 1
            };
            r.generated_tokens += 1;
            r.kv_loc = if r.kv_loc == KvLoc::Host {
                KvLoc::SwappingIn
            } else {
                KvLoc::Gpu
            };
            if r.generated_tokens >= r.output_tokens && r.kv_loc == KvLoc::Gpu {
                kv.free(r.blocks);
                done.push(item.slot);
            }
        }
        done
    }

    /// Boundary after boundary of a small replica under memory pressure (random arrivals,
    /// prompts and lengths; keys that change as requests run; swap-outs and swap-ins that land a
    /// boundary later; recompute when there is no host pool), the jumping [`KeyedRanking`] —
    /// its index and its ordered residents kept up by re-keying only the last plans and the
    /// copies in flight — forms the plans of the re-sorting [`Ranking`].
    #[test]
    fn the_kept_up_index_forms_the_same_plans_boundary_after_boundary() {
        let mut rng = crate::rng::XorShift(0x1234_5678_9abc_def1);
        let mut next = |m: u64| rng.below(m);
        let (mut preempted, mut switches) = (0, 0);
        for case in 0..60 {
            let mut reqs = Slab::default();
            let mut kv = KvPool::new(30 + next(150) as u32, 16);
            let host = KvPool::new(if next(3) == 0 { 0 } else { 1_000_000 }, 16);
            let (mut reference, mut keyed) = (Ranking::default(), KeyedRanking::jumping());
            let key = |r: &Request| r.predicted_output_tokens.saturating_sub(r.generated_tokens);
            let mut live: Vec<Slot> = Vec::new();
            for boundary in 0..120u64 {
                for _ in 0..next(if boundary < 20 { 12 } else { 3 }) {
                    let (input, output) = (1 + next(200) as u32, 1 + next(40) as u32);
                    let id = boundary * 100 + live.len() as u64;
                    let s = reqs.insert(Request::new(id, 0, input, output, 1 + next(40) as u32));
                    let v = view(&reqs, &kv, &host);
                    reference.add(s);
                    keyed.add(&v, s, key(v.req(s)) as f64);
                    live.push(s);
                }
                let plan = {
                    let v = view(&reqs, &kv, &host);
                    let k = |s| key(v.req(s)) as f64;
                    let (mut want, mut got) = (Plan::default(), Plan::default());
                    reference.rank_and_form(&v, &mut want, PreemptionChoice::Swap, None, k);
                    keyed.rank_and_form(&v, &mut got, PreemptionChoice::Swap, None, k);
                    assert_eq!(got.run, want.run, "case {case} boundary {boundary}");
                    assert_eq!(got.preempt, want.preempt, "case {case} boundary {boundary}");
                    got
                };
                preempted += plan.preempt.len();
                for s in step(&mut reqs, &mut kv, &live, &plan) {
                    reference.remove(s);
                    keyed.remove(s);
                    reqs.remove(s);
                    live.retain(|&l| l != s);
                }
            }
            switches += keyed.switches_and_moves().0;
        }
        assert!(preempted > 500, "few preemptions: {preempted}");
        // The memory watch went on and off (its indexes built from the requests as they were).
        assert!(
            switches > 60,
            "few switches of the memory watch: {switches}"
        );
    }

    /// Ordinary load (a GPU pool far from full): a running request is not moved in and out of
    /// the block-needing class every 16 steps (two ordered-set updates each time; the old index
    /// made 9 moves per request over 60 boundaries), only out of the plain ones when it starts.
    #[test]
    fn running_requests_stay_put_without_memory_pressure() {
        let (mut reqs, mut kv) = (Slab::default(), KvPool::new(1000, 16));
        let host = KvPool::new(1_000_000, 16);
        let (mut reference, mut keyed) = (Ranking::default(), KeyedRanking::jumping());
        let mut live = Vec::new();
        for i in 0..8 {
            let s = reqs.insert(Request::new(i, 0, 20, 100, 1 + i as u32));
            reference.add(s);
            keyed.add(&view(&reqs, &kv, &host), s, (1 + i) as f64);
            live.push(s);
        }
        for boundary in 0..60 {
            let plan = {
                let v = view(&reqs, &kv, &host);
                let k = |s| v.req(s).predicted_output_tokens as f64;
                let (mut want, mut got) = (Plan::default(), Plan::default());
                reference.rank_and_form(&v, &mut want, PreemptionChoice::Swap, None, k);
                keyed.rank_and_form(&v, &mut got, PreemptionChoice::Swap, None, k);
                assert_eq!(got.run, want.run, "boundary {boundary}");
                assert_eq!(got.run.len(), 8);
                got
            };
            assert!(step(&mut reqs, &mut kv, &live, &plan).is_empty());
        }
        assert_eq!(keyed.switches_and_moves(), (0, 8));
    }
}
