//! Strided matrix products, the one place that calls the GEMM crate.
//!
//! [`Mat`] and [`MatMut`] describe a matrix inside a slice by its shape and
//! strides, so a transpose or a "every T-th row" view costs nothing. The
//! bounds of every view are checked when it is made, which is what makes the
//! `unsafe` call into `gemm` sound.

use crate::simd::Real;
use crate::threads;

/// A read-only strided matrix view: element (r, c) is `data[r*rs + c*cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A writable strided matrix view: element (r, c) is `data[r*rs + c*cs]`.
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// Largest offset touched by a `rows x cols` view with strides `rs`, `cs`,
/// plus one; zero for an empty view.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a, T> Mat<'a, T> {
    /// A strided view; panics if it would reach past the end of `data`.
    pub fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(extent(rows, cols, rs, cs) <= data.len(), "matrix view out of bounds");
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows x cols` view of the start of `data`.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

impl<'a, T> MatMut<'a, T> {
    /// A strided writable view; panics if it would reach past the end of `data`.
    pub fn strided(data: &'a mut [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(extent(rows, cols, rs, cs) <= data.len(), "matrix view out of bounds");
        MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows x cols` view of the start of `data`.
    pub fn rows(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`).
///
/// Shapes: a (m, k), b (k, n), dst (m, n). `dst` must not overlap `a` or `b`
/// (guaranteed by the borrow rules: it is the only `&mut`).
pub fn matmul<T: Real>(dst: MatMut<'_, T>, accumulate: bool, a: Mat<'_, T>, b: Mat<'_, T>) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    assert!(a.rows == m && b.rows == k && b.cols == n, "matmul shape mismatch");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst.data[r * dst.rs + c * dst.cs] = T::ZERO;
                }
            }
        }
        return;
    }
    // SAFETY: every view was bounds-checked when it was made, `dst` is a
    // unique borrow so it aliases neither input, and `T` is f32 or f64, both
    // supported by `gemm`.
    threads::run_gemm(m * n * k, |parallelism| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    })
}

/// `sums[j] = Σ_r m[r, j]` for a row-major matrix with `cols` columns, summed
/// in row order (the same order whatever the thread count).
pub(crate) fn column_sums<T: Real>(m: &[T], cols: usize, sums: &mut [T]) {
    debug_assert_eq!(sums.len(), cols);
    sums.fill(T::ZERO);
    for row in m.chunks_exact(cols) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}
