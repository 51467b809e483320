//! Whether a finished run kept up with its arrivals (`summary.json` `stability`, the
//! `offered_rate_per_s`, `achieved_rate_per_s`, `queue_growth_per_s` and `stable` columns of
//! `sweep.csv`, and the rule `servesim capacity` applies before counting a probed rate).
//!
//! A finite trace always ends, so an overloaded run still finishes and reports latencies; a
//! policy that serves short requests first (SRPT, MLFQ) can then meet a *mean* latency target at
//! rates far beyond what it sustains, by leaving the long requests to a drain tail after the
//! last arrival. The rule below tells such a run from a stable one, from the completions alone
//! (post hoc, deterministic):
//!
//! - **Throughput.** Over the middle 90 % of the requests (the k = ⌊N/20⌋ earliest and latest
//!   left out at each end; none when N < 20), from the arrival times a and finish times f, each
//!   sorted: `offered = (N − 2k − 1) / (a_(N−k) − a_(k+1))` requests/s, and `achieved = offered ×
//!   S / O`, where O is the least-squares slope of the cumulative output tokens of arrivals
//!   k+1 … N−k against their arrival times (the work offered per second) and S the same for
//!   completions k+1 … N−k against their finish times (the work served per second): the rate of
//!   requests of this mix the run really served. Slopes, not end-to-end spans: a span between
//!   the window's first and last completion moves with those two requests' JCTs (tens of
//!   seconds for a long ShareGPT output), which on a 400-request trace is 5–10 % of the span
//!   and made light-load runs fail at random; a regression over all the window's points does
//!   not depend on two of them. The run passes when `achieved ≥ (1 − tol) × offered`,
//!   `tol = 3/√N` within [1 %, 5 %] ([`tolerance`]: 5 % up to 3,600 requests, 1 % from 90,000). A stable run's completions follow its arrivals shifted by about
//!   one JCT, so both spans and both sums match; an overloaded one serves at its capacity.
//!   *Work, not requests:* a policy that serves short requests first completes more requests per
//!   second than its capacity in requests of the average size, leaving the long ones to the
//!   drain tail; `srpt-oracle` at 1.87 req/s (OPT-13B, ShareGPT, 2,000 requests, seed 0; 1.93
//!   offered in the middle window, 1.44 served over the whole run) completed 1.68 req/s in the
//!   middle window (87 %) but served only 78 % of the offered work. (When the rule was written,
//!   before the 4 ms iteration overhead and the swap timing changed the model, the same run
//!   completed 1.78 of 1.87 req/s, and would have passed counted in requests, against 85 % of
//!   the work.) Output tokens are the work proxy (one decode step each; the size SRPT and the
//!   length predictors rank by) — an assumption: prefill work is not weighted. *Trimming:* the
//!   last completion of a light-load run is set by the one or two longest requests (a ShareGPT
//!   output of 1,000 tokens takes tens of seconds even alone), not by the load; leaving 5 % out
//!   at each end keeps a finite trace's drain tail from failing a light-load run, while an
//!   overload moves the bulk of the finish times that the trimmed span measures. A trace much
//!   shorter than 20 JCTs can still fail spuriously; use more requests.
//! - **Queue trend.** The number of requests in the system (arrived, not finished) is sampled
//!   just after each arrival of the last half of the trace (arrivals ⌊N/2⌋+1 … N); its
//!   least-squares slope against time, `queue_growth_per_s`, must not exceed `tol × offered`
//!   (the same [`tolerance`]) by more than twice the slope's standard error
//!   (`queue_growth_se_per_s`, from the points' scatter about the fitted line). *The standard
//!   error:* on a short trace the slope is fitted over a handful of counts that scatter by a
//!   request or two about a stable level; 20 Poisson arrivals at 1 req/s with a 0.9 s JCT
//!   (nobody ever waits) failed 16 of 64 seeds on slopes up to 0.21 req/s against 0.045
//!   allowed; with two standard errors 3 still fail (none of 64 at 30, 50 or 100 requests,
//!   against 10, 3 and 0 without). Two, not three: a late overload's count is a hockey stick,
//!   which a line fits loosely (the test below with 20 late requests falling behind stands 2.9
//!   standard errors above the tolerance). A steady overload's count rises along the line, so
//!   its slope stands many standard errors clear; the error shrinks as N^-1.5, so long traces
//!   are judged nearly as before: of the shipped scenarios' 1,123 runs at 1,000 requests per
//!   sweep point, three near capacity changed to stable (growth 0.9, 1.0 and 1.4 standard
//!   errors above the bare tolerance; vllm at 5 req/s on Azure conversations, the same with
//!   512-token chunks, vllm on OPT-66B at 1 req/s).
//!   The queue grows at the arrival rate minus the completion
//!   rate, so this is the same bound applied to the end of the trace: it catches an overload
//!   that sets in late (memory filling up, a burst at the end) which the whole-run ratio averages
//!   away. It counts requests, not work: over half a short trace a work-weighted trend is noisy
//!   (one long request arriving near the end moves it: the 300-request golden vLLM run at
//!   1.40 req/s offered had a work trend of 0.10 req/s against 0.07 allowed, a count trend of
//!   0.036), and starvation, which counts miss, is what the work-weighted throughput catches.
//!
//! With equal output lengths the throughput check is a plain request count too.
//! When the window's completions all share one instant (a burst served in one batch), there is
//! no served slope: the achieved rate is the window's requests over the time from its first
//! arrival to that instant.
//!
//! A run is `stable` when it passes both, and, in a cluster, when every replica with at least
//! [`MIN_REPLICA_REQUESTS`] completions passes both over the requests routed to it: a slow
//! replica behind a round-robin router falls behind while the others keep up, and the
//! cluster-wide figures average it away (3 × H200 + 1 × A100 at 6 req/s: cluster queue growth
//! 0.088 req/s against 0.31 allowed, the A100 replica served 1.40 of its 1.53 req/s). With fewer than [`MIN_JUDGED_REQUESTS`] requests, or all arrivals
//! (after trimming) at one instant, there is no rate to compare: the run is not judged (`None`,
//! empty cells; `capacity` fails such a probe).
//!
//! The engine's early overload check (`[limits] overload_window_s`, `overload_min_queue`; see
//! `engine/overload.rs`) is a different, coarser tool: it aborts a run *while it runs* once a
//! replica has been saturated with arrivals ≥ 1.25 × completions (in requests or output tokens)
//! for three windows and holds ≥ 10⁴ requests, so that a grossly overloaded run does not spend
//! hours on a queue nobody reads.
//! Such a run ends with an error (empty metric cells, and a failed probe for `capacity`). Every
//! overload it lets finish (a finite trace whose queue stays under 10⁴, or an excess under 25 %)
//! is judged here.

use serde::Serialize;

use crate::engine::Completion;
use crate::vocab::time::{Ns, ns_to_s};

/// A run of up to 3,600 requests is stable only if it completes at least this fraction of its
/// offered rate…
pub const MIN_ACHIEVED_FRACTION: f64 = 0.95;
/// …and its queue grows over the last half of the trace by at most this fraction of the offered
/// rate (requests/s per request/s offered). Longer runs get a tighter bound ([`tolerance`]).
pub const MAX_QUEUE_GROWTH_FRACTION: f64 = 0.05;
/// Standard errors of the queue trend's slope its growth may exceed the tolerance by: a short
/// trace's number in the system scatters by a request or two around its level, and a slope
/// fitted over ten such points can show growth that is only that scatter.
pub const SE_ALLOWANCE: f64 = 2.0;
/// The tightest tolerance, for runs of 90,000 requests or more.
pub const MIN_TOLERANCE: f64 = 0.01;

/// The fraction of the offered rate a run of `requests` requests may fall short of, or grow its
/// queue by: `3/√N` within [1 %, 5 %]. The 5 % allows for what a short trace cannot measure
/// (the window's completions shift by one JCT, heavy-tailed lengths: the relative error of a
/// work-weighted rate over N requests is about √(1 + cv²)/√N, cv ≈ 1 for ShareGPT outputs, so
/// 3/√N is a 2σ bound); a long trace measures its rate better, and a flat 5 % let a run that
/// served 95.5 % of 10⁶ requests (sjf at 1.512 req/s, 45,000 queued at the last arrival) pass.
pub fn tolerance(requests: usize) -> f64 {
    (3.0 / (requests.max(1) as f64).sqrt()).clamp(MIN_TOLERANCE, MAX_QUEUE_GROWTH_FRACTION)
}
/// Requests left out at each end of the throughput spans: ⌊N / TRIM_DIVISOR⌋ (5 %).
pub const TRIM_DIVISOR: usize = 20;

/// Fewest requests a run is judged on. Below it the trimming keeps every request and the queue
/// trend is fitted on at most nine arrivals: three requests, the last two 1 ns apart, "grew
/// 10⁹ req/s". Such runs are not judged.
pub const MIN_JUDGED_REQUESTS: usize = TRIM_DIVISOR;

/// One line stating the rule (capacity's table and `--help`, capacity.csv's notes).
pub const RULE: &str = "stable = achieved >= (1 - tol) x offered (middle 90% of arrivals and of completions, weighted by output tokens) and the number in system, sampled at each arrival of the last half of the trace, grows by at most tol x offered per second plus twice that slope's standard error, tol = 3/sqrt(N) within [1%, 5%] for N requests; in a cluster, also over each replica's own requests (replicas with >= 200 completions)";

/// `summary.json` `stability`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stability {
    /// Arrival rate over the middle 90 % of the arrivals (requests/s).
    pub offered_rate_per_s: f64,
    /// `offered_rate_per_s` × served / offered work (output tokens per second) over the middle
    /// 90 % of the completions and of the arrivals: the rate of requests of this mix served.
    pub achieved_rate_per_s: f64,
    /// Least-squares slope of the number of requests in the system over the last half of the
    /// arrivals (requests/s; positive: growing).
    pub queue_growth_per_s: f64,
    /// The standard error of `queue_growth_per_s` (requests/s): the spread of a least-squares
    /// slope over the points' own scatter. Growth within two of it is not told from noise.
    pub queue_growth_se_per_s: f64,
    /// Both checks passed, for the whole run and for every replica judged on its own.
    pub stable: bool,
    /// The first replica that failed the rule on its own requests while the whole run passed
    /// (multi-replica runs; replicas with at least [`MIN_REPLICA_REQUESTS`] completions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstable_replica: Option<ReplicaStability>,
    /// The [`tolerance`] the checks applied (from the number of requests judged).
    #[serde(skip)]
    pub tolerance: f64,
}

/// One replica judged by the same rule on the requests routed to it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ReplicaStability {
    pub replica: u32,
    pub offered_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub queue_growth_per_s: f64,
    pub queue_growth_se_per_s: f64,
    #[serde(skip)]
    pub tolerance: f64,
}

/// Fewest completions a replica needs to be judged on its own: below this its slopes are too
/// noisy (the whole run is still judged).
pub const MIN_REPLICA_REQUESTS: usize = 200;

/// One request's time (arrival or finish) and output tokens, packed into 12 bytes: a run that
/// keeps no per-request rows still keeps two of these per request for this rule.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub struct WorkPoint {
    t: Ns,
    w: u32,
}

impl WorkPoint {
    pub fn new(t: Ns, w: u32) -> Self {
        WorkPoint { t, w }
    }
    fn key(self) -> (Ns, u32) {
        (self.t, self.w)
    }
    fn t(self) -> Ns {
        self.t
    }
}

impl Stability {
    /// The throughput check: achieved ≥ (1 − [`tolerance`]) × offered.
    fn serves_enough(&self) -> bool {
        self.achieved_rate_per_s >= (1.0 - self.tolerance) * self.offered_rate_per_s
    }

    /// The queue-trend check: growth ≤ [`tolerance`] × offered + 2 standard errors.
    fn queue_steady(&self) -> bool {
        self.queue_growth_per_s
            <= self.tolerance * self.offered_rate_per_s + SE_ALLOWANCE * self.queue_growth_se_per_s
    }

    /// The warning a finished run prints when it did not keep up with its arrivals (`None` when
    /// it did), naming the check(s) it failed: its latencies then grow with the trace's length.
    pub fn warning(&self) -> Option<String> {
        if self.stable {
            return None;
        }
        if let Some(r) = self.unstable_replica {
            let own = Stability {
                offered_rate_per_s: r.offered_rate_per_s,
                achieved_rate_per_s: r.achieved_rate_per_s,
                queue_growth_per_s: r.queue_growth_per_s,
                queue_growth_se_per_s: r.queue_growth_se_per_s,
                stable: false,
                unstable_replica: None,
                tolerance: r.tolerance,
            };
            return Some(format!(
                "replica {} did not keep up with the requests routed to it (unstable, though the cluster as a whole passed): {}, so its requests' latencies grow with the trace's length; route less to it, or lower the rate (summary.json \"stability\")",
                r.replica,
                own.failed_checks()
            ));
        }
        Some(format!(
            "the run did not keep up with its arrivals (unstable): {}, so its latencies grow with the trace's length; lower the rate, or find the highest stable one with `servesim capacity` (summary.json \"stability\")",
            self.failed_checks()
        ))
    }

    /// The checks that failed, in words.
    fn failed_checks(&self) -> String {
        let mut failed = Vec::new();
        if !self.serves_enough() {
            failed.push(format!(
                "it served {} req/s of this mix against {} offered",
                rate(self.achieved_rate_per_s),
                rate(self.offered_rate_per_s)
            ));
        }
        if !self.queue_steady() {
            let se = if self.queue_growth_se_per_s > 0.0 {
                format!(" ± {}", rate(self.queue_growth_se_per_s))
            } else {
                String::new()
            };
            failed.push(format!(
                "the number in the system grew {}{se} req/s over the last half of the trace (of {} offered)",
                rate(self.queue_growth_per_s),
                rate(self.offered_rate_per_s)
            ));
        }
        let mut text = failed.join(", and ");
        if self.tolerance < MAX_QUEUE_GROWTH_FRACTION {
            let pct = crate::error::num(self.tolerance * 100.0);
            text.push_str(&format!(
                " (more than the {pct} % shortfall a trace of this length allows)"
            ));
        }
        text
    }
}

/// A rate for a warning: three decimals in the usual range, else a short exponent form (a
/// 3-request trace spanning 10⁶ s offers 2e-6 req/s, not "0.000").
fn rate(x: f64) -> String {
    if x == 0.0 || (0.01..1e6).contains(&x.abs()) {
        format!("{x:.3}")
    } else {
        crate::error::num(x)
    }
}

/// A trace whose arrivals span fewer than this many mean JCTs is short for the rule: its middle
/// window's completions are still shifted by about one JCT against its arrivals, so it can fail
/// the throughput check without an overload (see the module docs).
pub const SHORT_TRACE_JCTS: f64 = 20.0;

/// [`Stability::warning`] for a run of `requests` requests with mean JCT `jct_mean_s`, with a
/// caveat when only the throughput check failed and the trace is short: then the verdict may
/// come from the trace's own drain. When the queue grew as well, the run did accumulate work
/// (and under an overload the JCT grows with the trace, so no trace would count as long).
pub fn run_warning(st: &Stability, requests: u64, jct_mean_s: Option<f64>) -> Option<String> {
    let w = st.warning()?;
    let span_s = requests as f64 / st.offered_rate_per_s;
    Some(match jct_mean_s {
        Some(jct) if judged_on_drain(st, requests, jct) => format!(
            "{w}. Caveat: the arrivals span about {} s, under {SHORT_TRACE_JCTS} mean JCTs ({} s each), and the queue did not grow: a trace this short is judged mostly on its own drain, so run more requests to confirm",
            crate::error::num(span_s),
            crate::error::num(jct)
        ),
        Some(jct) if short_trace(st, requests, jct) => format!(
            "{w}. Caveat: the arrivals span about {} s, under {SHORT_TRACE_JCTS} mean JCTs ({} s each): the number in the system may still have been rising to its steady level when they ended, which the rule cannot tell from an overload, so run more requests to confirm",
            crate::error::num(span_s),
            crate::error::num(jct)
        ),
        _ => w,
    })
}

/// Whether an unstable run failed only the throughput check on a trace whose arrivals span under
/// [`SHORT_TRACE_JCTS`] mean JCTs (`jct_mean_s`): its verdict may come from its own drain.
pub fn judged_on_drain(st: &Stability, requests: u64, jct_mean_s: f64) -> bool {
    st.unstable_replica.is_none() && st.queue_steady() && short_trace(st, requests, jct_mean_s)
}

/// Whether an unstable run's arrivals span under [`SHORT_TRACE_JCTS`] mean JCTs (`jct_mean_s`):
/// its last half may still be the ramp-up to a steady level (in a large cluster, or with long
/// requests), which looks like a growing queue; only a longer trace tells the two apart.
pub fn short_trace(st: &Stability, requests: u64, jct_mean_s: f64) -> bool {
    !st.stable && (requests as f64 / st.offered_rate_per_s) < SHORT_TRACE_JCTS * jct_mean_s
}

/// The stability of a run from its completions (any order); `None` when it cannot be judged.
pub fn stability(completions: &[Completion]) -> Option<Stability> {
    let mut points = RunPoints::default();
    for c in completions {
        points.add(c);
    }
    points.judge()
}

/// What the rule keeps of each completion: its arrival and finish [`WorkPoint`]s, per replica.
#[derive(Debug, Clone, Default)]
pub struct RunPoints {
    /// Per replica: (by arrival, by finish).
    per_replica: Vec<(Vec<WorkPoint>, Vec<WorkPoint>)>,
}

impl RunPoints {
    pub fn add(&mut self, c: &Completion) {
        let r = c.replica as usize;
        if self.per_replica.len() <= r {
            self.per_replica.resize_with(r + 1, Default::default);
        }
        let (a, f) = &mut self.per_replica[r];
        a.push(WorkPoint::new(c.arrival_ns, c.output_tokens));
        f.push(WorkPoint::new(c.finish_ns, c.output_tokens));
    }

    /// The run's verdict: the rule over all completions, and, when that passes in a
    /// multi-replica run, over each replica's own (the first that fails makes the run unstable:
    /// a replica falling behind in a cluster whose others keep up passes the cluster-wide rule).
    pub fn judge(self) -> Option<Stability> {
        let many = self.per_replica.len() > 1;
        let mut failing = None;
        let (mut all_a, mut all_f) = (Vec::new(), Vec::new());
        for (i, (mut a, mut f)) in self.per_replica.into_iter().enumerate() {
            if many && failing.is_none() && a.len() >= MIN_REPLICA_REQUESTS {
                failing = stability_sorted(&mut a, &mut f)
                    .filter(|st| !st.stable)
                    .map(|st| ReplicaStability {
                        replica: i as u32,
                        offered_rate_per_s: st.offered_rate_per_s,
                        achieved_rate_per_s: st.achieved_rate_per_s,
                        queue_growth_per_s: st.queue_growth_per_s,
                        queue_growth_se_per_s: st.queue_growth_se_per_s,
                        tolerance: st.tolerance,
                    });
            }
            if all_a.is_empty() {
                (all_a, all_f) = (a, f);
            } else {
                all_a.append(&mut a);
                all_f.append(&mut f);
            }
        }
        let mut st = stability_of(all_a, all_f)?;
        if st.stable && failing.is_some() {
            st.stable = false;
            st.unstable_replica = failing;
        }
        Some(st)
    }
}

/// [`stability`] from every completed request's (arrival, output tokens) and (finish, output
/// tokens), in any order (sorted here, in place).
pub fn stability_of(
    mut by_arrival: Vec<WorkPoint>,
    mut by_finish: Vec<WorkPoint>,
) -> Option<Stability> {
    stability_sorted(&mut by_arrival, &mut by_finish)
}

/// [`stability_of`] over slices (sorted here, in place).
fn stability_sorted(
    by_arrival: &mut [WorkPoint],
    by_finish: &mut [WorkPoint],
) -> Option<Stability> {
    // By time, then tokens (the order of the (time, f64 tokens) pairs this rule always used).
    by_arrival.sort_unstable_by_key(|p| p.key());
    by_finish.sort_unstable_by_key(|p| p.key());
    let n = by_arrival.len();
    if n < MIN_JUDGED_REQUESTS {
        return None;
    }
    let k = n / TRIM_DIVISOR;
    let (lo, hi) = (k, n - 1 - k);
    let arrival_span_ns = by_arrival[hi].t() - by_arrival[lo].t();
    if arrival_span_ns == 0 {
        return None;
    }
    // Cumulative work against time, over the window, by arrival and by finish; the achieved
    // rate scales the offered one by the ratio of their least-squares slopes.
    let offered_work_per_s = slope(|| cumulative(&by_arrival[lo..=hi]));
    let served_work_per_s = slope(|| cumulative(&by_finish[lo..=hi]));
    let offered = (hi - lo) as f64 / ns_to_s(arrival_span_ns);
    let achieved = if served_work_per_s > 0.0 || by_finish[hi].t() > by_finish[lo].t() {
        offered * served_work_per_s / offered_work_per_s
    } else {
        // The window's completions all at one instant (no served slope): its requests were
        // served between its first arrival and that instant (a burst batched together is not
        // served "as fast as it arrived").
        let served_span_ns = by_finish[hi].t().saturating_sub(by_arrival[lo].t());
        (hi - lo) as f64 / ns_to_s(served_span_ns.max(arrival_span_ns))
    };
    let (growth, growth_se) = in_system_slope(by_arrival, by_finish);
    let mut st = Stability {
        offered_rate_per_s: offered,
        achieved_rate_per_s: achieved,
        queue_growth_per_s: growth,
        queue_growth_se_per_s: growth_se,
        stable: false,
        unstable_replica: None,
        tolerance: tolerance(n),
    };
    st.stable = st.serves_enough() && st.queue_steady();
    Some(st)
}

/// The cumulative work of `v` against the time since its first point (s).
fn cumulative(v: &[WorkPoint]) -> impl Iterator<Item = (f64, f64)> + '_ {
    let t0 = v[0].t();
    let mut sum = 0.0;
    v.iter().map(move |x| {
        sum += f64::from(x.key().1);
        (ns_to_s(x.t() - t0), sum)
    })
}

/// Least-squares slope (requests/s) of the number of requests in the system just after each
/// of the last ⌈N/2⌉ arrivals (0-based ⌊N/2⌋ … N−1), from the sorted arrival and finish times,
/// and its standard error. A request finishing exactly at an arrival instant has left. (0, 0)
/// when those arrivals share one instant.
fn in_system_slope(arrivals: &[WorkPoint], finishes: &[WorkPoint]) -> (f64, f64) {
    let n = arrivals.len();
    let first = n / 2;
    let t0 = arrivals[first].t();
    let fit = fit_line(|| {
        let mut done = 0;
        arrivals.iter().enumerate().skip(first).map(move |(i, a)| {
            let a = a.t();
            while done < n && finishes[done].t() <= a {
                done += 1;
            }
            (ns_to_s(a - t0), (i + 1 - done) as f64)
        })
    });
    (fit.slope, fit.slope_se)
}

/// A least-squares line's slope and the slope's standard error.
struct LineFit {
    slope: f64,
    /// `√(Σ residual² / (m − 2) / Σ (x − x̄)²)`; 0 with fewer than three points or no x spread.
    slope_se: f64,
}

/// Least-squares slope of the `(x, y)` points `pts()` yields (each call yields them all
/// again, so none are stored); 0 when every x is equal.
fn slope<I: Iterator<Item = (f64, f64)>>(pts: impl Fn() -> I) -> f64 {
    fit_line(pts).slope
}

/// [`slope`] with its standard error.
fn fit_line<I: Iterator<Item = (f64, f64)>>(pts: impl Fn() -> I) -> LineFit {
    let m = pts().count() as f64;
    let mx = pts().map(|p| p.0).sum::<f64>() / m;
    let my = pts().map(|p| p.1).sum::<f64>() / m;
    let sxx: f64 = pts().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return LineFit {
            slope: 0.0,
            slope_se: 0.0,
        };
    }
    let slope = sxy / sxx;
    let slope_se = if m > 2.0 {
        let rss: f64 = pts()
            .map(|p| {
                let r = p.1 - my - slope * (p.0 - mx);
                r * r
            })
            .sum();
        (rss / (m - 2.0) / sxx).sqrt()
    } else {
        0.0
    };
    LineFit { slope, slope_se }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warning names only the check that failed: a negative queue trend is not called growth.
    #[test]
    fn the_warning_names_the_failed_checks() {
        let st = |achieved, growth| Stability {
            offered_rate_per_s: 2.0,
            achieved_rate_per_s: achieved,
            queue_growth_per_s: growth,
            queue_growth_se_per_s: 0.0,
            stable: false,
            unstable_replica: None,
            tolerance: MAX_QUEUE_GROWTH_FRACTION,
        };
        let w = st(1.0, -0.2).warning().unwrap();
        assert!(
            w.contains("it served 1.000 req/s of this mix against 2.000 offered"),
            "{w}"
        );
        assert!(!w.contains("grew"), "{w}");
        let w = st(2.0, 0.5).warning().unwrap();
        assert!(!w.contains("it served"), "{w}");
        assert!(
            w.contains("grew 0.500 req/s over the last half of the trace"),
            "{w}"
        );
        let w = st(1.0, 0.5).warning().unwrap();
        assert!(
            w.contains("it served") && w.contains(", and the number in the system grew"),
            "{w}"
        );
        assert!(
            Stability {
                stable: true,
                ..st(2.0, 0.0)
            }
            .warning()
            .is_none()
        );
        // 100 requests at 2 req/s span 50 s: short against a 10 s mean JCT, not against 1 s.
        let short = run_warning(&st(1.0, -0.2), 100, Some(10.0)).unwrap();
        assert!(
            short.contains("Caveat: the arrivals span about 50 s, under 20 mean JCTs (10 s each)"),
            "{short}"
        );
        assert_eq!(
            run_warning(&st(1.0, -0.2), 100, Some(1.0)),
            st(1.0, -0.2).warning()
        );
        assert_eq!(
            run_warning(&st(1.0, -0.2), 100, None),
            st(1.0, -0.2).warning()
        );
        // A queue that grew is no drain artefact, but on a short trace it may be the ramp-up (a
        // large cluster still filling: adversarial case 06, no caveat before): the caveat says so.
        let ramp = run_warning(&st(1.0, 0.5), 100, Some(10.0)).unwrap();
        assert!(ramp.starts_with(&st(1.0, 0.5).warning().unwrap()), "{ramp}");
        assert!(
            ramp.contains("under 20 mean JCTs (10 s each): the number in the system may still"),
            "{ramp}"
        );
        assert!(!judged_on_drain(&st(1.0, 0.5), 100, 10.0));
        assert!(short_trace(&st(1.0, 0.5), 100, 10.0));
        // A long trace keeps the plain verdict.
        assert_eq!(
            run_warning(&st(1.0, 0.5), 100, Some(1.0)),
            st(1.0, 0.5).warning()
        );
    }

    const S: Ns = 1_000_000_000;

    fn req(arrival_ns: Ns, finish_ns: Ns) -> Completion {
        Completion {
            id: 0,
            replica: 0,
            arrival_ns,
            input_tokens: 1,
            output_tokens: 1,
            first_scheduled_ns: arrival_ns,
            first_token_ns: finish_ns,
            finish_ns,
            preemptions: 0,
            swap_out_bytes: 0,
            swap_in_bytes: 0,
            swap_stall_ns: 0,
            recomputed_tokens: 0,
            predicted_output_tokens: 1,
            priority: 0.0,
            demotions: 0,
            promotions: 0,
            itl_max_ns: 0,
            itl_p99_ns: 0,
        }
    }

    /// 19 arrivals 1 ns apart and one at 1,000 s; the burst is served in two batches (1 s,
    /// 2 s). The trimmed window's completions share one instant: served over ≈ 2 s, not "as
    /// fast as the clock resolves" (was `stable`, achieved = offered = 10⁹ req/s).
    #[test]
    fn a_burst_completing_at_one_instant_is_not_served_at_its_arrival_rate() {
        let mut c: Vec<_> = (0..19)
            .map(|i| req(i, if i == 0 { S } else { 2 * S }))
            .collect();
        c.push(req(1000 * S, 1001 * S));
        let s = stability(&c).unwrap();
        assert!((s.offered_rate_per_s - 1e9).abs() < 1.0, "{s:?}");
        assert!((s.achieved_rate_per_s - 17.0 / 2.0).abs() < 1e-6, "{s:?}");
        assert!(!s.stable);
    }

    #[test]
    fn a_server_keeping_up_is_stable() {
        // Arrivals at 0, 1, …, 19 s, each served in 0.5 s. N = 20: k = 1 trimmed at each end.
        // offered = 17 gaps / (18 − 1) s = 1; achieved = 1 × (finishes 1.5 … 18.5 s: slope 1).
        // Number in system just after each arrival: 1 → slope 0.
        let c: Vec<_> = (0..20).map(|i| req(i * S, i * S + S / 2)).collect();
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert_eq!(s.achieved_rate_per_s, 1.0);
        assert_eq!(s.queue_growth_per_s, 0.0);
        assert!(s.stable);
    }

    #[test]
    fn a_server_at_half_the_arrival_rate_is_not() {
        // Arrivals at 0, 1, …, 19 s; one server taking 2 s each, in order: finishes 2, 4, …, 40.
        // Trimmed (k = 1): offered = 17 / 17 = 1 req/s; finishes 4 … 36 s, 2 s apart →
        // achieved = 0.5 < 0.95. Last half: arrivals 10 … 19 at t = i s, in system after each
        // i + 1 − ⌊i/2⌋ = 6, 7, 7, 8, 8, 9, 9, 10, 10, 11: least-squares slope 42.5 / 82.5 =
        // 17/33 req/s > 0.05 × 1.
        let c: Vec<_> = (0..20).map(|i| req(i * S, 2 * (i + 1) * S)).collect();
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert!((s.achieved_rate_per_s - 0.5).abs() < 1e-12, "{s:?}");
        assert!((s.queue_growth_per_s - 17.0 / 33.0).abs() < 1e-12, "{s:?}");
        assert!(!s.stable);
    }

    #[test]
    fn a_long_last_request_does_not_make_a_light_run_unstable() {
        // 40 arrivals 1 s apart (0 … 39 s), each done after 0.2 s, except the last, which takes
        // 30 s (a long output at light load). Untrimmed, the completions would span
        // 0.2 … 69 s: 39 / 68.8 = 0.567 req/s against 1 offered. Trimmed (k = 40/20 = 2):
        // arrivals 2 … 37 s → offered = 35 / 35 = 1; finishes 2.2 … 37.2 s → achieved = 1.
        // In system after each of the last 20 arrivals: 1 except after the 40th arrival, where
        // request 40 is the only one present: 1 → slope 0.
        let mut c: Vec<_> = (0..40).map(|i| req(i * S, i * S + S / 5)).collect();
        c[39].finish_ns = 69 * S;
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert!((s.achieved_rate_per_s - 1.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.queue_growth_per_s, 0.0);
        assert!(s.stable);
    }

    #[test]
    fn an_overload_of_the_whole_second_half_fails_both_checks() {
        // 100 arrivals 1 s apart (0 … 99 s). The first 50 are served in 0.5 s; the last 50
        // all finish together at 105 s. k = 100/20 = 5: offered = 89 / (94 − 5) = 1 req/s; the
        // cumulative arrived work over ranks 5 … 94 rises 1 per second (slope 1); the completed
        // work is 1 … 45 at 5.5 … 49.5 s, then 46 … 90 all at 105 s: its least-squares slope
        // (exact rational arithmetic) is 45898/76123 = 0.603 → achieved 0.603 < 0.95. Trend: after arrival
        // i (i = 51 … 100, at t = i − 1 s) the system holds i − 50 requests: slope 1.
        let c: Vec<_> = (0..100u64)
            .map(|i| req(i * S, if i < 50 { i * S + S / 2 } else { 105 * S }))
            .collect();
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert!(
            (s.achieved_rate_per_s - 45898.0 / 76123.0).abs() < 1e-12,
            "{s:?}"
        );
        assert!((s.queue_growth_per_s - 1.0).abs() < 1e-12, "{s:?}");
        assert!(!s.stable);
    }

    #[test]
    fn a_queue_growing_only_at_the_end_is_caught_by_the_trend() {
        // 100 arrivals 1 s apart (0 … 99 s). Requests 0 … 79 are served in 0.5 s; requests
        // 80 … 99 finish at 80 + 1.2 (i − 79) s (81.2, 82.4, … 104 s): the server falls behind
        // over the last 20 s only. Throughput: k = 5; arrived work slope 1; completed work
        // 1 … 75 at 5.5 … 79.5 s then 76 … 90 at 81.2 … 98 s: least-squares slope (exact
        // rational arithmetic) 354170/361619 = 0.979 ≥ 0.95 × 1: passes. Number in system after arrivals
        // 51 … 100 (t = 50 … 99 s): 1 (×31), 2 (×6), 3 (×6), 4 (×6), 5. Least squares over
        // x = 0 … 49: Σ(x − x̄)(y − ȳ) = 710, Σ(x − x̄)² = 20825/2, slope = 284/4165 = 0.0682
        // req/s > 0.05 × 1: unstable.
        let c: Vec<_> = (0..100u64)
            .map(|i| {
                let f = if i < 80 {
                    i * S + S / 2
                } else {
                    80 * S + 12 * (i - 79) * S / 10
                };
                req(i * S, f)
            })
            .collect();
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert!(
            (s.achieved_rate_per_s - 354170.0 / 361619.0).abs() < 1e-12,
            "{s:?}"
        );
        assert!(s.achieved_rate_per_s >= MIN_ACHIEVED_FRACTION * s.offered_rate_per_s);
        assert!(
            (s.queue_growth_per_s - 284.0 / 4165.0).abs() < 1e-12,
            "{s:?}"
        );
        // Residuals about the line: Σ r² = Σ(y − ȳ)² − slope · Σ(x − x̄)(y − ȳ) = 68 −
        // 284/4165 · 710 over 48 degrees of freedom and Σ(x − x̄)² = 20825/2: se = 0.006260,
        // so the growth stands (0.0682 − 0.05) / 0.00626 = 2.9 standard errors above the bound.
        let se = ((68.0_f64 - 284.0 / 4165.0 * 710.0) / 48.0 / (20825.0 / 2.0)).sqrt();
        assert!((s.queue_growth_se_per_s - se).abs() < 1e-12, "{s:?}");
        assert!(s.queue_growth_per_s > 0.05 + SE_ALLOWANCE * se);
        assert!(!s.stable);
    }

    #[test]
    fn a_starved_long_request_counts_by_its_work() {
        // What SRPT does under overload: 40 arrivals 1 s apart (0 … 39 s), each of 1 output
        // token and served in 0.5 s, except request 20 (30 tokens), left to the end: it finishes
        // at 41 s. k = 2. Offered: arrival ranks 2 … 37 span 35 s → 35 gaps / 35 s = 1 req/s;
        // cumulative arrived work 1, 2, … with a 30-token step at 20 s: least-squares slope
        // 2861/1295 tokens/s. Served: finish ranks 2 … 37 are requests 2 … 38 less 20 (one token
        // each, 2.5 … 38.5 s, one gap of 2 s at request 20): slope 71/74 tokens/s. Counted in
        // requests the run would pass (≈ 0.97 req/s ≥ 0.95); weighted by work it served
        // achieved = 1 × (71/74) / (2861/1295) = 2485/5722 = 0.434 req/s of this mix: unstable.
        // Trend: in system after arrivals 21 … 40 (t = 20 … 39 s): 1, then 2 (the starved one
        // and the newcomer) ×19; slope = Σ(x − x̄)(y − ȳ) / Σ(x − x̄)² = (19/2) / 665 = 1/70.
        let mut c: Vec<_> = (0..40u64).map(|i| req(i * S, i * S + S / 2)).collect();
        c[20].output_tokens = 30;
        c[20].finish_ns = 41 * S;
        let s = stability(&c).unwrap();
        assert_eq!(s.offered_rate_per_s, 1.0);
        assert!(
            (s.achieved_rate_per_s - 2485.0 / 5722.0).abs() < 1e-12,
            "{s:?}"
        );
        assert!((s.queue_growth_per_s - 1.0 / 70.0).abs() < 1e-12, "{s:?}");
        assert!(!s.stable);
    }

    #[test]
    fn too_few_requests_or_one_arrival_instant_are_not_judged() {
        assert_eq!(stability(&[]), None);
        assert_eq!(stability(&[req(0, S)]), None);
        assert_eq!(stability(&[req(S, 2 * S), req(S, 3 * S)]), None);
        let same_instant: Vec<_> = (0..40).map(|i| req(S, (2 + i) * S)).collect();
        assert_eq!(stability(&same_instant), None);
        // Three requests, the last two 1 ns apart: no verdict (was "grew 10⁹ req/s").
        let three = [
            req(0, S),
            req(1000 * S, 1001 * S),
            req(1000 * S + 1, 1002 * S),
        ];
        assert_eq!(stability(&three), None);
        // One a second, each served in 0.5 s: judged (stable) from 20 requests on.
        let steady = |n: u64| -> Vec<_> { (0..n).map(|i| req(i * S, i * S + S / 2)).collect() };
        assert_eq!(stability(&steady(MIN_JUDGED_REQUESTS as u64 - 1)), None);
        assert!(
            stability(&steady(MIN_JUDGED_REQUESTS as u64))
                .unwrap()
                .stable
        );
    }

    /// Two replicas, 300 requests each at 1 req/s: replica 0 serves each in 0.5 s; replica 1
    /// serves at 0.93× its arrival rate (its queue grows). The whole run passes (it serves about
    /// 0.965 of what arrives), replica 1 does not, and the run is
    /// unstable naming it. With 150 requests per replica (under the minimum) no replica is
    /// judged, and one replica alone is judged as the whole run only.
    #[test]
    fn a_replica_falling_behind_makes_a_passing_cluster_unstable() {
        let cluster = |n: u64| -> Vec<Completion> {
            let mut c = Vec::new();
            for i in 0..n {
                c.push(req(i * S, i * S + S / 2));
                // Served one after another, 1.075 s each: finish of the i-th = (i + 1) × 1.075 s.
                let mut r = req(i * S + S / 3, (i + 1) * (S + 3 * S / 40));
                r.replica = 1;
                c.push(r);
            }
            c
        };
        let whole = |c: &[Completion]| {
            let mut all = c.to_vec();
            for r in &mut all {
                r.replica = 0;
            }
            stability(&all).unwrap()
        };
        let c = cluster(300);
        let s = stability(&c).unwrap();
        assert!(whole(&c).stable, "{:?}", whole(&c));
        assert!(!s.stable);
        let r = s.unstable_replica.unwrap();
        assert_eq!(r.replica, 1);
        assert!(r.achieved_rate_per_s < 0.95 * r.offered_rate_per_s, "{r:?}");
        // The cluster-wide figures are those of the whole run.
        assert_eq!(
            (s.offered_rate_per_s, s.queue_growth_per_s),
            (whole(&c).offered_rate_per_s, whole(&c).queue_growth_per_s)
        );
        let w = s.warning().unwrap();
        assert!(
            w.starts_with("replica 1 did not keep up with the requests routed to it"),
            "{w}"
        );
        assert!(!judged_on_drain(&s, 600, 1.0));
        let c = cluster(150);
        assert_eq!(stability(&c).unwrap(), whole(&c));
    }

    /// A server 3 % slower than its arrivals passes on a short trace (within the 5 % a short
    /// trace cannot resolve) and fails on a long one, whose tolerance is tighter.
    #[test]
    fn a_long_trace_is_judged_more_tightly() {
        assert_eq!(tolerance(100), 0.05);
        assert_eq!(tolerance(3600), 0.05);
        assert_eq!(tolerance(10_000), 0.03);
        assert_eq!(tolerance(90_000), 0.01);
        assert_eq!(tolerance(1_000_000), 0.01);
        // Arrivals every second, served one after another in 1.03 s each.
        let run = |n: u64| -> Vec<Completion> {
            (0..n)
                .map(|i| req(i * S, (i + 1) * (S + 3 * S / 100)))
                .collect()
        };
        let short = stability(&run(1000)).unwrap();
        assert!(short.stable, "{short:?}");
        let long = stability(&run(40_000)).unwrap();
        assert!(!long.stable, "{long:?}");
        let w = long.warning().unwrap();
        assert!(
            w.contains("(more than the 1.5 % shortfall a trace of this length allows)"),
            "{w}"
        );
    }

    /// Rates outside the usual range keep their figures (a 3-request trace spanning 10⁶ s).
    #[test]
    fn tiny_and_huge_rates_are_printed_with_their_figures() {
        assert_eq!(rate(5.0), "5.000");
        assert_eq!(rate(-0.2), "-0.200");
        assert_eq!(rate(0.0), "0.000");
        assert_ne!(rate(2e-6), "0.000");
        assert!(rate(2e-6).contains('2'), "{}", rate(2e-6));
        assert!(!rate(1e9).contains(".000"), "{}", rate(1e9));
    }
}
