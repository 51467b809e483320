//! Scheduling policies (issue "Scheduling policies", acceptance): the scenario builder and
//! expectations shared by the hand-computed scenarios with exact timestamps for every mechanism
//! ([`crate::policies_mlfq`]: MLFQ quantum demotion, FastServe's skip-join, starvation promotion;
//! [`crate::policies_size`]: SRPT preemption at iteration boundaries, non-preemptive SJF, vllm-ltr's
//! starvation boost, ALISE's aging, the predictors' misprediction rule, FastServe's three-job
//! illustration), and here the property test that every registered policy finishes every request
//! exactly once and the differential tests of fast-forward against stepping every iteration.
//!
//! Conventions of the hand computations (engine semantics): output n tokens = 1 prefill iteration
//! (emits the first token) + n − 1 decode iterations; decisions happen at iteration boundaries; an
//! arrival at exactly a boundary's instant joins that boundary; an idle replica starts an iteration
//! at the arrival instant. Times in the comments are in milliseconds unless marked otherwise; "g3"
//! means "the request has emitted its 3rd token", "att" is the service attained at the current MLFQ
//! level, "L2" is level 2 and "d1"/"p1" are the first demotion/promotion.
//!
//! Cost models used below (the values are chosen so that every duration is an exact number of
//! nanoseconds — the engine rounds each iteration up to whole nanoseconds):
//! - `CONST_10MS`: every iteration takes 10 ms.
//! - `LINEAR`: `10 ms + 0.1 ms × prefill tokens`; a decode iteration at batch size 1 takes 10 ms,
//!   a prefill of 50 / 100 / 600 tokens takes 15 / 20 / 70 ms.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use servesim::engine::Completion;
use servesim::policy::REGISTRY;
use servesim::run::RunOutput;
use servesim::scenario::{Overrides, Resolved, parse};

pub(crate) const MS: u64 = 1_000_000;

pub(crate) const CONST_10MS: &str = "model = \"constant\"\niteration_s = 0.01\n";
pub(crate) const LINEAR: &str = "model = \"linear\"\na_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.0\n";

/// One trace row: (arrival in ns, input tokens, output tokens). Ids are row indices.
pub(crate) type Row = (u64, u32, u32);

/// A scenario under test: OPT-13B's catalogue entry (context 2048) with an overridden cost model
/// and KV size, one replica unless told otherwise.
#[derive(Clone, Debug)]
pub(crate) struct Scn {
    policy: String,
    cost: String,
    batch: u32,
    pub(crate) max_batch_tokens: u32,
    pub(crate) max_context_tokens: u32,
    kv_blocks: u32,
    /// Host memory for swapped-out KV (`None`: the scenario default; 0 disables swapping, so
    /// every preemption is by recompute).
    host_kv_bytes: Option<u64>,
    replicas: u32,
    /// Pipeline stages per replica.
    pub(crate) pp: u32,
    pub(crate) seed: u64,
    predictor: Option<String>,
    /// Extra TOML tables (`[policies.NAME]`, `[predictors.NAME]`).
    tables: String,
}

impl Scn {
    pub(crate) fn new(policy: &str, cost: &str) -> Self {
        Scn {
            policy: policy.into(),
            cost: cost.into(),
            batch: 1,
            max_batch_tokens: 2048,
            max_context_tokens: 2048,
            kv_blocks: 1000,
            host_kv_bytes: None,
            replicas: 1,
            pp: 1,
            seed: 0,
            predictor: None,
            tables: String::new(),
        }
    }
    pub(crate) fn batch(mut self, b: u32) -> Self {
        self.batch = b;
        self
    }
    pub(crate) fn kv(mut self, blocks: u32) -> Self {
        self.kv_blocks = blocks;
        self
    }
    pub(crate) fn host_kv_bytes(mut self, bytes: u64) -> Self {
        self.host_kv_bytes = Some(bytes);
        self
    }
    pub(crate) fn predictor(mut self, p: &str) -> Self {
        self.predictor = Some(p.into());
        self
    }
    pub(crate) fn table(mut self, t: &str) -> Self {
        self.tables.push_str(t);
        self.tables.push('\n');
        self
    }
    pub(crate) fn policy(&self, p: &str) -> Self {
        let mut s = self.clone();
        s.policy = p.into();
        s
    }

    pub(crate) fn toml(&self) -> String {
        let predictor = self
            .predictor
            .as_ref()
            .map(|p| format!("predictor = \"{p}\"\n"))
            .unwrap_or_default();
        format!(
            "name = \"policies-test\"\nseed = {seed}\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n\
             replicas = {replicas}\npp = {pp}\n{predictor}\n\
             [trace]\nfile = \"trace.csv\"\n\n\
             [memory]\nblock_tokens = 16\nkv_capacity_blocks = {kv}\n{host}\n\
             [cost]\n{cost}\n\
             [scheduler]\npolicy = \"{policy}\"\nmax_batch_size = {batch}\n\
             max_batch_tokens = {mbt}\nmax_context_tokens = {ctx}\n\n\
             [limits]\nmax_events = 5000000\nmax_sim_s = 1000000.0\n\n{tables}",
            seed = self.seed,
            replicas = self.replicas,
            pp = self.pp,
            kv = self.kv_blocks,
            host = self
                .host_kv_bytes
                .map(|b| format!("host_kv_bytes = {b}\n"))
                .unwrap_or_default(),
            cost = self.cost,
            policy = self.policy,
            batch = self.batch,
            mbt = self.max_batch_tokens,
            ctx = self.max_context_tokens,
            tables = self.tables,
        )
    }

    /// The scenario resolved against `rows` written as its trace (the directory holds the files).
    pub(crate) fn resolve(&self, rows: &[Row]) -> Result<(tempfile::TempDir, Resolved), String> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
        for &(t, i, o) in rows {
            trace.push_str(&format!(
                "{}.{:09},{i},{o}\n",
                t / 1_000_000_000,
                t % 1_000_000_000
            ));
        }
        std::fs::write(dir.path().join("trace.csv"), trace).expect("write the trace");
        let path = dir.path().join("scenario.toml");
        let text = self.toml();
        let resolved = parse(Path::new(&path), &text)
            .and_then(|l| l.resolve(&Overrides::default()))
            .map_err(|e| format!("scenario rejected: {e}\n{text}"))?;
        Ok((dir, resolved))
    }

    pub(crate) fn try_run(&self, rows: &[Row]) -> Result<RunOutput, String> {
        let (_dir, resolved) = self.resolve(rows)?;
        servesim::run::run(&resolved, None).map_err(|e| format!("run failed: {e}"))
    }

    /// The run with fast-forward on and off (the stepping reference).
    pub(crate) fn try_run_both(&self, rows: &[Row]) -> Result<(RunOutput, RunOutput), String> {
        let (_dir, resolved) = self.resolve(rows)?;
        let fast = servesim::run::run_with(&resolved, None, true)
            .map_err(|e| format!("fast-forward run failed: {e}"))?;
        let step = servesim::run::run_with(&resolved, None, false)
            .map_err(|e| format!("stepping run failed: {e}"))?;
        Ok((fast, step))
    }

    pub(crate) fn run(&self, rows: &[Row]) -> Vec<Completion> {
        let out = self
            .try_run(rows)
            .unwrap_or_else(|e| panic!("{}: {e}", self.policy));
        assert_eq!(out.completions.len(), rows.len(), "every request finishes");
        out.completions
    }
}

/// What a test expects of one request. `None` fields are not checked.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exp {
    pub(crate) first_token_ns: Option<u64>,
    pub(crate) finish_ns: Option<u64>,
    pub(crate) preemptions: Option<u32>,
    pub(crate) priority: Option<f64>,
    pub(crate) demotions: Option<u32>,
    pub(crate) promotions: Option<u32>,
}

/// Expected first-token and finish times in ms.
pub(crate) fn at(first_token_ms: u64, finish_ms: u64) -> Exp {
    Exp {
        first_token_ns: Some(first_token_ms * MS),
        finish_ns: Some(finish_ms * MS),
        ..Exp::default()
    }
}

impl Exp {
    /// Level at finish, demotions, promotions (MLFQ family).
    pub(crate) fn mlfq(self, level: u32, demotions: u32, promotions: u32) -> Self {
        Exp {
            priority: Some(level as f64),
            demotions: Some(demotions),
            promotions: Some(promotions),
            ..self
        }
    }
    pub(crate) fn preempted(self, n: u32) -> Self {
        Exp {
            preemptions: Some(n),
            ..self
        }
    }
    pub(crate) fn promoted(self, n: u32) -> Self {
        Exp {
            promotions: Some(n),
            ..self
        }
    }
}

pub(crate) fn check(what: &str, got: &[Completion], exp: &[Exp]) {
    assert_eq!(got.len(), exp.len(), "{what}: number of requests");
    for (i, (c, e)) in got.iter().zip(exp).enumerate() {
        assert_eq!(c.id, i as u64, "{what}: completions sorted by id");
        let ctx = format!("{what}, request {i}: {c:?}");
        if let Some(v) = e.first_token_ns {
            assert_eq!(c.first_token_ns, v, "first token; {ctx}");
        }
        if let Some(v) = e.finish_ns {
            assert_eq!(c.finish_ns, v, "finish; {ctx}");
        }
        if let Some(v) = e.preemptions {
            assert_eq!(c.preemptions, v, "preemptions; {ctx}");
        }
        if let Some(v) = e.priority {
            assert_eq!(c.priority, v, "priority (level) at finish; {ctx}");
        }
        if let Some(v) = e.demotions {
            assert_eq!(c.demotions, v, "demotions; {ctx}");
        }
        if let Some(v) = e.promotions {
            assert_eq!(c.promotions, v, "promotions; {ctx}");
        }
    }
}

pub(crate) fn mean_jct_ms(c: &[Completion]) -> f64 {
    c.iter()
        .map(|c| (c.finish_ns - c.arrival_ns) as f64 / MS as f64)
        .sum::<f64>()
        / c.len() as f64
}

/// MLFQ parameters with FastServe's code-preset quanta (10 ms × 2^p, one-level demotion) and
/// starvation out of the way.
pub(crate) const MLFQ_NO_STARVATION: &str =
    "base_quantum_s = 0.01\nratio = 2.0\nstarvation_threshold_s = 1000.0";

pub(crate) fn mlfq_table(policy: &str, body: &str) -> String {
    format!("[policies.{policy}]\n{body}\n")
}

// ---------------------------------------------------------------------------------------------
// 10. Every policy finishes every request exactly once.
// ---------------------------------------------------------------------------------------------

/// One random case: a trace, limits, a cost model, and the knobs that pick policy parameters.
#[derive(Debug, Clone)]
struct Case {
    rows: Vec<Row>,
    batch: u32,
    extra_batch_tokens: u32,
    extra_kv_blocks: u32,
    replicas: u32,
    cost: usize,
    host: usize,
    knob: u32,
    predictor: usize,
    pp: u32,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let row = (
        prop_oneof![Just(0u64), 0u64..30 * MS],
        1u32..=300,
        1u32..=120,
    );
    (
        prop::collection::vec(row, 1..=30),
        1u32..=6,
        0u32..=300,
        0u32..=12,
        1u32..=2,
        0usize..3,
        0usize..3,
        0u32..1000,
        0usize..5,
        1u32..=2,
    )
        .prop_map(
            |(
                gaps,
                batch,
                extra_batch_tokens,
                extra_kv_blocks,
                replicas,
                cost,
                host,
                knob,
                predictor,
                pp,
            )| {
                let mut t = 0;
                let rows = gaps
                    .into_iter()
                    .map(|(gap, i, o)| {
                        t += gap;
                        (t, i, o)
                    })
                    .collect();
                Case {
                    rows,
                    batch,
                    extra_batch_tokens,
                    extra_kv_blocks,
                    replicas,
                    cost,
                    host,
                    knob,
                    predictor,
                    pp,
                }
            },
        )
}

pub(crate) const COSTS: [&str; 3] = [
    LINEAR,
    CONST_10MS,
    "model = \"linear\"\na_s = 0.004\nb_s_per_token = 0.00013\nc_s_per_token_sq = 1e-8\nd_s_per_request = 0.0007\ne_s_per_context_token = 0.000011\n",
];

pub(crate) const CONTEXT: u32 = 512;

pub(crate) fn blocks(tokens: u32) -> u32 {
    tokens.div_ceil(16)
}

/// The scenario for one case: random policy parameters, and the smallest KV the policy accepts
/// for every request of the trace (plus a random margin).
fn case_scenario(policy: &str, predictors: &[&str], c: &Case) -> Scn {
    let engine_need = c.rows.iter().map(|r| blocks(r.1 + r.2 - 1)).max().unwrap();
    let max_input = c.rows.iter().map(|r| r.1).max().unwrap();
    let k = c.knob;
    let (table, policy_need) = match policy {
        // vLLM admits a prompt only if its blocks plus the 1% watermark (1 block below 100) fit.
        "vllm" => (String::new(), blocks(max_input) + 1),
        "fcfs" if k.is_multiple_of(2) => (
            "[policies.fcfs]\nreserve = \"max\"".to_string(),
            blocks(CONTEXT),
        ),
        "fcfs" => ("[policies.fcfs]\nreserve = \"oracle\"".to_string(), 0),
        "mlfq" | "skip-join-mlfq" => (
            format!(
                "[policies.{policy}]\npreset = \"{}\"\nstarvation_threshold_s = {}\nmax_levels = {}",
                if k.is_multiple_of(2) { "code" } else { "paper" },
                [0.02, 0.1, 0.5, 3.0][(k / 2 % 4) as usize],
                [0, 3][(k / 8 % 2) as usize],
            ),
            0,
        ),
        "ltr" => (
            format!(
                "[policies.ltr]\nstarvation = true\nstarvation_iterations = {}\nboost_iterations = {}",
                1 + k % 5,
                k / 5 % 4
            ),
            0,
        ),
        "alise" => (
            format!(
                "[policies.alise]\naging_weight = {}",
                [0.0, 0.1, 10.0][(k % 3) as usize]
            ),
            0,
        ),
        _ => (String::new(), 0),
    };
    let mut scn = Scn::new(policy, COSTS[c.cost])
        .batch(c.batch)
        .kv(engine_need.max(policy_need) + c.extra_kv_blocks)
        .table(&table);
    scn.max_batch_tokens = max_input + c.extra_batch_tokens;
    scn.max_context_tokens = CONTEXT;
    scn.replicas = c.replicas;
    scn.pp = c.pp;
    // No host pool (recompute only), a few blocks' worth (OPT-13B: 12.5 MiB per 16-token block),
    // or the default.
    scn.host_kv_bytes = [Some(0), Some(40 << 20), None][c.host];
    scn.seed = k as u64;
    // fcfs's oracle reservation is sized from the prediction; only the oracle keeps it ≤ the KV
    // computed above (a larger prediction is a documented arrival-time rejection).
    let predictor = if policy == "fcfs" && !k.is_multiple_of(2) {
        "oracle"
    } else {
        predictors[c.predictor % predictors.len()]
    };
    scn.predictor(predictor)
}

/// For every policy of the registry (ALISE once per predictor it is meant for; the others with a
/// random predictor unless one is forced): random traces of ≤ 30 requests, batch limits, cost
/// models, host pools, policy parameters, and the smallest KV the policy accepts for every request
/// plus a random margin. Every request must finish exactly once and the run must end without an
/// error (an invalid or empty plan, or a livelock caught by `max_events`). 32 cases per policy;
/// `SERVESIM_POLICY_CASES=N` runs N instead (for a longer hunt).
#[test]
fn every_policy_finishes_every_request_exactly_once() {
    let all = ["oracle", "noisy", "history", "bucket", "ranking"];
    for entry in REGISTRY {
        let predictors: Vec<Vec<&str>> = match (entry.forced_predictor, entry.name) {
            (Some(f), _) => vec![vec![f]],
            // ALISE once per predictor it is meant to run with.
            (None, "alise") => vec![vec!["oracle"], vec!["noisy"], vec!["history"]],
            (None, _) => vec![all.to_vec()],
        };
        for preds in predictors {
            let mut runner = policy_runner(32);
            let result = runner.run(&case_strategy(), |c| {
                let scn = case_scenario(entry.name, &preds, &c);
                let out = scn.try_run(&c.rows).map_err(TestCaseError::fail)?;
                let ids: Vec<u64> = out.completions.iter().map(|c| c.id).collect();
                let want: Vec<u64> = (0..c.rows.len() as u64).collect();
                prop_assert_eq!(ids, want, "each request finishes exactly once");
                prop_assert_eq!(out.stats.requests, c.rows.len() as u64);
                for (done, row) in out.completions.iter().zip(&c.rows) {
                    prop_assert_eq!(done.arrival_ns, row.0);
                    prop_assert!(done.first_token_ns <= done.finish_ns);
                    prop_assert!(done.first_token_ns > done.arrival_ns);
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("policy `{}` with predictors {preds:?}: {e}", entry.name);
            }
        }
    }
}

/// A property-test runner with `SERVESIM_POLICY_CASES` cases (`default` when unset).
pub(crate) fn policy_runner(default: u32) -> TestRunner {
    TestRunner::new(PtConfig {
        cases: std::env::var("SERVESIM_POLICY_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..PtConfig::default()
    })
}

/// A fast-forwarded run against the stepping reference: completions, statistics, summary and KV
/// timeline identical (the fast-forward counter aside). Returns the iterations fast-forwarded.
pub(crate) fn fast_equals_step(
    mut fast: RunOutput,
    step: &RunOutput,
) -> Result<u64, TestCaseError> {
    prop_assert_eq!(step.stats.fast_forwarded_iterations, 0);
    prop_assert_eq!(step.stats.ff_absorbed_arrivals, 0);
    prop_assert_eq!(step.stats.ff_absorbing_boundaries, 0);
    let forwarded = fast.stats.fast_forwarded_iterations;
    fast.stats.fast_forwarded_iterations = 0;
    fast.stats.ff_absorbed_arrivals = 0;
    fast.stats.ff_absorbing_boundaries = 0;
    prop_assert_eq!(&fast.kv_timeline, &step.kv_timeline);
    prop_assert_eq!(&fast.completions, &step.completions);
    prop_assert_eq!(&fast.stats, &step.stats);
    prop_assert_eq!(
        serde_json::to_string(&fast.summary).unwrap(),
        serde_json::to_string(&step.summary).unwrap()
    );
    Ok(forwarded)
}

/// Differential test of the fast-forward (issue "Performance"): for every policy of the registry,
/// random cases as above run once fast-forwarded and once stepping every iteration as its own
/// event; completions (every timestamp, counter, prediction and priority), run statistics and the
/// summary must be identical. The policies that implement fast-forward (fcfs, vllm, mlfq,
/// skip-join-mlfq, srpt, sjf, sarathi, vllm-v1) must actually have fast-forwarded somewhere, so the comparison is not vacuous.
/// 24 cases per policy; `SERVESIM_POLICY_CASES=N` runs N.
#[test]
fn fast_forward_is_identical_to_stepping_every_iteration() {
    let all = ["oracle", "noisy", "history", "bucket", "ranking"];
    for entry in REGISTRY {
        let preds: Vec<&str> = match entry.forced_predictor {
            Some(f) => vec![f],
            None => all.to_vec(),
        };
        let mut runner = policy_runner(24);
        let forwarded = std::cell::Cell::new(0u64);
        let result = runner.run(&case_strategy(), |c| {
            // KV samples every 37 ms: a repeated iteration must never cross a sample instant.
            let scn = case_scenario(entry.name, &preds, &c)
                .table("[output]\nkv_timeline_interval_s = 0.037");
            let (fast, step) = scn.try_run_both(&c.rows).map_err(TestCaseError::fail)?;
            forwarded.set(forwarded.get() + fast_equals_step(fast, &step)?);
            Ok(())
        });
        if let Err(e) = result {
            panic!(
                "policy `{}`: fast-forward differs from stepping: {e}",
                entry.name
            );
        }
        if matches!(
            entry.name,
            "fcfs"
                | "vllm"
                | "mlfq"
                | "skip-join-mlfq"
                | "srpt"
                | "srpt-oracle"
                | "sjf"
                | "sjf-oracle"
                | "sarathi"
                | "vllm-v1"
        ) {
            assert!(
                forwarded.get() > 0,
                "policy `{}` never fast-forwarded: the differential test compared nothing",
                entry.name
            );
        }
    }
}

/// Differential test of MLFQ's stepwise fast-forward, which — when the batch holds every queued
/// request — also starts at an iteration that prefilled some of them and carries on through
/// completions (issue "Performance"), and takes in an arrival that joins the batch of everyone
/// without stopping (`code` preset), several at one boundary too. Cases are shaped for that
/// regime: a batch limit above the request count, sparse arrivals (gaps up to 2 s, so the batch
/// drains and refills, or up to 150 ms, so arrivals come while a batch runs, or 0, so several
/// arrive together), short outputs (completions inside runs), and KV from tight to ample; in half
/// the cases arrivals together may overrun the token budget, in a quarter the batch limit
/// (mutating either check of `Mlfq::may_absorb` fails the test). Every
/// MLFQ preset, offload mode, level cap and host size; outputs must equal stepping every
/// iteration, some runs must have taken arrivals in and some must have taken several in at one
/// boundary.
/// `SERVESIM_POLICY_CASES=N` runs N.
#[test]
fn mlfq_fast_forward_through_prefills_and_completions_is_identical_to_stepping() {
    let row = (
        prop_oneof![Just(0u64), 0u64..2_000 * MS, 0u64..150 * MS],
        1u32..=200,
        1u32..=60,
    );
    let strategy = (
        prop::collection::vec(row, 1..=40),
        0usize..2,
        0u32..16,
        0u32..40,
        0usize..3,
        0usize..3,
        0usize..4,
    );
    let mut runner = policy_runner(48);
    let forwarded = std::cell::Cell::new(0u64);
    let absorbed = std::cell::Cell::new(0u64);
    let several = std::cell::Cell::new(0u64);
    let result = runner.run(&strategy, |(gaps, policy, knob, extra_kv, cost, host, lim)| {
        let mut t = 0;
        let rows: Vec<Row> = gaps
            .into_iter()
            .map(|(gap, i, o)| {
                t += gap;
                (t, i, o)
            })
            .collect();
        let policy = ["mlfq", "skip-join-mlfq"][policy];
        let table = format!(
            "[policies.{policy}]\npreset = \"{}\"\noffload = \"{}\"\nstarvation_threshold_s = {}\nmax_levels = {}",
            if knob % 2 == 0 { "code" } else { "paper" },
            ["proactive", "paper", "reactive", "proactive"][(knob / 2 % 4) as usize],
            [0.05, 3.0][(knob / 4 % 2) as usize],
            [0, 3][(knob / 8 % 2) as usize],
        );
        let need = rows.iter().map(|r| blocks(r.1 + r.2 - 1)).max().unwrap();
        // Room for everyone, or arrivals together may overrun the token budget (the longest
        // prompt fits alone) or the batch limit.
        let (batch, batch_tokens) = [(64, 2048), (64, 200), (64, 200), (6, 2048)][lim];
        let mut scn = Scn::new(policy, COSTS[cost])
            .batch(batch)
            .kv(need + extra_kv)
            .table(&table)
            .table("[output]\nkv_timeline_interval_s = 0.25");
        scn.max_context_tokens = CONTEXT;
        scn.max_batch_tokens = batch_tokens;
        scn.host_kv_bytes = [Some(0), Some(40 << 20), None][host];
        let (fast, step) = scn.try_run_both(&rows).map_err(TestCaseError::fail)?;
        absorbed.set(absorbed.get() + fast.stats.ff_absorbed_arrivals);
        // More arrivals than boundaries taking them in: some boundary took several.
        let extra = fast.stats.ff_absorbed_arrivals - fast.stats.ff_absorbing_boundaries;
        several.set(several.get() + extra);
        forwarded.set(forwarded.get() + fast_equals_step(fast, &step)?);
        Ok(())
    });
    if let Err(e) = result {
        panic!("MLFQ fast-forward differs from stepping: {e}");
    }
    assert!(forwarded.get() > 0, "no case fast-forwarded");
    assert!(absorbed.get() > 0, "no run of repeats took an arrival in");
    assert!(
        several.get() > 0,
        "no run of repeats took several arrivals in at one boundary"
    );
}
