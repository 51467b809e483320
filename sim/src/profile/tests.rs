//! Unit tests of the profile format: names and forms, round trips through a directory, and
//! validation errors.

use std::collections::BTreeMap;

use super::*;

fn sample() -> Profile {
    let mut ops = BTreeMap::new();
    ops.insert(
        "qkv".to_string(),
        OpFit::Roofline {
            latency_s: 1e-5,
            slope_s: 1e-8,
            floor_s: 2e-5,
        },
    );
    ops.insert(
        "h2d_pinned_gather".to_string(),
        OpFit::Copy {
            latency_s: 1e-5,
            s_per_chunk: 1e-7,
            bytes_per_s: 2e10,
        },
    );
    Profile {
        meta: Meta {
            schema_version: SCHEMA_VERSION,
            gpu: "a100-80gb".into(),
            model: "llama-2-7b".into(),
            tp: 1,
            created: "2026-01-01".into(),
            source: "measured".into(),
            tool: "test".into(),
            device: DeviceInfo {
                name: "Test GPU".into(),
                sm_count: Some(108),
                ..Default::default()
            },
            measurement: MeasurementInfo {
                dtype: "fp16".into(),
                statistic: "median".into(),
                repeats: Some(20),
                ..Default::default()
            },
            provenance: Provenance::default(),
            grid: BTreeMap::new(),
            fit: BTreeMap::new(),
        },
        fit: FitFile {
            schema_version: SCHEMA_VERSION,
            iteration_overhead_s: 0.002,
            notes: vec!["a note".into()],
            swap_variant: Some(CopyVariant::PinnedGather),
            ops,
        },
        rows: vec![
            Measurement {
                op: Op::Qkv,
                x: 16,
                y: 0,
                time_s: 3.25e-5,
                min_s: Some(3.1e-5),
                max_s: Some(3.5e-5),
                repeats: Some(20),
                source: "measured".into(),
            },
            Measurement {
                op: Op::H2dPinnedGather,
                x: 64,
                y: 131072,
                time_s: 4.5e-4,
                min_s: None,
                max_s: None,
                repeats: None,
                source: "derived:test".into(),
            },
        ],
    }
}

#[test]
fn op_names_round_trip_and_forms() {
    for op in Op::ALL {
        assert_eq!(Op::parse(op.name()), Some(op));
        assert_eq!(Op::ALL[op.index()], op);
    }
    assert_eq!(Op::Qkv.form(), Form::Roofline);
    assert_eq!(
        Op::copy(false, CopyVariant::PinnedGather),
        Op::D2hPinnedGather
    );
    assert!(Op::D2hPageableMemcpy.is_copy() && !Op::AttnDecode.is_copy());
}

#[test]
fn profile_round_trips_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample();
    let dest = dir.path().join("a100-80gb/llama-2-7b/tp1");
    p.write(&dest, &Default::default()).unwrap();
    let back = Profile::load(&dest).unwrap();
    assert_eq!(back.fit, p.fit);
    assert_eq!(back.rows, p.rows);
    let mut want = p.meta.clone();
    want.grid = grids(&p.rows);
    assert_eq!(back.meta, want);
    assert_eq!(back.meta.grid["h2d_pinned_gather"].y_max, 131072);
    // Rewriting the loaded profile gives the same bytes.
    assert_eq!(back.render().unwrap(), p.render().unwrap());
}

#[test]
fn load_rejects_other_schema_versions_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("p");
    sample().write(&dest, &Default::default()).unwrap();
    let meta = std::fs::read_to_string(dest.join(META_FILE)).unwrap();
    std::fs::write(
        dest.join(META_FILE),
        meta.replace("schema_version = 1", "schema_version = 7"),
    )
    .unwrap();
    let e = Profile::load(&dest).unwrap_err().to_string();
    assert!(e.contains("schema version 7"), "{e}");
    std::fs::write(dest.join(META_FILE), meta).unwrap();
    std::fs::write(
        dest.join(MEASUREMENTS_FILE),
        format!("{MEASUREMENTS_HEADER}\nqkv,16,0,-1,,,,measured\n"),
    )
    .unwrap();
    let e = Profile::load(&dest).unwrap_err().to_string();
    assert!(e.contains(":2: field `time_s`"), "{e}");
    std::fs::write(
        dest.join(MEASUREMENTS_FILE),
        format!("{MEASUREMENTS_HEADER}\nwarp,16,0,1,,,,measured\n"),
    )
    .unwrap();
    let e = Profile::load(&dest).unwrap_err().to_string();
    assert!(e.contains("unknown operator `warp`"), "{e}");
    assert!(Profile::load(&dir.path().join("missing")).is_err());
}

#[test]
fn fit_forms_are_checked_against_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("p");
    let mut p = sample();
    p.fit.ops.insert(
        "attn_decode".into(),
        OpFit::Linear {
            latency_s: 0.0,
            slope_s: 1.0,
        },
    );
    p.write(&dest, &Default::default()).unwrap();
    let e = Profile::load(&dest).unwrap_err().to_string();
    assert!(e.contains("[ops.attn_decode]: form `linear`"), "{e}");
}

#[test]
fn fitted_forms_by_hand() {
    let r = OpFit::Roofline {
        latency_s: 1.0,
        slope_s: 3.0,
        floor_s: 4.0,
    };
    assert_eq!(r.eval(1.0, 0.0), 6.0);
    let p = OpFit::Prefill {
        latency_s: 1.0,
        s_per_token: 0.5,
        s_per_token_sq: 0.25,
    };
    // 1 + 0.5·2 + 0.25·2·(2 + 2·1) = 4
    assert_eq!(p.eval(2.0, 1.0), 4.0);
    assert_eq!(p.prefill_batch(2.0, 4.0, 8.0), 2.0 + 2.0 + 2.0);
    let d = OpFit::Decode {
        latency_s: 1.0,
        s_per_sequence: 0.5,
        s_per_context_token: 0.01,
    };
    assert!((d.eval(4.0, 100.0) - (1.0 + 2.0 + 4.0)).abs() < 1e-12);
    let c = OpFit::Copy {
        latency_s: 1e-5,
        s_per_chunk: 1e-6,
        bytes_per_s: 1e9,
    };
    assert!((c.eval(10.0, 1e6) - (1e-5 + 1e-5 + 1e-2)).abs() < 1e-15);
}

#[test]
fn counter_reports_by_operator() {
    let c = ExtrapolationCounter::default();
    let mut out = OpSet::default();
    c.record_iteration(out);
    out.insert_if(Op::AttnDecode, true);
    out.insert_if(Op::LmHead, true);
    out.insert_if(Op::Qkv, false);
    c.record_iteration(out);
    c.record_transfer(Op::H2dPinnedGather);
    let r = c.report();
    assert_eq!((r.iterations, r.transfers), (1, 1));
    assert_eq!(r.by_operator["attn_decode"], 1);
    assert_eq!(r.by_operator["h2d_pinned_gather"], 1);
    assert!(!r.by_operator.contains_key("qkv"));
}

/// A written sample profile whose `file` is `edit`ed; the load error.
fn load_error_after(file: &str, edit: impl Fn(String) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("p");
    sample().write(&dest, &Default::default()).unwrap();
    let text = std::fs::read_to_string(dest.join(file)).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(dest.join(file), edited).unwrap();
    Profile::load(&dest).unwrap_err().to_string()
}

fn with_rows(extra: &str) -> impl Fn(String) -> String + '_ {
    move |t| format!("{t}{extra}")
}

#[test]
fn absurd_fit_values_name_file_line_field_and_range() {
    let e = load_error_after(FIT_FILE, |t| {
        t.replace(
            "iteration_overhead_s = 0.002",
            "iteration_overhead_s = 1e300",
        )
    });
    assert!(
        e.contains(
            "fit.toml:3: field `iteration_overhead_s`: must be a number from 0 to 10 s, got 1e300"
        ),
        "{e}"
    );
    let e = load_error_after(FIT_FILE, |t| {
        t.replace("slope_s = 0.00000001", "slope_s = 1e300")
    });
    assert!(
        e.contains("field `ops.qkv.slope_s`: must be a number from 0 to 1000 s"),
        "{e}"
    );
    assert!(e.contains("fit.toml:"), "{e}");
    let e = load_error_after(FIT_FILE, |t| {
        t.replace("bytes_per_s = 20000000000.0", "bytes_per_s = 1e-300")
    });
    assert!(
        e.contains("field `ops.h2d_pinned_gather.bytes_per_s`"),
        "{e}"
    );
}

#[test]
fn absurd_measurements_name_line_field_and_range() {
    let e = load_error_after(MEASUREMENTS_FILE, with_rows("qkv,32,0,1e300,,,,measured\n"));
    assert!(
        e.contains(
            "measurements.csv:4: field `time_s`: must be a number from 1e-12 to 1000 s, got 1e300"
        ),
        "{e}"
    );
    let e = load_error_after(MEASUREMENTS_FILE, with_rows("qkv,32,0,1e-3,,,0,measured\n"));
    assert!(e.contains(":4: field `repeats`: must be ≥ 1"), "{e}");
    let e = load_error_after(MEASUREMENTS_FILE, with_rows("qkv,32,0,1e-3,,,,bogus\n"));
    assert!(
        e.contains(":4: field `source`: `bogus`: must be `measured`"),
        "{e}"
    );
    let e = load_error_after(
        MEASUREMENTS_FILE,
        with_rows("qkv,32,0,1e-3,2e-3,,,measured\n"),
    );
    assert!(e.contains(":4: field `min_s`: must be ≤ time_s"), "{e}");
    let e = load_error_after(
        MEASUREMENTS_FILE,
        with_rows("qkv,32,0,1e-3,,,,measured\nqkv,32,0,2e-3,,,,measured\n"),
    );
    assert!(
        e.contains(
            ":5: field `(row)`: duplicate measured row: `qkv` at x = 32, y = 0 is already on line 4"
        ),
        "{e}"
    );
    // Imported and derived rows may repeat a shape (Vidur's files hold repeated runs).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MEASUREMENTS_FILE);
    let text = format!(
        "{MEASUREMENTS_HEADER}\nqkv,32,0,1e-3,,,,vidur:mlp.csv\nqkv,32,0,1e-3,,,,vidur:mlp.csv\n"
    );
    assert_eq!(parse_measurements(&text, &path).unwrap().len(), 2);
}

#[test]
fn oversized_measurements_and_bad_meta_are_refused() {
    let big = format!("qkv,32,0,1e-3,,,,vidur:{}\n", "x".repeat(1 << 20));
    let e = load_error_after(MEASUREMENTS_FILE, |t| format!("{t}{}", big.repeat(17)));
    assert!(
        e.contains("larger than 16 MiB") && e.contains("at most 16 MiB"),
        "{e}"
    );
    let e = load_error_after(META_FILE, |t| {
        t.replace("created = \"2026-01-01\"", "created = \"not a date\"")
    });
    assert!(
        e.contains("meta.toml:") && e.contains("field `created`"),
        "{e}"
    );
    let e = load_error_after(META_FILE, |t| t.replace("tp = 1", "tp = 0"));
    assert!(e.contains("field `tp`: must be from 1 to 1024"), "{e}");
    let e = load_error_after(META_FILE, |t| t.replace("repeats = 20", "repeats = 0"));
    assert!(
        e.contains("field `measurement.repeats`: must be ≥ 1"),
        "{e}"
    );
}

#[test]
fn dates_are_checked_on_the_calendar() {
    use super::validate::is_date;
    assert!(is_date("2024-02-29") && is_date("2026-12-07"));
    for d in [
        "2023-02-29",
        "2026-13-01",
        "2026-04-31",
        "not a date",
        "2026-1-01",
        "+026-01-01",
    ] {
        assert!(!is_date(d), "{d}");
    }
}

#[test]
fn a_row_with_another_cell_count_names_its_line() {
    let e = load_error_after(
        MEASUREMENTS_FILE,
        with_rows("qkv,32,0,1e-3,,,,measured,extra\n"),
    );
    assert!(
        e.contains("measurements.csv:4: field `(row)`: 9 cells, the header has 8"),
        "{e}"
    );
}
