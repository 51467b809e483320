//! Scheduling policies (issue "Scheduling policies", acceptance): hand-computed scenarios with
//! exact timestamps for every mechanism — MLFQ quantum demotion, FastServe's skip-join, starvation
//! promotion, SRPT preemption at iteration boundaries, non-preemptive SJF, vllm-ltr's starvation
//! boost, ALISE's aging, the predictors' misprediction rule — FastServe's three-job illustration,
//! and a property test that every registered policy finishes every request exactly once.
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

const MS: u64 = 1_000_000;

const CONST_10MS: &str = "model = \"constant\"\niteration_s = 0.01\n";
const LINEAR: &str = "model = \"linear\"\na_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.0\n";

/// One trace row: (arrival in ns, input tokens, output tokens). Ids are row indices.
type Row = (u64, u32, u32);

/// A scenario under test: OPT-13B's catalogue entry (context 2048) with an overridden cost model
/// and KV size, one replica unless told otherwise.
#[derive(Clone, Debug)]
struct Scn {
    policy: String,
    cost: String,
    batch: u32,
    max_batch_tokens: u32,
    max_context_tokens: u32,
    kv_blocks: u32,
    /// Host memory for swapped-out KV (`None`: the scenario default; 0 disables swapping, so
    /// every preemption is by recompute).
    host_kv_bytes: Option<u64>,
    replicas: u32,
    /// Pipeline stages per replica.
    pp: u32,
    seed: u64,
    predictor: Option<String>,
    /// Extra TOML tables (`[policies.NAME]`, `[predictors.NAME]`).
    tables: String,
}

impl Scn {
    fn new(policy: &str, cost: &str) -> Self {
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
    fn batch(mut self, b: u32) -> Self {
        self.batch = b;
        self
    }
    fn kv(mut self, blocks: u32) -> Self {
        self.kv_blocks = blocks;
        self
    }
    fn host_kv_bytes(mut self, bytes: u64) -> Self {
        self.host_kv_bytes = Some(bytes);
        self
    }
    fn predictor(mut self, p: &str) -> Self {
        self.predictor = Some(p.into());
        self
    }
    fn table(mut self, t: &str) -> Self {
        self.tables.push_str(t);
        self.tables.push('\n');
        self
    }
    fn policy(&self, p: &str) -> Self {
        let mut s = self.clone();
        s.policy = p.into();
        s
    }

    fn toml(&self) -> String {
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
    fn resolve(&self, rows: &[Row]) -> Result<(tempfile::TempDir, Resolved), String> {
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

    fn try_run(&self, rows: &[Row]) -> Result<RunOutput, String> {
        let (_dir, resolved) = self.resolve(rows)?;
        servesim::run::run(&resolved, None).map_err(|e| format!("run failed: {e}"))
    }

    /// The run with fast-forward on and off (the stepping reference).
    fn try_run_both(&self, rows: &[Row]) -> Result<(RunOutput, RunOutput), String> {
        let (_dir, resolved) = self.resolve(rows)?;
        let fast = servesim::run::run_with(&resolved, None, true)
            .map_err(|e| format!("fast-forward run failed: {e}"))?;
        let step = servesim::run::run_with(&resolved, None, false)
            .map_err(|e| format!("stepping run failed: {e}"))?;
        Ok((fast, step))
    }

    fn run(&self, rows: &[Row]) -> Vec<Completion> {
        let out = self
            .try_run(rows)
            .unwrap_or_else(|e| panic!("{}: {e}", self.policy));
        assert_eq!(out.completions.len(), rows.len(), "every request finishes");
        out.completions
    }
}

/// What a test expects of one request. `None` fields are not checked.
#[derive(Debug, Clone, Copy, Default)]
struct Exp {
    first_token_ns: Option<u64>,
    finish_ns: Option<u64>,
    preemptions: Option<u32>,
    priority: Option<f64>,
    demotions: Option<u32>,
    promotions: Option<u32>,
}

/// Expected first-token and finish times in ms.
fn at(first_token_ms: u64, finish_ms: u64) -> Exp {
    Exp {
        first_token_ns: Some(first_token_ms * MS),
        finish_ns: Some(finish_ms * MS),
        ..Exp::default()
    }
}

impl Exp {
    /// Level at finish, demotions, promotions (MLFQ family).
    fn mlfq(self, level: u32, demotions: u32, promotions: u32) -> Self {
        Exp {
            priority: Some(level as f64),
            demotions: Some(demotions),
            promotions: Some(promotions),
            ..self
        }
    }
    fn preempted(self, n: u32) -> Self {
        Exp {
            preemptions: Some(n),
            ..self
        }
    }
    fn promoted(self, n: u32) -> Self {
        Exp {
            promotions: Some(n),
            ..self
        }
    }
}

fn check(what: &str, got: &[Completion], exp: &[Exp]) {
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

fn mean_jct_ms(c: &[Completion]) -> f64 {
    c.iter()
        .map(|c| (c.finish_ns - c.arrival_ns) as f64 / MS as f64)
        .sum::<f64>()
        / c.len() as f64
}

/// MLFQ parameters with FastServe's code-preset quanta (10 ms × 2^p, one-level demotion) and
/// starvation out of the way.
const MLFQ_NO_STARVATION: &str =
    "base_quantum_s = 0.01\nratio = 2.0\nstarvation_threshold_s = 1000.0";

fn mlfq_table(policy: &str, body: &str) -> String {
    format!("[policies.{policy}]\n{body}\n")
}

// ---------------------------------------------------------------------------------------------
// 1. mlfq: quantum demotion step by step.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms iterations, quanta 10·2^p ms, batch size 1. A request at level p is demoted when
/// its attained service at that level *exceeds* the quantum, so it runs 2^p + 1 iterations at
/// level p (2 at L0, 3 at L1, 5 at L2, 9 at L3) before moving down one level; a request that just
/// ran goes back to the *front* of its level.
///
/// X (id 0, 12 tokens) and Y (id 1, 4 tokens) arrive at 0; Z (id 2, 3 tokens) at 35 ms.
/// ```text
///   0– 10 X g1, att 10 = q0: not > 10, stays L0 (front)      L0=[X,Y]
///  10– 20 X g2, att 20 > 10 → L1 (X d1)                        L0=[Y]   L1=[X]
///  20– 30 Y g1, att 10
///  30– 40 Y g2, att 20 → L1 front (Y d1)                       L1=[Y,X]
///      35 Z arrives                                            L0=[Z]
///  40– 50 Z g1; 50–60 Z g2 → L1 front (Z d1)                   L1=[Z,Y,X]
///  60– 70 Z g3 = last token: Z finishes at 70 at L1
///  70– 90 Y g3, g4: Y finishes at 90 at L1 (att 20, never > 20)
///  90–120 X g3..g5, att 30 > 20 at g5 → L2 (X d2)
/// 120–170 X g6..g10, att 50 > 40 at g10 → L3 (X d3)
/// 170–190 X g11, g12: X finishes at 190 at L3
/// ```
#[test]
fn mlfq_demotes_one_level_when_attained_service_exceeds_the_quantum() {
    let scn = Scn::new("mlfq", CONST_10MS).table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    let got = scn.run(&[(0, 8, 12), (0, 8, 4), (35 * MS, 8, 3)]);
    check(
        "mlfq demotion",
        &got,
        &[
            at(10, 190).mlfq(3, 3, 0).preempted(0),
            at(30, 90).mlfq(1, 1, 0).preempted(0),
            at(50, 70).mlfq(1, 1, 0).preempted(0),
        ],
    );
}

/// The "strictly greater" check at a quantum that is not a binary fraction: base 9 ms, ratio 3,
/// constant 9 ms iterations. Level 1's quantum is 27 ms = exactly 3 iterations, which must *not*
/// demote (27 is not > 27); the 4th iteration at L1 (36 > 27) does. (In floating point
/// 0.009 × 3 = 0.026999999999999996 < 0.027, so comparing seconds would demote one iteration
/// early.)
/// ```text
/// A (6 tokens, at 0):   g1 att 9 (L0), g2 att 18 > 9 → L1 (d1), g3..g5 att 9, 18, 27 (stays),
///                       g6 last token at 54 → level 1, 1 demotion
/// B (7 tokens, at 100): same, then g6 att 36 > 27 → L2 (d2), g7 last token at 163 → level 2
/// ```
#[test]
fn mlfq_demotion_is_strictly_greater_at_a_non_binary_quantum() {
    let scn = Scn::new("mlfq", "model = \"constant\"\niteration_s = 0.009\n").table(&mlfq_table(
        "mlfq",
        "base_quantum_s = 0.009\nratio = 3.0\nstarvation_threshold_s = 1000.0",
    ));
    let got = scn.run(&[(0, 8, 6), (100 * MS, 8, 7)]);
    check(
        "mlfq base 9 ms ratio 3",
        &got,
        &[at(9, 54).mlfq(1, 1, 0), at(109, 163).mlfq(2, 2, 0)],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. skip-join-mlfq vs naive mlfq.
// ---------------------------------------------------------------------------------------------

/// `LINEAR` cost: a 600-token prompt's prefill takes 70 ms, i.e. it exceeds quanta 10, 20 and 40
/// ms; the first quantum that covers it is level 3's (80 ms). Decodes take 10 ms. The two requests
/// are far apart, so each runs alone.
/// ```text
/// A (600 in, 3 out, at 0): prefill 0–70, decodes 70–80, 80–90 → finishes at 90
///   skip-join: joins L3; att 70, 80, 90 — finishes before any demotion → level 3, 0 demotions
///   mlfq:      joins L0; att 70 > 10 → L1 (d1); att 10, then finishes → level 1, 1 demotion
/// B (600 in, 10 out, at 1000): prefill 1000–1070, 9 decodes → finishes at 1160
///   skip-join: L3: att 70, 80 (not > 80), 90 > 80 at g3 → L4 (d1); g4..g10 att ≤ 70 → level 4
///   mlfq:      L0: 70 > 10 → L1 (d1); L1: 10, 20, 30 > 20 at g4 → L2 (d2);
///              L2: 10..50 > 40 at g9 → L3 (d3); g10 → level 3, 3 demotions
/// ```
#[test]
fn skip_join_mlfq_joins_the_level_that_covers_the_prefill() {
    let rows = [(0, 600, 3), (1000 * MS, 600, 10)];
    let base = Scn::new("skip-join-mlfq", LINEAR)
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    check(
        "skip-join-mlfq",
        &base.run(&rows),
        &[at(70, 90).mlfq(3, 0, 0), at(1070, 1160).mlfq(4, 1, 0)],
    );
    check(
        "mlfq",
        &base.policy("mlfq").run(&rows),
        &[at(70, 90).mlfq(1, 1, 0), at(1070, 1160).mlfq(3, 3, 0)],
    );
}

/// The per-level counts in `summary.json` for the two runs above: skip-join puts both arrivals at
/// L3 and demotes B once, into L4; naive MLFQ puts both at L0 and demotes A into L1 and B into
/// L1, L2 and L3. Nobody is promoted. Other policies' summaries have no such field.
#[test]
fn mlfq_summary_counts_arrivals_and_demotions_per_level() {
    let rows = [(0, 600, 3), (1000 * MS, 600, 10)];
    let base = Scn::new("skip-join-mlfq", LINEAR)
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION));
    let levels = |scn: &Scn| {
        let out = scn.try_run(&rows).unwrap();
        let v = serde_json::to_value(&out.summary).unwrap();
        let l = &v["replicas"][0]["mlfq_levels"];
        let col = |k: &str| -> Vec<u64> {
            l.as_array()
                .map(|a| a.iter().map(|x| x[k].as_u64().unwrap()).collect())
                .unwrap_or_default()
        };
        (col("arrivals"), col("demotions_in"), col("promotions_out"))
    };
    assert_eq!(
        levels(&base),
        (vec![0, 0, 0, 2, 0], vec![0, 0, 0, 0, 1], vec![0; 5])
    );
    assert_eq!(
        levels(&base.policy("mlfq")),
        (vec![2, 0, 0, 0], vec![0, 2, 1, 1], vec![0; 4])
    );
    let fcfs = base.policy("fcfs").try_run(&rows).unwrap();
    let v = serde_json::to_value(&fcfs.summary).unwrap();
    assert!(v["replicas"][0].get("mlfq_levels").is_none());
}

// ---------------------------------------------------------------------------------------------
// 3. Starvation promotion.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, quanta 10·2^p ms, batch size 1, starvation checked at every boundary
/// (`starvation_period_iterations = 1`) before the batch is formed (`starvation_check =
/// "before-batch"`; the `code` preset checks after, which moves each promotion one boundary later), idle time counted from arrival / last run
/// (`starvation_clock_from_zero = false`), attained service reset on promotion. X (id 0, 3 tokens)
/// and Y (id 1, 6 tokens) arrive at 0.
/// ```text
///  0–20 X g1, g2 → L1 (X d1), X idle from 20        L0=[Y] L1=[X]
/// 20–40 Y g1, g2 → L1 front (Y d1)                  L1=[Y,X]
/// 40–50 Y g3 (att 10)
/// threshold 30 ms:          at 50 X has been idle 30 ≥ 30 → promoted to L0 (X p1)
///   50–60 X g3 → X done at 60 (level 0); 60–70 Y g4, 70–80 Y g5 att 30 > 20 → L2 (d2),
///   80–90 Y g6 → Y done at 90 (level 2)
/// threshold 30 ms + 1 ns:   at 50 X idle 30 ms < threshold: no promotion; 50–60 Y g4 (att 20);
///   at 60 X idle 40 ≥ threshold → promoted (X p1); 60–70 X g3 → done at 70;
///   70–80 Y g5 → L2 (d2), 80–90 Y g6 → done at 90
/// no starvation (1000 s):   50–60 Y g4, 60–70 Y g5 → L2 (d2); L1=[X] runs: 70–80 X g3 → done at
///   80 at level 1; 80–90 Y g6 → done at 90
/// ```
#[test]
fn mlfq_starvation_promotion_fires_at_the_threshold_and_not_before() {
    let rows = [(0, 8, 3), (0, 8, 6)];
    let with_threshold = |t: &str| {
        Scn::new("mlfq", CONST_10MS)
            .table(&mlfq_table(
                "mlfq",
                &format!(
                    "base_quantum_s = 0.01\nratio = 2.0\nstarvation_threshold_s = {t}\n\
                     starvation_period_iterations = 1\nstarvation_clock_from_zero = false\n\
                     reset_attained_on_promotion = true\nstarvation_check = \"before-batch\""
                ),
            ))
            .run(&rows)
    };
    check(
        "threshold = idle time",
        &with_threshold("0.03"),
        &[at(10, 60).mlfq(0, 1, 1), at(30, 90).mlfq(2, 2, 0)],
    );
    check(
        "threshold 1 ns above the idle time",
        &with_threshold("0.030000001"),
        &[at(10, 70).mlfq(0, 1, 1), at(30, 90).mlfq(2, 2, 0)],
    );
    check(
        "no starvation",
        &with_threshold("1000.0"),
        &[at(10, 80).mlfq(1, 1, 0), at(30, 90).mlfq(2, 2, 0)],
    );
}

/// "Not before" to the nanosecond, with a threshold that is not a whole number of nanoseconds in
/// binary floating point (1.001 × 1e9 = 1000999999.9999999): skip-join-mlfq, constant iterations
/// of 1.001 s (D = 1,001,000,000 ns), base quantum 0.5 s, so every arrival joins L2 (quantum 2 s
/// covers 1.001 s); starvation checked before the batch is formed. A (id 0, 2 tokens) arrives at 0, B (id 1, 2 tokens) at 1 ns.
/// ```text
/// 0–D   A g1 (att 1.001 s ≤ 2 s, stays L2 front)
/// at D  B has been idle D − 1 ns = 1.000999999 s < 1.001 s → no promotion; A runs D–2D, done at 2D
/// at 2D B idle 2D − 1 ns ≥ 1.001 s → promoted L2 → L0 (B p1); 2D–3D B g1, att 1.001 > 0.5 → L1 (d1);
///       3D–4D B g2 → done at 4D at level 1
/// ```
#[test]
fn starvation_threshold_is_not_rounded_down_to_fire_a_nanosecond_early() {
    const D: u64 = 1_001_000_000;
    let got = Scn::new(
        "skip-join-mlfq",
        "model = \"constant\"\niteration_s = 1.001\n",
    )
    .table(&mlfq_table(
        "skip-join-mlfq",
        "base_quantum_s = 0.5\nratio = 2.0\nstarvation_threshold_s = 1.001\n\
             starvation_period_iterations = 1\nstarvation_clock_from_zero = false\n\
             reset_attained_on_promotion = true\nstarvation_check = \"before-batch\"",
    ))
    .run(&[(0, 8, 2), (1, 8, 2)]);
    let exp = |first: u64, finish: u64| Exp {
        first_token_ns: Some(first),
        finish_ns: Some(finish),
        ..Exp::default()
    };
    check(
        "1 ns below the threshold",
        &got,
        &[exp(D, 2 * D).mlfq(2, 0, 0), exp(3 * D, 4 * D).mlfq(1, 1, 1)],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. srpt-oracle: preemption at the next iteration boundary.
// ---------------------------------------------------------------------------------------------

/// `LINEAR` cost, batch size 1. L (id 0: 600 in, 10 out) arrives at 0; S (id 1: 100 in, 2 out)
/// arrives at 75 ms, in the middle of L's first decode.
/// ```text
/// 0–70 L prefill (g1); 70–80 L decode (g2); S arrives at 75 but waits for the boundary
/// at 80: remaining L = 8 decodes = 80 ms, S = prefill 20 + decode 10 = 30 ms → S goes first
/// 80–100 S prefill (g1), 100–110 S decode → S done at 110
/// enough KV (1000 blocks): L keeps its 38 blocks resident while paused (0 preemptions) and
///   resumes with a decode: 110–190, 8 decodes → L done at 190 = its own 70 + 9 × 10 plus S's 30
///   (a re-prefill would have cost 70.2 ms instead of a 10 ms decode)
/// tight KV (40 blocks, no host pool so that preemption is by recompute): L holds 38 blocks
///   (601 tokens), S needs 7 with 2 free → L is preempted by recompute (1 preemption); at 110 it
///   re-prefills 602 tokens (70.2 ms, g3) then decodes 7: 110 + 70.2 + 70 = 250.2
/// ```
#[test]
fn srpt_oracle_preempts_a_long_request_at_the_next_boundary() {
    let rows = [(0, 600, 10), (75 * MS, 100, 2)];
    let scn = Scn::new("srpt-oracle", LINEAR);
    let got = scn.run(&rows);
    check(
        "srpt-oracle, KV to spare",
        &got,
        &[at(70, 190).preempted(0), at(100, 110).preempted(0)],
    );
    assert_eq!(
        got[1].first_scheduled_ns,
        80 * MS,
        "S starts at the boundary after its arrival, not at its arrival"
    );
    let tight = scn.kv(40).host_kv_bytes(0).run(&rows);
    check(
        "srpt-oracle, tight KV",
        &tight,
        &[
            Exp {
                first_token_ns: Some(70 * MS),
                finish_ns: Some(250_200_000),
                preemptions: Some(1),
                ..Exp::default()
            },
            at(100, 110).preempted(0),
        ],
    );
}

/// Equal remaining sizes go by arrival, exactly. Constant 10 ms, batch size 1, oracle predictions.
/// A (id 0, 10 tokens) arrives at 0; B (id 1, 7 tokens) arrives at 30 ms, a boundary.
/// ```text
/// 0–10 A prefill (g1), 10–30 A g2, g3; at 30 A has 10 − 3 = 7 decodes left: 7 × 10 = 70 ms;
///   B needs its prefill + 6 decodes: 10 + 6 × 10 = 70 ms → a tie, A arrived first:
/// A 30–100 (done at 100); B 100–170 (first token 110)
/// ```
/// Summed in floating point the keys were A = 7 × 0.01 = 0.07 and B = 0.01 + 6 × 0.01 =
/// 0.06999999999999999, so B ran first (B 30–100, A 100–170). ALISE without aging has the same key.
#[test]
fn equal_remaining_sizes_go_by_arrival() {
    let rows = [(0, 8, 10), (30 * MS, 8, 7)];
    let exp = [at(10, 100).preempted(0), at(110, 170).preempted(0)];
    let base = Scn::new("srpt-oracle", CONST_10MS);
    check("srpt-oracle", &base.run(&rows), &exp);
    let alise = base
        .policy("alise")
        .predictor("oracle")
        .table("[policies.alise]\naging_weight = 0.0");
    check("alise w = 0", &alise.run(&rows), &exp);
}

// ---------------------------------------------------------------------------------------------
// 5. FastServe's three-job illustration.
// ---------------------------------------------------------------------------------------------

/// FastServe (§1.2 of the papers notes, Fig. 6/7): three jobs arrive together; J1 has a long input
/// and a short output. Paper's average latencies: FCFS 4.23, naive MLFQ 5.0, skip-join MLFQ 3.3,
/// SRPT 3.0. Here, `LINEAR` cost, batch size 1, quanta 10·2^p ms, all three at t = 0 (J1 first in
/// arrival order):
/// - J1 (id 0): 600 in, 2 out → prefill 70 + 1 decode = 80 ms of work;
/// - J2, J3 (ids 1, 2): 50 in, 3 out → prefill 15 + 2 decodes = 35 ms each.
/// ```text
/// fcfs:   J1 0–80, J2 80–115, J3 115–150                       JCT 80, 115, 150 → mean 115
/// mlfq:   all join L0; J1's prefill 0–70 runs first (wasted priority), → L1;
///         J2 prefill 70–85 → L1 front; J3 prefill 85–100 → L1 front; L1=[J3,J2,J1]:
///         J3 100–120 done, J2 120–140 done, J1 140–150 done    JCT 150, 140, 120 → mean 136.67
/// skip-join: J1 joins L3 (70 ≤ 80); J2, J3 join L1 (15 ≤ 20):
///         J2 0–15 (att 15), 15–25 (att 25 > 20 → L2); J3 25–40, 40–50 → L2 front; L2=[J3,J2]:
///         J3 50–60 done, J2 60–70 done, J1 70–150 done        JCT 150, 70, 60 → mean 93.33
/// srpt-oracle: J2 0–35, J3 35–70 (tie broken by arrival), J1 70–150
///                                                               JCT 150, 35, 70 → mean 85
/// ```
/// Mechanism: naive MLFQ is worse than FCFS because J1's long prefill runs first anyway (every
/// arrival starts at L0) *and* J1 is then pushed behind the short jobs; skip-join sends J1 straight
/// to the level of its prefill, so the short jobs go first (a nearly SRPT-like order; it loses to
/// SRPT only because J2 is demoted to L2 one decode before finishing and J3 overtakes it).
#[test]
fn fastserve_three_job_illustration() {
    let rows = [(0, 600, 2), (0, 50, 3), (0, 50, 3)];
    let base = Scn::new("fcfs", LINEAR)
        .table(&mlfq_table("mlfq", MLFQ_NO_STARVATION))
        .table(&mlfq_table("skip-join-mlfq", MLFQ_NO_STARVATION));
    let expect: [(&str, [u64; 3], f64); 4] = [
        ("fcfs", [80, 115, 150], 115.0),
        ("mlfq", [150, 140, 120], 410.0 / 3.0),
        ("skip-join-mlfq", [150, 70, 60], 280.0 / 3.0),
        ("srpt-oracle", [150, 35, 70], 85.0),
    ];
    let mut mean = std::collections::BTreeMap::new();
    for (policy, finish_ms, mean_ms) in expect {
        let got = base.policy(policy).run(&rows);
        for (c, f) in got.iter().zip(finish_ms) {
            assert_eq!(c.finish_ns, f * MS, "{policy}: finish of J{}", c.id + 1);
        }
        let m = mean_jct_ms(&got);
        assert!((m - mean_ms).abs() < 1e-9, "{policy}: mean JCT {m} ms");
        mean.insert(policy, m);
    }
    assert!(mean["skip-join-mlfq"] < mean["mlfq"], "{mean:?}");
    assert!(mean["skip-join-mlfq"] < mean["fcfs"], "{mean:?}");
    assert!(mean["fcfs"] < mean["mlfq"], "{mean:?}");
    for (p, m) in &mean {
        assert!(mean["srpt-oracle"] <= *m, "srpt-oracle vs {p}: {mean:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. sjf-oracle: non-preemptive.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, batch size 1. L (id 0, 10 tokens) at 0 starts at once; W (id 1, 8 tokens)
/// arrives at 5 ms and S (id 2, 2 tokens) at 15 ms.
/// ```text
/// sjf-oracle:  L is never interrupted: 0–100 → done at 100 (first token 10);
///              S (20 ms job) jumps ahead of W (80 ms): 100–120; W 120–200
/// fcfs:        L 0–100, W 100–180, S 180–200
/// srpt-oracle: (preemptive, for contrast) at 10: W 80 < L 90 → W 10–20; at 20: S 20 → S 20–40;
///              W 40–110; L resumes 110–200
/// ```
#[test]
fn sjf_oracle_does_not_preempt_but_short_jobs_jump_the_queue() {
    let rows = [(0, 8, 10), (5 * MS, 8, 8), (15 * MS, 8, 2)];
    let base = Scn::new("sjf-oracle", CONST_10MS);
    check(
        "sjf-oracle",
        &base.run(&rows),
        &[
            at(10, 100).preempted(0),
            at(130, 200).preempted(0),
            at(110, 120).preempted(0),
        ],
    );
    check(
        "fcfs",
        &base.policy("fcfs").run(&rows),
        &[at(10, 100), at(110, 180), at(190, 200)],
    );
    check(
        "srpt-oracle",
        &base.policy("srpt-oracle").run(&rows),
        &[at(10, 200).preempted(0), at(20, 110), at(30, 40)],
    );
}

// ---------------------------------------------------------------------------------------------
// 7. ltr: starvation boost.
// ---------------------------------------------------------------------------------------------

/// Constant 10 ms, batch size 1, oracle predictions. P (id 0, 10 tokens) and Q (id 1, 6 tokens)
/// arrive at 0; Q ranks first (6 < 10). A request not scheduled for `starvation_iterations`
/// consecutive decisions is boosted to the top for its next `boost_iterations` scheduled ones.
/// ```text
/// starvation 3, boost 2:
///   decisions at 0, 10, 20 run Q (g1..g3); P idle 1, 2, 3 → boosted at the decision at 20 (p1)
///   30–50 P (boosted, g1, g2); Q idle
///   50–80 Q (g4..g6, done at 80); P idle 1, 2, 3 → boosted again at 70 (p2)
///   80–160 P g3..g10 → done at 160
/// starvation 4, boost 2:
///   0–40 Q g1..g4; P idle 4 at the decision at 30 → boosted (p1)
///   40–60 P g1, g2; 60–80 Q g5, g6 (done at 80; P idle only 2); 80–160 P
/// no starvation (1000): Q 0–60, P 60–160
/// ```
#[test]
fn ltr_boosts_a_request_after_starvation_iterations() {
    let rows = [(0, 8, 10), (0, 8, 6)];
    let with = |starve: u32| {
        Scn::new("ltr", CONST_10MS)
            .predictor("oracle")
            .table(&format!(
                "[policies.ltr]\nstarvation = true\nstarvation_iterations = {starve}\nboost_iterations = 2"
            ))
            .run(&rows)
    };
    check(
        "ltr starvation 3",
        &with(3),
        &[at(40, 160).promoted(2), at(10, 80).promoted(0)],
    );
    check(
        "ltr starvation 4",
        &with(4),
        &[at(50, 160).promoted(1), at(10, 80).promoted(0)],
    );
    check(
        "ltr no starvation",
        &with(1000),
        &[at(70, 160).promoted(0), at(10, 60).promoted(0)],
    );
}

// ---------------------------------------------------------------------------------------------
// 8. alise: aging.
// ---------------------------------------------------------------------------------------------

/// A deterministic pseudo-random trace (splitmix64): `n` requests, arrivals 0–9 ms apart (some
/// simultaneous), inputs 1–400, outputs 1–80.
fn pseudo_random_rows(seed: u64, n: usize) -> Vec<Row> {
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % m
    };
    let mut t = 0;
    (0..n)
        .map(|_| {
            t += next(4) * 3 * MS;
            (t, 1 + next(400) as u32, 1 + next(80) as u32)
        })
        .collect()
}

/// With `aging_weight = 0` (its default), ALISE's key is the estimated remaining time, exactly
/// SRPT's: with its memory manager and KV quantization switched off (`offload = "reactive"`,
/// `kv_offload_bits = 16`) the two policies with the same predictor produce identical runs
/// (batching, KV preemptions and all).
#[test]
fn alise_without_aging_is_srpt_with_the_same_predictor() {
    let rows = pseudo_random_rows(11, 60);
    for predictor in ["oracle", "noisy", "history"] {
        let base = Scn::new("srpt", LINEAR)
            .batch(4)
            .kv(60)
            .predictor(predictor)
            .table("[policies.alise]\noffload = \"reactive\"\nkv_offload_bits = 16");
        let srpt = base.run(&rows);
        let alise = base.policy("alise").run(&rows);
        assert_eq!(srpt, alise, "predictor {predictor}");
        assert!(
            srpt.iter().any(|c| c.preemptions > 0),
            "the case exercises KV preemption"
        );
    }
}

/// Constant 10 ms, batch size 1, oracle predictions. W (id 0, 5 tokens: 50 ms of work) arrives at
/// 0 with a stream of one-token jobs S1..S8 (ids 1..8, 10 ms each) arriving every 10 ms from 0,
/// each exactly at a boundary. Key = remaining − w × waited.
/// ```text
/// srpt / alise w = 0: each S_k runs at once (10 < 50): S_k done at 10k; W runs 80–130 (first token 90)
/// alise w = 0.9 s/s: W's key at t: 0.05 − 0.9 t → 0.041, 0.032, 0.023, 0.014 at 10..40 (> 0.01,
///   S_k goes first); at 50 it is 0.005 < 0.01 → W runs 50–60 (g1). Then at 60 W's key is back at
///   0.04 while S6 (waited 10 ms: 0.01 − 0.009) goes first; S7, S8 likewise; W 90–130.
///   S1..S5 done at 10..50, S6 at 70, S7 at 80, S8 at 90; W first token 60, done at 130
/// ```
#[test]
fn alise_aging_lets_a_long_waiting_request_get_ahead() {
    let mut rows = vec![(0, 8, 5)];
    rows.extend((0..8).map(|k| (k * 10 * MS, 8, 1)));
    let base = Scn::new("srpt-oracle", CONST_10MS);
    let alise = |w: &str| {
        base.policy("alise")
            .predictor("oracle")
            .table(&format!("[policies.alise]\naging_weight = {w}"))
            .run(&rows)
    };
    let no_aging: Vec<Exp> = std::iter::once(at(90, 130))
        .chain((1..=8).map(|k| at(10 * k, 10 * k)))
        .collect();
    check("srpt-oracle", &base.run(&rows), &no_aging);
    check("alise w = 0", &alise("0.0"), &no_aging);
    let aged: Vec<Exp> = std::iter::once(at(60, 130))
        .chain((1..=5).map(|k| at(10 * k, 10 * k)))
        .chain((6..=8).map(|k| at(10 * k + 10, 10 * k + 10)))
        .collect();
    check("alise w = 0.9", &alise("0.9"), &aged);
}

// ---------------------------------------------------------------------------------------------
// 9. Predictors.
// ---------------------------------------------------------------------------------------------

/// `noisy` with σ = 0 and no bias predicts the true length, so every prediction-driven policy runs
/// exactly as with the oracle.
#[test]
fn noisy_with_zero_sigma_equals_the_oracle() {
    let rows = pseudo_random_rows(5, 50);
    for policy in ["srpt", "sjf", "ltr", "alise", "fcfs"] {
        let base = Scn::new(policy, LINEAR)
            .batch(3)
            .kv(80)
            .table("[policies.fcfs]\nreserve = \"oracle\"")
            .table("[predictors.noisy]\nsigma = 0.0\nbias = 0.0");
        let oracle = base.clone().predictor("oracle").run(&rows);
        let noisy = base.predictor("noisy").run(&rows);
        assert_eq!(oracle, noisy, "{policy}");
        for (c, r) in oracle.iter().zip(&rows) {
            assert_eq!(
                c.predicted_output_tokens, r.2,
                "{policy}: oracle prediction"
            );
        }
    }
}

/// `noisy` with σ = 0 and bias = ln 0.25 predicts a quarter of the true length (at least 1). A
/// request that has generated as many tokens as predicted and is not finished gets the prediction
/// `generated + max(16, prediction / 2)`; `requests.csv` reports the last one.
/// ```text
/// true 100: 25 → 25+16=41 → 41+max(16,20)=61 → 61+30=91 → 91+45=136 (finishes at 100) → 136
/// true  64: 16 → 32 → 48 → 48+24=72                                                     →  72
/// true  40: 10 → 26 → 26+max(16,13)=42                                                  →  42
/// true   8:  2 → 18                                                                     →  18
/// true   4:  1 → 17                                                                     →  17
/// true   2:  round(0.5) or 1 (clamped) = 1 → 17                                         →  17
/// true   1:  1, finishes with its first token: never extended                          →   1
/// true  16:  4 → 20 (finishes at 16)                                                    →  20
/// ```
#[test]
fn misprediction_rule_shows_in_requests_csv() {
    let truth = [100u32, 64, 40, 8, 4, 2, 1, 16];
    let expected = [136u32, 72, 42, 18, 17, 17, 1, 20];
    let rows: Vec<Row> = truth
        .iter()
        .enumerate()
        .map(|(i, &o)| (i as u64 * MS, 32, o))
        .collect();
    let out = Scn::new("srpt", CONST_10MS)
        .batch(4)
        .predictor("noisy")
        .table(&format!(
            "[predictors.noisy]\nsigma = 0.0\nbias = {:?}",
            0.25f64.ln()
        ))
        .try_run(&rows)
        .unwrap();
    let csv = servesim::output::requests_csv(&out);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (id, pred, outp) = (
        col("id"),
        col("predicted_output_tokens"),
        col("output_tokens"),
    );
    let mut seen = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let i: usize = f[id].parse().unwrap();
        assert_eq!(f[outp].parse::<u32>().unwrap(), truth[i]);
        assert_eq!(
            f[pred].parse::<u32>().unwrap(),
            expected[i],
            "request {i} (true output {})",
            truth[i]
        );
        seen += 1;
    }
    assert_eq!(seen, truth.len());
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

const COSTS: [&str; 3] = [
    LINEAR,
    CONST_10MS,
    "model = \"linear\"\na_s = 0.004\nb_s_per_token = 0.00013\nc_s_per_token_sq = 1e-8\nd_s_per_request = 0.0007\ne_s_per_context_token = 0.000011\n",
];

const CONTEXT: u32 = 512;

fn blocks(tokens: u32) -> u32 {
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
fn policy_runner(default: u32) -> TestRunner {
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
fn fast_equals_step(mut fast: RunOutput, step: &RunOutput) -> Result<u64, TestCaseError> {
    prop_assert_eq!(step.stats.fast_forwarded_iterations, 0);
    let forwarded = fast.stats.fast_forwarded_iterations;
    fast.stats.fast_forwarded_iterations = 0;
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
/// skip-join-mlfq, srpt, sjf) must actually have fast-forwarded somewhere, so the comparison is not vacuous.
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
/// completions (issue "Performance"). Cases are shaped for that regime: a batch limit above the
/// request count, sparse arrivals (gaps up to 2 s, so the batch drains and refills), short outputs
/// (completions inside runs), and KV from tight to ample. Every MLFQ preset, offload mode, level
/// cap and host size; outputs must equal stepping every iteration. `SERVESIM_POLICY_CASES=N` runs N.
#[test]
fn mlfq_fast_forward_through_prefills_and_completions_is_identical_to_stepping() {
    let row = (
        prop_oneof![Just(0u64), 0u64..2_000 * MS],
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
    );
    let mut runner = policy_runner(48);
    let forwarded = std::cell::Cell::new(0u64);
    let result = runner.run(&strategy, |(gaps, policy, knob, extra_kv, cost, host)| {
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
        let mut scn = Scn::new(policy, COSTS[cost])
            .batch(64)
            .kv(need + extra_kv)
            .table(&table)
            .table("[output]\nkv_timeline_interval_s = 0.25");
        scn.max_context_tokens = CONTEXT;
        scn.host_kv_bytes = [Some(0), Some(40 << 20), None][host];
        let (fast, step) = scn.try_run_both(&rows).map_err(TestCaseError::fail)?;
        forwarded.set(forwarded.get() + fast_equals_step(fast, &step)?);
        Ok(())
    });
    if let Err(e) = result {
        panic!("MLFQ fast-forward differs from stepping: {e}");
    }
    assert!(forwarded.get() > 0, "no case fast-forwarded");
}
