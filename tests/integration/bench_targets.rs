//! `servesim bench --targets`: one row per performance target, with its bound and verdict.

use crate::support::cli;

/// Scaled down (`--num-requests`), every target runs or says why not, and no verdict is given
/// for a size the bound is not about.
#[test]
fn bench_targets_prints_every_target_with_its_bound() {
    let r = cli([
        "bench",
        "--targets",
        "--num-requests",
        "200",
        "--repeat",
        "1",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("machine: "), "{}", r.stdout);
    assert!(lines[1].starts_with("target"), "{}", r.stdout);
    let rows = &lines[2..];
    assert_eq!(rows.len(), 6, "{}", r.stdout);
    for (target, bound) in [
        ("1: ", "≤ 1.20×"),
        ("2: ", "≤ 60 s, 1000 MB"),
        ("3: ", "≤ 3.0 s"),
        ("5: ", "≥ 1.90×"),
    ] {
        let row = rows
            .iter()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no row for target {target}: {}", r.stdout));
        assert!(row.contains(bound), "{row}");
    }
    let scaled = rows
        .iter()
        .filter(|l| l.ends_with("scaled: no verdict"))
        .count();
    let not_run = rows
        .iter()
        .filter(|l| l.ends_with("not run (--big)"))
        .count();
    assert_eq!((scaled, not_run), (4, 2), "{}", r.stdout);
    // Each measured row holds its figures (a ratio, or seconds and megabytes).
    for row in rows.iter().filter(|l| l.ends_with("scaled: no verdict")) {
        assert!(row.contains(" s"), "{row}");
    }
}

/// `--targets` runs fixed workloads: scenarios or `--no-rows` with it are a usage error.
#[test]
fn bench_targets_refuses_scenarios_and_no_rows() {
    for extra in ["scenarios/quickstart.toml", "--no-rows"] {
        let r = cli(["bench", "--targets", extra]);
        assert_eq!(r.code, 2, "{extra}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("--targets"), "{}", r.stderr);
    }
}
