//! Unit tests of the calibration command line.

use super::*;

/// Run a command line in-process: (exit code, stdout + stderr).
fn calib(a: &[&str]) -> (i32, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut args = vec![OsString::from("servesim-calibrate")];
    args.extend(a.iter().map(OsString::from));
    let code = main_with_args(args, &mut out, &mut err);
    out.extend(err);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn civil_dates_by_hand() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(19_723), "2024-01-01");
    assert_eq!(civil_date(20_513), "2026-03-01");
    assert_eq!(today().len(), 10);
}

#[test]
fn plan_prints_a_summary_and_writes_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("plan.csv");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = main_with_args(
        [
            "servesim-calibrate",
            "plan",
            "--model",
            "opt-13b",
            "--quick",
            "--out",
            csv.to_str().unwrap(),
        ]
        .map(OsString::from)
        .to_vec(),
        &mut out,
        &mut err,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(
        text.contains("attn_decode") && text.contains("estimated"),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .starts_with("op,x,y,kernel")
    );
}

#[test]
fn bad_flag_values_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let out = out.to_str().unwrap();
    let cpu = [
        "run",
        "--device",
        "cpu",
        "--model",
        "cpu-tiny-2x256",
        "--out",
        out,
    ];
    for (extra, want) in [
        (&["--repeats", "0"][..], "--repeats"),
        (&["--max-tokens", "0"], "--max-tokens"),
        (&["--date", "not a date"], "--date"),
        (&["--date", "2026-02-30"], "--date"),
        (&["--threads", "100000"], "--threads"),
        (&["--warmup", "4000000000"], "--warmup"),
    ] {
        let (code, text) = calib(&[&cpu[..], extra].concat());
        assert_eq!(code, 2, "{extra:?}: {text}");
        assert!(text.contains(want), "{extra:?}: {text}");
    }
    assert!(!dir.path().join("p").exists());
    // A GPU run needs the documented 20 repeats (checked before any device is touched).
    let (code, text) = calib(&["run", "--model", "llama-2-7b", "--repeats", "1"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--repeats 1: a GPU run times every shape at least 20 times"),
        "{text}"
    );
    let (code, text) = calib(&["import-vidur", "--check", "--date", "yesterday"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--date"), "{text}");
}

#[test]
fn plan_device_is_cpu_or_a_gpu() {
    for d in ["cuda", "gpu", "0"] {
        let (code, text) = calib(&["plan", "--model", "llama-2-7b", "--quick", "--device", d]);
        assert_eq!(code, 0, "{d}: {text}");
        assert!(text.contains("GPU time"), "{d}: {text}");
    }
    let (code, text) = calib(&["plan", "--model", "llama-2-7b", "--gpu", "cpu"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--device cpu"), "{text}");
    let (code, text) = calib(&["plan", "--model", "llama-2-7b", "--device", "bogus"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--device") && text.contains("expected `cpu`"),
        "{text}"
    );
}

#[test]
fn a_failed_fit_names_the_operator_its_shapes_and_why() {
    use servesim::profile::Measurement;
    let row = |x: u64, t: f64| Measurement {
        op: Op::Qkv,
        x,
        y: 0,
        time_s: t,
        min_s: None,
        max_s: None,
        repeats: None,
        source: "measured".into(),
    };
    // Times whose squares underflow (a profile's load refuses them; `fit_op` is also a library
    // function).
    let rows = [row(4, 1e-300), row(8, 2e-300)];
    let e = crate::fitting::fit_op(Op::Qkv, &rows.iter().collect::<Vec<_>>());
    let e = format!("{:#}", e.unwrap_err());
    assert!(
        e.contains("`qkv`: the roofline fit failed over 2 shape(s) (x 4–8, y 0–0): no latency gives a finite error"),
        "{e}"
    );
    let rows = [row(4, f64::NAN)];
    let e = crate::fitting::fit_op(Op::Qkv, &rows.iter().collect::<Vec<_>>());
    let e = format!("{:#}", e.unwrap_err());
    assert!(
        e.contains("`qkv`: the time at x = 4, y = 0 is NaN s"),
        "{e}"
    );
}
