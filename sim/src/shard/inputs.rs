//! The data files a sweep reads, as `shard.json` lists them: each named from the scenario's real
//! folder and hashed, so that `merge` can tell shards that read different contents.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sweep::SweepRun;

/// One data file of a sweep (as the scenario names it, resolved) and the 64-bit FNV-1a hash of its
/// bytes (`-` for what is not a regular file, e.g. a pipe, which two shards cannot share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputHash {
    pub file: String,
    pub fnv1a64: String,
}

/// The data files every run of the sweep reads (not the scenario files: their meaning is in the
/// fingerprint), each hashed once: the fingerprint sees a trace's path, not its contents, so
/// shards run on two versions of one trace merged.
pub(super) fn input_hashes(runs: &[SweepRun]) -> Result<Vec<InputHash>> {
    let scenarios: std::collections::HashSet<&Path> = runs
        .iter()
        .map(|r| r.resolved.scenario_path.as_path())
        .collect();
    // Named from the scenario's folder where they lie under it: the same on every machine that
    // holds the same checkout, so that the shards' files can be compared one by one.
    let base = runs
        .first()
        .and_then(|r| r.resolved.scenario_path.parent())
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .and_then(|p| p.canonicalize().ok());
    crate::sweep::input_files(runs)
        .iter()
        .filter(|p| !scenarios.contains(p.as_path()))
        .map(|p| hash_file(p, base.as_deref()))
        .collect()
}

/// `path` as shard.json names it: its real path relative to `base` (the scenario's real folder),
/// with `..` where it lies outside it (the shipped scenarios read `../traces/…`), so that shards
/// started from other directories or machines with the same checkout name it alike; as given
/// when it cannot be resolved.
fn input_name(path: &Path, base: Option<&Path>) -> String {
    let rel = path
        .canonicalize()
        .ok()
        .and_then(|c| Some(relative_to(&c, base?)));
    rel.unwrap_or_else(|| path.display().to_string())
}

/// `path` relative to `base` (both absolute and resolved), with `..` for the parts of `base`
/// it does not share.
fn relative_to(path: &Path, base: &Path) -> String {
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &p[common..] {
        rel.push(c);
    }
    rel.display().to_string()
}

/// [`InputHash`] of `path` (named by [`input_name`]).
fn hash_file(path: &Path, base: Option<&Path>) -> Result<InputHash> {
    use std::io::Read;
    let io = |e: std::io::Error| crate::trace::csv_reader::io_err(path, e);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let meta = std::fs::metadata(path).map_err(io)?;
    let hash_one = |h: &mut u64, file: &Path| -> Result<()> {
        let io = |e: std::io::Error| crate::trace::csv_reader::io_err(file, e);
        let mut f = std::fs::File::open(file).map_err(io)?;
        let mut buf = [0u8; 1 << 16]; // under glibc's mmap threshold (see input::read_checked)
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            fnv1a(h, &buf[..n]);
        }
    };
    if meta.is_file() {
        hash_one(&mut h, path)?;
    } else if meta.is_dir() {
        // A directory input (a calibration profile): its files' names and contents, by name
        // (shards run against two different profiles merged: round 11).
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io)?;
        names.sort();
        for name in names {
            let file = path.join(&name);
            fnv1a(&mut h, name.as_encoded_bytes());
            fnv1a(&mut h, &[0]);
            if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                hash_one(&mut h, &file)?;
            }
        }
    }
    Ok(InputHash {
        file: input_name(path, base),
        fnv1a64: if meta.is_file() || meta.is_dir() {
            format!("{h:016x}")
        } else {
            "-".into()
        },
    })
}

/// The first input of `b` that differs from `a`'s: with the same file names, the first whose
/// contents differ from its namesake's (two traces' contents swapped merged: round 9, 10); else
/// (the files sit elsewhere on another machine) the first whose contents no input of `a` has.
/// `None` when both read the same.
pub(super) fn differing_input<'a>(a: &[InputHash], b: &'a [InputHash]) -> Option<&'a InputHash> {
    if file_names(a) == file_names(b) {
        let by_name: std::collections::HashMap<&str, &str> = a
            .iter()
            .map(|i| (i.file.as_str(), i.fnv1a64.as_str()))
            .collect();
        return b
            .iter()
            .find(|i| by_name.get(i.file.as_str()) != Some(&i.fnv1a64.as_str()));
    }
    let mut ha: Vec<&str> = a.iter().map(|i| i.fnv1a64.as_str()).collect();
    let mut hb: Vec<&str> = b.iter().map(|i| i.fnv1a64.as_str()).collect();
    ha.sort_unstable();
    hb.sort_unstable();
    if ha == hb {
        return None;
    }
    b.iter()
        .find(|i| !ha.contains(&i.fnv1a64.as_str()))
        .or_else(|| b.first())
}

/// The names of `inputs`' files, sorted.
fn file_names(inputs: &[InputHash]) -> Vec<&str> {
    let mut n: Vec<&str> = inputs.iter().map(|i| i.file.as_str()).collect();
    n.sort_unstable();
    n
}

/// 64-bit FNV-1a (stable across builds and platforms, unlike `std`'s hasher).
pub(super) fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}
