//! `alise` — speculative shortest-predicted-job scheduling after ALISE (Zhao & Wang, "ALISE:
//! Accelerating Large Language Model Serving with Speculative Scheduling", ICCAD'24,
//! arXiv 2410.23537).
//!
//! What the paper specifies (per its abstract and two third-party summaries; no code is public):
//! a retrieval-based output-length predictor; an execution-time model `T = s·T0 + n·(α·s + β)`;
//! a preemptive scheduler with priority queues ordered by estimated execution time; EWT-based
//! KV swapping and KV quantization (not in this build: host memory is a later issue).
//!
//! Our choices (the paper leaves them open, `shared/docs/scheduling-papers.md` §2.2):
//! - the execution-time model is the scenario's cost model at batch size 1
//!   ([`super::common::remaining_time_s`]) instead of a separately fitted linear form;
//! - the priority is the estimated *remaining* time, re-estimated at every iteration boundary,
//!   minus an aging credit: `key = remaining_s − aging_weight × waited_s`, where `waited_s` is the
//!   time since the request last ran (or arrived). Any request's key falls without bound while it
//!   waits, so none starves;
//! - a request that outlives its prediction follows the engine's rule
//!   (`generated + max(16, prediction/2)`);
//! - the default predictor is `history` (k nearest completed requests by input length), the
//!   realistic stand-in for ALISE's retrieval predictor;
//! - batch formation skips requests that do not fit; KV pressure preempts (recompute) resident
//!   requests of lower priority.
//!
//! | parameter | unit | default | meaning |
//! |---|---|---|---|
//! | `aging_weight` | s of priority per s waited | 0.1 | aging credit |
//! | `preemption` | — | `swap` | evicted KV goes to the host pool when it has room (else recompute); or `recompute` |

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::common::{Ranking, remaining_time_s};
use super::{
    Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, PreemptionChoice, ReplicaView, parse_params,
};
use crate::cost::CostModel;
use crate::engine::request::Slot;
use crate::engine::time::ns_to_s;
use crate::error::{Result, SimError};

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "alise",
    summary: "ALISE: preemptive shortest estimated remaining time with aging; history predictor by default",
    build,
    default_predictor: "history",
    forced_predictor: None,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub aging_weight: f64,
    /// How an evicted request gives up its KV: `swap` (host pool, if room) or `recompute`.
    pub preemption: PreemptionChoice,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            aging_weight: 0.1,
            preemption: PreemptionChoice::Swap,
        }
    }
}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (p, json) = parse_params::<Params>("alise", table)?;
    if !(p.aging_weight.is_finite() && p.aging_weight >= 0.0) {
        return Err(SimError::config(format!(
            "[policies.alise] aging_weight must be ≥ 0, got {}",
            p.aging_weight
        )));
    }
    Ok((Box::new(Alise::new(p, env.cost.clone())), json))
}

pub struct Alise {
    p: Params,
    cost: Arc<dyn CostModel>,
    ranking: Ranking,
}

impl Alise {
    pub fn new(p: Params, cost: Arc<dyn CostModel>) -> Self {
        Alise {
            p,
            cost,
            ranking: Ranking::default(),
        }
    }
}

impl Policy for Alise {
    fn name(&self) -> &'static str {
        "alise"
    }
    fn on_arrival(&mut self, s: Slot, _view: &ReplicaView) -> Result<()> {
        self.ranking.add(s);
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        let cost = self.cost.as_ref();
        let w = self.p.aging_weight;
        self.ranking
            .rank_and_form(view, plan, self.p.preemption, |s| {
                let r = view.req(s);
                let waited = ns_to_s(view.now_ns.saturating_sub(r.last_run_end_ns));
                remaining_time_s(cost, r) - w * waited
            });
    }
    fn on_finish(&mut self, s: Slot) {
        self.ranking.remove(s);
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        PolicyInfo {
            priority: self.ranking.last_key(s),
            ..Default::default()
        }
    }
}
