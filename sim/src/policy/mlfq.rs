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
//! | `base_quantum_s` | s | 0.010 | minimum iteration time (cost model: one decode, context 1) |
//! | `ratio` | — | 2 | 2 |
//! | `max_levels` | levels | 0 = unbounded | 0 = unbounded |
//! | `demotion` | — | `one-level` | `cover-next-iteration` (η from the next iteration's time) |
//! | `starvation_threshold_s` | s | 3.0 | 0.3 (α, SLO-derived) |
//! | `starvation_period_iterations` | iterations | 1000 | 1 |
//! | `starvation_clock_from_zero` | — | true (code quirk: `last_step_time` starts at 0, so a never-run request counts as idle since t = 0) | false (idle since arrival) |
//! | `reset_attained_on_promotion` | — | false (code quirk) | true |
//! | `misfit` | — | `stop` (no back-filling) | `skip` (our choice; the paper does not say) |
//! | `preemption` | — | `swap` (host pool when it has room, else recompute) | `swap` |
//! | `offload` | — | `proactive` (= `code`: FastServe `reserve_free_blocks`, swaps ordered by queue position) | `proactive` (kept so that existing scenarios do not change; select the paper's order with `offload = "paper"`) |
//! | `defer_new_below_host_free_frac` | — | 0.1 (code: a prefill-stage request is set aside while free host blocks < 10%) | 0.1 |
//! | `min_free_blocks` | blocks | 0 (reserve = max(max_batch_size, this)) | 0 |
//! | `requeue_reverses_batch` | — | true (code pushes each just-run request to the front in batch order) | false |
//! | `swap_in_window` | requests | 0 = none (`offload = "paper"` only: swap in proactively only among the first N in priority order; the code mode's implicit window is `max_batch_size`) | 0 |
//!
//! `offload` values (with `preemption = "swap"` and a host pool): `reactive` (swap out only to
//! make room for a batch, swap in when scheduled, the iteration waiting for the copy),
//! `proactive` / `code` (FastServe's code: keep `max(max_batch_size, min_free_blocks)` blocks
//! free by swapping out the lowest-queued requests, swap the next ones in ahead of their turn),
//! `paper` (FastServe's paper: the same reserve, swaps ordered by ENST = min(T_promote,
//! T_execute), largest out first, smallest in first; see [`Mlfq::enst_s`]). Both proactive modes
//! overlap their copies with compute on the copy engines.
//!
//! Preemption under memory pressure: a higher-priority request that needs KV blocks takes them
//! from resident lower-priority requests, by swap when the host pool has room, else recompute.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::PreemptMode;
use super::common::{Misfit, OffloadTarget, form_priority_batch, score_offload};
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, RunItem,
    Steady, parse_params,
};
use crate::cost::{BatchShape, CostModel};
use crate::engine::request::{KvLoc, Slot};
use crate::engine::time::{Ns, ns_to_s};
use crate::error::{Result, SimError};

/// Unbounded levels are capped here (quantum 2^63 × base is beyond any run).
const LEVEL_CAP: u32 = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Code,
    Paper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Demotion {
    OneLevel,
    CoverNextIteration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MisfitRule {
    Stop,
    Skip,
}

/// Scenario parameters (`[policies.mlfq]` / `[policies.skip-join-mlfq]`): a preset plus overrides.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub preset: Preset,
    pub base_quantum_s: Option<f64>,
    pub ratio: Option<f64>,
    pub max_levels: Option<u32>,
    pub demotion: Option<Demotion>,
    pub starvation_threshold_s: Option<f64>,
    pub starvation_period_iterations: Option<u64>,
    pub starvation_clock_from_zero: Option<bool>,
    pub reset_attained_on_promotion: Option<bool>,
    pub misfit: Option<MisfitRule>,
    pub requeue_reverses_batch: Option<bool>,
    pub preemption: Option<PreemptionChoice>,
    pub offload: Option<Offload>,
    pub min_free_blocks: Option<u32>,
    pub defer_new_below_host_free_frac: Option<f64>,
    pub swap_in_window: Option<u32>,
}

/// How host memory is used (with `preemption = "swap"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// Swap out only to make room for a batch; swap in when a host-resident request is
    /// scheduled (the iteration waits for the copy).
    Reactive,
    /// FastServe's `reserve_free_blocks`: keep `max(max_batch_size, min_free_blocks)` GPU blocks
    /// free by swapping out the lowest-priority resident requests; when no swap-out happened at a
    /// boundary, swap in host-resident requests among the next `max_batch_size` in priority order
    /// ahead of their turn, overlapped with compute. Also accepted as `code`.
    #[serde(alias = "code")]
    Proactive,
    /// FastServe paper: the same reserve, but swaps are ordered by the Estimated Next Scheduled
    /// Time `ENST = min(T_promote, T_execute)` — largest ENST swapped out first, smallest swapped
    /// in first — overlapped with compute ([`Mlfq::enst_s`], [`super::common::score_offload`]).
    Paper,
}

/// The concrete configuration (recorded in `config.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Config {
    pub preset: Preset,
    pub skip_join: bool,
    pub base_quantum_s: f64,
    pub ratio: f64,
    pub max_levels: u32,
    pub demotion: Demotion,
    pub starvation_threshold_s: f64,
    pub starvation_period_iterations: u64,
    pub starvation_clock_from_zero: bool,
    pub reset_attained_on_promotion: bool,
    pub misfit: MisfitRule,
    pub requeue_reverses_batch: bool,
    pub preemption: PreemptionChoice,
    pub offload: Offload,
    pub min_free_blocks: u32,
    pub defer_new_below_host_free_frac: f64,
    /// `offload = "paper"`: proactive swap-ins only among the first N requests in priority order
    /// (0 = no window, the default: the paper states none). Left out of `config.json` when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub swap_in_window: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Time of the smallest possible iteration: one decode with a one-token context.
pub fn min_iteration_s(cost: &dyn CostModel) -> Result<f64> {
    let mut s = BatchShape::default();
    s.add_decode(1);
    cost.iteration_s(&s)
}

impl Params {
    pub fn resolve(&self, skip_join: bool, cost: &dyn CostModel, policy: &str) -> Result<Config> {
        let code = self.preset == Preset::Code;
        let base = match self.base_quantum_s {
            Some(b) => b,
            None if code => 0.010,
            None => min_iteration_s(cost)?,
        };
        let c =
            Config {
                preset: self.preset,
                skip_join,
                base_quantum_s: base,
                ratio: self.ratio.unwrap_or(2.0),
                max_levels: self.max_levels.unwrap_or(0),
                demotion: self.demotion.unwrap_or(if code {
                    Demotion::OneLevel
                } else {
                    Demotion::CoverNextIteration
                }),
                starvation_threshold_s: self.starvation_threshold_s.unwrap_or(if code {
                    3.0
                } else {
                    0.3
                }),
                starvation_period_iterations: self
                    .starvation_period_iterations
                    .unwrap_or(if code { 1000 } else { 1 }),
                starvation_clock_from_zero: self.starvation_clock_from_zero.unwrap_or(code),
                reset_attained_on_promotion: self.reset_attained_on_promotion.unwrap_or(!code),
                misfit: self.misfit.unwrap_or(if code {
                    MisfitRule::Stop
                } else {
                    MisfitRule::Skip
                }),
                requeue_reverses_batch: self.requeue_reverses_batch.unwrap_or(code),
                preemption: self.preemption.unwrap_or(PreemptionChoice::Swap),
                offload: self.offload.unwrap_or(Offload::Proactive),
                min_free_blocks: self.min_free_blocks.unwrap_or(0),
                defer_new_below_host_free_frac: self.defer_new_below_host_free_frac.unwrap_or(0.1),
                swap_in_window: self.swap_in_window.unwrap_or(0),
            };
        let bad = |m: String| SimError::config(format!("[policies.{policy}] {m}"));
        if !(c.base_quantum_s.is_finite() && c.base_quantum_s > 0.0) {
            return Err(bad(format!(
                "base_quantum_s must be > 0, got {}",
                c.base_quantum_s
            )));
        }
        if !(c.ratio.is_finite() && c.ratio >= 1.0) {
            return Err(bad(format!("ratio must be ≥ 1, got {}", c.ratio)));
        }
        if !(c.starvation_threshold_s.is_finite() && c.starvation_threshold_s > 0.0) {
            return Err(bad("starvation_threshold_s must be > 0".into()));
        }
        if c.starvation_period_iterations == 0 {
            return Err(bad("starvation_period_iterations must be ≥ 1".into()));
        }
        Ok(c)
    }
}

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
    let cfg = params.resolve(false, env.cost.as_ref(), "mlfq")?;
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

/// For the requests of the order met front to back: whether each is in `run` (formed from the
/// order in order, so a subsequence of it: the two are walked together) or marked in `taken`.
fn plan_members<'a>(run: &'a [RunItem], taken: &'a [bool]) -> impl FnMut(Slot) -> bool + 'a {
    let mut j = 0;
    move |s| {
        if j < run.len() && run[j].slot == s {
            j += 1;
            true
        } else {
            taken[s as usize]
        }
    }
}

/// A quantum as a signed threshold (quanta past `i64::MAX` ns — 292 years — are never reached).
fn quantum_i64(q: Ns) -> i64 {
    q.min(i64::MAX as Ns) as i64
}

/// MLFQ followed through a stepwise fast-forward (the batch holds every queued request, so each
/// boundary requeues everyone). Instead of rebuilding the order at every boundary, each level is a
/// deque read front to back or back to front (`rev[p] ^ parity`: a boundary that reverses every
/// level's batch segment — `requeue_reverses_batch` — flips `parity`), attained service is
/// `State::attained_ns + service_ns − since_ns[s]`, and the next demotions come off a heap of
/// thresholds on `service_ns`. A boundary then costs O(log n) plus its demotions; the order and the
/// attained service are written back ([`Mlfq::materialize`]) before anything else reads them.
#[derive(Default, Clone)]
struct Lazy {
    active: bool,
    levels: Vec<VecDeque<Slot>>,
    rev: Vec<bool>,
    parity: bool,
    /// Summed durations of the boundaries followed (every request ran in each).
    service_ns: Ns,
    steps: u64,
    last_ns: Ns,
    /// Per slot: `service_ns` when its attained service was last reset (or the run began).
    since_ns: Vec<Ns>,
    /// Per slot: version of its heap entry (older entries are stale).
    version: Vec<u32>,
    /// `(threshold, slot << 32 | version)`: demoted once `service_ns` exceeds `threshold`. Only
    /// thresholds below `bound_ns` (the run cannot reach the others) are kept.
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    bound_ns: i64,
    /// Scratch: `(level, position in the level, slot)` of this boundary's demotions.
    demoted: Vec<(u32, usize, Slot)>,
    /// Per slot: arrived after the run's last boundary (queued at its level's back, never run).
    fresh: Vec<bool>,
    fresh_slots: Vec<Slot>,
    /// Scratch for [`Mlfq::requeue_lazy`].
    into: Vec<Slot>,
    out: Vec<Slot>,
    tail: Vec<Slot>,
}

impl Lazy {
    /// Stop following: empty levels, no fresh arrivals, nothing reversed, no bound.
    fn finish(&mut self) {
        for q in &mut self.levels {
            q.clear();
        }
        for &s in &self.fresh_slots {
            self.fresh[s as usize] = false;
        }
        self.fresh_slots.clear();
        self.rev.fill(false);
        self.parity = false;
        self.active = false;
        self.bound_ns = i64::MAX;
    }
    /// Per-slot tables for slots below `n`.
    fn ensure_slots(&mut self, n: usize) {
        if self.since_ns.len() < n {
            self.since_ns.resize(n, 0);
            self.version.resize(n, 0);
            self.fresh.resize(n, false);
        }
    }
    /// The heap entry of `s`, if its run can reach `threshold`.
    fn push_threshold(&mut self, threshold: i64, s: Slot) {
        if threshold < self.bound_ns {
            let key = (s as u64) << 32 | self.version[s as usize] as u64;
            self.heap.push(Reverse((threshold, key)));
        }
    }
    fn reversed(&self, p: usize) -> bool {
        self.rev[p] ^ self.parity
    }
    fn push_back(&mut self, p: usize, s: Slot) {
        if self.reversed(p) {
            self.levels[p].push_front(s);
        } else {
            self.levels[p].push_back(s);
        }
    }
    fn push_front(&mut self, p: usize, s: Slot) {
        if self.reversed(p) {
            self.levels[p].push_back(s);
        } else {
            self.levels[p].push_front(s);
        }
    }
    fn remove(&mut self, p: usize, s: Slot) {
        let q = &mut self.levels[p];
        if let Some(i) = q.iter().position(|&x| x == s) {
            q.remove(i);
        }
    }
}

/// The MLFQ mechanism shared by `mlfq` and `skip-join-mlfq`.
#[derive(Clone)]
pub struct Mlfq {
    cfg: Config,
    name: &'static str,
    cost: Arc<dyn CostModel>,
    state: Vec<State>,
    iterations: u64,
    /// Every queued request in priority order: level 0 first, front of each level first (so
    /// sorted by level). The levels are its runs of equal `State::level`.
    order: Vec<Slot>,
    /// Scratch for rebuilding `order` (double buffer).
    next_order: Vec<Slot>,
    /// Scratch: requeued requests grouped by their new level.
    requeued: Vec<Slot>,
    promote_buf: Vec<Slot>,
    taken: Vec<bool>,
    /// Scratch for [`Mlfq::requeue_batch`]: the batch's new states.
    new_states: Vec<State>,
    /// Queue entries [`Mlfq::requeue_batch`] looked at one by one (bulk copies aside): a work
    /// count for tests.
    requeue_touched: u64,
    /// Set while a stepwise fast-forward is followed lazily (see [`Lazy`]).
    lazy: Lazy,
    /// `quantum_ns(p)` for every level (computed once: it is on every iteration's path).
    quantum_ns_table: Vec<Ns>,
    scores: Vec<f64>,
}

impl Mlfq {
    pub fn new(cfg: Config, cost: Arc<dyn CostModel>, name: &'static str) -> Self {
        Mlfq {
            cfg,
            name,
            cost,
            state: Vec::new(),
            iterations: 0,
            order: Vec::new(),
            next_order: Vec::new(),
            requeued: Vec::new(),
            promote_buf: Vec::new(),
            taken: Vec::new(),
            new_states: Vec::new(),
            requeue_touched: 0,
            lazy: Lazy {
                bound_ns: i64::MAX,
                ..Lazy::default()
            },
            quantum_ns_table: Vec::new(),
            scores: Vec::new(),
        }
        .with_quantum_table()
    }

    fn with_quantum_table(mut self) -> Self {
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
        self.cfg.base_quantum_s * self.cfg.ratio.powi(p as i32)
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
        let level = self.state[s as usize].level;
        let state = &self.state;
        let at = self
            .order
            .partition_point(|&x| state[x as usize].level <= level);
        self.order.insert(at, s);
    }

    fn remove_from_order(&mut self, s: Slot) {
        let level = self.state[s as usize].level;
        let state = &self.state;
        let from = self
            .order
            .partition_point(|&x| state[x as usize].level < level);
        if let Some(i) = self.order[from..].iter().position(|&x| x == s) {
            self.order.remove(from + i);
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

    fn starvation_check(&mut self, now: Ns) {
        // Nearest, not truncated: 1.001 s × 1e9 = 1000999999.9999999 must not fire 1 ns early.
        let threshold_ns = (self.cfg.starvation_threshold_s * 1e9).round() as Ns;
        self.promote_buf.clear();
        for &s in &self.order {
            let st = &self.state[s as usize];
            if now.saturating_sub(st.last_step_ns) >= threshold_ns {
                self.promote_buf.push(s);
            }
        }
        if self.promote_buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.promote_buf);
        self.mark_taken(&buf, true);
        let reset = self.cfg.reset_attained_on_promotion;
        for &s in &buf {
            let st = &mut self.state[s as usize];
            if st.level > 0 {
                st.promotions += 1;
            }
            st.level = 0;
            if reset {
                st.attained_ns = 0;
            }
        }
        // As `requeue_batch`: pushed one at a time to the front of level 0 in queue order with
        // `requeue_reverses_batch` (so the last one pushed comes first), else in reverse order.
        let mut next = std::mem::take(&mut self.next_order);
        next.clear();
        if self.cfg.requeue_reverses_batch {
            next.extend(buf.iter().rev());
        } else {
            next.extend_from_slice(&buf);
        }
        let taken = &self.taken;
        next.extend(self.order.iter().filter(|&&x| !taken[x as usize]));
        self.next_order = std::mem::replace(&mut self.order, next);
        self.mark_taken(&buf, false);
        self.promote_buf = buf;
    }
}

impl Mlfq {
    /// Charge every request of `batch` the iteration that ended at `now`, demote those past
    /// their quantum, and put each back at the front of its level: one at a time in batch order
    /// (so the level's front ends up reversed) with `requeue_reverses_batch`, else in reverse batch
    /// order. `kv_tokens(s)` is the request's KV length after the iteration (paper-mode demotion
    /// sizes the next iteration from it).
    ///
    /// The new order is, level by level, that level's requeued requests followed by its other
    /// members in their old order. Only the levels up to the highest new level of the batch
    /// change (demotion only lowers priority, so that covers every batch member's old level too):
    /// that prefix is rebuilt from runs found by binary search and copied in bulk; within a level
    /// that held batch members, only the entries up to its last batch member are looked at one by
    /// one (they were requeued at its front, so that is usually a few).
    fn requeue_batch(
        &mut self,
        batch: &[Slot],
        duration_ns: Ns,
        now: Ns,
        kv_tokens: impl Fn(Slot) -> u32,
    ) {
        if batch.is_empty() {
            return;
        }
        let max_level = self.max_level();
        // New states (written back once the old order's level runs are found), how many requests
        // land at each new level, and how many leave each old level.
        let mut count = [0u32; LEVEL_CAP as usize + 2];
        let mut leaving = [0u32; LEVEL_CAP as usize + 1];
        let mut top = 0usize;
        let mut new_states = std::mem::take(&mut self.new_states);
        new_states.clear();
        for &s in batch {
            let mut st = self.state[s as usize];
            leaving[st.level as usize] += 1;
            st.attained_ns += duration_ns;
            st.last_step_ns = now;
            if st.attained_ns > self.quantum_ns_table[st.level as usize] && st.level < max_level {
                st.level = match self.cfg.demotion {
                    Demotion::OneLevel => st.level + 1,
                    Demotion::CoverNextIteration => {
                        let t = self.decode_time_s(kv_tokens(s) + 1);
                        let mut p = st.level + 1;
                        while p < max_level && self.quantum_s(p) < t {
                            p += 1;
                        }
                        p
                    }
                };
                st.attained_ns = 0;
                st.demotions += 1;
            }
            new_states.push(st);
            count[st.level as usize + 1] += 1;
            top = top.max(st.level as usize);
        }
        // Old runs: level p is `self.order[start[p]..start[p + 1]]` (the order is sorted by level).
        let mut start = [0usize; LEVEL_CAP as usize + 2];
        {
            let (order, state) = (&self.order, &self.state);
            for (p, at) in start.iter_mut().enumerate().take(top + 2).skip(1) {
                *at = order.partition_point(|&x| (state[x as usize].level as usize) < p);
            }
        }
        let bound = start[top + 1];
        for (&s, st) in batch.iter().zip(&new_states) {
            self.state[s as usize] = *st;
        }
        self.new_states = new_states;
        // Group by new level (counting sort): `count[p]..count[p + 1]` is level p's group.
        for p in 1..=top + 1 {
            count[p] += count[p - 1];
        }
        let mut fill = count;
        self.requeued.clear();
        self.requeued.resize(batch.len(), 0);
        let reverses = self.cfg.requeue_reverses_batch;
        for &s in batch {
            let p = self.state[s as usize].level as usize;
            self.requeued[fill[p] as usize] = s;
            fill[p] += 1;
        }
        if reverses {
            for p in 0..=top {
                self.requeued[count[p] as usize..count[p + 1] as usize].reverse();
            }
        }
        self.mark_taken(batch, true);
        let mut next = std::mem::take(&mut self.next_order);
        next.clear();
        for p in 0..=top {
            next.extend_from_slice(&self.requeued[count[p] as usize..count[p + 1] as usize]);
            let run = &self.order[start[p]..start[p + 1]];
            let mut left = leaving[p];
            let mut i = 0;
            while left > 0 && i < run.len() {
                let x = run[i];
                if self.taken[x as usize] {
                    left -= 1;
                } else {
                    next.push(x);
                }
                i += 1;
            }
            self.requeue_touched += i as u64;
            next.extend_from_slice(&run[i..]);
        }
        self.mark_taken(batch, false);
        if next.len() == bound {
            self.order[..bound].copy_from_slice(&next);
            self.next_order = next;
        } else {
            // A batch member was not queued (cannot happen: finished requests leave the batch):
            // keep everything, as a full rebuild would.
            debug_assert!(false, "every batch member is queued");
            next.extend_from_slice(&self.order[bound..]);
            self.next_order = std::mem::replace(&mut self.order, next);
        }
    }

    /// Start following a stepwise fast-forward lazily (the order is the batch).
    fn lazy_begin(&mut self) {
        let max_level = self.max_level();
        let lz = &mut self.lazy;
        lz.active = true;
        lz.parity = false;
        lz.service_ns = 0;
        lz.steps = 0;
        if lz.levels.is_empty() {
            lz.levels = (0..=LEVEL_CAP).map(|_| VecDeque::new()).collect();
            lz.rev = vec![false; LEVEL_CAP as usize + 1];
        }
        lz.ensure_slots(self.state.len());
        let mut heap = std::mem::take(&mut lz.heap).into_vec();
        heap.clear();
        // The order is sorted by level: each level is one run of it.
        let mut from = 0;
        for (i, &s) in self.order.iter().enumerate() {
            let st = &self.state[s as usize];
            if i + 1 == self.order.len() || self.state[self.order[i + 1] as usize].level != st.level
            {
                lz.levels[st.level as usize].extend(&self.order[from..=i]);
                from = i + 1;
            }
            lz.since_ns[s as usize] = 0;
            if st.level < max_level {
                let threshold = quantum_i64(self.quantum_ns_table[st.level as usize])
                    .saturating_sub(st.attained_ns.min(i64::MAX as Ns) as i64);
                if threshold < lz.bound_ns {
                    let key = (s as u64) << 32 | lz.version[s as usize] as u64;
                    heap.push(Reverse((threshold, key)));
                }
            }
        }
        lz.heap = BinaryHeap::from(heap);
    }

    /// One boundary of the lazily followed fast-forward: what [`Mlfq::requeue_batch`] does with
    /// the batch = every queued request.
    fn lazy_step(&mut self, duration_ns: Ns, now: Ns, kv_tokens: impl Fn(Slot) -> u32) {
        let max_level = self.max_level();
        let reverses = self.cfg.requeue_reverses_batch;
        let lz = &mut self.lazy;
        lz.service_ns += duration_ns;
        lz.steps += 1;
        lz.last_ns = now;
        let service = lz.service_ns.min(i64::MAX as Ns) as i64;
        lz.demoted.clear();
        while let Some(&Reverse((threshold, key))) = lz.heap.peek() {
            if service <= threshold {
                break;
            }
            lz.heap.pop();
            let (s, version) = ((key >> 32) as Slot, key as u32);
            if version != lz.version[s as usize] {
                continue;
            }
            let p = self.state[s as usize].level as usize;
            let q = &lz.levels[p];
            let i = q
                .iter()
                .position(|&x| x == s)
                .expect("a lazily followed request is queued at its level");
            let at = if lz.reversed(p) { q.len() - 1 - i } else { i };
            lz.demoted.push((p as u32, at, s));
        }
        if reverses {
            // Every level's requests are requeued one by one at its front: reversed.
            lz.parity = !lz.parity;
        }
        if lz.demoted.is_empty() {
            return;
        }
        // In the old order (level, then position), as the requeue meets them.
        lz.demoted.sort_unstable();
        let mut demoted = std::mem::take(&mut lz.demoted);
        for &(p, _, s) in &demoted {
            lz.remove(p as usize, s);
        }
        for d in demoted.iter_mut() {
            let (p, _, s) = *d;
            let next = match self.cfg.demotion {
                Demotion::OneLevel => p + 1,
                Demotion::CoverNextIteration => {
                    let t = self.decode_time_s(kv_tokens(s) + 1);
                    let mut level = p + 1;
                    while level < max_level && self.quantum_s(level) < t {
                        level += 1;
                    }
                    level
                }
            };
            let st = &mut self.state[s as usize];
            st.level = next;
            st.attained_ns = 0;
            st.demotions += 1;
            let lz = &mut self.lazy;
            lz.since_ns[s as usize] = lz.service_ns;
            lz.version[s as usize] += 1;
            if next < max_level {
                let q = quantum_i64(self.quantum_ns_table[next as usize]);
                lz.push_threshold(q.saturating_add(service), s);
            }
            d.0 = next;
        }
        // Level p becomes: its others (reversed with `reverses`), then those demoted into it —
        // reversed after them, or, without `reverses`, in order before them.
        let lz = &mut self.lazy;
        for &(p, _, s) in demoted.iter().rev() {
            if reverses {
                lz.push_back(p as usize, s);
            } else {
                lz.push_front(p as usize, s);
            }
        }
        lz.demoted = demoted;
    }

    /// The iteration that ended the lazily followed run, requeued straight from the lazy levels
    /// into the order (one-level demotion, `requeue_reverses_batch`; `batch` = every request
    /// followed lazily, the fresh arrivals aside). Level by level: its requests that stay, in
    /// reverse order, then those demoted into it from the level above, in reverse order — which
    /// is how visiting each level back to front meets them — then its fresh arrivals.
    fn requeue_lazy(&mut self, duration_ns: Ns, now: Ns) {
        let max_level = self.max_level() as usize;
        let lz = &mut self.lazy;
        let mut next = std::mem::take(&mut self.next_order);
        next.clear();
        let mut into = std::mem::take(&mut lz.into);
        let mut out = std::mem::take(&mut lz.out);
        let mut tail = std::mem::take(&mut lz.tail);
        into.clear();
        let state = &mut self.state;
        for p in 0..lz.levels.len() {
            let q = &lz.levels[p];
            if q.is_empty() && into.is_empty() {
                continue;
            }
            out.clear();
            tail.clear();
            let quantum = self.quantum_ns_table[p];
            let mut visit = |s: Slot| {
                if lz.fresh[s as usize] {
                    tail.push(s);
                    return;
                }
                let st = &mut state[s as usize];
                st.attained_ns += lz.service_ns - lz.since_ns[s as usize] + duration_ns;
                st.last_step_ns = now;
                if st.attained_ns > quantum && p < max_level {
                    st.level += 1;
                    st.attained_ns = 0;
                    st.demotions += 1;
                    out.push(s);
                } else {
                    next.push(s);
                }
            };
            if lz.rev[p] ^ lz.parity {
                q.iter().for_each(|&s| visit(s));
            } else {
                q.iter().rev().for_each(|&s| visit(s));
            }
            next.extend_from_slice(&into);
            next.extend(tail.iter().rev());
            std::mem::swap(&mut into, &mut out);
        }
        debug_assert!(into.is_empty(), "nobody is demoted past the last level");
        lz.finish();
        (lz.into, lz.out, lz.tail) = (into, out, tail);
        self.next_order = std::mem::replace(&mut self.order, next);
    }

    /// Queue an arrival (its state set) at the back of its level. While a run is followed lazily
    /// (the arrival came after its last boundary, so the batch in flight does not hold it) it goes
    /// to the back of the lazy level, marked fresh, and is written back with the rest.
    fn enqueue_arrival(&mut self, s: Slot) {
        if !self.lazy.active {
            self.push_back(s);
            return;
        }
        let level = self.state[s as usize].level as usize;
        let lz = &mut self.lazy;
        lz.ensure_slots(s as usize + 1);
        lz.fresh[s as usize] = true;
        lz.fresh_slots.push(s);
        lz.push_back(level, s);
    }

    /// End lazy following: write the order and every attained service back.
    fn materialize(&mut self) {
        if !self.lazy.active {
            return;
        }
        let lz = &mut self.lazy;
        self.order.clear();
        for (p, q) in lz.levels.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            if lz.rev[p] ^ lz.parity {
                self.order.extend(q.iter().rev());
            } else {
                let (a, b) = q.as_slices();
                self.order.extend_from_slice(a);
                self.order.extend_from_slice(b);
            }
        }
        for &s in &self.order {
            if lz.fresh[s as usize] {
                continue;
            }
            let st = &mut self.state[s as usize];
            st.attained_ns += lz.service_ns - lz.since_ns[s as usize];
            if lz.steps > 0 {
                st.last_step_ns = lz.last_ns;
            }
        }
        lz.finish();
    }

    fn preemption(&self) -> PreemptionChoice {
        self.cfg.preemption
    }

    /// Estimated Next Scheduled Time (seconds from now) of every request of `self.order`, into
    /// `self.scores` (FastServe paper §KV-cache management; `shared/docs/scheduling-papers.md`
    /// §1.5). For request i at level p_i, with B = `max_batch_size`, q_k the level quanta and
    /// a_j the service j attained at its current level:
    ///
    /// - `T_promote(i) = max(0, α − idle_i)` (α = `starvation_threshold_s`, idle on the
    ///   starvation clock); ∞ at level 0, where promotion changes nothing;
    /// - `T_execute(i, j)` for every j ahead of i in priority order: the time j runs before it
    ///   drops below i assuming it never finishes — `(q_{p_j} − a_j) + Σ_{p_j<k<p_i} q_k` for
    ///   `p_j < p_i` (the paper's `Σ_{k=p_j}^{p_i−1} q_k` with j's quantum already used at its
    ///   own level taken off, our refinement), and `q_{p_i} − a_j` for j ahead in i's own level
    ///   (0 in the paper's formula, which would make a level's members indistinguishable);
    /// - `T_execute(i) = (1/B) Σ_j T_execute(i, j)`; `ENST(i) = min(T_promote, T_execute)`.
    ///
    /// O(requests) with running sums: `Σ_j T(i,j) = n_prev·Q(p_i) − Σ_prev (Q(p_j) + a_j) +
    /// n_same·q_{p_i} − Σ_same a_j`, `Q(p) = Σ_{k<p} q_k`.
    pub fn enst_s(&mut self, view: &ReplicaView) {
        self.scores.clear();
        let b = view.limits.max_batch_size.max(1) as f64;
        let alpha = self.cfg.starvation_threshold_s;
        let (mut level, mut q_prefix, mut q_level) = (0u32, 0.0f64, self.quantum_s(0));
        let (mut n_prev, mut s_prev) = (0.0f64, 0.0f64);
        let (mut n_same, mut a_same, mut qa_same) = (0.0f64, 0.0f64, 0.0f64);
        for &s in &self.order {
            let st = self.state[s as usize];
            while level < st.level {
                // Order is level by level: fold the finished level into the "previous" sums.
                n_prev += n_same;
                s_prev += qa_same;
                (n_same, a_same, qa_same) = (0.0, 0.0, 0.0);
                q_prefix += q_level;
                level += 1;
                q_level = self.quantum_s(level);
            }
            let a = ns_to_s(st.attained_ns).min(q_level);
            let sum = n_prev * q_prefix - s_prev + n_same * q_level - a_same;
            let t_execute = sum.max(0.0) / b;
            let t_promote = if st.level == 0 {
                f64::INFINITY
            } else {
                (alpha - ns_to_s(view.now_ns.saturating_sub(st.last_step_ns))).max(0.0)
            };
            self.scores.push(t_execute.min(t_promote));
            n_same += 1.0;
            a_same += a;
            qa_same += q_prefix + a;
        }
    }

    /// Proactive offloading after the batch is formed (see [`Offload`]).
    fn proactive(&mut self, view: &ReplicaView, plan: &mut Plan, free_after: u32) {
        if self.cfg.offload == Offload::Reactive
            || self.cfg.preemption != PreemptionChoice::Swap
            || view.host_capacity_blocks() == 0
        {
            return;
        }
        let reserve = view.limits.max_batch_size.max(self.cfg.min_free_blocks);
        if self.cfg.offload == Offload::Paper {
            self.enst_s(view);
            let mut taken = std::mem::take(&mut self.taken);
            score_offload(
                view,
                plan,
                &self.order,
                &self.scores,
                OffloadTarget {
                    free_after,
                    reserve,
                    window: match self.cfg.swap_in_window {
                        0 => usize::MAX,
                        w => w as usize,
                    },
                },
                &mut taken,
            );
            self.taken = taken;
            return;
        }
        if self.taken.len() < view.slot_capacity() {
            self.taken.resize(view.slot_capacity(), false);
        }
        // The batch is a subsequence of the order (formed from it in order), so the scans from
        // the front tell its members by walking both; the preempted ones (few) are marked.
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = true;
        }
        // The highest-priority request left out of the batch for want of GPU memory (no KV on the
        // GPU): memory is made for it and never given to anyone below it.
        let blocked = {
            let mut in_plan = plan_members(&plan.run, &self.taken);
            self.order.iter().position(|&s| {
                !in_plan(s) && matches!(view.req(s).kv_loc, KvLoc::None | KvLoc::Host)
            })
        };
        let blocked_need = blocked.map_or(0, |i| view.extra_blocks_for_next(self.order[i]));
        let mut deficit = reserve as i64 + blocked_need as i64 - free_after as i64;
        let mut host_free = view.host_free_blocks();
        let mut swapped_out = false;
        let floor = blocked.map_or(0, |i| i + 1);
        if deficit > 0 {
            for item in &plan.run {
                self.taken[item.slot as usize] = true;
            }
            for &s in self.order[floor..].iter().rev() {
                if deficit <= 0 {
                    break;
                }
                let r = view.req(s);
                if self.taken[s as usize] || r.kv_loc != KvLoc::Gpu || r.in_flight() {
                    continue;
                }
                // Only for the few GPU-resident candidates: most of a long queue holds no KV.
                let host_need = view.host_blocks_for(r.blocks);
                if host_need > host_free {
                    continue;
                }
                plan.preempt.push((s, PreemptMode::Swap));
                self.taken[s as usize] = true;
                host_free -= host_need;
                deficit -= r.blocks as i64;
                swapped_out = true;
            }
            for item in &plan.run {
                self.taken[item.slot as usize] = false;
            }
        }
        if !swapped_out {
            let mut in_plan = plan_members(&plan.run, &self.taken);
            let mut free = free_after as i64;
            let mut quota = view.limits.max_batch_size;
            for &s in &self.order {
                if quota == 0 {
                    break;
                }
                quota -= 1;
                if in_plan(s) {
                    continue;
                }
                let r = view.req(s);
                if r.kv_loc == KvLoc::Gpu || r.in_transfer() {
                    continue;
                }
                let need = view.swap_in_blocks(s) as i64;
                if r.kv_loc != KvLoc::Host || free < reserve as i64 + need {
                    break; // memory goes to this request first
                }
                plan.swap_in.push(s);
                free -= need;
            }
        }
        for &(s, _) in &plan.preempt {
            self.taken[s as usize] = false;
        }
    }
}

impl Policy for Mlfq {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let r = view.req(s);
        let level = if self.cfg.skip_join {
            self.level_covering(self.prefill_time_s(r.input_tokens))
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
        self.enqueue_arrival(s);
        Ok(())
    }

    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        self.materialize();
        plan.clear();
        self.iterations += 1;
        if self
            .iterations
            .is_multiple_of(self.cfg.starvation_period_iterations)
        {
            self.starvation_check(view.now_ns);
        }
        let misfit = match self.cfg.misfit {
            MisfitRule::Stop => Misfit::Stop,
            MisfitRule::Skip => Misfit::Skip,
        };
        let defer_new = view.host_capacity_blocks() > 0
            && self.cfg.preemption == PreemptionChoice::Swap
            && (view.host_free_blocks() as f64)
                < self.cfg.defer_new_below_host_free_frac * view.host_capacity_blocks() as f64;
        let free_after = form_priority_batch(
            view,
            &self.order,
            misfit,
            self.preemption(),
            defer_new,
            plan,
        );
        self.proactive(view, plan, free_after);
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
                self.lazy.levels.iter().map(VecDeque::len).sum::<usize>()
            );
            self.requeue_lazy(duration_ns, view.now_ns);
            return;
        }
        self.materialize();
        if batch.is_empty() {
            return;
        }
        self.requeue_batch(batch, duration_ns, view.now_ns, |s| view.req(s).kv_tokens);
    }

    /// The plan repeats while: the batch is a prefix of the priority order (so the first request
    /// left out stays out: its reason — batch full, KV blocks, deferral — cannot ease while free
    /// blocks only shrink), nobody in the batch passes its quantum (no demotion), no queued request
    /// reaches the starvation threshold, and proactive offloading keeps its reserve without a swap.
    fn steady(&self, batch: &[Slot], view: &ReplicaView) -> Option<Steady> {
        debug_assert!(!self.lazy.active, "schedule wrote the lazy state back");
        if batch.len() > self.order.len() || self.order[..batch.len()] != *batch {
            return None;
        }
        let threshold_ns = (self.cfg.starvation_threshold_s * 1e9).round() as Ns;
        if threshold_ns == 0 {
            return None;
        }
        if batch.len() == self.order.len() {
            // The batch holds every request: demotions and requeues reorder it but cannot change
            // it (nobody is left out, nobody waits to be promoted, no swap has a candidate); the
            // engine checks memory. Followed step by step.
            // A prefill in it repeats as a decode, and a completion leaves every other request in
            // it: the plan is still "everyone".
            return Some(Steady {
                stepwise: true,
                with_prefills: true,
                through_completions: true,
                ..Steady::UNBOUNDED
            });
        }
        let mut max_service_ns = Ns::MAX;
        for &s in batch {
            let st = &self.state[s as usize];
            if st.level < self.max_level() {
                let q = self.quantum_ns_table[st.level as usize];
                max_service_ns = max_service_ns.min(q.saturating_sub(st.attained_ns));
            }
        }
        let until_ns = self.order[batch.len()..]
            .iter()
            .map(|&s| {
                self.state[s as usize]
                    .last_step_ns
                    .saturating_add(threshold_ns)
            })
            .min()
            .unwrap_or(Ns::MAX);
        let offloading =
            self.cfg.preemption == PreemptionChoice::Swap && view.host_capacity_blocks() > 0;
        let proactive = offloading
            && match self.cfg.offload {
                Offload::Reactive => false,
                Offload::Proactive => true,
                // ENST moves with the clock: its swap order can change while nothing else does.
                Offload::Paper => return None,
            };
        let min_free_blocks = if proactive {
            // No swap-out while free blocks cover the reserve plus what the first request left
            // out without GPU memory needs; no swap-in became possible (free blocks only shrink).
            let reserve = view.limits.max_batch_size.max(self.cfg.min_free_blocks);
            let blocked = self.order[batch.len()..]
                .iter()
                .find(|&&s| matches!(view.req(s).kv_loc, KvLoc::None | KvLoc::Host));
            let need = blocked.map_or(0, |&s| view.extra_blocks_for_next(s));
            let min = reserve.saturating_add(need);
            if view.free_blocks() < min {
                return None;
            }
            min
        } else {
            0
        };
        Some(Steady {
            max_iterations: u64::MAX,
            min_free_blocks,
            max_service_ns,
            until_ns,
            ..Steady::UNBOUNDED
        })
    }

    fn on_steady_step(
        &mut self,
        batch: &mut [Slot],
        repeat: u64,
        duration_ns: Ns,
        view: &ReplicaView,
    ) {
        // What `on_iteration_end` does, with the batch = every queued request, followed lazily.
        let _ = batch;
        if !self.lazy.active {
            self.lazy_begin();
        }
        self.lazy_step(duration_ns, view.now_ns, |s| {
            view.req(s).kv_tokens_after_next() + repeat as u32 - 1
        });
        // What the next `schedule` does before forming the (same) batch: count the boundary and
        // maybe run the starvation check, which promotes nobody (everyone just ran).
        self.iterations += 1;
    }

    fn on_steady_begin(&mut self, max_service_ns: Ns) {
        self.lazy.bound_ns = max_service_ns.min(i64::MAX as Ns) as i64;
    }

    fn steady_order(&mut self, batch: &mut [Slot]) {
        if self.lazy.active {
            let lz = &self.lazy;
            let mut i = 0;
            for (p, q) in lz.levels.iter().enumerate() {
                if q.is_empty() {
                    continue;
                }
                let out = &mut batch[i..i + q.len()];
                if lz.reversed(p) {
                    for (o, &s) in out.iter_mut().zip(q.iter().rev()) {
                        *o = s;
                    }
                } else {
                    let (a, b) = q.as_slices();
                    out[..a.len()].copy_from_slice(a);
                    out[a.len()..].copy_from_slice(b);
                }
                i += q.len();
            }
        } else {
            batch.copy_from_slice(&self.order[..batch.len()]);
        }
    }

    fn on_steady_iterations(
        &mut self,
        batch: &mut [Slot],
        iterations: u64,
        service_ns: Ns,
        view: &ReplicaView,
    ) {
        self.materialize();
        self.iterations += iterations;
        for &s in batch.iter() {
            let st = &mut self.state[s as usize];
            st.attained_ns += service_ns;
            st.last_step_ns = view.now_ns;
        }
        // Each requeue puts the batch back at the front of its levels, reversed when
        // `requeue_reverses_batch`: the batch is a prefix of the order, i.e. whole levels and the
        // front of one, so an odd number of requeues reverses each level's batch segment.
        if self.cfg.requeue_reverses_batch && iterations % 2 == 1 {
            let prefix = &mut self.order[..batch.len()];
            let mut from = 0;
            while from < prefix.len() {
                let level = self.state[prefix[from] as usize].level;
                let len = prefix[from..]
                    .iter()
                    .take_while(|&&x| self.state[x as usize].level == level)
                    .count();
                prefix[from..from + len].reverse();
                from += len;
            }
        }
        batch.copy_from_slice(&self.order[..batch.len()]);
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

    fn describe(&self, s: Slot) -> PolicyInfo {
        let st = &self.state[s as usize];
        PolicyInfo {
            priority: st.level as f64,
            demotions: st.demotions,
            promotions: st.promotions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::constant::ConstantCost;
    use crate::engine::KvPool;
    use crate::engine::request::{Request, Slab};
    use crate::policy::{Limits, RunItem};
    use crate::swap::KvOffload;

    const MS: Ns = 1_000_000;

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
            m.push_back(s);
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
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
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
            assert_eq!(lazy.order, eager.order);
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
        m.enst_s(&view(&reqs, &kv, &host, now));
        let want = [0.0, 0.003, 0.028, 0.010];
        for (got, want) in m.scores.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{:?} vs {want:?}", m.scores);
        }
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
    fn requeue_reference(m: &Mlfq, old: &[Slot], batch: &[Slot]) -> Vec<Slot> {
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

    /// Requeueing a batch of 17 in front of a queue of 10,000 looks at the batch's entries only
    /// (the rest of the changed prefix moves by bulk copy): the work of a boundary does not grow
    /// with the queue. Random small queues and batches (prefix or not) give the rebuilt order.
    #[test]
    fn requeue_batch_matches_a_full_rebuild_and_touches_only_the_batch() {
        let cost = Arc::new(ConstantCost { iteration_s: 0.01 });
        for reverses in [true, false] {
            let mut cfg = Params::default()
                .resolve(false, cost.as_ref(), "mlfq")
                .unwrap();
            cfg.requeue_reverses_batch = reverses;
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
            let old = m.order.clone();
            m.requeue_batch(&batch, 10 * MS, 20 * MS, |_| 0);
            assert_eq!(m.order, requeue_reference(&m, &old, &batch));
            assert!(
                m.requeue_touched <= batch.len() as u64,
                "looked at {} queue entries for a batch of {}",
                m.requeue_touched,
                batch.len()
            );
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
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
                m.push_back(s);
            }
            let old = m.order.clone();
            let batch: Vec<Slot> = old.iter().copied().filter(|_| rand(3) == 0).collect();
            let kv_tokens = rand(2000) as u32;
            m.requeue_batch(&batch, rand(30 * MS), 1, |_| kv_tokens);
            assert_eq!(m.order, requeue_reference(&m, &old, &batch));
        }
    }
}
