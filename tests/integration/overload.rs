//! Overload and streaming: an arrival rate 100× the capacity stops early with the `[limits]
//! max_queue` error (exit 2, no output directory, bounded memory) for every policy, a stable
//! saturated run is not called overloaded, a bad overload window is a clear error, a trace of 10⁶
//! rows streams through [`TraceCsv`] in bounded memory and a 300k-column header is refused (peak
//! RSS measured in a child process on Linux).

use std::path::{Path, PathBuf};

use servesim::trace::{TraceCsv, scan_trace};

use crate::fuzz::{fuzz_dir, run_all};
use crate::support::{Workdir, cli};

/// Set in a child process started by [`in_child`]: run the measured body and print the peak.
const CHILD_ENV: &str = "SERVESIM_FUZZ_CHILD";

/// `(resident, peak resident)` kB of this process (Linux), from `/proc/self/status`.
fn rss_kb() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Run the test `name` (this module) again in a child process with `env`, where `body` runs alone;
/// return its peak resident memory above what it had before `body` (kB), when measurable.
fn in_child(name: &str, env: &[(&str, &Path)], body: impl FnOnce()) -> Option<u64> {
    if std::env::var_os(CHILD_ENV).is_some() {
        let before = rss_kb();
        body();
        if let (Some((rss0, _)), Some((_, hwm))) = (before, rss_kb()) {
            println!("peak-growth-kB={}", hwm.saturating_sub(rss0));
        }
        return None;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        &format!("overload::{name}"),
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("start the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child test failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
    // The harness prints `test NAME ... ` before the body's output, on the same line.
    let peak = stdout
        .split("peak-growth-kB=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    if cfg!(target_os = "linux") {
        assert!(peak.is_some(), "no peak memory reported: {stdout}");
    }
    peak
}

/// One replica, batch 1, constant cost 0.1 s per iteration and 1 output token: at most one request
/// per 0.1 s iteration, a capacity c ≤ 10 requests/s. Arrivals at 1000/s (≥ 100×), 10⁶ requests,
/// and `max_queue = 10000`: the queue passes 10⁴ after 10⁴ / (1000 − c) ≈ 10.0–10.1 s of
/// simulated time. The early overload check is off here (`overload_window_s = 0`) so that the
/// `max_queue` bound itself is tested.
const OVERLOAD: &str = r#"name = "overload"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "constant"
rate_per_s = 1000.0
num_requests = 1000000
input_lengths = { dist = "fixed", value = 4 }
output_lengths = { dist = "fixed", value = 1 }

[memory]
kv_capacity_blocks = 1000

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "fcfs"
max_batch_size = 1

[limits]
max_queue = 10000
overload_window_s = 0
"#;

#[test]
fn overload_stops_with_a_clear_error() {
    let peak = in_child("overload_stops_with_a_clear_error", &[], || {
        let w = Workdir::new();
        let scen = w.write("scenario.toml", OVERLOAD);
        let out = w.path("results/run");
        let t = std::time::Instant::now();
        let r = cli([
            "run".as_ref(),
            scen.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ]);
        let elapsed = t.elapsed();
        assert_eq!(r.code, 2, "stderr: {}", r.stderr);
        let e = r.stderr.trim_end();
        assert_eq!(e.lines().count(), 1, "{e}");
        for needle in [
            "error: ",
            "overloaded",
            "queue grew past 10000 unfinished requests",
            "limits.max_queue",
        ] {
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
        // The time of divergence: 10⁴ / (1000 − c) s with 0 ≤ c ≤ 10.
        let t_s: f64 = e
            .split("at t=")
            .nth(1)
            .and_then(|s| s.split('s').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no `at t=…s` in {e:?}"));
        assert!((9.95..=10.15).contains(&t_s), "diverged at t={t_s}s: {e}");
        assert!(!out.exists(), "an output directory was left behind");
        if let Ok(entries) = std::fs::read_dir(w.path("results")) {
            assert_eq!(entries.count(), 0, "a staging directory was left behind");
        }
        assert!(elapsed.as_secs_f64() < 10.0, "took {elapsed:?}");
    });
    if let Some(kb) = peak {
        eprintln!("overload run: peak memory grew by {kb} kB");
        // 10⁴ queued requests; materialising the 10⁶-request trace alone would take > 24 MB.
        assert!(kb < 16 * 1024, "peak memory grew by {kb} kB");
    }
}

/// Quickstart's model and batch limits with arrivals at 1000/s, about 100× what the replica serves,
/// and a `max_queue` of 2·10⁴ (reached after about 20 s of simulated time).
fn quickstart_overload(policy: &str) -> String {
    format!(
        r#"name = "overload"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = 1000.0
num_requests = 100000
input_lengths = {{ dist = "fixed", value = 200 }}
output_lengths = {{ dist = "fixed", value = 100 }}

[cost]
model = "analytic"

[scheduler]
policy = "{policy}"
max_batch_size = 16
max_batch_tokens = 2048

[limits]
max_queue = 20000
"#
    )
}

/// The end of the window that tripped the overload error `e` ("… (t=A s to B s) …"), in s.
fn detected_at_s(policy: &str, e: &str) -> f64 {
    e.split("s to ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{policy}: no `s to …s` in {e:?}"))
}

/// Every policy: an overloaded run ends with the overload error after a few seconds of simulated
/// time (three 1 s windows once the queue holds 10⁴ requests), long before `max_queue`; the
/// work is bounded by the simulated time the run covers, not by the trace.
#[test]
fn overload_is_detected_early_for_every_policy() {
    for policy in servesim::policy::policy_names() {
        let w = Workdir::new();
        let scen = w.write("scenario.toml", quickstart_overload(policy));
        let out = w.path("run");
        let r = cli([
            "run".as_ref(),
            scen.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ]);
        assert_eq!(r.code, 2, "{policy}: stderr: {}", r.stderr);
        let e = r.stderr.trim_end();
        assert_eq!(e.lines().count(), 1, "{policy}: {e}");
        for needle in [
            "error: overloaded: replica 0's queue grew from ",
            "output tok/s) against arrivals of ",
            "limits.overload_window_s",
        ] {
            assert!(e.contains(needle), "{policy}: {e:?} lacks {needle:?}");
        }
        // "… (t=A s to B s) …": the window that tripped it ends well before 20 s.
        let end_s = detected_at_s(policy, e);
        assert!(end_s < 20.0, "{policy}: detected at t={end_s}s: {e}");
        assert!(
            !out.exists(),
            "{policy}: an output directory was left behind"
        );
    }
}

/// Pipeline parallelism: a pipeline whose requests are all in micro-batches in flight (the KV
/// cache full) leaves its first stage idle, so the watch never saw it saturated (69 % busy at
/// 40× overload) and such runs went to their end (srpt: 100,000 requests in 27 s; round 9, 12).
/// Its busy time is now the time with a micro-batch in flight.
#[test]
fn overload_is_detected_early_under_pipeline_parallelism() {
    let lengths = crate::support::workspace_root().join("traces/sharegpt_vllm_opt.csv");
    for policy in servesim::policy::policy_names() {
        let w = Workdir::new();
        let text = format!(
            "name = \"overload\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\npp = 2\n\
             [trace]\narrival = \"poisson\"\nrate_per_s = 200.0\nnum_requests = 100000\n\
             lengths_file = \"{}\"\n[cost]\nmodel = \"analytic\"\n\
             [scheduler]\npolicy = \"{policy}\"\nmax_batch_size = 256\n",
            lengths.display()
        );
        let scen = w.write("scenario.toml", text);
        let r = cli([
            "run".as_ref(),
            scen.as_os_str(),
            "--out".as_ref(),
            w.path("run").as_os_str(),
            "--quiet".as_ref(),
            "--no-requests-csv".as_ref(),
        ]);
        assert_eq!(r.code, 2, "{policy}: stderr: {}", r.stderr);
        let e = r.stderr.trim_end();
        assert!(
            e.contains("error: overloaded: replica 0's queue grew from "),
            "{policy}: {e}"
        );
        let end_s = detected_at_s(policy, e);
        assert!(end_s < 120.0, "{policy}: detected at t={end_s}s: {e}");
    }
}

/// `run` of quickstart.toml with `policy`, `rate_per_s`, `num_requests` and `extra` text
/// appended, into `w/run` (`--quiet`).
fn run_quickstart(
    w: &Workdir,
    policy: &str,
    rate: &str,
    requests: &str,
    extra: &str,
) -> crate::support::CliResult {
    let root = crate::support::workspace_root();
    let text = std::fs::read_to_string(root.join("scenarios/quickstart.toml"))
        .unwrap()
        .replace("../traces/", &format!("{}/traces/", root.display()))
        .replace("rate_per_s = 1.0", &format!("rate_per_s = {rate}"))
        .replace("num_requests = 1000", &format!("num_requests = {requests}"))
        .replace("policy = \"vllm\"", &format!("policy = \"{policy}\""))
        + extra;
    let scen = w.write("scenario.toml", text);
    cli([
        "run".as_ref(),
        scen.as_os_str(),
        "--out".as_ref(),
        w.path("run").as_os_str(),
        "--quiet".as_ref(),
    ])
}

/// ALISE (speculative shortest-job-first with EWT swapping) slowly overloaded: quickstart's
/// ShareGPT lengths at 3 req/s, about twice what the replica serves, so the queue passes the 10⁴
/// floor only after about 7,000 s of simulated time (some 200,000 iterations). ALISE used to
/// re-rank and rescan the whole queue at every iteration (18 s at 5 req/s, minutes at 3 req/s);
/// its keyed ranking and resident-only offload make each iteration independent of the queue
/// length, so the run reaches the overload error quickly.
#[test]
fn a_slowly_overloaded_alise_run_ends_with_the_overload_error() {
    let w = Workdir::new();
    let out = w.path("run");
    let r = run_quickstart(&w, "alise", "3.0", "100000", "");
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    let e = r.stderr.trim_end();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("error: overloaded: replica 0's queue grew from ")
            && e.contains("lower the arrival rate"),
        "{e}"
    );
    assert!(!out.exists(), "an output directory was left behind");
}

/// SRPT on quickstart's ShareGPT lengths at 2.2 req/s, about 1.5× what the replica serves of
/// that mix: it completes short requests at nearly the arrival rate (about 1.1× fewer requests
/// than arrive per window, under the 1.25× request-count bound, so it used to run to the end of
/// any trace) while the long ones pile up; counted in output tokens it completes about two
/// thirds of the arriving work, and the check fires once the queue passes the floor (lowered
/// to 1,000 here).
#[test]
fn srpt_completing_short_requests_is_called_overloaded_by_its_work() {
    let w = Workdir::new();
    let out = w.path("run");
    let r = run_quickstart(
        &w,
        "srpt",
        "2.2",
        "30000",
        "\n[limits]\noverload_min_queue = 1000\n",
    );
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    let e = r.stderr.trim_end();
    assert!(
        e.starts_with("error: overloaded: replica 0's queue grew from ")
            && e.contains("output tok/s) against arrivals of"),
        "{e}"
    );
    // The requests served per second are within 1.25× of those arriving; the tokens are not.
    let nums: Vec<f64> = e
        .split("it served ")
        .nth(1)
        .unwrap()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    let (served, served_tok, offered, offered_tok) = (nums[0], nums[1], nums[2], nums[3]);
    assert!(offered < 1.25 * served, "{e}");
    assert!(offered_tok >= 1.25 * served_tok, "{e}");
    assert!(!out.exists(), "an output directory was left behind");
}

/// A burst is not an overload: 10,500 requests at t = 0, then one every second (about 70 % of
/// what quickstart's replica serves). The queue grows by 10⁴ in the first window and shrinks in
/// every later one; a rule that called any growth of `overload_min_queue` over saturated windows
/// an overload stopped this run at t = 531 s, though it drains and is stable.
#[test]
fn a_burst_that_drains_is_not_called_overloaded() {
    let w = Workdir::new();
    let mut trace = String::from("arrival_s,input_tokens,output_tokens\n");
    for i in 0..12_500u32 {
        let t = i.saturating_sub(10_500);
        let (input, output) = if i % 2 == 0 { (200, 100) } else { (40, 500) };
        trace.push_str(&format!("{t}.0,{input},{output}\n"));
    }
    let trace = w.write("burst.csv", trace);
    let root = crate::support::workspace_root();
    let out = w.path("run");
    let r = cli([
        "run".as_ref(),
        root.join("scenarios/quickstart.toml").as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(crate::support::read_summary(&out)["requests"], 12_500);
}

/// A busy but stable replica is never called overloaded, even with the most sensitive settings:
/// Poisson arrivals at 90 % of a 10 req/s capacity (batch 1, constant 0.1 s iterations, one
/// output token), a 0.1 s window and a floor of one request, over 20,000 requests.
#[test]
fn a_stable_saturated_run_is_not_called_overloaded() {
    let w = Workdir::new();
    let scen = w.write(
        "scenario.toml",
        OVERLOAD
            .replace("arrival = \"constant\"", "arrival = \"poisson\"")
            .replace("rate_per_s = 1000.0", "rate_per_s = 9.0")
            .replace("num_requests = 1000000", "num_requests = 20000")
            .replace(
                "overload_window_s = 0",
                "overload_window_s = 0.1\noverload_min_queue = 1",
            ),
    );
    let out = w.path("run");
    let r = cli([
        "run".as_ref(),
        scen.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    // The same scenario at 1.5× capacity is caught.
    let scen = w.write(
        "scenario.toml",
        std::fs::read_to_string(&scen)
            .unwrap()
            .replace("rate_per_s = 9.0", "rate_per_s = 15.0"),
    );
    let r = cli([
        "run".as_ref(),
        scen.as_os_str(),
        "--out".as_ref(),
        w.path("run2").as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("overloaded: replica 0's queue grew"),
        "{}",
        r.stderr
    );
}

/// `overload_window_s` must be a finite number ≥ 0.
#[test]
fn a_bad_overload_window_is_a_clear_error() {
    for bad in ["-1.0", "nan", "inf"] {
        let w = Workdir::new();
        let scen = w.write(
            "scenario.toml",
            OVERLOAD.replace(
                "overload_window_s = 0",
                &format!("overload_window_s = {bad}"),
            ),
        );
        let r = cli([
            "run".as_ref(),
            scen.as_os_str(),
            "--out".as_ref(),
            w.path("run").as_os_str(),
        ]);
        assert_eq!(r.code, 2, "{bad}: stderr: {}", r.stderr);
        assert!(
            r.stderr
                .contains("overload_window_s must be a finite number")
                && r.stderr.lines().count() == 1,
            "{bad}: {}",
            r.stderr
        );
    }
}

/// Write a canonical trace of `rows` rows (streamed, never held in memory).
fn write_big_trace(path: &Path, rows: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create trace"));
    writeln!(f, "arrival_s,input_tokens,output_tokens").unwrap();
    for i in 0..rows {
        writeln!(
            f,
            "{}.{:06},{},{}",
            i / 1000,
            (i % 1000) * 1000,
            1 + i % 997,
            1 + i % 13
        )
        .unwrap();
    }
    f.flush().unwrap();
}

#[test]
fn million_row_trace_streams() {
    const ROWS: u64 = 1_000_000;
    const ENV: &str = "SERVESIM_FUZZ_BIG_TRACE";
    let w = Workdir::new();
    let path = match std::env::var_os(ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = w.path("big.csv");
            write_big_trace(&p, ROWS);
            p
        }
    };
    let file_kb = std::fs::metadata(&path).unwrap().len() / 1024;
    let peak = in_child("million_row_trace_streams", &[(ENV, &path)], || {
        let t = std::time::Instant::now();
        let (mut n, mut tokens, mut last) = (0u64, 0u64, 0u64);
        for r in TraceCsv::open(&path, None, None).expect("open") {
            let r = r.expect("valid row");
            assert_eq!(r.id, n);
            assert!(r.arrival_ns >= last);
            last = r.arrival_ns;
            tokens += r.input_tokens as u64 + r.output_tokens as u64;
            n += 1;
        }
        assert_eq!(n, ROWS);
        let want: u64 = (0..ROWS).map(|i| 2 + i % 997 + i % 13).sum();
        assert_eq!(tokens, want);
        assert_eq!(last, (ROWS - 1) * 1_000_000);
        assert!(t.elapsed().as_secs_f64() < 20.0, "took {:?}", t.elapsed());
    });
    if let Some(kb) = peak {
        eprintln!("{ROWS}-row trace ({file_kb} kB): peak memory grew by {kb} kB");
        assert!(
            kb < 4 * 1024 && kb < file_kb / 4,
            "reading a {file_kb} kB trace grew the peak memory by {kb} kB"
        );
    }
}

/// A header with 300,000 columns (generated here: too big to commit) used to hang the duplicate
/// check (quadratic in the columns); every CSV reader now refuses it with the bound, and a
/// duplicate among many columns is still found.
#[test]
fn header_with_300k_columns_is_refused() {
    let w = fuzz_dir();
    let mut header = String::from("arrival_s,input_tokens,output_tokens");
    for i in 3..300_000 {
        header.push_str(&format!(",c{i}"));
    }
    let bytes = format!("{header}\n").into_bytes();
    let path = w.write("wide.csv", &bytes);
    for (reader, r) in run_all(w.dir.path(), &path, &bytes) {
        if reader.starts_with("import sharegpt")
            || reader.starts_with("import alpaca")
            || reader == "scenario"
        {
            continue;
        }
        let e = r.expect_err(reader);
        assert!(
            e.contains("300000 columns; at most 4096 are accepted"),
            "{reader}: {e}"
        );
        assert!(e.len() < 400, "{reader}: overlong error {e}");
    }
    // Under the bound, a duplicate is still found and named.
    let mut header = String::from("arrival_s,input_tokens,output_tokens");
    for i in 3..4000 {
        header.push_str(&format!(",c{i}"));
    }
    header.push_str(",c17\n");
    let path = w.write("dup.csv", &header);
    let e = scan_trace(&path).unwrap_err().to_string();
    assert!(e.contains("c17") && e.contains("appears twice"), "{e}");
}
