//! The CPU runner: times a measurement plan through the CPU backend's operator entry points
//! (`servesim_kernels::bench`, the functions `CpuBackend::forward` runs) on a thread pool of an
//! explicit size, and measures the backend's per-iteration cost outside those operators.
//!
//! Timing (`shared/docs/cpu-backend.md` §3): each cell is set up, warmed up, then timed call by
//! call with a monotonic clock for a time box (at least a few samples); the whole grid is repeated
//! `rounds` times so slow drifts of a shared machine hit every shape alike. A row's `time_s` is
//! the median of its per-round medians, `min_s`/`max_s` span every sample, `repeats` counts them.
//! A 512³ GEMM timed before and after the grid tells how much the machine drifted meanwhile.

use std::time::Instant;

use anyhow::{Result, bail};
use servesim::catalogue::ModelSpec;
use servesim::profile::{CopyVariant, Measurement};
use servesim_kernels::bench::{AttnBench, CopyBench, GemmBench, SmallOpsBench};
use servesim_kernels::{Backend, CpuBackend, CpuConfig, ModelDims, SeqStep, Threads};

use crate::cpu_forward::Samples;
use crate::plan::{Kernel, PlanConfig, PlanItem, work};

/// The copy variant the CPU measures: one `memcpy` per chunk (both pools are RAM).
pub const CPU_COPY_VARIANT: CopyVariant = CopyVariant::PinnedMemcpy;

/// How the CPU runner times.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuOptions {
    /// Threads of the backend's pool (0 = every available core).
    pub threads: usize,
    pub seed: u64,
    /// Times the whole grid is measured.
    pub rounds: u32,
    /// Untimed calls per cell and round.
    pub warmup: u32,
    /// Seconds of timed calls per cell and round.
    pub cell_s: f64,
    /// Fewest timed calls per cell and round.
    pub min_samples: u32,
    /// Bytes read from a scratch buffer before every timed call, to evict the operator's weights,
    /// KV and activations from the caches (0, the default: timed back to back, warm). Neither is
    /// what a real iteration sees: its weights and KV exceed the last-level cache only in part.
    /// Measured on cpu-small-4x512 (results/fidelity/README.md): warm operators add up to 15–42 %
    /// less than real decode iterations, flushed ones to far more (decode attention × 3.6).
    pub flush_bytes: usize,
    /// Time the iteration operators inside real forward passes ([`crate::cpu_forward`], the
    /// default) rather than one by one in isolation (copies are always isolated).
    pub in_forward: bool,
}

/// Twice the last-level cache (from sysfs), or 64 MiB when it cannot be read: what
/// `--cold-cache` sets [`CpuOptions::flush_bytes`] to.
pub fn default_flush_bytes() -> usize {
    let llc = (0..8)
        .filter_map(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let size = std::fs::read_to_string(format!("{dir}/size")).ok()?;
            let size = size.trim();
            let (num, mult) = match size.strip_suffix('K') {
                Some(n) => (n, 1usize << 10),
                None => match size.strip_suffix('M') {
                    Some(n) => (n, 1 << 20),
                    None => (size, 1),
                },
            };
            num.parse::<usize>().ok().map(|n| n * mult)
        })
        .max();
    llc.map_or(64 << 20, |b| (2 * b).clamp(8 << 20, 1 << 30))
}

impl CpuOptions {
    pub fn full(threads: usize, seed: u64) -> CpuOptions {
        CpuOptions {
            threads,
            seed,
            // Five rounds: on a shared 2-core machine single cells swing by 20–30 % from round to
            // round; the median of five is steadier than of three.
            rounds: 5,
            warmup: 3,
            cell_s: 0.1,
            min_samples: 7,
            flush_bytes: 0,
            in_forward: true,
        }
    }
    pub fn quick(threads: usize, seed: u64) -> CpuOptions {
        CpuOptions {
            rounds: 2,
            warmup: 2,
            cell_s: 0.03,
            min_samples: 5,
            ..CpuOptions::full(threads, seed)
        }
    }
}

/// Most timed calls per cell and round (µs-scale operators fill their time box quickly).
pub(crate) const MAX_SAMPLES: usize = 2000;

/// The plan's settings on the CPU: grids a few-core machine measures in minutes.
pub fn cpu_plan_config(model: &ModelSpec, quick: bool) -> PlanConfig {
    let ctx = model.max_context_tokens;
    PlanConfig {
        max_tokens: if quick { 512 } else { 1024 },
        max_lm_rows: if quick { 32 } else { 64 },
        points_per_octave: if quick { 1 } else { 2 },
        max_prefill_tokens: (if quick { 512 } else { 1024 }).min(ctx),
        max_decode_batch: if quick { 32 } else { 64 },
        max_kv_tokens: if quick { 16 << 10 } else { 32 << 10 },
        block_tokens: vec![servesim_kernels::BLOCK_TOKENS as u32],
        max_copy_chunks: if quick { 256 } else { 1024 },
        max_copy_bytes: if quick { 16 << 20 } else { 64 << 20 },
        gpus: 1,
        warmup: 3,
        repeats: 20,
    }
}

/// The plan items the CPU runs: copies of the one CPU variant only, no all-reduce.
pub fn cpu_items(items: Vec<PlanItem>) -> Vec<PlanItem> {
    items
        .into_iter()
        .filter(|i| match i.kernel {
            Kernel::Copy { variant, .. } => variant == CPU_COPY_VARIANT,
            Kernel::AllReduce { .. } => false,
            _ => true,
        })
        .collect()
}

/// The backend's dimensions of a catalogue model (shared with `live --device cpu`).
pub use servesim::live::cpu::dims_of;

/// Models the CPU backend can run: Llama-style (gated MLP, rotary), at TP 1.
pub fn check_model(name: &str, model: &ModelSpec, tp: u32) -> Result<()> {
    if tp != 1 {
        bail!("the CPU backend runs tp = 1 only, got --tp {tp}");
    }
    if !model.gated_mlp || model.learned_positions {
        bail!(
            "model `{name}`: the CPU backend runs Llama-style blocks (gated MLP, rotary positions); try cpu-small-4x512"
        );
    }
    dims_of(model)
        .validate()
        .map_err(|e| anyhow::anyhow!("model `{name}`: {e}"))
}

/// A rough time of one call of a kernel on a few-core CPU (for the plan's estimate).
pub fn estimate_call_s(k: &Kernel) -> f64 {
    let (flops, bytes, copy_bytes, _) = work(k);
    let eff_flops = match k {
        Kernel::AttnPrefill { .. } => 3e10,
        _ => 1.2e11,
    };
    // work() counts fp16 bytes; the CPU runs f32.
    flops / eff_flops + 2.0 * bytes / 2e10 + copy_bytes / 1.5e10 + 2e-5
}

/// Estimated seconds of a CPU calibration of `items`.
pub fn estimate_s(model: &ModelSpec, items: &[PlanItem], o: &CpuOptions) -> f64 {
    let fwd = |i: &PlanItem| o.in_forward && crate::cpu_forward::in_forward(i.op);
    let fwd_items: Vec<PlanItem> = items.iter().filter(|i| fwd(i)).cloned().collect();
    let g = crate::cpu_forward::grid(&fwd_items, model.max_context_tokens as usize);
    let in_forward_s = crate::cpu_forward::estimate_s(&g.cells, model, o);
    let per_round: f64 = items
        .iter()
        .filter(|i| !fwd(i))
        .map(|i| {
            let t = estimate_call_s(&i.kernel);
            let set_up = 0.002 + setup_bytes(&i.kernel) / 2e9;
            // A cache flush writes its buffer at about 10 GB/s before each timed call.
            let flush = o.flush_bytes as f64 / 1e10;
            set_up + o.warmup as f64 * t + o.cell_s.max(o.min_samples as f64 * (t + flush))
        })
        .sum();
    o.rounds as f64 * per_round + in_forward_s + OVERHEAD_PROBE_S
}

/// Bytes a cell's set-up fills with random values (attention pools, copy sources).
fn setup_bytes(k: &Kernel) -> f64 {
    match *k {
        Kernel::AttnDecode {
            batch,
            context,
            kv_heads,
            head_dim,
            ..
        } => 1.5 * 8.0 * batch as f64 * context as f64 * kv_heads as f64 * head_dim as f64,
        Kernel::AttnPrefill {
            chunk,
            cached,
            kv_heads,
            head_dim,
            ..
        } => 1.5 * 8.0 * (chunk + cached) as f64 * kv_heads as f64 * head_dim as f64,
        Kernel::Copy {
            chunks,
            chunk_bytes,
            ..
        } => 2.0 * chunks as f64 * chunk_bytes as f64,
        Kernel::Gemm { n, k, .. } => {
            (4.0 * n as f64 * k as f64).max(servesim_kernels::bench::GEMM_ROTATE_BYTES as f64)
        }
        _ => 0.0,
    }
}

/// Seconds the per-iteration overhead probe takes (about).
const OVERHEAD_PROBE_S: f64 = 3.0;

/// What the runner learned about the machine and the run.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReport {
    /// The CPU's model name (`/proc/cpuinfo`), or `unknown CPU`.
    pub cpu_name: String,
    pub threads: usize,
    /// Median seconds of a 512×512×512 GEMM before and after the grid.
    pub reference_gemm_s: (f64, f64),
    /// Cells whose per-round medians differ by more than 25 %.
    pub unsteady_cells: Vec<String>,
    /// Cells measured.
    pub cells: usize,
    /// In-forward timing: the median seconds per forward outside every timed stage.
    pub forward_other_s: Option<f64>,
}

/// The CPU's model name from `/proc/cpuinfo` (Linux), else `unknown CPU`.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// One cell of the grid, set up and ready to run.
enum Cell {
    Gemm(GemmBench),
    Small(SmallOpsBench),
    Attn(AttnBench),
    Copy(CopyBench),
}

impl Cell {
    fn build(k: &Kernel, dims: &ModelDims, threads: &Threads, seed: u64) -> Result<Cell> {
        let u = |v: u32| v as usize;
        Ok(match *k {
            Kernel::Gemm { m, n, k } => Cell::Gemm(GemmBench::new(threads, u(m), u(k), u(n), seed)),
            Kernel::SmallOps { tokens, .. } => {
                Cell::Small(SmallOpsBench::new(threads, dims, u(tokens), seed))
            }
            Kernel::AttnPrefill { chunk, cached, .. } => {
                Cell::Attn(AttnBench::prefill(threads, dims, u(chunk), u(cached), seed))
            }
            Kernel::AttnDecode { batch, context, .. } => {
                Cell::Attn(AttnBench::decode(threads, dims, u(batch), u(context), seed))
            }
            Kernel::Copy {
                chunks,
                chunk_bytes,
                ..
            } => Cell::Copy(CopyBench::new(u(chunks), chunk_bytes as usize, seed)),
            Kernel::AllReduce { .. } => bail!("the CPU backend has no all-reduce (tp = 1 only)"),
        })
    }
    fn run(&mut self) {
        match self {
            Cell::Gemm(b) => b.run(),
            Cell::Small(b) => b.run(),
            Cell::Attn(b) => b.run(),
            Cell::Copy(b) => b.run(),
        }
    }
}

/// Evicts the caches by reading a buffer larger than them ([`CpuOptions::flush_bytes`]).
struct Flush(Vec<u64>);

impl Flush {
    fn new(bytes: usize) -> Flush {
        // Distinct values, so that the pages are really backed (not the shared zero page).
        Flush((0..bytes as u64 / 8).collect())
    }
    fn run(&mut self) {
        // One read per 64-byte line brings the line in, clean: it evicts without a write-back,
        // as a real iteration's read-only weights and KV evict one another.
        let mut sum = 0u64;
        for x in self.0.iter().step_by(8) {
            sum = sum.wrapping_add(*x);
        }
        std::hint::black_box(sum);
    }
}

/// Warm-up calls, then timed calls for the time box (at least `min_samples`), each after a cache
/// flush when `o.flush_bytes` > 0 (the flush is not timed, but counts against the time box):
/// seconds per call.
fn time_calls(run: &mut dyn FnMut(), o: &CpuOptions) -> Vec<f64> {
    for _ in 0..o.warmup {
        run();
    }
    let mut flush = (o.flush_bytes > 0).then(|| Flush::new(o.flush_bytes));
    let start = Instant::now();
    let mut v = Vec::new();
    while (v.len() < o.min_samples as usize || start.elapsed().as_secs_f64() < o.cell_s)
        && v.len() < MAX_SAMPLES
    {
        if let Some(f) = flush.as_mut() {
            f.run();
        }
        let t = Instant::now();
        run();
        v.push(t.elapsed().as_secs_f64());
    }
    v
}

pub(crate) fn median(v: &[f64]) -> f64 {
    crate::gpu::summarize(v).map_or(f64::NAN, |s| s.0)
}

/// Median seconds of a 512×512×512 GEMM on `threads` (the drift reference).
fn reference_gemm_s(threads: &Threads, o: &CpuOptions) -> f64 {
    let mut b = GemmBench::new(threads, 512, 512, 512, o.seed);
    median(&time_calls(&mut || b.run(), o))
}

/// The isolated items timed one cell at a time through the operator entry points, in order.
fn measure_isolated(
    model: &ModelSpec,
    items: &[PlanItem],
    o: &CpuOptions,
    threads: &Threads,
    progress: crate::gpu::Progress<'_>,
) -> Result<Vec<Samples>> {
    let dims = dims_of(model);
    let mut acc = vec![Samples::default(); items.len()];
    let total = items.len() * o.rounds as usize;
    for round in 0..o.rounds as usize {
        for (i, item) in items.iter().enumerate() {
            let seed = o.seed ^ ((i as u64) << 8) ^ round as u64;
            let mut cell = Cell::build(&item.kernel, &dims, threads, seed)?;
            let s = time_calls(&mut || cell.run(), o);
            acc[i].add_round(&s);
            progress(round * items.len() + i, total, item, median(&s));
        }
    }
    Ok(acc)
}

/// Time every item `o.rounds` times: the iteration operators inside real forward passes
/// ([`crate::cpu_forward`]) unless `o.in_forward` is off, the rest through the backend's
/// operator entry points one cell at a time.
pub fn measure(
    model: &ModelSpec,
    items: &[PlanItem],
    o: &CpuOptions,
    progress: crate::gpu::Progress<'_>,
) -> Result<(CpuReport, Vec<Measurement>)> {
    let threads = Threads::new(o.threads)?;
    let ref0 = reference_gemm_s(&threads, o);
    let fwd = |i: &PlanItem| o.in_forward && crate::cpu_forward::in_forward(i.op);
    let (fwd_items, iso_items): (Vec<PlanItem>, Vec<PlanItem>) =
        items.iter().cloned().partition(|i| fwd(i));
    let iso_acc = measure_isolated(model, &iso_items, o, &threads, &mut *progress)?;
    let (fwd_acc, other_s) = if fwd_items.is_empty() {
        (Vec::new(), None)
    } else {
        let (acc, other) = crate::cpu_forward::measure(model, &fwd_items, o, progress)?;
        (acc, Some(other))
    };
    let ref1 = reference_gemm_s(&threads, o);
    let (mut fwd_acc, mut iso_acc) = (fwd_acc.into_iter(), iso_acc.into_iter());
    let mut unsteady = Vec::new();
    let rows = items
        .iter()
        .map(|item| {
            let a = if fwd(item) {
                fwd_acc.next()
            } else {
                iso_acc.next()
            };
            let a = a.expect("one sample set per item");
            let (lo, hi) = a
                .medians
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &m| (l.min(m), h.max(m)));
            if hi > 1.25 * lo {
                unsteady.push(format!("{} x={} y={}", item.op.name(), item.x, item.y));
            }
            crate::cpu_forward::row(item, &a)
        })
        .collect();
    let report = CpuReport {
        cpu_name: cpu_name(),
        threads: threads.count(),
        reference_gemm_s: (ref0, ref1),
        unsteady_cells: unsteady,
        cells: items.len(),
        forward_other_s: other_s,
    };
    Ok((report, rows))
}

/// The backend's per-iteration time outside the profiled operators (embedding lookup, final norm,
/// argmax, block allocation, pool hand-offs): the median over a few real `forward` calls of
/// measured − `operators_s(shape)`, never below 0.
pub fn iteration_overhead_s(
    model: &ModelSpec,
    o: &CpuOptions,
    operators_s: &dyn Fn(&servesim::cost::BatchShape) -> f64,
) -> Result<f64> {
    let dims = dims_of(model);
    let mut be = CpuBackend::new(&CpuConfig {
        dims,
        threads: o.threads,
        seed: o.seed,
        device_blocks: 1024,
        host_bytes: 0,
    })?;
    let mut diffs = Vec::new();
    let mut next_seq = 0u64;
    // Decode batches of 1, 4 and 16 sequences from context 64 (each call adds one token).
    for batch in [1usize, 4, 16] {
        let seqs: Vec<u64> = (0..batch as u64).map(|i| next_seq + i).collect();
        next_seq += batch as u64;
        let prefill: Vec<SeqStep> = seqs
            .iter()
            .map(|&seq| SeqStep {
                seq,
                cached_tokens: 0,
                new_tokens: 63,
            })
            .collect();
        be.forward(&prefill)?;
        for call in 0..(o.warmup + 2 * o.min_samples) as usize {
            let ctx = 63 + call;
            let steps: Vec<SeqStep> = seqs
                .iter()
                .map(|&seq| SeqStep {
                    seq,
                    cached_tokens: ctx,
                    new_tokens: 1,
                })
                .collect();
            let mut shape = servesim::cost::BatchShape::default();
            for _ in &seqs {
                shape.add_decode(ctx as u32 + 1);
            }
            let t = Instant::now();
            be.forward(&steps)?;
            let took = t.elapsed().as_secs_f64();
            if call >= o.warmup as usize {
                diffs.push(took - operators_s(&shape));
            }
        }
        for s in seqs {
            be.release(s);
        }
    }
    Ok(median(&diffs).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use servesim::catalogue::Catalogue;
    use servesim::profile::Op;

    fn item(op: Op, x: u64, y: u64, kernel: Kernel) -> PlanItem {
        PlanItem { op, x, y, kernel }
    }

    /// Both timing methods give one positive row per item, in the items' order; copies are
    /// timed alone either way.
    #[test]
    fn in_forward_and_isolated_timing_each_give_every_row() {
        let model = Catalogue::builtin()
            .model("cpu-tiny-2x256")
            .unwrap()
            .clone();
        let d = dims_of(&model);
        let (heads, kv_heads, head_dim) = (d.heads as u32, d.kv_heads as u32, 64);
        let items = vec![
            item(
                Op::Qkv,
                2,
                0,
                Kernel::Gemm {
                    m: 2,
                    n: d.qkv_width() as u32,
                    k: 256,
                },
            ),
            item(
                Op::AttnDecode,
                2,
                32,
                Kernel::AttnDecode {
                    batch: 2,
                    context: 32,
                    heads,
                    kv_heads,
                    head_dim,
                    block_tokens: 16,
                },
            ),
            item(
                Op::H2dPinnedMemcpy,
                2,
                4096,
                Kernel::Copy {
                    host_to_device: true,
                    variant: CPU_COPY_VARIANT,
                    chunks: 2,
                    chunk_bytes: 4096,
                },
            ),
        ];
        for in_forward in [true, false] {
            let o = CpuOptions {
                rounds: 1,
                warmup: 1,
                cell_s: 0.0,
                min_samples: 2,
                in_forward,
                ..CpuOptions::quick(1, 5)
            };
            let mut seen = 0;
            let (report, rows) = measure(&model, &items, &o, &mut |_, _, _, _| seen += 1).unwrap();
            assert_eq!(rows.len(), 3);
            for (r, i) in rows.iter().zip(&items) {
                assert_eq!((r.op, r.x, r.y), (i.op, i.x, i.y));
                assert!(r.time_s > 0.0 && r.repeats == Some(2), "{r:?}");
            }
            // In-forward: one copy cell and one forward cell (decode of 2 at context 32 serves
            // both qkv and attention); isolated: three cells.
            assert_eq!(seen, if in_forward { 2 } else { 3 });
            assert_eq!(report.forward_other_s.is_some(), in_forward);
        }
    }
}
