//! The register tiles every product of the units kernel runs on.
//!
//! One product form: `C(m, ·) = init + Σ_k A(m, k)·P(k, ·)` over a tile of
//! MR rows by NV vector registers of columns, A's values broadcast, P read
//! as whole vectors from a packed panel (`P(k, ·)` contiguous). Every
//! output element is **one multiply-add chain in k order**, started from
//! its initial value (loaded from C, a bias row, or zero). Blocking never
//! splits a chain (a tile stored to C and loaded back continues it
//! exactly), so an element's bits do not depend on the tile it fell in, on
//! how many rows the call had, or on the thread that ran it: `step` gives
//! the forward pass's bits, and any thread count the same results.
//!
//! The back-projection's form ([`back_tile`]) sums each gate's rows in a
//! chain of its own and adds the four at the end, `(i + f) + (g + o)`, in
//! the same fixed order everywhere: four chains instead of one, so a tile
//! of one batch row still has independent multiply-adds to overlap.
//!
//! Tile sizes per instruction set fill its registers: MR rows × NV vectors
//! of accumulators, NV vectors of P, and a broadcast (plus a temporary
//! where there is no fused multiply-add).

#![allow(clippy::needless_range_loop)] // register tiles index several arrays by the same counters

use super::plan::UNITS;
use crate::simd::vector::{Reg, Vector};
use crate::simd::{array, IsaMarker, Real};
use crate::threads::team::Shared;
use std::mem::MaybeUninit;

/// Rows of A (or of C): row m starts at `at(m)` of its buffer.
#[derive(Clone, Copy)]
pub(crate) enum RowsAt<'a> {
    /// Row m at `first + m·stride`.
    Strided { first: usize, stride: usize },
    /// Row m at `offsets[m]`.
    Listed(&'a [usize]),
}

impl RowsAt<'_> {
    #[inline(always)]
    pub(crate) fn at(&self, m: usize) -> usize {
        match *self {
            RowsAt::Strided { first, stride } => first + m * stride,
            RowsAt::Listed(offsets) => offsets[m],
        }
    }
}

/// Where a tile's accumulators start.
#[derive(Clone, Copy)]
pub(crate) enum Init<'a, T> {
    /// From C itself (continuing a chain).
    Load,
    /// From one row of values, the same for every row (a bias); as long as
    /// the columns.
    Row(&'a [T]),
    /// From zero.
    Zero,
}

/// One product `C = init + A·P` over `m_n` rows and `n_v` vectors of
/// columns (see the module docs).
///
/// - A(m, k) is `a[a_rows.at(m) + k·a_ks]`;
/// - P(k, v-th vector) is the W values at `p[k·p_ks + v·W]`;
/// - C(m, v-th vector) is the W values at `c[c_rows.at(m) + v·W]`.
///
/// Every element it reads or writes is checked to lie inside its buffer
/// before the first multiply-add (panics otherwise). The caller promises
/// that no other task writes what it reads, nor touches the C it writes,
/// while it runs (see `Shared`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn product<T: Real, S: IsaMarker>(
    m_n: usize,
    k_n: usize,
    n_v: usize,
    a: Shared<T>,
    a_rows: RowsAt<'_>,
    a_ks: usize,
    p: Shared<T>,
    p_ks: usize,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
    init: Init<'_, T>,
) {
    let w = Reg::<T, S>::WIDTH;
    if m_n == 0 || n_v == 0 {
        return;
    }
    // Bounds, once: every row's extent, P's, the bias row's.
    for m in 0..m_n {
        assert!(
            k_n == 0 || a_rows.at(m) + (k_n - 1) * a_ks < a.len(),
            "A row {m} out of bounds"
        );
        assert!(c_rows.at(m) + n_v * w <= c.len(), "C row {m} out of bounds");
    }
    assert!(k_n == 0 || (k_n - 1) * p_ks + n_v * w <= p.len(), "P out of bounds");
    if let Init::Row(row) = init {
        assert!(row.len() >= n_v * w, "init row too short");
    }
    let (mr, nv_max) = (forward_rows::<S>(), forward_vectors::<S>());
    // P read in place has rows p_ks apart; at a large power-of-two stride
    // (H = 512, 1024) its rows fall in the same few L1 sets and evict each
    // other. With several strips of rows to serve, each k-block of P is
    // first copied into `p_block`, one contiguous panel per group of
    // vectors, and every strip reads it from there. Only with 16 registers:
    // there the copy took the chain's weight gradients at H1024 from 97 to
    // 127 GFLOP/s (avx2); the 32-register tile gained nothing (avx512).
    let pack_p = S::REGISTERS < 32 && p_ks != n_v * w && m_n >= PACK_P_MIN_STRIPS * mr && n_v * w <= P_BLOCK_COLS;
    let mut p_block = [const { MaybeUninit::<T>::uninit() }; K_BLOCK * P_BLOCK_COLS];
    // k in blocks of K_BLOCK: a block of P (K_BLOCK rows of a tile's
    // columns) stays in L1 while every strip of rows runs over it; each
    // strip's block of A is first copied into `packed` (row m at m·K_BLOCK),
    // so the tile broadcasts from one pointer at fixed offsets.
    let mut packed = [T::ZERO; MAX_ROWS * K_BLOCK];
    let mut k0 = 0;
    loop {
        let kb = (k_n - k0).min(K_BLOCK);
        let init = if k0 == 0 { init } else { Init::Load };
        if pack_p {
            // Group g (vectors v0.., nv of them) at v0·W·kb, row k at k·nv·W.
            let mut v0 = 0;
            while v0 < n_v {
                let cols = (n_v - v0).min(nv_max) * w;
                for k in 0..kb {
                    // SAFETY: in P's bounds (checked); p_block has
                    // kb·n_v·W ≤ K_BLOCK·P_BLOCK_COLS values.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            p.ptr().add((k0 + k) * p_ks + v0 * w).cast_const(),
                            p_block.as_mut_ptr().cast::<T>().add(v0 * w * kb + k * cols),
                            cols,
                        );
                    }
                }
                v0 += nv_max;
            }
        }
        let mut m0 = 0;
        while m0 < m_n {
            let rows = (m_n - m0).min(mr);
            for m in 0..rows {
                let row = &mut packed[m * K_BLOCK..][..kb];
                let first = a_rows.at(m0 + m) + k0 * a_ks;
                if a_ks == 1 {
                    // SAFETY: the row's k_n elements are in bounds (checked).
                    let src = unsafe { std::slice::from_raw_parts(a.ptr().add(first), kb) };
                    match (<&mut [T; K_BLOCK]>::try_from(&mut *row), <&[T; K_BLOCK]>::try_from(src)) {
                        // A whole block: a fixed-size copy (vector moves, not a call).
                        (Ok(dst), Ok(src)) => *dst = *src,
                        _ => row.copy_from_slice(src),
                    }
                } else {
                    for (k, v) in row.iter_mut().enumerate() {
                        // SAFETY: as above.
                        *v = unsafe { *a.ptr().add(first + k * a_ks) };
                    }
                }
            }
            let mut v0 = 0;
            while v0 < n_v {
                let nv = (n_v - v0).min(nv_max);
                let (p_at, ks) = if pack_p {
                    // SAFETY: the group written above.
                    (unsafe { p_block.as_ptr().cast::<T>().add(v0 * w * kb) }, nv * w)
                } else {
                    // SAFETY: in P's bounds (checked).
                    (unsafe { p.ptr().add(k0 * p_ks + v0 * w).cast_const() }, p_ks)
                };
                // SAFETY: bounds checked above; exclusivity by the caller.
                unsafe {
                    tile_dispatch::<T, S>(rows, nv, kb, &packed, m0, p_at, ks, v0, c, c_rows, init);
                }
                v0 += nv;
            }
            m0 += rows;
        }
        k0 += kb;
        if k0 >= k_n {
            break;
        }
    }
}

/// Values of k per block of a product (see [`product`]).
const K_BLOCK: usize = 64;
/// The most rows a tile takes, on any instruction set.
const MAX_ROWS: usize = 6;
/// A product copies P's k-blocks when it has at least this many strips of
/// rows to serve from the copy.
const PACK_P_MIN_STRIPS: usize = 3;
/// The widest P (values of a row) a product copies.
const P_BLOCK_COLS: usize = 128;

/// The tile's rows per instruction set: 6 with 32 registers (6 × 4
/// accumulators); 6 with 16 and a fused multiply-add (6 × 2: 12
/// accumulators, 2 of P and a broadcast leave one register free; a 4 × 3
/// tile fills all 16, and LLVM then spills an accumulator every k, which
/// halved the speed; 2 × 4 has only 8 independent chains, too few to hide
/// the multiply-add latency on two ports); 2 without (2 × 4, and a
/// temporary per product).
#[inline(always)]
pub(crate) const fn forward_rows<S: IsaMarker>() -> usize {
    if S::REGISTERS >= 32 || S::FMA {
        6
    } else {
        2
    }
}

/// The tile's vectors of columns per instruction set (see [`forward_rows`]).
#[inline(always)]
const fn forward_vectors<S: IsaMarker>() -> usize {
    if S::REGISTERS < 32 && S::FMA {
        2
    } else {
        4
    }
}

/// [`tile`] with `rows` and `nv` as constants.
///
/// # Safety
/// As [`tile`], for the rows `m0..m0 + rows` and vectors `v0..v0 + nv`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_dispatch<T: Real, S: IsaMarker>(
    rows: usize,
    nv: usize,
    kb: usize,
    packed: &[T],
    m0: usize,
    p_at: *const T,
    p_ks: usize,
    v0: usize,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
    init: Init<'_, T>,
) {
    let w = Reg::<T, S>::WIDTH;
    let (mr, nv_max) = (forward_rows::<S>(), forward_vectors::<S>());
    debug_assert!(packed.len() >= rows * K_BLOCK);
    macro_rules! go {
        ($mr:literal, $nv:literal) => {{
            let c_ptr: [*mut T; $mr] = array(|m| c.ptr().add(c_rows.at(m0 + m) + v0 * w));
            let init = match init {
                Init::Row(row) => Init::Row(&row[v0 * w..]),
                other => other,
            };
            tile::<T, S, $mr, $nv>(kb, packed.as_ptr(), p_at, p_ks, c_ptr, init)
        }};
    }
    macro_rules! by_nv {
        ($mr:literal) => {
            match nv {
                1 => go!($mr, 1),
                2 => go!($mr, 2),
                3 => go!($mr, 3),
                4 if nv_max >= 4 => go!($mr, 4),
                _ => unreachable!("tile vectors"),
            }
        };
    }
    // Rows and vectors beyond the instance's tile never reach here:
    // `forward_rows` and `forward_vectors` cap them, and the arms past
    // them are dead code in that instance.
    debug_assert!(rows <= mr && nv <= nv_max);
    match rows {
        1 => by_nv!(1),
        2 => by_nv!(2),
        3 if mr >= 3 => by_nv!(3),
        4 if mr >= 4 => by_nv!(4),
        5 if mr >= 5 => by_nv!(5),
        6 if mr >= 6 => by_nv!(6),
        _ => unreachable!("tile rows"),
    }
}

/// The register tile: MR rows × NV vectors of C, one multiply-add chain
/// per element over `k_n` values of k; A packed as `a[m·K_BLOCK + k]`.
///
/// # Safety
/// `a + MR·K_BLOCK`, `p + k·p_ks + NV·W` for k < k_n ≤ K_BLOCK, and `c[m] + NV·W` lie
/// inside live buffers; nothing else writes what is read, or touches C,
/// meanwhile.
#[inline(always)]
unsafe fn tile<T: Real, S: IsaMarker, const MR: usize, const NV: usize>(
    k_n: usize,
    a: *const T,
    p: *const T,
    p_ks: usize,
    c: [*mut T; MR],
    init: Init<'_, T>,
) {
    let w = Reg::<T, S>::WIDTH;
    let zero = Reg::<T, S>::splat(T::ZERO);
    let mut acc = [[zero; NV]; MR];
    for m in 0..MR {
        for v in 0..NV {
            acc[m][v] = match init {
                Init::Load => unsafe { load_at::<T, S>(c[m].add(v * w)) },
                Init::Row(row) => Reg::<T, S>::load(&row[v * w..]),
                Init::Zero => zero,
            };
        }
    }
    for k in 0..k_n {
        let pk = unsafe { p.add(k * p_ks) };
        let ak = unsafe { a.add(k) };
        let b: [Reg<T, S>; NV] = array(|v| unsafe { load_at::<T, S>(pk.add(v * w)) });
        for m in 0..MR {
            let x = Reg::<T, S>::splat(unsafe { *ak.add(m * K_BLOCK) });
            for v in 0..NV {
                acc[m][v] = x.mul_add(b[v], acc[m][v]);
            }
        }
    }
    for m in 0..MR {
        for v in 0..NV {
            unsafe { store_at::<T, S>(acc[m][v], c[m].add(v * w)) };
        }
    }
}

/// The back-projection's rows per instruction set: its tile holds 4 gates
/// × MR rows × NV vectors.
#[inline(always)]
pub(crate) const fn back_rows<S: IsaMarker>() -> usize {
    if S::REGISTERS >= 32 {
        6
    } else {
        2
    }
}

/// Vectors of columns per back-projection tile: one block of [`UNITS`]
/// columns in at most 4 (AVX-512 f32: 1; f64: 2), else 1.
#[inline(always)]
fn back_vectors<T: Real, S: IsaMarker>() -> usize {
    let per_block = UNITS / Reg::<T, S>::WIDTH;
    if S::REGISTERS >= 32 {
        per_block.min(2)
    } else {
        1
    }
}

/// The back-projection `C(m, ·) = Σ_r A(m, r)·P(r, ·)` over the gate rows
/// r of `nb` blocks in panel order (`r = (j·4 + g)·UNITS + u`), summed per
/// gate and then `(i + f) + (g + o)` (see the module docs), into `m_n`
/// rows of `UNITS` columns. A(m, r) is `a[a_rows.at(m) + r]`, P(r, ·) the
/// `UNITS` values at `p[r·UNITS]`, C(m, ·) at `c[c_rows.at(m)]`.
///
/// Bounds are checked as in [`product`]; the same promise of exclusivity.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn back_product<T: Real, S: IsaMarker>(
    m_n: usize,
    nb: usize,
    a: Shared<T>,
    a_rows: RowsAt<'_>,
    p: Shared<T>,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
) {
    let w = Reg::<T, S>::WIDTH;
    let k_n = nb * 4 * UNITS;
    if m_n == 0 {
        return;
    }
    for m in 0..m_n {
        assert!(a_rows.at(m) + k_n <= a.len(), "A row {m} out of bounds");
        assert!(c_rows.at(m) + UNITS <= c.len(), "C row {m} out of bounds");
    }
    assert!(k_n * UNITS <= p.len(), "P out of bounds");
    let (mr, nv) = (back_rows::<S>(), back_vectors::<T, S>());
    let mut m0 = 0;
    while m0 < m_n {
        let rows = (m_n - m0).min(mr);
        for v0 in (0..UNITS / w).step_by(nv) {
            // SAFETY: bounds checked above; exclusivity by the caller.
            unsafe { back_dispatch::<T, S>(rows, nv, nb, a, a_rows, m0, p, v0, c, c_rows) }
        }
        m0 += rows;
    }
}

/// # Safety
/// As [`back_tile`], for rows `m0..m0 + rows` and vectors `v0..v0 + nv`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn back_dispatch<T: Real, S: IsaMarker>(
    rows: usize,
    nv: usize,
    nb: usize,
    a: Shared<T>,
    a_rows: RowsAt<'_>,
    m0: usize,
    p: Shared<T>,
    v0: usize,
    c: Shared<T>,
    c_rows: RowsAt<'_>,
) {
    let w = Reg::<T, S>::WIDTH;
    macro_rules! go {
        ($mr:literal, $nv:literal) => {{
            let a_ptr: [*const T; $mr] = array(|m| a.ptr().add(a_rows.at(m0 + m)).cast_const());
            let c_ptr: [*mut T; $mr] = array(|m| c.ptr().add(c_rows.at(m0 + m) + v0 * w));
            back_tile::<T, S, $mr, $nv>(nb, a_ptr, p.ptr().add(v0 * w).cast_const(), c_ptr)
        }};
    }
    macro_rules! by_nv {
        ($mr:literal) => {
            match nv {
                1 => go!($mr, 1),
                _ => go!($mr, 2),
            }
        };
    }
    match rows {
        1 => by_nv!(1),
        2 => by_nv!(2),
        3 if S::REGISTERS >= 32 => by_nv!(3),
        4 if S::REGISTERS >= 32 => by_nv!(4),
        5 if S::REGISTERS >= 32 => by_nv!(5),
        6 if S::REGISTERS >= 32 => by_nv!(6),
        _ => unreachable!("back tile rows"),
    }
}

/// The back-projection's register tile: 4 gates × MR rows × NV vectors.
///
/// # Safety
/// `a[m] + r` for r < nb·4·UNITS, `p + r·UNITS + NV·W`, `c[m] + NV·W` lie
/// inside live buffers; nothing else writes what is read, or touches C.
#[inline(always)]
unsafe fn back_tile<T: Real, S: IsaMarker, const MR: usize, const NV: usize>(
    nb: usize,
    a: [*const T; MR],
    p: *const T,
    c: [*mut T; MR],
) {
    let w = Reg::<T, S>::WIDTH;
    let zero = Reg::<T, S>::splat(T::ZERO);
    let mut acc = [[[zero; NV]; MR]; 4];
    for j in 0..nb {
        for u in 0..UNITS {
            for g in 0..4 {
                let r = (j * 4 + g) * UNITS + u;
                let pr = unsafe { p.add(r * UNITS) };
                let b: [Reg<T, S>; NV] = array(|v| unsafe { load_at::<T, S>(pr.add(v * w)) });
                for m in 0..MR {
                    let x = Reg::<T, S>::splat(unsafe { *a[m].add(r) });
                    for v in 0..NV {
                        acc[g][m][v] = x.mul_add(b[v], acc[g][m][v]);
                    }
                }
            }
        }
    }
    for m in 0..MR {
        for v in 0..NV {
            let sum = acc[0][m][v].add(acc[1][m][v]).add(acc[2][m][v].add(acc[3][m][v]));
            unsafe { store_at::<T, S>(sum, c[m].add(v * w)) };
        }
    }
}

/// The W values at `ptr` as a register.
///
/// # Safety
/// `ptr..ptr + W` lies inside a live buffer nobody writes meanwhile.
#[inline(always)]
unsafe fn load_at<T: Real, S: IsaMarker>(ptr: *const T) -> Reg<T, S> {
    Reg::<T, S>::load(unsafe { std::slice::from_raw_parts(ptr, Reg::<T, S>::WIDTH) })
}

/// Stores a register's W values at `ptr`.
///
/// # Safety
/// `ptr..ptr + W` lies inside a live buffer nobody else touches meanwhile.
#[inline(always)]
unsafe fn store_at<T: Real, S: IsaMarker>(v: Reg<T, S>, ptr: *mut T) {
    v.store(unsafe { std::slice::from_raw_parts_mut(ptr, Reg::<T, S>::WIDTH) })
}
