//! Goodput (`[slo]`), the capacity bar plot and the KV usage plot.
//!
//! The goodput trace is the hand-derived `vllm` micro-scenario of `micro.rs`
//! (`arrivals_wait_for_the_boundary_and_boundary_arrivals_join_it`): constant 100 ms
//! iterations, requests A (0 s, out 3), B (0.05 s, out 2), C (0.2 s, out 1), D (1.234 s, out 2):
//!
//! | req | first token | finish | TTFT   | TPOT = (finish − first) / (out − 1) |
//! |-----|-------------|--------|--------|-------------------------------------|
//! | A   | 0.1         | 0.5    | 0.1    | 0.4 / 2 = 0.2                       |
//! | B   | 0.2         | 0.4    | 0.15   | 0.2 / 1 = 0.2                       |
//! | C   | 0.3         | 0.3    | 0.1    | — (one output token: TTFT only)     |
//! | D   | 1.334       | 1.434  | 0.1    | 0.1                                 |

use std::path::Path;

use crate::support::{Workdir, cli, read_summary};

const TRACE: &str = "arrival_s,input_tokens,output_tokens\n0,2,3\n0.05,2,2\n0.2,2,1\n1.234,2,2\n";

fn scenario(slo: &str) -> String {
    format!(
        r#"name = "tiny"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
block_tokens = 1
kv_capacity_blocks = 64

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "vllm"
max_context_tokens = 16

[policies.vllm]
watermark_frac = 0.0
{slo}"#
    )
}

fn run(w: &Workdir, slo: &str, out: &str) -> std::path::PathBuf {
    let sc = w.write(&format!("{out}.toml"), scenario(slo));
    let dir = w.path(out);
    let r = cli([
        "run".into(),
        sc.into_os_string(),
        "--out".into(),
        dir.clone().into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "run failed: {}", r.stderr);
    dir
}

#[test]
fn goodput_is_the_exact_hand_computed_fraction() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    // (ttft_s, tpot_s) → (met, fraction), from the table above (both bounds inclusive).
    for (ttft, tpot, met, fraction) in [
        // A fails TPOT (0.2), B fails TTFT (0.15); C passes on TTFT alone; D passes.
        (0.12, 0.15, 2, 0.5),
        // Everything on the boundary passes: A's TPOT is exactly 0.2, B's TTFT exactly 0.15.
        (0.2, 0.2, 4, 1.0),
        // A's and B's TPOT 0.2 > 0.19.
        (0.2, 0.19, 2, 0.5),
        // TTFT exactly 0.1 passes (A, C, D); B's 0.15 fails.
        (0.1, 0.3, 3, 0.75),
        // Nobody's TTFT is below 0.1.
        (0.09, 1.0, 0, 0.0),
    ] {
        let dir = run(
            &w,
            &format!("[slo]\nttft_s = {ttft:?}\ntpot_s = {tpot:?}\n"),
            "out",
        );
        let g = &read_summary(&dir)["goodput"];
        assert_eq!(g["met"], met, "({ttft}, {tpot}): {g}");
        assert_eq!(g["requests"], 4, "({ttft}, {tpot}): {g}");
        assert_eq!(
            g["fraction"].as_f64(),
            Some(fraction),
            "({ttft}, {tpot}): {g}"
        );
        assert_eq!(g["ttft_s"].as_f64(), Some(ttft));
        assert_eq!(g["tpot_s"].as_f64(), Some(tpot));
    }
}

#[test]
fn sweep_gains_a_goodput_column_only_with_slo() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let sweep = "\n[sweep]\npolicy = [\"vllm\"]\nseed = [0, 1]\n";
    let with = w.write(
        "with.toml",
        scenario(&format!("[slo]\nttft_s = 0.12\ntpot_s = 0.15\n{sweep}")),
    );
    let without = w.write("without.toml", scenario(sweep));
    let mut csvs = Vec::new();
    for (sc, out) in [(&with, "sw_with"), (&without, "sw_without")] {
        let dir = w.path(out);
        let r = cli([
            "sweep".into(),
            sc.clone().into_os_string(),
            "--out".into(),
            dir.clone().into_os_string(),
            "--no-plots".into(),
            "--jobs".into(),
            "1".into(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        csvs.push(std::fs::read_to_string(dir.join("sweep.csv")).unwrap());
    }
    let old_header = "run,policy,seed,requests,makespan_s,throughput_requests_per_s,jct_mean_s,jct_p50_s,jct_p99_s,ttft_mean_s,ttft_p99_s,tpot_mean_s,tpot_p99_s,itl_mean_s,itl_p99_s,per_token_mean_s,per_token_p95_s,per_token_p99_s,preemptions,offered_rate_per_s,achieved_rate_per_s,queue_growth_per_s,stable,error";
    let lines_with: Vec<&str> = csvs[0].lines().collect();
    let lines_without: Vec<&str> = csvs[1].lines().collect();
    assert_eq!(lines_without[0], old_header, "no [slo]: header unchanged");
    assert_eq!(
        lines_with[0],
        old_header.replace(",error", ",goodput,error"),
        "[slo]: goodput before error"
    );
    for (a, b) in lines_with[1..].iter().zip(&lines_without[1..]) {
        // Same row with the goodput cell inserted before the (empty) error cell.
        assert_eq!(*a, format!("{b}0.500000000,"));
    }
}

#[test]
fn absent_slo_keeps_run_outputs_unchanged() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let plain = run(&w, "", "plain");
    let with = run(&w, "[slo]\nttft_s = 0.12\ntpot_s = 0.15\n", "with");
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    for f in ["requests.csv", "replicas.csv"] {
        assert_eq!(read(&plain, f), read(&with, f), "{f}");
    }
    let p = read_summary(&plain);
    assert!(p.get("goodput").is_none(), "no [slo] → no goodput key");
    assert!(!read(&plain, "summary.json").contains("goodput"));
    assert!(!read(&plain, "config.json").contains("slo"));
    let mut s = read_summary(&with);
    s.as_object_mut()
        .unwrap()
        .remove("goodput")
        .expect("goodput");
    assert_eq!(p, s, "summary.json differs only by goodput");
}

#[test]
fn bad_slo_targets_are_config_errors_naming_the_field() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    for (slo, needle) in [
        ("ttft_s = -1.0\ntpot_s = 0.1", "[slo] ttft_s"),
        ("ttft_s = 1.0\ntpot_s = nan", "[slo] tpot_s"),
        ("ttft_s = 0.0\ntpot_s = 0.1", "[slo] ttft_s"),
        ("ttft_s = inf\ntpot_s = 0.1", "[slo] ttft_s"),
        ("ttft_s = 1.0\ntpot_s = -0.5", "[slo] tpot_s"),
        ("ttft_s = 1.0", "tpot_s"),
        ("ttft_s = 1.0\ntpot_s = 0.1\nttft = 2.0", "ttft"),
    ] {
        let sc = w.write("bad.toml", scenario(&format!("[slo]\n{slo}\n")));
        for cmd in ["run", "sweep"] {
            let r = cli([
                cmd.into(),
                sc.clone().into_os_string(),
                "--out".into(),
                w.path("bad_out").into_os_string(),
            ]);
            assert_eq!(r.code, 2, "{cmd} {slo:?}: {}", r.stdout);
            assert!(
                r.stderr.contains(needle) && r.stderr.contains("bad.toml"),
                "{cmd} {slo:?}: expected `{needle}` in: {}",
                r.stderr
            );
            assert!(!w.path("bad_out").exists(), "no output on error");
        }
    }
}

/// A small synthetic scenario (linear cost) for the capacity search.
fn capacity_scenario(w: &Workdir) -> std::path::PathBuf {
    let lengths = crate::support::workspace_root().join("traces/sharegpt_vllm_opt.csv");
    w.write(
        "cap.toml",
        format!(
            r#"name = "cap"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = 1.0
lengths_file = {lengths:?}
num_requests = 60

[cost]
model = "linear"
a_s = 0.012
b_s_per_token = 1.0e-4
c_s_per_token_sq = 0.0
d_s_per_request = 1.0e-4
e_s_per_context_token = 1.0e-7

[scheduler]
policy = "vllm"
max_batch_size = 16

[slo]
ttft_s = 2.0
tpot_s = 0.05
"#
        ),
    )
}

/// An unreachable target and a trivially met one: the search stops within 2^20 of the start
/// rate and says the bracket never closed (table, capacity.csv), instead of reporting 0 or
/// 549,755,813,888 req/s as a capacity.
#[test]
fn capacity_reports_an_open_bracket() {
    let w = Workdir::new();
    let sc = capacity_scenario(&w);
    // A target met at every rate still closes its bracket where the runs stop being stable
    // (capacity counts only stable runs); twenty one-token requests served in 1 ns each stay
    // stable at any rate probed, so their bracket stays open above. (Fewer than 20 requests
    // cannot be judged at all: an error, `capacity_on_a_trace_too_short_to_judge_is_an_error`.)
    let fast = w.write(
        "fast.toml",
        "name = \"fast\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n[trace]\narrival = \"poisson\"\nrate_per_s = 1.0\ninput_lengths = { dist = \"fixed\", value = 4 }\noutput_lengths = { dist = \"fixed\", value = 1 }\nnum_requests = 20\n[cost]\nmodel = \"constant\"\niteration_s = 1e-9\n[scheduler]\npolicy = \"vllm\"\n",
    );
    for (slo, bracket, words, requests) in [
        (
            "per_token_s=1e-9",
            "below",
            // The probe at 9.53674e-7 req/s (2^-20) fails on max_sim_s: not a miss, so the
            // bound is the lowest rate measured.
            "below the lowest rate measured, 1.90735e-6 req/s (every measured probe missed the target; lower probes failed: seed 0: simulated time passed [limits] max_sim_s",
            "20",
        ),
        (
            "per_token_s=1e9",
            "above",
            "above the highest probed rate 1048576 req/s (the bracket never closed)",
            "20",
        ),
    ] {
        let dir = w.path(bracket);
        let scenario = if bracket == "above" { &fast } else { &sc };
        let r = cli([
            "capacity",
            scenario.to_str().unwrap(),
            "--slo",
            slo,
            "--seeds",
            "0",
            "--num-requests",
            requests,
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{slo}: {}", r.stderr);
        assert!(r.stdout.contains(words), "{slo}: {}", r.stdout);
        let csv = std::fs::read_to_string(dir.join("capacity.csv")).unwrap();
        let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(row[3], bracket, "{csv}");
        let limit: f64 = row[4].parse().unwrap();
        assert!((9e-7..=1.1e6).contains(&limit), "{csv}");
        let probes: usize = row[2].parse().unwrap();
        assert!(probes <= 21, "{csv}");
    }
}

/// Numeric flags of `capacity` are checked and the error names the flag.
#[test]
fn capacity_rejects_bad_flags() {
    let w = Workdir::new();
    let sc = capacity_scenario(&w);
    for (flag, value) in [
        ("--precision", "0"),
        ("--precision", "-0.1"),
        ("--precision", "NaN"),
        ("--precision", "1"),
        ("--precision", "1e-300"),
        ("--precision", "0.00009"),
        ("--start-rate", "NaN"),
        ("--start-rate", "inf"),
        ("--start-rate", "-1"),
        ("--policies", "vllm,,fcfs"),
    ] {
        let r = cli([
            "capacity",
            sc.to_str().unwrap(),
            "--slo",
            "per_token_s=0.1",
            &format!("{flag}={value}"),
        ]);
        assert_eq!(r.code, 2, "{flag} {value}: {}", r.stdout);
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains(flag),
            "{flag} {value}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
}

#[test]
fn capacity_writes_csv_and_bar_plot() {
    let w = Workdir::new();
    let sc = capacity_scenario(&w);
    for (target, out) in [
        (vec!["--slo", "per_token_s=0.1"], "cap_latency"),
        (vec!["--goodput", "min=0.9"], "cap_goodput"),
    ] {
        let dir = w.path(out);
        let mut args: Vec<std::ffi::OsString> = vec!["capacity".into(), sc.clone().into()];
        args.extend(target.iter().map(|s| s.into()));
        args.extend(
            [
                "--policies",
                "vllm,fcfs",
                "--seeds",
                "0",
                "--precision",
                "0.05",
                "--out",
            ]
            .iter()
            .map(|s| s.into()),
        );
        args.push(dir.clone().into_os_string());
        let r = cli(args);
        assert_eq!(r.code, 0, "{target:?}: {}", r.stderr);
        let csv = std::fs::read_to_string(dir.join("capacity.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "policy,capacity_rate_per_s,probes,bracket,limit_rate_per_s,achieved_rate_per_s,unstable_probes,limit_reason,stopped_early_probes"
        );
        assert!(lines[1].starts_with("vllm,") && lines[2].starts_with("fcfs,"));
        let rate: f64 = lines[1].split(',').nth(1).unwrap().parse().unwrap();
        assert!(
            rate > 0.0,
            "{target:?}: vllm meets the target somewhere: {csv}"
        );
        let png = std::fs::read(dir.join("capacity.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "capacity.png is a PNG");
        assert!(png.len() > 5_000, "capacity.png has content");
        let svg = std::fs::read_to_string(dir.join("capacity.svg")).unwrap();
        assert!(
            svg.contains("vllm") && svg.contains("fcfs"),
            "bars labelled"
        );
        assert!(svg.contains("capacity under"), "title");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".servesim-output",
                "capacity.csv",
                "capacity.json",
                "capacity.png",
                "capacity.svg"
            ]
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            (n.contains(".tmp-") || n.contains(".servesim-")).then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn capacity_goodput_needs_targets_and_one_kind_of_target() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let no_slo = w.write("s.toml", scenario(""));
    let r = cli([
        "capacity".into(),
        no_slo.clone().into_os_string(),
        "--goodput".into(),
        "min=0.95".into(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no `ttft_s`"), "{}", r.stderr);
    let r = cli(["capacity".into(), no_slo.into_os_string()]);
    assert_eq!(r.code, 2, "neither --slo nor --goodput");
    assert!(
        r.stderr.contains("--slo") && r.stderr.contains("--goodput"),
        "{}",
        r.stderr
    );
}

/// Hand-written `kv_timeline.csv` (two replicas, four samples each); also the source of
/// `results/figures/kv_usage.png`.
const KV_FIXTURE: &str = include_str!("../fixtures/kv_timeline.csv");

#[test]
fn plot_draws_kv_usage_from_kv_timeline_and_skips_it_without() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let dir = run(&w, "", "run");
    // Without kv_timeline.csv (a run with `[output] kv_timeline_interval_s = 0`): nothing to
    // draw, not an error.
    std::fs::remove_file(dir.join("kv_timeline.csv")).unwrap();
    let r = cli(["plot".into(), dir.clone().into_os_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("nothing to plot in "), "{}", r.stdout);
    assert!(!dir.join("plots/kv_usage.png").exists());
    // With the fixture.
    std::fs::write(dir.join("kv_timeline.csv"), KV_FIXTURE).unwrap();
    let r = cli(["plot".into(), dir.clone().into_os_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("2 plot files"), "{}", r.stdout);
    let png = std::fs::read(dir.join("plots/kv_usage.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(dir.join("plots/kv_usage.svg")).unwrap();
    for text in [
        "GPU KV blocks in use",
        "host KV blocks in use",
        "replica 0",
        "replica 1",
    ] {
        assert!(svg.contains(text), "kv_usage.svg lacks `{text}`");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A malformed file is an error naming the line.
    std::fs::write(
        dir.join("kv_timeline.csv"),
        KV_FIXTURE.replace("3.0,1,200", "3.0,1,lots"),
    )
    .unwrap();
    let r = cli(["plot".into(), dir.clone().into_os_string()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("line 7"), "{}", r.stderr);
    // Neither a sweep nor a run directory.
    let r = cli(["plot".into(), w.path("nothing").into_os_string()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a sweep directory"), "{}", r.stderr);
}

#[test]
fn kv_timeline_parses_exactly_and_sums_many_replicas() {
    let w = Workdir::new();
    let p = w.write("kv.csv", KV_FIXTURE);
    let rows = servesim::plot::read_kv_timeline(&p).unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows[4],
        servesim::plot::KvSample {
            time_s: 3.0,
            replica: 0,
            gpu_blocks_used: 300,
            host_blocks_used: 40,
            running: 8,
            waiting: 5,
            swapped: 2,
        }
    );
    // Two replicas: one series each.
    let s = servesim::plot::kv_series(&rows);
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].0, "replica 1");
    assert_eq!(s[1].1[1], (1.5, 80.0, 10.0));
    // Five replicas sampled at different instants: one summed step series, each replica
    // contributing its latest sample.
    let many = "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped
0,0,10,1,0,0,0
0,1,20,0,0,0,0
1,2,30,0,0,0,0
2,3,40,5,0,0,0
2,4,50,0,0,0,0
3,0,0,0,0,0,0
";
    let p = w.write("many.csv", many);
    let s = servesim::plot::kv_series(&servesim::plot::read_kv_timeline(&p).unwrap());
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, "all 5 replicas");
    assert_eq!(
        s[0].1,
        vec![
            (0.0, 30.0, 1.0),
            (1.0, 60.0, 1.0),
            (2.0, 150.0, 6.0),
            (3.0, 140.0, 5.0),
        ]
    );
    // The header must be exactly the agreed one.
    let p = w.write("bad.csv", "time,replica\n0,0\n");
    let e = servesim::plot::read_kv_timeline(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("time_s,replica"), "{e}");
}

/// `servesim plot` on a hand-written sweep directory: `sweep.csv` (`rows` under the header) and
/// each run's `requests.csv` holding `jcts` (for the CDF at the median rate).
fn plot_sweep_dir(rows: &str, jcts: &[&str]) -> (crate::support::CliResult, Workdir) {
    let w = Workdir::new();
    w.write(
        "sweep.csv",
        format!("run,policy,rate,seed,requests,jct_mean_s,jct_p99_s,per_token_mean_s,goodput,error\n{rows}"),
    );
    let mut req = String::from("id,jct_s\n");
    for (i, j) in jcts.iter().enumerate() {
        req.push_str(&format!("{i},{j}\n"));
    }
    for run in 0..rows.lines().count() {
        std::fs::create_dir_all(w.path(&format!("runs/{run}-vllm"))).unwrap();
        w.write(&format!("runs/{run}-vllm/requests.csv"), &req);
        // The count plot checks requests.csv against (sweep.csv's `requests` is that of the
        // rows under test).
        w.write(
            &format!("runs/{run}-vllm/summary.json"),
            format!("{{\"requests\": {}}}\n", jcts.len()),
        );
    }
    let r = cli(["plot".into(), w.dir.path().as_os_str().to_owned()]);
    (r, w)
}

/// `inf`, `NaN` and values beyond ±1e300 used to make plotters' log-axis key points loop
/// forever: they are left out of the plots, said once on stderr with the first position.
#[test]
fn plot_leaves_out_non_finite_sweep_values_and_says_so_once() {
    let (r, w) = plot_sweep_dir(
        "0,vllm,1,1,10,inf,NaN,0.1,0.5,\n1,vllm,-inf,1,10,1,2,0.1,0.5,\n2,vllm,2,1,10,1e308,3,0.2,0.5,\n3,vllm,3,1,10,2,4,-Infinity,inf,\n",
        &["inf", "1", "NaN", "2"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("warning: ")
            && r.stderr.contains("sweep.csv")
            && r.stderr.contains("left 6 value(s)")
            && r.stderr.contains("line 2, column `jct_mean_s`, `inf`"),
        "{}",
        r.stderr
    );
    for f in [
        "jct_mean_vs_rate",
        "jct_p99_vs_rate",
        "goodput_vs_rate",
        "jct_cdf",
    ] {
        assert!(w.path(&format!("plots/{f}.svg")).is_file(), "{f}");
    }
}

/// Zero and negative values on a log axis, all-equal values, and values spanning 1e-300..1e300
/// plot without hanging or panicking; values a log axis cannot show as written (at or below
/// or under 1e-6: drawn at its floor) get one warning line.
#[test]
fn plot_survives_degenerate_and_extreme_ranges() {
    let zero = "at or below zero or under 1e-6 at the bottom of their log axis";
    let tiny = zero;
    for (what, rows, jcts, warned) in [
        (
            "zero and negative on log axes",
            "0,vllm,1,1,10,0,-1,-5,0,\n1,vllm,2,1,10,0,0,0,-3,\n",
            &["0", "-1", "0"][..],
            &[zero][..],
        ),
        (
            "all equal",
            "0,vllm,7,1,10,3,3,3,1,\n1,vllm,7,2,10,3,3,3,1,\n",
            &["3", "3"][..],
            &[][..],
        ),
        (
            "1e-300..1e300",
            "0,vllm,1e-300,1,10,1e-300,1e-300,1e-300,1e-300,\n1,vllm,1e300,1,10,1e300,1e300,1e300,1e300,\n",
            &["1e-300", "1e300"][..],
            &[tiny][..],
        ),
        (
            "all equal and huge",
            "0,vllm,1e300,1,10,1e300,1e300,1e300,1e300,\n",
            &["1e300"][..],
            &[][..],
        ),
        (
            "all equal and tiny",
            "0,vllm,1e-300,1,10,1e-300,1e-300,1e-300,1e-300,\n",
            &["1e-300", "5e-324"][..],
            &[tiny][..],
        ),
    ] {
        let (r, w) = plot_sweep_dir(rows, jcts);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        assert_eq!(
            r.stderr.lines().count(),
            warned.len(),
            "{what}: {}",
            r.stderr
        );
        for (line, text) in r.stderr.lines().zip(warned) {
            assert!(
                line.starts_with("warning: ") && line.contains(text),
                "{what}: {line}"
            );
        }
        assert!(w.path("plots/jct_mean_vs_rate.png").is_file(), "{what}");
        assert!(w.path("plots/jct_cdf.png").is_file(), "{what}");
    }
    // The KV plot with every sample at one huge instant.
    let w = Workdir::new();
    w.write("summary.json", "{}");
    w.write(
        "kv_timeline.csv",
        "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped\n1e300,0,5,0,1,0,0\n1e300,1,18446744073709551615,0,1,0,0\n",
    );
    let r = cli(["plot".into(), w.dir.path().as_os_str().to_owned()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("plots/kv_usage.png").is_file());
    // Times from 0 to near f64::MAX (the axis end overflowed to inf and plotters looped
    // forever): an error naming the line.
    w.write(
        "kv_timeline.csv",
        "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped\n0,0,5,0,1,0,0\n1.75e308,0,7,0,1,0,0\n",
    );
    let r = cli(["plot".into(), w.dir.path().as_os_str().to_owned()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 3") && r.stderr.contains("≤ 1e300"),
        "{}",
        r.stderr
    );
}

/// The text of every `<text>` element of an SVG, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// A sweep directory with a `stable` column: vllm and fcfs at rates 1, 2, 3 (fcfs unstable at
/// 3), mean JCTs within one decade (9.3–12 s), every run's `requests.csv` holding `jct_s`.
fn one_decade_sweep() -> Workdir {
    let w = Workdir::new();
    let mut csv = String::from(
        "run,policy,rate,seed,requests,jct_mean_s,jct_p99_s,per_token_mean_s,stable,error\n",
    );
    let mut run = 0;
    for p in ["vllm", "fcfs"] {
        for (rate, jct) in [(1, 9.3), (2, 10.5), (3, 12.0)] {
            for seed in [0, 1] {
                let stable = !(p == "fcfs" && rate == 3);
                csv.push_str(&format!(
                    "{run},{p},{rate},{seed},3,{jct},{jct},0.05,{stable},\n"
                ));
                let dir = format!("runs/{run:04}-{p}-{rate}-{seed}");
                std::fs::create_dir_all(w.path(&dir)).unwrap();
                w.write(&format!("{dir}/requests.csv"), "id,jct_s\n0,1\n1,2\n2,5\n");
                run += 1;
            }
        }
    }
    w.write("sweep.csv", csv);
    w
}

/// Data within one decade still get labelled ticks on both axes (no `1000.0`-style labels),
/// the x ticks fall on the rates, a policy has one colour in every figure, and the JCT CDF is
/// drawn at the highest rate where every run is stable unless `--cdf-rate` says otherwise.
#[test]
fn plots_label_one_decade_axes_and_keep_policy_colours() {
    let w = one_decade_sweep();
    let r = cli(["plot".into(), w.dir.path().as_os_str().to_owned()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let svg = std::fs::read_to_string(w.path("plots/jct_mean_vs_rate.svg")).unwrap();
    let texts = svg_texts(&svg);
    let has = |t: &str| texts.iter().any(|x| x == t);
    // y: 7.4–15 s on a log axis gets linear ticks; x: the three rates.
    for t in ["8", "10", "12", "14", "1", "2", "3"] {
        assert!(has(t), "no tick label `{t}` in {texts:?}");
    }
    assert!(!texts.iter().any(|t| t.ends_with(".0")), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("seeds 0,1") && t.contains("min–max over 2 seeds")),
        "{texts:?}"
    );
    // vllm's fixed colour in the curves and in the CDF.
    let cdf = std::fs::read_to_string(w.path("plots/jct_cdf.svg")).unwrap();
    for s in [&svg, &cdf] {
        assert!(s.contains("#1F77B4"), "vllm's colour missing");
    }
    let cdf_texts = svg_texts(&cdf);
    assert!(
        cdf_texts
            .iter()
            .any(|t| t.starts_with("JCT CDF at 2 requests/s (the highest rate")),
        "{cdf_texts:?}"
    );
    // --cdf-rate picks another rate; a rate the sweep lacks is an error naming the rates.
    let r = cli([
        "plot".into(),
        w.dir.path().as_os_str().to_owned(),
        "--cdf-rate".into(),
        "3".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cdf = std::fs::read_to_string(w.path("plots/jct_cdf.svg")).unwrap();
    assert!(
        svg_texts(&cdf)
            .iter()
            .any(|t| t == "JCT CDF at 3 requests/s")
    );
    let r = cli([
        "plot".into(),
        w.dir.path().as_os_str().to_owned(),
        "--cdf-rate".into(),
        "2.5".into(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--cdf-rate 2.5") && r.stderr.contains("1, 2, 3"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

/// The KV plot draws no host panel when nothing was swapped out.
#[test]
fn kv_plot_has_no_host_panel_without_swapping() {
    let w = Workdir::new();
    w.write("summary.json", "{}");
    w.write(
        "kv_timeline.csv",
        "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped\n0,0,5,0,1,0,0\n1,0,9,0,1,0,0\n2,0,9,0,1,0,0\n",
    );
    let r = cli(["plot".into(), w.dir.path().as_os_str().to_owned()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let texts = svg_texts(&std::fs::read_to_string(w.path("plots/kv_usage.svg")).unwrap());
    assert!(
        texts.iter().any(|t| t == "GPU KV blocks in use"),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.contains("host")), "{texts:?}");
}
