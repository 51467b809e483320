//! The rankings of the ranking policies (SRPT, ALISE, LTR): every unfinished request ordered by a
//! key (smaller first, ties by arrival), and the batch formed in that order
//! ([`super::common::form_priority_batch`]).

use std::collections::btree_set;
use std::collections::{BTreeSet, BinaryHeap};

#[cfg(test)]
use super::common::form_priority_batch;
use super::common::{Misfit, Window, evictable, form_priority_batch_from};
use super::plain_index::{NoOps, PlainIndex, SKIP_AFTER};
use super::{Plan, PreemptionChoice, ReplicaView};
use crate::vocab::request::{KvLoc, Request, Slot};

/// The unfinished requests of a ranking policy re-ranked at every boundary by a key (smaller
/// first, ties by arrival), with the last key kept for the per-request output: the reference that
/// [`KeyedRanking`] is tested against (the policies use [`KeyedRanking`]).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Ranking {
    active: Vec<Slot>,
    keys: Vec<(f64, u64, Slot)>,
    order: Vec<Slot>,
    last_key: Vec<f64>,
}

#[cfg(test)]
impl Ranking {
    pub fn add(&mut self, s: Slot) {
        self.active.push(s);
    }

    pub fn remove(&mut self, s: Slot) {
        if let Some(i) = self.active.iter().position(|&x| x == s) {
            self.active.swap_remove(i);
        }
    }

    /// The requests in the order of the last ranking (highest priority first).
    pub fn order(&self) -> &[Slot] {
        &self.order
    }

    /// The unfinished requests, in no particular order.
    pub fn active(&self) -> &[Slot] {
        &self.active
    }

    /// The key request `s` had at the last ranking.
    pub fn last_key(&self, s: Slot) -> f64 {
        self.last_key.get(s as usize).copied().unwrap_or(0.0)
    }

    /// Rank every unfinished request by `key` (smaller first, ties by arrival) and record each
    /// one's key; `self.order` holds the ranking.
    fn rank(&mut self, view: &ReplicaView, key: impl Fn(Slot) -> f64) {
        self.keys.clear();
        self.keys
            .extend(self.active.iter().map(|&s| (key(s), view.req(s).id, s)));
        self.keys
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.order.clear();
        self.order.extend(self.keys.iter().map(|k| k.2));
        if self.last_key.len() < view.slot_capacity() {
            self.last_key.resize(view.slot_capacity(), 0.0);
        }
        for &(k, _, s) in &self.keys {
            self.last_key[s as usize] = k;
        }
    }

    /// Rank every unfinished request by `key` and fill `plan` in that order, skipping misfits and
    /// evicting lower-ranked resident requests by `preemption` when KV blocks run out. Returns
    /// the GPU blocks left free (see [`form_priority_batch`]).
    pub fn rank_and_form(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        preemption: PreemptionChoice,
        chunk_budget: Option<u32>,
        key: impl Fn(Slot) -> f64,
    ) -> u32 {
        self.rank(view, key);
        form_priority_batch(
            view,
            &self.order,
            Misfit::Skip,
            preemption,
            false,
            chunk_budget,
            plan,
        )
    }
}

/// Most repeats [`KeyedRanking::steady`] checks ahead (its work is the batch size times this;
/// an arrival ends a fast-forward early anyway).
pub const STEADY_LOOKAHEAD: u32 = 16;

/// A key of [`KeyedRanking`]: ordered like [`Ranking`] sorts (`f64::total_cmp`, then trace id).
#[derive(Debug, Clone, Copy)]
pub struct RankKey(f64, u64, Slot);

impl RankKey {
    /// The request this key ranks.
    pub fn slot(&self) -> Slot {
        self.2
    }
}

impl PartialEq for RankKey {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for RankKey {}
impl PartialOrd for RankKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for RankKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&o.0)
            .then(self.1.cmp(&o.1))
            .then(self.2.cmp(&o.2))
    }
}

/// [`Ranking`] for a key that is a function of the request's own state only (SRPT's remaining
/// time), kept in an ordered set: a key is recomputed only when its request may have changed
/// (it ran, was preempted, arrived), so a boundary costs O((batch + looked-at) · log n) instead of
/// re-keying and sorting every unfinished request. Eviction victims are searched among the
/// requests that may hold GPU KV only, so the requests looked at are bounded by the batch and the
/// GPU pool, not by the queue; and, for a [`KeyedRanking::jumping`] one, runs of candidates that
/// can neither join nor cause an eviction are jumped over ([`PlainIndex`]). Same order, same keys,
/// same plans.
#[derive(Debug, Default)]
pub struct KeyedRanking {
    set: BTreeSet<RankKey>,
    /// Whether `plain` is kept ([`KeyedRanking::jumping`]).
    jumps: bool,
    /// The same requests, plain ones by the blocks they need apart from the others (empty
    /// unless `jumps`).
    plain: PlainIndex,
    /// The requests that may hold KV on the GPU (a superset: those whose KV was on the GPU, being
    /// copied to it, or in the pipeline when last re-keyed), in no particular order: unless
    /// `exact`, the eviction victims are searched here, not in the whole ranking.
    gpu: Vec<Slot>,
    in_gpu: Vec<bool>,
    /// Jumping under memory pressure (`exact`; empty otherwise): the requests with their KV on
    /// the GPU and out of the pipeline, in ranking order,
    /// as re-keyed (exact at a formation: a request's KV moves only when it is in a plan, and a
    /// request being copied or in flight is re-keyed at every boundary until it lands), so that a
    /// victim is one look-up where building the heap of `gpu` costs O(residents) per formation.
    /// `resident_key[s]`: its key in the set, if it is in.
    resident: BTreeSet<RankKey>,
    resident_key: Vec<Option<RankKey>>,
    /// Jumping: whether `resident` is kept and `plain` tells the block-needing resident requests
    /// apart ([`KeyedRanking::watch_memory`]).
    exact: bool,
    /// Times `exact` changed.
    switches: usize,
    /// Scratch for the victim heap of a batch formation.
    heap: Vec<RankKey>,
    /// Entries of the ranking and of `gpu` the last batch formation looked at.
    looked_at: usize,
    /// Key in the set of each slot (valid while the slot is active).
    key: Vec<f64>,
    /// Trace id of each slot's request.
    id: Vec<u64>,
    active: Vec<bool>,
    /// Slots whose state may have changed since their key was computed.
    dirty: Vec<Slot>,
    /// Scratch for the dirty slots kept for the next boundary (in a micro-batch in flight).
    keep: Vec<Slot>,
}

impl KeyedRanking {
    /// A ranking that also keeps the index of its plain and swapped requests ([`PlainIndex`]),
    /// so that a formation jumps over the runs of candidates that can neither join nor cause an
    /// eviction (prefills the token budget has no room for; needs above the free blocks but
    /// within those freeing). For the policies whose bursts queue many such requests (srpt,
    /// alise, ltr). It costs one more ordered-set update per re-keyed request (the small set of
    /// the others), and a few more when a request changes class (runs, or is preempted).
    pub fn jumping() -> Self {
        KeyedRanking {
            jumps: true,
            ..KeyedRanking::default()
        }
    }

    fn insert(&mut self, view: &ReplicaView, s: Slot, k: f64) {
        let i = s as usize;
        if self.key.len() <= i {
            self.key.resize(i + 1, 0.0);
            self.id.resize(i + 1, 0);
            self.active.resize(i + 1, false);
            self.in_gpu.resize(i + 1, false);
            self.resident_key.resize(i + 1, None);
        }
        self.key[i] = k;
        self.id[i] = view.req(s).id;
        self.active[i] = true;
        self.set.insert(RankKey(k, self.id[i], s));
        if self.jumps {
            self.plain.insert(view, RankKey(k, self.id[i], s));
            if self.exact {
                self.place_resident(view.req(s), RankKey(k, self.id[i], s));
            }
        }
    }

    /// Jumping: keep the ordered residents and the block-needing class only under memory
    /// pressure (from a formation that starts with no free GPU block until one that starts with
    /// more than 1/8 of the pool free). Without it a
    /// formation needs few victims and meets few block-needing no-ops, and a running request
    /// moves in and out of that class every `block_tokens` steps (ordinary ltr load: +16 %
    /// instructions). Turning it on indexes the requests of `gpu` as they are now, which is
    /// what keeping them up at re-keying would have given.
    fn watch_memory(&mut self, view: &ReplicaView) {
        let (free, cap) = (
            view.kv.free_blocks() as u64,
            view.kv.capacity_blocks() as u64,
        );
        let want = if self.exact {
            8 * free <= cap
        } else {
            free == 0
        };
        if want == self.exact {
            return;
        }
        (self.exact, self.switches) = (want, self.switches + 1);
        if !want {
            for k in std::mem::take(&mut self.resident) {
                self.resident_key[k.slot() as usize] = None;
            }
        } else {
            let (in_gpu, active) = (&mut self.in_gpu, &self.active);
            self.gpu.retain(|&s| {
                let keep = active[s as usize] && may_hold_gpu_kv(view.req(s));
                in_gpu[s as usize] = keep;
                keep
            });
            for j in 0..self.gpu.len() {
                let s = self.gpu[j];
                self.place_resident(view.req(s), self.rank_key(s));
            }
        }
        let (key, id) = (&self.key, &self.id);
        let key_of = |s: Slot| Some(RankKey(key[s as usize], id[s as usize], s));
        self.plain.index_needs_block(view, want, &self.gpu, key_of);
    }

    /// Jumping: put request `k` in `resident` or out of it, by its state in `r`.
    fn place_resident(&mut self, r: &Request, k: RankKey) {
        let i = k.slot() as usize;
        let want = (r.kv_loc == KvLoc::Gpu && !r.in_flight()).then_some(k);
        if self.resident_key[i] != want {
            if let Some(old) = self.resident_key[i] {
                self.resident.remove(&old);
            }
            if let Some(new) = want {
                self.resident.insert(new);
            }
            self.resident_key[i] = want;
        }
    }

    /// Request `s` arrived with key `k`.
    pub fn add(&mut self, view: &ReplicaView, s: Slot, k: f64) {
        self.insert(view, s, k);
    }

    /// Request `s` finished.
    pub fn remove(&mut self, s: Slot) {
        let i = s as usize;
        if self.active.get(i).copied().unwrap_or(false) {
            self.set.remove(&RankKey(self.key[i], self.id[i], s));
            if self.jumps {
                self.plain.remove(RankKey(self.key[i], self.id[i], s));
                if let Some(k) = self.resident_key[i].take() {
                    self.resident.remove(&k);
                }
            }
            self.active[i] = false;
        }
    }

    /// The key of request `s` may have changed for a reason other than running or being
    /// preempted: re-key it at the next boundary.
    pub fn touch(&mut self, s: Slot) {
        self.dirty.push(s);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The key request `s` had at the last ranking.
    pub fn last_key(&self, s: Slot) -> f64 {
        self.key.get(s as usize).copied().unwrap_or(0.0)
    }

    /// Entries (candidates and possible eviction victims) the last batch formation looked at.
    pub fn looked_at(&self) -> usize {
        self.looked_at
    }

    /// Times the memory watch switched ([`KeyedRanking::watch_memory`]) and requests moved
    /// between classes of the index so far.
    #[cfg(test)]
    pub(super) fn switches_and_moves(&self) -> (usize, usize) {
        (self.switches, self.plain.moves)
    }

    /// The unfinished requests, highest priority first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Slot> + '_ {
        self.set.iter().map(|k| k.2)
    }

    /// The place of active request `s` in the ranking (smaller: ranked ahead).
    pub fn rank_key(&self, s: Slot) -> RankKey {
        RankKey(self.key[s as usize], self.id[s as usize], s)
    }

    /// Re-key the requests that may have changed (those of the last plans).
    fn refresh(&mut self, view: &ReplicaView, key: &impl Fn(Slot) -> f64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.keep.clear();
        for &s in &dirty {
            let i = s as usize;
            if !self.active.get(i).copied().unwrap_or(false) {
                continue;
            }
            let old = RankKey(self.key[i], self.id[i], s);
            let new = RankKey(key(s), self.id[i], s);
            if new != old {
                self.set.remove(&old);
                self.set.insert(new);
            }
            self.key[i] = new.0;
            let r = view.req(s);
            if self.jumps {
                self.plain.update(view, old, new);
                if self.exact {
                    self.place_resident(r, new);
                }
            }
            if !self.in_gpu[i] && may_hold_gpu_kv(r) {
                // Only a plan puts KV on the GPU, and every request of a plan is re-keyed here.
                self.in_gpu[i] = true;
                self.gpu.push(s);
            }
            // Its micro-batch is still in the pipeline: it changes when that batch ends. Or its
            // KV is being copied: re-classified until the copy is done (a swapped request can
            // then be jumped over).
            if r.in_flight() || (self.jumps && r.in_transfer()) {
                self.keep.push(s);
            }
        }
        dirty.clear();
        dirty.extend_from_slice(&self.keep);
        self.dirty = dirty;
    }

    /// [`Ranking::rank_and_form`], re-keying only the requests that may have changed.
    pub fn rank_and_form(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        preemption: PreemptionChoice,
        chunk_budget: Option<u32>,
        key: impl Fn(Slot) -> f64,
    ) -> u32 {
        self.refresh(view, &key);
        if self.jumps {
            self.watch_memory(view);
        }
        let mut window = KeyedWindow {
            set: &self.set,
            front: self.set.range(..),
            plain: &self.plain,
            plain_run: 0,
            gpu: &mut self.gpu,
            in_gpu: &mut self.in_gpu,
            ordered: self.exact.then_some(&self.resident),
            active: &self.active,
            key: &self.key,
            id: &self.id,
            cur: None,
            back: None,
            done: false,
            buf: std::mem::take(&mut self.heap),
            heap: None,
            resident: None,
            looked_at: 0,
        };
        let free = form_priority_batch_from(
            view,
            &mut window,
            Misfit::Skip,
            preemption,
            false,
            chunk_budget,
            None,
            plan,
        );
        self.looked_at = window.looked_at;
        self.heap = window.into_buf();
        self.dirty.extend(plan.run.iter().map(|r| r.slot));
        self.dirty.extend(plan.preempt.iter().map(|p| p.0));
        free
    }

    /// Fast-forward. When the batch holds every unfinished request, the ranking can reorder it
    /// but not change it (the engine checks that its blocks fit). When it is full (the batch cap)
    /// and holds the ranking's first entries, the same set is formed again at each following
    /// boundary for as long as every member's key then (`key_after(s, m)`: its key after `m`
    /// more decode steps) still ranks ahead of the first request left out, whose key does not
    /// move while it waits: up to [`STEADY_LOOKAHEAD`] repeats are checked one by one (no
    /// assumption that keys only fall). Memory is the engine's check, as in stepping: a batch
    /// whose blocks fit evicts nobody.
    pub fn steady(
        &self,
        batch: &[Slot],
        max_batch_size: u32,
        key_after: impl Fn(Slot, u32) -> f64,
    ) -> Option<super::Steady> {
        if batch.len() == self.set.len() {
            return Some(super::Steady::UNBOUNDED);
        }
        if batch.len() != max_batch_size as usize {
            return None;
        }
        let mut ranked = self.set.iter();
        for &s in batch {
            if ranked.next()?.2 != s {
                return None;
            }
        }
        let first_left_out = *ranked.next()?;
        let mut repeats = 0;
        while repeats < STEADY_LOOKAHEAD {
            let m = repeats + 1;
            let ahead =
                |&s: &Slot| RankKey(key_after(s, m), self.id[s as usize], s) < first_left_out;
            if !batch.iter().all(ahead) {
                break;
            }
            repeats = m;
        }
        (repeats > 0).then_some(super::Steady {
            max_iterations: repeats as u64,
            ..super::Steady::UNBOUNDED
        })
    }

    /// After a fast-forward: rank as the last repeated boundary did (the view holds the state at
    /// that boundary) and put the batch (every unfinished request) in that order.
    pub fn rerank_batch(
        &mut self,
        view: &ReplicaView,
        batch: &mut [Slot],
        key: impl Fn(Slot) -> f64,
    ) {
        self.dirty.extend_from_slice(batch);
        self.refresh(view, &key);
        for (b, k) in batch.iter_mut().zip(self.set.iter()) {
            *b = k.2;
        }
        // They run again: re-key them at the next boundary.
        self.dirty.extend_from_slice(batch);
    }
}

/// Whether `r`'s KV may be on the GPU by the next boundary without `r` being in a plan.
fn may_hold_gpu_kv(r: &Request) -> bool {
    r.in_flight() || matches!(r.kv_loc, KvLoc::Gpu | KvLoc::SwappingIn)
}

/// [`Window`] over a [`KeyedRanking`]: candidates from the ranking, victims from a heap of the
/// requests with GPU KV, built the first time the formation needs one.
struct KeyedWindow<'a> {
    set: &'a BTreeSet<RankKey>,
    /// The candidates not taken yet (and, past `back`, those out of the window).
    front: btree_set::Range<'a, RankKey>,
    plain: &'a PlainIndex,
    /// Consecutive plain candidates taken last ([`SKIP_AFTER`] of them start the jumps).
    plain_run: u32,
    /// The requests that may hold GPU KV ([`KeyedRanking`]'s `gpu`) and their flags.
    gpu: &'a mut Vec<Slot>,
    in_gpu: &'a mut [bool],
    /// [`KeyedRanking`]'s `resident` when kept (then `gpu` and the heap are not used).
    ordered: Option<&'a BTreeSet<RankKey>>,
    active: &'a [bool],
    key: &'a [f64],
    id: &'a [u64],
    /// The last candidate taken.
    cur: Option<&'a RankKey>,
    /// The window ends above this request (the last victim).
    back: Option<RankKey>,
    done: bool,
    /// Scratch for `heap`.
    buf: Vec<RankKey>,
    /// The requests with GPU KV out of the pipeline not yet walked, lowest-ranked on top.
    heap: Option<BinaryHeap<RankKey>>,
    /// The lowest-ranked of them below `back`, once searched (`Some(None)`: there is none).
    resident: Option<Option<RankKey>>,
    looked_at: usize,
}

impl KeyedWindow<'_> {
    /// The heap of the requests with GPU KV out of the pipeline (dropping from `gpu` those that
    /// cannot hold GPU KV any more: only a plan brings them back, and re-adds them).
    fn heap(&mut self, view: &ReplicaView) -> &mut BinaryHeap<RankKey> {
        if self.heap.is_none() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let (in_gpu, active) = (&mut *self.in_gpu, self.active);
            self.looked_at += self.gpu.len();
            self.gpu.retain(|&s| {
                let keep = active[s as usize] && may_hold_gpu_kv(view.req(s));
                in_gpu[s as usize] = keep;
                keep
            });
            for &s in self.gpu.iter() {
                let r = view.req(s);
                if r.kv_loc == KvLoc::Gpu && !r.in_flight() {
                    let i = s as usize;
                    buf.push(RankKey(self.key[i], self.id[i], s));
                }
            }
            self.heap = Some(BinaryHeap::from(buf));
        }
        self.heap.as_mut().expect("built above")
    }

    /// The lowest-ranked request of the window with GPU KV, out of the pipeline.
    fn lowest_resident(&mut self, view: &ReplicaView) -> Option<RankKey> {
        if self.resident.is_none() {
            let cur = self.cur;
            let found = if let Some(ordered) = self.ordered {
                // The last one above the window's back (the last victim).
                self.looked_at += 1;
                let below = match self.back {
                    Some(b) => ordered.range(..b).next_back(),
                    None => ordered.last(),
                };
                below.copied().filter(|&g| cur.is_none_or(|c| g > *c))
            } else {
                // Popped in ranking order from the bottom: those at or above the front end the
                // search (and are no longer in the window, nor ever will be).
                let popped = self.heap(view).pop();
                self.looked_at += usize::from(popped.is_some());
                let found = popped.filter(|&g| cur.is_none_or(|c| g > *c));
                if found.is_none() {
                    self.heap(view).clear();
                }
                found
            };
            self.resident = Some(found);
        }
        // Past the front: no longer in the window (and nor is any request ranked above it).
        self.resident
            .flatten()
            .filter(|&g| self.cur.is_none_or(|c| g > *c))
    }

    /// The victim scratch, for the next formation.
    fn into_buf(self) -> Vec<RankKey> {
        self.heap.map_or(self.buf, BinaryHeap::into_vec)
    }
}

impl Window for KeyedWindow<'_> {
    fn next_candidate(&mut self) -> Option<Slot> {
        if self.done {
            return None;
        }
        let k = match self.front.next() {
            Some(k) if self.back.is_none_or(|b| *k < b) => k,
            _ => {
                self.done = true;
                return None;
            }
        };
        self.looked_at += 1;
        self.cur = Some(k);
        if self.plain_run < SKIP_AFTER {
            self.plain_run = if self.plain.is_plain(k.slot()) {
                self.plain_run + 1
            } else {
                0
            };
        }
        Some(k.slot())
    }

    fn pass_no_ops(&mut self, no_ops: &NoOps) {
        // Jumping costs a few look-ups: only after a run of plain candidates (then for the rest
        // of the formation).
        let Some(&cur) = self.cur else { return };
        if self.done || self.plain_run < SKIP_AFTER {
            return;
        }
        let next = self.plain.next_relevant(cur, no_ops, &mut self.looked_at);
        match next {
            Some(k) => self.front = self.set.range(k..),
            // Only no-ops are left.
            None => self.done = true,
        }
    }

    fn pop_victim(&mut self, view: &ReplicaView) -> Option<Slot> {
        while let Some(g) = self.lowest_resident(view) {
            self.resident = None;
            self.back = Some(g);
            if evictable(view, g.slot()) {
                return Some(g.slot());
            }
        }
        self.done = true;
        None
    }

    fn no_resident_left(&mut self, view: &ReplicaView) -> bool {
        self.lowest_resident(view).is_none()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::policy::Limits;
    use crate::swap::KvOffload;
    use crate::vocab::KvPool;
    use crate::vocab::request::{Request, Slab};

    /// A view at t = 0 with a batch cap of 16 and 2,048 tokens (also for other policies' tests).
    pub(crate) fn view<'a>(reqs: &'a Slab, kv: &'a KvPool, host: &'a KvPool) -> ReplicaView<'a> {
        ReplicaView {
            reqs,
            kv,
            host,
            offload: KvOffload::default(),
            now_ns: 0,
            limits: Limits {
                max_batch_size: 16,
                max_batch_tokens: 2048,
                max_context_tokens: 4096,
            },
        }
    }

    /// A burst of `queued` new requests at t = 0 with equal predictions: a 2,000-token prompt
    /// first (by arrival), then 300-token ones that the 2,048-token batch budget has no room for
    /// once it runs.
    pub(crate) fn token_skip_burst(queued: u64) -> Slab {
        let mut reqs = Slab::default();
        for i in 0..queued {
            let input = if i == 0 { 2000 } else { 300 };
            reqs.insert(Request::new(i, 0, input, 100, 100));
        }
        reqs
    }

    /// With 5000 waiting requests (keys with many ties), [`KeyedRanking`] forms the same plans and
    /// keeps the same keys as the re-sorting [`Ranking`], boundary after boundary as batches
    /// finish, while evaluating the key only for the last plan's requests: the work per boundary
    /// does not grow with the queue.
    #[test]
    fn keyed_ranking_matches_ranking_and_rekeys_only_the_last_plan() {
        let n = 5000u32;
        let mut reqs = Slab::default();
        for i in 0..n as u64 {
            let p = 1 + (i * 7919 % 97) as u32;
            reqs.insert(Request::new(i, 0, 10, p, p));
        }
        let (kv, host) = (KvPool::new(100_000, 16), KvPool::new(0, 16));
        let mut reference = Ranking::default();
        let mut keyed = KeyedRanking::default();
        let key = |v: &ReplicaView, s: Slot| v.req(s).predicted_output_tokens as f64;
        {
            let v = view(&reqs, &kv, &host);
            for s in 0..n {
                reference.add(s);
                keyed.add(&v, s, key(&v, s));
            }
        }
        let mut last = 0usize;
        for boundary in 0..50 {
            let v = view(&reqs, &kv, &host);
            let (mut want, mut got) = (Plan::default(), Plan::default());
            reference.rank_and_form(&v, &mut want, PreemptionChoice::Recompute, None, |s| {
                key(&v, s)
            });
            let calls = Cell::new(0usize);
            keyed.rank_and_form(&v, &mut got, PreemptionChoice::Recompute, None, |s| {
                calls.set(calls.get() + 1);
                key(&v, s)
            });
            assert_eq!(got.run, want.run, "boundary {boundary}");
            assert_eq!(got.run.len(), 16);
            assert!(
                calls.get() <= last,
                "boundary {boundary}: {} keys",
                calls.get()
            );
            for s in 0..n {
                if reqs.contains(s) {
                    assert_eq!(keyed.last_key(s), reference.last_key(s));
                }
            }
            // Every other boundary the batch finishes; otherwise it stays (and is re-keyed).
            if boundary % 2 == 1 {
                for item in &got.run {
                    reference.remove(item.slot);
                    keyed.remove(item.slot);
                    reqs.remove(item.slot);
                }
            }
            last = got.run.len();
        }
        assert_eq!(keyed.len(), reference.active().len());
    }

    /// One boundary of an overloaded replica: 16 resident requests ranked first hold every GPU
    /// block and each needs one more, `queued` new requests wait below them. Returns the plan, the
    /// plan of the re-sorting [`Ranking`] and the entries the keyed formation looked at.
    fn overloaded_boundary(queued: u32) -> (Plan, Plan, usize) {
        let resident = 16u32;
        let mut reqs = Slab::default();
        let mut kv = KvPool::new(2 * resident, 16);
        assert!(kv.try_alloc(2 * resident));
        for i in 0..resident {
            let s = reqs.insert(Request::new(i as u64, 0, 16, 100, 20 + i));
            let mut r = reqs.get_mut(s);
            (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (16, 32, 2, KvLoc::Gpu);
        }
        for i in 0..queued {
            reqs.insert(Request::new(
                (resident + i) as u64,
                0,
                16,
                100,
                1000 + i % 7,
            ));
        }
        let host = KvPool::new(0, 16);
        let v = view(&reqs, &kv, &host);
        let key = |s: Slot| {
            let r = v.req(s);
            (r.predicted_output_tokens - r.generated_tokens) as f64
        };
        let (mut reference, mut keyed) = (Ranking::default(), KeyedRanking::default());
        for s in 0..resident + queued {
            reference.add(s);
            keyed.add(&v, s, key(s));
        }
        // The residents ran before: they are in the last plans.
        for s in 0..resident {
            keyed.touch(s);
        }
        let (mut want, mut got) = (Plan::default(), Plan::default());
        reference.rank_and_form(&v, &mut want, PreemptionChoice::Swap, None, key);
        keyed.rank_and_form(&v, &mut got, PreemptionChoice::Swap, None, key);
        (got, want, keyed.looked_at())
    }

    /// Under memory pressure the eviction victims come from the index of GPU-resident requests,
    /// not from walking the queue from its back: the work of a boundary stays bounded by the
    /// batch and the resident requests as the queue grows tenfold, with the same plan.
    #[test]
    fn eviction_work_does_not_grow_with_the_queue() {
        let mut work = Vec::new();
        for queued in [1_000, 10_000] {
            let (got, want, looked_at) = overloaded_boundary(queued);
            assert_eq!(got.run, want.run);
            assert_eq!(got.preempt, want.preempt);
            assert!(!got.preempt.is_empty() && !got.run.is_empty());
            work.push(looked_at);
        }
        assert_eq!(work[0], work[1], "work per boundary: {work:?}");
        assert!(work[1] <= 3 * 16 + 2, "work per boundary: {work:?}");
    }
}
