//! Ctrl-C (SIGINT) and SIGTERM during `servesim run` and `servesim sweep`, sent to a real process:
//! `run` leaves a complete output directory marked partial (`summary.json` `"partial": true` and a
//! `PARTIAL` file, as live mode does), `sweep` leaves nothing; both exit 130 (SIGTERM: 143), and
//! neither leaves a staging directory or lock behind. A sweep killed outright (SIGKILL) leaves its
//! staging directory and lock, which the next command writing the same output removes.
//!
//! The `servesim` executable lives in another package of the workspace, so cargo gives this test
//! binary no `CARGO_BIN_EXE_servesim`, and a `target/*/servesim` next to it may be stale (`cargo
//! test` does not rebuild it). So the process is this test binary re-run with the test's own name
//! and [`CHILD_ENV`] set, where the test body is exactly the `servesim` binary's `main`:
//! `servesim::cli::main_with_args` on the given arguments, then `exit` with its code.
#![cfg(unix)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Workdir, read_requests, read_summary};

/// Set in the child process: the `servesim` arguments, separated by U+001F.
const CHILD_ENV: &str = "SERVESIM_INTERRUPT_CHILD_ARGS";

/// In the child process, run `servesim ARGS…` and exit with its status; in the parent, return.
fn be_servesim_if_child() {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        let args = args.to_string_lossy().into_owned();
        let mut argv: Vec<std::ffi::OsString> = vec!["servesim".into()];
        argv.extend(args.split('\u{1f}').map(Into::into));
        let code = servesim::cli::main_with_args(
            argv,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
        std::process::exit(code);
    }
}

/// Start `servesim ARGS…` as a child process (see the module doc) in `w`.
fn spawn_servesim(test: &str, w: &Workdir, args: &[&str]) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            &format!("interrupt::{test}"),
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, args.join("\u{1f}"))
        .current_dir(w.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the servesim child process")
}

/// Whether process `pid` catches SIGINT (Linux: bit 1 of `SigCgt` in `/proc/PID/status`); `None`
/// where that cannot be read.
fn catches_sigint(pid: u32) -> Option<bool> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim();
    Some(u64::from_str_radix(mask, 16).ok()? & (1 << 1) != 0)
}

/// Wait until the child has installed its Ctrl-C handler (polling `/proc`, or 2 s where it is
/// unavailable), let it simulate for `run_for`, then send SIGINT and wait (≤ 60 s) for it to
/// exit. Returns (exit code, stderr).
fn interrupt(child: Child, run_for: Duration) -> (Option<i32>, String) {
    send_signal(child, run_for, "INT")
}

/// [`interrupt`] with the signal `sig` (a `kill -SIG` name: `INT`, `TERM`).
fn send_signal(mut child: Child, run_for: Duration, sig: &str) -> (Option<i32>, String) {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match catches_sigint(pid) {
            Some(true) => break,
            None => {
                std::thread::sleep(Duration::from_secs(2));
                break;
            }
            Some(false) => {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the child exited before installing its Ctrl-C handler"
                );
                assert!(Instant::now() < deadline, "no Ctrl-C handler after 30 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    std::thread::sleep(run_for);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the scenario finished before the interrupt: make it longer"
    );
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not stop within 60 s of SIG{sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal instead of exiting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ctrl-C the child after 300 ms; it must exit 130 saying `message`, leaving neither `out` nor
/// any staging entry next to it.
fn stopped_leaving_nothing(child: Child, message: &str, out: &Path) {
    let (code, stderr) = interrupt(child, Duration::from_millis(300));
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(stderr.contains(message), "stderr: {stderr}");
    assert!(!out.exists(), "{} was left behind", out.display());
    let parent = out.parent().expect("an output inside the work directory");
    assert_eq!(hidden_entries(parent), Vec::<String>::new());
}

/// A scenario that takes ~20 s uninterrupted (100,000 requests × 2,000 iterations, batch 1).
fn long_scenario(w: &Workdir, extra: &str) {
    let mut lengths = String::from("input_tokens,output_tokens\n");
    for _ in 0..10 {
        lengths.push_str("1,2000\n");
    }
    w.write("lengths.csv", lengths);
    w.write(
        "scenario.toml",
        format!(
            r#"name = "interrupt"
seed = 1
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = 0.45
lengths_file = "lengths.csv"
num_requests = 100000

[memory]
kv_capacity_blocks = 100000000

[cost]
model = "constant"
iteration_s = 0.001

[scheduler]
policy = "fcfs"
max_batch_size = 1
max_batch_tokens = 100000000
{extra}"#
        ),
    );
}

/// Names in `dir` that start with `.` (staging directories and files).
fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn ctrl_c_during_run_writes_a_complete_directory_marked_partial_and_exits_130() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    std::fs::create_dir(w.path("results")).unwrap();
    let child = spawn_servesim(
        "ctrl_c_during_run_writes_a_complete_directory_marked_partial_and_exits_130",
        &w,
        &["run", "scenario.toml", "--out", "results/run", "--quiet"],
    );
    let (code, stderr) = interrupt(child, Duration::from_millis(300));
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("interrupted: Ctrl-C stopped the run after"),
        "stderr: {stderr}"
    );
    let dir = w.path("results/run");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the output directory exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ".servesim-output",
            "PARTIAL",
            "config.json",
            "kv_timeline.csv",
            "replicas.csv",
            "requests.csv",
            "summary.json",
            "timing.json"
        ]
    );
    let summary = read_summary(&dir);
    assert_eq!(summary["partial"], true);
    let done = summary["requests"].as_u64().unwrap();
    assert!(
        done > 0 && done < 100_000,
        "the run was cut short after it started: {done} requests"
    );
    let rows = read_requests(&dir);
    assert_eq!(
        rows.len() as u64,
        done,
        "requests.csv holds every completed request"
    );
    assert!(
        rows.iter()
            .all(|r| r.output_tokens == 2000 && r.finish_ns > r.arrival_ns)
    );
    let partial = std::fs::read_to_string(dir.join("PARTIAL")).unwrap();
    assert!(
        partial.contains(&format!("{done} requests completed")),
        "{partial}"
    );
    assert_eq!(hidden_entries(&w.path("results")), Vec::<String>::new());
}

/// A rerun cut short replaced a complete earlier run in the same `--out` with its partial results
/// (adversarial round 6, case 18), and a run cut short replaced a complete sweep (round 8, case
/// 02); the complete output is now kept and nothing is written.
#[test]
fn ctrl_c_during_a_rerun_keeps_the_earlier_complete_run() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    let dir = w.path("run");
    let r = crate::support::cli([
        "run".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        dir.clone().into_os_string(),
        "--quiet".into(),
        "--num-requests".into(),
        "3".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = std::fs::read(dir.join("summary.json")).unwrap();
    let child = spawn_servesim(
        "ctrl_c_during_a_rerun_keeps_the_earlier_complete_run",
        &w,
        &["run", "scenario.toml", "--out", "run", "--quiet"],
    );
    let (code, stderr) = interrupt(child, Duration::from_millis(300));
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("holds an earlier complete servesim output, kept as it was"),
        "stderr: {stderr}"
    );
    assert_eq!(std::fs::read(dir.join("summary.json")).unwrap(), before);
    assert!(!dir.join("PARTIAL").exists());
    assert_eq!(hidden_entries(w.dir.path()), Vec::<String>::new());
    let r = crate::support::cli([
        "sweep".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("sw").into_os_string(),
        "--quiet".into(),
        "--no-plots".into(),
        "--num-requests".into(),
        "3".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = std::fs::read(w.path("sw/sweep.csv")).unwrap();
    let child = spawn_servesim(
        "ctrl_c_during_a_rerun_keeps_the_earlier_complete_run",
        &w,
        &["run", "scenario.toml", "--out", "sw", "--quiet"],
    );
    let (code, stderr) = interrupt(child, Duration::from_millis(300));
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(stderr.contains("kept as it was"), "stderr: {stderr}");
    assert_eq!(std::fs::read(w.path("sw/sweep.csv")).unwrap(), before);
    assert!(!w.path("sw/summary.json").exists());
}

#[test]
fn ctrl_c_during_sweep_writes_nothing_and_exits_130() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "\n[sweep]\nseed = [1, 2, 3]\n");
    std::fs::create_dir(w.path("results")).unwrap();
    let child = spawn_servesim(
        "ctrl_c_during_sweep_writes_nothing_and_exits_130",
        &w,
        &[
            "sweep",
            "scenario.toml",
            "--out",
            "results/sweep",
            "--jobs",
            "2",
        ],
    );
    stopped_leaving_nothing(
        child,
        "interrupted: Ctrl-C stopped the sweep",
        &w.path("results/sweep"),
    );
}

#[test]
fn sigterm_during_run_is_handled_like_ctrl_c_and_exits_143() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    std::fs::create_dir(w.path("results")).unwrap();
    let child = spawn_servesim(
        "sigterm_during_run_is_handled_like_ctrl_c_and_exits_143",
        &w,
        &["run", "scenario.toml", "--out", "results/run", "--quiet"],
    );
    let (code, stderr) = send_signal(child, Duration::from_millis(300), "TERM");
    assert_eq!(code, Some(143), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("interrupted: SIGTERM stopped the run after"),
        "stderr: {stderr}"
    );
    let dir = w.path("results/run");
    assert_eq!(read_summary(&dir)["partial"], true);
    assert!(dir.join("PARTIAL").is_file());
    assert_eq!(hidden_entries(&w.path("results")), Vec::<String>::new());
}

#[test]
fn a_killed_sweep_leaves_debris_that_the_next_sweep_to_the_same_output_removes() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "\n[sweep]\nseed = [1, 2]\n");
    std::fs::create_dir(w.path("results")).unwrap();
    let mut child = spawn_servesim(
        "a_killed_sweep_leaves_debris_that_the_next_sweep_to_the_same_output_removes",
        &w,
        &[
            "sweep",
            "scenario.toml",
            "--out",
            "results/sweep",
            "--jobs",
            "1",
        ],
    );
    // Wait until the sweep has claimed its output (lock and staging directory with its marker:
    // killed before the marker, the directory is not recognisably servesim's and is kept), then
    // SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = || {
        hidden_entries(&w.path("results")).iter().any(|e| {
            e.starts_with(".sweep.servesim-tmp-")
                && w.path("results").join(e).join(".servesim-output").is_file()
        })
    };
    while hidden_entries(&w.path("results")).len() < 2 || !staged() {
        assert!(
            Instant::now() < deadline,
            "the sweep never staged its output"
        );
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut debris = hidden_entries(&w.path("results"));
    debris.sort();
    assert_eq!(debris.len(), 2, "{debris:?}");
    assert!(debris[0].starts_with(".sweep.servesim-lock"), "{debris:?}");
    assert!(debris[1].starts_with(".sweep.servesim-tmp-"), "{debris:?}");
    // The next sweep to the same output (a short one) cleans up after the dead process.
    long_scenario(&w, "\n[sweep]\nseed = [1, 2]\n");
    let text = std::fs::read_to_string(w.path("scenario.toml"))
        .unwrap()
        .replace("num_requests = 100000", "num_requests = 3");
    w.write("scenario.toml", text);
    let r = crate::support::cli([
        "sweep".into(),
        w.path("scenario.toml").into_os_string(),
        "--out".into(),
        w.path("results/sweep").into_os_string(),
        "--no-plots".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("results/sweep/sweep.csv").is_file());
    assert_eq!(hidden_entries(&w.path("results")), Vec::<String>::new());
}

/// `trace synth --num 2⁶⁴−1` used to collect every row in memory before writing (until memory
/// ran out, with no Ctrl-C handler): rows now stream to a staged file (`--num` is at most 10⁹, a
/// run of many minutes), and Ctrl-C stops it with exit 130 and no output file nor temporary left
/// behind.
#[test]
fn ctrl_c_during_endless_trace_synth_leaves_no_file_and_exits_130() {
    be_servesim_if_child();
    let w = Workdir::new();
    std::fs::create_dir(w.path("out")).unwrap();
    let child = spawn_servesim(
        "ctrl_c_during_endless_trace_synth_leaves_no_file_and_exits_130",
        &w,
        &[
            "trace",
            "synth",
            "--num",
            "1000000000",
            "--rate",
            "10",
            "--input",
            "fixed:value=7",
            "--output",
            "fixed:value=3",
            "-o",
            "out/trace.csv",
        ],
    );
    let (code, stderr) = interrupt(child, Duration::from_millis(300));
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("interrupted: Ctrl-C stopped `trace synth` after"),
        "stderr: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(w.path("out")).unwrap().count(),
        0,
        "no output file nor temporary"
    );
}

/// `capacity` had no Ctrl-C handling (SIGINT killed it mid-probe): Ctrl-C now stops the probe
/// under way, skips the remaining probes, writes nothing and exits 130.
#[test]
fn ctrl_c_during_capacity_stops_its_probes_and_exits_130() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    let child = spawn_servesim(
        "ctrl_c_during_capacity_stops_its_probes_and_exits_130",
        &w,
        &[
            "capacity",
            "scenario.toml",
            "--slo",
            "per_token_s=0.1",
            "--seeds",
            "0",
            "--out",
            "cap",
        ],
    );
    stopped_leaving_nothing(
        child,
        "interrupted: Ctrl-C stopped `capacity`",
        &w.path("cap"),
    );
}

/// A live mock iteration scaled to hours used to sleep through SIGTERM and Ctrl-C (its wait did
/// not look at the flag); it now stops at once. Nothing had finished, so nothing is written and
/// the earlier live run in the same `--out` stays as it was (it used to be replaced by an empty
/// partial run).
#[test]
fn sigterm_cuts_a_long_live_mock_iteration_short() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    let earlier = crate::support::cli([
        "live",
        w.path("scenario.toml").to_str().unwrap(),
        "--mock",
        "--time-scale",
        "1e-6",
        "--num-requests",
        "3",
        "--out",
        w.path("lv").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(earlier.code, 0, "{}", earlier.stderr);
    let child = spawn_servesim(
        "sigterm_cuts_a_long_live_mock_iteration_short",
        &w,
        &[
            "live",
            "scenario.toml",
            "--mock",
            "--time-scale",
            "1e6",
            "--num-requests",
            "1",
            "--out",
            "lv",
            "--quiet",
        ],
    );
    let (code, stderr) = send_signal(child, Duration::from_millis(300), "TERM");
    assert_eq!(code, Some(143), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("before anything finished"),
        "stderr: {stderr}"
    );
    assert!(!w.path("lv/PARTIAL").exists(), "stderr: {stderr}");
    assert_eq!(read_summary(&w.path("lv"))["requests"], 3);
}

/// A trace that is a named pipe nobody writes to used to block its open through SIGTERM (the
/// first signal only raised the flag): the open now gives up on the signal, exit 143, nothing
/// left behind.
#[cfg(unix)]
#[test]
fn sigterm_ends_a_wait_for_a_named_pipe_trace() {
    be_servesim_if_child();
    let w = Workdir::new();
    long_scenario(&w, "");
    let fifo = w.path("trace.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo is not available");
        return;
    }
    std::fs::create_dir(w.path("results")).unwrap();
    let child = spawn_servesim(
        "sigterm_ends_a_wait_for_a_named_pipe_trace",
        &w,
        &[
            "run",
            "scenario.toml",
            "--trace",
            "trace.fifo",
            "--out",
            "results/run",
            "--quiet",
        ],
    );
    let (code, stderr) = send_signal(child, Duration::from_millis(300), "TERM");
    assert_eq!(code, Some(143), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("named pipe"),
        "stderr: {stderr}"
    );
    assert!(!w.path("results/run").exists());
    assert_eq!(hidden_entries(&w.path("results")), Vec::<String>::new());
}

/// `servesim calibrate` runs the `servesim-calibrate` binary: SIGTERM to servesim alone used to
/// kill only servesim, and the orphaned calibration wrote its profile afterwards. The signal is
/// now passed on: exit 143, no profile, ever.
#[test]
fn sigterm_to_calibrate_stops_the_calibration_too() {
    be_servesim_if_child();
    let w = Workdir::new();
    let child = spawn_servesim(
        "sigterm_to_calibrate_stops_the_calibration_too",
        &w,
        &[
            "calibrate",
            "run",
            "--device",
            "cpu",
            "--quick",
            "--model",
            "cpu-tiny-2x256",
            "--out",
            "prof",
        ],
    );
    let (code, stderr) = send_signal(child, Duration::from_millis(1500), "TERM");
    if stderr.contains("cargo build --release --workspace") {
        eprintln!("skipped: the servesim-calibrate binary is not built");
        return;
    }
    assert_eq!(code, Some(143), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("stopped the calibration"),
        "stderr: {stderr}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!w.path("prof").exists(), "stderr: {stderr}");
}

/// A Ctrl-C after every run of a sweep finished (while it drew its plots) used to be swallowed:
/// exit 0. The outputs are complete, so they stay, and the sweep exits 130 saying so.
#[test]
fn ctrl_c_after_the_sweep_runs_keeps_the_complete_output_and_exits_130() {
    be_servesim_if_child();
    let w = Workdir::new();
    w.write("lengths.csv", "input_tokens,output_tokens\n1,20\n");
    w.write(
        "scenario.toml",
        r#"name = "late"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
arrival = "poisson"
rate_per_s = 50.0
lengths_file = "lengths.csv"
num_requests = 30000

[cost]
model = "constant"
iteration_s = 0.001

[scheduler]
policy = "fcfs"

[sweep]
seed = [1, 2, 3, 4, 5, 6]
"#,
    );
    std::fs::create_dir(w.path("results")).unwrap();
    let mut child = spawn_servesim(
        "ctrl_c_after_the_sweep_runs_keeps_the_complete_output_and_exits_130",
        &w,
        &[
            "sweep",
            "scenario.toml",
            "--out",
            "results/sweep",
            "--jobs",
            "2",
        ],
    );
    // sweep.csv appears in the staging directory once every run finished, before the plots.
    let deadline = Instant::now() + Duration::from_secs(120);
    let staged_csv = || {
        hidden_entries(&w.path("results"))
            .iter()
            .any(|n| w.path("results").join(n).join("sweep.csv").exists())
    };
    while !staged_csv() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it was seen writing its outputs"
        );
        assert!(Instant::now() < deadline, "no staged sweep.csv after 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(
        stderr.contains("Ctrl-C arrived after the sweep had finished")
            && stderr.contains("complete"),
        "stderr: {stderr}"
    );
    assert!(w.path("results/sweep/sweep.csv").is_file());
    assert!(w.path("results/sweep/plots/jct_cdf.svg").is_file());
    assert_eq!(hidden_entries(&w.path("results")), Vec::<String>::new());
}

/// `fidelity` cut short replaced a complete earlier output at `--out` with its partial table
/// (adversarial round 9, case 02); the earlier output is now kept, as `run` and `live` keep it.
#[test]
fn ctrl_c_during_fidelity_keeps_an_earlier_complete_output() {
    be_servesim_if_child();
    let w = Workdir::new();
    w.write(
        "f.toml",
        "name = \"f\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n[trace]\narrival = \"poisson\"\n\
         rate_per_s = 20.0\nnum_requests = 40\ninput_lengths = { dist = \"fixed\", value = 64 }\n\
         output_lengths = { dist = \"fixed\", value = 32 }\n[cost]\nmodel = \"analytic\"\n\
         [scheduler]\npolicy = \"vllm\"\n",
    );
    let r = crate::support::cli([
        "run".into(),
        w.path("f.toml").into_os_string(),
        "--out".into(),
        w.path("fo").into_os_string(),
        "--quiet".into(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = std::fs::read(w.path("fo/summary.json")).unwrap();
    // The first cell (200 req/s) takes about a second of wall time on the mock device, the
    // second (1 req/s) about 40 s: interrupted once the first is compared.
    let child = spawn_servesim(
        "ctrl_c_during_fidelity_keeps_an_earlier_complete_output",
        &w,
        &[
            "fidelity",
            "f.toml",
            "--device",
            "mock",
            "--policies",
            "vllm",
            "--rates",
            "200,1",
            "--out",
            "fo",
            "--quiet",
        ],
    );
    let first_cell_done = || {
        hidden_entries(w.dir.path()).iter().any(|n| {
            let runs = w.dir.path().join(n).join("runs");
            std::fs::read_dir(runs).is_ok_and(|mut cells| {
                cells.any(|c| c.unwrap().path().join("compare.csv").is_file())
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first_cell_done() {
        assert!(Instant::now() < deadline, "the first cell took over 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stderr) = interrupt(child, Duration::ZERO);
    assert_eq!(code, Some(130), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("after 1 of 2 policy/rate cells") && stderr.contains("kept as it was"),
        "stderr: {stderr}"
    );
    assert_eq!(std::fs::read(w.path("fo/summary.json")).unwrap(), before);
    assert!(!w.path("fo/PARTIAL").exists() && !w.path("fo/fidelity.csv").exists());
    assert_eq!(hidden_entries(w.dir.path()), Vec::<String>::new());
}
