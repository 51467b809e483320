//! "No panic" made structural: every file of the fuzz corpus (`tests/fuzz_corpus/`) and a set of
//! hostile scenarios (zero, negative, huge, NaN and infinite values and wrong types for the
//! numeric keys; absurd counts) through every CLI entry point that reads user input, in-process.
//! The exit code must be 0, 1, 2 or 130 (a panic fails the test through [`cli`], naming the
//! command line), and a failure names the entry point and the input.
//!
//! The regression tests of the crashes and unbounded counts it found are in
//! [`crate::exit_regressions`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::support::{CliResult, Workdir, cli, workspace_root};

/// The exit codes servesim may return: success, regression (`check`), user error, Ctrl-C.
const ALLOWED: [i32; 4] = [0, 1, 2, 130];

pub(crate) fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

/// Run one command line and check its exit code; `what` names the entry point and input.
fn call(what: &str, args: Vec<OsString>) -> CliResult {
    let r = cli(args);
    assert!(
        ALLOWED.contains(&r.code),
        "{what}: exit code {} (allowed: {ALLOWED:?}); stderr: {}",
        r.code,
        r.stderr
    );
    if r.code == 2 {
        assert!(
            !r.stderr.trim().is_empty(),
            "{what}: exit 2 without a message"
        );
    }
    r
}

/// A small valid scenario (constant cost: fast) with many keys present, so that hostile values
/// can be substituted key by key.
pub(crate) const BASE: &str = r#"name = "hostile"
seed = 1
model = "opt-13b"
gpu = "a100-40gb"
tp = 1
pp = 1
replicas = 1

[trace]
arrival = "poisson"
rate_per_s = 5.0
cv = 1.0
input_lengths = { dist = "uniform", min = 4, max = 32 }
output_lengths = { dist = "fixed", value = 4 }
num_requests = 5

[memory]
block_tokens = 16
gpu_memory_utilization = 0.9
activation_reserve_bytes = 1073741824
host_kv_bytes = 1073741824

[cost]
model = "constant"
iteration_s = 0.01

[scheduler]
policy = "vllm"
max_batch_size = 8
max_batch_tokens = 2048
max_context_tokens = 2048

[limits]
max_events = 100000
max_sim_s = 100000.0
max_queue = 1000

[slo]
ttft_s = 1.0
tpot_s = 0.1

[output]
kv_timeline_interval_s = 0
"#;

/// `key = value` lines of [`BASE`] a hostile value replaces (the line is found by its text).
const KEYS: &[&str] = &[
    "seed = 1",
    "tp = 1",
    "pp = 1",
    "replicas = 1",
    "rate_per_s = 5.0",
    "cv = 1.0",
    "num_requests = 5",
    "block_tokens = 16",
    "gpu_memory_utilization = 0.9",
    "activation_reserve_bytes = 1073741824",
    "host_kv_bytes = 1073741824",
    "iteration_s = 0.01",
    "max_batch_size = 8",
    "max_batch_tokens = 2048",
    "max_context_tokens = 2048",
    "max_events = 100000",
    "max_sim_s = 100000.0",
    "max_queue = 1000",
    "ttft_s = 1.0",
    "tpot_s = 0.1",
    "kv_timeline_interval_s = 0",
];

/// Values a hostile user tries for a number.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "0.5",
    "1e-300",
    "1e300",
    "-1e300",
    "nan",
    "inf",
    "-inf",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "\"x\"",
    "true",
    "[1]",
    "{}",
];

/// Whole extra tables and keys: absurd counts and parameters of the other components.
const EXTRAS: &[&str] = &[
    "[[replica_groups]]\ncount = 4294967295\n",
    "[[replica_groups]]\ncount = 4e9\n",
    "[[replica_groups]]\ncount = 0\n",
    "[[replica_groups]]\ncount = 2\ntp = 0\n",
    "[[replica_groups]]\ncount = 65536\n[[replica_groups]]\ncount = 65536\n",
    "[pipeline]\nsend_latency_s = nan\n",
    "[pipeline]\nsend_bytes_per_s = 0\n",
    "[swap]\nlatency_s = -1\n",
    "[swap]\nh2d_bytes_per_s = 0\n",
    "[swap]\nefficiency = 1e300\n",
    "[swap]\nkv_offload_bits = 4294967295\n",
    "[predictors.bucket]\nbuckets = 4294967295\n",
    "[predictors.bucket]\nbuckets = 0\n",
    "[predictors.noisy]\nsigma = 1e300\n",
    "[predictors.history]\nwindow = 4294967295\n",
    "[policies.mlfq]\nbase_quantum_s = 1e-300\n",
    "[policies.mlfq]\nmax_levels = 4294967295\n",
    "[policies.mlfq]\nratio = inf\n",
    "[routers.least-work]\nfoo = 1\n",
];

/// The hostile scenarios: `(label, text)`.
fn hostile_scenarios() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for key in KEYS {
        assert!(BASE.contains(&format!("\n{key}\n")), "`{key}` is in BASE");
        let (name, _) = key.split_once(" = ").expect("key = value");
        for value in VALUES {
            let text = BASE.replace(&format!("\n{key}\n"), &format!("\n{name} = {value}\n"));
            v.push((format!("{name} = {value}"), text));
        }
    }
    // With the KV capacity given (the memory arithmetic skipped), and block sizes against it.
    for value in VALUES {
        for (label, line) in [
            (
                "kv_capacity_blocks",
                format!("block_tokens = 16\nkv_capacity_blocks = {value}\n"),
            ),
            (
                "block_tokens (with kv_capacity_blocks)",
                format!("block_tokens = {value}\nkv_capacity_blocks = 1000\n"),
            ),
        ] {
            v.push((
                format!("{label} = {value}"),
                BASE.replace("block_tokens = 16\n", &line),
            ));
        }
    }
    for (i, extra) in EXTRAS.iter().enumerate() {
        v.push((format!("extra #{i}: {extra:?}"), format!("{BASE}\n{extra}")));
    }
    // Every length distribution parameter.
    for dist in [
        "{ dist = \"fixed\", value = 0 }",
        "{ dist = \"uniform\", min = 10, max = 1 }",
        "{ dist = \"uniform\", min = 0, max = 4294967295 }",
        "{ dist = \"lognormal\", mean = nan, sigma = 1.0 }",
        "{ dist = \"lognormal\", mean = 1e300, sigma = 1e300 }",
        "{ dist = \"lognormal\", mean = 10.0, sigma = -1.0, max = 0 }",
        "{ dist = \"zipf\", n = 0, s = 1.0 }",
        "{ dist = \"zipf\", n = 4294967295, s = 0.0 }",
        "{ dist = \"zipf\", n = 10, s = -inf }",
    ] {
        let text = BASE.replace(
            "output_lengths = { dist = \"fixed\", value = 4 }",
            &format!("output_lengths = {dist}"),
        );
        v.push((format!("output_lengths = {dist}"), text));
    }
    v
}

/// A run directory and a live directory of [`BASE`] (for `compare`, `plot`, `check`), and a
/// two-shard sweep (for `merge`).
struct Fixtures {
    w: Workdir,
}

impl Fixtures {
    fn new() -> Self {
        let w = Workdir::new();
        let scenario = w.write("base.toml", BASE);
        let out = |name: &str| w.path(name).into_os_string();
        call(
            "fixture run",
            vec![
                "run".into(),
                os(&scenario),
                "--out".into(),
                out("sim"),
                "--quiet".into(),
            ],
        );
        call(
            "fixture live",
            vec![
                "live".into(),
                os(&scenario),
                "--mock".into(),
                "--time-scale".into(),
                "1e-6".into(),
                "--out".into(),
                out("live"),
                "--quiet".into(),
            ],
        );
        let sweep = w.write("sweep.toml", format!("{BASE}\n[sweep]\nseed = [1, 2, 3]\n"));
        for i in 0..2 {
            call(
                "fixture shard",
                vec![
                    "sweep".into(),
                    os(&sweep),
                    "--shard".into(),
                    format!("{i}/2").into(),
                    "--out".into(),
                    out(&format!("shard{i}")),
                ],
            );
        }
        call(
            "fixture sweep",
            vec![
                "sweep".into(),
                os(&sweep),
                "--no-plots".into(),
                "--out".into(),
                out("sweep"),
            ],
        );
        Fixtures { w }
    }

    /// A copy of fixture directory `name` with `file` replaced by `bytes`.
    fn with_file(&self, name: &str, file: &str, bytes: &[u8], into: &Path) -> PathBuf {
        let dst = into.join(format!("{name}-{}", file.replace('/', "_")));
        copy_dir(&self.w.path(name), &dst);
        std::fs::write(dst.join(file), bytes).expect("write the replaced file");
        dst
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for e in std::fs::read_dir(from).expect("read a fixture directory") {
        let e = e.expect("directory entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy a fixture file");
        }
    }
}

/// The entry points that read a scenario file, on `path` (outputs under `out`). `live` is left
/// out where `live_too` is false.
fn scenario_entry_points(label: &str, path: &Path, out: &Path, live_too: bool) {
    let o = |n: &str| os(&out.join(n));
    let p = os(path);
    call(
        &format!("run on {label}"),
        vec![
            "run".into(),
            p.clone(),
            "--out".into(),
            o("run"),
            "--quiet".into(),
        ],
    );
    call(
        &format!("sweep on {label}"),
        vec![
            "sweep".into(),
            p.clone(),
            "--no-plots".into(),
            "-j".into(),
            "1".into(),
            "--num-requests".into(),
            "5".into(),
            "--out".into(),
            o("sweep"),
        ],
    );
    if live_too {
        call(
            &format!("live --mock on {label}"),
            vec![
                "live".into(),
                p.clone(),
                "--mock".into(),
                "--time-scale".into(),
                "1e-6".into(),
                "--out".into(),
                o("live"),
                "--num-requests".into(),
                "5".into(),
                "--quiet".into(),
            ],
        );
    }
    call(
        &format!("capacity on {label}"),
        vec![
            "capacity".into(),
            p,
            "--slo".into(),
            "jct_s=1000".into(),
            "--seeds".into(),
            "0".into(),
            "--precision".into(),
            "0.5".into(),
            "--num-requests".into(),
            "5".into(),
            "--out".into(),
            o("capacity"),
        ],
    );
}

/// Every hostile scenario through `run`, `sweep`, `live --mock` and `capacity`.
#[test]
fn hostile_scenarios_exit_cleanly_from_every_entry_point() {
    let w = Workdir::new();
    for (i, (label, text)) in hostile_scenarios().into_iter().enumerate() {
        let path = w.write(&format!("s{i}.toml"), &text);
        let out = w.path(&format!("o{i}"));
        // Live mode sleeps the scenario's time × the time scale by design: an iteration of
        // 4294967295 s or more takes over an hour of wall time even at `--time-scale 1e-6`.
        let long_iterations = label.starts_with("iteration_s = ")
            && label["iteration_s = ".len()..]
                .parse::<f64>()
                .is_ok_and(|x| (1e6..1e300).contains(&x));
        scenario_entry_points(
            &format!("hostile scenario `{label}`"),
            &path,
            &out,
            !long_iterations,
        );
    }
}

// Long on purpose: every corpus file through one entry point after another.
/// Every corpus file through every entry point that reads user input.
#[test]
fn fuzz_corpus_exits_cleanly_from_every_entry_point() {
    let corpus = workspace_root().join("tests/fuzz_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/fuzz_corpus exists")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let fx = Fixtures::new();
    let w = Workdir::new();
    // The corpus next to the files its scenarios and catalogues name.
    w.write(
        "trace.csv",
        "arrival_s,input_tokens,output_tokens\n0,4,2\n0.5,8,3\n",
    );
    w.write("lengths.csv", "input_tokens,output_tokens\n4,2\n8,3\n");
    for f in &files {
        std::fs::copy(f, w.path(&f.file_name().unwrap().to_string_lossy())).expect("copy");
    }
    let base = fx.w.path("base.toml");
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let input = w.path(&name);
        let bytes = std::fs::read(&input).expect("read a corpus file");
        let out = w.path(&format!("out{i}"));
        std::fs::create_dir_all(&out).expect("create an output directory");
        let o = |n: &str| os(&out.join(n));
        let at = |what: &str| format!("{what} on corpus file {name}");
        let p = os(&input);

        scenario_entry_points(&format!("corpus file {name}"), &input, &out, true);
        call(
            &at("run --trace"),
            vec![
                "run".into(),
                os(&base),
                "--trace".into(),
                p.clone(),
                "--out".into(),
                o("run-trace"),
                "--quiet".into(),
            ],
        );
        for source in ["sharegpt", "alpaca"] {
            call(
                &at(&format!("trace import {source}")),
                vec![
                    "trace".into(),
                    "import".into(),
                    source.into(),
                    p.clone(),
                    "-o".into(),
                    o(&format!("{source}.csv")),
                    "--num".into(),
                    "5".into(),
                ],
            );
        }
        for source in ["azure", "vidur"] {
            call(
                &at(&format!("trace import {source}")),
                vec![
                    "trace".into(),
                    "import".into(),
                    source.into(),
                    p.clone(),
                    "-o".into(),
                    o(&format!("{source}.csv")),
                ],
            );
        }
        call(
            &at("trace stats"),
            vec!["trace".into(), "stats".into(), p.clone()],
        );
        call(
            &at("trace synth --replay"),
            vec![
                "trace".into(),
                "synth".into(),
                "--replay".into(),
                p.clone(),
                "--num".into(),
                "5".into(),
                "-o".into(),
                o("replay.csv"),
            ],
        );
        call(
            &at("trace synth --lengths-file"),
            vec![
                "trace".into(),
                "synth".into(),
                "--lengths-file".into(),
                p.clone(),
                "--rate".into(),
                "2".into(),
                "--num".into(),
                "5".into(),
                "-o".into(),
                o("synth.csv"),
            ],
        );
        // `plot` on a sweep directory whose sweep.csv, and a run directory whose
        // kv_timeline.csv, is the corpus file.
        for (fixture, file) in [("sweep", "sweep.csv"), ("sim", "kv_timeline.csv")] {
            let dir = fx.with_file(fixture, file, &bytes, &out);
            call(
                &at(&format!("plot ({file})")),
                vec!["plot".into(), os(&dir)],
            );
        }
        // `check`: the corpus file as the golden file, and as the sweep's sweep.csv.
        call(
            &at("check --golden"),
            vec![
                "check".into(),
                os(&fx.w.path("sweep")),
                "--golden".into(),
                p.clone(),
            ],
        );
        call(
            &at("check (as sweep.csv)"),
            vec![
                "check".into(),
                p.clone(),
                "--golden".into(),
                os(&fx.w.path("sweep/sweep.csv")),
            ],
        );
        // `merge`: the corpus file as a shard's manifest.
        let shard = fx.with_file("shard0", "shard.json", &bytes, &out);
        call(
            &at("merge (as shard.json)"),
            vec![
                "merge".into(),
                os(&shard),
                os(&fx.w.path("shard1")),
                "--no-plots".into(),
                "--out".into(),
                o("merged"),
            ],
        );
        // `compare`: the corpus file as the live run's requests.csv, summary.json and
        // iterations.csv in turn.
        for file in ["requests.csv", "summary.json", "iterations.csv"] {
            let live = fx.with_file("live", file, &bytes, &out);
            call(
                &at(&format!("compare ({file})")),
                vec![
                    "compare".into(),
                    os(&fx.w.path("sim")),
                    os(&live),
                    "--out".into(),
                    o("compare.csv"),
                ],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests of what the structural tests and the adversarial round found.
