//! CUDA driver, cuBLAS and NVRTC errors as [`GpuError`]s that say what was being done; an
//! out-of-memory result becomes [`GpuError::OutOfMemory`].

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::cublasStatus_t;
use cudarc::driver::DriverError;
use cudarc::driver::sys;
use cudarc::nvrtc::CompileError;

use super::R;
use crate::gpu::GpuError;

fn describe_driver(e: &DriverError) -> String {
    let name = e
        .error_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e
        .error_string()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}: {text}")
}

/// Attach what was being done to a CUDA-side error.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T> Ctx<T> for Result<T, DriverError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                GpuError::OutOfMemory {
                    what: what.to_string(),
                    detail: describe_driver(&e),
                }
            } else {
                GpuError::Cuda {
                    what: what.to_string(),
                    detail: describe_driver(&e),
                }
            }
        })
    }
}

impl<T> Ctx<T> for Result<T, CublasError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            if e.0 == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
                GpuError::OutOfMemory {
                    what: what.to_string(),
                    detail: format!("cuBLAS {e}"),
                }
            } else {
                GpuError::Cuda {
                    what: what.to_string(),
                    detail: format!("cuBLAS {e}"),
                }
            }
        })
    }
}

impl<T> Ctx<T> for Result<T, CompileError> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| {
            let detail = match &e {
                CompileError::CompileError { log, .. } => {
                    format!("NVRTC: {}", log.to_string_lossy())
                }
                other => format!("NVRTC: {other}"),
            };
            GpuError::Cuda {
                what: what.to_string(),
                detail,
            }
        })
    }
}
