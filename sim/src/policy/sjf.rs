//! `sjf` — non-preemptive shortest (predicted) job first, as in SSJF (Qiu et al., "Efficient
//! Interactive LLM Serving with Proxy Model-based Sequence Length Prediction", AIOps'24).
//! `sjf-oracle` is the same policy with the `oracle` predictor (the non-preemptive bound).
//!
//! Waiting requests are ordered by their predicted job time at arrival
//! ([`super::common::remaining_time_ns`], integer nanoseconds), shortest first, ties by arrival.
//! Every iteration runs all admitted requests and admits waiting ones in that order while the
//! batch, prefill-token budget and KV blocks allow, stopping at the first that does not fit
//! (with pipeline parallelism, at most `max_batch_size` admitted requests out of the pipeline run,
//! shortest first, as in `fcfs`).
//! Admitted requests run to completion, with KV allocated on demand; when blocks run out, the
//! admitted request with the longest predicted job is preempted by recompute and returns to the
//! waiting queue (vLLM's rule, with "latest arrival" replaced by "lowest priority").
//!
//! No parameters.
//!
//! Swap timing (registry defaults for `[swap]`): `reactive = "layerwise"`, `kv_layout =
//! "layer-major"`, as `vllm` — an assumption (the same engine as the vLLM baseline, so
//! comparisons isolate the policy). This policy preempts by recompute.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::common::{make_room_for_decodes, remaining_time_ns, run_all_not_in_flight};
use super::{
    FastForward, Plan, Policy, PolicyEntry, PolicyEnv, PolicyInfo, ReplicaView, Steady,
    parse_params,
};
use crate::cost::CostModel;
use crate::error::Result;
use crate::vocab::request::Slot;

pub const ENTRY: PolicyEntry = PolicyEntry {
    name: "sjf",
    summary: "non-preemptive shortest predicted job first (SSJF)",
    build,
    default_predictor: "oracle",
    forced_predictor: None,
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

pub const ORACLE_ENTRY: PolicyEntry = PolicyEntry {
    name: "sjf-oracle",
    summary: "sjf with the oracle predictor (the non-preemptive bound)",
    build,
    default_predictor: "oracle",
    forced_predictor: Some("oracle"),
    reactive: crate::swap::timing::Reactive::Layerwise,
    kv_layout: crate::swap::KvLayout::LayerMajor,
};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

fn build(
    table: Option<&toml::Value>,
    env: &PolicyEnv,
) -> Result<(Box<dyn Policy>, serde_json::Value)> {
    let (_, json) = parse_params::<Params>("sjf", table)?;
    Ok((Box::new(Sjf::new(env.cost.clone())), json))
}

/// Priority key: predicted job time in integer nanoseconds (total order), then trace id.
type Key = (u64, u64);

pub struct Sjf {
    cost: Arc<dyn CostModel>,
    waiting: BTreeSet<(Key, Slot)>,
    /// Admitted requests, by key.
    running: Vec<Slot>,
    key: Vec<Key>,
    victims: VecDeque<Slot>,
}

impl Sjf {
    pub fn new(cost: Arc<dyn CostModel>) -> Self {
        Sjf {
            cost,
            waiting: BTreeSet::new(),
            running: Vec::new(),
            key: Vec::new(),
            victims: VecDeque::new(),
        }
    }
    fn insert_running(&mut self, s: Slot) {
        let k = self.key[s as usize];
        let pos = self.running.partition_point(|&x| self.key[x as usize] < k);
        self.running.insert(pos, s);
    }
}

impl Policy for Sjf {
    fn name(&self) -> &'static str {
        "sjf"
    }
    fn on_arrival(&mut self, s: Slot, view: &ReplicaView) -> Result<()> {
        let r = view.req(s);
        let key = (remaining_time_ns(self.cost.as_ref(), r), r.id);
        if self.key.len() <= s as usize {
            self.key.resize(s as usize + 1, (0, 0));
        }
        self.key[s as usize] = key;
        self.waiting.insert((key, s));
        Ok(())
    }
    fn schedule(&mut self, view: &ReplicaView, plan: &mut Plan) {
        plan.clear();
        self.victims.clear();
        let mut free = make_room_for_decodes(view, &mut self.running, &mut self.victims, plan);
        run_all_not_in_flight(view, &self.running, plan);
        let mut tokens: u64 = 0;
        let mut admitted = 0;
        while let Some(&(key, s)) = self.waiting.first() {
            if plan.run.len() >= view.limits.max_batch_size as usize {
                break;
            }
            let r = view.req(s);
            let t = r.prefill_tokens() as u64;
            if admitted > 0 && tokens + t > view.limits.max_batch_tokens as u64 {
                break;
            }
            let need = view.extra_blocks_for_next(s);
            if need > free {
                break;
            }
            free -= need;
            tokens += t;
            admitted += 1;
            self.waiting.remove(&(key, s));
            self.insert_running(s);
            plan.run_on_demand(s);
        }
        while let Some(v) = self.victims.pop_front() {
            self.waiting.insert((self.key[v as usize], v));
        }
    }
    fn fast_forward(&mut self) -> Option<&mut dyn FastForward> {
        Some(self)
    }

    fn on_finish(&mut self, s: Slot) {
        if let Some(i) = self.running.iter().position(|&x| x == s) {
            self.running.remove(i);
        }
    }
    fn describe(&self, s: Slot) -> PolicyInfo {
        PolicyInfo {
            priority: self.key[s as usize].0 as f64 / 1e9,
            ..Default::default()
        }
    }
}

impl FastForward for Sjf {
    /// As `fcfs`: a decode-only plan admits nobody, and until a request finishes or arrives free
    /// blocks only shrink, so the waiting head that did not fit still does not.
    fn steady(&self, _batch: &[Slot], _view: &ReplicaView) -> Option<Steady> {
        Some(Steady::UNBOUNDED)
    }
}
