//! Requeueing a batch formed in priority order: no marks, no search.

use super::tests::{mlfq_config, requeue_reference};
use super::*;
use crate::cost::constant::ConstantCost;

const MS: Ns = 1_000_000;

/// A batch that takes the front of each level in the queue's order (as a batch formed in
/// priority order does), some of it passing its quantum, is requeued level by level without
/// marking the batch in `taken` or searching the levels for it (the search read every entry up
/// to the last member and the batch was marked at every boundary), over many boundaries, with
/// and without `requeue_reverses_batch`; the order stays the rebuilt one. A batch that skips a
/// level's front request is still searched for, and gives the rebuilt order too.
#[test]
fn prefix_batches_are_requeued_without_marks() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut x = crate::rng::XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rand = |n: u64| x.below(n);
    for reverses in [true, false] {
        let mut m = Mlfq::new(mlfq_config(cost.as_ref(), reverses), cost.clone(), "mlfq");
        let n: Slot = 200;
        for s in 0..n {
            let level = s % 5;
            m.state.push(State {
                level,
                attained_ns: rand(m.quantum_ns(level)),
                ..State::default()
            });
            m.enqueue_for_test(s, s % 7 != 0);
        }
        let mut batched = 0;
        for _ in 0..200 {
            // The first few of each level, in priority order.
            let mut batch = Vec::new();
            for (_, q) in m.order.levels() {
                let k = rand(4) as usize;
                batch.extend(q.iter().take(k));
            }
            let old = m.order.to_vec();
            // (Every slot has run after its first requeue: `ran_order` follows `order`.)
            let fresh = batch.iter().any(|&s| !m.has_run(s));
            let marks = m.requeue_marks;
            m.requeue_batch(&batch, rand(30 * MS), 1, |_| 0);
            assert_eq!(m.order.to_vec(), requeue_reference(&m, &old, &batch));
            m.assert_ran_order();
            if !fresh {
                assert_eq!(m.requeue_marks, marks, "reverses {reverses}");
            }
            batched += batch.len();
        }
        assert!(batched > 1_000);
        // A level's second request without its first: searched for (marked), same order.
        let (_, q) = m.order.levels().find(|(_, q)| q.len() >= 2).unwrap();
        let batch = vec![q.as_slice()[1]];
        let old = m.order.to_vec();
        let marks = m.requeue_marks;
        m.requeue_batch(&batch, 0, 1, |_| 0);
        assert_eq!(m.order.to_vec(), requeue_reference(&m, &old, &batch));
        assert_eq!(m.requeue_marks, marks + 1);
    }
}
