//! `round-robin` — the default: request k (in arrival order) joins replica k mod N, whatever the
//! load. Identical replicas then serve disjoint, interleaved halves (thirds, …) of the trace
//! independently, which is what servesim did before routers existed (outputs are byte-identical).

use super::{ClusterView, Incoming, NoParams, Router, RouterEntry, RouterEnv, parse_params};
use crate::error::Result;

pub const ENTRY: RouterEntry = RouterEntry {
    name: "round-robin",
    summary: "request k joins replica k mod N (default; load-blind)",
    build,
};

fn build(
    table: Option<&toml::Value>,
    _env: &RouterEnv,
) -> Result<(Box<dyn Router>, serde_json::Value)> {
    let (_, json) = parse_params::<NoParams>("round-robin", table)?;
    Ok((Box::new(RoundRobin::default()), json))
}

#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }
    fn route(&mut self, _req: &Incoming, cluster: &ClusterView) -> usize {
        let r = self.next % cluster.replicas();
        self.next = (r + 1) % cluster.replicas();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cluster, pick, req};
    use super::*;

    #[test]
    fn cycles_through_the_replicas_ignoring_load() {
        let c = cluster(vec![
            (0, vec![]),
            (90, vec![req(0, 10, 10, 0)]),
            (0, vec![]),
        ]);
        let mut r = RoundRobin::default();
        let picks: Vec<usize> = (0..7).map(|_| pick(&mut r, &c)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }
}
