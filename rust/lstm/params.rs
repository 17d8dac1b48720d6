//! The types every LSTM kernel shares, below the kernels and the layer that
//! calls them: the sizes of a sequence, borrowed weights and gradients, and
//! the dense head the seed network puts on the layer's output.

use crate::error::{check_len, Result};

/// The sizes of one sequence: B rows of T steps of I features, H hidden units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmShape {
    pub batch: usize,
    pub steps: usize,
    pub input: usize,
    pub hidden: usize,
}

/// Borrowed LSTM weights: `weight_ih` (4H, I), `weight_hh` (4H, H), `bias` (4H,).
#[derive(Clone, Copy)]
pub struct LstmParams<'a, T> {
    pub weight_ih: &'a [T],
    pub weight_hh: &'a [T],
    pub bias: &'a [T],
}

/// Where backward writes the weight gradients (same shapes as [`LstmParams`]).
pub struct LstmGrads<'a, T> {
    pub weight_ih: &'a mut [T],
    pub weight_hh: &'a mut [T],
    pub bias: &'a mut [T],
}

impl<T> LstmParams<'_, T> {
    pub(crate) fn check(&self, input: usize, hidden: usize) -> Result<()> {
        check_len("weight_ih", self.weight_ih, &[4 * hidden, input])?;
        check_len("weight_hh", self.weight_hh, &[4 * hidden, hidden])?;
        check_len("bias", self.bias, &[4 * hidden])
    }
}

impl<T> LstmGrads<'_, T> {
    pub(crate) fn check(&self, input: usize, hidden: usize) -> Result<()> {
        check_len("grad weight_ih", self.weight_ih, &[4 * hidden, input])?;
        check_len("grad weight_hh", self.weight_hh, &[4 * hidden, hidden])?;
        check_len("grad bias", self.bias, &[4 * hidden])
    }
}

/// A dense layer on the LSTM's output, `pred = h·Wᵀ + b`: `weight` (O, H),
/// `bias` (O,). Fused into the lanes kernel, it reads and writes the lanes
/// directly, so the (B, T, H) output is never laid out by rows.
#[derive(Clone, Copy)]
pub struct Dense<'a, T> {
    pub weight: &'a [T],
    pub bias: &'a [T],
}
