//! Parallelism inside a replica and across hardware: TP = 2 vs TP = 1 iteration time against the
//! analytic formula (the sharded work halves, the replicated element-wise work does not, two ring
//! all-reduces per layer are added), the reproduction shapes' KV capacity against the vLLM paper,
//! pipeline parallelism by hand (and micro-batches within the cap at pp = 4), heterogeneous
//! `[[replica_groups]]`, bad pipeline tables, and `alise` at pp = 4 with a tight pool.

use crate::cluster::{MS, halves_workdir, run_ok, run_to, timeline};
use crate::support::{Row, Workdir, cli, read_requests, read_summary, workspace_root};

/// Analytic parameters with every fixed latency zero, so that the TP = 2 time follows from the
/// TP = 1 time by the model's formula.
const ZERO_LATENCY_PARAMS: &str = r#"gemm_compute_eff = 0.7
gemm_memory_eff = 0.8
gemm_latency_s = 0.0
attn_prefill_eff = 0.2
attn_prefill_latency_s = 0.0
attn_decode_eff = 0.9
attn_decode_latency_s = 0.0
attn_decode_s_per_request = 0.0
elementwise_eff = 0.5
layer_overhead_s = 0.0
layer_s_per_token = 0.0
iteration_overhead_s = 0.0
allreduce_latency_s = 3.0e-5
allreduce_eff = 0.6
"#;

/// TP = 2 vs TP = 1 on OPT-13B / A100-80GB for one request's prefill of 512 tokens (its only
/// iteration: output = 1 token). Per layer, TP = 2 halves the linear layers (FLOPs and weight
/// bytes: the smooth roofline √(c² + m²) halves exactly), the prefill attention FLOPs, the MLP
/// activation traffic and the LM head; it does *not* halve the replicated element-wise traffic of
/// the two layer norms and the residual add (7 · hidden · 2 bytes per token at 50% of HBM
/// bandwidth); and it adds two ring all-reduces of T · hidden · 2 bytes:
/// `latency + bytes · 2(k − 1)/k / (NVLink · eff)` with k = 2. So
/// `T₂ = (T₁ − L·rep)/2 + L·rep + 2·L·allreduce`.
#[test]
fn tp2_iteration_time_is_half_the_sharded_work_plus_two_allreduces_per_layer() {
    let (layers, hidden, tokens) = (40.0, 5120.0, 512.0);
    let (hbm, nvlink) = (2.039e12, 300.0e9);
    let rep_s = tokens * 7.0 * hidden * 2.0 / (hbm * 0.5);
    let allreduce_s = 3.0e-5 + tokens * hidden * 2.0 * (2.0 * 1.0 / 2.0) / (nvlink * 0.6);

    let w = Workdir::new();
    w.write("t.csv", "arrival_s,input_tokens,output_tokens\n0,512,1\n");
    let mut finish_s = Vec::new();
    for tp in [1, 2] {
        let s = w.write(
            &format!("tp{tp}.toml"),
            format!(
                "name = \"tp\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\ntp = {tp}\n\n[trace]\nfile = \"t.csv\"\n\n[cost]\nmodel = \"analytic\"\n\n[cost.params]\n{ZERO_LATENCY_PARAMS}\n[scheduler]\npolicy = \"vllm\"\n"
            ),
        );
        let out = w.path(&format!("tp{tp}"));
        run_ok(&s, &out);
        let rows = read_requests(&out);
        finish_s.push(rows[0].finish_ns as f64 / 1e9);
    }
    let (t1, t2) = (finish_s[0], finish_s[1]);
    let expected = (t1 - layers * rep_s) / 2.0 + layers * rep_s + 2.0 * layers * allreduce_s;
    // The engine rounds each iteration up to whole nanoseconds.
    assert!(
        (t2 - expected).abs() < 3e-9,
        "TP=2 {t2} s, formula {expected} s (TP=1 {t1} s)"
    );
    // The all-reduces are a visible share: 2 · 40 · (30 µs + 5.24 MB / 180 GB/s = 29.1 µs) ≈ 4.73 ms.
    assert!((2.0 * layers * allreduce_s - 4.730e-3).abs() < 1e-6);
    assert!(t2 > t1 / 2.0 + 2.0 * layers * allreduce_s && t2 < t1);
}

/// The reproduction shapes run, and their KV capacity is that of the vLLM paper's Table 1 to
/// within 20% (servesim keeps 10% of every GPU free plus a 1 GiB activation reserve per GPU).
#[test]
fn reproduction_shapes_have_vllm_table1_kv_capacity() {
    let w = Workdir::new();
    for (name, blocks, vllm_slots) in [
        ("opt66b_tp4", 500, 9_700.0),
        ("opt175b_tp8", 3453, 60_100.0),
        ("opt175b_tp8_pp2", 3339, 60_100.0),
    ] {
        let out = w.path(name);
        let r = cli([
            "run".into(),
            workspace_root()
                .join(format!("scenarios/{name}.toml"))
                .into_os_string(),
            "--num-requests".into(),
            "30".into(),
            "--out".into(),
            out.clone().into_os_string(),
            "--quiet".into(),
        ]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["resolved"]["kv_capacity_blocks"], blocks, "{name}");
        let slots = blocks as f64 * 16.0;
        assert!(
            (0.8..1.0).contains(&(slots / vllm_slots)),
            "{name}: {slots} vs {vllm_slots}"
        );
    }
    // The cluster scenarios resolve and run (small).
    for name in ["cluster_1m_16x", "routers_sharegpt"] {
        let out = w.path(name);
        let r = cli([
            "run".into(),
            workspace_root()
                .join(format!("scenarios/{name}.toml"))
                .into_os_string(),
            "--num-requests".into(),
            "200".into(),
            "--out".into(),
            out.clone().into_os_string(),
            "--quiet".into(),
        ]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert_eq!(read_requests(&out).len(), 200);
    }
}

/// Pipeline parallelism, by hand. OPT-13B with pp = 2, a constant 100 ms iteration (the whole
/// model), a 2 ms stage-to-stage send and no bandwidth term: each stage takes 100/2 + 2 = 52 ms,
/// a micro-batch leaves the pipeline 104 ms after it enters, and the first stage takes the next
/// micro-batch 52 ms after the last. `fcfs` with max_batch_size = 1 (per micro-batch).
///
/// One request (output 3): it is in at most one micro-batch at a time, so its tokens come at
/// 104, 208, 312 ms and the pipeline is half idle: busy fraction = 3 × 52 / 312 = 0.5.
///
/// Two requests at t = 0 (output 3 each): A enters at 0; the first stage frees at 52 and B enters;
/// A leaves at 104 (token 1) and re-enters as the first stage frees at 104; B leaves at 156 and
/// re-enters; A: tokens at 104, 208, 312; B: 156, 260, 364. Six micro-batches × 52 ms of the
/// mean stage's time over 364 ms: busy fraction 312 / 364.
#[test]
fn pipeline_keeps_two_micro_batches_in_flight_by_hand() {
    let w = Workdir::new();
    let scenario = |name: &str, trace: &str| {
        format!(
            "name = \"{name}\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\ntp = 1\npp = 2\n\n\
             [trace]\nfile = \"{trace}\"\n\n[memory]\nblock_tokens = 16\nkv_capacity_blocks = 100\n\n\
             [pipeline]\nsend_latency_s = 0.002\nsend_bytes_per_s = 1e30\n\n\
             [cost]\nmodel = \"constant\"\niteration_s = 0.1\n\n\
             [scheduler]\npolicy = \"fcfs\"\nmax_batch_size = 1\n\n[policies.fcfs]\nreserve = \"oracle\"\n"
        )
    };
    w.write("one.csv", "arrival_s,input_tokens,output_tokens\n0,10,3\n");
    w.write(
        "two.csv",
        "arrival_s,input_tokens,output_tokens\n0,10,3\n0,10,3\n",
    );
    let one = w.write("one.toml", scenario("one", "one.csv"));
    let two = w.write("two.toml", scenario("two", "two.csv"));
    run_ok(&one, &w.path("one-out"));
    run_ok(&two, &w.path("two-out"));
    let r1 = read_requests(&w.path("one-out"));
    assert_eq!(
        (r1[0].first_token_ns, r1[0].finish_ns),
        (104 * MS, 312 * MS)
    );
    let r2 = read_requests(&w.path("two-out"));
    let got: Vec<(u64, u64)> = r2.iter().map(|r| (r.first_token_ns, r.finish_ns)).collect();
    assert_eq!(got, vec![(104 * MS, 312 * MS), (156 * MS, 364 * MS)]);
    let busy = |dir: &str| {
        read_summary(&w.path(dir))["replicas"][0]["busy_fraction"]
            .as_f64()
            .unwrap()
    };
    assert!((busy("one-out") - 0.5).abs() < 1e-9, "{}", busy("one-out"));
    assert!(
        (busy("two-out") - 312.0 / 364.0).abs() < 1e-9,
        "{}",
        busy("two-out")
    );
}

/// Pipeline parallelism, pp = 4, with micro-batches of at most 2 requests (servesim issue 16).
/// Five requests at t = 0, the fifth with a 2,000-token prompt; a constant 400 ms iteration (100 ms
/// a stage) and a send of 1 ms per token. The first stage takes {A, B}, then {C, D} (120 ms a
/// stage each), then E alone (2.1 s a stage): both small micro-batches leave the pipeline while
/// E holds the first stage, so when it frees (t = 2.34 s) four admitted requests are out of the
/// pipeline. The non-preemptive policies ran all four in one micro-batch, which the engine
/// rejected (exit 2); now A and B run and C and D take the next micro-batch, so every request
/// finishes and C and D after A and B.
#[test]
fn non_preemptive_policies_keep_micro_batches_within_the_cap_at_pp4() {
    let w = Workdir::new();
    w.write(
        "t.csv",
        "arrival_s,input_tokens,output_tokens\n0,10,4\n0,10,4\n0,10,4\n0,10,4\n0,2000,4\n",
    );
    let s = w.write(
        "s.toml",
        "name = \"pp4\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\npp = 4\n\n\
         [trace]\nfile = \"t.csv\"\n\n[memory]\nblock_tokens = 16\nkv_capacity_blocks = 1000\n\n\
         [pipeline]\nsend_latency_s = 0.0\nsend_bytes_per_s = 10240000.0\n\n\
         [cost]\nmodel = \"constant\"\niteration_s = 0.4\n\n\
         [scheduler]\npolicy = \"fcfs\"\nmax_batch_size = 2\nmax_batch_tokens = 2048\n",
    );
    for policy in ["fcfs", "sjf", "sjf-oracle"] {
        let out = w.path(policy);
        let r = cli([
            "run",
            s.to_str().unwrap(),
            "--policy",
            policy,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(r.code, 0, "{policy}: {}", r.stderr);
        let rows = read_requests(&out);
        let finish: Vec<u64> = rows.iter().map(|r| r.finish_ns).collect();
        assert_eq!(finish.len(), 5, "{policy}");
        assert!(
            finish[0] == finish[1] && finish[1] < finish[2] && finish[2] == finish[3],
            "{policy}: {finish:?}"
        );
    }
}

// Long on purpose: the cluster run and the two single-replica runs it is compared with.
/// A heterogeneous cluster: `[[replica_groups]]` of one OPT-13B replica on an A100-80GB and one on
/// two H100-80GB (TP 2), analytic cost, round-robin. The replicas never interact, so each
/// request's timeline must equal the single-replica run of its half of the trace on that group's
/// hardware, and replicas.csv must report each group's own KV capacity.
#[test]
fn replica_groups_equal_single_replica_runs_on_their_own_hardware() {
    let (w, rows) = halves_workdir(80, 11);
    let body = |trace: &str| {
        format!(
            "[trace]\nfile = \"{trace}\"\n\n[cost]\nmodel = \"analytic\"\n\n\
             [scheduler]\npolicy = \"skip-join-mlfq\"\nmax_batch_size = 8\n"
        )
    };
    let hetero = w.write(
        "hetero.toml",
        format!(
            "name = \"hetero\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\n\n\
             [[replica_groups]]\ncount = 1\n\n\
             [[replica_groups]]\ncount = 1\ngpu = \"h100-80gb\"\ntp = 2\n\n{}",
            body("all.csv")
        ),
    );
    let a100 = w.write(
        "a100.toml",
        format!(
            "name = \"a\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\n\n{}",
            body("even.csv")
        ),
    );
    let h100 = w.write(
        "h100.toml",
        format!(
            "name = \"h\"\nmodel = \"opt-13b\"\ngpu = \"h100-80gb\"\ntp = 2\n\n{}",
            body("odd.csv")
        ),
    );
    run_ok(&hetero, &w.path("hetero-out"));
    run_ok(&a100, &w.path("a100-out"));
    run_ok(&h100, &w.path("h100-out"));
    let all = read_requests(&w.path("hetero-out"));
    let halves = [
        read_requests(&w.path("a100-out")),
        read_requests(&w.path("h100-out")),
    ];
    assert_eq!(all.len(), rows.len());
    for r in &all {
        let half = (r.id % 2) as usize;
        assert_eq!(r.replica as usize, half);
        assert_eq!(
            timeline(r),
            timeline(&halves[half][(r.id / 2) as usize]),
            "request {} differs from its single-replica run",
            r.id
        );
    }
    // The two groups' timelines differ (the H100 pair is faster), so the test compares something.
    let mean_finish = |h: &[Row]| h.iter().map(|r| r.finish_ns - r.arrival_ns).sum::<u64>();
    assert!(mean_finish(&halves[1]) < mean_finish(&halves[0]));
    let cap = |dir: &str, i: usize| {
        read_summary(&w.path(dir))["replicas"][i]["kv_capacity_blocks"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(cap("hetero-out", 0), cap("a100-out", 0));
    assert_eq!(cap("hetero-out", 1), cap("h100-out", 0));
    assert_ne!(cap("hetero-out", 0), cap("hetero-out", 1));
    // The top-level hardware is only a default: OPT-66B does not fit one A100-40GB, but both
    // groups override it (TP 4 on A100-40GB, TP 2 on A100-80GB).
    let big = w.write(
        "big.toml",
        format!(
            "name = \"big\"\nmodel = \"opt-66b\"\ngpu = \"a100-40gb\"\n\n\
             [[replica_groups]]\ncount = 1\ntp = 4\n\n\
             [[replica_groups]]\ncount = 1\ngpu = \"a100-80gb\"\ntp = 2\n\n{}",
            body("all.csv")
        ),
    );
    run_ok(&big, &w.path("big-out"));
    assert_eq!(read_requests(&w.path("big-out")).len(), rows.len());
    // Errors name the group; `replicas` and groups together are rejected.
    for (text, want) in [
        ("[[replica_groups]]\ncount = 0\n", "#1: `count` must be ≥ 1"),
        (
            "[[replica_groups]]\ncount = 1\ngpu = \"tpu\"\n",
            "[[replica_groups]] #1",
        ),
        ("replicas = 2\n[[replica_groups]]\ncount = 1\n", "not both"),
    ] {
        let bad = w.write(
            "bad.toml",
            format!(
                "name = \"b\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\n{text}\n{}",
                body("all.csv")
            ),
        );
        let r = run_to(&bad, &w.path("bad-out"));
        assert_eq!(r.code, 2, "{text}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{text}: {}", r.stderr);
        assert!(!w.path("bad-out").exists());
    }
}

/// Bad `[pipeline]` values are one-line config errors naming the field; nothing is written.
#[test]
fn bad_pipeline_tables_are_user_errors() {
    let w = Workdir::new();
    w.write("t.csv", "arrival_s,input_tokens,output_tokens\n0,10,3\n");
    for (table, want) in [
        (
            "send_bytes_per_s = 0",
            "[pipeline] send_bytes_per_s must be a finite number > 0",
        ),
        (
            "send_bytes_per_s = nan",
            "[pipeline] send_bytes_per_s must be a finite number > 0",
        ),
        (
            "send_latency_s = -1.0",
            "[pipeline] send_latency_s must be a finite number ≥ 0",
        ),
        ("bogus = 1", "unknown field `bogus`"),
    ] {
        let s = w.write(
            "p.toml",
            format!(
                "name = \"p\"\nmodel = \"opt-13b\"\ngpu = \"a100-80gb\"\npp = 2\n\n[trace]\nfile = \"t.csv\"\n\n\
                 [pipeline]\n{table}\n\n[cost]\nmodel = \"constant\"\niteration_s = 0.1\n\n\
                 [scheduler]\npolicy = \"vllm\"\n"
            ),
        );
        let r = run_to(&s, &w.path("out"));
        assert_eq!(r.code, 2, "{table}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{table}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(!w.path("out").exists());
    }
}

/// Pipeline parallelism with `[swap] reactive = "overlap"`: a micro-batch held back by its
/// swap-in copy was overtaken by the one launched after it, whose end event then finished the
/// first batch (flights leave in launch order) while its copy was still running: "engine bug:
/// transfer completed for a request in state Gpu" (exit 101), for every swapping policy at pp ≥ 2.
/// Micro-batches now leave the last stage in launch order; each policy runs to the end.
#[test]
fn overlapped_swap_ins_keep_micro_batches_in_order() {
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    for policy in ["mlfq", "ltr", "fcfs-swap"] {
        let w = Workdir::new();
        let text = format!(
            r#"name = "pp-overlap"
model = "opt-13b"
gpu = "a100-40gb"
pp = 2
[trace]
arrival = "poisson"
rate_per_s = 8.0
lengths_file = {lengths:?}
num_requests = 300
[cost]
model = "analytic"
[scheduler]
policy = "{policy}"
max_batch_size = 16
[swap]
reactive = "overlap"
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
        ]);
        assert_eq!(r.code, 0, "{policy}: {}", r.stderr);
        let rows = read_requests(&out);
        assert_eq!(rows.len(), 300, "{policy}");
    }
}

/// `alise` (EWT offload) with 4 pipeline stages, a KV pool that holds one long ShareGPT
/// conversation and a slow pipeline send, 60 requests at once (round 8, case 06): a prefill in
/// flight was taken for the request the memory manager keeps room for, so the swap-in pass
/// brought back, at every other boundary, the request the formation had just swapped out (old
/// code: 246k events and 53k preemptions for 60 requests, one request swapped out 31,698 times).
/// Now it stays out until the request it made room for has run: 33k events, 225 preemptions, at
/// most 13 for one request.
#[test]
fn alise_with_pipeline_stages_does_not_swap_the_same_request_back_and_forth() {
    let w = Workdir::new();
    let lengths = std::fs::read_to_string(workspace_root().join("traces/sharegpt_vllm_opt.csv"));
    let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
    for row in lengths.unwrap().lines().skip(1).take(60) {
        trace.push_str(&format!("0,{row}\n"));
    }
    let t = w.write("burst.csv", trace);
    let text = format!(
        r#"name = "alisepp4"
model = "opt-13b"
gpu = "h100-80gb"
pp = 4
[trace]
file = {t:?}
[cost]
model = "analytic"
[scheduler]
policy = "alise"
max_batch_size = 4
[memory]
kv_capacity_blocks = 130
[pipeline]
send_bytes_per_s = 1.0e6
[limits]
max_events = 100000
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
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary = read_summary(&out);
    assert_eq!(summary["requests"], 60, "{summary}");
    let most = read_requests(&out).iter().map(|row| row.preemptions).max();
    assert!(most <= Some(100), "{most:?}");
}
