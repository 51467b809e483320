//! `servesim bench --targets`: the speed and memory targets of the performance issue, each
//! measured on its own workload and set against its bound (a benchmark, not a test: the verdict
//! depends on the machine, so it is printed, never asserted).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::bench::{Figures, best_of, peak_rss_bytes, wall_s};
use crate::scenario::{Overrides, load};

/// What one target compares, and its bound.
enum Check {
    /// The second scenario's wall time over the first's, at most `max`.
    Ratio { max: f64 },
    /// Wall time at most `max_s` and peak RSS at most `max_mb`.
    Within { max_s: f64, max_mb: f64 },
    /// `sweep --jobs 2` at least `min` times as fast as `--jobs 1` (whole command).
    Speedup { min: f64 },
}

/// One row of the table.
struct Target {
    label: &'static str,
    scenarios: &'static [&'static str],
    requests: Option<u64>,
    check: Check,
    /// Minutes each: only with `--big`.
    big: bool,
}

/// The 10⁷-request targets come first, in a fresh heap: after the others (a sweep's threads)
/// the allocator held enough memory to double their peak RSS.
const TARGETS: [Target; 6] = [
    Target {
        label: "2: 1e7 Azure conv, 64 replicas, vllm",
        scenarios: &["scenarios/bench_10m_vllm.toml"],
        requests: None,
        check: Check::Within {
            max_s: 60.0,
            max_mb: 1000.0,
        },
        big: true,
    },
    Target {
        label: "2: 1e7 Azure conv, 64 replicas, skip-join",
        scenarios: &["scenarios/bench_10m_skipjoin.toml"],
        requests: None,
        check: Check::Within {
            max_s: 60.0,
            max_mb: 1000.0,
        },
        big: true,
    },
    Target {
        label: "1: profile/analytic, Azure conv 10k vllm",
        scenarios: &[
            "scenarios/bench_vllm_azure_conv_10k.toml",
            "scenarios/bench_vllm_azure_conv_10k_profile.toml",
        ],
        requests: None,
        check: Check::Ratio { max: 1.2 },
        big: false,
    },
    Target {
        label: "1: profile/analytic, ShareGPT skip-join 2e5",
        scenarios: &[
            "scenarios/bench_sharegpt_skipjoin.toml",
            "scenarios/bench_sharegpt_skipjoin_profile.toml",
        ],
        requests: Some(200_000),
        check: Check::Ratio { max: 1.2 },
        big: false,
    },
    Target {
        label: "3: 1e6 ShareGPT skip-join, 1 replica",
        scenarios: &["scenarios/bench_sharegpt_skipjoin.toml"],
        requests: Some(1_000_000),
        check: Check::Within {
            max_s: 3.0,
            max_mb: f64::INFINITY,
        },
        big: false,
    },
    Target {
        label: "5: sweep 5x10x3, --jobs 2 vs --jobs 1",
        scenarios: &["scenarios/bench_sweep_5x10x3.toml"],
        requests: None,
        check: Check::Speedup { min: 1.9 },
        big: false,
    },
];

/// Run every target (the 10⁷-request ones only with `big`), best of `repeat` for the short
/// runs, each with its own peak RSS; `num_requests` scales every workload (then no verdict is
/// given: the bounds are for the targets' sizes). Prints one row per target.
pub(super) fn bench_targets(
    repeat: u32,
    num_requests: Option<u64>,
    (big, quiet): (bool, bool),
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Every scenario is checked before anything runs.
    for t in &TARGETS {
        for s in t.scenarios {
            load(&scenario_path(s))?;
        }
    }
    writeln!(out, "machine: {}", machine())?;
    writeln!(
        out,
        "{:<44}{:>34}{:>18}  verdict",
        "target", "measured", "bound"
    )?;
    let pb = super::progress_bar(Some(TARGETS.len() as u64), "targets", quiet);
    for t in &TARGETS {
        let row = if t.big && !big {
            format!("{:>34}{:>18}  not run (--big)", "—", bound(&t.check))
        } else {
            let requests = num_requests.or(t.requests);
            let (measured, met) = measure(t, requests, if t.big { 1 } else { repeat })?;
            let verdict = match (num_requests, met) {
                (Some(_), _) => "scaled: no verdict",
                (None, true) => "met",
                (None, false) => "NOT met",
            };
            format!("{measured:>34}{:>18}  {verdict}", bound(&t.check))
        };
        pb.inc(1);
        // Drawn above the progress bar, which is redrawn below it.
        pb.suspend(|| writeln!(out, "{:<44}{row}", t.label))?;
    }
    pb.finish_and_clear();
    Ok(())
}

fn bound(c: &Check) -> String {
    match c {
        Check::Ratio { max } => format!("≤ {max:.2}×"),
        Check::Within { max_s, max_mb } if max_mb.is_finite() => {
            format!("≤ {max_s:.0} s, {max_mb:.0} MB")
        }
        Check::Within { max_s, .. } => format!("≤ {max_s:.1} s"),
        Check::Speedup { min } => format!("≥ {min:.2}×"),
    }
}

/// One target's measurement (as printed) and whether it meets the bound.
fn measure(t: &Target, requests: Option<u64>, repeat: u32) -> anyhow::Result<(String, bool)> {
    match t.check {
        Check::Ratio { max } => {
            let (a, _) = timed(t.scenarios[0], requests, repeat)?;
            let (p, _) = timed(t.scenarios[1], requests, repeat)?;
            let ratio = p / a;
            Ok((format!("{p:.4} s / {a:.4} s = {ratio:.2}×"), ratio <= max))
        }
        Check::Within { max_s, max_mb } => {
            let (w, f) = timed(t.scenarios[0], requests, repeat)?;
            let mb = f.peak_rss_bytes.map_or(f64::NAN, |b| b as f64 / 1e6);
            Ok((
                format!("{w:.2} s, {mb:.0} MB, ff {:.2}", f.ff_share()),
                w <= max_s && (mb <= max_mb || max_mb.is_infinite()),
            ))
        }
        Check::Speedup { min } => {
            let one = sweep_wall_s(t.scenarios[0], requests, 1)?;
            let two = sweep_wall_s(t.scenarios[0], requests, 2)?;
            let speedup = one / two;
            Ok((
                format!("{one:.1} s / {two:.1} s = {speedup:.2}×"),
                speedup >= min,
            ))
        }
    }
}

/// The fastest of `repeat` runs of `scenario` without per-request rows, and its figures (peak
/// RSS that of these runs alone).
fn timed(scenario: &str, requests: Option<u64>, repeat: u32) -> anyhow::Result<(f64, Figures)> {
    let resolved = load(&scenario_path(scenario))?.resolve(&Overrides {
        num_requests: requests,
        ..Default::default()
    })?;
    reset_peak_rss();
    let (w, mut f) = best_of(
        &resolved,
        repeat,
        crate::run::Rows::keep_if(false),
        &mut || {},
    )?;
    f.peak_rss_bytes = peak_rss_bytes();
    Ok((w, f))
}

/// Whole-command wall time of `sweep SCENARIO --jobs JOBS --no-requests-csv --no-plots` into a
/// temporary directory, removed afterwards.
fn sweep_wall_s(scenario: &str, requests: Option<u64>, jobs: usize) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!(
        "servesim-bench-sweep-{}-{jobs}",
        std::process::id()
    ));
    let args = super::sweep::SweepArgs {
        scenario: scenario_path(scenario),
        jobs: Some(jobs),
        out: Some(dir.clone()),
        force: false,
        num_requests: requests,
        no_requests_csv: true,
        no_plots: true,
        cdf_rate: None,
        shard: None,
        policies: Vec::new(),
        rates: Vec::new(),
        seeds: Vec::new(),
        allow_failures: true,
        quiet: true,
    };
    let (r, w) =
        wall_s(|| super::sweep::sweep_cmd(args, &mut std::io::sink(), &mut std::io::sink()));
    let _ = std::fs::remove_dir_all(&dir);
    r.map(|()| w)
}

/// `rel` (a `scenarios/…` path) under the working directory, else under the checkout servesim
/// was built from (where the benchmark scenarios and the traces they read are).
fn scenario_path(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if !here.exists() && built.exists() {
        built
    } else {
        here
    }
}

/// Reset this process's peak RSS (Linux: `VmHWM` starts again from the current RSS), so that
/// each target reports its own; memory the allocator kept from earlier targets is handed back
/// first (glibc), or it would count in the next target's peak.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            malloc_trim(0);
        }
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The CPU model and the number of CPUs this process may use.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {n} CPUs available")
}
