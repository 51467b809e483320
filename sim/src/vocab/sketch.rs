//! Token-gap statistics: the exact per-request tail ([`TokenGaps`]) and a mergeable streaming
//! quantile sketch for a whole run ([`GapSketch`]).
//!
//! `GapSketch` keeps log-spaced buckets with relative accuracy α = [`ALPHA`] (1 %): with
//! γ = (1 + α) / (1 − α), bucket `i ≥ 0` holds the gaps x (integer nanoseconds) with
//! γ^(i−1) < x ≤ γ^i, and a quantile is answered by the bucket holding the sample of that
//! nearest rank, as the estimate 2γ^i / (γ + 1). Every x in the bucket is within relative
//! error α of that estimate, so each quantile is within α of the true sample at its rank. Zero
//! gaps (impossible in the engine, whose iterations last ≥ 1 ns) have their own exact bucket.
//! The mean is exact (integer sum), and so are the count, minimum and maximum. Memory is one
//! `u64` per bucket from the smallest gap's bucket to the largest's: a few dozen for gaps within
//! a factor 2 of each other, at most ≈ ln(x_max) / ln γ, about 1 400 buckets (11 KiB) for gaps
//! up to 10⁹ s. Insertion is O(1); merging is element-wise addition, so the sketch of
//! several replicas merged in any order is the sketch of all their gaps; a weighted insertion
//! (`add(x, w)`) equals `w` insertions of `x`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use super::time::Ns;

/// The sketch's relative accuracy.
pub const ALPHA: f64 = 0.01;

/// γ = (1 + α) / (1 − α).
fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The tops of the gap buckets, for a bucket lookup without a logarithm or a power.
struct BucketTops {
    /// ⌊γ^i⌋ for the buckets i = 0, 1, … whose ⌊γ^i⌋ is below 2⁵³, from the powers
    /// [`GapSketch::bucket_range_computed`] uses (about 1 800 entries, 14 KiB).
    tops: Vec<Ns>,
    /// `by_log2[e]`: the first bucket whose top is ≥ 2^e (`tops.len()` if none), e = 0..=64.
    by_log2: Vec<usize>,
}

fn bucket_tops() -> &'static BucketTops {
    static TOPS: OnceLock<BucketTops> = OnceLock::new();
    TOPS.get_or_init(|| {
        let g = gamma();
        let tops: Vec<Ns> = (0..)
            .map(|i| g.powi(i).floor())
            .take_while(|&top| top < (1u64 << 53) as f64)
            .map(|top| top as Ns)
            .collect();
        let by_log2 = (0..=64u32)
            .map(|e| tops.partition_point(|&t| (t as u128) < 1u128 << e))
            .collect();
        BucketTops { tops, by_log2 }
    })
}

/// A mergeable, deterministic streaming quantile sketch of gaps in nanoseconds (see the module
/// documentation for its error bound).
#[derive(Debug, Clone, Default)]
pub struct GapSketch {
    /// `buckets[j]`: gaps in (γ^(i−1), γ^i] for i = `base` + j (from the smallest bucket added
    /// to: a replica's sketch holds only the range of its own gaps).
    buckets: Vec<u64>,
    base: usize,
    zeros: u64,
    count: u64,
    sum: u128,
    max: Ns,
    /// The gaps of the last bucket added to, (lo, hi], and its index (consecutive gaps usually
    /// share a bucket): a cache, not part of the sketch's value; (0, 0] holds nothing.
    last: (Ns, Ns, usize),
}

impl PartialEq for GapSketch {
    fn eq(&self, o: &Self) -> bool {
        // Leading and trailing empty buckets do not change the value.
        self.nonzero() == o.nonzero()
            && (self.zeros, self.count, self.sum, self.max) == (o.zeros, o.count, o.sum, o.max)
    }
}

impl Eq for GapSketch {}

impl GapSketch {
    /// The index of the first nonempty bucket and the buckets from it to the last nonempty one.
    fn nonzero(&self) -> (usize, &[u64]) {
        let Some(first) = self.buckets.iter().position(|&c| c != 0) else {
            return (0, &[]);
        };
        let end = self.buckets.len() - self.buckets.iter().rev().take_while(|&&c| c == 0).count();
        (self.base + first, &self.buckets[first..end])
    }

    /// Make bucket `i` (a global index) part of `buckets`; returns its position there.
    fn slot(&mut self, i: usize) -> usize {
        if self.buckets.is_empty() {
            self.base = i;
            self.buckets.push(0);
        } else if i < self.base {
            let grow = self.base - i;
            self.buckets.splice(0..0, std::iter::repeat_n(0, grow));
            self.base = i;
        } else if i - self.base >= self.buckets.len() {
            self.buckets.resize(i - self.base + 1, 0);
        }
        i - self.base
    }

    /// The bucket of a gap x ≥ 1: ⌈ln x / ln γ⌉.
    #[cfg(test)]
    fn bucket(x: Ns) -> usize {
        Self::bucket_range(x).2
    }

    /// The bucket of a gap x ≥ 1 as the integers (lo, hi] it holds, and its index i. Floating-
    /// point rounding near a bucket boundary may put ⌈ln x / ln γ⌉ one bucket off; it is corrected
    /// so that γ^(i−1) < x ≤ γ^i holds as computed with the same powers the estimate uses. An
    /// integer x < 2⁵³ converts to f64 exactly, so x ≤ γ^i ⇔ x ≤ ⌊γ^i⌋ and x > γ^(i−1) ⇔
    /// x > ⌊γ^(i−1)⌋: (lo, hi] = (⌊γ^(i−1)⌋, ⌊γ^i⌋] (lo = 0 for i = 0). Buckets reaching 2⁵³
    /// get the empty range (0, 0].
    fn bucket_range(x: Ns) -> (Ns, Ns, usize) {
        let BucketTops { tops, by_log2 } = bucket_tops();
        if x == 0 || x > tops[tops.len() - 1] {
            return Self::bucket_range_computed(x);
        }
        // γ^(i−1) < x ≤ γ^i ⇔ ⌊γ^(i−1)⌋ < x ≤ ⌊γ^i⌋ for an integer x < 2⁵³: the first top ≥ x,
        // among the tops from the first ≥ 2^e to the first ≥ 2^(e+1), 2^e ≤ x < 2^(e+1).
        let e = x.ilog2() as usize;
        let (lo, hi) = (by_log2[e], (by_log2[e + 1] + 1).min(tops.len()));
        let i = lo + tops[lo..hi].partition_point(|&t| t < x);
        (if i == 0 { 0 } else { tops[i - 1] }, tops[i], i)
    }

    /// [`GapSketch::bucket_range`] computed from ln x and powers of γ (what the table of
    /// [`bucket_tops`] answers without them, up to its last bucket).
    fn bucket_range_computed(x: Ns) -> (Ns, Ns, usize) {
        let g = gamma();
        let i = ((x as f64).ln() / g.ln()).ceil();
        let mut i = i.max(0.0) as usize;
        let below = |i: usize| if i == 0 { 0.0 } else { g.powi(i as i32 - 1) };
        let (mut lo, mut hi) = (below(i), g.powi(i as i32));
        // x ≥ 1 > 0 = below(0): this stops at i = 0 at the latest.
        while (x as f64) <= lo {
            i -= 1;
            (lo, hi) = (below(i), lo);
        }
        while (x as f64) > hi {
            i += 1;
            (lo, hi) = (hi, g.powi(i as i32));
        }
        if hi.floor() >= (1u64 << 53) as f64 {
            return (0, 0, i);
        }
        (lo.floor() as Ns, hi.floor() as Ns, i)
    }

    /// Add `weight` gaps of `x` ns.
    #[inline]
    pub fn add(&mut self, x: Ns, weight: u64) {
        if weight == 0 {
            return;
        }
        self.count += weight;
        self.sum += x as u128 * weight as u128;
        self.max = self.max.max(x);
        let (lo, hi, i) = self.last;
        if lo < x && x <= hi {
            // Bucket `i` is in `buckets`: it was added to before.
            self.buckets[i - self.base] += weight;
        } else {
            self.add_new(x, weight);
        }
    }

    /// [`GapSketch::add`] of a gap outside the last bucket (the counters are already done).
    #[cold]
    fn add_new(&mut self, x: Ns, weight: u64) {
        if x == 0 {
            self.zeros += weight;
            return;
        }
        let (lo, hi, i) = Self::bucket_range(x);
        self.last = (lo, hi, i);
        let j = self.slot(i);
        self.buckets[j] += weight;
    }

    /// Add every gap of `other`.
    pub fn merge(&mut self, other: &GapSketch) {
        let (first, counts) = other.nonzero();
        if let Some(last) = counts.len().checked_sub(1) {
            // Both ends first: at most one move of the buckets.
            self.slot(first);
            let at = self.slot(first + last) - last;
            for (a, b) in self.buckets[at..].iter_mut().zip(counts) {
                *a += b;
            }
        }
        self.zeros += other.zeros;
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Number of gaps.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact mean in ns (`None` when empty).
    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Exact maximum in ns (`None` when empty).
    pub fn max_ns(&self) -> Option<Ns> {
        (self.count > 0).then_some(self.max)
    }

    /// The q-quantile (0 ≤ q ≤ 1) in ns: the estimate of the sample of nearest rank ⌈q·n⌉
    /// (rank 1 for q = 0), within relative error α of it; `None` when empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank <= self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        let g = gamma();
        for (j, &c) in self.buckets.iter().enumerate() {
            seen += c;
            let i = self.base + j;
            if seen >= rank {
                // Never above the exact maximum (the top bucket's estimate may exceed it).
                return Some((2.0 * g.powi(i as i32) / (g + 1.0)).min(self.max as f64));
            }
        }
        unreachable!("the buckets hold every nonzero gap")
    }
}

/// The k of a request with `gaps` token gaps: its nearest-rank p99 (rank ⌈0.99·g⌉) is its k-th
/// largest gap, k = g − ⌈0.99·g⌉ + 1 = ⌊g / 100⌋ + 1 (1 when g = 0).
#[inline]
pub fn p99_top_k(gaps: u32) -> usize {
    if gaps < 100 {
        return 1;
    }
    let g = gaps as u64;
    (g - (99 * g).div_ceil(100) + 1) as usize
}

/// Consecutive equal gaps gathered before they go to a [`GapSketch`] as one weighted insertion:
/// the members of a batch, and the repeats of a fast-forward, mostly share their gap. Call
/// [`GapRun::flush`] when the gaps of a pass are done.
#[derive(Debug, Clone, Copy, Default)]
pub struct GapRun {
    gap: Ns,
    weight: u64,
}

impl GapRun {
    /// `weight` more gaps of `gap` ns; a different gap first sends the run so far to `sketch`.
    #[inline]
    pub fn push(&mut self, sketch: &mut GapSketch, gap: Ns, weight: u64) {
        if gap == self.gap {
            self.weight += weight;
        } else {
            sketch.add(self.gap, self.weight);
            *self = GapRun { gap, weight };
        }
    }

    /// Send the run so far to `sketch`.
    #[inline]
    pub fn flush(self, sketch: &mut GapSketch) {
        sketch.add(self.gap, self.weight);
    }
}

/// One request's exact longest gap and nearest-rank p99 gap, kept streaming: the number of gaps
/// `g` is known on arrival (output tokens − 1), so only the k = ⌊g / 100⌋ + 1 largest gaps are
/// kept (none beyond the maximum while k = 1, i.e. up to 100 output tokens).
#[derive(Debug, Clone, Default)]
pub struct TokenGaps {
    /// The longest gap so far (0: none yet).
    pub max_ns: Ns,
    /// Gaps below this cannot change the record (k = 1: the maximum + 1; k > 1: the smallest
    /// of the k largest + 1 once there are k, else 0), so the hot path is one comparison.
    keep_from: Ns,
    /// How many of the largest gaps the p99 needs (fixed on arrival; 0 behaves as 1).
    k: u32,
    /// The k largest gaps so far as a min-heap (only while k > 1).
    top: BinaryHeap<Reverse<Ns>>,
}

impl TokenGaps {
    /// The record of a request that will have `gaps` token gaps.
    pub fn new(gaps: u32) -> Self {
        TokenGaps {
            k: p99_top_k(gaps) as u32,
            ..TokenGaps::default()
        }
    }

    /// How many of its largest gaps the p99 needs.
    #[inline]
    pub fn k(&self) -> usize {
        (self.k as usize).max(1)
    }

    /// Record one gap.
    #[inline]
    pub fn push(&mut self, gap: Ns) {
        if gap >= self.keep_from {
            if self.k <= 1 {
                // A new maximum (gaps grow with the batch's context: not rare).
                self.max_ns = gap;
                self.keep_from = gap.saturating_add(1);
            } else {
                self.push_top(gap);
            }
        }
    }

    /// [`TokenGaps::push`] of a gap that changes the k > 1 largest.
    #[cold]
    fn push_top(&mut self, gap: Ns) {
        self.max_ns = self.max_ns.max(gap);
        let k = self.k as usize;
        if self.top.len() < k {
            if self.top.capacity() == 0 {
                self.top.reserve_exact(k);
            }
            self.top.push(Reverse(gap));
        } else if let Some(mut least) = self.top.peek_mut()
            && gap > least.0
        {
            *least = Reverse(gap);
        }
        if self.top.len() == k {
            self.keep_from = self.top.peek().map_or(0, |r| r.0.saturating_add(1));
        }
    }

    /// Whether a gap of `gap` ns would change the record (false: [`TokenGaps::push`] would do
    /// nothing, and neither would any smaller gap).
    #[inline]
    pub fn would_keep(&self, gap: Ns) -> bool {
        gap >= self.keep_from
    }

    /// The nearest-rank p99 of the gaps pushed so far, exact once all `g` gaps are in (the k-th
    /// largest; before that, the smallest of the largest ones kept).
    pub fn p99_ns(&self) -> Ns {
        if self.k <= 1 {
            self.max_ns
        } else {
            self.top.peek().map_or(0, |r| r.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn exact(sorted: &[Ns], q: f64) -> Ns {
        let n = sorted.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        sorted[rank - 1]
    }

    fn random_gaps(seed: u64, n: usize) -> Vec<Ns> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                // Log-uniform over 1 ns … 10 s.
                let e = rng.random::<f64>() * 10.0 * std::f64::consts::LN_10;
                e.exp() as Ns
            })
            .collect()
    }

    /// A replica's sketch holds the bucket range of its own gaps (10 ms gaps: ~20 buckets, not
    /// the ~820 from 1 ns up), and merging sketches of disjoint ranges (either way round) equals
    /// adding every gap to one sketch.
    #[test]
    fn a_sketch_holds_only_the_range_of_its_gaps() {
        let mut s = GapSketch::default();
        for x in [10_000_000, 12_000_000, 9_000_000] {
            s.add(x, 1);
        }
        assert!(s.buckets.len() < 40, "{}", s.buckets.len());
        let mut t = GapSketch::default();
        t.add(2_000_000_000, 1);
        t.add(5, 2);
        let mut all = GapSketch::default();
        for (x, w) in [(10_000_000, 1), (5, 2), (12_000_000, 1), (2_000_000_000, 1)] {
            all.add(x, w);
        }
        all.add(9_000_000, 1);
        let (mut st, mut ts) = (s.clone(), t.clone());
        st.merge(&t);
        ts.merge(&s);
        for m in [&st, &ts] {
            assert_eq!(*m, all);
            for q in [0.0, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0] {
                assert_eq!(m.quantile_ns(q), all.quantile_ns(q), "{q}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_alpha_of_the_exact_sample() {
        let mut worst: f64 = 0.0;
        for seed in 0..20 {
            let mut v = random_gaps(seed, 1 + 997 * seed as usize);
            let mut s = GapSketch::default();
            for &x in &v {
                s.add(x, 1);
            }
            v.sort_unstable();
            for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let est = s.quantile_ns(q).unwrap();
                let truth = exact(&v, q) as f64;
                let rel = (est - truth).abs() / truth;
                worst = worst.max(rel);
                assert!(rel <= ALPHA, "seed {seed} q {q}: {est} vs {truth}");
            }
            assert_eq!(s.max_ns(), v.last().copied());
            let mean = v.iter().map(|&x| x as u128).sum::<u128>() as f64 / v.len() as f64;
            assert_eq!(s.mean_ns(), Some(mean));
        }
        println!("sketch: worst relative error {worst:.5} (bound {ALPHA})");
    }

    #[test]
    fn merge_equals_inserting_all_and_weights_equal_repeats() {
        let v = random_gaps(7, 5000);
        let (mut a, mut b, mut all) = (
            GapSketch::default(),
            GapSketch::default(),
            GapSketch::default(),
        );
        for (i, &x) in v.iter().enumerate() {
            let s: &mut GapSketch = if i % 3 == 0 { &mut a } else { &mut b };
            s.add(x, 1);
            all.add(x, 1);
        }
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, all);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ba, all);
        let (mut w, mut r) = (GapSketch::default(), GapSketch::default());
        for (i, &x) in v.iter().take(200).enumerate() {
            let k = (i % 7) as u64;
            w.add(x, k);
            for _ in 0..k {
                r.add(x, 1);
            }
        }
        assert_eq!(w, r);
    }

    /// The table's bucket of a gap is the one computed from ln x and powers of γ: every gap up
    /// to 10⁵, every top of a bucket and its neighbours, and random gaps of every magnitude up to
    /// 2⁶⁴ (past the table's end, where the computation answers).
    #[test]
    fn table_buckets_equal_computed_buckets() {
        let tops = &bucket_tops().tops;
        assert!(tops.len() > 1_000, "{} buckets", tops.len());
        let mut xs: Vec<Ns> = (1..100_000).collect();
        for &t in tops {
            xs.extend([t.saturating_sub(1).max(1), t, t + 1]);
        }
        let mut r = crate::rng::XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let bits = r.below(64) as u32;
            xs.push(r.below(u64::MAX) >> (63 - bits).min(63) | 1);
        }
        xs.push(Ns::MAX);
        for x in xs {
            assert_eq!(
                GapSketch::bucket_range(x),
                GapSketch::bucket_range_computed(x),
                "gap {x}"
            );
        }
    }

    #[test]
    fn zeros_and_bucket_edges() {
        let mut s = GapSketch::default();
        assert_eq!(s.quantile_ns(0.5), None);
        s.add(0, 3);
        s.add(1, 1);
        assert_eq!(s.quantile_ns(0.5), Some(0.0));
        assert!((s.quantile_ns(1.0).unwrap() - 1.0).abs() <= ALPHA);
        let mut x: Ns = 1;
        while x < 1 << 60 {
            let (lo, hi, i) = GapSketch::bucket_range(x);
            assert!(hi == 0 || (lo < x && x <= hi), "{x}: ({lo}, {hi}]");
            for y in [lo, lo + 1, hi, hi + 1] {
                assert!(y == 0 || hi == 0 || (lo < y && y <= hi) == (GapSketch::bucket(y) == i));
            }
            x += x / 37 + 1;
        }
        for x in 1..20_000u64 {
            let i = GapSketch::bucket(x);
            let g = gamma();
            assert!(
                (x as f64) <= g.powi(i as i32) && (i == 0 || (x as f64) > g.powi(i as i32 - 1))
            );
        }
    }

    #[test]
    fn per_request_p99_is_the_nearest_rank_sample() {
        assert_eq!(p99_top_k(0), 1);
        assert_eq!(p99_top_k(99), 1);
        assert_eq!(p99_top_k(100), 2);
        assert_eq!(p99_top_k(199), 2);
        assert_eq!(p99_top_k(200), 3);
        for (seed, g) in [
            (1u64, 1usize),
            (2, 50),
            (3, 100),
            (4, 101),
            (5, 999),
            (6, 4321),
        ] {
            let v = random_gaps(seed, g);
            let mut t = TokenGaps::new(g as u32);
            assert_eq!(t.k(), p99_top_k(g as u32));
            for &x in &v {
                t.push(x);
            }
            let mut sorted = v.clone();
            sorted.sort_unstable();
            assert_eq!(t.p99_ns(), exact(&sorted, 0.99), "g = {g}");
            assert_eq!(t.max_ns, *sorted.last().unwrap());
        }
    }
}
