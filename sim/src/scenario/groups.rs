//! Heterogeneous clusters: each `[[replica_groups]]` entry resolved as a scenario of its own.

use super::load::line_of_key;
use super::{Loaded, MAX_REPLICAS, Overrides, Resolved};
use crate::error::{Result, SimError};

impl Loaded {
    /// Resolve every `[[replica_groups]]` entry as a scenario of its own (overrides already
    /// applied); errors name the group and the line of its key at fault (else of the entry).
    pub(super) fn resolve_groups(&self) -> Result<Vec<Resolved>> {
        let s = &self.scenario;
        if s.replica_groups.is_empty() {
            return Ok(Vec::new());
        }
        if s.replicas != 1 {
            return Err(self.err_at(
                &["replicas"],
                "give either `replicas` or `[[replica_groups]]` (whose `count`s add up to the replicas), not both",
            ));
        }
        // Bound the cluster before resolving (and so allocating) anything per group.
        let total: u64 = s.replica_groups.iter().map(|g| g.count as u64).sum();
        if total > MAX_REPLICAS as u64 {
            return Err(self.err_at(&["replica_groups"], format!(
                "[[replica_groups]]: the counts add up to {total} replicas, above the limit of {MAX_REPLICAS} replicas per scenario"
            )));
        }
        let mut out = Vec::with_capacity(s.replica_groups.len());
        for (i, g) in s.replica_groups.iter().enumerate() {
            let index = i.to_string();
            if g.count == 0 {
                return Err(self.err_at(
                    &["replica_groups", &index, "count"],
                    format!("[[replica_groups]] #{}: `count` must be ≥ 1", i + 1),
                ));
            }
            let mut sub = self.clone();
            sub.group = Some(i);
            let sc = &mut sub.scenario;
            sc.replica_groups.clear();
            sc.replicas = g.count;
            if let Some(gpu) = &g.gpu {
                sc.gpu = gpu.clone();
            }
            sc.tp = g.tp.unwrap_or(sc.tp);
            sc.pp = g.pp.unwrap_or(sc.pp);
            let what = format!("{} × {} tp {} pp {}", g.count, sc.gpu, sc.tp, sc.pp);
            let entry = line_of_key(&self.text, &["replica_groups", &index]);
            let r = sub.resolve(&Overrides::default()).map_err(|e| match e {
                SimError::Scenario { path, msg } => {
                    // The line first, as in every scenario error: the key's, else the entry's.
                    let (line, msg) = split_line(&msg);
                    let line = line.or(entry.filter(|_| path == self.path));
                    let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
                    SimError::Scenario {
                        path,
                        msg: format!("{at}[[replica_groups]] #{} ({what}): {msg}", i + 1),
                    }
                }
                other => other,
            })?;
            out.push(r);
        }
        Ok(out)
    }
}

/// A message's leading `line N: `, split off.
fn split_line(msg: &str) -> (Option<usize>, &str) {
    msg.strip_prefix("line ")
        .and_then(|m| m.split_once(": "))
        .and_then(|(n, rest)| Some((Some(n.parse().ok()?), rest)))
        .unwrap_or((None, msg))
}
