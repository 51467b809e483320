//! The command line. `main` only calls [`main_with_args`]; tests call it in-process.

mod bench;
mod bench_targets;
pub mod calibrate;
mod capacity;
mod check;
mod escape;
mod fidelity;
mod list;
mod merge;
mod run;
mod sweep;
mod trace;

pub use check::CheckArgs;
pub use fidelity::FidelityArgs;
pub use run::{CompareArgs, LiveArgs, RunArgs};
pub use sweep::SweepArgs;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::SimError;

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
    /// file; nothing, and an existing DIR stays, when none had finished), then exits 130
    /// (SIGTERM: the same, exit 143); a second Ctrl-C kills the process.
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
    /// replicas); without that file the KV plot is skipped. Titles name the setup (model, GPUs,
    /// trace, requests, seeds, what the error bars are) from the runs' config.json.
    #[command(allow_negative_numbers = true)]
    Plot {
        /// A directory written by `servesim sweep` or `servesim run`.
        dir: PathBuf,
        /// Draw the JCT CDF at this arrival rate (requests/s; one of the sweep's rates). Default:
        /// the highest rate at which every run is stable.
        #[arg(long, value_name = "R")]
        cdf_rate: Option<f64>,
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
    /// Print a shell completion script, e.g. `servesim completions bash >
    /// ~/.local/share/bash-completion/completions/servesim` (zsh: a `_servesim` file on $fpath;
    /// fish: ~/.config/fish/completions/servesim.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List the policies, routers, predictors, models and GPUs this build knows (--json for
    /// JSON); `list policy NAME` shows one policy's parameters and defaults.
    List(list::ListArgs),
    /// Run a scenario live, in wall-clock time: the same policies, KV accounting and metrics as
    /// `run`, with each iteration executed by an executor that takes real time.
    ///
    /// Writes what `run` writes plus iterations.csv (measured duration, batch shape and checksum
    /// of every iteration, and the cost model's prediction of it). --device cpu|cuda computes
    /// each batch on a compute backend; --device mock (--mock) sleeps the cost model's durations
    /// (times --time-scale). Ctrl-C stops the run and writes the partial results
    /// (summary.json "partial": true and a PARTIAL file), then exits 130.
    Live(LiveArgs),
    /// Compare a simulated run directory with a live one: error table of JCT, TTFT, TPOT (mean,
    /// p50, p99), mean iteration time, and the cost model on the live run's own batches
    /// (`batch_s`); printed and written to compare.csv.
    Compare(CompareArgs),
    /// The simulator against real execution, per policy and rate: simulate with the scenario's
    /// cost model (a profile calibrated on this machine), run the same trace live on a compute
    /// backend (`--device cpu` by default), compare.
    ///
    /// Writes fidelity.md (the error table), fidelity.csv (every comparison row) and
    /// runs/<policy>-r<rate>/{sim,live,compare.csv}. Calibrate first, with the threads you give
    /// here: servesim calibrate run --device cpu --model MODEL --threads N --out PROFILE_DIR.
    Fidelity(FidelityArgs),
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

/// Parse a command line with clap; on failure print clap's message (help and version to `out`,
/// usage errors to `err`) and return the exit code (0 for help/version, 2 for errors).
pub fn parse_or_report<C: Parser>(
    args: Vec<OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<C, i32> {
    C::try_parse_from(args).map_err(|e| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let _ = if code == 0 {
            write!(out, "{}", e.render())
        } else {
            let text = value_error_line(&e).unwrap_or_else(|| usage_error_line(&e));
            writeln!(err, "{}", crate::error::one_line(&text))
        };
        code
    })
}

/// Any other usage error (an unknown or missing argument) as one line: clap's message, its tip
/// and its usage joined by "; " (its pointer to `--help` left out: the usage line names the
/// command).
fn usage_error_line(e: &clap::Error) -> String {
    let text = rendered(e);
    let parts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| match l.strip_prefix("Usage:") {
            Some(rest) => format!("usage:{rest}"),
            None => l.to_string(),
        })
        .collect();
    parts.join("; ")
}

/// clap's text of `e` with the bad value's control characters escaped: a newline in it split
/// the line (`12\n` read as `12 `, and the worded reason was lost) and other control bytes were
/// dropped (round 12, 03).
fn rendered(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.render().to_string();
    let Some(ContextValue::String(v)) = e.get(ContextKind::InvalidValue) else {
        return text;
    };
    if !v.chars().any(char::is_control) {
        return text;
    }
    // The value as clap printed it (its rendering drops escape sequences and control bytes):
    // between `invalid value '` and `' for '`.
    const OPEN: &str = "invalid value '";
    let Some(start) = text.find(OPEN).map(|i| i + OPEN.len()) else {
        return text;
    };
    let Some(len) = text[start..].find("' for '") else {
        return text;
    };
    format!(
        "{}{}{}",
        &text[..start],
        crate::error::echo(v),
        &text[start + len..]
    )
}

/// A bad flag value as one line in words (clap printed Rust's "invalid digit found in string" or
/// "invalid float literal", then a blank line and a pointer to `--help`); `None` for other
/// errors ([`usage_error_line`]).
fn value_error_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    use std::num::IntErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let text = rendered(e);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let mut line = lines.next()?.to_string();
    let source = std::error::Error::source(e);
    let words = if let Some(p) = source.and_then(|s| s.downcast_ref::<std::num::ParseIntError>()) {
        Some(match p.kind() {
            IntErrorKind::Empty => "an empty value; give a whole number",
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                "a whole number too large for this flag"
            }
            _ => "expected a whole number (digits only: no sign, decimal point or exponent)",
        })
    } else if source.is_some_and(|s| s.is::<std::num::ParseFloatError>()) {
        Some("expected a number, like 2, 0.5 or 1e3")
    } else {
        None
    };
    if let (Some(words), Some(cut)) = (words, line.rfind("': ")) {
        line.truncate(cut + 3);
        line.push_str(words);
    } else if let Some((head, range)) = line.split_once(" is not in ") {
        // clap's range check speaks Rust ("0 is not in 1..=4294967295").
        let (lo, hi) = range.split_once("..").unwrap_or((range, ""));
        let hi = hi.trim_start_matches('=');
        let words = match hi.parse::<u64>() {
            Ok(h) if h < u64::from(u32::MAX) => format!("expected a whole number from {lo} to {h}"),
            _ => format!("expected a whole number of at least {lo}"),
        };
        let cut = head.rfind("': ").map_or(head.len(), |c| c + 3);
        line.truncate(cut);
        line.push_str(&words);
    }
    for l in lines {
        line.push_str(if l.starts_with("tip:") { "; " } else { " " });
        line.push_str(l);
    }
    Some(line)
}

/// Parse `args` (program name first) and run. Returns the process exit code: 0 on success, 2 on
/// any user error (printed as one line on `err`).
pub fn main_with_args(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (mut out, mut err) = (escape::Escaping::new(out), escape::Escaping::new(err));
    let (out, err): (&mut dyn Write, &mut dyn Write) = (&mut out, &mut err);
    let cli = match parse_or_report::<Cli>(args, out, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match dispatch(cli, out, err) {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<Regression>().is_some() => 1,
        Err(e) if e.downcast_ref::<sweep::RunsFailed>().is_some() => {
            let _ = writeln!(err, "error: {}", crate::error::one_line(&e.to_string()));
            1
        }
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
        // Any other failure after Ctrl-C or SIGTERM (e.g. an input given up on) exits as the
        // signal asks.
        Err(e) if crate::interrupt::signal_seen() => {
            let _ = writeln!(
                err,
                "interrupted: {}",
                crate::error::one_line(&e.to_string())
            );
            crate::interrupt::exit_code()
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

/// A signal stopped `what` before anything finished: nothing is written and an existing `dest`
/// stays as it was (a partial output with nothing in it would only have replaced earlier results).
fn stopped_before_anything(what: &str, dest: &std::path::Path) -> anyhow::Error {
    Interrupted(format!(
        "{} stopped {what} before anything finished; nothing written ({} left as it was)",
        crate::interrupt::signal_name(),
        dest.display()
    ))
    .into()
}

/// After a command committed its outputs: a signal that arrived once its work was done (while
/// it wrote or drew its outputs) leaves them complete, and the command still exits as the signal
/// asks, saying so.
fn signal_after_outputs(what: &str, outputs: &dyn std::fmt::Display) -> anyhow::Result<()> {
    if crate::interrupt::interrupted() {
        return Err(Interrupted(format!(
            "{} arrived after {what} had finished; its outputs ({outputs}) are complete",
            crate::interrupt::signal_name(),
        ))
        .into());
    }
    Ok(())
}

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

fn dispatch(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run::run_cmd(a, out, err),
        Command::Sweep(a) => sweep::sweep_cmd(a, out, err),
        Command::Merge(a) => merge::merge_cmd(a, out),
        Command::Check(a) => check::check_cmd(a, out, err),
        Command::Capacity(a) => capacity::capacity_cmd(a, out),
        Command::Plot { dir, cdf_rate } => {
            // Ctrl-C stops between figures: those drawn are kept and listed, none half-drawn.
            let _ctrl_c = crate::interrupt::CtrlC::install();
            let opts = crate::plot::SweepPlotOptions {
                cdf_rate_per_s: cdf_rate,
            };
            let (files, notes) = crate::plot::plot_dir(&dir, &opts)?;
            for note in notes {
                writeln!(err, "warning: {note}")?;
            }
            if files.is_empty() {
                // Not an error (a script may plot every run directory), but no `plots/` either.
                writeln!(
                    out,
                    "nothing to plot in {}: a run is plotted from its kv_timeline.csv, which this one does not have (a sweep's runs, `live` and runs with [output] kv_timeline_interval_s = 0 write none)",
                    dir.display()
                )?;
            } else {
                writeln!(
                    out,
                    "{} plot files in {}",
                    files.len(),
                    dir.join("plots").display()
                )?;
            }
            Ok(())
        }
        Command::Bench(a) => bench::bench_cmd(a, out),
        Command::Live(a) => run::live_cmd(a, out, err),
        Command::Compare(a) => run::compare_cmd(a, out),
        Command::Fidelity(a) => fidelity::fidelity_cmd(a, out),
        Command::Trace(a) => trace::trace_cmd(a, out),
        Command::Calibrate { args } => calibrate::calibrate_cmd(args),
        Command::List(a) => list::list_cmd(a, out),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: generate panics on a write error (e.g. a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "servesim", &mut script);
            out.write_all(&script)?;
            Ok(())
        }
    }
}

/// Whether progress may be drawn: stderr is a terminal and `--quiet` was not given. Progress
/// never goes to stdout or into a file.
pub fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A progress bar on stderr counting `unit` (e.g. "requests") when [`show_progress`], hidden
/// otherwise. Without a total it is a spinner with the count.
pub fn progress_bar(total: Option<u64>, unit: &str, quiet: bool) -> indicatif::ProgressBar {
    if !show_progress(quiet) {
        return indicatif::ProgressBar::hidden();
    }
    let (pb, template) = match total {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}"
            ),
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} {{msg}}"),
        ),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// A progress bar of one run's completed requests (out of `total`, called only when the bar is
/// shown: it may read the trace) with the scenario time of the latest completion
/// (`"{time} s {clock}"`), and the [`crate::run::Progress`] that moves it every `every`
/// completions. Unless [`show_progress`]: a hidden bar and no `Progress` (the run pays nothing).
pub fn request_progress(
    total: impl FnOnce() -> Option<u64>,
    every: u64,
    clock: &'static str,
    quiet: bool,
) -> (indicatif::ProgressBar, Option<crate::run::Progress>) {
    if !show_progress(quiet) {
        return (indicatif::ProgressBar::hidden(), None);
    }
    let pb = progress_bar(total(), "requests", quiet);
    let bar = pb.clone();
    let progress = crate::run::Progress::every(every, move |done, t_ns| {
        bar.set_position(done);
        bar.set_message(format!(
            "{:.1} s {clock}",
            crate::vocab::time::ns_to_s(t_ns)
        ));
    });
    (pb, Some(progress))
}

/// `--policies` values: no empty entry, every name a known policy (the flag blamed).
/// Parser of seed flags: a seed must fit a scenario's `seed` (a TOML integer), so that a run's
/// recorded seed can be put back into its scenario.
pub(crate) fn seed_parser() -> fn(&str) -> Result<u64, String> {
    parse_seed
}

/// A seed flag's value: a whole number from 0 to [`crate::scenario::MAX_SEED`], said in those
/// words (clap's integer parser answered `-1` with "invalid digit found in string").
fn parse_seed(s: &str) -> Result<u64, String> {
    let max = crate::scenario::MAX_SEED;
    match s.trim().parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ if s.trim().is_empty() => {
            Err(format!("an empty seed; give whole numbers from 0 to {max}"))
        }
        _ => Err(format!(
            "expected a whole number from 0 to {max}, got `{}`",
            crate::error::echo(s)
        )),
    }
}

fn check_policy_list(policies: &[String]) -> Result<(), SimError> {
    if policies.iter().any(|p| p.trim().is_empty()) {
        return Err(SimError::config(
            "--policies has an empty entry: give comma-separated policy names, e.g. vllm,fcfs",
        ));
    }
    policies
        .iter()
        .try_for_each(|p| check_policy_flag("--policies", p))
}

/// `--rates` values: each a finite number of requests/s > 0.
fn check_rate_list(rates: &[f64]) -> Result<(), SimError> {
    use crate::error::num;
    use crate::sweep::{MAX_RATE_PER_S, MIN_RATE_PER_S};
    if let Some(r) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        return Err(SimError::config(format!(
            "--rates: every rate must be a finite number of requests/s > 0, got {}",
            num(*r)
        )));
    }
    if let Some(r) = rates
        .iter()
        .find(|r| !(MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(*r))
    {
        return Err(SimError::config(format!(
            "--rates: every rate must be from {} to {} requests/s, got {}",
            num(MIN_RATE_PER_S),
            num(MAX_RATE_PER_S),
            num(*r)
        )));
    }
    // Hashed: a long list costs linear time. `-0.0` cannot occur (rates are > 0).
    let mut seen = std::collections::HashSet::with_capacity(rates.len());
    if let Some(r) = rates.iter().find(|r| !seen.insert(r.to_bits())) {
        return Err(SimError::config(format!(
            "--rates lists {} twice; each run would be repeated",
            num(*r)
        )));
    }
    Ok(())
}

/// A policy name given with `flag`: an error naming the flag (and the closest known name) when
/// no policy has it.
fn check_policy_flag(flag: &str, name: &str) -> Result<(), SimError> {
    crate::policy::lookup(name)
        .map(|_| ())
        .map_err(|e| SimError::config(format!("{flag}: {e}")))
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
