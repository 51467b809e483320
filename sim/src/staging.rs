//! Writing output directories and files without ever losing a user's data.
//!
//! Every output goes to a hidden staging sibling (`.NAME.servesim-tmp-PID-N`) that is renamed
//! onto the destination at the end, so an error or Ctrl-C never leaves a partial result. The
//! rules for an existing destination:
//!
//! - A directory servesim wrote (it holds the [`MARKER_FILE`], which lists every path servesim
//!   wrote in it, see [`marker`]) or an empty directory is replaced — unless it now holds files
//!   or directories, at any depth, the marker does not list (the user's notes, a `.git`, another
//!   command's output written inside it): then only with `--force`. A marker servesim did not write (empty, other text) counts
//!   as no marker.
//! - Anything else — a directory of the user's, a file, a symlink — is refused with an error that
//!   names `--force`; with `--force` it is replaced.
//! - Never, even with `--force`: a destination that holds one of the command's inputs (a scenario,
//!   trace, profile, shard…) or the current directory, a device, FIFO or socket, a path with no
//!   directory name (`.`, `..`, `/`), or a directory that is top-level, the home directory (or
//!   above it), shared (sticky bit), a mount point or a git working tree, whatever marker it holds.
//! - One writer per destination: a lock file `.NAME.servesim-lock` with an advisory lock (`flock`,
//!   released by the kernel when its holder dies) makes a second concurrent writer fail at once
//!   with a clear error; the first finishes intact. A lock file left by a killed writer is taken
//!   over, whatever process its PID now names.
//! - Debris of killed processes (staging directories and set-aside old outputs whose PID no longer
//!   runs) is removed the next time the same destination is written, but only when it holds the
//!   marker file; a set-aside old output whose replacement never arrived is put back.
//! - A single-file output ([`StagedFile`]) never replaces an existing file unless asked to
//!   (`--force`, or a command's own file of the expected kind), never a directory, device or FIFO,
//!   and replaces a symbolic link itself, never the file it points to.
//!
//! A replaced destination is first renamed aside (`.NAME.servesim-old-PID-N`), the staging
//! directory renamed into place, and only then the old one deleted.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, SimError};

mod file;
mod marker;
#[cfg(test)]
mod tests;

pub use file::{StagedFile, check_file_dest, first_line_is, write_file};
#[cfg(test)]
use marker::{Listing, MARKER_LIST, MARKER_MAX_BYTES, MARKER_PATHS, marker_listing_within};
pub use marker::{
    MARKER_FILE, add_to_marker, is_servesim_output, mark_dir, only_servesim_entries, unlisted_under,
};
use marker::{MARKER_TEXT, foreign_entries, marker_listing, marker_text, name_list};

/// What a command may replace at its output path.
#[derive(Debug, Clone, Default)]
pub struct Replace {
    /// `--force`: also replace an existing destination servesim did not write.
    pub force: bool,
    /// The files and directories the command reads: never deleted, even with `force`.
    pub inputs: Vec<PathBuf>,
    /// The command writes a calibration profile, so it may replace one servesim wrote; other
    /// commands need `force` for that (a `run --out` typo deleted a measured profile).
    pub profile: bool,
}

impl Replace {
    pub fn new(force: bool, inputs: impl IntoIterator<Item = PathBuf>) -> Self {
        Replace {
            force,
            inputs: inputs.into_iter().collect(),
            profile: false,
        }
    }
    /// [`Replace::new`] for a command that writes a calibration profile.
    pub fn profile(force: bool, inputs: impl IntoIterator<Item = PathBuf>) -> Self {
        Replace {
            profile: true,
            ..Replace::new(force, inputs)
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Distinguishes the staging paths of one process (tests run many commands in one process).
static SEQ: AtomicU64 = AtomicU64::new(0);

/// `dest` as the directory entry the output replaces: without a trailing `/` or `/.` (`--out
/// o/.`, `--out LINK/`: the entry is `o`, a link itself, not what it points to), and with a
/// parent that runs through a symlink or climbs with `..` (`o/../o`, `P/o` with `P -> o/..`)
/// resolved physically: the staging path ran through `o`, which replacing `o` moves away (the
/// output vanished into debris). A parent through `..` must exist.
fn without_trailing_dots(dest: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let d: PathBuf = dest.components().collect();
    let parent = d.parent().unwrap_or(Path::new(""));
    let mut named = false;
    let climbs = parent.components().any(|c| match c {
        Component::Normal(_) => {
            named = true;
            false
        }
        Component::ParentDir => named,
        _ => false,
    });
    let (parent, name) = split(&d, "directory")?;
    match parent.canonicalize() {
        // A parent that is what it says (no link, no `..`) keeps the path as given (messages
        // name it as the user wrote it).
        Ok(p) if std::path::absolute(&parent).is_ok_and(|a| a == p) => Ok(d),
        Ok(p) => Ok(p.join(name)),
        Err(_) if !climbs => Ok(d),
        Err(e) => Err(io(
            dest,
            format!(
                "its folder {} (through `..`) cannot be resolved: {e}; give the output path without `..`",
                parent.display()
            ),
        )),
    }
}

/// `dest`'s parent (`.` when it has none) and its final component.
fn split(dest: &Path, what: &str) -> Result<(PathBuf, String)> {
    let name = match dest.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => {
            return Err(io(
                dest,
                format!(
                    "the output path must end in a {what} name (not `.`, `..` or `/`); choose another --out"
                ),
            ));
        }
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((parent, name))
}

/// Whether `inner` is `outer` or lies inside it (both resolved through symlinks; a path that does
/// not exist lies nowhere).
fn within(inner: &Path, outer: &Path) -> bool {
    match (resolve(inner), outer.canonicalize()) {
        (Some(i), Ok(o)) => i.starts_with(o),
        _ => false,
    }
}

/// `p` resolved through symlinks; a path that does not exist yet is resolved through its parent
/// (so an output about to be created can be placed).
fn resolve(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = p
        .parent()
        .filter(|q| !q.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(parent.canonicalize().ok()?.join(p.file_name()?))
}

/// The first input directory that holds `dest` (writing there would change an input).
fn inside_input<'a>(dest: &Path, inputs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    inputs
        .iter()
        .find(|input| input.is_dir() && within(dest, input))
}

/// The first of `inputs` that `dest` is or holds.
fn held_input<'a>(dest: &Path, inputs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    inputs.iter().find(|input| within(input, dest))
}

/// Check that `dest` may be written under `replace`: absent, a servesim output, an empty
/// directory, or (with `force`) anything that holds neither an input nor the current directory.
/// Commands call it before their work starts, so a refusal costs nothing; [`StagedDir`] checks
/// again when it replaces the destination.
pub fn check_dest(dest: &Path, replace: &Replace) -> Result<()> {
    let dest = &without_trailing_dots(dest)?;
    let (_, name) = split(dest, "directory")?;
    file::refuse_reserved(dest, &name, "--out")?;
    if let Some(input) = inside_input(dest, &replace.inputs) {
        return Err(io(
            dest,
            format!(
                "refusing to write inside {}, an input directory of this command; choose another --out",
                input.display()
            ),
        ));
    }
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dest, format!("cannot inspect the output path: {e}"))),
    };
    if !(meta.is_dir() || meta.is_file() || meta.file_type().is_symlink()) {
        return Err(io(
            dest,
            "the output path is a device, FIFO or socket; servesim never replaces one, even with --force: choose another --out",
        ));
    }
    let guard = dest.canonicalize().unwrap_or_else(|_| dest.to_path_buf());
    if let Some(input) = held_input(dest, &replace.inputs) {
        return Err(io(
            dest,
            format!(
                "refusing to replace the output path: it holds {}, an input of this command; choose another --out",
                input.display()
            ),
        ));
    }
    if let Ok(cwd) = std::env::current_dir()
        && within(&cwd, &guard)
    {
        return Err(io(
            dest,
            "refusing to replace the output path: it holds the current directory; choose another --out",
        ));
    }
    if meta.is_dir() {
        return check_dest_dir(dest, &guard, &meta, replace);
    }
    if replace.force {
        return Ok(());
    }
    Err(io(
        dest,
        if meta.file_type().is_symlink() {
            "the output path is a symbolic link; choose another --out, or pass --force to replace the link (not what it points to)"
        } else {
            "the output path exists and is not a directory; choose another --out, or pass --force to replace it"
        },
    ))
}

/// [`check_dest`] for an existing directory (`guard`: its canonical path).
fn check_dest_dir(
    dest: &Path,
    guard: &Path,
    meta: &std::fs::Metadata,
    replace: &Replace,
) -> Result<()> {
    if let Some(why) = protected_dir(guard, meta) {
        return Err(io(
            dest,
            format!(
                "refusing to replace the output directory, even with --force: it is {why}; choose another --out (e.g. a new directory inside it)"
            ),
        ));
    }
    if let Some(written) = marker_listing(dest) {
        if !replace.profile && !replace.force && written.is_profile() {
            return Err(io(
                dest,
                "the output directory is a calibration profile servesim wrote (it lists meta.toml), which only `servesim calibrate` replaces; choose another --out, or pass --force to replace it and everything in it",
            ));
        }
        let foreign = foreign_entries(dest, &written)?;
        if foreign.is_empty() || replace.force {
            return Ok(());
        }
        return Err(io(
            dest,
            format!(
                "the output directory was written by servesim but now also holds {}, which servesim did not write there; move {}, choose another --out, or pass --force to replace it and everything in it",
                name_list(&foreign),
                if foreign.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    let empty = std::fs::read_dir(dest)
        .map_err(|e| io(dest, format!("cannot list the output directory: {e}")))?
        .next()
        .is_none();
    if empty || replace.force {
        return Ok(());
    }
    Err(io(
        dest,
        format!(
            "the output directory exists and was not written by servesim (it has no {MARKER_FILE} file listing what servesim wrote there, or that file is not in the form servesim writes); choose another --out, or pass --force to replace it and everything in it"
        ),
    ))
}

/// Why `dir` (canonical, not a servesim output) must never be replaced, even with `--force`: a
/// top-level directory (`/tmp`, `/home`, …), the home directory or one above it, a shared
/// directory with the sticky bit (`/var/tmp`), a mount point, or a git working tree. Replacing
/// one would delete other people's or other programs' files, and lose its mode and owner.
fn protected_dir(dir: &Path, meta: &std::fs::Metadata) -> Option<&'static str> {
    if dir.components().count() <= 2 {
        return Some("a top-level directory");
    }
    if let Some(home) = std::env::var_os("HOME").and_then(|h| Path::new(&h).canonicalize().ok())
        && within(&home, dir)
    {
        return Some("the home directory or one that holds it");
    }
    if dir.join(".git").exists() {
        return Some("a git working tree");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o1000 != 0 {
            return Some("a shared directory (its sticky bit is set, as on /tmp)");
        }
        let parent_dev = dir
            .parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.dev());
        if parent_dev.is_some_and(|d| d != meta.dev()) {
            return Some("a mount point");
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    None
}

/// Whether process `pid` is running (on Unix: `kill(pid, 0)` succeeds or fails with EPERM).
/// Elsewhere every process counts as running, so nothing is ever taken for debris.
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        if unsafe { kill(pid, 0) } == 0 {
            return true;
        }
        // EPERM (1): it exists but belongs to another user.
        std::io::Error::last_os_error().raw_os_error() == Some(1)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Whether a lock file holds what servesim writes there: nothing yet (just created), or a
/// writer's "PID-N" token (kept by a killed writer).
fn written_by_servesim(mut file: &std::fs::File) -> bool {
    let mut text = String::new();
    if (&mut file).take(64).read_to_string(&mut text).is_err() || text.len() >= 64 {
        return false;
    }
    let text = text.trim();
    text.is_empty()
        || text
            .split_once('-')
            .is_some_and(|(p, n)| p.parse::<u32>().is_ok() && n.parse::<u64>().is_ok())
}

/// The PID in a staging name's suffix `PID` or `PID-N`.
fn pid_of(suffix: &str) -> Option<u32> {
    suffix.split('-').next()?.parse().ok()
}

/// Whether `path` is a directory (not a symlink to one) holding the [`MARKER_FILE`]: only such
/// staging or set-aside debris is servesim's to delete.
fn marked_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
        && std::fs::symlink_metadata(path.join(MARKER_FILE)).is_ok_and(|m| m.is_file())
}

/// Remove the temporary figures a killed `plot` left in `plots` (`.NAME.servesim-tmp-PID.png`
/// or `.svg`, and the older `.tmp-PID-NAME.png`/`.svg`): regular files whose PID no longer runs.
/// The next `plot` took them for the user's and refused to draw (round 12, 06).
pub fn clean_plot_debris(plots: &Path) {
    let Ok(entries) = std::fs::read_dir(plots) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = file
            .strip_suffix(".png")
            .or_else(|| file.strip_suffix(".svg"))
        else {
            continue;
        };
        let pid = if let Some((_, pid)) = stem.rsplit_once(".servesim-tmp-") {
            pid.parse::<u32>().ok()
        } else {
            stem.strip_prefix(".tmp-").and_then(pid_of)
        };
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        if stem.starts_with('.') && regular && pid.is_some_and(|p| !process_alive(p)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove the debris that killed writers of `parent/name` left: staging directories
/// (`.NAME.servesim-tmp-PID-N`, and the older `.NAME.tmp-PID`) and set-aside old outputs
/// (`.NAME.servesim-old-PID-N`: put back when the destination is missing, else deleted), each
/// only when its PID no longer runs and it holds the [`MARKER_FILE`] (a directory of the user's
/// that happens to have such a name is left alone, with one note on stderr, control characters
/// of its name escaped).
fn clean_debris(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let tmp = format!(".{name}.servesim-tmp-");
    let legacy = format!(".{name}.tmp-");
    let old = format!(".{name}.servesim-old-");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let (suffix, is_old) = if let Some(s) = file.strip_prefix(&tmp) {
            (s, false)
        } else if let Some(s) = file.strip_prefix(&legacy) {
            (s, false)
        } else if let Some(s) = file.strip_prefix(&old) {
            (s, true)
        } else {
            continue;
        };
        let Some(pid) = pid_of(suffix) else { continue };
        if process_alive(pid) {
            continue;
        }
        if !marked_dir(&path) {
            // Yours, or an output of yours set aside by --force: kept where it is (moved onto
            // the destination, the next --force would delete it).
            note_unmarked(&path);
            continue;
        }
        let dest = parent.join(name);
        if is_old && std::fs::symlink_metadata(&dest).is_err() {
            let _ = std::fs::rename(&path, &dest);
            continue;
        }
        remove_any(&path);
    }
}

/// Say once per process that a debris-like path was kept because servesim did not write it.
fn note_unmarked(path: &Path) {
    static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !NOTED.swap(true, Ordering::Relaxed) {
        let mut shown = String::new();
        for c in path.display().to_string().chars() {
            crate::error::push_escaped(&mut shown, c);
        }
        eprintln!(
            "note: kept {shown}: it looks like a leftover of an interrupted servesim command but has no {MARKER_FILE} file, so it may be yours; delete it if it is not"
        );
    }
}

/// Remove a directory tree, or a file or symlink (never what a symlink points to).
fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Device and inode of a file (to tell whether a path still names an open file).
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}
#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The lock of one destination, held by one writer: the file `.NAME.servesim-lock` with an
/// advisory lock (`flock`) on it, holding "PID-N" for the error message of a second writer. The
/// kernel releases the advisory lock when its holder dies however it dies, so a lock file left by
/// a killed writer is simply taken over, even when its PID now belongs to another process. On
/// drop the file is removed (while still locked) and then unlocked.
struct Lock {
    path: PathBuf,
    file: std::fs::File,
}

impl Lock {
    fn take(parent: &Path, name: &str, dest: &Path, token: &str) -> Result<Lock> {
        let path = parent.join(format!(".{name}.servesim-lock"));
        for _ in 0..5 {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(io(
                    &path,
                    "the lock path exists and is not a regular file (a symbolic link, directory…); remove it",
                ));
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io(&path, format!("cannot create the lock file: {e}")))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let who =
                        pid_of(holder.trim()).map_or(String::new(), |p| format!(" (pid {p})"));
                    return Err(io(
                        dest,
                        format!(
                            "another servesim command{who} is writing this output right now; wait for it to finish or choose another --out (lock file {})",
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io(&path, format!("cannot lock: {e}")));
                }
            }
            // The previous holder may have removed the file between our open and our lock: the
            // lock counts only while the path still names the locked file.
            let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => identity(&a) == identity(&b),
                _ => false,
            };
            if !same {
                continue;
            }
            if !written_by_servesim(&file) {
                return Err(io(
                    &path,
                    "this file is in the way of servesim's output lock and was not written by servesim; rename or remove it",
                ));
            }
            let mut f = &file;
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all(token.as_bytes()))
                .map_err(|e| io(&path, e))?;
            return Ok(Lock { path, file });
        }
        Err(io(
            dest,
            format!(
                "cannot take the output lock {}: other commands keep replacing it",
                path.display()
            ),
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let ours = match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => identity(&a) == identity(&b),
            _ => false,
        };
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// A directory being written; dropped without `commit`, it is removed.
pub struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
    parent: PathBuf,
    name: String,
    token: String,
    replace: Replace,
    committed: bool,
    /// Parent directories this writer created (deepest first): removed again, when empty, if it
    /// never commits.
    created: Vec<PathBuf>,
    lock: Option<Lock>,
}

/// Create `dir` and its missing ancestors; returns those it created, deepest first.
fn create_parents(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, format!("cannot create: {e}")))?;
    Ok(missing)
}

impl StagedDir {
    /// Check `dest` (see [`check_dest`]), take its lock, clean debris of killed writers and create
    /// the staging directory with the marker file.
    pub fn new(dest: &Path, replace: &Replace) -> Result<Self> {
        let dest = &without_trailing_dots(dest)?;
        check_dest(dest, replace)?;
        let (parent, name) = split(dest, "directory")?;
        let created = create_parents(&parent)?;
        let unmake = |e: SimError| {
            for d in &created {
                let _ = std::fs::remove_dir(d);
            }
            e
        };
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}-{seq}", std::process::id());
        let lock = Lock::take(&parent, &name, dest, &token).map_err(unmake)?;
        clean_debris(&parent, &name);
        let tmp = parent.join(format!(".{name}.servesim-tmp-{token}"));
        remove_any(&tmp);
        if let Err(e) = std::fs::create_dir_all(&tmp) {
            drop(lock);
            return Err(unmake(io(&tmp, format!("cannot create: {e}"))));
        }
        let dir = StagedDir {
            tmp,
            dest: dest.to_path_buf(),
            parent,
            name,
            token,
            replace: replace.clone(),
            committed: false,
            created,
            lock: Some(lock),
        };
        dir.write(MARKER_FILE, MARKER_TEXT.as_bytes())?;
        Ok(dir)
    }

    /// The marker with the list of what was written (every path in the staged directory).
    fn write_marker(&self) -> Result<()> {
        self.write(MARKER_FILE, marker_text(&self.tmp)?.as_bytes())
    }

    /// The temporary directory being filled.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.tmp.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let mut f = std::fs::File::create(&p).map_err(|e| io(&p, e))?;
        f.write_all(bytes).map_err(|e| io(&p, e))?;
        Ok(())
    }

    /// Replace `dest` with the staged directory: the old destination (checked again) is renamed
    /// aside, the staged directory renamed into place, then the old one deleted.
    pub fn commit(mut self) -> Result<PathBuf> {
        self.write_marker()?;
        check_dest(&self.dest, &self.replace)?;
        let aside = self
            .parent
            .join(format!(".{}.servesim-old-{}", self.name, self.token));
        let had_old = match std::fs::rename(&self.dest, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&self.dest, format!("cannot replace: {e}"))),
        };
        if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
            if had_old && std::fs::symlink_metadata(&self.dest).is_err() {
                let _ = std::fs::rename(&aside, &self.dest);
            } else if had_old {
                remove_any(&aside);
            }
            return Err(io(
                &self.dest,
                format!(
                    "cannot move the finished output into place ({e}); another process wrote this path meanwhile and its output was kept, this command's was discarded"
                ),
            ));
        }
        self.committed = true;
        if had_old {
            remove_any(&aside);
        }
        Ok(self.dest.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            self.lock = None;
            for d in &self.created {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}
