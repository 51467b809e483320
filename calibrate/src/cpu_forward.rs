//! In-forward timing, the CPU runner's default: every iteration operator is timed inside real
//! `CpuBackend::forward` calls (the backend's per-stage clock, [`StageTimes`]), not in isolation.
//!
//! Why: an operator timed alone, back to back, keeps its weights or KV in the last-level cache;
//! inside a forward pass over all layers and the LM head they compete with everything else the
//! iteration reads. On cpu-small-4x512 the isolated operators summed to 15–45 % less than real
//! multi-sequence decode iterations (results/fidelity/README.md), and flushing the cache before
//! each call overshot the other way. Timing inside the forward measures what live mode runs.
//!
//! The grid is the plan's: each decode-attention cell (sequences × context) is a decode forward
//! of that many sequences at that context, each prefill-attention cell (chunk after cached) a
//! prefill forward of one sequence. A GEMM or small-operator cell at `T` tokens takes its samples
//! from every forward of `T` tokens (a decode forward of `T` sequences at [`FILL_CONTEXT`] when
//! the grid has none), the LM head's from every forward of that many sequences. Between calls the
//! backend rewinds the sequences, so a cell repeats the same step at the same context. Copies stay
//! isolated: a swap copies blocks between two RAM pools, outside any forward.

use std::time::Instant;

use anyhow::Result;
use servesim::catalogue::ModelSpec;
use servesim::profile::{Measurement, Op};
use servesim_kernels::{BLOCK_TOKENS, CpuBackend, CpuConfig, ModelDims, SeqStep, StageTimes};

use crate::cpu::{CpuOptions, estimate_call_s};
use crate::plan::{Kernel, PlanItem};

/// Context of the decode forwards added for GEMM or LM-head sizes the attention grid lacks.
pub const FILL_CONTEXT: usize = 256;

/// The step one forward cell repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `batch` sequences decode one token each after `context − 1` cached ones.
    Decode { batch: usize, context: usize },
    /// One sequence prefills `chunk` tokens after `cached` ones.
    Prefill { chunk: usize, cached: usize },
}

impl Shape {
    /// Tokens the forward runs (the GEMMs' `T`).
    pub fn tokens(self) -> usize {
        match self {
            Shape::Decode { batch, .. } => batch,
            Shape::Prefill { chunk, .. } => chunk,
        }
    }
    /// Sequences of the forward (the LM head's rows).
    pub fn sequences(self) -> usize {
        match self {
            Shape::Decode { batch, .. } => batch,
            Shape::Prefill { .. } => 1,
        }
    }
    /// KV blocks the cell holds.
    pub fn blocks(self) -> usize {
        match self {
            Shape::Decode { batch, context } => batch * context.div_ceil(BLOCK_TOKENS),
            Shape::Prefill { chunk, cached } => (chunk + cached).div_ceil(BLOCK_TOKENS),
        }
    }
    /// The steps of one call, for sequences `0..`.
    fn steps(self) -> Vec<SeqStep> {
        match self {
            Shape::Decode { batch, context } => (0..batch as u64)
                .map(|seq| SeqStep {
                    seq,
                    cached_tokens: context.max(1) - 1,
                    new_tokens: 1,
                })
                .collect(),
            Shape::Prefill { chunk, cached } => vec![SeqStep {
                seq: 0,
                cached_tokens: cached,
                new_tokens: chunk,
            }],
        }
    }
    /// A plan item that names the cell in progress lines.
    fn label(self, dims: &ModelDims) -> PlanItem {
        let (heads, kv_heads, head_dim) = (
            dims.heads as u32,
            dims.kv_heads as u32,
            dims.head_dim() as u32,
        );
        let block_tokens = BLOCK_TOKENS as u32;
        match self {
            Shape::Decode { batch, context } => PlanItem {
                op: Op::AttnDecode,
                x: batch as u64,
                y: context as u64,
                kernel: Kernel::AttnDecode {
                    batch: batch as u32,
                    context: context as u32,
                    heads,
                    kv_heads,
                    head_dim,
                    block_tokens,
                },
            },
            Shape::Prefill { chunk, cached } => PlanItem {
                op: Op::AttnPrefill,
                x: chunk as u64,
                y: cached as u64,
                kernel: Kernel::AttnPrefill {
                    chunk: chunk as u32,
                    cached: cached as u32,
                    heads,
                    kv_heads,
                    head_dim,
                    block_tokens,
                },
            },
        }
    }
}

/// Whether an item is timed inside forwards (every iteration operator; copies are not).
pub fn in_forward(op: Op) -> bool {
    Op::ITERATION.contains(&op)
}

/// The forward cells of a plan and where each item's samples come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub cells: Vec<Shape>,
    /// Per cell: its reference, the cell of the same shape with the least KV (decode: same
    /// sequences at the smallest context; prefill: same chunk after the fewest cached tokens).
    pub reference: Vec<usize>,
    /// Per item (same order as the items): the cell its samples come from (None: timed elsewhere).
    pub source: Vec<Option<usize>>,
}

/// Index of `s` in `cells`, added if absent.
fn cell_index(cells: &mut Vec<Shape>, s: Shape) -> usize {
    match cells.iter().position(|&c| c == s) {
        Some(i) => i,
        None => {
            cells.push(s);
            cells.len() - 1
        }
    }
}

/// The reference of each cell (see [`Grid::reference`]).
fn references(cells: &[Shape]) -> Vec<usize> {
    let key = |s: Shape| match s {
        Shape::Decode { batch, context } => (0, batch, context),
        Shape::Prefill { chunk, cached } => (1, chunk, cached),
    };
    (cells.iter())
        .map(|&s| {
            let (kind, size, _) = key(s);
            (0..cells.len())
                .filter(|&k| key(cells[k]).0 == kind && key(cells[k]).1 == size)
                .min_by_key(|&k| key(cells[k]).2)
                .expect("a cell is its own candidate")
        })
        .collect()
}

/// The forward cells that cover the in-forward `items`: every attention item's own cell; the
/// GEMMs and small operators at `T` tokens from the reference of the decode cells of `T`
/// sequences (else of the prefill cells of a `T`-token chunk, else an added forward); the LM head
/// at `r` rows from the reference of the decode cells of `r` sequences (else an added one).
pub fn grid(items: &[PlanItem], max_context: usize) -> Grid {
    let mut cells: Vec<Shape> = Vec::new();
    for i in items {
        let (x, y) = (i.x as usize, i.y as usize);
        match i.op {
            Op::AttnDecode => cell_index(
                &mut cells,
                Shape::Decode {
                    batch: x,
                    context: y,
                },
            ),
            Op::AttnPrefill => cell_index(
                &mut cells,
                Shape::Prefill {
                    chunk: x,
                    cached: y,
                },
            ),
            _ => continue,
        };
    }
    let decode_max = (cells.iter())
        .filter(|c| matches!(c, Shape::Decode { .. }))
        .map(|c| c.tokens())
        .max()
        .unwrap_or(64);
    let fill_context = FILL_CONTEXT.min(max_context);
    let mut source = Vec::with_capacity(items.len());
    for i in items {
        let (x, y) = (i.x as usize, i.y as usize);
        let find = |cells: &[Shape], f: &dyn Fn(Shape) -> bool| cells.iter().position(|&c| f(c));
        let k = match i.op {
            _ if !in_forward(i.op) => None,
            Op::AttnDecode => find(&cells, &|c| {
                c == Shape::Decode {
                    batch: x,
                    context: y,
                }
            }),
            Op::AttnPrefill => find(&cells, &|c| {
                c == Shape::Prefill {
                    chunk: x,
                    cached: y,
                }
            }),
            op => Some(token_cell(&mut cells, op, x, decode_max, fill_context)),
        };
        source.push(k);
    }
    let reference = references(&cells);
    // Operators other than attention take their samples from the reference cell.
    for (i, k) in items.iter().zip(source.iter_mut()) {
        if !matches!(i.op, Op::AttnDecode | Op::AttnPrefill) {
            *k = k.map(|k| reference[k]);
        }
    }
    Grid {
        cells,
        reference,
        source,
    }
}

/// The cell a GEMM, small-operator or LM-head item of size `x` samples (before references):
/// a decode of `x` sequences, else a prefill of an `x`-token chunk (not for the LM head, whose
/// size is rows), else one added (a decode at the fill context up to the decode grid's largest
/// batch and for the LM head, a prefill of `x` tokens beyond).
fn token_cell(
    cells: &mut Vec<Shape>,
    op: Op,
    x: usize,
    decode_max: usize,
    fill_context: usize,
) -> usize {
    let decode = |c: &Shape| matches!(*c, Shape::Decode { batch, .. } if batch == x);
    let prefill =
        |c: &Shape| op != Op::LmHead && matches!(*c, Shape::Prefill { chunk, .. } if chunk == x);
    let found = (cells.iter().position(decode)).or_else(|| cells.iter().position(prefill));
    found.unwrap_or_else(|| {
        let s = if op == Op::LmHead || x <= decode_max {
            Shape::Decode {
                batch: x,
                context: fill_context,
            }
        } else {
            Shape::Prefill {
                chunk: x,
                cached: 0,
            }
        };
        cell_index(cells, s)
    })
}

/// Seconds of one forward in every stage but attention.
fn non_attention_s(st: &StageTimes) -> f64 {
    st.qkv_s + st.out_proj_s + st.mlp_up_s + st.mlp_down_s + st.small_ops_s + st.lm_head_s
}

/// The seconds `op` took per layer (per iteration for the LM head) in one forward. Attention is
/// charged what the forward took beyond its reference cell's other operators (`reference_s`,
/// their median in the round): its own time plus the slow-down its KV reads cause the GEMMs and
/// the LM head by evicting their weights, which a model summing operators would otherwise miss.
fn sample(op: Op, st: &StageTimes, layers: usize, reference_s: f64) -> f64 {
    let l = layers as f64;
    if matches!(op, Op::AttnPrefill | Op::AttnDecode) {
        return (st.attention_s + non_attention_s(st) - reference_s) / l;
    }
    match op {
        Op::Qkv => st.qkv_s / l,
        Op::OutProj => st.out_proj_s / l,
        Op::MlpUp => st.mlp_up_s / l,
        Op::MlpDown => st.mlp_down_s / l,
        Op::SmallOps => st.small_ops_s / l,
        Op::LmHead => st.lm_head_s,
        _ => f64::NAN,
    }
}

/// Rough seconds of one forward of `s` (for the plan's estimate).
pub fn estimate_forward_s(s: Shape, model: &ModelSpec) -> f64 {
    let d = crate::cpu::dims_of(model);
    let it = s.label(&d);
    let (t, h, f) = (s.tokens() as u32, model.hidden, model.ffn);
    let gemm = |n: u32, k: u32| estimate_call_s(&Kernel::Gemm { m: t, n, k });
    let qkv = d.qkv_width() as u32;
    let layer =
        gemm(qkv, h) + gemm(h, h) + gemm(2 * f, h) + gemm(h, f) + estimate_call_s(&it.kernel);
    let lm = estimate_call_s(&Kernel::Gemm {
        m: s.sequences() as u32,
        n: model.vocab,
        k: h,
    });
    model.layers as f64 * layer + lm
}

/// Estimated seconds of timing `cells` with `o`.
pub fn estimate_s(cells: &[Shape], model: &ModelSpec, o: &CpuOptions) -> f64 {
    let block_bytes = crate::cpu::dims_of(model).block_bytes() as f64;
    let per_round: f64 = (cells.iter())
        .map(|&s| {
            let t = estimate_forward_s(s, model);
            // Priming writes the cell's KV with random values at about 1 GB/s.
            let prime = s.blocks() as f64 * block_bytes / 1e9;
            prime + o.warmup as f64 * t + o.cell_s.max(o.min_samples as f64 * t)
        })
        .sum();
    o.rounds as f64 * per_round
}

/// Per item: each round's median, and min, max and count over all samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub medians: Vec<f64>,
    pub min_s: f64,
    pub max_s: f64,
    pub n: u32,
}

impl Samples {
    pub fn add_round(&mut self, v: &[f64]) {
        if v.is_empty() {
            return;
        }
        self.medians.push(crate::cpu::median(v));
        if self.n == 0 {
            self.min_s = f64::INFINITY;
            self.max_s = f64::NEG_INFINITY;
        }
        self.min_s = v.iter().copied().fold(self.min_s, f64::min);
        self.max_s = v.iter().copied().fold(self.max_s, f64::max);
        self.n += v.len() as u32;
    }
}

/// A backend whose device pool holds the largest cell with room to spare (blocks scattered).
fn backend(model: &ModelSpec, cells: &[Shape], o: &CpuOptions) -> Result<CpuBackend> {
    let most = cells.iter().map(|c| c.blocks() + 1).max().unwrap_or(1);
    Ok(CpuBackend::new(&CpuConfig {
        dims: crate::cpu::dims_of(model),
        threads: o.threads,
        seed: o.seed,
        device_blocks: most + most / 2 + 1,
        host_bytes: 0,
    })?)
}

/// Warm-up calls then timed calls of one cell for the time box: each timed call's stages.
fn run_cell(be: &mut CpuBackend, s: Shape, o: &CpuOptions, seed: u64) -> Result<Vec<StageTimes>> {
    let steps = s.steps();
    let primed: Vec<SeqStep> = (steps.iter())
        .filter(|st| st.cached_tokens > 0)
        .map(|st| SeqStep {
            seq: st.seq,
            cached_tokens: 0,
            new_tokens: st.cached_tokens,
        })
        .collect();
    be.prime(&primed, seed)?;
    let call = |be: &mut CpuBackend| -> Result<StageTimes> {
        use servesim_kernels::Backend;
        be.forward(&steps)?;
        for st in &steps {
            be.rewind(st.seq, st.cached_tokens)?;
        }
        Ok(be.last_stage_times())
    };
    for _ in 0..o.warmup {
        call(be)?;
    }
    let start = Instant::now();
    let mut v = Vec::new();
    while (v.len() < o.min_samples as usize || start.elapsed().as_secs_f64() < o.cell_s)
        && v.len() < crate::cpu::MAX_SAMPLES
    {
        v.push(call(be)?);
    }
    for st in &steps {
        servesim_kernels::Backend::release(be, st.seq);
    }
    Ok(v)
}

/// Time the in-forward `items` `o.rounds` times: per item its samples (default for items timed
/// elsewhere), and the median seconds per forward outside every stage.
pub fn measure(
    model: &ModelSpec,
    items: &[PlanItem],
    o: &CpuOptions,
    progress: crate::gpu::Progress<'_>,
) -> Result<(Vec<Samples>, f64)> {
    let dims = crate::cpu::dims_of(model);
    let g = grid(items, dims.max_context_tokens);
    let mut be = backend(model, &g.cells, o)?;
    let mut acc = vec![Samples::default(); items.len()];
    let mut other = Vec::new();
    let total = g.cells.len() * o.rounds as usize;
    for round in 0..o.rounds as usize {
        let mut calls = Vec::with_capacity(g.cells.len());
        for (k, &s) in g.cells.iter().enumerate() {
            let seed = o.seed ^ ((k as u64) << 8) ^ round as u64;
            let c = run_cell(&mut be, s, o, seed)?;
            other.extend(c.iter().map(StageTimes::other_s));
            let totals: Vec<f64> = c.iter().map(|st| st.total_s).collect();
            progress(
                round * g.cells.len() + k,
                total,
                &s.label(&dims),
                crate::cpu::median(&totals),
            );
            calls.push(c);
        }
        let non_attention: Vec<f64> = (calls.iter())
            .map(|c| crate::cpu::median(&c.iter().map(non_attention_s).collect::<Vec<_>>()))
            .collect();
        for ((item, a), k) in items.iter().zip(&mut acc).zip(&g.source) {
            let Some(k) = *k else { continue };
            let reference_s = non_attention[g.reference[k]];
            let v: Vec<f64> = (calls[k].iter())
                .map(|st| sample(item.op, st, dims.layers, reference_s))
                .collect();
            a.add_round(&v);
        }
    }
    Ok((acc, crate::cpu::median(&other).max(0.0)))
}

/// The measurement row of an in-forward item from its samples.
pub fn row(item: &PlanItem, a: &Samples) -> Measurement {
    let time_s = crate::cpu::median(&a.medians).max(1e-9);
    Measurement {
        op: item.op,
        x: item.x,
        y: item.y,
        // A residual attention sample can dip below 0 on a noisy machine when the attention is
        // tiny; the profile needs positive times.
        time_s,
        min_s: Some(a.min_s.max(1e-9).min(time_s)),
        max_s: Some(a.max_s.max(time_s)),
        repeats: Some(a.n),
        source: "measured".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use servesim::catalogue::Catalogue;

    fn item(op: Op, x: u64, y: u64) -> PlanItem {
        PlanItem {
            op,
            x,
            y,
            kernel: Kernel::Gemm { m: 1, n: 1, k: 1 },
        }
    }

    #[test]
    fn every_iteration_item_gets_a_cell_of_its_size() {
        let items = vec![
            item(Op::AttnDecode, 4, 64),
            item(Op::AttnDecode, 4, 16),
            item(Op::AttnPrefill, 128, 0),
            item(Op::Qkv, 4, 0),
            item(Op::Qkv, 2, 0),
            item(Op::MlpUp, 1024, 0),
            item(Op::LmHead, 4, 0),
            item(Op::LmHead, 1, 0),
            item(Op::H2dPinnedMemcpy, 8, 4096),
            item(Op::SmallOps, 128, 0),
            item(Op::AttnPrefill, 128, 512),
        ];
        let g = grid(&items, 2048);
        let cell = |i: usize| g.cells[g.source[i].unwrap()];
        let dec = |batch, context| Shape::Decode { batch, context };
        let pre = |chunk, cached| Shape::Prefill { chunk, cached };
        assert_eq!(cell(0), dec(4, 64));
        // The decode cells of 4 sequences serve qkv at 4 tokens and the LM head at 4 rows, from
        // their reference: the smallest context.
        assert_eq!(cell(3), dec(4, 16));
        assert_eq!(cell(6), dec(4, 16));
        // qkv at 2 tokens: a decode forward of 2 sequences at the fill context is added.
        assert_eq!(cell(4), dec(2, FILL_CONTEXT));
        // 1024 tokens is beyond the decode grid: a prefill forward of that length.
        assert_eq!(cell(5), pre(1024, 0));
        // One row of LM head: a decode forward of one sequence.
        assert_eq!(cell(7), dec(1, FILL_CONTEXT));
        assert_eq!(g.source[8], None);
        // Small operators at 128 tokens: the prefill chunk with the fewest cached tokens.
        assert_eq!(cell(9), pre(128, 0));
        assert_eq!(cell(10), pre(128, 512));
        // References: same kind and size, least KV.
        for (k, &s) in g.cells.iter().enumerate() {
            let r = g.cells[g.reference[k]];
            match (s, r) {
                (
                    Shape::Decode {
                        batch: a,
                        context: c,
                    },
                    Shape::Decode {
                        batch: b,
                        context: d,
                    },
                ) => {
                    assert!(a == b && d <= c)
                }
                (
                    Shape::Prefill {
                        chunk: a,
                        cached: c,
                    },
                    Shape::Prefill {
                        chunk: b,
                        cached: d,
                    },
                ) => {
                    assert!(a == b && d <= c)
                }
                _ => panic!("{s:?} has reference {r:?}"),
            }
        }
        assert_eq!(g.cells[g.reference[g.source[0].unwrap()]], dec(4, 16));
    }

    #[test]
    fn attention_is_charged_the_slow_down_beyond_its_reference() {
        let st = StageTimes {
            qkv_s: 4.0,
            attention_s: 2.0,
            lm_head_s: 1.0,
            total_s: 8.0,
            ..StageTimes::default()
        };
        // The reference's other operators took 3 s: attention gets 2 + (5 − 3), per layer.
        assert_eq!(sample(Op::AttnDecode, &st, 2, 3.0), 2.0);
        assert_eq!(sample(Op::Qkv, &st, 2, 3.0), 2.0);
        assert_eq!(sample(Op::LmHead, &st, 2, 3.0), 1.0);
        assert_eq!(st.other_s(), 1.0);
    }

    #[test]
    fn a_cell_measures_its_own_operators_and_rewinds() {
        let model = Catalogue::builtin()
            .model("cpu-tiny-2x256")
            .unwrap()
            .clone();
        let o = CpuOptions {
            rounds: 1,
            warmup: 1,
            cell_s: 0.0,
            min_samples: 3,
            ..CpuOptions::quick(1, 3)
        };
        let items = vec![
            item(Op::AttnDecode, 3, 40),
            item(Op::Qkv, 3, 0),
            item(Op::LmHead, 3, 0),
            item(Op::AttnPrefill, 32, 16),
        ];
        let mut seen = Vec::new();
        let mut progress = |i: usize, n: usize, it: &PlanItem, t: f64| seen.push((i, n, it.op, t));
        let (acc, other_s) = measure(&model, &items, &o, &mut progress).unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.1 == 2 && s.3 > 0.0));
        for (i, a) in acc.iter().enumerate() {
            assert_eq!(a.n, 3, "item {i}");
            let r = row(&items[i], a);
            let (lo, hi) = (r.min_s.unwrap(), r.max_s.unwrap());
            assert!(
                0.0 < lo && lo <= r.time_s && r.time_s <= hi,
                "item {i}: {r:?}"
            );
        }
        assert!(other_s.is_finite() && other_s >= 0.0);
    }
}
