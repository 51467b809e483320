//! The plots of a sweep directory: mean JCT, p99 JCT, mean per-token latency and (when
//! `sweep.csv` has them) p99 and mean inter-token latency versus arrival rate per series (error
//! bars: min–max over seeds), goodput versus rate when it has a `goodput` column, and the JCT CDF
//! per series at one rate; with the `sweep.csv` reader behind them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::figure::{Curve, RateFigure, draw_cdf, draw_rate_figure};
use super::read::{Row, Sweep, read_sweep};
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

/// The series in order of first appearance in `sweep.csv` (the sweep's order).
fn series_order(rows: &[Row]) -> Vec<String> {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if seen.insert(&r.series) {
            out.push(r.series.clone());
        }
    }
    out
}

/// (x, mean, min, max, unstable) per series and rate of `metric`, the series in sweep order.
fn curves(sweep: &Sweep, metric: &str) -> Vec<(String, Curve)> {
    let Some(m) = sweep.metrics.iter().position(|h| h == metric) else {
        return Vec::new();
    };
    let rows = &sweep.rows;
    let mut acc: BTreeMap<String, BTreeMap<u64, Vec<(f64, bool)>>> = BTreeMap::new();
    for r in rows {
        if let (Some(x), Some(Some(y))) = (r.rate, r.metrics.get(m)) {
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
        out.push((s, bin_curve(c, MAX_DRAWN_RATES)));
    }
    out
}

/// The most rates a figure draws per series (the plot is under 1,000 pixels wide); a series
/// with more is merged into this many bins (see [`bin_curve`]) and `plot` says so.
pub(super) const MAX_DRAWN_RATES: usize = 1000;

/// `c` (sorted by x) when it has at most `max` points; else merged into `max` bins of equal
/// rate width: each bin's point at the mean of its rates and of their means, its bar from the
/// lowest minimum to the highest maximum, unstable when any point in it is. Drawing 100k points
/// (a segment and a marker each, twice: PNG and SVG) took most of a `plot` of a 100k-row sweep.
fn bin_curve(c: Curve, max: usize) -> Curve {
    if c.len() <= max || max == 0 {
        return c;
    }
    let (x0, x1) = (c[0].0, c[c.len() - 1].0);
    let width = (x1 - x0) / max as f64;
    let mut bins: Vec<(f64, f64, f64, f64, bool, usize)> = Vec::new();
    let mut last = usize::MAX;
    for (x, mean, lo, hi, unstable) in c {
        let k = if width > 0.0 {
            (((x - x0) / width) as usize).min(max - 1)
        } else {
            0
        };
        if k != last {
            bins.push((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, false, 0));
            last = k;
        }
        let b = bins.last_mut().expect("pushed above");
        *b = (
            b.0 + x,
            b.1 + mean,
            b.2.min(lo),
            b.3.max(hi),
            b.4 || unstable,
            b.5 + 1,
        );
    }
    bins.into_iter()
        .map(|(x, mean, lo, hi, unstable, n)| (x / n as f64, mean / n as f64, lo, hi, unstable))
        .collect()
}

/// Write every plot of sweep directory `sweep_dir` into `plots_dir`. Returns the files written.
pub fn plot_sweep(sweep_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    plot_sweep_noting(sweep_dir, plots_dir, &SweepPlotOptions::default()).map(|(files, _)| files)
}

/// [`plot_sweep`] with `opts`, also returning one note line per kind of value of `sweep.csv`
/// left out of the plots (not finite, beyond ±1e300, at or below zero on a log axis) or drawn at
/// a log axis's floor, per series merged into bins (over [`MAX_DRAWN_RATES`] rates), and per
/// run `config.json` that the setup line had to leave out.
pub fn plot_sweep_noting(
    sweep_dir: &Path,
    plots_dir: &Path,
    opts: &SweepPlotOptions,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    register_font();
    let sweep = read_sweep(&sweep_dir.join("sweep.csv"))?;
    let rows = &sweep.rows;
    let cdf_rate =
        cdf_rate(rows, opts.cdf_rate_per_s).map_err(|m| perr(&sweep_dir.join("sweep.csv"), m))?;
    let requests_col = sweep.metrics.iter().position(|m| m == "requests");
    let cdf = cdf_data(rows, requests_col, cdf_rate, sweep_dir)?;
    std::fs::create_dir_all(plots_dir).map_err(|e| perr(plots_dir, e))?;
    let seeds: BTreeSet<u64> = rows
        .iter()
        .filter_map(|r| r.seed.as_deref()?.parse().ok())
        .collect();
    let setup = sweep_setup(sweep_dir, &seeds);
    let mut notes = sweep.notes.clone();
    notes.extend(binned_note(rows, &sweep_dir.join("sweep.csv")));
    notes.extend(setup.notes.iter().cloned());
    let names = series_order(rows);
    let styles: BTreeMap<String, SeriesStyle> =
        names.iter().cloned().zip(styles_for(&names)).collect();
    let mut written = Vec::new();
    if rows.iter().any(|r| r.rate.is_some()) {
        written.extend(plot_rate_curves(&sweep, &setup, &styles, plots_dir)?);
    }
    written.extend(plot_jct_cdf(&cdf, cdf_rate, &setup, &styles, plots_dir)?);
    Ok((written, notes))
}

/// The note when a series has more than [`MAX_DRAWN_RATES`] rates (its curves are merged into
/// bins, see [`bin_curve`]).
fn binned_note(rows: &[Row], path: &Path) -> Option<String> {
    let mut per_series: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for r in rows {
        if let Some(x) = r.rate {
            per_series
                .entry(&r.series)
                .or_default()
                .insert((x + 0.0).to_bits());
        }
    }
    let (name, rates) = per_series
        .into_iter()
        .max_by_key(|(_, rates)| rates.len())
        .filter(|(_, rates)| rates.len() > MAX_DRAWN_RATES)?;
    Some(format!(
        "{}: series `{}` has {} rates, more than the {MAX_DRAWN_RATES} a figure draws per series: neighbouring rates are merged into {MAX_DRAWN_RATES} bins of equal width (each bin's mean, its bar from the lowest to the highest value)",
        path.display(),
        crate::error::echo(name),
        rates.len()
    ))
}

/// The metric-versus-rate plots (mean JCT, p99 JCT, per-token latency, ITL, and goodput when
/// the sweep has it) of a sweep with a `rate` axis. Returns the files written.
fn plot_rate_curves(
    sweep: &Sweep,
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
        let data = curves(sweep, metric);
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
    Ok(stable_pick(rows, &rates).0)
}

/// The highest rate of `rates` at which every series has runs and all are stable (`true`), else
/// the lowest rate (`false`); with the rows looked at (each once: the rows are grouped by rate in
/// one pass, not filtered again per rate, which was quadratic in a sweep of 100k rates).
fn stable_pick(rows: &[Row], rates: &[f64]) -> (Option<(f64, bool)>, usize) {
    let names = series_order(rows);
    let mut at: BTreeMap<u64, (BTreeSet<&str>, bool)> = BTreeMap::new();
    let mut looked = 0;
    for r in rows {
        looked += 1;
        if let Some(x) = r.rate {
            let g = at.entry((x + 0.0).to_bits()).or_default();
            g.0.insert(&r.series);
            g.1 |= r.unstable;
        }
    }
    let all_stable = |r: f64| {
        at.get(&(r + 0.0).to_bits())
            .is_some_and(|(series, unstable)| !unstable && series.len() == names.len())
    };
    let pick = match rates.iter().rev().find(|&&r| all_stable(r)) {
        Some(&r) => Some((r, true)),
        None => rates.first().map(|&r| (r, false)),
    };
    (pick, looked)
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

/// The `jct_s` values of `dir/requests.csv`, sorted (none when the run wrote no requests.csv).
/// Each row needs a number in `jct_s` (one a plot cannot place is left out), and the rows must
/// be the requests `dir/summary.json` counts (or, when that file cannot say, the run's
/// `requests` in sweep.csv, `listed`): a cut-short or garbled file was drawn as a CDF of what
/// was left (20 of 200 rows), also when summary.json was missing or its count not an integer.
fn read_jcts(dir: &Path, listed: Option<f64>) -> Result<Vec<f64>> {
    let path = dir.join("requests.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let f = crate::input::open_bounded(&path, crate::input::MAX_DATA_BYTES)
        .map_err(|e| perr(&path, e))?;
    let mut rdr = csv::Reader::from_reader(crate::trace::csv_reader::LineLimited::new(f));
    let col = rdr
        .headers()
        .ok()
        .and_then(|h| h.iter().position(|c| c == "jct_s"))
        .ok_or_else(|| perr(&path, "no `jct_s` column"))?;
    let mut v: Vec<f64> = Vec::new();
    let mut rows: u64 = 0;
    for rec in rdr.records() {
        let rec = rec.map_err(|e| perr(&path, e))?;
        rows += 1;
        let cell = rec.get(col).unwrap_or("");
        let x = cell.parse::<f64>().map_err(|_| {
            let line = rec.position().map_or(0, |p| p.line());
            perr(
                &path,
                format!(
                    "line {line}: `jct_s` must be a number, got {}",
                    crate::error::echo(cell)
                ),
            )
        })?;
        // Values a plot cannot place (non-finite, beyond the plot's range) are left out.
        if x.is_finite() && x.abs() <= PLOT_MAX_ABS {
            v.push(x);
        }
    }
    let summary_path = dir.join("summary.json");
    let counted = crate::input::read_text(&summary_path, crate::input::MAX_CONFIG_BYTES)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["requests"].as_u64());
    let (n, source) = match (counted, listed) {
        (Some(n), _) => (n as f64, summary_path.display().to_string()),
        (None, Some(x)) => (x, "its `requests` in sweep.csv".to_string()),
        (None, None) => {
            return Err(perr(
                &path,
                format!(
                    "cannot be checked: {} gives no request count and sweep.csv has no `requests` column; rerun the run, or plot a complete copy",
                    summary_path.display()
                ),
            ));
        }
    };
    if n != rows as f64 {
        return Err(perr(
            &path,
            format!(
                "holds {rows} requests but {source} counts {}: the file was cut short or edited; rerun the run, or plot a complete copy",
                crate::error::num(n)
            ),
        ));
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Per series, its JCTs (sorted), and the seeds of the runs they come from.
type CdfData = (Vec<(String, Vec<f64>)>, BTreeSet<String>);

/// The JCTs the CDF at `pick` draws: the first run (lowest seed) of each series at that rate,
/// read from the runs' `requests.csv` under `sweep_dir/runs/` (read, and checked, before any
/// plot is written).
fn cdf_data(
    rows: &[Row],
    requests_col: Option<usize>,
    pick: Option<(f64, bool)>,
    sweep_dir: &Path,
) -> Result<CdfData> {
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
        let listed = requests_col.and_then(|k| r.metrics.get(k).copied().flatten());
        let v = read_jcts(dir, listed)?;
        if !v.is_empty() {
            cdf.push((r.series.clone(), v));
            seeds.extend(r.seed.clone());
        }
    }
    Ok((cdf, seeds))
}

/// The JCT CDF per series at `pick` (rate, whether it was chosen as the highest all-stable
/// one) from [`cdf_data`]. Returns the files written (none when no run has a `requests.csv`).
fn plot_jct_cdf(
    (cdf, seeds): &CdfData,
    pick: Option<(f64, bool)>,
    setup: &SweepSetup,
    styles: &BTreeMap<String, SeriesStyle>,
    plots_dir: &Path,
) -> Result<Vec<PathBuf>> {
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
        &|a| draw_cdf(a, &title, &line, cdf, styles),
        &|a| draw_cdf(a, &title, &line, cdf, styles),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, rate: f64, unstable: bool) -> Row {
        Row {
            run: i,
            series: if i.is_multiple_of(2) { "a" } else { "b" }.into(),
            seed: None,
            rate: Some(rate),
            metrics: vec![Some(1.0)],
            unstable,
        }
    }

    /// The CDF rate's choice looks at each row once (it filtered every row again per rate:
    /// 10^10 looks for a 100k-rate sweep), and still picks the highest all-stable rate.
    #[test]
    fn cdf_rate_looks_at_each_row_once() {
        let rows: Vec<Row> = (0..4000)
            .map(|i| row(i, (i / 2) as f64, i >= 3000))
            .collect();
        let all = rates(&rows);
        let (pick, looked) = stable_pick(&rows, &all);
        assert_eq!(looked, rows.len());
        assert_eq!(pick, Some((1499.0, true)));
        // Series `b` only at rate 3: the highest rate with every series.
        let mut one: Vec<Row> = (0..10).map(|i| row(2 * i, i as f64, false)).collect();
        one.push(row(1, 3.0, false));
        assert_eq!(stable_pick(&one, &rates(&one)).0, Some((3.0, true)));
        let bad: Vec<Row> = (0..10).map(|i| row(i, i as f64, true)).collect();
        assert_eq!(stable_pick(&bad, &rates(&bad)).0, Some((0.0, false)));
    }

    /// A curve of more than `max` points becomes `max` bins keeping the extremes of each.
    #[test]
    fn bin_curve_keeps_extremes_within_max_points() {
        let c: Curve = (0..10_000)
            .map(|i| {
                (
                    i as f64,
                    1.0,
                    1.0 - (i == 77) as u8 as f64 * 0.5,
                    1.0 + (i == 9_999) as u8 as f64,
                    i == 5,
                )
            })
            .collect();
        let b = bin_curve(c.clone(), 1000);
        assert_eq!(b.len(), 1000);
        assert_eq!(b.iter().map(|p| p.2).fold(f64::MAX, f64::min), 0.5);
        assert_eq!(b.iter().map(|p| p.3).fold(f64::MIN, f64::max), 2.0);
        assert_eq!(b.iter().filter(|p| p.4).count(), 1);
        assert_eq!(b[0].0, 4.5);
        assert_eq!(bin_curve(c[..1000].to_vec(), 1000).len(), 1000);
    }
}
