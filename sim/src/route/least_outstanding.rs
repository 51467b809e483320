//! `least-outstanding` — join the replica with the fewest unfinished requests (waiting, running,
//! swapped out or being copied), counting requests, not their sizes ("least outstanding requests",
//! the default balancing of most HTTP load balancers, e.g. AWS ALB's `least_outstanding_requests`,
//! and, counting pending requests, Vidur's `lor` global scheduler). Ties go to the lowest replica
//! index.

use super::min_tree::Scores;
use super::{ClusterView, Incoming, NoParams, Router, RouterEntry, RouterEnv, parse_params};
use crate::error::Result;

pub const ENTRY: RouterEntry = RouterEntry {
    name: "least-outstanding",
    summary: "fewest unfinished requests (ties: lowest index)",
    build,
};

fn build(
    table: Option<&toml::Value>,
    _env: &RouterEnv,
) -> Result<(Box<dyn Router>, serde_json::Value)> {
    let (_, json) = parse_params::<NoParams>("least-outstanding", table)?;
    Ok((Box::new(LeastOutstanding::default()), json))
}

/// Keeps every replica's score in a tournament tree, rescoring only the changed replicas.
#[derive(Debug, Default, Clone)]
pub struct LeastOutstanding {
    scores: Scores,
}

impl Router for LeastOutstanding {
    fn name(&self) -> &'static str {
        "least-outstanding"
    }
    fn route(&mut self, _req: &Incoming, cluster: &ClusterView) -> usize {
        self.scores.argmin(cluster, |_, r| r.outstanding() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cluster, pick, req};
    use super::*;

    #[test]
    fn fewest_requests_ties_to_lowest_index() {
        // Replica 0: 2 requests, replica 1: 1 (but nearly full KV), replica 2: 1.
        let c = cluster(vec![
            (0, vec![req(0, 10, 10, 0), req(1, 10, 10, 0)]),
            (95, vec![req(2, 1000, 1000, 5)]),
            (0, vec![req(3, 10, 10, 0)]),
        ]);
        assert_eq!(pick(&mut LeastOutstanding::default(), &c), 1);
        let empty = cluster(vec![(0, vec![]), (0, vec![])]);
        assert_eq!(pick(&mut LeastOutstanding::default(), &empty), 0);
    }
}
