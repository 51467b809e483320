//! A streaming splitter for a top-level JSON array: it hands out the raw bytes of one element at
//! a time (each then goes to serde on its own), so a 125 MB dataset never sits in memory as a
//! whole, and a file that stops mid-element is recognised as truncated after a known number of
//! complete elements instead of failing as a whole.
//!
//! The splitter checks only the array's structure (brackets, commas, strings and their escapes);
//! the element's own syntax and schema are serde's job. Positions are absolute byte offsets
//! (0-based) and 1-based line numbers.

use std::io::BufRead;

/// One complete element of the array.
#[derive(Debug)]
pub struct Element<'a> {
    /// 0-based index in the array.
    pub index: u64,
    /// Byte offset of its first byte in the file.
    pub start: u64,
    /// Line of its first byte (1-based).
    pub line: u64,
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// No bytes (or only whitespace).
    Empty,
    /// The file ends before the array is closed.
    Truncated {
        /// Where the data stops (the file's length).
        at: u64,
        /// Complete elements before it.
        complete: u64,
        /// Start of the incomplete element, if the file stops inside one.
        partial_start: Option<(u64, u64)>,
    },
    /// Broken array structure at byte `at`, line `line`.
    Syntax {
        at: u64,
        line: u64,
        msg: String,
    },
    Io(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    First,
    Between,
    End,
}

/// Internal: the file ended.
enum Stop {
    Eof,
    Err(SplitError),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Err(SplitError::Io(e.to_string()))
    }
}

pub struct JsonArray<R: BufRead> {
    r: R,
    pos: u64,
    line: u64,
    count: u64,
    state: State,
    elem: Vec<u8>,
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", b as char)
    } else {
        format!("byte 0x{b:02X}")
    }
}

impl<R: BufRead> JsonArray<R> {
    pub fn new(r: R) -> Self {
        JsonArray {
            r,
            pos: 0,
            line: 1,
            count: 0,
            state: State::Start,
            elem: Vec::new(),
        }
    }

    /// Complete elements handed out so far.
    pub fn complete(&self) -> u64 {
        self.count
    }

    fn syntax(&self, msg: impl Into<String>) -> SplitError {
        SplitError::Syntax {
            at: self.pos,
            line: self.line,
            msg: msg.into(),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Stop> {
        Ok(self.r.fill_buf()?.first().copied())
    }

    fn bump(&mut self, b: u8) {
        self.r.consume(1);
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
    }

    /// Skip whitespace; the next byte, or `None` at the end of the file.
    fn skip_ws(&mut self) -> Result<Option<u8>, Stop> {
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(buf.len());
            let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            let next = buf.get(n).copied();
            self.r.consume(n);
            self.pos += n as u64;
            self.line += lines;
            if next.is_some() {
                return Ok(next);
            }
        }
    }

    /// Copy `n` bytes of the current buffer into the element.
    fn take(&mut self, n: usize) -> Result<(), Stop> {
        let buf = self.r.fill_buf()?;
        let chunk = &buf[..n];
        self.line += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.elem.extend_from_slice(chunk);
        self.r.consume(n);
        self.pos += n as u64;
        Ok(())
    }

    /// After an opening quote (already taken): copy through the closing quote.
    fn string(&mut self) -> Result<(), Stop> {
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Err(Stop::Eof);
            }
            match buf.iter().position(|&b| b == b'"' || b == b'\\') {
                None => {
                    let n = buf.len();
                    self.take(n)?;
                }
                Some(i) if buf[i] == b'"' => {
                    self.take(i + 1)?;
                    return Ok(());
                }
                Some(i) => {
                    // A backslash: take it and the escaped byte, whatever it is.
                    self.take(i + 1)?;
                    match self.peek()? {
                        None => return Err(Stop::Eof),
                        Some(_) => self.take(1)?,
                    }
                }
            }
        }
    }

    /// Copy one element (the next byte is its first) into `self.elem`.
    fn element(&mut self) -> Result<(), Stop> {
        self.elem.clear();
        let first = self.peek()?.ok_or(Stop::Eof)?;
        match first {
            b'{' | b'[' => {
                let mut depth = 0u64;
                loop {
                    let buf = self.r.fill_buf()?;
                    if buf.is_empty() {
                        return Err(Stop::Eof);
                    }
                    let mut i = 0;
                    let mut event = None;
                    while i < buf.len() {
                        match buf[i] {
                            b'"' => {
                                event = Some(b'"');
                                break;
                            }
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    event = Some(b'}');
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    match event {
                        None => self.take(i)?,
                        Some(b'"') => {
                            self.take(i + 1)?;
                            self.string()?;
                        }
                        Some(_) => {
                            self.take(i + 1)?;
                            return Ok(());
                        }
                    }
                }
            }
            b'"' => {
                self.take(1)?;
                self.string()
            }
            b',' | b']' | b'}' | b':' => Err(Stop::Err(
                self.syntax(format!("expected a JSON value, found {}", show(first))),
            )),
            _ => {
                // A scalar (number, true, false, null, or garbage serde will name).
                loop {
                    let buf = self.r.fill_buf()?;
                    if buf.is_empty() {
                        return Err(Stop::Eof);
                    }
                    let n = buf
                        .iter()
                        .position(|b| {
                            matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
                        })
                        .unwrap_or(buf.len());
                    let done = n < buf.len();
                    self.take(n)?;
                    if done {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn truncated(&self, partial_start: Option<(u64, u64)>) -> SplitError {
        SplitError::Truncated {
            at: self.pos,
            complete: self.count,
            partial_start,
        }
    }

    /// Read one element at the current position (after `[` or `,`).
    fn read_element(&mut self) -> Result<Option<Element<'_>>, SplitError> {
        let (start, line) = (self.pos, self.line);
        match self.element() {
            Ok(()) => {
                let index = self.count;
                self.count += 1;
                self.state = State::Between;
                Ok(Some(Element {
                    index,
                    start,
                    line,
                    bytes: &self.elem,
                }))
            }
            Err(Stop::Eof) => Err(self.truncated(Some((start, line)))),
            Err(Stop::Err(e)) => Err(e),
        }
    }

    fn after_close(&mut self) -> Result<Option<Element<'_>>, SplitError> {
        self.state = State::End;
        match self.skip_ws() {
            Ok(None) => Ok(None),
            Ok(Some(_)) => Err(self.syntax("unexpected data after the array's closing `]`")),
            Err(Stop::Eof) => Ok(None),
            Err(Stop::Err(e)) => Err(e),
        }
    }

    /// The next element, `Ok(None)` after the closing `]`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Element<'_>>, SplitError> {
        let ws = |s: &mut Self| match s.skip_ws() {
            Ok(b) => Ok(b),
            Err(Stop::Eof) => Ok(None),
            Err(Stop::Err(e)) => Err(e),
        };
        match self.state {
            State::End => Ok(None),
            State::Start => {
                let buf = self
                    .r
                    .fill_buf()
                    .map_err(|e| SplitError::Io(e.to_string()))?;
                if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                    self.r.consume(3);
                    self.pos += 3;
                }
                match ws(self)? {
                    None => Err(SplitError::Empty),
                    Some(b'[') => {
                        self.bump(b'[');
                        self.state = State::First;
                        self.next()
                    }
                    Some(b) => {
                        Err(self.syntax(format!("expected a JSON array (`[`), found {}", show(b))))
                    }
                }
            }
            State::First => match ws(self)? {
                None => Err(self.truncated(None)),
                Some(b']') => {
                    self.bump(b']');
                    self.after_close()
                }
                Some(_) => self.read_element(),
            },
            State::Between => match ws(self)? {
                None => Err(self.truncated(None)),
                Some(b',') => {
                    self.bump(b',');
                    match ws(self)? {
                        None => Err(self.truncated(None)),
                        Some(_) => self.read_element(),
                    }
                }
                Some(b']') => {
                    self.bump(b']');
                    self.after_close()
                }
                Some(b) => Err(self.syntax(format!(
                    "expected `,` or `]` after array element {}, found {}",
                    self.count,
                    show(b)
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &[u8]) -> Result<Vec<String>, SplitError> {
        // A tiny buffer exercises every refill path.
        let mut a = JsonArray::new(std::io::BufReader::with_capacity(3, s));
        let mut out = Vec::new();
        while let Some(e) = a.next()? {
            out.push(String::from_utf8(e.bytes.to_vec()).unwrap());
        }
        Ok(out)
    }

    #[test]
    fn splits_elements() {
        let s = br#"  [ {"a": "x]}\"{", "b": [1, {"c": 2}]}, "s\\", 12 , true,[] ]  "#;
        assert_eq!(
            split(s).unwrap(),
            vec![
                r#"{"a": "x]}\"{", "b": [1, {"c": 2}]}"#,
                r#""s\\""#,
                "12",
                "true",
                "[]"
            ]
        );
        assert_eq!(split(b"[]").unwrap(), Vec::<String>::new());
        assert_eq!(split(b"\xEF\xBB\xBF[1]").unwrap(), vec!["1"]);
    }

    #[test]
    fn positions() {
        let s = b"[\n {\"a\": 1},\n {\"b\": 2}\n]";
        let mut a = JsonArray::new(&s[..]);
        let e = a.next().unwrap().unwrap();
        assert_eq!((e.index, e.start, e.line), (0, 3, 2));
        let e = a.next().unwrap().unwrap();
        assert_eq!((e.index, e.start, e.line), (1, 14, 3));
        assert!(a.next().unwrap().is_none());
    }

    #[test]
    fn truncation_and_errors() {
        assert_eq!(split(b""), Err(SplitError::Empty));
        assert_eq!(split(b" \n "), Err(SplitError::Empty));
        assert_eq!(
            split(b"[{\"a\": 1}, {\"b\": \"xy"),
            Err(SplitError::Truncated {
                at: 20,
                complete: 1,
                partial_start: Some((11, 1))
            })
        );
        assert_eq!(
            split(b"[{\"a\": 1},"),
            Err(SplitError::Truncated {
                at: 10,
                complete: 1,
                partial_start: None
            })
        );
        assert!(matches!(
            split(b"{\"a\": 1}"),
            Err(SplitError::Syntax { at: 0, .. })
        ));
        assert!(matches!(
            split(b"[1,]"),
            Err(SplitError::Syntax { at: 3, .. })
        ));
        assert!(matches!(
            split(b"[1 2]"),
            Err(SplitError::Syntax { at: 3, .. })
        ));
        assert!(matches!(
            split(b"[1] x"),
            Err(SplitError::Syntax { at: 4, .. })
        ));
    }
}
