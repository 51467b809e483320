//! [`CpuBackend`]: the [`Backend`] on the CPU, f32, on its own rayon pool of an explicit size.

use std::sync::Arc;

use crate::attention::{Heads, SeqRows, attention, write_kv};
use crate::kv::{KvPool, block_pairs, copy_chunks};
use crate::ledger::Ledger;
use crate::model::{ModelDims, Weights, token_id};
use crate::ops::{argmax, linear, rms_norm, rope, silu_gate};
use crate::{Backend, BackendError, SeqStep, StepOutput};

/// A rayon pool of a fixed size that the backend's work runs on (not the global pool, so the
/// thread count of a timing is the one asked for).
#[derive(Debug, Clone)]
pub struct Threads {
    pool: Arc<rayon::ThreadPool>,
    n: usize,
}

impl Threads {
    /// `n` threads (0 = every available core).
    pub fn new(n: usize) -> Result<Threads, BackendError> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |c| c.get())
        } else {
            n
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("servesim-kernels-{i}"))
            .build()
            .map_err(|e| BackendError::Config(format!("cannot start {n} threads: {e}")))?;
        Ok(Threads {
            pool: Arc::new(pool),
            n,
        })
    }
    pub fn count(&self) -> usize {
        self.n
    }
    /// Run `f` on the pool (its parallel regions use the pool's threads).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// How to build a [`CpuBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuConfig {
    pub dims: ModelDims,
    /// Threads of the backend's pool (0 = every available core).
    pub threads: usize,
    /// Seed of the weights and of the shuffled block order.
    pub seed: u64,
    /// KV blocks of the device pool.
    pub device_blocks: usize,
    /// Bytes of the host pool (whole blocks of all layers' K and V).
    pub host_bytes: usize,
}

/// Per-token buffers of one forward pass, reused across iterations.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

/// The CPU compute backend (see the crate documentation).
#[derive(Debug)]
pub struct CpuBackend {
    dims: ModelDims,
    weights: Weights,
    threads: Threads,
    device: KvPool,
    host: KvPool,
    ledger: Ledger,
    scratch: Scratch,
    logits: Vec<f32>,
}

impl CpuBackend {
    pub fn new(cfg: &CpuConfig) -> Result<CpuBackend, BackendError> {
        let d = &cfg.dims;
        d.validate()?;
        if cfg.device_blocks == 0 {
            return Err(BackendError::Config("device_blocks must be ≥ 1".into()));
        }
        let host_blocks = cfg.host_bytes / d.block_bytes();
        let hd = d.head_dim();
        Ok(CpuBackend {
            weights: Weights::random(d, cfg.seed),
            threads: Threads::new(cfg.threads)?,
            device: KvPool::try_new(cfg.device_blocks, d.layers, d.kv_heads, hd)?,
            host: KvPool::try_new(host_blocks, d.layers, d.kv_heads, hd)?,
            ledger: Ledger::new(
                d.max_context_tokens,
                cfg.device_blocks,
                host_blocks,
                cfg.seed,
            ),
            scratch: Scratch::default(),
            logits: Vec::new(),
            dims: d.clone(),
        })
    }
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }
    pub fn threads(&self) -> &Threads {
        &self.threads
    }
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
    /// Free device blocks (and the capacity).
    pub fn device_blocks(&self) -> (usize, usize) {
        self.ledger.device_blocks()
    }
    /// Free host blocks (and the capacity).
    pub fn host_blocks(&self) -> (usize, usize) {
        self.ledger.host_blocks()
    }
    /// Tokens of KV the backend holds for `seq` (None: unknown).
    pub fn seq_tokens(&self, seq: u64) -> Option<usize> {
        self.ledger.seq_tokens(seq)
    }
    /// The last forward's logits, `[steps, vocab]` in step order.
    pub fn last_logits(&self) -> &[f32] {
        &self.logits
    }
    fn heads(&self) -> Heads {
        Heads {
            heads: self.dims.heads,
            kv_heads: self.dims.kv_heads,
            head_dim: self.dims.head_dim(),
        }
    }

    /// All layers and the LM head over the admitted rows; fills `self.logits`.
    fn run_model(&mut self, seqs: &[SeqRows]) -> StepOutput {
        let d = self.dims.clone();
        let heads = self.heads();
        let positions: Vec<usize> = seqs
            .iter()
            .flat_map(|s| s.cached..s.cached + s.new)
            .collect();
        let sc = &mut self.scratch;
        sc.x.clear();
        for s in seqs {
            for p in s.cached..s.cached + s.new {
                let tok = token_id(s.seq, p, d.vocab);
                sc.x.extend_from_slice(
                    &self.weights.embedding[tok * d.hidden..(tok + 1) * d.hidden],
                );
            }
        }
        let n = self.threads.count();
        let (weights, device) = (&self.weights, &mut self.device);
        self.threads.install(|| {
            for (layer, lw) in weights.layers.iter().enumerate() {
                layer_forward(sc, lw, device, layer, seqs, &positions, heads, &d, n);
            }
        });
        // The last row of each sequence through the final norm and the LM head.
        let mut last = Vec::with_capacity(seqs.len() * d.hidden);
        for s in seqs {
            let r = s.row0 + s.new - 1;
            last.extend_from_slice(&sc.x[r * d.hidden..(r + 1) * d.hidden]);
        }
        let mut normed = vec![0.0; last.len()];
        rms_norm(&last, &weights.final_norm, &mut normed);
        self.logits.resize(seqs.len() * d.vocab, 0.0);
        let logits = &mut self.logits;
        self.threads.install(|| {
            linear(
                &normed,
                seqs.len(),
                d.hidden,
                &weights.lm_head,
                d.vocab,
                logits,
                false,
                n,
            )
        });
        let checksum = self.logits.iter().map(|&v| v as f64).sum();
        let argmax = seqs
            .iter()
            .zip(self.logits.chunks(d.vocab))
            .map(|(s, row)| (s.seq, argmax(row)))
            .collect();
        StepOutput { checksum, argmax }
    }

    /// Move a sequence's blocks between pools (`to_host`: device → host).
    fn swap(&mut self, seq: u64, to_host: bool) -> Result<(), BackendError> {
        let (device, host, layers) = (&mut self.device, &mut self.host, self.dims.layers);
        self.ledger.swap(seq, to_host, |from, to| {
            let (src, dst) = if to_host {
                (&*device, host)
            } else {
                (&*host, device)
            };
            let pairs = block_pairs(from, src.blocks, to, dst.blocks, layers);
            copy_chunks(src.data(), dst.data_mut(), src.chunk_len(), &pairs);
            Ok(())
        })
    }
}

/// One decoder layer over the batch's rows (residual adds fused into the output GEMMs).
#[allow(clippy::too_many_arguments)]
fn layer_forward(
    sc: &mut Scratch,
    lw: &crate::model::LayerWeights,
    pool: &mut KvPool,
    layer: usize,
    seqs: &[SeqRows],
    positions: &[usize],
    h: Heads,
    d: &ModelDims,
    threads: usize,
) {
    let t = positions.len();
    let (hidden, qw, ffn) = (d.hidden, h.qkv_width(), d.ffn);
    let aw = h.heads * h.head_dim;
    sc.h.resize(t * hidden, 0.0);
    sc.qkv.resize(t * qw, 0.0);
    sc.attn.resize(t * aw, 0.0);
    sc.gu.resize(t * 2 * ffn, 0.0);
    sc.act.resize(t * ffn, 0.0);
    rms_norm(&sc.x, &lw.attn_norm, &mut sc.h);
    linear(&sc.h, t, hidden, &lw.wqkv, qw, &mut sc.qkv, false, threads);
    rope(&mut sc.qkv, positions, h.heads, h.kv_heads, h.head_dim);
    write_kv(pool, layer, &sc.qkv, seqs, h);
    attention(pool, layer, &sc.qkv, seqs, h, &mut sc.attn);
    linear(&sc.attn, t, aw, &lw.wo, hidden, &mut sc.x, true, threads);
    rms_norm(&sc.x, &lw.mlp_norm, &mut sc.h);
    linear(
        &sc.h,
        t,
        hidden,
        &lw.w_up,
        2 * ffn,
        &mut sc.gu,
        false,
        threads,
    );
    silu_gate(&sc.gu, ffn, &mut sc.act);
    linear(
        &sc.act, t, ffn, &lw.w_down, hidden, &mut sc.x, true, threads,
    );
}

impl Backend for CpuBackend {
    fn forward(&mut self, steps: &[SeqStep]) -> Result<StepOutput, BackendError> {
        if steps.is_empty() {
            self.logits.clear();
            return Ok(StepOutput {
                checksum: 0.0,
                argmax: Vec::new(),
            });
        }
        let rows = self.ledger.admit(steps)?;
        Ok(self.run_model(&rows))
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
