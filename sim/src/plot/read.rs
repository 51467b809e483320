//! The `sweep.csv` reader behind the sweep plots: one [`Row`] per line, the values it leaves out
//! (not finite, beyond ±1e300) and those drawn at a log axis's floor (at or below zero, under
//! 1e-6) tallied for one `warning:` line each kind, and a repeated point (two
//! rows with the same axis values, which the figures would average as if they were seeds)
//! refused with its line, as `check` refuses it.

use std::collections::HashMap;
use std::path::Path;

use super::{PLOT_MAX_ABS, perr};
use crate::error::{Result, SimError};

/// One row of sweep.csv.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub run: usize,
    pub series: String,
    pub seed: Option<String>,
    pub rate: Option<f64>,
    /// One value per metric column ([`Sweep::metrics`]), `None` when empty or left out.
    pub metrics: Vec<Option<f64>>,
    /// Its `stable` cell is `false` (see [`crate::metrics::stability`]; a sweep.csv without the
    /// column, or a run that cannot be judged, counts as stable).
    pub unstable: bool,
}

/// A `sweep.csv` as the plots see it.
#[derive(Debug)]
pub(super) struct Sweep {
    pub rows: Vec<Row>,
    /// The metric columns (after the axes), in file order.
    pub metrics: Vec<String>,
    /// One line per kind of value left out or drawn at an axis floor.
    pub notes: Vec<String>,
}

/// The metrics drawn on a log axis (see `plot_rate_curves`).
pub(super) const LOG_AXIS_METRICS: [&str; 5] = [
    "jct_mean_s",
    "jct_p99_s",
    "per_token_mean_s",
    "itl_p99_s",
    "itl_mean_s",
];

/// The bottom of a log axis's data range: a lower value is drawn at the axis's floor.
pub(super) const LOG_AXIS_FLOOR: f64 = 1e-6;

/// Cells of one kind: how many, and where the first one was.
#[derive(Debug, Default)]
struct Tally {
    count: u64,
    first: Option<(u64, String, String)>,
}

impl Tally {
    fn add(&mut self, line: u64, column: &str, text: &str) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((line, column.to_string(), text.to_string()));
        }
    }

    /// "PATH: {what} (first: line L, column `C`, `V`)" with `{n}` in `what` the count.
    fn note(&self, path: &Path, what: &str) -> Option<String> {
        let (line, column, text) = self.first.as_ref()?;
        let text: String = text.chars().take(40).collect();
        Some(format!(
            "{}: {} (first: line {line}, column `{column}`, `{}`)",
            path.display(),
            what.replace("{n}", &self.count.to_string()),
            text.escape_debug()
        ))
    }
}

/// The two kinds of value the figures cannot draw as written.
#[derive(Debug, Default)]
struct Skipped {
    /// Not finite, or beyond ±[`PLOT_MAX_ABS`]: left out.
    wild: Tally,
    /// Under [`LOG_AXIS_FLOOR`] (zero and negative values included) in a log-axis column: drawn
    /// at the bottom of the axis, where the figure keeps a place for it.
    floored: Tally,
}

impl Skipped {
    /// `text` parsed as a plottable number of `column`: `None` (and counted) when it is a number
    /// that is not finite or beyond ±[`PLOT_MAX_ABS`]; `None` (not counted) when it is not a
    /// number; counted when it will be drawn at a log axis's floor.
    fn parse(&mut self, text: &str, line: u64, column: &str) -> Option<f64> {
        let v: f64 = text.trim().parse().ok()?;
        if !(v.is_finite() && v.abs() <= PLOT_MAX_ABS) {
            self.wild.add(line, column, text);
            return None;
        }
        if v < LOG_AXIS_FLOOR && LOG_AXIS_METRICS.contains(&column) {
            self.floored.add(line, column, text);
        }
        Some(v)
    }

    fn notes(&self, path: &Path) -> Vec<String> {
        [
            self.wild.note(path, "left {n} value(s) out of the plots that are not finite or beyond ±1e300"),
            self.floored.note(path, "drew {n} value(s) at or below zero or under 1e-6 at the bottom of their log axis, not at their value (a log axis cannot show them)"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The run index of `cell` (line `line`, column `column`).
fn run_index(path: &Path, line: u64, column: &str, cell: &str) -> Result<usize> {
    cell.trim().parse().map_err(|_| {
        let cell: String = cell.chars().take(40).collect();
        perr(
            path,
            format!(
                "line {line}, column `{column}`: expected a run index (a non-negative integer), got `{}`",
                cell.escape_debug()
            ),
        )
    })
}

/// "policy=fcfs rate=0.5": the axis values of `rec`.
fn shown(axes: &[String], rec: &csv::StringRecord) -> String {
    let cells = axes.iter().zip(rec.iter().skip(1));
    cells
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read `path` (a sweep.csv): an error when it is no sweep.csv, has no rows, a bad run index, or
/// two rows with the same axis values (`1` and `1.0` are the same value).
pub(super) fn read_sweep(path: &Path) -> Result<Sweep> {
    let buf = crate::input::open_bounded(path, crate::check::MAX_SWEEP_CSV_BYTES)
        .map_err(|e| perr(path, e))?;
    let mut rdr = csv::Reader::from_reader(buf);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| perr(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let first_metric = crate::check::sweep_axes_end(&headers).map_err(|m| perr(path, m))?;
    let axes = &headers[1..first_metric];
    let stable_at = headers.iter().position(|h| h == "stable");
    let mut rows = Vec::new();
    let mut skipped = Skipped::default();
    let mut points: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| perr(path, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let run = run_index(path, line, &headers[0], &rec[0])?;
        let point = rec.iter().skip(1).take(axes.len());
        let point: Vec<String> = point.map(crate::sweep::numeric_form).collect();
        if let Some(first) = points.insert(point.join("\u{1f}"), line) {
            return Err(SimError::Input {
                path: path.to_path_buf(),
                line,
                field: "(row)".into(),
                msg: format!(
                    "duplicate point `{}`: the same axis values as line {first}; a sweep.csv has one row per point (the plots would average the two as if they were seeds)",
                    crate::error::echo(&shown(axes, &rec))
                ),
            });
        }
        let mut series = Vec::new();
        let (mut rate, mut seed) = (None, None);
        for (a, v) in axes.iter().zip(rec.iter().skip(1)) {
            match a.as_str() {
                "rate" => rate = skipped.parse(v, line, a),
                "seed" => seed = Some(v.to_string()),
                _ if axes.len() > 3 => series.push(format!("{a}={v}")),
                _ => series.push(v.to_string()),
            }
        }
        let metrics = headers[first_metric..]
            .iter()
            .zip(rec.iter().skip(first_metric))
            .map(|(h, v)| skipped.parse(v, line, h))
            .collect();
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
            unstable: stable_at.is_some_and(|i| rec.get(i) == Some("false")),
        });
    }
    if rows.is_empty() {
        return Err(perr(path, "nothing to plot: no rows under the header"));
    }
    Ok(Sweep {
        rows,
        metrics: headers[first_metric..].to_vec(),
        notes: skipped.notes(path),
    })
}
