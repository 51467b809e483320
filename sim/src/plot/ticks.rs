//! Axis ticks chosen here rather than by plotters: a log axis whose data stay within one decade
//! still gets labelled ticks (1-2-5 steps, or linear steps between the ends), the rate axis gets
//! ticks at the data's rates, and every label is short (`1000`, `0.5`, `1e-3`).

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight, Ranged};
use plotters::prelude::*;

/// At least this many labelled ticks on an axis when the generator can place them.
const MIN_TICKS: usize = 3;
/// At most this many labelled ticks (more decades are thinned to every k-th).
const MAX_TICKS: usize = 12;

/// `mantissa`·10^`exponent` as the double nearest the decimal (no `0.30000000000000004`).
fn decimal(mantissa: i64, exponent: i32) -> f64 {
    format!("{mantissa}e{exponent}").parse().unwrap_or(0.0)
}

/// Ticks of a linear axis over `lo..=hi`: multiples of a 1-2-5 step, about `target` of them.
/// Always non-empty for finite input (`[lo]` when the range is empty or not finite).
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![if lo.is_finite() { lo } else { 0.0 }];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exponent = raw.log10().floor() as i32;
    let unit = decimal(1, exponent);
    let m = [1i64, 2, 5, 10]
        .into_iter()
        .find(|&m| m as f64 * unit >= raw * (1.0 - 1e-9))
        .unwrap_or(10);
    let step = m as f64 * unit;
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return vec![lo, hi];
    }
    let (first, last) = (first as i64, last as i64);
    let out: Vec<f64> = (first..=last).map(|k| decimal(k * m, exponent)).collect();
    if out.is_empty() { vec![lo] } else { out }
}

/// Ticks of a log axis over `lo..=hi` (both > 0): decades when the range spans enough of them,
/// else 1-2-5 (or 1-2-3-5, 1-1.5-2-3-5-7) multiples of the decades, else linear ticks between
/// the ends, so that data within one decade still get at least [`MIN_TICKS`] labels where the
/// range allows it. At most [`MAX_TICKS`].
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || lo <= 0.0 || hi <= lo {
        return linear_ticks(lo.max(f64::MIN_POSITIVE), hi, 5);
    }
    let d0 = lo.log10().floor() as i32;
    let d1 = hi.log10().ceil() as i32;
    // Mantissas ×10 so that 1.5 is an integer.
    const SETS: [&[i64]; 4] = [
        &[10],
        &[10, 20, 50],
        &[10, 20, 30, 50],
        &[10, 15, 20, 30, 50, 70],
    ];
    for set in SETS {
        let ticks: Vec<f64> = (d0..=d1)
            .flat_map(|d| set.iter().map(move |&m| decimal(m, d - 1)))
            .filter(|&v| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9))
            .collect();
        if ticks.len() >= MIN_TICKS {
            let k = ticks.len().div_ceil(MAX_TICKS - 2);
            return ticks.into_iter().step_by(k.max(1)).collect();
        }
    }
    let t: Vec<f64> = linear_ticks(lo, hi, 5)
        .into_iter()
        .filter(|&v| v > 0.0)
        .collect();
    if t.is_empty() { vec![lo] } else { t }
}

/// The light grid lines of a log axis: 1..9 × each decade within `lo..=hi` (none beyond 100).
fn log_minor(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || lo <= 0.0 || hi <= lo {
        return Vec::new();
    }
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    if d1 - d0 > 11 {
        return Vec::new();
    }
    (d0..=d1)
        .flat_map(|d| (1..10).map(move |m| decimal(m, d)))
        .filter(|&v| v >= lo && v <= hi)
        .collect()
}

/// Ticks at the data's `rates` when there are at most [`MAX_TICKS`] distinct ones (a rate
/// closer than 4 % of the axis span to the previous tick is skipped, so labels do not
/// overlap); otherwise linear ticks over `lo..=hi`.
pub fn rate_ticks(rates: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let mut r: Vec<f64> = rates.iter().copied().filter(|v| v.is_finite()).collect();
    r.sort_by(f64::total_cmp);
    r.dedup();
    if r.is_empty() || r.len() > MAX_TICKS {
        return linear_ticks(lo, hi, 8);
    }
    let gap = (hi - lo).abs() * 0.04;
    let mut out: Vec<f64> = Vec::new();
    for v in r {
        if out.last().is_none_or(|&p| v - p >= gap) {
            out.push(v);
        }
    }
    out
}

/// A short tick label: `0`, `1000`, `12.5`, `0.05`; scientific (`1e-3`, `2.5e6`) below 0.01 and
/// from 1e5 up. Never a trailing `.0`.
pub fn format_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_nan() { "NaN".into() } else { "0".into() };
    }
    let a = v.abs();
    if !(1e-2..1e5).contains(&a) {
        // Rust's `{:e}` is the shortest round-trip form: `1e-3`, `2.5e6`.
        return format!("{v:e}");
    }
    let decimals = (5 - a.log10().floor() as i32).clamp(0, 10) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A 1-D axis `inner` with its labelled ticks (`major`, bold grid lines) and light grid lines
/// (`minor`) given here instead of by plotters.
#[derive(Clone)]
pub struct Ticked<R> {
    inner: R,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ticked<plotters::coord::types::RangedCoordf64> {
    /// A linear axis over `range` with ticks `major` and no light grid lines.
    pub fn linear(range: Range<f64>, major: Vec<f64>) -> Self {
        Ticked {
            inner: range.into(),
            major,
            minor: Vec::new(),
        }
    }

    /// A linear axis over `range` with [`linear_ticks`] and light lines at fifths of a step.
    pub fn linear_auto(range: Range<f64>) -> Self {
        let major = linear_ticks(range.start, range.end, 6);
        let minor = linear_ticks(range.start, range.end, 30);
        Ticked {
            inner: range.into(),
            major,
            minor,
        }
    }
}

impl Ticked<LogCoord<f64>> {
    /// A log axis over `range` (start > 0) with [`log_ticks`].
    pub fn log(range: Range<f64>) -> Self {
        let major = log_ticks(range.start, range.end);
        let minor = log_minor(range.start, range.end);
        Ticked {
            inner: range.log_scale().into(),
            major,
            minor,
        }
    }
}

impl<R> Ticked<R> {
    /// The labelled ticks.
    pub fn major(&self) -> &[f64] {
        &self.major
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.major.clone(),
            KeyPointWeight::Any => self.minor.clone(),
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(t: &[f64]) -> Vec<String> {
        t.iter().map(|&v| format_tick(v)).collect()
    }

    #[test]
    fn one_decade_log_axes_get_labelled_ticks() {
        for (lo, hi) in [
            (9.3, 12.0),
            (20.0, 80.0),
            (0.027, 0.05),
            (1.2, 9.0),
            (300.0, 2000.0),
            (0.5, 0.51),
            (1e-4, 3e-4),
        ] {
            let t = log_ticks(lo, hi);
            assert!(t.len() >= 2, "{lo}..{hi}: {t:?}");
            assert!(t.len() <= MAX_TICKS, "{lo}..{hi}: {t:?}");
            assert!(
                t.iter().all(|&v| v >= lo * 0.999 && v <= hi * 1.001),
                "{t:?}"
            );
            let l = labels(&t);
            let mut d = l.clone();
            d.dedup();
            assert_eq!(d.len(), l.len(), "distinct labels: {l:?}");
        }
        assert_eq!(labels(&log_ticks(20.0, 80.0)), ["20", "30", "50"]);
        assert_eq!(
            labels(&log_ticks(1.0, 1e4)),
            ["1", "10", "100", "1000", "10000"]
        );
        assert_eq!(
            labels(&log_ticks(0.02, 0.9)),
            ["0.02", "0.05", "0.1", "0.2", "0.5"]
        );
    }

    #[test]
    fn many_decades_are_thinned() {
        let t = log_ticks(1e-30, 1e30);
        assert!(t.len() <= MAX_TICKS && t.len() >= MIN_TICKS, "{t:?}");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(format_tick(1000.0), "1000");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(0.001), "1e-3");
        assert_eq!(format_tick(2.5e6), "2.5e6");
        assert_eq!(format_tick(1e5), "1e5");
        assert_eq!(format_tick(12.5), "12.5");
        assert_eq!(format_tick(0.05), "0.05");
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(-3.0), "-3");
        assert_eq!(format_tick(0.1 + 0.2), "0.3");
    }

    #[test]
    fn linear_ticks_are_round() {
        assert_eq!(
            labels(&linear_ticks(0.0, 1.0, 5)),
            ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        assert_eq!(linear_ticks(3.0, 3.0, 5), [3.0]);
        assert_eq!(linear_ticks(f64::NAN, 1.0, 5), [0.0]);
        assert!(!linear_ticks(1e-300, 1e300, 5).is_empty());
    }

    #[test]
    fn rate_ticks_fall_on_the_rates() {
        let r = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 0.5];
        assert_eq!(rate_ticks(&r, 0.2, 1.55), [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]);
        // 0.25 is too close to 0.1 on a 0.1..9.9 axis; the rest are kept.
        let r = [0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0];
        assert_eq!(
            rate_ticks(&r, 0.1, 9.9),
            [0.1, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0]
        );
        let many: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(rate_ticks(&many, 1.0, 20.0), [5.0, 10.0, 15.0, 20.0]);
    }
}
