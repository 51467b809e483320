//! The `offload = "paper"` pass over the requests that hold KV against the queue-wide reference
//! (module `reference`): the same plans, and work that does not grow with the queue.

use super::enst::repeat_add;
use super::*;
use crate::cost::constant::ConstantCost;
use crate::policy::{Limits, RunItem};
use crate::rng::XorShift as Rng;
use crate::swap::KvOffload;
use crate::vocab::KvPool;
use crate::vocab::request::{Request, Slab};

const MS: Ns = 1_000_000;

fn naive_add(mut x: f64, c: f64, k: u64) -> f64 {
    for _ in 0..k {
        x += c;
    }
    x
}

/// `repeat_add` gives the bits of the loop of additions, across binades and with ties
/// (`c` half-way between multiples of the spacing of `x`).
#[test]
fn repeat_add_is_the_loop_bit_for_bit() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let cs = [0.0, 0.01, 0.03, 0.07, 0.15, 1.27, 0.3, 1e-9, 2.5e-16];
    let ties = [
        (1.0, 1.5 * f64::EPSILON),
        (1.0 + f64::EPSILON, 0.5 * f64::EPSILON),
    ];
    let ulp1 = f64::EPSILON;
    for case in 0..3000 {
        let (x, c) = match case % 4 {
            0 => (0.0, cs[rng.below(cs.len() as u64) as usize]),
            1 => ties[rng.below(2) as usize],
            2 => (
                rng.below(1 << 40) as f64 * 1e-9,
                (rng.below(1 << 30) + 1) as f64 * 1e-11,
            ),
            _ => (
                1.0 + rng.below(1 << 20) as f64 * ulp1,
                (2 * rng.below(8) + 1) as f64 * ulp1 / 2.0,
            ),
        };
        let k = rng.below(if case % 10 == 0 { 100_000 } else { 3000 });
        let want = naive_add(x, c, k);
        let got = repeat_add(x, c, k);
        assert_eq!(got.to_bits(), want.to_bits(), "x {x:e} c {c:e} k {k}");
    }
}

/// A pseudo-random queue: `n` requests over 6 levels; those that ran hold KV on the GPU, on the
/// host or none, with some attained service; those that never ran hold none (a few are in a
/// micro-batch in flight with GPU KV). `mixed`: never-run requests may sit ahead of ones that
/// ran in a level (as after starvation promotions), else they are behind them.
fn random_queue(rng: &mut Rng, n: usize, mixed: bool) -> (Mlfq, Slab, KvPool, KvPool, Ns) {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut cfg = Params::default()
        .resolve(true, cost.as_ref(), "skip-join-mlfq")
        .unwrap();
    cfg.offload = Offload::Paper;
    cfg.base_quantum_s = [0.01, 0.003, 0.0123][rng.below(3) as usize];
    cfg.starvation_threshold_s = [3.0, 0.3, 0.05][rng.below(3) as usize];
    cfg.swap_in_window = [0, 0, 1, 3, 8][rng.below(5) as usize];
    let mut m = Mlfq::new(cfg, cost, "skip-join-mlfq");
    let now = 10_000 * MS;
    let mut reqs = Slab::default();
    let (mut gpu_used, mut host_used) = (0, 0);
    let mut keyed = Vec::new();
    for i in 0..n {
        let level = rng.below(6) as u32;
        let ran = rng.below(3) == 0;
        let mut r = Request::new(i as u64, 0, 100, 50, 50);
        let mut st = State {
            level,
            last_step_ns: now - rng.below(5000) * MS,
            ..State::default()
        };
        let b = 1 + rng.below(6) as u32;
        if ran {
            st.attained_ns = [0, rng.below(m.quantum_ns(level) + 1)][rng.below(2) as usize];
            (r.generated_tokens, r.kv_tokens) = (1, 100);
            match rng.below(3) {
                0 => (r.blocks, r.kv_loc, gpu_used) = (b, KvLoc::Gpu, gpu_used + b),
                1 => {
                    (r.kv_loc, r.host_blocks, r.offloaded_gpu_blocks) = (KvLoc::Host, b, b);
                    host_used += b;
                }
                _ => {}
            }
            r.in_batch = r.kv_loc == KvLoc::Gpu && rng.below(8) == 0;
        } else if rng.below(20) == 0 {
            (r.blocks, r.kv_loc, r.in_batch, gpu_used) = (b, KvLoc::Gpu, true, gpu_used + b);
        }
        let s = reqs.insert(r);
        m.state.resize(s as usize + 1, State::default());
        m.state[s as usize] = st;
        let key = if mixed { 0 } else { !ran as u64 };
        keyed.push(((level, key, rng.below(1000)), s, ran));
    }
    keyed.sort();
    for &(_, s, ran) in &keyed {
        m.enqueue_for_test(s, ran);
    }
    let mut kv = KvPool::new(gpu_used + rng.below(30) as u32, 16);
    assert!(kv.try_alloc(gpu_used));
    let mut host = KvPool::new(host_used + rng.below(30) as u32, 16);
    assert!(host.try_alloc(host_used));
    (m, reqs, kv, host, now)
}

fn view<'a>(reqs: &'a Slab, kv: &'a KvPool, host: &'a KvPool, now: Ns, b: u32) -> ReplicaView<'a> {
    ReplicaView {
        reqs,
        kv,
        host,
        offload: KvOffload::default(),
        now_ns: now,
        limits: Limits {
            max_batch_size: b,
            max_batch_tokens: 2048,
            max_context_tokens: 2048,
        },
    }
}

/// The pass over the requests that hold KV swaps out and in exactly what the queue-wide
/// reference does: pseudo-random queues (levels with never-run requests behind or among those
/// that ran), batches, free blocks and windows; 3000 cases.
#[test]
fn paper_offload_matches_the_queue_wide_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut swaps = 0;
    for case in 0..3000 {
        let n = 1 + rng.below(if case % 5 == 0 { 400 } else { 40 }) as usize;
        let (m, reqs, kv, host, now) = random_queue(&mut rng, n, case % 2 == 0);
        let b = 1 + rng.below(6) as u32;
        let v = view(&reqs, &kv, &host, now, b);
        // A batch formed in priority order: some of the first requests.
        let mut plan = Plan::default();
        for s in m.order.iter().take(8) {
            if rng.below(2) == 0 && !v.req(s).in_flight() {
                plan.run.push(RunItem {
                    slot: s,
                    reserve_blocks: 0,
                    prefill_chunk_tokens: 0,
                });
            }
        }
        let free_after = rng.below(kv.free_blocks() as u64 + 1) as u32;
        let reserve = rng.below(8) as u32;
        let (mut fast, mut slow) = (m.clone(), m.clone());
        let (mut p_fast, mut p_slow) = (plan.clone(), plan);
        fast.paper_offload(&v, &mut p_fast, free_after, reserve);
        slow.paper_offload_reference(&v, &mut p_slow, free_after, reserve);
        assert_eq!(p_fast.preempt, p_slow.preempt, "case {case}");
        assert_eq!(p_fast.swap_in, p_slow.swap_in, "case {case}");
        assert!(fast.taken.iter().all(|&t| !t));
        swaps += p_fast.preempt.len() + p_fast.swap_in.len();
    }
    assert!(swaps > 1000, "the cases swap: {swaps}");
}

/// 10,000 requests that never ran (level 2) ahead of 4 that hold KV (level 3): the pass looks at
/// the 4 (and checks them as the prefix of their level) and at the first request without KV, not
/// at the queue (the reference looks at all), and gives the same scores and swap-out.
#[test]
fn paper_offload_work_does_not_grow_with_the_never_run_queue() {
    let mut rng = Rng(7);
    let (mut m, mut reqs, _, _, now) = random_queue(&mut rng, 0, false);
    let (mut kv, host) = (KvPool::new(40, 16), KvPool::new(100, 16));
    for i in 0..10_004u64 {
        let mut r = Request::new(i, 0, 100, 50, 50);
        let level = if i < 4 { 3 } else { 2 };
        if i < 4 {
            (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (1, 100, 10, KvLoc::Gpu);
            assert!(kv.try_alloc(10));
        }
        let s = reqs.insert(r);
        m.state.resize(s as usize + 1, State::default());
        m.state[s as usize] = State {
            level,
            attained_ns: (i < 4) as Ns * MS,
            last_step_ns: now - 100 * MS,
            ..State::default()
        };
        m.enqueue_for_test(s, i < 4);
    }
    let v = view(&reqs, &kv, &host, now, 2);
    let mut reference = m.clone();
    let (mut plan, mut p_ref) = (Plan::default(), Plan::default());
    m.paper_offload(&v, &mut plan, 0, 2);
    reference.paper_offload_reference(&v, &mut p_ref, 0, 2);
    assert_eq!(plan.preempt, p_ref.preempt);
    assert_eq!(plan.preempt.len(), 1, "{plan:?}");
    assert!(m.enst_looked <= 16, "looked at {}", m.enst_looked);
    assert_eq!(reference.enst_looked, 10_004);
    let scores = reference.enst_s(&v);
    let fast: Vec<(usize, f64)> = m.scored.iter().map(|c| (c.pos, c.score)).collect();
    let want: Vec<(usize, f64)> = (10_000..10_004).map(|i| (i, scores[i])).collect();
    assert_eq!(fast, want);
}
