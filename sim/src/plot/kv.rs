//! The KV usage plot of a run directory: `kv_timeline.csv` (its header, reader and sample type),
//! the per-replica or summed series drawn from it, and the GPU (and, when anything was swapped
//! out, host) panels with the capacity lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figure::frame;
use super::style::LegendEntry;
use super::ticks::{Ticked, format_tick};
use super::{PLOT_MAX_ABS, both_sized, perr, register_font};
use crate::error::Result;

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

/// Most bytes of a `kv_timeline.csv` read: a run writes at most
/// [`crate::run::KV_TIMELINE_MAX_ROWS`] rows of well under 100 bytes each.
const KV_TIMELINE_MAX_BYTES: u64 = 1 << 30;

/// Parse `kv_timeline.csv`; the header must be [`KV_TIMELINE_HEADER`]. Errors name the line.
pub fn read_kv_timeline(path: &Path) -> Result<Vec<KvSample>> {
    let text = crate::input::read_text(path, KV_TIMELINE_MAX_BYTES).map_err(|e| perr(path, e))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end_matches('\r') == KV_TIMELINE_HEADER => {}
        None => {
            return Err(perr(
                path,
                format!("empty file: expected header `{KV_TIMELINE_HEADER}` on line 1"),
            ));
        }
        Some((_, h)) => {
            let h: String = h.chars().take(80).collect();
            return Err(perr(
                path,
                format!("line 1: expected header `{KV_TIMELINE_HEADER}`, got `{h}`"),
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

/// The KV capacity of one line, in blocks (GPU, host), and the setup line, read from a run
/// directory's `config.json`.
#[derive(Debug, Clone, Default)]
pub struct KvContext {
    pub gpu_blocks: Option<f64>,
    pub host_blocks: Option<f64>,
    pub setup: String,
}

impl KvContext {
    /// From `dir/config.json` (nothing when it is missing or unreadable); `lines_sum` replicas
    /// are summed into each line (capacities scale with it).
    fn of_run(dir: &Path, lines_sum: usize) -> Self {
        let Ok(text) = crate::input::read_text(&dir.join("config.json"), 1 << 22) else {
            return KvContext::default();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return KvContext::default();
        };
        let blocks = |k: &str| {
            v.pointer(&format!("/resolved/{k}"))
                .and_then(serde_json::Value::as_f64)
                .filter(|b| *b > 0.0)
                .map(|b| b * lines_sum as f64)
        };
        let scenario = v.get("scenario").cloned().unwrap_or_default();
        let seed = scenario.get("seed").and_then(serde_json::Value::as_u64);
        let mut setup = super::scenario_setup(&scenario, &seed.into_iter().collect::<Vec<_>>());
        if let Some(p) = scenario
            .pointer("/scheduler/policy")
            .and_then(|p| p.as_str())
        {
            setup = format!("{p} · {setup}");
        }
        if let Some(r) = scenario
            .pointer("/trace/rate_per_s")
            .and_then(|p| p.as_f64())
        {
            setup = format!("{setup} · {} requests/s", super::ticks::format_tick(r));
        }
        KvContext {
            gpu_blocks: blocks("kv_capacity_blocks"),
            host_blocks: blocks("host_kv_blocks"),
            setup,
        }
    }
}

/// At most this many columns per series: a series is reduced to its first, lowest, highest and
/// last value in each (the shape the image can show), which keeps the SVG small.
const KV_COLUMNS: f64 = 1200.0;

/// The step line of `pts` ((time, value), sorted by time) over `t0..t1`, reduced per column
/// (see [`KV_COLUMNS`]) and without repeated points.
fn step_line(pts: &[(f64, f64)], t0: f64, t1: f64) -> Vec<(f64, f64)> {
    let span = (t1 - t0).max(f64::MIN_POSITIVE);
    let col = |t: f64| (((t - t0) / span) * KV_COLUMNS).floor() as i64;
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut k = 0;
    while k < pts.len() {
        let c = col(pts[k].0);
        let start = k;
        while k < pts.len() && col(pts[k].0) == c {
            k += 1;
        }
        let run = &pts[start..k];
        let (lo, hi) = run
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let (first, last) = (run[0], run[run.len() - 1]);
        if let Some(&(_, prev)) = out.last() {
            out.push((first.0, prev));
        }
        for p in [first, (first.0, lo), (first.0, hi), (last.0, last.1)] {
            out.push(p);
        }
    }
    out.dedup();
    out
}

fn draw_kv<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[KvSeries],
    ctx: &KvContext,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
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
    let names: Vec<String> = series.iter().map(|s| s.0.clone()).collect();
    let styles = super::style::styles_for(&names);
    let mut entries: Vec<LegendEntry> = names
        .iter()
        .zip(&styles)
        .map(|(n, st)| LegendEntry {
            marker: None,
            ..LegendEntry::series(n, *st)
        })
        .collect();
    if ctx.gpu_blocks.is_some() {
        entries.push(LegendEntry {
            label: "capacity".into(),
            color: BLACK,
            marker: None,
            hollow: false,
            dashed: true,
        });
    }
    let body = frame(
        root,
        "KV cache blocks in use over time",
        &ctx.setup,
        &entries,
    )?;
    // The host panel only when something was swapped out.
    let mut panels = vec![(g1, ctx.gpu_blocks)];
    if h1 > 0.0 {
        panels.push((h1, ctx.host_blocks));
    }
    let areas = body.split_evenly((panels.len(), 1));
    for (k, (area, &(high, cap))) in areas.iter().zip(panels.iter()).enumerate() {
        let panel = Panel {
            host: k == 1,
            t: t0..t1,
            y_top: high.max(cap.unwrap_or(0.0)).max(1.0) * 1.1,
            capacity: cap,
        };
        draw_kv_panel(area, &panel, series, &styles)?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// One panel of the KV plot: GPU or host blocks, over `t`, up to `y_top`.
struct Panel {
    host: bool,
    t: std::ops::Range<f64>,
    y_top: f64,
    capacity: Option<f64>,
}

fn draw_kv_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    series: &[KvSeries],
    styles: &[super::style::SeriesStyle],
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (what, caption) = if p.host {
        ("host", "host KV blocks in use (swapped out)")
    } else {
        ("GPU", "GPU KV blocks in use")
    };
    let (t0, t1) = (p.t.start, p.t.end);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(10)
        .margin_right(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            Ticked::linear_auto(p.t.clone()),
            Ticked::linear_auto(0.0..p.y_top),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc(format!("{what} blocks used"))
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    if let Some(c) = p.capacity {
        chart
            .draw_series(DashedLineSeries::new(
                [(t0, c), (t1, c)],
                8,
                5,
                BLACK.stroke_width(2),
            ))
            .map_err(|x| e(&x))?;
    }
    for ((_, v), st) in series.iter().zip(styles) {
        let pts: Vec<(f64, f64)> = v
            .iter()
            .map(|q| (q.0, if p.host { q.2 } else { q.1 }))
            .collect();
        // One-pixel lines: plotters' wide lines break at zero-length and reversing segments.
        chart
            .draw_series(LineSeries::new(
                step_line(&pts, t0, t1),
                st.color.stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Write `kv_usage.png` / `kv_usage.svg` into `dir` from parsed `kv_timeline.csv` rows: GPU
/// blocks used (top panel) and host blocks used (bottom, only when any KV was swapped out) over
/// simulated time, per replica or summed (see [`kv_series`]).
pub fn plot_kv_usage(samples: &[KvSample], dir: &Path) -> Result<Vec<PathBuf>> {
    plot_kv(samples, dir, &KvContext::default())
}

/// [`plot_kv_usage`] for the run directory `run_dir`: with the capacity lines and the setup read
/// from its `config.json`.
pub fn plot_kv_usage_of_run(
    run_dir: &Path,
    samples: &[KvSample],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let replicas: BTreeSet<u32> = samples.iter().map(|s| s.replica).collect();
    let summed = if replicas.len() > KV_MAX_REPLICA_LINES {
        replicas.len()
    } else {
        1
    };
    plot_kv(samples, dir, &KvContext::of_run(run_dir, summed))
}

fn plot_kv(samples: &[KvSample], dir: &Path, ctx: &KvContext) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| perr(dir, e))?;
    let series = kv_series(samples);
    let swapped = series.iter().any(|s| s.1.iter().any(|p| p.2 > 0.0));
    let size = if swapped { (960, 840) } else { (960, 500) };
    both_sized(dir, "kv_usage", size, &|a| draw_kv(a, &series, ctx), &|a| {
        draw_kv(a, &series, ctx)
    })
}
