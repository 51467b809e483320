//! The discrete-event core: event queue, clock, replicas, KV accounting and the driver loop.
//! No I/O and no wall clock in here: inputs come from an iterator, outputs go to an [`Observer`].
//!
//! Time is integer nanoseconds. Events are totally ordered by `(time, class, seq)`: at one instant
//! arrivals come first (so a request arriving exactly at an iteration boundary joins that
//! boundary's decision), then iteration ends, then idle-replica kicks; `seq` increments on every
//! push and breaks the remaining ties in push order.

pub mod kv;
pub mod request;
pub mod time;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use kv::KvPool;
use kv::blocks_for_tokens;
use request::{Request, Slab, Slot};
use time::{Ns, ns_to_s};

use crate::cost::BatchShape;
use crate::error::{Result, SimError};
use crate::exec::Executor;
use crate::policy::{Limits, Plan, Policy, PreemptMode, ReplicaView};
use crate::predict::{Predictor, extend_prediction};

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
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_events: 2_000_000_000,
            max_sim_ns: 30 * 24 * 3600 * 1_000_000_000,
            max_queue: 1_000_000,
        }
    }
}

/// One replica's moving parts.
pub struct ReplicaParts {
    pub policy: Box<dyn Policy>,
    pub executor: Box<dyn Executor>,
    pub kv_capacity_blocks: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub block_tokens: u32,
    pub limits: Limits,
    pub guards: Guards,
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
}

const CLASS_ARRIVAL: u8 = 0;
const CLASS_END: u8 = 1;
const CLASS_KICK: u8 = 2;

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
    if parts.is_empty() {
        return Err(SimError::config("at least one replica is needed"));
    }
    let mut sim = Sim {
        cfg: *cfg,
        heap: BinaryHeap::new(),
        seq: 0,
        pending: None,
        last_arrival_ns: 0,
        replicas: parts
            .into_iter()
            .map(|p| Replica {
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
                    ..Default::default()
                },
            })
            .collect(),
        stats: RunStats::default(),
        next_replica: 0,
    };
    sim.run(trace, predictor, observer)?;
    for r in &mut sim.replicas {
        r.stats.peak_kv_blocks = r.kv.peak_used_blocks();
    }
    sim.stats.replicas = sim.replicas.iter().map(|r| r.stats.clone()).collect();
    Ok(sim.stats)
}

struct Sim {
    cfg: EngineConfig,
    heap: BinaryHeap<Reverse<(Ns, u8, u64, u32)>>,
    seq: u64,
    pending: Option<TraceRow>,
    last_arrival_ns: Ns,
    replicas: Vec<Replica>,
    stats: RunStats,
    next_replica: u32,
}

impl Sim {
    fn push(&mut self, t: Ns, class: u8, replica: u32) {
        self.heap.push(Reverse((t, class, self.seq, replica)));
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
    ) -> Result<()> {
        self.pull_arrival(trace)?;
        while let Some(Reverse((now, class, _, r))) = self.heap.pop() {
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
                CLASS_END => {
                    self.finish_iteration(r, now, predictor, observer);
                    self.start_iteration(r, now, observer)?;
                }
                _ => {
                    let rep = &mut self.replicas[r as usize];
                    rep.kick_pending = false;
                    if !rep.busy {
                        self.start_iteration(r, now, observer)?;
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
        let r = self.next_replica;
        self.next_replica = (self.next_replica + 1) % self.replicas.len() as u32;
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
        let slot = rep.reqs.insert(Request {
            id: row.id,
            arrival_ns: row.arrival_ns,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            predicted_output_tokens: predictor.predict(row.input_tokens, row.output_tokens),
            generated_tokens: 0,
            kv_tokens: 0,
            blocks: 0,
            preemptions: 0,
            attained_ns: 0,
            first_scheduled_ns: None,
            first_token_ns: None,
            last_run_end_ns: row.arrival_ns,
            in_batch: false,
        });
        rep.stats.requests += 1;
        self.stats.requests += 1;
        let view = ReplicaView {
            reqs: &rep.reqs,
            kv: &rep.kv,
            now_ns: now,
            limits,
        };
        rep.policy.on_arrival(slot, &view)?;
        if rep.reqs.len() > self.cfg.guards.max_queue {
            return Err(SimError::Limit(format!(
                "overloaded: replica {r} queue grew past {} unfinished requests at t={:.3}s; the arrival rate exceeds what it can serve (limits.max_queue)",
                self.cfg.guards.max_queue,
                ns_to_s(now)
            )));
        }
        if !rep.busy && !rep.kick_pending {
            rep.kick_pending = true;
            self.push(now, CLASS_KICK, r);
        }
        Ok(())
    }

    fn start_iteration(&mut self, r: u32, now: Ns, observer: &mut dyn Observer) -> Result<()> {
        let limits = self.cfg.limits;
        let block_tokens = self.cfg.block_tokens;
        let rep = &mut self.replicas[r as usize];
        {
            let view = ReplicaView {
                reqs: &rep.reqs,
                kv: &rep.kv,
                now_ns: now,
                limits,
            };
            rep.policy.schedule(&view, &mut rep.plan);
        }
        let policy = rep.policy.name();
        let plan_err = |msg: String| SimError::Plan {
            policy: policy.to_string(),
            time_s: ns_to_s(now),
            msg,
        };
        // Preemptions first: they free blocks for the batch.
        for &(s, mode) in &rep.plan.preempt {
            if !rep.reqs.contains(s) {
                return Err(plan_err(format!("preempts unknown slot {s}")));
            }
            let req = rep.reqs.get_mut(s);
            match mode {
                PreemptMode::Recompute => {
                    rep.kv.free(req.blocks);
                    req.blocks = 0;
                    req.kv_tokens = 0;
                    req.preemptions += 1;
                    rep.stats.preemptions += 1;
                }
            }
        }
        if rep.plan.run.is_empty() {
            rep.busy = false;
            if !rep.reqs.is_empty() {
                return Err(plan_err(format!(
                    "nothing to run while {} requests are unfinished (free KV blocks: {}); the run would never end",
                    rep.reqs.len(),
                    rep.kv.free_blocks()
                )));
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
        for item in &rep.plan.run {
            let s = item.slot;
            if !rep.reqs.contains(s) {
                return Err(plan_err(format!("runs unknown slot {s}")));
            }
            let req = rep.reqs.get_mut(s);
            if req.in_batch {
                return Err(plan_err(format!("runs request {} twice", req.id)));
            }
            req.in_batch = true;
            rep.batch.push(s);
            if req.needs_prefill() {
                shape.add_prefill(req.prefill_tokens());
            } else {
                shape.add_decode(req.kv_tokens + 1);
            }
            let target = (blocks_for_tokens(req.kv_tokens_after_next() as u64, block_tokens)
                as u32)
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
        let dur = rep.executor.run_iteration(&shape)?;
        rep.busy = true;
        rep.iter_start_ns = now;
        rep.stats.iterations += 1;
        rep.stats.busy_ns += dur;
        rep.stats.batch_requests_sum += shape.requests() as u64;
        self.stats.iterations += 1;
        let end = now
            .checked_add(dur)
            .ok_or_else(|| SimError::Limit("simulated time overflowed u64 nanoseconds".into()))?;
        observer.on_iteration(r, now, end, &shape);
        self.push(end, CLASS_END, r);
        Ok(())
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
            req.generated_tokens += 1;
            if req.first_token_ns.is_none() {
                req.first_token_ns = Some(now);
            }
            debug_assert!(
                req.blocks as u64 >= blocks_for_tokens(req.kv_tokens as u64, self.cfg.block_tokens)
            );
            if req.generated_tokens >= req.output_tokens {
                let info = rep.policy.describe(s);
                let req = rep.reqs.remove(s);
                rep.kv.free(req.blocks);
                rep.policy.on_finish(s);
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
                    predicted_output_tokens: req.predicted_output_tokens,
                    priority: info.priority,
                    demotions: info.demotions,
                    promotions: info.promotions,
                });
            } else {
                if req.generated_tokens >= req.predicted_output_tokens {
                    req.predicted_output_tokens =
                        extend_prediction(req.generated_tokens, req.predicted_output_tokens);
                }
                rep.survivors.push(s);
            }
        }
        let view = ReplicaView {
            reqs: &rep.reqs,
            kv: &rep.kv,
            now_ns: now,
            limits,
        };
        rep.policy.on_iteration_end(&rep.survivors, dur, &view);
    }
}
