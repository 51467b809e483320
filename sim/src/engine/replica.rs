//! A replica's state and its KV and copy-engine accounting.

use super::KvPool;
use super::overload::OverloadWatch;
use super::{
    BatchMember, Completion, MemorySnapshot, Observer, ReplicaParts, ReplicaStats, TransferRecord,
};
use crate::error::{Result, SimError};
use crate::exec::{ExecBatch, Executor, KvEventKind};
use crate::policy::{Plan, Policy};
use crate::predict::Predictor;
use crate::route::{LoadSource, ReplicaLoad};
use crate::swap::timing::SwapTiming;
use crate::swap::{Direction, KvOffload, SwapModel};
use crate::vocab::kv::blocks_for_tokens;
use crate::vocab::request::{KvLoc, Slab, Slot};
use crate::vocab::sketch::GapSketch;
use crate::vocab::time::{Ns, duration_ns_ceil};

/// A micro-batch in the pipeline (pipeline parallelism only).
pub(super) struct Flight {
    pub(super) batch: Vec<Slot>,
    pub(super) start_ns: Ns,
    /// When its tokens come out of the last stage (flights leave in launch order).
    pub(super) exit_ns: Ns,
}

pub(super) struct Replica {
    pub(super) reqs: Slab,
    pub(super) kv: KvPool,
    pub(super) policy: Box<dyn Policy>,
    pub(super) executor: Box<dyn Executor>,
    pub(super) busy: bool,
    pub(super) kick_pending: bool,
    pub(super) iter_start_ns: Ns,
    pub(super) batch: Vec<Slot>,
    pub(super) survivors: Vec<Slot>,
    pub(super) plan: Plan,
    pub(super) stats: ReplicaStats,
    pub(super) host: KvPool,
    pub(super) swap: Box<dyn SwapModel>,
    pub(super) swap_timing: SwapTiming,
    pub(super) kv_block_bytes: u64,
    /// When each copy direction is next free: [GPU→host, host→GPU].
    pub(super) copy_free_at_ns: [Ns; 2],
    pub(super) transfers_in_flight: u32,
    /// Last time block usage was integrated.
    pub(super) usage_at_ns: Ns,
    pub(super) pipeline: crate::exec::Pipeline,
    /// Micro-batches in the pipeline, oldest first (pipeline parallelism only; with one stage
    /// the batch in flight is `batch`).
    pub(super) flights: std::collections::VecDeque<Flight>,
    /// When each stage finishes the last micro-batch given to it.
    pub(super) stage_free_ns: Vec<Ns>,
    /// The first stage is still working on the last micro-batch.
    pub(super) stage0_busy: bool,
    /// Time with a micro-batch in the pipeline, up to `occupied_since_ns` (pipelines only): the
    /// overload watch's busy time, since a first stage waiting for requests held by micro-batches
    /// in flight is as saturated as a busy one.
    pub(super) occupied_ns: Ns,
    /// When the pipeline last went from empty to holding a micro-batch.
    pub(super) occupied_since_ns: Ns,
    pub(super) offload: KvOffload,
    /// Copies queued since the last flush (kept only when the observer wants memory records).
    pub(super) transfer_log: Option<Vec<TransferRecord>>,
    pub(super) id: u32,
    /// Requests that finished here.
    pub(super) completed: u64,
    /// Output tokens of the requests that arrived here, and of those that finished here (the
    /// overload check's measure of work).
    pub(super) arrived_tokens: u64,
    pub(super) completed_tokens: u64,
    pub(super) overload: OverloadWatch,
    /// Every token gap (ITL) emitted here, for the run's ITL quantiles.
    pub(super) itl: GapSketch,
    /// The request-level view of the next iteration, kept only when the executor wants it
    /// ([`Executor::wants_requests`]): KV events since its last call, then the batch.
    pub(super) exec: Option<ExecBatch>,
}

impl Replica {
    /// Replica `id`, empty, from its parts (`observer`: whether to keep transfer records).
    pub(super) fn new(
        id: u32,
        p: ReplicaParts,
        block_tokens: u32,
        observer: &dyn Observer,
    ) -> Self {
        let pipeline = p.executor.pipeline();
        let exec = p.executor.wants_requests().then(ExecBatch::default);
        Replica {
            reqs: Slab::default(),
            kv: KvPool::new(p.kv_capacity_blocks, block_tokens),
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
            host: KvPool::new(p.host_kv_blocks, block_tokens),
            swap: p.swap,
            swap_timing: p.swap_timing,
            kv_block_bytes: p.kv_block_bytes,
            copy_free_at_ns: [0, 0],
            transfers_in_flight: 0,
            usage_at_ns: 0,
            pipeline,
            flights: std::collections::VecDeque::new(),
            occupied_ns: 0,
            occupied_since_ns: 0,
            stage_free_ns: vec![0; pipeline.stages.max(1) as usize],
            stage0_busy: false,
            offload: p.offload,
            transfer_log: observer.wants_memory().then(Vec::new),
            id,
            completed: 0,
            arrived_tokens: 0,
            completed_tokens: 0,
            overload: OverloadWatch::default(),
            itl: GapSketch::default(),
            exec,
        }
    }

    /// Count one launched iteration of `requests` requests that keeps the replica busy `busy_ns`.
    pub(super) fn count_iteration(&mut self, busy_ns: Ns, requests: u64) {
        self.stats.iterations += 1;
        self.stats.busy_ns += busy_ns;
        self.stats.batch_requests_sum += requests;
    }

    /// The overload watch's busy time at `now`: compute time with one stage, time with a
    /// micro-batch in flight with several (the first stage idles while the requests it could run
    /// are all in flight, e.g. when the KV cache is full: 69 % busy at 40× overload, so the
    /// watch never saw a saturated pipeline and such runs went to their end).
    pub(super) fn saturated_ns(&self, now: Ns) -> Ns {
        if self.pipeline.stages <= 1 {
            return self.stats.busy_ns;
        }
        let open = if self.flights.is_empty() {
            0
        } else {
            now.saturating_sub(self.occupied_since_ns)
        };
        self.occupied_ns + open
    }

    /// The batch's iteration waits `stall` beyond its compute for copies (its reactive swap-ins;
    /// under `[swap] reactive = "serial"` also the step's swap-outs).
    pub(super) fn charge_stall(&mut self, stall: Ns) {
        for i in 0..self.batch.len() {
            let s = self.batch[i];
            self.reqs.get_mut(s).swap_stall_ns += stall;
        }
    }

    /// Hand the queued copy records to the observer (when it wants memory records).
    pub(super) fn flush_transfers(&mut self, observer: &mut dyn Observer) {
        for t in self.transfer_log.iter_mut().flat_map(|l| l.drain(..)) {
            observer.on_transfer(&t);
        }
    }

    /// With a memory-recording observer: the copies queued so far and the memory state of the
    /// iteration launched `[start, end)` on replica `r`.
    pub(super) fn report_memory(
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
    pub(super) fn complete(
        &mut self,
        r: u32,
        s: Slot,
        now: Ns,
        predictor: &mut dyn Predictor,
        observer: &mut dyn Observer,
    ) {
        let info = self.policy.describe(s);
        let req = self.reqs.remove(s);
        if let Some(b) = &mut self.exec {
            b.push_event(req.id, KvEventKind::Finish, req.blocks, req.host_blocks);
        }
        self.completed += 1;
        self.completed_tokens += req.output_tokens as u64;
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
            itl_max_ns: req.itl.max_ns,
            itl_p99_ns: req.itl.p99_ns(),
        });
    }

    pub(super) fn account_usage(&mut self, now: Ns) {
        let dt = now.saturating_sub(self.usage_at_ns) as u128;
        self.stats.kv_block_ns += dt * self.kv.used_blocks() as u128;
        self.stats.host_block_ns += dt * self.host.used_blocks() as u128;
        self.usage_at_ns = self.usage_at_ns.max(now);
    }

    /// Queue a copy of request `s` on the copy engine; returns when it starts and completes.
    pub(super) fn start_transfer(&mut self, s: Slot, dir: Direction, now: Ns) -> Result<(Ns, Ns)> {
        let req = self.reqs.get(s);
        let (blocks, host_blocks) = match dir {
            Direction::DeviceToHost => (req.blocks, req.host_blocks),
            Direction::HostToDevice => (req.offloaded_gpu_blocks, req.host_blocks),
        };
        let fp16_bytes = blocks as u64 * self.kv_block_bytes;
        let bytes = self.offload.wire_bytes(fp16_bytes);
        let secs = self.swap.transfer_s(dir, bytes, blocks) + self.offload.quant_s(fp16_bytes);
        let dur = duration_ns_ceil(secs).ok_or_else(|| {
            SimError::config(format!(
                "the swap model gives a copy of {blocks} KV blocks ({bytes} bytes) a time of {} s, which the simulated clock cannot hold: check the scenario's [swap] bandwidths (h2d_bytes_per_s, d2h_bytes_per_s), per-block and latency terms, or its swap profile",
                crate::error::num(secs)
            ))
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
        if let Some(b) = &mut self.exec {
            let kind = match dir {
                Direction::DeviceToHost => KvEventKind::SwapOut,
                Direction::HostToDevice => KvEventKind::SwapIn,
            };
            b.push_event(req.id, kind, blocks, host_blocks);
        }
        let mut req = self.reqs.get_mut(s);
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
                needed_blocks: blocks_for_tokens(q.kv_tokens_after_step() as u64, block_tokens)
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
