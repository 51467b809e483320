//! Unit tests of the stability rule ([`super`]).

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
        queue_window_s: 50.0,
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

/// The growth's standard error is printed to the growth's three decimals (it was printed to six
/// significant digits below 0.01: "17.882 ± 0.00488941"), and in short exponent form when it
/// would round to 0.000 (round 12, 07).
#[test]
fn the_growth_and_its_standard_error_share_their_precision() {
    let st = |se| Stability {
        offered_rate_per_s: 2.0,
        achieved_rate_per_s: 2.0,
        queue_growth_per_s: 17.882,
        queue_growth_se_per_s: se,
        stable: false,
        unstable_replica: None,
        tolerance: MAX_QUEUE_GROWTH_FRACTION,
        queue_window_s: 50.0,
    };
    for (se, shown) in [
        (0.00488941, "17.882 ± 0.005 req/s"),
        (0.012, "17.882 ± 0.012 req/s"),
        (9.10231e-5, "17.882 ± 9.1e-5 req/s"),
        (0.0, "17.882 req/s"),
    ] {
        let w = st(se).warning().unwrap();
        assert!(w.contains(&format!("grew {shown} over")), "{w}");
    }
}

/// Ten bursts of 100 requests at irregular (Poisson) instants over 814 s, on one server taking
/// 1.2 s each in order: 1,200 s of work (147 % load), 322 requests queued at the last arrival.
/// The count in the system is a staircase that scatters by whole bursts about its line, so
/// twice the slope's standard error exceeded the growth beyond the tolerance and the uncapped
/// allowance judged this run stable (round 12, 01). The allowance is at most two requests over
/// the window, and the run is unstable.
#[test]
fn a_bursty_overload_is_not_forgiven_as_scatter() {
    const BURSTS_MS: [u64; 10] = [
        0, 2_530, 59_623, 177_903, 227_153, 474_421, 509_845, 747_047, 801_752, 814_086,
    ];
    let mut c = Vec::new();
    let mut free_ns: Ns = 0;
    for at_ms in BURSTS_MS {
        for _ in 0..100 {
            let arrival = at_ms * 1_000_000;
            let finish = free_ns.max(arrival) + 12 * S / 10;
            free_ns = finish;
            c.push(req(arrival, finish));
        }
    }
    let s = stability(&c).unwrap();
    let bound = s.tolerance * s.offered_rate_per_s;
    assert!(s.queue_growth_per_s > bound, "{s:?}");
    assert!(
        s.queue_growth_per_s <= bound + SE_ALLOWANCE * s.queue_growth_se_per_s,
        "the uncapped allowance would pass it: {s:?}"
    );
    assert!(
        s.queue_growth_per_s > bound + SE_ALLOWANCE_MAX_REQUESTS / s.queue_window_s,
        "{s:?}"
    );
    assert!(!s.stable, "{s:?}");
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
