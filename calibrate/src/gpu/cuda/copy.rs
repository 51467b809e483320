//! Timing of host↔GPU copies of scattered KV chunks: pinned and pageable per-chunk
//! `cuMemcpyAsync`, and the gather kernel over mapped pinned memory, from pools allocated once.

use std::ffi::c_void;

use cudarc::driver::sys;
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg};
use half::f16;
use servesim::profile::CopyVariant;

use super::R;
use super::device::Gpu;
use super::error::Ctx;
use crate::gpu::reference;
use crate::gpu::{GpuError, RunOptions};

/// Host and device pools shared by every copy measurement (allocated and filled once).
pub(super) struct CopyPools {
    pub(super) bytes: usize,
    pub(super) device: CudaSlice<f16>,
    pub(super) device_ptr: u64,
    pub(super) pinned: PinnedHostSlice<u8>,
    pub(super) pinned_ptr: *mut u8,
    /// The pinned pool's address in the device's address space (mapped memory).
    pub(super) pinned_dev: u64,
    pub(super) pageable: Vec<u8>,
}

fn xorshift_fill(buf: &mut [u8], seed: u64) {
    let mut s = seed | 1;
    for c in buf.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let b = s.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

impl CopyPools {
    pub(super) fn new(g: &mut Gpu, bytes: usize, seed: u64) -> R<CopyPools> {
        let what = "the host↔GPU copy pools";
        let mut device = g.alloc_f16(bytes / 2, what)?;
        g.fill(&mut device, 1.0)?;
        let (device_ptr, _) = device.device_ptr(&g.stream);
        // Page-locked, mapped into the device address space (for the gather kernel), not
        // write-combined (the host reads what D2H copies write).
        // SAFETY: filled right below before any read.
        let mut pinned = unsafe {
            g.ctx.alloc_pinned_with_flags::<u8>(
                bytes,
                sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP,
            )
        }
        .ctx(&format!(
            "allocating {} MiB of pinned host memory",
            bytes >> 20
        ))?;
        xorshift_fill(pinned.as_mut_slice().ctx(what)?, seed);
        let pinned_ptr = pinned.as_mut_ptr().ctx(what)?;
        let mut pinned_dev: sys::CUdeviceptr = 0;
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut pinned_dev, pinned_ptr as *mut c_void, 0) }
            .result()
            .ctx("mapping pinned host memory into the device address space")?;
        let mut pageable = vec![0u8; bytes];
        xorshift_fill(&mut pageable, seed ^ 1);
        Ok(CopyPools {
            bytes,
            device,
            device_ptr,
            pinned,
            pinned_ptr,
            pinned_dev,
            pageable,
        })
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn time_copy(
    g: &mut Gpu,
    o: &RunOptions,
    pools: &mut CopyPools,
    h2d: bool,
    variant: CopyVariant,
    chunks: usize,
    chunk_bytes: usize,
    what: &str,
) -> R<Vec<f64>> {
    if !chunk_bytes.is_multiple_of(16) {
        return Err(GpuError::Unsupported(format!(
            "{what}: chunk sizes must be multiples of 16 bytes"
        )));
    }
    let slots = pools.bytes / chunk_bytes;
    if slots < 2 * chunks {
        return Err(GpuError::Unsupported(format!(
            "{what}: the copy pools hold {slots} chunks, need {}",
            2 * chunks
        )));
    }
    // Two rotations of scattered chunk placements on both sides.
    let seed = o.seed ^ (chunks as u64) << 20 ^ chunk_bytes as u64;
    let host_slots = reference::permutation(slots, seed);
    let dev_slots = reference::permutation(slots, seed ^ 0xABCD);
    let offs = |v: &[usize], r: usize| -> Vec<i64> {
        v[r * chunks..(r + 1) * chunks]
            .iter()
            .map(|&s| (s * chunk_bytes) as i64)
            .collect()
    };
    let p = Placements {
        chunks,
        chunk_bytes,
        host: [offs(&host_slots, 0), offs(&host_slots, 1)],
        dev: [offs(&dev_slots, 0), offs(&dev_slots, 1)],
    };
    match variant {
        CopyVariant::PinnedGather => time_gather(g, o, pools, h2d, &p, what),
        CopyVariant::PinnedMemcpy | CopyVariant::PageableMemcpy => {
            time_memcpy(g, o, pools, h2d, variant, &p, what)
        }
    }
}

/// Where the chunks of the two rotations lie: byte offsets into the host and device pools.
struct Placements {
    chunks: usize,
    chunk_bytes: usize,
    host: [Vec<i64>; 2],
    dev: [Vec<i64>; 2],
}

/// One gather/scatter kernel launch per repetition over mapped pinned memory.
fn time_gather(
    g: &mut Gpu,
    o: &RunOptions,
    pools: &CopyPools,
    h2d: bool,
    p: &Placements,
    what: &str,
) -> R<Vec<f64>> {
    let (dev, pinned_dev) = (pools.device_ptr, pools.pinned_dev);
    let _keep = (&pools.device, &pools.pinned);
    let (chunks, chunk_bytes) = (p.chunks, p.chunk_bytes);
    let (host_offs, dev_offs) = (&p.host, &p.dev);
    let d_host = [
        g.upload(&host_offs[0], what)?,
        g.upload(&host_offs[1], what)?,
    ];
    let d_dev = [g.upload(&dev_offs[0], what)?, g.upload(&dev_offs[1], what)?];
    let cfg = LaunchConfig {
        grid_dim: (chunks.min(1024) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (n_i, cb) = (chunks as i32, chunk_bytes as i64);
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let r = i % 2;
        let (src, dst, so, dso) = if h2d {
            (pinned_dev, dev, &d_host[r], &d_dev[r])
        } else {
            (dev, pinned_dev, &d_dev[r], &d_host[r])
        };
        let mut b = g.stream.launch_builder(&g.k.gather);
        b.arg(&src).arg(&dst).arg(so).arg(dso).arg(&cb).arg(&n_i);
        // SAFETY: every offset + chunk_bytes lies inside its pool.
        unsafe { b.launch(cfg) }.ctx(what).map(|_| ())
    })
}

/// One `cuMemcpyAsync` per chunk, from pinned or pageable host memory.
fn time_memcpy(
    g: &mut Gpu,
    o: &RunOptions,
    pools: &mut CopyPools,
    h2d: bool,
    variant: CopyVariant,
    p: &Placements,
    what: &str,
) -> R<Vec<f64>> {
    let (dev, pinned_ptr) = (pools.device_ptr, pools.pinned_ptr);
    let pageable = pools.pageable.as_mut_ptr();
    let _keep = (&pools.device, &pools.pinned);
    let (chunks, chunk_bytes) = (p.chunks, p.chunk_bytes);
    let (host_offs, dev_offs) = (&p.host, &p.dev);
    let host = if variant == CopyVariant::PinnedMemcpy {
        pinned_ptr
    } else {
        pageable
    };
    g.time(o.warmup, o.repeats, what, &mut |g, i| {
        let r = i % 2;
        let st = g.stream.cu_stream();
        for c in 0..chunks {
            let h = unsafe { host.add(host_offs[r][c] as usize) };
            let d = dev + dev_offs[r][c] as u64;
            // SAFETY: both ranges lie inside their pools, which outlive the copies
            // (the stream is synchronised before the pools are dropped).
            let res = unsafe {
                if h2d {
                    sys::cuMemcpyHtoDAsync_v2(d, h as *const c_void, chunk_bytes, st)
                } else {
                    sys::cuMemcpyDtoHAsync_v2(h as *mut c_void, d, chunk_bytes, st)
                }
            };
            res.result().ctx(what)?;
        }
        Ok(())
    })
}
