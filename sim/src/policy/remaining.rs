//! [`Remaining`]: the remaining-time keys of the ranked policies (`srpt`, `alise`, `sjf`) with
//! the cost model's single-request decode time memoised per context length. A ranked policy
//! re-keys the requests of its last batch at every iteration boundary, and each key was a
//! cost-model call; the memo gives the same integer nanoseconds, so keys and outputs are
//! unchanged.

use std::cell::RefCell;
use std::sync::Arc;

use super::common::{decode_ns, decode_rest_ns, remaining_time_ns_with};
use crate::cost::CostModel;
use crate::vocab::request::Request;
use crate::vocab::time::ns_to_s;

/// Context lengths up to this many tokens are memoised (8 bytes each: at most 8 MiB); longer
/// ones call the cost model each time.
const MEMO_CONTEXT_CAP: usize = 1 << 20;

/// Marks a context length whose decode time is not computed yet.
const UNKNOWN: u64 = u64::MAX;

/// Remaining-time estimates ([`super::common::remaining_time_ns`]) over one cost model.
pub struct Remaining {
    cost: Arc<dyn CostModel>,
    /// Decode-step nanoseconds by context length ([`UNKNOWN`] until first needed).
    decode_ns: RefCell<Vec<u64>>,
}

impl Remaining {
    pub fn new(cost: Arc<dyn CostModel>) -> Self {
        Remaining {
            cost,
            decode_ns: RefCell::new(Vec::new()),
        }
    }

    /// [`super::common::remaining_time_ns`] of `r`.
    pub fn ns(&self, r: &Request) -> u64 {
        remaining_time_ns_with(self.cost.as_ref(), r, |context| self.step_ns(context))
    }

    /// [`super::common::remaining_key_s`] of `r`: the same one conversion of the same integer.
    pub fn key_s(&self, r: &Request) -> f64 {
        ns_to_s(self.ns(r))
    }

    /// [`Remaining::key_s`] of decoding request `r` after `m` more decode steps (its state then,
    /// without building it).
    pub fn key_s_after(&self, r: &Request, m: u32) -> f64 {
        debug_assert!(!r.in_prefill());
        let generated = r.generated_tokens.saturating_add(m);
        let decodes = r.predicted_output_tokens.saturating_sub(generated);
        ns_to_s(decode_rest_ns(r.input_tokens, generated, decodes, |c| {
            self.step_ns(c)
        }))
    }

    fn step_ns(&self, context: u32) -> u64 {
        let i = context as usize;
        if i >= MEMO_CONTEXT_CAP {
            return decode_ns(self.cost.as_ref(), context);
        }
        if let Some(&t) = self.decode_ns.borrow().get(i)
            && t != UNKNOWN
        {
            return t;
        }
        let t = decode_ns(self.cost.as_ref(), context);
        let mut memo = self.decode_ns.borrow_mut();
        if memo.len() <= i {
            memo.resize(i + 1, UNKNOWN);
        }
        memo[i] = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::linear::LinearCost;
    use crate::policy::common::remaining_time_ns;

    /// The memo gives the cost model's own figures, for requests in prefill and in decode, at
    /// short, repeated and uncached (beyond the cap) context lengths.
    #[test]
    fn memoised_keys_equal_the_direct_ones() {
        // Decode time grows with the context, so a memo keyed wrongly would show.
        let cost: Arc<dyn CostModel> = Arc::new(LinearCost {
            a_s: 0.004,
            b_s_per_token: 1e-5,
            c_s_per_token_sq: 1e-9,
            d_s_per_request: 2e-4,
            e_s_per_context_token: 3.3e-7,
        });
        let rem = Remaining::new(cost.clone());
        for (input, generated, predicted) in [
            (10, 0, 50),
            (10, 5, 50),
            (10, 5, 50),
            (11, 4, 50),
            (12, 5, 50),
            (300, 49, 50),
            (2_000_000, 3, 9),
            (7, 60, 50),
        ] {
            let mut r = Request::new(0, 0, input, predicted, predicted);
            r.generated_tokens = generated;
            r.kv_tokens = if generated > 0 {
                input + generated - 1
            } else {
                0
            };
            assert_eq!(rem.ns(&r), remaining_time_ns(cost.as_ref(), &r));
            assert_eq!(
                rem.key_s(&r),
                super::super::common::remaining_key_s(cost.as_ref(), &r)
            );
            if generated == 0 {
                continue;
            }
            // After m more decode steps: the key of the request in that state.
            for m in [1, 2, 7, 40, 60] {
                let mut later = r.clone();
                later.generated_tokens += m;
                later.kv_tokens += m;
                assert_eq!(rem.key_s_after(&r, m), rem.key_s(&later), "m = {m}");
            }
        }
    }
}
