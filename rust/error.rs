//! The one error type of the core. It knows nothing of Python: the binding
//! maps [`Error::Order`] to `RuntimeError`, [`Error::Diverged`] to
//! `FloatingPointError`, [`Error::TooLarge`] to `MemoryError` and the others
//! to `ValueError`.

use std::fmt;

/// What went wrong, naming the argument at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument has the wrong length or shape.
    Shape {
        arg: &'static str,
        expected: String,
        got: String,
    },
    /// An argument holds NaN or an infinity.
    NonFinite { arg: &'static str, index: usize },
    /// A configuration value is out of range (a size of 0, lr <= 0, ...).
    Config {
        arg: &'static str,
        expected: String,
        got: String,
    },
    /// The operation needs something that is not there yet (e.g. backward
    /// before forward).
    Order(String),
    /// A result that is not finite (a cost, gradient or update of NaN or
    /// inf) from finite inputs: the step was not taken, nothing changed.
    Diverged(String),
    /// The sizes asked for need more memory than can be had.
    TooLarge(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { arg, expected, got } => {
                write!(f, "{arg}: expected shape {expected}, got {got}")
            }
            Error::NonFinite { arg, index } => {
                write!(
                    f,
                    "{arg}: all values must be finite, found NaN or inf at flat index {index}"
                )
            }
            Error::Config { arg, expected, got } => write!(f, "{arg}: expected {expected}, got {got}"),
            Error::Order(msg) | Error::Diverged(msg) | Error::TooLarge(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Formats a shape like NumPy does: `(50, 20, 1)`.
pub(crate) fn shape_str(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks that `data` has `expected.iter().product()` elements.
pub(crate) fn check_len<T>(arg: &'static str, data: &[T], expected: &[usize]) -> Result<()> {
    let n: usize = expected.iter().product();
    if data.len() == n {
        Ok(())
    } else {
        Err(Error::Shape {
            arg,
            expected: shape_str(expected),
            got: format!("{} elements", data.len()),
        })
    }
}

/// Checks that every value of `data` is finite.
pub(crate) fn check_finite<T: crate::simd::Real>(arg: &'static str, data: &[T]) -> Result<()> {
    // A branch-free scan: `x * 0` is 0 for finite x and NaN for NaN or ±inf,
    // and a NaN makes a sum NaN. 16 independent sums, so it vectorises (one
    // sum would be a chain of dependent adds, ~4 cycles per element), and
    // small arrays (a step's state, bias) pay little for the final sum.
    const WIDTH: usize = 16;
    let mut acc = [T::ZERO; WIDTH];
    let blocks = data.chunks_exact(WIDTH);
    let tail = blocks.remainder();
    for block in blocks {
        for (a, &x) in acc.iter_mut().zip(block) {
            *a += x * T::ZERO;
        }
    }
    if acc.iter().fold(T::ZERO, |sum, &a| sum + a) == T::ZERO && tail.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let index = data.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::NonFinite { arg, index })
}

/// Checks that a size is positive.
pub(crate) fn check_positive(arg: &'static str, value: usize) -> Result<()> {
    if value > 0 {
        Ok(())
    } else {
        Err(Error::Config {
            arg,
            expected: "a positive integer".into(),
            got: value.to_string(),
        })
    }
}
