//! Vidur's trace CSVs (`microsoft/vidur` `data/processed_traces/`):
//! - with arrivals: `arrived_at,num_prefill_tokens,num_decode_tokens` (seconds), e.g.
//!   `splitwise_conv.csv` → canonical `arrival_s,input_tokens,output_tokens`, arrivals shifted so
//!   the first is at 0 (9 decimals, i.e. nanoseconds), sorted if needed;
//! - lengths only: `num_prefill_tokens,num_decode_tokens[,num_total_tokens,pd_ratio]` → canonical
//!   `input_tokens,output_tokens`, file order kept.
//!
//! Extra columns are ignored; token counts may be written as `12` or `12.0`; rows with a zero
//! count are dropped and counted.

use std::path::Path;

use super::azure::CsvReport;
use super::{normalise_arrivals, parse_count, write_lengths, write_trace};
use crate::error::Result;
use crate::trace::csv_reader::{VIDUR, csv_err, header_list, input_err, open_csv, parse_seconds};

/// Import a Vidur trace CSV at `path` into a canonical CSV at `out`.
pub fn import(path: &Path, out: &Path, replace: bool) -> Result<CsvReport> {
    let (mut rdr, headers) = open_csv(path)?;
    let (pi, di, ai) = columns(path, &headers)?;
    let mut rows = Vec::new();
    let mut rec = csv::StringRecord::new();
    let (mut read, mut dropped_zero) = (0u64, 0u64);
    let mut first_text = None;
    while rdr
        .read_record(&mut rec)
        .map_err(|e| csv_err(path, 0, "row", e))?
    {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        read += 1;
        let t = match ai {
            Some(a) => {
                let s = parse_seconds(path, line, VIDUR.arrival, &rec[a])?;
                if first_text.is_none() {
                    first_text = Some(rec[a].to_string());
                }
                crate::vocab::time::instant_ns_round(s).ok_or_else(|| {
                    input_err(
                        path,
                        line,
                        VIDUR.arrival,
                        format!("arrival time {s:e} s is out of range (max ~1.8e10 s)"),
                    )
                })? as i128
            }
            None => 0,
        };
        let i = parse_count(path, line, VIDUR.input, &rec[pi])?;
        let o = parse_count(path, line, VIDUR.output, &rec[di])?;
        if i == 0 || o == 0 {
            dropped_zero += 1;
            continue;
        }
        rows.push((t, i, o));
    }
    if rows.is_empty() {
        return Err(input_err(
            path,
            2,
            VIDUR.input,
            if read == 0 {
                "the trace has a header but no rows".to_string()
            } else {
                format!("none of the {read} rows has ≥ 1 prefill and ≥ 1 decode token")
            },
        ));
    }
    let mut report = CsvReport {
        rows: read,
        dropped_zero,
        out_of_order: 0,
        written: rows.len() as u64,
        duration_s: None,
        first_arrival: None,
        out: out.to_path_buf(),
    };
    if ai.is_some() {
        let (out_of_order, shifted) = normalise_arrivals(&mut rows);
        write_trace(out, &shifted, 9, replace)?;
        report.out_of_order = out_of_order;
        report.duration_s = shifted.last().map(|r| r.0 as f64 / 1e9);
        report.first_arrival = if out_of_order == 0 { first_text } else { None };
    } else {
        let pairs: Vec<(u32, u32)> = rows.iter().map(|r| (r.1, r.2)).collect();
        write_lengths(out, &pairs, replace)?;
    }
    Ok(report)
}

/// The positions of the input, output and (optional) arrival columns, or the error naming the
/// Vidur headers.
fn columns(path: &Path, headers: &[String]) -> Result<(usize, usize, Option<usize>)> {
    let find = |n: &str| headers.iter().position(|h| h == n);
    let (Some(pi), Some(di)) = (find(VIDUR.input), find(VIDUR.output)) else {
        let missing = if find(VIDUR.input).is_none() {
            VIDUR.input
        } else {
            VIDUR.output
        };
        return Err(input_err(
            path,
            1,
            missing,
            format!(
                "missing column `{missing}`: a Vidur trace has `arrived_at,num_prefill_tokens,num_decode_tokens` or `num_prefill_tokens,num_decode_tokens,…` (this header has: {})",
                header_list(headers)
            ),
        ));
    };
    let ai = find(VIDUR.arrival);
    Ok((pi, di, ai))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::test_fixture as fixture;

    #[test]
    fn vidur_fixtures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.csv");
        let r = import(&fixture("vidur_arrivals.csv"), &out, true).unwrap();
        assert_eq!((r.rows, r.written, r.dropped_zero), (3, 3, 0));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "arrival_s,input_tokens,output_tokens\n0.000000000,374,44\n4.314579000,396,109\n4.500000000,879,7\n"
        );
        let r = import(&fixture("vidur_lengths.csv"), &out, true).unwrap();
        assert_eq!(r.written, 3);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "input_tokens,output_tokens\n3772,54\n2015,156\n74,918\n"
        );
    }
}
