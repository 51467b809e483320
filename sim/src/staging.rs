//! Writing output directories and files without ever losing a user's data.
//!
//! Every output goes to a hidden staging sibling (`.NAME.servesim-tmp-PID-N`) that is renamed
//! onto the destination at the end, so an error or Ctrl-C never leaves a partial result. The
//! rules for an existing destination:
//!
//! - A directory servesim wrote (it holds the [`MARKER_FILE`]) or an empty directory is replaced.
//! - Anything else — a directory of the user's, a file, a symlink — is refused with an error that
//!   names `--force`; with `--force` it is replaced.
//! - Never, even with `--force`: a destination that holds one of the command's inputs (a scenario,
//!   trace, profile, shard…) or the current directory, or a path with no directory name (`.`,
//!   `..`, `/`).
//! - One writer per destination: a lock file `.NAME.servesim-lock` (created exclusively, holding
//!   the writer's PID) makes a second concurrent writer fail at once with a clear error; the first
//!   finishes intact.
//! - Debris of killed processes (staging directories, set-aside old outputs and locks whose PID no
//!   longer runs) is removed the next time the same destination is written; a set-aside old output
//!   whose replacement never arrived is put back.
//!
//! A replaced destination is first renamed aside (`.NAME.servesim-old-PID-N`), the staging
//! directory renamed into place, and only then the old one deleted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, SimError};

/// The file servesim writes into every output directory; only a directory holding it (or an
/// empty one) is replaced without `--force`.
pub const MARKER_FILE: &str = ".servesim-output";

/// The marker's text (constant: outputs stay byte-identical between runs).
const MARKER_TEXT: &str = "This directory was written by servesim. servesim replaces it when asked to write the same output again;\nit refuses to replace a directory without this file unless given --force.\n";

/// What a command may replace at its output path.
#[derive(Debug, Clone, Default)]
pub struct Replace {
    /// `--force`: also replace an existing destination servesim did not write.
    pub force: bool,
    /// The files and directories the command reads: never deleted, even with `force`.
    pub inputs: Vec<PathBuf>,
}

impl Replace {
    pub fn new(force: bool, inputs: impl IntoIterator<Item = PathBuf>) -> Self {
        Replace {
            force,
            inputs: inputs.into_iter().collect(),
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
    split(dest, "directory")?;
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
        if dest.join(MARKER_FILE).is_file() {
            return Ok(());
        }
        let empty = std::fs::read_dir(dest)
            .map_err(|e| io(dest, format!("cannot list the output directory: {e}")))?
            .next()
            .is_none();
        if empty || replace.force {
            return Ok(());
        }
        return Err(io(
            dest,
            format!(
                "the output directory exists and was not written by servesim (no {MARKER_FILE} file); choose another --out, or pass --force to replace it and everything in it"
            ),
        ));
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

/// The PID in a staging name's suffix `PID` or `PID-N`.
fn pid_of(suffix: &str) -> Option<u32> {
    suffix.split('-').next()?.parse().ok()
}

/// Remove the debris that killed writers of `parent/name` left: staging directories and files
/// (`.NAME.servesim-tmp-PID-N`, and the older `.NAME.tmp-PID`), set-aside old outputs
/// (`.NAME.servesim-old-PID-N`: put back when the destination is missing, else deleted) and locks,
/// each only when its PID no longer runs.
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
        let dest = parent.join(name);
        if is_old && std::fs::symlink_metadata(&dest).is_err() {
            let _ = std::fs::rename(&path, &dest);
            continue;
        }
        remove_any(&path);
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

/// The lock of one destination, held by one writer: a file created exclusively, holding
/// "PID N". Released (removed) on drop when it still holds this writer's token.
struct Lock {
    path: PathBuf,
    token: String,
}

impl Lock {
    fn take(parent: &Path, name: &str, dest: &Path, token: &str) -> Result<Lock> {
        let path = parent.join(format!(".{name}.servesim-lock"));
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(token.as_bytes()).map_err(|e| io(&path, e))?;
                    return Ok(Lock {
                        path,
                        token: token.to_string(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    match pid_of(holder.trim()) {
                        Some(pid) if !process_alive(pid) => {
                            // A killed writer's lock: take it over.
                            let _ = std::fs::remove_file(&path);
                        }
                        Some(pid) => {
                            return Err(io(
                                dest,
                                format!(
                                    "another servesim command (pid {pid}) is writing this output right now; wait for it to finish or choose another --out (lock file {})",
                                    path.display()
                                ),
                            ));
                        }
                        // Being written this instant by its creator: wait a moment.
                        None => std::thread::sleep(std::time::Duration::from_millis(20)),
                    }
                }
                Err(e) => return Err(io(&path, format!("cannot create the lock file: {e}"))),
            }
        }
        Err(io(
            dest,
            format!(
                "cannot take the output lock {}; if no servesim command is running, delete it",
                path.display()
            ),
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|t| t == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
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

/// One output file being written: bytes go to a hidden temporary sibling that
/// [`StagedFile::commit`] renames into place; dropped without `commit` (any error), the temporary
/// is removed, so a failed command never leaves a partial file behind. An existing file is
/// replaced (as `-o` does elsewhere), except an input of the command or a directory.
pub struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

/// Check that the file `dest` may be written: not a directory, and not one of `inputs` (the files
/// the command reads; commands call this before their work starts).
pub fn check_file_dest(dest: &Path, inputs: &[PathBuf]) -> Result<()> {
    split(dest, "file")?;
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            return Err(io(dest, "the output path is a directory; give a file name"));
        }
        Ok(m) if !m.is_file() => {
            return Err(io(
                dest,
                "the output path exists and is not a regular file (a symbolic link, device, FIFO or socket); give the path of a regular file",
            ));
        }
        _ => {}
    }
    if let Some(input) = inside_input(dest, inputs) {
        return Err(io(
            dest,
            format!(
                "refusing to write inside {}, an input directory of this command; choose another output file",
                input.display()
            ),
        ));
    }
    if let Some(input) = held_input(dest, inputs) {
        return Err(io(
            dest,
            format!(
                "refusing to overwrite {}: it is an input of this command; choose another output file",
                input.display()
            ),
        ));
    }
    Ok(())
}

/// Write `bytes` to the file `dest` atomically (staged, then renamed), after checking that it is
/// none of `inputs` (see [`check_file_dest`]).
pub fn write_file(dest: &Path, bytes: &[u8], inputs: &[PathBuf]) -> Result<PathBuf> {
    check_file_dest(dest, inputs)?;
    let mut f = StagedFile::new(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

impl StagedFile {
    /// Stage `dest` (see [`check_file_dest`] for the inputs check the command makes first).
    pub fn new(dest: &Path) -> Result<Self> {
        check_file_dest(dest, &[])?;
        let (parent, name) = split(dest, "file")?;
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, format!("cannot create: {e}")))?;
        clean_debris(&parent, &name);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.servesim-tmp-{}-{seq}", std::process::id()));
        let f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, format!("cannot create: {e}")))?;
        Ok(StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            writer: Some(std::io::BufWriter::with_capacity(1 << 16, f)),
        })
    }

    /// Append bytes to the temporary file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.writer.as_mut().expect("writer lives until commit");
        w.write_all(bytes).map_err(|e| io(&self.tmp, e))
    }

    /// Flush, sync and rename the temporary file onto `dest` (replacing it).
    pub fn commit(mut self) -> Result<PathBuf> {
        let w = self.writer.take().expect("writer lives until commit");
        let f = w
            .into_inner()
            .map_err(|e| io(&self.tmp, e.error().to_string()))?;
        f.sync_all().map_err(|e| io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
        Ok(self.dest.clone())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.writer.is_some() || self.tmp.exists() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!(
            "servesim-staging-test-{}-{seq}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A PID that no running process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_second_writer_of_the_same_destination_fails_and_the_first_finishes_intact() {
        let d = tempdir();
        let dest = d.join("out");
        let a = StagedDir::new(&dest, &Replace::default()).unwrap();
        a.write("x", b"first").unwrap();
        let msg = StagedDir::new(&dest, &Replace::default())
            .err()
            .expect("the second writer is refused")
            .to_string();
        assert!(msg.contains("another servesim command"), "{msg}");
        a.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"first");
        // The lock went with the first writer: a third may write now.
        let c = StagedDir::new(&dest, &Replace::default()).unwrap();
        c.write("x", b"third").unwrap();
        c.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"third");
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn debris_of_dead_writers_is_cleaned_and_a_set_aside_output_put_back() {
        let d = tempdir();
        let pid = dead_pid();
        for n in [
            format!(".out.servesim-tmp-{pid}-3"),
            format!(".out.tmp-{pid}"),
            format!(".other.servesim-tmp-{pid}-1"),
            format!(".out.servesim-tmp-{}-999", std::process::id()),
        ] {
            std::fs::create_dir_all(d.join(&n)).unwrap();
            std::fs::write(d.join(&n).join("junk"), "x").unwrap();
        }
        // A writer killed between setting the old output aside and moving its own into place.
        let aside = d.join(format!(".out.servesim-old-{pid}-4"));
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join(MARKER_FILE), MARKER_TEXT).unwrap();
        std::fs::write(aside.join("summary.json"), "old").unwrap();
        std::fs::write(d.join(".out.servesim-lock"), format!("{pid}-4")).unwrap();
        let dest = d.join("out");
        let s = StagedDir::new(&dest, &Replace::default()).unwrap();
        // The old output is back in place until the new one replaces it.
        assert_eq!(
            std::fs::read_to_string(dest.join("summary.json")).unwrap(),
            "old"
        );
        s.commit().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!(".other.servesim-tmp-{pid}-1"),
                format!(".out.servesim-tmp-{}-999", std::process::id()),
                "out".to_string(),
            ],
            "only other destinations' debris and a live process's staging remain"
        );
        assert!(!dest.join("summary.json").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_servesim_outputs_and_empty_directories_are_replaced_without_force() {
        let d = tempdir();
        let user = d.join("mine");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("thesis.tex"), "precious").unwrap();
        let msg = StagedDir::new(&user, &Replace::default())
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("--force"), "{msg}");
        assert!(user.join("thesis.tex").exists());
        let file = d.join("file");
        std::fs::write(&file, "precious").unwrap();
        assert!(StagedDir::new(&file, &Replace::default()).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
        let empty = d.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        StagedDir::new(&empty, &Replace::default())
            .unwrap()
            .commit()
            .unwrap();
        assert!(empty.join(MARKER_FILE).is_file());
        // Written by servesim now: replaced without --force.
        StagedDir::new(&empty, &Replace::default())
            .unwrap()
            .commit()
            .unwrap();
        // --force replaces the user's directory and the file.
        StagedDir::new(&user, &Replace::new(true, []))
            .unwrap()
            .commit()
            .unwrap();
        assert!(!user.join("thesis.tex").exists());
        StagedDir::new(&file, &Replace::new(true, []))
            .unwrap()
            .commit()
            .unwrap();
        assert!(file.join(MARKER_FILE).is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn inputs_are_never_replaced_even_with_force() {
        let d = tempdir();
        let shard = d.join("s0");
        StagedDir::new(&shard, &Replace::default())
            .unwrap()
            .commit()
            .unwrap();
        let msg = StagedDir::new(&shard, &Replace::new(true, [shard.clone()]))
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("an input directory of this command"), "{msg}");
        let inner = shard.join("scenario.toml");
        std::fs::write(&inner, "x").unwrap();
        assert!(StagedDir::new(&shard, &Replace::new(true, [inner.clone()])).is_err());
        assert!(StagedDir::new(&d, &Replace::new(true, [inner.clone()])).is_err());
        assert!(inner.exists());
        // A file output onto its own input.
        let msg = check_file_dest(&inner, std::slice::from_ref(&inner))
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("an input of this command"), "{msg}");
        for bad in [".", "..", "/"] {
            assert!(StagedDir::new(Path::new(bad), &Replace::new(true, [])).is_err());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
