//! Host↔GPU KV transfer models: direction, bytes and block count → seconds.
//!
//! `pcie`: `latency_s + per_block_s × blocks + bytes / bandwidth`, separately per direction. With
//! tensor (and pipeline) parallelism every GPU moves its own shard over its own link in parallel,
//! so a replica of `gpus` GPUs moves `bytes / gpus` per link.
//!
//! Defaults come from the GPU catalogue: bandwidth = `pcie_bytes_per_s × efficiency` with
//! efficiency 0.8 (PCIe 4.0 x16: 31.5 GB/s theoretical → 25.2 GB/s, the "~25 GB/s in practice"
//! figure for pinned memory), latency 10 µs, no per-block overhead (a batched gather kernel, as
//! vLLM's 12.6 GB/s one, rather than per-block `cudaMemcpyAsync` at 3.1 GB/s). Calibrated
//! profiles replace these numbers: `[swap] profile = "DIR"` selects [`profile::ProfileSwap`].
//!
//! Offloaded-KV quantization (ALISE's KV compression, [`KvOffload`]): `[swap] kv_offload_bits`
//! = 16 (default: offloaded KV keeps its FP16 format, nothing changes), 8 or 4. A request swapped
//! out of `b` GPU blocks then holds `⌈b·bits/16⌉` host blocks, its copies move `bytes·bits/16`
//! over PCIe (both directions), and each copy additionally takes `kv_quant_s_per_byte` × its
//! FP16 bytes for the (de)quantization kernel, charged on the copy engine's timeline (serial with
//! the copy of that request, overlapped with compute like the copy itself). Default cost
//! 1e-12 s/byte: a memory-bound elementwise kernel that reads 2 bytes and writes ≤ 1 byte per
//! element at ~2–3 TB/s of HBM (A100/H100 class) — an assumption, not a measurement.

pub mod profile;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// GPU → host (swap out).
    DeviceToHost,
    /// Host → GPU (swap in).
    HostToDevice,
}

/// A transfer-time model.
pub trait SwapModel: Send + Sync {
    fn transfer_s(&self, dir: Direction, bytes: u64, blocks: u32) -> f64;
}

/// Scenario `[swap]` table: every field optional, defaults from the GPU catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwapSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_block_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2d_bytes_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d2h_bytes_per_s: Option<f64>,
    /// Fraction of the catalogue PCIe rate reached (used when a bandwidth is not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    /// A calibration profile directory (relative to the scenario file) whose fitted copy models
    /// replace the PCIe formula; excludes the fields above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
    /// With `profile`: the measured copy variant (`pinned_gather`, `pinned_memcpy` or
    /// `pageable_memcpy`; default: the profile's `swap_variant`, else `pinned_gather`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<crate::profile::CopyVariant>,
    /// Bits per element of offloaded KV: 16 (default, no quantization), 8 or 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_offload_bits: Option<u32>,
    /// (De)quantization cost in seconds per FP16 byte of a quantized copy (default 1e-12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_quant_s_per_byte: Option<f64>,
}

/// Default (de)quantization cost, seconds per FP16 byte (see the module docs).
pub const DEFAULT_KV_QUANT_S_PER_BYTE: f64 = 1e-12;

/// Format of offloaded KV (recorded in `config.json` when quantized).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct KvOffload {
    /// 16 (no quantization), 8 or 4.
    pub bits: u32,
    /// Seconds per FP16 byte added to every copy of quantized KV (ignored at 16 bits).
    pub quant_s_per_byte: f64,
}

impl Default for KvOffload {
    fn default() -> Self {
        KvOffload {
            bits: 16,
            quant_s_per_byte: DEFAULT_KV_QUANT_S_PER_BYTE,
        }
    }
}

impl KvOffload {
    /// Validate the `[swap]` quantization keys, naming the bad field.
    pub fn resolve(spec: &SwapSpec) -> Result<Self> {
        let bits = spec.kv_offload_bits.unwrap_or(16);
        if !matches!(bits, 4 | 8 | 16) {
            return Err(SimError::config(format!(
                "[swap] kv_offload_bits must be 4, 8 or 16, got {bits}"
            )));
        }
        let c = spec
            .kv_quant_s_per_byte
            .unwrap_or(DEFAULT_KV_QUANT_S_PER_BYTE);
        if !(c.is_finite() && c >= 0.0) {
            return Err(SimError::config(format!(
                "[swap] kv_quant_s_per_byte must be a finite number ≥ 0, got {c}"
            )));
        }
        Ok(KvOffload {
            bits,
            quant_s_per_byte: c,
        })
    }

    pub fn is_quantized(&self) -> bool {
        self.bits < 16
    }

    /// Host blocks that hold the KV of `gpu_blocks` GPU blocks.
    pub fn host_blocks_for(&self, gpu_blocks: u32) -> u32 {
        ((gpu_blocks as u64 * self.bits as u64).div_ceil(16)) as u32
    }

    /// PCIe bytes of a copy of `fp16_bytes` of KV.
    pub fn wire_bytes(&self, fp16_bytes: u64) -> u64 {
        (fp16_bytes as u128 * self.bits as u128 / 16) as u64
    }

    /// (De)quantization seconds added to a copy of `fp16_bytes` of KV.
    pub fn quant_s(&self, fp16_bytes: u64) -> f64 {
        if self.is_quantized() {
            self.quant_s_per_byte * fp16_bytes as f64
        } else {
            0.0
        }
    }
}

/// The resolved PCIe model (recorded in `config.json`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PcieSwap {
    pub latency_s: f64,
    pub per_block_s: f64,
    pub h2d_bytes_per_s: f64,
    pub d2h_bytes_per_s: f64,
    /// GPUs of the replica moving their shards in parallel.
    pub links: u32,
}

impl PcieSwap {
    pub fn resolve(spec: &SwapSpec, pcie_bytes_per_s: f64, links: u32) -> Result<Self> {
        let eff = spec.efficiency.unwrap_or(0.8);
        let bw = pcie_bytes_per_s * eff;
        let m = PcieSwap {
            latency_s: spec.latency_s.unwrap_or(10e-6),
            per_block_s: spec.per_block_s.unwrap_or(0.0),
            h2d_bytes_per_s: spec.h2d_bytes_per_s.unwrap_or(bw),
            d2h_bytes_per_s: spec.d2h_bytes_per_s.unwrap_or(bw),
            links: links.max(1),
        };
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let valid = positive(eff)
            && eff <= 1.0
            && ok(m.latency_s)
            && ok(m.per_block_s)
            && positive(m.h2d_bytes_per_s)
            && positive(m.d2h_bytes_per_s);
        if !valid {
            return Err(SimError::config(
                "[swap]: latency_s and per_block_s must be ≥ 0, bandwidths > 0, efficiency in (0, 1]",
            ));
        }
        Ok(m)
    }
}

impl SwapModel for PcieSwap {
    fn transfer_s(&self, dir: Direction, bytes: u64, blocks: u32) -> f64 {
        let bw = match dir {
            Direction::DeviceToHost => self.d2h_bytes_per_s,
            Direction::HostToDevice => self.h2d_bytes_per_s,
        };
        self.latency_s + self.per_block_s * blocks as f64 + bytes as f64 / self.links as f64 / bw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_transfer() {
        let m = PcieSwap::resolve(
            &SwapSpec {
                latency_s: Some(1e-3),
                per_block_s: Some(1e-5),
                h2d_bytes_per_s: Some(1e9),
                d2h_bytes_per_s: Some(2e9),
                ..Default::default()
            },
            31.5e9,
            2,
        )
        .unwrap();
        // 1 ms + 100 × 10 µs + (1e8 B / 2 links) / 1e9 B/s = 1 + 1 + 50 ms.
        assert!((m.transfer_s(Direction::HostToDevice, 100_000_000, 100) - 0.052).abs() < 1e-12);
        assert!((m.transfer_s(Direction::DeviceToHost, 100_000_000, 100) - 0.027).abs() < 1e-12);
    }

    #[test]
    fn quantized_offload_scales_bytes_and_blocks() {
        let q = KvOffload::resolve(&SwapSpec {
            kv_offload_bits: Some(4),
            kv_quant_s_per_byte: Some(2e-12),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.host_blocks_for(10), 3); // ⌈10·4/16⌉ = ⌈2.5⌉
        assert_eq!(q.wire_bytes(1000), 250);
        assert!((q.quant_s(1000) - 2e-9).abs() < 1e-21);
        let f = KvOffload::default();
        assert_eq!(
            (f.host_blocks_for(10), f.wire_bytes(1000), f.quant_s(1000)),
            (10, 1000, 0.0)
        );
        for (spec, field) in [
            (
                SwapSpec {
                    kv_offload_bits: Some(2),
                    ..Default::default()
                },
                "kv_offload_bits",
            ),
            (
                SwapSpec {
                    kv_quant_s_per_byte: Some(-1.0),
                    ..Default::default()
                },
                "kv_quant_s_per_byte",
            ),
        ] {
            let e = KvOffload::resolve(&spec).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn defaults_from_catalogue() {
        let m = PcieSwap::resolve(&SwapSpec::default(), 31.5e9, 1).unwrap();
        assert!((m.h2d_bytes_per_s - 25.2e9).abs() < 1.0);
    }
}
