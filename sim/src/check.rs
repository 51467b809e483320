//! CI regression of JCT curves: compare a sweep's `sweep.csv` with a committed golden copy.
//!
//! Rows are matched by their axis values (every column before `requests`); numeric cells are equal
//! when `|a − b| ≤ rel_tol · max(|a|, |b|)` (default `rel_tol = 0`: exact, since runs are
//! deterministic); other cells must be identical. Two rows with the same axis values in either
//! file are an error naming the file and line; missing or extra columns and rows are reported.

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

fn read(path: &Path) -> Result<Table> {
    let io = |e: &dyn std::fmt::Display| SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut rdr = csv::Reader::from_path(path).map_err(|e| io(&e))?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| io(&e))?
        .iter()
        .map(str::to_string)
        .collect();
    let n_axes = headers
        .iter()
        .position(|h| h == "requests")
        .ok_or_else(|| io(&"not a sweep.csv (no `requests` column)"))?;
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
        if let Some(first) = lines.get(&key) {
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
        lines.insert(key.clone(), line);
        rows.insert(key, rec.iter().map(str::to_string).collect());
    }
    Ok((headers, rows))
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

/// Compare `actual` with `golden`; returns the moved points (empty = pass).
pub fn compare(actual: &Path, golden: &Path, rel_tol: f64) -> Result<Vec<Moved>> {
    let (ha, ra) = read(actual)?;
    let (hg, rg) = read(golden)?;
    let mut moved = Vec::new();
    if ha != hg {
        for h in hg.iter().filter(|h| !ha.contains(h)) {
            moved.push(Moved {
                point: "(header)".into(),
                column: h.clone(),
                golden: "present".into(),
                actual: "missing".into(),
            });
        }
        for h in ha.iter().filter(|h| !hg.contains(h)) {
            moved.push(Moved {
                point: "(header)".into(),
                column: h.clone(),
                golden: "missing".into(),
                actual: "present".into(),
            });
        }
        if moved.is_empty() {
            moved.push(Moved {
                point: "(header)".into(),
                column: "column order".into(),
                golden: hg.join(","),
                actual: ha.join(","),
            });
        }
        return Ok(moved);
    }
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
                    if !close(&a[i], &g[i], rel_tol) {
                        moved.push(Moved {
                            point: k.clone(),
                            column: h.clone(),
                            golden: g[i].clone(),
                            actual: a[i].clone(),
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
    Ok(moved)
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
