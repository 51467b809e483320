//! `[swap] reactive`: hand-computed timelines of one request swapped out and back in reactively
//! under each mode, an engine-level property test that the modes are ordered, and the scenario
//! plumbing (policy defaults, `config.json`, per-call copy cost, errors naming the field).
//!
//! The hand cases reuse `memory.rs`'s scripted policy and units: iteration c = 8u = 15_625_000 ns,
//! copy latency u = 1_953_125 ns, KV block 1 MiB of 4 tokens; A = request 0 (8-token prompt → 2
//! blocks, 3 outputs), B = request 1 (4-token prompt, 2 outputs), both at t = 0. Script:
//! [A] → preempt A by swap, [B] → [A, B] (A is on the host: a reactive swap-in) → [A].
//! Swap-out of A: 2 MiB at 2^29 B/s = u + 2u = 3u. Swap-in: 2 MiB at 2^26 B/s = u + 16u = 17u.
//! The replica runs L = 4 layers.

use std::collections::HashSet;

use proptest::prelude::*;
use servesim::policy::{Plan, Policy, PreemptMode, ReplicaView, RunItem};
use servesim::swap::timing::{Reactive, SwapTiming};
use servesim::swap::{Direction, KvOffload};
use servesim::vocab::TraceRow;
use servesim::vocab::request::{KvLoc, Slot};
use servesim::vocab::time::Ns;

use crate::memory::{C, MIB, Rec, U, dirs, hand_setup, pcie, row, run_timed, step, two_requests};
use crate::support::{Workdir, cli};

fn script_run(reactive: Reactive) -> Rec {
    let script = vec![
        step(&[], &[], &[0]),
        step(&[(0, PreemptMode::Swap)], &[], &[1]),
        step(&[], &[], &[0, 1]),
        step(&[], &[], &[0]),
    ];
    run_timed(
        hand_setup(
            script,
            pcie(1.0 / 512.0, (1 << 29) as f64, (1 << 26) as f64),
            KvOffload::default(),
        ),
        SwapTiming {
            reactive,
            layers: 4,
        },
        &two_requests(),
    )
    .unwrap()
}

fn ends(rec: &Rec) -> Vec<Ns> {
    rec.iterations.iter().map(|&(_, e)| e).collect()
}

/// (finish, swap stall) of A and of B.
fn outcome(rec: &Rec) -> [(Ns, Ns); 2] {
    [0, 1].map(|id| {
        let c = rec.completion(id);
        (c.finish_ns, c.swap_stall_ns)
    })
}

/// overlap: the copy [2c, 2c + 17u) = [16u, 33u) outlasts the compute [16u, 24u): the iteration
/// ends at 33u, both members stall 9u; A's last decode ends at 41u.
#[test]
fn overlap_ends_with_the_copy() {
    let rec = script_run(Reactive::Overlap);
    assert_eq!(ends(&rec), vec![C, 2 * C, 33 * U, 41 * U]);
    assert_eq!(outcome(&rec), [(41 * U, 9 * U), (33 * U, 9 * U)]);
}

/// layerwise, L = 4: layer i's copy ends at 16u + 4.25u·(i+1) = 20.25u, 24.5u, 28.75u, 33u; each
/// layer computes 2u once its copy and the previous layer are done: 20.25→22.25, 24.5→26.5,
/// 28.75→30.75, 33→35. Closed form max(16u + 8u, 16u + 4.25u + 8u, 33u + 2u) = 35u; stall 35u −
/// 24u = 11u; A ends at 43u.
#[test]
fn layerwise_waits_for_the_last_layer_copy() {
    let rec = script_run(Reactive::Layerwise);
    assert_eq!(35 * U, 68_359_375);
    assert_eq!(ends(&rec), vec![C, 2 * C, 35 * U, 43 * U]);
    assert_eq!(outcome(&rec), [(43 * U, 11 * U), (35 * U, 11 * U)]);
}

/// serial-swap-in (FastServe): the swap-out of A does not delay B's prefill; the iteration of
/// [A, B] computes after the copy: 33u + 8u = 41u (stall 17u); A ends at 49u.
#[test]
fn serial_swap_in_computes_after_the_copy() {
    let rec = script_run(Reactive::SerialSwapIn);
    assert_eq!(ends(&rec), vec![C, 2 * C, 41 * U, 49 * U]);
    assert_eq!(outcome(&rec), [(49 * U, 17 * U), (41 * U, 17 * U)]);
    assert_eq!(
        dirs(&rec),
        vec![
            (0, Direction::DeviceToHost, C, C, C + 3 * U, 2 * MIB),
            (0, Direction::HostToDevice, 2 * C, 2 * C, 33 * U, 2 * MIB),
        ]
    );
}

/// serial (vLLM ≥ 0.4): the step's swap-out [8u, 11u) runs before B's prefill, which ends at
/// 11u + 8u = 19u (B stalls 3u); the swap-in [19u, 36u) runs before [A, B], which ends at
/// 36u + 8u = 44u (both stall 17u); A ends at 52u. B's stall: 3u + 17u = 20u.
#[test]
fn serial_also_waits_for_the_steps_swap_outs() {
    let rec = script_run(Reactive::Serial);
    assert_eq!(ends(&rec), vec![C, 19 * U, 44 * U, 52 * U]);
    assert_eq!(outcome(&rec), [(52 * U, 17 * U), (44 * U, 20 * U)]);
    assert_eq!(
        dirs(&rec),
        vec![
            (0, Direction::DeviceToHost, C, C, C + 3 * U, 2 * MIB),
            (0, Direction::HostToDevice, 19 * U, 19 * U, 36 * U, 2 * MIB),
        ]
    );
}

/// n requests prefill together; all but request 0 are swapped out while it decodes alone until
/// their copies have landed; then all decode together (n − 1 reactive swap-ins in one batch),
/// and then everyone decodes to the end.
#[derive(Default)]
struct SwapAllBack {
    slots: Vec<Slot>,
    finished: HashSet<Slot>,
    phase: u32,
}

impl Policy for SwapAllBack {
    fn name(&self) -> &'static str {
        "swap-all-back"
    }
    fn on_arrival(&mut self, s: Slot, _view: &ReplicaView) -> servesim::error::Result<()> {
        self.slots.push(s);
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let item = |slot| RunItem {
            slot,
            reserve_blocks: 0,
            prefill_chunk_tokens: 0,
        };
        let live: Vec<Slot> = self
            .slots
            .iter()
            .copied()
            .filter(|s| !self.finished.contains(s))
            .collect();
        match self.phase {
            0 => plan.run.extend(live.iter().map(|&s| item(s))),
            1 => {
                plan.preempt
                    .extend(live[1..].iter().map(|&s| (s, PreemptMode::Swap)));
                plan.run.push(item(live[0]));
            }
            2 if live[1..].iter().any(|&s| view.req(s).kv_loc != KvLoc::Host) => {
                plan.run.push(item(live[0]));
                return;
            }
            _ => plan.run.extend(live.iter().map(|&s| item(s))),
        }
        self.phase += 1;
    }
    fn on_finish(&mut self, s: Slot) {
        self.finished.insert(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any compute time, copy sizes, bandwidth and layer count, the iteration with the
    /// reactive swap-ins ([`SwapAllBack`]) lasts no shorter under serial than under
    /// serial-swap-in, under serial-swap-in than layerwise, nor under layerwise than overlap.
    /// (Its start differs under serial, whose swap-outs delay the step that issues them; the
    /// swap-ins start at its start in every mode, as the copy engine is idle then.)
    #[test]
    fn reactive_modes_are_ordered(
        prompts in proptest::collection::vec(1u32..=24, 2..=5),
        iteration_us in 5_000u64..50_000,
        bw_exp in 28u32..=33,
        layers in 1u32..=96,
    ) {
        let rows: Vec<TraceRow> = prompts
            .iter()
            .enumerate()
            .map(|(i, &p)| row(i as u64, 0, p, if i == 0 { 100 } else { 3 }))
            .collect();
        let runs: Vec<Rec> = Reactive::ALL
            .iter()
            .map(|&reactive| {
                let mut setup = hand_setup(
                    Vec::new(),
                    pcie(1e-5, 2f64.powi(bw_exp as i32), 2f64.powi(bw_exp as i32)),
                    KvOffload::default(),
                );
                setup.policy = Box::new(SwapAllBack::default());
                setup.iteration_s = iteration_us as f64 * 1e-6;
                setup.kv_blocks = 256;
                setup.host_blocks = 64;
                setup.limits = crate::memory::limits(8);
                run_timed(setup, SwapTiming { reactive, layers }, &rows).unwrap()
            })
            .collect();
        let durations: Vec<Ns> = runs
            .iter()
            .map(|rec| {
                // The one iteration whose start queued swap-ins.
                let t = rec
                    .transfers
                    .iter()
                    .find(|t| t.dir == Direction::HostToDevice)
                    .expect("swap-ins happened");
                let &(s, e) = rec.iterations.iter().find(|&&(s, _)| s == t.queued_ns).unwrap();
                assert_eq!(t.start_ns, s);
                e - s
            })
            .collect();
        // Reactive::ALL is ordered overlap, layerwise, serial-swap-in, serial.
        prop_assert!(durations.windows(2).all(|w| w[0] <= w[1]), "{durations:?}");
        // The batch computes at least its iteration time in every mode.
        prop_assert!(durations[0] >= iteration_us * 1000);
        // Serial and serial-swap-in wait for the same copies here (no swap-out in that step).
        prop_assert_eq!(durations[2], durations[3]);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario plumbing.

const SCENARIO: &str = r#"name = "swap-modes"
model = "opt-13b"
gpu = "a100-40gb"
seed = 1

[trace]
arrival = "poisson"
rate_per_s = 4.0
num_requests = 20
input_lengths = { dist = "uniform", min = 64, max = 512 }
output_lengths = { dist = "uniform", min = 16, max = 128 }

[memory]
kv_capacity_blocks = 200

[cost]
model = "constant"
iteration_s = 0.02

[scheduler]
policy = "POLICY"
EXTRA
"#;

fn config_of(w: &Workdir, policy: &str, extra: &str) -> Result<serde_json::Value, String> {
    let text = SCENARIO.replace("POLICY", policy).replace("EXTRA", extra);
    let path = w.write("s.toml", &text);
    let out = w.path("out");
    let _ = std::fs::remove_dir_all(&out);
    let r = cli([
        "run",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    if r.code != 0 {
        return Err(r.stderr);
    }
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    Ok(serde_json::from_str(&text).unwrap())
}

/// Each policy's registry default lands in `config.json`, with the calls per block of its KV
/// layout (OPT-13B: 40 layers → 80 calls layer-major, 2 block-major) and the 4 µs per call.
#[test]
fn policy_defaults_are_recorded_in_config_json() {
    let w = Workdir::new();
    for (policy, reactive, layout, calls) in [
        ("vllm", "layerwise", "layer-major", 80),
        ("srpt", "layerwise", "layer-major", 80),
        ("ltr", "serial", "layer-major", 80),
        ("skip-join-mlfq", "serial-swap-in", "block-major", 2),
        ("mlfq", "serial-swap-in", "block-major", 2),
    ] {
        let cfg = config_of(&w, policy, "").unwrap();
        let s = &cfg["resolved"]["swap"];
        assert_eq!(s["reactive"], reactive, "{policy}");
        assert_eq!(s["kv_layout"], layout, "{policy}");
        assert_eq!(s["calls_per_block"], calls, "{policy}");
        assert_eq!(s["per_call_s"], 4e-6, "{policy}");
        assert_eq!(s["reactive_layers"], 40, "{policy}");
    }
    // The scenario's choice wins; an explicit per_block_s alone keeps its old meaning.
    let cfg = config_of(
        &w,
        "skip-join-mlfq",
        "[swap]\nreactive = \"overlap\"\nkv_layout = \"layer-major\"\nper_block_s = 1e-5",
    )
    .unwrap();
    let s = &cfg["resolved"]["swap"];
    assert_eq!(
        (
            &s["reactive"],
            &s["kv_layout"],
            &s["per_call_s"],
            &s["per_block_s"]
        ),
        (
            &serde_json::json!("overlap"),
            &serde_json::json!("layer-major"),
            &serde_json::json!(0.0),
            &serde_json::json!(1e-5)
        )
    );
}

/// Bad values are one-line errors naming the file, line and field.
#[test]
fn bad_swap_timing_fields_name_their_line() {
    let w = Workdir::new();
    // An unknown value is named by its line and column and lists the valid ones.
    for (extra, field) in [
        ("[swap]\nreactive = \"sometimes\"", "`serial-swap-in`"),
        ("[swap]\nkv_layout = \"diagonal\"", "`block-major`"),
        ("[swap]\nlatency_s = 1e-5\nper_call_s = -1.0", "per_call_s"),
    ] {
        let e = config_of(&w, "vllm", extra).unwrap_err();
        assert!(e.contains("s.toml") && e.contains(field), "{e}");
        // [swap] is on line 22 of the file; the field is the last line of `extra`.
        let line = 22 + extra.lines().count() - 1;
        assert!(e.contains(&format!("line {line}")), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
}

// Long on purpose: one hand-worked schedule (above) checked step by step in four swap modes.
/// Pipeline parallelism, 2 stages of L = 4 layers each; a stage computes c/2 = 4u and sends in u
/// (5u per stage). Script (a schedule at every first-stage free, exit and copy end): [A] at 0
/// (stages [0, 5u), [5u, 10u)); [B] at 5u (exit 15u); at 10u A is swapped out, [10u, 13u); nothing
/// at 13u; [A, B] at 15u with A's reactive swap-in [15u, 32u); nothing at its first-stage free;
/// [A] at its exit. Each stage copies its own layers over its own link, so each sees the whole
/// copy window [15u, 32u) split over its 4 layers (s = 4.25u; c = u per layer):
/// - overlap: stages [15u, 20u), [20u, 25u); exit max(25u, 32u) = 32u, stall 7u; A ends 42u.
/// - layerwise: stage 0 ends max(15u + 4u, 15u + 4.25u + 4u, 32u + u) = 33u, sends until 34u;
///   stage 1 (copies done) [34u, 38u) + u = 39u; stall 39u − 25u = 14u; A ends 49u.
/// - serial-swap-in and serial (no swap-out in that step): stage 0 waits until 32u: [32u, 36u)
///   + u = 37u, stage 1 until 42u; stall 17u; A ends 52u.
#[test]
fn pipeline_stages_wait_for_their_layers() {
    use servesim::cost::constant::ConstantCost;
    use servesim::engine::{EngineConfig, Guards, ReplicaParts, simulate};
    use servesim::exec::{Pipeline, SimExecutor};
    for (reactive, reactive_end, stall) in [
        (Reactive::Overlap, 32, 7),
        (Reactive::Layerwise, 39, 14),
        (Reactive::SerialSwapIn, 42, 17),
        (Reactive::Serial, 42, 17),
    ] {
        let script = vec![
            step(&[], &[], &[0]),
            step(&[], &[], &[1]),
            step(&[(0, PreemptMode::Swap)], &[], &[]),
            step(&[], &[], &[]),
            step(&[], &[], &[0, 1]),
            step(&[], &[], &[]),
            step(&[], &[], &[0]),
        ];
        let s = hand_setup(
            script,
            pcie(1.0 / 512.0, (1 << 29) as f64, (1 << 26) as f64),
            KvOffload::default(),
        );
        let parts = vec![ReplicaParts {
            policy: s.policy,
            executor: Box::new(
                SimExecutor::new(Box::new(ConstantCost {
                    iteration_s: s.iteration_s,
                }))
                .with_pipeline(Pipeline {
                    stages: 2,
                    send_latency_s: 1.0 / 512.0,
                    send_bytes_per_token: 0.0,
                    send_bytes_per_s: 1.0,
                }),
            ),
            kv_capacity_blocks: s.kv_blocks,
            host_kv_blocks: s.host_blocks,
            kv_block_bytes: s.block_bytes,
            swap: Box::new(s.swap),
            swap_timing: SwapTiming {
                reactive,
                layers: 4,
            },
            offload: s.offload,
        }];
        let cfg = EngineConfig {
            block_tokens: s.block_tokens,
            limits: s.limits,
            guards: Guards::default(),
            kv_sample_interval_ns: 0,
        };
        let rows = two_requests();
        let mut it = rows.iter().map(|r| Ok(*r));
        let mut rec = Rec::default();
        let r = simulate(
            &cfg,
            &mut it,
            parts,
            &mut servesim::predict::Oracle,
            &mut rec,
        );
        r.unwrap();
        let e = reactive_end * U;
        assert_eq!(
            rec.iterations,
            vec![(0, 10 * U), (5 * U, 15 * U), (15 * U, e), (e, e + 10 * U)],
            "{reactive:?}"
        );
        assert_eq!(
            dirs(&rec),
            vec![
                (0, Direction::DeviceToHost, 10 * U, 10 * U, 13 * U, 2 * MIB),
                (0, Direction::HostToDevice, 15 * U, 15 * U, 32 * U, 2 * MIB),
            ],
            "{reactive:?}"
        );
        assert_eq!(
            outcome(&rec),
            [(e + 10 * U, stall * U), (e, stall * U)],
            "{reactive:?}"
        );
    }
}
