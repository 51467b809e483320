//! Requeueing a batch into one level of [`Levels`]: the batch members leave the level and the
//! group of requests requeued at it goes to its front.

use super::{Level, Levels};
use crate::vocab::request::Slot;

impl Levels {
    /// Level `p` loses its `n` requests marked in `taken` (searched as [`free_ends`] does) and
    /// gets `group` at its front; its other requests keep their order. Returns the entries
    /// looked at.
    pub(in super::super) fn requeue_level(
        &mut self,
        p: usize,
        n: u32,
        taken: &[bool],
        group: &[Slot],
    ) -> u64 {
        let q = &mut self.q[p];
        let (looked, gone, back_gone) = free_ends(q.as_mut_slice(), n, taken);
        if back_gone > 0 {
            let len = q.len();
            q.truncate(len - back_gone);
        }
        self.place_group(p, gone, group);
        looked
    }

    /// When level `p` starts with `leaving` (in that order), it loses them and gets `group` at
    /// its front, as [`Levels::requeue_level`] would do with them marked, and this returns true
    /// (`leaving.len()` entries were looked at, in one slice comparison); otherwise nothing
    /// changes and it returns false. A batch formed in priority order leaves each level from
    /// its front in the level's order: the usual case, which needs no marks and no search.
    pub(in super::super) fn requeue_prefix(
        &mut self,
        p: usize,
        leaving: &[Slot],
        group: &[Slot],
    ) -> bool {
        if !starts_with(self.q[p].as_slice(), leaving) {
            return false;
        }
        self.place_group(p, leaving.len(), group);
        true
    }

    /// [`Levels::requeue_prefix`] when the group is `leaving` reversed (`reverse`) or `leaving`
    /// itself: the level's first entries are reversed in place, or stay as they are.
    #[inline(always)]
    pub(in super::super) fn requeue_prefix_in_place(
        &mut self,
        p: usize,
        leaving: &[Slot],
        reverse: bool,
    ) -> bool {
        let q = self.q[p].as_mut_slice();
        if !starts_with(q, leaving) {
            return false;
        }
        if reverse {
            q[..leaving.len()].reverse();
        }
        self.work += leaving.len() as u64;
        true
    }

    /// The first `gone` places of level `p` are free: the group's last ones go there and the
    /// rest in front of them, or the free places left over go.
    fn place_group(&mut self, p: usize, gone: usize, group: &[Slot]) {
        let q: &mut Level = &mut self.q[p];
        let k = group.len();
        if k >= gone {
            q.as_mut_slice()[..gone].copy_from_slice(&group[k - gone..]);
            let more = k - gone;
            if more > 0 {
                if q.start < more {
                    q.make_front_room(more);
                }
                q.start -= more;
                let at = q.start;
                q.buf[at..at + more].copy_from_slice(&group[..more]);
            }
        } else {
            let extra = gone - k;
            q.as_mut_slice()[extra..gone].copy_from_slice(group);
            q.drop_front(extra);
        }
        self.work += k as u64;
        if q.is_empty() {
            self.mask &= !(1 << p);
        } else {
            self.mask |= 1 << p;
        }
    }
}

/// Whether `q` starts with `prefix` (short: compared in place, no library call).
#[inline]
fn starts_with(q: &[Slot], prefix: &[Slot]) -> bool {
    q.len() >= prefix.len() && q.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Find the `n` requests of `q` marked in `taken` (or all there are), searched from its front
/// and, once the front search has passed `2n + 16` entries without finding them all, from both
/// ends in turn (a starvation check leaves the batch behind the promoted block: at the back).
/// Those found from the front become `q`'s first ones (the others before them keep their order
/// behind them), those found from the back its last ones (the others after them keep their
/// order in front of them). Returns the entries looked at and how many were found from the
/// front and from the back.
fn free_ends(q: &mut [Slot], n: u32, taken: &[bool]) -> (u64, usize, usize) {
    let len = q.len();
    let front_only = 2 * n as usize + 16;
    let (mut a, mut b, mut left) = (0, 0, n);
    let (mut found_front, mut found_back) = (0, 0);
    while left > 0 && a + b < len {
        if a >= front_only && a - front_only >= b {
            b += 1;
            if taken[q[len - b] as usize] {
                (found_back, left) = (found_back + 1, left - 1);
            }
        } else {
            a += 1;
            if taken[q[a - 1] as usize] {
                (found_front, left) = (found_front + 1, left - 1);
            }
        }
    }
    // Front: the others right-aligned in `q[..a]`.
    let (mut w, mut r, mut others) = (a, a, a - found_front);
    while others > 0 {
        r -= 1;
        if !taken[q[r] as usize] {
            w -= 1;
            q[w] = q[r];
            others -= 1;
        }
    }
    // Back: the others left-aligned in `q[len - b..]`.
    let (mut w, mut others) = (len - b, b - found_back);
    let mut r = len - b;
    while others > 0 {
        if !taken[q[r] as usize] {
            q[w] = q[r];
            w += 1;
            others -= 1;
        }
        r += 1;
    }
    ((a + b) as u64, found_front, found_back)
}
