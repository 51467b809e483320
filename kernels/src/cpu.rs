//! [`CpuBackend`]: the [`Backend`] on the CPU, f32, on its own rayon pool of an explicit size.

use std::collections::HashMap;
use std::sync::Arc;

use crate::attention::{Heads, SeqRows, attention, write_kv};
use crate::kv::{FreeList, KvPool, block_pairs, copy_chunks};
use crate::model::{ModelDims, Weights, token_id};
use crate::ops::{argmax, linear, rms_norm, rope, silu_gate};
use crate::{BLOCK_TOKENS, Backend, BackendError, SeqStep, StepOutput};

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

#[derive(Debug, Clone)]
struct SeqKv {
    tokens: usize,
    blocks: Vec<u32>,
    on_host: bool,
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
    device_free: FreeList,
    host_free: FreeList,
    seqs: HashMap<u64, SeqKv>,
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
            device_free: FreeList::new(cfg.device_blocks, cfg.seed ^ 1),
            host_free: FreeList::new(host_blocks, cfg.seed ^ 2),
            seqs: HashMap::new(),
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
        (self.device_free.available(), self.device_free.capacity())
    }
    /// Free host blocks (and the capacity).
    pub fn host_blocks(&self) -> (usize, usize) {
        (self.host_free.available(), self.host_free.capacity())
    }
    /// Tokens of KV the backend holds for `seq` (None: unknown).
    pub fn seq_tokens(&self, seq: u64) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.tokens)
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

    /// Check the steps against what the backend holds and allocate their new blocks (all or none).
    fn admit(&mut self, steps: &[SeqStep]) -> Result<Vec<SeqRows>, BackendError> {
        let mut rows = Vec::with_capacity(steps.len());
        let mut row0 = 0;
        let mut taken: Vec<(u64, Vec<u32>)> = Vec::new();
        let undo = |this: &mut CpuBackend, taken: &[(u64, Vec<u32>)]| {
            for (_, b) in taken {
                this.device_free.give_back(b);
            }
        };
        for (i, st) in steps.iter().enumerate() {
            if let Err(e) = self.check_step(st, &steps[..i]) {
                undo(self, &taken);
                return Err(e);
            }
            let have = self.seqs.get(&st.seq).map_or(&[][..], |s| &s.blocks[..]);
            let need = (st.cached_tokens + st.new_tokens).div_ceil(BLOCK_TOKENS);
            let more = need.saturating_sub(have.len());
            let Some(new_blocks) = self.device_free.take(more) else {
                let e = BackendError::OutOfDeviceBlocks {
                    seq: st.seq,
                    needed: more,
                    free: self.device_free.available(),
                    capacity: self.device_free.capacity(),
                };
                undo(self, &taken);
                return Err(e);
            };
            let mut table = have.to_vec();
            table.extend_from_slice(&new_blocks);
            taken.push((st.seq, new_blocks));
            rows.push(SeqRows {
                seq: st.seq,
                row0,
                cached: st.cached_tokens,
                new: st.new_tokens,
                table,
            });
            row0 += st.new_tokens;
        }
        for s in &rows {
            let e = self.seqs.entry(s.seq).or_insert(SeqKv {
                tokens: 0,
                blocks: Vec::new(),
                on_host: false,
            });
            e.tokens = s.cached + s.new;
            e.blocks.clone_from(&s.table);
        }
        Ok(rows)
    }

    fn check_step(&self, st: &SeqStep, earlier: &[SeqStep]) -> Result<(), BackendError> {
        let bad = |msg: String| Err(BackendError::BadStep { seq: st.seq, msg });
        if st.new_tokens == 0 {
            return bad("new_tokens must be ≥ 1".into());
        }
        if earlier.iter().any(|e| e.seq == st.seq) {
            return bad("appears twice in one iteration".into());
        }
        let end = st.cached_tokens + st.new_tokens;
        if end > self.dims.max_context_tokens {
            return bad(format!(
                "{end} tokens exceed the model's context of {}",
                self.dims.max_context_tokens
            ));
        }
        let have = self.seqs.get(&st.seq);
        if have.is_some_and(|s| s.on_host) {
            return bad("its KV is on the host; swap it in first".into());
        }
        let held = have.map_or(0, |s| s.tokens);
        if held != st.cached_tokens {
            return bad(format!(
                "cached_tokens = {} but the backend holds {held} tokens of its KV",
                st.cached_tokens
            ));
        }
        Ok(())
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
        let s = self.seqs.get(&seq).ok_or(BackendError::UnknownSeq(seq))?;
        if s.on_host == to_host {
            let where_ = if to_host { "host" } else { "device" };
            return Err(BackendError::BadStep {
                seq,
                msg: format!("its KV is already on the {where_}"),
            });
        }
        let n = s.blocks.len();
        let (src, dst, src_free, dst_free) = if to_host {
            (
                &self.device,
                &mut self.host,
                &mut self.device_free,
                &mut self.host_free,
            )
        } else {
            (
                &self.host,
                &mut self.device,
                &mut self.host_free,
                &mut self.device_free,
            )
        };
        let Some(to) = dst_free.take(n) else {
            let (free, capacity) = (dst_free.available(), dst_free.capacity());
            return Err(if to_host {
                BackendError::OutOfHostBlocks {
                    seq,
                    needed: n,
                    free,
                    capacity,
                }
            } else {
                BackendError::OutOfDeviceBlocks {
                    seq,
                    needed: n,
                    free,
                    capacity,
                }
            });
        };
        let pairs = block_pairs(&s.blocks, src.blocks, &to, dst.blocks, self.dims.layers);
        let chunk = src.chunk_len();
        copy_chunks(src.data(), dst.data_mut(), chunk, &pairs);
        src_free.give_back(&s.blocks);
        let s = self.seqs.get_mut(&seq).expect("looked up above");
        s.blocks = to;
        s.on_host = to_host;
        Ok(())
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
        let rows = self.admit(steps)?;
        Ok(self.run_model(&rows))
    }

    fn release(&mut self, seq: u64) {
        if let Some(s) = self.seqs.remove(&seq) {
            if s.on_host {
                self.host_free.give_back(&s.blocks);
            } else {
                self.device_free.give_back(&s.blocks);
            }
        }
    }

    fn swap_out(&mut self, seq: u64) -> Result<(), BackendError> {
        self.swap(seq, true)
    }

    fn swap_in(&mut self, seq: u64) -> Result<(), BackendError> {
        self.swap(seq, false)
    }
}
