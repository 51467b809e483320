//! Throughput under an SLO (FastServe's and ALISE's headline metric): the highest arrival rate at
//! which a latency statistic stays within a target, found by bracketing then bisection over the
//! rate with fixed seeds.
//!
//! Two kinds of target: a latency statistic (e.g. mean per-token latency ≤ 0.3 s, FastServe
//! Fig. 11) or goodput (FastServe Fig. 13: at least a fraction `min` of the requests meet both a
//! TTFT and a TPOT target; TPOT by vLLM's benchmark convention, see [`crate::metrics::meets_slo`]).
//! The statistic or the goodput fraction is averaged over the seeds at each rate. Latency is
//! assumed to grow (goodput to fall) with load; where it is not monotone the search reports the
//! boundary it brackets, not necessarily the highest feasible rate.
//!
//! A probed rate meets the target only if, besides the figure, every seed's run is *stable*
//! ([`crate::metrics::stability`]: it completes ≥ 0.95 × the offered rate and its queue does not
//! grow over the last half of the trace) and none failed. A finite trace always drains, so an
//! overloaded run still ends with latencies; a policy that serves short requests first can meet
//! a mean latency target there while serving a fraction of the offered rate (issue 17 §4:
//! `srpt-oracle` "met" a 0.3 s/token SLO at rates where it served 1.5 req/s). Such a rate is not a
//! capacity.

use serde::Serialize;

mod early_stop;
pub use early_stop::{EarlyStop, StoppedEarly, certain_miss, unrun_bound};

use crate::error::{Result, SimError};
use crate::metrics::Summary;
use crate::metrics::stability::Stability;

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

    /// The distribution of the bounded metric in a run (`None` when no request has it: TPOT
    /// with one-token outputs only).
    pub fn dist<'a>(&self, s: &'a Summary) -> Option<&'a crate::metrics::Dist> {
        match self.metric.as_str() {
            "jct_s" => &s.jct_s,
            "ttft_s" => &s.ttft_s,
            "tpot_s" => &s.tpot_s,
            "per_token_s" => &s.per_token_latency_s,
            _ => &s.queue_s,
        }
        .as_ref()
    }

    /// The bounded statistic of a run (infinite when the run has none).
    pub fn value(&self, s: &Summary) -> f64 {
        self.dist(s)
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

/// A goodput target: `min` of the requests must have TTFT ≤ `ttft_s` and TPOT ≤ `tpot_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoodputTarget {
    pub ttft_s: f64,
    pub tpot_s: f64,
    /// Required fraction of requests meeting both (FastServe: 0.95).
    pub min: f64,
}

/// Default required goodput fraction (FastServe's "P95 goodput").
pub const DEFAULT_MIN_GOODPUT: f64 = 0.95;

impl GoodputTarget {
    /// Parse `ttft_s=S,tpot_s=S[,min=F]` (any order). A missing `ttft_s` / `tpot_s` is taken
    /// from `scenario_slo` (the scenario's `[slo]` table) and is an error without one; `min`
    /// defaults to [`DEFAULT_MIN_GOODPUT`].
    pub fn parse(s: &str, scenario_slo: Option<(f64, f64)>) -> Result<GoodputTarget> {
        let bad = |why: String| {
            SimError::config(format!(
                "--goodput `{s}`: {why} (expected ttft_s=SECONDS,tpot_s=SECONDS[,min=FRACTION])"
            ))
        };
        let (mut ttft, mut tpot, mut min) = (None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not KEY=VALUE")))?;
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{k}`: `{v}` is not a number")))?;
            let slot = match k.trim() {
                "ttft_s" => &mut ttft,
                "tpot_s" => &mut tpot,
                "min" => &mut min,
                other => return Err(bad(format!("unknown key `{other}`"))),
            };
            if slot.replace(x).is_some() {
                return Err(bad(format!("`{k}` given twice")));
            }
        }
        let from_scenario = |x: Option<f64>, k: &str, pick: fn((f64, f64)) -> f64| {
            x.or(scenario_slo.map(pick))
                .ok_or_else(|| bad(format!("no `{k}` and the scenario has no [slo] table")))
        };
        let g = GoodputTarget {
            ttft_s: from_scenario(ttft, "ttft_s", |p| p.0)?,
            tpot_s: from_scenario(tpot, "tpot_s", |p| p.1)?,
            min: min.unwrap_or(DEFAULT_MIN_GOODPUT),
        };
        for (k, v) in [("ttft_s", g.ttft_s), ("tpot_s", g.tpot_s)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("`{k}` must be a finite number > 0, got {v}")));
            }
        }
        if !(g.min > 0.0 && g.min <= 1.0) {
            return Err(bad(format!("`min` must be in (0, 1], got {}", g.min)));
        }
        Ok(g)
    }
}

/// What a capacity search bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Latency(Slo),
    Goodput(GoodputTarget),
}

impl Target {
    /// The per-run figure averaged over seeds: the latency statistic (infinite for a failed
    /// run), or the goodput fraction (0 for a failed run).
    pub fn measure(&self, run: Option<&crate::run::RunOutput>) -> f64 {
        match (self, run) {
            (Target::Latency(slo), Some(o)) => slo.value(&o.summary),
            (Target::Latency(_), None) => f64::INFINITY,
            (Target::Goodput(g), Some(o)) => {
                crate::metrics::goodput(&o.completions, g.ttft_s, g.tpot_s).fraction
            }
            (Target::Goodput(_), None) => 0.0,
        }
    }

    /// Whether a seed-averaged figure meets the target.
    pub fn meets(&self, v: f64) -> bool {
        match self {
            Target::Latency(slo) => v <= slo.limit_s,
            Target::Goodput(g) => v >= g.min,
        }
    }

    /// One-line description, e.g. `mean(per_token_s) <= 0.3 s`.
    pub fn describe(&self) -> String {
        match self {
            Target::Latency(s) => format!("{}({}) <= {} s", s.stat, s.metric, s.limit_s),
            Target::Goodput(g) => format!(
                "goodput >= {} (TTFT <= {} s and TPOT <= {} s)",
                g.min, g.ttft_s, g.tpot_s
            ),
        }
    }
}

/// Where the true capacity lies relative to the rates probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bracket {
    /// A rate meeting the target and a higher one missing it were both probed: the capacity is
    /// between them.
    Closed,
    /// Every probe missed the target: the capacity is below the lowest rate probed.
    Below,
    /// Every probe met the target up to the highest rate allowed: the capacity is above it.
    Above,
}

impl Bracket {
    /// The `bracket` column of capacity.csv.
    pub fn as_str(self) -> &'static str {
        match self {
            Bracket::Closed => "closed",
            Bracket::Below => "below",
            Bracket::Above => "above",
        }
    }
}

/// What one seed's run at a probed rate gave, besides the figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunCheck {
    pub seed: u64,
    /// The run ended with an error (e.g. the engine's overload check).
    pub failed: bool,
    /// The run's stability (`None`: failed, stopped early, or too few requests to judge).
    pub stability: Option<Stability>,
    /// The run was ended (or skipped) once the probe's miss was certain ([`EarlyStop`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<StoppedEarly>,
    /// Requests it had completed when it was ended early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_requests: Option<u64>,
    /// Unstable on a trace whose arrivals span under [`SHORT_TRACE_JCTS`] mean JCTs: the verdict
    /// may be the ramp-up, not an overload ([`crate::metrics::stability::short_trace`]).
    ///
    /// [`SHORT_TRACE_JCTS`]: crate::metrics::stability::SHORT_TRACE_JCTS
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub short_trace: bool,
}

impl RunCheck {
    /// A run counts when it finished and is stable (or cannot be judged).
    pub fn counts(&self) -> bool {
        !self.failed && self.stability.is_none_or(|s| s.stable)
    }
}

/// One probed rate: the seed-averaged figure and each seed's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The figure averaged over seeds ([`Target::measure`]).
    pub value: f64,
    pub runs: Vec<RunCheck>,
    /// The first run that failed for a reason other than overload (e.g. a rate too low for the
    /// simulated clock): such a probe measured nothing, and `capacity` stops with this reason.
    #[serde(skip)]
    pub failure: Option<String>,
}

impl Probe {
    /// Whether the probe was cut short once its miss was certain: its figure is then a bound
    /// (a lower one for a latency, an upper one for goodput) that misses the target.
    pub fn stopped_early(&self) -> bool {
        self.runs.iter().any(|r| r.stopped_early.is_some())
    }

    /// Every run finished and is stable.
    pub fn stable(&self) -> bool {
        self.runs.iter().all(RunCheck::counts)
    }

    /// Mean over the runs that have one of the achieved completion rate (requests/s).
    pub fn achieved_rate_per_s(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.stability.map(|s| s.achieved_rate_per_s))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Why the probe fails `target`: `None` when it meets it, else `target` (the figure misses),
    /// `unstable` (the figure meets it but a run is unstable or failed) or `target+unstable`.
    pub fn miss_reason(&self, target: &Target) -> Option<&'static str> {
        match (target.meets(self.value), self.stable()) {
            (true, true) => None,
            (false, true) => Some("target"),
            (true, false) => Some("unstable"),
            (false, false) => Some("target+unstable"),
        }
    }
}

/// Result of a capacity search.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity<T = f64> {
    /// Highest rate found to meet the SLO (0 if even the lowest probed rate fails).
    pub rate_per_s: f64,
    /// Whether the search closed the bracket, or hit the lowest or highest rate it may probe.
    pub bracket: Bracket,
    /// The rate bounding the answer from the other side: the lowest rate found to miss the
    /// target ([`Bracket::Closed`]), the lowest rate probed ([`Bracket::Below`]: the capacity is
    /// under it) or the highest rate probed ([`Bracket::Above`]: the capacity is over it).
    pub limit_rate_per_s: f64,
    /// Rates probed, with what was measured at each, in probe order.
    pub probes: Vec<(f64, T)>,
}

/// How far the bracketing phase doubles or halves the start rate at most (2^20 ≈ 10^6 either
/// way): past that the target is unreachable or trivially met, and the search says so
/// ([`Bracket::Below`] / [`Bracket::Above`]) instead of probing absurd rates.
pub const MAX_BRACKET_STEPS: i32 = 20;

/// Bracket and bisect. `eval(rate)` returns what was measured at that rate (the figure, or a
/// [`Probe`]) and `meets` whether it satisfies the target (an overloaded run that fails must map
/// to a failing measurement). Rates stay within `start_rate · 2^±MAX_BRACKET_STEPS`. Stops when
/// the bracket is within `rel_precision`.
pub fn search<T>(
    start_rate: f64,
    meets: &dyn Fn(&T) -> bool,
    rel_precision: f64,
    max_probes: usize,
    eval: &mut dyn FnMut(f64) -> T,
) -> Capacity<T> {
    let mut probes = Vec::new();
    let mut probe = |r: f64, probes: &mut Vec<(f64, T)>| {
        let v = eval(r);
        let ok = meets(&v);
        probes.push((r, v));
        ok
    };
    let highest = start_rate * 2f64.powi(MAX_BRACKET_STEPS);
    let lowest = start_rate / 2f64.powi(MAX_BRACKET_STEPS);
    let (mut lo, mut hi);
    if probe(start_rate, &mut probes) {
        lo = start_rate;
        hi = start_rate * 2.0;
        loop {
            if hi > highest || probes.len() >= max_probes {
                return Capacity {
                    rate_per_s: lo,
                    bracket: Bracket::Above,
                    limit_rate_per_s: lo,
                    probes,
                };
            }
            if !probe(hi, &mut probes) {
                break;
            }
            lo = hi;
            hi *= 2.0;
        }
    } else {
        hi = start_rate;
        lo = start_rate / 2.0;
        loop {
            if lo < lowest || probes.len() >= max_probes {
                return Capacity {
                    rate_per_s: 0.0,
                    bracket: Bracket::Below,
                    limit_rate_per_s: hi,
                    probes,
                };
            }
            if probe(lo, &mut probes) {
                break;
            }
            hi = lo;
            lo /= 2.0;
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
        bracket: Bracket::Closed,
        limit_rate_per_s: hi,
        probes,
    }
}

/// The rate [`search`] probes after the verdicts `history` (`None`: it has finished). Pure
/// arithmetic: the search is replayed on the verdicts.
fn next_rate(
    start_rate: f64,
    rel_precision: f64,
    max_probes: usize,
    history: &[bool],
) -> Option<f64> {
    let mut seen = 0;
    let mut next = None;
    search(
        start_rate,
        &|v: &bool| *v,
        rel_precision,
        max_probes,
        &mut |r| {
            seen += 1;
            match history.get(seen - 1) {
                Some(&v) => v,
                None => {
                    next = next.or(Some(r));
                    false
                }
            }
        },
    );
    next
}

/// [`search`] that probes up to `width` rates at once: the next rate and, speculatively, the
/// rates the search would probe next after either verdict (breadth first). The search then
/// follows the verdicts as [`search`] does; the speculative probes off its path are dropped, so
/// the result (the probes on the path, in order) is the same for every `width`, provided `eval`
/// gives the same measurement for the same rate. `eval_batch` measures several rates (e.g. in
/// parallel); `on_probe` sees each probe of the path as it is taken.
pub fn search_speculative<T: Clone>(
    start_rate: f64,
    meets: &dyn Fn(&T) -> bool,
    rel_precision: f64,
    max_probes: usize,
    width: usize,
    eval_batch: &mut dyn FnMut(&[f64]) -> Vec<T>,
    on_probe: &mut dyn FnMut(f64, &T),
) -> Capacity<T> {
    let plan = |h: &[bool]| next_rate(start_rate, rel_precision, max_probes, h);
    let mut measured: Vec<(f64, T)> = Vec::new();
    let mut history: Vec<bool> = Vec::new();
    let lookup = |m: &[(f64, T)], r: f64| {
        m.iter()
            .find(|(x, _)| x.to_bits() == r.to_bits())
            .map(|p| p.1.clone())
    };
    while let Some(rate) = plan(&history) {
        if let Some(v) = lookup(&measured, rate) {
            on_probe(rate, &v);
            history.push(meets(&v));
            continue;
        }
        // Breadth first over the verdicts to come: the rates not measured yet.
        let mut rates = Vec::new();
        let mut level = vec![history.clone()];
        while rates.len() < width.max(1) && !level.is_empty() {
            let mut deeper = Vec::new();
            for h in level {
                let Some(r) = plan(&h) else { continue };
                if rates.len() < width.max(1)
                    && lookup(&measured, r).is_none()
                    && !rates.contains(&r)
                {
                    rates.push(r);
                }
                for v in [true, false] {
                    let mut g = h.clone();
                    g.push(v);
                    deeper.push(g);
                }
            }
            level = deeper;
        }
        let values = eval_batch(&rates);
        measured.extend(rates.into_iter().zip(values));
    }
    // Replay the path on the measurements: the same result `search` gives.
    search(start_rate, meets, rel_precision, max_probes, &mut |r| {
        lookup(&measured, r).expect("every rate on the path was measured")
    })
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
        let le1 = |v: &f64| *v <= 1.0;
        let c = search(0.5, &le1, 0.001, 60, &mut f);
        assert!((c.rate_per_s - 2.0).abs() < 0.003, "{}", c.rate_per_s);
        let c = search(10.0, &le1, 0.001, 60, &mut f);
        assert!((c.rate_per_s - 2.0).abs() < 0.003, "{}", c.rate_per_s);
    }

    #[test]
    fn speculative_search_gives_the_sequential_result_for_every_width() {
        let f = |r: f64| {
            if r < 3.0 {
                1.0 / (3.0 - r)
            } else {
                f64::INFINITY
            }
        };
        let le1 = |v: &f64| *v <= 1.0;
        for start in [0.5, 1.0, 10.0, 1e-3] {
            let seq = search(start, &le1, 0.01, 40, &mut |r| f(r));
            for width in [1, 2, 3, 7, 16] {
                let mut calls = 0;
                let mut path = Vec::new();
                let c = search_speculative(
                    start,
                    &le1,
                    0.01,
                    40,
                    width,
                    &mut |rs: &[f64]| {
                        calls += 1;
                        assert!(rs.len() <= width);
                        rs.iter().map(|&r| f(r)).collect()
                    },
                    &mut |r, _| path.push(r),
                );
                assert_eq!(c, seq, "start {start} width {width}");
                let rates: Vec<f64> = seq.probes.iter().map(|p| p.0).collect();
                assert_eq!(path, rates);
                if width >= 3 {
                    assert!(
                        calls < seq.probes.len(),
                        "{calls} batches for {}",
                        seq.probes.len()
                    );
                }
            }
        }
    }

    #[test]
    fn infeasible_everywhere_gives_zero() {
        let mut f = |_r: f64| 5.0;
        assert_eq!(
            search(1.0, &|v: &f64| *v <= 1.0, 0.01, 10, &mut f).rate_per_s,
            0.0
        );
    }

    #[test]
    fn an_open_bracket_is_reported_and_the_rates_stay_bounded() {
        // Never met: the capacity is below the lowest rate probed, which is start / 2^20.
        let c = search(1.0, &|v: &f64| *v <= 1.0, 0.01, 40, &mut |_r| 5.0);
        assert_eq!(c.bracket, Bracket::Below);
        assert_eq!(c.rate_per_s, 0.0);
        let lowest = c.probes.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        assert_eq!(c.limit_rate_per_s, lowest);
        assert!(lowest >= 2f64.powi(-MAX_BRACKET_STEPS), "{lowest}");
        // Always met: above the highest rate probed, at most start · 2^20.
        let c = search(1.0, &|v: &f64| *v <= 1.0, 0.01, 40, &mut |_r| 0.5);
        assert_eq!(c.bracket, Bracket::Above);
        let highest = c.probes.iter().map(|p| p.0).fold(0.0, f64::max);
        assert_eq!((c.rate_per_s, c.limit_rate_per_s), (highest, highest));
        assert!(highest <= 2f64.powi(MAX_BRACKET_STEPS), "{highest}");
        // A closed bracket names the rate that missed.
        let c = search(1.0, &|v: &f64| *v <= 1.0, 0.01, 40, &mut |r| r / 3.0);
        assert_eq!(c.bracket, Bracket::Closed);
        assert!(c.rate_per_s <= 3.0 && c.limit_rate_per_s > 3.0, "{c:?}");
    }

    fn check(seed: u64, stable: Option<bool>, achieved: f64) -> RunCheck {
        RunCheck {
            seed,
            failed: false,
            stopped_early: None,
            completed_requests: None,
            short_trace: false,
            stability: stable.map(|stable| Stability {
                offered_rate_per_s: 2.0,
                achieved_rate_per_s: achieved,
                queue_growth_per_s: 0.0,
                queue_growth_se_per_s: 0.0,
                stable,
                unstable_replica: None,
                tolerance: crate::metrics::stability::MAX_QUEUE_GROWTH_FRACTION,
                queue_window_s: 0.0,
            }),
        }
    }

    #[test]
    fn a_probe_counts_only_when_every_run_is_stable() {
        let t = Target::Latency(Slo::parse("per_token_s=0.3").unwrap());
        let probe = |value, runs| Probe {
            value,
            runs,
            failure: None,
        };
        // Met, both seeds stable: counted; achieved = (2.0 + 1.9) / 2 = 1.95.
        let p = probe(
            0.1,
            vec![check(0, Some(true), 2.0), check(1, Some(true), 1.9)],
        );
        assert_eq!(p.miss_reason(&t), None);
        assert_eq!(p.achieved_rate_per_s(), Some(1.95));
        // One seed unstable: the statistic is met, the probe is not.
        let p = probe(
            0.1,
            vec![check(0, Some(true), 2.0), check(1, Some(false), 1.5)],
        );
        assert_eq!(p.miss_reason(&t), Some("unstable"));
        assert_eq!(
            probe(0.5, p.runs.clone()).miss_reason(&t),
            Some("target+unstable")
        );
        // A run too short to judge counts; a failed run does not.
        let p = probe(0.5, vec![check(0, None, 0.0)]);
        assert_eq!(
            (p.miss_reason(&t), p.achieved_rate_per_s()),
            (Some("target"), None)
        );
        let failed = RunCheck {
            seed: 0,
            failed: true,
            stability: None,
            stopped_early: None,
            completed_requests: None,
            short_trace: false,
        };
        assert_eq!(probe(0.1, vec![failed]).miss_reason(&t), Some("unstable"));
        // The search stops at the last counted rate: stable up to 2 req/s, statistic always met.
        let c = search(
            1.0,
            &|p: &Probe| p.miss_reason(&t).is_none(),
            0.01,
            40,
            &mut |r| probe(0.1, vec![check(0, Some(r <= 2.0), r.min(2.0))]),
        );
        assert!((1.98..=2.0).contains(&c.rate_per_s), "{c:?}");
        assert_eq!(c.bracket, Bracket::Closed);
    }

    #[test]
    fn goodput_search_finds_where_the_fraction_drops_below_min() {
        // Goodput 1 − rate/4: at least 0.95 up to rate 0.2.
        let t = Target::Goodput(GoodputTarget {
            ttft_s: 1.0,
            tpot_s: 0.1,
            min: 0.95,
        });
        let mut f = |r: f64| (1.0 - r / 4.0).max(0.0);
        let c = search(1.0, &|v: &f64| t.meets(*v), 0.001, 60, &mut f);
        assert!((c.rate_per_s - 0.2).abs() < 0.001, "{}", c.rate_per_s);
    }

    #[test]
    fn goodput_target_parsing() {
        let g = GoodputTarget::parse("ttft_s=3.1,tpot_s=0.3", None).unwrap();
        assert_eq!((g.ttft_s, g.tpot_s, g.min), (3.1, 0.3, 0.95));
        let g = GoodputTarget::parse("min=0.9", Some((1.55, 0.15))).unwrap();
        assert_eq!((g.ttft_s, g.tpot_s, g.min), (1.55, 0.15, 0.9));
        let g = GoodputTarget::parse("tpot_s=0.6", Some((1.55, 0.15))).unwrap();
        assert_eq!((g.ttft_s, g.tpot_s), (1.55, 0.6));
        for bad in [
            "min=0.9",
            "ttft_s=1",
            "ttft_s=-1,tpot_s=1",
            "ttft_s=nan,tpot_s=1",
            "ttft_s=1,tpot_s=1,min=1.5",
            "ttft_s=1,tpot_s=1,min=0",
            "ttft_s=1,ttft_s=2,tpot_s=1",
            "ttft=1,tpot_s=1",
            "ttft_s",
        ] {
            let e = GoodputTarget::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains("--goodput"), "{bad}: {e}");
        }
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
