//! `servesim capacity`: per policy, the highest arrival rate meeting a latency or goodput target
//! with every run stable (see [`crate::capacity`] and [`crate::metrics::stability`]).

use std::io::Write;
use std::path::PathBuf;

use super::{Interrupted, check_num_requests, thread_count};
use crate::capacity::{Bracket, Capacity, Probe, Target};
use crate::error::SimError;
use crate::scenario::{Loaded, Overrides, load};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["slo", "goodput"])))]
#[command(allow_negative_numbers = true)]
pub struct CapacityArgs {
    /// Scenario TOML file (its [sweep] table is ignored).
    pub scenario: PathBuf,
    /// A latency target, METRIC[:STAT]=SECONDS, e.g. per_token_s=0.3 (FastServe's SLO) or
    /// jct_s:p99=30. Give this or --goodput.
    #[arg(long, value_name = "METRIC[:STAT]=SECONDS")]
    pub slo: Option<String>,
    /// A goodput target (FastServe Fig. 13): the highest rate at which at least MIN (default
    /// 0.95) of the requests have TTFT <= ttft_s and TPOT <= tpot_s, e.g.
    /// --goodput ttft_s=3.1,tpot_s=0.3. TPOT = (finish - first token) / (output tokens - 1), the
    /// vLLM benchmark convention; one-token requests are judged on TTFT alone. A missing ttft_s
    /// or tpot_s is taken from the scenario's [slo] table (so --goodput min=0.95 uses it).
    #[arg(long, value_name = "ttft_s=S,tpot_s=S[,min=F]")]
    pub goodput: Option<String>,
    /// Comma-separated policies (default: the scenario's).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Comma-separated seeds averaged at each rate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,2",
        allow_hyphen_values = true,
        value_parser = super::seed_parser()
    )]
    pub seeds: Vec<u64>,
    /// First rate probed (default: the scenario's rate).
    #[arg(long)]
    pub start_rate: Option<f64>,
    /// Stop when the bracket is within this relative width (from 1e-4 to below 1).
    #[arg(long, default_value_t = 0.01)]
    pub precision: f64,
    /// Override the number of requests (≥ 20: fewer cannot tell whether a probe kept up).
    #[arg(long)]
    pub num_requests: Option<u64>,
    /// Write capacity.csv and the bar plot capacity.png / capacity.svg into DIR (atomically). An
    /// existing DIR is replaced only if servesim wrote it (or it is empty), unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace --out even when it exists and was not written by servesim (never a directory
    /// holding an input or the current directory).
    #[arg(long)]
    pub force: bool,
    /// Parallel probes (default, or 0: number of CPUs; at most the number of CPUs): the policies are searched
    /// in parallel, and threads left over probe the rates the bisection may need next. The
    /// results do not depend on it.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Run every seed of every probe to its end, even once the probe's miss is certain (the
    /// verdicts are the same; the figures of missed probes are then the statistics, not bounds).
    #[arg(long)]
    pub no_early_stop: bool,
    /// No progress lines on stderr (one per probed rate, written only when stderr is a
    /// terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `--start-rate`, else the scenario's rate, else 1: within the rates a sweep takes.
fn start_rate(a: &CapacityArgs, loaded: &Loaded) -> anyhow::Result<f64> {
    use crate::error::num;
    use crate::sweep::{MAX_RATE_PER_S, MIN_RATE_PER_S};
    let start = a
        .start_rate
        .or(loaded.scenario.trace.rate_per_s)
        .unwrap_or(1.0);
    if !(MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&start) {
        return Err(SimError::config(format!(
            "--start-rate (or the scenario's rate_per_s) must be a number of requests/s from {} to {}, got {}",
            num(MIN_RATE_PER_S),
            num(MAX_RATE_PER_S),
            num(start)
        ))
        .into());
    }
    Ok(start)
}

pub fn capacity_cmd(a: CapacityArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_flags(&a)?;
    let loaded = load(&a.scenario)?;
    let target = parse_target(&a, &loaded)?;
    let policies = chosen_policies(&a, &loaded)?;
    let inputs = validate_policies(&a, &loaded, &policies)?;
    let start = start_rate(&a, &loaded)?;
    // Ctrl-C stops the probe under way and skips the rest (each probe checks it before its
    // runs); then nothing is written.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    // Claimed before the probes: a refused or concurrently written --out fails at once.
    let staged = match &a.out {
        Some(dir) => Some(crate::output::StagedDir::new(
            dir,
            &crate::output::Replace::new(a.force, inputs),
        )?),
        None => None,
    };
    // Probes are CPU-bound and each holds a run in memory: more threads than CPUs only add
    // speculative probes that compete for them (--jobs 1024 on 2 CPUs: 0.3 s → 40 s, 0.6 GB).
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = thread_count(a.jobs, cpus);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    // Threads left over by the policies probe rates ahead of the search.
    let width = threads.div_ceil(policies.len()).max(1);
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    // The policies' searches run in parallel; each is sequential and deterministic, so the
    // results do not depend on --jobs.
    let show = super::show_progress(a.quiet);
    let found: Vec<Option<Capacity<Probe>>> = pool.install(|| {
        crate::interrupt::par_map_until(&policies, &crate::interrupt::interrupted, &|p| {
            search_policy(&pool, width, (&a, &loaded, &target), p, start, show)
        })
    });
    if crate::interrupt::interrupted() {
        return Err(Interrupted(format!(
            "{} stopped `capacity` during its probes; nothing was written",
            crate::interrupt::signal_name()
        ))
        .into());
    }
    let mut found: Vec<Capacity<Probe>> = found
        .into_iter()
        .map(|c| c.expect("every search ran when not interrupted"))
        .collect();
    settle_failures(&policies, &mut found)?;
    // Printed once the searches succeeded: a failed capacity prints its error alone.
    write_header(out, &target, &a.seeds)?;
    let mut first: Option<f64> = None;
    let mut bars = Vec::new();
    let mut searches = Vec::new();
    for (p, c) in policies.iter().zip(found) {
        writeln!(out, "{}", policy_line(p, &c, &target, &mut first))?;
        let (rejected, _) = unstable_probes(&c, &target);
        csv += &csv_row(p, &c, &target);
        csv.push('\n');
        bars.push(crate::plot::CapacityBar {
            policy: p.clone(),
            rate_per_s: c.rate_per_s,
            bracket: c.bracket,
            unstable_probes: rejected,
        });
        searches.push((p.clone(), c));
    }
    let written = match staged {
        Some(staged) => {
            let setup = plot_setup(&loaded, a.num_requests, &a.seeds);
            let dir = write_outputs(
                staged, &csv, &target, &a.seeds, &searches, &loaded, &bars, &setup, out,
            )?;
            dir.display().to_string()
        }
        None => "the table above".to_string(),
    };
    super::signal_after_outputs("`capacity`", &written)
}

/// A probe on a search's path whose run failed for a reason other than overload measured
/// nothing: counting it as a missed target would report a capacity no run supports. When every
/// such probe lies below every measured one of a search that never met the target (a rate too
/// low for `[limits] max_sim_s`), the capacity is below the lowest rate measured, which becomes
/// the bound; any other failed probe (in policy, then probe order) is the error, and nothing is
/// written.
fn settle_failures(policies: &[String], found: &mut [Capacity<Probe>]) -> anyhow::Result<()> {
    for (p, c) in policies.iter().zip(found.iter_mut()) {
        let Some((rate, why)) = c
            .probes
            .iter()
            .find_map(|(r, pr)| pr.failure.as_ref().map(|w| (*r, w)))
        else {
            continue;
        };
        let highest_failed = c
            .probes
            .iter()
            .filter(|(_, pr)| pr.failure.is_some())
            .map(|(r, _)| *r)
            .fold(f64::NEG_INFINITY, f64::max);
        let lowest_measured = c
            .probes
            .iter()
            .filter(|(_, pr)| pr.failure.is_none())
            .map(|(r, _)| *r)
            .fold(f64::INFINITY, f64::min);
        if c.bracket == Bracket::Below
            && lowest_measured.is_finite()
            && highest_failed < lowest_measured
        {
            c.limit_rate_per_s = lowest_measured;
            continue;
        }
        return Err(SimError::config(format!(
            "the probe of {p} at {} req/s failed ({why}); a failed run is not a missed target: choose another --start-rate, or fix the scenario",
            crate::error::num(rate)
        ))
        .into());
    }
    Ok(())
}

/// The search of one policy, a progress line per probe on stderr when `show`. Up to `width`
/// rates are probed at once on `pool` ([`crate::capacity::search_speculative`]: the result does
/// not depend on `width`).
fn search_policy(
    pool: &rayon::ThreadPool,
    width: usize,
    (a, loaded, target): (&CapacityArgs, &Loaded, &Target),
    p: &str,
    start: f64,
    show: bool,
) -> Capacity<Probe> {
    use rayon::prelude::*;
    let mut eval_batch = |rates: &[f64]| -> Vec<Probe> {
        pool.install(|| {
            rates
                .par_iter()
                .map(|&r| probe(a, loaded, p, target, r))
                .collect()
        })
    };
    let mut on_probe = |rate: f64, pr: &Probe| {
        if show && !crate::interrupt::interrupted() {
            eprintln!("{}", probe_line(p, rate, pr, target));
        }
    };
    let meets = |pr: &Probe| pr.miss_reason(target).is_none();
    crate::capacity::search_speculative(
        start,
        &meets,
        a.precision,
        40,
        width,
        &mut eval_batch,
        &mut on_probe,
    )
}

/// The finest `--precision`: after at most `MAX_BRACKET_STEPS + 1` bracketing probes, the
/// bisection halves a bracket of relative width 1 to 2⁻¹⁴ < 10⁻⁴ in 14 more, within the 40-probe
/// budget; a finer target would end on the budget with the bracket still wider than asked.
pub const MIN_PRECISION: f64 = 1e-4;

/// The checks on the flags alone, before the scenario is read.
fn check_flags(a: &CapacityArgs) -> anyhow::Result<()> {
    use crate::error::num;
    if a.seeds.is_empty() {
        return Err(SimError::config("--seeds needs at least one seed").into());
    }
    let mut seen = std::collections::HashSet::with_capacity(a.seeds.len());
    if let Some((i, s)) = a.seeds.iter().enumerate().find(|(_, s)| !seen.insert(**s)) {
        return Err(SimError::config(format!(
            "--seeds lists {s} twice (position {}); a probe would average the same run twice",
            i + 1
        ))
        .into());
    }
    if !(a.precision >= MIN_PRECISION && a.precision < 1.0) {
        return Err(SimError::config(format!(
            "--precision must be a relative width from {MIN_PRECISION:e} (what the probe budget can always reach) to below 1, e.g. 0.01, got {}",
            num(a.precision)
        ))
        .into());
    }
    if let Some(r) = a.start_rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(SimError::config(format!(
            "--start-rate must be a finite number of requests/s > 0, got {}",
            num(r)
        ))
        .into());
    }
    check_num_requests(a.num_requests)?;
    let least = crate::metrics::stability::MIN_JUDGED_REQUESTS as u64;
    if let Some(n) = a.num_requests.filter(|&n| n < least) {
        return Err(SimError::config(format!(
            "--num-requests {n}: capacity judges whether each probe kept up, which needs {least} requests or more"
        ))
        .into());
    }
    super::check_policy_list(&a.policies)?;
    Ok(())
}

/// The target `--slo` or `--goodput` gives (the scenario's `[slo]` fills in a goodput's gaps).
fn parse_target(a: &CapacityArgs, loaded: &Loaded) -> anyhow::Result<Target> {
    use crate::capacity::{GoodputTarget, Slo};
    Ok(match (&a.slo, &a.goodput) {
        (Some(s), _) => Target::Latency(Slo::parse(s)?),
        (None, Some(g)) => {
            let scenario_slo = loaded.scenario.slo.map(|s| (s.ttft_s, s.tpot_s));
            Target::Goodput(GoodputTarget::parse(g, scenario_slo)?)
        }
        (None, None) => return Err(SimError::config("give --slo or --goodput").into()),
    })
}

/// `--policies` (default: the scenario's), each once.
fn chosen_policies(a: &CapacityArgs, loaded: &Loaded) -> anyhow::Result<Vec<String>> {
    let policies = if a.policies.is_empty() {
        vec![loaded.scenario.scheduler.policy.clone()]
    } else {
        a.policies.clone()
    };
    if let Some((i, p)) = policies
        .iter()
        .enumerate()
        .find(|(i, p)| policies[..*i].contains(p))
    {
        return Err(SimError::config(format!(
            "--policies lists `{}` twice (position {}); each policy is searched once",
            crate::error::echo(p),
            i + 1
        ))
        .into());
    }
    Ok(policies)
}

/// Resolve the scenario under every policy up front; the files the runs read.
fn validate_policies(
    a: &CapacityArgs,
    loaded: &Loaded,
    policies: &[String],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut inputs = Vec::new();
    for p in policies {
        let resolved = loaded.clone().resolve(&Overrides {
            policy: Some(p.clone()),
            num_requests: a.num_requests,
            ..Default::default()
        })?;
        inputs.extend(resolved.input_paths());
    }
    Ok(inputs)
}

/// The lines above the table: the target, the seeds, the stability rule and the column names.
fn write_header(out: &mut dyn Write, target: &Target, seeds: &[u64]) -> anyhow::Result<()> {
    writeln!(out, "SLO: {}, seeds {:?}", target.describe(), seeds)?;
    writeln!(
        out,
        "a rate counts only if every seed's run finished and is stable: {}",
        crate::metrics::stability::RULE
    )?;
    writeln!(
        out,
        "{:<18}{:>16}{:>10}",
        "policy", "capacity req/s", "probes"
    )?;
    Ok(())
}

/// One probe of policy `p` at `rate`: every seed run in turn, their mean figure and stability
/// checks; an empty probe once interrupted. Unless `--no-early-stop`, a run ends, and the seeds
/// after it are skipped, once the probe's miss is certain ([`crate::capacity::EarlyStop`]).
fn probe(a: &CapacityArgs, loaded: &Loaded, p: &str, target: &Target, rate: f64) -> Probe {
    use crate::capacity::{RunCheck, StoppedEarly, certain_miss};
    let mut values: Vec<f64> = Vec::new();
    let mut runs = Vec::new();
    let mut failure = None;
    for &seed in &a.seeds {
        if crate::interrupt::interrupted() {
            return Probe {
                value: f64::NAN,
                runs: Vec::new(),
                failure: None,
            };
        }
        if !a.no_early_stop && certain_miss(target, &values, a.seeds.len()) {
            values.push(crate::capacity::unrun_bound(target));
            runs.push(RunCheck {
                seed,
                failed: false,
                stability: None,
                stopped_early: Some(StoppedEarly::Skipped),
                completed_requests: None,
                short_trace: false,
            });
            continue;
        }
        let (value, check, why) = probe_run(a, loaded, p, target, rate, seed, &values);
        values.push(value);
        runs.push(check);
        if let Some(why) = why {
            failure.get_or_insert(format!("seed {seed}: {why}"));
        }
    }
    Probe {
        value: values.iter().sum::<f64>() / values.len() as f64,
        runs,
        failure,
    }
}

/// One seed's run of a probe (`earlier`: the figures of the probe's seeds before it): its figure
/// (a bound when it was ended early), its check, and why it failed when that was not overload
/// (a failed run that the engine's overload check ended is a missed target; any other failure
/// means the probe measured nothing).
fn probe_run(
    a: &CapacityArgs,
    loaded: &Loaded,
    p: &str,
    target: &Target,
    rate: f64,
    seed: u64,
    earlier: &[f64],
) -> (f64, crate::capacity::RunCheck, Option<String>) {
    use crate::capacity::{EarlyStop, RunCheck, StoppedEarly};
    let r = loaded.clone().resolve(&Overrides {
        policy: Some(p.to_owned()),
        rate_per_s: Some(rate),
        seed: Some(seed),
        num_requests: a.num_requests,
        ..Default::default()
    });
    let total = r.as_ref().ok().and_then(crate::run::expected_requests);
    let (run, stopped) = match (r, total) {
        (Ok(r), Some(n)) if !a.no_early_stop => {
            let mut watch = EarlyStop::new(target, earlier, a.seeds.len(), n as usize);
            let run = crate::run::run_watched(&r, &mut watch);
            let bound = watch.bound();
            match run {
                Ok((o, _, true)) => (Ok(o), Some(bound)),
                Ok((o, _, false)) => (Ok(o), None),
                Err(e) => (Err(e), None),
            }
        }
        (r, _) => (
            r.and_then(|r| crate::run::run_interruptible(&r, None, true))
                .map(|(o, _)| o),
            None,
        ),
    };
    let why = match &run {
        Err(e) if !is_overload(e) => Some(crate::error::one_line(&e.to_string())),
        _ => None,
    };
    let run = run.ok();
    // A statistic no request has (TPOT of one-token outputs) is not a missed target either.
    let why = why.or_else(|| match (target, &run) {
        (Target::Latency(slo), Some(o))
            if !o.completions.is_empty() && slo.dist(&o.summary).is_none() =>
        {
            Some(format!(
                "none of its {} requests has a `{}` (TPOT needs at least two output tokens)",
                o.completions.len(),
                slo.metric
            ))
        }
        _ => None,
    });
    let why = why.or_else(|| unjudged(run.as_ref().filter(|_| stopped.is_none())));
    if let (Some(bound), Some(o)) = (stopped, &run) {
        let check = RunCheck {
            seed,
            failed: false,
            stability: None,
            stopped_early: Some(StoppedEarly::Target),
            completed_requests: Some(o.completions.len() as u64),
            short_trace: false,
        };
        return (bound, check, None);
    }
    let check = RunCheck {
        seed,
        failed: run.is_none(),
        stability: run.as_ref().and_then(|o| o.summary.stability),
        stopped_early: None,
        completed_requests: None,
        short_trace: run.as_ref().is_some_and(|o| o.summary.short_trace()),
    };
    (target.measure(run.as_ref()), check, why)
}

/// Why a run that finished unjudged (too few requests, or one arrival instant) cannot count: it
/// would count as stable at any rate, and the search would never close its bracket.
fn unjudged(run: Option<&crate::run::RunOutput>) -> Option<String> {
    let o = run.filter(|o| o.summary.stability.is_none())?;
    Some(format!(
        "its {} request(s) are too few to judge whether it kept up (that needs {} requests or more, over two arrival instants or more); give a longer trace or --num-requests",
        o.completions.len(),
        crate::metrics::stability::MIN_JUDGED_REQUESTS
    ))
}

/// A run ended by the engine's overload guards (`[limits] max_queue` or the overload detector),
/// whose messages start with `overloaded`.
fn is_overload(e: &SimError) -> bool {
    matches!(e, SimError::Limit(m) if m.starts_with("overloaded"))
}

/// The progress line of one probe: policy, rate, figure, whether it meets the target, and
/// whether every seed's run finished and is stable (or how it was stopped early).
fn probe_line(p: &str, rate: f64, pr: &Probe, target: &Target) -> String {
    if pr.stopped_early() {
        let bound = match target {
            Target::Latency(_) => ">=",
            Target::Goodput(_) => "<=",
        };
        return format!(
            "  probe {p} at {} req/s: {} {bound} {}, misses the target for certain, stopped early ({})",
            crate::error::num(rate),
            figure_name(target),
            crate::error::num(pr.value),
            stopped_note(pr)
        );
    }
    let failed = pr.runs.iter().filter(|r| r.failed).count();
    let stable = match (pr.stable(), failed) {
        (true, _) => "stable".to_string(),
        (false, 0) => "unstable".to_string(),
        (false, n) => format!("unstable ({n} run(s) failed)"),
    };
    let meets = if target.meets(pr.value) {
        "meets"
    } else {
        "misses"
    };
    format!(
        "  probe {p} at {} req/s: {} = {}, {meets} the target, {stable}",
        crate::error::num(rate),
        figure_name(target),
        crate::error::num(pr.value)
    )
}

/// The probed figure's name, e.g. `mean(per_token_s)` or `goodput`.
fn figure_name(target: &Target) -> String {
    match target {
        Target::Latency(s) => format!("{}({})", s.stat, s.metric),
        Target::Goodput(_) => "goodput".to_string(),
    }
}

/// How a probe was stopped early, e.g. `seed 0 ended after 812 requests, seeds 1, 2 skipped`.
fn stopped_note(pr: &Probe) -> String {
    use crate::capacity::StoppedEarly;
    let mut parts = Vec::new();
    for r in &pr.runs {
        match (r.stopped_early, r.completed_requests) {
            (Some(StoppedEarly::Target), Some(n)) => {
                parts.push(format!("seed {} ended after {n} requests", r.seed))
            }
            (Some(StoppedEarly::Skipped), _) => parts.push(format!("seed {} skipped", r.seed)),
            _ => {}
        }
    }
    parts.join(", ")
}

/// One policy's line of the table (no newline): its capacity, probes, ratio to the first
/// policy's (`first` is set by the first line), bracket note and unstable probes.
fn policy_line(p: &str, c: &Capacity<Probe>, target: &Target, first: &mut Option<f64>) -> String {
    use crate::error::num;
    let ratio = match *first {
        None => {
            *first = Some(c.rate_per_s);
            String::new()
        }
        Some(b) if b > 0.0 => format!("  ({:.2}x the first)", c.rate_per_s / b),
        Some(_) => String::new(),
    };
    let (shown, note) = match c.bracket {
        Bracket::Closed => (format!("{:.4}", c.rate_per_s), String::new()),
        Bracket::Below => (
            format!("< {}", num(c.limit_rate_per_s)),
            match c.probes.iter().find_map(|(_, pr)| pr.failure.as_ref()) {
                None => format!(
                    "  below the lowest probed rate {} req/s (every probe missed the target)",
                    num(c.limit_rate_per_s)
                ),
                Some(why) => format!(
                    "  below the lowest rate measured, {} req/s (every measured probe missed the target; lower probes failed: {why})",
                    num(c.limit_rate_per_s)
                ),
            },
        ),
        Bracket::Above => (
            format!("> {}", num(c.limit_rate_per_s)),
            format!(
                "  above the highest probed rate {} req/s (the bracket never closed)",
                num(c.limit_rate_per_s)
            ),
        ),
    };
    let (rejected, short) = unstable_probes(c, target);
    let rejected_note = match (rejected, short) {
        (0, _) => String::new(),
        (n, 0) => format!("  ({n} probe(s) met the target but were unstable)"),
        (n, m) => format!(
            "  ({n} probe(s) met the target but were unstable, {m} of them on arrivals spanning under {} mean JCTs, which may be the ramp-up rather than an overload: rerun with a larger --num-requests)",
            crate::metrics::stability::SHORT_TRACE_JCTS
        ),
    };
    format!(
        "{:<18}{:>16}{:>10}{}{}{}",
        p,
        shown,
        c.probes.len(),
        ratio,
        note,
        rejected_note
    )
}

/// The setup line under the capacity plot's title (model, GPUs, trace, requests, seeds).
fn plot_setup(loaded: &Loaded, num_requests: Option<u64>, seeds: &[u64]) -> String {
    let mut scenario = loaded.scenario.clone();
    if num_requests.is_some() {
        scenario.trace.num_requests = num_requests;
    }
    let v = serde_json::to_value(&scenario).unwrap_or_default();
    crate::plot::scenario_setup(&v, seeds)
}

/// Write capacity.csv, capacity.json and the bar plot into the staged `--out` and commit it.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    staged: crate::output::StagedDir,
    csv: &str,
    target: &Target,
    seeds: &[u64],
    searches: &[(String, Capacity<Probe>)],
    loaded: &Loaded,
    bars: &[crate::plot::CapacityBar],
    setup: &str,
    out: &mut dyn Write,
) -> anyhow::Result<PathBuf> {
    staged.write("capacity.csv", csv.as_bytes())?;
    let json = summary_json(target, seeds, searches);
    staged.write(
        "capacity.json",
        crate::output::pretty_json(&json).as_bytes(),
    )?;
    let title = format!(
        "{}: capacity under {}",
        loaded.scenario.name,
        target.describe()
    );
    crate::plot::plot_capacity_with_setup(staged.path(), &title, setup, bars)?;
    let path = staged.commit()?;
    writeln!(
        out,
        "capacity.csv, capacity.json, capacity.png and capacity.svg in {}",
        path.display()
    )?;
    Ok(path)
}

/// Columns of `capacity.csv`.
pub const CSV_HEADER: &str = "policy,capacity_rate_per_s,probes,bracket,limit_rate_per_s,achieved_rate_per_s,unstable_probes,limit_reason,stopped_early_probes";

/// Probes whose figure met the target but which did not count because a run was unstable or
/// failed.
fn unstable_probes(c: &Capacity<Probe>, target: &Target) -> (usize, usize) {
    let rejected: Vec<&Probe> = c
        .probes
        .iter()
        .filter(|(_, p)| p.miss_reason(target) == Some("unstable"))
        .map(|(_, p)| p)
        .collect();
    let short = rejected
        .iter()
        .filter(|p| p.runs.iter().any(|r| r.short_trace))
        .count();
    (rejected.len(), short)
}

/// One policy's `capacity.csv` line (no newline): the search result; the mean achieved
/// completion rate at the capacity rate (empty when no rate met the target); how many probes
/// the stability rule rejected; why the rate bounding the answer failed (`target`, `unstable`,
/// `target+unstable`; empty for an `above` bracket, whose bound met the target; a probe stopped
/// early misses on `target`, its stability unknown); how many probes were stopped early.
fn csv_row(policy: &str, c: &Capacity<Probe>, target: &Target) -> String {
    let at = |rate: f64| c.probes.iter().find(|(r, _)| *r == rate).map(|(_, p)| p);
    let achieved = match c.bracket {
        Bracket::Below => None,
        _ => at(c.rate_per_s).and_then(Probe::achieved_rate_per_s),
    };
    let reason = match c.bracket {
        Bracket::Above => None,
        _ => at(c.limit_rate_per_s).and_then(|p| p.miss_reason(target)),
    };
    format!(
        "{},{:.6},{},{},{},{},{},{},{}",
        policy,
        c.rate_per_s,
        c.probes.len(),
        c.bracket.as_str(),
        c.limit_rate_per_s,
        achieved.map(|x| format!("{x:.6}")).unwrap_or_default(),
        unstable_probes(c, target).0,
        reason.unwrap_or_default(),
        c.probes.iter().filter(|(_, p)| p.stopped_early()).count()
    )
}

/// `capacity.json`: the target, the stability rule, and every probe of every policy (rate,
/// figure, whether it counted, and each seed's stability).
fn summary_json(
    target: &Target,
    seeds: &[u64],
    searches: &[(String, Capacity<Probe>)],
) -> serde_json::Value {
    let policies: Vec<serde_json::Value> = searches
        .iter()
        .map(|(p, c)| {
            let probes: Vec<serde_json::Value> = c
                .probes
                .iter()
                .map(|(rate, probe)| {
                    let mut j = serde_json::json!({
                        "rate_per_s": rate,
                        "value": probe.value,
                        "meets_target": target.meets(probe.value),
                        "stable": probe.stable(),
                        "counted": probe.miss_reason(target).is_none(),
                        "runs": probe.runs,
                    });
                    if probe.stopped_early() {
                        // The value is a bound and the stability of the runs unknown.
                        j["stable"] = serde_json::Value::Null;
                        j["stopped_early"] = serde_json::Value::Bool(true);
                    }
                    j
                })
                .collect();
            serde_json::json!({
                "policy": p,
                "capacity_rate_per_s": c.rate_per_s,
                "bracket": c.bracket.as_str(),
                "limit_rate_per_s": c.limit_rate_per_s,
                "unstable_probes": unstable_probes(c, target).0,
                "probes": probes,
            })
        })
        .collect();
    serde_json::json!({
        "target": target.describe(),
        "seeds": seeds,
        "stability_rule": crate::metrics::stability::RULE,
        "policies": policies,
    })
}
