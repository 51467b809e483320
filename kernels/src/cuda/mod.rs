//! [`CudaBackend`]: the [`Backend`] on an NVIDIA GPU (feature `cuda`), f32 like [`crate::CpuBackend`]
//! and with the same weights for the same seed, so the two can be checked against each other.
//!
//! cuBLAS sgemm for the linear layers and the LM head at the batch's token count; NVRTC kernels
//! ([`source`]) for the embedding gather, RMSNorm, RoPE, gated SiLU, the K/V writes, one paged
//! attention kernel for decode and causal prefill (simple, not fast), and the per-row argmax and
//! logit sum. The device KV pool is one GPU buffer with the CPU pool's layout; the host pool is
//! page-locked host memory; swaps are one `cuMemcpyAsync` per (layer, K|V, block) chunk on a
//! copy stream that waits for the compute stream before and that the compute stream waits for
//! after (stream joins are CUDA events). Each call returns once its work is done, so a caller's
//! clock measures it.
//!
//! Has not run on a GPU yet: everything here is compile-checked only.

mod device;
pub mod source;

use std::ffi::c_void;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};

use self::device::{Ctx, Dev, R, config};
pub use self::device::{compile_check, probe};
use crate::attention::SeqRows;
use crate::kv::block_pairs;
use crate::ledger::Ledger;
use crate::model::{ModelDims, Tensor, random_tensors, token_id};
use crate::ops::ROPE_BASE;
use crate::{BLOCK_TOKENS, Backend, BackendError, SeqStep, StepOutput};

/// GPU memory kept free beyond the weights and the KV pool (activations, cuBLAS workspace).
const HEADROOM_BYTES: usize = 1 << 30;

/// How to build a [`CudaBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaConfig {
    pub dims: ModelDims,
    /// Seed of the weights (the CPU backend's for the same seed) and of the shuffled block order.
    pub seed: u64,
    /// KV blocks of the device pool.
    pub device_blocks: usize,
    /// Bytes of the host pool (whole blocks of all layers' K and V, f32).
    pub host_bytes: usize,
    /// Which GPU.
    pub ordinal: usize,
}

struct LayerW {
    attn_norm: CudaSlice<f32>,
    wqkv: CudaSlice<f32>,
    wo: CudaSlice<f32>,
    mlp_norm: CudaSlice<f32>,
    w_up: CudaSlice<f32>,
    w_down: CudaSlice<f32>,
}

struct DevWeights {
    embedding: CudaSlice<f32>,
    layers: Vec<LayerW>,
    final_norm: CudaSlice<f32>,
    lm_head: CudaSlice<f32>,
}

/// Activations of one forward pass, grown to the largest batch seen.
struct Scratch {
    rows: usize,
    seqs: usize,
    x: CudaSlice<f32>,
    h: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<f32>,
    gu: CudaSlice<f32>,
    act: CudaSlice<f32>,
    last: CudaSlice<f32>,
    normed: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    argmax: CudaSlice<i32>,
    sums: CudaSlice<f64>,
}

/// The per-row index arrays of one batch, uploaded.
struct BatchIdx {
    tokens: CudaSlice<i32>,
    pos: CudaSlice<i32>,
    slot: CudaSlice<i32>,
    row_table: CudaSlice<i32>,
    tables: CudaSlice<i32>,
    last_rows: CudaSlice<i32>,
    max_ctx: usize,
}

/// The CUDA compute backend (see the module documentation).
pub struct CudaBackend {
    dims: ModelDims,
    dev: Dev,
    w: DevWeights,
    pool: CudaSlice<f32>,
    host: Option<PinnedHostSlice<f32>>,
    device_blocks: usize,
    host_blocks: usize,
    ledger: Ledger,
    sc: Scratch,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("gpu", &self.dev.name)
            .field("dims", &self.dims)
            .field("device_blocks", &self.device_blocks)
            .field("host_blocks", &self.host_blocks)
            .finish()
    }
}

fn weight_bytes(d: &ModelDims) -> usize {
    let per_layer = 2 * d.hidden
        + d.hidden * d.qkv_width()
        + d.heads * d.head_dim() * d.hidden
        + 3 * d.hidden * d.ffn;
    4 * (d.layers * per_layer + 2 * d.vocab * d.hidden + d.hidden)
}

const GIB: f64 = (1u64 << 30) as f64;

impl CudaBackend {
    /// Open GPU `cfg.ordinal`, upload random weights, allocate the pools. No driver, no GPU, a
    /// missing CUDA library or a model that does not fit: [`BackendError::Config`].
    pub fn new(cfg: &CudaConfig) -> Result<CudaBackend, BackendError> {
        let d = &cfg.dims;
        d.validate()?;
        if cfg.device_blocks == 0 {
            return Err(BackendError::Config("device_blocks must be ≥ 1".into()));
        }
        let block_bytes = d.block_bytes();
        let host_blocks = cfg.host_bytes / block_bytes;
        let attn_smem = 4 * (d.head_dim() + d.max_context_tokens);
        let dev = Dev::open(cfg.ordinal, attn_smem)?;
        let (free, total) = dev.memory()?;
        let (wb, kvb) = (
            weight_bytes(d),
            cfg.device_blocks.saturating_mul(block_bytes),
        );
        let need = wb.saturating_add(kvb).saturating_add(HEADROOM_BYTES);
        if need > free {
            return Err(config(format!(
                "the model does not fit on {}: {:.1} GiB of f32 weights + {:.1} GiB of KV pool ({} blocks) + {:.1} GiB headroom, {:.1} GiB free of {:.1} GiB",
                dev.name,
                wb as f64 / GIB,
                kvb as f64 / GIB,
                cfg.device_blocks,
                HEADROOM_BYTES as f64 / GIB,
                free as f64 / GIB,
                total as f64 / GIB
            )));
        }
        let w = upload_weights(&dev, d, cfg.seed)?;
        let pool = dev.alloc(kvb / 4, "the device KV pool")?;
        let host = if host_blocks == 0 {
            None
        } else {
            let n = host_blocks * block_bytes / 4;
            // Plain page-locked memory (flags 0, not write-combined): copies go both ways.
            // SAFETY: the host pool is only read where a swap-out wrote it first.
            let p = unsafe { dev.ctx.alloc_pinned_with_flags::<f32>(n, 0) }.map_err(|e| {
                config(format!(
                    "cannot pin {:.1} GiB of host memory for the host KV pool: {e:?}",
                    (n * 4) as f64 / GIB
                ))
            })?;
            Some(p)
        };
        let sc = Scratch::new(&dev, d, 1, 1)?;
        dev.compute.synchronize().ctx("uploading the weights")?;
        Ok(CudaBackend {
            ledger: Ledger::new(
                d.max_context_tokens,
                cfg.device_blocks,
                host_blocks,
                cfg.seed,
            ),
            dims: d.clone(),
            dev,
            w,
            pool,
            host,
            device_blocks: cfg.device_blocks,
            host_blocks,
            sc,
        })
    }
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }
    /// The GPU's name.
    pub fn gpu_name(&self) -> &str {
        &self.dev.name
    }
    /// Free device blocks (and the capacity).
    pub fn device_blocks(&self) -> (usize, usize) {
        self.ledger.device_blocks()
    }
    /// Free host blocks (and the capacity).
    pub fn host_blocks(&self) -> (usize, usize) {
        self.ledger.host_blocks()
    }

    /// The batch's per-row indices: token ids, positions, KV slots, block tables.
    fn batch_idx(&self, seqs: &[SeqRows]) -> R<BatchIdx> {
        let vocab = self.dims.vocab;
        let (mut tokens, mut pos, mut slot, mut row_table) = (vec![], vec![], vec![], vec![]);
        let (mut tables, mut last_rows, mut max_ctx) = (vec![], vec![], 0);
        for s in seqs {
            let t0 = tables.len() as i32;
            tables.extend(s.table.iter().map(|&b| b as i32));
            for p in s.cached..s.cached + s.new {
                tokens.push(token_id(s.seq, p, vocab) as i32);
                pos.push(p as i32);
                let b = s.table[p / BLOCK_TOKENS] as usize;
                slot.push((b * BLOCK_TOKENS + p % BLOCK_TOKENS) as i32);
                row_table.push(t0);
            }
            last_rows.push((s.row0 + s.new - 1) as i32);
            max_ctx = max_ctx.max(s.cached + s.new);
        }
        let up = |v: &[i32]| self.dev.upload(v, "uploading the batch's indices");
        Ok(BatchIdx {
            tokens: up(&tokens)?,
            pos: up(&pos)?,
            slot: up(&slot)?,
            row_table: up(&row_table)?,
            tables: up(&tables)?,
            last_rows: up(&last_rows)?,
            max_ctx,
        })
    }

    /// All layers and the LM head over the admitted rows.
    fn run_model(&mut self, seqs: &[SeqRows]) -> R<StepOutput> {
        let d = self.dims.clone();
        let t: usize = seqs.iter().map(|s| s.new).sum();
        let n = seqs.len();
        if t > self.sc.rows || n > self.sc.seqs {
            let (rows, nseq) = (t.next_power_of_two(), n.next_power_of_two());
            let (rows, nseq) = (rows.max(self.sc.rows), nseq.max(self.sc.seqs));
            self.sc = Scratch::new(&self.dev, &d, rows, nseq)?;
        }
        let idx = self.batch_idx(seqs)?;
        let (dev, sc, w) = (&self.dev, &mut self.sc, &self.w);
        dev.gather(&mut sc.x, &w.embedding, &idx.tokens, t, d.hidden)?;
        for (layer, lw) in w.layers.iter().enumerate() {
            layer_forward(dev, sc, lw, &mut self.pool, &idx, layer, t, &d)?;
        }
        dev.gather(&mut sc.last, &sc.x, &idx.last_rows, n, d.hidden)?;
        dev.rms_norm(&mut sc.normed, &sc.last, &w.final_norm, n)?;
        dev.linear(
            &sc.normed,
            n,
            d.hidden,
            &w.lm_head,
            d.vocab,
            &mut sc.logits,
            false,
        )?;
        let vocab = d.vocab as i32;
        let mut b = dev.compute.launch_builder(&dev.k.argmax_sum);
        b.arg(&mut sc.argmax)
            .arg(&mut sc.sums)
            .arg(&sc.logits)
            .arg(&vocab);
        // SAFETY: matches argmax_sum_f32; logits hold n·vocab values, argmax and sums ≥ n.
        unsafe { b.launch(dev.per_row(n)) }.ctx("argmax_sum_f32")?;
        let picks = dev
            .compute
            .clone_dtoh(&sc.argmax.slice(0..n))
            .ctx("reading the argmax")?;
        let sums = dev
            .compute
            .clone_dtoh(&sc.sums.slice(0..n))
            .ctx("reading the logit sums")?;
        dev.compute.synchronize().ctx("the forward pass")?;
        Ok(StepOutput {
            checksum: sums.iter().sum(),
            argmax: seqs
                .iter()
                .zip(picks)
                .map(|(s, p)| (s.seq, p as usize))
                .collect(),
        })
    }

    /// Move a sequence's blocks between the pools (`to_host`: device → host).
    fn swap(&mut self, seq: u64, to_host: bool) -> R<()> {
        let (dev, pool, host) = (&self.dev, &self.pool, &mut self.host);
        let (layers, chunk) = (self.dims.layers, self.dims.chunk_floats());
        let (db, hb) = (self.device_blocks, self.host_blocks);
        self.ledger.swap(seq, to_host, |from, to| {
            let host = host.as_mut().ok_or_else(|| config("no host pool"))?;
            let bytes = chunk * 4;
            let pairs = if to_host {
                block_pairs(from, db, to, hb, layers)
            } else {
                block_pairs(from, hb, to, db, layers)
            };
            // The copy stream waits for the compute stream's K/V writes (and reads).
            dev.copy.join(&dev.compute).ctx("ordering the swap")?;
            let host_base = host.as_mut_ptr().ctx("the host pool")? as usize;
            let (dev_base, _guard) = pool.device_ptr(&dev.copy);
            let stream = dev.copy.cu_stream();
            for (s, d) in pairs {
                let r = if to_host {
                    let dst = (host_base + d * bytes) as *mut c_void;
                    // SAFETY: both chunks lie inside their pools (block ids < capacity).
                    unsafe {
                        sys::cuMemcpyDtoHAsync_v2(dst, dev_base + (s * bytes) as u64, bytes, stream)
                    }
                } else {
                    let src = (host_base + s * bytes) as *const c_void;
                    // SAFETY: as above.
                    unsafe {
                        sys::cuMemcpyHtoDAsync_v2(dev_base + (d * bytes) as u64, src, bytes, stream)
                    }
                };
                r.result().ctx("cuMemcpyAsync of a KV chunk")?;
            }
            // Later forward passes wait for the copies (the blocks may be reused at once).
            dev.compute.join(&dev.copy).ctx("ordering the swap")?;
            dev.copy.synchronize().ctx("the swap's copies")
        })
    }
}

/// One decoder layer over the batch's `t` rows (residual adds fused into the output GEMMs).
#[allow(clippy::too_many_arguments)]
fn layer_forward(
    dev: &Dev,
    sc: &mut Scratch,
    lw: &LayerW,
    pool: &mut CudaSlice<f32>,
    idx: &BatchIdx,
    layer: usize,
    t: usize,
    d: &ModelDims,
) -> R<()> {
    let (hidden, qw, ffn, hd) = (d.hidden, d.qkv_width(), d.ffn, d.head_dim());
    let aw = d.heads * hd;
    dev.rms_norm(&mut sc.h, &sc.x, &lw.attn_norm, t)?;
    dev.linear(&sc.h, t, hidden, &lw.wqkv, qw, &mut sc.qkv, false)?;
    let (rows, heads, kvh, hd_i) = (t as i32, d.heads as i32, d.kv_heads as i32, hd as i32);
    let (rot, width, base) = (heads + kvh, qw as i32, ROPE_BASE);
    let mut b = dev.compute.launch_builder(&dev.k.rope);
    b.arg(&mut sc.qkv).arg(&idx.pos).arg(&rows).arg(&rot);
    b.arg(&width).arg(&hd_i).arg(&base);
    // SAFETY: matches rope_f32; qkv holds t rows of width qw.
    unsafe { b.launch(dev.grid(t * (d.heads + d.kv_heads) * hd / 2)) }.ctx("rope_f32")?;
    let (blocks, layer_i) = (
        (pool.len() / (2 * d.layers * d.chunk_floats())) as i32,
        layer as i32,
    );
    let mut b = dev.compute.launch_builder(&dev.k.write_kv);
    b.arg(&mut *pool).arg(&sc.qkv).arg(&idx.slot).arg(&rows);
    b.arg(&heads)
        .arg(&kvh)
        .arg(&hd_i)
        .arg(&blocks)
        .arg(&layer_i);
    // SAFETY: matches write_kv_f32; every slot lies in a block the ledger gave the sequence.
    unsafe { b.launch(dev.grid(t * 2 * d.kv_heads * hd)) }.ctx("write_kv_f32")?;
    let scale = 1.0 / (hd as f32).sqrt();
    let cfg = LaunchConfig {
        grid_dim: (t as u32, d.heads as u32, 1),
        block_dim: (source::THREADS, 1, 1),
        shared_mem_bytes: (4 * (hd + idx.max_ctx)) as u32,
    };
    let mut b = dev.compute.launch_builder(&dev.k.attention);
    b.arg(&mut sc.attn).arg(&sc.qkv).arg(&*pool).arg(&idx.pos);
    b.arg(&idx.row_table).arg(&idx.tables).arg(&heads).arg(&kvh);
    b.arg(&hd_i).arg(&blocks).arg(&layer_i).arg(&scale);
    // SAFETY: matches attention_f32; shared memory holds head_dim + the longest context.
    unsafe { b.launch(cfg) }.ctx("attention_f32")?;
    dev.linear(&sc.attn, t, aw, &lw.wo, hidden, &mut sc.x, true)?;
    dev.rms_norm(&mut sc.h, &sc.x, &lw.mlp_norm, t)?;
    dev.linear(&sc.h, t, hidden, &lw.w_up, 2 * ffn, &mut sc.gu, false)?;
    let ffn_i = ffn as i32;
    let mut b = dev.compute.launch_builder(&dev.k.silu_gate);
    b.arg(&mut sc.act).arg(&sc.gu).arg(&rows).arg(&ffn_i);
    // SAFETY: matches silu_gate_f32; gu holds t rows of 2·ffn, act t rows of ffn.
    unsafe { b.launch(dev.grid(t * ffn)) }.ctx("silu_gate_f32")?;
    dev.linear(&sc.act, t, ffn, &lw.w_down, hidden, &mut sc.x, true)
}

/// The weights of [`crate::model::Weights::random`]`(d, seed)`, generated and uploaded one tensor
/// at a time.
fn upload_weights(dev: &Dev, d: &ModelDims, seed: u64) -> R<DevWeights> {
    let mut layers: Vec<[Option<CudaSlice<f32>>; 6]> =
        (0..d.layers).map(|_| Default::default()).collect();
    let (mut embedding, mut final_norm, mut lm_head) = (None, None, None);
    random_tensors(d, seed, |t, v| {
        let buf = dev.upload(&v, "uploading the weights")?;
        // The upload reads `v` asynchronously from pageable memory only after staging it, so
        // `v` may be dropped right away.
        let slot = match t {
            Tensor::AttnNorm(l) => &mut layers[l][0],
            Tensor::Wqkv(l) => &mut layers[l][1],
            Tensor::Wo(l) => &mut layers[l][2],
            Tensor::MlpNorm(l) => &mut layers[l][3],
            Tensor::WUp(l) => &mut layers[l][4],
            Tensor::WDown(l) => &mut layers[l][5],
            Tensor::Embedding => &mut embedding,
            Tensor::FinalNorm => &mut final_norm,
            Tensor::LmHead => &mut lm_head,
        };
        *slot = Some(buf);
        Ok::<(), BackendError>(())
    })?;
    let missing = || BackendError::Device("a weight tensor was not generated".into());
    let layers = layers
        .into_iter()
        .map(|l| {
            let [a, b, c, e, f, g] = l;
            Ok(LayerW {
                attn_norm: a.ok_or_else(missing)?,
                wqkv: b.ok_or_else(missing)?,
                wo: c.ok_or_else(missing)?,
                mlp_norm: e.ok_or_else(missing)?,
                w_up: f.ok_or_else(missing)?,
                w_down: g.ok_or_else(missing)?,
            })
        })
        .collect::<R<Vec<_>>>()?;
    Ok(DevWeights {
        embedding: embedding.ok_or_else(missing)?,
        layers,
        final_norm: final_norm.ok_or_else(missing)?,
        lm_head: lm_head.ok_or_else(missing)?,
    })
}

impl Scratch {
    fn new(dev: &Dev, d: &ModelDims, rows: usize, seqs: usize) -> R<Scratch> {
        let a = |n: usize| dev.alloc(n, "activations");
        Ok(Scratch {
            rows,
            seqs,
            x: a(rows * d.hidden)?,
            h: a(rows * d.hidden)?,
            qkv: a(rows * d.qkv_width())?,
            attn: a(rows * d.heads * d.head_dim())?,
            gu: a(rows * 2 * d.ffn)?,
            act: a(rows * d.ffn)?,
            last: a(seqs * d.hidden)?,
            normed: a(seqs * d.hidden)?,
            logits: a(seqs * d.vocab)?,
            argmax: dev.compute.alloc_zeros::<i32>(seqs).ctx("activations")?,
            sums: dev.compute.alloc_zeros::<f64>(seqs).ctx("activations")?,
        })
    }
}

impl Backend for CudaBackend {
    fn forward(&mut self, steps: &[SeqStep]) -> Result<StepOutput, BackendError> {
        if steps.is_empty() {
            return Ok(StepOutput {
                checksum: 0.0,
                argmax: Vec::new(),
            });
        }
        let rows = self.ledger.admit(steps)?;
        self.run_model(&rows)
    }

    fn release(&mut self, seq: u64) {
        self.ledger.release(seq);
    }

    fn swap_out(&mut self, seq: u64) -> Result<(), BackendError> {
        self.swap(seq, true)
    }

    fn swap_in(&mut self, seq: u64) -> Result<(), BackendError> {
        self.swap(seq, false)
    }
}
