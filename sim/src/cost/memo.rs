//! [`Memo`]: a lazily filled table of a pure function's values, shared by the cost models that
//! evaluate the same per-token or per-request terms at every iteration.

use std::sync::atomic::{AtomicU64, Ordering};

/// A table of a pure function's values, `K` 64-bit words per argument (e.g. a few `f64` terms and
/// a bit set computed together), allocated on first use and filled entry by entry. Threads racing
/// on an entry store the same bits; an entry whose first word equals the "unset" mark is simply
/// recomputed each time. Cloning gives an empty table. Constructing one costs nothing, which
/// matters to the fitter (it builds a model per objective evaluation).
pub struct Memo<const K: usize> {
    len: usize,
    cells: std::sync::OnceLock<Box<[[AtomicU64; K]]>>,
}

const UNSET: u64 = u64::MAX;

impl<const K: usize> Memo<K> {
    pub fn new(len: usize) -> Self {
        Memo {
            len,
            cells: std::sync::OnceLock::new(),
        }
    }
    /// The words at `i`, computed by `f` the first time (and every time past the table).
    #[inline]
    pub fn get_or(&self, i: usize, f: impl FnOnce() -> [u64; K]) -> [u64; K] {
        if i >= self.len {
            return f();
        }
        let cells = self.cells.get_or_init(|| {
            (0..self.len)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(UNSET)))
                .collect()
        });
        let entry = &cells[i];
        // The first word is stored last (release) and read first (acquire): once it is set, so
        // are the others.
        if entry[0].load(Ordering::Acquire) != UNSET {
            return std::array::from_fn(|k| entry[k].load(Ordering::Relaxed));
        }
        let v = f();
        for k in 1..K {
            entry[k].store(v[k], Ordering::Relaxed);
        }
        entry[0].store(v[0], Ordering::Release);
        v
    }
}

impl Memo<1> {
    /// [`Memo::get_or`] of one `f64`.
    #[inline]
    pub fn get_f64_or(&self, i: usize, f: impl FnOnce() -> f64) -> f64 {
        f64::from_bits(self.get_or(i, || [f().to_bits()])[0])
    }
}

impl<const K: usize> Clone for Memo<K> {
    fn clone(&self) -> Self {
        Memo::new(self.len)
    }
}

impl<const K: usize> std::fmt::Debug for Memo<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} entries of {K} words)", self.len)
    }
}

/// Per integer argument below `len`, a value computed on first use (e.g. a two-dimensional table
/// evaluated along that argument). Cloning gives an empty table.
pub struct OnceMemo<T> {
    len: usize,
    cells: std::sync::OnceLock<Box<[std::sync::OnceLock<T>]>>,
}

impl<T> OnceMemo<T> {
    pub fn new(len: usize) -> Self {
        OnceMemo {
            len,
            cells: std::sync::OnceLock::new(),
        }
    }
    /// The value at `i`, computed by `f` the first time; `None` past the table.
    #[inline]
    pub fn get(&self, i: usize, f: impl FnOnce() -> T) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let cells = self
            .cells
            .get_or_init(|| (0..self.len).map(|_| std::sync::OnceLock::new()).collect());
        Some(cells[i].get_or_init(f))
    }
}

impl<T> Clone for OnceMemo<T> {
    fn clone(&self) -> Self {
        OnceMemo::new(self.len)
    }
}

impl<T> std::fmt::Debug for OnceMemo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnceMemo({} entries)", self.len)
    }
}
