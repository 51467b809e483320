//! Drawing the sweep figures: a metric versus arrival rate (one line, marker and min–max error
//! bar per series; hollow markers and dashed segments where a run was unstable; an optional
//! target line) and the JCT CDF. Each has the two-line title and the legend beside the plot.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;

use super::style::{
    LegendEntry, SeriesStyle, draw_marker, draw_order, draw_side_legend, draw_title, legend_width,
};
use super::ticks::{Ticked, format_tick, rate_ticks};
use super::{clamp_to, linear_pad, log_axis};

/// (x, mean, min, max, unstable) of one rate: `unstable` when any seed's run there is.
pub type Point = (f64, f64, f64, f64, bool);
/// One series' points, sorted by x.
pub type Curve = Vec<Point>;

pub type PlotResult = std::result::Result<(), String>;

/// A metric-versus-rate figure.
pub struct RateFigure<'a> {
    pub title: &'a str,
    pub setup: &'a str,
    pub y_desc: &'a str,
    /// Series in legend (sweep) order.
    pub data: &'a [(String, Curve)],
    pub styles: &'a BTreeMap<String, SeriesStyle>,
    /// A log y axis; otherwise a 0–1 fraction axis.
    pub log_y: bool,
    /// A horizontal target line and its legend label.
    pub target: Option<(f64, String)>,
}

/// The style of `name` (black circles if it is missing from `styles`).
fn style_of(styles: &BTreeMap<String, SeriesStyle>, name: &str) -> SeriesStyle {
    styles.get(name).copied().unwrap_or(SeriesStyle {
        color: BLACK,
        marker: super::style::Marker::Circle,
        size: 5,
    })
}

/// White background, the title, and the legend on the right; returns the area left for the
/// plot.
pub fn frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    setup: &str,
    entries: &[LegendEntry],
) -> std::result::Result<DrawingArea<DB, Shift>, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let top = draw_title(root, title, setup)?;
    let (w, _) = root.dim_in_pixel();
    let body = root.margin(top as u32, 0, 0, 0);
    if entries.is_empty() {
        return Ok(body);
    }
    let lw = legend_width(root, entries, w * 2 / 5);
    let (plot, legend) = body.split_horizontally(w - lw);
    draw_side_legend(&legend, entries, 24)?;
    Ok(plot)
}

/// Legend entries of `data` (in order), the unstable-run key when any point is unstable, and
/// the target line's.
fn rate_legend(fig: &RateFigure) -> Vec<LegendEntry> {
    let mut entries: Vec<LegendEntry> = fig
        .data
        .iter()
        .map(|(n, _)| LegendEntry::series(n, style_of(fig.styles, n)))
        .collect();
    let grey = RGBColor(90, 90, 90);
    if fig.data.iter().flat_map(|(_, c)| c).any(|p| p.4) {
        entries.push(LegendEntry {
            label: "hollow, dashed: unstable run".into(),
            color: grey,
            marker: Some(SeriesStyle {
                color: grey,
                marker: super::style::Marker::Circle,
                size: 5,
            }),
            hollow: true,
            dashed: true,
        });
    }
    if let Some((_, label)) = &fig.target {
        entries.push(LegendEntry {
            label: label.clone(),
            color: BLACK,
            marker: None,
            hollow: false,
            dashed: true,
        });
    }
    entries
}

/// Draw `fig` onto `root`.
pub fn draw_rate_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &RateFigure,
) -> PlotResult {
    let entries = rate_legend(fig);
    let area = frame(root, fig.title, fig.setup, &entries)?;
    let pts = fig.data.iter().flat_map(|(_, c)| c.iter());
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
    let rates: Vec<f64> = fig
        .data
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .collect();
    let x_axis = Ticked::linear(
        (x0 - pad)..(x1 + pad),
        rate_ticks(&rates, x0 - pad, x1 + pad),
    );
    if fig.log_y {
        if let Some((t, _)) = fig.target
            && t.is_finite()
            && t > 0.0
        {
            y0 = y0.min(t);
            y1 = y1.max(t);
        }
        let range = log_axis(y0, y1, 0.8, 1.25);
        rate_chart(root, &area, fig, x_axis, Ticked::log(range.clone()), range)
    } else {
        let range = 0.0..1.05;
        let y = Ticked::linear_auto(range);
        rate_chart(root, &area, fig, x_axis, y, -0.05..1.1)
    }
}

/// The chart of [`draw_rate_figure`] on axes `x`, `y`, values clamped into `clamp`.
fn rate_chart<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    fig: &RateFigure,
    x: Ticked<plotters::coord::types::RangedCoordf64>,
    y: Y,
    clamp: std::ops::Range<f64>,
) -> PlotResult
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let yr = y.range();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(8)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("arrival rate (requests/s)")
        .y_desc(fig.y_desc)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    let c = |v: f64| clamp_to(v, &clamp);
    if let Some((t, _)) = &fig.target {
        let xr = chart.x_range();
        let t = clamp_to(*t, &yr);
        chart
            .draw_series(DashedLineSeries::new(
                [(xr.start, t), (xr.end, t)],
                8,
                5,
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    // Error bars, lines (the first series on top), markers (see `draw_markers`).
    for (name, curve) in fig.data {
        let col = style_of(fig.styles, name).color;
        chart
            .draw_series(
                curve
                    .iter()
                    .map(|p| ErrorBar::new_vertical(p.0, c(p.2), c(p.1), c(p.3), col.mix(0.8), 8)),
            )
            .map_err(|x| e(&x))?;
    }
    for (name, curve) in fig.data.iter().rev() {
        let col = style_of(fig.styles, name).color;
        for w in curve.windows(2) {
            let seg = [(w[0].0, c(w[0].1)), (w[1].0, c(w[1].1))];
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
    }
    let mut marks: Vec<(SeriesStyle, usize, (i32, i32), bool)> = Vec::new();
    for (k, (name, curve)) in fig.data.iter().enumerate() {
        let st = style_of(fig.styles, name);
        for p in curve {
            marks.push((st, k, chart.backend_coord(&(p.0, c(p.1))), p.4));
        }
    }
    draw_markers(root, marks)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Draw `marks` (style, series index, pixel, hollow) in [`draw_order`], earlier series on top.
fn draw_markers<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    mut marks: Vec<(SeriesStyle, usize, (i32, i32), bool)>,
) -> PlotResult {
    marks.sort_by_key(|m| (draw_order(&m.0), std::cmp::Reverse(m.1)));
    for (st, _, at, hollow) in marks {
        draw_marker(root, at, &st, hollow)?;
    }
    Ok(())
}

/// Draw the JCT CDF of each series in `data` (sorted JCTs, in legend order) onto `root`, with
/// markers at five fractions, shifted per series so that equal curves keep their markers apart.
pub fn draw_cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    setup: &str,
    data: &[(String, Vec<f64>)],
    styles: &BTreeMap<String, SeriesStyle>,
) -> PlotResult {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let entries: Vec<LegendEntry> = data
        .iter()
        .map(|(n, _)| LegendEntry::series(n, style_of(styles, n)))
        .collect();
    let area = frame(root, title, setup, &entries)?;
    let all = || data.iter().flat_map(|(_, v)| v.iter().copied());
    let lo = all().fold(f64::INFINITY, f64::min).max(1e-3);
    let hi = all().fold(0.0, f64::max).max(lo * 10.0);
    let x_axis = log_axis(lo, hi, 0.9, 1.1);
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .margin_right(8)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(Ticked::log(x_axis.clone()), Ticked::linear_auto(0.0..1.0))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("job completion time (s, log)")
        .y_desc("fraction of requests")
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    let mut marks = Vec::new();
    for (i, (name, v)) in data.iter().enumerate().rev() {
        if v.is_empty() {
            continue;
        }
        let st = style_of(styles, name);
        let n = v.len() as f64;
        let step = (v.len() / 2000).max(1);
        let at = |k: usize| (clamp_to(v[k].max(lo), &x_axis), (k + 1) as f64 / n);
        let pts: Vec<(f64, f64)> = (0..v.len())
            .filter(|k| k % step == 0 || *k + 1 == v.len())
            .map(at)
            .collect();
        chart
            .draw_series(LineSeries::new(pts, st.color.stroke_width(2)))
            .map_err(|x| e(&x))?;
        for f in [0.05, 0.25, 0.45, 0.65, 0.85] {
            let q = f + 0.2 * i as f64 / data.len() as f64;
            let k = ((q * n) as usize).min(v.len() - 1);
            marks.push((st, i, chart.backend_coord(&at(k)), false));
        }
    }
    draw_markers(root, marks)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
