//! The LSTM kernel for a few batch rows (one long series, say): the gates
//! in SIMD lanes.
//!
//! The lanes kernel puts 16 batch rows in a vector; with B = 1 it would
//! compute 16 times the work. Here each batch row runs alone and the vector
//! runs along the 4H gates instead: a step is `(I+H)` broadcast
//! multiply-adds on the ⌈4H/16⌉ gate vectors, one vectorised pass of σ over
//! all gates (tanh(x) = 2σ(2x) − 1 for the g gate, by a per-lane scale), and
//! the cell update along the H units. Rows are independent and summed into
//! the weight gradients in row order, step order: results do not depend on
//! the thread count.
//!
//! Per-row buffers are flat, padded to whole lane vectors: gates (T, G4p),
//! c and h (T+1, Hp) with slot 0 the initial state, tanh c (T, Hp), where
//! G4p and Hp are 4H and H rounded up to a multiple of LANES.

use crate::activation::{sigmoid, tanh};
use crate::lstm::{LstmGrads, LstmParams, LstmShape};
use crate::real::Real;
use crate::simd::{dispatch, Lane, LANES};

/// The largest batch [`crate::lstm::Kernel::Auto`] gives to this kernel:
/// from about 4 rows on, the lanes kernel's 16-row vectors are less wasted
/// than this kernel's per-row passes.
pub const ROWS_MAX_BATCH: usize = 4;

/// The largest hidden size it takes (the 4H gates in at most 16 vectors).
pub const ROWS_MAX_HIDDEN: usize = 64;

fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

/// Working memory of the rows kernel; buffers only grow.
pub(crate) struct RowsWorkspace<T> {
    /// (B, T, G4p): activated gates (i, f, g, o) laid out as 4H values.
    gates: Vec<T>,
    /// (B, T+1, Hp): cell state before step t (slot 0: c0).
    c: Vec<T>,
    /// (B, T, Hp): tanh of the cell state after step t.
    tanh_c: Vec<T>,
    /// (B, T+1, Hp): hidden state before step t (slot 0: h0).
    h: Vec<T>,
    /// (B, T, G4p): gradient by the gate pre-activations.
    dz: Vec<T>,
    /// (I+H, G4p): [W_ih | W_hh]ᵀ, one gate vector per input feature.
    w_t: Vec<T>,
    /// (4H, Kp): [W_ih | W_hh] rows padded to Kp = I+H rounded up.
    w: Vec<T>,
    /// (G4p,) each: σ's input scale, and the output's scale and offset, per gate.
    scale_in: Vec<T>,
    scale_out: Vec<T>,
    offset_out: Vec<T>,
    /// (G4p,): the bias, padded.
    bias: Vec<T>,
    /// (I+H, G4p): weight-gradient accumulators, one gate vector per feature.
    acc: Vec<T>,
    /// (Kp,): backward's gradient by [x_t; h_{t-1}] at one step.
    d_in: Vec<T>,
}

impl<T: Real> RowsWorkspace<T> {
    pub(crate) fn new() -> Self {
        RowsWorkspace {
            gates: Vec::new(),
            c: Vec::new(),
            tanh_c: Vec::new(),
            h: Vec::new(),
            dz: Vec::new(),
            w_t: Vec::new(),
            w: Vec::new(),
            scale_in: Vec::new(),
            scale_out: Vec::new(),
            offset_out: Vec::new(),
            bias: Vec::new(),
            acc: Vec::new(),
            d_in: Vec::new(),
        }
    }
}

fn fit<T: Real>(v: &mut Vec<T>, n: usize) {
    v.resize(n, T::ZERO);
}

/// Forward over x (B, T, I) from (h0, c0) or zeros; writes out (B, T, H)
/// and (h_n, c_n), each (B, H).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut RowsWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (g4, g4p, hp) = (4 * h, padded(4 * h), padded(h));
    fit(&mut ws.gates, b_n * t_n * g4p);
    fit(&mut ws.c, b_n * (t_n + 1) * hp);
    fit(&mut ws.tanh_c, b_n * t_n * hp);
    fit(&mut ws.h, b_n * (t_n + 1) * hp);
    fit(&mut ws.w_t, (i_n + h) * g4p);
    for g in 0..g4 {
        for k in 0..i_n {
            ws.w_t[k * g4p + g] = p.weight_ih[g * i_n + k];
        }
        for k in 0..h {
            ws.w_t[(i_n + k) * g4p + g] = p.weight_hh[g * h + k];
        }
    }
    fit(&mut ws.bias, g4p);
    ws.bias[..g4].copy_from_slice(p.bias);
    // σ on every gate; for g: tanh(z) = 2σ(2z) − 1.
    let two = T::ONE + T::ONE;
    for (v, (on_g, off_g)) in [(&mut ws.scale_in, (two, T::ONE)), (&mut ws.scale_out, (two, T::ONE))] {
        v.clear();
        v.resize(g4p, off_g);
        v[2 * h..3 * h].fill(on_g);
    }
    ws.offset_out.clear();
    ws.offset_out.resize(g4p, T::ZERO);
    ws.offset_out[2 * h..3 * h].fill(-T::ONE);

    for b in 0..b_n {
        let c_b = &mut ws.c[b * (t_n + 1) * hp..][..(t_n + 1) * hp];
        let h_b = &mut ws.h[b * (t_n + 1) * hp..][..(t_n + 1) * hp];
        c_b[..hp].fill(T::ZERO);
        h_b[..hp].fill(T::ZERO);
        if let Some((h0, c0)) = initial {
            h_b[..h].copy_from_slice(&h0[b * h..][..h]);
            c_b[..h].copy_from_slice(&c0[b * h..][..h]);
        }
        let row = Row {
            x: &x[b * t_n * i_n..][..t_n * i_n],
            gates: &mut ws.gates[b * t_n * g4p..][..t_n * g4p],
            c: c_b,
            tanh_c: &mut ws.tanh_c[b * t_n * hp..][..t_n * hp],
            h: h_b,
        };
        let consts = Consts {
            w_t: &ws.w_t,
            bias: &ws.bias,
            scale_in: &ws.scale_in,
            scale_out: &ws.scale_out,
            offset_out: &ws.offset_out,
        };
        forward_row(row, &consts, t_n, i_n, h);
        for t in 0..t_n {
            out[(b * t_n + t) * h..][..h].copy_from_slice(&ws.h[(b * (t_n + 1) + t + 1) * hp..][..h]);
        }
        h_n[b * h..][..h].copy_from_slice(&ws.h[(b * (t_n + 1) + t_n) * hp..][..h]);
        c_n[b * h..][..h].copy_from_slice(&ws.c[(b * (t_n + 1) + t_n) * hp..][..h]);
    }
}

/// One batch row's forward buffers.
pub(crate) struct Row<'a, T> {
    x: &'a [T],
    gates: &'a mut [T],
    c: &'a mut [T],
    tanh_c: &'a mut [T],
    h: &'a mut [T],
}

/// What every row of a forward pass shares.
pub(crate) struct Consts<'a, T> {
    w_t: &'a [T],
    bias: &'a [T],
    scale_in: &'a [T],
    scale_out: &'a [T],
    offset_out: &'a [T],
}

dispatch!(fn forward_row<T: Real>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) => forward_row_impl);

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
fn forward_row_impl<T: Real>(row: Row<'_, T>, k: &Consts<'_, T>, t_n: usize, i_n: usize, h: usize) {
    let (g4p, hp) = (padded(4 * h), padded(h));
    let ng = g4p / LANES;
    for t in 0..t_n {
        let gates = &mut row.gates[t * g4p..][..g4p];
        // z = bias + Σ_k input_k · (column k of [W_ih | W_hh]), over the gate lanes.
        for v in 0..ng {
            let mut acc = load(k.bias, v * LANES);
            for f in 0..i_n + h {
                let input = if f < i_n {
                    row.x[t * i_n + f]
                } else {
                    row.h[t * hp + f - i_n]
                };
                let w = load(k.w_t, f * g4p + v * LANES);
                for l in 0..LANES {
                    acc[l] = w[l].mul_add(input, acc[l]);
                }
            }
            let (si, so, oo) = (
                load(k.scale_in, v * LANES),
                load(k.scale_out, v * LANES),
                load(k.offset_out, v * LANES),
            );
            for l in 0..LANES {
                acc[l] = sigmoid(acc[l] * si[l]).mul_add(so[l], oo[l]);
            }
            store(gates, v * LANES, acc);
        }
        // The cell update along the H units, a lane vector at a time.
        for u in (0..h).step_by(LANES) {
            let i = load_part(gates, u, h);
            let f = load_part(gates, h + u, 2 * h);
            let g = load_part(gates, 2 * h + u, 3 * h);
            let o = load_part(gates, 3 * h + u, 4 * h);
            let c_prev = load(row.c, t * hp + u);
            let (mut c, mut tc, mut h_new) = (Lane::splat(T::ZERO), Lane::splat(T::ZERO), Lane::splat(T::ZERO));
            for l in 0..LANES {
                c[l] = f[l].mul_add(c_prev[l], i[l] * g[l]);
                tc[l] = tanh(c[l]);
                h_new[l] = o[l] * tc[l];
            }
            store(row.c, (t + 1) * hp + u, c);
            store(row.tanh_c, t * hp + u, tc);
            store(row.h, (t + 1) * hp + u, h_new);
        }
    }
}

/// Backward through time over the last forward; `x` is its input. Writes
/// the weight gradients (overwriting), dx (B, T, I) when asked, dh0 and dc0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut RowsWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    x: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    mut dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (g4, g4p, hp, k_n) = (4 * h, padded(4 * h), padded(h), s.input + s.hidden);
    let kp = padded(k_n);
    fit(&mut ws.dz, b_n * t_n * g4p);
    fit(&mut ws.w, g4 * kp);
    for g in 0..g4 {
        let row = &mut ws.w[g * kp..][..kp];
        row[..i_n].copy_from_slice(&p.weight_ih[g * i_n..][..i_n]);
        row[i_n..k_n].copy_from_slice(&p.weight_hh[g * h..][..h]);
    }
    ws.acc.clear();
    ws.acc.resize(k_n * g4p, T::ZERO);
    fit(&mut ws.d_in, kp);
    for b in 0..b_n {
        let d_final_b = d_final.map(|(dh, dc)| (&dh[b * h..][..h], &dc[b * h..][..h]));
        let dx_b = dx.as_deref_mut().map(|d| &mut d[b * t_n * i_n..][..t_n * i_n]);
        let row = BackRow {
            x: &x[b * t_n * i_n..][..t_n * i_n],
            gates: &ws.gates[b * t_n * g4p..][..t_n * g4p],
            c: &ws.c[b * (t_n + 1) * hp..][..(t_n + 1) * hp],
            tanh_c: &ws.tanh_c[b * t_n * hp..][..t_n * hp],
            h: &ws.h[b * (t_n + 1) * hp..][..(t_n + 1) * hp],
            d_out: &d_out[b * t_n * h..][..t_n * h],
            dz: &mut ws.dz[b * t_n * g4p..][..t_n * g4p],
            acc: &mut ws.acc,
            d_in: &mut ws.d_in,
        };
        let (dh0_b, dc0_b) = (&mut dh0[b * h..][..h], &mut dc0[b * h..][..h]);
        backward_row(row, &ws.w, d_final_b, dx_b, (dh0_b, dc0_b), t_n, i_n, h);
    }
    // acc[k][g] holds Σ dz[g]·input[k]; write it out as (4H, I) and (4H, H).
    for g in 0..g4 {
        for k in 0..i_n {
            grads.weight_ih[g * i_n + k] = ws.acc[k * g4p + g];
        }
        for k in 0..h {
            grads.weight_hh[g * h + k] = ws.acc[(i_n + k) * g4p + g];
        }
    }
    grads.bias.fill(T::ZERO);
    for dz_row in ws.dz.chunks_exact(g4p) {
        for (b, &d) in grads.bias.iter_mut().zip(dz_row) {
            *b += d;
        }
    }
}

/// One batch row's backward buffers.
pub(crate) struct BackRow<'a, T> {
    x: &'a [T],
    gates: &'a [T],
    c: &'a [T],
    tanh_c: &'a [T],
    h: &'a [T],
    d_out: &'a [T],
    dz: &'a mut [T],
    /// (I+H, G4p): the weight-gradient sums, added to row after row.
    acc: &'a mut [T],
    /// (Kp,): scratch for the gradient by [x_t; h_{t-1}].
    d_in: &'a mut [T],
}

dispatch!(fn backward_row<T: Real>(
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
fn backward_row_impl<T: Real>(
    row: BackRow<'_, T>,
    w: &[T],
    d_final: Option<(&[T], &[T])>,
    mut dx: Option<&mut [T]>,
    (dh0, dc0): (&mut [T], &mut [T]),
    t_n: usize,
    i_n: usize,
    h: usize,
) {
    let (g4, g4p, hp) = (4 * h, padded(4 * h), padded(h));
    let k_n = i_n + h;
    let kp = padded(k_n);
    let one = T::ONE;
    // Running gradients by h and c (at most ROWS_MAX_HIDDEN units).
    let mut dh = [T::ZERO; ROWS_MAX_HIDDEN];
    let mut dc = [T::ZERO; ROWS_MAX_HIDDEN];
    let d_in = row.d_in;
    if let Some((dh_n, dc_n)) = d_final {
        dh[..h].copy_from_slice(dh_n);
        dc[..h].copy_from_slice(dc_n);
    }
    for t in (0..t_n).rev() {
        let gates = &row.gates[t * g4p..][..g4p];
        let dz = &mut row.dz[t * g4p..][..g4p];
        for u in (0..h).step_by(LANES) {
            let i = load_part(gates, u, h);
            let f = load_part(gates, h + u, 2 * h);
            let g = load_part(gates, 2 * h + u, 3 * h);
            let o = load_part(gates, 3 * h + u, 4 * h);
            let tc = load(row.tanh_c, t * hp + u);
            let c_prev = load(row.c, t * hp + u);
            let d_out = load_part(row.d_out, t * h + u, (t + 1) * h);
            let (dh_u, dc_u) = (load_part(&dh, u, h), load_part(&dc, u, h));
            let zero = Lane::splat(T::ZERO);
            let (mut di, mut df, mut dg, mut d_o, mut dc_prev) = (zero, zero, zero, zero, zero);
            for l in 0..LANES {
                let dh_l = d_out[l] + dh_u[l];
                let dc_l = (dh_l * o[l]).mul_add(one - tc[l] * tc[l], dc_u[l]);
                di[l] = dc_l * g[l] * i[l] * (one - i[l]);
                df[l] = dc_l * c_prev[l] * f[l] * (one - f[l]);
                dg[l] = dc_l * i[l] * (one - g[l] * g[l]);
                d_o[l] = dh_l * tc[l] * o[l] * (one - o[l]);
                dc_prev[l] = dc_l * f[l];
            }
            let n = LANES.min(h - u);
            dz[u..u + n].copy_from_slice(&di.0[..n]);
            dz[h + u..h + u + n].copy_from_slice(&df.0[..n]);
            dz[2 * h + u..2 * h + u + n].copy_from_slice(&dg.0[..n]);
            dz[3 * h + u..3 * h + u + n].copy_from_slice(&d_o.0[..n]);
            dc[u..u + n].copy_from_slice(&dc_prev.0[..n]);
        }
        // [dx_t; dh_{t-1}] = [W_ih | W_hh]ᵀ · dz_t, along the input lanes.
        for v in (0..kp).step_by(LANES) {
            let mut acc = Lane::splat(T::ZERO);
            for (g, &d) in dz[..g4].iter().enumerate() {
                let wv = load(w, g * kp + v);
                for l in 0..LANES {
                    acc[l] = wv[l].mul_add(d, acc[l]);
                }
            }
            store(d_in, v, acc);
        }
        if let Some(dx) = dx.as_deref_mut() {
            dx[t * i_n..][..i_n].copy_from_slice(&d_in[..i_n]);
        }
        dh[..h].copy_from_slice(&d_in[i_n..k_n]);
        // The weight gradients: acc[k] += input_k · dz_t, along the gate lanes.
        for f in 0..k_n {
            let input = if f < i_n {
                row.x[t * i_n + f]
            } else {
                row.h[t * hp + f - i_n]
            };
            for v in (0..g4p).step_by(LANES) {
                let (mut a, d) = (load(row.acc, f * g4p + v), load(dz, v));
                for l in 0..LANES {
                    a[l] = d[l].mul_add(input, a[l]);
                }
                store(row.acc, f * g4p + v, a);
            }
        }
    }
    dh0.copy_from_slice(&dh[..h]);
    dc0.copy_from_slice(&dc[..h]);
}
