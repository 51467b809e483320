//! A tournament tree over one score per replica: the replica with the smallest score in O(1), a
//! changed score in O(log replicas). The load-aware routers keep one and rescore only the replicas
//! whose load changed since their previous decision ([`ClusterView::changed`]), so a decision over
//! N replicas costs O(changed · log N) instead of O(N).
//!
//! The winner is exactly that of [`ClusterView::argmin_by`]'s linear scan (`<` on `f64`): the
//! smallest score, ties (`-0.0` = `0.0` included) to the lowest index; a NaN score never wins
//! unless it is replica 0's, which the scan keeps whatever follows.

use super::{ClusterView, ReplicaLoad};

/// The tree: `win[1]` is the overall winner, `win[p]` the winner of node `p`'s leaves, leaf `i` is
/// node `size + i`. Padding leaves (index ≥ replicas) score NaN and lose every tie.
#[derive(Debug, Clone, Default)]
pub struct MinTree {
    size: usize,
    scores: Vec<f64>,
    win: Vec<u32>,
    /// Tree nodes recomputed so far (the cost of updates, for tests).
    pub(crate) node_updates: u64,
}

/// Whether leaf `b` beats leaf `a` (`a < b`): a strictly smaller score, or a number against NaN.
#[inline]
fn beats(b_score: f64, a_score: f64) -> bool {
    b_score < a_score || (a_score.is_nan() && !b_score.is_nan())
}

impl MinTree {
    /// A tree over `scores` (one per replica, at least one).
    pub fn new(scores: &[f64]) -> Self {
        let size = scores.len().max(1).next_power_of_two();
        let mut t = MinTree {
            size,
            scores: vec![f64::NAN; size],
            win: vec![0; 2 * size],
            node_updates: 0,
        };
        t.scores[..scores.len()].copy_from_slice(scores);
        for i in 0..size {
            t.win[size + i] = i as u32;
        }
        for p in (1..size).rev() {
            t.win[p] = t.pick(p);
        }
        t
    }

    /// The winner of node `p`'s two children.
    #[inline]
    fn pick(&self, p: usize) -> u32 {
        let (a, b) = (self.win[2 * p], self.win[2 * p + 1]);
        if beats(self.scores[b as usize], self.scores[a as usize]) {
            b
        } else {
            a
        }
    }

    /// Leaves, padding included.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// Replace replica `i`'s score: O(log replicas).
    pub fn set(&mut self, i: usize, score: f64) {
        self.scores[i] = score;
        let mut p = (self.size + i) / 2;
        while p >= 1 {
            self.win[p] = self.pick(p);
            self.node_updates += 1;
            p /= 2;
        }
    }

    /// The replica with the smallest score (ties to the lowest index; see the module comment).
    pub fn argmin(&self) -> usize {
        if self.scores[0].is_nan() {
            return 0;
        }
        self.win[1] as usize
    }
}

/// A [`MinTree`] kept in step with a cluster: what a load-aware router holds.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    tree: MinTree,
    /// Replicas the tree covers (0 = not built yet).
    replicas: usize,
}

impl Scores {
    /// The replica with the smallest `score`, ties to the lowest index, rescoring only the
    /// replicas [`ClusterView::changed`] names (every replica on the first call, after a change of
    /// cluster size, or when the view does not know).
    pub fn argmin<'a>(
        &mut self,
        cluster: &ClusterView<'a>,
        mut score: impl FnMut(usize, ReplicaLoad<'a>) -> f64,
    ) -> usize {
        let n = cluster.replicas();
        match cluster.changed() {
            Some(changed) if self.replicas == n => {
                for &r in changed {
                    let r = r as usize;
                    self.tree.set(r, score(r, cluster.replica(r)));
                }
            }
            _ => {
                let all: Vec<f64> = (0..n).map(|r| score(r, cluster.replica(r))).collect();
                let updates = self.tree.node_updates;
                self.tree = MinTree::new(&all);
                self.tree.node_updates = updates + self.tree.capacity() as u64;
                self.replicas = n;
            }
        }
        self.tree.argmin()
    }

    /// Tree nodes recomputed so far.
    pub fn node_updates(&self) -> u64 {
        self.tree.node_updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`ClusterView::argmin_by`]'s scan over plain scores.
    fn scan(scores: &[f64]) -> usize {
        let mut best = 0;
        for (r, &s) in scores.iter().enumerate().skip(1) {
            if s < scores[best] {
                best = r;
            }
        }
        best
    }

    /// A small deterministic generator.
    fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |m| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        }
    }

    /// Scores drawn from a few values, so ties are frequent; both zeros, infinity and NaN.
    const VALUES: [f64; 8] = [0.0, -0.0, 0.25, 0.5, 1.0, 3.0, f64::INFINITY, f64::NAN];

    #[test]
    fn winner_equals_the_linear_scan_under_random_updates() {
        for n in [1usize, 2, 3, 5, 8, 13, 64, 100, 257] {
            let mut next = lcg(n as u64);
            let mut scores: Vec<f64> = (0..n).map(|_| VALUES[next(6) as usize]).collect();
            let mut t = MinTree::new(&scores);
            assert_eq!(t.argmin(), scan(&scores), "n = {n}");
            let levels = t.capacity().trailing_zeros() as u64;
            for step in 0..2000 {
                let i = next(n as u64) as usize;
                // NaN and infinity rarely, so that they also sit at replica 0 sometimes.
                let v = VALUES[next(if step % 50 == 0 { 8 } else { 6 }) as usize];
                scores[i] = v;
                let before = t.node_updates;
                t.set(i, v);
                assert_eq!(t.node_updates - before, levels);
                assert_eq!(
                    t.argmin(),
                    scan(&scores),
                    "n = {n}, step {step}: {scores:?}"
                );
            }
        }
    }

    #[test]
    fn ties_go_to_the_lowest_index_and_nan_never_wins_but_at_zero() {
        let t = MinTree::new(&[2.0, 1.0, 1.0, 5.0, 1.0]);
        assert_eq!(t.argmin(), 1);
        // -0.0 and 0.0 are equal, as for `<`.
        assert_eq!(MinTree::new(&[1.0, 0.0, -0.0]).argmin(), 1);
        assert_eq!(MinTree::new(&[1.0, -0.0, 0.0]).argmin(), 1);
        assert_eq!(MinTree::new(&[3.0, f64::NAN, 2.0]).argmin(), 2);
        assert_eq!(MinTree::new(&[f64::NAN, 1.0, 0.5]).argmin(), 0);
        assert_eq!(MinTree::new(&[4.0, f64::NAN, f64::NAN]).argmin(), 0);
        let mut t = MinTree::new(&[f64::NAN, f64::NAN, f64::NAN]);
        assert_eq!(t.argmin(), 0);
        t.set(0, 7.0);
        t.set(2, 6.0);
        assert_eq!(t.argmin(), 2);
        t.set(1, 6.0);
        assert_eq!(t.argmin(), 1);
    }
}
