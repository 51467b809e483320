//! The one-scenario commands: `servesim run` (simulate and write the run directory), `servesim
//! live` (run the scenario in real time on a compute backend or the mock executor) and `servesim compare`
//! (a simulated run directory against a live one).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::{Interrupted, check_num_requests, request_progress};
use crate::error::SimError;
use crate::scenario::{Overrides, load};

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
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
    #[arg(long, value_parser = super::seed_parser())]
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
    /// Do not print the summary table, and draw no progress bar on stderr (it is drawn only when
    /// stderr is a terminal).
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
#[command(allow_negative_numbers = true)]
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
    /// Where the batches run: `cpu` or `cuda` (a compute backend really computes each batch), or
    /// `mock` (sleeps the cost model's iteration times).
    #[arg(long, value_enum, default_value_t = Device::Cuda)]
    pub device: Device,
    /// Same as `--device mock`.
    #[arg(long, conflicts_with = "device")]
    pub mock: bool,
    /// CPU threads of the compute backend (default: its own choice); recorded in summary.json.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: Option<u32>,
    /// Wall seconds per scenario second (e.g. 0.01 replays 100× faster; mock only).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Scheduling policy (see `servesim list`).
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Arrival rate in requests/s (as `run --rate`).
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// Seed of every random stream.
    #[arg(long, value_parser = super::seed_parser())]
    pub seed: Option<u64>,
    /// Number of requests (synthetic), or the first N rows of a file trace.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// Do not print the summary table, and draw no progress bar on stderr (it is drawn only when
    /// stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// `servesim live --device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    Mock,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A directory written by `servesim run`.
    pub sim_dir: PathBuf,
    /// A directory written by `servesim live`.
    pub live_dir: PathBuf,
    /// Where to write compare.csv (default LIVE_DIR/compare.csv). An existing file is replaced
    /// only if it is a compare.csv (its header), unless --force.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file even if it is not a compare.csv.
    #[arg(long)]
    pub force: bool,
    /// Compare even when a run is partial (stopped by Ctrl-C); the output says so.
    #[arg(long)]
    pub allow_partial: bool,
}

/// A finished run's warnings on stderr (after the run: a failed run's stderr stays its one error
/// line): the scenario's, the run's instability or thrash, and a `kv_timeline.csv` cut at its row
/// limit.
fn print_warnings(
    err: &mut dyn Write,
    resolved: &crate::scenario::Resolved,
    summary: &crate::metrics::Summary,
    kv_cut_at_ns: Option<u64>,
) -> std::io::Result<()> {
    for w in &resolved.warnings {
        writeln!(err, "warning: {}: {w}", resolved.scenario_path.display())?;
    }
    if let Some(w) = summary.stability_warning() {
        writeln!(err, "warning: {w}")?;
    }
    if let Some(w) = summary.thrash_warning() {
        writeln!(err, "warning: {w}")?;
    }
    if let Some(t) = kv_cut_at_ns {
        writeln!(
            err,
            "warning: kv_timeline.csv holds its first {} rows only (samples from {} s on were left out); raise [output] kv_timeline_interval_s",
            crate::run::KV_TIMELINE_MAX_ROWS,
            crate::vocab::time::ns_to_s(t)
        )?;
    }
    Ok(())
}

/// `run` moves its progress bar once per this many completed requests (a simulated request takes
/// about a microsecond: the bar still moves thousands of times a second on a long run).
const RUN_PROGRESS_EVERY: u64 = 1024;

pub(super) fn run_cmd(a: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
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
    check_flags(&o)?;
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
    let (pb, progress) = request_progress(
        || crate::run::count_requests(&resolved),
        RUN_PROGRESS_EVERY,
        "simulated",
        a.quiet,
    );
    let started = Instant::now(); // allow-wall-clock: timing.json only, outside the simulation
    let result = crate::run::run_interruptible_rows(
        &resolved,
        progress,
        !a.no_fast_forward,
        crate::run::Rows::keep_if(!a.no_requests_csv),
    );
    pb.finish_and_clear();
    let (output, partial) = result?;
    if partial {
        check_partial_write(
            "the run",
            output.summary.requests,
            "completed requests",
            &dest,
        )?;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let timing = timing_json(&output, wall_s);
    let dir = crate::output::write_run_with(
        staged,
        &output,
        &crate::run::config_json(&resolved),
        &timing,
        partial,
        !a.no_requests_csv,
    )?;
    print_warnings(
        err,
        &resolved,
        &output.summary,
        output.kv_timeline_cut_at_ns,
    )?;
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
        write_summary(out, &output, &resolved, wall_s, &dir)?;
    }
    super::signal_after_outputs("the run", &dir.display())
}

/// A run cut short after `done` `units` (completed requests, finished cells) writes nothing when
/// none were, or when `dest` holds a complete earlier servesim output (a run, sweep, capacity
/// search, merge, fidelity table…: no `PARTIAL` file): a rerun cut short would replace complete
/// results with fewer, which rerunning reproduces. `what` names the command ("the run").
pub(super) fn check_partial_write(
    what: &str,
    done: u64,
    units: &str,
    dest: &std::path::Path,
) -> anyhow::Result<()> {
    if done == 0 {
        return Err(super::stopped_before_anything(what, dest));
    }
    let complete = (crate::staging::is_servesim_output(dest)
        || dest.join("summary.json").is_file())
        && !dest.join("PARTIAL").exists();
    if complete {
        return Err(Interrupted(format!(
            "{} stopped {what} after {done} {units}; {} holds an earlier complete servesim output, kept as it was (the partial results were not written; give another --out to keep them)",
            crate::interrupt::signal_name(),
            dest.display()
        ))
        .into());
    }
    Ok(())
}

/// `run`'s stdout: the summary table, a note on any `[scheduler]` default the scenario
/// overrides, and the wall time and output directory.
fn write_summary(
    out: &mut dyn Write,
    output: &crate::run::RunOutput,
    resolved: &crate::scenario::Resolved,
    wall_s: f64,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    write!(out, "{}", crate::metrics::table(&output.summary))?;
    if let Some(note) = super::list::overridden_defaults(&resolved.scenario.scheduler) {
        writeln!(out, "{note}")?;
    }
    writeln!(
        out,
        "simulated in {wall_s:.3} s wall; outputs in {}",
        dir.display()
    )?;
    Ok(())
}

/// The checks on `run`'s flags alone: `--rate`, `--num-requests`, and `--policy` (a known name).
fn check_flags(o: &Overrides) -> Result<(), SimError> {
    check_rate(o.rate_per_s)?;
    check_num_requests(o.num_requests)?;
    if let Some(p) = &o.policy {
        super::check_policy_flag("--policy", p)?;
    }
    Ok(())
}

/// `--rate`, when given, must be a finite number > 0.
fn check_rate(rate: Option<f64>) -> Result<(), SimError> {
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(SimError::config(format!(
            "--rate must be a finite number > 0, got {}",
            crate::error::num(r)
        )));
    }
    Ok(())
}

/// The `timing.json` of a run that took `wall_s` seconds of wall-clock time.
pub(super) fn timing_json(output: &crate::run::RunOutput, wall_s: f64) -> serde_json::Value {
    serde_json::json!({
        "wall_s": wall_s,
        "simulated_requests_per_wall_s": output.summary.requests as f64 / wall_s.max(1e-9),
        "iterations_per_wall_s": output.stats.iterations as f64 / wall_s.max(1e-9),
        "events_per_wall_s": output.stats.events as f64 / wall_s.max(1e-9),
    })
}

pub(super) fn live_cmd(
    a: LiveArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::live::{ExecutorKind, LiveOptions, write_live};
    let device = match (a.mock, a.device) {
        (true, _) | (_, Device::Mock) => ExecutorKind::Mock,
        (_, Device::Cpu) => ExecutorKind::Cpu,
        (_, Device::Cuda) => ExecutorKind::Cuda,
    };
    crate::live::backend::check_device(device)?;
    crate::live::check_options(device, a.time_scale)?;
    let o = Overrides {
        policy: a.policy,
        rate_per_s: a.rate,
        seed: a.seed,
        num_requests: a.num_requests,
        ..Default::default()
    };
    check_flags(&o)?;
    let loaded = load(&a.scenario)?;
    let resolved = loaded.resolve(&o)?;
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
        executor: device,
        time_scale: a.time_scale,
        threads: a.threads,
        stop: Default::default(),
    };
    let output = live_with_progress(&resolved, &opts, a.quiet)?;
    if output.partial {
        let done = output.run.summary.requests;
        check_partial_write("the live run", done, "completed requests", &dest)?;
    }
    let dir = write_live(staged, &output, &crate::run::config_json(&resolved), &opts)?;
    print_warnings(err, &resolved, &output.run.summary, None)?;
    for w in &output.warnings {
        writeln!(err, "warning: {w}")?;
    }
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
            "ran live ({} executor, time scale {}) in {:.3} s wall; outputs in {}",
            device.name(),
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

/// The live run (Ctrl-C stops it), with its progress bar while it runs: live requests finish in
/// wall-clock time, so the bar moves at every one.
fn live_with_progress(
    resolved: &crate::scenario::Resolved,
    opts: &crate::live::LiveOptions,
    quiet: bool,
) -> crate::error::Result<crate::live::LiveOutput> {
    let _ctrl_c = crate::live::CtrlC::install();
    let (pb, progress) = request_progress(
        || crate::run::count_requests(resolved),
        1,
        "scenario time",
        quiet,
    );
    let result = crate::live::run_live_progress(resolved, opts, progress);
    pb.finish_and_clear();
    result
}

pub(super) fn compare_cmd(a: CompareArgs, out: &mut dyn Write) -> anyhow::Result<()> {
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
    let default_dest = a.out.is_none();
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
    // A compare.csv (this command's own output, e.g. from an earlier compare) is replaced.
    let replace =
        a.force || crate::output::first_line_is(&dest, crate::live::compare::COMPARE_HEADER);
    crate::output::check_file_dest(&dest, &inputs, replace)?;
    let mut f = crate::output::StagedFile::new(&dest, replace)?;
    f.write_all(compare_csv(&rows).as_bytes())?;
    let dest = f.commit()?;
    if default_dest {
        // LIVE_DIR/compare.csv joins LIVE_DIR's marker, if it is a servesim output.
        crate::staging::add_to_marker(&a.live_dir, std::slice::from_ref(&dest))?;
    }
    write!(out, "{}", compare_table(&rows))?;
    writeln!(out, "written to {}", dest.display())?;
    Ok(())
}
