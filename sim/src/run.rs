//! One run of a resolved scenario: build the trace source, the replicas and the predictor, drive
//! the engine, and summarise. Reads input files; writes nothing.

use std::path::Path;
use std::sync::Arc;

use crate::cost::{BatchShape, CostModel};
use crate::engine::{
    Clock, Completion, EngineConfig, KvSample, Observer, ReplicaParts, RunStats, SteppingClock,
    VirtualClock, simulate_clocked,
};
use crate::error::{Result, SimError};
use crate::exec::{Executor, SimExecutor};
use crate::metrics::{Collector, Summary, summarize, summarize_streamed};
use crate::policy::{PolicyEntry, PolicyEnv, lookup};
use crate::profile::ExtrapolationCounter;
use crate::scenario::{Resolved, SyntheticLengths, TraceSource};
use crate::trace::{
    ArrivalProcess, Arrivals, LengthPair, Lengths, Synthetic, TraceCsv, read_lengths, scan_trace,
};
use crate::vocab::TraceRow;
use crate::vocab::time::Ns;
use crate::vocab::time::ns_to_s;

pub struct RunOutput {
    /// Completed requests, sorted by id; empty when the run kept no rows (see [`Rows`]).
    pub completions: Vec<Completion>,
    pub stats: RunStats,
    pub summary: Summary,
    /// `kv_timeline.csv` rows in time then replica order (`None` when `[output]
    /// kv_timeline_interval_s = 0`), at most [`KV_TIMELINE_MAX_ROWS`].
    pub kv_timeline: Option<Vec<KvSample>>,
    /// The first sample instant left out of `kv_timeline` because it reached
    /// [`KV_TIMELINE_MAX_ROWS`] (`None`: nothing was left out).
    pub kv_timeline_cut_at_ns: Option<Ns>,
}

/// Most `kv_timeline.csv` rows (sample instants × replicas) a run keeps in memory (160 MB);
/// later samples are left out, and `run` says so on stderr.
pub const KV_TIMELINE_MAX_ROWS: usize = 5_000_000;

/// Number of requests the run will see, when known up front (for progress bars).
pub fn expected_requests(r: &Resolved) -> Option<u64> {
    match &r.trace {
        TraceSource::Synthetic { num_requests, .. } => Some(*num_requests),
        TraceSource::File { limit, .. } => *limit,
    }
}

/// [`expected_requests`], counting the rows of a trace file (one pass over the file; at most the
/// row limit, so a limit above the file's rows is not taken for the total; `None` when it cannot
/// be read: the run itself reports why).
pub fn count_requests(r: &Resolved) -> Option<u64> {
    match &r.trace {
        TraceSource::File { path, limit, .. } => {
            let mut n = 0;
            for row in crate::trace::csv_reader::TraceCsv::open(path, None, *limit).ok()? {
                row.ok()?;
                n += 1;
            }
            Some(n)
        }
        _ => expected_requests(r),
    }
}

/// Whether a run keeps every completed request's row ([`RunOutput::completions`], needed for
/// `requests.csv` and exact percentiles) or only streaming statistics
/// ([`crate::metrics::streaming`]: percentiles from a sketch, memory independent of the number
/// of requests but for the stability rule's 24 bytes per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    Keep,
    Stream,
}

impl Rows {
    /// [`Rows::Keep`] when `keep`, else [`Rows::Stream`].
    pub fn keep_if(keep: bool) -> Rows {
        if keep { Rows::Keep } else { Rows::Stream }
    }
}

/// Hears how far a run has got: the number of completed requests and the simulated time of the
/// latest completion, once every `every` completions. It lives in the run driver (the engine
/// knows nothing of it) and costs one counter comparison per completion between reports; a run
/// without one pays nothing. The CLI draws its progress bar from it.
pub struct Progress {
    every: u64,
    done: u64,
    next: u64,
    report: Box<dyn FnMut(u64, Ns)>,
}

impl Progress {
    /// Call `report(completed, finish_ns)` at the `every`-th completion and each `every` after it
    /// (`every` of 0 counts as 1: every completion).
    pub fn every(every: u64, report: impl FnMut(u64, Ns) + 'static) -> Progress {
        let every = every.max(1);
        Progress {
            every,
            done: 0,
            next: every,
            report: Box::new(report),
        }
    }

    fn on_completion(&mut self, finish_ns: Ns) {
        self.done += 1;
        if self.done >= self.next {
            self.next = self.done.saturating_add(self.every);
            (self.report)(self.done, finish_ns);
        }
    }
}

/// Run the simulation, reporting to `progress` (if any) as requests complete.
pub fn run(r: &Resolved, progress: Option<Progress>) -> Result<RunOutput> {
    run_with(r, progress, true)
}

/// [`run`], choosing whether runs of identical decode iterations are fast-forwarded (`false`
/// steps every iteration as its own event: the reference path; outputs are identical).
pub fn run_with(r: &Resolved, progress: Option<Progress>, fast_forward: bool) -> Result<RunOutput> {
    run_rows(r, progress, fast_forward, Rows::Keep)
}

/// [`run_with`], keeping the per-request rows or not.
pub fn run_rows(
    r: &Resolved,
    progress: Option<Progress>,
    fast_forward: bool,
    rows: Rows,
) -> Result<RunOutput> {
    let (mut virtual_clock, mut stepping_clock) = (VirtualClock, SteppingClock);
    let clock: &mut dyn Clock = if fast_forward {
        &mut virtual_clock
    } else {
        &mut stepping_clock
    };
    let executor = &mut sim_executors();
    drive_full(r, progress, executor, clock, None, None, rows)
}

/// The simulator's executors, one per replica: its group's cost model and pipeline. The replicas
/// of one group share one cost model (a pure function of the batch), so its memo tables exist
/// once per group, not once per replica: 65,536 replicas would otherwise hold gigabytes of them.
fn sim_executors() -> impl FnMut(&Resolved, Arc<ExtrapolationCounter>) -> Result<Box<dyn Executor>>
{
    // The group last built for (replicas are built group by group) and its model.
    let mut last: Option<(*const Resolved, Arc<dyn CostModel>)> = None;
    move |r: &Resolved, x: Arc<ExtrapolationCounter>| {
        let cost = match &last {
            Some((g, cost)) if std::ptr::eq(*g, r) => cost.clone(),
            _ => {
                let cost: Arc<dyn CostModel> = r.cost_model_counted(Some(x))?.into();
                last = Some((r as *const Resolved, cost.clone()));
                cost
            }
        };
        let executor: Box<dyn Executor> =
            Box::new(SimExecutor::new(Box::new(cost)).with_pipeline(r.pipeline));
        Ok(executor)
    }
}

/// [`run`] that Ctrl-C can stop (with a [`crate::interrupt::CtrlC`] guard installed): the run
/// ends at its first event after the signal and returns what finished, and whether it was
/// stopped (then the output covers only the completed requests).
pub fn run_interruptible(
    r: &Resolved,
    progress: Option<Progress>,
    fast_forward: bool,
) -> Result<(RunOutput, bool)> {
    run_interruptible_rows(r, progress, fast_forward, Rows::Keep)
}

/// [`run_interruptible`], keeping the per-request rows or not.
pub fn run_interruptible_rows(
    r: &Resolved,
    progress: Option<Progress>,
    fast_forward: bool,
    rows: Rows,
) -> Result<(RunOutput, bool)> {
    let mut clock = crate::interrupt::InterruptibleClock::new(fast_forward);
    let out = drive_full(
        r,
        progress,
        &mut sim_executors(),
        &mut clock,
        None,
        None,
        rows,
    )?;
    Ok((out, clock.stopped()))
}

/// Sees every completion of a run and may end it before its next event: `capacity` stops a probe
/// run once its verdict is certain ([`crate::capacity::EarlyStop`]). Lives in the run driver, not
/// the engine: the engine only sees a [`Clock`] that says stop.
pub trait Watch {
    fn on_completion(&mut self, c: &Completion);
    /// Whether to end the run now (asked before every event).
    fn stop(&self) -> bool;
}

/// [`run_interruptible`] (fast-forwarding) that `watch` can also end: returns what finished,
/// whether Ctrl-C stopped it and whether `watch` did.
pub fn run_watched(r: &Resolved, watch: &mut dyn Watch) -> Result<(RunOutput, bool, bool)> {
    let cell = std::cell::RefCell::new(watch);
    let mut clock = WatchClock {
        inner: crate::interrupt::InterruptibleClock::new(true),
        watch: &cell,
        stopped: false,
    };
    let mut on_completion = |c: &Completion| cell.borrow_mut().on_completion(c);
    let out = drive_full(
        r,
        None,
        &mut sim_executors(),
        &mut clock,
        None,
        Some(&mut on_completion),
        Rows::Keep,
    )?;
    Ok((out, clock.inner.stopped(), clock.stopped))
}

/// The interruptible virtual clock, also ended by a [`Watch`].
struct WatchClock<'a, 'w> {
    inner: crate::interrupt::InterruptibleClock,
    watch: &'a std::cell::RefCell<&'w mut dyn Watch>,
    stopped: bool,
}

impl Clock for WatchClock<'_, '_> {
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        if self.watch.borrow().stop() {
            self.stopped = true;
            return None;
        }
        self.inner.advance(t)
    }
    fn fast_forward(&self) -> bool {
        true
    }
}

/// Builds one replica's executor (given the run's profile-extrapolation counter).
pub type ExecutorFactory<'a> =
    dyn FnMut(&Resolved, Arc<ExtrapolationCounter>) -> Result<Box<dyn Executor>> + 'a;

/// Receives every iteration: `(replica, start_ns, end_ns, shape)`.
pub type IterationTap<'a> = dyn FnMut(u32, Ns, Ns, &BatchShape) + 'a;

/// Receives every completion.
pub type CompletionTap<'a> = dyn FnMut(&Completion) + 'a;

/// Collects completions and forwards iterations (and completions) to optional taps.
struct Tap<'a, 'b> {
    collector: Collector,
    progress: Option<Progress>,
    on_iteration: Option<&'a mut IterationTap<'b>>,
    on_completion: Option<&'a mut CompletionTap<'b>>,
    kv_timeline: Vec<KvSample>,
    /// Cap on `kv_timeline` ([`KV_TIMELINE_MAX_ROWS`]) and the first instant left out past it.
    kv_max_rows: usize,
    kv_cut_at_ns: Option<Ns>,
}

impl<'a, 'b> Tap<'a, 'b> {
    fn new(
        progress: Option<Progress>,
        on_iteration: Option<&'a mut IterationTap<'b>>,
        on_completion: Option<&'a mut CompletionTap<'b>>,
        rows: Rows,
        slo: Option<(f64, f64)>,
    ) -> Self {
        Tap {
            collector: Collector {
                completions: Vec::new(),
                streamed: (rows == Rows::Stream)
                    .then(|| crate::metrics::streaming::Streamed::new(slo)),
            },
            progress,
            on_iteration,
            on_completion,
            kv_timeline: Vec::new(),
            kv_max_rows: KV_TIMELINE_MAX_ROWS,
            kv_cut_at_ns: None,
        }
    }
}

impl Observer for Tap<'_, '_> {
    fn on_completion(&mut self, c: &Completion) {
        self.collector.on_completion(c);
        if let Some(p) = &mut self.progress {
            p.on_completion(c.finish_ns);
        }
        if let Some(f) = &mut self.on_completion {
            f(c);
        }
    }
    fn on_iteration(&mut self, replica: u32, start_ns: Ns, end_ns: Ns, shape: &BatchShape) {
        if let Some(f) = &mut self.on_iteration {
            f(replica, start_ns, end_ns, shape);
        }
    }
    fn on_kv_sample(&mut self, sample: &KvSample) {
        if self.kv_cut_at_ns.is_some() {
            return;
        }
        if self.kv_timeline.len() < self.kv_max_rows {
            self.kv_timeline.push(*sample);
        } else {
            // Whole instants only: the rows of this instant's first replicas go too.
            let t = sample.time_ns;
            while self.kv_timeline.last().is_some_and(|r| r.time_ns == t) {
                self.kv_timeline.pop();
            }
            self.kv_cut_at_ns = Some(t);
        }
    }
    fn wants_kv_samples(&self) -> bool {
        self.kv_cut_at_ns.is_none()
    }
}

/// [`run`] with the executors, the clock and an iteration tap supplied by the caller: the live
/// driver uses it to run the very same policies, KV accounting and metrics in wall-clock time.
pub fn drive(
    r: &Resolved,
    progress: Option<Progress>,
    make_executor: &mut ExecutorFactory<'_>,
    clock: &mut dyn Clock,
    on_iteration: Option<&mut IterationTap<'_>>,
) -> Result<RunOutput> {
    drive_full(
        r,
        progress,
        make_executor,
        clock,
        on_iteration,
        None,
        Rows::Keep,
    )
}

/// [`drive`] with a completion tap, keeping the per-request rows or not.
fn drive_full<'a, 'b>(
    r: &Resolved,
    progress: Option<Progress>,
    make_executor: &mut ExecutorFactory<'_>,
    clock: &mut dyn Clock,
    on_iteration: Option<&'a mut IterationTap<'b>>,
    on_completion: Option<&'a mut CompletionTap<'b>>,
    rows: Rows,
) -> Result<RunOutput> {
    let (s, entry) = (&r.scenario, lookup(&r.scenario.scheduler.policy)?);
    // Off-grid queries of profile-based models (summary.json `profile_extrapolations`).
    let extrapolations = Arc::new(ExtrapolationCounter::default());
    let parts = build_replicas(r, entry, make_executor, &extrapolations)?;
    let cfg = EngineConfig {
        block_tokens: s.memory.block_tokens,
        limits: r.limits,
        guards: r.guards,
        kv_sample_interval_ns: r.kv_timeline_interval_ns,
    };
    let (mut predictor, _) = crate::predict::build(
        &r.predictor,
        s.predictors.get(&r.predictor),
        s.seed,
        &mut || reference_outputs(r),
    )?;
    let slo = s.slo.as_ref().map(|o| (o.ttft_s, o.tpot_s));
    let mut tap = Tap::new(progress, on_iteration, on_completion, rows, slo);
    check_trace_file(r)?;
    let mut lengths = Vec::new();
    let mut trace: Box<dyn Iterator<Item = Result<TraceRow>> + '_> = match &r.trace {
        TraceSource::File {
            path,
            rate_per_s,
            limit,
        } => {
            let rescale = file_rescale(path, *rate_per_s)?;
            Box::new(TraceCsv::open(path, rescale, *limit)?)
        }
        TraceSource::Synthetic { .. } => synthetic(r, &mut lengths)?,
    };
    let router_entry = crate::route::lookup(&s.router)?;
    let (router, _) = (router_entry.build)(s.routers.get(&s.router), &r.router_env()?)?;
    let stats = simulate_clocked(
        &cfg,
        trace.as_mut(),
        parts,
        router,
        predictor.as_mut(),
        &mut tap,
        clock,
    )
    .map_err(|e| locate_request_error(e, r))?;
    let mut completions = std::mem::take(&mut tap.collector.completions);
    completions.sort_unstable_by_key(|c| c.id); // ids are unique
    let mut summary = summary_of(r, tap.collector.streamed.as_mut(), &completions, &stats);
    if r.uses_profile() {
        summary.profile_extrapolations = Some(extrapolations.report());
    }
    summary.warnings = r.warnings.clone();
    Ok(RunOutput {
        completions,
        stats,
        summary,
        kv_timeline: (r.kv_timeline_interval_ns > 0).then_some(tap.kv_timeline),
        kv_timeline_cut_at_ns: tap.kv_cut_at_ns,
    })
}

/// The run's summary, from its rows or its streaming statistics, with goodput under `[slo]`.
fn summary_of(
    r: &Resolved,
    streamed: Option<&mut crate::metrics::streaming::Streamed>,
    completions: &[Completion],
    stats: &RunStats,
) -> Summary {
    let s = &r.scenario;
    if let Some(st) = streamed {
        return summarize_streamed(&s.name, &s.scheduler.policy, s.seed, st, stats);
    }
    let mut summary = summarize(&s.name, &s.scheduler.policy, s.seed, completions, stats);
    if let Some(slo) = &s.slo {
        summary.goodput = Some(crate::metrics::goodput(completions, slo.ttft_s, slo.tpot_s));
    }
    summary
}

/// Every replica's policy, executor and memory, group by group (a homogeneous cluster is one
/// group: the scenario itself).
fn build_replicas(
    r: &Resolved,
    entry: &PolicyEntry,
    make_executor: &mut ExecutorFactory<'_>,
    extrapolations: &Arc<ExtrapolationCounter>,
) -> Result<Vec<ReplicaParts>> {
    let s = &r.scenario;
    let mut parts = Vec::with_capacity(s.replicas as usize);
    // A homogeneous cluster is one group: the scenario itself.
    let groups: Vec<&Resolved> = if r.groups.is_empty() {
        vec![r]
    } else {
        r.groups.iter().collect()
    };
    for g in groups {
        // The policies estimate job times with their own group's model.
        let env = PolicyEnv {
            limits: r.limits,
            cost: g.cost_model()?.into(),
        };
        for _ in 0..g.scenario.replicas {
            let (policy, _) = (entry.build)(s.policies.get(&s.scheduler.policy), &env)?;
            let executor = make_executor(g, extrapolations.clone())?;
            // An executor that copies inside its iterations measures the copies itself.
            let (swap, swap_timing): (Box<dyn crate::swap::SwapModel>, _) =
                if executor.copies_in_iteration() {
                    let timing = crate::swap::timing::SwapTiming {
                        reactive: crate::swap::timing::Reactive::Serial,
                        ..g.swap_timing
                    };
                    (Box::new(crate::swap::InIterationSwap), timing)
                } else {
                    (g.swap_model(Some(extrapolations.clone())), g.swap_timing)
                };
            parts.push(ReplicaParts {
                policy,
                executor,
                kv_capacity_blocks: g.kv_capacity_blocks,
                host_kv_blocks: g.host_kv_blocks,
                kv_block_bytes: g.kv_block_bytes,
                swap,
                swap_timing,
                offload: g.offload,
            });
        }
    }
    Ok(parts)
}

/// How a trace file's arrivals are rescaled to `rate_per_s`: its first arrival and the factor
/// (`None`: kept as they are).
fn file_rescale(path: &Path, rate_per_s: Option<f64>) -> Result<Option<(f64, f64)>> {
    Ok(match rate_per_s {
        None => None,
        Some(target) => {
            let sum = scan_trace(path)?;
            let file_rate = sum.mean_rate_per_s().ok_or_else(|| {
                    crate::error::SimError::Io {
                        path: path.to_path_buf(),
                        msg: "cannot rescale to a rate: the trace needs ≥ 2 rows spanning a positive time".into(),
                    }
                })?;
            Some((sum.first_arrival_s, file_rate / target))
        }
    })
}

/// Check a scenario's trace before simulating it: it must hold at least one request (a
/// `num_requests` of 0 keeps none), and a trace file's first arrival must come within
/// `[limits] max_sim_s` (absolute, Unix-epoch times would otherwise make the run idle through
/// ~1.7·10⁹ simulated seconds before failing).
pub fn check_trace_file(r: &Resolved) -> Result<()> {
    let no_requests =
        "no requests to simulate: `num_requests` ([trace] num_requests or --num-requests) is 0";
    let path = match &r.trace {
        TraceSource::Synthetic { num_requests, .. } if *num_requests == 0 => {
            return Err(SimError::config(no_requests));
        }
        TraceSource::Synthetic {
            arrival,
            rate_per_s: Some(rate),
            cv,
            num_requests,
            ..
        } => return check_arrival_span(*arrival, *rate, *cv, *num_requests, r.guards.max_sim_ns),
        TraceSource::Synthetic { .. } => return Ok(()),
        TraceSource::File {
            limit: Some(0),
            path,
            ..
        } => {
            return Err(SimError::Io {
                path: path.clone(),
                msg: no_requests.into(),
            });
        }
        TraceSource::File { path, .. } => path,
    };
    let mut rows = TraceCsv::open(path, None, Some(1))?;
    let Some(first) = rows.next().transpose()? else {
        return Err(SimError::Io {
            path: path.clone(),
            msg: "the trace has no requests (a header but no rows): nothing to simulate".into(),
        });
    };
    if first.arrival_ns > r.guards.max_sim_ns {
        return Err(SimError::Input {
            path: path.clone(),
            line: rows.line(),
            field: rows.arrival_column().into(),
            msg: format!(
                "the first arrival is at {:.0} s, past [limits] max_sim_s = {:.0} s: are these absolute (Unix-epoch) times? Shift the arrivals so that the trace starts near 0 (`servesim trace import vidur` does so for Vidur traces)",
                ns_to_s(first.arrival_ns),
                ns_to_s(r.guards.max_sim_ns)
            ),
        });
    }
    Ok(())
}

/// A synthetic trace whose arrivals certainly outlast `[limits] max_sim_s` would run until the
/// limit stops it (2⁶⁴ − 1 requests at 1 req/s: a minute and 400 MB before that error): refused
/// up front. "Certainly": the expected span n/λ less 10 standard deviations (√n·cv/λ; cv 1 for
/// Poisson, 0 for constant gaps) is still past the limit. Replayed arrivals are not judged here.
fn check_arrival_span(
    arrival: ArrivalProcess,
    rate_per_s: f64,
    cv: f64,
    n: u64,
    max_sim_ns: Ns,
) -> Result<()> {
    let cv = match arrival {
        ArrivalProcess::Poisson => 1.0,
        ArrivalProcess::Gamma => cv,
        ArrivalProcess::Constant => 0.0,
        ArrivalProcess::Replay => return Ok(()),
    };
    let n_f = n as f64;
    let span_s = n_f / rate_per_s;
    let max_s = ns_to_s(max_sim_ns);
    if span_s - 10.0 * n_f.sqrt() * cv / rate_per_s <= max_s {
        return Ok(());
    }
    Err(SimError::config(format!(
        "{n} requests arriving at {} req/s span about {} s of simulated time, past [limits] max_sim_s = {} s: the run would stop there; lower num_requests ([trace] num_requests or --num-requests) or raise [limits] max_sim_s",
        crate::error::num(rate_per_s),
        crate::error::num(span_s),
        crate::error::num(max_s)
    )))
}

/// The synthetic trace of a resolved scenario. `lengths` holds a lengths file's pairs (it must
/// outlive the iterator).
fn synthetic<'a>(
    r: &'a Resolved,
    lengths: &'a mut Vec<LengthPair>,
) -> Result<Box<dyn Iterator<Item = Result<TraceRow>> + 'a>> {
    let TraceSource::Synthetic {
        arrival,
        rate_per_s,
        cv,
        replay_file,
        lengths: spec,
        num_requests,
        drop_over_context,
    } = &r.trace
    else {
        unreachable!("synthetic() is called for synthetic traces only")
    };
    let arrivals = Arrivals::build(*arrival, *rate_per_s, *cv, replay_file.as_deref())?;
    let max_context = r.limits.max_context_tokens;
    Ok(match spec {
        SyntheticLengths::File(path) => {
            *lengths = fit_lengths(read_lengths(path)?, path, max_context, *drop_over_context)?;
            Box::new(Synthetic::new(
                &arrivals,
                Lengths::Sample(lengths),
                *num_requests,
                r.scenario.seed,
            )?)
        }
        SyntheticLengths::Parametric { input, output } => {
            let s = Synthetic::new(
                &arrivals,
                Lengths::Parametric { input, output },
                *num_requests,
                r.scenario.seed,
            )?;
            Box::new(if *drop_over_context {
                s.with_max_total(max_context)
            } else {
                s
            })
        }
    })
}

/// A rejected request of a trace file is reported at its file and line (request ids are 0-based
/// data rows; every supported trace has one record per line after the header); one of a
/// synthetic trace at the scenario's `[trace]`, naming where its lengths came from.
fn locate_request_error(e: crate::error::SimError, r: &Resolved) -> crate::error::SimError {
    let trace = &r.trace;
    if let (crate::error::SimError::Request { id, msg }, TraceSource::Synthetic { lengths, .. }) =
        (&e, trace)
    {
        let from = match lengths {
            SyntheticLengths::File(p) => p.display().to_string(),
            SyntheticLengths::Parametric { .. } => "input_lengths and output_lengths".into(),
        };
        let text = std::fs::read_to_string(&r.scenario_path).unwrap_or_default();
        let at = crate::scenario::line_of_key(&text, &["trace"])
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        return crate::error::SimError::Scenario {
            path: r.scenario_path.clone(),
            msg: format!("{at}[trace]: synthetic request {id} (lengths drawn from {from}): {msg}"),
        };
    }
    match (e, trace) {
        // A setting found wrong during the run: the scenario's.
        (crate::error::SimError::Config(msg), _) => crate::error::SimError::Scenario {
            path: r.scenario_path.clone(),
            msg,
        },
        (crate::error::SimError::Request { id, msg }, TraceSource::File { path, .. }) => {
            crate::error::SimError::Input {
                path: path.clone(),
                line: id + 2,
                field: "input_tokens,output_tokens".into(),
                msg: format!("request {id}: {msg}"),
            }
        }
        (e, _) => e,
    }
}

/// The trace's output lengths (for predictors that model a classifier trained on them): a
/// lengths file's outputs, a trace file's, or, for parametric lengths, the run's own.
fn reference_outputs(r: &Resolved) -> Result<Vec<u32>> {
    Ok(match &r.trace {
        TraceSource::Synthetic {
            lengths: SyntheticLengths::File(path),
            ..
        } => read_lengths(path)?
            .iter()
            .map(|l| l.output_tokens)
            .collect(),
        TraceSource::Synthetic { .. } => {
            let mut l = Vec::new();
            synthetic(r, &mut l)?
                .map(|row| row.map(|t| t.output_tokens))
                .collect::<Result<Vec<u32>>>()?
        }
        TraceSource::File { path, limit, .. } => TraceCsv::open(path, None, *limit)?
            .map(|row| row.map(|t| t.output_tokens))
            .collect::<Result<Vec<u32>>>()?,
    })
}

/// Check lengths against the model context: drop the rows that exceed it, or fail naming the
/// first one (line numbers assume one record per line, as every supported lengths file has).
fn fit_lengths(
    lengths: Vec<LengthPair>,
    path: &std::path::Path,
    max_context_tokens: u32,
    drop_over_context: bool,
) -> Result<Vec<LengthPair>> {
    let fits = |l: &LengthPair| {
        l.input_tokens as u64 + l.output_tokens as u64 <= max_context_tokens as u64
    };
    if drop_over_context {
        let kept: Vec<LengthPair> = lengths.into_iter().filter(fits).collect();
        if kept.is_empty() {
            return Err(crate::error::SimError::Io {
                path: path.to_path_buf(),
                msg: format!(
                    "no row fits the context limit of {max_context_tokens} tokens (`[scheduler] max_context_tokens`, by default the model's own)"
                ),
            });
        }
        return Ok(kept);
    }
    if let Some(i) = lengths.iter().position(|l| !fits(l)) {
        return Err(crate::error::SimError::Input {
            path: path.to_path_buf(),
            line: i as u64 + 2,
            field: "input_tokens".into(),
            msg: format!(
                "input + output = {} tokens exceeds the context limit of {max_context_tokens} tokens (`[scheduler] max_context_tokens`, by default the model's own; set `drop_over_context = true` in [trace] to skip such rows)",
                lengths[i].input_tokens as u64 + lengths[i].output_tokens as u64
            ),
        });
    }
    Ok(lengths)
}

/// The fully resolved configuration recorded in `config.json`.
pub fn config_json(r: &Resolved) -> serde_json::Value {
    let mut v = serde_json::json!({
        "scenario": r.scenario,
        "scenario_file": r.scenario_path,
        "resolved": {
            "model": r.model,
            "gpu": r.gpu,
            "kv_capacity_blocks": r.kv_capacity_blocks,
            "host_kv_blocks": r.host_kv_blocks,
            "kv_block_bytes": r.kv_block_bytes,
            "swap": r.swap,
            "kv_bytes_per_token": r.model.kv_bytes_per_token(),
            "weight_bytes": r.model.weight_bytes(),
            "limits": {
                "max_batch_size": r.limits.max_batch_size,
                "max_batch_tokens": r.limits.max_batch_tokens,
                "max_context_tokens": r.limits.max_context_tokens,
            },
            "policy_params": r.policy_params,
            "router": r.scenario.router,
            "router_params": r.router_params,
            "predictor": r.predictor,
            "analytic_params": r.analytic_params,
        },
        "servesim_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some((tables, dir)) = &r.cost_profile {
        v["resolved"]["cost_profile"] = serde_json::json!({
            "path": dir,
            "mode": tables.mode(),
            "iteration_overhead_s": tables.iteration_overhead_s(),
        });
    }
    if let Some(p) = &r.swap_profile {
        v["resolved"]["swap"] = serde_json::json!(p);
    }
    // `[swap] reactive` as resolved (the scenario's or the policy's default) and the layers one
    // pipeline stage splits a layerwise wait over.
    v["resolved"]["swap"]["reactive"] = serde_json::json!(r.swap_timing.reactive);
    v["resolved"]["swap"]["reactive_layers"] = serde_json::json!(r.swap_timing.layers);
    if r.pipeline.stages > 1 {
        v["resolved"]["pipeline"] = serde_json::json!(r.pipeline);
    }
    if !r.groups.is_empty() {
        v["resolved"]["replica_groups"] = r
            .groups
            .iter()
            .map(|g| {
                let mut gv = config_json(g)["resolved"].clone();
                gv["replicas"] = serde_json::json!(g.scenario.replicas);
                gv["tp"] = serde_json::json!(g.scenario.tp);
                gv["pp"] = serde_json::json!(g.scenario.pp);
                gv
            })
            .collect();
    }
    if r.offload.is_quantized() {
        v["resolved"]["kv_offload"] = serde_json::json!(r.offload);
    }
    v
}

#[cfg(test)]
mod tests;
