//! A stepwise fast-forward taking in arrivals (see [`Lazy`](super::lazy::Lazy)): when the batch
//! holds every queued request and requests arrive before the next boundary, the next `schedule`
//! pops everyone, each arrival at the back of its level, so the run goes on with them in the
//! batch. The lazy levels, offsets and demotion heap take them in as `lazy_begin` would have.

use super::lazy::quantum_i64;
use super::{BatchMemory, Demotion, Mlfq, PreemptionChoice, StarvationCheck};
use crate::policy::ReplicaView;
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

impl Mlfq {
    /// The configurations whose boundary with a fresh arrival is followed here: FastServe's code
    /// (`batch_memory = "reserve"`, the starvation check after the batch, which skips every
    /// request of a batch of everyone; one-level demotions and reversing requeues, which
    /// `requeue_lazy` ends the run with), without chunked prefill.
    pub(super) fn absorbs(&self) -> bool {
        let c = &self.cfg;
        c.batch_memory == BatchMemory::Reserve
            && c.chunk_size.is_none()
            && c.starvation_check == StarvationCheck::AfterBatch
            && c.requeue_reverses_batch
            && c.demotion == Demotion::OneLevel
            && !c.fifo
    }

    /// Whether the next `schedule` (at `view.now_ns`) would run `arrivals` (queued during the run
    /// followed lazily, in arrival order, and nobody else) with the `batch_len` requests of the
    /// batch: the batch has room for them all, their prompts pass the token check together (a
    /// lone prefill always does; the batch's members decode) and new prefills are not deferred.
    /// `pop_batch` then pops everyone, and the engine checks that the popped batch's blocks and
    /// the reserve are free (no swap-out, no swap-in: nobody is left out).
    pub(super) fn may_absorb(
        &self,
        batch_len: usize,
        arrivals: &[Slot],
        view: &ReplicaView,
    ) -> bool {
        let k = arrivals.len();
        let lz = &self.lazy;
        let only_arrivals = if lz.active {
            lz.fresh_slots == arrivals
        } else {
            // The run's first boundary (the lazy state begins there): they are the backs of
            // their levels in `order`, and the batch is everyone else.
            self.order.len() == batch_len + k && self.at_level_backs(arrivals)
        };
        let prompts_fit = || {
            let tokens: u64 = arrivals
                .iter()
                .map(|&s| view.req(s).prefill_tokens() as u64)
                .sum();
            k == 1 || tokens <= view.limits.max_batch_tokens as u64
        };
        only_arrivals
            && k > 0
            && self.absorbs()
            && batch_len + k <= view.limits.max_batch_size as usize
            && prompts_fit()
            && !self.defers_new(view)
    }

    /// Whether `arrivals` (in arrival order) are the last requests of their levels in `order`, in
    /// that order.
    fn at_level_backs(&self, arrivals: &[Slot]) -> bool {
        let level = |s: Slot| self.state[s as usize].level;
        arrivals.iter().enumerate().all(|(i, &s)| {
            let later = arrivals[i + 1..].iter().filter(|&&x| level(x) == level(s));
            let q = self.order.level(level(s) as usize).as_slice();
            let back = later.count() + 1;
            q.len() >= back && q[q.len() - back] == s
        })
    }

    /// New prefills are set aside (the host pool is short), as `form_batch` decides.
    fn defers_new(&self, view: &ReplicaView) -> bool {
        view.host_capacity_blocks() > 0
            && self.cfg.preemption == PreemptionChoice::Swap
            && (view.host_free_blocks() as f64)
                < self.cfg.defer_new_below_host_free_frac * view.host_capacity_blocks() as f64
    }

    /// The boundary at `now` followed lazily (`lazy_step`), with `arrivals` (in arrival order)
    /// joining the batch launched there: they were not requeued (they have not run), so they stay
    /// the backs of their levels, and from now on they are followed like every other request
    /// (they run at each boundary).
    pub(super) fn lazy_absorb(
        &mut self,
        arrivals: &[Slot],
        duration_ns: Ns,
        now: Ns,
        kv_tokens: impl Fn(Slot) -> u32,
    ) {
        // Queued after the last boundary: the backs of their levels, taken off latest first.
        if self.lazy.active {
            let lz = &mut self.lazy;
            for &s in arrivals.iter().rev() {
                let p = self.state[s as usize].level as usize;
                let q = &mut lz.levels[p];
                if lz.rev[p] ^ lz.parity {
                    debug_assert_eq!(q.as_slice().first(), Some(&s));
                    q.drop_front(1);
                } else {
                    debug_assert_eq!(q.as_slice().last(), Some(&s));
                    q.truncate(q.len() - 1);
                }
                lz.fresh[s as usize] = false;
            }
            lz.fresh_slots.clear();
        } else {
            // The run's first boundary: the others move to the lazy state (`on_steady_step`).
            for &s in arrivals.iter().rev() {
                let p = self.state[s as usize].level as usize;
                let q = self.order.level_mut(p);
                debug_assert_eq!(q.as_slice().last(), Some(&s));
                q.truncate(q.len() - 1);
                self.order.sync(p);
            }
            self.lazy_begin();
        }
        self.lazy_step(duration_ns, now, kv_tokens);
        let max_level = self.max_level();
        for &s in arrivals {
            let p = self.state[s as usize].level as usize;
            let lz = &mut self.lazy;
            lz.push_back(p, s);
            lz.since_ns[s as usize] = lz.service_ns;
            self.ran[s as usize] = true;
            if (p as u32) < max_level {
                // Attained service 0 now: demoted once the run's service passes the quantum.
                let threshold = quantum_i64(self.quantum_ns_table[p]);
                let service = lz.service_ns.min(i64::MAX as Ns) as i64;
                lz.push_threshold(threshold.saturating_add(service), s);
            }
        }
        // What the next `schedule` does before forming the batch (see `on_steady_step`).
        self.iterations += 1;
    }
}

impl Mlfq {
    /// `steady_order` while arrivals the run did not take in are queued in the lazy levels: the
    /// batch's run order is the levels' order without them.
    pub(super) fn lazy_order_without_fresh(&self, batch: &mut [Slot]) {
        let lz = &self.lazy;
        let mut out = batch.iter_mut();
        for (p, q) in lz.levels.iter().enumerate() {
            let mut put = |s: Slot| {
                if !lz.fresh[s as usize] {
                    *out.next()
                        .expect("the batch is every queued request but the fresh") = s;
                }
            };
            if lz.reversed(p) {
                q.iter().rev().for_each(|&s| put(s));
            } else {
                q.iter().for_each(|&s| put(s));
            }
        }
        debug_assert!(out.next().is_none());
    }
}

impl Mlfq {
    /// `steady_order` before the lazy state begins, with arrivals queued since the batch was
    /// formed (the latest ones, each at the back of its level): the order without them.
    pub(super) fn order_without_newest(&self, batch: &mut [Slot]) {
        let first_new = self.arrivals - (self.order.len() - batch.len()) as u64;
        let seq = &self.arrival_seq;
        let others = self.order.iter().filter(|&s| seq[s as usize] < first_new);
        for (o, s) in batch.iter_mut().zip(others) {
            *o = s;
        }
    }
}
