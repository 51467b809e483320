//! [`CpuBackend`]: the [`Backend`] on the CPU, f32, on its own rayon pool of an explicit size.

use std::sync::Arc;
use std::time::Instant;

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

/// Seconds the last [`Backend::forward`] spent in each stage, summed over the layers, measured
/// with a monotonic clock around each operator call (calibration times operators inside real
/// forward passes with it, where weights and KV compete for the caches as in live mode).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub qkv_s: f64,
    pub out_proj_s: f64,
    pub mlp_up_s: f64,
    pub mlp_down_s: f64,
    /// Two RMSNorms, RoPE and the gated SiLU per layer (what `SmallOpsBench` runs).
    pub small_ops_s: f64,
    /// The new tokens' K/V writes and the attention, prefill and decode rows together.
    pub attention_s: f64,
    pub lm_head_s: f64,
    /// The whole call, including what no stage covers (block admission, embedding lookup,
    /// final norm, checksum, argmax).
    pub total_s: f64,
}

impl StageTimes {
    /// `total_s` minus every stage: the time outside the profiled operators.
    pub fn other_s(&self) -> f64 {
        self.total_s
            - (self.qkv_s
                + self.out_proj_s
                + self.mlp_up_s
                + self.mlp_down_s
                + self.small_ops_s
                + self.attention_s
                + self.lm_head_s)
    }
}

/// Run `f`, add its seconds to `acc`.
fn timed<R>(acc: &mut f64, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed().as_secs_f64();
    r
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where there is none).
fn available_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// [`CpuBackend::new`]'s memory check for the model's weights alone (and one KV block), for a
/// caller that wants to refuse a model too big for this machine before other work.
pub fn check_weights_fit(d: &ModelDims) -> Result<(), BackendError> {
    check_fits_in_memory(d, 1, available_memory_bytes())
}

/// Refuse a model whose weights and KV pools would not fit in the memory available (the
/// allocation would succeed on an overcommitting system and the process be killed while it
/// fills the weights): one clear error instead.
fn check_fits_in_memory(
    d: &ModelDims,
    blocks: usize,
    available: Option<usize>,
) -> Result<(), BackendError> {
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let weights = d.weight_bytes();
    let kv = blocks.checked_mul(d.block_bytes());
    let need = weights.zip(kv).and_then(|(w, k)| w.checked_add(k));
    match (need, available) {
        (None, _) => Err(BackendError::Config(
            "the model's weights and KV pools do not fit in memory (their size overflows)".into(),
        )),
        (Some(n), Some(a)) if n > a / 10 * 9 => Err(BackendError::Config(format!(
            "the CPU backend needs {:.1} GiB (weights {:.1} GiB in f32, KV pools {:.1} GiB) and {:.1} GiB of memory is available: choose a smaller model (e.g. cpu-small-4x512) or fewer KV blocks",
            gib(n),
            gib(weights.unwrap_or(0)),
            gib(kv.unwrap_or(0)),
            gib(a)
        ))),
        _ => Ok(()),
    }
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
    stages: StageTimes,
}

impl CpuBackend {
    pub fn new(cfg: &CpuConfig) -> Result<CpuBackend, BackendError> {
        let d = &cfg.dims;
        d.validate()?;
        if cfg.device_blocks == 0 {
            return Err(BackendError::Config("device_blocks must be ≥ 1".into()));
        }
        let host_blocks = cfg.host_bytes / d.block_bytes();
        check_fits_in_memory(d, cfg.device_blocks + host_blocks, available_memory_bytes())?;
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
            stages: StageTimes::default(),
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
    /// Where the last forward's time went.
    pub fn last_stage_times(&self) -> StageTimes {
        self.stages
    }

    /// Calibration: hold KV for `steps` as if they had run (blocks admitted, filled with
    /// pseudo-random values so that reads touch real memory), without computing them. All or
    /// none, like `forward`.
    pub fn prime(&mut self, steps: &[SeqStep], seed: u64) -> Result<(), BackendError> {
        let rows = self.ledger.admit(steps)?;
        let blocks: Vec<u32> = rows.iter().flat_map(|r| r.table.iter().copied()).collect();
        self.device.randomize_blocks(&blocks, seed);
        Ok(())
    }

    /// Calibration: forget every token of `seq` after the first `tokens` (freeing blocks it no
    /// longer needs), so that the same step can run again at the same context.
    pub fn rewind(&mut self, seq: u64, tokens: usize) -> Result<(), BackendError> {
        self.ledger.rewind(seq, tokens)
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
        let (weights, device, st) = (&self.weights, &mut self.device, &mut self.stages);
        self.threads.install(|| {
            for (layer, lw) in weights.layers.iter().enumerate() {
                let kv = LayerKv {
                    pool: &mut *device,
                    layer,
                    seqs,
                    positions: &positions,
                };
                layer_forward(sc, lw, kv, heads, &d, n, st);
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
        let lm_s = &mut self.stages.lm_head_s;
        timed(lm_s, || {
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
            })
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

/// One layer's view of the KV pool and the batch's sequences.
struct LayerKv<'a> {
    pool: &'a mut KvPool,
    layer: usize,
    seqs: &'a [SeqRows],
    positions: &'a [usize],
}

/// One decoder layer over the batch's rows (residual adds fused into the output GEMMs), each
/// operator's seconds added to its stage in `st`.
fn layer_forward(
    sc: &mut Scratch,
    lw: &crate::model::LayerWeights,
    kv: LayerKv<'_>,
    h: Heads,
    d: &ModelDims,
    threads: usize,
    st: &mut StageTimes,
) {
    let t = kv.positions.len();
    let (hidden, qw, ffn) = (d.hidden, h.qkv_width(), d.ffn);
    let aw = h.heads * h.head_dim;
    sc.h.resize(t * hidden, 0.0);
    sc.qkv.resize(t * qw, 0.0);
    sc.attn.resize(t * aw, 0.0);
    sc.gu.resize(t * 2 * ffn, 0.0);
    sc.act.resize(t * ffn, 0.0);
    let (x, hh, qkv, attn, gu, act) = (
        &mut sc.x,
        &mut sc.h,
        &mut sc.qkv,
        &mut sc.attn,
        &mut sc.gu,
        &mut sc.act,
    );
    timed(&mut st.small_ops_s, || rms_norm(x, &lw.attn_norm, hh));
    timed(&mut st.qkv_s, || {
        linear(hh, t, hidden, &lw.wqkv, qw, qkv, false, threads)
    });
    timed(&mut st.small_ops_s, || {
        rope(qkv, kv.positions, h.heads, h.kv_heads, h.head_dim)
    });
    timed(&mut st.attention_s, || {
        write_kv(kv.pool, kv.layer, qkv, kv.seqs, h);
        attention(kv.pool, kv.layer, qkv, kv.seqs, h, attn);
    });
    timed(&mut st.out_proj_s, || {
        linear(attn, t, aw, &lw.wo, hidden, x, true, threads)
    });
    timed(&mut st.small_ops_s, || rms_norm(x, &lw.mlp_norm, hh));
    timed(&mut st.mlp_up_s, || {
        linear(hh, t, hidden, &lw.w_up, 2 * ffn, gu, false, threads)
    });
    timed(&mut st.small_ops_s, || silu_gate(gu, ffn, act));
    timed(&mut st.mlp_down_s, || {
        linear(act, t, ffn, &lw.w_down, hidden, x, true, threads)
    });
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
        let start = Instant::now();
        self.stages = StageTimes::default();
        let rows = self.ledger.admit(steps)?;
        let out = self.run_model(&rows);
        self.stages.total_s = start.elapsed().as_secs_f64();
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A model larger than the available memory is refused before anything is allocated.
    #[test]
    fn a_model_larger_than_the_available_memory_is_refused() {
        let d = ModelDims {
            layers: 32,
            hidden: 4096,
            heads: 32,
            kv_heads: 32,
            ffn: 11008,
            vocab: 32000,
            max_context_tokens: 4096,
        };
        let gib = 1usize << 30;
        let e = check_fits_in_memory(&d, 100, Some(8 * gib)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("needs 26.7 GiB (weights 25.1 GiB")
                && msg.contains("8.0 GiB of memory is available"),
            "{msg}"
        );
        assert!(check_fits_in_memory(&d, 100, Some(64 * gib)).is_ok());
        assert!(check_fits_in_memory(&d, 100, None).is_ok());
        assert!(check_fits_in_memory(&d, usize::MAX, Some(64 * gib)).is_err());
    }
}
