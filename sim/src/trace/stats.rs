//! `servesim trace stats`: summary statistics of a trace or lengths file.
//!
//! Accepts the canonical and Vidur headers, with or without an arrival column. Arrival
//! statistics: duration = last − first arrival, mean rate = (requests − 1) / duration (the rate
//! `--rate` rescaling uses), inter-arrival CV = population standard deviation / mean of the
//! gaps between consecutive arrivals. Percentiles interpolate linearly (numpy's default).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::csv_reader::{
    CANONICAL, VIDUR, csv_err, input_err, locate, open_csv, parse_seconds, parse_tokens,
};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dist {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Dist {
        v.sort_by(f64::total_cmp);
        Dist {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: quantile(&v, 0.5),
            p90: quantile(&v, 0.9),
            p99: quantile(&v, 0.99),
            max: v[v.len() - 1],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrivalStats {
    pub first_s: f64,
    pub duration_s: f64,
    /// (requests − 1) / duration; `None` for one request or a zero duration.
    pub mean_rate_per_s: Option<f64>,
    /// `None` with fewer than 2 gaps or a zero mean gap.
    pub interarrival_cv: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStats {
    pub file: PathBuf,
    pub requests: u64,
    /// `None` for a lengths file.
    pub arrivals: Option<ArrivalStats>,
    pub input_tokens: Dist,
    pub output_tokens: Dist,
}

/// Read and summarise a trace or lengths file.
pub fn trace_stats(path: &Path) -> Result<TraceStats> {
    let (mut rdr, headers) = open_csv(path)?;
    let (cols, a, i, o) = locate(path, &headers, &[CANONICAL, VIDUR], false)?;
    let mut rec = csv::StringRecord::new();
    let (mut inputs, mut outputs, mut times) = (Vec::new(), Vec::new(), Vec::new());
    while rdr
        .read_record(&mut rec)
        .map_err(|e| csv_err(path, 0, "row", e))?
    {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        inputs.push(parse_tokens(path, line, cols.input, &rec[i])? as f64);
        outputs.push(parse_tokens(path, line, cols.output, &rec[o])? as f64);
        if let Some(a) = a {
            let t = parse_seconds(path, line, cols.arrival, &rec[a])?;
            if let Some(&prev) = times.last()
                && t < prev
            {
                return Err(input_err(
                    path,
                    line,
                    cols.arrival,
                    format!("arrivals must be sorted: {t} comes after {prev}"),
                ));
            }
            times.push(t);
        }
    }
    if inputs.is_empty() {
        return Err(input_err(path, 2, cols.input, "the file has no rows"));
    }
    let arrivals = a.map(|_| {
        let first = times[0];
        let duration = times[times.len() - 1] - first;
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let cv = if gaps.len() >= 2 {
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - m) * (g - m)).sum::<f64>() / gaps.len() as f64;
            (m > 0.0).then(|| var.sqrt() / m)
        } else {
            None
        };
        ArrivalStats {
            first_s: first,
            duration_s: duration,
            mean_rate_per_s: (times.len() >= 2 && duration > 0.0)
                .then(|| (times.len() - 1) as f64 / duration),
            interarrival_cv: cv,
        }
    });
    Ok(TraceStats {
        file: path.to_path_buf(),
        requests: inputs.len() as u64,
        arrivals,
        input_tokens: Dist::of(inputs),
        output_tokens: Dist::of(outputs),
    })
}

/// A number with at most `d` decimals, trailing zeros removed.
fn trim(x: f64, d: usize) -> String {
    let s = format!("{x:.d$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `x` with `d` decimals while that stays short (|x| < 10¹²), else in [`crate::error::num`]'s
/// 6 significant digits (`4.2e300`).
fn fixed(x: f64, d: usize) -> String {
    if x.is_finite() && x.abs() < 1e12 {
        format!("{x:.d$}")
    } else {
        crate::error::num(x)
    }
}

/// The human table. Token columns are 10 characters wide, wider when a cell needs it (a
/// column of 4·10⁹-token requests stays separated).
pub fn table(s: &TraceStats) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{:<18}{}", "file", s.file.display());
    let _ = writeln!(t, "{:<18}{}", "requests", s.requests);
    match &s.arrivals {
        None => {
            let _ = writeln!(t, "{:<18}none (a lengths file)", "arrivals");
        }
        Some(a) => {
            let opt = |v: Option<f64>, d: usize| match v {
                Some(x) => fixed(x, d),
                None => "n/a".into(),
            };
            let _ = writeln!(t, "{:<18}{} s", "duration", fixed(a.duration_s, 3));
            let _ = writeln!(t, "{:<18}{} req/s", "mean rate", opt(a.mean_rate_per_s, 4));
            let _ = writeln!(t, "{:<18}{}", "inter-arrival CV", opt(a.interarrival_cv, 3));
        }
    }
    let rows: Vec<(&str, [String; 5])> = [("input", &s.input_tokens), ("output", &s.output_tokens)]
        .into_iter()
        .map(|(name, d)| {
            let cells = [
                format!("{:.2}", d.mean),
                trim(d.p50, 2),
                trim(d.p90, 2),
                trim(d.p99, 2),
                trim(d.max, 0),
            ];
            (name, cells)
        })
        .collect();
    let longest = rows
        .iter()
        .flat_map(|(_, c)| c.iter().map(String::len))
        .max()
        .unwrap_or(0);
    let w = (longest + 1).max(10);
    let _ = writeln!(
        t,
        "{:<8}{:>w$}{:>w$}{:>w$}{:>w$}{:>w$}",
        "tokens", "mean", "p50", "p90", "p99", "max"
    );
    for (name, c) in &rows {
        let _ = writeln!(
            t,
            "{:<8}{:>w$}{:>w$}{:>w$}{:>w$}{:>w$}",
            name, c[0], c[1], c[2], c[3], c[4]
        );
    }
    t
}

/// Linear-interpolation quantile of sorted data (numpy's default), `q` in [0, 1].
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_small_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(
            &p,
            "arrival_s,input_tokens,output_tokens\n0,1,10\n1,2,20\n3,3,30\n6,4,40\n",
        )
        .unwrap();
        let s = trace_stats(&p).unwrap();
        assert_eq!(s.requests, 4);
        let a = s.arrivals.as_ref().unwrap();
        assert_eq!(a.duration_s, 6.0);
        assert_eq!(a.mean_rate_per_s, Some(0.5));
        // Gaps 1, 2, 3: mean 2, population sd sqrt(2/3).
        assert!((a.interarrival_cv.unwrap() - (2.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(s.input_tokens.mean, 2.5);
        assert_eq!(s.input_tokens.p50, 2.5);
        assert!((s.output_tokens.p90 - 37.0).abs() < 1e-9);
        assert_eq!(s.output_tokens.max, 40.0);
        let t = table(&s);
        assert!(t.contains("mean rate         0.5000 req/s"), "{t}");

        std::fs::write(
            &p,
            "num_prefill_tokens,num_decode_tokens,num_total_tokens\n5,7,12\n",
        )
        .unwrap();
        let s = trace_stats(&p).unwrap();
        assert!(s.arrivals.is_none());
        assert!(table(&s).contains("none (a lengths file)"));
    }
}
