//! `resident` (module `resident`): the eviction walk over it makes the same choices as the walk
//! of the whole `ran_order`, and does not look at host-resident requests.

use super::*;
use crate::cost::constant::ConstantCost;
use crate::policy::{Limits, PreemptMode};
use crate::rng::XorShift;
use crate::swap::KvOffload;
use crate::vocab::KvPool;
use crate::vocab::request::{Request, Slab};

const MS: Ns = 1_000_000;
const BLOCK_TOKENS: u32 = 16;

impl Mlfq {
    /// While `resident` is up to date: it is `ran_order` filtered by `res`, and holds every
    /// request of `ran_order` that is GPU-resident with blocks.
    pub(super) fn assert_resident(&self, view: &ReplicaView) {
        if !self.res_valid {
            return;
        }
        let want: Vec<Slot> = self
            .ran_order
            .iter()
            .filter(|&s| self.res[s as usize])
            .collect();
        assert_eq!(self.resident.to_vec(), want);
        for (p, q) in self.resident.levels() {
            assert!(
                q.iter()
                    .all(|&s| self.ran_order.level(p).iter().any(|&x| x == s))
            );
        }
        for s in self.ran_order.iter() {
            let r = view.req(s);
            if r.kv_loc == KvLoc::Gpu && r.blocks > 0 {
                assert!(self.res[s as usize], "slot {s} resident but not indexed");
            }
        }
    }
}

/// A small engine for policy tests: arrivals, batches, swaps and copies that end at random.
pub(crate) struct Engine {
    pub(crate) reqs: Slab,
    pub(crate) kv: KvPool,
    pub(crate) host: KvPool,
    pub(crate) now: Ns,
    pub(crate) b: u32,
    pub(crate) next_id: u64,
}

impl Engine {
    pub(crate) fn view(&self) -> ReplicaView<'_> {
        ReplicaView {
            reqs: &self.reqs,
            kv: &self.kv,
            host: &self.host,
            offload: KvOffload::default(),
            now_ns: self.now,
            limits: Limits {
                max_batch_size: self.b,
                max_batch_tokens: 512,
                max_context_tokens: 4096,
            },
        }
    }

    /// Copies in flight end (each with probability 3/4).
    pub(crate) fn end_copies(&mut self, x: &mut XorShift) {
        let slots: Vec<Slot> = self.reqs.iter_slots().map(|(s, _)| s).collect();
        for s in slots {
            let mut r = self.reqs.get_mut(s);
            if !r.in_transfer() || x.below(4) == 0 {
                continue;
            }
            if r.kv_loc == KvLoc::SwappingOut {
                self.kv.free(r.blocks);
                (r.blocks, r.kv_loc) = (0, KvLoc::Host);
            } else {
                self.host.free(r.host_blocks);
                (r.host_blocks, r.kv_loc) = (0, KvLoc::Gpu);
            }
        }
    }

    pub(crate) fn preempt(&mut self, plan: &Plan) {
        for &(s, mode) in &plan.preempt {
            let mut r = self.reqs.get_mut(s);
            let hb = KvOffload::default().host_blocks_for(r.blocks);
            if mode == PreemptMode::Swap && self.host.try_alloc(hb) {
                (r.host_blocks, r.offloaded_gpu_blocks) = (hb, r.blocks);
                r.kv_loc = KvLoc::SwappingOut;
            } else {
                self.kv.free(r.blocks);
                (r.blocks, r.kv_tokens, r.kv_loc, r.mid_prefill) = (0, 0, KvLoc::None, false);
            }
        }
        for &s in &plan.swap_in {
            let mut r = self.reqs.get_mut(s);
            if self.kv.try_alloc(r.offloaded_gpu_blocks) {
                (r.blocks, r.kv_loc) = (r.offloaded_gpu_blocks, KvLoc::SwappingIn);
            }
        }
    }

    /// Run the plan's batch (a member without the blocks it needs is left out); returns the
    /// survivors and the finished.
    pub(crate) fn run(&mut self, plan: &Plan) -> (Vec<Slot>, Vec<Slot>) {
        let (mut survivors, mut done) = (Vec::new(), Vec::new());
        for item in &plan.run {
            let s = item.slot;
            let mut r = self.reqs.get_mut(s);
            let on_host = r.kv_loc == KvLoc::Host;
            let held = if on_host {
                r.offloaded_gpu_blocks
            } else {
                r.blocks
            };
            let step = if r.in_prefill() {
                match item.prefill_chunk_tokens {
                    0 => r.prefill_left(),
                    c => c,
                }
            } else {
                1
            };
            let target = r.kv_tokens + step;
            let need = target.div_ceil(BLOCK_TOKENS).saturating_sub(held);
            let total = need + if on_host { held } else { 0 };
            if !self.kv.try_alloc(total) {
                continue;
            }
            if on_host {
                self.host.free(r.host_blocks);
                r.host_blocks = 0;
            }
            (r.blocks, r.kv_tokens, r.kv_loc) = (held + need, target, KvLoc::Gpu);
            r.mid_prefill = target < r.prefill_tokens();
            if !r.mid_prefill {
                r.generated_tokens += 1;
            }
            let (finished, blocks) = (r.generated_tokens >= r.output_tokens, r.blocks);
            drop(r);
            if finished {
                self.kv.free(blocks);
                self.reqs.remove(s);
                done.push(s);
            } else {
                survivors.push(s);
            }
        }
        (survivors, done)
    }

    /// A new request arriving now: `input` and `output` tokens, `predicted` output.
    pub(crate) fn arrive(&mut self, input: u32, output: u32, predicted: u32) -> Slot {
        let r = Request::new(self.next_id, self.now, input, output, predicted);
        self.next_id += 1;
        self.reqs.insert(r)
    }
}

/// Two policies given the same boundary planned alike (`at` names the boundary).
pub(crate) fn assert_same_plans(pa: &Plan, pb: &Plan, at: &str) {
    assert_eq!(pa.run, pb.run, "{at}");
    assert_eq!(pa.preempt, pb.preempt, "{at}");
    assert_eq!(pa.swap_in, pb.swap_in, "{at}");
}

/// One 10 ms boundary of two MLFQ policies on `e` (a differential run): copies end at random,
/// up to `max_arrivals − 1` requests arrive (prompts of 1…`max_prompt` tokens), both plan
/// alike into `pa`/`pb`, the plan runs and its finishes and survivors reach both.
pub(crate) fn step_pair(
    e: &mut Engine,
    (a, b): (&mut Mlfq, &mut Mlfq),
    (pa, pb): (&mut Plan, &mut Plan),
    x: &mut XorShift,
    (max_arrivals, max_prompt): (u64, u64),
    at: &str,
) {
    e.now += 10 * MS;
    e.end_copies(x);
    for _ in 0..x.below(max_arrivals) {
        let input = 1 + x.below(max_prompt) as u32;
        let s = e.arrive(input, 1 + x.below(40) as u32, 40);
        a.on_arrival(s, &e.view()).unwrap();
        b.on_arrival(s, &e.view()).unwrap();
    }
    a.schedule(&e.view(), pa);
    b.schedule(&e.view(), pb);
    assert_same_plans(pa, pb, at);
    e.preempt(pa);
    let (survivors, done) = e.run(pa);
    for s in done {
        a.on_finish(s);
        b.on_finish(s);
    }
    a.on_iteration_end(&survivors, 10 * MS, &e.view());
    b.on_iteration_end(&survivors, 10 * MS, &e.view());
}

/// A random configuration of `skip-join-mlfq` with `batch_memory = "reserve"`.
fn random_config(x: &mut XorShift, cost: &dyn CostModel) -> Config {
    let mut cfg = Params::default()
        .resolve(true, cost, "skip-join-mlfq")
        .unwrap();
    if x.below(2) == 0 {
        cfg.host_full = HostFull::Recompute;
    }
    if x.below(3) == 0 {
        cfg.chunk_size = Some(64);
    }
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

/// Seeded random runs of a small engine (arrivals, batches, swaps in and out, copies that end at
/// random, finishes, starvation promotions): the policy that evicts by walking `resident` and the
/// one that walks the whole `ran_order` make the same plan at every boundary, and `resident`
/// always holds every GPU-resident request of `ran_order`. 300 runs of 150 boundaries.
#[test]
fn resident_walk_evicts_as_the_ran_order_walk() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut x = XorShift(0x5eed_0f4e_51d3_e7a9);
    let mut evictions = 0;
    for case in 0..300 {
        let cfg = random_config(&mut x, cost.as_ref());
        let mut a = Mlfq::new(cfg.clone(), cost.clone(), "skip-join-mlfq");
        let mut b = Mlfq::new(cfg, cost.clone(), "skip-join-mlfq");
        b.walk_ran_order = true;
        let mut e = Engine {
            reqs: Slab::default(),
            kv: KvPool::new(30 + x.below(90) as u32, BLOCK_TOKENS),
            host: KvPool::new([0, 20, 300][x.below(3) as usize], BLOCK_TOKENS),
            now: 0,
            b: 2 + x.below(6) as u32,
            next_id: 0,
        };
        let (mut pa, mut pb) = (Plan::default(), Plan::default());
        for step in 0..150 {
            let at = format!("case {case} step {step}");
            let (pair, plans) = ((&mut a, &mut b), (&mut pa, &mut pb));
            step_pair(&mut e, pair, plans, &mut x, (4, 150), &at);
            evictions += pa.preempt.len();
            a.assert_resident(&e.view());
        }
    }
    assert!(evictions > 1000, "only {evictions} evictions");
}

/// An eviction looks at the GPU-resident requests, not at those waiting on the host: B = 2,
/// queue [0 new, 1–4 GPU 10 blocks each, then N host-resident] on a full 40-block GPU. The
/// batch (0 and 1) needs 7 blocks: 4, the lowest-priority GPU-resident request, is swapped out.
/// Once `resident` is built (the first boundary), a boundary looks at the same few entries for
/// N = 1,000 and 10,000; the walk of the whole `ran_order` looked at every host-resident one.
#[test]
fn eviction_does_not_look_at_host_resident_requests() {
    let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
    let mut looked = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut reqs = Slab::default();
        let (mut kv, mut host) = (KvPool::new(40, 16), KvPool::new(10 * n as u32, 16));
        let mut m = Mlfq::new(
            Params::default()
                .resolve(true, cost.as_ref(), "skip-join-mlfq")
                .unwrap(),
            cost.clone(),
            "skip-join-mlfq",
        );
        for i in 0..5 + n {
            let mut r = Request::new(i as u64, 0, 100, 50, 50);
            if (1..5).contains(&i) {
                (r.generated_tokens, r.kv_tokens, r.blocks, r.kv_loc) = (1, 100, 10, KvLoc::Gpu);
                assert!(kv.try_alloc(10));
            } else if i >= 5 {
                (r.generated_tokens, r.kv_tokens, r.kv_loc) = (1, 100, KvLoc::Host);
                (r.host_blocks, r.offloaded_gpu_blocks) = (7, 7);
                assert!(host.try_alloc(7));
            }
            let s = reqs.insert(r);
            m.state.resize(s as usize + 1, State::default());
            m.state[s as usize].last_step_ns = 10_000 * MS;
            m.enqueue_for_test(s, i > 0);
        }
        let v = ReplicaView {
            reqs: &reqs,
            kv: &kv,
            host: &host,
            offload: KvOffload::default(),
            now_ns: 10_000 * MS,
            limits: Limits {
                max_batch_size: 2,
                max_batch_tokens: 2048,
                max_context_tokens: 2048,
            },
        };
        let mut plan = Plan::default();
        m.schedule(&v, &mut plan);
        assert_eq!(plan.preempt, vec![(4, PreemptMode::Swap)]);
        assert_eq!(m.res_rebuilds, 1);
        m.scanned = 0;
        m.schedule(&v, &mut plan);
        assert_eq!(plan.preempt, vec![(4, PreemptMode::Swap)]);
        assert_eq!(m.res_rebuilds, 1, "no rebuild at the second boundary");
        looked.push(m.scanned);
        // The reference walk passes every host-resident request first.
        m.walk_ran_order = true;
        m.scanned = 0;
        m.schedule(&v, &mut plan);
        assert_eq!(plan.preempt, vec![(4, PreemptMode::Swap)]);
        assert!(m.scanned > n as u64, "{}", m.scanned);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}

/// `host_full = "defer"` with the host full: B = 2, queue [0 host, N host, 1–4 GPU 10 blocks
/// each] on a full 40-block GPU and a full host pool. The batch pops 0 and the next host-resident
/// request; nobody can be swapped out, so the batch's places go to the GPU-resident requests
/// (the backfill). The backfill's walk looks at the same few entries for N = 1,000 and 10,000
/// (the walk of `ran_order` passed every host-resident one), and the plan is the reference's.
#[test]
fn backfill_does_not_look_at_host_resident_requests() {
    use super::tests::{Mem, memory_case, view_b};
    let mut looked = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut mems = vec![Mem::Host(7); n + 1];
        mems.extend([Mem::Gpu(10); 4]);
        let (mut m, reqs, kv, host) = memory_case(&mems, 40, 7 * (n as u32 + 1), |_| {});
        let v = view_b(&reqs, &kv, &host, 2);
        let mut want = m.clone();
        want.walk_ran_order = true;
        let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
        m.schedule(&v, &mut plan);
        want.schedule(&v, &mut plan_want);
        assert_eq!(plan.run, plan_want.run);
        assert_eq!(plan.preempt, plan_want.preempt);
        assert!(!plan.run.is_empty() && plan.preempt.is_empty());
        assert!(want.backfill_looked > n as u64, "{}", want.backfill_looked);
        looked.push(m.backfill_looked);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}

/// `host_full = "defer"`: once the host refused a victim and has no room for even a one-block
/// one, the eviction walk ends (every later victim would be refused). B = 2, queue [0 new,
/// 1..=K GPU 7 blocks each, then one host-resident request filling the host pool] on a full
/// GPU: the walk looks at the same entries for K = 100 and 1,000 (it looked at all K), and the
/// plan is the reference's.
#[test]
fn full_host_ends_the_eviction_walk() {
    use super::tests::{Mem, memory_case, view_b};
    let mut looked = Vec::new();
    for k in [100usize, 1_000] {
        let mut mems = vec![Mem::New];
        mems.extend(vec![Mem::Gpu(7); k]);
        mems.push(Mem::Host(7));
        let (mut m, reqs, kv, host) = memory_case(&mems, 7 * k as u32, 7, |_| {});
        let v = view_b(&reqs, &kv, &host, 2);
        let mut want = m.clone();
        want.walk_ran_order = true;
        let (mut plan, mut plan_want) = (Plan::default(), Plan::default());
        m.schedule(&v, &mut plan);
        want.schedule(&v, &mut plan_want);
        assert_eq!(plan.run, plan_want.run);
        assert_eq!(plan.preempt, plan_want.preempt);
        assert!(!plan.run.is_empty() && plan.preempt.is_empty());
        assert!(want.scanned > k as u64, "{}", want.scanned);
        looked.push(m.scanned);
    }
    assert_eq!(looked[0], looked[1]);
    assert!(looked[1] < 10, "looked at {}", looked[1]);
}
