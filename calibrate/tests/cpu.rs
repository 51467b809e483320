//! CPU calibration end to end: `servesim calibrate run --device cpu` on the CI model with the
//! smallest settings, the profile read back by servesim's reader and used by `servesim run`
//! (`[cost] model = "profile"`, `[swap] profile`), then `servesim fidelity` on it (the live run
//! really computes; its times are held to a loose bound only).

use std::ffi::OsString;
use std::path::Path;

use servesim::profile::{CopyVariant, Op, Profile};

fn run(
    f: fn(Vec<OsString>, &mut dyn std::io::Write, &mut dyn std::io::Write) -> i32,
    a: &[&str],
) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = f(a.iter().map(OsString::from).collect(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn calib(a: &[&str]) -> (i32, String, String) {
    run(servesim_calibrate::cli::main_with_args, a)
}

fn lengths() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/sharegpt_vllm_opt.csv")
        .display()
        .to_string()
}

#[test]
fn a_tiny_cpu_calibration_writes_a_profile_servesim_runs_with() {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("cpu/cpu-tiny-2x256/tp1");
    let (code, out, err) = calib(&[
        "servesim-calibrate",
        "run",
        "--device",
        "cpu",
        "--model",
        "cpu-tiny-2x256",
        "--quick",
        "--cell-ms",
        "0",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--out",
        prof.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("attn_decode"), "{out}");
    let p = Profile::load(&prof).unwrap();
    assert_eq!((p.meta.gpu.as_str(), p.meta.tp), ("cpu", 1));
    assert_eq!(p.meta.measurement.dtype, "fp32");
    assert!(p.meta.provenance.sources[0].contains("2 threads"));
    assert_eq!(p.fit.swap_variant, Some(CopyVariant::PinnedMemcpy));
    assert!(p.fit.iteration_overhead_s >= 0.0 && p.fit.iteration_overhead_s < 1.0);
    // Timed inside real forward passes by default; the overhead is their time outside the
    // operators, from the same forwards.
    let notes = p.meta.provenance.notes.join("\n");
    assert!(notes.contains("in-forward timing"), "{notes}");
    assert!(
        p.fit.notes[0].contains("in-forward grid"),
        "{:?}",
        p.fit.notes
    );
    for op in Op::ITERATION {
        assert!(p.op_fit(op).is_some(), "{op:?}");
        assert!(p.rows_of(op).count() > 0, "{op:?}");
    }
    assert!(
        p.rows
            .iter()
            .all(|r| r.time_s > 0.0 && r.source == "measured")
    );
    let scenario = dir.path().join("cpu.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"cpu_profile\"\nseed = 1\nmodel = \"cpu-tiny-2x256\"\ngpu = \"cpu\"\n\n[memory]\nkv_capacity_blocks = 300\nhost_kv_bytes = 8000000\n\n[swap]\nprofile = \"cpu/cpu-tiny-2x256/tp1\"\n\n[cost]\nmodel = \"profile\"\npath = \"cpu/cpu-tiny-2x256/tp1\"\n\n[scheduler]\npolicy = \"srpt\"\nmax_batch_size = 16\n\n[trace]\narrival = \"poisson\"\nrate_per_s = 20.0\nlengths_file = \"{}\"\nnum_requests = 60\n",
            lengths()
        ),
    )
    .unwrap();
    let runs = dir.path().join("run");
    let (code, _, err) = run(
        servesim::cli::main_with_args,
        &[
            "servesim",
            "run",
            scenario.to_str().unwrap(),
            "--out",
            runs.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["requests"], 60);
    the_fidelity_loop_closes_on_the_profile(&scenario, &dir.path().join("fidelity"));
}

/// `servesim fidelity` on the profile just measured: the 60 requests are simulated, then really
/// computed on the CPU backend, then compared. The bound is loose (a factor of 20 between the
/// model's and the measured mean batch time) so that a loaded CI machine cannot fail it, yet a
/// unit slip or a backend that skips the compute would; the live run's logits checksums must
/// change with the batch.
fn the_fidelity_loop_closes_on_the_profile(scenario: &Path, out: &Path) {
    let (code, stdout, err) = run(
        servesim::cli::main_with_args,
        &[
            "servesim",
            "fidelity",
            scenario.to_str().unwrap(),
            "--policies",
            "vllm",
            "--threads",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("| vllm | 20 | 60 |"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    let value = |metric: &str, stat: &str, col: usize| -> f64 {
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|c| c[2] == metric && c[3] == stat)
            .unwrap_or_else(|| panic!("no {metric} {stat} in {csv}"))[col]
            .parse()
            .unwrap()
    };
    for (metric, stat) in [
        ("jct_s", "mean"),
        ("batch_s", "mean"),
        ("iteration_s", "mean"),
    ] {
        let (sim, live) = (value(metric, stat, 4), value(metric, stat, 5));
        assert!(sim > 0.0 && live > 0.0, "{metric} {stat}: {sim} {live}");
        assert!(
            (1.0 / 20.0..20.0).contains(&(live / sim)),
            "{metric} {stat}: sim {sim} s, live {live} s"
        );
    }
    let its = std::fs::read_to_string(out.join("runs/vllm-r20/live/iterations.csv")).unwrap();
    let header: Vec<&str> = its.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (c, p) = (col("checksum"), col("predicted_s"));
    let rows: Vec<Vec<&str>> = its
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.len() > 60, "{} iterations", rows.len());
    assert!(rows.iter().all(|r| !r[c].is_empty() && !r[p].is_empty()));
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|r| r[c]).collect();
    assert!(distinct.len() > rows.len() / 2, "checksums barely change");
    for sub in [
        "runs/vllm-r20/sim/requests.csv",
        "runs/vllm-r20/compare.csv",
        "fidelity.md",
    ] {
        assert!(out.join(sub).is_file(), "{sub}");
    }
}

#[test]
fn cpu_plan_prints_an_estimate_and_bad_cpu_runs_exit_2() {
    let (code, out, err) = calib(&[
        "servesim-calibrate",
        "plan",
        "--device",
        "cpu",
        "--model",
        "cpu-small-4x512",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("on the CPU") && out.contains("estimated"),
        "{out}"
    );
    for (args, want) in [
        (
            &["--model", "cpu-tiny-2x256", "--tp", "2"][..],
            "tp = 1 only",
        ),
        (&["--model", "opt-13b"][..], "Llama-style"),
        (&["--model", "nope"][..], "unknown model"),
        // 70e9 f32 weights (261 GiB): refused before any cell is timed (the copy and isolated
        // operator cells used to run first, for minutes).
        (&["--model", "llama-2-70b"][..], "choose a smaller model"),
        (
            &["--model", "cpu-tiny-2x256", "--cell-ms=-1"][..],
            "--cell-ms",
        ),
    ] {
        let mut a = vec!["servesim-calibrate", "run", "--device", "cpu"];
        a.extend_from_slice(args);
        let (code, _, err) = calib(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
    }
    let (code, _, err) = calib(&[
        "servesim-calibrate",
        "run",
        "--model",
        "llama-2-7b",
        "--device",
        "gpu0",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("a CUDA device ordinal or `cpu`"), "{err}");
}
