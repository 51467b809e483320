//! Importers: public datasets and production traces → canonical servesim CSVs.
//!
//! - [`sharegpt`]: ShareGPT JSON (vLLM's benchmark convention) → `input_tokens,output_tokens`;
//! - [`alpaca`]: Stanford Alpaca JSON → `input_tokens,output_tokens`;
//! - [`azure`]: Azure LLM inference trace CSV (2023/2024) → `arrival_s,input_tokens,output_tokens`;
//! - [`vidur`]: Vidur trace CSVs → canonical (with or without arrivals).
//!
//! Every importer writes its output atomically (a temporary sibling renamed at the end), so bad
//! input leaves no file behind; every error names the file and a position (byte offset and line
//! for JSON, line for CSV).

pub mod alpaca;
pub mod azure;
pub mod json_array;
pub mod sharegpt;
pub mod tokenizer;
pub mod vidur;

use std::fmt::Write as _;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::de::DeserializeOwned;

use crate::error::{Result, SimError};
use crate::rng::{Stream, stream};
use crate::staging::StagedFile;
use json_array::{JsonArray, SplitError};
pub use tokenizer::TokenCounter;

fn io_err(path: &Path, msg: impl Into<String>) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// vLLM's `benchmark_serving.py` length filters; each bound can be changed or switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthFilter {
    /// Drop a pair whose prompt has fewer tokens (0: off).
    pub min_input: u32,
    /// Drop a pair whose completion has fewer tokens (0: off).
    pub min_output: u32,
    /// FastServe's client variant: drop only when *both* are too short (vLLM: either).
    pub min_both: bool,
    /// Drop a pair whose prompt has more tokens.
    pub max_input: Option<u32>,
    /// Drop a pair whose prompt + completion has more tokens.
    pub max_total: Option<u32>,
}

impl LengthFilter {
    /// vLLM: drop prompt < 4 or output < 4 tokens, prompt > 1024, prompt + output > 2048.
    pub const VLLM: LengthFilter = LengthFilter {
        min_input: 4,
        min_output: 4,
        min_both: false,
        max_input: Some(1024),
        max_total: Some(2048),
    };
    pub const NONE: LengthFilter = LengthFilter {
        min_input: 0,
        min_output: 0,
        min_both: false,
        max_input: None,
        max_total: None,
    };

    /// Why a pair is dropped, or `None` when it is kept (vLLM's order of checks).
    pub fn reject(&self, input: u32, output: u32) -> Option<Reject> {
        let (si, so) = (input < self.min_input, output < self.min_output);
        if (self.min_both && si && so) || (!self.min_both && (si || so)) {
            return Some(Reject::TooShort);
        }
        if self.max_input.is_some_and(|m| input > m) {
            return Some(Reject::InputTooLong);
        }
        if self
            .max_total
            .is_some_and(|m| input as u64 + output as u64 > m as u64)
        {
            return Some(Reject::TotalTooLong);
        }
        None
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.min_input > 0 || self.min_output > 0 {
            parts.push(format!(
                "drop prompt < {} {} output < {} tokens",
                self.min_input,
                if self.min_both { "and" } else { "or" },
                self.min_output
            ));
        }
        if let Some(m) = self.max_input {
            parts.push(format!("prompt > {m}"));
        }
        if let Some(m) = self.max_total {
            parts.push(format!("prompt + output > {m}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TooShort,
    InputTooLong,
    TotalTooLong,
}

/// A reader that reports the bytes read so far after every read.
struct CountingReader<'a, R> {
    inner: R,
    read: u64,
    on_bytes: &'a dyn Fn(u64),
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.on_bytes)(self.read);
        Ok(n)
    }
}

/// Options shared by the text-dataset importers (ShareGPT, Alpaca).
#[derive(Debug)]
pub struct TextImport {
    pub tokenizer: TokenCounter,
    pub filter: LengthFilter,
    /// Seed of the shuffle before filtering and `num` (vLLM shuffles); `None`: file order.
    pub shuffle_seed: Option<u64>,
    /// Keep at most this many pairs (after the filters).
    pub num: Option<usize>,
    /// Keep the complete prefix of a truncated file instead of failing.
    pub allow_truncated: bool,
    /// Replace an existing output file (`--force`).
    pub replace: bool,
}

/// What a text import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextReport {
    /// Complete dataset rows (conversations, instructions) read.
    pub rows: u64,
    /// Where the data stops, when the file was truncated and `allow_truncated` kept its complete
    /// prefix (`rows` complete rows).
    pub truncated_at: Option<u64>,
    /// Rows that are no request (e.g. conversations with < 2 turns), and why.
    pub skipped: u64,
    pub skipped_why: &'static str,
    /// Candidate pairs (after the skip, before the filters).
    pub candidates: u64,
    /// Candidates examined before `num` was reached (all of them without `num`).
    pub examined: u64,
    pub dropped_too_short: u64,
    pub dropped_input_too_long: u64,
    pub dropped_total_too_long: u64,
    pub written: u64,
    pub wanted: Option<usize>,
    pub input_mean: f64,
    pub output_mean: f64,
    pub tokenizer: String,
    pub filter: String,
    pub shuffle_seed: Option<u64>,
    pub out: PathBuf,
}

impl TextReport {
    /// Human summary, one fact per line.
    pub fn lines(&self, what: &str) -> String {
        let mut s = String::new();
        let _ = write!(s, "read {} complete {what}", self.rows);
        if let Some(at) = self.truncated_at {
            let _ = write!(
                s,
                " — the file is truncated at byte {at}; kept the {} complete {what} before it (--allow-truncated)",
                self.rows
            );
        }
        s.push('\n');
        if self.skipped > 0 {
            let _ = writeln!(s, "skipped {} ({})", self.skipped, self.skipped_why);
        }
        let _ = writeln!(
            s,
            "{} candidate requests; order: {}; examined {}",
            self.candidates,
            match self.shuffle_seed {
                Some(seed) => format!("seeded shuffle (seed {seed})"),
                None => "file order".into(),
            },
            self.examined
        );
        let _ = writeln!(
            s,
            "filters ({}): dropped {} too short, {} prompt too long, {} total too long",
            self.filter,
            self.dropped_too_short,
            self.dropped_input_too_long,
            self.dropped_total_too_long
        );
        if let Some(n) = self.wanted
            && (self.written as usize) < n
        {
            let _ = writeln!(
                s,
                "note: only {} requests pass the filters; --num {n} asked for more (nothing is oversampled)",
                self.written
            );
        }
        let _ = writeln!(
            s,
            "wrote {} requests to {} (tokenizer: {}; mean input {:.2}, mean output {:.2} tokens)",
            self.written,
            self.out.display(),
            self.tokenizer,
            self.input_mean,
            self.output_mean
        );
        s
    }
}

/// "byte N (line L)" of an error inside a JSON element.
fn json_position(start: u64, line: u64, bytes: &[u8], rel_line: usize, rel_col: usize) -> String {
    if rel_line == 0 {
        return format!("byte {start} (line {line})");
    }
    let line_start = if rel_line == 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(rel_line - 2)
            .map(|(i, _)| i + 1)
            .unwrap_or(bytes.len())
    };
    let at = start + (line_start + rel_col.saturating_sub(1)) as u64;
    format!("byte {at} (line {})", line + rel_line as u64 - 1)
}

/// Parse one JSON array element as a `T`, with a positioned error. `what`: the element's name
/// (singular).
fn parse_element<T: DeserializeOwned>(
    path: &Path,
    e: &json_array::Element<'_>,
    what: &str,
) -> Result<T> {
    let text = std::str::from_utf8(e.bytes).map_err(|u| {
        let ok = &e.bytes[..u.valid_up_to()];
        let lines = ok.iter().filter(|&&b| b == b'\n').count() as u64;
        io_err(
            path,
            format!(
                "byte {} (line {}): not valid UTF-8 (in {what} {})",
                e.start + u.valid_up_to() as u64,
                e.line + lines,
                e.index + 1
            ),
        )
    })?;
    serde_json::from_str::<T>(text).map_err(|err| {
        let msg = crate::error::plain_serde(&err.to_string());
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        io_err(
            path,
            format!(
                "{}: {what} {} (starts at byte {}): {msg}",
                json_position(e.start, e.line, e.bytes, err.line(), err.column()),
                e.index + 1,
                e.start
            ),
        )
    })
}

/// Conversations (or rows) whose texts are held in memory before counting; bounds memory.
const BATCH: usize = 2048;

/// Read a JSON array of dataset rows, turn each into `Some((prompt, completion))` (or `None`:
/// skip it), count tokens (in parallel, in order), then shuffle, filter, take `num` and write
/// `input_tokens,output_tokens` to `out`.
/// `on_bytes` hears the number of bytes read so far after every read (for a progress bar).
pub(crate) fn import_text_pairs<T, F>(
    path: &Path,
    out: &Path,
    opts: &TextImport,
    (one, what): (&str, &str),
    skipped_why: &'static str,
    (to_pair, on_bytes): (F, &dyn Fn(u64)),
) -> Result<TextReport>
where
    T: DeserializeOwned,
    F: Fn(T) -> Option<(String, String)>,
{
    let f = crate::input::open_file(path).map_err(|e| io_err(path, format!("cannot open: {e}")))?;
    let f = CountingReader {
        inner: f,
        read: 0,
        on_bytes,
    };
    let mut arr = JsonArray::new(BufReader::with_capacity(1 << 20, f));
    let mut report = TextReport {
        skipped_why,
        tokenizer: opts.tokenizer.name().to_string(),
        filter: opts.filter.describe(),
        shuffle_seed: opts.shuffle_seed,
        wanted: opts.num,
        out: out.to_path_buf(),
        ..Default::default()
    };
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut batch: Vec<(String, String)> = Vec::with_capacity(BATCH);
    let count_batch = |batch: &mut Vec<(String, String)>, pairs: &mut Vec<(u32, u32)>| {
        let counted = batch
            .par_iter()
            .map(|(p, c)| Ok((opts.tokenizer.count(p)?, opts.tokenizer.count(c)?)))
            .collect::<Result<Vec<_>>>()?;
        pairs.extend(counted);
        batch.clear();
        Ok::<_, SimError>(())
    };
    loop {
        match arr.next() {
            Ok(Some(e)) => {
                let row: T = parse_element(path, &e, one)?;
                report.rows += 1;
                match to_pair(row) {
                    Some(p) => batch.push(p),
                    None => report.skipped += 1,
                }
                if batch.len() >= BATCH {
                    count_batch(&mut batch, &mut pairs)?;
                }
            }
            Ok(None) => break,
            Err(SplitError::Truncated { at, .. }) if opts.allow_truncated => {
                report.truncated_at = Some(at);
                break;
            }
            Err(e) => return Err(array_error(path, e, (one, what))),
        }
    }
    count_batch(&mut batch, &mut pairs)?;
    report.candidates = pairs.len() as u64;
    if let Some(seed) = opts.shuffle_seed {
        pairs.shuffle(&mut stream(seed, Stream::Shuffle));
    }
    let kept = take_filtered(&pairs, opts, &mut report);
    check_kept(path, &kept, &report, what)?;
    report.written = kept.len() as u64;
    report.input_mean = kept.iter().map(|p| p.0 as f64).sum::<f64>() / kept.len() as f64;
    report.output_mean = kept.iter().map(|p| p.1 as f64).sum::<f64>() / kept.len() as f64;
    write_lengths(out, &kept, opts.replace)?;
    Ok(report)
}

/// The error for a JSON array that cannot be read to its end (a truncated one when
/// `--allow-truncated` is not given); `one`, `what`: an element and the elements, in words.
fn array_error(path: &Path, e: SplitError, (one, what): (&str, &str)) -> SimError {
    match e {
        SplitError::Truncated {
            at,
            complete,
            partial_start,
        } => {
            let inside = match partial_start {
                Some((b, l)) => format!(
                    "; the file ends inside {one} {} (starting at byte {b}, line {l})",
                    complete + 1
                ),
                None => String::new(),
            };
            io_err(
                path,
                format!(
                    "truncated at byte {at} after {complete} complete {what}{inside}; pass --allow-truncated to keep the complete ones"
                ),
            )
        }
        SplitError::Empty => io_err(
            path,
            format!("byte 0 (line 1): the file is empty (expected a JSON array of {what})"),
        ),
        SplitError::Syntax { at, line, msg } => {
            io_err(path, format!("byte {at} (line {line}): {msg}"))
        }
        SplitError::Io(m) => io_err(path, format!("read error: {m}")),
    }
}

/// The shuffled pairs that pass the filters, up to `--num` (the report counts the rest).
fn take_filtered(
    pairs: &[(u32, u32)],
    opts: &TextImport,
    report: &mut TextReport,
) -> Vec<(u32, u32)> {
    let mut kept = Vec::with_capacity(pairs.len().min(opts.num.unwrap_or(usize::MAX)));
    for &(i, o) in pairs {
        if opts.num.is_some_and(|n| kept.len() >= n) {
            break;
        }
        report.examined += 1;
        match opts.filter.reject(i, o) {
            None => kept.push((i, o)),
            Some(Reject::TooShort) => report.dropped_too_short += 1,
            Some(Reject::InputTooLong) => report.dropped_input_too_long += 1,
            Some(Reject::TotalTooLong) => report.dropped_total_too_long += 1,
        }
    }
    kept
}

/// Something must be left to write, and every kept request must have ≥ 1 input and output token.
fn check_kept(path: &Path, kept: &[(u32, u32)], report: &TextReport, what: &str) -> Result<()> {
    if kept.is_empty() {
        return Err(io_err(
            path,
            format!(
                "no request left to write: {} {what} read, {} candidates, none passes the filters ({})",
                report.rows, report.candidates, report.filter
            ),
        ));
    }
    // A zero count cannot happen with a BOS-adding tokenizer; without one an empty text gives 0,
    // which the canonical format rejects: the min filters must then be ≥ 1.
    if let Some(&(i, o)) = kept.iter().find(|(i, o)| *i == 0 || *o == 0) {
        return Err(io_err(
            path,
            format!(
                "a kept request has {i} input and {o} output tokens; servesim needs ≥ 1 of each: keep --min-input/--min-output ≥ 1 with this tokenizer"
            ),
        ));
    }
    Ok(())
}

/// Write `input_tokens,output_tokens` rows atomically.
pub fn write_lengths(out: &Path, pairs: &[(u32, u32)], replace: bool) -> Result<()> {
    let mut f = StagedFile::new(out, replace)?;
    let mut s = String::with_capacity(pairs.len() * 10 + 32);
    s.push_str("input_tokens,output_tokens\n");
    for (i, o) in pairs {
        let _ = writeln!(s, "{i},{o}");
    }
    f.write_all(s.as_bytes())?;
    f.commit()?;
    Ok(())
}

/// Write `arrival_s,input_tokens,output_tokens` rows atomically; arrivals are integer
/// nanoseconds, printed with `decimals` decimals (rounded half up).
pub fn write_trace(
    out: &Path,
    rows: &[(u64, u32, u32)],
    decimals: u32,
    replace: bool,
) -> Result<()> {
    let mut f = StagedFile::new(out, replace)?;
    let mut s = String::with_capacity(rows.len() * 24 + 40);
    s.push_str("arrival_s,input_tokens,output_tokens\n");
    for &(ns, i, o) in rows {
        s.push_str(&fmt_ns(ns, decimals));
        let _ = writeln!(s, ",{i},{o}");
    }
    f.write_all(s.as_bytes())?;
    f.commit()?;
    Ok(())
}

/// `ns` nanoseconds as seconds with `decimals` (0..=9) decimals, rounded half up.
pub fn fmt_ns(ns: u64, decimals: u32) -> String {
    let decimals = decimals.min(9);
    let unit = 10u64.pow(9 - decimals);
    let v = (ns as u128 + unit as u128 / 2) / unit as u128;
    let scale = 10u128.pow(decimals);
    if decimals == 0 {
        format!("{v}")
    } else {
        format!(
            "{}.{:0width$}",
            v / scale,
            v % scale,
            width = decimals as usize
        )
    }
}

/// Sort rows stably by arrival (counting those that were out of order) and shift them so that
/// the first arrival is at 0.
pub(crate) fn normalise_arrivals(rows: &mut [(i128, u32, u32)]) -> (u64, Vec<(u64, u32, u32)>) {
    let out_of_order = rows.windows(2).filter(|w| w[1].0 < w[0].0).count() as u64;
    if out_of_order > 0 {
        rows.sort_by_key(|r| r.0);
    }
    let first = rows.first().map(|r| r.0).unwrap_or(0);
    let shifted = rows
        .iter()
        .map(|&(t, i, o)| (u64::try_from(t - first).unwrap_or(u64::MAX), i, o))
        .collect();
    (out_of_order, shifted)
}

/// A token count cell of a CSV trace: a whole number ≥ 0 (`12` or `12.0`).
pub(crate) fn parse_count(path: &Path, line: u64, field: &str, s: &str) -> Result<u32> {
    let bad = || {
        super::csv_reader::input_err(
            path,
            line,
            field,
            format!("expected a whole number of tokens, got `{s}`"),
        )
    };
    let v = super::csv_reader::whole_number(s).ok_or_else(bad)?;
    u32::try_from(v).map_err(|_| bad())
}

/// Path of a file in `sim/tests/fixtures/` (the importers' unit tests share these fixtures).
#[cfg(test)]
pub(crate) fn test_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_ns_rounds_half_up() {
        assert_eq!(fmt_ns(4_314_579_000, 6), "4.314579");
        assert_eq!(fmt_ns(4_314_579_500, 6), "4.314580");
        assert_eq!(fmt_ns(0, 6), "0.000000");
        assert_eq!(fmt_ns(1_000_000_001, 9), "1.000000001");
        assert_eq!(fmt_ns(1_600_000_000, 0), "2");
    }

    #[test]
    fn vllm_filter_order() {
        let f = LengthFilter::VLLM;
        assert_eq!(f.reject(3, 100), Some(Reject::TooShort));
        assert_eq!(f.reject(100, 3), Some(Reject::TooShort));
        assert_eq!(f.reject(1025, 10), Some(Reject::InputTooLong));
        assert_eq!(f.reject(1024, 1025), Some(Reject::TotalTooLong));
        assert_eq!(f.reject(1024, 1024), None);
        assert_eq!(f.reject(4, 4), None);
        let fs = LengthFilter {
            min_both: true,
            ..f
        };
        assert_eq!(fs.reject(3, 100), None);
        assert_eq!(fs.reject(3, 3), Some(Reject::TooShort));
        assert_eq!(LengthFilter::NONE.reject(0, 100_000), None);
    }
}
