//! The command line on bad input: every case must exit with code 2, print exactly one clear
//! `error: …` line on stderr naming what to fix (file, line and field where applicable), never
//! panic, and leave no output directory behind (neither `--out DIR` nor a `.DIR.servesim-*` staging
//! sibling). Here: trace files, flags and usage errors, plus the happy paths of `--help`, `list` and
//! a BOM + CRLF trace; bad scenario files are in [`crate::cli_scenario`].

use crate::support::{CliResult, Workdir, cli, parse_ns, read_requests};

pub(crate) const HEADER: &str = "arrival_s,input_tokens,output_tokens\n";
pub(crate) const GOOD_ROWS: &str = "0,4,2\n0.05,4,1\n";

/// A minimal valid scenario over `trace.csv` (next to it), with `extra` appended.
pub(crate) fn scenario(policy: &str, extra: &str) -> String {
    format!(
        r#"name = "cli"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
kv_capacity_blocks = 1000

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "{policy}"
{extra}"#
    )
}

/// [`scenario`] (vllm) with a synthetic `[trace]`: `trace_keys`, then fixed lengths (4 in, 2 out).
pub(crate) fn synthetic_scenario(trace_keys: &str) -> String {
    scenario("vllm", "").replace(
        "file = \"trace.csv\"",
        &format!(
            "{trace_keys}\ninput_lengths = {{ dist = \"fixed\", value = 4 }}\noutput_lengths = {{ dist = \"fixed\", value = 2 }}"
        ),
    )
}

/// Run `run scenario.toml --out W/results/run` (plus `extra` arguments) in `w`.
pub(crate) fn run_in(w: &Workdir, extra: &[&str]) -> CliResult {
    let mut args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        w.path("scenario.toml").into(),
        "--out".into(),
        w.path("results/run").into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    cli(args)
}

/// No `results/run` and no staging directory or lock (`.run.servesim-*`) next to it.
fn assert_no_output(w: &Workdir) {
    let out = w.path("results/run");
    assert!(!out.exists(), "{} was left behind", out.display());
    if let Ok(entries) = std::fs::read_dir(w.path("results")) {
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".run.tmp-") && !name.starts_with(".run.servesim-"),
                "staging directory {name} was left behind"
            );
        }
    }
}

/// Exit code 2, one `error:` line containing every `needles` string, nothing on stdout, no
/// output directory.
pub(crate) fn assert_user_error(w: &Workdir, r: &CliResult, needles: &[&str]) {
    assert_eq!(r.code, 2, "exit code; stderr: {}", r.stderr);
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.ends_with('\n'),
        "stderr is not one `error: …` line: {:?}",
        r.stderr
    );
    assert_eq!(
        r.stderr.lines().count(),
        1,
        "stderr has more than one line: {:?}",
        r.stderr
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "{:?} does not mention {n:?}",
            r.stderr
        );
    }
    assert_eq!(r.stdout, "", "stdout should be empty on error");
    assert_no_output(w);
}

fn trace_path(w: &Workdir) -> String {
    w.path("trace.csv").display().to_string()
}

#[test]
fn missing_trace_file() {
    let w = Workdir::new();
    w.write(
        "scenario.toml",
        scenario("vllm", "").replace("trace.csv", "no_such_trace.csv"),
    );
    let r = run_in(&w, &[]);
    let path = w.path("no_such_trace.csv").display().to_string();
    assert_user_error(&w, &r, &[&path, "cannot open"]);
}

#[test]
fn missing_scenario_file() {
    let w = Workdir::new();
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["scenario.toml", "cannot read scenario"]);
}

#[test]
fn missing_column() {
    let w = Workdir::new();
    w.write("trace.csv", "arrival_s,input_tokens\n0,4\n");
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &[]);
    let p = format!("{}:1:", trace_path(&w));
    assert_user_error(&w, &r, &[&p, "output_tokens", "missing column"]);
}

#[test]
fn missing_arrival_column() {
    let w = Workdir::new();
    w.write("trace.csv", "input_tokens,output_tokens\n4,2\n");
    w.write("scenario.toml", scenario("fcfs", ""));
    let r = run_in(&w, &[]);
    let p = format!("{}:1:", trace_path(&w));
    assert_user_error(&w, &r, &[&p, "arrival_s", "missing column"]);
}

/// `rows` (after the header) must fail on `line`, naming `field` and `needles`.
fn expect_row_error(rows: &str, line: u32, field: &str, needles: &[&str]) {
    for policy in ["fcfs", "vllm"] {
        let w = Workdir::new();
        w.write("trace.csv", format!("{HEADER}{rows}"));
        w.write("scenario.toml", scenario(policy, ""));
        let r = run_in(&w, &[]);
        let at = format!("{}:{line}:", trace_path(&w));
        let f = format!("`{field}`");
        let mut all = vec![at.as_str(), f.as_str()];
        all.extend_from_slice(needles);
        assert_user_error(&w, &r, &all);
    }
}

#[test]
fn non_numeric_value() {
    expect_row_error("0,4,2\n0.1,four,2\n", 3, "input_tokens", &["four"]);
    expect_row_error("soon,4,2\n", 2, "arrival_s", &["soon"]);
}

#[test]
fn negative_value() {
    expect_row_error("0,4,2\n-1.5,4,2\n", 3, "arrival_s", &["-1.5"]);
    expect_row_error("0,-4,2\n", 2, "input_tokens", &["-4"]);
    expect_row_error("0,4,-2\n", 2, "output_tokens", &["-2"]);
}

#[test]
fn zero_output_tokens() {
    expect_row_error("0,4,2\n0.5,4,0\n", 3, "output_tokens", &["≥ 1"]);
}

#[test]
fn unsorted_arrivals() {
    expect_row_error("0,4,2\n1.0,4,2\n0.5,4,2\n", 4, "arrival_s", &["sorted"]);
}

#[test]
fn nan_and_infinite_values() {
    expect_row_error("NaN,4,2\n", 2, "arrival_s", &["NaN"]);
    expect_row_error("inf,4,2\n", 2, "arrival_s", &["inf"]);
    expect_row_error("0,nan,2\n", 2, "input_tokens", &["nan"]);
}

#[test]
fn nan_in_scenario() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write(
        "scenario.toml",
        scenario("vllm", "").replace("iteration_s = 0.1", "iteration_s = nan"),
    );
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["scenario.toml", "iteration_s", "NaN"]);
}

#[test]
fn row_with_wrong_field_count() {
    expect_row_error("0,4,2\n0.1,4\n", 3, "row", &["2 fields"]);
}

#[test]
fn empty_trace_file() {
    let w = Workdir::new();
    w.write("trace.csv", "");
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &[]);
    let at = format!("{}:1:", trace_path(&w));
    assert_user_error(&w, &r, &[&at, "empty"]);
}

#[test]
fn duplicated_header() {
    let w = Workdir::new();
    w.write(
        "trace.csv",
        "arrival_s,input_tokens,output_tokens,input_tokens\n0,4,2,4\n",
    );
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &[]);
    let at = format!("{}:1:", trace_path(&w));
    assert_user_error(&w, &r, &[&at, "`input_tokens`", "twice"]);
}

#[test]
fn bad_rate_flag() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    for rate in ["--rate=0", "--rate=nan", "--rate=-3"] {
        let r = run_in(&w, &[rate]);
        assert_user_error(&w, &r, &["--rate"]);
    }
}

/// An unknown or missing argument is one line too (clap printed its message, a tip, a usage line
/// and a pointer to `--help` on six lines), and a 27-digit value is tamed like a scenario's.
#[test]
fn usage_errors_are_one_line() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &["--bogus"]);
    assert_user_error(&w, &r, &["'--bogus'", "usage: servesim run"]);
    let r = cli(["run"]);
    assert_user_error(&w, &r, &["<SCENARIO>", "usage: servesim run"]);
    let r = run_in(&w, &["--seed", "123456789012345678901234567"]);
    assert_user_error(&w, &r, &["--seed", "1.23457e26"]);
    assert!(
        !r.stderr.contains("123456789012345678901234567"),
        "{}",
        r.stderr
    );
}

/// A seed above i64::MAX was accepted by `run --seed` (and recorded in config.json) although no
/// scenario can hold it; every seed flag now has the scenario's range.
#[test]
fn seed_flags_beyond_a_scenario_seed_are_refused() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    for bad in ["9223372036854775808", "-1", "0x10"] {
        let r = run_in(&w, &["--seed", bad]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("'--seed <SEED>'"), "{}", r.stderr);
        // Not Rust's "invalid digit found in string" (round 8, case 07).
        assert!(
            r.stderr.contains(&format!(
                "expected a whole number from 0 to 9223372036854775807, got `{bad}`"
            )),
            "{}",
            r.stderr
        );
        assert_no_output(&w);
    }
    let r = run_in(&w, &["--seed", "9223372036854775807"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Nor from the scenario, which ran it (round 8, case 07).
    std::fs::remove_dir_all(w.path("results")).unwrap();
    w.write(
        "scenario.toml",
        format!("seed = 9223372036854775808\n{}", scenario("vllm", "")),
    );
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &[
            "line 1",
            "seed must be a whole number from 0 to 9223372036854775807",
        ],
    );
}

/// `defer_new_below_host_free_frac` outside [0, 1] (round 12, 08): NaN or a negative value
/// turned deferral off silently, and one above 1 stalled every run with a host pool ("produced
/// an invalid plan … the run would never end"), naming no file, line or key.
#[test]
fn a_deferral_fraction_outside_zero_to_one_is_refused_at_its_line() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    for policy in ["skip-join-mlfq", "mlfq", "fcfs-swap"] {
        for v in ["nan", "-1", "1.5", "inf"] {
            let table = format!("\n[policies.{policy}]\ndefer_new_below_host_free_frac = {v}\n");
            w.write("scenario.toml", scenario(policy, &table));
            let r = run_in(&w, &[]);
            assert_user_error(
                &w,
                &r,
                &[
                    "line 19: ",
                    &format!("[policies.{policy}] defer_new_below_host_free_frac must be"),
                ],
            );
        }
    }
}

/// Parameter tables (round 8, case 07): an unknown key was blamed on the line and name of a key
/// before it that fails only alone (`chunk_size` without chunked prefill); `[policies.srpt-oracle]`
/// errors named `[policies.srpt]`; `list policy mlfq` listed `skip_join`, which no table may set.
#[test]
fn parameter_errors_name_the_key_and_table_at_fault() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let mlfq = "\n[policies.mlfq]\nchunk_size = 16\nskip_join = false\n";
    w.write("scenario.toml", scenario("mlfq", mlfq));
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["line 20: [policies.mlfq] `skip_join`: unknown field `skip_join`"],
    );
    let oracle = "\n[policies.srpt-oracle]\nchunk_size = 16\n";
    w.write("scenario.toml", scenario("srpt-oracle", oracle));
    let r = run_in(&w, &[]);
    assert_user_error(
        &w,
        &r,
        &["[policies.srpt-oracle] chunk_size needs chunked_prefill = true"],
    );
    let r = cli(["list", "policy", "mlfq"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("skip_join"), "{}", r.stdout);
    assert!(r.stdout.contains("  chunk_size = "), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("chunk_size applies with chunked_prefill = true"),
        "{}",
        r.stdout
    );
}

#[test]
fn bom_and_crlf_trace_is_accepted() {
    let w = Workdir::new();
    w.write(
        "trace.csv",
        "\u{feff}arrival_s,input_tokens,output_tokens\r\n0,4,2\r\n0.05,4,1\r\n",
    );
    w.write("scenario.toml", scenario("fcfs", ""));
    let r = run_in(&w, &[]);
    assert_eq!(r.code, 0, "BOM + CRLF trace rejected: {}", r.stderr);
    assert_eq!(r.stderr, "");
    let rows = read_requests(&w.path("results/run"));
    // [A+] 0–100, [A· B+] 100–200: both done at 200.
    let got: Vec<(u64, u32, u32, u64)> = rows
        .iter()
        .map(|x| (x.arrival_ns, x.input_tokens, x.output_tokens, x.finish_ns))
        .collect();
    assert_eq!(
        got,
        [
            (0, 4, 2, parse_ns("0.2")),
            (parse_ns("0.05"), 4, 1, parse_ns("0.2"))
        ]
    );
    // Nothing but the committed directory is left in results/.
    let names: Vec<String> = std::fs::read_dir(w.path("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["run"]);
}

/// A trace with a header and no rows used to run 0 requests with exit 0 (while `trace stats`
/// rejects it): `run`, `sweep` and `live` now refuse it, naming the file.
#[test]
fn header_only_trace_is_an_error_for_run_sweep_and_live() {
    let w = Workdir::new();
    w.write("trace.csv", HEADER);
    w.write("scenario.toml", scenario("vllm", ""));
    let r = run_in(&w, &[]);
    assert_user_error(&w, &r, &["trace.csv", "no requests"]);
    for cmd in [
        vec!["sweep", "--no-plots"],
        vec!["live", "--mock", "--quiet"],
    ] {
        let mut args: Vec<std::ffi::OsString> = vec![cmd[0].into(), w.path("scenario.toml").into()];
        args.extend(cmd[1..].iter().map(Into::into));
        args.extend(["--out".into(), w.path("results/run").into()]);
        let r = cli(args);
        assert_user_error(&w, &r, &["trace.csv", "no requests"]);
    }
    // Every row left out by `num_requests = 0` (scenario or flag), on a file or synthetic trace.
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    let r = run_in(&w, &["--num-requests", "0"]);
    assert_user_error(&w, &r, &["--num-requests must be ≥ 1"]);
    w.write(
        "scenario.toml",
        synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 0"),
    );
    for cmd in ["run", "sweep"] {
        let r = cli([
            std::ffi::OsString::from(cmd),
            w.path("scenario.toml").into(),
            "--out".into(),
            w.path("results/run").into(),
        ]);
        assert_user_error(&w, &r, &["no requests to simulate", "num_requests"]);
    }
}

/// Unix-epoch arrival times (first arrival ~1.7·10⁹ s) used to fail after 1.5 GB of KV
/// samples with a misleading kv_timeline error: refused up front, naming the file, the first
/// row's line and its arrival column, with a hint; in both trace formats, for run and sweep.
#[test]
fn unix_epoch_arrival_times_are_refused_up_front_with_a_hint() {
    let w = Workdir::new();
    w.write("scenario.toml", scenario("vllm", ""));
    for (header, column) in [
        (HEADER, "arrival_s"),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n",
            "arrived_at",
        ),
    ] {
        w.write(
            "trace.csv",
            format!("{header}1700000000.5,4,2\n1700000001,4,1\n"),
        );
        let r = run_in(&w, &[]);
        assert_user_error(
            &w,
            &r,
            &[
                &format!("trace.csv:2: field `{column}`"),
                "first arrival is at 1700000000 s",
                "max_sim_s",
                "Unix-epoch",
            ],
        );
        let r = cli([
            "sweep".into(),
            std::ffi::OsString::from(w.path("scenario.toml")),
            "--out".into(),
            w.path("results/run").into(),
        ]);
        assert_user_error(&w, &r, &["trace.csv:2", "Unix-epoch"]);
    }
    // A trace that starts late but within max_sim_s still runs.
    w.write("trace.csv", format!("{HEADER}1000,4,2\n"));
    let r = run_in(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn help_lists_subcommands() {
    let r = cli(["--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for sub in ["run", "bench", "list"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help does not list `{sub}`:\n{}",
            r.stdout
        );
    }
    let r = cli(["run", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--out"), "{}", r.stdout);
}

#[test]
fn list_prints_policies() {
    let r = cli(["list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("policies:"), "{}", r.stdout);
    for name in servesim::policy::policy_names() {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(name)),
            "`list` does not show policy {name}:\n{}",
            r.stdout
        );
    }
    for name in ["fcfs", "vllm", "opt-13b", "a100-40gb"] {
        assert!(r.stdout.contains(name), "{}", r.stdout);
    }
}

#[test]
fn usage_errors_exit_2() {
    let r = cli(["run"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("SCENARIO") || r.stderr.contains("scenario"));
    let r = cli(["frobnicate"]);
    assert_eq!(r.code, 2);
}
