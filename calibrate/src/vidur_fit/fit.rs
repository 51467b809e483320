//! The fit itself: a deterministic coarse-to-fine grid search in log-parameter space minimising the
//! mean absolute log-ratio |ln(predicted / measured)| of each operator group, with the predictions
//! taken from [`AnalyticCost`]'s own per-operator methods (so the fit always matches the formula the
//! simulator runs). Errors are reported as |predicted / measured − 1|.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use servesim::catalogue::{GpuSpec, ModelSpec};
use servesim::cost::analytic::{AnalyticCost, AnalyticParams};

use super::data::{AllReduceSample, AttnPhase, AttnSample, LayerSample};

/// Fixed per-iteration overhead: the GPU idles while vLLM's CPU side collects the step's output
/// (GPU→CPU copy of the sampled tokens, detokenization), runs the scheduler and builds the next
/// step's input tensors. Vidur's operator profiles do not contain it (its CPU-overhead model is off
/// by default and its profiles ship none), so it is **not fitted**; 4 ms is a published GPU figure
/// for vLLM v0 before v0.6 (whose multi-step scheduling and asynchronous output processing exist to
/// hide it), at the small batches of a moderately loaded server:
/// - vllm-project/vllm issue #6854 ("[RFC]: Multi-Step Scheduling", 2024-07-26, vLLM 0.5.x):
///   "GPU is often idle, waiting for CPU operations (5-13ms of GPU bubble)"; in its Nsight traces
///   "each highlighted redbox is about 4ms of GPU bubble", incurred on every decode step (the RFC
///   does not name the traced setup; its implementation, PR #7000, is benchmarked with
///   Llama-3-8B on one H100);
/// - WukLab, "Can Scheduling Overhead Dominate LLM Inference Performance?" (2024-09-10; repository
///   WukLab/wuklab_sysml, `content/posts/scheduling_overhead.md`, Figure 2 `vLLM_A100.svg`):
///   vLLM 0.5.4, one A100, Llama-3-8B, 300 requests at once, per-iteration CPU scheduling time
///   (scheduling + input preparation + output processing) read from the figure's bars: 4.1 ms
///   with LooGLE (few, long requests per batch) and 14.3 / 21.8 / 17.2 ms with 1024:64,
///   1024:1024 and ShareGPT (many requests per batch); the post finds the time proportional to
///   the number of requests in the batch, which a constant cannot follow (it under-states large
///   decode batches).
///
/// It is not tuned to reproduce any paper's or simulator's numbers.
pub const ITERATION_OVERHEAD_S: f64 = 4.0e-3;

/// Significant digits kept in the fitted parameters written to the catalogue.
pub const SIG_DIGITS: i32 = 4;

/// The operator groups fitted and reported separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// attn_pre_proj + attn_post_proj + mlp_up_proj + mlp_down_proj vs `linear_layer_s`.
    Linear,
    /// Norms, activation, rotary, residual add vs `small_ops_layer_s`.
    SmallOps,
    /// Prefill attention kernel vs `prefill_attention_layer_s`.
    AttnPrefill,
    /// Decode attention kernel vs `decode_attention_layer_s`.
    AttnDecode,
    /// NCCL all-reduce vs `allreduce_bytes_s`.
    AllReduce,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Linear,
        Group::SmallOps,
        Group::AttnPrefill,
        Group::AttnDecode,
        Group::AllReduce,
    ];
    /// Short name, used in `fit_*` keys.
    pub fn key(self) -> &'static str {
        match self {
            Group::Linear => "linear",
            Group::SmallOps => "small_ops",
            Group::AttnPrefill => "attn_prefill",
            Group::AttnDecode => "attn_decode",
            Group::AllReduce => "allreduce",
        }
    }
    /// What the group sums, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Group::Linear => "GEMMs: attn_pre_proj + attn_post_proj + mlp_up_proj + mlp_down_proj",
            Group::SmallOps => {
                "small ops: input_layernorm + post_attention_layernorm + mlp_act + attn_rope + add"
            }
            Group::AttnPrefill => "prefill attention kernel",
            Group::AttnDecode => "decode attention kernel",
            Group::AllReduce => "NCCL all-reduce (one node)",
        }
    }
}

/// Absolute relative errors |pred/meas − 1| over a set of points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrStats {
    pub n: usize,
    pub mean: f64,
    pub max: f64,
}

impl ErrStats {
    pub fn of(pairs: impl IntoIterator<Item = (f64, f64)>) -> ErrStats {
        let (mut n, mut sum, mut max) = (0usize, 0.0f64, 0.0f64);
        for (pred, meas) in pairs {
            let e = (pred / meas - 1.0).abs();
            n += 1;
            sum += e;
            max = max.max(e);
        }
        ErrStats {
            n,
            mean: if n == 0 { 0.0 } else { sum / n as f64 },
            max,
        }
    }
}

/// One row of the error table: a group at one TP degree (`None`: all degrees pooled).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrRow {
    pub group: Group,
    pub tp: Option<u32>,
    pub stats: ErrStats,
}

/// Everything measured on one GPU type.
#[derive(Debug, Clone)]
pub struct GpuData {
    /// Vidur's device name (`a100`, `h100`).
    pub device: String,
    /// The catalogue GPU whose datasheet peaks the efficiencies are relative to.
    pub catalogue_gpu: String,
    pub gpu: GpuSpec,
    /// Catalogue models referenced by the samples.
    pub models: BTreeMap<String, ModelSpec>,
    pub layers: Vec<LayerSample>,
    /// The attention samples and the catalogue model they were measured on, if any.
    pub attention: Option<(String, Vec<AttnSample>)>,
    pub all_reduce: Vec<AllReduceSample>,
    /// A model whose head count every all-reduce worker count divides (the all-reduce formula
    /// depends on bytes only; `AnalyticCost` just needs a valid model to be built).
    pub reference_model: String,
}

/// Where a GPU's attention efficiencies come from.
#[derive(Debug, Clone, PartialEq)]
pub enum AttnSource {
    /// Fitted on this GPU's own samples.
    Fitted,
    /// Copied from another device's fit (named).
    CarriedFrom(String),
}

/// The result of fitting one GPU type.
#[derive(Debug, Clone)]
pub struct GpuFit {
    pub device: String,
    pub catalogue_gpu: String,
    /// Fitted parameters, rounded to [`SIG_DIGITS`] significant digits.
    pub params: AnalyticParams,
    pub attention: AttnSource,
    /// Errors of the rounded parameters, per group and TP, then pooled.
    pub errors: Vec<ErrRow>,
    /// Models in the layer data (catalogue names).
    pub models: Vec<String>,
}

impl GpuFit {
    /// The pooled (all-TP) error row of a group, if that group was evaluated.
    pub fn pooled(&self, g: Group) -> Option<ErrStats> {
        self.errors
            .iter()
            .find(|r| r.group == g && r.tp.is_none())
            .map(|r| r.stats)
    }
}

/// Round to `digits` significant digits (0 stays 0).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let e = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - e);
    let r = (x * scale).round() / scale;
    // Re-parse the shortest decimal form so the value equals what TOML will read back.
    format!("{r:e}").parse().unwrap_or(r)
}

/// Minimise `obj` over the box `bounds` (all bounds > 0) on log-spaced grids: a coarse grid over
/// the whole box (81 points per dimension for one or two parameters, 31 for three), then
/// refinements spanning ±2 steps of the previous grid around its best point (21 points per
/// dimension, 11 for three parameters) until the grid step is below 1e-5 in log space.
/// Deterministic: the first best point in grid order wins ties.
pub fn search_log(obj: &dyn Fn(&[f64]) -> f64, bounds: &[(f64, f64)]) -> Vec<f64> {
    let d = bounds.len();
    assert!(
        (1..=3).contains(&d) && bounds.iter().all(|&(l, h)| l > 0.0 && h > l),
        "bad bounds {bounds:?}"
    );
    let (n_coarse, n_fine): (usize, usize) = if d <= 2 { (81, 21) } else { (31, 11) };
    let log_lo: Vec<f64> = bounds.iter().map(|b| b.0.ln()).collect();
    let log_hi: Vec<f64> = bounds.iter().map(|b| b.1.ln()).collect();
    let mut lo = log_lo.clone();
    let mut hi = log_hi.clone();
    let mut best: Vec<f64> = lo.iter().map(|v| v.exp()).collect();
    let mut n = n_coarse;
    loop {
        let steps: Vec<f64> = (0..d).map(|k| (hi[k] - lo[k]) / (n - 1) as f64).collect();
        let mut best_val = f64::INFINITY;
        let mut x = vec![0.0; d];
        for idx in 0..n.pow(d as u32) {
            let mut rem = idx;
            for k in 0..d {
                x[k] = (lo[k] + steps[k] * (rem % n) as f64).exp();
                rem /= n;
            }
            let v = obj(&x);
            if v < best_val {
                best_val = v;
                best.clone_from(&x);
            }
        }
        if steps.iter().all(|&s| s < 1e-5) {
            return best;
        }
        for k in 0..d {
            let c = best[k].ln();
            lo[k] = (c - 2.0 * steps[k]).max(log_lo[k]);
            hi[k] = (c + 2.0 * steps[k]).min(log_hi[k]);
        }
        n = n_fine;
    }
}

/// Valid parameters every fitted group starts from (each group's prediction reads only its own
/// fields, so these placeholders never enter a fitted number).
pub fn neutral_params() -> AnalyticParams {
    AnalyticParams {
        gemm_compute_eff: 1.0,
        gemm_memory_eff: 1.0,
        gemm_latency_s: 0.0,
        attn_prefill_eff: 1.0,
        attn_prefill_latency_s: 0.0,
        attn_decode_eff: 1.0,
        attn_decode_latency_s: 0.0,
        attn_decode_s_per_request: 0.0,
        elementwise_eff: 1.0,
        layer_overhead_s: 0.0,
        layer_s_per_token: 0.0,
        iteration_overhead_s: ITERATION_OVERHEAD_S,
        allreduce_latency_s: 0.0,
        allreduce_eff: 1.0,
    }
}

fn cost(model: &ModelSpec, gpu: &GpuSpec, tp: u32, p: &AnalyticParams) -> Result<AnalyticCost> {
    Ok(AnalyticCost::new(
        model.clone(),
        gpu.clone(),
        tp,
        p.clone(),
    )?)
}

fn model<'a>(data: &'a GpuData, name: &str) -> Result<&'a ModelSpec> {
    data.models
        .get(name)
        .with_context(|| format!("model `{name}` is not in the fit's model table"))
}

/// A set of measured points sharing one `AnalyticCost` (one model at one TP degree) and a
/// predictor reading one operator group from it.
struct PointSet<'a> {
    model: &'a ModelSpec,
    tp: u32,
    /// (x, y, measured seconds); what x and y are depends on the group.
    points: Vec<(f64, f64, f64)>,
}

/// The measured points of `group`, grouped by (model, TP), with the predictor of that group.
struct Points<'a> {
    group: Group,
    sets: Vec<PointSet<'a>>,
    gpu: &'a GpuSpec,
}

impl<'a> Points<'a> {
    fn new(data: &'a GpuData, group: Group) -> Result<Points<'a>> {
        let mut sets: Vec<PointSet<'a>> = Vec::new();
        let mut push = |m: &'a ModelSpec, tp: u32, pt: (f64, f64, f64)| match sets
            .iter_mut()
            .find(|s| std::ptr::eq(s.model, m) && s.tp == tp)
        {
            Some(s) => s.points.push(pt),
            None => sets.push(PointSet {
                model: m,
                tp,
                points: vec![pt],
            }),
        };
        match group {
            Group::Linear | Group::SmallOps => {
                for s in &data.layers {
                    let meas = if group == Group::Linear {
                        s.linear_s
                    } else {
                        s.small_s
                    };
                    push(model(data, &s.model)?, s.tp, (s.tokens as f64, 0.0, meas));
                }
            }
            Group::AttnPrefill | Group::AttnDecode => {
                let (name, samples) = data
                    .attention
                    .as_ref()
                    .with_context(|| format!("{}: no attention samples", data.device))?;
                let m = model(data, name)?;
                for s in samples {
                    match (group, s.phase) {
                        // A chunk of `c` new tokens after `k` cached ones does causal attention over
                        // c·k + c²/2 query-key pairs; the model's Σ s² term counts s²/2 pairs per
                        // prompt, so the chunk enters as c·(c + 2k).
                        (Group::AttnPrefill, AttnPhase::Prefill) => {
                            let (c, k) = (s.chunk as f64, s.kv as f64);
                            push(m, 1, (c * (c + 2.0 * k), 0.0, s.time_s));
                        }
                        // A decode with k cached tokens attends to k + 1 (its new token included, as
                        // `BatchShape::decode_context_tokens` counts).
                        (Group::AttnDecode, AttnPhase::Decode) => {
                            let b = s.batch as f64;
                            push(m, 1, (b, b * (s.kv as f64 + 1.0), s.time_s));
                        }
                        _ => {}
                    }
                }
            }
            Group::AllReduce => {
                let m = model(data, &data.reference_model)?;
                for s in &data.all_reduce {
                    push(m, s.workers, (s.bytes, 0.0, s.time_s));
                }
            }
        }
        if sets.is_empty() {
            bail!("{}: no {} samples", data.device, group.key());
        }
        Ok(Points {
            group,
            sets,
            gpu: &data.gpu,
        })
    }

    fn predict(&self, c: &AnalyticCost, x: f64, y: f64) -> f64 {
        match self.group {
            Group::Linear => c.linear_layer_s(x),
            Group::SmallOps => c.small_ops_layer_s(x),
            Group::AttnPrefill => c.prefill_attention_layer_s(x),
            Group::AttnDecode => c.decode_attention_layer_s(x, y),
            Group::AllReduce => c.allreduce_bytes_s(x),
        }
    }

    /// (TP, predicted, measured) of every point.
    fn pairs(&self, p: &AnalyticParams) -> Result<Vec<(u32, f64, f64)>> {
        let mut out = Vec::new();
        for s in &self.sets {
            let c = cost(s.model, self.gpu, s.tp, p)?;
            out.extend(
                s.points
                    .iter()
                    .map(|&(x, y, m)| (s.tp, self.predict(&c, x, y), m)),
            );
        }
        Ok(out)
    }

    /// The fit objective, mean |ln(pred/meas)|; +∞ for parameters the model rejects.
    fn objective(&self, p: &AnalyticParams) -> f64 {
        let (mut n, mut sum) = (0usize, 0.0);
        for s in &self.sets {
            let Ok(c) = cost(s.model, self.gpu, s.tp, p) else {
                return f64::INFINITY;
            };
            for &(x, y, m) in &s.points {
                sum += (self.predict(&c, x, y) / m).ln().abs();
                n += 1;
            }
        }
        sum / n as f64
    }

    /// Fit the parameters `set` writes (one per entry of `bounds`) starting from `base`, and
    /// return `base` with them set, rounded to [`SIG_DIGITS`].
    fn fit(
        &self,
        base: &AnalyticParams,
        bounds: &[(f64, f64)],
        set: &dyn Fn(&mut AnalyticParams, &[f64]),
    ) -> AnalyticParams {
        let x = search_log(
            &|x| {
                let mut q = base.clone();
                set(&mut q, x);
                self.objective(&q)
            },
            bounds,
        );
        let rounded: Vec<f64> = x.iter().map(|&v| round_sig(v, SIG_DIGITS)).collect();
        let mut q = base.clone();
        set(&mut q, &rounded);
        q
    }
}

/// (TP, predicted, measured) of every point of `group` under `p` — the report's raw material.
pub fn group_pairs(
    data: &GpuData,
    group: Group,
    p: &AnalyticParams,
) -> Result<Vec<(u32, f64, f64)>> {
    Points::new(data, group)?.pairs(p)
}

/// Error rows of one group: one per TP degree, ascending, then the pooled row.
pub fn error_rows(group: Group, pairs: &[(u32, f64, f64)]) -> Vec<ErrRow> {
    let mut tps: Vec<u32> = pairs.iter().map(|x| x.0).collect();
    tps.sort_unstable();
    tps.dedup();
    let mut rows: Vec<ErrRow> = tps
        .iter()
        .map(|&tp| ErrRow {
            group,
            tp: Some(tp),
            stats: ErrStats::of(pairs.iter().filter(|x| x.0 == tp).map(|x| (x.1, x.2))),
        })
        .collect();
    rows.push(ErrRow {
        group,
        tp: None,
        stats: ErrStats::of(pairs.iter().map(|x| (x.1, x.2))),
    });
    rows
}

/// Search bounds. Efficiencies: [0.001, 1]; times: wide log ranges around anything physical (the
/// lower ends are below a nanosecond-scale effect, i.e. "zero" for the model).
const EFF: (f64, f64) = (1e-3, 1.0);
const LATENCY: (f64, f64) = (1e-9, 1e-3);

/// Fit one GPU. `carried_attention`: (device, its fitted parameters) to take the attention
/// parameters from when `data` has no attention samples.
pub fn fit_gpu(
    data: &GpuData,
    carried_attention: Option<(&str, &AnalyticParams)>,
) -> Result<GpuFit> {
    let mut p = neutral_params();

    p = Points::new(data, Group::Linear)?.fit(&p, &[EFF, EFF, LATENCY], &|q, x| {
        q.gemm_compute_eff = x[0];
        q.gemm_memory_eff = x[1];
        q.gemm_latency_s = x[2];
    });

    // `layer_s_per_token` stays 0: the element-wise traffic term already scales with tokens, and
    // a free extra per-token term did not lower the error on this data.
    p = Points::new(data, Group::SmallOps)?.fit(&p, &[LATENCY, EFF], &|q, x| {
        q.layer_overhead_s = x[0];
        q.elementwise_eff = x[1];
    });

    let attention = match (&data.attention, carried_attention) {
        (Some(_), _) => {
            p = Points::new(data, Group::AttnPrefill)?.fit(&p, &[EFF, LATENCY], &|q, x| {
                q.attn_prefill_eff = x[0];
                q.attn_prefill_latency_s = x[1];
            });
            p = Points::new(data, Group::AttnDecode)?.fit(&p, &[EFF, LATENCY, LATENCY], &|q, x| {
                q.attn_decode_eff = x[0];
                q.attn_decode_latency_s = x[1];
                q.attn_decode_s_per_request = x[2];
            });
            AttnSource::Fitted
        }
        (None, Some((dev, from))) => {
            p.attn_prefill_eff = from.attn_prefill_eff;
            p.attn_prefill_latency_s = from.attn_prefill_latency_s;
            p.attn_decode_eff = from.attn_decode_eff;
            p.attn_decode_latency_s = from.attn_decode_latency_s;
            p.attn_decode_s_per_request = from.attn_decode_s_per_request;
            AttnSource::CarriedFrom(dev.to_string())
        }
        (None, None) => bail!(
            "{}: no attention samples and no fit to carry attention parameters from",
            data.device
        ),
    };

    p = Points::new(data, Group::AllReduce)?.fit(&p, &[LATENCY, EFF], &|q, x| {
        q.allreduce_latency_s = x[0];
        q.allreduce_eff = x[1];
    });
    p.validate()?;

    let mut errors = Vec::new();
    for g in Group::ALL {
        let measured = match g {
            Group::AttnPrefill | Group::AttnDecode => data.attention.is_some(),
            _ => true,
        };
        if measured {
            errors.extend(error_rows(g, &group_pairs(data, g, &p)?));
        }
    }

    let mut models: Vec<String> = Vec::new();
    for s in &data.layers {
        if !models.contains(&s.model) {
            models.push(s.model.clone());
        }
    }
    Ok(GpuFit {
        device: data.device.clone(),
        catalogue_gpu: data.catalogue_gpu.clone(),
        params: p,
        attention,
        errors,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use servesim::catalogue::Catalogue;

    #[test]
    fn round_sig_keeps_four_digits() {
        assert_eq!(round_sig(0.719_862, 4), 0.7199);
        assert_eq!(round_sig(3.290_546e-5, 4), 3.291e-5);
        assert_eq!(round_sig(0.0, 4), 0.0);
        assert_eq!(round_sig(1234.5, 2), 1200.0);
    }

    #[test]
    fn err_stats_are_mean_and_max_absolute_relative_errors() {
        let e = ErrStats::of([(1.1, 1.0), (0.5, 1.0), (2.0, 2.0)]);
        assert_eq!(e.n, 3);
        assert!((e.mean - (0.1 + 0.5 + 0.0) / 3.0).abs() < 1e-12);
        assert!((e.max - 0.5).abs() < 1e-12);
        assert_eq!(ErrStats::of([]).n, 0);
    }

    #[test]
    fn search_finds_the_minimum_of_a_known_bowl() {
        let obj = |x: &[f64]| (x[0] / 0.3).ln().abs() + (x[1] / 2e-5).ln().abs();
        let x = search_log(&obj, &[(1e-3, 1.0), (1e-9, 1e-3)]);
        assert!((x[0] / 0.3 - 1.0).abs() < 1e-4, "{x:?}");
        assert!((x[1] / 2e-5 - 1.0).abs() < 1e-4, "{x:?}");
        let obj3 = |x: &[f64]| {
            (x[0] / 0.9).ln().powi(2) + (x[1] / 6e-6).ln().powi(2) + (x[2] / 1e-6).ln().powi(2)
        };
        let x = search_log(&obj3, &[(1e-3, 1.0), (1e-9, 1e-3), (1e-9, 1e-3)]);
        for (got, want) in x.iter().zip([0.9, 6e-6, 1e-6]) {
            assert!((got / want - 1.0).abs() < 1e-3, "{x:?}");
        }
        // A minimum outside the box lands on its edge.
        let x = search_log(&|x: &[f64]| (x[0] / 5.0).ln().abs(), &[(1e-3, 1.0)]);
        assert!((x[0] - 1.0).abs() < 1e-9, "{x:?}");
    }

    // Long on purpose: builds one synthetic data set, fits it, then checks every parameter in turn.
    /// Synthetic "measurements" made by the model itself from known parameters: the fit must give
    /// them back (to the 4 significant digits it keeps) with zero error.
    #[test]
    fn fit_recovers_the_parameters_that_generated_the_data() {
        let cat = Catalogue::builtin();
        let gpu = cat.gpu("a100-80gb").unwrap().clone();
        let spec = cat.model("llama-2-7b").unwrap().clone();
        let truth = AnalyticParams {
            gemm_compute_eff: 0.7,
            gemm_memory_eff: 0.8,
            gemm_latency_s: 30e-6,
            attn_prefill_eff: 0.25,
            attn_prefill_latency_s: 20e-6,
            attn_decode_eff: 0.9,
            attn_decode_latency_s: 6e-6,
            attn_decode_s_per_request: 1e-6,
            elementwise_eff: 0.5,
            layer_overhead_s: 9e-6,
            layer_s_per_token: 0.0,
            iteration_overhead_s: ITERATION_OVERHEAD_S,
            allreduce_latency_s: 40e-6,
            allreduce_eff: 0.6,
        };
        let mut layers = Vec::new();
        for tp in [1, 2] {
            let c = AnalyticCost::new(spec.clone(), gpu.clone(), tp, truth.clone()).unwrap();
            for t in [1u32, 8, 64, 128, 256, 512, 2048, 4096] {
                layers.push(LayerSample {
                    model: "llama-2-7b".into(),
                    tp,
                    tokens: t,
                    linear_s: c.linear_layer_s(t as f64),
                    small_s: c.small_ops_layer_s(t as f64),
                });
            }
        }
        let c1 = AnalyticCost::new(spec.clone(), gpu.clone(), 1, truth.clone()).unwrap();
        let mut attn = Vec::new();
        for (chunk, kv) in [(64u32, 0u32), (512, 0), (1024, 512), (3000, 100)] {
            let (c, k) = (chunk as f64, kv as f64);
            attn.push(AttnSample {
                phase: AttnPhase::Prefill,
                batch: 1,
                chunk,
                kv,
                time_s: c1.prefill_attention_layer_s(c * (c + 2.0 * k)),
            });
        }
        for (batch, kv) in [(1u32, 32u32), (64, 32), (8, 2000), (64, 3000), (128, 500)] {
            attn.push(AttnSample {
                phase: AttnPhase::Decode,
                batch,
                chunk: 0,
                kv,
                time_s: c1.decode_attention_layer_s(batch as f64, batch as f64 * (kv as f64 + 1.0)),
            });
        }
        let mut all_reduce = Vec::new();
        for workers in [2, 4, 8] {
            let c = AnalyticCost::new(spec.clone(), gpu.clone(), workers, truth.clone()).unwrap();
            for bytes in [2048.0, 1e6, 8e6, 64e6] {
                all_reduce.push(AllReduceSample {
                    workers,
                    bytes,
                    time_s: c.allreduce_bytes_s(bytes),
                });
            }
        }
        let data = GpuData {
            device: "test".into(),
            catalogue_gpu: "a100-80gb".into(),
            gpu,
            models: [("llama-2-7b".to_string(), spec)].into_iter().collect(),
            layers,
            attention: Some(("llama-2-7b".into(), attn)),
            all_reduce,
            reference_model: "llama-2-7b".into(),
        };
        let fit = fit_gpu(&data, None).unwrap();
        assert_eq!(fit.attention, AttnSource::Fitted);
        let got = toml::Value::try_from(&fit.params).unwrap();
        let want = toml::Value::try_from(&truth).unwrap();
        for (k, w) in want.as_table().unwrap() {
            let (g, w) = (got[k].as_float().unwrap(), w.as_float().unwrap());
            assert!(
                (g - w).abs() <= 1e-3 * w.abs(),
                "{k}: fitted {g}, generated with {w}"
            );
        }
        for r in &fit.errors {
            assert!(r.stats.max < 1e-3, "{r:?}");
        }
        // Carrying attention over to a device without attention samples copies all attn_* values.
        let mut no_attn = data.clone();
        no_attn.attention = None;
        let carried = fit_gpu(&no_attn, Some(("test", &fit.params))).unwrap();
        assert_eq!(carried.attention, AttnSource::CarriedFrom("test".into()));
        assert_eq!(
            carried.params.attn_decode_s_per_request,
            fit.params.attn_decode_s_per_request
        );
        assert!(carried.pooled(Group::AttnPrefill).is_none());
        assert!(fit_gpu(&no_attn, None).is_err());
    }
}
