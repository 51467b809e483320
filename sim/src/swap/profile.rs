//! `[swap] profile = "DIR"`: host↔GPU transfer times from a calibration profile's fitted copy
//! models (`fit.toml` `[ops.h2d_<variant>]`, `[ops.d2h_<variant>]`).
//!
//! A logical KV block is, on each GPU of the replica, `calls_per_block` chunks — what a per-block
//! `cudaMemcpyAsync` loop copies one by one: with `[swap] kv_layout = "layer-major"` (vLLM) one
//! layer's K or V part of the block, `2 × ⌈layers / pp⌉` chunks; with `"block-major"`
//! (FastServe) the block's K or V across all the stage's layers, 2 chunks. The fit's
//! `s_per_chunk` is the per-call cost of the PCIe model (`per_call_s`). A transfer of
//! `bytes` over `blocks` blocks moves `bytes / links` per GPU link as `blocks × chunks_per_block`
//! chunks; its time is the copy fit `latency_s + s_per_chunk·chunks + bytes_per_link / bytes_per_s`
//! of the chosen variant (pinned memcpy per chunk, pinned gather kernel, or pageable memcpy).
//! Transfers whose chunk count or chunk size lies outside the measured copy grid are counted as
//! extrapolations.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::{Direction, SwapModel};
use crate::catalogue::ModelSpec;
use crate::profile::table::Table1;
use crate::profile::{CopyVariant, ExtrapolationCounter, Op, OpFit, Profile};

/// The measured domain of one copy operator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CopyGrid {
    pub chunks_min: u64,
    pub chunks_max: u64,
    pub chunk_bytes_min: u64,
    pub chunk_bytes_max: u64,
}

impl CopyGrid {
    fn covers(&self, chunks: f64, chunk_bytes: f64) -> bool {
        let inside = |v: f64, lo: u64, hi: u64| {
            v >= lo as f64 * (1.0 - 1e-9) && v <= hi as f64 * (1.0 + 1e-9)
        };
        inside(chunks, self.chunks_min, self.chunks_max)
            && inside(chunk_bytes, self.chunk_bytes_min, self.chunk_bytes_max)
    }
}

/// One direction's fitted copy model and grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CopyModel {
    pub op: &'static str,
    pub fit: OpFit,
    pub grid: CopyGrid,
}

/// The resolved profile swap model (recorded in `config.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSwap {
    pub model: &'static str,
    pub profile: PathBuf,
    pub variant: CopyVariant,
    pub h2d: CopyModel,
    pub d2h: CopyModel,
    pub kv_layout: super::KvLayout,
    /// Chunks (copy calls) per logical KV block on one GPU (from `kv_layout`).
    pub chunks_per_block: u32,
    /// GPUs of the replica moving their shards in parallel.
    pub links: u32,
    #[serde(skip)]
    counter: Option<Arc<ExtrapolationCounter>>,
}

fn copy_model(p: &Profile, op: Op) -> Result<CopyModel, String> {
    let fit = *p.op_fit(op).ok_or_else(|| {
        format!(
            "the profile has no fitted `{}` copy model (fit.toml [ops.{}]); measure copies with `servesim calibrate run` or pick another `variant`",
            op.name(),
            op.name()
        )
    })?;
    let rows: Vec<_> = p.rows_of(op).collect();
    let xs = Table1::new(rows.iter().map(|r| (r.x as f64, 0.0)).collect());
    let ys = Table1::new(rows.iter().map(|r| (r.y as f64, 0.0)).collect());
    let (Some(xs), Some(ys)) = (xs, ys) else {
        return Err(format!(
            "the profile has no `{}` measurements (measurements.csv)",
            op.name()
        ));
    };
    Ok(CopyModel {
        op: op.name(),
        fit,
        grid: CopyGrid {
            chunks_min: xs.range().0 as u64,
            chunks_max: xs.range().1 as u64,
            chunk_bytes_min: ys.range().0 as u64,
            chunk_bytes_max: ys.range().1 as u64,
        },
    })
}

impl ProfileSwap {
    /// Build from a loaded profile. `variant` defaults to the profile's `swap_variant`, else
    /// `pinned_gather`.
    pub fn new(
        profile: &Profile,
        path: PathBuf,
        variant: Option<CopyVariant>,
        model: &ModelSpec,
        pp: u32,
        links: u32,
        kv_layout: super::KvLayout,
    ) -> Result<ProfileSwap, String> {
        let variant = variant
            .or(profile.fit.swap_variant)
            .unwrap_or(CopyVariant::PinnedGather);
        Ok(ProfileSwap {
            model: "profile",
            profile: path,
            variant,
            h2d: copy_model(profile, Op::copy(true, variant))?,
            d2h: copy_model(profile, Op::copy(false, variant))?,
            kv_layout,
            chunks_per_block: kv_layout.calls_per_block(super::layers_per_stage(model.layers, pp)),
            links: links.max(1),
            counter: None,
        })
    }

    /// The same model reporting its off-grid transfers to `counter`.
    pub fn with_counter(&self, counter: Arc<ExtrapolationCounter>) -> ProfileSwap {
        ProfileSwap {
            counter: Some(counter),
            ..self.clone()
        }
    }
}

impl SwapModel for ProfileSwap {
    fn transfer_s(&self, dir: Direction, bytes: u64, blocks: u32) -> f64 {
        let m = match dir {
            Direction::DeviceToHost => &self.d2h,
            Direction::HostToDevice => &self.h2d,
        };
        let per_link = bytes as f64 / self.links as f64;
        let chunks = (blocks as f64 * self.chunks_per_block as f64).max(1.0);
        let chunk_bytes = per_link / chunks;
        if !m.grid.covers(chunks, chunk_bytes)
            && let Some(c) = &self.counter
        {
            c.record_transfer(Op::parse(m.op).expect("copy op names are valid"));
        }
        m.fit.eval(chunks, chunk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalogue::Catalogue;
    use crate::profile::{FitFile, Measurement, Meta};

    fn profile() -> Profile {
        let mut ops = BTreeMap::new();
        for (op, lat) in [
            (Op::H2dPinnedGather, 1e-5),
            (Op::D2hPinnedGather, 2e-5),
            (Op::H2dPinnedMemcpy, 1e-5),
        ] {
            ops.insert(
                op.name().to_string(),
                OpFit::Copy {
                    latency_s: lat,
                    s_per_chunk: 1e-6,
                    bytes_per_s: 1e10,
                },
            );
        }
        let rows = [
            Op::H2dPinnedGather,
            Op::D2hPinnedGather,
            Op::H2dPinnedMemcpy,
        ]
        .into_iter()
        .flat_map(|op| {
            [(64u64, 65536u64), (4096, 262144)].map(|(x, y)| Measurement {
                op,
                x,
                y,
                time_s: 1e-3,
                min_s: None,
                max_s: None,
                repeats: None,
                source: "measured".into(),
            })
        })
        .collect();
        let meta: Meta = toml::from_str(
            r#"schema_version = 1
gpu = "a100-80gb"
model = "llama-2-7b"
tp = 1
created = "2026-01-01"
source = "measured"
tool = "test"
[device]
name = "x"
[measurement]
dtype = "fp16"
statistic = "median"
"#,
        )
        .unwrap();
        Profile {
            meta,
            fit: FitFile {
                schema_version: 1,
                iteration_overhead_s: 0.0,
                notes: vec![],
                swap_variant: None,
                ops,
            },
            rows,
        }
    }

    #[test]
    fn transfer_by_hand_and_off_grid_counting() {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        let c = Arc::new(ExtrapolationCounter::default());
        let m = ProfileSwap::new(
            &profile(),
            "p".into(),
            None,
            &spec,
            1,
            2,
            super::super::KvLayout::LayerMajor,
        )
        .unwrap()
        .with_counter(c.clone());
        assert_eq!(m.variant, CopyVariant::PinnedGather);
        assert_eq!(m.chunks_per_block, 64);
        // 4 blocks of 16 tokens of Llama-2-7B: 4 × 8 MiB, over 2 links → 16 MiB per link in
        // 256 chunks of 64 KiB. 10 µs + 256 µs + 16 MiB / 1e10 B/s.
        let bytes = 4 * 16 * spec.kv_bytes_per_token();
        let want = 1e-5 + 256e-6 + (bytes as f64 / 2.0) / 1e10;
        assert!((m.transfer_s(Direction::HostToDevice, bytes, 4) - want).abs() < 1e-12);
        assert_eq!(c.report().transfers, 0);
        // D2H uses its own latency.
        let d = m.transfer_s(Direction::DeviceToHost, bytes, 4);
        assert!((d - want - 1e-5).abs() < 1e-12);
        // 1000 blocks → 64,000 chunks: beyond the 4096 measured.
        m.transfer_s(
            Direction::HostToDevice,
            1000 * 16 * spec.kv_bytes_per_token(),
            1000,
        );
        let r = c.report();
        assert_eq!(r.transfers, 1);
        assert_eq!(r.by_operator["h2d_pinned_gather"], 1);
        // Block-major (FastServe): 2 chunks per block, each the block's K or V over all 32
        // layers (4 MiB per link): 4 blocks → 8 chunks. 10 µs + 8 µs + 16 MiB / 1e10 B/s.
        let b = ProfileSwap::new(
            &profile(),
            "p".into(),
            None,
            &spec,
            1,
            2,
            super::super::KvLayout::BlockMajor,
        )
        .unwrap();
        assert_eq!(b.chunks_per_block, 2);
        let want = 1e-5 + 8e-6 + (bytes as f64 / 2.0) / 1e10;
        assert!((b.transfer_s(Direction::HostToDevice, bytes, 4) - want).abs() < 1e-12);
    }

    #[test]
    fn missing_variant_is_a_clear_error() {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        let e = ProfileSwap::new(
            &profile(),
            "p".into(),
            Some(CopyVariant::PageableMemcpy),
            &spec,
            1,
            1,
            super::super::KvLayout::LayerMajor,
        )
        .unwrap_err();
        assert!(e.contains("h2d_pageable_memcpy"), "{e}");
        // pinned_memcpy has H2D but no D2H.
        let e = ProfileSwap::new(
            &profile(),
            "p".into(),
            Some(CopyVariant::PinnedMemcpy),
            &spec,
            1,
            1,
            super::super::KvLayout::LayerMajor,
        )
        .unwrap_err();
        assert!(e.contains("d2h_pinned_memcpy"), "{e}");
    }
}
