//! Plots of a sweep directory (PNG and SVG, embedded DejaVu font, no system font libraries):
//! mean JCT, p99 JCT and mean per-token latency versus arrival rate per series (error bars:
//! min–max over seeds), and the JCT CDF per series at one rate.
//!
//! A *series* is one combination of the sweep axes other than `rate` and `seed` (usually the
//! policy).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, SimError};

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
}

fn read_sweep(path: &Path) -> Result<(Vec<Row>, Vec<String>)> {
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
    for rec in rdr.records() {
        let rec = rec.map_err(|e| perr(path, e))?;
        let run: usize = rec[0].parse().map_err(|e| perr(path, e))?;
        let mut series = Vec::new();
        let mut rate = None;
        for (i, a) in axes.iter().enumerate() {
            let v = &rec[i + 1];
            match a.as_str() {
                "rate" => rate = v.parse().ok(),
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
            .map(|(k, h)| (h.clone(), rec[first_metric + k].parse().ok()))
            .collect();
        rows.push(Row {
            run,
            series: if series.is_empty() {
                "all".into()
            } else {
                series.join(" ")
            },
            rate,
            metrics,
        });
    }
    Ok((rows, axes))
}

/// (x, mean, min, max) per series, sorted by x.
type Curve = Vec<(f64, f64, f64, f64)>;

fn curves(rows: &[Row], metric: &str) -> BTreeMap<String, Curve> {
    let mut acc: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in rows {
        if let (Some(x), Some(Some(y))) = (r.rate, r.metrics.get(metric)) {
            acc.entry(r.series.clone())
                .or_default()
                .entry(x.to_bits())
                .or_default()
                .push(*y);
        }
    }
    acc.into_iter()
        .map(|(s, pts)| {
            let mut c: Curve = pts
                .into_iter()
                .map(|(xb, ys)| {
                    let mean = ys.iter().sum::<f64>() / ys.len() as f64;
                    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (f64::from_bits(xb), mean, lo, hi)
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
    for &(x, _, lo, hi) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo.max(1e-6));
        y1 = y1.max(hi.max(1e-6));
    }
    if x0 > x1 {
        return Err("no data points".into());
    }
    let pad = ((x1 - x0) * 0.05).max(0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 * 0.8..y1 * 1.25).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("arrival rate (requests/s)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, c)) in data.iter().enumerate() {
        let col = palette(i);
        chart
            .draw_series(LineSeries::new(
                c.iter().map(|p| (p.0, p.1)),
                col.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
        chart
            .draw_series(c.iter().map(|p| Circle::new((p.0, p.1), 3, col.filled())))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(
                c.iter()
                    .map(|p| ErrorBar::new_vertical(p.0, p.2, p.1, p.3, col, 6)),
            )
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
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
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)
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
            .map(|(k, &x)| (x.max(lo), (k + 1) as f64 / n))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, col.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

const SIZE: (u32, u32) = (960, 600);

type PlotResult = std::result::Result<(), String>;
type PngDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<BitMapBackend<'b>, Shift>) -> PlotResult;
type SvgDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<SVGBackend<'b>, Shift>) -> PlotResult;

fn both(dir: &Path, name: &str, f: PngDraw, g: SvgDraw) -> Result<Vec<PathBuf>> {
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    f(&BitMapBackend::new(&png, SIZE).into_drawing_area()).map_err(|e| perr(&png, e))?;
    g(&SVGBackend::new(&svg, SIZE).into_drawing_area()).map_err(|e| perr(&svg, e))?;
    Ok(vec![png, svg])
}

/// Write every plot of sweep directory `sweep_dir` into `plots_dir`. Returns the files written.
pub fn plot_sweep(sweep_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    let (rows, _axes) = read_sweep(&sweep_dir.join("sweep.csv"))?;
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
