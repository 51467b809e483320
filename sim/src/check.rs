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

use std::collections::HashMap;
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

/// A sweep.csv (or golden file) read row by row, never whole (a 240 MB file held as bytes,
/// then as a `String` per cell, took 3.2 GB), its header checked on opening (first column
/// `run`, a `requests` column, no column twice).
struct SweepReader<'a> {
    path: &'a Path,
    rdr: csv::Reader<std::io::BufReader<crate::input::Bounded<crate::input::Opened>>>,
    headers: Vec<String>,
    n_axes: usize,
}

fn io_err(path: &Path, e: &dyn std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl<'a> SweepReader<'a> {
    fn open(path: &'a Path) -> Result<SweepReader<'a>> {
        let buf =
            crate::input::open_bounded(path, MAX_SWEEP_CSV_BYTES).map_err(|e| io_err(path, &e))?;
        let mut rdr = csv::Reader::from_reader(buf);
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| io_err(path, &e))?
            .iter()
            .map(str::to_string)
            .collect();
        let n_axes = sweep_axes_end(&headers).map_err(|m| io_err(path, &m))?;
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
        Ok(SweepReader {
            path,
            rdr,
            headers,
            n_axes,
        })
    }

    /// Each row (no two with the same axis values, finite metric cells) given to `each` with
    /// its key (`axis=value` joined by spaces), in file order.
    fn rows(mut self, mut each: impl FnMut(&str, &csv::StringRecord) -> Result<()>) -> Result<()> {
        let (path, headers, n_axes) = (self.path, &self.headers, self.n_axes);
        let mut lines: HashMap<Box<str>, u64> = HashMap::new();
        let mut rec = csv::StringRecord::new();
        while self
            .rdr
            .read_record(&mut rec)
            .map_err(|e| io_err(path, &e))?
        {
            let line = rec.position().map_or(0, |p| p.line());
            let pairs = || headers[1..n_axes].iter().zip(rec.iter().skip(1));
            let key = pairs().map(|(h, v)| format!("{h}={v}"));
            let key = key.collect::<Vec<_>>().join(" ");
            // Duplicates by value: `1` and `1.0` (or `1e0`) are the same point.
            let same = pairs().map(|(h, v)| format!("{h}={}", crate::sweep::numeric_form(v)));
            let same = same.collect::<Vec<_>>().join(" ");
            if let Some(first) = lines.get(same.as_str()) {
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
            lines.insert(same.into(), line);
            each(&key, &rec)?;
        }
        Ok(())
    }
}

/// One row of the sweep, held compactly: its cells in one string.
struct Row {
    key: Box<str>,
    text: Box<str>,
    /// Where each cell of `text` ends.
    ends: Box<[u32]>,
}

impl Row {
    fn new(key: &str, rec: &csv::StringRecord) -> Row {
        let mut text = String::with_capacity(rec.as_slice().len());
        let mut ends = Vec::with_capacity(rec.len());
        for c in rec {
            text.push_str(c);
            ends.push(u32::try_from(text.len()).expect("a row under MAX_SWEEP_CSV_BYTES"));
        }
        Row {
            key: key.into(),
            text: text.into(),
            ends: ends.into(),
        }
    }

    fn cell(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// Whether `path` reads as a golden file: a `sweep.csv` (a `requests` column, one row per point).
pub fn is_golden(path: &Path) -> bool {
    SweepReader::open(path)
        .and_then(|r| r.rows(|_, _| Ok(())))
        .is_ok()
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

/// Compare `actual` with `golden` on the golden file's columns: the sweep is held (compactly,
/// sorted by key), the golden file streamed past it.
pub fn compare(actual: &Path, golden: &Path, rel_tol: f64) -> Result<Comparison> {
    compare_holding(actual, golden, rel_tol).map(|(c, _)| c)
}

/// [`compare`], with the bytes of row text it held (the sweep's cells and keys; the golden
/// file's rows are never held).
fn compare_holding(actual: &Path, golden: &Path, rel_tol: f64) -> Result<(Comparison, usize)> {
    let mut ra: Vec<Row> = Vec::new();
    let sweep = SweepReader::open(actual)?;
    let ha = sweep.headers.clone();
    sweep.rows(|key, rec| {
        ra.push(Row::new(key, rec));
        Ok(())
    })?;
    ra.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let gold = SweepReader::open(golden)?;
    let hg = gold.headers.clone();
    let mut moved = header_moves(&ha, &hg);
    let unchecked_columns: Vec<String> = ha.iter().filter(|h| !hg.contains(h)).cloned().collect();
    if !moved.is_empty() {
        gold.rows(|_, _| Ok(()))?;
        let held = held_bytes(&ra);
        return Ok((
            Comparison {
                moved,
                unchecked_columns,
            },
            held,
        ));
    }
    // Each golden column's position in the sweep.
    let at: Vec<usize> = hg
        .iter()
        .map(|h| ha.iter().position(|x| x == h).expect("checked above"))
        .collect();
    let mut matched = vec![false; ra.len()];
    gold.rows(|key, g| {
        let Ok(i) = ra.binary_search_by(|r| (*r.key).cmp(key)) else {
            moved.push(Moved {
                point: key.into(),
                column: "(row)".into(),
                golden: "present".into(),
                actual: "missing".into(),
            });
            return Ok(());
        };
        matched[i] = true;
        let a = &ra[i];
        for (i, h) in hg.iter().enumerate().skip(1) {
            if !close(a.cell(at[i]), &g[i], rel_tol) {
                moved.push(Moved {
                    point: key.into(),
                    column: h.clone(),
                    golden: g[i].to_string(),
                    actual: a.cell(at[i]).to_string(),
                });
            }
        }
        Ok(())
    })?;
    // In the golden file's key order (its rows were streamed in file order); stable, so each
    // point's columns stay in header order.
    moved.sort_by(|a, b| a.point.cmp(&b.point));
    for (r, _) in ra.iter().zip(&matched).filter(|(_, m)| !**m) {
        moved.push(Moved {
            point: r.key.to_string(),
            column: "(row)".into(),
            golden: "missing".into(),
            actual: "present".into(),
        });
    }
    let held = held_bytes(&ra);
    Ok((
        Comparison {
            moved,
            unchecked_columns,
        },
        held,
    ))
}

/// The differences of the sweep's header `ha` from the golden one `hg`: other axes, golden
/// columns the sweep lacks.
fn header_moves(ha: &[String], hg: &[String]) -> Vec<Moved> {
    let mut moved = Vec::new();
    let axes = |h: &[String]| h[..h.iter().position(|c| c == "requests").unwrap_or(0)].to_vec();
    if axes(ha) != axes(hg) {
        moved.push(Moved {
            point: "(header)".into(),
            column: "axes".into(),
            golden: axes(hg).join(","),
            actual: axes(ha).join(","),
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
    moved
}

fn held_bytes(rows: &[Row]) -> usize {
    rows.iter()
        .map(|r| r.key.len() + r.text.len() + 4 * r.ends.len())
        .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Cells compared through f64 made seeds 2⁵³ and 2⁵³ + 1 one point (round 9, 08).
    #[test]
    fn numeric_form_keeps_integers_exact() {
        let f = crate::sweep::numeric_form;
        assert_eq!(f("1"), f("1.0"));
        assert_eq!(f("1"), f("1e0"));
        assert_eq!(f("-0.0"), f("0"));
        assert_eq!(f("0.5"), f("5e-1"));
        assert_ne!(f("9007199254740992"), f("9007199254740993"));
        assert_ne!(f("9223372036854775807"), f("9223372036854775806"));
        assert_ne!(f("1"), f("1.5"));
        assert_eq!(f("fcfs"), "fcfs");
    }

    /// `check` holds the sweep's rows in one string each (plus their keys and cell ends) and
    /// streams the golden file: for a sweep compared with itself, the bytes held stay under the
    /// file's size plus each row's key and 4 bytes per cell. It used to hold both files whole as bytes and
    /// again as one `String` per cell (3.2 GB for a 240 MB sweep.csv).
    #[test]
    fn check_holds_one_compact_copy_of_the_sweep() {
        let dir = std::env::temp_dir().join(format!("servesim-check-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sweep.csv");
        let mut text = String::from("run,policy,rate,requests,jct_mean_s,error\n");
        for i in 0..5000 {
            text += &format!("{i},fcfs,{},100,{}.25,\n", i + 1, i % 97);
        }
        std::fs::write(&path, &text).unwrap();
        let (c, held) = compare_holding(&path, &path, 0.0).unwrap();
        assert!(c.moved.is_empty(), "{:?}", c.moved);
        // Each row's cells (under its line's length), its key (`policy=fcfs rate=5000`: at most
        // 21 bytes) and 4 bytes per cell end.
        let bound = text.len() + 5000 * (21 + 4 * 6);
        assert!(held <= bound, "held {held} B of a {} B file", text.len());
        // A moved value is still found, in the golden file's key order.
        let golden = dir.join("golden.csv");
        std::fs::write(
            &golden,
            text.replace("\n7,fcfs,8,100,7.25,", "\n7,fcfs,8,100,7.5,"),
        )
        .unwrap();
        let c = compare(&path, &golden, 0.0).unwrap();
        assert_eq!(c.moved.len(), 1);
        assert_eq!(c.moved[0].point, "policy=fcfs rate=8");
        assert_eq!(
            (c.moved[0].golden.as_str(), c.moved[0].actual.as_str()),
            ("7.5", "7.25")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
