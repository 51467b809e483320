//! Stand-ins for the GPU runner in builds without the `cuda` feature: every call is
//! [`GpuError::NotCompiled`], which names the build command.

use servesim::profile::Measurement;

use super::{DeviceReport, GpuError, Progress, RunOptions};
use crate::plan::PlanItem;

pub fn probe(_ordinal: usize) -> Result<DeviceReport, GpuError> {
    Err(GpuError::NotCompiled)
}

pub fn self_test(_opts: &RunOptions) -> Result<String, GpuError> {
    Err(GpuError::NotCompiled)
}

pub fn measure(
    _items: &[PlanItem],
    _opts: &RunOptions,
    _progress: Progress<'_>,
) -> Result<(DeviceReport, Vec<Measurement>), GpuError> {
    Err(GpuError::NotCompiled)
}
