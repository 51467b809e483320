//! Single-file outputs: [`StagedFile`], [`check_file_dest`], [`write_file`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{
    Lock, MARKER_FILE, MARKER_TEXT, SEQ, clean_debris, held_input, inside_input, io, remove_any,
    split,
};
use crate::error::Result;

/// One output file being written: bytes go to `data` in a hidden staging directory next to it
/// (`.NAME.servesim-tmp-PID-N/`, holding the marker file so that a killed writer's debris is
/// recognisably servesim's), which [`StagedFile::commit`] moves into place; dropped without
/// `commit` (any error, Ctrl-C), the staging directory is removed, so a failed command never
/// leaves a partial file behind. The destination's lock is held from `new` to `commit`.
pub struct StagedFile {
    dir: PathBuf,
    tmp: PathBuf,
    dest: PathBuf,
    replace: bool,
    writer: Option<std::io::BufWriter<std::fs::File>>,
    _lock: Lock,
}

/// Check that the file `dest` may be written: not a directory, symbolic link, device, FIFO or
/// socket; not one of `inputs` (the files the command reads) nor inside an input directory; and
/// absent unless `replace` (`--force`, or the command's own file of the expected kind). Commands
/// call it before their work starts; [`StagedFile`] checks again.
pub fn check_file_dest(dest: &Path, inputs: &[PathBuf], replace: bool) -> Result<()> {
    let (_, name) = split(dest, "file")?;
    refuse_reserved(dest, &name, "output file name")?;
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
    if !replace && std::fs::symlink_metadata(dest).is_ok() {
        return Err(io(
            dest,
            "the output file exists; choose another output file, or pass --force to replace it",
        ));
    }
    Ok(())
}

/// Write `bytes` to the file `dest` atomically (staged, then moved into place), after checking it
/// (see [`check_file_dest`]).
pub fn write_file(dest: &Path, bytes: &[u8], inputs: &[PathBuf], replace: bool) -> Result<PathBuf> {
    check_file_dest(dest, inputs, replace)?;
    let mut f = StagedFile::new(dest, replace)?;
    f.write_all(bytes)?;
    f.commit()
}

impl StagedFile {
    /// Stage `dest`, which may replace an existing regular file only when `replace` (see
    /// [`check_file_dest`] for the inputs check the command makes first).
    pub fn new(dest: &Path, replace: bool) -> Result<Self> {
        check_file_dest(dest, &[], replace)?;
        let (parent, name) = split(dest, "file")?;
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, format!("cannot create: {e}")))?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}-{seq}", std::process::id());
        let lock = Lock::take(&parent, &name, dest, &token)?;
        clean_debris(&parent, &name);
        let dir = parent.join(format!(".{name}.servesim-tmp-{token}"));
        remove_any(&dir);
        std::fs::create_dir(&dir).map_err(|e| io(&dir, format!("cannot create: {e}")))?;
        // The data file keeps the destination's extension (image encoders go by it).
        let data = match dest.extension() {
            Some(x) => format!("data.{}", x.to_string_lossy()),
            None => "data".to_string(),
        };
        let staged = |dir: &Path| -> std::io::Result<std::fs::File> {
            std::fs::write(dir.join(MARKER_FILE), MARKER_TEXT)?;
            std::fs::File::create(dir.join(&data))
        };
        let f = staged(&dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            io(&dir, format!("cannot create: {e}"))
        })?;
        Ok(StagedFile {
            tmp: dir.join(&data),
            dir,
            dest: dest.to_path_buf(),
            replace,
            writer: Some(std::io::BufWriter::with_capacity(1 << 16, f)),
            _lock: lock,
        })
    }

    /// The temporary file (named like `dest`'s extension), for a writer that opens it by path
    /// (e.g. an image encoder that picks the format from the extension).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Append bytes to the temporary file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.writer.as_mut().expect("writer lives until commit");
        w.write_all(bytes).map_err(|e| io(&self.tmp, e))
    }

    /// Flush, sync and move the temporary file onto `dest`: replacing an existing regular file
    /// only when allowed, and never a file that appeared meanwhile when not.
    pub fn commit(mut self) -> Result<PathBuf> {
        let w = self.writer.take().expect("writer lives until commit");
        let f = w
            .into_inner()
            .map_err(|e| io(&self.tmp, e.error().to_string()))?;
        f.sync_all().map_err(|e| io(&self.tmp, e))?;
        drop(f);
        check_file_dest(&self.dest, &[], self.replace)?;
        if self.replace {
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
        } else {
            // A hard link never replaces an existing file: the destination is created atomically
            // or the commit fails (a file system without hard links falls back to a rename).
            match std::fs::hard_link(&self.tmp, &self.dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(io(
                        &self.dest,
                        "another process created this file meanwhile; it was kept and this command's output discarded",
                    ));
                }
                Err(_) => {
                    std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
                }
            }
        }
        Ok(self.dest.clone())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `path` is a regular file whose first line (read from its first 64 KiB) is `line`: how a
/// command recognises its own earlier output of a given kind.
pub fn first_line_is(path: &Path, line: &str) -> bool {
    use std::io::Read;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 16).read_to_end(&mut head));
    read.is_ok()
        && head
            .split(|&b| b == b'\n')
            .next()
            .is_some_and(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_bytes())
}

/// Refuse an output `dest` named `name` when that is a [`reserved_name`]; `instead` says what
/// to choose (`output file name`, `--out`).
pub(super) fn refuse_reserved(dest: &Path, name: &str, instead: &str) -> Result<()> {
    if !reserved_name(name) {
        return Ok(());
    }
    Err(io(
        dest,
        format!(
            "`{}` is a name servesim keeps for its own bookkeeping (output markers, locks, staging); choose another {instead}",
            crate::error::echo(name)
        ),
    ))
}

/// Names servesim gives its own bookkeeping files: the output marker, locks and staging or
/// set-aside directories (and the older `.NAME.tmp-PID` staging). An output of that name would
/// pass for one of them, and be cleaned up as debris.
fn reserved_name(name: &str) -> bool {
    name == MARKER_FILE
        || name.ends_with(".servesim-lock")
        || name.contains(".servesim-tmp-")
        || name.contains(".servesim-old-")
        || (name.starts_with('.') && name.contains(".tmp-"))
}
