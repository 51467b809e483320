//! `linear` (DistServe/SOLA style):
//! `a + b·prefill_tokens + c·Σ prefill_tokens² + d·decode_requests + e·decode_context_tokens`
//! (with chunked prefill, `Σ prefill_tokens²` is [`BatchShape::prefill_attention_sq`]: a chunk of
//! `c` tokens after a prefix of `p` counts `c² + 2·c·p`),
//! coefficients in seconds per unit, from the scenario.

use serde::{Deserialize, Serialize};

use super::{BatchShape, CostModel};
use crate::error::{Result, SimError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinearCost {
    /// Fixed seconds per iteration.
    pub a_s: f64,
    /// Seconds per prefill token.
    pub b_s_per_token: f64,
    /// Seconds per squared prefill token (Σ over prefill requests of tokens²).
    pub c_s_per_token_sq: f64,
    /// Seconds per decode request.
    pub d_s_per_request: f64,
    /// Seconds per context token attended by decodes.
    pub e_s_per_context_token: f64,
}

impl LinearCost {
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [
            ("a_s", self.a_s),
            ("b_s_per_token", self.b_s_per_token),
            ("c_s_per_token_sq", self.c_s_per_token_sq),
            ("d_s_per_request", self.d_s_per_request),
            ("e_s_per_context_token", self.e_s_per_context_token),
        ] {
            if !v.is_finite() || v < 0.0 || (v != 0.0 && !v.is_normal()) {
                return Err(SimError::config(format!(
                    "[cost] {k} must be 0 or a finite number ≥ 2.2e-308, got {}",
                    crate::error::num(v)
                )));
            }
        }
        // The cheapest iterations: one prefill token, or one decode over one context token.
        let cheapest_s = self.a_s
            + (self.b_s_per_token + self.c_s_per_token_sq)
                .min(self.d_s_per_request + self.e_s_per_context_token);
        if cheapest_s < 1e-9 {
            return Err(SimError::config(format!(
                "[cost] linear: the cheapest iteration (a_s + the smaller of b_s_per_token + c_s_per_token_sq and d_s_per_request + e_s_per_context_token) takes {} s; it must take ≥ 1e-9 s (the simulator's 1 ns clock step; an iteration takes time)",
                crate::error::num(cheapest_s)
            )));
        }
        Ok(())
    }
}

impl CostModel for LinearCost {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn iteration_s(&self, s: &BatchShape) -> Result<f64> {
        Ok(self.a_s
            + self.b_s_per_token * s.prefill_tokens as f64
            + self.c_s_per_token_sq * s.prefill_attention_sq() as f64
            + self.d_s_per_request * s.decode_requests as f64
            + self.e_s_per_context_token * s.decode_context_tokens as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let m = LinearCost {
            a_s: 0.01,
            b_s_per_token: 1e-4,
            c_s_per_token_sq: 1e-8,
            d_s_per_request: 1e-3,
            e_s_per_context_token: 1e-6,
        };
        let mut s = BatchShape::default();
        s.add_prefill(100);
        s.add_decode(50);
        s.add_decode(150);
        // 0.01 + 100e-4 + 1e4*1e-8 + 2e-3 + 200e-6 = 0.0223
        assert!((m.iteration_s(&s).unwrap() - 0.0223).abs() < 1e-12);
    }

    /// With chunked prefill, the attention term of a prompt's chunks sums to the whole prompt's:
    /// only the per-iteration terms (`a`) are paid once per chunk.
    #[test]
    fn chunks_cost_the_whole_prefill_plus_fixed_costs() {
        let m = LinearCost {
            a_s: 0.01,
            b_s_per_token: 1e-4,
            c_s_per_token_sq: 1e-8,
            d_s_per_request: 1e-3,
            e_s_per_context_token: 1e-6,
        };
        let mut whole = BatchShape::default();
        whole.add_prefill(1000);
        let mut sum = 0.0;
        for (c, p) in [(400, 0), (400, 400), (200, 800)] {
            let mut s = BatchShape::default();
            s.add_prefill_chunk(c, p);
            sum += m.iteration_s(&s).unwrap();
        }
        let expect = m.iteration_s(&whole).unwrap() + 2.0 * m.a_s;
        assert!((sum - expect).abs() < 1e-12, "{sum} vs {expect}");
    }
}
