//! Property tests of run invariants over random small traces, for `fcfs` (reserve max and
//! oracle) and `vllm` (several watermarks), with random KV capacities (down to the smallest that
//! admits every request), batch limits, block sizes, 1–3 replicas and arrival patterns that often
//! land exactly on iteration boundaries.
//!
//! [`engine_invariants`] drives [`servesim::engine::simulate`] with an [`Observer`] that records
//! every iteration; [`vllm_tight_memory_invariants`] does the same for many tiny `vllm` cases
//! with near-minimal KV pools and large watermarks (where a late recompute preemption used to
//! stall a replica forever); [`synthetic_run_invariants`] goes through the scenario path
//! (`scenario::parse` → `resolve` → `run::run`) with seeded synthetic traces.

use std::sync::Arc;

use proptest::prelude::*;
use servesim::cost::BatchShape;
use servesim::cost::CostModel;
use servesim::cost::constant::ConstantCost;
use servesim::engine::{
    Completion, EngineConfig, Guards, Observer, ReplicaParts, RunStats, simulate,
};
use servesim::exec::SimExecutor;
use servesim::policy::{Limits, PolicyEnv};
use servesim::predict::Oracle;
use servesim::swap::{Direction, SwapModel};
use servesim::vocab::TraceRow;
use servesim::vocab::kv::blocks_for_tokens;
use servesim::vocab::time::{Ns, duration_ns_ceil};

use crate::support::Workdir;

/// Context limit used by every case (so `fcfs` `reserve = "max"` reserves this many tokens).
const MAX_CONTEXT: u32 = 64;
const MAX_INPUT: u32 = 48;
const MAX_OUTPUT: u32 = 40;

#[derive(Debug, Clone)]
enum Pol {
    Fcfs { reserve: &'static str },
    Vllm { watermark_frac: f64 },
}

impl Pol {
    fn name(&self) -> &'static str {
        match self {
            Pol::Fcfs { .. } => "fcfs",
            Pol::Vllm { .. } => "vllm",
        }
    }
    /// The `[policies.NAME]` table body.
    fn params_toml(&self) -> String {
        match self {
            Pol::Fcfs { reserve } => format!("reserve = \"{reserve}\"\n"),
            Pol::Vllm { watermark_frac } => format!("watermark_frac = {watermark_frac:?}\n"),
        }
    }
}

fn pol_strategy() -> impl Strategy<Value = Pol> {
    prop_oneof![
        Just(Pol::Fcfs { reserve: "max" }),
        Just(Pol::Fcfs { reserve: "oracle" }),
        Just(Pol::Vllm {
            watermark_frac: 0.0
        }),
        Just(Pol::Vllm {
            watermark_frac: 0.01
        }),
        Just(Pol::Vllm {
            watermark_frac: 0.1
        }),
        (0.0f64..0.35).prop_map(|w| Pol::Vllm {
            watermark_frac: (w * 100.0).round() / 100.0
        }),
    ]
}

/// The smallest KV pool (blocks) in which every `(input, output)` request fits under `pol`.
fn min_capacity_blocks(pol: &Pol, block_tokens: u32, lengths: &[(u32, u32)]) -> u32 {
    let blocks = |tokens: u32| blocks_for_tokens(tokens as u64, block_tokens) as u32;
    let largest = |f: &dyn Fn(u32, u32) -> u32| lengths.iter().map(|&(i, o)| f(i, o)).max();
    let whole = largest(&|i, o| blocks(i + o - 1)).unwrap_or(1);
    match pol {
        Pol::Fcfs { reserve: "max" } => blocks(MAX_CONTEXT),
        Pol::Fcfs { .. } => whole,
        Pol::Vllm { watermark_frac } => {
            // vllm also needs the prompt plus the watermark to fit at arrival.
            let prompt = largest(&|i, _| blocks(i)).unwrap_or(1);
            let watermark = |cap: u32| (watermark_frac * cap as f64).ceil() as u32;
            let mut cap = whole;
            while prompt + watermark(cap) > cap {
                cap += 1;
            }
            cap
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    pol: Pol,
    replicas: u32,
    block_tokens: u32,
    /// Blocks beyond the minimum capacity (which holds one `MAX_CONTEXT` request).
    extra_blocks: u32,
    max_batch_size: u32,
    max_batch_tokens: u32,
    iteration_s: f64,
    /// `(gap in quarter iterations, input tokens, output tokens)`.
    rows: Vec<(u64, u32, u32)>,
}

impl Case {
    fn kv_capacity_blocks(&self) -> u32 {
        let lengths: Vec<(u32, u32)> = self.rows.iter().map(|&(_, i, o)| (i, o)).collect();
        min_capacity_blocks(&self.pol, self.block_tokens, &lengths) + self.extra_blocks
    }
    fn limits(&self) -> Limits {
        Limits {
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            max_context_tokens: MAX_CONTEXT,
        }
    }
    fn c_ns(&self) -> Ns {
        duration_ns_ceil(self.iteration_s).expect("valid iteration time")
    }
    fn trace(&self) -> Vec<TraceRow> {
        let quarter = self.c_ns() / 4;
        let mut t = 0;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, &(gap, input, output))| {
                t += gap * quarter;
                TraceRow {
                    id: i as u64,
                    arrival_ns: t,
                    input_tokens: input,
                    output_tokens: output,
                }
            })
            .collect()
    }
}

/// `(input, output)` with input + output ≤ `MAX_CONTEXT`; prompts up to ¾ of the context, so
/// a single request can need most of a small KV pool.
fn lengths_strategy() -> impl Strategy<Value = (u32, u32)> {
    (1..=MAX_INPUT).prop_flat_map(|i| (Just(i), 1..=MAX_OUTPUT.min(MAX_CONTEXT - i)))
}

fn case_strategy() -> impl Strategy<Value = Case> {
    case_strategy_with(
        pol_strategy().boxed(),
        1..=3,
        prop_oneof![2 => Just(0u32), 3 => 1u32..=8, 1 => 9u32..=64].boxed(),
        1..=30,
    )
}

/// `vllm` only, one replica, 2–4 requests, KV pools at most 2 blocks above the minimum and
/// watermarks up to 35 %: the corner where a late recompute preemption meets the watermark.
fn tight_vllm_strategy() -> impl Strategy<Value = Case> {
    case_strategy_with(
        (0u32..35)
            .prop_map(|w| Pol::Vllm {
                watermark_frac: w as f64 / 100.0,
            })
            .boxed(),
        1..=1,
        (0u32..=2).boxed(),
        2..=4,
    )
}

fn case_strategy_with(
    pol: BoxedStrategy<Pol>,
    replicas: std::ops::RangeInclusive<u32>,
    extra_blocks: BoxedStrategy<u32>,
    rows: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Case> {
    let row = (
        // Gaps in quarters of an iteration: simultaneous arrivals, arrivals exactly at
        // boundaries and mid-iteration arrivals are all frequent.
        prop_oneof![3 => Just(0u64), 5 => 1u64..=8, 1 => 9u64..=40],
        lengths_strategy(),
    )
        .prop_map(|(gap, (input, output))| (gap, input, output));
    (
        pol,
        replicas,
        prop_oneof![Just(1u32), Just(2), Just(4), Just(8), Just(16)],
        extra_blocks,
        1u32..=8,
        MAX_INPUT..=128,
        prop_oneof![Just(0.1), Just(0.25), Just(0.001)],
        prop::collection::vec(row, rows),
    )
        .prop_map(
            |(
                pol,
                replicas,
                block_tokens,
                extra_blocks,
                max_batch_size,
                max_batch_tokens,
                iteration_s,
                rows,
            )| Case {
                pol,
                replicas,
                block_tokens,
                extra_blocks,
                max_batch_size,
                max_batch_tokens,
                iteration_s,
                rows,
            },
        )
}

/// A host link that is never used (the replicas have no host KV pool).
struct NoLink;

impl SwapModel for NoLink {
    fn transfer_s(&self, _dir: Direction, _bytes: u64, _blocks: u32) -> f64 {
        0.0
    }
}

/// Records everything the engine reports, in call order.
#[derive(Default)]
struct Recorder {
    completions: Vec<Completion>,
    iterations: Vec<(u32, Ns, Ns, BatchShape)>,
}

impl Observer for Recorder {
    fn on_completion(&mut self, c: &Completion) {
        self.completions.push(*c);
    }
    fn on_iteration(&mut self, replica: u32, start_ns: Ns, end_ns: Ns, shape: &BatchShape) {
        self.iterations.push((replica, start_ns, end_ns, *shape));
    }
}

fn simulate_case(case: &Case) -> Result<(RunStats, Recorder), String> {
    let mut rec = Recorder::default();
    let stats = simulate_case_with(case, 0, &mut rec)?;
    Ok((stats, rec))
}

fn simulate_case_with(
    case: &Case,
    kv_sample_interval_ns: Ns,
    observer: &mut dyn Observer,
) -> Result<RunStats, String> {
    let limits = case.limits();
    let cost: Arc<dyn CostModel> = Arc::new(ConstantCost {
        iteration_s: case.iteration_s,
    });
    let env = PolicyEnv { limits, cost };
    let entry = servesim::policy::lookup(case.pol.name()).map_err(|e| e.to_string())?;
    let table: toml::Value = toml::from_str(&case.pol.params_toml()).map_err(|e| e.to_string())?;
    let parts = (0..case.replicas)
        .map(|_| {
            let (policy, _) = (entry.build)(Some(&table), &env).map_err(|e| e.to_string())?;
            Ok(ReplicaParts {
                policy,
                executor: Box::new(SimExecutor::new(Box::new(ConstantCost {
                    iteration_s: case.iteration_s,
                }))),
                kv_capacity_blocks: case.kv_capacity_blocks(),
                // No host memory: every preemption is a recompute.
                host_kv_blocks: 0,
                kv_block_bytes: 1,
                swap: Box::new(NoLink),
                swap_timing: servesim::swap::timing::SwapTiming {
                    reactive: entry.reactive,
                    layers: 1,
                },
                offload: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let cfg = EngineConfig {
        block_tokens: case.block_tokens,
        limits,
        guards: Guards::default(),
        kv_sample_interval_ns,
    };
    let trace = case.trace();
    let mut rows = trace.iter().map(|r| Ok(*r));
    simulate(&cfg, &mut rows, parts, &mut Oracle, observer).map_err(|e| e.to_string())
}

/// Records the run and takes KV samples until it holds `cap` of them.
struct CappedSamples {
    rec: Recorder,
    samples: usize,
    cap: usize,
}

impl Observer for CappedSamples {
    fn on_completion(&mut self, c: &Completion) {
        self.rec.on_completion(c);
    }
    fn on_iteration(&mut self, replica: u32, start_ns: Ns, end_ns: Ns, shape: &BatchShape) {
        self.rec.on_iteration(replica, start_ns, end_ns, shape);
    }
    fn on_kv_sample(&mut self, _sample: &servesim::engine::KvSample) {
        self.samples += 1;
    }
    fn wants_kv_samples(&self) -> bool {
        self.samples < self.cap
    }
}

/// Once the observer wants no more KV samples (`run` caps kv_timeline.csv) the engine produces
/// none, whatever the run's length and replica count, and the run itself is unchanged.
#[test]
fn kv_samples_stop_when_the_observer_wants_no_more() {
    let case = Case {
        pol: Pol::Vllm {
            watermark_frac: 0.01,
        },
        replicas: 3,
        block_tokens: 16,
        extra_blocks: 40,
        max_batch_size: 4,
        max_batch_tokens: 2048,
        iteration_s: 0.01,
        rows: (0..60)
            .map(|i| (i % 5, 8 + i as u32 % 20, 10 + i as u32 % 25))
            .collect(),
    };
    let (_, plain) = simulate_case(&case).unwrap();
    // A sample every tenth of an iteration: thousands of instants over the run.
    let mut capped = CappedSamples {
        rec: Recorder::default(),
        samples: 0,
        cap: 30,
    };
    simulate_case_with(&case, 1_000_000, &mut capped).unwrap();
    assert_eq!(capped.samples, 30);
    assert_eq!(capped.rec.completions, plain.completions);
    assert_eq!(capped.rec.iterations, plain.iterations);
}

// Long on purpose: a checklist of invariants over one run, one commented block each, sharing its indexes.
/// Every invariant of one engine run; returns the first violation.
fn check_engine_case(case: &Case) -> Result<(), TestCaseError> {
    let (stats, rec) =
        simulate_case(case).map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
    let trace = case.trace();
    let n = trace.len();
    let c = case.c_ns();
    let r_count = case.replicas as usize;
    let limits = case.limits();

    // Every request finishes exactly once, with its own lengths, on its round-robin replica.
    let mut by_id: Vec<Option<&Completion>> = vec![None; n];
    for comp in &rec.completions {
        let slot = by_id
            .get_mut(comp.id as usize)
            .ok_or_else(|| TestCaseError::fail(format!("unknown id {}", comp.id)))?;
        prop_assert!(slot.is_none(), "request {} finished twice", comp.id);
        *slot = Some(comp);
    }
    prop_assert_eq!(rec.completions.len(), n, "completions");
    for (row, comp) in trace.iter().zip(&by_id) {
        let comp =
            comp.ok_or_else(|| TestCaseError::fail(format!("request {} never finished", row.id)))?;
        prop_assert_eq!(comp.arrival_ns, row.arrival_ns);
        prop_assert_eq!(comp.input_tokens, row.input_tokens);
        prop_assert_eq!(comp.output_tokens, row.output_tokens);
        prop_assert_eq!(comp.replica as u64, row.id % case.replicas as u64);
        // Timing: the first iteration emits the first token; nobody is served faster than its
        // own n iterations back to back.
        prop_assert!(
            comp.first_scheduled_ns >= comp.arrival_ns,
            "scheduled before arrival: {comp:?}"
        );
        prop_assert_eq!(
            comp.first_token_ns,
            comp.first_scheduled_ns + c,
            "first token ≠ first iteration end: {:?}",
            comp
        );
        prop_assert!(comp.first_token_ns >= comp.arrival_ns + c);
        prop_assert!(
            comp.finish_ns >= comp.first_token_ns + (comp.output_tokens as u64 - 1) * c,
            "{comp:?}"
        );
        prop_assert!(
            comp.finish_ns >= comp.arrival_ns + comp.output_tokens as u64 * c,
            "finished faster than its own service: {comp:?}"
        );
    }

    // Completions are reported in time order.
    for w in rec.completions.windows(2) {
        prop_assert!(
            w[0].finish_ns <= w[1].finish_ns,
            "completions out of time order"
        );
    }

    // Iterations: reported in start-time order overall; per replica back to back without
    // overlap; every one takes exactly c and respects the batch limits.
    let cap = case.kv_capacity_blocks();
    let max_reserve = blocks_for_tokens(MAX_CONTEXT as u64, case.block_tokens) as u32;
    let mut per_replica: Vec<Vec<(Ns, Ns)>> = vec![Vec::new(); r_count];
    let mut tokens_by_replica = vec![0u64; r_count];
    let mut last_start = 0;
    for &(r, start, end, shape) in &rec.iterations {
        prop_assert!(start >= last_start, "iterations reported out of time order");
        last_start = start;
        prop_assert_eq!(end - start, c, "iteration length");
        prop_assert!(shape.requests() >= 1 && shape.requests() <= limits.max_batch_size);
        if shape.prefill_requests > 1 {
            prop_assert!(shape.prefill_tokens <= limits.max_batch_tokens as u64);
        }
        match case.pol {
            Pol::Vllm { .. } => prop_assert!(
                shape.prefill_requests == 0 || shape.decode_requests == 0,
                "vllm mixed prefills and decodes: {shape:?}"
            ),
            Pol::Fcfs { reserve: "max" } => prop_assert!(
                shape.requests() <= cap / max_reserve,
                "fcfs max: {} requests hold more than {cap} blocks of reservations",
                shape.requests()
            ),
            Pol::Fcfs { .. } => {}
        }
        let rr = per_replica
            .get_mut(r as usize)
            .ok_or_else(|| TestCaseError::fail(format!("unknown replica {r}")))?;
        if let Some(&(_, prev_end)) = rr.last() {
            prop_assert!(start >= prev_end, "replica {r}: iterations overlap");
        }
        rr.push((start, end));
        tokens_by_replica[r as usize] += shape.requests() as u64;
    }

    // Output tokens are conserved: each iteration emits one token per request in it (a
    // recompute re-prefill emits the next token too), so the tokens emitted on a replica equal
    // the output tokens of the requests routed to it.
    for (r, &emitted) in tokens_by_replica.iter().enumerate() {
        let want: u64 = trace
            .iter()
            .filter(|t| t.id % case.replicas as u64 == r as u64)
            .map(|t| t.output_tokens as u64)
            .sum();
        prop_assert_eq!(emitted, want, "replica {} emitted tokens", r);
    }

    // Every finish is the end of an iteration of its replica.
    for comp in &rec.completions {
        prop_assert!(
            per_replica[comp.replica as usize]
                .binary_search_by_key(&comp.finish_ns, |&(_, e)| e)
                .is_ok(),
            "finish {} is no iteration end",
            comp.finish_ns
        );
    }

    // Work conservation: a replica never idles while it holds an unfinished request. Its first
    // iteration starts at its first arrival; at every idle gap after an iteration ending at e,
    // each of its requests that arrived by e has finished by e, and the next iteration starts
    // at its next arrival after e.
    for (r, iters) in per_replica.iter().enumerate() {
        let mine: Vec<&Completion> = by_id
            .iter()
            .flatten()
            .filter(|c| c.replica as usize == r)
            .copied()
            .collect();
        let first_arrival = mine.iter().map(|c| c.arrival_ns).min();
        prop_assert_eq!(
            iters.first().map(|i| i.0),
            first_arrival,
            "replica {} first iteration",
            r
        );
        for k in 1..iters.len() {
            let (e, start) = (iters[k - 1].1, iters[k].0);
            if start == e {
                continue;
            }
            for comp in &mine {
                prop_assert!(
                    comp.arrival_ns > e || comp.finish_ns <= e,
                    "replica {} idle from {} with request {} unfinished",
                    r,
                    e,
                    comp.id
                );
            }
            let next = mine.iter().map(|c| c.arrival_ns).filter(|&a| a > e).min();
            prop_assert_eq!(
                Some(start),
                next,
                "replica {} restarted at the wrong time",
                r
            );
        }
    }

    // Run statistics.
    prop_assert_eq!(stats.replicas.len(), r_count);
    prop_assert_eq!(stats.requests, n as u64);
    prop_assert_eq!(stats.iterations, rec.iterations.len() as u64);
    prop_assert_eq!(
        stats.replicas.iter().map(|r| r.requests).sum::<u64>(),
        n as u64
    );
    for rs in &stats.replicas {
        prop_assert_eq!(rs.kv_capacity_blocks, cap);
        prop_assert!(
            rs.peak_kv_blocks <= rs.kv_capacity_blocks,
            "peak KV {} > capacity {}",
            rs.peak_kv_blocks,
            rs.kv_capacity_blocks
        );
    }
    let preemptions: u64 = rec.completions.iter().map(|c| c.preemptions as u64).sum();
    prop_assert_eq!(
        stats.replicas.iter().map(|r| r.preemptions).sum::<u64>(),
        preemptions
    );
    if let Pol::Fcfs { .. } = case.pol {
        // With exact (oracle) predictions, reservations always suffice.
        prop_assert_eq!(preemptions, 0, "fcfs preempted");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants(case in case_strategy()) {
        check_engine_case(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Tiny cases run in microseconds, so this corner gets many of them.
    #[test]
    fn vllm_tight_memory_invariants(case in tight_vllm_strategy()) {
        check_engine_case(&case)?;
    }
}

/// A seeded synthetic scenario (lengths file + arrival process) through the scenario path.
#[derive(Debug, Clone)]
struct SynthCase {
    pol: Pol,
    seed: u64,
    replicas: u32,
    block_tokens: u32,
    extra_blocks: u32,
    max_batch_size: u32,
    arrival: &'static str,
    rate_per_s: f64,
    num_requests: u64,
    lengths: Vec<(u32, u32)>,
}

fn synth_strategy() -> impl Strategy<Value = SynthCase> {
    (
        pol_strategy(),
        0..=servesim::scenario::MAX_SEED,
        1u32..=3,
        prop_oneof![Just(1u32), Just(4), Just(16)],
        0u32..=16,
        1u32..=8,
        prop_oneof![Just("poisson"), Just("gamma"), Just("constant")],
        prop_oneof![Just(1.0), Just(5.0), Just(20.0)],
        1u64..=60,
        prop::collection::vec(lengths_strategy(), 1..=10),
    )
        .prop_map(
            |(
                pol,
                seed,
                replicas,
                block_tokens,
                extra_blocks,
                max_batch_size,
                arrival,
                rate_per_s,
                num_requests,
                lengths,
            )| SynthCase {
                pol,
                seed,
                replicas,
                block_tokens,
                extra_blocks,
                max_batch_size,
                arrival,
                rate_per_s,
                num_requests,
                lengths,
            },
        )
}

// Long on purpose: most of it is the scenario TOML written out whole, then the checks on its run.
fn check_synth_case(case: &SynthCase) -> Result<(), TestCaseError> {
    let w = Workdir::new();
    let mut lengths = String::from("input_tokens,output_tokens\n");
    for (i, o) in &case.lengths {
        lengths += &format!("{i},{o}\n");
    }
    w.write("lengths.csv", lengths);
    let cap = min_capacity_blocks(&case.pol, case.block_tokens, &case.lengths) + case.extra_blocks;
    let text = format!(
        r#"name = "prop"
seed = {seed}
model = "opt-13b"
gpu = "a100-40gb"
replicas = {replicas}

[trace]
arrival = "{arrival}"
{cv}rate_per_s = {rate:?}
lengths_file = "lengths.csv"
num_requests = {n}

[memory]
block_tokens = {bt}
kv_capacity_blocks = {cap}

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "{policy}"
max_batch_size = {bs}
max_context_tokens = {MAX_CONTEXT}

[policies.{policy}]
{params}"#,
        seed = case.seed,
        replicas = case.replicas,
        arrival = case.arrival,
        rate = case.rate_per_s,
        n = case.num_requests,
        bt = case.block_tokens,
        policy = case.pol.name(),
        bs = case.max_batch_size,
        params = case.pol.params_toml(),
        cv = if case.arrival == "gamma" {
            "cv = 2.0\n"
        } else {
            ""
        },
    );
    let path = w.write("scenario.toml", &text);
    let resolved = servesim::scenario::parse(&path, &text)
        .and_then(|l| l.resolve(&servesim::scenario::Overrides::default()))
        .map_err(|e| TestCaseError::fail(format!("scenario rejected: {e}\n{text}")))?;
    let out = servesim::run::run(&resolved, None)
        .map_err(|e| TestCaseError::fail(format!("run failed: {e}\n{text}")))?;
    let c: Ns = 100_000_000;
    let n = case.num_requests as usize;
    prop_assert_eq!(out.completions.len(), n);
    let mut tokens = 0u64;
    for (i, comp) in out.completions.iter().enumerate() {
        prop_assert_eq!(comp.id, i as u64, "ids sorted, each once");
        prop_assert!(
            case.lengths
                .contains(&(comp.input_tokens, comp.output_tokens))
        );
        prop_assert_eq!(comp.replica as u64, comp.id % case.replicas as u64);
        prop_assert!(comp.first_token_ns >= comp.arrival_ns + c);
        prop_assert!(
            comp.finish_ns >= comp.arrival_ns + comp.output_tokens as u64 * c,
            "{comp:?}"
        );
        tokens += comp.output_tokens as u64;
        if i > 0 {
            prop_assert!(comp.arrival_ns >= out.completions[i - 1].arrival_ns);
        }
    }
    prop_assert_eq!(out.summary.requests, n as u64);
    let emitted: u64 = out
        .stats
        .replicas
        .iter()
        .map(|r| r.batch_requests_sum)
        .sum();
    prop_assert_eq!(emitted, tokens, "tokens emitted ≠ output tokens");
    for r in &out.stats.replicas {
        prop_assert!(r.peak_kv_blocks <= r.kv_capacity_blocks);
        prop_assert_eq!(r.kv_capacity_blocks, cap);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn synthetic_run_invariants(case in synth_strategy()) {
        check_synth_case(&case)?;
    }
}
