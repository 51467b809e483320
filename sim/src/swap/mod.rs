//! Host↔GPU KV transfer models: direction, bytes and block count → seconds; and when an
//! iteration waits for its reactive swap-ins ([`timing`], `[swap] reactive`).
//!
//! `pcie`: `latency_s + calls × per_call_s + per_block_s × blocks + bytes / bandwidth`,
//! separately per direction. With tensor (and pipeline) parallelism every GPU moves its own shard
//! over its own link in parallel, so a replica of `gpus` GPUs moves `bytes / gpus` per link, and
//! each GPU issues its own calls.
//!
//! `calls` is the number of copy calls (`cudaMemcpyAsync`) one GPU issues: it follows the KV
//! layout, `[swap] kv_layout` ([`KvLayout`]):
//! - `layer-major` (vLLM: one cache tensor per layer; `CacheEngine.swap_in/out` calls
//!   `swap_blocks` per layer for K and for V, and `csrc/cache_kernels.cu swap_blocks` issues one
//!   `cudaMemcpyAsync` per block): `2 × ⌈layers / pp⌉` calls per block;
//! - `block-major` (FastServe/SwiftTransformer: KV laid out `[blocks, layers, heads, block,
//!   dim]`, `src/csrc/util/py_swapping.cc` copies each block across all layers with one call for
//!   K and one for V): `2` calls per block.
//!
//! The default layout is the one of the system the policy models (its registry entry,
//! [`crate::policy::PolicyEntry::kv_layout`]). Default `per_call_s` = 4 µs: the ≈3.5–4.0 µs per
//! looped `cudaMemcpyAsync` measured on an H100 over NVLink (meta-pytorch/torchcomms PR #2195,
//! fidelity-facts.md §3.4), used as an assumption for PCIe copies (no PCIe figure for block-sized
//! copies was found). `per_block_s` (default 0) is the older per-block overhead, kept so that
//! existing scenarios mean what they meant: a scenario that sets `per_block_s` and not
//! `per_call_s` gets `per_call_s = 0` (its per-block figure was the whole overhead); setting both
//! adds both.
//!
//! Defaults come from the GPU catalogue: bandwidth = `pcie_bytes_per_s × efficiency` with
//! efficiency 0.8 (PCIe 4.0 x16: 31.5 GB/s theoretical → 25.2 GB/s, the "~25 GB/s in practice"
//! figure for pinned memory), latency 10 µs. Calibrated profiles replace these numbers:
//! `[swap] profile = "DIR"` selects [`profile::ProfileSwap`], whose measured per-chunk cost is
//! the per-call cost of the same layouts.
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
pub mod timing;

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

/// `[swap] kv_layout`: how KV blocks lie in memory, which sets the copy calls per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvLayout {
    /// One tensor per layer (vLLM): `2 × layers` calls per block (K and V of each layer).
    LayerMajor,
    /// Blocks hold all layers (FastServe/SwiftTransformer): 2 calls per block (K and V).
    BlockMajor,
}

impl KvLayout {
    /// Copy calls per block on one GPU holding `layers` layers.
    pub fn calls_per_block(self, layers: u32) -> u32 {
        match self {
            KvLayout::LayerMajor => 2 * layers.max(1),
            KvLayout::BlockMajor => 2,
        }
    }
}

/// Layers one GPU of a `pp`-stage pipeline holds (the first stages take the remainder; copies
/// of all stages run in parallel, so the fullest stage sets the time).
pub fn layers_per_stage(layers: u32, pp: u32) -> u32 {
    layers.div_ceil(pp.max(1)).max(1)
}

/// Default seconds per copy call (see the module docs: an H100/NVLink measurement used as an
/// assumption for PCIe).
pub const DEFAULT_PER_CALL_S: f64 = 4e-6;

/// Scenario `[swap]` table: every field optional, defaults from the GPU catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwapSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_s: Option<f64>,
    /// Older per-block overhead (kept; see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_block_s: Option<f64>,
    /// Seconds per copy call (default [`DEFAULT_PER_CALL_S`], 0 when only `per_block_s` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call_s: Option<f64>,
    /// KV layout (default: the policy's, [`crate::policy::PolicyEntry::kv_layout`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_layout: Option<KvLayout>,
    /// How iterations wait for reactive swap-ins (default: the policy's,
    /// [`crate::policy::PolicyEntry::reactive`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactive: Option<timing::Reactive>,
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
    pub per_call_s: f64,
    pub per_block_s: f64,
    pub kv_layout: KvLayout,
    /// Copy calls per block on one GPU (from `kv_layout` and the layers it holds).
    pub calls_per_block: u32,
    pub h2d_bytes_per_s: f64,
    pub d2h_bytes_per_s: f64,
    /// GPUs of the replica moving their shards in parallel.
    pub links: u32,
}

impl PcieSwap {
    /// `layout` is the scenario's `kv_layout` or the policy's default; `layers_per_gpu` the
    /// layers one GPU holds ([`layers_per_stage`]).
    pub fn resolve(
        spec: &SwapSpec,
        pcie_bytes_per_s: f64,
        links: u32,
        layout: KvLayout,
        layers_per_gpu: u32,
    ) -> Result<Self> {
        let eff = spec.efficiency.unwrap_or(0.8);
        let bw = pcie_bytes_per_s * eff;
        let per_call_default = if spec.per_block_s.is_some() {
            0.0
        } else {
            DEFAULT_PER_CALL_S
        };
        let m = PcieSwap {
            latency_s: spec.latency_s.unwrap_or(10e-6),
            per_call_s: spec.per_call_s.unwrap_or(per_call_default),
            per_block_s: spec.per_block_s.unwrap_or(0.0),
            kv_layout: layout,
            calls_per_block: layout.calls_per_block(layers_per_gpu),
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
            && ok(m.per_call_s)
            && positive(m.h2d_bytes_per_s)
            && positive(m.d2h_bytes_per_s);
        if !valid {
            return Err(SimError::config(
                "[swap]: latency_s, per_call_s and per_block_s must be ≥ 0, bandwidths > 0, efficiency in (0, 1]",
            ));
        }
        Ok(m)
    }
}

/// Copies that take no time of their own: the executor runs them inside the iteration and its
/// measured duration includes them ([`crate::exec::Executor::copies_in_iteration`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct InIterationSwap;

impl SwapModel for InIterationSwap {
    fn transfer_s(&self, _dir: Direction, _bytes: u64, _blocks: u32) -> f64 {
        0.0
    }
}

impl SwapModel for PcieSwap {
    fn transfer_s(&self, dir: Direction, bytes: u64, blocks: u32) -> f64 {
        let bw = match dir {
            Direction::DeviceToHost => self.d2h_bytes_per_s,
            Direction::HostToDevice => self.h2d_bytes_per_s,
        };
        let calls = blocks as f64 * self.calls_per_block as f64;
        self.latency_s
            + self.per_call_s * calls
            + self.per_block_s * blocks as f64
            + bytes as f64 / self.links as f64 / bw
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
            KvLayout::LayerMajor,
            40,
        )
        .unwrap();
        // An explicit per_block_s keeps its meaning: no per-call cost is added.
        assert_eq!(m.per_call_s, 0.0);
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
        let m =
            PcieSwap::resolve(&SwapSpec::default(), 31.5e9, 1, KvLayout::BlockMajor, 40).unwrap();
        assert!((m.h2d_bytes_per_s - 25.2e9).abs() < 1.0);
        assert_eq!((m.per_call_s, m.per_block_s), (DEFAULT_PER_CALL_S, 0.0));
    }

    #[test]
    fn calls_follow_the_kv_layout() {
        // OPT-13B: 40 layers. vLLM (layer-major) issues K and V per layer per block: 80 calls;
        // FastServe (block-major) K and V per block across all layers: 2. With pp = 3 a stage
        // holds ⌈40/3⌉ = 14 layers: 28 calls per block on its GPU.
        assert_eq!(KvLayout::LayerMajor.calls_per_block(40), 80);
        assert_eq!(KvLayout::BlockMajor.calls_per_block(40), 2);
        assert_eq!(layers_per_stage(40, 3), 14);
        assert_eq!(
            KvLayout::LayerMajor.calls_per_block(layers_per_stage(40, 3)),
            28
        );
        let spec = SwapSpec {
            latency_s: Some(1e-5),
            per_call_s: Some(4e-6),
            h2d_bytes_per_s: Some(1e9),
            d2h_bytes_per_s: Some(1e9),
            ..Default::default()
        };
        let layer = PcieSwap::resolve(&spec, 1.0, 1, KvLayout::LayerMajor, 40).unwrap();
        let block = PcieSwap::resolve(&spec, 1.0, 1, KvLayout::BlockMajor, 40).unwrap();
        // 3 blocks of 1 MB: 10 µs + calls × 4 µs + 3 ms.
        // layer-major: 240 calls → 10 + 960 + 3000 µs = 3.97 ms;
        // block-major:   6 calls → 10 +  24 + 3000 µs = 3.034 ms.
        let t = |m: &PcieSwap| m.transfer_s(Direction::HostToDevice, 3_000_000, 3);
        assert!((t(&layer) - 3.970e-3).abs() < 1e-12, "{}", t(&layer));
        assert!((t(&block) - 3.034e-3).abs() < 1e-12, "{}", t(&block));
        // A negative per-call cost names the field.
        let bad = SwapSpec {
            per_call_s: Some(-1.0),
            ..Default::default()
        };
        let e = PcieSwap::resolve(&bad, 1.0, 1, KvLayout::BlockMajor, 1).unwrap_err();
        assert!(e.to_string().contains("per_call_s"), "{e}");
    }
}
