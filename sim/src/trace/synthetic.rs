//! Synthetic traces: an arrival process × lengths sampled (with replacement, seeded) from a
//! lengths file.
//!
//! Arrival processes (inter-arrival times, mean 1/rate):
//! - `poisson`: Exp(rate);
//! - `gamma`: Gamma(shape = 1/cv², scale = cv²/rate) — the CV form of FastServe's and vLLM's
//!   benchmark clients (vLLM's `--burstiness b` is cv = 1/√b);
//! - `constant`: exactly 1/rate.
//!
//! The first request arrives after one inter-arrival time.

use std::path::Path;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};

use super::csv_reader::{
    CANONICAL, Columns, VIDUR, csv_err, input_err, locate, open_csv, parse_tokens,
};
use crate::engine::TraceRow;
use crate::engine::time::instant_ns_round;
use crate::error::{Result, SimError};
use crate::rng::{Stream, stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalProcess {
    Poisson,
    Gamma,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPair {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// Read `input_tokens,output_tokens` (or Vidur's `num_prefill_tokens,num_decode_tokens`) pairs.
pub fn read_lengths(path: &Path) -> Result<Vec<LengthPair>> {
    const LENGTH_FORMATS: [Columns; 2] = [CANONICAL, VIDUR];
    let (mut rdr, headers) = open_csv(path)?;
    let (cols, _, i, o) = locate(path, &headers, &LENGTH_FORMATS, false)?;
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let more = rdr
            .read_record(&mut rec)
            .map_err(|e| csv_err(path, 0, "row", e))?;
        if !more {
            break;
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        out.push(LengthPair {
            input_tokens: parse_tokens(path, line, cols.input, &rec[i])?,
            output_tokens: parse_tokens(path, line, cols.output, &rec[o])?,
        });
    }
    if out.is_empty() {
        return Err(input_err(
            path,
            2,
            cols.input,
            "the lengths file has no rows",
        ));
    }
    Ok(out)
}

enum Gap {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
    Constant(f64),
}

/// A seeded synthetic trace.
pub struct Synthetic<'a> {
    lengths: &'a [LengthPair],
    gap: Gap,
    arrivals: ChaCha8Rng,
    picks: ChaCha8Rng,
    t_s: f64,
    next_id: u64,
    num_requests: u64,
}

impl<'a> Synthetic<'a> {
    pub fn new(
        process: ArrivalProcess,
        rate_per_s: f64,
        cv: f64,
        lengths: &'a [LengthPair],
        num_requests: u64,
        seed: u64,
    ) -> Result<Self> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            return Err(SimError::config(format!(
                "rate_per_s must be a finite number > 0, got {rate_per_s}"
            )));
        }
        if lengths.is_empty() {
            return Err(SimError::config("the lengths list is empty"));
        }
        let gap = match process {
            ArrivalProcess::Poisson => Gap::Exp(
                Exp::new(rate_per_s).map_err(|e| SimError::config(format!("poisson: {e}")))?,
            ),
            ArrivalProcess::Gamma => {
                if !(cv.is_finite() && cv > 0.0) {
                    return Err(SimError::config(format!(
                        "cv must be a finite number > 0 for gamma arrivals, got {cv}"
                    )));
                }
                Gap::Gamma(
                    Gamma::new(1.0 / (cv * cv), cv * cv / rate_per_s)
                        .map_err(|e| SimError::config(format!("gamma: {e}")))?,
                )
            }
            ArrivalProcess::Constant => Gap::Constant(1.0 / rate_per_s),
        };
        Ok(Synthetic {
            lengths,
            gap,
            arrivals: stream(seed, Stream::Arrivals),
            picks: stream(seed, Stream::Lengths),
            t_s: 0.0,
            next_id: 0,
            num_requests,
        })
    }
}

impl Iterator for Synthetic<'_> {
    type Item = Result<TraceRow>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next_id >= self.num_requests {
            return None;
        }
        self.t_s += match &self.gap {
            Gap::Exp(d) => d.sample(&mut self.arrivals),
            Gap::Gamma(d) => d.sample(&mut self.arrivals),
            Gap::Constant(g) => *g,
        };
        let pair = self.lengths[self.picks.random_range(0..self.lengths.len())];
        let id = self.next_id;
        self.next_id += 1;
        Some(
            instant_ns_round(self.t_s)
                .map(|arrival_ns| TraceRow {
                    id,
                    arrival_ns,
                    input_tokens: pair.input_tokens,
                    output_tokens: pair.output_tokens,
                })
                .ok_or_else(|| SimError::config("synthetic arrival time overflowed")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens() -> Vec<LengthPair> {
        (1..=10)
            .map(|i| LengthPair {
                input_tokens: i,
                output_tokens: 2 * i,
            })
            .collect()
    }

    #[test]
    fn poisson_mean_gap_matches_rate_and_is_seeded() {
        let l = lens();
        let a: Vec<_> = Synthetic::new(ArrivalProcess::Poisson, 4.0, 1.0, &l, 20_000, 7)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let b: Vec<_> = Synthetic::new(ArrivalProcess::Poisson, 4.0, 1.0, &l, 20_000, 7)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(a, b);
        let mean_gap = a.last().unwrap().arrival_ns as f64 / 1e9 / a.len() as f64;
        assert!((mean_gap - 0.25).abs() < 0.01, "{mean_gap}");
    }

    #[test]
    fn gamma_cv_is_respected() {
        let l = lens();
        let rows: Vec<_> = Synthetic::new(ArrivalProcess::Gamma, 2.0, 3.0, &l, 50_000, 1)
            .unwrap()
            .map(|r| r.unwrap().arrival_ns as f64 / 1e9)
            .collect();
        let gaps: Vec<f64> = rows.windows(2).map(|w| w[1] - w[0]).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let v = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((m - 0.5).abs() < 0.03, "mean {m}");
        assert!((v.sqrt() / m - 3.0).abs() < 0.2, "cv {}", v.sqrt() / m);
    }

    #[test]
    fn constant_is_exact() {
        let l = lens();
        let rows: Vec<_> = Synthetic::new(ArrivalProcess::Constant, 2.0, 1.0, &l, 3, 1)
            .unwrap()
            .map(|r| r.unwrap().arrival_ns)
            .collect();
        assert_eq!(rows, vec![500_000_000, 1_000_000_000, 1_500_000_000]);
    }
}
