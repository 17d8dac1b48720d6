//! The weights, packed once per call into the panels the tiles read.
//!
//! Gate rows are put in *panel order*: unit block j's four gates side by
//! side, `r = j·4U + g·U + u` for gate g (i, f, g, o) of unit `j·U + u`
//! (U = [`UNITS`]), so a task that owns block j finds its whole cell update
//! in one run of 4U columns. Units past H are padding: zero weights and
//! zero bias, so their c and h stay exactly zero.
//!
//! Shapes (H units, Hp = H padded to blocks, NB = Hp / U blocks, I inputs):
//! - forward, per block: `w_ih_t` (NB, I, 4U) and `w_hh_t` (NB, H, 4U), the
//!   transposed weights, P(k, ·) one row of 4U; `bias` (NB, 4U);
//! - backward: `w_hh_b` (NB, 4Hp, U), the columns of unit block j of W_hh
//!   by gate rows in panel order (the back-projection's P), and `w_ih_b`
//!   (4Hp, Ip), W_ih's rows in panel order, columns padded to Ip (dx's P).

use super::plan::UNITS;
use crate::lstm::params::LstmParams;
use crate::lstm::poison;
use crate::simd::{dispatch, IsaMarker, Real};

/// The torch row (`g·H + unit`) of panel-order row r, if r is not padding.
#[inline(always)]
pub(crate) fn torch_row(r: usize, h: usize) -> Option<usize> {
    let (j, g, u) = (r / (4 * UNITS), r / UNITS % 4, r % UNITS);
    let unit = j * UNITS + u;
    (unit < h).then_some(g * h + unit)
}

/// The forward panels (see the module docs).
/// (A panel the dot form reads as given, `None`, is not made.)
pub(crate) fn pack_forward<T: Real>(
    p: LstmParams<'_, T>,
    i_n: usize,
    h: usize,
    mut w_ih_t: Option<&mut Vec<T>>,
    mut w_hh_t: Option<&mut Vec<T>>,
    bias: &mut Vec<T>,
) {
    let nb = h.div_ceil(UNITS);
    let g4 = 4 * UNITS;
    if let Some(w) = w_ih_t.as_deref_mut() {
        poison::fit(w, nb * i_n * g4);
    }
    if let Some(w) = w_hh_t.as_deref_mut() {
        poison::fit(w, nb * h * g4);
    }
    poison::fit(bias, nb * g4);
    for j in 0..nb {
        for col in 0..g4 {
            bias[j * g4 + col] = torch_row(j * g4 + col, h).map_or(T::ZERO, |r| p.bias[r]);
        }
        for g in 0..4 {
            // Gate g of block j: torch rows g·H + j·U .. (UNITS of them, or
            // fewer in the last block), columns g·U.. of the panel.
            let first = g * h + j * UNITS;
            let units = UNITS.min(h - j * UNITS);
            if let Some(w) = w_ih_t.as_deref_mut() {
                let panel = &mut w[j * i_n * g4..][..i_n * g4];
                transpose_block(panel, g * UNITS, p.weight_ih, first, units, i_n);
            }
            if let Some(w) = w_hh_t.as_deref_mut() {
                let panel = &mut w[j * h * g4..][..h * g4];
                transpose_block(panel, g * UNITS, p.weight_hh, first, units, h);
            }
        }
    }
}

dispatch!(fn transpose_block<T: Real, S: IsaMarker>(
    panel: &mut [T],
    col: usize,
    w: &[T],
    first: usize,
    units: usize,
    k_n: usize,
) => transpose_block_impl);

/// `panel[k·4U + col + u] = w[(first + u)·k_n + k]` for u < `units` (zero
/// for the rest of the U columns), k < k_n: 16 values of k at a time
/// through a tile on the stack, so rows are read along and panel rows
/// written whole.
#[inline(always)]
fn transpose_block_impl<T: Real, S: IsaMarker>(
    panel: &mut [T],
    col: usize,
    w: &[T],
    first: usize,
    units: usize,
    k_n: usize,
) {
    let g4 = 4 * UNITS;
    let mut tile = [[T::ZERO; UNITS]; UNITS];
    for k0 in (0..k_n).step_by(UNITS) {
        let kt = UNITS.min(k_n - k0);
        for (u, row) in tile.iter_mut().enumerate().take(units) {
            let src = &w[(first + u) * k_n + k0..][..kt];
            if let Ok(whole) = <&[T; UNITS]>::try_from(src) {
                // A fixed-size copy: a few vector moves, not a call.
                *row = *whole;
            } else {
                row[..kt].copy_from_slice(src);
            }
        }
        for dk in 0..kt {
            let dst: &mut [T; UNITS] = (&mut panel[(k0 + dk) * g4 + col..][..UNITS])
                .try_into()
                .expect("U values");
            for u in 0..UNITS {
                dst[u] = tile[u][dk];
            }
        }
    }
}

/// The backward panels (see the module docs); `ip` is I padded.
pub(crate) fn pack_backward<T: Real>(
    p: LstmParams<'_, T>,
    i_n: usize,
    ip: usize,
    h: usize,
    w_hh_b: &mut Vec<T>,
    w_ih_b: &mut Vec<T>,
) {
    let nb = h.div_ceil(UNITS);
    let rows = 4 * nb * UNITS;
    poison::fit(w_hh_b, nb * rows * UNITS);
    poison::fit(w_ih_b, rows * ip);
    for r in 0..rows {
        let torch = torch_row(r, h);
        for jc in 0..nb {
            let dst = &mut w_hh_b[(jc * rows + r) * UNITS..][..UNITS];
            for (u, d) in dst.iter_mut().enumerate() {
                let col = jc * UNITS + u;
                *d = match torch {
                    Some(row) if col < h => p.weight_hh[row * h + col],
                    _ => T::ZERO,
                };
            }
        }
        let dst = &mut w_ih_b[r * ip..][..ip];
        match torch {
            Some(row) => {
                dst[..i_n].copy_from_slice(&p.weight_ih[row * i_n..][..i_n]);
                dst[i_n..].fill(T::ZERO);
            }
            None => dst.fill(T::ZERO),
        }
    }
}
