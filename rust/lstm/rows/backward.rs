//! One batch row's backward steps, in reverse: the gate gradients dz
//! along the gate lanes (`cell_backward` per lane), then the
//! back-projection [dx_t; dh_{t-1}] = [W_ih | W_hh]ᵀ · dz_t along the input
//! lanes (one vector per gate row when I + H ≤ LANES:
//! `back_steps_one_vector`), and last the row's weight-gradient sums
//! (`weight_sums.rs`). Compiled once per instruction set (`backward_row`).

use super::pack::back_one_vector;
use super::weight_sums::weight_sums;
use super::{load, padded, store, ROWS_MAX_HIDDEN};
use crate::lstm::cell::cell_backward;
use crate::lstm::params::RowSteps;
use crate::simd::{array, dispatch, mul_add, IsaMarker, Lane, Real, LANES};

/// One batch row's backward buffers. x, d_out and dx are (T, ·) in time
/// order, read at their `RowSteps`; the rest is in run order.
pub(crate) struct BackRow<'a, T> {
    pub(super) x: &'a [T],
    pub(super) x_steps: RowSteps,
    pub(super) d_out_steps: RowSteps,
    pub(super) gates: &'a [T],
    pub(super) c: &'a [T],
    pub(super) tanh_c: &'a [T],
    pub(super) h: &'a [T],
    pub(super) d_out: &'a [T],
    pub(super) dz: &'a mut [T],
    /// (I+H+1, 4Hp): the weight-gradient sums, added to row after row.
    pub(super) acc: &'a mut [T],
    /// (Kp,): scratch for the gradient by [x_t; h_{t-1}].
    pub(super) d_in: &'a mut [T],
}

dispatch!(fn backward_row<T: Real, S: IsaMarker>(
    row: BackRow<'_, T>,
    w: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    d_initial: (&mut [T], &mut [T]),
    t_n: usize,
    i_n: usize,
    h: usize,
) => backward_row_impl);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_row_impl<T: Real, S: IsaMarker>(
    mut row: BackRow<'_, T>,
    w: &[T],
    d_final: Option<(&[T], &[T])>,
    mut dx: Option<&mut [T]>,
    (dh0, dc0): (&mut [T], &mut [T]),
    t_n: usize,
    i_n: usize,
    h: usize,
) {
    if back_one_vector(i_n, h) {
        let (dh, dc) = back_steps_one_vector::<T, S>(&mut row, w, d_final, dx, t_n, i_n, h);
        dh0.copy_from_slice(&dh.0[..h]);
        dc0.copy_from_slice(&dc.0[..h]);
        weight_sums::<T, S>(&mut row, t_n, i_n, h);
        return;
    }
    let (hp, ip) = (padded(h), padded(i_n));
    let (gp, kp) = (4 * hp, ip + hp);
    // Running gradients by h and c, zero past H.
    let mut dh = [T::ZERO; ROWS_MAX_HIDDEN];
    let mut dc = [T::ZERO; ROWS_MAX_HIDDEN];
    let d_in = &mut *row.d_in;
    if let Some((dh_n, dc_n)) = d_final {
        dh[..h].copy_from_slice(dh_n);
        dc[..h].copy_from_slice(dc_n);
    }
    for t in (0..t_n).rev() {
        let gates = &row.gates[t * gp..][..gp];
        let dz = &mut row.dz[t * gp..][..gp];
        for u in (0..hp).step_by(LANES) {
            let (i, f) = (load(gates, u), load(gates, hp + u));
            let (g, o) = (load(gates, 2 * hp + u), load(gates, 3 * hp + u));
            let tc = load(row.tanh_c, t * hp + u);
            let c_prev = load(row.c, t * hp + u);
            let d0 = row.d_out_steps.at(t);
            let d_out = load_part(row.d_out, d0 + u, d0 + h);
            let (dh_u, dc_u) = (load(&dh, u), load(&dc, u));
            let zero = Lane::splat(T::ZERO);
            let (mut di, mut df, mut dg, mut d_o, mut dc_prev) = (zero, zero, zero, zero, zero);
            for l in 0..LANES {
                let gates = [i[l], f[l], g[l], o[l]];
                let dh_l = d_out[l] + dh_u[l];
                ([di[l], df[l], dg[l], d_o[l]], dc_prev[l]) =
                    cell_backward::<T, S>(gates, tc[l], c_prev[l], dh_l, dc_u[l]);
            }
            store(dz, u, di);
            store(dz, hp + u, df);
            store(dz, 2 * hp + u, dg);
            store(dz, 3 * hp + u, d_o);
            store(&mut dc, u, dc_prev);
        }
        // [dx_t; dh_{t-1}] = [W_ih | W_hh]ᵀ · dz_t, along the input lanes.
        // One partial sum per gate block, so four multiply-add chains run
        // side by side; added in a fixed order.
        for v in (0..kp).step_by(LANES) {
            let mut acc = [Lane::splat(T::ZERO); 4];
            for u in 0..h {
                let w4: [Lane<T>; 4] = array(|q| load(w, (q * hp + u) * kp + v));
                let d4: [T; 4] = array(|q| dz[q * hp + u]);
                for l in 0..LANES {
                    for q in 0..4 {
                        acc[q][l] = mul_add::<T, S>(w4[q][l], d4[q], acc[q][l]);
                    }
                }
            }
            let mut sum = Lane::splat(T::ZERO);
            for l in 0..LANES {
                sum[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
            }
            store(d_in, v, sum);
        }
        if let Some(dx) = dx.as_deref_mut() {
            dx[row.x_steps.at(t)..][..i_n].copy_from_slice(&d_in[..i_n]);
        }
        dh[..hp].copy_from_slice(&d_in[ip..ip + hp]);
    }
    dh0.copy_from_slice(&dh[..h]);
    dc0.copy_from_slice(&dc[..h]);
    weight_sums::<T, S>(&mut row, t_n, i_n, h);
}

/// `LANES` values from `at`, of which those at or past `end` read as zero:
/// a gate block (length H) read as vectors without touching the next block.
#[inline(always)]
fn load_part<T: Real>(v: &[T], at: usize, end: usize) -> Lane<T> {
    let mut lane = Lane::splat(T::ZERO);
    for l in 0..LANES.min(end.saturating_sub(at)) {
        lane[l] = v[at + l];
    }
    lane
}

/// acc[q] += dz[q·LANES + u] · (back-projection row u of gate block q), for
/// the four gate blocks. A function, not a closure: a closure the compiler
/// leaves out of line is compiled without AVX-512 (measured 15× slower).
#[inline(always)]
fn back_row_add<T: Real, S: IsaMarker>(
    acc: &mut [Lane<T>; 4],
    w: &[[T; LANES]; 4 * LANES],
    dz: &[T; 4 * LANES],
    u: usize,
) {
    let rows: [Lane<T>; 4] = array(|q| Lane(w[q * LANES + u]));
    let d: [T; 4] = array(|q| dz[q * LANES + u]);
    for l in 0..LANES {
        for q in 0..4 {
            acc[q][l] = mul_add::<T, S>(rows[q][l], d[q], acc[q][l]);
        }
    }
}

/// The steps of [`backward_row_impl`] when I + H ≤ LANES: each gate block
/// is one vector (H ≤ LANES), and a back-projection row [W_hh | W_ih] too,
/// so dh_{t−1} is lanes 0..H of one vector sum and dx_t the next I lanes.
/// dh and dc stay in registers; the projection runs two multiply-add chains
/// per gate block (even and odd units), each half as long. Returns the
/// gradients by h0 and c0 (lanes 0..H).
#[inline(always)]
fn back_steps_one_vector<T: Real, S: IsaMarker>(
    row: &mut BackRow<'_, T>,
    w: &[T],
    d_final: Option<(&[T], &[T])>,
    mut dx: Option<&mut [T]>,
    t_n: usize,
    i_n: usize,
    h: usize,
) -> (Lane<T>, Lane<T>) {
    const GATES: usize = 4;
    let gp = GATES * LANES;
    let zero = Lane::splat(T::ZERO);
    let (mut dh, mut dc) = (zero, zero);
    if let Some((dh_n, dc_n)) = d_final {
        dh = load_part(dh_n, 0, h);
        dc = load_part(dc_n, 0, h);
    }
    // 1 on the hidden lanes: the input lanes of the sum are dx, not dh.
    let mut hidden = zero;
    for l in 0..h {
        hidden[l] = T::ONE;
    }
    // The back-projection's 4·LANES rows, as fixed-size arrays: no bounds
    // checks in the step loop.
    let w: &[[T; LANES]; 4 * LANES] = w.as_chunks::<LANES>().0[..4 * LANES].try_into().expect("4·LANES rows");
    let half = h.div_ceil(2);
    assert!(2 * half <= LANES, "H ≤ LANES");
    for t in (0..t_n).rev() {
        let gates = &row.gates[t * gp..][..gp];
        let (i, f) = (load(gates, 0), load(gates, LANES));
        let (g, o) = (load(gates, 2 * LANES), load(gates, 3 * LANES));
        let tc = load(row.tanh_c, t * LANES);
        let c_prev = load(row.c, t * LANES);
        // Step t's H values of d_out: a whole vector read, the lanes past H
        // masked off, while one fits before the end (a lane-by-lane read
        // with a variable count cost more than the step's arithmetic).
        let d0 = row.d_out_steps.at(t);
        let d_out = if d0 + LANES <= row.d_out.len() {
            let mut d = load(row.d_out, d0);
            // Selected, not multiplied by 0: past H the read reaches the
            // next steps' values, which may be NaN padding past the row's
            // length (never read as values, but NaN · 0 is NaN).
            for l in 0..LANES {
                d[l] = if hidden[l] == T::ZERO { T::ZERO } else { d[l] };
            }
            d
        } else {
            load_part(row.d_out, d0, d0 + h)
        };
        let mut dz4 = [zero; GATES];
        for l in 0..LANES {
            let gates = [i[l], f[l], g[l], o[l]];
            let dz_l;
            (dz_l, dc[l]) = cell_backward::<T, S>(gates, tc[l], c_prev[l], d_out[l] + dh[l], dc[l]);
            for q in 0..GATES {
                dz4[q][l] = dz_l[q];
            }
        }
        let dz = &mut row.dz.as_chunks_mut::<{ GATES * LANES }>().0[t];
        for (q, d) in dz4.iter().enumerate() {
            dz[q * LANES..][..LANES].copy_from_slice(&d.0);
        }
        // [dh_{t−1} | dx_t] = Σ over gate rows of dz · row.
        // Two chains per gate block, over the first and the second half of
        // the rows. For an odd H the second half ends on a padding row
        // (zero weights and zero dz, as H < LANES): it adds nothing, and no
        // branch splits the loop.
        let (mut first, mut second) = ([zero; GATES], [zero; GATES]);
        for u in 0..half {
            back_row_add::<T, S>(&mut first, w, dz, u);
            back_row_add::<T, S>(&mut second, w, dz, half + u);
        }
        // ((f0 + s0) + (f1 + s1)) + ((f2 + s2) + (f3 + s3)), one lane-wise
        // add after another: written as one expression per lane, the
        // compiler vectorised it across its eight operands instead of the
        // lanes and shuffled them through the stack every step.
        for l in 0..LANES {
            for q in 0..GATES {
                first[q][l] += second[q][l];
            }
        }
        let [mut sum, f1, mut f2, f3] = first;
        for l in 0..LANES {
            sum[l] += f1[l];
            f2[l] += f3[l];
        }
        for l in 0..LANES {
            sum[l] += f2[l];
        }
        if let Some(dx) = dx.as_deref_mut() {
            for k in 0..i_n {
                dx[row.x_steps.at(t) + k] = sum[h + k];
            }
        }
        for l in 0..LANES {
            dh[l] = if hidden[l] == T::ZERO { T::ZERO } else { sum[l] };
        }
    }
    (dh, dc)
}
