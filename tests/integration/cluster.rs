//! Cluster scale (issue "Cluster scale", acceptance): replicas and routers, per-replica outputs,
//! and the multi-replica scenario helpers that [`crate::parallelism`] shares. Sharded sweeps are in
//! [`crate::shards`]; tensor and pipeline parallelism in [`crate::parallelism`].
//!
//! - With 2 identical replicas and `round-robin`, each request's timeline equals the single-replica
//!   run of its half of the trace (the replicas never interact).
//! - The four routers' choices on a hand-made 6-request trace, derived in the comments.
//! - Unknown routers and router parameters are user errors.
//! - A load-aware router over 4,096 replicas reads O(log replicas) replica loads per decision,
//!   plus the replicas whose load changed since its previous one.

use std::path::Path;

use crate::support::{CliResult, Row, Workdir, cli, read_requests};

pub(crate) const MS: u64 = 1_000_000;

/// Run `servesim run SCENARIO --out DIR --quiet`; panic with stderr on failure.
pub(crate) fn run_ok(scenario: &Path, out: &Path) {
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
pub(crate) fn run_to(scenario: &Path, out: &Path) -> CliResult {
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
pub(crate) fn halves_workdir(n: usize, seed: u64) -> (Workdir, Vec<(u64, u32, u32)>) {
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
pub(crate) fn timeline(r: &Row) -> (u64, u32, u32, u64, u64, u64, u32) {
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

/// Peak resident memory of this process (Linux), bytes.
#[cfg(target_os = "linux")]
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A replica's memory is what it uses: the replicas of a group share one cost model, so 8,192
/// busy replicas do not each hold the analytic model's memo tables (≈ 72 KB a replica, 590 MB in
/// all, before they were shared).
#[cfg(target_os = "linux")]
#[test]
fn many_replicas_share_their_cost_models_memo_tables() {
    let n = 8192;
    let rows: Vec<(u64, u32, u32)> = (0..n).map(|i| (i as u64, 16 + (i % 7) as u32, 2)).collect();
    let w = Workdir::new();
    w.write("t.csv", trace_csv(&rows));
    let scenario = format!(
        "name = \"wide\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\nreplicas = {n}\n\
         [trace]\nfile = \"{}\"\n[cost]\nmodel = \"analytic\"\n[scheduler]\npolicy = \"vllm\"\n",
        w.path("t.csv").display()
    );
    w.write("wide.toml", scenario);
    let before = peak_rss_bytes();
    run_ok(&w.path("wide.toml"), &w.path("out"));
    assert_eq!(read_requests(&w.path("out")).len(), n);
    let grown = peak_rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "peak memory grew by {grown} bytes");
}

/// Routing cost over a wide cluster: `least-outstanding`, `least-kv` and `least-work` over 4,096
/// replicas rescore only the replicas whose load changed since their previous decision (every
/// replica at the first), so the replica loads they read stay within 4·log2(replicas) per decision
/// plus the changed ones. A scan of every replica per arrival reads 4,096 per decision.
#[test]
fn load_aware_routers_read_few_replicas_per_decision() {
    let n: u64 = 4096;
    // 12,000 requests, one every 0.25 ms: hundreds of replicas busy at once.
    let rows: Vec<(u64, u32, u32)> = (0..12_000u64)
        .map(|i| (i, 16 + (i % 97) as u32, 2 + (i % 31) as u32))
        .collect();
    let w = Workdir::new();
    let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
    for (i, input, output) in &rows {
        trace += &format!("{}.{:07},{input},{output}\n", i / 4000, (i % 4000) * 2500);
    }
    w.write("t.csv", trace);
    for router in ["least-outstanding", "least-kv", "least-work"] {
        let text = format!(
            "name = \"wide\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\nreplicas = {n}\n\
             router = \"{router}\"\n[trace]\nfile = \"t.csv\"\n[cost]\nmodel = \"analytic\"\n\
             [scheduler]\npolicy = \"vllm\"\n[output]\nkv_timeline_interval_s = 0\n"
        );
        let path = w.write("wide.toml", &text);
        let r = servesim::scenario::parse(Path::new(&path), &text)
            .and_then(|l| l.resolve(&servesim::scenario::Overrides::default()))
            .unwrap();
        let o = servesim::run::run(&r, None).unwrap();
        let st = &o.stats;
        assert_eq!(st.requests, rows.len() as u64);
        let log2_n = 63 - n.leading_zeros() as u64;
        let bound = st.requests * 4 * log2_n + st.route_changed;
        assert!(
            st.route_loads_read <= bound,
            "{router}: {} loads read, bound {bound}",
            st.route_loads_read
        );
        // Not vacuous: the changed replicas are a small fraction of a scan per decision.
        assert!(
            st.route_changed < st.requests * n / 20,
            "{router}: {} changed",
            st.route_changed
        );
    }
}
