//! The summary of a run that keeps no per-request rows (`requests.csv` not written): every
//! completion is folded into counters and [`ValueSketch`]es as it arrives and dropped.
//!
//! What is kept per request: only the 24 bytes the stability rule needs (its arrival and finish
//! time with its output tokens, [`WorkPoint`]s: the rule trims and regresses over the sorted
//! times, which no small sketch reproduces exactly). Counts, throughput, maxima and goodput are
//! exact; means are compensated sums; the percentiles of `jct_s`, `ttft_s`, `tpot_s`,
//! `per_token_latency_s` and `queue_s` come from the sketch, within its relative accuracy
//! [`super::sketch::ALPHA`] of the exact ones.

use super::sketch::ValueSketch;
use super::stability::RunPoints;
use super::{Dist, Goodput, RequestMetrics, meets_slo, request_metrics};
use crate::engine::Completion;

/// Streaming statistics of a run's completions.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    pub requests: u64,
    pub output_tokens: u64,
    pub jct_s: ValueSketch,
    pub ttft_s: ValueSketch,
    pub tpot_s: ValueSketch,
    pub per_token_s: ValueSketch,
    pub queue_s: ValueSketch,
    /// `[slo]` targets (TTFT, TPOT) and how many requests met them.
    pub slo: Option<(f64, f64)>,
    pub slo_met: u64,
    points: RunPoints,
}

impl Streamed {
    /// Empty statistics; `slo`: the goodput targets (TTFT, TPOT), if any.
    pub fn new(slo: Option<(f64, f64)>) -> Self {
        Streamed {
            slo,
            ..Default::default()
        }
    }

    /// Fold in one completion.
    pub fn add(&mut self, c: &Completion) {
        let m: RequestMetrics = request_metrics(c);
        self.requests += 1;
        self.output_tokens += u64::from(c.output_tokens);
        self.jct_s.add(m.jct_s);
        self.ttft_s.add(m.ttft_s);
        if let Some(t) = m.tpot_s {
            self.tpot_s.add(t);
        }
        self.per_token_s.add(m.per_token_s);
        self.queue_s.add(m.queue_s);
        if let Some((ttft, tpot)) = self.slo
            && meets_slo(&m, ttft, tpot)
        {
            self.slo_met += 1;
        }
        self.points.add(c);
    }

    /// Goodput against the `[slo]` targets (`None` without them).
    pub fn goodput(&self) -> Option<Goodput> {
        let (ttft_s, tpot_s) = self.slo?;
        let requests = self.requests;
        Some(Goodput {
            ttft_s,
            tpot_s,
            met: self.slo_met,
            requests,
            fraction: if requests > 0 {
                self.slo_met as f64 / requests as f64
            } else {
                0.0
            },
        })
    }

    /// The stability verdict (consumes the kept points).
    pub fn take_stability(&mut self) -> Option<super::stability::Stability> {
        std::mem::take(&mut self.points).judge()
    }
}

impl Dist {
    /// The distribution of the values in `s`: count and max exact, mean compensated,
    /// percentiles within the sketch's relative accuracy; `None` when empty.
    pub fn of_values(s: &ValueSketch) -> Option<Dist> {
        let q = |p: f64| s.quantile(p).expect("non-empty");
        Some(Dist {
            count: s.count(),
            mean: s.mean()?,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: s.max()?,
        })
    }
}
