//! Products in dot form, `C(m, r) = init + Σ_k A(m, k)·W(r, k)`, both
//! operands read along k: A's rows (inputs, or h) and W's rows as PyTorch
//! stores the weights ((4H, K), row-major). Nothing is packed or transposed
//! per call, so a pass over few rows (small batches, one step at a time)
//! reads each weight once, where the panels of `tile.rs` would first copy
//! them; the price is a sum over the vector lanes per element, which a
//! long k (hundreds of values) makes small.
//!
//! Order, per element: one partial sum per vector lane over k in order
//! (one multiply-add chain each), the lanes then added in the fixed
//! pairwise tree of `Vector::sum`, and that added to the initial value. The
//! order depends on neither the rows nor the tile, so, as with `tile.rs`,
//! an element's bits do not depend on the batch it came in or the thread
//! that ran it. A k that is not a whole number of vectors ends in one
//! vector read from zero-padded copies of the rows' last values (a row of
//! A may be followed by NaN padding, or by nothing).

#![allow(clippy::needless_range_loop)] // register tiles index several arrays by the same counters

use super::tile::RowsAt;
use crate::simd::vector::{Reg, Vector};
use crate::simd::{IsaMarker, Real};
use crate::threads::team::Shared;

/// Where a dot product's elements start.
#[derive(Clone, Copy)]
pub(crate) enum DotInit<'a, T> {
    /// From C (the chain before it: `C + Σ`).
    Load,
    /// From `values[at(r)]` for weight row r (a bias).
    Values(&'a [T], RowsAt<'a>),
}

/// `C(m, r) = init + Σ_k A(m, k)·W(r, k)` for `m_n` rows of A and `r_n`
/// rows of W, over `k_n` values of k (see the module docs).
///
/// - A(m, ·) is the `k_n` values at `a[a_rows.at(m)]`;
/// - W(r, ·) is the `k_n` values at `w[w_rows.at(r)]`;
/// - C(m, r) is `c[c_rows.at(m) + c_cols.at(r)]`.
///
/// Every row's extent is checked before the first multiply-add (panics
/// otherwise). The caller promises that no other task writes what it
/// reads, nor touches the C elements it writes, while it runs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_product<T: Real, S: IsaMarker>(
    m_n: usize,
    r_n: usize,
    k_n: usize,
    a: Shared<T>,
    a_rows: RowsAt<'_>,
    w: &[T],
    w_rows: RowsAt<'_>,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
    c_cols: RowsAt<'_>,
    init: DotInit<'_, T>,
) {
    for m in 0..m_n {
        assert!(a_rows.at(m) + k_n <= a.len(), "A row {m} out of bounds");
        for r in 0..r_n {
            assert!(c_rows.at(m) + c_cols.at(r) < c.len(), "C ({m}, {r}) out of bounds");
        }
    }
    for r in 0..r_n {
        assert!(w_rows.at(r) + k_n <= w.len(), "W row {r} out of bounds");
        if let DotInit::Values(values, at) = init {
            assert!(at.at(r) < values.len(), "init value {r} out of bounds");
        }
    }
    let (mr, nr) = dot_tile_size::<S>();
    let mut m0 = 0;
    while m0 < m_n {
        let rows = (m_n - m0).min(mr);
        let mut r0 = 0;
        while r0 < r_n {
            let cols = (r_n - r0).min(nr);
            // SAFETY: every extent was checked above.
            unsafe { dot_dispatch::<T, S>(rows, cols, k_n, a, a_rows, m0, w, w_rows, r0, c, c_rows, c_cols, init) };
            r0 += cols;
        }
        m0 += rows;
    }
}

/// Rows of A and of W per tile: 4 × 6 accumulators with 32 registers, 2 ×
/// 4 with 16.
#[inline(always)]
const fn dot_tile_size<S: IsaMarker>() -> (usize, usize) {
    if S::REGISTERS >= 32 {
        (4, 6)
    } else {
        (2, 4)
    }
}

/// # Safety
/// As [`dot_tile`], for rows `m0..m0 + rows` of A and `r0..r0 + cols` of W.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_dispatch<T: Real, S: IsaMarker>(
    rows: usize,
    cols: usize,
    k_n: usize,
    a: Shared<T>,
    a_rows: RowsAt<'_>,
    m0: usize,
    w: &[T],
    w_rows: RowsAt<'_>,
    r0: usize,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
    c_cols: RowsAt<'_>,
    init: DotInit<'_, T>,
) {
    macro_rules! go {
        ($mr:literal, $nr:literal) => {{
            let mut a_ptr = [a.ptr().cast_const(); $mr];
            for m in 0..$mr {
                a_ptr[m] = a.ptr().add(a_rows.at(m0 + m)).cast_const();
            }
            let mut w_ptr = [w.as_ptr(); $nr];
            for r in 0..$nr {
                w_ptr[r] = w.as_ptr().add(w_rows.at(r0 + r));
            }
            let sums = dot_tile::<T, S, $mr, $nr>(k_n, a_ptr, w_ptr);
            for m in 0..$mr {
                for r in 0..$nr {
                    let at = c.ptr().add(c_rows.at(m0 + m) + c_cols.at(r0 + r));
                    let start = match init {
                        DotInit::Load => *at,
                        DotInit::Values(values, index) => values[index.at(r0 + r)],
                    };
                    *at = start + sums[m][r];
                }
            }
        }};
    }
    macro_rules! by_cols {
        ($mr:literal) => {
            match cols {
                1 => go!($mr, 1),
                2 => go!($mr, 2),
                3 => go!($mr, 3),
                4 => go!($mr, 4),
                5 if S::REGISTERS >= 32 => go!($mr, 5),
                6 if S::REGISTERS >= 32 => go!($mr, 6),
                _ => unreachable!("dot tile columns"),
            }
        };
    }
    match rows {
        1 => by_cols!(1),
        2 => by_cols!(2),
        3 if S::REGISTERS >= 32 => by_cols!(3),
        4 if S::REGISTERS >= 32 => by_cols!(4),
        _ => unreachable!("dot tile rows"),
    }
}

/// The register tile: MR rows of A by NR rows of W, each pair's lane-wise
/// sums over k, then summed over the lanes.
///
/// # Safety
/// `a[m]..a[m] + k_n` and `w[r]..w[r] + k_n` lie inside live buffers that
/// nobody writes meanwhile.
#[inline(always)]
unsafe fn dot_tile<T: Real, S: IsaMarker, const MR: usize, const NR: usize>(
    k_n: usize,
    a: [*const T; MR],
    w: [*const T; NR],
) -> [[T; NR]; MR] {
    // No closures here: one left out of line would be compiled without
    // the instance's features (a call per intrinsic).
    let width = Reg::<T, S>::WIDTH;
    let zero = Reg::<T, S>::splat(T::ZERO);
    let mut acc = [[zero; NR]; MR];
    let mut av = [zero; MR];
    let mut wv = [zero; NR];
    let full = k_n / width * width;
    let mut k = 0;
    while k < full {
        for m in 0..MR {
            av[m] = unsafe { load_at::<T, S>(a[m].add(k)) };
        }
        for r in 0..NR {
            wv[r] = unsafe { load_at::<T, S>(w[r].add(k)) };
        }
        for m in 0..MR {
            for r in 0..NR {
                acc[m][r] = av[m].mul_add(wv[r], acc[m][r]);
            }
        }
        k += width;
    }
    if full < k_n {
        // The last values, zero-padded to a whole vector.
        let tail = k_n - full;
        let mut v = [T::ZERO; 16];
        for m in 0..MR {
            // SAFETY: `tail` values from `a[m] + full` are inside the row.
            v[..tail].copy_from_slice(unsafe { std::slice::from_raw_parts(a[m].add(full), tail) });
            av[m] = Reg::<T, S>::load(&v);
        }
        for r in 0..NR {
            // SAFETY: as above, for W's row.
            v[..tail].copy_from_slice(unsafe { std::slice::from_raw_parts(w[r].add(full), tail) });
            wv[r] = Reg::<T, S>::load(&v);
        }
        for m in 0..MR {
            for r in 0..NR {
                acc[m][r] = av[m].mul_add(wv[r], acc[m][r]);
            }
        }
    }
    let mut sums = [[T::ZERO; NR]; MR];
    for m in 0..MR {
        for r in 0..NR {
            sums[m][r] = acc[m][r].sum();
        }
    }
    sums
}

/// The W values at `ptr` as a register.
///
/// # Safety
/// `ptr..ptr + W` lies inside a live buffer nobody writes meanwhile.
#[inline(always)]
unsafe fn load_at<T: Real, S: IsaMarker>(ptr: *const T) -> Reg<T, S> {
    Reg::<T, S>::load(unsafe { std::slice::from_raw_parts(ptr, Reg::<T, S>::WIDTH) })
}
