//! CI regression of JCT curves: compare a sweep's `sweep.csv` with a committed golden copy.
//!
//! Rows are matched by their axis values (every column before `requests`), cells by column name;
//! numeric cells are equal when `|a − b| ≤ rel_tol · max(|a|, |b|)` (default `rel_tol = 0`:
//! exact, since runs are deterministic); other cells must be identical. Two rows with the same
//! axis values in either file are an error naming the file and line; missing or extra rows, a
//! column of the golden file missing from the sweep, and different axes are reported as moved.
//! A column the sweep has and the golden file lacks (one added to `sweep.csv` after the golden
//! file was blessed, e.g. the stability columns) is not a regression: it is listed as not
//! compared, and the other columns are still checked; re-bless to include it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Result, SimError};

/// One point that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub point: String,
    pub column: String,
    pub golden: String,
    pub actual: String,
}

type Table = (Vec<String>, BTreeMap<String, Vec<String>>);

/// The largest `sweep.csv` (or golden file) `check` reads: one row per run, so far above any
/// real sweep; a wrong path (`/dev/zero`, a binary) is an error, not a hang.
pub const MAX_SWEEP_CSV_BYTES: u64 = 256 << 20;

/// Where the metrics of a `sweep.csv` header start (its `requests` column): after `run` and the
/// axes. A file whose first column is not `run`, or without `requests` after it, is no sweep.csv
/// (nor a golden file `check --bless` may replace).
pub fn sweep_axes_end(headers: &[String]) -> std::result::Result<usize, String> {
    if headers.first().map(String::as_str) != Some("run") {
        return Err("not a sweep.csv (its first column is not `run`)".into());
    }
    headers
        .iter()
        .position(|h| h == "requests")
        .ok_or_else(|| "not a sweep.csv (no `requests` column)".into())
}

fn read(path: &Path) -> Result<Table> {
    let io = |e: &dyn std::fmt::Display| SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let bytes = crate::input::read_bytes(path, MAX_SWEEP_CSV_BYTES).map_err(|e| io(&e))?;
    let mut rdr = csv::Reader::from_reader(bytes.as_slice());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| io(&e))?
        .iter()
        .map(str::to_string)
        .collect();
    let n_axes = sweep_axes_end(&headers).map_err(|m| io(&m))?;
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) {
            return Err(SimError::Input {
                path: path.to_path_buf(),
                line: 1,
                field: crate::error::echo(h),
                msg: "column given twice in the header".into(),
            });
        }
    }
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| io(&e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let key = headers[1..n_axes]
            .iter()
            .zip(rec.iter().skip(1))
            .map(|(h, v)| format!("{h}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        // Duplicates by value: `1` and `1.0` (or `1e0`) are the same point.
        let same = headers[1..n_axes]
            .iter()
            .zip(rec.iter().skip(1))
            .map(|(h, v)| format!("{h}={}", numeric_form(v)))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(first) = lines.get(&same) {
            return Err(SimError::Input {
                path: path.to_path_buf(),
                line,
                field: "(row)".into(),
                msg: format!(
                    "duplicate point `{}`: the same axis values as line {first}; a sweep.csv has one row per point",
                    crate::error::echo(&key)
                ),
            });
        }
        check_metric_cells(path, line, &headers[n_axes..], rec.iter().skip(n_axes))?;
        lines.insert(same, line);
        rows.insert(key, rec.iter().map(str::to_string).collect());
    }
    Ok((headers, rows))
}

/// A cell as a number when it is a finite one (`1`, `1.0`, `1e0` → `1`), else as written.
fn numeric_form(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => format!("{:e}", x + 0.0),
        _ => v.to_string(),
    }
}

/// Whether `path` reads as a golden file: a `sweep.csv` (a `requests` column, one row per point).
pub fn is_golden(path: &Path) -> bool {
    read(path).is_ok()
}

/// A metric cell that reads as a number must be a finite one: `NaN` or `inf` is a bad field
/// (it can equal nothing within a tolerance), not a value that moved.
fn check_metric_cells<'a>(
    path: &Path,
    line: u64,
    headers: &[String],
    cells: impl Iterator<Item = &'a str>,
) -> Result<()> {
    for (h, c) in headers.iter().zip(cells) {
        if c.trim().parse::<f64>().is_ok_and(|v| !v.is_finite()) {
            return Err(SimError::Input {
                path: path.to_path_buf(),
                line,
                field: crate::error::echo(h),
                msg: format!(
                    "`{}` is not a finite number; a sweep.csv holds finite values or empty cells",
                    crate::error::echo(c)
                ),
            });
        }
    }
    Ok(())
}

fn close(a: &str, b: &str, rel_tol: f64) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= rel_tol * x.abs().max(y.abs()),
        _ => false,
    }
}

/// What [`compare`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// The points that differ (empty = pass).
    pub moved: Vec<Moved>,
    /// Columns of the sweep that the golden file lacks: not compared (not a regression).
    pub unchecked_columns: Vec<String>,
}

/// Compare `actual` with `golden` on the golden file's columns.
pub fn compare(actual: &Path, golden: &Path, rel_tol: f64) -> Result<Comparison> {
    let (ha, ra) = read(actual)?;
    let (hg, rg) = read(golden)?;
    let mut moved = Vec::new();
    let axes = |h: &[String]| h[..h.iter().position(|c| c == "requests").unwrap_or(0)].to_vec();
    if axes(&ha) != axes(&hg) {
        moved.push(Moved {
            point: "(header)".into(),
            column: "axes".into(),
            golden: axes(&hg).join(","),
            actual: axes(&ha).join(","),
        });
    }
    for h in hg.iter().filter(|h| !ha.contains(h)) {
        moved.push(Moved {
            point: "(header)".into(),
            column: h.clone(),
            golden: "present".into(),
            actual: "missing".into(),
        });
    }
    let unchecked_columns: Vec<String> = ha.iter().filter(|h| !hg.contains(h)).cloned().collect();
    if !moved.is_empty() {
        return Ok(Comparison {
            moved,
            unchecked_columns,
        });
    }
    // Each golden column's position in the sweep.
    let at: Vec<usize> = hg
        .iter()
        .map(|h| ha.iter().position(|x| x == h).expect("checked above"))
        .collect();
    for (k, g) in &rg {
        match ra.get(k) {
            None => moved.push(Moved {
                point: k.clone(),
                column: "(row)".into(),
                golden: "present".into(),
                actual: "missing".into(),
            }),
            Some(a) => {
                for (i, h) in hg.iter().enumerate().skip(1) {
                    if !close(&a[at[i]], &g[i], rel_tol) {
                        moved.push(Moved {
                            point: k.clone(),
                            column: h.clone(),
                            golden: g[i].clone(),
                            actual: a[at[i]].clone(),
                        });
                    }
                }
            }
        }
    }
    for k in ra.keys() {
        if !rg.contains_key(k) {
            moved.push(Moved {
                point: k.clone(),
                column: "(row)".into(),
                golden: "missing".into(),
                actual: "present".into(),
            });
        }
    }
    Ok(Comparison {
        moved,
        unchecked_columns,
    })
}

/// A readable report of moved points.
pub fn report(moved: &[Moved]) -> String {
    let mut s = String::new();
    for m in moved {
        let rel = match (m.golden.parse::<f64>(), m.actual.parse::<f64>()) {
            (Ok(g), Ok(a)) if g != 0.0 => format!(" ({:+.3}%)", (a - g) / g.abs() * 100.0),
            _ => String::new(),
        };
        s += &format!(
            "  {}: {} golden {} → actual {}{}\n",
            m.point, m.column, m.golden, m.actual, rel
        );
    }
    s
}
