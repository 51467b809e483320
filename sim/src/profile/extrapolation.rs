//! Counting the queries the profile models answer outside the measured grid, and the report of
//! those counts in `summary.json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{Op, OpSet};

/// Counts the queries a profile-based model answered outside its measured grid. Shared (through
/// an `Arc`) between the models of one run; the run reads it after the simulation.
#[derive(Debug, Default)]
pub struct ExtrapolationCounter {
    iterations: AtomicU64,
    ops: [AtomicU64; Op::COUNT],
    transfers: AtomicU64,
}

impl ExtrapolationCounter {
    /// Record one iteration; `outside` holds the operators it evaluated outside their grid.
    #[inline]
    pub fn record_iteration(&self, outside: OpSet) {
        if !outside.is_empty() {
            self.iterations.fetch_add(1, Ordering::Relaxed);
            for op in outside.iter() {
                self.ops[op.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Record one transfer outside the measured copy grid.
    pub fn record_transfer(&self, op: Op) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.ops[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> ExtrapolationReport {
        ExtrapolationReport {
            iterations: self.iterations.load(Ordering::Relaxed),
            transfers: self.transfers.load(Ordering::Relaxed),
            by_operator: Op::ALL
                .iter()
                .filter_map(|op| {
                    let n = self.ops[op.index()].load(Ordering::Relaxed);
                    (n > 0).then(|| (op.name().to_string(), n))
                })
                .collect(),
        }
    }
}

/// `summary.json` `profile_extrapolations`: how often the profile models were asked outside the
/// measured grid (and extrapolated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtrapolationReport {
    /// Iterations with at least one operator outside its measured grid.
    pub iterations: u64,
    /// Host↔GPU transfers outside the measured copy grid.
    pub transfers: u64,
    /// Operator → queries outside its grid (operators with none omitted).
    pub by_operator: BTreeMap<String, u64>,
}
