//! `mlfq` — naive multi-level feedback queue, and the level machinery that `skip-join-mlfq`
//! (FastServe) reuses.
//!
//! Every arrival joins the top level (0). Level p has quantum `base_quantum_s × ratio^p`. At each
//! iteration boundary the batch is formed in strict priority order (level 0 first, FIFO within a
//! level) under `max_batch_size`, `max_batch_tokens` and KV limits. Every request in a batch is
//! charged the whole iteration time. When a request's attained service at its level *exceeds* the
//! quantum it is demoted (one level, or — paper mode — to the first level whose quantum covers its
//! next iteration time) and its attained service resets. Requests that just ran go back to the
//! *front* of their level. Starvation: a queued request idle for at least `starvation_threshold_s`
//! is promoted to the front of level 0 (checked every `starvation_period_iterations`).
//!
//! Sources: Wu et al., "Fast Distributed Inference Serving for Large Language Models"
//! (arXiv 2305.05920), §4; official code LLMServe/FastServe `fastserve/scheduler.py` class `MLFQ`
//! (see `shared/docs/scheduling-papers.md` §1.3–1.4). Presets (every field overridable):
//!
//! | parameter | unit | `code` preset | `paper` preset |
//! |---|---|---|---|
//! | `base_quantum_s` | s | 0.010 (`MLFQ.__init__`: `base_quantum = 0.01`) | minimum iteration time (cost model: one decode, context 1) — see "The paper's q1" below |
//! | `ratio` | — | 2 | 2 |
//! | `max_levels` | levels | 0 = unbounded | 0 = unbounded |
//! | `demotion` | — | `one-level` | `cover-next-iteration` (η from the next iteration's time) |
//! | `starvation_threshold_s` | s | 3.0 | 0.3 (α, SLO-derived) |
//! | `starvation_period_iterations` | iterations | 1000 | 1 |
//! | `starvation_clock_from_zero` | — | true (code quirk: `last_step_time` starts at 0, so a never-run request counts as idle since t = 0) | false (idle since arrival) |
//! | `reset_attained_on_promotion` | — | false (code quirk) | true |
//! | `starvation_check` | — | `after-batch` (code: `get_next_batch` calls `prevent_starvation` after the batch is popped and its memory made; the batch's members are not in the queues, so they are not promoted) | `before-batch` (our choice; the paper does not say) |
//! | `misfit` | — | `stop` (no back-filling) | `skip` (our choice; the paper does not say) |
//! | `batch_memory` | — | `reserve` (code, see below) | `evict` (servesim's rule, unchanged) |
//! | `host_full` | — | `defer` (see below; the code has no path for a full host pool) | `recompute` (assumption; the paper does not say) |
//! | `preemption` | — | `swap` (host pool when it has room, else per `host_full`) | `swap` |
//! | `offload` | — | `proactive` (= `code`: FastServe `reserve_free_blocks`, swaps ordered by queue position) | `proactive` (kept so that existing scenarios do not change; select the paper's order with `offload = "paper"`) |
//! | `defer_new_below_host_free_frac` | — | 0.1 (code: a prefill-stage request is set aside while free host blocks < 10%) | 0.1 |
//! | `min_free_blocks` | blocks | 0 (reserve = max(max_batch_size, this)) | 0 |
//! | `requeue_reverses_batch` | — | true (code pushes each just-run request to the front in batch order) | false |
//! | `swap_in_window` | requests | 0 = none (`offload = "paper"` only: swap in proactively only among the first N in priority order; the code mode's window is the `max_batch_size` requests after the batch) | 0 |
//! | `chunked_prefill` | — | false (FastServe runs whole prefills) | false |
//! | `chunk_size` | tokens | `max_batch_tokens` (with `chunked_prefill`: the token budget of one iteration, decodes 1 each, prefill chunks in priority order; skip-join places a request by its first chunk's time) | same |
//!
//! `offload` values (with `preemption = "swap"` and a host pool): `reactive` (no reserve, no
//! swap-in ahead of time; swap out only to make room for a batch, swap in when scheduled, the
//! iteration waiting for the copy), `proactive` / `code` (FastServe's code: keep
//! `max(max_batch_size, min_free_blocks)` blocks free, swap queued requests in ahead of their
//! turn), `paper` (FastServe's paper: the same reserve, swaps ordered by ENST = min(T_promote,
//! T_execute), largest out first, smallest in first; see module `enst`; goes with
//! `batch_memory = "evict"`). Proactive copies overlap compute on the copy engines.
//!
//! **`batch_memory = "evict"`** — a candidate that needs KV blocks takes them, as it joins the
//! batch in priority order, from resident lower-priority requests (by swap when the host pool has
//! room, else recompute; [`super::common::form_priority_batch`]), then the `offload` pass runs.
//!
//! **`batch_memory = "reserve"`** — FastServe's `MLFQ.get_next_batch` + `reserve_free_blocks`
//! (`fastserve/scheduler.py`), module `reserve`:
//! 1. The batch is popped in priority order with only the size and token checks (`misfit`);
//!    a new prefill is passed over while the host pool is short (`defer_new_below_host_free_frac`).
//!    A request whose KV is being copied is passed over (the code would run it, its step waiting
//!    on the copy's event).
//! 2. need = the batch's extra blocks (a full prompt / full KV for a request off the GPU, the
//!    append blocks for a resident one); available = free + blocks of this policy's swap-outs still
//!    copying (the code's `get_num_avail_gpu_blocks` = free + swapping). If reserve + need >
//!    available, queued GPU-resident requests are swapped out **from the lowest priority up**
//!    until the deficit is covered, and only then batch members are dropped **from the batch's
//!    tail** (a GPU-resident one swapped out). servesim never drops the last member for the
//!    reserve alone (the code would, and then idle for ever; possible only on tiny GPU pools).
//! 3. Departure from the code: servesim's engine frees a swapped-out request's GPU blocks when its
//!    copy completes and cannot hold an iteration for a swap-out, so a member whose blocks come
//!    from a swap-out still copying waits for the next boundary (the code's iteration would wait
//!    for the copy, `_get_free_blocks` → `wait_for_all_swap_out`); the members that fit run now.
//! 4. When nothing was swapped out (and `offload = "proactive"`), the swap-in window: the
//!    `max_batch_size` queued requests **after** the popped batch, in priority order, each
//!    counting against the quota whether or not it is on the host; a host-resident one is swapped
//!    in when available ≥ reserve + need + its blocks (no stop at a misfit).
//! 5. The code also calls `reserve_free_blocks([])` after each step (`engine.py` `step` →
//!    `post_process`); servesim plans once per boundary (both calls happen between the same two
//!    iterations).
//!
//! **`host_full`** — a swap-out the host pool cannot take. The code never recomputes: its
//! `_get_free_blocks(CPU)` asserts and the engine stops (`fastserve/block_manager.py`); it only
//! defers new prefills while < 10 % of the host pool is free. `recompute`: the victim is preempted
//! by recompute instead. `defer` (what servesim does in the code's place): nobody is evicted
//! without host room; a batch member whose blocks would need such an eviction waits (the
//! high-priority request waits rather than evicting by recompute), a GPU-resident batch member
//! that cannot be swapped out stays in the batch, members are dropped only while the batch itself
//! does not fit (not for the reserve), and the places of the waiting members go to the next
//! GPU-resident queued requests in priority order (their decodes free memory as they finish). Only
//! if nothing at all could run and no copy is in flight (GPU and host full, every resident request
//! needing a new block — where the code would crash) is the lowest-priority resident request
//! recomputed, its blocks going to the resident requests in priority order. Without a host pool
//! (or with `preemption = "recompute"`) every eviction is a recompute.
//!
//! **Chunked prefill and recompute** (`batch_memory = "reserve"`, servesim's rule; the code has no
//! chunked prefill). A prefill under way holds the blocks of its chunks so far; MLFQ rotates the
//! batch among many such requests and demotion keeps moving the one with the most progress to the
//! lowest priority, so evicting "the lowest priority first" by recompute threw chunks away for
//! ever (a burst could preempt at every iteration and finish nothing). So, with chunked prefill, a
//! request is preempted by recompute only for a batch member that holds KV, needs more blocks and
//! **arrived before it**; a request yet to start takes no one's KV by recompute (it waits for free
//! blocks, or a swap). The earliest unfinished arrival that holds KV then never loses it, so its
//! chunks accumulate and it finishes: the run always moves on. A victim the rule spares is passed
//! over (a batch member it spares leaves the batch with its KV), and the places freed go to the
//! GPU-resident requests that fit (as under `host_full = "defer"`). When nothing at all can run
//! (see `host_full`), the victim is the latest arrival among the resident requests and a prefill
//! chunk shrinks to the blocks there are, so that the boundary always runs something. A member
//! the rule spares that needs no block stays in the batch (dropping it freed nothing, and the
//! back-fill passes over the popped batch: the plan could end up empty; round 8, 12), and if
//! the boundary still runs nothing, whatever fits in the free blocks runs in priority order, off
//! the GPU or not ([`Mlfq::run_what_fits`]).
//!
//! The same rule holds under `batch_memory = "evict"` (and so the paper preset), where a
//! candidate takes blocks from the lowest-priority resident requests as it joins
//! ([`super::common::RecomputeGuard`]; before, 16-token chunks at 200 blocks preempted at nearly
//! every iteration and 100 requests never finished; round 8, 03): a candidate holding KV passes
//! over the victims that arrived before it (they keep their KV and sit out this iteration), a
//! candidate yet to start takes no one's KV by recompute, a prefill chunk shrinks to the blocks
//! it got, and a candidate that still does not fit is skipped whatever `misfit` says. Each
//! recompute then serves an earlier arrival that runs in the same iteration, so the requests'
//! progress in arrival order only grows. A boundary at which nothing runs and nothing is in
//! progress falls back as under `reserve` (the latest resident arrival is recomputed for the
//! others; then what fits).
//!
//! The rule still thrashes by design when memory is over-committed (adversarial round 11, 05):
//! naive MLFQ shares the token budget among every queued prefill, each chunk that runs holds
//! blocks, and demotion sends it below the arrivals still waiting, so earlier arrivals keep
//! taking its KV by recompute and it is admitted again, a chunk at a time, while it waits for
//! them. The victims are always below their candidate and later than it, and every one ran since
//! it was last admitted (no eviction without progress), but the preemptions per request grow with
//! the burst (a 256-token budget on the a100's own pool: 0.8 per request at 2,500, 112 at 5,000,
//! 242 at 10,000), and so the run's events with its square. The run says so on stderr
//! ([`crate::metrics::Summary::thrash_warning`]); a burst is not judged for stability.
//!
//! **The paper's q1** (`preset = "paper"`). What is known of the paper's words
//! (`shared/docs/fidelity-facts.md` §5, secondary notes of arXiv v3 §4 and NSDI'26 Algorithm 1):
//! quanta q1 < … < qn with "each level's quantum 2× the previous one", "q1 set to the minimum
//! iteration time", and skip-join's "p_job = min i such that q_i ≥ init_time" with `init_time =
//! P.getNextIterTime(job)`. We keep q1 = the minimum iteration time of the scenario's cost model:
//! one decode at context 1, batch size 1 (the smallest iteration any job can have). Consequence:
//! a prefill of more than a token costs more than q1, so under skip-join **no arrival joins level
//! 0** (it joins the level of its prefill time); level 0 is then reached only through starvation
//! promotion ("promote to Q1"). We read this as the paper's intent rather than an accident: Q1 is
//! the level of jobs whose *next* iteration is a minimal one (decodes), skip-join exists precisely
//! so that a prefill does not start in a quantum it cannot finish, and the 2× ratio puts every
//! prefill within a factor of two of its level's quantum. Naive `mlfq` still admits every arrival
//! at level 0.
//!
//! `summary.json` `replicas[].mlfq_levels`: per level, arrivals that joined it, demotions into it
//! and starvation promotions out of it (these policies only).

mod absorb;
mod enst;
#[cfg(test)]
mod enst_tests;
#[cfg(test)]
mod evict_pass_tests;
mod evict_victims;
#[cfg(test)]
mod evict_victims_tests;
mod fit0;
#[cfg(test)]
mod fit0_tests;
mod lazy;
mod levels;
mod offload;
mod params;
mod pop_skip;
#[cfg(test)]
mod pop_skip_tests;
mod queues;
#[cfg(test)]
mod queues_tests;
#[cfg(test)]
mod reference;
mod reserve;
mod resident;
#[cfg(test)]
pub(crate) mod resident_tests;
mod starve;
#[cfg(test)]
mod starve_tests;
mod steady;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use params::{
    BatchMemory, Config, Demotion, HostFull, MisfitRule, Offload, Params, Preset, StarvationCheck,
    min_iteration_s,
};

use super::common::{Misfit, RecomputeGuard, chunk_budget, chunk_step, form_priority_batch_from};
use super::{
    FastForward, LevelCounts, Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice,
    ReplicaView, Steady, parse_params,
};
use crate::cost::{BatchShape, CostModel};
use crate::error::{Result, SimError};
use crate::vocab::request::{KvLoc, Slot};
use crate::vocab::time::Ns;
use lazy::Lazy;
use levels::Levels;

/// Unbounded levels are capped here (quantum 2^63 × base is beyond any run).
const LEVEL_CAP: u32 = 63;

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "mlfq",
    summary: "naive MLFQ: all arrivals join level 0, quantum base·ratio^p, demote on exhaustion, starvation promotion (preset code|paper)",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::SerialSwapIn, // FastServe's; see skip_join_mlfq.rs
    kv_layout: crate::swap::KvLayout::BlockMajor,
};

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (params, _) = parse_params::<Params>("mlfq", table)?;
    let mut cfg = params.resolve(false, env.cost.as_ref(), "mlfq")?;
    cfg.chunk_size = chunk_budget("mlfq", cfg.chunked_prefill, params.chunk_size, env.limits)?;
    let json = serde_json::to_value(&cfg).map_err(|e| SimError::config(e.to_string()))?;
    Ok((Box::new(Mlfq::new(cfg, env.cost.clone(), "mlfq")), json))
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    level: u32,
    attained_ns: Ns,
    last_step_ns: Ns,
    demotions: u32,
    promotions: u32,
}

/// The MLFQ mechanism shared by `mlfq` and `skip-join-mlfq`.
#[derive(Clone)]
pub struct Mlfq {
    cfg: Config,
    name: &'static str,
    cost: Arc<dyn CostModel>,
    state: Vec<State>,
    iterations: u64,
    /// Every queued request in priority order: level 0 first, front of each level first; level
    /// p is the deque of `State::level` p.
    order: Levels,
    /// Per slot: the request is in `ran_order` (it ran at least once since it arrived).
    ran: Vec<bool>,
    /// The subsequence of `order` of the requests that ran at least once: every request that
    /// holds KV or is not new is in it. The scans that pass over new requests (deferred, or
    /// looking for KV) walk it instead of `order`, so their work does not grow with the queue of
    /// requests that never ran.
    ran_order: Levels,
    /// The subsequence of `ran_order` of the requests that may hold GPU blocks (all that do, and
    /// some that no longer do): what the `batch_memory = "reserve"` eviction walks (module
    /// `resident`).
    resident: Levels,
    /// Per slot: the request is in `resident` (meaningful while `res_valid`).
    res: Vec<bool>,
    /// `resident` follows `ran_order` (else it is rebuilt before its next walk).
    res_valid: bool,
    /// Rebuilds of `resident`, and `ran_order` entries its swap-in joins looked at (work counts
    /// for tests).
    res_rebuilds: u64,
    res_looked: u64,
    /// The subsequence of `resident` of the requests not known to need a new block for their
    /// next step (module `fit0`), its per-slot membership, whether it follows `resident`, and
    /// its rebuilds (a work count for tests).
    fit0: Levels,
    f0: Vec<bool>,
    fit_valid: bool,
    fit_rebuilds: u64,
    fit_walks: u64,
    /// Queue entries [`Mlfq::backfill_resident`] looked at (a work count for tests).
    backfill_looked: u64,
    /// Candidates the `batch_memory = "evict"` formations took (a work count for tests).
    candidates_looked: u64,
    candidates_passed: u64,
    /// Requests those formations read to pass over candidates holding no KV (a work count for
    /// tests).
    kvless_read: u64,
    /// Requests their victim searches read (a work count for tests).
    victims_read: u64,
    /// Tests: form `evict` batches without passing over requests that never ran.
    #[cfg(test)]
    no_pass_kvless: bool,
    /// Tests: pass over them by the reference walk, reading each.
    #[cfg(test)]
    walk_kvless: bool,
    /// Tests: search victims by the reference walk of the window from the back, reading each.
    #[cfg(test)]
    walk_victims: bool,
    /// Tests: the guard's spared victims passed over one victim search at a time.
    #[cfg(test)]
    walk_spared: bool,
    /// Tests: evict by the reference walk of the whole `ran_order` instead of `resident`.
    #[cfg(test)]
    walk_ran_order: bool,
    /// Tests: `evict` formations search victims in `ran_order`, not `resident`.
    #[cfg(test)]
    victims_by_ran_order: bool,
    /// Scratch: `order` as one slice (the tests' reference `offload = "paper"` pass), or a level
    /// being rebuilt.
    flat: Vec<Slot>,
    /// Per slot: arrival sequence number (`fifo` keeps `order` sorted by it).
    arrival_seq: Vec<u64>,
    arrivals: u64,
    /// Queue entries the batch and memory scans looked at (a work count for tests).
    scanned: u64,
    /// Batch members whose extra KV blocks `reserve_pass` computed, and queue entries the
    /// proactive swap-in walk looked at (work counts for tests).
    blocks_looked: u64,
    ahead_looked: u64,
    /// The requests the last starvation check promoted (see module `starve`).
    block: starve::Block,
    starve: starve::Scratch,
    /// Queue entries the starvation checks looked at one by one (a work count for tests).
    starve_looked: u64,
    taken: Vec<bool>,
    /// Scratch: requeued requests grouped by their new level.
    requeued: Vec<Slot>,
    /// Queue entries [`Mlfq::requeue_batch`] looked at one by one (bulk copies aside): a work
    /// count for tests.
    requeue_touched: u64,
    /// Batch members [`Mlfq::requeue_batch`] marked in `taken` to search for them (a work count
    /// for tests: a batch that leaves its levels from their fronts is not marked).
    requeue_marks: u64,
    /// Set while a stepwise fast-forward is followed lazily (see [`Lazy`]).
    lazy: Lazy,
    /// `quantum_ns(p)` for every level (computed once: it is on every iteration's path).
    quantum_ns_table: Vec<Ns>,
    /// `quantum_s(p)` for every level (skip-join places each arrival by comparing with them).
    quantum_s_table: Vec<f64>,
    /// `offload = "paper"`: the ENST of the requests that hold KV, in priority order (scratch).
    scored: Vec<enst::Scored>,
    /// Scratch: the swap candidates of [`Mlfq::paper_offload`].
    cand: Vec<enst::Scored>,
    /// Queue entries the ENST pass looked at one by one (a work count for tests).
    enst_looked: u64,
    /// Per level: arrivals, demotions into it, starvation promotions out of it (`summary.json`).
    hist: Vec<LevelCounts>,
    /// Scratch: the batch popped at the last boundary (`batch_memory = "reserve"`).
    popped: Vec<Slot>,
    /// The prompts of the queued requests that never ran (module `pop_skip`).
    new_prompts: pop_skip::NewPrompts,
    /// Tests: pop by the walk of the whole `order` (the walk before `pop_skip`).
    #[cfg(test)]
    pop_by_walk: bool,
    /// This policy's swap-outs whose copy may still be in progress.
    swapping_out: Vec<Slot>,
    /// Scratch: the batch's slots for the starvation check.
    run_buf: Vec<Slot>,
}

impl Mlfq {
    pub fn new(cfg: Config, cost: Arc<dyn CostModel>, name: &'static str) -> Self {
        Mlfq {
            cfg,
            name,
            cost,
            state: Vec::new(),
            iterations: 0,
            order: Levels::default(),
            ran: Vec::new(),
            ran_order: Levels::default(),
            resident: Levels::default(),
            res: Vec::new(),
            res_valid: false,
            res_rebuilds: 0,
            res_looked: 0,
            fit0: Levels::default(),
            f0: Vec::new(),
            fit_valid: false,
            fit_rebuilds: 0,
            fit_walks: 0,
            backfill_looked: 0,
            candidates_looked: 0,
            candidates_passed: 0,
            kvless_read: 0,
            victims_read: 0,
            #[cfg(test)]
            no_pass_kvless: false,
            #[cfg(test)]
            walk_kvless: false,
            #[cfg(test)]
            walk_victims: false,
            #[cfg(test)]
            walk_spared: false,
            #[cfg(test)]
            walk_ran_order: false,
            #[cfg(test)]
            victims_by_ran_order: false,
            flat: Vec::new(),
            arrival_seq: Vec::new(),
            arrivals: 0,
            scanned: 0,
            blocks_looked: 0,
            ahead_looked: 0,
            block: starve::Block::default(),
            starve: starve::Scratch::default(),
            starve_looked: 0,
            taken: Vec::new(),
            requeued: Vec::new(),
            requeue_touched: 0,
            requeue_marks: 0,
            lazy: Lazy {
                bound_ns: i64::MAX,
                ..Lazy::default()
            },
            quantum_ns_table: Vec::new(),
            quantum_s_table: Vec::new(),
            scored: Vec::new(),
            cand: Vec::new(),
            enst_looked: 0,
            hist: (0..=LEVEL_CAP)
                .map(|level| LevelCounts {
                    level,
                    ..LevelCounts::default()
                })
                .collect(),
            popped: Vec::new(),
            new_prompts: pop_skip::NewPrompts::default(),
            #[cfg(test)]
            pop_by_walk: false,
            swapping_out: Vec::new(),
            run_buf: Vec::new(),
        }
        .with_quantum_table()
    }

    fn with_quantum_table(mut self) -> Self {
        self.quantum_s_table = (0..=LEVEL_CAP).map(|p| self.quantum_s(p)).collect();
        self.quantum_ns_table = (0..=LEVEL_CAP).map(|p| self.quantum_ns(p)).collect();
        self
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn max_level(&self) -> u32 {
        if self.cfg.max_levels == 0 {
            LEVEL_CAP
        } else {
            (self.cfg.max_levels - 1).min(LEVEL_CAP)
        }
    }

    /// Quantum of level `p` in seconds.
    pub fn quantum_s(&self, p: u32) -> f64 {
        match self.quantum_s_table.get(p as usize) {
            Some(&q) => q,
            None => self.cfg.base_quantum_s * self.cfg.ratio.powi(p as i32),
        }
    }

    /// Quantum of level `p` in whole nanoseconds (nearest; saturating), the unit attained service
    /// is counted in. Comparing in seconds would demote a request whose attained service equals
    /// the quantum whenever `base · ratio^p` rounds below its decimal value (e.g. 0.009 × 3).
    pub fn quantum_ns(&self, p: u32) -> Ns {
        (self.quantum_s(p) * 1e9).round() as Ns
    }

    /// The highest level (smallest p) whose quantum covers `t_s`.
    pub fn level_covering(&self, t_s: f64) -> u32 {
        let mut p = 0;
        while p < self.max_level() && self.quantum_s(p) < t_s {
            p += 1;
        }
        p
    }

    /// Put `s` (its state set) at the back of its level.
    fn push_back(&mut self, s: Slot) {
        let level = self.state[s as usize].level as usize;
        self.order.push_back(level, s);
    }

    /// Take `s` out of the queues (searched from the front of its level, where a request that
    /// just ran is).
    fn remove_from_order(&mut self, s: Slot) {
        self.leave_block(s);
        let level = self.state[s as usize].level as usize;
        self.order.remove(level, s);
        if self.has_run(s) {
            self.resident_remove(s, level);
            self.ran[s as usize] = false;
            self.ran_order.remove(level, s);
        }
    }

    #[cfg(test)]
    fn no_pass_kvless(&self) -> bool {
        self.no_pass_kvless
    }
    #[cfg(not(test))]
    fn no_pass_kvless(&self) -> bool {
        false
    }

    fn has_run(&self, s: Slot) -> bool {
        self.ran.get(s as usize) == Some(&true)
    }

    /// Per-slot tables for slots below `n`.
    fn ensure_ran(&mut self, n: usize) {
        if self.ran.len() < n {
            self.ran.resize(n, false);
            self.res.resize(n, false);
            self.arrival_seq.resize(n, 0);
            self.block.member.resize(n, false);
        }
    }

    /// Mark `batch` (queued, in `order` sorted by arrival: `fifo`) as having run.
    fn mark_ran_fifo(&mut self, batch: &[Slot]) {
        self.ensure_ran(self.state.len());
        self.resident_join_fifo(batch);
        for &s in batch {
            if self.ran[s as usize] {
                continue;
            }
            self.ran[s as usize] = true;
            let seq = &self.arrival_seq;
            let q = self
                .ran_order
                .level_mut(self.state[s as usize].level as usize);
            let at = q
                .as_slice()
                .partition_point(|&x| seq[x as usize] < seq[s as usize]);
            q.insert(at, s);
        }
    }

    /// The queue that the scans for requests that are not new walk: `ran_order` when new requests
    /// are passed over anyway, else `order`.
    fn scan_order(&self, skip_new: bool) -> &Levels {
        if skip_new {
            &self.ran_order
        } else {
            &self.order
        }
    }

    fn mark_taken(&mut self, slots: &[Slot], taken: bool) {
        if self.taken.len() < self.state.len() {
            self.taken.resize(self.state.len(), false);
        }
        for &s in slots {
            self.taken[s as usize] = taken;
        }
    }

    /// Tokens of the chunked-prefill budget the batch planned so far leaves (0 without chunking).
    fn tokens_left(&self, plan: &Plan) -> u32 {
        let Some(budget) = self.cfg.chunk_size else {
            return 0;
        };
        let used: u32 = plan.run.iter().map(|i| i.prefill_chunk_tokens.max(1)).sum();
        budget.saturating_sub(used)
    }

    /// The prefill chunk (0: whole prefill, or a decode) and the budget tokens `s` takes when
    /// it joins a batch with `tokens_left` budget tokens left; `None` when it does not fit.
    /// Without chunking: `(0, 0)`.
    fn step_for(&self, view: &ReplicaView, s: Slot, tokens_left: u32) -> Option<(u32, u32)> {
        match self.cfg.chunk_size {
            Some(_) => chunk_step(view.req(s), tokens_left),
            None => Some((0, 0)),
        }
    }

    fn prefill_time_s(&self, tokens: u32) -> f64 {
        let mut b = BatchShape::default();
        b.add_prefill(tokens);
        // A cost-model error here would already have failed the first iteration; treat as 0.
        self.cost.iteration_s(&b).unwrap_or(0.0)
    }

    fn decode_time_s(&self, context: u32) -> f64 {
        let mut b = BatchShape::default();
        b.add_decode(context);
        self.cost.iteration_s(&b).unwrap_or(0.0)
    }
}

impl Mlfq {
    /// Form this boundary's batch and memory plan (`batch_memory`).
    fn form_batch(&mut self, view: &ReplicaView, plan: &mut Plan) {
        let misfit = match self.cfg.misfit {
            MisfitRule::Stop => Misfit::Stop,
            MisfitRule::Skip => Misfit::Skip,
        };
        let defer_new = view.host_capacity_blocks() > 0
            && self.cfg.preemption == PreemptionChoice::Swap
            && (view.host_free_blocks() as f64)
                < self.cfg.defer_new_below_host_free_frac * view.host_capacity_blocks() as f64;
        if self.cfg.batch_memory == BatchMemory::Reserve {
            self.schedule_reserve(view, plan, defer_new);
            return;
        }
        // Deferred new requests are neither candidates nor victims (they hold no KV): the batch
        // formed over the requests that ran is the same.
        let guard = self.cfg.chunk_size.map(|_| RecomputeGuard {
            arrival_seq: &self.arrival_seq,
        });
        // Under the guard a candidate holding no KV may be passed over.
        let mut window = self.evict_window(guard.is_some(), defer_new);
        let mut free_after = form_priority_batch_from(
            view,
            &mut window,
            misfit,
            self.preemption(),
            defer_new,
            self.cfg.chunk_size,
            guard,
            plan,
        );
        let (looked, passed, read) = (window.looked, window.passed, window.read);
        let (victim_read, walks) = (window.victim_read, (window.read_low, window.read_high));
        let guarded = guard.is_some();
        let n = victim_read + read + looked.saturating_sub(plan.run.len());
        self.after_evict_walks(view, &walks, n);
        self.candidates_looked += looked as u64;
        self.candidates_passed += passed as u64;
        self.kvless_read += read as u64;
        self.victims_read += victim_read as u64;
        if guarded
            && plan.run.is_empty()
            && plan.preempt.is_empty()
            && self.order.iter().next().is_some()
            && self.nothing_in_progress(view)
        {
            // The guard kept every candidate from memory (each needs blocks that only a
            // recompute the guard forbids would free): as under `batch_memory = "reserve"`.
            self.unstick_chunked(view, plan);
            let used: u32 = plan.run.iter().map(|i| view.extra_blocks_for_item(i)).sum();
            let freed: u32 = plan.preempt.iter().map(|&(s, _)| view.req(s).blocks).sum();
            free_after = (view.free_blocks() + freed).saturating_sub(used);
        }
        self.proactive(view, plan, free_after);
    }
}

impl Policy for Mlfq {
    fn name(&self) -> &'static str {
        self.name
    }

    fn chunks_prefill(&self) -> bool {
        self.cfg.chunk_size.is_some()
    }

    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let r = view.req(s);
        let level = if self.cfg.skip_join {
            // The level whose quantum covers its first iteration: under chunked prefill, the
            // first chunk (as large as the whole token budget).
            let first = match self.cfg.chunk_size {
                Some(budget) => r.input_tokens.min(budget),
                None => r.input_tokens,
            };
            self.level_covering(self.prefill_time_s(first))
        } else {
            0
        };
        if self.state.len() <= s as usize {
            self.state.resize(s as usize + 1, State::default());
        }
        self.state[s as usize] = State {
            level,
            attained_ns: 0,
            last_step_ns: if self.cfg.starvation_clock_from_zero {
                0
            } else {
                view.now_ns
            },
            demotions: 0,
            promotions: 0,
        };
        self.hist[level as usize].arrivals += 1;
        self.ensure_ran(s as usize + 1);
        self.ran[s as usize] = false;
        self.res[s as usize] = false;
        if self.in_fit0(s) {
            // A reused slot still in `fit0`: rebuilt before its next walk.
            self.f0[s as usize] = false;
            self.fit_valid = false;
        }
        debug_assert!(!self.block.member[s as usize]);
        self.arrival_seq[s as usize] = self.arrivals;
        if self.cfg.misfit == MisfitRule::Skip && self.cfg.chunk_size.is_none() {
            // Only `pop_walk`'s indexed path reads (and prunes) it: kept for every arrival
            // of other configurations it held 10⁷ entries at the end of a 10⁷-request run.
            self.new_prompts.push(s, r.input_tokens, self.arrivals);
        }
        self.arrivals += 1;
        self.enqueue_arrival(s);
        Ok(())
    }

    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        self.materialize();
        plan.clear();
        self.iterations += 1;
        let check = self
            .iterations
            .is_multiple_of(self.cfg.starvation_period_iterations);
        if check && self.cfg.starvation_check == StarvationCheck::BeforeBatch {
            self.starvation_check(view.now_ns, &[]);
        }
        self.form_batch(view, plan);
        self.resident_join_swap_ins(plan);
        if check && self.cfg.starvation_check == StarvationCheck::AfterBatch {
            // FastServe's `get_next_batch` ends with `prevent_starvation` over the queues the
            // batch was popped from: the batch's members are not promoted.
            let mut run = std::mem::take(&mut self.run_buf);
            run.clear();
            run.extend(plan.run.iter().map(|i| i.slot));
            self.starvation_check(view.now_ns, &run);
            self.run_buf = run;
        }
    }

    fn on_iteration_end(&mut self, batch: &[Slot], duration_ns: Ns, view: &ReplicaView) {
        if self.lazy.active
            && self.cfg.requeue_reverses_batch
            && self.cfg.demotion == Demotion::OneLevel
        {
            // The run's last iteration: its batch is every request followed lazily but the
            // fresh arrivals.
            debug_assert_eq!(
                batch.len() + self.lazy.fresh_slots.len(),
                self.lazy
                    .levels
                    .iter()
                    .map(levels::Level::len)
                    .sum::<usize>()
            );
            self.requeue_lazy(duration_ns, view.now_ns);
            return;
        }
        self.materialize();
        if batch.is_empty() {
            return;
        }
        if self.cfg.fifo {
            // `fcfs-swap`: one level, arrival order kept (nobody moves to the front).
            for &s in batch {
                let st = &mut self.state[s as usize];
                st.attained_ns += duration_ns;
                st.last_step_ns = view.now_ns;
            }
            self.mark_ran_fifo(batch);
            return;
        }
        self.requeue_batch(batch, duration_ns, view.now_ns, |s| view.req(s).kv_tokens);
    }

    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        if self.lazy.active {
            let p = self.state[s as usize].level as usize;
            self.lazy.remove(p, s);
            self.lazy.version[s as usize] += 1;
            return;
        }
        self.remove_from_order(s);
    }

    fn level_counts(&self) -> Option<Vec<LevelCounts>> {
        // Every level up to the lowest one anything reached (the rest are all zeros).
        let used = self
            .hist
            .iter()
            .rposition(|c| c.arrivals + c.demotions_in + c.promotions_out > 0)
            .map_or(1, |p| p + 1);
        Some(self.hist[..used].to_vec())
    }

    fn describe(&self, s: Slot) -> PolicyInfo {
        let st = &self.state[s as usize];
        PolicyInfo {
            priority: st.level as f64,
            demotions: st.demotions,
            promotions: st.promotions,
        }
    }
}
