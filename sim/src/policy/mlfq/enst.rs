//! `offload = "paper"`: the ENST order (Estimated Next Scheduled Time, FastServe paper §KV-cache
//! management; `shared/docs/scheduling-papers.md` §1.5) without a pass over the whole queue.
//!
//! For request i at level p_i, with B = `max_batch_size`, q_k the level quanta and a_j the
//! service j attained at its current level:
//!
//! - `T_promote(i) = max(0, α − idle_i)` (α = `starvation_threshold_s`, idle on the starvation
//!   clock); ∞ at level 0, where promotion changes nothing;
//! - `T_execute(i, j)` for every j ahead of i in priority order: the time j runs before it drops
//!   below i assuming it never finishes — `(q_{p_j} − a_j) + Σ_{p_j<k<p_i} q_k` for `p_j < p_i`
//!   (the paper's `Σ_{k=p_j}^{p_i−1} q_k` with j's quantum already used at its own level taken
//!   off, our refinement), and `q_{p_i} − a_j` for j ahead in i's own level (0 in the paper's
//!   formula, which would make a level's members indistinguishable);
//! - `T_execute(i) = (1/B) Σ_j T_execute(i, j)`; `ENST(i) = min(T_promote, T_execute)`.
//!
//! With running sums over the order: `Σ_j T(i,j) = n_prev·Q(p_i) − Σ_prev (Q(p_j) + a_j) +
//! n_same·q_{p_i} − Σ_same a_j`, `Q(p) = Σ_{k<p} q_k`, summed in `f64` in priority order.
//!
//! Only requests that hold KV have a score that matters (only they are swapped in or out), and
//! they have all run. A request that never ran has attained nothing, so its part of the sums is
//! the same for all of them: one more request, `Σ_same a_j` unchanged, `Q(p)` added to the
//! level's `Σ (Q(p_j) + a_j)`. A level's requests that never ran are behind those that ran
//! (a request that runs is requeued at the front of its level, arrivals join the back), so a
//! level is its part of `ran_order` followed by one run of never-run requests — checked, and
//! walked entry by entry where it is not so (level 0 after starvation promotions). A run of k is
//! folded into the sums at once, the k additions of `Q(p)` by [`repeat_add`] (bit for bit what
//! the k additions give). The walk costs O(requests that ran + levels), not O(queue).

use super::super::common::{mark_plan, unmark_plan};
use super::super::swap_passes::{SwapInRoom, swap_in_while_room, swap_out_while_short};
use super::super::{Plan, ReplicaView};
use super::Mlfq;
use crate::vocab::request::{KvLoc, Slot};
use crate::vocab::time::ns_to_s;

/// A request that holds KV, with its flat position in the order and its ENST (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scored {
    pub pos: usize,
    pub slot: Slot,
    pub score: f64,
}

/// `x` after `k` floating-point additions of `c` (`x`, `c` ≥ 0 and finite), bit for bit what
/// `for _ in 0..k { x += c }` gives, in O(binades crossed) steps: within a binade of `x` (one
/// spacing u between neighbours) each addition adds the same multiple of u, unless `c` lies
/// exactly half-way between two (then the rounding depends on the parity of `x`, and the steps
/// are taken one by one).
pub(super) fn repeat_add(mut x: f64, c: f64, mut k: u64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    while k > 0 {
        let y = x + c;
        if y == x {
            return x; // `c` is absorbed: every later addition too
        }
        let exp = x.to_bits() >> 52;
        if x <= 0.0 || exp <= 52 || exp >= 0x7fe {
            (x, k) = (y, k - 1);
            continue;
        }
        let u = f64::from_bits((exp - 52) << 52);
        let top = f64::from_bits((exp + 1) << 52);
        // Exact error of `x + c` (two-sum): a tie is `c` half-way between multiples of u.
        let d = y - x;
        let err = (x - (y - d)) + (c - d);
        if y >= top || err.abs() == 0.5 * u {
            (x, k) = (y, k - 1);
            continue;
        }
        // In units of u: x = xu, each addition adds du while the sum stays below 2^53.
        let xu = (x.to_bits() & MANTISSA) | (1 << 52);
        let du = (d / u) as u64;
        let steps = (((1u64 << 53) - 1 - xu) / du).min(k);
        x += steps as f64 * d;
        k -= steps;
    }
    x
}

/// The running sums of the ENST walk, up to some position of the order.
struct Sums {
    level: u32,
    q_prefix: f64,
    q_level: f64,
    n_prev: f64,
    s_prev: f64,
    n_same: f64,
    a_same: f64,
    qa_same: f64,
}

impl Mlfq {
    /// Fold the sums level by level up to level `p` (the order is level by level).
    fn fold_to(&self, m: &mut Sums, p: u32) {
        while m.level < p {
            m.n_prev += m.n_same;
            m.s_prev += m.qa_same;
            (m.n_same, m.a_same, m.qa_same) = (0.0, 0.0, 0.0);
            m.q_prefix += m.q_level;
            m.level += 1;
            m.q_level = self.quantum_s(m.level);
        }
    }

    /// ENST of every request of the order that holds KV, into `self.scored` in priority order;
    /// returns the first request not marked in `taken` whose KV is off the GPU or absent (the
    /// one memory is kept for), with its flat position. See the module docs.
    pub(super) fn enst_scored(
        &mut self,
        view: &ReplicaView,
        taken: &[bool],
    ) -> Option<(usize, Slot)> {
        let mut out = std::mem::take(&mut self.scored);
        out.clear();
        let mut m = Sums {
            level: 0,
            q_prefix: 0.0,
            q_level: self.quantum_s(0),
            n_prev: 0.0,
            s_prev: 0.0,
            n_same: 0.0,
            a_same: 0.0,
            qa_same: 0.0,
        };
        let mut blocked = None;
        let mut looked = 0u64;
        let mut base = 0;
        for (p, q) in self.order.levels() {
            let q = q.as_slice();
            if q.is_empty() {
                continue;
            }
            self.fold_to(&mut m, p as u32);
            let ran = self.ran_order.level(p).as_slice();
            let mut walk = Walk {
                view,
                taken,
                out: &mut out,
                blocked: &mut blocked,
                looked: &mut looked,
            };
            if q.len() >= ran.len() && q[..ran.len()] == *ran {
                walk.looked_at(ran.len());
                for (i, &s) in ran.iter().enumerate() {
                    self.visit_ran(&mut walk, &mut m, base + i, s);
                }
                walk.never_ran(&mut m, base + ran.len(), &q[ran.len()..]);
            } else {
                // Mixed: the runs of never-run requests between those that ran.
                let mut i = 0;
                while i < q.len() {
                    let n = q[i..].iter().take_while(|&&s| !self.has_run(s)).count();
                    walk.looked_at(n);
                    walk.never_ran(&mut m, base + i, &q[i..i + n]);
                    i += n;
                    if i < q.len() {
                        walk.looked_at(1);
                        self.visit_ran(&mut walk, &mut m, base + i, q[i]);
                        i += 1;
                    }
                }
            }
            base += q.len();
        }
        self.enst_looked += looked;
        self.scored = out;
        blocked
    }

    /// One request that ran, at flat position `pos`: its score (kept if it holds KV), then its
    /// part of the sums.
    fn visit_ran(&self, w: &mut Walk, m: &mut Sums, pos: usize, s: Slot) {
        let st = self.state[s as usize];
        debug_assert_eq!(st.level, m.level);
        let b = w.view.limits.max_batch_size.max(1) as f64;
        let a = ns_to_s(st.attained_ns).min(m.q_level);
        let r = w.view.req(s);
        if w.blocked.is_none()
            && !w.taken[s as usize]
            && matches!(r.kv_loc, KvLoc::None | KvLoc::Host)
        {
            *w.blocked = Some((pos, s));
        }
        if matches!(r.kv_loc, KvLoc::Gpu | KvLoc::Host) {
            let sum = m.n_prev * m.q_prefix - m.s_prev + m.n_same * m.q_level - m.a_same;
            let t_execute = sum.max(0.0) / b;
            let t_promote = if st.level == 0 {
                f64::INFINITY
            } else {
                let idle_s = ns_to_s(w.view.now_ns.saturating_sub(st.last_step_ns));
                (self.cfg.starvation_threshold_s - idle_s).max(0.0)
            };
            w.out.push(Scored {
                pos,
                slot: s,
                score: t_execute.min(t_promote),
            });
        }
        m.n_same += 1.0;
        m.a_same += a;
        m.qa_same += m.q_prefix + a;
    }
}

/// What the ENST walk fills in, and its work count.
struct Walk<'a, 'v> {
    view: &'a ReplicaView<'v>,
    taken: &'a [bool],
    out: &'a mut Vec<Scored>,
    blocked: &'a mut Option<(usize, Slot)>,
    looked: &'a mut u64,
}

impl Walk<'_, '_> {
    fn looked_at(&mut self, n: usize) {
        *self.looked += n as u64;
    }

    /// A run of requests that never ran, from flat position `pos`: the first of them not taken
    /// without KV on the GPU may be the blocked one (the rest are not looked at), and the run
    /// folds into the sums at once (none attained anything).
    fn never_ran(&mut self, m: &mut Sums, pos: usize, run: &[Slot]) {
        if run.is_empty() {
            return;
        }
        if self.blocked.is_none() {
            for (i, &s) in run.iter().enumerate() {
                *self.looked += 1;
                let loc = self.view.req(s).kv_loc;
                if !self.taken[s as usize] && matches!(loc, KvLoc::None | KvLoc::Host) {
                    *self.blocked = Some((pos + i, s));
                    break;
                }
            }
        }
        m.n_same += run.len() as f64;
        m.qa_same = repeat_add(m.qa_same, m.q_prefix + 0.0, run.len() as u64);
    }
}

impl Mlfq {
    /// `offload = "paper"`: the ENST scores pick who is swapped out (largest first) and in
    /// (smallest first), as [`super::super::common::score_offload`] does over the whole order.
    pub(super) fn paper_offload(
        &mut self,
        view: &ReplicaView,
        plan: &mut Plan,
        free_after: u32,
        reserve: u32,
    ) {
        let mut taken = std::mem::take(&mut self.taken);
        let host_free = mark_plan(view, plan, &mut taken);
        let blocked = self.enst_scored(view, &taken);
        let blocked_need = blocked.map_or(0, |(_, s)| view.extra_blocks_for_next(s)) as i64;
        let deficit = reserve as i64 + blocked_need - free_after as i64;
        let floor = blocked.map_or(0, |(i, _)| i + 1);
        let mut cand = std::mem::take(&mut self.cand);
        let mut swapped_out = false;
        if deficit > 0 {
            cand.clear();
            cand.extend(self.scored.iter().copied().filter(|c| {
                let r = view.req(c.slot);
                c.pos >= floor
                    && !taken[c.slot as usize]
                    && r.kv_loc == KvLoc::Gpu
                    && !r.in_flight()
            }));
            cand.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(b.pos.cmp(&a.pos)));
            let slots = cand.iter().map(|c| c.slot);
            swapped_out = swap_out_while_short(view, plan, &mut taken, slots, deficit, host_free);
        }
        if !swapped_out {
            let window = match self.cfg.swap_in_window {
                0 => usize::MAX,
                w => w as usize,
            };
            cand.clear();
            cand.extend(self.scored.iter().copied().filter(|c| {
                c.pos < window && !taken[c.slot as usize] && view.req(c.slot).kv_loc == KvLoc::Host
            }));
            cand.sort_unstable_by(|a, b| a.score.total_cmp(&b.score).then(a.pos.cmp(&b.pos)));
            let room = SwapInRoom {
                free_after,
                reserve,
                blocked: blocked.map(|(_, s)| s),
                blocked_need,
            };
            swap_in_while_room(view, plan, cand.iter().map(|c| c.slot), room);
        }
        unmark_plan(plan, &mut taken);
        self.cand = cand;
        self.taken = taken;
    }
}
