//! Live mode on the CPU: the wall-clock driver with the mock executor (sleeps the cost model's
//! durations, scaled so a run takes milliseconds) against the simulator on the same scenario;
//! iterations.csv; the stop flag's partial marker; `live` without `--mock`; `compare`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use servesim::live::{ExecutorKind, LiveOptions, run_live, write_live};
use servesim::scenario::{Overrides, load};

use crate::support::{Workdir, cli, parse_ns};

const SCENARIO: &str = r#"name = "live-tiny"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
kv_capacity_blocks = 1000

[cost]
model = "constant"
iteration_s = 0.01

[scheduler]
policy = "fcfs"
"#;

/// Constant 10 ms iterations in four busy periods separated by idle gaps (0–0.04 s, 0.10–0.16 s,
/// 0.25–0.32 s, 0.40–0.43 s), so a live run's lag never builds up over more than a few
/// iterations; every arrival into a busy replica comes 6–7 ms after an iteration boundary of the
/// simulated schedule, so a lag shorter than that (timer noise) cannot change a scheduling
/// decision.
const TRACE: &str = "arrival_s,input_tokens,output_tokens\n0,8,4\n0.006,8,3\n0.100,8,5\n0.106,8,2\n0.127,8,3\n0.250,8,4\n0.256,16,6\n0.400,8,3\n";

/// Wall seconds per scenario second for the timing checks: real time (~0.43 s), so that
/// scheduler noise on a loaded machine is not magnified.
const SCALE: &str = "1";

/// Wall-clock runs: one at a time (they would otherwise disturb each other's timing), and a
/// timing check gets up to this many attempts, with growing pauses between them (a loaded
/// machine — e.g. a parallel sweep test beside this one — can stall a sleeping thread for
/// milliseconds; noise only ever makes a live run late, never early).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const ATTEMPTS: usize = 8;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `check` up to [`ATTEMPTS`] times; fail with the last error.
fn retry(mut check: impl FnMut() -> Result<(), String>) {
    let mut last = String::new();
    for i in 0..ATTEMPTS {
        match check() {
            Ok(()) => return,
            Err(e) => {
                eprintln!("attempt {i}: {e}");
                last = e;
                // Let a burst of load from the tests running beside this one pass.
                std::thread::sleep(std::time::Duration::from_millis(250 << i.min(3)));
            }
        }
    }
    panic!("{ATTEMPTS} attempts failed; last: {last}");
}

fn setup() -> Workdir {
    let w = Workdir::new();
    w.write("scenario.toml", SCENARIO);
    w.write("trace.csv", TRACE);
    w
}

fn run_sim(w: &Workdir) {
    let r = cli([
        "run".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("sim").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "run failed: {}", r.stderr);
}

fn run_mock(w: &Workdir) -> f64 {
    run_mock_scaled(w, SCALE)
}

fn run_mock_scaled(w: &Workdir, scale: &str) -> f64 {
    let started = std::time::Instant::now();
    let r = cli([
        "live".into(),
        w.path("scenario.toml").into_os_string(),
        "--mock".into(),
        "--time-scale".into(),
        scale.into(),
        "--out".into(),
        w.path("live").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "live failed: {}", r.stderr);
    started.elapsed().as_secs_f64()
}

/// `(id, first_token_ns, finish_ns)` rows of a run directory's requests.csv.
fn rows(dir: &std::path::Path) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(dir.join("requests.csv")).expect("read requests.csv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), parse_ns(f[4]), parse_ns(f[5]))
        })
        .collect()
}

fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Compare live with the simulated rows: same ids, same completion order, timings within
/// `TOL_NS` of scenario time (never earlier).
fn check_against_sim(sim: &[(u64, u64, u64)], live: &[(u64, u64, u64)]) -> Result<(), String> {
    const TOL_NS: u64 = 8_000_000;
    if live.len() != sim.len() {
        return Err(format!("{} of {} requests finished", live.len(), sim.len()));
    }
    let mut lo: Vec<(u64, u64)> = live.iter().map(|r| (r.2, r.0)).collect();
    lo.sort();
    for w in lo.windows(2) {
        let (a, b) = (w[0].1 as usize, w[1].1 as usize);
        // Ties in the simulator may come in any order live.
        if sim[a].2 > sim[b].2 {
            return Err(format!(
                "live finished {a} before {b}; the simulator did not"
            ));
        }
    }
    for (s, l) in sim.iter().zip(live) {
        if s.0 != l.0 {
            return Err(format!("ids differ: {} vs {}", s.0, l.0));
        }
        if l.1 < s.1 || l.2 < s.2 {
            return Err(format!(
                "request {}: live is earlier than the simulator",
                s.0
            ));
        }
        if l.1 - s.1 > TOL_NS || l.2 - s.2 > TOL_NS {
            return Err(format!(
                "request {}: simulated first token/finish {:?}, live {:?}",
                s.0,
                (s.1, s.2),
                (l.1, l.2)
            ));
        }
    }
    Ok(())
}

#[test]
fn mock_live_run_matches_the_simulator() {
    let _serial = serial();
    let w = setup();
    run_sim(&w);
    let sim = rows(&w.path("sim"));
    assert_eq!(sim.len(), 8);
    retry(|| {
        let wall = run_mock(&w);
        if wall >= 1.0 {
            return Err(format!("the mock live run took {wall} s"));
        }
        check_against_sim(&sim, &rows(&w.path("live")))
    });
    let live_summary = summary(&w.path("live"));
    assert_eq!(live_summary["partial"], false);
    assert!(!w.path("live/PARTIAL").exists());
    assert_eq!(live_summary["requests"], 8, "every request finishes");
    assert_eq!(
        live_summary["iterations"],
        summary(&w.path("sim"))["iterations"]
    );
    for f in ["config.json", "replicas.csv", "iterations.csv"] {
        assert!(w.path("live").join(f).exists(), "{f} is missing");
    }
}

#[test]
fn iterations_csv_has_one_row_per_iteration() {
    let _serial = serial();
    let w = setup();
    // Twice as fast as real time: ~0.2 s.
    let wall = run_mock_scaled(&w, "0.5");
    assert!(wall < 1.0, "the mock live run took {wall} s");
    let text = std::fs::read_to_string(w.path("live/iterations.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        servesim::live::ITERATIONS_HEADER,
        "header"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let iterations = summary(&w.path("live"))["iterations"].as_u64().unwrap();
    assert_eq!(rows.len() as u64, iterations);
    let mut prefill_tokens = 0;
    let mut last_end = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], i.to_string());
        let (start, end, dur) = (parse_ns(&r[2]), parse_ns(&r[3]), parse_ns(&r[4]));
        assert!(start >= last_end, "iterations overlap at row {i}");
        assert_eq!(end - start, dur);
        // The mock sleeps 10 ms × 0.5 and reports wall / 0.5: never less than 10 ms.
        assert!(dur >= 10_000_000, "iteration {i} measured {dur} ns");
        let batch: u64 = r[5].parse::<u64>().unwrap() + r[7].parse::<u64>().unwrap();
        assert!(batch >= 1);
        prefill_tokens += r[6].parse::<u64>().unwrap();
        last_end = end;
    }
    // Every prompt is prefilled exactly once (no preemption here).
    assert_eq!(prefill_tokens, 7 * 8 + 16);
}

#[test]
fn stop_flag_flushes_partial_results() {
    let _serial = serial();
    let w = setup();
    let resolved = load(&w.path("scenario.toml"))
        .unwrap()
        .resolve(&Overrides::default())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = LiveOptions {
        executor: ExecutorKind::Mock,
        threads: None,
        // Real time: the run would take ~0.43 s; stop it after 60 ms.
        time_scale: 1.0,
        stop: stop.clone(),
    };
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(60));
            stop.store(true, Ordering::SeqCst);
        })
    };
    let out = run_live(&resolved, &opts).unwrap();
    stopper.join().unwrap();
    assert!(out.partial, "the stop flag must mark the run partial");
    assert!(out.run.summary.requests < 8, "{}", out.run.summary.requests);
    let dir = write_live(
        servesim::output::StagedDir::new(&w.path("partial"), &Default::default()).unwrap(),
        &out,
        &servesim::run::config_json(&resolved),
        &opts,
    )
    .unwrap();
    assert!(dir.join("PARTIAL").exists());
    let s = summary(&dir);
    assert_eq!(s["partial"], true);
    assert_eq!(s["live"]["partial"], true);
    let n = std::fs::read_to_string(dir.join("requests.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(n as u64, out.run.summary.requests);
}

#[test]
fn live_without_mock_exits_2() {
    let w = setup();
    let r = cli([
        "live".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("live").into_os_string(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("live GPU executor not built")
            && r.stderr.contains("no CUDA driver found")
            && r.stderr.contains("--mock"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!w.path("live").exists());
}

#[test]
fn compare_sim_with_mock_live_gives_small_errors() {
    let _serial = serial();
    let w = setup();
    run_sim(&w);
    retry(|| {
        run_mock(&w);
        let r = cli([
            "compare".into(),
            w.path("sim").into_os_string(),
            w.path("live").into_os_string(),
        ]);
        assert_eq!(r.code, 0, "compare failed: {}", r.stderr);
        assert!(r.stdout.contains("jct_s"), "{}", r.stdout);
        let text = std::fs::read_to_string(w.path("live/compare.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "metric,stat,sim,live,abs_error,rel_error"
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let keys: Vec<String> = rows.iter().map(|r| format!("{}:{}", r[0], r[1])).collect();
        for m in ["jct_s", "ttft_s", "tpot_s"] {
            for s in ["mean", "p50", "p99"] {
                assert!(
                    keys.contains(&format!("{m}:{s}")),
                    "{m}:{s} missing: {keys:?}"
                );
            }
        }
        assert!(keys.contains(&"iteration_s:mean".to_string()));
        for r in &rows {
            let rel: f64 = r[5].parse().unwrap();
            // Means within 5 %; tails (p99 of 8 requests is nearly the max) and TTFT (~12 ms,
            // the smallest quantity) within 25 %. Live is late, never early, except where noise
            // moves a decision.
            let bound = if r[1] == "mean" { 0.05 } else { 0.25 };
            if !(-0.05..bound).contains(&rel) {
                return Err(format!("{}:{} error {rel}", r[0], r[1]));
            }
        }
        Ok(())
    });
}

/// `compare` checks what it is given: a sim run first and a live run second (swapped arguments
/// are named as such), runs of the same scenario (the differing field named), a strictly parsed
/// iterations.csv (file, line and column in the error), and no partial run unless
/// `--allow-partial` (then the output says so).
// Long on purpose: one case per way a pair of run directories can be wrong, on one fixture.
#[test]
fn compare_refuses_swapped_mismatched_garbage_and_partial_dirs() {
    let _serial = serial();
    let w = setup();
    run_sim(&w);
    run_mock_scaled(&w, "0.01");
    let compare = |a: &str, b: &str, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "compare".into(),
            w.path(a).into_os_string(),
            w.path(b).into_os_string(),
            "--out".into(),
            w.path("compare.csv").into_os_string(),
        ];
        args.extend(extra.iter().map(|s| s.into()));
        cli(args)
    };
    let fails = |a: &str, b: &str, words: &[&str]| {
        let r = compare(a, b, &[]);
        assert_eq!(r.code, 2, "{a} {b}: {}", r.stdout);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        for word in words {
            assert!(r.stderr.contains(word), "{a} {b}: {word}: {}", r.stderr);
        }
    };
    let copy = |from: &str, to: &str| {
        std::fs::create_dir_all(w.path(to)).unwrap();
        for e in std::fs::read_dir(w.path(from)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), w.path(to).join(e.file_name())).unwrap();
        }
    };
    assert_eq!(compare("sim", "live", &[]).code, 0);
    fails("live", "sim", &["swapped", "SIM_DIR first"]);
    fails("sim", "sim", &["not a live run"]);
    fails("live", "live", &["is a live run"]);
    // A run of another seed.
    let r = cli([
        "run".into(),
        w.path("scenario.toml").into_os_string(),
        "--seed".into(),
        "7".into(),
        "--out".into(),
        w.path("sim7").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    fails(
        "sim7",
        "live",
        &["different scenarios", "`seed` is 7", "but 0"],
    );
    // Garbage in iterations.csv.
    copy("live", "live_bad");
    let path = w.path("live_bad/iterations.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let unmutated = lines.clone();
    lines[2] = "1,0,0.5,0.25,x,1,8,0,0,1,,".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    fails(
        "sim",
        "live_bad",
        &["iterations.csv:3: field `duration_s`", "`x`"],
    );
    // A repeated row, a duration that is not end − start, a batch size that is not the sum
    // (each was accepted: the means compared would have moved silently).
    let good = unmutated;
    let with_cell = |row: usize, col: usize, v: &str| {
        let mut lines = good.clone();
        let mut cells: Vec<String> = lines[row].split(',').map(String::from).collect();
        cells[col] = v.into();
        lines[row] = cells.join(",");
        lines
    };
    let mut repeated = good.clone();
    repeated.insert(2, good[1].clone());
    let bad_rows = [
        (repeated, "iterations.csv:3: field `iteration`"),
        (
            with_cell(1, 4, "7.5"),
            "iterations.csv:2: field `duration_s`",
        ),
        (with_cell(1, 9, "99"), "iterations.csv:2: field `requests`"),
    ];
    for (rows, words) in bad_rows {
        std::fs::write(&path, rows.join("\n") + "\n").unwrap();
        fails("sim", "live_bad", &[words]);
    }
    std::fs::write(&path, "iteration,replica\n0,0\n").unwrap();
    fails("sim", "live_bad", &["iterations.csv:1: field `header`"]);
    // A ttft_s that is not first_token_s − arrival_s (it moved the TTFT comparison silently).
    copy("live", "live_ttft");
    let path = w.path("live_ttft/requests.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let k = header.iter().position(|h| *h == "ttft_s").unwrap();
    let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
    cells[k] = "9.5".into();
    lines[1] = cells.join(",");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    fails(
        "sim",
        "live_ttft",
        &[
            "requests.csv:2: field `ttft_s`",
            "first_token_s − arrival_s",
        ],
    );
    // Without the columns those checks read, it was not checked at all (round 12, 10).
    let k = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == "finish_s")
        .unwrap();
    let dropped: Vec<String> = text
        .lines()
        .map(|l| {
            let mut c: Vec<&str> = l.split(',').collect();
            c.remove(k);
            c.join(",")
        })
        .collect();
    std::fs::write(&path, dropped.join("\n") + "\n").unwrap();
    fails(
        "sim",
        "live_ttft",
        &["requests.csv", "no `finish_s` column"],
    );
    // A requests.csv of NUL bytes (a sparse file) fails at its first byte (it was read whole:
    // /dev/zero took 17.8 s and 4.2 GB).
    copy("live", "live_nul");
    std::fs::write(w.path("live_nul/requests.csv"), vec![0u8; 1 << 16]).unwrap();
    fails("sim", "live_nul", &["requests.csv", "NUL byte at offset 0"]);
    // A partial live run.
    copy("live", "live_partial");
    std::fs::write(w.path("live_partial/PARTIAL"), "stopped\n").unwrap();
    fails("sim", "live_partial", &["partial run", "--allow-partial"]);
    let r = compare("sim", "live_partial", &["--allow-partial"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("PARTIAL:"), "{}", r.stdout);
}

/// At `--time-scale 1e-6` every wall microsecond of the driver's own work is a scenario second:
/// quickstart at 1000 req/s passed `[limits] max_sim_s` with an error that blamed the scenario
/// ("overloaded or too long"); the error now says the driver ran behind its scaled schedule and
/// to raise `--time-scale`. The limit here, 3000 s, is 4× the run's simulated makespan (713 s):
/// only the driver's lag (about 17,600 s of it, i.e. 18 ms of wall time) takes it past.
#[test]
fn a_time_scale_too_small_for_the_driver_is_named_as_the_cause() {
    let _guard = serial();
    let w = Workdir::new();
    let root = crate::support::workspace_root();
    let sc = w.write(
        "s.toml",
        std::fs::read_to_string(root.join("scenarios/quickstart.toml"))
            .unwrap()
            .replace("../traces/", &format!("{}/traces/", root.display()))
            + "\n[limits]\nmax_sim_s = 3000.0\n",
    );
    let r = cli([
        "live".into(),
        sc.into_os_string(),
        "--mock".into(),
        "--time-scale".into(),
        "1e-6".into(),
        "--rate".into(),
        "1000".into(),
        "--out".into(),
        w.path("live").into_os_string(),
        "--quiet".into(),
    ]);
    crate::cli::assert_user_error(
        &w,
        &r,
        &[
            "[limits] max_sim_s = 3000 s",
            "likely because events ran",
            "behind their scenario times",
            "use a larger --time-scale",
        ],
    );
}

/// Two requests 1e5 s apart: a live run collects no KV timeline (it writes no
/// `kv_timeline.csv`; at the default 1 s interval it kept 1e5 samples per replica, 166 MB for
/// 2.5e7 s); and with `[limits] max_sim_s` under the second arrival, the error says the trace is
/// longer than the limit, not that the driver's lag likely caused it (no lag moves an arrival).
#[test]
fn live_keeps_no_kv_timeline_and_a_trace_past_the_limit_is_not_blamed_on_lag() {
    let _serial = serial();
    let w = Workdir::new();
    w.write(
        "trace.csv",
        "arrival_s,input_tokens,output_tokens\n0,10,10\n100000,10,10\n",
    );
    let sc = w.write("s.toml", SCENARIO);
    let resolved = load(&sc).unwrap().resolve(&Overrides::default()).unwrap();
    assert!(resolved.kv_timeline_interval_ns > 0);
    let opts = LiveOptions {
        executor: ExecutorKind::Mock,
        threads: None,
        time_scale: 1e-6,
        stop: Arc::default(),
    };
    let out = run_live(&resolved, &opts).unwrap();
    assert_eq!(out.run.summary.requests, 2);
    assert!(out.run.kv_timeline.is_none());
    let short = w.write(
        "short.toml",
        format!("{SCENARIO}\n[limits]\nmax_sim_s = 50000.0\n"),
    );
    let r = cli([
        "live".into(),
        short.into_os_string(),
        "--mock".into(),
        "--time-scale".into(),
        "1e-6".into(),
        "--out".into(),
        w.path("live").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("the trace is longer than the limit")
            && !r.stderr.contains("likely because"),
        "{}",
        r.stderr
    );
}

/// `compare` judges the configurations each run recorded, not their spelling: the same trace
/// file spelt `trace.csv` and `../trace.csv` (from another scenario directory) is the same trace
/// (it was refused as "different scenarios"), while another `max_batch_size` is refused naming
/// `resolved.limits.max_batch_size` (it was compared); a requests.csv cut short of the
/// requests its summary.json counts is refused with both counts, and a `jct_s` that is not
/// `finish_s − arrival_s` with its file, line and column (both were compared silently).
#[test]
fn compare_checks_resolved_configs_row_counts_and_jcts_not_trace_spelling() {
    let _serial = serial();
    let w = setup();
    run_sim(&w);
    std::fs::create_dir(w.path("sub")).unwrap();
    let other = SCENARIO.replace("file = \"trace.csv\"", "file = \"../trace.csv\"");
    let live = |name: &str, scenario: &str| {
        let sc = w.write(&format!("sub/{name}.toml"), scenario);
        let r = cli([
            "live".into(),
            sc.into_os_string(),
            "--mock".into(),
            "--time-scale".into(),
            "0.01".into(),
            "--out".into(),
            w.path(name).into_os_string(),
            "--quiet".into(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    let compare = |b: &str| {
        cli([
            "compare".into(),
            w.path("sim").into_os_string(),
            w.path(b).into_os_string(),
            "--out".into(),
            w.path("compare.csv").into_os_string(),
        ])
    };
    live("live", &other);
    let r = compare("live");
    assert_eq!(r.code, 0, "{}", r.stderr);
    live("live_b4", &format!("{other}max_batch_size = 4\n"));
    let r = compare("live_b4");
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("different configurations: `resolved.limits.max_batch_size` is 4")
            || r.stderr
                .contains("`resolved.limits.max_batch_size` is 256 in"),
        "{}",
        r.stderr
    );
    // requests.csv cut to 3 of its 8 rows.
    let path = w.path("live/requests.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..4].join("\n") + "\n").unwrap();
    let r = compare("live");
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("requests.csv: holds 3 requests but")
            && r.stderr.contains("summary.json counts 8"),
        "{}",
        r.stderr
    );
    // One jct_s of 1e300.
    let mut cells: Vec<String> = lines[2].split(',').map(String::from).collect();
    cells[6] = "1e300".into();
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[2] = cells.join(",");
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let r = compare("live");
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("requests.csv:3: field `jct_s`: `1e300` is not finish_s − arrival_s"),
        "{}",
        r.stderr
    );
    ragged_rows_and_fractional_counts(&w, &lines, &compare);
    times_and_iteration_counts(&w, &lines, &compare);
}

/// Round 10: a row with a `jct_s` whose `arrival_s` is empty skipped the jct check (a mean JCT
/// moved by 400 %), a finish before the arrival with a consistent negative `jct_s` was
/// compared, and an `iterations.csv` cut short (or header only) was compared as the run (its
/// `batch_s` error went from 293 % to 0.19 %). `lines`: the live run's requests.csv as written.
fn times_and_iteration_counts(
    w: &Workdir,
    lines: &[&str],
    compare: &dyn Fn(&str) -> crate::support::CliResult,
) {
    let spath = w.path("live/summary.json");
    let summary = std::fs::read_to_string(&spath).unwrap();
    std::fs::write(
        &spath,
        summary.replace("\"requests\": 8.0,", "\"requests\": 8,"),
    )
    .unwrap();
    let path = w.path("live/requests.csv");
    let edit = |f: &dyn Fn(&mut Vec<String>)| {
        let mut cells: Vec<String> = lines[2].split(',').map(String::from).collect();
        f(&mut cells);
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[2] = cells.join(",");
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        compare("live")
    };
    let r = edit(&|c| {
        c[1] = String::new();
        c[6] = "500".into();
    });
    assert_eq!(r.code, 2, "{}", r.stdout);
    let want = "requests.csv:3: field `arrival_s`: empty in a row with a jct_s";
    assert!(r.stderr.contains(want), "{}", r.stderr);
    let r = edit(&|c| {
        let finish: f64 = c[5].parse().unwrap();
        c[1] = format!("{}", finish + 1000.0);
        c[6] = "-1000".into();
    });
    assert_eq!(r.code, 2, "{}", r.stdout);
    let want = "requests.csv:3: field `finish_s`: ";
    assert!(
        r.stderr.contains(want) && r.stderr.contains("is before arrival_s"),
        "{}",
        r.stderr
    );
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert_eq!(compare("live").code, 0);
    let ipath = w.path("live/iterations.csv");
    let iters = std::fs::read_to_string(&ipath).unwrap();
    let n = iters.lines().count() - 1;
    let head: Vec<&str> = iters.lines().take(3).collect();
    std::fs::write(&ipath, head.join("\n") + "\n").unwrap();
    let r = compare("live");
    assert_eq!(r.code, 2, "{}", r.stdout);
    let want = "iterations.csv: holds 2 iterations but";
    assert!(
        r.stderr.contains(want) && r.stderr.contains(&format!("summary.json counts {n}")),
        "{}",
        r.stderr
    );
}

/// A requests.csv row with one field too many: servesim's FILE:LINE form, not the csv crate's
/// "record 1 (line: 2, byte: …)"; and a summary count of `8.0` skipped the row-count check
/// (round 9, 07). `lines`: the live run's requests.csv as written.
fn ragged_rows_and_fractional_counts(
    w: &Workdir,
    lines: &[&str],
    compare: &dyn Fn(&str) -> crate::support::CliResult,
) {
    let path = w.path("live/requests.csv");
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[2] = lines[2].to_string() + ",extra";
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let r = compare("live");
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("requests.csv:3: field `(row)`: row has") && !r.stderr.contains("byte:"),
        "{}",
        r.stderr
    );
    std::fs::write(&path, lines[..4].join("\n") + "\n").unwrap();
    let spath = w.path("live/summary.json");
    let summary = std::fs::read_to_string(&spath).unwrap();
    std::fs::write(
        &spath,
        summary.replace("\"requests\": 8,", "\"requests\": 8.0,"),
    )
    .unwrap();
    let r = compare("live");
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("summary.json: `requests` must be the run's number of requests (a whole number), got 8.0"),
        "{}",
        r.stderr
    );
}
