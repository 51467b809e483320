//! A fast-forward taking in arrivals. When the next events are arrivals before the next
//! boundary and the policy would simply add the newcomers to the batch there (MLFQ's batch of
//! everyone: [`crate::policy::FastForward::may_absorb`]), the arrivals are handled here exactly as
//! the event loop would, the boundary is passed as stepping would pass it — the batch's records
//! brought up to date, the newcomers' prefills launched with everyone's decodes — and a new
//! segment of repeats follows, without the policy writing its lazy state back, scheduling or
//! checking the plan.

use std::cmp::Reverse;

use super::fast_forward::{Bounds, Run, Stop, batch_repeats, count_finishing};
use super::replica::Replica;
use super::{CLASS_ARRIVAL, Observer, Sim};
use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::policy::{ReplicaView, Steady};
use crate::predict::Predictor;
use crate::vocab::TraceRow;
use crate::vocab::kv::extra_blocks_for;
use crate::vocab::request::{SampleState, Slot};
use crate::vocab::time::Ns;

/// Most repeats of one segment (as `fast_forward.rs` bounds them).
const MAX_REPEATS: usize = 1 << 20;

impl Sim {
    /// When the next event is an arrival at or before the boundary `cur_end`: handle it as the
    /// event loop would (the KV samples due before it first). Returns its slot if it went to
    /// replica `r`.
    pub(super) fn ff_take_arrival(
        &mut self,
        r: u32,
        cur_end: Ns,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Option<Slot>> {
        let Some(&Reverse(e)) = self.heap.peek() else {
            return Ok(None);
        };
        if e.class() != CLASS_ARRIVAL || e.0 > cur_end {
            return Ok(None);
        }
        self.heap.pop();
        // What `Sim::run` does with the event (the virtual clock hands back its time).
        let now = e.0.max(self.stats.makespan_ns);
        self.sample_through(now, false, observer)?;
        self.stats.events += 1;
        self.check_guards(now)?;
        let row = self
            .pending
            .take()
            .expect("an arrival event has a pending row");
        let (to, slot) = self.arrive(now, row, predictor)?;
        self.pull_arrival(trace)?;
        self.stats.makespan_ns = self.stats.makespan_ns.max(now);
        Ok((to == r).then_some(slot))
    }

    /// Whether a run may take arrivals in at all: one replica (the arrival goes to it, and no
    /// other replica's load is read while its records wait to be brought up to date), and a
    /// router that does not read request changes.
    pub(super) fn absorbing(&self) -> bool {
        self.replicas.len() == 1 && !self.router.reads_request_changes()
    }

    /// Whether the next event is an arrival at or before `t`.
    pub(super) fn arrival_by(&self, t: Ns) -> bool {
        self.heap
            .peek()
            .is_some_and(|Reverse(e)| e.class() == CLASS_ARRIVAL && e.0 <= t)
    }

    /// The boundary `m` of segment `run` (`at`: `m` and the blocks `need` of its decodes) is
    /// stopped by the next event: if that is an arrival, handle it and every other arrival by
    /// the boundary (into `Sim::ff_joining`), and if they all join the batch there (after the
    /// requests finishing there), say so.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ff_try_absorb(
        &mut self,
        r: u32,
        at: (usize, u32),
        run: &Run,
        steady: Steady,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Stop> {
        let (m, mut need) = at;
        let now = run.cur_end;
        let mut joining = std::mem::take(&mut self.ff_joining);
        joining.clear();
        while self.arrival_by(now) {
            match self.ff_take_arrival(r, now, trace, predictor, observer) {
                Ok(Some(s)) => joining.push(s),
                Ok(None) => {
                    joining.clear();
                    break;
                }
                Err(e) => {
                    self.ff_joining = joining;
                    return Err(e);
                }
            }
        }
        self.ff_joining = joining;
        if self.ff_joining.is_empty() {
            return Ok(Stop::Done);
        }
        let rep = &self.replicas[r as usize];
        let mut free = rep.kv.free_blocks();
        let mut finished = 0;
        if m == run.next_finish {
            let bt = self.cfg.block_tokens;
            (finished, _) = count_finishing(rep, m, bt, &mut need, &mut free);
            if finished == rep.batch.len() {
                return Ok(Stop::Done);
            }
        }
        Ok(if self.ff_may_absorb(r, now, need, free, steady) {
            Stop::Absorb { m, need, finished }
        } else {
            Stop::Done
        })
    }

    /// Whether the arrivals `Sim::ff_joining` join replica `r`'s batch at the boundary `now` (the
    /// batch's decodes need `need` blocks there, `free` are free once those finishing there are
    /// done): nothing else happens by then, the policy adds them and changes nothing else, and
    /// the blocks of the whole popped batch fit with the policy's reserve.
    fn ff_may_absorb(&mut self, r: u32, now: Ns, need: u32, free: u32, steady: Steady) -> bool {
        if self.heap.peek().is_some_and(|Reverse(e)| e.0 <= now) {
            return false;
        }
        let (limits, block_tokens) = (self.cfg.limits, self.cfg.block_tokens);
        let rep = &mut self.replicas[r as usize];
        let prefills = self.ff_joining.iter().map(|&s| {
            let q = rep.reqs.get(s);
            extra_blocks_for(q.prefill_tokens() as u64, q.blocks, block_tokens) as u64
        });
        let total = need as u64 + prefills.sum::<u64>();
        if total > free as u64 || free as u64 - total < steady.min_free_blocks as u64 {
            return false;
        }
        let batch_len = rep.batch.len();
        let view = view!(rep, now, limits);
        let joining = &self.ff_joining[..];
        rep.policy
            .fast_forward()
            .is_some_and(|ff| ff.may_absorb(batch_len, joining, &view))
    }

    /// Pass boundary `m` of the segment `run` (at `run.cur_end`) as stepping would, with the
    /// arrivals `Sim::ff_joining` joining the batch (`at`: `m`, the blocks `need` of the decodes
    /// there and how many requests finish there first), launch the iteration with their
    /// prefills and start the next segment (`run` reset to it); returns that segment's bounds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ff_absorb(
        &mut self,
        r: u32,
        at: (usize, u32, usize),
        run: &mut Run,
        b: Bounds,
        shape: &mut BatchShape,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Bounds> {
        let (m, need, finished) = at;
        let (limits, block_tokens) = (self.cfg.limits, self.cfg.block_tokens);
        let now = run.cur_end;
        let dur = now - run.cur_start;
        // The iteration end at `now`: an event when stepping.
        self.sample_through(now, false, observer)?;
        self.stats.events += 1;
        self.check_guards(now)?;
        self.stats.makespan_ns = self.stats.makespan_ns.max(now);
        self.stats.ff_absorbed_arrivals += self.ff_joining.len() as u64;
        self.stats.ff_absorbing_boundaries += 1;
        self.mark_changed(r);
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        run.service_ns += dur;
        if m >= 2 {
            run.gaps_repeat(rep, &mut self.ff_top, dur);
        }
        if finished > 0 {
            let window = (run.window_lo, &mut self.ff_alloc[..]);
            let times = (now, run.service_ns, run.first_token_ns);
            let gaps = &self.ff_top[..];
            rep.ff_finish(
                r,
                m,
                finished,
                window,
                times,
                gaps,
                block_tokens,
                shape,
                predictor,
                observer,
            );
        }
        run.flush_gaps(rep);
        let joining = &self.ff_joining[..];
        {
            let view = view!(rep, now, limits);
            if let Some(ff) = rep.policy.fast_forward() {
                ff.on_steady_absorb(joining, m as u64, dur, &view);
            }
        }
        let times = (run.service_ns, now, run.first_token_ns);
        rep.commit_records(m as u64, times, &self.ff_top, block_tokens);
        let end = rep.ff_join(r, joining, now, need, block_tokens, shape, observer)?;
        self.stats.iterations += 1;
        let rep = &self.replicas[r as usize];
        let (loose, next_finish) = batch_repeats(rep);
        let steady = b.steady;
        let horizon = loose.min(steady.max_iterations.min(MAX_REPEATS as u64) as usize);
        *run = Run::new(now, end, next_finish);
        run.absorbed = true;
        self.ff_top.clear();
        Ok(Bounds {
            next_event_ns: self.heap.peek().map_or(Ns::MAX, |Reverse(e)| e.0),
            horizon,
            next_finish,
            ..b
        })
    }
}

impl Replica {
    /// Launch at boundary `now` the iteration of the batch's decodes (`need` new blocks; `shape`
    /// their repeat) with the whole prefills of `arrivals`, as `form_batch` and `launch_single`
    /// do; leaves in `shape` the decodes that repeat it. Returns its end.
    #[allow(clippy::too_many_arguments)]
    fn ff_join(
        &mut self,
        r: u32,
        arrivals: &[Slot],
        now: Ns,
        need: u32,
        block_tokens: u32,
        shape: &mut BatchShape,
        observer: &mut dyn Observer,
    ) -> Result<Ns> {
        shape.decode_context_tokens += self.batch.len() as u64;
        let mut launched = *shape;
        let mut blocks = need;
        for &s in arrivals {
            let q = self.reqs.get_mut_moving(s, SampleState::Running);
            q.in_batch = true;
            q.step_tokens = q.prefill_left();
            let prompt = q.step_tokens;
            let extra = extra_blocks_for(prompt as u64, q.blocks, block_tokens);
            q.blocks += extra;
            blocks += extra;
            if q.first_scheduled_ns.is_none() {
                q.first_scheduled_ns = Some(now);
            }
            self.batch.push(s);
            launched.add_prefill_chunk(prompt, 0);
            // Its repeats: everyone decodes, the newcomer's context its prompt + the new token.
            shape.add_decode(prompt);
        }
        let ok = self.kv.try_alloc(blocks);
        debug_assert!(ok, "free blocks were checked");
        let d = self.executor.run_iteration(&launched)?;
        let end = now
            .checked_add(d)
            .ok_or_else(|| SimError::Limit("simulated time overflowed u64 nanoseconds".into()))?;
        self.iter_start_ns = now;
        self.count_iteration(d, launched.requests() as u64);
        observer.on_iteration(r, now, end, &launched);
        self.report_memory(r, now, end, block_tokens, observer);
        Ok(end)
    }
}
