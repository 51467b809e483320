//! Cluster scale (issue "Cluster scale", acceptance): replicas and routers, tensor parallelism in
//! the analytic cost model, per-replica outputs, and sharded sweeps.
//!
//! - With 2 identical replicas and `round-robin`, each request's timeline equals the single-replica
//!   run of its half of the trace (the replicas never interact).
//! - The four routers' choices on a hand-made 6-request trace, derived in the comments.
//! - TP = 2 vs TP = 1 iteration time against the analytic formula: the sharded work halves, the
//!   replicated element-wise work does not, and two ring all-reduces per layer are added.
//! - `sweep --shard I/3` × 3 + `merge` = the unsharded sweep, byte for byte; merge errors.

use std::path::{Path, PathBuf};

use crate::support::{CliResult, Row, Workdir, cli, read_requests, read_summary, workspace_root};

const MS: u64 = 1_000_000;

/// Run `servesim run SCENARIO --out DIR --quiet`; panic with stderr on failure.
fn run_ok(scenario: &Path, out: &Path) {
    let r = cli([
        "run".into(),
        scenario.as_os_str().to_owned(),
        "--out".into(),
        out.as_os_str().to_owned(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "run {} failed: {}", scenario.display(), r.stderr);
}

/// `servesim run SCENARIO --out DIR`, for runs expected to fail.
fn run_to(scenario: &Path, out: &Path) -> CliResult {
    cli([
        "run".into(),
        scenario.as_os_str().to_owned(),
        "--out".into(),
        out.as_os_str().to_owned(),
    ])
}

/// A deterministic pseudo-random trace: `n` rows of (arrival ms, input, output).
fn trace_rows(n: usize, seed: u64) -> Vec<(u64, u32, u32)> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let mut t = 0;
    (0..n)
        .map(|_| {
            t += next(120);
            (t, 1 + next(400) as u32, 1 + next(300) as u32)
        })
        .collect()
}

fn trace_csv(rows: &[(u64, u32, u32)]) -> String {
    let mut s = String::from("arrival_s,input_tokens,output_tokens\n");
    for (t, i, o) in rows {
        s += &format!("{}.{:03},{i},{o}\n", t / 1000, t % 1000);
    }
    s
}

/// OPT-13B with a linear cost model and a small KV pool (preemptions happen).
fn cluster_scenario(trace: &str, policy: &str, replicas: u32, router: &str) -> String {
    format!(
        r#"name = "cluster"
model = "opt-13b"
gpu = "a100-40gb"
replicas = {replicas}
router = "{router}"

[trace]
file = "{trace}"

[memory]
block_tokens = 16
kv_capacity_blocks = 64

[cost]
model = "linear"
a_s = 0.01
b_s_per_token = 0.0001
c_s_per_token_sq = 0.0
d_s_per_request = 0.0002
e_s_per_context_token = 0.000001

[scheduler]
policy = "{policy}"
max_batch_size = 8
"#
    )
}

/// A work directory with a pseudo-random trace of `n` rows as `all.csv` and its even and odd rows
/// (what round-robin gives replica 0 and 1) as `even.csv` and `odd.csv`.
fn halves_workdir(n: usize, seed: u64) -> (Workdir, Vec<(u64, u32, u32)>) {
    let rows = trace_rows(n, seed);
    let even: Vec<_> = rows.iter().copied().step_by(2).collect();
    let odd: Vec<_> = rows.iter().copied().skip(1).step_by(2).collect();
    let w = Workdir::new();
    w.write("all.csv", trace_csv(&rows));
    w.write("even.csv", trace_csv(&even));
    w.write("odd.csv", trace_csv(&odd));
    (w, rows)
}

/// What must match between the two-replica run and the half runs.
fn timeline(r: &Row) -> (u64, u32, u32, u64, u64, u64, u32) {
    (
        r.arrival_ns,
        r.input_tokens,
        r.output_tokens,
        r.first_token_ns,
        r.finish_ns,
        r.queue_ns,
        r.preemptions,
    )
}

#[test]
fn two_round_robin_replicas_equal_two_single_replica_runs_of_the_halves() {
    let (w, rows) = halves_workdir(120, 7);
    for policy in ["vllm", "skip-join-mlfq", "srpt-oracle"] {
        let both = w.write(
            "both.toml",
            cluster_scenario("all.csv", policy, 2, "round-robin"),
        );
        run_ok(&both, &w.path(&format!("both-{policy}")));
        let all = read_requests(&w.path(&format!("both-{policy}")));
        let mut halves = Vec::new();
        for half in ["even", "odd"] {
            let s = w.write(
                &format!("{half}.toml"),
                cluster_scenario(&format!("{half}.csv"), policy, 1, "round-robin"),
            );
            let out = w.path(&format!("{half}-{policy}"));
            run_ok(&s, &out);
            halves.push(read_requests(&out));
        }
        assert_eq!(all.len(), rows.len());
        let preempted: u32 = all.iter().map(|r| r.preemptions).sum();
        assert!(
            preempted > 0,
            "{policy}: the trace should exercise preemption"
        );
        for r in &all {
            let half = (r.id % 2) as usize;
            assert_eq!(r.replica as usize, half, "{policy}: request {}", r.id);
            let single = &halves[half][(r.id / 2) as usize];
            assert_eq!(
                timeline(r),
                timeline(single),
                "{policy}: request {} differs from its single-replica run",
                r.id
            );
        }
        // replicas.csv splits the requests and preemptions per replica.
        let text = std::fs::read_to_string(w.path(&format!("both-{policy}/replicas.csv"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("replica,requests,iterations,busy_fraction,mean_batch_size,kv_capacity_blocks,peak_kv_blocks"));
        assert_eq!(lines.len(), 3);
        for (i, half) in halves.iter().enumerate() {
            let f: Vec<&str> = lines[1 + i].split(',').collect();
            assert_eq!(f[0], i.to_string());
            assert_eq!(f[1], half.len().to_string());
            let pre: u32 = half.iter().map(|r| r.preemptions).sum();
            assert_eq!(f[11], pre.to_string(), "{policy}: replica {i} preemptions");
            assert_eq!(f[5], "64");
        }
    }
}

/// The routers on a hand-made trace. Constant cost 100 ms, one KV block per token, 1000 blocks per
/// replica, `vllm` (watermark 0), 2 replicas, oracle predictions. Times in ms.
///
/// | req | t | in | out |
/// |---|---|---|---|
/// | A | 0 | 100 | 9 |
/// | B | 10 | 10 | 1 |
/// | C | 200 | 10 | 3 |
/// | D | 210 | 10 | 3 |
/// | E | 220 | 10 | 3 |
/// | F | 230 | 10 | 3 |
///
/// A goes to replica 0 under every router (all empty: tie → lowest index); A's prefill runs
/// 0–100, then it decodes one token per 100 ms. B goes to replica 1 under every router (replica 0
/// holds A) and finishes at 110 (prefill only). At C (t = 200; arrivals come before the iteration
/// boundary at 200) replica 0 holds A (101 blocks, allocated for its decode 100–200; 1 token
/// emitted, 8 decodes left = 800 ms of work), replica 1 is empty. From 200 on A has emitted 2
/// tokens (700 ms left) and holds 102 blocks.
///
/// - `round-robin`: 0, 1, 0, 1, 0, 1.
/// - `least-outstanding`: C → 1 (1 vs 0); C's prefill runs 200–300. D: 1 vs 1 → 0. E: rep0 {A, D}
///   = 2 vs rep1 {C} = 1 → 1. F: 2 vs 2 → 0. ⇒ 0, 1, 1, 0, 1, 0.
/// - `least-kv`: C → 1 (0 blocks); C holds 10 blocks from 200; D, E, F wait on replica 1 with no
///   blocks, so replica 1 stays at 10 blocks against replica 0's 101 ⇒ 0, 1, 1, 1, 1, 1.
/// - `least-work` (batch-size-1 remaining time: prefill 100 + (out − 1) × 100 for a request that
///   has not prefilled): C → 1 (0 < 800). D: rep1 C = 300 < 700 → 1. E: rep1 C + D = 600 < 700
///   → 1. F: rep1 900 > 700 → 0 ⇒ 0, 1, 1, 1, 1, 0.
#[test]
fn routers_choose_by_hand() {
    let w = Workdir::new();
    w.write(
        "trace.csv",
        "arrival_s,input_tokens,output_tokens\n0,100,9\n0.010,10,1\n0.200,10,3\n0.210,10,3\n0.220,10,3\n0.230,10,3\n",
    );
    let expected: [(&str, [u32; 6]); 4] = [
        ("round-robin", [0, 1, 0, 1, 0, 1]),
        ("least-outstanding", [0, 1, 1, 0, 1, 0]),
        ("least-kv", [0, 1, 1, 1, 1, 1]),
        ("least-work", [0, 1, 1, 1, 1, 0]),
    ];
    for (router, want) in expected {
        let s = w.write(
            "s.toml",
            format!(
                r#"name = "routers"
model = "opt-13b"
gpu = "a100-40gb"
replicas = 2
router = "{router}"

[trace]
file = "trace.csv"

[memory]
block_tokens = 1
kv_capacity_blocks = 1000

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "vllm"

[policies.vllm]
watermark_frac = 0.0
"#
            ),
        );
        let out = w.path(router);
        run_ok(&s, &out);
        let rows = read_requests(&out);
        let got: Vec<u32> = rows.iter().map(|r| r.replica).collect();
        assert_eq!(got, want, "router {router}");
        // B finishes as derived above whatever the router.
        assert_eq!(rows[1].finish_ns, 110 * MS, "{router}: B");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["resolved"]["router"], router);
    }
}

#[test]
fn unknown_router_and_router_params_are_user_errors() {
    let w = Workdir::new();
    w.write("t.csv", "arrival_s,input_tokens,output_tokens\n0,10,2\n");
    let base = cluster_scenario("t.csv", "vllm", 2, "random");
    let s = w.write("s.toml", &base);
    let r = run_to(&s, &w.path("o"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown router `random`"), "{}", r.stderr);
    assert!(r.stderr.contains("least-work"), "{}", r.stderr);
    let s = w.write(
        "s2.toml",
        cluster_scenario("t.csv", "vllm", 2, "least-kv") + "\n[routers.least-kv]\nalpha = 1\n",
    );
    let r = run_to(&s, &w.path("o"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("[routers.least-kv]"), "{}", r.stderr);
    assert!(r.stderr.contains("alpha"), "{}", r.stderr);
    assert!(!w.path("o").exists());
}

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

/// A small sweep with a failing point (max_queue = 2 overloads at the high rate).
const SWEEP: &str = r#"name = "shards"
model = "opt-13b"
gpu = "a100-40gb"
replicas = 2

[trace]
arrival = "poisson"
rate_per_s = 1.0
lengths_file = "LENGTHS"
num_requests = 60

[memory]
kv_capacity_blocks = 200

[cost]
model = "linear"
a_s = 0.012
b_s_per_token = 1.0e-4
c_s_per_token_sq = 0.0
d_s_per_request = 1.0e-4
e_s_per_context_token = 1.0e-7

[scheduler]
policy = "vllm"
max_batch_size = 8

[sweep]
policy = ["fcfs", "vllm"]
rate = [1.0, 20.0]
router = ["round-robin", "least-work"]
"limits.max_queue" = [2, 1000]
"#;

fn sweep(args: &[&str]) -> crate::support::CliResult {
    let mut v: Vec<String> = vec!["sweep".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    cli(v)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sharded_sweep_merges_into_the_unsharded_sweep_byte_for_byte() {
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lengths.display().to_string()),
    );
    let s = s.to_str().unwrap();
    let whole = w.path("whole");
    let r = sweep(&[s, "--out", whole.to_str().unwrap(), "--no-plots", "-j", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut shard_dirs = Vec::new();
    for i in 0..3 {
        let d = w.path(&format!("shard{i}"));
        let r = sweep(&[
            s,
            "--shard",
            &format!("{i}/3"),
            "--out",
            d.to_str().unwrap(),
            "-j",
            "1",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(d.join("shard.json").exists());
        assert!(!d.join("plots").exists(), "shards draw no plots");
        shard_dirs.push(d.to_str().unwrap().to_string());
    }
    let merged = w.path("merged");
    let mut args: Vec<String> = vec!["merge".into()];
    // Any order.
    args.extend([2, 0, 1].iter().map(|&i| shard_dirs[i].clone()));
    args.extend([
        "--out".into(),
        merged.to_str().unwrap().into(),
        "--no-plots".into(),
    ]);
    let r = cli(args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("merged 3 shards: 16 runs"),
        "{}",
        r.stdout
    );

    let a = std::fs::read(whole.join("sweep.csv")).unwrap();
    let b = std::fs::read(merged.join("sweep.csv")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b),
        "merged sweep.csv differs from the unsharded one"
    );
    assert_eq!(a, b);
    let text = String::from_utf8(a).unwrap();
    assert!(text.starts_with("run,policy,rate,limits.max_queue,router,requests,"));
    assert!(text.contains("overloaded"), "a point should fail:\n{text}");
    // The runs/ trees match file for file (timing.json aside).
    let fa = files_under(&whole.join("runs"));
    let fb = files_under(&merged.join("runs"));
    assert_eq!(fa, fb);
    assert!(fa.iter().any(|p| p.ends_with("replicas.csv")));
    for f in &fa {
        assert_eq!(
            std::fs::read(whole.join("runs").join(f)).unwrap(),
            std::fs::read(merged.join("runs").join(f)).unwrap(),
            "runs/{} differs",
            f.display()
        );
    }
    // Each merged run's summary is the unsharded one.
    let some_run = fa.iter().find(|p| p.ends_with("summary.json")).unwrap();
    let dir = whole.join("runs").join(some_run.parent().unwrap());
    assert_eq!(read_summary(&dir)["replicas"].as_array().unwrap().len(), 2);

    // Errors: one line, exit 2, nothing written.
    let bad = w.path("bad");
    let merge = |dirs: &[&str]| {
        let mut a: Vec<String> = vec!["merge".into()];
        a.extend(dirs.iter().map(|s| s.to_string()));
        a.extend(["--out".into(), bad.to_str().unwrap().into()]);
        cli(a)
    };
    let r = merge(&[&shard_dirs[0], &shard_dirs[1]]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("missing shard(s) 2/3"), "{}", r.stderr);
    let r = merge(&[
        &shard_dirs[0],
        &shard_dirs[1],
        &shard_dirs[2],
        &shard_dirs[1],
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("shard 1/3 is given twice"),
        "{}",
        r.stderr
    );
    let r = merge(&[&shard_dirs[0], whole.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("not a sweep shard directory"),
        "{}",
        r.stderr
    );
    // A shard of a different sweep (other --num-requests).
    let other = w.path("other1");
    let r = sweep(&[
        s,
        "--shard",
        "1/3",
        "--num-requests",
        "30",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = merge(&[&shard_dirs[0], other.to_str().unwrap(), &shard_dirs[2]]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("shards of different sweeps"),
        "{}",
        r.stderr
    );
    // A different shard count.
    let other = w.path("other2");
    let r = sweep(&[s, "--shard", "0/2", "--out", other.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = merge(&[&shard_dirs[0], other.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("shard counts 3 and 2"), "{}", r.stderr);
    assert!(!bad.exists());
    // Bad --shard values are usage errors.
    for spec in ["3/3", "1", "0/0"] {
        let r = sweep(&[s, "--shard", spec]);
        assert_eq!(r.code, 2, "--shard {spec}");
        assert!(r.stderr.contains("--shard"), "{}", r.stderr);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for f in files_under(from) {
        std::fs::create_dir_all(to.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), to.join(&f)).unwrap();
    }
}

/// `merge` checks each row of shard.json (one CSV record of the header's width, consistent with
/// the run it claims and with the shard's sweep.csv) and refuses symbolic links in a shard.
#[test]
fn merge_refuses_edited_rows_and_symlinks() {
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lengths.display().to_string()),
    );
    let s = s.to_str().unwrap();
    for i in 0..2 {
        let d = w.path(&format!("shard{i}"));
        let r = sweep(&[
            s,
            "--shard",
            &format!("{i}/2"),
            "--num-requests",
            "20",
            "--out",
            d.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let out = w.path("merged");
    let merge = |first: &Path| {
        cli([
            "merge".into(),
            first.as_os_str().to_owned(),
            w.path("shard1").into_os_string(),
            "--out".into(),
            out.clone().into_os_string(),
            "--no-plots".into(),
        ])
    };
    let r = merge(&w.path("shard0"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::remove_dir_all(&out).unwrap();
    let fails = |first: &Path, words: &[&str]| {
        let r = merge(first);
        assert_eq!(r.code, 2, "{words:?}: {}", r.stdout);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        for word in words {
            assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
        }
        assert!(!out.exists());
    };
    // Edit the first row of a copy of shard 0 (shard.json, and sweep.csv where asked).
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value), csv_too: bool| {
        let d = w.path(name);
        copy_tree(&w.path("shard0"), &d);
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("shard.json")).unwrap()).unwrap();
        edit(&mut m);
        std::fs::write(d.join("shard.json"), m.to_string()).unwrap();
        if csv_too {
            let mut csv = format!("{}\n", m["header"].as_str().unwrap());
            for row in m["rows"].as_array().unwrap() {
                csv += &format!("{}\n", row["csv"].as_str().unwrap());
            }
            std::fs::write(d.join("sweep.csv"), csv).unwrap();
        }
        d
    };
    let row0 = |m: &serde_json::Value| m["rows"][0]["csv"].as_str().unwrap().to_string();
    // An embedded newline injects a row.
    let d = edited(
        "inject",
        &|m| {
            let injected = format!("{}\n{}", row0(m), row0(m));
            m["rows"][0]["csv"] = injected.into();
        },
        true,
    );
    fails(&d, &["shard.json", "run 0", "2 CSV records"]);
    // A cell too many.
    let d = edited(
        "wide",
        &|m| m["rows"][0]["csv"] = format!("{},1", row0(m)).into(),
        true,
    );
    fails(&d, &["run 0", "cells"]);
    // A row that claims another run's index.
    let d = edited(
        "index",
        &|m| m["rows"][0]["csv"] = format!("7{}", row0(m)).into(),
        true,
    );
    fails(&d, &["run 0", "starts with run `70`"]);
    // A row edited in shard.json only.
    let d = edited(
        "csv_only",
        &|m| m["rows"][0]["csv"] = row0(m).replacen(",fcfs,", ",vllm,", 1).into(),
        false,
    );
    fails(
        &d,
        &["sweep.csv", "does not hold the rows shard.json lists"],
    );
    // A directory that is not the run's (another successful run's), and a failed run given one.
    let d = edited(
        "dir",
        &|m| {
            let rows = m["rows"].as_array_mut().unwrap();
            let ok: Vec<usize> = (0..rows.len())
                .filter(|&i| !rows[i]["dir"].is_null())
                .collect();
            rows[ok[0]]["dir"] = rows[ok[1]]["dir"].clone();
        },
        true,
    );
    fails(&d, &["does not match its index and axis values"]);
    let d = edited(
        "failed_dir",
        &|m| {
            let rows = m["rows"].as_array_mut().unwrap();
            let failed = (0..rows.len()).find(|&i| rows[i]["dir"].is_null()).unwrap();
            let ok = (0..rows.len())
                .find(|&i| !rows[i]["dir"].is_null())
                .unwrap();
            rows[failed]["dir"] = rows[ok]["dir"].clone();
        },
        true,
    );
    fails(&d, &["has a run directory but its `csv` records an error"]);
    // Symbolic links: the shard directory, and a file under runs/ pointing outside.
    #[cfg(unix)]
    {
        let link = w.path("link0");
        std::os::unix::fs::symlink(w.path("shard0"), &link).unwrap();
        fails(&link, &["link0", "symbolic link"]);
        let d = w.path("leaky");
        copy_tree(&w.path("shard0"), &d);
        let run = std::fs::read_dir(d.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(run.join("summary.json")).unwrap();
        std::fs::write(w.path("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(w.path("secret"), run.join("summary.json")).unwrap();
        fails(&d, &["summary.json", "symbolic link"]);
    }
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
