//! The data files a sweep reads, as `shard.json` lists them: each named as the scenario gives it
//! and hashed, so that `merge` can tell shards that read different contents.

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
    // Named as the scenario spells them: the same on every machine and from every working
    // directory that holds the same checkout, so that the shards' files can be compared one by one.
    let folder = runs
        .first()
        .and_then(|r| r.resolved.scenario_path.parent())
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
    crate::sweep::input_files(runs)
        .iter()
        .filter(|p| !scenarios.contains(p.as_path()))
        .map(|p| hash_file(p, folder))
        .collect()
}

/// `path` as shard.json names it: as the scenario gives it, relative to the scenario's folder
/// `folder` (the shipped scenarios read `../traces/…`), or absolute when the scenario gives it so;
/// `.` and `dir/..` removed, but symbolic links not followed: a link re-pointed between two
/// shards reads other contents under the same name, and that must show (round 11: names were
/// real paths, so two swapped links, or one absolute path named from scenario copies at two
/// depths, merged swapped results).
fn input_name(path: &Path, folder: Option<&Path>) -> String {
    let given = folder
        .and_then(|f| path.strip_prefix(f).ok())
        .filter(|rest| rest.is_relative())
        .unwrap_or(path);
    lexical(given).display().to_string()
}

/// `path` without `.` components and with each `name/..` pair removed (no file system access).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// [`InputHash`] of `path` (named by [`input_name`]).
fn hash_file(path: &Path, folder: Option<&Path>) -> Result<InputHash> {
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
        file: input_name(path, folder),
        fnv1a64: if meta.is_file() || meta.is_dir() {
            format!("{h:016x}")
        } else {
            "-".into()
        },
    })
}

/// How `b`'s inputs differ from `a`'s, in words naming a file (`None` when both read the
/// same): with the same file names, the first of `b` whose contents differ from its
/// namesake's (two traces' contents swapped merged: round 9, 10); else (the files sit
/// elsewhere on another machine) the first of `b` whose contents no input of `a` has, or the
/// first of `a` whose contents `b` lacks (a shard listing fewer inputs merged when given
/// second: round 12, 09).
pub(super) fn differing_input(a: &[InputHash], b: &[InputHash]) -> Option<String> {
    if file_names(a) == file_names(b) {
        let by_name: std::collections::HashMap<&str, &str> = a
            .iter()
            .map(|i| (i.file.as_str(), i.fnv1a64.as_str()))
            .collect();
        return b
            .iter()
            .find(|i| by_name.get(i.file.as_str()) != Some(&i.fnv1a64.as_str()))
            .map(|i| format!("{} in the second differs from the first's", i.file));
    }
    let mut ha: Vec<&str> = a.iter().map(|i| i.fnv1a64.as_str()).collect();
    let mut hb: Vec<&str> = b.iter().map(|i| i.fnv1a64.as_str()).collect();
    ha.sort_unstable();
    hb.sort_unstable();
    if ha == hb {
        return None;
    }
    if let Some(i) = b.iter().find(|i| !ha.contains(&i.fnv1a64.as_str())) {
        return Some(format!(
            "{} in the second differs from every input of the first",
            i.file
        ));
    }
    Some(match a.iter().find(|i| !hb.contains(&i.fnv1a64.as_str())) {
        Some(i) => format!("{} of the first is not among the second's inputs", i.file),
        None => "the two list the same contents a different number of times".to_string(),
    })
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
