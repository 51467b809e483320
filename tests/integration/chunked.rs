//! Chunked prefill (and its token gaps) under `sarathi` and `vllm-v1` (`shared/docs/chunked-prefill.md` §7), through
//! the CLI with a constant cost (every iteration takes 100 ms), so every time below is a count of
//! iterations derived by hand.
//!
//! Common setup: block size 16, ample KV, token budget 512 (`max_batch_tokens`, also `sarathi`'s
//! `chunk_size` and `vllm-v1`'s `max_num_batched_tokens` by default). D1 and D2 (one-token prompts)
//! arrive at 0 and are prefilled by iteration 1 (0–100 ms); from iteration 2 on they decode one
//! token per iteration. A (3,000-token prompt) arrives at 50 ms and is first scheduled in
//! iteration 2.

use std::path::Path;

use crate::support::{
    Row, Workdir, cli, read_column, read_summary, run_with_trace as run_in, workspace_root,
};

const MS: u64 = 1_000_000;
const POLICIES: [&str; 2] = ["sarathi", "vllm-v1"];

pub(crate) fn scenario(policy: &str, cap_blocks: u32, max_batch_size: u32, tables: &str) -> String {
    format!(
        r#"name = "chunked"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
block_tokens = 16
kv_capacity_blocks = {cap_blocks}

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "{policy}"
max_batch_size = {max_batch_size}
max_batch_tokens = 512
max_context_tokens = 4096

{tables}"#
    )
}

fn run(scenario_text: &str, rows: &str) -> Vec<Row> {
    let w = Workdir::new();
    run_in(&w, scenario_text, rows, &[])
        .unwrap_or_else(|e| panic!("run failed: {e}\n{scenario_text}"))
}

/// (first token, finish) in ms per request, in id order.
fn times(rows: &[Row]) -> Vec<(u64, u64)> {
    rows.iter()
        .map(|r| (r.first_token_ns / MS, r.finish_ns / MS))
        .collect()
}

const D1_D2_A: &str = "0,1,20\n0,1,20\n0.05,3000,3\n";

/// T1: A runs as 510 × 5 + 450 in iterations 2–7 next to the two decodes (510 + 2 = 512, the
/// budget); its first token comes at the end of iteration 7 (700 ms), its others at 800 and
/// 900 ms. D1 and D2 emit a token in every iteration: token k at 100·k ms, the 20th at 2,000 ms.
#[test]
fn t1_a_long_prompt_is_chunked_while_decodes_keep_going() {
    for p in POLICIES {
        let rows = run(&scenario(p, 10_000, 128, ""), D1_D2_A);
        assert_eq!(
            times(&rows),
            vec![(100, 2000), (100, 2000), (700, 900)],
            "{p}"
        );
        assert!(rows.iter().all(|r| r.preemptions == 0), "{p}");
    }
}

/// T2: B (100 tokens) arrives right after A. Without a threshold, B waits until iteration 7,
/// where A's last chunk (450) leaves 60 tokens: B gets 60, then 40 in iteration 8 → first token
/// at 800 ms (7 iterations after A's first chunk); A's at 700 ms (6 iterations). With
/// `long_prefill_token_threshold = 256` (`vllm-v1`): iteration 2 runs D1, D2, A 256 and B 100 → B's
/// first token at 200 ms (1 iteration); A needs 11 × 256 + 184 = 12 chunks → 1,300 ms.
#[test]
fn t2_the_threshold_lets_a_short_prompt_overtake() {
    let rows_csv = "0,1,20\n0,1,20\n0.05,3000,3\n0.06,100,2\n";
    for p in POLICIES {
        let rows = run(&scenario(p, 10_000, 128, ""), rows_csv);
        let t = times(&rows);
        assert_eq!(t[2], (700, 900), "{p}: A");
        assert_eq!(t[3], (800, 900), "{p}: B");
    }
    let rows = run(
        &scenario(
            "vllm-v1",
            10_000,
            128,
            "[policies.vllm-v1]\nlong_prefill_token_threshold = 256\n",
        ),
        rows_csv,
    );
    let t = times(&rows);
    assert_eq!(t[2], (1300, 1500), "A");
    assert_eq!(t[3], (200, 300), "B");
    // D1 and D2 still emit every iteration (the budget never runs out: ≤ 2 + 256 + 100).
    assert_eq!(&t[..2], &[(100, 2000), (100, 2000)]);
}

/// A prompt longer than `max_batch_tokens` runs under the chunking policies; `vllm` rejects the
/// run with an error naming the request and the limit.
#[test]
fn a_prompt_longer_than_the_budget_needs_a_chunking_policy() {
    for p in POLICIES {
        let rows = run(&scenario(p, 10_000, 128, ""), "0,4000,2\n");
        assert_eq!(rows.len(), 1, "{p}");
        // ⌈4000 / 512⌉ = 8 chunks: first token at 800 ms.
        assert_eq!(times(&rows), vec![(800, 900)], "{p}");
    }
    let w = Workdir::new();
    let e = run_in(
        &w,
        &scenario("vllm", 10_000, 128, ""),
        "0,1,2\n0,4000,2\n",
        &[],
    )
    .unwrap_err();
    for needle in [
        "request 1",
        "4000 tokens exceeds max_batch_tokens = 512",
        "`sarathi`",
        "`vllm-v1`",
    ] {
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
}

/// Queueing sanity: one-token prompts, constant cost, at most 4 requests at a time, ample KV.
/// Every prefill is then one token, so the budget never binds, nobody is ever mid-prefill and
/// nobody is preempted; `sarathi`, `vllm-v1` and `fcfs` (Orca: every running request plus FCFS
/// admission up to `max_batch_size` in the same iteration) all run every admitted request each
/// iteration and admit FCFS into the slots freed at the same boundary, so completion times
/// coincide. (`vllm` does not: its admitting iterations are prefill-only.)
#[test]
fn one_token_prompts_queue_as_under_fcfs() {
    let mut rows = String::new();
    for i in 0..40u32 {
        rows.push_str(&format!(
            "{:.3},1,{}\n",
            i as f64 * 0.137,
            1 + (i * 7919) % 23
        ));
    }
    let fcfs = run(
        &scenario("fcfs", 10_000, 4, "[policies.fcfs]\nreserve = \"oracle\"\n"),
        &rows,
    );
    for p in POLICIES {
        let got = run(&scenario(p, 10_000, 4, ""), &rows);
        assert_eq!(times(&got), times(&fcfs), "{p}");
    }
}

/// Fast-forward on and off give byte-identical outputs for both policies on a small
/// ShareGPT-like run (the repo's ShareGPT lengths, Poisson arrivals).
#[test]
fn fast_forward_on_equals_off() {
    let root = crate::support::workspace_root();
    let lengths = root.join("traces/sharegpt_vllm_opt.csv");
    for p in POLICIES {
        let text = format!(
            r#"name = "ff"
seed = 3
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = 4.0
lengths_file = "{}"
num_requests = 200

[cost]
model = "analytic"

[scheduler]
policy = "{p}"
max_batch_size = 16
max_batch_tokens = 512
"#,
            lengths.display()
        );
        let w = Workdir::new();
        let scen = w.write("scenario.toml", &text);
        let mut dirs = Vec::new();
        for extra in [None, Some("--no-fast-forward")] {
            let out = w.path(if extra.is_some() { "step" } else { "fast" });
            let mut args: Vec<std::ffi::OsString> = vec![
                "run".into(),
                scen.clone().into_os_string(),
                "--out".into(),
                out.clone().into_os_string(),
                "--quiet".into(),
            ];
            args.extend(extra.map(Into::into));
            let r = cli(args);
            assert_eq!(r.code, 0, "{p}: {}", r.stderr);
            dirs.push(out);
        }
        assert_same_outputs(&dirs[0], &dirs[1], p);
    }
}

fn assert_same_outputs(a: &Path, b: &Path, p: &str) {
    let mut names: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "timing.json")
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for n in names {
        let x = std::fs::read(a.join(&n)).unwrap();
        let y = std::fs::read(b.join(&n)).unwrap();
        assert!(x == y, "{p}: {n:?} differs between fast-forward on and off");
    }
}

/// §7 T3 with a small KV pool (300 blocks): D1 and D2 (1,000-token prompts, 50 tokens out) grow to
/// 66 blocks each; A (3,000 tokens, 188 blocks in all) does not fit beside them. `vllm-v1`
/// allocates per chunk, so A is admitted and preempted mid-prefill by recompute (it is the tail of
/// `running`) until a decode finishes; `sarathi` reserves the whole prompt, so A waits. Either way
/// every request completes.
#[test]
fn recompute_mid_prefill_completes_every_request() {
    let rows_csv = "0,1000,50\n0,1000,50\n0.5,3000,2\n";
    for p in POLICIES {
        let rows = run(&scenario(p, 300, 128, ""), rows_csv);
        assert_eq!(rows.len(), 3, "{p}");
        let a = &rows[2];
        assert!(a.first_token_ns < a.finish_ns, "{p}");
        match p {
            "vllm-v1" => assert!(a.preemptions >= 1, "{p}: A was never preempted"),
            _ => assert_eq!(a.preemptions, 0, "{p}: A waits instead"),
        }
    }
}

/// `sarathi`'s decode rule (§7 T4): a decode runs only while a KV block is free, else the
/// latest-arrived unvisited running request is preempted by recompute, even a prefill under way.
/// 189 blocks, watermark 0. D1 (1-token prompt, 30 out) holds 1 block (2 from iteration 17, when
/// its KV reaches 17 tokens). A (3,000 tokens = 188 blocks) arrives at 50 ms and is admitted in
/// iteration 2 (free 188 − 188 ≥ 0), which leaves 0 free: in iterations 3–16 D1's decode preempts
/// A (its chunk of 511 dropped), whose blocks then fit again, so A is re-admitted from scratch in
/// the same iteration; in iteration 17 D1 takes one of A's freed blocks and A (188) no longer fits:
/// it waits until D1 finishes at the end of iteration 30 (3,000 ms). Iterations 31–36 prefill A
/// alone (512 × 5 + 440): first token at 3,600 ms, second at 3,700 ms; 15 preemptions.
#[test]
fn sarathi_decodes_preempt_a_prefill_under_way_when_no_block_is_free() {
    let rows = run(
        &scenario(
            "sarathi",
            189,
            128,
            "[policies.sarathi]\nwatermark_fraction = 0.0\n",
        ),
        "0,1,30\n0.05,3000,2\n",
    );
    assert_eq!(times(&rows), vec![(100, 3000), (3600, 3700)]);
    assert_eq!((rows[0].preemptions, rows[1].preemptions), (0, 15));
}

/// A token gap (ITL) runs from one token to the next, across a recompute preemption and the
/// chunked re-prefill after it. R1 and R2 (600-token prompts, 200 tokens out) share 90 KV blocks
/// under `vllm-v1` (budget 512, 100 ms per iteration): when their growth no longer fits, the tail
/// (R2) is preempted by recompute, and its re-prefill of 600 + generated > 512 tokens takes two
/// chunks, so its next token comes at least two iterations after its last one: its longest gap
/// is ≥ 200 ms (a partial chunk ending the gap would make it 100 ms). Every other gap is one
/// iteration.
#[test]
fn a_token_gap_spans_a_chunked_re_prefill() {
    let w = Workdir::new();
    let rows = run_in(
        &w,
        &scenario("vllm-v1", 90, 128, ""),
        "0,600,200\n0,600,200\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(rows[1].preemptions >= 1, "R2 was never preempted");
    let itl_max = read_column(&w.path("out"), "itl_max_s");
    for (row, cell) in rows.iter().zip(itl_max) {
        let itl_max: f64 = cell.parse().unwrap();
        if row.preemptions == 0 {
            assert!((itl_max - 0.1).abs() < 1e-9, "{row:?}");
        } else {
            assert!(itl_max >= 0.2 - 1e-9, "{row:?}");
            // A multiple of the 100 ms iteration.
            assert!(
                ((itl_max * 10.0).round() - itl_max * 10.0).abs() < 1e-6,
                "{row:?}"
            );
        }
    }
}

/// `vllm-v1` with pipeline parallelism (4 micro-batches in flight) and a KV pool that holds about
/// one long ShareGPT conversation: the oldest running request used to evict itself whenever the
/// younger ones were all in flight, lose its KV, come back and do it again — a livelock (150
/// requests: > 10⁸ events and 4·10⁷ preemptions, never ending). It now waits for a younger one to
/// come back; the 150 requests end in under 10⁵ events.
#[test]
fn vllm_v1_with_pipeline_stages_and_a_tight_pool_runs_to_the_end() {
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let text = format!(
        r#"name = "v1pp4"
model = "opt-13b"
gpu = "a100-40gb"
pp = 4
[trace]
arrival = "poisson"
rate_per_s = 0.5
lengths_file = {lengths:?}
num_requests = 150
[cost]
model = "analytic"
[scheduler]
policy = "vllm-v1"
max_batch_size = 64
max_batch_tokens = 256
[memory]
kv_capacity_blocks = 130
[limits]
max_events = 1000000
"#
    );
    let s = w.write("s.toml", text);
    let out = w.path("out");
    let r = cli([
        "run".as_ref(),
        s.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
        "--no-requests-csv".as_ref(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary = read_summary(&out);
    assert_eq!(summary["requests"], 150, "{summary}");
}
