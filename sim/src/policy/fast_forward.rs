//! Fast-forward, the opt-in performance extension of [`Policy`](super::Policy). A plain policy
//! implements only `Policy` and the engine calls `schedule` at every iteration boundary. A policy
//! that can prove its plan will repeat returns `Some(self)` from
//! [`Policy::fast_forward`](super::Policy::fast_forward) and implements [`FastForward`]: the engine
//! (`engine/fast_forward.rs`) then repeats the batch without events while the returned [`Steady`]
//! bounds hold, and tells the policy what happened through the hooks below. Fast-forward must give
//! byte-identical outputs to stepping (`servesim run --no-fast-forward`; the differential tests in
//! `tests/integration/policies.rs` check every policy that opts in).

use super::ReplicaView;
use crate::vocab::request::Slot;
use crate::vocab::time::Ns;

/// How long a policy's last plan stays what it would decide anyway (fast-forward). The engine
/// repeats the batch while every bound holds, and stops earlier at any arrival, completion,
/// transfer, prediction extension or other event; stopping early is always correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steady {
    /// At most this many repeated iterations.
    pub max_iterations: u64,
    /// Each repeat must leave at least this many GPU blocks free after its allocations.
    pub min_free_blocks: u32,
    /// The summed duration of the iterations that end before a repeat starts (from the first run of
    /// the plan) must stay ≤ this (e.g. the smallest quantum left in the batch).
    pub max_service_ns: Ns,
    /// No repeat may start at or after this time (e.g. a starvation promotion).
    pub until_ns: Ns,
    /// The policy follows the repeats one by one through [`FastForward::on_steady_step`] (its state
    /// changes at boundaries without changing its plan's set, e.g. MLFQ demotions when the batch
    /// holds every request) instead of once at the end through
    /// [`FastForward::on_steady_iterations`].
    pub stepwise: bool,
    /// With `stepwise`: the plan may also be repeated after an iteration that prefilled some of its
    /// requests (they then repeat as decodes).
    pub with_prefills: bool,
    /// With `stepwise`: a request that finishes leaves the batch and the others repeat (the
    /// policy's plan is "every request", so a completion does not change it).
    pub through_completions: bool,
}

impl Steady {
    /// No bound of the policy's own: the plan holds until something else happens.
    pub const UNBOUNDED: Steady = Steady {
        max_iterations: u64::MAX,
        min_free_blocks: 0,
        max_service_ns: Ns::MAX,
        until_ns: Ns::MAX,
        stepwise: false,
        with_prefills: false,
        through_completions: false,
    };
}

/// The fast-forward hooks of a policy (see the module header).
pub trait FastForward {
    /// Called right after [`Policy::schedule`](super::Policy::schedule) returned a plan that the
    /// engine found repeatable on its side: decode-only, no preemptions, no swaps, no reservations
    /// beyond the blocks held, and `batch` (the plan's run order). Return how long re-running that
    /// same batch is guaranteed to be exactly what `schedule` would decide at each following
    /// boundary, provided nothing else happens (no arrival, completion, transfer or prediction
    /// extension: the engine stops at those itself). `None` means "not this time": the engine calls
    /// `schedule` at the next boundary as usual.
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady>;

    /// The engine repeated the batch for `iterations` further boundaries without calling
    /// [`Policy::schedule`](super::Policy::schedule) or
    /// [`Policy::on_iteration_end`](super::Policy::on_iteration_end): bring the policy to the state
    /// those calls would have left (`service_ns` = summed durations of the `iterations` iterations
    /// that ended, the last at `view.now_ns`), and leave in `batch` the run order `schedule` would
    /// have produced at the last boundary (the set is unchanged).
    fn on_steady_iterations(
        &mut self,
        _batch: &mut [Slot],
        _iterations: u64,
        _service_ns: Ns,
        _view: &ReplicaView,
    ) {
    }

    /// With [`Steady::stepwise`]: the batch's iteration ended at `view.now_ns` after `duration_ns`
    /// and is repeated. This is the `repeat`-th end of the fast-forward (1-based): the engine
    /// updates request state only at the end, so a batch request's KV tokens are now
    /// `view.req(s).kv_tokens + repeat`. Do what
    /// [`Policy::on_iteration_end`](super::Policy::on_iteration_end) and the next
    /// [`Policy::schedule`](super::Policy::schedule) would do to the policy's state; the run order
    /// `schedule` would produce (the set is unchanged) is read through
    /// [`FastForward::steady_order`] when the engine needs it. With [`Steady::with_prefills`] a
    /// request prefilled by the plan's first run has `view.req(s).kv_tokens_after_next() + repeat −
    /// 1` KV tokens now (which is the same count for a decode). With
    /// [`Steady::through_completions`], requests that finished at this boundary were reported
    /// through [`Policy::on_finish`](super::Policy::on_finish) just before and are no longer in
    /// `batch`.
    fn on_steady_step(
        &mut self,
        _batch: &mut [Slot],
        _repeat: u64,
        _duration_ns: Ns,
        _view: &ReplicaView,
    ) {
    }

    /// With [`Steady::stepwise`]: a run of repeats begins; the summed durations of the boundaries
    /// it reports through [`FastForward::on_steady_step`] stay below `max_service_ns`.
    fn on_steady_begin(&mut self, _max_service_ns: Ns) {}

    /// With [`Steady::stepwise`]: write into `batch` (the batch's requests, in some order) the run
    /// order `schedule` would produce now. The default leaves `batch` as it is (for a policy whose
    /// [`FastForward::on_steady_step`] keeps it up to date).
    fn steady_order(&mut self, _batch: &mut [Slot]) {}

    /// Whether [`FastForward::may_absorb`] may ever say yes (so that the engine looks for an
    /// arrival to take in before the first repeat only for such a policy).
    fn takes_arrivals(&self) -> bool {
        false
    }

    /// With [`Steady::stepwise`] and [`Steady::through_completions`], at a boundary (at
    /// `view.now_ns`) before which the requests `arrivals` (one or more, in arrival order) arrived
    /// (reported through [`Policy::on_arrival`](super::Policy::on_arrival) during the run):
    /// whether the next [`Policy::schedule`](super::Policy::schedule) would run them all with the
    /// `batch_len` requests of the batch and change nothing else, provided the popped batch's KV
    /// blocks (the arrivals' prefills included) leave [`Steady::min_free_blocks`] free, which the
    /// engine checks. `false` (the default): the engine stops the run there.
    fn may_absorb(&self, _batch_len: usize, _arrivals: &[Slot], _view: &ReplicaView) -> bool {
        false
    }

    /// After [`FastForward::may_absorb`] said yes: what [`FastForward::on_steady_step`] does at
    /// this boundary, with `arrivals` joining the batch (they have not run yet) and followed from
    /// now on.
    fn on_steady_absorb(
        &mut self,
        _arrivals: &[Slot],
        _repeat: u64,
        _duration_ns: Ns,
        _view: &ReplicaView,
    ) {
    }
}
