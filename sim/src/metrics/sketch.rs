//! A mergeable streaming quantile sketch of non-negative values (seconds) for the summaries of a
//! run that keeps no per-request rows (`--no-requests-csv`).
//!
//! Log-spaced buckets with relative accuracy α = [`ALPHA`]: with γ = (1 + α) / (1 − α), bucket
//! `i` (any integer) holds the values x with γ^(i−1) < x ≤ γ^i, estimated as 2γ^i / (γ + 1);
//! every x in the bucket is within relative error α of that estimate. Zero has its own exact
//! bucket. A quantile interpolates between the estimates of the two order statistics around
//! its position the way [`crate::trace::stats::quantile`] (numpy's default) does between the
//! exact ones: both weights are non-negative, so the result is within α of the exact quantile
//! (up to floating-point rounding, ~10⁻¹⁵ relative). Estimates are clamped to the exact minimum
//! and maximum, which only brings them closer. The count, minimum and maximum are exact; the
//! mean is a compensated (Neumaier) sum, exact to about one rounding. Memory: one `u64` per
//! bucket between the smallest and largest nonzero value, ≈ 115 buckets per decade (α = 1 %).
//! Merging adds bucket counts: the sketch of several runs merged in any order is the sketch of
//! all their values.

/// The sketch's relative accuracy (the same as the run's ITL sketch).
pub const ALPHA: f64 = crate::vocab::sketch::ALPHA;

/// How `summary.json` names percentiles that come from this sketch.
pub fn describe() -> String {
    format!("sketch(alpha={ALPHA})")
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The smallest and largest power of γ in [`powers`] (γ^±2000 ≈ 2·10^±17 seconds).
const POW_LO: i32 = -2000;
const POW_HI: i32 = 2000;

/// 2^±`LOG2_SPAN` lies beyond γ^±2000.
const LOG2_SPAN: usize = 64;

/// Powers of γ, for a value's bucket without a logarithm or a power.
struct Powers {
    /// γ^i for i = `POW_LO` ..= `POW_HI` (32 KiB), the powers [`ValueSketch::index_computed`]
    /// uses.
    p: Vec<f64>,
    /// `by_log2[e + LOG2_SPAN]`: the first entry of `p` ≥ 2^e (`p.len()` if none).
    by_log2: Vec<usize>,
}

fn powers() -> &'static Powers {
    static POWERS: std::sync::OnceLock<Powers> = std::sync::OnceLock::new();
    POWERS.get_or_init(|| {
        let g = gamma();
        let p: Vec<f64> = (POW_LO..=POW_HI).map(|i| g.powi(i)).collect();
        let span = LOG2_SPAN as i32;
        let by_log2 = (-span..=span)
            .map(|e| p.partition_point(|&q| q < 2f64.powi(e)))
            .collect();
        Powers { p, by_log2 }
    })
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueSketch {
    /// `buckets[j]`: values in (γ^(i−1), γ^i] for i = `offset` + j.
    buckets: Vec<u64>,
    offset: i32,
    zeros: u64,
    count: u64,
    /// Neumaier sum: running sum and compensation.
    sum: f64,
    comp: f64,
    min: f64,
    max: f64,
}

impl ValueSketch {
    /// The bucket index of x > 0: ⌈ln x / ln γ⌉, corrected so that γ^(i−1) < x ≤ γ^i holds with
    /// the same powers the estimate uses.
    fn index(x: f64) -> i32 {
        let Powers { p, by_log2 } = powers();
        if x > p[0] && x <= p[p.len() - 1] {
            // The first i with x ≤ γ^i (above POW_LO: x > γ^POW_LO), among the powers from the
            // first ≥ 2^e to the first ≥ 2^(e+1), 2^e ≤ x < 2^(e+1) (x is a normal number).
            let e = ((x.to_bits() >> 52) & 0x7ff) as usize - 1023 + LOG2_SPAN;
            let (lo, hi) = (by_log2[e], (by_log2[e + 1] + 1).min(p.len()));
            return POW_LO + (lo + p[lo..hi].partition_point(|&q| q < x)) as i32;
        }
        Self::index_computed(x)
    }

    /// [`ValueSketch::index`] from ln x and powers of γ (what the table of [`powers`] answers
    /// without them, inside its range).
    fn index_computed(x: f64) -> i32 {
        let g = gamma();
        let mut i = (x.ln() / g.ln()).ceil() as i32;
        while x <= g.powi(i - 1) {
            i -= 1;
        }
        while x > g.powi(i) {
            i += 1;
        }
        i
    }

    /// Add one value (negative or NaN values count as zero: none occur in a run).
    #[inline]
    pub fn add(&mut self, x: f64) {
        let x = if x > 0.0 { x } else { 0.0 };
        if self.count == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let t = self.sum + x;
        self.comp += if self.sum.abs() >= x {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
        if x == 0.0 {
            self.zeros += 1;
            return;
        }
        let i = Self::index(x);
        self.bump(i, 1);
    }

    /// Add `n` to bucket `i`, growing the bucket vector on either side.
    fn bump(&mut self, i: i32, n: u64) {
        if self.buckets.is_empty() {
            self.offset = i;
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.buckets.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        }
        let j = (i - self.offset) as usize;
        if j >= self.buckets.len() {
            self.buckets.resize(j + 1, 0);
        }
        self.buckets[j] += n;
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &ValueSketch) {
        if other.count == 0 {
            return;
        }
        for (j, &n) in other.buckets.iter().enumerate() {
            if n > 0 {
                self.bump(other.offset + j as i32, n);
            }
        }
        if self.count == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.zeros += other.zeros;
        self.count += other.count;
        let (s, c) = (self.sum + other.sum, self.comp + other.comp);
        self.comp = c + ((self.sum - s) + other.sum);
        self.sum = s;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean (`None` when empty).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.sum + self.comp) / self.count as f64)
    }

    /// The exact maximum (`None` when empty).
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The estimate of the order statistic of 0-based rank `r` < count, within α of it.
    fn order_stat(&self, r: u64) -> f64 {
        if r < self.zeros {
            return 0.0;
        }
        let g = gamma();
        let mut seen = self.zeros;
        for (j, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > r {
                let i = self.offset + j as i32;
                return (2.0 * g.powi(i) / (g + 1.0)).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The q-quantile (0 ≤ q ≤ 1), interpolated between order statistics like
    /// [`crate::trace::stats::quantile`]; within α of it. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let pos = q.clamp(0.0, 1.0) * (self.count - 1) as f64;
        let (lo, hi) = (pos.floor(), pos.ceil());
        let (a, b) = (self.order_stat(lo as u64), self.order_stat(hi as u64));
        Some(a + (b - a) * (pos - lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::stats::quantile;
    use proptest::prelude::*;

    fn check(values: &[f64]) -> std::result::Result<(), TestCaseError> {
        let mut s = ValueSketch::default();
        for &x in values {
            s.add(x);
        }
        let mut v = values.to_vec();
        v.sort_unstable_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = quantile(&v, q);
            let est = s.quantile(q).unwrap();
            // α, plus float rounding of the powers of γ.
            prop_assert!(
                (est - exact).abs() <= ALPHA * exact * (1.0 + 1e-9),
                "q {q}: {est} vs {exact}"
            );
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        prop_assert!((s.mean().unwrap() - mean).abs() <= 1e-12 * mean.abs().max(1e-300));
        prop_assert_eq!(s.max(), v.last().copied());
        prop_assert_eq!(s.count(), v.len() as u64);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Relative error ≤ α against numpy-style exact quantiles, over values spanning many
        /// decades (log-uniform) with zeros and repeats mixed in.
        #[test]
        fn quantiles_within_alpha(
            exps in prop::collection::vec((-12.0f64..6.0, 0u8..10), 1..400)
        ) {
            let values: Vec<f64> = exps
                .iter()
                .map(|&(e, k)| if k == 0 { 0.0 } else if k == 1 { 1.0 } else { 10f64.powf(e) })
                .collect();
            check(&values)?;
        }

        /// Merging two sketches equals sketching the concatenation (order-independent).
        #[test]
        fn merge_is_concatenation(
            a in prop::collection::vec(1e-9f64..1e3, 0..100),
            b in prop::collection::vec(1e-9f64..1e3, 0..100),
        ) {
            let sk = |v: &[f64]| {
                let mut s = ValueSketch::default();
                v.iter().for_each(|&x| s.add(x));
                s
            };
            let mut m = sk(&b);
            m.merge(&sk(&a));
            let all = sk(&[a.clone(), b.clone()].concat());
            prop_assert_eq!(&m.buckets, &all.buckets);
            prop_assert_eq!((m.count, m.zeros, m.offset), (all.count, all.zeros, all.offset));
            for q in [0.0, 0.5, 0.99, 1.0] {
                prop_assert_eq!(m.quantile(q), all.quantile(q));
            }
        }
    }

    #[test]
    fn bucket_boundaries_hold() {
        let g = gamma();
        for i in -2000..2000 {
            let b = g.powi(i);
            for x in [b, b * (1.0 + 1e-15), b * (1.0 - 1e-15)] {
                let j = ValueSketch::index(x);
                assert!(g.powi(j - 1) < x && x <= g.powi(j), "{x}");
            }
        }
    }

    /// The table's bucket of a value is the one computed from ln x and powers of γ: at every
    /// power of γ in the table and beyond, its neighbours, and random values of every magnitude.
    #[test]
    fn table_index_equals_computed_index() {
        let g = gamma();
        let mut xs = Vec::new();
        for i in POW_LO - 50..POW_HI + 50 {
            let b = g.powi(i);
            xs.extend([
                b,
                b.next_up(),
                b.next_down(),
                b * (1.0 + 1e-9),
                b * (1.0 - 1e-9),
            ]);
        }
        let mut r = crate::rng::XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let e = r.below(120) as i32 - 60;
            xs.push((1.0 + r.below(1 << 40) as f64 / (1u64 << 40) as f64) * 10f64.powi(e));
        }
        xs.extend([f64::MIN_POSITIVE, 1e-300, 1e300, f64::MAX]);
        for x in xs {
            assert_eq!(ValueSketch::index(x), ValueSketch::index_computed(x), "{x}");
        }
    }

    #[test]
    fn empty_and_single() {
        let s = ValueSketch::default();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.mean(), None);
        let mut s = ValueSketch::default();
        s.add(0.25);
        assert_eq!(s.quantile(0.5), Some(0.25)); // clamped to the exact min = max
        assert_eq!(s.mean(), Some(0.25));
    }
}
