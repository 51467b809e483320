//! The engine side of fast-forward: repeating a steady decode batch without an event per
//! iteration.

use std::cmp::Reverse;

use super::replica::Replica;
use super::{Guards, Observer, Sim};
use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::policy::{Limits, ReplicaView, Steady};
use crate::predict::Predictor;
use crate::vocab::TraceRow;
use crate::vocab::kv::extra_blocks_for;
use crate::vocab::request::{KvLoc, Request};
use crate::vocab::sketch::GapRun;
use crate::vocab::time::Ns;

/// Scratch bound per fast-forward (the next one continues from there).
const MAX_REPEATS: usize = 1 << 20;

/// What bounds one segment of a fast-forward, found before its first repeat.
pub(super) struct Bounds {
    pub(super) next_event_ns: Ns,
    pub(super) steady: Steady,
    /// Most repeats.
    pub(super) horizon: usize,
    /// The boundary at which the next request finishes (`usize::MAX`: none is followed).
    pub(super) next_finish: usize,
    /// An arrival that stops a repeat may be taken into the run (see `ff_absorb.rs`).
    pub(super) absorbs: bool,
}

/// Blocks the repeat at boundary m allocates: request q with `a` KV tokens after the first
/// run and b blocks (a ≤ b·B) first needs a new block at m = b·B − a + 1, then every B
/// boundaries. Counted one window of B boundaries at a time (each request crosses at most
/// once per window).
///
/// The first boundary ≥ `from` at which `q` needs a new block.
fn next_crossing(q: &Request, from: usize, block_tokens: u64) -> usize {
    let bt = block_tokens as usize;
    let m1 = (q.blocks as u64 * block_tokens + 1 - q.kv_tokens_after_next() as u64) as usize;
    if m1 >= from {
        m1
    } else {
        m1 + (from - m1).div_ceil(bt) * bt
    }
}

/// Count the blocks the batch allocates at each boundary of the window starting at `m`.
fn fill_window(alloc: &mut Vec<u32>, rep: &Replica, m: usize, block_tokens: u64) {
    let bt = block_tokens as usize;
    alloc.clear();
    alloc.resize(bt, 0);
    for &s in &rep.batch {
        let at = next_crossing(rep.reqs.get(s), m, block_tokens);
        if at < m + bt {
            alloc[at - m] += 1;
        }
    }
}

/// What the plan's members allow (with `Some`): the most repeats, `(strict, loose)`, and the
/// boundary at which the first one finishes (`usize::MAX`: none); `None` when a member cannot
/// repeat. The records stay as they were at the plan's first run until the end: request q has
/// then `kv_tokens_after_next() + m − 1` KV tokens and `generated_tokens + m` tokens at
/// boundary m (the end of the m-th iteration). The repeat launched at boundary m must not follow
/// a prediction being reached (`loose`, with `through_completions`) nor, otherwise, a request
/// finishing (`strict`).
fn plan_repeats(rep: &Replica) -> Option<(usize, usize, usize)> {
    let (mut strict, mut loose) = (MAX_REPEATS, MAX_REPEATS);
    let mut next_finish = usize::MAX;
    // Back to front (the mins do not depend on the order): a chunking policy's partial
    // prefill chunks come after its decodes, and end the walk at once.
    for item in rep.plan.run.iter().rev() {
        let q = rep.reqs.get(item.slot);
        // A partial prefill chunk emits nothing and is never repeated as a decode.
        if item.reserve_blocks > q.blocks || q.kv_tokens_after_step() < q.prefill_tokens() {
            return None;
        }
        member_repeats(q, &mut strict, &mut loose, &mut next_finish);
    }
    (loose > 0).then_some((strict, loose, next_finish))
}

/// [`plan_repeats`]' bounds for member `q`.
#[inline]
fn member_repeats(q: &Request, strict: &mut usize, loose: &mut usize, next_finish: &mut usize) {
    let left = |stop_at: u32| stop_at.saturating_sub(q.generated_tokens + 1) as usize;
    if q.output_tokens <= q.predicted_output_tokens {
        *strict = (*strict).min(left(q.output_tokens));
        *next_finish = (*next_finish).min((q.output_tokens - q.generated_tokens) as usize);
    } else {
        let l = left(q.predicted_output_tokens);
        *strict = (*strict).min(l);
        *loose = (*loose).min(l);
    }
}

/// [`plan_repeats`] for a batch whose members all decode or prefill a whole prompt (a segment
/// after an absorbed arrival): `(loose, next_finish)`.
pub(super) fn batch_repeats(rep: &Replica) -> (usize, usize) {
    let (mut strict, mut loose) = (MAX_REPEATS, MAX_REPEATS);
    let mut next_finish = usize::MAX;
    for &s in &rep.batch {
        member_repeats(rep.reqs.get(s), &mut strict, &mut loose, &mut next_finish);
    }
    (loose, next_finish)
}

/// The requests finishing at boundary `m`: their blocks free first (`free`), and they allocate
/// nothing for the repeat (`need`). Returns how many finish and when the next one finishes.
pub(super) fn count_finishing(
    rep: &Replica,
    m: usize,
    block_tokens: u32,
    need: &mut u32,
    free: &mut u32,
) -> (usize, usize) {
    let mut finished = 0usize;
    let mut next_after = usize::MAX;
    for &s in &rep.batch {
        let q = rep.reqs.get(s);
        let left = (q.output_tokens - q.generated_tokens) as usize;
        if left == m {
            finished += 1;
            if next_crossing(q, m, block_tokens as u64) == m {
                *need -= 1;
            }
            let kv = q.kv_tokens_after_next() as u64 + m as u64 - 1;
            *free += q.blocks + extra_blocks_for(kv, q.blocks, block_tokens);
        } else if q.output_tokens <= q.predicted_output_tokens {
            next_after = next_after.min(left);
        }
    }
    (finished, next_after)
}

/// The token gaps a fast-forward's repeats share (ITL). Boundary 1's gap depends on each
/// request's previous token, and is added when its record is brought up to date; the gap at
/// boundary m ≥ 2 is the m-th iteration's duration for every member. Those are shared: the largest
/// `top_k` of them (the most any member's p99 needs) are kept in `Sim::ff_top` and merged into each
/// record in O(top_k), and the run sketch gets each with a weight of the batch size.
#[derive(Default)]
struct SharedGaps {
    /// Found at the first repeat's end (m = 2): the batch then holds every member that will take
    /// shared gaps, and many fast-forwards stop before. 0 until then.
    top_k: usize,
    /// Consecutive repeats mostly last the same: their gaps go to the sketch as one weighted run.
    run: GapRun,
}

impl SharedGaps {
    /// A repeat of `dur` ended at a boundary m ≥ 2.
    #[inline]
    fn repeat(&mut self, rep: &mut Replica, top: &mut Vec<Ns>, dur: Ns) {
        if self.top_k == 0 {
            let k = rep.batch.iter().map(|&s| rep.reqs.get(s).itl_top_k()).max();
            self.top_k = k.unwrap_or(1);
        }
        keep_largest(top, self.top_k, dur);
        self.run.push(&mut rep.itl, dur, rep.batch.len() as u64);
    }
}

/// Keep `x` in `top`, the (at most `k`) largest values seen, ascending.
fn keep_largest(top: &mut Vec<Ns>, k: usize, x: Ns) {
    if top.len() == k {
        if k == 0 || x <= top[0] {
            return;
        }
        top.remove(0);
    }
    let i = top.partition_point(|&y| y < x);
    top.insert(i, x);
}

/// Record the token gaps of request `q` over the repeats it took part in (before its record is
/// brought up to date): the gap to boundary 1 (`boundary1`, from its last token; none if that is
/// its first token), returned for the run sketch, then the shared gaps of boundaries 2…
/// (`gaps`: the largest, ascending; only its own top k matter for its p99 and maximum).
#[inline]
fn ff_token_gaps(q: &mut Request, boundary1: Ns, gaps: &[Ns]) -> Option<Ns> {
    let g1 = q.emit_token_gap(boundary1);
    // Usually none of the shared gaps changes the record: one comparison with the largest.
    if let Some(&largest) = gaps.last()
        && q.itl.would_keep(largest)
    {
        merge_shared_gaps(q, gaps);
    }
    g1
}

/// The shared gaps' part of [`ff_token_gaps`] when the largest changes the record.
#[cold]
fn merge_shared_gaps(q: &mut Request, gaps: &[Ns]) {
    let k = q.itl_top_k();
    // Largest first: once one would change nothing, no smaller one would.
    for &g in gaps[gaps.len().saturating_sub(k)..].iter().rev() {
        if !q.itl.would_keep(g) {
            break;
        }
        q.itl.push(g);
    }
}

impl Bounds {
    /// Whether a bound other than the KV blocks stops the repeat at boundary `cur_end` (after
    /// `service_ns` of repeated service; the last iteration took `dur`; `events` so far).
    fn stop(&self, cur_end: Ns, service_ns: Ns, dur: Ns, events: u64, guards: &Guards) -> bool {
        cur_end >= self.next_event_ns
            || self.stop_besides_events(cur_end, service_ns, dur, events, guards)
    }

    /// [`Bounds::stop`] but for the next event.
    fn stop_besides_events(
        &self,
        cur_end: Ns,
        service_ns: Ns,
        dur: Ns,
        events: u64,
        guards: &Guards,
    ) -> bool {
        cur_end >= self.steady.until_ns
            || cur_end > guards.max_sim_ns
            || events >= guards.max_events
            || service_ns.saturating_add(dur) > self.steady.max_service_ns
    }
}

/// The state of a fast-forward between boundaries (one segment: from the iteration launched at
/// its start; an absorbed arrival starts a new segment, see `ff_absorb.rs`).
pub(super) struct Run {
    pub(super) cur_start: Ns,
    pub(super) cur_end: Ns,
    /// Summed durations of the iterations that ended at the boundaries passed in this segment.
    pub(super) service_ns: Ns,
    pub(super) repeats: u64,
    pub(super) window_lo: usize,
    gaps: SharedGaps,
    /// The end of the segment's first iteration (its members' boundary 1).
    pub(super) first_token_ns: Ns,
    pub(super) next_finish: usize,
    /// An arrival was taken into the run (the batch's records were brought up to date then).
    pub(super) absorbed: bool,
}

impl Run {
    /// A repeat of `dur` ended at a boundary m ≥ 2 of the segment.
    pub(super) fn gaps_repeat(&mut self, rep: &mut Replica, top: &mut Vec<Ns>, dur: Ns) {
        self.gaps.repeat(rep, top, dur);
    }
    /// The segment's shared gaps go to the run sketch.
    pub(super) fn flush_gaps(&mut self, rep: &mut Replica) {
        self.gaps.run.flush(&mut rep.itl);
    }
    pub(super) fn new(start: Ns, end: Ns, next_finish: usize) -> Self {
        Run {
            cur_start: start,
            cur_end: end,
            service_ns: 0,
            repeats: 0,
            window_lo: usize::MAX,
            gaps: SharedGaps::default(),
            first_token_ns: end,
            next_finish,
            absorbed: false,
        }
    }
}

/// Where a segment of repeats stopped.
pub(super) enum Stop {
    /// The run is over.
    Done,
    /// At boundary `m`, the arrivals in `Sim::ff_joining` join the batch: `need` blocks for its
    /// decodes, `finished` requests finish there first.
    Absorb {
        m: usize,
        need: u32,
        finished: usize,
    },
}

impl Sim {
    /// Fast-forward: the decode-only batch just launched on replica `r` (at `start`, ending at
    /// `end`) is repeated, iteration by iteration but without events, policy calls or plan
    /// checks, while nothing could make the next boundary decide differently: no other event
    /// comes first, nobody finishes or outlives its prediction, the KV blocks of the next step fit
    /// and the policy's [`crate::policy::Steady`] bounds hold. An arrival that the policy would
    /// simply add to the batch is taken in ([`Sim::ff_absorb`]), several at one boundary too. Each repeated iteration still
    /// gets its own cost-model time, observer call, event count and KV accounting, so every
    /// output is identical to stepping. Returns the end of the last iteration launched.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fast_forward(
        &mut self,
        r: u32,
        start: Ns,
        end: Ns,
        mut shape: BatchShape,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Ns> {
        let Some(mut b) = self.ff_bounds(r, start, end, &mut shape) else {
            return Ok(end);
        };
        let mut run = Run::new(start, end, b.next_finish);
        self.ff_top.clear();
        loop {
            match self.ff_segment(r, &mut run, &b, &mut shape, trace, predictor, observer)? {
                Stop::Done => break,
                Stop::Absorb { m, need, finished } => {
                    let at = (m, need, finished);
                    let sh = &mut shape;
                    b = self.ff_absorb(r, at, &mut run, b, sh, predictor, observer)?;
                }
            }
        }
        let (limits, bt32) = (self.cfg.limits, self.cfg.block_tokens);
        let rep = &mut self.replicas[r as usize];
        run.gaps.run.flush(&mut rep.itl);
        if run.repeats == 0 {
            if run.absorbed
                && let Some(ff) = rep.policy.fast_forward()
            {
                ff.steady_order(&mut rep.batch);
            }
            return Ok(run.cur_end);
        }
        let times = (run.service_ns, run.cur_start, run.first_token_ns);
        rep.ff_commit(run.repeats, times, &self.ff_top, b.steady, limits, bt32);
        Ok(run.cur_end)
    }

    /// The repeats of one segment of a fast-forward, from `run`'s state, until a bound stops
    /// them or an arrival is to join the batch.
    #[allow(clippy::too_many_arguments)]
    fn ff_segment(
        &mut self,
        r: u32,
        run: &mut Run,
        b: &Bounds,
        shape: &mut BatchShape,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Stop> {
        let (limits, guards, steady) = (self.cfg.limits, self.cfg.guards, b.steady);
        let (bt32, block_tokens) = (self.cfg.block_tokens, self.cfg.block_tokens as u64);
        let bt = block_tokens as usize;
        for m in 1..=b.horizon {
            if run.cur_end < b.next_event_ns && run.cur_end > self.next_sample_ns {
                // A KV sample at T shows the state after every event stamped ≤ T: before this
                // boundary (no other event comes first), as the iteration end's event takes it.
                self.sample_through(run.cur_end, false, observer)?;
            }
            let rep = &mut self.replicas[r as usize];
            if run.window_lo == usize::MAX || m >= run.window_lo + bt {
                run.window_lo = m;
                fill_window(&mut self.ff_alloc, rep, m, block_tokens);
            }
            let mut need = self.ff_alloc[m - run.window_lo];
            let dur = run.cur_end - run.cur_start;
            let mut free = rep.kv.free_blocks();
            if b.stop(run.cur_end, run.service_ns, dur, self.stats.events, &guards) {
                let events = self.stats.events;
                if b.absorbs
                    && !b.stop_besides_events(run.cur_end, run.service_ns, dur, events, &guards)
                {
                    let at = (m, need);
                    return self.ff_try_absorb(r, at, run, steady, trace, predictor, observer);
                }
                break;
            }
            // Requests finishing at this boundary (only with `through_completions`).
            let finishing = m == run.next_finish;
            let (mut finished, mut next_after) = (0usize, usize::MAX);
            if finishing {
                (finished, next_after) = count_finishing(rep, m, bt32, &mut need, &mut free);
                if finished == rep.batch.len() {
                    break; // the batch would be empty: the normal path takes it from here
                }
            }
            if need > free || free - need < steady.min_free_blocks {
                break;
            }
            self.stats.count_repeat(run.cur_end);
            run.service_ns += dur;
            run.repeats += 1;
            rep.account_usage(run.cur_end);
            if m >= 2 {
                run.gaps.repeat(rep, &mut self.ff_top, dur);
            }
            if finishing {
                let window = (run.window_lo, &mut self.ff_alloc[..]);
                let times = (run.cur_end, run.service_ns, run.first_token_ns);
                let gaps = &self.ff_top[..];
                rep.ff_finish(
                    r, m, finished, window, times, gaps, bt32, shape, predictor, observer,
                );
                run.next_finish = next_after;
            }
            if steady.stepwise {
                rep.ff_policy_step(run.cur_end, limits, run.repeats, dur);
            }
            let e = rep.ff_step(r, run.cur_end, need, shape, observer)?;
            self.stats.iterations += 1;
            (run.cur_start, run.cur_end) = (run.cur_end, e);
        }
        Ok(Stop::Done)
    }

    /// The bounds of a fast-forward of replica `r`'s batch (`None`: no repeat is possible), and
    /// the repeats' shape in `shape`.
    fn ff_bounds(&mut self, r: u32, start: Ns, end: Ns, shape: &mut BatchShape) -> Option<Bounds> {
        let limits = self.cfg.limits;
        let next_event_ns = self.heap.peek().map_or(Ns::MAX, |Reverse(e)| e.0);
        // An arrival by the first boundary stops the run there, unless it may be taken in.
        let may_absorb = self.absorbing();
        let arrival_first = end >= next_event_ns && may_absorb && self.arrival_by(end);
        let rep = &mut self.replicas[r as usize];
        let arrival_first = arrival_first
            && rep
                .policy
                .fast_forward()
                .is_some_and(|ff| ff.takes_arrivals());
        if end >= next_event_ns && !arrival_first {
            return None;
        }
        let (strict, loose, mut next_finish) = plan_repeats(rep)?;
        let steady = {
            let view = view!(rep, start, limits);
            rep.policy.fast_forward()?.steady(&rep.batch, &view)?
        };
        if shape.prefill_requests > 0 && !(steady.stepwise && steady.with_prefills) {
            return None;
        }
        let completions = steady.stepwise && steady.through_completions;
        if !completions {
            next_finish = usize::MAX;
        }
        let absorbs = completions && may_absorb;
        if arrival_first && !absorbs {
            return None;
        }
        let horizon = if completions { loose } else { strict }
            .min(steady.max_iterations.min(MAX_REPEATS as u64) as usize);
        if horizon == 0 {
            return None;
        }
        if steady.stepwise {
            // Boundary m ends at `start` + the summed durations so far, before the next event.
            if let Some(ff) = rep.policy.fast_forward() {
                ff.on_steady_begin(next_event_ns.saturating_sub(start));
            }
        }
        if shape.prefill_requests > 0 {
            // The repeats are decodes of every request (context = KV tokens + the new one).
            *shape = BatchShape::default();
            for &s in &rep.batch {
                shape.add_decode(rep.reqs.get(s).kv_tokens_after_next());
            }
        }
        Some(Bounds {
            next_event_ns,
            steady,
            horizon,
            next_finish,
            absorbs,
        })
    }
}

impl Replica {
    /// With [`crate::policy::Steady::stepwise`]: the policy follows repeat `repeat` (of `dur`,
    /// ending at `now`).
    fn ff_policy_step(&mut self, now: Ns, limits: Limits, repeat: u64, dur: Ns) {
        let view = view!(self, now, limits);
        if let Some(ff) = self.policy.fast_forward() {
            ff.on_steady_step(&mut self.batch, repeat, dur, &view);
        }
    }

    /// What `finish_iteration` does for the requests finishing at boundary `m` (`finished` of
    /// them), in batch order (which only matters when several finish together). `window`: the
    /// first boundary of the current allocation window and its counts; `times`: the boundary's
    /// time, the service so far and the first token's time; `gaps`: the largest shared token
    /// gaps so far.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ff_finish(
        &mut self,
        r: u32,
        m: usize,
        finished: usize,
        window: (usize, &mut [u32]),
        times: (Ns, Ns, Ns),
        gaps: &[Ns],
        block_tokens: u32,
        shape: &mut BatchShape,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) {
        let (window_lo, alloc) = window;
        let (cur_end, service_ns, first_token_ns) = times;
        let bt = block_tokens as usize;
        if finished > 1
            && let Some(ff) = self.policy.fast_forward()
        {
            ff.steady_order(&mut self.batch);
        }
        let mut i = 0;
        while i < self.batch.len() {
            let s = self.batch[i];
            if (self.reqs.get(s).output_tokens - self.reqs.get(s).generated_tokens) as usize != m {
                i += 1;
                continue;
            }
            let mut q = self.reqs.get_mut(s);
            if let Some(g) = ff_token_gaps(&mut q, first_token_ns, gaps) {
                self.itl.add(g, 1);
            }
            // Its later block crossing in the current window is no longer needed.
            let at = next_crossing(&q, m + 1, block_tokens as u64);
            if at < window_lo + bt {
                alloc[at - window_lo] -= 1;
            }
            let kv = q.kv_tokens_after_next() + m as u32 - 1;
            shape.decode_requests -= 1;
            shape.decode_context_tokens -= kv as u64;
            q.blocks += extra_blocks_for(kv as u64, q.blocks, block_tokens);
            q.kv_tokens = kv;
            q.mid_prefill = false;
            q.kv_loc = KvLoc::Gpu;
            q.generated_tokens += m as u32;
            q.attained_ns += service_ns;
            q.last_run_end_ns = cur_end;
            q.in_batch = false;
            if q.first_token_ns.is_none() {
                q.first_token_ns = Some(first_token_ns);
            }
            drop(q);
            self.batch.remove(i);
            self.complete(r, s, cur_end, predictor, observer);
        }
    }

    /// Allocate the `need` blocks of the repeat at boundary `now` and launch it; returns its end.
    fn ff_step(
        &mut self,
        r: u32,
        now: Ns,
        need: u32,
        shape: &mut BatchShape,
        observer: &mut dyn Observer,
    ) -> Result<Ns> {
        let ok = self.kv.try_alloc(need);
        debug_assert!(ok, "free blocks were checked");
        let n = self.batch.len() as u64;
        shape.decode_context_tokens += n;
        let d = self.executor.run_iteration(shape)?;
        let e = now
            .checked_add(d)
            .ok_or_else(|| SimError::Limit("simulated time overflowed u64 nanoseconds".into()))?;
        self.count_iteration(d, n);
        observer.on_iteration(r, now, e, shape);
        Ok(e)
    }

    /// Bring the batch's records up to date after `repeats` repeats and tell the policy.
    /// `times`: the repeated service, the last repeat's start and the first token's time;
    /// `gaps`: the largest shared token gaps.
    fn ff_commit(
        &mut self,
        repeats: u64,
        times: (Ns, Ns, Ns),
        gaps: &[Ns],
        steady: Steady,
        limits: Limits,
        block_tokens: u32,
    ) {
        let (service_ns, cur_start, _) = times;
        self.commit_records(repeats, times, gaps, block_tokens);
        self.iter_start_ns = cur_start;
        let view = view!(self, cur_start, limits);
        if let Some(ff) = self.policy.fast_forward() {
            if steady.stepwise {
                ff.steady_order(&mut self.batch);
            } else {
                ff.on_steady_iterations(&mut self.batch, repeats, service_ns, &view);
            }
        }
    }
}

impl Replica {
    /// The batch's records as stepping leaves them at the `repeats`-th boundary of a segment
    /// (each member decodes next, its next block allocated). `times`: the service through that
    /// boundary, its time and the first token's time; `gaps`: the largest shared token gaps.
    /// Inlined: its walk is the fast-forward's per-member cost (out of line it costs vllm's
    /// benchmark +2 % instructions).
    #[inline(always)]
    pub(super) fn commit_records(
        &mut self,
        repeats: u64,
        times: (Ns, Ns, Ns),
        gaps: &[Ns],
        block_tokens: u32,
    ) {
        let (service_ns, boundary_ns, first_token_ns) = times;
        let k = repeats as u32;
        // Boundary 1's gaps, mostly equal: each run of equal ones goes to the sketch at once.
        let mut run = GapRun::default();
        for i in 0..self.batch.len() {
            let s = self.batch[i];
            let mut q = self.reqs.get_mut(s);
            if let Some(g) = ff_token_gaps(&mut q, first_token_ns, gaps) {
                run.push(&mut self.itl, g, 1);
            }
            q.attained_ns += service_ns;
            q.last_run_end_ns = boundary_ns;
            q.kv_tokens = q.kv_tokens_after_next() + k - 1;
            // A last prefill chunk in the first run completed its prompt: it decodes now.
            q.mid_prefill = false;
            q.kv_loc = KvLoc::Gpu;
            q.generated_tokens += k;
            if q.first_token_ns.is_none() {
                q.first_token_ns = Some(first_token_ns);
            }
            q.blocks += extra_blocks_for(q.kv_tokens as u64 + 1, q.blocks, block_tokens);
        }
        run.flush(&mut self.itl);
    }
}

impl super::RunStats {
    /// A repeated iteration ended at `end`: an iteration-end event when stepping.
    #[inline]
    fn count_repeat(&mut self, end: Ns) {
        self.events += 1;
        self.fast_forwarded_iterations += 1;
        self.makespan_ns = self.makespan_ns.max(end);
    }
}
