//! The profiled operators ([`Op`]), the fitted form each uses ([`Form`]) and the host↔GPU copy
//! variants ([`CopyVariant`]): names as they appear in `measurements.csv` and `fit.toml`.

use serde::{Deserialize, Serialize};

/// A profiled operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Qkv,
    OutProj,
    MlpUp,
    MlpDown,
    LmHead,
    SmallOps,
    AttnPrefill,
    AttnDecode,
    AllReduce,
    H2dPinnedMemcpy,
    H2dPinnedGather,
    H2dPageableMemcpy,
    D2hPinnedMemcpy,
    D2hPinnedGather,
    D2hPageableMemcpy,
}

/// The fitted form an operator uses (see [`OpFit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Roofline,
    Linear,
    Prefill,
    Decode,
    Copy,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Roofline => "roofline",
            Form::Linear => "linear",
            Form::Prefill => "prefill",
            Form::Decode => "decode",
            Form::Copy => "copy",
        }
    }
}

/// Host memory and method of a measured host↔GPU copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyVariant {
    /// Pinned host memory, one `cuMemcpyAsync` per chunk.
    PinnedMemcpy,
    /// Pinned (mapped) host memory, one gather/scatter kernel for all chunks.
    PinnedGather,
    /// Pageable host memory, one `cuMemcpyAsync` per chunk.
    PageableMemcpy,
}

impl CopyVariant {
    pub const ALL: [CopyVariant; 3] = [
        CopyVariant::PinnedMemcpy,
        CopyVariant::PinnedGather,
        CopyVariant::PageableMemcpy,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CopyVariant::PinnedMemcpy => "pinned_memcpy",
            CopyVariant::PinnedGather => "pinned_gather",
            CopyVariant::PageableMemcpy => "pageable_memcpy",
        }
    }
    pub fn parse(s: &str) -> Option<CopyVariant> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::Qkv,
        Op::OutProj,
        Op::MlpUp,
        Op::MlpDown,
        Op::LmHead,
        Op::SmallOps,
        Op::AttnPrefill,
        Op::AttnDecode,
        Op::AllReduce,
        Op::H2dPinnedMemcpy,
        Op::H2dPinnedGather,
        Op::H2dPageableMemcpy,
        Op::D2hPinnedMemcpy,
        Op::D2hPinnedGather,
        Op::D2hPageableMemcpy,
    ];
    pub const COUNT: usize = Self::ALL.len();
    /// The linear (GEMM) operators of one layer.
    pub const LAYER_GEMMS: [Op; 4] = [Op::Qkv, Op::OutProj, Op::MlpUp, Op::MlpDown];
    /// The operators an iteration-time model needs (all-reduce only with TP > 1).
    pub const ITERATION: [Op; 8] = [
        Op::Qkv,
        Op::OutProj,
        Op::MlpUp,
        Op::MlpDown,
        Op::LmHead,
        Op::SmallOps,
        Op::AttnPrefill,
        Op::AttnDecode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Qkv => "qkv",
            Op::OutProj => "out_proj",
            Op::MlpUp => "mlp_up",
            Op::MlpDown => "mlp_down",
            Op::LmHead => "lm_head",
            Op::SmallOps => "small_ops",
            Op::AttnPrefill => "attn_prefill",
            Op::AttnDecode => "attn_decode",
            Op::AllReduce => "all_reduce",
            Op::H2dPinnedMemcpy => "h2d_pinned_memcpy",
            Op::H2dPinnedGather => "h2d_pinned_gather",
            Op::H2dPageableMemcpy => "h2d_pageable_memcpy",
            Op::D2hPinnedMemcpy => "d2h_pinned_memcpy",
            Op::D2hPinnedGather => "d2h_pinned_gather",
            Op::D2hPageableMemcpy => "d2h_pageable_memcpy",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Self::ALL.into_iter().find(|o| o.name() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The fitted form of this operator.
    pub fn form(self) -> Form {
        match self {
            Op::Qkv | Op::OutProj | Op::MlpUp | Op::MlpDown | Op::LmHead => Form::Roofline,
            Op::SmallOps | Op::AllReduce => Form::Linear,
            Op::AttnPrefill => Form::Prefill,
            Op::AttnDecode => Form::Decode,
            _ => Form::Copy,
        }
    }

    /// What `x` and `y` mean for this operator (units included).
    pub fn axes(self) -> (&'static str, &'static str) {
        match self {
            Op::Qkv | Op::OutProj | Op::MlpUp | Op::MlpDown | Op::SmallOps => ("tokens", "-"),
            Op::LmHead => ("rows", "-"),
            Op::AttnPrefill => ("chunk tokens", "cached tokens"),
            Op::AttnDecode => ("sequences", "context tokens per sequence"),
            Op::AllReduce => ("bytes", "-"),
            _ => ("chunks", "bytes per chunk"),
        }
    }

    /// The copy operator of a direction and variant.
    pub fn copy(host_to_device: bool, v: CopyVariant) -> Op {
        match (host_to_device, v) {
            (true, CopyVariant::PinnedMemcpy) => Op::H2dPinnedMemcpy,
            (true, CopyVariant::PinnedGather) => Op::H2dPinnedGather,
            (true, CopyVariant::PageableMemcpy) => Op::H2dPageableMemcpy,
            (false, CopyVariant::PinnedMemcpy) => Op::D2hPinnedMemcpy,
            (false, CopyVariant::PinnedGather) => Op::D2hPinnedGather,
            (false, CopyVariant::PageableMemcpy) => Op::D2hPageableMemcpy,
        }
    }

    pub fn is_copy(self) -> bool {
        self.form() == Form::Copy
    }
}

/// A set of operators (e.g. those a query evaluated off their measured grid), one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSet(u32);

const _: () = assert!(Op::COUNT <= 32, "OpSet holds one bit per operator");

impl OpSet {
    /// Add `op` when `cond` holds.
    #[inline]
    pub fn insert_if(&mut self, op: Op, cond: bool) {
        self.0 |= u32::from(cond) << op.index();
    }
    #[inline]
    pub fn contains(self, op: Op) -> bool {
        self.0 >> op.index() & 1 == 1
    }
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    #[inline]
    pub fn union(self, other: OpSet) -> OpSet {
        OpSet(self.0 | other.0)
    }
    /// The set as 64 bits (for tables of sets) and back.
    #[inline]
    pub fn bits(self) -> u64 {
        u64::from(self.0)
    }
    #[inline]
    pub fn from_bits(bits: u64) -> OpSet {
        OpSet(bits as u32)
    }
    /// The operators in the set, in [`Op::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |&op| self.contains(op))
    }
}
