//! Reading whole user files with a size bound: a wrong path (`/dev/zero`, a binary, a huge log)
//! fails with one clear error instead of filling memory.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Open `path` for reading. A named pipe (FIFO) is opened on a helper thread, because opening
/// one blocks until a writer opens the other end: the caller waits for it, but gives up with an
/// `Interrupted` error when Ctrl-C or SIGTERM arrives (otherwise a pipe nobody writes to would
/// hang the command past its signals).
pub fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.to_path_buf();
            std::thread::spawn(move || {
                let _ = tx.send(std::fs::File::open(p));
            });
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                    Ok(r) => return r,
                    Err(_) if stop_requested() => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            "interrupted while waiting for a writer on this named pipe",
                        ));
                    }
                    Err(_) => {}
                }
            }
        }
    }
    std::fs::File::open(path)
}

/// Scenarios, catalogues, profile metadata: small TOML files.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Files servesim wrote that grow with a run (requests.csv, kv_timeline.csv, shard.json,
/// measurements.csv) and tokenizer files.
pub const MAX_DATA_BYTES: u64 = 4 << 30;

/// The bytes of `path`, or an error (in the user's words) when it cannot be read or holds more
/// than `max_bytes`.
pub fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let f = open_file(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(max_bytes + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > max_bytes {
        return Err(format!(
            "larger than {} MiB; is this the right file?",
            max_bytes >> 20
        ));
    }
    Ok(buf)
}

/// [`read_bytes`] as UTF-8 text.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    String::from_utf8(read_bytes(path, max_bytes)?).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_within_the_bound() {
        let e = read_text(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
    }
}
