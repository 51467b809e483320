//! Model dimensions and random weights (Llama-style blocks: RMSNorm, RoPE, GQA attention, gated
//! SiLU MLP with gate and up fused, no biases, untied LM head). Weights are stored `[in, out]`
//! row-major, so a linear layer is `Y[T, out] = X[T, in] · W`.

use crate::BackendError;

/// The shape of a model the backend runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDims {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_context_tokens: usize,
}

impl ModelDims {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
    /// Width of the fused QKV projection: query heads plus K and V heads.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim()
    }
    /// f32 values of one KV chunk: one layer's K or V of one block.
    pub fn chunk_floats(&self) -> usize {
        self.kv_heads * crate::BLOCK_TOKENS * self.head_dim()
    }
    /// Bytes of one block of KV over all layers (K and V).
    pub fn block_bytes(&self) -> usize {
        2 * self.layers * self.chunk_floats() * 4
    }

    /// Bytes of all weights in f32 (as [`Weights::random`] allocates them); `None` on overflow.
    pub fn weight_bytes(&self) -> Option<usize> {
        let per_layer = [
            self.hidden.checked_mul(self.qkv_width())?,
            self.heads
                .checked_mul(self.head_dim())?
                .checked_mul(self.hidden)?,
            self.hidden.checked_mul(self.ffn)?.checked_mul(3)?,
            self.hidden.checked_mul(2)?,
        ]
        .into_iter()
        .try_fold(0usize, |a, b| a.checked_add(b))?;
        let embeddings = self.vocab.checked_mul(self.hidden)?.checked_mul(2)?;
        self.layers
            .checked_mul(per_layer)?
            .checked_add(embeddings)?
            .checked_add(self.hidden)?
            .checked_mul(4)
    }

    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |m: String| Err(BackendError::Config(m));
        if self.layers == 0 || self.hidden == 0 || self.heads == 0 || self.kv_heads == 0 {
            return bad("layers, hidden, heads and kv_heads must be ≥ 1".into());
        }
        if self.ffn == 0 || self.vocab == 0 || self.max_context_tokens == 0 {
            return bad("ffn, vocab and max_context_tokens must be ≥ 1".into());
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "hidden {} must be a multiple of heads {} with an even head size",
                self.hidden, self.heads
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "heads {} must be a multiple of kv_heads {}",
                self.heads, self.kv_heads
            ));
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (xorshift64*), enough for random weights and shuffles.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// `n` values uniform in [-scale, scale).
    pub fn fill(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
    /// Uniform below `n` (n ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// `[hidden, qkv_width]`.
    pub wqkv: Vec<f32>,
    /// `[heads · head_dim, hidden]`.
    pub wo: Vec<f32>,
    pub mlp_norm: Vec<f32>,
    /// `[hidden, 2 · ffn]`: gate in the first `ffn` columns, up in the rest.
    pub w_up: Vec<f32>,
    /// `[ffn, hidden]`.
    pub w_down: Vec<f32>,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, hidden]`.
    pub embedding: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `[hidden, vocab]`.
    pub lm_head: Vec<f32>,
}

impl Weights {
    /// Uniform random weights scaled by 1/√fan-in (activations stay of order one through the layers).
    pub fn random(d: &ModelDims, seed: u64) -> Weights {
        let mut rng = Rng::new(seed);
        let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let norm = |rng: &mut Rng| (0..d.hidden).map(|_| 1.0 + 0.1 * rng.next_f32()).collect();
        let layers = (0..d.layers)
            .map(|_| LayerWeights {
                attn_norm: norm(&mut rng),
                wqkv: rng.fill(d.hidden * d.qkv_width(), s(d.hidden)),
                wo: rng.fill(d.heads * d.head_dim() * d.hidden, s(d.hidden)),
                mlp_norm: norm(&mut rng),
                w_up: rng.fill(d.hidden * 2 * d.ffn, s(d.hidden)),
                w_down: rng.fill(d.ffn * d.hidden, s(d.ffn)),
            })
            .collect();
        Weights {
            embedding: rng.fill(d.vocab * d.hidden, 1.0),
            layers,
            final_norm: norm(&mut rng),
            lm_head: rng.fill(d.hidden * d.vocab, s(d.hidden)),
        }
    }

    /// Bytes of all weights (f32).
    pub fn bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len()
                    + l.wqkv.len()
                    + l.wo.len()
                    + l.mlp_norm.len()
                    + l.w_up.len()
                    + l.w_down.len()
            })
            .sum();
        4 * (l + self.embedding.len() + self.final_norm.len() + self.lm_head.len())
    }
}

/// One tensor of [`Weights`], as [`random_tensors`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tensor {
    AttnNorm(usize),
    Wqkv(usize),
    Wo(usize),
    MlpNorm(usize),
    WUp(usize),
    WDown(usize),
    Embedding,
    FinalNorm,
    LmHead,
}

/// The tensors of [`Weights::random`]`(d, seed)`, same values, one at a time (a device backend
/// uploads each and drops it, instead of holding every weight on the host at once).
pub fn random_tensors<E>(
    d: &ModelDims,
    seed: u64,
    mut each: impl FnMut(Tensor, Vec<f32>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rng = Rng::new(seed);
    let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let norm = |rng: &mut Rng| (0..d.hidden).map(|_| 1.0 + 0.1 * rng.next_f32()).collect();
    for l in 0..d.layers {
        each(Tensor::AttnNorm(l), norm(&mut rng))?;
        each(
            Tensor::Wqkv(l),
            rng.fill(d.hidden * d.qkv_width(), s(d.hidden)),
        )?;
        let wo = rng.fill(d.heads * d.head_dim() * d.hidden, s(d.hidden));
        each(Tensor::Wo(l), wo)?;
        each(Tensor::MlpNorm(l), norm(&mut rng))?;
        each(Tensor::WUp(l), rng.fill(d.hidden * 2 * d.ffn, s(d.hidden)))?;
        each(Tensor::WDown(l), rng.fill(d.ffn * d.hidden, s(d.ffn)))?;
    }
    each(Tensor::Embedding, rng.fill(d.vocab * d.hidden, 1.0))?;
    each(Tensor::FinalNorm, norm(&mut rng))?;
    each(Tensor::LmHead, rng.fill(d.hidden * d.vocab, s(d.hidden)))
}

/// The token at `position` of sequence `seq`: the backend has no tokenizer, so every sequence's
/// tokens are a fixed pseudo-random function of its id and position (a prefill of n tokens then a
/// decode sees exactly the tokens a prefill of n + 1 sees).
pub fn token_id(seq: u64, position: usize, vocab: usize) -> usize {
    let mut x = seq ^ (position as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x ^ (x >> 31)) % vocab as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tensors_are_the_weights_of_random() {
        let d = ModelDims {
            layers: 2,
            hidden: 32,
            heads: 4,
            kv_heads: 2,
            ffn: 48,
            vocab: 50,
            max_context_tokens: 64,
        };
        let w = Weights::random(&d, 9);
        let mut seen = 0;
        random_tensors::<()>(&d, 9, |t, v| {
            let want = match t {
                Tensor::AttnNorm(l) => &w.layers[l].attn_norm,
                Tensor::Wqkv(l) => &w.layers[l].wqkv,
                Tensor::Wo(l) => &w.layers[l].wo,
                Tensor::MlpNorm(l) => &w.layers[l].mlp_norm,
                Tensor::WUp(l) => &w.layers[l].w_up,
                Tensor::WDown(l) => &w.layers[l].w_down,
                Tensor::Embedding => &w.embedding,
                Tensor::FinalNorm => &w.final_norm,
                Tensor::LmHead => &w.lm_head,
            };
            assert_eq!(&v, want, "{t:?}");
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2 * 6 + 3);
    }

    #[test]
    fn weight_bytes_counts_what_random_allocates() {
        let d = ModelDims {
            layers: 3,
            hidden: 64,
            heads: 8,
            kv_heads: 2,
            ffn: 96,
            vocab: 70,
            max_context_tokens: 64,
        };
        assert_eq!(d.weight_bytes(), Some(Weights::random(&d, 1).bytes()));
        let huge = ModelDims {
            vocab: usize::MAX / 2,
            ..d
        };
        assert_eq!(huge.weight_bytes(), None);
    }
}
