//! Azure LLM inference traces (`Azure/AzurePublicDataset`, 2023 and 2024):
//! `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:15:46.6805900`
//! (optionally with `T`, a `Z` or a `±HH:MM` offset).
//!
//! Output: `arrival_s` = seconds from the first arrival with 9 decimals, the exact nanosecond
//! difference as the Vidur importer writes it (the traces' timestamps have 7; digits past the
//! ninth are dropped), `input_tokens` = ContextTokens, `output_tokens` = GeneratedTokens. Rows
//! with a zero count are dropped (servesim needs ≥ 1 token of each) and counted; rows out of
//! time order are sorted (stably) and counted.

use std::path::{Path, PathBuf};

use super::{normalise_arrivals, parse_count, write_trace};
use crate::error::Result;
use crate::trace::csv_reader::{clip, csv_err, header_list, input_err, open_csv};

pub const TIMESTAMP: &str = "TIMESTAMP";
pub const CONTEXT: &str = "ContextTokens";
pub const GENERATED: &str = "GeneratedTokens";

/// The longest span of arrivals an imported trace may have: what the nanosecond clock holds
/// (like the Vidur importer's limit on `arrived_at`, ~1.8e10 s).
const MAX_SPAN_NS: i128 = u64::MAX as i128 - 1;

/// What a CSV import did.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvReport {
    pub rows: u64,
    pub dropped_zero: u64,
    pub out_of_order: u64,
    pub written: u64,
    /// Last arrival − first arrival, when the output has arrivals.
    pub duration_s: Option<f64>,
    /// The first arrival before shifting to 0 (seconds, in the input's own time base).
    pub first_arrival: Option<String>,
    pub out: PathBuf,
}

impl CsvReport {
    pub fn lines(&self) -> String {
        let mut s = format!("read {} rows", self.rows);
        if let Some(f) = &self.first_arrival {
            s.push_str(&format!("; first arrival {f} → 0 s"));
        }
        s.push('\n');
        if self.dropped_zero > 0 {
            s.push_str(&format!(
                "dropped {} rows with a zero token count (servesim needs ≥ 1 input and ≥ 1 output token)\n",
                self.dropped_zero
            ));
        }
        if self.out_of_order > 0 {
            s.push_str(&format!(
                "{} rows were out of time order: sorted by arrival\n",
                self.out_of_order
            ));
        }
        s.push_str(&format!("wrote {} requests", self.written));
        if let Some(d) = self.duration_s {
            s.push_str(&format!(" spanning {d:.3} s"));
        }
        s.push_str(&format!(" to {}\n", self.out.display()));
        s
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in month `m` (1–12) of year `y` (proleptic Gregorian: leap years every 4, except
/// centuries not divisible by 400).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Nanoseconds since 1970-01-01 UTC of `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`: a
/// real calendar date (Feb 29 in leap years only), hours 0–23, minutes 0–59, seconds 0–59 (60
/// only as a leap second, at 23:59:60 UTC), and a UTC offset within ±23:59.
pub fn parse_timestamp(s: &str) -> Option<i128> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac_ns = frac_ns * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            frac_ns *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &s.trim()[i + 1..];
            // Digits and `:` only: slicing below must not cut a multi-byte character.
            if !rest.bytes().all(|c| c.is_ascii_digit() || c == b':') {
                return None;
            }
            let (oh, om) = match rest.len() {
                5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
                4 => (&rest[..2], &rest[2..]),
                2 => (rest, "00"),
                _ => return None,
            };
            let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let minute_s = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 - offset_s;
    if sec == 60 {
        return leap_second_ns(minute_s);
    }
    Some((minute_s + sec) as i128 * 1_000_000_000 + frac_ns as i128)
}

/// A leap second in the minute starting at Unix second `minute_s`: the 61st second of 23:59 UTC
/// on a day that had one (IERS, 1972–2016), taken as the last nanosecond of that day so that it
/// sorts before the next day's first second (23:59:60.5 was read as the next day's 00:00:00.5).
fn leap_second_ns(minute_s: i64) -> Option<i128> {
    if minute_s.rem_euclid(86_400) != 86_340
        || !LEAP_SECOND_DAYS.contains(&day_key(minute_s.div_euclid(86_400)))
    {
        return None;
    }
    Some((minute_s + 59) as i128 * 1_000_000_000 + 999_999_999)
}

/// The UTC days that ended in a leap second (IERS Bulletin C; none after 2016), as
/// `year × 10,000 + month × 100 + day`.
const LEAP_SECOND_DAYS: [i64; 27] = [
    19720630, 19721231, 19731231, 19741231, 19751231, 19761231, 19771231, 19781231, 19791231,
    19810630, 19820630, 19830630, 19850630, 19871231, 19891231, 19901231, 19920630, 19930630,
    19940630, 19951231, 19970630, 19981231, 20051231, 20081231, 20120630, 20150630, 20161231,
];

/// Day number `day` (days since 1970-01-01) as `year × 10,000 + month × 100 + day` (the
/// inverse of [`days_from_civil`]).
fn day_key(day: i64) -> i64 {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    y * 10_000 + m * 100 + d
}

/// Import an Azure trace CSV into `arrival_s,input_tokens,output_tokens` at `out`.
pub fn import(path: &Path, out: &Path, replace: bool) -> Result<CsvReport> {
    let (mut rdr, headers) = open_csv(path)?;
    let find = |n: &str| column(path, &headers, n);
    let (ti, ci, gi) = (find(TIMESTAMP)?, find(CONTEXT)?, find(GENERATED)?);
    let mut rows = Vec::new();
    let mut rec = csv::StringRecord::new();
    let mut read = 0u64;
    let mut dropped_zero = 0u64;
    let mut first_text = None;
    let mut span: Option<(i128, i128)> = None;
    while rdr
        .read_record(&mut rec)
        .map_err(|e| csv_err(path, 0, "row", e))?
    {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        read += 1;
        let t = parse_timestamp(&rec[ti]).ok_or_else(|| {
            input_err(
                path,
                line,
                TIMESTAMP,
                format!(
                    "expected a timestamp like `2023-11-16 18:15:46.6805900` (a real date, UTC offset within ±23:59), got `{}`",
                    clip(&rec[ti])
                ),
            )
        })?;
        let i = parse_count(path, line, CONTEXT, &rec[ci])?;
        let o = parse_count(path, line, GENERATED, &rec[gi])?;
        if first_text.is_none() {
            first_text = Some(rec[ti].to_string());
        }
        if i == 0 || o == 0 {
            dropped_zero += 1;
            continue;
        }
        // Every arrival, shifted so that the earliest is 0, must fit the nanosecond clock.
        span = Some(match span {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
        if let Some((lo, hi)) = span {
            check_span(path, line, lo, hi, &rec[ti])?;
        }
        rows.push((t, i, o));
    }
    if rows.is_empty() {
        // Every row was dropped for 0 tokens: blame the token columns, not the timestamp.
        let (field, msg) = if read == 0 {
            (
                TIMESTAMP.to_string(),
                "the trace has a header but no rows".to_string(),
            )
        } else {
            (
                format!("{CONTEXT},{GENERATED}"),
                format!("none of the {read} rows has ≥ 1 input and ≥ 1 output token"),
            )
        };
        return Err(input_err(path, 2, &field, msg));
    }
    let (out_of_order, shifted) = normalise_arrivals(&mut rows);
    write_trace(out, &shifted, 9, replace)?;
    Ok(CsvReport {
        rows: read,
        dropped_zero,
        out_of_order,
        written: shifted.len() as u64,
        duration_s: shifted.last().map(|r| r.0 as f64 / 1e9),
        first_arrival: if out_of_order == 0 { first_text } else { None },
        out: out.to_path_buf(),
    })
}

/// The position of column `n` in `headers`, or the error naming the Azure header.
fn column(path: &Path, headers: &[String], n: &str) -> Result<usize> {
    headers.iter().position(|h| h == n).ok_or_else(|| {
        input_err(
            path,
            1,
            n,
            format!(
                "missing column `{n}`: an Azure LLM inference trace has the header `TIMESTAMP,ContextTokens,GeneratedTokens` (this header has: {})",
                header_list(headers)
            ),
        )
    })
}

/// Every arrival, shifted so that the earliest is 0, must fit the nanosecond clock: the arrivals
/// so far span `lo..=hi`; `text`: the timestamp as written on `line`.
fn check_span(path: &Path, line: u64, lo: i128, hi: i128, text: &str) -> Result<()> {
    if hi - lo > MAX_SPAN_NS {
        return Err(input_err(
            path,
            line,
            TIMESTAMP,
            format!(
                "`{}` is {:.3e} s away from another arrival of the trace; a trace may span at most {:.3e} s (the nanosecond clock)",
                clip(text),
                (hi - lo) as f64 / 1e9,
                MAX_SPAN_NS as f64 / 1e9
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t0 = parse_timestamp("2023-11-16 18:15:46.6805900").unwrap();
        let t1 = parse_timestamp("2023-11-16 18:15:50.9951690").unwrap();
        assert_eq!(t1 - t0, 4_314_579_000);
        assert_eq!(parse_timestamp("1970-01-01 00:00:00").unwrap(), 0, "epoch");
        assert_eq!(
            parse_timestamp("2024-05-10T00:00:01.5+00:00").unwrap()
                - parse_timestamp("2024-05-10 00:00:00Z").unwrap(),
            1_500_000_000
        );
        assert_eq!(
            parse_timestamp("2024-05-10 02:00:00+02:00"),
            parse_timestamp("2024-05-10 00:00:00")
        );
        // Across a month and a leap day.
        assert_eq!(
            parse_timestamp("2024-03-01 00:00:00").unwrap()
                - parse_timestamp("2024-02-28 00:00:00").unwrap(),
            2 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_timestamp("2023-11-16 00:00:00").unwrap() / 1_000_000_000,
            1_700_092_800
        );
        // Leap days of leap years (2000 is one, 1900 is not), and the widest offsets.
        for good in [
            "2024-02-29 00:00:00",
            "2000-02-29 00:00:00",
            "2016-12-31 23:59:60Z",
            "1972-06-30 23:59:60",
            "2017-01-01 00:59:60+01:00",
            "2023-11-16 18:15:46+23:59",
            "2023-11-16 18:15:46-2359",
        ] {
            assert!(parse_timestamp(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "2023-11-16",
            "2023-13-01 00:00:00",
            "16/11/2023 18:15:46",
            "2023-11-16 18:15:46.",
            "2023-11-16 18:15:46 x",
            "2023-02-29 00:00:00",
            "2023-02-30 00:00:00",
            "2024-02-30 00:00:00",
            "2023-04-31 00:00:00",
            "1900-02-29 00:00:00",
            "2023-11-16 18:15:46+99:99",
            "2023-11-16 18:15:46+24:00",
            "2023-11-16 18:15:46-12:60",
            "2023-11-16 18:15:46+2400",
            "2023-11-16 18:15:60",
            "2023-12-31 23:58:60",
            "2023-12-31 23:59:60+01:00",
            // No leap second on these days (round 8, case 10).
            "2023-12-31 23:59:60",
            "2023-06-30 23:59:60",
            "2016-06-30 23:59:60",
        ] {
            assert!(parse_timestamp(bad).is_none(), "{bad}");
        }
        // A leap second sorts after 23:59:59.x and before the next day (was 00:00:00.5).
        let leap = parse_timestamp("2016-12-31 23:59:60.5").unwrap();
        assert!(leap > parse_timestamp("2016-12-31 23:59:59.9999").unwrap());
        assert!(leap < parse_timestamp("2017-01-01 00:00:00.2").unwrap());
        for day in [-1, 0, 59, 10_956, 17_166, 19_723, 2_932_896] {
            let k = day_key(day);
            assert_eq!(
                days_from_civil(k / 10_000, k / 100 % 100, k % 100),
                day,
                "{k}"
            );
        }
        assert_eq!(day_key(17_166), 20161231);
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;
    use crate::trace::import::test_fixture as fixture;

    #[test]
    fn azure_fixtures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.csv");
        let r = import(&fixture("azure_small.csv"), &out, true).unwrap();
        assert_eq!(
            (r.rows, r.written, r.dropped_zero, r.out_of_order),
            (5, 4, 1, 0)
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "arrival_s,input_tokens,output_tokens\n0.000000000,374,44\n4.314579000,396,109\n4.319410000,879,7\n13.319410500,2000,1\n"
        );
        // 2024 format with a UTC offset, one row out of order.
        let r = import(&fixture("azure_2024_small.csv"), &out, true).unwrap();
        assert_eq!((r.written, r.out_of_order), (3, 1));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "arrival_s,input_tokens,output_tokens\n0.000000000,100,20\n0.010000000,4808,10\n0.510000000,3180,8\n"
        );
    }

    /// The importer wrote 6 decimals: arrivals 300 ns apart became simultaneous and 100 ns
    /// timestamps lost their last digit.
    #[test]
    fn arrivals_keep_every_nanosecond() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("t.csv"), dir.path().join("a.csv"));
        std::fs::write(
            &src,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:15:46.6805900,1,1\n\
             2023-11-16 18:15:46.6805903,2,2\n\
             2023-11-16 18:15:46.680590301,3,3\n",
        )
        .unwrap();
        import(&src, &out, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "arrival_s,input_tokens,output_tokens\n0.000000000,1,1\n0.000000300,2,2\n0.000000301,3,3\n"
        );
    }

    /// Rows all dropped for 0 tokens blamed the timestamp column.
    #[test]
    fn rows_without_tokens_blame_the_token_columns() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(
            &input,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,0\n",
        )
        .unwrap();
        let e = import(&input, &dir.path().join("a.csv"), true).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("ContextTokens,GeneratedTokens"), "{m}");
        assert!(m.contains("none of the 1 rows"), "{m}");
    }
}
