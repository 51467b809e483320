//! KV memory hierarchy: hand-computed swap timings (one swap-out and one swap-in of known size,
//! overlapped with compute or stalling it), quantized offload, recompute fallback without a host
//! pool under every swap-capable policy; and the engine recorder that [`crate::kv_timeline`],
//! [`crate::memory_props`] and [`crate::swap_modes`] run through.
//!
//! Every run drives [`servesim::engine::simulate`] with an [`Observer`] that asks for memory
//! snapshots ([`Observer::wants_memory`]): the engine then reports its pools and every request's
//! holdings at each iteration start and every copy it queues (the engine does no I/O).

use std::collections::HashMap;
use std::sync::Arc;

use servesim::cost::constant::ConstantCost;
use servesim::cost::{BatchShape, CostModel};
use servesim::engine::{
    Completion, EngineConfig, Guards, KvSample, MemorySnapshot, Observer, ReplicaParts,
    TransferRecord, simulate,
};
use servesim::exec::SimExecutor;
use servesim::policy::{Limits, Plan, Policy, PolicyEnv, PreemptMode, ReplicaView, RunItem};
use servesim::predict::Oracle;
use servesim::swap::timing::SwapTiming;
use servesim::swap::{Direction, KvLayout, KvOffload, PcieSwap, SwapSpec};
use servesim::vocab::TraceRow;
use servesim::vocab::request::{KvLoc, Slot};
use servesim::vocab::time::Ns;

use crate::support::Workdir;

/// Everything the engine reports.
#[derive(Default)]
pub(crate) struct Rec {
    pub(crate) completions: Vec<Completion>,
    pub(crate) iterations: Vec<(Ns, Ns)>,
    pub(crate) snapshots: Vec<MemorySnapshot>,
    pub(crate) transfers: Vec<TransferRecord>,
    pub(crate) samples: Vec<KvSample>,
}

impl Observer for Rec {
    fn on_completion(&mut self, c: &Completion) {
        self.completions.push(*c);
    }
    fn on_iteration(&mut self, _r: u32, start: Ns, end: Ns, _shape: &BatchShape) {
        self.iterations.push((start, end));
    }
    fn wants_memory(&self) -> bool {
        true
    }
    fn on_memory(&mut self, s: &MemorySnapshot) {
        self.snapshots.push(s.clone());
    }
    fn on_transfer(&mut self, t: &TransferRecord) {
        self.transfers.push(*t);
    }
    fn on_kv_sample(&mut self, s: &KvSample) {
        self.samples.push(*s);
    }
}

impl Rec {
    pub(crate) fn completion(&self, id: u64) -> &Completion {
        self.completions.iter().find(|c| c.id == id).unwrap()
    }
}

/// One replica run through the engine.
pub(crate) struct Setup {
    pub(crate) policy: Box<dyn Policy>,
    pub(crate) iteration_s: f64,
    pub(crate) block_tokens: u32,
    pub(crate) kv_blocks: u32,
    pub(crate) host_blocks: u32,
    pub(crate) block_bytes: u64,
    pub(crate) swap: PcieSwap,
    pub(crate) offload: KvOffload,
    pub(crate) limits: Limits,
    pub(crate) sample_ns: Ns,
}

pub(crate) fn limits(batch: u32) -> Limits {
    Limits {
        max_batch_size: batch,
        max_batch_tokens: 256,
        max_context_tokens: 128,
    }
}

pub(crate) fn run(s: Setup, rows: &[TraceRow]) -> Result<Rec, String> {
    run_timed(s, SwapTiming::OVERLAP, rows)
}

/// [`run`] with iterations waiting for reactive swap-ins as `timing` says.
pub(crate) fn run_timed(s: Setup, timing: SwapTiming, rows: &[TraceRow]) -> Result<Rec, String> {
    let parts = vec![ReplicaParts {
        policy: s.policy,
        executor: Box::new(SimExecutor::new(Box::new(ConstantCost {
            iteration_s: s.iteration_s,
        }))),
        kv_capacity_blocks: s.kv_blocks,
        host_kv_blocks: s.host_blocks,
        kv_block_bytes: s.block_bytes,
        swap: Box::new(s.swap),
        swap_timing: timing,
        offload: s.offload,
    }];
    let cfg = EngineConfig {
        block_tokens: s.block_tokens,
        limits: s.limits,
        guards: Guards {
            max_events: 5_000_000,
            ..Guards::default()
        },
        kv_sample_interval_ns: s.sample_ns,
    };
    let mut it = rows.iter().map(|r| Ok(*r));
    let mut rec = Rec::default();
    simulate(&cfg, &mut it, parts, &mut Oracle, &mut rec).map_err(|e| e.to_string())?;
    Ok(rec)
}

pub(crate) fn pcie(latency_s: f64, d2h: f64, h2d: f64) -> PcieSwap {
    PcieSwap::resolve(
        &SwapSpec {
            latency_s: Some(latency_s),
            per_block_s: Some(0.0),
            d2h_bytes_per_s: Some(d2h),
            h2d_bytes_per_s: Some(h2d),
            ..Default::default()
        },
        1.0,
        1,
        KvLayout::BlockMajor,
        1,
    )
    .unwrap()
}

pub(crate) fn row(id: u64, arrival_ns: Ns, input: u32, output: u32) -> TraceRow {
    TraceRow {
        id,
        arrival_ns,
        input_tokens: input,
        output_tokens: output,
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-computed timings.

/// A policy that follows a script: at its k-th boundary it preempts, swaps in and runs the
/// listed request ids (nothing once the script is over).
struct Scripted {
    steps: Vec<Step>,
    k: usize,
    slots: HashMap<u64, Slot>,
}

#[derive(Clone, Default)]
pub(crate) struct Step {
    preempt: Vec<(u64, PreemptMode)>,
    swap_in: Vec<u64>,
    run: Vec<u64>,
}

pub(crate) fn step(preempt: &[(u64, PreemptMode)], swap_in: &[u64], run: &[u64]) -> Step {
    Step {
        preempt: preempt.to_vec(),
        swap_in: swap_in.to_vec(),
        run: run.to_vec(),
    }
}

impl Policy for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> servesim::error::Result<()> {
        self.slots.insert(view.req(s).id, s);
        Ok(())
    }
    fn schedule(&mut self, _view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let Some(st) = self.steps.get(self.k).cloned() else {
            return;
        };
        self.k += 1;
        plan.preempt
            .extend(st.preempt.iter().map(|&(id, m)| (self.slots[&id], m)));
        plan.swap_in
            .extend(st.swap_in.iter().map(|id| self.slots[id]));
        plan.run.extend(st.run.iter().map(|id| RunItem {
            slot: self.slots[id],
            reserve_blocks: 0,
            prefill_chunk_tokens: 0,
        }));
    }
    fn on_finish(&mut self, _s: Slot) {}
}

// Units chosen so that every time is exact in binary floating point:
// iteration c = 2^-6 s = 15_625_000 ns; copy latency u = 2^-9 s = 1_953_125 ns; KV block =
// 2^20 bytes (1 MiB) of 4 tokens. A = request 0 (8-token prompt, 3 output tokens), B = request 1
// (4-token prompt, 2 output tokens), both at t = 0; 8 GPU blocks, 8 host blocks.
pub(crate) const C: Ns = 15_625_000;
pub(crate) const U: Ns = 1_953_125;
pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn two_requests() -> Vec<TraceRow> {
    vec![row(0, 0, 8, 3), row(1, 0, 4, 2)]
}

pub(crate) fn hand_setup(script: Vec<Step>, swap: PcieSwap, offload: KvOffload) -> Setup {
    Setup {
        policy: Box::new(Scripted {
            steps: script,
            k: 0,
            slots: HashMap::new(),
        }),
        iteration_s: 1.0 / 64.0,
        block_tokens: 4,
        kv_blocks: 8,
        host_blocks: 8,
        block_bytes: MIB,
        swap,
        offload,
        limits: limits(4),
        sample_ns: 0,
    }
}

pub(crate) fn dirs(rec: &Rec) -> Vec<(u64, Direction, Ns, Ns, Ns, u64)> {
    rec.transfers
        .iter()
        .map(|t| (t.id, t.dir, t.queued_ns, t.start_ns, t.end_ns, t.bytes))
        .collect()
}

/// Proactive: A is swapped out while B prefills and swapped back in while B decodes; both copies
/// hide under compute, so every iteration takes exactly c.
///
/// - [0, c): A prefills (8 tokens → 2 blocks).
/// - [c, 2c): A swapped out — 2 blocks = 2 MiB at 2^29 B/s: u + 2^21/2^29 s = u + 2u = 3u =
///   5_859_375 ns, done at c + 3u = 21_484_375 — while B prefills (1 block).
/// - [2c, 3c): A swapped in — 2 MiB at 2^28 B/s: u + 2^21/2^28 s = u + 4u = 5u = 9_765_625 ns,
///   done at 2c + 5u = 41_015_625 < 3c = 46_875_000 — while B decodes; B finishes at 3c.
/// - [3c, 4c), [4c, 5c): A decodes twice and finishes at 5c = 78_125_000.
#[test]
fn proactive_swap_out_and_in_overlap_compute() {
    let script = vec![
        step(&[], &[], &[0]),
        step(&[(0, PreemptMode::Swap)], &[], &[1]),
        step(&[], &[0], &[1]),
        step(&[], &[], &[0]),
        step(&[], &[], &[0]),
    ];
    let rec = run(
        hand_setup(
            script,
            pcie(1.0 / 512.0, (1 << 29) as f64, (1 << 28) as f64),
            KvOffload::default(),
        ),
        &two_requests(),
    )
    .unwrap();
    assert_eq!(
        dirs(&rec),
        vec![
            (0, Direction::DeviceToHost, C, C, C + 3 * U, 2 * MIB),
            (
                0,
                Direction::HostToDevice,
                2 * C,
                2 * C,
                2 * C + 5 * U,
                2 * MIB
            ),
        ]
    );
    assert_eq!(C + 3 * U, 21_484_375);
    assert_eq!(2 * C + 5 * U, 41_015_625);
    let ends: Vec<Ns> = rec.iterations.iter().map(|&(_, e)| e).collect();
    assert_eq!(ends, vec![C, 2 * C, 3 * C, 4 * C, 5 * C]);
    let (a, b) = (rec.completion(0), rec.completion(1));
    assert_eq!((a.finish_ns, b.finish_ns), (5 * C, 3 * C));
    assert_eq!((a.swap_out_bytes, a.swap_in_bytes), (2 * MIB, 2 * MIB));
    assert_eq!(
        (a.swap_stall_ns, a.preemptions, a.recomputed_tokens),
        (0, 1, 0)
    );
    // Pools at the iteration starts: at c, A still holds its 2 GPU blocks while it is copied
    // out (freed when the copy completes) plus 2 host blocks; at 2c, A holds 2 GPU blocks for
    // the copy back (host blocks freed when it lands), B holds 2.
    let pools: Vec<(Ns, u32, u32)> = rec
        .snapshots
        .iter()
        .map(|s| (s.start_ns, s.gpu_used, s.host_used))
        .collect();
    assert_eq!(
        pools,
        vec![
            (0, 2, 0),
            (C, 3, 2),
            (2 * C, 4, 2),
            (3 * C, 3, 0),
            (4 * C, 3, 0)
        ]
    );
}

/// Reactive: A is scheduled while its KV is on the host; the iteration waits for the copy.
/// Swap-in at 2^26 B/s: u + 2^21/2^26 s = u + 16u = 17u = 33_203_125 ns > c, so the iteration
/// [2c, …) ends at max(2c + c, 2c + 17u) = 2c + 17u = 64_453_125 and both batch members stall
/// 17u − c = 17_578_125 ns. B finishes then; A's last decode ends c later, at 80_078_125.
#[test]
fn reactive_swap_in_stalls_when_the_copy_outlasts_compute() {
    let script = vec![
        step(&[], &[], &[0]),
        step(&[(0, PreemptMode::Swap)], &[], &[1]),
        step(&[], &[], &[0, 1]),
        step(&[], &[], &[0]),
    ];
    let rec = run(
        hand_setup(
            script,
            pcie(1.0 / 512.0, (1 << 29) as f64, (1 << 26) as f64),
            KvOffload::default(),
        ),
        &two_requests(),
    )
    .unwrap();
    let t_in = 2 * C + 17 * U;
    assert_eq!(t_in, 64_453_125);
    assert_eq!(
        dirs(&rec),
        vec![
            (0, Direction::DeviceToHost, C, C, C + 3 * U, 2 * MIB),
            (0, Direction::HostToDevice, 2 * C, 2 * C, t_in, 2 * MIB),
        ]
    );
    let ends: Vec<Ns> = rec.iterations.iter().map(|&(_, e)| e).collect();
    assert_eq!(ends, vec![C, 2 * C, t_in, t_in + C]);
    let (a, b) = (rec.completion(0), rec.completion(1));
    assert_eq!((a.finish_ns, b.finish_ns), (80_078_125, t_in));
    assert_eq!((a.swap_stall_ns, b.swap_stall_ns), (17 * U - C, 17 * U - C));
    assert_eq!(17 * U - C, 17_578_125);
    // The batch member whose KV is in flight is ready exactly when the iteration ends.
    let s = &rec.snapshots[2];
    let a_member = s.batch.iter().find(|m| m.id == 0).unwrap();
    assert_eq!(
        (a_member.kv_loc, a_member.kv_ready_ns, s.end_ns),
        (KvLoc::SwappingIn, Some(t_in), t_in)
    );
}

/// The same proactive script with 8-bit offloaded KV and (de)quantization at 2^-31 s per FP16
/// byte: the 2 MiB of A move as 1 MiB and take 1 host block.
/// - out: u + 2^20/2^29 s + 2^21·2^-31 s = u + u + u/2 = 2.5u = 4_882_812.5 → 4_882_813 ns (rounded up);
/// - in:  u + 2^20/2^28 s + u/2 = 3.5u = 6_835_937.5 → 6_835_938 ns.
#[test]
fn quantized_offload_halves_bytes_and_host_blocks() {
    let script = vec![
        step(&[], &[], &[0]),
        step(&[(0, PreemptMode::Swap)], &[], &[1]),
        step(&[], &[0], &[1]),
        step(&[], &[], &[0]),
        step(&[], &[], &[0]),
    ];
    let offload = KvOffload::resolve(&SwapSpec {
        kv_offload_bits: Some(8),
        kv_quant_s_per_byte: Some(1.0 / (1u64 << 31) as f64),
        ..Default::default()
    })
    .unwrap();
    let rec = run(
        hand_setup(
            script,
            pcie(1.0 / 512.0, (1 << 29) as f64, (1 << 28) as f64),
            offload,
        ),
        &two_requests(),
    )
    .unwrap();
    assert_eq!(
        dirs(&rec),
        vec![
            (0, Direction::DeviceToHost, C, C, C + 4_882_813, MIB),
            (
                0,
                Direction::HostToDevice,
                2 * C,
                2 * C,
                2 * C + 6_835_938,
                MIB
            ),
        ]
    );
    assert_eq!(rec.transfers[0].host_blocks, 1);
    let host: Vec<u32> = rec.snapshots.iter().map(|s| s.host_used).collect();
    assert_eq!(host, vec![0, 1, 1, 0, 0]);
    let a = rec.completion(0);
    assert_eq!(
        (a.swap_out_bytes, a.swap_in_bytes, a.finish_ns),
        (MIB, MIB, 5 * C)
    );
}

/// `alise` brings ALISE's system defaults: the EWT memory manager and 8-bit offloaded KV (an
/// assumption, the paper gives no width), each switchable; `[swap] kv_offload_bits` overrides
/// the policy's width for any policy, and contradicting it in both places is an error naming
/// the line and field.
#[test]
fn alise_defaults_to_ewt_and_8_bit_offload_with_switches() {
    let w = Workdir::new();
    let resolve = |policy: &str, extra: &str| {
        let text = format!(
            "name = \"t\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n\
             [trace]\narrival = \"constant\"\nrate_per_s = 2.0\nnum_requests = 4\n\
             input_lengths = {{ dist = \"fixed\", value = 10 }}\n\
             output_lengths = {{ dist = \"fixed\", value = 10 }}\n\
             [cost]\nmodel = \"constant\"\niteration_s = 0.02\n\
             [scheduler]\npolicy = \"{policy}\"\n{extra}"
        );
        let path = w.write("s.toml", &text);
        servesim::scenario::parse(&path, &text)
            .and_then(|l| l.resolve(&servesim::scenario::Overrides::default()))
            .map(|r| (r.offload.bits, r.policy_params.clone()))
            .map_err(|e| e.to_string())
    };
    let (bits, params) = resolve("alise", "").unwrap();
    assert_eq!(bits, 8);
    assert_eq!(params["offload"], "ewt");
    assert_eq!(params["aging_weight"], 0.0);
    assert_eq!(params["kv_offload_bits"], 8);
    // Other policies keep FP16 offloaded KV.
    assert_eq!(resolve("srpt", "").unwrap().0, 16);
    // The switches.
    let (bits, params) = resolve(
        "alise",
        "[policies.alise]\noffload = \"reactive\"\nkv_offload_bits = 16\n",
    )
    .unwrap();
    assert_eq!((bits, &params["offload"]), (16, &"reactive".into()));
    assert_eq!(
        resolve("alise", "[policies.alise]\nkv_offload_bits = 4\n")
            .unwrap()
            .0,
        4
    );
    // The global key wins over the policy's default, and applies to every policy.
    assert_eq!(
        resolve("alise", "[swap]\nkv_offload_bits = 16\n")
            .unwrap()
            .0,
        16
    );
    assert_eq!(
        resolve("srpt", "[swap]\nkv_offload_bits = 4\n").unwrap().0,
        4
    );
    // Both written and agreeing: fine; contradicting: an error at the policy's key (line 18).
    let both = "[swap]\nkv_offload_bits = 4\n[policies.alise]\nkv_offload_bits = 4\n";
    assert_eq!(resolve("alise", both).unwrap().0, 4);
    let e = resolve(
        "alise",
        "[swap]\nkv_offload_bits = 4\n[policies.alise]\nkv_offload_bits = 8\n",
    )
    .unwrap_err();
    assert!(
        e.contains("line 18") && e.contains("kv_offload_bits"),
        "{e}"
    );
    let e = resolve("alise", "[policies.alise]\nkv_offload_bits = 2\n").unwrap_err();
    assert!(e.contains("kv_offload_bits") && e.contains("line"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Real policies.

/// A swap-capable policy and its `[policies.NAME]` table.
#[derive(Debug, Clone)]
pub(crate) struct Pol {
    pub(crate) name: &'static str,
    pub(crate) table: &'static str,
}

pub(crate) const SWAP_POLICIES: &[Pol] = &[
    Pol {
        name: "mlfq",
        table: "",
    },
    Pol {
        name: "mlfq",
        table: "preset = \"paper\"\noffload = \"paper\"",
    },
    Pol {
        name: "skip-join-mlfq",
        table: "offload = \"code\"",
    },
    Pol {
        name: "skip-join-mlfq",
        table: "offload = \"paper\"",
    },
    Pol {
        name: "skip-join-mlfq",
        table: "offload = \"reactive\"",
    },
    Pol {
        name: "skip-join-mlfq",
        table: "preset = \"paper\"\noffload = \"paper\"",
    },
    Pol {
        name: "skip-join-mlfq",
        table: "offload = \"paper\"\nswap_in_window = 2",
    },
    Pol {
        name: "srpt",
        table: "",
    },
    Pol {
        name: "alise",
        table: "offload = \"ewt\"",
    },
    Pol {
        name: "ltr",
        table: "",
    },
    Pol {
        name: "alise",
        table: "offload = \"reactive\"",
    },
];

pub(crate) fn build(p: &Pol, iteration_s: f64, lim: Limits) -> Box<dyn Policy> {
    let cost: Arc<dyn CostModel> = Arc::new(ConstantCost { iteration_s });
    let env = PolicyEnv { limits: lim, cost };
    let table: toml::Value = toml::from_str(p.table).unwrap();
    let entry = servesim::policy::lookup(p.name).unwrap();
    (entry.build)(Some(&table), &env)
        .unwrap_or_else(|e| panic!("{} {}: {e}", p.name, p.table))
        .0
}

pub(crate) fn offload_bits(bits: u32) -> KvOffload {
    KvOffload::resolve(&SwapSpec {
        kv_offload_bits: Some(bits),
        ..Default::default()
    })
    .unwrap()
}

/// Pressure case: A (20-token prompt, 20 outputs, 10 of the 10 blocks at its end) runs alone,
/// then B (20-token prompt, 2 outputs) arrives at 50 ms with higher priority under every policy
/// here (level 0 / shorter remaining time) and needs blocks A holds.
fn pressure(p: &Pol, host_blocks: u32) -> Result<Rec, String> {
    let lim = limits(4);
    run(
        Setup {
            policy: build(p, 1.0 / 64.0, lim),
            iteration_s: 1.0 / 64.0,
            block_tokens: 4,
            kv_blocks: 10,
            host_blocks,
            block_bytes: MIB,
            swap: pcie(1e-4, 1e10, 1e10),
            offload: KvOffload::default(),
            limits: lim,
            sample_ns: 0,
        },
        &[row(0, 0, 20, 20), row(1, 50_000_000, 20, 2)],
    )
}

/// With no host pool, every swap policy degrades to recompute (no copy, no error, every
/// request finishes); with a host pool the same case does swap (so the first half is not
/// vacuous).
#[test]
fn zero_host_memory_degrades_to_recompute() {
    for p in SWAP_POLICIES {
        let rec = pressure(p, 0).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(rec.completions.len(), 2, "{p:?}");
        assert!(rec.transfers.is_empty(), "{p:?} copied with no host pool");
        let recomputed: u64 = rec.completions.iter().map(|c| c.recomputed_tokens).sum();
        let preempted: u32 = rec.completions.iter().map(|c| c.preemptions).sum();
        assert!(preempted > 0 && recomputed > 0, "{p:?}: no recompute");
        assert!(rec.snapshots.iter().all(|s| s.host_used == 0));

        let rec = pressure(p, 64).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(rec.completions.len(), 2, "{p:?}");
        assert!(
            !rec.transfers.is_empty(),
            "{p:?} never swapped with a host pool"
        );
        let recomputed: u64 = rec.completions.iter().map(|c| c.recomputed_tokens).sum();
        assert_eq!(recomputed, 0, "{p:?} recomputed although the host had room");
    }
}

// ---------------------------------------------------------------------------------------------
// kv_timeline sampling.
