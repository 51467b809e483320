//! Live mode: the policies, routers, KV accounting and metrics of `servesim run`, driven in
//! wall-clock time. The engine's event loop is reused as is; only its [`Clock`] changes: a
//! [`WallClock`] releases each event (arrivals included) when the wall clock reaches it, and each
//! iteration's batch is executed by an [`Executor`] whose call takes real time and returns the
//! measured duration. The engine itself stays free of I/O and wall clocks.
//!
//! Time scale: engine time `t` maps to the wall instant `start + (t − t0) · scale`, where `t0` is
//! the first event's time. Executors sleep/measure in wall time and report `wall / scale`, so
//! with `scale < 1` a live run of a mock executor replays the simulator's timeline faster than
//! real time and still reports times in the scenario's units. A real GPU executor runs at 1.
//!
//! With `--device cpu|cuda` a [`BackendExecutor`] really computes each batch on a
//! [`ComputeBackend`] (prefills over their prompts, decodes over their paged contexts, swaps as
//! block copies), from the engine's request-level view of the iteration, at time scale 1.
//!
//! Executions are synchronous: one replica's iteration blocks the driver while it runs. With one
//! replica this is exact; with several, their iterations are serialised (a GPU executor for
//! multi-replica scenarios needs one worker per replica).

pub mod backend;
pub mod compare;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fidelity;

pub use backend::{
    BackendError, BackendExecutor, ComputeBackend, ExecutorKind, IterationNote, NoteSlot,
    Predictor, SeqStep, StepOutput,
};

/// Ctrl-C handling (shared with `run` and `sweep`).
pub use crate::interrupt::CtrlC;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cost::{BatchShape, CostModel};
use crate::engine::Clock;
use crate::error::{Result, SimError};
use crate::exec::Executor;
use crate::output::{StagedDir, pretty_json, replicas_csv, requests_csv};
use crate::run::{Progress, RunOutput};
use crate::scenario::Resolved;
use crate::vocab::time::{Ns, ns_to_s};

/// The message of `servesim live` without `--mock` in this build.
pub const NO_GPU_EXECUTOR: &str = "live GPU executor not built (rebuild with `cargo build --release --features cuda`) / no CUDA driver found; use --mock to exercise the driver (`servesim live SCENARIO --mock --time-scale 0.1`)";

/// Smallest and largest `--time-scale`: within them every scaled wait of a run that fits the
/// simulator's 64-bit nanosecond clock is a representable wall-clock duration.
pub const MIN_TIME_SCALE: f64 = 1e-6;
pub const MAX_TIME_SCALE: f64 = 1e6;

/// `--time-scale` must be finite and within [[`MIN_TIME_SCALE`], [`MAX_TIME_SCALE`]].
pub fn check_time_scale(x: f64) -> Result<()> {
    if x.is_finite() && (MIN_TIME_SCALE..=MAX_TIME_SCALE).contains(&x) {
        Ok(())
    } else {
        Err(SimError::config(format!(
            "--time-scale must be a finite number from {MIN_TIME_SCALE:e} to {MAX_TIME_SCALE:e} (wall seconds per scenario second), got {}",
            crate::error::num(x)
        )))
    }
}

/// The time scale is valid ([`check_time_scale`]), and 1 unless the executor is the mock.
pub fn check_options(executor: ExecutorKind, time_scale: f64) -> Result<()> {
    check_time_scale(time_scale)?;
    if executor != ExecutorKind::Mock && time_scale != 1.0 {
        return Err(SimError::config(format!(
            "--time-scale applies to --device mock only (a compute backend runs in real time), got {time_scale:e} with --device {}",
            executor.name()
        )));
    }
    Ok(())
}

/// The wall instant `seconds × scale` after `start`; `None` when it is not representable (too
/// far in the future, or not a finite duration ≥ 0).
fn scaled_deadline(start: Instant, seconds: f64, scale: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(seconds * scale)
        .ok()
        .and_then(|d| start.checked_add(d))
}

/// Sleep until `deadline` (`None`: a deadline beyond any representable instant, reached only by
/// `stop`): coarse sleeps, then a short spin for the last 200 µs (sleep overshoot would otherwise
/// add tens of microseconds to every wait). Returns early (`false`) when `stop` is raised.
fn wait_until(deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> bool {
    const SPIN: Duration = Duration::from_micros(200);
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        let Some(deadline) = deadline else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep((left - SPIN).min(Duration::from_millis(5)));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn wall_to_ns(d: Duration, scale: f64) -> Ns {
    (d.as_secs_f64() / scale * 1e9).round() as Ns
}

/// A wall clock for the engine: waits until each event's (scaled) time, and stamps it with the
/// real time when that has already passed (the driver or an executor ran late).
pub struct WallClock {
    scale: f64,
    stop: Arc<AtomicBool>,
    origin: Option<(Instant, Ns)>,
    stopped: bool,
    /// Scenario ns during which some event was overdue (stamped after its time: the driver ran
    /// behind).
    late_ns: u64,
    /// The last time stamped.
    last_ns: Ns,
}

impl WallClock {
    pub fn new(scale: f64, stop: Arc<AtomicBool>) -> Self {
        WallClock {
            scale,
            stop,
            origin: None,
            stopped: false,
            late_ns: 0,
            last_ns: 0,
        }
    }
    /// Whether the stop flag ended the run.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// A warning when events were overdue for more than 10% of the run's span in all: the
    /// driver could not keep up with the (scaled) scenario times, so every later time moved too.
    /// With several `replicas` their iterations run one after another (see the module docs), which
    /// a larger time scale does not cure: the advice says so instead.
    pub fn warning(&self, mock: bool, replicas: u32) -> Option<String> {
        let t0 = self.origin.map(|(_, t0)| t0)?;
        let span_s = ns_to_s(self.last_ns.saturating_sub(t0));
        let late_s = ns_to_s(self.late_ns);
        if late_s <= span_s * (LAG_WARN_RATIO - 1.0) {
            return None;
        }
        Some(format!(
            "events ran {} s behind their scenario times in all ({}% of the {} s run): the driver could not keep up at --time-scale {}, so the run's times are stretched{}",
            crate::error::num(late_s),
            crate::error::num((late_s / span_s.max(1e-12) * 100.0).min(1e6)),
            crate::error::num(span_s),
            crate::error::num(self.scale),
            if replicas > 1 {
                format!(
                    "; live mode runs the iterations of the {replicas} replicas one after another, so replicas busy at the same time fall behind at any --time-scale: compare live and simulated timings with one replica"
                )
            } else if mock {
                " (use a larger --time-scale)".to_string()
            } else {
                String::new()
            }
        ))
    }
}

impl Clock for WallClock {
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        let stop = || self.stop.load(Ordering::Relaxed) || crate::interrupt::interrupted();
        if stop() {
            self.stopped = true;
            return None;
        }
        let (start, t0) = *self.origin.get_or_insert_with(|| (Instant::now(), t));
        let deadline = scaled_deadline(start, ns_to_s(t.saturating_sub(t0)), self.scale);
        if !wait_until(deadline, &stop) {
            self.stopped = true;
            return None;
        }
        let real = t0.saturating_add(wall_to_ns(start.elapsed(), self.scale));
        let stamped = t.max(real);
        // Times and stamps only grow: the measure of the union of the [t, stamped] intervals.
        let from = t.max(self.last_ns);
        self.late_ns = self.late_ns.saturating_add(stamped.saturating_sub(from));
        self.last_ns = self.last_ns.max(stamped);
        Some(stamped)
    }
}

/// Executes nothing, in real time: sleeps the cost model's duration of each batch (times the
/// time scale) and returns the measured sleep (divided by the scale). Exercises the live driver
/// on a CPU.
pub struct MockExecutor {
    cost: Box<dyn CostModel>,
    scale: f64,
    note: Option<NoteSlot>,
    lag: Arc<Lag>,
}

impl MockExecutor {
    pub fn new(cost: Box<dyn CostModel>, scale: f64) -> Self {
        MockExecutor {
            cost,
            scale,
            note: None,
            lag: Arc::default(),
        }
    }

    /// Leave each iteration's modelled time in `note` (`iterations.csv` `predicted_s`).
    pub fn with_note(mut self, note: NoteSlot) -> Self {
        self.note = Some(note);
        self
    }

    /// Add this executor's iterations to `lag`.
    pub fn with_lag(mut self, lag: Arc<Lag>) -> Self {
        self.lag = lag;
        self
    }
}

/// The mock executor's iterations, summed: what the cost model asked for and what the wall clock
/// gave (both in scenario ns). A wait shorter than the clock and the driver can honour (a tiny
/// `--time-scale`) comes out longer, and stretches the whole run.
#[derive(Debug, Default)]
pub struct Lag {
    iterations: AtomicU64,
    model_ns: AtomicU64,
    measured_ns: AtomicU64,
}

/// A live run is flagged when its iterations took this much longer than the cost model's times.
const LAG_WARN_RATIO: f64 = 1.10;

impl Lag {
    fn add(&self, model_s: f64, measured_ns: Ns) {
        self.iterations.fetch_add(1, Ordering::Relaxed);
        let model_ns = (model_s * 1e9).round().min(u64::MAX as f64 / 4.0) as u64;
        self.model_ns.fetch_add(model_ns, Ordering::Relaxed);
        self.measured_ns.fetch_add(measured_ns, Ordering::Relaxed);
    }

    /// A warning when the iterations ran more than 10% over the cost model's times.
    pub fn warning(&self, scale: f64) -> Option<String> {
        let n = self.iterations.load(Ordering::Relaxed);
        let model_s = self.model_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let measured_s = self.measured_ns.load(Ordering::Relaxed) as f64 / 1e9;
        if n == 0 || measured_s <= model_s * LAG_WARN_RATIO {
            return None;
        }
        let mean_model_s = model_s / n as f64;
        // Wall time lost per iteration, and the scale at which it is ~1% of an iteration.
        let lost_wall_s = (measured_s - model_s) / n as f64 * scale;
        let suggested = (lost_wall_s * 100.0 / mean_model_s.max(1e-12)).min(MAX_TIME_SCALE);
        Some(format!(
            "iterations took {}× the cost model's times ({} s instead of {} s in all): at --time-scale {} a mean iteration of {} s lasts {} s of wall time, too short for the wall clock to honour; the timings of this run are stretched (use --time-scale {} or more)",
            crate::error::num(measured_s / model_s.max(1e-12)),
            crate::error::num(measured_s),
            crate::error::num(model_s),
            crate::error::num(scale),
            crate::error::num(mean_model_s),
            crate::error::num(mean_model_s * scale),
            crate::error::num(suggested.max(scale))
        ))
    }
}

impl Executor for MockExecutor {
    fn run_iteration(&mut self, shape: &BatchShape) -> Result<Ns> {
        let s = self.cost.iteration_s(shape)?;
        if !(s.is_finite() && s >= 0.0) {
            return Err(SimError::Cost {
                model: self.cost.name().into(),
                msg: format!(
                    "invalid iteration time {} s for a batch of {shape}",
                    crate::error::num(s)
                ),
            });
        }
        let start = Instant::now();
        let Some(deadline) = scaled_deadline(start, s, self.scale) else {
            return Err(SimError::Cost {
                model: self.cost.name().into(),
                msg: format!(
                    "iteration time {s:e} s × time scale {:e} is beyond any wall-clock wait",
                    self.scale
                ),
            });
        };
        // Ctrl-C / SIGTERM cut a long (scaled) iteration short; the run then stops, partial.
        let full = wait_until(Some(deadline), &crate::interrupt::interrupted);
        let measured = wall_to_ns(start.elapsed(), self.scale).max(1);
        if full {
            self.lag.add(s, measured);
        }
        if let Some(Ok(mut slot)) = self.note.as_ref().map(|n| n.lock()) {
            *slot = Some(IterationNote {
                checksum: None,
                predicted_s: Some(s),
            });
        }
        Ok(measured)
    }
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub executor: ExecutorKind,
    /// Wall seconds per scenario second (> 0; 1 = real time; only 1 with a compute backend).
    pub time_scale: f64,
    /// CPU threads a compute backend may use (`None`: its default); recorded in `summary.json`.
    pub threads: Option<u32>,
    /// Raised (e.g. by Ctrl-C) to stop the run; the results so far are kept and marked partial.
    pub stop: Arc<AtomicBool>,
}

/// One executed iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationRecord {
    pub replica: u32,
    pub start_ns: Ns,
    pub end_ns: Ns,
    pub shape: BatchShape,
    /// The backend's checksum of the iteration's logits (none from the mock executor).
    pub checksum: Option<u64>,
    /// The scenario's models' time for this batch ([`IterationNote::predicted_s`]).
    pub predicted_s: Option<f64>,
}

pub struct LiveOutput {
    pub run: RunOutput,
    pub iterations: Vec<IterationRecord>,
    /// The stop flag ended the run before every request finished.
    pub partial: bool,
    /// Wall seconds the run took.
    pub wall_s: f64,
    /// What makes the run's timings doubtful (printed on stderr, `live.warnings` in summary.json).
    pub warnings: Vec<String>,
}

/// Run a resolved scenario live, on the backend `opts.executor` names.
pub fn run_live(r: &Resolved, opts: &LiveOptions) -> Result<LiveOutput> {
    run_live_progress(r, opts, None)
}

/// [`run_live`], reporting to `progress` as requests complete.
pub fn run_live_progress(
    r: &Resolved,
    opts: &LiveOptions,
    progress: Option<Progress>,
) -> Result<LiveOutput> {
    let (device, threads) = (opts.executor, opts.threads);
    drive_live(
        r,
        opts,
        &mut |g| backend::open_backend(device, g, threads),
        progress,
    )
}

/// Opens the compute backend of one replica (given its group's resolved scenario).
pub type BackendFactory<'a> = dyn FnMut(&Resolved) -> Result<Box<dyn ComputeBackend>> + 'a;

/// [`run_live`] with the compute backends built by `open` (unused by the mock executor).
pub fn run_live_with(
    r: &Resolved,
    opts: &LiveOptions,
    open: &mut BackendFactory<'_>,
) -> Result<LiveOutput> {
    drive_live(r, opts, open, None)
}

/// [`run_live_with`], reporting to `progress`.
fn drive_live(
    r: &Resolved,
    opts: &LiveOptions,
    open: &mut BackendFactory<'_>,
    progress: Option<Progress>,
) -> Result<LiveOutput> {
    check_options(opts.executor, opts.time_scale)?;
    // Live runs write no `kv_timeline.csv`: collecting its samples (one per replica and
    // `[output] kv_timeline_interval_s` of scenario time, up to 5M rows, 166 MB for two requests
    // 2.5e7 s apart) only cost memory.
    let without_kv = Resolved {
        kv_timeline_interval_ns: 0,
        ..r.clone()
    };
    let r = &without_kv;
    let scale = opts.time_scale;
    let mock = opts.executor == ExecutorKind::Mock;
    let mut clock = WallClock::new(scale, opts.stop.clone());
    let note = NoteSlot::default();
    let mut iterations = Vec::new();
    let slot = note.clone();
    let mut tap = |replica: u32, start_ns: Ns, end_ns: Ns, shape: &BatchShape| {
        let n = slot
            .lock()
            .ok()
            .and_then(|mut c| c.take())
            .unwrap_or_default();
        iterations.push(IterationRecord {
            replica,
            start_ns,
            end_ns,
            shape: *shape,
            checksum: n.checksum,
            predicted_s: n.predicted_s,
        })
    };
    let lag = Arc::new(Lag::default());
    let started = Instant::now();
    let run = crate::run::drive(
        r,
        progress,
        &mut |g, x| -> Result<Box<dyn Executor>> {
            if mock {
                let cost = g.cost_model_counted(Some(x))?;
                return Ok(Box::new(
                    MockExecutor::new(cost, scale)
                        .with_note(note.clone())
                        .with_lag(lag.clone()),
                ));
            }
            let predictor = Predictor {
                cost: g.cost_model_counted(Some(x.clone()))?,
                swap: g.swap_model(Some(x)),
                block_bytes: g.kv_block_bytes,
            };
            Ok(Box::new(
                BackendExecutor::new(open(g)?, scale, g.pipeline, note.clone())
                    .with_predictor(predictor),
            ))
        },
        &mut clock,
        Some(&mut tap),
    )
    .map_err(|e| explain_lag(e, &clock, &lag, (scale, mock, r.scenario.replicas)))?;
    let wall_s = started.elapsed().as_secs_f64();
    Ok(LiveOutput {
        run,
        iterations,
        partial: clock.stopped(),
        wall_s,
        warnings: lag
            .warning(scale)
            .into_iter()
            .chain(clock.warning(mock, r.scenario.replicas))
            .collect(),
    })
}

/// A run stopped by a `[limits]` guard while the driver ran behind the scaled schedule (at a tiny
/// `--time-scale` every wall microsecond of the driver's own work is seconds of scenario time,
/// which can feed on itself: `[limits] max_sim_s` passed after 2.6 s of wall time at 1e-6): the
/// lag, not the scenario, is the likely cause; the error says so. Not when the trace's own
/// arrival times pass the limit: no lag moves those, so the engine's message (the trace is longer
/// than the limit) is what happened, and the lag, if any, follows as an aside.
fn explain_lag(e: SimError, clock: &WallClock, lag: &Lag, run: (f64, bool, u32)) -> SimError {
    let (scale, mock, replicas) = run;
    let why = clock.warning(mock, replicas).or_else(|| lag.warning(scale));
    match (e, why) {
        (SimError::Limit(msg), Some(w)) if msg.contains(crate::engine::TRACE_OUTLASTS_LIMIT) => {
            SimError::Limit(format!(
                "{msg} (separately, the run's timings are doubtful: {w})"
            ))
        }
        (SimError::Limit(msg), Some(w)) => SimError::Limit(format!("{msg}; likely because {w}")),
        (e, _) => e,
    }
}

/// Columns of `iterations.csv`.
pub const ITERATIONS_HEADER: &str = "iteration,replica,start_s,end_s,duration_s,prefill_requests,prefill_tokens,decode_requests,decode_context_tokens,requests,checksum,predicted_s";

/// `iterations.csv` text: one row per executed iteration, in start order; `duration_s` is the
/// measured time (wall seconds / time scale, swap-in stalls included); `requests` is the batch's
/// size; `checksum` the backend's checksum of the logits (empty with the mock executor);
/// `predicted_s` the scenario's cost model's time for this very batch (plus its swap model's
/// time for the step's copies, which a backend runs inside the iteration).
pub fn iterations_csv(rows: &[IterationRecord]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(ITERATIONS_HEADER);
    s.push('\n');
    for (i, it) in rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "{i},{},{:.9},{:.9},{:.9},{},{},{},{},{},{},{}",
            it.replica,
            ns_to_s(it.start_ns),
            ns_to_s(it.end_ns),
            ns_to_s(it.end_ns - it.start_ns),
            it.shape.prefill_requests,
            it.shape.prefill_tokens,
            it.shape.decode_requests,
            it.shape.decode_context_tokens,
            it.shape.requests(),
            it.checksum.map(|c| c.to_string()).unwrap_or_default(),
            it.predicted_s
                .map(|p| format!("{p:.9}"))
                .unwrap_or_default()
        );
    }
    s
}

/// Write a live run's outputs atomically: those of `run` plus `iterations.csv`; `summary.json`
/// carries `"live": {"partial": …, …}` and a partial run also gets a `PARTIAL` file.
pub fn write_live(
    dir: StagedDir,
    out: &LiveOutput,
    config: &serde_json::Value,
    opts: &LiveOptions,
) -> Result<PathBuf> {
    write_live_files(&dir, "", out, config, opts)?;
    dir.commit()
}

/// [`write_live`]'s files into `sub` of a staged directory, without committing it.
pub fn write_live_files(
    dir: &StagedDir,
    sub: &str,
    out: &LiveOutput,
    config: &serde_json::Value,
    opts: &LiveOptions,
) -> Result<()> {
    let at = |name: &str| crate::output::sub_path(sub, name);
    dir.write(&at("requests.csv"), requests_csv(&out.run).as_bytes())?;
    dir.write(
        &at("replicas.csv"),
        replicas_csv(&out.run.summary).as_bytes(),
    )?;
    dir.write(
        &at("iterations.csv"),
        iterations_csv(&out.iterations).as_bytes(),
    )?;
    let mut summary = serde_json::to_value(&out.run.summary).expect("summary serialises");
    summary["partial"] = serde_json::json!(out.partial);
    if out.partial {
        // Unfinished requests are missing from the completions: no judgement of stability.
        summary["stability"] = serde_json::Value::Null;
    }
    summary["live"] = serde_json::json!({
        "executor": opts.executor.name(),
        "threads": opts.threads,
        "time_scale": opts.time_scale,
        "wall_s": out.wall_s,
        "partial": out.partial,
        "warnings": out.warnings,
    });
    dir.write(&at("summary.json"), pretty_json(&summary).as_bytes())?;
    let mut config = config.clone();
    config["live"] = summary["live"].clone();
    dir.write(&at("config.json"), pretty_json(&config).as_bytes())?;
    if out.partial {
        dir.write(
            &at("PARTIAL"),
            crate::output::partial_note(out.run.summary.requests).as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that ran 50 s behind over a 100 s run: with one mock replica the advice is a
    /// larger time scale; with several replicas it names their serialisation instead, which a
    /// larger time scale does not cure.
    #[test]
    fn lag_advice_names_serialised_replicas() {
        let mut clock = WallClock::new(0.01, Arc::default());
        clock.origin = Some((Instant::now(), 0));
        clock.last_ns = 100_000_000_000;
        clock.late_ns = 50_000_000_000;
        let one = clock.warning(true, 1).unwrap();
        assert!(one.ends_with("(use a larger --time-scale)"), "{one}");
        let four = clock.warning(true, 4).unwrap();
        assert!(
            four.contains("the 4 replicas one after another") && !four.contains("use a larger"),
            "{four}"
        );
        clock.late_ns = 5_000_000_000;
        assert_eq!(clock.warning(true, 4), None);
    }
}
