//! Output paths never lose a user's files: every command that writes a directory (`run`, `sweep`,
//! `live`, `merge`, `capacity`) replaces only a directory servesim wrote (it holds
//! `.servesim-output`) or an empty one, refuses anything else unless `--force`, and never — even
//! with `--force` — replaces a directory holding one of its inputs or the current directory.
//! Scenario names are identifiers, never paths. File outputs (`trace import`, `trace synth`,
//! `compare`) never overwrite their own inputs.

use std::ffi::OsString;
use std::path::Path;

use crate::support::{CliResult, Workdir, cli};

pub(crate) const TRACE: &str = "arrival_s,input_tokens,output_tokens\n0,4,2\n0.05,4,1\n0.1,8,3\n";

/// A small valid scenario named `name` over `trace.csv` next to it, with `extra` appended.
pub(crate) fn scenario(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
model = "opt-13b"
gpu = "a100-40gb"

[trace]
file = "trace.csv"

[memory]
kv_capacity_blocks = 1000

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "vllm"
{extra}"#
    )
}

fn setup(extra: &str) -> Workdir {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    w.write("scenario.toml", scenario("outputs", extra));
    w
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> CliResult {
    cli(args
        .iter()
        .map(|a| OsString::from(a.as_ref()))
        .collect::<Vec<_>>())
}

/// `run SCENARIO --out OUT --quiet --force`.
fn run_forced(scenario: &Path, out: impl AsRef<std::ffi::OsStr>) -> CliResult {
    run(&[&"run", &scenario, &"--out", &out, &"--quiet", &"--force"])
}

/// `trace synth --lengths-file LENGTHS --rate 1 --num NUM --out OUT`.
fn synth_to(lengths: &Path, num: &str, out: impl AsRef<std::ffi::OsStr>) -> CliResult {
    run(&[
        &"trace",
        &"synth",
        &"--lengths-file",
        &lengths,
        &"--rate",
        &"1",
        &"--num",
        &num,
        &"--out",
        &out,
    ])
}

/// A user's directory holding a file servesim must not delete.
fn users_dir(w: &Workdir, name: &str) -> std::path::PathBuf {
    let d = w.path(name);
    std::fs::create_dir_all(d.join("notes")).unwrap();
    std::fs::write(d.join("thesis.tex"), "precious").unwrap();
    std::fs::write(d.join("notes/n.txt"), "precious").unwrap();
    d
}

fn assert_users_dir_intact(d: &Path) {
    assert_eq!(
        std::fs::read_to_string(d.join("thesis.tex")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("notes/n.txt")).unwrap(),
        "precious"
    );
    assert!(!d.join(".servesim-output").exists());
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

/// No staging directory, set-aside output or lock left in `dir`.
fn assert_no_debris(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".servesim-"), "{n} left in {}", dir.display());
    }
}

#[test]
fn every_directory_command_refuses_a_users_directory_without_force() {
    let w = setup("\n[sweep]\nseed = [1, 2]\n");
    let sc = w.path("scenario.toml");
    let d = users_dir(&w, "mine");
    let cases: Vec<(&str, CliResult)> = vec![
        ("run", run(&[&"run", &sc, &"--out", &d, &"--quiet"])),
        ("sweep", run(&[&"sweep", &sc, &"--out", &d, &"--no-plots"])),
        (
            "live",
            run(&[
                &"live",
                &sc,
                &"--mock",
                &"--time-scale",
                &"0.001",
                &"--out",
                &d,
                &"--quiet",
            ]),
        ),
        (
            "capacity",
            run(&[
                &"capacity",
                &sc,
                &"--slo",
                &"jct_s=100",
                &"--seeds",
                &"0",
                &"--out",
                &d,
            ]),
        ),
    ];
    for (cmd, r) in &cases {
        assert_eq!(r.code, 2, "{cmd}: {}", r.stderr);
        assert!(
            r.stderr.contains("was not written by servesim") && r.stderr.contains("--force"),
            "{cmd}: {}",
            r.stderr
        );
        assert_users_dir_intact(&d);
    }
    assert_no_debris(w.dir.path());
    // A file in the way is refused too, and kept.
    let f = w.write("file.txt", "precious");
    let r = run(&[&"run", &sc, &"--out", &f, &"--quiet"]);
    assert_refused(&r, "is not a directory");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
}

#[test]
fn force_replaces_a_users_directory_and_servesim_outputs_are_replaced_without_it() {
    let w = setup("");
    let sc = w.path("scenario.toml");
    let d = users_dir(&w, "mine");
    let r = run(&[&"run", &sc, &"--out", &d, &"--quiet", &"--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!d.join("thesis.tex").exists());
    assert!(d.join(".servesim-output").is_file());
    assert!(d.join("summary.json").is_file());
    // Rerunning into servesim's own output replaces it without --force.
    let first = std::fs::read(d.join("requests.csv")).unwrap();
    let r = run(&[&"run", &sc, &"--out", &d, &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(d.join("requests.csv")).unwrap(), first);
    // An empty directory (made by the user beforehand) is fine as it is.
    let empty = w.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = run(&[&"run", &sc, &"--out", &empty, &"--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(empty.join("summary.json").is_file());
    assert_no_debris(w.dir.path());
}

#[test]
fn an_output_holding_an_input_is_refused_even_with_force() {
    let w = setup("");
    let sc = w.path("scenario.toml");
    // The scenario's own directory (it holds the scenario and its trace).
    let r = run(&[&"run", &sc, &"--out", &w.dir.path(), &"--quiet", &"--force"]);
    assert_refused(&r, "an input of this command");
    assert!(sc.is_file() && w.path("trace.csv").is_file());
    // A directory holding the trace given with --trace.
    let t = w.path("traces");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(t.join("t.csv"), TRACE).unwrap();
    let r = run(&[
        &"run",
        &sc,
        &"--trace",
        &t.join("t.csv"),
        &"--out",
        &t,
        &"--quiet",
        &"--force",
    ]);
    assert_refused(&r, "an input of this command");
    assert!(t.join("t.csv").is_file());
    // Paths without a directory name.
    let r = run_forced(&sc, w.path("x/.."));
    assert_refused(&r, "must end in a directory name");
}

#[test]
fn merge_never_replaces_one_of_its_shards() {
    let w = setup("\n[sweep]\nseed = [1, 2, 3]\n");
    let sc = w.path("scenario.toml");
    let mut shards = Vec::new();
    for i in 0..2 {
        let d = w.path(&format!("s{i}"));
        let r = run(&[&"sweep", &sc, &"--shard", &format!("{i}/2"), &"--out", &d]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        shards.push(d);
    }
    let before = std::fs::read(shards[0].join("shard.json")).unwrap();
    for force in [false, true] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"merge", &shards[0], &shards[1], &"--out", &shards[0]];
        if force {
            args.push(&"--force");
        }
        let r = run(&args);
        assert_refused(&r, "an input");
        assert_eq!(std::fs::read(shards[0].join("shard.json")).unwrap(), before);
    }
    let r = run(&[
        &"merge",
        &shards[0],
        &shards[1],
        &"--out",
        &w.path("merged"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.path("merged/.servesim-output").is_file());
}

#[test]
fn scenario_names_are_identifiers_not_paths() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let abs = w.path("abs");
    let long = "n".repeat(101);
    let escape = format!("../../servesim-escape-{}", std::process::id());
    let cases: Vec<(String, &str)> = vec![
        ("..".into(), "starts with `.`"),
        (escape.clone(), "starts with `.`"),
        (abs.display().to_string(), "path separator"),
        ("a/b".into(), "path separator"),
        ("a\\\\b".into(), "path separator"),
        ("tab\\there".into(), "control or formatting character \\t"),
        (
            "nul\\u0000x".into(),
            "control or formatting character \\x00",
        ),
        ("rtl\\u202Ex".into(), "formatting character \\u202e"),
        (long.clone(), "longer than 100 characters"),
        ("".into(), "empty"),
        ("a b".into(), "` `"),
    ];
    for (name, needle) in &cases {
        w.write("scenario.toml", scenario(name, ""));
        // Default output path: results/<name>/<policy>/ under the current directory.
        let r = run(&[&"run", &w.path("scenario.toml"), &"--quiet"]);
        assert_refused(&r, needle);
        assert!(
            r.stderr.contains("line 1: field `name`"),
            "{name:?}: {}",
            r.stderr
        );
        assert!(
            !r.stderr
                .chars()
                .any(|c| servesim::error::is_unsafe_char(c) && c != '\n'),
            "control bytes echoed: {:?}",
            r.stderr
        );
        let r = run(&[&"sweep", &w.path("scenario.toml"), &"--no-plots"]);
        assert_eq!(r.code, 2, "sweep {name:?}: {}", r.stderr);
    }
    assert!(!abs.exists());
    // The names of every committed scenario pass.
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")).unwrap()
    {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            servesim::scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn a_concurrent_writer_of_the_same_output_fails_clearly_and_the_first_finishes() {
    let w = setup("");
    let sc = w.path("scenario.toml");
    let dest = w.path("out");
    // Another command holds the output (as a long run in another process would).
    let other = servesim::output::StagedDir::new(&dest, &Default::default()).unwrap();
    other.write("summary.json", b"{}\n").unwrap();
    let r = run(&[&"run", &sc, &"--out", &dest, &"--quiet"]);
    assert_refused(&r, "another servesim command");
    other.commit().unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("summary.json")).unwrap(),
        "{}\n"
    );
    assert_no_debris(w.dir.path());
}

#[test]
fn file_outputs_never_overwrite_their_inputs() {
    let w = Workdir::new();
    let lengths = w.write("lengths.csv", "input_tokens,output_tokens\n4,2\n8,3\n");
    let before = std::fs::read(&lengths).unwrap();
    let r = synth_to(&lengths, "5", &lengths);
    assert_refused(&r, "an input of this command");
    assert_eq!(std::fs::read(&lengths).unwrap(), before);
    let trace = w.write(
        "vidur.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,4,2\n",
    );
    let before = std::fs::read(&trace).unwrap();
    let r = run(&[&"trace", &"import", &"vidur", &trace, &"--out", &trace]);
    assert_refused(&r, "an input of this command");
    assert_eq!(std::fs::read(&trace).unwrap(), before);
    // A directory in the way of a file output.
    let d = users_dir(&w, "d");
    let r = run(&[&"trace", &"import", &"vidur", &trace, &"--out", &d]);
    assert_refused(&r, "is a directory");
    assert_users_dir_intact(&d);
}

#[test]
fn a_failed_run_leaves_no_directory_it_created() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    w.write(
        "scenario.toml",
        scenario("outputs", "\n[limits]\nmax_queue = 1\n"),
    );
    let r = run(&[
        &"run",
        &w.path("scenario.toml"),
        &"--out",
        &w.path("results/deep/run"),
        &"--quiet",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("overloaded"), "{}", r.stderr);
    assert!(
        !w.path("results").exists(),
        "the parents created for the output were left behind"
    );
}

#[test]
fn blessing_a_golden_file_with_itself_keeps_it() {
    let w = Workdir::new();
    let golden = w.write("sweep.csv", "policy,jct_mean_s\nvllm,1.5\n");
    let r = run(&[&"check", &golden, &"--golden", &golden, &"--bless"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&golden).unwrap(),
        "policy,jct_mean_s\nvllm,1.5\n"
    );
}

#[cfg(unix)]
#[test]
fn a_symlinked_output_is_refused_and_force_replaces_the_link_not_its_target() {
    let w = setup("");
    let sc = w.path("scenario.toml");
    let d = users_dir(&w, "mine");
    let link = w.path("link");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    let r = run(&[&"run", &sc, &"--out", &link, &"--quiet"]);
    assert_refused(&r, "symbolic link");
    let r = run(&[&"run", &sc, &"--out", &link, &"--quiet", &"--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_users_dir_intact(&d);
    assert!(link.join("summary.json").is_file() && !link.is_symlink());
}

/// Run `servesim-calibrate ARGS…` in-process; returns (exit code, stderr).
fn calibrate(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let mut argv: Vec<OsString> = vec!["servesim-calibrate".into()];
    argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim_calibrate::cli::main_with_args(argv, &mut out, &mut err);
    (code, String::from_utf8_lossy(&err).into_owned())
}

/// A copy of the shipped A100 Llama-2-7B profile (with its marker) in `w/name`.
fn profile_copy(w: &Workdir, name: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../calibrate/profiles/a100-80gb/llama-2-7b/tp1");
    let dst = w.path(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn outputs_inside_an_input_directory_are_refused_even_with_force() {
    let w = Workdir::new();
    let lengths = w.write("len.csv", "input_tokens,output_tokens\n4,2\n8,3\n");
    let p = profile_copy(&w, "par/p");
    let fit_before = std::fs::read(p.join("fit.toml")).unwrap();
    w.write(
        "s.toml",
        format!(
            "name = \"s\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\n[trace]\nrate_per_s = 1.0\nlengths_file = \"{}\"\nnum_requests = 5\n[cost]\nmodel = \"profile\"\npath = \"par/p\"\n[scheduler]\npolicy = \"vllm\"\n",
            lengths.display()
        ),
    );
    let sc = w.path("s.toml");
    // A run's --out on a file of the profile it reads.
    let r = run_forced(&sc, p.join("fit.toml"));
    assert_refused(&r, "an input directory of this command");
    // calibrate fit into a directory above its input profile; calibrate compare into it.
    let (code, err) = calibrate(&[&"fit", &p, &"--out", &w.path("par"), &"--force"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("an input of this command"), "{err}");
    let (code, err) = calibrate(&[&"compare", &p, &"--out", &p.join("meta.toml")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("an input directory"), "{err}");
    let (code, err) = calibrate(&[&"report", &p, &"--png", &p.join("x.png")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("an input directory"), "{err}");
    let (code, err) = calibrate(&[&"report", &p, &"--png", &w.path("r.toml")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--png must name a .png file"), "{err}");
    assert_eq!(std::fs::read(p.join("fit.toml")).unwrap(), fit_before);
    // compare --out into the sim directory, or onto a file it reads in the live one.
    let sim = w.path("sim");
    let live = w.path("live");
    assert_eq!(run(&[&"run", &sc, &"--out", &sim, &"--quiet"]).code, 0);
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
    let config = std::fs::read(sim.join("config.json")).unwrap();
    let r = run(&[&"compare", &sim, &live, &"--out", &sim.join("config.json")]);
    assert_refused(&r, "an input directory of this command");
    let r = run(&[
        &"compare",
        &sim,
        &live,
        &"--out",
        &live.join("requests.csv"),
    ]);
    assert_refused(&r, "an input of this command");
    assert_eq!(std::fs::read(sim.join("config.json")).unwrap(), config);
    // A live run whose requests.csv holds only its header has nothing to compare.
    let header = std::fs::read_to_string(live.join("requests.csv")).unwrap();
    std::fs::write(
        live.join("requests.csv"),
        header.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    let r = run(&[&"compare", &sim, &live]);
    assert_refused(&r, "holds no requests");
    // Blessing onto something that is not a golden CSV.
    let before = std::fs::read(&sc).unwrap();
    let csv = w.write("sweep.csv", "policy,jct_mean_s\nvllm,1.5\n");
    let r = run(&[&"check", &csv, &"--golden", &sc, &"--bless"]);
    assert_refused(&r, "must be a .csv file");
    assert_eq!(std::fs::read(&sc).unwrap(), before);
}

#[cfg(unix)]
#[test]
fn file_outputs_never_replace_links_devices_or_fifos() {
    let w = Workdir::new();
    let lengths = w.write("len.csv", "input_tokens,output_tokens\n4,2\n8,3\n");
    let target = w.write("target.txt", "precious");
    let link = w.path("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = w.path("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for dest in [&link, &fifo, &std::path::PathBuf::from("/dev/null")] {
        let r = synth_to(&lengths, "3", dest);
        assert_refused(&r, "not a regular file");
    }
    assert!(link.is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device_like()
    );
}

/// `std::os::unix::fs::FileTypeExt::is_char_device`, spelled so the test reads plainly.
#[cfg(unix)]
trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}

#[cfg(unix)]
impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

#[cfg(unix)]
#[test]
fn endless_inputs_are_refused_within_a_bound() {
    let w = setup("");
    let sc = w.path("scenario.toml");
    let r = run(&[&"run", &"/dev/zero", &"--out", &w.path("o"), &"--quiet"]);
    assert_refused(&r, "a NUL byte at offset 0: not a text file");
    let r = run(&[
        &"run",
        &sc,
        &"--trace",
        &"/dev/zero",
        &"--out",
        &w.path("o"),
        &"--quiet",
    ]);
    assert_refused(&r, "a line is longer than 16 MiB");
    let r = run(&[&"trace", &"stats", &"/dev/zero"]);
    assert_refused(&r, "a line is longer than 16 MiB");
    let r = run(&[
        &"trace",
        &"import",
        &"vidur",
        &"/dev/zero",
        &"--out",
        &w.path("v.csv"),
    ]);
    assert_refused(&r, "a line is longer than 16 MiB");
    let r = run(&[
        &"trace",
        &"synth",
        &"--lengths-file",
        &w.path("trace.csv"),
        &"--rate",
        &"1",
        &"--num",
        &"18446744073709551615",
        &"--out",
        &w.path("s.csv"),
    ]);
    assert_refused(&r, "--num must be from 1 to 1000000000");
}
