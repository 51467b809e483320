//! Outputs never delete or overwrite a user's files, second round: debris-like directories
//! servesim did not write are kept, single-file outputs refuse an existing file unless `--force`,
//! a stale lock naming a live unrelated process (PID 1) does not block an output, and a trace
//! given as a pipe or named pipe is read once.
#![cfg(unix)]

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::support::{CliResult, Workdir, cli};

use crate::outputs::{TRACE, scenario};

fn setup() -> Workdir {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    w.write("scenario.toml", scenario("clobber", ""));
    w
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> CliResult {
    cli(args
        .iter()
        .map(|a| OsString::from(a.as_ref()))
        .collect::<Vec<_>>())
}

fn assert_refused(r: &CliResult, needle: &str) {
    assert_eq!(r.code, 2, "exit code; stderr: {}", r.stderr);
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.lines().count() == 1,
        "one error line: {:?}",
        r.stderr
    );
    assert!(r.stderr.contains(needle), "{:?} lacks {needle:?}", r.stderr);
}

/// A PID that no running process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn directories_named_like_debris_are_kept_unless_servesim_wrote_them() {
    let w = setup();
    let pid = dead_pid();
    let mine = [
        format!(".out.servesim-tmp-{pid}-0"),
        format!(".out.tmp-{pid}"),
        format!(".t.csv.servesim-tmp-{pid}-0"),
    ];
    for n in &mine {
        std::fs::create_dir(w.path(n)).unwrap();
        w.write(&format!("{n}/thesis.tex"), "precious");
    }
    // Real debris of a killed run (it holds the marker) is still removed.
    let debris = format!(".out.servesim-tmp-{pid}-1");
    std::fs::create_dir(w.path(&debris)).unwrap();
    w.write(&format!("{debris}/.servesim-output"), "x");
    let sc = w.path("scenario.toml");
    let r = run(&[&"run", &sc, &"--out", &w.path("out"), &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(&[
        &"trace",
        &"synth",
        &"--rate",
        &"1",
        &"--input",
        &"fixed:value=4",
        &"--output",
        &"fixed:value=2",
        &"--num",
        &"3",
        &"-o",
        &w.path("t.csv"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for n in &mine {
        assert_eq!(
            std::fs::read_to_string(w.path(n).join("thesis.tex")).unwrap(),
            "precious",
            "{n}"
        );
    }
    assert!(!w.path(&debris).exists());
}

fn synth(out: &Path, extra: &[&str]) -> CliResult {
    let mut args: Vec<OsString> = [
        "trace",
        "synth",
        "--rate",
        "1",
        "--input",
        "fixed:value=4",
        "--output",
        "fixed:value=2",
        "--num",
        "3",
        "-o",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(out.into());
    args.extend(extra.iter().map(OsString::from));
    cli(args)
}

#[test]
fn single_file_outputs_refuse_an_existing_file_unless_forced() {
    let w = setup();
    let mine = w.write("mine.csv", "precious");
    assert_refused(&synth(&mine, &[]), "--force");
    let vidur = w.write(
        "vidur.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,2\n",
    );
    let r = run(&[&"trace", &"import", &"vidur", &vidur, &"-o", &mine]);
    assert_refused(&r, "--force");
    let (code, err) = calibrate(&[&"plan", &"--model", &"llama-2-7b", &"--out", &mine]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "precious");
    // --force replaces the file itself.
    assert_eq!(synth(&mine, &["--force"]).code, 0);
    assert!(
        std::fs::read_to_string(&mine)
            .unwrap()
            .starts_with("arrival_s,")
    );
    let r = run(&[
        &"trace", &"import", &"vidur", &vidur, &"-o", &mine, &"--force",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".servesim-"))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

/// Run `servesim-calibrate ARGS…` in-process; returns (exit code, stderr).
fn calibrate(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let mut argv: Vec<OsString> = vec!["servesim-calibrate".into()];
    argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim_calibrate::cli::main_with_args(argv, &mut out, &mut err);
    (code, String::from_utf8_lossy(&err).into_owned())
}

#[test]
fn bless_overwrites_only_a_golden_file() {
    let w = setup();
    let sweep = w.write("sweep.csv", "rate,requests,mean_jct_s\n1,3,0.5\n");
    let other = w.write("notes.csv", "name,phone\nann,123\n");
    let r = run(&[&"check", &sweep, &"--golden", &other, &"--bless"]);
    assert_refused(&r, "not a golden sweep.csv");
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "name,phone\nann,123\n"
    );
    let golden = w.write("golden.csv", "rate,requests,mean_jct_s\n1,3,0.4\n");
    let r = run(&[&"check", &sweep, &"--golden", &golden, &"--bless"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read(&golden).unwrap(),
        std::fs::read(&sweep).unwrap()
    );
    // A new golden file is created.
    let fresh = w.path("fresh.csv");
    let r = run(&[&"check", &sweep, &"--golden", &fresh, &"--bless"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_stale_lock_naming_a_live_unrelated_process_does_not_block_the_output() {
    let w = setup();
    // PID 1 always runs, and is no servesim command.
    w.write(".out.servesim-lock", "1-0");
    w.write(".t.csv.servesim-lock", "1-0");
    let sc = w.path("scenario.toml");
    let r = run(&[&"run", &sc, &"--out", &w.path("out"), &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("out/summary.json").is_file());
    assert_eq!(synth(&w.path("t.csv"), &[]).code, 0);
    assert!(!w.path(".out.servesim-lock").exists());
    assert!(!w.path(".t.csv.servesim-lock").exists());
}

/// `run --trace PIPE` in a thread; when it does not finish in time, the pipe gets a writer that
/// closes at once (ending the wait of an open that blocked), and the test fails.
fn run_with_trace(w: &Workdir, trace: &Path, out: &str) -> CliResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let args: Vec<OsString> = vec![
        "run".into(),
        w.path("scenario.toml").into(),
        "--trace".into(),
        trace.into(),
        "--out".into(),
        w.path(out).into(),
        "--quiet".into(),
    ];
    std::thread::spawn(move || {
        let _ = tx.send(cli(args));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => {
            let _ = std::fs::OpenOptions::new().write(true).open(trace);
            panic!("run --trace {} hung", trace.display());
        }
    }
}

#[test]
fn a_trace_from_a_named_pipe_or_a_pipe_is_read_once() {
    let w = setup();
    let r = run(&[
        &"run",
        &w.path("scenario.toml"),
        &"--out",
        &w.path("from-file"),
        &"--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = std::fs::read(w.path("from-file/requests.csv")).unwrap();
    let fifo = w.path("trace.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let f = fifo.clone();
        let writer = std::thread::spawn(move || {
            std::fs::write(f, TRACE).unwrap();
        });
        let r = run_with_trace(&w, &fifo, "from-fifo");
        writer.join().unwrap();
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            std::fs::read(w.path("from-fifo/requests.csv")).unwrap(),
            expected
        );
    }
    // `--trace <(cat trace.csv)`: an anonymous pipe as /dev/fd/N.
    let (reader, mut writer) = std::io::pipe().unwrap();
    let path = std::path::PathBuf::from(format!(
        "/dev/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&reader)
    ));
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(TRACE.as_bytes()).unwrap();
    });
    let r = run_with_trace(&w, &path, "from-pipe");
    feeder.join().unwrap();
    drop(reader);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read(w.path("from-pipe/requests.csv")).unwrap(),
        expected
    );
}

#[test]
fn a_fifo_is_never_replaced_by_an_output_directory_even_with_force() {
    let w = setup();
    let fifo = w.path("out.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo is not available");
        return;
    }
    let sc = w.path("scenario.toml");
    let r = run(&[&"run", &sc, &"--out", &fifo, &"--quiet", &"--force"]);
    assert_refused(&r, "device, FIFO or socket");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// `--force` never replaces a shared directory (sticky bit, as on /tmp) or a git working tree:
/// `live --out /tmp --force` used to delete everything in /tmp and recreate it as 0755.
#[test]
fn force_never_replaces_a_shared_directory_or_a_git_tree() {
    use std::os::unix::fs::PermissionsExt;
    let w = setup();
    let shared = w.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("someone-elses.txt"), "keep me").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let scenario = w.path("scenario.toml");
    let r = run(&[&"run", &scenario, &"--out", &shared, &"--force", &"--quiet"]);
    assert_refused(&r, "sticky bit");
    assert_eq!(
        std::fs::read_to_string(shared.join("someone-elses.txt")).unwrap(),
        "keep me"
    );
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o1777, "mode kept");

    let repo = w.path("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::write(repo.join("main.rs"), "fn main() {}").unwrap();
    let r = run(&[&"run", &scenario, &"--out", &repo, &"--force", &"--quiet"]);
    assert_refused(&r, "git working tree");
    assert!(repo.join("main.rs").is_file() && repo.join(".git").is_dir());

    // A new directory inside the shared one is fine.
    let inside = shared.join("out");
    let r = run(&[&"run", &scenario, &"--out", &inside, &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(inside.join("summary.json").is_file());
}

/// A marker file does not make any directory servesim's (adversarial round 6): an empty or
/// copied `.servesim-output` in a git working tree leaves it protected even with `--force`; a
/// servesim output that now also holds the user's files (notes, another command's output written
/// inside it) is replaced only with `--force`; and no file output may take a bookkeeping name.
#[test]
fn a_marker_does_not_override_what_servesim_did_not_write() {
    let w = setup();
    let out = w.path("out");
    let go = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            w.path("scenario.toml").into(),
            "--quiet".into(),
            "--out".into(),
            out.clone().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        cli(args)
    };
    // A project (git working tree) with an empty marker: refused even with --force.
    std::fs::create_dir_all(out.join(".git")).unwrap();
    w.write("out/main.py", "print(1)");
    w.write("out/.servesim-output", "");
    assert_refused(&go(&[]), "git working tree");
    assert_refused(&go(&["--force"]), "git working tree");
    assert_eq!(
        std::fs::read_to_string(out.join("main.py")).unwrap(),
        "print(1)"
    );
    std::fs::remove_dir_all(&out).unwrap();
    // A real output, then the user's notes inside it: refused, kept; --force replaces.
    let r = go(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let marker = std::fs::read_to_string(out.join(".servesim-output")).unwrap();
    assert!(marker.contains("\nsummary.json\n"), "{marker}");
    w.write("out/NOTES.md", "mine");
    assert_refused(
        &go(&[]),
        "now also holds `NOTES.md`, which servesim did not write",
    );
    assert_eq!(
        std::fs::read_to_string(out.join("NOTES.md")).unwrap(),
        "mine"
    );
    // Another output written inside it (what a nested command leaves) counts the same.
    std::fs::remove_file(out.join("NOTES.md")).unwrap();
    std::fs::create_dir(out.join("quick")).unwrap();
    assert_refused(&go(&[]), "`quick`");
    assert!(out.join("quick").is_dir());
    let r = go(&["--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!out.join("quick").exists());
    // The marker copied into a plain folder of the user's does not make it replaceable either.
    std::fs::create_dir(w.path("proj")).unwrap();
    w.write("proj/data.txt", "keep");
    std::fs::copy(
        out.join(".servesim-output"),
        w.path("proj/.servesim-output"),
    )
    .unwrap();
    let r = run(&[
        &"run",
        &w.path("scenario.toml"),
        &"--quiet",
        &"--out",
        &w.path("proj"),
    ]);
    assert_refused(&r, "`data.txt`");
    // A file output named like the marker or a lock is refused.
    let r = run(&[
        &"trace",
        &"synth",
        &"--num",
        &"3",
        &"-o",
        &w.path("proj/.servesim-output"),
    ]);
    assert_refused(&r, "name servesim keeps for its own bookkeeping");
}

/// `plot DIR` on a folder servesim did not write, whose `plots/` holds the user's files, refuses
/// instead of replacing them; on a servesim output it (re)draws.
#[test]
fn plot_keeps_a_users_plots_folder() {
    let w = setup();
    let r = run(&[
        &"run",
        &w.path("scenario.toml"),
        &"--quiet",
        &"--out",
        &w.path("run1"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::create_dir_all(w.path("mine/plots")).unwrap();
    for f in ["kv_timeline.csv", "summary.json", "config.json"] {
        std::fs::copy(w.path("run1").join(f), w.path("mine").join(f)).unwrap();
    }
    w.write("mine/plots/kv_usage.png", "my figure");
    assert_refused(&run(&[&"plot", &w.path("mine")]), "may be yours");
    assert_eq!(
        std::fs::read_to_string(w.path("mine/plots/kv_usage.png")).unwrap(),
        "my figure"
    );
    for _ in 0..2 {
        let r = run(&[&"plot", &w.path("run1")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
}

/// The first run directory of sweep output `out`.
fn first_run(out: &Path) -> String {
    let mut runs: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    format!("runs/{}", runs[0])
}

/// Adversarial round 7, 01: the user's files below the top level of a servesim output — notes in
/// a run directory of a sweep, a figure in its `plots/`, a whole run written inside it, a figure
/// in a run's `plots/` — were deleted silently by a rerun. Each is refused and kept now, and
/// `--force` replaces.
#[test]
fn a_rerun_keeps_files_added_below_the_top_level_unless_forced() {
    let w = setup();
    w.write(
        "scenario.toml",
        scenario("clobber", "\n[sweep]\nseed = [1, 2]\n"),
    );
    let sc = w.path("scenario.toml");
    let exp = w.path("exp");
    let sweep = |force: bool| {
        let f: &dyn AsRef<std::ffi::OsStr> = if force { &"--force" } else { &"--quiet" };
        run(&[&"sweep", &sc, &"--out", &exp, f])
    };
    assert_eq!(sweep(false).code, 0);
    assert!(exp.join("plots").is_dir(), "the sweep draws its plots");
    let notes = format!("{}/notes.md", first_run(&exp));
    for added in [notes.as_str(), "plots/my_fig.png", "runs/quick"] {
        if added == "runs/quick" {
            let r = run(&[&"run", &sc, &"--out", &exp.join(added), &"--quiet"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
        } else {
            std::fs::create_dir_all(exp.join(added).parent().unwrap()).unwrap();
            w.write(&format!("exp/{added}"), "precious");
        }
        assert_refused(
            &sweep(false),
            &format!("now also holds `{added}`, which servesim did not write there"),
        );
        assert!(exp.join(added).exists(), "{added} is kept");
        let r = sweep(true);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!exp.join(added).exists(), "--force replaced {added}");
    }
    // The same in a run's own `plots/` (after `plot`, which the marker records).
    let o = w.path("o");
    let rerun = || run(&[&"run", &sc, &"--out", &o, &"--quiet"]);
    assert_eq!(rerun().code, 0);
    assert_eq!(run(&[&"plot", &o]).code, 0);
    assert_eq!(rerun().code, 0, "plot's files are servesim's");
    assert_eq!(run(&[&"plot", &o]).code, 0);
    w.write("o/plots/mine.png", "precious");
    assert_refused(&rerun(), "`plots/mine.png`");
    assert!(o.join("plots/mine.png").is_file());
}

/// `plot DIR` and `compare`'s default `LIVE_DIR/compare.csv` add their files to the marker, so a
/// rerun still replaces the output without `--force`.
#[test]
fn a_rerun_after_plot_or_compare_replaces_without_force() {
    let w = setup();
    w.write(
        "scenario.toml",
        scenario("clobber", "\n[sweep]\nseed = [1, 2]\n"),
    );
    let sc = w.path("scenario.toml");
    let exp = w.path("exp");
    let sweep = || run(&[&"sweep", &sc, &"--out", &exp, &"--quiet", &"--no-plots"]);
    assert_eq!(sweep().code, 0);
    let r = run(&[&"plot", &exp]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let marker = std::fs::read_to_string(exp.join(".servesim-output")).unwrap();
    assert!(marker.contains("\nplots\nplots/"), "{marker}");
    let r = sweep();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!exp.join("plots").exists());
    // compare into a live run's directory.
    w.write("scenario.toml", scenario("clobber", ""));
    let sim = w.path("sim");
    let live = w.path("live");
    assert_eq!(run(&[&"run", &sc, &"--out", &sim, &"--quiet"]).code, 0);
    let live_run = || {
        let r = run(&[
            &"live",
            &sc,
            &"--mock",
            &"--time-scale",
            &"0.0001",
            &"--out",
            &live,
            &"--quiet",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    live_run();
    let r = run(&[&"compare", &sim, &live]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let marker = std::fs::read_to_string(live.join(".servesim-output")).unwrap();
    assert!(marker.contains("\ncompare.csv\n"), "{marker}");
    live_run();
    assert!(!live.join("compare.csv").exists());
}

/// A directory written by the previous release (a marker listing its top-level names) is
/// replaced as before: only its top level is checked.
#[test]
fn an_output_of_the_previous_release_is_replaced_as_before() {
    let w = setup();
    let sc = w.path("scenario.toml");
    let o = w.path("o");
    assert_eq!(run(&[&"run", &sc, &"--out", &o, &"--quiet"]).code, 0);
    let marker = std::fs::read_to_string(o.join(".servesim-output")).unwrap();
    let (text, _) = marker.split_once("Paths written by servesim").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".servesim-output")
        .collect();
    names.sort();
    let old = format!(
        "{text}Entries written by servesim (any other entry is yours, and servesim then refuses to replace this directory without --force):\n{}\n",
        names.join("\n")
    );
    std::fs::write(o.join(".servesim-output"), old).unwrap();
    std::fs::create_dir(o.join("plots")).unwrap();
    w.write("o/plots/kv_usage.png", "drawn by an older plot");
    w.write("o/compare.csv", "written by an older compare");
    let r = run(&[&"run", &sc, &"--out", &o, &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!o.join("compare.csv").exists());
}

/// A symbolic link inside an output (here in `plots/`) is reported as the user's entry, never
/// followed: `--force` removes the link, not what it points to.
#[test]
fn a_symlink_inside_an_output_is_reported_not_followed() {
    let w = setup();
    let sc = w.path("scenario.toml");
    let o = w.path("o");
    let rerun = |f: &str| run(&[&"run", &sc, &"--out", &o, &f]);
    assert_eq!(rerun("--quiet").code, 0);
    assert_eq!(run(&[&"plot", &o]).code, 0);
    std::fs::create_dir(w.path("elsewhere")).unwrap();
    w.write("elsewhere/thesis.tex", "precious");
    std::os::unix::fs::symlink(w.path("elsewhere"), o.join("plots/link")).unwrap();
    assert_refused(&rerun("--quiet"), "now also holds `plots/link`,");
    assert!(o.join("plots/link").is_symlink());
    assert_eq!(rerun("--force").code, 0);
    assert!(!o.join("plots").exists());
    assert_eq!(
        std::fs::read_to_string(w.path("elsewhere/thesis.tex")).unwrap(),
        "precious"
    );
}

/// The shipped profile directories carry a marker in the current form, listing exactly their
/// files, so that the README's rebuild commands (`calibrate import-vidur`, `calibrate run --out
/// calibrate/profiles/...`) replace them without `--force`: their markers had only the header
/// (an early format no release reads as servesim's), and every rebuild was refused. Only
/// `calibrate` replaces them so: `run --out` a profile (a typo) replaced it silently (round 12,
/// 05), and now needs `--force`.
#[test]
fn the_shipped_profiles_are_replaceable_by_calibrate_only() {
    let root = crate::support::workspace_root().join("calibrate/profiles");
    let mut dirs = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() == Some(".servesim-output".as_ref()) {
                dirs.push(d.clone());
            }
        }
    }
    assert!(dirs.len() >= 3, "{dirs:?}");
    let w = setup();
    for (i, d) in dirs.iter().enumerate() {
        let copy = w.path(&format!("p{i}"));
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
        let argv: Vec<std::ffi::OsString> = vec![
            "servesim-calibrate".into(),
            "fit".into(),
            d.into(),
            "--out".into(),
            copy.clone().into(),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = servesim_calibrate::cli::main_with_args(argv, &mut out, &mut err);
        let err = String::from_utf8_lossy(&err);
        assert_eq!(code, 0, "{}: {err}", d.display());
        let r = run(&[&"run", &w.path("scenario.toml"), &"--out", &copy]);
        assert_refused(&r, "calibration profile");
        assert!(copy.join("meta.toml").is_file());
        let r = run(&[
            &"run",
            &w.path("scenario.toml"),
            &"--out",
            &copy,
            &"--force",
        ]);
        assert_eq!(r.code, 0, "{}: {}", d.display(), r.stderr);
        assert!(copy.join("summary.json").is_file());
        assert!(!copy.join("fit.toml").exists());
    }
}

/// A `plot` killed mid-figure left its hidden temporary figure in `plots/`, and every later
/// `plot` of that output refused it as possibly the user's (round 12, 06): a dead process's
/// temporary figures (either naming) are removed; a live one's, or a file of that look that is
/// not a regular file, is not.
#[test]
fn plot_removes_the_temporary_figures_of_a_killed_plot() {
    let w = setup();
    let out = w.path("o");
    let r = run(&[&"run", &w.path("scenario.toml"), &"--out", &out]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(run(&[&"plot", &out]).code, 0);
    let pid = dead_pid();
    let debris = [
        format!(".kv_usage.servesim-tmp-{pid}.png"),
        format!(".tmp-{pid}-kv_usage.svg"),
    ];
    for d in &debris {
        std::fs::write(out.join("plots").join(d), "half a figure").unwrap();
    }
    let r = run(&[&"plot", &out]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for d in &debris {
        assert!(!out.join("plots").join(d).exists(), "{d} left");
    }
    // This process runs: its name is not debris, and it is not servesim's to list.
    let live = format!(".kv_usage.servesim-tmp-{}.png", std::process::id());
    std::fs::write(out.join("plots").join(&live), "mine").unwrap();
    let r = run(&[&"plot", &out]);
    assert_refused(&r, &live);
    assert!(out.join("plots").join(&live).is_file());
}
