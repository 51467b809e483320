//! The command line. `main` only calls [`main_with_args`]; tests call it in-process.

mod bench;
pub mod calibrate;
mod capacity;
mod merge;
mod trace;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::error::SimError;
use crate::scenario::{Overrides, load};

/// servesim: a deterministic discrete-event simulator of LLM inference serving.
///
/// Replays request traces against scheduling policies (Orca FCFS, vLLM, …) on a modelled
/// GPU cluster and reports job completion time (JCT), time to first token (TTFT), time per output
/// token (TPOT) and throughput. Same scenario + seed ⇒ byte-identical outputs.
#[derive(Debug, Parser)]
#[command(name = "servesim", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario and write requests.csv, summary.json, config.json (and timing.json).
    ///
    /// Outputs go to --out DIR (default results/<scenario name>/<policy>/), written atomically:
    /// on any error no output directory is left behind. An existing DIR is replaced only if
    /// servesim wrote it (or it is empty), unless --force. Ctrl-C stops the simulation and writes
    /// the requests that finished, marked partial (summary.json "partial": true and a PARTIAL
    /// file), then exits 130 (SIGTERM: the same, exit 143); a second Ctrl-C kills the process.
    Run(RunArgs),
    /// Run the cartesian product of a scenario's [sweep] axes in parallel; write sweep.csv and
    /// every run's outputs under runs/.
    ///
    /// sweep.csv has one row per run (axis values, then summary metrics) in run order, identical
    /// for any --jobs; its offered_rate_per_s, achieved_rate_per_s, queue_growth_per_s and stable
    /// columns say whether the run kept up with its arrivals (the rule: `servesim capacity
    /// --help`). A run that fails at run time (e.g. overloaded) is recorded in the `error`
    /// column; bad input fails the whole sweep before any run starts. Ctrl-C stops every run and
    /// exits 130 without writing anything (SIGTERM: the same, exit 143).
    Sweep(SweepArgs),
    /// Join the shard directories of `sweep --shard I/N` into one sweep directory: the same
    /// sweep.csv (byte for byte) and runs/ an unsharded sweep writes.
    Merge(merge::MergeArgs),
    /// (Re)draw the plots of a sweep or run directory into DIR/plots/ (PNG and SVG).
    ///
    /// A sweep directory (sweep.csv) gets the latency-vs-rate curves, goodput vs rate (when the
    /// scenario has [slo]) and the JCT CDF. A directory holding kv_timeline.csv (columns
    /// time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped) also gets
    /// kv_usage.png/.svg: GPU and host KV blocks in use over time, per replica (summed beyond 4
    /// replicas); without that file the KV plot is skipped.
    Plot {
        /// A directory written by `servesim sweep` or `servesim run`.
        dir: PathBuf,
    },
    /// Throughput under an SLO: per policy, the highest arrival rate whose latency statistic
    /// (--slo) or goodput fraction (--goodput), averaged over seeds, meets the target, by
    /// bracketing and bisection.
    ///
    /// A probed rate counts only if every seed's run also finished and is stable. Stable, over
    /// the middle 90% of the requests (5% left out at each end): achieved >= 0.95 x offered,
    /// where offered = gaps / span of the arrival times (requests/s) and achieved = offered x
    /// (output tokens completed per second) / (output tokens arriving per second), each rate the
    /// least-squares slope of the cumulative tokens against the finish (arrival) times; and the
    /// number of requests in the system, sampled at each arrival of the last half of the trace,
    /// grows (least-squares slope) by at most 0.05 x offered per second.
    /// A finite trace always drains, so an overloaded run still reports latencies: without this
    /// rule a policy that serves short requests first could "meet" a mean target far beyond the
    /// rate it serves. (The engine's early overload check, [limits] overload_window_s, aborts
    /// gross overloads while they run; those runs fail and do not count either.)
    ///
    /// With --out DIR: capacity.csv, capacity.json (every probe, with each seed's offered and
    /// achieved rates) and a bar plot, capacity.png / capacity.svg (one bar per policy, labelled
    /// with its rate and its ratio to the first policy), written atomically.
    Capacity(capacity::CapacityArgs),
    /// Compare a sweep's sweep.csv with a golden copy; exit 1 and list the moved points on a
    /// regression.
    ///
    /// Rows are matched by their axis values and cells by column name. A column the sweep has
    /// and the golden file lacks (added to sweep.csv after the golden file was blessed) is not
    /// compared and not a regression: a `note:` line on stderr names it; re-bless to include it.
    Check(CheckArgs),
    /// Measure simulator speed: wall time, simulated requests/s, iterations/s, events/s, peak RSS.
    Bench(bench::BenchArgs),
    /// Import (ShareGPT, Alpaca, Azure, Vidur), synthesise and summarise request traces.
    Trace(trace::TraceArgs),
    /// List the policies, models and GPUs this build knows.
    List,
    /// Run a scenario live, in wall-clock time: the same policies, KV accounting and metrics as
    /// `run`, with each iteration executed by an executor that takes real time.
    ///
    /// Writes what `run` writes plus iterations.csv (measured duration and batch shape of every
    /// iteration). --mock sleeps the cost model's durations (times --time-scale) on the CPU; the
    /// GPU executor is not built yet. Ctrl-C stops the run and writes the partial results
    /// (summary.json "partial": true and a PARTIAL file), then exits 130.
    Live(LiveArgs),
    /// Compare a simulated run directory with a live one: error table of JCT, TTFT, TPOT (mean,
    /// p50, p99) and mean iteration time; printed and written to compare.csv.
    Compare(CompareArgs),
    /// Calibration: measurement plans, GPU measurement, fitting, Vidur import and reports
    /// (`plan`, `run`, `fit`, `import-vidur`, `report`; `servesim calibrate --help`). Runs the
    /// `servesim-calibrate` executable built next to `servesim`.
    #[command(disable_help_flag = true)]
    Calibrate {
        /// Arguments passed to servesim-calibrate.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario TOML file (see README: "Scenario reference").
    pub scenario: PathBuf,
    /// Replace the scenario's trace with this canonical or Vidur CSV.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Scheduling policy (see `servesim list`).
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Arrival rate in requests/s: sets a synthetic trace's rate, or rescales a file trace's
    /// arrival times to this mean rate (keeping their shape).
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// Seed of every random stream.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of requests (synthetic), or the first N rows of a file trace.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// Output directory. An existing one is replaced only if servesim wrote it (or it is empty),
    /// unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace --out even when it exists and was not written by servesim (never a directory
    /// holding an input or the current directory).
    #[arg(long)]
    pub force: bool,
    /// Do not print the summary table.
    #[arg(long)]
    pub quiet: bool,
    /// Do not write requests.csv (huge runs; summary.json is still exact over every request).
    #[arg(long)]
    pub no_requests_csv: bool,
    /// Step every iteration as its own event instead of fast-forwarding runs of identical decode
    /// iterations (the reference path; outputs are byte-identical, only slower).
    #[arg(long)]
    pub no_fast_forward: bool,
}

#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// Scenario TOML file.
    pub scenario: PathBuf,
    /// Output directory (default results/<scenario name>/<policy>-live/). An existing one is
    /// replaced only if servesim wrote it (or it is empty), unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace --out even when it exists and was not written by servesim (never a directory
    /// holding an input or the current directory).
    #[arg(long)]
    pub force: bool,
    /// Use the mock executor (sleeps the cost model's iteration times) instead of the GPU.
    #[arg(long)]
    pub mock: bool,
    /// Wall seconds per scenario second (e.g. 0.01 replays 100× faster; mock only).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Number of requests (synthetic), or the first N rows of a file trace.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// Do not print the summary table.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A directory written by `servesim run`.
    pub sim_dir: PathBuf,
    /// A directory written by `servesim live`.
    pub live_dir: PathBuf,
    /// Where to write compare.csv (default LIVE_DIR/compare.csv).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compare even when a run is partial (stopped by Ctrl-C); the output says so.
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Scenario TOML file with a [sweep] table.
    pub scenario: PathBuf,
    /// Parallel runs (default, or 0: number of CPUs; at most the number of runs and 1024).
    /// Results do not depend on it.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Output directory (default results/<scenario name>/sweep). An existing one is replaced
    /// only if servesim wrote it (or it is empty), unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace --out even when it exists and was not written by servesim (never a directory
    /// holding an input or the current directory).
    #[arg(long)]
    pub force: bool,
    /// Override the number of requests of every run.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// Skip the per-request requests.csv of each run (summaries stay exact).
    #[arg(long)]
    pub no_requests_csv: bool,
    /// Do not draw plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Run only shard I of N (0-based): the runs whose index mod N is I. Writes a shard directory
    /// (default results/<name>/sweep-shard-I-of-N, no plots) for `servesim merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::Shard::parse)]
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A sweep directory (or its sweep.csv).
    pub sweep: PathBuf,
    /// The golden sweep.csv to compare with.
    #[arg(long, value_name = "FILE")]
    pub golden: PathBuf,
    /// Relative tolerance for numeric cells (default 0: exact; runs are deterministic).
    #[arg(long, default_value_t = 0.0, value_name = "REL")]
    pub rel_tol: f64,
    /// Rewrite the golden file with the sweep's sweep.csv.
    #[arg(long)]
    pub bless: bool,
}

/// Parse a command line with clap; on failure print clap's message (help and version to `out`,
/// usage errors to `err`) and return the exit code (0 for help/version, 2 for errors).
pub fn parse_or_report<C: Parser>(
    args: Vec<OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<C, i32> {
    C::try_parse_from(args).map_err(|e| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let text = e.render().to_string();
        let _ = if code == 0 {
            write!(out, "{text}")
        } else {
            write!(err, "{text}")
        };
        code
    })
}

/// Parse `args` (program name first) and run. Returns the process exit code: 0 on success, 2 on
/// any user error (printed as one line on `err`).
pub fn main_with_args(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let cli = match parse_or_report::<Cli>(args, out, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match dispatch(cli, out, err) {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<Regression>().is_some() => 1,
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            let _ = writeln!(
                err,
                "interrupted: {}",
                crate::error::one_line(&e.to_string())
            );
            crate::interrupt::exit_code()
        }
        Err(e) if e.downcast_ref::<calibrate::Forwarded>().is_some() => {
            e.downcast_ref::<calibrate::Forwarded>().map_or(2, |f| f.0)
        }
        Err(e) => {
            let _ = writeln!(err, "error: {}", crate::error::one_line(&e.to_string()));
            2
        }
    }
}

/// Exit status of a command stopped by Ctrl-C (128 + SIGINT, the shell convention; SIGTERM gives
/// 143, see [`crate::interrupt::exit_code`]).
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// Ctrl-C stopped the command (exit code [`INTERRUPTED_EXIT_CODE`]); the message says what was
/// written.
#[derive(Debug)]
struct Interrupted(String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// `check` found moved points (exit code 1, already reported).
#[derive(Debug)]
struct Regression;

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("regression")
    }
}

impl std::error::Error for Regression {}

fn check_cmd(a: CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let actual = if a.sweep.is_dir() {
        a.sweep.join("sweep.csv")
    } else {
        a.sweep.clone()
    };
    if !(a.rel_tol.is_finite() && a.rel_tol >= 0.0) {
        return Err(SimError::config("--rel-tol must be a finite number ≥ 0").into());
    }
    if a.bless {
        let bytes = std::fs::read(&actual).map_err(|e| SimError::Io {
            path: actual.clone(),
            msg: format!("cannot read: {e}"),
        })?;
        // A golden file is a sweep.csv copy: never bless onto a scenario, a summary.json, ….
        if a.golden.exists() && a.golden.extension().is_none_or(|x| x != "csv") {
            return Err(SimError::Io {
                path: a.golden.clone(),
                msg: "--golden with --bless must be a .csv file (a copy of sweep.csv); refusing to overwrite another kind of file".into(),
            }
            .into());
        }
        // Staged: blessing a file with itself (or an error half-way) never truncates it.
        crate::output::write_file(&a.golden, &bytes, &[])?;
        writeln!(
            out,
            "blessed {} from {}",
            a.golden.display(),
            actual.display()
        )?;
        return Ok(());
    }
    let crate::check::Comparison {
        moved,
        unchecked_columns,
    } = crate::check::compare(&actual, &a.golden, a.rel_tol)?;
    if !unchecked_columns.is_empty() {
        writeln!(
            err,
            "note: {} has column(s) the golden file lacks, not compared: {} (re-bless to include them)",
            actual.display(),
            unchecked_columns.join(", ")
        )?;
    }
    if moved.is_empty() {
        writeln!(
            out,
            "ok: {} matches {}",
            actual.display(),
            a.golden.display()
        )?;
        Ok(())
    } else {
        writeln!(
            err,
            "regression: {} value(s) moved against {}:\n{}",
            moved.len(),
            a.golden.display(),
            crate::check::report(&moved)
        )?;
        Err(Regression.into())
    }
}

fn dispatch(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run_cmd(a, out, err),
        Command::Sweep(a) => sweep_cmd(a, out),
        Command::Merge(a) => merge::merge_cmd(a, out),
        Command::Check(a) => check_cmd(a, out, err),
        Command::Capacity(a) => capacity::capacity_cmd(a, out),
        Command::Plot { dir } => {
            let (files, note) = crate::plot::plot_dir(&dir)?;
            if let Some(note) = note {
                writeln!(err, "warning: {note}")?;
            }
            writeln!(
                out,
                "{} plot files in {}",
                files.len(),
                dir.join("plots").display()
            )?;
            Ok(())
        }
        Command::Bench(a) => bench::bench_cmd(a, out),
        Command::Live(a) => live_cmd(a, out),
        Command::Compare(a) => compare_cmd(a, out),
        Command::Trace(a) => trace::trace_cmd(a, out),
        Command::Calibrate { args } => calibrate::calibrate_cmd(args),
        Command::List => {
            writeln!(out, "policies:")?;
            for e in crate::policy::REGISTRY {
                writeln!(out, "  {:<10} {}", e.name, e.summary)?;
            }
            writeln!(out, "routers:")?;
            for e in crate::route::REGISTRY {
                writeln!(out, "  {:<18} {}", e.name, e.summary)?;
            }
            let cat = crate::catalogue::Catalogue::builtin();
            writeln!(
                out,
                "models:   {}",
                cat.models.keys().cloned().collect::<Vec<_>>().join(", ")
            )?;
            writeln!(
                out,
                "gpus:     {}",
                cat.gpus.keys().cloned().collect::<Vec<_>>().join(", ")
            )?;
            writeln!(
                out,
                "predictors: {}",
                crate::predict::PREDICTOR_NAMES.join(", ")
            )?;
            Ok(())
        }
    }
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
pub fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} requests (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

fn run_cmd(a: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    // Installed first and kept until the outputs are written: a Ctrl-C at any point stops the
    // simulation (if still running) instead of killing the process mid-way, so the output
    // directory is either absent or complete (marked partial when the run was cut short).
    let _ctrl_c = crate::interrupt::CtrlC::install();
    let loaded = load(&a.scenario)?;
    let o = Overrides {
        trace: a.trace,
        policy: a.policy,
        rate_per_s: a.rate,
        seed: a.seed,
        num_requests: a.num_requests,
    };
    if let Some(r) = o.rate_per_s
        && !(r.is_finite() && r > 0.0)
    {
        return Err(SimError::config(format!(
            "--rate must be a finite number > 0, got {}",
            crate::error::num(r)
        ))
        .into());
    }
    check_num_requests(o.num_requests)?;
    let resolved = loaded.resolve(&o)?;
    let dest = a.out.unwrap_or_else(|| {
        PathBuf::from("results")
            .join(&resolved.scenario.name)
            .join(&resolved.scenario.scheduler.policy)
    });
    // Claimed before the simulation: a refused or concurrently written --out fails at once.
    let staged = crate::output::StagedDir::new(
        &dest,
        &crate::output::Replace::new(a.force, resolved.input_paths()),
    )?;
    let pb = progress_bar(crate::run::expected_requests(&resolved));
    let pb2 = pb.clone();
    let started = Instant::now(); // allow-wall-clock: timing.json only, outside the simulation
    let result = crate::run::run_interruptible(
        &resolved,
        Some(Box::new(move |n| {
            if n % 1024 == 0 {
                pb2.set_position(n)
            }
        })),
        !a.no_fast_forward,
    );
    pb.finish_and_clear();
    let (output, partial) = result?;
    let wall_s = started.elapsed().as_secs_f64();
    let timing = serde_json::json!({
        "wall_s": wall_s,
        "simulated_requests_per_wall_s": output.summary.requests as f64 / wall_s.max(1e-9),
        "iterations_per_wall_s": output.stats.iterations as f64 / wall_s.max(1e-9),
        "events_per_wall_s": output.stats.events as f64 / wall_s.max(1e-9),
    });
    let dir = crate::output::write_run_with(
        staged,
        &output,
        &crate::run::config_json(&resolved),
        &timing,
        partial,
        !a.no_requests_csv,
    )?;
    if let Some(t) = output.kv_timeline_cut_at_ns {
        writeln!(
            err,
            "warning: kv_timeline.csv holds its first {} rows only (samples from {} s on were left out); raise [output] kv_timeline_interval_s",
            crate::run::KV_TIMELINE_MAX_ROWS,
            crate::vocab::time::ns_to_s(t)
        )?;
    }
    if partial {
        return Err(Interrupted(format!(
            "{} stopped the run after {} completed requests; partial results in {} (summary.json \"partial\": true, PARTIAL)",
            crate::interrupt::signal_name(),
            output.summary.requests,
            dir.display()
        ))
        .into());
    }
    if !a.quiet {
        write!(out, "{}", crate::metrics::table(&output.summary))?;
        writeln!(
            out,
            "simulated in {wall_s:.3} s wall; outputs in {}",
            dir.display()
        )?;
    }
    Ok(())
}

/// `--num-requests 0` would run nothing and report an empty run as a result: blame the flag.
fn check_num_requests(n: Option<u64>) -> Result<(), SimError> {
    if n == Some(0) {
        return Err(SimError::config(
            "--num-requests must be ≥ 1 (0 would run no request)",
        ));
    }
    Ok(())
}

fn live_cmd(a: LiveArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use crate::live::{CtrlC, ExecutorKind, LiveOptions, run_live, write_live};
    if !a.mock {
        return Err(SimError::config(crate::live::NO_GPU_EXECUTOR).into());
    }
    crate::live::check_time_scale(a.time_scale)?;
    check_num_requests(a.num_requests)?;
    let loaded = load(&a.scenario)?;
    let resolved = loaded.resolve(&Overrides {
        num_requests: a.num_requests,
        ..Default::default()
    })?;
    let dest = a.out.unwrap_or_else(|| {
        PathBuf::from("results")
            .join(&resolved.scenario.name)
            .join(format!("{}-live", resolved.scenario.scheduler.policy))
    });
    let staged = crate::output::StagedDir::new(
        &dest,
        &crate::output::Replace::new(a.force, resolved.input_paths()),
    )?;
    let opts = LiveOptions {
        executor: ExecutorKind::Mock,
        time_scale: a.time_scale,
        stop: Default::default(),
    };
    let output = {
        let _ctrl_c = CtrlC::install();
        run_live(&resolved, &opts)?
    };
    let dir = write_live(staged, &output, &crate::run::config_json(&resolved), &opts)?;
    if !a.quiet {
        write!(out, "{}", crate::metrics::table(&output.run.summary))?;
        if output.partial {
            writeln!(
                out,
                "PARTIAL: stopped after {} completed requests",
                output.run.summary.requests
            )?;
        }
        writeln!(
            out,
            "ran live (mock executor, time scale {}) in {:.3} s wall; outputs in {}",
            a.time_scale,
            output.wall_s,
            dir.display()
        )?;
    }
    if output.partial {
        return Err(Interrupted(format!(
            "{} stopped the live run after {} completed requests; partial results in {} (summary.json \"partial\": true, PARTIAL)",
            crate::interrupt::signal_name(),
            output.run.summary.requests,
            dir.display()
        ))
        .into());
    }
    Ok(())
}

fn compare_cmd(a: CompareArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use crate::live::compare::{check_dirs, compare, compare_csv, compare_table};
    let checked = check_dirs(&a.sim_dir, &a.live_dir, a.allow_partial)?;
    let rows = compare(&a.sim_dir, &a.live_dir)?;
    for dir in &checked.partial {
        writeln!(
            out,
            "PARTIAL: {} is a partial run (--allow-partial): its figures cover only the requests that finished",
            dir.display()
        )?;
    }
    let dest = a.out.unwrap_or_else(|| a.live_dir.join("compare.csv"));
    // The sim directory, and the files compare reads from the live one (compare.csv goes there).
    let inputs: Vec<PathBuf> = std::iter::once(a.sim_dir.clone())
        .chain(
            [
                "summary.json",
                "config.json",
                "requests.csv",
                "iterations.csv",
                "PARTIAL",
            ]
            .map(|f| a.live_dir.join(f)),
        )
        .collect();
    crate::output::check_file_dest(&dest, &inputs)?;
    let mut f = crate::output::StagedFile::new(&dest)?;
    f.write_all(compare_csv(&rows).as_bytes())?;
    let dest = f.commit()?;
    write!(out, "{}", compare_table(&rows))?;
    writeln!(out, "written to {}", dest.display())?;
    Ok(())
}

fn sweep_cmd(a: SweepArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // Ctrl-C stops every run at its next event; the sweep then writes nothing (its temporary
    // directory is removed) and exits 130: a sweep.csv of cut-short runs would mislead.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    check_num_requests(a.num_requests)?;
    let mut runs = crate::sweep::expand(
        &a.scenario,
        &Overrides {
            num_requests: a.num_requests,
            ..Default::default()
        },
    )?;
    let name = runs
        .first()
        .map(|r| r.resolved.scenario.name.clone())
        .unwrap_or_default();
    // An empty trace or an absolute-time trace file fails every run that reads it: an error up
    // front (each distinct file, row limit and time limit read once).
    let mut checked = std::collections::BTreeSet::new();
    for r in &runs {
        let read_once = match &r.resolved.trace {
            crate::scenario::TraceSource::File { path, limit, .. } => {
                checked.insert((path.clone(), *limit, r.resolved.guards.max_sim_ns))
            }
            crate::scenario::TraceSource::Synthetic { .. } => true,
        };
        if read_once {
            crate::run::check_trace_file(&r.resolved)?;
        }
    }
    let shard = a.shard.map(|s| s.select(&mut runs));
    let default_dir = shard
        .as_ref()
        .map_or("sweep".into(), |s| s.shard.dir_name());
    let dest = a
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&name).join(default_dir));
    let mut inputs: Vec<PathBuf> = runs.iter().flat_map(|r| r.resolved.input_paths()).collect();
    inputs.sort();
    inputs.dedup();
    let dir = crate::output::StagedDir::new(&dest, &crate::output::Replace::new(a.force, inputs))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.jobs, runs.len()))
        .build()?;
    let pb = progress_bar(Some(runs.len() as u64));
    let started = Instant::now(); // allow-wall-clock: timing.json only, outside the simulation
    // Ctrl-C is checked between runs too (a run not yet started is skipped: `None`), so a sweep
    // of many short runs stops promptly.
    let results: Vec<Option<crate::error::Result<(crate::run::RunOutput, bool)>>> =
        pool.install(|| {
            crate::interrupt::par_map_until(&runs, &crate::interrupt::interrupted, &|r| {
                let o = crate::run::run_interruptible(&r.resolved, None, true);
                pb.inc(1);
                o
            })
        });
    pb.finish_and_clear();
    let mut stopped = false;
    let results: Vec<std::result::Result<crate::run::RunOutput, String>> = results
        .into_iter()
        .map(|res| match res {
            None => {
                stopped = true;
                Err(String::new())
            }
            Some(res) => res
                .map(|(o, cut)| {
                    stopped |= cut;
                    o
                })
                .map_err(|e| e.to_string()),
        })
        .collect();
    if stopped {
        return Err(Interrupted(format!(
            "{} stopped the sweep before every run finished; nothing was written (temporary directory removed)",
            crate::interrupt::signal_name()
        ))
        .into());
    }
    let wall_s = started.elapsed().as_secs_f64();
    let mut outcomes = Vec::with_capacity(runs.len());
    let mut failed = 0;
    for (r, res) in runs.iter().zip(results) {
        match res {
            Ok(o) => {
                let sub = format!("runs/{}", r.dir_name());
                if !a.no_requests_csv {
                    dir.write(
                        &format!("{sub}/requests.csv"),
                        crate::output::requests_csv(&o).as_bytes(),
                    )?;
                }
                dir.write(
                    &format!("{sub}/replicas.csv"),
                    crate::output::replicas_csv(&o.summary).as_bytes(),
                )?;
                dir.write(
                    &format!("{sub}/summary.json"),
                    crate::output::pretty_json(&serde_json::to_value(&o.summary)?).as_bytes(),
                )?;
                dir.write(
                    &format!("{sub}/config.json"),
                    crate::output::pretty_json(&crate::run::config_json(&r.resolved)).as_bytes(),
                )?;
                outcomes.push(Ok(o.summary));
            }
            Err(e) => {
                failed += 1;
                outcomes.push(Err(e));
            }
        }
    }
    let csv = match &shard {
        Some(sh) => {
            dir.write(
                "shard.json",
                sh.manifest(&runs, &outcomes, wall_s).as_bytes(),
            )?;
            sh.sweep_csv(&runs, &outcomes)
        }
        None => crate::sweep::sweep_csv(&runs, &outcomes),
    };
    dir.write("sweep.csv", csv.as_bytes())?;
    dir.write(
        "timing.json",
        crate::output::pretty_json(&serde_json::json!({
            "wall_s": wall_s,
            "runs": runs.len(),
            "jobs": pool.current_num_threads(),
        }))
        .as_bytes(),
    )?;
    if !a.no_plots && shard.is_none() {
        crate::plot::plot_sweep(dir.path(), &dir.path().join("plots"))?;
    }
    let path = dir.commit()?;
    writeln!(
        out,
        "{} runs ({} failed) in {wall_s:.2} s wall on {} threads; sweep.csv in {}",
        runs.len(),
        failed,
        pool.current_num_threads(),
        path.display()
    )?;
    Ok(())
}

/// Most threads `--jobs` starts (runs are CPU-bound: more threads than cores only cost memory).
pub const MAX_JOBS: usize = 1024;

/// Threads for `--jobs` over `work` independent runs: `None` or 0 means the number of CPUs (rayon's
/// default, which honours `RAYON_NUM_THREADS`); never more than `work` (at least 1) or
/// [`MAX_JOBS`], so a huge `--jobs` does not spend its time spawning idle threads.
fn thread_count(jobs: Option<usize>, work: usize) -> usize {
    let wanted = match jobs {
        Some(j) if j > 0 => j,
        _ => rayon::current_num_threads(),
    };
    wanted.min(work.max(1)).min(MAX_JOBS)
}
