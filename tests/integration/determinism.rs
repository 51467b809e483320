//! Same scenario + seed ⇒ byte-identical `requests.csv`, `summary.json` and `config.json`
//! (`timing.json` holds wall-clock figures and is exempt); another seed changes the requests.

use std::path::{Path, PathBuf};

use crate::support::{Workdir, cli, workspace_root};

const DETERMINISTIC_FILES: [&str; 3] = ["requests.csv", "summary.json", "config.json"];

/// Run `scenario` with extra arguments into `out`; panic on failure.
fn run_into(scenario: &Path, out: &Path, extra: &[&str]) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        scenario.into(),
        "--out".into(),
        out.into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let r = cli(args);
    assert_eq!(r.code, 0, "run {scenario:?} {extra:?} failed: {}", r.stderr);
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

/// Two runs with `extra` give identical outputs; a third with `--seed 1` changes requests.csv.
fn check(scenario: &Path, extra: &[&str]) {
    let w = Workdir::new();
    let dirs: Vec<PathBuf> = ["a", "b", "other-seed"].iter().map(|d| w.path(d)).collect();
    run_into(scenario, &dirs[0], extra);
    run_into(scenario, &dirs[1], extra);
    for f in DETERMINISTIC_FILES {
        assert!(
            read(&dirs[0], f) == read(&dirs[1], f),
            "{f} differs between two runs of {scenario:?} {extra:?}"
        );
    }
    let rows = read(&dirs[0], "requests.csv");
    assert!(
        rows.iter().filter(|&&b| b == b'\n').count() > 100,
        "the scenario should have many requests"
    );
    let mut other = extra.to_vec();
    other.extend(["--seed", "1"]);
    run_into(scenario, &dirs[2], &other);
    assert!(
        read(&dirs[2], "requests.csv") != rows,
        "--seed 1 did not change requests.csv of {scenario:?} {extra:?}"
    );
}

#[test]
fn quickstart_is_deterministic_for_each_policy() {
    // The shipped quickstart: analytic cost model, ShareGPT lengths, Poisson arrivals (seed 0).
    let scenario = workspace_root().join("scenarios/quickstart.toml");
    check(&scenario, &[]);
    check(&scenario, &["--policy", "fcfs"]);
}

#[test]
fn multi_replica_gamma_scenario_is_deterministic() {
    // Bursty arrivals over three replicas with a tight KV pool (vllm preempts).
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let text = format!(
        r#"name = "det"
seed = 42
model = "llama-2-7b"
gpu = "a100-80gb"
replicas = 3

[trace]
arrival = "gamma"
cv = 3.0
rate_per_s = 6.0
lengths_file = {lengths:?}
num_requests = 600
drop_over_context = true

[memory]
kv_capacity_blocks = 400

[cost]
model = "analytic"

[scheduler]
policy = "vllm"
max_batch_size = 32
"#
    );
    let scenario = w.write("det.toml", text);
    check(&scenario, &[]);
    check(&scenario, &["--policy", "fcfs"]);
}
