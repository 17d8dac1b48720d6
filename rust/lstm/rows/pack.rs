//! The rows kernel's weights, packed per call into the layouts its loops
//! read: forward's [W_ih | W_hh]ᵀ, one gate vector per input feature
//! (`pack_weights`, kept while the weights stay the same), and backward's
//! back-projection rows [W_ih | W_hh] padded to Kp (`pack_back_weights`,
//! with the column layout of `back_width` and `back_columns`).

use super::{padded, RowsScratch};
use crate::lstm::params::LstmParams;
use crate::simd::{Real, LANES};

/// [W_ih | W_hh]ᵀ one gate vector per input feature, and the bias, padded
/// to whole vectors.
pub(super) fn pack_weights<T: Real>(ws: &mut RowsScratch<T>, p: LstmParams<'_, T>, i_n: usize, h: usize) {
    let hp = padded(h);
    let gp = 4 * hp;
    // Cleared first: the padding units' weights must be zero, whatever
    // shape the scratch served before.
    for (v, n) in [(&mut ws.w_t, (i_n + h) * gp), (&mut ws.bias, gp)] {
        v.clear();
        v.resize(n, T::ZERO);
    }
    for q in 0..4 {
        for u in 0..h {
            let (g, at) = (q * h + u, q * hp + u);
            for k in 0..i_n {
                ws.w_t[k * gp + at] = p.weight_ih[g * i_n + k];
            }
            for k in 0..h {
                ws.w_t[(i_n + k) * gp + at] = p.weight_hh[g * h + k];
            }
            ws.bias[at] = p.bias[g];
        }
    }
    ws.packed_from.remember(&[i_n, h], &[p.weight_ih, p.weight_hh, p.bias]);
}

/// w[(q·Hp + u)·Kp + k]: gate row (q, u) of [W_ih | W_hh], its input and
/// hidden columns from [`back_columns`] on (padding stays zero); (4Hp, Kp).
pub(super) fn pack_back_weights<T: Real>(w: &mut Vec<T>, p: LstmParams<'_, T>, i_n: usize, h: usize) {
    let hp = padded(h);
    let (gp, kp, (hh_at, ih_at)) = (4 * hp, back_width(i_n, h), back_columns(i_n, h));
    w.clear();
    w.resize(gp * kp, T::ZERO);
    for q in 0..4 {
        for u in 0..h {
            let (g, row) = (q * h + u, &mut w[(q * hp + u) * kp..][..kp]);
            row[ih_at..ih_at + i_n].copy_from_slice(&p.weight_ih[g * i_n..][..i_n]);
            row[hh_at..hh_at + h].copy_from_slice(&p.weight_hh[g * h..][..h]);
        }
    }
}

/// Whether backward's [W_ih | W_hh]ᵀ·dz fits one lane vector (I + H ≤
/// LANES): then a step's back-projection is one vector per gate row.
pub(super) fn back_one_vector(i_n: usize, h: usize) -> bool {
    i_n + h <= LANES
}

/// Kp, the padded width of a back-projection row (see [`back_columns`]).
pub(super) fn back_width(i_n: usize, h: usize) -> usize {
    if back_one_vector(i_n, h) {
        LANES
    } else {
        padded(i_n) + padded(h)
    }
}

/// Where the hidden and the input columns start in a back-projection row:
/// hidden first when everything fits one vector (dh is then its lanes
/// 0..H, in place), else inputs first and hidden from a vector boundary.
fn back_columns(i_n: usize, h: usize) -> (usize, usize) {
    if back_one_vector(i_n, h) {
        (0, h)
    } else {
        (padded(i_n), 0)
    }
}
