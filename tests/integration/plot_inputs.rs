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
