//! How the `profile` model's predictions compare with the `analytic` model's on the measured
//! points of a profile (for imported profiles: Vidur's points), per operator group, and on whole
//! iterations. Writes `calibrate/profiles/VIDUR_COMPARISON.md`.
//!
//! Per point: |predicted / measured − 1|. Three predictors:
//! - `analytic`: `AnalyticCost`'s per-operator methods with the committed fitted parameters
//!   (fitted on all of Vidur's models and TP degrees pooled);
//! - `profile fitted`: the profile's per-operator fits (fitted on this profile's points);
//! - `profile interp (LOO)`: the `interpolate` mode with the point itself left out of the table
//!   (an out-of-sample estimate of how it does between measurements; at the grid's ends it
//!   extrapolates).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use servesim::catalogue::Catalogue;
use servesim::cost::BatchShape;
use servesim::cost::CostModel;
use servesim::cost::analytic::AnalyticCost;
use servesim::cost::profile::{ProfileMode, ProfileTables};
use servesim::profile::table::{Table1, Table2};
use servesim::profile::{Measurement, Op, OpFit, OpSet, Profile};

use crate::fitting::{fit_rows, median};

/// Errors of the three predictors over one group's points.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupComparison {
    pub group: &'static str,
    pub points: usize,
    /// (median, mean) of |pred/meas − 1| for analytic, profile fitted, profile LOO interpolation.
    pub analytic: (f64, f64),
    pub fitted: (f64, f64),
    pub interp_loo: (f64, f64),
}

/// Leave-one-out `interpolate`-mode predictions of one operator at its distinct shapes:
/// `(x, y) → (measured median, predicted)`.
pub fn loo_predictions(
    op: Op,
    fit: &OpFit,
    rows: &[&Measurement],
) -> BTreeMap<(u64, u64), (f64, f64)> {
    let mut by: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
    for r in rows {
        by.entry((r.x, r.y)).or_default().push(r.time_s);
    }
    let pts: Vec<((u64, u64), f64)> = by.into_iter().map(|(k, v)| (k, median(&v))).collect();
    let ratio = |(x, y): (u64, u64), t: f64| t / fit.eval(x as f64, y as f64);
    let mut out = BTreeMap::new();
    for (i, &((x, y), t)) in pts.iter().enumerate() {
        let others = pts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p);
        let r = match op {
            Op::AttnDecode => Table2::new(
                others
                    .map(|&((a, b), v)| (a as f64, b as f64, ratio((a, b), v)))
                    .collect(),
            )
            .map(|t| t.eval(x as f64, y as f64).0),
            Op::AttnPrefill => Table1::new(
                others
                    .map(|&((a, b), v)| (a as f64 + 2.0 * b as f64, ratio((a, b), v)))
                    .collect(),
            )
            .map(|t| t.value(x as f64 + 2.0 * y as f64)),
            _ => Table1::new(
                others
                    .map(|&((a, b), v)| (a as f64, ratio((a, b), v)))
                    .collect(),
            )
            .map(|t| t.value(x as f64)),
        };
        if let Some(r) = r {
            out.insert((x, y), (t, fit.eval(x as f64, y as f64) * r));
        }
    }
    out
}

fn stats(e: &[f64]) -> (f64, f64) {
    (median(e), e.iter().sum::<f64>() / e.len().max(1) as f64)
}

/// Per-group comparison for one profile.
pub fn compare_groups(p: &Profile) -> Result<Vec<GroupComparison>> {
    let cat = Catalogue::builtin();
    let model = cat.model(&p.meta.model)?.clone();
    let gpu = cat.gpu(&p.meta.gpu)?.clone();
    let params =
        servesim::scenario::analytic_params_for(&p.meta.gpu, None).map_err(anyhow::Error::msg)?;
    let a = AnalyticCost::new(model, gpu, p.meta.tp, params)?;
    let mut out = Vec::new();
    let fit = |op: Op| p.op_fit(op).copied();

    if let Some(g) = linear_group(p, &a) {
        out.push(g);
    }
    type Analytic<'a> = Box<dyn Fn(u64, u64) -> f64 + 'a>;
    let groups: [(Op, &'static str, Analytic<'_>); 4] = [
        (
            Op::SmallOps,
            "small_ops",
            Box::new(|x, _| a.small_ops_layer_s(x as f64)),
        ),
        (
            Op::AttnPrefill,
            "attn_prefill",
            Box::new(|x, y| {
                let (c, k) = (x as f64, y as f64);
                a.prefill_attention_layer_s(c * (c + 2.0 * k))
            }),
        ),
        (
            Op::AttnDecode,
            "attn_decode",
            Box::new(|x, y| a.decode_attention_layer_s(x as f64, (x * y) as f64)),
        ),
        (
            Op::AllReduce,
            "all_reduce",
            Box::new(|x, _| a.allreduce_bytes_s(x as f64)),
        ),
    ];
    for (op, name, analytic) in groups {
        let Some(f) = fit(op) else { continue };
        let (rows, over) = fit_rows(&p.rows, op);
        if rows.is_empty() || (op == Op::AllReduce && p.meta.tp < 2) {
            continue;
        }
        let (mut ea, mut ef, mut el) = (Vec::new(), Vec::new(), Vec::new());
        for ((x, y), (meas, loo)) in loo_predictions(op, &f, &rows) {
            ea.push((analytic(x, y) / meas - 1.0).abs());
            ef.push((f.eval(x as f64, y as f64) / meas - 1.0).abs());
            el.push((loo / meas - 1.0).abs());
        }
        out.push(GroupComparison {
            group: if over == "derived" {
                match op {
                    Op::AttnPrefill => "attn_prefill (derived rows)",
                    Op::AttnDecode => "attn_decode (derived rows)",
                    _ => name,
                }
            } else {
                name
            },
            points: ea.len(),
            analytic: stats(&ea),
            fitted: stats(&ef),
            interp_loo: stats(&el),
        });
    }
    Ok(out)
}

/// Linear layers: the sum of the four GEMMs at each token count (`None` without every GEMM
/// fitted, or without rows).
fn linear_group(p: &Profile, a: &AnalyticCost) -> Option<GroupComparison> {
    let fit = |op: Op| p.op_fit(op).copied();
    let mut lin: BTreeMap<u64, [(f64, f64, f64); 4]> = BTreeMap::new();
    let mut complete = true;
    for (k, op) in Op::LAYER_GEMMS.iter().enumerate() {
        let Some(f) = fit(*op) else {
            complete = false;
            break;
        };
        let (rows, _) = fit_rows(&p.rows, *op);
        for ((x, _), (meas, loo)) in loo_predictions(*op, &f, &rows) {
            lin.entry(x).or_insert([(0.0, 0.0, 0.0); 4])[k] = (meas, f.eval(x as f64, 0.0), loo);
        }
    }
    if !complete || lin.is_empty() {
        return None;
    }
    let (mut ea, mut ef, mut el) = (Vec::new(), Vec::new(), Vec::new());
    for (x, v) in &lin {
        if v.iter().any(|c| c.0 == 0.0) {
            continue;
        }
        let meas: f64 = v.iter().map(|c| c.0).sum();
        ea.push((a.linear_layer_s(*x as f64) / meas - 1.0).abs());
        ef.push((v.iter().map(|c| c.1).sum::<f64>() / meas - 1.0).abs());
        el.push((v.iter().map(|c| c.2).sum::<f64>() / meas - 1.0).abs());
    }
    Some(GroupComparison {
        group: "linear (qkv + out_proj + mlp_up + mlp_down)",
        points: ea.len(),
        analytic: stats(&ea),
        fitted: stats(&ef),
        interp_loo: stats(&el),
    })
}

/// Representative batches: (label, shape).
pub fn sample_batches() -> Vec<(&'static str, BatchShape)> {
    let decode = |n: u32, ctx: u32| {
        let mut s = BatchShape::default();
        for _ in 0..n {
            s.add_decode(ctx);
        }
        s
    };
    let prefill = |n: u32, len: u32| {
        let mut s = BatchShape::default();
        for _ in 0..n {
            s.add_prefill(len);
        }
        s
    };
    let mut mixed = decode(32, 1024);
    mixed.add_prefill(512);
    vec![
        ("decode 1 × 512 ctx", decode(1, 512)),
        ("decode 32 × 1024 ctx", decode(32, 1024)),
        ("decode 128 × 2048 ctx", decode(128, 2048)),
        ("prefill 1 × 512", prefill(1, 512)),
        ("prefill 1 × 2048", prefill(1, 2048)),
        ("prefill 4 × 1024", prefill(4, 1024)),
        ("prefill 512 + decode 32 × 1024", mixed),
    ]
}

/// Iteration times of one sample batch under the models.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationComparison {
    pub label: &'static str,
    pub analytic_s: f64,
    pub interpolate_s: f64,
    pub fitted_s: f64,
    /// The `interpolate` mode left the measured grid for some operator.
    pub off_grid: bool,
}

/// Iteration times of the sample batches.
pub fn compare_iterations(p: &Profile) -> Result<Vec<IterationComparison>> {
    let cat = Catalogue::builtin();
    let model = cat.model(&p.meta.model)?.clone();
    let gpu = cat.gpu(&p.meta.gpu)?.clone();
    let params =
        servesim::scenario::analytic_params_for(&p.meta.gpu, None).map_err(anyhow::Error::msg)?;
    let a = AnalyticCost::new(model.clone(), gpu, p.meta.tp, params)?;
    let ti = ProfileTables::new(
        p,
        &p.meta.model,
        &model,
        p.meta.tp,
        ProfileMode::Interpolate,
        None,
    )
    .map_err(anyhow::Error::msg)?;
    let tf = ProfileTables::new(
        p,
        &p.meta.model,
        &model,
        p.meta.tp,
        ProfileMode::Fitted,
        None,
    )
    .map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    for (label, s) in sample_batches() {
        let (vi, off) = ti.iteration(&s);
        out.push(IterationComparison {
            label,
            analytic_s: a.iteration_s(&s)?,
            interpolate_s: vi,
            fitted_s: tf.iteration(&s).0,
            off_grid: !off.is_empty(),
        });
    }
    Ok(out)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// The comparison report of several profiles (`name` → profile), as Markdown.
pub fn compare_markdown(profiles: &[(String, Profile)]) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Profile vs analytic model on the profiles' own measurements\n\n\
         Generated by `servesim calibrate import-vidur` (module `servesim_calibrate::compare`); do not edit by hand — the calibrate crate's tests regenerate it and compare.\n\n\
         Per point |predicted / measured − 1|, median and mean. `analytic`: the `analytic` cost model with the committed `sim/catalogue/analytic_fit.toml` parameters (fitted on all of Vidur's models and TP degrees pooled). `profile fitted`: the profile's per-operator fits (`fit.toml`, fitted on these points). `profile interp (LOO)`: the `profile` model's default `interpolate` mode with the point itself left out of its table — out of sample; at the ends of the grid it extrapolates. Rows marked *derived* compare against numbers derived from other measurements (see the profile's `meta.toml`), not against measurements.\n"
    );
    for (name, p) in profiles {
        let _ = writeln!(
            s,
            "## `{name}` ({} on {}, tp {})\n",
            p.meta.model, p.meta.device.name, p.meta.tp
        );
        let _ = writeln!(
            s,
            "| group | points | analytic median | analytic mean | profile fitted median | profile fitted mean | profile interp (LOO) median | profile interp (LOO) mean |\n|---|---|---|---|---|---|---|---|"
        );
        for g in compare_groups(p)? {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                g.group,
                g.points,
                pct(g.analytic.0),
                pct(g.analytic.1),
                pct(g.fitted.0),
                pct(g.fitted.1),
                pct(g.interp_loo.0),
                pct(g.interp_loo.1)
            );
        }
        let _ = writeln!(
            s,
            "\nWhole iterations (all layers, LM head, {} s fixed overhead in both models):\n\n| batch | analytic | profile interpolate | profile fitted | interpolate vs analytic | off the measured grid |\n|---|---|---|---|---|---|",
            p.fit.iteration_overhead_s
        );
        for c in compare_iterations(p)? {
            let (label, a, i, f, off) = (
                c.label,
                c.analytic_s,
                c.interpolate_s,
                c.fitted_s,
                c.off_grid,
            );
            let _ = writeln!(
                s,
                "| {label} | {:.3} ms | {:.3} ms | {:.3} ms | {:+.1}% | {} |",
                a * 1e3,
                i * 1e3,
                f * 1e3,
                100.0 * (i / a - 1.0),
                if off { "yes (extrapolated)" } else { "no" }
            );
        }
        let _ = writeln!(s);
    }
    Ok(s)
}

/// How well `reference` (e.g. a Vidur-import profile) and the analytic model predict the
/// measured points of `measured` (a GPU run on the same GPU type, model and TP), per operator
/// group, as Markdown. `reference` is evaluated in its `interpolate` mode.
pub fn compare_against(measured: &Profile, reference: &Profile) -> Result<String> {
    let cat = Catalogue::builtin();
    let m = &measured.meta;
    if reference.meta.model != m.model || reference.meta.tp != m.tp {
        anyhow::bail!(
            "the reference profile is {} tp{}, the measured one {} tp{}",
            reference.meta.model,
            reference.meta.tp,
            m.model,
            m.tp
        );
    }
    let model = cat.model(&m.model)?.clone();
    let gpu = cat.gpu(&m.gpu)?.clone();
    let params =
        servesim::scenario::analytic_params_for(&m.gpu, None).map_err(anyhow::Error::msg)?;
    let a = AnalyticCost::new(model.clone(), gpu, m.tp, params)?;
    let r = ProfileTables::new(
        reference,
        &m.model,
        &model,
        m.tp,
        ProfileMode::Interpolate,
        None,
    )
    .map_err(anyhow::Error::msg)?;
    let mut s = format!(
        "## Predictions vs the measurements of `{}` tp{} on {}\n\nReference profile: {} ({}, {}). Per point |predicted / measured − 1|; `off grid`: points outside the reference's measured grid.\n\n| group | points | analytic median | analytic mean | reference median | reference mean | off grid |\n|---|---|---|---|---|---|---|\n",
        m.model,
        m.tp,
        m.device.name,
        reference.meta.device.name,
        reference.meta.source,
        reference.meta.created
    );
    let merged = |op: Op| {
        let (rows, _) = fit_rows(&measured.rows, op);
        crate::fitting::merge_points(&rows)
    };
    let pts = linear_points(measured, &r, &a);
    against_row(&mut s, "linear (qkv + out_proj + mlp_up + mlp_down)", pts);
    type Predict<'a> = &'a dyn Fn(f64, f64, &mut OpSet) -> (f64, f64);
    let one = |op: Op, f: Predict<'_>| {
        merged(op)
            .into_iter()
            .map(|(x, y, t)| {
                let mut out = OpSet::default();
                let (an, re) = f(x, y, &mut out);
                (t, an, re, !out.is_empty())
            })
            .collect::<Vec<_>>()
    };
    against_row(
        &mut s,
        "small_ops",
        one(Op::SmallOps, &|x, _, o| {
            (a.small_ops_layer_s(x), r.op_1d(Op::SmallOps, x, o))
        }),
    );
    against_row(
        &mut s,
        "attn_prefill",
        one(Op::AttnPrefill, &|x, y, o| {
            let pairs = x * (x + 2.0 * y);
            (a.prefill_attention_layer_s(pairs), r.prefill_s(x, pairs, o))
        }),
    );
    against_row(
        &mut s,
        "attn_decode",
        one(Op::AttnDecode, &|x, y, o| {
            (
                a.decode_attention_layer_s(x, x * y),
                r.decode_s(x, x * y, o),
            )
        }),
    );
    Ok(s)
}

/// One group's line of [`compare_against`]'s table; `pts`: (measured, analytic, reference,
/// off grid) per point (no line without points).
fn against_row(s: &mut String, name: &str, pts: Vec<(f64, f64, f64, bool)>) {
    if pts.is_empty() {
        return;
    }
    let ea: Vec<f64> = pts.iter().map(|p| (p.1 / p.0 - 1.0).abs()).collect();
    let er: Vec<f64> = pts.iter().map(|p| (p.2 / p.0 - 1.0).abs()).collect();
    let off = pts.iter().filter(|p| p.3).count();
    let (am, aa) = stats(&ea);
    let (rm, ra) = stats(&er);
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {} | {} | {} | {off} |",
        pts.len(),
        pct(am),
        pct(aa),
        pct(rm),
        pct(ra)
    );
}

/// Linear: sum of the four GEMMs at token counts all four were measured at, as (measured,
/// analytic, reference, off grid).
fn linear_points(
    measured: &Profile,
    r: &ProfileTables,
    a: &AnalyticCost,
) -> Vec<(f64, f64, f64, bool)> {
    let merged = |op: Op| {
        let (rows, _) = fit_rows(&measured.rows, op);
        crate::fitting::merge_points(&rows)
    };
    let mut lin: BTreeMap<u64, (usize, f64)> = BTreeMap::new();
    for op in Op::LAYER_GEMMS {
        for (x, _, t) in merged(op) {
            let e = lin.entry(x as u64).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += t;
        }
    }
    let mut pts = Vec::new();
    for (x, (n, t)) in lin {
        if n < 4 {
            continue;
        }
        let mut out = OpSet::default();
        let pred: f64 = Op::LAYER_GEMMS
            .iter()
            .map(|op| r.op_1d(*op, x as f64, &mut out))
            .sum();
        pts.push((t, a.linear_layer_s(x as f64), pred, !out.is_empty()));
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loo_on_an_exact_profile_is_exact_and_comparison_runs() {
        let p = crate::import::import_profile(
            &crate::vidur_fit::default_data_dir(),
            "a100",
            "llama-2-7b",
            1,
            "2026-01-01",
        )
        .unwrap();
        let g = compare_groups(&p).unwrap();
        let names: Vec<&str> = g.iter().map(|c| c.group).collect();
        assert!(names[0].starts_with("linear"));
        assert!(names.contains(&"attn_decode") && names.contains(&"small_ops"));
        assert!(!names.iter().any(|n| n.starts_with("all_reduce")));
        for c in &g {
            assert!(c.points > 50, "{c:?}");
            assert!(c.fitted.0 < 0.2 && c.interp_loo.0 < 0.2, "{c:?}");
        }
        let it = compare_iterations(&p).unwrap();
        assert_eq!(it.len(), sample_batches().len());
        for c in it {
            let (a, i) = (c.analytic_s, c.interpolate_s);
            assert!(a > 0.0 && i > 0.0 && c.fitted_s > 0.0, "{c:?}");
            // The two models agree within a factor of two on every sample batch.
            assert!((i / a).ln().abs() < 2f64.ln(), "{c:?}");
        }
    }
}
