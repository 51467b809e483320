//! Sweep axes, rate flags and run labels under hostile values: a sweep far over the run limit
//! fails at once (the duplicate check used to be quadratic), numbers repeat by value (`1`,
//! `1.0`), absurd rates are refused naming the flag or key, run directory names stay short and
//! unique, `capacity` never reports failed probes as missed targets, and `check` refuses a
//! golden file with the same numeric point twice.

use std::sync::mpsc;
use std::time::Duration;

use crate::cli::{GOOD_ROWS, HEADER, assert_user_error, scenario, synthetic_scenario};
use crate::support::{CliResult, Workdir, cli};

fn sweep_in(w: &Workdir, extra: &[&str]) -> CliResult {
    let mut args: Vec<std::ffi::OsString> = vec![
        "sweep".into(),
        w.path("scenario.toml").into(),
        "--out".into(),
        w.path("results/run").into(),
        "--quiet".into(),
        "--no-plots".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    cli(args)
}

/// A million seeds times half a million batch sizes: the old duplicate check compared every pair
/// before counting the runs (minutes); now the count fails first. Not timed: a generous timeout
/// only keeps a regression from hanging the suite.
#[test]
fn a_sweep_far_over_the_run_limit_fails_before_any_per_value_work() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let seeds: Vec<String> = (0..1_000_000).map(|i| i.to_string()).collect();
    let sizes: Vec<String> = (1..=500_000).map(|i| i.to_string()).collect();
    let extra = format!(
        "\n[sweep]\nseed = [{}]\n\"scheduler.max_batch_size\" = [{}]\n",
        seeds.join(","),
        sizes.join(",")
    );
    w.write("scenario.toml", scenario("vllm", &extra));
    let args: Vec<std::ffi::OsString> = vec![
        "sweep".into(),
        w.path("scenario.toml").into(),
        "--out".into(),
        w.path("results/run").into(),
        "--quiet".into(),
    ];
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cli(args));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the sweep should fail at once on its run count");
    assert_user_error(
        &w,
        &r,
        &[
            "seed (1000000) × scheduler.max_batch_size (500000) = 500000000000 runs",
            "above the limit of 100000 runs",
        ],
    );
}

#[test]
fn numbers_repeat_by_value_in_sweep_axes_and_flags() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    for (axis, needle) in [
        (
            "rate = [1, 1.0]",
            "`rate`: value 1.0 (position 2) is listed twice, the same number as 1 (position 1)",
        ),
        (
            "rate = [0.5, 2, 5e-1]",
            "`rate`: value 0.5 (position 3) is listed twice, first at position 1",
        ),
        (
            "\"scheduler.max_batch_size\" = [16, 32, 1.6e1]",
            "value 16.0 (position 3) is listed twice, the same number as 16 (position 1)",
        ),
        // File names that read as one number: sweep.csv could not tell the two rows apart (they
        // ran, then the plot step refused the sweep as a duplicate point).
        (
            "\"trace.lengths_file\" = [\"1\", \"1.0\"]",
            "value 1.0 (position 2) is listed twice, the same number as 1 (position 1): sweep.csv and the commands reading it could not tell the two apart",
        ),
    ] {
        let text = synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 3")
            .replace("[scheduler]", &format!("[sweep]\n{axis}\n\n[scheduler]"));
        // The error names the axis's line (it named none).
        let line = text.lines().position(|l| l == axis).unwrap() + 1;
        w.write("scenario.toml", &text);
        let r = sweep_in(&w, &[]);
        assert_user_error(&w, &r, &[needle, &format!(": line {line}: [sweep] ")]);
    }
    w.write("scenario.toml", scenario("vllm", ""));
    let r = sweep_in(&w, &["--rates", "1,1e0"]);
    assert_user_error(&w, &r, &["--rates lists 1 twice"]);
    let r = sweep_in(&w, &["--rates", "0.5,.5"]);
    assert_user_error(&w, &r, &["--rates lists 0.5 twice"]);
}

/// `--rates 1e300` failed with "File name too long (os error 36)"; 1e-300 was labelled
/// `rate=0.0.00000e299`. Rates are bounded and the flag or key is named.
#[test]
fn absurd_rates_are_refused_naming_the_flag_or_key() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    for rate in ["1e300", "1e-300", "2e9"] {
        let r = sweep_in(&w, &["--rates", rate]);
        assert_user_error(&w, &r, &["--rates: every rate must be from 1e-6 to 1e9"]);
    }
    w.write(
        "scenario.toml",
        scenario("vllm", "\n[sweep]\nrate = [1, 1e300]\n"),
    );
    let r = sweep_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["[sweep] `rate`: rate 1e300 (position 2) is outside 1e-6 to 1e9 requests/s"],
    );
    let r = cli([
        "fidelity".into(),
        w.path("scenario.toml").into_os_string(),
        "--rates".into(),
        "1e300".into(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--rates: every rate must be from"),
        "{}",
        r.stderr
    );
}

/// Ordinary values keep their labels; long floats are written in exponent form and a long
/// string value is cut with a hash, so every run directory name stays under 255 bytes.
#[test]
fn run_directory_names_stay_short_unique_and_readable() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let long = format!("{}trace.csv", "./".repeat(150));
    w.write(
        "scenario.toml",
        scenario(
            "vllm",
            "\n[sweep]\n\"cost.iteration_s\" = [0.1, 2.0, 1e-5, 1.2345678901234567e-8]\n",
        ),
    );
    let r = sweep_in(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names = |w: &Workdir| {
        let mut v: Vec<String> = std::fs::read_dir(w.path("results/run/runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&w),
        [
            "0000-0.1",
            "0001-2.0",
            "0002-0.00001",
            "0003-1.2345678901234567e_8",
        ]
    );
    w.write(
        "scenario.toml",
        scenario(
            "vllm",
            &format!("\n[sweep]\n\"trace.file\" = [\"trace.csv\", \"{long}\"]\n"),
        ),
    );
    std::fs::remove_dir_all(w.path("results/run")).unwrap();
    let r = sweep_in(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names = names(&w);
    assert_eq!(names[0], "0000-trace.csv");
    assert_eq!(names[1].len(), 120, "{}", names[1]);
    assert!(names[1].starts_with("0001-._._._"), "{}", names[1]);
    assert!(names[1].as_bytes()[103] == b'~', "{}", names[1]);
}

/// `--start-rate 1e-300` exited 0 with "every probe missed the target" while every run had
/// failed. A start rate out of range is a flag error; a probe whose runs fail for a reason other
/// than overload stops `capacity` with that reason and writes nothing.
#[test]
fn capacity_never_counts_failed_probes_as_missed_targets() {
    let w = Workdir::new();
    w.write(
        "scenario.toml",
        synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 20"),
    );
    let capacity = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "capacity".into(),
            w.path("scenario.toml").into(),
            "--slo".into(),
            "jct_s=10".into(),
            "--seeds".into(),
            "0".into(),
            "--out".into(),
            w.path("results/run").into(),
        ];
        args.extend(extra.iter().map(Into::into));
        cli(args)
    };
    for rate in ["1e-300", "1e300", "1e-7"] {
        let r = capacity(&["--start-rate", rate]);
        assert_user_error(
            &w,
            &r,
            &[
                "--start-rate (or the scenario's rate_per_s) must be a number of requests/s from 1e-6 to 1e9",
            ],
        );
    }
    // 20 requests at 1e-5 req/s arrive over about 2e6 s; with max_sim_s = 1e5 every run fails.
    w.write(
        "scenario.toml",
        synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 20")
            .replace("[scheduler]", "[limits]\nmax_sim_s = 100000\n\n[scheduler]"),
    );
    let r = capacity(&["--start-rate", "1e-5"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: the probe of vllm at 1e-5 req/s failed (seed 0: ")
            && r.stderr.contains("max_sim_s")
            && r.stderr.contains("a failed run is not a missed target"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "a failed capacity prints no table header");
    assert!(!w.path("results/run").exists());
}

/// `check` took a golden file whose rows `1` and `1.0` are the same point.
#[test]
fn check_refuses_a_golden_file_with_the_same_numeric_point_twice() {
    let w = Workdir::new();
    let csv = "run,policy,rate,seed,requests,jct_mean_s\n0,vllm,1,0,2,0.5\n1,vllm,1.0,0,2,0.5\n";
    w.write("golden.csv", csv);
    std::fs::create_dir_all(w.path("sweep")).unwrap();
    w.write("sweep/sweep.csv", &csv[..csv.rfind("1,vllm").unwrap()]);
    let r = cli([
        "check".into(),
        w.path("sweep").into_os_string(),
        "--golden".into(),
        w.path("golden.csv").into_os_string(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("golden.csv:3: field `(row)`: duplicate point `policy=vllm rate=1.0 seed=0`: the same axis values as line 2"),
        "{}",
        r.stderr
    );
}

/// Seeds above 2⁵³ were one point when compared through f64: a valid sweep ran every run, then
/// failed its plot step as "duplicate point", naming a staging file that no longer existed
/// (round 9, 08).
#[test]
fn seeds_above_two_to_the_53_are_distinct_points() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario(
            "vllm",
            "\n[sweep]\nseed = [9007199254740992, 9007199254740993]\n",
        ),
    );
    let r = cli([
        "sweep".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("sw").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = cli([
        "check".into(),
        w.path("sw").into_os_string(),
        "--golden".into(),
        w.path("sw/sweep.csv").into_os_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `trace stats` on 4·10⁹-token requests kept its columns apart; 1e300-s arrivals printed a
/// 300-digit duration; `--time-scale 0` said "got 0e0".
#[test]
fn numbers_print_with_a_sensible_precision() {
    let w = Workdir::new();
    w.write(
        "big.csv",
        "arrival_s,input_tokens,output_tokens\n0,4000000000,4000000001\n1e300,4000000002,3\n",
    );
    let r = cli([
        "trace".into(),
        "stats".into(),
        w.path("big.csv").into_os_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("duration          1e300 s\n"),
        "{}",
        r.stdout
    );
    let input = r.stdout.lines().find(|l| l.starts_with("input")).unwrap();
    let cells: Vec<&str> = input.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "input",
            "4000000001.00",
            "4000000001",
            "4000000001.8",
            "4000000001.98",
            "4000000002"
        ]
    );
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    let r = cli([
        "live".into(),
        w.path("scenario.toml").into_os_string(),
        "--mock".into(),
        "--time-scale".into(),
        "0".into(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("got 0\n"), "{}", r.stderr);
}

/// A sweep value of the wrong type is reported at its `[sweep]` key in the user's file, not at a
/// line and column of the text generated for the sweep point.
#[test]
fn a_sweep_value_of_the_wrong_type_names_its_axis_line() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let text = scenario("vllm", "\n[sweep]\nrate = [1.0]\nseed = [true]\n");
    let line = text.lines().position(|l| l == "seed = [true]").unwrap() + 1;
    w.write("scenario.toml", text);
    let r = sweep_in(&w, &[]);
    let needle = format!("line {line} ([sweep] seed): invalid type: boolean");
    assert_user_error(&w, &r, &[&needle]);
}

/// A sweep axis key 30,000 dotted parts deep overflowed the stack (exit 134) while the nested
/// tables it built were processed; keys are now bounded in depth first.
#[test]
fn a_deeply_dotted_sweep_axis_is_refused() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let key = format!("policies.vllm{}", ".a".repeat(30_000));
    let extra = format!("\n[sweep]\n\"{key}\" = [1, 2]\n");
    w.write("scenario.toml", scenario("vllm", &extra));
    let r = sweep_in(&w, &[]);
    assert_user_error(&w, &r, &["sweep axis", "30002 dotted parts", "at most 16"]);
}

/// Axis keys with an empty part (`"."`, `"a..b"`) were reported as "unknown field ``" at a line
/// of generated text; an axis into `[[replica_groups]]` built a table the scenario then rejected
/// ("invalid type: map, expected a sequence"). Empty parts are refused, and a 0-based index part
/// (digits, no leading zero) enters an array of tables.
#[test]
fn sweep_axes_index_arrays_and_refuse_empty_parts() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let groups = "\n[[replica_groups]]\ncount = 1\n[[replica_groups]]\ncount = 1\n";
    let cases: &[(&str, &str)] = &[
        ("\".\"", "sweep axis `.` has an empty part"),
        ("\"a..b\"", "sweep axis `a..b` has an empty part"),
        (
            "\"replica_groups.2.count\"",
            "`replica_groups` has 2 entries; follow it by an index from 0 to 1",
        ),
        (
            "\"replica_groups.0\"",
            "replaces a whole entry of `replica_groups`",
        ),
        (
            "\"replica_groups.x.count\"",
            "`replica_groups` has 2 entries",
        ),
        // Another spelling of entry 1 (with `"replica_groups.1.count"` both axes ran, one
        // ignored: round 8, case 05).
        ("\"replica_groups.01.count\"", "no leading zero"),
        ("\"replica_groups.+1.count\"", "no leading zero"),
    ];
    for (key, needle) in cases {
        let extra = format!("{groups}\n[sweep]\n{key} = [1, 2]\n");
        w.write("scenario.toml", scenario("vllm", &extra));
        assert_user_error(&w, &sweep_in(&w, &[]), &[needle]);
    }
    let extra = "\n[sweep]\n\"replica_groups.0.count\" = [1, 2]\n";
    w.write("scenario.toml", scenario("vllm", extra));
    assert_user_error(
        &w,
        &sweep_in(&w, &[]),
        &["the scenario has no `replica_groups`"],
    );
    let extra = format!("{groups}\n[sweep]\n\"replica_groups.1.count\" = [1, 3]\n");
    w.write("scenario.toml", scenario("vllm", &extra));
    let r = sweep_in(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (run, replicas) in [("0000-1", 2), ("0001-3", 4)] {
        let summary =
            std::fs::read_to_string(w.path(&format!("results/run/runs/{run}/summary.json")))
                .expect("summary.json");
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(v["replicas"].as_array().unwrap().len(), replicas, "{run}");
    }
}

/// A sweep axis on a key of `[sweep]` itself (`"sweep.x"`) ran identical points, exit 0.
#[test]
fn a_sweep_axis_inside_sweep_is_refused() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let extra = "\n[sweep]\n\"sweep.x\" = [1, 2]\n";
    w.write("scenario.toml", scenario("vllm", extra));
    let r = sweep_in(&w, &[]);
    assert_user_error(&w, &r, &["sweep axis `sweep.x`", "no run reads"]);
}

/// `capacity --slo tpot_s=…` on a trace whose every request has one output token: no run has a
/// TPOT, which used to count as a missed target at every probe ("below 3.05e-5 req/s"); now the
/// probe is a failure that says why, and nothing is written.
#[test]
fn capacity_on_a_statistic_no_request_has_is_an_error() {
    let w = Workdir::new();
    let rows: String = (0..40).map(|i| format!("{}.0,8,1\n", i)).collect();
    w.write("trace.csv", format!("{HEADER}{rows}"));
    w.write("scenario.toml", scenario("vllm", ""));
    let r = cli([
        "capacity".into(),
        w.path("scenario.toml").into_os_string(),
        "--slo".into(),
        "tpot_s=0.1".into(),
        "--out".into(),
        w.path("cap").into_os_string(),
    ]);
    assert_user_error(&w, &r, &["has a `tpot_s`", "at least two output tokens"]);
}

/// `capacity --num-requests 1`: a run of one request cannot be judged, which counted as stable
/// at every rate and answered "> 1048576 req/s"; now the probe fails saying why.
#[test]
fn capacity_on_a_trace_too_short_to_judge_is_an_error() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    let r = cli([
        "capacity".into(),
        w.path("scenario.toml").into_os_string(),
        "--slo".into(),
        "jct_s=30".into(),
        "--out".into(),
        w.path("cap").into_os_string(),
    ]);
    assert_user_error(&w, &r, &["too few to judge whether it kept up"]);
}

/// `capacity --num-requests 2..19` ran its first probe and then failed as unjudged; the flag is
/// now refused before anything runs.
#[test]
fn capacity_refuses_num_requests_too_few_to_judge() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    for n in ["1", "19"] {
        let r = cli([
            "capacity".into(),
            w.path("scenario.toml").into_os_string(),
            "--slo".into(),
            "jct_s=30".into(),
            "--num-requests".into(),
            n.into(),
            "--out".into(),
            w.path("cap").into_os_string(),
        ]);
        assert_user_error(
            &w,
            &r,
            &[&format!("--num-requests {n}"), "needs 20 requests"],
        );
    }
}

/// An axis whose values change nothing (a parameter of a policy the runs do not use, a seed on a
/// trace file that nothing draws from) is named in a warning; one that changes results is not.
/// Was: identical rows under different labels, no warning.
#[test]
fn an_axis_that_changes_no_result_is_named_in_a_warning() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}0,4,2\n0,4,2\n0,4,2\n"));
    let extra = "\n[sweep]\nseed = [1, 2]\n\"policies.fcfs.reserve\" = [\"max\", \"oracle\"]\n\"scheduler.max_batch_size\" = [1, 8]\n";
    w.write("scenario.toml", scenario("vllm", extra));
    let r = sweep_in(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warned = |axis: &str| {
        r.stderr.lines().any(|l| {
            l.starts_with(&format!(
                "warning: sweep axis `{axis}`: its values gave identical results"
            ))
        })
    };
    assert!(warned("seed"), "{}", r.stderr);
    assert!(warned("policies.fcfs.reserve"), "{}", r.stderr);
    assert!(!warned("scheduler.max_batch_size"), "{}", r.stderr);
}

/// A value that makes a run fail changed that run: the axis is not "inert" (failed runs were
/// left out, so `limits.max_sim_s = [1e-3, 1e5]` was warned about as changing nothing while its
/// first value failed the run).
#[test]
fn an_axis_that_fails_a_run_is_not_called_inert() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}0,4,2\n1,4,2\n2,4,2\n"));
    let extra = "\n[sweep]\n\"limits.max_sim_s\" = [0.5, 1e5, 1e6]\n";
    w.write("scenario.toml", scenario("vllm", extra));
    let r = sweep_in(&w, &["--allow-failures"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("1 of 3 runs failed"), "{}", r.stderr);
    assert!(
        !r.stderr
            .contains("sweep axis `limits.max_sim_s`: its values gave identical"),
        "{}",
        r.stderr
    );
}

/// Round 12, 04: a sweep point whose axis value fails a semantic check named no line, an axis
/// through a number key (`tp.x`) was blamed on a line of text the user never saw, and
/// `input_lengths = 5` showed a Rust type name. Each now names the axis's line.
#[test]
fn sweep_point_errors_name_the_axis_line() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    for (axis, values, says) in [
        (
            "memory.kv_capacity_blocks",
            "[10, 0]",
            "kv_capacity_blocks must be ≥ 1",
        ),
        ("tp", "[3]", "does not divide"),
        ("tp.x", "[1]", "expected a whole number"),
        ("trace.input_lengths", "[5]", "expected a table"),
    ] {
        let text = format!(
            "{}\n[sweep]\n\"{axis}\" = {values}\n",
            synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 20")
        );
        let line = text.lines().count();
        w.write("scenario.toml", &text);
        let r = sweep_in(&w, &[]);
        assert_user_error(&w, &r, &[&format!("line {line} ([sweep] {axis}): "), says]);
        assert!(!r.stderr.contains("LengthDist"), "{}", r.stderr);
    }
}
