//! `least-work` — join the replica with the smallest *predicted outstanding work*: the sum, over
//! its unfinished requests, of the scenario cost model's remaining time of each request on its own
//! (its (re-)prefill if no KV is resident, plus its remaining decode iterations at its current
//! context), from the request's **predicted** output length
//! ([`crate::policy::common::remaining_time_s`], the estimate SRPT, SJF and ALISE rank by). The
//! batch-size-1 times overstate how long a batched replica takes, but every replica is priced the
//! same way, so the ranking is that of the outstanding tokens weighted by their cost — a
//! join-shortest-work-queue router (`least-outstanding` is the request-count version). With the
//! `oracle` predictor it knows the true remaining work. Ties go to the lowest index.
//!
//! Cost: O(log replicas) per replica whose load changed since the previous arrival
//! ([`super::ClusterView::changed`]; the sums sit in a [`super::min_tree::MinTree`]), plus
//! O(unfinished requests) of each of those whose requests changed (a replica's sum is cached with
//! its [`super::ReplicaLoad::requests_version`], so an unchanged replica's sum is reused with the
//! same bits; a changed one is re-added in slot order, never adjusted by a difference). The two cost-model queries per request (a prefill of p tokens, a decode at context c;
//! p, c ≤ the context limit) are memoised in tables filled on first use, so a query is a table
//! lookup with exactly the cost model's value.

use std::sync::Arc;

use super::min_tree::Scores;
use super::{ClusterView, Incoming, NoParams, Router, RouterEntry, RouterEnv, parse_params};
use crate::cost::{BatchShape, CostModel};
use crate::error::Result;
use crate::vocab::request::Request;

pub const ENTRY: RouterEntry = RouterEntry {
    name: "least-work",
    summary: "smallest predicted outstanding work (cost model × predicted outputs; ties: lowest index)",
    build,
};

fn build(
    table: Option<&toml::Value>,
    env: &RouterEnv,
) -> Result<(Box<dyn Router>, serde_json::Value)> {
    let (_, json) = parse_params::<NoParams>("least-work", table)?;
    Ok((
        Box::new(LeastWork::new(env.cost.clone(), env.max_context_tokens)),
        json,
    ))
}

/// Largest memo table (entries); longer contexts query the cost model directly.
const MAX_TABLE: usize = 1 << 16;

pub struct LeastWork {
    cost: Arc<dyn CostModel>,
    /// `prefill_s[p]`: one prefill of p tokens alone; `decode_s[c]`: one decode at context c;
    /// NaN until first used.
    prefill_s: Vec<f64>,
    decode_s: Vec<f64>,
    /// Per replica: the requests' version and their summed work at it.
    sums: Vec<(u64, f64)>,
    /// The sums in a tournament tree.
    scores: Scores,
    /// Requests priced so far (the cost of routing, for tests).
    priced: u64,
}

impl LeastWork {
    /// Memoise the cost model for prefills and contexts up to `max_context_tokens`.
    pub fn new(cost: Arc<dyn CostModel>, max_context_tokens: u32) -> Self {
        let n = (max_context_tokens as usize + 1).min(MAX_TABLE);
        LeastWork {
            cost,
            prefill_s: vec![f64::NAN; n],
            decode_s: vec![f64::NAN; n],
            sums: Vec::new(),
            scores: Scores::default(),
            priced: 0,
        }
    }

    fn prefill_uncached(&self, tokens: u32) -> f64 {
        let mut b = BatchShape::default();
        b.add_prefill(tokens);
        self.cost.iteration_s(&b).unwrap_or(0.0)
    }

    fn decode_uncached(&self, context: u32) -> f64 {
        let mut b = BatchShape::default();
        b.add_decode(context);
        self.cost.iteration_s(&b).unwrap_or(0.0)
    }

    fn prefill(&mut self, tokens: u32) -> f64 {
        match self.prefill_s.get(tokens as usize) {
            Some(t) if !t.is_nan() => *t,
            Some(_) => {
                let t = self.prefill_uncached(tokens);
                self.prefill_s[tokens as usize] = t;
                t
            }
            None => self.prefill_uncached(tokens),
        }
    }

    fn decode(&mut self, context: u32) -> f64 {
        match self.decode_s.get(context as usize) {
            Some(t) if !t.is_nan() => *t,
            Some(_) => {
                let t = self.decode_uncached(context);
                self.decode_s[context as usize] = t;
                t
            }
            None => self.decode_uncached(context),
        }
    }

    /// [`crate::policy::common::remaining_time_s`], memoised.
    pub fn remaining_s(&mut self, r: &Request) -> f64 {
        let mut total = 0.0;
        let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
        if r.needs_prefill() {
            total += self.prefill(r.prefill_tokens());
            decodes = decodes.saturating_sub(1);
        } else if r.in_prefill() {
            // A chunked prefill under way: the rest of it, attending to the chunks done.
            let mut b = BatchShape::default();
            b.add_prefill_chunk(r.prefill_left(), r.kv_tokens);
            total += self.cost.iteration_s(&b).unwrap_or(0.0);
            decodes = decodes.saturating_sub(1);
        }
        if decodes > 0 {
            total += decodes as f64 * self.decode(r.input_tokens + r.generated_tokens.max(1));
        }
        total
    }
}

impl Router for LeastWork {
    fn name(&self) -> &'static str {
        "least-work"
    }
    fn route(&mut self, _req: &Incoming, cluster: &ClusterView) -> usize {
        if self.sums.len() != cluster.replicas() {
            // Version 0 with work NaN: no slab has changed yet, and NaN is never reused.
            self.sums = vec![(0, f64::NAN); cluster.replicas()];
        }
        let mut sums = std::mem::take(&mut self.sums);
        let mut scores = std::mem::take(&mut self.scores);
        let best = scores.argmin(cluster, |i, r| {
            let (version, sum) = &mut sums[i];
            if *version != r.requests_version() || sum.is_nan() {
                *version = r.requests_version();
                self.priced += r.outstanding() as u64;
                *sum = r.requests().map(|q| self.remaining_s(q)).sum::<f64>();
            }
            *sum
        });
        self.sums = sums;
        self.scores = scores;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cluster, pick, req};
    use super::*;
    use crate::cost::linear::LinearCost;
    use crate::policy::common::remaining_time_s;

    fn linear() -> Arc<dyn CostModel> {
        // 10 ms + 0.1 ms per prefill token + 1 µs per context token.
        let cost: LinearCost = toml::from_str(
            "a_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.000001",
        )
        .unwrap();
        Arc::new(cost)
    }

    #[test]
    fn smallest_predicted_work_not_fewest_requests() {
        let cost: LinearCost = toml::from_str(
            "a_s = 0.01\nb_s_per_token = 0.0001\nc_s_per_token_sq = 0.0\nd_s_per_request = 0.0\ne_s_per_context_token = 0.0",
        )
        .unwrap();
        let mut r = LeastWork::new(Arc::new(cost), 2048);
        // Replica 0: one request, 100-token prompt, 50 predicted outputs, none yet:
        //   prefill 20 ms + 49 decodes × 10 ms = 510 ms.
        // Replica 1: two started requests with 10 and 20 outputs left: (10 + 20) × 10 ms = 300 ms.
        // Replica 2: one started request with 31 left: 310 ms.
        let c = cluster(vec![
            (0, vec![req(0, 100, 50, 0)]),
            (0, vec![req(1, 10, 15, 5), req(2, 10, 25, 5)]),
            (0, vec![req(3, 10, 40, 9)]),
        ]);
        assert_eq!(pick(&mut r, &c), 1);
        // An empty replica has no work.
        let c = cluster(vec![(0, vec![req(0, 10, 2, 1)]), (0, vec![])]);
        assert_eq!(pick(&mut r, &c), 1);
    }

    #[test]
    fn unchanged_replicas_are_not_repriced_and_choices_match_a_fresh_router() {
        let mut r = LeastWork::new(linear(), 2048);
        let mut c = cluster(vec![
            (0, vec![req(0, 100, 50, 0), req(1, 10, 5, 0)]),
            (0, vec![req(2, 10, 15, 5), req(3, 10, 25, 5)]),
            (0, vec![req(4, 10, 40, 9)]),
        ]);
        // Work: replica 0 ≈ 0.57 s, replica 1 ≈ 0.30 s, replica 2 ≈ 0.31 s.
        assert_eq!(pick(&mut r, &c), 1);
        assert_eq!(r.priced, 5);
        // Nothing changed: every sum is reused.
        assert_eq!(pick(&mut r, &c), 1);
        assert_eq!(r.priced, 5);
        // Replica 1's first request is predicted far longer (written through the slab): only
        // replica 1 is repriced, and the choice is that of a router without a cache.
        c.0[1].reqs.get_mut(0).predicted_output_tokens = 400;
        let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
        assert_eq!((pick(&mut r, &c), fresh), (2, 2));
        assert_eq!(r.priced, 7);
        // A long request added to replica 2 reprices replica 2 only.
        c.0[2].reqs.insert(req(5, 10, 900, 0));
        let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
        assert_eq!((pick(&mut r, &c), fresh), (0, 0));
        assert_eq!(r.priced, 9);
    }

    #[test]
    fn tables_equal_the_policies_estimate_exactly() {
        let cost = linear();
        let mut w = LeastWork::new(cost.clone(), 64);
        // Inside and outside the tabulated range (context 64).
        // Twice: the first pass fills the tables, the second reads them.
        for (input, predicted, generated) in [
            (1, 1, 0),
            (10, 30, 0),
            (10, 30, 7),
            (40, 20, 20),
            (40, 20, 30),
            (60, 100, 50),
            (500, 9, 0),
            (500, 9, 3),
        ]
        .repeat(2)
        {
            let r = req(0, input, predicted, generated);
            assert_eq!(
                w.remaining_s(&r).to_bits(),
                remaining_time_s(cost.as_ref(), &r).to_bits(),
                "{input} {predicted} {generated}"
            );
        }
    }
}
