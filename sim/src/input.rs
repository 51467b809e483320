//! Reading whole user files with a size bound: a wrong path (`/dev/zero`, a binary, a huge log)
//! fails with one clear error instead of filling memory.

use std::io::Read;
use std::path::Path;

/// Scenarios, catalogues, profile metadata: small TOML files.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Files servesim wrote that grow with a run (requests.csv, kv_timeline.csv, shard.json,
/// measurements.csv) and tokenizer files.
pub const MAX_DATA_BYTES: u64 = 4 << 30;

/// The bytes of `path`, or an error (in the user's words) when it cannot be read or holds more
/// than `max_bytes`.
pub fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
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
