//! A dense layer applied to every row: `y = x · wᵀ + b`.
//!
//! Used time-distributed: the (B, T, In) input is seen as B·T rows.
//! Weights in PyTorch layout: `w` (Out, In), `b` (Out,).

use crate::error::{check_len, Result};
use crate::matmul::{column_sums, matmul, Mat, MatMut};
use crate::simd::Real;

/// The sizes of one linear layer call: `rows` = B·T rows of `input` features
/// in, `output` features out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub input: usize,
    pub output: usize,
}

/// Forward: `y (rows, Out) = x (rows, In) · wᵀ + b`.
pub fn linear_forward<T: Real>(s: LinearShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) -> Result<()> {
    check_len("x", x, &[s.rows, s.input])?;
    check_len("weight", w, &[s.output, s.input])?;
    check_len("bias", b, &[s.output])?;
    check_len("y", y, &[s.rows, s.output])?;
    matmul(
        MatMut::rows(y, s.rows, s.output),
        false,
        Mat::rows(x, s.rows, s.input),
        Mat::rows(w, s.output, s.input).t(),
    );
    for row in y.chunks_exact_mut(s.output) {
        for (yj, &bj) in row.iter_mut().zip(b) {
            *yj += bj;
        }
    }
    Ok(())
}

/// Backward of [`linear_forward`] given `dy (rows, Out)`:
/// `dw (Out, In) = dyᵀ · x`, `db (Out,) = Σ_rows dy`, and, when asked,
/// `dx (rows, In) = dy · w`. Gradients are overwritten, not accumulated.
pub fn linear_backward<T: Real>(
    s: LinearShape,
    dy: &[T],
    x: &[T],
    w: &[T],
    dx: Option<&mut [T]>,
    dw: &mut [T],
    db: &mut [T],
) -> Result<()> {
    check_len("dy", dy, &[s.rows, s.output])?;
    check_len("x", x, &[s.rows, s.input])?;
    check_len("weight", w, &[s.output, s.input])?;
    check_len("dweight", dw, &[s.output, s.input])?;
    check_len("dbias", db, &[s.output])?;
    matmul(
        MatMut::rows(dw, s.output, s.input),
        false,
        Mat::rows(dy, s.rows, s.output).t(),
        Mat::rows(x, s.rows, s.input),
    );
    column_sums(dy, s.output, db);
    if let Some(dx) = dx {
        check_len("dx", dx, &[s.rows, s.input])?;
        matmul(
            MatMut::rows(dx, s.rows, s.input),
            false,
            Mat::rows(dy, s.rows, s.output),
            Mat::rows(w, s.output, s.input),
        );
    }
    Ok(())
}
