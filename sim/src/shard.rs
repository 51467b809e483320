//! Distributed sweeps: `servesim sweep --shard I/N` runs a deterministic 1/N of a sweep's runs
//! (those whose run index mod N is I, 0-based) into a *shard directory*, and `servesim merge`
//! joins N shard directories into the directory an unsharded sweep writes: the same `sweep.csv`
//! byte for byte, and every run's `runs/` subdirectory.
//!
//! A shard directory holds what a sweep directory holds for its runs (`sweep.csv` with only its
//! rows, `runs/`, `timing.json`, no plots) plus `shard.json`: the shard's place (`shard`,
//! `shards`, `runs_total`), a fingerprint of the whole expanded sweep, the `sweep.csv` header, and
//! each of its runs' exact `sweep.csv` line. Merging checks that the shards come from the same
//! sweep (same fingerprint, count and header), that none is given twice and none is missing, and
//! that every run appears exactly once; any mismatch is an error naming the directories. Each
//! row must be one CSV record of the header's width, consistent with the run it claims (index,
//! directory name, error cell) and with the shard's own `sweep.csv`; symbolic links in a shard
//! (the directory, shard.json, sweep.csv, anything under runs/) are refused.
//!
//! The fingerprint is a 64-bit FNV-1a hash of every run's axis values and resolved configuration
//! (`config.json` without the scenario file's path, so shards may be started from different
//! directories), servesim's version and the git commit it was built from (`sim/build.rs`)
//! included: shards of different scenarios, `--num-requests` or builds do not merge (two builds
//! of one commit with different uncommitted changes are not told apart). `shard.json` also lists the sweep's data files (traces, lengths,
//! profiles, catalogues) with a hash of their bytes, each named by its real path relative to the
//! scenario's real folder (`../traces/x.csv`) and compared with its namesake (as a set only when
//! the names differ, i.e. the files sit elsewhere on another host): shards run on two versions
//! of one trace do not merge either.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};
use crate::metrics::Summary;
use crate::output::{StagedDir, pretty_json};
use crate::sweep::{SweepRun, csv_header, csv_row};

mod inputs;
pub use inputs::InputHash;
use inputs::{differing_input, fnv1a, input_hashes};

/// An error once Ctrl-C or SIGTERM arrived (the merge's staging directory is then removed and
/// the command exits 130 or 143).
fn stop_if_interrupted() -> Result<()> {
    if crate::interrupt::interrupted() {
        return Err(SimError::config(format!(
            "{} stopped the merge before it finished; nothing was written",
            crate::interrupt::signal_name()
        )));
    }
    Ok(())
}

/// Version of the `shard.json` format.
pub const FORMAT: u32 = 1;

/// `--shard I/N`: this process runs the runs whose index mod `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parse `I/N` with 0 ≤ I < N.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected I/N (e.g. 0/4), got `{s}`"))?;
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index `{i}` is not a non-negative integer"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count `{n}` is not a positive integer"))?;
        if n == 0 {
            return Err("the shard count N must be ≥ 1".into());
        }
        if n > crate::sweep::MAX_RUNS {
            return Err(format!(
                "shard count {n} is above the limit of {} (the most runs a sweep may have)",
                crate::sweep::MAX_RUNS
            ));
        }
        if i >= n {
            return Err(format!(
                "shard index {i} is out of range: shards are numbered 0 to {} for N = {n}",
                n - 1
            ));
        }
        Ok(Shard { index: i, count: n })
    }

    /// Whether run `run_index` belongs to this shard.
    pub fn owns(&self, run_index: usize) -> bool {
        run_index % self.count == self.index
    }

    /// Default directory name: `sweep-shard-I-of-N`.
    pub fn dir_name(&self) -> String {
        format!("sweep-shard-{}-of-{}", self.index, self.count)
    }

    /// Fix what the whole sweep looks like (its inputs' contents included), then keep only this
    /// shard's runs in `runs`.
    pub fn select(self, runs: &mut Vec<SweepRun>) -> Result<ShardInfo> {
        let info = ShardInfo {
            shard: self,
            runs_total: runs.len(),
            fingerprint: fingerprint(runs),
            header: csv_header(runs),
            inputs: input_hashes(runs)?,
        };
        runs.retain(|r| self.owns(r.index));
        Ok(info)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a shard knows about the whole sweep.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub shard: Shard,
    pub runs_total: usize,
    pub fingerprint: String,
    pub header: String,
    pub inputs: Vec<InputHash>,
}

impl ShardInfo {
    /// The shard's `sweep.csv`: the whole sweep's header and this shard's rows.
    pub fn sweep_csv(&self, runs: &[SweepRun], outcomes: &[OutcomeRef]) -> String {
        let mut s = self.header.clone();
        s.push('\n');
        for (r, o) in runs.iter().zip(outcomes) {
            s.push_str(&csv_row(r, o));
            s.push('\n');
        }
        s
    }

    /// `shard.json` text.
    pub fn manifest(&self, runs: &[SweepRun], outcomes: &[OutcomeRef], wall_s: f64) -> String {
        let m = Manifest {
            format: FORMAT,
            shard: self.shard.index,
            shards: self.shard.count,
            runs_total: self.runs_total,
            fingerprint: self.fingerprint.clone(),
            build: Some(env!("SERVESIM_BUILD").to_string()),
            header: self.header.clone(),
            inputs: self.inputs.clone(),
            wall_s,
            rows: runs
                .iter()
                .zip(outcomes)
                .map(|(r, o)| ManifestRow {
                    run: r.index,
                    dir: o.is_ok().then(|| r.dir_name()),
                    csv: csv_row(r, o),
                })
                .collect(),
        };
        pretty_json(&serde_json::to_value(&m).expect("manifest serialises"))
    }
}

/// A run's outcome as `sweep.csv` records it.
pub type OutcomeRef = std::result::Result<Summary, String>;

/// `shard.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub shard: usize,
    pub shards: usize,
    pub runs_total: usize,
    pub fingerprint: String,
    /// The servesim build (git commit) that ran the shard (absent in shards of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    pub header: String,
    /// The sweep's data files (traces, lengths, profiles, catalogues) and hashes of their bytes.
    #[serde(default)]
    pub inputs: Vec<InputHash>,
    /// Wall time of the shard's runs (informational; not compared).
    pub wall_s: f64,
    pub rows: Vec<ManifestRow>,
}

/// One run of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRow {
    pub run: usize,
    /// Its directory under `runs/` (absent when the run failed and wrote none).
    pub dir: Option<String>,
    /// Its exact `sweep.csv` line, without the newline.
    pub csv: String,
}

/// Fingerprint of an expanded sweep: every run's index, axis values and resolved configuration.
pub fn fingerprint(runs: &[SweepRun]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // The build too: two builds of one version may give different results.
    fnv1a(&mut h, env!("SERVESIM_BUILD").as_bytes());
    for r in runs {
        let mut cfg = crate::run::config_json(&r.resolved);
        if let Some(o) = cfg.as_object_mut() {
            o.remove("scenario_file");
        }
        let mut line = format!("{}", r.index);
        for (k, v) in &r.axes {
            let _ = write!(line, "\u{1f}{k}={v}");
        }
        fnv1a(&mut h, line.as_bytes());
        fnv1a(&mut h, cfg.to_string().as_bytes());
        fnv1a(&mut h, b"\x1e");
    }
    format!("{h:016x}")
}

fn io(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// A shard directory read back.
struct Loaded {
    dir: PathBuf,
    m: Manifest,
}

/// Refuse a symbolic link: merge copies only what a shard wrote itself, never what a link
/// points to (which may be anywhere).
fn no_symlink(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io(
            path,
            "is a symbolic link; merge reads only the files a shard wrote (replace the link with the real file or directory)",
        )),
        // A named pipe would block the merge until something wrote to it.
        Ok(m) if !m.is_file() && !m.is_dir() => Err(io(
            path,
            "is not a regular file (a named pipe, socket or device); merge reads only the files a shard wrote",
        )),
        _ => Ok(()),
    }
}

/// The cells of one `sweep.csv` line (the header or a row), which must be exactly one CSV
/// record (a quoted cell may hold a newline; an unquoted newline or a carriage return would
/// inject a row).
fn csv_record(line: &str) -> std::result::Result<Vec<String>, String> {
    if line.contains('\r') {
        return Err("contains a carriage return".into());
    }
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let records: Vec<csv::StringRecord> = rd
        .records()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("is not valid CSV: {e}"))?;
    match records.as_slice() {
        [one] => Ok(one.iter().map(String::from).collect()),
        rows => Err(format!(
            "holds {} CSV records, expected one line (an unquoted newline?)",
            rows.len()
        )),
    }
}

/// Check a manifest row against the run it claims: one CSV record with the header's number of
/// cells, starting with its run index; its `dir` (when present) is the directory name the run's
/// index and axis values give, and the `error` cell is empty exactly when it has a directory.
fn check_row(row: &ManifestRow, header_cells: usize) -> std::result::Result<(), String> {
    let cells = csv_record(&row.csv).map_err(|e| format!("its `csv` {e}"))?;
    if cells.len() != header_cells {
        return Err(format!(
            "its `csv` has {} cells, the header {header_cells}",
            cells.len()
        ));
    }
    if cells[0] != row.run.to_string() {
        return Err(format!(
            "its `csv` starts with run `{}`",
            crate::error::echo(&cells[0])
        ));
    }
    let error_cell = cells.last().map_or("", String::as_str);
    match &row.dir {
        Some(d) => {
            if !error_cell.is_empty() {
                return Err("it has a run directory but its `csv` records an error".into());
            }
            let parts: Vec<&str> = d.split('-').collect();
            let ok = parts[0] == format!("{:04}", row.run)
                && parts.len() < cells.len()
                && parts[1..].iter().zip(&cells[1..]).all(|(p, v)| {
                    v.chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '.' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .eq(p.chars())
                });
            if !ok {
                return Err(format!(
                    "its directory `{}` does not match its index and axis values",
                    crate::error::echo(d)
                ));
            }
        }
        None if error_cell.is_empty() => {
            return Err("it has no run directory and its `csv` records no error".into());
        }
        None => {}
    }
    Ok(())
}

fn read_manifest(dir: &Path) -> Result<Loaded> {
    no_symlink(dir)?;
    let p = dir.join("shard.json");
    no_symlink(&p)?;
    if !p.exists() {
        return Err(io(
            dir,
            "not a sweep shard directory (no shard.json); write shards with `servesim sweep --shard I/N`",
        ));
    }
    let text = crate::input::read_text(&p, crate::input::MAX_DATA_BYTES)
        .map_err(|e| io(dir, format!("cannot read shard.json: {e}")))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        let msg = crate::error::plain_serde(&e.to_string());
        io(&p, format!("not a valid shard manifest: {msg}"))
    })?;
    if m.format != FORMAT {
        return Err(io(
            &p,
            format!(
                "shard format {} is not supported (this servesim writes format {FORMAT})",
                m.format
            ),
        ));
    }
    if m.shards == 0 || m.shard >= m.shards {
        return Err(io(&p, format!("invalid shard {}/{}", m.shard, m.shards)));
    }
    // Bounded before merge sizes its tables by them.
    let max = crate::sweep::MAX_RUNS;
    if m.shards > max || m.runs_total > max {
        return Err(io(
            &p,
            format!(
                "shards = {} and runs_total = {}: each must be at most {max} (the most runs a sweep may have); the manifest was edited or is corrupt",
                m.shards, m.runs_total
            ),
        ));
    }
    let header_cells = csv_record(&m.header)
        .map_err(|e| io(&p, format!("`header` {e}")))?
        .len();
    for row in &m.rows {
        check_row(row, header_cells).map_err(|e| {
            io(
                &p,
                format!(
                    "run {}: {e}; the manifest was edited or is corrupt",
                    row.run
                ),
            )
        })?;
    }
    // The shard's own sweep.csv holds the same lines.
    let csv_path = dir.join("sweep.csv");
    no_symlink(&csv_path)?;
    let csv = crate::input::read_text(&csv_path, crate::check::MAX_SWEEP_CSV_BYTES)
        .map_err(|e| io(&csv_path, e))?;
    let mut expected = m.header.clone();
    expected.push('\n');
    for row in &m.rows {
        expected.push_str(&row.csv);
        expected.push('\n');
    }
    if csv != expected {
        return Err(io(
            &csv_path,
            "does not hold the rows shard.json lists; the shard was edited or is corrupt",
        ));
    }
    Ok(Loaded {
        dir: dir.to_path_buf(),
        m,
    })
}

/// What [`merge`] did.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub dir: PathBuf,
    pub shards: usize,
    pub runs: usize,
    pub failed: usize,
}

/// Join shard directories into a sweep directory at `out` (written atomically), drawing plots
/// unless `plots` is false.
pub fn merge(shard_dirs: &[PathBuf], out: &Path, plots: bool, force: bool) -> Result<MergeReport> {
    if shard_dirs.is_empty() {
        return Err(SimError::config("merge needs at least one shard directory"));
    }
    // The shards are inputs: never replaced, even with --force (`merge s0 s1 --out s0`).
    let replace = crate::output::Replace::new(force, shard_dirs.iter().cloned());
    crate::output::check_dest(out, &replace)?;
    let shards: Vec<Loaded> = shard_dirs
        .iter()
        .map(|d| read_manifest(d))
        .collect::<Result<_>>()?;
    let first = &shards[0];
    let n = first.m.shards;
    let total = first.m.runs_total;
    let by_index = shards_by_index(&shards)?;
    let rows = runs_in_order(&shards, n, total)?;
    // Every run directory is checked before anything is written.
    for (i, slot) in rows.iter().enumerate() {
        let (row, s) = slot.expect("every run was checked present");
        if let Some(d) = &row.dir {
            let name = Path::new(d);
            if name.components().count() != 1 || d.contains(['/', '\\']) || d.starts_with('.') {
                return Err(io(&s.dir, format!("run {i}: invalid run directory `{d}`")));
            }
            no_symlink(&s.dir.join("runs"))?;
            no_symlink(&s.dir.join("runs").join(d))?;
            check_run_files(&s.dir.join("runs").join(d))?;
        }
    }
    let staged = StagedDir::new(out, &replace)?;
    let mut csv = first.m.header.clone();
    csv.push('\n');
    let mut failed = 0;
    for (i, slot) in rows.iter().enumerate() {
        stop_if_interrupted()?;
        let (row, s) = slot.expect("every run was checked present");
        debug_assert_eq!(row.run, i);
        csv.push_str(&row.csv);
        csv.push('\n');
        match &row.dir {
            Some(d) => {
                copy_dir(
                    &s.dir.join("runs").join(d),
                    &staged.path().join("runs").join(d),
                )?;
            }
            None => failed += 1,
        }
    }
    staged.write("sweep.csv", csv.as_bytes())?;
    let walls: Vec<f64> = by_index
        .iter()
        .map(|s| s.expect("all present").m.wall_s)
        .collect();
    staged.write(
        "timing.json",
        pretty_json(&serde_json::json!({
            "wall_s": walls.iter().cloned().fold(0.0, f64::max),
            "runs": total,
            "shards": n,
            "shard_wall_s": walls,
        }))
        .as_bytes(),
    )?;
    if plots {
        crate::plot::plot_sweep(staged.path(), &staged.path().join("plots"))?;
    }
    stop_if_interrupted()?;
    let dir = staged.commit()?;
    Ok(MergeReport {
        dir,
        shards: n,
        runs: total,
        failed,
    })
}

/// The shards by their index, checked to be shards of one sweep, each given once, none missing.
fn shards_by_index(shards: &[Loaded]) -> Result<Vec<Option<&Loaded>>> {
    let first = &shards[0];
    let n = first.m.shards;
    let total = first.m.runs_total;
    let mismatch = |s: &Loaded, what: &str| {
        SimError::config(format!(
            "{} and {} are shards of different sweeps ({what} differ); merge the shards of one `servesim sweep --shard I/N` scenario, run with the same options and servesim version",
            first.dir.display(),
            s.dir.display()
        ))
    };
    let mut by_index: Vec<Option<&Loaded>> = vec![None; n];
    for s in shards {
        if s.m.shards != n {
            return Err(mismatch(
                s,
                &format!("shard counts {} and {}", n, s.m.shards),
            ));
        }
        if s.m.runs_total != total {
            return Err(mismatch(
                s,
                &format!("run counts {total} and {}", s.m.runs_total),
            ));
        }
        if s.m.build != first.m.build {
            let name = |b: &Option<String>| {
                let b = b.as_deref().filter(|b| !b.is_empty());
                b.unwrap_or("(unrecorded)").to_string()
            };
            return Err(mismatch(
                s,
                &format!(
                    "servesim builds {} and {}",
                    name(&first.m.build),
                    name(&s.m.build)
                ),
            ));
        }
        if s.m.fingerprint != first.m.fingerprint {
            return Err(mismatch(s, "scenario fingerprints"));
        }
        if s.m.header != first.m.header {
            return Err(mismatch(s, "sweep.csv headers"));
        }
        if let Some(i) = differing_input(&first.m.inputs, &s.m.inputs) {
            return Err(SimError::config(format!(
                "{} and {} read different contents of the sweep's inputs ({i}): rerun the shards on the same files",
                first.dir.display(),
                s.dir.display(),
            )));
        }
        if let Some(other) = by_index[s.m.shard] {
            return Err(SimError::config(format!(
                "shard {}/{n} is given twice: {} and {}",
                s.m.shard,
                other.dir.display(),
                s.dir.display()
            )));
        }
        by_index[s.m.shard] = Some(s);
    }
    let missing: Vec<String> = (0..n)
        .filter(|&i| by_index[i].is_none())
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(SimError::config(format!(
            "missing shard(s) {} of the {n}; run `servesim sweep --shard I/{n}` for each and pass every shard directory",
            missing.join(", ")
        )));
    }
    Ok(by_index)
}

/// Each run's manifest row and shard, in run order: every run exactly once, in the shard that
/// owns it.
fn runs_in_order(
    shards: &[Loaded],
    n: usize,
    total: usize,
) -> Result<Vec<Option<(&ManifestRow, &Loaded)>>> {
    let mut rows: Vec<Option<(&ManifestRow, &Loaded)>> = vec![None; total];
    for s in shards {
        // Runs i < total with i mod n = shard.
        let expected = (total + n - 1 - s.m.shard) / n;
        if s.m.rows.len() != expected {
            return Err(io(
                &s.dir,
                format!(
                    "shard {}/{n} lists {} runs, expected {expected} of {total}; the shard is incomplete or was edited",
                    s.m.shard,
                    s.m.rows.len()
                ),
            ));
        }
        for row in &s.m.rows {
            if row.run >= total || row.run % n != s.m.shard || rows[row.run].is_some() {
                return Err(io(
                    &s.dir,
                    format!(
                        "run {} does not belong to shard {}/{n} of a {total}-run sweep (or is listed twice)",
                        row.run, s.m.shard
                    ),
                ));
            }
            rows[row.run] = Some((row, s));
        }
    }
    Ok(rows)
}

/// The keys every run's `summary.json` has (a partial run's too).
const SUMMARY_KEYS: [&str; 4] = ["policy", "requests", "makespan_s", "jct_s"];

/// Check the files of a shard's run directory that merge copies: `summary.json` is a run
/// summary, and `requests.csv` (when the run wrote one) has the requests header and rows of as
/// many cells.
fn check_run_files(run_dir: &Path) -> Result<()> {
    let p = run_dir.join("summary.json");
    no_symlink(&p)?;
    let text = crate::input::read_text(&p, crate::input::MAX_DATA_BYTES).map_err(|e| io(&p, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        let msg = crate::error::plain_serde(&e.to_string());
        io(
            &p,
            format!("not a run summary: {msg}; the shard was edited or is corrupt"),
        )
    })?;
    if let Some(k) = SUMMARY_KEYS.iter().find(|k| v.get(**k).is_none()) {
        return Err(io(
            &p,
            format!("not a run summary (no `{k}`); the shard was edited or is corrupt"),
        ));
    }
    let p = run_dir.join("requests.csv");
    no_symlink(&p)?;
    if !p.exists() {
        return Ok(());
    }
    let file =
        crate::input::open_bounded(&p, crate::input::MAX_DATA_BYTES).map_err(|e| io(&p, e))?;
    let file = crate::trace::csv_reader::LineLimited::new(file);
    let cells = crate::output::REQUESTS_HEADER.split(',').count();
    let corrupt = |line: usize, what: &str| {
        io(
            &p,
            format!("line {line}: {what}; the shard was edited or is corrupt"),
        )
    };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(file));
    match lines.next() {
        Some(Ok(h)) if h == crate::output::REQUESTS_HEADER => {}
        Some(Err(e)) => return Err(io(&p, e)),
        _ => return Err(corrupt(1, "expected the requests.csv header")),
    }
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| corrupt(i + 2, &e.to_string()))?;
        if line.split(',').count() != cells {
            return Err(corrupt(i + 2, &format!("expected {cells} cells")));
        }
    }
    Ok(())
}

/// Copy a directory tree of plain files.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| {
        io(
            from,
            format!("cannot read a run directory the shard lists: {e}"),
        )
    })?;
    std::fs::create_dir_all(to).map_err(|e| io(to, format!("cannot create: {e}")))?;
    let mut entries: Vec<std::fs::DirEntry> = entries
        .collect::<std::io::Result<_>>()
        .map_err(|e| io(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type().map_err(|err| io(&src, err))?;
        if !ft.is_file() && !ft.is_dir() {
            no_symlink(&src)?;
        }
        if ft.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|err| io(&src, format!("cannot copy: {err}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_shard_specs() {
        assert_eq!(Shard::parse("0/3"), Ok(Shard { index: 0, count: 3 }));
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(Shard::parse("3/3").unwrap_err().contains("0 to 2"));
        assert!(Shard::parse("0/0").unwrap_err().contains("≥ 1"));
        assert!(Shard::parse("1").unwrap_err().contains("I/N"));
        assert!(Shard::parse("-1/2").is_err());
        assert!(Shard::parse("a/2").is_err());
    }

    #[test]
    fn shards_partition_the_runs() {
        for n in 1..6 {
            for i in 0..17 {
                let owners: Vec<usize> = (0..n)
                    .filter(|&k| Shard { index: k, count: n }.owns(i))
                    .collect();
                assert_eq!(owners, vec![i % n]);
            }
        }
    }

    #[test]
    fn fnv1a_known_values() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        fnv1a(&mut h, b"a");
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
    }
}
