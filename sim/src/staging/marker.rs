//! The [`MARKER_FILE`] of an output directory: what servesim wrote there, and the check that the
//! directory holds nothing else.
//!
//! The marker lists every path servesim wrote, relative to the directory, files and directories
//! alike, `/`-separated and sorted (the marker itself is not listed; the marker of a directory
//! written inside, such as a run's, is an ordinary listed file). A marker of the previous format
//! (only the top-level names, after [`MARKER_LIST`]) is still read and checked as before: top
//! level only, with [`ADDED_BY_COMMANDS`] taken as servesim's.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::io;
use crate::error::Result;

/// The file servesim writes into every output directory; only a directory holding it (or an
/// empty one) is replaced without `--force`.
pub const MARKER_FILE: &str = ".servesim-output";

/// The marker's text, followed by [`MARKER_PATHS`] and the paths servesim wrote, one per line,
/// sorted (outputs stay byte-identical between runs).
pub(super) const MARKER_TEXT: &str = "This directory was written by servesim. servesim replaces it when asked to write the same output again;\nit refuses to replace a directory without this file unless given --force.\n";
/// Entries other servesim commands add to an output directory of the previous marker format
/// (`compare`'s `compare.csv`, `plot`'s `plots/`): servesim's too.
const ADDED_BY_COMMANDS: [&str; 2] = ["compare.csv", "plots"];
/// The line before the list of top-level entries in a marker of the previous format.
pub(super) const MARKER_LIST: &str = "Entries written by servesim (any other entry is yours, and servesim then refuses to replace this directory without --force):\n";
/// The line before the list of every path servesim wrote.
pub(super) const MARKER_PATHS: &str = "Paths written by servesim, relative to this directory (any other file or directory in it is yours, and servesim then refuses to replace this directory without --force):\n";
/// The file that makes an output directory a calibration profile.
const PROFILE_META: &str = "meta.toml";
/// The largest marker read: a sweep of 100,000 runs lists 5 paths per run (its directory and
/// four files), 500,000 lines; 128 MiB leaves each about 260 bytes. A longer marker (or one cut
/// short) counts as no marker.
pub(super) const MARKER_MAX_BYTES: u64 = 128 << 20;

/// What a marker says servesim wrote.
pub(super) enum Listing {
    /// The previous format: the top-level names.
    Top(Vec<String>),
    /// Every path, relative to the directory (the text of the list, one per line).
    Paths(String),
}

impl Listing {
    /// Whether servesim wrote a calibration profile here (its `meta.toml`; no other output has
    /// one).
    pub(super) fn is_profile(&self) -> bool {
        match self {
            Listing::Top(names) => names.iter().any(|n| n == PROFILE_META),
            Listing::Paths(text) => text.lines().any(|l| l == PROFILE_META),
        }
    }

    /// The paths of a [`Listing::Paths`], for lookup (`None` for the previous format).
    fn paths(&self) -> Option<HashSet<&str>> {
        match self {
            Listing::Top(_) => None,
            Listing::Paths(text) => Some(text.lines().collect()),
        }
    }
}

/// What the marker of directory `dir` says servesim wrote there: `None` when it has no marker,
/// or one servesim did not write (empty, other text, an older servesim's without the list, cut
/// short or longer than [`MARKER_MAX_BYTES`]).
pub(super) fn marker_listing(dir: &Path) -> Option<Listing> {
    marker_listing_within(dir, MARKER_MAX_BYTES)
}

/// [`marker_listing`] with a marker of at most `max_bytes`.
pub(super) fn marker_listing_within(dir: &Path, max_bytes: u64) -> Option<Listing> {
    let path = dir.join(MARKER_FILE);
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut text = String::new();
    let file = std::fs::File::open(&path).ok()?;
    file.take(max_bytes + 1).read_to_string(&mut text).ok()?;
    if text.len() as u64 > max_bytes || !text.ends_with('\n') {
        return None;
    }
    let rest = text.strip_prefix(MARKER_TEXT)?;
    if let Some(list) = rest.strip_prefix(MARKER_PATHS) {
        return Some(Listing::Paths(list.to_string()));
    }
    let list = rest.strip_prefix(MARKER_LIST)?;
    Some(Listing::Top(list.lines().map(String::from).collect()))
}

/// Up to five names, quoted, and how many more.
pub(super) fn name_list(names: &[String]) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(5)
        .map(|n| format!("`{}`", n.escape_debug()))
        .collect();
    match names.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// `rel` (a path inside an output, `/`-separated) joined with `name`.
fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Every path under `dir` (relative, `/`-separated; the top-level marker left out) that is not in
/// `listed` (all of them when it is `None`), sorted. A path listed as a directory (and one now)
/// is descended into; an unlisted directory is reported whole, not descended; a symlink is an
/// entry like a file, never followed. A name holding a newline can never be listed.
fn unlisted_paths(dir: &Path, listed: Option<&HashSet<&str>>) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, format!("cannot list: {e}")))? {
            let e = e.map_err(|e| io(&d, e))?;
            let path = join_rel(&rel, &e.file_name().to_string_lossy());
            if path == MARKER_FILE {
                continue;
            }
            let is_listed =
                !path.contains('\n') && listed.is_none_or(|l| l.contains(path.as_str()));
            if listed.is_some() != is_listed {
                found.push(path.clone());
            }
            if is_listed && e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((e.path(), path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The entries of directory `dir` (a servesim output) that its marker does not list: files the
/// user added (notes, a `.git`, another command's output written inside it), at any depth.
pub(super) fn foreign_entries(dir: &Path, written: &Listing) -> Result<Vec<String>> {
    match written {
        Listing::Paths(_) => unlisted_paths(dir, written.paths().as_ref()),
        Listing::Top(names) => {
            let mut foreign = Vec::new();
            for e in std::fs::read_dir(dir).map_err(|e| io(dir, format!("cannot list: {e}")))? {
                let name = e.map_err(|e| io(dir, e))?.file_name();
                let name = name.to_string_lossy();
                if name != MARKER_FILE
                    && !ADDED_BY_COMMANDS.contains(&name.as_ref())
                    && !names.iter().any(|w| *w == name)
                {
                    foreign.push(name.into_owned());
                }
            }
            foreign.sort();
            Ok(foreign)
        }
    }
}

/// The paths under `dir/sub` (`sub` itself when it is unlisted) that the marker of servesim output
/// `dir` does not list: what a user put among servesim's files there (`plots/my_fig.png`, or a
/// `plots/kv_usage.png` of their own in a run that drew none). Empty without `dir/sub`, and for
/// a marker of the previous format or none (the caller decides about those).
pub fn unlisted_under(dir: &Path, sub: &str) -> Result<Vec<String>> {
    let Some(Listing::Paths(text)) = marker_listing(dir) else {
        return Ok(Vec::new());
    };
    let at = dir.join(sub);
    if std::fs::symlink_metadata(&at).is_err() {
        return Ok(Vec::new());
    }
    let listed: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(sub)?.strip_prefix('/'))
        .collect();
    if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
        return Ok(vec![sub.to_string()]);
    }
    // An unlisted `sub` is the user's, with everything in it.
    let sub_listed = text.lines().any(|l| l == sub);
    Ok(unlisted_paths(&at, sub_listed.then_some(&listed))?
        .into_iter()
        .map(|p| join_rel(sub, &p))
        .collect())
}

/// A marker's text listing `paths` (sorted, each once).
fn marker_of(mut paths: Vec<String>) -> String {
    paths.sort();
    paths.dedup();
    let mut text = format!("{MARKER_TEXT}{MARKER_PATHS}");
    for p in paths {
        text.push_str(&p);
        text.push('\n');
    }
    text
}

/// The marker of directory `dir` as servesim has just filled it: every path in it.
pub(super) fn marker_text(dir: &Path) -> Result<String> {
    Ok(marker_of(unlisted_paths(dir, None)?))
}

/// Mark `dir` (which servesim just filled) as servesim's: a marker listing every path in it
/// (`plot`'s `plots/` in a directory servesim did not write, so that it can be redrawn).
pub fn mark_dir(dir: &Path) -> Result<()> {
    let text = marker_text(dir)?;
    let path = dir.join(MARKER_FILE);
    std::fs::write(&path, text).map_err(|e| io(&path, e))
}

/// Whether `dir` holds a marker servesim wrote and nothing the marker does not list.
pub fn only_servesim_entries(dir: &Path) -> Result<bool> {
    match marker_listing(dir) {
        Some(written) => Ok(foreign_entries(dir, &written)?.is_empty()),
        None => Ok(false),
    }
}

/// Whether `dir` holds a marker servesim wrote (it is a servesim output, perhaps with the user's
/// files added).
pub fn is_servesim_output(dir: &Path) -> bool {
    marker_listing(dir).is_some()
}

/// Record in the marker of servesim output `dir` that a command has just written `paths` (files
/// inside `dir`) there, with the directories between, so that the output stays replaceable. A
/// marker of the previous format is left as it is (it takes `plots/` and `compare.csv` as
/// servesim's); without a marker nothing is recorded. Returns whether `dir` is a servesim output.
pub fn add_to_marker(dir: &Path, paths: &[PathBuf]) -> Result<bool> {
    let Some(listing) = marker_listing(dir) else {
        return Ok(false);
    };
    let Listing::Paths(text) = listing else {
        return Ok(true);
    };
    let mut all: Vec<String> = text.lines().map(String::from).collect();
    for p in paths {
        let Ok(inner) = p.strip_prefix(dir) else {
            continue;
        };
        let mut rel = String::new();
        for c in inner.components() {
            rel = join_rel(&rel, &c.as_os_str().to_string_lossy());
            all.push(rel.clone());
        }
    }
    let path = dir.join(MARKER_FILE);
    std::fs::write(&path, marker_of(all)).map_err(|e| io(&path, e))?;
    Ok(true)
}
