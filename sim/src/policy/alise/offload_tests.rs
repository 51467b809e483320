//! The indexed EWT offload ([`super::ranked_offload`]) against the list walk it replaced
//! (`ranked_offload_ref`): the same plans at every boundary of random runs, and the work of a
//! boundary bounded by the plan, not by the requests holding KV.

use super::*;
use crate::cost::constant::ConstantCost;
use crate::policy::PreemptMode;
use crate::policy::mlfq::resident_tests::{Engine, assert_same_plans};
use crate::rng::XorShift;
use crate::vocab::KvPool;
use crate::vocab::request::{KvLoc, Slab};

const MS: u64 = 1_000_000;

fn alise(reference: bool, aging_weight: f64) -> Alise {
    let p = Params {
        aging_weight,
        ..Params::default()
    };
    let mut a = Alise::new(p, Arc::new(ConstantCost { iteration_s: 0.01 }));
    a.use_reference = reference;
    a
}

/// Seeded random runs of a small engine (arrivals, batches, swaps in and out, copies that end at
/// random, recompute when the host is full, finishes and reused slots): the indexed offload and
/// the reference make the same plan at every boundary. 400 runs of 150 boundaries.
#[test]
fn indexed_offload_plans_as_the_list_walk() {
    let mut x = XorShift(0x0a11_5e0f_f10a_d5ed);
    let (mut swaps_out, mut swaps_in) = (0, 0);
    for case in 0..400 {
        let w = [0.0, 0.0, 0.5][x.below(3) as usize];
        let (mut a, mut b) = (alise(false, w), alise(true, w));
        let mut e = Engine {
            reqs: Slab::default(),
            kv: KvPool::new(30 + x.below(90) as u32, 16),
            host: KvPool::new([20, 60, 300][x.below(3) as usize], 16),
            now: 0,
            b: 1 + x.below(6) as u32,
            next_id: 0,
        };
        let (mut pa, mut pb) = (Plan::default(), Plan::default());
        for step in 0..150 {
            e.now += 10 * MS;
            e.end_copies(&mut x);
            for _ in 0..x.below(4) {
                let predicted = 1 + x.below(60) as u32;
                let s = e.arrive(1 + x.below(150) as u32, 1 + x.below(40) as u32, predicted);
                a.on_arrival(s, &e.view()).unwrap();
                b.on_arrival(s, &e.view()).unwrap();
            }
            a.schedule(&e.view(), &mut pa);
            b.schedule(&e.view(), &mut pb);
            let at = format!("case {case} step {step}");
            assert_same_plans(&pa, &pb, &at);
            swaps_in += pa.swap_in.len();
            swaps_out += pa.preempt.len();
            e.preempt(&pa);
            let (_, done) = e.run(&pa);
            for s in done {
                assert_eq!(a.describe(s).priority, b.describe(s).priority, "{at}");
                a.on_finish(s);
                b.on_finish(s);
            }
        }
    }
    assert!(
        swaps_out > 1000 && swaps_in > 1000,
        "{swaps_out} {swaps_in}"
    );
}

/// One boundary after `n` requests were swapped out and `n` more wait on the GPU (all ranked
/// below a waiting one), with a plan of one request: the entries the offload looks at.
fn looked_at_one_boundary(n: u32, reference: bool) -> u64 {
    let mut e = Engine {
        reqs: Slab::default(),
        kv: KvPool::new(4 * n + 8, 16),
        host: KvPool::new(8 * n, 16),
        now: 0,
        b: 1,
        next_id: 0,
    };
    let mut a = alise(reference, 0.0);
    // 2n requests 20 tokens into their output; n of them on the host.
    for i in 0..2 * n as u64 {
        let s = e.reqs.insert(Request::new(i, 0, 40, 100, 100));
        let mut r = e.reqs.get_mut(s);
        (r.generated_tokens, r.kv_tokens, r.blocks) = (20, 60, 4);
        if i < n as u64 {
            (r.kv_loc, r.blocks, r.host_blocks, r.offloaded_gpu_blocks) = (KvLoc::Host, 0, 4, 4);
        } else {
            r.kv_loc = KvLoc::Gpu;
        }
    }
    assert!(e.kv.try_alloc(4 * n) && e.host.try_alloc(4 * n));
    for s in 0..2 * n {
        a.on_arrival(s, &e.view()).unwrap();
    }
    // They all were in plans (they hold KV): the first boundary lists them all.
    let mut all = Plan::default();
    for s in 0..2 * n {
        all.preempt.push((s, PreemptMode::Swap));
    }
    a.resident.note_plan(&all);
    a.reference.note_plan(&all);
    let mut plan = Plan::default();
    a.schedule(&e.view(), &mut plan);
    let before = if reference {
        a.reference.looked_at
    } else {
        a.resident.looked_at()
    };
    e.preempt(&plan);
    e.run(&plan);
    e.now += 10 * MS;
    a.schedule(&e.view(), &mut plan);
    assert_eq!(plan.run.len(), 1);
    if reference {
        a.reference.looked_at - before
    } else {
        a.resident.looked_at() - before
    }
}

/// With thousands of requests holding KV on the GPU and the host (a burst at max_batch_size 1,
/// round 8 case 13), a boundary looks at the plan's few requests and the indexes' first
/// entries, the same for 1,000 and 10,000 of them; the list walk looked at every one (3 passes).
#[test]
fn a_boundary_looks_at_the_plan_not_at_every_request_with_kv() {
    let small = looked_at_one_boundary(1_000, false);
    let large = looked_at_one_boundary(10_000, false);
    assert_eq!(small, large);
    assert!(large < 20, "{large}");
    assert!(looked_at_one_boundary(1_000, true) >= 2_000);
}
