//! The forgiving command line: sweep axes from flags (`--policies`, `--rates`, `--seeds`), the
//! exit status of a sweep with failed runs (`--allow-failures`), negative numbers reaching
//! servesim's own checks, "did you mean" for unknown names, `list --json`, `list policy NAME`
//! and shell completions.

use crate::cli::synthetic_scenario;
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
