//! "No panic" made structural: every file of the fuzz corpus (`tests/fuzz_corpus/`) and a set of
//! hostile scenarios (zero, negative, huge, NaN and infinite values and wrong types for the
//! numeric keys; absurd counts) through every CLI entry point that reads user input, in-process.
//! The exit code must be 0, 1, 2 or 130 (a panic fails the test through [`cli`], naming the
//! command line), and a failure names the entry point and the input.
//!
//! Also the regression tests of the crashes and unbounded counts it found: catalogue fields of 0,
//! replica counts, sweep run counts (overflow, empty and clashing axes), shard manifests,
//! `--time-scale` and `--jobs`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::support::{CliResult, Workdir, cli, workspace_root};

/// The exit codes servesim may return: success, regression (`check`), user error, Ctrl-C.
const ALLOWED: [i32; 4] = [0, 1, 2, 130];

fn os(p: &Path) -> OsString {
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
const BASE: &str = r#"name = "hostile"
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

/// A scenario on catalogue model `model` (from `cat.toml` beside it) with `extra` top-level keys.
fn scenario_on(model: &str, extra: &str) -> String {
    BASE.replace("model = \"opt-13b\"", &format!("model = \"{model}\""))
        .replace(
            "replicas = 1\n",
            &format!("replicas = 1\ncatalogue_files = [\"cat.toml\"]\n{extra}\n"),
        )
}

const MODEL: &str = "[models.m]
layers = 32
hidden = 4096
heads = 32
kv_heads = 8
ffn = 11008
gated_mlp = true
vocab = 32000
dtype_bytes = 2
max_context_tokens = 4096
tied_embeddings = false
learned_positions = false
";

fn run_scenario(w: &Workdir, text: &str) -> CliResult {
    let p = w.write("s.toml", text);
    cli([
        "run".into(),
        os(&p),
        "--out".into(),
        os(&w.path("out")),
        "--quiet".into(),
    ])
}

/// A catalogue model with 0 layers, hidden, heads, kv_heads or dtype_bytes divided by zero
/// (exit 101); now the catalogue is validated on load and the error names the file, the line,
/// the model and the field.
#[test]
fn catalogue_zero_fields_are_errors_naming_the_field() {
    let w = Workdir::new();
    for (field, line) in [
        ("layers", 2),
        ("hidden", 3),
        ("heads", 4),
        ("kv_heads", 5),
        ("ffn", 6),
        ("vocab", 8),
        ("dtype_bytes", 9),
        ("max_context_tokens", 10),
    ] {
        let text: String = MODEL
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{field} =")) {
                    format!("{field} = 0\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        w.write("cat.toml", text);
        for cost in ["constant", "analytic"] {
            let s = scenario_on("m", "").replace(
                "model = \"constant\"\niteration_s = 0.01",
                &format!(
                    "model = \"{cost}\"\n{}",
                    if cost == "constant" {
                        "iteration_s = 0.01"
                    } else {
                        ""
                    }
                ),
            );
            let r = run_scenario(&w, &s);
            assert_eq!(r.code, 2, "{field} = 0, {cost}: {}", r.stderr);
            let want = format!(
                "cat.toml:{line}: field `[models.m] {field}`: must be an integer from 1 to"
            );
            assert!(r.stderr.contains(&want), "{field}: {}", r.stderr);
            assert!(!w.path("out").exists());
        }
    }
    // Inconsistent head counts, and a tp that splits a KV head.
    for (from, to, want) in [
        (
            "kv_heads = 8",
            "kv_heads = 5",
            "kv_heads = 5 must divide heads = 32",
        ),
        (
            "hidden = 4096",
            "hidden = 4100",
            "heads = 32 must divide hidden = 4100",
        ),
    ] {
        w.write("cat.toml", MODEL.replace(from, to));
        let r = run_scenario(&w, &scenario_on("m", ""));
        assert_eq!(r.code, 2, "{to}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{to}: {}", r.stderr);
    }
    w.write(
        "cat.toml",
        MODEL
            .replace("hidden = 4096", "hidden = 6144")
            .replace("heads = 32", "heads = 48")
            .replace("kv_heads = 8", "kv_heads = 12"),
    );
    let r = run_scenario(&w, &scenario_on("m", "").replace("tp = 1", "tp = 8"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("tp = 8 and the model's 12 KV heads"),
        "{}",
        r.stderr
    );
    // A GPU with a NaN bandwidth.
    w.write(
        "cat.toml",
        "[gpus.g]\nflops_per_s = 1e15\nhbm_bytes_per_s = nan\nmemory_bytes = 85899345920\npcie_generation = 4\npcie_bytes_per_s = 3e10\nnvlink_bytes_per_s = 3e11\n",
    );
    let r = run_scenario(
        &w,
        &scenario_on("opt-13b", "").replace("gpu = \"a100-40gb\"", "gpu = \"g\""),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cat.toml:3: field `[gpus.g] hbm_bytes_per_s`"),
        "{}",
        r.stderr
    );
}

/// `replicas = 4294967295` aborted allocating, 10⁸ took 12 GB; `[[replica_groups]]` counts
/// likewise. Now at most 65,536 replicas, said in the error.
#[test]
fn replica_counts_are_bounded_before_allocating() {
    let w = Workdir::new();
    for n in ["4294967295", "100000000", "65537"] {
        let r = run_scenario(
            &w,
            &BASE.replace("replicas = 1", &format!("replicas = {n}")),
        );
        assert_eq!(r.code, 2, "replicas = {n}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("`replicas` = {n} is above the limit of 65536")),
            "{}",
            r.stderr
        );
    }
    for groups in [
        "[[replica_groups]]\ncount = 4000000000\n",
        "[[replica_groups]]\ncount = 4294967295\n[[replica_groups]]\ncount = 4294967295\n",
        "[[replica_groups]]\ncount = 65536\n[[replica_groups]]\ncount = 1\n",
    ] {
        let r = run_scenario(&w, &format!("{BASE}\n{groups}"));
        assert_eq!(r.code, 2, "{groups}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("above the limit of 65536 replicas per scenario"),
            "{}",
            r.stderr
        );
    }
}

fn sweep(w: &Workdir, axes: &str, extra: &[&str]) -> CliResult {
    let p = w.write("sweep.toml", format!("{BASE}\n[sweep]\n{axes}"));
    let mut args: Vec<OsString> = vec![
        "sweep".into(),
        os(&p),
        "--no-plots".into(),
        "--out".into(),
        os(&w.path("sweep")),
    ];
    args.extend(extra.iter().map(OsString::from));
    cli(args)
}

/// 16 axes × 16 values (2⁶⁴ runs) wrapped to 0 runs and exit 0; 4 axes × 1,000 values aborted
/// allocating; an empty axis is not 0 runs. Now the run count is computed with checked
/// arithmetic and capped at 100,000, and the error names the axes and their product.
#[test]
fn sweep_run_count_is_checked_and_bounded() {
    let w = Workdir::new();
    let axes = |n: usize, len: usize| -> String {
        (0..n)
            .map(|i| {
                let vals: Vec<String> = (0..len).map(|v| v.to_string()).collect();
                format!("\"policies.mlfq.x{i:02}\" = [{}]\n", vals.join(", "))
            })
            .collect()
    };
    let r = sweep(&w, &axes(16, 16), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("policies.mlfq.x00 (16) × policies.mlfq.x01 (16)")
            && r.stderr.contains("= more than 18446744073709551615 runs")
            && r.stderr.contains("limit of 100000 runs"),
        "{}",
        r.stderr
    );
    let r = sweep(&w, &axes(4, 1000), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("= 1000000000000 runs, above the limit of 100000"),
        "{}",
        r.stderr
    );
    let r = sweep(&w, "seed = []\n", &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`seed` must be a non-empty array"),
        "{}",
        r.stderr
    );
    assert!(!w.path("sweep").exists());
}

/// `rate` and `trace.rate_per_s` axes together silently ignored one of them; now any two axes
/// that set the same key (or one inside the other) are an error naming both.
#[test]
fn sweep_axes_setting_the_same_key_are_errors() {
    let w = Workdir::new();
    for (axes, want) in [
        (
            "rate = [1.0, 2.0]\n\"trace.rate_per_s\" = [3.0]\n",
            "axes `rate` and `trace.rate_per_s` both set `trace.rate_per_s`",
        ),
        (
            "policy = [\"vllm\"]\n\"scheduler.policy\" = [\"fcfs\"]\n",
            "axes `policy` and `scheduler.policy` both set `scheduler.policy`",
        ),
        (
            "memory = [1]\n\"memory.block_tokens\" = [16]\n",
            "axes `memory` and `memory.block_tokens` overlap",
        ),
    ] {
        let r = sweep(&w, axes, &[]);
        assert_eq!(r.code, 2, "{axes}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{axes}: {}", r.stderr);
    }
}

/// `sweep --jobs 10000` spent its time spawning idle threads: the pool is clamped to the runs.
#[test]
fn sweep_jobs_are_clamped_to_the_runs() {
    let w = Workdir::new();
    let r = sweep(&w, "seed = [1, 2]\n", &["--jobs", "100000"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("on 2 threads"), "{}", r.stdout);
    let timing = std::fs::read_to_string(w.path("sweep/timing.json")).unwrap();
    assert!(timing.contains("\"jobs\": 2"), "{timing}");
}

/// A `shard.json` with `shards = 1e15` (or `runs_total`) aborted `merge` allocating; now both
/// are bounded by the most runs a sweep may have, and so is `--shard I/N`.
#[test]
fn shard_manifest_counts_are_bounded() {
    let w = Workdir::new();
    let p = w.write("sweep.toml", format!("{BASE}\n[sweep]\nseed = [1, 2, 3]\n"));
    for i in 0..2 {
        let r = cli([
            "sweep".into(),
            os(&p),
            "--shard".into(),
            format!("{i}/2").into(),
            "--out".into(),
            os(&w.path(&format!("shard{i}"))),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let manifest = w.path("shard0/shard.json");
    let good = std::fs::read_to_string(&manifest).unwrap();
    for (from, to) in [
        ("\"shards\": 2", "\"shards\": 1000000000000000"),
        ("\"runs_total\": 3", "\"runs_total\": 1000000000000000"),
    ] {
        assert!(good.contains(from), "{good}");
        std::fs::write(&manifest, good.replace(from, to)).unwrap();
        let r = cli([
            "merge".into(),
            os(&w.path("shard0")),
            os(&w.path("shard1")),
            "--out".into(),
            os(&w.path("merged")),
        ]);
        assert_eq!(r.code, 2, "{to}: {}", r.stderr);
        assert!(r.stderr.contains("must be at most 100000"), "{}", r.stderr);
        assert!(!w.path("merged").exists());
    }
    let r = cli([
        "sweep".into(),
        os(&p),
        "--shard".into(),
        "0/1000000000000".into(),
        "--out".into(),
        os(&w.path("big")),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("above the limit of 100000"),
        "{}",
        r.stderr
    );
}

/// `live --mock --time-scale 1e300` panicked converting to a `Duration`; now the scale is
/// bounded (10⁻⁶ to 10⁶) and the error names the flag.
#[test]
fn live_time_scale_is_bounded() {
    let w = Workdir::new();
    let p = w.write("s.toml", BASE);
    for x in ["1e300", "1e7", "1e-300", "0", "-1", "nan", "inf"] {
        let r = cli([
            "live".into(),
            os(&p),
            "--mock".into(),
            format!("--time-scale={x}").into(),
            "--out".into(),
            os(&w.path("live")),
        ]);
        assert_eq!(r.code, 2, "--time-scale {x}: {}", r.stderr);
        assert!(
            r.stderr
                .starts_with("error: --time-scale must be a finite number from 1e-6 to 1e6"),
            "{x}: {}",
            r.stderr
        );
        assert!(!w.path("live").exists());
    }
}

/// `[predictors.bucket] buckets = 4294967295` sized two tables by it; now at most 65,536.
#[test]
fn bucket_predictor_count_is_bounded() {
    let w = Workdir::new();
    let text = BASE.replace("replicas = 1\n", "replicas = 1\npredictor = \"bucket\"\n")
        + "\n[predictors.bucket]\nbuckets = 4294967295\n";
    let r = run_scenario(&w, &text);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("buckets from 1 to 65536"), "{}", r.stderr);
}

/// `[memory] block_tokens = 4294967295` with `kv_capacity_blocks` aborted allocating a per-block
/// table of the fast-forward; now at most 65,536 tokens per block.
#[test]
fn block_tokens_are_bounded() {
    let w = Workdir::new();
    let text = BASE.replace(
        "block_tokens = 16\n",
        "block_tokens = 4294967295\nkv_capacity_blocks = 1000\n",
    );
    let r = run_scenario(&w, &text);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("block_tokens must be at most 65536, got 4294967295"),
        "{}",
        r.stderr
    );
}
