//! The queue-wide versions of the `offload = "paper"` pass, kept as the reference the tests
//! check [`super::enst`] against: every request's ENST in one pass over the order, then
//! [`score_offload`] over the whole order.

use super::super::common::{OffloadTarget, score_offload};
use super::super::{Plan, ReplicaView};
use super::Mlfq;
use crate::vocab::time::ns_to_s;

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
}
