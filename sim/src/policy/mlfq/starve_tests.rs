//! The starvation check that moves the last check's block as a whole against the reference that
//! looks at every queued request (module `reference`): the same orders and states through
//! pseudo-random arrivals, batches, finishes and fast-forwards, and work that does not grow with
//! the block.

use super::*;
use crate::cost::constant::ConstantCost;
use crate::policy::Limits;
use crate::rng::XorShift as Rng;
use crate::swap::KvOffload;
use crate::vocab::KvPool;
use crate::vocab::request::Slab;

const MS: Ns = 1_000_000;

/// What `on_arrival` does to the queues, without a view.
fn arrive(m: &mut Mlfq, s: Slot, level: u32, now: Ns) {
    if m.state.len() <= s as usize {
        m.state.resize(s as usize + 1, State::default());
    }
    let last_step_ns = if m.cfg.starvation_clock_from_zero {
        0
    } else {
        now
    };
    m.state[s as usize] = State {
        level,
        last_step_ns,
        ..State::default()
    };
    m.ensure_ran(s as usize + 1);
    m.ran[s as usize] = false;
    m.arrival_seq[s as usize] = m.arrivals;
    m.arrivals += 1;
    m.new_prompts.partial = true;
    m.enqueue_arrival(s);
}

fn same(a: &Mlfq, b: &Mlfq, step: usize) {
    assert_eq!(a.order.to_vec(), b.order.to_vec(), "step {step}");
    assert_eq!(a.ran_order.to_vec(), b.ran_order.to_vec(), "step {step}");
    for s in a.order.iter() {
        let (x, y) = (a.state[s as usize], b.state[s as usize]);
        assert_eq!(
            (x.level, x.attained_ns, x.last_step_ns, x.promotions),
            (y.level, y.attained_ns, y.last_step_ns, y.promotions),
            "step {step} slot {s}"
        );
    }
    let counts = |m: &Mlfq| m.hist.iter().map(|c| c.promotions_out).collect::<Vec<_>>();
    assert_eq!(counts(a), counts(b), "step {step}");
}

/// A batch of the first requests in priority order, and now and then one from further back.
fn batch(m: &Mlfq, rng: &mut Rng) -> Vec<Slot> {
    let mut out: Vec<Slot> = m.order.iter().take(rng.below(5) as usize).collect();
    let n = m.order.len() as u64;
    if n > 0 && rng.below(3) == 0 {
        let s = m.order.iter().nth(rng.below(n) as usize).unwrap();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The block-moving check gives the reference's orders, states and counts after every step of
/// pseudo-random runs (both presets' check placement, reversal, reset and clocks; thresholds
/// from 0); 400 runs of 300 steps.
#[test]
fn starvation_check_matches_the_full_scan_reference() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (reqs, kv, host) = (Slab::default(), KvPool::new(1, 16), KvPool::new(1, 16));
    let (mut looked, mut looked_ref) = (0, 0);
    for run in 0..400 {
        let mut cfg = Params::default()
            .resolve(true, cost.as_ref(), "skip-join-mlfq")
            .unwrap();
        cfg.requeue_reverses_batch = rng.below(2) == 0;
        cfg.reset_attained_on_promotion = rng.below(2) == 0;
        cfg.starvation_clock_from_zero = rng.below(2) == 0;
        cfg.starvation_threshold_s = [0.0, 0.005, 0.03, 0.1][rng.below(4) as usize];
        let after_batch = rng.below(2) == 0;
        let mut fast = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        let mut slow = fast.clone();
        let (mut now, mut next_slot, mut free) = (0, 0, Vec::new());
        for step in 0..300 {
            match rng.below(10) {
                0..=2 => {
                    let s = free.pop().unwrap_or_else(|| {
                        next_slot += 1;
                        next_slot - 1
                    });
                    let level = rng.below(4) as u32;
                    arrive(&mut fast, s, level, now);
                    arrive(&mut slow, s, level, now);
                }
                3 if fast.order.len() > 0 => {
                    let n = fast.order.len() as u64;
                    let s = fast.order.iter().nth(rng.below(n) as usize).unwrap();
                    fast.on_finish(s);
                    slow.on_finish(s);
                    free.push(s);
                }
                4 if run % 3 == 0 => {
                    // A fast-forward: the batch is a prefix of the order.
                    let k = rng.below(fast.order.len() as u64 + 1) as usize;
                    let mut b: Vec<Slot> = fast.order.iter().take(k).collect();
                    now += 1 + rng.below(50 * MS);
                    let v = ReplicaView {
                        reqs: &reqs,
                        kv: &kv,
                        host: &host,
                        offload: KvOffload::default(),
                        now_ns: now,
                        limits: Limits {
                            max_batch_size: 4,
                            max_batch_tokens: 2048,
                            max_context_tokens: 2048,
                        },
                    };
                    let (iters, service) = (1 + rng.below(3), rng.below(20 * MS));
                    fast.on_steady_iterations(&mut b.clone(), iters, service, &v);
                    slow.on_steady_iterations(&mut b, iters, service, &v);
                }
                _ => {
                    let b = batch(&fast, &mut rng);
                    if after_batch {
                        fast.starvation_check(now, &b);
                        slow.starvation_check_reference(now, &b);
                    } else {
                        fast.starvation_check(now, &[]);
                        slow.starvation_check_reference(now, &[]);
                    }
                    same(&fast, &slow, step);
                    let dur = 1 + rng.below(20 * MS);
                    now += dur;
                    fast.requeue_batch(&b, dur, now, |_| 0);
                    slow.requeue_batch(&b, dur, now, |_| 0);
                }
            }
            same(&fast, &slow, step);
        }
        (looked, looked_ref) = (looked + fast.starve_looked, looked_ref + slow.starve_looked);
    }
    // The runs keep blocks that the checks pass over.
    assert!(looked * 2 < looked_ref, "{looked} vs {looked_ref}");
}

/// A burst of 10,000 requests: once they are all idle past the threshold, each check (one per
/// boundary) looks at the batch and the few that ran since the last check, not at the queue
/// (the reference looks at every request at every check); the requeue after it finds the batch
/// behind the block from the back of level 0, not by walking the block.
#[test]
fn starvation_check_work_does_not_grow_with_the_queue() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut cfg = Params::default()
        .resolve(true, cost.as_ref(), "skip-join-mlfq")
        .unwrap();
    cfg.starvation_threshold_s = 0.3;
    cfg.starvation_clock_from_zero = false;
    for reverses in [false, true] {
        cfg.requeue_reverses_batch = reverses;
        let mut m = Mlfq::new(cfg.clone(), cost.clone(), "skip-join-mlfq");
        for s in 0..10_000 {
            arrive(&mut m, s, s % 4, 0);
        }
        let mut reference = m.clone();
        let mut now = 400 * MS;
        for boundary in 0..200 {
            let b: Vec<Slot> = m.order.iter().take(4).collect();
            m.starvation_check(now, &b);
            reference.starvation_check_reference(now, &b);
            if boundary == 0 {
                // The first check looks at everyone (nobody was promoted before).
                assert_eq!(m.starve_looked, 10_000);
                m.starve_looked = 0;
            }
            now += 30 * MS;
            m.requeue_batch(&b, 30 * MS, now, |_| 0);
            reference.requeue_batch(&b, 30 * MS, now, |_| 0);
        }
        assert_eq!(m.order.to_vec(), reference.order.to_vec());
        // 199 checks: the 4 of the batch, the 4 requeued in front and the ones that ran within
        // the threshold (10 boundaries of 4).
        assert!(m.starve_looked < 199 * 60, "looked at {}", m.starve_looked);
        assert!(reference.starve_looked > 200 * 9_000);
        // The check leaves the batch behind the block: the requeue finds it from the back.
        assert!(
            m.requeue_touched < 200 * 50,
            "requeue looked at {}",
            m.requeue_touched
        );
    }
}
