//! Token-level latency (ITL): per-request `itl_max_s` / `itl_p99_s` checked on hand-computed
//! timelines, fast-forward equal to stepping with the ITL columns for every policy, and the run's
//! pooled ITL quantiles (`summary.json` `itl_s`) within the sketch's 1 % of the exact quantiles
//! of every gap of a stepped run.

use std::collections::HashMap;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use servesim::cost::BatchShape;
use servesim::engine::{Completion, MemorySnapshot, Observer, ReplicaParts, simulate};
use servesim::exec::SimExecutor;
use servesim::policy::{PolicyEnv, REGISTRY, lookup};
use servesim::predict::Oracle;
use servesim::run::RunOutput;
use servesim::scenario::{Overrides, Resolved, parse};
use servesim::vocab::TraceRow;
use servesim::vocab::sketch::ALPHA;
use servesim::vocab::time::Ns;

use crate::support::Workdir;

const MS: Ns = 1_000_000;

/// (arrival ns, input tokens, output tokens); ids are row indices.
type Row = (Ns, u32, u32);

fn scenario(policy: &str, cost: &str, kv_blocks: u32, batch: u32) -> String {
    format!(
        "name = \"itl\"\nseed = 1\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n\n\
         [trace]\nfile = \"trace.csv\"\n\n\
         [memory]\nblock_tokens = 16\nkv_capacity_blocks = {kv_blocks}\n\n\
         [cost]\n{cost}\n\
         [scheduler]\npolicy = \"{policy}\"\nmax_batch_size = {batch}\n\
         max_batch_tokens = 4096\nmax_context_tokens = 4096\n"
    )
}

const CONST_10MS: &str = "model = \"constant\"\niteration_s = 0.01\n";
const LINEAR: &str = "model = \"linear\"\na_s = 0.004\nb_s_per_token = 0.00013\nc_s_per_token_sq = 1e-8\nd_s_per_request = 0.0007\ne_s_per_context_token = 0.000011\n";

fn resolve(w: &Workdir, text: &str, rows: &[Row]) -> Resolved {
    let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
    for &(t, i, o) in rows {
        trace += &format!("{}.{:09},{i},{o}\n", t / 1_000_000_000, t % 1_000_000_000);
    }
    w.write("trace.csv", trace);
    let path = w.write("scenario.toml", text);
    parse(Path::new(&path), text)
        .and_then(|l| l.resolve(&Overrides::default()))
        .unwrap_or_else(|e| panic!("scenario rejected: {e}\n{text}"))
}

fn run(r: &Resolved, fast_forward: bool) -> RunOutput {
    servesim::run::run_with(r, None, fast_forward).unwrap_or_else(|e| panic!("run failed: {e}"))
}

fn by_id(out: &RunOutput, id: u64) -> Completion {
    *out.completions.iter().find(|c| c.id == id).unwrap()
}

/// `vllm` (prefills first, in their own iteration) at 10 ms per iteration. A (id 0) arrives at
/// 0 with 5 output tokens, B (id 1) at 15 ms with 2. A's tokens: 10 (prefill), 20, then B's
/// prefill runs alone [20, 30), so A's third token comes at 40 (a 20 ms stall), then 50, 60.
/// B: first token at 30, second at 40. A's gaps 10, 20, 10, 10 ms: max = p99 = 20 ms (4 gaps,
/// nearest rank ⌈3.96⌉ = 4 = the largest); B's one gap 10 ms. C (id 2), one token: no gaps.
#[test]
fn a_prefill_stalls_a_decoding_request_by_one_iteration() {
    let w = Workdir::new();
    let rows = [(0, 1, 5), (15 * MS, 1, 2), (200 * MS, 1, 1)];
    let r = resolve(&w, &scenario("vllm", CONST_10MS, 1000, 8), &rows);
    for ff in [true, false] {
        let out = run(&r, ff);
        let (a, b, c) = (by_id(&out, 0), by_id(&out, 1), by_id(&out, 2));
        assert_eq!((a.first_token_ns, a.finish_ns), (10 * MS, 60 * MS));
        assert_eq!((b.first_token_ns, b.finish_ns), (30 * MS, 40 * MS));
        assert_eq!((a.itl_max_ns, a.itl_p99_ns), (20 * MS, 20 * MS));
        assert_eq!((b.itl_max_ns, b.itl_p99_ns), (10 * MS, 10 * MS));
        assert_eq!((c.itl_max_ns, c.itl_p99_ns), (0, 0));
        let csv = servesim::output::requests_csv(&out);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (mx, p99) = (col("itl_max_s"), col("itl_p99_s"));
        let cells: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(
            (cells[0][mx], cells[0][p99]),
            ("0.020000000", "0.020000000")
        );
        assert_eq!(
            (cells[1][mx], cells[1][p99]),
            ("0.010000000", "0.010000000")
        );
        assert_eq!((cells[2][mx], cells[2][p99]), ("", ""), "one token: no gap");
        // Pooled: A's 4 gaps and B's 1: 10, 10, 10, 10, 20 ms → mean 12 ms.
        let itl = out.summary.itl_s.as_ref().unwrap();
        assert_eq!(itl.count, 5);
        assert!((itl.mean - 0.012).abs() < 1e-12);
        assert_eq!(itl.max, 0.02);
        assert!((itl.p50 - 0.01).abs() <= ALPHA * 0.01);
    }
}

/// The exact p99 of a request with ≥ 100 gaps is not its maximum. A (id 0): 201 output tokens
/// (200 gaps: the nearest-rank p99 is the 3rd largest), alone at 10 ms per iteration except
/// while one-token prompts arriving at 0.5 s, 1.0 s (and 1.5 s) take a prefill iteration each:
/// each stalls A by one iteration (a 20 ms gap). Two stalls: max 20 ms, p99 10 ms; three: the
/// 3rd largest is 20 ms too. Fast-forward repeats A's decodes between the prefills.
#[test]
fn per_request_p99_is_the_third_largest_of_200_gaps() {
    for (stalls, p99) in [(2usize, 10 * MS), (3, 20 * MS)] {
        let w = Workdir::new();
        let mut rows = vec![(0, 1, 201)];
        // Arrivals just after a boundary (5 ms), so each waits for the decode in flight.
        rows.extend((1..=stalls).map(|k| (k as Ns * 500 * MS + 5 * MS, 1, 1)));
        let r = resolve(&w, &scenario("vllm", CONST_10MS, 1000, 8), &rows);
        let (fast, step) = (run(&r, true), run(&r, false));
        assert!(fast.stats.fast_forwarded_iterations > 0);
        assert_eq!(fast.completions, step.completions);
        let a = by_id(&step, 0);
        assert_eq!(a.finish_ns, (201 + stalls as Ns) * 10 * MS);
        assert_eq!(
            (a.itl_max_ns, a.itl_p99_ns),
            (20 * MS, p99),
            "{stalls} stalls"
        );
    }
}

/// A ShareGPT-like trace: long-tailed prompts and outputs (some over 100 tokens, so per-request
/// p99s keep several gaps), Poisson arrivals.
fn sharegpt_like(seed: u64, n: usize, rate_per_s: f64) -> Vec<Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = 0.0f64;
    (0..n)
        .map(|_| {
            t += -(1.0 - rng.random::<f64>()).ln() / rate_per_s;
            let input = (rng.random::<f64>() * 6.0).exp().clamp(1.0, 1000.0) as u32;
            let output = (rng.random::<f64>() * 6.2).exp().clamp(1.0, 480.0) as u32;
            ((t * 1e9) as Ns, input, output)
        })
        .collect()
}

/// Fast-forward on = off, ITL included (every completion field, run statistics with the ITL
/// sketch, `summary.json`, `requests.csv`), for every policy, with tight KV (preemptions), and
/// for the priority policies with `chunked_prefill = true` (256-token budget: most prompts are
/// chunked).
#[test]
fn fast_forward_keeps_itl_identical_for_every_policy() {
    let rows = sharegpt_like(11, 120, 6.0);
    assert!(
        rows.iter().any(|r| r.2 > 201),
        "some requests keep several gaps for their p99"
    );
    let mut forwarded = 0;
    let mut cases = Vec::new();
    for entry in REGISTRY {
        let mut text = scenario(entry.name, LINEAR, 400, 32);
        if let Some(p) = entry.forced_predictor {
            text = text.replace("seed = 1\n", &format!("seed = 1\npredictor = \"{p}\"\n"));
        }
        cases.push((entry.name.to_string(), text));
    }
    for p in ["mlfq", "skip-join-mlfq", "srpt", "srpt-oracle", "alise"] {
        let mut text = scenario(p, LINEAR, 400, 32);
        text += &format!("\n[policies.{p}]\nchunked_prefill = true\nchunk_size = 256\n");
        cases.push((format!("{p} chunked"), text));
    }
    for (name, text) in cases {
        let w = Workdir::new();
        let r = resolve(&w, &text, &rows);
        let (mut fast, step) = (run(&r, true), run(&r, false));
        assert_eq!(step.stats.fast_forwarded_iterations, 0);
        forwarded += fast.stats.fast_forwarded_iterations;
        fast.stats.fast_forwarded_iterations = 0;
        fast.stats.ff_absorbed_arrivals = 0;
        fast.stats.ff_absorbing_boundaries = 0;
        assert_eq!(fast.completions, step.completions, "{name}");
        assert_eq!(fast.stats, step.stats, "{name}");
        assert_eq!(
            servesim::output::requests_csv(&fast),
            servesim::output::requests_csv(&step),
            "{name}"
        );
        assert_eq!(
            serde_json::to_string(&fast.summary).unwrap(),
            serde_json::to_string(&step.summary).unwrap(),
            "{name}"
        );
        assert!(step.summary.itl_s.is_some());
    }
    assert!(
        forwarded > 0,
        "the comparison must cover fast-forwarded runs"
    );
}

/// Records every token's time from the memory snapshots (one per iteration when stepping, with
/// its batch and end): each member emits a token at the end.
#[derive(Default)]
struct Tokens {
    last: HashMap<u64, Ns>,
    gaps: Vec<Ns>,
    per_request: HashMap<u64, Vec<Ns>>,
}

impl Observer for Tokens {
    fn on_completion(&mut self, _c: &Completion) {}
    fn on_iteration(&mut self, _r: u32, _s: Ns, _e: Ns, _shape: &BatchShape) {}
    fn wants_memory(&self) -> bool {
        true
    }
    fn on_memory(&mut self, s: &MemorySnapshot) {
        for m in &s.batch {
            if let Some(prev) = self.last.insert(m.id, s.end_ns) {
                self.gaps.push(s.end_ns - prev);
                self.per_request
                    .entry(m.id)
                    .or_default()
                    .push(s.end_ns - prev);
            }
        }
    }
}

fn nearest_rank(sorted: &[Ns], q: f64) -> Ns {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The pooled ITL quantiles of `summary.json` are within α = 1 % of the exact nearest-rank
/// quantiles of every gap, and count, mean and max are exact; the per-request columns equal the
/// exact per-request max and nearest-rank p99.
#[test]
fn summary_itl_is_within_alpha_of_the_exact_gaps() {
    let w = Workdir::new();
    let rows = sharegpt_like(5, 400, 8.0);
    let r = resolve(&w, &scenario("fcfs", LINEAR, 2000, 48), &rows);
    // The exact token times: the same run driven directly, stepping (memory snapshots on).
    let entry = lookup(&r.scenario.scheduler.policy).unwrap();
    let env = PolicyEnv {
        limits: r.limits,
        cost: r.cost_model().unwrap().into(),
    };
    let (policy, _) =
        (entry.build)(r.scenario.policies.get(&r.scenario.scheduler.policy), &env).unwrap();
    let parts = vec![ReplicaParts {
        policy,
        executor: Box::new(SimExecutor::new(r.cost_model().unwrap())),
        kv_capacity_blocks: r.kv_capacity_blocks,
        host_kv_blocks: r.host_kv_blocks,
        kv_block_bytes: r.kv_block_bytes,
        swap: r.swap_model(None),
        swap_timing: r.swap_timing,
        offload: r.offload,
    }];
    let cfg = servesim::engine::EngineConfig {
        block_tokens: r.scenario.memory.block_tokens,
        limits: r.limits,
        guards: r.guards,
        kv_sample_interval_ns: 0,
    };
    let trace: Vec<TraceRow> = rows
        .iter()
        .enumerate()
        .map(
            |(id, &(arrival_ns, input_tokens, output_tokens))| TraceRow {
                id: id as u64,
                arrival_ns,
                input_tokens,
                output_tokens,
            },
        )
        .collect();
    let mut it = trace.iter().map(|r| Ok(*r));
    let mut tokens = Tokens::default();
    simulate(&cfg, &mut it, parts, &mut Oracle, &mut tokens).unwrap();
    let mut gaps = tokens.gaps.clone();
    gaps.sort_unstable();

    for ff in [true, false] {
        let out = run(&r, ff);
        let itl = out.summary.itl_s.as_ref().unwrap();
        assert_eq!(itl.count, gaps.len() as u64);
        let mean = gaps.iter().map(|&g| g as u128).sum::<u128>() as f64 / gaps.len() as f64;
        assert!((itl.mean - mean / 1e9).abs() <= 1e-12 * itl.mean.max(1.0));
        assert_eq!(itl.max, *gaps.last().unwrap() as f64 / 1e9);
        let mut worst: f64 = 0.0;
        for (q, est) in [
            (0.5, itl.p50),
            (0.9, itl.p90),
            (0.95, itl.p95),
            (0.99, itl.p99),
        ] {
            let exact = nearest_rank(&gaps, q) as f64 / 1e9;
            let rel = (est - exact).abs() / exact;
            worst = worst.max(rel);
            assert!(rel <= ALPHA, "q {q}: sketch {est} vs exact {exact}");
        }
        println!("pooled ITL: worst relative error {worst:.5} (bound {ALPHA})");
        for c in &out.completions {
            let Some(g) = tokens.per_request.get(&c.id) else {
                assert!(c.output_tokens < 2);
                continue;
            };
            let mut g = g.clone();
            g.sort_unstable();
            assert_eq!(g.len() as u32, c.output_tokens - 1);
            assert_eq!(c.itl_max_ns, *g.last().unwrap(), "request {}", c.id);
            assert_eq!(c.itl_p99_ns, nearest_rank(&g, 0.99), "request {}", c.id);
        }
    }
}
