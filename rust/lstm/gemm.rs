//! The LSTM kernel for larger sizes: matrix products from the GEMM crate.
//!
//! Batch-major buffers (B, T, ·). The input projection of all B·T rows is
//! one product; each step adds `h·W_hhᵀ` (a strided product over the B rows
//! of step t) and makes one fused pass over the gates. Backward runs the
//! steps in reverse (one `dz_t·W_hh` product each), then gathers the weight
//! gradients in one product per matrix over all B·T rows. The products split
//! the output, never a sum, across threads, so the thread count does not
//! change any result.

use super::cell::{cell_backward, cell_forward};
use super::params::{LstmGrads, LstmParams, LstmShape};
use crate::matmul::column_sums;
use crate::matmul::{matmul, Mat, MatMut};
use crate::simd::activation::{sigmoid, tanh};
use crate::simd::Real;
use crate::simd::{dispatch, IsaMarker};

/// Working memory of the GEMM kernel; buffers only grow.
pub(crate) struct GemmWorkspace<T> {
    /// (B, T, 4H): the pre-activations z during forward, then the gates (i, f, g, o).
    gates: Vec<T>,
    /// (B, T, H): c after each step.
    cells: Vec<T>,
    /// (B, T, H): tanh(c) after each step.
    tanh_cells: Vec<T>,
    /// (B, T, H): h before each step (h0 at t = 0).
    h_prev: Vec<T>,
    /// (B, H): initial cell state.
    c0: Vec<T>,
    /// (B, T, 4H): gradient by the pre-activations z.
    dz: Vec<T>,
}

impl<T: Real> GemmWorkspace<T> {
    pub(crate) fn new() -> Self {
        GemmWorkspace {
            gates: Vec::new(),
            cells: Vec::new(),
            tanh_cells: Vec::new(),
            h_prev: Vec::new(),
            c0: Vec::new(),
            dz: Vec::new(),
        }
    }
}

/// Forward over x (B, T, I) from (h0, c0) or zeros; writes out (B, T, H)
/// and the final (h_n, c_n), each (B, H).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Real>(
    ws: &mut GemmWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    x: &[T],
    initial: Option<(&[T], &[T])>,
    out: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
) {
    let (b_n, t_n, h) = (s.batch, s.steps, s.hidden);
    let (g4, n) = (4 * h, s.batch * s.steps);
    ws.gates.resize(n * g4, T::ZERO);
    ws.cells.resize(n * h, T::ZERO);
    ws.tanh_cells.resize(n * h, T::ZERO);
    ws.h_prev.resize(n * h, T::ZERO);
    ws.c0.resize(b_n * h, T::ZERO);

    // z = x·W_ihᵀ for all B·T rows at once.
    matmul(
        MatMut::rows(&mut ws.gates, n, g4),
        false,
        Mat::rows(x, n, s.input),
        Mat::rows(p.weight_ih, g4, s.input).t(),
    );
    for b in 0..b_n {
        let row = &mut ws.h_prev[b * t_n * h..][..h];
        match initial {
            Some((h0, _)) => row.copy_from_slice(&h0[b * h..(b + 1) * h]),
            None => row.fill(T::ZERO),
        }
    }
    match initial {
        Some((_, c0)) => ws.c0.copy_from_slice(c0),
        None => ws.c0.fill(T::ZERO),
    }

    let w_hh_t = Mat::rows(p.weight_hh, g4, h).t();
    for t in 0..t_n {
        // z_t += h_{t-1}·W_hhᵀ over rows b·T + t.
        matmul(
            MatMut::strided(&mut ws.gates[t * g4..], b_n, g4, t_n * g4, 1),
            true,
            Mat::strided(&ws.h_prev[t * h..], b_n, h, t_n * h, 1),
            w_hh_t,
        );
        gate_step(
            &mut ws.gates,
            &mut ws.cells,
            &mut ws.tanh_cells,
            &ws.c0,
            out,
            p.bias,
            b_n,
            t_n,
            h,
            t,
        );
        for b in 0..b_n {
            if t + 1 < t_n {
                let row = b * t_n + t;
                ws.h_prev[(row + 1) * h..(row + 2) * h].copy_from_slice(&out[row * h..(row + 1) * h]);
            }
        }
    }
    for b in 0..b_n {
        let last = (b * t_n + t_n - 1) * h;
        h_n[b * h..(b + 1) * h].copy_from_slice(&out[last..last + h]);
        c_n[b * h..(b + 1) * h].copy_from_slice(&ws.cells[last..last + h]);
    }
}

dispatch!(fn gate_step<T: Real, S: IsaMarker>(
    gates: &mut [T],
    cells: &mut [T],
    tanh_cells: &mut [T],
    c0: &[T],
    out: &mut [T],
    bias: &[T],
    b_n: usize,
    t_n: usize,
    h: usize,
    t: usize,
) => gate_step_impl);

/// The fused gate pass of step t over every batch row: z → (i, f, g, o),
/// c, tanh(c), h.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_step_impl<T: Real, S: IsaMarker>(
    gates: &mut [T],
    cells: &mut [T],
    tanh_cells: &mut [T],
    c0: &[T],
    out: &mut [T],
    bias: &[T],
    b_n: usize,
    t_n: usize,
    h: usize,
    t: usize,
) {
    let (bi, bf, bg, bo) = (&bias[..h], &bias[h..2 * h], &bias[2 * h..3 * h], &bias[3 * h..4 * h]);
    for b in 0..b_n {
        let row = b * t_n + t;
        let z = &mut gates[row * 4 * h..][..4 * h];
        let (cells_before, cells_rest) = cells.split_at_mut(row * h);
        let c_prev = if t == 0 {
            &c0[b * h..(b + 1) * h]
        } else {
            &cells_before[(row - 1) * h..]
        };
        let c_out = &mut cells_rest[..h];
        let tc_out = &mut tanh_cells[row * h..][..h];
        let h_out = &mut out[row * h..][..h];
        let (zi, rest) = z.split_at_mut(h);
        let (zf, rest) = rest.split_at_mut(h);
        let (zg, zo) = rest.split_at_mut(h);
        for k in 0..h {
            let i = sigmoid(zi[k] + bi[k]);
            let f = sigmoid(zf[k] + bf[k]);
            let g = tanh(zg[k] + bg[k]);
            let o = sigmoid(zo[k] + bo[k]);
            let (c, tc, h_k) = cell_forward(i, f, g, o, c_prev[k]);
            zi[k] = i;
            zf[k] = f;
            zg[k] = g;
            zo[k] = o;
            c_out[k] = c;
            tc_out[k] = tc;
            h_out[k] = h_k;
        }
    }
}

/// Backward through time over the last forward (see [`forward`]); `x` and
/// `out` are that forward's input and output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Real>(
    ws: &mut GemmWorkspace<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    x: &[T],
    d_out: &[T],
    d_final: Option<(&[T], &[T])>,
    dx: Option<&mut [T]>,
    grads: LstmGrads<'_, T>,
    dh: &mut [T],
    dc: &mut [T],
) {
    let (b_n, t_n, h) = (s.batch, s.steps, s.hidden);
    let (g4, n) = (4 * h, s.batch * s.steps);
    ws.dz.resize(n * g4, T::ZERO);
    match d_final {
        Some((dh_n, dc_n)) => {
            dh.copy_from_slice(dh_n);
            dc.copy_from_slice(dc_n);
        }
        None => {
            dh.fill(T::ZERO);
            dc.fill(T::ZERO);
        }
    }
    let w_hh = Mat::rows(p.weight_hh, g4, h);
    for t in (0..t_n).rev() {
        gate_grad_step(
            &ws.gates,
            &ws.cells,
            &ws.tanh_cells,
            &ws.c0,
            d_out,
            &mut ws.dz,
            dh,
            dc,
            b_n,
            t_n,
            h,
            t,
        );
        // dh_{t-1} = dz_t · W_hh
        matmul(
            MatMut::rows(dh, b_n, h),
            false,
            Mat::strided(&ws.dz[t * g4..], b_n, g4, t_n * g4, 1),
            w_hh,
        );
    }
    let dz = Mat::rows(&ws.dz, n, g4);
    matmul(
        MatMut::rows(grads.weight_ih, g4, s.input),
        false,
        dz.t(),
        Mat::rows(x, n, s.input),
    );
    matmul(
        MatMut::rows(grads.weight_hh, g4, h),
        false,
        dz.t(),
        Mat::rows(&ws.h_prev, n, h),
    );
    column_sums(&ws.dz, g4, grads.bias);
    if let Some(dx) = dx {
        matmul(
            MatMut::rows(dx, n, s.input),
            false,
            dz,
            Mat::rows(p.weight_ih, g4, s.input),
        );
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
    b_n: usize,
    t_n: usize,
    h: usize,
    t: usize,
) => gate_grad_step_impl);

/// The gate gradients of step t over every batch row: from dh (by h_t,
/// from later steps), d_out and dc (by c_t), to dz_t; dc becomes the
/// gradient by c_{t-1}.
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
    b_n: usize,
    t_n: usize,
    h: usize,
    t: usize,
) {
    for b in 0..b_n {
        let row = b * t_n + t;
        let gate = &gates[row * 4 * h..][..4 * h];
        let dz = &mut dz[row * 4 * h..][..4 * h];
        let c_prev = if t == 0 {
            &c0[b * h..][..h]
        } else {
            &cells[(row - 1) * h..][..h]
        };
        let tanh_c = &tanh_cells[row * h..][..h];
        let d_out_row = &d_out[row * h..][..h];
        let dh = &dh[b * h..][..h];
        let dc = &mut dc[b * h..][..h];
        for k in 0..h {
            let gates = [gate[k], gate[h + k], gate[2 * h + k], gate[3 * h + k]];
            let dh_k = d_out_row[k] + dh[k];
            let (d, dc_prev) = cell_backward(gates, tanh_c[k], c_prev[k], dh_k, dc[k]);
            for (q, d_q) in d.into_iter().enumerate() {
                dz[q * h + k] = d_q;
            }
            dc[k] = dc_prev;
        }
    }
}
