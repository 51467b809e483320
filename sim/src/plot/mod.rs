//! Plots (PNG and SVG, embedded DejaVu font, no system font libraries). Of a sweep directory:
//! mean JCT, p99 JCT, mean per-token latency and inter-token latency versus arrival rate per
//! series (error bars: min–max over seeds), goodput versus rate when the sweep has a `goodput`
//! column, and the JCT CDF per series at one rate. Of a run directory: KV blocks in use over time
//! from `kv_timeline.csv` (when present). Of `servesim capacity`: the capacity bars per policy.
//!
//! Every figure's title says what it shows and, under it, the setup (model, GPUs, trace,
//! requests, seeds, what the error bars are). A policy has the same colour and marker in every
//! figure ([`style`]); the legend sits beside the plot; tick labels come from [`ticks`].
//!
//! Every file is drawn into a hidden temporary sibling and renamed into place, so a failed plot
//! never leaves a truncated image.
//!
//! A *series* is one combination of the sweep axes other than `rate` and `seed` (usually the
//! policy).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, SimError};

mod capacity;
mod figure;
mod kv;
mod read;
mod setup;
pub mod style;
mod sweep;
pub mod ticks;
pub use capacity::{CapacityBar, plot_capacity, plot_capacity_with_setup};
pub use kv::{
    KV_MAX_REPLICA_LINES, KV_TIMELINE_HEADER, KvSample, KvSeries, kv_series, plot_kv_usage,
    read_kv_timeline,
};
pub use setup::scenario_setup;
pub use sweep::{SweepPlotOptions, plot_sweep, plot_sweep_noting};

fn perr(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: format!("plot: {e}"),
    }
}

/// Whether the input file `path` is there: `false` when nothing is, an error when something
/// other than a regular file is (a pipe would block or be misreported as missing).
fn present(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(_) => Err(perr(
            path,
            "is not a regular file (a directory, named pipe, socket or device); plot reads only the files a run or sweep wrote",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(perr(path, e)),
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

/// The largest magnitude plotted: a value beyond it (or not finite) is skipped, so that every
/// axis range and its padding stay finite.
const PLOT_MAX_ABS: f64 = 1e300;

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

const SIZE: (u32, u32) = (960, 600);

type PlotResult = std::result::Result<(), String>;
type PngDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<BitMapBackend<'b>, Shift>) -> PlotResult;
type SvgDraw<'a> = &'a dyn for<'b> Fn(&DrawingArea<SVGBackend<'b>, Shift>) -> PlotResult;

thread_local! {
    /// The figures [`both_sized`] has put in place since [`plot_dir`] began on this thread: they
    /// join the output's marker even when the plot stops part-way (an error or Ctrl-C), so that
    /// the next `plot` does not take them for the user's.
    static DRAWN: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether [`plot_dir`] runs on this thread: only `plot` stops between figures on Ctrl-C
    /// (a sweep, merge or capacity that finished its runs draws its plots whatever comes).
    static STOPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An error when Ctrl-C or SIGTERM asked `plot` to stop (checked between figures).
fn stop_if_interrupted(dir: &Path) -> Result<()> {
    if STOPS.with(|s| s.get()) && crate::interrupt::interrupted() {
        return Err(perr(
            dir,
            format!(
                "{} stopped the plot; the figures drawn before it are in place",
                crate::interrupt::signal_name()
            ),
        ));
    }
    Ok(())
}

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
    let png_tmp = dir.join(format!(".{name}.servesim-tmp-{pid}.png"));
    let svg_tmp = dir.join(format!(".{name}.servesim-tmp-{pid}.svg"));
    let drawn = (|| {
        stop_if_interrupted(dir)?;
        {
            let area = BitMapBackend::new(&png_tmp, size).into_drawing_area();
            f(&area).map_err(|e| perr(&png, e))?;
        }
        {
            let area = SVGBackend::new(&svg_tmp, size).into_drawing_area();
            g(&area).map_err(|e| perr(&svg, e))?;
        }
        stop_if_interrupted(dir)?;
        std::fs::rename(&png_tmp, &png).map_err(|e| perr(&png, e))?;
        DRAWN.with(|d| d.borrow_mut().push(png.clone()));
        std::fs::rename(&svg_tmp, &svg).map_err(|e| perr(&svg, e))?;
        DRAWN.with(|d| d.borrow_mut().push(svg.clone()));
        Ok(())
    })();
    if drawn.is_err() {
        let _ = std::fs::remove_file(&png_tmp);
        let _ = std::fs::remove_file(&svg_tmp);
    }
    drawn?;
    Ok(vec![png, svg])
}

/// `servesim plot DIR`: the sweep plots when DIR has `sweep.csv`, and the KV usage plot when it
/// has `kv_timeline.csv` (silently skipped when it does not), into `DIR/plots/`. A directory
/// with neither `sweep.csv` nor `summary.json` is an error, and so is a `DIR/plots/` holding
/// files when DIR is not a servesim output and an earlier `plot` did not write them all (they
/// may be the user's; `plot` adds the files it writes to the marker of the servesim output, or
/// marks the `plots/` it fills elsewhere). Returns the files written and one note
/// line per thing the plots left out or changed (see [`plot_sweep_noting`]).
pub fn plot_dir(dir: &Path, opts: &SweepPlotOptions) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let plots = dir.join("plots");
    if std::fs::symlink_metadata(&plots).is_ok_and(|m| !m.is_dir()) {
        return Err(perr(
            &plots,
            "exists and is not a directory; the plots go into DIR/plots/: move or rename it",
        ));
    }
    crate::staging::clean_plot_debris(&plots);
    let servesims = crate::staging::is_servesim_output(dir);
    let occupied = std::fs::read_dir(&plots).is_ok_and(|mut d| d.next().is_some());
    if occupied && !servesims && !crate::staging::only_servesim_entries(&plots)? {
        return Err(perr(
            &plots,
            "already holds files, and this directory was not written by servesim, so they may be yours: plotting would replace any of the same name; move them, or plot a copy of the data",
        ));
    }
    // In a servesim output, what its marker does not list is the user's (round 8, case 15: a
    // `plots/kv_usage.png` of theirs was replaced and then listed as servesim's).
    let foreign = crate::staging::unlisted_under(dir, "plots")?;
    if servesims && !foreign.is_empty() {
        return Err(perr(
            &plots,
            format!(
                "holds {} that servesim did not write, so they may be yours: plotting would replace any of the same name and count them as servesim's; move them, or plot a copy of the data",
                foreign
                    .iter()
                    .take(3)
                    .map(|f| format!("`{}`", crate::error::echo(f)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let is_sweep = present(&dir.join("sweep.csv"))?;
    if !is_sweep && !present(&dir.join("summary.json"))? {
        return Err(perr(
            dir,
            "not a sweep directory (no sweep.csv) or a run directory (no summary.json)",
        ));
    }
    DRAWN.with(|d| d.borrow_mut().clear());
    STOPS.with(|s| s.set(true));
    let plotted = plot_each(dir, &plots, is_sweep, opts);
    STOPS.with(|s| s.set(false));
    let written = DRAWN.with(|d| std::mem::take(&mut *d.borrow_mut()));
    // In a servesim output the files join its marker; elsewhere `plots/` gets its own.
    if !written.is_empty() && !crate::staging::add_to_marker(dir, &written)? {
        crate::staging::mark_dir(&plots)?;
    }
    Ok((written, plotted?))
}

/// The figures of [`plot_dir`] (the sweep's, then the KV usage), into `plots`; the notes.
fn plot_each(
    dir: &Path,
    plots: &Path,
    is_sweep: bool,
    opts: &SweepPlotOptions,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if is_sweep {
        notes = plot_sweep_noting(dir, plots, opts)?.1;
    }
    let kv = dir.join("kv_timeline.csv");
    if present(&kv)? {
        let samples = read_kv_timeline(&kv)?;
        if samples.is_empty() {
            return Err(perr(&kv, "nothing to plot: no samples under the header"));
        }
        kv::plot_kv_usage_of_run(dir, &samples, plots)?;
    }
    Ok(notes)
}
