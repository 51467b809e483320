//! What the engine reports: the [`Observer`] trait and the records it receives.

use crate::cost::BatchShape;
use crate::swap::Direction;
use crate::vocab::request::KvLoc;
use crate::vocab::time::Ns;

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
    /// The longest gap between two consecutive output tokens (0 with fewer than 2 tokens).
    pub itl_max_ns: Ns,
    /// The nearest-rank p99 of those gaps, exact (0 with fewer than 2 tokens).
    pub itl_p99_ns: Ns,
}

/// Receives what happens during a run (metrics, progress, traces of iterations).
pub trait Observer {
    fn on_completion(&mut self, c: &Completion);
    fn on_iteration(&mut self, _replica: u32, _start_ns: Ns, _end_ns: Ns, _shape: &BatchShape) {}
    /// One replica's KV state at `sample.time_ns`, an exact multiple of
    /// [`EngineConfig::kv_sample_interval_ns`](super::EngineConfig::kv_sample_interval_ns): the state after every event stamped ≤ that time.
    /// Samples cover `0, I, 2I, …` up to the last event; they add no events to the run.
    fn on_kv_sample(&mut self, _sample: &KvSample) {}
    /// Whether more KV samples are wanted: once it says no, the engine produces none for the
    /// rest of the run (a capped timeline costs nothing past its cap).
    fn wants_kv_samples(&self) -> bool {
        true
    }
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
    /// Arrivals a fast-forward took into its batch without stopping (a speed statistic, not an
    /// output).
    pub ff_absorbed_arrivals: u64,
    /// Boundaries at which a fast-forward took arrivals in (one or more each; a speed statistic).
    pub ff_absorbing_boundaries: u64,
    /// Replica loads the router read, over every decision (a speed statistic, not an output).
    pub route_loads_read: u64,
    /// Replicas reported changed to the router, over every decision (every replica at the first).
    pub route_changed: u64,
    /// Every gap between consecutive output tokens of every request (ITL, vLLM's pooled
    /// definition), the replicas' sketches merged in replica order.
    pub itl: crate::vocab::sketch::GapSketch,
}
