//! `least-work` — join the replica with the smallest *predicted outstanding work*: the sum, over
//! its unfinished requests, of the scenario cost model's remaining time of each request on its own
//! (its (re-)prefill if no KV is resident, plus its remaining decode iterations at its current
//! context), from the request's **predicted** output length, in integer nanoseconds
//! ([`crate::policy::common::remaining_time_ns`], the estimate SRPT, SJF and ALISE rank by). The
//! batch-size-1 times overstate how long a batched replica takes, but every replica is priced the
//! same way, so the ranking is that of the outstanding tokens weighted by their cost — a
//! join-shortest-work-queue router (`least-outstanding` is the request-count version). With the
//! `oracle` predictor it knows the true remaining work. Ties go to the lowest index.
//!
//! **Exact sums, kept per changed request.** A replica's work is the sum of its requests'
//! integer nanoseconds in a `u128` (it cannot overflow: at most 2³² slots of at most 2⁶⁴ ns).
//! Integer addition is exact and order-free, so a sum kept by adding each changed request's new
//! price and subtracting its old one equals a fresh sum over the requests, bit for bit, whatever
//! order the changes came in: the decision is a function of the true sums only. (The tree
//! compares the sums converted once to `f64`, which is exact below 2⁵³ ns ≈ 104 days of work;
//! beyond, sums that round to the same `f64` tie and go to the lowest index.) Sums of `f64`
//! seconds, what this router kept before, are not exact (`a + b − a ≠ b`), so every change of a
//! replica forced a re-sum of all its requests in slot order: O(requests) per arrival, quadratic
//! in a burst where every arrival changes the replica it joins. Keeping exact `f64` sums instead
//! (a wide fixed-point accumulator of every `f64` price) would keep the old per-request prices
//! but needs a multi-word accumulator; integer nanoseconds reuse the policies' estimate and
//! round each request's decode steps as the engine times them.
//!
//! **Which requests changed** comes from the replica's request change log
//! ([`super::ReplicaLoad::requests_changed_since`]): the router keeps, per replica, each slot's
//! price and the log mark they were taken at, and a decision re-prices only the slots logged since
//! (requests added, removed or written). It re-sums the replica when the log restarted since, or
//! lists more slots than the replica has requests (a re-sum is then no dearer).
//!
//! Cost: O(log replicas) per replica whose load changed since the previous arrival
//! ([`super::ClusterView::changed`]; the sums sit in a [`super::min_tree::MinTree`]), plus one
//! pricing per logged change of its requests — each a write the engine made anyway, so amortised
//! O(1) per engine write; a burst of n arrivals costs O(n log replicas), not O(n²). The two
//! cost-model queries per request (a whole prefill of p tokens, a decode at context c; p, c ≤ the
//! context limit) are memoised in tables filled on first use, so a query is a table lookup with
//! exactly the cost model's nanoseconds.

use std::sync::Arc;

use super::min_tree::Scores;
use super::{
    ClusterView, Incoming, NoParams, ReplicaLoad, Router, RouterEntry, RouterEnv, parse_params,
};
use crate::cost::CostModel;
use crate::error::Result;
use crate::policy::common::{self, decode_rest_ns, remaining_time_ns_with};
use crate::vocab::request::{ChangeMark, Request};

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

/// Largest memo table (entries); longer prompts and contexts query the cost model directly.
const MAX_TABLE: usize = 1 << 16;

/// Marks a memo entry not computed yet (no cost-model time rounds to it).
const UNKNOWN: u64 = u64::MAX;

/// `table[i]`, computed by `f(i)` on first use; `f(i)` each time beyond the table.
#[inline]
fn memo(table: &mut [u64], i: u32, f: impl FnOnce(u32) -> u64) -> u64 {
    match table.get_mut(i as usize) {
        Some(t) if *t != UNKNOWN => *t,
        Some(t) => {
            *t = f(i);
            *t
        }
        None => f(i),
    }
}

/// One replica's work as last priced.
#[derive(Debug, Clone, Default)]
struct ReplicaWork {
    /// The replica's change-log mark when it was last priced (`None`: never).
    mark: Option<ChangeMark>,
    /// Each slot's price then (0: no request).
    price_ns: Vec<u64>,
    /// Their sum: the replica's work.
    total_ns: u128,
}

impl ReplicaWork {
    /// Slot `i`'s price becomes `ns`.
    #[inline]
    fn set(&mut self, i: usize, ns: u64) {
        if self.price_ns.len() <= i {
            self.price_ns.resize(i + 1, 0);
        }
        self.total_ns = self.total_ns - self.price_ns[i] as u128 + ns as u128;
        self.price_ns[i] = ns;
    }
}

pub struct LeastWork {
    cost: Arc<dyn CostModel>,
    /// `prefill_ns[p]`: one whole prefill of p tokens alone; `decode_ns[c]`: one decode at
    /// context c; [`UNKNOWN`] until first used.
    prefill_ns: Vec<u64>,
    decode_ns: Vec<u64>,
    /// Per replica: its requests' prices and their sum.
    replicas: Vec<ReplicaWork>,
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
            prefill_ns: vec![UNKNOWN; n],
            decode_ns: vec![UNKNOWN; n],
            replicas: Vec::new(),
            scores: Scores::default(),
            priced: 0,
        }
    }

    /// [`crate::policy::common::remaining_time_ns`] of `r`, memoised.
    #[inline]
    pub fn remaining_ns(&mut self, r: &Request) -> u64 {
        self.priced += 1;
        let cost = self.cost.as_ref();
        let decode_table = &mut self.decode_ns;
        let decode = |c| memo(decode_table, c, |c| common::decode_ns(cost, c));
        if r.mid_prefill {
            // A chunked prefill under way (rare): the rest of it, attending to the chunks done.
            return remaining_time_ns_with(cost, r, decode);
        }
        let mut decodes = r.predicted_output_tokens.saturating_sub(r.generated_tokens);
        let mut total = 0;
        if r.needs_prefill() {
            // A whole (re-)prefill: the rest of the prefill is all of it, with no KV yet.
            total = memo(&mut self.prefill_ns, r.prefill_tokens(), |p| {
                common::prefill_ns(cost, p)
            });
            decodes = decodes.saturating_sub(1);
        }
        total.saturating_add(decode_rest_ns(
            r.input_tokens,
            r.generated_tokens,
            decodes,
            decode,
        ))
    }

    /// Bring `w` up to date with replica load `r` and return its work: re-price the slots the
    /// replica's change log lists since `w`'s mark, or every request when the log cannot tell or
    /// lists more slots than there are requests.
    fn update(&mut self, w: &mut ReplicaWork, r: ReplicaLoad) -> u128 {
        match w.mark.and_then(|m| r.requests_changed_since(m)) {
            Some(slots) if slots.len() <= r.outstanding() => {
                for &s in slots {
                    let ns = r.request(s).map_or(0, |q| self.remaining_ns(q));
                    w.set(s as usize, ns);
                }
            }
            _ => {
                w.price_ns.fill(0);
                let mut total_ns = 0;
                for (s, q) in r.requests_by_slot() {
                    let (i, ns) = (s as usize, self.remaining_ns(q));
                    if w.price_ns.len() <= i {
                        w.price_ns.resize(i + 1, 0);
                    }
                    w.price_ns[i] = ns;
                    total_ns += ns as u128;
                }
                w.total_ns = total_ns;
            }
        }
        w.mark = Some(r.requests_mark());
        w.total_ns
    }
}

impl Router for LeastWork {
    fn name(&self) -> &'static str {
        "least-work"
    }
    fn reads_request_changes(&self) -> bool {
        true
    }
    fn route(&mut self, _req: &Incoming, cluster: &ClusterView) -> usize {
        if self.replicas.len() != cluster.replicas() {
            self.replicas = vec![ReplicaWork::default(); cluster.replicas()];
        }
        let mut replicas = std::mem::take(&mut self.replicas);
        let mut scores = std::mem::take(&mut self.scores);
        // `as f64` rounds to nearest: monotone, and exact below 2^53 ns.
        let best = scores.argmin(cluster, |i, r| self.update(&mut replicas[i], r) as f64);
        self.replicas = replicas;
        self.scores = scores;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cluster, incoming, pick, req};
    use super::*;
    use crate::cost::linear::LinearCost;
    use crate::policy::common::remaining_time_ns;
    use crate::vocab::request::KvLoc;

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
    fn only_changed_requests_are_repriced_and_choices_match_a_fresh_router() {
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
        // that request is repriced, and the choice is that of a router without a cache.
        c.0[1].reqs.get_mut(0).predicted_output_tokens = 400;
        let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
        assert_eq!((pick(&mut r, &c), fresh), (2, 2));
        assert_eq!(r.priced, 6);
        // A long request added to replica 2 is the only one priced.
        c.0[2].reqs.insert(req(5, 10, 900, 0));
        let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
        assert_eq!((pick(&mut r, &c), fresh), (0, 0));
        assert_eq!(r.priced, 7);
        // A request removed from replica 0 prices nothing.
        c.0[0].reqs.remove(0);
        let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
        assert_eq!((pick(&mut r, &c), fresh), (0, 0));
        assert_eq!(r.priced, 7);
    }

    /// Every arrival at t = 0 joins a replica before any request finishes (a burst): each
    /// arrival, and each write of a started iteration, is priced once, not its replica's whole
    /// queue again (O(n), not O(n²)); the kept sums equal fresh sums and the choices a fresh
    /// router's at every step, across restarts of the replicas' change logs.
    #[test]
    fn a_burst_prices_each_change_once_and_keeps_exact_sums() {
        let mut r = LeastWork::new(linear(), 2048);
        let mut c = cluster(vec![(0, vec![]); 3]);
        let n = 1500u64;
        let mut changed: Vec<u32> = (0..3).collect();
        let start = c.0[0].reqs.change_mark();
        let mut writes = 0;
        for k in 0..n {
            let view = ClusterView::with_changed(&c, 0, &changed);
            let got = r.route(&incoming(), &view);
            let fresh = pick(&mut LeastWork::new(linear(), 2048), &c);
            assert_eq!(got, fresh, "arrival {k}");
            for (w, f) in r.replicas.iter().zip(&c.0) {
                let sum: u128 = f
                    .reqs
                    .iter()
                    .map(|q| remaining_time_ns(linear().as_ref(), q) as u128)
                    .sum();
                assert_eq!(w.total_ns, sum, "arrival {k}");
            }
            let f = &mut c.0[got];
            f.reqs.insert(req(
                k,
                10 + (k % 7) as u32 * 30,
                5 + (k % 11) as u32 * 20,
                0,
            ));
            // Every other arrival the replica starts an iteration: its first requests are
            // written (more writes than the change log holds, so it restarts).
            if k % 2 == 0 {
                for s in 0..f.reqs.capacity_hint().min(4) as u32 {
                    let mut q = f.reqs.get_mut(s);
                    q.generated_tokens = 1;
                    q.kv_tokens = q.input_tokens;
                    writes += 1;
                }
            }
            changed = vec![got as u32];
        }
        assert!(c.0[0].reqs.changed_since(start).is_none());
        // One pricing per arrival and per write, plus re-sums, each after more logged changes
        // than requests. The old router re-summed the chosen replica at every arrival:
        // ≈ n² / 6 ≈ 375,000.
        assert!(r.priced <= 2 * (n + writes), "{} priced", r.priced);
    }

    #[test]
    fn tables_equal_the_policies_estimate_exactly() {
        let cost = linear();
        let mut w = LeastWork::new(cost.clone(), 64);
        // Inside and outside the tabulated range (context 64), a chunked prefill under way
        // (`chunk`: its first chunk's tokens) and a recompute-preempted request.
        // Twice: the first pass fills the tables, the second reads them.
        for (input, predicted, generated, chunk) in [
            (1, 1, 0, 0),
            (10, 30, 0, 0),
            (10, 30, 7, 0),
            (40, 20, 20, 0),
            (40, 20, 30, 0),
            (60, 100, 50, 0),
            (500, 9, 0, 0),
            (500, 9, 3, 0),
            (500, 9, 0, 128),
            (30, 9, 0, 16),
        ]
        .repeat(2)
        {
            let mut r = req(0, input, predicted, generated);
            if chunk > 0 {
                (r.kv_tokens, r.mid_prefill, r.kv_loc) = (chunk, true, KvLoc::Gpu);
            }
            assert_eq!(
                w.remaining_ns(&r),
                remaining_time_ns(cost.as_ref(), &r),
                "{input} {predicted} {generated} {chunk}"
            );
            // Re-prefill after a recompute preemption: KV gone, tokens kept.
            r.kv_tokens = 0;
            r.mid_prefill = false;
            r.kv_loc = KvLoc::None;
            assert_eq!(
                w.remaining_ns(&r),
                remaining_time_ns(cost.as_ref(), &r),
                "{input} {predicted} {generated} {chunk} recomputed"
            );
        }
    }
}
