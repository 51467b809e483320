//! Fitting a profile's measurements: one [`OpFit`] per operator, and its residuals.
//!
//! Rows sharing a shape are merged into their median first. Forms linear in their parameters
//! (`linear`, `prefill`, `decode`, `copy`) are fitted by least squares on relative errors with
//! non-negative coefficients (every subset of free coefficients is tried; the best feasible one
//! wins). The `roofline` form is linear in (slope², floor²) once its latency is fixed: that is
//! solved the same way for every latency on a log grid, keeping the one with the least mean
//! |ln(fitted / measured)|.
//! Residuals are |fitted / measured − 1| over the rows (measured rows only, when an operator has
//! any).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use servesim::profile::{
    FitFile, Form, Measurement, Meta, Op, OpFit, Profile, Residuals, SCHEMA_VERSION,
};

use crate::vidur_fit::fit::round_sig;

/// Significant digits kept in fitted parameters.
pub const SIG_DIGITS: i32 = 5;

/// The rows a fit and its residuals use: the measured ones, or the derived ones when an operator
/// has nothing else.
pub fn fit_rows(rows: &[Measurement], op: Op) -> (Vec<&Measurement>, &'static str) {
    let all: Vec<&Measurement> = rows.iter().filter(|r| r.op == op).collect();
    let measured: Vec<&Measurement> = all.iter().copied().filter(|r| !r.is_derived()).collect();
    if measured.is_empty() {
        (all, "derived")
    } else {
        (measured, "measured")
    }
}

/// `(x, y, median seconds)` per distinct shape, sorted by (x, y).
pub fn merge_points(rows: &[&Measurement]) -> Vec<(f64, f64, f64)> {
    let mut by: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
    for r in rows {
        by.entry((r.x, r.y)).or_default().push(r.time_s);
    }
    by.into_iter()
        .map(|((x, y), mut ts)| {
            ts.sort_by(f64::total_cmp);
            let n = ts.len();
            let m = if n % 2 == 1 {
                ts[n / 2]
            } else {
                0.5 * (ts[n / 2 - 1] + ts[n / 2])
            };
            (x as f64, y as f64, m)
        })
        .collect()
}

/// Solve the small dense system `a · x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-300 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        let (top, rest) = a.split_at_mut(c + 1);
        let pivot = &top[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[c] / pivot[c];
            for (v, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                *v -= f * p;
            }
            b[c + 1 + r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| a[c][k] * x[k]).sum();
        x[c] = (b[c] - s) / a[c][c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Least squares of `Σ θ_j φ_j(p) ≈ t(p)` on relative errors with θ ≥ 0; `required` columns must
/// stay in the model with θ > 0. Returns θ.
pub fn nnls_relative(
    features: &[Vec<f64>],
    targets: &[f64],
    required: &[usize],
) -> Option<Vec<f64>> {
    let p = features.first()?.len();
    // Rows scaled by 1/t (relative errors); columns scaled to unit norm for conditioning.
    let rows: Vec<Vec<f64>> = features
        .iter()
        .zip(targets)
        .map(|(f, t)| f.iter().map(|v| v / t).collect())
        .collect();
    let norms: Vec<f64> = (0..p)
        .map(|j| {
            rows.iter()
                .map(|r| r[j] * r[j])
                .sum::<f64>()
                .sqrt()
                .max(1e-300)
        })
        .collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 1u32..(1 << p) {
        if required.iter().any(|&j| mask & (1 << j) == 0) {
            continue;
        }
        let cols: Vec<usize> = (0..p).filter(|j| mask & (1 << j) != 0).collect();
        let q = cols.len();
        let mut a = vec![vec![0.0; q]; q];
        let mut b = vec![0.0; q];
        for r in &rows {
            for (i, &ci) in cols.iter().enumerate() {
                let vi = r[ci] / norms[ci];
                b[i] += vi;
                for (k, &ck) in cols.iter().enumerate() {
                    a[i][k] += vi * r[ck] / norms[ck];
                }
            }
        }
        let Some(sol) = solve(a, b) else { continue };
        if sol.iter().any(|&v| v < 0.0) {
            continue;
        }
        let mut theta = vec![0.0; p];
        for (i, &c) in cols.iter().enumerate() {
            theta[c] = sol[i] / norms[c];
        }
        if required.iter().any(|&j| theta[j] <= 0.0) {
            continue;
        }
        let err: f64 = rows
            .iter()
            .map(|r| {
                let pred: f64 = (0..p).map(|j| theta[j] * r[j]).sum();
                (pred - 1.0).powi(2)
            })
            .sum();
        if best.as_ref().is_none_or(|(e, _)| err < *e) {
            best = Some((err, theta));
        }
    }
    best.map(|(_, t)| t)
}

fn fit_roofline(op: Op, points: &[(f64, f64, f64)]) -> Result<OpFit> {
    // For a fixed latency L, (t − L)² = slope²·x² + floor² is linear in (slope², floor²): solve
    // that by non-negative least squares, and search L on a grid (then a finer one around the
    // best), scoring each candidate by the mean |ln(fitted / measured)|.
    let t_min = points.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
    let fit_at = |l: f64| -> Option<(f64, OpFit)> {
        let feats: Vec<Vec<f64>> = points.iter().map(|p| vec![p.0 * p.0, 1.0]).collect();
        let targets: Vec<f64> = points.iter().map(|p| (p.2 - l).powi(2)).collect();
        let th = nnls_relative(&feats, &targets, &[])?;
        let f = OpFit::Roofline {
            latency_s: l,
            slope_s: th[0].sqrt(),
            floor_s: th[1].sqrt(),
        };
        let obj = points
            .iter()
            .map(|&(x, y, t)| (f.eval(x, y) / t).ln().abs())
            .sum::<f64>()
            / points.len() as f64;
        obj.is_finite().then_some((obj, f))
    };
    let mut best: Option<(f64, OpFit, f64)> = None;
    let consider = |l: f64, best: &mut Option<(f64, OpFit, f64)>| {
        if let Some((obj, f)) = fit_at(l)
            && best.as_ref().is_none_or(|b| obj < b.0)
        {
            *best = Some((obj, f, l));
        }
    };
    consider(0.0, &mut best);
    let n = 200;
    let (lo, hi) = ((t_min * 1e-4).ln(), (t_min * 0.999).ln());
    let step = (hi - lo) / n as f64;
    for i in 0..=n {
        consider((lo + step * i as f64).exp(), &mut best);
    }
    if let Some((_, _, l)) = best
        && l > 0.0
    {
        let c = l.ln();
        for i in 0..=100 {
            let v = (c - step + 2.0 * step * i as f64 / 100.0).min(hi);
            consider(v.exp(), &mut best);
        }
    }
    let (_, f, _) = best.with_context(|| {
        format!(
            "`{}`: the roofline fit failed over {}: no latency gives a finite error (times too small or too far apart to square)",
            op.name(),
            shapes(points)
        )
    })?;
    let p = f.params();
    Ok(OpFit::Roofline {
        latency_s: round_sig(p[0].1, SIG_DIGITS),
        slope_s: round_sig(p[1].1, SIG_DIGITS),
        floor_s: round_sig(p[2].1, SIG_DIGITS),
    })
}

/// `N shapes (x a–b, y c–d)` of merged points, for errors.
fn shapes(points: &[(f64, f64, f64)]) -> String {
    let range = |f: fn(&(f64, f64, f64)) -> f64| {
        let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        format!("{lo}–{hi}")
    };
    format!(
        "{} shape(s) (x {}, y {})",
        points.len(),
        range(|p| p.0),
        range(|p| p.1)
    )
}

/// Fit one operator's form to its rows.
pub fn fit_op(op: Op, rows: &[&Measurement]) -> Result<OpFit> {
    let points = merge_points(rows);
    if points.is_empty() {
        bail!("`{}`: no measurements to fit", op.name());
    }
    if let Some(p) = points.iter().find(|p| !(p.2.is_finite() && p.2 > 0.0)) {
        bail!(
            "`{}`: the time at x = {}, y = {} is {} s; every time must be a finite number > 0",
            op.name(),
            p.0,
            p.1,
            p.2
        );
    }
    let targets: Vec<f64> = points.iter().map(|p| p.2).collect();
    let lin = |features: Vec<Vec<f64>>, required: &[usize]| -> Result<Vec<f64>> {
        nnls_relative(&features, &targets, required)
            .map(|t| t.into_iter().map(|v| round_sig(v, SIG_DIGITS)).collect())
            .with_context(|| {
                let why = if op.form() == Form::Copy {
                    "every subset of coefficients with a positive bandwidth term is singular or gives a negative coefficient (copies need shapes with different x·y)"
                } else {
                    "the least-squares system is singular for every subset of coefficients"
                };
                format!(
                    "`{}`: the `{}` fit failed over {}: {why}",
                    op.name(),
                    op.form().name(),
                    shapes(&points)
                )
            })
    };
    Ok(match op.form() {
        Form::Roofline => fit_roofline(op, &points)?,
        Form::Linear => {
            let th = lin(points.iter().map(|p| vec![1.0, p.0]).collect(), &[])?;
            OpFit::Linear {
                latency_s: th[0],
                slope_s: th[1],
            }
        }
        Form::Prefill => {
            let th = lin(
                points
                    .iter()
                    .map(|p| vec![1.0, p.0, p.0 * (p.0 + 2.0 * p.1)])
                    .collect(),
                &[],
            )?;
            OpFit::Prefill {
                latency_s: th[0],
                s_per_token: th[1],
                s_per_token_sq: th[2],
            }
        }
        Form::Decode => {
            let th = lin(
                points.iter().map(|p| vec![1.0, p.0, p.0 * p.1]).collect(),
                &[],
            )?;
            OpFit::Decode {
                latency_s: th[0],
                s_per_sequence: th[1],
                s_per_context_token: th[2],
            }
        }
        Form::Copy => {
            let th = lin(
                points.iter().map(|p| vec![1.0, p.0, p.0 * p.1]).collect(),
                &[2],
            )?;
            OpFit::Copy {
                latency_s: th[0],
                s_per_chunk: th[1],
                bytes_per_s: round_sig(1.0 / th[2], SIG_DIGITS),
            }
        }
    })
}

/// |fitted / measured − 1| over `rows`.
pub fn rel_errors(fit: &OpFit, rows: &[&Measurement]) -> Vec<f64> {
    rows.iter()
        .map(|r| (fit.eval(r.x as f64, r.y as f64) / r.time_s - 1.0).abs())
        .collect()
}

/// Median of a non-empty slice (sorted copy).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// The residual summary of `fit` over `rows`.
pub fn residuals(fit: &OpFit, rows: &[&Measurement], over: &str) -> Residuals {
    let e = rel_errors(fit, rows);
    let r4 = |v: f64| round_sig(v, 4);
    Residuals {
        form: fit.form().name().to_string(),
        points: e.len() as u64,
        median_rel_err: r4(median(&e)),
        mean_rel_err: r4(e.iter().sum::<f64>() / e.len().max(1) as f64),
        max_rel_err: r4(e.iter().copied().fold(0.0, f64::max)),
        over: over.to_string(),
    }
}

/// Fit every operator present in `rows` and assemble the profile (`meta.fit` and `meta.grid`
/// are filled in here).
pub fn fit_profile(
    mut meta: Meta,
    rows: Vec<Measurement>,
    iteration_overhead_s: f64,
    notes: Vec<String>,
    swap_variant: Option<servesim::profile::CopyVariant>,
) -> Result<Profile> {
    let mut ops = BTreeMap::new();
    meta.fit.clear();
    for op in Op::ALL {
        let (rs, over) = fit_rows(&rows, op);
        if rs.is_empty() {
            continue;
        }
        let f = fit_op(op, &rs)?;
        meta.fit
            .insert(op.name().to_string(), residuals(&f, &rs, over));
        ops.insert(op.name().to_string(), f);
    }
    if ops.is_empty() {
        bail!("no measurements to fit");
    }
    meta.schema_version = SCHEMA_VERSION;
    meta.grid = servesim::profile::grids(&rows);
    Ok(Profile {
        meta,
        fit: FitFile {
            schema_version: SCHEMA_VERSION,
            iteration_overhead_s,
            notes,
            swap_variant,
            ops,
        },
        rows,
    })
}

/// Re-fit a loaded profile from its own measurements (keeps meta, notes and overhead).
pub fn refit(p: &Profile) -> Result<Profile> {
    fit_profile(
        p.meta.clone(),
        p.rows.clone(),
        p.fit.iteration_overhead_s,
        p.fit.notes.clone(),
        p.fit.swap_variant,
    )
}

/// Leave-one-out error of piecewise-linear interpolation of the measured/fitted ratio over a
/// one-dimensional operator's distinct x values (the interior points; the two ends are skipped):
/// |interpolated / measured − 1| per point. How well the `interpolate` mode predicts a shape it
/// was not given.
pub fn loo_interp_errors(fit: &OpFit, rows: &[&Measurement], key: fn(f64, f64) -> f64) -> Vec<f64> {
    let pts: Vec<(f64, f64, f64)> = merge_points(rows)
        .into_iter()
        .map(|(x, y, t)| (key(x, y), t, t / fit.eval(x, y)))
        .collect();
    let mut by_key: Vec<(f64, f64, f64)> = pts.clone();
    by_key.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut errs = Vec::new();
    for i in 0..by_key.len() {
        let (k, t, _) = by_key[i];
        let lo = by_key[..i].iter().rev().find(|p| p.0 < k);
        let hi = by_key[i + 1..].iter().find(|p| p.0 > k);
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        let w = (k - lo.0) / (hi.0 - lo.0);
        let ratio = lo.2 + (hi.2 - lo.2) * w;
        let (x, y) = (rows_x_y(rows, key, k)).unwrap_or((k, 0.0));
        errs.push((fit.eval(x, y) * ratio / t - 1.0).abs());
    }
    errs
}

/// A row's (x, y) whose key is `k`.
fn rows_x_y(rows: &[&Measurement], key: fn(f64, f64) -> f64, k: f64) -> Option<(f64, f64)> {
    rows.iter()
        .map(|r| (r.x as f64, r.y as f64))
        .find(|&(x, y)| key(x, y) == k)
}

/// Load a profile directory that may not have been fitted yet (no fit.toml).
pub fn load_for_fit(dir: &Path) -> Result<Profile> {
    if dir.join(servesim::profile::FIT_FILE).is_file() {
        return Ok(Profile::load(dir)?);
    }
    let meta_path = dir.join(servesim::profile::META_FILE);
    let text = servesim::input::read_text(&meta_path, servesim::input::MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", meta_path.display()))?;
    let meta: Meta = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            meta_path.display(),
            servesim::error::toml_error_message(&text, &e)
        )
    })?;
    if meta.schema_version != SCHEMA_VERSION {
        bail!(
            "{}: schema version {} (this build reads {SCHEMA_VERSION})",
            meta_path.display(),
            meta.schema_version
        );
    }
    servesim::profile::validate::check_meta(&meta, &meta_path, &text)?;
    let m_path = dir.join(servesim::profile::MEASUREMENTS_FILE);
    let text = servesim::profile::read_measurements_text(&m_path)?;
    let rows = servesim::profile::parse_measurements(&text, &m_path)?;
    Ok(Profile {
        meta,
        fit: FitFile {
            schema_version: SCHEMA_VERSION,
            iteration_overhead_s: crate::import::ITERATION_OVERHEAD_S,
            notes: vec![format!(
                "iteration_overhead_s = {} is not measured; the published vLLM v0 per-step figure the analytic fit uses",
                crate::import::ITERATION_OVERHEAD_S
            )],
            swap_variant: None,
            ops: Default::default(),
        },
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: Op, x: u64, y: u64, t: f64) -> Measurement {
        Measurement {
            op,
            x,
            y,
            time_s: t,
            min_s: None,
            max_s: None,
            repeats: Some(20),
            source: "measured".into(),
        }
    }

    #[test]
    fn nnls_recovers_exact_coefficients_and_keeps_them_non_negative() {
        // t = 2 + 3x exactly.
        let f: Vec<Vec<f64>> = (1..6).map(|x| vec![1.0, x as f64]).collect();
        let t: Vec<f64> = (1..6).map(|x| 2.0 + 3.0 * x as f64).collect();
        let th = nnls_relative(&f, &t, &[]).unwrap();
        assert!(
            (th[0] - 2.0).abs() < 1e-9 && (th[1] - 3.0).abs() < 1e-9,
            "{th:?}"
        );
        // t = 5 − x would need a negative slope: the best non-negative fit drops it.
        let t: Vec<f64> = (1..5).map(|x| 5.0 - x as f64).collect();
        let th = nnls_relative(&f[..4], &t, &[]).unwrap();
        assert!(th[1] == 0.0 && th[0] > 0.0, "{th:?}");
    }

    #[test]
    fn forms_recover_the_parameters_that_generated_the_rows() {
        let copy = OpFit::Copy {
            latency_s: 8e-6,
            s_per_chunk: 2e-6,
            bytes_per_s: 2.4e10,
        };
        let rows: Vec<Measurement> = [1u64, 4, 16, 64, 256, 1024]
            .iter()
            .flat_map(|&n| [16384u64, 131072, 1 << 20].map(|b| (n, b)))
            .map(|(n, b)| row(Op::H2dPinnedMemcpy, n, b, copy.eval(n as f64, b as f64)))
            .collect();
        let refs: Vec<&Measurement> = rows.iter().collect();
        let f = fit_op(Op::H2dPinnedMemcpy, &refs).unwrap();
        let r = residuals(&f, &refs, "measured");
        assert!(r.max_rel_err < 1e-4, "{f:?} {r:?}");
        let OpFit::Copy { bytes_per_s, .. } = f else {
            panic!()
        };
        assert!((bytes_per_s / 2.4e10 - 1.0).abs() < 1e-4);

        let roof = OpFit::Roofline {
            latency_s: 5e-6,
            slope_s: 2e-8,
            floor_s: 4e-5,
        };
        let rows: Vec<Measurement> = crate::plan::log_grid(1, 8192, 2)
            .into_iter()
            .map(|x| row(Op::Qkv, x, 0, roof.eval(x as f64, 0.0)))
            .collect();
        let refs: Vec<&Measurement> = rows.iter().collect();
        let f = fit_op(Op::Qkv, &refs).unwrap();
        let r = residuals(&f, &refs, "measured");
        assert!(r.max_rel_err < 0.01, "{f:?} {r:?}");
    }

    /// Block-sized per-call copies timed by servesim's PCIe model (`latency_s + calls ×
    /// per_call_s + bytes / bandwidth`) for both KV layouts of OPT-13B (layer-major: 80 calls of
    /// 160 KiB per block; block-major: 2 calls of 6.25 MiB) fit back to exactly that model: the
    /// fit's `s_per_chunk` is the model's `per_call_s`.
    #[test]
    fn per_call_copies_fit_back_to_the_pcie_model() {
        use servesim::swap::{Direction, KvLayout, PcieSwap, SwapModel, SwapSpec};
        let spec = SwapSpec {
            latency_s: Some(1e-5),
            per_call_s: Some(4e-6),
            h2d_bytes_per_s: Some(2.4e10),
            d2h_bytes_per_s: Some(2.4e10),
            ..Default::default()
        };
        let chunk = 160u64 << 10;
        let mut rows = Vec::new();
        for (layout, chunk_bytes) in [
            (KvLayout::LayerMajor, chunk),
            (KvLayout::BlockMajor, 40 * chunk),
        ] {
            let m = PcieSwap::resolve(&spec, 1.0, 1, layout, 40).unwrap();
            for blocks in [1u32, 2, 4, 8, 16, 32] {
                let calls = blocks as u64 * m.calls_per_block as u64;
                let bytes = calls * chunk_bytes;
                let t = m.transfer_s(Direction::HostToDevice, bytes, blocks);
                rows.push(row(Op::H2dPinnedMemcpy, calls, chunk_bytes, t));
            }
        }
        let refs: Vec<&Measurement> = rows.iter().collect();
        let f = fit_op(Op::H2dPinnedMemcpy, &refs).unwrap();
        let OpFit::Copy {
            latency_s,
            s_per_chunk,
            bytes_per_s,
        } = f
        else {
            panic!("{f:?}")
        };
        assert!((latency_s / 1e-5 - 1.0).abs() < 1e-3, "{f:?}");
        assert!((s_per_chunk / 4e-6 - 1.0).abs() < 1e-3, "{f:?}");
        assert!((bytes_per_s / 2.4e10 - 1.0).abs() < 1e-3, "{f:?}");
    }

    #[test]
    fn duplicates_merge_into_their_median_and_derived_rows_count_only_alone() {
        let mut rows = vec![
            row(Op::SmallOps, 1, 0, 1.0),
            row(Op::SmallOps, 1, 0, 5.0),
            row(Op::SmallOps, 1, 0, 2.0),
        ];
        let refs: Vec<&Measurement> = rows.iter().collect();
        assert_eq!(merge_points(&refs), vec![(1.0, 0.0, 2.0)]);
        let mut d = row(Op::LmHead, 4, 0, 1.0);
        d.source = "derived:test".into();
        rows.push(d.clone());
        let (r, over) = fit_rows(&rows, Op::LmHead);
        assert_eq!((r.len(), over), (1, "derived"));
        rows.push(row(Op::LmHead, 8, 0, 2.0));
        let (r, over) = fit_rows(&rows, Op::LmHead);
        assert_eq!((r.len(), over), (1, "measured"));
        assert_eq!(r[0].x, 8);
    }

    #[test]
    fn loo_interpolation_is_exact_on_a_linear_ratio() {
        let fit = OpFit::Linear {
            latency_s: 0.0,
            slope_s: 1.0,
        };
        // Measured = fit × (1 + x/100): the ratio is linear in x, so interpolation is exact.
        let rows: Vec<Measurement> = [1u64, 2, 4, 8, 16]
            .iter()
            .map(|&x| row(Op::SmallOps, x, 0, x as f64 * (1.0 + x as f64 / 100.0)))
            .collect();
        let refs: Vec<&Measurement> = rows.iter().collect();
        let e = loo_interp_errors(&fit, &refs, |x, _| x);
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|&v| v < 1e-12), "{e:?}");
    }
}
