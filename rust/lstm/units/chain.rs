//! A chain of one-step calls (a user's own loop over a cell, or an LSTM
//! called at T = 1 with the state carried): one step's backward without
//! its weight gradients, and the weight gradients of the whole chain as
//! one set of products.
//!
//! A step's backward that made its own weight gradients would write every
//! weight-sized buffer once per step for a product of B rows (at B1 H512:
//! 8 MB written, then added to the running total, for 2 M multiply-adds).
//! Instead [`step_backward`] writes the step's gate gradients dz (B, 4H,
//! PyTorch's gate order), the caller stacks the rows of every step of a
//! chain, and [`weight_grads`] makes the chain's gradients at once, as the
//! whole-sequence backward does after its loop:
//!
//! ```text
//! dW_ih = dzᵀ·x      dW_hh = dzᵀ·h_prev      db = Σ_rows dz
//! ```
//!
//! The forward of such a step is the units kernel's over T = 1, whose
//! saved activations [`step_backward`] reads. Its products read the
//! weights in PyTorch's layout, so nothing is packed per call:
//! `dh_prev = dz·W_hh` and `dx = dz·W_ih` on the kernel's tiles
//! (`tile::product`), the columns in whole vectors and the last few (H or
//! I past a multiple of the vector width) as scalar chains. Every output
//! element is one multiply-add chain in k order, so results do not depend
//! on the thread count or on which task computed them.

use super::backward::transpose_rows_into;
use super::plan::{padded, UNITS};
use super::tile::{product, Init, RowsAt};
use super::{step_saved_parts, workers_for, UnitsScratch, PASS_PARALLEL_MIN_MACS};
use crate::lstm::cell::cell_backward;
use crate::lstm::params::{ChainRows, LstmGrads, LstmShape};
use crate::lstm::poison;
use crate::simd::vector::{Reg, Vector};
use crate::simd::{dispatch, mul_add, IsaMarker, Real};
use crate::threads::team::{self, Shared};

/// Columns per task of every product here (a whole number of vectors on
/// every instruction set).
const COLS: usize = 64;
/// Rows (of the batch, or gate rows of a weight gradient) per task.
const ROWS: usize = 48;
/// Gate rows and columns per task of a chain's weight gradients: long
/// sums (k = every row of the chain), so wider tasks, each block of A
/// packed once for two tiles.
const GRAD_ROWS: usize = 96;
const GRAD_COLS: usize = 128;
/// Gate rows per task of the transposition of dz.
const TRANSPOSE_ROWS: usize = 64;

/// One step's backward pass, read by its tasks.
pub(crate) struct Step<'a, T> {
    batch: usize,
    hidden: usize,
    input: usize,
    /// The saved activations of the units kernel's T = 1 forward: gates
    /// (B, 4Hp) in panel order, tanh c (B, Hp); and the step's c0 (B, H),
    /// or None (zero).
    gates: &'a [T],
    tanh_c: &'a [T],
    c0: Option<&'a [T]>,
    /// (B, H) each, or None (zero): the gradients by the output and by
    /// (h_n, c_n); the output is h_n at T = 1, so the two by h add up.
    d_out: Option<&'a [T]>,
    dh_n: Option<&'a [T]>,
    dc_n: Option<&'a [T]>,
    weight_ih: Shared<T>,
    weight_hh: Shared<T>,
    /// (B, 4H): the gate gradients, written in phase 0, read in phase 1.
    dz: Shared<T>,
    dx: Option<Shared<T>>,
    dh0: Shared<T>,
    dc0: Shared<T>,
}

/// The backward of one step of the units kernel's forward over T = 1
/// (weights (W_ih, W_hh); `saved` in the compact one-step layout,
/// `super::SavedTo::Step`, `s.steps` = 1), without
/// weight gradients: writes the gate gradients dz (B, 4H), dh0 and dc0
/// (B, H), and dx (B, I) when given. `c0` (B, H) is the step's initial c
/// (None: zero); `d_out`, `dh_n`, `dc_n` (B, H) are
/// the gradients by the output, h_n and c_n (None: zero). No checks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_backward<T: Real>(
    (weight_ih, weight_hh): (&[T], &[T]),
    s: LstmShape,
    saved: &[T],
    c0: Option<&[T]>,
    d_out: Option<&[T]>,
    dh_n: Option<&[T]>,
    dc_n: Option<&[T]>,
    dz: &mut [T],
    dx: Option<&mut [T]>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    debug_assert_eq!(s.steps, 1);
    let (b_n, h, i_n) = (s.batch, s.hidden, s.input);
    let [gates, tanh_c] = step_saved_parts(s);
    let step = Step {
        batch: b_n,
        hidden: h,
        input: i_n,
        gates: &saved[..gates],
        tanh_c: &saved[gates..gates + tanh_c],
        c0,
        d_out,
        dh_n,
        dc_n,
        weight_ih: Shared::of(weight_ih),
        weight_hh: Shared::of(weight_hh),
        dz: Shared::new(dz),
        dx: dx.map(Shared::new),
        dh0: Shared::new(dh0),
        dc0: Shared::new(dc0),
    };
    let row_tasks = b_n.div_ceil(ROWS);
    let hh_tasks = row_tasks * h.div_ceil(COLS);
    let ih_tasks = if step.dx.is_some() {
        row_tasks * i_n.div_ceil(COLS)
    } else {
        0
    };
    let workers = workers_for(b_n * 4 * h * (h + i_n), PASS_PARALLEL_MIN_MACS);
    // Phase 0: dz and dc0 by rows (task t of n takes rows t·B/n ..);
    // phase 1: dh0 = dz·W_hh, dx = dz·W_ih by blocks of rows and columns.
    let tasks = hh_tasks + ih_tasks;
    team::run(workers, 2, tasks, |phase, task| {
        if phase == 0 {
            let (lo, hi) = (task * b_n / tasks, (task + 1) * b_n / tasks);
            gate_grads(&step, lo, hi);
        } else {
            step_product(&step, task, row_tasks, hh_tasks);
        }
    });
}

dispatch!(fn gate_grads<T: Real, S: IsaMarker>(step: &Step<'_, T>, lo: usize, hi: usize) => gate_grads_impl);

/// dz and dc0 of rows `lo..hi`, by `cell::cell_backward`.
#[inline(always)]
fn gate_grads_impl<T: Real, S: IsaMarker>(step: &Step<'_, T>, lo: usize, hi: usize) {
    let (h, hp) = (step.hidden, padded(step.hidden));
    for b in lo..hi {
        // SAFETY: this task owns rows lo..hi of dz and dc0.
        let dz = unsafe { step.dz.slice_mut(b * 4 * h, 4 * h) };
        let dc0 = unsafe { step.dc0.slice_mut(b * h, h) };
        for u in 0..h {
            let panel = b * 4 * hp + u / UNITS * 4 * UNITS + u % UNITS;
            let gates = [0, 1, 2, 3].map(|g| step.gates[panel + g * UNITS]);
            // Row b, unit u of a (B, H) array, or zero.
            let at = |d: Option<&[T]>| d.map_or(T::ZERO, |d| d[b * h + u]);
            let dh = at(step.d_out) + at(step.dh_n);
            let (dzu, dc_prev) = cell_backward::<T, S>(gates, step.tanh_c[b * hp + u], at(step.c0), dh, at(step.dc_n));
            for (g, v) in dzu.into_iter().enumerate() {
                dz[g * h + u] = v;
            }
            dc0[u] = dc_prev;
        }
    }
}

dispatch!(fn step_product<T: Real, S: IsaMarker>(step: &Step<'_, T>, task: usize, row_tasks: usize, hh_tasks: usize) => step_product_impl);

/// Task `task` of phase 1: a block of rows and columns of dh0 = dz·W_hh,
/// or of dx = dz·W_ih.
#[inline(always)]
fn step_product_impl<T: Real, S: IsaMarker>(step: &Step<'_, T>, task: usize, row_tasks: usize, hh_tasks: usize) {
    let (weights, c, n, task) = if task < hh_tasks {
        (step.weight_hh, step.dh0, step.hidden, task)
    } else {
        let Some(dx) = step.dx else { return };
        (step.weight_ih, dx, step.input, task - hh_tasks)
    };
    let (rt, ct) = (task % row_tasks, task / row_tasks);
    let (m0, m1) = (rt * ROWS, ((rt + 1) * ROWS).min(step.batch));
    let k = 4 * step.hidden;
    // A = dz (B, 4H) by rows; P = the weights (4H, n) as given.
    columns::<T, S>(
        m1 - m0,
        k,
        (step.dz, m0 * k, k),
        weights,
        (n, ct * COLS, COLS),
        (c, m0 * n),
    );
}

/// `C(m, cols) = Σ_k A(m, k)·P(k, cols)` for the columns `n0 .. n0 +
/// width` (at most n) of a P with n columns, row-major: whole vectors on
/// the tiles, the rest as scalar chains in the same k order. A's row m
/// starts at `a_first + m·a_stride` (its k contiguous), C's at `c_first +
/// m·n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn columns<T: Real, S: IsaMarker>(
    m_n: usize,
    k_n: usize,
    (a, a_first, a_stride): (Shared<T>, usize, usize),
    p: Shared<T>,
    (n, n0, width): (usize, usize, usize),
    (c, c_first): (Shared<T>, usize),
) {
    let w = Reg::<T, S>::WIDTH;
    let n1 = (n0 + width).min(n);
    let whole = (n1 - n0) / w;
    let a_rows = RowsAt::Strided {
        first: a_first,
        stride: a_stride,
    };
    if whole > 0 {
        let c_rows = RowsAt::Strided {
            first: c_first + n0,
            stride: n,
        };
        product::<T, S>(
            m_n,
            k_n,
            whole,
            a,
            a_rows,
            1,
            p.sub(n0, p.len() - n0),
            n,
            c,
            c_rows,
            Init::Zero,
        );
    }
    for m in 0..m_n {
        for col in n0 + whole * w..n1 {
            let mut acc = T::ZERO;
            for k in 0..k_n {
                // SAFETY: in bounds of A and P (the shapes the caller made
                // them with); A and P are only read in this phase.
                let (av, pv) = unsafe { (*a.ptr().add(a_rows.at(m) + k), *p.ptr().add(k * n + col)) };
                acc = mul_add::<T, S>(av, pv, acc);
            }
            // SAFETY: this task owns these rows and columns of C.
            unsafe { *c.ptr().add(c_first + m * n + col) = acc };
        }
    }
}

/// A chain's weight-gradient products, read by their tasks.
pub(crate) struct Chain<T> {
    rows: usize,
    hidden: usize,
    input: usize,
    /// dz transposed (4H, R).
    dz_t: Shared<T>,
    /// (R, I) and (R, H): each row's input and state before its step.
    x: Shared<T>,
    h_prev: Shared<T>,
    grad_ih: Shared<T>,
    grad_hh: Shared<T>,
    grad_bias: Shared<T>,
}

/// The weight gradients of a chain of steps (overwritten), from their rows
/// in `parts` (one per call, or any split): dz as [`step_backward`] wrote
/// them, x and h_prev (None: zero) as the steps read them. The rows in
/// order, part after part, are the order of every sum, so how they are
/// split does not change a bit. dz is transposed straight from the parts;
/// x and h_prev of several parts are stacked into the kernel's scratch
/// first (kept between calls, so a chain does not fault in fresh pages).
/// No checks.
pub(crate) fn weight_grads<T: Real>(
    ws: &mut UnitsScratch<T>,
    (input, hidden): (usize, usize),
    parts: &[ChainRows<'_, T>],
    grads: LstmGrads<'_, T>,
) {
    let g4 = 4 * hidden;
    let rows: usize = parts.iter().map(|p| p.dz.len() / g4).sum();
    let any_h = parts.iter().any(|p| p.h0.is_some());
    poison::fit(&mut ws.dz_t, rows * g4);
    let (x, h_prev) = match parts {
        [one] => (one.x, one.h0),
        _ => {
            poison::fit(&mut ws.rows_x, rows * input);
            let mut at = 0;
            for p in parts {
                ws.rows_x[at..at + p.x.len()].copy_from_slice(p.x);
                at += p.x.len();
            }
            if any_h {
                poison::fit(&mut ws.rows_h, rows * hidden);
                let mut at = 0;
                for p in parts {
                    let n = p.dz.len() / g4 * hidden;
                    match p.h0 {
                        Some(h) => ws.rows_h[at..at + n].copy_from_slice(h),
                        None => ws.rows_h[at..at + n].fill(T::ZERO),
                    }
                    at += n;
                }
            }
            (&ws.rows_x[..rows * input], any_h.then_some(&ws.rows_h[..rows * hidden]))
        }
    };
    if h_prev.is_none() {
        grads.weight_hh.fill(T::ZERO);
    }
    let job = Chain {
        rows,
        hidden,
        input,
        dz_t: Shared::new(&mut ws.dz_t),
        x: Shared::of(x),
        h_prev: Shared::of(h_prev.unwrap_or(&[])),
        grad_ih: Shared::new(grads.weight_ih),
        grad_hh: Shared::new(grads.weight_hh),
        grad_bias: Shared::new(grads.bias),
    };
    let workers = workers_for(rows * g4 * (hidden + input), PASS_PARALLEL_MIN_MACS);
    let m_tasks = g4.div_ceil(GRAD_ROWS);
    let hh_tasks = if h_prev.is_some() {
        m_tasks * hidden.div_ceil(GRAD_COLS)
    } else {
        0
    };
    let ih_tasks = m_tasks * input.div_ceil(GRAD_COLS);
    team::run(workers, 1, g4.div_ceil(TRANSPOSE_ROWS), |_, task| {
        let (r0, r1) = (task * TRANSPOSE_ROWS, ((task + 1) * TRANSPOSE_ROWS).min(g4));
        let mut col0 = 0;
        for p in parts {
            let part_rows = p.dz.len() / g4;
            transpose_rows_into(p.dz, part_rows, g4, job.dz_t, rows, col0, r0, r1);
            col0 += part_rows;
        }
    });
    team::run(workers, 1, hh_tasks + ih_tasks + m_tasks, |_, task| {
        chain_product(&job, task, m_tasks, hh_tasks, ih_tasks);
    });
}

dispatch!(fn chain_product<T: Real, S: IsaMarker>(job: &Chain<T>, task: usize, m_tasks: usize, hh_tasks: usize, ih_tasks: usize) => chain_product_impl);

/// A block of gate rows and columns of dW_hh or dW_ih, or of db.
#[inline(always)]
fn chain_product_impl<T: Real, S: IsaMarker>(
    job: &Chain<T>,
    task: usize,
    m_tasks: usize,
    hh_tasks: usize,
    ih_tasks: usize,
) {
    let rows = job.rows;
    if task >= hh_tasks + ih_tasks {
        // db: each gate row's sum over the rows, in row order.
        let mt = task - hh_tasks - ih_tasks;
        for r in mt * GRAD_ROWS..((mt + 1) * GRAD_ROWS).min(4 * job.hidden) {
            // SAFETY: dz_t is only read; this task owns these entries of db.
            let line = unsafe { job.dz_t.slice(r * rows, rows) };
            let mut sum = T::ZERO;
            for &v in line {
                sum += v;
            }
            unsafe { *job.grad_bias.ptr().add(r) = sum };
        }
        return;
    }
    let (task, p, n, c) = if task < hh_tasks {
        (task, job.h_prev, job.hidden, job.grad_hh)
    } else {
        (task - hh_tasks, job.x, job.input, job.grad_ih)
    };
    let (mt, ct) = (task % m_tasks, task / m_tasks);
    let (m0, m1) = (mt * GRAD_ROWS, ((mt + 1) * GRAD_ROWS).min(4 * job.hidden));
    // A = dzᵀ (4H, R) by gate rows; P = x or h_prev (R, n); C (4H, n).
    columns::<T, S>(
        m1 - m0,
        rows,
        (job.dz_t, m0 * rows, rows),
        p,
        (n, ct * GRAD_COLS, GRAD_COLS),
        (c, m0 * n),
    );
}
