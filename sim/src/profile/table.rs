//! Piecewise-linear tables over measured grids, with an "inside the grid" answer for every query.
//!
//! The `profile` cost model interpolates the ratio measured / fitted of each operator in these
//! tables: at a measured point it reproduces the measurement, between points it interpolates
//! linearly, and outside the grid the ratio stays at its edge value so that the fitted form (the
//! physics) carries the extrapolation — which the caller counts.

/// Relative slack when deciding whether a query lies on the grid edge.
const EDGE_SLACK: f64 = 1e-9;

/// `v(x)`, piecewise linear between distinct sorted `xs`, constant beyond the ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Table1 {
    xs: Vec<f64>,
    vs: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl Table1 {
    /// Build from `(x, v)` points; points sharing an `x` are merged into their median. `None`
    /// without points or with a non-finite value.
    pub fn new(mut points: Vec<(f64, f64)>) -> Option<Table1> {
        if points.is_empty() || points.iter().any(|(x, v)| !x.is_finite() || !v.is_finite()) {
            return None;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut xs = Vec::new();
        let mut vs = Vec::new();
        let mut i = 0;
        while i < points.len() {
            let x = points[i].0;
            let mut same: Vec<f64> = Vec::new();
            while i < points.len() && points[i].0 == x {
                same.push(points[i].1);
                i += 1;
            }
            xs.push(x);
            vs.push(median(&mut same));
        }
        Some(Table1 { xs, vs })
    }

    pub fn range(&self) -> (f64, f64) {
        (self.xs[0], *self.xs.last().expect("non-empty"))
    }

    pub fn len(&self) -> usize {
        self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    /// Whether `x` lies within the measured range.
    pub fn covers(&self, x: f64) -> bool {
        let (lo, hi) = self.range();
        x >= lo * (1.0 - EDGE_SLACK) && x <= hi * (1.0 + EDGE_SLACK)
    }

    /// The interpolated value at `x` (constant beyond the ends).
    pub fn value(&self, x: f64) -> f64 {
        let n = self.xs.len();
        if x <= self.xs[0] {
            return self.vs[0];
        }
        if x >= self.xs[n - 1] {
            return self.vs[n - 1];
        }
        // First index with xs[i] > x; 1 ≤ i ≤ n − 1 here.
        let i = self.xs.partition_point(|&v| v <= x);
        let (x0, x1) = (self.xs[i - 1], self.xs[i]);
        let w = (x - x0) / (x1 - x0);
        self.vs[i - 1] + (self.vs[i] - self.vs[i - 1]) * w
    }

    /// `(value, inside the measured range)`.
    pub fn eval(&self, x: f64) -> (f64, bool) {
        (self.value(x), self.covers(x))
    }
}

/// `v(x, y)` over rows of constant `y` (each a [`Table1`] in `x`): interpolated in `x` within the
/// two rows that bracket `y`, then linearly in `y` between them; constant beyond the first and
/// last rows. The rows need not share their `x` values (scattered measurements).
#[derive(Debug, Clone, PartialEq)]
pub struct Table2 {
    rows: Vec<(f64, Table1)>,
}

impl Table2 {
    /// Build from `(x, y, v)` points. `None` without points or with a non-finite value.
    pub fn new(mut points: Vec<(f64, f64, f64)>) -> Option<Table2> {
        if points.is_empty() || points.iter().any(|p| !p.1.is_finite()) {
            return None;
        }
        points.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
        let mut rows = Vec::new();
        let mut i = 0;
        while i < points.len() {
            let y = points[i].1;
            let mut row = Vec::new();
            while i < points.len() && points[i].1 == y {
                row.push((points[i].0, points[i].2));
                i += 1;
            }
            rows.push((y, Table1::new(row)?));
        }
        Some(Table2 { rows })
    }

    /// `(y_min, y_max)` over the rows.
    pub fn y_range(&self) -> (f64, f64) {
        (self.rows[0].0, self.rows.last().expect("non-empty").0)
    }

    /// `(value, inside)`: inside when `y` lies within the rows and `x` within the x range spanned
    /// by the two bracketing rows together (the bounding box of the neighbouring measurements).
    pub fn eval(&self, x: f64, y: f64) -> (f64, bool) {
        let n = self.rows.len();
        let (y_lo, y_hi) = self.y_range();
        let y_inside = y >= y_lo * (1.0 - EDGE_SLACK) && y <= y_hi * (1.0 + EDGE_SLACK);
        if y <= y_lo || n == 1 {
            return (
                self.rows[0].1.value(x),
                self.rows[0].1.covers(x) && y_inside,
            );
        }
        if y >= y_hi {
            return (
                self.rows[n - 1].1.value(x),
                self.rows[n - 1].1.covers(x) && y_inside,
            );
        }
        let i = self.rows.partition_point(|r| r.0 <= y);
        let (ya, yb) = (self.rows[i - 1].0, self.rows[i].0);
        let w = (y - ya) / (yb - ya);
        let (va, vb) = (self.rows[i - 1].1.value(x), self.rows[i].1.value(x));
        (va + (vb - va) * w, self.bracket_covers(i, x))
    }

    /// Whether `x` lies in the bounding box of rows `i − 1` and `i` together.
    fn bracket_covers(&self, i: usize, x: f64) -> bool {
        let (a, b) = (&self.rows[i - 1].1, &self.rows[i].1);
        let lo = a.range().0.min(b.range().0);
        let hi = a.range().1.max(b.range().1);
        x >= lo * (1.0 - EDGE_SLACK) && x <= hi * (1.0 + EDGE_SLACK)
    }

    /// The table along one `x`: for a caller that queries one `x` at many `y` (decode attention at
    /// a fixed number of sequences and ever-changing contexts). [`Table2Line::eval`] gives
    /// [`Table2::eval`]'s result bit for bit without interpolating along `x` again.
    pub fn line(&self, x: f64) -> Table2Line {
        let n = self.rows.len();
        let (y_lo, y_hi) = self.y_range();
        let inside = (0..n)
            .map(|i| {
                if i == 0 {
                    self.rows[0].1.covers(x)
                } else {
                    self.bracket_covers(i, x)
                }
            })
            .collect();
        Table2Line {
            ys: self.rows.iter().map(|r| r.0).collect(),
            values: self.rows.iter().map(|r| r.1.value(x)).collect(),
            inside,
            last_covers: self.rows[n - 1].1.covers(x),
            y_inside: (y_lo * (1.0 - EDGE_SLACK), y_hi * (1.0 + EDGE_SLACK)),
        }
    }
}

/// [`Table2`] at one `x` ([`Table2::line`]): each row's value there, and for each pair of
/// neighbouring rows whether `x` lies in their bounding box (index `i` for rows `i − 1` and `i`;
/// index 0 for the first row alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Table2Line {
    ys: Box<[f64]>,
    values: Box<[f64]>,
    inside: Box<[bool]>,
    last_covers: bool,
    /// The rows' `y` range widened by the edge slack.
    y_inside: (f64, f64),
}

impl Table2Line {
    /// `(value, inside)` at `y`, equal bit for bit to [`Table2::eval`] at this line's `x`.
    #[inline]
    pub fn eval(&self, y: f64) -> (f64, bool) {
        let n = self.ys.len();
        let last = n - 1;
        let y_inside = y >= self.y_inside.0 && y <= self.y_inside.1;
        if y <= self.ys[0] || n == 1 {
            return (self.values[0], self.inside[0] && y_inside);
        }
        if y >= self.ys[last] {
            return (self.values[last], self.last_covers && y_inside);
        }
        // First row above `y`: 1 ≤ i ≤ n − 1 here.
        let i = self.ys.partition_point(|&r| r <= y).clamp(1, last);
        let (ya, yb) = (self.ys[i - 1], self.ys[i]);
        let w = (y - ya) / (yb - ya);
        let (va, vb) = (self.values[i - 1], self.values[i]);
        (va + (vb - va) * w, self.inside[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table1_interpolates_merges_duplicates_and_flags_the_outside() {
        let t = Table1::new(vec![
            (4.0, 8.0),
            (1.0, 2.0),
            (2.0, 3.0),
            (2.0, 5.0),
            (2.0, 4.0),
        ])
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.eval(2.0), (4.0, true)); // median of 3, 5, 4
        assert_eq!(t.eval(3.0), (6.0, true)); // halfway between 4 and 8
        assert_eq!(t.eval(1.5), (3.0, true));
        assert_eq!(t.eval(0.5), (2.0, false));
        assert_eq!(t.eval(10.0), (8.0, false));
        assert!(t.covers(4.0) && t.covers(1.0));
        assert!(Table1::new(vec![]).is_none());
        assert!(Table1::new(vec![(1.0, f64::NAN)]).is_none());
    }

    #[test]
    fn table2_interpolates_between_rows_with_different_x_ranges() {
        // Row y=10: v = x over x in [1, 4]; row y=30: v = 10 + x over x in [2, 8].
        let t = Table2::new(vec![
            (1.0, 10.0, 1.0),
            (4.0, 10.0, 4.0),
            (2.0, 30.0, 12.0),
            (8.0, 30.0, 18.0),
        ])
        .unwrap();
        assert_eq!(t.y_range(), (10.0, 30.0));
        // y = 20, x = 3: row a 3, row b 13 → 8.
        assert_eq!(t.eval(3.0, 20.0), (8.0, true));
        // x = 6 beyond row a (flat at 4) but within row b: inside the bounding box.
        let (v, inside) = t.eval(6.0, 20.0);
        assert!(inside && (v - (4.0 + 16.0) / 2.0).abs() < 1e-12);
        // Beyond every row in x, or beyond the rows in y: outside.
        assert!(!t.eval(9.0, 20.0).1);
        assert_eq!(t.eval(2.0, 5.0), (2.0, false));
        assert_eq!(t.eval(2.0, 40.0), (12.0, false));
        assert_eq!(t.eval(2.0, 30.0), (12.0, true));
    }

    #[test]
    fn a_line_of_table2_gives_its_values_bit_for_bit() {
        // Uneven rows, including a single-point row and x ranges that do not line up.
        let mut points = vec![(1.0, 33.0, 0.9), (7.0, 33.0, 1.3), (64.0, 33.0, 1.1)];
        points.extend([(2.0, 100.0, 1.7), (3.0, 100.0, 0.6), (40.0, 100.0, 1.05)]);
        points.extend([(5.0, 700.0, 1.2)]);
        points.extend([(1.0, 4096.0, 0.95), (128.0, 4096.0, 1.4)]);
        let t = Table2::new(points).unwrap();
        let xs = [
            0.5, 1.0, 2.0, 3.0, 4.5, 5.0, 7.0, 40.0, 63.9, 64.0, 100.0, 128.0, 500.0,
        ];
        let ys = [
            0.0,
            1.0,
            32.999,
            33.0,
            33.0000001,
            60.0,
            100.0,
            350.5,
            699.0,
            700.0,
            701.0,
            4000.0,
            4096.0,
            4096.0000001,
            9000.0,
        ];
        for x in xs {
            let line = t.line(x);
            for y in ys {
                let (a, b) = (t.eval(x, y), line.eval(y));
                assert_eq!(
                    (a.0.to_bits(), a.1),
                    (b.0.to_bits(), b.1),
                    "x = {x}, y = {y}"
                );
            }
        }
        let one = Table2::new(vec![(1.0, 10.0, 2.0), (3.0, 10.0, 4.0)]).unwrap();
        for y in ys {
            assert_eq!(one.eval(2.0, y), one.line(2.0).eval(y), "y = {y}");
        }
    }
}
