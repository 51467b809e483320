//! `fcfs-swap` — FastServe-FCFS: first-come-first-served batching with FastServe's memory
//! management (the FCFS baseline of the FastServe paper's evaluation and ablations, which runs
//! FCFS "in the same engine", i.e. with FastServe's KV swapping; Wu et al., arXiv 2305.05920 v3
//! §6; `shared/docs/scheduling-papers.md` §1).
//!
//! The `mlfq` machinery with one level kept in arrival order: at each boundary the batch is the
//! first `max_batch_size` runnable requests by arrival (token budget as `mlfq`), and memory is
//! handled exactly as `mlfq`'s `preset = "code"` does (`batch_memory = "reserve"`: FastServe's
//! `reserve_free_blocks` — swap out queued GPU-resident requests from the latest arrival up, then
//! drop batch members from the tail; proactive swap-in of the next `max_batch_size` queued
//! requests; `host_full = "defer"`; new prefills deferred while < 10 % of the host pool is free).
//! No quanta, no demotion, no starvation promotion: once running, the earliest requests keep
//! running until they finish, unless memory runs out.
//!
//! Not the official code's `FCFS` class (`fastserve/scheduler.py`): that one keeps a running
//! batch, admits by *full current KV length* against the whole GPU, swaps out the last batch
//! member when blocks run short and serves its swapped queue before new requests. The paper's
//! ablation isolates the scheduling policy with the memory management held fixed, which is what
//! this policy does (our reading: the paper does not spell out FastServe-FCFS's memory rules).
//!
//! | parameter | default | meaning (as in `mlfq`) |
//! |---|---|---|
//! | `preemption` | `swap` | `swap` (host pool) or `recompute` |
//! | `offload` | `proactive` | `proactive` (FastServe's reserve + swap-in window) or `reactive` |
//! | `min_free_blocks` | 0 | reserve = max(`max_batch_size`, this) GPU blocks |
//! | `defer_new_below_host_free_frac` | 0.1 | new prefills wait while free host blocks are below this fraction |
//! | `host_full` | `defer` | no eviction without host room (`recompute`: evict by recompute) |
//! | `misfit` | `stop` | a prefill over the token budget ends the batch (`skip`: try the next) |

use serde::{Deserialize, Serialize};

use super::mlfq::{BatchMemory, HostFull, MisfitRule, Mlfq, Offload, Params, Preset};
use super::{Policy, PolicyEntry, PolicyEnv, PreemptionChoice, parse_params};
use crate::error::{Result, SimError};

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "fcfs-swap",
    summary: "FastServe-FCFS: FCFS batches with FastServe's swapping (reserve_free_blocks, proactive swap-in)",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::SerialSwapIn, // FastServe's engine, as skip-join-mlfq
    kv_layout: crate::swap::KvLayout::BlockMajor,
};

/// `[policies.fcfs-swap]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FcfsSwapParams {
    pub preemption: Option<PreemptionChoice>,
    pub offload: Option<Offload>,
    pub min_free_blocks: Option<u32>,
    pub defer_new_below_host_free_frac: Option<f64>,
    pub host_full: Option<HostFull>,
    pub misfit: Option<MisfitRule>,
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, _) = parse_params::<FcfsSwapParams>("fcfs-swap", table)?;
    if p.offload == Some(Offload::Paper) {
        return Err(SimError::config(
            "[policies.fcfs-swap] offload must be \"proactive\" or \"reactive\" (ENST needs MLFQ levels)",
        ));
    }
    let params = Params {
        preset: Preset::Code,
        max_levels: Some(1),
        preemption: p.preemption,
        offload: p.offload,
        min_free_blocks: p.min_free_blocks,
        defer_new_below_host_free_frac: p.defer_new_below_host_free_frac,
        host_full: p.host_full,
        misfit: p.misfit,
        batch_memory: Some(BatchMemory::Reserve),
        requeue_reverses_batch: Some(false),
        ..Params::default()
    };
    let mut cfg = params.resolve(false, env.cost.as_ref(), "fcfs-swap")?;
    cfg.fifo = true;
    let json = serde_json::json!({
        "preemption": cfg.preemption,
        "offload": cfg.offload,
        "min_free_blocks": cfg.min_free_blocks,
        "defer_new_below_host_free_frac": cfg.defer_new_below_host_free_frac,
        "host_full": cfg.host_full,
        "misfit": cfg.misfit,
    });
    Ok((
        Box::new(Mlfq::new(cfg, env.cost.clone(), "fcfs-swap")),
        json,
    ))
}
