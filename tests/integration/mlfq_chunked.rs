//! `mlfq` and `skip-join-mlfq` with chunked prefill under bursts that used to stall or livelock
//! (servesim issue 16): GPU memory full of prefills under way. Each run must end with every
//! request served.
//!
//! - Livelock (recompute, no host pool): every iteration preempted a partially prefilled request
//!   by recompute to start or continue another, and demotion kept rotating which one was
//!   thrown away; the burst below hit `[limits] max_sim_s` with 34 of 40 requests unfinished.
//! - Stall (swap, host pool full): the only way out recomputed one request whose blocks then fit
//!   no prefill chunk, and the plan ran nothing ("nothing to run while 53 requests are
//!   unfinished").

use crate::support::{Workdir, run_with_trace};

/// Scenario text: `policy` with chunked prefill, `max_batch_tokens` chunks.
fn scenario(policy: &str, cost: &str, memory: &str, batch: u32, tokens: u32) -> String {
    format!(
        r#"name = "mlfq-chunked"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
block_tokens = 16
{memory}

[cost]
{cost}

[scheduler]
policy = "{policy}"
max_batch_size = {batch}
max_batch_tokens = {tokens}

[limits]
max_sim_s = 3600

[policies.{policy}]
chunked_prefill = true
"#
    )
}

fn run_all(text: &str, rows: &str, n: usize) {
    let w = Workdir::new();
    let got = run_with_trace(&w, text, rows, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(got.len(), n, "every request finishes");
}

/// 40 requests at t = 0, prompts of 200–399 tokens (13–25 chunks of 16), 20 output tokens;
/// 60 KV blocks hold a few prompts; no host pool: every preemption is a recompute.
#[test]
fn recompute_burst_of_chunked_prefills_runs_to_the_end() {
    let rows: String = (0..40)
        .map(|i| format!("0,{},20\n", 200 + (i * 37) % 200))
        .collect();
    let memory = "kv_capacity_blocks = 60\nhost_kv_bytes = 0";
    let cost = "model = \"constant\"\niteration_s = 0.1";
    run_all(&scenario("mlfq", cost, memory, 16, 16), &rows, 40);
    run_all(&scenario("skip-join-mlfq", cost, memory, 16, 16), &rows, 40);
}

/// The first 60 requests of a ShareGPT burst (prompt, output tokens), all at t = 0.
const SHAREGPT_60: [(u32, u32); 60] = [
    (21, 518),
    (8, 66),
    (19, 936),
    (7, 287),
    (24, 187),
    (9, 328),
    (50, 589),
    (9, 237),
    (11, 64),
    (49, 292),
    (472, 220),
    (74, 207),
    (206, 195),
    (632, 879),
    (47, 1294),
    (88, 523),
    (1232, 597),
    (414, 1094),
    (24, 761),
    (194, 48),
    (169, 88),
    (344, 471),
    (51, 776),
    (26, 348),
    (209, 148),
    (80, 626),
    (18, 83),
    (52, 220),
    (126, 784),
    (119, 12),
    (19, 105),
    (1231, 152),
    (29, 221),
    (21, 281),
    (18, 350),
    (9, 58),
    (156, 1079),
    (997, 183),
    (26, 515),
    (56, 517),
    (196, 241),
    (24, 869),
    (54, 255),
    (18, 488),
    (15, 432),
    (230, 108),
    (18, 148),
    (30, 61),
    (9, 186),
    (208, 27),
    (832, 787),
    (811, 523),
    (523, 213),
    (781, 386),
    (1141, 194),
    (1149, 521),
    (686, 567),
    (1096, 790),
    (1151, 527),
    (1000, 28),
];

/// 140 KV blocks, a host pool of 10 blocks (13,107,200 bytes each for opt-13b at 16 tokens),
/// 64-token chunks: the host fills and the GPU holds prefills under way that each need more
/// blocks than any one eviction frees.
#[test]
fn swap_burst_with_a_full_host_pool_runs_to_the_end() {
    let rows: String = SHAREGPT_60
        .iter()
        .map(|(i, o)| format!("0,{i},{o}\n"))
        .collect();
    let memory = "kv_capacity_blocks = 140\nhost_kv_bytes = 131072000";
    for policy in ["mlfq", "skip-join-mlfq"] {
        run_all(
            &scenario(policy, "model = \"analytic\"", memory, 16, 64),
            &rows,
            60,
        );
    }
}

/// A ShareGPT burst (prompt, output tokens; all at t = 0): its first `n` rows as trace rows.
fn sharegpt_burst(n: usize) -> String {
    include_str!("../fixtures/sharegpt_burst_200.csv")
        .lines()
        .skip(1)
        .take(n)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Round 8, 12 (deadlock): `host_full = "recompute"` with the code preset's reserve, 140 KV blocks
/// (the largest request needs 128) and the default host pool. A decode that needed no block was
/// dropped from the batch by the recompute guard (dropping it freed nothing) and skipped by the
/// back-fill; the plan then recomputed it and ran nothing: "nothing to run while 187 requests are
/// unfinished (free KV blocks: 140)".
#[test]
fn reserve_with_host_full_recompute_never_plans_nothing() {
    let rows = sharegpt_burst(200);
    for policy in ["mlfq", "skip-join-mlfq"] {
        let text = format!(
            r#"name = "mlfq-chunked-deadlock"
model = "opt-13b"
gpu = "a100-80gb"

[trace]
file = "trace.csv"

[cost]
model = "analytic"

[scheduler]
policy = "{policy}"
max_batch_size = 16

[memory]
kv_capacity_blocks = 140

[policies.{policy}]
chunked_prefill = true
host_full = "recompute"
"#
        );
        run_all(&text, &rows, 200);
    }
}

/// Round 8, 03 (livelock): `batch_memory = "evict"`, 16-token chunks, 200 KV blocks, no host
/// pool. Each candidate took the blocks of the lowest-priority prefill under way by recompute,
/// and demotion kept rotating which one that was: 100 requests ran 30 simulated days and
/// ended "overloaded"; here they must end within 10⁶ events (the fix: about 3·10⁵).
#[test]
fn evict_with_small_chunks_and_recompute_runs_to_the_end() {
    let rows = sharegpt_burst(100);
    for policy in ["mlfq", "skip-join-mlfq"] {
        let text = format!(
            r#"name = "mlfq-chunked-evict"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[cost]
model = "analytic"

[scheduler]
policy = "{policy}"
max_batch_size = 16
max_batch_tokens = 2048

[memory]
kv_capacity_blocks = 200
host_kv_bytes = 0

[limits]
max_events = 1000000

[policies.{policy}]
chunked_prefill = true
chunk_size = 16
batch_memory = "evict"
"#
        );
        run_all(&text, &rows, 100);
    }
}
