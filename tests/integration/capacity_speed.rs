//! `capacity`'s early stop and parallel searches change neither its verdicts nor its answer:
//! every probe counts (or not) exactly as when every seed runs to its end, and the outputs are
//! byte-identical for any `--jobs`.

use crate::support::{Workdir, cli, workspace_root};

/// `capacity SCENARIO ARGS… --out DIR`: (capacity.csv, capacity.json parsed).
fn capacity(w: &Workdir, out: &str, scenario: &str, args: &[&str]) -> (String, serde_json::Value) {
    let scenario = workspace_root().join("scenarios").join(scenario);
    let dir = w.path(out);
    let mut argv: Vec<String> = vec!["capacity".into(), scenario.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend(["--out".into(), dir.display().to_string(), "--quiet".into()]);
    let r = cli(&argv);
    assert_eq!(r.code, 0, "{argv:?}: {}", r.stderr);
    let csv = std::fs::read_to_string(dir.join("capacity.csv")).unwrap();
    let json = std::fs::read_to_string(dir.join("capacity.json")).unwrap();
    (csv, serde_json::from_str(&json).unwrap())
}

/// One probe's verdict: (rate, counted, meets_target).
type Verdict = (f64, bool, bool);

/// Per policy: its capacity, bracket and every probe's verdict.
fn verdicts(j: &serde_json::Value) -> Vec<(String, Vec<Verdict>)> {
    j["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let head = format!(
                "{} {} {}",
                p["policy"], p["capacity_rate_per_s"], p["bracket"]
            );
            let probes = p["probes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| {
                    (
                        q["rate_per_s"].as_f64().unwrap(),
                        q["counted"].as_bool().unwrap(),
                        q["meets_target"].as_bool().unwrap(),
                    )
                })
                .collect();
            (head, probes)
        })
        .collect()
}

/// How many probes were stopped early.
fn stopped(j: &serde_json::Value) -> usize {
    j["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["probes"].as_array().unwrap())
        .filter(|q| q.get("stopped_early").is_some())
        .count()
}

#[test]
fn early_stop_keeps_every_verdict() {
    let w = Workdir::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "fastserve_opt13b_sharegpt.toml",
            &[
                "--slo",
                "per_token_s=0.3",
                "--policies",
                "vllm,skip-join-mlfq",
            ],
        ),
        (
            "fastserve_opt13b_sharegpt.toml",
            &[
                "--goodput",
                "ttft_s=3.1,tpot_s=0.3,min=0.95",
                "--policies",
                "vllm,fcfs",
            ],
        ),
        (
            "fastserve_opt13b_sharegpt.toml",
            &[
                "--slo",
                "jct_s:p90=30",
                "--policies",
                "srpt-oracle",
                "--seeds",
                "3,4",
            ],
        ),
        (
            "policies_sharegpt.toml",
            &[
                "--slo",
                "ttft_s=2",
                "--policies",
                "alise",
                "--num-requests",
                "600",
            ],
        ),
    ];
    let mut total_stopped = 0;
    for (i, (scenario, args)) in cases.iter().enumerate() {
        let (_, fast) = capacity(&w, &format!("fast{i}"), scenario, args);
        let mut full_args = args.to_vec();
        full_args.push("--no-early-stop");
        let (_, full) = capacity(&w, &format!("full{i}"), scenario, &full_args);
        assert_eq!(verdicts(&fast), verdicts(&full), "{scenario} {args:?}");
        assert_eq!(stopped(&full), 0);
        total_stopped += stopped(&fast);
    }
    assert!(total_stopped > 0, "no probe was stopped early");
}

#[test]
fn capacity_outputs_do_not_depend_on_jobs() {
    let w = Workdir::new();
    let args = [
        "--slo",
        "per_token_s=0.3",
        "--policies",
        "vllm,skip-join-mlfq,alise",
        "--num-requests",
        "300",
    ];
    let one: Vec<&str> = args.iter().copied().chain(["--jobs", "1"]).collect();
    let three: Vec<&str> = args.iter().copied().chain(["--jobs", "3"]).collect();
    let (csv1, json1) = capacity(&w, "j1", "fastserve_opt13b_sharegpt.toml", &one);
    let (csv3, json3) = capacity(&w, "j3", "fastserve_opt13b_sharegpt.toml", &three);
    assert_eq!(csv1, csv3);
    assert_eq!(json1, json3);
    // One policy: the spare threads probe rates ahead of the bisection.
    let one: Vec<&str> = args[..2].iter().copied().chain(["--jobs", "1"]).collect();
    let four: Vec<&str> = args[..2].iter().copied().chain(["--jobs", "4"]).collect();
    let (csv1, json1) = capacity(&w, "s1", "fastserve_opt13b_sharegpt.toml", &one);
    let (csv4, json4) = capacity(&w, "s4", "fastserve_opt13b_sharegpt.toml", &four);
    assert_eq!(csv1, csv4);
    assert_eq!(json1, json4);
}
