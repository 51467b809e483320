//! Lazy following of a stepwise fast-forward (see [`Lazy`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::levels::{Level, empty_levels};
use super::{Demotion, Mlfq};
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

/// A quantum as a signed threshold (quanta past `i64::MAX` ns — 292 years — are never reached).
pub(super) fn quantum_i64(q: Ns) -> i64 {
    q.min(i64::MAX as Ns) as i64
}

/// MLFQ followed through a stepwise fast-forward (the batch holds every queued request, so each
/// boundary requeues everyone). Instead of rebuilding the order at every boundary, each level is a
/// deque read front to back or back to front (`rev[p] ^ parity`: a boundary that reverses every
/// level's batch segment — `requeue_reverses_batch` — flips `parity`), attained service is
/// `State::attained_ns + service_ns − since_ns[s]`, and the next demotions come off a heap of
/// thresholds on `service_ns`. A boundary then costs O(log n) plus its demotions; the order and the
/// attained service are written back ([`Mlfq::materialize`]) before anything else reads them.
#[derive(Default, Clone)]
pub(super) struct Lazy {
    pub(super) active: bool,
    pub(super) levels: Vec<Level>,
    pub(super) rev: Vec<bool>,
    pub(super) parity: bool,
    /// Summed durations of the boundaries followed (every request ran in each).
    pub(super) service_ns: Ns,
    pub(super) steps: u64,
    pub(super) last_ns: Ns,
    /// Per slot: `service_ns` when its attained service was last reset (or the run began).
    pub(super) since_ns: Vec<Ns>,
    /// Per slot: version of its heap entry (older entries are stale).
    pub(super) version: Vec<u32>,
    /// `(threshold, slot << 32 | version)`: demoted once `service_ns` exceeds `threshold`. Only
    /// thresholds below `bound_ns` (the run cannot reach the others) are kept.
    pub(super) heap: BinaryHeap<Reverse<(i64, u64)>>,
    pub(super) bound_ns: i64,
    /// Scratch: `(level, position in the level, slot)` of this boundary's demotions.
    pub(super) demoted: Vec<(u32, usize, Slot)>,
    /// Per slot: arrived after the run's last boundary (queued at its level's back, never run).
    pub(super) fresh: Vec<bool>,
    pub(super) fresh_slots: Vec<Slot>,
    /// Scratch for [`Mlfq::requeue_lazy`].
    pub(super) into: Vec<Slot>,
    pub(super) out: Vec<Slot>,
    pub(super) tail: Vec<Slot>,
}

impl Lazy {
    /// Stop following: empty levels, no fresh arrivals, nothing reversed, no bound.
    pub(super) fn finish(&mut self) {
        for q in &mut self.levels {
            q.clear();
        }
        for &s in &self.fresh_slots {
            self.fresh[s as usize] = false;
        }
        self.fresh_slots.clear();
        self.rev.fill(false);
        self.parity = false;
        self.active = false;
        self.bound_ns = i64::MAX;
    }
    /// Per-slot tables for slots below `n`.
    pub(super) fn ensure_slots(&mut self, n: usize) {
        if self.since_ns.len() < n {
            self.since_ns.resize(n, 0);
            self.version.resize(n, 0);
            self.fresh.resize(n, false);
        }
    }
    /// The heap entry of `s`, if its run can reach `threshold`.
    pub(super) fn push_threshold(&mut self, threshold: i64, s: Slot) {
        if threshold < self.bound_ns {
            let key = (s as u64) << 32 | self.version[s as usize] as u64;
            self.heap.push(Reverse((threshold, key)));
        }
    }
    pub(super) fn reversed(&self, p: usize) -> bool {
        self.rev[p] ^ self.parity
    }
    pub(super) fn push_back(&mut self, p: usize, s: Slot) {
        if self.reversed(p) {
            self.levels[p].push_front(s);
        } else {
            self.levels[p].push_back(s);
        }
    }
    pub(super) fn push_front(&mut self, p: usize, s: Slot) {
        if self.reversed(p) {
            self.levels[p].push_back(s);
        } else {
            self.levels[p].push_front(s);
        }
    }
    pub(super) fn remove(&mut self, p: usize, s: Slot) {
        let q = &mut self.levels[p];
        if let Some(i) = q.iter().position(|&x| x == s) {
            q.remove(i);
        }
    }
}

impl Mlfq {
    /// Start following a stepwise fast-forward lazily (the order is the batch).
    pub(super) fn lazy_begin(&mut self) {
        let max_level = self.max_level();
        // Every request moves at each boundary followed.
        self.dissolve_block();
        // Every queued request runs at each boundary followed (marked in `ran` below).
        self.ensure_ran(self.state.len());
        let lz = &mut self.lazy;
        lz.active = true;
        lz.parity = false;
        lz.service_ns = 0;
        lz.steps = 0;
        if lz.levels.is_empty() {
            lz.levels = empty_levels();
            lz.rev = vec![false; lz.levels.len()];
        }
        lz.ensure_slots(self.state.len());
        let mut heap = std::mem::take(&mut lz.heap).into_vec();
        heap.clear();
        for s in self.order.iter() {
            let st = &self.state[s as usize];
            lz.since_ns[s as usize] = 0;
            self.ran[s as usize] = true;
            if st.level < max_level {
                let threshold = quantum_i64(self.quantum_ns_table[st.level as usize])
                    .saturating_sub(st.attained_ns.min(i64::MAX as Ns) as i64);
                if threshold < lz.bound_ns {
                    let key = (s as u64) << 32 | lz.version[s as usize] as u64;
                    heap.push(Reverse((threshold, key)));
                }
            }
        }
        lz.heap = BinaryHeap::from(heap);
        // The levels move to the lazy state (empty ones come back: `Lazy::finish` emptied them);
        // `order` stays empty until they are written back.
        self.order.swap_levels(&mut lz.levels);
    }

    /// One boundary of the lazily followed fast-forward: what [`Mlfq::requeue_batch`] does with
    /// the batch = every queued request.
    pub(super) fn lazy_step(&mut self, duration_ns: Ns, now: Ns, kv_tokens: impl Fn(Slot) -> u32) {
        let max_level = self.max_level();
        let reverses = self.cfg.requeue_reverses_batch;
        let lz = &mut self.lazy;
        lz.service_ns += duration_ns;
        lz.steps += 1;
        lz.last_ns = now;
        let service = lz.service_ns.min(i64::MAX as Ns) as i64;
        lz.demoted.clear();
        while let Some(&Reverse((threshold, key))) = lz.heap.peek() {
            if service <= threshold {
                break;
            }
            lz.heap.pop();
            let (s, version) = ((key >> 32) as Slot, key as u32);
            if version != lz.version[s as usize] {
                continue;
            }
            let p = self.state[s as usize].level as usize;
            let q = &lz.levels[p];
            let i = q
                .iter()
                .position(|&x| x == s)
                .expect("a lazily followed request is queued at its level");
            let at = if lz.reversed(p) { q.len() - 1 - i } else { i };
            lz.demoted.push((p as u32, at, s));
        }
        if reverses {
            // Every level's requests are requeued one by one at its front: reversed.
            lz.parity = !lz.parity;
        }
        if lz.demoted.is_empty() {
            return;
        }
        // In the old order (level, then position), as the requeue meets them.
        lz.demoted.sort_unstable();
        let mut demoted = std::mem::take(&mut lz.demoted);
        for &(p, _, s) in &demoted {
            lz.remove(p as usize, s);
        }
        for d in demoted.iter_mut() {
            let (p, _, s) = *d;
            let next = match self.cfg.demotion {
                Demotion::OneLevel => p + 1,
                Demotion::CoverNextIteration => {
                    let t = self.decode_time_s(kv_tokens(s) + 1);
                    let mut level = p + 1;
                    while level < max_level && self.quantum_s(level) < t {
                        level += 1;
                    }
                    level
                }
            };
            let st = &mut self.state[s as usize];
            st.level = next;
            st.attained_ns = 0;
            st.demotions += 1;
            self.hist[next as usize].demotions_in += 1;
            let lz = &mut self.lazy;
            lz.since_ns[s as usize] = lz.service_ns;
            lz.version[s as usize] += 1;
            if next < max_level {
                let q = quantum_i64(self.quantum_ns_table[next as usize]);
                lz.push_threshold(q.saturating_add(service), s);
            }
            d.0 = next;
        }
        // Level p becomes: its others (reversed with `reverses`), then those demoted into it —
        // reversed after them, or, without `reverses`, in order before them.
        let lz = &mut self.lazy;
        for &(p, _, s) in demoted.iter().rev() {
            if reverses {
                lz.push_back(p as usize, s);
            } else {
                lz.push_front(p as usize, s);
            }
        }
        lz.demoted = demoted;
    }

    /// The iteration that ended the lazily followed run, requeued straight from the lazy levels
    /// into the order (one-level demotion, `requeue_reverses_batch`; `batch` = every request
    /// followed lazily, the fresh arrivals aside). Level by level: its requests that stay, in
    /// reverse order, then those demoted into it from the level above, in reverse order — which
    /// is how visiting each level back to front meets them — then its fresh arrivals.
    pub(super) fn requeue_lazy(&mut self, duration_ns: Ns, now: Ns) {
        let max_level = self.max_level() as usize;
        let lz = &mut self.lazy;
        self.order.clear();
        self.ran_order.clear();
        let mut next = std::mem::take(&mut self.flat);
        let mut into = std::mem::take(&mut lz.into);
        let mut out = std::mem::take(&mut lz.out);
        let mut tail = std::mem::take(&mut lz.tail);
        into.clear();
        let state = &mut self.state;
        let hist = &mut self.hist;
        for p in 0..lz.levels.len() {
            let q = &lz.levels[p];
            if q.is_empty() && into.is_empty() {
                continue;
            }
            next.clear();
            out.clear();
            tail.clear();
            let quantum = self.quantum_ns_table[p];
            let mut visit = |s: Slot| {
                if lz.fresh[s as usize] {
                    tail.push(s);
                    return;
                }
                let st = &mut state[s as usize];
                st.attained_ns += lz.service_ns - lz.since_ns[s as usize] + duration_ns;
                st.last_step_ns = now;
                if st.attained_ns > quantum && p < max_level {
                    st.level += 1;
                    st.attained_ns = 0;
                    st.demotions += 1;
                    hist[st.level as usize].demotions_in += 1;
                    out.push(s);
                } else {
                    next.push(s);
                }
            };
            if lz.rev[p] ^ lz.parity {
                q.iter().for_each(|&s| visit(s));
            } else {
                q.iter().rev().for_each(|&s| visit(s));
            }
            next.extend_from_slice(&into);
            // Every request followed lazily ran; the fresh arrivals (the level's tail) did not.
            let ran = next.len();
            next.extend(tail.iter().rev());
            self.order.level_mut(p).extend_from_slice(&next);
            self.order.sync(p);
            self.ran_order.level_mut(p).extend_from_slice(&next[..ran]);
            self.ran_order.sync(p);
            std::mem::swap(&mut into, &mut out);
        }
        debug_assert!(into.is_empty(), "nobody is demoted past the last level");
        lz.finish();
        (lz.into, lz.out, lz.tail) = (into, out, tail);
        self.flat = next;
        // `ran_order` was written with `order` (what `written_back` finds by a walk).
        self.resident_stale();
    }

    /// The lazy levels were written back into `order`: every request in it but the `fresh`
    /// arrivals ran.
    fn written_back(&mut self, fresh: usize) {
        self.resident_stale();
        self.ran_order.clear();
        let ran = &self.ran;
        for (p, q) in self.order.levels() {
            let to = self.ran_order.level_mut(p);
            if fresh == 0 {
                to.extend_from_slice(q.as_slice());
                continue;
            }
            // Copied run by run of requests that ran.
            let mut rest = q.as_slice();
            while !rest.is_empty() {
                let n = rest
                    .iter()
                    .take_while(|&&s| ran.get(s as usize) == Some(&true))
                    .count();
                to.extend_from_slice(&rest[..n]);
                let skip = rest[n..]
                    .iter()
                    .take_while(|&&s| ran.get(s as usize) != Some(&true))
                    .count();
                rest = &rest[n + skip..];
            }
            self.ran_order.sync(p);
        }
    }

    /// Queue an arrival (its state set) at the back of its level. While a run is followed lazily
    /// (the arrival came after its last boundary, so the batch in flight does not hold it) it goes
    /// to the back of the lazy level, marked fresh, and is written back with the rest.
    pub(super) fn enqueue_arrival(&mut self, s: Slot) {
        if !self.lazy.active {
            self.push_back(s);
            return;
        }
        let level = self.state[s as usize].level as usize;
        let lz = &mut self.lazy;
        lz.ensure_slots(s as usize + 1);
        lz.fresh[s as usize] = true;
        lz.fresh_slots.push(s);
        lz.push_back(level, s);
    }

    /// End lazy following: write the order and every attained service back.
    pub(super) fn materialize(&mut self) {
        if !self.lazy.active {
            return;
        }
        let lz = &mut self.lazy;
        // The levels come back from the lazy state (`order` holds the empty ones meanwhile),
        // each read in its current direction.
        debug_assert_eq!(self.order.len(), 0);
        for (p, q) in lz.levels.iter_mut().enumerate() {
            if lz.rev[p] ^ lz.parity {
                q.as_mut_slice().reverse();
            }
        }
        self.order.swap_levels(&mut lz.levels);
        for s in self.order.iter() {
            if lz.fresh[s as usize] {
                continue;
            }
            let st = &mut self.state[s as usize];
            st.attained_ns += lz.service_ns - lz.since_ns[s as usize];
            if lz.steps > 0 {
                st.last_step_ns = lz.last_ns;
            }
        }
        let fresh = lz.fresh_slots.len();
        lz.finish();
        self.written_back(fresh);
    }
}
