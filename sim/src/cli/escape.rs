//! What servesim prints on stdout and stderr goes through [`Escaping`]: control and invisible
//! formatting characters that reach a report from the user's inputs (a file name, a CSV cell,
//! a policy name) are shown escaped (`\x1b`, `\u202e`), as in error lines, so a report cannot
//! drive or reorder the terminal. Newlines and tabs pass.

use std::io::{self, Write};

/// A writer that escapes [`crate::error::is_unsafe_char`] characters but `\n` and `\t`.
pub struct Escaping<'a> {
    inner: &'a mut dyn Write,
    /// The start of a UTF-8 sequence cut by the end of a write.
    pending: Vec<u8>,
}

impl<'a> Escaping<'a> {
    pub fn new(inner: &'a mut dyn Write) -> Self {
        Escaping {
            inner,
            pending: Vec::new(),
        }
    }

    /// Escape and pass on what `pending` holds, keeping a cut UTF-8 sequence at its end unless
    /// `last` (then it is shown byte by byte).
    fn drain(&mut self, last: bool) -> io::Result<()> {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        while !rest.is_empty() {
            let (valid, bad) = match std::str::from_utf8(rest) {
                Ok(s) => (s, 0),
                Err(e) => match (std::str::from_utf8(&rest[..e.valid_up_to()]), e.error_len()) {
                    (Ok(s), Some(n)) => (s, n),
                    (Ok(s), None) if !last => (s, usize::MAX),
                    (Ok(s), None) => (s, rest.len() - e.valid_up_to()),
                    (Err(_), _) => ("", rest.len()),
                },
            };
            for c in valid.chars() {
                match c {
                    '\n' | '\t' => out.push(c),
                    c => crate::error::push_escaped(&mut out, c),
                }
            }
            rest = &rest[valid.len()..];
            if bad == usize::MAX {
                break;
            }
            for b in &rest[..bad.min(rest.len())] {
                out.push_str(&format!("\\x{b:02x}"));
            }
            rest = &rest[bad.min(rest.len())..];
        }
        let kept = rest.to_vec();
        self.inner.write_all(out.as_bytes())?;
        self.pending = kept;
        Ok(())
    }
}

/// Bytes that pass as they are: printable ASCII, newline and tab.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t'
}

impl Write for Escaping<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && buf.iter().all(|&b| plain(b)) {
            self.inner.write_all(buf)?;
        } else {
            self.pending.extend_from_slice(buf);
            self.drain(false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain(true)?;
        self.inner.flush()
    }
}

impl Drop for Escaping<'_> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(parts: &[&[u8]]) -> String {
        let mut buf = Vec::new();
        {
            let mut w = Escaping::new(&mut buf);
            for p in parts {
                w.write_all(p).unwrap();
            }
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn control_and_formatting_characters_are_escaped_at_any_cut() {
        let text = "outputs in o\u{1b}[32m\tx\u{202e}é\n";
        let want = "outputs in o\\x1b[32m\tx\\u202eé\n";
        assert_eq!(through(&[text.as_bytes()]), want);
        // Cut inside the multi-byte characters: the same.
        let b = text.as_bytes();
        for cut in 0..b.len() {
            assert_eq!(through(&[&b[..cut], &b[cut..]]), want, "cut at {cut}");
        }
        // Bytes that are no UTF-8 are shown byte by byte; a sequence cut at the end too.
        assert_eq!(through(&[b"a\xffb"]), "a\\xffb");
        assert_eq!(through(&[b"a\xe2\x80"]), "a\\xe2\\x80");
        assert_eq!(through(&[b"plain, 1.5\n"]), "plain, 1.5\n");
    }
}
