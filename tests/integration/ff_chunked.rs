//! Differential test of fast-forward for the chunked-prefill policies (issue 21, target 4):
//! `sarathi`, `vllm-v1`, and `mlfq`, `skip-join-mlfq`, `srpt`, `srpt-oracle` and `alise` with
//! `chunked_prefill = true`. Fast-forwarded runs must equal stepping every iteration, and every
//! policy that fast-forwards must have done so somewhere (the comparison is not vacuous).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use servesim::policy::lookup;

use crate::policies::{CONTEXT, COSTS, MS, Row, Scn, blocks, fast_equals_step, policy_runner};

/// The policies under test and whether they fast-forward (ALISE's aging key moves with the clock:
/// it always steps, and is here for the identity only).
const POLICIES: [(&str, bool); 7] = [
    ("sarathi", true),
    ("vllm-v1", true),
    ("mlfq", true),
    ("skip-join-mlfq", true),
    ("srpt", true),
    ("srpt-oracle", true),
    ("alise", false),
];

/// One random case: a trace, limits, a cost model and the knob that picks policy parameters.
#[derive(Debug, Clone)]
struct Case {
    rows: Vec<Row>,
    batch: u32,
    batch_tokens: u32,
    extra_kv_blocks: u32,
    cost: usize,
    host: usize,
    knob: u32,
    pp: u32,
}

/// Sparse or bursty arrivals (gaps up to 400 ms, so batches drain to steady decodes between
/// them, or pile up behind a full batch or a full KV pool), small token budgets (prompts are
/// chunked), batches of 1–8, KV from tight to ample, and now and then a pipeline.
fn case_strategy() -> impl Strategy<Value = Case> {
    let row = (
        prop_oneof![Just(0u64), 0u64..400 * MS],
        1u32..=300,
        1u32..=150,
    );
    (
        prop::collection::vec(row, 1..=30),
        1u32..=8,
        16u32..=320,
        0u32..=40,
        0usize..3,
        0usize..3,
        0u32..100_000,
        prop_oneof![3 => Just(1u32), 1 => Just(2u32)],
    )
        .prop_map(
            |(gaps, batch, batch_tokens, extra_kv_blocks, cost, host, knob, pp)| {
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
                    batch_tokens,
                    extra_kv_blocks,
                    cost,
                    host,
                    knob,
                    pp,
                }
            },
        )
}

/// `key = value` for `Some`, nothing for `None`.
fn opt(key: &str, v: Option<impl std::fmt::Display>) -> String {
    v.map(|v| format!("{key} = {v}\n")).unwrap_or_default()
}

/// The policy table of one case: every parameter that bears on admission, the budget and
/// preemption, drawn from the knob (chunk sizes stay within the case's token budget).
fn policy_table(policy: &str, c: &Case) -> String {
    let (k, mbt) = (c.knob, c.batch_tokens);
    let chunk = (k / 32 % 2 == 1).then_some((9 + k / 64 % 200).min(mbt));
    match policy {
        "sarathi" => format!(
            "[policies.sarathi]\n{}{}watermark_fraction = {}\n",
            opt("max_num_seqs", (k % 3 > 0).then_some(1 + k / 3 % c.batch)),
            opt("chunk_size", chunk),
            [0.0, 0.01, 0.05, 0.2][(k / 8192 % 4) as usize],
        ),
        "vllm-v1" => format!(
            "[policies.vllm-v1]\n{}{}long_prefill_token_threshold = {}\n",
            opt(
                "max_num_batched_tokens",
                (k % 2 == 1).then_some(1 + k / 2 % mbt)
            ),
            opt(
                "max_num_seqs",
                (k / 4 % 2 == 1).then_some(1 + k / 8 % c.batch)
            ),
            [0, 0, 16, 1 + k / 16 % 100][(k / 8192 % 4) as usize],
        ),
        "mlfq" | "skip-join-mlfq" => format!(
            "[policies.{policy}]\nchunked_prefill = true\n{}preset = \"{}\"\nstarvation_threshold_s = {}\nmax_levels = {}\n",
            opt("chunk_size", chunk),
            if k.is_multiple_of(2) { "code" } else { "paper" },
            [0.02, 0.1, 0.5, 3.0][(k / 2 % 4) as usize],
            [0, 3][(k / 8 % 2) as usize],
        ),
        "srpt" | "srpt-oracle" => format!(
            "[policies.{policy}]\nchunked_prefill = true\n{}preemption = \"{}\"\n",
            opt("chunk_size", chunk),
            ["swap", "recompute"][(k % 2) as usize],
        ),
        "alise" => format!(
            "[policies.alise]\nchunked_prefill = true\n{}aging_weight = {}\n",
            opt("chunk_size", chunk),
            [0.0, 0.1, 10.0][(k % 3) as usize],
        ),
        _ => unreachable!("{policy}"),
    }
}

fn case_scenario(policy: &str, c: &Case) -> Scn {
    let need = c.rows.iter().map(|r| blocks(r.1 + r.2 - 1)).max().unwrap();
    let mut scn = Scn::new(policy, COSTS[c.cost])
        .batch(c.batch)
        .kv(need + c.extra_kv_blocks)
        .table(&policy_table(policy, c))
        .table("[output]\nkv_timeline_interval_s = 0.037");
    scn.max_batch_tokens = c.batch_tokens;
    scn.max_context_tokens = CONTEXT;
    scn.pp = c.pp;
    scn.seed = c.knob as u64;
    scn = match c.host {
        0 => scn.host_kv_bytes(0),
        1 => scn.host_kv_bytes(40 << 20),
        _ => scn,
    };
    match lookup(policy).unwrap().forced_predictor {
        Some(_) => scn,
        None => scn.predictor(["oracle", "noisy", "history"][(c.knob / 3 % 3) as usize]),
    }
}

/// Fast-forward equals stepping every iteration for the chunked-prefill policies, and those that
/// fast-forward did (in some case). 32 cases per policy; `SERVESIM_POLICY_CASES=N` runs N.
#[test]
fn chunked_prefill_fast_forward_is_identical_to_stepping() {
    for (policy, forwards) in POLICIES {
        let mut runner = policy_runner(32);
        let forwarded = std::cell::Cell::new(0u64);
        let result = runner.run(&case_strategy(), |c| {
            let scn = case_scenario(policy, &c);
            let (fast, step) = scn.try_run_both(&c.rows).map_err(TestCaseError::fail)?;
            let n = fast_equals_step(fast, &step)
                .map_err(|e| TestCaseError::fail(format!("{e}\nscenario:\n{}", scn.toml())))?;
            forwarded.set(forwarded.get() + n);
            Ok(())
        });
        if let Err(e) = result {
            panic!("policy `{policy}` (chunked): fast-forward differs from stepping: {e}");
        }
        if forwards {
            assert!(
                forwarded.get() > 0,
                "policy `{policy}` (chunked) never fast-forwarded: the test compared nothing"
            );
        }
    }
}

/// A chunked `skip-join-mlfq` run (`preset = "code"`: `batch_memory = "reserve"`, recompute only)
/// that the differential test found: a popped request left out of a steady decode batch later
/// evicted a queued one by recompute, once an older member's decode crossed into a new block
/// (the recompute guard), so fast-forward kept blocks that stepping had freed (KV timeline
/// 3.145–3.219 s).
#[test]
fn chunked_reserve_mlfq_is_not_steady_when_a_block_crossing_may_unlock_a_recompute() {
    let rows: Vec<Row> = [
        (0, 1, 58),
        (0, 80, 147),
        (0, 31, 98),
        (333_239_812, 259, 121),
        (333_239_812, 28, 19),
        (534_496_567, 271, 28),
        (852_764_909, 8, 24),
        (852_764_909, 224, 29),
        (1_195_950_457, 250, 43),
        (1_301_278_331, 71, 135),
        (1_320_884_935, 56, 78),
        (1_320_884_935, 285, 3),
        (1_534_091_300, 148, 141),
        (1_534_091_300, 100, 27),
        (1_534_091_300, 189, 74),
        (1_692_108_222, 146, 128),
        (1_692_108_222, 216, 2),
    ]
    .to_vec();
    let mut scn = Scn::new("skip-join-mlfq", COSTS[2])
        .batch(6)
        .kv(56)
        .host_kv_bytes(0)
        .predictor("noisy")
        .table("[policies.skip-join-mlfq]\nchunked_prefill = true\nchunk_size = 199\npreset = \"code\"\nstarvation_threshold_s = 0.5\nmax_levels = 3")
        .table("[output]\nkv_timeline_interval_s = 0.037");
    scn.max_batch_tokens = 205;
    scn.max_context_tokens = CONTEXT;
    scn.seed = 89004;
    let (fast, step) = scn.try_run_both(&rows).unwrap();
    fast_equals_step(fast, &step).unwrap();
}
