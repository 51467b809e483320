//! The plots of a sweep directory: mean JCT, p99 JCT, mean per-token latency and (when
//! `sweep.csv` has them) p99 and mean inter-token latency versus arrival rate per series (error
//! bars: min–max over seeds), goodput versus rate when it has a `goodput` column, and the JCT CDF
//! per series at one rate; with the `sweep.csv` reader behind them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::figure::{Curve, RateFigure, draw_cdf, draw_rate_figure};
use super::setup::{SweepSetup, sweep_setup};
use super::style::{SeriesStyle, styles_for};
use super::{PLOT_MAX_ABS, both, perr, register_font};
use crate::error::Result;

/// Options of the sweep plots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepPlotOptions {
    /// The rate of the JCT CDF (one of the sweep's rates); by default the highest rate at which
    /// every run is stable (the lowest rate when there is none).
    pub cdf_rate_per_s: Option<f64>,
}

/// One row of sweep.csv.
#[derive(Debug, Clone)]
struct Row {
    run: usize,
    series: String,
    seed: Option<String>,
    rate: Option<f64>,
    metrics: BTreeMap<String, Option<f64>>,
    /// Its `stable` cell is `false` (see [`crate::metrics::stability`]; a sweep.csv without the
    /// column, or a run that cannot be judged, counts as stable).
    unstable: bool,
}

/// Values of `sweep.csv` that [`read_sweep`] left out: how many, and where the first one was.
#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    first: Option<(u64, String, String)>,
}

impl Skipped {
    /// `text` parsed as a plottable number: `None` (and counted) when it is a number that is
    /// not finite or beyond ±[`PLOT_MAX_ABS`]; `None` (not counted) when it is not a number.
    fn parse(&mut self, text: &str, line: u64, column: &str) -> Option<f64> {
        let v: f64 = text.trim().parse().ok()?;
        if v.is_finite() && v.abs() <= PLOT_MAX_ABS {
            return Some(v);
        }
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((line, column.to_string(), text.to_string()));
        }
        None
    }

    /// The one-line note for stderr, when anything was skipped.
    fn note(&self, path: &Path) -> Option<String> {
        let (line, column, text) = self.first.as_ref()?;
        let text: String = text.chars().take(40).collect();
        Some(format!(
            "{}: left {} value(s) out of the plots that are not finite or beyond ±1e300 (first: line {line}, column `{column}`, `{}`)",
            path.display(),
            self.count,
            text.escape_debug()
        ))
    }
}

fn read_sweep(path: &Path) -> Result<(Vec<Row>, Vec<String>, Option<String>)> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| perr(path, e))?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| perr(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let first_metric = crate::check::sweep_axes_end(&headers).map_err(|m| perr(path, m))?;
    let axes: Vec<String> = headers[1..first_metric].to_vec();
    let mut rows = Vec::new();
    let mut skipped = Skipped::default();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| perr(path, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let run: usize = rec[0].trim().parse().map_err(|_| {
            let cell: String = rec[0].chars().take(40).collect();
            perr(
                path,
                format!(
                    "line {line}, column `{}`: expected a run index (a non-negative integer), got `{}`",
                    headers[0],
                    cell.escape_debug()
                ),
            )
        })?;
        let mut series = Vec::new();
        let mut rate = None;
        let mut seed = None;
        for (i, a) in axes.iter().enumerate() {
            let v = &rec[i + 1];
            match a.as_str() {
                "rate" => rate = skipped.parse(v, line, a),
                "seed" => seed = Some(v.to_string()),
                _ => series.push(if axes.len() > 3 {
                    format!("{a}={v}")
                } else {
                    v.to_string()
                }),
            }
        }
        let metrics = headers[first_metric..]
            .iter()
            .enumerate()
            .map(|(k, h)| (h.clone(), skipped.parse(&rec[first_metric + k], line, h)))
            .collect();
        let unstable = headers
            .iter()
            .position(|h| h == "stable")
            .is_some_and(|i| rec.get(i) == Some("false"));
        rows.push(Row {
            run,
            series: if series.is_empty() {
                "all".into()
            } else {
                series.join(" ")
            },
            seed,
            rate,
            metrics,
            unstable,
        });
    }
    if rows.is_empty() {
        return Err(perr(path, "nothing to plot: no rows under the header"));
    }
    let note = skipped.note(path);
    Ok((rows, axes, note))
}

/// The series in order of first appearance in `sweep.csv` (the sweep's order).
fn series_order(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if !out.contains(&r.series) {
            out.push(r.series.clone());
        }
    }
    out
}

/// (x, mean, min, max, unstable) per series and rate of `metric`, the series in sweep order.
fn curves(rows: &[Row], metric: &str) -> Vec<(String, Curve)> {
    let mut acc: BTreeMap<String, BTreeMap<u64, Vec<(f64, bool)>>> = BTreeMap::new();
    for r in rows {
        if let (Some(x), Some(Some(y))) = (r.rate, r.metrics.get(metric)) {
            acc.entry(r.series.clone())
                .or_default()
                .entry(x.to_bits())
                .or_default()
                .push((*y, r.unstable));
        }
    }
    let mut out = Vec::new();
    for s in series_order(rows) {
        let Some(pts) = acc.remove(&s) else { continue };
        let mut c: Curve = pts
            .into_iter()
            .map(|(xb, pts)| {
                let unstable = pts.iter().any(|p| p.1);
                let ys: Vec<f64> = pts.into_iter().map(|p| p.0).collect();
                let mean = ys.iter().sum::<f64>() / ys.len() as f64;
                let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (f64::from_bits(xb), mean, lo, hi, unstable)
            })
            .collect();
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push((s, c));
    }
    out
}

/// Write every plot of sweep directory `sweep_dir` into `plots_dir`. Returns the files written.
pub fn plot_sweep(sweep_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    plot_sweep_noting(sweep_dir, plots_dir, &SweepPlotOptions::default()).map(|(files, _)| files)
}

/// [`plot_sweep`] with `opts`, also returning a note when values of `sweep.csv` were left out of
/// the plots (not finite, or beyond ±1e300).
pub fn plot_sweep_noting(
    sweep_dir: &Path,
    plots_dir: &Path,
    opts: &SweepPlotOptions,
) -> Result<(Vec<PathBuf>, Option<String>)> {
    register_font();
    let (rows, _axes, note) = read_sweep(&sweep_dir.join("sweep.csv"))?;
    let cdf_rate =
        cdf_rate(&rows, opts.cdf_rate_per_s).map_err(|m| perr(&sweep_dir.join("sweep.csv"), m))?;
    std::fs::create_dir_all(plots_dir).map_err(|e| perr(plots_dir, e))?;
    let seeds: BTreeSet<u64> = rows
        .iter()
        .filter_map(|r| r.seed.as_deref()?.parse().ok())
        .collect();
    let setup = sweep_setup(sweep_dir, &seeds);
    let names = series_order(&rows);
    let styles: BTreeMap<String, SeriesStyle> =
        names.iter().cloned().zip(styles_for(&names)).collect();
    let mut written = Vec::new();
    if rows.iter().any(|r| r.rate.is_some()) {
        written.extend(plot_rate_curves(&rows, &setup, &styles, plots_dir)?);
    }
    written.extend(plot_jct_cdf(
        &rows, cdf_rate, &setup, &styles, sweep_dir, plots_dir,
    )?);
    Ok((written, note))
}

/// The metric-versus-rate plots (mean JCT, p99 JCT, per-token latency, ITL, and goodput when
/// the sweep has it) of a sweep with a `rate` axis. Returns the files written.
fn plot_rate_curves(
    rows: &[Row],
    setup: &SweepSetup,
    styles: &BTreeMap<String, SeriesStyle>,
    plots_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let tpot = setup.tpot_s.map(|t| {
        (
            t,
            format!("[slo] TPOT target {} s", super::ticks::format_tick(t)),
        )
    });
    for (name, metric, title, y, target) in [
        (
            "jct_mean_vs_rate",
            "jct_mean_s",
            "Mean job completion time (JCT) vs arrival rate",
            "mean JCT (s, log)",
            None,
        ),
        (
            "jct_p99_vs_rate",
            "jct_p99_s",
            "p99 job completion time (JCT) vs arrival rate",
            "p99 JCT (s, log)",
            None,
        ),
        (
            "per_token_vs_rate",
            "per_token_mean_s",
            "Mean per-token latency (JCT / output tokens) vs arrival rate",
            "s per token (log)",
            tpot.clone(),
        ),
        (
            "itl_p99_vs_rate",
            "itl_p99_s",
            "p99 inter-token latency (ITL) vs arrival rate",
            "p99 ITL (s, log)",
            tpot.clone(),
        ),
        (
            "itl_mean_vs_rate",
            "itl_mean_s",
            "Mean inter-token latency (ITL) vs arrival rate",
            "mean ITL (s, log)",
            tpot.clone(),
        ),
        (
            "goodput_vs_rate",
            "goodput",
            "Goodput: fraction of requests meeting the TTFT and TPOT targets",
            "goodput (fraction of requests)",
            None,
        ),
    ] {
        let data = curves(rows, metric);
        if data.is_empty() {
            continue;
        }
        let fig = RateFigure {
            title,
            setup: &setup.line,
            y_desc: y,
            data: &data,
            styles,
            log_y: metric != "goodput",
            target,
        };
        written.extend(both(
            plots_dir,
            name,
            &|a| draw_rate_figure(a, &fig),
            &|a| draw_rate_figure(a, &fig),
        )?);
    }
    Ok(written)
}

/// The rates of `rows`, sorted and distinct.
fn rates(rows: &[Row]) -> Vec<f64> {
    let mut rates: Vec<f64> = rows.iter().filter_map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    rates
}

/// The rate of the JCT CDF: `asked` when it is one of the sweep's rates (an error listing them
/// otherwise), else the highest rate at which every series has runs and all are stable, else the
/// lowest rate (`None` when the sweep has no rate axis).
fn cdf_rate(rows: &[Row], asked: Option<f64>) -> std::result::Result<Option<(f64, bool)>, String> {
    let rates = rates(rows);
    if let Some(a) = asked {
        return match rates
            .iter()
            .find(|&&r| (r - a).abs() <= 1e-9 * r.abs().max(1.0))
        {
            Some(&r) => Ok(Some((r, false))),
            None => Err(format!(
                "--cdf-rate {a} is not a rate of this sweep (its rates: {})",
                rates
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
    }
    let names = series_order(rows);
    let all_stable = |r: f64| {
        let at: Vec<&Row> = rows.iter().filter(|x| x.rate == Some(r)).collect();
        names.iter().all(|n| at.iter().any(|x| &x.series == n)) && at.iter().all(|x| !x.unstable)
    };
    Ok(match rates.iter().rev().find(|&&r| all_stable(r)) {
        Some(&r) => Some((r, true)),
        None => rates.first().map(|&r| (r, false)),
    })
}

/// The run directories under `sweep_dir/runs/` by run index (the number their name starts with).
fn run_dirs(sweep_dir: &Path) -> BTreeMap<usize, PathBuf> {
    let mut names = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(sweep_dir.join("runs")) {
        for ent in rd.flatten() {
            let n = ent.file_name().to_string_lossy().to_string();
            if let Some(idx) = n.split('-').next().and_then(|s| s.parse().ok()) {
                names.insert(idx, ent.path());
            }
        }
    }
    names
}

/// The finite `jct_s` values of `dir/requests.csv`, sorted (none when unreadable).
fn read_jcts(dir: &Path) -> Vec<f64> {
    let Ok(mut rdr) = csv::Reader::from_path(dir.join("requests.csv")) else {
        return Vec::new();
    };
    let col = rdr
        .headers()
        .ok()
        .and_then(|h| h.iter().position(|c| c == "jct_s"));
    let Some(col) = col else { return Vec::new() };
    let mut v: Vec<f64> = rdr
        .records()
        .flatten()
        .filter_map(|rec| rec.get(col).and_then(|x| x.parse().ok()))
        .filter(|x: &f64| x.is_finite() && x.abs() <= PLOT_MAX_ABS)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The JCT CDF per series at `pick` (rate, whether it was chosen as the highest all-stable
/// one), first run (lowest seed) of each series, read from the runs' `requests.csv` under
/// `sweep_dir/runs/`. Returns the files written (none when no run has a `requests.csv`).
fn plot_jct_cdf(
    rows: &[Row],
    pick: Option<(f64, bool)>,
    setup: &SweepSetup,
    styles: &BTreeMap<String, SeriesStyle>,
    sweep_dir: &Path,
    plots_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let dirs = run_dirs(sweep_dir);
    let mut cdf: Vec<(String, Vec<f64>)> = Vec::new();
    let mut seeds: BTreeSet<String> = BTreeSet::new();
    for r in rows {
        if r.rate != pick.map(|p| p.0) || cdf.iter().any(|c| c.0 == r.series) {
            continue;
        }
        let Some(dir) = dirs.get(&r.run) else {
            continue;
        };
        let v = read_jcts(dir);
        if !v.is_empty() {
            cdf.push((r.series.clone(), v));
            seeds.extend(r.seed.clone());
        }
    }
    if cdf.is_empty() {
        return Ok(Vec::new());
    }
    let title = match pick {
        Some((x, true)) => format!(
            "JCT CDF at {} requests/s (the highest rate where every run is stable)",
            super::ticks::format_tick(x)
        ),
        Some((x, false)) => format!("JCT CDF at {} requests/s", super::ticks::format_tick(x)),
        None => "JCT CDF".to_string(),
    };
    let mut parts: Vec<&str> = setup
        .line
        .split(" · ")
        .filter(|p| !p.contains("seed"))
        .collect();
    let seed_part = match seeds.len() {
        1 => format!(
            "one run per series (seed {})",
            seeds.first().map_or("", |s| s.as_str())
        ),
        _ => "one run per series".to_string(),
    };
    parts.push(&seed_part);
    let line = parts.join(" · ");
    both(
        plots_dir,
        "jct_cdf",
        &|a| draw_cdf(a, &title, &line, &cdf, styles),
        &|a| draw_cdf(a, &title, &line, &cdf, styles),
    )
}
