//! The discrete-event core: event queue, clock, replicas, KV accounting and the driver loop.
//! No I/O and no wall clock in here: inputs come from an iterator, outputs go to an [`Observer`].
//!
//! Time is integer nanoseconds. Events are totally ordered by `(time, class, seq)`: at one instant
//! arrivals come first (so a request arriving exactly at an iteration boundary joins that
//! boundary's decision), then iteration ends, then idle-replica kicks; `seq` increments on every
//! push and breaks the remaining ties in push order.

pub mod kv;
pub mod overload;
pub mod request;
pub mod time;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use kv::KvPool;
use kv::{blocks_for_tokens, extra_blocks_for};
use overload::OverloadWatch;
use request::{KvLoc, Request, Slab, Slot};
use time::{Ns, duration_ns_ceil, ns_to_s};

use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::exec::Executor;
use crate::policy::{Limits, Plan, Policy, PreemptMode, ReplicaView};
use crate::predict::{Predictor, extend_prediction};
use crate::route::{ClusterView, Incoming, LoadSource, ReplicaLoad, Router};
use crate::swap::timing::{StepCopies, SwapTiming};
use crate::swap::{Direction, KvOffload, SwapModel};

/// One trace row, ready for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRow {
    pub id: u64,
    pub arrival_ns: Ns,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// Bounds that end a run with an error instead of a hang or an out-of-memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    pub max_events: u64,
    pub max_sim_ns: Ns,
    /// Maximum unfinished requests on one replica.
    pub max_queue: usize,
    /// Shortest window of the overload detector in simulated ns (0 = no detector): see
    /// [`OverloadWatch`].
    pub overload_window_ns: Ns,
    /// Unfinished requests a replica must hold before the detector may call it overloaded.
    pub overload_min_queue: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_events: 2_000_000_000,
            max_sim_ns: 30 * 24 * 3600 * 1_000_000_000,
            max_queue: 1_000_000,
            overload_window_ns: 1_000_000_000,
            overload_min_queue: 10_000,
        }
    }
}

/// One replica's moving parts.
pub struct ReplicaParts {
    pub policy: Box<dyn Policy>,
    pub executor: Box<dyn Executor>,
    pub kv_capacity_blocks: u32,
    /// Host KV pool for swapping (0 = none).
    pub host_kv_blocks: u32,
    /// Bytes of one KV block over the whole replica (all layers, all shards).
    pub kv_block_bytes: u64,
    /// Transfer-time model of the replica's host links.
    pub swap: Box<dyn SwapModel>,
    /// How iterations wait for reactive swap-ins (`[swap] reactive`).
    pub swap_timing: SwapTiming,
    /// Format of offloaded KV (quantization; 16 bits = unchanged).
    pub offload: KvOffload,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub block_tokens: u32,
    pub limits: Limits,
    pub guards: Guards,
    /// Period of [`Observer::on_kv_sample`] in simulated ns (0 = no samples).
    pub kv_sample_interval_ns: Ns,
}

/// A finished request, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub id: u64,
    pub replica: u32,
    pub arrival_ns: Ns,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub first_scheduled_ns: Ns,
    pub first_token_ns: Ns,
    pub finish_ns: Ns,
    pub preemptions: u32,
    pub swap_out_bytes: u64,
    pub swap_in_bytes: u64,
    pub swap_stall_ns: Ns,
    pub recomputed_tokens: u64,
    /// The prediction the policy saw last (after any extension for outliving it).
    pub predicted_output_tokens: u32,
    /// The policy's priority of the request when it finished (level or score; see the policy).
    pub priority: f64,
    pub demotions: u32,
    pub promotions: u32,
}

/// Receives what happens during a run (metrics, progress, traces of iterations).
pub trait Observer {
    fn on_completion(&mut self, c: &Completion);
    fn on_iteration(&mut self, _replica: u32, _start_ns: Ns, _end_ns: Ns, _shape: &BatchShape) {}
    /// One replica's KV state at `sample.time_ns`, an exact multiple of
    /// [`EngineConfig::kv_sample_interval_ns`]: the state after every event stamped ≤ that time.
    /// Samples cover `0, I, 2I, …` up to the last event; they add no events to the run.
    fn on_kv_sample(&mut self, _sample: &KvSample) {}
    /// Whether to build [`Observer::on_memory`] snapshots and [`Observer::on_transfer`] records
    /// (O(requests) per iteration; off for ordinary runs).
    fn wants_memory(&self) -> bool {
        false
    }
    /// The memory state of a replica just after an iteration's plan was applied.
    fn on_memory(&mut self, _snapshot: &MemorySnapshot) {}
    /// A KV copy was queued on a copy engine.
    fn on_transfer(&mut self, _t: &TransferRecord) {}
}

/// A `kv_timeline.csv` row. Every unfinished request is counted once: `running` (in the
/// iteration in flight), else `swapped` (KV on the host or being copied), else `waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSample {
    pub time_ns: Ns,
    pub replica: u32,
    pub gpu_blocks_used: u32,
    pub host_blocks_used: u32,
    pub running: u32,
    pub waiting: u32,
    pub swapped: u32,
}

/// One batch member as the iteration starts (see [`MemorySnapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMember {
    pub id: u64,
    pub kv_loc: KvLoc,
    /// GPU blocks it holds now.
    pub blocks: u32,
    /// Blocks its KV needs at the end of this iteration.
    pub needed_blocks: u32,
    /// When its KV is resident on the GPU (later than the iteration start for a reactive
    /// swap-in); `None` for a prefill, which has no KV yet.
    pub kv_ready_ns: Option<Ns>,
}

/// A replica's pools and the requests' holdings, at an iteration start.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySnapshot {
    pub replica: u32,
    pub start_ns: Ns,
    pub end_ns: Ns,
    pub gpu_capacity: u32,
    pub gpu_used: u32,
    pub gpu_free: u32,
    pub host_capacity: u32,
    pub host_used: u32,
    pub host_free: u32,
    /// Σ GPU blocks held by the replica's requests.
    pub gpu_held: u64,
    /// Σ host blocks held by the replica's requests.
    pub host_held: u64,
    /// Σ host blocks the host-resident or in-flight requests need (⌈gpu blocks·bits/16⌉).
    pub host_expected: u64,
    pub batch: Vec<BatchMember>,
}

/// One KV copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferRecord {
    pub replica: u32,
    pub id: u64,
    pub dir: Direction,
    /// When it was queued, when the copy engine starts it, when it completes.
    pub queued_ns: Ns,
    pub start_ns: Ns,
    pub end_ns: Ns,
    /// PCIe bytes (quantized when the offload format is).
    pub bytes: u64,
    pub gpu_blocks: u32,
    pub host_blocks: u32,
}

/// Per-replica counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaStats {
    pub requests: u64,
    pub iterations: u64,
    pub busy_ns: Ns,
    pub kv_capacity_blocks: u32,
    pub peak_kv_blocks: u32,
    pub preemptions: u64,
    pub batch_requests_sum: u64,
    pub host_capacity_blocks: u32,
    pub peak_host_blocks: u32,
    pub swap_outs: u64,
    pub swap_ins: u64,
    /// Time the copy engine was busy, per direction (GPU→host, host→GPU).
    pub d2h_busy_ns: Ns,
    pub h2d_busy_ns: Ns,
    /// ∫ used GPU blocks dt and ∫ used host blocks dt (for time-averaged usage).
    pub kv_block_ns: u128,
    pub host_block_ns: u128,
    /// The policy's per-level counts (multi-level queue policies only).
    pub mlfq_levels: Option<Vec<crate::policy::LevelCounts>>,
}

/// What a whole run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    pub requests: u64,
    pub events: u64,
    pub iterations: u64,
    pub makespan_ns: Ns,
    pub first_arrival_ns: Ns,
    pub replicas: Vec<ReplicaStats>,
    /// Iterations handled by fast-forward rather than as their own event (a speed statistic, not
    /// an output: everything else is identical either way).
    pub fast_forwarded_iterations: u64,
}

/// Paces the event loop. The simulator uses [`VirtualClock`]: each event is handled at its own
/// time, as fast as possible. A live driver (outside the engine, which never reads a wall clock)
/// waits for the wall clock to reach each event, and may report that real time has run past it.
pub trait Clock {
    /// Called before handling the event stamped `t` (non-decreasing over a run). Returns the time
    /// at which to handle it (≥ `t`: later when real time has already passed `t`), or `None` to
    /// stop the run here (the run then returns what it has so far).
    fn advance(&mut self, t: Ns) -> Option<Ns>;
    /// Whether the engine may fast-forward: handle runs of identical decode iterations without
    /// an event each (outputs are identical; only a virtual clock can allow it, since the events
    /// it skips are never shown to [`Clock::advance`]).
    fn fast_forward(&self) -> bool {
        false
    }
}

/// The simulator's clock: every event happens exactly at its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirtualClock;

impl Clock for VirtualClock {
    #[inline]
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        Some(t)
    }
    fn fast_forward(&self) -> bool {
        true
    }
}

/// [`VirtualClock`] without fast-forward: every iteration is its own event (the reference path
/// of the differential tests, and `servesim run --no-fast-forward`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SteppingClock;

impl Clock for SteppingClock {
    #[inline]
    fn advance(&mut self, t: Ns) -> Option<Ns> {
        Some(t)
    }
}

/// A policy's read-only view of a replica (a macro so that it borrows fields, not the replica).
macro_rules! view {
    ($rep:expr, $now:expr, $limits:expr) => {
        ReplicaView {
            reqs: &$rep.reqs,
            kv: &$rep.kv,
            host: &$rep.host,
            offload: $rep.offload,
            now_ns: $now,
            limits: $limits,
        }
    };
}

/// `(time, class, seq, replica, slot)`: the total order of events; `slot` names the request of a
/// transfer event.
type Event = (Ns, u8, u64, u32, Slot);

const CLASS_ARRIVAL: u8 = 0;
const CLASS_TRANSFER: u8 = 1;
const CLASS_END: u8 = 2;
/// The first pipeline stage is free for the next micro-batch (pipeline parallelism only).
const CLASS_STAGE_FREE: u8 = 3;
const CLASS_KICK: u8 = 4;

/// A micro-batch in the pipeline (pipeline parallelism only).
struct Flight {
    batch: Vec<Slot>,
    start_ns: Ns,
}

struct Replica {
    reqs: Slab,
    kv: KvPool,
    policy: Box<dyn Policy>,
    executor: Box<dyn Executor>,
    busy: bool,
    kick_pending: bool,
    iter_start_ns: Ns,
    batch: Vec<Slot>,
    survivors: Vec<Slot>,
    plan: Plan,
    stats: ReplicaStats,
    host: KvPool,
    swap: Box<dyn SwapModel>,
    swap_timing: SwapTiming,
    kv_block_bytes: u64,
    /// When each copy direction is next free: [GPU→host, host→GPU].
    copy_free_at_ns: [Ns; 2],
    transfers_in_flight: u32,
    /// Last time block usage was integrated.
    usage_at_ns: Ns,
    pipeline: crate::exec::Pipeline,
    /// Micro-batches in the pipeline, oldest first (pipeline parallelism only; with one stage
    /// the batch in flight is `batch`).
    flights: std::collections::VecDeque<Flight>,
    /// When each stage finishes the last micro-batch given to it.
    stage_free_ns: Vec<Ns>,
    /// The first stage is still working on the last micro-batch.
    stage0_busy: bool,
    offload: KvOffload,
    /// Copies queued since the last flush (kept only when the observer wants memory records).
    transfer_log: Option<Vec<TransferRecord>>,
    id: u32,
    /// Requests that finished here.
    completed: u64,
    overload: OverloadWatch,
}

impl Replica {
    /// Count one launched iteration of `requests` requests that keeps the replica busy `busy_ns`.
    fn count_iteration(&mut self, busy_ns: Ns, requests: u64) {
        self.stats.iterations += 1;
        self.stats.busy_ns += busy_ns;
        self.stats.batch_requests_sum += requests;
    }

    /// The batch's iteration waits `stall` beyond its compute for copies (its reactive swap-ins;
    /// under `[swap] reactive = "serial"` also the step's swap-outs).
    fn charge_stall(&mut self, stall: Ns) {
        for i in 0..self.batch.len() {
            let s = self.batch[i];
            self.reqs.get_mut(s).swap_stall_ns += stall;
        }
    }

    /// Hand the queued copy records to the observer (when it wants memory records).
    fn flush_transfers(&mut self, observer: &mut dyn Observer) {
        for t in self.transfer_log.iter_mut().flat_map(|l| l.drain(..)) {
            observer.on_transfer(&t);
        }
    }

    /// With a memory-recording observer: the copies queued so far and the memory state of the
    /// iteration launched `[start, end)` on replica `r`.
    fn report_memory(
        &mut self,
        r: u32,
        start: Ns,
        end: Ns,
        block_tokens: u32,
        observer: &mut dyn Observer,
    ) {
        if self.transfer_log.is_some() {
            let snap = memory_snapshot(self, r, start, end, block_tokens);
            self.flush_transfers(observer);
            observer.on_memory(&snap);
        }
    }

    /// Integrate block usage up to `now` (call before any pool change).
    /// Request `s` (its record up to date) emitted its last token at `now`: it leaves the replica.
    fn complete(
        &mut self,
        r: u32,
        s: Slot,
        now: Ns,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) {
        let info = self.policy.describe(s);
        let req = self.reqs.remove(s);
        self.completed += 1;
        self.kv.free(req.blocks);
        self.policy.on_finish(s);
        predictor.observe(req.input_tokens, req.output_tokens);
        observer.on_completion(&Completion {
            id: req.id,
            replica: r,
            arrival_ns: req.arrival_ns,
            input_tokens: req.input_tokens,
            output_tokens: req.output_tokens,
            first_scheduled_ns: req.first_scheduled_ns.unwrap_or(now),
            first_token_ns: req.first_token_ns.unwrap_or(now),
            finish_ns: now,
            preemptions: req.preemptions,
            swap_out_bytes: req.swap_out_bytes,
            swap_in_bytes: req.swap_in_bytes,
            swap_stall_ns: req.swap_stall_ns,
            recomputed_tokens: req.recomputed_tokens,
            predicted_output_tokens: req.predicted_output_tokens,
            priority: info.priority,
            demotions: info.demotions,
            promotions: info.promotions,
        });
    }

    fn account_usage(&mut self, now: Ns) {
        let dt = now.saturating_sub(self.usage_at_ns) as u128;
        self.stats.kv_block_ns += dt * self.kv.used_blocks() as u128;
        self.stats.host_block_ns += dt * self.host.used_blocks() as u128;
        self.usage_at_ns = self.usage_at_ns.max(now);
    }

    /// Queue a copy of request `s` on the copy engine; returns when it starts and completes.
    fn start_transfer(&mut self, s: Slot, dir: Direction, now: Ns) -> Result<(Ns, Ns)> {
        let req = self.reqs.get(s);
        let (blocks, host_blocks) = match dir {
            Direction::DeviceToHost => (req.blocks, req.host_blocks),
            Direction::HostToDevice => (req.offloaded_gpu_blocks, req.host_blocks),
        };
        let fp16_bytes = blocks as u64 * self.kv_block_bytes;
        let bytes = self.offload.wire_bytes(fp16_bytes);
        let secs = self.swap.transfer_s(dir, bytes, blocks) + self.offload.quant_s(fp16_bytes);
        let dur = duration_ns_ceil(secs).ok_or_else(|| {
            SimError::config(format!("swap model returned an invalid time {secs} s"))
        })?;
        let k = match dir {
            Direction::DeviceToHost => 0,
            Direction::HostToDevice => 1,
        };
        let start = now.max(self.copy_free_at_ns[k]);
        let end = start + dur;
        self.copy_free_at_ns[k] = end;
        if let Some(log) = &mut self.transfer_log {
            log.push(TransferRecord {
                replica: self.id,
                id: req.id,
                dir,
                queued_ns: now,
                start_ns: start,
                end_ns: end,
                bytes,
                gpu_blocks: blocks,
                host_blocks,
            });
        }
        match dir {
            Direction::DeviceToHost => {
                self.stats.d2h_busy_ns += dur;
                self.stats.swap_outs += 1;
            }
            Direction::HostToDevice => {
                self.stats.h2d_busy_ns += dur;
                self.stats.swap_ins += 1;
            }
        }
        let req = self.reqs.get_mut(s);
        req.kv_ready_ns = end;
        match dir {
            Direction::DeviceToHost => {
                req.swap_out_bytes += bytes;
                req.kv_loc = KvLoc::SwappingOut;
            }
            Direction::HostToDevice => {
                req.swap_in_bytes += bytes;
                req.kv_loc = KvLoc::SwappingIn;
            }
        }
        self.transfers_in_flight += 1;
        Ok((start, end))
    }
}

/// Run a whole simulation. Requests come from `trace` in arrival order and are routed round-robin
/// over the replicas.
pub fn simulate(
    cfg: &EngineConfig,
    trace: &mut dyn Iterator<Item = Result<TraceRow>>,
    parts: Vec<ReplicaParts>,
    predictor: &mut dyn Predictor,
    observer: &mut dyn Observer,
) -> Result<RunStats> {
    let router = Box::new(crate::route::round_robin::RoundRobin::default());
    simulate_routed(cfg, trace, parts, router, predictor, observer)
}

/// [`simulate`] with the cluster router that picks each arriving request's replica.
pub fn simulate_routed(
    cfg: &EngineConfig,
    trace: &mut dyn Iterator<Item = Result<TraceRow>>,
    parts: Vec<ReplicaParts>,
    router: Box<dyn Router>,
    predictor: &mut dyn Predictor,
    observer: &mut dyn Observer,
) -> Result<RunStats> {
    simulate_clocked(
        cfg,
        trace,
        parts,
        router,
        predictor,
        observer,
        &mut VirtualClock,
    )
}

/// [`simulate_routed`] paced by `clock` (the live driver's wall clock). When the clock stops the
/// run, the returned statistics cover the events handled so far; unfinished requests are not
/// reported.
pub fn simulate_clocked(
    cfg: &EngineConfig,
    trace: &mut dyn Iterator<Item = Result<TraceRow>>,
    parts: Vec<ReplicaParts>,
    router: Box<dyn Router>,
    predictor: &mut dyn Predictor,
    observer: &mut dyn Observer,
    clock: &mut dyn Clock,
) -> Result<RunStats> {
    if parts.is_empty() {
        return Err(SimError::config("at least one replica is needed"));
    }
    let mut sim = Sim {
        cfg: *cfg,
        heap: BinaryHeap::new(),
        seq: 0,
        pending: None,
        last_arrival_ns: 0,
        next_sample_ns: 0,
        replicas: parts
            .into_iter()
            .enumerate()
            .map(|(id, p)| {
                let pipeline = p.executor.pipeline();
                Replica {
                    reqs: Slab::default(),
                    kv: KvPool::new(p.kv_capacity_blocks, cfg.block_tokens),
                    policy: p.policy,
                    executor: p.executor,
                    busy: false,
                    kick_pending: false,
                    iter_start_ns: 0,
                    batch: Vec::new(),
                    survivors: Vec::new(),
                    plan: Plan::default(),
                    stats: ReplicaStats {
                        kv_capacity_blocks: p.kv_capacity_blocks,
                        host_capacity_blocks: p.host_kv_blocks,
                        ..Default::default()
                    },
                    host: KvPool::new(p.host_kv_blocks, cfg.block_tokens),
                    swap: p.swap,
                    swap_timing: p.swap_timing,
                    kv_block_bytes: p.kv_block_bytes,
                    copy_free_at_ns: [0, 0],
                    transfers_in_flight: 0,
                    usage_at_ns: 0,
                    pipeline,
                    flights: std::collections::VecDeque::new(),
                    stage_free_ns: vec![0; pipeline.stages.max(1) as usize],
                    stage0_busy: false,
                    offload: p.offload,
                    transfer_log: observer.wants_memory().then(Vec::new),
                    id: id as u32,
                    completed: 0,
                    overload: OverloadWatch::default(),
                }
            })
            .collect(),
        stats: RunStats::default(),
        router,
        fast_forward: clock.fast_forward(),
        ff_alloc: Vec::new(),
    };
    sim.run(trace, predictor, observer, clock)?;
    let end = sim.stats.makespan_ns;
    if sim.stats.events > 0 {
        sim.sample_through(end, true, observer)?;
    }
    for r in &mut sim.replicas {
        r.account_usage(end);
        r.stats.peak_kv_blocks = r.kv.peak_used_blocks();
        r.stats.peak_host_blocks = r.host.peak_used_blocks();
    }
    sim.stats.replicas = sim
        .replicas
        .iter()
        .map(|r| ReplicaStats {
            mlfq_levels: r.policy.level_counts(),
            ..r.stats.clone()
        })
        .collect();
    Ok(sim.stats)
}

struct Sim {
    cfg: EngineConfig,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    pending: Option<TraceRow>,
    last_arrival_ns: Ns,
    /// Time of the next KV sample (a multiple of `cfg.kv_sample_interval_ns`).
    next_sample_ns: Ns,
    replicas: Vec<Replica>,
    stats: RunStats,
    router: Box<dyn Router>,
    /// Whether runs of identical decode iterations may be fast-forwarded.
    fast_forward: bool,
    /// Scratch: blocks each repeated iteration of a fast-forward allocates.
    ff_alloc: Vec<u32>,
}

/// Most KV samples (rows × replicas) one run may produce.
const MAX_KV_SAMPLES: u64 = 50_000_000;

impl Sim {
    /// Report the KV samples due before `t` (`inclusive`: at `t` too). Nothing happens between
    /// events, so the current state is the state at every such instant.
    fn sample_through(
        &mut self,
        t: Ns,
        inclusive: bool,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let step = self.cfg.kv_sample_interval_ns;
        if step == 0 {
            return Ok(());
        }
        while self.next_sample_ns < t || (inclusive && self.next_sample_ns == t) {
            let n = self.next_sample_ns / step + 1;
            if n.saturating_mul(self.replicas.len() as u64) > MAX_KV_SAMPLES {
                return Err(SimError::Limit(format!(
                    "kv_timeline would exceed {MAX_KV_SAMPLES} rows; raise [output] kv_timeline_interval_s (or set it to 0)"
                )));
            }
            for (i, rep) in self.replicas.iter().enumerate() {
                let (mut running, mut waiting, mut swapped) = (0u32, 0u32, 0u32);
                for q in rep.reqs.iter() {
                    if q.in_batch {
                        running += 1;
                    } else if matches!(
                        q.kv_loc,
                        KvLoc::Host | KvLoc::SwappingIn | KvLoc::SwappingOut
                    ) {
                        swapped += 1;
                    } else {
                        waiting += 1;
                    }
                }
                observer.on_kv_sample(&KvSample {
                    time_ns: self.next_sample_ns,
                    replica: i as u32,
                    gpu_blocks_used: rep.kv.used_blocks(),
                    host_blocks_used: rep.host.used_blocks(),
                    running,
                    waiting,
                    swapped,
                });
            }
            match self.next_sample_ns.checked_add(step) {
                Some(n) => self.next_sample_ns = n,
                None => break,
            }
        }
        Ok(())
    }

    fn push(&mut self, t: Ns, class: u8, replica: u32) {
        self.push_slot(t, class, replica, 0);
    }

    fn push_slot(&mut self, t: Ns, class: u8, replica: u32, slot: Slot) {
        self.heap.push(Reverse((t, class, self.seq, replica, slot)));
        self.seq += 1;
    }

    fn pull_arrival(&mut self, trace: &mut dyn Iterator<Item = Result<TraceRow>>) -> Result<()> {
        if let Some(row) = trace.next().transpose()? {
            if row.arrival_ns < self.last_arrival_ns {
                return Err(SimError::Request {
                    id: row.id,
                    msg: format!(
                        "arrivals are not sorted: {:.9}s comes after {:.9}s",
                        ns_to_s(row.arrival_ns),
                        ns_to_s(self.last_arrival_ns)
                    ),
                });
            }
            if self.stats.requests == 0 && self.pending.is_none() {
                self.stats.first_arrival_ns = row.arrival_ns;
            }
            self.last_arrival_ns = row.arrival_ns;
            self.pending = Some(row);
            self.push(row.arrival_ns, CLASS_ARRIVAL, u32::MAX);
        }
        Ok(())
    }

    fn run(
        &mut self,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
        clock: &mut dyn Clock,
    ) -> Result<()> {
        self.pull_arrival(trace)?;
        while let Some(Reverse((t, class, _, r, slot))) = self.heap.pop() {
            let Some(now) = clock.advance(t) else {
                break;
            };
            // A live clock may hand back a later time; never earlier than the last event.
            let now = now.max(t).max(self.stats.makespan_ns);
            self.sample_through(now, false, observer)?;
            self.stats.events += 1;
            if self.stats.events > self.cfg.guards.max_events {
                return Err(SimError::Limit(format!(
                    "stopped after {} events at t={:.3}s (limits.max_events); the run is too long or overloaded",
                    self.cfg.guards.max_events,
                    ns_to_s(now)
                )));
            }
            if now > self.cfg.guards.max_sim_ns {
                return Err(SimError::Limit(format!(
                    "simulated time passed {:.0}s (limits.max_sim_s); the run is overloaded or too long",
                    ns_to_s(self.cfg.guards.max_sim_ns)
                )));
            }
            match class {
                CLASS_ARRIVAL => {
                    let row = self
                        .pending
                        .take()
                        .expect("an arrival event has a pending row");
                    self.arrive(now, row, predictor)?;
                    self.pull_arrival(trace)?;
                }
                CLASS_TRANSFER => {
                    self.finish_transfer(r, slot, now);
                    let rep = &mut self.replicas[r as usize];
                    if !rep.busy && !rep.kick_pending {
                        rep.kick_pending = true;
                        self.push(now, CLASS_KICK, r);
                    }
                }
                CLASS_END if self.replicas[r as usize].pipeline.stages > 1 => {
                    let rep = &mut self.replicas[r as usize];
                    let f = rep
                        .flights
                        .pop_front()
                        .expect("a pipeline end has a micro-batch in flight");
                    rep.batch = f.batch;
                    rep.iter_start_ns = f.start_ns;
                    self.finish_iteration(r, now, predictor, observer);
                    let rep = &mut self.replicas[r as usize];
                    rep.busy = rep.stage0_busy;
                    if !rep.busy {
                        self.start_iteration(r, now, predictor, observer)?;
                    }
                }
                CLASS_END => {
                    self.finish_iteration(r, now, predictor, observer);
                    self.start_iteration(r, now, predictor, observer)?;
                }
                CLASS_STAGE_FREE => {
                    let rep = &mut self.replicas[r as usize];
                    rep.stage0_busy = false;
                    rep.busy = rep.flights.len() >= rep.pipeline.stages as usize;
                    if !rep.busy {
                        self.start_iteration(r, now, predictor, observer)?;
                    }
                }
                _ => {
                    let rep = &mut self.replicas[r as usize];
                    rep.kick_pending = false;
                    if !rep.busy {
                        self.start_iteration(r, now, predictor, observer)?;
                    }
                }
            }
            self.stats.makespan_ns = self.stats.makespan_ns.max(now);
        }
        Ok(())
    }

    fn arrive(&mut self, now: Ns, row: TraceRow, predictor: &mut dyn Predictor) -> Result<()> {
        let limits = self.cfg.limits;
        if row.input_tokens == 0 || row.output_tokens == 0 {
            return Err(SimError::Request {
                id: row.id,
                msg: "input_tokens and output_tokens must both be ≥ 1".into(),
            });
        }
        let total = row.input_tokens as u64 + row.output_tokens as u64;
        if total > limits.max_context_tokens as u64 {
            return Err(SimError::Request {
                id: row.id,
                msg: format!(
                    "input + output = {total} tokens exceeds the model context of {} tokens",
                    limits.max_context_tokens
                ),
            });
        }
        if row.input_tokens > limits.max_batch_tokens {
            return Err(SimError::Request {
                id: row.id,
                msg: format!(
                    "prompt of {} tokens exceeds max_batch_tokens = {}; it could never be prefilled",
                    row.input_tokens, limits.max_batch_tokens
                ),
            });
        }
        let (r, predicted) = self.route(now, &row, predictor)?;
        let rep = &mut self.replicas[r as usize];
        let max_blocks = blocks_for_tokens(total - 1, self.cfg.block_tokens);
        if max_blocks > rep.kv.capacity_blocks() as u64 {
            return Err(SimError::Request {
                id: row.id,
                msg: format!(
                    "needs {max_blocks} KV blocks ({} tokens) but replica {r} holds only {} blocks ({} tokens); it can never run",
                    total - 1,
                    rep.kv.capacity_blocks(),
                    rep.kv.capacity_blocks() as u64 * self.cfg.block_tokens as u64
                ),
            });
        }
        let slot = rep.reqs.insert(Request::new(
            row.id,
            row.arrival_ns,
            row.input_tokens,
            row.output_tokens,
            predicted,
        ));
        rep.stats.requests += 1;
        self.stats.requests += 1;
        let view = view!(rep, now, limits);
        rep.policy.on_arrival(slot, &view)?;
        if rep.reqs.len() > self.cfg.guards.max_queue {
            return Err(SimError::Limit(format!(
                "overloaded: replica {r} queue grew past {} unfinished requests at t={:.3}s; the arrival rate exceeds what it can serve (limits.max_queue)",
                self.cfg.guards.max_queue,
                ns_to_s(now)
            )));
        }
        let counters = overload::Counters {
            time_ns: now,
            arrivals: rep.stats.requests,
            completions: rep.completed,
            busy_ns: rep.stats.busy_ns,
            queue: rep.reqs.len(),
        };
        let guards = self.cfg.guards;
        if let Some(msg) = rep.overload.on_arrival(
            r,
            counters,
            guards.overload_window_ns,
            guards.overload_min_queue,
        ) {
            return Err(SimError::Limit(msg));
        }
        if !rep.busy && !rep.kick_pending {
            rep.kick_pending = true;
            self.push(now, CLASS_KICK, r);
        }
        Ok(())
    }

    /// Predict the arriving request's output and ask the router for its replica.
    fn route(
        &mut self,
        now: Ns,
        row: &TraceRow,
        predictor: &mut dyn Predictor,
    ) -> Result<(u32, u32)> {
        let predicted = predictor.predict(row.input_tokens, row.output_tokens);
        let incoming = Incoming {
            id: row.id,
            arrival_ns: row.arrival_ns,
            input_tokens: row.input_tokens,
            predicted_output_tokens: predicted,
        };
        let r = self
            .router
            .route(&incoming, &ClusterView::new(&self.replicas, now));
        if r >= self.replicas.len() {
            return Err(SimError::config(format!(
                "router `{}` sent request {} to replica {r}, but there are {} replicas",
                self.router.name(),
                row.id,
                self.replicas.len()
            )));
        }
        Ok((r as u32, predicted))
    }

    fn start_iteration(
        &mut self,
        r: u32,
        now: Ns,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let limits = self.cfg.limits;
        let block_tokens = self.cfg.block_tokens;
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        {
            let view = view!(rep, now, limits);
            rep.policy.schedule(&view, &mut rep.plan);
        }
        let policy = rep.policy.name();
        let plan_err = |msg: String| SimError::Plan {
            policy: policy.to_string(),
            time_s: ns_to_s(now),
            msg,
        };
        let mut transfers: Vec<(Ns, Slot)> = Vec::new();
        // This step's swap-outs and the batch's reactive swap-ins (they may delay the compute).
        let mut copies = StepCopies::default();
        // Preemptions first: they free blocks for the batch.
        for i in 0..rep.plan.preempt.len() {
            let (s, mode) = rep.plan.preempt[i];
            if !rep.reqs.contains(s) {
                return Err(plan_err(format!("preempts unknown slot {s}")));
            }
            let req = rep.reqs.get_mut(s);
            if req.in_transfer() {
                return Err(plan_err(format!(
                    "preempts request {} while its KV is being copied",
                    req.id
                )));
            }
            if req.in_flight() {
                return Err(plan_err(format!(
                    "preempts request {} while its micro-batch is in the pipeline",
                    req.id
                )));
            }
            let host_need = rep.offload.host_blocks_for(req.blocks);
            let host_room = host_need <= rep.host.free_blocks();
            match mode {
                PreemptMode::Swap if req.kv_loc == KvLoc::Gpu && host_room => {
                    let ok = rep.host.try_alloc(host_need);
                    debug_assert!(ok, "host room was checked");
                    let req = rep.reqs.get_mut(s);
                    req.host_blocks = host_need;
                    req.offloaded_gpu_blocks = req.blocks;
                    let (_, end) = rep.start_transfer(s, Direction::DeviceToHost, now)?;
                    transfers.push((end, s));
                    copies.add_swap_out(end);
                    let req = rep.reqs.get_mut(s);
                    req.preemptions += 1;
                    rep.stats.preemptions += 1;
                }
                PreemptMode::Swap if req.kv_loc == KvLoc::Host => {}
                // Recompute (or a swap with no room on the host: degrade to recompute).
                _ => {
                    if req.kv_loc == KvLoc::None {
                        continue;
                    }
                    rep.kv.free(req.blocks);
                    rep.host.free(req.host_blocks);
                    req.blocks = 0;
                    req.host_blocks = 0;
                    req.kv_tokens = 0;
                    req.kv_loc = KvLoc::None;
                    req.recomputed_tokens += req.prefill_tokens() as u64;
                    req.preemptions += 1;
                    rep.stats.preemptions += 1;
                }
            }
        }
        // Proactive swap-ins.
        for i in 0..rep.plan.swap_in.len() {
            let s = rep.plan.swap_in[i];
            if !rep.reqs.contains(s) || rep.reqs.get(s).kv_loc != KvLoc::Host {
                return Err(plan_err(format!(
                    "swaps in slot {s}, which is not on the host"
                )));
            }
            let need = rep.reqs.get(s).offloaded_gpu_blocks;
            if !rep.kv.try_alloc(need) {
                return Err(plan_err(format!(
                    "swap-in needs {need} GPU blocks but only {} are free",
                    rep.kv.free_blocks()
                )));
            }
            rep.reqs.get_mut(s).blocks = need;
            let (_, end) = rep.start_transfer(s, Direction::HostToDevice, now)?;
            transfers.push((end, s));
        }
        if rep.plan.run.is_empty() {
            rep.busy = false;
            rep.flush_transfers(observer);
            for (end, s) in transfers {
                self.push_slot(end, CLASS_TRANSFER, r, s);
            }
            let rep = &self.replicas[r as usize];
            if !rep.reqs.is_empty() && rep.transfers_in_flight == 0 && rep.flights.is_empty() {
                return Err(SimError::Plan {
                    policy: rep.policy.name().to_string(),
                    time_s: ns_to_s(now),
                    msg: format!(
                        "nothing to run while {} requests are unfinished (free KV blocks: {}); the run would never end",
                        rep.reqs.len(),
                        rep.kv.free_blocks()
                    ),
                });
            }
            return Ok(());
        }
        if rep.plan.run.len() > limits.max_batch_size as usize {
            return Err(plan_err(format!(
                "batch of {} requests exceeds max_batch_size = {}",
                rep.plan.run.len(),
                limits.max_batch_size
            )));
        }
        let mut shape = BatchShape::default();
        rep.batch.clear();
        for i in 0..rep.plan.run.len() {
            let item = rep.plan.run[i];
            let s = item.slot;
            let Some(req) = rep.reqs.try_get_mut(s) else {
                return Err(plan_err(format!("runs unknown slot {s}")));
            };
            if req.in_batch {
                return Err(plan_err(format!("runs request {} twice", req.id)));
            }
            if !req.runnable() {
                return Err(plan_err(format!(
                    "runs request {} while its KV is being copied",
                    req.id
                )));
            }
            req.in_batch = true;
            rep.batch.push(s);
            let req = if req.kv_loc != KvLoc::Host {
                req
            } else {
                // Reactive swap-in: the iteration waits for the copy.
                let need = req.offloaded_gpu_blocks;
                if !rep.kv.try_alloc(need) {
                    for &b in &rep.batch {
                        rep.reqs.get_mut(b).in_batch = false;
                    }
                    return Err(plan_err(format!(
                        "reactive swap-in needs {need} GPU blocks but only {} are free",
                        rep.kv.free_blocks()
                    )));
                }
                rep.reqs.get_mut(s).blocks = need;
                let (start, end) = rep.start_transfer(s, Direction::HostToDevice, now)?;
                transfers.push((end, s));
                copies.add_swap_in(start, end);
                rep.reqs.get_mut(s)
            };
            if req.needs_prefill() {
                shape.add_prefill(req.prefill_tokens());
            } else {
                shape.add_decode(req.kv_tokens + 1);
            }
            let target = (req.blocks
                + extra_blocks_for(req.kv_tokens_after_next() as u64, req.blocks, block_tokens))
            .max(item.reserve_blocks);
            if target > req.blocks {
                let extra = target - req.blocks;
                if !rep.kv.try_alloc(extra) {
                    let id = req.id;
                    let free = rep.kv.free_blocks();
                    for &b in &rep.batch {
                        rep.reqs.get_mut(b).in_batch = false;
                    }
                    return Err(plan_err(format!(
                        "request {id} needs {extra} more KV blocks but only {free} are free"
                    )));
                }
                req.blocks = target;
            }
            if req.first_scheduled_ns.is_none() {
                req.first_scheduled_ns = Some(now);
            }
        }
        if shape.prefill_requests > 1 && shape.prefill_tokens > limits.max_batch_tokens as u64 {
            return Err(plan_err(format!(
                "{} prefill tokens exceed max_batch_tokens = {}",
                shape.prefill_tokens, limits.max_batch_tokens
            )));
        }
        let compute = rep.executor.run_iteration(&shape)?;
        if rep.pipeline.stages > 1 {
            let pipeline = rep.pipeline;
            for (t, s) in transfers {
                self.push_slot(t, CLASS_TRANSFER, r, s);
            }
            return self.launch_micro_batch(r, now, compute, copies, &shape, pipeline, observer);
        }
        let overflow = || SimError::Limit("simulated time overflowed u64 nanoseconds".into());
        let compute_end = now.checked_add(compute).ok_or_else(overflow)?;
        let timing = rep.swap_timing;
        let end =
            crate::swap::timing::compute_end(timing.reactive, timing.layers, now, compute, &copies)
                .ok_or_else(overflow)?;
        if end > compute_end {
            rep.charge_stall(end - compute_end);
        }
        rep.busy = true;
        rep.iter_start_ns = now;
        rep.count_iteration(end - now, shape.requests() as u64);
        self.stats.iterations += 1;
        observer.on_iteration(r, now, end, &shape);
        rep.report_memory(r, now, end, block_tokens, observer);
        let repeatable = self.fast_forward
            && rep.transfer_log.is_none()
            && rep.pipeline.stages == 1
            && transfers.is_empty()
            && rep.plan.preempt.is_empty()
            && rep.plan.swap_in.is_empty()
            && copies == StepCopies::default();
        for (t, s) in transfers {
            self.push_slot(t, CLASS_TRANSFER, r, s);
        }
        let end = if repeatable {
            self.fast_forward(r, now, end, shape, predictor, observer)?
        } else {
            end
        };
        self.push(end, CLASS_END, r);
        Ok(())
    }

    /// Put the batch just formed into the pipeline: stage k starts it when stage k − 1 has sent it
    /// and stage k is done with the previous micro-batch; each stage takes `compute / stages` plus
    /// the activation send. The first stage takes the next micro-batch when it is done; the batch's
    /// tokens come out of the last stage. Reactive swap-ins (`copies`): every stage's GPUs copy
    /// their own `⌈layers / pp⌉` layers over their own links in parallel, so each stage sees the
    /// whole copy window; under `overlap` the tokens come out no earlier than the last copy, under
    /// the other modes each stage's compute waits for it as [`crate::swap::timing`] says (over
    /// the stage's layers) and its send follows. Busy time counts the mean stage occupancy, so
    /// pipeline bubbles lower the busy fraction.
    #[allow(clippy::too_many_arguments)]
    fn launch_micro_batch(
        &mut self,
        r: u32,
        now: Ns,
        compute: Ns,
        copies: StepCopies,
        shape: &BatchShape,
        pipeline: crate::exec::Pipeline,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let stages = pipeline.stages as u64;
        let send_s = pipeline.send_s(shape.tokens());
        let send = duration_ns_ceil(send_s)
            .ok_or_else(|| SimError::config(format!("pipeline send time {send_s} s is invalid")))?;
        let stage_compute = compute.div_ceil(stages);
        let stage_ns = stage_compute + send;
        let rep = &mut self.replicas[r as usize];
        let timing = rep.swap_timing;
        let overflow = || SimError::Limit("simulated time overflowed u64 nanoseconds".into());
        let mut t = now;
        let mut ungated = now;
        let mut first_stage_end = now;
        for (k, free) in rep.stage_free_ns.iter_mut().enumerate() {
            let start = t.max(*free);
            let end = if timing.reactive == crate::swap::timing::Reactive::Overlap {
                start.checked_add(stage_ns)
            } else {
                crate::swap::timing::compute_end(
                    timing.reactive,
                    timing.layers,
                    start,
                    stage_compute,
                    &copies,
                )
                .and_then(|e| e.checked_add(send))
            }
            .ok_or_else(overflow)?;
            // The same stage without any wait for copies (for the stall it charges).
            ungated = ungated
                .max(*free)
                .checked_add(stage_ns)
                .ok_or_else(overflow)?;
            *free = end;
            t = end;
            if k == 0 {
                first_stage_end = end;
            }
        }
        let exit = match (timing.reactive, copies.swap_in) {
            (crate::swap::timing::Reactive::Overlap, Some((_, b))) => t.max(b),
            _ => t,
        };
        if exit > ungated {
            rep.charge_stall(exit - ungated);
        }
        rep.count_iteration(stage_ns, shape.requests() as u64);
        self.stats.iterations += 1;
        observer.on_iteration(r, now, exit, shape);
        rep.report_memory(r, now, exit, self.cfg.block_tokens, observer);
        let batch = std::mem::take(&mut rep.batch);
        rep.flights.push_back(Flight {
            batch,
            start_ns: now,
        });
        rep.stage0_busy = true;
        rep.busy = true;
        rep.iter_start_ns = now;
        self.push(first_stage_end, CLASS_STAGE_FREE, r);
        self.push(exit, CLASS_END, r);
        Ok(())
    }

    /// Fast-forward: the decode-only batch just launched on replica `r` (at `start`, ending at
    /// `end`) is repeated, iteration by iteration but without events, policy calls or plan
    /// checks, while nothing could make the next boundary decide differently: no other event
    /// comes first, nobody finishes or outlives its prediction, the KV blocks of the next step fit
    /// and the policy's [`crate::policy::Steady`] bounds hold. Each repeated iteration still gets
    /// its own cost-model time, observer call, event count and KV accounting, so every output is
    /// identical to stepping. Returns the end of the last iteration launched.
    #[allow(clippy::too_many_arguments)]
    fn fast_forward(
        &mut self,
        r: u32,
        start: Ns,
        end: Ns,
        mut shape: BatchShape,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) -> Result<Ns> {
        // Scratch bound per fast-forward (the next one continues from there).
        const MAX_REPEATS: usize = 1 << 20;
        let limits = self.cfg.limits;
        let block_tokens = self.cfg.block_tokens as u64;
        let next_event_ns = self.heap.peek().map_or(Ns::MAX, |Reverse(e)| e.0);
        // A KV sample at T shows the state after every event stamped ≤ T: no repeated iteration
        // may end after a pending sample time (the sample is taken at the next real event).
        let next_sample_ns = if self.cfg.kv_sample_interval_ns == 0 {
            Ns::MAX
        } else {
            self.next_sample_ns
        };
        let guards = self.cfg.guards;
        let rep = &mut self.replicas[r as usize];
        if end >= next_event_ns {
            return Ok(end);
        }
        // The records stay as they were at the plan's first run until the end: request q has
        // then `kv_tokens_after_next() + m − 1` KV tokens and `generated_tokens + m` tokens at
        // boundary m (the end of the m-th iteration). Repeats the requests allow: the repeat
        // launched at boundary m must not follow a prediction being reached (`loose`, with
        // `through_completions`) nor, otherwise, a request finishing (`strict`).
        let (mut strict, mut loose) = (MAX_REPEATS, MAX_REPEATS);
        let mut next_finish = usize::MAX;
        for item in &rep.plan.run {
            let q = rep.reqs.get(item.slot);
            if item.reserve_blocks > q.blocks {
                return Ok(end);
            }
            let left = |stop_at: u32| stop_at.saturating_sub(q.generated_tokens + 1) as usize;
            if q.output_tokens <= q.predicted_output_tokens {
                strict = strict.min(left(q.output_tokens));
                next_finish = next_finish.min((q.output_tokens - q.generated_tokens) as usize);
            } else {
                let l = left(q.predicted_output_tokens);
                strict = strict.min(l);
                loose = loose.min(l);
            }
        }
        if loose == 0 {
            return Ok(end);
        }
        let steady = {
            let view = view!(rep, start, limits);
            match rep.policy.steady(&rep.batch, &view) {
                Some(s) => s,
                None => return Ok(end),
            }
        };
        if shape.prefill_requests > 0 && !(steady.stepwise && steady.with_prefills) {
            return Ok(end);
        }
        let completions = steady.stepwise && steady.through_completions;
        if !completions {
            next_finish = usize::MAX;
        }
        let horizon = if completions { loose } else { strict }
            .min(steady.max_iterations.min(MAX_REPEATS as u64) as usize);
        if horizon == 0 {
            return Ok(end);
        }
        if steady.stepwise {
            // Boundary m ends at `start` + the summed durations so far, before the next event.
            rep.policy
                .on_steady_begin(next_event_ns.saturating_sub(start));
        }
        if shape.prefill_requests > 0 {
            // The repeats are decodes of every request (context = KV tokens + the new one).
            shape = BatchShape::default();
            for &s in &rep.batch {
                shape.add_decode(rep.reqs.get(s).kv_tokens_after_next());
            }
        }
        let first_token_ns = end;
        // Blocks the repeat at boundary m allocates: request q with `a` KV tokens after the first
        // run and b blocks (a ≤ b·B) first needs a new block at m = b·B − a + 1, then every B
        // boundaries. Counted one window of B boundaries at a time (each request crosses at most
        // once per window).
        let bt = block_tokens as usize;
        // The first boundary ≥ `from` at which `q` needs a new block.
        let next_crossing = |q: &Request, from: usize| {
            let m1 =
                (q.blocks as u64 * block_tokens + 1 - q.kv_tokens_after_next() as u64) as usize;
            if m1 >= from {
                m1
            } else {
                m1 + (from - m1).div_ceil(bt) * bt
            }
        };
        let (mut cur_start, mut cur_end) = (start, end);
        let mut service_ns: Ns = 0;
        let mut repeats: u64 = 0;
        let mut window_lo = usize::MAX;
        for m in 1..=horizon {
            if window_lo == usize::MAX || m >= window_lo + bt {
                window_lo = m;
                let alloc = &mut self.ff_alloc;
                alloc.clear();
                alloc.resize(bt, 0);
                for &s in &rep.batch {
                    let at = next_crossing(rep.reqs.get(s), m);
                    if at < m + bt {
                        alloc[at - m] += 1;
                    }
                }
            }
            let mut need = self.ff_alloc[m - window_lo];
            let dur = cur_end - cur_start;
            let mut free = rep.kv.free_blocks();
            if cur_end >= next_event_ns
                || cur_end > next_sample_ns
                || cur_end >= steady.until_ns
                || cur_end > guards.max_sim_ns
                || self.stats.events >= guards.max_events
                || service_ns.saturating_add(dur) > steady.max_service_ns
            {
                break;
            }
            // Requests finishing at this boundary (only with `through_completions`): their
            // blocks free first, and they allocate nothing for the repeat.
            let finishing = m == next_finish;
            let mut finished = 0usize;
            let mut next_after = usize::MAX;
            if finishing {
                for &s in &rep.batch {
                    let q = rep.reqs.get(s);
                    let left = (q.output_tokens - q.generated_tokens) as usize;
                    if left == m {
                        finished += 1;
                        if next_crossing(q, m) == m {
                            need -= 1;
                        }
                        let kv = q.kv_tokens_after_next() as u64 + m as u64 - 1;
                        free += q.blocks + extra_blocks_for(kv, q.blocks, self.cfg.block_tokens);
                    } else if q.output_tokens <= q.predicted_output_tokens {
                        next_after = next_after.min(left);
                    }
                }
                if finished == rep.batch.len() {
                    break; // the batch would be empty: the normal path takes it from here
                }
            }
            if need > free || free - need < steady.min_free_blocks {
                break;
            }
            // The end of the iteration that ran [cur_start, cur_end): an event when stepping.
            self.stats.events += 1;
            self.stats.fast_forwarded_iterations += 1;
            self.stats.makespan_ns = self.stats.makespan_ns.max(cur_end);
            service_ns += dur;
            repeats += 1;
            rep.account_usage(cur_end);
            if finishing {
                // What `finish_iteration` does for them, in batch order (which only matters when
                // several finish together).
                if finished > 1 {
                    rep.policy.steady_order(&mut rep.batch);
                }
                let mut i = 0;
                while i < rep.batch.len() {
                    let s = rep.batch[i];
                    let q = rep.reqs.get_mut(s);
                    if (q.output_tokens - q.generated_tokens) as usize != m {
                        i += 1;
                        continue;
                    }
                    // Its later block crossing in the current window is no longer needed.
                    let at = next_crossing(q, m + 1);
                    if at < window_lo + bt {
                        self.ff_alloc[at - window_lo] -= 1;
                    }
                    let kv = q.kv_tokens_after_next() + m as u32 - 1;
                    shape.decode_requests -= 1;
                    shape.decode_context_tokens -= kv as u64;
                    q.blocks += extra_blocks_for(kv as u64, q.blocks, self.cfg.block_tokens);
                    q.kv_tokens = kv;
                    q.kv_loc = KvLoc::Gpu;
                    q.generated_tokens += m as u32;
                    q.attained_ns += service_ns;
                    q.last_run_end_ns = cur_end;
                    q.in_batch = false;
                    if q.first_token_ns.is_none() {
                        q.first_token_ns = Some(first_token_ns);
                    }
                    rep.batch.remove(i);
                    rep.complete(r, s, cur_end, predictor, observer);
                }
                next_finish = next_after;
            }
            if steady.stepwise {
                let view = view!(rep, cur_end, limits);
                rep.policy
                    .on_steady_step(&mut rep.batch, repeats, dur, &view);
            }
            let ok = rep.kv.try_alloc(need);
            debug_assert!(ok, "free blocks were checked");
            let n = rep.batch.len() as u64;
            shape.decode_context_tokens += n;
            let d = rep.executor.run_iteration(&shape)?;
            let e = cur_end.checked_add(d).ok_or_else(|| {
                SimError::Limit("simulated time overflowed u64 nanoseconds".into())
            })?;
            rep.count_iteration(d, n);
            self.stats.iterations += 1;
            observer.on_iteration(r, cur_end, e, &shape);
            (cur_start, cur_end) = (cur_end, e);
        }
        if repeats == 0 {
            return Ok(end);
        }
        let k = repeats as u32;
        for i in 0..rep.batch.len() {
            let s = rep.batch[i];
            let q = rep.reqs.get_mut(s);
            q.attained_ns += service_ns;
            q.last_run_end_ns = cur_start;
            q.kv_tokens = q.kv_tokens_after_next() + k - 1;
            q.kv_loc = KvLoc::Gpu;
            q.generated_tokens += k;
            if q.first_token_ns.is_none() {
                q.first_token_ns = Some(first_token_ns);
            }
            q.blocks += extra_blocks_for(q.kv_tokens as u64 + 1, q.blocks, self.cfg.block_tokens);
        }
        rep.iter_start_ns = cur_start;
        if steady.stepwise {
            rep.policy.steady_order(&mut rep.batch);
        } else {
            let view = view!(rep, cur_start, limits);
            rep.policy
                .on_steady_iterations(&mut rep.batch, repeats, service_ns, &view);
        }
        Ok(cur_end)
    }

    fn finish_transfer(&mut self, r: u32, s: Slot, now: Ns) {
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        rep.transfers_in_flight -= 1;
        let req = rep.reqs.get_mut(s);
        match req.kv_loc {
            KvLoc::SwappingOut => {
                rep.kv.free(req.blocks);
                req.blocks = 0;
                req.kv_loc = KvLoc::Host;
            }
            KvLoc::SwappingIn => {
                rep.host.free(req.host_blocks);
                req.host_blocks = 0;
                req.kv_loc = KvLoc::Gpu;
            }
            other => {
                unreachable!("engine bug: transfer completed for a request in state {other:?}")
            }
        }
    }

    fn finish_iteration(
        &mut self,
        r: u32,
        now: Ns,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) {
        let limits = self.cfg.limits;
        let rep = &mut self.replicas[r as usize];
        rep.account_usage(now);
        let dur = now - rep.iter_start_ns;
        rep.busy = false;
        rep.survivors.clear();
        for i in 0..rep.batch.len() {
            let s = rep.batch[i];
            let req = rep.reqs.get_mut(s);
            req.in_batch = false;
            req.attained_ns += dur;
            req.last_run_end_ns = now;
            req.kv_tokens = req.kv_tokens_after_next();
            req.kv_loc = KvLoc::Gpu;
            req.generated_tokens += 1;
            if req.first_token_ns.is_none() {
                req.first_token_ns = Some(now);
            }
            debug_assert!(
                req.blocks as u64 >= blocks_for_tokens(req.kv_tokens as u64, self.cfg.block_tokens)
            );
            if req.generated_tokens >= req.output_tokens {
                rep.complete(r, s, now, predictor, observer);
            } else {
                if req.generated_tokens >= req.predicted_output_tokens {
                    req.predicted_output_tokens =
                        extend_prediction(req.generated_tokens, req.predicted_output_tokens);
                }
                rep.survivors.push(s);
            }
        }
        let view = view!(rep, now, limits);
        rep.policy.on_iteration_end(&rep.survivors, dur, &view);
    }
}

/// The memory state of `rep` after its plan was applied (for [`Observer::on_memory`]).
fn memory_snapshot(rep: &Replica, r: u32, start: Ns, end: Ns, block_tokens: u32) -> MemorySnapshot {
    let (mut gpu_held, mut host_held, mut host_expected) = (0u64, 0u64, 0u64);
    for q in rep.reqs.iter() {
        gpu_held += q.blocks as u64;
        host_held += q.host_blocks as u64;
        if matches!(
            q.kv_loc,
            KvLoc::Host | KvLoc::SwappingIn | KvLoc::SwappingOut
        ) {
            host_expected += rep.offload.host_blocks_for(q.offloaded_gpu_blocks) as u64;
        }
    }
    let batch = rep
        .batch
        .iter()
        .map(|&s| {
            let q = rep.reqs.get(s);
            BatchMember {
                id: q.id,
                kv_loc: q.kv_loc,
                blocks: q.blocks,
                needed_blocks: blocks_for_tokens(q.kv_tokens_after_next() as u64, block_tokens)
                    as u32,
                // The end of its last copy (0 if never copied): in the future only for a
                // reactive swap-in, whose iteration then ends no earlier.
                kv_ready_ns: (q.kv_loc != KvLoc::None).then_some(q.kv_ready_ns),
            }
        })
        .collect();
    MemorySnapshot {
        replica: r,
        start_ns: start,
        end_ns: end,
        gpu_capacity: rep.kv.capacity_blocks(),
        gpu_used: rep.kv.used_blocks(),
        gpu_free: rep.kv.free_blocks(),
        host_capacity: rep.host.capacity_blocks(),
        host_used: rep.host.used_blocks(),
        host_free: rep.host.free_blocks(),
        gpu_held,
        host_held,
        host_expected,
        batch,
    }
}

/// The routers' read-only view of the replicas.
impl LoadSource for Vec<Replica> {
    fn count(&self) -> usize {
        self.len()
    }
    fn load(&self, r: usize) -> ReplicaLoad<'_> {
        let rep = &self[r];
        ReplicaLoad {
            reqs: &rep.reqs,
            kv: &rep.kv,
            host: &rep.host,
            busy: rep.busy,
        }
    }
}
