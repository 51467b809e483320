//! `kv_timeline` sampling: samples at exact multiples of the interval that change nothing in the
//! run, and `kv_timeline.csv` written through the CLI. Drives the engine with the recorder of
//! [`crate::memory`].

use servesim::swap::KvOffload;
use servesim::vocab::TraceRow;
use servesim::vocab::time::Ns;

use crate::memory::{MIB, SWAP_POLICIES, Setup, build, limits, pcie, row, run};
use crate::support::Workdir;

/// Samples sit at exact multiples of the interval, cover 0 … makespan, count every unfinished
/// request once, and do not change the run.
#[test]
fn kv_samples_are_exact_multiples_and_change_nothing() {
    let p = &SWAP_POLICIES[3];
    let mk = |sample_ns| {
        let lim = limits(2);
        Setup {
            policy: build(p, 0.01, lim),
            iteration_s: 0.01,
            block_tokens: 4,
            kv_blocks: 12,
            host_blocks: 16,
            block_bytes: MIB,
            swap: pcie(1e-4, 2e8, 2e8),
            offload: KvOffload::default(),
            limits: lim,
            sample_ns,
        }
    };
    let rows: Vec<TraceRow> = (0..12)
        .map(|i| {
            row(
                i,
                i * 7_000_000,
                6 + (i as u32 * 5) % 13,
                3 + (i as u32 * 7) % 17,
            )
        })
        .collect();
    let plain = run(mk(0), &rows).unwrap();
    let step = 3_000_000;
    let sampled = run(mk(step), &rows).unwrap();
    assert!(plain.samples.is_empty());
    assert_eq!(plain.completions, sampled.completions);
    assert_eq!(plain.iterations, sampled.iterations);
    assert_eq!(plain.transfers, sampled.transfers);
    let makespan = sampled
        .completions
        .iter()
        .map(|c| c.finish_ns)
        .max()
        .unwrap();
    let times: Vec<Ns> = sampled.samples.iter().map(|s| s.time_ns).collect();
    let expected: Vec<Ns> = (0..=makespan / step).map(|k| k * step).collect();
    assert_eq!(times, expected);
    // The state at an instant: unfinished = arrived − finished by then (right-continuous).
    for s in &sampled.samples {
        let arrived = rows.iter().filter(|r| r.arrival_ns <= s.time_ns).count() as u32;
        let done = sampled
            .completions
            .iter()
            .filter(|c| c.finish_ns <= s.time_ns)
            .count() as u32;
        assert_eq!(s.running + s.waiting + s.swapped, arrived - done, "{s:?}");
        assert!(s.running <= 2 && s.gpu_blocks_used <= 12 && s.host_blocks_used <= 16);
    }
    assert!(
        sampled.samples.iter().any(|s| s.swapped > 0),
        "no swap in the case"
    );
    assert!(
        sampled
            .samples
            .iter()
            .any(|s| s.running > 0 && s.waiting > 0)
    );
}

/// `servesim run` writes `kv_timeline.csv` with the documented header (1 s default), and
/// `kv_timeline_interval_s = 0` turns it off; bad values are config errors naming the field.
#[test]
fn kv_timeline_csv_through_the_cli() {
    let w = Workdir::new();
    let base = "name = \"t\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n\
        [trace]\narrival = \"constant\"\nrate_per_s = 2.0\nnum_requests = 20\n\
        input_lengths = { dist = \"uniform\", min = 10, max = 200 }\n\
        output_lengths = { dist = \"uniform\", min = 10, max = 200 }\n\
        [cost]\nmodel = \"constant\"\niteration_s = 0.02\n\
        [scheduler]\npolicy = \"skip-join-mlfq\"\nmax_batch_size = 4\n\
        [policies.skip-join-mlfq]\noffload = \"paper\"\n";
    let out = w.path("o");
    let run_with = |extra: &str| {
        let scn = w.write("s.toml", format!("{base}{extra}"));
        let r = crate::support::cli([
            "run",
            scn.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        (r.code, r.stdout, r.stderr)
    };
    let (code, _, e) = run_with("");
    assert_eq!(code, 0, "{e}");
    let csv = std::fs::read_to_string(out.join("kv_timeline.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped"
    );
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first[..2], ["0.000000000", "0"]);
    let second: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(second[0], "1.000000000");
    let (code, _, e) = run_with("[output]\nkv_timeline_interval_s = 0\n");
    assert_eq!(code, 0, "{e}");
    assert!(!out.join("kv_timeline.csv").exists());
    for (extra, field) in [
        (
            "[output]\nkv_timeline_interval_s = -1.0\n",
            "kv_timeline_interval_s",
        ),
        ("[swap]\nkv_offload_bits = 2\n", "kv_offload_bits"),
        (
            "[swap]\nkv_quant_s_per_byte = -1e-12\n",
            "kv_quant_s_per_byte",
        ),
    ] {
        let (code, _, e) = run_with(extra);
        assert_eq!(code, 2, "{extra}");
        assert!(e.contains(field) && e.contains(": line "), "{extra}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.
