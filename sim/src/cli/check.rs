//! `servesim check`: compare a sweep's `sweep.csv` with a golden copy within a relative
//! tolerance (exit 1 on moved values), or bless the golden file from it.

use std::io::Write;
use std::path::PathBuf;

use super::Regression;
use crate::error::SimError;

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct CheckArgs {
    /// A sweep directory (or its sweep.csv).
    pub sweep: PathBuf,
    /// The golden sweep.csv to compare with.
    #[arg(long, value_name = "FILE")]
    pub golden: PathBuf,
    /// Relative tolerance for numeric cells (default 0: exact; runs are deterministic).
    #[arg(long, default_value_t = 0.0, value_name = "REL")]
    pub rel_tol: f64,
    /// Rewrite the golden file with the sweep's sweep.csv.
    #[arg(long)]
    pub bless: bool,
}

pub(super) fn check_cmd(
    a: CheckArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let actual = if a.sweep.is_dir() {
        a.sweep.join("sweep.csv")
    } else {
        a.sweep.clone()
    };
    if !(a.rel_tol.is_finite() && a.rel_tol >= 0.0) {
        return Err(SimError::config("--rel-tol must be a finite number ≥ 0").into());
    }
    if a.bless {
        return bless(&a, &actual, out);
    }
    let crate::check::Comparison {
        moved,
        unchecked_columns,
    } = crate::check::compare(&actual, &a.golden, a.rel_tol)?;
    if !unchecked_columns.is_empty() {
        writeln!(
            err,
            "note: {} has column(s) the golden file lacks, not compared: {} (re-bless to include them)",
            actual.display(),
            unchecked_columns.join(", ")
        )?;
    }
    if moved.is_empty() {
        writeln!(
            out,
            "ok: {} matches {}",
            actual.display(),
            a.golden.display()
        )?;
        Ok(())
    } else {
        writeln!(
            err,
            "regression: {} value(s) moved against {}:\n{}",
            moved.len(),
            a.golden.display(),
            crate::check::report(&moved)
        )?;
        Err(Regression.into())
    }
}

/// Where directory `p` is or will be once created: its deepest existing ancestor resolved
/// through symbolic links, with the missing components after it (`exp/new/a` inside the sweep
/// `exp` was not placed at all while `new` did not exist, and the golden file was written there).
/// A `..` after a missing folder undoes it, as creating the folders would (`exp/new/../g`
/// is `exp/g`: it used to place nothing either).
fn resolve_to_be(p: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut missing = Vec::new();
    let mut undo = 0usize;
    let mut at = p;
    loop {
        if let Ok(mut c) = std::fs::canonicalize(at) {
            for _ in 0..undo {
                c = c.parent()?.to_path_buf();
            }
            return Some(missing.iter().rev().fold(c, |c, m| c.join(m)));
        }
        let name = at.file_name();
        match name {
            None if at.ends_with("..") => undo += 1,
            None => return None,
            Some(_) if undo > 0 => undo -= 1,
            Some(n) => missing.push(n.to_os_string()),
        }
        at = at
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
    }
}

/// `check --bless`: copy the sweep's `sweep.csv` (`actual`) onto the golden file.
fn bless(a: &CheckArgs, actual: &std::path::Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes =
        crate::input::read_bytes(actual, crate::check::MAX_SWEEP_CSV_BYTES).map_err(|e| {
            SimError::Io {
                path: actual.to_path_buf(),
                msg: format!("cannot read: {e}"),
            }
        })?;
    // Never inside the sweep output it checks: the next sweep to that directory replaces it.
    let parent = a.golden.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = resolve_to_be(parent.unwrap_or(std::path::Path::new(".")));
    let sweep_dir = std::fs::canonicalize(actual.parent().unwrap_or(std::path::Path::new(".")));
    if let (Some(parent), Ok(sweep_dir), true) = (parent, sweep_dir, a.sweep.is_dir())
        && parent.starts_with(&sweep_dir)
    {
        return Err(SimError::Io {
            path: a.golden.clone(),
            msg: format!(
                "--golden is inside the sweep output {} it checks, which the next sweep to that directory replaces; keep the golden file outside it (e.g. beside the scenario)",
                a.sweep.display()
            ),
        }
        .into());
    }
    // A golden file is a sweep.csv copy: never bless onto a scenario, a summary.json, ….
    if a.golden.exists() && a.golden.extension().is_none_or(|x| x != "csv") {
        return Err(SimError::Io {
            path: a.golden.clone(),
            msg: "--golden with --bless must be a .csv file (a copy of sweep.csv); refusing to overwrite another kind of file".into(),
        }
        .into());
    }
    // The intended overwrite: only of a regular file that reads as a golden sweep.csv or has
    // the sweep's header.
    if std::fs::symlink_metadata(&a.golden).is_ok() {
        crate::output::check_file_dest(&a.golden, &[], true)?;
        let same_header = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.lines().next())
            .is_some_and(|h| crate::output::first_line_is(&a.golden, h));
        if !same_header && !crate::check::is_golden(&a.golden) {
            return Err(SimError::Io {
                path: a.golden.clone(),
                msg: "exists and is not a golden sweep.csv (first column not `run`, no `requests` column or unreadable rows, and another header than the sweep's); refusing to overwrite it: choose another --golden, or delete it first".into(),
            }
            .into());
        }
    }
    // Staged: blessing a file with itself (or an error half-way) never truncates it.
    crate::output::write_file(&a.golden, &bytes, &[], true)?;
    writeln!(
        out,
        "blessed {} from {}",
        a.golden.display(),
        actual.display()
    )?;
    Ok(())
}
