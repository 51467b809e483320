//! The KV usage plot of a run directory: `kv_timeline.csv` (its header, reader and sample type),
//! the per-replica or summed series drawn from it, and the two-panel GPU/host chart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    PLOT_MAX_ABS, both_sized, draw_labelled_line, draw_legend, palette, perr, register_font,
};
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
