//! The discrete-event core: event queue, clock, replicas, KV accounting and the driver loop.
//! No I/O and no wall clock in here: inputs come from an iterator, outputs go to an [`Observer`].
//!
//! Time is integer nanoseconds. Events are totally ordered by `(time, class, seq)`: at one instant
//! arrivals come first (so a request arriving exactly at an iteration boundary joins that
//! boundary's decision), then iteration ends, then idle-replica kicks; `seq` increments on every
//! push and breaks the remaining ties in push order.

pub mod overload;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::vocab::TraceRow;
use crate::vocab::kv::{KvPool, blocks_for_tokens};
use crate::vocab::request::Request;
use crate::vocab::time::{Ns, ns_to_s};

use crate::error::{Result, SimError};
use crate::exec::Executor;
use crate::policy::{Limits, Policy, ReplicaView};
use crate::predict::{Predictor, bound_by_context};
use crate::route::{ClusterView, Incoming, Router};
use crate::swap::timing::SwapTiming;
use crate::swap::{KvOffload, SwapModel};

/// What the `[limits] max_sim_s` error says when the trace's next arrival is past the limit
/// (live mode tells it from a limit its own lag reached).
pub const TRACE_OUTLASTS_LIMIT: &str = "the trace is longer than the limit";

/// Bounds that end a run with an error instead of a hang or an out-of-memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    pub max_events: u64,
    pub max_sim_ns: Ns,
    /// Maximum unfinished requests on one replica.
    pub max_queue: usize,
    /// Shortest window of the overload detector in simulated ns (0 = no detector): see
    /// [`OverloadWatch`](overload::OverloadWatch).
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

mod events;
mod fast_forward;
mod ff_absorb;
mod launch;
mod observe;
mod replica;

use events::{CLASS_ARRIVAL, CLASS_END, CLASS_KICK, CLASS_STAGE_FREE, CLASS_TRANSFER, Event};
pub use events::{Clock, SteppingClock, VirtualClock};
pub use observe::{
    BatchMember, Completion, KvSample, MemorySnapshot, Observer, ReplicaStats, RunStats,
    TransferRecord,
};
use replica::Replica;

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
    let n = parts.len();
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
            .map(|(id, p)| Replica::new(id as u32, p, cfg.block_tokens, &*observer))
            .collect(),
        stats: RunStats::default(),
        router,
        // Before the first decision every replica counts as changed.
        changed: (0..n as u32).collect(),
        changed_mark: vec![true; n],
        fast_forward: clock.fast_forward(),
        ff_alloc: Vec::new(),
        ff_top: Vec::new(),
        ff_joining: Vec::new(),
    };
    if sim.router.reads_request_changes() {
        for rep in &mut sim.replicas {
            rep.reqs.keep_change_log();
        }
    }
    sim.run(trace, predictor, observer, clock)?;
    for rep in &mut sim.replicas {
        if let Some(b) = &mut rep.exec {
            rep.executor.end_run(b)?;
            b.clear();
        }
    }
    let end = sim.stats.makespan_ns;
    if sim.stats.events > 0 {
        sim.sample_through(end, true, observer)?;
    }
    for r in &mut sim.replicas {
        r.account_usage(end);
        r.stats.peak_kv_blocks = r.kv.peak_used_blocks();
        r.stats.peak_host_blocks = r.host.peak_used_blocks();
    }
    for r in &sim.replicas {
        sim.stats.itl.merge(&r.itl);
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
    /// Replicas whose load may have changed since the router's previous decision (each once:
    /// `changed_mark[r]` says whether `r` is listed). Every event but an arrival touches only its
    /// own replica, and an arrival only the replica it joins, so marking those is enough.
    changed: Vec<u32>,
    changed_mark: Vec<bool>,
    /// Whether runs of identical decode iterations may be fast-forwarded.
    fast_forward: bool,
    /// Scratch: blocks each repeated iteration of a fast-forward allocates.
    ff_alloc: Vec<u32>,
    /// Scratch: the largest gaps of a fast-forward's repeats, ascending (see
    /// `Sim::fast_forward`).
    ff_top: Vec<Ns>,
    /// Scratch: the arrivals a fast-forward takes in at one boundary, in arrival order (see
    /// `ff_absorb.rs`).
    ff_joining: Vec<crate::vocab::request::Slot>,
}

impl Sim {
    fn run(
        &mut self,
        trace: &mut dyn Iterator<Item = Result<TraceRow>>,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
        clock: &mut dyn Clock,
    ) -> Result<()> {
        self.pull_arrival(trace)?;
        while let Some(Reverse(e)) = self.heap.pop() {
            let (t, class, r, slot) = (e.0, e.class(), e.2, e.3);
            let Some(now) = clock.advance(t) else {
                break;
            };
            // A live clock may hand back a later time; never earlier than the last event.
            let now = now.max(t).max(self.stats.makespan_ns);
            self.sample_through(now, false, observer)?;
            self.stats.events += 1;
            self.check_guards(now)?;
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
                    if rep.flights.is_empty() {
                        rep.occupied_ns += now - rep.occupied_since_ns;
                    }
                    rep.batch = f.batch;
                    rep.iter_start_ns = f.start_ns;
                    self.finish_iteration(r, now, predictor, observer);
                    let rep = &mut self.replicas[r as usize];
                    rep.busy = rep.stage0_busy;
                    if !rep.busy {
                        self.start_iteration(r, now, trace, predictor, observer)?;
                    }
                }
                CLASS_END => {
                    self.finish_iteration(r, now, predictor, observer);
                    self.start_iteration(r, now, trace, predictor, observer)?;
                }
                CLASS_STAGE_FREE => {
                    let rep = &mut self.replicas[r as usize];
                    rep.stage0_busy = false;
                    rep.busy = rep.flights.len() >= rep.pipeline.stages as usize;
                    if !rep.busy {
                        self.start_iteration(r, now, trace, predictor, observer)?;
                    }
                }
                _ => {
                    let rep = &mut self.replicas[r as usize];
                    rep.kick_pending = false;
                    if !rep.busy {
                        self.start_iteration(r, now, trace, predictor, observer)?;
                    }
                }
            }
            if class != CLASS_ARRIVAL {
                self.mark_changed(r);
            }
            self.stats.makespan_ns = self.stats.makespan_ns.max(now);
        }
        Ok(())
    }

    /// Tell the router's next decision that replica `r`'s load may have changed.
    fn mark_changed(&mut self, r: u32) {
        if !std::mem::replace(&mut self.changed_mark[r as usize], true) {
            self.changed.push(r);
        }
    }

    /// Fail the run when it passed [`Guards::max_events`] or [`Guards::max_sim_ns`].
    fn check_guards(&self, now: Ns) -> Result<()> {
        if self.stats.events > self.cfg.guards.max_events {
            return Err(SimError::Limit(format!(
                "stopped after {} events at t={}s: the run is too long or overloaded (raise [limits] max_events = {} to let it go on)",
                self.cfg.guards.max_events,
                crate::error::num(ns_to_s(now)),
                self.cfg.guards.max_events
            )));
        }
        if now > self.cfg.guards.max_sim_ns {
            return Err(SimError::Limit(self.max_sim_message()));
        }
        Ok(())
    }

    /// Why simulated time passed `[limits] max_sim_s`: arrivals due after it (the trace is
    /// longer than the limit), or requests left unfinished with every arrival due by then in (a
    /// live driver running behind may still hold one due earlier).
    fn max_sim_message(&self) -> String {
        let limit = crate::error::num(ns_to_s(self.cfg.guards.max_sim_ns));
        let unfinished: usize = self.replicas.iter().map(|r| r.reqs.len()).sum();
        let later = self
            .pending
            .as_ref()
            .filter(|next| next.arrival_ns > self.cfg.guards.max_sim_ns);
        let why = match later {
            Some(next) => format!(
                "requests were still arriving (the next at t={} s, {unfinished} unfinished): {TRACE_OUTLASTS_LIMIT}; use fewer requests or a higher rate, or raise [limits] max_sim_s",
                crate::error::num(ns_to_s(next.arrival_ns))
            ),
            None => format!(
                "{unfinished} request{} unfinished though the last arrived at t={} s: the run is overloaded or drains slowly (raise [limits] max_sim_s to let it go on)",
                if unfinished == 1 { " was" } else { "s were" },
                crate::error::num(ns_to_s(self.last_arrival_ns))
            ),
        };
        format!("simulated time passed [limits] max_sim_s = {limit} s while {why}")
    }

    /// Take in an arriving request: returns its replica and slot.
    fn arrive(
        &mut self,
        now: Ns,
        row: TraceRow,
        predictor: &mut dyn Predictor,
    ) -> Result<(u32, crate::vocab::request::Slot)> {
        let limits = self.cfg.limits;
        let total = self.check_row(&row)?;
        let (r, predicted) = self.route(now, &row, predictor)?;
        self.mark_changed(r);
        self.check_fits(r, &row, total)?;
        let rep = &mut self.replicas[r as usize];
        let slot = rep.reqs.insert(Request::new(
            row.id,
            row.arrival_ns,
            row.input_tokens,
            row.output_tokens,
            predicted,
        ));
        rep.stats.requests += 1;
        rep.arrived_tokens += row.output_tokens as u64;
        self.stats.requests += 1;
        let view = view!(rep, now, limits);
        rep.policy.on_arrival(slot, &view)?;
        self.check_queue(r, now)?;
        let rep = &mut self.replicas[r as usize];
        if !rep.busy && !rep.kick_pending {
            rep.kick_pending = true;
            self.push(now, CLASS_KICK, r);
        }
        Ok((r, slot))
    }

    /// The checks on an arriving row that need no replica: lengths ≥ 1 and within the model's
    /// context. Returns input + output tokens.
    fn check_row(&self, row: &TraceRow) -> Result<u64> {
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
                    "input + output = {total} tokens exceeds the context limit of {} tokens (`[scheduler] max_context_tokens`, by default the model's own)",
                    limits.max_context_tokens
                ),
            });
        }
        Ok(total)
    }

    /// The checks against the replica `r` the row was routed to: its policy chunks a prompt over
    /// `max_batch_tokens`, and its KV pool can hold the whole request.
    fn check_fits(&self, r: u32, row: &TraceRow, total: u64) -> Result<()> {
        let rep = &self.replicas[r as usize];
        let max_batch_tokens = self.cfg.limits.max_batch_tokens;
        if row.input_tokens > max_batch_tokens && !rep.policy.chunks_prefill() {
            return Err(SimError::Request {
                id: row.id,
                msg: format!(
                    "prompt of {} tokens exceeds max_batch_tokens = {max_batch_tokens}; it could never be prefilled (a chunking policy such as `sarathi` or `vllm-v1` accepts it, and so do `mlfq`, `skip-join-mlfq`, `srpt` and `alise` with `chunked_prefill = true`)",
                    row.input_tokens
                ),
            });
        }
        let max_blocks = blocks_for_tokens(total - 1, self.cfg.block_tokens);
        if max_blocks > rep.kv.capacity_blocks() as u64 {
            return Err(SimError::Request {
                id: row.id,
                msg: format!(
                    "needs {max_blocks} KV blocks ({} tokens) but replica {r} holds only {} blocks ({} tokens); it can never run (shorter requests, or more KV memory: [memory], tp, a larger GPU)",
                    total - 1,
                    rep.kv.capacity_blocks(),
                    rep.kv.capacity_blocks() as u64 * self.cfg.block_tokens as u64
                ),
            });
        }
        Ok(())
    }

    /// The overload guards after an arrival at replica `r`: `max_queue`, then the detector.
    fn check_queue(&mut self, r: u32, now: Ns) -> Result<()> {
        let guards = self.cfg.guards;
        let rep = &mut self.replicas[r as usize];
        if rep.reqs.len() > guards.max_queue {
            return Err(SimError::Limit(format!(
                "overloaded: replica {r} queue grew past {} unfinished requests at t={:.3}s; the arrival rate exceeds what it can serve (limits.max_queue)",
                guards.max_queue,
                ns_to_s(now)
            )));
        }
        let counters = overload::Counters {
            time_ns: now,
            arrivals: rep.stats.requests,
            completions: rep.completed,
            arrived_tokens: rep.arrived_tokens,
            completed_tokens: rep.completed_tokens,
            busy_ns: rep.saturated_ns(now),
            queue: rep.reqs.len(),
        };
        if let Some(msg) = rep.overload.on_arrival(
            r,
            counters,
            guards.overload_window_ns,
            guards.overload_min_queue,
        ) {
            return Err(SimError::Limit(msg));
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
        let max_context_tokens = self.cfg.limits.max_context_tokens;
        let predicted = bound_by_context(predicted, row.input_tokens, max_context_tokens);
        let incoming = Incoming {
            id: row.id,
            arrival_ns: row.arrival_ns,
            input_tokens: row.input_tokens,
            predicted_output_tokens: predicted,
        };
        let view = ClusterView::with_changed(&self.replicas, now, &self.changed);
        let r = self.router.route(&incoming, &view);
        self.stats.route_loads_read += view.loads_read();
        self.stats.route_changed += self.changed.len() as u64;
        for &c in &self.changed {
            self.changed_mark[c as usize] = false;
        }
        self.changed.clear();
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
}
