//! CI regression of JCT curves: the small golden sweep (`scenarios/golden_small.toml`) must
//! reproduce `results/golden/golden_small.csv` exactly, at any `--jobs`; `servesim check` must
//! fail (exit 1, naming the point) when a policy's behaviour is perturbed.
//!
//! After an intentional change of behaviour, re-bless with
//! `servesim sweep scenarios/golden_small.toml --out /tmp/g --no-plots && servesim check /tmp/g --golden results/golden/golden_small.csv --bless`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let mut argv: Vec<OsString> = vec!["servesim".into()];
    argv.extend(args.iter().map(OsString::from));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim::cli::main_with_args(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn sweep(scenario: &Path, out: &Path, jobs: &str) {
    let (code, o, e) = cli(&[
        "sweep",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-plots",
        "--jobs",
        jobs,
    ]);
    assert_eq!(code, 0, "sweep failed: {o}{e}");
}

#[test]
fn golden_sweep_matches_at_any_job_count() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = root().join("scenarios/golden_small.toml");
    let golden = root().join("results/golden/golden_small.csv");
    let (a, b) = (tmp.path().join("j1"), tmp.path().join("j2"));
    sweep(&scenario, &a, "1");
    sweep(&scenario, &b, "2");
    assert_eq!(
        std::fs::read(a.join("sweep.csv")).unwrap(),
        std::fs::read(b.join("sweep.csv")).unwrap(),
        "sweep.csv depends on --jobs"
    );
    let (code, out, err) = cli(&[
        "check",
        a.to_str().unwrap(),
        "--golden",
        golden.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "golden curves moved:\n{out}{err}");
}

#[test]
fn check_fails_and_names_the_point_when_a_policy_is_perturbed() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("scenarios/golden_small.toml")).unwrap();
    let lengths = root().join("traces/sharegpt_vllm_opt.csv");
    // Perturb vllm only: a 20% admission watermark instead of 1%.
    let perturbed = text.replace(
        "\"../traces/sharegpt_vllm_opt.csv\"",
        &format!("{:?}", lengths.to_str().unwrap()),
    ) + "\n[policies.vllm]\nwatermark_frac = 0.2\n";
    let scenario = tmp.path().join("perturbed.toml");
    std::fs::write(&scenario, perturbed).unwrap();
    let out_dir = tmp.path().join("p");
    sweep(&scenario, &out_dir, "2");
    let golden = root().join("results/golden/golden_small.csv");
    let (code, _out, err) = cli(&[
        "check",
        out_dir.to_str().unwrap(),
        "--golden",
        golden.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "perturbation not detected: {err}");
    assert!(err.contains("policy=vllm"), "{err}");
    assert!(!err.contains("policy=fcfs"), "only vllm should move: {err}");
    // A loose tolerance does not hide a real change either.
    let (code, _, _) = cli(&[
        "check",
        out_dir.to_str().unwrap(),
        "--golden",
        golden.to_str().unwrap(),
        "--rel-tol",
        "1e-6",
    ]);
    assert_eq!(code, 1);
}

/// Duplicate points (two rows with the same axis values) in the golden file or the actual one
/// are an error naming the file and line, not a pass; missing columns and rows are reported.
#[test]
fn check_rejects_duplicate_points_and_names_missing_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = root().join("results/golden/golden_small.csv");
    let text = std::fs::read_to_string(&golden).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The last row again, with the run number changed.
    let last = lines[lines.len() - 1];
    let again = format!("999{}", &last[last.find(',').unwrap()..]);
    let dup = tmp.path().join("dup.csv");
    std::fs::write(&dup, format!("{text}{again}\n")).unwrap();
    let g = golden.to_str().unwrap();
    let d = dup.to_str().unwrap();
    for (actual, gold) in [(g, d), (d, g)] {
        let (code, _out, err) = cli(&["check", actual, "--golden", gold]);
        assert_eq!(code, 2, "{actual} vs {gold}: {err}");
        assert!(
            err.contains(&format!("dup.csv:{}", lines.len() + 1))
                && err.contains("duplicate point"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A missing column is named; so is a missing row.
    let cut: String = text
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    let cut_path = tmp.path().join("cut.csv");
    std::fs::write(&cut_path, cut).unwrap();
    let (code, _out, err) = cli(&["check", cut_path.to_str().unwrap(), "--golden", g]);
    assert_eq!(code, 1, "{err}");
    let last_column = lines[0].rsplit_once(',').unwrap().1;
    assert!(
        err.contains(&format!(
            "(header): {last_column} golden present → actual missing"
        )),
        "{err}"
    );
    let fewer = tmp.path().join("fewer.csv");
    std::fs::write(&fewer, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let (code, _out, err) = cli(&["check", fewer.to_str().unwrap(), "--golden", g]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("(row) golden present → actual missing"),
        "{err}"
    );
}

/// A column added to sweep.csv after the golden file was blessed (the stability columns) is not
/// a regression: `check` names it on stderr as not compared and still compares the other
/// columns, by name (their positions shift).
#[test]
fn check_notes_columns_the_golden_file_lacks_and_compares_the_rest_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = root().join("results/golden/golden_small.csv");
    let text = std::fs::read_to_string(&golden).unwrap();
    // Insert a `newcol` metric column after `requests` (every later column moves one place
    // right; the axes, the columns before `requests`, stay).
    let widen = |t: &str| -> String {
        t.lines()
            .enumerate()
            .map(|(i, l)| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.insert(5, if i == 0 { "newcol" } else { "7" });
                cells.join(",") + "\n"
            })
            .collect()
    };
    let wide = tmp.path().join("wide.csv");
    std::fs::write(&wide, widen(&text)).unwrap();
    let g = golden.to_str().unwrap();
    let (code, out, err) = cli(&["check", wide.to_str().unwrap(), "--golden", g]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.starts_with("note: ") && err.contains("not compared: newcol"),
        "{err}"
    );
    // A moved cell of a shared column is still found at its new position.
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let jct = header.iter().position(|h| *h == "jct_mean_s").unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    cells[jct] = "123.5".into();
    lines[1] = cells.join(",");
    let moved = tmp.path().join("moved.csv");
    std::fs::write(&moved, widen(&(lines.join("\n") + "\n"))).unwrap();
    let (code, _out, err) = cli(&["check", moved.to_str().unwrap(), "--golden", g]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("jct_mean_s golden") && err.contains("actual 123.5"),
        "{err}"
    );
}

/// A `NaN` (or `inf`) in the golden file is a bad field (exit 2, file, line and column), not a
/// regression of every run (NaN equals nothing).
#[test]
fn check_rejects_non_finite_cells_as_bad_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = root().join("results/golden/golden_small.csv");
    let text = std::fs::read_to_string(&golden).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "jct_mean_s").unwrap();
    for bad in ["NaN", "inf", "-infinity"] {
        let edited: String = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let mut cells: Vec<String> = l.split(',').map(str::to_string).collect();
                if i == 2 {
                    cells[col] = bad.into();
                }
                cells.join(",") + "\n"
            })
            .collect();
        let nan = tmp.path().join("nan.csv");
        std::fs::write(&nan, edited).unwrap();
        let (code, _out, err) = cli(&[
            "check",
            golden.to_str().unwrap(),
            "--golden",
            nan.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains("nan.csv:3: field `jct_mean_s`") && err.contains("not a finite number"),
            "{bad}: {err}"
        );
    }
    // A wrong path is refused within a bound, not read forever.
    #[cfg(unix)]
    for (actual, gold) in [
        (golden.to_str().unwrap(), "/dev/zero"),
        ("/dev/zero", golden.to_str().unwrap()),
    ] {
        let (code, _out, err) = cli(&["check", actual, "--golden", gold]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("/dev/zero: larger than 256 MiB"), "{err}");
    }
}

/// A CSV whose first column is `requests` made `check` and `plot` panic (exit 101, a slice
/// index); `check --bless` overwrote an ordinary CSV with a `requests` column further right; and
/// it blessed a golden file inside the sweep output it read, which the next sweep deleted. A
/// sweep.csv (or golden file) starts with `run`, and a golden file is kept outside its sweep.
#[test]
fn check_and_plot_refuse_files_that_are_no_sweep_csv_and_bless_outside_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = root().join("results/golden/golden_small.csv");
    let g = golden.to_str().unwrap();
    let one = tmp.path().join("one.csv");
    std::fs::write(&one, "requests\n5\n").unwrap();
    let o = one.to_str().unwrap();
    for (actual, gold) in [(g, o), (o, g)] {
        let (code, _out, err) = cli(&["check", actual, "--golden", gold]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("one.csv: not a sweep.csv (its first column is not `run`)"),
            "{err}"
        );
    }
    let sw = tmp.path().join("sw");
    std::fs::create_dir(&sw).unwrap();
    std::fs::write(sw.join("sweep.csv"), "requests,x\n5,1\n").unwrap();
    let (code, _out, err) = cli(&["plot", sw.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("its first column is not `run`"), "{err}");
    // An ordinary CSV with a `requests` column is not a golden file to overwrite.
    let servers = tmp.path().join("servers.csv");
    let text = "date,host,requests,owner\n2026-01-01,web1,5000,alice\n";
    std::fs::write(&servers, text).unwrap();
    let (code, _out, err) = cli(&["check", g, "--golden", servers.to_str().unwrap(), "--bless"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read_to_string(&servers).unwrap(), text);
    // Blessing inside the sweep directory it checks is refused.
    let exp = tmp.path().join("exp");
    sweep(&root().join("scenarios/golden_small.toml"), &exp, "2");
    let inside = exp.join("runs/golden.csv");
    let (code, _out, err) = cli(&[
        "check",
        exp.to_str().unwrap(),
        "--golden",
        inside.to_str().unwrap(),
        "--bless",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the sweep output"), "{err}");
    assert!(!inside.exists());
    // Also through folders that do not exist yet (round 8, case 11: blessed, creating them).
    let deep = exp.join("newdir/a/b/g.csv");
    let (code, _out, err) = cli(&[
        "check",
        exp.to_str().unwrap(),
        "--golden",
        deep.to_str().unwrap(),
        "--bless",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the sweep output"), "{err}");
    assert!(!exp.join("newdir").exists());
    // And with a `..` after a folder that does not exist (round 9, case 03: blessed as `exp/g.csv`).
    let undone = exp.join("newdir/../g.csv");
    let (code, _out, err) = cli(&[
        "check",
        exp.to_str().unwrap(),
        "--golden",
        undone.to_str().unwrap(),
        "--bless",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the sweep output"), "{err}");
    assert!(!exp.join("newdir").exists() && !exp.join("g.csv").exists());
}
