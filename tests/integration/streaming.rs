//! Runs that keep no per-request rows (`--no-requests-csv`): the returned output holds no
//! completions, and its streaming summary agrees with the exact one of the same run (counts,
//! maxima, throughput, goodput and stability equal; means to rounding; percentiles within the
//! sketch's relative accuracy α).

use servesim::metrics::sketch::ALPHA;
use servesim::metrics::{Dist, Summary};
use servesim::run::{Rows, run_rows};
use servesim::scenario::{Overrides, load};

use crate::support::{Workdir, cli, read_summary, workspace_root};

fn both(scenario: &str, policy: Option<&str>, rate: Option<f64>, n: u64) -> (Summary, Summary) {
    let path = workspace_root().join("scenarios").join(scenario);
    let r = load(&path)
        .and_then(|l| {
            l.resolve(&Overrides {
                policy: policy.map(str::to_owned),
                rate_per_s: rate,
                num_requests: Some(n),
                ..Default::default()
            })
        })
        .unwrap();
    let exact = run_rows(&r, None, true, Rows::Keep).unwrap();
    let streamed = run_rows(&r, None, true, Rows::Stream).unwrap();
    assert_eq!(exact.completions.len() as u64, exact.summary.requests);
    assert!(streamed.completions.is_empty(), "{scenario}: rows kept");
    (exact.summary, streamed.summary)
}

fn close_dist(name: &str, e: &Option<Dist>, s: &Option<Dist>) {
    let (e, s) = match (e, s) {
        (None, None) => return,
        (Some(e), Some(s)) => (e, s),
        _ => panic!("{name}: one side empty"),
    };
    assert_eq!(e.count, s.count, "{name} count");
    assert_eq!(e.max, s.max, "{name} max");
    assert!(
        (e.mean - s.mean).abs() <= 1e-12 * e.mean.abs(),
        "{name} mean {} vs {}",
        e.mean,
        s.mean
    );
    for (p, x, y) in [
        ("p50", e.p50, s.p50),
        ("p90", e.p90, s.p90),
        ("p95", e.p95, s.p95),
        ("p99", e.p99, s.p99),
    ] {
        assert!(
            (x - y).abs() <= ALPHA * x.abs() * (1.0 + 1e-9),
            "{name} {p}: exact {x} vs sketch {y}"
        );
    }
}

fn agree(e: &Summary, s: &Summary) {
    assert_eq!(e.percentiles, None);
    assert_eq!(s.percentiles.as_deref(), Some("sketch(alpha=0.01)"));
    assert_eq!(
        (
            e.requests,
            e.makespan_s,
            e.iterations,
            e.events,
            e.preemptions
        ),
        (
            s.requests,
            s.makespan_s,
            s.iterations,
            s.events,
            s.preemptions
        )
    );
    assert_eq!(e.throughput_requests_per_s, s.throughput_requests_per_s);
    assert_eq!(
        e.throughput_output_tokens_per_s,
        s.throughput_output_tokens_per_s
    );
    assert_eq!(e.itl_s, s.itl_s);
    assert_eq!(e.replicas, s.replicas);
    assert_eq!(e.goodput, s.goodput);
    assert_eq!(e.stability, s.stability);
    close_dist("jct", &e.jct_s, &s.jct_s);
    close_dist("ttft", &e.ttft_s, &s.ttft_s);
    close_dist("tpot", &e.tpot_s, &s.tpot_s);
    close_dist("per_token", &e.per_token_latency_s, &s.per_token_latency_s);
    close_dist("queue", &e.queue_s, &s.queue_s);
}

#[test]
fn streaming_summary_agrees_with_the_exact_one() {
    for (sc, policy, rate, n) in [
        ("quickstart.toml", None, None, 2_000),
        ("quickstart.toml", Some("skip-join-mlfq"), Some(2.0), 2_000),
        ("quickstart.toml", Some("srpt"), Some(3.0), 1_500),
        ("fastserve_opt13b_sharegpt.toml", None, None, 1_000),
        ("bench_10m_vllm.toml", None, None, 20_000),
    ] {
        let (e, s) = both(sc, policy, rate, n);
        assert!(e.requests > 0, "{sc}");
        agree(&e, &s);
    }
}

/// The CLI: `--no-requests-csv` writes no requests.csv and says the percentiles are sketched;
/// with requests.csv they are exact (no `percentiles` key).
#[test]
fn no_requests_csv_marks_sketched_percentiles() {
    let w = Workdir::new();
    let sc = workspace_root().join("scenarios/quickstart.toml");
    for (flag, out) in [(true, "streamed"), (false, "exact")] {
        let dir = w.path(out);
        let mut args = vec![
            "run".into(),
            sc.clone().into_os_string(),
            "--num-requests".into(),
            "300".into(),
            "--out".into(),
            dir.clone().into_os_string(),
            "--quiet".into(),
        ];
        if flag {
            args.push("--no-requests-csv".into());
        }
        let r = cli(args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let s = read_summary(&dir);
        assert_eq!(dir.join("requests.csv").exists(), !flag);
        if flag {
            assert_eq!(s["percentiles"], "sketch(alpha=0.01)");
        } else {
            assert!(s.get("percentiles").is_none());
        }
    }
}

/// `sweep --no-requests-csv` streams too: the same sweep.csv as with rows but for the
/// percentile cells (within α), and every run's summary says its percentiles are sketched.
#[test]
fn sweep_without_requests_csv_streams() {
    let w = Workdir::new();
    let sc = workspace_root().join("scenarios/fastserve_opt13b_sharegpt.toml");
    let sweep = |out: &str, no_rows: bool| {
        let dir = w.path(out);
        let mut args = vec![
            "sweep".into(),
            sc.clone().into_os_string(),
            "--policies".into(),
            "vllm".into(),
            "--num-requests".into(),
            "120".into(),
            "--no-plots".into(),
            "--out".into(),
            dir.clone().into_os_string(),
            "--quiet".into(),
        ];
        if no_rows {
            args.push("--no-requests-csv".into());
        }
        let r = cli(args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        dir
    };
    let (exact, streamed) = (sweep("exact", false), sweep("streamed", true));
    let table = |d: &std::path::Path| {
        let text = std::fs::read_to_string(d.join("sweep.csv")).unwrap();
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        rows
    };
    let (e, s) = (table(&exact), table(&streamed));
    assert_eq!(e.len(), s.len());
    assert_eq!(e[0], s[0]);
    let header = &e[0];
    for (re, rs) in e.iter().zip(&s).skip(1) {
        for (k, name) in header.iter().enumerate() {
            let percentile = ["_p50_s", "_p95_s", "_p99_s"]
                .iter()
                .any(|p| name.ends_with(p));
            if percentile && !name.starts_with("itl") {
                let (x, y): (f64, f64) = (re[k].parse().unwrap(), rs[k].parse().unwrap());
                assert!(
                    (x - y).abs() <= ALPHA * x * (1.0 + 1e-9) + 1e-9,
                    "{name}: {x} vs {y}"
                );
            } else if name.ends_with("_mean_s") {
                let (x, y): (f64, f64) = (re[k].parse().unwrap(), rs[k].parse().unwrap());
                // Equal but for rounding: at most one unit in the last printed decimal.
                assert!((x - y).abs() <= 1e-9 * x + 1.5e-9, "{name}: {x} vs {y}");
            } else {
                assert_eq!(re[k], rs[k], "{name}");
            }
        }
    }
    let runs = std::fs::read_dir(streamed.join("runs")).unwrap();
    for run in runs {
        let run = run.unwrap().path();
        assert!(!run.join("requests.csv").exists());
        assert_eq!(read_summary(&run)["percentiles"], "sketch(alpha=0.01)");
    }
}
