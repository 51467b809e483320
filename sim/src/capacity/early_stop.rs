//! Ending a probe's runs once its verdict is certain (issue 20 §2).
//!
//! A probe's figure is the mean over its seeds of a per-run figure, and its seeds run one after
//! another: when seed `i` starts, the figures of seeds `0 … i−1` are known. A run's figure is
//! bounded from its completions so far, whatever the rest of the run does:
//!
//! - **mean** of a latency metric over the M requests that finish (M ≤ N, the requests the
//!   trace holds; every metric is ≥ 0): ≥ (Σ over the completed) / N.
//! - **percentile** (numpy's linear interpolation): non-decreasing in every value, and adding a
//!   value ≤ all others (a 0) never raises it, so the percentile of the completed values padded
//!   with zeros to N values is ≤ the final one.
//! - **goodput** fraction met / M ≤ 1 − (completed requests that missed) / N.
//!
//! The other seeds' figures are bounded the same way: a seed not yet run by 0 (latency) or 1
//! (goodput). When the probe's mean of these bounds already misses the target (by a relative
//! margin of 10⁻⁹, far above the rounding of a mean), the probe misses it whatever happens next:
//! the run ends ([`crate::run::Watch`]), and the seeds not yet run are skipped. Its verdict is the
//! one the full probe gives; its figure is then the bound, not the statistic. Everything here
//! depends on the simulated completions only, so it is the same on every machine and for every
//! `--jobs`.
//!
//! An unstable run is not stopped early: the stability rule (`metrics/stability.rs`) judges
//! least-squares slopes over the finished run. A grossly overloaded run is already ended by the
//! engine's overload check (a failed run, hence a failed probe).

use serde::Serialize;

use super::Target;
use crate::engine::Completion;
use crate::metrics::{meets_slo, request_metrics};

/// Relative margin by which the bounds must miss the target before a run is ended.
pub const MARGIN: f64 = 1e-9;

/// Why a seed's run did not run to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedEarly {
    /// Ended once its completions made the probe's miss certain.
    Target,
    /// Not run: the earlier seeds already made the probe's miss certain.
    Skipped,
}

impl StoppedEarly {
    pub fn as_str(self) -> &'static str {
        match self {
            StoppedEarly::Target => "target",
            StoppedEarly::Skipped => "skipped",
        }
    }
}

/// The figure a seed that has not run (or has completed nothing) is bounded by: a latency
/// statistic is ≥ 0, a goodput fraction ≤ 1.
pub fn unrun_bound(target: &Target) -> f64 {
    match target {
        Target::Latency(_) => 0.0,
        Target::Goodput(_) => 1.0,
    }
}

/// Whether a probe of `seeds` seeds whose per-seed figures are bounded by `bounds` (the rest
/// by [`unrun_bound`]) certainly misses the target.
pub fn certain_miss(target: &Target, bounds: &[f64], seeds: usize) -> bool {
    misses(target, bounds.iter().sum(), bounds.len(), seeds)
}

/// [`certain_miss`] given the sum of `count` bounds.
fn misses(target: &Target, sum: f64, count: usize, seeds: usize) -> bool {
    let rest = seeds.saturating_sub(count) as f64 * unrun_bound(target);
    let mean = (sum + rest) / seeds.max(1) as f64;
    match target {
        Target::Latency(slo) => mean > slo.limit_s * (1.0 + MARGIN),
        Target::Goodput(g) => mean < g.min * (1.0 - MARGIN),
    }
}

/// Follows one seed's run: its figure's bound from the completions so far, and whether, with
/// the earlier seeds' figures, the probe's miss is certain.
#[derive(Debug)]
pub struct EarlyStop<'a> {
    /// What the probe must meet.
    target: &'a Target,
    /// Sum and number of the figures of the earlier seeds of the probe.
    earlier_sum: f64,
    earlier: usize,
    seeds: usize,
    /// Requests the trace holds (N).
    total: usize,
    completed: usize,
    sum: f64,
    missed: usize,
    /// The completed values (percentile targets only).
    values: Vec<f64>,
    /// Completions left before the next percentile check.
    until_check: usize,
    certain: bool,
}

/// Percentile bounds are recomputed every N / PERCENTILE_CHECKS completions (O(N log N) each).
const PERCENTILE_CHECKS: usize = 64;

impl<'a> EarlyStop<'a> {
    pub fn new(target: &'a Target, earlier: &'a [f64], seeds: usize, total: usize) -> Self {
        EarlyStop {
            target,
            earlier_sum: earlier.iter().sum(),
            earlier: earlier.len(),
            seeds,
            total,
            completed: 0,
            sum: 0.0,
            missed: 0,
            values: Vec::new(),
            until_check: 0,
            certain: false,
        }
    }

    /// The bound on this run's figure from its completions so far.
    pub fn bound(&self) -> f64 {
        let n = self.total.max(self.completed).max(1) as f64;
        match self.target {
            Target::Goodput(_) => 1.0 - self.missed as f64 / n,
            Target::Latency(slo) if slo.stat == "mean" => self.sum / n,
            Target::Latency(slo) => {
                let q = match slo.stat.as_str() {
                    "p50" => 0.50,
                    "p90" => 0.90,
                    "p95" => 0.95,
                    _ => 0.99,
                };
                let zeros = self.total.saturating_sub(self.values.len());
                let mut v = vec![0.0; zeros];
                v.extend_from_slice(&self.values);
                v[zeros..].sort_unstable_by(f64::total_cmp);
                if v.is_empty() {
                    0.0
                } else {
                    crate::trace::stats::quantile(&v, q)
                }
            }
        }
    }

    fn check(&mut self) {
        let sum = self.earlier_sum + self.bound();
        self.certain = misses(self.target, sum, self.earlier + 1, self.seeds);
    }
}

impl crate::run::Watch for EarlyStop<'_> {
    fn on_completion(&mut self, c: &Completion) {
        let m = request_metrics(c);
        self.completed += 1;
        match self.target {
            Target::Goodput(g) => {
                self.missed += usize::from(!meets_slo(&m, g.ttft_s, g.tpot_s));
                self.check();
            }
            Target::Latency(slo) => {
                let v = match slo.metric.as_str() {
                    "jct_s" => Some(m.jct_s),
                    "ttft_s" => Some(m.ttft_s),
                    "tpot_s" => m.tpot_s,
                    "per_token_s" => Some(m.per_token_s),
                    _ => Some(m.queue_s),
                };
                let Some(v) = v else { return };
                if slo.stat == "mean" {
                    self.sum += v;
                    self.check();
                } else {
                    self.values.push(v);
                    if self.until_check == 0 {
                        self.until_check = (self.total / PERCENTILE_CHECKS).max(1);
                        self.check();
                    }
                    self.until_check -= 1;
                }
            }
        }
    }

    fn stop(&self) -> bool {
        self.certain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{GoodputTarget, Slo};
    use crate::run::Watch;

    fn done(id: u64, jct_s: f64, out: u32) -> Completion {
        let ns = (jct_s * 1e9) as u64;
        Completion {
            id,
            replica: 0,
            arrival_ns: 0,
            input_tokens: 1,
            output_tokens: out,
            first_scheduled_ns: 0,
            first_token_ns: ns / 2,
            finish_ns: ns,
            preemptions: 0,
            swap_out_bytes: 0,
            swap_in_bytes: 0,
            swap_stall_ns: 0,
            recomputed_tokens: 0,
            predicted_output_tokens: out,
            priority: 0.0,
            demotions: 0,
            promotions: 0,
            itl_max_ns: 0,
            itl_p99_ns: 0,
        }
    }

    #[test]
    fn a_mean_stops_once_the_completed_sum_alone_misses() {
        // 10 requests, mean jct ≤ 1 s, one seed: certain once Σ jct > 10 s.
        let t = Target::Latency(Slo::parse("jct_s=1").unwrap());
        let mut w = EarlyStop::new(&t, &[], 1, 10);
        for i in 0..4 {
            w.on_completion(&done(i, 2.5, 1));
            assert!(!w.stop(), "Σ = {} s", 2.5 * (i + 1) as f64);
        }
        w.on_completion(&done(4, 0.5, 1)); // Σ = 10.5 s > 10 s
        assert!(w.stop());
        assert!((w.bound() - 1.05).abs() < 1e-12);
        // Two seeds, the first at 0.5: the second must reach a mean > 1.5 s on its own.
        let earlier = [0.5];
        let mut w = EarlyStop::new(&t, &earlier, 2, 10);
        for i in 0..5 {
            w.on_completion(&done(i, 3.0, 1));
        }
        assert!(!w.stop()); // bound 1.5, probe mean 1.0: not over
        w.on_completion(&done(5, 0.1, 1));
        assert!(w.stop());
        // A third seed not yet run counts as 0.
        assert!(!certain_miss(&t, &[1.5, 1.5], 3));
        assert!(certain_miss(&t, &[1.5, 1.6], 3));
    }

    #[test]
    fn a_percentile_bound_pads_with_zeros() {
        // p50 of 5 values ≤ 1 s: the median of (0, 0, 0, 2, 2) is 0; of (0, 0, 2, 2, 2) is 2.
        let t = Target::Latency(Slo::parse("jct_s:p50=1").unwrap());
        let mut w = EarlyStop::new(&t, &[], 1, 5);
        w.on_completion(&done(0, 2.0, 1));
        w.on_completion(&done(1, 2.0, 1));
        assert_eq!(w.bound(), 0.0);
        assert!(!w.stop());
        w.on_completion(&done(2, 2.0, 1));
        assert_eq!(w.bound(), 2.0);
        assert!(w.stop());
    }

    #[test]
    fn goodput_stops_once_too_many_completed_requests_missed() {
        // 20 requests, min 0.9: certain once 3 missed (1 − 3/20 = 0.85 < 0.9).
        let t = Target::Goodput(GoodputTarget {
            ttft_s: 1.0,
            tpot_s: 10.0,
            min: 0.9,
        });
        let mut w = EarlyStop::new(&t, &[], 1, 20);
        for i in 0..5 {
            w.on_completion(&done(i, 0.5, 2)); // met
        }
        w.on_completion(&done(5, 4.0, 2)); // TTFT 2 s: missed
        w.on_completion(&done(6, 4.0, 2));
        assert!(!w.stop(), "bound {}", w.bound()); // exactly 0.9: not below
        w.on_completion(&done(7, 4.0, 2));
        assert!(w.stop());
        // An unrun seed counts as 1: with one more seed, 0.85 and 1 average 0.925.
        assert!(!certain_miss(&t, &[0.85], 2));
    }
}
