//! Throughput under an SLO (FastServe's and ALISE's headline metric): the highest arrival rate at
//! which a latency statistic stays within a target, found by bracketing then bisection over the
//! rate with fixed seeds.
//!
//! The statistic (e.g. mean per-token latency) is averaged over the seeds at each rate. Latency is
//! assumed to grow with load; where it is not monotone the search reports the boundary it
//! brackets, not necessarily the highest feasible rate.

use crate::error::{Result, SimError};
use crate::metrics::Summary;

/// Which summary statistic the SLO bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// `jct_s`, `ttft_s`, `tpot_s`, `per_token_s` (per-token latency), `queue_s`.
    pub metric: String,
    /// `mean`, `p50`, `p90`, `p95` or `p99`.
    pub stat: String,
    pub limit_s: f64,
}

impl Slo {
    /// Parse `metric[:stat]=seconds`, e.g. `per_token_s=0.3` or `jct_s:p99=20`.
    pub fn parse(s: &str) -> Result<Slo> {
        let bad = || {
            SimError::config(format!(
                "--slo `{s}`: expected METRIC[:STAT]=SECONDS, METRIC one of jct_s, ttft_s, tpot_s, per_token_s, queue_s; STAT one of mean, p50, p90, p95, p99"
            ))
        };
        let (lhs, v) = s.split_once('=').ok_or_else(bad)?;
        let (metric, stat) = lhs.split_once(':').unwrap_or((lhs, "mean"));
        let limit_s: f64 = v.trim().parse().map_err(|_| bad())?;
        let known = ["jct_s", "ttft_s", "tpot_s", "per_token_s", "queue_s"].contains(&metric)
            && ["mean", "p50", "p90", "p95", "p99"].contains(&stat);
        if !(limit_s.is_finite() && limit_s > 0.0 && known) {
            return Err(bad());
        }
        Ok(Slo {
            metric: metric.into(),
            stat: stat.into(),
            limit_s,
        })
    }

    /// The bounded statistic of a run (infinite when the run has none).
    pub fn value(&self, s: &Summary) -> f64 {
        let d = match self.metric.as_str() {
            "jct_s" => &s.jct_s,
            "ttft_s" => &s.ttft_s,
            "tpot_s" => &s.tpot_s,
            "per_token_s" => &s.per_token_latency_s,
            _ => &s.queue_s,
        };
        d.as_ref()
            .map(|d| match self.stat.as_str() {
                "p50" => d.p50,
                "p90" => d.p90,
                "p95" => d.p95,
                "p99" => d.p99,
                _ => d.mean,
            })
            .unwrap_or(f64::INFINITY)
    }
}

/// Result of a capacity search.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Highest rate found to meet the SLO (0 if even the lowest probed rate fails).
    pub rate_per_s: f64,
    /// Rates probed, with the statistic measured at each, in probe order.
    pub probes: Vec<(f64, f64)>,
}

/// Bracket and bisect. `eval(rate)` returns the statistic at that rate (an overloaded run that
/// fails counts as violating the SLO). Stops when the bracket is within `rel_precision`.
pub fn search(
    start_rate: f64,
    limit_s: f64,
    rel_precision: f64,
    max_probes: usize,
    eval: &mut dyn FnMut(f64) -> f64,
) -> Capacity {
    let mut probes = Vec::new();
    let mut probe = |r: f64, probes: &mut Vec<(f64, f64)>| {
        let v = eval(r);
        probes.push((r, v));
        v <= limit_s
    };
    let (mut lo, mut hi);
    if probe(start_rate, &mut probes) {
        lo = start_rate;
        hi = start_rate * 2.0;
        while probes.len() < max_probes && probe(hi, &mut probes) {
            lo = hi;
            hi *= 2.0;
        }
    } else {
        hi = start_rate;
        lo = start_rate / 2.0;
        while probes.len() < max_probes && !probe(lo, &mut probes) {
            hi = lo;
            lo /= 2.0;
        }
        if probes.last().is_some_and(|&(_, v)| v > limit_s) {
            return Capacity {
                rate_per_s: 0.0,
                probes,
            };
        }
    }
    while probes.len() < max_probes && (hi - lo) > rel_precision * lo {
        let mid = 0.5 * (lo + hi);
        if probe(mid, &mut probes) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Capacity {
        rate_per_s: lo,
        probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_a_known_threshold() {
        // Latency 1/(3 − rate): the SLO 1.0 holds up to rate 2.
        let mut f = |r: f64| {
            if r < 3.0 {
                1.0 / (3.0 - r)
            } else {
                f64::INFINITY
            }
        };
        let c = search(0.5, 1.0, 0.001, 60, &mut f);
        assert!((c.rate_per_s - 2.0).abs() < 0.003, "{}", c.rate_per_s);
        let c = search(10.0, 1.0, 0.001, 60, &mut f);
        assert!((c.rate_per_s - 2.0).abs() < 0.003, "{}", c.rate_per_s);
    }

    #[test]
    fn infeasible_everywhere_gives_zero() {
        let mut f = |_r: f64| 5.0;
        assert_eq!(search(1.0, 1.0, 0.01, 10, &mut f).rate_per_s, 0.0);
    }

    #[test]
    fn slo_parsing() {
        let s = Slo::parse("per_token_s=0.3").unwrap();
        assert_eq!(
            (s.metric.as_str(), s.stat.as_str(), s.limit_s),
            ("per_token_s", "mean", 0.3)
        );
        let s = Slo::parse("jct_s:p99=20").unwrap();
        assert_eq!(s.stat, "p99");
        assert!(Slo::parse("jct=1").is_err());
        assert!(Slo::parse("jct_s=-1").is_err());
    }
}
