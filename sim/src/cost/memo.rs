//! [`Memo`]: a lazily filled table of a pure function's values, shared by the cost models that
//! evaluate the same per-token or per-request terms at every iteration.

use std::sync::atomic::{AtomicU64, Ordering};

/// A table of a pure function's values, allocated on first use and filled entry by entry (threads
/// racing on an entry store the same bits; a value whose bits equal the "unset" mark is simply
/// recomputed each time). Cloning gives an empty table. Constructing one costs nothing, which
/// matters to the fitter (it builds a model per objective evaluation).
pub struct Memo {
    len: usize,
    cells: std::sync::OnceLock<Box<[AtomicU64]>>,
}

const UNSET: u64 = u64::MAX;

impl Memo {
    pub fn new(len: usize) -> Self {
        Memo {
            len,
            cells: std::sync::OnceLock::new(),
        }
    }
    /// The value at `i`, computed by `f` the first time (and every time past the table).
    #[inline]
    pub fn get_or(&self, i: usize, f: impl FnOnce() -> f64) -> f64 {
        f64::from_bits(self.get_bits_or(i, || f().to_bits()))
    }
    /// [`Memo::get_or`] for any 64-bit value (e.g. a bit set); `u64::MAX` is never remembered.
    #[inline]
    pub fn get_bits_or(&self, i: usize, f: impl FnOnce() -> u64) -> u64 {
        if i >= self.len {
            return f();
        }
        let cells = self
            .cells
            .get_or_init(|| (0..self.len).map(|_| AtomicU64::new(UNSET)).collect());
        let bits = cells[i].load(Ordering::Relaxed);
        if bits != UNSET {
            return bits;
        }
        let v = f();
        cells[i].store(v, Ordering::Relaxed);
        v
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::new(self.len)
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} entries)", self.len)
    }
}

/// Per integer argument below `len`, a slice of values computed on first use (e.g. every row of a
/// two-dimensional table evaluated at that argument). Cloning gives an empty table.
pub struct SliceMemo {
    len: usize,
    cells: std::sync::OnceLock<Slices>,
}

/// One lazily computed slice per argument.
type Slices = Box<[std::sync::OnceLock<Box<[f64]>>]>;

impl SliceMemo {
    pub fn new(len: usize) -> Self {
        SliceMemo {
            len,
            cells: std::sync::OnceLock::new(),
        }
    }
    /// The slice at `i`, computed by `f` the first time; `None` past the table.
    #[inline]
    pub fn get(&self, i: usize, f: impl FnOnce() -> Box<[f64]>) -> Option<&[f64]> {
        if i >= self.len {
            return None;
        }
        let cells = self
            .cells
            .get_or_init(|| (0..self.len).map(|_| std::sync::OnceLock::new()).collect());
        Some(cells[i].get_or_init(f))
    }
}

impl Clone for SliceMemo {
    fn clone(&self) -> Self {
        SliceMemo::new(self.len)
    }
}

impl std::fmt::Debug for SliceMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SliceMemo({} entries)", self.len)
    }
}
