//! The types every LSTM kernel shares, below the kernels and the layer that
//! calls them: the sizes of a sequence, borrowed weights and gradients, and
//! the dense head the seed network puts on the layer's output.

use crate::error::{check_len, Error, Result};

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

/// The rows one call of a chain of one-step calls contributes to the
/// chain's weight gradients (`chain::weight_grads`): its gate gradients dz
/// (R, 4H), its input x (R, I) and its state before the step h0 (R, H), or
/// None (zero). A chain's rows come as several of these, one per call, so
/// nobody stacks them first.
#[derive(Clone, Copy, Debug)]
pub struct ChainRows<'a, T> {
    pub dz: &'a [T],
    pub x: &'a [T],
    pub h0: Option<&'a [T]>,
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

/// How the rows of a batch run: each to its own length or all T steps,
/// forwards in time or backwards.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequences<'a> {
    /// (B,): the steps row b runs, each in 1..=T; None: every row runs T.
    /// A row's output past its length is zero, its final state the state
    /// after its last real step, and its input there is never read.
    pub lengths: Option<&'a [usize]>,
    /// Run each row from its last real step to its first (the backward
    /// half of a bidirectional layer); out[b, t] is still time t's output.
    pub reverse: bool,
}

impl Sequences<'_> {
    /// Whole rows in time order: the plain rectangle.
    pub const WHOLE: Sequences<'static> = Sequences {
        lengths: None,
        reverse: false,
    };

    /// Checks the lengths: B values, each in 1..=T.
    pub(crate) fn check(&self, batch: usize, steps: usize) -> Result<()> {
        if let Some(lengths) = self.lengths {
            if lengths.len() != batch {
                return Err(Error::Shape {
                    arg: "lengths",
                    expected: format!("({batch},), one length per batch row"),
                    got: format!("{} values", lengths.len()),
                });
            }
            if let Some((b, &n)) = lengths.iter().enumerate().find(|(_, &n)| n == 0 || n > steps) {
                return Err(Error::Config {
                    arg: "lengths",
                    expected: format!("values in 1..={steps} (the time steps of x)"),
                    got: format!("{n} at index {b}"),
                });
            }
        }
        Ok(())
    }

    /// The steps row b runs.
    #[inline]
    pub(crate) fn len(&self, b: usize, steps: usize) -> usize {
        self.lengths.map_or(steps, |l| l[b])
    }

    /// Whether every row runs all `steps` in time order.
    pub(crate) fn is_whole(&self, steps: usize) -> bool {
        !self.reverse && self.lengths.is_none_or(|l| l.iter().all(|&n| n == steps))
    }

    /// Where run step s of a row of `len` steps reads and writes in a
    /// (T, F) time-major row: see [`RowSteps`].
    #[inline]
    pub(crate) fn row_steps(&self, len: usize, features: usize) -> RowSteps {
        RowSteps::new(len, features, self.reverse)
    }
}

/// The offset of run step s in a row's (T, F) time-major values:
/// `s·F`, or `(len − 1 − s)·F` when reversed; computed as
/// `first + s·stride` in wrapping arithmetic (the stride is −F reversed),
/// so the forward case costs what a plain index does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowSteps {
    first: usize,
    stride: usize,
}

impl RowSteps {
    pub(crate) fn new(len: usize, features: usize, reverse: bool) -> Self {
        if reverse {
            RowSteps {
                first: (len - 1) * features,
                stride: features.wrapping_neg(),
            }
        } else {
            RowSteps {
                first: 0,
                stride: features,
            }
        }
    }

    /// The offset of run step s's F values.
    #[inline(always)]
    pub(crate) fn at(self, s: usize) -> usize {
        self.first.wrapping_add(s.wrapping_mul(self.stride))
    }
}
