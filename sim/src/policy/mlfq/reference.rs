//! The queue-wide versions of the `offload = "paper"` pass and of the starvation check, kept as
//! the reference the tests check [`super::enst`] and [`super::starve`] against: every request's
//! ENST in one pass over the order, then [`score_offload`] over the whole order; every queued
//! request looked at by each starvation check.

use super::super::common::{OffloadTarget, score_offload};
use super::super::{Plan, PreemptMode, ReplicaView};
use super::HostFull;
use super::levels::Levels;
use super::reserve::Room;
use super::{LEVEL_CAP, Mlfq};
use crate::vocab::request::KvLoc;
use crate::vocab::request::Slot;
use crate::vocab::time::{Ns, ns_to_s};

impl Mlfq {
    /// ENST (seconds from now) of every request of `self.order`, in its order, in one pass with
    /// running sums (the formula is in [`super::enst`]'s docs).
    pub(super) fn enst_s(&mut self, view: &ReplicaView) -> Vec<f64> {
        let mut scores = Vec::new();
        self.enst_looked += self.order.len() as u64;
        let b = view.limits.max_batch_size.max(1) as f64;
        let alpha = self.cfg.starvation_threshold_s;
        let (mut level, mut q_prefix, mut q_level) = (0u32, 0.0f64, self.quantum_s(0));
        let (mut n_prev, mut s_prev) = (0.0f64, 0.0f64);
        let (mut n_same, mut a_same, mut qa_same) = (0.0f64, 0.0f64, 0.0f64);
        for s in self.order.iter() {
            let st = self.state[s as usize];
            while level < st.level {
                // Order is level by level: fold the finished level into the "previous" sums.
                n_prev += n_same;
                s_prev += qa_same;
                (n_same, a_same, qa_same) = (0.0, 0.0, 0.0);
                q_prefix += q_level;
                level += 1;
                q_level = self.quantum_s(level);
            }
            let a = ns_to_s(st.attained_ns).min(q_level);
            let sum = n_prev * q_prefix - s_prev + n_same * q_level - a_same;
            let t_execute = sum.max(0.0) / b;
            let t_promote = if st.level == 0 {
                f64::INFINITY
            } else {
                (alpha - ns_to_s(view.now_ns.saturating_sub(st.last_step_ns))).max(0.0)
            };
            scores.push(t_execute.min(t_promote));
            n_same += 1.0;
            a_same += a;
            qa_same += q_prefix + a;
        }
        scores
    }

    /// `offload = "paper"`: the scores of [`Self::enst_s`] pick who is swapped out and in.
    pub(super) fn paper_offload_reference(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        free_after: u32,
        reserve: u32,
    ) {
        let scores = self.enst_s(view);
        let mut taken = std::mem::take(&mut self.taken);
        self.flat.clear();
        self.flat.extend(self.order.iter());
        score_offload(
            view,
            plan,
            &self.flat,
            &scores,
            OffloadTarget {
                free_after,
                reserve,
                window: match self.cfg.swap_in_window {
                    0 => usize::MAX,
                    w => w as usize,
                },
            },
            &mut taken,
        );
        self.taken = taken;
    }

    /// Promote every queued request idle for at least the starvation threshold, but those of
    /// `skip` (the batch just formed, with `starvation_check = "after-batch"`).
    pub(super) fn starvation_check_reference(&mut self, now: Ns, skip: &[Slot]) {
        if self.cfg.fifo {
            return;
        }
        // Nearest, not truncated: 1.001 s × 1e9 = 1000999999.9999999 must not fire 1 ns early.
        let threshold_ns = (self.cfg.starvation_threshold_s * 1e9).round() as Ns;
        self.starve_looked += self.order.len() as u64;
        let mut promote_buf = Vec::new();
        self.mark_taken(skip, true);
        // One pass finds, marks and promotes (their places in the levels change below).
        let reset = self.cfg.reset_attained_on_promotion;
        let mut from_levels = 0u64;
        for (p, q) in self.order.levels() {
            for &s in q.as_slice() {
                let st = &mut self.state[s as usize];
                if now.saturating_sub(st.last_step_ns) < threshold_ns || self.taken[s as usize] {
                    continue;
                }
                self.taken[s as usize] = true;
                promote_buf.push(s);
                from_levels |= 1 << p;
                if p > 0 {
                    st.promotions += 1;
                    self.hist[p].promotions_out += 1;
                }
                st.level = 0;
                if reset {
                    st.attained_ns = 0;
                }
            }
        }
        // The batch was marked only to be passed over (none of it was promoted).
        self.mark_taken(skip, false);
        if promote_buf.is_empty() {
            return;
        }
        let buf = promote_buf;
        // The levels the promoted requests left lose them (each walked once).
        let taken = &self.taken;
        for p in (0..=LEVEL_CAP as usize).filter(|&p| from_levels >> p & 1 == 1) {
            self.order.retain(p, taken);
            self.ran_order.retain(p, taken);
        }
        // As `requeue_batch`: pushed one at a time to the front of level 0 in queue order with
        // `requeue_reverses_batch` (so the last one pushed comes first), else in reverse order.
        let reverses = self.cfg.requeue_reverses_batch;
        let group = &mut self.requeued;
        to_front(&mut self.order, &buf, reverses, |_| true, group);
        let ran = &self.ran;
        let has_run = |s: Slot| ran.get(s as usize) == Some(&true);
        to_front(&mut self.ran_order, &buf, reverses, has_run, group);
        self.mark_taken(&buf, false);
        self.resident_stale();
    }
}

/// Put the members of `front` that pass `keep` at the front of level 0, as pushing them there
/// one at a time in their order (`reverse`: so that they end up reversed) or in reverse order
/// (they keep theirs) would (`group`: scratch).
fn to_front(
    seq: &mut Levels,
    front: &[Slot],
    reverse: bool,
    keep: impl Fn(Slot) -> bool,
    group: &mut Vec<Slot>,
) {
    group.clear();
    if reverse {
        group.extend(front.iter().rev().copied().filter(|&s| keep(s)));
    } else {
        group.extend(front.iter().copied().filter(|&s| keep(s)));
    }
    seq.requeue_level(0, 0, &[], group);
}

impl Mlfq {
    /// [`Mlfq::evict_queued`] as a walk of the whole `ran_order` from the back (the requests off
    /// the GPU looked at one by one): the reference the tests check `resident` against.
    pub(super) fn evict_queued_by_ran_order(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        room: &mut Room,
        host_full: HostFull,
    ) {
        let mut looked = 0;
        self.ran_order.any_rev(|s| {
            if room.deficit <= 0 {
                return true;
            }
            looked += 1;
            let r = view.req(s);
            if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || r.in_flight() || r.blocks == 0 {
                return false;
            }
            match self.evict_mode(view, s, &mut room.host_free, host_full) {
                Some(PreemptMode::Recompute) if !self.may_recompute(s, room.guard) => {
                    room.host_blocked = true;
                }
                Some(mode) => {
                    plan.preempt.push((s, mode));
                    room.deficit -= r.blocks as i64;
                    if mode == PreemptMode::Recompute {
                        room.freed_now += r.blocks as i64;
                    }
                }
                None => room.host_blocked = true,
            }
            false
        });
        self.scanned += looked;
    }
}
