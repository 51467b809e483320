//! Measurement plans: for one (model, TP), the kernel shapes the GPU runner times, and where each
//! measurement lands in a profile (operator, x, y). Pure functions of the model shape and the
//! [`PlanConfig`]; nothing here touches a GPU.
//!
//! | operator | kernel | grid |
//! |---|---|---|
//! | `qkv`, `out_proj`, `mlp_up`, `mlp_down` | cuBLAS fp16 GEMM `[tokens, k] · [k, n]` per TP shard | tokens 1…`max_tokens` (log grid) |
//! | `lm_head` | GEMM `[rows, hidden] · [hidden, vocab/tp]` | rows 1…`max_lm_rows` |
//! | `small_ops` | the layer's norms, activation, rotary, residual adds (NVRTC kernels) | tokens as above |
//! | `attn_prefill` | paged causal prefill attention (NVRTC) | prompt lengths (log grid) without a prefix, plus chunks after cached prefixes |
//! | `attn_decode` | paged decode attention (NVRTC) | sequences × context tokens, within the GPU's KV capacity |
//! | `h2d_*`, `d2h_*` | host↔GPU copies of KV chunks: pinned per-chunk `cuMemcpyAsync`, pinned gather kernel, pageable per-chunk `cuMemcpyAsync` | chunk counts 1…`max_copy_chunks` (log grid) × chunk sizes: the model's block-sized copies of both KV layouts (layer-major: one layer's K or V of a block, vLLM; block-major: a block's K or V over all layers, FastServe) and two generic sizes |
//!
//! The per-chunk `cuMemcpyAsync` rows fit servesim's copy model `latency_s + s_per_chunk ×
//! chunks + bytes / bytes_per_s` (`servesim::profile::OpFit::Copy`): with one call per chunk,
//! `s_per_chunk` is exactly the PCIe model's `[swap] per_call_s` and a transfer's chunks are its
//! calls (`servesim::swap::KvLayout::calls_per_block`).
//! | `all_reduce` | NCCL all-reduce over the TP group (only when TP > 1 and that many GPUs are visible) | message sizes (log grid) |

use anyhow::{Result, bail};
use servesim::catalogue::{GpuSpec, ModelSpec};
use servesim::profile::{CopyVariant, Op};

/// What to measure and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// Largest token count of the GEMM and small-operator grids.
    pub max_tokens: u32,
    /// Largest LM-head row count (requests per iteration).
    pub max_lm_rows: u32,
    /// Grid density: points per doubling (2 → 1, 2, 3, 4, 6, 8, 11, 16, …).
    pub points_per_octave: u32,
    /// Largest prompt for prefill attention (capped at the model's context).
    pub max_prefill_tokens: u32,
    /// Largest decode batch.
    pub max_decode_batch: u32,
    /// Upper bound on sequences × context of one decode measurement (the KV the GPU can hold).
    pub max_kv_tokens: u64,
    /// KV block sizes (tokens) whose per-layer K/V chunk sizes the copy grid includes.
    pub block_tokens: Vec<u32>,
    /// Largest number of chunks in one copy.
    pub max_copy_chunks: u32,
    /// Largest transfer (bytes) in one copy measurement.
    pub max_copy_bytes: u64,
    /// GPUs visible to the runner (all-reduce needs `tp` of them).
    pub gpus: u32,
    pub warmup: u32,
    /// Timed repetitions per shape (≥ 20); the median is recorded.
    pub repeats: u32,
}

impl PlanConfig {
    /// The full plan's settings for `model` on a GPU of `gpu_memory_bytes`.
    pub fn full(model: &ModelSpec, tp: u32, gpu_memory_bytes: u64, gpus: u32) -> PlanConfig {
        PlanConfig {
            max_tokens: 8192,
            max_lm_rows: 1024,
            points_per_octave: 2,
            max_prefill_tokens: 8192.min(model.max_context_tokens),
            max_decode_batch: 256,
            max_kv_tokens: kv_capacity_tokens(model, tp, gpu_memory_bytes).max(4096),
            block_tokens: vec![16],
            max_copy_chunks: 4096,
            max_copy_bytes: 1 << 30,
            gpus,
            warmup: 5,
            repeats: 25,
        }
    }

    /// A small plan (self-test, smoke runs): coarse grids, still ≥ 20 repeats.
    pub fn quick(model: &ModelSpec, tp: u32, gpu_memory_bytes: u64, gpus: u32) -> PlanConfig {
        PlanConfig {
            max_tokens: 1024,
            max_lm_rows: 64,
            points_per_octave: 1,
            max_prefill_tokens: 1024.min(model.max_context_tokens),
            max_decode_batch: 32,
            max_copy_chunks: 256,
            max_copy_bytes: 64 << 20,
            warmup: 2,
            repeats: 20,
            ..PlanConfig::full(model, tp, gpu_memory_bytes, gpus)
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.repeats < MIN_GPU_REPEATS {
            bail!(
                "repeats must be ≥ {MIN_GPU_REPEATS} (the median of at least {MIN_GPU_REPEATS} runs), got {}",
                self.repeats
            );
        }
        if self.points_per_octave == 0 || self.max_tokens == 0 || self.max_lm_rows == 0 {
            bail!("grid sizes must be ≥ 1");
        }
        if self.block_tokens.is_empty() || self.block_tokens.contains(&0) {
            bail!("block_tokens must be a non-empty list of sizes ≥ 1");
        }
        Ok(())
    }
}

/// The fewest timed repetitions per shape of a GPU measurement.
pub const MIN_GPU_REPEATS: u32 = 20;

/// KV tokens that fit on the TP group next to the weights (90% of memory, 1 GiB reserve per GPU).
pub fn kv_capacity_tokens(model: &ModelSpec, tp: u32, gpu_memory_bytes: u64) -> u64 {
    let usable = tp as f64 * (gpu_memory_bytes as f64 * 0.9 - (1u64 << 30) as f64);
    let free = usable - model.weight_bytes() as f64;
    if free <= 0.0 {
        return 0;
    }
    (free / model.kv_bytes_per_token() as f64) as u64
}

/// One kernel shape to time (per GPU of the TP group; all fp16).
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    /// `C[m, n] = A[m, k] · W[n, k]ᵀ` (a linear layer on `m` tokens).
    Gemm { m: u32, n: u32, k: u32 },
    /// One layer's small operators on `tokens` tokens.
    SmallOps {
        tokens: u32,
        hidden: u32,
        /// MLP intermediate width on this shard.
        ffn: u32,
        gated: bool,
        /// Query and KV heads on this shard (rotary), 0 query heads without rotary.
        rope_heads: u32,
        rope_kv_heads: u32,
        head_dim: u32,
    },
    /// Causal attention of `chunk` new tokens of one sequence after `cached` ones, KV paged.
    AttnPrefill {
        chunk: u32,
        cached: u32,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        block_tokens: u32,
    },
    /// One new token for each of `batch` sequences of `context` tokens, KV paged.
    AttnDecode {
        batch: u32,
        context: u32,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        block_tokens: u32,
    },
    /// `chunks` scattered chunks of `chunk_bytes` between host and GPU.
    Copy {
        host_to_device: bool,
        variant: CopyVariant,
        chunks: u32,
        chunk_bytes: u64,
    },
    /// An all-reduce of `bytes` over `gpus` GPUs.
    AllReduce { bytes: u64, gpus: u32 },
}

/// One planned measurement: its kernel and its place in the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    pub op: Op,
    pub x: u64,
    pub y: u64,
    pub kernel: Kernel,
}

/// `lo…hi` with `per_octave` points per doubling (rounded, deduplicated, both ends included).
pub fn log_grid(lo: u64, hi: u64, per_octave: u32) -> Vec<u64> {
    if lo == 0 || hi < lo || per_octave == 0 {
        return Vec::new();
    }
    let mut v = Vec::new();
    let steps = ((hi as f64 / lo as f64).log2() * per_octave as f64).ceil() as u32;
    for i in 0..=steps {
        let x = (lo as f64 * 2f64.powf(i as f64 / per_octave as f64)).round() as u64;
        v.push(x.clamp(lo, hi));
    }
    v.push(hi);
    v.sort_unstable();
    v.dedup();
    v
}

/// Per-shard head counts: query heads / tp, KV heads / tp (at least 1, replicated when tp exceeds
/// them).
pub fn shard_heads(model: &ModelSpec, tp: u32) -> (u32, u32) {
    (model.heads / tp, (model.kv_heads / tp).max(1))
}

/// The linear layers of one shard: (operator, n, k).
pub fn gemm_shapes(model: &ModelSpec, tp: u32) -> [(Op, u32, u32); 5] {
    let (hq, hkv) = shard_heads(model, tp);
    let hd = model.head_dim() as u32;
    let h = model.hidden;
    let up = if model.gated_mlp { 2 } else { 1 } * model.ffn / tp;
    [
        (Op::Qkv, (hq + 2 * hkv) * hd, h),
        (Op::OutProj, h, hq * hd),
        (Op::MlpUp, up, h),
        (Op::MlpDown, h, model.ffn / tp),
        (Op::LmHead, model.vocab.div_ceil(tp), h),
    ]
}

/// Bytes of one KV chunk (one layer's K or V of one block) on one shard.
pub fn chunk_bytes(model: &ModelSpec, tp: u32, block_tokens: u32) -> u64 {
    let (_, hkv) = shard_heads(model, tp);
    block_tokens as u64 * hkv as u64 * model.head_dim() * model.dtype_bytes as u64
}

/// Bytes of one block-major KV chunk (a block's K or V across all layers, FastServe's copy unit)
/// on one shard.
pub fn block_major_chunk_bytes(model: &ModelSpec, tp: u32, block_tokens: u32) -> u64 {
    chunk_bytes(model, tp, block_tokens) * model.layers as u64
}

/// The whole plan for `model` at `tp`.
pub fn plan(model: &ModelSpec, tp: u32, cfg: &PlanConfig) -> Result<Vec<PlanItem>> {
    cfg.validate()?;
    if tp == 0 || !model.heads.is_multiple_of(tp) {
        bail!(
            "tp = {tp} does not divide the model's {} attention heads",
            model.heads
        );
    }
    let ppo = cfg.points_per_octave;
    let mut items = Vec::new();
    let tokens = log_grid(1, cfg.max_tokens as u64, ppo);
    gemm_items(&mut items, model, tp, cfg, &tokens);
    small_ops_items(&mut items, model, tp, &tokens);
    attention_items(&mut items, model, tp, cfg);
    copy_items(&mut items, model, tp, cfg);
    if tp > 1 && cfg.gpus >= tp {
        for &bytes in &log_grid(2 << 10, 256 << 20, 1) {
            items.push(PlanItem {
                op: Op::AllReduce,
                x: bytes,
                y: 0,
                kernel: Kernel::AllReduce { bytes, gpus: tp },
            });
        }
    }
    Ok(items)
}

/// The GEMMs of a layer and the LM head at every token count of the grid (the LM head up to
/// `max_lm_rows`).
fn gemm_items(
    items: &mut Vec<PlanItem>,
    model: &ModelSpec,
    tp: u32,
    cfg: &PlanConfig,
    tokens: &[u64],
) {
    let ppo = cfg.points_per_octave;
    for (op, n, k) in gemm_shapes(model, tp) {
        let xs = if op == Op::LmHead {
            log_grid(1, cfg.max_lm_rows as u64, ppo)
        } else {
            tokens.to_vec()
        };
        for &m in &xs {
            items.push(PlanItem {
                op,
                x: m,
                y: 0,
                kernel: Kernel::Gemm { m: m as u32, n, k },
            });
        }
    }
}

/// The small operators of a layer at every token count of the grid.
fn small_ops_items(items: &mut Vec<PlanItem>, model: &ModelSpec, tp: u32, tokens: &[u64]) {
    let (hq, hkv) = shard_heads(model, tp);
    let hd = model.head_dim() as u32;
    for &t in tokens {
        items.push(PlanItem {
            op: Op::SmallOps,
            x: t,
            y: 0,
            kernel: Kernel::SmallOps {
                tokens: t as u32,
                hidden: model.hidden,
                ffn: model.ffn / tp,
                gated: model.gated_mlp,
                rope_heads: if model.learned_positions { 0 } else { hq },
                rope_kv_heads: if model.learned_positions { 0 } else { hkv },
                head_dim: hd,
            },
        });
    }
}

/// Prefill (whole and chunked after cached prefixes) and decode attention shapes.
fn attention_items(items: &mut Vec<PlanItem>, model: &ModelSpec, tp: u32, cfg: &PlanConfig) {
    let ppo = cfg.points_per_octave;
    let (hq, hkv) = shard_heads(model, tp);
    let hd = model.head_dim() as u32;
    let block = cfg.block_tokens[0];
    let max_prefill = cfg.max_prefill_tokens.min(model.max_context_tokens) as u64;
    let mut prefill: Vec<(u64, u64)> = log_grid(16, max_prefill.max(16), ppo)
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    // Chunked prefill: chunks after cached prefixes.
    for chunk in [128u64, 512, 2048] {
        for cached in [512u64, 2048, 6144] {
            if chunk + cached <= max_prefill {
                prefill.push((chunk, cached));
            }
        }
    }
    for (chunk, cached) in prefill {
        items.push(PlanItem {
            op: Op::AttnPrefill,
            x: chunk,
            y: cached,
            kernel: Kernel::AttnPrefill {
                chunk: chunk as u32,
                cached: cached as u32,
                heads: hq,
                kv_heads: hkv,
                head_dim: hd,
                block_tokens: block,
            },
        });
    }
    let contexts = log_grid(16, model.max_context_tokens as u64, ppo);
    for &b in &log_grid(1, cfg.max_decode_batch as u64, ppo) {
        for &c in &contexts {
            if b * c > cfg.max_kv_tokens {
                continue;
            }
            items.push(PlanItem {
                op: Op::AttnDecode,
                x: b,
                y: c,
                kernel: Kernel::AttnDecode {
                    batch: b as u32,
                    context: c as u32,
                    heads: hq,
                    kv_heads: hkv,
                    head_dim: hd,
                    block_tokens: block,
                },
            });
        }
    }
}

/// Host↔GPU copies: every variant, direction, chunk size and chunk count within the limits.
fn copy_items(items: &mut Vec<PlanItem>, model: &ModelSpec, tp: u32, cfg: &PlanConfig) {
    let mut sizes: Vec<u64> = cfg
        .block_tokens
        .iter()
        .flat_map(|&b| {
            [
                chunk_bytes(model, tp, b),
                block_major_chunk_bytes(model, tp, b),
            ]
        })
        .chain([16 << 10, 1 << 20])
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for h2d in [true, false] {
        for variant in CopyVariant::ALL {
            for &size in &sizes {
                for &n in &log_grid(1, cfg.max_copy_chunks as u64, 1) {
                    if n * size > cfg.max_copy_bytes {
                        continue;
                    }
                    items.push(PlanItem {
                        op: Op::copy(h2d, variant),
                        x: n,
                        y: size,
                        kernel: Kernel::Copy {
                            host_to_device: h2d,
                            variant,
                            chunks: n as u32,
                            chunk_bytes: size,
                        },
                    });
                }
            }
        }
    }
}

/// Work of one kernel: (FLOPs, device-memory bytes, PCIe bytes, driver calls).
pub fn work(k: &Kernel) -> (f64, f64, f64, f64) {
    match *k {
        Kernel::Gemm { m, n, k } => {
            let (m, n, k) = (m as f64, n as f64, k as f64);
            (2.0 * m * n * k, 2.0 * (m * k + n * k + m * n), 0.0, 1.0)
        }
        Kernel::SmallOps {
            tokens,
            hidden,
            ffn,
            gated,
            rope_heads,
            rope_kv_heads,
            head_dim,
        } => {
            let t = tokens as f64;
            let act = if gated { 3.0 } else { 2.0 } * ffn as f64;
            let rope = 2.0 * (rope_heads + rope_kv_heads) as f64 * head_dim as f64;
            let bytes =
                2.0 * t * (2.0 * 2.0 * hidden as f64 + 2.0 * 3.0 * hidden as f64 + act + rope);
            (0.0, bytes, 0.0, 6.0)
        }
        Kernel::AttnPrefill {
            chunk,
            cached,
            heads,
            kv_heads,
            head_dim,
            ..
        } => {
            let (c, k) = (chunk as f64, cached as f64);
            let pairs = c * (c / 2.0 + k);
            let flops = 4.0 * pairs * heads as f64 * head_dim as f64;
            let bytes = 2.0 * (c + k) * 2.0 * kv_heads as f64 * head_dim as f64;
            (flops, bytes, 0.0, 1.0)
        }
        Kernel::AttnDecode {
            batch,
            context,
            heads,
            kv_heads,
            head_dim,
            ..
        } => {
            let tokens = batch as f64 * context as f64;
            let flops = 4.0 * tokens * heads as f64 * head_dim as f64;
            (
                flops,
                tokens * 2.0 * kv_heads as f64 * head_dim as f64 * 2.0,
                0.0,
                1.0,
            )
        }
        Kernel::Copy {
            variant,
            chunks,
            chunk_bytes,
            ..
        } => {
            let calls = match variant {
                CopyVariant::PinnedGather => 1.0,
                _ => chunks as f64,
            };
            (0.0, 0.0, chunks as f64 * chunk_bytes as f64, calls)
        }
        Kernel::AllReduce { bytes, .. } => (0.0, 2.0 * bytes as f64, 0.0, 1.0),
    }
}

/// A pessimistic estimate of one kernel's time on `gpu` (our simple attention kernels at a few
/// percent of peak, copies at 10 GB/s, 10 µs per driver call, 10 µs per kernel).
pub fn estimate_kernel_s(k: &Kernel, gpu: &GpuSpec) -> f64 {
    let (flops, bytes, pcie, calls) = work(k);
    let compute_eff = match k {
        Kernel::AttnPrefill { .. } | Kernel::AttnDecode { .. } => 0.03,
        _ => 0.5,
    };
    let pcie_bw = match k {
        Kernel::Copy {
            variant: CopyVariant::PageableMemcpy,
            ..
        } => 5e9,
        _ => 10e9,
    };
    let bw = match k {
        Kernel::AllReduce { .. } => gpu.nvlink_bytes_per_s * 0.5,
        _ => gpu.hbm_bytes_per_s * 0.5,
    };
    (flops / (gpu.flops_per_s * compute_eff)).max(bytes / bw) + pcie / pcie_bw + 10e-6 * calls
}

/// Estimated seconds of a whole plan: every item `warmup + repeats` times plus 20 ms of set-up
/// (allocation, random fill, synchronisation) per item.
pub fn estimate_s(items: &[PlanItem], cfg: &PlanConfig, gpu: &GpuSpec) -> f64 {
    let runs = (cfg.warmup + cfg.repeats) as f64;
    items
        .iter()
        .map(|i| runs * estimate_kernel_s(&i.kernel, gpu) + 0.02)
        .sum()
}

/// A human-readable description of a kernel shape.
pub fn describe(k: &Kernel) -> String {
    match k {
        Kernel::Gemm { m, n, k } => format!("gemm m={m} n={n} k={k}"),
        Kernel::SmallOps {
            tokens,
            hidden,
            ffn,
            gated,
            rope_heads,
            ..
        } => format!(
            "small_ops tokens={tokens} hidden={hidden} ffn={ffn} {} rope={}",
            if *gated { "gated" } else { "plain" },
            rope_heads > &0
        ),
        Kernel::AttnPrefill {
            chunk,
            cached,
            heads,
            kv_heads,
            head_dim,
            block_tokens,
        } => format!(
            "prefill chunk={chunk} cached={cached} heads={heads}/{kv_heads} head_dim={head_dim} block={block_tokens}"
        ),
        Kernel::AttnDecode {
            batch,
            context,
            heads,
            kv_heads,
            head_dim,
            block_tokens,
        } => format!(
            "decode batch={batch} context={context} heads={heads}/{kv_heads} head_dim={head_dim} block={block_tokens}"
        ),
        Kernel::Copy {
            host_to_device,
            variant,
            chunks,
            chunk_bytes,
        } => format!(
            "copy {} {} chunks={chunks} chunk_bytes={chunk_bytes}",
            if *host_to_device { "h2d" } else { "d2h" },
            variant.name()
        ),
        Kernel::AllReduce { bytes, gpus } => format!("all_reduce bytes={bytes} gpus={gpus}"),
    }
}

/// `plan.csv`: `op,x,y,kernel,estimate_s`.
pub fn plan_csv(items: &[PlanItem], gpu: &GpuSpec) -> String {
    let mut s = String::from("op,x,y,kernel,estimate_s\n");
    for i in items {
        s += &format!(
            "{},{},{},{},{:.3e}\n",
            i.op.name(),
            i.x,
            i.y,
            describe(&i.kernel),
            estimate_kernel_s(&i.kernel, gpu)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use servesim::catalogue::Catalogue;

    fn model(name: &str) -> ModelSpec {
        Catalogue::builtin().model(name).unwrap().clone()
    }

    #[test]
    fn log_grid_is_sorted_deduplicated_and_has_both_ends() {
        assert_eq!(log_grid(1, 16, 1), vec![1, 2, 4, 8, 16]);
        assert_eq!(log_grid(1, 8, 2), vec![1, 2, 3, 4, 6, 8]);
        assert_eq!(log_grid(16, 100, 1), vec![16, 32, 64, 100]);
        let g = log_grid(1, 8192, 2);
        assert_eq!((g[0], *g.last().unwrap()), (1, 8192));
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g.len(), 26);
        assert!(log_grid(0, 5, 1).is_empty() && log_grid(5, 4, 1).is_empty());
    }

    #[test]
    fn llama_gemm_shapes_by_hand() {
        let m = model("llama-2-7b");
        let s = gemm_shapes(&m, 1);
        assert_eq!(s[0], (Op::Qkv, 3 * 4096, 4096));
        assert_eq!(s[1], (Op::OutProj, 4096, 4096));
        assert_eq!(s[2], (Op::MlpUp, 2 * 11008, 4096));
        assert_eq!(s[3], (Op::MlpDown, 4096, 11008));
        assert_eq!(s[4], (Op::LmHead, 32000, 4096));
        let s2 = gemm_shapes(&m, 2);
        assert_eq!(s2[0], (Op::Qkv, 3 * 2048, 4096));
        assert_eq!(s2[3], (Op::MlpDown, 4096, 5504));
        // Llama-2-70B: 64 query heads, 8 KV heads; at TP 8 one KV head per shard.
        let b = model("llama-2-70b");
        assert_eq!(gemm_shapes(&b, 8)[0], (Op::Qkv, (8 + 2) * 128, 8192));
        // OPT-13B: no gated MLP.
        assert_eq!(
            gemm_shapes(&model("opt-13b"), 1)[2],
            (Op::MlpUp, 20480, 5120)
        );
    }

    #[test]
    fn chunk_bytes_are_one_layer_of_k_or_v() {
        // Llama-2-7B: 16 tokens × 32 KV heads × 128 × 2 B = 128 KiB; OPT-13B 160 KiB.
        assert_eq!(chunk_bytes(&model("llama-2-7b"), 1, 16), 128 << 10);
        assert_eq!(chunk_bytes(&model("opt-13b"), 1, 16), 160 << 10);
        assert_eq!(chunk_bytes(&model("llama-2-7b"), 2, 16), 64 << 10);
        // Block-major (FastServe): OPT-13B 40 layers × 160 KiB = 6.25 MiB.
        assert_eq!(
            block_major_chunk_bytes(&model("opt-13b"), 1, 16),
            6400 << 10
        );
    }

    #[test]
    fn full_plan_covers_every_operator_and_respects_the_limits() {
        let m = model("llama-2-7b");
        let cat = Catalogue::builtin();
        let gpu = cat.gpu("h100-80gb").unwrap();
        let cfg = PlanConfig::full(&m, 1, gpu.memory_bytes, 1);
        let items = plan(&m, 1, &cfg).unwrap();
        for op in Op::ALL {
            let n = items.iter().filter(|i| i.op == op).count();
            if op == Op::AllReduce {
                assert_eq!(n, 0, "no all-reduce at TP 1");
            } else {
                assert!(n > 0, "{op:?}");
            }
        }
        let gemm_tokens: Vec<u64> = items
            .iter()
            .filter(|i| i.op == Op::Qkv)
            .map(|i| i.x)
            .collect();
        assert_eq!((gemm_tokens[0], *gemm_tokens.last().unwrap()), (1, 8192));
        for i in &items {
            match i.kernel {
                Kernel::AttnDecode { batch, context, .. } => {
                    assert!(batch as u64 * context as u64 <= cfg.max_kv_tokens);
                    assert!(context <= m.max_context_tokens);
                }
                Kernel::AttnPrefill { chunk, cached, .. } => {
                    assert!(chunk + cached <= m.max_context_tokens)
                }
                Kernel::Copy {
                    chunks,
                    chunk_bytes,
                    ..
                } => assert!(chunks as u64 * chunk_bytes <= cfg.max_copy_bytes),
                _ => {}
            }
        }
        // The copy grid includes the model's own block-sized chunks of both layouts (layer-major
        // 128 KiB; block-major 32 layers × 128 KiB = 4 MiB), from a single chunk up, for every
        // variant and direction.
        for op in Op::ALL.into_iter().filter(|o| o.is_copy()) {
            for size in [128u64 << 10, 4 << 20] {
                let counts: Vec<u64> = items
                    .iter()
                    .filter(|i| i.op == op && i.y == size)
                    .map(|i| i.x)
                    .collect();
                assert!(
                    counts.first() == Some(&1) && counts.len() > 4,
                    "{op:?} {size}"
                );
            }
        }
        // Within the budget: the whole Llama-2-7B TP1 profile in ≤ 10 minutes.
        let est = estimate_s(&items, &cfg, gpu);
        assert!(est < 600.0, "estimated {est:.0} s");
        assert!(plan_csv(&items, gpu).lines().count() == items.len() + 1);
    }

    #[test]
    fn all_reduce_only_with_tp_and_enough_gpus() {
        let m = model("llama-2-7b");
        let mut cfg = PlanConfig::quick(&m, 2, 80 << 30, 1);
        assert!(
            !plan(&m, 2, &cfg)
                .unwrap()
                .iter()
                .any(|i| i.op == Op::AllReduce)
        );
        cfg.gpus = 2;
        let ar: Vec<PlanItem> = plan(&m, 2, &cfg)
            .unwrap()
            .into_iter()
            .filter(|i| i.op == Op::AllReduce)
            .collect();
        assert_eq!(ar.first().unwrap().x, 2048);
        assert_eq!(ar.last().unwrap().x, 256 << 20);
        assert!(matches!(ar[0].kernel, Kernel::AllReduce { gpus: 2, .. }));
    }

    #[test]
    fn plans_reject_bad_settings() {
        let m = model("llama-2-7b");
        let mut cfg = PlanConfig::quick(&m, 1, 80 << 30, 1);
        cfg.repeats = 5;
        assert!(plan(&m, 1, &cfg).unwrap_err().to_string().contains("≥ 20"));
        let cfg = PlanConfig::quick(&m, 1, 80 << 30, 1);
        assert!(plan(&m, 3, &cfg).is_err());
        // The quick plan is much smaller than the full one.
        let full = plan(&m, 1, &PlanConfig::full(&m, 1, 80 << 30, 1)).unwrap();
        let quick = plan(&m, 1, &cfg).unwrap();
        assert!(
            quick.len() * 2 < full.len(),
            "{} vs {}",
            quick.len(),
            full.len()
        );
    }

    #[test]
    fn kv_capacity_by_hand() {
        let m = model("llama-2-7b");
        // 80 GiB × 0.9 − 1 GiB − weights, over 512 KiB per token.
        let gib = (1u64 << 30) as f64;
        let want = ((80.0 * 0.9 - 1.0) * gib - m.weight_bytes() as f64) / (512.0 * 1024.0);
        assert_eq!(kv_capacity_tokens(&m, 1, 80 << 30), want as u64);
        assert_eq!(kv_capacity_tokens(&model("llama-2-70b"), 1, 40 << 30), 0);
    }
}
