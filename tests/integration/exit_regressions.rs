//! Regression tests of the crashes and unbounded counts that the structural tests of
//! [`crate::exit_codes`] and the adversarial round found: catalogue fields of 0, replica counts,
//! sweep run counts (overflow, empty and clashing axes), `--jobs`, shard manifests,
//! `--time-scale`, bucket predictor counts and block sizes.

use std::ffi::OsString;

use crate::exit_codes::{BASE, os};
use crate::support::{CliResult, Workdir, cli};

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

// Long on purpose: one flat table of catalogue fields, each set to 0 in turn.
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

/// `--num-requests 18446744073709551615` at a few req/s simulated until `[limits] max_sim_s`
/// stopped it (a minute and 400 MB for `fidelity`); arrivals that certainly outlast the limit
/// are refused before anything runs (the rule's edges: `run::tests`).
#[test]
fn arrivals_that_outlast_max_sim_s_are_refused_up_front() {
    let w = Workdir::new();
    let p = w.write("s.toml", BASE);
    for sub in ["run", "fidelity"] {
        let mut args: Vec<OsString> = vec![sub.into(), os(&p)];
        if sub == "fidelity" {
            args.extend(["--device".into(), "mock".into()]);
        }
        args.extend([
            "--num-requests".into(),
            "18446744073709551615".into(),
            "--out".into(),
            os(&w.path("out")),
        ]);
        let r = cli(args);
        crate::cli::assert_user_error(
            &w,
            &r,
            &[
                "18446744073709551615 requests arriving at 5 req/s span about 3.68935e18 s",
                "past [limits] max_sim_s = 100000 s",
            ],
        );
        assert!(!w.path("out").exists(), "{sub}");
    }
}

/// A GPU from `catalogue_files` has no fitted analytic parameters: the error said to give all of
/// them in `[cost.params]`, and still refused when they were all given. Now they are used, and a
/// missing one is named.
#[test]
fn a_catalogue_gpu_takes_its_analytic_parameters_from_cost_params() {
    let w = Workdir::new();
    w.write(
        "cat.toml",
        format!(
            "{MODEL}\n[gpus.gx]\nflops_per_s = 3.12e14\nhbm_bytes_per_s = 2.0e12\nmemory_bytes = 85899345920\npcie_generation = 4\npcie_bytes_per_s = 2.5e10\nnvlink_bytes_per_s = 3.0e11\n"
        ),
    );
    let params = "gemm_compute_eff = 0.72\ngemm_memory_eff = 0.79\ngemm_latency_s = 3.3e-5\nattn_prefill_eff = 0.2\nattn_prefill_latency_s = 2.2e-5\nattn_decode_eff = 0.91\nattn_decode_latency_s = 6e-6\nattn_decode_s_per_request = 1.1e-6\nelementwise_eff = 0.48\nlayer_overhead_s = 8.7e-6\nlayer_s_per_token = 0.0\niteration_overhead_s = 0.004\nallreduce_latency_s = 4.8e-5\nallreduce_eff = 0.58\n";
    let text = |params: &str| {
        scenario_on("m", "")
            .replace("gpu = \"a100-40gb\"", "gpu = \"gx\"")
            .replace(
                "model = \"constant\"\niteration_s = 0.01",
                &format!("model = \"analytic\"\n\n[cost.params]\n{params}"),
            )
    };
    let r = run_scenario(&w, &text(params));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run_scenario(&w, &text(&params.replace("gemm_memory_eff = 0.79\n", "")));
    crate::cli::assert_user_error(
        &w,
        &r,
        &[
            "no fitted analytic parameters for GPU `gx`",
            "missing field `gemm_memory_eff`",
        ],
    );
}

/// Step times in the wrong unit (`[pipeline] send_latency_s = 1e300`, a constant or analytic
/// iteration of ~1e300 s, `[swap] latency_s = 1e300`) passed validation and failed mid-run with
/// no file or line ("pipeline send time 1e300 s is invalid"); each is now refused up front at its
/// table's line.
#[test]
fn step_times_in_the_wrong_unit_are_refused_at_their_line() {
    let w = Workdir::new();
    let analytic = "[cost]\nmodel = \"analytic\"\n";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "pp = 1\n",
            "pp = 2\n",
            "\n[pipeline]\nsend_latency_s = 1e300\n",
            "[pipeline] a stage-to-stage send",
        ),
        (
            "iteration_s = 0.01\n",
            "iteration_s = 1e300\n",
            "",
            "[cost] model `constant` gives an iteration of 1e300 s",
        ),
        (
            "[cost]\nmodel = \"constant\"\niteration_s = 0.01\n",
            analytic,
            "\n[cost.params]\ngemm_compute_eff = 1e-300\n",
            "[cost] model `analytic` gives an iteration of",
        ),
        (
            "pp = 1\n",
            "pp = 1\n",
            "\n[swap]\nlatency_s = 1e300\n",
            "[swap] the swap model gives a copy of",
        ),
    ];
    for (from, to, extra, needle) in cases {
        let text = format!("{}{extra}", BASE.replace(from, to));
        let key_line = |key: &str| text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
        let table = needle.split(']').next().unwrap().to_string() + "]";
        let r = run_scenario(&w, &text);
        assert_eq!(r.code, 2, "{needle}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{}", r.stderr);
        assert!(r.stderr.contains("at most 1000000 s"), "{}", r.stderr);
        let line = format!("s.toml: line {}: ", key_line(&table));
        let line = if table == "[pipeline]" {
            format!("s.toml: line {}: ", key_line("send_latency_s"))
        } else {
            line
        };
        assert!(r.stderr.contains(&line), "{line}: {}", r.stderr);
        assert!(!w.path("out").exists());
    }
    // The same values where sane run.
    assert_eq!(run_scenario(&w, BASE).code, 0);
}

/// A synthetic request that no replica's KV pool can hold was reported as "request N: needs …"
/// with no file, line or hint of where its lengths came from.
#[test]
fn a_synthetic_request_that_never_fits_names_the_trace_table() {
    let w = Workdir::new();
    let text = BASE.replace(
        "block_tokens = 16\n",
        "block_tokens = 16\nkv_capacity_blocks = 1\n",
    );
    let line = text.lines().position(|l| l == "[trace]").unwrap() + 1;
    let r = run_scenario(&w, &text);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let needle = format!(
        "s.toml: line {line}: [trace]: synthetic request 0 (lengths drawn from input_lengths and output_lengths): needs"
    );
    assert!(r.stderr.contains(&needle), "{}", r.stderr);
    assert!(r.stderr.contains("more KV memory"), "{}", r.stderr);
    assert!(!w.path("out").exists());
}

/// Output directories named like servesim's staging, set-aside or lock entries
/// (`.o.servesim-tmp-…`, `.o.servesim-old-…`, the older `.o.tmp-PID`, `.o.servesim-lock`) were
/// accepted, and the next `--out o` then deleted or moved them as debris.
#[test]
fn output_directories_may_not_take_bookkeeping_names() {
    let w = Workdir::new();
    for name in [
        ".o.servesim-tmp-99999-0",
        ".o.servesim-old-99999-0",
        ".o.tmp-99999",
        ".o.servesim-lock",
    ] {
        let r = cli([
            "run".into(),
            os(&w.write("s.toml", BASE)),
            "--out".into(),
            os(&w.path(name)),
            "--quiet".into(),
        ]);
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("name servesim keeps for its own bookkeeping"),
            "{}",
            r.stderr
        );
        assert!(!w.path(name).exists(), "{name}");
    }
}

/// `--out o/.` ran the whole job and then failed with "Device or resource busy (os error 16)";
/// `--out LINK/ --force` with "Not a directory (os error 20)". A trailing `/` or `/.` names the
/// entry itself: `o/.` replaces `o`, and `LINK/` is the link (refused without --force).
#[cfg(unix)]
#[test]
fn trailing_slashes_and_dots_in_out_name_the_entry_itself() {
    let w = Workdir::new();
    let s = w.write("s.toml", BASE);
    let run_to = |out: &str, force: bool| {
        let mut args: Vec<OsString> = vec!["run".into(), os(&s), "--out".into(), os(&w.path(out))];
        args.push("--quiet".into());
        if force {
            args.push("--force".into());
        }
        cli(args)
    };
    assert_eq!(run_to("o", false).code, 0);
    let r = run_to("o/.", false);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("o/summary.json").is_file());
    std::fs::create_dir(w.path("target")).unwrap();
    std::os::unix::fs::symlink(w.path("target"), w.path("link")).unwrap();
    let r = run_to("link/", false);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("the output path is a symbolic link"),
        "{}",
        r.stderr
    );
    let r = run_to("link/", true);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("link/summary.json").is_file());
    assert!(
        std::fs::read_dir(w.path("target"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// fcfs's default reservation (the whole context limit) larger than the KV pool was reported as
/// "request 0: fcfs reservation of N KV blocks exceeds …", with no file or setting (or blaming
/// a trace row); now it names the scenario and the settings at fault.
#[test]
fn an_fcfs_reservation_larger_than_the_pool_names_the_settings() {
    let w = Workdir::new();
    let text = BASE
        .replace("policy = \"vllm\"", "policy = \"fcfs\"")
        .replace(
            "block_tokens = 16\n",
            "block_tokens = 16\nkv_capacity_blocks = 100\n",
        );
    let r = run_scenario(&w, &text);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("s.toml: [policies.fcfs] reserve = \"max\" reserves the whole context limit")
            && r.stderr
                .contains("max_context_tokens = 2048: 128 KV blocks), but a replica holds 100"),
        "{}",
        r.stderr
    );
}

/// Control characters from the user's inputs (here an output path) reached stdout raw ("outputs
/// in o␛[32m…"); reports now escape them as error lines do.
#[test]
fn reports_escape_control_characters_from_inputs() {
    let w = Workdir::new();
    let r = cli([
        "run".into(),
        os(&w.write("s.toml", BASE)),
        "--out".into(),
        os(&w.path("o\u{1b}[32m\u{202e}x")),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("o\\x1b[32m\\u202ex"), "{}", r.stdout);
    let unsafe_char = |c: char| servesim::error::is_unsafe_char(c) && c != '\n' && c != '\t';
    assert!(!r.stdout.chars().any(unsafe_char), "{:?}", r.stdout);
    assert!(!r.stderr.chars().any(unsafe_char), "{:?}", r.stderr);
}
