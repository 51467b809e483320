//! Reading and validating a profile directory: schema version checks, `fit.toml` forms and
//! parameters against their operators, and the rows of `measurements.csv`.

use std::path::Path;

use super::validate;
use super::{
    FIT_FILE, FitFile, MEASUREMENTS_FILE, MEASUREMENTS_HEADER, META_FILE, Measurement, Meta, Op,
    Profile, SCHEMA_VERSION,
};
use crate::error::{Result, SimError};

fn io(path: &Path, msg: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn check_version(path: &Path, v: u32) -> Result<()> {
    if v != SCHEMA_VERSION {
        return Err(io(
            path,
            format!(
                "profile schema version {v} is not supported by this servesim (it reads version {SCHEMA_VERSION}); re-create the profile with `servesim calibrate`"
            ),
        ));
    }
    Ok(())
}

/// A TOML file of the profile, parsed, with its text (for the lines of later errors).
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String)> {
    let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES)
        .map_err(|e| io(path, format!("cannot read: {e}")))?;
    let v = toml::from_str(&text).map_err(|e| SimError::Scenario {
        path: path.to_path_buf(),
        msg: crate::error::toml_error_message(&text, &e),
    })?;
    Ok((v, text))
}

/// Read a profile's `measurements.csv` within [`validate::MAX_MEASUREMENTS_BYTES`].
pub fn read_measurements_text(path: &Path) -> Result<String> {
    crate::input::read_text(path, validate::MAX_MEASUREMENTS_BYTES).map_err(|e| {
        io(
            path,
            format!(
                "cannot read: {e} (a profile's measurements.csv is at most {} MiB)",
                validate::MAX_MEASUREMENTS_BYTES >> 20
            ),
        )
    })
}

/// Parse `measurements.csv` text (`path` only names it in errors): every row within its bounds,
/// at most [`validate::MAX_ROWS`] rows, no `measured` shape twice.
pub fn parse_measurements(text: &str, path: &Path) -> Result<Vec<Measurement>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    check_header(&mut rdr, path)?;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(rows.len() as u64 + 2, |p| p.line());
        if rows.len() == validate::MAX_ROWS {
            return Err(io(
                path,
                format!(
                    "more than {} rows (line {line}); a calibration writes a few thousand",
                    validate::MAX_ROWS
                ),
            ));
        }
        let r = parse_row(&rec, line, path)?;
        validate::check_row(&r, line, path)?;
        rows.push((line, r));
    }
    validate::check_duplicates(&rows, path)?;
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// A row with another number of cells than the header names its line; other CSV errors as is.
fn csv_error(path: &Path, e: csv::Error) -> SimError {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos: Some(pos),
            expected_len,
            len,
        } => SimError::Input {
            path: path.to_path_buf(),
            line: pos.line(),
            field: "(row)".into(),
            msg: format!("{len} cells, the header has {expected_len}"),
        },
        _ => io(path, e),
    }
}

/// The header row must be exactly [`MEASUREMENTS_HEADER`] (cells trimmed).
fn check_header(rdr: &mut csv::Reader<&[u8]>, path: &Path) -> Result<()> {
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| io(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.join(",") != MEASUREMENTS_HEADER {
        return Err(io(
            path,
            format!(
                "header must be `{MEASUREMENTS_HEADER}`, got `{}`",
                header.join(",")
            ),
        ));
    }
    Ok(())
}

/// One data row of `measurements.csv`, `line` its 1-based line number (for errors).
fn parse_row(rec: &csv::StringRecord, line: u64, path: &Path) -> Result<Measurement> {
    let bad = |field: &str, msg: String| SimError::Input {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        msg,
    };
    let get = |k: usize| rec.get(k).map(str::trim).unwrap_or("");
    let op = Op::parse(get(0)).ok_or_else(|| {
        bad(
            "op",
            format!(
                "unknown operator `{}`; valid: {}",
                get(0),
                Op::ALL.map(Op::name).join(", ")
            ),
        )
    })?;
    let uint = |k: usize, name: &str| -> Result<u64> {
        get(k)
            .parse::<u64>()
            .map_err(|_| bad(name, format!("`{}` is not a non-negative integer", get(k))))
    };
    let secs = |k: usize, name: &str| -> Result<Option<f64>> {
        let s = get(k);
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
            _ => Err(bad(
                name,
                format!("`{s}` is not a positive number of seconds"),
            )),
        }
    };
    let x = uint(1, "x")?;
    if x == 0 {
        return Err(bad("x", "must be ≥ 1".into()));
    }
    let time_s = secs(3, "time_s")?.ok_or_else(|| bad("time_s", "missing".into()))?;
    let repeats = match get(6) {
        "" => None,
        s => Some(
            s.parse::<u32>()
                .map_err(|_| bad("repeats", format!("`{s}` is not an integer")))?,
        ),
    };
    Ok(Measurement {
        op,
        x,
        y: uint(2, "y")?,
        time_s,
        min_s: secs(4, "min_s")?,
        max_s: secs(5, "max_s")?,
        repeats,
        source: get(7).to_string(),
    })
}

impl Profile {
    /// Read and validate a profile directory.
    pub fn load(dir: &Path) -> Result<Profile> {
        if !dir.is_dir() {
            return Err(io(
                dir,
                "not a profile directory (expected meta.toml, fit.toml and measurements.csv; see `servesim calibrate import-vidur` or `servesim calibrate run`)",
            ));
        }
        let meta_path = dir.join(META_FILE);
        let (meta, meta_text): (Meta, _) = read_toml(&meta_path)?;
        check_version(&meta_path, meta.schema_version)?;
        validate::check_meta(&meta, &meta_path, &meta_text)?;
        let fit_path = dir.join(FIT_FILE);
        let (fit, fit_text): (FitFile, _) = read_toml(&fit_path)?;
        check_version(&fit_path, fit.schema_version)?;
        for (name, f) in &fit.ops {
            let op = Op::parse(name).ok_or_else(|| {
                io(
                    &fit_path,
                    format!(
                        "[ops.{name}]: unknown operator; valid: {}",
                        Op::ALL.map(Op::name).join(", ")
                    ),
                )
            })?;
            if f.form() != op.form() {
                return Err(io(
                    &fit_path,
                    format!(
                        "[ops.{name}]: form `{}` but this operator uses `{}`",
                        f.form().name(),
                        op.form().name()
                    ),
                ));
            }
        }
        validate::check_fit(&fit, &fit_path, &fit_text)?;
        let m_path = dir.join(MEASUREMENTS_FILE);
        let text = read_measurements_text(&m_path)?;
        let rows = parse_measurements(&text, &m_path)?;
        Ok(Profile { meta, fit, rows })
    }
}
