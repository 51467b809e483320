//! `servesim plot` on hostile inputs: over-long series names finish (labels cut with `…`), and
//! unplottable files are refused naming the file, the line and the column.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{CliResult, Workdir, cli};

const HEADER: &str = "run,policy,rate,requests,makespan_s,jct_mean_s,jct_p99_s,per_token_mean_s,itl_mean_s,preemptions,stable,error";

fn sweep_csv(policy: &str) -> String {
    let mut s = format!("{HEADER}\n");
    for (i, (p, rate)) in [("vllm", 0.5), ("vllm", 1.0), (policy, 0.5), (policy, 1.0)]
        .iter()
        .enumerate()
    {
        let jct = 10.0 * rate + i as f64;
        s += &format!(
            "{i},{p},{rate},200,400.0,{jct},{},0.03,0.03,0,true,\n",
            jct * 4.0
        );
    }
    s
}

/// `servesim plot DIR`, failing the test when it takes longer than a minute.
fn plot_within_a_minute(dir: &Path) -> CliResult {
    let (tx, rx) = mpsc::channel();
    let arg = dir.as_os_str().to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(cli(["plot".into(), arg]));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("`servesim plot` finishes within a minute")
}

#[test]
fn plot_finishes_with_very_long_policy_names() {
    for len in [60, 200, 10_000] {
        let w = Workdir::new();
        let dir = w.path("sw");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("sweep.csv"), sweep_csv(&"x".repeat(len))).unwrap();
        let r = plot_within_a_minute(&dir);
        assert_eq!(r.code, 0, "{len}: {}", r.stderr);
        let svg = std::fs::read_to_string(dir.join("plots/jct_mean_vs_rate.svg")).unwrap();
        assert!(svg.contains('…'), "{len}: the legend label is cut");
        assert!(!svg.contains(&"x".repeat(200)), "{len}");
    }
}

#[test]
fn plot_refuses_unplottable_sweep_and_kv_files_naming_them() {
    let w = Workdir::new();
    let dir = w.path("sw");
    std::fs::create_dir(&dir).unwrap();
    // A row of 1e308 everywhere: the run index is not an integer.
    let n = HEADER.split(',').count();
    let row = vec!["1e308"; n].join(",");
    std::fs::write(dir.join("sweep.csv"), format!("{HEADER}\n{row}\n")).unwrap();
    let r = cli(["plot".into(), dir.clone().into_os_string()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("sweep.csv") && r.stderr.contains("line 2") && r.stderr.contains("`run`"),
        "{}",
        r.stderr
    );
    // Header only: nothing to plot is an error, not "0 plot files".
    std::fs::write(dir.join("sweep.csv"), format!("{HEADER}\n")).unwrap();
    let r = cli(["plot".into(), dir.clone().into_os_string()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("sweep.csv") && r.stderr.contains("nothing to plot"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // A run whose kv_timeline.csv has only its header: reported against the CSV.
    let run = w.path("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("summary.json"), "{}").unwrap();
    std::fs::write(
        run.join("kv_timeline.csv"),
        format!("{}\n", servesim::plot::KV_TIMELINE_HEADER),
    )
    .unwrap();
    let r = cli(["plot".into(), run.clone().into_os_string()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("kv_timeline.csv") && !r.stderr.contains("kv_usage.png"),
        "{}",
        r.stderr
    );
}

/// A hand-edited sweep.csv: values at or below zero or under 1e-6 in a log-axis column are drawn
/// at the axis floor with one warning naming the first one's line and column (they were drawn
/// there silently), a run's invalid `config.json` is named in a
/// warning (it was ignored silently), and two rows with the same axis values are refused with the
/// line of each (they were averaged as if they were seeds).
#[test]
fn plot_warns_of_log_floor_values_and_bad_config_and_refuses_duplicate_points() {
    let w = Workdir::new();
    let dir = w.path("sw");
    std::fs::create_dir_all(dir.join("runs/0000-vllm-0.5")).unwrap();
    std::fs::write(
        dir.join("runs/0000-vllm-0.5/config.json"),
        "{\"scenario\": 3",
    )
    .unwrap();
    let csv = sweep_csv("fcfs")
        .replacen(",5,20,", ",-1e299,20,", 1)
        .replacen(",7,28,", ",1e-320,28,", 1);
    std::fs::write(dir.join("sweep.csv"), &csv).unwrap();
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", r.stderr);
    assert!(
        warnings[0].contains(
            "drew 2 value(s) at or below zero or under 1e-6 at the bottom of their log axis"
        ) && warnings[0].contains("line 2, column `jct_mean_s`, `-1e299`"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("0000-vllm-0.5/config.json: line 1, column 14: not valid JSON"),
        "{}",
        warnings[1]
    );
    // The same point twice (fcfs at 0.5 written as `0.50`).
    let dup = csv.replacen("\n3,fcfs,1,", "\n3,fcfs,0.50,", 1);
    std::fs::write(dir.join("sweep.csv"), dup).unwrap();
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("sweep.csv:5: field `(row)`: duplicate point `policy=fcfs rate=0.50`: the same axis values as line 4"),
        "{}",
        r.stderr
    );
}

/// A series with more rates than a figure draws is merged into bins, and `plot` says so in one
/// line (drawing each of 100k points took most of a 30 s `plot`).
#[test]
fn plot_merges_a_series_of_many_rates_into_bins_and_says_so() {
    let w = Workdir::new();
    let dir = w.path("sw");
    std::fs::create_dir(&dir).unwrap();
    let mut csv = format!("{HEADER}\n");
    for i in 0..5000 {
        csv += &format!(
            "{i},vllm,{},200,400.0,{},4,0.03,0.03,0,true,\n",
            i + 1,
            1 + i % 7
        );
    }
    std::fs::write(dir.join("sweep.csv"), csv).unwrap();
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("series `vllm` has 5000 rates, more than the 1000 a figure draws per series"),
        "{}",
        r.stderr
    );
    let svg = std::fs::read_to_string(dir.join("plots/jct_mean_vs_rate.svg")).unwrap();
    assert!(svg.len() < 1_500_000, "{} bytes", svg.len());
}

/// Round 8, cases 15 and 09: `plot` in a servesim run output replaced a user's
/// `plots/kv_usage.png` (the marker showed servesim never wrote it) and then listed it as
/// servesim's; a run without kv_timeline.csv "wrote 0 plot files in DIR/plots", which did not exist.
#[test]
fn plot_keeps_files_the_marker_does_not_list_and_says_when_there_is_nothing_to_plot() {
    let w = Workdir::new();
    let scenario = crate::support::workspace_root().join("scenarios/quickstart.toml");
    let run = |out: &str, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "run".into(),
            scenario.clone().into(),
            "--num-requests".into(),
            "20".into(),
            "--quiet".into(),
            "--out".into(),
            w.path(out).into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let r = cli(args);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    run("o", &[]);
    let mine = w.path("o/plots/kv_usage.png");
    std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
    std::fs::write(&mine, "my figure").unwrap();
    let r = cli(["plot".into(), w.path("o").into_os_string()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`plots/kv_usage.png` that servesim did not write"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my figure");
    // Without the user's file, plot draws and the rerun replaces the output.
    std::fs::remove_dir_all(w.path("o/plots")).unwrap();
    let r = cli(["plot".into(), w.path("o").into_os_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    run("o", &[]);
    // A run with no kv_timeline.csv has nothing to plot.
    run("n", &["--no-requests-csv"]);
    std::fs::remove_file(w.path("n/kv_timeline.csv")).unwrap();
    let r = cli(["plot".into(), w.path("n").into_os_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("nothing to plot in "), "{}", r.stdout);
    assert!(!w.path("n/plots").exists());
}

/// The JCT CDF reads each run's requests.csv whole: a file cut short (3 of 200 rows) or with a
/// garbled `jct_s` is refused naming it; the CDF was drawn from what was left, exit 0.
#[test]
fn plot_refuses_a_cut_short_or_garbled_requests_csv() {
    let w = Workdir::new();
    let dir = w.path("sw");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sweep.csv"), sweep_csv("fcfs")).unwrap();
    let rows = |n: usize, bad: bool| {
        let mut t = "id,arrival_s,finish_s,jct_s\n".to_string();
        for i in 0..n {
            let jct = if bad && i == 1 {
                "x".into()
            } else {
                format!("{}", 1.0 + i as f64)
            };
            t += &format!("{i},0,{jct},{jct}\n");
        }
        t
    };
    for (i, name) in [
        "0000-vllm-0.5",
        "0001-vllm-1.0",
        "0002-fcfs-0.5",
        "0003-fcfs-1.0",
    ]
    .iter()
    .enumerate()
    {
        let run = dir.join("runs").join(name);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("summary.json"), "{\"requests\": 200}\n").unwrap();
        std::fs::write(
            run.join("requests.csv"),
            rows(if i == 1 { 3 } else { 200 }, false),
        )
        .unwrap();
    }
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("0001-vllm-1.0/requests.csv") && r.stderr.contains("holds 3 requests"),
        "{}",
        r.stderr
    );
    let run = dir.join("runs/0001-vllm-1.0");
    std::fs::write(run.join("requests.csv"), rows(200, true)).unwrap();
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 3: `jct_s` must be a number"),
        "{}",
        r.stderr
    );
    // Without summary.json's integer count, the run's `requests` in sweep.csv decides (round 12,
    // 02: a missing summary.json, `200.0` or `"200"` skipped the check).
    std::fs::write(run.join("requests.csv"), rows(20, false)).unwrap();
    for summary in [
        None,
        Some("{\"requests\": 200.0}\n"),
        Some("{\"requests\": \"200\"}\n"),
    ] {
        match summary {
            None => std::fs::remove_file(run.join("summary.json")).unwrap(),
            Some(text) => std::fs::write(run.join("summary.json"), text).unwrap(),
        }
        let r = plot_within_a_minute(&dir);
        assert_eq!(r.code, 2, "{summary:?}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("holds 20 requests but its `requests` in sweep.csv counts 200"),
            "{}",
            r.stderr
        );
    }
    std::fs::write(run.join("requests.csv"), rows(200, false)).unwrap();
    let r = plot_within_a_minute(&dir);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A named pipe where plot reads sweep.csv, summary.json or kv_timeline.csv is refused naming
/// it (round 11, 07: a FIFO sweep.csv was "not a sweep directory (no sweep.csv)", a FIFO
/// kv_timeline.csv gave "nothing to plot" and exit 0).
#[test]
fn plot_refuses_a_named_pipe_in_place_of_its_inputs() {
    let w = Workdir::new();
    let scenario = crate::support::workspace_root().join("scenarios/quickstart.toml");
    let r = cli([
        "run".into(),
        scenario.into_os_string(),
        "--num-requests".into(),
        "20".into(),
        "--quiet".into(),
        "--out".into(),
        w.path("o").into_os_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::create_dir_all(w.path("s")).unwrap();
    for (dir, file) in [
        ("o", "kv_timeline.csv"),
        ("s", "sweep.csv"),
        ("s", "summary.json"),
    ] {
        let fifo = w.path(dir).join(file);
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        let r = plot_within_a_minute(&w.path(dir));
        assert_eq!(r.code, 2, "{file}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(file), "{}", r.stderr);
        assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
        if file == "sweep.csv" {
            std::fs::remove_file(&fifo).unwrap();
        }
    }
    assert!(!w.path("o/plots").exists());
}
