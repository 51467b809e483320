//! Property tests of the KV memory invariants over random traces for every swap-capable policy
//! (`mlfq`, `skip-join-mlfq` in each offload mode, `srpt`, `alise` reactive and EWT, `ltr`),
//! offloaded KV at 16/8/4 bits, host pools from none to ample; and a check that the generated
//! cases do exercise swapping. Runs through the recorder of [`crate::memory`].

use std::collections::HashMap;

use proptest::prelude::*;
use servesim::engine::TransferRecord;
use servesim::swap::Direction;
use servesim::vocab::TraceRow;
use servesim::vocab::request::KvLoc;

use crate::memory::{MIB, Rec, SWAP_POLICIES, Setup, build, limits, offload_bits, pcie, row, run};

#[derive(Debug, Clone)]
struct Case {
    pol: usize,
    bits: u32,
    host_blocks: u32,
    extra_blocks: u32,
    batch: u32,
    /// Bandwidth in bytes/s (the same both ways) — slow links keep copies in flight across
    /// several iterations.
    bw: f64,
    rows: Vec<(u64, u32, u32)>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0..SWAP_POLICIES.len(),
        prop::sample::select(vec![16u32, 8, 4]),
        prop_oneof![Just(0u32), 1u32..8, 8u32..64],
        0u32..12,
        1u32..6,
        prop::sample::select(vec![5e7, 2e8, 1e9, 1e10]),
        prop::collection::vec((0u64..8, 1u32..40, 1u32..30), 1..24),
    )
        .prop_map(
            |(pol, bits, host_blocks, extra_blocks, batch, bw, rows)| Case {
                pol,
                bits,
                host_blocks,
                extra_blocks,
                batch,
                bw,
                rows,
            },
        )
}

const BLOCK_TOKENS: u32 = 4;
const ITER_S: f64 = 0.01;

fn simulate_case(c: &Case) -> Result<(Rec, Vec<TraceRow>), String> {
    let mut t = 0;
    let rows: Vec<TraceRow> = c
        .rows
        .iter()
        .enumerate()
        .map(|(i, &(gap, input, output))| {
            // Gaps in quarter iterations: arrivals often land on iteration boundaries.
            t += gap * 2_500_000;
            row(i as u64, t, input, output)
        })
        .collect();
    let need = rows
        .iter()
        .map(|r| (r.input_tokens + r.output_tokens - 1).div_ceil(BLOCK_TOKENS))
        .max()
        .unwrap();
    let lim = limits(c.batch);
    let rec = run(
        Setup {
            policy: build(&SWAP_POLICIES[c.pol], ITER_S, lim),
            iteration_s: ITER_S,
            block_tokens: BLOCK_TOKENS,
            kv_blocks: need + c.extra_blocks,
            host_blocks: c.host_blocks,
            block_bytes: MIB,
            swap: pcie(1e-4, c.bw, c.bw),
            offload: offload_bits(c.bits),
            limits: lim,
            sample_ns: 7_000_000,
        },
        &rows,
    )?;
    Ok((rec, rows))
}

// Long on purpose: one invariant after another over the same recorded run.
fn check_case(c: &Case) -> Result<(), TestCaseError> {
    let (rec, rows) =
        simulate_case(c).map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
    let q = offload_bits(c.bits);
    prop_assert_eq!(
        rec.completions.len(),
        rows.len(),
        "not every request finished"
    );
    prop_assert!(!rec.snapshots.is_empty());
    for s in &rec.snapshots {
        // Conservation: used + free = capacity in both pools, and the pools' used blocks are
        // exactly what the requests hold; never over capacity.
        prop_assert_eq!(s.gpu_used + s.gpu_free, s.gpu_capacity, "{:?}", s);
        prop_assert_eq!(s.host_used + s.host_free, s.host_capacity, "{:?}", s);
        prop_assert_eq!(s.gpu_held, s.gpu_used as u64, "{:?}", s);
        prop_assert_eq!(s.host_held, s.host_used as u64, "{:?}", s);
        prop_assert_eq!(s.host_expected, s.host_used as u64, "{:?}", s);
        prop_assert!(s.gpu_used <= s.gpu_capacity && s.host_used <= s.host_capacity);
        prop_assert!(s.batch.len() <= c.batch as usize);
        // Nobody executes without its KV resident on the GPU: a member is a prefill, resident
        // (its last copy done before the start), or a reactive swap-in that lands no later
        // than the iteration's end; and it holds the blocks its next token needs.
        for m in &s.batch {
            prop_assert!(m.blocks >= m.needed_blocks, "{:?} in {:?}", m, s);
            match (m.kv_loc, m.kv_ready_ns) {
                (KvLoc::None, None) => {}
                (KvLoc::Gpu, Some(t)) => prop_assert!(t <= s.start_ns, "{:?}", m),
                (KvLoc::SwappingIn, Some(t)) => prop_assert!(t <= s.end_ns, "{:?}", m),
                other => prop_assert!(false, "batch member {:?} with KV at {:?}", m.id, other),
            }
        }
    }
    // Every swap-in follows a completed swap-out of the same request; copies alternate; sizes
    // follow the offload format; no copy at all without a host pool.
    if c.host_blocks == 0 {
        prop_assert!(rec.transfers.is_empty());
    }
    let mut last: HashMap<u64, &TransferRecord> = HashMap::new();
    let mut free_at = [0; 2];
    for t in &rec.transfers {
        prop_assert_eq!(t.bytes, q.wire_bytes(t.gpu_blocks as u64 * MIB));
        prop_assert_eq!(t.host_blocks, q.host_blocks_for(t.gpu_blocks));
        prop_assert!(t.start_ns >= t.queued_ns && t.end_ns > t.start_ns);
        // One FIFO per direction: a copy starts when the previous one of its direction ends.
        let k = (t.dir == Direction::HostToDevice) as usize;
        prop_assert_eq!(t.start_ns, t.queued_ns.max(free_at[k]));
        free_at[k] = t.end_ns;
        match (t.dir, last.get(&t.id)) {
            (Direction::DeviceToHost, None) => {}
            (Direction::DeviceToHost, Some(p)) => {
                prop_assert_eq!(
                    p.dir,
                    Direction::HostToDevice,
                    "two swap-outs in a row: {:?}",
                    t
                );
                prop_assert!(t.queued_ns >= p.end_ns);
            }
            (Direction::HostToDevice, Some(p)) => {
                prop_assert_eq!(
                    p.dir,
                    Direction::DeviceToHost,
                    "swap-in without swap-out: {:?}",
                    t
                );
                prop_assert!(
                    t.queued_ns >= p.end_ns,
                    "swap-in before its swap-out landed"
                );
                prop_assert_eq!(t.gpu_blocks, p.gpu_blocks);
            }
            (Direction::HostToDevice, None) => {
                prop_assert!(false, "swap-in of {} that was never swapped out", t.id)
            }
        }
        last.insert(t.id, t);
    }
    let gpu_capacity = rec.snapshots[0].gpu_capacity;
    for s in &rec.samples {
        prop_assert!(s.gpu_blocks_used <= gpu_capacity);
        prop_assert!(s.host_blocks_used <= c.host_blocks);
        prop_assert!(s.running <= c.batch);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn memory_invariants_hold_for_every_swap_policy(c in case_strategy()) {
        check_case(&c)?;
    }
}

/// The properties are not vacuous: over a fixed set of tight cases, swaps (both ways),
/// quantized copies and reactive stalls all happen.
#[test]
fn property_cases_exercise_swapping() {
    let mut saw = (0usize, 0usize, 0usize);
    for pol in 0..SWAP_POLICIES.len() {
        for bits in [16, 4] {
            let c = Case {
                pol,
                bits,
                host_blocks: 40,
                extra_blocks: 2,
                batch: 3,
                bw: 2e8,
                rows: (0..16)
                    .map(|i| (i % 3, 10 + (i as u32 * 11) % 29, 5 + (i as u32 * 13) % 24))
                    .collect(),
            };
            check_case(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            let (rec, _) = simulate_case(&c).unwrap();
            saw.0 += rec
                .transfers
                .iter()
                .filter(|t| t.dir == Direction::HostToDevice)
                .count();
            saw.1 += rec
                .transfers
                .iter()
                .filter(|t| bits == 4 && t.host_blocks < t.gpu_blocks)
                .count();
            saw.2 += rec
                .completions
                .iter()
                .filter(|c| c.swap_stall_ns > 0)
                .count();
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0 && saw.2 > 0, "{saw:?}");
}
