//! One step at a time, for a caller's own loop (PyTorch's `LSTMCell`, or
//! an LSTM called at T = 1 with the state carried), with the weight
//! gradients of the whole chain of steps made at once.
//!
//! - [`forward`]: one step, x (B, I) from (h0, c0) or zeros to (h, c),
//!   saving ([`saved_len`] elements) what [`backward`] reads, or nothing;
//! - [`backward`]: that step's gradients by x, h0 and c0, and its gate
//!   gradients dz (B, 4H), but no weight gradients;
//! - [`weight_grads`]: the weight gradients of a chain of steps from their
//!   rows stacked (dz, x and h0 of each step): one set of products, as a
//!   whole-sequence backward makes them after its loop, instead of a
//!   weight-sized sum per step.
//!
//! Every step runs the units kernel (`units/chain.rs`), whatever the batch:
//! over one step it is the fastest kernel at every batch size, and one
//! kernel keeps a step's bits the same with and without saving. Checks as
//! in `functional.rs`: every size, and every input finite.

use super::functional::{check_pair, check_params, check_sizes, Pooled};
use super::units::{self, chain};
use super::{ChainRows, LstmGrads, LstmParams, LstmShape, Sequences};
use crate::error::{check_finite, check_len, Result};

/// The shape of one step of `batch` rows.
fn step_shape(batch: usize, input: usize, hidden: usize) -> LstmShape {
    LstmShape {
        batch,
        steps: 1,
        input,
        hidden,
    }
}

/// From this many rows on, a step at k < 128 (inputs, or hidden units)
/// packs the weights into panels for the broadcast tiles, as a
/// whole-sequence pass does; below it, both products read the weights as
/// given (dot form), since packing costs more than the step's product (B8
/// H64: 40 → 16 µs a step; B256 H64: 224 µs in dot form, 156 packed).
/// The choice is by batch size, so a step gives the same bits with and
/// without saving.
const PACK_MIN_BATCH: usize = 128;

/// Elements of `T` the activations [`forward`] saves for one step take.
/// The sizes must pass `functional::check_sizes`.
pub fn saved_len(batch: usize, input: usize, hidden: usize) -> usize {
    units::step_saved_len(step_shape(batch, input, hidden))
}

/// One step: x (B, I) from `initial` (h0, c0), each (B, H), or zeros;
/// writes h and c (B, H), and `saved` ([`saved_len`] elements) when given.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Pooled>(
    p: LstmParams<'_, T>,
    (batch, input, hidden): (usize, usize, usize),
    x: &[T],
    initial: Option<(&[T], &[T])>,
    h: &mut [T],
    c: &mut [T],
    saved: Option<&mut [T]>,
) -> Result<()> {
    let s = step_shape(batch, input, hidden);
    check_sizes::<T>(s)?;
    check_params(p, s)?;
    check_len("x", x, &[batch, input])?;
    check_finite("x", x)?;
    check_pair(initial, ("h0", "c0"), s)?;
    check_len("h", h, &[batch, hidden])?;
    check_len("c", c, &[batch, hidden])?;
    if let Some(saved) = &saved {
        check_len("saved", saved, &[saved_len(batch, input, hidden)])?;
    }
    T::pool().with(|scratch| {
        // With one step the output is h_n: write it to h, h_n to scratch.
        super::poison::fit(&mut scratch.h_n, batch * hidden);
        units::forward(
            &mut scratch.kernels.units,
            p,
            s,
            Sequences::WHOLE,
            x,
            initial,
            h,
            &mut scratch.h_n,
            c,
            saved.map(units::SavedTo::Step),
            batch < PACK_MIN_BATCH,
        );
    });
    Ok(())
}

/// The backward of the [`forward`] step that wrote `saved` from the
/// initial c `c0` (B, H) (None: zero; the same values): `d_out`,
/// `dh_n`, `dc_n` (B, H) are the gradients by its h (as an output, and as
/// the state carried on: they add up) and c, or None (zero). Writes the
/// gate gradients dz (B, 4H) for [`weight_grads`], dh0 and dc0 (B, H), and
/// dx (B, I) when given. The weights (W_ih, W_hh) must be those of the
/// forward (they are not checked for finite values again).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Pooled>(
    (weight_ih, weight_hh): (&[T], &[T]),
    (batch, input, hidden): (usize, usize, usize),
    saved: &[T],
    c0: Option<&[T]>,
    d_out: Option<&[T]>,
    dh_n: Option<&[T]>,
    dc_n: Option<&[T]>,
    dz: &mut [T],
    dx: Option<&mut [T]>,
    dh0: &mut [T],
    dc0: &mut [T],
) -> Result<()> {
    let s = step_shape(batch, input, hidden);
    check_sizes::<T>(s)?;
    check_len("weight_ih", weight_ih, &[4 * hidden, input])?;
    check_len("weight_hh", weight_hh, &[4 * hidden, hidden])?;
    check_len("saved", saved, &[saved_len(batch, input, hidden)])?;
    if let Some(c0) = c0 {
        check_len("c0", c0, &[batch, hidden])?;
    }
    for (name, grad) in [("d_out", d_out), ("dh_n", dh_n), ("dc_n", dc_n)] {
        if let Some(grad) = grad {
            check_len(name, grad, &[batch, hidden])?;
            check_finite(name, grad)?;
        }
    }
    check_len("dz", dz, &[batch, 4 * hidden])?;
    if let Some(dx) = &dx {
        check_len("dx", dx, &[batch, input])?;
    }
    check_len("dh0", dh0, &[batch, hidden])?;
    check_len("dc0", dc0, &[batch, hidden])?;
    chain::step_backward(
        (weight_ih, weight_hh),
        s,
        saved,
        c0,
        d_out,
        dh_n,
        dc_n,
        dz,
        dx,
        dh0,
        dc0,
    );
    Ok(())
}

/// The weight gradients (overwritten) of a chain of [`backward`] steps,
/// from their rows in `parts`, in any fixed order (the order of every sum):
/// each part's dz (R_k, 4H), x (R_k, I) and h0 (R_k, H) (None: zero),
/// typically one part per step. How the rows are split into parts does not
/// change a bit.
pub fn weight_grads<T: Pooled>(
    (input, hidden): (usize, usize),
    parts: &[ChainRows<'_, T>],
    grads: LstmGrads<'_, T>,
) -> Result<()> {
    grads.check(input, hidden)?;
    let mut rows = 0usize;
    for part in parts {
        let part_rows = part.dz.len() / (4 * hidden).max(1);
        check_sizes::<T>(step_shape(part_rows, input, hidden))?;
        check_len("dz", part.dz, &[part_rows, 4 * hidden])?;
        check_len("x", part.x, &[part_rows, input])?;
        if let Some(h0) = part.h0 {
            check_len("h0", h0, &[part_rows, hidden])?;
        }
        rows += part_rows;
    }
    check_sizes::<T>(step_shape(rows, input, hidden))?;
    T::pool().with(|scratch| {
        chain::weight_grads(&mut scratch.kernels.units, (input, hidden), parts, grads);
    });
    Ok(())
}
