//! GPU-only tests (feature `cuda`): they skip, printing why, when no CUDA driver or device is
//! present. `calibrate/gpu_run.sh` runs them on a GPU machine:
//! `cargo test --release -p servesim-calibrate --features cuda --test gpu -- --nocapture`.
#![cfg(feature = "cuda")]

use std::ffi::OsString;
use std::path::Path;

use servesim::profile::{Op, Profile};
use servesim_calibrate::gpu::{self, RunOptions};

/// `Some(reason)` when these tests cannot run here.
fn skip() -> Option<String> {
    match gpu::probe(0) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

macro_rules! need_gpu {
    () => {
        if let Some(why) = skip() {
            eprintln!("SKIPPED (no GPU): {why}");
            return;
        }
    };
}

fn opts() -> RunOptions {
    RunOptions {
        ordinal: 0,
        warmup: 2,
        repeats: 20,
        seed: 1,
    }
}

fn calibrate(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = servesim_calibrate::cli::main_with_args(
        args.iter().map(OsString::from).collect(),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Needs only libnvrtc (no GPU): the kernels compile for the GPU generations we target.
#[test]
fn kernels_compile_with_nvrtc() {
    for arch in [Some("compute_80"), Some("compute_90")] {
        match gpu::compile_check(arch) {
            Ok(n) => eprintln!("{arch:?}: {n} bytes of PTX"),
            Err(gpu::GpuError::MissingLib(l)) => {
                eprintln!("SKIPPED (lib{l}.so not found; put its directory on LD_LIBRARY_PATH)");
                return;
            }
            Err(e) => panic!("{arch:?}: {e}"),
        }
    }
}

#[test]
fn probe_reports_the_device() {
    need_gpu!();
    let d = gpu::probe(0).unwrap();
    eprintln!("{d:?}");
    assert!(d.sm_count > 0 && d.memory_bytes > 0 && d.device_count >= 1);
}

#[test]
fn kernels_match_their_cpu_references() {
    need_gpu!();
    let report = gpu::self_test(&opts()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
}

#[test]
fn quick_profile_fits_and_drives_servesim() {
    need_gpu!();
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("p");
    let (code, out, err) = calibrate(&[
        "servesim-calibrate",
        "run",
        "--model",
        "llama-2-7b",
        "--quick",
        "--out",
        prof.to_str().unwrap(),
    ]);
    eprintln!("{out}");
    assert_eq!(code, 0, "{err}");
    let p = Profile::load(&prof).unwrap();
    assert_eq!(p.meta.source, "measured");
    for op in Op::ITERATION {
        let r = &p.meta.fit[op.name()];
        eprintln!("{op:?}: median fit error {:.1}%", 100.0 * r.median_rel_err);
        assert!(r.median_rel_err < 0.15, "{op:?}: {r:?}");
    }
    assert!(p.fit.swap_variant.is_some());
    // The measured profile drives a run with both profile models.
    let lengths = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/sharegpt_vllm_opt.csv");
    let sc = dir.path().join("s.toml");
    std::fs::write(
        &sc,
        format!(
            "name = \"gpu\"\nmodel = \"llama-2-7b\"\ngpu = \"{}\"\n[trace]\narrival = \"poisson\"\nrate_per_s = 4.0\nlengths_file = \"{}\"\nnum_requests = 200\n[memory]\nkv_capacity_blocks = 400\n[swap]\nprofile = \"p\"\n[cost]\nmodel = \"profile\"\npath = \"p\"\n[scheduler]\npolicy = \"srpt\"\n",
            p.meta.gpu,
            lengths.display()
        ),
    )
    .unwrap();
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = servesim::cli::main_with_args(
        [
            "servesim",
            "run",
            sc.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        &mut o,
        &mut e,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&e));
}
