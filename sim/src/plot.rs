//! Plots (PNG and SVG, embedded DejaVu font, no system font libraries). Of a sweep directory:
//! mean JCT, p99 JCT and mean per-token latency versus arrival rate per series (error bars:
//! min–max over seeds), goodput versus rate when the sweep has a `goodput` column, and the JCT
//! CDF per series at one rate. Of a run directory: KV blocks in use over time from
//! `kv_timeline.csv` (when present). Of `servesim capacity`: the capacity bars per policy.
//!
//! Every file is drawn into a hidden temporary sibling and renamed into place, so a failed plot
//! never leaves a truncated image.
//!
//! A *series* is one combination of the sweep axes other than `rate` and `seed` (usually the
//! policy).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, SimError};

mod capacity;
pub use capacity::{CapacityBar, plot_capacity};

fn perr(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: format!("plot: {e}"),
    }
}

/// Register the embedded font once (idempotent).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

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

/// The largest magnitude plotted: a value beyond it (or not finite) is skipped, so that every
/// axis range and its padding stay finite.
const PLOT_MAX_ABS: f64 = 1e300;

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

/// A log axis covering `lo..hi` widened by the factors `below` (< 1) and `above` (> 1): always
/// finite, positive and non-empty (values at or below zero are drawn at its bottom, see
/// [`clamp_to`]).
fn log_axis(lo: f64, hi: f64, below: f64, above: f64) -> std::ops::Range<f64> {
    let lo = if lo.is_finite() {
        lo.clamp(1e-300, PLOT_MAX_ABS)
    } else {
        1e-300
    };
    let hi = if hi.is_finite() {
        hi.clamp(lo, PLOT_MAX_ABS)
    } else {
        lo
    };
    lo * below..hi * above
}

/// Padding for a linear axis over `x0..x1`: 5 % of the span, at least 0.05, and enough to
/// separate the ends when the span is tiny relative to the values.
fn linear_pad(x0: f64, x1: f64) -> f64 {
    let pad = ((x1 - x0) * 0.05).max(0.05);
    if x0 - pad == x0 || x1 + pad == x1 {
        x0.abs().max(x1.abs()) * 0.05
    } else {
        pad
    }
}

/// `v` moved into `range` (a point outside a log axis would map to an infinite pixel).
fn clamp_to(v: f64, range: &std::ops::Range<f64>) -> f64 {
    if v.is_nan() {
        range.start
    } else {
        v.clamp(range.start, range.end)
    }
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

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
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

/// A 2-pixel line of colour `col` through `pts`, labelled `name` in the legend (a short line of
/// its colour).
fn draw_labelled_line<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    pts: impl IntoIterator<Item = (f64, f64)>,
    name: &str,
    col: RGBColor,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    chart
        .draw_series(LineSeries::new(pts, col.stroke_width(2)))
        .map_err(|x| x.to_string())?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
    Ok(())
}

/// The series legend at `position`, in the style every chart here uses.
fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| x.to_string())
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

const SIZE: (u32, u32) = (960, 600);

type PlotResult = std::result::Result<(), String>;
type PngDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<BitMapBackend<'b>, Shift>) -> PlotResult;
type SvgDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<SVGBackend<'b>, Shift>) -> PlotResult;

/// `DIR/NAME.png` and `DIR/NAME.svg`, each drawn into a hidden temporary sibling (same
/// extension, which the bitmap encoder needs) and renamed into place.
fn both(dir: &Path, name: &str, f: PngDraw, g: SvgDraw) -> Result<Vec<PathBuf>> {
    both_sized(dir, name, SIZE, f, g)
}

fn both_sized(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    f: PngDraw,
    g: SvgDraw,
) -> Result<Vec<PathBuf>> {
    let pid = std::process::id();
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    let png_tmp = dir.join(format!(".tmp-{pid}-{name}.png"));
    let svg_tmp = dir.join(format!(".tmp-{pid}-{name}.svg"));
    let drawn = (|| {
        {
            let area = BitMapBackend::new(&png_tmp, size).into_drawing_area();
            f(&area).map_err(|e| perr(&png, e))?;
        }
        {
            let area = SVGBackend::new(&svg_tmp, size).into_drawing_area();
            g(&area).map_err(|e| perr(&svg, e))?;
        }
        std::fs::rename(&png_tmp, &png).map_err(|e| perr(&png, e))?;
        std::fs::rename(&svg_tmp, &svg).map_err(|e| perr(&svg, e))
    })();
    if drawn.is_err() {
        let _ = std::fs::remove_file(&png_tmp);
        let _ = std::fs::remove_file(&svg_tmp);
    }
    drawn?;
    Ok(vec![png, svg])
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
            let data = curves(&rows, metric);
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
        let data = curves(&rows, "goodput");
        if !data.is_empty() {
            let title = "Goodput: fraction of requests meeting the TTFT and TPOT targets";
            written.extend(both(
                plots_dir,
                "goodput_vs_rate",
                &|a| draw_fraction_curves(a, title, &data),
                &|a| draw_fraction_curves(a, title, &data),
            )?);
        }
    }
    // JCT CDF per series at the median rate, first run (lowest seed) of each series.
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
    for r in &rows {
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
    Ok((written, note))
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

/// Header of `kv_timeline.csv` (exactly these columns, in this order).
pub const KV_TIMELINE_HEADER: &str =
    "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped";

/// One sample of `kv_timeline.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvSample {
    pub time_s: f64,
    pub replica: u32,
    pub gpu_blocks_used: u64,
    pub host_blocks_used: u64,
    pub running: u64,
    pub waiting: u64,
    pub swapped: u64,
}

/// Parse `kv_timeline.csv`; the header must be [`KV_TIMELINE_HEADER`]. Errors name the line.
pub fn read_kv_timeline(path: &Path) -> Result<Vec<KvSample>> {
    let text =
        crate::input::read_text(path, crate::input::MAX_DATA_BYTES).map_err(|e| perr(path, e))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end_matches('\r') == KV_TIMELINE_HEADER => {}
        other => {
            return Err(perr(
                path,
                format!(
                    "line 1: expected header `{KV_TIMELINE_HEADER}`, got `{}`",
                    other.map_or("", |(_, h)| h)
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| perr(path, format!("line {}: {what}: `{line}`", i + 1));
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 7 {
            return Err(bad("expected 7 fields"));
        }
        let int = |k: usize| f[k].trim().parse::<u64>().map_err(|_| bad("bad integer"));
        let time_s: f64 = f[0].trim().parse().map_err(|_| bad("bad time_s"))?;
        if !(time_s.is_finite() && (0.0..=PLOT_MAX_ABS).contains(&time_s)) {
            return Err(bad("time_s must be finite, ≥ 0 and ≤ 1e300"));
        }
        out.push(KvSample {
            time_s,
            replica: u32::try_from(int(1)?).map_err(|_| bad("replica out of range"))?,
            gpu_blocks_used: int(2)?,
            host_blocks_used: int(3)?,
            running: int(4)?,
            waiting: int(5)?,
            swapped: int(6)?,
        });
    }
    Ok(out)
}

/// One line of the KV plot: its label and `(time_s, gpu_blocks, host_blocks)` points.
pub type KvSeries = (String, Vec<(f64, f64, f64)>);

/// Per-replica lines at most this many replicas; beyond it, one summed line.
pub const KV_MAX_REPLICA_LINES: usize = 4;

/// The (time, gpu blocks, host blocks) series of the KV plot: one per replica (label `replica
/// N`) for up to [`KV_MAX_REPLICA_LINES`] replicas, otherwise one `all N replicas` series that
/// sums each replica's most recent sample at every sample time (a step-function sum, right
/// whether or not the replicas are sampled at the same instants).
pub fn kv_series(samples: &[KvSample]) -> Vec<KvSeries> {
    let mut by: BTreeMap<u32, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for s in samples {
        by.entry(s.replica).or_default().push((
            s.time_s,
            s.gpu_blocks_used as f64,
            s.host_blocks_used as f64,
        ));
    }
    for v in by.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    if by.len() <= KV_MAX_REPLICA_LINES {
        return by
            .into_iter()
            .map(|(r, v)| (format!("replica {r}"), v))
            .collect();
    }
    let mut all: Vec<&KvSample> = samples.iter().collect();
    all.sort_by(|a, b| {
        a.time_s
            .total_cmp(&b.time_s)
            .then(a.replica.cmp(&b.replica))
    });
    let mut cur: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    let mut sum: Vec<(f64, f64, f64)> = Vec::new();
    let mut k = 0;
    while k < all.len() {
        let t = all[k].time_s;
        while k < all.len() && all[k].time_s == t {
            cur.insert(
                all[k].replica,
                (
                    all[k].gpu_blocks_used as f64,
                    all[k].host_blocks_used as f64,
                ),
            );
            k += 1;
        }
        let (g, h) = cur
            .values()
            .fold((0.0, 0.0), |(g, h), &(a, b)| (g + a, h + b));
        sum.push((t, g, h));
    }
    vec![(format!("all {} replicas", by.len()), sum)]
}

fn draw_kv<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[KvSeries],
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let (mut t1, mut g1, mut h1) = (0.0f64, 0.0f64, 0.0f64);
    let mut t0 = f64::MAX;
    for &(t, g, h) in pts {
        t0 = t0.min(t);
        t1 = t1.max(t);
        g1 = g1.max(g);
        h1 = h1.max(h);
    }
    if t0 == f64::MAX {
        return Err("kv_timeline.csv has no samples".into());
    }
    if t1 <= t0 {
        t1 = t0 + 1.0;
    }
    // Room after the last sample so its value shows.
    t1 += (t1 - t0) * 0.04;
    let panels = root.split_evenly((2, 1));
    for (k, (area, (what, top))) in panels.iter().zip([("GPU", g1), ("host", h1)]).enumerate() {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{what} KV blocks in use over time"),
                ("sans-serif", 20),
            )
            .margin(10)
            .margin_right(24)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(t0..t1, 0.0..(top.max(1.0) * 1.1))
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("simulated time (s)")
            .y_desc(format!("{what} blocks used"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (name, v)) in series.iter().enumerate() {
            let col = palette(i);
            // Step lines: a sample holds until the next one.
            let mut step = Vec::with_capacity(v.len() * 2);
            for (j, p) in v.iter().enumerate() {
                let y = if k == 0 { p.1 } else { p.2 };
                if j > 0 {
                    step.push((p.0, step.last().map_or(y, |q: &(f64, f64)| q.1)));
                }
                step.push((p.0, y));
            }
            draw_labelled_line(&mut chart, step, name, col)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Write `kv_usage.png` / `kv_usage.svg` into `dir` from parsed `kv_timeline.csv` rows: GPU
/// blocks used (top panel) and host blocks used (bottom) over simulated time, per replica or
/// summed (see [`kv_series`]).
pub fn plot_kv_usage(samples: &[KvSample], dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| perr(dir, e))?;
    let series = kv_series(samples);
    both_sized(
        dir,
        "kv_usage",
        (960, 800),
        &|a| draw_kv(a, &series),
        &|a| draw_kv(a, &series),
    )
}

/// `servesim plot DIR`: the sweep plots when DIR has `sweep.csv`, and the KV usage plot when it
/// has `kv_timeline.csv` (silently skipped when it does not), into `DIR/plots/`. A directory
/// with neither `sweep.csv` nor `summary.json` is an error. Returns the files written and a note
/// when values of `sweep.csv` were left out (see [`plot_sweep_noting`]).
pub fn plot_dir(dir: &Path) -> Result<(Vec<PathBuf>, Option<String>)> {
    let plots = dir.join("plots");
    if std::fs::symlink_metadata(&plots).is_ok_and(|m| !m.is_dir()) {
        return Err(perr(
            &plots,
            "exists and is not a directory; the plots go into DIR/plots/: move or rename it",
        ));
    }
    let is_sweep = dir.join("sweep.csv").is_file();
    if !is_sweep && !dir.join("summary.json").is_file() {
        return Err(perr(
            dir,
            "not a sweep directory (no sweep.csv) or a run directory (no summary.json)",
        ));
    }
    let mut written = Vec::new();
    let mut note = None;
    if is_sweep {
        let (files, n) = plot_sweep_noting(dir, &plots)?;
        written.extend(files);
        note = n;
    }
    let kv = dir.join("kv_timeline.csv");
    if kv.is_file() {
        let samples = read_kv_timeline(&kv)?;
        written.extend(plot_kv_usage(&samples, &plots)?);
    }
    Ok((written, note))
}
