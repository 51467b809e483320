//! `batch_memory = "evict"` with chunked prefill: once a candidate holding no KV can neither
//! join nor evict (no block free, the next victim spared by the recompute guard), the formation
//! passes over the candidates holding no KV up to the next one that holds KV
//! ([`super::super::common::Window::pass_kvless`]) instead of taking each as a candidate.

use super::resident_tests::{Engine, step_pair};
use super::tests::{Mem, memory_case, view_b};
use super::*;
use crate::cost::constant::ConstantCost;
use crate::rng::XorShift;
use crate::vocab::KvPool;
use crate::vocab::request::Slab;

const BLOCK_TOKENS: u32 = 16;

fn chunked_evict(cfg: &mut Config) {
    cfg.chunk_size = Some(256);
    cfg.batch_memory = BatchMemory::Evict;
}

/// B = 16, queue [0, 1 GPU 7 blocks, N new, N + 2, N + 3 GPU 7 blocks] on a full GPU, no host:
/// the new requests need blocks and may not take the last ones' by recompute (they hold no
/// KV). The batch is 0, 1, N + 2, N + 3 and nobody is preempted, for N = 1,000 and 10,000 as
/// in the reference formation, which took every new request as a candidate; the formation
/// takes the same 5 candidates for both N.
#[test]
fn kvless_candidates_are_passed_over() {
    let mut looked = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Gpu(7); 2];
        mems.extend(vec![Mem::New; n]);
        mems.extend([Mem::Gpu(7); 2]);
        let (mut m, reqs, kv, host) = memory_case(&mems, 28, 0, chunked_evict);
        let v = view_b(&reqs, &kv, &host, 16);
        let mut want = m.clone();
        want.no_pass_kvless = true;
        let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
        m.schedule(&v, &mut plan);
        want.schedule(&v, &mut plan_want);
        assert_eq!(plan.run, plan_want.run);
        assert_eq!(plan.preempt, plan_want.preempt);
        let run: Vec<Slot> = plan.run.iter().map(|i| i.slot).collect();
        assert_eq!(run, [0, 1, n as Slot + 2, n as Slot + 3]);
        assert!(plan.preempt.is_empty());
        assert!(
            want.candidates_looked > n as u64,
            "{}",
            want.candidates_looked
        );
        looked.push(m.candidates_looked);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}

/// A random configuration of `skip-join-mlfq` with chunked prefill and `batch_memory = "evict"`.
fn random_config(x: &mut XorShift, cost: &dyn CostModel) -> Config {
    let mut cfg = Params::default()
        .resolve(true, cost, "skip-join-mlfq")
        .unwrap();
    cfg.batch_memory = BatchMemory::Evict;
    cfg.chunk_size = Some([16, 64, 256][x.below(3) as usize]);
    if x.below(2) == 0 {
        cfg.host_full = HostFull::Recompute;
    }
    if x.below(4) == 0 {
        (cfg.fifo, cfg.max_levels, cfg.requeue_reverses_batch) = (true, 1, false);
    }
    if x.below(2) == 0 {
        cfg.starvation_period_iterations = 1 + x.below(20);
        cfg.starvation_threshold_s = 0.05 + 0.05 * x.below(6) as f64;
    }
    cfg
}

/// Seeded random runs of a small engine (arrivals, batches, swaps, copies that end at random,
/// finishes, starvation promotions): the formation that passes over candidates holding no KV
/// and the reference that takes each as a candidate make the same plan at every boundary.
/// 200 runs of 150 boundaries; the passing happens.
#[test]
fn passing_over_kvless_candidates_plans_as_the_reference() {
    let mut passed = 0;
    random_pairs(
        0x0e71_c7ab_1e55_9a5e,
        [|_| {}, |b| b.no_pass_kvless = true],
        |_, a, b| {
            passed += a.candidates_passed;
            assert!(a.candidates_looked < b.candidates_looked || a.candidates_passed == 0);
        },
    );
    assert!(passed > 1000, "only {passed} passed over");
}

/// The passing reads only the requests that ran in the levels it passes through (to find the
/// next one holding KV), not the new ones between them: B = 16, queue [0, 1 GPU 7 blocks,
/// N new, N + 2, N + 3 GPU 7 blocks] on a full GPU reads 1 request for N = 1,000 and 10,000;
/// the reference walk read each of the N new ones but the first (taken as a candidate).
#[test]
fn passing_reads_only_requests_that_ran() {
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Gpu(7); 2];
        mems.extend(vec![Mem::New; n]);
        mems.extend([Mem::Gpu(7); 2]);
        let (m, walk) = one_pair(&mems, 28, |w| w.walk_kvless = true);
        assert!(walk.kvless_read >= n as u64 - 1, "{}", walk.kvless_read);
        assert!(m.kvless_read <= 2, "read {}", m.kvless_read);
    }
}

/// Seeded random runs as in [`passing_over_kvless_candidates_plans_as_the_reference`]: the
/// passing that reads only the requests that ran and the reference walk that reads each entry
/// take the same candidates and make the same plan at every boundary.
#[test]
fn passing_by_ran_order_plans_as_the_walk() {
    let (mut read, mut walk_read) = (0, 0);
    random_pairs(
        0x05ca_1ab1_e0dd_ba11,
        [
            |a| a.victims_by_ran_order = true,
            |b| (b.victims_by_ran_order, b.walk_kvless) = (true, true),
        ],
        |case, a, b| {
            assert_eq!(a.candidates_looked, b.candidates_looked, "case {case}");
            (read, walk_read) = (read + a.kvless_read, walk_read + b.kvless_read);
        },
    );
    assert!(walk_read > 1000, "only {walk_read} passed over");
    assert!(2 * read < walk_read, "read {read} of {walk_read}");
}

/// The victim search reads only the requests that ran (only they can hold KV), not the new ones
/// behind them: B = 16, queue [0, 1 GPU 7 blocks, N new] on a full GPU; the first new candidate
/// needs blocks and searches a victim from the back. It reads at most 2 requests for N = 1,000
/// and 10,000; the reference walk of the window from the back read each of the N new ones but
/// the first (the candidate).
#[test]
fn victim_search_reads_only_requests_that_ran() {
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Gpu(7); 2];
        mems.extend(vec![Mem::New; n]);
        let (m, walk) = one_pair(&mems, 14, |w| w.walk_victims = true);
        assert!(walk.victims_read >= n as u64 - 1, "{}", walk.victims_read);
        assert!(m.victims_read <= 2, "read {}", m.victims_read);
    }
}

/// Seeded random runs as in [`passing_by_ran_order_plans_as_the_walk`] (host pools of 0, 20 and
/// 300 blocks): the victim search among the requests that ran and the reference walk of the
/// window from the back take the same victims and make the same plan at every boundary.
#[test]
fn victim_search_by_ran_order_plans_as_the_walk() {
    let (mut read, mut walk_read) = (0, 0);
    random_pairs(
        0x0dd_f00d_5eed_1e55,
        [
            |a| a.victims_by_ran_order = true,
            |b| (b.victims_by_ran_order, b.walk_victims) = (true, true),
        ],
        |case, a, b| {
            assert_eq!(a.candidates_looked, b.candidates_looked, "case {case}");
            (read, walk_read) = (read + a.victims_read, walk_read + b.victims_read);
        },
    );
    assert!(walk_read > 1000, "only {walk_read} read");
    assert!(2 * read < walk_read, "read {read} of {walk_read}");
}

/// 200 seeded random runs of 150 boundaries of the small engine (host pools of 0, 20 and 300
/// blocks): the formation under test and the reference (`setup` switches them on) must make
/// the same plan at every boundary; `each` sees both after each run.
pub(super) fn random_pairs(
    seed: u64,
    setup: [fn(&mut Mlfq); 2],
    mut each: impl FnMut(usize, &Mlfq, &Mlfq),
) {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut x = XorShift(seed);
    for case in 0..200 {
        let cfg = random_config(&mut x, cost.as_ref());
        let mut a = Mlfq::new(cfg.clone(), cost.clone(), "skip-join-mlfq");
        let mut b = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        setup[0](&mut a);
        setup[1](&mut b);
        let mut e = Engine {
            reqs: Slab::default(),
            kv: KvPool::new(20 + x.below(60) as u32, BLOCK_TOKENS),
            host: KvPool::new([0, 20, 300][x.below(3) as usize], BLOCK_TOKENS),
            now: 0,
            b: 2 + x.below(14) as u32,
            next_id: 0,
        };
        let (mut pa, mut pb) = (Plan::default(), Plan::default());
        for step in 0..150 {
            let at = format!("case {case} step {step}");
            let (pair, plans) = ((&mut a, &mut b), (&mut pa, &mut pb));
            step_pair(&mut e, pair, plans, &mut x, (6, 300), &at);
            a.assert_resident(&e.view());
            b.assert_resident(&e.view());
        }
        each(case, &a, &b);
    }
}

/// One formation on the queue `mems` (a full GPU of `kv_blocks`, B = 16) by the formation under
/// test and the reference (`reference` switches it on): the same plan and candidates; both
/// returned for their work counts.
fn one_pair(mems: &[Mem], kv_blocks: u32, reference: fn(&mut Mlfq)) -> (Mlfq, Mlfq) {
    let (mut m, reqs, kv, host) = memory_case(mems, kv_blocks, 0, chunked_evict);
    let v = view_b(&reqs, &kv, &host, 16);
    let mut walk = m.clone();
    reference(&mut walk);
    let (mut plan, mut plan_walk) = (Plan::default(), Plan::default());
    m.schedule(&v, &mut plan);
    walk.schedule(&v, &mut plan_walk);
    assert_eq!(plan.run, plan_walk.run);
    assert_eq!(plan.preempt, plan_walk.preempt);
    assert_eq!(m.candidates_looked, walk.candidates_looked);
    (m, walk)
}
