//! `servesim sweep`: expand a sweep file into runs, simulate them in parallel, and write every
//! run's outputs, `sweep.csv`, `timing.json` and the plots into one staged directory (or one
//! shard of it).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::{Interrupted, check_num_requests, progress_bar, thread_count};
use crate::metrics::Summary;
use crate::scenario::Overrides;
use crate::sweep::SweepRun;

/// Per run, in order: its summary, or the message of the error that failed it.
type Outcomes = Vec<std::result::Result<Summary, String>>;

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
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
    /// Draw the JCT CDF at this arrival rate (requests/s; one of the sweep's rates). Default:
    /// the highest rate at which every run is stable.
    #[arg(long, value_name = "R")]
    pub cdf_rate: Option<f64>,
    /// Run only shard I of N (0-based): the runs whose index mod N is I. Writes a shard directory
    /// (default results/<name>/sweep-shard-I-of-N, no plots) for `servesim merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::Shard::parse)]
    pub shard: Option<crate::shard::Shard>,
    /// Comma-separated policies: the `policy` axis (replaces the scenario's [sweep] policy).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub policies: Vec<String>,
    /// Comma-separated arrival rates in requests/s: the `rate` axis (replaces [sweep] rate).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "REQ_PER_S",
        allow_hyphen_values = true
    )]
    pub rates: Vec<f64>,
    /// Comma-separated seeds: the `seed` axis (replaces [sweep] seed).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "SEEDS",
        allow_hyphen_values = true,
        value_parser = super::seed_parser()
    )]
    pub seeds: Vec<u64>,
    /// Exit 0 even when some runs failed (they are still recorded in sweep.csv's `error`
    /// column); without it a sweep with a failed run exits 1.
    #[arg(long)]
    pub allow_failures: bool,
    /// No progress bar on stderr (it is drawn only when stderr is a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Some runs of the sweep failed (exit code 1; the message names how many and why).
#[derive(Debug)]
pub(super) struct RunsFailed(pub String);

impl std::fmt::Display for RunsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunsFailed {}

// Long on purpose: the sweep pipeline in order (expand, check, stage, run, write, commit).
pub(super) fn sweep_cmd(
    a: SweepArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    // Ctrl-C stops every run at its next event; the sweep then writes nothing (its temporary
    // directory is removed) and exits 130: a sweep.csv of cut-short runs would mislead.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    check_num_requests(a.num_requests)?;
    let flags = flag_axes(&a)?;
    let mut runs = crate::sweep::expand(
        &a.scenario,
        &Overrides {
            num_requests: a.num_requests,
            ..Default::default()
        },
        &flags,
    )?;
    let name = runs
        .first()
        .map(|r| r.resolved.scenario.name.clone())
        .unwrap_or_default();
    check_trace_files(&runs)?;
    check_cdf_rate(a.cdf_rate, &runs)?;
    let shard = a.shard.map(|s| s.select(&mut runs)).transpose()?;
    let default_dir = shard
        .as_ref()
        .map_or("sweep".into(), |s| s.shard.dir_name());
    let dest = a
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&name).join(default_dir));
    let inputs = crate::sweep::input_files(&runs);
    let stamps = input_stamps(&inputs);
    let dir = crate::output::StagedDir::new(&dest, &crate::output::Replace::new(a.force, inputs))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.jobs, runs.len()))
        .build()?;
    let pb = progress_bar(Some(runs.len() as u64), "runs", a.quiet);
    let started = Instant::now(); // allow-wall-clock: timing.json only, outside the simulation
    // Ctrl-C is checked between runs too (a run not yet started is skipped: `None`), so a sweep
    // of many short runs stops promptly.
    // Without requests.csv no run needs its rows: streaming summaries.
    let rows = crate::run::Rows::keep_if(!a.no_requests_csv);
    let results: Vec<Option<crate::error::Result<(crate::run::RunOutput, bool)>>> =
        pool.install(|| {
            crate::interrupt::par_map_until(&runs, &crate::interrupt::interrupted, &|r| {
                let o = crate::run::run_interruptible_rows(&r.resolved, None, true, rows);
                pb.inc(1);
                o
            })
        });
    pb.finish_and_clear();
    let (results, stopped) = flatten_results(results);
    if stopped {
        return Err(Interrupted(format!(
            "{} stopped the sweep before every run finished; nothing was written (temporary directory removed)",
            crate::interrupt::signal_name()
        ))
        .into());
    }
    check_inputs_unchanged(&stamps)?;
    let wall_s = started.elapsed().as_secs_f64();
    let (outcomes, failed) = write_runs(&dir, &runs, results, a.no_requests_csv)?;
    let failures = failure_note(&runs, &outcomes, failed);
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
        let opts = crate::plot::SweepPlotOptions {
            cdf_rate_per_s: a.cdf_rate,
        };
        crate::plot::plot_sweep_noting(dir.path(), &dir.path().join("plots"), &opts)
            .map_err(|e| at_dest(e, dir.path(), &dest))?;
    }
    let path = dir.commit()?;
    print_scenario_warnings(err, &a.scenario, &runs)?;
    if let Some(note) = unstable_note(&runs, &outcomes) {
        writeln!(err, "warning: {note}")?;
    }
    for axis in crate::sweep::inert_axes(&runs, &outcomes) {
        writeln!(
            err,
            "warning: sweep axis `{axis}`: its values gave identical results at every point of the other axes: no run reads it (a key of a policy, router or predictor these runs do not use, or a `gpu`, `tp` or `pp` that every replica group sets), or it does not bind here (a cap never reached, a seed nothing draws from)"
        )?;
    }
    writeln!(
        out,
        "{} run{} ({} failed) in {wall_s:.2} s wall on {} thread{}; sweep.csv in {}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        failed,
        pool.current_num_threads(),
        if pool.current_num_threads() == 1 {
            ""
        } else {
            "s"
        },
        path.display()
    )?;
    super::signal_after_outputs("the sweep", &path.display())?;
    match failures {
        Some(note) if a.allow_failures => {
            writeln!(err, "warning: {note}")?;
            Ok(())
        }
        Some(note) => Err(RunsFailed(format!(
            "{note}; sweep.csv's `error` column has every reason (--allow-failures exits 0)"
        ))
        .into()),
        None => Ok(()),
    }
}

/// An error about a file of the staged sweep names it where the sweep was to be written (the
/// staging directory is removed on error).
fn at_dest(
    e: crate::error::SimError,
    staged: &std::path::Path,
    dest: &std::path::Path,
) -> crate::error::SimError {
    use crate::error::SimError;
    let rebase = |p: PathBuf| match p.strip_prefix(staged) {
        Ok(rel) => dest.join(rel),
        Err(_) => p,
    };
    match e {
        SimError::Io { path, msg } => SimError::Io {
            path: rebase(path),
            msg,
        },
        SimError::Input {
            path,
            line,
            field,
            msg,
        } => SimError::Input {
            path: rebase(path),
            line,
            field,
            msg,
        },
        other => other,
    }
}

/// Each input's size and modification time (`None` where it cannot be read).
type Stamps = Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)>;

/// The [`Stamps`] of the sweep's inputs before its runs read them: every run opens its trace,
/// lengths and profile files itself.
fn input_stamps(inputs: &[PathBuf]) -> Stamps {
    inputs.iter().map(|p| (p.clone(), stamp(p))).collect()
}

/// The size and modification time of `p` (`None` where it cannot be read).
fn stamp(p: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// An input replaced or edited while the runs read it would mix two versions in one sweep.csv:
/// the sweep then writes nothing.
fn check_inputs_unchanged(before: &Stamps) -> anyhow::Result<()> {
    match before.iter().find(|(p, was)| stamp(p) != *was) {
        Some((p, _)) => Err(crate::error::SimError::Io {
            path: p.clone(),
            msg: "changed while the sweep ran (its size or modification time): its runs may have read different versions, so nothing was written; rerun the sweep".into(),
        }
        .into()),
        None => Ok(()),
    }
}

/// The sweep axes given by `--policies`, `--rates` and `--seeds`, each checked (names known,
/// rates finite and > 0, no empty entry).
fn flag_axes(a: &SweepArgs) -> anyhow::Result<Vec<crate::sweep::FlagAxis>> {
    use crate::sweep::FlagAxis;
    let mut axes = Vec::new();
    if !a.policies.is_empty() {
        super::check_policy_list(&a.policies)?;
        axes.push(FlagAxis {
            flag: "--policies",
            axis: "policy",
            values: a.policies.iter().map(|p| p.clone().into()).collect(),
        });
    }
    if !a.rates.is_empty() {
        super::check_rate_list(&a.rates)?;
        axes.push(FlagAxis {
            flag: "--rates",
            axis: "rate",
            values: a.rates.iter().map(|&r| r.into()).collect(),
        });
    }
    if !a.seeds.is_empty() {
        axes.push(FlagAxis {
            flag: "--seeds",
            axis: "seed",
            // `seed_parser` keeps every seed within a scenario seed's range (0..=i64::MAX).
            values: a.seeds.iter().map(|&s| (s as i64).into()).collect(),
        });
    }
    Ok(axes)
}

/// How many runs failed and the first distinct reasons (at most 3), one line; `None` when every
/// run finished.
fn failure_note(runs: &[SweepRun], outcomes: &Outcomes, failed: usize) -> Option<String> {
    if failed == 0 {
        return None;
    }
    // One example per kind of failure (the text before the first `:`, e.g. "overloaded").
    let mut kinds: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (r, o) in runs.iter().zip(outcomes) {
        if let Err(e) = o {
            let e = crate::error::one_line(e);
            let kind = e.split(':').next().unwrap_or_default().to_string();
            if reasons.len() < 3 && !kinds.contains(&kind) {
                let point = crate::sweep::describe(&r.axes);
                reasons.push(format!("run {} ({point}): {e}", r.index));
                kinds.push(kind);
            }
        }
    }
    Some(format!(
        "{failed} of {} runs failed; first of each kind: {}",
        runs.len(),
        reasons.join("; ")
    ))
}

/// An empty trace or an absolute-time trace file fails every run that reads it: an error up
/// front (each distinct file, row limit and time limit read once).
fn check_trace_files(runs: &[SweepRun]) -> anyhow::Result<()> {
    let mut checked = std::collections::BTreeSet::new();
    for r in runs {
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
    Ok(())
}

/// The scenario's warnings (valid but doubtful settings, as `run` prints them), each once over all
/// runs of the sweep; every run's `summary.json` also lists its own.
fn print_scenario_warnings(
    err: &mut dyn Write,
    scenario: &std::path::Path,
    runs: &[SweepRun],
) -> std::io::Result<()> {
    let mut seen: Vec<&String> = Vec::new();
    for w in runs.iter().flat_map(|r| r.resolved.warnings.iter()) {
        if !seen.contains(&w) {
            seen.push(w);
            writeln!(err, "warning: {}: {w}", scenario.display())?;
        }
    }
    Ok(())
}

/// The warning for the runs judged unstable (they did not keep up with their arrivals): how
/// many, and the first few by label.
fn unstable_note(runs: &[SweepRun], outcomes: &Outcomes) -> Option<String> {
    let unstable: Vec<String> = runs
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| matches!(o, Ok(s) if s.stability.is_some_and(|st| !st.stable)))
        .map(|(r, _)| r.dir_name())
        .collect();
    if unstable.is_empty() {
        return None;
    }
    let on_drain = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(s) if s.judged_on_drain()))
        .count();
    let caveat = match on_drain {
        0 => String::new(),
        n => format!(
            " ({n} of them failed only the throughput check with arrivals spanning under {} mean JCTs: judged mostly on their own drain, so run more requests to confirm)",
            crate::metrics::stability::SHORT_TRACE_JCTS
        ),
    };
    const SHOWN: usize = 5;
    let more = match unstable.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(format!(
        "{} of {} runs did not keep up with their arrivals (sweep.csv `stable` = false; their latencies include a queue that grew for as long as the trace lasted): {}{more}{caveat}",
        unstable.len(),
        runs.len(),
        unstable[..unstable.len().min(SHOWN)].join(", ")
    ))
}

/// Each finished run's outputs into `runs/<run>/` of the staged sweep directory (`requests.csv`
/// unless `no_requests_csv`); returns every run's summary or error message, and how many failed.
fn write_runs(
    dir: &crate::output::StagedDir,
    runs: &[SweepRun],
    results: Vec<std::result::Result<crate::run::RunOutput, String>>,
    no_requests_csv: bool,
) -> anyhow::Result<(Outcomes, usize)> {
    let mut outcomes = Vec::with_capacity(runs.len());
    let mut failed = 0;
    for (r, res) in runs.iter().zip(results) {
        match res {
            Ok(o) => {
                let sub = format!("runs/{}", r.dir_name());
                if !no_requests_csv {
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
    Ok((outcomes, failed))
}

/// Each run's output or error message, and whether Ctrl-C stopped any run (cut short, or
/// skipped: `None`).
fn flatten_results(
    results: Vec<Option<crate::error::Result<(crate::run::RunOutput, bool)>>>,
) -> (
    Vec<std::result::Result<crate::run::RunOutput, String>>,
    bool,
) {
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
    (results, stopped)
}

/// `--cdf-rate` must be the rate of some run (checked before any run starts).
fn check_cdf_rate(cdf_rate: Option<f64>, runs: &[SweepRun]) -> anyhow::Result<()> {
    use crate::error::num;
    let Some(want) = cdf_rate else { return Ok(()) };
    let mut rates: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.resolved.scenario.trace.rate_per_s)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    if rates
        .iter()
        .any(|r| (r - want).abs() <= 1e-9 * r.abs().max(1.0))
    {
        return Ok(());
    }
    // At most 10 rates named, each with 6 significant digits (a rate such as 1e-300 would
    // otherwise print 300 digits).
    let mut list: Vec<String> = rates.iter().take(10).map(|&r| num(r)).collect();
    if rates.len() > 10 {
        list.push(format!("… {} in all", rates.len()));
    }
    Err(crate::error::SimError::config(format!(
        "--cdf-rate {} is not a rate of this sweep (its rates: {})",
        num(want),
        list.join(", ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    /// A trace replaced while a sweep's runs read it mixed two traces in one sweep.csv, exit 0
    /// (adversarial round 7, case 15); an input whose size or time changed now fails the sweep.
    #[test]
    fn an_input_changed_during_the_runs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("len.csv");
        std::fs::write(&trace, "input_tokens,output_tokens\n4,2\n").unwrap();
        let stamps = super::input_stamps(std::slice::from_ref(&trace));
        assert!(super::check_inputs_unchanged(&stamps).is_ok());
        std::fs::write(&trace, "input_tokens,output_tokens\n1000,900\n").unwrap();
        let e = super::check_inputs_unchanged(&stamps)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("len.csv") && e.contains("changed while the sweep ran"),
            "{e}"
        );
    }
}
