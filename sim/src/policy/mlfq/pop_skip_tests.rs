//! `pop_skip`: with `misfit = "skip"` the pop makes the same plans as the walk of the whole
//! `order`, and does not look at the requests that never ran once none of them fits the budget.

use super::resident_tests::{Engine, step_pair};
use super::*;
use crate::cost::constant::ConstantCost;
use crate::rng::XorShift;
use crate::vocab::KvPool;
use crate::vocab::request::Slab;

/// A random configuration with `batch_memory = "reserve"` and `misfit = "skip"`: the code
/// preset of `skip-join-mlfq` or `mlfq`, sometimes `fifo` or with starvation promotions.
fn random_config(x: &mut XorShift, cost: &dyn CostModel, name: &str) -> Config {
    let mut cfg = Params::default()
        .resolve(name == "skip-join-mlfq", cost, name)
        .unwrap();
    cfg.misfit = MisfitRule::Skip;
    if x.below(4) == 0 {
        (cfg.fifo, cfg.max_levels, cfg.requeue_reverses_batch) = (true, 1, false);
    }
    if x.below(2) == 0 {
        cfg.starvation_period_iterations = 1 + x.below(20);
        cfg.starvation_threshold_s = 0.05 + 0.05 * x.below(6) as f64;
    }
    if x.below(3) == 0 {
        cfg.host_full = HostFull::Recompute;
    }
    cfg
}

/// Seeded random runs of the small engine (bursts of arrivals with prompts up to 600 tokens
/// against a 512-token budget, swaps, recomputes, finishes, promotions): the policy whose pop
/// goes on in `ran_order` and the one that walks `order` (the pop before `pop_skip`) make the
/// same plan at every boundary. 300 runs of 150 boundaries.
#[test]
fn pop_skip_plans_as_the_order_walk() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut x = XorShift(0x5c1f_90b5_7a11_e4d2);
    let (mut looked_a, mut looked_b) = (0, 0);
    for case in 0..300 {
        let name = ["skip-join-mlfq", "mlfq"][x.below(2) as usize];
        let cfg = random_config(&mut x, cost.as_ref(), name);
        let mut a = Mlfq::new(cfg.clone(), cost.clone(), name);
        let mut b = Mlfq::new(cfg, cost.clone(), name);
        b.pop_by_walk = true;
        let mut e = Engine {
            reqs: Slab::default(),
            kv: KvPool::new(20 + x.below(100) as u32, 16),
            host: KvPool::new([0, 8, 20, 200][x.below(4) as usize], 16),
            now: 0,
            b: 2 + x.below(14) as u32,
            next_id: 0,
        };
        let (mut pa, mut pb) = (Plan::default(), Plan::default());
        let arrivals = [2, 6, 20][x.below(3) as usize];
        for step in 0..150 {
            let at = format!("case {case} step {step}");
            let (pair, plans) = ((&mut a, &mut b), (&mut pa, &mut pb));
            step_pair(&mut e, pair, plans, &mut x, (arrivals, 600), &at);
        }
        (looked_a, looked_b) = (looked_a + a.scanned, looked_b + b.scanned);
    }
    assert!(looked_a < looked_b, "{looked_a} vs {looked_b}");
}

/// An engine with a 1,000-block pool, no host pool and batch limit 8.
fn burst_engine() -> Engine {
    Engine {
        reqs: Slab::default(),
        kv: KvPool::new(1000, 16),
        host: KvPool::new(0, 16),
        now: 0,
        b: 8,
        next_id: 0,
    }
}

/// A burst: one request, then K whose prompts (400 tokens) do not fit the 512-token budget the
/// first (400 tokens) leaves; B = 8. The pop takes the first and, the budget left below every
/// new prompt, looks at no other new request: the same entries for K = 1,000 and 10,000 (the
/// walk of `order` looked at all K), and the plan is the walk's.
#[test]
fn pop_skip_does_not_walk_new_requests_that_cannot_fit() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut looked = Vec::new();
    for k in [1_000u32, 10_000] {
        let mut cfg = Params::default()
            .resolve(true, cost.as_ref(), "skip-join-mlfq")
            .unwrap();
        cfg.misfit = MisfitRule::Skip;
        let mut m = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        let mut e = burst_engine();
        for _ in 0..=k {
            let s = e.arrive(400, 10, 10);
            m.on_arrival(s, &e.view()).unwrap();
        }
        let mut want = m.clone();
        want.pop_by_walk = true;
        let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
        m.schedule(&e.view(), &mut plan);
        want.schedule(&e.view(), &mut plan_want);
        assert_eq!(plan.run.len(), 1);
        assert_eq!(plan.run, plan_want.run);
        assert!(want.scanned > k as u64);
        looked.push(m.scanned);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 5, "looked at {}", looked[1]);
}

/// Only `misfit = "skip"` without chunking reads the prompts' heap, and only it keeps one: with
/// the default `misfit = "stop"` every arrival's entry stayed there for the whole run (a
/// 10⁷-request skip-join run peaked at 486 MB instead of 329 MB).
#[test]
fn only_the_skip_pop_keeps_the_prompts_of_new_requests() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    for misfit in [MisfitRule::Stop, MisfitRule::Skip] {
        let mut cfg = Params::default()
            .resolve(true, cost.as_ref(), "skip-join-mlfq")
            .unwrap();
        cfg.misfit = misfit;
        let mut m = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        let mut e = burst_engine();
        for _ in 0..100 {
            let s = e.arrive(400, 10, 10);
            m.on_arrival(s, &e.view()).unwrap();
        }
        let kept = m.new_prompts.len();
        assert_eq!(kept, if misfit == MisfitRule::Skip { 100 } else { 0 });
    }
}
