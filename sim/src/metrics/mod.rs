//! Per-request records, summaries and the stdout table. Pure computation; writers are in
//! [`crate::output`].

use serde::Serialize;

pub mod sketch;
pub mod stability;
pub mod streaming;

use crate::engine::{Completion, Observer, RunStats};
use crate::trace::stats::quantile;
use crate::vocab::sketch::GapSketch;
use crate::vocab::time::ns_to_s;

/// Collects completions (compact, 128 bytes each), or, with `streamed` set, folds each into
/// streaming statistics and keeps no row.
#[derive(Default)]
pub struct Collector {
    pub completions: Vec<Completion>,
    pub streamed: Option<streaming::Streamed>,
}

impl Observer for Collector {
    fn on_completion(&mut self, c: &Completion) {
        match &mut self.streamed {
            Some(s) => s.add(c),
            None => self.completions.push(*c),
        }
    }
}

/// Derived per-request metrics (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestMetrics {
    pub jct_s: f64,
    pub ttft_s: f64,
    /// (finish − first token) / (output − 1); `None` for one-token outputs.
    pub tpot_s: Option<f64>,
    pub queue_s: f64,
    /// FastServe's per-token latency: jct / output tokens.
    pub per_token_s: f64,
    /// The longest gap between consecutive output tokens; `None` for one-token outputs.
    pub itl_max_s: Option<f64>,
    /// The exact nearest-rank p99 of those gaps; `None` for one-token outputs.
    pub itl_p99_s: Option<f64>,
}

pub fn request_metrics(c: &Completion) -> RequestMetrics {
    let jct_s = ns_to_s(c.finish_ns - c.arrival_ns);
    RequestMetrics {
        jct_s,
        ttft_s: ns_to_s(c.first_token_ns - c.arrival_ns),
        tpot_s: (c.output_tokens > 1)
            .then(|| ns_to_s(c.finish_ns - c.first_token_ns) / (c.output_tokens - 1) as f64),
        queue_s: ns_to_s(c.first_scheduled_ns - c.arrival_ns),
        per_token_s: jct_s / c.output_tokens as f64,
        itl_max_s: (c.output_tokens > 1).then(|| ns_to_s(c.itl_max_ns)),
        itl_p99_s: (c.output_tokens > 1).then(|| ns_to_s(c.itl_p99_ns)),
    }
}

/// Fraction of requests meeting both latency targets (FastServe Fig. 13's goodput).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Goodput {
    /// The targets: TTFT ≤ `ttft_s` and TPOT ≤ `tpot_s`.
    pub ttft_s: f64,
    pub tpot_s: f64,
    /// Requests that met both (one-token requests: TTFT only).
    pub met: u64,
    pub requests: u64,
    /// `met / requests` (0 when there are no requests).
    pub fraction: f64,
}

/// Whether one request meets the targets. TPOT follows vLLM's benchmark convention
/// ((finish − first token) / (output tokens − 1)); a request with one output token has no TPOT
/// and is judged on TTFT alone. Both bounds are inclusive.
pub fn meets_slo(m: &RequestMetrics, ttft_s: f64, tpot_s: f64) -> bool {
    m.ttft_s <= ttft_s && m.tpot_s.is_none_or(|t| t <= tpot_s)
}

/// Goodput of a run's completions against the targets.
pub fn goodput(completions: &[Completion], ttft_s: f64, tpot_s: f64) -> Goodput {
    let met = completions
        .iter()
        .filter(|c| meets_slo(&request_metrics(c), ttft_s, tpot_s))
        .count() as u64;
    let requests = completions.len() as u64;
    Goodput {
        ttft_s,
        tpot_s,
        met,
        requests,
        fraction: if requests > 0 {
            met as f64 / requests as f64
        } else {
            0.0
        },
    }
}

/// Mean and percentiles of one metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dist {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    /// The distribution of the gaps in `sketch` (ns), in seconds: count, mean and max exact,
    /// the percentiles the sketch's nearest-rank estimates (within its relative accuracy
    /// [`crate::vocab::sketch::ALPHA`]); `None` when empty.
    pub fn of_sketch(sketch: &GapSketch) -> Option<Dist> {
        let q = |p: f64| sketch.quantile_ns(p).map_or(0.0, |x| x / 1e9);
        Some(Dist {
            count: sketch.count(),
            mean: sketch.mean_ns()? / 1e9,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: ns_to_s(sketch.max_ns()?),
        })
    }

    pub fn of(mut v: Vec<f64>) -> Option<Dist> {
        if v.is_empty() {
            return None;
        }
        // Equal under `total_cmp` means the same bits: an unstable sort gives the same sequence.
        v.sort_unstable_by(f64::total_cmp);
        Some(Dist {
            count: v.len() as u64,
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: quantile(&v, 0.50),
            p90: quantile(&v, 0.90),
            p95: quantile(&v, 0.95),
            p99: quantile(&v, 0.99),
            max: *v.last().expect("non-empty"),
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaSummary {
    pub requests: u64,
    pub iterations: u64,
    pub busy_fraction: f64,
    pub mean_batch_size: f64,
    pub kv_capacity_blocks: u32,
    pub peak_kv_blocks: u32,
    /// Time-averaged GPU KV blocks in use over the makespan.
    pub mean_kv_blocks: f64,
    pub host_capacity_blocks: u32,
    pub peak_host_blocks: u32,
    pub mean_host_blocks: f64,
    pub preemptions: u64,
    pub swap_outs: u64,
    pub swap_ins: u64,
    /// Fraction of the makespan the copy engine was busy, GPU→host and host→GPU.
    pub d2h_busy_fraction: f64,
    pub h2d_busy_fraction: f64,
    /// Multi-level queue policies (`mlfq`, `skip-join-mlfq`, `fcfs-swap`): per level, how many
    /// requests joined it on arrival, were demoted into it, and were promoted out of it by the
    /// starvation rule. Absent for every other policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlfq_levels: Option<Vec<crate::policy::LevelCounts>>,
}

/// `summary.json`. Deterministic: no wall-clock figures (those go to `timing.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub scenario: String,
    pub policy: String,
    pub seed: u64,
    pub requests: u64,
    pub makespan_s: f64,
    pub iterations: u64,
    pub events: u64,
    pub preemptions: u64,
    pub throughput_requests_per_s: f64,
    pub throughput_output_tokens_per_s: f64,
    /// How the percentiles of `jct_s` … `queue_s` were computed: absent when exact (from every
    /// request's row), `"sketch(alpha=0.01)"` when the run kept no rows (`--no-requests-csv`):
    /// within 1 % relative error of the exact ones (`metrics::sketch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<String>,
    pub jct_s: Option<Dist>,
    pub ttft_s: Option<Dist>,
    pub tpot_s: Option<Dist>,
    /// Inter-token latency: every gap between consecutive output tokens of every request, pooled
    /// (vLLM `benchmark_serving`'s `itl`); percentiles from a sketch with 1 % relative accuracy.
    pub itl_s: Option<Dist>,
    pub per_token_latency_s: Option<Dist>,
    pub queue_s: Option<Dist>,
    pub replicas: Vec<ReplicaSummary>,
    /// Queries the profile cost / swap models answered outside their measured grid (present when
    /// a profile model is in use; set by the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_extrapolations: Option<crate::profile::ExtrapolationReport>,
    /// Goodput against the scenario's `[slo]` targets (present only when it has `[slo]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
    /// Whether the run kept up with its arrivals ([`stability::stability`]; `null` with fewer
    /// than [`stability::MIN_JUDGED_REQUESTS`] requests or one arrival instant).
    pub stability: Option<stability::Stability>,
    /// What makes the scenario doubtful though valid (e.g. a `kv_capacity_blocks` override the
    /// GPU memory cannot hold); absent when there is nothing to say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Summary {
    /// The warning of a run that did not keep up, with its short-trace caveat
    /// ([`stability::run_warning`]); `None` for a stable or unjudged run.
    pub fn stability_warning(&self) -> Option<String> {
        let st = self.stability.as_ref()?;
        stability::run_warning(st, self.requests, self.jct_s.as_ref().map(|d| d.mean))
    }

    /// The warning of a run whose requests were preempted at least
    /// [`THRASH_PREEMPTIONS_PER_REQUEST`] times each on average (`None` below that, or with no
    /// request): memory was over-committed and the policy kept evicting KV it then recomputed or
    /// copied back. Such a run's events grow faster than its requests (with the square of a
    /// burst's size under `mlfq`'s `batch_memory = "evict"` and recompute), so it says so rather
    /// than leaving a slow run unexplained. The stability check cannot: a burst (one arrival
    /// instant) is not judged.
    pub fn thrash_warning(&self) -> Option<String> {
        if self.requests == 0 {
            return None;
        }
        let per_request = self.preemptions as f64 / self.requests as f64;
        (per_request >= THRASH_PREEMPTIONS_PER_REQUEST).then(|| {
            format!(
                "requests were preempted {per_request:.0} times each on average ({} preemptions for {} requests): memory is over-committed and the policy keeps throwing away (or copying out) KV that it needs again, so most of the run's work is redone; such runs slow down faster than their request counts grow (summary.json \"preemptions\"); give the replicas more KV memory or admit fewer requests at once",
                self.preemptions, self.requests
            )
        })
    }

    /// Whether the run is unstable on arrivals spanning under
    /// [`stability::SHORT_TRACE_JCTS`] mean JCTs ([`stability::short_trace`]).
    pub fn short_trace(&self) -> bool {
        match (&self.stability, &self.jct_s) {
            (Some(st), Some(jct)) => stability::short_trace(st, self.requests, jct.mean),
            _ => false,
        }
    }

    /// Whether the run was judged unstable mostly on its own drain
    /// ([`stability::judged_on_drain`]).
    pub fn judged_on_drain(&self) -> bool {
        match (&self.stability, &self.jct_s) {
            (Some(st), Some(jct)) => stability::judged_on_drain(st, self.requests, jct.mean),
            _ => false,
        }
    }
}

/// Preemptions per request from which a run warns that its policy thrashes
/// ([`Summary::thrash_warning`]). Healthy runs preempt a request a few times at most; the `mlfq`
/// evict-and-recompute bursts that thrash preempt it 100 times and more.
pub const THRASH_PREEMPTIONS_PER_REQUEST: f64 = 20.0;

pub fn summarize(
    scenario: &str,
    policy: &str,
    seed: u64,
    completions: &[Completion],
    stats: &RunStats,
) -> Summary {
    let ms: Vec<RequestMetrics> = completions.iter().map(request_metrics).collect();
    let col = |f: &dyn Fn(&RequestMetrics) -> Option<f64>| {
        Dist::of(ms.iter().filter_map(f).collect::<Vec<f64>>())
    };
    let out_tokens: u64 = completions.iter().map(|c| c.output_tokens as u64).sum();
    let mut s = base_summary(
        scenario,
        policy,
        seed,
        stats,
        completions.len() as u64,
        out_tokens,
    );
    s.jct_s = col(&|m| Some(m.jct_s));
    s.ttft_s = col(&|m| Some(m.ttft_s));
    s.tpot_s = col(&|m| m.tpot_s);
    s.per_token_latency_s = col(&|m| Some(m.per_token_s));
    s.queue_s = col(&|m| Some(m.queue_s));
    s.stability = stability::stability(completions);
    s
}

/// [`summarize`] from streaming statistics (a run that kept no rows): percentiles from the
/// sketches (`percentiles` says so), goodput when `st` has `[slo]` targets.
pub fn summarize_streamed(
    scenario: &str,
    policy: &str,
    seed: u64,
    st: &mut streaming::Streamed,
    stats: &RunStats,
) -> Summary {
    let mut s = base_summary(scenario, policy, seed, stats, st.requests, st.output_tokens);
    s.jct_s = Dist::of_values(&st.jct_s);
    s.ttft_s = Dist::of_values(&st.ttft_s);
    s.tpot_s = Dist::of_values(&st.tpot_s);
    s.per_token_latency_s = Dist::of_values(&st.per_token_s);
    s.queue_s = Dist::of_values(&st.queue_s);
    s.goodput = st.goodput();
    s.stability = st.take_stability();
    s.percentiles = Some(sketch::describe());
    s
}

/// The summary without the per-request distributions and the stability verdict.
fn base_summary(
    scenario: &str,
    policy: &str,
    seed: u64,
    stats: &RunStats,
    requests: u64,
    out_tokens: u64,
) -> Summary {
    let span_s = ns_to_s(stats.makespan_ns.saturating_sub(stats.first_arrival_ns));
    let rate = |x: f64| if span_s > 0.0 { x / span_s } else { 0.0 };
    let per_ns = |x: u128| {
        if stats.makespan_ns > 0 {
            x as f64 / stats.makespan_ns as f64
        } else {
            0.0
        }
    };
    Summary {
        scenario: scenario.to_string(),
        policy: policy.to_string(),
        seed,
        requests,
        makespan_s: ns_to_s(stats.makespan_ns),
        iterations: stats.iterations,
        events: stats.events,
        preemptions: stats.replicas.iter().map(|r| r.preemptions).sum(),
        throughput_requests_per_s: rate(requests as f64),
        throughput_output_tokens_per_s: rate(out_tokens as f64),
        percentiles: None,
        jct_s: None,
        ttft_s: None,
        tpot_s: None,
        itl_s: Dist::of_sketch(&stats.itl),
        per_token_latency_s: None,
        queue_s: None,
        replicas: stats
            .replicas
            .iter()
            .map(|r| ReplicaSummary {
                requests: r.requests,
                iterations: r.iterations,
                busy_fraction: if stats.makespan_ns > 0 {
                    r.busy_ns as f64 / stats.makespan_ns as f64
                } else {
                    0.0
                },
                mean_batch_size: if r.iterations > 0 {
                    r.batch_requests_sum as f64 / r.iterations as f64
                } else {
                    0.0
                },
                kv_capacity_blocks: r.kv_capacity_blocks,
                peak_kv_blocks: r.peak_kv_blocks,
                mean_kv_blocks: per_ns(r.kv_block_ns),
                host_capacity_blocks: r.host_capacity_blocks,
                peak_host_blocks: r.peak_host_blocks,
                mean_host_blocks: per_ns(r.host_block_ns),
                preemptions: r.preemptions,
                swap_outs: r.swap_outs,
                swap_ins: r.swap_ins,
                d2h_busy_fraction: per_ns(r.d2h_busy_ns as u128),
                h2d_busy_fraction: per_ns(r.h2d_busy_ns as u128),
                mlfq_levels: r.mlfq_levels.clone(),
            })
            .collect(),
        profile_extrapolations: None,
        goodput: None,
        stability: None,
        warnings: Vec::new(),
    }
}

/// The short table printed after a run.
pub fn table(s: &Summary) -> String {
    let mut out = format!(
        "scenario {}  policy {}  seed {}  requests {}  makespan {:.2} s  iterations {}  preemptions {}\n",
        s.scenario, s.policy, s.seed, s.requests, s.makespan_s, s.iterations, s.preemptions
    );
    out += &format!(
        "throughput {:.3} req/s, {:.1} output tok/s\n",
        s.throughput_requests_per_s, s.throughput_output_tokens_per_s
    );
    if let Some(g) = &s.goodput {
        out += &format!(
            "goodput {:.4} ({} of {} requests with TTFT <= {} s and TPOT <= {} s)\n",
            g.fraction, g.met, g.requests, g.ttft_s, g.tpot_s
        );
    }
    out += &format!(
        "{:<22}{:>11}{:>11}{:>11}{:>11}{:>11}\n",
        "metric (s)", "mean", "p50", "p90", "p99", "max"
    );
    for (name, d) in [
        ("jct", &s.jct_s),
        ("ttft", &s.ttft_s),
        ("tpot", &s.tpot_s),
        ("itl", &s.itl_s),
        ("per-token latency", &s.per_token_latency_s),
        ("queue", &s.queue_s),
    ] {
        if let Some(d) = d {
            out += &format!(
                "{:<22}{:>11.4}{:>11.4}{:>11.4}{:>11.4}{:>11.4}\n",
                name, d.mean, d.p50, d.p90, d.p99, d.max
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.9) - 3.7).abs() < 1e-12);
    }

    #[test]
    fn completions_stay_compact() {
        // Kept for every request of a run: 112 bytes before the two ITL fields.
        assert_eq!(std::mem::size_of::<Completion>(), 128);
    }

    #[test]
    fn request_metrics_by_hand() {
        let c = Completion {
            id: 0,
            replica: 0,
            arrival_ns: 1_000_000_000,
            input_tokens: 10,
            output_tokens: 5,
            first_scheduled_ns: 1_500_000_000,
            first_token_ns: 2_000_000_000,
            finish_ns: 4_000_000_000,
            preemptions: 0,
            swap_out_bytes: 0,
            swap_in_bytes: 0,
            swap_stall_ns: 0,
            recomputed_tokens: 0,
            predicted_output_tokens: 5,
            priority: 0.0,
            demotions: 0,
            promotions: 0,
            itl_max_ns: 700_000_000,
            itl_p99_ns: 700_000_000,
        };
        let m = request_metrics(&c);
        assert_eq!(m.jct_s, 3.0);
        assert_eq!(m.ttft_s, 1.0);
        assert_eq!(m.tpot_s, Some(0.5));
        assert_eq!(m.queue_s, 0.5);
        assert_eq!(m.per_token_s, 0.6);
        assert_eq!(m.itl_max_s, Some(0.7));
        assert_eq!(m.itl_p99_s, Some(0.7));
    }

    #[test]
    fn thrash_warns_from_twenty_preemptions_per_request() {
        // A 5,000-request burst of `mlfq` evict + recompute (adversarial round 11, 05) preempted
        // 558,054 times and said nothing: a burst is not judged for stability.
        let mut s = summarize("s", "mlfq", 0, &[], &RunStats::default());
        assert_eq!(s.thrash_warning(), None, "no request: nothing to say");
        s.requests = 5000;
        s.preemptions = 558_054;
        let w = s
            .thrash_warning()
            .expect("112 preemptions per request warn");
        assert!(
            w.starts_with("requests were preempted 112 times each"),
            "{w}"
        );
        s.preemptions = 99_999;
        assert_eq!(s.thrash_warning(), None, "19.99 per request: no warning");
        s.preemptions = 100_000;
        assert!(s.thrash_warning().is_some(), "20 per request warn");
    }
}
