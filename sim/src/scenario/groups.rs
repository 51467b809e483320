//! Heterogeneous clusters: each `[[replica_groups]]` entry resolved as a scenario of its own.

use super::{Loaded, MAX_REPLICAS, Overrides, Resolved};
use crate::error::{Result, SimError};

impl Loaded {
    /// Resolve every `[[replica_groups]]` entry as a scenario of its own (overrides already
    /// applied); errors name the group.
    pub(super) fn resolve_groups(&self) -> Result<Vec<Resolved>> {
        let s = &self.scenario;
        if s.replica_groups.is_empty() {
            return Ok(Vec::new());
        }
        if s.replicas != 1 {
            return Err(self.err(
                "give either `replicas` or `[[replica_groups]]` (whose `count`s add up to the replicas), not both",
            ));
        }
        // Bound the cluster before resolving (and so allocating) anything per group.
        let total: u64 = s.replica_groups.iter().map(|g| g.count as u64).sum();
        if total > MAX_REPLICAS as u64 {
            return Err(self.err(format!(
                "[[replica_groups]]: the counts add up to {total} replicas, above the limit of {MAX_REPLICAS} replicas per scenario"
            )));
        }
        let mut out = Vec::with_capacity(s.replica_groups.len());
        for (i, g) in s.replica_groups.iter().enumerate() {
            if g.count == 0 {
                return Err(self.err(format!(
                    "[[replica_groups]] #{}: `count` must be ≥ 1",
                    i + 1
                )));
            }
            let mut sub = self.clone();
            let sc = &mut sub.scenario;
            sc.replica_groups.clear();
            sc.replicas = g.count;
            if let Some(gpu) = &g.gpu {
                sc.gpu = gpu.clone();
            }
            sc.tp = g.tp.unwrap_or(sc.tp);
            sc.pp = g.pp.unwrap_or(sc.pp);
            let what = format!("{} × {} tp {} pp {}", g.count, sc.gpu, sc.tp, sc.pp);
            let r = sub.resolve(&Overrides::default()).map_err(|e| match e {
                SimError::Scenario { path, msg } => SimError::Scenario {
                    path,
                    msg: format!("[[replica_groups]] #{} ({what}): {msg}", i + 1),
                },
                other => other,
            })?;
            out.push(r);
        }
        Ok(out)
    }
}
