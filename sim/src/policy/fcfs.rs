//! `fcfs` — first-come-first-served with iteration-level batching, as in Orca
//! (Yu et al., "Orca: A Distributed Serving System for Transformer-Based Generative Models", OSDI'22).
//!
//! Every iteration runs all admitted (running) requests, then admits waiting requests in arrival
//! order while the batch has room (`max_batch_size`), the prefill-token budget (`max_batch_tokens`)
//! allows, and the KV pool can hold the request's *reservation*; admission stops at the first
//! request that does not fit (no back-filling). Prefills and decodes share an iteration
//! (selective batching). Admitted requests run to completion. With pipeline parallelism the
//! requests of several micro-batches may leave the pipeline before the first stage frees: the
//! plan runs at most `max_batch_size` of them, in arrival order, and the rest the next micro-batch.
//!
//! | parameter | values | meaning |
//! |---|---|---|
//! | `reserve` | `"max"` (default) | reserve KV for the model's context limit at admission — vLLM paper's Orca(Max) |
//! |           | `"oracle"` | reserve KV for prompt + predicted output — Orca(Oracle) with the `oracle` predictor |
//!
//! If a reservation proves too small (a non-oracle predictor under-estimated), the request grows on
//! demand and, when blocks run out, the latest-arrived running request is preempted by recompute,
//! as in `vllm`.
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "layerwise"`, `kv_layout =
//! "layer-major"`, as `vllm` (an assumption: Orca has no swapping; the same engine as the
//! vLLM baseline keeps comparisons about the policy). This policy preempts by recompute.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::common::{insert_by_arrival, make_room_for_decodes, remove_slot, run_all_not_in_flight};
use super::{
    FastForward, Limits, Plan, Policy, PolicyEntry, PolicyEnv, ReplicaView, RunItem, Steady,
    parse_params,
};
use crate::error::{Result, SimError};
use crate::vocab::request::Slot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reserve {
    #[default]
    Max,
    Oracle,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub reserve: Reserve,
}

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "fcfs",
    summary: "Orca: FCFS admission, run to completion, KV reserved at admission (reserve = max | oracle)",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (params, json) = parse_params::<Params>("fcfs", table)?;
    Ok((Box::new(Fcfs::new(params, env.limits)), json))
}

pub struct Fcfs {
    params: Params,
    limits: Limits,
    waiting: VecDeque<Slot>,
    /// Admitted requests, in arrival order.
    running: Vec<Slot>,
}

impl Fcfs {
    pub fn new(params: Params, limits: Limits) -> Self {
        Fcfs {
            params,
            limits,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    fn reservation_tokens(&self, view: &ReplicaView, s: Slot) -> u64 {
        let r = view.req(s);
        match self.params.reserve {
            Reserve::Max => self.limits.max_context_tokens as u64,
            Reserve::Oracle => {
                (r.input_tokens as u64 + r.predicted_output_tokens.max(1) as u64).saturating_sub(1)
            }
        }
    }
}

impl Policy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }

    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let need = view.blocks_for_tokens(self.reservation_tokens(view, s));
        if need > view.capacity_blocks() {
            let cap = view.capacity_blocks();
            return Err(match self.params.reserve {
                // The same for every request: a setting, not a row, is at fault.
                Reserve::Max => SimError::config(format!(
                    "[policies.fcfs] reserve = \"max\" reserves the whole context limit for each request ([scheduler] max_context_tokens = {}: {need} KV blocks), but a replica holds {cap} blocks; set reserve = \"oracle\", lower max_context_tokens, or give the replicas more KV memory ([memory])",
                    self.limits.max_context_tokens
                )),
                Reserve::Oracle => SimError::Request {
                    id: view.req(s).id,
                    msg: format!(
                        "fcfs reservation of its known length ([policies.fcfs] reserve = \"oracle\": {need} KV blocks) exceeds the replica's {cap} blocks"
                    ),
                },
            });
        }
        self.waiting.push_back(s);
        Ok(())
    }

    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let mut free = make_room_for_decodes(view, &mut self.running, &mut self.waiting, plan);
        run_all_not_in_flight(view, &self.running, plan);
        let mut tokens: u64 = 0;
        let mut admitted = 0;
        while let Some(&s) = self.waiting.front() {
            if plan.run.len() >= self.limits.max_batch_size as usize {
                break;
            }
            if plan.preempt.iter().any(|&(p, _)| p == s) {
                break; // just preempted: not re-admitted in the same boundary
            }
            let r = view.req(s);
            let t = r.prefill_tokens() as u64;
            if admitted > 0 && tokens + t > self.limits.max_batch_tokens as u64 {
                break;
            }
            let reserve = view
                .blocks_for_tokens(self.reservation_tokens(view, s))
                .max(view.blocks_for_tokens(r.kv_tokens_after_next() as u64));
            let need = reserve.saturating_sub(r.blocks);
            if need > free {
                break;
            }
            free -= need;
            tokens += t;
            admitted += 1;
            self.waiting.pop_front();
            insert_by_arrival(view, &mut self.running, s);
            plan.run.push(RunItem {
                slot: s,
                reserve_blocks: reserve,
                prefill_chunk_tokens: 0,
            });
        }
    }

    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        remove_slot(&mut self.running, s);
    }
}

impl FastForward for Fcfs {
    /// A decode-only plan runs every running request and admits nobody; until a request finishes
    /// or arrives, free blocks only shrink, so a waiting request that did not fit still does not,
    /// and the decodes need no preemption while their blocks fit (the engine checks that).
    fn steady(&self, _batch: &[Slot], _view: &ReplicaView) -> Option<Steady> {
        Some(Steady::UNBOUNDED)
    }
}
