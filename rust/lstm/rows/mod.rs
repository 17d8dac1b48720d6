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
//!
//! Files: `pack.rs` (the weights in the layouts forward and backward read),
//! `forward.rs` (one row's steps forward), `backward.rs` (one row's steps
//! backward) and `weight_sums.rs` (one row's weight-gradient sums). This
//! file holds the saved layout, the scratch, the lane loads and stores they
//! share, and the entry points, which run the batch rows one by one.

mod backward;
mod forward;
mod pack;
mod weight_sums;

use super::packed_from::PackedFrom;
use super::params::{LstmGrads, LstmParams, LstmShape, RowSteps, Sequences};
use super::poison;
use crate::simd::{Lane, Real, LANES};
use backward::{backward_row, BackRow};
use forward::{forward_row, Consts, Row};

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
        pack::pack_weights(ws, p, i_n, h);
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

/// Reads `LANES` values of `v` from `at` as a lane vector.
#[inline(always)]
fn load<T: Real>(v: &[T], at: usize) -> Lane<T> {
    Lane(v[at..at + LANES].try_into().unwrap())
}

#[inline(always)]
fn store<T: Real>(v: &mut [T], at: usize, lane: Lane<T>) {
    v[at..at + LANES].copy_from_slice(&lane.0);
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
    let (gp, kp) = (4 * hp, pack::back_width(i_n, h));
    fit(&mut ws.dz, b_n * t_n * gp);
    pack::pack_back_weights(&mut ws.w, p, i_n, h);
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
