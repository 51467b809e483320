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
