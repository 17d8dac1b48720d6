//! One batch row's forward steps, the gates in lanes: per step the
//! projection `z = bias + Σ_f input_f · (column f of [W_ih | W_hh])` along
//! the 4Hp gate lanes (`project_blocks`; for H ≤ LANES all in registers,
//! `forward_row_one_vector`), σ and tanh on the gate blocks, and the cell
//! update along the Hp units. Compiled once per instruction set
//! (`forward_row`).

use super::{load, padded, store};
use crate::lstm::cell::cell_forward_lane;
use crate::lstm::params::RowSteps;
use crate::simd::activation::sigmoid_tanh_lanes;
use crate::simd::vector::{Reg, Vector};
use crate::simd::{array, dispatch, mul_add, IsaMarker, Lane, Real, LANES};

/// One batch row's forward buffers.
pub(crate) struct Row<'a, T> {
    /// (T, I), read at `x_steps`.
    pub(super) x: &'a [T],
    pub(super) x_steps: RowSteps,
    pub(super) gates: &'a mut [T],
    pub(super) c: &'a mut [T],
    pub(super) tanh_c: &'a mut [T],
    pub(super) h: &'a mut [T],
}

/// What every row of a forward pass shares.
pub(crate) struct Consts<'a, T> {
    pub(super) w_t: &'a [T],
    pub(super) bias: &'a [T],
}

dispatch!(fn forward_row<T: Real, S: IsaMarker>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) => forward_row_impl);

#[inline(always)]
fn forward_row_impl<T: Real, S: IsaMarker>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) {
    if h <= LANES {
        return forward_row_one_vector::<T, S>(row, k, t_n, i_n, h);
    }
    let hp = padded(h);
    let gp = 4 * hp;
    for t in 0..t_n {
        let gates = &mut row.gates[t * gp..][..gp];
        // z = bias + Σ_f input_f · (column f of [W_ih | W_hh]), along the gate lanes.
        let inputs = (&row.x[row.x_steps.at(t)..][..i_n], &row.h[t * hp..][..h]);
        // N gate vectors at a time, N a divisor of 4 (4H is a multiple of
        // four vectors): up to 8 registers of running sums, which fit
        // beside the weights without spills (a lane vector of f64 takes
        // four AVX2 registers, of f32 two).
        match LANES / <Reg<T, S> as Vector<T>>::WIDTH {
            1 | 2 => project_blocks::<T, S, 4>(gates, k, inputs),
            4 => project_blocks::<T, S, 2>(gates, k, inputs),
            _ => project_blocks::<T, S, 1>(gates, k, inputs),
        }
        // σ on the i, f and o blocks, tanh on g (each block starts on a
        // vector boundary), a vector of each in lockstep, then the cell
        // update of those units from the same registers.
        for u in (0..hp).step_by(LANES) {
            let z: [Lane<T>; 4] = array(|q| load(gates, q * hp + u));
            let ([i, f, o], [g]) = sigmoid_tanh_lanes::<T, S, 3, 1>([z[0], z[1], z[3]], [z[2]]);
            for (q, y) in [i, f, g, o].into_iter().enumerate() {
                store(gates, q * hp + u, y);
            }
            let c_prev = load(row.c, t * hp + u);
            let (c, tc, h_new) = cell_forward_lane::<T, S>(i, f, g, o, c_prev);
            store(row.c, (t + 1) * hp + u, c);
            store(row.tanh_c, t * hp + u, tc);
            store(row.h, (t + 1) * hp + u, h_new);
        }
    }
}

/// [`forward_row_impl`] for H ≤ LANES: each gate block is one vector, and
/// the gates, c and h stay in registers for the cell update. A step is a
/// chain of dependent latencies (projection, σ, cell, tanh), so what
/// shortens the chain pays: the projection runs two multiply-add chains per
/// gate vector, each half as long, added at the end (B1 T1000 H10 forward
/// 81 → 61 µs). The weights and the saved rows are read as fixed-size
/// arrays, so the step loop has no bounds checks (they were about a sixth
/// of its instructions).
#[inline(always)]
fn forward_row_one_vector<T: Real, S: IsaMarker>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) {
    const GATES: usize = 4;
    const GP: usize = GATES * LANES;
    let bias = load4(k.bias, 0);
    // [W_ih | W_hh]ᵀ: one column of four gate vectors per input feature.
    let (w_x, w_h) = k.w_t.as_chunks::<GP>().0[..i_n + h].split_at(i_n);
    let (w_pairs, w_last) = w_h.as_chunks::<2>();
    // (T, 4 gate vectors), and (T+1, one vector) for c and h, slot 0 the initial state.
    let gates = &mut row.gates.as_chunks_mut::<GP>().0[..t_n];
    let tanh_c = &mut row.tanh_c.as_chunks_mut::<LANES>().0[..t_n];
    let c_rows = &mut row.c.as_chunks_mut::<LANES>().0[..t_n + 1];
    let h_rows = &mut row.h.as_chunks_mut::<LANES>().0[..t_n + 1];
    let mut c_prev = Lane(c_rows[0]);
    let mut h_prev = Lane(h_rows[0]);
    for t in 0..t_n {
        let mut even = bias;
        let mut odd = [Lane::splat(T::ZERO); GATES];
        let x_t = &row.x[row.x_steps.at(t)..][..i_n];
        for (column, &x_f) in w_x.iter().zip(x_t) {
            add_column::<T, S>(&mut even, column, x_f);
        }
        let (h_pairs, _) = h_prev.0[..w_pairs.len() * 2].as_chunks::<2>();
        for ([w0, w1], &[h0, h1]) in w_pairs.iter().zip(h_pairs) {
            add_column::<T, S>(&mut odd, w0, h0);
            add_column::<T, S>(&mut even, w1, h1);
        }
        if let [w0] = w_last {
            add_column::<T, S>(&mut odd, w0, h_prev[h - 1]);
        }
        // The four gate blocks' σ and tanh in lockstep (see `sigmoid_tanh_lanes`).
        let mut z = even;
        for j in 0..GATES {
            for l in 0..LANES {
                z[j][l] += odd[j][l];
            }
        }
        let ([i, f, o], [g]) = sigmoid_tanh_lanes::<T, S, 3, 1>([z[0], z[1], z[3]], [z[2]]);
        let gate = [i, f, g, o];
        let gates_t = &mut gates[t];
        for (j, v) in gate.iter().enumerate() {
            gates_t[j * LANES..][..LANES].copy_from_slice(&v.0);
        }
        let (c, tc, h_new) = cell_forward_lane::<T, S>(i, f, g, o, c_prev);
        c_rows[t + 1] = c.0;
        tanh_c[t] = tc.0;
        h_rows[t + 1] = h_new.0;
        (c_prev, h_prev) = (c, h_new);
    }
}

/// The four gate vectors from `at` of `v`.
#[inline(always)]
fn load4<T: Real>(v: &[T], at: usize) -> [Lane<T>; 4] {
    [
        load(v, at),
        load(v, at + LANES),
        load(v, at + 2 * LANES),
        load(v, at + 3 * LANES),
    ]
}

/// acc += input · (the four gate vectors of `w`): one input feature's column
/// of the projection, when each gate block is one vector. A function, not a
/// closure: a closure left out of line is compiled without the instance's
/// features (`fmaf` calls in the baseline, no AVX2 in the AVX2 one).
#[inline(always)]
fn add_column<T: Real, S: IsaMarker>(acc: &mut [Lane<T>; 4], w: &[T; 4 * LANES], input: T) {
    let w = load4(w, 0);
    for l in 0..LANES {
        for j in 0..4 {
            acc[j][l] = mul_add::<T, S>(w[j][l], input, acc[j][l]);
        }
    }
}

/// gates[..N·LANES] = bias + Σ_f input_f · w_t[f]: N gate vectors at once, in
/// registers, lanes outermost so the compiler vectorises along them.
#[inline(always)]
fn project<T: Real, S: IsaMarker, const N: usize>(
    gates: &mut [T],
    k: &Consts<'_, T>,
    (x, h): (&[T], &[T]),
    stride: usize,
) {
    let gp = k.bias.len();
    let first = gp - stride;
    let mut acc: [Lane<T>; N] = array(|j| load(k.bias, first + j * LANES));
    // Row f of [W_ih | W_hh]ᵀ is gp values, of which this call takes N
    // vectors: x's rows, then h's (two loops, not a chained iterator,
    // which branched at every feature).
    let mut rows = k.w_t.chunks_exact(gp).map(|row| &row[first..][..N * LANES]);
    // (x zipped first: zip pulls its left side first, and a row pulled
    // as x runs out would be lost to h.)
    for (&input, w) in x.iter().zip(rows.by_ref()) {
        add_row::<T, S, N>(&mut acc, w, input);
    }
    for (&input, w) in h.iter().zip(rows) {
        add_row::<T, S, N>(&mut acc, w, input);
    }
    for (j, a) in acc.iter().enumerate() {
        store(gates, j * LANES, *a);
    }
}

/// [`project`] over all of `gates` (4Hp values), N gate vectors a call.
#[inline(always)]
fn project_blocks<T: Real, S: IsaMarker, const N: usize>(gates: &mut [T], k: &Consts<'_, T>, inputs: (&[T], &[T])) {
    let gp = gates.len();
    for v in (0..gp).step_by(N * LANES) {
        project::<T, S, N>(&mut gates[v..], k, inputs, gp - v);
    }
}

/// acc += input · w, w being N lane vectors (read as fixed-size arrays:
/// no bounds check per load).
#[inline(always)]
fn add_row<T: Real, S: IsaMarker, const N: usize>(acc: &mut [Lane<T>; N], w: &[T], input: T) {
    let (w, _) = w.as_chunks::<LANES>();
    for l in 0..LANES {
        for j in 0..N {
            acc[j][l] = mul_add::<T, S>(w[j][l], input, acc[j][l]);
        }
    }
}
