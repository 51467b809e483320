//! The GPU runner: times the kernels of a measurement plan on one GPU (cuBLAS fp16 GEMMs, our own
//! NVRTC-compiled small-operator, paged-attention and gather kernels, host↔GPU copies) with CUDA
//! events, warm-up, the median of ≥ 20 repeats, rotating buffers and random data.
//!
//! Compiled with the `cuda` feature only ([`cuda`]); without it, [`disabled`] answers every call
//! with [`GpuError::NotCompiled`]. Either way the process never panics for a missing GPU: the
//! driver library is probed before cudarc is asked to load it.

pub mod kernels;
pub mod reference;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{compile_check, measure, probe, self_test};

#[cfg(not(feature = "cuda"))]
mod disabled;
#[cfg(not(feature = "cuda"))]
pub use disabled::{measure, probe, self_test};

use crate::plan::PlanItem;

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// CUDA device ordinal.
    pub ordinal: usize,
    pub warmup: u32,
    /// Timed repetitions per shape (the median is recorded).
    pub repeats: u32,
    /// Seed of the random buffer contents and block tables.
    pub seed: u64,
}

/// What the runner learned about the device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceReport {
    pub name: String,
    pub sm_count: u32,
    pub memory_bytes: u64,
    pub compute_capability: (i32, i32),
    /// e.g. `13.0` (from `cuDriverGetVersion`).
    pub driver_version: String,
    /// NVRTC's version, e.g. `13.0`, when the library is present.
    pub nvrtc_version: Option<String>,
    /// Devices visible.
    pub device_count: u32,
    pub l2_bytes: u64,
}

/// Everything that can go wrong on the GPU path; every variant is reported and exits with 2.
#[derive(Debug)]
pub enum GpuError {
    /// This binary was built without the `cuda` feature.
    NotCompiled,
    /// libcuda could not be loaded: no NVIDIA driver on this machine.
    NoDriver,
    DriverTooOld {
        found: i32,
        needed: i32,
    },
    NoDevice {
        ordinal: usize,
        count: i32,
    },
    /// A CUDA library the path needs is missing (`nvrtc`, `cublas`, `nccl`).
    MissingLib(&'static str),
    /// The GPU ran out of memory for a shape.
    OutOfMemory {
        what: String,
        detail: String,
    },
    /// Any other CUDA, cuBLAS, NVRTC or NCCL failure, with what was being done.
    Cuda {
        what: String,
        detail: String,
    },
    /// The self-test found a wrong result.
    SelfTest(String),
    /// The plan needs something this build cannot do (e.g. all-reduce without NCCL).
    Unsupported(String),
}

/// How to build the GPU runner (shown when it is missing).
pub const BUILD_HINT: &str = "cargo build --release -p servesim-calibrate --features cuda";

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::NotCompiled => write!(
                f,
                "this servesim-calibrate was built without GPU support (the `cuda` cargo feature); build it with: {BUILD_HINT} (or run calibrate/gpu_run.sh)"
            ),
            GpuError::NoDriver => write!(
                f,
                "no CUDA driver found (libcuda.so could not be loaded): `servesim calibrate run` needs an NVIDIA GPU and its driver; plan, fit, import-vidur and report work without one"
            ),
            GpuError::DriverTooOld { found, needed } => write!(
                f,
                "the CUDA driver supports CUDA {}.{} but this build needs {}.{} (cudarc feature cuda-13000); update the driver",
                found / 1000,
                found % 1000 / 10,
                needed / 1000,
                needed % 1000 / 10
            ),
            GpuError::NoDevice { ordinal, count } => write!(
                f,
                "no CUDA device {ordinal}: the driver sees {count} device(s)"
            ),
            GpuError::MissingLib(l) => write!(
                f,
                "the CUDA library `lib{l}.so` could not be loaded; install it (CUDA toolkit or the nvidia-*-cu13 pip wheels) and put its directory on LD_LIBRARY_PATH"
            ),
            GpuError::OutOfMemory { what, detail } => write!(
                f,
                "the GPU ran out of memory for {what} ({detail}); free the GPU or use a smaller plan (--quick, or a lower --max-tokens)"
            ),
            GpuError::Cuda { what, detail } => write!(f, "{what}: {detail}"),
            GpuError::SelfTest(m) => write!(f, "self-test failed: {m}"),
            GpuError::Unsupported(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// Progress callback: (index, total, item, median seconds).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &PlanItem, f64);

/// Median, min and max of samples (seconds); `None` without samples.
pub fn summarize(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    };
    Some((med, s[0], s[n - 1]))
}

/// A catalogue GPU name for a device name reported by the driver, when it is unambiguous.
pub fn catalogue_gpu_for(device_name: &str, memory_bytes: u64) -> Option<&'static str> {
    let n = device_name.to_ascii_uppercase();
    let gib = memory_bytes as f64 / (1u64 << 30) as f64;
    if n.contains("H200") {
        Some("h200")
    } else if n.contains("H100") {
        Some("h100-80gb")
    } else if n.contains("A100") {
        Some(if gib > 60.0 { "a100-80gb" } else { "a100-40gb" })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_median_min_max() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn device_names_map_to_catalogue_gpus() {
        assert_eq!(
            catalogue_gpu_for("NVIDIA H100 80GB HBM3", 85 << 30),
            Some("h100-80gb")
        );
        assert_eq!(catalogue_gpu_for("NVIDIA H200", 140 << 30), Some("h200"));
        assert_eq!(
            catalogue_gpu_for("NVIDIA A100-SXM4-40GB", 40 << 30),
            Some("a100-40gb")
        );
        assert_eq!(
            catalogue_gpu_for("NVIDIA A100-SXM4-80GB", 80 << 30),
            Some("a100-80gb")
        );
        assert_eq!(catalogue_gpu_for("Tesla T4", 16 << 30), None);
    }

    #[test]
    fn errors_say_what_to_do() {
        assert!(
            GpuError::NoDriver
                .to_string()
                .contains("no CUDA driver found")
        );
        assert!(
            GpuError::NotCompiled
                .to_string()
                .contains("--features cuda")
        );
        let e = GpuError::DriverTooOld {
            found: 12040,
            needed: 13000,
        };
        assert!(e.to_string().contains("12.4") && e.to_string().contains("13.0"));
    }
}
