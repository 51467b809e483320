//! Agreement with queueing theory (heavy: run with `--release`, as CI does).
//!
//! 1. `fcfs`, `max_batch_size = 1`, constant cost c per iteration, Poisson arrivals at rate λ and
//!    output lengths n ~ Geometric(mean m) is an M/G/1 FCFS queue: a request is served alone for
//!    n iterations, S = n·c, and an idle replica starts at the arrival instant. The
//!    Pollaczek–Khinchine formula gives the mean job completion time
//!
//!    ```text
//!    E[JCT] = E[S] + λ·E[S²] / (2·(1 − ρ)),   ρ = λ·E[S]
//!    ```
//!
//!    The synthetic trace samples lengths with replacement from a lengths file, so the service
//!    distribution is the file's empirical one: E[S] and E[S²] are computed from the file, not
//!    from the geometric parameters. Checked at ρ = 0.5 and 0.8 within 3 %.
//!
//! 2. With an unlimited batch and plentiful KV, nobody ever waits for anybody: each request joins
//!    the next iteration boundary (at once if the replica is idle) and then runs its n iterations
//!    back to back, so JCT = n·c + wait, 0 ≤ wait < c, per request. The wait is also checked
//!    exactly against an independent model of the iteration grid.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Geometric};
use servesim::engine::Completion;
use servesim::engine::time::{Ns, duration_ns_ceil};
use servesim::run::RunOutput;

use crate::support::Workdir;

/// Write a lengths file of `rows` pairs (input 1, output 1 + Geometric(1/m), i.e. mean m) and
/// return the output lengths.
fn write_geometric_lengths(w: &Workdir, rows: usize, mean: f64, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let geo = Geometric::new(1.0 / mean).expect("valid geometric parameter");
    let outs: Vec<u32> = (0..rows).map(|_| 1 + geo.sample(&mut rng) as u32).collect();
    let mut text = String::with_capacity(rows * 8);
    text.push_str("input_tokens,output_tokens\n");
    for o in &outs {
        text += &format!("1,{o}\n");
    }
    w.write("lengths.csv", text);
    outs
}

/// Run an `fcfs` scenario on a synthetic Poisson trace over `lengths.csv` in `w`.
fn run_fcfs(
    w: &Workdir,
    seed: u64,
    rate_per_s: f64,
    num_requests: u64,
    iteration_s: f64,
    max_batch_size: u32,
) -> RunOutput {
    let text = format!(
        r#"name = "queueing"
seed = {seed}
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = {rate_per_s:?}
lengths_file = "lengths.csv"
num_requests = {num_requests}

[memory]
kv_capacity_blocks = 100000000

[cost]
model = "constant"
iteration_s = {iteration_s:?}

[scheduler]
policy = "fcfs"
max_batch_size = {max_batch_size}
max_batch_tokens = 100000000

[policies.fcfs]
reserve = "oracle"
"#
    );
    let path = w.write("scenario.toml", &text);
    let resolved = servesim::scenario::parse(&path, &text)
        .and_then(|l| l.resolve(&servesim::scenario::Overrides::default()))
        .unwrap_or_else(|e| panic!("scenario rejected: {e}"));
    servesim::run::run(&resolved, None).unwrap_or_else(|e| panic!("run failed: {e}"))
}

fn jct_ns(c: &Completion) -> Ns {
    c.finish_ns - c.arrival_ns
}

/// Simulated vs Pollaczek–Khinchine mean JCT at utilisation `rho`; returns both (seconds).
fn mg1_mean_jct(rho: f64, num_requests: u64, seed: u64) -> (f64, f64) {
    const MEAN_OUTPUT: f64 = 5.0;
    let iteration_s = 0.01;
    let w = Workdir::new();
    let outs = write_geometric_lengths(&w, 10_000, MEAN_OUTPUT, seed);
    // The engine's iteration length (durations are rounded up to whole nanoseconds).
    let c = duration_ns_ceil(iteration_s).unwrap() as f64 / 1e9;
    let k = outs.len() as f64;
    let es = outs.iter().map(|&n| n as f64 * c).sum::<f64>() / k;
    let es2 = outs.iter().map(|&n| (n as f64 * c).powi(2)).sum::<f64>() / k;
    let lambda = rho / es;
    let pk = es + lambda * es2 / (2.0 * (1.0 - rho));

    let out = run_fcfs(&w, seed, lambda, num_requests, iteration_s, 1);
    assert_eq!(out.completions.len() as u64, num_requests);
    let sim = out
        .completions
        .iter()
        .map(|c| jct_ns(c) as f64)
        .sum::<f64>()
        / out.completions.len() as f64
        / 1e9;
    (sim, pk)
}

fn assert_pk(rho: f64, num_requests: u64) {
    let (sim, pk) = mg1_mean_jct(rho, num_requests, 2024);
    let err = (sim - pk) / pk;
    eprintln!(
        "M/G/1 ρ = {rho}: simulated mean JCT {sim:.6} s, Pollaczek–Khinchine {pk:.6} s, error {:+.3} %",
        100.0 * err
    );
    assert!(
        err.abs() < 0.03,
        "ρ = {rho}: simulated mean JCT {sim} s vs Pollaczek–Khinchine {pk} s ({:+.2} %)",
        100.0 * err
    );
}

#[test]
fn mg1_mean_jct_matches_pollaczek_khinchine_at_rho_0_5() {
    assert_pk(0.5, 400_000);
}

#[test]
fn mg1_mean_jct_matches_pollaczek_khinchine_at_rho_0_8() {
    // The sample mean converges more slowly near saturation; 1,000,000 requests keep its
    // standard error near 1 %.
    assert_pk(0.8, 1_000_000);
}

#[test]
fn unlimited_batch_jct_is_own_service_plus_wait_for_the_next_boundary() {
    let iteration_s = 0.01;
    let c = duration_ns_ceil(iteration_s).unwrap();
    let w = Workdir::new();
    write_geometric_lengths(&w, 10_000, 20.0, 7);
    // ~0.5 arrivals per iteration: busy periods with many requests in flight and idle gaps.
    let out = run_fcfs(&w, 7, 50.0, 200_000, iteration_s, 1_000_000);
    let comps = &out.completions;
    assert_eq!(comps.len(), 200_000);
    assert!(
        out.summary.replicas[0].mean_batch_size > 5.0,
        "the test needs real batching"
    );

    // Independent model: iterations run back to back from the start of a busy period, on the
    // grid start + k·c, until every request in the system is done; a request arriving at a
    // grid point joins it; one arriving while idle starts a new grid at its arrival.
    let mut grid_start: Ns = 0;
    let mut busy_until: Ns = 0;
    let mut waited = 0u64;
    for comp in comps {
        let a = comp.arrival_ns;
        let n = comp.output_tokens as u64;
        let start = if a >= busy_until {
            grid_start = a;
            a
        } else {
            grid_start + (a - grid_start).div_ceil(c) * c
        };
        busy_until = busy_until.max(start + n * c);
        let wait = jct_ns(comp)
            .checked_sub(n * c)
            .unwrap_or_else(|| panic!("request {} finished faster than n·c: {comp:?}", comp.id));
        assert!(
            wait < c,
            "request {}: waited {wait} ns ≥ one iteration ({c} ns): {comp:?}",
            comp.id
        );
        assert_eq!(comp.first_scheduled_ns, start, "request {}: start", comp.id);
        assert_eq!(comp.finish_ns, start + n * c, "request {}: finish", comp.id);
        waited += u64::from(wait > 0);
    }
    assert!(
        waited > comps.len() as u64 / 4,
        "most requests should wait for a boundary"
    );
}
