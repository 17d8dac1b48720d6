//! The LSTM kernel for a few batch rows (one long series, say): the gates
//! in SIMD lanes.
//!
//! The lanes kernel puts 16 batch rows in a vector; with B = 1 it would
//! compute 16 times the work. Here each batch row runs alone and the vector
//! runs along the 4H gates instead: a step is `(I+H)` broadcast
//! multiply-adds on the ⌈4H/16⌉ gate vectors, one vectorised pass of σ over
//! the i, f, o blocks and tanh over the g block, and the cell update along
//! the H units. A row's steps wait on each other, so σ and tanh take the
//! quotient of the shorter latency (`simd::activation`'s lane forms). Rows
//! are independent and summed into the weight gradients in row order, step
//! order: results do not depend on the thread count.
//!
//! Per-row buffers are flat and padded to whole lane vectors: gates (T, 4Hp)
//! with each gate block (i, f, g, o) starting on a vector boundary, so the
//! cell update reads aligned vectors straight back; c and h (T+1, Hp) with
//! slot 0 the initial state; tanh c (T, Hp). Hp is H rounded up to a
//! multiple of LANES; padded units stay exactly zero.

use super::cell::{cell_backward, cell_forward_lane};
use super::packed_from::PackedFrom;
use super::params::{LstmGrads, LstmParams, LstmShape, RowSteps, Sequences};
use super::poison;
use crate::simd::activation::sigmoid_tanh_lanes;
use crate::simd::vector::{Reg, Vector};
use crate::simd::Real;
use crate::simd::{array, dispatch, mul_add, IsaMarker, Lane, LANES};

/// The largest batch [`crate::lstm::Kernel::Auto`] gives to this kernel:
/// from about 4 rows on, the lanes kernel's 16-row vectors are less wasted
/// than this kernel's per-row passes.
pub const ROWS_MAX_BATCH: usize = 4;

/// The largest hidden size it takes (the 4H gates in at most 16 vectors).
pub const ROWS_MAX_HIDDEN: usize = 64;

fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// The activations forward saves for backward, cut from a caller's buffer
/// of [`saved_len`] elements (see [`saved_view`]); per row, flat:
struct Saved<M> {
    /// (B, T, G4p): activated gates (i, f, g, o) laid out as 4H values.
    gates: M,
    /// (B, T+1, Hp): cell state before step t (slot 0: c0).
    c: M,
    /// (B, T, Hp): tanh of the cell state after step t.
    tanh_c: M,
    /// (B, T+1, Hp): hidden state before step t (slot 0: h0).
    h: M,
}

/// Elements of the saved buffers, in [`Saved`]'s order.
fn saved_parts(s: LstmShape) -> [usize; 4] {
    let (b, t, hp) = (s.batch, s.steps, padded(s.hidden));
    [b * t * 4 * hp, b * (t + 1) * hp, b * t * hp, b * (t + 1) * hp]
}

/// Elements a saved buffer needs for shape `s`.
pub(crate) fn saved_len(s: LstmShape) -> usize {
    saved_parts(s).iter().sum()
}

fn saved_view<T>(buf: &[T], s: LstmShape) -> Saved<&[T]> {
    let [ng, nc, nt, nh] = saved_parts(s);
    let (gates, rest) = buf.split_at(ng);
    let (c, rest) = rest.split_at(nc);
    let (tanh_c, rest) = rest.split_at(nt);
    Saved {
        gates,
        c,
        tanh_c,
        h: &rest[..nh],
    }
}

fn saved_view_mut<T>(buf: &mut [T], s: LstmShape) -> Saved<&mut [T]> {
    let [ng, nc, nt, nh] = saved_parts(s);
    let (gates, rest) = buf.split_at_mut(ng);
    let (c, rest) = rest.split_at_mut(nc);
    let (tanh_c, rest) = rest.split_at_mut(nt);
    Saved {
        gates,
        c,
        tanh_c,
        h: &mut rest[..nh],
    }
}

/// The rows kernel's scratch: what a call needs only while it runs.
/// Buffers only grow.
pub(crate) struct RowsScratch<T> {
    /// (B, T, G4p): gradient by the gate pre-activations.
    dz: Vec<T>,
    /// (I+H, G4p): [W_ih | W_hh]ᵀ, one gate vector per input feature.
    w_t: Vec<T>,
    /// (4H, Kp): [W_ih | W_hh] rows padded to Kp = I+H rounded up.
    w: Vec<T>,
    /// (G4p,): the bias, padded.
    bias: Vec<T>,
    /// (I+H+1, 4Hp): weight-gradient sums, one gate vector per input feature
    /// and one for the bias.
    acc: Vec<T>,
    /// (Kp,): backward's gradient by [x_t; h_{t-1}] at one step.
    d_in: Vec<T>,
    /// (4Hp + 5Hp): one step's buffers for a forward pass that saves nothing.
    step: Vec<T>,
    /// The weights `w_t`, `bias` and the scales were packed from.
    packed_from: PackedFrom<T>,
}

impl<T: Real> RowsScratch<T> {
    pub(crate) fn new() -> Self {
        RowsScratch {
            dz: Vec::new(),
            w_t: Vec::new(),
            w: Vec::new(),
            bias: Vec::new(),
            acc: Vec::new(),
            d_in: Vec::new(),
            step: Vec::new(),
            packed_from: PackedFrom::new(),
        }
    }
}

fn fit<T: Real>(v: &mut Vec<T>, n: usize) {
    poison::fit(v, n);
}

/// Forward over x (B, T, I) from (h0, c0) or zeros, each row as `seq`
/// says; writes out (B, T, H), (h_n, c_n), each (B, H), and, when given,
/// `saved` ([`saved_len`] elements). Without it each row keeps only its
/// last step (O(H) scratch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut RowsScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    mut saved: Option<&mut [T]>,
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let hp = padded(h);
    let gp = 4 * hp;
    // One step's buffers, for a run that saves nothing: gates, c and h
    // before and after the step, tanh c.
    fit(&mut ws.step, gp + 5 * hp);
    if !ws.packed_from.same_as(&[i_n, h], &[p.weight_ih, p.weight_hh, p.bias]) {
        pack_weights(ws, p, i_n, h);
    }
    let consts = Consts {
        w_t: &ws.w_t,
        bias: &ws.bias,
    };

    for b in 0..b_n {
        let len = seq.len(b, t_n);
        let x_b = &x[b * t_n * i_n..][..t_n * i_n];
        let x_steps = seq.row_steps(len, i_n);
        let out_b = &mut out[b * t_n * h..][..t_n * h];
        let out_steps = seq.row_steps(len, h);
        // Past its length a row's output is zero (a reversed row's too:
        // its run covers times 0..len).
        out_b[len * h..].fill(T::ZERO);
        let (h_last, c_last) = match saved.as_deref_mut() {
            Some(saved) => {
                let sv = saved_view_mut(saved, s);
                let c_b = &mut sv.c[b * (t_n + 1) * hp..][..(t_n + 1) * hp];
                let h_b = &mut sv.h[b * (t_n + 1) * hp..][..(t_n + 1) * hp];
                set_initial(h_b, c_b, initial, b, h);
                let row = Row {
                    x: x_b,
                    x_steps,
                    gates: &mut sv.gates[b * t_n * gp..][..t_n * gp],
                    c: c_b,
                    tanh_c: &mut sv.tanh_c[b * t_n * hp..][..t_n * hp],
                    h: h_b,
                };
                forward_row(row, &consts, len, i_n, h);
                for t in 0..len {
                    out_b[out_steps.at(t)..][..h].copy_from_slice(&h_b[(t + 1) * hp..][..h]);
                }
                (&h_b[len * hp..][..h], &c_b[len * hp..][..h])
            }
            None => {
                let (gates, rest) = ws.step.split_at_mut(gp);
                let (c, rest) = rest.split_at_mut(2 * hp);
                let (tanh_c, h_b) = rest.split_at_mut(hp);
                set_initial(h_b, c, initial, b, h);
                for t in 0..len {
                    let at = x_steps.at(t);
                    let row = Row {
                        x: &x_b[at..at + i_n],
                        x_steps: RowSteps::new(1, i_n, false),
                        gates: &mut *gates,
                        c: &mut *c,
                        tanh_c: &mut *tanh_c,
                        h: &mut *h_b,
                    };
                    forward_row(row, &consts, 1, i_n, h);
                    out_b[out_steps.at(t)..][..h].copy_from_slice(&h_b[hp..][..h]);
                    c.copy_within(hp..2 * hp, 0);
                    h_b.copy_within(hp..2 * hp, 0);
                }
                (&h_b[..h], &c[..h])
            }
        };
        h_n[b * h..][..h].copy_from_slice(h_last);
        c_n[b * h..][..h].copy_from_slice(c_last);
    }
}

/// [W_ih | W_hh]ᵀ one gate vector per input feature, and the bias, padded
/// to whole vectors.
fn pack_weights<T: Real>(ws: &mut RowsScratch<T>, p: LstmParams<'_, T>, i_n: usize, h: usize) {
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

/// Slot 0 of a row's h and c: its initial state, or zeros (padding too).
fn set_initial<T: Real>(h_b: &mut [T], c_b: &mut [T], initial: Option<(&[T], &[T])>, b: usize, h: usize) {
    let hp = padded(h);
    h_b[..hp].fill(T::ZERO);
    c_b[..hp].fill(T::ZERO);
    if let Some((h0, c0)) = initial {
        h_b[..h].copy_from_slice(&h0[b * h..][..h]);
        c_b[..h].copy_from_slice(&c0[b * h..][..h]);
    }
}

/// One batch row's forward buffers.
pub(crate) struct Row<'a, T> {
    /// (T, I), read at `x_steps`.
    x: &'a [T],
    x_steps: RowSteps,
    gates: &'a mut [T],
    c: &'a mut [T],
    tanh_c: &'a mut [T],
    h: &'a mut [T],
}

/// What every row of a forward pass shares.
pub(crate) struct Consts<'a, T> {
    w_t: &'a [T],
    bias: &'a [T],
}

dispatch!(fn forward_row<T: Real, S: IsaMarker>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) => forward_row_impl);

/// Reads `LANES` values of `v` from `at` as a lane vector.
#[inline(always)]
fn load<T: Real>(v: &[T], at: usize) -> Lane<T> {
    Lane(v[at..at + LANES].try_into().unwrap())
}

#[inline(always)]
fn store<T: Real>(v: &mut [T], at: usize, lane: Lane<T>) {
    v[at..at + LANES].copy_from_slice(&lane.0);
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

/// One input feature of the weight-gradient sums: (values, first, stride),
/// its value at step t being `values[first + t·stride]` (wrapping).
type Feature<'a, T> = (&'a [T], usize, usize);

/// acc[m·gp..][..N·LANES] += Σ_t input_m(t) · dz[t·gp..][..N·LANES] for the
/// F features m, input_m(t) = source[t · stride] (`inputs[m]`): F × N gate
/// vectors summed over the steps in registers, dz read once for all F.
/// Returns F.
#[inline(always)]
fn outer<T: Real, S: IsaMarker, const N: usize, const F: usize>(
    acc: &mut [T],
    dz: &[T],
    gp: usize,
    inputs: [Feature<'_, T>; F],
    t_n: usize,
) -> usize {
    let mut sums: [[Lane<T>; N]; F] = array(|m| array(|j| load(acc, m * gp + j * LANES)));
    for t in 0..t_n {
        let d: [Lane<T>; N] = array(|j| load(dz, t * gp + j * LANES));
        for (sum, &(source, first, stride)) in sums.iter_mut().zip(&inputs) {
            let x = source[first.wrapping_add(t.wrapping_mul(stride))];
            for l in 0..LANES {
                for j in 0..N {
                    sum[j][l] = mul_add::<T, S>(d[j][l], x, sum[j][l]);
                }
            }
        }
    }
    for (m, sum) in sums.iter().enumerate() {
        for (j, s) in sum.iter().enumerate() {
            store(acc, m * gp + j * LANES, *s);
        }
    }
    F
}

/// Backward through time over the forward that wrote `saved`; `x` is its
/// input. Writes the weight gradients (overwriting), dx (B, T, I) when
/// asked, dh0 and dc0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut RowsScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    saved: &[T],
    x: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    mut dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (hp, k_n) = (padded(h), i_n + h);
    let (gp, kp, (hh_at, ih_at)) = (4 * hp, back_width(i_n, h), back_columns(i_n, h));
    fit(&mut ws.dz, b_n * t_n * gp);
    // w[(q·Hp + u)·Kp + k]: gate row (q, u) of [W_ih | W_hh], its input and
    // hidden columns from `back_columns` on (padding stays zero).
    ws.w.clear();
    ws.w.resize(gp * kp, T::ZERO);
    for q in 0..4 {
        for u in 0..h {
            let (g, row) = (q * h + u, &mut ws.w[(q * hp + u) * kp..][..kp]);
            row[ih_at..ih_at + i_n].copy_from_slice(&p.weight_ih[g * i_n..][..i_n]);
            row[hh_at..hh_at + h].copy_from_slice(&p.weight_hh[g * h..][..h]);
        }
    }
    ws.acc.clear();
    ws.acc.resize((k_n + 1) * gp, T::ZERO);
    fit(&mut ws.d_in, kp);
    let sv = saved_view(saved, s);
    for b in 0..b_n {
        let d_final_b = d_final.map(|(dh, dc)| (&dh[b * h..][..h], &dc[b * h..][..h]));
        let len = seq.len(b, t_n);
        let dx_b = dx.as_deref_mut().map(|d| {
            let d = &mut d[b * t_n * i_n..][..t_n * i_n];
            d[len * i_n..].fill(T::ZERO); // no input past the length
            d
        });
        let row = BackRow {
            x: &x[b * t_n * i_n..][..t_n * i_n],
            x_steps: seq.row_steps(len, i_n),
            d_out_steps: seq.row_steps(len, h),
            gates: &sv.gates[b * t_n * gp..][..t_n * gp],
            c: &sv.c[b * (t_n + 1) * hp..][..(t_n + 1) * hp],
            tanh_c: &sv.tanh_c[b * t_n * hp..][..t_n * hp],
            h: &sv.h[b * (t_n + 1) * hp..][..(t_n + 1) * hp],
            d_out: &d_out[b * t_n * h..][..t_n * h],
            dz: &mut ws.dz[b * t_n * gp..][..t_n * gp],
            acc: &mut ws.acc,
            d_in: &mut ws.d_in,
        };
        let (dh0_b, dc0_b) = (&mut dh0[b * h..][..h], &mut dc0[b * h..][..h]);
        backward_row(row, &ws.w, d_final_b, dx_b, (dh0_b, dc0_b), len, i_n, h);
    }
    // acc[k][q·Hp + u] holds Σ dz·input_k for gate row (q, u); write it out
    // as (4H, I) and (4H, H), and the bias gradient as Σ dz.
    for q in 0..4 {
        for u in 0..h {
            let (g, at) = (q * h + u, q * hp + u);
            for k in 0..i_n {
                grads.weight_ih[g * i_n + k] = ws.acc[k * gp + at];
            }
            for k in 0..h {
                grads.weight_hh[g * h + k] = ws.acc[(i_n + k) * gp + at];
            }
            grads.bias[g] = ws.acc[k_n * gp + at];
        }
    }
}

/// Whether backward's [W_ih | W_hh]ᵀ·dz fits one lane vector (I + H ≤
/// LANES): then a step's back-projection is one vector per gate row.
fn back_one_vector(i_n: usize, h: usize) -> bool {
    i_n + h <= LANES
}

/// Kp, the padded width of a back-projection row (see [`back_columns`]).
fn back_width(i_n: usize, h: usize) -> usize {
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

/// One batch row's backward buffers. x, d_out and dx are (T, ·) in time
/// order, read at their `RowSteps`; the rest is in run order.
pub(crate) struct BackRow<'a, T> {
    x: &'a [T],
    x_steps: RowSteps,
    d_out_steps: RowSteps,
    gates: &'a [T],
    c: &'a [T],
    tanh_c: &'a [T],
    h: &'a [T],
    d_out: &'a [T],
    dz: &'a mut [T],
    /// (I+H+1, 4Hp): the weight-gradient sums, added to row after row.
    acc: &'a mut [T],
    /// (Kp,): scratch for the gradient by [x_t; h_{t-1}].
    d_in: &'a mut [T],
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

/// The weight gradients of one row, after its steps: acc[f] += Σ_t
/// input_t[f] · dz_t along the gate lanes (f = I+H is the bias, input 1),
/// summed over steps in registers, several features per pass over dz.
#[inline(always)]
fn weight_sums<T: Real, S: IsaMarker>(row: &mut BackRow<'_, T>, t_n: usize, i_n: usize, h: usize) {
    let (hp, k_n) = (padded(h), i_n + h);
    let gp = 4 * hp;
    let (x, hs, one) = (row.x, row.h, [T::ONE]);
    // Feature f at step t is source[first + t · stride] (in wrapping
    // arithmetic: a reversed row's x runs backwards): x_t[f], h_{t-1}[f − I], or 1.
    let x_steps = row.x_steps;
    let input = |f: usize| -> Feature<'_, T> {
        if f < i_n {
            (x, x_steps.at(0) + f, x_steps.at(1).wrapping_sub(x_steps.at(0)))
        } else if f < k_n {
            (hs, f - i_n, hp)
        } else {
            (&one[..], 0, 0)
        }
    };
    // As many features per pass as keep 24 running sums in the 32 vector
    // registers (a Lane of f64 takes two). One feature at a time, each
    // step's multiply-adds waited on the last (four chains per pass).
    let registers = std::mem::size_of::<Lane<T>>().div_ceil(64) * gp / LANES;
    let most = (24 / registers).max(1);
    let mut f0 = 0;
    while f0 <= k_n {
        let acc = &mut row.acc[f0 * gp..];
        let group = |m: usize| input(f0 + m);
        let n = match (gp / LANES, (k_n + 1 - f0).min(most)) {
            (4, 6) => outer::<T, S, 4, 6>(acc, row.dz, gp, array(group), t_n),
            (4, 5) => outer::<T, S, 4, 5>(acc, row.dz, gp, array(group), t_n),
            (4, 4) => outer::<T, S, 4, 4>(acc, row.dz, gp, array(group), t_n),
            (4, 3) => outer::<T, S, 4, 3>(acc, row.dz, gp, array(group), t_n),
            (4, 2) => outer::<T, S, 4, 2>(acc, row.dz, gp, array(group), t_n),
            (4, _) => outer::<T, S, 4, 1>(acc, row.dz, gp, [group(0)], t_n),
            (8, 3) => outer::<T, S, 8, 3>(acc, row.dz, gp, array(group), t_n),
            (8, 2) => outer::<T, S, 8, 2>(acc, row.dz, gp, array(group), t_n),
            (8, _) => outer::<T, S, 8, 1>(acc, row.dz, gp, [group(0)], t_n),
            _ => {
                for v in (0..gp).step_by(LANES) {
                    outer::<T, S, 1, 1>(&mut acc[v..], &row.dz[v..], gp, [group(0)], t_n);
                }
                1
            }
        };
        f0 += n;
    }
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
