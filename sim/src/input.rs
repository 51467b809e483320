//! Reading whole user files with a size bound: a wrong path (`/dev/zero`, a binary, a huge log)
//! fails with one clear error instead of filling memory.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Set by the Ctrl-C / SIGTERM handler that [`crate::interrupt`] installs; cleared when a new
/// guard is installed. Kept here, below every reader, so that a blocking open can give up on it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Raise or clear the stop request (the signal handler and the `interrupt` guard; an atomic
/// store, async-signal-safe).
pub fn set_stop_requested(on: bool) {
    STOP.store(on, Ordering::SeqCst);
}

/// Whether Ctrl-C or SIGTERM asked the command to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Most bytes of a pipe or FIFO input kept in memory (see [`open_file`]).
pub const MAX_PIPE_BYTES: u64 = 1 << 30;

/// An opened input: a file, or the bytes of a pipe read earlier in this process.
pub enum Opened {
    File(std::fs::File),
    Buffered(std::io::Cursor<Arc<[u8]>>),
}

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Opened::File(f) => f.read(buf),
            Opened::Buffered(c) => c.read(buf),
        }
    }
}

impl Opened {
    /// Whether it is a directory (which opens on Unix but cannot be read).
    pub fn is_dir(&self) -> bool {
        matches!(self, Opened::File(f) if f.metadata().is_ok_and(|m| m.is_dir()))
    }
}

/// The contents of the pipes and FIFOs read so far, by (device, inode): a command reads its
/// trace more than once (rows counted, arrivals rescaled, first arrival checked, then the run),
/// and a pipe (`--trace <(cat f.csv)`, a named pipe) yields its bytes only once.
static PIPES: Mutex<Vec<PipeBytes>> = Mutex::new(Vec::new());

/// A pipe's (device, inode) and its contents.
type PipeBytes = ((u64, u64), Arc<[u8]>);

/// Open `path` for reading. A pipe or named pipe (FIFO) is read whole into memory the first time
/// (at most [`MAX_PIPE_BYTES`]; more is an error that says to use a file) and served from there
/// every later time in this process. Opening a FIFO blocks until a writer opens the other end, so
/// it is opened on a helper thread: the caller waits for it, but gives up with an `Interrupted`
/// error when Ctrl-C or SIGTERM arrives (otherwise a pipe nobody writes to would hang the command
/// past its signals).
pub fn open_file(path: &Path) -> std::io::Result<Opened> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if let Ok(m) = std::fs::metadata(path)
            && m.file_type().is_fifo()
        {
            let key = (m.dev(), m.ino());
            let pipes = PIPES.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, bytes)) = pipes.iter().find(|(k, _)| *k == key) {
                return Ok(Opened::Buffered(std::io::Cursor::new(bytes.clone())));
            }
            drop(pipes);
            let bytes = read_pipe(path)?;
            PIPES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key, bytes.clone()));
            return Ok(Opened::Buffered(std::io::Cursor::new(bytes)));
        }
    }
    std::fs::File::open(path).map(Opened::File)
}

/// The whole contents of the pipe or FIFO `path` (see [`open_file`]).
#[cfg(unix)]
fn read_pipe(path: &Path) -> std::io::Result<Arc<[u8]>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::File::open(p));
    });
    let f = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(r) => break r?,
            Err(_) if stop_requested() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "interrupted while waiting for a writer on this named pipe",
                ));
            }
            Err(_) => {}
        }
    };
    let mut buf = Vec::new();
    f.take(MAX_PIPE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_PIPE_BYTES {
        return Err(std::io::Error::other(format!(
            "a pipe input is kept in memory (it is read more than once) and this one holds more than {} MiB; write it to a file and give that instead",
            MAX_PIPE_BYTES >> 20
        )));
    }
    Ok(buf.into())
}

/// Scenarios, catalogues, profile metadata: small TOML files.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Files servesim wrote that grow with a run (requests.csv, kv_timeline.csv, shard.json,
/// measurements.csv) and tokenizer files.
pub const MAX_DATA_BYTES: u64 = 4 << 30;

/// The bytes of `path`, or an error (in the user's words) when it cannot be read or holds more
/// than `max_bytes`.
pub fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    read_checked(path, max_bytes, false)
}

/// [`read_bytes`] as UTF-8 text. A NUL byte fails the read at once (a device such as
/// `/dev/zero`, a sparse or binary file is not text: no need to read gigabytes to say so).
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    String::from_utf8(read_checked(path, max_bytes, true)?).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// The bytes of `path` (at most `max_bytes`), refusing a NUL byte when `text`.
fn read_checked(path: &Path, max_bytes: u64, text: bool) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if size.is_some_and(|n| n > max_bytes) {
        return Err(too_large(max_bytes));
    }
    let mut f = open_file(path)
        .map_err(|e| e.to_string())?
        .take(max_bytes + 1);
    // A file's whole size at once (growing by doubling held up to twice the file at its peak).
    let mut buf = Vec::with_capacity(size.map_or(0, |n| n as usize + 1));
    // Under glibc's mmap threshold (128 KiB): freeing a larger chunk raises the threshold, and the
    // run's later large vectors then grew on the heap (+17 MB peak RSS at 10⁶ requests).
    let mut chunk = [0u8; 1 << 16];
    loop {
        let n = match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        if text && let Some(i) = chunk[..n].iter().position(|&b| b == 0) {
            return Err(format!(
                "a NUL byte at offset {}: not a text file; is this the right file?",
                buf.len() + i
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.len() as u64 > max_bytes {
        return Err(too_large(max_bytes));
    }
    Ok(buf)
}

fn too_large(max_bytes: u64) -> String {
    format!(
        "larger than {} MiB; is this the right file?",
        max_bytes >> 20
    )
}

/// A reader that fails once it has given more than `max_bytes` (a FIFO, a device, a wrong file).
pub struct Bounded<R> {
    inner: R,
    left: u64,
    max_bytes: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = (self.left.checked_sub(n as u64))
            .ok_or_else(|| std::io::Error::other(too_large(self.max_bytes)))?;
        Ok(n)
    }
}

/// `path` opened (see [`open_file`]) to be read as a stream of at most `max_bytes`: a regular
/// file over the bound is refused before any read, anything else fails once it gives more.
pub fn open_bounded(
    path: &Path,
    max_bytes: u64,
) -> Result<std::io::BufReader<Bounded<Opened>>, String> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > max_bytes) {
        return Err(too_large(max_bytes));
    }
    let inner = open_file(path).map_err(|e| e.to_string())?;
    if inner.is_dir() {
        return Err("is a directory; expected a file".into());
    }
    Ok(std::io::BufReader::with_capacity(
        1 << 16,
        Bounded {
            inner,
            left: max_bytes,
            max_bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_within_the_bound() {
        let e = read_bytes(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let mut r = open_bounded(Path::new("/dev/zero"), 1 << 20).unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
    }

    /// As text, `/dev/zero` (or a sparse file of gigabytes) fails at its first byte, not after
    /// reading up to the bound (a 3 GiB sparse file took 16 s and 4.2 GB).
    #[cfg(unix)]
    #[test]
    fn a_nul_byte_fails_a_text_read_at_once() {
        let e = read_text(Path::new("/dev/zero"), 4 << 30).unwrap_err();
        assert!(
            e.starts_with("a NUL byte at offset 0: not a text file"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("servesim-nul-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.csv");
        std::fs::write(&p, b"a,b\n1,\x002\n").unwrap();
        let e = read_text(&p, 1 << 20).unwrap_err();
        assert!(e.starts_with("a NUL byte at offset 6:"), "{e}");
        std::fs::write(&p, b"a,b\n1,2\n").unwrap();
        assert_eq!(read_text(&p, 1 << 20).unwrap(), "a,b\n1,2\n");
        assert!(read_text(&p, 4).unwrap_err().contains("larger than 0 MiB"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
