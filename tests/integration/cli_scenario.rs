//! The command line on bad scenario files, under the rules of [`crate::cli`] (exit 2, one clear
//! `error: …` line naming what to fix, no panic, no output directory): unknown policies, models
//! and GPUs listing the valid names, unknown keys and unused parameter tables naming the line,
//! memory physics, messages in the user's terms (also in a sweep), requests larger than the KV
//! capacity, synthetic rates too low for the clock, ignored values, repeated runs and bad `cv`.

use crate::cli::{GOOD_ROWS, HEADER, assert_user_error, run_in, scenario, synthetic_scenario};
use crate::support::{Workdir, cli};

#[test]
fn unknown_policy_lists_valid_names() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("lottery", ""));
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["scenario.toml", "unknown policy `lottery`", "fcfs", "vllm"],
    );
    // The same through --policy.
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &["--policy", "lottery"]);
    assert_user_error(&w, &r, &["unknown policy `lottery`", "fcfs", "vllm"]);
}

#[test]
fn unknown_model_lists_valid_names() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario("vllm", "").replace("opt-13b", "gpt-9"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["scenario.toml", "unknown model `gpt-9`", "llama-2-7b"],
    );
}

#[test]
fn unknown_gpu_lists_valid_names() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario("vllm", "").replace("a100-40gb", "tpu-v9"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["scenario.toml", "unknown GPU `tpu-v9`", "a100-40gb"],
    );
}

/// Line (1-based) of the first line of `text` starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn unknown_scenario_key_names_the_line() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    // At the top level.
    let text = scenario("vllm", "").replace("gpu =", "colour = \"blue\"\ngpu =");
    w.write("scenario.toml", &text);
    let r = run_in(&w, &[]);
    let line = format!("line {},", line_of(&text, "colour"));
    assert_user_error(&w, &r, &["scenario.toml", &line, "`colour`"]);
    // Inside a table.
    let text = scenario("vllm", "max_batch_sise = 8\n");
    w.write("scenario.toml", &text);
    let r = run_in(&w, &[]);
    let line = format!("line {},", line_of(&text, "max_batch_sise"));
    assert_user_error(&w, &r, &["scenario.toml", &line, "`max_batch_sise`"]);
    // Inside a policy's parameter table.
    let text = scenario("vllm", "\n[policies.vllm]\nwatermark = 0.1\n");
    w.write("scenario.toml", &text);
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["`watermark`", "policies.vllm"]);
}

/// Every `[policies.NAME]`, `[routers.NAME]` and `[predictors.NAME]` table present is checked
/// with its own parameter parser, whether or not the run uses it.
#[test]
fn unused_parameter_tables_are_checked() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    for (extra, needles) in [
        (
            "\n[policies.fcfs]\nreserve = \"nope\"\n",
            &["policies.fcfs", "reserve", "nope"][..],
        ),
        (
            "\n[policies.srpt]\nbogus = 1\n",
            &["policies.srpt", "`bogus`"][..],
        ),
        (
            "\n[policies.lottery]\nx = 1\n",
            &["policies.lottery", "unknown policy", "vllm"][..],
        ),
        (
            "\n[routers.least-work]\nbogus = 1\n",
            &["routers.least-work", "`bogus`"][..],
        ),
        (
            "\n[routers.random]\n",
            &["routers.random", "unknown router"][..],
        ),
        (
            "\n[predictors.history]\nk = 0\n",
            &["scenario.toml", "predictors.history", "k, window"][..],
        ),
        (
            "\n[predictors.bucket]\nconfusion_rate = 2.0\n",
            &["scenario.toml", "predictors.bucket", "confusion_rate"][..],
        ),
        (
            "\n[predictors.noisy]\nsigma = -1.0\n",
            &["scenario.toml", "predictors.noisy", "sigma"][..],
        ),
        (
            "\n[predictors.oracle]\nsigma = 1.0\n",
            &["scenario.toml", "predictors.oracle", "`sigma`"][..],
        ),
    ] {
        w.write("scenario.toml", scenario("vllm", extra));
        let r = run_in(&w, &[]);
        assert_user_error(&w, &r, needles);
    }
    // The line of the key at fault.
    let text = scenario("vllm", "\n[policies.fcfs]\nreserve = \"nope\"\n");
    w.write("scenario.toml", &text);
    let r = run_in(&w, &[]);
    let line = format!("line {}:", line_of(&text, "reserve"));
    assert_user_error(&w, &r, &[&line, "[policies.fcfs] `reserve`"]);
}

/// `gpu_memory_utilization` outside (0, 1] and a model that cannot fit its GPUs are errors even
/// when `kv_capacity_blocks` overrides the KV capacity.
#[test]
fn memory_physics_is_checked_with_a_kv_capacity_override() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    for (text, needles) in [
        (
            scenario("vllm", "").replace(
                "kv_capacity_blocks = 1000",
                "kv_capacity_blocks = 1000\ngpu_memory_utilization = 5.0",
            ),
            &["gpu_memory_utilization", "(0, 1]", "got 5"][..],
        ),
        (
            scenario("vllm", "").replace(
                "kv_capacity_blocks = 1000",
                "kv_capacity_blocks = 1000\ngpu_memory_utilization = nan",
            ),
            &["gpu_memory_utilization", "NaN"][..],
        ),
        (
            scenario("vllm", "").replace("opt-13b", "opt-66b"),
            &["does not fit", "weights 122.", "usable memory 35."][..],
        ),
        (
            scenario("vllm", "max_context_tokens = 0\n"),
            &["max_context_tokens"][..],
        ),
        (
            scenario("vllm", "max_context_tokens = 1\n"),
            &["max_context_tokens must be ≥ 2", "line "][..],
        ),
        (
            scenario("vllm", "max_context_tokens = 2\n"),
            &[
                "exceeds the context limit of 2 tokens",
                "[scheduler] max_context_tokens",
            ][..],
        ),
        (
            scenario("vllm", "").replace(
                "kv_capacity_blocks = 1000",
                "kv_capacity_blocks = 1000\nblock_tokens = 4000000000",
            ),
            &["block_tokens", "at most"][..],
        ),
    ] {
        w.write("scenario.toml", &text);
        let r = run_in(&w, &[]);
        assert_user_error(&w, &r, needles);
    }
}

/// Error messages in the user's terms: the duplicate key named, no Rust type names, control
/// bytes escaped, numbers with a sensible precision, the flag blamed for a flag's value.
#[test]
fn error_messages_are_in_the_users_terms() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let dup = scenario("vllm", "").replace("gpu =", "model = \"opt-13b\"\ngpu =");
    let line = format!("line {},", line_of(&dup, "gpu") - 1);
    for (text, needles, absent) in [
        (dup, vec!["duplicate key `model`", line.as_str()], vec![]),
        (
            scenario("vllm", "\n[policies]\nvllm = 3\n"),
            vec!["policies.vllm", "expected a table"],
            vec!["struct", "Params"],
        ),
        (
            scenario("vllm", "\n[[policies.vllm]]\nwatermark_frac = 0.1\n"),
            vec!["[policies.vllm]: expected a table of parameters, got an array"],
            vec!["expected a number"],
        ),
        (
            scenario("vllm", "\n[routers]\nround-robin = [1]\n"),
            vec!["[routers.round-robin]: expected a table of parameters, got an array"],
            vec![],
        ),
        (
            scenario("vl\\u001b[31mlm", ""),
            vec!["unknown policy `vl\\x1b[31mlm`"],
            vec!["\u{1b}"],
        ),
        (
            scenario("vllm", "").replace(
                "file = \"trace.csv\"",
                "file = \"trace.csv\"\nrate_per_s = -1e300",
            ),
            vec!["rate_per_s", "got -1e300", "line 7:"],
            vec!["00000000000000000000"],
        ),
    ] {
        w.write("scenario.toml", &text);
        let r = run_in(&w, &[]);
        let needles: Vec<&str> = needles.to_vec();
        assert_user_error(&w, &r, &needles);
        for a in absent {
            assert!(!r.stderr.contains(a), "{a:?} in {:?}", r.stderr);
        }
    }
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &["--num-requests", "0"]);
    assert_user_error(&w, &r, &["--num-requests"]);
    let r = run_in(&w, &["--rate=-1e300"]);
    assert_user_error(&w, &r, &["--rate", "got -1e300"]);
}

#[test]
fn request_larger_than_kv_capacity() {
    // 20 blocks of 16 tokens = 320 tokens; request 1 needs 300 + 40 − 1 = 339 tokens = 22 blocks.
    for policy in ["vllm", "fcfs"] {
        let w = Workdir::new();
        w.write("trace.csv", format!("{HEADER}0,4,2\n0.1,300,40\n"));
        w.write(
            "scenario.toml",
            scenario(policy, "\n[policies.fcfs]\nreserve = \"oracle\"\n")
                .replace("kv_capacity_blocks = 1000", "kv_capacity_blocks = 20"),
        );
        let r = run_in(&w, &[]);
        assert_user_error(&w, &r, &["request 1", "22 KV blocks", "20 blocks"]);
    }
    // fcfs reserve = max: the context-length reservation (2048 tokens = 128 blocks) cannot fit.
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario("fcfs", "").replace("kv_capacity_blocks = 1000", "kv_capacity_blocks = 100"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["reserve = \"max\"", "128 KV blocks", "holds 100 blocks"],
    );
}

/// A synthetic rate so low that the first arrival is past the nanosecond clock said only
/// "synthetic arrival time overflowed"; the message now names the request and the rate.
#[test]
fn a_synthetic_rate_too_low_for_the_clock_names_the_rate() {
    let w = Workdir::new();
    w.write(
        "scenario.toml",
        synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 3"),
    );
    let r = run_in(&w, &["--rate", "1e-300"]);
    assert_user_error(
        &w,
        &r,
        &["request 0 would arrive at", "rate_per_s", "--rate"],
    );
}

/// Semantic scenario errors name the line of the key at fault, also in a sweep (whose runs parse
/// generated text: the line must still be the user's).
#[test]
fn semantic_errors_name_the_line_also_in_a_sweep() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    // scenario(): line 11 is `[cost]`, 13 `iteration_s`, 15 `[scheduler]`.
    let cases = [
        (
            "iteration_s = 0.1",
            "iteration_s = -1",
            "line 13: [cost] iteration_s",
        ),
        (
            "[scheduler]",
            "[output]\nkv_timeline_interval_s = -1\n[scheduler]",
            "line 16: [output] kv_timeline_interval_s",
        ),
        (
            "[scheduler]",
            "[swap]\nlatency_s = -1\n[scheduler]",
            "line 16: [swap]",
        ),
    ];
    for (from, to, needle) in cases {
        w.write("scenario.toml", scenario("vllm", "").replacen(from, to, 1));
        let r = run_in(&w, &[]);
        assert_user_error(&w, &r, &[needle]);
    }
    // The axis set the value at fault: its line, not that of the file's own `tp = 1`.
    let text = format!("tp = 1\n{}\n[sweep]\ntp = [1, 3]\n", scenario("vllm", ""));
    let axis_line = text.lines().count();
    w.write("scenario.toml", &text);
    let r = cli([
        "sweep".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("results/run").into_os_string(),
    ]);
    assert_user_error(
        &w,
        &r,
        &[&format!(
            "sweep point 1 (tp=3): line {axis_line} ([sweep] tp): tp = 3 does not divide"
        )],
    );
}

/// Found by the second adversarial round: values that were accepted and silently ignored, and
/// echoes that reached the terminal raw.
#[test]
fn ignored_values_are_errors_and_echoes_are_tamed() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    // [pipeline] with pp = 1.
    w.write(
        "scenario.toml",
        scenario("vllm", "[pipeline]\nsend_latency_s = -1\n"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["line 18: [pipeline] send_latency_s"]);
    // cv with Poisson arrivals (cv = 1 is Poisson's own and stays accepted).
    let synth = |cv: &str| {
        synthetic_scenario(&format!(
            "arrival = \"poisson\"\ncv = {cv}\nrate_per_s = 1.0\nnum_requests = 3"
        ))
    };
    w.write("scenario.toml", synth("5"));
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["[trace] cv = 5 has no effect on `poisson` arrivals"],
    );
    w.write("scenario.toml", synth("1.0"));
    assert_eq!(run_in(&w, &[]).code, 0);
    std::fs::remove_dir_all(w.path("results/run")).unwrap();
    // Control bytes in a trace cell are escaped in the one error line.
    w.write(
        "trace.csv",
        format!("{HEADER}0,4,2\n0.1,4,10\u{1b}[31mRED\u{7}\n"),
    );
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        !r.stderr.trim_end().chars().any(char::is_control) && r.stderr.contains("\\x1b"),
        "{:?}",
        r.stderr
    );
    // capacity's first probe rate and bench's repeat count are bounded.
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let r = cli([
        "capacity".into(),
        w.path("scenario.toml").into_os_string(),
        "--slo".into(),
        "jct_s=20".into(),
        "--start-rate".into(),
        "1e308".into(),
    ]);
    assert_user_error(&w, &r, &["--start-rate", "got 1e308"]);
    let r = cli(["bench", "--repeat", "0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Messages the second adversarial round found in Rust terms: `max = Some(2)` from a lognormal
/// spec, and "File exists (os error 17)" when a run directory's `plots` is a file.
#[test]
fn messages_say_values_and_causes_plainly() {
    let w = Workdir::new();
    let r = cli([
        "trace",
        "synth",
        "--rate",
        "1",
        "--num",
        "3",
        "--input",
        "lognormal:mean=3,sigma=0.5,min=10,max=2",
        "--output",
        "fixed:value=3",
        "-o",
        w.path("z.csv").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("got min = 10, max = 2") && !r.stderr.contains("Some("),
        "{}",
        r.stderr
    );
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    assert_eq!(run_in(&w, &[]).code, 0);
    std::fs::write(w.path("results/run/plots"), "").unwrap();
    let r = cli(["plot".into(), w.path("results/run").into_os_string()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("exists and is not a directory"),
        "{}",
        r.stderr
    );
}

/// Repeated sweep values and capacity policies ran twice silently; a gamma `cv` of 1e308 failed
/// in statrs ("shape is not positive") without naming the field.
#[test]
fn repeated_runs_and_out_of_range_cv_are_errors() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario(
            "vllm",
            "\n[sweep]\npolicy = [\"vllm\", \"fcfs\", \"vllm\"]\n",
        ),
    );
    let r = cli([
        "sweep".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("results/run").into_os_string(),
    ]);
    assert_user_error(
        &w,
        &r,
        &["`policy`: value vllm (position 3) is listed twice"],
    );
    w.write("scenario.toml", scenario("vllm", ""));
    let r = cli([
        "capacity".into(),
        w.path("scenario.toml").into_os_string(),
        "--slo".into(),
        "jct_s=20".into(),
        "--policies".into(),
        "vllm,fcfs,vllm".into(),
    ]);
    assert_user_error(&w, &r, &["--policies lists `vllm` twice"]);
    w.write(
        "scenario.toml",
        synthetic_scenario("arrival = \"gamma\"\ncv = 1e308\nrate_per_s = 1.0\nnum_requests = 3"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["line 7: [trace] cv must be from 1e-6 to 1e6"]);
}
