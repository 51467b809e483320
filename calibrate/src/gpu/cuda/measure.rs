//! Measuring a whole plan: the copy pools sized for its largest copy, every item timed with the
//! runner of its kernel, and the samples summarised into one `measurements.csv` row.

use servesim::profile::Measurement;

use super::R;
use super::all_reduce::time_all_reduce;
use super::compute::{check_heads, time_decode, time_gemm, time_prefill, time_small_ops};
use super::copy::{CopyPools, time_copy};
use super::device::Gpu;
use super::error::Ctx;
use crate::gpu::{DeviceReport, GpuError, Progress, RunOptions, summarize};
use crate::plan::{Kernel, PlanItem, describe};

/// Measure every item of a plan on device `opts.ordinal`.
pub fn measure(
    items: &[PlanItem],
    opts: &RunOptions,
    progress: Progress<'_>,
) -> Result<(DeviceReport, Vec<Measurement>), GpuError> {
    let mut g = Gpu::open(opts.ordinal, opts.seed)?;
    let mut pools = match copy_pool_bytes(items) {
        Some(b) => Some(CopyPools::new(&mut g, b.max(64 << 20), opts.seed)?),
        None => None,
    };
    let mut rows = Vec::with_capacity(items.len());
    for (idx, item) in items.iter().enumerate() {
        let what = format!("{} ({})", item.op.name(), describe(&item.kernel));
        let samples = time_item(&mut g, opts, &mut pools, item, &what)?;
        let row = measurement_row(item, &samples, what)?;
        let median = row.time_s;
        rows.push(row);
        progress(idx, items.len(), item, median);
    }
    g.stream.synchronize().ctx("final synchronisation")?;
    drop(pools);
    Ok((g.report.clone(), rows))
}

/// Bytes of the host and device copy pools: room for two rotations of the largest copy in the
/// plan; `None` when the plan has no copies.
fn copy_pool_bytes(items: &[PlanItem]) -> Option<usize> {
    items
        .iter()
        .filter_map(|i| match i.kernel {
            Kernel::Copy {
                chunks,
                chunk_bytes,
                ..
            } => Some(2 * chunks as usize * chunk_bytes as usize),
            _ => None,
        })
        .max()
}

// Long on purpose: one flat match that unpacks every kernel's fields into its runner's arguments.
/// The samples of one plan item, timed with the runner of its kernel.
fn time_item(
    g: &mut Gpu,
    opts: &RunOptions,
    pools: &mut Option<CopyPools>,
    item: &PlanItem,
    what: &str,
) -> R<Vec<f64>> {
    match item.kernel {
        Kernel::Gemm { m, n, k } => time_gemm(g, opts, m as usize, n as usize, k as usize, what),
        Kernel::SmallOps {
            tokens,
            hidden,
            ffn,
            gated,
            rope_heads,
            rope_kv_heads,
            head_dim,
        } => time_small_ops(
            g,
            opts,
            tokens as usize,
            hidden as usize,
            ffn as usize,
            gated,
            rope_heads as usize,
            rope_kv_heads as usize,
            head_dim as usize,
            what,
        ),
        Kernel::AttnDecode {
            batch,
            context,
            heads,
            kv_heads,
            head_dim,
            block_tokens,
        } => {
            check_heads(head_dim, heads, kv_heads)?;
            time_decode(
                g,
                opts,
                batch as usize,
                context as usize,
                heads as usize,
                kv_heads as usize,
                head_dim as usize,
                block_tokens as usize,
                what,
            )
        }
        Kernel::AttnPrefill {
            chunk,
            cached,
            heads,
            kv_heads,
            head_dim,
            block_tokens,
        } => {
            check_heads(head_dim, heads, kv_heads)?;
            time_prefill(
                g,
                opts,
                chunk as usize,
                cached as usize,
                heads as usize,
                kv_heads as usize,
                head_dim as usize,
                block_tokens as usize,
                what,
            )
        }
        Kernel::Copy {
            host_to_device,
            variant,
            chunks,
            chunk_bytes,
        } => {
            let p = pools
                .as_mut()
                .expect("pools exist when the plan has copies");
            time_copy(
                g,
                opts,
                p,
                host_to_device,
                variant,
                chunks as usize,
                chunk_bytes as usize,
                what,
            )
        }
        Kernel::AllReduce { bytes, gpus } => {
            time_all_reduce(g, opts, bytes as usize, gpus as usize, what)
        }
    }
}

/// The `measurements.csv` row of one item: median, minimum and maximum of its samples.
fn measurement_row(item: &PlanItem, samples: &[f64], what: String) -> R<Measurement> {
    let (median, min, max) = summarize(samples).ok_or_else(|| GpuError::Cuda {
        what: what.clone(),
        detail: "no samples".into(),
    })?;
    if !(median.is_finite() && median > 0.0) {
        return Err(GpuError::Cuda {
            what,
            detail: format!("measured a non-positive time {median} s"),
        });
    }
    Ok(Measurement {
        op: item.op,
        x: item.x,
        y: item.y,
        time_s: median,
        min_s: Some(min),
        max_s: Some(max),
        repeats: Some(samples.len() as u32),
        source: "measured".into(),
    })
}
