//! The `batch_memory = "evict"` victim search of a candidate that holds KV under chunked prefill
//! when every eviction is a recompute: the guard ([`super::super::super::common::RecomputeGuard`])
//! spares every victim that arrived before the candidate, and the search passes over them.
//!
//! Under a burst that thrashes (adversarial round 11, 05) a late arrival holding KV met nearly
//! every resident request, all earlier than it, and the search read them all at every boundary
//! (~2,000 at a 5,000 burst). Each [`Level`] keeps an upper bound of its requests' arrival
//! sequence numbers, known once a search read the whole level and kept until a request may have
//! joined it; a level whose bound is not later than the candidate holds no victim for it and is
//! passed over without reading. MLFQ demotes by service, so the levels below a late arrival hold
//! the early ones: the bounds pass over most of them.

use super::super::super::ReplicaView;
use super::super::super::common::{evictable, pop_later_by_pops};
use super::{Level, LevelsWindow};
use crate::vocab::request::Slot;

impl LevelsWindow<'_> {
    /// `Window::pop_victim_later`: `Window::pop_victim` searching for a victim later than
    /// `after` only, each level whose bound is not later passed over unread.
    pub(super) fn pop_later(
        &mut self,
        view: &ReplicaView,
        seq: &[u64],
        after: u64,
    ) -> Option<Slot> {
        let Some((_ran, ran_order)) = self.ran else {
            return pop_later_by_pops(self, view, seq, after);
        };
        #[cfg(test)]
        if self.walk_victims || self.walk_spared {
            return pop_later_by_pops(self, view, seq, after);
        }
        while self.back > self.front {
            let (mut p, mut i) = self.back_at;
            while i == 0 {
                p -= 1;
                i = self.q[p].len();
                self.ran_back = ran_order.q.get(p).map_or(0, Level::len);
            }
            let level = ran_order.q.get(p);
            let whole = level.map_or(&[][..], Level::as_slice);
            let ran_q = &whole[..self.ran_back.min(whole.len())];
            // In the front's level, those that ran before the front are candidates taken.
            let lo = if p == self.front_at.0 {
                self.ran_seen.min(ran_q.len())
            } else {
                0
            };
            let hit = match level {
                Some(l) if l.seq_bound.get() > after => {
                    let mut max = 0;
                    let hit = ran_q[lo..].iter().rposition(|&v| {
                        max = max.max(seq[v as usize]);
                        seq[v as usize] > after && evictable(view, v)
                    });
                    let hit = hit.map(|j| lo + j);
                    self.victim_read += hit.map_or(ran_q.len() - lo, |j| ran_q.len() - j);
                    let low = &mut self.read_low[p];
                    *low = (*low).min(hit.unwrap_or(lo) as u32);
                    if hit.is_none() && ran_q.len() == whole.len() {
                        // Every request of the level read but the candidates taken from it
                        // (their sequence numbers only): its bound is known.
                        max = ran_q[..lo].iter().fold(max, |m, &v| m.max(seq[v as usize]));
                        self.victim_read += lo;
                        l.seq_bound.set(max);
                    }
                    hit
                }
                _ => None,
            };
            if let std::ops::ControlFlow::Break(v) = self.move_back_to(p, i, hit, ran_q) {
                return v;
            }
        }
        None
    }
}

/// The place of `t` in `q` (`q.len()` if it is not there): the slots compared in blocks, with no
/// request read.
pub(super) fn find_slot(q: &[Slot], t: Slot) -> usize {
    const BLOCK: usize = 32;
    let mut blocks = q.chunks_exact(BLOCK);
    let mut at = 0;
    for b in blocks.by_ref() {
        if b.iter().fold(false, |any, &x| any | (x == t)) {
            break;
        }
        at += BLOCK;
    }
    at + q[at..].iter().position(|&x| x == t).unwrap_or(q.len() - at)
}

/// The place of `t` in `q` searched from the back (0 if it is not there): the slots compared in
/// blocks, with no request read.
pub(super) fn rfind_slot(q: &[Slot], t: Slot) -> usize {
    const BLOCK: usize = 32;
    let mut end = q.len();
    for b in q.rchunks_exact(BLOCK) {
        if b.iter().fold(false, |any, &x| any | (x == t)) {
            break;
        }
        end -= BLOCK;
    }
    q[..end].iter().rposition(|&x| x == t).unwrap_or(0)
}
