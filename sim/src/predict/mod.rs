//! Output-length predictors. Policies see `predicted_output_tokens`, never the true length; an
//! oracle scheduler is a policy paired with the `oracle` predictor.
//!
//! | predictor | what it knows | parameters (`[predictors.NAME]`) |
//! |---|---|---|
//! | `oracle` | the true output length | — |
//! | `noisy` | true × exp(bias + σ·Z), Z ~ N(0, 1), seeded | `sigma` (0.5), `bias` (0.0) |
//! | `bucket` | the percentile bucket of the true length among the trace's outputs (SSJF's classifier), wrong with probability `confusion_rate` (then a uniformly random other bucket); predicts the bucket's median | `buckets` (4), `confusion_rate` (0.2) |
//! | `history` | ALISE-like retrieval: mean output of the `k` completed requests (within the last `window` completions) whose input lengths are closest; no peeking at the future | `k` (8), `window` (1000), `cold_start_tokens` (128) |
//! | `ranking` | a ranker of known quality: predictions whose Kendall τ with the true lengths is `kendall_tau`, with the trace's output-length distribution ([`rank_noise`]) | `kendall_tau` (0.52: vllm-ltr's OPT-125M ranker for Llama-3-8B on ShareGPT) |
//!
//! **Outliving a prediction** (engine rule, all predictors): when a request has generated as many
//! tokens as predicted and is not finished, its prediction becomes
//! `generated + max(16, prediction / 2)` ([`extend_prediction`]).
//!
//! **Bounded by the context** (engine rule, all predictors): a request of `input` prompt tokens
//! can produce at most `max_context_tokens − input` output tokens (the engine refuses a longer
//! one), so every prediction, at arrival and when extended, is at most that
//! ([`bound_by_context`]). Without the bound a saturating predictor (`noisy` with a large bias,
//! `history` with a huge `cold_start_tokens`) predicted u32::MAX tokens for every request.

pub mod rank_noise;

use std::collections::{BTreeMap, VecDeque};

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};
use crate::rng::{Stream, stream};

/// Estimates a request's output length at arrival and may learn from completions.
pub trait Predictor: Send {
    fn name(&self) -> &'static str;
    /// Predicted output tokens (≥ 1). `true_output_tokens` may only be used by predictors whose
    /// definition is a function of the truth (oracle, noisy, bucket, ranking).
    fn predict(&mut self, input_tokens: u32, true_output_tokens: u32) -> u32;
    /// A request finished (its true lengths are now public knowledge).
    fn observe(&mut self, _input_tokens: u32, _output_tokens: u32) {}
}

/// The documented rule for a request that outlives its prediction.
pub fn extend_prediction(generated: u32, predicted: u32) -> u32 {
    generated.saturating_add(16.max(predicted / 2))
}

/// `predicted` bounded by the output tokens the context leaves a request of `input` prompt
/// tokens (at least 1).
pub fn bound_by_context(predicted: u32, input: u32, max_context_tokens: u32) -> u32 {
    predicted
        .min(max_context_tokens.saturating_sub(input))
        .max(1)
}

/// Knows the true output length.
#[derive(Debug, Default, Clone)]
pub struct Oracle;

impl Predictor for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn predict(&mut self, _input_tokens: u32, true_output_tokens: u32) -> u32 {
        true_output_tokens
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoisyParams {
    /// Standard deviation of the log-normal error.
    pub sigma: f64,
    /// Mean of the log error (bias > 0 over-predicts).
    pub bias: f64,
}
impl Default for NoisyParams {
    fn default() -> Self {
        NoisyParams {
            sigma: 0.5,
            bias: 0.0,
        }
    }
}

pub struct Noisy {
    p: NoisyParams,
    rng: ChaCha8Rng,
}

impl Predictor for Noisy {
    fn name(&self) -> &'static str {
        "noisy"
    }
    fn predict(&mut self, _input: u32, truth: u32) -> u32 {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        let v = truth as f64 * (self.p.bias + self.p.sigma * z).exp();
        v.round().clamp(1.0, u32::MAX as f64) as u32
    }
}

/// Most buckets the `bucket` predictor may have (it sizes two tables by the count).
pub const MAX_BUCKETS: u32 = 65_536;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketParams {
    pub buckets: u32,
    pub confusion_rate: f64,
}
impl BucketParams {
    fn validate(&self) -> Result<()> {
        if self.buckets == 0
            || self.buckets > MAX_BUCKETS
            || !(0.0..=1.0).contains(&self.confusion_rate)
        {
            return Err(SimError::config(format!(
                "[predictors.bucket] needs buckets from 1 to {MAX_BUCKETS} and confusion_rate in [0, 1]"
            )));
        }
        Ok(())
    }
}

impl Default for BucketParams {
    fn default() -> Self {
        BucketParams {
            buckets: 4,
            confusion_rate: 0.2,
        }
    }
}

pub struct Bucket {
    /// Upper bounds (inclusive) of buckets 0..n-1 (the last is u32::MAX).
    upper: Vec<u32>,
    medians: Vec<u32>,
    confusion_rate: f64,
    rng: ChaCha8Rng,
}

impl Bucket {
    /// Equal-mass buckets over `reference` outputs.
    pub fn new(p: &BucketParams, reference: &[u32], rng: ChaCha8Rng) -> Result<Self> {
        p.validate()?;
        if reference.is_empty() {
            return Err(SimError::config(
                "bucket predictor: the trace has no outputs to build buckets from",
            ));
        }
        let mut v = reference.to_vec();
        v.sort_unstable();
        let n = p.buckets as usize;
        let mut upper = Vec::with_capacity(n);
        let mut medians = Vec::with_capacity(n);
        for b in 0..n {
            let lo = b * v.len() / n;
            let hi = ((b + 1) * v.len() / n).max(lo + 1).min(v.len());
            medians.push(v[(lo + hi - 1) / 2]);
            upper.push(if b + 1 == n { u32::MAX } else { v[hi - 1] });
        }
        Ok(Bucket {
            upper,
            medians,
            confusion_rate: p.confusion_rate,
            rng,
        })
    }
}

impl Predictor for Bucket {
    fn name(&self) -> &'static str {
        "bucket"
    }
    fn predict(&mut self, _input: u32, truth: u32) -> u32 {
        let n = self.upper.len();
        let mut b = self.upper.partition_point(|&u| u < truth).min(n - 1);
        if n > 1 && self.rng.random::<f64>() < self.confusion_rate {
            let other = self.rng.random_range(0..n - 1);
            b = if other >= b { other + 1 } else { other };
        }
        self.medians[b].max(1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryParams {
    pub k: u32,
    pub window: u32,
    pub cold_start_tokens: u32,
}
impl Default for HistoryParams {
    fn default() -> Self {
        HistoryParams {
            k: 8,
            window: 1000,
            cold_start_tokens: 128,
        }
    }
}

/// k nearest neighbours by input length over a sliding window of completions.
pub struct History {
    p: HistoryParams,
    /// (input, seq) → output, for the neighbour search.
    by_input: BTreeMap<(u32, u64), u32>,
    /// Insertion order, for eviction.
    fifo: VecDeque<(u32, u64)>,
    seq: u64,
}

impl History {
    pub fn new(p: HistoryParams) -> Result<Self> {
        if p.k == 0 || p.window == 0 || p.cold_start_tokens == 0 {
            return Err(SimError::config(
                "[predictors.history] k, window and cold_start_tokens must be ≥ 1",
            ));
        }
        Ok(History {
            p,
            by_input: BTreeMap::new(),
            fifo: VecDeque::new(),
            seq: 0,
        })
    }
}

impl Predictor for History {
    fn name(&self) -> &'static str {
        "history"
    }
    fn predict(&mut self, input: u32, _truth: u32) -> u32 {
        if self.by_input.is_empty() {
            return self.p.cold_start_tokens;
        }
        // Walk outwards from `input`; on equal distance prefer the more recent entry.
        let mut below = self.by_input.range(..(input, 0)).rev().peekable();
        let mut above = self.by_input.range((input, 0)..).peekable();
        let (mut sum, mut n) = (0u64, 0u32);
        while n < self.p.k {
            let pick_below = match (below.peek(), above.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(((bi, bs), _)), Some(((ai, as_), _))) => {
                    let db = input - bi;
                    let da = ai - input;
                    db < da || (db == da && bs > as_)
                }
            };
            let (_, out) = if pick_below {
                below.next().expect("peeked")
            } else {
                above.next().expect("peeked")
            };
            sum += *out as u64;
            n += 1;
        }
        ((sum as f64 / n as f64).round() as u32).max(1)
    }
    fn observe(&mut self, input: u32, output: u32) {
        let key = (input, self.seq);
        self.seq += 1;
        self.by_input.insert(key, output);
        self.fifo.push_back(key);
        while self.fifo.len() > self.p.window as usize {
            let old = self.fifo.pop_front().expect("non-empty");
            self.by_input.remove(&old);
        }
    }
}

pub const PREDICTOR_NAMES: &[&str] = &["oracle", "noisy", "bucket", "history", "ranking"];

fn parse<P: serde::de::DeserializeOwned + Serialize + Default>(
    name: &str,
    t: Option<&toml::Value>,
) -> Result<(P, serde_json::Value)> {
    let p: P = match t {
        None => P::default(),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
            SimError::config(format!(
                "[predictors.{name}]: {}",
                crate::error::plain_serde(e.message().trim())
            ))
        })?,
    };
    let j = serde_json::to_value(&p).map_err(|e| SimError::config(e.to_string()))?;
    Ok((p, j))
}

/// Whether `name` is a known predictor.
pub fn check_name(name: &str) -> Result<()> {
    if PREDICTOR_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(SimError::config(format!(
            "unknown predictor `{}`; {}valid predictors: {}",
            crate::error::echo(name),
            crate::error::did_you_mean(name, PREDICTOR_NAMES.iter().copied()),
            PREDICTOR_NAMES.join(", ")
        )))
    }
}

/// Check a `[predictors.NAME]` table (known keys, valid values) without building the predictor
/// (which may need the trace), so that tables of predictors a run does not use are checked too.
pub fn check_params(name: &str, table: &toml::Value) -> Result<()> {
    check_name(name)?;
    match name {
        "bucket" => {
            let (p, _) = parse::<BucketParams>(name, Some(table))?;
            p.validate()
        }
        "ranking" => {
            let (p, _) = parse::<rank_noise::RankingParams>(name, Some(table))?;
            p.validate()
        }
        "oracle" => match table.as_table().and_then(|t| t.keys().next()) {
            Some(k) => Err(SimError::config(format!(
                "[predictors.oracle]: unknown field `{k}`: the oracle predictor has no parameters"
            ))),
            None => Ok(()),
        },
        // The others need nothing from the trace: build one and drop it.
        _ => build(name, Some(table), 0, &mut || Ok(Vec::new())).map(|_| ()),
    }
}

/// Build a predictor. `reference_outputs` is called only by `bucket` and `ranking` (they need the
/// trace's output distribution).
pub fn build(
    name: &str,
    table: Option<&toml::Value>,
    seed: u64,
    reference_outputs: &mut dyn FnMut() -> Result<Vec<u32>>,
) -> Result<(Box<dyn Predictor>, serde_json::Value)> {
    check_name(name)?;
    let rng = stream(seed, Stream::Predictor);
    Ok(match name {
        "oracle" => (Box::new(Oracle), serde_json::json!({})),
        "noisy" => {
            let (p, j) = parse::<NoisyParams>(name, table)?;
            if !(p.sigma.is_finite() && p.sigma >= 0.0 && p.bias.is_finite()) {
                return Err(SimError::config(
                    "[predictors.noisy] sigma must be ≥ 0 and bias finite",
                ));
            }
            (Box::new(Noisy { p, rng }), j)
        }
        "bucket" => {
            let (p, j) = parse::<BucketParams>(name, table)?;
            (Box::new(Bucket::new(&p, &reference_outputs()?, rng)?), j)
        }
        "ranking" => {
            let (p, j) = parse::<rank_noise::RankingParams>(name, table)?;
            p.validate()?;
            (
                Box::new(rank_noise::RankNoise::new(&p, &reference_outputs()?, rng)?),
                j,
            )
        }
        _ => {
            let (p, j) = parse::<HistoryParams>(name, table)?;
            (Box::new(History::new(p)?), j)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_rule() {
        assert_eq!(extend_prediction(10, 10), 26);
        assert_eq!(extend_prediction(100, 100), 150);
    }

    #[test]
    fn noisy_zero_sigma_is_exact_and_bias_scales() {
        let mut n = Noisy {
            p: NoisyParams {
                sigma: 0.0,
                bias: 0.0,
            },
            rng: stream(1, Stream::Predictor),
        };
        assert_eq!(n.predict(5, 100), 100);
        let mut b = Noisy {
            p: NoisyParams {
                sigma: 0.0,
                bias: 2f64.ln(),
            },
            rng: stream(1, Stream::Predictor),
        };
        assert_eq!(b.predict(5, 100), 200);
    }

    #[test]
    fn buckets_by_hand() {
        let reference: Vec<u32> = (1..=8).collect();
        let p = BucketParams {
            buckets: 2,
            confusion_rate: 0.0,
        };
        let mut b = Bucket::new(&p, &reference, stream(0, Stream::Predictor)).unwrap();
        // Buckets {1..4} (median 2) and {5..8} (median 6).
        assert_eq!(b.predict(0, 3), 2);
        assert_eq!(b.predict(0, 4), 2);
        assert_eq!(b.predict(0, 5), 6);
        assert_eq!(b.predict(0, 1000), 6);
        let p = BucketParams {
            buckets: 2,
            confusion_rate: 1.0,
        };
        let mut c = Bucket::new(&p, &reference, stream(0, Stream::Predictor)).unwrap();
        assert_eq!(c.predict(0, 3), 6, "always the other bucket");
    }

    #[test]
    fn history_uses_nearest_inputs_only_from_the_past() {
        let mut h = History::new(HistoryParams {
            k: 2,
            window: 3,
            cold_start_tokens: 50,
        })
        .unwrap();
        assert_eq!(h.predict(10, 999), 50);
        h.observe(10, 100);
        h.observe(20, 200);
        h.observe(1000, 5000);
        // Nearest two to 12: inputs 10 and 20 → (100 + 200)/2.
        assert_eq!(h.predict(12, 999), 150);
        h.observe(11, 110); // window 3 evicts (10, 100)
        assert_eq!(h.predict(12, 999), 155);
    }
}
