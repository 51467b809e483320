//! A queue sorted by level: one double-ended queue per level, read level by level (the flat
//! priority order).

use super::super::ReplicaView;
use super::super::common::{Window, evictable};
use super::LEVEL_CAP;
use crate::vocab::request::Slot;
use std::cell::Cell;

#[cfg(test)]
#[path = "levels_walk.rs"]
mod levels_walk;

#[path = "levels_spared.rs"]
mod levels_spared;
use levels_spared::{find_slot, rfind_slot};

#[path = "levels_requeue.rs"]
mod levels_requeue;

/// One level: a double-ended queue kept in one slice, `buf[start..]` (the room before `start`
/// takes requests pushed at the front). Unlike a ring buffer it always reads as one slice, so a
/// scan over many short levels pays little per level.
#[derive(Clone, Debug)]
pub(super) struct Level {
    buf: Vec<Slot>,
    start: usize,
    /// At least the largest arrival sequence number of the requests it holds (`u64::MAX`:
    /// unknown): set by the victim search that read them all (module `levels_spared`), reset
    /// by every change that may add a request (a removal leaves it an upper bound).
    seq_bound: Cell<u64>,
}

impl Default for Level {
    fn default() -> Self {
        Level {
            buf: Vec::new(),
            start: 0,
            seq_bound: Cell::new(u64::MAX),
        }
    }
}

impl Level {
    #[inline]
    pub(super) fn as_slice(&self) -> &[Slot] {
        &self.buf[self.start..]
    }

    #[inline]
    pub(super) fn as_mut_slice(&mut self) -> &mut [Slot] {
        self.seq_bound.set(u64::MAX);
        &mut self.buf[self.start..]
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.buf.len() == self.start
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Slot> {
        self.as_slice().iter()
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    pub(super) fn push_back(&mut self, s: Slot) {
        self.seq_bound.set(u64::MAX);
        self.buf.push(s);
    }

    pub(super) fn extend_from_slice(&mut self, from: &[Slot]) {
        self.seq_bound.set(u64::MAX);
        self.buf.extend_from_slice(from);
    }

    pub(super) fn push_front(&mut self, s: Slot) {
        self.seq_bound.set(u64::MAX);
        if self.start == 0 {
            self.make_front_room(1);
        }
        self.start -= 1;
        self.buf[self.start] = s;
    }

    /// At least `n` free places in front, as many as the level holds (amortized O(1) a push).
    #[cold]
    fn make_front_room(&mut self, n: usize) {
        let room = n.max(self.len()).max(4);
        let mut buf = Vec::with_capacity(room + 2 * self.len());
        buf.resize(room, 0);
        buf.extend_from_slice(self.as_slice());
        self.buf = buf;
        self.start = room;
    }

    /// Drop the first `n` requests.
    pub(super) fn drop_front(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            self.clear();
        } else if self.start > 2 * self.len() + 16 {
            // Reclaim the room in front (it grows as requests leave from the front and others
            // join at the back), keeping as much as the level holds: O(len), after more than
            // len requests left.
            let len = self.len();
            self.buf.copy_within(self.start.., len);
            self.buf.truncate(2 * len);
            self.start = len;
        }
    }

    /// Keep the first `n` requests.
    pub(super) fn truncate(&mut self, n: usize) {
        self.buf.truncate(self.start + n);
        if self.is_empty() {
            self.clear();
        }
    }

    /// Remove the request at position `i` (shifting the shorter side).
    pub(super) fn remove(&mut self, i: usize) {
        let len = self.len();
        debug_assert!(i < len);
        if i < len / 2 {
            let at = self.start;
            self.buf.copy_within(at..at + i, at + 1);
            self.drop_front(1);
        } else {
            self.buf.remove(self.start + i);
            if self.is_empty() {
                self.clear();
            }
        }
    }

    /// Insert `s` at position `i`.
    pub(super) fn insert(&mut self, i: usize, s: Slot) {
        self.seq_bound.set(u64::MAX);
        self.buf.insert(self.start + i, s);
    }

    /// Of the first `n` requests, keep those `keep` says (in order); the others stay as they
    /// are. O(n).
    pub(super) fn retain_first(&mut self, n: usize, mut keep: impl FnMut(Slot) -> bool) {
        // Only removes: `seq_bound` stays a bound.
        let q = &mut self.buf[self.start..];
        let mut w = n;
        for r in (0..n).rev() {
            let s = q[r];
            if keep(s) {
                w -= 1;
                q[w] = s;
            }
        }
        self.drop_front(w);
    }

    /// Of the last `n` requests, keep those `keep` says (in order); the others stay as they are.
    /// O(n).
    pub(super) fn retain_last(&mut self, n: usize, mut keep: impl FnMut(Slot) -> bool) {
        let from = self.buf.len() - n;
        let mut w = from;
        for r in from..self.buf.len() {
            let s = self.buf[r];
            if keep(s) {
                self.buf[w] = s;
                w += 1;
            }
        }
        self.buf.truncate(w);
        if self.is_empty() {
            self.clear();
        }
    }

    pub(super) fn retain(&mut self, f: impl FnMut(&Slot) -> bool) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.retain(f);
    }
}

/// Requests in priority order: level 0 first, each level front to back. Each level is its own
/// [`Level`], so a request joins the front or back of its level, and leaves near the front of it,
/// at a cost that does not grow with the other levels or with the rest of its own.
#[derive(Clone, Debug)]
pub(super) struct Levels {
    q: Vec<Level>,
    /// Bit p set: level p may hold requests (clear: it is empty). The reads visit only these.
    mask: u64,
    /// Entries that joins and removals wrote or looked at (a work count for tests): 1 for a
    /// join, and for a removal the entries searched plus those shifted to close the gap.
    pub(super) work: u64,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            q: empty_levels(),
            mask: 0,
            work: 0,
        }
    }
}

/// One empty [`Level`] per level.
pub(super) fn empty_levels() -> Vec<Level> {
    (0..=LEVEL_CAP).map(|_| Level::default()).collect()
}

// One mask bit per level.
const _: () = assert!(LEVEL_CAP == u64::BITS - 1);

/// The levels whose bits are set in a mask: from the highest priority (lowest bit) with `next`,
/// from the lowest with `next_back`.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let p = self.0.trailing_zeros() as usize;
            self.0 &= self.0 - 1;
            p
        })
    }
}

impl DoubleEndedIterator for Bits {
    #[inline]
    fn next_back(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let p = (u64::BITS - 1 - self.0.leading_zeros()) as usize;
            self.0 &= !(1 << p);
            p
        })
    }
}

impl Levels {
    /// The levels that may hold requests, with their numbers, in priority order.
    #[inline]
    pub(super) fn levels(&self) -> impl DoubleEndedIterator<Item = (usize, &Level)> {
        Bits(self.mask).map(|p| (p, &self.q[p]))
    }

    /// The numbers of the levels that may hold requests, in priority order.
    pub(super) fn numbers(&self) -> impl DoubleEndedIterator<Item = usize> + use<> {
        Bits(self.mask)
    }

    /// Level `p` (empty when it holds nobody).
    pub(super) fn level(&self, p: usize) -> &Level {
        &self.q[p]
    }

    /// Level `p` to change in place; [`Levels::sync`] after it if that may have emptied it.
    pub(super) fn level_mut(&mut self, p: usize) -> &mut Level {
        self.mask |= 1 << p;
        &mut self.q[p]
    }

    /// Note whether level `p` is empty.
    pub(super) fn sync(&mut self, p: usize) {
        if self.q[p].is_empty() {
            self.mask &= !(1 << p);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.levels().map(|(_, q)| q.len()).sum()
    }

    pub(super) fn push_back(&mut self, p: usize, s: Slot) {
        self.work += 1;
        self.level_mut(p).push_back(s);
    }

    /// Remove `s` from level `p`, searched from its front; whether it was there.
    pub(super) fn remove(&mut self, p: usize, s: Slot) -> bool {
        let q = &mut self.q[p];
        let Some(i) = q.iter().position(|&x| x == s) else {
            return false;
        };
        self.work += (i + 1 + i.min(q.len() - 1 - i)) as u64;
        q.remove(i);
        self.sync(p);
        true
    }

    /// Level `p` without the requests marked in `gone` (the level walked once).
    pub(super) fn retain(&mut self, p: usize, gone: &[bool]) {
        self.q[p].retain(|&x| !gone[x as usize]);
        self.sync(p);
    }

    pub(super) fn clear(&mut self) {
        for p in Bits(self.mask) {
            self.q[p].clear();
        }
        self.mask = 0;
    }

    /// Every request in priority order.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter {
            q: &self.q,
            mask: self.mask,
            cur: [].iter(),
        }
    }

    /// Every request from the lowest priority up.
    pub(super) fn iter_rev(&self) -> RevIter<'_> {
        RevIter {
            q: &self.q,
            mask: self.mask,
            cur: [].iter(),
        }
    }

    /// The requests from flat position `from` on, in priority order.
    pub(super) fn iter_from(&self, mut from: usize) -> Iter<'_> {
        let mut it = self.iter();
        while it.mask != 0 {
            let p = it.mask.trailing_zeros() as usize;
            it.mask &= it.mask - 1;
            let q = self.q[p].as_slice();
            if from < q.len() {
                it.cur = q[from..].iter();
                break;
            }
            from -= q.len();
        }
        it
    }

    /// Call `f` on every request in priority order until it returns true; whether it did.
    /// (Plain slice loops, one a level: the hot scans use this.)
    #[inline]
    pub(super) fn any(&self, mut f: impl FnMut(Slot) -> bool) -> bool {
        for (_, q) in self.levels() {
            for &s in q.as_slice() {
                if f(s) {
                    return true;
                }
            }
        }
        false
    }

    /// [`Levels::any`] from the lowest priority up.
    #[cfg(test)]
    pub(super) fn any_rev(&self, mut f: impl FnMut(Slot) -> bool) -> bool {
        for (_, q) in self.levels().rev() {
            for &s in q.as_slice().iter().rev() {
                if f(s) {
                    return true;
                }
            }
        }
        false
    }

    /// The first `out.len()` requests in priority order, into `out` (there are that many).
    pub(super) fn copy_prefix(&self, out: &mut [Slot]) {
        let mut i = 0;
        for (_, q) in self.levels() {
            if i == out.len() {
                return;
            }
            let q = q.as_slice();
            let n = q.len().min(out.len() - i);
            out[i..i + n].copy_from_slice(&q[..n]);
            i += n;
        }
        debug_assert_eq!(i, out.len());
    }

    /// Whether the order starts with `prefix`.
    pub(super) fn starts_with(&self, mut prefix: &[Slot]) -> bool {
        for (_, q) in self.levels() {
            if prefix.is_empty() {
                return true;
            }
            let q = q.as_slice();
            let n = q.len().min(prefix.len());
            if q[..n] != prefix[..n] {
                return false;
            }
            prefix = &prefix[n..];
        }
        prefix.is_empty()
    }

    /// Exchange the levels with `other` (one [`Level`] per level).
    pub(super) fn swap_levels(&mut self, other: &mut Vec<Level>) {
        debug_assert_eq!(other.len(), self.q.len());
        std::mem::swap(&mut self.q, other);
        self.mask = 0;
        for (p, q) in self.q.iter().enumerate() {
            if !q.is_empty() {
                self.mask |= 1 << p;
            }
        }
    }

    /// The flat order as a vector.
    #[cfg(test)]
    pub(super) fn to_vec(&self) -> Vec<Slot> {
        self.iter().collect()
    }

    /// A [`Window`] over the whole order, for [`super::super::common::form_priority_batch_from`].
    pub(super) fn window(&self) -> LevelsWindow<'_> {
        let end = (u64::BITS - self.mask.leading_zeros()) as usize;
        LevelsWindow {
            q: &self.q[..end],
            front: 0,
            back: self.len(),
            front_at: (0, 0),
            back_at: (end, 0),
            ran: None,
            ran_seen: 0,
            looked: 0,
            passed: 0,
            read: 0,
            ran_back: 0,
            victim_read: 0,
            read_low: [u32::MAX; LEVEL_CAP as usize + 1],
            read_high: [0; LEVEL_CAP as usize + 1],
            #[cfg(test)]
            walk_kvless: false,
            #[cfg(test)]
            walk_victims: false,
            #[cfg(test)]
            walk_spared: false,
        }
    }

    /// [`Levels::window`] that can pass over the requests that never ran ([`Window::pass_kvless`]):
    /// `ran_order` is the subsequence of this order of the slots marked in `ran`.
    pub(super) fn window_with_ran<'a>(
        &'a self,
        ran: &'a [bool],
        ran_order: &'a Levels,
    ) -> LevelsWindow<'a> {
        LevelsWindow {
            ran: Some((ran, ran_order)),
            ..self.window()
        }
    }
}

/// [`Window`] over [`Levels`]: the candidates are taken from the front and the victims searched
/// from the back, as over a flat slice. `front`/`back` are flat positions (the window is
/// `front..back`); `front_at` is where flat position `front` is (level, index; possibly one
/// past a level's end), `back_at` is just past flat position `back - 1`.
pub(super) struct LevelsWindow<'a> {
    q: &'a [Level],
    front: usize,
    back: usize,
    front_at: (usize, usize),
    back_at: (usize, usize),
    /// Per slot whether it ran, and the subsequence of the order that ran (`ran_order`): lets
    /// [`Window::pass_kvless`] pass over the rest of a level in which nobody that ran is left.
    /// (Or any subsequence holding every request of the order with GPU blocks, and its marks:
    /// `resident`, module `evict_victims`.)
    ran: Option<(&'a [bool], &'a Levels)>,
    /// The candidates taken from level `front_at.0` that ran.
    ran_seen: usize,
    /// Candidates taken, entries passed over, and requests read to pass them (work counts for
    /// tests).
    pub(super) looked: usize,
    pub(super) passed: usize,
    pub(super) read: usize,
    /// With `ran`: the requests of level `back_at.0` that ran before `back_at.1` (how many of
    /// `ran_order`'s level are left to the victim search).
    ran_back: usize,
    /// Requests the victim search read (a work count for tests).
    pub(super) victim_read: usize,
    /// Per level of `ran_order`: the lowest index the victim search read (`u32::MAX`: none), and
    /// the end of the indexes [`Window::pass_kvless`] read (module `evict_victims` prunes them).
    pub(super) read_low: [u32; LEVEL_CAP as usize + 1],
    pub(super) read_high: [u32; LEVEL_CAP as usize + 1],
    /// Tests: pass over, and search victims, by the reference walks, each entry read.
    #[cfg(test)]
    pub(super) walk_kvless: bool,
    #[cfg(test)]
    pub(super) walk_victims: bool,
    /// Tests: pass over the victims a guard spares one [`Window::pop_victim`] at a time.
    #[cfg(test)]
    pub(super) walk_spared: bool,
}

impl Window for LevelsWindow<'_> {
    fn next_candidate(&mut self) -> Option<Slot> {
        if self.front >= self.back {
            return None;
        }
        let (mut p, mut i) = self.front_at;
        while i >= self.q[p].len() {
            p += 1;
            i = 0;
            self.ran_seen = 0;
        }
        self.front += 1;
        self.front_at = (p, i + 1);
        self.looked += 1;
        let s = self.q[p].as_slice()[i];
        if let Some((ran, _)) = self.ran
            && ran.get(s as usize) == Some(&true)
        {
            self.ran_seen += 1;
        }
        Some(s)
    }

    fn pass_kvless(&mut self, view: &ReplicaView) {
        let Some((_ran, ran_order)) = self.ran else {
            return;
        };
        #[cfg(test)]
        if self.walk_kvless {
            return self.pass_kvless_by_walk(view, _ran, ran_order);
        }
        while self.front < self.back {
            let (p, i) = self.front_at;
            let Some(q) = self.q.get(p) else {
                return;
            };
            let q = q.as_slice();
            let rest = q.len().saturating_sub(i);
            // Those of level `p` that ran, from the first one at or after `i` on.
            let ran_q = ran_order.q.get(p).map_or(&[][..], Level::as_slice);
            let ran_rest = ran_q.get(self.ran_seen..).unwrap_or(&[]);
            if rest > 0 && !ran_rest.is_empty() {
                let hit = ran_rest.iter().position(|&s| view.req(s).blocks > 0);
                self.read += hit.map_or(ran_rest.len(), |j| j + 1);
                let high = self.ran_seen + hit.map_or(ran_rest.len(), |j| j + 1);
                self.read_high[p] = self.read_high[p].max(high as u32);
                if let Some(j) = hit {
                    // The next one that holds KV: passed to it (or to the window's end).
                    let k = find_slot(&q[i..], ran_rest[j]).min(self.back - self.front);
                    self.front += k;
                    self.front_at = (p, i + k);
                    self.ran_seen += j;
                    self.passed += k;
                    return;
                }
            }
            // Nobody that holds KV is left in the rest of level `p`.
            self.front = (self.front + rest).min(self.back);
            self.front_at = (p + 1, 0);
            self.ran_seen = 0;
        }
    }

    fn pop_victim(&mut self, view: &ReplicaView) -> Option<Slot> {
        let Some((_ran, ran_order)) = self.ran else {
            return self.pop_victim_by_walk(view);
        };
        #[cfg(test)]
        if self.walk_victims {
            return self.pop_victim_by_walk(view);
        }
        // Only a request that ran can hold KV: search those of each level from the back, then
        // find the victim's place in the level with a slot search that reads no request.
        while self.back > self.front {
            let (mut p, mut i) = self.back_at;
            while i == 0 {
                p -= 1;
                i = self.q[p].len();
                self.ran_back = ran_order.q.get(p).map_or(0, Level::len);
            }
            let ran_q = ran_order.q.get(p).map_or(&[][..], Level::as_slice);
            let ran_q = &ran_q[..self.ran_back.min(ran_q.len())];
            let hit = ran_q.iter().rposition(|&v| evictable(view, v));
            self.victim_read += hit.map_or(ran_q.len(), |j| ran_q.len() - j);
            let low = &mut self.read_low[p];
            *low = (*low).min(hit.unwrap_or(0) as u32);
            if let std::ops::ControlFlow::Break(v) = self.move_back_to(p, i, hit, ran_q) {
                return v;
            }
        }
        None
    }

    fn pop_victim_later(&mut self, view: &ReplicaView, seq: &[u64], after: u64) -> Option<Slot> {
        self.pop_later(view, seq, after)
    }

    fn no_resident_left(&mut self, _view: &ReplicaView) -> bool {
        false
    }

    fn keep_victim(&mut self) {
        // `pop_victim` left `back_at` on the victim: just past it again.
        self.back += 1;
        self.back_at.1 += 1;
        self.ran_back += 1;
    }
}

impl LevelsWindow<'_> {
    /// The back of the window moves down to level `p`, before entry `i`: onto the victim
    /// `ran_q[hit]` when there is one (`Break(Some)`: `back_at` is on it, `keep_victim` moves it
    /// just past it again), else to the level's front (`Continue`: search the level above);
    /// `Break(None)` when the victim or the level's front lies in front of the window (nobody
    /// left to evict).
    fn move_back_to(
        &mut self,
        p: usize,
        i: usize,
        hit: Option<usize>,
        ran_q: &[Slot],
    ) -> std::ops::ControlFlow<Option<Slot>> {
        use std::ops::ControlFlow::{Break, Continue};
        let q = &self.q[p].as_slice()[..i];
        let k = hit.map_or(0, |j| rfind_slot(q, ran_q[j]));
        if i - k > self.back - self.front {
            self.back = self.front;
            return Break(None);
        }
        self.back -= i - k;
        self.back_at = (p, k);
        if let Some(j) = hit {
            self.ran_back = j;
            return Break(Some(ran_q[j]));
        }
        self.ran_back = 0;
        Continue(())
    }

    /// [`Window::pop_victim`] by a walk of the window from the back, each entry read (without
    /// `ran`; with it, the tests' reference).
    fn pop_victim_by_walk(&mut self, view: &ReplicaView) -> Option<Slot> {
        while self.back > self.front {
            let (mut p, mut i) = self.back_at;
            while i == 0 {
                p -= 1;
                i = self.q[p].len();
            }
            i -= 1;
            self.back -= 1;
            self.back_at = (p, i);
            self.victim_read += 1;
            let v = self.q[p].as_slice()[i];
            if evictable(view, v) {
                return Some(v);
            }
        }
        None
    }
}

/// [`Levels::iter`]: the levels' slices one after the other.
pub(super) struct Iter<'a> {
    q: &'a [Level],
    /// The levels not read yet.
    mask: u64,
    cur: std::slice::Iter<'a, Slot>,
}

impl Iterator for Iter<'_> {
    type Item = Slot;

    #[inline]
    fn next(&mut self) -> Option<Slot> {
        loop {
            if let Some(&s) = self.cur.next() {
                return Some(s);
            }
            if self.mask == 0 {
                return None;
            }
            let p = self.mask.trailing_zeros() as usize;
            self.mask &= self.mask - 1;
            self.cur = self.q[p].iter();
        }
    }
}

/// [`Levels::iter_rev`]: the levels' slices one after the other, from the back.
pub(super) struct RevIter<'a> {
    q: &'a [Level],
    /// The levels not read yet.
    mask: u64,
    cur: std::slice::Iter<'a, Slot>,
}

impl Iterator for RevIter<'_> {
    type Item = Slot;

    #[inline]
    fn next(&mut self) -> Option<Slot> {
        loop {
            if let Some(&s) = self.cur.next_back() {
                return Some(s);
            }
            if self.mask == 0 {
                return None;
            }
            let p = (u64::BITS - 1 - self.mask.leading_zeros()) as usize;
            self.mask &= !(1 << p);
            self.cur = self.q[p].iter();
        }
    }
}
