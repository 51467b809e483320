use super::*;
use crate::cost::constant::ConstantCost;
use crate::policy::{Limits, PreemptMode, RunItem};
use crate::swap::KvOffload;
use crate::vocab::KvPool;
use crate::vocab::request::{Request, Slab};

const MS: Ns = 1_000_000;

impl Mlfq {
    /// Queue `s` (its state set) at the back of its level as an arrival does; `has_run`: it ran
    /// before (it joins `ran_order`, at the back of its level there too).
    pub(super) fn enqueue_for_test(&mut self, s: Slot, has_run: bool) {
        self.ensure_ran(s as usize + 1);
        self.arrival_seq[s as usize] = self.arrivals;
        self.arrivals += 1;
        self.new_prompts.partial = true;
        self.ran[s as usize] = has_run;
        self.resident_stale();
        self.push_back(s);
        if has_run {
            self.ran_order
                .push_back(self.state[s as usize].level as usize, s);
        }
    }

    /// Each level of `order` holds requests of that level, and `ran_order` is, level by level,
    /// the subsequence of `order` of the requests marked as having run.
    pub(super) fn assert_ran_order(&self) {
        for (p, q) in self.order.levels() {
            assert!(
                q.iter()
                    .all(|&s| self.state[s as usize].level as usize == p)
            );
        }
        let want: Vec<Slot> = self.order.iter().filter(|&s| self.has_run(s)).collect();
        assert_eq!(self.ran_order.to_vec(), want);
        for (p, q) in self.ran_order.levels() {
            assert!(
                q.iter()
                    .all(|&s| self.state[s as usize].level as usize == p)
            );
        }
    }
}

fn req(id: u64) -> Request {
    Request {
        generated_tokens: 50,
        kv_tokens: 100,
        blocks: 10,
        kv_loc: KvLoc::Gpu,
        ..Request::new(id, 0, 50, 100, 100)
    }
}

/// Four resident requests (10 blocks each, a full 40-block GPU): 0 and 1 at level 0 (0 has
/// used 4 ms of its 10 ms quantum), 2 and 3 at level 2 (quantum 40 ms; 2 has used 5 ms and
/// idled 1 s, 3 idled 2.99 s of the 3 s starvation threshold). B = 2.
fn setup(offload: Offload) -> (Mlfq, Slab, KvPool, KvPool, Ns) {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut cfg = Params::default()
        .resolve(false, cost.as_ref(), "mlfq")
        .unwrap();
    cfg.offload = offload;
    let mut m = Mlfq::new(cfg, cost, "mlfq");
    let mut reqs = Slab::default();
    let now = 10_000 * MS;
    let states = [
        (0, 4 * MS, now),
        (0, 0, now),
        (2, 5 * MS, now - 1000 * MS),
        (2, 0, now - 2990 * MS),
    ];
    for (i, &(level, attained_ns, last_step_ns)) in states.iter().enumerate() {
        let s = reqs.insert(req(i as u64));
        m.state.resize(s as usize + 1, State::default());
        m.state[s as usize] = State {
            level,
            attained_ns,
            last_step_ns,
            ..State::default()
        };
        m.enqueue_for_test(s, true);
    }
    let mut kv = KvPool::new(40, 16);
    assert!(kv.try_alloc(40));
    (m, reqs, kv, KvPool::new(100, 16), now)
}

fn view<'a>(reqs: &'a Slab, kv: &'a KvPool, host: &'a KvPool, now: Ns) -> ReplicaView<'a> {
    ReplicaView {
        reqs,
        kv,
        host,
        offload: KvOffload::default(),
        now_ns: now,
        limits: Limits {
            max_batch_size: 2,
            max_batch_tokens: 2048,
            max_context_tokens: 2048,
        },
    }
}

/// The lazily followed run's last iteration, requeued straight from the lazy levels, leaves
/// the same order and states as writing everything back and requeueing the batch — with
/// demotions at the end, levels read either way and fresh arrivals at levels that also receive
/// demoted requests. Pseudo-random states, 300 cases.
#[test]
fn lazy_requeue_equals_write_back_then_requeue() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let cfg = Params::default()
        .resolve(true, cost.as_ref(), "skip-join-mlfq")
        .unwrap();
    let mut x = crate::rng::XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rand = |n: u64| x.below(n);
    for _ in 0..300 {
        let mut m = Mlfq::new(cfg.clone(), cost.clone(), "skip-join-mlfq");
        let queued = 1 + rand(14) as usize;
        let mut slots: Vec<Slot> = (0..queued as Slot).collect();
        slots.sort_by_key(|_| rand(1000));
        for &s in &slots {
            let level = rand(4) as u32;
            m.state
                .resize(m.state.len().max(s as usize + 1), State::default());
            m.state[s as usize] = State {
                level,
                attained_ns: rand(m.quantum_ns(level) + 1),
                ..State::default()
            };
            m.push_back(s);
        }
        m.on_steady_begin(Ns::MAX);
        m.lazy_begin();
        for k in 0..rand(4) {
            m.lazy_step(1 + rand(30 * MS), (k + 1) * 100 * MS, |_| 0);
        }
        let mut batch = vec![0; queued];
        m.steady_order(&mut batch);
        for f in 0..rand(4) as Slot {
            let s = queued as Slot + f;
            m.state.resize(s as usize + 1, State::default());
            m.state[s as usize] = State {
                level: rand(4) as u32,
                last_step_ns: 7,
                ..State::default()
            };
            m.enqueue_arrival(s);
        }
        let (dur, now) = (1 + rand(30 * MS), 1000 * MS);
        let mut lazy = m.clone();
        lazy.requeue_lazy(dur, now);
        let mut eager = m.clone();
        eager.materialize();
        eager.requeue_batch(&batch, dur, now, |_| 0);
        assert_eq!(lazy.order.to_vec(), eager.order.to_vec());
        lazy.assert_ran_order();
        for s in 0..lazy.state.len() {
            let (a, b) = (lazy.state[s], eager.state[s]);
            assert_eq!(
                (a.level, a.attained_ns, a.last_step_ns, a.demotions),
                (b.level, b.attained_ns, b.last_step_ns, b.demotions)
            );
        }
        assert!(!lazy.lazy.active && !eager.lazy.active);
    }
}

/// Hand-computed ENST (quanta q0 = 10 ms, q1 = 20 ms, q2 = 40 ms; Q(2) = 30 ms):
/// - 0: nobody ahead → T_execute 0; level 0 → ENST 0;
/// - 1: 0 ahead in its level: (10 − 4) ms / 2 = 3 ms;
/// - 2: 0 and 1 ahead from level 0: ((30 − 4) + (30 − 0)) ms / 2 = 28 ms; T_promote = 3 − 1 =
///   2 s → ENST 28 ms;
/// - 3: those plus 2 in its level: (56 + (40 − 5)) ms / 2 = 45.5 ms, but T_promote =
///   3 − 2.99 = 10 ms → ENST 10 ms.
#[test]
fn enst_by_hand() {
    let (mut m, reqs, kv, host, now) = setup(Offload::Paper);
    let v = view(&reqs, &kv, &host, now);
    let scores = m.enst_s(&v);
    let want = [0.0, 0.003, 0.028, 0.010];
    for (got, want) in scores.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{scores:?} vs {want:?}");
    }
    // The pass over the requests that hold KV gives the same scores (all four hold KV).
    m.enst_scored(&v, &[false; 4]);
    let fast: Vec<f64> = m.scored.iter().map(|c| c.score).collect();
    assert_eq!(fast, scores);
}

/// With 0 and 1 in the batch and no free block, the reserve (B = 2 blocks) needs one
/// swap-out: the paper's order picks the largest ENST (request 2, 28 ms), the code's order
/// the last one queued (request 3, whose ENST is only 10 ms: it is about to be promoted).
#[test]
fn paper_swaps_out_largest_enst_code_swaps_out_last_queued() {
    for (offload, victim) in [(Offload::Paper, 2), (Offload::Proactive, 3)] {
        let (mut m, reqs, kv, host, now) = setup(offload);
        let v = view(&reqs, &kv, &host, now);
        let mut plan = Plan::default();
        for s in [0, 1] {
            plan.run.push(RunItem {
                slot: s,
                reserve_blocks: 0,
                prefill_chunk_tokens: 0,
            });
        }
        m.proactive(&v, &mut plan, 0);
        assert_eq!(
            plan.preempt,
            vec![(victim, PreemptMode::Swap)],
            "{offload:?}"
        );
        assert!(plan.swap_in.is_empty());
    }
}

/// The order `requeue_batch` must give, rebuilt from scratch: level by level, the batch
/// members now at that level (reversed with `requeue_reverses_batch`), then its other members
/// in their old order.
pub(super) fn requeue_reference(m: &Mlfq, old: &[Slot], batch: &[Slot]) -> Vec<Slot> {
    let mut out = Vec::new();
    for p in 0..=LEVEL_CAP {
        let at = |&&s: &&Slot| m.state[s as usize].level == p;
        let mut group: Vec<Slot> = batch.iter().filter(at).copied().collect();
        if m.cfg.requeue_reverses_batch {
            group.reverse();
        }
        out.extend(group);
        out.extend(old.iter().filter(at).filter(|s| !batch.contains(s)));
    }
    out
}

/// `mlfq`'s default configuration with `requeue_reverses_batch` set.
pub(super) fn mlfq_config(cost: &dyn CostModel, reverses: bool) -> Config {
    let mut cfg = Params::default().resolve(false, cost, "mlfq").unwrap();
    cfg.requeue_reverses_batch = reverses;
    cfg
}

/// Requeueing a batch of 17 in front of a queue of 10,000 looks at the batch's entries only
/// (the rest of the changed prefix moves by bulk copy): the work of a boundary does not grow
/// with the queue. Random small queues and batches (prefix or not) give the rebuilt order.
#[test]
fn requeue_batch_matches_a_full_rebuild_and_touches_only_the_batch() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    for reverses in [true, false] {
        let cfg = mlfq_config(cost.as_ref(), reverses);
        let mut m = Mlfq::new(cfg.clone(), cost.clone(), "mlfq");
        let n: Slot = 10_000;
        m.state.resize(n as usize, State::default());
        // Slot 16 first, so at the front of level 1; 0..16 at the front of level 0 (8..16
        // pass their 10 ms quantum in the next 10 ms iteration); the rest at levels 0, 1, 3.
        for s in std::iter::once(16).chain(0..16).chain(17..n) {
            m.state[s as usize] = State {
                level: match s {
                    0..=15 => 0,
                    16 => 1,
                    _ => [0, 1, 3][s as usize % 3],
                },
                attained_ns: if (8..16).contains(&s) { 5 * MS } else { 0 },
                ..State::default()
            };
            m.push_back(s);
        }
        let batch: Vec<Slot> = (0..17).collect();
        let old = m.order.to_vec();
        m.requeue_batch(&batch, 10 * MS, 20 * MS, |_| 0);
        assert_eq!(m.order.to_vec(), requeue_reference(&m, &old, &batch));
        assert!(
            m.requeue_touched <= batch.len() as u64,
            "looked at {} queue entries for a batch of {}",
            m.requeue_touched,
            batch.len()
        );
    }
    let mut x = crate::rng::XorShift(0x2545_f491_4f6c_dd1d);
    let mut rand = |n: u64| x.below(n);
    for _ in 0..500 {
        let mut cfg = Params {
            preset: if rand(2) == 0 {
                Preset::Code
            } else {
                Preset::Paper
            },
            ..Params::default()
        }
        .resolve(false, cost.as_ref(), "mlfq")
        .unwrap();
        cfg.requeue_reverses_batch = rand(2) == 0;
        cfg.max_levels = rand(5) as u32;
        let mut m = Mlfq::new(cfg, cost.clone(), "mlfq");
        let queued = 1 + rand(20) as Slot;
        for s in 0..queued {
            let level = rand(4) as u32;
            m.state.push(State {
                level,
                attained_ns: rand(m.quantum_ns(level) + 1),
                ..State::default()
            });
            m.enqueue_for_test(s, rand(2) == 0);
        }
        let old = m.order.to_vec();
        let batch: Vec<Slot> = old.iter().copied().filter(|_| rand(3) == 0).collect();
        let kv_tokens = rand(2000) as u32;
        m.requeue_batch(&batch, rand(30 * MS), 1, |_| kv_tokens);
        assert_eq!(m.order.to_vec(), requeue_reference(&m, &old, &batch));
        assert!(batch.iter().all(|&s| m.has_run(s)));
        m.assert_ran_order();
        if let Some(&s) = m.order.to_vec().get(rand(m.order.len() as u64) as usize) {
            m.remove_from_order(s);
            m.assert_ran_order();
        }
    }
}

/// Where a test request's KV is: resident on the GPU (blocks), on the host (GPU blocks it takes
/// back), or nowhere yet (a new 100-token prompt: 7 blocks of 16 tokens).
#[derive(Clone, Copy)]
pub(super) enum Mem {
    Gpu(u32),
    Host(u32),
    New,
}

/// Requests queued at level 0 in the given order (a 100-token context each when started; a
/// started one needs no new block for its next token: 101 tokens ≤ 7 × 16), on a GPU pool of
/// `gpu_blocks` holding the resident ones and a host pool of `host_blocks` holding the offloaded
/// ones; `max_batch_size` = `b`. Preset `code` with `edit` applied.
pub(super) fn memory_case(
    mems: &[Mem],
    gpu_blocks: u32,
    host_blocks: u32,
    edit: impl Fn(&mut Config),
) -> (Mlfq, Slab, KvPool, KvPool) {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut cfg = Params::default()
        .resolve(true, cost.as_ref(), "skip-join-mlfq")
        .unwrap();
    edit(&mut cfg);
    let mut m = Mlfq::new(cfg, cost, "skip-join-mlfq");
    let mut reqs = Slab::default();
    let mut kv = KvPool::new(gpu_blocks, 16);
    let mut host = KvPool::new(host_blocks, 16);
    for (i, &mem) in mems.iter().enumerate() {
        let mut r = Request::new(i as u64, 0, 100, 50, 50);
        match mem {
            Mem::Gpu(b) => {
                (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (1, 100, b, KvLoc::Gpu);
                assert!(kv.try_alloc(b));
            }
            Mem::Host(b) => {
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (1, 100, KvLoc::Host);
                (r.host_blocks, r.offloaded_gpu_blocks) = (b, b);
                assert!(host.try_alloc(b));
            }
            Mem::New => {}
        }
        let s = reqs.insert(r);
        m.state.resize(s as usize + 1, State::default());
        m.state[s as usize] = State {
            last_step_ns: 10_000 * MS,
            ..State::default()
        };
        m.enqueue_for_test(s, !matches!(mem, Mem::New));
    }
    (m, reqs, kv, host)
}

pub(super) fn view_b<'a>(
    reqs: &'a Slab,
    kv: &'a KvPool,
    host: &'a KvPool,
    b: u32,
) -> ReplicaView<'a> {
    let mut v = view(reqs, kv, host, 10_000 * MS);
    v.limits.max_batch_size = b;
    v
}

fn run_slots(plan: &Plan) -> Vec<Slot> {
    plan.run.iter().map(|i| i.slot).collect()
}

/// Proactive swap-in window (`reserve_free_blocks` with no swap-out): B = 2, queue
/// [0 GPU 10, 1 GPU 10, 2 host 5, 3 new, 4 host 5], GPU 40 blocks (20 free), host 100.
/// The batch pops 0 and 1 (need 0: their next token fits their blocks); reserve = max(B, 0) = 2;
/// deficit = 2 + 0 − 20 < 0, so no swap-out and the window walks the queue *after* the batch with
/// a quota of B = 2: request 2 (host, 20 ≥ 2 + 0 + 5: swapped in), request 3 (never run: counts
/// against the quota anyway) — quota spent, so 4 stays on the host.
/// (servesim's earlier rule spent the quota on the batch members 0 and 1: no swap-in at all.)
#[test]
fn code_swap_in_window_spends_the_quota_after_the_batch() {
    use Mem::*;
    let (mut m, reqs, kv, host) =
        memory_case(&[Gpu(10), Gpu(10), Host(5), New, Host(5)], 40, 100, |_| {});
    let v = view_b(&reqs, &kv, &host, 2);
    let mut plan = Plan::default();
    m.schedule(&v, &mut plan);
    assert_eq!(run_slots(&plan), vec![0, 1]);
    assert!(plan.preempt.is_empty());
    assert_eq!(plan.swap_in, vec![2]);
    // A window member that does not fit is passed over, and still counts: with 2 needing 19
    // blocks (20 < 2 + 0 + 19 = 21) nothing is swapped in (3 takes the rest of the quota).
    let (mut m, reqs, kv, host) =
        memory_case(&[Gpu(10), Gpu(10), Host(19), New, Host(5)], 40, 100, |_| {});
    let v = view_b(&reqs, &kv, &host, 2);
    m.schedule(&v, &mut plan);
    assert!(plan.swap_in.is_empty(), "{:?}", plan.swap_in);
}

/// Swap-out-to-admit (`batch_memory = "reserve"`): B = 2, queue [0 new, 1 GPU 10, 2 GPU 10,
/// 3 GPU 10, 4 GPU 10] on a full 40-block GPU. The batch pops 0 and 1 by priority (size and token
/// checks only); need = 7 (0's prompt: ⌈100/16⌉) + 0 = 7, reserve = 2, available = 0, so the
/// deficit is 2 + 7 − 0 = 9 blocks: swap out from the lowest priority up — 4 (10 blocks) covers it
/// (9 − 10 < 0). No batch member is dropped. 0's blocks come from that swap-out, whose copy is
/// still running at this boundary: 0 waits for the next one, 1 (need 0) runs now.
/// (The evict rule instead gives 0 the blocks of the lowest request and, stop-at-misfit, runs
/// nobody.)
#[test]
fn code_swaps_out_the_lowest_priority_to_admit_the_batch() {
    use Mem::*;
    let mems = [New, Gpu(10), Gpu(10), Gpu(10), Gpu(10)];
    let (mut m, reqs, kv, host) = memory_case(&mems, 40, 100, |_| {});
    let v = view_b(&reqs, &kv, &host, 2);
    let mut plan = Plan::default();
    m.schedule(&v, &mut plan);
    assert_eq!(plan.preempt, vec![(4, PreemptMode::Swap)]);
    assert_eq!(run_slots(&plan), vec![1]);
    assert!(plan.swap_in.is_empty());
    let (mut m, reqs, kv, host) = memory_case(&mems, 40, 100, |c| {
        c.batch_memory = BatchMemory::Evict;
        c.host_full = HostFull::Recompute;
    });
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(run_slots(&plan), Vec::<Slot>::new());
    // Only batch members hold GPU blocks: B = 3, queue [0 GPU 10, 1 new, 2 new], GPU 14 blocks
    // (4 free). need = 0 + 7 + 7 = 14, reserve 3, deficit = 3 + 14 − 4 = 13; no queued request
    // to swap out, so the batch's tail goes: 2 (13 − 7 = 6), then 1 (6 − 7 < 0). 0 runs.
    let (mut m, reqs, kv, host) = memory_case(&[Gpu(10), New, New], 14, 100, |_| {});
    m.schedule(&view_b(&reqs, &kv, &host, 3), &mut plan);
    assert_eq!(run_slots(&plan), vec![0]);
    assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
}

/// A full host pool: B = 2, queue [0 host 7, 1 GPU 10, 2 GPU 10] on a full 20-block GPU and a
/// full 7-block host pool. The batch pops 0 and 1; need = 7 (0 swaps back in: ⌈101/16⌉) + 0,
/// reserve 2, available 0: deficit 9. Victim 2 (10 blocks) has no host room.
/// - `defer`: 2 is not evicted. From the batch's tail: 1 is GPU-resident and cannot be swapped out
///   either, so dropping it would free nothing — it stays; 0 is dropped (9 − 7 = 2, which is the
///   reserve alone: members are not dropped for the reserve once the host refused a swap-out).
///   0's place goes to the next GPU-resident request, 2 (need 0): 1 and 2 run, 0 waits until a
///   resident request finishes — nobody is recomputed.
/// - `recompute`: 2 is recomputed (9 − 10 < 0; its 10 blocks are free at once), so 0 (7 blocks,
///   swapped in reactively) and 1 both run.
#[test]
fn host_full_defers_or_recomputes() {
    use Mem::*;
    let mems = [Host(7), Gpu(10), Gpu(10)];
    let (mut m, reqs, kv, host) = memory_case(&mems, 20, 7, |_| {});
    assert_eq!(m.cfg.host_full, HostFull::Defer);
    let mut plan = Plan::default();
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(run_slots(&plan), vec![1, 2]);
    assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
    let (mut m, reqs, kv, host) = memory_case(&mems, 20, 7, |c| c.host_full = HostFull::Recompute);
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(run_slots(&plan), vec![0, 1]);
    assert_eq!(plan.preempt, vec![(2, PreemptMode::Recompute)]);
}

/// Starvation check order: B = 1, queue [0 at level 0 (just ran), 1 at level 2 idle 3 s ≥ the
/// 3 s threshold], checked at every boundary. `after-batch` (the code: `prevent_starvation` at the
/// end of `get_next_batch`): the batch is 0, then 1 is promoted to the front of level 0 (it runs
/// at the next boundary). `before-batch`: 1 is promoted first and runs now.
#[test]
fn code_checks_starvation_after_forming_the_batch() {
    use Mem::*;
    for (check, want) in [
        (StarvationCheck::AfterBatch, 0),
        (StarvationCheck::BeforeBatch, 1),
    ] {
        let (mut m, reqs, kv, host) = memory_case(&[Gpu(10), Gpu(10)], 40, 100, |c| {
            c.starvation_check = check;
            c.starvation_period_iterations = 1;
        });
        m.remove_from_order(1);
        m.state[1] = State {
            level: 2,
            last_step_ns: 7_000 * MS,
            ..State::default()
        };
        m.enqueue_for_test(1, true);
        let mut plan = Plan::default();
        m.schedule(&view_b(&reqs, &kv, &host, 1), &mut plan);
        assert_eq!(run_slots(&plan), vec![want], "{check:?}");
        assert_eq!(m.state[1].level, 0, "{check:?}: promoted either way");
        assert_eq!(m.hist[2].promotions_out, 1);
    }
}

/// `fcfs-swap`: one level in arrival order. B = 2, three new requests: the batch is 0 and 1, and
/// after their iteration (10 ms, which would demote them under MLFQ's 10 ms quantum at the next
/// one) still 0 and 1 — requeueing moves nobody; once 0 finishes, 1 and 2.
#[test]
fn fcfs_swap_keeps_arrival_order() {
    use Mem::*;
    let (mut m, mut reqs, kv, host) = memory_case(&[New, New, New], 100, 100, |c| {
        c.fifo = true;
        c.max_levels = 1;
        c.requeue_reverses_batch = false;
    });
    let mut plan = Plan::default();
    for _ in 0..3 {
        m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
        assert_eq!(run_slots(&plan), vec![0, 1]);
        m.on_iteration_end(&[0, 1], 10 * MS, &view_b(&reqs, &kv, &host, 2));
        assert_eq!(m.order.to_vec(), vec![0, 1, 2]);
    }
    m.on_finish(0);
    reqs.remove(0);
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(run_slots(&plan), vec![1, 2]);
    assert_eq!(m.state[1].level, 0);
}

/// Deadlock under `defer`: B = 2, queue [0 host 7, 1 GPU 7 (112 tokens: its next token needs a
/// new block), 2 GPU 7 (same)] on a full 14-block GPU and a full 7-block host. Nobody can be
/// swapped out, 0 waits, and neither resident request can grow (0 free blocks): nothing could
/// run and nothing is being copied. The lowest-priority resident request (2) is recomputed and
/// its 7 blocks go to 1 (needs 1 of them). (The code would crash on the full host pool.)
#[test]
fn host_full_deadlock_recomputes_only_the_lowest_resident() {
    use Mem::*;
    let (mut m, mut reqs, kv, host) = memory_case(&[Host(7), Gpu(7), Gpu(7)], 14, 7, |_| {});
    for s in [1, 2] {
        reqs.get_mut(s).kv_tokens = 112;
    }
    let mut plan = Plan::default();
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(plan.preempt, vec![(2, PreemptMode::Recompute)]);
    assert_eq!(run_slots(&plan), vec![1]);
}

/// A boundary's batch and memory scans look only at requests that have run while new ones are
/// deferred (host pool < 10 % free): with B = 4, four resident requests behind and between a
/// growing queue of new ones, a full GPU and a nearly full host, the entries looked at stay the
/// same as the new requests grow tenfold, and so does the plan (`skip-join-mlfq` and `fcfs-swap`,
/// both `batch_memory = "reserve"`). A scan of the whole queue looked at over 1,000 entries.
#[test]
fn deferred_new_requests_cost_nothing_per_boundary() {
    use Mem::*;
    for fifo in [false, true] {
        let mut looked = Vec::new();
        for new in [1_000, 10_000] {
            let mut mems = vec![New; new / 2];
            mems.extend([Gpu(10), Gpu(10), Gpu(10), Gpu(10)]);
            mems.extend(vec![New; new / 2]);
            mems.push(Host(95));
            let (mut m, reqs, kv, host) = memory_case(&mems, 40, 100, |c| {
                c.fifo = fifo;
                if fifo {
                    c.max_levels = 1;
                    c.requeue_reverses_batch = false;
                }
            });
            let v = view_b(&reqs, &kv, &host, 4);
            let mut plan = Plan::default();
            m.schedule(&v, &mut plan);
            let resident: Vec<Slot> = (0..4).map(|i| (new / 2 + i) as Slot).collect();
            assert_eq!(run_slots(&plan), resident, "fifo {fifo}");
            m.on_iteration_end(&resident, 10 * MS, &v);
            m.assert_ran_order();
            m.schedule(&v, &mut plan);
            looked.push(m.scanned);
        }
        assert_eq!(looked[0], looked[1], "fifo {fifo}");
        assert!(looked[1] < 100, "fifo {fifo}: looked at {}", looked[1]);
    }
}

/// The work of a requeue, an arrival and a finish does not grow with the queue: with 1,000 or
/// 10,000 requests queued at levels 0–3 (a quarter of them have run), a batch of 16 from the
/// front of level 0 (8 of which pass their quantum and go to level 1) is requeued, a request
/// arrives at level 0 and two batch members finish, and the queue entries looked at, written or
/// shifted are the same. (The flat order shifted every entry behind level 0 for an arrival
/// (`Vec::insert`) and copied whole levels at each requeue: thousands of entries at 10,000.)
#[test]
fn requeue_arrival_and_finish_work_does_not_grow_with_the_queue() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    for reverses in [true, false] {
        let cfg = mlfq_config(cost.as_ref(), reverses);
        let mut work = Vec::new();
        for n in [1_000, 10_000] {
            let mut m = Mlfq::new(cfg.clone(), cost.clone(), "mlfq");
            m.state.resize(n + 1, State::default());
            for s in 0..n as Slot {
                m.state[s as usize] = State {
                    level: if s < 16 { 0 } else { s % 4 },
                    attained_ns: if s < 8 { 9 * MS } else { 0 },
                    ..State::default()
                };
                m.enqueue_for_test(s, s < 16 || s % 4 == 0);
            }
            let count = |m: &Mlfq| m.requeue_touched + m.order.work + m.ran_order.work;
            let before = count(&m);
            let batch: Vec<Slot> = (0..16).collect();
            m.requeue_batch(&batch, 5 * MS, 20 * MS, |_| 0);
            m.enqueue_arrival(n as Slot);
            m.on_finish(3);
            m.on_finish(12);
            work.push(count(&m) - before);
            m.assert_ran_order();
            assert_eq!(m.state[3].level, 1);
            assert_eq!(m.order.len(), n - 1);
        }
        assert_eq!(work[0], work[1], "reverses {reverses}");
        assert!(work[1] < 100, "reverses {reverses}: {}", work[1]);
    }
}

/// A [`levels::Level`] behaves as a double-ended queue (against `VecDeque`, 20,000 random
/// operations: joins at both ends, drops from the front — which reclaim the room in front —,
/// removals and insertions inside, `retain`), and `Levels::requeue_level` as taking the batch
/// out of the level and pushing the group at its front.
#[test]
fn level_is_a_deque() {
    use std::collections::VecDeque;
    let mut x = crate::rng::XorShift(0x1234_5678_9abc_def1);
    let mut rand = |n: u64| x.below(n);
    let mut level = levels::Level::default();
    let mut model: VecDeque<Slot> = VecDeque::new();
    for next in 0..20_000 as Slot {
        let len = model.len() as u64;
        match rand(8) {
            0 | 1 => {
                level.push_back(next);
                model.push_back(next);
            }
            2 | 3 => {
                level.push_front(next);
                model.push_front(next);
            }
            4 => {
                let n = rand(len + 1) as usize;
                level.drop_front(n);
                model.drain(..n);
            }
            5 if len > 0 => {
                let i = rand(len) as usize;
                level.remove(i);
                model.remove(i);
            }
            6 => {
                let i = rand(len + 1) as usize;
                level.insert(i, next);
                model.insert(i, next);
            }
            _ => {
                let m = 2 + rand(5) as Slot;
                level.retain(|&s| s % m != 0 || s % 3 == 0);
                model.retain(|&s| s % m != 0 || s % 3 == 0);
            }
        }
        assert!(level.iter().eq(model.iter()));
    }
    let mut m = Mlfq::new(
        Params::default()
            .resolve(false, &ConstantCost { iteration_s: 0.01 }, "mlfq")
            .unwrap(),
        Arc::new(ConstantCost { iteration_s: 0.01 }),
        "mlfq",
    );
    for _ in 0..2_000 {
        let n = rand(12) as Slot;
        m.order.clear();
        for s in 0..n {
            m.order.push_back(0, s);
        }
        let mut taken = vec![false; 100];
        let out: Vec<Slot> = (0..n).filter(|_| rand(2) == 0).collect();
        for &s in &out {
            taken[s as usize] = true;
        }
        let group: Vec<Slot> = (50..50 + rand(8) as Slot).collect();
        m.order.requeue_level(0, out.len() as u32, &taken, &group);
        let mut want = group.clone();
        want.extend((0..n).filter(|s| !out.contains(s)));
        assert_eq!(m.order.to_vec(), want);
        assert_eq!(m.order.len(), want.len());
    }
}

/// Chunked prefill (16-token chunks), no host pool: two prefills under way, 80 of 100 prompt
/// tokens each in 5 blocks, on a full 10-block GPU. 0 arrived first but was demoted (level 3);
/// 1 (level 0) pops first and its next chunk needs a sixth block. The old rule recomputed the
/// lowest priority, 0, for it — and demotion keeps the request with the most chunks at the
/// bottom, so this repeated for ever in a burst. Now 0 is spared (it arrived before 1), 1 leaves
/// the batch with its KV, nothing else fits, and the boundary recomputes the latest arrival, 1,
/// so that 0 runs its chunk: the earliest arrival never loses its chunks.
#[test]
fn chunked_recompute_spares_the_earliest_arrival() {
    use Mem::*;
    let (mut m, mut reqs, kv, host) = memory_case(&[Gpu(5), Gpu(5)], 10, 0, |c| {
        c.chunk_size = Some(16);
    });
    for s in [0, 1] {
        let mut r = reqs.get_mut(s);
        (r.generated_tokens, r.kv_tokens, r.mid_prefill) = (0, 80, true);
    }
    m.order.remove(0, 0);
    m.ran_order.remove(0, 0);
    m.state[0].level = 3;
    m.push_back(0);
    m.ran_order.push_back(3, 0);
    let mut plan = Plan::default();
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(plan.preempt, vec![(1, PreemptMode::Recompute)]);
    assert_eq!(run_slots(&plan), vec![0]);
    assert_eq!(plan.run[0].prefill_chunk_tokens, 16);
}

/// `reserve_pass` when the popped batch fits: N = 50 GPU-resident requests (7 blocks each, their
/// next token fits) all popped (B = 64) with 300 blocks free. Each member's extra blocks are
/// computed once (the walk that drops members whose blocks are not free would keep them all),
/// and the swap-in window is not walked (every queued request is in the batch). With B = 2 the
/// window is walked (the queue goes on after the batch).
#[test]
fn reserve_pass_counts_a_fitting_batch_once_and_skips_an_empty_window() {
    use Mem::*;
    let n = 50;
    let (mut m, reqs, kv, host) = memory_case(&vec![Gpu(7); n], 7 * n as u32 + 300, 100, |_| {});
    let mut plan = Plan::default();
    m.schedule(&view_b(&reqs, &kv, &host, 64), &mut plan);
    assert_eq!(run_slots(&plan), (0..n as Slot).collect::<Vec<_>>());
    assert!(plan.preempt.is_empty() && plan.swap_in.is_empty());
    assert_eq!(m.blocks_looked, n as u64);
    assert_eq!(m.ahead_looked, 0);
    m.schedule(&view_b(&reqs, &kv, &host, 2), &mut plan);
    assert_eq!(run_slots(&plan), vec![0, 1]);
    assert_eq!(m.blocks_looked, n as u64 + 2);
    assert!(m.ahead_looked > 2, "{}", m.ahead_looked);
}
