//! Module `evict_victims`: the `batch_memory = "evict"` walks over `resident` make the same plans
//! as those over `ran_order`, and do not read the host-resident requests.

use super::evict_pass_tests::random_pairs;
use super::tests::{Mem, memory_case, view_b};
use super::*;

fn chunked_evict(cfg: &mut Config) {
    cfg.chunk_size = Some(256);
    cfg.batch_memory = BatchMemory::Evict;
}

/// Two boundaries on `mems` (a full GPU of `kv_blocks`, a host pool of `host_blocks`, B = 16)
/// by the policy under test and the reference that walks `ran_order`: the same plans. Returns
/// the requests the second boundary's walks read (victim search, passing, the reserve's
/// swap-outs) and the candidates it took, for both.
fn second_boundary(mems: &[Mem], kv_blocks: u32, host_blocks: u32) -> [(u64, u64); 2] {
    let (mut m, reqs, kv, host) = memory_case(mems, kv_blocks, host_blocks, chunked_evict);
    let v = view_b(&reqs, &kv, &host, 16);
    let mut want = m.clone();
    want.victims_by_ran_order = true;
    let mut out = [(0, 0); 2];
    for (k, p) in [&mut m, &mut want].into_iter().enumerate() {
        let mut plan = Plan::default();
        p.schedule(&v, &mut plan);
        let first = plan.clone();
        let read = p.victims_read + p.kvless_read + p.scanned;
        let looked = p.candidates_looked;
        p.schedule(&v, &mut plan);
        assert_eq!(plan.run, first.run);
        assert_eq!(plan.preempt, first.preempt);
        let read = p.victims_read + p.kvless_read + p.scanned - read;
        out[k] = (read, p.candidates_looked - looked);
    }
    let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
    m.schedule(&v, &mut plan);
    want.schedule(&v, &mut plan_want);
    assert_eq!(plan.run, plan_want.run);
    assert_eq!(plan.preempt, plan_want.preempt);
    assert_eq!(plan.swap_in, plan_want.swap_in);
    m.assert_resident(&v);
    out
}

/// The victim search and the reserve's swap-outs read the GPU-resident requests, not those
/// waiting on the host: queue [0 new, 1 and 2 GPU 7 blocks, N host-resident] on a full 14-block
/// GPU with host room. 0 needs blocks: 2 is swapped out for it, 1 runs. Once `resident` is built
/// (after the first boundary, whose walks read every host-resident request), a boundary reads
/// the same few requests for N = 1,000 and 10,000; the walks of `ran_order` read all N.
#[test]
fn victim_walks_do_not_read_host_resident_requests() {
    let mut read = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::New, Mem::Gpu(7), Mem::Gpu(7)];
        mems.extend(vec![Mem::Host(7); n]);
        let [(m, _), (want, _)] = second_boundary(&mems, 14, 7 * n as u32 + 100);
        assert!(want >= n as u64, "{want}");
        read.push(m);
    }
    assert_eq!(read[0], read[1]);
    assert!(read[1] < 10, "read {}", read[1]);
}

/// With the host pool full (new requests deferred, victims recomputed), the host-resident
/// candidates are passed over: queue [N host-resident, N + 1 and N + 2 GPU 7 blocks] on a full
/// 14-block GPU and a full host pool. Each host-resident candidate needs 7 blocks, and the only
/// victim (N + 2, recomputed: the host has no room) is one the guard spares for a candidate
/// holding no KV; N + 1 and N + 2 run. Once `resident` is built, a boundary takes the same few
/// candidates for N = 1,000 and 10,000; over `ran_order` it took each host-resident one.
#[test]
fn host_resident_candidates_are_passed_over_when_the_host_is_full() {
    let mut looked = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Host(7); n];
        mems.extend([Mem::Gpu(7), Mem::Gpu(7)]);
        let [(_, m), (_, want)] = second_boundary(&mems, 14, 7 * n as u32);
        assert!(want >= n as u64, "{want}");
        looked.push(m);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}

/// Seeded random runs of the small engine (`evict`, chunked prefill, host pools of 0, 20 and
/// 300 blocks): the walks over `resident` and those over `ran_order` make the same plan at every
/// boundary, and `resident` holds every GPU-resident request that ran; they read fewer requests.
#[test]
fn resident_walks_plan_as_the_ran_order_walks() {
    let (mut read, mut want_read, mut passed) = (0, 0, 0);
    random_pairs(
        0x7e51_de47_0e71_c7ed,
        [|_| {}, |b| b.victims_by_ran_order = true],
        |_, a, b| {
            read += a.victims_read + a.kvless_read + a.scanned;
            want_read += b.victims_read + b.kvless_read + b.scanned;
            passed += a.candidates_passed;
        },
    );
    assert!(passed > 1000, "only {passed} passed over");
    assert!(2 * read < want_read, "read {read} of {want_read}");
}

/// As [`resident_walks_plan_as_the_ran_order_walks`] without chunked prefill (no guard: the
/// victim search and the reserve's swap-outs only).
#[test]
fn resident_walks_plan_as_the_ran_order_walks_unchunked() {
    let (mut read, mut want_read) = (0, 0);
    random_pairs(
        0x0c4a_11ed_5ea7_c4ed,
        [
            |a| a.cfg.chunk_size = None,
            |b| (b.cfg.chunk_size, b.victims_by_ran_order) = (None, true),
        ],
        |_, a, b| {
            read += a.victims_read + a.scanned;
            want_read += b.victims_read + b.scanned;
        },
    );
    assert!(read < want_read, "read {read} of {want_read}");
}

/// Two boundaries on the queue [A (GPU 7 blocks), C (GPU 6 blocks, the latest arrival), N GPU 7
/// blocks] on a full GPU with no host pool, by the policy and (`reference`) its reference: A runs;
/// C holds KV and needs a block, and every request below it arrived before it, so the guard
/// spares them all and C sits out. The same plans; returns the requests the third boundary's
/// victim search read.
fn spared_sweep(n: usize, reference: fn(&mut Mlfq)) -> u64 {
    let mut mems = vec![Mem::Gpu(7), Mem::Gpu(6)];
    mems.extend(vec![Mem::Gpu(7); n]);
    let (mut m, reqs, kv, host) = memory_case(&mems, 13 + 7 * n as u32, 0, chunked_evict);
    m.arrival_seq[1] = n as u64 + 2;
    let v = view_b(&reqs, &kv, &host, 16);
    let mut want = m.clone();
    reference(&mut want);
    let mut read = [0; 2];
    for (k, p) in [&mut m, &mut want].into_iter().enumerate() {
        // The first boundary builds `resident`, the second reads its levels' bounds.
        let mut plan = Plan::default();
        p.schedule(&v, &mut plan);
        p.schedule(&v, &mut plan);
        let first = plan.clone();
        let before = p.victims_read;
        p.schedule(&v, &mut plan);
        assert_eq!((&plan.run, &plan.preempt), (&first.run, &first.preempt));
        assert_eq!(plan.run.len(), 1, "A runs, C sits out");
        read[k] = p.victims_read - before;
    }
    let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
    m.schedule(&v, &mut plan);
    want.schedule(&v, &mut plan_want);
    assert_eq!(plan.run, plan_want.run);
    assert_eq!(plan.preempt, plan_want.preempt);
    assert!(read[1] >= n as u64, "the reference read {}", read[1]);
    read[0]
}

/// A candidate holding KV passes over the victims that arrived before it by the levels' arrival
/// bounds (module `levels_spared`): once a search has read the level, a boundary reads the same
/// few requests for N = 1,000 and 10,000; one victim search per spared victim read all N
/// (adversarial round 11, 05: ~2,000 a boundary at a 5,000 burst).
#[test]
fn spared_victims_are_passed_over_unread() {
    let read: Vec<u64> = [1_000, 10_000]
        .into_iter()
        .map(|n| spared_sweep(n, |w| w.walk_spared = true))
        .collect();
    assert_eq!(read[0], read[1]);
    assert!(read[1] < 10, "read {}", read[1]);
}

/// Seeded random runs of the small engine (`evict`, chunked prefill, host pools of 0, 20 and 300
/// blocks): passing over the spared victims by the levels' arrival bounds and by one victim
/// search each make the same plan at every boundary; the bounds read fewer requests.
#[test]
fn spared_victims_by_bounds_plan_as_one_search_each() {
    let (mut read, mut want_read) = (0, 0);
    random_pairs(
        0x5ba2_ed0b_0a4d_5e9c,
        [|_| {}, |b| b.walk_spared = true],
        |_, a, b| {
            read += a.victims_read;
            want_read += b.victims_read;
        },
    );
    assert!(read < want_read, "read {read} of {want_read}");
}
