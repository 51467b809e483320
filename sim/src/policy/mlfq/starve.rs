//! Starvation promotion without a pass over the requests the last check promoted.
//!
//! A check promotes every queued request idle for at least `starvation_threshold_s` (but the
//! batch just formed, with `starvation_check = "after-batch"`) to the front of level 0, in queue
//! order (reversed with `requeue_reverses_batch`); level 0's other members follow in their order.
//! A promoted request stays idle past the threshold until it runs, so each check promotes it
//! again. Between two checks the requests the first promoted — the *block* — stay one contiguous
//! run of level 0: one leaves the block only by running (it is requeued at the front of its
//! level) or by leaving the queue, and requests join level 0 only at its front (requeued) or its
//! back (arrivals). So level 0 at a check is `F ++ G ++ R`: F the requests requeued in front of
//! the block since the last check, G what is left of the block (all idle past the threshold),
//! R those behind it. The check looks at F, R, the other levels and the batch members in G (near
//! its front: the batch is formed from the front), and moves the rest of G as a whole, in place
//! (with `requeue_reverses_batch` it is reversed in place: one slice reversal). Under a burst the
//! block is nearly the whole queue, and the rest is the few requests that ran within the
//! threshold. Anything that moves requests otherwise (a fast-forward followed lazily) empties the
//! block first: an empty block only means a full look at the next check.

use super::levels::Levels;
use super::{LEVEL_CAP, Mlfq};
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

/// The requests the last starvation check promoted that have neither run nor left since.
#[derive(Clone, Debug, Default)]
pub(super) struct Block {
    /// Per slot: in the block.
    pub(super) member: Vec<bool>,
    /// Members: a contiguous run of level 0 of `order`.
    pub(super) len: usize,
    /// Members that ran: a contiguous run of level 0 of `ran_order`.
    pub(super) ran: usize,
}

/// Scratch of [`Mlfq::starvation_check`].
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    /// Promoted from F, from R and from the levels below, in queue order.
    from_f: Vec<Slot>,
    from_r: Vec<Slot>,
    from_low: Vec<Slot>,
    /// Level 0's members that stay, in order.
    rest: Vec<Slot>,
    front: Vec<Slot>,
    back: Vec<Slot>,
}

/// Where the block lies in level 0 of a sequence: after `f_len` entries, `g_len` long; its
/// `skip_n` members that are not promoted are among its first `g_scan`.
#[derive(Clone, Copy, Debug)]
struct Span {
    f_len: usize,
    g_len: usize,
    g_scan: usize,
    skip_n: usize,
}

/// The block's span in level `q` (its `len` members marked in `member`), with the first `g_scan`
/// of it holding its `skip_n` members marked in `taken`.
fn span(q: &[Slot], member: &[bool], len: usize, taken: &[bool], skip_n: usize) -> Span {
    let f_len = if len == 0 {
        q.len()
    } else {
        q.iter()
            .position(|&s| member[s as usize])
            .expect("the block is in level 0")
    };
    let (mut g_scan, mut found) = (0, 0);
    while found < skip_n {
        found += taken[q[f_len + g_scan] as usize] as usize;
        g_scan += 1;
    }
    Span {
        f_len,
        g_len: len,
        g_scan,
        skip_n,
    }
}

/// Level 0 of `seq` becomes `front ++ G' ++ back`, G' = the block without its members marked in
/// `taken` (reversed with `reverse`), in place.
fn rebuild_level0(
    seq: &mut Levels,
    at: Span,
    taken: &[bool],
    reverse: bool,
    front: &[Slot],
    back: &[Slot],
) {
    let q = seq.level_mut(0);
    // The block's skipped members go to its first places, the others keep their order.
    let g = &mut q.as_mut_slice()[at.f_len..at.f_len + at.g_scan];
    let mut w = g.len();
    for r in (0..g.len()).rev() {
        if !taken[g[r] as usize] {
            w -= 1;
            g[w] = g[r];
        }
    }
    debug_assert_eq!(w, at.skip_n);
    q.drop_front(at.f_len + at.skip_n);
    q.truncate(at.g_len - at.skip_n);
    if reverse {
        q.as_mut_slice().reverse();
    }
    q.extend_from_slice(back);
    seq.sync(0);
    if !front.is_empty() {
        seq.requeue_level(0, 0, &[], front);
    }
}

impl Mlfq {
    /// `s` leaves the block (it runs or leaves the queue): call before its `ran` mark changes.
    pub(super) fn leave_block(&mut self, s: Slot) {
        if self.block.member.get(s as usize) == Some(&true) {
            self.block.member[s as usize] = false;
            self.block.len -= 1;
            if self.has_run(s) {
                self.block.ran -= 1;
            }
        }
    }

    /// Empty the block (before requests move in other ways than the module docs list).
    pub(super) fn dissolve_block(&mut self) {
        if self.block.len > 0 {
            for &s in self.order.level(0).as_slice() {
                self.block.member[s as usize] = false;
            }
        }
        (self.block.len, self.block.ran) = (0, 0);
    }

    /// Promote every queued request idle for at least the starvation threshold, but those of
    /// `skip` (the batch just formed, with `starvation_check = "after-batch"`). See the module
    /// docs.
    pub(super) fn starvation_check(&mut self, now: Ns, skip: &[Slot]) {
        if self.cfg.fifo {
            return;
        }
        // Nearest, not truncated: 1.001 s × 1e9 = 1000999999.9999999 must not fire 1 ns early.
        let threshold_ns = (self.cfg.starvation_threshold_s * 1e9).round() as Ns;
        self.ensure_ran(self.state.len());
        self.mark_taken(skip, true);
        let mut x = std::mem::take(&mut self.starve);
        let member = &self.block.member;
        let ran = &self.ran;
        let skip_n = skip.iter().filter(|&&s| member[s as usize]).count();
        let skip_ran_n = skip
            .iter()
            .filter(|&&s| member[s as usize] && ran[s as usize])
            .count();
        let q0 = self.order.level(0).as_slice();
        let at = span(q0, member, self.block.len, &self.taken, skip_n);
        let ran_q0 = self.ran_order.level(0).as_slice();
        let ran_at = span(ran_q0, member, self.block.ran, &self.taken, skip_ran_n);
        let from_levels = self.starving(&mut x, now, threshold_ns, at);
        let kept = at.g_len - at.skip_n;
        if kept + x.from_f.len() + x.from_r.len() + x.from_low.len() == 0 {
            self.mark_taken(skip, false);
            self.starve = x;
            return;
        }
        // The levels below lose the promoted (not the batch: unmarked meanwhile).
        self.mark_taken(skip, false);
        self.promote(&x, from_levels);
        self.mark_taken(skip, true);
        // The block is now the promoted requests.
        let promoted = x.from_f.iter().chain(&x.from_r).chain(&x.from_low);
        let new_ran = promoted.clone().filter(|&&s| self.ran[s as usize]).count();
        for &s in promoted.clone() {
            self.block.member[s as usize] = true;
        }
        for &s in skip {
            self.block.member[s as usize] = false;
        }
        self.block.len = kept + x.from_f.len() + x.from_r.len() + x.from_low.len();
        self.block.ran = self.block.ran - skip_ran_n + new_ran;
        let reverse = self.cfg.requeue_reverses_batch;
        for (seq, at, ran_only) in [(0, at, false), (1, ran_at, true)] {
            let ran = &self.ran;
            let keep = |s: &&Slot| !ran_only || ran[**s as usize];
            x.front.clear();
            x.back.clear();
            if reverse {
                let from_low = x.from_low.iter().rev().filter(keep);
                x.front
                    .extend(from_low.chain(x.from_r.iter().rev().filter(keep)));
                x.back.extend(x.from_f.iter().rev().filter(keep));
            } else {
                x.front.extend(x.from_f.iter().filter(keep));
                let from_r = x.from_r.iter().filter(keep);
                x.back.extend(from_r.chain(x.from_low.iter().filter(keep)));
            }
            x.back.extend(x.rest.iter().filter(keep));
            let levels = if seq == 0 {
                &mut self.order
            } else {
                &mut self.ran_order
            };
            rebuild_level0(levels, at, &self.taken, reverse, &x.front, &x.back);
        }
        self.mark_taken(skip, false);
        self.starve = x;
        self.resident_stale();
    }

    /// Sort level 0's F and R, and the batch members in its block, into those promoted and those
    /// that stay, and collect the idle requests of the other levels (`self.taken` marks the batch);
    /// returns the mask of the levels below 0 that lose requests.
    fn starving(&mut self, x: &mut Scratch, now: Ns, threshold_ns: Ns, at: Span) -> u64 {
        for v in [&mut x.from_f, &mut x.from_r, &mut x.from_low, &mut x.rest] {
            v.clear();
        }
        let mut looked = 0;
        let taken = &self.taken;
        let idle = |s: Slot| {
            now.saturating_sub(self.state[s as usize].last_step_ns) >= threshold_ns
                && !taken[s as usize]
        };
        let q0 = self.order.level(0).as_slice();
        for &s in &q0[..at.f_len] {
            (if idle(s) { &mut x.from_f } else { &mut x.rest }).push(s);
        }
        let g = &q0[at.f_len..at.f_len + at.g_scan];
        x.rest.extend(g.iter().filter(|&&s| taken[s as usize]));
        for &s in &q0[at.f_len + at.g_len..] {
            (if idle(s) { &mut x.from_r } else { &mut x.rest }).push(s);
        }
        looked += q0.len() - (at.g_len - at.g_scan);
        let mut from_levels = 0u64;
        for (p, q) in self.order.levels().skip_while(|&(p, _)| p == 0) {
            looked += q.len();
            for &s in q.as_slice() {
                if idle(s) {
                    x.from_low.push(s);
                    from_levels |= 1 << p;
                }
            }
        }
        self.starve_looked += looked as u64;
        from_levels
    }

    /// Promote `x`'s requests of F, R and the levels below: their states, and the levels below
    /// lose them.
    fn promote(&mut self, x: &Scratch, from_levels: u64) {
        let reset = self.cfg.reset_attained_on_promotion;
        for &s in x.from_f.iter().chain(&x.from_r) {
            if reset {
                self.state[s as usize].attained_ns = 0;
            }
        }
        for &s in &x.from_low {
            let st = &mut self.state[s as usize];
            st.promotions += 1;
            self.hist[st.level as usize].promotions_out += 1;
            st.level = 0;
            if reset {
                st.attained_ns = 0;
            }
        }
        self.mark_taken(&x.from_low, true);
        let taken = &self.taken;
        for p in (1..=LEVEL_CAP as usize).filter(|&p| from_levels >> p & 1 == 1) {
            self.order.retain(p, taken);
            self.ran_order.retain(p, taken);
        }
        self.mark_taken(&x.from_low, false);
    }
}
