//! The LSTM kernel for larger sizes: matrix products from the GEMM crate.
//!
//! Batch-major buffers (B, T, ·). Each step is two products over its B
//! rows, `x_t·W_ihᵀ` then `+ h·W_hhᵀ`, and one fused pass over the gates:
//! the same products whether the pass saves activations or not, and in
//! `step`, since the GEMM crate's order of summation depends on a
//! product's shape (one product over all B·T rows gave other bits). Backward runs the
//! steps in reverse (one `dz_t·W_hh` product each), then gathers the weight
//! gradients in one product per matrix over all B·T rows. The products split
//! the output, never a sum, across threads, so the thread count does not
//! change any result.

use super::cell::{cell_backward, cell_forward};
use super::params::{LstmGrads, LstmParams, LstmShape, Sequences};
use super::poison;
use crate::matmul::column_sums;
use crate::matmul::{matmul, Mat, MatMut};
use crate::simd::activation::{sigmoid, tanh};
use crate::simd::Real;
use crate::simd::{dispatch, IsaMarker};

/// The activations forward saves for backward, cut from a caller's buffer
/// of [`saved_len`] elements (see [`saved_view`]), batch-major:
struct Saved<M> {
    /// (B, T, 4H): the pre-activations z during forward, then the gates (i, f, g, o).
    gates: M,
    /// (B, T, H): c after each step.
    cells: M,
    /// (B, T, H): tanh(c) after each step.
    tanh_cells: M,
    /// (B, T, H): h before each step (h0 at t = 0).
    h_prev: M,
    /// (B, H): initial cell state.
    c0: M,
}

/// Elements of the saved buffers, in [`Saved`]'s order.
fn saved_parts(s: LstmShape) -> [usize; 5] {
    let (n, h) = (s.batch * s.steps, s.hidden);
    [n * 4 * h, n * h, n * h, n * h, s.batch * h]
}

/// Elements a saved buffer needs for shape `s`.
pub(crate) fn saved_len(s: LstmShape) -> usize {
    saved_parts(s).iter().sum()
}

fn saved_view<T>(buf: &[T], s: LstmShape) -> Saved<&[T]> {
    let [ng, nc, nt, nh, n0] = saved_parts(s);
    let (gates, rest) = buf.split_at(ng);
    let (cells, rest) = rest.split_at(nc);
    let (tanh_cells, rest) = rest.split_at(nt);
    let (h_prev, rest) = rest.split_at(nh);
    Saved {
        gates,
        cells,
        tanh_cells,
        h_prev,
        c0: &rest[..n0],
    }
}

fn saved_view_mut<T>(buf: &mut [T], s: LstmShape) -> Saved<&mut [T]> {
    let [ng, nc, nt, nh, n0] = saved_parts(s);
    let (gates, rest) = buf.split_at_mut(ng);
    let (cells, rest) = rest.split_at_mut(nc);
    let (tanh_cells, rest) = rest.split_at_mut(nt);
    let (h_prev, rest) = rest.split_at_mut(nh);
    Saved {
        gates,
        cells,
        tanh_cells,
        h_prev,
        c0: &mut rest[..n0],
    }
}

/// The GEMM kernel's scratch; buffers only grow.
pub(crate) struct GemmScratch<T> {
    /// (B, T, 4H): gradient by the pre-activations z.
    dz: Vec<T>,
    /// (B, H) each: the running h, c and tanh c of a forward pass.
    h: Vec<T>,
    c: Vec<T>,
    tanh_c: Vec<T>,
    /// (B, 4H) and (B, I): one step's z and input, for a forward pass
    /// that saves nothing.
    z: Vec<T>,
    x_t: Vec<T>,
}

impl<T: Real> GemmScratch<T> {
    pub(crate) fn new() -> Self {
        GemmScratch {
            dz: Vec::new(),
            h: Vec::new(),
            c: Vec::new(),
            tanh_c: Vec::new(),
            z: Vec::new(),
            x_t: Vec::new(),
        }
    }
}

/// The steps a pass runs: the longest row's.
fn run_steps(s: LstmShape, seq: Sequences<'_>) -> usize {
    (0..s.batch).map(|b| seq.len(b, s.steps)).max().unwrap_or(0)
}

/// Forward over x (B, T, I) from (h0, c0) or zeros, each row as `seq`
/// says; writes out (B, T, H), the final (h_n, c_n), each (B, H), and,
/// when given, `saved` ([`saved_len`] elements, in run-step order). Every
/// row takes part in each step's product; a row that has stopped keeps its
/// state (its input is never read).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut GemmScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    saved: Option<&mut [T]>,
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let g4 = 4 * h;
    let w_ih_t = Mat::rows(p.weight_ih, g4, i_n).t();
    let w_hh_t = Mat::rows(p.weight_hh, g4, h).t();
    for buf in [&mut ws.h, &mut ws.c, &mut ws.tanh_c] {
        poison::fit(buf, b_n * h);
    }
    match initial {
        Some((h0, c0)) => {
            ws.h.copy_from_slice(h0);
            ws.c.copy_from_slice(c0);
        }
        None => {
            ws.h.fill(T::ZERO);
            ws.c.fill(T::ZERO);
        }
    }
    let mut saved = saved.map(|v| saved_view_mut(v, s));
    if let Some(sv) = saved.as_mut() {
        sv.c0.copy_from_slice(&ws.c);
    }
    poison::fit(&mut ws.z, b_n * g4);
    poison::fit(&mut ws.x_t, b_n * i_n);
    // Past its length a row's output is zero.
    for b in 0..b_n {
        out[(b * t_n + seq.len(b, t_n)) * h..(b + 1) * t_n * h].fill(T::ZERO);
    }
    let run = run_steps(s, seq);
    for step in 0..run {
        // z_t = x_t·W_ihᵀ + h_{t-1}·W_hhᵀ over the B rows of this step, the
        // same two products whether the pass saves or not (and in `step`,
        // which is this pass over one step): the GEMM crate's order of
        // summation depends on the product's shape, so every path must
        // form a step's z from products of the same shapes to give the
        // same bits.
        for b in 0..b_n {
            let len = seq.len(b, t_n);
            let x_b = &mut ws.x_t[b * i_n..][..i_n];
            if step < len {
                let t = seq.row_steps(len, 1).at(step);
                x_b.copy_from_slice(&x[(b * t_n + t) * i_n..][..i_n]);
            } else {
                x_b.fill(T::ZERO);
            }
        }
        matmul(
            MatMut::rows(&mut ws.z, b_n, g4),
            false,
            Mat::rows(&ws.x_t, b_n, i_n),
            w_ih_t,
        );
        matmul(MatMut::rows(&mut ws.z, b_n, g4), true, Mat::rows(&ws.h, b_n, h), w_hh_t);
        if let Some(sv) = saved.as_mut() {
            for b in 0..b_n {
                sv.h_prev[(b * t_n + step) * h..][..h].copy_from_slice(&ws.h[b * h..][..h]);
            }
        }
        gate_step(
            &mut ws.z,
            g4,
            &mut ws.c,
            &mut ws.tanh_c,
            &mut ws.h,
            p.bias,
            seq.lengths,
            step,
            h,
        );
        for b in 0..b_n {
            let len = seq.len(b, t_n);
            if step < len {
                let t = seq.row_steps(len, 1).at(step);
                out[(b * t_n + t) * h..][..h].copy_from_slice(&ws.h[b * h..][..h]);
            }
        }
        if let Some(sv) = saved.as_mut() {
            for b in 0..b_n {
                let at = (b * t_n + step) * h;
                sv.gates[at * 4..][..g4].copy_from_slice(&ws.z[b * g4..][..g4]);
                sv.cells[at..at + h].copy_from_slice(&ws.c[b * h..][..h]);
                sv.tanh_cells[at..at + h].copy_from_slice(&ws.tanh_c[b * h..][..h]);
            }
        }
    }
    if let Some(sv) = saved.as_mut() {
        // Backward's weight gradients sum over every row and step (dz is
        // zero past the longest row): what they read there must be written.
        for b in 0..b_n {
            sv.h_prev[(b * t_n + run) * h..(b + 1) * t_n * h].fill(T::ZERO);
        }
    }
    // A stopped row kept its state: the running h and c are (h_n, c_n).
    h_n.copy_from_slice(&ws.h);
    c_n.copy_from_slice(&ws.c);
}

/// Reverses the order of the rows (of `width` values) of `m`.
fn reverse_rows<T>(m: &mut [T], width: usize) {
    let n = m.len() / width;
    for r in 0..n / 2 {
        let (top, bottom) = m.split_at_mut((n - 1 - r) * width);
        top[r * width..][..width].swap_with_slice(&mut bottom[..width]);
    }
}

dispatch!(fn gate_step<T: Real, S: IsaMarker>(
    z: &mut [T],
    z_stride: usize,
    c: &mut [T],
    tanh_c: &mut [T],
    h_out: &mut [T],
    bias: &[T],
    lengths: Option<&[usize]>,
    step: usize,
    h: usize,
) => gate_step_impl);

/// The fused gate pass of one step over every batch row: z (row b at
/// b·z_stride, 4H) → gates (i, f, g, o) in place, c (B, H) from the
/// previous c to the new, tanh c, and h. A row past its length keeps its
/// c and h.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_step_impl<T: Real, S: IsaMarker>(
    z: &mut [T],
    z_stride: usize,
    c: &mut [T],
    tanh_c: &mut [T],
    h_out: &mut [T],
    bias: &[T],
    lengths: Option<&[usize]>,
    step: usize,
    h: usize,
) {
    let (bi, bf, bg, bo) = (&bias[..h], &bias[h..2 * h], &bias[2 * h..3 * h], &bias[3 * h..4 * h]);
    for (b, ((c_b, tc_b), h_b)) in c
        .chunks_exact_mut(h)
        .zip(tanh_c.chunks_exact_mut(h))
        .zip(h_out.chunks_exact_mut(h))
        .enumerate()
    {
        if lengths.is_some_and(|l| step >= l[b]) {
            continue;
        }
        let z = &mut z[b * z_stride..][..4 * h];
        let (zi, rest) = z.split_at_mut(h);
        let (zf, rest) = rest.split_at_mut(h);
        let (zg, zo) = rest.split_at_mut(h);
        for k in 0..h {
            let i = sigmoid::<T, S>(zi[k] + bi[k]);
            let f = sigmoid::<T, S>(zf[k] + bf[k]);
            let g = tanh::<T, S>(zg[k] + bg[k]);
            let o = sigmoid::<T, S>(zo[k] + bo[k]);
            let (c_new, tc, h_k) = cell_forward::<T, S>(i, f, g, o, c_b[k]);
            zi[k] = i;
            zf[k] = f;
            zg[k] = g;
            zo[k] = o;
            c_b[k] = c_new;
            tc_b[k] = tc;
            h_b[k] = h_k;
        }
    }
}

/// Backward through time over the forward (see [`forward`]) that wrote
/// `saved`; `x` is that forward's input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    scratch: &mut GemmScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    seq: Sequences<'_>,
    saved: &[T],
    x: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh: &mut [T],
    dc: &mut [T],
) {
    let (b_n, t_n, i_n, h) = (s.batch, s.steps, s.input, s.hidden);
    let (g4, n) = (4 * h, s.batch * s.steps);
    poison::fit(&mut scratch.dz, n * g4);
    let sv = saved_view(saved, s);
    let dz_all = &mut scratch.dz;
    let whole = seq.is_whole(t_n);
    match d_final {
        Some((dh_n, dc_n)) if whole => {
            dh.copy_from_slice(dh_n);
            dc.copy_from_slice(dc_n);
        }
        _ => {
            dh.fill(T::ZERO);
            dc.fill(T::ZERO);
        }
    }
    let run = run_steps(s, seq);
    // dz past the longest row is zero (the weight gradients sum every row).
    for b in 0..b_n {
        dz_all[(b * t_n + run) * g4..(b + 1) * t_n * g4].fill(T::ZERO);
    }
    let w_hh = Mat::rows(p.weight_hh, g4, h);
    for step in (0..run).rev() {
        if let (false, Some((dh_n, dc_n))) = (whole, d_final) {
            // A row ending here starts from the final-state gradient (until
            // then its gradients are zero: its stopped steps add nothing).
            for b in (0..b_n).filter(|&b| seq.len(b, t_n) == step + 1) {
                dh[b * h..][..h].copy_from_slice(&dh_n[b * h..][..h]);
                dc[b * h..][..h].copy_from_slice(&dc_n[b * h..][..h]);
            }
        }
        gate_grad_step(
            sv.gates,
            sv.cells,
            sv.tanh_cells,
            sv.c0,
            d_out,
            dz_all,
            dh,
            dc,
            seq.lengths,
            seq.reverse,
            b_n,
            t_n,
            h,
            step,
        );
        // dh_{t-1} = dz_t · W_hh
        matmul(
            MatMut::rows(dh, b_n, h),
            false,
            Mat::strided(&dz_all[step * g4..], b_n, g4, t_n * g4, 1),
            w_hh,
        );
    }
    let dz = Mat::rows(dz_all, n, g4);
    matmul(
        MatMut::rows(grads.weight_hh, g4, h),
        false,
        dz.t(),
        Mat::rows(sv.h_prev, n, h),
    );
    column_sums(dz_all, g4, grads.bias);
    if whole {
        matmul(
            MatMut::rows(grads.weight_ih, g4, i_n),
            false,
            dz.t(),
            Mat::rows(x, n, i_n),
        );
        if let Some(dx) = dx {
            matmul(MatMut::rows(dx, n, i_n), false, dz, Mat::rows(p.weight_ih, g4, i_n));
        }
        return;
    }
    // Row by row over its real steps, dz back in time order, so x's
    // padding is never read and dx's is zero.
    let mut dx = dx;
    for b in 0..b_n {
        let len = seq.len(b, t_n);
        let dz_b = &mut dz_all[b * t_n * g4..][..len * g4];
        if seq.reverse {
            reverse_rows(dz_b, g4);
        }
        let dz_b = Mat::rows(dz_b, len, g4);
        matmul(
            MatMut::rows(grads.weight_ih, g4, i_n),
            b > 0,
            dz_b.t(),
            Mat::rows(&x[b * t_n * i_n..], len, i_n),
        );
        if let Some(dx) = dx.as_deref_mut() {
            let dx_b = &mut dx[b * t_n * i_n..][..t_n * i_n];
            matmul(
                MatMut::rows(dx_b, len, i_n),
                false,
                dz_b,
                Mat::rows(p.weight_ih, g4, i_n),
            );
            dx_b[len * i_n..].fill(T::ZERO);
        }
    }
}

dispatch!(fn gate_grad_step<T: Real, S: IsaMarker>(
    gates: &[T],
    cells: &[T],
    tanh_cells: &[T],
    c0: &[T],
    d_out: &[T],
    dz: &mut [T],
    dh: &[T],
    dc: &mut [T],
    lengths: Option<&[usize]>,
    reverse: bool,
    b_n: usize,
    t_n: usize,
    h: usize,
    step: usize,
) => gate_grad_step_impl);

/// The gate gradients of one run step over every batch row: from dh (by
/// h_t, from later steps), d_out (at the row's time for this step) and dc
/// (by c_t), to dz_t; dc becomes the gradient by c_{t-1}. A row past its
/// length gets dz = 0 and keeps its (zero) dc.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_grad_step_impl<T: Real, S: IsaMarker>(
    gates: &[T],
    cells: &[T],
    tanh_cells: &[T],
    c0: &[T],
    d_out: &[T],
    dz: &mut [T],
    dh: &[T],
    dc: &mut [T],
    lengths: Option<&[usize]>,
    reverse: bool,
    b_n: usize,
    t_n: usize,
    h: usize,
    step: usize,
) {
    let seq = Sequences { lengths, reverse };
    for b in 0..b_n {
        let row = b * t_n + step;
        let dz = &mut dz[row * 4 * h..][..4 * h];
        let len = seq.len(b, t_n);
        if step >= len {
            dz.fill(T::ZERO);
            continue;
        }
        let gate = &gates[row * 4 * h..][..4 * h];
        let c_prev = if step == 0 {
            &c0[b * h..][..h]
        } else {
            &cells[(row - 1) * h..][..h]
        };
        let tanh_c = &tanh_cells[row * h..][..h];
        let t = seq.row_steps(len, 1).at(step);
        let d_out_row = &d_out[(b * t_n + t) * h..][..h];
        let dh = &dh[b * h..][..h];
        let dc = &mut dc[b * h..][..h];
        for k in 0..h {
            let gates = [gate[k], gate[h + k], gate[2 * h + k], gate[3 * h + k]];
            let dh_k = d_out_row[k] + dh[k];
            let (d, dc_prev) = cell_backward::<T, S>(gates, tanh_c[k], c_prev[k], dh_k, dc[k]);
            for (q, d_q) in d.into_iter().enumerate() {
                dz[q * h + k] = d_q;
            }
            dc[k] = dc_prev;
        }
    }
}
