//! Iteration-time models: batch composition → seconds. One trait, several models, selected by the
//! scenario's `[cost]` table.

pub mod analytic;
pub mod constant;
pub mod linear;
pub mod memo;
pub mod profile;

use crate::error::Result;

/// The shape of one iteration's batch, as aggregates (no per-iteration allocation).
///
/// Prefill items process `tokens` prompt tokens each (a recompute re-prefills prompt + generated
/// tokens); decode items process one token each while attending to their whole context. With
/// chunked prefill a prefill item is one chunk of `c` tokens at positions `p … p+c−1` of its prompt
/// (`p` tokens already in the KV cache): its linear layers see `c` tokens, and its causal attention
/// covers `c·p + c(c+1)/2` query-key pairs, the same total over all chunks of a prompt as one
/// unchunked prefill (`docs/chunked-prefill.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchShape {
    pub prefill_requests: u32,
    /// Σ prefill tokens over prefill items.
    pub prefill_tokens: u64,
    /// Σ (prefill tokens)² over prefill items (causal attention work grows with the square).
    pub prefill_tokens_sq: u64,
    /// Σ chunk tokens × prefix tokens over prefill items (the query-key pairs of a chunk against
    /// the part of its prompt already in the KV cache); 0 without chunking.
    pub prefill_prefix_pairs: u64,
    /// Σ prefix tokens over prefill items (KV read again by later chunks); 0 without chunking.
    pub prefill_prefix_tokens: u64,
    pub decode_requests: u32,
    /// Σ context length (KV tokens attended, the new token included) over decode items.
    pub decode_context_tokens: u64,
}

/// For error messages: `2 prefill requests (300 tokens), 5 decode requests (1200 context tokens)`.
impl std::fmt::Display for BatchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} prefill requests ({} tokens), {} decode requests ({} context tokens)",
            self.prefill_requests,
            self.prefill_tokens,
            self.decode_requests,
            self.decode_context_tokens
        )
    }
}

impl BatchShape {
    /// A whole prefill of `tokens` tokens (no prefix in the KV cache).
    pub fn add_prefill(&mut self, tokens: u32) {
        self.add_prefill_chunk(tokens, 0);
    }
    /// A prefill chunk of `tokens` tokens after `prefix_tokens` tokens of its prompt already in the
    /// KV cache.
    pub fn add_prefill_chunk(&mut self, tokens: u32, prefix_tokens: u32) {
        self.prefill_requests += 1;
        self.prefill_tokens += tokens as u64;
        self.prefill_tokens_sq += (tokens as u64) * (tokens as u64);
        self.prefill_prefix_pairs += tokens as u64 * prefix_tokens as u64;
        self.prefill_prefix_tokens += prefix_tokens as u64;
    }
    /// Prefill attention work in units of "squared tokens": Σ (c² + 2·c·p). For unchunked
    /// prefills this is Σ s² (twice the causal pairs, up to the diagonal); a chunk's prefix adds
    /// 2·c·p, so every cost model that prices Σ s² prices chunks consistently: with
    /// `p_k = c_1 + … + c_(k−1)` the chunks of one prompt sum to `Σ c_k² + 2 Σ c_k·p_k = (Σ c_k)²`,
    /// exactly the unchunked prompt's `P²`.
    pub fn prefill_attention_sq(&self) -> u64 {
        self.prefill_tokens_sq + 2 * self.prefill_prefix_pairs
    }
    pub fn add_decode(&mut self, context_tokens: u32) {
        self.decode_requests += 1;
        self.decode_context_tokens += context_tokens as u64;
    }
    pub fn requests(&self) -> u32 {
        self.prefill_requests + self.decode_requests
    }
    /// Tokens run through the linear layers: every prefill token plus one per decode.
    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_requests as u64
    }
    pub fn is_empty(&self) -> bool {
        self.requests() == 0
    }
}

/// An iteration-time model. Must be deterministic and return a finite, non-negative time; a query
/// it cannot answer is an error, never a silent 0.
pub trait CostModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn iteration_s(&self, shape: &BatchShape) -> Result<f64>;
}

/// One model shared by several replicas (a group's replicas share their memo tables).
impl<C: CostModel + ?Sized> CostModel for std::sync::Arc<C> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn iteration_s(&self, shape: &BatchShape) -> Result<f64> {
        (**self).iteration_s(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T5 of docs/chunked-prefill.md: a 3,000-token prompt in chunks 510 × 5 + 450.
    #[test]
    fn chunks_of_a_prompt_add_up_to_the_whole_prefill() {
        let chunks = [510u32, 510, 510, 510, 510, 450];
        let mut total = BatchShape::default();
        let mut pairs = 0u64; // causal query-key pairs c·p + c(c+1)/2, summed
        let mut prefix = 0u32;
        for c in chunks {
            let mut one = BatchShape::default();
            one.add_prefill_chunk(c, prefix);
            total.prefill_tokens_sq += one.prefill_attention_sq();
            pairs += c as u64 * prefix as u64 + c as u64 * (c as u64 + 1) / 2;
            total.prefill_prefix_tokens += one.prefill_prefix_tokens;
            prefix += c;
        }
        assert_eq!(pairs, 4_501_500); // = 3000 · 3001 / 2, as unchunked
        assert_eq!(total.prefill_tokens_sq, 3000 * 3000);
        assert_eq!(total.prefill_prefix_tokens, 7_650); // prefix KV re-read by later chunks
        let mut whole = BatchShape::default();
        whole.add_prefill(3000);
        assert_eq!(whole.prefill_attention_sq(), 3000 * 3000);
        assert_eq!(whole.prefill_prefix_pairs, 0);
    }
}
