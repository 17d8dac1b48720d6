//! sincos_rs: a fast LSTM — forward, backward through time and Adam — in
//! plain Rust, with an optional PyO3 binding (feature `python`).
//!
//! Shape legend used in every doc comment: **B** batch, **T** time steps,
//! **I** input features, **H** hidden units, **O** output features. Arrays
//! are flat, row-major and batch-major: a (B, T, I) sequence is `x[(b*T + t)*I + i]`.
//!
//! - [`lstm`]: the LSTM layer (forward over a sequence, backward through time).
//! - [`linear`]: the time-distributed dense layer.
//! - [`adam`]: Adam, fused and in place (TensorFlow's or PyTorch's ε).
//! - [`model`]: the seed network `Linear → LSTM → Linear`, its cost, one train step.
//! - [`threads`]: the thread count (results do not depend on it) and the
//!   fork-join pool the kernels run on.
//!
//! Imports run one way: `python` (the binding) → `model` → `lstm` (the
//! layer, `lstm/mod.rs`) → the kernels (`lstm/lanes/`, `lstm/rows/`,
//! `gemm.rs`, sharing `lstm/params.rs` and `lstm/cell.rs`) → `simd` (lane
//! vectors, dispatch, σ/tanh per instruction set) and `threads`.

pub mod adam;
pub mod error;
pub mod linear;
pub mod lstm;
mod matmul;
pub mod model;
mod simd;
pub mod threads;

#[cfg(feature = "python")]
mod python;

pub use adam::{Adam, AdamConfig, EpsilonStyle};
pub use error::{Error, Result};
pub use lstm::{Kernel, Lstm, LstmGrads, LstmParams, LstmShape};
pub use model::{SeedConfig, SeedNetwork, PARAM_NAMES};
pub use simd::{Real, SIMD_ENV_VAR};

/// The instruction set the kernels run with: `"avx512"`, `"avx2"` or
/// `"baseline"` (the best this CPU has, capped by `SINCOS_RS_SIMD`).
pub fn simd_level() -> &'static str {
    simd::isa().name()
}
