//! Regression tests of the second adversarial round: error messages in the user's terms (no Rust
//! type names), zero-time iterations, ambiguous trace headers, catalogue names that redefine
//! built-in ones, and `bench` checking every scenario before printing its table.

use std::ffi::OsString;

use crate::exit_codes::{BASE, os};
use crate::support::{CliResult, Workdir, cli};

fn run_text(w: &Workdir, text: &str) -> CliResult {
    let p = w.write("s.toml", text);
    cli([
        "run".into(),
        os(&p),
        "--out".into(),
        os(&w.path("out")),
        "--quiet".into(),
    ])
}

/// Exit 2 with one line holding every `want`, and no output directory.
fn assert_refused(w: &Workdir, r: &CliResult, want: &[&str]) {
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    for s in want {
        assert!(r.stderr.contains(s), "`{s}` missing from: {}", r.stderr);
    }
    assert!(!w.path("out").exists(), "a refused run wrote its output");
}

/// Rust type names (`u32`, `usize`, `as i128`, `f64`) were echoed from serde; the range in words
/// is what the user needs.
#[test]
fn serde_messages_name_ranges_not_rust_types() {
    let w = Workdir::new();
    for (line, value, want) in [
        (
            "max_batch_size = 8",
            "max_batch_size = -1",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "max_batch_size = 8",
            "max_batch_size = 99999999999",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "rate_per_s = 5.0",
            "rate_per_s = 99999999999999999999",
            "expected a number",
        ),
    ] {
        let r = run_text(&w, &BASE.replace(line, value));
        assert_refused(&w, &r, &[want]);
        for rust in ["u32", "u64", "usize", "i128", "f64"] {
            assert!(!r.stderr.contains(rust), "{rust} in: {}", r.stderr);
        }
    }
    // A NaN in a synth length spec was "invalid type: null, expected f64".
    let r = cli([
        "trace".into(),
        "synth".into(),
        "--rate".into(),
        "1".into(),
        "--num".into(),
        "3".into(),
        "--input".into(),
        "lognormal:mean=nan,sigma=1".into(),
        "--output".into(),
        "fixed:value=2".into(),
        "--out".into(),
        os(&w.path("t.csv")),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`mean=nan`") && r.stderr.contains("expected a finite number"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("f64") && !r.stderr.contains("null"));
    // A shard manifest with a negative count.
    let d = w.path("shard");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("shard.json"),
        r#"{"format":1,"shard":-1,"shards":2}"#,
    )
    .unwrap();
    let r = cli(["merge".into(), os(&d), "--out".into(), os(&w.path("m"))]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("expected a whole number from 0 to") && !r.stderr.contains("usize"),
        "{}",
        r.stderr
    );
}

/// The simulated-time guard printed "passed 0s" for a limit under half a second, and did not say
/// how to lift it, nor whether the trace outlasted it or the queue did ("overloaded or too
/// long"); the other limits were all blamed on "[limits]".
#[test]
fn guard_messages_name_the_limit_and_its_value() {
    let w = Workdir::new();
    let r = run_text(
        &w,
        &BASE.replace("max_sim_s = 100000.0", "max_sim_s = 0.25"),
    );
    // 5 arrivals at 5 req/s go past 0.25 s: the trace itself is too long for the limit.
    assert_refused(
        &w,
        &r,
        &[
            "[limits] max_sim_s = 0.25 s",
            "requests were still arriving",
        ],
    );
    // All 5 arrive within milliseconds, the 4 decode steps take 40 ms: unfinished at 0.02 s.
    let text = BASE
        .replace("max_sim_s = 100000.0", "max_sim_s = 0.02")
        .replace("rate_per_s = 5.0", "rate_per_s = 5000.0");
    let r = run_text(&w, &text);
    assert_refused(
        &w,
        &r,
        &[
            "max_sim_s = 0.02 s",
            "requests were unfinished though the last arrived at t=",
        ],
    );
    let r = run_text(&w, &BASE.replace("max_queue = 1000", "max_queue = 0"));
    assert_refused(&w, &r, &["line", "[limits] max_queue must be ≥ 1"]);
    let r = run_text(
        &w,
        &BASE.replace("max_sim_s = 100000.0", "max_sim_s = 1e-320"),
    );
    assert_refused(&w, &r, &["[limits] max_sim_s must be", "9.99989e-321"]);
}

/// `iteration_s = 0`, a denormal one and an all-zero linear model were rounded up to 1 ns per
/// iteration without a word.
#[test]
fn zero_time_iterations_are_refused_naming_the_key() {
    let w = Workdir::new();
    for (cost, want) in [
        ("iteration_s = 0", "[cost] iteration_s must be"),
        ("iteration_s = 1e-320", "got 9.99989e-321"),
        ("iteration_s = -0.0", "[cost] iteration_s must be"),
    ] {
        let r = run_text(&w, &BASE.replace("iteration_s = 0.01", cost));
        assert_refused(&w, &r, &["s.toml: line 25", want]);
    }
    let linear = |a: &str, b: &str| {
        format!(
            "model = \"linear\"\na_s = {a}\nb_s_per_token = {b}\nc_s_per_token_sq = 0\nd_s_per_request = 0\ne_s_per_context_token = 0"
        )
    };
    let r = run_text(
        &w,
        &BASE.replace(
            "model = \"constant\"\niteration_s = 0.01",
            &linear("0", "0"),
        ),
    );
    assert_refused(
        &w,
        &r,
        &["s.toml: line 23", "the cheapest iteration", "takes 0 s"],
    );
    let r = run_text(
        &w,
        &BASE.replace(
            "model = \"constant\"\niteration_s = 0.01",
            &linear("0.01", "1e-320"),
        ),
    );
    assert_refused(&w, &r, &["s.toml: line 26", "[cost] b_s_per_token"]);
    // The smallest valid values still run.
    let r = run_text(
        &w,
        &BASE.replace("iteration_s = 0.01", "iteration_s = 1e-9"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A trace with both the canonical and Vidur's length columns used the canonical ones silently.
#[test]
fn a_trace_with_two_column_sets_is_ambiguous() {
    let w = Workdir::new();
    let t = w.write(
        "t.csv",
        "arrival_s,input_tokens,output_tokens,arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,4,0,8,8\n",
    );
    let r = cli(["trace".into(), "stats".into(), os(&t)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for want in [
        "t.csv:1",
        "`input_tokens,output_tokens`",
        "`num_prefill_tokens,num_decode_tokens`",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    let text = BASE
        .lines()
        .filter(|l| {
            ![
                "arrival",
                "rate_per_s",
                "cv",
                "input_lengths",
                "output_lengths",
            ]
            .iter()
            .any(|k| l.starts_with(&format!("{k} =")))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("[trace]", "[trace]\nfile = \"t.csv\"");
    let r = run_text(&w, &text);
    assert_refused(
        &w,
        &r,
        &[
            "t.csv:1",
            "`arrival_s,input_tokens,output_tokens` and `arrived_at,",
        ],
    );
}

/// A catalogue file's `[models.opt-13b]` replaced the built-in OPT-13B for every scenario that
/// named it.
#[test]
fn catalogue_files_cannot_redefine_names() {
    let w = Workdir::new();
    let model = |name: &str| {
        format!(
            "[models.{name}]\nlayers = 2\nhidden = 64\nheads = 4\nkv_heads = 4\nffn = 128\ngated_mlp = false\nvocab = 100\ndtype_bytes = 2\nmax_context_tokens = 4096\ntied_embeddings = true\nlearned_positions = true\n"
        )
    };
    let with_cat = BASE.replace(
        "replicas = 1\n",
        "replicas = 1\ncatalogue_files = [\"cat.toml\"]\n",
    );
    for (cat, want) in [
        (
            model("opt-13b"),
            "cat.toml: line 1: [models.opt-13b] redefines the built-in model `opt-13b`",
        ),
        (
            format!("\n{}", model("\"OPT-13B\"")),
            "cat.toml: line 2: [models.OPT-13B] redefines the built-in model `opt-13b`",
        ),
        (
            format!("{}{}", model("mine"), model("MINE")),
            "redefines model `mine`, defined earlier",
        ),
        (
            "[gpus.h200]\nflops_per_s = 1e15\nhbm_bytes_per_s = 1e12\nmemory_bytes = 85899345920\npcie_generation = 4\npcie_bytes_per_s = 3e10\nnvlink_bytes_per_s = 3e11\n".to_string(),
            "[gpus.h200] redefines the built-in GPU `h200`",
        ),
    ] {
        w.write("cat.toml", &cat);
        let r = run_text(&w, &with_cat);
        assert_refused(&w, &r, &[want]);
    }
    // A new name is still welcome.
    w.write("cat.toml", model("mine"));
    let r = run_text(&w, &with_cat);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `bench` printed its table header and then failed on the second scenario.
#[test]
fn bench_checks_every_scenario_before_printing() {
    let w = Workdir::new();
    let good = w.write("good.toml", BASE);
    let bad = w.write("bad.toml", BASE.replace("tp = 1", "tp = 0"));
    let args: Vec<OsString> = vec![
        "bench".into(),
        os(&good),
        os(&bad),
        "--repeat".into(),
        "1".into(),
        "--quiet".into(),
    ];
    let r = cli(args);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "printed before failing: {}", r.stdout);
    assert!(r.stderr.contains("bad.toml"), "{}", r.stderr);
}

/// `servesim-calibrate` printed errors as they came (a newline in a path broke the line).
#[test]
fn calibrate_errors_are_one_line() {
    let argv: Vec<OsString> = vec![
        "servesim-calibrate".into(),
        "fit".into(),
        "/nonexistent/a\nb".into(),
    ];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim_calibrate::cli::main_with_args(argv, &mut out, &mut err);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("a\\nb"), "{err}");
    // `plan --gpus 0` printed a plan for no GPU.
    let argv: Vec<OsString> = [
        "servesim-calibrate",
        "plan",
        "--model",
        "opt-13b",
        "--gpus",
        "0",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim_calibrate::cli::main_with_args(argv, &mut out, &mut err);
    assert_eq!(code, 2, "{}", String::from_utf8_lossy(&err));
    assert!(out.is_empty());
}

/// `live --mock --time-scale 1e-6` asked for 30 ns waits: the run came out 14× longer than the
/// simulation, silently. A warning is the answer (not a refusal): whether the clock keeps up
/// depends on the batches the run forms and on the machine's load, which only the run measures.
#[test]
fn live_runs_too_fast_for_the_clock_say_so() {
    let w = Workdir::new();
    let p = w.write(
        "s.toml",
        BASE.replace("num_requests = 5", "num_requests = 20"),
    );
    let r = cli([
        "live".into(),
        os(&p),
        "--mock".into(),
        "--time-scale".into(),
        "1e-6".into(),
        "--out".into(),
        os(&w.path("out")),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("warning: ") && r.stderr.contains("--time-scale 1e-6"),
        "{}",
        r.stderr
    );
    let summary = crate::support::read_summary(&w.path("out"));
    let warnings = summary["live"]["warnings"]
        .as_array()
        .expect("live.warnings");
    assert!(!warnings.is_empty());
    // Each live warning once; a stretched run may also be unstable (its own warning line).
    let lines = r.stderr.lines();
    assert_eq!(
        warnings.len(),
        lines.filter(|l| !l.contains("did not keep up")).count()
    );
}

/// `kv_capacity_blocks = 1e8` on one A100-40GB ran as if the memory were there, without a word.
/// It stays a (teaching) override, with a warning on stderr and in summary.json.
#[test]
fn kv_capacity_beyond_the_gpu_memory_is_a_warning() {
    let w = Workdir::new();
    let text = BASE.replace("[memory]\n", "[memory]\nkv_capacity_blocks = 100000000\n");
    let r = run_text(&w, &text);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = "line 18: [memory] kv_capacity_blocks = 100000000 is more than twice the";
    assert!(
        r.stderr.starts_with("warning: ") && r.stderr.contains(want),
        "{}",
        r.stderr
    );
    let summary = crate::support::read_summary(&w.path("out"));
    let warnings = summary["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().starts_with("line 18: "));
    // A value the memory holds, and no override at all, say nothing.
    for text in [
        BASE.replace("[memory]\n", "[memory]\nkv_capacity_blocks = 100\n"),
        BASE.to_string(),
    ] {
        let r = run_text(&w, &text.replace("hostile", "quiet"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.is_empty(), "{}", r.stderr);
    }
}

/// `trace synth --rate 1e300` reported "requested mean rate 1000000…(300 digits).0000 req/s".
#[test]
fn synth_reports_huge_rates_in_scientific_notation() {
    let w = Workdir::new();
    let r = cli([
        "trace".into(),
        "synth".into(),
        "--rate".into(),
        "1e300".into(),
        "--num".into(),
        "2".into(),
        "--input".into(),
        "fixed:value=1".into(),
        "--output".into(),
        "fixed:value=1".into(),
        "--out".into(),
        os(&w.path("t.csv")),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("rate 1e300 req/s"), "{}", r.stdout);
}

/// A directory given as a trace was reported as "field `header`: Is a directory (os error 21)".
#[test]
fn a_directory_as_a_trace_says_so() {
    let w = Workdir::new();
    let d = w.path("traces");
    std::fs::create_dir(&d).unwrap();
    for args in [
        vec!["trace".into(), "stats".into(), os(&d)],
        vec![
            "trace".into(),
            "import".into(),
            "vidur".into(),
            os(&d),
            "--out".into(),
            os(&w.path("t.csv")),
        ],
    ] {
        let r = cli(args);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("is a directory; expected a CSV file"),
            "{}",
            r.stderr
        );
        assert!(!w.path("t.csv").exists());
    }
}

/// A `max_context_tokens` above the model's own limit ran without a word; it stays allowed (a
/// what-if), with a warning naming the line, the model and its limit.
#[test]
fn a_context_above_the_models_limit_is_a_warning() {
    let w = Workdir::new();
    let text = BASE.replace("max_context_tokens = 2048", "max_context_tokens = 100000");
    let r = run_text(&w, &text);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("warning: ")
            && r.stderr
                .contains("[scheduler] max_context_tokens = 100000 is above model")
            && r.stderr.contains("line 31: "),
        "{}",
        r.stderr
    );
    let summary = crate::support::read_summary(&w.path("out"));
    assert_eq!(summary["warnings"].as_array().map(Vec::len), Some(1));
    // The model's own limit says nothing.
    let r = run_text(&w, &BASE.replace("hostile", "quiet"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

/// `sweep` printed none of the scenario's warnings (`run` does): each is printed once, however many
/// runs share it.
#[test]
fn a_sweep_prints_each_scenario_warning_once() {
    let w = Workdir::new();
    let text = BASE.replace("max_context_tokens = 2048", "max_context_tokens = 100000");
    let p = w.write("s.toml", &text);
    let r = cli([
        "sweep".into(),
        os(&p),
        "--policies".into(),
        "vllm,srpt".into(),
        "--no-plots".into(),
        "--quiet".into(),
        "--out".into(),
        os(&w.path("out")),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // (The two policies serve this small trace alike: that axis gets its own warning.)
    let lines: Vec<&str> = (r.stderr.lines())
        .filter(|l| !l.starts_with("warning: sweep axis `policy`: its values gave identical"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("warning: ") && lines[0].contains("max_context_tokens = 100000"),
        "{}",
        r.stderr
    );
}

/// Errors inside a `[[replica_groups]]` entry named no line (`count = 0`, an unknown GPU, `pp`),
/// or the line of the top-level key the entry overrides (`tp`): each names the entry's own key,
/// first on the line as every scenario error. An unknown model or GPU names its line too.
#[test]
fn replica_group_errors_name_the_entrys_line() {
    let w = Workdir::new();
    // BASE is 43 lines; the second entry's first key is line 49.
    let groups = |second: &str| {
        format!("{BASE}\n[[replica_groups]]\ncount = 1\n\n[[replica_groups]]\n{second}\n")
    };
    for (second, want) in [
        (
            "count = 0",
            "line 49: [[replica_groups]] #2: `count` must be ≥ 1",
        ),
        (
            "count = 1\ngpu = \"nope\"",
            "line 50: [[replica_groups]] #2 (1 × nope tp 1 pp 1): unknown GPU `nope`",
        ),
        (
            "count = 1\ntp = 3",
            "line 50: [[replica_groups]] #2 (1 × a100-40gb tp 3 pp 1): tp = 3 does not divide",
        ),
        (
            "count = 1\ntp = 0",
            "line 50: [[replica_groups]] #2 (1 × a100-40gb tp 0 pp 1): `tp` must be ≥ 1",
        ),
        (
            "count = 1\npp = 200",
            "line 50: [[replica_groups]] #2 (1 × a100-40gb tp 1 pp 200): pp = 200 does not divide",
        ),
        (
            "count = 1\ncolour = 3",
            "line 50, column 1: unknown field `colour`",
        ),
    ] {
        let r = run_text(&w, &groups(second));
        assert_refused(&w, &r, &["s.toml: ", want]);
    }
    let r = run_text(
        &w,
        &groups("count = 1").replace("replicas = 1", "replicas = 2"),
    );
    assert_refused(
        &w,
        &r,
        &["s.toml: line 7: give either `replicas` or `[[replica_groups]]`"],
    );
    let r = run_text(&w, &BASE.replace("gpu = \"a100-40gb\"", "gpu = \"nope\""));
    assert_refused(&w, &r, &["s.toml: line 4: unknown GPU `nope`"]);
    let r = run_text(&w, &BASE.replace("model = \"opt-13b\"", "model = \"nope\""));
    assert_refused(&w, &r, &["s.toml: line 3: unknown model `nope`"]);
}
