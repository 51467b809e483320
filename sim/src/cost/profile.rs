//! `profile`: iteration time from a calibration profile (see [`crate::profile`]), operator by
//! operator.
//!
//! Per layer, on one GPU of the TP group: the four linear layers and the small operators at the
//! batch's `T` tokens; prefill attention for the batch's prefills; decode attention for its
//! decodes; with TP > 1 two all-reduces of `T · hidden · dtype` bytes. Per iteration: the layers,
//! the LM head at one row per request, and the profile's fixed `iteration_overhead_s`.
//!
//! Each operator is its fitted form (`fit.toml`) times, in `interpolate` mode (the default), the
//! ratio measured / fitted interpolated piecewise-linearly over the measured grid: a measured shape
//! gets its measured time, shapes between measurements are interpolated, and outside the grid the
//! ratio stays at its edge value so the fitted form extrapolates. In `fitted` mode the ratio is 1.
//! Either way a query outside an operator's measured grid is counted ([`ExtrapolationCounter`]).
//!
//! Batches are described by aggregates ([`BatchShape`]): prefills by their tokens `T` and causal
//! pairs `S = Σ s²`. They are evaluated as `n = T²/S` sequences of `S/T` tokens each (exact for one
//! sequence and for equal ones); the prefill grid is keyed by that equivalent length (a measured
//! chunk of `c` tokens after `k` cached ones has `S/T = c + 2k`). Decodes are `R` sequences with
//! the mean context `K/R`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::memo::{Memo, OnceMemo};
use super::{BatchShape, CostModel};
use crate::catalogue::ModelSpec;
use crate::error::{Result, SimError};
use crate::profile::table::{Table1, Table2, Table2Line};
use crate::profile::{ExtrapolationCounter, Op, OpFit, OpSet, Profile};

/// How the `profile` model combines the fit with the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileMode {
    /// Fitted form × the measured/fitted ratio interpolated over the grid.
    #[default]
    Interpolate,
    /// The fitted per-operator forms only.
    Fitted,
}

#[derive(Debug, Clone)]
enum Ratio {
    One(Table1),
    Two(Table2),
}

#[derive(Debug, Clone)]
struct OpModel {
    fit: OpFit,
    ratio: Ratio,
}

/// A profile turned into per-operator models for one (model, TP); shared by the run's cost
/// models.
#[derive(Debug, Clone)]
pub struct ProfileTables {
    ops: Vec<Option<OpModel>>,
    layers: f64,
    allreduce_bytes_per_token: f64,
    tp: u32,
    mode: ProfileMode,
    iteration_overhead_s: f64,
    /// The terms of an iteration that depend on its token count only (the layer's GEMMs and small
    /// operators; the all-reduces) and on its request count only (the LM head), each with the
    /// set of operators it evaluated off their grid: remembered instead of re-interpolated at
    /// every iteration (the same function of the same argument, so the same bits).
    /// Per token count: the layer's GEMMs and small operators, the all-reduces, the off-grid set.
    by_tokens: Memo<3>,
    /// Per request count: the LM head, its off-grid set.
    by_requests: Memo<2>,
    /// Decode attention's ratio table along each whole number of sequences: a run queries a few
    /// batch sizes at ever-changing contexts.
    decode_lines_by_sequences: OnceMemo<Table2Line>,
}

/// Table sizes (larger batches are computed directly).
const TOKEN_TABLE: usize = 8192;
const REQUEST_TABLE: usize = 1024;

/// The key of an `attn_prefill` row in its ratio table: the equivalent sequence length
/// `S / T = x + 2y`.
fn prefill_key(x: f64, y: f64) -> f64 {
    x + 2.0 * y
}

/// The model of one operator: its fitted form and the measured/fitted ratio over its grid.
fn op_model(profile: &Profile, op: Op) -> std::result::Result<OpModel, String> {
    let fit = *profile.op_fit(op).ok_or_else(|| {
        format!(
            "the profile has no fitted model of `{}` (fit.toml [ops.{}]); re-run `servesim calibrate fit`",
            op.name(),
            op.name()
        )
    })?;
    let mut pts = Vec::new();
    for r in profile.rows_of(op) {
        let (x, y) = (r.x as f64, r.y as f64);
        let f = fit.eval(x, y);
        if !(f.is_finite() && f > 0.0) {
            return Err(format!(
                "the fitted `{}` model gives {f} s at x = {}, y = {}; re-run `servesim calibrate fit`",
                op.name(),
                r.x,
                r.y
            ));
        }
        pts.push((x, y, r.time_s / f));
    }
    if pts.is_empty() {
        return Err(format!(
            "the profile has no measurements of `{}` (measurements.csv)",
            op.name()
        ));
    }
    let ratio = match op {
        Op::AttnDecode => Ratio::Two(Table2::new(pts).ok_or("bad attn_decode rows")?),
        Op::AttnPrefill => Ratio::One(
            Table1::new(
                pts.into_iter()
                    .map(|(x, y, v)| (prefill_key(x, y), v))
                    .collect(),
            )
            .ok_or("bad attn_prefill rows")?,
        ),
        _ => Ratio::One(
            Table1::new(pts.into_iter().map(|(x, _, v)| (x, v)).collect())
                .ok_or_else(|| format!("bad {} rows", op.name()))?,
        ),
    };
    Ok(OpModel { fit, ratio })
}

impl ProfileTables {
    /// Build the iteration-time tables of `profile` for `model` at `tp` (which must be the
    /// profile's). `overhead_s` replaces the profile's `iteration_overhead_s`.
    pub fn new(
        profile: &Profile,
        model_name: &str,
        model: &ModelSpec,
        tp: u32,
        mode: ProfileMode,
        overhead_s: Option<f64>,
    ) -> std::result::Result<ProfileTables, String> {
        let m = &profile.meta;
        if !m.model.eq_ignore_ascii_case(model_name) || m.tp != tp {
            return Err(format!(
                "the profile is for model `{}` at tp = {}, the scenario runs `{model_name}` at tp = {tp}",
                m.model, m.tp
            ));
        }
        let mut need: Vec<Op> = Op::ITERATION.to_vec();
        if tp > 1 {
            need.push(Op::AllReduce);
        }
        let mut ops: Vec<Option<OpModel>> = vec![None; Op::COUNT];
        for op in need {
            ops[op.index()] = Some(op_model(profile, op)?);
        }
        let overhead = overhead_s.unwrap_or(profile.fit.iteration_overhead_s);
        if !(overhead.is_finite() && overhead >= 0.0) {
            return Err(format!(
                "iteration_overhead_s must be a finite number ≥ 0, got {overhead}"
            ));
        }
        Ok(ProfileTables {
            ops,
            layers: model.layers as f64,
            allreduce_bytes_per_token: model.hidden as f64 * model.dtype_bytes as f64,
            tp,
            mode,
            iteration_overhead_s: overhead,
            by_tokens: Memo::new(TOKEN_TABLE),
            by_requests: Memo::new(REQUEST_TABLE),
            decode_lines_by_sequences: OnceMemo::new(REQUEST_TABLE),
        })
    }

    pub fn mode(&self) -> ProfileMode {
        self.mode
    }

    pub fn iteration_overhead_s(&self) -> f64 {
        self.iteration_overhead_s
    }

    fn model(&self, op: Op) -> &OpModel {
        self.ops[op.index()]
            .as_ref()
            .expect("ProfileTables::new checked every iteration operator")
    }

    fn ratio(&self, r: f64) -> f64 {
        match self.mode {
            ProfileMode::Interpolate => r,
            ProfileMode::Fitted => 1.0,
        }
    }

    /// Seconds of a one-dimensional operator at `x`; marks `outside` when off the grid.
    pub fn op_1d(&self, op: Op, x: f64, outside: &mut OpSet) -> f64 {
        let m = self.model(op);
        let (r, inside) = match &m.ratio {
            Ratio::One(t) => t.eval(x),
            Ratio::Two(t) => t.eval(x, 0.0),
        };
        outside.insert_if(op, !inside);
        m.fit.eval(x, 0.0) * self.ratio(r)
    }

    /// Seconds of prefill attention over `tokens` new tokens with `pairs` = Σ s².
    pub fn prefill_s(&self, tokens: f64, pairs: f64, outside: &mut OpSet) -> f64 {
        if tokens <= 0.0 || pairs <= 0.0 {
            return 0.0;
        }
        let m = self.model(Op::AttnPrefill);
        let s_eq = pairs / tokens;
        let n_eq = tokens / s_eq;
        let (r, inside) = match &m.ratio {
            Ratio::One(t) => t.eval(s_eq),
            Ratio::Two(t) => t.eval(s_eq, 0.0),
        };
        outside.insert_if(Op::AttnPrefill, !inside);
        m.fit.prefill_batch(n_eq, tokens, pairs) * self.ratio(r)
    }

    /// Seconds of decode attention for `sequences` attending to `context_tokens` in all.
    pub fn decode_s(&self, sequences: f64, context_tokens: f64, outside: &mut OpSet) -> f64 {
        if sequences <= 0.0 {
            return 0.0;
        }
        let m = self.model(Op::AttnDecode);
        let per_seq = context_tokens / sequences;
        let (r, inside) = match &m.ratio {
            Ratio::Two(t) => {
                // A whole number of sequences (the cast is exact below 2⁵³; NaN casts to 0).
                let whole = sequences as usize;
                let line = (whole as f64 == sequences)
                    .then(|| {
                        self.decode_lines_by_sequences
                            .get(whole, || t.line(sequences))
                    })
                    .flatten();
                match line {
                    Some(line) => line.eval(per_seq),
                    None => t.eval(sequences, per_seq),
                }
            }
            Ratio::One(t) => t.eval(sequences),
        };
        outside.insert_if(Op::AttnDecode, !inside);
        m.fit.eval(sequences, per_seq) * self.ratio(r)
    }

    /// Per layer, the GEMMs and small operators at `t` tokens, and twice the all-reduce of
    /// their activations (0 without TP), marking `out` as [`ProfileTables::op_1d`] does.
    fn token_terms_s(&self, t: f64, out: &mut OpSet) -> (f64, f64) {
        let mut layer = 0.0;
        for op in Op::LAYER_GEMMS {
            layer += self.op_1d(op, t, out);
        }
        layer += self.op_1d(Op::SmallOps, t, out);
        let allreduce = if self.tp > 1 {
            2.0 * self.op_1d(Op::AllReduce, t * self.allreduce_bytes_per_token, out)
        } else {
            0.0
        };
        (layer, allreduce)
    }

    /// Iteration seconds and which operators were off their grid.
    pub fn iteration(&self, s: &BatchShape) -> (f64, OpSet) {
        let mut out = OpSet::default();
        let (tokens, requests) = (s.tokens() as usize, s.requests() as usize);
        let t = tokens as f64;
        let [gemms, allreduce, outside_tokens] = self.by_tokens.get_or(tokens, || {
            let mut o = OpSet::default();
            let (layer, allreduce) = self.token_terms_s(t, &mut o);
            [layer.to_bits(), allreduce.to_bits(), o.bits()]
        });
        let mut layer = f64::from_bits(gemms);
        let allreduce = f64::from_bits(allreduce);
        out = out.union(OpSet::from_bits(outside_tokens));
        layer += self.prefill_s(
            s.prefill_tokens as f64,
            s.prefill_attention_sq() as f64,
            &mut out,
        );
        layer += self.decode_s(
            s.decode_requests as f64,
            s.decode_context_tokens as f64,
            &mut out,
        );
        if self.tp > 1 {
            layer += allreduce;
        }
        let [head, outside_requests] = self.by_requests.get_or(requests, || {
            let mut o = OpSet::default();
            let head = self.op_1d(Op::LmHead, requests as f64, &mut o);
            [head.to_bits(), o.bits()]
        });
        let head = f64::from_bits(head);
        out = out.union(OpSet::from_bits(outside_requests));
        (self.layers * layer + head + self.iteration_overhead_s, out)
    }
}

/// The `profile` cost model: [`ProfileTables`] plus an optional extrapolation counter.
#[derive(Debug, Clone)]
pub struct ProfileCost {
    tables: Arc<ProfileTables>,
    counter: Option<Arc<ExtrapolationCounter>>,
}

impl ProfileCost {
    pub fn new(tables: Arc<ProfileTables>, counter: Option<Arc<ExtrapolationCounter>>) -> Self {
        ProfileCost { tables, counter }
    }
}

impl CostModel for ProfileCost {
    fn name(&self) -> &'static str {
        "profile"
    }
    fn iteration_s(&self, shape: &BatchShape) -> Result<f64> {
        if shape.is_empty() {
            return Err(SimError::Cost {
                model: "profile".into(),
                msg: "empty batch".into(),
            });
        }
        let (t, outside) = self.tables.iteration(shape);
        if let Some(c) = &self.counter {
            c.record_iteration(outside);
        }
        if !(t.is_finite() && t > 0.0) {
            return Err(SimError::Cost {
                model: "profile".into(),
                msg: format!(
                    "invalid time {} s for a batch of {shape}",
                    crate::error::num(t)
                ),
            });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalogue::Catalogue;
    use crate::profile::{DeviceInfo, FitFile, Measurement, MeasurementInfo, Meta, Provenance};

    fn row(op: Op, x: u64, y: u64, time_s: f64) -> Measurement {
        Measurement {
            op,
            x,
            y,
            time_s,
            min_s: None,
            max_s: None,
            repeats: Some(20),
            source: "measured".into(),
        }
    }

    /// A profile whose every fitted form is linear in x with slope 1 µs and whose measurements are
    /// twice the fit at x = 1 and exactly the fit at x = 100.
    fn profile(tp: u32) -> Profile {
        let ops = fitted_ops();
        let rows = measured_rows();
        Profile {
            meta: Meta {
                schema_version: 1,
                gpu: "a100-80gb".into(),
                model: "llama-2-7b".into(),
                tp,
                created: "2026-01-01".into(),
                source: "measured".into(),
                tool: "test".into(),
                device: DeviceInfo::default(),
                measurement: MeasurementInfo::default(),
                provenance: Provenance::default(),
                grid: BTreeMap::new(),
                fit: BTreeMap::new(),
            },
            fit: FitFile {
                schema_version: 1,
                iteration_overhead_s: 1e-3,
                notes: vec![],
                swap_variant: None,
                ops,
            },
            rows,
        }
    }

    /// The fits of [`profile`]: linear with slope 1 µs for the GEMMs and small ops.
    fn fitted_ops() -> BTreeMap<String, OpFit> {
        let lin = OpFit::Roofline {
            latency_s: 0.0,
            slope_s: 1e-6,
            floor_s: 0.0,
        };
        let mut ops = BTreeMap::new();
        for op in [Op::Qkv, Op::OutProj, Op::MlpUp, Op::MlpDown, Op::LmHead] {
            ops.insert(op.name().to_string(), lin);
        }
        ops.insert(
            "small_ops".into(),
            OpFit::Linear {
                latency_s: 0.0,
                slope_s: 1e-6,
            },
        );
        ops.insert(
            "all_reduce".into(),
            OpFit::Linear {
                latency_s: 1e-5,
                slope_s: 1e-11,
            },
        );
        ops.insert(
            "attn_prefill".into(),
            OpFit::Prefill {
                latency_s: 1e-5,
                s_per_token: 0.0,
                s_per_token_sq: 1e-9,
            },
        );
        ops.insert(
            "attn_decode".into(),
            OpFit::Decode {
                latency_s: 1e-5,
                s_per_sequence: 1e-7,
                s_per_context_token: 1e-9,
            },
        );
        ops
    }

    /// The measurements of [`profile`]: twice the fit at x = 1, the fit at x = 100.
    fn measured_rows() -> Vec<Measurement> {
        let mut rows = Vec::new();
        for op in [
            Op::Qkv,
            Op::OutProj,
            Op::MlpUp,
            Op::MlpDown,
            Op::LmHead,
            Op::SmallOps,
        ] {
            rows.push(row(op, 1, 0, 2e-6));
            rows.push(row(op, 100, 0, 1e-4));
        }
        rows.push(row(Op::AllReduce, 1024, 0, 1e-5 + 1024e-11));
        rows.push(row(
            Op::AllReduce,
            1 << 20,
            0,
            1e-5 + (1 << 20) as f64 * 1e-11,
        ));
        rows.push(row(Op::AttnPrefill, 10, 0, 1e-5 + 100e-9));
        rows.push(row(Op::AttnPrefill, 100, 0, 1e-5 + 1e4 * 1e-9));
        for (r, c) in [(1, 100), (8, 100), (1, 1000), (8, 1000)] {
            let t = 1e-5 + 1e-7 * r as f64 + 1e-9 * (r * c) as f64;
            rows.push(row(Op::AttnDecode, r, c, t));
        }
        rows
    }

    fn tables(tp: u32, mode: ProfileMode) -> ProfileTables {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        ProfileTables::new(&profile(tp), "llama-2-7b", &spec, tp, mode, None).unwrap()
    }

    #[test]
    fn measured_points_are_reproduced_and_between_them_interpolated() {
        let t = tables(1, ProfileMode::Interpolate);
        let mut out = OpSet::default();
        assert!((t.op_1d(Op::Qkv, 1.0, &mut out) - 2e-6).abs() < 1e-18);
        assert!((t.op_1d(Op::Qkv, 100.0, &mut out) - 1e-4).abs() < 1e-15);
        // Halfway (x = 50.5): ratio 1.5, fit 50.5 µs.
        assert!((t.op_1d(Op::Qkv, 50.5, &mut out) - 1.5 * 50.5e-6).abs() < 1e-15);
        assert!(out.is_empty());
        // Beyond the grid: the fit with the edge ratio (1), flagged.
        assert!((t.op_1d(Op::Qkv, 1000.0, &mut out) - 1e-3).abs() < 1e-15);
        assert!(out.contains(Op::Qkv) && !out.contains(Op::MlpUp));
        let f = tables(1, ProfileMode::Fitted);
        let mut out = OpSet::default();
        assert!((f.op_1d(Op::Qkv, 1.0, &mut out) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn iteration_adds_layers_head_and_overhead_by_hand() {
        let t = tables(1, ProfileMode::Interpolate);
        let mut s = BatchShape::default();
        s.add_prefill(100);
        let (secs, out) = t.iteration(&s);
        // Per layer: 4 GEMMs + small ops at 100 tokens (100 µs each) + prefill (10 µs + 10 µs).
        let layer = 5.0 * 1e-4 + 1e-5 + 1e-5;
        // LM head at 1 row: 2 µs (measured point). Overhead 1 ms. 32 layers.
        let want = 32.0 * layer + 2e-6 + 1e-3;
        assert!((secs - want).abs() < 1e-12, "{secs} vs {want}");
        assert!(out.is_empty(), "{out:?}");
        // Decodes: 4 sequences of 500 tokens — inside the decode grid.
        let mut d = BatchShape::default();
        for _ in 0..4 {
            d.add_decode(500);
        }
        let (_, out) = t.iteration(&d);
        assert!(!out.contains(Op::AttnDecode));
        // 16 sequences: beyond the measured 8.
        let mut big = BatchShape::default();
        for _ in 0..16 {
            big.add_decode(500);
        }
        let (_, out) = t.iteration(&big);
        assert!(out.contains(Op::AttnDecode));
    }

    #[test]
    fn counter_counts_iterations_off_the_grid() {
        let c = Arc::new(ExtrapolationCounter::default());
        let m = ProfileCost::new(
            Arc::new(tables(1, ProfileMode::Interpolate)),
            Some(c.clone()),
        );
        let mut s = BatchShape::default();
        s.add_prefill(50);
        m.iteration_s(&s).unwrap();
        assert_eq!(c.report().iterations, 0);
        let mut s = BatchShape::default();
        s.add_prefill(4000); // 4000 tokens: beyond every token grid
        m.iteration_s(&s).unwrap();
        let r = c.report();
        assert_eq!(r.iterations, 1);
        assert_eq!(r.by_operator["qkv"], 1);
        assert_eq!(r.by_operator["attn_prefill"], 1);
        assert!(m.iteration_s(&BatchShape::default()).is_err());
    }

    #[test]
    fn tp_needs_all_reduce_and_must_match() {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        let e = ProfileTables::new(
            &profile(1),
            "llama-2-7b",
            &spec,
            2,
            ProfileMode::Interpolate,
            None,
        )
        .unwrap_err();
        assert!(e.contains("tp = 1") && e.contains("tp = 2"), "{e}");
        let e = ProfileTables::new(
            &profile(1),
            "opt-13b",
            &spec,
            1,
            ProfileMode::Interpolate,
            None,
        )
        .unwrap_err();
        assert!(e.contains("opt-13b"), "{e}");
        let t2 = tables(2, ProfileMode::Interpolate);
        let t1 = tables(1, ProfileMode::Interpolate);
        let mut s = BatchShape::default();
        s.add_decode(100);
        // One token: two all-reduces of 4096·2 bytes per layer, 10 µs + 8192·1e-11 s each.
        let ar = 1e-5 + 8192.0 * 1e-11;
        let diff = t2.iteration(&s).0 - t1.iteration(&s).0;
        assert!((diff - 32.0 * 2.0 * ar).abs() < 1e-12, "{diff}");
        let mut p = profile(2);
        p.fit.ops.remove("all_reduce");
        let e =
            ProfileTables::new(&p, "llama-2-7b", &spec, 2, ProfileMode::Fitted, None).unwrap_err();
        assert!(e.contains("all_reduce"), "{e}");
    }

    #[test]
    fn scenarios_resolve_the_shipped_profile_and_reject_misuse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let text = |cost: &str, swap: &str| {
            format!(
                "name = \"t\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\n[trace]\narrival = \"poisson\"\nrate_per_s = 1.0\nlengths_file = \"../traces/sharegpt_vllm_opt.csv\"\nnum_requests = 10\n[cost]\n{cost}\n[swap]\n{swap}\n[scheduler]\npolicy = \"vllm\"\n"
            )
        };
        let path = dir.join("t.toml");
        let ok = text(
            "model = \"profile\"\npath = \"../calibrate/profiles/a100-80gb/llama-2-7b/tp1\"\nmode = \"fitted\"",
            "",
        );
        let r = crate::scenario::parse(&path, &ok)
            .unwrap()
            .resolve(&Default::default())
            .unwrap();
        assert!(r.uses_profile());
        let (t, _) = r.cost_profile.as_ref().unwrap();
        assert_eq!(t.mode(), ProfileMode::Fitted);
        let mut s = BatchShape::default();
        s.add_decode(100);
        assert!(r.cost_model().unwrap().iteration_s(&s).unwrap() > 0.002);
        // `variant` without `profile`, and an unknown mode, are errors.
        let bad = text("model = \"analytic\"", "variant = \"pinned_gather\"");
        let e = crate::scenario::parse(&path, &bad)
            .unwrap()
            .resolve(&Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`variant` goes with `profile`"), "{e}");
        let bad = text("model = \"profile\"\npath = \"x\"\nmode = \"magic\"", "");
        assert!(crate::scenario::parse(&path, &bad).is_err());
    }
}
