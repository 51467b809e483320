//! `servesim fidelity`: simulate, execute live, compare — per policy and rate — into one table.

use std::io::Write;
use std::path::PathBuf;

use super::Interrupted;
use super::run::{Device, timing_json};
use crate::error::SimError;
use crate::live::fidelity::{Cell, fidelity_csv, fidelity_markdown};
use crate::live::{ExecutorKind, LiveOptions};
use crate::scenario::{CostSpec, Overrides, Resolved, load};

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct FidelityArgs {
    /// Scenario TOML file: its cost model (a profile calibrated on this machine) predicts, the
    /// compute backend executes.
    pub scenario: PathBuf,
    /// Comma-separated policies (default: the scenario's).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub policies: Vec<String>,
    /// Comma-separated arrival rates in requests/s (default: the scenario's).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "REQ_PER_S",
        allow_hyphen_values = true
    )]
    pub rates: Vec<f64>,
    /// Number of requests of every run.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// Seed of every run.
    #[arg(long, value_parser = super::seed_parser())]
    pub seed: Option<u64>,
    /// The compute backend that executes the live runs.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// CPU threads of the compute backend (use the profile's; recorded in summary.json).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: Option<u32>,
    /// Output directory (default results/<scenario name>/fidelity). An existing one is replaced
    /// only if servesim wrote it (or it is empty), unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace --out even when it exists and was not written by servesim.
    #[arg(long)]
    pub force: bool,
    /// No progress on stderr and no table on stdout.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Every (policy, rate) of the command, resolved before anything runs.
fn cells(a: &FidelityArgs) -> anyhow::Result<Vec<(String, f64, Resolved)>> {
    super::check_policy_list(&a.policies)?;
    super::check_rate_list(&a.rates)?;
    // Loaded once per resolution (resolving consumes it).
    let base = load(&a.scenario)?.resolve(&Overrides::default())?;
    let policies = if a.policies.is_empty() {
        vec![base.scenario.scheduler.policy.clone()]
    } else {
        a.policies.clone()
    };
    let rates = if a.rates.is_empty() {
        vec![base.scenario.trace.rate_per_s.ok_or_else(|| {
            SimError::config("the scenario's trace has no rate_per_s: give --rates")
        })?]
    } else {
        a.rates.clone()
    };
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].contains(p) {
            return Err(SimError::config(format!("--policies lists `{p}` twice")).into());
        }
    }
    let mut out = Vec::new();
    for p in &policies {
        for &r in &rates {
            let o = Overrides {
                policy: Some(p.clone()),
                rate_per_s: Some(r),
                seed: a.seed,
                num_requests: a.num_requests,
                ..Default::default()
            };
            out.push((p.clone(), r, load(&a.scenario)?.resolve(&o)?));
        }
    }
    Ok(out)
}

fn title(a: &FidelityArgs, first: &Resolved, device: ExecutorKind) -> String {
    let s = &first.scenario;
    let cost = match &s.cost {
        CostSpec::Profile { path, .. } => format!("profile `{}`", path.display()),
        _ => "of the scenario (not a calibrated profile)".to_string(),
    };
    format!(
        "# Fidelity of `{}`: {} on {} (`--device {}`, {} threads), seed {}\n\nSimulated with the cost model {cost}; each live run executes the same trace.",
        s.name,
        s.model,
        s.gpu,
        device.name(),
        a.threads
            .map_or_else(|| "default".to_string(), |t| t.to_string()),
        s.seed,
    )
}

/// Simulate, execute live and compare one policy at one rate, into `runs/<cell>/` of `dir`;
/// `None` when Ctrl-C stopped a run (its outputs are kept, marked partial).
fn run_cell(
    dir: &crate::output::StagedDir,
    policy: &str,
    rate: f64,
    r: &Resolved,
    opts: &LiveOptions,
    progress: Option<crate::run::Progress>,
) -> anyhow::Result<Option<Cell>> {
    let sub = format!("runs/{}", Cell::dir_name(policy, rate));
    let started = std::time::Instant::now(); // allow-wall-clock: timing.json only
    let (sim, cut) = crate::run::run_interruptible(r, None, true)?;
    let config = crate::run::config_json(r);
    let timing = timing_json(&sim, started.elapsed().as_secs_f64());
    let sim_sub = format!("{sub}/sim");
    crate::output::write_run_files(dir, &sim_sub, &sim, &config, &timing, cut, true)?;
    if cut {
        return Ok(None);
    }
    let live = crate::live::run_live_progress(r, opts, progress)?;
    crate::live::write_live_files(dir, &format!("{sub}/live"), &live, &config, opts)?;
    if live.partial {
        return Ok(None);
    }
    let (sim_dir, live_dir) = (
        dir.path().join(&sub).join("sim"),
        dir.path().join(&sub).join("live"),
    );
    let rows = crate::live::compare::compare(&sim_dir, &live_dir)?;
    let csv = crate::live::compare::compare_csv(&rows);
    dir.write(&format!("{sub}/compare.csv"), csv.as_bytes())?;
    Ok(Some(Cell {
        policy: policy.to_string(),
        rate_per_s: rate,
        requests: live.run.summary.requests,
        rows,
    }))
}

/// The live run of one cell moves the message of the bar of cells: `CELL: N/TOTAL requests live`
/// (`None` when the bar is hidden).
fn cell_progress(
    pb: &indicatif::ProgressBar,
    cell: String,
    r: &Resolved,
) -> Option<crate::run::Progress> {
    if pb.is_hidden() {
        return None;
    }
    let total = crate::run::count_requests(r).map_or_else(String::new, |n| format!("/{n}"));
    let pb = pb.clone();
    Some(crate::run::Progress::every(1, move |done, _| {
        pb.set_message(format!("{cell}: {done}{total} requests live"))
    }))
}

pub(super) fn fidelity_cmd(a: FidelityArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let device = match a.device {
        Device::Mock => ExecutorKind::Mock,
        Device::Cpu => ExecutorKind::Cpu,
        Device::Cuda => ExecutorKind::Cuda,
    };
    crate::live::backend::check_device(device)?;
    super::check_num_requests(a.num_requests)?;
    let cells = cells(&a)?;
    let first = &cells[0].2;
    let dest = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("results")
            .join(&first.scenario.name)
            .join("fidelity")
    });
    let inputs: Vec<PathBuf> = cells.iter().flat_map(|c| c.2.input_paths()).collect();
    let dir = crate::output::StagedDir::new(&dest, &crate::output::Replace::new(a.force, inputs))?;
    let opts = LiveOptions {
        executor: device,
        time_scale: 1.0,
        threads: a.threads,
        stop: Default::default(),
    };
    let _ctrl_c = crate::interrupt::CtrlC::install();
    let pb = super::progress_bar(Some(cells.len() as u64), "runs", a.quiet);
    let mut done = Vec::new();
    let mut stopped = false;
    for (policy, rate, r) in &cells {
        let cell = format!("{policy} at {rate} req/s");
        pb.set_message(cell.clone());
        match run_cell(&dir, policy, *rate, r, &opts, cell_progress(&pb, cell, r))? {
            Some(cell) => done.push(cell),
            None => {
                stopped = true;
                break;
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if stopped {
        let finished = format!("of {} policy/rate cells", cells.len());
        let n = done.len() as u64;
        super::run::check_partial_write("the fidelity runs", n, &finished, &dest)?;
    }
    let md = fidelity_markdown(&title(&a, first, device), &done);
    dir.write("fidelity.csv", fidelity_csv(&done).as_bytes())?;
    dir.write("fidelity.md", md.as_bytes())?;
    if stopped {
        dir.write(
            "PARTIAL",
            format!(
                "stopped after {} of {} policy/rate cells; fidelity.csv holds the finished ones\n",
                done.len(),
                cells.len()
            )
            .as_bytes(),
        )?;
    }
    let path = dir.commit()?;
    if stopped {
        return Err(Interrupted(format!(
            "{} stopped the fidelity runs after {} of {} cells; partial results in {} (PARTIAL)",
            crate::interrupt::signal_name(),
            done.len(),
            cells.len(),
            path.display()
        ))
        .into());
    }
    if !a.quiet {
        write!(out, "{md}")?;
        writeln!(out, "outputs in {}", path.display())?;
    }
    Ok(())
}
