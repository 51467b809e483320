//! The GPU runner (feature `cuda`): cudarc with dynamic loading.
//!
//! Every shape is timed with CUDA events around each repetition (all pairs queued back to back,
//! read once at the end), after a warm-up, on one non-blocking stream; the median of the repeats
//! is recorded with the minimum and maximum. Inputs are random (a hash-based fill kernel on the
//! device, a xorshift fill on the host), and the inputs of small shapes rotate over several copies
//! so that the L2 cache does not hold them from one repetition to the next. Every CUDA, cuBLAS and
//! NVRTC result is checked; an out-of-memory error names the shape.
//!
//! | file | holds |
//! |---|---|
//! | `error.rs` | CUDA, cuBLAS and NVRTC errors mapped to [`GpuError`] with what was being done |
//! | `device.rs` | driver and device probing, kernel compilation, the open device and its timing loop |
//! | `compute.rs` | timing of the iteration operators: GEMMs, small ops, paged attention |
//! | `copy.rs` | timing of host↔GPU copies (per-chunk memcpy and the gather kernel) |
//! | `all_reduce.rs` | timing of the NCCL all-reduce (feature `nccl`) |
//! | `measure.rs` | a whole plan: every item timed and summarised into a measurement row |
//! | `self_test.rs` | every kernel checked against its CPU reference, and a timed large GEMM |

mod all_reduce;
mod compute;
mod copy;
mod device;
mod error;
mod measure;
mod self_test;

pub use device::{compile_check, probe};
pub use measure::measure;
pub use self_test::self_test;

use super::GpuError;

/// The CUDA version the bindings were generated for (cudarc feature `cuda-13000`).
const NEEDED_DRIVER: i32 = 13000;
/// Inputs of one shape are replicated until they span at least this many bytes (or 8 copies).
const MIN_ROTATION_BYTES: usize = 256 << 20;

type R<T> = Result<T, GpuError>;
