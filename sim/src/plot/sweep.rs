//! The plots of a sweep directory: mean JCT, p99 JCT and mean per-token latency versus arrival
//! rate per series (error bars: min–max over seeds), goodput versus rate when `sweep.csv` has a
//! `goodput` column, and the JCT CDF per series at the median rate; with the `sweep.csv` reader
//! behind them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    PLOT_MAX_ABS, both, clamp_to, draw_labelled_line, draw_legend, linear_pad, log_axis, palette,
    perr, register_font,
};
use crate::error::Result;

/// One row of sweep.csv.
#[derive(Debug, Clone)]
struct Row {
    run: usize,
    series: String,
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
    let first_metric = headers
        .iter()
        .position(|h| h == "requests")
        .ok_or_else(|| perr(path, "not a sweep.csv (no `requests` column)"))?;
    let axes: Vec<String> = headers[1..first_metric].to_vec();
    let mut rows = Vec::new();
    let mut skipped = Skipped::default();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| perr(path, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let run: usize = rec[0].parse().map_err(|e| perr(path, e))?;
        let mut series = Vec::new();
        let mut rate = None;
        for (i, a) in axes.iter().enumerate() {
            let v = &rec[i + 1];
            match a.as_str() {
                "rate" => rate = skipped.parse(v, line, a),
                "seed" => {}
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
            rate,
            metrics,
            unstable,
        });
    }
    let note = skipped.note(path);
    Ok((rows, axes, note))
}

/// Every curve's y values (mean, min, max) clamped into `range`, so points beyond an axis are drawn
/// at its edge.
fn clamp_curves(
    data: &BTreeMap<String, Curve>,
    range: &std::ops::Range<f64>,
) -> BTreeMap<String, Curve> {
    data.iter()
        .map(|(k, c)| {
            let c = c
                .iter()
                .map(|&(x, m, lo, hi, unstable)| {
                    let y = |v| clamp_to(v, range);
                    (x, y(m), y(lo), y(hi), unstable)
                })
                .collect();
            (k.clone(), c)
        })
        .collect()
}

/// (x, mean, min, max, unstable) per series, sorted by x; `unstable` when any seed's run at
/// that rate is unstable.
type Curve = Vec<(f64, f64, f64, f64, bool)>;

fn curves(rows: &[Row], metric: &str) -> BTreeMap<String, Curve> {
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
    acc.into_iter()
        .map(|(s, pts)| {
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
            (s, c)
        })
        .collect()
}

/// One line with markers and min–max error bars per series, and the legend at `legend`. A point
/// where a run was unstable ([`crate::metrics::stability`]) gets a hollow marker and the
/// segments to it are dashed; a legend entry says so when there is one.
fn draw_rate_series<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    data: &BTreeMap<String, Curve>,
    legend: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    for (i, (name, c)) in data.iter().enumerate() {
        let col = palette(i);
        // The legend entry only; the segments follow.
        draw_labelled_line(chart, std::iter::empty(), name, col)?;
        for w in c.windows(2) {
            let seg = [(w[0].0, w[0].1), (w[1].0, w[1].1)];
            if w[0].4 || w[1].4 {
                chart
                    .draw_series(DashedLineSeries::new(seg, 7, 5, col.stroke_width(2)))
                    .map_err(|x| e(&x))?;
            } else {
                chart
                    .draw_series(LineSeries::new(seg, col.stroke_width(2)))
                    .map_err(|x| e(&x))?;
            }
        }
        chart
            .draw_series(c.iter().map(|p| {
                let style = if p.4 { WHITE.filled() } else { col.filled() };
                Circle::new((p.0, p.1), 4, style)
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(
                c.iter()
                    .filter(|p| p.4)
                    .map(|p| Circle::new((p.0, p.1), 4, col.stroke_width(2))),
            )
            .map_err(|x| e(&x))?;
        chart
            .draw_series(
                c.iter()
                    .map(|p| ErrorBar::new_vertical(p.0, p.2, p.1, p.3, col, 6)),
            )
            .map_err(|x| e(&x))?;
    }
    if data.values().flatten().any(|p| p.4) {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(LineSeries::new(std::iter::empty(), grey))
            .map_err(|x| e(&x))?
            .label("hollow, dashed: unstable run")
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + plotters::element::DashedPathElement::new(
                        vec![(0, 0), (18, 0)],
                        5,
                        3,
                        grey.stroke_width(2),
                    )
                    + Circle::new((9, 0), 4, grey.stroke_width(2))
            });
    }
    draw_legend(chart, legend)
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    data: &BTreeMap<String, Curve>,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let pts = data.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, _, lo, hi, _) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo.max(1e-6));
        y1 = y1.max(hi.max(1e-6));
    }
    if x0 > x1 {
        return Err("no data points".into());
    }
    let pad = linear_pad(x0, x1);
    let y_axis = log_axis(y0, y1, 0.8, 1.25);
    let clamped = clamp_curves(data, &y_axis);
    let data = &clamped;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), y_axis.clone().log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("arrival rate (requests/s)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    draw_rate_series(&mut chart, data, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn draw_cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    data: &BTreeMap<String, Vec<f64>>,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let lo = data
        .values()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = data
        .values()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let x_axis = log_axis(lo, hi, 0.9, 1.1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x_axis.clone().log_scale(), 0.0..1.0)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("job completion time (s)")
        .y_desc("fraction of requests")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, v)) in data.iter().enumerate() {
        let col = palette(i);
        let n = v.len() as f64;
        let step = (v.len() / 2000).max(1);
        let pts: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .filter(|(k, _)| k % step == 0 || *k + 1 == v.len())
            .map(|(k, &x)| (clamp_to(x.max(lo), &x_axis), (k + 1) as f64 / n))
            .collect();
        draw_labelled_line(&mut chart, pts, name, col)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Write every plot of sweep directory `sweep_dir` into `plots_dir`. Returns the files written.
pub fn plot_sweep(sweep_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    plot_sweep_noting(sweep_dir, plots_dir).map(|(files, _)| files)
}

/// [`plot_sweep`], also returning a note when values of `sweep.csv` were left out of the plots
/// (not finite, or beyond ±1e300).
pub fn plot_sweep_noting(
    sweep_dir: &Path,
    plots_dir: &Path,
) -> Result<(Vec<PathBuf>, Option<String>)> {
    register_font();
    let (rows, _axes, note) = read_sweep(&sweep_dir.join("sweep.csv"))?;
    std::fs::create_dir_all(plots_dir).map_err(|e| perr(plots_dir, e))?;
    let mut written = Vec::new();
    let has_rate = rows.iter().any(|r| r.rate.is_some());
    if has_rate {
        written.extend(plot_rate_curves(&rows, plots_dir)?);
    }
    written.extend(plot_jct_cdf(&rows, sweep_dir, plots_dir)?);
    Ok((written, note))
}

/// The metric-versus-rate plots (mean JCT, p99 JCT, per-token latency, and goodput when the
/// sweep has it) of a sweep with a `rate` axis. Returns the files written.
fn plot_rate_curves(rows: &[Row], plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, metric, title, y) in [
        (
            "jct_mean_vs_rate",
            "jct_mean_s",
            "Mean job completion time",
            "mean JCT (s, log)",
        ),
        (
            "jct_p99_vs_rate",
            "jct_p99_s",
            "p99 job completion time",
            "p99 JCT (s, log)",
        ),
        (
            "per_token_vs_rate",
            "per_token_mean_s",
            "Mean per-token latency (JCT / output tokens)",
            "s per token (log)",
        ),
    ] {
        let data = curves(rows, metric);
        if data.is_empty() {
            continue;
        }
        written.extend(both(
            plots_dir,
            name,
            &|a| draw_curves(a, title, y, &data),
            &|a| draw_curves(a, title, y, &data),
        )?);
    }
    let data = curves(rows, "goodput");
    if !data.is_empty() {
        let title = "Goodput: fraction of requests meeting the TTFT and TPOT targets";
        written.extend(both(
            plots_dir,
            "goodput_vs_rate",
            &|a| draw_fraction_curves(a, title, &data),
            &|a| draw_fraction_curves(a, title, &data),
        )?);
    }
    Ok(written)
}

/// The JCT CDF per series at the median rate, first run (lowest seed) of each series, read from
/// the runs' `requests.csv` under `sweep_dir/runs/`. Returns the files written (none when no run
/// has a `requests.csv`).
fn plot_jct_cdf(rows: &[Row], sweep_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut rates: Vec<f64> = rows.iter().filter_map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let pick = rates.get(rates.len() / 2).copied();
    let runs_dir = sweep_dir.join("runs");
    let mut names: BTreeMap<usize, PathBuf> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(&runs_dir) {
        for ent in rd.flatten() {
            let n = ent.file_name().to_string_lossy().to_string();
            if let Some(idx) = n.split('-').next().and_then(|s| s.parse().ok()) {
                names.insert(idx, ent.path());
            }
        }
    }
    let mut cdf: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        if r.rate != pick || cdf.contains_key(&r.series) {
            continue;
        }
        let Some(dir) = names.get(&r.run) else {
            continue;
        };
        let p = dir.join("requests.csv");
        let Ok(mut rdr) = csv::Reader::from_path(&p) else {
            continue;
        };
        let col = rdr
            .headers()
            .ok()
            .and_then(|h| h.iter().position(|c| c == "jct_s"));
        let Some(col) = col else { continue };
        let mut v: Vec<f64> = rdr
            .records()
            .flatten()
            .filter_map(|rec| rec.get(col).and_then(|x| x.parse().ok()))
            .filter(|x: &f64| x.is_finite() && x.abs() <= PLOT_MAX_ABS)
            .collect();
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            cdf.insert(r.series.clone(), v);
        }
    }
    if !cdf.is_empty() {
        let title = match pick {
            Some(x) => format!("JCT CDF at {x} requests/s"),
            None => "JCT CDF".to_string(),
        };
        written.extend(both(
            plots_dir,
            "jct_cdf",
            &|a| draw_cdf(a, &title, &cdf),
            &|a| draw_cdf(a, &title, &cdf),
        )?);
    }
    Ok(written)
}

/// Like [`draw_curves`] on a linear 0–1 y axis (goodput fractions).
fn draw_fraction_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    data: &BTreeMap<String, Curve>,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (x0, x1) = data
        .values()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if x0 > x1 {
        return Err("no data points".into());
    }
    let pad = linear_pad(x0, x1);
    let clamped = clamp_curves(data, &(-0.05..1.1));
    let data = &clamped;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..1.05)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("arrival rate (requests/s)")
        .y_desc("goodput (fraction of requests)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    draw_rate_series(&mut chart, data, SeriesLabelPosition::LowerLeft)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
