//! `chunked_prefill = true` under the priority policies (`mlfq`, `skip-join-mlfq`, `srpt`,
//! `srpt-oracle`, `alise`): prefill chunks and decodes share one token budget per iteration, taken
//! in the policy's own priority order. `chunked.rs`'s scenario (constant cost, 100 ms per
//! iteration, block size 16, budget 512, context 4,096), so the times below are counts of
//! iterations.

use crate::support::{Row, Workdir, read_column, run_with_trace as run_in};

const MS: u64 = 1_000_000;
const POLICIES: [&str; 5] = ["mlfq", "skip-join-mlfq", "srpt", "srpt-oracle", "alise"];

/// `chunked.rs`'s scenario, with `chunked_prefill = true` in the policy's table when `chunked`.
fn scenario(policy: &str, chunked: bool, cap_blocks: u32, max_batch_size: u32) -> String {
    let table = if chunked {
        format!("[policies.{policy}]\nchunked_prefill = true\n")
    } else {
        String::new()
    };
    crate::chunked::scenario(policy, cap_blocks, max_batch_size, &table)
}

fn run(text: &str, rows: &str) -> Vec<Row> {
    run_in(&Workdir::new(), text, rows, &[]).unwrap_or_else(|e| panic!("run failed: {e}\n{text}"))
}

/// (first token, finish) in ms per request, in id order.
fn times(rows: &[Row]) -> Vec<(u64, u64)> {
    rows.iter()
        .map(|r| (r.first_token_ns / MS, r.finish_ns / MS))
        .collect()
}

/// A prompt of 4,000 tokens is rejected without the switch and runs as ⌈4000 / 512⌉ = 8 chunks
/// with it: first token at 800 ms, the second at 900 ms.
#[test]
fn the_switch_admits_a_prompt_longer_than_the_budget() {
    for p in POLICIES {
        let rows = run(&scenario(p, true, 10_000, 16), "0,4000,2\n");
        assert_eq!(times(&rows), vec![(800, 900)], "{p}");
        let e = run_in(
            &Workdir::new(),
            &scenario(p, false, 10_000, 16),
            "0,4000,2\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("exceeds max_batch_tokens = 512") && e.contains("chunked_prefill = true"),
            "{p}: {e}"
        );
    }
}

/// SRPT with chunking takes the budget in *its* order, not decodes first (Sarathi's rule): D1 and
/// D2 (one-token prompts, 20 tokens out) are prefilled in iteration 1 (0–100 ms); A (3,000 tokens,
/// 3 out) arrives at 50 ms. With a constant cost A's remaining time (its prefill as one
/// iteration + 2 decodes = 0.3 s) is below D1's and D2's (19 decodes = 1.9 s), so A's chunks take
/// the whole budget in iterations 2–6 (512 × 5 = 2,560 tokens) and the decodes stall; iteration 7
/// runs A's last 440 tokens with D1 and D2 (442 ≤ 512). A's first token: 700 ms, then 800, 900.
/// D1 and D2: token 1 at 100 ms, token 2 at 700 ms (a 600 ms stall, their longest gap), then one
/// per iteration: token 20 at 700 + 18 × 100 = 2,500 ms.
#[test]
fn srpt_chunks_in_its_own_order_and_stalls_the_decodes() {
    for p in ["srpt", "srpt-oracle"] {
        let w = Workdir::new();
        let rows = run_in(
            &w,
            &scenario(p, true, 10_000, 16),
            "0,1,20\n0,1,20\n0.05,3000,3\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            times(&rows),
            vec![(100, 2500), (100, 2500), (700, 900)],
            "{p}"
        );
        let itl_max = read_column(&w.path("out"), "itl_max_s");
        assert_eq!(itl_max[..2], ["0.600000000", "0.600000000"], "{p}");
    }
}

/// Queueing sanity: with one-token prompts the budget never binds (at most 4 requests, 1 token
/// each) and nobody is ever mid-prefill, so chunked and unchunked runs give identical requests.
#[test]
fn one_token_prompts_give_identical_outputs_with_and_without_chunking() {
    let mut rows = String::new();
    for i in 0..40u32 {
        rows.push_str(&format!(
            "{:.3},1,{}\n",
            i as f64 * 0.137,
            1 + (i * 7919) % 23
        ));
    }
    for p in POLICIES {
        let plain = run(&scenario(p, false, 10_000, 4), &rows);
        let chunked = run(&scenario(p, true, 10_000, 4), &rows);
        assert_eq!(plain, chunked, "{p}");
    }
}

/// Long prompts under memory pressure: a small KV pool (400 blocks = 6,400 tokens) with a host
/// pool, ShareGPT-like lengths plus prompts of 1,000–3,500 tokens. Every request completes (the
/// engine rejects any plan over the token budget or the KV pool, and a plan with nothing to run),
/// some are preempted, and fast-forward on and off give byte-identical outputs. With a small host
/// pool (about 100 blocks of OPT-13B's 13 MB) FastServe's code defers new prefills; a request
/// swapped out mid-prefill is not new (it holds KV on the host) and must not be deferred, or
/// the host fills with half-done prompts and nothing can run.
#[test]
fn long_prompts_under_memory_pressure_complete_and_fast_forward_matches_stepping() {
    let mut rows = String::new();
    for i in 0..120u32 {
        let input = if i % 5 == 0 {
            1000 + (i * 263) % 2500
        } else {
            1 + (i * 7919) % 400
        };
        let output = 1 + (i * 104_729) % 300;
        rows.push_str(&format!("{:.3},{input},{output}\n", i as f64 * 0.09));
    }
    for (p, host_bytes) in POLICIES
        .iter()
        .flat_map(|p| [(p, 20_000_000_000u64), (p, 1_300_000_000)])
    {
        let text = scenario(p, true, 400, 16).replace(
            "[memory]\n",
            &format!("[memory]\nhost_kv_bytes = {host_bytes}\n"),
        );
        let w = Workdir::new();
        let fast = run_in(&w, &text, &rows, &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(fast.len(), 120, "{p}");
        assert!(
            fast.iter().map(|r| r.preemptions).sum::<u32>() > 0,
            "{p}: nobody was preempted; the test does not exercise memory pressure"
        );
        let step_w = Workdir::new();
        let step = run_in(&step_w, &text, &rows, &["--no-fast-forward"]).unwrap();
        assert_eq!(fast, step, "{p}: fast-forward changed the requests");
        for f in ["summary.json", "requests.csv"] {
            let a = std::fs::read(w.path("out").join(f)).unwrap();
            let b = std::fs::read(step_w.path("out").join(f)).unwrap();
            assert!(a == b, "{p}: {f} differs between fast-forward on and off");
        }
    }
}

/// `chunk_size` needs the switch and must lie in 2..=max_batch_tokens; the resolved budget is
/// recorded in config.json.
#[test]
fn chunk_size_is_checked_and_recorded() {
    for p in POLICIES {
        for (table, needle) in [
            (
                "chunk_size = 256\n",
                "chunk_size needs chunked_prefill = true",
            ),
            (
                "chunked_prefill = true\nchunk_size = 1\n",
                "chunk_size must be in 2..=512",
            ),
            (
                "chunked_prefill = true\nchunk_size = 513\n",
                "chunk_size must be in 2..=512",
            ),
        ] {
            let text = format!("{}[policies.{p}]\n{table}", scenario(p, false, 10_000, 16));
            let e = run_in(&Workdir::new(), &text, "0,10,2\n", &[]).unwrap_err();
            assert!(e.contains(needle), "{p} {table:?}: {e}");
        }
        let w = Workdir::new();
        let text = format!(
            "{}[policies.{p}]\nchunked_prefill = true\nchunk_size = 300\n",
            scenario(p, false, 10_000, 16)
        );
        let rows = run_in(&w, &text, "0,1000,2\n", &[]).unwrap();
        // ⌈1000 / 300⌉ = 4 chunks.
        assert_eq!(times(&rows), vec![(400, 500)], "{p}");
        let config = std::fs::read_to_string(w.path("out/config.json")).unwrap();
        assert!(
            config.contains("\"chunked_prefill\": true") && config.contains("\"chunk_size\": 300"),
            "{p}: {config}"
        );
    }
}

/// Clusters and pipelines: two replicas behind the `least-work` router (which prices the rest of
/// a chunked prefill), and OPT-66B over 4 GPUs × 2 pipeline stages, with prompts of up to 3,500
/// tokens: every request completes and fast-forward on and off agree.
#[test]
fn chunked_priority_policies_run_on_clusters_and_pipelines() {
    let mut rows = String::new();
    for i in 0..80u32 {
        let input = if i % 4 == 0 {
            600 + (i * 263) % 2900
        } else {
            1 + (i * 7919) % 300
        };
        rows.push_str(&format!(
            "{:.3},{input},{}\n",
            i as f64 * 0.05,
            1 + (i * 31) % 120
        ));
    }
    for p in POLICIES {
        let base = scenario(p, true, 2_000, 16).replace(
            "[cost]\nmodel = \"constant\"\niteration_s = 0.1\n",
            "[cost]\nmodel = \"analytic\"\n",
        );
        let cluster = base.replace(
            "gpu = \"a100-40gb\"\n",
            "gpu = \"a100-40gb\"\nreplicas = 2\nrouter = \"least-work\"\n",
        );
        let pipeline = base
            .replace(
                "model = \"opt-13b\"\ngpu = \"a100-40gb\"\n",
                "model = \"opt-66b\"\ngpu = \"a100-40gb\"\ntp = 4\npp = 2\n",
            )
            .replace("kv_capacity_blocks = 2000\n", "");
        for text in [cluster, pipeline] {
            let (w, step_w) = (Workdir::new(), Workdir::new());
            let fast = run_in(&w, &text, &rows, &[]).unwrap_or_else(|e| panic!("{p}: {e}\n{text}"));
            assert_eq!(fast.len(), 80, "{p}");
            let step = run_in(&step_w, &text, &rows, &["--no-fast-forward"]).unwrap();
            assert_eq!(fast, step, "{p}: fast-forward changed the requests\n{text}");
        }
    }
}
