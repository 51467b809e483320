//! Calibration end to end on CPU: fitting the recorded (synthetic) measurement fixture, the
//! `fit`/`report`/`import-vidur`/`run` commands, and `servesim run` with `[cost] model = "profile"`
//! and `[swap] profile` — in-process through both command lines.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use servesim::profile::{CopyVariant, Op, OpFit, Profile};
use servesim_calibrate::cli::{load_for_fit, main_with_args as calibrate};
use servesim_calibrate::fitting::refit;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixture() -> PathBuf {
    repo().join("calibrate/tests/fixtures/synthetic-h100-llama-2-7b-tp1")
}

fn shipped_a100() -> PathBuf {
    repo().join("calibrate/profiles/a100-80gb/llama-2-7b/tp1")
}

fn args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// Run a command line in-process: (exit code, stdout, stderr).
fn run(
    f: fn(Vec<OsString>, &mut dyn std::io::Write, &mut dyn std::io::Write) -> i32,
    a: &[&str],
) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = f(args(a), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn servesim(a: &[&str]) -> (i32, String, String) {
    run(servesim::cli::main_with_args, a)
}

fn calib(a: &[&str]) -> (i32, String, String) {
    run(calibrate, a)
}

fn rel(a: f64, b: f64) -> f64 {
    (a / b - 1.0).abs()
}

#[test]
fn fit_recovers_the_parameters_of_the_recorded_fixture() {
    let p = refit(&load_for_fit(&fixture()).unwrap()).unwrap();
    for op in Op::ALL.into_iter().filter(|o| *o != Op::AllReduce) {
        let r = &p.meta.fit[op.name()];
        // The rows carry ±2% noise: the median residual must stay within the acceptance bound.
        assert!(r.median_rel_err <= 0.02, "{op:?}: {r:?}");
        assert!(r.max_rel_err <= 0.08, "{op:?}: {r:?}");
        assert_eq!(r.over, "measured");
    }
    let copy = |op: Op| match p.op_fit(op) {
        Some(OpFit::Copy {
            latency_s,
            s_per_chunk,
            bytes_per_s,
        }) => (*latency_s, *s_per_chunk, *bytes_per_s),
        other => panic!("{op:?}: {other:?}"),
    };
    // Bandwidth and per-chunk cost per direction and variant (README table).
    for (op, chunk_s, bw) in [
        (Op::H2dPinnedMemcpy, 2.5e-6, 2.4e10),
        (Op::D2hPinnedMemcpy, 2.5e-6, 2.3e10),
        (Op::H2dPinnedGather, 5e-8, 2.0e10),
        (Op::D2hPageableMemcpy, 1e-5, 0.9e10),
    ] {
        let (_, c, b) = copy(op);
        assert!(rel(b, bw) < 0.05, "{op:?} bandwidth {b} vs {bw}");
        if chunk_s > 1e-7 {
            assert!(rel(c, chunk_s) < 0.1, "{op:?} per chunk {c} vs {chunk_s}");
        }
    }
    let Some(OpFit::Decode {
        s_per_context_token,
        ..
    }) = p.op_fit(Op::AttnDecode)
    else {
        panic!()
    };
    assert!(rel(*s_per_context_token, 7e-9) < 0.05);
    let Some(OpFit::Prefill { s_per_token_sq, .. }) = p.op_fit(Op::AttnPrefill) else {
        panic!()
    };
    assert!(rel(*s_per_token_sq, 3e-11) < 0.1, "{s_per_token_sq}");
    // GEMMs: the compute slope at many tokens and the weight-read floor at few.
    let Some(OpFit::Roofline {
        slope_s, floor_s, ..
    }) = p.op_fit(Op::MlpUp)
    else {
        panic!()
    };
    assert!(rel(*slope_s, 3.0e-7) < 0.05, "{slope_s}");
    assert!(rel(*floor_s + 5e-6, 6.5e-5) < 0.1, "{floor_s}");
}

#[test]
fn fit_command_writes_a_loadable_profile_with_a_swap_variant() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("p");
    let (code, out, err) = calib(&[
        "servesim-calibrate",
        "fit",
        fixture().to_str().unwrap(),
        "--out",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("attn_decode") && out.contains("h2d_pinned_gather"),
        "{out}"
    );
    let p = Profile::load(&dest).unwrap();
    // Per chunk, the gather kernel is far cheaper than a memcpy per chunk.
    assert_eq!(p.fit.swap_variant, Some(CopyVariant::PinnedGather));
    assert_eq!(p.meta.grid["attn_decode"].x_max, 32);
    // The fixture itself is left alone.
    assert!(!fixture().join("fit.toml").exists());
}

#[test]
fn shipped_profiles_are_what_import_vidur_produces() {
    let (code, out, err) = calib(&["servesim-calibrate", "import-vidur", "--check"]);
    assert_eq!(
        code, 0,
        "calibrate/profiles differ from `servesim calibrate import-vidur`; re-run it and commit.\n{out}{err}"
    );
}

#[test]
fn shipped_profiles_load_and_fit_within_bounds() {
    for gpu in ["a100-80gb", "h100-80gb"] {
        let p = Profile::load(&repo().join(format!("calibrate/profiles/{gpu}/llama-2-7b/tp1")))
            .unwrap();
        assert_eq!(p.meta.source, "vidur-import");
        for op in Op::ITERATION {
            let r = &p.meta.fit[op.name()];
            // Vidur's prefill samples mix chunk sizes and prefixes: looser.
            let bound = if op == Op::AttnPrefill { 0.15 } else { 0.08 };
            assert!(r.median_rel_err <= bound, "{gpu} {op:?}: {r:?}");
        }
        assert!(!p.meta.provenance.sources.is_empty());
    }
}

fn write_scenario(dir: &Path, name: &str, body: &str) -> PathBuf {
    let lengths = repo().join("traces/sharegpt_vllm_opt.csv");
    let text = format!(
        "name = \"{name}\"\nseed = 3\nmodel = \"llama-2-7b\"\n{body}\n\n[trace]\narrival = \"poisson\"\nrate_per_s = 4.0\nlengths_file = \"{}\"\nnum_requests = 300\n",
        lengths.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn servesim_runs_with_the_shipped_a100_profile_and_counts_extrapolations() {
    let dir = tempfile::tempdir().unwrap();
    let sc = write_scenario(
        dir.path(),
        "profile_run",
        &format!(
            "gpu = \"a100-80gb\"\n\n[cost]\nmodel = \"profile\"\npath = \"{}\"\n\n[scheduler]\npolicy = \"vllm\"\nmax_batch_size = 64\nmax_batch_tokens = 4096",
            shipped_a100().display()
        ),
    );
    let out = dir.path().join("out");
    let (code, _, err) = servesim(&[
        "servesim",
        "run",
        sc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(s["requests"], 300);
    let ex = &s["profile_extrapolations"];
    // ShareGPT has prompts shorter than Vidur's shortest measured prefill chunk (80 tokens).
    assert!(ex["iterations"].as_u64().unwrap() > 0, "{ex}");
    assert!(
        ex["by_operator"]["attn_prefill"].as_u64().unwrap() > 0,
        "{ex}"
    );
    assert_eq!(ex["transfers"], 0);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["resolved"]["cost_profile"]["mode"], "interpolate");

    // The same run with the analytic model: no extrapolation field, similar makespan.
    let sc2 = write_scenario(
        dir.path(),
        "analytic_run",
        "gpu = \"a100-80gb\"\n\n[cost]\nmodel = \"analytic\"\n\n[scheduler]\npolicy = \"vllm\"\nmax_batch_size = 64\nmax_batch_tokens = 4096",
    );
    let out2 = dir.path().join("out2");
    let (code, _, err) = servesim(&[
        "servesim",
        "run",
        sc2.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let s2 = summary(&out2);
    assert!(s2.get("profile_extrapolations").is_none());
    let (a, b) = (
        s["makespan_s"].as_f64().unwrap(),
        s2["makespan_s"].as_f64().unwrap(),
    );
    assert!((a / b - 1.0).abs() < 0.2, "{a} vs {b}");
}

#[test]
fn servesim_runs_with_profile_cost_and_swap_from_a_fitted_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("h100-80gb/llama-2-7b/tp1");
    let (code, _, err) = calib(&[
        "servesim-calibrate",
        "fit",
        fixture().to_str().unwrap(),
        "--out",
        prof.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // Small GPU memory and SRPT with swap preemption: requests are swapped out and in.
    let sc = write_scenario(
        dir.path(),
        "swap_run",
        "gpu = \"h100-80gb\"\n\n[memory]\nkv_capacity_blocks = 400\n\n[swap]\nprofile = \"h100-80gb/llama-2-7b/tp1\"\n\n[cost]\nmodel = \"profile\"\npath = \"h100-80gb/llama-2-7b/tp1\"\nmode = \"fitted\"\n\n[scheduler]\npolicy = \"srpt\"\nmax_batch_size = 32",
    );
    let out = dir.path().join("out");
    let (code, _, err) = servesim(&[
        "servesim",
        "run",
        sc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    let swaps: u64 = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["swap_outs"].as_u64().unwrap())
        .sum();
    assert!(swaps > 0, "no swaps: {s}");
    // The quick grid stops at 32 sequences and 1,024 tokens: decodes of long contexts are off it.
    let ex = &s["profile_extrapolations"];
    assert!(ex["iterations"].as_u64().unwrap() > 0, "{ex}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["resolved"]["swap"]["variant"], "pinned_gather");
    assert_eq!(cfg["resolved"]["swap"]["chunks_per_block"], 64);
}

#[test]
fn profile_mismatches_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "wrong_gpu",
            format!(
                "gpu = \"h100-80gb\"\n\n[cost]\nmodel = \"profile\"\npath = \"{}\"\n\n[scheduler]\npolicy = \"vllm\"",
                shipped_a100().display()
            ),
            "was made on GPU `a100-80gb`",
        ),
        (
            "no_swap_data",
            format!(
                "gpu = \"a100-80gb\"\n\n[swap]\nprofile = \"{}\"\n\n[cost]\nmodel = \"analytic\"\n\n[scheduler]\npolicy = \"vllm\"",
                shipped_a100().display()
            ),
            "no fitted `h2d_pinned_gather` copy model",
        ),
        (
            "swap_both",
            format!(
                "gpu = \"a100-80gb\"\n\n[swap]\nprofile = \"{}\"\nlatency_s = 1e-5\n\n[cost]\nmodel = \"analytic\"\n\n[scheduler]\npolicy = \"vllm\"",
                shipped_a100().display()
            ),
            "`profile` replaces latency_s",
        ),
        (
            "missing_dir",
            "gpu = \"a100-80gb\"\n\n[cost]\nmodel = \"profile\"\npath = \"nowhere\"\n\n[scheduler]\npolicy = \"vllm\"".to_string(),
            "not a profile directory",
        ),
        (
            "tp_mismatch",
            format!(
                "gpu = \"a100-80gb\"\ntp = 2\n\n[cost]\nmodel = \"profile\"\npath = \"{}\"\n\n[scheduler]\npolicy = \"vllm\"",
                shipped_a100().display()
            ),
            "at tp = 1, the scenario runs `llama-2-7b` at tp = 2",
        ),
    ];
    for (name, body, want) in cases {
        let sc = write_scenario(dir.path(), name, &body);
        let (code, _, err) = servesim(&[
            "servesim",
            "run",
            sc.to_str().unwrap(),
            "--out",
            dir.path().join(name).to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{name}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!dir.path().join(name).exists(), "{name}: partial output");
    }
}

#[test]
fn calibrate_run_without_a_gpu_exits_2_with_a_clear_message() {
    let (code, out, err) = calib(&["servesim-calibrate", "run", "--model", "llama-2-7b"]);
    if cfg!(feature = "cuda") && servesim_calibrate::gpu::probe(0).is_ok() {
        eprintln!("skipped: a GPU is present (see tests/gpu.rs)");
        return;
    }
    assert_eq!(code, 2, "{out}{err}");
    if cfg!(feature = "cuda") {
        assert!(err.contains("no CUDA driver found"), "{err}");
    } else {
        assert!(err.contains("built without GPU support"), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = calib(&["servesim-calibrate", "self-test"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn servesim_calibrate_forwards_to_the_sibling_executable() {
    // In a test, `servesim` is this test binary in target/<profile>/deps/; the forwarding finds
    // target/<profile>/servesim-calibrate (cargo builds it for this package's tests).
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_servesim-calibrate"));
    assert!(bin.is_file());
    let me = std::env::current_exe().unwrap();
    assert_eq!(
        servesim::cli::calibrate::find_calibrate(&me).unwrap(),
        bin,
        "the forwarding would not find the binary cargo built"
    );
    // The exit status comes back through `servesim` (the child prints to this process's stderr).
    let (code, _, _) = servesim(&["servesim", "calibrate", "run", "--model", "llama-2-7b"]);
    if !(cfg!(feature = "cuda") && servesim_calibrate::gpu::probe(0).is_ok()) {
        assert_eq!(code, 2);
    }
    let (code, _, _) = servesim(&[
        "servesim",
        "calibrate",
        "plan",
        "--model",
        "opt-13b",
        "--quick",
    ]);
    assert_eq!(code, 0);
    let (code, _, _) = servesim(&["servesim", "calibrate", "no-such-command"]);
    assert_eq!(code, 2);
}

#[test]
fn report_prints_measured_vs_fitted_and_draws_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("r.png");
    let (code, out, err) = calib(&[
        "servesim-calibrate",
        "report",
        shipped_a100().to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "attn_decode",
        "roofline",
        "measured_s",
        "fitted_s",
        "vidur-import",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 20_000 && bytes.starts_with(b"\x89PNG"));
}

#[test]
fn compare_reports_analytic_and_reference_errors_on_measured_points() {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("p");
    assert_eq!(
        calib(&[
            "servesim-calibrate",
            "fit",
            fixture().to_str().unwrap(),
            "--out",
            prof.to_str().unwrap(),
        ])
        .0,
        0
    );
    let md = dir.path().join("c.md");
    let (code, out, err) = calib(&[
        "servesim-calibrate",
        "compare",
        prof.to_str().unwrap(),
        "--out",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // The default reference is the shipped H100 Vidur import.
    assert!(
        out.contains("Reference profile: NVIDIA H100 80GB HBM3 (vidur-import"),
        "{out}"
    );
    for g in ["| linear", "| small_ops", "| attn_prefill", "| attn_decode"] {
        assert!(out.contains(g), "{g}: {out}");
    }
    assert_eq!(std::fs::read_to_string(md).unwrap(), out);
    let p = Profile::load(&prof).unwrap();
    let other = servesim_calibrate::import::import_profile(
        &servesim_calibrate::vidur_fit::default_data_dir(),
        "a100",
        "llama-3-8b",
        1,
        "2026-01-01",
    )
    .unwrap();
    let e = servesim_calibrate::compare::compare_against(&p, &other).unwrap_err();
    assert!(e.to_string().contains("llama-3-8b"), "{e}");
}
