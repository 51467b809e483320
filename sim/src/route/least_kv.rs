//! `least-kv` — join the replica whose GPU KV pool is least used (fraction of blocks allocated or
//! reserved, including blocks of in-flight copies): the KV-cache utilisation signal that KV-aware
//! LLM routers score replicas by. Ties go to the lowest index.
//!
//! A request that is still waiting holds no blocks, so this router does not see queues that have
//! not been admitted yet: under bursts it can pile requests onto a replica whose KV is momentarily
//! empty. That is the known weakness of the signal, kept on purpose (compare `least-outstanding`).

use super::min_tree::Scores;
use super::{ClusterView, Incoming, NoParams, Router, RouterEntry, RouterEnv, parse_params};
use crate::error::Result;

pub const ENTRY: RouterEntry = RouterEntry {
    name: "least-kv",
    summary: "lowest fraction of GPU KV blocks in use (ties: lowest index)",
    build,
};

fn build(
    table: Option<&toml::Value>,
    _env: &RouterEnv,
) -> Result<(Box<dyn Router>, serde_json::Value)> {
    let (_, json) = parse_params::<NoParams>("least-kv", table)?;
    Ok((Box::new(LeastKv::default()), json))
}

/// Keeps every replica's score in a tournament tree, rescoring only the changed replicas.
#[derive(Debug, Default, Clone)]
pub struct LeastKv {
    scores: Scores,
}

impl Router for LeastKv {
    fn name(&self) -> &'static str {
        "least-kv"
    }
    fn route(&mut self, _req: &Incoming, cluster: &ClusterView) -> usize {
        self.scores.argmin(cluster, |_, r| r.kv_used_fraction())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cluster, pick, req};
    use super::*;

    #[test]
    fn lowest_kv_usage_ignores_queue_length() {
        // Replica 1 has three waiting requests (no KV yet) and the fewest blocks in use.
        let c = cluster(vec![
            (40, vec![req(0, 10, 10, 3)]),
            (
                10,
                vec![req(1, 10, 10, 0), req(2, 10, 10, 0), req(3, 10, 10, 0)],
            ),
            (10, vec![]),
        ]);
        assert_eq!(pick(&mut LeastKv::default(), &c), 1);
    }
}
