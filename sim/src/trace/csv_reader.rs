//! Streaming reader for request traces.
//!
//! Accepted headers (extra columns such as `id` are ignored):
//! - canonical: `arrival_s,input_tokens,output_tokens`;
//! - Vidur replay: `arrived_at,num_prefill_tokens,num_decode_tokens`.
//!
//! Every problem is reported with the file, the 1-based line and the field.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::error::{Result, SimError};
use crate::vocab::TraceRow;
use crate::vocab::time::{Ns, instant_ns_round};

/// The column names of one supported trace format.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub arrival: &'static str,
    pub input: &'static str,
    pub output: &'static str,
}

pub const CANONICAL: Columns = Columns {
    arrival: "arrival_s",
    input: "input_tokens",
    output: "output_tokens",
};
pub const VIDUR: Columns = Columns {
    arrival: "arrived_at",
    input: "num_prefill_tokens",
    output: "num_decode_tokens",
};

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

pub(crate) fn input_err(path: &Path, line: u64, field: &str, msg: impl Into<String>) -> SimError {
    SimError::Input {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// Open a CSV file and return its reader and (BOM-stripped, trimmed) header names, after
/// rejecting an empty file and duplicated header names.
/// A CSV reader over a user file, bounded per line.
pub(crate) type CsvReader = csv::Reader<BufReader<LineLimited<crate::input::Opened>>>;

/// Longest line a CSV input may have (a file without line ends, such as `/dev/zero` or a binary,
/// would otherwise be read into memory whole).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// A reader that fails once a line grows past [`MAX_LINE_BYTES`].
pub struct LineLimited<R> {
    inner: R,
    line_bytes: usize,
}

impl<R> LineLimited<R> {
    pub fn new(inner: R) -> Self {
        LineLimited {
            inner,
            line_bytes: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for LineLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match buf[..n].iter().rposition(|&b| b == b'\n') {
            Some(i) => self.line_bytes = n - i - 1,
            None => self.line_bytes += n,
        }
        if self.line_bytes > MAX_LINE_BYTES {
            return Err(std::io::Error::other(format!(
                "a line is longer than {} MiB; is this a CSV file?",
                MAX_LINE_BYTES >> 20
            )));
        }
        Ok(n)
    }
}

pub(crate) fn open_csv(path: &Path) -> Result<(CsvReader, Vec<String>)> {
    open_csv_trimming(path, csv::Trim::All)
}

/// [`open_csv`] with the fields left untrimmed (headers are trimmed): for a reader that trims the
/// few fields it reads itself (`str::trim`, the same Unicode whitespace as `csv::Trim::All`),
/// which saves rebuilding every record.
pub(crate) fn open_csv_untrimmed(path: &Path) -> Result<(CsvReader, Vec<String>)> {
    open_csv_trimming(path, csv::Trim::Headers)
}

fn open_csv_trimming(path: &Path, trim: csv::Trim) -> Result<(CsvReader, Vec<String>)> {
    let f = crate::input::open_file(path).map_err(|e| io_err(path, format!("cannot open: {e}")))?;
    if f.is_dir() {
        return Err(io_err(path, "is a directory; expected a CSV file"));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(trim)
        .from_reader(BufReader::new(LineLimited::new(f)));
    let headers = rdr
        .headers()
        .map_err(|e| csv_err(path, 1, "header", e))?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 0 {
                h.trim_start_matches('\u{feff}').to_string()
            } else {
                h.to_string()
            }
        })
        .collect::<Vec<_>>();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(input_err(
            path,
            1,
            "header",
            "the file is empty (no header row)",
        ));
    }
    if headers.len() > MAX_COLUMNS {
        return Err(input_err(
            path,
            1,
            "header",
            format!(
                "the header has {} columns; at most {MAX_COLUMNS} are accepted",
                headers.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(headers.len());
    for h in &headers {
        if !seen.insert(h.as_str()) {
            return Err(input_err(
                path,
                1,
                h,
                "column name appears twice in the header",
            ));
        }
    }
    Ok((rdr, headers))
}

/// The most columns a trace or import CSV header may have (traces need three; the bound keeps a
/// malformed file from costing time and memory per column).
pub const MAX_COLUMNS: usize = 4096;

/// The header names joined for an error message, cut short after a few hundred characters.
pub(crate) fn header_list(headers: &[String]) -> String {
    clip_to(&headers.join(","), 200)
}

pub(crate) fn csv_err(path: &Path, line: u64, field: &str, e: csv::Error) -> SimError {
    let line = e.position().map(|p| p.line()).unwrap_or(line);
    let msg = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("row has {len} fields, the header has {expected_len}"),
        _ => e.to_string(),
    };
    input_err(path, line, field, msg)
}

/// Index of each wanted column, or an error naming the missing one and the accepted headers.
pub(crate) fn locate(
    path: &Path,
    headers: &[String],
    formats: &[Columns],
    need_arrival: bool,
) -> Result<(Columns, Option<usize>, usize, usize)> {
    let find = |n: &str| headers.iter().position(|h| h == n);
    let set = |f: &Columns| {
        if need_arrival {
            format!("{},{},{}", f.arrival, f.input, f.output)
        } else {
            format!("{},{}", f.input, f.output)
        }
    };
    for (k, f) in formats.iter().enumerate() {
        if let (Some(i), Some(o)) = (find(f.input), find(f.output)) {
            // A header with two formats' columns is ambiguous: which lengths are meant?
            if let Some(g) = formats[k + 1..]
                .iter()
                .find(|g| find(g.input).is_some() && find(g.output).is_some())
            {
                return Err(input_err(
                    path,
                    1,
                    "header",
                    format!(
                        "the header has both `{}` and `{}` columns; keep one set (which lengths are meant is ambiguous)",
                        set(f),
                        set(g)
                    ),
                ));
            }
            let a = find(f.arrival);
            if need_arrival && a.is_none() {
                return Err(input_err(
                    path,
                    1,
                    f.arrival,
                    format!(
                        "missing column `{}` (header has: {})",
                        f.arrival,
                        header_list(headers)
                    ),
                ));
            }
            return Ok((*f, a, i, o));
        }
    }
    let wanted = formats.iter().map(set).collect::<Vec<_>>().join("` or `");
    let missing = formats
        .iter()
        .flat_map(|f| [f.input, f.output])
        .find(|c| find(c).is_none())
        .unwrap_or("input_tokens");
    Err(input_err(
        path,
        1,
        missing,
        format!(
            "missing column; expected a header with `{wanted}` (header has: {})",
            header_list(headers)
        ),
    ))
}

/// `s` as a whole number ≥ 0: an integer, or a number written with a fraction or exponent
/// that is whole (`10.0`, `1e3`: tables exported through floating point write counts so).
pub(crate) fn whole_number(s: &str) -> Option<u64> {
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64).then_some(f as u64)
}

pub(crate) fn parse_tokens(path: &Path, line: u64, field: &str, s: &str) -> Result<u32> {
    let v = whole_number(s).ok_or_else(|| {
        input_err(
            path,
            line,
            field,
            format!("expected a whole number of tokens ≥ 1, got `{}`", clip(s)),
        )
    })?;
    if v == 0 {
        return Err(input_err(path, line, field, "must be ≥ 1, got 0"));
    }
    if v > u32::MAX as u64 {
        return Err(input_err(path, line, field, format!("{v} is too large")));
    }
    Ok(v as u32)
}

pub(crate) fn parse_seconds(path: &Path, line: u64, field: &str, s: &str) -> Result<f64> {
    let v: f64 = s.parse().map_err(|_| {
        input_err(
            path,
            line,
            field,
            format!("expected seconds (a number ≥ 0), got `{}`", clip(s)),
        )
    })?;
    if !v.is_finite() || v < 0.0 {
        return Err(input_err(
            path,
            line,
            field,
            format!("expected seconds (a finite number ≥ 0), got `{}`", clip(s)),
        ));
    }
    Ok(v)
}

/// `s` cut to 40 characters (with `…`) for an error message.
pub(crate) fn clip(s: &str) -> String {
    clip_to(s, 40)
}

fn clip_to(s: &str, max_chars: usize) -> String {
    if s.chars().nth(max_chars).is_some() {
        format!("{}…", s.chars().take(max_chars).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Count, first and last arrival of a trace file (a pre-pass for `--rate` rescaling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSummary {
    pub rows: u64,
    pub first_arrival_s: f64,
    pub last_arrival_s: f64,
}

impl TraceSummary {
    /// Mean arrival rate: (rows − 1) / span. `None` with < 2 rows or a zero span.
    pub fn mean_rate_per_s(&self) -> Option<f64> {
        let span = self.last_arrival_s - self.first_arrival_s;
        (self.rows >= 2 && span > 0.0).then(|| (self.rows - 1) as f64 / span)
    }
}

/// Validate a whole trace file and summarise it.
pub fn scan_trace(path: &Path) -> Result<TraceSummary> {
    let mut rows = 0;
    let mut first = 0.0;
    let mut last = 0.0;
    for r in TraceCsv::open(path, None, None)? {
        let r = r?;
        let t = r.arrival_ns as f64 / 1e9;
        if rows == 0 {
            first = t;
        }
        last = t;
        rows += 1;
    }
    Ok(TraceSummary {
        rows,
        first_arrival_s: first,
        last_arrival_s: last,
    })
}

/// Rows of a trace file as [`TraceRow`]s, validated, in file order.
pub struct TraceCsv {
    path: PathBuf,
    rdr: CsvReader,
    record: csv::StringRecord,
    cols: Columns,
    idx: (usize, usize, usize),
    next_id: u64,
    last_arrival_s: f64,
    /// `(first_arrival_s, factor)`: arrival ← first + (arrival − first) · factor.
    rescale: Option<(f64, f64)>,
    limit: Option<u64>,
    done: bool,
}

impl TraceCsv {
    /// Open `path`. `rescale` stretches arrival times; `limit` stops after that many rows.
    pub fn open(path: &Path, rescale: Option<(f64, f64)>, limit: Option<u64>) -> Result<Self> {
        let (rdr, headers) = open_csv(path)?;
        let (cols, a, i, o) = locate(path, &headers, &[CANONICAL, VIDUR], true)?;
        Ok(TraceCsv {
            path: path.to_path_buf(),
            rdr,
            record: csv::StringRecord::new(),
            cols,
            idx: (a.expect("locate checked the arrival column"), i, o),
            next_id: 0,
            last_arrival_s: f64::NEG_INFINITY,
            rescale,
            limit,
            done: false,
        })
    }

    /// The arrival column's name in this file (`arrival_s`, or Vidur's `arrived_at`).
    pub fn arrival_column(&self) -> &'static str {
        self.cols.arrival
    }

    /// The 1-based line of the row read last (0 before the first).
    pub fn line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    fn read_row(&mut self) -> Result<Option<TraceRow>> {
        if self.limit.is_some_and(|l| self.next_id >= l) {
            return Ok(None);
        }
        let more = self
            .rdr
            .read_record(&mut self.record)
            .map_err(|e| csv_err(&self.path, 0, "row", e))?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map(|p| p.line()).unwrap_or(0);
        let p = &self.path;
        let (a, i, o) = self.idx;
        let arrival_s = parse_seconds(p, line, self.cols.arrival, &self.record[a])?;
        let input = parse_tokens(p, line, self.cols.input, &self.record[i])?;
        let output = parse_tokens(p, line, self.cols.output, &self.record[o])?;
        if arrival_s < self.last_arrival_s {
            return Err(input_err(
                p,
                line,
                self.cols.arrival,
                format!(
                    "arrivals must be sorted: {arrival_s} comes after {}",
                    self.last_arrival_s
                ),
            ));
        }
        self.last_arrival_s = arrival_s;
        let t = match self.rescale {
            Some((first, factor)) => first + (arrival_s - first) * factor,
            None => arrival_s,
        };
        let arrival_ns: Ns = instant_ns_round(t)
            .ok_or_else(|| input_err(p, line, self.cols.arrival, "arrival time out of range"))?;
        let id = self.next_id;
        self.next_id += 1;
        Ok(Some(TraceRow {
            id,
            arrival_ns,
            input_tokens: input,
            output_tokens: output,
        }))
    }
}

impl Iterator for TraceCsv {
    type Item = Result<TraceRow>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_row() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
