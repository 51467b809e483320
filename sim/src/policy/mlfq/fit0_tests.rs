//! `fit0` (module `fit0`): the backfill with no free block walks it instead of `resident`, makes
//! the same plans as the walk of `ran_order`, and looks at few requests once built.

use super::resident_tests::{Engine, step_pair};
use super::tests::{Mem, memory_case, view_b};
use super::*;
use crate::cost::constant::ConstantCost;
use crate::rng::XorShift;
use crate::vocab::KvPool;
use crate::vocab::request::Slab;

impl Mlfq {
    /// While `fit0` is up to date: it is `ran_order` filtered by `f0`, and holds every request
    /// of `ran_order` that is GPU-resident with blocks and needs no new block for its next token.
    fn assert_fit0(&self, view: &ReplicaView) {
        if !self.fit_valid {
            return;
        }
        let want: Vec<Slot> = self.ran_order.iter().filter(|&s| self.in_fit0(s)).collect();
        assert_eq!(self.fit0.to_vec(), want);
        for s in self.ran_order.iter() {
            let r = view.req(s);
            if r.kv_loc == KvLoc::Gpu && r.blocks > 0 && view.extra_blocks_of(r, 0) == 0 {
                assert!(self.in_fit0(s), "slot {s} fits but is not in fit0");
            }
        }
    }
}

/// A random configuration of `skip-join-mlfq` with `batch_memory = "reserve"`, `host_full =
/// "defer"` and no chunked prefill (where the backfill walks `fit0`).
fn random_config(x: &mut XorShift, cost: &dyn CostModel) -> Config {
    let mut cfg = Params::default()
        .resolve(true, cost, "skip-join-mlfq")
        .unwrap();
    assert!(cfg.host_full == HostFull::Defer && cfg.chunk_size.is_none());
    if x.below(4) == 0 {
        (cfg.fifo, cfg.max_levels, cfg.requeue_reverses_batch) = (true, 1, false);
    }
    if x.below(2) == 0 {
        cfg.starvation_period_iterations = 1 + x.below(20);
        cfg.starvation_threshold_s = 0.05 + 0.05 * x.below(6) as f64;
    }
    if x.below(2) == 0 {
        cfg.starvation_check = StarvationCheck::BeforeBatch;
    }
    cfg
}

/// Seeded random runs of the small engine (arrivals, batches, swaps in and out, copies that end
/// at random, finishes, starvation promotions) on small GPU and host pools: the policy whose
/// backfill walks `fit0` and the one that walks `ran_order` (the walk before `fit0`) make the
/// same plan at every boundary, and `fit0` always holds every request that could join a
/// backfill. 300 runs of 150 boundaries.
#[test]
fn fit0_backfill_plans_as_the_ran_order_walk() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut x = XorShift(0xf170_5eed_b4c4_f111);
    let mut walks = 0;
    for case in 0..300 {
        let cfg = random_config(&mut x, cost.as_ref());
        let mut a = Mlfq::new(cfg.clone(), cost.clone(), "skip-join-mlfq");
        let mut b = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        b.walk_ran_order = true;
        let mut e = Engine {
            reqs: Slab::default(),
            kv: KvPool::new(20 + x.below(60) as u32, 16),
            host: KvPool::new([8, 20, 60][x.below(3) as usize], 16),
            now: 0,
            b: 2 + x.below(6) as u32,
            next_id: 0,
        };
        let (mut pa, mut pb) = (Plan::default(), Plan::default());
        for step in 0..150 {
            let at = format!("case {case} step {step}");
            let (pair, plans) = ((&mut a, &mut b), (&mut pa, &mut pb));
            step_pair(&mut e, pair, plans, &mut x, (4, 150), &at);
            a.assert_fit0(&e.view());
        }
        walks += a.fit_walks;
    }
    assert!(walks > 1000, "only {walks} walks of fit0");
}

/// `host_full = "defer"` with the GPU and the host full: B = 2, queue [0 host, 1 host, K GPU
/// requests each needing a new block, 2 GPU requests needing none]. The batch pops 0 and 1;
/// nobody can be swapped out, so the backfill gives their places to the last two. Once `fit0`
/// is built (the first boundary, which drops the K that need a block), the backfill looks at the
/// same few entries for K = 1,000 and 10,000 (the walk of `resident` looked at all K at every
/// boundary), and the plan is the reference's.
#[test]
fn backfill_with_no_free_block_does_not_look_at_requests_needing_one() {
    let mut looked = Vec::new();
    for k in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Host(7); 2];
        // 6 blocks hold 96 tokens: the 101st needs a seventh; 7 blocks hold it.
        mems.extend(vec![Mem::Gpu(6); k]);
        mems.extend([Mem::Gpu(7); 2]);
        let (mut m, reqs, kv, host) = memory_case(&mems, 6 * k as u32 + 14, 14, |_| {});
        let v = view_b(&reqs, &kv, &host, 2);
        assert_eq!(v.free_blocks(), 0);
        let mut want = m.clone();
        want.walk_ran_order = true;
        let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
        for boundary in 0..2 {
            m.backfill_looked = 0;
            m.schedule(&v, &mut plan);
            want.schedule(&v, &mut plan_want);
            let slots: Vec<Slot> = plan.run.iter().map(|i| i.slot).collect();
            assert_eq!(
                slots,
                vec![k as Slot + 2, k as Slot + 3],
                "boundary {boundary}"
            );
            assert_eq!(plan.run, plan_want.run);
            assert_eq!(plan.preempt, plan_want.preempt);
            assert!(want.backfill_looked > k as u64);
        }
        assert_eq!(m.fit_walks, 2);
        looked.push(m.backfill_looked);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}
