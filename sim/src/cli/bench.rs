//! `servesim bench`: whole-run speed figures (wall time is measured here, outside the engine).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::scenario::{Overrides, load};

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    /// Scenario files to time (default: scenarios/bench_vllm_azure_conv_10k.toml).
    pub scenarios: Vec<PathBuf>,
    /// Repeat each run this many times (≥ 1) and report the fastest.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Override the number of requests.
    #[arg(long, value_name = "N")]
    pub num_requests: Option<u64>,
    /// No progress bar on stderr (it is drawn only when stderr is a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Keep no per-request rows (as `run --no-requests-csv`): streaming summaries.
    #[arg(long)]
    pub no_rows: bool,
    /// Add the 10⁷-request cases (scenarios/bench_10m_vllm.toml, bench_10m_skipjoin.toml: 64
    /// replicas, minutes each); implies --no-rows.
    #[arg(long)]
    pub big: bool,
    /// Measure the performance targets instead: each target's workload against its bound
    /// (profile/analytic cost ratio, 10⁶ skip-join, sweep --jobs 2 speed-up; with --big the
    /// 10⁷-request runs), one row each with the verdict; the scenarios are those in scenarios/
    /// (of the working directory, else of the checkout servesim was built from). --num-requests
    /// scales every workload (no verdict then).
    #[arg(long, conflicts_with = "scenarios", conflicts_with = "no_rows")]
    pub targets: bool,
}

/// The scenarios `bench --big` adds.
pub const BIG_SCENARIOS: [&str; 2] = [
    "scenarios/bench_10m_vllm.toml",
    "scenarios/bench_10m_skipjoin.toml",
];

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What one timed run did (its output itself is dropped).
pub(super) struct Figures {
    requests: u64,
    iterations: u64,
    events: u64,
    fast_forwarded: u64,
    /// Filled in by whoever knows which runs the process's peak covers.
    pub(super) peak_rss_bytes: Option<u64>,
}

impl Figures {
    /// The share of iterations fast-forward handled.
    pub(super) fn ff_share(&self) -> f64 {
        self.fast_forwarded as f64 / self.iterations.max(1) as f64
    }
}

/// `f()` and the wall time it took (s): the one place `bench` reads the clock, outside the
/// engine, which runs on simulated time only.
pub(super) fn wall_s<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// The fastest of `repeat` runs of `resolved` (wall time in seconds, and its figures); `each`
/// is called after every run.
pub(super) fn best_of(
    resolved: &crate::scenario::Resolved,
    repeat: u32,
    rows: crate::run::Rows,
    each: &mut dyn FnMut(),
) -> anyhow::Result<(f64, Figures)> {
    // Only the figures of the fastest run are kept (not its output), so that peak RSS is that
    // of one run whatever the repeat count.
    let mut best: Option<(f64, Figures)> = None;
    for _ in 0..repeat.max(1) {
        let (o, w) = wall_s(|| crate::run::run_rows(resolved, None, true, rows));
        let o = o?;
        let f = Figures {
            requests: o.summary.requests,
            iterations: o.stats.iterations,
            events: o.stats.events,
            fast_forwarded: o.stats.fast_forwarded_iterations,
            peak_rss_bytes: None,
        };
        drop(o);
        each();
        if best.as_ref().is_none_or(|(b, _)| w < *b) {
            best = Some((w, f));
        }
    }
    Ok(best.expect("at least one repeat"))
}

pub fn bench_cmd(a: BenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if a.targets {
        let flags = (a.big, a.quiet);
        return super::bench_targets::bench_targets(a.repeat, a.num_requests, flags, out);
    }
    let mut scenarios = if a.scenarios.is_empty() && !a.big {
        vec![PathBuf::from("scenarios/bench_vllm_azure_conv_10k.toml")]
    } else {
        a.scenarios
    };
    if a.big {
        scenarios.extend(BIG_SCENARIOS.iter().map(PathBuf::from));
    }
    let rows = crate::run::Rows::keep_if(!(a.no_rows || a.big));
    // Every scenario is checked before the table starts: a bad file fails with its error alone.
    let mut resolved_all = Vec::with_capacity(scenarios.len());
    for path in &scenarios {
        resolved_all.push(load(path)?.resolve(&Overrides {
            num_requests: a.num_requests,
            ..Default::default()
        })?);
    }
    writeln!(
        out,
        "{:<40}{:>10}{:>12}{:>14}{:>14}{:>14}{:>12}{:>10}",
        "scenario",
        "requests",
        "wall_s",
        "req/wall_s",
        "iter/wall_s",
        "events/wall_s",
        "peak_rss_MB",
        "ff_share"
    )?;
    let runs = resolved_all.len() as u64 * u64::from(a.repeat.max(1));
    let pb = super::progress_bar(Some(runs), "runs", a.quiet);
    for resolved in resolved_all {
        let (w, o) = best_of(&resolved, a.repeat, rows, &mut || pb.inc(1))?;
        let rss = peak_rss_bytes().map(|b| b as f64 / 1e6).unwrap_or(f64::NAN);
        // Drawn above the progress bar, which is redrawn below it.
        pb.suspend(|| -> std::io::Result<()> {
            writeln!(
                out,
                "{:<40}{:>10}{:>12.4}{:>14.0}{:>14.0}{:>14.0}{:>12.1}{:>10.3}",
                resolved.scenario.name,
                o.requests,
                w,
                o.requests as f64 / w,
                o.iterations as f64 / w,
                o.events as f64 / w,
                rss,
                o.ff_share()
            )
        })?;
    }
    pb.finish_and_clear();
    Ok(())
}
