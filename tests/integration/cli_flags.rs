//! The forgiving command line: sweep axes from flags (`--policies`, `--rates`, `--seeds`), the
//! exit status of a sweep with failed runs (`--allow-failures`), negative numbers reaching
//! servesim's own checks, "did you mean" for unknown names, `list --json`, `list policy NAME`
//! and shell completions.

use crate::cli::{GOOD_ROWS, HEADER, scenario, synthetic_scenario};
use crate::support::{CliResult, Workdir, cli};

/// `servesim sweep W/sweep.toml --out W/out --no-plots ARGS…`.
fn sweep_in(w: &Workdir, extra: &[&str]) -> CliResult {
    let mut args: Vec<std::ffi::OsString> = vec![
        "sweep".into(),
        w.path("sweep.toml").into(),
        "--out".into(),
        w.path("out").into(),
        "--no-plots".into(),
        "--force".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    cli(args)
}

/// A synthetic scenario of 20 requests with `[sweep]` axes `axes` (TOML lines).
fn sweep_scenario(w: &Workdir, extra: &str) {
    let text = synthetic_scenario("arrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 20");
    w.write("sweep.toml", format!("{text}{extra}"));
}

/// The header and rows of `W/out/sweep.csv`.
fn sweep_rows(w: &Workdir) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(w.path("out/sweep.csv")).expect("sweep.csv");
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(String::from).collect());
    (lines.next().expect("header"), lines.collect())
}

#[test]
fn sweep_axes_from_flags_replace_the_scenarios() {
    let w = Workdir::new();
    sweep_scenario(&w, "\n[sweep]\nrate = [0.5, 1.0, 2.0]\n");
    let r = sweep_in(
        &w,
        &[
            "--policies",
            "fcfs,vllm",
            "--rates",
            "0.5,4",
            "--seeds",
            "1,2",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (header, rows) = sweep_rows(&w);
    assert_eq!(header[..4], ["run", "policy", "rate", "seed"]);
    assert_eq!(rows.len(), 8, "2 policies × 2 rates × 2 seeds");
    let points: Vec<String> = rows.iter().map(|r| r[1..4].join(" ")).collect();
    assert_eq!(points[0], "fcfs 0.5 1");
    assert_eq!(points[7], "vllm 4.0 2");
    // Only some axes from flags: the scenario's others stay.
    let r = sweep_in(&w, &["--seeds", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (header, rows) = sweep_rows(&w);
    assert_eq!(header[..3], ["run", "rate", "seed"]);
    assert_eq!(rows.len(), 3);
}

#[test]
fn bad_sweep_axis_flags_blame_the_flag() {
    let w = Workdir::new();
    sweep_scenario(&w, "\n[sweep]\n\"trace.rate_per_s\" = [0.5, 1.0]\n");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--rates", "1"],
            &["--rates", "`trace.rate_per_s`", "also sets"],
        ),
        (&["--rates", "-1"], &["--rates", "> 0", "-1"]),
        (&["--seeds", "1,1"], &["--seeds", "twice"]),
        (
            &["--policies", "vlm"],
            &["--policies", "unknown policy `vlm`"],
        ),
        (&["--policies", "fcfs,"], &["--policies", "empty"]),
    ];
    for (args, needles) in cases {
        let r = sweep_in(&w, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        for n in *needles {
            assert!(r.stderr.contains(n), "{args:?}: no {n:?} in {}", r.stderr);
        }
    }
    // Out of a scenario seed's range: clap's usage error (with its hint line).
    let r = sweep_in(&w, &["--seeds", "18446744073709551615"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("'--seeds <SEEDS>'"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("expected a whole number from 0 to 9223372036854775807"),
        "{}",
        r.stderr
    );
    let r = sweep_in(&w, &["--seeds", ","]);
    assert!(r.stderr.contains("an empty seed"), "{}", r.stderr);
}

#[test]
fn a_sweep_with_failed_runs_exits_1_unless_allowed() {
    let w = Workdir::new();
    // 20 requests at once against a queue limit of 2: the rate-100 runs fail as overloaded.
    sweep_scenario(
        &w,
        "\n[limits]\nmax_queue = 2\n\n[sweep]\nrate = [0.01, 100.0]\n",
    );
    let r = sweep_in(&w, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("2 runs (1 failed)"), "{}", r.stdout);
    let line = r.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    for n in [
        "1 of 2 runs failed",
        "run 1 (rate=100.0)",
        "overloaded",
        "--allow-failures",
    ] {
        assert!(line.contains(n), "no {n:?} in {line}");
    }
    // The outputs are written either way.
    assert_eq!(sweep_rows(&w).1.len(), 2);
    let r = sweep_in(&w, &["--allow-failures"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("warning: 1 of 2 runs failed"),
        "{}",
        r.stderr
    );
    // No failure: nothing on stderr, exit 0.
    let r = sweep_in(&w, &["--rates", "0.01"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}

/// Set in the child process of [`progress_stays_off_a_stderr_that_is_not_a_terminal`]: the
/// `servesim` arguments, separated by U+001F.
const CHILD_ENV: &str = "SERVESIM_PROGRESS_CHILD_ARGS";

/// `servesim ARGS…` in a real process whose stdout and stderr are pipes (the test binary re-run as
/// `servesim`, as in [`crate::interrupt`]); returns (exit code, stdout, stderr).
fn servesim_piped(w: &Workdir, args: &[&str]) -> (Option<i32>, String, String) {
    let o = std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "cli_flags::progress_stays_off_a_stderr_that_is_not_a_terminal",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, args.join("\u{1f}"))
        .current_dir(w.dir.path())
        .output()
        .expect("run the servesim child process");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (o.status.code(), text(o.stdout), text(o.stderr))
}

/// Progress is drawn only on a terminal: through pipes, `run`, `sweep`, `capacity`, `trace synth`
/// and `live --mock` print exactly what they print in-process (stdout), and nothing on stderr
/// (`live`: at most its timing warnings, which depend on the machine's load).
#[test]
fn progress_stays_off_a_stderr_that_is_not_a_terminal() {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        let args = args.to_string_lossy().into_owned();
        let mut argv: Vec<std::ffi::OsString> = vec!["servesim".into()];
        argv.extend(args.split('\u{1f}').map(Into::into));
        let code = servesim::cli::main_with_args(
            argv,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        );
        std::process::exit(code);
    }
    let w = Workdir::new();
    sweep_scenario(&w, "\n[sweep]\nrate = [0.5, 1.0]\n");
    let commands: &[&[&str]] = &[
        &["run", "sweep.toml", "--out", "run"],
        &["sweep", "sweep.toml", "--out", "sweep", "--no-plots"],
        &[
            "capacity",
            "sweep.toml",
            "--slo",
            "jct_s=100",
            "--seeds",
            "0",
            "--precision",
            "0.5",
        ],
        &[
            "trace",
            "synth",
            "--rate",
            "1",
            "--num",
            "50",
            "--input",
            "fixed:value=4",
            "--output",
            "fixed:value=2",
            "-o",
            "synth.csv",
        ],
    ];
    for args in commands {
        let (code, stdout, stderr) = servesim_piped(&w, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
        assert!(!stdout.contains(['\r', '\x1b']), "{args:?}: {stdout:?}");
    }
    live_mock_prints_no_progress(&w);
    // `run`'s stdout through pipes is its in-process stdout but for the last line (wall time and
    // output directory).
    let (_, piped, _) = servesim_piped(&w, commands[0]);
    let args: [std::ffi::OsString; 4] = [
        "run".into(),
        w.path("sweep.toml").into(),
        "--out".into(),
        w.path("run-inproc").into(),
    ];
    let inproc = cli(args).stdout;
    let body = |s: &str| s.rsplit_once("simulated in ").map(|x| x.0.to_string());
    let piped = piped
        .split_once("... ")
        .map_or(piped.clone(), |x| x.1.into());
    assert!(inproc.starts_with("scenario "), "{inproc}");
    assert_eq!(body(&piped), body(&inproc));
    // Capacity's stdout (no wall times) is byte for byte what it prints in-process (after the
    // test harness's own lines, which end in "... ").
    let (_, piped, _) = servesim_piped(&w, commands[2]);
    let mut args: Vec<std::ffi::OsString> = commands[2].iter().map(Into::into).collect();
    args[1] = w.path("sweep.toml").into();
    let inproc = cli(args).stdout;
    assert!(inproc.starts_with("SLO: "), "{inproc}");
    assert_eq!(piped.split_once("... ").map(|x| x.1), Some(inproc.as_str()));
}

/// `live --mock` through pipes: no progress on stdout or stderr, whose lines can only be the
/// run's timing warnings (they depend on the machine's load).
fn live_mock_prints_no_progress(w: &Workdir) {
    let live = [
        "live",
        "sweep.toml",
        "--mock",
        "--time-scale",
        "0.01",
        "--out",
        "live",
    ];
    let (code, stdout, stderr) = servesim_piped(w, &live);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.lines().all(|l| l.starts_with("warning: ")),
        "{stderr:?}"
    );
    assert!(!stderr.contains(['\r', '\x1b']), "{stderr:?}");
    assert!(!stdout.contains(['\r', '\x1b']), "{stdout:?}");
    assert!(stdout.contains("ran live (mock executor"), "{stdout}");
}

/// A misspelt name gets the closest known one; a name from a flag blames the flag.
#[test]
fn unknown_names_suggest_the_closest_and_blame_their_flag() {
    let w = Workdir::new();
    sweep_scenario(&w, "");
    let scenario = w.path("sweep.toml");
    let s = scenario.to_str().unwrap();
    let out = w.path("out");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["run", s, "--out", o, "--policy", "vlm"],
            &["--policy: unknown policy `vlm`; did you mean `vllm`?"],
        ),
        (
            &["capacity", s, "--slo", "jct_s=1", "--policies", "vllm,srtp"],
            &["--policies: unknown policy `srtp`; did you mean `srpt`?"],
        ),
    ];
    for (args, needles) in cases {
        let r = cli(*args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        for n in *needles {
            assert!(r.stderr.contains(n), "{args:?}: no {n:?} in {}", r.stderr);
        }
        assert!(!r.stderr.contains("sweep.toml"), "{args:?}: {}", r.stderr);
    }
    // In the scenario file: the file is named, with the suggestion.
    let text = std::fs::read_to_string(&scenario).unwrap();
    for (from, to, needle) in [
        (
            "policy = \"vllm\"",
            "policy = \"skip-join-mlfg\"",
            "did you mean `skip-join-mlfq`?",
        ),
        (
            "model = \"opt-13b\"",
            "model = \"opt-13\"",
            "did you mean `opt-13b`?",
        ),
        (
            "gpu = \"a100-40gb\"",
            "gpu = \"a100-40g\"",
            "did you mean `a100-40gb`?",
        ),
    ] {
        w.write("typo.toml", text.replacen(from, to, 1));
        let r = cli(["run", w.path("typo.toml").to_str().unwrap(), "--out", o]);
        assert_eq!(r.code, 2, "{to}: {}", r.stderr);
        assert!(r.stderr.contains("typo.toml"), "{to}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{to}: {}", r.stderr);
    }
}

/// Negative numbers reach servesim's own checks (no "pass `-- -1`" tip from the parser).
#[test]
fn negative_numbers_get_servesims_own_errors() {
    let w = Workdir::new();
    sweep_scenario(&w, "");
    let s = w.path("sweep.toml");
    let s = s.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", s, "--rate", "-1"],
            "--rate must be a finite number > 0, got -1",
        ),
        (
            &["sweep", s, "--rates", "-1,2"],
            "--rates: every rate must be",
        ),
        (
            &["capacity", s, "--slo", "jct_s=1", "--start-rate", "-2"],
            "--start-rate",
        ),
        (
            &["capacity", s, "--slo", "jct_s=1", "--precision", "-0.1"],
            "--precision",
        ),
        (&["live", s, "--mock", "--time-scale", "-1"], "time"),
        (&["run", s, "--seed", "-1"], "'--seed <SEED>'"),
    ];
    for (args, needle) in cases {
        let r = cli(*args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("-- -"), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{args:?}: no {needle:?} in {}",
            r.stderr
        );
    }
}

/// `list --json` is valid JSON naming every policy, router, predictor, model and GPU;
/// `list policy NAME` shows its parameters (text and JSON).
#[test]
fn list_json_and_list_policy() {
    let r = cli(["list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("list --json is JSON");
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} array"))
            .iter()
            .map(|e| e.get("name").unwrap_or(e).as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("policies"), servesim::policy::policy_names());
    assert_eq!(names("routers"), servesim::route::router_names());
    assert!(names("models").contains(&"opt-13b".to_string()));
    assert!(names("gpus").contains(&"a100-40gb".to_string()));
    assert_eq!(v["scheduler_defaults"]["max_batch_size"], 256);
    let r = cli(["list"]);
    assert!(r.stdout.contains("max_batch_size 256"), "{}", r.stdout);
    for name in servesim::policy::policy_names() {
        let r = cli(["list", "policy", name]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(r.stdout.starts_with(&format!("{name}: ")), "{}", r.stdout);
        let r = cli(["list", "policy", name, "--json"]);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        assert_eq!(j["name"], name);
        assert!(j["parameters"].is_object(), "{name}: {}", r.stdout);
    }
    let r = cli(["list", "policy", "vllm"]);
    assert!(r.stdout.contains("watermark_frac = 0.01"), "{}", r.stdout);
    assert!(!r.stdout.contains("chunked_prefill"), "{}", r.stdout);
    // Chunked prefill is optional (off) in these: `list policy` shows it, and its chunk size.
    for name in ["srpt", "alise", "mlfq", "skip-join-mlfq"] {
        let r = cli(["list", "policy", name]);
        assert!(
            r.stdout.contains("  chunked_prefill = false\n"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains("  chunk_size = 2048\n"), "{}", r.stdout);
    }
    let r = cli(["list", "policy", "sarathy"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `sarathi`?"), "{}", r.stderr);
}

/// `completions bash|zsh|fish` print a script naming the subcommands; the bash one parses.
#[test]
fn completions_print_a_script_per_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let r = cli(["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        for word in ["servesim", "sweep", "capacity", "allow-failures"] {
            assert!(r.stdout.contains(word), "{shell}: no {word}");
        }
        if shell == "bash"
            && std::process::Command::new("bash")
                .arg("--version")
                .output()
                .is_ok()
        {
            let w = Workdir::new();
            let f = w.write("servesim.bash", &r.stdout);
            let ok = std::process::Command::new("bash")
                .arg("-n")
                .arg(&f)
                .status()
                .expect("bash -n");
            assert!(ok.success(), "bash -n rejects the bash completion script");
        }
    }
    let r = cli(["completions", "tcsh"]);
    assert_eq!(r.code, 2);
}

/// A misspelt required key is reported as the unknown key it is, with its line — not as the
/// required key being missing.
#[test]
fn a_misspelt_required_key_is_named_with_its_line() {
    let w = Workdir::new();
    let text = "name = \"x\"\nmodle = \"opt-13b\"\ngpu = \"a100-40gb\"\n\n[trace]\narrival = \"poisson\"\nrate_per_s = 1.0\nnum_requests = 10\n\n[scheduler]\npolicy = \"vllm\"\n";
    let path = w.write("s.toml", text);
    let out = w.path("out");
    let r = cli([
        "run",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 2") && r.stderr.contains("unknown field `modle`"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("missing field"), "{}", r.stderr);
    assert!(!out.exists());
}

/// Bad integer and float flag values printed Rust's parse error ("invalid digit found in string",
/// "invalid float literal") in clap's three-line form (round 9, 11): now one line in words.
#[test]
fn bad_number_flags_are_one_line_in_words() {
    let w = Workdir::new();
    w.write("trace.csv", format!("{HEADER}{GOOD_ROWS}"));
    w.write("scenario.toml", scenario("vllm", ""));
    let s = w.path("scenario.toml");
    let s = s.to_str().unwrap();
    let d = w.path("nothing");
    let d = d.to_str().unwrap();
    // Round 10, 04: clap's five-line "unexpected argument '-1'" and Rust's range syntax.
    let cases: [(&[&str], &str); 9] = [
        (
            &["check", d, "--golden", s, "--rel-tol", "-1"],
            "--rel-tol must be",
        ),
        (&["plot", d, "--cdf-rate", "-1"], "plot:"),
        (
            &["bench", s, "--repeat", "0"],
            "'--repeat <REPEAT>': expected a whole number of at least 1",
        ),
        (
            &["live", s, "--threads", "-2"],
            "'--threads <N>': expected a whole number from 1 to 4096",
        ),
        (
            &["run", s, "--num-requests", "-1"],
            "'--num-requests <N>': expected a whole number (digits only",
        ),
        (
            &["run", s, "--num-requests", "1e3"],
            "'--num-requests <N>': expected a whole number",
        ),
        (
            &["run", s, "--rate", "1,5"],
            "'--rate <REQ_PER_S>': expected a number, like 2, 0.5 or 1e3",
        ),
        (
            &["sweep", s, "--jobs", "x"],
            "'--jobs <N>': expected a whole number",
        ),
        (
            &["run", s, "--num-requests", "99999999999999999999999"],
            "too large for this flag",
        ),
    ];
    for (args, needle) in cases {
        let r = cli(args.iter().copied());
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("invalid digit") && !r.stderr.contains("float literal"));
        assert!(!r.stderr.contains("..="), "{args:?}: {}", r.stderr);
    }
}

/// Round 12, 03: a flag value holding a newline split clap's line (`12\n` shown as `12 `, with
/// Rust's "invalid digit found in string"), and other control bytes were dropped (`a\x01b`
/// shown as `ab`): the value is shown escaped, with the worded reason, on one line.
#[test]
fn flag_values_with_control_characters_are_shown_escaped() {
    for (value, shown) in [
        ("12\n", "'12\\n'"),
        ("a\u{1}b", "'a\\x01b'"),
        ("1\n2", "'1\\n2'"),
    ] {
        let r = crate::support::cli(["run", "scenarios/quickstart.toml", "--num-requests", value]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{:?}", r.stderr);
        assert!(r.stderr.contains(shown), "{:?}", r.stderr);
        assert!(
            r.stderr.contains("expected a whole number"),
            "{:?}",
            r.stderr
        );
    }
}
