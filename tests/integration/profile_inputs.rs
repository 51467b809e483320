//! Inputs that used to be accepted silently or reported far from their cause: calibration
//! profiles with absurd values (named by file, line, field and range at load time), synthetic
//! lengths beyond the longest a trace holds, and `compare` on a requests.csv whose ids repeat.

use crate::support::{Workdir, cli, workspace_root};

const TRACE: &str = "arrival_s,input_tokens,output_tokens\n0,8,4\n0.01,8,3\n0.02,16,5\n";

fn profile_scenario(w: &Workdir, profile: &std::path::Path) -> std::path::PathBuf {
    w.write("trace.csv", TRACE);
    w.write(
        "s.toml",
        format!(
            "name = \"p\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\n[trace]\nfile = \"trace.csv\"\n[cost]\nmodel = \"profile\"\npath = {:?}\n[scheduler]\npolicy = \"vllm\"\n",
            profile.display().to_string()
        ),
    )
}

/// A copy of the shipped A100 profile with `file` edited.
fn edited_profile(w: &Workdir, file: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let src = workspace_root().join("calibrate/profiles/a100-80gb/llama-2-7b/tp1");
    let dst = w.path("prof");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["meta.toml", "fit.toml", "measurements.csv"] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        let text = if f == file { edit(&text) } else { text };
        std::fs::write(dst.join(f), text).unwrap();
    }
    dst
}

fn run_error(w: &Workdir, prof: &std::path::Path) -> String {
    let s = profile_scenario(w, prof);
    let r = cli([
        "run".into(),
        s.into_os_string(),
        "--out".into(),
        w.path("out").into_os_string(),
    ]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!w.path("out").exists());
    r.stderr
}

/// `iteration_overhead_s = 1e300` used to surface as "cost model `profile`: invalid iteration
/// time" after the run started; a `time_s` of 1e300 ran without a word.
#[test]
fn absurd_profile_values_are_named_at_load_time() {
    let w = Workdir::new();
    let prof = edited_profile(&w, "fit.toml", |t| {
        t.replace(
            "iteration_overhead_s = 0.004",
            "iteration_overhead_s = 1e300",
        )
    });
    let e = run_error(&w, &prof);
    assert!(
        e.contains("prof/fit.toml:3: field `iteration_overhead_s`: must be a number from 0 to 10 s, got 1e300"),
        "{e}"
    );
    let w = Workdir::new();
    let prof = edited_profile(&w, "measurements.csv", |t| {
        t.replacen("1.911e-3", "1e300", 1)
    });
    let e = run_error(&w, &prof);
    assert!(
        e.contains(
            "prof/measurements.csv:2: field `time_s`: must be a number from 1e-12 to 1000 s"
        ),
        "{e}"
    );
    for (edit, want) in [
        (",vidur:mlp.csv\n", ",bogus\n"),
        (",,,,vidur:mlp.csv\n", ",,,0,vidur:mlp.csv\n"),
    ] {
        let w = Workdir::new();
        let prof = edited_profile(&w, "measurements.csv", |t| t.replacen(edit, want, 1));
        let e = run_error(&w, &prof);
        assert!(e.contains("prof/measurements.csv:2: field `"), "{e}");
    }
    // A measured shape twice.
    let w = Workdir::new();
    let prof = edited_profile(&w, "measurements.csv", |t| {
        format!("{t}qkv,3,0,1e-4,,,,measured\nqkv,3,0,2e-4,,,,measured\n")
    });
    let e = run_error(&w, &prof);
    assert!(
        e.contains("duplicate measured row: `qkv` at x = 3, y = 0 is already on line"),
        "{e}"
    );
    // 33 MB of rows.
    let w = Workdir::new();
    let prof = edited_profile(&w, "measurements.csv", |t| {
        format!(
            "{t}{}",
            "qkv,4096,0,1.9e-3,,,,vidur:mlp.csv\n".repeat(1_000_000)
        )
    });
    let e = run_error(&w, &prof);
    assert!(
        e.contains("larger than 16 MiB") && e.contains("measurements.csv"),
        "{e}"
    );
}

/// `trace synth` of 3 requests at 1 req/s with input lengths `input` and 4 output tokens.
fn synth_inputs(w: &Workdir, input: &str) -> crate::support::CliResult {
    cli([
        "trace",
        "synth",
        "--rate",
        "1",
        "--num",
        "3",
        "--input",
        input,
        "--output",
        "fixed:value=4",
        "-o",
        w.path("t.csv").to_str().unwrap(),
    ])
}

/// A log-normal length above 2³² − 1 used to be capped there silently.
#[test]
fn synthetic_lengths_beyond_the_longest_are_an_error() {
    let w = Workdir::new();
    let r = synth_inputs(&w, "lognormal:mean=1e30,sigma=0");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("lognormal: drew a length of 1e30 tokens") && r.stderr.contains("`max`"),
        "{}",
        r.stderr
    );
    assert!(!w.path("t.csv").exists());
    // With `max` the cap is what the user asked for.
    let r = synth_inputs(&w, "lognormal:mean=1e30,sigma=0,max=4096");
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `compare` counted a requests.csv whose ids all read 0 as that many requests.
#[test]
fn compare_refuses_duplicate_request_ids() {
    let w = Workdir::new();
    w.write("trace.csv", TRACE);
    let s = w.write(
        "s.toml",
        "name = \"c\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n[trace]\nfile = \"trace.csv\"\n[memory]\nkv_capacity_blocks = 1000\n[cost]\nmodel = \"constant\"\niteration_s = 0.01\n[scheduler]\npolicy = \"fcfs\"\n",
    );
    let s = s.to_str().unwrap();
    let (sim, live) = (w.path("sim"), w.path("live"));
    assert_eq!(cli(["run", s, "--out", sim.to_str().unwrap()]).code, 0);
    let r = cli([
        "live",
        s,
        "--mock",
        "--time-scale",
        "0.001",
        "--out",
        live.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let compare = || cli(["compare", sim.to_str().unwrap(), live.to_str().unwrap()]);
    assert_eq!(compare().code, 0, "{}", compare().stderr);
    let path = live.join("requests.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let zeroed: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| match (i, l.split_once(',')) {
            (0, _) | (_, None) => format!("{l}\n"),
            (_, Some((_, rest))) => format!("0,{rest}\n"),
        })
        .collect();
    std::fs::write(&path, zeroed).unwrap();
    let r = compare();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("live/requests.csv:3: field `id`: duplicate request id 0 (also on line 2)"),
        "{}",
        r.stderr
    );
}
