//! `report <profile>`: measured vs fitted per operator, as text and as a PNG (one log–log panel
//! per operator: measured points and the fitted curve, one series per `y` value for
//! two-dimensional operators).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use servesim::profile::{Measurement, Op, OpFit, Profile};

use crate::fitting::{fit_rows, merge_points};

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// At most `n` items spread evenly over `v` (first and last included).
fn spread<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n || n < 2 {
        return v.to_vec();
    }
    (0..n)
        .map(|i| v[i * (v.len() - 1) / (n - 1)].clone())
        .collect()
}

/// The text report. `all_points`: every distinct shape instead of a sample per operator.
pub fn text_report(dir: &Path, p: &Profile, all_points: bool) -> String {
    let mut s = String::new();
    write_summary(&mut s, dir, p);
    write_points(&mut s, p, all_points);
    s
}

/// The profile's header lines, the per-operator fit table and the fitted parameters.
fn write_summary(s: &mut String, dir: &Path, p: &Profile) {
    let m = &p.meta;
    let _ = writeln!(s, "profile {}", dir.display());
    let _ = writeln!(
        s,
        "  {} / {} / tp{} on {} ({}), schema {}, created {} by {}",
        m.gpu, m.model, m.tp, m.device.name, m.source, m.schema_version, m.created, m.tool
    );
    let _ = writeln!(
        s,
        "  {} {} of {} repeats ({} warm-up); iteration overhead {} s",
        m.measurement.dtype,
        m.measurement.statistic,
        m.measurement
            .repeats
            .map_or("unrecorded".into(), |r| r.to_string()),
        m.measurement
            .warmup
            .map_or("unrecorded".into(), |r| r.to_string()),
        p.fit.iteration_overhead_s
    );
    let _ = writeln!(
        s,
        "\n{:<20} {:<9} {:>5}  {:<22} {:<22} {:>8} {:>8} {:>8}  over",
        "operator", "form", "rows", "x range", "y range", "median", "mean", "max"
    );
    for op in Op::ALL {
        let (Some(g), Some(r)) = (m.grid.get(op.name()), m.fit.get(op.name())) else {
            continue;
        };
        let (xn, yn) = op.axes();
        let _ = writeln!(
            s,
            "{:<20} {:<9} {:>5}  {:<22} {:<22} {:>8} {:>8} {:>8}  {}",
            op.name(),
            r.form,
            g.rows,
            format!("{}–{} {}", g.x_min, g.x_max, xn),
            if yn == "-" {
                "-".to_string()
            } else {
                format!("{}–{}", g.y_min, g.y_max)
            },
            pct(r.median_rel_err),
            pct(r.mean_rel_err),
            pct(r.max_rel_err),
            r.over
        );
    }
    let _ = writeln!(s, "\nfitted parameters (fit.toml):");
    for (name, f) in &p.fit.ops {
        let params: Vec<String> = f
            .params()
            .iter()
            .map(|(k, v)| format!("{k} = {v:e}"))
            .collect();
        let _ = writeln!(
            s,
            "  {name:<20} {:<9} {}",
            f.form().name(),
            params.join(", ")
        );
    }
}

/// Measured vs fitted at every shape (`all_points`) or a sample of them per operator.
fn write_points(s: &mut String, p: &Profile, all_points: bool) {
    let _ = writeln!(
        s,
        "\nmeasured vs fitted ({}):\n{:<20} {:>10} {:>10} {:>13} {:>13} {:>8}",
        if all_points {
            "every shape, median of its rows"
        } else {
            "a sample of shapes per operator; --all-points for every one"
        },
        "operator",
        "x",
        "y",
        "measured_s",
        "fitted_s",
        "error"
    );
    for op in Op::ALL {
        let Some(f) = p.op_fit(op) else { continue };
        let (rows, _) = fit_rows(&p.rows, op);
        let pts = merge_points(&rows);
        let pts = if all_points { pts } else { spread(&pts, 8) };
        for (x, y, t) in pts {
            let fv = f.eval(x, y);
            let _ = writeln!(
                s,
                "{:<20} {:>10} {:>10} {:>13.4e} {:>13.4e} {:>+7.1}%",
                op.name(),
                x,
                y,
                t,
                fv,
                100.0 * (fv / t - 1.0)
            );
        }
    }
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Series of one operator's panel: (label, measured points, fitted curve).
type Series = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

fn panel_series(op: Op, f: &OpFit, rows: &[&Measurement]) -> Vec<Series> {
    let pts = merge_points(rows);
    let mut by_y: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for (x, y, t) in &pts {
        by_y.entry(*y as u64).or_default().push((*x, *t));
    }
    let ys: Vec<u64> = by_y.keys().copied().collect();
    let keep = spread(&ys, 4);
    keep.into_iter()
        .map(|y| {
            let v = by_y.remove(&y).unwrap_or_default();
            let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
            let curve: Vec<(f64, f64)> = (0..=60)
                .map(|i| {
                    let x = lo * (hi / lo).powf(i as f64 / 60.0);
                    (x, f.eval(x, y as f64))
                })
                .collect();
            let label = if op.axes().1 == "-" {
                String::new()
            } else {
                format!("y = {y}")
            };
            (label, v, curve)
        })
        .collect()
}

/// Draw the PNG report (`width` × `height` grows with the number of operators).
pub fn plot_report(p: &Profile, png: &Path) -> Result<()> {
    servesim::plot::register_font();
    let ops: Vec<Op> = Op::ALL
        .into_iter()
        .filter(|op| p.op_fit(*op).is_some() && p.rows_of(*op).next().is_some())
        .collect();
    if ops.is_empty() {
        return Err(anyhow!("the profile has no fitted operators to plot"));
    }
    if let Some(parent) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let cols = 3usize;
    let rows = ops.len().div_ceil(cols);
    let size = (1500u32, 420 * rows as u32);
    let root = BitMapBackend::new(png, size).into_drawing_area();
    let e = |x: &dyn std::fmt::Display| anyhow!("plot {}: {x}", png.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = format!(
        "{} / {} / tp{} ({}): measured (points) vs fitted (lines)",
        p.meta.gpu, p.meta.model, p.meta.tp, p.meta.source
    );
    let (top, body) = root.split_vertically(40);
    top.titled(&title, ("sans-serif", 24)).map_err(|x| e(&x))?;
    let panels = body.split_evenly((rows, cols));
    for (panel, op) in panels.iter().zip(&ops) {
        let f = p.op_fit(*op).expect("filtered");
        let (rs, over) = fit_rows(&p.rows, *op);
        let series = panel_series(*op, f, &rs);
        let (x0, x1, y0, y1) = series_bounds(&series);
        let caption = panel_caption(p, *op, f, over);
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(62)
            .build_cartesian_2d(
                (x0 * 0.8..x1 * 1.25).log_scale(),
                (y0 * 0.8..y1 * 1.25).log_scale(),
            )
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(6)
            .y_labels(6)
            .x_desc(op.axes().0)
            .y_desc("seconds")
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (label, pts, curve)) in series.into_iter().enumerate() {
            let col = COLORS[i % COLORS.len()];
            chart
                .draw_series(pts.iter().map(|&q| Circle::new(q, 2, col.filled())))
                .map_err(|x| e(&x))?;
            let line = chart
                .draw_series(LineSeries::new(curve, col.stroke_width(2)))
                .map_err(|x| e(&x))?;
            if !label.is_empty() {
                line.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2))
                });
            }
        }
        if op.axes().1 != "-" {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(|x| e(&x))?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The log–log axes' range: the positive points and curves of the series (x widened to a
/// factor of 2 when it is one value).
fn series_bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let all = series.iter().flat_map(|s| s.1.iter().chain(s.2.iter()));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, 0.0f64, f64::INFINITY, 0.0f64);
    for &(x, y) in all {
        if x > 0.0 && y > 0.0 {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x1 <= x0 {
        x1 = x0 * 2.0;
    }
    (x0, x1, y0, y1)
}

/// A panel's caption: operator, fitted form, whether its rows are derived, median error.
fn panel_caption(p: &Profile, op: Op, f: &OpFit, over: &str) -> String {
    let residual = p.meta.fit.get(op.name()).map_or(String::new(), |r| {
        format!(", median err {}", pct(r.median_rel_err))
    });
    format!(
        "{} ({}{}{residual})",
        op.name(),
        f.form().name(),
        if over == "derived" { ", derived" } else { "" }
    )
}

/// `servesim-calibrate report`: the text report on `out` and the plot into `png` (default
/// results/calibrate/GPU-MODEL-tpK.png), which replaces an existing file only with `force`.
pub fn report_cmd(
    profile: &Path,
    png: Option<std::path::PathBuf>,
    all_points: bool,
    force: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let p = Profile::load(profile)?;
    let png = png.unwrap_or_else(|| {
        std::path::PathBuf::from("results/calibrate").join(format!(
            "{}-{}-tp{}.png",
            p.meta.gpu, p.meta.model, p.meta.tp
        ))
    });
    // Checked before the report is printed: a .png file, never inside the profile.
    if png
        .extension()
        .is_none_or(|x| !x.eq_ignore_ascii_case("png"))
    {
        anyhow::bail!("{}: --png must name a .png file", png.display());
    }
    servesim::output::check_file_dest(&png, std::slice::from_ref(&profile.to_path_buf()), force)?;
    write!(out, "{}", text_report(profile, &p, all_points))?;
    let staged = servesim::output::StagedFile::new(&png, force)?;
    plot_report(&p, staged.path())?;
    staged.commit()?;
    writeln!(out, "\nplot: {}", png.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_the_ends() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&v, 4), vec![0, 3, 6, 9]);
        assert_eq!(spread(&v[..3], 4), vec![0, 1, 2]);
    }
}
