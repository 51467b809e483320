//! Bounds on every field of a profile, checked when it is loaded: an error names the file, the
//! line (found by the field's `key =` line in the TOML files) and the field, with the range
//! allowed. The bounds are far outside any real measurement; they keep a typo such as
//! `1e300` from turning into an obscure error (or a nonsense run) later.

use std::collections::BTreeMap;
use std::path::Path;

use super::{FitFile, Measurement, Meta, Op};
use crate::error::{Result, SimError, num};

/// Any operator time in `measurements.csv` (`time_s`, `min_s`, `max_s`), seconds.
pub const TIME_RANGE_S: (f64, f64) = (1e-12, 1e3);
/// Every seconds-valued parameter of a fitted form (`latency_s`, `slope_s`, `s_per_…`).
pub const MAX_COEFFICIENT_S: f64 = 1e3;
/// `iteration_overhead_s`, seconds.
pub const MAX_OVERHEAD_S: f64 = 10.0;
/// A copy form's `bytes_per_s`.
pub const BYTES_PER_S_RANGE: (f64, f64) = (1e3, 1e18);
/// Largest `x` or `y` of a row (tokens, sequences, bytes, chunks).
pub const MAX_SHAPE: u64 = 1_000_000_000_000;
/// Largest tensor-parallel degree of a profile.
pub const MAX_TP: u32 = 1024;
/// Rows of `measurements.csv` (a full GPU calibration writes a few thousand).
pub const MAX_ROWS: usize = 200_000;
/// Bytes of `measurements.csv`.
pub const MAX_MEASUREMENTS_BYTES: u64 = 16 << 20;

/// The 1-based line of `key = …` inside `[table]` (`None`: top level) of a TOML text, if it is
/// written there as a plain line.
pub fn toml_line(text: &str, table: Option<&str>, key: &str) -> Option<u64> {
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            let name = h.trim_start_matches('[').split(']').next().unwrap_or("");
            current = Some(name.trim().replace([' ', '"'], ""));
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        if k.trim().trim_matches('"') == key && current.as_deref() == table {
            return Some(i as u64 + 1);
        }
    }
    None
}

/// A bad field of a TOML file of the profile: with its line when it can be found.
fn bad_toml(path: &Path, text: &str, table: Option<&str>, key: &str, msg: String) -> SimError {
    let field = match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    };
    match toml_line(text, table, key).or_else(|| table.and_then(|t| table_line(text, t))) {
        Some(line) => SimError::Input {
            path: path.to_path_buf(),
            line,
            field,
            msg,
        },
        None => SimError::Io {
            path: path.to_path_buf(),
            msg: format!("field `{field}`: {msg}"),
        },
    }
}

/// The 1-based line of the `[table]` header.
fn table_line(text: &str, table: &str) -> Option<u64> {
    text.lines()
        .position(|l| {
            l.trim()
                .strip_prefix('[')
                .and_then(|h| h.split(']').next())
                .is_some_and(|h| h.trim().replace([' ', '"'], "") == table)
        })
        .map(|i| i as u64 + 1)
}

/// `Err(message)` unless `lo ≤ v ≤ hi` (and finite).
fn in_range(v: f64, lo: f64, hi: f64, unit: &str) -> std::result::Result<(), String> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(format!(
            "must be a number from {} to {}{unit}, got {}",
            num(lo),
            num(hi),
            num(v)
        ))
    }
}

/// Is `s` a real calendar date written `YYYY-MM-DD`?
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        s.get(r.clone())
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Every field of `meta.toml` (`text` is its content, for line numbers).
pub fn check_meta(m: &Meta, path: &Path, text: &str) -> Result<()> {
    let bad = |table: Option<&str>, key: &str, msg: String| bad_toml(path, text, table, key, msg);
    for (key, v) in [("gpu", &m.gpu), ("model", &m.model), ("tool", &m.tool)] {
        if v.trim().is_empty() {
            return Err(bad(None, key, "must not be empty".into()));
        }
    }
    if !(1..=MAX_TP).contains(&m.tp) {
        return Err(bad(
            None,
            "tp",
            format!("must be from 1 to {MAX_TP}, got {}", m.tp),
        ));
    }
    if !is_date(&m.created) {
        return Err(bad(
            None,
            "created",
            format!(
                "`{}` is not a date written YYYY-MM-DD",
                crate::error::echo(&m.created)
            ),
        ));
    }
    if !["measured", "vidur-import", "synthetic"].contains(&m.source.as_str()) {
        return Err(bad(
            None,
            "source",
            format!(
                "`{}`: must be `measured`, `vidur-import` or `synthetic`",
                crate::error::echo(&m.source)
            ),
        ));
    }
    if m.device.sm_count == Some(0) || m.device.memory_bytes == Some(0) {
        let key = if m.device.sm_count == Some(0) {
            "sm_count"
        } else {
            "memory_bytes"
        };
        return Err(bad(Some("device"), key, "must be ≥ 1".into()));
    }
    check_measurement_info(m, &bad)?;
    check_op_tables(m, path, text, &bad)
}

/// `meta.toml` `[grid.<op>]` and `[fit.<op>]`: known operators, finite residuals.
fn check_op_tables(
    m: &Meta,
    path: &Path,
    text: &str,
    bad: &dyn Fn(Option<&str>, &str, String) -> SimError,
) -> Result<()> {
    let tables = (m.grid.keys().map(|k| ("grid", k))).chain(m.fit.keys().map(|k| ("fit", k)));
    for (table, name) in tables {
        if Op::parse(name).is_none() {
            let t = format!("{table}.{name}");
            let msg = format!(
                "[{}]: unknown operator; valid: {}",
                crate::error::echo(&t),
                Op::ALL.map(Op::name).join(", ")
            );
            return Err(match table_line(text, &t) {
                Some(line) => SimError::Input {
                    path: path.to_path_buf(),
                    line,
                    field: crate::error::echo(&t),
                    msg,
                },
                None => SimError::Io {
                    path: path.to_path_buf(),
                    msg,
                },
            });
        }
    }
    for (name, r) in &m.fit {
        let t = format!("fit.{name}");
        for (key, v) in [
            ("median_rel_err", r.median_rel_err),
            ("mean_rel_err", r.mean_rel_err),
            ("max_rel_err", r.max_rel_err),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    Some(&t),
                    key,
                    format!("must be a finite number ≥ 0, got {}", num(v)),
                ));
            }
        }
    }
    Ok(())
}

/// `meta.toml` `[measurement]`.
fn check_measurement_info(
    m: &Meta,
    bad: &dyn Fn(Option<&str>, &str, String) -> SimError,
) -> Result<()> {
    let mi = &m.measurement;
    let t = Some("measurement");
    if mi.repeats == Some(0) {
        return Err(bad(t, "repeats", "must be ≥ 1".into()));
    }
    if mi.block_tokens.iter().any(|&b| b == 0 || b > 1 << 20) {
        return Err(bad(
            t,
            "block_tokens",
            "every size must be from 1 to 1048576 tokens".into(),
        ));
    }
    if let Some(w) = mi.wall_s
        && !(w.is_finite() && w >= 0.0)
    {
        return Err(bad(
            t,
            "wall_s",
            format!("must be a finite number ≥ 0, got {}", num(w)),
        ));
    }
    Ok(())
}

/// `iteration_overhead_s` and every parameter of `fit.toml` (forms are checked by the caller).
pub fn check_fit(f: &FitFile, path: &Path, text: &str) -> Result<()> {
    in_range(f.iteration_overhead_s, 0.0, MAX_OVERHEAD_S, " s")
        .map_err(|m| bad_toml(path, text, None, "iteration_overhead_s", m))?;
    for (name, fit) in &f.ops {
        for (key, v) in fit.params() {
            let r = if key == "bytes_per_s" {
                in_range(v, BYTES_PER_S_RANGE.0, BYTES_PER_S_RANGE.1, " bytes/s")
            } else {
                in_range(v, 0.0, MAX_COEFFICIENT_S, " s")
            };
            r.map_err(|m| bad_toml(path, text, Some(&format!("ops.{name}")), key, m))?;
        }
    }
    Ok(())
}

/// The bounds of one `measurements.csv` row, `line` its line.
pub fn check_row(r: &Measurement, line: u64, path: &Path) -> Result<()> {
    let bad = |field: &str, msg: String| SimError::Input {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        msg,
    };
    for (field, v) in [("x", r.x), ("y", r.y)] {
        if v > MAX_SHAPE {
            return Err(bad(
                field,
                format!("must be at most {} (10¹²), got {v}", MAX_SHAPE),
            ));
        }
    }
    let (lo, hi) = TIME_RANGE_S;
    for (field, v) in [
        ("time_s", Some(r.time_s)),
        ("min_s", r.min_s),
        ("max_s", r.max_s),
    ] {
        if let Some(v) = v {
            in_range(v, lo, hi, " s").map_err(|m| bad(field, m))?;
        }
    }
    if r.min_s.is_some_and(|m| m > r.time_s) {
        return Err(bad("min_s", "must be ≤ time_s".into()));
    }
    if r.max_s.is_some_and(|m| m < r.time_s) {
        return Err(bad("max_s", "must be ≥ time_s".into()));
    }
    if r.repeats == Some(0) {
        return Err(bad("repeats", "must be ≥ 1 (or empty)".into()));
    }
    let s = r.source.as_str();
    let named = |p: &str| {
        s.strip_prefix(p)
            .is_some_and(|rest| !rest.trim().is_empty())
    };
    if !(s == "measured" || s == "synthetic" || named("vidur:") || named("derived:")) {
        return Err(bad(
            "source",
            format!(
                "`{}`: must be `measured`, `synthetic`, `vidur:<file>` or `derived:<how>`",
                crate::error::echo(s)
            ),
        ));
    }
    Ok(())
}

/// A calibration run writes one `measured` row per operator and shape (`time_s` is the
/// statistic of its repeats): a second one is an error naming both lines. Imported and derived
/// rows may repeat a shape (Vidur's files hold repeated runs); the cost model takes their median.
pub fn check_duplicates(rows: &[(u64, Measurement)], path: &Path) -> Result<()> {
    let mut seen: BTreeMap<(Op, u64, u64), u64> = BTreeMap::new();
    for (line, r) in rows.iter().filter(|(_, r)| r.source == "measured") {
        if let Some(&first) = seen.get(&(r.op, r.x, r.y)) {
            return Err(SimError::Input {
                path: path.to_path_buf(),
                line: *line,
                field: "(row)".into(),
                msg: format!(
                    "duplicate measured row: `{}` at x = {}, y = {} is already on line {first}",
                    r.op.name(),
                    r.x,
                    r.y
                ),
            });
        }
        seen.insert((r.op, r.x, r.y), *line);
    }
    Ok(())
}
