//! The seed network's dense head fused onto the lanes kernel: its forward from
//! the saved h, and its gradients, which feed backward through time.

use super::backward::backward_from_lanes;
use super::tile::dot_tile;
use super::{chunks, fit, saved_view, LanesScratch};
use crate::lstm::params::{Dense, LstmGrads, LstmParams, LstmShape, Sequences};
use crate::simd::vector::{load_lane, store_lane, sum_regs, Reg, Vector};
use crate::simd::{dispatch, IsaMarker, Lane, Real, LANES};

/// pred (B, T, O) = h·Wᵀ + b for every step of the last forward.
/// `saved` is that forward's.
pub(crate) fn dense_forward<T: Real>(saved: &[T], s: LstmShape, head: Dense<'_, T>, pred: &mut [T]) {
    dense_forward_kernel(
        saved_view(saved, s).h,
        s.batch,
        s.steps,
        s.hidden,
        head.weight,
        head.bias,
        pred,
    );
}

dispatch!(fn dense_forward_kernel<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    pred: &mut [T],
) => dense_forward_impl);

#[inline(always)]
fn dense_forward_impl<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    pred: &mut [T],
) {
    let o_n = bias.len();
    debug_assert_eq!(pred.len(), batch * t_n * o_n);
    let head = Dense { weight, bias };
    let s = LstmShape {
        batch,
        steps: t_n,
        input: 0,
        hidden: h_n,
    };
    for (q, h_q) in h.chunks_exact((t_n + 1) * h_n).enumerate() {
        let rows = (s.batch - q * LANES).min(LANES);
        for t in 0..t_n {
            let h_t = &h_q[(t + 1) * h_n..][..h_n];
            for o in 0..o_n {
                let y = dense_row::<T, S>(h_t, &head.weight[o * h_n..][..h_n], head.bias[o]);
                for l in 0..rows {
                    pred[((q * LANES + l) * t_n + t) * o_n + o] = y[l];
                }
            }
        }
    }
}

/// b + Σ_k w[k]·h[k], lane by lane.
#[inline(always)]
fn dense_row<T: Real, S: IsaMarker>(h: &[Lane<T>], w: &[T], b: T) -> Lane<T> {
    let acc = dot_tile::<T, S, 1>(Some(&[b]), w, std::iter::once(h));
    let mut y = Lane::splat(T::ZERO);
    store_lane::<T, Reg<T, S>>(&acc[0], &mut y);
    y
}

/// Backward of [`dense_forward`] then of the LSTM: from d_pred (B, T, O),
/// the dense layer's gradients `d_weight` (O, H) and `d_bias` (O,), then
/// BPTT as [`backward`] with d_out = d_pred·W (formed in lanes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_backward<T: Real>(
    ws: &mut LanesScratch<T>,
    p: LstmParams<'_, T>,
    s: LstmShape,
    saved: &[T],
    head: Dense<'_, T>,
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
    grads: LstmGrads<'_, T>,
    dh0: &mut [T],
    dc0: &mut [T],
) {
    let (q_n, t_n, h_n) = (chunks(s.batch), s.steps, s.hidden);
    let zero = Lane::splat(T::ZERO);
    fit(&mut ws.d_out, q_n * t_n * h_n, zero);
    fit(&mut ws.dense_acc_w, head.weight.len(), zero);
    fit(&mut ws.dense_acc_b, head.bias.len(), zero);
    let sv = saved_view(saved, s);
    ws.plan.make(s.batch, s.steps, Sequences::WHOLE);
    dense_grads(
        sv.h,
        &mut ws.d_out,
        (&mut ws.dense_acc_w, &mut ws.dense_acc_b),
        s.batch,
        t_n,
        h_n,
        head.weight,
        head.bias,
        d_pred,
        d_weight,
        d_bias,
    );
    backward_from_lanes(ws, p, s, sv, None, None, grads, dh0, dc0);
}

dispatch!(fn dense_grads<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    d_out: &mut [Lane<T>],
    acc: (&mut [Lane<T>], &mut [Lane<T>]),
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
) => dense_grads_impl);

/// The dense head's gradients, and d_out (lanes) = d_pred·W.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dense_grads_impl<T: Real, S: IsaMarker>(
    h: &[Lane<T>],
    d_out: &mut [Lane<T>],
    (acc_w, acc_b): (&mut [Lane<T>], &mut [Lane<T>]),
    batch: usize,
    t_n: usize,
    h_n: usize,
    weight: &[T],
    bias: &[T],
    d_pred: &[T],
    d_weight: &mut [T],
    d_bias: &mut [T],
) {
    let head = Dense { weight, bias };
    let s = LstmShape {
        batch,
        steps: t_n,
        input: 0,
        hidden: h_n,
    };
    let o_n = head.bias.len();
    let zero = Lane::splat(T::ZERO);
    // Lane-wise sums for the dense gradients; summed across lanes at the end.
    acc_w.fill(zero);
    acc_b.fill(zero);
    for (q, (h_q, d_q)) in h
        .chunks_exact((t_n + 1) * h_n)
        .zip(d_out.chunks_exact_mut(t_n * h_n))
        .enumerate()
    {
        let rows = (s.batch - q * LANES).min(LANES);
        d_q.fill(zero);
        for t in 0..t_n {
            let h_t = &h_q[(t + 1) * h_n..][..h_n];
            let d_t = &mut d_q[t * h_n..][..h_n];
            for o in 0..o_n {
                let mut dp = zero;
                for l in 0..rows {
                    dp[l] = d_pred[((q * LANES + l) * t_n + t) * o_n + o];
                }
                let w_o = &head.weight[o * h_n..][..h_n];
                dense_grad_row::<T, S>(dp, h_t, w_o, d_t, &mut acc_w[o * h_n..][..h_n]);
                for l in 0..LANES {
                    acc_b[o][l] += dp[l];
                }
            }
        }
    }
    for (dw, acc) in d_weight.iter_mut().zip(acc_w.iter()) {
        *dw = sum_regs::<T, Reg<T, S>>(load_lane::<T, Reg<T, S>>(acc));
    }
    for (db, acc) in d_bias.iter_mut().zip(acc_b.iter()) {
        *db = sum_regs::<T, Reg<T, S>>(load_lane::<T, Reg<T, S>>(acc));
    }
}

/// For one output o at one step: d_h += dp·w_o, and the lane-wise sums
/// of dp·h for the weight gradient.
#[inline(always)]
fn dense_grad_row<T: Real, S: IsaMarker>(
    dp: Lane<T>,
    h: &[Lane<T>],
    w: &[T],
    d_h: &mut [Lane<T>],
    acc_w: &mut [Lane<T>],
) {
    type V<T, S> = Reg<T, S>;
    let dp = load_lane::<T, V<T, S>>(&dp);
    for (((hk, &wk), dk), ak) in h.iter().zip(w).zip(d_h).zip(acc_w) {
        let (hr, wk) = (load_lane::<T, V<T, S>>(hk), V::<T, S>::splat(wk));
        let (mut dr, mut ar) = (load_lane::<T, V<T, S>>(dk), load_lane::<T, V<T, S>>(ak));
        for (p, &dp) in dp.as_ref().iter().enumerate() {
            dr.as_mut()[p] = dp.mul_add(wk, dr.as_ref()[p]);
            ar.as_mut()[p] = dp.mul_add(hr.as_ref()[p], ar.as_ref()[p]);
        }
        store_lane::<T, V<T, S>>(&dr, dk);
        store_lane::<T, V<T, S>>(&ar, ak);
    }
}
